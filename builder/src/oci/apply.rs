//! Layer application: an image's layers, bottom first, onto a directory.
//!
//! Every path is resolved beneath the unpack root's directory fd with openat2
//! (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`): `..`, absolute symlinks and symlinked
//! directories all stay inside the root, as they would for a container whose root it is.
//! Only the parent directory is resolved that way; the last component is always a plain
//! name handled by a `*at` call that does not follow it (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`, `O_EXCL`), so a symlink planted by a layer is replaced, never
//! written through. Symlink targets are stored as they are.
//!
//! Whiteouts and opaque directories follow the image spec (layer.md, "Whiteouts"): an
//! opaque marker hides what lower layers put in its directory but not what its own layer
//! adds. Owners are applied before modes (chown clears setuid/setgid) and xattrs after
//! both (chown clears `security.capability`); directory mtimes are set last, once nothing
//! more is written into them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
    CWD,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use super::blob::VerifyingReader;
use super::image::{Compression, Image, Layer};
use super::progress::{Counted, Phase, Progress, Silent};
use super::tarstream::{Chunk, Header, Records, TarError, TarReader};
use super::OciError;

/// How layers are applied.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Create device nodes and fifos (device nodes only when running as root).
    pub devices: bool,
    /// Apply owners (uid/gid); by default when running as root.
    pub chown: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            devices: true,
            chown: rustix::process::geteuid().is_root(),
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Layers applied.
    pub layers: usize,
    /// Entries created (files, directories, links, nodes).
    pub entries: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Device nodes and fifos left out (`--no-devices`, or not root).
    pub skipped_devices: u64,
    /// Xattrs left out, one line each (`entry: name: why`): those the filesystem does not
    /// support or the kernel does not let this process set on that file, and the build
    /// host's SELinux labels and NFSv4 ACLs (which umoci leaves out too).
    pub skipped_xattrs: Vec<String>,
    /// What was accepted although unusual (a layer without its end-of-archive blocks),
    /// one line each, for a debug log.
    pub notes: Vec<String>,
}

/// Unpacks `image` into `target`: into a new sibling directory first, renamed into place
/// only when every layer applied and checked. An existing `target` is swapped out
/// atomically (`RENAME_EXCHANGE`) and then removed; on failure it is left as it was.
pub fn unpack(image: &Image, target: &Path, opts: &ApplyOptions) -> Result<UnpackReport, OciError> {
    unpack_with(image, target, opts, &Silent)
}

