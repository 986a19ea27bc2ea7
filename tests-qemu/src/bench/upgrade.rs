//! `cargo xtask bench --only upgrade`: what a version costs.
//!
//! 1. **Upgrade vs full unpack**, on one disk image in one run: an image whose only change
//!    is a 10 MiB top layer over a ~500 MiB base (gzip layers of text-like content that
//!    compresses about 3:1, as registries serve them). `terra upgrade` (snapshot of the base
//!    chain on the disk, then the top layer) against `terra image unpack` of the same
//!    image into a fresh subvolume of the same filesystem (a full unpack per version, what
//!    Elemental does): wall time and new data on the filesystem (btrfs `Data used` before
//!    and after, synced).
//! 2. **Boot cost**, under QEMU with the demo root: stage0's root phase and the guest time
//!    to the root's init for a plain boot of the default, a boot of a tentative version
//!    (counted: one state write), and a boot whose tentative version has no init (marked
//!    bad, the default boots in the same boot).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::{max, median, min, timed};
use crate::disk::{scratch_copy, tempdir, with_mount};
use crate::oci_root::{content, Rng};
use crate::versions::{self, layer_of, write_layout};
use crate::{lab_dir, run};

/// Size of the base layer, MiB.
const BASE_MB: usize = 500;
/// Size of the changed top layer, MiB.
const TOP_MB: usize = 10;
const UPGRADE_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b7";
const BOOT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b8";

/// A layer of `mb` files of 1 MiB under `dir/` (`dir/f0000`, …), the i-th holding
/// `chunk(i)`, plus `extra` entries: the upgrade and update benches' images.
pub(crate) fn mb_layer(
    dir: &str,
    mb: usize,
    extra: &[(&str, Option<&[u8]>, u32)],
    chunk: impl FnMut(usize) -> Vec<u8>,
) -> crate::Result<Vec<u8>> {
    let names: Vec<String> = (0..mb).map(|i| format!("{dir}/f{i:04}")).collect();
    let data: Vec<Vec<u8>> = (0..mb).map(chunk).collect();
    let mut files: Vec<(&str, Option<&[u8]>, u32)> = names
        .iter()
        .zip(&data)
        .map(|(n, d)| (n.as_str(), Some(d.as_slice()), 0o644))
        .collect();
    files.extend_from_slice(extra);
    layer_of(&files)
}

/// A layer of `mb` files of 1 MiB of compressible content under `dir/`, plus `extra`.
fn files_layer(
    dir: &str,
    mb: usize,
    seed: u64,
    extra: &[(&str, Option<&[u8]>, u32)],
) -> crate::Result<Vec<u8>> {
    let mut rng = Rng(seed * 100_003 + 1);
    mb_layer(dir, mb, extra, |_| content(&mut rng, 1 << 20))
}

/// The layout: `v1` = base + top A, `v2` = base + top B; cached.
fn layout() -> crate::Result<PathBuf> {
    let layout = lab_dir()
        .join("images")
        .join(format!("upgrade-bench-{BASE_MB}-{TOP_MB}-gz"));
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    // The base carries an init too, so the image is a root like any other.
    let init: &[u8] = b"#!/sbin/init\n";
    let base = files_layer("usr/base", BASE_MB, 1, &[("sbin/init", Some(init), 0o755)])?;
    let a = files_layer("usr/top", TOP_MB, 2, &[])?;
    let b = files_layer("usr/top", TOP_MB, 3, &[])?;
    let tmp = layout.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    // gzip, as registries serve layers.
    write_layout(
        &tmp,
        &[("v1", vec![&base, &a]), ("v2", vec![&base, &b])],
        true,
    )?;
    fs::rename(&tmp, &layout).map_err(|e| format!("{}: {e}", layout.display()))?;
    Ok(layout)
}

