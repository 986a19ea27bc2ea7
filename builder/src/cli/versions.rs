//! `terra install` and `terra upgrade|apply|versions|bless|rollback|gc`: the versions on a
//! node's disks, over `terra_builder::install` and `terra_builder::versions`.

use std::path::PathBuf;

use terra_builder::install::{self, InstallSpec};
use terra_builder::oci::{ApplyOptions, Progress, ResolveOptions};
use terra_builder::versions::{self, Applied, Target, UpgradeSpec, Upgraded, DEFAULT_KEEP};
use terra_init::bless::Verdict;
use terra_init::bootstate::DEFAULT_TRIES;

use super::images::{debug_notes, policy, skipped_xattrs, FetchArgs, REF_HELP};
use super::CliError;

/// How every command here finds its disk, after its own help.
pub const COMMON: &str = "\
Without --disk these act on the running system (the root device and booted version named \
in /run/terra/boot.json); with --disk on a root group's disks, disk images or LUN files, \
offline (repeat --disk for each member of a multi-disk group). They need root.";

/// Make node.toml's btrfs disks and install an OCI image as the root
///
/// For each [[groups]] of NODE.TOML: mkfs.btrfs with its label and type (single, raid0,
/// raid1, raid5, raid10) over its disks, its subvolumes, and for the group labelled `os`
/// (or the first) the image unpacked into the root subvolume (`os`, or [boot] version, or
/// the subvolume whose path is /) with /etc/fstab (LABEL=<label> <path> btrfs
/// subvol=/<name> 0 0) and /etc/hostname. Disks are block devices or image files, created
/// at `size` MiB when missing. A disk holding a filesystem or partition table is refused
/// unless --force. Needs root.
///
/// A registry image's manifest, signature and config are checked before the first mkfs;
/// its layers are then downloaded onto the new root filesystem. If that is cut (a kill,
/// a power cut, a dropped connection, a bad blob), the disk holds no version, and the
/// same command again (no --force needed) goes on where the download stopped.
///
/// With `mbr = true` on the root group, its first disk boots on its own under BIOS and
/// UEFI: a GPT with a BIOS boot partition, a 256 MiB FAT ESP (PARTLABEL terra-esp) and
/// btrfs on the rest; GRUB for both firmwares; the default version's kernel and a Terra
/// initramfs for it on the ESP (a version that carries no kernel boots the base kernel,
/// --kernel).
///
/// Then node.toml's [[extensions]] are added (see `terra extension add --help`).
#[derive(Debug, clap::Args)]
#[command(after_long_help = REF_HELP)]
pub struct InstallArgs {
    /// The node's config
    #[arg(value_name = "NODE.TOML")]
    config: PathBuf,
    /// The image (default: node.toml's `image`); see `terra image --help`
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Replaces node.toml's disks in order (repeatable); with no [[groups]], makes one
    /// group `os` of type single
    #[arg(long = "disk", value_name = "PATH")]
    disks: Vec<PathBuf>,
    /// Overwrite disks that hold data
    #[arg(long)]
    force: bool,
    /// Filesystem UUID of the root group
    #[arg(long, value_name = "UUID")]
    uuid: Option<String>,
    /// Leave out device nodes and fifos
    #[arg(long)]
    no_devices: bool,
    /// Leave the first version writable (booted rw with `rw`)
    #[arg(long)]
    writable: bool,
    /// (mbr = true) the base kernel, its modules in /lib/modules/<release> (default: the
    /// host's newest /boot/vmlinuz-* with modules)
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// (mbr = true) extra kernel arguments of the disk's GRUB entry; repeatable
    #[arg(long = "cmdline", value_name = "ARGS", allow_hyphen_values = true)]
    cmdlines: Vec<String>,
    /// (mbr = true) start this Unified Kernel Image (`terra uki`, signed for Secure Boot)
    /// under UEFI instead of GRUB; its own command line applies (give it
    /// root=UUID=<--uuid>). BIOS still boots GRUB
    #[arg(long, value_name = "EFI")]
    uki: Option<PathBuf>,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// The disks a command acts on.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// The root group's disks (repeatable); default: the running system
    #[arg(long = "disk", value_name = "PATH")]
    disks: Vec<PathBuf>,
}

impl DiskArgs {
    /// The disks, or the running system.
    pub fn target(self) -> Target {
        Target { disks: self.disks }
    }
}

