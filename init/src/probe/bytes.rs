//! Checked views over a device's bytes: every access is bounds-checked and yields None past
//! the end, and the formatting blkid uses for labels, UUIDs and GUIDs.

use std::io::{self, Read, Seek, SeekFrom};

pub(super) fn bytes(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

pub(super) fn array<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    bytes(buf, off, N)?.try_into().ok()
}

pub(super) fn u8_at(buf: &[u8], off: usize) -> Option<u8> {
    buf.get(off).copied()
}

pub(super) fn le16(buf: &[u8], off: usize) -> Option<u16> {
    array(buf, off).map(u16::from_le_bytes)
}

pub(super) fn le32(buf: &[u8], off: usize) -> Option<u32> {
    array(buf, off).map(u32::from_le_bytes)
}

pub(super) fn le64(buf: &[u8], off: usize) -> Option<u64> {
    array(buf, off).map(u64::from_le_bytes)
}

/// Reads up to `len` bytes at `offset`; fewer (possibly none) when the device ends first.
/// A short read is not an error: it only means the structure looked for is not there.
pub(super) fn read_at<R: Read + Seek>(dev: &mut R, offset: u64, len: usize) -> io::Result<Vec<u8>> {
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
pub(super) fn text_label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(raw.get(..end)?);
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// A UUID stored in byte order (btrfs, ext4), as lowercase 8-4-4-4-12; all zeros is absent.
pub(super) fn uuid_string(b: &[u8; 16]) -> Option<String> {
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
pub(super) fn guid_string(b: &[u8; 16]) -> Option<String> {
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *b;
    let mut be = [0u8; 16];
    let head = [a3, a2, a1, a0, b1, b0, c1, c0];
    for (dst, src) in be.iter_mut().zip(head.iter().chain(rest.iter())) {
        *dst = *src;
    }
    uuid_string(&be)
}
