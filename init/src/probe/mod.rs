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
//!
//! One module per format: [`btrfs`], [`ext4`], [`vfat`], [`iso9660`], [`squashfs`]; the
//! partition tables [`gpt`] and [`mbr`]; [`bytes`] holds the checked views they share. This
//! module holds the identity they fill in and the entry points: [`probe_fs`],
//! [`partition_identity`] and [`identify`] (by kernel name, through sysfs).

mod btrfs;
mod bytes;
pub mod contents;
mod ext4;
mod gpt;
mod iso9660;
mod mbr;
mod squashfs;
mod vfat;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use bytes::read_at;

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
    if let Some(id) = btrfs::probe(&head)
        .or_else(|| ext4::probe(&head))
        .or_else(|| iso9660::probe(&head))
        .or_else(|| squashfs::probe(&head))
    {
        return Ok(id);
    }
    if let Some(boot) = vfat::FatBoot::parse(&head) {
        return vfat::fat_identity(dev, &boot);
    }
    Ok(Identity::default())
}

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
    let Some(mbr) = mbr::Mbr::parse(&mbr) else {
        // No MBR signature: not a disk the kernel's msdos parser accepts; a GPT whose
        // checksums hold is still believed.
        return gpt::entry(disk, partno, sector_size);
    };
    // A protective (or hybrid) MBR entry of type 0xEE: the real table is the GPT.
    if mbr.protects_gpt() {
        return gpt::entry(disk, partno, sector_size);
    }
    mbr::entry(disk, &mbr, partno, sector_size)
}

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
mod tests;
