//! ext2/3/4's superblock (all mounted as ext4).

use super::bytes::{array, bytes, le16, le32, text_label, uuid_string};
use super::{FsType, Identity};

/// ext2/3/4: the superblock at 1 KiB (`struct ext4_super_block`, fs/ext4/ext4.h).
pub(super) fn probe(head: &[u8]) -> Option<Identity> {
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
