//! Shared by the oci_* tests: layer tarballs written byte by byte (so hostile ones can be
//! made), OCI layouts around them, a tree snapshot to compare unpacks entry by entry,
//! umoci and skopeo, and a real registry (Debian's docker-registry) on 127.0.0.1.
#![allow(dead_code)]

/// Go's `archive/tar` as the reference reader, and terra's reader listed the same way.
pub mod go_tar;
/// Signatures made by openssl, attached by skopeo, and a logging registry proxy (oci_signed).
pub mod signing;
/// sigstore-js's bundle verifier and cosign-format encrypted keys made with Go (oci_sign).
pub mod sigstore_tools;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// One tar entry, as a layer author would write it.
#[derive(Clone, Debug)]
pub enum E {
    Dir(&'static str, u32),
    File(&'static str, &'static [u8], u32),
    /// path, content, mode, uid, gid, xattrs
    FileFull(
        &'static str,
        Vec<u8>,
        u32,
        u64,
        u64,
        Vec<(&'static str, Vec<u8>)>,
    ),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Char(&'static str, u32, u32),
    Block(&'static str, u32, u32),
    Fifo(&'static str),
    /// A raw entry: path bytes, type flag, data (for hostile layers).
    Raw(Vec<u8>, u8, Vec<u8>, Vec<u8>),
}

pub const MTIME: u64 = 1_700_000_000;

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        // "%d %s=%s\n", where the length counts itself.
        let body_len = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body_len + 1;
        while len.to_string().len() + body_len != len {
            len = len.to_string().len() + body_len;
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn header(path: &[u8], kind: u8, size: u64, mode: u32, uid: u64, gid: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        assert!(path.len() <= 100, "test paths fit the ustar name field");
        u.name[..path.len()].copy_from_slice(path);
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(MTIME);
    h
}

fn set_link(h: &mut tar::Header, target: &[u8]) {
    let u = h.as_ustar_mut().unwrap();
    u.linkname[..target.len()].copy_from_slice(target);
}

type Xattrs = Vec<(&'static str, Vec<u8>)>;

/// An uncompressed layer tarball.
pub fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data, xattrs): (tar::Header, Vec<u8>, Xattrs) = match e {
            E::Dir(p, m) => (header(p.as_bytes(), b'5', 0, *m, 0, 0), vec![], vec![]),
            E::File(p, d, m) => (
                header(p.as_bytes(), b'0', d.len() as u64, *m, 0, 0),
                d.to_vec(),
                vec![],
            ),
            E::FileFull(p, d, m, u, g, x) => (
                header(p.as_bytes(), b'0', d.len() as u64, *m, *u, *g),
                d.clone(),
                x.clone(),
            ),
            E::Symlink(p, t) => {
                let mut h = header(p.as_bytes(), b'2', 0, 0o777, 0, 0);
                set_link(&mut h, t.as_bytes());
                (h, vec![], vec![])
            }
            E::Hardlink(p, t) => {
                let mut h = header(p.as_bytes(), b'1', 0, 0o644, 0, 0);
                set_link(&mut h, t.as_bytes());
                (h, vec![], vec![])
            }
            E::Char(p, ma, mi) | E::Block(p, ma, mi) => {
                let kind = if matches!(e, E::Char(..)) { b'3' } else { b'4' };
                let mut h = header(p.as_bytes(), kind, 0, 0o660, 0, 6);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                (h, vec![], vec![])
            }
            E::Fifo(p) => (header(p.as_bytes(), b'6', 0, 0o640, 0, 0), vec![], vec![]),
            E::Raw(p, kind, link, data) => {
                let mut h = header(p, *kind, data.len() as u64, 0o644, 0, 0);
                set_link(&mut h, link);
                (h, data.clone(), vec![])
            }
        };
        if !xattrs.is_empty() {
            let recs: Vec<(String, Vec<u8>)> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                .collect();
            let refs: Vec<(&str, &[u8])> = recs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let body = pax(&refs);
            let mut ph = header(b"PaxHeaders/x", b'x', body.len() as u64, 0o644, 0, 0);
            ph.set_cksum();
            b.append(&ph, body.as_slice()).unwrap();
        }
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// Writes `data` as a blob of the layout; returns its digest.
pub fn put_blob(layout: &Path, data: &[u8]) -> String {
    put_blob_as(layout, data, &digest(data))
}

/// Writes `data`, whose digest is known to be `digest`, as a blob of the layout.
fn put_blob_as(layout: &Path, data: &[u8], digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(hex), data).unwrap();
    digest.to_string()
}

/// Adds an image (config + manifest) to a layout; returns (manifest digest, size).
pub fn add_image(layout: &Path, arch: &str, layers: &[(Vec<u8>, Comp)]) -> (String, usize) {
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for (tar, comp) in layers {
        let diff_id = digest(tar);
        let (blob, mt) = match comp {
            Comp::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Comp::Gzip => (gzip(tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
            Comp::Zstd => (zstd(tar), "application/vnd.oci.image.layer.v1.tar+zstd"),
        };
        // An uncompressed layer's blob is its tar: its digest is the diff_id.
        let d = match comp {
            Comp::None => put_blob_as(layout, &blob, &diff_id),
            _ => put_blob(layout, &blob),
        };
        diff_ids.push(diff_id);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/sbin/init"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": []
    }))
    .unwrap();
    let cd = put_blob(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs
    }))
    .unwrap();
    (put_blob(layout, &manifest), manifest.len())
}

/// Writes index.json naming `entries` (tag → descriptor JSON).
pub fn write_index(layout: &Path, entries: Vec<serde_json::Value>) {
    fs::create_dir_all(layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    )
    .unwrap();
}

/// An image's layers, each with its compression.
pub type Layers = Vec<(Vec<u8>, Comp)>;

/// A layout at `layout` with one amd64 image per tag, each a list of layers.
pub fn tagged_layout(layout: &Path, images: &[(&str, Layers)]) {
    let entries = images
        .iter()
        .map(|(tag, layers)| {
            let (d, size) = add_image(layout, "amd64", layers);
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag}
            })
        })
        .collect();
    write_index(layout, entries);
}

