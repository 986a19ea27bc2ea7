//! Wall time of the boot scenarios, so `cargo xtask test` can name the slowest (libtest's
//! own `--report-time` is nightly-only).
//!
//! Every VM the lab runs on a test's thread (libtest names it after the test) appends one
//! JSON line to [`file`]: `{"name": "<test binary>::<test>", "seconds": S, "vm_seconds": V}`,
//! where S is the time since the scenario's first call into the harness ([`mark`]) and V the
//! VM's own run. A scenario's last line is its time so far; [`slowest`] folds the lines per
//! scenario. Runs on other threads (`cargo xtask qemu`, the benches) are not recorded.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

thread_local! {
    /// When the scenario running on this thread first called into the lab.
    static START: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// `target/lab/timings/scenarios.jsonl`.
pub fn file() -> PathBuf {
    crate::lab_dir().join("timings/scenarios.jsonl")
}

/// Forgets earlier runs' timings (`cargo xtask test` starts with this).
pub fn clear() -> crate::Result<()> {
    let f = file();
    match fs::remove_file(&f) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{}: {e}", f.display())),
        _ => Ok(()),
    }
}

/// Starts the scenario's clock on the first call from its thread; later calls do nothing.
pub fn mark() {
    START.with(|s| {
        if s.get().is_none() {
            s.set(Some(Instant::now()));
        }
    });
}

/// `<test binary>::<test name>` when this thread runs a test, else None.
fn scenario() -> Option<String> {
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main")?;
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_string_lossy().into_owned();
    // Cargo names test binaries `<target>-<hash>`.
    let binary = stem.rsplit_once('-').map_or(stem.as_str(), |(b, _)| b);
    Some(format!("{binary}::{test}"))
}

/// Records a VM run of `vm` on this thread's scenario. Best effort: a timing that cannot be
/// written never fails a test.
pub fn record(vm: Duration) {
    let Some(name) = scenario() else { return };
    mark();
    let since = START.with(|s| s.get()).map_or(vm, |t| t.elapsed().max(vm));
    let line = serde_json::json!({
        "name": name,
        "seconds": (since.as_secs_f64() * 10.0).round() / 10.0,
        "vm_seconds": (vm.as_secs_f64() * 10.0).round() / 10.0,
    });
    let f = file();
    let _ = f.parent().map(fs::create_dir_all);
    // One write of one short line with O_APPEND: parallel tests do not interleave.
    if let Ok(mut out) = fs::OpenOptions::new().create(true).append(true).open(&f) {
        let _ = out.write_all(format!("{line}\n").as_bytes());
    }
}

/// One scenario's time, folded from its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// `<test binary>::<test name>`.
    pub name: String,
    /// From its first call into the harness to the end of its last VM, s.
    pub seconds: f64,
    /// VMs it ran.
    pub boots: usize,
    /// Their time together, s.
    pub vm_seconds: f64,
}

/// The scenarios in [`file`], slowest first.
pub fn slowest() -> crate::Result<Vec<Scenario>> {
    let f = file();
    let text = match fs::read_to_string(&f) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", f.display())),
    };
    Ok(fold(&text))
}

fn fold(text: &str) -> Vec<Scenario> {
    let mut by_name: BTreeMap<String, Scenario> = BTreeMap::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(name) = v["name"].as_str() else {
            continue;
        };
        let s = by_name.entry(name.to_string()).or_insert(Scenario {
            name: name.to_string(),
            seconds: 0.0,
            boots: 0,
            vm_seconds: 0.0,
        });
        s.seconds = s.seconds.max(v["seconds"].as_f64().unwrap_or(0.0));
        s.vm_seconds += v["vm_seconds"].as_f64().unwrap_or(0.0);
        s.boots += 1;
    }
    let mut all: Vec<Scenario> = by_name.into_values().collect();
    all.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fold_per_scenario_slowest_first() {
        let text = r#"{"name":"boot::a","seconds":10.0,"vm_seconds":9.0}
{"name":"iscsi::b","seconds":30.5,"vm_seconds":20.0}
{"name":"boot::a","seconds":40.0,"vm_seconds":25.0}
not json
"#;
        let s = fold(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            Scenario {
                name: "boot::a".into(),
                seconds: 40.0,
                boots: 2,
                vm_seconds: 34.0
            }
        );
        assert_eq!(s[1].name, "iscsi::b");
    }
}
