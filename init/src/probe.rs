//! Superblock probing (ARCHITECTURE.md §2, phase 3 "devices"): stage0 has no udev and no blkid, so
//! it tells block devices apart by reading their bytes. Filesystems (btrfs, ext2/3/4, vfat,
//! iso9660, squashfs) give TYPE, LABEL and UUID; the parent disk's partition table (GPT or
//! MBR) gives PARTUUID and PARTLABEL. Values are formatted as blkid formats them, so that a
//! `root=LABEL=…`/`UUID=…`/`PARTUUID=…` written against a running system matches here.
//!
//! Parsing works on byte slices with named offsets; the only I/O is `read_at`, plus the
//! few reads that depend on what was parsed (a FAT root directory, a partition entry array).
//! Every field access is bounds-checked: a short or hostile device yields "not recognized",
//! never a panic.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A filesystem stage0 can recognize, named as mount(2) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Btrfs,
    /// ext2, ext3 and ext4 alike: the ext4 driver mounts all three.
    Ext4,
    Vfat,
    Iso9660,
    Squashfs,
}

impl FsType {
    /// The filesystem type argument of mount(2).
    pub fn as_str(&self) -> &'static str {
        match self {
            FsType::Btrfs => "btrfs",
            FsType::Ext4 => "ext4",
            FsType::Vfat => "vfat",
            FsType::Iso9660 => "iso9660",
            FsType::Squashfs => "squashfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a block device says about itself. Every field is `None` when absent or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub fstype: Option<FsType>,
    pub label: Option<String>,
    /// blkid's formatting: lowercase 8-4-4-4-12 (btrfs, ext4), `XXXX-XXXX` (vfat),
    /// `YYYY-MM-DD-HH-MM-SS-cc` (iso9660, from the volume's modification or creation date).
    pub uuid: Option<String>,
    /// GPT: the unique partition GUID, lowercase. MBR: `<disk signature>-<partition number>`.
    pub partuuid: Option<String>,
    /// GPT partition name.
    pub partlabel: Option<String>,
    /// How many devices the filesystem spans (btrfs `num_devices`); None when it cannot span.
    pub devices: Option<u64>,
}

/// Why a device could not be probed; each variant names the path it failed on.
#[derive(Debug)]
pub enum ProbeError {
    Open { path: PathBuf, err: io::Error },
    Read { path: PathBuf, err: io::Error },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Open { path, err } => write!(f, "cannot open {}: {err}", path.display()),
            ProbeError::Read { path, err } => write!(f, "cannot read {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Open { err, .. } | ProbeError::Read { err, .. } => Some(err),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checked views over bytes.

fn bytes(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

fn array<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    bytes(buf, off, N)?.try_into().ok()
}

fn u8_at(buf: &[u8], off: usize) -> Option<u8> {
    buf.get(off).copied()
}

fn le16(buf: &[u8], off: usize) -> Option<u16> {
    array(buf, off).map(u16::from_le_bytes)
}

fn le32(buf: &[u8], off: usize) -> Option<u32> {
    array(buf, off).map(u32::from_le_bytes)
}

fn le64(buf: &[u8], off: usize) -> Option<u64> {
    array(buf, off).map(u64::from_le_bytes)
}

/// Reads up to `len` bytes at `offset`; fewer (possibly none) when the device ends first.
/// A short read is not an error: it only means the structure looked for is not there.
fn read_at<R: Read + Seek>(dev: &mut R, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    // lseek(2) refuses offsets past i64::MAX; such an offset (from a hostile on-disk
    // field) lies past the end of any device.
    if i64::try_from(offset).is_err() {
        return Ok(Vec::new());
    }
    dev.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    dev.by_ref().take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// blkid's label rules: stop at the first NUL, drop trailing whitespace, empty is absent.
fn text_label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(raw.get(..end)?);
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// A UUID stored in byte order (btrfs, ext4), as lowercase 8-4-4-4-12; all zeros is absent.
fn uuid_string(b: &[u8; 16]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{x:02x}"));
    }
    Some(s)
}

/// A GUID in the UEFI mixed-endian layout (UEFI spec, appendix A): the first three fields
/// little-endian, the last two as bytes.
fn guid_string(b: &[u8; 16]) -> Option<String> {
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *b;
    let mut be = [0u8; 16];
    let head = [a3, a2, a1, a0, b1, b0, c1, c0];
    for (dst, src) in be.iter_mut().zip(head.iter().chain(rest.iter())) {
        *dst = *src;
    }
    uuid_string(&be)
}

// ---------------------------------------------------------------------------------------
// Filesystems.

/// How much of the device start `probe_fs` reads at once: through the btrfs superblock
/// (64 KiB + 4 KiB), which also covers ext4's (1 KiB), the FAT boot sector and the ISO 9660
/// volume descriptor set (32 KiB + 16 descriptors of 2 KiB).
const HEAD_LEN: usize = 0x11000;

/// Identifies the filesystem in `dev` (any Read + Seek: a File on /dev/vda or a file image).
/// Ok(Identity{fstype:None,..}) when nothing is recognized; short devices are not an error.
pub fn probe_fs<R: Read + Seek>(dev: &mut R) -> io::Result<Identity> {
    let head = read_at(dev, 0, HEAD_LEN)?;
    // Strong magics at fixed offsets first; FAT's is the weakest (a few bytes of a boot
    // sector that other formats can hold too), so it comes last.
    if let Some(id) = btrfs(&head)
        .or_else(|| ext(&head))
        .or_else(|| iso9660(&head))
        .or_else(|| squashfs(&head))
    {
        return Ok(id);
    }
    if let Some(boot) = FatBoot::parse(&head) {
        return fat_identity(dev, &boot);
    }
    Ok(Identity::default())
}

/// btrfs: the primary superblock at 64 KiB (`struct btrfs_super_block`, ctree.h).
fn btrfs(head: &[u8]) -> Option<Identity> {
    const SB: usize = 0x10000;
    let sb = head.get(SB..)?;
    // magic "_BHRfS_M" at 0x40
    if bytes(sb, 0x40, 8)? != b"_BHRfS_M" {
        return None;
    }
    Some(Identity {
        fstype: Some(FsType::Btrfs),
        // fsid[16] at 0x20: the filesystem UUID shared by all devices of the filesystem
        uuid: uuid_string(&array(sb, 0x20)?),
        // label[256] at 0x12b, NUL-terminated
        label: text_label(bytes(sb, 0x12b, 256)?),
        // num_devices le64 at 0x88
        devices: le64(sb, 0x88),
        ..Identity::default()
    })
}

/// ext2/3/4: the superblock at 1 KiB (`struct ext4_super_block`, fs/ext4/ext4.h).
fn ext(head: &[u8]) -> Option<Identity> {
    const SB: usize = 1024;
    /// s_feature_incompat bit: an external journal, not a mountable filesystem.
    const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
    let sb = head.get(SB..)?;
    // s_magic le16 at 0x38
    if le16(sb, 0x38)? != 0xEF53 {
        return None;
    }
    // s_feature_incompat le32 at 0x60
    if le32(sb, 0x60)? & INCOMPAT_JOURNAL_DEV != 0 {
        return None;
    }
    Some(Identity {
        fstype: Some(FsType::Ext4),
        // s_uuid[16] at 0x68
        uuid: uuid_string(&array(sb, 0x68)?),
        // s_volume_name[16] at 0x78
        label: text_label(bytes(sb, 0x78, 16)?),
        ..Identity::default()
    })
}

/// squashfs 4 (the only version Linux mounts): `struct squashfs_super_block`
/// (fs/squashfs/squashfs_fs.h). It has neither label nor UUID.
fn squashfs(head: &[u8]) -> Option<Identity> {
    // s_magic "hsqs" (0x73717368 le) at 0, s_major le16 at 28
    if bytes(head, 0, 4)? != b"hsqs" || le16(head, 28)? != 4 {
        return None;
    }
    Some(Identity {
        fstype: Some(FsType::Squashfs),
        ..Identity::default()
    })
}

/// ISO 9660 (ECMA-119 §8): the volume descriptor set starts at sector 16 (0x8000) in 2 KiB
/// sectors; the primary volume descriptor (type 1) need not be the first (an El Torito boot
/// record may precede it), so up to 16 descriptors are scanned, as blkid does, until the
/// set terminator (type 255).
fn iso9660(head: &[u8]) -> Option<Identity> {
    const VD_START: usize = 0x8000;
    const SECTOR: usize = 0x800;
    let mut pvd = None;
    let mut joliet = None;
    for i in 0..16 {
        let Some(vd) = bytes(head, VD_START + i * SECTOR, SECTOR) else {
            break;
        };
        // standard identifier "CD001" at 1 (§8.1.2)
        if bytes(vd, 1, 5) != Some(b"CD001") {
            break;
        }
        // volume descriptor type at 0 (§8.1.1)
        match u8_at(vd, 0) {
            Some(255) => break,
            Some(1) if pvd.is_none() => pvd = Some(vd),
            // Joliet: a supplementary descriptor (type 2) whose escape sequences (at 88)
            // announce UCS-2 level 1, 2 or 3.
            Some(2)
                if joliet.is_none()
                    && matches!(bytes(vd, 88, 3), Some(b"%/@" | b"%/C" | b"%/E")) =>
            {
                joliet = Some(vd)
            }
            _ => {}
        }
    }
    let pvd = pvd?;
    // volume identifier at 40, 32 bytes (§8.4.6): d-characters in the PVD, UCS-2BE in Joliet
    let pvd_label = bytes(pvd, 40, 32)?;
    let label = match joliet.and_then(|j| bytes(j, 40, 32)) {
        Some(jl) => joliet_label(jl, pvd_label),
        None => text_label(pvd_label),
    };
    // blkid's UUID: the volume modification date at 830 (§8.4.27), else the creation date
    // at 813 (§8.4.26), each "YYYYMMDDHHMMSScc" + a timezone byte.
    let uuid = iso_date(pvd, 830).or_else(|| iso_date(pvd, 813));
    Some(Identity {
        fstype: Some(FsType::Iso9660),
        label,
        uuid,
        ..Identity::default()
    })
}

/// A date-time field (ECMA-119 §8.4.26.1) as `YYYY-MM-DD-HH-MM-SS-cc`; an unset one (all
/// digits '0' and a zero offset) or one that is not digits is absent.
fn iso_date(pvd: &[u8], off: usize) -> Option<String> {
    let d = bytes(pvd, off, 16)?;
    let tz = u8_at(pvd, off + 16)?;
    if !d.iter().all(u8::is_ascii_digit) || (d.iter().all(|&c| c == b'0') && tz == 0) {
        return None;
    }
    let mut s = String::with_capacity(22);
    for (i, &c) in d.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10 | 12 | 14) {
            s.push('-');
        }
        s.push(char::from(c));
    }
    Some(s)
}

/// The label blkid reports for a Joliet volume: Joliet holds 16 UCS-2 characters, the PVD
/// 32 d-characters (upper case, '_' for anything not representable). When the Joliet label
/// is a prefix of the PVD one (ignoring those substitutions), the two are merged so that
/// neither the case nor the tail beyond 16 characters is lost; else the Joliet label wins.
fn joliet_label(joliet: &[u8], ascii: &[u8]) -> Option<String> {
    let units: Vec<u16> = joliet
        .chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_be_bytes)
        .collect();
    let merged = merge_joliet(&units, ascii).unwrap_or(units);
    let end = merged.iter().position(|&u| u == 0).unwrap_or(merged.len());
    let text = String::from_utf16_lossy(merged.get(..end)?);
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

fn merge_joliet(units: &[u16], ascii: &[u8]) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(ascii.len() + 1);
    let (mut u, mut a) = (0, 0);
    while let (Some(&first), Some(&c)) = (units.get(u), ascii.get(a)) {
        let mut unit = first;
        // A surrogate pair is one character, so one '_' in the PVD.
        if (0xD800..=0xDBFF).contains(&unit) {
            if let Some(&low @ 0xDC00..=0xDFFF) = units.get(u + 1) {
                out.push(unit);
                u += 1;
                unit = low;
            }
        }
        if c == b'_' {
            out.push(unit);
        } else if unit == u16::from(b'_') {
            out.push(u16::from(c));
        } else if unit <= 0xFF && (unit as u8).eq_ignore_ascii_case(&c) {
            out.push(if c.is_ascii_uppercase() {
                unit
            } else {
                u16::from(c)
            });
        } else {
            return None;
        }
        u += 1;
        a += 1;
    }
    out.extend(ascii.get(a..)?.iter().map(|&c| u16::from(c)));
    Some(out)
}