/// [`unpack`], telling `progress` of each layer and the blob bytes read.
pub fn unpack_with(
    image: &Image,
    target: &Path,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, OciError> {
    let name = target
        .file_name()
        .ok_or_else(|| OciError::io(target, io::Error::other("not a directory name")))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut staging = None;
    for n in 0..1000u32 {
        let p = parent.join(format!(
            ".{}.terra-unpack-{}-{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        match fs::create_dir(&p) {
            Ok(()) => {
                staging = Some(p);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(OciError::io(&p, e)),
        }
    }
    let staging =
        staging.ok_or_else(|| OciError::io(&parent, io::Error::other("no staging name free")))?;
    let guard = RemoveOnDrop(Some(staging.clone()));
    let report = unpack_layers(image, &staging, opts, progress)?;
    match rustix::fs::renameat_with(CWD, &staging, CWD, target, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            rustix::fs::renameat_with(CWD, &staging, CWD, target, RenameFlags::EXCHANGE)
                .map_err(|e| OciError::io(target, e.into()))?;
            // `staging` now names the old tree.
            let old_is_dir = fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir());
            let removed = if old_is_dir {
                fs::remove_dir_all(&staging)
            } else {
                fs::remove_file(&staging)
            };
            removed.map_err(|e| OciError::io(&staging, e))?;
        }
        Err(e) => return Err(OciError::io(target, e.into())),
    }
    std::mem::forget(guard);
    Ok(report)
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Applies `image`'s layers onto the existing directory `dir` (empty, normally: a new
/// directory or btrfs subvolume the caller renames into place).
pub fn unpack_into(
    image: &Image,
    dir: &Path,
    opts: &ApplyOptions,
) -> Result<UnpackReport, OciError> {
    unpack_layers(image, dir, opts, &Silent)
}

fn unpack_layers(
    image: &Image,
    dir: &Path,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<UnpackReport, OciError> {
    let bytes = image.layers.iter().filter_map(|l| l.size).sum();
    let _phase = Phase::start(progress, "unpack", image.layers.len(), bytes);
    let mut u = Unpacker::new(dir, opts.clone())?;
    for (i, layer) in image.layers.iter().enumerate() {
        progress.item(i, &layer.name);
        u.apply_layer_with(layer, progress)?;
    }
    u.finish()
}

/// Applies layers one by one beneath a root directory fd.
pub struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    opts: ApplyOptions,
    is_root: bool,
    /// The parent directory of the last entry, by its path: tar entries come grouped by
    /// directory, so most entries reuse it. It never goes stale: entries only remove
    /// children of the current parent, and a different parent replaces it.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Paths the current layer created (an opaque marker keeps them).
    layer_paths: HashSet<Vec<u8>>,
    /// Directory mtimes, set at the end.
    dir_times: HashMap<Vec<u8>, Timespec>,
    buf: Vec<u8>,
    report: UnpackReport,
}

/// What an entry's header says of its file, as applied.
struct Meta<'h> {
    mode: u32,
    uid: i64,
    gid: i64,
    mtime: Timespec,
    xattrs: &'h Records,
    /// The entry's path, for the report of xattrs left out.
    entry: &'h [u8],
}

/// What an entry makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Hardlink,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// Xattrs never applied, as umoci leaves them out: labels and ACLs of the host that built
/// the layer, which the host unpacking it sets by its own policy.
const HOST_XATTRS: [&[u8]; 2] = [b"security.selinux", b"system.nfs4_acl"];

fn errno(e: Errno) -> io::Error {
    e.into()
}

impl Unpacker {
    /// Opens `dir` as the root.
    pub fn new(dir: &Path, opts: ApplyOptions) -> Result<Self, OciError> {
        let root = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| OciError::io(dir, e.into()))?;
        Ok(Unpacker {
            root,
            root_path: dir.to_path_buf(),
            opts,
            is_root: rustix::process::geteuid().is_root(),
            cache: None,
            layer_paths: HashSet::new(),
            dir_times: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
            report: UnpackReport::default(),
        })
    }

    /// Applies one layer, checking the blob's digest and size and the uncompressed
    /// stream's diff_id. A mismatch is reported as such even when the corrupted bytes made
    /// decompression or tar parsing fail first.
    pub fn apply_layer(&mut self, layer: &Layer) -> Result<(), OciError> {
        self.apply_layer_with(layer, &Silent)
    }

    /// [`Unpacker::apply_layer`], telling `progress` of the blob bytes as they are read.
    pub fn apply_layer_with(
        &mut self,
        layer: &Layer,
        progress: &dyn Progress,
    ) -> Result<(), OciError> {
        if layer.compression == Compression::None && layer.digest.is_some() {
            if let (Some(d), Some(diff)) = (&layer.digest, &layer.diff_id) {
                if d != diff {
                    return Err(OciError::blob(
                        &layer.name,
                        format!("uncompressed layer whose config diff_id is {diff}"),
                    ));
                }
            }
        }
        let raw = layer.open()?;
        let mut blob = VerifyingReader::new(raw, layer.digest.clone(), layer.size);
        self.layer_paths.clear();
        let applied = self.apply_stream(
            &mut Counted {
                inner: &mut blob,
                progress,
            },
            layer,
        );
        let checked = blob.finish();
        match (applied, checked) {
            (_, Err(reason)) => Err(OciError::blob(&layer.name, reason)),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(_)) => {
                self.report.layers += 1;
                Ok(())
            }
        }
    }

    fn apply_stream(&mut self, blob: &mut dyn Read, layer: &Layer) -> Result<(), OciError> {
        let name = layer.name.as_str();
        let bad = |what: &str, e: io::Error| OciError::blob(name, format!("{what}: {e}"));
        let plain: Box<dyn Read + '_> = match layer.compression {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(blob).map_err(|e| bad("zstd", e))?)
            }
        };
        // An uncompressed blob's digest is its diff_id, checked already by the caller.
        let diff_id = match layer.compression {
            Compression::None if layer.digest.is_some() => None,
            _ => layer.diff_id.clone(),
        };
        let mut diff = VerifyingReader::new(plain, diff_id, None);
        {
            let mut tr = TarReader::new(BufReader::with_capacity(256 * 1024, &mut diff));
            let mut last: Option<Vec<u8>> = None;
            loop {
                let h = match tr.next_entry() {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return Err(stream_error(name, last.as_deref(), &e)),
                };
                last = Some(h.name.clone());
                self.entry(&mut tr, &h, name)?;
            }
            for note in tr.take_notes() {
                self.report.notes.push(format!("layer {name}: {note}"));
            }
        }
        diff.finish()
            .map_err(|r| OciError::blob(name, format!("uncompressed content: {r}")))?;
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        tr: &mut TarReader<R>,
        h: &Header,
        blob: &str,
    ) -> Result<(), OciError> {
        let fail = |reason: String| OciError::Apply {
            blob: blob.to_string(),
            entry: String::from_utf8_lossy(&h.name).into_owned(),
            reason,
        };
        let kind = match h.kind {
            // A PAX global header: Go's reader hands it on, and it applies to nothing.
            b'g' => return Ok(()),
            // Regular, contiguous (a regular file to every Linux tar) and old GNU sparse
            // files, whose content the reader expands.
            b'0' | b'7' | b'S' => Kind::File,
            // A GNU incremental dump's directory (`D`): a directory; its data, the names
            // it held when dumped, is for `tar --listed-incremental` and is not content.
            b'5' | b'D' => Kind::Dir,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'6' => Kind::Fifo,
            other => {
                return Err(fail(format!(
                    "unsupported tar entry type {:?}",
                    other as char
                )))
            }
        };
        let comps = clean(&h.name);
        let meta = Meta {
            mode: (h.mode & 0o7777) as u32,
            uid: h.uid,
            gid: h.gid,
            mtime: Timespec {
                tv_sec: h.mtime.secs,
                tv_nsec: h.mtime.nanos.into(),
            },
            xattrs: &h.xattrs,
            entry: &h.name,
        };
        let Some((leaf, parents)) = comps.split_last() else {
            // `./`: the root itself.
            if kind != Kind::Dir {
                return Err(fail("refusing to replace the unpack root".into()));
            }
            let root = self.root.try_clone().map_err(|e| fail(e.to_string()))?;
            self.set_meta(root.as_fd(), &meta)
                .map_err(|e| fail(e.to_string()))?;
            self.dir_times.insert(Vec::new(), meta.mtime);
            return Ok(());
        };
        let key = join(&comps);
        if let Some(hidden) = leaf.strip_prefix(b".wh.") {
            self.report.whiteouts += 1;
            if hidden == b".wh..opq" {
                return self.opaque(parents).map_err(|e| fail(e.to_string()));
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(fail("malformed whiteout".into()));
            }
            return self
                .whiteout(parents, hidden)
                .map_err(|e| fail(e.to_string()));
        }
        let dir = self
            .take_parent(parents)
            .map_err(|e| fail(format!("parent directory: {e}")))?;
        let created = self.create(dir.as_fd(), leaf, &key, kind, tr, h, &meta);
        self.cache = Some((join(parents), dir));
        match created {
            Ok(true) => {
                self.layer_paths.insert(key);
                self.report.entries += 1;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Creates one entry under `dir`; false when it was skipped (a device node).
    #[allow(clippy::too_many_arguments)]
    fn create<R: Read>(
        &mut self,
        dir: BorrowedFd<'_>,
        leaf: &[u8],
        key: &[u8],
        kind: Kind,
        tr: &mut TarReader<R>,
        h: &Header,
        meta: &Meta<'_>,
    ) -> io::Result<bool> {
        match kind {
            Kind::Dir => {
                match rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        remove_all_at(dir, leaf)?;
                        rustix::fs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700))?;
                    }
                    Err(Errno::NOENT) => {
                        rustix::fs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700))?
                    }
                    Err(e) => return Err(e.into()),
                }
                let fd = rustix::fs::openat(
                    dir,
                    leaf,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.set_meta(fd.as_fd(), meta)?;
                self.dir_times.insert(key.to_vec(), meta.mtime);
            }
            Kind::File => {
                remove_all_at(dir, leaf)?;
                let fd = rustix::fs::openat(
                    dir,
                    leaf,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut file = fs::File::from(fd);
                // Data is written where it goes; a sparse file's holes are seeked over, so
                // they stay holes, and the length set at the end.
                let mut holes = false;
                loop {
                    match tr.read_chunk(&mut self.buf).map_err(io::Error::from)? {
                        Chunk::Data(n) => {
                            file.write_all(&self.buf[..n])?;
                            self.report.bytes += n as u64;
                        }
                        Chunk::Hole(len) => {
                            let len = i64::try_from(len).map_err(io::Error::other)?;
                            file.seek(SeekFrom::Current(len))?;
                            holes = true;
                        }
                        Chunk::End => break,
                    }
                }
                if holes {
                    file.set_len(h.size as u64)?;
                }
                self.set_meta(file.as_fd(), meta)?;
                rustix::fs::futimens(&file, &times(meta.mtime))?;
            }
            Kind::Symlink => {
                if h.link.is_empty() {
                    return Err(io::Error::other("symlink without a target"));
                }
                remove_all_at(dir, leaf)?;
                rustix::fs::symlinkat(h.link.as_slice(), dir, leaf)?;
                self.set_meta_at(dir, leaf, meta, false)?;
            }
            Kind::Hardlink => {
                let target = &h.link;
                let tcomps = clean(target);
                if tcomps.is_empty() {
                    return Err(io::Error::other("hardlink to the unpack root"));
                }
                let src = rustix::fs::openat2(
                    &self.root,
                    join(&tcomps).as_slice(),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!(
                            "hardlink target {:?}: {err}",
                            String::from_utf8_lossy(target)
                        ),
                    )
                })?;
                let st = rustix::fs::fstat(&src)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(io::Error::other("hardlink to a directory"));
                }
                if let Ok(cur) = rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
                    if cur.st_ino == st.st_ino && cur.st_dev == st.st_dev {
                        return Ok(true);
                    }
                }
                remove_all_at(dir, leaf)?;
                // The magic link names the inode we resolved inside the root; following it
                // needs no CAP_DAC_READ_SEARCH, unlike AT_EMPTY_PATH.
                rustix::fs::linkat(
                    CWD,
                    format!("/proc/self/fd/{}", src.as_raw_fd()).as_str(),
                    dir,
                    leaf,
                    AtFlags::SYMLINK_FOLLOW,
                )?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if !self.opts.devices || (ft != FileType::Fifo && !self.is_root) {
                    self.report.skipped_devices += 1;
                    return Ok(false);
                }
                // A fifo has no device number; writers leave its fields blank or zero.
                // Device numbers are taken as umoci takes them (`uint32(hdr.Devmajor)`).
                let dev = if ft == FileType::Fifo {
                    rustix::fs::makedev(0, 0)
                } else {
                    rustix::fs::makedev(h.devmajor as u32, h.devminor as u32)
                };
                remove_all_at(dir, leaf)?;
                rustix::fs::mknodat(dir, leaf, ft, Mode::from_raw_mode(0o600), dev)?;
                self.set_meta_at(dir, leaf, meta, true)?;
            }
        }
        Ok(true)
    }

    /// Opens (creating missing directories) the parent directory `comps` beneath the root;
    /// reuses the cached one when it is the same.
    fn take_parent(&mut self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let key = join(comps);
        if let Some((k, fd)) = self.cache.take() {
            if k == key {
                return Ok(fd);
            }
        }
        match self.open_dir(&key) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        // Create what is missing, one component at a time, each resolved in the root.
        let mut prev = self.open_dir(b"").map_err(errno)?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match self.open_dir(&prefix) {
                Ok(fd) => prev = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(
                        &prev,
                        comps[i].as_slice(),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    prev = self.open_dir(&prefix).map_err(errno)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(prev)
    }

    fn open_dir(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        let path: &[u8] = if path.is_empty() { b"." } else { path };
        rustix::fs::openat2(
            &self.root,
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    fn whiteout(&mut self, parents: &[Vec<u8>], hidden: &[u8]) -> io::Result<()> {
        self.cache = None;
        let dir = match self.open_dir(&join(parents)) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        remove_all_at(dir.as_fd(), hidden)
    }

    fn opaque(&mut self, parents: &[Vec<u8>]) -> io::Result<()> {
        let base = join(parents);
        self.cache = None;
        let dir = match self.open_dir(&base) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let listing = rustix::fs::openat(
            &dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut doomed = Vec::new();
        for ent in rustix::fs::Dir::read_from(&listing)? {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut key = base.clone();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name);
            if !self.layer_paths.contains(&key) {
                doomed.push(name.to_vec());
            }
        }
        for name in doomed {
            remove_all_at(dir.as_fd(), &name)?;
        }
        self.cache = Some((base, dir));
        Ok(())
    }

    /// Owner, mode, xattrs on an open file or directory.
    fn set_meta(&mut self, fd: BorrowedFd<'_>, meta: &Meta<'_>) -> io::Result<()> {
        if self.opts.chown {
            rustix::fs::fchown(fd, Some(uid(meta.uid)?), Some(gid(meta.gid)?))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode & 0o7777))?;
        self.set_xattrs(meta, true, |name, value| {
            rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())
        })
    }

    /// Owner, mode (not for symlinks), xattrs and mtime of `leaf` in `dir`, not following it.
    fn set_meta_at(
        &mut self,
        dir: BorrowedFd<'_>,
        leaf: &[u8],
        meta: &Meta<'_>,
        chmod: bool,
    ) -> io::Result<()> {
        if self.opts.chown {
            rustix::fs::chownat(
                dir,
                leaf,
                Some(uid(meta.uid)?),
                Some(gid(meta.gid)?),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if chmod {
            // The node was just made by mknodat: not a symlink, so following is moot.
            rustix::fs::chmodat(
                dir,
                leaf,
                Mode::from_raw_mode(meta.mode & 0o7777),
                AtFlags::empty(),
            )?;
        }
        if !meta.xattrs.is_empty() {
            // No *xattrat before Linux 6.13: name the leaf through our own directory fd.
            let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            path.extend_from_slice(leaf);
            self.set_xattrs(meta, false, |name, value| {
                rustix::fs::lsetxattr(path.as_slice(), name, value, XattrFlags::empty())
            })?;
        }
        rustix::fs::utimensat(dir, leaf, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Sets every xattr of `meta` (`user.*`, `trusted.*`, `security.*`, ...) with `set`.
    /// One the filesystem does not support, or the kernel does not let this process set on
    /// this file (`user.*` on a symlink or device, `trusted.*` and `security.*` without
    /// root), is left out and reported; any other failure is an error.
    fn set_xattrs(
        &mut self,
        meta: &Meta<'_>,
        file_or_dir: bool,
        mut set: impl FnMut(&[u8], &[u8]) -> Result<(), Errno>,
    ) -> io::Result<()> {
        for (name, value) in meta.xattrs {
            let why = if HOST_XATTRS.contains(&name.as_slice()) {
                "the build host's, left out as umoci does".to_string()
            } else {
                match set(name, value) {
                    Ok(()) => continue,
                    Err(Errno::OPNOTSUPP) => "the filesystem does not support it".to_string(),
                    Err(e @ (Errno::PERM | Errno::ACCESS))
                        if !self.is_root || (!file_or_dir && name.starts_with(b"user.")) =>
                    {
                        format!("the kernel does not let this process set it here ({e})")
                    }
                    Err(e) => return Err(xattr_error(name, e)),
                }
            };
            self.report.skipped_xattrs.push(format!(
                "{}: {}: {why}",
                String::from_utf8_lossy(meta.entry),
                String::from_utf8_lossy(name)
            ));
        }
        Ok(())
    }

    /// Sets the directories' mtimes, deepest first, and returns what was done.
    pub fn finish(mut self) -> Result<UnpackReport, OciError> {
        self.cache = None;
        let mut dirs: Vec<(Vec<u8>, Timespec)> = self.dir_times.drain().collect();
        dirs.sort_by_key(|(k, _)| std::cmp::Reverse(k.iter().filter(|&&b| b == b'/').count()));
        for (key, ts) in dirs {
            let comps: Vec<Vec<u8>> = clean(&key);
            let res = match comps.split_last() {
                None => rustix::fs::futimens(&self.root, &times(ts)),
                Some((leaf, parents)) => match self.open_dir(&join(parents)) {
                    Ok(dir) => {
                        match rustix::fs::statat(&dir, leaf.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                            Ok(st)
                                if FileType::from_raw_mode(st.st_mode) == FileType::Directory =>
                            {
                                rustix::fs::utimensat(
                                    &dir,
                                    leaf.as_slice(),
                                    &times(ts),
                                    AtFlags::SYMLINK_NOFOLLOW,
                                )
                            }
                            _ => Ok(()),
                        }
                    }
                    Err(_) => Ok(()),
                },
            };
            res.map_err(|e| {
                OciError::io(
                    self.root_path.join(String::from_utf8_lossy(&key).as_ref()),
                    e.into(),
                )
            })?;
        }
        Ok(self.report)
    }
}

/// Creates directory `path` (and its parents, mode 0755) beneath `root`, resolving every
/// component inside it as layer application does.
pub fn mkdir_beneath(root: &Path, path: &str) -> Result<(), OciError> {
    let mut u = Unpacker::new(root, ApplyOptions::default())?;
    let comps = clean(path.as_bytes());
    u.take_parent(&comps)
        .map(drop)
        .map_err(|e| OciError::io(root.join(path.trim_start_matches('/')), e))
}

/// Writes a file at `path` beneath `root` (replacing what is there, a symlink included,
/// without following it), owned by the caller, with `mode`.
pub fn write_file_beneath(root: &Path, path: &str, data: &[u8], mode: u32) -> Result<(), OciError> {
    let full = root.join(path.trim_start_matches('/'));
    let mut u = Unpacker::new(root, ApplyOptions::default())?;
    let comps = clean(path.as_bytes());
    let Some((leaf, parents)) = comps.split_last() else {
        return Err(OciError::io(full, io::Error::other("not a file path")));
    };
    let written = (|| -> io::Result<()> {
        let dir = u.take_parent(parents)?;
        remove_all_at(dir.as_fd(), leaf)?;
        let fd = rustix::fs::openat(
            &dir,
            leaf.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )?;
        let mut f = fs::File::from(fd);
        f.write_all(data)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode & 0o7777))?;
        Ok(())
    })();
    written.map_err(|e| OciError::io(full, e))
}

/// Makes symlink `path` → `target` beneath `root` (replacing what is there, without
/// following it); the target is stored as given.
pub fn symlink_beneath(root: &Path, path: &str, target: &str) -> Result<(), OciError> {
    let full = root.join(path.trim_start_matches('/'));
    let mut u = Unpacker::new(root, ApplyOptions::default())?;
    let comps = clean(path.as_bytes());
    let Some((leaf, parents)) = comps.split_last() else {
        return Err(OciError::io(full, io::Error::other("not a file path")));
    };
    let made = (|| -> io::Result<()> {
        let dir = u.take_parent(parents)?;
        remove_all_at(dir.as_fd(), leaf)?;
        rustix::fs::symlinkat(target, &dir, leaf.as_slice())?;
        Ok(())
    })();
    made.map_err(|e| OciError::io(full, e))
}

/// Opens `path` beneath `root`, every component (symlinks included) resolved inside it
/// as the booted system would resolve it; `None` when it does not exist.
fn open_beneath(root: &Path, path: &str, flags: OFlags) -> Result<Option<OwnedFd>, OciError> {
    let full = root.join(path.trim_start_matches('/'));
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| OciError::io(root, e.into()))?;
    let rel = path.trim_start_matches('/');
    match rustix::fs::openat2(
        &dir,
        if rel.is_empty() { "." } else { rel },
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(OciError::io(full, e.into())),
    }
}

/// Sets the mode bits of `path` beneath `root` (resolved inside it).
pub fn chmod_beneath(root: &Path, path: &str, mode: u32) -> Result<(), OciError> {
    let full = root.join(path.trim_start_matches('/'));
    let fd = open_beneath(root, path, OFlags::RDONLY)?
        .ok_or_else(|| OciError::io(&full, io::ErrorKind::NotFound.into()))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))
        .map_err(|e| OciError::io(&full, e.into()))
}

