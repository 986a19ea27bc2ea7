//! The demo root as a real OCI image: `demo_root` packed into a one-layer image layout
//! (written here, no network, no container tools), then installed onto a disk image with
//! `terra install`, the path a real node's root takes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::disk::{demo_root, tempdir};
use crate::{lab_dir, run};

pub mod corpus;

/// Tag of the demo image in its layout.
pub const DEMO_TAG: &str = "demo";

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn put_blob(layout: &Path, data: &[u8]) -> crate::Result<String> {
    let digest = sha256(data);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(&digest[7..]);
    fs::write(&path, data).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(digest)
}

/// Packs the tree `root` as an uncompressed, reproducible layer: entries sorted by name,
/// fixed mtimes and owners (the tar crate's deterministic mode), symlinks kept as links.
pub fn layer_from_dir(root: &Path) -> crate::Result<Vec<u8>> {
    fn add(b: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path) -> crate::Result<()> {
        let dir = root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            b.append_path_with_name(&p, &r)
                .map_err(|e| format!("packing {}: {e}", p.display()))?;
            let is_dir = fs::symlink_metadata(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .is_dir();
            if is_dir {
                add(b, root, &r)?;
            }
        }
        Ok(())
    }
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    add(&mut b, root, Path::new(""))?;
    b.into_inner()
        .map_err(|e| format!("packing {}: {e}", root.display()))
}

/// Writes an OCI image layout at `layout` whose image (tagged [`DEMO_TAG`]) is the tree
/// `root` as one layer. Returns the manifest digest.
pub fn layout_from_dir(root: &Path, layout: &Path) -> crate::Result<String> {
    let tar = layer_from_dir(root)?;
    let diff_id = sha256(&tar);
    let layer = put_blob(layout, &tar)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/sbin/init"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = put_blob(layout, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": tar.len()}],
    }))
    .map_err(|e| e.to_string())?;
    let manifest_digest = put_blob(layout, &manifest)?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": DEMO_TAG}}],
    }))
    .map_err(|e| e.to_string())?;
    let files = [
        ("index.json", index),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ];
    for (name, data) in files {
        let p = layout.join(name);
        fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(manifest_digest)
}

/// Packs the system root `root` as an uncompressed layer that keeps what a real root needs:
/// numeric owners, full modes (setuid, setgid, sticky), hardlinks (one `Link` entry per extra
/// name), symlinks as they are, device nodes and fifos, and xattrs (ACLs,
/// `security.capability`) as PAX `SCHILY.xattr.*` records. Entries are sorted by name and
/// mtimes are clamped to `mtime_clamp` (like `SOURCE_DATE_EPOCH`), so the same tree gives the
/// same bytes. Sockets are left out (tar cannot hold them). Unlike [`layer_from_dir`], whose
/// deterministic mode makes every entry root-owned 0644/0755.
pub fn root_layer_from_dir(root: &Path, mtime_clamp: u64) -> crate::Result<Vec<u8>> {
    use std::collections::HashMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    struct Packer {
        b: tar::Builder<Vec<u8>>,
        /// (dev, ino) of files with several names → the first name packed.
        links: HashMap<(u64, u64), PathBuf>,
        clamp: u64,
    }

    impl Packer {
        fn add_dir(&mut self, root: &Path, rel: &Path) -> crate::Result<()> {
            let dir = root.join(rel);
            let mut names: Vec<_> = fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            names.sort();
            for n in names {
                let r = rel.join(&n);
                let p = root.join(&r);
                let is_dir = self
                    .add(&p, &r)
                    .map_err(|e| format!("packing {}: {e}", p.display()))?;
                if is_dir {
                    self.add_dir(root, &r)?;
                }
            }
            Ok(())
        }

        /// Appends one entry; true when it is a directory.
        fn add(&mut self, p: &Path, rel: &Path) -> std::io::Result<bool> {
            let meta = fs::symlink_metadata(p)?;
            let ft = meta.file_type();
            if ft.is_socket() {
                return Ok(false);
            }
            let mut h = tar::Header::new_gnu();
            h.set_uid(u64::from(meta.uid()));
            h.set_gid(u64::from(meta.gid()));
            h.set_mode(meta.mode() & 0o7777);
            h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0).min(self.clamp));
            h.set_size(0);
            let xattrs = list_xattrs(p)?;
            if !xattrs.is_empty() {
                append_pax(&mut self.b, rel, &xattrs)?;
            }
            if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                self.b.append_data(&mut h, rel, std::io::empty())?;
                return Ok(true);
            }
            if ft.is_symlink() {
                h.set_entry_type(tar::EntryType::Symlink);
                let target = fs::read_link(p)?;
                self.b.append_link(&mut h, rel, target)?;
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key) {
                        h.set_entry_type(tar::EntryType::Link);
                        let first = first.clone();
                        self.b.append_link(&mut h, rel, first)?;
                        return Ok(false);
                    }
                    self.links.insert(key, rel.to_path_buf());
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(meta.len());
                self.b.append_data(&mut h, rel, fs::File::open(p)?)?;
            } else {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                h.set_entry_type(kind);
                if kind != tar::EntryType::Fifo {
                    let rdev = meta.rdev();
                    h.set_device_major(libc::major(rdev))?;
                    h.set_device_minor(libc::minor(rdev))?;
                }
                self.b.append_data(&mut h, rel, std::io::empty())?;
            }
            Ok(false)
        }
    }

    let mut packer = Packer {
        b: tar::Builder::new(Vec::new()),
        links: HashMap::new(),
        clamp: mtime_clamp,
    };
    packer.add_dir(root, Path::new(""))?;
    packer
        .b
        .into_inner()
        .map_err(|e| format!("packing {}: {e}", root.display()))
}

