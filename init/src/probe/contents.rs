//! What a device holds, before anything may format it (issue 26's data volumes): blank
//! (every byte of its first and last MiB zero), a signature blkid would name (filesystems,
//! LUKS, swap, LVM, md-raid, bcache, ZFS, partition tables), or data of an unknown kind.
//! Only "blank" may be formatted; anything else is named in the refusal. No I/O: the caller
//! reads [`SPAN`] bytes at each end.
//!
//! Every signature stage0 knows lies within those two spans (btrfs's first superblock at
//! 64 KiB, md 0.90 at the last 64 KiB-aligned 64 KiB, ZFS's labels in the first and last
//! 512 KiB), so "blank" never hides one: an unknown format still has non-zero bytes there.

use super::bytes::{array, bytes, le16, le32, le64};

/// How many bytes are read at each end of the device.
pub const SPAN: usize = 1 << 20;

/// What a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// Its first and last [`SPAN`] bytes are zero: nothing to lose.
    Blank,
    /// A signature, named as blkid names its TYPE (`xfs`, `crypto_LUKS`, `swap`,
    /// `LVM2_member`, `linux_raid_member`, `bcache`, `zfs_member`, `btrfs`, `ext4`, `vfat`,
    /// `iso9660`, `squashfs`) or the partition table (`gpt`, `dos`).
    Known(&'static str),
    /// Non-zero bytes of no kind stage0 knows.
    Data,
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contents::Blank => f.write_str("nothing (blank)"),
            Contents::Known(t) => write!(f, "a {t} signature"),
            Contents::Data => {
                f.write_str("data of an unknown kind (non-zero bytes in its first or last MiB)")
            }
        }
    }
}

/// bcache's superblock magic, at 4 KiB + 24.
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];
/// md's superblock magic (all metadata versions).
const MD_MAGIC: u32 = 0xa92b_4efc;
/// A ZFS uberblock's magic.
const ZFS_MAGIC: u64 = 0x00ba_b10c;
/// A ZFS label's size; the uberblock ring is its second half, in 1 KiB slots or more.
const ZFS_LABEL: usize = 256 << 10;

/// Classifies a device of `size` bytes from its first bytes `head` and its last bytes
/// `tail` (each up to [`SPAN`]; a device smaller than that gives the same bytes twice).
pub fn classify(head: &[u8], tail: &[u8], size: u64) -> Contents {
    if let Some(t) = signature(head, tail, size) {
        return Contents::Known(t);
    }
    if head.iter().chain(tail).any(|&b| b != 0) {
        Contents::Data
    } else {
        Contents::Blank
    }
}

fn signature(head: &[u8], tail: &[u8], size: u64) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| bytes(head, off, magic.len()) == Some(magic);
    // The formats that start at sector 0 first, then those further in.
    if at(0, b"LUKS\xba\xbe") || at(0x4000, b"SKUL\xba\xbe") {
        return Some("crypto_LUKS");
    }
    if at(0, b"XFSB") {
        return Some("xfs");
    }
    if at(0, b"hsqs") {
        return Some("squashfs");
    }
    if (0..4).any(|s| at(s * 512, b"LABELONE") && at(s * 512 + 24, b"LVM2 001")) {
        return Some("LVM2_member");
    }
    if [0usize, 4096]
        .iter()
        .any(|&o| le32(head, o) == Some(MD_MAGIC))
    {
        return Some("linux_raid_member");
    }
    if at(4096 + 24, &BCACHE_MAGIC) {
        return Some("bcache");
    }
    if [4096usize, 8192, 16384, 65536]
        .iter()
        .any(|&p| at(p - 10, b"SWAPSPACE2") || at(p - 10, b"SWAP-SPACE"))
    {
        return Some("swap");
    }
    if at(0x10040, b"_BHRfS_M") {
        return Some("btrfs");
    }
    if le16(head, 1024 + 56) == Some(0xef53) {
        return Some("ext4");
    }
    if at(32769, b"CD001") {
        return Some("iso9660");
    }
    if md_at_end(tail, size) {
        return Some("linux_raid_member");
    }
    if zfs(head, 0) || zfs(tail, tail.len().saturating_sub(2 * ZFS_LABEL)) {
        return Some("zfs_member");
    }
    if at(512, b"EFI PART") {
        return Some("gpt");
    }
    if at(510, b"\x55\xaa") {
        // A FAT boot sector also ends so: told apart by its filesystem type string.
        if at(54, b"FAT") || at(82, b"FAT32") {
            return Some("vfat");
        }
        return Some("dos");
    }
    None
}

