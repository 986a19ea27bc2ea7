//! The session keeper (ARCHITECTURE.md §2.5): a diskless node whose root is a tgtd LUN keeps
//! writing through an outage. The root's init appends a numbered line to a file on the LUN
//! every 200 ms and syncs; meanwhile the host kills tgtd and starts it again 10 s later
//! (tgtd keeps no state: the target is made anew), or takes the VM's link down for 10 s.
//! The writes must resume with no I/O error reaching the program, and the file, read from
//! the image afterwards, must hold every line in order.

use std::time::Duration;

use lab::debian;
use lab::keeper::{
    debian_root, lun, node_vm, run, run_ipv6, run_on, serve, Outage, Run, IQN, NODE_SECRET,
    OTHER_IQN, OUTAGE, TARGET_SECRET,
};
use lab::tgtd::GUEST_HOST_ADDR;

/// The writes went on through the outage and the keeper said it brought the session back;
/// returns the stall and the first write's delay after the keeper's login.
#[track_caller]
fn expect_writes_survived(r: &Run) -> (f64, f64) {
    let (stall, at) = expect_writes_went_on(r);
    let log = &r.out.log;
    let ctx = || format!("serial log ({:.1} s):\n{log}", r.out.elapsed.as_secs_f64());
    assert!(
        log.contains("terra-keeper: connection of session") && log.contains("is back after"),
        "the keeper did not report the recovery; {}",
        ctx()
    );
    // The keeper's log and /proc entries hold no secret.
    let keeper_log = log
        .split("--- keeper.log")
        .nth(1)
        .and_then(|s| s.split("--- end keeper.log").next())
        .unwrap_or_default();
    assert!(keeper_log.contains("is back after"), "{keeper_log}");
    assert!(log.contains("TERRA-KEEPER cmdline=@keeper"), "{}", ctx());
    // Tiny: the keeper binary alone (lib/terra/keeper), not all of stage0, is mapped.
    let rss_kb: u64 = log
        .lines()
        .find_map(|l| l.split("TERRA-KEEPER VmRSS:").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no keeper RSS on the console; {}", ctx()));
    assert!(
        rss_kb <= 1024,
        "the keeper's RSS is {rss_kb} kB, over its 1 MB goal; {}",
        ctx()
    );
    // The first write after the keeper's login: the line after the stall carries the time
    // its predecessor's sync returned, plus the writer's 200 ms pause.
    let back = keeper_log
        .lines()
        .rev()
        .filter(|l| l.contains("is back after"))
        .find_map(lab::vm::log_time)
        .unwrap_or(0.0);
    let first_write = at - 0.2 - back;
    eprintln!(
        "measured: writes stalled {stall:.1} s; first write {first_write:.2} s after the keeper's login; {}",
        log.lines()
            .find(|l| l.contains("TERRA-KEEPER VmRSS"))
            .unwrap_or("no RSS")
    );
    (stall, first_write)
}

/// The writes went on through the outage: no error reached the program or the kernel log,
/// every line is in the file once and in order, and writes stalled for the outage and went
/// on after it. Returns the longest stall and the guest time of the write that ended it.
#[track_caller]
fn expect_writes_went_on(r: &Run) -> (f64, f64) {
    let log = &r.out.log;
    let ctx = || format!("serial log ({:.1} s):\n{log}", r.out.elapsed.as_secs_f64());
    assert!(r.out.exited, "the VM must power off by itself; {}", ctx());
    let done = r
        .done()
        .unwrap_or_else(|| panic!("the writer did not finish; {}", ctx()));
    assert!(
        done.contains("errors=0 kernel-io-errors=0"),
        "errors reached the writer: {done}; {}",
        ctx()
    );
    assert!(
        !log.contains("TERRA-WRITER error"),
        "a write failed; {}",
        ctx()
    );
    let written: u64 = done
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lines="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let numbers: Vec<u64> = r.lines.iter().map(|(n, _)| *n).collect();
    let expected: Vec<u64> = (1..=written).collect();
    assert_eq!(
        numbers,
        expected,
        "the LUN's file must hold every line in order; {}",
        ctx()
    );
    let (stall, at) = r.stall();
    assert!(
        stall >= 5.0,
        "the writes never stalled ({stall:.1} s): the outage did not happen; {}",
        ctx()
    );
    let after = r.lines.iter().filter(|(_, t)| *t >= at).count();
    assert!(
        after >= 5,
        "only {after} writes after the outage; {}",
        ctx()
    );
    (stall, at)
}

#[track_caller]
fn expect_no_secret(log: &str) {
    for l in log.lines().filter(|l| !l.contains("ommand line")) {
        assert!(
            !l.contains(NODE_SECRET) && !l.contains(TARGET_SECRET),
            "a secret on the console, in the keeper's cmdline, environ or log: {l}"
        );
    }
}

#[test]
fn writes_survive_a_target_restart() {
    let r = run("keeper-restart", false, Outage::TargetRestart).unwrap_or_else(|e| panic!("{e}"));
    expect_writes_survived(&r);
    // A restarted tgtd has forgotten the session: the keeper reinstates it.
    assert!(r.out.log.contains("session reinstated"), "{}", r.out.log);
    // The first attempt met the target still down.
    assert!(r.out.log.contains("Connection refused"), "{}", r.out.log);
}

/// The same over IPv6 alone (SLAAC, the portal [fec0::2]): the keeper reconnects to the
/// IPv6 portal it was handed.
#[test]
fn writes_survive_a_target_restart_over_ipv6() {
    let r = run_ipv6("keeper-ipv6", Outage::TargetRestart).unwrap_or_else(|e| panic!("{e}"));
    expect_writes_survived(&r);
    assert!(r.out.log.contains("session reinstated"), "{}", r.out.log);
    assert!(r.out.log.contains("[fec0::2]:"), "{}", r.out.log);
}

#[test]
fn writes_survive_a_target_restart_with_mutual_chap() {
    let r = run("keeper-chap", true, Outage::TargetRestart).unwrap_or_else(|e| panic!("{e}"));
    expect_writes_survived(&r);
    expect_no_secret(&r.out.log);
}

/// A target that stays away does not hold up another's recovery: the dead session is
/// listed first, yet the root's comes back and the writes go on.
#[test]
fn a_dead_target_does_not_hold_up_the_roots_recovery() {
    let r = run("keeper-other", false, Outage::TargetRestartOtherDead)
        .unwrap_or_else(|e| panic!("{e}"));
    expect_writes_survived(&r);
    let log = &r.out.log;
    let back: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("terra-keeper") && l.contains("is back after"))
        .collect();
    // The root's session came back first, while the other target was still away.
    assert!(
        back.len() == 2 && back[0].contains(IQN) && back[1].contains(OTHER_IQN),
        "the root's session back first, the other's later: {back:?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("failed") && l.contains(OTHER_IQN) && l.contains("terra-keeper")),
        "the other session's failure is reported:\n{log}"
    );
}

