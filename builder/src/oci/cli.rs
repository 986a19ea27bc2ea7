//! `terra image pull|unpack` and `terra install`: argument parsing over `terra_builder::oci`
//! and `terra_builder::install`. Part of the `terra` binary only (main.rs includes it).

use std::path::PathBuf;

use terra_builder::install::{self, InstallSpec};
use terra_builder::oci::{
    self, ApplyOptions, ImageRef, OciError, Platform, Progress, ResolveOptions, Verified,
    VerifyPolicy,
};

/// A failure the binary prints after `terra: `.
pub type CliError = Box<dyn std::error::Error>;

/// What REF may be, for every command that takes an image.
const REF_HELP: &str = "\
REF is oci:PATH[:TAG] (an OCI image layout), docker-archive:PATH (a `docker save` tarball), \
or a registry reference host[:port]/repo[:tag|@sha256:…] (`alpine:3.20` means \
docker.io/library/alpine:3.20). Credentials come from ~/.docker/config.json \
($DOCKER_CONFIG/config.json).";

/// What `--verify-key` checks, for `terra image pull|unpack`.
const VERIFY_HELP: &str = "\
With --verify-key, REF is resolved once and the digest it names (the manifest or index as \
received) must carry a cosign signature by one of the keys (the sha256-<hex>.sig tag in the \
registry repository, or in the layout); the platform's manifest and every blob are then \
taken by digest from the verified bytes. An unsigned image, a bad signature, one for another \
digest or by another key is refused before anything is written. pull copies the signature \
into the layout, so `unpack oci:DIR:TAG --verify-key` works offline after it.";

/// Pull and unpack OCI images
///
/// Every blob's digest and size are checked. With TERRA_DEBUG=1, what was accepted although
/// unusual (a layer missing its final padding or end-of-archive blocks, as Go's tar reader
/// accepts) is printed on stderr.
#[derive(Debug, clap::Args)]
#[command(after_long_help = VERIFY_HELP)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    Pull(PullArgs),
    Unpack(UnpackArgs),
}

/// How an image is fetched and checked: the options `image pull`, `image unpack`,
/// `install` and `upgrade` share.
#[derive(Debug, Default, clap::Args)]
pub struct FetchArgs {
    /// Platform picked from an index (default linux/amd64)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
    /// Talk HTTP to the registry (a local one)
    #[arg(long)]
    pub plain_http: bool,
    /// Require a cosign signature by this ECDSA P-256 public key (PKIX PEM, e.g.
    /// cosign.pub) on the digest REF resolves to; repeatable, any one suffices
    ///
    /// Checked before anything is written (see `terra image --help`).
    #[arg(long = "verify-key", value_name = "PEM")]
    pub verify_keys: Vec<PathBuf>,
}

impl FetchArgs {
    /// The resolve options these ask for.
    pub fn resolve(&self) -> Result<ResolveOptions, CliError> {
        Ok(ResolveOptions {
            platform: self.platform.clone().unwrap_or_default(),
            plain_http: self.plain_http,
            verify: policy(&self.verify_keys)?,
        })
    }
}

