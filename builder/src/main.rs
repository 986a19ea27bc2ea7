//! terra, the builder: parses arguments and calls the `terra_builder` library.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use terra_builder::initramfs::{
    self, find_stage0, read_module_list, source_date_epoch, Compression, InitramfsError,
    InitramfsSpec, DEFAULT_BUSYBOX, DEFAULT_ZSTD_LEVEL,
};
use terra_builder::iso::{self, IsoSpec};
use terra_builder::kernel::{self, KernelSpec};
use terra_builder::kmod::KernelSource;
use terra_builder::pxe::{self, PxeSpec};
use terra_builder::uki::{self, Signer, UkiSpec};

// `terra image` and `terra install`, kept beside the library code they drive.
#[path = "oci/cli.rs"]
mod oci_cli;
// `terra upgrade|versions|bless|rollback|gc`.
mod versions_cli;

const USAGE: &str = "\
terra — builds Terra boot artifacts

Usage: terra <command> [options]

Commands:
  initramfs    build an initramfs image (see `terra initramfs --help`)
  kernel       build a kernel from kernel-config/ fragments (see `terra kernel --help`)
  iso          build a hybrid BIOS/UEFI boot ISO (see `terra iso --help`)
  pxe          write a TFTP/HTTP tree for iPXE and pxelinux (see `terra pxe --help`)
  uki          build a Unified Kernel Image for Secure Boot (see `terra uki --help`)
  image        pull and unpack OCI images (see `terra image --help`)
  install      make node.toml's btrfs disks and install an image as the root
               (see `terra install --help`)
  upgrade      add a root version from an image; it boots tentatively
  versions     list the root versions and their states (--json)
  bless        confirm (good) or reject (bad) the tentative version
  rollback     make the last good version the default
  gc           remove old versions
  serve        run the controller: provisions diskless nodes (terra-controller)
  node         add, list, upgrade and delete the controller's nodes

Options:
  -h, --help       print this help
  -V, --version    print the version
";

const INITRAMFS_USAGE: &str = "\
terra initramfs — build a Terra initramfs image

Usage: terra initramfs [options] -o OUT

