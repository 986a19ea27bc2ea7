//! `cargo xtask bench --only tentative` (also part "tentative" of `--only update`): what
//! booting a tentative version costs against a plain boot of the default, side by side in
//! one run, under QEMU with the versions demo disk (`lab::versions`).
//!
//! - **plain**: the installed disk, whose default boots: stage0 reads the state and
//!   writes nothing.
//! - **tentative**: the same disk upgraded to `v2` (100 tries, so every boot is one):
//!   stage0 counts the try and stores the state before the switch, and leaves the
//!   confirmation command (`/run/terra/bless`) for the booted system.
//!
//! Measured: stage0's root phase (boot.json `phases`), the guest time at the root's init,
//! and, from the kernel's time stamps on stage0's console lines, the time from "trying
//! version" to the end of the root phase. The goal (issue 24) is a tentative boot within
//! 0.1 s of a plain one.

use std::fs;
use std::path::Path;

use crate::bench::{max, median, min};
use crate::disk::scratch_copy;
use crate::{harness, versions};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b9";

/// The goal: a tentative boot's root phase at most this much longer than a plain one's, ms.
pub const GOAL_MS: f64 = 100.0;

/// One boot's numbers.
#[derive(Debug, Clone, Copy)]
pub struct BootCost {
    /// stage0's root phase, ms.
    pub root_ms: f64,
    /// Guest uptime at the root's init, s.
    pub init_s: f64,
}

/// Boots `disk` (its writes kept) once and reads the root phase and the time at the root's
/// init from the boot report the demo init prints; `kind` names the boot in errors.
pub fn boot_once(disk: &Path, kind: &str) -> crate::Result<(BootCost, serde_json::Value)> {
    let out = harness::boot()
        .disk(disk)
        .keep_writes()
        .vm()
        .run_captured()?;
    let report = crate::vm::boot_report(&out.log)
        .ok_or_else(|| format!("{kind}: no boot report:\n{}", out.log))?;
    let root_ms = report["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "root"))
        .and_then(|p| p["ms"].as_f64())
        .ok_or_else(|| format!("{kind}: no root phase in the report"))?;
    let init_s = report["uptime_at_init_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    eprintln!(
        "bench: {kind} boot: root phase {root_ms:.1} ms, root init at {init_s:.2} s ({})",
        report["version"]["name"]
    );
    Ok((BootCost { root_ms, init_s }, report))
}

/// Plain and tentative boots, `boots` of each, alternating.
#[derive(Debug, Clone, Default)]
pub struct TentativeResult {
    /// Boots of the default.
    pub plain: Vec<BootCost>,
    /// Boots of a tentative version.
    pub tentative: Vec<BootCost>,
    /// stage0's size, bytes.
    pub stage0_bytes: u64,
}

/// Runs the case: `boots` boots of each kind, alternating, each from a fresh copy.
pub fn run_tentative(terra: &Path, boots: usize) -> crate::Result<TentativeResult> {
    let busybox = crate::host::static_busybox().ok_or("static busybox missing")?;
    let layout = versions::layout(&busybox)?;
    let base = versions::fresh_disk(terra, &layout, UUID, "bench-tentative-base")?;
    let upgraded = scratch_copy(&base, "bench-tentative-upgraded.img")?;
    versions::upgrade(terra, &upgraded, &layout, "v2", &["--tries", "100"])?;
    let a = crate::build::artifacts()?;
    let mut r = TentativeResult {
        stage0_bytes: fs::metadata(&a.stage0).map_or(0, |m| m.len()),
        ..Default::default()
    };
    for _ in 0..boots.max(1) {
        for (kind, from) in [("plain", &base), ("tentative", &upgraded)] {
            let d = scratch_copy(from, "bench-tentative.img")?;
            let (cost, report) = boot_once(&d, kind)?;
            let _ = fs::remove_file(&d);
            let tentative = report["version"]["tentative"] == true;
            if tentative != (kind == "tentative") {
                return Err(format!(
                    "{kind} boot: the report says tentative={tentative}"
                ));
            }
            match kind {
                "plain" => r.plain.push(cost),
                _ => r.tentative.push(cost),
            }
        }
    }
    let _ = fs::remove_file(&upgraded);
    Ok(r)
}

impl TentativeResult {
    /// The markdown section.
    pub fn render(&self) -> String {
        let root = |v: &[BootCost]| v.iter().map(|c| c.root_ms).collect::<Vec<_>>();
        let init = |v: &[BootCost]| v.iter().map(|c| c.init_s).collect::<Vec<_>>();
        let (p, t) = (root(&self.plain), root(&self.tentative));
        let delta = median(&t) - median(&p);
        let mut md = format!(
            "### Tentative boot vs plain boot (versions demo disk, median of {})\n\n\
             | boot | stage0 root phase, median (min–max) ms | root init at, median s |\n\
             |---|---|---|\n",
            p.len()
        );
        for (kind, v) in [("plain", &self.plain), ("tentative", &self.tentative)] {
            let r = root(v);
            md.push_str(&format!(
                "| {kind} | {:.1} ({:.1}–{:.1}) | {:.2} |\n",
                median(&r),
                min(&r),
                max(&r),
                median(&init(v)),
            ));
        }
        md.push_str(&format!(
            "\nA tentative boot's root phase: {delta:+.1} ms against a plain one ({:.2}×; goal \
             ≤ {GOAL_MS:.0} ms: {}). stage0: {} bytes.\n",
            median(&t) / median(&p),
            if delta <= GOAL_MS { "met" } else { "missed" },
            self.stage0_bytes
        ));
        md
    }
}
