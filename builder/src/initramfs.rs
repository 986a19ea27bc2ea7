//! Assembles an initramfs image as ARCHITECTURE.md §3 and `terra_init::layout` describe it:
//! stage0 as `/init`, the node config, the module closure with its filtered index and
//! firmware, an optional busybox rescue shell, and the few directories and device node
//! the kernel and stage0 need before anything is mounted.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use terra_init::layout;
use terra_init::modindex::normalize;

use crate::cpio::{Archive, CpioError};
use crate::elf::{Elf, ElfError};
use crate::kmod::{FirmwareSearch, Kernel, KernelSource, KmodError, FIRMWARE_ROOT};

/// The module list used when none is given: the QEMU set.
pub const DEFAULT_MODULES_LIST: &str = include_str!("../../initramfs/qemu.modules");
/// Busybox used for the rescue shell when no path is given.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// Where the static stage0 is built, relative to the workspace root.
pub const STAGE0_IN_WORKSPACE: &str = "target/x86_64-unknown-linux-musl/stage0/stage0";
/// zstd level of the default compression. Measured on the QEMU set (11 MB of cpio, 2-core
/// build host, release build): level 6 writes 2.72 MB in 0.27 s, 9 writes 2.63 MB in 0.42 s,
/// 19 writes 2.41 MB in 6.5 s; the bare-metal set (21 MB) takes 0.43 s at 6 and 0.62 s at 9.
/// 6 keeps generation under half a second for both; `--compress zstd:19` is there for
/// images that are built once and shipped.
pub const DEFAULT_ZSTD_LEVEL: i32 = 6;
/// gzip level when none is given.
pub const DEFAULT_GZIP_LEVEL: u32 = 9;

/// The stage0 binary of this workspace's build (`cargo build -p terra-init --bin stage0
/// --profile stage0 --target x86_64-unknown-linux-musl`), in `$CARGO_TARGET_DIR` when that
/// is set, else in the workspace's `target/`.
pub fn default_stage0() -> PathBuf {
    let in_target = STAGE0_IN_WORKSPACE.trim_start_matches("target/");
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join(in_target);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join(STAGE0_IN_WORKSPACE)
}

/// Where the packaged stage0 is installed (`cargo xtask deb` and distributions).
pub const PACKAGED_STAGE0: &str = "/usr/lib/terra/stage0";

/// The stage0 to pack when none is named: `$TERRA_STAGE0`, else `stage0` beside this
/// executable, else [`PACKAGED_STAGE0`], else this workspace's build ([`default_stage0`]);
/// the first that exists. The error lists where it looked.
pub fn find_stage0() -> Result<PathBuf, InitramfsError> {
    let mut looked: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TERRA_STAGE0") {
        looked.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        looked.push(dir.join("stage0"));
    }
    looked.push(PathBuf::from(PACKAGED_STAGE0));
    looked.push(default_stage0());
    match looked.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(InitramfsError::Stage0NotFound { looked }),
    }
}

/// The session keeper binary beside `stage0` (a file named `keeper` in its directory).
pub fn keeper_beside(stage0: &Path) -> Option<PathBuf> {
    stage0
        .parent()
        .map(|d| d.join("keeper"))
        .filter(|k| k.is_file())
}

/// The confirmation command beside `stage0` (a file named `bless` in its directory).
pub fn bless_beside(stage0: &Path) -> Option<PathBuf> {
    stage0
        .parent()
        .map(|d| d.join("bless"))
        .filter(|k| k.is_file())
}

/// Module names from a list: one per line, `#` starts a comment, blank lines are ignored.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// Reads a module list file (see [`parse_module_list`]).
pub fn read_module_list(path: &Path) -> Result<Vec<String>, InitramfsError> {
    let text = std::fs::read_to_string(path).map_err(|err| InitramfsError::Read {
        what: "module list",
        path: path.to_path_buf(),
        err,
    })?;
    Ok(parse_module_list(&text))
}

/// The default module set ([`DEFAULT_MODULES_LIST`]).
pub fn default_modules() -> Vec<String> {
    parse_module_list(DEFAULT_MODULES_LIST)
}

