//! FAT12/16/32 (vfat): the boot sector's BPB and the root directory's label entry.

use std::io::{self, Read, Seek};

use super::bytes::*;
use super::{FsType, Identity};

/// The parts of a FAT boot sector (Microsoft FAT specification, "BPB") needed here.
pub(super) struct FatBoot {
    sector_size: u64,
    reserved_sectors: u64,
    fat_count: u64,
    cluster_sectors: u64,
    /// FAT12/16 only: entries in the fixed root directory.
    root_entries: u64,
    kind: FatKind,
    serial: Option<u32>,
    boot_label: Option<[u8; 11]>,
}

enum FatKind {
    /// FAT12/16: sectors per FAT; the root directory follows the FATs.
    Fat16 { fat_sectors: u64 },
    /// FAT32: sectors per FAT; the root directory is a cluster chain.
    Fat32 { fat_sectors: u64, root_cluster: u32 },
}

const FAT_NO_NAME: &[u8; 11] = b"NO NAME    ";

impl FatBoot {
    pub(super) fn parse(bs: &[u8]) -> Option<FatBoot> {
        // signature 0x55 0xAA at 510
        if le16(bs, 510)? != 0xAA55 {
            return None;
        }
        // BS_FilSysType at 0x52 (FAT32) or 0x36 (FAT12/16), as blkid matches them
        let fat32_magic =
            matches!(bytes(bs, 0x52, 8)?, b"FAT32   ") || bytes(bs, 0x52, 5)? == b"MSWIN";
        let fat16_magic = bytes(bs, 0x36, 3)? == b"FAT" || bytes(bs, 0x36, 5)? == b"MSDOS";
        if !fat32_magic && !fat16_magic {
            return None;
        }
        // The BPB must be sane before any of it is believed.
        let sector_size = le16(bs, 0x0B)?; // BPB_BytsPerSec
        let cluster_sectors = u8_at(bs, 0x0D)?; // BPB_SecPerClus
        let reserved = le16(bs, 0x0E)?; // BPB_RsvdSecCnt
        let fats = u8_at(bs, 0x10)?; // BPB_NumFATs
        let root_entries = le16(bs, 0x11)?; // BPB_RootEntCnt
        let media = u8_at(bs, 0x15)?; // BPB_Media
        if !sector_size.is_power_of_two()
            || !(512..=4096).contains(&sector_size)
            || !cluster_sectors.is_power_of_two()
            || reserved == 0
            || fats == 0
            || !(media >= 0xF8 || media == 0xF0)
        {
            return None;
        }
        let fat16_len = le16(bs, 0x16)?; // BPB_FATSz16, zero on FAT32
        let (kind, serial, boot_label) = if fat16_len != 0 {
            // BS_BootSig at 0x26: 0x29 means BS_VolID (0x27) and BS_VolLab (0x2B) follow;
            // 0x28 (DOS 4.0) has the serial only.
            let sig = u8_at(bs, 0x26)?;
            let serial = if sig == 0x28 || sig == 0x29 {
                Some(le32(bs, 0x27)?)
            } else {
                None
            };
            let label = if sig == 0x29 {
                Some(array(bs, 0x2B)?)
            } else {
                None
            };
            let kind = FatKind::Fat16 {
                fat_sectors: u64::from(fat16_len),
            };
            (kind, serial, label)
        } else {
            let fat32_len = le32(bs, 0x24)?; // BPB_FATSz32
            if fat32_len == 0 {
                return None;
            }
            // BS_VolID at 0x43; BS_VolLab at 0x47 when BS_BootSig (0x42) is 0x29
            let label = if u8_at(bs, 0x42)? == 0x29 {
                Some(array(bs, 0x47)?)
            } else {
                None
            };
            let kind = FatKind::Fat32 {
                fat_sectors: u64::from(fat32_len),
                root_cluster: le32(bs, 0x2C)?, // BPB_RootClus
            };
            (kind, Some(le32(bs, 0x43)?), label)
        };
        Some(FatBoot {
            sector_size: u64::from(sector_size),
            reserved_sectors: u64::from(reserved),
            fat_count: u64::from(fats),
            cluster_sectors: u64::from(cluster_sectors),
            root_entries: u64::from(root_entries),
            kind,
            serial,
            boot_label,
        })
    }
}

/// What a scan of root directory entries found.
enum DirScan {
    Label([u8; 11]),
    /// The end-of-directory marker: no label anywhere.
    End,
    /// Not in these entries; the directory goes on.
    More,
}

