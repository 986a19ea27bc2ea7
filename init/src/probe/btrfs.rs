//! btrfs's superblock.

use super::bytes::{array, bytes, le64, text_label, uuid_string};
use super::{FsType, Identity};

/// btrfs: the primary superblock at 64 KiB (`struct btrfs_super_block`, ctree.h).
pub(super) fn probe(head: &[u8]) -> Option<Identity> {
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
