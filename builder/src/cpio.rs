//! Reproducible newc ("070701") cpio archives, the format the kernel unpacks into its
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! An [`Archive`] collects entries by path; [`Archive::write`] emits them sorted by path
//! (so every directory precedes what it holds), owned by root, with one modification time
//! and sequential inode numbers: the same entries always give the same bytes.
//! No I/O here beyond the `Write` the caller passes.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};

/// The newc magic: "new ASCII" format without checksums.
pub const MAGIC: &[u8; 6] = b"070701";
/// Length of the fixed ASCII header: magic plus thirteen 8-digit hex fields.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";

/// File type bits of `c_mode` (stat(2) `S_IFMT`).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// One newc header. Every field is written as 8 hex digits (buffer-format.rst, "c_" fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub devmajor: u32,
    pub devminor: u32,
    pub rdevmajor: u32,
    pub rdevminor: u32,
    /// Length of the name including its terminating NUL.
    pub namesize: u32,
    /// Always 0 in "070701" archives.
    pub check: u32,
}

impl Header {
    fn fields(&self) -> [u32; 13] {
        [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            self.namesize,
            self.check,
        ]
    }

    /// The 110 header bytes.
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [0u8; HEADER_LEN];
        out[..6].copy_from_slice(MAGIC);
        for (i, v) in self.fields().iter().enumerate() {
            let field = &mut out[6 + i * 8..6 + (i + 1) * 8];
            for (j, b) in field.iter_mut().enumerate() {
                *b = HEX[((v >> (28 - 4 * j)) & 0xf) as usize];
            }
        }
        out
    }

    /// Reads a header from the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Header, CpioError> {
        let head = bytes.get(..HEADER_LEN).ok_or(CpioError::Truncated)?;
        if &head[..6] != MAGIC {
            return Err(CpioError::BadMagic);
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let digits = std::str::from_utf8(&head[6 + i * 8..6 + (i + 1) * 8])
                .map_err(|_| CpioError::BadField)?;
            *v = u32::from_str_radix(digits, 16).map_err(|_| CpioError::BadField)?;
        }
        Ok(Header {
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            filesize: f[6],
            devmajor: f[7],
            devminor: f[8],
            rdevmajor: f[9],
            rdevminor: f[10],
            namesize: f[11],
            check: f[12],
        })
    }
}

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file: mode 0755 when executable, else 0644.
    File { data: Vec<u8>, executable: bool },
    /// A directory, mode 0755.
    Dir,
    /// A symbolic link; the target is stored as the entry's data.
    Symlink { target: String },
    /// A character device node, mode 0600 (like the kernel's own `/dev/console`).
    CharDevice { major: u32, minor: u32 },
}

impl Node {
    fn mode(&self) -> u32 {
        match self {
            Node::File {
                executable: true, ..
            } => S_IFREG | 0o755,
            Node::File { .. } => S_IFREG | 0o644,
            Node::Dir => S_IFDIR | 0o755,
            Node::Symlink { .. } => S_IFLNK | 0o777,
            Node::CharDevice { .. } => S_IFCHR | 0o600,
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            Node::File { data, .. } => data,
            Node::Symlink { target } => target.as_bytes(),
            Node::Dir | Node::CharDevice { .. } => &[],
        }
    }
}

/// Errors building or reading an archive.
#[derive(Debug)]
pub enum CpioError {
    /// A path is absolute, empty, has `.`/`..`/empty components or a NUL.
    BadPath { path: String },
    /// Two different entries for one path, or a path below a non-directory.
    Conflict { path: String },
    /// A file too large for the 32-bit size field.
    TooLarge { path: String, size: usize },
    /// Reading: the bytes end inside a header, name or data.
    Truncated,
    /// Reading: a header does not start with "070701".
    BadMagic,
    /// Reading: a header field is not 8 hex digits.
    BadField,
    /// Writing to the output failed.
    Io(io::Error),
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::BadPath { path } => write!(f, "invalid archive path {path:?}"),
            CpioError::Conflict { path } => {
                write!(
                    f,
                    "archive path {path:?} added twice or below a non-directory"
                )
            }
            CpioError::TooLarge { path, size } => {
                write!(
                    f,
                    "{path}: {size} bytes do not fit a newc cpio entry (max 4 GiB)"
                )
            }
            CpioError::Truncated => write!(f, "cpio archive is truncated"),
            CpioError::BadMagic => write!(f, "cpio header lacks the 070701 magic"),
            CpioError::BadField => write!(f, "cpio header field is not hexadecimal"),
            CpioError::Io(e) => write!(f, "writing cpio archive: {e}"),
        }
    }
}

