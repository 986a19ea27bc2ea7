//! GPT (UEFI spec §5.3): PARTUUID and PARTLABEL from a checked header and entry array.

use std::io::{self, Read, Seek, SeekFrom};

use super::bytes::*;
use super::Identity;

/// The 32-bit CRC of IEEE 802.3 (reflected, polynomial 0xEDB88320) that GPT uses.
pub(super) fn crc32(data: &[u8]) -> u32 {
    crate::crc::IEEE.checksum(data)
}

/// Caps on a GPT header's claims, so a hostile one cannot make us read megabytes.
const GPT_MAX_ENTRIES: u32 = 1024;
const GPT_ENTRY_SIZES: std::ops::RangeInclusive<u32> = 128..=4096;

/// A GPT header (UEFI spec §5.3.2) whose header CRC held, with its entry array read.
struct Gpt {
    entry_size: usize,
    entries: Vec<u8>,
}

impl Gpt {
    /// Reads and checks the header at `lba` and its partition entry array.
    fn read<R: Read + Seek>(disk: &mut R, lba: u64, ss: u64) -> io::Result<Option<Gpt>> {
        let Some(off) = lba.checked_mul(ss) else {
            return Ok(None);
        };
        let hdr = read_at(disk, off, ss as usize)?;
        let Some((entries_lba, count, size, array_crc)) = Self::check_header(&hdr, lba) else {
            return Ok(None);
        };
        let len = count as usize * size as usize;
        let Some(off) = entries_lba.checked_mul(ss) else {
            return Ok(None);
        };
        let entries = read_at(disk, off, len)?;
        if entries.len() != len || crc32(&entries) != array_crc {
            return Ok(None);
        }
        Ok(Some(Gpt {
            entry_size: size as usize,
            entries,
        }))
    }

    /// (PartitionEntryLBA, NumberOfPartitionEntries, SizeOfPartitionEntry,
    /// PartitionEntryArrayCRC32) of a header that is what it claims to be.
    fn check_header(hdr: &[u8], lba: u64) -> Option<(u64, u32, u32, u32)> {
        // Signature "EFI PART" at 0
        if bytes(hdr, 0, 8)? != b"EFI PART" {
            return None;
        }
        // HeaderSize le32 at 0x0C; HeaderCRC32 le32 at 0x10, computed with itself zeroed
        let size = le32(hdr, 0x0C)? as usize;
        if size < 92 {
            return None;
        }
        let mut copy = bytes(hdr, 0, size)?.to_vec();
        let crc_field = copy.get_mut(0x10..0x14)?;
        crc_field.fill(0);
        if crc32(&copy) != le32(hdr, 0x10)? {
            return None;
        }
        // MyLBA le64 at 0x18: a header copied elsewhere is not this disk's
        if le64(hdr, 0x18)? != lba {
            return None;
        }
        let entries_lba = le64(hdr, 0x48)?; // PartitionEntryLBA
        let count = le32(hdr, 0x50)?; // NumberOfPartitionEntries
        let size = le32(hdr, 0x54)?; // SizeOfPartitionEntry
        if count == 0 || count > GPT_MAX_ENTRIES || !GPT_ENTRY_SIZES.contains(&size) {
            return None;
        }
        Some((entries_lba, count, size, le32(hdr, 0x58)?))
    }
}

pub(super) fn entry<R: Read + Seek>(
    disk: &mut R,
    partno: u32,
    ss: u64,
) -> io::Result<Option<Identity>> {
    // The primary header at LBA 1, else the backup in the disk's last LBA (UEFI §5.3.2: a
    // primary that fails its checks is replaced by the backup).
    let gpt = match Gpt::read(disk, 1, ss)? {
        Some(g) => g,
        None => {
            let last = disk.seek(SeekFrom::End(0))? / ss;
            match last.checked_sub(1) {
                Some(lba) if lba > 1 => match Gpt::read(disk, lba, ss)? {
                    Some(g) => g,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
    };
    // Linux numbers GPT partitions by entry index + 1, unused entries included.
    let Some(entry) = (partno as usize)
        .checked_sub(1)
        .and_then(|index| index.checked_mul(gpt.entry_size))
        .and_then(|off| bytes(&gpt.entries, off, gpt.entry_size))
    else {
        return Ok(None);
    };
    // PartitionTypeGUID at 0: all zero is an unused entry
    let type_guid: [u8; 16] = array(entry, 0).unwrap_or_default();
    if type_guid.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    // UniquePartitionGUID at 16; PartitionName at 56, 36 UTF-16LE units, NUL-padded
    let partuuid = array(entry, 16).and_then(|g| guid_string(&g));
    let name: Vec<u16> = bytes(entry, 56, 72)
        .unwrap_or_default()
        .chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_le_bytes)
        .take_while(|&u| u != 0)
        .collect();
    let partlabel = Some(String::from_utf16_lossy(&name)).filter(|s| !s.is_empty());
    Ok(Some(Identity {
        partuuid,
        partlabel,
        ..Identity::default()
    }))
}
