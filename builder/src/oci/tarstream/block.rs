//! One 512-byte tar header block, read as Go's `archive/tar` reads it (`reader.go`
//! `readHeader`, `format.go` `getFormat`): the checksum (unsigned or signed, as historic Sun
//! tar wrote it), the format its magic says (V7, ustar/PAX, GNU, star), names cut at their
//! first NUL, numbers as [`super::number`] parses them, and the ustar `prefix` joined to the
//! name, also where a GNU header holds one (Go before 1.8 wrote such headers). A field Go
//! cannot read is an error, as it is to Go (`ErrHeader`).

use std::ops::Range;

use super::number::{self, Time};

/// Bytes in a block.
pub const SIZE: usize = 512;

// Field offsets, POSIX.1-2017 pax "ustar Interchange Format" and GNU tar's `tar.h`.
const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE_FIELD: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const LINKNAME: Range<usize> = 157..257;
const MAGIC: Range<usize> = 257..263;
const VERSION: Range<usize> = 263..265;
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
/// ustar's `prefix`; in a GNU header these bytes are atime, ctime and the sparse map.
const PREFIX: Range<usize> = 345..500;
const STAR_PREFIX: Range<usize> = 345..476;
const STAR_ATIME: Range<usize> = 476..488;
const STAR_CTIME: Range<usize> = 488..500;
const STAR_TRAILER: Range<usize> = 508..512;
const GNU_ATIME: Range<usize> = 345..357;
const GNU_CTIME: Range<usize> = 357..369;

/// The format a header's magic says (Go's `Format`, as `getFormat` guesses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No magic: Unix V7.
    V7,
    /// `ustar\0` `00`: POSIX ustar, and pax.
    Ustar,
    /// `ustar ` ` \0`: GNU tar's own.
    Gnu,
    /// ustar magic with `tar\0` at the end: Jörg Schilling's star.
    Star,
}

/// A header block's fields as Go's reader reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The type flag, as it is.
    pub kind: u8,
    /// The name, with the ustar prefix joined in front where there is one.
    pub name: Vec<u8>,
    /// The link target.
    pub link: Vec<u8>,
    /// The size field (the data that follows, for types that have data).
    pub size: i64,
    /// The mode field (permissions, and file type bits some writers add).
    pub mode: i64,
    /// Owner.
    pub uid: i64,
    /// Group.
    pub gid: i64,
    /// Modification time (whole seconds).
    pub mtime: Time,
    /// Device numbers (0 in V7 headers).
    pub devmajor: i64,
    /// Device numbers (0 in V7 headers).
    pub devminor: i64,
    /// The format its magic says.
    pub format: Format,
    /// The checksum holds the sum over signed bytes (historic Sun tar), not unsigned.
    pub signed_checksum: bool,
    /// A GNU header whose atime/ctime bytes are a ustar prefix (a pre-1.8 Go writer's).
    pub gnu_prefix: bool,
}

