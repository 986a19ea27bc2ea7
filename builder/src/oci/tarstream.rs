//! What a layer's tar stream may leave out or encode unusually, read the way the reference
//! unpackers read it. umoci, containerd and podman all read layers with Go's `archive/tar`;
//! where that reader and the `tar` crate differ on bytes real tools write, this module
//! makes terra decide as Go does, unless the bytes are unsafe.
//!
//! - [`TailReader`]: a stream that ends right after the last entry's data, without the
//!   padding to 512 bytes or the end-of-archive blocks (umoci 0.4.7's `insert` writes such
//!   layers), is accepted: Go's reader treats EOF where padding or a header would start as
//!   the end of the archive. Data shorter than its header says stays an error. Headers Go
//!   reads and the crate would not (signed checksums, blank or NUL-led numbers, a size on
//!   a type without data) are rewritten to what Go reads in them.
//! - [`SparseMap`]: GNU tar's PAX sparse formats 0.0, 0.1 and 1.0 (`GNU.sparse.*`
//!   records), which Go expands into the file they describe; the `tar` crate would
//!   otherwise unpack the packed data, map included, at `GNUSparseFile.0/NAME`.

use std::cell::{Cell, RefCell};
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
    /// Where the last entry header the framing read says its data starts, while the
    /// framing is in step with the stream.
    framed_data: Cell<Option<u64>>,
    /// Headers rewritten to say what Go's reader reads in them.
    rewritten: RefCell<Vec<String>>,
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

    /// Where the framing says the data of the entry whose header was read last starts
    /// (`None` once the framing stopped: after the end, or at bytes it does not follow).
    /// The entry loop checks the tar crate agrees.
    pub fn framed_data(&self) -> Option<u64> {
        self.framed_data.get()
    }

    /// The headers rewritten so far, one line each, for a debug log.
    pub fn rewritten(&self) -> Vec<String> {
        self.rewritten.borrow().clone()
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

/// A reader that reads a layer's tar stream as Go's `archive/tar` does, for the `tar`
/// crate above it:
///
/// - When the stream ends inside the padding after the current entry's data (as
///   [`Tail::set_data_end`] gave it), it supplies the missing zeros up to the block
///   boundary, so that the crate sees the end of the archive where Go's reader does. It
///   supplies nothing anywhere else: data or a header cut short still reads as truncated.
/// - It follows the stream's framing (headers, PAX and GNU extension data, old GNU sparse
///   extension blocks) and rewrites a header where the crate would read it otherwise than
///   Go: a checksum over signed bytes (historic Sun tar), numeric fields blank or padded
///   with leading NULs, and the size of a type Go reads no data for (links, devices,
///   directories, fifos), which Go takes as 0. A header whose checksum fails both ways is
///   passed on untouched (the crate refuses it) and the framing stops there.
///
/// It must sit directly under the tar reader (no buffer in between), so that it hears of
/// each entry before reading past it. The digests are checked below it, on the bytes as
/// they are.
pub struct TailReader<R> {
    inner: R,
    pos: u64,
    pad_left: u64,
    tail: Rc<Tail>,
    frame: Frame,
    /// A header block read whole, being served.
    pending: Vec<u8>,
    pending_off: usize,
}

impl<R: Read> TailReader<R> {
    /// Wraps `inner`; `tail` is shared with the entry loop.
    pub fn new(inner: R, tail: Rc<Tail>) -> Self {
        TailReader {
            inner,
            pos: 0,
            pad_left: 0,
            tail,
            frame: Frame::default(),
            pending: Vec::new(),
            pending_off: 0,
        }
    }

    fn at_eof(&mut self) {
        self.tail.eof.set(Some(self.pos));
        let end = self.tail.data_end.get();
        let block_end = end.next_multiple_of(BLOCK);
        if self.pos >= end && self.pos < block_end {
            self.pad_left = block_end - self.pos;
            self.tail.padded.set(self.pad_left);
        }
    }

    fn serve_pending(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.pending.len() - self.pending_off).min(buf.len());
        buf[..n].copy_from_slice(&self.pending[self.pending_off..self.pending_off + n]);
        self.pending_off += n;
        self.pos += n as u64;
        n
    }
}

