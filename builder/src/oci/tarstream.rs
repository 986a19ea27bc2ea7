//! A layer's tar stream, read exactly as Go's `archive/tar` reads it: umoci, containerd and
//! podman all unpack layers with that reader, so the tree terra makes from a layer is the
//! tree the tools that built and checked the image made of it, entry for entry. Where a
//! choice was made below, it is Go 1.19's (`reader.go`), named beside it.
//!
//! - Framing: a header block, then its data padded to whole blocks. The archive ends at two
//!   zero blocks, at one zero block and the end of the stream, at the end of the stream where
//!   a header or the padding would start (umoci 0.4.7's `insert` writes layers without
//!   padding or end blocks); a zero block followed by anything else, a header or data cut
//!   short, is an error. Types without data (links, devices, directories, fifos) have none,
//!   whatever their size says.
//! - Extension headers before an entry: PAX `x` records and GNU `L`/`K` long names; of
//!   several of one kind the last is used; a long name ends at its first NUL; a GNU long
//!   name wins over a PAX `path`. PAX `g` headers are returned as entries of their own and
//!   apply to nothing.
//! - Headers ([`block`]): a checksum over unsigned or signed bytes; numbers in octal (blank
//!   is 0, spaces and NULs around it ignored) or base-256; a field that is no number refuses
//!   the header; the ustar prefix joined to the name, also in a GNU header whose time fields
//!   hold one. PAX records ([`pax`]) override size, times, owner and names, and a record
//!   Go cannot read (an `mtime` that is not a time) refuses the entry.
//! - Sparse files ([`sparse`]): old GNU `S` entries with extension blocks, PAX 0.0, 0.1 and
//!   1.0; the entry's content is the file with its holes, and a map that disagrees with the
//!   data is an error.
//!
//! [`TarReader::next_entry`] returns each entry's [`Header`]; [`TarReader::read_chunk`] its content
//! as data and holes (or `Read`, holes as zeros). Errors say where in the stream and what.

pub mod block;
pub mod number;
pub mod pax;
pub mod sparse;

use std::fmt;
use std::io::{self, Read};

pub use number::Time;
pub use pax::Records;

/// The tar block size.
pub const BLOCK: u64 = 512;

/// Go's `maxSpecialFileSize`: the most data a PAX header or GNU long name may have.
const MAX_SPECIAL: u64 = 1 << 20;

/// One entry, as Go's `Reader.Next` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The type flag (`0` for regular files, the old NUL flag included; `5` for a NUL flag
    /// on a name ending in `/`; `S` for an old GNU sparse file; `g` for a PAX global header).
    pub kind: u8,
    /// The path, as the archive has it (GNU long name, PAX `path`, ustar prefix applied).
    pub name: Vec<u8>,
    /// The link target of hardlinks and symlinks.
    pub link: Vec<u8>,
    /// The content's size (a sparse file's with its holes).
    pub size: i64,
    /// The mode field, file type bits included where the writer put them.
    pub mode: i64,
    /// Owner.
    pub uid: i64,
    /// Group.
    pub gid: i64,
    /// Modification time.
    pub mtime: Time,
    /// Device numbers.
    pub devmajor: i64,
    /// Device numbers.
    pub devminor: i64,
    /// Extended attributes from `SCHILY.xattr.*` records with a value (Go's `Xattrs`).
    pub xattrs: Records,
    /// The PAX records that applied (Go's `PAXRecords`).
    pub pax: Records,
    /// Stream offset of the entry's own header block.
    pub offset: u64,
}