/// The extended attributes of `p` itself (not following a symlink); none where the
/// filesystem has no xattrs.
fn list_xattrs(p: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path =
        CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `path` is NUL-terminated and `names` is a writable buffer of the given size.
        let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| std::io::Error::other("NUL in xattr"))?;
        let mut value = vec![0u8; 256];
        let vlen = loop {
            // SAFETY: both strings are NUL-terminated; `value` is writable for its length.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                value.resize(value.len() * 4, 0);
            } else {
                return Err(e);
            }
        };
        value.truncate(vlen);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    Ok(out)
}

/// A PAX extended header carrying `SCHILY.xattr.<name>` records for the next entry.
fn append_pax(
    b: &mut tar::Builder<Vec<u8>>,
    rel: &Path,
    xattrs: &[(String, Vec<u8>)],
) -> std::io::Result<()> {
    let mut data = Vec::new();
    for (name, value) in xattrs {
        // "<len> SCHILY.xattr.<name>=<value>\n", where <len> counts its own digits too.
        let body = 1 + "SCHILY.xattr.".len() + name.len() + 1 + value.len() + 1;
        let mut len = body;
        loop {
            let total = body + len.to_string().len();
            if total == len {
                break;
            }
            len = total;
        }
        data.extend_from_slice(format!("{len} SCHILY.xattr.{name}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    let base = rel
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(80).collect::<String>())
        .unwrap_or_default();
    b.append_data(&mut h, format!("PaxHeaders/{base}"), data.as_slice())
}

/// A layer blob stored in an image layout by [`put_layer`].
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Digest of the stored blob (compressed when `media_type` says so).
    pub digest: String,
    /// Size of the stored blob.
    pub size: u64,
    /// OCI media type (`…tar` or `…tar+gzip`).
    pub media_type: &'static str,
    /// Digest of the uncompressed tar (the config's `diff_ids` entry).
    pub diff_id: String,
}

/// Stores the uncompressed layer `tar` in the layout at `layout`, gzip-compressed when `gzip`.
pub fn put_layer(layout: &Path, tar: &[u8], gzip: bool) -> crate::Result<LayerBlob> {
    let diff_id = sha256(tar);
    let (blob, media_type) = if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(tar)
            .and_then(|()| e.finish())
            .map(|z| (z, "application/vnd.oci.image.layer.v1.tar+gzip"))
            .map_err(|e| format!("gzip of a layer for {}: {e}", layout.display()))?
    } else {
        (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar")
    };
    let digest = put_blob(layout, &blob)?;
    Ok(LayerBlob {
        digest,
        size: blob.len() as u64,
        media_type,
        diff_id,
    })
}

/// Adds an amd64 Linux image made of `layers` (bottom first, stored by [`put_layer`]) to the
/// layout at `layout`, tagged `tag` in its index.json (an image of that tag is replaced;
/// index.json and oci-layout are created when absent). `labels` go into the config's
/// `Labels`; its `Cmd` is `/sbin/init`. Returns the manifest digest.
pub fn put_image(
    layout: &Path,
    tag: &str,
    layers: &[LayerBlob],
    labels: &[(&str, &str)],
) -> crate::Result<String> {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/sbin/init"], "Labels": labels},
        "rootfs": {"type": "layers",
                   "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>()},
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = put_blob(layout, &config)?;
    let descs: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .map_err(|e| e.to_string())?;
    let manifest_digest = put_blob(layout, &manifest)?;
    let index_path = layout.join("index.json");
    let mut manifests = match fs::read(&index_path) {
        Ok(data) => {
            let index: serde_json::Value = serde_json::from_slice(&data)
                .map_err(|e| format!("{}: {e}", index_path.display()))?;
            index["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", index_path.display())),
    };
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": manifests,
    }))
    .map_err(|e| e.to_string())?;
    let files = [
        ("index.json", index),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ];
    for (name, data) in files {
        let p = layout.join(name);
        fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(manifest_digest)
}