/// Add a root version from an image; it boots tentatively
///
/// Checks REF like `terra install` (the signature before anything is written, every blob
/// it reads), fetching from a registry only the layers the disk lacks, onto the disk
/// itself: a download that was cut resumes on the next run. Checks free space, then makes a read-only btrfs subvolume NAME (default vN) from a
/// snapshot of the longest layer chain the disk already holds plus only the layers above
/// it, writes the node's /etc/fstab and hostname into it (from the node.toml `terra
/// install` kept on the disk), and marks it tentative: the next boots try it until the
/// booted system confirms it (`/run/terra/bless good`, run by systemd on its own, once the
/// checks in /etc/terra/health.d pass; a failing one rejects it) or its tries run out and
/// the default boots again. An image whose digest a version already has changes nothing;
/// one that is staged already is applied. The booted version, the default and the last good
/// one are never touched; old versions beyond --keep are removed (staged ones count). A
/// killed upgrade leaves the old default bootable; run it again to finish.
///
/// With --download-only the version is staged instead: on the disk, never booted, until
/// `terra apply` makes it tentative (fetch during the day, apply in a maintenance window).
/// Refused while the running version is still tentative. An image whose digest was bad on
/// this node (`terra versions --rejected`) is refused unless named by digest with --force.
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct UpgradeArgs {
    /// The image (see `terra image --help`)
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    disk: DiskArgs,
    /// The version's subvolume name (default vN)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Boots before an unconfirmed version is bad
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TRIES)]
    tries: u32,
    /// Versions kept afterwards, staged ones included
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP)]
    keep: usize,
    /// Leave the version writable (mounted rw when booted with `rw`)
    #[arg(long)]
    writable: bool,
    /// Leave out device nodes and fifos
    #[arg(long)]
    no_devices: bool,
    /// Fetch and build the version but only stage it: `terra apply` makes it boot
    #[arg(long)]
    download_only: bool,
    /// Then restart the running system into it (see `terra apply --help`)
    #[arg(long, conflicts_with_all = ["download_only", "disks"])]
    reboot: bool,
    /// Apply an image whose digest was bad on this node; REF must name it by digest
    /// (REGISTRY/REPO@sha256:…)
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Make a staged version boot next: it becomes tentative
///
/// Makes NAME (default: the newest staged version, from `terra upgrade --download-only`)
/// tentative with --tries boots, as `terra upgrade` would have: the next boot tries it until
/// the booted system confirms it. A tentative version that was never confirmed is
/// superseded (bad). Refused while the running version is still tentative, and for a
/// version whose digest was bad on this node since it was staged.
///
/// With --reboot the running system restarts into it at once: through systemd's kexec.target
/// or reboot.target when systemd runs (services stop first), else reboot(2) after a
/// sync; by kexec of the version's kernel and initramfs (or the install's base kernel, for
/// a version that carries none) when the machine allows it, skipping firmware and
/// bootloader, and by a normal reboot otherwise. It says which, and why.
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct ApplyArgs {
    /// The staged version (default: the newest staged one)
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    disk: DiskArgs,
    /// Boots before an unconfirmed version is bad
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TRIES)]
    tries: u32,
    /// Then restart the running system into it
    #[arg(long, conflicts_with = "disks")]
    reboot: bool,
}

/// List the root versions and their states
///
/// States: default (boots when nothing else is chosen), tentative (boots while tries are
/// left, until confirmed), good (confirmed once; the last good one is the fallback), bad
/// (with why: a version a health check rejected shows the end of the check's output),
/// staged (on the disk, not booted until `terra apply`). Then the digests that were bad on
/// this node, kept after their versions are gone: upgrades refuse them unless named by
/// digest with --force.
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct VersionsArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Print an array of objects with name, state, tries_left, image, digest, created,
    /// exclusive_bytes, booted, reason, verified_by, kernel, kernel_failed and health (the
    /// check that rejected it: check, result, output); with --rejected: digest, name, image,
    /// reason and when
    #[arg(long)]
    json: bool,
    /// List only the digests that were bad on this node
    #[arg(long)]
    rejected: bool,
}

/// Confirm (good) or reject (bad) the tentative version
///
/// On the running system it acts on the booted version, like /run/terra/bless; offline on
/// a disk, on its tentative version. good makes it the default; bad makes the next boot run
/// the default.
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct BlessArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// The verdict
    #[arg(value_enum, default_value_t = VerdictArg::Good)]
    verdict: VerdictArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum VerdictArg {
    /// The version works: make it the default
    Good,
    /// It does not: the next boot runs the default
    Bad,
}

/// Make the last good version the default
///
/// A pending tentative version is dropped (bad).
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct RollbackArgs {
    #[command(flatten)]
    disk: DiskArgs,
}