impl std::error::Error for CpioError {}

/// A set of entries keyed by path; parents are created as directories on demand.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

fn check_path(path: &str) -> Result<(), CpioError> {
    let bad = path.is_empty()
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CpioError::BadPath {
            path: path.to_string(),
        });
    }
    Ok(())
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry at a relative path (`etc/terra/node.toml`), creating missing parent
    /// directories. Adding a directory that exists is a no-op; any other repeat is an error.
    pub fn add(&mut self, path: &str, node: Node) -> Result<(), CpioError> {
        check_path(path)?;
        if let Node::File { data, .. } = &node {
            if u32::try_from(data.len()).is_err() {
                return Err(CpioError::TooLarge {
                    path: path.to_string(),
                    size: data.len(),
                });
            }
        }
        let mut parent = String::new();
        let mut components = path.split('/').peekable();
        while let Some(c) = components.next() {
            if components.peek().is_none() {
                break;
            }
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                Some(Node::Dir) => {}
                Some(_) => {
                    return Err(CpioError::Conflict {
                        path: path.to_string(),
                    })
                }
                None => {
                    self.entries.insert(parent.clone(), Node::Dir);
                }
            }
        }
        match (self.entries.get(path), &node) {
            (None, _) => {
                self.entries.insert(path.to_string(), node);
                Ok(())
            }
            (Some(Node::Dir), Node::Dir) => Ok(()),
            (Some(_), _) => Err(CpioError::Conflict {
                path: path.to_string(),
            }),
        }
    }

    pub fn add_dir(&mut self, path: &str) -> Result<(), CpioError> {
        self.add(path, Node::Dir)
    }

    pub fn add_file(
        &mut self,
        path: &str,
        data: Vec<u8>,
        executable: bool,
    ) -> Result<(), CpioError> {
        self.add(path, Node::File { data, executable })
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.add(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    pub fn add_char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<(), CpioError> {
        self.add(path, Node::CharDevice { major, minor })
    }

    /// The entry at a path.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    /// Paths in the order they are written.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Writes the archive (entries sorted by path, then the trailer) and returns the number
    /// of bytes written. `mtime` is every entry's modification time.
    pub fn write<W: Write>(&self, out: W, mtime: u32) -> Result<u64, CpioError> {
        let mut out = Counting {
            inner: out,
            count: 0,
        };
        for (ino, (path, node)) in (1u32..).zip(&self.entries) {
            let (rdevmajor, rdevminor) = match node {
                Node::CharDevice { major, minor } => (*major, *minor),
                _ => (0, 0),
            };
            let data = node.data();
            let header = Header {
                ino,
                mode: node.mode(),
                uid: 0,
                gid: 0,
                nlink: if matches!(node, Node::Dir) { 2 } else { 1 },
                mtime,
                // Checked in add(): files fit; symlink targets are short.
                filesize: u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
                    path: path.clone(),
                    size: data.len(),
                })?,
                rdevmajor,
                rdevminor,
                ..Header::default()
            };
            write_record(&mut out, header, path, data)?;
        }
        let trailer = Header {
            nlink: 1,
            ..Header::default()
        };
        write_record(&mut out, trailer, TRAILER, &[])?;
        Ok(out.count)
    }
}

fn write_record<W: Write>(
    out: &mut Counting<W>,
    mut header: Header,
    name: &str,
    data: &[u8],
) -> Result<(), CpioError> {
    header.namesize = u32::try_from(name.len() + 1).map_err(|_| CpioError::BadPath {
        path: name.to_string(),
    })?;
    out.write_all(&header.emit())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    // Header plus name, and then the data, each end on a 4-byte boundary.
    out.pad4()?;
    out.write_all(data)?;
    out.pad4()?;
    Ok(())
}

