//! The fleet page: server-rendered HTML and SVG, no JavaScript. `GET /fleet` lists the
//! nodes (running version, last boot, last seen) and the rollouts (state, reason, waves,
//! progress); `GET /fleet/nodes/<name>` draws each recent boot's phases as a timeline, as
//! `systemd-analyze plot` does. Text only here; the routes are `http.rs`'s.

use std::fmt::Write;

use crate::life::ago;
use crate::rollout::{short_digest, RolloutView};
use crate::views::{NodeDetail, NodeView};

/// `s` with HTML's special characters escaped (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.3em .8em;text-align:left;\
border-bottom:1px solid #ddd}th{background:#f4f4f4}.failed,.rejected,.paused{color:#b00020;\
font-weight:600}.confirmed,.done,.booted{color:#1b5e20}.tentative,.trial,.running{color:#8a6d00}\
code{font-size:12px}h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}";

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>",
        esc(title)
    )
}

/// Colours of member states in a rollout's progress bar.
fn colour(state: &str) -> &'static str {
    match state {
        "confirmed" => "#2e7d32",
        "failed" => "#c62828",
        "trial" | "booting" | "upgrading" => "#f9a825",
        "waiting" => "#64b5f6",
        "skipped" | "aborted" => "#9e9e9e",
        _ => "#e0e0e0",
    }
}

/// A rollout's members per state as one stacked bar.
fn progress(v: &RolloutView) -> String {
    let total: u64 = v.counts.values().sum();
    let mut svg = String::from(
        "<svg width=\"300\" height=\"14\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
    );
    let mut x = 0.0;
    for (state, n) in &v.counts {
        let w = if total == 0 {
            0.0
        } else {
            300.0 * *n as f64 / total as f64
        };
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"14\" fill=\"{}\">\
             <title>{n} {}</title></rect>",
            colour(state),
            esc(state)
        );
        x += w;
    }
    svg.push_str("</svg>");
    svg
}

/// `GET /fleet`.
pub fn fleet(nodes: &[NodeView], rollouts: &[RolloutView], now: i64) -> String {
    let mut out = head("Terra fleet");
    let _ = write!(out, "<h1>Terra fleet: {} node(s)</h1>", nodes.len());
    out.push_str("<h2>Rollouts</h2>");
    if rollouts.is_empty() {
        out.push_str("<p>No rollouts.</p>");
    } else {
        out.push_str(
            "<table><tr><th>rollout</th><th>image</th><th>state</th><th>wave</th>\
             <th>progress</th><th>nodes</th><th>why</th></tr>",
        );
        for v in rollouts {
            let r = &v.rollout;
            let counts: Vec<String> = v.counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let mut why = esc(&r.reason);
            for f in &v.failures {
                let _ = write!(
                    why,
                    "<br><span class=\"failed\">{}</span>: {}",
                    esc(&f.hostname),
                    esc(&f.reason)
                );
            }
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}<br><code>{}</code></td>\
                 <td class=\"{}\">{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{why}</td></tr>",
                esc(&r.id),
                esc(&r.reference),
                esc(short_digest(&r.digest)),
                esc(&r.state),
                esc(&r.state),
                v.wave,
                v.waves_total,
                progress(v),
                esc(&counts.join(", ")),
            );
        }
        out.push_str("</table>");
    }
    out.push_str(
        "<h2>Nodes</h2><table><tr><th>node</th><th>state</th><th>running</th><th>digest</th>\
         <th>last boot</th><th>result</th><th>last seen</th></tr>",
    );
    for n in nodes {
        let l = &n.life;
        let _ = write!(
            out,
            "<tr><td><a href=\"/fleet/nodes/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&n.hostname),
            esc(&n.hostname),
            esc(&n.state),
            esc(&l.running_version),
            esc(short_digest(&l.running_digest)),
            ago(l.last_boot, now),
            esc(&l.last_result.replace(' ', "-")),
            esc(&l.last_result),
            ago(l.last_seen, now)
        );
    }
    out.push_str("</table></body></html>");
    out
}

/// Phase colours of the boot timeline, by position.
const PHASE_COLOURS: &[&str] = &[
    "#90caf9", "#a5d6a7", "#ffcc80", "#ce93d8", "#80cbc4", "#ef9a9a", "#fff59d", "#b0bec5",
];

