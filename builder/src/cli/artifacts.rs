//! `terra initramfs|kernel|iso|pxe|uki`: the boot artifacts, over
//! `terra_builder::{initramfs, kernel, iso, live, pxe, uki}`.

use std::path::{Path, PathBuf};

use clap::Args;
use terra_builder::initramfs::{
    self, find_stage0, source_date_epoch, Compression, InitramfsSpec, DEFAULT_BUSYBOX,
};
use terra_builder::iso::{self, IsoSpec};
use terra_builder::kernel::{self, KernelSpec};
use terra_builder::kmod::KernelSource;
use terra_builder::live;
use terra_builder::oci::Progress;
use terra_builder::pxe::{self, PxeSpec};
use terra_builder::uki::{self, Signer, UkiSpec};

use super::{artifact, images, Error};

const SOURCE_DATE_EPOCH_REPRODUCIBLE: &str = "\
Environment:
  SOURCE_DATE_EPOCH  every timestamp on the image (default 0): same inputs, same bytes";

/// Build a Terra initramfs image
#[derive(Debug, Args)]
#[command(after_long_help = "\
Environment:
  SOURCE_DATE_EPOCH  modification time of every entry (default 0)")]
pub struct InitramfsArgs {
    /// Where to write the image
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Kernel version: modules from /lib/modules/V (default: the newest installed)
    #[arg(long, value_name = "V")]
    kver: Option<String>,
    /// Take modules from DIR instead (its name is the kernel version unless --kver is given)
    #[arg(long, value_name = "DIR")]
    modules_dir: Option<PathBuf>,
    /// stage0 binary, packed as /init (default: $TERRA_STAGE0, stage0 beside terra,
    /// /usr/lib/terra/stage0, then this workspace's build)
    #[arg(long, value_name = "PATH")]
    stage0: Option<PathBuf>,
    /// Node config, packed as /etc/terra/node.toml
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Pack NAME and its dependencies and load it at boot; repeatable, or comma-separated
    ///
    /// Added to the module lists (or, without --modules-list, to the QEMU set).
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// Pack each module named in FILE (one per line, `#` comments); repeatable (default:
    /// the QEMU set, initramfs/qemu.modules)
    ///
    /// stage0 loads them when a device, the root filesystem or terra.modules= asks.
    #[arg(long = "modules-list", value_name = "FILE")]
    module_lists: Vec<PathBuf>,
    /// Add busybox as /bin/sh
    #[arg(long)]
    rescue_shell: bool,
    /// Static busybox for the rescue shell (default /bin/busybox; implies --rescue-shell)
    #[arg(long, value_name = "PATH")]
    busybox: Option<PathBuf>,
    /// Leave out listed modules this kernel does not have (named on stderr) instead of
    /// failing
    ///
    /// For kernel hooks and sets shared by several kernel flavours.
    #[arg(long = "skip-missing-modules")]
    skip_missing: bool,
    /// Firmware root (default /lib/firmware)
    #[arg(long = "firmware-dir", value_name = "DIR")]
    firmware_root: Option<PathBuf>,
    /// zstd[:1-19], gzip[:1-9] or none
    #[arg(long = "compress", value_name = "C", default_value_t = Compression::default())]
    compression: Compression,
    /// Only the drivers this machine's devices use (its /sys), as dracut --hostonly
    ///
    /// Device drivers of the module lists that no device here matches are left out (named
    /// on stderr); filesystems, protocols and --module names stay. A device added later
    /// gets no driver (the boot then names the module it needs).
    #[arg(long)]
    host: bool,
    /// --host for another machine: its sysfs copied to DIR (DIR/devices/**/modalias)
    #[arg(long = "host-sysfs", value_name = "DIR")]
    host_sysfs: Option<PathBuf>,
}

/// Build a kernel from kernel-config/ fragments
///
/// Merges the fragments, in order, onto `make defconfig`, runs `make olddefconfig` and
/// fails naming every requested option the kernel dropped; then builds bzImage and modules.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Environment:
  SOURCE_DATE_EPOCH  the kernel's build timestamp (KBUILD_BUILD_TIMESTAMP)")]