/// The demo image's layout (busybox demo root, `/etc/demo-subvol` = `os`), cached under
/// target/lab/images by its manifest digest, so a change to the demo root makes a new one.
/// Returns the layout and the manifest digest.
pub fn demo_layout(busybox: &Path) -> crate::Result<(PathBuf, String)> {
    let _turn = crate::lab_lock("demo-layout")?;
    let work = tempdir("demo-image")?;
    let root = work.join("root");
    let tmp = work.join("layout");
    let made = demo_root(&root, busybox, "os").and_then(|()| layout_from_dir(&root, &tmp));
    let placed = made.and_then(|digest| {
        let layout = lab_dir()
            .join("images")
            .join(format!("demo-{}", &digest[7..19]));
        if !layout.join("index.json").is_file() {
            if let Some(parent) = layout.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            crate::publish_dir(&tmp, &layout)?;
        }
        Ok((layout, digest))
    });
    let _ = fs::remove_dir_all(&work);
    placed
}

/// A group of disk images written by `terra install` from a node.toml, cached under
/// target/lab/disks by [`Install::name`] (change it when the content changes); needs root
/// (terra install uses loop devices).
#[derive(Debug, Clone)]
pub struct Install<'a> {
    /// The image reference.
    pub image: &'a str,
    /// The group's label.
    pub label: &'a str,
    /// The root group's filesystem UUID.
    pub uuid: &'a str,
    /// The cache name.
    pub name: &'a str,
    /// `single` or `raid1`, …
    pub profile: &'a str,
    /// How many disks.
    pub count: usize,
    /// Each disk's size, MiB.
    pub size_mb: u64,
    /// node.toml text appended inside the group (e.g. `[[groups.subvolumes]]`).
    pub group_extra: &'a str,
}

impl<'a> Install<'a> {
    /// One 160 MiB disk, group type single, nothing extra.
    pub fn single(image: &'a str, label: &'a str, uuid: &'a str, name: &'a str) -> Self {
        Install {
            image,
            label,
            uuid,
            name,
            profile: "single",
            count: 1,
            size_mb: 160,
            group_extra: "",
        }
    }

    /// Installs (or finds the cached disks); returns them in order.
    pub fn disks(&self, terra: &Path) -> crate::Result<Vec<PathBuf>> {
        install_group(terra, self)
    }

    /// [`Install::disks`] for a one-disk group.
    pub fn disk(&self, terra: &Path) -> crate::Result<PathBuf> {
        self.disks(terra)?
            .pop()
            .ok_or_else(|| "terra install made no disk".to_string())
    }
}

/// A disk image made by `terra install` from a node.toml: label `label`, filesystem UUID
/// `uuid`, the image `image` in subvolume `os`, 160 MiB ([`Install::single`]).
pub fn installed_disk(
    terra: &Path,
    image: &str,
    label: &str,
    uuid: &str,
    name: &str,
) -> crate::Result<PathBuf> {
    Install::single(image, label, uuid, name).disk(terra)
}

