//! Phase 6, storage: wait for the root device and its members, load its filesystem; and
//! the mount the root phase uses (phase 7 chooses what to mount).

use std::fmt;
use std::time::Instant;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::config::{BootConfig, RootSpec};
use crate::devices::Devices;
use crate::probe::Identity;
use crate::report::RootReport;

/// Why the root could not be mounted.
#[derive(Debug)]
pub enum StorageError {
    /// No block device matched within the timeout.
    Timeout {
        /// What was awaited.
        root: RootSpec,
        /// How long.
        secs: u64,
    },
    /// The device holds nothing we recognize and `rootfstype=` was not given.
    UnknownFs {
        /// Device node.
        device: String,
    },
    /// Not every member of a multi-device filesystem appeared.
    Members {
        /// Filesystem UUID.
        uuid: String,
        /// Devices the superblock counts.
        want: u64,
        /// Devices found.
        found: u64,
    },
    /// mount(2) refused.
    Mount {
        /// Device node.
        device: String,
        /// Filesystem type.
        fstype: String,
        /// Mount options.
        options: String,
        /// Where.
        target: String,
        /// The kernel's answer.
        errno: Errno,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Timeout { root, secs } => {
                write!(f, "root device {root} did not appear within {secs} s")
            }
            StorageError::Members { uuid, want, found } => write!(
                f,
                "btrfs {uuid} spans {want} devices but only {found} appeared"
            ),
            StorageError::UnknownFs { device } => write!(
                f,
                "no known filesystem on {device}; set rootfstype= if it is one stage0 cannot probe"
            ),
            StorageError::Mount {
                device,
                fstype,
                options,
                target,
                errno,
            } => {
                write!(
                    f,
                    "cannot mount {device} ({fstype}, options {options:?}) on {target}: {errno}"
                )?;
                if *errno == Errno::ENOENT && fstype == "btrfs" {
                    write!(f, " (does the subvolume exist?)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for StorageError {}

/// Whether block device `name` with identity `id` is the one `spec` asks for.
pub fn matches(spec: &RootSpec, name: &str, id: &Identity) -> bool {
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    match spec {
        RootSpec::Label(l) => id.label.as_deref() == Some(l.as_str()),
        RootSpec::Uuid(u) => eq(&id.uuid, u),
        RootSpec::PartUuid(u) => eq(&id.partuuid, u),
        RootSpec::PartLabel(l) => id.partlabel.as_deref() == Some(l.as_str()),
        RootSpec::Path(p) => p.strip_prefix("/dev/") == Some(name),
    }
}

/// The root's block device, found and ready to mount.
#[derive(Debug, Clone)]
pub struct RootDevice {
    /// Device node.
    pub device: String,
    /// Filesystem type.
    pub fstype: String,
    /// What probing found on it.
    pub id: Identity,
    /// Mount options every mount of it needs: for a multi-device btrfs, `device=` for
    /// each member (`rootflags=` and the subvolume are the root phase's).
    pub options: String,
}

/// Waits for the root device (bounded by `terra.timeout`), loads its filesystem and, for a
/// multi-device btrfs, waits for the other members.
pub fn find_root(cfg: &BootConfig, devices: &mut Devices) -> Result<RootDevice, StorageError> {
    let deadline = Instant::now() + cfg.timeout;
    log::info!(
        "waiting up to {} s for root {}",
        cfg.timeout.as_secs(),
        cfg.root
    );
    let (name, id) = devices
        .wait_for_block(deadline, |n, id| matches(&cfg.root, n, id))
        .ok_or_else(|| StorageError::Timeout {
            root: cfg.root.clone(),
            secs: cfg.timeout.as_secs(),
        })?;
    let device = format!("/dev/{name}");
    let fstype = match (&cfg.rootfstype, id.fstype) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.as_str().to_string(),
        (None, None) => return Err(StorageError::UnknownFs { device }),
    };
    log::info!("root {} is {device} ({fstype})", cfg.root);
    devices.finish_preloads();
    // Filesystem drivers register the alias fs-<type>; the module name is the fallback.
    if !devices.load(&format!("fs-{fstype}")) {
        devices.load(&fstype);
    }
    let mut options = String::new();
    if fstype == "btrfs" {
        // A multi-device btrfs mounts only once the kernel knows every member: wait for them
        // (bounded like the root itself) and name them in `device=` options.
        for member in btrfs_members(devices, &name, &id, deadline)? {
            options = join_options(&options, &format!("device=/dev/{member}"));
        }
    }
    Ok(RootDevice {
        device,
        fstype,
        id,
        options,
    })
}

/// Mounts `root` at `target` with its options plus `extra` (e.g. `subvol=v2`).
pub fn mount_at(
    root: &RootDevice,
    target: &str,
    extra: &str,
    read_only: bool,
) -> Result<RootReport, StorageError> {
    let options = join_options(&root.options, extra);
    let mut flags = MsFlags::empty();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let _ = std::fs::create_dir_all(target);
    mount(
        Some(root.device.as_str()),
        target,
        Some(root.fstype.as_str()),
        flags,
        Some(options.as_str()),
    )
    .map_err(|errno| StorageError::Mount {
        device: root.device.clone(),
        fstype: root.fstype.clone(),
        options: options.clone(),
        target: target.to_string(),
        errno,
    })?;
    Ok(RootReport {
        device: root.device.clone(),
        fstype: root.fstype.clone(),
        label: root.id.label.clone(),
        uuid: root.id.uuid.clone(),
        options,
        read_only,
    })
}

/// The other members of the btrfs filesystem on `name`, once all `id.devices` are present.
fn btrfs_members(
    devices: &mut Devices,
    name: &str,
    id: &Identity,
    deadline: Instant,
) -> Result<Vec<String>, StorageError> {
    let want = id.devices.unwrap_or(1);
    let same_fs = |n: &str, other: &Identity| {
        n != name && other.fstype == id.fstype && other.uuid.is_some() && other.uuid == id.uuid
    };
    if want > 1 {
        log::info!(
            "btrfs {} spans {want} devices; waiting for them",
            id.uuid.as_deref().unwrap_or("?")
        );
        let count = |d: &Devices| 1 + d.blocks.iter().filter(|(n, o)| same_fs(n, o)).count() as u64;
        while count(devices) < want {
            if Instant::now() >= deadline {
                return Err(StorageError::Members {
                    uuid: id.uuid.clone().unwrap_or_default(),
                    want,
                    found: count(devices),
                });
            }
            devices.pump(std::time::Duration::from_millis(50));
            devices.scan_blocks();
        }
    }
    Ok(devices
        .blocks
        .iter()
        .filter(|(n, o)| same_fs(n, o))
        .map(|(n, _)| n.clone())
        .collect())
}

/// `a,b`, either of them possibly empty.
pub fn join_options(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a},{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_specs_match_identities() {
        let id = Identity {
            label: Some("os".into()),
            uuid: Some("0A1B2C3D-0000-4000-8000-000000000001".into()),
            partuuid: Some("5bb2ab23-01".into()),
            partlabel: Some("root".into()),
            ..Default::default()
        };
        assert!(matches(&RootSpec::Label("os".into()), "vda", &id));
        assert!(!matches(&RootSpec::Label("OS".into()), "vda", &id));
        assert!(matches(
            &RootSpec::Uuid("0a1b2c3d-0000-4000-8000-000000000001".into()),
            "vda",
            &id
        ));
        assert!(matches(
            &RootSpec::PartUuid("5BB2AB23-01".into()),
            "vda1",
            &id
        ));
        assert!(matches(&RootSpec::PartLabel("root".into()), "vda1", &id));
        assert!(matches(&RootSpec::Path("/dev/vdb".into()), "vdb", &id));
        assert!(!matches(&RootSpec::Path("/dev/vdb".into()), "vda", &id));
        assert!(!matches(
            &RootSpec::Label("os".into()),
            "vdb",
            &Identity::default()
        ));
    }
}
