//! The QEMU lab: host tools, stage0 and initramfs builds, demo roots on btrfs disk images,
//! and VMs under a timeout with their serial console captured. `cargo xtask qemu` and the
//! boot scenarios in `tests/` both stand on it.

pub mod bench;
pub mod build;
pub mod created;
pub mod debian;
pub mod debian_node;
pub mod disk;
pub mod elf;
pub mod extensions;
pub mod fleet;
pub mod harness;
pub mod host;
pub mod keeper;
pub mod kernels;
pub mod live;
pub mod netns;
pub mod oci_root;
pub mod package;
pub mod postgres;
pub mod registry;
pub mod secureboot;
pub mod tgtd;
pub mod timings;
pub mod versions;
pub mod vm;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The workspace root.
pub fn workspace() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Where the lab keeps what it builds: `target/lab`.
pub fn lab_dir() -> PathBuf {
    target_dir().join("lab")
}

/// Lab errors are messages for a developer: they say what failed and what to do.
pub type Result<T> = std::result::Result<T, String>;

/// A name beside `path` for building it: same directory (so [`publish`] is a rename),
/// unique to this process and call, hidden (`.name.tmp-<pid>-<n>`).
pub fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Renames the finished file `tmp` (from [`temp_name`]) to `dest`, replacing what was there
/// in one step: a reader sees the old file or the new one, never half of one.
pub fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    std::fs::rename(tmp, dest).map_err(|e| format!("{} -> {}: {e}", tmp.display(), dest.display()))
}

/// Renames the finished directory `tmp` to `dest` unless `dest` exists, which then wins
/// (another thread or process built the same content-keyed directory first) and `tmp` is
/// removed. A directory cannot replace a non-empty one in one step, hence the first wins.
pub fn publish_dir(tmp: &Path, dest: &Path) -> Result<()> {
    match std::fs::rename(tmp, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(tmp);
            Ok(())
        }
        Err(e) => Err(format!("{} -> {}: {e}", tmp.display(), dest.display())),
    }
}

/// An exclusive lock on `target/lab/locks/<name>.lock`, held until dropped. It is a file
/// lock, so it excludes other threads of this process and other processes alike (the
/// scenarios, the builder's and controller's tests and `cargo xtask` all build into
/// target/lab). Each cached fixture takes its own lock while it checks and builds; the
/// `mount` lock serializes loop mounts of btrfs images (copies share UUIDs). Never take a
/// lock while holding one of the same name: that deadlocks.
#[derive(Debug)]
#[must_use = "the lock is released when dropped"]
pub struct LabLock(#[allow(dead_code)] std::fs::File);

/// Takes [`LabLock`] `name`, waiting for its holder.
pub fn lab_lock(name: &str) -> Result<LabLock> {
    let dir = lab_dir().join("locks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.lock", name.replace('/', "_")));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| format!("locking {}: {e}", path.display()))?;
    Ok(LabLock(file))
}

/// A free TCP port on 127.0.0.1 (for a server a test starts); see [`free_port_on`].
pub fn free_port() -> Result<u16> {
    free_port_on("127.0.0.1")
}

/// A free TCP port on `addr`, never handed out before in this process: the server that gets
/// it binds it later, and a target killed for an outage comes back on its port after
/// seconds ([`tgtd::Tgtd::start_at`]), so no other scenario of the process may be given it
/// meanwhile.
pub fn free_port_on(addr: &str) -> Result<u16> {
    static GIVEN: std::sync::Mutex<Option<std::collections::HashSet<u16>>> =
        std::sync::Mutex::new(None);
    for _ in 0..50 {
        let port = std::net::TcpListener::bind((addr, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port on {addr}: {e}"))?;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.get_or_insert_with(Default::default).insert(port) {
            return Ok(port);
        }
    }
    Err(format!(
        "no free port on {addr} that this process has not used"
    ))
}

/// Runs a command, failing with its stderr and the command line.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
