//! Kernels that travel with versions: finding the kernel an image carries, and writing a
//! kernel directory (`vmlinuz`, a Terra initramfs built from that kernel's own modules,
//! `release`) that stage0 kexecs into and the ESP copies (ARCHITECTURE.md, "Kernels").

use std::fmt;
use std::path::{Path, PathBuf};

use terra_init::bootstate::{INITRAMFS_FILE, KERNEL_FILE, RELEASE_FILE};

use crate::initramfs::{self, Compression, InitramfsError, InitramfsSpec};
use crate::kmod::{self, KernelSource, KmodError};

/// The module list of the disk's initramfs images, inside `.terra/` (one name per line,
/// as `--modules-list`): `terra install` writes it, every upgrade reads it.
pub const MODULES_FILE: &str = "initramfs.modules";

/// A kernel found in a root tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundKernel {
    /// The kernel image.
    pub image: PathBuf,
    /// Its release (`uname -r`), from its file or directory name.
    pub release: String,
    /// Its modules directory (with `modules.dep`).
    pub modules_dir: PathBuf,
}

/// How the initramfs of a kernel directory is made.
#[derive(Debug, Clone)]
pub struct BootInitramfs {
    /// The static stage0; None: found when needed (`initramfs::find_stage0`).
    pub stage0: Option<PathBuf>,
    /// Modules to pack; those the kernel does not have are left out and reported.
    pub modules: Vec<String>,
    /// node.toml to embed.
    pub config: Option<PathBuf>,
    /// Busybox for a rescue shell.
    pub busybox: Option<PathBuf>,
}

impl BootInitramfs {
    /// The disk's settings: its module list (`.terra/initramfs.modules`, else the default
    /// set) and its node.toml; stage0 is looked for when a kernel needs an initramfs.
    pub fn for_disk(state_dir: &Path) -> Result<BootInitramfs, BootFilesError> {
        let list = state_dir.join(MODULES_FILE);
        let modules = if list.is_file() {
            initramfs::read_module_list(&list).map_err(BootFilesError::Initramfs)?
        } else {
            initramfs::default_modules()
        };
        let node = state_dir.join(terra_init::bootstate::NODE_FILE);
        Ok(BootInitramfs {
            stage0: None,
            modules,
            config: node.is_file().then_some(node),
            busybox: None,
        })
    }
}

/// What went wrong with a kernel directory.
#[derive(Debug)]
pub enum BootFilesError {
    /// A kernel or modules path of the image leads outside its root.
    Escapes { path: PathBuf, root: PathBuf },
    /// Reading or writing a file.
    Io { path: PathBuf, err: std::io::Error },
    /// The kernel's modules.
    Kmod(KmodError),
    /// Building the initramfs.
    Initramfs(InitramfsError),
}

impl fmt::Display for BootFilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFilesError::Escapes { path, root } => write!(
                f,
                "{} leads outside the image root {} (a symlink out of the image): not used as a kernel",
                path.display(),
                root.display()
            ),
            BootFilesError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            BootFilesError::Kmod(e) => write!(f, "the kernel's modules: {e}"),
            BootFilesError::Initramfs(e) => write!(f, "the kernel's initramfs: {e}"),
        }
    }
}

impl std::error::Error for BootFilesError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootFilesError + '_ {
    move |err| BootFilesError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The newest kernel `root` carries: `usr/lib/modules/<r>/vmlinuz` (Fedora) or
/// `boot/vmlinuz-<r>` (Debian), with its modules in `usr/lib/modules/<r>` or
/// `lib/modules/<r>` (indexed by depmod). Paths are resolved and must stay inside `root`:
/// an image cannot point the builder at the build host's files.
pub fn find_kernel(root: &Path) -> Result<Option<FoundKernel>, BootFilesError> {
    let real_root = root.canonicalize().map_err(io(root))?;
    let inside = |p: &Path| -> Result<Option<PathBuf>, BootFilesError> {
        match p.canonicalize() {
            Ok(c) if c.starts_with(&real_root) => Ok(Some(c)),
            Ok(_) => Err(BootFilesError::Escapes {
                path: p.to_path_buf(),
                root: root.to_path_buf(),
            }),
            Err(_) => Ok(None),
        }
    };
    let mut found: Vec<FoundKernel> = Vec::new();
    let mut consider = |image: PathBuf, release: &str| -> Result<(), BootFilesError> {
        // A release goes into file names, GRUB's config and the kernel command line:
        // only the characters kernel releases are made of.
        let plain = |c: char| c.is_ascii_alphanumeric() || "._+~-".contains(c);
        if release.is_empty() || !release.chars().all(plain) {
            return Ok(());
        }
        let Some(image) = inside(&image)?.filter(|p| p.is_file()) else {
            return Ok(());
        };
        for dir in ["usr/lib/modules", "lib/modules"] {
            let m = root.join(dir).join(release);
            if let Some(m) = inside(&m)?.filter(|m| m.join("modules.dep").is_file()) {
                found.push(FoundKernel {
                    image,
                    release: release.to_string(),
                    modules_dir: m,
                });
                return Ok(());
            }
        }
        Ok(())
    };
    for dir in ["usr/lib/modules", "lib/modules"] {
        for name in names(&root.join(dir)) {
            let image = root.join(dir).join(&name).join("vmlinuz");
            consider(image, &name)?;
        }
    }
    for name in names(&root.join("boot")) {
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            consider(root.join("boot").join(&name), release)?;
        }
    }
    found.sort_by(|a, b| kmod::version_cmp(&a.release, &b.release));
    found.dedup_by(|a, b| a.release == b.release);
    Ok(found.pop())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What writing a kernel directory did.
