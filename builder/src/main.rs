//! terra, the builder: parses arguments and calls the `terra_builder` library.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use terra_builder::initramfs::{
    self, default_stage0, read_module_list, source_date_epoch, Compression, InitramfsError,
    InitramfsSpec, DEFAULT_BUSYBOX, DEFAULT_ZSTD_LEVEL,
};
use terra_builder::kmod::KernelSource;

const USAGE: &str = "\
terra — builds Terra boot artifacts

Usage: terra <command> [options]

Commands:
  initramfs    build an initramfs image (see `terra initramfs --help`)

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
      --stage0 PATH       stage0 binary, packed as /init
                          (default: target/x86_64-unknown-linux-musl/stage0/stage0
                          in the terra workspace)
      --config PATH       node config, packed as /etc/terra/node.toml
      --module NAME       pack NAME and its dependencies and load it at boot;
                          repeatable, or comma-separated
      --modules-list FILE pack each module named in FILE (one per line, `#`
                          comments); stage0 loads them when a device, the root
                          filesystem or terra.modules= asks; repeatable
                          (default without --module/--modules-list: the QEMU set,
                          initramfs/qemu.modules)
      --rescue-shell      add busybox as /bin/sh
      --busybox PATH      static busybox for the rescue shell (default /bin/busybox;
                          implies --rescue-shell)
      --firmware-dir DIR  firmware root (default /lib/firmware)
      --compress C        zstd[:1-19], gzip[:1-9] or none (default zstd:{zstd})
  -h, --help              print this help

Environment:
  SOURCE_DATE_EPOCH       modification time of every entry (default 0)
";

#[derive(Debug)]
enum Error {
    Args(lexopt::Error),
    Usage(String),
    Build(InitramfsError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Args(e) => write!(f, "{e} (see `terra --help`)"),
            Error::Usage(e) => write!(f, "{e}"),
            Error::Build(e) => write!(f, "{e}"),
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
        Some(Value(cmd)) => Err(Error::Usage(format!(
            "unknown command {:?} (see `terra --help`)",
            cmd.to_string_lossy()
        ))),
        Some(arg) => Err(arg.unexpected().into()),
        None => Err(Error::Usage(format!("missing command\n\n{USAGE}"))),
    }
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

    let mut spec = InitramfsSpec::new(stage0.unwrap_or_else(default_stage0), output);
    spec.kernel = kernel;
    if !modules.is_empty() || !module_lists.is_empty() {
        spec.load = modules.clone();
        for list in &module_lists {
            modules.extend(read_module_list(list)?);
        }
        spec.modules = modules;
    }
    spec.config = config;
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

fn string(v: OsString, option: &str) -> Result<String, Error> {
    v.into_string().map_err(|v| {
        Error::Usage(format!(
            "{option}: {:?} is not valid UTF-8",
            v.to_string_lossy()
        ))
    })
}