/// A layout holding one image tagged `tag`.
pub fn image_layout(layout: &Path, tag: &str, layers: &[(Vec<u8>, Comp)]) -> String {
    let (d, size) = add_image(layout, "amd64", layers);
    write_index(
        layout,
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        })],
    );
    d
}

/// What one path in a tree is, for entry-by-entry comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<String>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub mtime: i64,
    /// Another path of the same inode (the smallest), for hardlinks.
    pub same_as: Option<String>,
}

/// Every path under `root` (not `root` itself), keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Info> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Info>,
    inodes: &mut BTreeMap<(u64, u64), String>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut same_as = None;
        if !ft.is_dir() && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            match inodes.get(&key) {
                Some(first) => same_as = Some(first.clone()),
                None => {
                    inodes.insert(key, rel.clone());
                }
            }
        }
        let mut xattrs = Vec::new();
        let mut list = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::llistxattr(&p, &mut list[..]) {
            for n in list[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                let name = String::from_utf8_lossy(n).into_owned();
                let mut value = vec![0u8; 64 * 1024];
                let vlen = rustix::fs::lgetxattr(&p, n, &mut value[..]).unwrap_or(0);
                xattrs.push((name, value[..vlen].to_vec()));
            }
        }
        xattrs.sort();
        out.insert(
            rel,
            Info {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_file() { m.len() } else { 0 },
                sha256: ft.is_file().then(|| sha256_hex(&fs::read(&p).unwrap())),
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(&p).unwrap().to_string_lossy().into_owned()),
                rdev: m.rdev(),
                xattrs,
                mtime: if ft.is_symlink() { 0 } else { m.mtime() },
                same_as,
            },
        );
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// Asserts two snapshots are equal, listing every difference.
pub fn assert_same(ours: &BTreeMap<String, Info>, theirs: &BTreeMap<String, Info>, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in theirs {
        match ours.get(k) {
            None => diffs.push(format!("missing in terra: {k} {v:?}")),
            Some(o) if o != v => diffs.push(format!("{k}:\n  terra {o:?}\n  umoci {v:?}")),
            _ => {}
        }
    }
    for k in ours.keys().filter(|k| !theirs.contains_key(*k)) {
        diffs.push(format!("only in terra: {k}"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Every difference between terra's tree and a reference tree, one line each naming the
/// entry and the attribute (`etc/x: mode: terra 0644, umoci 0600`).
pub fn differences(
    ours: &BTreeMap<String, Info>,
    theirs: &BTreeMap<String, Info>,
    reference: &str,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (k, t) in theirs {
        let Some(o) = ours.get(k) else {
            diffs.push(format!("{k}: missing in terra ({} in {reference})", t.kind));
            continue;
        };
        let mut attr = |name: &str, a: String, b: String| {
            if a != b {
                diffs.push(format!("{k}: {name}: terra {a}, {reference} {b}"));
            }
        };
        attr("kind", o.kind.into(), t.kind.into());
        attr("mode", format!("{:04o}", o.mode), format!("{:04o}", t.mode));
        attr("uid", o.uid.to_string(), t.uid.to_string());
        attr("gid", o.gid.to_string(), t.gid.to_string());
        attr("size", o.size.to_string(), t.size.to_string());
        attr(
            "content",
            format!("{:?}", o.sha256),
            format!("{:?}", t.sha256),
        );
        attr(
            "link target",
            format!("{:?}", o.link),
            format!("{:?}", t.link),
        );
        attr("rdev", format!("{:#x}", o.rdev), format!("{:#x}", t.rdev));
        attr(
            "xattrs",
            format!("{:?}", o.xattrs),
            format!("{:?}", t.xattrs),
        );
        attr("mtime", o.mtime.to_string(), t.mtime.to_string());
        attr(
            "hardlink",
            format!("{:?}", o.same_as),
            format!("{:?}", t.same_as),
        );
    }
    for (k, o) in ours {
        if !theirs.contains_key(k) {
            diffs.push(format!(
                "{k}: only in terra ({}), not in {reference}",
                o.kind
            ));
        }
    }
    diffs
}

/// `umoci unpack` of layout:tag; returns the rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("umoci is installed (apt-get install umoci)");
    assert!(
        out.status.success(),
        "umoci unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

pub fn terra() -> Command {
    Command::new(env!("CARGO_BIN_EXE_terra"))
}

/// Runs terra; returns (success, stdout, stderr).
pub fn run_terra(args: &[&str]) -> (bool, String, String) {
    let out = terra().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is installed (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's docker-registry serving from a temporary directory on 127.0.0.1, killed (by
/// PID) on drop (the lab's, [`lab::registry::Registry`]).
pub struct Registry {
    _server: lab::registry::Registry,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let server = lab::registry::Registry::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        Registry {
            port: server.port,
            _server: server,
            dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes layout:tag as repo:tag (all platforms, digests kept).
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        self.push_as(layout, tag, repo, tag);
    }

    /// Pushes layout:tag as repo:as_tag (a tag that moves, like `stable`).
    pub fn push_as(&self, layout: &Path, tag: &str, repo: &str, as_tag: &str) {
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}/{repo}:{as_tag}", self.host()),
        ]);
    }

    /// The registry's file for a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// A reasonably varied image: modes with setuid/setgid/sticky, owners, symlinks (absolute
/// and relative), a hardlink, xattrs, device nodes, a fifo, an empty file.
pub fn rich_layer() -> Vec<E> {
    vec![
        E::Dir("./", 0o755),
        E::Dir("bin/", 0o755),
        E::Dir("etc/", 0o755),
        E::Dir("tmp/", 0o1777),
        E::Dir("usr/", 0o755),
        E::Dir("usr/bin/", 0o755),
        E::Dir("dev/", 0o755),
        E::Dir("home/", 0o755),
        E::Dir("home/user/", 0o700),
        E::File("bin/sh", b"#!/bin/busybox sh\n", 0o755),
        E::FileFull(
            "usr/bin/su",
            b"setuid binary".to_vec(),
            0o4755,
            0,
            0,
            vec![],
        ),
        E::FileFull(
            "usr/bin/wall",
            b"setgid binary".to_vec(),
            0o2755,
            0,
            5,
            vec![],
        ),
        E::FileFull(
            "usr/bin/ping",
            b"capable binary".to_vec(),
            0o755,
            0,
            0,
            // VFS_CAP_REVISION_2 with cap_net_raw (13) permitted+effective.
            vec![(
                "security.capability",
                vec![
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            )],
        ),
        E::FileFull(
            "home/user/notes",
            b"owned by 1000".to_vec(),
            0o600,
            1000,
            1000,
            vec![("user.comment", b"hello".to_vec())],
        ),
        E::File("etc/empty", b"", 0o644),
        E::File("etc/os-release", b"NAME=test\n", 0o644),
        E::Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        E::Symlink("bin/busybox", "../usr/bin/su"),
        E::Hardlink("usr/bin/sudo", "usr/bin/su"),
        E::Char("dev/null", 1, 3),
        E::Block("dev/loop0", 7, 0),
        E::Fifo("dev/initctl"),
    ]
}
