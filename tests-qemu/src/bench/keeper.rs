//! `cargo xtask bench --only keeper`: how fast a diskless root's writes resume after its
//! target comes back, stage0's keeper (the busybox root, no iscsid) against open-iscsi's
//! iscsid (the lab's Debian root, which adopts the session), under the same outage: tgtd
//! killed and started again 10 s later ([`crate::keeper`]).
//!
//! From the writer's file (guest clock): the stall is the longest pause between two synced
//! writes; the stall minus the outage is the time from the target answering again to the
//! first write (to within one write, ~0.2–0.7 s under TCG, the same for both); "login to
//! write" is from the keeper's `is back after` line (kernel log time) to that write. iscsid's
//! `operational after recovery` reaches the journal through its logger process, late by a
//! varying fraction of a second, so it gives no such figure.

use crate::bench::{max, median, min};
use crate::keeper::{self, Outage, Run, OUTAGE};

/// One run's figures: [stall s, stall − outage s, login to first write s (NaN without
/// `back_line`)].
fn figures(who: &str, r: &Run, back_line: Option<&str>) -> crate::Result<[f64; 3]> {
    let done = r
        .done()
        .ok_or_else(|| format!("{who}: the writer did not finish:\n{}", r.out.log))?;
    if !done.contains("errors=0 kernel-io-errors=0") {
        return Err(format!("{who}: errors reached the writer: {done}"));
    }
    let (stall, at) = r.stall();
    let login = match back_line {
        Some(line) => r
            .out
            .log
            .lines()
            .rev()
            .filter(|l| l.contains(line))
            .find_map(crate::vm::log_time)
            .ok_or_else(|| format!("{who}: no {line:?} line:\n{}", r.out.log))?,
        None => f64::NAN,
    };
    Ok([stall, stall - OUTAGE.as_secs_f64(), at - 0.2 - login])
}

/// Runs `runs` outages against each initiator; returns the markdown table.
pub fn run_keeper(runs: usize) -> crate::Result<String> {
    let mut keeper_f = Vec::new();
    let mut iscsid_f = Vec::new();
    for i in 0..runs {
        let r = keeper::run("bench-keeper", false, Outage::TargetRestart)?;
        let f = figures("keeper", &r, Some("is back after"))?;
        eprintln!(
            "bench: keeper run {i}: stall {:.1} s, after the target {:.1} s, login to write {:.2} s",
            f[0], f[1], f[2]
        );
        keeper_f.push(f);
        let root = keeper::debian_root("bench-keeper-debian")?;
        let r = keeper::run_on(root, false, Outage::TargetRestart)?;
        if r.out.log.contains("is back after") || !r.out.log.contains("the keeper exits") {
            return Err(format!(
                "iscsid run {i}: the keeper did not step aside for iscsid:\n{}",
                r.out.log
            ));
        }
        if !r.out.log.contains("operational after recovery") {
            return Err(format!(
                "iscsid run {i}: iscsid did not report the recovery:\n{}",
                r.out.log
            ));
        }
        let f = figures("iscsid", &r, None)?;
        eprintln!(
            "bench: iscsid run {i}: stall {:.1} s, after the target {:.1} s",
            f[0], f[1]
        );
        iscsid_f.push(f);
    }
    let col = |v: &[[f64; 3]], k: usize| -> Vec<f64> { v.iter().map(|f| f[k]).collect() };
    let row = |name: &str, v: &[[f64; 3]]| {
        let (s, a, l) = (col(v, 0), col(v, 1), col(v, 2));
        let login = if l.iter().any(|x| x.is_nan()) {
            "—".to_string()
        } else {
            format!("{:.2} ({:.2}–{:.2})", median(&l), min(&l), max(&l))
        };
        format!(
            "| {name} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {login} |\n",
            median(&s),
            min(&s),
            max(&s),
            median(&a),
            min(&a),
            max(&a),
        )
    };
    let (k, d) = (median(&col(&keeper_f, 1)), median(&col(&iscsid_f, 1)));
    Ok(format!(
        "### A diskless root through a {} s target restart (TCG), median (min–max) of {runs}\n\n\
         | initiator | writes stalled, s | target back → first write, s | login → first write, s |\n\
         |---|---|---|---|\n{}{}\n\
         Keeper vs iscsid, target back → first write: {k:.1} s vs {d:.1} s (ratio {:.2}; goal: \
         no slower than iscsid and ≤ 2 s: {}).\n",
        OUTAGE.as_secs(),
        row("stage0's keeper (busybox root)", &keeper_f),
        row("open-iscsi iscsid (Debian root, adopted)", &iscsid_f),
        k / d,
        if k <= d && k <= 2.0 { "met" } else { "missed" }
    ))
}