impl<R: Read> Read for TailReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pending_off < self.pending.len() {
            return Ok(self.serve_pending(buf));
        }
        if self.tail.eof.get().is_none() {
            if self.frame.active && self.pos >= self.frame.next {
                // A header (or extension) block: read it whole before passing it on.
                let mut block = [0u8; BLOCK as usize];
                let mut got = 0;
                while got < block.len() {
                    match self.inner.read(&mut block[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if got == 0 {
                    self.at_eof();
                } else {
                    if got == block.len() {
                        self.frame.block(&mut block, self.pos, &self.tail);
                    } else {
                        // Cut short: passed on as it is, for the crate to refuse.
                        self.frame.stop(&self.tail);
                    }
                    self.pending = block[..got].to_vec();
                    self.pending_off = 0;
                    return Ok(self.serve_pending(buf));
                }
            } else {
                let want = if self.frame.active {
                    usize::try_from(self.frame.next - self.pos)
                        .unwrap_or(usize::MAX)
                        .min(buf.len())
                } else {
                    buf.len()
                };
                let n = self.inner.read(&mut buf[..want])?;
                if n > 0 {
                    self.frame.data(&buf[..n], self.pos, &self.tail);
                    self.pos += n as u64;
                    return Ok(n);
                }
                self.at_eof();
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

/// Where the stream's blocks are, as Go's reader walks them.
#[derive(Debug)]
struct Frame {
    /// Following the framing (false after the end or at bytes it cannot follow).
    active: bool,
    /// Stream offset of the next header or extension block.
    next: u64,
    /// The block at `next` is an old GNU sparse extension block, then the entry's data of
    /// this many bytes follows.
    sparse_ext: Option<u64>,
    /// A PAX extended header's data being read: (where it ends, the bytes so far).
    pax: Option<(u64, Vec<u8>)>,
    /// The `size` record of the PAX header for the next entry.
    pax_size: Option<u64>,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            active: true,
            next: 0,
            sparse_ext: None,
            pax: None,
            pax_size: None,
        }
    }
}

/// Numeric header fields: (name, range).
const NUMERIC: [(&str, std::ops::Range<usize>); 5] = [
    ("mode", 100..108),
    ("uid", 108..116),
    ("gid", 116..124),
    ("size", 124..136),
    ("mtime", 136..148),
];
const DEVICES: [(&str, std::ops::Range<usize>); 2] =
    [("devmajor", 329..337), ("devminor", 337..345)];
const CHKSUM: std::ops::Range<usize> = 148..156;

impl Frame {
    /// Stops following the framing: the rest passes through as it is.
    fn stop(&mut self, tail: &Tail) {
        self.active = false;
        tail.framed_data.set(None);
    }

    /// A whole block at `at`, where the framing expects a header or extension block;
    /// rewritten in place where the crate would read it otherwise than Go.
    fn block(&mut self, block: &mut [u8; BLOCK as usize], at: u64, tail: &Tail) {
        if let Some(size) = self.sparse_ext {
            // GNU sparse extension block: `isextended` at 504 says another follows.
            self.next = at + BLOCK;
            if block[504] == 0 {
                self.sparse_ext = None;
                self.next += size.next_multiple_of(BLOCK);
            }
            return;
        }
        if block.iter().all(|&b| b == 0) {
            // The end of the archive: the crate stops here too.
            self.stop(tail);
            return;
        }
        let stored = go_numeric(&block[CHKSUM]);
        let (unsigned, signed) = checksums(block);
        if stored != Some(unsigned) && stored != Some(signed) {
            self.stop(tail);
            return;
        }
        let kind = block[156];
        let mut fixed: Vec<String> = Vec::new();
        if stored != Some(unsigned) {
            fixed.push("its checksum is over signed bytes".into());
        }
        let devices = if matches!(kind, b'3' | b'4') {
            &DEVICES[..]
        } else {
            &[][..]
        };
        for (name, range) in NUMERIC.iter().chain(devices) {
            let field = &mut block[range.clone()];
            // A blank mode, uid, gid or mtime already reads as 0 (apply.rs's `meta`).
            let blank = field.iter().all(|&b| b == 0 || b == b' ');
            if blank && matches!(*name, "mode" | "uid" | "gid" | "mtime") {
                continue;
            }
            // Where Go cannot read it either, the crate refuses the entry as it is.
            if let Some(v) = go_numeric(field) {
                if crate_numeric(field) != Some(v) && write_octal(field, v) {
                    fixed.push(format!("{name} field {v} written as Go reads it"));
                }
            }
        }
        let header_end = at + BLOCK;
        let size = crate_numeric(&block[NUMERIC[3].1.clone()]).unwrap_or(0);
        let mut next = header_end;
        match kind {
            b'x' => {
                self.pax = (size > 0).then(|| (header_end + size, Vec::new()));
                self.pax_size = None;
                next += size.next_multiple_of(BLOCK);
            }
            // The crate hands a global header on as an entry.
            b'g' => {
                tail.framed_data.set(Some(header_end));
                next += size.next_multiple_of(BLOCK);
            }
            b'L' | b'K' => next += size.next_multiple_of(BLOCK),
            b'S' => {
                self.pax_size = None;
                tail.framed_data.set(Some(header_end));
                if block[482] != 0 {
                    self.sparse_ext = Some(size);
                } else {
                    next += size.next_multiple_of(BLOCK);
                }
            }
            b'1'..=b'6' => {
                // Go reads no data for these, whatever the size says.
                if size != 0 && self.pax_size.is_none() {
                    write_octal(&mut block[NUMERIC[3].1.clone()], 0);
                    fixed.push(format!(
                        "size {size} of a header-only type read as 0, as Go does"
                    ));
                }
                self.pax_size = None;
                tail.framed_data.set(Some(header_end));
            }
            _ => {
                let size = self.pax_size.take().unwrap_or(size);
                tail.framed_data.set(Some(header_end));
                next += size.next_multiple_of(BLOCK);
            }
        }
        self.next = next;
        if !fixed.is_empty() {
            block[CHKSUM].copy_from_slice(b"        ");
            let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
            write_octal(&mut block[CHKSUM][..7], sum);
            block[CHKSUM][7] = b' ';
            let name = String::from_utf8_lossy(&block[..100]);
            tail.rewritten.borrow_mut().push(format!(
                "the header at byte {at} ({:?}): {}",
                name.trim_end_matches('\0'),
                fixed.join(", ")
            ));
        }
    }

    /// Data bytes passing at `at`: a PAX header's are kept to find its `size` record.
    fn data(&mut self, bytes: &[u8], at: u64, tail: &Tail) {
        let Some((end, buf)) = &mut self.pax else {
            return;
        };
        let end = *end;
        if at < end {
            let take = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            buf.extend_from_slice(&bytes[..take]);
        }
        if at + bytes.len() as u64 >= end {
            let records = std::mem::take(buf);
            self.pax = None;
            match pax_size(&records) {
                Ok(size) => self.pax_size = size,
                // Records Go would refuse: the framing stops, the crate decides.
                Err(()) => self.stop(tail),
            }
        }
    }
}

/// The unsigned and signed sums of a header with its checksum field as spaces.
fn checksums(block: &[u8; BLOCK as usize]) -> (u64, u64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed as u64)
}

/// A numeric field as Go's `parseNumeric` reads it: base-256 when the top bit is set,
/// else octal with leading and trailing spaces and NULs trimmed (blank is 0).
pub fn go_numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return crate_numeric(field);
    }
    let trimmed = field
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .map(|start| {
            let end = field
                .iter()
                .rposition(|&b| b != b' ' && b != 0)
                .unwrap_or(start);
            &field[start..=end]
        })
        .unwrap_or(&[]);
    if trimmed.is_empty() {
        return Some(0);
    }
    let text = std::str::from_utf8(trimmed).ok()?;
    u64::from_str_radix(text, 8).ok()
}

