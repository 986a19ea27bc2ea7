//! MBR (msdos) partition tables with EBR chains, numbered as Linux numbers them.

use std::io::{self, Read, Seek};

use super::bytes::*;
use super::Identity;

/// One 16-byte MBR/EBR partition entry: type at +4, starting LBA le32 at +8, sectors le32
/// at +12.
#[derive(Clone, Copy)]
struct MbrEntry {
    kind: u8,
    start: u32,
    sectors: u32,
}

/// The MBR or an EBR: four entries and the disk signature.
pub(super) struct Mbr {
    disk_signature: u32,
    entries: [MbrEntry; 4],
}

impl Mbr {
    /// A protective (or hybrid) MBR, with an entry of type 0xEE: the real table is the GPT.
    pub(super) fn protects_gpt(&self) -> bool {
        self.entries.iter().any(|e| e.kind == 0xEE)
    }

    /// The MBR or an EBR: entries at 446, 0x55AA at 510.
    pub(super) fn parse(sector: &[u8]) -> Option<Mbr> {
        if le16(sector, 510)? != 0xAA55 {
            return None;
        }
        let mut entries = [MbrEntry {
            kind: 0,
            start: 0,
            sectors: 0,
        }; 4];
        for (i, e) in entries.iter_mut().enumerate() {
            let raw = bytes(sector, 446 + 16 * i, 16)?;
            // boot indicator at +0 is 0x00 or 0x80 in a partition table; anything else is
            // boot code of a sector that only looks like one (a FAT boot sector)
            if !matches!(u8_at(raw, 0)?, 0x00 | 0x80) {
                return None;
            }
            *e = MbrEntry {
                kind: u8_at(raw, 4)?,
                start: le32(raw, 8)?,
                sectors: le32(raw, 12)?,
            };
        }
        Some(Mbr {
            // the disk signature le32 at 440 (Windows NT's, used for PARTUUID)
            disk_signature: le32(sector, 440)?,
            entries,
        })
    }
}

fn is_extended(kind: u8) -> bool {
    // DOS extended (0x05), Windows LBA extended (0x0F), Linux extended (0x85)
    matches!(kind, 0x05 | 0x0F | 0x85)
}

/// Linux's numbering (block/partitions/msdos.c): primaries are 1-4 by slot, empty slots
/// (no sectors) skipped but counted; logical partitions are numbered from 5 in the order
/// of the EBR chains of the extended primaries.
pub(super) fn entry<R: Read + Seek>(
    disk: &mut R,
    mbr: &Mbr,
    partno: u32,
    ss: u64,
) -> io::Result<Option<Identity>> {
    // blkid formats PARTUUID as "%08x-%02x" and gives none without a disk signature
    let found = |n: u32| {
        Some(Identity {
            partuuid: (mbr.disk_signature != 0)
                .then(|| format!("{:08x}-{:02x}", mbr.disk_signature, n)),
            ..Identity::default()
        })
    };
    if partno <= 4 {
        let slot = (partno as usize)
            .checked_sub(1)
            .and_then(|i| mbr.entries.get(i));
        return Ok(slot.filter(|e| e.sectors != 0).and_then(|_| found(partno)));
    }
    let mut next_number = 5u32;
    for ext in mbr
        .entries
        .iter()
        .filter(|e| is_extended(e.kind) && e.sectors != 0)
    {
        let ext_start = u64::from(ext.start);
        let mut ebr_lba = ext_start;
        // a chain that loops, or one longer than Linux's partition limit, ends here
        for _ in 0..256 {
            let Some(off) = ebr_lba.checked_mul(ss) else {
                break;
            };
            let Some(ebr) = Mbr::parse(&read_at(disk, off, 512)?) else {
                break;
            };
            for e in &ebr.entries {
                if e.sectors == 0 || is_extended(e.kind) {
                    continue;
                }
                if next_number == partno {
                    return Ok(found(partno));
                }
                next_number += 1;
            }
            // the link to the next EBR, relative to the start of the extended partition
            match ebr
                .entries
                .iter()
                .find(|e| is_extended(e.kind) && e.sectors != 0)
            {
                Some(link) => ebr_lba = ext_start + u64::from(link.start),
                None => break,
            }
        }
    }
    Ok(None)
}
