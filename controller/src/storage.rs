//! The state directory's files: a golden LUN per image digest (made by `terra install`'s
//! code, once), a copy-on-write clone of it per node, and the pxelinux tree for machines
//! that can only do TFTP.
//!
//! ```text
//! DIR/golden/<digest hex>.img   DIR/golden/<digest hex>.lock
//! DIR/luns/<hostname>.img
//! DIR/tftp/pxelinux.cfg/01-<mac>   DIR/tftp/nodes/<mac>.cpio
//! ```
//!
//! Every file appears by rename once complete, so a crash leaves either the whole file or a
//! `*.partial` that the sweep removes.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use terra_builder::install::{self, InstallSpec};

/// Size of a LUN, MiB (a sparse file: only what is written takes space).
pub const DEFAULT_LUN_MB: u64 = 4096;

/// A storage error naming the file.
#[derive(Debug)]
pub enum StorageError {
    /// A file operation.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// Building a golden LUN (`terra install`).
    Install {
        /// The image.
        image: String,
        /// Why.
        message: String,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            StorageError::Install { image, message } => {
                write!(f, "golden LUN of {image}: {message}")
            }
        }
    }
}

impl std::error::Error for StorageError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |err| StorageError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// How a node's LUN was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    /// A reflink (FICLONE): shares every block with the golden LUN.
    Reflink,
    /// A full copy: the state directory's filesystem cannot share blocks.
    Copy,
}

/// The golden LUN a node's clone comes from.
#[derive(Debug, Clone)]
pub struct Golden {
    /// Its file.
    pub path: PathBuf,
    /// Its version (the first version's name).
    pub version: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Its root.
    pub root: PathBuf,
}

/// The hex of a `sha256:<hex>` digest (anything else is hashed, so it is a safe file name).
fn digest_file(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => h.to_string(),
        _ => {
            use sha2::Digest as _;
            let d = sha2::Sha256::digest(digest.as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

impl Storage {
    /// Opens (and makes) the state directory's layout.
    pub fn open(root: &Path) -> Result<Storage, StorageError> {
        for d in ["golden", "luns", "tftp/pxelinux.cfg", "tftp/nodes", "work"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
        })
    }

    /// The golden LUN of `digest`.
    pub fn golden(&self, digest: &str) -> PathBuf {
        self.root
            .join("golden")
            .join(format!("{}.img", digest_file(digest)))
    }

    /// Node `hostname`'s LUN.
    pub fn lun(&self, hostname: &str) -> PathBuf {
        self.root.join("luns").join(format!("{hostname}.img"))
    }

    /// The pxelinux entry of `mac` (`01-<mac with dashes>`).
    pub fn pxelinux_entry(&self, mac_dashes: &str) -> PathBuf {
        self.root
            .join("tftp/pxelinux.cfg")
            .join(format!("01-{mac_dashes}"))
    }

    /// The per-node initramfs of `mac` in the TFTP tree.
    pub fn tftp_cpio(&self, mac_dashes: &str) -> PathBuf {
        self.root
            .join("tftp/nodes")
            .join(format!("{mac_dashes}.cpio"))
    }

    /// Makes the golden LUN of `image` (resolved to `digest`) unless it exists: `terra
    /// install` of the image onto a sparse file, then a rename. One builder at a time per
    /// digest (a lock file), so concurrent first nodes of one image wait for one install.
    pub fn ensure_golden(
        &self,
        image: &str,
        digest: &str,
        plain_http: bool,
        verify: Option<terra_builder::oci::VerifyPolicy>,
        size_mb: u64,
    ) -> Result<Golden, StorageError> {
        let golden = self.golden(digest);
        let version_file = golden.with_extension("version");
        let lock_path = golden.with_extension("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&lock_path)(e.into()))?;
        if golden.exists() {
            let version = fs::read_to_string(&version_file).map_err(io_err(&version_file))?;
            return Ok(Golden {
                path: golden,
                version: version.trim().to_string(),
            });
        }
        let partial = golden.with_extension("img.partial");
        let _ = fs::remove_file(&partial);
        let work = self.root.join("work");
        let config = work.join(format!("{}.toml", digest_file(digest)));
        let text = format!(
            "# the golden LUN of {image} ({digest}), written by the Terra controller\n\
             image = {}\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = {}\nsize = {size_mb}\n",
            crate::node::toml_str(image),
            crate::node::toml_str(&partial.display().to_string()),
        );
        fs::write(&config, text).map_err(io_err(&config))?;
        let mut spec = InstallSpec::new(&config);
        spec.plain_http = plain_http;
        spec.verify = verify;
        let done = install::install(&spec);
        let _ = fs::remove_file(&config);
        let report = match done {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(StorageError::Install {
                    image: image.to_string(),
                    message: e.to_string(),
                });
            }
        };
        // The version's name first: a golden LUN is complete once its image file is there.
        write_private(&version_file, report.root_subvolume.as_bytes())?;
        sync(&partial)?;
        fs::rename(&partial, &golden).map_err(io_err(&golden))?;
        sync(golden.parent().unwrap_or(&self.root))?;
        Ok(Golden {
            path: golden,
            version: report.root_subvolume,
        })
    }

    /// Node `hostname`'s LUN as a copy-on-write clone of `golden` (a full copy where the
    /// filesystem cannot share blocks). Replaces an earlier one.
    pub fn clone_lun(&self, golden: &Path, hostname: &str) -> Result<CloneKind, StorageError> {
        let lun = self.lun(hostname);
        let partial = lun.with_extension("img.partial");
        let _ = fs::remove_file(&partial);
        let kind = clone_file(golden, &partial)?;
        fs::rename(&partial, &lun).map_err(io_err(&lun))?;
        sync(lun.parent().unwrap_or(&self.root))?;
        Ok(kind)
    }

    /// Removes node `hostname`'s LUN (and a partial one).
    pub fn remove_lun(&self, hostname: &str) -> Result<(), StorageError> {
        let lun = self.lun(hostname);
        for p in [lun.with_extension("img.partial"), lun] {
            remove_if_present(&p)?;
        }
        Ok(())
    }

    /// Hostnames that have LUN files (complete or partial).
    pub fn lun_owners(&self) -> Vec<(String, PathBuf)> {
        let dir = self.root.join("luns");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let host = name
                .strip_suffix(".img.partial")
                .or_else(|| name.strip_suffix(".img"));
            if let Some(h) = host {
                out.push((h.to_string(), e.path()));
            }
        }
        out
    }

    /// Writes node `mac`'s pxelinux entry and initramfs into the TFTP tree.
    pub fn write_entry(
        &self,
        mac_dashes: &str,
        pxelinux: &str,
        cpio: &[u8],
    ) -> Result<(), StorageError> {
        write_private(&self.tftp_cpio(mac_dashes), cpio)?;
        write_private(&self.pxelinux_entry(mac_dashes), pxelinux.as_bytes())
    }

    /// Removes node `mac`'s TFTP entry.
    pub fn remove_entry(&self, mac_dashes: &str) -> Result<(), StorageError> {
        remove_if_present(&self.pxelinux_entry(mac_dashes))?;
        remove_if_present(&self.tftp_cpio(mac_dashes))
    }

    /// MACs (with dashes) that have TFTP entries.
    pub fn entry_owners(&self) -> Vec<String> {
        let dir = self.root.join("tftp/pxelinux.cfg");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(m) = name.strip_prefix("01-") {
                out.push(m.to_string());
            }
        }
        for e in fs::read_dir(self.root.join("tftp/nodes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(m) = name.strip_suffix(".cpio") {
                if !out.iter().any(|o| o == m) {
                    out.push(m.to_string());
                }
            }
        }
        out
    }
}

