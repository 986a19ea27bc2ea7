//! squashfs's superblock.

use super::bytes::{bytes, le16};
use super::{FsType, Identity};

/// squashfs 4 (the only version Linux mounts): `struct squashfs_super_block`
/// (fs/squashfs/squashfs_fs.h). It has neither label nor UUID.
pub(super) fn probe(head: &[u8]) -> Option<Identity> {
    // s_magic "hsqs" (0x73717368 le) at 0, s_major le16 at 28
    if bytes(head, 0, 4)? != b"hsqs" || le16(head, 28)? != 4 {
        return None;
    }
    Some(Identity {
        fstype: Some(FsType::Squashfs),
        ..Identity::default()
    })
}
