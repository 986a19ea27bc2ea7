//! The root of a live ISO (`terra iso --live REF`): an OCI image unpacked as usual (every
//! digest checked, nothing written outside the tree) and packed into one compressed
//! squashfs, which stage0 mounts read-only under a tmpfs overlay (`init/src/live.rs`).
//!
//! `mksquashfs` (squashfs-tools) packs it: zstd (the kernels we boot all read it), every
//! time set to `SOURCE_DATE_EPOCH`, entries in sorted order, so the same image gives the
//! same bytes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::{self, ApplyOptions, Image, OciError, Progress};
use crate::tool::{self, ToolError};

/// Why the live image could not be made.
#[derive(Debug)]
pub enum LiveError {
    /// The image could not be unpacked.
    Oci(OciError),
    /// mksquashfs failed or is missing.
    Tool(ToolError),
    /// A scratch or output file.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveError::Oci(e) => write!(f, "live image: {e}"),
            LiveError::Tool(e) => write!(f, "live image: {e}"),
            LiveError::Io { path, err } => write!(f, "live image: {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for LiveError {}

/// What was packed.
#[derive(Debug, Clone)]
pub struct LiveReport {
    /// Bytes of file content unpacked.
    pub unpacked_bytes: u64,
    /// Size of the squashfs.
    pub bytes: u64,
}

/// Removes a scratch directory however the build ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unpacks `image` into a scratch directory beside `out` and packs it as the squashfs
/// `out`; times are `source_date_epoch`. `out` appears only when complete.
pub fn squashfs(
    image: &Image,
    out: &Path,
    source_date_epoch: u64,
    progress: &dyn Progress,
) -> Result<LiveReport, LiveError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |err| LiveError::Io { path, err }
    };
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "squashfs.img".into());
    let scratch = Scratch(parent.join(format!(".{name}.terra-live-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).map_err(io(&scratch.0))?;
    let root = scratch.0.join("root");
    let report = oci::unpack_with(image, &root, &ApplyOptions::default(), progress)
        .map_err(LiveError::Oci)?;
    let tmp = scratch.0.join("out.img");
    let sde = source_date_epoch.to_string();
    let mut c = Command::new("mksquashfs");
    c.arg(&root)
        .arg(&tmp)
        .args(["-noappend", "-comp", "zstd", "-no-progress", "-quiet"])
        .args(["-all-time", &sde, "-mkfs-time", &sde])
        // mksquashfs refuses SOURCE_DATE_EPOCH together with the options that say the same.
        .env_remove("SOURCE_DATE_EPOCH");
    tool::run(&mut c, "squashfs-tools").map_err(LiveError::Tool)?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).map_err(io(out))?;
    Ok(LiveReport {
        unpacked_bytes: report.bytes,
        bytes,
    })
}

/// A live root's squashfs made beside an ISO being built, removed when dropped: however
/// the ISO build ends, no scratch file is left next to its output.
#[derive(Debug)]
pub struct SquashfsBeside(PathBuf);

impl SquashfsBeside {
    /// Where it lives: the ISO's path with `.live-<pid>.squashfs` added.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SquashfsBeside {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// [`squashfs`] of `image` beside the ISO `iso_output`, for `IsoSpec::live`; keep the
/// returned file until the ISO is built.
pub fn squashfs_beside(
    image: &Image,
    iso_output: &Path,
    source_date_epoch: u64,
    progress: &dyn Progress,
) -> Result<(SquashfsBeside, LiveReport), LiveError> {
    let mut name = iso_output.as_os_str().to_owned();
    name.push(format!(".live-{}.squashfs", std::process::id()));
    let file = SquashfsBeside(PathBuf::from(name));
    let report = squashfs(image, file.path(), source_date_epoch, progress)?;
    Ok((file, report))
}