/// The bytes of file `path` beneath `root` (resolved inside it); `None` when missing.
pub fn read_beneath(root: &Path, path: &str) -> Result<Option<Vec<u8>>, OciError> {
    let Some(fd) = open_beneath(root, path, OFlags::RDONLY)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    io::Read::read_to_end(&mut fs::File::from(fd), &mut data)
        .map_err(|e| OciError::io(root.join(path.trim_start_matches('/')), e))?;
    Ok(Some(data))
}

/// The mode bits and file type of `path` beneath `root` (resolved inside it); `None`
/// when missing.
pub fn stat_beneath(root: &Path, path: &str) -> Result<Option<(FileType, u32)>, OciError> {
    let Some(fd) = open_beneath(root, path, OFlags::PATH)? else {
        return Ok(None);
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| OciError::io(root.join(path.trim_start_matches('/')), e.into()))?;
    Ok(Some((
        FileType::from_raw_mode(st.st_mode),
        st.st_mode & 0o7777,
    )))
}

/// A tar stream that could not be read further, named by the blob and the entry: the one
/// whose header was refused, or else the last one read.
fn stream_error(blob: &str, last: Option<&[u8]>, e: &TarError) -> OciError {
    let (entry, reason) = match (e.entry(), last) {
        (Some(entry), _) => (entry, e.to_string()),
        // The entry's own data, skipped because it is no content (a dumpdir's names).
        (None, Some(last)) if matches!(e, TarError::DataTruncated { .. }) => (last, e.to_string()),
        (None, Some(last)) => (last, format!("malformed tar after this entry: {e}")),
        (None, None) => return OciError::blob(blob, format!("malformed tar: {e}")),
    };
    OciError::Apply {
        blob: blob.to_string(),
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason,
    }
}

