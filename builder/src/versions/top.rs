//! A root group opened for a version command: its top level mounted read-write, the
//! version lock taken, and what a killed run left swept away (staging subvolumes, versions
//! behind a `pending-` marker, an ESP behind the stored default).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::bootstate::{self, BootState, NODE_FILE, STATE_DIR};
use terra_init::config::{Group, NodeConfig};

use super::crash::crash_point;
use super::disk::{self, Loops, Mounted};
use super::{io_err, log_line, Target, VersionsError};
use crate::bootdisk;
use crate::oci;
use crate::tool;

/// The top level of a root group's filesystem, mounted read-write for the duration.
pub struct Top {
    /// The mount point.
    pub path: PathBuf,
    /// What to call the disk in messages.
    pub disk: String,
    /// The filesystem label.
    pub label: String,
    /// The version the running system booted (running-system mode only).
    pub booted: Option<String>,
    /// Kernel names of the disks attached for `--disk` (where the ESP is looked for);
    /// empty on the running system (every block device).
    pub disks: Vec<String>,
    _lock: fs::File,
    _mounted: Mounted,
    _loops: Loops,
    _work: oci::image::TempDir,
}

/// Mounts the top level of the root group on `target`'s disks (or the running system's
/// root device), takes the version lock and sweeps what a killed run left.
pub fn open(target: &Target) -> Result<Top, VersionsError> {
    if !rustix::process::geteuid().is_root() {
        return Err(VersionsError::Refused(
            "versions live on btrfs subvolumes: run as root (mount, loop devices)".into(),
        ));
    }
    // Before the first mount: a missing tool must not leave a half-swept disk.
    tool::check(&disk::needs())?;
    let work = oci::image::temp_dir("terra-versions")?;
    let work_guard = oci::image::TempDir(work.clone());
    let mnt = work.join("top");
    let mut loops = Loops(Vec::new());
    let mut disks = Vec::new();
    let (mounted, disk, booted, first_dev) = if target.disks.is_empty() {
        let report = fs::read(terra_init::layout::BOOT_REPORT).map_err(|e| {
            VersionsError::Refused(format!(
                "{}: {e}: without --disk, terra acts on the running system, which must have \
                 booted a version with Terra",
                terra_init::layout::BOOT_REPORT
            ))
        })?;
        let booted =
            terra_init::bless::booted_from_report(&report).map_err(VersionsError::Refused)?;
        fs::create_dir_all(&mnt).map_err(io_err(&mnt))?;
        tool::run(
            Command::new("mount")
                .args(["-t", "btrfs", "-o", &booted.top_options])
                .arg(&booted.device)
                .arg(&mnt),
            "mount",
        )?;
        (
            Mounted(mnt.clone()),
            booted.device.clone(),
            Some(booted.name),
            booted.device,
        )
    } else {
        let group = Group {
            disk: target
                .disks
                .iter()
                .map(|d| terra_init::config::Disk {
                    device: d.to_string_lossy().into_owned(),
                    size: None,
                })
                .collect(),
            ..Default::default()
        };
        let devs = disk::attach(&group, &mut loops)?;
        disks = devs
            .iter()
            .filter_map(|d| Some(Path::new(d).file_name()?.to_str()?.to_string()))
            .collect();
        // A bootable disk (mbr = true) holds the filesystem in its terra-root partition.
        let devs: Vec<String> = devs.iter().map(|d| bootdisk::root_member(d)).collect();
        // A copy of a disk image carries its filesystem's UUID; the kernel may still hold
        // a registration of that UUID on a loop device that is gone. Forget unmounted ones.
        let _ = Command::new("btrfs")
            .args(["device", "scan", "--forget"])
            .output();
        let mounted = disk::mount(&devs, &mnt)?;
        let disk = target
            .disks
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        (mounted, disk, None, devs[0].clone())
    };
    // The label from the superblock (stage0's prober), not a `btrfs filesystem label` run.
    let label = fs::File::open(&first_dev)
        .and_then(|mut f| terra_init::probe::probe_fs(&mut f))
        .map_err(io_err(Path::new(&first_dev)))?
        .label
        .unwrap_or_default();
    let dir = mnt.join(STATE_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let lock_path = dir.join("lock");
    let lock = fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            VersionsError::Refused(format!(
                "{disk}: another terra is changing its versions ({} is locked)",
                lock_path.display()
            ))
        },
    )?;
    let top = Top {
        path: mnt,
        disk,
        label,
        booted,
        disks,
        _lock: lock,
        _mounted: mounted,
        _loops: loops,
        _work: work_guard,
    };
    sweep(&top.path)?;
    // Like the sweep, finish what a killed run left: an ESP behind the stored default.
    if let Ok(Some(state)) = bootstate::load(&top.path) {
        follow_esp(&top, &state.default);
    }
    Ok(top)
}

