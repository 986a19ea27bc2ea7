//! `terra initramfs --host`: only the drivers of the machine the image is for, as
//! `dracut --hostonly` and booster's host mode do, typically a fraction of the size.
//!
//! The machine is described by its sysfs (`/sys`, or a copy of another machine's): every
//! `modalias` file under `devices/`. Of the requested modules, a *device driver* (a module
//! with an alias on a device bus: `pci:`, `usb:`, `virtio:`, `scsi:`, `acpi`, `cpu:`…) is
//! kept only when one of those modaliases matches it; every other module (filesystems,
//! protocols such as `iscsi_tcp`, `bonding`, crypto) is kept as requested. Dependencies
//! follow from the kept set as always. A device that is not present when the image is built
//! (a USB stick plugged in later, a NIC added) gets no driver; the image's driver-hints table
//! still names the module stage0 would need.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use terra_init::modindex::{normalize, ModuleIndex};

/// Alias prefixes that name a device (a bus or a firmware table) rather than a
/// filesystem, protocol or algorithm.
pub const DEVICE_BUSES: &[&str] = &[
    "pci:",
    "usb:",
    "virtio:",
    "vmbus:",
    "xen:",
    "scsi:",
    "acpi",
    "platform:",
    "of:",
    "hid:",
    "mmc:",
    "sdio:",
    "serio:",
    "input:",
    "cpu:",
    "i2c:",
    "spi:",
    "pnp:",
    "ccw:",
    "ieee1394:",
    "pcmcia:",
    "eisa:",
    "nd:",
    "mdio:",
    "mhi:",
    "ishtp:",
    "typec:",
];

/// Reading the machine's devices failed.
#[derive(Debug)]
pub enum HostError {
    /// `devices/` is missing or unreadable under the sysfs given.
    NoDevices { path: PathBuf, err: std::io::Error },
    /// Not one modalias was found: not a sysfs, or an empty copy.
    NoModaliases { path: PathBuf },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NoDevices { path, err } => write!(
                f,
                "cannot read the machine's devices in {}: {err} (--host reads /sys/devices; \
                 --host-sysfs DIR names another machine's copy)",
                path.display()
            ),
            HostError::NoModaliases { path } => write!(
                f,
                "no device in {} has a modalias: is it a sysfs (a copy needs \
                 devices/**/modalias)?",
                path.display()
            ),
        }
    }
}

impl std::error::Error for HostError {}

/// Every distinct modalias under `sysfs/devices`, sorted. Symbolic links are not followed
/// (sysfs links every device from several places, some in cycles).
pub fn scan(sysfs: &Path) -> Result<Vec<String>, HostError> {
    let root = sysfs.join("devices");
    let mut found = BTreeSet::new();
    let mut stack = vec![root.clone()];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(err) if first => return Err(HostError::NoDevices { path: root, err }),
            // A device that went away, or an attribute directory the kernel refuses to list.
            Err(_) => continue,
        };
        first = false;
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() && e.file_name() == "modalias" {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    let alias = text.trim();
                    if !alias.is_empty() {
                        found.insert(alias.to_string());
                    }
                }
            }
        }
    }
    if found.is_empty() {
        return Err(HostError::NoModaliases {
            path: sysfs.to_path_buf(),
        });
    }
    Ok(found.into_iter().collect())
}

/// What `--host` made of a module list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The requested modules to pack, in request order.
    pub kept: Vec<String>,
    /// Requested device drivers that no device of the machine uses, in request order.
    pub dropped: Vec<String>,
}

/// The modules that drive a device: those with an alias on one of [`DEVICE_BUSES`]
/// (normalized names; one pass over modules.alias).
pub fn device_drivers(index: &ModuleIndex) -> BTreeSet<&str> {
    index
        .aliases()
        .iter()
        .filter(|(pattern, _)| DEVICE_BUSES.iter().any(|b| pattern.starts_with(b)))
        .map(|(_, m)| m.as_str())
        .collect()
}