pub struct KernelArgs {
    /// Unpacked kernel source tree (left clean: objects go to OUT/build)
    #[arg(long, value_name = "DIR")]
    source: PathBuf,
    /// Configuration fragment (.config syntax); repeatable
    #[arg(long = "fragment", value_name = "F")]
    fragments: Vec<PathBuf>,
    /// Output directory: config, bzImage, lib/modules/<kver>/, build/
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Stop after olddefconfig and the check (no compilation)
    #[arg(long)]
    check_only: bool,
    /// Parallel make jobs (default: the number of CPUs)
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
}

/// Build a hybrid BIOS/UEFI boot ISO (GRUB)
///
/// The consoles are VGA and ttyS0 (115200 baud); GRUB boots without a menu delay.
#[derive(Debug, Args)]
#[command(after_long_help = SOURCE_DATE_EPOCH_REPRODUCIBLE)]
pub struct IsoArgs {
    /// Kernel image
    #[arg(long, value_name = "K")]
    kernel: PathBuf,
    /// Initramfs image
    #[arg(long, value_name = "I")]
    initramfs: PathBuf,
    /// Extra kernel arguments (after the consoles and the node's); repeatable
    #[arg(long = "cmdline", value_name = "ARGS", allow_hyphen_values = true)]
    cmdlines: Vec<String>,
    /// Add this node.toml's kernel arguments (hostname=, version=, …)
    #[arg(long, value_name = "FILE")]
    node: Option<PathBuf>,
    /// ISO 9660 volume label
    #[arg(long, value_name = "L", default_value = iso::DEFAULT_LABEL)]
    label: String,
    /// Make a live ISO: this OCI image (oci:PATH[:TAG], docker-archive:PATH or a registry
    /// reference) becomes a squashfs root at /LiveOS/squashfs.img that stage0 boots under a
    /// tmpfs overlay, found by the volume label (root=live:LABEL=<label>); no disk needed
    #[arg(long, value_name = "REF")]
    live: Option<String>,
    /// Under UEFI, start this Unified Kernel Image (`terra uki`, signed for Secure Boot)
    /// directly instead of GRUB; its own command line applies (for a live ISO, give it
    /// root=live:LABEL=<label>). BIOS still boots GRUB with --kernel and --initramfs
    #[arg(long, value_name = "EFI")]
    uki: Option<PathBuf>,
    #[command(flatten)]
    fetch: images::FetchArgs,
    /// The image to write
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

/// Write a TFTP/HTTP tree for iPXE and pxelinux (BIOS and UEFI)
///
/// Writes DIR/vmlinuz, DIR/initrd.img, DIR/boot.ipxe (point DHCP's boot file or iPXE at
/// it), DIR/<mac>.ipxe and DIR/pxelinux.cfg/01-<mac> per node, and pxelinux.cfg/default.
/// A machine whose MAC has no entry boots the default entry.
#[derive(Debug, Args)]
pub struct PxeArgs {
    /// Kernel image (copied to DIR/vmlinuz)
    #[arg(long, value_name = "K")]
    kernel: PathBuf,
    /// Initramfs image (copied to DIR/initrd.img)
    #[arg(long, value_name = "I")]
    initramfs: PathBuf,
    /// A node.toml with `mac`; its entry gets the node's kernel arguments (hostname=,
    /// version=, [boot] …); repeatable
    #[arg(long = "node", value_name = "FILE")]
    nodes: Vec<PathBuf>,
    /// Extra kernel arguments for every entry; repeatable
    #[arg(long = "cmdline", value_name = "ARGS", allow_hyphen_values = true)]
    cmdlines: Vec<String>,
    /// Also copy pxelinux.0 and ldlinux.c32 (packages pxelinux, syslinux-common) for BIOS
    /// machines that boot pxelinux
    #[arg(long)]
    pxelinux: bool,
    /// The tree's directory
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

/// Build a Unified Kernel Image for Secure Boot
///
/// One EFI application (kernel, initramfs, command line), signed for Secure Boot when
/// given a key: systemd's EFI stub with .osrel, .cmdline, .uname and .initrd sections and
/// the kernel as .linux (the UKI specification's layout). Under Secure Boot the stub
/// ignores a command line from the boot loader: the signed .cmdline is the kernel's whole
/// command line.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Environment:
  SOURCE_DATE_EPOCH  the signature's signing time (default 0): same inputs, same bytes")]
pub struct UkiArgs {
    /// Kernel image (x86 bzImage with the EFI handover entry)
    #[arg(long, value_name = "K")]
    kernel: PathBuf,
    /// Initramfs image
    #[arg(long, value_name = "I")]
    initramfs: PathBuf,
    /// The kernel command line (repeatable, joined with spaces)
    #[arg(long = "cmdline", value_name = "ARGS", allow_hyphen_values = true)]
    cmdlines: Vec<String>,
    /// The .osrel section (default: NAME="Terra", ID=terra)
    #[arg(long, value_name = "FILE")]
    os_release: Option<PathBuf>,
    /// systemd's EFI stub
    #[arg(
        long,
        value_name = "PATH",
        default_value = uki::DEFAULT_STUB,
        long_help = format!("systemd's EFI stub (package {})", uki::STUB_PACKAGE)
    )]
    stub: PathBuf,
    /// Sign with this PEM private key (sbsign, package sbsigntool, run under faketime,
    /// package faketime); needs --sign-cert
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// … and this PEM certificate: both or neither
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
    /// The image to write (e.g. EFI/BOOT/BOOTX64.EFI on an ESP)
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

/// `terra initramfs`.
pub fn initramfs(a: InitramfsArgs) -> Result<(), Error> {
    let kernel = KernelSource {
        kver: a.kver,
        modules_dir: a.modules_dir,
        ..KernelSource::default()
    };
    let modules: Vec<String> = a
        .modules
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let rescue_shell = a.rescue_shell || a.busybox.is_some();

    let stage0 = match a.stage0 {
        Some(p) => p,
        None => find_stage0()?,
    };
    let mut spec = InitramfsSpec::new(stage0, a.output);
    spec.kernel = kernel;
    spec.choose_modules(modules, &a.module_lists)?;
    spec.config = a.config;
    spec.skip_missing = a.skip_missing;
    if rescue_shell {
        spec.busybox = Some(a.busybox.unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX)));
    }
    if let Some(root) = a.firmware_root {
        spec.firmware_root = root;
    }
    spec.compression = a.compression;
    spec.host = a.host_sysfs.or(a.host.then(|| PathBuf::from("/sys")));
    spec.mtime = source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())?;

    let report = initramfs::build(&spec)?;

    // Missing firmware only matters on hardware that needs it: warn, grouped by module.
    if let Some(problem) = &report.config_problem {
        eprintln!("terra: warning: stage0 will refuse this config at boot: {problem}");
    }
    if report.bless.is_none() {
        eprintln!(
            "terra: warning: no bless beside {} (cargo builds it with stage0): a tentative \
             version booted from this image cannot confirm itself",
            spec.stage0.display()
        );
    }
    if !report.left_out.is_empty() {
        eprintln!(
            "terra: warning: kernel {} has no module {} (left out)",
            report.kver,
            report.left_out.join(", ")
        );
    }
    if !report.host_dropped.is_empty() {
        eprintln!(
            "terra: --host: left out {} driver(s) no device of {} uses: {}",
            report.host_dropped.len(),
            spec.host.as_deref().unwrap_or(Path::new("/sys")).display(),
            report.host_dropped.join(", ")
        );
    }
    let mut missing = report.missing_firmware.iter().peekable();
    while let Some(first) = missing.next() {
        let mut names = vec![first.firmware.as_str()];
        while let Some(next) = missing.next_if(|m| m.module == first.module) {
            names.push(next.firmware.as_str());
        }
        eprintln!(
            "terra: warning: firmware for {} not found in {}: {}",
            first.module,
            spec.firmware_root.display(),
            names.join(", ")
        );
    }
    println!(
        "terra: wrote {}: kernel {}, {} modules, {} firmware files; {} bytes cpio, {} bytes {}",
        spec.output.display(),
        report.kver,
        report.modules.len(),
        report.firmware.len(),
        report.uncompressed_bytes,
        report.compressed_bytes,
        report.compression,
    );
    Ok(())
}

