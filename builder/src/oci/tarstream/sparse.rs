//! GNU tar's sparse files, read as Go's `archive/tar` reads them (`reader.go`
//! `readOldGNUSparseMap`, `readGNUSparsePAXHeaders`, `readGNUSparseMap1x0`,
//! `readGNUSparseMap0x1`; `common.go` `validateSparseEntries`, `invertSparseEntries`): the old
//! GNU `S` entry with its map in the header and extension blocks, and the PAX formats 0.0
//! and 0.1 (the map in records) and 1.0 (the map at the start of the data, in blocks). The
//! entry's data holds only the map's chunks, one after another.

use super::number::{self, DecimalParser};
use super::pax::{Records, SPARSE_MAP};

/// (offset, length) of each data chunk of a sparse file (Go's `sparseDatas`).
pub type Map = Vec<(i64, i64)>;

/// Chunks one map may hold. Go sets no bound (a map costs it as much memory as the archive
/// spends on it); terra refuses maps beyond this many chunks, far more than any file has.
pub const MAX_CHUNKS: usize = 1 << 22;

/// Adds old GNU map entries (offset and length fields) to `map`; the first entry whose
/// offset field starts with NUL ends the block's list (as in GNU, BSD and Go's tar).
pub fn push_old_gnu<'a>(
    map: &mut Map,
    entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(), String> {
    for (off, len) in entries {
        if off[0] == 0 {
            break;
        }
        let o = number::numeric(off)
            .ok_or_else(|| format!("sparse map offset {:?} is not a number", lossy(off)))?;
        let l = number::numeric(len)
            .ok_or_else(|| format!("sparse map length {:?} is not a number", lossy(len)))?;
        if map.len() >= MAX_CHUNKS {
            return Err(format!("a sparse map of more than {MAX_CHUNKS} chunks"));
        }
        map.push((o, l));
    }
    Ok(())
}

/// Which PAX sparse format `records` describe: `Some(true)` for 1.0 (map in the data),
/// `Some(false)` for 0.0 and 0.1 (map in the records), `None` for no sparse file or a
/// version Go does not know (then the entry is an ordinary file).
pub fn pax_format(records: &Records) -> Option<bool> {
    let get = |k: &[u8]| records.get(k).map_or(&[][..], Vec::as_slice);
    match (get(b"GNU.sparse.major"), get(b"GNU.sparse.minor")) {
        (b"0", b"0" | b"1") => Some(false),
        (b"1", b"0") => Some(true),
        (b"", b"") => (!get(SPARSE_MAP).is_empty()).then_some(false),
        _ => None,
    }
}

/// The real name and size a PAX sparse entry's records give (`GNU.sparse.name`,
/// `GNU.sparse.size` or `realsize`); empty values give nothing.
pub fn pax_name_size(records: &Records) -> Result<(Option<&[u8]>, Option<i64>), String> {
    let get = |k: &[u8]| records.get(k).filter(|v| !v.is_empty()).map(Vec::as_slice);
    let name = get(b"GNU.sparse.name");
    let size = match get(b"GNU.sparse.size").or_else(|| get(b"GNU.sparse.realsize")) {
        Some(s) => Some(
            number::int10(s)
                .ok_or_else(|| format!("sparse size {:?} is not a number", lossy(s)))?,
        ),
        None => None,
    };
    Ok((name, size))
}

/// Format 0.0/0.1's map from its records (`GNU.sparse.numblocks` and `GNU.sparse.map`).
pub fn map_0x1(records: &Records) -> Result<Map, String> {
    let get = |k: &[u8]| records.get(k).map_or(&[][..], Vec::as_slice);
    let n = get(b"GNU.sparse.numblocks");
    let count = number::int10(n)
        .filter(|&c| c >= 0 && c.checked_mul(2).is_some())
        .ok_or_else(|| format!("sparse numblocks {:?} is not a count", lossy(n)))?;
    let text = get(SPARSE_MAP);
    let fields: Vec<&[u8]> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(|&b| b == b',').collect()
    };
    if fields.len() as i64 != 2 * count {
        return Err(format!(
            "sparse map of {} numbers for {count} chunks",
            fields.len()
        ));
    }
    fields
        .chunks(2)
        .map(|p| match (number::int10(p[0]), number::int10(p[1])) {
            (Some(o), Some(l)) => Ok((o, l)),
            _ => Err(format!("sparse map {:?} holds a non-number", lossy(text))),
        })
        .collect()
}

