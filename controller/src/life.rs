//! What nodes reported, as people read it: ages, short digests, and `terra node show`'s
//! page of a node's recent boots (phase times, fallbacks and their reasons, confirmations
//! and rejections). Text only; the data comes from the API.

use std::fmt::Write;

pub use crate::rollout::short_digest;
use crate::rollout::RolloutView;
use crate::views::NodeDetail;

/// `ms` (since the epoch) as an age relative to `now`: `12s ago`, `5m ago`, `3h ago`,
/// `2d ago`; `-` for never (0).
pub fn ago(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `terra node show NAME`: the node, then its events newest first, each boot with its
/// phase times and what it fell back from.
pub fn show(d: &NodeDetail, now: i64) -> String {
    let n = &d.node;
    let l = &n.life;
    let mut out = String::new();
    let _ = writeln!(out, "node {} ({}), {}", n.hostname, n.mac, n.state);
    if !n.reason.is_empty() {
        let _ = writeln!(out, "  reason:     {}", n.reason);
    }
    let _ = writeln!(out, "  image:      {} (LUN default {})", n.image, n.version);
    if l.last_seen == 0 {
        let _ = writeln!(out, "  reports:    none yet");
        return out;
    }
    let _ = writeln!(
        out,
        "  running:    {} {}",
        l.running_version,
        short_digest(&l.running_digest)
    );
    let _ = writeln!(
        out,
        "  last boot:  {} ({}), last seen {}",
        ago(l.last_boot, now),
        l.last_result,
        ago(l.last_seen, now)
    );
    let _ = writeln!(out, "events, newest first:");
    for e in &d.events {
        let r = &e.report;
        let _ = writeln!(
            out,
            "  {:<9} {:<10} {} {} ({}), boot {}",
            ago(e.received, now),
            e.event,
            e.version,
            short_digest(&e.digest),
            e.result,
            r["boot_id"].as_str().unwrap_or("?")
        );
        if let Some(phases) = r["phases"].as_array().filter(|p| !p.is_empty()) {
            let line: Vec<String> = phases
                .iter()
                .map(|p| {
                    format!(
                        "{} {:.1}",
                        p["name"].as_str().unwrap_or("?"),
                        p["ms"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "            phases (ms): {}; initramfs {:.1} ms",
                line.join(", "),
                r["initramfs_ms"].as_f64().unwrap_or(0.0)
            );
        }
        for f in r["version"]["fallbacks"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "            fell back from {} ({}): {}",
                f["name"].as_str().unwrap_or("?"),
                f["why"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            );
        }
        if let Some(reason) = r["reason"].as_str() {
            let _ = writeln!(out, "            reason: {reason}");
        }
    }
    out
}

/// `terra rollout status`: the rollout, its counts and failures, and (when listed) each
/// node with its wave and state.
pub fn rollout(v: &RolloutView, now: i64) -> String {
    let r = &v.rollout;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {}: {} ({}), {}, wave {}/{}, started {}",
        r.id,
        r.reference,
        short_digest(&r.digest),
        r.state,
        v.wave,
        v.waves_total,
        ago(r.created, now)
    );
    if !r.reason.is_empty() {
        let _ = writeln!(out, "  {}", r.reason);
    }
    let counts: Vec<String> = v.counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(out, "  nodes: {}", counts.join(", "));
    for f in &v.failures {
        let _ = writeln!(out, "  failed: {}: {}", f.hostname, f.reason);
    }
    for m in v.members.iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<20} wave {:<3} {:<10} {}{}",
            m.hostname,
            m.wave + 1,
            m.state,
            ago(m.since, now),
            if m.reason.is_empty() || m.state == "failed" {
                String::new()
            } else {
                format!(" ({})", m.reason)
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_digests_read_short() {
        assert_eq!(ago(0, 5_000), "-");
        assert_eq!(ago(1_000, 13_000), "12s ago");
        assert_eq!(ago(1_000, 1_000 + 300_000), "5m ago");
        assert_eq!(ago(1_000, 1_000 + 3 * 3_600_000 + 5), "3h ago");
        assert_eq!(ago(1_000, 1_000 + 2 * 86_400_000), "2d ago");
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(short_digest(&d), "sha256:0123456789ab");
        assert_eq!(short_digest("sha256:ab"), "sha256:ab");
        assert_eq!(short_digest(""), "");
    }
}