/// Repeated `--cmdline` values, joined with spaces as one command line.
fn joined(cmdlines: &[String]) -> String {
    cmdlines.join(" ").trim().to_string()
}

/// `terra kernel`.
pub fn kernel(a: KernelArgs) -> Result<(), Error> {
    let mut spec = KernelSpec::new(a.source, a.fragments, a.output);
    spec.check_only = a.check_only;
    if let Some(j) = a.jobs {
        spec.jobs = j;
    }
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH") {
        spec.source_date_epoch = Some(u64::from(source_date_epoch(Some(&epoch))?));
    }
    let start = std::time::Instant::now();
    let report = kernel::build(&spec).map_err(artifact)?;
    match (&report.bzimage, &report.kver) {
        (Some(bz), Some(kver)) => println!(
            "terra: built kernel {kver} in {:.0} s: {} ({} bytes), modules in {}",
            start.elapsed().as_secs_f64(),
            bz.display(),
            std::fs::metadata(bz).map(|m| m.len()).unwrap_or(0),
            spec.output.join("lib/modules").join(kver).display()
        ),
        _ => println!(
            "terra: {} requested options hold after olddefconfig; configuration in {}",
            report.requested,
            report.config.display()
        ),
    }
    Ok(())
}

/// `terra iso`.
pub fn iso(a: IsoArgs, progress: &dyn Progress) -> Result<(), Error> {
    let mut spec = IsoSpec::new(a.kernel, a.initramfs, a.output);
    spec.cmdline = joined(&a.cmdlines);
    spec.node = a.node;
    spec.label = a.label;
    spec.uki = a.uki;
    spec.source_date_epoch = u64::from(source_date_epoch(
        std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
    )?);
    let start = std::time::Instant::now();
    // Kept until the ISO is built; removed however the build ends.
    let mut squash = None;
    if let Some(reference) = &a.live {
        let image = images::resolve_verified(reference, &a.fetch, progress)?;
        let (file, r) =
            live::squashfs_beside(&image, &spec.output, spec.source_date_epoch, progress)
                .map_err(artifact)?;
        println!(
            "terra: live root {reference}: {} bytes unpacked, squashfs {} bytes",
            r.unpacked_bytes, r.bytes
        );
        spec.live = Some(file.path().to_path_buf());
        squash = Some(file);
    }
    let report = iso::build(&spec).map_err(artifact)?;
    drop(squash);
    println!(
        "terra: wrote {} ({} bytes, label {}) in {:.1} s; kernel arguments: {}",
        spec.output.display(),
        report.bytes,
        spec.label,
        start.elapsed().as_secs_f64(),
        report.cmdline
    );
    Ok(())
}