/// Copy one platform of a registry image into an OCI layout
///
/// DIR is created when missing; the image is tagged there with REF's tag.
#[derive(Debug, clap::Args)]
#[command(after_long_help = format!("{REF_HELP}\n\n{VERIFY_HELP}"))]
struct PullArgs {
    /// The registry image
    #[arg(value_name = "REF")]
    reference: String,
    /// The OCI layout to write
    #[arg(long, value_name = "DIR")]
    layout: PathBuf,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Apply an image's layers into a directory
///
/// Whiteouts, hardlinks, owners, modes, xattrs and device nodes (when root) are applied
/// into a new directory renamed to DIR once complete; an existing DIR is replaced
/// atomically.
#[derive(Debug, clap::Args)]
#[command(after_long_help = format!("{REF_HELP}\n\n{VERIFY_HELP}"))]
struct UnpackArgs {
    /// The image
    #[arg(value_name = "REF")]
    reference: String,
    /// The directory to make
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Leave out device nodes and fifos
    #[arg(long)]
    no_devices: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

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
/// With `mbr = true` on the root group, its first disk boots on its own under BIOS and
/// UEFI: a GPT with a BIOS boot partition, a 256 MiB FAT ESP (PARTLABEL terra-esp) and
/// btrfs on the rest; GRUB for both firmwares; the default version's kernel and a Terra
/// initramfs for it on the ESP (a version that carries no kernel boots the base kernel,
/// --kernel).
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

/// The policy of the `--verify-key` files given, if any.
fn policy(keys: &[PathBuf]) -> Result<Option<VerifyPolicy>, CliError> {
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(VerifyPolicy::from_files(keys)?))
}

fn print_verified(v: &Verified) {
    println!(
        "terra: signature verified: {} signed by {} ({})",
        v.digest, v.key, v.key_fingerprint
    );
}

/// `terra image …`
pub fn cmd_image(args: ImageArgs, progress: &dyn Progress) -> Result<(), CliError> {
    match args.command {
        ImageCommand::Pull(a) => {
            let resolve = a.fetch.resolve()?;
            let r: ImageRef = a.reference.parse()?;
            let ImageRef::Registry(reg) = &r else {
                return Err(OciError::Reference {
                    reference: a.reference.clone(),
                    reason: "pull takes a registry reference (unpack reads oci: and docker-archive: directly)".into(),
                }
                .into());
            };
            let report = oci::pull_with(
                reg,
                &a.layout,
                &oci::PullOptions {
                    platform: resolve.platform,
                    plain_http: resolve.plain_http,
                    docker_config: None,
                    verify: resolve.verify,
                },
                progress,
            )?;
            if let Some(v) = &report.verified {
                print_verified(v);
            }
            println!(
                "terra: pulled {} ({}) into {}{}: {} blobs fetched ({} bytes), {} already there",
                reg.whole(),
                report.manifest_digest,
                a.layout.display(),
                report
                    .tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                report.fetched,
                report.bytes,
                report.reused
            );
            Ok(())
        }
        ImageCommand::Unpack(a) => {
            let resolve = a.fetch.resolve()?;
            let apply = ApplyOptions {
                devices: !a.no_devices,
                ..ApplyOptions::default()
            };
            let r: ImageRef = a.reference.parse()?;
            let image = oci::resolve_with(&r, &resolve, progress)?;
            if let Some(v) = &image.verified {
                print_verified(v);
            }
            let report = oci::unpack_with(&image, &a.dir, &apply, progress)?;
            println!(
                "terra: unpacked {} into {}: {} layers, {} entries, {} whiteouts, {} bytes{}",
                image.reference,
                a.dir.display(),
                report.layers,
                report.entries,
                report.whiteouts,
                report.bytes,
                if report.skipped_devices > 0 {
                    format!(", {} device nodes/fifos left out", report.skipped_devices)
                } else {
                    String::new()
                }
            );
            debug_notes(&report.notes);
            Ok(())
        }
    }
}

/// `terra iso --live REF`: resolves (and, with `--verify-key`, verifies) the image, then
/// packs its root as the squashfs `out`.
pub fn live_squashfs(
    reference: &str,
    fetch: &FetchArgs,
    out: &std::path::Path,
    source_date_epoch: u64,
    progress: &dyn Progress,
) -> Result<terra_builder::live::LiveReport, CliError> {
    let resolve = fetch.resolve()?;
    let r: ImageRef = reference.parse()?;
    let image = oci::resolve_with(&r, &resolve, progress)?;
    if let Some(v) = &image.verified {
        print_verified(v);
    }
    Ok(terra_builder::live::squashfs(
        &image,
        out,
        source_date_epoch,
        progress,
    )?)
}

/// What an unpack accepted although unusual, on stderr when `TERRA_DEBUG` is set.
fn debug_notes(notes: &[String]) {
    if std::env::var_os("TERRA_DEBUG").is_some_and(|v| !v.is_empty()) {
        for n in notes {
            eprintln!("terra: debug: {n}");
        }
    }
}

/// `terra install …`
pub fn cmd_install(a: InstallArgs, progress: &dyn Progress) -> Result<(), CliError> {
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
    Ok(())
}