/// Types Go's reader gives no data (`isHeaderOnlyType`), whatever their size says.
pub fn header_only(kind: u8) -> bool {
    matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// Why a stream could not be read further. Each is one of Go's reader errors, which
/// [`TarError::kind`] names.
#[derive(Debug)]
pub enum TarError {
    /// A header, PAX record or sparse map Go refuses (`ErrHeader`).
    Header {
        /// Stream offset of the header block.
        at: u64,
        /// The entry's name as far as it was read (empty where there is none).
        entry: Vec<u8>,
        /// What is wrong with it.
        reason: String,
    },
    /// A PAX header or GNU long name of more than 1 MiB (`ErrFieldTooLong`).
    TooLong {
        /// Stream offset of its header.
        at: u64,
        /// Which.
        what: &'static str,
    },
    /// The stream ends inside a header, an extension or data (`io.ErrUnexpectedEOF`).
    Truncated {
        /// Where it ends.
        at: u64,
        /// What it ends inside.
        what: String,
    },
    /// A sparse file's map wants more data than the entry has.
    SparseMissingData {
        /// Stream offset where the data ran out.
        at: u64,
    },
    /// A sparse file's data goes on past what its map places.
    SparseUnreferencedData {
        /// Stream offset of the first unplaced byte.
        at: u64,
        /// Bytes left.
        left: u64,
    },
    /// The stream ends inside an entry's data (`io.ErrUnexpectedEOF`).
    DataTruncated {
        /// Where it ends.
        at: u64,
        /// Bytes of data missing.
        left: u64,
    },
    /// Reading the stream itself failed (decompression, the digest check below).
    Io(io::Error),
    /// A call after an error: like Go's, the reader stays failed.
    Failed,
}

impl TarError {
    /// The entry a header error is about, where it has a name.
    pub fn entry(&self) -> Option<&[u8]> {
        match self {
            TarError::Header { entry, .. } if !entry.is_empty() => Some(entry),
            _ => None,
        }
    }

    /// Go's name for the error: `header`, `too-long`, `unexpected-eof`,
    /// `sparse-missing-data`, `sparse-unreferenced-data`; `io` and `failed` are terra's.
    pub fn kind(&self) -> &'static str {
        match self {
            TarError::Header { .. } => "header",
            TarError::TooLong { .. } => "too-long",
            TarError::Truncated { .. } | TarError::DataTruncated { .. } => "unexpected-eof",
            TarError::SparseMissingData { .. } => "sparse-missing-data",
            TarError::SparseUnreferencedData { .. } => "sparse-unreferenced-data",
            TarError::Io(_) => "io",
            TarError::Failed => "failed",
        }
    }
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarError::Header { at, reason, .. } => {
                write!(f, "invalid tar header at byte {at}: {reason}")
            }
            TarError::TooLong { at, what } => {
                write!(f, "the {what} at byte {at} has more than 1 MiB of data")
            }
            TarError::Truncated { at, what } => {
                write!(f, "the stream ends at byte {at}, inside {what}")
            }
            TarError::DataTruncated { at, left } => write!(
                f,
                "data truncated: the stream ends at byte {at}, {left} bytes before the end \
                 of this entry's data"
            ),
            TarError::SparseMissingData { at } => write!(
                f,
                "sparse file: its map places more data than the entry has (at byte {at})"
            ),
            TarError::SparseUnreferencedData { at, left } => write!(
                f,
                "sparse file: {left} bytes of its data at byte {at} are placed by no chunk of its map"
            ),
            TarError::Io(e) => write!(f, "{e}"),
            TarError::Failed => write!(f, "the stream already failed"),
        }
    }
}

impl std::error::Error for TarError {}

impl From<TarError> for io::Error {
    fn from(e: TarError) -> io::Error {
        match e {
            TarError::Io(e) => e,
            TarError::Truncated { .. } | TarError::DataTruncated { .. } => {
                io::Error::new(io::ErrorKind::UnexpectedEof, e)
            }
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// A piece of the current entry's content, from [`TarReader::read_chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// This many bytes of data, in the buffer given.
    Data(usize),
    /// A hole of this many zero bytes (sparse files).
    Hole(u64),
    /// The content is complete.
    End,
}

/// The current entry's content: where in it the reader is, and where its data goes.
#[derive(Debug, Default)]
struct Content {
    /// Logical size.
    size: u64,
    /// Logical position.
    pos: u64,
    /// For a sparse file, its data regions (offset, length), ascending; the next one not
    /// yet passed at `next`.
    regions: Option<Vec<(u64, u64)>>,
    next: usize,
}

/// Reads a tar stream entry by entry, as Go's `archive/tar.Reader` does.
pub struct TarReader<R> {
    inner: R,
    /// Stream offset.
    pos: u64,
    /// Data bytes of the current entry not yet read (Go's `physicalRemaining`).
    left: u64,
    /// Padding after them.
    pad: u64,
    content: Content,
    failed: bool,
    ended: bool,
    notes: Vec<String>,
    block: [u8; BLOCK as usize],
}

impl<R: Read> TarReader<R> {
    /// Reads the archive in `inner`.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            left: 0,
            pad: 0,
            content: Content::default(),
            failed: false,
            ended: false,
            notes: Vec::new(),
            block: [0; BLOCK as usize],
        }
    }

