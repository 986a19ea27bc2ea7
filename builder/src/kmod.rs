//! Kernel modules for the image: which kernel, which modules (the closure over the shared
//! [`ModuleIndex`]), their bytes decompressed, the index files filtered to them, and the
//! firmware they declare.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use terra_init::modindex::{FilteredIndex, IndexError, ModuleIndex};

use crate::elf::{self, Elf, ElfError};

/// Where distributions install modules, one directory per kernel version.
pub const MODULES_ROOT: &str = "/lib/modules";
/// Where the kernel's firmware loader looks last (and distributions install firmware).
pub const FIRMWARE_ROOT: &str = "/lib/firmware";

/// Compression suffixes of module and firmware files, with the name we report them by.
/// Firmware is tried in the kernel's order (`fw_get_filesystem_firmware`): plain, zstd, xz.
const SUFFIXES: [(&str, &str); 3] = [(".zst", "zstd"), (".xz", "xz"), (".gz", "gzip")];

/// Errors finding a kernel, its modules and their firmware.
#[derive(Debug)]
pub enum KmodError {
    /// The modules root could not be listed.
    ListKernels { root: PathBuf, err: std::io::Error },
    /// No kernel version has modules installed.
    NoKernels { root: PathBuf },
    /// The requested kernel version is not installed.
    UnknownKernel {
        kver: String,
        root: PathBuf,
        available: Vec<String>,
    },
    /// A modules directory without `modules.dep` (depmod was not run, or it is not one).
    NoIndex { dir: PathBuf },
    /// `--modules-dir` names no kernel version (e.g. `/`) and none was given.
    NoKernelVersion { dir: PathBuf },
    /// An index file could not be read.
    Index { kver: String, err: IndexError },
    /// A requested module is neither in modules.dep nor built in.
    UnknownModule {
        name: String,
        kver: String,
        dir: PathBuf,
    },
    /// A module or firmware file could not be read.
    Read { path: PathBuf, err: std::io::Error },
    /// A compressed module or firmware file did not decompress.
    Decompress {
        path: PathBuf,
        format: &'static str,
        err: String,
    },
    /// A module is not a readable ELF file.
    Elf { path: PathBuf, err: ElfError },
}

impl fmt::Display for KmodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmodError::ListKernels { root, err } => {
                write!(
                    f,
                    "cannot list kernel versions in {}: {err}",
                    root.display()
                )
            }
            KmodError::NoKernels { root } => write!(
                f,
                "no kernel modules installed: {} holds no directory with a modules.dep \
                 (pass --kver or --modules-dir)",
                root.display()
            ),
            KmodError::UnknownKernel {
                kver,
                root,
                available,
            } => {
                write!(
                    f,
                    "kernel version {kver} has no modules in {}; ",
                    root.display()
                )?;
                if available.is_empty() {
                    write!(f, "no kernel versions are installed there")
                } else {
                    write!(f, "installed: {}", available.join(", "))
                }
            }
            KmodError::NoIndex { dir } => write!(
                f,
                "{} has no modules.dep (not a modules directory, or depmod was not run)",
                dir.display()
            ),
            KmodError::NoKernelVersion { dir } => write!(
                f,
                "cannot tell the kernel version of modules directory {}; pass --kver",
                dir.display()
            ),
            KmodError::Index { kver, err } => write!(f, "module index of kernel {kver}: {err}"),
            KmodError::UnknownModule { name, kver, dir } => write!(
                f,
                "module {name} not found for kernel {kver}: neither in {}/modules.dep nor built in",
                dir.display()
            ),
            KmodError::Read { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            KmodError::Decompress { path, format, err } => {
                write!(f, "cannot decompress {} ({format}): {err}", path.display())
            }
            KmodError::Elf { path, err } => write!(f, "{}: {err}", path.display()),
        }
    }
}

impl std::error::Error for KmodError {}