/// A numeric field as the `tar` crate reads it: base-256 (its last 8 bytes) when the top
/// bit is set, else octal up to the first NUL with whitespace trimmed.
pub fn crate_numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field.len() > 8 && field[1..field.len() - 8].iter().any(|&b| b != 0) {
            return None;
        }
        let tail = &field[field.len().saturating_sub(8)..];
        let mut v = 0u64;
        for (i, &b) in tail.iter().enumerate() {
            let b = if i == 0 && field.len() == 8 {
                b & 0x7f
            } else {
                b
            };
            v = (v << 8) | u64::from(b);
        }
        return Some(v);
    }
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?;
    u64::from_str_radix(text.trim(), 8).ok()
}

/// Writes `v` as zero-padded octal and a NUL; false when it does not fit.
fn write_octal(field: &mut [u8], v: u64) -> bool {
    let digits = format!("{v:o}");
    let width = field.len() - 1;
    if digits.len() > width {
        return false;
    }
    let text = format!("{digits:0>width$}");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
    true
}

/// The `size` record of PAX extended header data ("%d %s=%s\n" records); `Err` when the
/// records are malformed.
fn pax_size(mut data: &[u8]) -> Result<Option<u64>, ()> {
    let mut size = None;
    while !data.is_empty() {
        let sp = data.iter().position(|&b| b == b' ').ok_or(())?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(())?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(());
        }
        let record = &data[sp + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or(())?;
        if &record[..eq] == b"size" {
            let v = std::str::from_utf8(&record[eq + 1..]).map_err(drop)?;
            size = Some(v.parse::<u64>().map_err(drop)?);
        }
        data = &data[len..];
    }
    Ok(size)
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

    /// A tar archive from the crate's writer: files (long names too, some with PAX
    /// records), directories, symlinks with long targets, hardlinks.
    fn archive(entries: &[(u8, usize, usize, bool)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (i, &(kind, name_len, size, pax)) in entries.iter().enumerate() {
            let name = format!("{i}-{}", "n".repeat(name_len));
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_mtime(1);
            if pax {
                b.append_pax_extensions([("SCHILY.xattr.user.x", &b"v"[..])])
                    .unwrap();
            }
            match kind % 4 {
                0 => {
                    h.set_size(size as u64);
                    b.append_data(&mut h, &name, &vec![7u8; size][..]).unwrap();
                }
                1 => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, &name, io::empty()).unwrap();
                }
                2 => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &name, "t".repeat(size % 300 + 1))
                        .unwrap();
                }
                _ => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &name, "0-x").unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    proptest! {
        /// What the crate's writer makes passes through unchanged, read in any chunks.
        #[test]
        fn well_formed_archives_pass_unchanged(
            entries in proptest::collection::vec((any::<u8>(), 0usize..220, 0usize..1500, any::<bool>()), 0..12),
            chunk in 1usize..2000) {
            let tar = archive(&entries);
            let tail = Rc::new(Tail::default());
            let mut r = TailReader::new(&tar[..], tail.clone());
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 { break; }
                out.extend_from_slice(&buf[..n]);
            }
            prop_assert!(out == tar);
            prop_assert!(tail.rewritten().is_empty());
        }

        /// Any bytes, or a well-formed archive with bytes changed: read to the end without
        /// a panic, and never longer than the input plus one block of padding.
        #[test]
        fn damaged_archives_never_panic(
            entries in proptest::collection::vec((any::<u8>(), 0usize..120, 0usize..700, any::<bool>()), 0..6),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
            cut in any::<usize>(), chunk in 1usize..1500, end in 0u64..4096) {
            let mut tar = archive(&entries);
            for (at, b) in flips {
                let n = tar.len();
                tar[at % n] = b;
            }
            let cut = cut % (tar.len() + 1);
            let tail = Rc::new(Tail::default());
            tail.set_data_end(end);
            let mut r = TailReader::new(&tar[..cut], tail.clone());
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 { break; }
                out.extend_from_slice(&buf[..n]);
            }
            prop_assert!(out.len() as u64 <= cut as u64 + BLOCK);
        }

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
