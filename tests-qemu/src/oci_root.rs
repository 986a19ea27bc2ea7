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

/// Packs the tree `root` as an uncompressed, reproducible layer (fixed mtimes and owners,
/// sorted entries: the tar crate's deterministic mode).
pub fn layer_from_dir(root: &Path) -> crate::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    b.append_dir_all(".", root)
        .map_err(|e| format!("packing {}: {e}", root.display()))?;
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
/// target/lab/images.
pub fn demo_layout(busybox: &Path) -> crate::Result<PathBuf> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let layout = lab_dir().join("images/demo-v1");
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    let work = tempdir("demo-image")?;
    let root = work.join("root");
    let tmp = work.join("layout");
    let made = demo_root(&root, busybox, "os").and_then(|()| layout_from_dir(&root, &tmp));
    let placed = made.and_then(|_| {
        if let Some(parent) = layout.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::rename(&tmp, &layout).map_err(|e| format!("{}: {e}", layout.display()))
    });
    let _ = fs::remove_dir_all(&work);
    placed?;
    Ok(layout)
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
/// subvolume `os`, the given UUID).
pub fn demo_disk(terra: &Path, busybox: &Path, uuid: &str) -> crate::Result<PathBuf> {
    let layout = demo_layout(busybox)?;
    installed_disk(
        terra,
        &format!("oci:{}:{DEMO_TAG}", layout.display()),
        "os",
        uuid,
        &format!("os-{uuid}-oci-demo-v1"),
    )
}