/// Which kernel's modules to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSource {
    /// Directory holding one directory per kernel version (`/lib/modules`).
    pub modules_root: PathBuf,
    /// Kernel version; default: the newest under `modules_root` (or the name of `modules_dir`).
    pub kver: Option<String>,
    /// An explicit modules directory, overriding `modules_root/kver`.
    pub modules_dir: Option<PathBuf>,
}

impl Default for KernelSource {
    fn default() -> Self {
        KernelSource {
            modules_root: PathBuf::from(MODULES_ROOT),
            kver: None,
            modules_dir: None,
        }
    }
}

/// Compares kernel versions the way `sort -V` does: digit runs by value, the rest by bytes,
/// so `6.1.0-10-amd64` is newer than `6.1.0-9-amd64`.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    // Runs of digits and of non-digits, as bytes: no char boundaries to respect.
    fn chunks(s: &str) -> Vec<(bool, &[u8])> {
        let mut out: Vec<(bool, &[u8])> = Vec::new();
        for (i, b) in s.as_bytes().iter().enumerate() {
            let digit = b.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => *run = &s.as_bytes()[i - run.len()..=i],
                _ => out.push((digit, &s.as_bytes()[i..=i])),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(&cb) {
        let ord = if *da && *db {
            let trim =
                |x: &[u8]| -> Vec<u8> { x.iter().copied().skip_while(|&c| c == b'0').collect() };
            let (ta, tb) = (trim(xa), trim(xb));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb))
        } else {
            xa.cmp(xb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

/// Kernel versions under `root` that have a `modules.dep`, oldest first.
pub fn installed_kernels(root: &Path) -> Result<Vec<String>, KmodError> {
    let entries = std::fs::read_dir(root).map_err(|err| KmodError::ListKernels {
        root: root.to_path_buf(),
        err,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| KmodError::ListKernels {
            root: root.to_path_buf(),
            err,
        })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if entry.path().join("modules.dep").is_file() {
            out.push(name);
        }
    }
    out.sort_by(|a, b| version_cmp(a, b));
    Ok(out)
}

/// The module name as it appears in the index, the path stored in the image and the source
/// file, for one module of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedModule {
    /// Normalized module name (`usb_storage`).
    pub name: String,
    /// The file it was read from.
    pub source: PathBuf,
    /// Path relative to the modules directory, without compression suffix (`kernel/…/x.ko`).
    pub path: String,
    /// The decompressed module.
    pub data: Vec<u8>,
    /// Firmware files the module declares (`firmware=` in `.modinfo`).
    pub firmware: Vec<String>,
}

/// One kernel's modules directory and index.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub kver: String,
    pub dir: PathBuf,
    pub index: ModuleIndex,
}

impl Kernel {
    /// Finds the modules directory and reads its index.
    pub fn open(source: &KernelSource) -> Result<Kernel, KmodError> {
        let (kver, dir) = match (&source.modules_dir, &source.kver) {
            (Some(dir), Some(kver)) => (kver.clone(), dir.clone()),
            (Some(dir), None) => {
                let kver = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .filter(|n| *n != "." && *n != "..")
                    .ok_or_else(|| KmodError::NoKernelVersion { dir: dir.clone() })?;
                (kver.to_string(), dir.clone())
            }
            (None, Some(kver)) => {
                let dir = source.modules_root.join(kver);
                if !dir.is_dir() || kver.contains('/') {
                    return Err(KmodError::UnknownKernel {
                        kver: kver.clone(),
                        root: source.modules_root.clone(),
                        available: installed_kernels(&source.modules_root).unwrap_or_default(),
                    });
                }
                (kver.clone(), dir)
            }
            (None, None) => {
                let kver = installed_kernels(&source.modules_root)?
                    .pop()
                    .ok_or_else(|| KmodError::NoKernels {
                        root: source.modules_root.clone(),
                    })?;
                let dir = source.modules_root.join(&kver);
                (kver, dir)
            }
        };
        if !dir.join("modules.dep").is_file() {
            return Err(KmodError::NoIndex { dir });
        }
        let index = ModuleIndex::load(&dir).map_err(|err| KmodError::Index {
            kver: kver.clone(),
            err,
        })?;
        Ok(Kernel { kver, dir, index })
    }

    /// The loadable modules needed for `names` (dependencies and soft dependencies
    /// included, built-in ones dropped), sorted.
    pub fn closure(&self, names: &[String]) -> Result<Vec<String>, KmodError> {
        self.index
            .closure(names.iter().map(String::as_str))
            .map_err(|err| match err {
                IndexError::Missing { name } => KmodError::UnknownModule {
                    name,
                    kver: self.kver.clone(),
                    dir: self.dir.clone(),
                },
                err => KmodError::Index {
                    kver: self.kver.clone(),
                    err,
                },
            })
    }

    /// Reads one module of the index, decompressed, with the firmware it declares.
    pub fn read_module(&self, name: &str) -> Result<PackedModule, KmodError> {
        let rel = self
            .index
            .path(name)
            .ok_or_else(|| KmodError::UnknownModule {
                name: name.to_string(),
                kver: self.kver.clone(),
                dir: self.dir.clone(),
            })?;
        let source = self.dir.join(rel);
        let raw = std::fs::read(&source).map_err(|err| KmodError::Read {
            path: source.clone(),
            err,
        })?;
        let data = decompress(&source, raw)?;
        let firmware = module_firmware(&data).map_err(|err| KmodError::Elf {
            path: source.clone(),
            err,
        })?;
        Ok(PackedModule {
            name: terra_init::modindex::normalize(name),
            path: strip_compression(rel).to_string(),
            source,
            data,
            firmware,
        })
    }

    /// The index files restricted to `keep`, with `modules.dep` naming the decompressed
    /// files (`.ko`) that the image holds.
    pub fn filtered_index(&self, keep: &HashSet<String>) -> FilteredIndex {
        let mut f = self.index.filtered(keep);
        f.dep = rewrite_dep_paths(&f.dep);
        f
    }
}

/// A module path without its compression suffix: `a/b.ko.xz` → `a/b.ko`.
pub fn strip_compression(path: &str) -> &str {
    for (suffix, _) in SUFFIXES {
        if let Some(stem) = path.strip_suffix(suffix) {
            if stem.ends_with(".ko") {
                return stem;
            }
        }
    }
    path
}

/// `modules.dep` text with every path stripped of its compression suffix.
pub fn rewrite_dep_paths(dep: &str) -> String {
    let mut out = String::with_capacity(dep.len());
    for line in dep.lines() {
        match line.split_once(':') {
            Some((path, deps)) => {
                out.push_str(strip_compression(path.trim()));
                out.push(':');
                for d in deps.split_whitespace() {
                    out.push(' ');
                    out.push_str(strip_compression(d));
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Decompresses by file name suffix (`.xz`, `.zst`, `.gz`); other files are returned as is.
pub fn decompress(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, KmodError> {
    let name = path.to_string_lossy();
    let Some((_, format)) = SUFFIXES.iter().find(|(s, _)| name.ends_with(s)) else {
        return Ok(bytes);
    };
    let fail = |err: String| KmodError::Decompress {
        path: path.to_path_buf(),
        format,
        err,
    };
    let mut out = Vec::with_capacity(bytes.len() * 4);
    match *format {
        "xz" => lzma_rs::xz_decompress(&mut bytes.as_slice(), &mut out)
            .map_err(|e| fail(e.to_string()))?,
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::new(bytes.as_slice())
                .map_err(|e| fail(e.to_string()))?;
            // Accept frames made with `zstd --long`, whose window exceeds the default limit.
            d.window_log_max(31).map_err(|e| fail(e.to_string()))?;
            d.read_to_end(&mut out).map_err(|e| fail(e.to_string()))?;
        }
        _ => {
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(out)
}

/// Firmware names declared in a module's `.modinfo` section, deduplicated, in order.
pub fn module_firmware(module: &[u8]) -> Result<Vec<String>, ElfError> {
    let elf = Elf::parse(module)?;
    let Some(modinfo) = elf.section_by_name(".modinfo")? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = Vec::new();
    for fw in elf::modinfo_values(modinfo, "firmware") {
        if !out.iter().any(|o| o == fw) {
            out.push(fw.to_string());
        }
    }
    Ok(out)
}

/// Where firmware is looked up, in the kernel's order (drivers/base/firmware_loader/main.c,
/// `fw_path`): `updates/<kver>`, `updates`, `<kver>`, then the root itself.
#[derive(Debug, Clone)]
pub struct FirmwareSearch {
    dirs: Vec<PathBuf>,
}

impl FirmwareSearch {
    pub fn new(root: &Path, kver: &str) -> Self {
        FirmwareSearch {
            dirs: vec![
                root.join("updates").join(kver),
                root.join("updates"),
                root.join(kver),
                root.to_path_buf(),
            ],
        }
    }

    /// The firmware file's decompressed contents, or None when no variant exists.
    /// Names that try to leave the firmware directory are never found.
    pub fn find(&self, name: &str) -> Result<Option<(PathBuf, Vec<u8>)>, KmodError> {
        if !is_safe_relative(name) {
            return Ok(None);
        }
        for suffix in ["", ".zst", ".xz"] {
            for dir in &self.dirs {
                let path = dir.join(format!("{name}{suffix}"));
                match std::fs::read(&path) {
                    Ok(raw) => {
                        // Only the variants we added a suffix for are compressed: a plain
                        // firmware file may well end in `.gz` and is stored as it is.
                        let data = if suffix.is_empty() {
                            raw
                        } else {
                            decompress(&path, raw)?
                        };
                        return Ok(Some((path, data)));
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            || e.kind() == std::io::ErrorKind::NotADirectory
                            || e.kind() == std::io::ErrorKind::IsADirectory => {}
                    Err(err) => return Err(KmodError::Read { path, err }),
                }
            }
        }
        Ok(None)
    }
}

/// A relative path with no empty, `.` or `..` components.
pub fn is_safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_sort_v() {
        let mut v = vec![
            "6.1.0-9-amd64",
            "6.1.0-10-amd64",
            "5.19.0",
            "6.1.0-10-amd64+1",
            "6.10",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.19.0",
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.1.0-10-amd64+1",
                "6.10"
            ]
        );
        assert_eq!(version_cmp("6.01", "6.1"), Ordering::Less);
        assert_eq!(version_cmp("6.1", "6.1"), Ordering::Equal);
    }

    #[test]
    fn compression_suffixes_are_stripped_from_dep() {
        assert_eq!(strip_compression("kernel/a.ko.xz"), "kernel/a.ko");
        assert_eq!(strip_compression("kernel/a.ko.zst"), "kernel/a.ko");
        assert_eq!(strip_compression("kernel/a.ko.gz"), "kernel/a.ko");
        assert_eq!(strip_compression("kernel/a.ko"), "kernel/a.ko");
        assert_eq!(strip_compression("fw/x.bin.xz"), "fw/x.bin.xz");
        assert_eq!(
            rewrite_dep_paths("k/b.ko.xz: k/r.ko.zst k/s.ko\nk/r.ko.zst:\n"),
            "k/b.ko: k/r.ko k/s.ko\nk/r.ko:\n"
        );
    }

    #[test]
    fn safe_relative_names() {
        assert!(is_safe_relative("rtl_nic/rtl8168d-1.fw"));
        for bad in ["", "/etc/shadow", "../x", "a/../../b", "a//b", "./a"] {
            assert!(!is_safe_relative(bad), "{bad}");
        }
    }
}