Options:
  -o, --output OUT        where to write the image (required)
      --kver V            kernel version: modules from /lib/modules/V
                          (default: the newest installed)
      --modules-dir DIR   take modules from DIR instead (its name is the kernel
                          version unless --kver is given)
      --stage0 PATH       stage0 binary, packed as /init (default: $TERRA_STAGE0,
                          stage0 beside terra, /usr/lib/terra/stage0, then this
                          workspace's build)
      --config PATH       node config, packed as /etc/terra/node.toml
      --module NAME       pack NAME and its dependencies and load it at boot;
                          repeatable, or comma-separated; added to the module
                          lists (or, without --modules-list, to the QEMU set)
      --modules-list FILE pack each module named in FILE (one per line, `#`
                          comments); stage0 loads them when a device, the root
                          filesystem or terra.modules= asks; repeatable
                          (default: the QEMU set, initramfs/qemu.modules)
      --rescue-shell      add busybox as /bin/sh
      --busybox PATH      static busybox for the rescue shell (default /bin/busybox;
                          implies --rescue-shell)
      --skip-missing-modules
                          leave out listed modules this kernel does not have
                          (named on stderr) instead of failing: for kernel hooks
                          and sets shared by several kernel flavours
      --firmware-dir DIR  firmware root (default /lib/firmware)
      --compress C        zstd[:1-19], gzip[:1-9] or none (default zstd:{zstd})
  -h, --help              print this help

Environment:
  SOURCE_DATE_EPOCH       modification time of every entry (default 0)
";

const KERNEL_USAGE: &str = "\
terra kernel — build a kernel from configuration fragments

Usage: terra kernel --source DIR [--fragment F]... -o OUT

Merges the fragments, in order, onto `make defconfig`, runs `make olddefconfig` and fails
naming every requested option the kernel dropped; then builds bzImage and modules.

Options:
      --source DIR      unpacked kernel source tree (left clean: objects go to OUT/build)
      --fragment F      configuration fragment (.config syntax); repeatable
  -o, --output OUT      output directory: config, bzImage, lib/modules/<kver>/, build/
      --check-only      stop after olddefconfig and the check (no compilation)
  -j, --jobs N          parallel make jobs (default: the number of CPUs)
  -h, --help            print this help

Environment:
  SOURCE_DATE_EPOCH       the kernel's build timestamp (KBUILD_BUILD_TIMESTAMP)
";

const ISO_USAGE: &str = "\
terra iso — build a hybrid ISO that boots under BIOS and UEFI (GRUB)

Usage: terra iso --kernel K --initramfs I [options] -o OUT

Options:
      --kernel K        kernel image
      --initramfs I     initramfs image
      --cmdline ARGS    extra kernel arguments (after the consoles and the node's)
      --node FILE       add this node.toml's kernel arguments (hostname=, version=, …)
      --label L         ISO 9660 volume label (default TERRA)
  -o, --output OUT      the image to write
  -h, --help            print this help

The consoles are VGA and ttyS0 (115200 baud); GRUB boots without a menu delay.

Environment:
  SOURCE_DATE_EPOCH     every timestamp on the image (default 0): same inputs, same bytes
";

const PXE_USAGE: &str = "\
terra pxe — write a network boot tree (iPXE and pxelinux, BIOS and UEFI)

Usage: terra pxe --kernel K --initramfs I [--node node.toml]... [options] -o DIR

Writes DIR/vmlinuz, DIR/initrd.img, DIR/boot.ipxe (point DHCP's boot file or iPXE at
it), DIR/<mac>.ipxe and DIR/pxelinux.cfg/01-<mac> per node, and pxelinux.cfg/default.
A machine whose MAC has no entry boots the default entry.

Options:
      --kernel K        kernel image (copied to DIR/vmlinuz)
      --initramfs I     initramfs image (copied to DIR/initrd.img)
      --node FILE       a node.toml with `mac`; its entry gets the node's kernel
                        arguments (hostname=, version=, [boot] …); repeatable
      --cmdline ARGS    extra kernel arguments for every entry
      --pxelinux        also copy pxelinux.0 and ldlinux.c32 (packages pxelinux,
                        syslinux-common) for BIOS machines that boot pxelinux
  -o, --output DIR      the tree's directory
  -h, --help            print this help
";

const UKI_USAGE: &str = "\
terra uki — build a Unified Kernel Image (one EFI application: kernel, initramfs,
command line), signed for Secure Boot when given a key

Usage: terra uki --kernel K --initramfs I [options] -o OUT

systemd's EFI stub with .osrel, .cmdline, .uname and .initrd sections and the kernel as
.linux (the UKI specification's layout). Under Secure Boot the stub ignores a command line
from the boot loader: the signed .cmdline is the kernel's whole command line.

Options:
      --kernel K        kernel image (x86 bzImage with the EFI handover entry)
      --initramfs I     initramfs image
      --cmdline ARGS    the kernel command line (repeatable, joined with spaces)
      --os-release FILE the .osrel section (default: NAME=\"Terra\", ID=terra)
      --stub PATH       systemd's EFI stub (default {stub}, package {stub_package})
      --sign-key KEY    sign with this PEM private key (sbsign, package sbsigntool,
                        run under faketime, package faketime) …
      --sign-cert CERT  … and this PEM certificate: both or neither
  -o, --output OUT      the image to write (e.g. EFI/BOOT/BOOTX64.EFI on an ESP)
  -h, --help            print this help

Environment:
  SOURCE_DATE_EPOCH     the signature's signing time (default 0): same inputs, same bytes
";

#[derive(Debug)]
enum Error {
    Args(lexopt::Error),
    Usage(String),
    Build(InitramfsError),
    Artifact(Box<dyn std::error::Error>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Args(e) => write!(f, "{e} (see `terra --help`)"),
            Error::Usage(e) => write!(f, "{e}"),
            Error::Build(e) => write!(f, "{e}"),
            Error::Artifact(e) => write!(f, "{e}"),
        }
    }
}

impl From<lexopt::Error> for Error {
    fn from(e: lexopt::Error) -> Self {
        Error::Args(e)
    }
}

impl From<InitramfsError> for Error {
    fn from(e: InitramfsError) -> Self {
        Error::Build(e)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terra: {e}");
            ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    match parser.next()? {
        Some(Short('h') | Long("help")) => {
            print!("{USAGE}");
            Ok(())
        }
        Some(Short('V') | Long("version")) => {
            println!("terra {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Value(cmd)) if cmd == "initramfs" => cmd_initramfs(&mut parser),
        Some(Value(cmd)) if cmd == "kernel" => cmd_kernel(&mut parser),
        Some(Value(cmd)) if cmd == "iso" => cmd_iso(&mut parser),
        Some(Value(cmd)) if cmd == "pxe" => cmd_pxe(&mut parser),
        Some(Value(cmd)) if cmd == "uki" => cmd_uki(&mut parser),
        Some(Value(cmd)) if cmd == "image" => {
            oci_cli::cmd_image(&mut parser).map_err(Error::Artifact)
        }
        Some(Value(cmd)) if cmd == "install" => {
            oci_cli::cmd_install(&mut parser).map_err(Error::Artifact)
        }
        Some(Value(cmd))
            if ["upgrade", "versions", "bless", "rollback", "gc"]
                .iter()
                .any(|c| cmd == *c) =>
        {
            versions_cli::cmd(&cmd.to_string_lossy(), &mut parser).map_err(Error::Artifact)
        }
        Some(Value(cmd)) if cmd == "serve" || cmd == "node" => Err(exec_controller()),
        Some(Value(cmd)) => Err(Error::Usage(format!(
            "unknown command {:?} (see `terra --help`)",
            cmd.to_string_lossy()
        ))),
        Some(arg) => Err(arg.unexpected().into()),
        None => Err(Error::Usage(format!("missing command\n\n{USAGE}"))),
    }
}

/// `terra serve` and `terra node` live in `terra-controller` (the controller crate stands
/// on this one, never the other way): exec it with the same arguments, found beside this
/// executable, then on `$PATH`. Returns only on failure.
fn exec_controller() -> Error {
    use std::os::unix::process::CommandExt;
    const NAME: &str = "terra-controller";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(NAME)))
        .filter(|p| p.is_file());
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(NAME))
            .find(|p| p.is_file())
    });
    let Some(program) = beside.clone().or(on_path) else {
        return Error::Usage(format!(
            "the controller ({NAME}) is not installed: looked beside {} and on $PATH \
             (build it with `cargo build -p terra-controller`)",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "terra".into())
        ));
    };
    let err = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .exec();
    Error::Usage(format!("{}: {err}", program.display()))
}