/// md 1.0 (8 KiB before the end, 4 KiB-aligned) and 0.90 (the last 64 KiB-aligned 64 KiB).
fn md_at_end(tail: &[u8], size: u64) -> bool {
    let start = size.saturating_sub(tail.len() as u64);
    let in_tail = |abs: u64| abs.checked_sub(start).and_then(|o| usize::try_from(o).ok());
    let v10 = (size.saturating_sub(8192)) & !4095;
    let v090 = (size & !65535).saturating_sub(65536);
    [v10, v090].iter().any(|&abs| {
        in_tail(abs).is_some_and(|o| {
            le32(tail, o) == Some(MD_MAGIC)
                || array(tail, o).map(u32::from_be_bytes) == Some(MD_MAGIC)
        })
    })
}

/// A ZFS uberblock magic in the rings of the two labels starting at `from` in `bytes`.
fn zfs(buf: &[u8], from: usize) -> bool {
    (0..2).any(|label| {
        let ring = from + label * ZFS_LABEL + ZFS_LABEL / 2;
        (0..128).any(|slot| {
            let o = ring + slot * 1024;
            le64(buf, o) == Some(ZFS_MAGIC)
                || array(buf, o).map(u64::from_be_bytes) == Some(ZFS_MAGIC)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with(off: usize, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; SPAN];
        v[off..off + bytes.len()].copy_from_slice(bytes);
        v
    }

    #[test]
    fn zeros_are_blank_and_one_byte_is_not() {
        let zero = vec![0u8; SPAN];
        assert_eq!(classify(&zero, &zero, 1 << 30), Contents::Blank);
        assert_eq!(
            classify(&with(700_000, b"x"), &zero, 1 << 30),
            Contents::Data
        );
        assert_eq!(
            classify(&zero, &with(SPAN - 1, b"x"), 1 << 30),
            Contents::Data
        );
        assert_eq!(classify(&[], &[], 0), Contents::Blank);
    }

    #[test]
    fn md_at_the_end_and_zfs_labels() {
        let size: u64 = 100 << 20;
        let zero = vec![0u8; SPAN];
        // md 1.0: 8 KiB before the end, 4 KiB-aligned.
        let off = (((size - 8192) & !4095) - (size - SPAN as u64)) as usize;
        let tail = with(off, &MD_MAGIC.to_le_bytes());
        assert_eq!(
            classify(&zero, &tail, size),
            Contents::Known("linux_raid_member")
        );
        // ZFS: an uberblock in label 2 (the last 512 KiB) and in label 0.
        let tail = with(
            SPAN - 2 * ZFS_LABEL + ZFS_LABEL / 2 + 3 * 1024,
            &ZFS_MAGIC.to_le_bytes(),
        );
        assert_eq!(classify(&zero, &tail, size), Contents::Known("zfs_member"));
        let head = with(ZFS_LABEL / 2, &ZFS_MAGIC.to_be_bytes());
        assert_eq!(classify(&head, &zero, size), Contents::Known("zfs_member"));
    }

    proptest! {
        #[test]
        fn never_panics_and_nonzero_is_never_blank(
            head in proptest::collection::vec(any::<u8>(), 0..70_000),
            tail in proptest::collection::vec(any::<u8>(), 0..70_000),
            size in any::<u64>(),
        ) {
            let c = classify(&head, &tail, size);
            if head.iter().chain(&tail).any(|&b| b != 0) {
                prop_assert_ne!(c, Contents::Blank);
            }
        }
    }
}