fn xattr_error(name: &[u8], e: Errno) -> io::Error {
    io::Error::new(
        io::Error::from(e).kind(),
        format!("xattr {}: {e}", String::from_utf8_lossy(name)),
    )
}

fn uid(raw: i64) -> io::Result<Uid> {
    match u32::try_from(raw) {
        Ok(u) if u != u32::MAX => Ok(Uid::from_raw(u)),
        _ => Err(io::Error::other(format!("invalid uid {raw}"))),
    }
}

fn gid(raw: i64) -> io::Result<Gid> {
    match u32::try_from(raw) {
        Ok(g) if g != u32::MAX => Ok(Gid::from_raw(g)),
        _ => Err(io::Error::other(format!("invalid gid {raw}"))),
    }
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Removes `name` in `dir` whatever it is (a directory recursively, never following a
/// symlink); a missing name is fine.
fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    for ent in rustix::fs::Dir::read_from(&sub)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push(n.to_vec());
        }
    }
    for c in children {
        remove_all_at(sub.as_fd(), &c)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// A tar path as components beneath the root: empty and `.` components dropped, `..`
/// clamped at the root (as resolving it in a chroot would), leading `/` ignored.
pub fn clean(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_clamps_at_the_root() {
        let c = |p: &str| -> Vec<String> {
            clean(p.as_bytes())
                .into_iter()
                .map(|c| String::from_utf8(c).unwrap())
                .collect()
        };
        assert_eq!(c("./a/b/"), ["a", "b"]);
        assert_eq!(c("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(c("../../etc/x"), ["etc", "x"]);
        assert_eq!(c("a/../../b"), ["b"]);
        assert!(c("./.").is_empty());
        assert!(c("/").is_empty());
    }

    /// Applies `tar` (uncompressed, unchecked) to a fresh directory; the tree's file "f"
    /// when it applied.
    fn apply_bytes(tar: &[u8]) -> Result<Option<Vec<u8>>, OciError> {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("layer.tar");
        fs::write(&blob, tar).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let layer = Layer {
            name: "test-layer".into(),
            digest: None,
            size: None,
            compression: Compression::None,
            diff_id: None,
            path: blob,
            offset: 0,
        };
        let opts = ApplyOptions {
            devices: false,
            chown: false,
        };
        let mut u = Unpacker::new(&root, opts)?;
        u.apply_layer(&layer)?;
        u.finish()?;
        Ok(fs::read(root.join("f")).ok())
    }

    fn one_file(data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        b.append_data(&mut h, "f", data).unwrap();
        b.into_inner().unwrap()
    }

    proptest::proptest! {
        /// A one-file layer cut anywhere unpacks as Go's archive/tar reads it: cut at the
        /// start, anywhere in the padding after the data, or after a whole zero block, with
        /// the whole content; cut inside the header, the data, or an end block, refused
        /// (naming the entry once its header is whole).
        #[test]
        fn cut_layers_follow_go(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500),
                                cut in 0usize..4096) {
            let tar = one_file(&data);
            let cut = cut.min(tar.len());
            let res = apply_bytes(&tar[..cut]);
            let data_end = 512 + data.len();
            let padded = data_end.next_multiple_of(512);
            if cut == 0 {
                proptest::prop_assert!(matches!(res, Ok(None)));
            } else if cut < 512 {
                proptest::prop_assert!(res.is_err());
            } else if cut < data_end {
                let e = res.unwrap_err().to_string();
                proptest::prop_assert!(e.contains("entry \"f\"") && e.contains("truncated"), "{}", e);
            } else if cut <= padded || cut == padded + 512 || cut == padded + 1024 {
                proptest::prop_assert_eq!(res.unwrap(), Some(data));
            } else {
                let e = res.unwrap_err().to_string();
                proptest::prop_assert!(e.contains("entry \"f\"") && e.contains("malformed"), "{}", e);
            }
        }

        /// Layers the crate's writer makes (GNU long names, PAX records, directories,
        /// symlinks, hardlinks) unpack: the reader's walk of the stream keeps step with
        /// the crate's.
        #[test]
        fn well_formed_layers_unpack(entries in proptest::collection::vec(
            (0u8..4, 0usize..220, 0usize..1500, proptest::prelude::any::<bool>()), 1..10)) {
            let mut b = tar::Builder::new(Vec::new());
            for (i, &(kind, name_len, size, pax)) in entries.iter().enumerate() {
                let name = format!("{i}-{}", "n".repeat(name_len));
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_mtime(1);
                if pax {
                    b.append_pax_extensions([("mtime", &b"5.5"[..])]).unwrap();
                }
                match kind {
                    0 => {
                        h.set_size(size as u64);
                        b.append_data(&mut h, &name, &vec![7u8; size][..]).unwrap();
                    }
                    1 => {
                        h.set_entry_type(tar::EntryType::Directory);
                        b.append_data(&mut h, &name, io::empty()).unwrap();
                    }
                    2 => {
                        h.set_entry_type(tar::EntryType::Symlink);
                        b.append_link(&mut h, &name, "t".repeat(size % 300 + 1)).unwrap();
                    }
                    _ => {
                        h.set_size(1);
                        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
                        let mut l = tar::Header::new_gnu();
                        l.set_entry_type(tar::EntryType::Link);
                        l.set_mode(0o644);
                        b.append_link(&mut l, &name, "f").unwrap();
                    }
                }
            }
            let tar = b.into_inner().unwrap();
            let res = apply_bytes(&tar);
            proptest::prop_assert!(res.is_ok(), "{:?}", res.err());
        }

        /// Any bytes as a layer: applied or refused, never a panic.
        #[test]
        fn arbitrary_layers_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                                        flips in proptest::collection::vec((0usize..2048, proptest::prelude::any::<u8>()), 0..8),
                                        cut in 0usize..2048) {
            let mut tar = one_file(&data);
            for (at, b) in flips {
                let n = tar.len();
                tar[at % n] = b;
            }
            let cut = cut.min(tar.len());
            let _ = apply_bytes(&tar[..cut]);
        }
    }
}
