//! Root versions in the lab: one OCI image layout whose tags share the demo root as their
//! base layer and differ in a small top layer, a disk with the first of them installed by
//! `terra install`, and `terra versions|upgrade` run on it.
//!
//! | tag | layers | what it is |
//! |---|---|---|
//! | `v1` | base | the demo root (`/etc/demo-subvol` = v1) |
//! | `v2` | base + 1 | `/etc/demo-subvol` = v2 |
//! | `v3` | base + 1 | `/sbin/init` whited out: fails in the initramfs |
//! | `v4` | base + 1 | an init that powers off without confirming |
//!
//! The health layout ([`health_layout`]) shares the base layer, so an upgrade to one of its
//! tags unpacks only the checks:
//!
//! | tag | on top of the base | what it is |
//! |---|---|---|
//! | `h1` | `/etc/terra/health.d`: `10-ok` passes, `README` is not executable | confirmed |
//! | `h2` | `10-ok`; `20-fails` prints [`NOISY_LINES`] lines and exits 3; `30-never` | rejected by `20-fails`; `30-never` never runs |

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::{demo_root, tempdir};
use crate::oci_root::{layer_from_dir, put_image, put_layer, sha256, Install};
use crate::{lab_dir, run};

/// Subvolume `data`, mounted by stage0 at this path in every version.
pub const DATA_PATH: &str = "/var/lib/demo";

/// v4's init: runs, says so, powers off; never confirms.
pub const NO_CONFIRM_INIT: &str =
    "#!/bin/sh\necho \"TERRA-V4-RAN subvol=$(cat /etc/demo-subvol)\"\n/bin/poweroff -f\n";

/// The failing check of [`health_layout`]'s `h2`: this many numbered lines (more than the
/// 4 KiB bless keeps), then its last words, then exit status 3.
pub const NOISY_LINES: usize = 500;

/// The health layout (module doc): tags `h1` and `h2` over the versions layout's base
/// layer, cached under target/lab/images by the base layer's digest and the checks.
pub fn health_layout(busybox: &Path) -> crate::Result<PathBuf> {
    let _turn = crate::lab_lock("health-layout")?;
    let work = tempdir("health-image")?;
    let built = (|| -> crate::Result<PathBuf> {
        let root = work.join("root");
        demo_root(&root, busybox, "v1")?;
        fs::create_dir_all(root.join(&DATA_PATH[1..])).map_err(|e| e.to_string())?;
        let base = layer_from_dir(&root)?;
        let ok = "#!/bin/sh\necho \"10-ok: $TERRA_VERSION is fine\"\n";
        let fails = format!(
            "#!/bin/sh\ni=1\nwhile [ $i -le {NOISY_LINES} ]; do echo \"20-fails: line $i\"; i=$((i+1)); done\n\
             echo '20-fails: the service did not come up' >&2\nexit 3\n"
        );
        let never = "#!/bin/sh\necho ran > /run/terra-demo-30-never\n";
        let checks = |tag: &str, files: &[(&str, &str, u32)]| -> crate::Result<Vec<u8>> {
            let dir = work.join(tag);
            let d = dir.join("etc/terra/health.d");
            fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            fs::write(dir.join("etc/demo-subvol"), format!("{tag}\n"))
                .map_err(|e| e.to_string())?;
            for (name, text, mode) in files {
                let p = d.join(name);
                fs::write(&p, text)
                    .and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
                    })
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            layer_from_dir(&dir)
        };
        let h1 = checks(
            "h1",
            &[
                (("10-ok"), ok, 0o755),
                ("README", "checks live here\n", 0o644),
            ],
        )?;
        let h2 = checks(
            "h2",
            &[
                ("10-ok", ok, 0o755),
                ("20-fails", &fails, 0o755),
                ("30-never", never, 0o755),
            ],
        )?;
        let layout = lab_dir().join("images").join(format!(
            "health-{}-{}-{}",
            &sha256(&base)[7..19],
            &sha256(&h1)[7..13],
            &sha256(&h2)[7..13]
        ));
        if !layout.join("index.json").is_file() {
            write_layout_at(
                &layout,
                &[("h1", vec![&base, &h1]), ("h2", vec![&base, &h2])],
                false,
            )?;
        }
        Ok(layout)
    })();
    let _ = fs::remove_dir_all(&work);
    built
}

/// A layer of regular files (path, content, mode) and whiteouts (content None).
pub fn layer_of(files: &[(&str, Option<&[u8]>, u32)]) -> crate::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let data = data.unwrap_or_default();
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data)
            .map_err(|e| format!("layer entry {path}: {e}"))?;
    }
    b.into_inner().map_err(|e| e.to_string())
}

/// Writes an image layout with the given tags, each a list of layers (tars, stored
/// gzip-compressed when `gzip`).
pub fn write_layout(layout: &Path, images: &[(&str, Vec<&[u8]>)], gzip: bool) -> crate::Result<()> {
    for (tag, layers) in images {
        let blobs = layers
            .iter()
            .map(|l| put_layer(layout, l, gzip))
            .collect::<crate::Result<Vec<_>>>()?;
        put_image(layout, tag, &blobs, &[])?;
    }
    Ok(())
}