#[derive(Debug, Clone, Default)]
pub struct KernelDir {
    /// The kernel release.
    pub release: String,
    /// Requested modules this kernel does not have (left out).
    pub left_out: Vec<String>,
    /// Size of the initramfs.
    pub initramfs_bytes: u64,
}

/// Writes `dest/{vmlinuz, initramfs.img, release}` for `kernel`; `release` last, so a
/// directory with a release file is complete (what `bootstate::kernel_dir` looks for).
pub fn write_kernel_dir(
    dest: &Path,
    kernel: &FoundKernel,
    spec: &BootInitramfs,
) -> Result<KernelDir, BootFilesError> {
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let release_file = dest.join(RELEASE_FILE);
    // An older, incomplete directory stops counting as one first.
    match std::fs::remove_file(&release_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(BootFilesError::Io {
                path: release_file,
                err: e,
            })
        }
        _ => {}
    }
    let image = dest.join(KERNEL_FILE);
    // On btrfs, copy_file_range shares the extents: the copy costs no space.
    std::fs::copy(&kernel.image, &image).map_err(io(&kernel.image))?;
    let source = KernelSource {
        modules_root: kernel
            .modules_dir
            .parent()
            .unwrap_or(&kernel.modules_dir)
            .to_path_buf(),
        kver: Some(kernel.release.clone()),
        modules_dir: Some(kernel.modules_dir.clone()),
    };
    let output = dest.join(INITRAMFS_FILE);
    let stage0 = match &spec.stage0 {
        Some(p) => p.clone(),
        None => initramfs::find_stage0().map_err(BootFilesError::Initramfs)?,
    };
    let mut is = InitramfsSpec::new(stage0, output.clone());
    is.kernel = source;
    is.modules = spec.modules.clone();
    is.skip_missing = true;
    is.config = spec.config.clone();
    is.busybox = spec.busybox.clone();
    is.compression = Compression::default();
    let report = initramfs::build(&is).map_err(BootFilesError::Initramfs)?;
    // The image embeds the disk's node.toml, which may hold CHAP secrets: the booted
    // system's users must not read it from the version's /boot.
    {
        use std::os::unix::fs::PermissionsExt;
        let owner_only = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io(p))
        };
        owner_only(&output, 0o600)?;
        owner_only(dest, 0o700)?;
    }
    std::fs::write(&release_file, format!("{}\n", kernel.release)).map_err(io(&release_file))?;
    Ok(KernelDir {
        release: kernel.release.clone(),
        left_out: report.left_out,
        initramfs_bytes: report.compressed_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn finds_debian_and_fedora_kernels_and_takes_the_newest() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(find_kernel(r).unwrap(), None);
        touch(&r.join("boot/vmlinuz-6.1.0-9-amd64"));
        touch(&r.join("lib/modules/6.1.0-9-amd64/modules.dep"));
        // A kernel without modules is not one to build an initramfs for.
        touch(&r.join("boot/vmlinuz-6.9.0-1-amd64"));
        touch(&r.join("usr/lib/modules/6.1.0-10-amd64/vmlinuz"));
        touch(&r.join("usr/lib/modules/6.1.0-10-amd64/modules.dep"));
        let k = find_kernel(r).unwrap().unwrap();
        assert_eq!(k.release, "6.1.0-10-amd64");
        assert!(k.image.ends_with("usr/lib/modules/6.1.0-10-amd64/vmlinuz"));
        std::fs::remove_file(r.join("usr/lib/modules/6.1.0-10-amd64/vmlinuz")).unwrap();
        let k = find_kernel(r).unwrap().unwrap();
        assert_eq!(k.release, "6.1.0-9-amd64");
        assert!(k.modules_dir.ends_with("lib/modules/6.1.0-9-amd64"));
    }

    #[test]
    fn a_kernel_symlinked_out_of_the_image_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        touch(&t.path().join("host-secret"));
        touch(&r.join("lib/modules/6.1.0-9-amd64/modules.dep"));
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::os::unix::fs::symlink(
            t.path().join("host-secret"),
            r.join("boot/vmlinuz-6.1.0-9-amd64"),
        )
        .unwrap();
        let e = find_kernel(&r).unwrap_err();
        assert!(e.to_string().contains("outside the image root"), "{e}");
    }
}