/// btrfs `Data used` of the filesystem in `image`, bytes (mounted read-only for it).
fn data_used(image: &Path) -> crate::Result<u64> {
    with_mount(image, |m| {
        let out = run(Command::new("btrfs")
            .args(["filesystem", "df", "-b"])
            .arg(m))?;
        out.lines()
            .find(|l| l.starts_with("Data"))
            .and_then(|l| l.split("used=").nth(1))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no Data line in btrfs filesystem df: {out}"))
    })
}

/// Installs `layout`'s v1 on a 2 GiB disk image `target/lab/disks/<name>.img` with
/// filesystem UUID `uuid`, made once.
pub(crate) fn installed_disk(
    terra: &Path,
    layout: &Path,
    name: &str,
    uuid: &str,
) -> crate::Result<PathBuf> {
    let disk = lab_dir().join("disks").join(format!("{name}.img"));
    if disk.is_file() {
        return Ok(disk);
    }
    let work = tempdir("bench-upgrade-install")?;
    let tmp = work.join("disk.img");
    let node = work.join("node.toml");
    let made = fs::write(
        &node,
        format!(
            "image = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"{}\"\nsize = 2048\n",
            layout.display(),
            tmp.display()
        ),
    )
    .map_err(|e| e.to_string())
    .and_then(|()| {
        run(Command::new(terra)
            .arg("install")
            .arg(&node)
            .args(["--uuid", uuid]))
    })
    .and_then(|_| {
        fs::create_dir_all(disk.parent().unwrap_or(Path::new(".")))
            .and_then(|()| fs::rename(&tmp, &disk))
            .map_err(|e| e.to_string())
    });
    let _ = fs::remove_dir_all(&work);
    made?;
    Ok(disk)
}

/// One kind of boot: its name, stage0's root phase per boot (ms), the guest uptime at the
/// root's init per boot (s).
pub type BootCost = (String, Vec<f64>, Vec<f64>);

/// One upgrade-vs-unpack measurement.
#[derive(Debug, Clone, Default)]
pub struct UpgradeResult {
    /// `terra upgrade` wall times, s.
    pub upgrade_s: Vec<f64>,
    /// New data per upgrade, bytes.
    pub upgrade_bytes: Vec<u64>,
    /// Full unpack wall times, s.
    pub full_s: Vec<f64>,
    /// New data per full unpack, bytes.
    pub full_bytes: Vec<u64>,
    /// Stage0 root phase (ms) and root init uptime (s) per boot kind.
    pub boots: Vec<BootCost>,
}

/// Runs the upgrade case `runs` times and the boot case `boots` times per kind.
pub fn run_upgrade(terra: &Path, runs: usize, boots: usize) -> crate::Result<UpgradeResult> {
    let layout = layout()?;
    let disk = installed_disk(
        terra,
        &layout,
        &format!("upgrade-bench-{BASE_MB}-{TOP_MB}-gz"),
        UPGRADE_UUID,
    )?;
    let mut r = UpgradeResult::default();
    let image = format!("oci:{}:v2", layout.display());
    for i in 0..runs {
        let d = scratch_copy(&disk, "upgrade-bench.img")?;
        let before = data_used(&d)?;
        let t = timed(
            Command::new(terra)
                .args(["upgrade", "--disk"])
                .arg(&d)
                .arg(&image),
        )?;
        let after = data_used(&d)?;
        eprintln!("bench: upgrade {i}: {t:.2} s, {} bytes", after - before);
        r.upgrade_s.push(t);
        r.upgrade_bytes.push(after.saturating_sub(before));
        // The full unpack, on the same filesystem, into a fresh subvolume.
        let before = data_used(&d)?;
        let t = with_mount(&d, |m| {
            run(Command::new("btrfs")
                .args(["subvolume", "create"])
                .arg(m.join("full")))?;
            timed(
                Command::new(terra)
                    .args(["image", "unpack", &image])
                    .arg(m.join("full/root")),
            )
        })?;
        let after = data_used(&d)?;
        eprintln!("bench: full unpack {i}: {t:.2} s, {} bytes", after - before);
        r.full_s.push(t);
        r.full_bytes.push(after.saturating_sub(before));
        let _ = fs::remove_file(&d);
    }
    if boots > 0 {
        r.boots = boot_costs(terra, boots)?;
    }
    Ok(r)
}

