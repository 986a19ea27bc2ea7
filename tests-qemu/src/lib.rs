//! The QEMU lab: host tools, stage0 and initramfs builds, demo roots on btrfs disk images,
//! and VMs under a timeout with their serial console captured. `cargo xtask qemu` and the
//! boot scenarios in `tests/` both stand on it.

pub mod bench;
pub mod build;
pub mod debian;
pub mod disk;
pub mod elf;
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
pub mod secureboot;
pub mod tgtd;
pub mod timings;
pub mod versions;
pub mod vm;
pub mod writer;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Where the lab keeps what it builds: `target/lab`.
pub fn lab_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("lab")
}

/// Lab errors are messages for a developer: they say what failed and what to do.
pub type Result<T> = std::result::Result<T, String>;

/// A free TCP port on 127.0.0.1 (for a server a test starts).
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
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
