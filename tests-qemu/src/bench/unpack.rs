//! `cargo xtask bench`'s unpack case: `terra image unpack` against umoci on the same OCI
//! layouts (the bench image, [`bench_layout`], and the corpus's buildah image).

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{median, timed};
use crate::disk::tempdir;
use crate::oci_root::{bench_layout, corpus};
use crate::run;

/// `cargo xtask bench`'s unpack case: the same multi-layer image (about `mb` MiB) unpacked
/// `runs` times by `terra image unpack`, `umoci unpack` (rootfs plus its mtree manifest, what
/// its users run) and `umoci raw unpack` (the rootfs alone), after one warm-up each so every
/// tool reads the layout from the page cache. Returns a Markdown table with medians and
/// ratios to terra.
pub fn unpack(terra: &Path, mb: usize, runs: usize) -> crate::Result<String> {
    let layout = bench_layout(mb)?;
    let rows = time_unpackers(terra, &layout, "bench", runs)?;
    let mut md = format!(
        "### Unpack: {mb} MiB image in 3 gzip layers ({:.0} MiB compressed), median of {runs}\n\n",
        blobs_mib(&layout)
    );
    md.push_str(&unpack_table(&rows));
    Ok(md)
}

/// The unpack case on the corpus's buildah-made image (busybox, `RUN`, `COPY`, `USER`
/// layers; see [`crate::oci_root::corpus`]): the same three unpackers, `runs` times each.
pub fn unpack_buildah(terra: &Path, busybox: &Path, runs: usize) -> crate::Result<String> {
    let c = corpus::corpus(busybox)?;
    let layout = c.buildah_layout();
    let rows = time_unpackers(terra, &layout, "layers", runs)?;
    let mut md = format!(
        "### Unpack: the corpus's buildah image (`buildah bud --layers`, {:.1} MiB of \
         blobs), median of {runs}\n\n",
        blobs_mib(&layout)
    );
    md.push_str(&unpack_table(&rows));
    Ok(md)
}

fn blobs_mib(layout: &Path) -> f64 {
    let bytes: u64 = fs::read_dir(layout.join("blobs/sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    bytes as f64 / (1 << 20) as f64
}

fn unpack_table(rows: &[(&str, Vec<f64>)]) -> String {
    let base = median(&rows[0].1);
    let mut md = "| unpacker | time (s) | vs terra |\n|---|---|---|\n".to_string();
    for (name, times) in rows {
        let m = median(times);
        md.push_str(&format!("| {name} | {m:.3} | {:.2}× |\n", m / base));
    }
    md
}

/// Times terra, `umoci unpack` and `umoci raw unpack` on layout:tag, `runs` times each
/// after a warm-up, every run bounded.
fn time_unpackers(
    terra: &Path,
    layout: &Path,
    tag: &str,
    runs: usize,
) -> crate::Result<Vec<(&'static str, Vec<f64>)>> {
    let image = format!("{}:{tag}", layout.display());
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
    Ok(rows)
}