/// Two disk images holding one raid1 group made by `terra install`, as
/// [`installed_disk`] does for one.
pub fn installed_raid1(
    terra: &Path,
    image: &str,
    label: &str,
    uuid: &str,
    name: &str,
) -> crate::Result<Vec<PathBuf>> {
    Install {
        profile: "raid1",
        count: 2,
        ..Install::single(image, label, uuid, name)
    }
    .disks(terra)
}

/// [`installed_disk`] on a disk image of `size_mb` MiB, for images that need more room,
/// such as a Debian root.
pub fn installed_disk_sized(
    terra: &Path,
    image: &str,
    label: &str,
    uuid: &str,
    name: &str,
    size_mb: u64,
) -> crate::Result<PathBuf> {
    Install {
        size_mb,
        ..Install::single(image, label, uuid, name)
    }
    .disk(terra)
}

fn install_group(terra: &Path, spec: &Install) -> crate::Result<Vec<PathBuf>> {
    let Install {
        image,
        label,
        uuid,
        name,
        profile,
        count,
        size_mb,
        group_extra,
    } = *spec;
    let dir = lab_dir().join("disks");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| match count {
            1 => dir.join(format!("{name}.img")),
            _ => dir.join(format!("{name}-{i}.img")),
        })
        .collect();
    if paths.iter().all(|p| p.is_file()) {
        return Ok(paths);
    }
    // One builder of these disks at a time, across processes too. (Not the mount lock:
    // installs of different disks, each with a UUID of its own, may run side by side.)
    let _turn = crate::lab_lock(&format!("disk-{name}"))?;
    if paths.iter().all(|p| p.is_file()) {
        return Ok(paths);
    }
    // A filesystem over several disks must not lose a registered member to another
    // mount's `btrfs device scan --forget` before it is mounted.
    let _mounts = if count > 1 {
        Some(crate::disk::mount_lock()?)
    } else {
        None
    };
    if !crate::host::nix_is_root() {
        return Err("terra install needs root (loop devices and mount)".into());
    }
    let work = tempdir("install")?;
    let disks: Vec<PathBuf> = (0..count)
        .map(|i| work.join(format!("disk{i}.img")))
        .collect();
    let node = work.join("node.toml");
    let mut text = format!(
        "hostname = \"terra-demo\"\nimage = \"{image}\"\n\n[[groups]]\nlabel = \"{label}\"\n\
         type = \"{profile}\"\n"
    );
    for d in &disks {
        text.push_str(&format!(
            "  [[groups.disk]]\n  device = \"{}\"\n  size = {size_mb}\n",
            d.display()
        ));
    }
    text.push_str(group_extra);
    let installed = fs::File::create(&node)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", node.display()))
        .and_then(|()| {
            run(Command::new(terra)
                .arg("install")
                .arg(&node)
                .args(["--uuid", uuid]))
        })
        .and_then(|_| {
            for (d, p) in disks.iter().zip(&paths) {
                fs::rename(d, p).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(())
        });
    let _ = fs::remove_dir_all(&work);
    installed?;
    Ok(paths)
}

/// The lab's demo disk: the demo image installed by `terra install` (label `os`,
/// subvolume `os`, the given UUID), cached by UUID and image digest.
pub fn demo_disk(terra: &Path, busybox: &Path, uuid: &str) -> crate::Result<PathBuf> {
    let (layout, digest) = demo_layout(busybox)?;
    installed_disk(
        terra,
        &format!("oci:{}:{DEMO_TAG}", layout.display()),
        "os",
        uuid,
        &format!("os-{uuid}-oci-{}", &digest[7..19]),
    )
}