/// The entry time of every archive member: `SOURCE_DATE_EPOCH` when set
/// (reproducible-builds.org/specs/source-date-epoch), else 0.
pub fn source_date_epoch(value: Option<&OsStr>) -> Result<u32, InitramfsError> {
    let Some(value) = value else { return Ok(0) };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| InitramfsError::SourceDateEpoch {
            value: value.to_string_lossy().into_owned(),
        })
}

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip(u32),
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Gzip(l) => write!(f, "gzip:{l}"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    /// `none`, `gzip`, `gzip:LEVEL` (1–9), `zstd`, `zstd:LEVEL` (1–19).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let bad = || format!("invalid compression {s:?}: expected zstd[:1-19], gzip[:1-9] or none");
        match (name, level) {
            ("none", None) => Ok(Compression::None),
            ("gzip", None) => Ok(Compression::Gzip(DEFAULT_GZIP_LEVEL)),
            ("gzip", Some(l)) => match l.parse() {
                Ok(l @ 1..=9) => Ok(Compression::Gzip(l)),
                _ => Err(bad()),
            },
            ("zstd", None) => Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            // Levels above 19 need a window the kernel's unzstd may refuse to allocate.
            ("zstd", Some(l)) => match l.parse() {
                Ok(l @ 1..=19) => Ok(Compression::Zstd(l)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// The driver-hints table stage0 reads when a boot fails (`terra_init::hints`): the
/// modaliases of the kernel's storage and network drivers that are not packed, names only.
fn driver_hints(kernel: &Kernel, packed: &[String]) -> String {
    use terra_init::hints::{wanted_driver, Hints, BUSES};
    let entries: Vec<(String, String)> = kernel
        .index
        .aliases()
        .iter()
        .filter(|(pattern, module)| {
            BUSES.iter().any(|b| pattern.starts_with(b))
                && !packed.contains(module)
                && kernel.index.path(module).is_some_and(wanted_driver)
        })
        .cloned()
        .collect();
    Hints::render(&entries)
}

/// Everything an image is made from.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// The static stage0 binary, packed as `/init`.
    pub stage0: PathBuf,
    /// Which kernel's modules.
    pub kernel: KernelSource,
    /// Modules to pack (with their closure); stage0 loads them when a device's modalias,
    /// the root's filesystem or `terra.modules=` asks for them.
    pub modules: Vec<String>,
    /// Modules stage0 loads unconditionally at boot (also packed).
    pub load: Vec<String>,
    /// Leave out requested modules the kernel does not have (reported in
    /// [`BuildReport::left_out`]) instead of failing: a set made for many kernels, used
    /// by a kernel hook or for a version's own kernel.
    pub skip_missing: bool,
    /// Node config, copied as is to `/etc/terra/node.toml`.
    pub config: Option<PathBuf>,
    /// Busybox for a rescue shell; None for no shell.
    pub busybox: Option<PathBuf>,
    /// Firmware root (`/lib/firmware`).
    pub firmware_root: PathBuf,
    pub compression: Compression,
    /// Modification time of every entry.
    pub mtime: u32,
    /// Where the image is written.
    pub output: PathBuf,
    /// `--host`: the sysfs of the machine the image is for (`/sys`, or a copy of another
    /// machine's); device drivers none of its devices use are left out ([`crate::hostonly`]).
    pub host: Option<PathBuf>,
}

impl InitramfsSpec {
    /// A spec with the defaults: newest kernel, QEMU module set, no config, no shell, zstd.
    pub fn new(stage0: PathBuf, output: PathBuf) -> Self {
        InitramfsSpec {
            stage0,
            kernel: KernelSource::default(),
            modules: default_modules(),
            load: Vec::new(),
            skip_missing: false,
            config: None,
            busybox: None,
            firmware_root: PathBuf::from(FIRMWARE_ROOT),
            compression: Compression::default(),
            mtime: 0,
            output,
            host: None,
        }
    }

    /// The modules of `--module` (`named`, also loaded at boot) and `--modules-list`
    /// (`lists`): with neither, the default set stays. `named` alone adds to the default set,
    /// as dracut's `--add-drivers` does: the fix a failed boot suggests must not drop what
    /// the image already had.
    pub fn choose_modules(
        &mut self,
        named: Vec<String>,
        lists: &[PathBuf],
    ) -> Result<(), InitramfsError> {
        if named.is_empty() && lists.is_empty() {
            return Ok(());
        }
        let mut modules = named.clone();
        self.load = named;
        if lists.is_empty() {
            modules.extend(default_modules());
        }
        for list in lists {
            modules.extend(read_module_list(list)?);
        }
        self.modules = modules;
        Ok(())
    }
}

/// A firmware file a packed module declares but that was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFirmware {
    pub module: String,
    pub firmware: String,
}

/// What [`build`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    pub kver: String,
    pub modules_dir: PathBuf,
    /// Packed modules (normalized names), sorted.
    pub modules: Vec<String>,
    /// Requested modules that are built into the kernel (nothing to pack).
    pub builtin: Vec<String>,
    /// Packed firmware files (names relative to `lib/firmware`), sorted.
    pub firmware: Vec<String>,
    /// Declared firmware that was not found; the image works without it only if the
    /// hardware does not need it.
    pub missing_firmware: Vec<MissingFirmware>,
    /// Why the packed node config will be refused at boot, if it will.
    pub config_problem: Option<String>,
    /// Requested modules left out because the kernel does not have them
    /// ([`InitramfsSpec::skip_missing`]).
    pub left_out: Vec<String>,
    /// Requested device drivers left out by `--host` ([`InitramfsSpec::host`]): no device
    /// of the machine uses them.
    pub host_dropped: Vec<String>,
    /// The session keeper binary packed beside stage0 ([`keeper_beside`]), if any.
    pub keeper: Option<PathBuf>,
    /// The confirmation command packed beside stage0 ([`bless_beside`]); None: a
    /// tentative version booted from this image cannot confirm itself.
    pub bless: Option<PathBuf>,
    /// Size of the cpio archive.
    pub uncompressed_bytes: u64,
    /// Size of the written file.
    pub compressed_bytes: u64,
    pub compression: Compression,
}

/// Errors building an image; each names what it failed on.
#[derive(Debug)]
pub enum InitramfsError {
    /// The stage0 binary does not exist.
    Stage0Missing { path: PathBuf },
    /// No stage0 was named and none was found where one is installed.
    Stage0NotFound { looked: Vec<PathBuf> },
    /// An input file could not be read.
    Read {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// An executable for the image is not an ELF file we can read.
    Elf {
        what: &'static str,
        path: PathBuf,
        err: ElfError,
    },
    /// An executable for the image is dynamically linked.
    NotStatic { what: &'static str, path: PathBuf },
    /// Finding or reading kernel modules failed.
    Kmod(KmodError),
    /// Two inputs claim the same path in the image.
    Archive(CpioError),
    /// Compression failed.
    Compress {
        compression: Compression,
        err: std::io::Error,
    },
    /// The image could not be written.
    Write { path: PathBuf, err: std::io::Error },
    /// `SOURCE_DATE_EPOCH` is not a number of seconds that fits the cpio header.
    SourceDateEpoch { value: String },
    /// `--host`: the machine's devices could not be read.
    Host(crate::hostonly::HostError),
}

impl fmt::Display for InitramfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitramfsError::Stage0Missing { path } => write!(
                f,
                "stage0 binary {} does not exist; build it with `cargo build -p terra-init \
                 --bin stage0 --profile stage0 --target x86_64-unknown-linux-musl` or pass --stage0 PATH",
                path.display()
            ),
            InitramfsError::Stage0NotFound { looked } => write!(
                f,
                "no stage0 binary: looked at {} ($TERRA_STAGE0, beside terra, the packaged \
                 path, this workspace's build); build it with `cargo build -p terra-init --bin \
                 stage0 --profile stage0 --target x86_64-unknown-linux-musl` or pass --stage0 PATH",
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            InitramfsError::Read { what, path, err } => {
                write!(f, "cannot read {what} {}: {err}", path.display())
            }
            InitramfsError::Elf { what, path, err } => {
                write!(f, "{what} {}: {err}", path.display())
            }
            InitramfsError::NotStatic { what, path } => write!(
                f,
                "{what} {} is dynamically linked (has a PT_INTERP program header); \
                 the initramfs needs a static binary",
                path.display()
            ),
            InitramfsError::Kmod(e) => write!(f, "{e}"),
            InitramfsError::Archive(e) => write!(f, "{e}"),
            InitramfsError::Compress { compression, err } => {
                write!(f, "{compression} compression failed: {err}")
            }
            InitramfsError::Write { path, err } => {
                write!(f, "cannot write {}: {err}", path.display())
            }
            InitramfsError::SourceDateEpoch { value } => write!(
                f,
                "SOURCE_DATE_EPOCH={value:?} is not a number of seconds between 0 and {}",
                u32::MAX
            ),
            InitramfsError::Host(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InitramfsError {}

impl From<KmodError> for InitramfsError {
    fn from(e: KmodError) -> Self {
        InitramfsError::Kmod(e)
    }
}

impl From<CpioError> for InitramfsError {
    fn from(e: CpioError) -> Self {
        InitramfsError::Archive(e)
    }
}

/// The `/etc/initrd-release` text (os-release(5) format).
pub fn initrd_release() -> String {
    format!(
        "NAME=\"Terra initramfs\"\nID=terra-initramfs\nPRETTY_NAME=\"Terra initramfs {v}\"\nVERSION_ID=\"{v}\"\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, InitramfsError> {
    std::fs::read(path).map_err(|err| InitramfsError::Read {
        what,
        path: path.to_path_buf(),
        err,
    })
}

/// Reads an executable that must run inside the image: an ELF file must not need a
/// program interpreter. Non-ELF files (scripts) are taken as they are.
fn read_static(
    what: &'static str,
    path: &Path,
    must_be_elf: bool,
) -> Result<Vec<u8>, InitramfsError> {
    let data = read(what, path)?;
    match Elf::parse(&data) {
        Ok(elf) => {
            let interp = elf.has_interpreter().map_err(|err| InitramfsError::Elf {
                what,
                path: path.to_path_buf(),
                err,
            })?;
            if interp {
                return Err(InitramfsError::NotStatic {
                    what,
                    path: path.to_path_buf(),
                });
            }
        }
        Err(err) if must_be_elf => {
            return Err(InitramfsError::Elf {
                what,
                path: path.to_path_buf(),
                err,
            })
        }
        Err(_) => {}
    }
    Ok(data)
}

/// Collects the image's entries. The report's byte counts are left at 0.
pub fn assemble(spec: &InitramfsSpec) -> Result<(Archive, BuildReport), InitramfsError> {
    let mut a = Archive::new();

    // What the kernel and stage0 touch before anything is mounted: the console for the
    // first write of PID 1 (the kernel opens /dev/console before running /init) and the
    // mount points of the early phase and of the root.
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        layout::SYSROOT.trim_start_matches('/'),
    ] {
        a.add_dir(dir)?;
    }
    a.add_char_device("dev/console", 5, 1)?;

    if !spec.stage0.exists() {
        return Err(InitramfsError::Stage0Missing {
            path: spec.stage0.clone(),
        });
    }
    a.add_file(
        layout::INIT,
        read_static("stage0", &spec.stage0, false)?,
        true,
    )?;
    // The session keeper alone, when it was built beside stage0 (cargo builds both bins
    // into one directory; the package installs both in /usr/lib/terra): the process that
    // outlives the boot then maps it instead of all of stage0.
    let keeper = keeper_beside(&spec.stage0);
    if let Some(keeper) = &keeper {
        a.add_file(layout::KEEPER, read_static("keeper", keeper, false)?, true)?;
    }
    // The confirmation command (built and installed beside stage0 the same way), which
    // stage0 leaves for the booted system of a tentative version.
    let bless = bless_beside(&spec.stage0);
    if let Some(bless) = &bless {
        a.add_file(layout::BLESS, read_static("bless", bless, false)?, true)?;
    }
    a.add_file(layout::INITRD_RELEASE, initrd_release().into_bytes(), false)?;
    let mut config_problem = None;
    if let Some(config) = &spec.config {
        // Packed as is, but checked with the type stage0 reads it with, so that a mistake
        // shows up now and not only as a rescue shell at boot.
        let bytes = read("node config", config)?;
        let text = String::from_utf8_lossy(&bytes);
        config_problem = terra_init::config::NodeConfig::parse(&text, config)
            .err()
            .map(|e| e.to_string());
        a.add_file(layout::NODE_CONFIG, bytes, false)?;
    }
    if let Some(busybox) = &spec.busybox {
        a.add_file("bin/busybox", read_static("busybox", busybox, true)?, true)?;
        a.add_symlink(layout::RESCUE_SHELL, "busybox")?;
    }

    let kernel = Kernel::open(&spec.kernel)?;
    let (wanted, left_out): (Vec<String>, Vec<String>) = if spec.skip_missing {
        spec.modules
            .iter()
            .cloned()
            .partition(|m| kernel.closure(std::slice::from_ref(m)).is_ok())
    } else {
        (spec.modules.clone(), Vec::new())
    };
    let (wanted, host_dropped) = match &spec.host {
        Some(sysfs) => {
            let devices = crate::hostonly::scan(sysfs).map_err(InitramfsError::Host)?;
            // What --module names is kept: it was asked for by name.
            let forced: HashSet<String> = spec.load.iter().map(|m| normalize(m)).collect();
            let (named, listed): (Vec<String>, Vec<String>) = wanted
                .into_iter()
                .partition(|m| forced.contains(&normalize(m)));
            let s = crate::hostonly::select(&kernel.index, &listed, &devices);
            (named.into_iter().chain(s.kept).collect(), s.dropped)
        }
        None => (wanted, Vec::new()),
    };
    let closure = kernel.closure(&wanted)?;
    let modules_dir = format!("{}/{}", layout::MODULES_DIR, kernel.kver);
    a.add_dir(&modules_dir)?;

    let firmware_search = FirmwareSearch::new(&spec.firmware_root, &kernel.kver);
    let mut firmware: Vec<String> = Vec::new();
    let mut missing_firmware = Vec::new();
    for name in &closure {
        let m = kernel.read_module(name)?;
        for fw in &m.firmware {
            if firmware.contains(fw) {
                continue;
            }
            match firmware_search.find(fw)? {
                Some((_, data)) => {
                    a.add_file(&format!("{}/{fw}", layout::FIRMWARE_DIR), data, false)?;
                    firmware.push(fw.clone());
                }
                None => missing_firmware.push(MissingFirmware {
                    module: m.name.clone(),
                    firmware: fw.clone(),
                }),
            }
        }
        a.add_file(&format!("{modules_dir}/{}", m.path), m.data, false)?;
    }
    firmware.sort();

    let keep: HashSet<String> = closure.iter().cloned().collect();
    let index = kernel.filtered_index(&keep);
    for (file, text) in layout::MODULE_INDEX_FILES.iter().zip([
        index.dep,
        index.alias,
        index.builtin,
        index.softdep,
    ]) {
        a.add_file(&format!("{modules_dir}/{file}"), text.into_bytes(), false)?;
    }

    // The modules to load unconditionally, in request order, that there is something to load for.
    let mut load: Vec<String> = Vec::new();
    let mut builtin: Vec<String> = Vec::new();
    for name in spec.modules.iter().chain(&spec.load).map(|n| normalize(n)) {
        let forced = spec.load.iter().any(|l| normalize(l) == name);
        if keep.contains(&name) {
            if forced && !load.contains(&name) {
                load.push(name);
            }
        } else if kernel.index.is_builtin(&name) && !builtin.contains(&name) {
            builtin.push(name);
        }
    }
    let mut load_text = load.join("\n");
    if !load_text.is_empty() {
        load_text.push('\n');
    }
    a.add_file(layout::MODULES_LOAD, load_text.into_bytes(), false)?;
    a.add_file(
        terra_init::hints::HINTS_FILE,
        driver_hints(&kernel, &closure).into_bytes(),
        false,
    )?;

    let report = BuildReport {
        kver: kernel.kver.clone(),
        modules_dir: kernel.dir.clone(),
        modules: closure,
        builtin,
        firmware,
        missing_firmware,
        config_problem,
        left_out,
        host_dropped,
        keeper,
        bless,
        uncompressed_bytes: 0,
        compressed_bytes: 0,
        compression: spec.compression,
    };
    Ok((a, report))
}

/// Compresses a finished archive.
pub fn compress(data: Vec<u8>, compression: Compression) -> Result<Vec<u8>, InitramfsError> {
    let fail = |err| InitramfsError::Compress { compression, err };
    match compression {
        Compression::None => Ok(data),
        Compression::Gzip(level) => {
            // flate2 writes a zero mtime and no file name: the header is reproducible.
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::new(level),
            );
            enc.write_all(&data).map_err(fail)?;
            enc.finish().map_err(fail)
        }
        Compression::Zstd(level) => {
            let mut c = zstd::bulk::Compressor::new(level).map_err(fail)?;
            // The kernel's unzstd verifies the checksum: a corrupt image fails loudly.
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                .map_err(fail)?;
            c.compress(&data).map_err(fail)
        }
    }
}

/// Builds the image described by `spec` and writes it to `spec.output` (replacing it only
/// once the new image is complete).
pub fn build(spec: &InitramfsSpec) -> Result<BuildReport, InitramfsError> {
    let (archive, mut report) = assemble(spec)?;
    let mut cpio = Vec::new();
    report.uncompressed_bytes = archive.write(&mut cpio, spec.mtime)?;
    drop(archive);
    let image = compress(cpio, spec.compression)?;
    report.compressed_bytes = image.len() as u64;
    write_atomically(&spec.output, &image)?;
    Ok(report)
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), InitramfsError> {
    let werr = |err| InitramfsError::Write {
        path: path.to_path_buf(),
        err,
    };
    let name = path.file_name().ok_or_else(|| {
        werr(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_modules_add_to_the_default_set_and_lists_replace_it() {
        let spec = || InitramfsSpec::new("stage0".into(), "out".into());
        let mut s = spec();
        s.choose_modules(Vec::new(), &[]).unwrap();
        assert_eq!((s.modules, s.load), (default_modules(), Vec::new()));

        let mut s = spec();
        s.choose_modules(vec!["e1000e".into()], &[]).unwrap();
        assert_eq!(s.load, ["e1000e"]);
        assert_eq!(s.modules[0], "e1000e");
        assert_eq!(&s.modules[1..], default_modules().as_slice());

        let t = tempfile::tempdir().unwrap();
        let list = t.path().join("nic.modules");
        std::fs::write(&list, "igb # the NIC\nixgbe\n").unwrap();
        let mut s = spec();
        s.choose_modules(vec!["e1000e".into()], std::slice::from_ref(&list))
            .unwrap();
        assert_eq!(s.modules, ["e1000e", "igb", "ixgbe"]);
        assert_eq!(s.load, ["e1000e"]);
    }

    #[test]
    fn stage0_is_found_from_terra_stage0_first_and_never_a_missing_one() {
        let t = tempfile::tempdir().unwrap();
        let here = t.path().join("stage0");
        std::fs::write(&here, b"x").unwrap();
        // The only test in this binary that sets the variable.
        std::env::set_var("TERRA_STAGE0", &here);
        assert_eq!(find_stage0().unwrap(), here);
        let gone = t.path().join("gone");
        std::env::set_var("TERRA_STAGE0", &gone);
        match find_stage0() {
            Ok(p) => assert_ne!(p, gone),
            Err(InitramfsError::Stage0NotFound { looked }) => {
                assert_eq!(looked[0], gone);
                assert!(looked.contains(&PathBuf::from(PACKAGED_STAGE0)));
            }
            Err(e) => panic!("{e}"),
        }
        std::env::remove_var("TERRA_STAGE0");
    }

    #[test]
    fn module_lists_skip_comments_and_blanks() {
        let names = parse_module_list("# head\n\nvirtio_pci\n  btrfs  # fs\n#x\nsd_mod\n");
        assert_eq!(names, ["virtio_pci", "btrfs", "sd_mod"]);
        assert!(default_modules().contains(&"virtio_blk".to_string()));
    }

    #[test]
    fn compression_parses() {
        assert_eq!("zstd".parse(), Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)));
        assert_eq!("zstd:3".parse(), Ok(Compression::Zstd(3)));
        assert_eq!("gzip".parse(), Ok(Compression::Gzip(9)));
        assert_eq!("none".parse(), Ok(Compression::None));
        for bad in ["zstd:22", "zstd:0", "gzip:10", "xz", "none:1", ""] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }

    #[test]
    fn source_date_epoch_is_checked() {
        assert_eq!(source_date_epoch(None).unwrap(), 0);
        assert_eq!(
            source_date_epoch(Some(OsStr::new("1700000000"))).unwrap(),
            1_700_000_000
        );
        let e = source_date_epoch(Some(OsStr::new("yesterday"))).unwrap_err();
        assert!(e.to_string().contains("yesterday"), "{e}");
    }

    #[test]
    fn compressed_images_decompress_to_the_archive() {
        let data = b"0707010000".repeat(1000);
        for c in [
            Compression::Zstd(3),
            Compression::Gzip(6),
            Compression::None,
        ] {
            let packed = compress(data.clone(), c).unwrap();
            let back = match c {
                Compression::Zstd(_) => zstd::stream::decode_all(packed.as_slice()).unwrap(),
                Compression::Gzip(_) => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(packed.as_slice()),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                Compression::None => packed,
            };
            assert_eq!(back, data, "{c}");
        }
    }
}
