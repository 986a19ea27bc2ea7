//! The demo root as a real OCI image: `demo_root` packed into a one-layer image layout
//! (written here, no network, no container tools), then installed onto a disk image with
//! `terra install`, the path a real node's root takes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::disk::{demo_root, tempdir};
use crate::{lab_dir, run};

/// Serializes building the cached layout and disks between the tests of one process.
static LOCK: Mutex<()> = Mutex::new(());

/// Tag of the demo image in its layout.
pub const DEMO_TAG: &str = "demo";

fn sha256(data: &[u8]) -> String {
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

/// The demo image's layout (busybox demo root, `/etc/demo-subvol` = `os`), cached under
/// target/lab/images by its manifest digest, so a change to the demo root makes a new one.
/// Returns the layout and the manifest digest.
pub fn demo_layout(busybox: &Path) -> crate::Result<(PathBuf, String)> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
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
            fs::rename(&tmp, &layout).map_err(|e| format!("{}: {e}", layout.display()))?;
        }
        Ok((layout, digest))
    });
    let _ = fs::remove_dir_all(&work);
    placed
}

/// A disk image made by `terra install` from a node.toml: label `label`, filesystem UUID
/// `uuid`, the image `image` in subvolume `os`. Cached under target/lab/disks by `name`
/// (change it when the content changes); needs root (terra install uses loop devices).
pub fn installed_disk(
    terra: &Path,
    image: &str,
    label: &str,
    uuid: &str,
    name: &str,
) -> crate::Result<PathBuf> {
    let mut disks = install_group(terra, image, label, uuid, name, "single", 1)?;
    disks
        .pop()
        .ok_or_else(|| "terra install made no disk".to_string())
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
    install_group(terra, image, label, uuid, name, "raid1", 2)
}

fn install_group(
    terra: &Path,
    image: &str,
    label: &str,
    uuid: &str,
    name: &str,
    profile: &str,
    count: usize,
) -> crate::Result<Vec<PathBuf>> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
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
            "  [[groups.disk]]\n  device = \"{}\"\n  size = 160\n",
            d.display()
        ));
    }
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

/// Deterministic pseudo-random numbers (xorshift64*) for generated benchmark files.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Text-like content (compresses about 3:1 with gzip, like binaries and text do).
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
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
    let tmp = lab_dir().join(format!("images/.bench-unpack-{mb}m-tmp"));
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
    fs::rename(&tmp, &layout).map_err(|e| format!("{}: {e}", layout.display()))?;
    Ok(layout)
}

/// `cargo xtask bench`'s unpack case: the same multi-layer image (about `mb` MiB) unpacked
/// `runs` times by `terra image unpack`, `umoci unpack` (rootfs plus its mtree manifest, what
/// its users run) and `umoci raw unpack` (the rootfs alone), after one warm-up each so every
/// tool reads the layout from the page cache. Returns a Markdown table with medians and
/// ratios to terra.
pub fn bench_unpack(terra: &Path, mb: usize, runs: usize) -> crate::Result<String> {
    let layout = bench_layout(mb)?;
    let image = format!("{}:bench", layout.display());
    let work = tempdir("bench-unpack")?;
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    let result = (|| -> crate::Result<()> {
        for (name, which) in [
            ("terra image unpack", 0),
            ("umoci unpack", 1),
            ("umoci raw unpack", 2),
        ] {
            let mut times = Vec::new();
            for i in 0..=runs {
                let dest = work.join(format!("{which}-{i}"));
                let mut cmd = match which {
                    0 => {
                        let mut c = Command::new(terra);
                        c.args(["image", "unpack", &format!("oci:{image}")])
                            .arg(&dest);
                        c
                    }
                    1 => {
                        let mut c = Command::new("umoci");
                        c.args(["unpack", "--image", &image]).arg(&dest);
                        c
                    }
                    _ => {
                        let mut c = Command::new("umoci");
                        c.args(["raw", "unpack", "--image", &image]).arg(&dest);
                        c
                    }
                };
                let t = timed(&mut cmd)?;
                if i > 0 {
                    times.push(t);
                }
                run(Command::new("rm").arg("-rf").arg(&dest))?;
            }
            rows.push((name, times));
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    result?;
    use crate::bench::{median, timed};
    let base = median(&rows[0].1);
    let compressed: u64 = fs::read_dir(layout.join("blobs/sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mut md = format!(
        "### Unpack: {mb} MiB image in 3 gzip layers ({:.0} MiB compressed), median of {runs}\n\n\
         | unpacker | time (s) | vs terra |\n|---|---|---|\n",
        compressed as f64 / (1 << 20) as f64
    );
    for (name, times) in &rows {
        let m = median(times);
        md.push_str(&format!("| {name} | {m:.2} | {:.2}× |\n", m / base));
    }
    Ok(md)
}