impl From<io::Error> for CpioError {
    fn from(e: io::Error) -> Self {
        CpioError::Io(e)
    }
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Counting<W> {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.count += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.count % 4) as usize) % 4;
        self.write_all(&[0u8; 3][..pad])
    }
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub header: Header,
    pub name: &'a str,
    pub data: &'a [u8],
}

/// Reads the entries of an archive up to (not including) the trailer. Used by tests and
/// tools that inspect an image; the kernel has its own reader.
pub fn read_archive(bytes: &[u8]) -> Result<Vec<Record<'_>>, CpioError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let align = |n: usize| n.div_ceil(4) * 4;
    loop {
        let header = Header::parse(bytes.get(pos..).ok_or(CpioError::Truncated)?)?;
        let name_start = pos + HEADER_LEN;
        let name_len = header.namesize as usize;
        let name_bytes = bytes
            .get(name_start..name_start + name_len)
            .ok_or(CpioError::Truncated)?;
        let name_bytes = name_bytes.strip_suffix(&[0]).ok_or(CpioError::BadField)?;
        let name = std::str::from_utf8(name_bytes).map_err(|_| CpioError::BadField)?;
        let data_start = align(name_start + name_len);
        let data_len = header.filesize as usize;
        let data = bytes
            .get(data_start..data_start + data_len)
            .ok_or(CpioError::Truncated)?;
        pos = align(data_start + data_len);
        if name == TRAILER {
            return Ok(out);
        }
        out.push(Record { header, name, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            ino: 7,
            mode: S_IFCHR | 0o600,
            nlink: 1,
            mtime: 0x5f5e_1000,
            rdevmajor: 5,
            rdevminor: 1,
            namesize: 12,
            ..Header::default()
        };
        let bytes = h.emit();
        assert_eq!(&bytes[..14], b"07070100000007");
        assert_eq!(Header::parse(&bytes).unwrap(), h);
        assert!(matches!(
            Header::parse(&bytes[..109]),
            Err(CpioError::Truncated)
        ));
    }

    #[test]
    fn parents_come_first_and_layout_is_aligned() {
        let mut a = Archive::new();
        a.add_file("etc/terra/node.toml", b"x = 1\n".to_vec(), false)
            .unwrap();
        a.add_symlink("bin/sh", "busybox").unwrap();
        a.add_char_device("dev/console", 5, 1).unwrap();
        a.add_dir("etc").unwrap();
        let mut out = Vec::new();
        let n = a.write(&mut out, 42).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        let recs = read_archive(&out).unwrap();
        let names: Vec<&str> = recs.iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/terra",
                "etc/terra/node.toml"
            ]
        );
        let inos: Vec<u32> = recs.iter().map(|r| r.header.ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 6, 7]);
        assert!(recs
            .iter()
            .all(|r| r.header.mtime == 42 && r.header.uid == 0));
        assert_eq!(recs[1].data, b"busybox");
        assert_eq!(recs[1].header.mode, S_IFLNK | 0o777);
        assert_eq!((recs[3].header.rdevmajor, recs[3].header.rdevminor), (5, 1));
        assert_eq!(recs[6].data, b"x = 1\n");
        assert!(out.ends_with(b"TRAILER!!!\0\0\0\0"));
    }

    #[test]
    fn bad_paths_and_conflicts_are_rejected() {
        let mut a = Archive::new();
        for p in ["", "/etc", "a//b", "a/../b", "./a", "a/", "a\0b"] {
            assert!(
                matches!(a.add_dir(p), Err(CpioError::BadPath { .. })),
                "{p:?}"
            );
        }
        a.add_file("a", vec![], false).unwrap();
        assert!(matches!(
            a.add_file("a", vec![], false),
            Err(CpioError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_file("a/b", vec![], false),
            Err(CpioError::Conflict { .. })
        ));
        a.add_dir("d").unwrap();
        a.add_dir("d").unwrap();
        assert!(matches!(
            a.add_symlink("d", "x"),
            Err(CpioError::Conflict { .. })
        ));
    }

    #[test]
    fn reader_rejects_garbage() {
        assert!(matches!(read_archive(b""), Err(CpioError::Truncated)));
        assert!(matches!(
            read_archive(&[b'0'; 120]),
            Err(CpioError::BadMagic)
        ));
    }
}