/// Remove old versions and the layer chains nothing stands on
///
/// Removes bad ones first, then the oldest; never the default, the booted one, the last
/// good one or a tentative one.
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct GcArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Versions kept
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP)]
    keep: usize,
}

/// `terra install …`
pub fn install(a: InstallArgs, progress: &dyn Progress) -> Result<Installed, CliError> {
    let mut spec = InstallSpec::new(&a.config);
    spec.image = a.image;
    spec.disks = a.disks;
    spec.force = a.force;
    spec.root_uuid = a.uuid;
    spec.platform = a.fetch.platform.unwrap_or_default();
    spec.plain_http = a.fetch.plain_http;
    spec.apply.devices = !a.no_devices;
    spec.writable = a.writable;
    spec.kernel = a.kernel;
    spec.cmdline = a.cmdlines.join(" ").trim().to_string();
    spec.uki = a.uki;
    spec.verify = policy(&a.fetch.verify_keys)?;
    let report = install::install_with(&spec, progress)?;
    skipped_xattrs(&report.unpack.skipped_xattrs);
    debug_notes(&report.unpack.notes);
    for (label, profile, disks) in &report.groups {
        println!(
            "terra: group {label} ({profile}): {}",
            disks
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "terra: installed {} into subvolume {} of LABEL={}: {} layers, {} entries, {} bytes",
        report.image,
        report.root_subvolume,
        report.root_label,
        report.unpack.layers,
        report.unpack.entries,
        report.unpack.bytes
    );
    let disks = report
        .groups
        .iter()
        .find(|(label, _, _)| *label == report.root_label)
        .map(|(_, _, disks)| disks.clone())
        .unwrap_or_default();
    let node = terra_init::config::NodeConfig::load(&a.config)?;
    Ok(Installed {
        target: Target { disks },
        extensions: node.extensions.into_iter().map(|e| e.image).collect(),
        resolve: ResolveOptions {
            platform: spec.platform.clone(),
            plain_http: spec.plain_http,
            ..Default::default()
        },
        apply: spec.apply.clone(),
    })
}

/// The root group `terra install` made, for what follows it (node.toml's extensions).
pub struct Installed {
    /// Its disks.
    pub target: Target,
    /// node.toml's `[[extensions]]` images.
    pub extensions: Vec<String>,
    /// How the install fetched (no keys: those it kept on the disk check from now on).
    pub resolve: ResolveOptions,
    /// How it unpacked.
    pub apply: ApplyOptions,
}

/// `terra upgrade`.
pub fn upgrade(a: UpgradeArgs, progress: &dyn Progress) -> Result<(), CliError> {
    let target = a.disk.target();
    let reference = &a.reference;
    let mut spec = UpgradeSpec::new(reference);
    spec.name = a.name;
    spec.tries = a.tries;
    spec.keep = a.keep;
    spec.writable = a.writable;
    spec.apply.devices = !a.no_devices;
    spec.resolve = a.fetch.resolve()?;
    spec.stage_only = a.download_only;
    spec.force = a.force;
    let boots = match versions::upgrade_with(&target, &spec, progress)? {
        Upgraded::Same(v) => {
            println!(
                "terra: version {v} is {reference} already; nothing to do{}",
                if a.reboot { ", not rebooting" } else { "" }
            );
            None
        }
        Upgraded::New {
            name,
            tries,
            built,
            removed,
        } => {
            println!(
                "terra: version {name} from {reference}: {}; tentative with {tries} tries",
                built_line(&built)
            );
            built_notes(&name, &built, &removed);
            Some(name)
        }
        Upgraded::Staged {
            name,
            built,
            removed,
        } => {
            println!(
                "terra: version {name} from {reference}: {}; staged: `terra apply {name}` makes it boot",
                built_line(&built)
            );
            built_notes(&name, &built, &removed);
            None
        }
        Upgraded::Applied(applied) => {
            println!("terra: {reference} was staged as {}", applied.name);
            applied_line(&applied);
            Some(applied.name)
        }
    };
    match boots {
        Some(name) if a.reboot => reboot(&target, &name),
        _ => Ok(()),
    }
}

fn built_line(built: &versions::Built) -> String {
    format!(
        "{} of {} layers from chains on the disk, {} unpacked ({} entries, {} bytes)",
        built.reused, built.layers, built.unpack.layers, built.unpack.entries, built.unpack.bytes
    )
}

fn built_notes(name: &str, built: &versions::Built, removed: &[String]) {
    skipped_xattrs(&built.unpack.skipped_xattrs);
    if let Some(k) = &built.kernel {
        println!(
            "terra: version {name} carries kernel {}: its initramfs is {} bytes",
            k.release, k.initramfs_bytes
        );
        if !k.left_out.is_empty() {
            eprintln!(
                "terra: warning: kernel {} has no module {} (left out of its initramfs)",
                k.release,
                k.left_out.join(", ")
            );
        }
    }
    for e in &built.extensions {
        println!(
            "terra: extension {} from {} ({}) fetched for {name} (template {})",
            e.name, e.image, e.digest, e.template
        );
    }
    if !removed.is_empty() {
        println!("terra: removed old versions {}", removed.join(", "));
    }
}

fn applied_line(a: &Applied) {
    println!(
        "terra: version {} applied: tentative with {} tries, it boots next{}",
        a.name,
        a.tries,
        a.superseded
            .as_deref()
            .map(|s| format!(" ({s}, never confirmed, is superseded)"))
            .unwrap_or_default()
    );
}

/// Restarts the running system into `name`, saying how first.
fn reboot(target: &Target, name: &str) -> Result<(), CliError> {
    let r = versions::prepare_reboot(target, name)?;
    println!("terra: {r}");
    r.start()?;
    Ok(())
}

/// `terra apply`.
pub fn apply(a: ApplyArgs) -> Result<(), CliError> {
    let target = a.disk.target();
    let applied = versions::apply(&target, a.name.as_deref(), a.tries)?;
    applied_line(&applied);
    if a.reboot {
        reboot(&target, &applied.name)?;
    }
    Ok(())
}

/// Lines of a failed health check's output `terra versions` shows (`--json` has up to
/// 4 KiB of it).
const HEALTH_LINES: usize = 5;

/// `terra versions`.
pub fn versions(a: VersionsArgs) -> Result<(), CliError> {
    let (target, json) = (a.disk.target(), a.json);
    let listing = versions::list(&target)?;
    if a.rejected {
        if json {
            println!("{}", serde_json::to_string_pretty(&listing.rejected)?);
        } else {
            print_rejected(&listing.rejected);
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&listing.versions)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<10} {:>5} {:>12}  {:<20}  IMAGE",
        "NAME", "STATE", "TRIES", "EXCLUSIVE", "CREATED"
    );
    for v in &listing.versions {
        println!(
            "{:<12} {:<10} {:>5} {:>12}  {:<20}  {}{}",
            format!("{}{}", v.name, if v.booted { "*" } else { "" }),
            v.state,
            v.tries_left,
            v.exclusive_bytes.map_or("?".into(), |b| b.to_string()),
            v.created,
            v.image,
            v.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        // Why it is bad, in the check's own words: the end of its output.
        if let Some(h) = &v.health {
            let lines: Vec<&str> = h.output.lines().collect();
            for line in &lines[lines.len().saturating_sub(HEALTH_LINES)..] {
                println!("    {} | {line}", h.check);
            }
        }
        if let Some(k) = &v.kernel_failed {
            println!("    kernel: {k}");
        }
    }
    if !listing.rejected.is_empty() {
        println!(
            "\nBad on this node, not applied again unless named by digest with \
             `terra upgrade --force`:"
        );
        print_rejected(&listing.rejected);
    }
    Ok(())
}

fn print_rejected(rejected: &[terra_init::bootstate::Rejected]) {
    println!(
        "{:<12} {:<20}  {:<71}  IMAGE (WHY)",
        "VERSION", "WHEN", "DIGEST"
    );
    for r in rejected {
        println!(
            "{:<12} {:<20}  {:<71}  {} ({})",
            r.name, r.when, r.digest, r.image, r.reason
        );
    }
}

/// `terra bless`.
pub fn bless(a: BlessArgs) -> Result<(), CliError> {
    let verdict = match a.verdict {
        VerdictArg::Good => Verdict::Good,
        VerdictArg::Bad => Verdict::Bad,
    };
    println!("terra: {}", versions::bless(&a.disk.target(), verdict)?);
    Ok(())
}

/// `terra rollback`.
pub fn rollback(a: RollbackArgs) -> Result<(), CliError> {
    println!("terra: {}", versions::rollback(&a.disk.target())?);
    Ok(())
}

/// `terra gc`.
pub fn gc(a: GcArgs) -> Result<(), CliError> {
    let removed = versions::gc(&a.disk.target(), a.keep)?;
    if removed.is_empty() {
        println!("terra: nothing to remove");
    } else {
        println!("terra: removed {}", removed.join(", "));
    }
    Ok(())
}