/// The parts of a FAT boot sector (Microsoft FAT specification, "BPB") needed here.
struct FatBoot {
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
    fn parse(bs: &[u8]) -> Option<FatBoot> {
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

fn fat_identity<R: Read + Seek>(dev: &mut R, b: &FatBoot) -> io::Result<Identity> {
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

// ---------------------------------------------------------------------------------------
// Partition tables.

/// GPT or MBR identity of partition number `partno` (1-based) of the whole disk `disk`,
/// given the logical sector size (512 or 4096). Returns partuuid/partlabel only (other
/// fields None). None when the disk has no partition table or no such entry.
pub fn partition_identity<R: Read + Seek>(
    disk: &mut R,
    partno: u32,
    sector_size: u64,
) -> io::Result<Option<Identity>> {
    if !sector_size.is_power_of_two() || !(512..=65536).contains(&sector_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("logical sector size {sector_size} is not a power of two in 512..=65536"),
        ));
    }
    if partno == 0 {
        return Ok(None);
    }
    let mbr = read_at(disk, 0, 512)?;
    let Some(mbr) = Mbr::parse(&mbr) else {
        // No MBR signature: not a disk the kernel's msdos parser accepts; a GPT whose
        // checksums hold is still believed.
        return gpt_entry(disk, partno, sector_size);
    };
    // A protective (or hybrid) MBR entry of type 0xEE: the real table is the GPT.
    if mbr.entries.iter().any(|e| e.kind == 0xEE) {
        return gpt_entry(disk, partno, sector_size);
    }
    mbr_entry(disk, &mbr, partno, sector_size)
}

/// The 32-bit CRC of IEEE 802.3 (reflected, polynomial 0xEDB88320) that GPT uses.
fn crc32(data: &[u8]) -> u32 {
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

fn gpt_entry<R: Read + Seek>(disk: &mut R, partno: u32, ss: u64) -> io::Result<Option<Identity>> {
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

/// One 16-byte MBR/EBR partition entry: type at +4, starting LBA le32 at +8, sectors le32
/// at +12.
#[derive(Clone, Copy)]
struct MbrEntry {
    kind: u8,
    start: u32,
    sectors: u32,
}

struct Mbr {
    disk_signature: u32,
    entries: [MbrEntry; 4],
}

impl Mbr {
    /// The MBR or an EBR: entries at 446, 0x55AA at 510.
    fn parse(sector: &[u8]) -> Option<Mbr> {
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
fn mbr_entry<R: Read + Seek>(
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

// ---------------------------------------------------------------------------------------
// Devices by kernel name.

/// Probe a kernel block device by its name under /sys/class/block (e.g. "vda", "vda1",
/// "sr0"): opens `{dev_dir}/{name}` read-only, probes the filesystem; when
/// `{sys_dir}/{name}/partition` exists, finds the parent disk (the parent directory of the
/// realpath of `{sys_dir}/{name}`, its basename), reads
/// `{sys_dir}/<parent>/queue/logical_block_size` (default 512) and fills partuuid/partlabel
/// from the parent's table. dev_dir is normally "/dev", sys_dir "/sys/class/block".
pub fn identify(name: &str, dev_dir: &Path, sys_dir: &Path) -> Result<Identity, ProbeError> {
    let mut id = with_device(&dev_dir.join(dev_name(name)), probe_fs)?;

    let sys = sys_dir.join(name);
    let part_file = sys.join("partition");
    let partno = match fs::read_to_string(&part_file) {
        Ok(text) => text.trim().parse::<u32>().map_err(|e| ProbeError::Read {
            err: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("partition number {:?}: {e}", text.trim()),
            ),
            path: part_file.clone(),
        })?,
        // a whole disk (or a CD-ROM): no partition table entry describes it
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(id),
        Err(err) => {
            return Err(ProbeError::Read {
                path: part_file,
                err,
            })
        }
    };
    // sysfs nests a partition's directory in its disk's: .../block/vda/vda1
    let real = fs::canonicalize(&sys).map_err(|err| ProbeError::Read {
        path: sys.clone(),
        err,
    })?;
    let Some(parent) = real
        .parent()
        .and_then(Path::file_name)
        .and_then(|p| p.to_str())
    else {
        return Err(ProbeError::Read {
            path: real,
            err: io::Error::new(io::ErrorKind::InvalidData, "no parent disk directory"),
        });
    };
    // Partition tables count in logical blocks; 512 when the kernel does not say.
    let sector_size = fs::read_to_string(sys_dir.join(parent).join("queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(512);
    let disk = dev_dir.join(dev_name(parent));
    if let Some(part) = with_device(&disk, |f| partition_identity(f, partno, sector_size))? {
        id.partuuid = part.partuuid;
        id.partlabel = part.partlabel;
    }
    Ok(id)
}

/// The /dev name of a sysfs block name: the kernel writes '/' in device names as '!' in
/// sysfs (e.g. "cciss!c0d0" is /dev/cciss/c0d0).
fn dev_name(sys_name: &str) -> String {
    sys_name.replace('!', "/")
}

fn with_device<T>(
    path: &Path,
    f: impl FnOnce(&mut File) -> io::Result<T>,
) -> Result<T, ProbeError> {
    let mut file = File::open(path).map_err(|err| ProbeError::Open {
        path: path.to_path_buf(),
        err,
    })?;
    f(&mut file).map_err(|err| ProbeError::Read {
        path: path.to_path_buf(),
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;
    use std::os::unix::fs::{symlink, FileExt};
    use std::process::Command;
    use tempfile::TempDir;

    // -- the real tools, and blkid/partx as the reference readers --------------------------

    /// A tool that makes or reads the test images. A missing one is a broken test bed, not
    /// a reason to skip.
    fn tool(name: &str) -> PathBuf {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "{name} not found: the probe tests need btrfs-progs, e2fsprogs, dosfstools, \
                     xorriso, squashfs-tools, systemd (systemd-repart) and util-linux (blkid, partx)"
                )
            })
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = Command::new(tool(cmd))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(
            out.status.success(),
            "{cmd} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("temp paths are UTF-8")
    }

    /// What `blkid -p` (low-level superblock probing, no cache, no root needed) says.
    fn blkid(path: &Path, tag: &str) -> Option<String> {
        let out = Command::new(tool("blkid"))
            .args(["-p", "-o", "value", "-s", tag])
            .arg(path)
            .output()
            .expect("blkid runs");
        let v = String::from_utf8_lossy(&out.stdout);
        let v = v.trim_end_matches('\n');
        (!v.is_empty()).then(|| v.to_string())
    }

    /// `partx --show` of a disk image: (number, PARTUUID, PARTLABEL) per partition.
    fn partx(img: &Path) -> Vec<(u32, String, Option<String>)> {
        run("partx", &["--show", "-g", "-o", "NR,UUID,NAME", s(img)])
            .lines()
            .map(|line| {
                let line = line.trim_start();
                let (nr, rest) = line.split_once(' ').expect("NR column");
                let rest = rest.trim_start();
                let (uuid, name) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = Some(name.trim_end().to_string()).filter(|n| !n.is_empty());
                (nr.parse().expect("NR"), uuid.to_string(), name)
            })
            .collect()
    }

    fn sized(dir: &TempDir, name: &str, size: u64) -> PathBuf {
        let p = dir.path().join(name);
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    fn patch(path: &Path, off: u64, data: &[u8]) {
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(data, off).unwrap();
    }

    fn probe(path: &Path) -> Identity {
        probe_fs(&mut File::open(path).unwrap()).unwrap()
    }

    fn part(path: &Path, partno: u32, ss: u64) -> Option<Identity> {
        partition_identity(&mut File::open(path).unwrap(), partno, ss).unwrap()
    }

    /// Our LABEL and UUID are blkid's, byte for byte.
    fn assert_blkid_agrees(path: &Path, id: &Identity) {
        assert_eq!(
            id.label,
            blkid(path, "LABEL"),
            "LABEL of {}",
            path.display()
        );
        assert_eq!(id.uuid, blkid(path, "UUID"), "UUID of {}", path.display());
    }

    // -- filesystems ------------------------------------------------------------------------

    #[test]
    fn btrfs_label_and_fsid() {
        let dir = TempDir::new().unwrap();
        let img = sized(&dir, "btrfs.img", 120 << 20);
        let uuid = "6f1c1d3e-8a2b-4c5d-9e0f-a1b2c3d4e5f6";
        run(
            "mkfs.btrfs",
            &["-q", "-f", "-L", "terra os", "-U", uuid, s(&img)],
        );
        let id = probe(&img);
        assert_eq!(id.fstype, Some(FsType::Btrfs));
        assert_eq!(id.label.as_deref(), Some("terra os"));
        assert_eq!(id.uuid.as_deref(), Some(uuid));
        assert_eq!((id.partuuid, id.partlabel), (None, None));
        assert_eq!(id.devices, Some(1));
        assert_eq!(blkid(&img, "TYPE").as_deref(), Some("btrfs"));
        assert_blkid_agrees(&img, &probe(&img));
    }

    #[test]
    fn btrfs_raid1_members_share_the_fsid_and_count() {
        let dir = TempDir::new().unwrap();
        let a = sized(&dir, "a.img", 128 << 20);
        let b = sized(&dir, "b.img", 128 << 20);
        let uuid = "6f1c1d3e-8a2b-4c5d-9e0f-a1b2c3d4e5f7";
        run(
            "mkfs.btrfs",
            &[
                "-q",
                "-f",
                "-L",
                "pair",
                "-U",
                uuid,
                "-d",
                "raid1",
                "-m",
                "raid1",
                s(&a),
                s(&b),
            ],
        );
        for img in [&a, &b] {
            let id = probe(img);
            assert_eq!(id.uuid.as_deref(), Some(uuid));
            assert_eq!(id.devices, Some(2));
        }
    }

    #[test]
    fn ext2_ext3_ext4_all_mount_as_ext4() {
        let dir = TempDir::new().unwrap();
        for (mkfs, label, uuid) in [
            (
                "mkfs.ext4",
                Some("rootfs"),
                "11111111-2222-3333-4444-555555555555",
            ),
            ("mkfs.ext3", None, "0a0b0c0d-0e0f-4a4b-8c8d-8e8f90919293"),
            (
                "mkfs.ext2",
                Some("sixteen-chars-xx"),
                "ffffffff-ffff-4fff-bfff-ffffffffffff",
            ),
        ] {
            let img = sized(&dir, &format!("{mkfs}.img"), 8 << 20);
            let mut args = vec!["-q", "-F", "-U", uuid];
            if let Some(l) = label {
                args.extend(["-L", l]);
            }
            args.push(s(&img));
            run(mkfs, &args);
            let id = probe(&img);
            assert_eq!(id.fstype, Some(FsType::Ext4), "{mkfs}");
            assert_eq!(id.fstype.map(|t| t.as_str()), Some("ext4"));
            assert_eq!(id.label.as_deref(), label, "{mkfs}");
            assert_eq!(id.uuid.as_deref(), Some(uuid), "{mkfs}");
            assert_eq!(blkid(&img, "TYPE").as_deref(), mkfs.strip_prefix("mkfs."));
            assert_blkid_agrees(&img, &id);
        }
    }

    #[test]
    fn ext_external_journal_is_not_a_filesystem() {
        let dir = TempDir::new().unwrap();
        let img = sized(&dir, "journal.img", 8 << 20);
        run(
            "mkfs.ext4",
            &["-q", "-F", "-O", "journal_dev", "-L", "jrnl", s(&img)],
        );
        assert_eq!(blkid(&img, "TYPE").as_deref(), Some("jbd"));
        assert_eq!(probe(&img), Identity::default());
    }

    #[test]
    fn fat32_fat16_fat12() {
        let dir = TempDir::new().unwrap();
        for (bits, size, label) in [
            ("32", 64 << 20, Some("TERRA-ESP")),
            ("16", 16 << 20, Some("LBL16")),
            ("12", 2 << 20, None),
        ] {
            let img = sized(&dir, &format!("fat{bits}.img"), size);
            let mut args = vec!["-F", bits, "-i", "1234ABCD"];
            if let Some(l) = label {
                args.extend(["-n", l]);
            }
            args.push(s(&img));
            run("mkfs.vfat", &args);
            let id = probe(&img);
            assert_eq!(id.fstype, Some(FsType::Vfat), "FAT{bits}");
            assert_eq!(id.label.as_deref(), label, "FAT{bits}");
            assert_eq!(id.uuid.as_deref(), Some("1234-ABCD"), "FAT{bits}");
            assert_eq!(blkid(&img, "TYPE").as_deref(), Some("vfat"));
            assert_eq!(blkid(&img, "VERSION"), Some(format!("FAT{bits}")));
            assert_blkid_agrees(&img, &id);
        }
    }

    #[test]
    fn fat_label_from_root_directory_then_boot_sector() {
        let dir = TempDir::new().unwrap();
        // Relabelled in the root directory only: the root directory is right (as in blkid).
        let img = sized(&dir, "fat32.img", 64 << 20);
        run("mkfs.vfat", &["-F", "32", "-n", "ROOTDIR", s(&img)]);
        patch(&img, 0x47, b"BOOTSECT   ");
        assert_eq!(probe(&img).label.as_deref(), Some("ROOTDIR"));
        assert_eq!(blkid(&img, "LABEL").as_deref(), Some("ROOTDIR"));
        assert_eq!(blkid(&img, "LABEL_FATBOOT").as_deref(), Some("BOOTSECT"));
        // A label in the boot sector only: we fall back to it, blkid reports it only as
        // LABEL_FATBOOT (no LABEL).
        let img = sized(&dir, "fat16.img", 16 << 20);
        run("mkfs.vfat", &["-F", "16", s(&img)]);
        assert_eq!(probe(&img).label, None);
        patch(&img, 0x2B, b"BOOTONLY   ");
        assert_eq!(probe(&img).label.as_deref(), Some("BOOTONLY"));
        assert_eq!(blkid(&img, "LABEL"), None);
        assert_eq!(blkid(&img, "LABEL_FATBOOT").as_deref(), Some("BOOTONLY"));
    }

    fn iso(dir: &TempDir, name: &str, args: &[&str]) -> PathBuf {
        let content = dir.path().join(format!("{name}.d"));
        fs::create_dir_all(&content).unwrap();
        fs::write(content.join("hello"), "hi\n").unwrap();
        let out = dir.path().join(name);
        let mut all = vec!["-as", "mkisofs", "-quiet", "-o", s(&out)];
        all.extend(args);
        all.push(s(&content));
        run("xorriso", &all);
        out
    }

    #[test]
    fn iso9660_label_and_date_uuid() {
        let dir = TempDir::new().unwrap();
        let img = iso(
            &dir,
            "fixed.iso",
            &["-V", "TERRA_LIVE", "--modification-date=2024010203040506"],
        );
        let id = probe(&img);
        assert_eq!(id.fstype, Some(FsType::Iso9660));
        assert_eq!(id.label.as_deref(), Some("TERRA_LIVE"));
        assert_eq!(id.uuid.as_deref(), Some("2024-01-02-03-04-05-06"));
        assert_eq!(blkid(&img, "TYPE").as_deref(), Some("iso9660"));
        assert_blkid_agrees(&img, &id);

        // the date of the run, in the same shape
        let img = iso(&dir, "now.iso", &["-V", "VOLID"]);
        let id = probe(&img);
        let uuid = id.uuid.clone().expect("a date");
        assert_eq!(uuid.len(), 22);
        for (i, c) in uuid.chars().enumerate() {
            assert_eq!(c == '-', [4, 7, 10, 13, 16, 19].contains(&i), "{uuid}");
        }
        assert_blkid_agrees(&img, &id);
    }

    #[test]
    fn iso9660_uuid_prefers_the_modification_date() {
        let dir = TempDir::new().unwrap();
        let img = iso(
            &dir,
            "dates.iso",
            &["-V", "D", "--modification-date=2024010203040506"],
        );
        // creation date (PVD +813) differs: the modification date (+830) still wins
        patch(&img, 0x8000 + 813, b"2011121314151617");
        assert_eq!(probe(&img).uuid.as_deref(), Some("2024-01-02-03-04-05-06"));
        assert_blkid_agrees(&img, &probe(&img));
        // modification date unset (all '0', zero offset): the creation date
        let mut unset = [b'0'; 17];
        unset[16] = 0;
        patch(&img, 0x8000 + 830, &unset);
        assert_eq!(probe(&img).uuid.as_deref(), Some("2011-12-13-14-15-16-17"));
        assert_blkid_agrees(&img, &probe(&img));
    }

    #[test]
    fn iso9660_joliet_labels_as_blkid_merges_them() {
        let dir = TempDir::new().unwrap();
        for (i, label) in ["Terra Live 2024 mixedCase", "Ünïcødé label", "lower"]
            .into_iter()
            .enumerate()
        {
            let img = iso(&dir, &format!("j{i}.iso"), &["-J", "-V", label]);
            let id = probe(&img);
            assert_eq!(id.label.as_deref(), Some(label));
            assert_eq!(blkid(&img, "VERSION").as_deref(), Some("Joliet Extension"));
            assert_blkid_agrees(&img, &id);
        }
    }

    #[test]
    fn squashfs_type_only() {
        let dir = TempDir::new().unwrap();
        let content = dir.path().join("content");
        fs::create_dir(&content).unwrap();
        fs::write(content.join("f"), "x").unwrap();
        let img = dir.path().join("out.sqfs");
        run(
            "mksquashfs",
            &[s(&content), s(&img), "-quiet", "-no-progress", "-noappend"],
        );
        let id = probe(&img);
        assert_eq!(
            id,
            Identity {
                fstype: Some(FsType::Squashfs),
                ..Identity::default()
            }
        );
        assert_eq!(blkid(&img, "TYPE").as_deref(), Some("squashfs"));
        assert_blkid_agrees(&img, &id);
    }

    #[test]
    fn nothing_recognized_is_not_an_error() {
        for len in [0, 1, 511, 512, 1100, 4096, 0x8801, 70_000] {
            let mut zeros = Cursor::new(vec![0u8; len]);
            assert_eq!(probe_fs(&mut zeros).unwrap(), Identity::default(), "{len}");
            assert_eq!(partition_identity(&mut zeros, 1, 512).unwrap(), None);
            assert_eq!(partition_identity(&mut zeros, 1, 4096).unwrap(), None);
        }
        let err = partition_identity(&mut Cursor::new(Vec::new()), 1, 1000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(FsType::Iso9660.to_string(), "iso9660");
    }

    // -- partition tables ---------------------------------------------------------------------

    /// A GPT disk image from systemd-repart, one partition per (label, uuid, contents).
    fn repart(dir: &TempDir, name: &str, parts: &[(&str, &str, Option<&Path>)]) -> PathBuf {
        let defs = dir.path().join(format!("{name}.repart.d"));
        fs::create_dir_all(&defs).unwrap();
        for (i, (label, uuid, copy)) in parts.iter().enumerate() {
            let mut conf = format!("[Partition]\nType=linux-generic\nLabel={label}\nUUID={uuid}\n");
            match copy {
                Some(src) => conf.push_str(&format!("CopyBlocks={}\n", s(src))),
                None => conf.push_str("SizeMinBytes=2M\nSizeMaxBytes=2M\n"),
            }
            fs::write(defs.join(format!("{i:02}.conf")), conf).unwrap();
        }
        let img = dir.path().join(name);
        run(
            "systemd-repart",
            &[
                "--empty=create",
                "--size=12M",
                "--dry-run=no",
                "--seed=c0ffee00-1111-2222-3333-444455556666",
                &format!("--definitions={}", s(&defs)),
                s(&img),
            ],
        );
        img
    }

    const UUID_A: &str = "11111111-2222-4333-8444-555555555555";
    const UUID_B: &str = "a1b2c3d4-e5f6-4789-8abc-def012345678";

    #[test]
    fn gpt_entries_match_partx() {
        let dir = TempDir::new().unwrap();
        let img = repart(
            &dir,
            "gpt.img",
            &[("root", UUID_A, None), ("dätä €x", UUID_B, None)],
        );
        let table = partx(&img);
        assert_eq!(
            table,
            [
                (1, UUID_A.to_string(), Some("root".to_string())),
                (2, UUID_B.to_string(), Some("dätä €x".to_string()))
            ]
        );
        for (nr, uuid, name) in table {
            let id = part(&img, nr, 512).expect("an entry");
            assert_eq!(id.partuuid, Some(uuid));
            assert_eq!(id.partlabel, name);
            assert_eq!((id.fstype, id.label, id.uuid), (None, None, None));
        }
        for nr in [0, 3, 128, 129, u32::MAX] {
            assert_eq!(part(&img, nr, 512), None, "{nr}");
        }
        // the same bytes read as a 4K-sector disk have no table where one would be
        assert_eq!(part(&img, 1, 4096), None);
    }

    #[test]
    fn gpt_backup_header_stands_in_for_a_damaged_primary() {
        let dir = TempDir::new().unwrap();
        let img = repart(&dir, "gpt.img", &[("root", UUID_A, None)]);
        let want = part(&img, 1, 512);
        assert!(want.is_some());
        // one byte of the primary header's disk GUID: its CRC no longer holds
        patch(&img, 512 + 0x38, &[0xFF]);
        assert_eq!(part(&img, 1, 512), want);
        assert_eq!(partx(&img).len(), 1, "libblkid also falls back");
        // and with the backup (the last LBA) damaged too, there is no table
        let len = fs::metadata(&img).unwrap().len();
        patch(&img, len - 512, b"NOT PART");
        assert_eq!(part(&img, 1, 512), None);
    }

    /// The UEFI mixed-endian bytes of a textual GUID.
    fn guid_bytes(text: &str) -> [u8; 16] {
        let hex: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&text.replace('-', "")[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        order.map(|i| hex[i])
    }

    /// A GPT header (UEFI §5.3.2) with a correct HeaderCRC32.
    fn gpt_header(my: u64, alt: u64, entries_lba: u64, count: u32, size: u32, crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&my.to_le_bytes());
        h[0x20..0x28].copy_from_slice(&alt.to_le_bytes());
        h[0x38..0x48].copy_from_slice(&guid_bytes("c0ffee00-1111-2222-3333-444455556666"));
        h[0x48..0x50].copy_from_slice(&entries_lba.to_le_bytes());
        h[0x50..0x54].copy_from_slice(&count.to_le_bytes());
        h[0x54..0x58].copy_from_slice(&size.to_le_bytes());
        h[0x58..0x5C].copy_from_slice(&crc.to_le_bytes());
        let c = crc32(&h);
        h[0x10..0x14].copy_from_slice(&c.to_le_bytes());
        h
    }

    /// A GPT disk as the spec lays it out, for sector sizes no tool here writes:
    /// (partition number, unique GUID, name) per used entry, 128 entries of 128 bytes.
    fn synth_gpt(ss: usize, sectors: usize, parts: &[(usize, &str, &str)]) -> Vec<u8> {
        let linux = guid_bytes("0fc63daf-8483-4772-8e79-3d69d8477de4");
        let mut entries = vec![0u8; 128 * 128];
        for (nr, uuid, name) in parts {
            let e = &mut entries[(nr - 1) * 128..*nr * 128];
            e[0..16].copy_from_slice(&linux);
            e[16..32].copy_from_slice(&guid_bytes(uuid));
            for (i, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        let crc = crc32(&entries);
        let array_sectors = entries.len().div_ceil(ss);
        let last = sectors - 1;
        let mut disk = vec![0u8; ss * sectors];
        // protective MBR: one 0xEE entry over the disk
        disk[446 + 4] = 0xEE;
        disk[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        disk[446 + 12..446 + 16].copy_from_slice(&(last as u32).to_le_bytes());
        disk[510..512].copy_from_slice(&[0x55, 0xAA]);
        let primary = gpt_header(1, last as u64, 2, 128, 128, crc);
        disk[ss..ss + 92].copy_from_slice(&primary);
        disk[2 * ss..2 * ss + entries.len()].copy_from_slice(&entries);
        let backup_entries = last - array_sectors;
        let backup = gpt_header(last as u64, 1, backup_entries as u64, 128, 128, crc);
        disk[last * ss..last * ss + 92].copy_from_slice(&backup);
        disk[backup_entries * ss..backup_entries * ss + entries.len()].copy_from_slice(&entries);
        disk
    }

    #[test]
    fn synthetic_gpt_agrees_with_partx_at_512_and_reads_at_4096() {
        let dir = TempDir::new().unwrap();
        let parts = [(1, UUID_A, "esp 🦀"), (3, UUID_B, "")];
        // first, the builder is checked against a real reader
        let img = dir.path().join("synth512.img");
        fs::write(&img, synth_gpt(512, 4096, &parts)).unwrap();
        assert_eq!(
            partx(&img),
            [
                (1, UUID_A.to_string(), Some("esp 🦀".to_string())),
                (3, UUID_B.to_string(), None)
            ]
        );
        // then at 4 KiB sectors, where the header is at byte 4096
        let mut disk = Cursor::new(synth_gpt(4096, 512, &parts));
        let one = partition_identity(&mut disk, 1, 4096).unwrap().unwrap();
        assert_eq!(one.partuuid.as_deref(), Some(UUID_A));
        assert_eq!(one.partlabel.as_deref(), Some("esp 🦀"));
        assert_eq!(
            partition_identity(&mut disk, 2, 4096).unwrap(),
            None,
            "unused entry"
        );
        let three = partition_identity(&mut disk, 3, 4096).unwrap().unwrap();
        assert_eq!(three.partuuid.as_deref(), Some(UUID_B));
        assert_eq!(three.partlabel, None);
        assert_eq!(partition_identity(&mut disk, 1, 512).unwrap(), None);
    }

    #[test]
    fn gpt_hostile_sizes_are_refused() {
        for (count, size) in [(1_000_000, 128), (128, 1 << 20), (128, 64), (0, 128)] {
            let mut disk = synth_gpt(512, 4096, &[(1, UUID_A, "x")]);
            // both headers claim the hostile array (with CRCs that hold)
            let crc = crc32(&disk[1024..1024 + 128 * 128]);
            disk[512..604].copy_from_slice(&gpt_header(1, 4095, 2, count, size, crc));
            let last = 4095 * 512;
            disk[last..last + 92].copy_from_slice(&gpt_header(4095, 1, 4063, count, size, crc));
            assert_eq!(
                partition_identity(&mut Cursor::new(disk), 1, 512).unwrap(),
                None,
                "{count} × {size}"
            );
        }
    }

    /// An MBR disk of 16384 sectors: primaries 1 (Linux), 2 (extended, two logicals in an
    /// EBR chain), 4 (Linux); slot 3 empty.
    fn synth_mbr(signature: u32) -> Vec<u8> {
        fn entry(sector: &mut [u8], slot: usize, kind: u8, start: u32, len: u32) {
            let e = &mut sector[446 + 16 * slot..446 + 16 * slot + 16];
            e[4] = kind;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&len.to_le_bytes());
        }
        let mut disk = vec![0u8; 16384 * 512];
        for sector in [0, 4096, 6144] {
            disk[sector * 512 + 510..sector * 512 + 512].copy_from_slice(&[0x55, 0xAA]);
        }
        disk[440..444].copy_from_slice(&signature.to_le_bytes());
        entry(&mut disk[..512], 0, 0x83, 2048, 2048);
        entry(&mut disk[..512], 1, 0x05, 4096, 8192);
        entry(&mut disk[..512], 3, 0x83, 12288, 2048);
        // EBRs: the logical partition relative to its EBR, the link relative to the
        // extended partition
        entry(&mut disk[4096 * 512..4097 * 512], 0, 0x83, 1, 1000);
        entry(&mut disk[4096 * 512..4097 * 512], 1, 0x05, 2048, 2048);
        entry(&mut disk[6144 * 512..6145 * 512], 0, 0x83, 1, 1000);
        disk
    }

    #[test]
    fn mbr_primary_and_logical_numbers_match_partx() {
        let dir = TempDir::new().unwrap();
        let img = dir.path().join("mbr.img");
        fs::write(&img, synth_mbr(0xDEAD_BEEF)).unwrap();
        let table = partx(&img);
        let numbers: Vec<u32> = table.iter().map(|p| p.0).collect();
        assert_eq!(numbers, [1, 2, 4, 5, 6]);
        for (nr, uuid, name) in table {
            let id = part(&img, nr, 512).expect("an entry");
            assert_eq!(id.partuuid, Some(uuid), "{nr}");
            assert_eq!(id.partlabel, name);
        }
        assert_eq!(
            part(&img, 5, 512).unwrap().partuuid.as_deref(),
            Some("deadbeef-05")
        );
        for nr in [3, 7, 255] {
            assert_eq!(part(&img, nr, 512), None, "{nr}");
        }
        // no disk signature: the entry exists, blkid gives it no PARTUUID
        let id = partition_identity(&mut Cursor::new(synth_mbr(0)), 1, 512).unwrap();
        assert_eq!(id, Some(Identity::default()));
    }

    #[test]
    fn mbr_ebr_loop_ends() {
        let mut disk = synth_mbr(1);
        // the second EBR links back to the first
        disk[6144 * 512 + 446 + 16 + 4] = 0x05;
        disk[6144 * 512 + 446 + 16 + 12..6144 * 512 + 446 + 16 + 16]
            .copy_from_slice(&1u32.to_le_bytes());
        let mut disk = Cursor::new(disk);
        // one logical partition per trip round the loop, until the cap of 256 EBRs
        assert!(partition_identity(&mut disk, 200, 512).unwrap().is_some());
        assert_eq!(partition_identity(&mut disk, 300, 512).unwrap(), None);
    }

    // -- identify() over a /dev + /sys/class/block look-alike ---------------------------------

    #[test]
    fn identify_follows_sysfs_to_the_parent_table() {
        let dir = TempDir::new().unwrap();
        let fs_img = sized(&dir, "root.ext4", 4 << 20);
        let fs_uuid = "0a0b0c0d-0e0f-4a4b-8c8d-8e8f90919293";
        run(
            "mkfs.ext4",
            &["-q", "-F", "-L", "rootfs", "-U", fs_uuid, s(&fs_img)],
        );
        let disk = repart(&dir, "disk.img", &[("root", UUID_A, Some(&fs_img))]);

        let dev = dir.path().join("dev");
        fs::create_dir(&dev).unwrap();
        fs::copy(&disk, dev.join("vda")).unwrap();
        // vda1 holds the partition's bytes, where partx says they are
        let geometry = run("partx", &["--show", "-g", "-o", "START,SECTORS", s(&disk)]);
        let nums: Vec<u64> = geometry
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let mut bytes = vec![0u8; (nums[1] * 512) as usize];
        File::open(&disk)
            .unwrap()
            .read_exact_at(&mut bytes, nums[0] * 512)
            .unwrap();
        fs::write(dev.join("vda1"), bytes).unwrap();
        // a 4K-sector disk whose partition 3 has no filesystem
        fs::write(
            dev.join("sdb"),
            synth_gpt(4096, 512, &[(3, UUID_B, "data")]),
        )
        .unwrap();
        fs::write(dev.join("sdb3"), vec![0u8; 8192]).unwrap();

        let devices = dir.path().join("sys/devices/pci0000:00/virtio0/block");
        for (disk, parts, lbs) in [("vda", ["vda1"], "512\n"), ("sdb", ["sdb3"], "4096\n")] {
            fs::create_dir_all(devices.join(disk).join("queue")).unwrap();
            fs::write(devices.join(disk).join("queue/logical_block_size"), lbs).unwrap();
            for p in parts {
                fs::create_dir_all(devices.join(disk).join(p)).unwrap();
                let nr = p.trim_start_matches(disk);
                fs::write(
                    devices.join(disk).join(p).join("partition"),
                    format!("{nr}\n"),
                )
                .unwrap();
            }
        }
        let class = dir.path().join("sys/class/block");
        fs::create_dir_all(&class).unwrap();
        let target = "../../devices/pci0000:00/virtio0/block";
        for (name, rel) in [
            ("vda", "vda"),
            ("vda1", "vda/vda1"),
            ("sdb", "sdb"),
            ("sdb3", "sdb/sdb3"),
        ] {
            symlink(format!("{target}/{rel}"), class.join(name)).unwrap();
        }

        assert_eq!(
            identify("vda1", &dev, &class).unwrap(),
            Identity {
                fstype: Some(FsType::Ext4),
                label: Some("rootfs".into()),
                uuid: Some(fs_uuid.into()),
                partuuid: Some(UUID_A.into()),
                partlabel: Some("root".into()),
                devices: None,
            }
        );
        // the whole disk: no filesystem, no partition entry
        assert_eq!(identify("vda", &dev, &class).unwrap(), Identity::default());
        assert_eq!(
            identify("sdb3", &dev, &class).unwrap(),
            Identity {
                partuuid: Some(UUID_B.into()),
                partlabel: Some("data".into()),
                ..Identity::default()
            }
        );

        // errors name the device
        let err = identify("vdz", &dev, &class).unwrap_err();
        assert!(matches!(&err, ProbeError::Open { path, .. } if path == &dev.join("vdz")));
        assert!(err.to_string().contains(s(&dev.join("vdz"))), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        fs::remove_file(dev.join("vda")).unwrap();
        let err = identify("vda1", &dev, &class).unwrap_err();
        assert!(matches!(&err, ProbeError::Open { path, .. } if path == &dev.join("vda")));
    }

    // -- no input makes the probe panic -------------------------------------------------------

    /// Writes `b` at `off` when it fits.
    fn put(data: &mut [u8], off: usize, b: &[u8]) {
        if let Some(dst) = data.get_mut(off..off + b.len()) {
            dst.copy_from_slice(b);
        }
    }

    /// Plants one format's magic (and enough of its header to get past the first checks)
    /// in random bytes, so the deeper parsing meets hostile values.
    fn stamp(data: &mut [u8], kind: u8, f: [u32; 8]) {
        match kind % 6 {
            0 => {
                put(data, 510, &[0x55, 0xAA]);
                put(data, 0x0B, &(512u16 << (f[1] % 4)).to_le_bytes());
                put(data, 0x0D, &[1u8 << (f[2] % 8)]);
                put(data, 0x0E, &((f[3] as u16) | 1).to_le_bytes());
                put(data, 0x10, &[(f[4] as u8) | 1]);
                put(data, 0x15, &[0xF8]);
                if f[0] & 1 == 0 {
                    put(data, 0x52, b"FAT32   ");
                    put(data, 0x16, &[0, 0]);
                    put(data, 0x24, &(f[5] | 1).to_le_bytes());
                    put(data, 0x2C, &(f[6] % 64).to_le_bytes());
                } else {
                    put(data, 0x36, b"FAT16   ");
                    put(data, 0x16, &((f[5] as u16) | 1).to_le_bytes());
                }
            }
            1 => put(data, 0x10040, b"_BHRfS_M"),
            2 => put(data, 1024 + 0x38, &[0x53, 0xEF]),
            3 => {
                for i in 0..(f[0] % 17) as usize {
                    let vd = 0x8000 + i * 0x800;
                    put(data, vd, &[(f[1] >> (i % 4)) as u8 % 3]);
                    put(data, vd + 1, b"CD001");
                    put(data, vd + 88, b"%/E");
                }
            }
            4 => {
                let ss = if f[0] & 1 == 0 { 512 } else { 4096 };
                put(data, 446 + 4, &[0xEE]);
                put(data, 510, &[0x55, 0xAA]);
                let entries_lba = u64::from(f[1] % 64);
                let count = f[2] % 1100;
                let size = 128 << (f[3] % 4);
                let start = entries_lba as usize * ss;
                let crc = data
                    .get(start..start + count as usize * size as usize)
                    .map_or(f[4], crc32);
                let h = gpt_header(1, u64::from(f[5]), entries_lba, count, size, crc);
                put(data, ss, &h);
            }
            _ => {
                put(data, 510, &[0x55, 0xAA]);
                for slot in 0..4 {
                    let e = 446 + 16 * slot;
                    put(data, e, &[0]);
                    put(
                        data,
                        e + 4,
                        &[[0x05, 0x0F, 0x83, 0x85][(f[slot] % 4) as usize]],
                    );
                    put(data, e + 8, &(f[slot + 4] % 400).to_le_bytes());
                }
            }
        }
    }

    /// `len` pseudo-random bytes from `seed` (xorshift64*): as arbitrary as generated
    /// bytes for the parser, far cheaper than a 200 KB vector strategy in a debug build.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn probe_everything(data: &[u8], partno: u32) {
        let _ = probe_fs(&mut Cursor::new(data));
        for ss in [512, 4096] {
            let _ = partition_identity(&mut Cursor::new(data), partno, ss);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..200_000),
            partno in 0u32..300,
        ) {
            probe_everything(&data, partno);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn short_arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            partno in 0u32..10,
        ) {
            probe_everything(&data, partno);
        }

        #[test]
        fn planted_magics_never_panic(
            len in 0usize..200_000,
            seed in any::<u64>(),
            kind in any::<u8>(),
            fields in any::<[u32; 8]>(),
            partno in 0u32..300,
        ) {
            let mut data = noise(len, seed);
            stamp(&mut data, kind, fields);
            probe_everything(&data, partno);
        }
    }
}