/// Format 1.0's map, fed block by block from the start of the entry's data: decimal
/// numbers each ending in a newline, the count first, then offset and length of each
/// chunk. Like Go, it reads blocks until it has every number's newline, and only then
/// refuses a number it cannot read.
#[derive(Debug, Default)]
pub struct Map1x0 {
    /// Numbers wanted after the count, once the count is read.
    want: Option<i64>,
    seen: i64,
    num: DecimalParser,
    offset: Option<i64>,
    map: Map,
    bad: Option<String>,
}

impl Map1x0 {
    /// Feeds the next block; `Ok(Some(map))` once the map is complete (the rest of that
    /// block is padding), `Ok(None)` when it needs another block.
    pub fn feed(&mut self, block: &[u8]) -> Result<Option<Map>, String> {
        for &b in block {
            if self.done() {
                break;
            }
            if b != b'\n' {
                self.num.push(b);
                continue;
            }
            let v = self.num.finish();
            match self.want {
                None => {
                    let n = v
                        .filter(|&n| n >= 0 && n.checked_mul(2).is_some())
                        .ok_or("sparse map: its count is not a number")?;
                    self.want = Some(2 * n);
                }
                Some(_) => {
                    self.seen += 1;
                    match (v, self.offset.take()) {
                        (None, _) => {
                            self.bad
                                .get_or_insert_with(|| "sparse map: a non-number in it".into());
                        }
                        (Some(o), None) => self.offset = Some(o),
                        (Some(l), Some(o)) if self.bad.is_none() => {
                            if self.map.len() >= MAX_CHUNKS {
                                self.bad =
                                    Some(format!("a sparse map of more than {MAX_CHUNKS} chunks"));
                            } else {
                                self.map.push((o, l));
                            }
                        }
                        (Some(_), Some(_)) => {}
                    }
                }
            }
        }
        if !self.done() {
            return Ok(None);
        }
        match self.bad.take() {
            Some(e) => Err(e),
            None => Ok(Some(std::mem::take(&mut self.map))),
        }
    }

    fn done(&self) -> bool {
        self.want.is_some_and(|w| self.seen >= w)
    }
}

/// Go's `validateSparseEntries`: chunks not negative, within `size`, in order, apart.
pub fn validate(map: &Map, size: i64) -> Result<(), String> {
    if size < 0 {
        return Err(format!("sparse file of size {size}"));
    }
    let mut prev_end = 0i64;
    for &(off, len) in map {
        let end = off.checked_add(len);
        let ok = off >= 0 && len >= 0 && end.is_some_and(|e| e <= size) && prev_end <= off;
        if !ok {
            return Err(format!(
                "sparse chunk {off}+{len} is negative, out of order or past the file's size {size}"
            ));
        }
        prev_end = off + len;
    }
    Ok(())
}

