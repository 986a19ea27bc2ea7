//! An interrupted `terra install`, found again. A registry image's layers download onto the
//! root filesystem the install has just made (`.terra/downloads`, resumable: see
//! `oci::fetch`), so a kill, a power cut or a dropped connection after the mkfs leaves a
//! filesystem that holds part of the image and no boot state. The install marks such a
//! filesystem `.terra/installing` (what it was made for: label, profile, devices, UUID)
//! from its mkfs until its boot state is stored; a re-run with the same root group finds
//! the mark, keeps the filesystem and its downloads instead of making a new one (no
//! `--force` needed: it holds nothing but the interrupted install), clears everything else
//! from it, and goes on.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use terra_init::bootstate::{STATE_DIR, STATE_FILE};
use terra_init::config::Group;

use crate::bootdisk;
use crate::versions::disk::{self, DiskError, Loops, Mounted};
use crate::versions::DOWNLOADS_DIR;

/// The mark's name in `.terra/`.
pub const MARK: &str = "installing";

/// What a root filesystem was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The group's label.
    pub label: String,
    /// Its profile (`single`, `raid1`, …).
    pub profile: String,
    /// Its devices as node.toml or `--disk` named them, in order.
    pub devices: Vec<String>,
    /// Whether the first disk was partitioned as a bootable disk (`mbr = true`).
    pub mbr: bool,
    /// The filesystem's UUID (a bootable disk's partition identifiers derive from it).
    pub uuid: String,
}

impl Mark {
    /// The mark for `group` made with filesystem UUID `uuid`.
    pub fn for_group(group: &Group, uuid: &str) -> Self {
        Mark {
            label: group.label.clone(),
            profile: group.profile.clone(),
            devices: group.disk.iter().map(|d| d.device.clone()).collect(),
            mbr: group.mbr,
            uuid: uuid.to_string(),
        }
    }

    /// Writes the mark into the new filesystem at `top` (synced before any download).
    pub fn store(&self, top: &Path) -> io::Result<()> {
        let dir = top.join(STATE_DIR);
        fs::create_dir_all(&dir)?;
        let path = dir.join(MARK);
        let mut f = fs::File::create(&path)?;
        f.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::File::open(&dir)?.sync_all()
    }
}

/// Removes the mark: the install's boot state is stored.
pub fn unmark(top: &Path) -> io::Result<()> {
    match fs::remove_file(top.join(STATE_DIR).join(MARK)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The mark of an interrupted install on `group`'s disks, when they hold one made for
/// the same label, profile, devices and bootability (and no boot state): the filesystem
/// to go on with. Anything else (blank disks, another filesystem, an install that
/// finished, a different plan) is None, and the install proceeds as usual.
pub fn find(group: &Group) -> Option<Mark> {
    if group.disk.iter().any(|d| !Path::new(&d.device).exists()) {
        return None;
    }
    let mut loops = Loops(Vec::new());
    let mut devs = disk::attach(group, &mut loops).ok()?;
    if group.mbr {
        devs[0] = bootdisk::root_member(&devs[0]);
    }
    let id = fs::File::open(&devs[0])
        .and_then(|mut f| terra_init::probe::probe_fs(&mut f))
        .ok()?;
    if id.fstype != Some(terra_init::probe::FsType::Btrfs)
        || id.label.as_deref() != Some(&group.label)
    {
        return None;
    }
    let work = crate::oci::image::temp_dir("terra-installing").ok()?;
    let _work = crate::oci::image::TempDir(work.clone());
    let mnt = work.join("top");
    let _mounted = mount_ro(&devs, &mnt).ok()?;
    let state = mnt.join(STATE_DIR);
    if state.join(STATE_FILE).exists() {
        return None;
    }
    let mark: Mark = serde_json::from_slice(&fs::read(state.join(MARK)).ok()?).ok()?;
    let same = Mark::for_group(group, &mark.uuid) == mark
        && id.uuid.is_some_and(|u| u.eq_ignore_ascii_case(&mark.uuid));
    same.then_some(mark)
}

fn mount_ro(devs: &[String], mnt: &Path) -> Result<Mounted, DiskError> {
    fs::create_dir_all(mnt).map_err(|err| DiskError::Io {
        disk: mnt.to_path_buf(),
        err,
    })?;
    let mut opts = vec!["ro".to_string()];
    if devs.len() > 1 {
        opts.extend(devs.iter().map(|d| format!("device={d}")));
    }
    crate::tool::run(
        Command::new("mount")
            .args(["-t", "btrfs", "-o", &opts.join(",")])
            .arg(&devs[0])
            .arg(mnt),
        "mount",
    )?;
    Ok(Mounted(mnt.to_path_buf()))
}

/// Empties the filesystem of an interrupted install at `top` but for its mark and its
/// downloads: the subvolumes it made (versions, layer chains, staging, persistent ones)
/// and every file, so the install starts over on it with the bytes it already fetched.
pub fn clear(top: &Path) -> Result<(), DiskError> {
    let keep = |p: &Path| {
        p == top.join(STATE_DIR).join(MARK) || p == top.join(STATE_DIR).join(DOWNLOADS_DIR)
    };
    remove_children(top, &keep).map(|_| ())
}

/// Removes what is in `dir` but `keep`: subvolumes by btrfs, directories after their
/// children (a chain subvolume sits in the plain directory `.terra/layers`). Returns
/// whether `dir` is empty now.
fn remove_children(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<bool, DiskError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |err| DiskError::Io { disk: p, err }
    };
    let mut empty = true;
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path: PathBuf = entry.map_err(io(dir))?.path();
        if keep(&path) {
            empty = false;
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_dir() && meta.ino() == BTRFS_SUBVOLUME_INO {
            disk::subvolume_delete(&path)?;
        } else if meta.is_dir() {
            if remove_children(&path, keep)? {
                fs::remove_dir(&path).map_err(io(&path))?;
            } else {
                empty = false;
            }
        } else {
            fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(empty)
}

/// The inode number of every btrfs subvolume's root directory.
const BTRFS_SUBVOLUME_INO: u64 = 256;
