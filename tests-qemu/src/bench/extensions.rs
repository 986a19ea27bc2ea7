//! `cargo xtask bench --only extensions` (issue 28): what extensions cost at boot and to
//! add, side by side in one run.
//!
//! - **Boot**: the extensions scenario's root (`lab::extensions`, `ID=terra-demo
//!   VERSION_ID=1`) with 0, 1 and 5 fitting extensions (each a small `/usr` tree made by
//!   umoci) added by `terra extension add --disk`, booted alternately under QEMU; stage0's
//!   root phase from boot.json (`phases`). Goal: each extension ≤ 20 ms.
//! - **Adding software**: the same 50 MB of files (incompressible) as an extension added
//!   with `terra extension add --disk`, against a new root image carrying them (the root
//!   plus one layer, `umoci insert`) and `terra upgrade --disk` to it: wall time (making the
//!   image included) and the bytes of the new blobs.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::tentative::boot_once;
use super::{max, median, min};
use crate::disk::{scratch_copy, tempdir};
use crate::extensions::{extension_layout, installed, root_layout, ExtImage};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b8";

/// Goal per extension, ms of stage0's root phase.
const GOAL_MS: f64 = 20.0;

fn terra_ok(terra: &Path, args: &[&str]) -> crate::Result<String> {
    let out = Command::new(terra)
        .args(args)
        .output()
        .map_err(|e| format!("terra: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "terra {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sum of blob sizes in a layout's `blobs/sha256`.
fn blob_bytes(layout: &Path) -> u64 {
    fs::read_dir(layout.join("blobs/sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The case: `boots` boots of each count, alternating; then the adding comparison.
pub fn extensions_case(terra: &Path, boots: usize) -> crate::Result<String> {
    let busybox = crate::host::static_busybox().ok_or("static busybox missing")?;
    let root = root_layout(&busybox)?;
    let base = installed(terra, &root, UUID)?;
    let work = tempdir("bench-ext")?;
    let result = (|| -> crate::Result<String> {
        let names: Vec<String> = (1..=5).map(|n| format!("ext{n}")).collect();
        let files: Vec<(String, String)> = names
            .iter()
            .map(|n| (format!("usr/bin/{n}"), format!("#!/bin/sh\necho {n}\n")))
            .collect();
        let release = "ID=terra-demo\nVERSION_ID=1\n";
        let per: Vec<[(&str, &str); 1]> = files
            .iter()
            .map(|(p, t)| [(p.as_str(), t.as_str())])
            .collect();
        let images: Vec<ExtImage> = names
            .iter()
            .zip(&per)
            .map(|(n, f)| (n.as_str(), release, &f[..]))
            .collect();
        let layout = extension_layout(&work, &images)?;
        let disk = |count: usize| -> crate::Result<std::path::PathBuf> {
            let d = scratch_copy(&base, &format!("bench-ext-{count}.img"))?;
            for n in &names[..count] {
                terra_ok(
                    terra,
                    &[
                        "extension",
                        "add",
                        "--disk",
                        d.to_str().unwrap_or_default(),
                        &format!("oci:{}:{n}", layout.display()),
                    ],
                )?;
            }
            Ok(d)
        };
        let disks = [(0, disk(0)?), (1, disk(1)?), (5, disk(5)?)];
        let mut root_ms: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for _ in 0..boots.max(1) {
            for (i, (count, d)) in disks.iter().enumerate() {
                let b = scratch_copy(d, "bench-ext-boot.img")?;
                let (cost, report) = boot_once(&b, &format!("{count} extension(s)"))?;
                let _ = fs::remove_file(&b);
                let applied = report["version"]["extensions"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|e| e["status"] == "applied").count());
                if applied != *count {
                    return Err(format!("{count} extension(s) added, {applied} applied"));
                }
                root_ms[i].push(cost.root_ms);
            }
        }
        for (_, d) in &disks {
            let _ = fs::remove_file(d);
        }
        let m: Vec<f64> = root_ms.iter().map(|v| median(v)).collect();
        let mut md = format!(
            "### Extensions at boot (stage0's root phase, TCG, median of {})\n\n\
             | extensions | root phase, median (min–max) ms | vs none |\n|---|---|---|\n",
            root_ms[0].len()
        );
        for (i, count) in [0, 1, 5].iter().enumerate() {
            md.push_str(&format!(
                "| {count} | {:.1} ({:.1}–{:.1}) | {:+.1} ms |\n",
                m[i],
                min(&root_ms[i]),
                max(&root_ms[i]),
                m[i] - m[0]
            ));
        }
        let one = m[1] - m[0];
        let each5 = (m[2] - m[0]) / 5.0;
        md.push_str(&format!(
            "\nPer extension: {one:.1} ms with one, {each5:.1} ms each with five (goal ≤ {GOAL_MS:.0} ms: {}).\n",
            if one.max(each5) <= GOAL_MS { "met" } else { "missed" }
        ));
        md.push_str(&adding_case(terra, &base, &root, &work)?);
        Ok(md)
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// 50 MB as an extension vs a new root image and an upgrade.
fn adding_case(terra: &Path, base: &Path, root: &Path, work: &Path) -> crate::Result<String> {
    let big = work.join("big/usr/lib/big");
    fs::create_dir_all(&big).map_err(|e| e.to_string())?;
    let mut data = vec![0u8; 50 << 20];
    let mut f = fs::File::open("/dev/urandom").map_err(|e| e.to_string())?;
    std::io::Read::read_exact(&mut f, &mut data).map_err(|e| e.to_string())?;
    fs::File::create(big.join("data"))
        .and_then(|mut f| f.write_all(&data))
        .map_err(|e| e.to_string())?;
    let release_dir = work.join("big/usr/lib/extension-release.d");
    fs::create_dir_all(&release_dir).map_err(|e| e.to_string())?;
    fs::write(
        release_dir.join("extension-release.big"),
        "ID=terra-demo\nVERSION_ID=1\n",
    )
    .map_err(|e| e.to_string())?;
    let run = |c: &mut Command| -> crate::Result<()> {
        let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{c:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    };
    // Each way: the image made (umoci insert of the files as one layer), then put on a
    // fresh copy of the disk by terra; timed together.
    let timed = |layout: &Path,
                 prepare: &dyn Fn() -> crate::Result<()>,
                 (from, tag, src, dest): (&str, &str, &Path, &str),
                 terra_args: &[&str]|
     -> crate::Result<f64> {
        let start = Instant::now();
        prepare()?;
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(format!("{}:{from}", layout.display()))
            .args(["--tag", tag])
            .arg(src)
            .arg(dest))?;
        let d = scratch_copy(base, "bench-ext-adding.img")?;
        let mut args: Vec<&str> = terra_args.to_vec();
        let disk = d.to_string_lossy().into_owned();
        let image = format!("oci:{}:{tag}", layout.display());
        args.extend(["--disk", &disk, &image]);
        let done = terra_ok(terra, &args);
        let _ = fs::remove_file(&d);
        done.map(|_| start.elapsed().as_secs_f64())
    };
    let ext = work.join("big-ext");
    let ext_s = timed(
        &ext,
        &|| {
            run(Command::new("umoci").arg("init").arg("--layout").arg(&ext))?;
            run(Command::new("umoci")
                .args(["new", "--image"])
                .arg(format!("{}:empty", ext.display())))
        },
        ("empty", "big", &work.join("big/usr"), "/usr"),
        &["extension", "add"],
    )?;
    let ext_bytes = blob_bytes(&ext);
    // The rebuild: the root layout copied, the same files inserted as a layer, upgraded to.
    let rebuilt = work.join("rebuilt");
    let before = blob_bytes(root);
    let up_s = timed(
        &rebuilt,
        &|| run(Command::new("cp").arg("-a").arg(root).arg(&rebuilt)),
        (
            "demo",
            "demo-big",
            &work.join("big/usr/lib/big"),
            "/usr/lib/big",
        ),
        &["upgrade"],
    )?;
    let up_bytes = blob_bytes(&rebuilt).saturating_sub(before);
    Ok(format!(
        "\n### Adding 50 MB of software: an extension vs a rebuilt image and an upgrade\n\n\
         | | wall time (image made + put on the disk) | new blob bytes |\n|---|---|---|\n\
         | `terra extension add` | {ext_s:.1} s | {ext_bytes} |\n\
         | new root image + `terra upgrade` | {up_s:.1} s | {up_bytes} |\n\n\
         Ratio (upgrade / extension): {:.2}× time, {:.2}× bytes.\n",
        up_s / ext_s,
        up_bytes as f64 / ext_bytes.max(1) as f64
    ))
}