/// The data chunks of a validated map, empty ones left out and touching ones joined: where
/// the entry's data goes, in order.
pub fn regions(map: &Map) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in map {
        if len == 0 {
            continue;
        }
        let (off, len) = (off as u64, len as u64);
        match out.last_mut() {
            Some(last) if last.0 + last.1 == off => last.1 += len,
            _ => out.push((off, len)),
        }
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn recs(r: &[(&str, &str)]) -> Records {
        r.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn pax_formats_as_go_tells_them() {
        assert_eq!(
            pax_format(&recs(&[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0")
            ])),
            Some(true)
        );
        assert_eq!(
            pax_format(&recs(&[
                ("GNU.sparse.major", "0"),
                ("GNU.sparse.minor", "1")
            ])),
            Some(false)
        );
        assert_eq!(pax_format(&recs(&[("GNU.sparse.map", "0,1")])), Some(false));
        assert_eq!(pax_format(&recs(&[("GNU.sparse.map", "")])), None);
        assert_eq!(
            pax_format(&recs(&[
                ("GNU.sparse.major", "2"),
                ("GNU.sparse.map", "0,1")
            ])),
            None
        );
        assert_eq!(pax_format(&recs(&[("path", "x")])), None);
    }

    #[test]
    fn map_0x1_needs_its_count() {
        let m = map_0x1(&recs(&[
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.map", "0,10,9000,1000"),
        ]));
        assert_eq!(m.unwrap(), [(0, 10), (9000, 1000)]);
        assert_eq!(
            map_0x1(&recs(&[("GNU.sparse.numblocks", "0")])).unwrap(),
            []
        );
        assert!(map_0x1(&recs(&[("GNU.sparse.map", "0,10")])).is_err());
        assert!(map_0x1(&recs(&[
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.map", "0,10")
        ]))
        .is_err());
        assert!(map_0x1(&recs(&[
            ("GNU.sparse.numblocks", "1"),
            ("GNU.sparse.map", "0,x")
        ]))
        .is_err());
    }

    #[test]
    fn map_1x0_reads_whole_blocks() {
        let mut block = b"2\n0\n5\n100\n3\n".to_vec();
        block.resize(512, 0);
        let mut m = Map1x0::default();
        assert_eq!(m.feed(&block).unwrap().unwrap(), [(0, 5), (100, 3)]);
        // Split over two blocks.
        let mut m = Map1x0::default();
        let mut a = vec![b'0'; 510];
        a[509] = b'1';
        a.push(b'\n');
        a.push(b'7');
        assert_eq!(m.feed(&a).unwrap(), None);
        let mut b = b"\n8\n".to_vec();
        b.resize(512, 0);
        assert_eq!(m.feed(&b).unwrap().unwrap(), [(7, 8)]);
        // A bad number is refused once every newline is in.
        let mut m = Map1x0::default();
        let mut b = b"2\nx\n5\n".to_vec();
        b.resize(512, 0);
        assert_eq!(m.feed(&b).unwrap(), None);
        let mut c = b"1\n1\n".to_vec();
        c.resize(512, 0);
        assert!(m.feed(&c).is_err());
        let mut b = b"-1\n".to_vec();
        b.resize(512, 0);
        assert!(Map1x0::default().feed(&b).is_err());
    }

    #[test]
    fn validation_and_regions() {
        assert!(validate(&vec![(0, 10), (10, 5)], 15).is_ok());
        assert!(validate(&vec![(0, 10), (5, 5)], 15).is_err());
        assert!(validate(&vec![(0, 16)], 15).is_err());
        assert!(validate(&vec![(-1, 1)], 15).is_err());
        assert!(validate(&vec![(i64::MAX, 1)], i64::MAX).is_err());
        assert!(validate(&vec![], -1).is_err());
        assert_eq!(
            regions(&vec![(0, 10), (10, 5), (20, 0), (30, 1)]),
            [(0, 15), (30, 1)]
        );
    }

    proptest! {
        /// Any bytes as a 1.0 map, in any blocks: a map, a request for more, or an error,
        /// never a panic; what is returned is what was written.
        #[test]
        fn map_1x0_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                chunks in proptest::collection::vec((0i64..1 << 40, 0i64..1 << 40), 0..50)) {
            let mut m = Map1x0::default();
            for b in bytes.chunks(512) {
                if !matches!(m.feed(b), Ok(None)) {
                    break;
                }
            }
            let mut text = format!("{}\n", chunks.len());
            for (o, l) in &chunks {
                text.push_str(&format!("{o}\n{l}\n"));
            }
            let mut data = text.into_bytes();
            data.resize(data.len().next_multiple_of(512), 0);
            let mut m = Map1x0::default();
            let mut got = None;
            for b in data.chunks(512) {
                if let Some(map) = m.feed(b).unwrap() {
                    got = Some(map);
                    break;
                }
            }
            prop_assert_eq!(got.unwrap(), chunks);
        }

        /// Any map: validation never panics, and a valid one's regions lie in the file,
        /// ascending, holding all its bytes.
        #[test]
        fn regions_of_valid_maps(map in proptest::collection::vec((-5i64..200, -5i64..200), 0..10),
                                 size in -5i64..2000) {
            if validate(&map, size).is_ok() {
                let r = regions(&map);
                let total: i64 = map.iter().map(|c| c.1).sum();
                prop_assert_eq!(r.iter().map(|c| c.1).sum::<u64>(), total as u64);
                let mut end = 0;
                for &(o, l) in &r {
                    prop_assert!(o >= end && o + l <= size as u64 && l > 0);
                    end = o + l;
                }
            }
        }
    }
}
