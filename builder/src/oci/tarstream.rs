//! What a layer's tar stream may leave out or encode unusually, read the way the reference
//! unpackers read it. umoci, containerd and podman all read layers with Go's `archive/tar`;
//! where that reader and the `tar` crate differ on bytes real tools write, this module
//! makes terra decide as Go does, unless the bytes are unsafe.
//!
//! - [`TailReader`]: a stream that ends right after the last entry's data, without the
//!   padding to 512 bytes or the end-of-archive blocks (umoci 0.4.7's `insert` writes such
//!   layers), is accepted: Go's reader treats EOF where padding or a header would start as
//!   the end of the archive. Data shorter than its header says stays an error.
//! - [`SparseMap`]: GNU tar's PAX sparse formats 0.0, 0.1 and 1.0 (`GNU.sparse.*`
//!   records), which Go expands into the file they describe; the `tar` crate would
//!   otherwise unpack the packed data, map included, at `GNUSparseFile.0/NAME`.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// The tar block size.
pub const BLOCK: u64 = 512;

/// What [`TailReader`] saw at the end of the stream, shared with the entry loop that tells
/// it where the current entry's data ends.
#[derive(Debug, Default)]
pub struct Tail {
    data_end: Cell<u64>,
    eof: Cell<Option<u64>>,
    padded: Cell<u64>,
}

impl Tail {
    /// The entry being read has data up to stream offset `end` (exclusive).
    pub fn set_data_end(&self, end: u64) {
        self.data_end.set(end);
    }

    /// Where the stream ended, once it has.
    pub fn eof(&self) -> Option<u64> {
        self.eof.get()
    }

    /// Padding bytes supplied because the stream ended inside the last entry's padding.
    pub fn padded(&self) -> u64 {
        self.padded.get()
    }

    /// When the stream ended inside the current entry's data: (where it ended, where the
    /// data should have ended).
    pub fn truncated(&self) -> Option<(u64, u64)> {
        let end = self.data_end.get();
        self.eof.get().filter(|&at| at < end).map(|at| (at, end))
    }

    /// What was lenient about the end of the stream, for a debug line; `None` when the
    /// stream ended as POSIX says (it may still end after one zero block, as Go allows).
    pub fn note(&self) -> Option<String> {
        let at = self.eof.get()?;
        let end = self.data_end.get();
        let padded = self.padded.get();
        if padded > 0 {
            Some(format!(
                "the stream ends at byte {at}, after the last entry's data: its {padded} \
                 padding bytes and the end-of-archive blocks are missing"
            ))
        } else if at == end.next_multiple_of(BLOCK) {
            Some(format!(
                "the stream ends at byte {at} without the end-of-archive blocks"
            ))
        } else {
            None
        }
    }
}

/// A reader that, when the stream ends inside the padding after the current entry's data
/// (as [`Tail::set_data_end`] gave it), supplies the missing zeros up to the block
/// boundary, so that the `tar` crate sees the end of the archive where Go's reader does.
/// It supplies nothing anywhere else: an entry whose data is cut short, or a header cut
/// short, still reads as truncated. It must sit directly under the tar reader (no buffer
/// in between), so that it hears of each entry before reading past it.
pub struct TailReader<R> {
    inner: R,
    pos: u64,
    pad_left: u64,
    tail: Rc<Tail>,
}

impl<R: Read> TailReader<R> {
    /// Wraps `inner`; `tail` is shared with the entry loop.
    pub fn new(inner: R, tail: Rc<Tail>) -> Self {
        TailReader {
            inner,
            pos: 0,
            pad_left: 0,
            tail,
        }
    }
}

impl<R: Read> Read for TailReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.tail.eof.get().is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.tail.eof.set(Some(self.pos));
            let end = self.tail.data_end.get();
            let block_end = end.next_multiple_of(BLOCK);
            if self.pos >= end && self.pos < block_end {
                self.pad_left = block_end - self.pos;
                self.tail.padded.set(self.pad_left);
            }
        }
        let n = usize::try_from(self.pad_left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        buf[..n].fill(0);
        self.pad_left -= n as u64;
        Ok(n)
    }
}