/// stage0's root phase (ms) and the guest uptime at the root's init (s) for a plain boot,
/// a tentative boot and a same-boot fallback, `boots` each, alternating.
fn boot_costs(terra: &Path, boots: usize) -> crate::Result<Vec<BootCost>> {
    let busybox = crate::host::static_busybox().ok_or("static busybox missing")?;
    let layout = versions::layout(&busybox)?;
    let base = versions::fresh_disk(terra, &layout, BOOT_UUID, "bench-versions-base")?;
    let mut kinds: Vec<BootCost> = ["plain", "tentative", "fallback"]
        .iter()
        .map(|k| (k.to_string(), Vec::new(), Vec::new()))
        .collect();
    for _ in 0..boots {
        for (kind, root_ms, init_s) in kinds.iter_mut() {
            let d = scratch_copy(&base, "bench-versions.img")?;
            match kind.as_str() {
                "tentative" => {
                    versions::upgrade(terra, &d, &layout, "v2", &["--tries", "100"])?;
                }
                "fallback" => {
                    versions::upgrade(terra, &d, &layout, "v3", &[])?;
                }
                _ => {}
            }
            let (cost, _) = crate::bench::tentative::boot_once(&d, kind)?;
            let (root, at) = (cost.root_ms, cost.init_s);
            root_ms.push(root);
            init_s.push(at);
            let _ = fs::remove_file(&d);
        }
    }
    Ok(kinds)
}

impl UpgradeResult {
    /// The markdown table.
    pub fn render(&self) -> String {
        let mib = |b: f64| b / (1u64 << 20) as f64;
        let up_t = median(&self.upgrade_s);
        let full_t = median(&self.full_s);
        let up_b = median(
            &self
                .upgrade_bytes
                .iter()
                .map(|&b| b as f64)
                .collect::<Vec<_>>(),
        );
        let full_b = median(
            &self
                .full_bytes
                .iter()
                .map(|&b| b as f64)
                .collect::<Vec<_>>(),
        );
        let mut md = format!(
            "### Upgrade: {TOP_MB} MiB top layer changed over a {BASE_MB} MiB base, median of {}\n\n\
             | | time (s) | new data (MiB) | time vs upgrade | data vs the changed layer |\n\
             |---|---|---|---|---|\n\
             | terra upgrade | {up_t:.2} ({:.2}–{:.2}) | {:.1} | 1.0× | {:.2}× |\n\
             | full unpack (terra image unpack) | {full_t:.2} ({:.2}–{:.2}) | {:.1} | {:.1}× | {:.2}× |\n",
            self.upgrade_s.len(),
            min(&self.upgrade_s),
            max(&self.upgrade_s),
            mib(up_b),
            mib(up_b) / TOP_MB as f64,
            min(&self.full_s),
            max(&self.full_s),
            mib(full_b),
            full_t / up_t,
            mib(full_b) / TOP_MB as f64,
        );
        if !self.boots.is_empty() {
            md.push_str(
                "\n### Boot cost of versions (demo root, TCG)\n\n\
                 | boot | stage0 root phase, median (min–max) ms | root init at, median s | vs plain |\n|---|---|---|---|\n",
            );
            let plain = self.boots.first().map(|b| median(&b.2)).unwrap_or(f64::NAN);
            let plain_root = self.boots.first().map(|b| median(&b.1)).unwrap_or(f64::NAN);
            for (kind, root, at) in &self.boots {
                md.push_str(&format!(
                    "| {kind} | {:.1} ({:.1}–{:.1}) | {:.2} | {:+.2} s (root phase {:+.1} ms) |\n",
                    median(root),
                    min(root),
                    max(root),
                    median(at),
                    median(at) - plain,
                    median(root) - plain_root
                ));
            }
        }
        md
    }
}