/// `terra pxe`.
pub fn pxe(a: PxeArgs) -> Result<(), Error> {
    let spec = PxeSpec {
        kernel: a.kernel,
        initramfs: a.initramfs,
        nodes: a.nodes,
        cmdline: joined(&a.cmdlines),
        output: a.output,
        pxelinux: a.pxelinux,
    };
    let report = pxe::build(&spec).map_err(artifact)?;
    for path in &report.removed {
        println!("terra: removed stale entry {}", path.display());
    }
    for n in &report.nodes {
        println!(
            "terra: {} ({}): {}",
            n.mac,
            n.node.display(),
            n.args.join(" ")
        );
    }
    println!(
        "terra: wrote {}: {} node entries and the default ({})",
        spec.output.display(),
        report.nodes.len(),
        report.default_args.join(" ")
    );
    Ok(())
}

/// `terra uki`.
pub fn uki(a: UkiArgs) -> Result<(), Error> {
    let mut spec = UkiSpec::new(a.kernel, a.initramfs, a.output);
    spec.cmdline = joined(&a.cmdlines);
    spec.os_release = a.os_release;
    spec.stub = a.stub;
    // clap's `requires` makes these both or neither.
    spec.sign = match (a.sign_key, a.sign_cert) {
        (Some(key), Some(cert)) => Some(Signer { key, cert }),
        _ => None,
    };
    spec.source_date_epoch = u64::from(source_date_epoch(
        std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
    )?);
    let start = std::time::Instant::now();
    let report = uki::build(&spec).map_err(artifact)?;
    let sections: Vec<String> = report
        .sections
        .iter()
        .map(|(name, va, size)| format!("{name} {size} bytes at {va:#x}"))
        .collect();
    println!(
        "terra: wrote {} ({} bytes, {}) in {:.1} s: kernel {}; {}",
        spec.output.display(),
        report.bytes,
        match &spec.sign {
            Some(s) => format!("signed with {}", s.cert.display()),
            None => "unsigned".into(),
        },
        start.elapsed().as_secs_f64(),
        report.uname.as_deref().unwrap_or("(release unknown)"),
        sections.join(", ")
    );
    Ok(())
}