/// Brings the disk's ESP, when it boots from one (`.terra/esp`), to the default version.
/// A failure is said, not returned: the stored state is the truth, and the next `terra`
/// command on the disk (every one syncs when it opens it) or `bless` catches up. Returns a
/// note for the user when the ESP changed.
pub(super) fn follow_esp(top: &Top, default: &str) -> String {
    let synced = crate::bootdisk::follow_default(&top.path, default, &top.disks, &mut |step| {
        crash_point(step.name())
    });
    match synced {
        Ok(Some(true)) => format!("; the ESP boots {default} now"),
        Ok(_) => String::new(),
        Err(e) => {
            log_line(&format!(
                "warning: the ESP was not brought to {default}: {e} (the boot state is \
                 stored; the next terra command on this disk retries)"
            ));
            String::new()
        }
    }
}

impl Top {
    /// The boot state; a filesystem without one was not installed with versions.
    pub fn state(&self) -> Result<BootState, VersionsError> {
        bootstate::load(&self.path)?.ok_or_else(|| {
            VersionsError::Refused(format!(
                "{}: no {}/{} (installed before versions, or not by terra install)",
                self.disk,
                STATE_DIR,
                bootstate::STATE_FILE
            ))
        })
    }

    /// Stores the boot state crash-safely.
    pub fn store(&self, state: &mut BootState) -> Result<(), VersionsError> {
        Ok(bootstate::store(&self.path, state)?)
    }

    /// The node.toml `terra install` kept on the disk (empty when there is none).
    pub fn node(&self) -> Result<NodeConfig, VersionsError> {
        let p = self.path.join(STATE_DIR).join(NODE_FILE);
        NodeConfig::load(&p).map_err(VersionsError::Config)
    }
}

pub(super) fn staging_name(name: &str) -> String {
    format!("staging-{name}")
}

pub(super) fn pending_marker(top: &Path, name: &str) -> PathBuf {
    top.join(STATE_DIR).join(format!("pending-{name}"))
}

/// Drops the marker once the state that names `name` is stored.
pub fn settled(top: &Path, name: &str) {
    let _ = fs::remove_file(pending_marker(top, name));
}

/// Deletes what a killed run left: staging subvolumes, and versions that no stored state
/// names while their `pending-` marker is still there (renamed into place but never
/// stored, or forgotten by a collection but not yet deleted).
pub(super) fn sweep(top: &Path) -> Result<(), VersionsError> {
    let dir = top.join(STATE_DIR);
    let mut leftovers = Vec::new();
    let mut markers = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("staging-") {
            leftovers.push(entry.path());
        } else if let Some(version) = name.strip_prefix("pending-") {
            markers.push((entry.path(), version.to_string()));
        }
    }
    if !markers.is_empty() {
        let state = bootstate::load(top)?;
        for (marker, version) in markers {
            let known = state.as_ref().is_some_and(|s| s.knows(&version));
            let path = top.join(&version);
            // The subvolume goes first, the marker after: a kill in between leaves the
            // marker for the next sweep.
            if !known && path.exists() && !remove_leftover(&path) {
                continue;
            }
            if let Err(e) = fs::remove_file(&marker) {
                log_line(&format!("cannot remove {}: {e}", marker.display()));
            }
        }
    }
    for p in leftovers {
        remove_leftover(&p);
    }
    Ok(())
}

/// Deletes a subvolume an interrupted run left; a failure is said, not fatal (it must not
/// stop `rollback` or `versions`). Returns whether it is gone.
fn remove_leftover(path: &Path) -> bool {
    log_line(&format!(
        "removing {} left by an interrupted run",
        path.display()
    ));
    match disk::subvolume_delete(path) {
        Ok(()) => true,
        Err(e) => {
            log_line(&format!("cannot remove {}: {e}", path.display()));
            false
        }
    }
}
