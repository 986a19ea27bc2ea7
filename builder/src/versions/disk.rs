//! The disks of a root group: image files attached as loop devices, the filesystem
//! mounted, btrfs subvolumes made, snapshotted and deleted, and the fstab a version gets.
//! `terra install` and every version command stand on these.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::config::Group;

use crate::bootdisk;
use crate::tool::{self, Need, ToolError};

/// Why a disk could not be attached or mounted, or a subvolume made; each names the disk,
/// mount point or command.
#[derive(Debug)]
pub enum DiskError {
    /// A disk or mount point could not be opened or created.
    Io {
        /// The disk or directory.
        disk: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// A host tool failed.
    Tool(ToolError),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Io { disk, err } => write!(f, "disk {}: {err}", disk.display()),
            DiskError::Tool(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DiskError {}

impl From<ToolError> for DiskError {
    fn from(e: ToolError) -> Self {
        DiskError::Tool(e)
    }
}

/// The programs these functions run, for a check before anything is written.
pub fn needs() -> Vec<Need> {
    let mut n = Need::programs(&["btrfs"], "btrfs-progs");
    n.extend(Need::programs(&["losetup", "mount", "umount"], "mount"));
    n
}

/// Loop devices attached for image files, detached on drop.
pub struct Loops(pub Vec<String>);

impl Drop for Loops {
    fn drop(&mut self) {
        for dev in self.0.drain(..).rev() {
            // The btrfs driver remembers the device path with this filesystem's UUID; a later
            // filesystem on the same loop device would be refused as a mismatch. Forget it.
            let parts = bootdisk::partitions(&dev).into_iter().map(|(_, p)| p);
            for member in std::iter::once(PathBuf::from(&dev)).chain(parts) {
                let _ = Command::new("btrfs")
                    .args(["device", "scan", "--forget"])
                    .arg(&member)
                    .output();
            }
            let _ = Command::new("losetup").arg("-d").arg(&dev).output();
        }
    }
}

/// A mount, unmounted (and its directory removed) on drop.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = fs::remove_dir(&self.0);
    }
}

/// Block devices for a group's disks: image files get loop devices.
pub fn attach(group: &Group, loops: &mut Loops) -> Result<Vec<String>, DiskError> {
    let mut devs = Vec::new();
    for d in &group.disk {
        let path = PathBuf::from(&d.device);
        let meta = fs::metadata(&path).map_err(|err| DiskError::Io {
            disk: path.clone(),
            err,
        })?;
        if meta.is_file() {
            let out = tool::run(
                // --partscan: a bootable disk's btrfs is its third partition.
                Command::new("losetup")
                    .args(["--find", "--show", "--partscan"])
                    .arg(&path),
                "mount",
            )?;
            let dev = out.trim().to_string();
            loops.0.push(dev.clone());
            devs.push(dev);
        } else {
            devs.push(d.device.clone());
        }
    }
    Ok(devs)
}

pub fn mount(devs: &[String], mnt: &Path) -> Result<Mounted, DiskError> {
    fs::create_dir_all(mnt).map_err(|err| DiskError::Io {
        disk: mnt.to_path_buf(),
        err,
    })?;
    // btrfs reads a member's superblock through the block device's page cache but writes
    // it around the cache; a page left there from an earlier mount of the same loop device
    // (kept when another process held the device open at unmount) would mount an old
    // generation. Drop the cached pages first.
    for d in devs {
        let _ = Command::new("blockdev").args(["--flushbufs", d]).output();
    }
    let opts: Vec<String> = devs.iter().map(|d| format!("device={d}")).collect();
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "btrfs"]);
    if devs.len() > 1 {
        cmd.args(["-o", &opts.join(",")]);
    }
    cmd.arg(&devs[0]).arg(mnt);
    tool::run(&mut cmd, "mount")?;
    Ok(Mounted(mnt.to_path_buf()))
}

/// Gives the free space of the filesystem mounted at `mnt` back to its device (`fstrim`,
/// best effort): on a loop device, holes punched into the image file (a disk image, a
/// LUN), so the space a removed download took does not stay allocated in the file.
pub fn trim(mnt: &Path) {
    let _ = Command::new("fstrim").arg(mnt).output();
}

pub fn subvolume_create(path: &Path) -> Result<(), DiskError> {
    tool::run(
        Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(path),
        "btrfs-progs",
    )?;
    Ok(())
}

pub fn subvolume_delete(path: &Path) -> Result<(), DiskError> {
    tool::run(
        Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(path),
        "btrfs-progs",
    )?;
    Ok(())
}

pub fn snapshot(src: &Path, dst: &Path, read_only: bool) -> Result<(), DiskError> {
    let mut cmd = Command::new("btrfs");
    cmd.args(["subvolume", "snapshot"]);
    if read_only {
        cmd.arg("-r");
    }
    tool::run(cmd.arg(src).arg(dst), "btrfs-progs")?;
    Ok(())
}

/// The fstab line for a subvolume (ARCHITECTURE.md §4).
pub fn fstab_line(label: &str, path: &str, subvolume: &str) -> String {
    format!("LABEL={label} {path} btrfs subvol=/{subvolume} 0 0\n")
}

/// The fstab for the root: the root subvolume first, then every other subvolume. The root
/// line has no `ro` even for read-only versions: systemd-remount-fs applies it as a remount
/// of the whole btrfs filesystem, persistent subvolumes and the `/etc` overlay included. The
/// subvolume's own read-only flag keeps a version immutable whatever the mount says.
pub fn fstab(groups: &[Group], root_label: &str, root_name: &str) -> String {
    let mut s = String::from("# written by terra install\n");
    s.push_str(&fstab_line(root_label, "/", root_name));
    for g in groups {
        for sv in g.subvolumes.iter().filter(|sv| sv.path != "/") {
            s.push_str(&fstab_line(&g.label, &sv.path, &sv.name));
        }
    }
    s
}