/// Whether `b` is all zeros (an end-of-archive block).
pub fn is_zero(b: &[u8; SIZE]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// The unsigned and signed sums of `b` with its checksum field as spaces.
pub fn checksums(b: &[u8; SIZE]) -> (i64, i64) {
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (i, &c) in b.iter().enumerate() {
        let c = if CHKSUM.contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    (unsigned, signed)
}

/// The format of `b`, or why it is no header (Go's `getFormat` returning `FormatUnknown`).
pub fn format(b: &[u8; SIZE]) -> Result<(Format, bool), String> {
    let stored = number::octal(&b[CHKSUM])
        .ok_or_else(|| format!("checksum field {} is not a number", show(&b[CHKSUM])))?;
    let (unsigned, signed) = checksums(b);
    if stored != unsigned && stored != signed {
        return Err(format!(
            "checksum mismatch: the header says {stored:o}, its bytes sum to {unsigned:o}"
        ));
    }
    let magic = &b[MAGIC];
    let format = if magic == b"ustar\0" && &b[STAR_TRAILER] == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && &b[VERSION] == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    };
    Ok((format, stored != unsigned))
}

/// A name field: its bytes up to the first NUL (Go's `parseString`).
pub fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Reads header block `b`; the error says which field Go's reader cannot read.
pub fn parse(b: &[u8; SIZE]) -> Result<Block, String> {
    let (format, signed_checksum) = format(b)?;
    let num = |name: &str, r: Range<usize>| {
        number::numeric(&b[r.clone()])
            .ok_or_else(|| format!("its {name} field {} is not a number", show(&b[r])))
    };
    let mut name = cstr(&b[NAME]).to_vec();
    let mut block = Block {
        kind: b[TYPEFLAG],
        name: Vec::new(),
        link: cstr(&b[LINKNAME]).to_vec(),
        size: num("size", SIZE_FIELD)?,
        mode: num("mode", MODE)?,
        uid: num("uid", UID)?,
        gid: num("gid", GID)?,
        mtime: Time {
            secs: num("mtime", MTIME)?,
            nanos: 0,
        },
        devmajor: 0,
        devminor: 0,
        format,
        signed_checksum,
        gnu_prefix: false,
    };
    if format != Format::V7 {
        block.devmajor = num("devmajor", DEVMAJOR)?;
        block.devminor = num("devminor", DEVMINOR)?;
    }
    let prefix: &[u8] = match format {
        Format::V7 => &[],
        Format::Ustar => cstr(&b[PREFIX]),
        Format::Star => {
            num("atime", STAR_ATIME)?;
            num("ctime", STAR_CTIME)?;
            cstr(&b[STAR_PREFIX])
        }
        Format::Gnu => {
            // Go reads atime and ctime only where their first byte is set; where they are
            // not numbers, the bytes are taken as a ustar prefix if they are ASCII.
            let garbled = |r: Range<usize>| b[r.start] != 0 && number::numeric(&b[r]).is_none();
            let p = cstr(&b[PREFIX]);
            if (garbled(GNU_ATIME) || garbled(GNU_CTIME)) && p.is_ascii() {
                block.gnu_prefix = !p.is_empty();
                p
            } else {
                &[]
            }
        }
    };
    if !prefix.is_empty() {
        let mut joined = prefix.to_vec();
        joined.push(b'/');
        joined.append(&mut name);
        name = joined;
    }
    block.name = name;
    Ok(block)
}

/// A field's bytes for a message: printable ASCII as it is, others escaped.
pub fn show(field: &[u8]) -> String {
    format!("\"{}\"", field.escape_ascii())
}

/// The old GNU sparse fields of a header block: its map entries (offset, length fields),
/// whether extension blocks follow, and the real size field (GNU tar's `tar.h`).
pub fn gnu_sparse(b: &[u8; SIZE]) -> (impl Iterator<Item = (&[u8], &[u8])>, bool, &[u8]) {
    let entries = (0..4).map(move |i| {
        let at = 386 + i * 24;
        (&b[at..at + 12], &b[at + 12..at + 24])
    });
    (entries, b[482] != 0, &b[483..495])
}

/// The entries of an old GNU sparse extension block, and whether another follows.
pub fn gnu_sparse_ext(b: &[u8; SIZE]) -> (impl Iterator<Item = (&[u8], &[u8])>, bool) {
    let entries = (0..21).map(move |i| {
        let at = i * 24;
        (&b[at..at + 12], &b[at + 12..at + 24])
    });
    (entries, b[504] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ustar(name: &str, prefix: &str) -> [u8; SIZE] {
        let mut h = tar::Header::new_ustar();
        h.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_ustar_mut().unwrap().prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
        h.set_mode(0o644);
        h.set_mtime(5);
        h.set_size(3);
        h.set_cksum();
        *h.as_bytes()
    }

    fn reseal(b: &mut [u8; SIZE]) {
        b[CHKSUM].fill(b' ');
        let (sum, _) = checksums(b);
        b[CHKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn ustar_prefix_is_joined() {
        let b = parse(&ustar("foo", "dir/sub")).unwrap();
        assert_eq!(b.name, b"dir/sub/foo");
        assert_eq!(
            (b.format, b.size, b.mode, b.mtime.secs),
            (Format::Ustar, 3, 0o644, 5)
        );
    }

    #[test]
    fn gnu_header_with_a_prefix_in_its_time_fields() {
        // What Go 1.7's writer made: GNU magic, the prefix where atime and ctime are.
        let mut b = ustar("foo", &"a".repeat(99));
        b[MAGIC].copy_from_slice(b"ustar ");
        b[VERSION].copy_from_slice(b" \0");
        reseal(&mut b);
        let p = parse(&b).unwrap();
        assert_eq!(p.name, format!("{}/foo", "a".repeat(99)).into_bytes());
        assert!(p.gnu_prefix);
        // Real GNU times there: no prefix.
        b[PREFIX].fill(0);
        b[GNU_ATIME].copy_from_slice(b"00000000001\0");
        reseal(&mut b);
        assert_eq!(parse(&b).unwrap().name, b"foo");
    }

    #[test]
    fn unreadable_fields_are_errors() {
        let mut b = ustar("foo", "");
        b[MTIME].copy_from_slice(b"12345678901x");
        reseal(&mut b);
        assert!(parse(&b).unwrap_err().contains("mtime"));
        let mut b = ustar("foo", "");
        b[DEVMAJOR].copy_from_slice(b"9\0\0\0\0\0\0\0");
        reseal(&mut b);
        assert!(parse(&b).unwrap_err().contains("devmajor"));
        // In a V7 header the device fields are not read.
        b[MAGIC].fill(0);
        b[VERSION].fill(0);
        reseal(&mut b);
        assert!(parse(&b).is_ok());
        let mut b = ustar("foo", "");
        b[0] ^= 1;
        assert!(parse(&b).unwrap_err().contains("checksum mismatch"));
    }

    #[test]
    fn signed_checksums_are_read() {
        let mut b = ustar("caf\u{e9}", "");
        b[CHKSUM].fill(b' ');
        let (_, signed) = checksums(&b);
        b[CHKSUM].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let p = parse(&b).unwrap();
        assert!(p.signed_checksum);
        assert_eq!(p.name, "caf\u{e9}".as_bytes());
    }

    proptest! {
        /// Any bytes as a header: read or refused, never a panic; a valid checksum over
        /// arbitrary bytes is still refused only for unreadable numbers.
        #[test]
        fn any_block_never_panics(bytes in proptest::collection::vec(any::<u8>(), SIZE)) {
            let mut b = [0u8; SIZE];
            b.copy_from_slice(&bytes);
            let _ = parse(&b);
            reseal(&mut b);
            if let Err(e) = parse(&b) {
                prop_assert!(e.contains("is not a number"), "{}", e);
            }
        }

        /// Headers the tar crate's writer makes read back with their fields.
        #[test]
        fn written_headers_read_back(name in "[a-z]{1,20}(/[a-z]{1,20}){0,3}", size in 0u64..(1 << 33),
                                     mode in 0u32..0o7777, uid in 0u64..(1 << 21),
                                     mtime in 0u64..(1 << 33), gnu in any::<bool>()) {
            let mut h = if gnu { tar::Header::new_gnu() } else { tar::Header::new_ustar() };
            h.set_path(&name).unwrap();
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_mtime(mtime);
            h.set_cksum();
            let mut b = [0u8; SIZE];
            b.copy_from_slice(h.as_bytes());
            let p = parse(&b).unwrap();
            prop_assert_eq!(p.name, name.as_bytes());
            prop_assert_eq!((p.size, p.mode, p.uid, p.mtime.secs),
                            (size as i64, i64::from(mode), uid as i64, mtime as i64));
        }
    }
}
