//! Root versions on a disk: `terra upgrade`, `terra apply`, `terra versions`, `terra
//! bless`, `terra rollback`, `terra gc`, and the version `terra install` makes first.
//!
//! A version is a read-only btrfs subvolume at the top level of the root group; the boot
//! state beside it (`.terra/state.json`, [`terra_init::bootstate`]) says which is the
//! default, which is tentative and which are bad. Each image layer chain (OCI chain ID)
//! is kept as a read-only subvolume under `.terra/layers`, so an upgrade snapshots the
//! longest chain it shares with what is on the disk and unpacks only the layers above it.
//!
//! Crash safety, step by step: work happens in `.terra/staging-<name>`, which every
//! operation sweeps first, with a `.terra/pending-<name>` marker for a version between
//! its subvolume and the stored state; a chain subvolume appears only
//! complete (a snapshot taken after its layer is applied); a version subvolume is renamed
//! into place only complete and read-only; and it becomes a candidate only when the state
//! that names it has been stored (write, fsync, rename). So a kill at any point leaves the
//! old state with its default, and a re-run completes.
//!
//! The files: `disk` (loop devices, mounts, subvolumes, fstab), `top` (a root group opened:
//! lock, sweep of leftovers), `keys` (the keys that check images), `build` (a version from
//! layer chains), `extensions` (extension images), `lifecycle` (upgrade, apply, collect, list, bless, rollback, gc), `reboot`
//! (restarting the running system into a version) and `crash` (the crash points tests kill
//! at).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use terra_init::bootstate::StateError;
use terra_init::config::ConfigError;

use crate::bootfiles::BootFilesError;
use crate::oci::OciError;
use crate::tool::{Missing, ToolError};

mod build;
mod crash;
pub mod disk;
pub mod extensions;
mod keys;
mod lifecycle;
mod reboot;
mod top;

pub use build::{build_version, chain_ids, Built, NewVersion};
pub use crash::crash_point;
pub use disk::DiskError;
pub use keys::{combine_policy, disk_keys, keep_keys, node_keys, KEYS_DIR};
pub use lifecycle::{
    apply, bless, collect, exclusive_bytes, gc, list, rollback, upgrade, upgrade_with, Applied,
    Listing, UpgradeSpec, Upgraded, VersionInfo, DEFAULT_KEEP,
};
pub use reboot::{kexec_kernel, plan, prepare_reboot, Method, Reboot, Via};
pub use top::{clear_downloads, downloads_dir, open, settled, Top, DOWNLOADS_DIR};

/// Where `terra upgrade` and friends act.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Disks, disk images or LUN files of the root group; empty means the running system
    /// (found from `/run/terra/boot.json`).
    pub disks: Vec<PathBuf>,
}

/// Why a version operation stopped; each names the disk, version or image.
#[derive(Debug)]
pub enum VersionsError {
    /// Disks, loop devices, mounts.
    Disk(DiskError),
    /// The node.toml kept on the disk.
    Config(ConfigError),
    /// Host tools it needs are missing (nothing was written).
    Missing(Missing),
    /// The boot state.
    State(StateError),
    /// The image.
    Image(OciError),
    /// A host tool.
    Tool(ToolError),
    /// Not enough free space for the layers to unpack.
    NoSpace {
        /// The disk (or the running system's root device).
        disk: String,
        /// What is needed at least, bytes.
        need: u64,
        /// What is free, bytes.
        free: u64,
    },
    /// The operation makes no sense here.
    Refused(String),
    /// The kernel a version carries: its files or its initramfs.
    Kernel {
        /// The version.
        version: String,
        /// What went wrong.
        err: BootFilesError,
    },
    /// An extension reference that is a template which does not expand.
    Template(extensions::TemplateError),
    /// An upgrade refused: an extension does not fit the new version.
    Extension(Box<extensions::Misfit>),
    /// A file of the disk.
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
}

impl fmt::Display for VersionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionsError::Disk(e) => e.fmt(f),
            VersionsError::Config(e) => e.fmt(f),
            VersionsError::Missing(e) => e.fmt(f),
            VersionsError::State(e) => e.fmt(f),
            VersionsError::Image(e) => e.fmt(f),
            VersionsError::Tool(e) => e.fmt(f),
            VersionsError::Kernel { version, err } => write!(f, "version {version}: {err}"),
            VersionsError::NoSpace { disk, need, free } => write!(
                f,
                "{disk}: not enough free space: the new layers need at least {} MiB, {} MiB \
                 are free (nothing was written; `terra gc --keep N` frees old versions)",
                need >> 20,
                free >> 20
            ),
            VersionsError::Refused(why) => f.write_str(why),
            VersionsError::Template(e) => e.fmt(f),
            VersionsError::Extension(e) => e.fmt(f),
            VersionsError::Io { path, err } => write!(f, "{}: {err}", path.display()),
        }
    }
}

impl std::error::Error for VersionsError {}

macro_rules! from_error {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for VersionsError {
            fn from(e: $t) -> Self { VersionsError::$v(e) }
        }
    )*};
}
from_error!(
    DiskError => Disk,
    StateError => State,
    OciError => Image,
    ToolError => Tool,
    Missing => Missing,
    extensions::TemplateError => Template
);

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VersionsError + '_ {
    move |err| VersionsError::Io {
        path: path.to_path_buf(),
        err,
    }
}

pub(crate) fn log_line(msg: &str) {
    eprintln!("terra: {msg}");
}