/// Splits `wanted` into what the machine with `modaliases` uses and what it does not: a
/// device driver no modalias matches is left out, and so is a module that depends on one
/// (`mlx4_en` has no alias of its own; `mlx4_core`, which it needs, drives the PCI device).
pub fn select(index: &ModuleIndex, wanted: &[String], modaliases: &[String]) -> Selection {
    let used: BTreeSet<String> = modaliases.iter().flat_map(|a| index.resolve(a)).collect();
    let drivers = device_drivers(index);
    let unused_driver = |m: &str| !used.contains(m) && drivers.contains(m);
    let mut s = Selection::default();
    for m in wanted {
        let name = normalize(m);
        let needs_unused = index
            .deps(&name)
            .is_some_and(|deps| deps.iter().any(|d| unused_driver(d)));
        if unused_driver(&name) || needs_unused {
            s.dropped.push(m.clone());
        } else {
            s.kept.push(m.clone());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIAS: &str = "\
alias virtio:d00000002v* virtio_blk
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v0000144Dd*sv*sd*bc01sc08i02* nvme
alias scsi:t-0x00* sd_mod
alias fs-btrfs btrfs
alias devname:btrfs-control btrfs
alias crypto-crc32c crc32c_generic
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias pci:v000015B3d00001003sv*sd*bc*sc*i* mlx4_core
";

    fn index() -> ModuleIndex {
        let dep = "kernel/a/virtio_blk.ko:\nkernel/a/virtio_pci.ko:\nkernel/a/e1000.ko:\n\
                   kernel/a/nvme.ko:\nkernel/a/sd_mod.ko:\nkernel/a/btrfs.ko:\n\
                   kernel/a/crc32c_generic.ko:\nkernel/a/crc32c-intel.ko:\n\
                   kernel/a/iscsi_tcp.ko:\nkernel/a/mlx4_core.ko:\n\
                   kernel/a/mlx4_en.ko: kernel/a/mlx4_core.ko\n";
        ModuleIndex::parse(dep, ALIAS, "", "")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn drivers_of_absent_devices_are_dropped_and_the_rest_kept() {
        let wanted = names(&[
            "virtio_blk",
            "virtio_pci",
            "e1000",
            "nvme",
            "sd_mod",
            "btrfs",
            "crc32c_generic",
            "crc32c-intel",
            "iscsi_tcp",
            "mlx4_en",
        ]);
        let host = names(&[
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            "virtio:d00000002v00001AF4",
            "cpu:type:x86,ven0002fam000Fmod006B:feature:,0000,0001,0094,00E5",
        ]);
        let s = select(&index(), &wanted, &host);
        assert_eq!(
            s.kept,
            names(&[
                "virtio_blk",
                "virtio_pci",
                "btrfs",
                "crc32c_generic",
                "crc32c-intel",
                "iscsi_tcp"
            ])
        );
        assert_eq!(s.dropped, names(&["e1000", "nvme", "sd_mod", "mlx4_en"]));
    }

    #[test]
    fn scan_reads_modaliases_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("devices/pci0000:00/0000:00:04.0");
        std::fs::create_dir_all(dev.join("virtio1")).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00001AF4d00001001\n").unwrap();
        std::fs::write(dev.join("virtio1/modalias"), "virtio:d00000002v00001AF4\n").unwrap();
        // Same alias twice, an empty one, and a link back up (a cycle if followed).
        let other = t.path().join("devices/platform/x");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("modalias"), "virtio:d00000002v00001AF4\n").unwrap();
        std::fs::write(t.path().join("devices/platform/modalias"), "\n").unwrap();
        std::os::unix::fs::symlink(t.path().join("devices"), other.join("loop")).unwrap();
        assert_eq!(
            scan(t.path()).unwrap(),
            names(&["pci:v00001AF4d00001001", "virtio:d00000002v00001AF4"])
        );
    }

    #[test]
    fn a_missing_or_empty_sysfs_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let err = scan(t.path()).unwrap_err().to_string();
        assert!(
            err.contains("devices") && err.contains("--host-sysfs"),
            "{err}"
        );
        std::fs::create_dir_all(t.path().join("devices/virtual")).unwrap();
        let err = scan(t.path()).unwrap_err().to_string();
        assert!(
            err.contains("no device") && err.contains(&t.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn this_machines_sysfs_has_modaliases() {
        // Every Linux machine with a PCI bus or a CPU has some; the test runs on one.
        let found = scan(Path::new("/sys")).unwrap();
        assert!(
            found
                .iter()
                .any(|a| a.starts_with("cpu:") || a.starts_with("pci:")),
            "{found:?}"
        );
    }
}
