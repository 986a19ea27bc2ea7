//! PAX extended header records (POSIX.1-2017 pax, "pax Extended Header"), parsed as Go's
//! `archive/tar` parses them (`reader.go` `parsePAX`, `strconv.go` `parsePAXRecord`): each
//! record `"%d %s=%s\n"` with its own length in front; a key repeated keeps its last value;
//! GNU sparse format 0.0's repeated `GNU.sparse.offset`/`numbytes` records are joined into
//! one `GNU.sparse.map`, as format 0.1 writes it. A malformed record refuses the whole header.

use std::collections::BTreeMap;

use super::number;

/// A header's records, key to value (Go's `Header.PAXRecords`).
pub type Records = BTreeMap<Vec<u8>, Vec<u8>>;

/// The record prefix of extended attributes (star's, which GNU tar and Go use).
pub const XATTR: &[u8] = b"SCHILY.xattr.";

const SPARSE_OFFSET: &[u8] = b"GNU.sparse.offset";
const SPARSE_NUMBYTES: &[u8] = b"GNU.sparse.numbytes";
/// GNU sparse 0.1's map record, which 0.0's records become.
pub const SPARSE_MAP: &[u8] = b"GNU.sparse.map";

/// The records in an extended header's data; the error names the record Go refuses.
pub fn parse(mut data: &[u8]) -> Result<Records, String> {
    let mut records = Records::new();
    let mut sparse: Vec<&[u8]> = Vec::new();
    while !data.is_empty() {
        let Record { key, value, rest } = record(data)?;
        data = rest;
        if key == SPARSE_OFFSET || key == SPARSE_NUMBYTES {
            // Offsets and sizes alternate, starting with an offset.
            let want = if sparse.len().is_multiple_of(2) {
                SPARSE_OFFSET
            } else {
                SPARSE_NUMBYTES
            };
            if key != want || value.contains(&b',') {
                return Err(format!(
                    "GNU sparse 0.0 record {}={} out of order",
                    show(key),
                    show(value)
                ));
            }
            sparse.push(value);
        } else {
            records.insert(key.to_vec(), value.to_vec());
        }
    }
    if !sparse.is_empty() {
        records.insert(SPARSE_MAP.to_vec(), sparse.join(&b','));
    }
    Ok(records)
}

/// One record and the bytes after it.
struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    rest: &'a [u8],
}

/// One record at the start of `s` (Go's `parsePAXRecord`).
fn record(s: &[u8]) -> Result<Record<'_>, String> {
    let bad = |why: &str| {
        let shown = &s[..s.len().min(40)];
        format!("malformed PAX record {}: {why}", show(shown))
    };
    let sp = s
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| bad("no length"))?;
    let n = number::int10(&s[..sp]).ok_or_else(|| bad("its length is not a number"))?;
    if n < 5 || n > s.len() as i64 || n <= sp as i64 + 1 {
        return Err(bad("its length is out of range"));
    }
    let n = n as usize;
    if s[n - 1] != b'\n' {
        return Err(bad("it does not end where its length says"));
    }
    let rec = &s[sp + 1..n - 1];
    let eq = rec
        .iter()
        .position(|&b| b == b'=')
        .ok_or_else(|| bad("no '='"))?;
    let (key, value) = (&rec[..eq], &rec[eq + 1..]);
    if key.is_empty() {
        return Err(bad("an empty key"));
    }
    // Go's validPAXRecord: NUL is refused in these values, and in every other key.
    let names = [&b"path"[..], b"linkpath", b"uname", b"gname"];
    if names.contains(&key) {
        if value.contains(&0) {
            return Err(bad("a NUL in its value"));
        }
    } else if key.contains(&0) {
        return Err(bad("a NUL in its key"));
    }
    Ok(Record {
        key,
        value,
        rest: &s[n..],
    })
}

/// Bytes for a message.
pub fn show(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

/// Writes records as a pax writer does (for tests and property tests).
pub fn write(records: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_as_go_reads_them() {
        let r = parse(&write(&[
            (b"path", b"ab"),
            (b"mtime", b"1.5"),
            (b"path", b"xyz"),
        ]))
        .unwrap();
        assert_eq!(r[&b"path"[..]], b"xyz");
        assert_eq!(r[&b"mtime"[..]], b"1.5");
        assert_eq!(write(&[(b"path", b"ab")]), b"11 path=ab\n");
        // A length with a sign still counts, as strconv.ParseInt reads it.
        assert_eq!(parse(b"+12 path=ab\n").unwrap()[&b"path"[..]], b"ab");
        for bad in [
            &b"11 path=ab"[..],
            b"12 path=ab\n",
            b"4 a=\n",
            b"x path=a\n",
            b"8 =abcd\n",
            b"10 pathab\n",
            b"13 path=a\0bc\n",
            b"15 comm\0ent=ab\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A NUL in another key's value is fine.
        assert!(parse(b"15 comment=a\0b\n").is_ok());
    }

    #[test]
    fn sparse_0_0_records_become_a_map() {
        let data = write(&[
            (b"GNU.sparse.size", b"100"),
            (b"GNU.sparse.offset", b"0"),
            (b"GNU.sparse.numbytes", b"1"),
            (b"GNU.sparse.offset", b"50"),
            (b"GNU.sparse.numbytes", b"50"),
        ]);
        assert_eq!(parse(&data).unwrap()[SPARSE_MAP], b"0,1,50,50");
        let twice = write(&[(b"GNU.sparse.offset", b"0"), (b"GNU.sparse.offset", b"1")]);
        assert!(parse(&twice).is_err());
    }

    proptest! {
        /// Written records read back, the last of a repeated key winning; any bytes read
        /// or refused without a panic.
        #[test]
        fn round_trip(recs in proptest::collection::vec(
            ("[a-zA-Z.]{1,20}", proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            junk in proptest::collection::vec(any::<u8>(), 0..200)) {
            let recs: Vec<(Vec<u8>, Vec<u8>)> = recs.into_iter()
                .filter(|(k, _)| !k.starts_with("GNU.sparse."))
                .map(|(k, mut v)| {
                    if ["path", "linkpath", "uname", "gname"].contains(&k.as_str()) {
                        v.retain(|&b| b != 0);
                    }
                    (k.into_bytes(), v)
                })
                .collect();
            let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let parsed = parse(&write(&refs)).unwrap();
            let mut want = Records::new();
            for (k, v) in &recs {
                want.insert(k.clone(), v.clone());
            }
            prop_assert_eq!(parsed, want);
            let _ = parse(&junk);
        }
    }
}