fn remove_if_present(p: &Path) -> Result<(), StorageError> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(p)(e)),
        _ => Ok(()),
    }
}

/// Writes `data` to `path` owner-only, through a partial file and a rename.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    write_whole(path, data, 0o600).map_err(io_err(path))
}

/// Writes `data` to `path` with `mode` through `<path>.partial`, synced and renamed into
/// place: the file is whole or as it was.
pub(crate) fn write_whole(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let partial = path.with_extension("partial");
    let _ = fs::remove_file(&partial);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)?;
    f.write_all(data).and_then(|_| f.sync_all())?;
    fs::rename(&partial, path)
}

/// Clones `src` to the new file `dst` by FICLONE, else copies it (sparse regions stay
/// sparse only with the clone).
pub fn clone_file(src: &Path, dst: &Path) -> Result<CloneKind, StorageError> {
    let from = fs::File::open(src).map_err(io_err(src))?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(io_err(dst))?;
    let kind = match rustix::fs::ioctl_ficlone(&to, &from) {
        Ok(()) => CloneKind::Reflink,
        Err(_) => {
            drop(to);
            let _ = fs::remove_file(dst);
            copy_sparse(src, dst)?;
            CloneKind::Copy
        }
    };
    sync(dst)?;
    Ok(kind)
}

/// Copies a (sparse) disk image, keeping holes: `cp --sparse=always`.
fn copy_sparse(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(dst)
        .status()
        .map_err(io_err(dst))?;
    if !status.success() {
        return Err(io_err(dst)(io::Error::other(format!(
            "cp --sparse=always from {} failed ({status})",
            src.display()
        ))));
    }
    Ok(())
}

/// fsync of a file, or of a directory (its entries: a rename is durable after it).
fn sync(p: &Path) -> Result<(), StorageError> {
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io_err(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_become_safe_file_names() {
        let hex = "a".repeat(64);
        assert_eq!(digest_file(&format!("sha256:{hex}")), hex);
        let odd = digest_file("sha256:../../etc/passwd");
        assert_eq!(odd.len(), 64);
        assert!(odd.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn a_clone_has_the_golden_bytes_and_replaces_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let golden = dir.path().join("golden/g.img");
        fs::write(&golden, b"golden bytes").unwrap();
        s.clone_lun(&golden, "n1").unwrap();
        fs::write(s.lun("n1"), b"changed").unwrap();
        s.clone_lun(&golden, "n1").unwrap();
        assert_eq!(fs::read(s.lun("n1")).unwrap(), b"golden bytes");
        assert_eq!(s.lun_owners().len(), 1);
        s.remove_lun("n1").unwrap();
        assert!(s.lun_owners().is_empty());
    }

    #[test]
    fn entries_are_owner_only_and_listed_by_mac() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        s.write_entry("52-54-00-00-00-01", "DEFAULT terra\n", b"cpio")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(s.tftp_cpio("52-54-00-00-00-01"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.entry_owners(), vec!["52-54-00-00-00-01".to_string()]);
        s.remove_entry("52-54-00-00-00-01").unwrap();
        assert!(s.entry_owners().is_empty());
    }
}