/// [`write_layout`] made beside `layout` and renamed into place, so a cached layout that
/// exists is complete.
pub fn write_layout_at(
    layout: &Path,
    images: &[(&str, Vec<&[u8]>)],
    gzip: bool,
) -> crate::Result<()> {
    let tmp = crate::temp_name(layout);
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let written = write_layout(&tmp, images, gzip);
    if written.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    written?;
    crate::publish_dir(&tmp, layout)
}

/// The versions layout (tags v1–v4, see the module doc), cached under target/lab/images
/// by the base layer's digest.
pub fn layout(busybox: &Path) -> crate::Result<PathBuf> {
    let _turn = crate::lab_lock("versions-layout")?;
    let work = tempdir("versions-image")?;
    let root = work.join("root");
    demo_root(&root, busybox, "v1")?;
    fs::create_dir_all(root.join(&DATA_PATH[1..])).map_err(|e| e.to_string())?;
    let base = layer_from_dir(&root);
    let _ = fs::remove_dir_all(&work);
    let base = base?;
    let layout = lab_dir()
        .join("images")
        .join(format!("versions-{}", &sha256(&base)[7..19]));
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    let v2 = layer_of(&[("etc/demo-subvol", Some(b"v2\n"), 0o644)])?;
    let v3 = layer_of(&[
        ("etc/demo-subvol", Some(b"v3\n"), 0o644),
        ("sbin/.wh.init", None, 0o644),
    ])?;
    let v4 = layer_of(&[
        ("etc/demo-subvol", Some(b"v4\n"), 0o644),
        ("sbin/init", Some(NO_CONFIRM_INIT.as_bytes()), 0o755),
    ])?;
    write_layout_at(
        &layout,
        &[
            ("v1", vec![&base]),
            ("v2", vec![&base, &v2]),
            ("v3", vec![&base, &v3]),
            ("v4", vec![&base, &v4]),
        ],
        false,
    )?;
    Ok(layout)
}

/// A fresh copy (at `target/lab/scratch/<copy_name>.img`) of a disk with `oci:<layout>:v1`
/// installed by `terra install` as version `os`, with subvolume `data` at [`DATA_PATH`];
/// the installed disk itself is cached.
/// Give each test its own `uuid`: the kernel refuses two mounted filesystems with one.
pub fn fresh_disk(
    terra: &Path,
    layout: &Path,
    uuid: &str,
    copy_name: &str,
) -> crate::Result<PathBuf> {
    crate::disk::claim_scratch(&format!("{copy_name}.img"))?;
    let image = format!("oci:{}:v1", layout.display());
    let name = format!(
        "versions-{uuid}-{}",
        layout.file_name().unwrap_or_default().to_string_lossy()
    );
    let extra = format!("  [[groups.subvolumes]]\n  name = \"data\"\n  path = \"{DATA_PATH}\"\n");
    let cached = Install {
        size_mb: 200,
        group_extra: &extra,
        ..Install::single(&image, "os", uuid, &name)
    }
    .disk(terra)?;
    crate::disk::scratch_copy(&cached, &format!("{copy_name}.img"))
}

/// `terra versions --disk D --json`, as (name, state, tries_left) triples.
pub fn states(terra: &Path, disk: &Path) -> crate::Result<Vec<(String, String, u64)>> {
    let out = run(Command::new(terra)
        .args(["versions", "--json", "--disk"])
        .arg(disk))?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|e| format!("terra versions --json: {e}: {out}"))?;
    Ok(list
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["state"].as_str().unwrap_or_default().to_string(),
                v["tries_left"].as_u64().unwrap_or_default(),
            )
        })
        .collect())
}

/// `terra upgrade --disk D oci:<layout>:<tag> ARGS…`; returns its output.
pub fn upgrade(
    terra: &Path,
    disk: &Path,
    layout: &Path,
    tag: &str,
    args: &[&str],
) -> crate::Result<String> {
    run(Command::new(terra)
        .args(["upgrade", "--disk"])
        .arg(disk)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .args(args))
}

/// What a power cut clears after a `terra` was killed with SIGKILL: its mount of the top
/// level (an upgrade's, or an install's) and its loop devices on `disk`. The disk holds what the kill left. Only mounts of
/// `disk`'s own loop devices are touched: other tests' `terra` may have theirs mounted now.
pub fn power_cut(disk: &Path) {
    let loops: Vec<String> = Command::new("losetup")
        .arg("-j")
        .arg(disk)
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split(':').next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for l in mounts.lines() {
        let mut f = l.split_whitespace();
        let (Some(dev), Some(at)) = (f.next(), f.next()) else {
            continue;
        };
        // A bootable disk's filesystem is on a partition of its loop device (`/dev/loop0p3`).
        let on_disk = |d: &String| {
            dev.strip_prefix(d.as_str()).is_some_and(|rest| {
                rest.is_empty()
                    || rest
                        .strip_prefix('p')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        let terras = at.contains("/terra-versions-") || at.contains("/terra-install-");
        if terras && loops.iter().any(on_disk) {
            let _ = Command::new("umount").args(["-l", at]).output();
        }
    }
    for dev in &loops {
        let _ = Command::new("losetup").args(["-d", dev]).output();
    }
    let _turn = crate::disk::mount_lock();
    crate::host::forget_stale_btrfs_devices();
}