/// One boot's phases as a timeline: each phase a bar starting where the last ended, its
/// name and duration beside it; the scale in ms below.
pub fn timeline(phases: &[(String, f64)]) -> String {
    let total: f64 = phases.iter().map(|p| p.1).sum::<f64>().max(1.0);
    let (width, bar, left) = (700.0, 18.0, 90.0);
    let scale = (width - left - 160.0) / total;
    let height = bar * phases.len() as f64 + 26.0;
    let mut svg = format!(
        "<svg width=\"{width}\" height=\"{height}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\" font-family=\"sans-serif\">"
    );
    let mut at = 0.0;
    for (i, (name, ms)) in phases.iter().enumerate() {
        let y = i as f64 * bar;
        let x = left + at * scale;
        let w = (ms * scale).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" \
             height=\"{:.1}\" fill=\"{}\"><title>{} {ms:.1} ms</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\">{ms:.1} ms</text>",
            y + 13.0,
            esc(name),
            y + 2.0,
            bar - 4.0,
            PHASE_COLOURS[i % PHASE_COLOURS.len()],
            esc(name),
            x + w + 4.0,
            y + 13.0
        );
        at += ms;
    }
    let base = bar * phases.len() as f64 + 4.0;
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"#555\"/>\
         <text x=\"{left}\" y=\"{:.1}\">0</text><text x=\"{:.1}\" y=\"{:.1}\">{total:.0} ms</text>",
        left + total * scale,
        base + 16.0,
        left + total * scale - 30.0,
        base + 16.0
    );
    svg.push_str("</svg>");
    svg
}

/// `GET /fleet/nodes/<name>`: the node and its recent events, boots with their timeline.
pub fn node(d: &NodeDetail, now: i64) -> String {
    let n = &d.node;
    let mut out = head(&format!("Terra node {}", n.hostname));
    let _ = write!(
        out,
        "<p><a href=\"/fleet\">fleet</a></p><h1>Node {}</h1><p>{} · {} · running {} \
         <code>{}</code> · last seen {}</p>",
        esc(&n.hostname),
        esc(&n.mac),
        esc(&n.state),
        esc(&n.life.running_version),
        esc(short_digest(&n.life.running_digest)),
        ago(n.life.last_seen, now)
    );
    if d.events.is_empty() {
        out.push_str("<p>No reports yet.</p>");
    }
    for e in &d.events {
        let r = &e.report;
        let _ = write!(
            out,
            "<h2>{} {} <span class=\"{}\">{}</span> · {}</h2><p>version {} <code>{}</code>, \
             boot <code>{}</code>, sent by {}</p>",
            ago(e.received, now),
            esc(&e.event),
            esc(&e.result.replace(' ', "-")),
            esc(&e.result),
            esc(&e.version),
            esc(&e.version),
            esc(short_digest(&e.digest)),
            esc(r["boot_id"].as_str().unwrap_or("?")),
            esc(r["sent_by"].as_str().unwrap_or("?"))
        );
        for f in r["version"]["fallbacks"].as_array().into_iter().flatten() {
            let _ = write!(
                out,
                "<p class=\"failed\">fell back from {} ({}): {}</p>",
                esc(f["name"].as_str().unwrap_or("?")),
                esc(f["why"].as_str().unwrap_or("?")),
                esc(f["reason"].as_str().unwrap_or("?"))
            );
        }
        if let Some(reason) = r["reason"].as_str().filter(|s| !s.is_empty()) {
            let _ = write!(out, "<p class=\"rejected\">{}</p>", esc(reason));
        }
        let phases: Vec<(String, f64)> = r["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["ms"].as_f64().unwrap_or(0.0),
                )
            })
            .collect();
        if !phases.is_empty() {
            out.push_str(&timeline(&phases));
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_nodes_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_timeline_lays_phases_end_to_end() {
        let svg = timeline(&[("early".into(), 10.0), ("root".into(), 30.0)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(">early</text>") && svg.contains(">root</text>"));
        assert!(svg.contains(">40 ms</text>"), "{svg}");
        // The second bar starts where the first ends: three times its width further on.
        let xs: Vec<f64> = svg
            .match_indices("<rect x=\"")
            .map(|(i, _)| svg[i + 9..].split('"').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(xs.len(), 2);
        assert!(xs[1] > xs[0]);
    }
}
