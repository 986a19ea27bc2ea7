//! Driver hints: which module the full kernel would load for a storage or network device
//! that this initramfs has no driver for, so a failed boot names it (`PCI 0000:00:01.1 IDE
//! controller [8086:7010] needs ata_piix — not in this initramfs`). The builder writes the
//! table (names only, no `.ko`) from the kernel's whole `modules.alias`; stage0 reads it
//! only when the boot fails. Wire format without I/O, plus the sysfs description.

use std::fs;
use std::path::Path;

use crate::modindex::glob_match;

/// Where the table sits in the initramfs (one `<modalias pattern> <module>` per line).
pub const HINTS_FILE: &str = "etc/terra/driver-hints";

/// Module directories (relative to `lib/modules/<kver>`) whose drivers are for the devices
/// a root or its network needs: disk controllers, NICs, and the buses they sit on.
pub const DRIVER_DIRS: &[&str] = &[
    "kernel/drivers/ata/",
    "kernel/drivers/scsi/",
    "kernel/drivers/nvme/",
    "kernel/drivers/block/",
    "kernel/drivers/md/",
    "kernel/drivers/message/",
    "kernel/drivers/mmc/",
    "kernel/drivers/usb/storage/",
    "kernel/drivers/usb/host/",
    "kernel/drivers/net/",
    "kernel/drivers/virtio/",
    "kernel/drivers/hv/",
    "kernel/drivers/xen/",
];

/// Directories under [`DRIVER_DIRS`] whose devices never carry a root or a boot network
/// (radios, CAN buses): left out to keep the table small.
pub const EXCLUDED_DIRS: &[&str] = &[
    "kernel/drivers/net/wireless/",
    "kernel/drivers/net/can/",
    "kernel/drivers/net/ieee802154/",
    "kernel/drivers/net/wwan/",
];

/// Whether a module at `path` (relative to `lib/modules/<kver>`) belongs in the table.
pub fn wanted_driver(path: &str) -> bool {
    DRIVER_DIRS.iter().any(|d| path.starts_with(d))
        && !EXCLUDED_DIRS.iter().any(|d| path.starts_with(d))
}

/// Buses whose modaliases the table keeps.
pub const BUSES: &[&str] = &["pci:", "virtio:", "usb:", "vmbus:", "xen:"];

/// The parsed table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints(Vec<(String, String)>);

impl Hints {
    /// Reads the table; malformed lines are skipped.
    pub fn parse(text: &str) -> Hints {
        Hints(
            text.lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let (p, m) = (w.next()?, w.next()?);
                    Some((p.to_string(), m.to_string()))
                })
                .collect(),
        )
    }

    /// Writes the table in [`Hints::parse`]'s format.
    pub fn render(entries: &[(String, String)]) -> String {
        entries.iter().map(|(p, m)| format!("{p} {m}\n")).collect()
    }

    /// The module the full kernel would load for `modalias`.
    pub fn lookup(&self, modalias: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, _)| glob_match(p.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.as_str())
    }
}

/// What a PCI class code (the top 16 bits of sysfs `class`) is, for the classes the table
/// is about.
fn pci_class_name(class: u32) -> Option<&'static str> {
    Some(match class >> 8 {
        0x0100 => "SCSI controller",
        0x0101 => "IDE controller",
        0x0104 => "RAID controller",
        0x0105 => "ATA controller",
        0x0106 => "SATA controller",
        0x0107 => "SAS controller",
        0x0108 => "NVMe controller",
        0x0200 => "Ethernet controller",
        0x0207 => "InfiniBand controller",
        0x0c03 => "USB controller",
        _ => return None,
    })
}

/// How a device directory under `/sys/bus/<bus>/devices/` is named to people:
/// `PCI 0000:00:01.1 IDE controller [8086:7010]`, or `<BUS> <name>`.
pub fn describe(device: &Path) -> String {
    let name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bus = device
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|b| b.to_string_lossy().to_uppercase())
        .unwrap_or_else(|| "device".into());
    let read = |f: &str| {
        fs::read_to_string(device.join(f))
            .ok()
            .map(|s| s.trim().trim_start_matches("0x").to_string())
    };
    if bus == "PCI" {
        let class = read("class")
            .and_then(|c| u32::from_str_radix(&c, 16).ok())
            .and_then(pci_class_name)
            .unwrap_or("device");
        if let (Some(v), Some(d)) = (read("vendor"), read("device")) {
            return format!("PCI {name} {class} [{v}:{d}]");
        }
        return format!("PCI {name} {class}");
    }
    format!("{bus} {name}")
}

/// The lines a failed boot prints for devices without a driver that the table knows.
pub fn missing_drivers(hints: &Hints, unmatched: &[(std::path::PathBuf, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (device, alias) in unmatched {
        if let Some(m) = hints.lookup(alias) {
            let line = format!(
                "{} needs {m} — not in this initramfs; add it with --module {m}",
                describe(device)
            );
            if !out.contains(&line) {
                out.push(line);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pci_ide_controller_is_named_with_its_driver() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("bus/pci/devices/0000:00:01.1");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("class"), "0x010180\n").unwrap();
        fs::write(dev.join("vendor"), "0x8086\n").unwrap();
        fs::write(dev.join("device"), "0x7010\n").unwrap();
        let hints = Hints::parse(&Hints::render(&[
            (
                "pci:v00008086d00007010sv*sd*bc*sc*i*".into(),
                "ata_piix".into(),
            ),
            ("virtio:d00000001v*".into(), "virtio_net".into()),
        ]));
        let alias = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80".to_string();
        assert_eq!(hints.lookup(&alias), Some("ata_piix"));
        let lines = missing_drivers(
            &hints,
            &[
                (dev.clone(), alias.clone()),
                (dev.clone(), alias),
                (
                    t.path().join("bus/pci/devices/0000:00:02.0"),
                    "pci:v00001234d00001111sv*".into(),
                ),
            ],
        );
        assert_eq!(
            lines,
            [
                "PCI 0000:00:01.1 IDE controller [8086:7010] needs ata_piix — not in this \
              initramfs; add it with --module ata_piix"
            ]
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let h = Hints::parse("onlyone\n\npci:v* e1000\n");
        assert_eq!(h.lookup("pci:v00008086"), Some("e1000"));
        assert_eq!(Hints::parse("garbage").lookup("x"), None);
    }
}