#[test]
fn writes_survive_a_link_down() {
    let r = run("keeper-link", false, Outage::LinkDown).unwrap_or_else(|e| panic!("{e}"));
    expect_writes_survived(&r);
}

/// The keeper exits once the system runs its own iscsid (here: a process named by
/// `/run/iscsid.pid`), which adopts the sessions.
#[test]
fn keeper_steps_aside_for_iscsid() {
    let img = lun("keeper-aside").unwrap_or_else(|e| panic!("{e}"));
    let t = serve(&img.0, None, false).unwrap_or_else(|e| panic!("{e}"));
    let mut vm = node_vm(&format!(
        "netroot=iscsi:{GUEST_HOST_ADDR}::{}:1:{IQN} rw init=/bin/step-aside",
        t.port
    ));
    vm.timeout = Duration::from_secs(240);
    let out = vm.run_captured().unwrap_or_else(|e| panic!("{e}"));
    drop(t);
    let log = &out.log;
    let before = log
        .lines()
        .find_map(|l| l.strip_prefix("TERRA-ASIDE keeper before: "))
        .unwrap_or_default();
    assert!(
        !before.trim().is_empty(),
        "no keeper ran; serial log:\n{log}"
    );
    assert!(
        log.contains("TERRA-ASIDE keeper after: \n"),
        "the keeper did not exit; serial log:\n{log}"
    );
    assert!(
        log.contains("/run/iscsid.pid): it adopts the sessions; the keeper exits"),
        "serial log:\n{log}"
    );
}

/// A Debian root with open-iscsi (debootstrapped by the lab, `lab::debian`) on a LUN:
/// open-iscsi.service starts iscsid because a session exists, iscsid adopts the session
/// stage0 made, the keeper steps aside, and iscsid alone recovers a later target restart
/// while the root's writer goes on.
#[test]
fn iscsid_in_a_debian_root_adopts_the_session_and_recovers_a_target_restart() {
    let root = debian_root("keeper-debian")
        .expect("the Debian root on a LUN (debootstrap needs root and Debian's mirror)");
    let r = run_on(root, false, Outage::TargetRestart).unwrap_or_else(|e| panic!("{e}"));
    let log = &r.out.log;
    for l in log.lines().filter(|l| l.contains("TERRA-ISCSID-LOG")) {
        eprintln!("guest: {l}");
    }
    let (stall, _) = expect_writes_went_on(&r);
    let adopted = log
        .lines()
        .find_map(|l| l.split(&format!("{} ", debian::ISCSID_MARKER)).nth(1))
        .unwrap_or_else(|| panic!("the Debian writer never reported iscsid; serial log:\n{log}"));
    assert!(
        !adopted.starts_with("iscsid= ") && adopted.contains(" keeper= "),
        "iscsid must run and the keeper be gone before the writes: {adopted}\n{log}"
    );
    assert!(
        log.contains("it adopts the sessions; the keeper exits"),
        "the keeper must say why it stepped aside; serial log:\n{log}"
    );
    // iscsid, not the keeper, brought the connection back.
    assert!(
        !log.contains("is back after"),
        "the keeper recovered the session although iscsid runs; serial log:\n{log}"
    );
    assert!(
        log.contains("operational after recovery"),
        "iscsid must report the recovery; serial log:\n{log}"
    );
    eprintln!(
        "measured: iscsid in the Debian root: writes stalled {stall:.1} s for a {} s outage",
        OUTAGE.as_secs()
    );
}
