//! Fetch: the bytes `terra upgrade --disk REF` takes from a registry when only the top
//! layer changed (10 MiB over a ~500 MiB base the disk holds; incompressible files in gzip
//! layers, as registries serve them, so a layer's compressed size is its size), against
//! full pulls of the same image into empty layouts by `terra image pull` and `skopeo copy`.
//! One logging proxy in front of Debian's docker-registry on 127.0.0.1 counts the
//! response bodies of all three. The reference is what no client can avoid: the changed
//! layer's compressed bytes, the manifest and the config.
//!
//! The layout (`target/lab/images/update-fetch-…`), the registry's storage
//! (`target/lab/registry/update-fetch-…`) and the disk with v1 installed
//! (`target/lab/disks/update-fetch-….img`) are made once: their content is a function of
//! the constants here, which name them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::timed;
use crate::bench::upgrade::{installed_disk, mb_layer};
use crate::disk::{scratch_copy, tempdir};
use crate::registry::{body_bytes, noise, Proxy, ProxyOptions, Registry, Request};
use crate::versions::write_layout_at;
use crate::{lab_dir, run};

/// Size of the base layer, MiB.
const BASE_MB: usize = 500;
/// Size of the changed top layer, MiB.
const TOP_MB: usize = 10;
const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b9";
const REPO: &str = "bench/os";
/// The goal for `terra upgrade`: at most this times the unavoidable bytes.
pub const GOAL: f64 = 1.05;

fn key() -> String {
    format!("update-fetch-{BASE_MB}-{TOP_MB}-noise-gz")
}

/// A layer of `mb` files of 1 MiB of noise under `dir/`, plus `extra` files.
fn noise_layer(
    dir: &str,
    mb: usize,
    seed: u64,
    extra: &[(&str, Option<&[u8]>, u32)],
) -> crate::Result<Vec<u8>> {
    mb_layer(dir, mb, extra, |i| {
        noise(seed * 100_003 + i as u64, 1 << 20)
    })
}

/// The layout: `v1` = base + top A, `v2` = base + top B (gzip); made once.
fn layout() -> crate::Result<PathBuf> {
    let _turn = crate::lab_lock(&key())?;
    let layout = lab_dir().join("images").join(key());
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    eprintln!("bench: making the {BASE_MB} MiB + {TOP_MB} MiB update images (once)");
    let init: &[u8] = b"#!/sbin/init\n";
    let base = noise_layer("usr/base", BASE_MB, 1, &[("sbin/init", Some(init), 0o755)])?;
    let a = noise_layer("usr/top", TOP_MB, 2, &[])?;
    let b = noise_layer("usr/top", TOP_MB, 3, &[])?;
    write_layout_at(
        &layout,
        &[("v1", vec![&base, &a]), ("v2", vec![&base, &b])],
        true,
    )?;
    Ok(layout)
}

/// Sizes of an image's parts in a layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    /// The manifest, bytes.
    pub manifest: u64,
    /// The config, bytes.
    pub config: u64,
    /// The base layer's blob (gzip), bytes.
    pub base: u64,
    /// The top layer's blob (gzip), bytes.
    pub top: u64,
}

fn parts(layout: &Path, tag: &str) -> crate::Result<Parts> {
    let read = |p: PathBuf| -> crate::Result<serde_json::Value> {
        let bytes = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let index = read(layout.join("index.json"))?;
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .ok_or_else(|| format!("{}: no tag {tag}", layout.display()))?;
    let hex = entry["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .ok_or("a manifest digest that is not sha256")?;
    let m = read(layout.join("blobs/sha256").join(hex))?;
    let layers = m["layers"].as_array().ok_or("a manifest without layers")?;
    let size = |v: &serde_json::Value| v["size"].as_u64().unwrap_or(0);
    Ok(Parts {
        manifest: entry["size"].as_u64().unwrap_or(0),
        config: size(&m["config"]),
        base: layers.first().map_or(0, size),
        top: layers.last().map_or(0, size),
    })
}

/// docker-registry on the cached storage, holding `REPO:v2` (pushed by skopeo once).
fn registry(layout: &Path) -> crate::Result<Registry> {
    let dir = lab_dir().join("registry").join(key());
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let reg = Registry::start(&dir)?;
    let pushed = dir.join("pushed-v2");
    if !pushed.is_file() {
        run(Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--preserve-digests"])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci:{}:v2", layout.display()))
            .arg(format!("docker://{}/{REPO}:v2", reg.host())))?;
        fs::write(&pushed, b"").map_err(|e| format!("{}: {e}", pushed.display()))?;
    }
    Ok(reg)
}

/// One client's fetch: body bytes from the registry, requests, wall time.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Who fetched.
    pub who: String,
    /// Response body bytes, or why it was not measured.
    pub result: Result<(u64, usize, f64), String>,
}