    /// Where in the stream the reader is.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// What was read although unusual (an end without padding or end-of-archive blocks, a
    /// signed checksum, repeated extension headers...), one line each, taken.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// The next entry's header, `None` at the end of the archive. Whatever of the current
    /// entry's content was not read is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Header>, TarError> {
        if self.failed {
            return Err(TarError::Failed);
        }
        if self.ended {
            return Ok(None);
        }
        let r = self.next_header();
        match &r {
            Err(_) => self.failed = true,
            Ok(None) => self.ended = true,
            Ok(Some(_)) => {}
        }
        r
    }

    /// Go's `Reader.next`: extension headers folded into the entry they describe.
    fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        let mut records: Option<Records> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        // Where the first extension header of the entry being read is.
        let mut extension: Option<u64> = None;
        loop {
            self.skip_data()?;
            if !self.skip_padding()? || !self.read_header(extension.is_some())? {
                if let Some(ext) = extension {
                    self.notes.push(format!(
                        "the extension header at byte {ext} describes no entry: the archive \
                         ends after it; ignored, as Go's reader does"
                    ));
                }
                return Ok(None);
            }
            let at = self.pos - BLOCK;
            let raw = block::parse(&self.block).map_err(|reason| TarError::Header {
                at,
                entry: block::cstr(&self.block[..100]).to_vec(),
                reason,
            })?;
            self.set_data(raw.kind, raw.size, at, &raw.name)?;
            if matches!(raw.kind, b'x' | b'L' | b'K') {
                extension.get_or_insert(at);
            }
            match raw.kind {
                b'x' | b'g' => {
                    let data = self.read_special(at, "PAX extended header")?;
                    let recs = pax::parse(&data).map_err(|reason| TarError::Header {
                        at,
                        entry: raw.name.clone(),
                        reason,
                    })?;
                    if raw.kind == b'g' {
                        self.content = Content::default();
                        // Go returns the global header with the records merged into it
                        // (errors ignored); they apply to no other entry.
                        let mut h = Header {
                            kind: b'g',
                            name: raw.name,
                            offset: at,
                            ..Header::default()
                        };
                        let _ = merge(&mut h, recs, at);
                        return Ok(Some(Header {
                            kind: b'g',
                            name: h.name,
                            xattrs: h.xattrs,
                            pax: h.pax,
                            offset: at,
                            ..Header::default()
                        }));
                    }
                    if records.is_some() {
                        self.notes.push(format!(
                            "the PAX header at byte {at} follows another before one entry: \
                             the last one applies, as in Go's reader"
                        ));
                    }
                    records = Some(recs);
                }
                b'L' | b'K' => {
                    let what = if raw.kind == b'L' {
                        "GNU long name"
                    } else {
                        "GNU long link name"
                    };
                    let data = self.read_special(at, what)?;
                    let value = block::cstr(&data).to_vec();
                    if data[value.len()..].iter().any(|&b| b != 0) {
                        self.notes.push(format!(
                            "the {what} at byte {at} has bytes after a NUL: it ends at the \
                             NUL ({}), as Go reads it",
                            block::show(&value)
                        ));
                    }
                    let slot = if raw.kind == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        self.notes.push(format!(
                            "the {what} at byte {at} follows another before one entry: the \
                             last one applies, as in Go's reader"
                        ));
                    }
                    *slot = Some(value);
                }
                _ => return self.entry(raw, records, long_name, long_link, at).map(Some),
            }
        }
    }

    /// A header that is an entry, with the extensions before it applied.
    fn entry(
        &mut self,
        raw: block::Block,
        records: Option<Records>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        at: u64,
    ) -> Result<Header, TarError> {
        let mut h = Header {
            kind: raw.kind,
            name: raw.name,
            link: raw.link,
            size: raw.size,
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            devmajor: raw.devmajor,
            devminor: raw.devminor,
            offset: at,
            ..Header::default()
        };
        if let Some(recs) = records {
            merge(&mut h, recs, at)?;
        }
        // An empty long name leaves the header's (Go tests for "").
        if let Some(n) = long_name.filter(|n| !n.is_empty()) {
            h.name = n;
        }
        if let Some(l) = long_link.filter(|l| !l.is_empty()) {
            h.link = l;
        }
        if h.kind == 0 {
            // The pre-POSIX regular-file flag; a trailing `/` made it a directory.
            h.kind = if h.name.ends_with(b"/") { b'5' } else { b'0' };
        }
        // The PAX size may differ from the header's.
        self.set_data(h.kind, h.size, at, &h.name)?;
        self.sparse(&mut h, raw.format, at)?;
        let mut unusual = Vec::new();
        if raw.signed_checksum {
            unusual.push("its checksum is over signed bytes".to_string());
        }
        if header_only(h.kind) && h.size != 0 {
            unusual.push(format!(
                "size {} of a header-only type read as 0, as Go does",
                h.size
            ));
        }
        if raw.gnu_prefix {
            unusual.push(
                "a GNU header with a ustar prefix where its times go (as Go before 1.8 \
                 wrote them): the prefix is part of the name, as Go reads it"
                    .to_string(),
            );
        }
        if !unusual.is_empty() {
            self.notes.push(format!(
                "the header at byte {at} ({}): {}",
                block::show(&h.name),
                unusual.join(", ")
            ));
        }
        Ok(h)
    }

    /// Go's `handleSparseFile`: an old GNU or PAX sparse entry's map; its content then
    /// follows the map.
    fn sparse(&mut self, h: &mut Header, format: block::Format, at: u64) -> Result<(), TarError> {
        let name = h.name.clone();
        let bad = |reason: String| TarError::Header {
            at,
            entry: name.clone(),
            reason,
        };
        let map = if h.kind == b'S' {
            if format != block::Format::Gnu {
                return Err(bad(
                    "an old GNU sparse entry in a header that is not GNU".into()
                ));
            }
            let header = self.block;
            let (entries, mut extended, real) = block::gnu_sparse(&header);
            h.size = number::numeric(real).ok_or_else(|| {
                bad(format!(
                    "sparse real size {} is not a number",
                    block::show(real)
                ))
            })?;
            let mut map = sparse::Map::new();
            sparse::push_old_gnu(&mut map, entries).map_err(bad)?;
            while extended {
                // Extension blocks sit between the header and the data, outside its size.
                let ext_at = self.pos;
                let got = self.fill_block()?;
                if got < BLOCK as usize {
                    return Err(TarError::Truncated {
                        at: self.pos,
                        what: format!("the sparse extension block at byte {ext_at}"),
                    });
                }
                let ext = self.block;
                let (entries, more) = block::gnu_sparse_ext(&ext);
                sparse::push_old_gnu(&mut map, entries).map_err(bad)?;
                extended = more;
            }
            map
        } else {
            let Some(v1) = sparse::pax_format(&h.pax) else {
                return Ok(());
            };
            let (name, size) = sparse::pax_name_size(&h.pax).map_err(bad)?;
            if let Some(n) = name {
                h.name = n.to_vec();
            }
            if let Some(s) = size {
                h.size = s;
            }
            if v1 {
                self.read_map_1x0(at, &h.name)?
            } else {
                sparse::map_0x1(&h.pax).map_err(bad)?
            }
        };
        if header_only(h.kind) {
            return Err(bad("a sparse map on a type without data".into()));
        }
        sparse::validate(&map, h.size).map_err(bad)?;
        self.content = Content {
            size: h.size as u64,
            pos: 0,
            regions: Some(sparse::regions(&map)),
            next: 0,
        };
        Ok(())
    }

    /// Format 1.0's map, from the start of the entry's data, in whole blocks.
    fn read_map_1x0(&mut self, at: u64, entry: &[u8]) -> Result<sparse::Map, TarError> {
        let mut m = sparse::Map1x0::default();
        let mut block = [0u8; BLOCK as usize];
        loop {
            if self.left < BLOCK {
                return Err(TarError::Truncated {
                    at: self.pos,
                    what: "a sparse map that runs past its entry's data".into(),
                });
            }
            let got = read_full(&mut self.inner, &mut block, &mut self.pos)?;
            self.left -= got as u64;
            if got < block.len() {
                return Err(TarError::Truncated {
                    at: self.pos,
                    what: "a sparse map".into(),
                });
            }
            let fed = m.feed(&block).map_err(|reason| TarError::Header {
                at,
                entry: entry.to_vec(),
                reason,
            })?;
            if let Some(map) = fed {
                return Ok(map);
            }
        }
    }

    /// Go's `handleRegularFile`: the data and padding that follow a header of `kind` and
    /// `size`.
    fn set_data(&mut self, kind: u8, size: i64, at: u64, entry: &[u8]) -> Result<(), TarError> {
        let nb = if header_only(kind) { 0 } else { size };
        let nb = u64::try_from(nb).map_err(|_| TarError::Header {
            at,
            entry: entry.to_vec(),
            reason: format!("negative size {size}"),
        })?;
        self.left = nb;
        self.pad = nb.next_multiple_of(BLOCK) - nb;
        self.content = Content {
            size: nb,
            ..Content::default()
        };
        Ok(())
    }

    /// Skips what is left of the current entry's data.
    fn skip_data(&mut self) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while self.left > 0 {
            let want = self.left.min(buf.len() as u64) as usize;
            let n = read_some(&mut self.inner, &mut buf[..want])?;
            if n == 0 {
                return Err(TarError::DataTruncated {
                    at: self.pos,
                    left: self.left,
                });
            }
            self.pos += n as u64;
            self.left -= n as u64;
        }
        Ok(())
    }

    /// Reads the padding after the data; false when the stream ends inside it, which Go
    /// takes as the end of the archive.
    fn skip_padding(&mut self) -> Result<bool, TarError> {
        let pad = std::mem::take(&mut self.pad);
        if pad == 0 {
            return Ok(true);
        }
        let mut buf = [0u8; BLOCK as usize];
        let got = read_full(&mut self.inner, &mut buf[..pad as usize], &mut self.pos)?;
        if (got as u64) < pad {
            self.notes.push(format!(
                "the stream ends at byte {}, after the last entry's data: its {} padding \
                 bytes and the end-of-archive blocks are missing",
                self.pos,
                pad - got as u64
            ));
            return Ok(false);
        }
        Ok(true)
    }

    /// Go's `readHeader`: the next header block into `self.block`; false at the end of the
    /// archive (two zero blocks, or one and the end of the stream, or the end of the stream).
    fn read_header(&mut self, pending: bool) -> Result<bool, TarError> {
        let at = self.pos;
        let got = self.fill_block()?;
        if got == 0 {
            if at > 0 && !pending {
                self.notes.push(format!(
                    "the stream ends at byte {at} without the end-of-archive blocks"
                ));
            }
            return Ok(false);
        }
        if got < BLOCK as usize {
            return Err(TarError::Truncated {
                at: self.pos,
                what: format!("the header at byte {at}"),
            });
        }
        if !block::is_zero(&self.block) {
            return Ok(true);
        }
        let second = self.pos;
        match self.fill_block()? {
            0 => Ok(false),
            n if n < BLOCK as usize => Err(TarError::Truncated {
                at: self.pos,
                what: format!("the second end-of-archive block at byte {second}"),
            }),
            _ if block::is_zero(&self.block) => Ok(false),
            _ => Err(TarError::Header {
                at: second,
                entry: Vec::new(),
                reason: "the end-of-archive zero block is followed by a block that is \
                         neither zero nor the end of the stream"
                    .into(),
            }),
        }
    }

    /// Reads up to a block into `self.block`; how much there was.
    fn fill_block(&mut self) -> Result<usize, TarError> {
        read_full(&mut self.inner, &mut self.block, &mut self.pos)
    }

    /// Go's `readSpecialFile`: the data of a PAX header or long name, at most 1 MiB.
    fn read_special(&mut self, at: u64, what: &'static str) -> Result<Vec<u8>, TarError> {
        let want = self.left.min(MAX_SPECIAL + 1);
        let mut data = vec![0u8; want as usize];
        let got = read_full(&mut self.inner, &mut data, &mut self.pos)?;
        self.left -= got as u64;
        if (got as u64) < want {
            return Err(TarError::Truncated {
                at: self.pos,
                what: format!("the data of the {what} at byte {at}"),
            });
        }
        if want > MAX_SPECIAL {
            return Err(TarError::TooLong { at, what });
        }
        Ok(data)
    }

    /// The next piece of the current entry's content: data read into `buf`, a hole, or the
    /// end. A sparse file's data that its map does not account for is an error, as to Go.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<Chunk, TarError> {
        if self.failed {
            return Err(TarError::Failed);
        }
        let r = self.chunk(buf);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn chunk(&mut self, buf: &mut [u8]) -> Result<Chunk, TarError> {
        let c = &mut self.content;
        if c.pos >= c.size {
            if c.regions.is_some() && self.left > 0 {
                return Err(TarError::SparseUnreferencedData {
                    at: self.pos,
                    left: self.left,
                });
            }
            return Ok(Chunk::End);
        }
        let want = match &c.regions {
            None => c.size - c.pos,
            Some(regions) => match regions.get(c.next) {
                Some(&(off, len)) if c.pos >= off => off + len - c.pos,
                next => {
                    let hole_end = next.map_or(c.size, |r| r.0);
                    let len = hole_end - c.pos;
                    c.pos = hole_end;
                    return Ok(Chunk::Hole(len));
                }
            },
        };
        if self.left == 0 {
            return Err(TarError::SparseMissingData { at: self.pos });
        }
        let want = want.min(self.left).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(Chunk::Data(0));
        }
        let n = read_some(&mut self.inner, &mut buf[..want])?;
        if n == 0 {
            return Err(TarError::DataTruncated {
                at: self.pos,
                left: self.left,
            });
        }
        self.pos += n as u64;
        self.left -= n as u64;
        c.pos += n as u64;
        if let Some(regions) = &c.regions {
            if let Some(&(off, len)) = regions.get(c.next) {
                if c.pos >= off + len {
                    c.next += 1;
                }
            }
        }
        Ok(Chunk::Data(n))
    }
}