/// Looks for the volume-label entry among 32-byte directory entries (FAT spec, "Directory
/// Structure"): DIR_Name[11] at 0, DIR_Attr at 11, DIR_FstClusHI at 20, DIR_FstClusLO at 26.
fn scan_fat_dir(dir: &[u8]) -> DirScan {
    const ATTR_VOLUME_ID: u8 = 0x08;
    const ATTR_DIRECTORY: u8 = 0x10;
    const ATTR_LONG_NAME: u8 = 0x0F;
    for entry in dir.chunks_exact(32) {
        let (Some(first), Some(attr)) = (u8_at(entry, 0), u8_at(entry, 11)) else {
            break;
        };
        match first {
            0x00 => return DirScan::End,
            0xE5 => continue, // deleted
            _ => {}
        }
        // Long-name pieces carry the volume bit too; a label owns no clusters.
        if attr & 0x3F == ATTR_LONG_NAME || le16(entry, 20) != Some(0) || le16(entry, 26) != Some(0)
        {
            continue;
        }
        if attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY) == ATTR_VOLUME_ID {
            if let Some(mut name) = array::<11>(entry, 0) {
                // 0x05 stands for a leading 0xE5 (which would mean "deleted")
                if name.first() == Some(&0x05) {
                    if let Some(b) = name.first_mut() {
                        *b = 0xE5;
                    }
                }
                return DirScan::Label(name);
            }
        }
    }
    DirScan::More
}

/// Bounds on what a hostile BPB can make us read while looking for the label.
const FAT_MAX_DIR_BYTES: u64 = 4 << 20;
const FAT_MAX_CLUSTERS: u32 = 100;

/// The label entry of the root directory, which is what blkid reports as LABEL (and what
/// `fatlabel` and Windows change); `None` when there is none or it cannot be reached.
fn fat_root_label<R: Read + Seek>(dev: &mut R, b: &FatBoot) -> io::Result<Option<[u8; 11]>> {
    let sector = |n: u64| n.checked_mul(b.sector_size);
    match b.kind {
        FatKind::Fat16 { fat_sectors } => {
            // the root directory follows the reserved sectors and the FATs
            let Some(start) = b
                .fat_count
                .checked_mul(fat_sectors)
                .and_then(|f| f.checked_add(b.reserved_sectors))
                .and_then(sector)
            else {
                return Ok(None);
            };
            let len = (b.root_entries * 32).min(FAT_MAX_DIR_BYTES);
            let dir = read_at(dev, start, len as usize)?;
            Ok(match scan_fat_dir(&dir) {
                DirScan::Label(l) => Some(l),
                DirScan::End | DirScan::More => None,
            })
        }
        FatKind::Fat32 {
            fat_sectors,
            root_cluster,
        } => {
            let Some(data_start) = b
                .fat_count
                .checked_mul(fat_sectors)
                .and_then(|f| f.checked_add(b.reserved_sectors))
            else {
                return Ok(None);
            };
            let cluster_bytes = b.cluster_sectors * b.sector_size;
            // FAT entries are 4 bytes; cluster numbers past the FAT are garbage
            let fat_entries = fat_sectors.saturating_mul(b.sector_size) / 4;
            let mut next = root_cluster;
            let mut read = 0;
            for _ in 0..FAT_MAX_CLUSTERS {
                // clusters 0 and 1 are reserved; data clusters are numbered from 2
                if next < 2 || u64::from(next) >= fat_entries || read >= FAT_MAX_DIR_BYTES {
                    break;
                }
                let Some(off) = (u64::from(next) - 2)
                    .checked_mul(b.cluster_sectors)
                    .and_then(|c| c.checked_add(data_start))
                    .and_then(sector)
                else {
                    break;
                };
                let dir = read_at(dev, off, cluster_bytes as usize)?;
                read += cluster_bytes;
                match scan_fat_dir(&dir) {
                    DirScan::Label(l) => return Ok(Some(l)),
                    DirScan::End => break,
                    DirScan::More => {}
                }
                // the FAT, right after the reserved sectors, links the chain
                let Some(entry_off) =
                    sector(b.reserved_sectors).and_then(|f| f.checked_add(u64::from(next) * 4))
                else {
                    break;
                };
                match le32(&read_at(dev, entry_off, 4)?, 0) {
                    Some(n) => next = n & 0x0FFF_FFFF,
                    None => break,
                }
            }
            Ok(None)
        }
    }
}

pub(super) fn fat_identity<R: Read + Seek>(dev: &mut R, b: &FatBoot) -> io::Result<Identity> {
    let named = |l: &[u8; 11]| l != FAT_NO_NAME;
    // mkfs.fat -n writes the label in both places; tools that relabel may update only the
    // root directory, which is where blkid takes LABEL from. The boot sector is the
    // fallback (blkid reports it only as LABEL_FATBOOT).
    let root = fat_root_label(dev, b)?.filter(named);
    let label = root
        .or(b.boot_label.filter(named))
        .and_then(|l| text_label(&l));
    Ok(Identity {
        fstype: Some(FsType::Vfat),
        label,
        uuid: b
            .serial
            .map(|id| format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
        ..Identity::default()
    })
}