fn cmd_initramfs(parser: &mut lexopt::Parser) -> Result<(), Error> {
    use lexopt::prelude::*;
    let mut output: Option<PathBuf> = None;
    let mut stage0: Option<PathBuf> = None;
    let mut kernel = KernelSource::default();
    let mut modules: Vec<String> = Vec::new();
    let mut module_lists: Vec<PathBuf> = Vec::new();
    let mut config: Option<PathBuf> = None;
    let mut rescue_shell = false;
    let mut skip_missing = false;
    let mut busybox: Option<PathBuf> = None;
    let mut firmware_root: Option<PathBuf> = None;
    let mut compression = Compression::default();

    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!(
                    "{}",
                    INITRAMFS_USAGE.replace("{zstd}", &DEFAULT_ZSTD_LEVEL.to_string())
                );
                return Ok(());
            }
            Short('o') | Long("output") => output = Some(parser.value()?.into()),
            Long("kver") => kernel.kver = Some(string(parser.value()?, "--kver")?),
            Long("modules-dir") => kernel.modules_dir = Some(parser.value()?.into()),
            Long("stage0") => stage0 = Some(parser.value()?.into()),
            Long("config") => config = Some(parser.value()?.into()),
            Long("module") => {
                let v = string(parser.value()?, "--module")?;
                modules.extend(v.split(',').filter(|m| !m.is_empty()).map(str::to_string));
            }
            Long("modules-list") => module_lists.push(parser.value()?.into()),
            Long("rescue-shell") => rescue_shell = true,
            Long("skip-missing-modules") => skip_missing = true,
            Long("busybox") => {
                busybox = Some(parser.value()?.into());
                rescue_shell = true;
            }
            Long("firmware-dir") => firmware_root = Some(parser.value()?.into()),
            Long("compress") => {
                compression = string(parser.value()?, "--compress")?
                    .parse()
                    .map_err(Error::Usage)?;
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let output = output.ok_or_else(|| {
        Error::Usage("initramfs: missing -o OUT (see `terra initramfs --help`)".into())
    })?;

    let stage0 = match stage0 {
        Some(p) => p,
        None => find_stage0()?,
    };
    let mut spec = InitramfsSpec::new(stage0, output);
    spec.kernel = kernel;
    if !modules.is_empty() || !module_lists.is_empty() {
        spec.load = modules.clone();
        // --module alone adds to the default set (as dracut's --add-drivers does): the
        // fix a failed boot suggests must not drop what the image already had.
        if module_lists.is_empty() {
            modules.extend(initramfs::default_modules());
        }
        for list in &module_lists {
            modules.extend(read_module_list(list)?);
        }
        spec.modules = modules;
    }
    spec.config = config;
    spec.skip_missing = skip_missing;
    if rescue_shell {
        spec.busybox = Some(busybox.unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX)));
    }
    if let Some(root) = firmware_root {
        spec.firmware_root = root;
    }
    spec.compression = compression;
    spec.mtime = source_date_epoch(std::env::var_os("SOURCE_DATE_EPOCH").as_deref())?;

    let report = initramfs::build(&spec)?;

    // Missing firmware only matters on hardware that needs it: warn, grouped by module.
    if let Some(problem) = &report.config_problem {
        eprintln!("terra: warning: stage0 will refuse this config at boot: {problem}");
    }
    if !report.left_out.is_empty() {
        eprintln!(
            "terra: warning: kernel {} has no module {} (left out)",
            report.kver,
            report.left_out.join(", ")
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

fn artifact(e: impl std::error::Error + 'static) -> Error {
    Error::Artifact(Box::new(e))
}

fn cmd_kernel(parser: &mut lexopt::Parser) -> Result<(), Error> {
    use lexopt::prelude::*;
    let mut source: Option<PathBuf> = None;
    let mut fragments: Vec<PathBuf> = Vec::new();
    let mut output: Option<PathBuf> = None;
    let mut check_only = false;
    let mut jobs: Option<usize> = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{KERNEL_USAGE}");
                return Ok(());
            }
            Long("source") => source = Some(parser.value()?.into()),
            Long("fragment") => fragments.push(parser.value()?.into()),
            Short('o') | Long("output") => output = Some(parser.value()?.into()),
            Long("check-only") => check_only = true,
            Short('j') | Long("jobs") => jobs = Some(parser.value()?.parse()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let missing = |what: &str| {
        Error::Usage(format!(
            "kernel: missing {what} (see `terra kernel --help`)"
        ))
    };
    let mut spec = KernelSpec::new(
        source.ok_or_else(|| missing("--source DIR"))?,
        fragments,
        output.ok_or_else(|| missing("-o OUT"))?,
    );
    spec.check_only = check_only;
    if let Some(j) = jobs {
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

fn cmd_iso(parser: &mut lexopt::Parser) -> Result<(), Error> {
    use lexopt::prelude::*;
    let (mut kernel, mut initrd, mut output) = (None, None, None);
    let mut spec = IsoSpec::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!("{ISO_USAGE}");
                return Ok(());
            }
            Long("kernel") => kernel = Some(PathBuf::from(parser.value()?)),
            Long("initramfs") => initrd = Some(PathBuf::from(parser.value()?)),
            Long("cmdline") => {
                let v = string(parser.value()?, "--cmdline")?;
                spec.cmdline = [spec.cmdline, v].join(" ").trim().to_string();
            }
            Long("node") => spec.node = Some(parser.value()?.into()),
            Long("label") => spec.label = string(parser.value()?, "--label")?,
            Short('o') | Long("output") => output = Some(PathBuf::from(parser.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let missing =
        |what: &str| Error::Usage(format!("iso: missing {what} (see `terra iso --help`)"));
    spec.kernel = kernel.ok_or_else(|| missing("--kernel K"))?;
    spec.initramfs = initrd.ok_or_else(|| missing("--initramfs I"))?;
    spec.output = output.ok_or_else(|| missing("-o OUT"))?;
    spec.source_date_epoch = u64::from(source_date_epoch(
        std::env::var_os("SOURCE_DATE_EPOCH").as_deref(),
    )?);
    let start = std::time::Instant::now();
    let report = iso::build(&spec).map_err(artifact)?;
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

fn cmd_pxe(parser: &mut lexopt::Parser) -> Result<(), Error> {
    use lexopt::prelude::*;
    let (mut kernel, mut initrd, mut output) = (None, None, None);
    let mut nodes = Vec::new();
    let mut cmdline = String::new();
    let mut pxelinux = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("pxelinux") => pxelinux = true,
            Short('h') | Long("help") => {
                print!("{PXE_USAGE}");
                return Ok(());
            }
            Long("kernel") => kernel = Some(PathBuf::from(parser.value()?)),
            Long("initramfs") => initrd = Some(PathBuf::from(parser.value()?)),
            Long("node") => nodes.push(PathBuf::from(parser.value()?)),
            Long("cmdline") => {
                let v = string(parser.value()?, "--cmdline")?;
                cmdline = [cmdline, v].join(" ").trim().to_string();
            }
            Short('o') | Long("output") => output = Some(PathBuf::from(parser.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let missing =
        |what: &str| Error::Usage(format!("pxe: missing {what} (see `terra pxe --help`)"));
    let spec = PxeSpec {
        kernel: kernel.ok_or_else(|| missing("--kernel K"))?,
        initramfs: initrd.ok_or_else(|| missing("--initramfs I"))?,
        nodes,
        cmdline,
        output: output.ok_or_else(|| missing("-o DIR"))?,
        pxelinux,
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

fn cmd_uki(parser: &mut lexopt::Parser) -> Result<(), Error> {
    use lexopt::prelude::*;
    let (mut kernel, mut initrd, mut output) = (None, None, None);
    let (mut key, mut cert) = (None, None);
    let mut spec = UkiSpec::new(PathBuf::new(), PathBuf::new(), PathBuf::new());
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                print!(
                    "{}",
                    UKI_USAGE
                        .replace("{stub}", uki::DEFAULT_STUB)
                        .replace("{stub_package}", uki::STUB_PACKAGE)
                );
                return Ok(());
            }
            Long("kernel") => kernel = Some(PathBuf::from(parser.value()?)),
            Long("initramfs") => initrd = Some(PathBuf::from(parser.value()?)),
            Long("cmdline") => {
                let v = string(parser.value()?, "--cmdline")?;
                spec.cmdline = [spec.cmdline, v].join(" ").trim().to_string();
            }
            Long("os-release") => spec.os_release = Some(parser.value()?.into()),
            Long("stub") => spec.stub = parser.value()?.into(),
            Long("sign-key") => key = Some(PathBuf::from(parser.value()?)),
            Long("sign-cert") => cert = Some(PathBuf::from(parser.value()?)),
            Short('o') | Long("output") => output = Some(PathBuf::from(parser.value()?)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    let missing =
        |what: &str| Error::Usage(format!("uki: missing {what} (see `terra uki --help`)"));
    spec.kernel = kernel.ok_or_else(|| missing("--kernel K"))?;
    spec.initramfs = initrd.ok_or_else(|| missing("--initramfs I"))?;
    spec.output = output.ok_or_else(|| missing("-o OUT"))?;
    spec.sign = match (key, cert) {
        (Some(key), Some(cert)) => Some(Signer { key, cert }),
        (None, None) => None,
        (Some(_), None) => return Err(missing("--sign-cert CERT (--sign-key needs it)")),
        (None, Some(_)) => return Err(missing("--sign-key KEY (--sign-cert needs it)")),
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

fn string(v: OsString, option: &str) -> Result<String, Error> {
    v.into_string().map_err(|v| {
        Error::Usage(format!(
            "{option}: {:?} is not valid UTF-8",
            v.to_string_lossy()
        ))
    })
}
