//! The session keeper (ARCHITECTURE.md §2.5): a diskless node whose root is a tgtd LUN keeps
//! writing through an outage. The root's init appends a numbered line to a file on the LUN
//! every 200 ms and syncs; meanwhile the host kills tgtd and starts it again 10 s later
//! (tgtd keeps no state: the target is made anew), or takes the VM's link down for 10 s.
//! The writes must resume with no I/O error reaching the program, and the file, read from
//! the image afterwards, must hold every line in order.

use std::path::Path;
use std::time::Duration;

use lab::debian;
use lab::disk::BtrfsDisk;
use lab::harness::{accel, artifacts};
use lab::tgtd::{self, Tgtd, GUEST_HOST_ADDR};
use lab::vm::{Outcome, Vm};

const LUN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000c7";
const IQN: &str = "iqn.2024-01.org.terra-os:keeper-root";
const INITIATOR: &str = "iqn.2024-01.org.terra-os:keeper-node";
const NODE_SECRET: &str = "keeper-node-secret-1";
const TARGET_SECRET: &str = "keeper-target-secret-2";
/// How long the root's init writes, in guest seconds.
const WRITE_SECS: u32 = 30;
/// How long the target (or the link) is away.
const OUTAGE: Duration = Duration::from_secs(10);

/// The root's init: writes `/writes.log` for `terra.writer=` seconds, reports any failed
/// write or sync and the kernel's I/O errors, shows what the keeper exposes (its
/// cmdline, environment, RSS and log), then powers off.
const WRITER: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
secs=30
for arg in $(cat /proc/cmdline); do
  case "$arg" in terra.writer=*) secs=${arg#terra.writer=} ;; esac
done
start=$(cut -d. -f1 /proc/uptime)
echo "TERRA-WRITER start uptime=$(cut -d' ' -f1 /proc/uptime)"
i=0
errors=0
while [ $(( $(cut -d. -f1 /proc/uptime) - start )) -lt "$secs" ]; do
  i=$((i+1))
  if ! { echo "$i $(cut -d' ' -f1 /proc/uptime)" >> /writes.log && sync; } 2>/run/werr; then
    errors=$((errors+1))
    echo "TERRA-WRITER error at line $i: $(cat /run/werr)"
  fi
  sleep 0.2
done
echo "TERRA-WRITER done lines=$i errors=$errors kernel-io-errors=$(dmesg | grep -ci 'i/o error')"
pid=
for d in /proc/[0-9]*; do
  [ "$(cat $d/comm 2>/dev/null)" = keeper ] && pid=${d#/proc/}
done
echo "TERRA-KEEPER pid=$pid"
if [ -n "$pid" ]; then
  echo "TERRA-KEEPER cmdline=$(tr '\0' ' ' < /proc/$pid/cmdline)"
  echo "TERRA-KEEPER environ=$(tr '\0' ' ' < /proc/$pid/environ)"
  echo "TERRA-KEEPER $(grep VmRSS /proc/$pid/status)"
  grep -E '^(Rss|Anonymous|Shared_Clean|Private_Clean|Private_Dirty)' /proc/$pid/smaps_rollup | sed 's/^/TERRA-KEEPER-MEM /'
fi
echo "--- keeper.log"
cat /run/terra/keeper.log
echo "--- end keeper.log"
sync
poweroff -f
"#;

/// A root init that starts a stand-in for iscsid (a process whose PID is in
/// `/run/iscsid.pid`, as open-iscsi's iscsid writes it) and then checks that the keeper
/// stepped aside.
const STEP_ASIDE: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
keeper() {
  for d in /proc/[0-9]*; do
    [ "$(cat $d/comm 2>/dev/null)" = keeper ] && echo ${d#/proc/}
  done
}
echo "TERRA-ASIDE keeper before: $(keeper)"
sleep 60 &
echo $! > /run/iscsid.pid
n=0
while [ -n "$(keeper)" ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n+1)); done
echo "TERRA-ASIDE keeper after: $(keeper)"
echo "--- keeper.log"
cat /run/terra/keeper.log
echo "--- end keeper.log"
poweroff -f
"#;

fn lun(name: &str) -> tgtd::Lun {
    let busybox = lab::host::static_busybox().expect("static busybox");
    let base = BtrfsDisk::new("os", LUN_UUID, &["os"])
        .image(&busybox)
        .expect("demo disk");
    tgtd::Lun(
        tgtd::lun_image_with(
            &base,
            name,
            &["os"],
            &[
                ("bin/keeper-writer", WRITER),
                ("bin/step-aside", STEP_ASIDE),
            ],
        )
        .expect("LUN image"),
    )
}

/// tgtd serving `image` as LUN 1 of [`IQN`], on `port` when given, with mutual CHAP
/// accounts when `chap`.
fn serve(image: &Path, port: Option<u16>, chap: bool) -> Tgtd {
    let mut t = match port {
        Some(p) => Tgtd::start_at(p),
        None => Tgtd::start(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    t.target(1, IQN, image).expect("target");
    if chap {
        t.account(1, "keeper-node", NODE_SECRET, false)
            .expect("incoming account");
        t.account(1, "keeper-target", TARGET_SECRET, true)
            .expect("outgoing account");
    }
    t
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// tgtd is killed and started again, on the same port, with the same target and LUN.
    TargetRestart,
    /// The VM's NIC loses its link (QEMU's `set_link`).
    LinkDown,
    /// The node has a second session (listed first), to another tgtd: both tgtds are
    /// killed, the root's comes back after the outage, the other one 8 s later.
    TargetRestartOtherDead,
}

/// The second target's name in [`Outage::TargetRestartOtherDead`].
const OTHER_IQN: &str = "iqn.2024-01.org.terra-os:keeper-other";

/// What a run left: the console, and the lines of `/writes.log` as (number, guest uptime).
struct Run {
    out: Outcome,
    lines: Vec<(u64, f64)>,
}

/// The busybox root whose init is the writer ([`WRITER`]).
fn run(name: &str, chap: bool, outage: Outage) -> Run {
    let root = Root {
        lun: lun(name),
        args: format!("rw init=/bin/keeper-writer terra.writer={WRITE_SECS}"),
        log: "os/writes.log",
        memory_mb: None,
    };
    run_on(root, chap, outage)
}

/// A diskless root to run the outage against.
struct Root {
    /// The LUN image.
    lun: tgtd::Lun,
    /// What the command line adds to start the root's writer.
    args: String,
    /// Where the writer's file is, relative to the top of the LUN's filesystem.
    log: &'static str,
    /// The guest's memory when the default is too small.
    memory_mb: Option<u32>,
}

fn run_on(root: Root, chap: bool, outage: Outage) -> Run {
    let img = root.lun;
    let mut t = serve(&img.0, None, chap);
    let port = t.port;
    let target = if chap {
        format!(
            "netroot=iscsi:keeper-node:{NODE_SECRET}:keeper-target:{TARGET_SECRET}@{GUEST_HOST_ADDR}::{port}:1:{IQN}"
        )
    } else {
        format!("netroot=iscsi:{GUEST_HOST_ADDR}::{port}:1:{IQN}")
    };
    // The other session: an empty data LUN on a second tgtd, logged in first.
    let mut other = (outage == Outage::TargetRestartOtherDead).then(|| {
        let data = lab::disk::tempdir("keeper-other")
            .expect("scratch dir")
            .join("data.img");
        std::fs::File::create(&data)
            .and_then(|f| f.set_len(16 << 20))
            .expect("data LUN");
        let mut o = Tgtd::start().unwrap_or_else(|e| panic!("{e}"));
        o.target(1, OTHER_IQN, &data).expect("other target");
        (o, data)
    });
    let other_arg = other
        .as_ref()
        .map(|(o, _)| format!("netroot=iscsi:{GUEST_HOST_ADDR}::{}:1:{OTHER_IQN} ", o.port))
        .unwrap_or_default();
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.nic = Some("virtio".into());
    vm.append = format!(
        "terra.rescue=halt rd.iscsi.initiator={INITIATOR} {other_arg}{target} {}",
        root.args
    );
    if let Some(mb) = root.memory_mb {
        vm.memory_mb = mb;
    }
    vm.timeout = Duration::from_secs(420);
    let monitor = lab::disk::tempdir("keeper-mon")
        .expect("scratch dir")
        .join("monitor.sock");
    let mut running = vm
        .spawn_captured(Some(&monitor))
        .unwrap_or_else(|e| panic!("{e}"));
    let started = running.wait_for("TERRA-WRITER start", Duration::from_secs(360));
    assert!(
        started,
        "the writer never started; serial log:\n{}",
        running.log()
    );
    // A few seconds of writes first, so the file shows lines before and after.
    std::thread::sleep(Duration::from_secs(3));
    match outage {
        Outage::TargetRestart | Outage::TargetRestartOtherDead => {
            let other_gone = other.take().map(|(o, data)| {
                let other_port = o.port;
                o.kill();
                eprintln!("host: the other tgtd killed");
                (other_port, data)
            });
            t.kill();
            eprintln!("host: tgtd killed");
            std::thread::sleep(OUTAGE);
            t = serve(&img.0, Some(port), chap);
            eprintln!("host: tgtd back on port {port}");
            // The other target stays away well past the root's recovery, then comes back
            // (a session left down would hold the final poweroff: the kernel flushes every
            // disk's cache, and that command waits out the recovery timeout).
            if let Some((other_port, data)) = other_gone {
                std::thread::sleep(Duration::from_secs(8));
                let mut o = Tgtd::start_at(other_port).unwrap_or_else(|e| panic!("{e}"));
                o.target(1, OTHER_IQN, &data).expect("other target");
                eprintln!("host: the other tgtd back on port {other_port}");
                other = Some((o, data));
            }
        }
        Outage::LinkDown => {
            let info = running
                .monitor("info network")
                .unwrap_or_else(|e| panic!("{e}"));
            // `-nic user,model=…` names the NIC after its model, e.g. `virtio-net-pci.0`.
            let nic = info
                .lines()
                .filter_map(|l| l.trim_start_matches(" \\ ").split(':').next())
                .map(str::trim)
                .find(|n| n.starts_with("virtio-net-pci"))
                .unwrap_or("virtio-net-pci.0")
                .to_string();
            eprintln!(
                "host: link {nic} down: {}",
                running
                    .monitor(&format!("set_link {nic} off"))
                    .unwrap_or_default()
                    .trim()
            );
            std::thread::sleep(OUTAGE);
            running
                .monitor(&format!("set_link {nic} on"))
                .unwrap_or_else(|e| panic!("{e}"));
            eprintln!("host: link {nic} up");
        }
    }
    let out = running.finish().unwrap_or_else(|e| panic!("{e}"));
    drop(t);
    if let Some((o, data)) = other {
        drop(o);
        let _ = std::fs::remove_dir_all(data.parent().unwrap_or(Path::new("/nonexistent")));
    }
    let _ = std::fs::remove_dir_all(monitor.parent().unwrap_or(Path::new("/nonexistent")));
    for l in out.log.lines().filter(|l| {
        l.contains("terra-keeper") || l.contains("TERRA-WRITER") || l.contains("TERRA-KEEPER")
    }) {
        eprintln!("guest: {l}");
    }
    eprintln!("VM run: {:.1} s", out.elapsed.as_secs_f64());
    let text = tgtd::read_from_image(&img.0, root.log)
        .expect("mount the LUN image")
        .unwrap_or_default();
    let lines = text
        .lines()
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    Run { out, lines }
}

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
    // The first write after the keeper's login: the line after the stall carries the time
    // its predecessor's sync returned, plus the writer's 200 ms pause.
    let back = keeper_log
        .lines()
        .rev()
        .filter(|l| l.contains("is back after"))
        .filter_map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .next()
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
    let done = log
        .lines()
        .find_map(|l| l.split("TERRA-WRITER done ").nth(1))
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
    // The longest pause between two writes is the outage the writer lived through.
    let (at, stall) = r
        .lines
        .windows(2)
        .map(|w| (w[1].1, w[1].1 - w[0].1))
        .fold((0.0, 0.0), |best, x| if x.1 > best.1 { x } else { best });
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
    let r = run("keeper-restart", false, Outage::TargetRestart);
    expect_writes_survived(&r);
    // A restarted tgtd has forgotten the session: the keeper reinstates it.
    assert!(r.out.log.contains("session reinstated"), "{}", r.out.log);
    // The first attempt met the target still down.
    assert!(r.out.log.contains("Connection refused"), "{}", r.out.log);
}

#[test]
fn writes_survive_a_target_restart_with_mutual_chap() {
    let r = run("keeper-chap", true, Outage::TargetRestart);
    expect_writes_survived(&r);
    expect_no_secret(&r.out.log);
}

/// A target that stays away does not hold up another's recovery: the dead session is
/// listed first, yet the root's comes back and the writes go on.
#[test]
fn a_dead_target_does_not_hold_up_the_roots_recovery() {
    let r = run("keeper-other", false, Outage::TargetRestartOtherDead);
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
    let r = run("keeper-link", false, Outage::LinkDown);
    expect_writes_survived(&r);
}

/// The keeper exits once the system runs its own iscsid (here: a process named by
/// `/run/iscsid.pid`), which adopts the sessions.
#[test]
fn keeper_steps_aside_for_iscsid() {
    let img = lun("keeper-aside");
    let t = serve(&img.0, None, false);
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.nic = Some("virtio".into());
    vm.append = format!(
        "terra.rescue=halt rd.iscsi.initiator={INITIATOR} netroot=iscsi:{GUEST_HOST_ADDR}::{}:1:{IQN} rw init=/bin/step-aside",
        t.port
    );
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

/// UUID of the Debian root installed for the iscsid scenario.
const DEBIAN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000d3";

/// A Debian root with open-iscsi (debootstrapped by the lab, `lab::debian`) on a LUN:
/// open-iscsi.service starts iscsid because a session exists, iscsid adopts the session
/// stage0 made, the keeper steps aside, and iscsid alone recovers a later target restart
/// while the root's writer goes on.
#[test]
fn iscsid_in_a_debian_root_adopts_the_session_and_recovers_a_target_restart() {
    let a = artifacts();
    let images = debian::debian_images()
        .expect("Debian images (debootstrap needs root and Debian's mirror)");
    let installed = debian::debian_disk(&a.terra, &images, debian::V1, DEBIAN_UUID)
        .expect("Debian v1 installed by terra install");
    let lun = tgtd::Lun(lab::lab_dir().join("scratch/keeper-debian.img"));
    std::fs::create_dir_all(lun.0.parent().unwrap()).expect("scratch dir");
    lab::run(
        std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(&installed)
            .arg(&lun.0),
    )
    .expect("copy the installed disk");
    let root = Root {
        lun,
        args: format!("terra.demo=iscsi-writer terra.writer={WRITE_SECS}"),
        log: "writes.log",
        memory_mb: Some(1024),
    };
    let r = run_on(root, false, Outage::TargetRestart);
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