/// The fetch part's numbers.
#[derive(Debug, Clone, Default)]
pub struct FetchResult {
    /// v2's parts.
    pub parts: Parts,
    /// `terra upgrade`, then the full pulls.
    pub fetches: Vec<Fetch>,
}

fn measure(proxy: &Proxy, who: &str, cmd: &mut Command) -> Fetch {
    proxy.take();
    let result = timed(cmd).map(|t| {
        let reqs: Vec<Request> = proxy.take();
        eprintln!(
            "bench: {who}: {} bytes in {} requests, {t:.2} s",
            body_bytes(&reqs),
            reqs.len()
        );
        for r in &reqs {
            eprintln!("bench:   {} → {}, {} bytes", r.line, r.status, r.body);
        }
        (body_bytes(&reqs), reqs.len(), t)
    });
    Fetch {
        who: who.to_string(),
        result,
    }
}

/// Runs the fetch part: `terra upgrade --disk` of v2 onto a disk holding v1, then full
/// pulls of v2 by `terra image pull` and `skopeo copy`, each through the proxy.
pub fn run_fetch(terra: &Path) -> crate::Result<FetchResult> {
    let layout = layout()?;
    let parts = parts(&layout, "v2")?;
    let disk = installed_disk(terra, &layout, &key(), UUID)?;
    let reg = registry(&layout)?;
    let proxy = Proxy::start(reg.port, ProxyOptions::default())?;
    let reference = format!("{}/{REPO}:v2", proxy.host());
    let mut fetches = Vec::new();
    let d = scratch_copy(&disk, "update-fetch.img")?;
    fetches.push(measure(
        &proxy,
        "terra upgrade --disk (v1 on the disk)",
        Command::new(terra)
            .args(["upgrade", "--plain-http", "--disk"])
            .arg(&d)
            .arg(&reference),
    ));
    let _ = fs::remove_file(&d);
    let work = tempdir("update-fetch")?;
    fetches.push(measure(
        &proxy,
        "terra image pull (empty layout)",
        Command::new(terra)
            .args(["image", "pull", "--plain-http", &reference, "--layout"])
            .arg(work.join("terra")),
    ));
    fetches.push(measure(
        &proxy,
        "skopeo copy (empty layout)",
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:v2", work.join("skopeo").display())),
    ));
    let _ = fs::remove_dir_all(&work);
    Ok(FetchResult { parts, fetches })
}

impl FetchResult {
    /// The bytes no client can avoid: the changed layer, the manifest and the config.
    pub fn minimum(&self) -> u64 {
        self.parts.top + self.parts.manifest + self.parts.config
    }

    /// `terra upgrade`'s bytes over the minimum.
    pub fn upgrade_ratio(&self) -> Option<f64> {
        let (bytes, _, _) = self.fetches.first()?.result.as_ref().ok()?;
        Some(*bytes as f64 / self.minimum() as f64)
    }

    /// The markdown table.
    pub fn render(&self) -> String {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let min = self.minimum();
        let up = self
            .fetches
            .first()
            .and_then(|f| f.result.as_ref().ok())
            .map(|r| r.0);
        let mut md = format!(
            "\n#### Fetch: {TOP_MB} MiB top layer changed over a {BASE_MB} MiB base, bytes from the registry\n\n\
             Incompressible files in gzip layers (the top layer's blob is {} bytes, the base's {}), \
             Debian's docker-registry on 127.0.0.1, response bodies counted by one proxy.\n\n\
             | | bytes fetched | MiB | requests | time (s) | vs the minimum | vs terra upgrade |\n\
             |---|---|---|---|---|---|---|\n\
             | minimum: changed layer + manifest + config | {min} | {:.1} | | | 1.00× | |\n",
            self.parts.top,
            self.parts.base,
            mib(min),
        );
        for f in &self.fetches {
            match &f.result {
                Ok((bytes, reqs, t)) => md.push_str(&format!(
                    "| {} | {bytes} | {:.1} | {reqs} | {t:.2} | {:.3}× | {} |\n",
                    f.who,
                    mib(*bytes),
                    *bytes as f64 / min as f64,
                    up.map_or("?".into(), |u| format!("{:.1}×", *bytes as f64 / u as f64)),
                )),
                Err(e) => md.push_str(&format!(
                    "| {} | not measured: {} | | | | | |\n",
                    f.who,
                    e.lines().next().unwrap_or_default()
                )),
            }
        }
        if let Some(r) = self.upgrade_ratio() {
            md.push_str(&format!(
                "\nterra upgrade fetched {r:.3}× the minimum (goal ≤ {GOAL}×: {}).\n",
                if r <= GOAL { "met" } else { "missed" }
            ));
        }
        md
    }
}