/// A sparse file's layout: where its data chunks go, and its full size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    /// The file's size, holes included.
    pub real_size: u64,
    /// (offset, length) of each data chunk, ascending and not overlapping; the chunks'
    /// bytes follow one another in the entry's data.
    pub chunks: Vec<(u64, u64)>,
    /// Whether the map is at the start of the entry's data (format 1.0), in whole blocks.
    pub map_in_data: bool,
    /// The file's real name (`GNU.sparse.name`), when given.
    pub name: Option<Vec<u8>>,
}

impl SparseMap {
    /// The map described by an entry's PAX records, as Go's `archive/tar` reads them
    /// (`readGNUSparsePAXHeaders`): `Ok(None)` when the records describe no sparse file,
    /// or an unknown version of it (then the entry is an ordinary file). For format 1.0
    /// `chunks` is empty until [`SparseMap::read_map`] reads it from the data.
    pub fn from_pax(records: &[(String, Vec<u8>)]) -> Result<Option<SparseMap>, String> {
        let get = |k: &str| {
            records
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_slice())
        };
        let text = |k: &str| get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        // Format 0.0 repeats offset/numbytes records; Go joins them into one map.
        let mut joined = Vec::new();
        for (k, v) in records {
            if k == "GNU.sparse.offset" || k == "GNU.sparse.numbytes" {
                joined.push(String::from_utf8_lossy(v).into_owned());
            }
        }
        let map = text("GNU.sparse.map").or_else(|| (!joined.is_empty()).then(|| joined.join(",")));
        let (major, minor) = (text("GNU.sparse.major"), text("GNU.sparse.minor"));
        let v1 = match (major.as_deref(), minor.as_deref()) {
            (Some("0"), Some("0" | "1")) => false,
            (Some("1"), Some("0")) => true,
            (Some(_), _) | (_, Some(_)) => return Ok(None),
            (None, None) if map.as_deref().is_some_and(|m| !m.is_empty()) => false,
            (None, None) => return Ok(None),
        };
        let size = text("GNU.sparse.size").or_else(|| text("GNU.sparse.realsize"));
        let real_size = match size {
            Some(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("sparse file: bad real size {s:?}"))?,
            None => return Err("sparse file without a real size".into()),
        };
        let chunks = if v1 {
            Vec::new()
        } else {
            let map = map.unwrap_or_default();
            let nums: Vec<u64> = if map.is_empty() {
                Vec::new()
            } else {
                map.split(',')
                    .map(|n| n.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("sparse file: bad map {map:?}"))?
            };
            if !nums.len().is_multiple_of(2) {
                return Err(format!("sparse file: odd map {map:?}"));
            }
            if let Some(n) = text("GNU.sparse.numblocks") {
                if n.trim().parse::<usize>().ok() != Some(nums.len() / 2) {
                    return Err(format!(
                        "sparse file: numblocks {n:?} but {} chunks",
                        nums.len() / 2
                    ));
                }
            }
            nums.chunks(2).map(|c| (c[0], c[1])).collect()
        };
        let m = SparseMap {
            real_size,
            chunks,
            map_in_data: v1,
            name: get("GNU.sparse.name")
                .filter(|n| !n.is_empty())
                .map(<[u8]>::to_vec),
        };
        m.validate()?;
        Ok(Some(m))
    }

    /// Reads format 1.0's map from the start of the entry's data: decimal numbers, each
    /// ending in a newline (the count, then offset and length of each chunk), padded with
    /// zeros to a whole block. Returns the bytes of data it used.
    pub fn read_map(&mut self, data: &mut impl Read, data_size: u64) -> Result<u64, String> {
        // Go bounds the map the same way (maxSpecialFileSize); a real map is far smaller.
        const LIMIT: u64 = 1 << 20;
        let mut used = 0u64;
        let mut block = [0u8; BLOCK as usize];
        let mut pending: Vec<u8> = Vec::new();
        let mut nums: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        loop {
            if want.is_some_and(|w| nums.len() as u64 == 1 + 2 * w) {
                break;
            }
            if used + BLOCK > data_size.min(LIMIT) {
                return Err("sparse file: map runs past the entry's data".into());
            }
            data.read_exact(&mut block)
                .map_err(|e| format!("sparse file: reading its map: {e}"))?;
            used += BLOCK;
            for &b in &block {
                if want.is_some_and(|w| nums.len() as u64 == 1 + 2 * w) {
                    break;
                }
                if b == b'\n' {
                    let s = std::str::from_utf8(&pending).unwrap_or("");
                    let n: u64 = s
                        .parse()
                        .map_err(|_| format!("sparse file: bad map number {s:?}"))?;
                    nums.push(n);
                    pending.clear();
                    if nums.len() == 1 {
                        if n > LIMIT / 2 {
                            return Err(format!("sparse file: {n} chunks"));
                        }
                        want = Some(n);
                    }
                } else if b.is_ascii_digit() && pending.len() < 20 {
                    pending.push(b);
                } else {
                    return Err(format!("sparse file: bad byte {b:#04x} in its map"));
                }
            }
        }
        self.chunks = nums[1..].chunks(2).map(|c| (c[0], c[1])).collect();
        self.validate()?;
        Ok(used)
    }

    /// Chunks ascending, not overlapping, within the file (Go's `validateSparseEntries`).
    fn validate(&self) -> Result<(), String> {
        let mut prev_end = 0u64;
        for &(off, len) in &self.chunks {
            let end = off
                .checked_add(len)
                .ok_or_else(|| format!("sparse file: chunk at {off} overflows"))?;
            if off < prev_end || end > self.real_size {
                return Err(format!(
                    "sparse file: chunk {off}+{len} out of order or past its size {}",
                    self.real_size
                ));
            }
            prev_end = end;
        }
        Ok(())
    }

    /// Bytes of data the chunks hold.
    pub fn data_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(k: &str, v: &str) -> (String, Vec<u8>) {
        (k.to_string(), v.as_bytes().to_vec())
    }

    fn drain(r: &mut impl Read) -> (Vec<u8>, io::Result<()>) {
        let mut out = Vec::new();
        let res = r.read_to_end(&mut out).map(drop);
        (out, res)
    }

    #[test]
    fn padding_is_supplied_only_after_complete_data() {
        // One header (512) and 3 bytes of data, as umoci insert wrote it.
        let stream = vec![7u8; 515];
        let tail = Rc::new(Tail::default());
        tail.set_data_end(515);
        let mut r = TailReader::new(&stream[..], tail.clone());
        let (out, res) = drain(&mut r);
        res.unwrap();
        assert_eq!(out.len(), 1024);
        assert!(out[515..].iter().all(|&b| b == 0));
        assert_eq!((tail.eof(), tail.padded()), (Some(515), 509));
        assert!(tail.note().unwrap().contains("509 padding bytes"));
        assert_eq!(tail.truncated(), None);
        // The data itself cut short: nothing supplied, and it says so.
        let tail = Rc::new(Tail::default());
        tail.set_data_end(600);
        let (out, _) = drain(&mut TailReader::new(&stream[..], tail.clone()));
        assert_eq!(out.len(), 515);
        assert_eq!(tail.truncated(), Some((515, 600)));
        // A header cut short after a header-only entry: nothing supplied.
        let tail = Rc::new(Tail::default());
        tail.set_data_end(512);
        let (out, _) = drain(&mut TailReader::new(&stream[..], tail.clone()));
        assert_eq!((out.len(), tail.padded()), (515, 0));
        assert_eq!(tail.note(), None);
        // Ending on a block boundary: only the end-of-archive blocks are missing.
        let tail = Rc::new(Tail::default());
        tail.set_data_end(1000);
        let (out, _) = drain(&mut TailReader::new(&[1u8; 1024][..], tail.clone()));
        assert_eq!(out.len(), 1024);
        assert!(tail.note().unwrap().contains("without the end-of-archive"));
    }

    #[test]
    fn pax_sparse_versions() {
        let m = SparseMap::from_pax(&[
            rec("GNU.sparse.major", "1"),
            rec("GNU.sparse.minor", "0"),
            rec("GNU.sparse.name", "big"),
            rec("GNU.sparse.realsize", "10000"),
        ])
        .unwrap()
        .unwrap();
        assert!(m.map_in_data && m.chunks.is_empty());
        assert_eq!((m.real_size, m.name.as_deref()), (10000, Some(&b"big"[..])));
        // 0.1: the map in one record.
        let m = SparseMap::from_pax(&[
            rec("GNU.sparse.size", "10000"),
            rec("GNU.sparse.numblocks", "2"),
            rec("GNU.sparse.map", "0,10,9000,1000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(m.chunks, [(0, 10), (9000, 1000)]);
        assert_eq!(m.data_len(), 1010);
        // 0.0: repeated records.
        let m = SparseMap::from_pax(&[
            rec("GNU.sparse.size", "100"),
            rec("GNU.sparse.numblocks", "2"),
            rec("GNU.sparse.offset", "0"),
            rec("GNU.sparse.numbytes", "1"),
            rec("GNU.sparse.offset", "50"),
            rec("GNU.sparse.numbytes", "50"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(m.chunks, [(0, 1), (50, 50)]);
        // Not sparse, or a version nobody knows: an ordinary file, as Go reads it.
        assert_eq!(SparseMap::from_pax(&[rec("path", "x")]).unwrap(), None);
        assert_eq!(
            SparseMap::from_pax(&[rec("GNU.sparse.major", "2"), rec("GNU.sparse.minor", "0")])
                .unwrap(),
            None
        );
        // Overlapping or past the end: refused.
        for map in ["0,10,5,10", "0,10,95,10", "1,x"] {
            assert!(SparseMap::from_pax(&[
                rec("GNU.sparse.size", "100"),
                rec("GNU.sparse.map", map)
            ])
            .is_err());
        }
    }

    #[test]
    fn map_1_0_from_data() {
        let mut data = b"2\n0\n5\n100\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcdexyz");
        let mut m = SparseMap {
            real_size: 103,
            chunks: vec![],
            map_in_data: true,
            name: None,
        };
        let used = m.read_map(&mut &data[..], data.len() as u64).unwrap();
        assert_eq!((used, m.chunks.clone()), (512, vec![(0, 5), (100, 3)]));
    }

    proptest! {
        /// Any bytes as a 1.0 map: an answer or an error, never a panic, and a map taken
        /// is consistent.
        #[test]
        fn map_1_0_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                real in 0u64..1_000_000) {
            let mut m = SparseMap { real_size: real, chunks: vec![], map_in_data: true, name: None };
            if let Ok(used) = m.read_map(&mut &bytes[..], bytes.len() as u64) {
                prop_assert!(used % BLOCK == 0 && used <= bytes.len() as u64);
                prop_assert!(m.chunks.iter().all(|&(o, l)| o + l <= real));
            }
        }

        /// Any PAX records: an answer or an error, never a panic.
        #[test]
        fn pax_records_never_panic(recs in proptest::collection::vec(
            (prop_oneof![
                Just("GNU.sparse.major".to_string()), Just("GNU.sparse.minor".to_string()),
                Just("GNU.sparse.map".to_string()), Just("GNU.sparse.size".to_string()),
                Just("GNU.sparse.realsize".to_string()), Just("GNU.sparse.numblocks".to_string()),
                Just("GNU.sparse.offset".to_string()), Just("GNU.sparse.numbytes".to_string()),
                "[a-z.]{1,12}"
            ], "[0-9,x]{0,12}".prop_map(String::into_bytes)), 0..8)) {
            if let Ok(Some(m)) = SparseMap::from_pax(&recs) {
                prop_assert!(m.chunks.iter().all(|&(o, l)| o + l <= m.real_size));
            }
        }

        /// However the stream is cut, bytes are supplied only inside the padding after
        /// complete data, never in place of data or of a header.
        #[test]
        fn tail_supplies_only_padding(len in 0usize..3000, end in 0u64..3000) {
            let stream = vec![1u8; len];
            let tail = Rc::new(Tail::default());
            tail.set_data_end(end);
            let (out, res) = drain(&mut TailReader::new(&stream[..], tail.clone()));
            prop_assert!(res.is_ok());
            prop_assert!(out[..len].iter().all(|&b| b == 1));
            let extra = (out.len() - len) as u64;
            if extra > 0 {
                prop_assert!(len as u64 >= end);
                prop_assert_eq!(out.len() as u64 % BLOCK, 0);
                prop_assert_eq!(out.len() as u64, end.next_multiple_of(BLOCK));
            }
            prop_assert_eq!(tail.truncated().is_some(), (len as u64) < end);
        }
    }
}
