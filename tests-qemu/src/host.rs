//! Host tools the lab needs, installed with apt when we are root, otherwise named precisely.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (command, Debian package) pairs the lab needs.
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mkfs.btrfs", "btrfs-progs"),
    ("btrfs", "btrfs-progs"),
    ("cpio", "cpio"),
    ("mkfs.vfat", "dosfstools"),
    ("xorriso", "xorriso"),
    ("mksquashfs", "squashfs-tools"),
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "mount"),
];

/// Finds a command in PATH or the sbin directories (which a non-root PATH may lack).
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file());
    found
}

/// A kernel for the lab: the newest /boot/vmlinuz-<kver> whose modules are installed.
pub fn find_kernel() -> Option<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kver = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&kver)
                .join("modules.dep")
                .is_file()
                .then(|| (e.path(), kver))
        })
        .collect();
    found.sort_by_key(|(_, kver)| version_key(kver));
    found.pop()
}

fn version_key(kver: &str) -> Vec<u64> {
    kver.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The static busybox the demo root and rescue shell use.
pub fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            std::fs::read(p)
                .map(|b| crate::elf::not_static_reason(&b).is_none())
                .unwrap_or(false)
        })
}

/// Debian packages missing on this host.
pub fn missing_packages() -> Vec<&'static str> {
    let mut pkgs: Vec<&str> = TOOLS
        .iter()
        .filter(|(cmd, _)| which(cmd).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if find_kernel().is_none() {
        pkgs.push("linux-image-amd64");
    }
    if static_busybox().is_none() {
        pkgs.push("busybox-static");
    }
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

/// Makes sure the host has what the lab needs: installs it with apt when running as root,
/// otherwise fails with the exact command to run.
pub fn ensure() -> crate::Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)?;
    let still = missing_packages();
    if !still.is_empty() {
        return Err(format!("still missing after apt-get: {}", still.join(" ")));
    }
    Ok(())
}

/// Installs Debian packages with apt-get when root; otherwise fails with the command to run.
pub fn apt_install(packages: &[&str]) -> crate::Result<()> {
    let line = format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if !nix_is_root() {
        return Err(format!(
            "Debian packages are missing; run:\n  sudo apt-get update && sudo {line}"
        ));
    }
    eprintln!("lab: installing {}", packages.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(["-o", "DPkg::Lock::Timeout=300"]);
    install.extend(packages.iter().copied());
    let installed = apt(&install) || (apt(&["update", "-q"]) && apt(&install));
    if installed {
        Ok(())
    } else {
        Err(format!(
            "apt-get could not install the packages; try: {line}"
        ))
    }
}

/// Whether we run as root (loop mounts and apt need it).
pub fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Drops the btrfs driver's memory of devices that are not mounted. The host kernel keeps a
/// loop device's path registered under the UUID of the last btrfs seen on it, and refuses a
/// different filesystem on the same path as a mismatch; the lab calls this before its loop
/// mounts.
pub fn forget_stale_btrfs_devices() {
    let _ = Command::new("btrfs")
        .args(["device", "scan", "--forget"])
        .output();
}