/// The content as Go's `Reader.Read` gives it: holes read as zeros.
impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.read_chunk(buf)? {
                Chunk::Data(0) => continue,
                Chunk::Data(n) => return Ok(n),
                Chunk::Hole(len) => {
                    // Hand out the hole a buffer at a time: step back over what is left.
                    let n = len.min(buf.len() as u64);
                    buf[..n as usize].fill(0);
                    self.content.pos -= len - n;
                    return Ok(n as usize);
                }
                Chunk::End => return Ok(0),
            }
        }
    }
}

/// Go's `mergePAX`: records with a value override the header's fields; one Go cannot read
/// refuses the entry.
fn merge(h: &mut Header, records: Records, at: u64) -> Result<(), TarError> {
    let mut first_error = None;
    for (k, v) in &records {
        if v.is_empty() {
            continue;
        }
        let ok = match k.as_slice() {
            b"path" => {
                h.name = v.clone();
                true
            }
            b"linkpath" => {
                h.link = v.clone();
                true
            }
            b"uid" => number::int10(v).map(|n| h.uid = n).is_some(),
            b"gid" => number::int10(v).map(|n| h.gid = n).is_some(),
            b"atime" | b"ctime" => number::pax_time(v).is_some(),
            b"mtime" => number::pax_time(v).map(|t| h.mtime = t).is_some(),
            b"size" => number::int10(v).map(|n| h.size = n).is_some(),
            key => {
                if let Some(name) = key.strip_prefix(pax::XATTR) {
                    h.xattrs.insert(name.to_vec(), v.clone());
                }
                true
            }
        };
        if !ok && first_error.is_none() {
            first_error = Some(TarError::Header {
                at,
                entry: h.name.clone(),
                reason: format!(
                    "PAX record {}={} is not a number Go reads",
                    pax::show(k),
                    pax::show(v)
                ),
            });
        }
    }
    h.pax = records;
    first_error.map_or(Ok(()), Err)
}

/// Reads until `buf` is full or the stream ends; how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8], pos: &mut u64) -> Result<usize, TarError> {
    let mut got = 0;
    while got < buf.len() {
        let n = read_some(r, &mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
        *pos += n as u64;
    }
    Ok(got)
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, TarError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TarError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests;