/// The demo image installed by `terra install` on one 512 MiB disk with `mbr = true`: the
/// disk boots by itself under BIOS and UEFI (GRUB, the ESP holding `kernel` and a Terra
/// initramfs with `stage0`), with `append` added to its kernel command line
/// (`terra.demo=poweroff` makes the demo init end the run). See [`boot_disk`].
pub fn demo_boot_disk(
    terra: &Path,
    busybox: &Path,
    stage0: &Path,
    kernel: &Path,
    uuid: &str,
    append: &str,
) -> crate::Result<PathBuf> {
    let (layout, digest) = demo_layout(busybox)?;
    boot_disk(
        &BootDisk {
            terra,
            stage0,
            kernel,
            image: &format!("oci:{}:{DEMO_TAG}", layout.display()),
            uuid,
            append,
            size_mb: BOOT_DISK_MB,
        },
        &format!("boot-{uuid}-{}", &digest[7..19]),
    )
}

/// What [`boot_disk`] installs.
#[derive(Debug, Clone)]
pub struct BootDisk<'a> {
    /// The terra binary.
    pub terra: &'a Path,
    /// stage0 for the disk's initramfs.
    pub stage0: &'a Path,
    /// The base kernel (`--kernel`).
    pub kernel: &'a Path,
    /// The image reference.
    pub image: &'a str,
    /// The root filesystem's UUID.
    pub uuid: &'a str,
    /// Extra kernel arguments on the ESP (`--cmdline`).
    pub append: &'a str,
    /// The disk's size in MiB ([`BOOT_DISK_MB`] for the demo roots).
    pub size_mb: u64,
}

/// The size of a bootable demo disk.
pub const BOOT_DISK_MB: u64 = 512;

/// A disk image made by `terra install` with `mbr = true` (label `os`, one disk of
/// `size_mb`), cached under target/lab/disks as `<name>-<hash>.img`, the hash covering
/// `append`, the size and the
/// kernel's, terra's and stage0's sizes and times (a new build makes a new disk).
pub fn boot_disk(spec: &BootDisk, name: &str) -> crate::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [spec.terra, spec.stage0, spec.kernel] {
        let m = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        (m.len(), m.modified().ok()).hash(&mut h);
    }
    (spec.append, spec.image, spec.size_mb).hash(&mut h);
    let dir = lab_dir().join("disks");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}-{:016x}.img", h.finish()));
    if path.is_file() {
        return Ok(path);
    }
    let _turn = crate::lab_lock(&format!("disk-{name}"))?;
    if path.is_file() {
        return Ok(path);
    }
    if !crate::host::nix_is_root() {
        return Err("terra install needs root (loop devices and mount)".into());
    }
    let work = tempdir("install-boot")?;
    let disk = work.join("disk.img");
    let node = work.join("node.toml");
    let text = format!(
        "hostname = \"terra-demo\"\nimage = \"{}\"\n\n[[groups]]\n\
         label = \"os\"\nmbr = true\n  [[groups.disk]]\n  device = \"{}\"\n  size = {}\n",
        spec.image,
        disk.display(),
        spec.size_mb
    );
    let installed = fs::write(&node, text)
        .map_err(|e| format!("{}: {e}", node.display()))
        .and_then(|()| {
            run(Command::new(spec.terra)
                .env("TERRA_STAGE0", spec.stage0)
                .arg("install")
                .arg(&node)
                .args(["--uuid", spec.uuid, "--cmdline", spec.append, "--kernel"])
                .arg(spec.kernel))
        })
        .and_then(|_| fs::rename(&disk, &path).map_err(|e| format!("{}: {e}", path.display())));
    let _ = fs::remove_dir_all(&work);
    installed?;
    Ok(path)
}

/// A file of the ESP of a disk made by [`boot_disk`], read with mtools (the ESP starts at
/// 2 MiB); None when it is missing.
pub fn esp_file(disk: &Path, path: &str) -> crate::Result<Option<Vec<u8>>> {
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@2M", disk.display()))
        .arg(format!("::/{path}"))
        .arg("-")
        .output()
        .map_err(|e| format!("mcopy: {e}"))?;
    Ok(out.status.success().then_some(out.stdout))
}

/// Deterministic pseudo-random numbers (xorshift64*) for generated benchmark files.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Text-like content (compresses about 3:1 with gzip, like binaries and text do).
pub(crate) fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "terra ", "boot ", "layer ", "\x7fELF", "init ", "btrfs\n", "0x3f2a ", "module ", "root ",
        "\0\0\0\0", "kernel ", "image\n", "digest ", "sha256:", "oci ", "stage0 ",
    ];
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        let r = rng.next();
        if r.is_multiple_of(5) {
            v.extend_from_slice(&r.to_le_bytes());
        } else {
            v.extend_from_slice(WORDS[(r >> 7) as usize % WORDS.len()].as_bytes());
        }
    }
    v.truncate(len);
    v
}

fn gz(data: &[u8]) -> crate::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).map_err(|e| e.to_string())?;
    e.finish().map_err(|e| e.to_string())
}

/// One generated layer: `files` files under `prefix` in directories of 100, sizes from
/// 512 B to 64 KiB with one in 200 of 1–4 MiB, plus whiteouts of `whiteouts` paths.
fn bench_layer(
    rng: &mut Rng,
    prefix: &str,
    files: usize,
    whiteouts: &[String],
) -> crate::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |path: &str, kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        (h, path.to_string())
    };
    let mut dirs = std::collections::BTreeSet::new();
    for w in whiteouts {
        let (dir, name) = w.rsplit_once('/').unwrap_or(("", w));
        let (mut h, p) = header(
            &format!("{dir}/.wh.{name}"),
            tar::EntryType::Regular,
            0,
            0o644,
        );
        b.append_data(&mut h, p, std::io::empty())
            .map_err(|e| e.to_string())?;
    }
    for i in 0..files {
        let dir = format!("{prefix}/d{:03}", i / 100);
        if dirs.insert(dir.clone()) {
            let (mut h, p) = header(&format!("{dir}/"), tar::EntryType::Directory, 0, 0o755);
            b.append_data(&mut h, p, std::io::empty())
                .map_err(|e| e.to_string())?;
        }
        let r = rng.next();
        let len = if r.is_multiple_of(200) {
            (1 << 20) + (r >> 20) as usize % (3 << 20)
        } else {
            512 + (r >> 8) as usize % (64 << 10)
        };
        let data = content(rng, len);
        let (mut h, p) = header(
            &format!("{dir}/f{i:05}"),
            tar::EntryType::Regular,
            len as u64,
            0o644,
        );
        b.append_data(&mut h, p, data.as_slice())
            .map_err(|e| e.to_string())?;
        if i.is_multiple_of(50) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            b.append_link(&mut h, format!("{dir}/l{i:05}"), format!("f{i:05}"))
                .map_err(|e| e.to_string())?;
        }
    }
    b.into_inner().map_err(|e| e.to_string())
}

/// A multi-layer gzip image of about `mb` MiB uncompressed (three layers; the third whites
/// out part of the first), tagged `bench`, cached under target/lab/images.
pub fn bench_layout(mb: usize) -> crate::Result<PathBuf> {
    let layout = lab_dir().join(format!("images/bench-unpack-{mb}m-v2"));
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    let _turn = crate::lab_lock("bench-layout")?;
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    let tmp = crate::temp_name(&layout);
    let _ = fs::remove_dir_all(&tmp);
    let mut rng = Rng(0x7e44_a1a0_5ca1_4e00);
    // ~33 KiB per file on average plus the large ones: about 50 KiB per file.
    let files = mb * 1024 / 50;
    let l1 = bench_layer(&mut rng, "usr/share", files / 2, &[])?;
    let l2 = bench_layer(&mut rng, "usr/lib", files / 3, &[])?;
    let gone: Vec<String> = (0..files / 20)
        .map(|i| format!("usr/share/d{:03}/f{i:05}", i / 100))
        .collect();
    let l3 = bench_layer(&mut rng, "opt/app", files - files / 2 - files / 3, &gone)?;
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for l in [&l1, &l2, &l3] {
        diff_ids.push(sha256(l));
        let z = gz(l)?;
        let d = put_blob(&tmp, &z)?;
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                      "digest": d, "size": z.len()}),
        );
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| e.to_string())?;
    let cd = put_blob(&tmp, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .map_err(|e| e.to_string())?;
    let md = put_blob(&tmp, &manifest)?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                       "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "bench"}}],
    }))
    .map_err(|e| e.to_string())?;
    fs::write(tmp.join("index.json"), index).map_err(|e| e.to_string())?;
    fs::write(tmp.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| e.to_string())?;
    crate::publish_dir(&tmp, &layout)?;
    Ok(layout)
}
