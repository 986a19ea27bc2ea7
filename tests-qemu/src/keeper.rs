//! The session keeper's scenarios (ARCHITECTURE.md §2.5), shared by
//! `tests/scenarios/iscsi_keeper.rs` and `cargo xtask bench --only keeper`: a diskless node whose root
//! is a tgtd LUN writes a numbered line every 200 ms while the host kills tgtd and starts it
//! again 10 s later (tgtd keeps no state: the target is made anew), or takes the VM's link
//! down for 10 s; the root is the busybox demo (stage0's keeper recovers) or the lab's
//! Debian root with open-iscsi (its iscsid adopts the session and recovers).

use std::path::Path;
use std::time::Duration;

use crate::disk::BtrfsDisk;
use crate::harness::{accel, artifacts};
use crate::tgtd::{self, Tgtd, GUEST_HOST_ADDR};
use crate::vm::{Outcome, Vm};

pub const LUN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000c7";
pub const IQN: &str = "iqn.2024-01.org.terra-os:keeper-root";
pub const INITIATOR: &str = "iqn.2024-01.org.terra-os:keeper-node";
pub const NODE_SECRET: &str = "keeper-node-secret-1";
pub const TARGET_SECRET: &str = "keeper-target-secret-2";
/// How long the root's init writes, in guest seconds.
pub const WRITE_SECS: u32 = 30;
/// How long the target (or the link) is away.
pub const OUTAGE: Duration = Duration::from_secs(10);

/// The root's init: writes `/writes.log` for `terra.writer=` seconds, reports any failed
/// write or sync and the kernel's I/O errors, shows what the keeper exposes (its
/// cmdline, environment, RSS and log), then powers off.
pub const WRITER: &str = concat!(
    r#"#!/bin/sh
export PATH=/bin:/sbin
secs=30
for arg in $(cat /proc/cmdline); do
  case "$arg" in terra.writer=*) secs=${arg#terra.writer=} ;; esac
done
log=/writes.log
"#,
    crate::writer::write_loop!(),
    r#"pid=
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
"#
);

/// A root init that starts a stand-in for iscsid (a process whose PID is in
/// `/run/iscsid.pid`, as open-iscsi's iscsid writes it) and then checks that the keeper
/// stepped aside.
pub const STEP_ASIDE: &str = r#"#!/bin/sh
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

/// The busybox root LUN (label and subvolume `os`) with [`WRITER`] and [`STEP_ASIDE`].
pub fn lun(name: &str) -> crate::Result<tgtd::Lun> {
    let busybox = crate::host::static_busybox().ok_or("static busybox missing")?;
    let base = BtrfsDisk::new("os", LUN_UUID, &["os"])
        .image(&busybox)
        .map_err(|e| format!("demo disk: {e}"))?;
    Ok(tgtd::Lun(
        tgtd::lun_image_with(
            &base,
            name,
            &["os"],
            &[
                ("bin/keeper-writer", WRITER),
                ("bin/step-aside", STEP_ASIDE),
            ],
        )
        .map_err(|e| format!("LUN image: {e}"))?,
    ))
}

/// tgtd serving `image` as LUN 1 of [`IQN`], on `port` when given, with mutual CHAP
/// accounts when `chap`.
pub fn serve(image: &Path, port: Option<u16>, chap: bool) -> crate::Result<Tgtd> {
    serve_on("127.0.0.1", image, port, chap)
}

/// [`serve`] on the host's `addr` (`127.0.0.1`, or `::1` for an IPv6 portal).
fn serve_on(addr: &str, image: &Path, port: Option<u16>, chap: bool) -> crate::Result<Tgtd> {
    let mut t = match port {
        Some(p) => Tgtd::start_on_at(addr, p),
        None => Tgtd::start_on(addr),
    }?;
    t.target(1, IQN, image)
        .map_err(|e| format!("target: {e}"))?;
    if chap {
        t.account(1, "keeper-node", NODE_SECRET, false)
            .map_err(|e| format!("incoming account: {e}"))?;
        t.account(1, "keeper-target", TARGET_SECRET, true)
            .map_err(|e| format!("outgoing account: {e}"))?;
    }
    Ok(t)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// tgtd is killed and started again, on the same port, with the same target and LUN.
    TargetRestart,
    /// The VM's NIC loses its link (QEMU's `set_link`).
    LinkDown,
    /// The node has a second session (listed first), to another tgtd: both tgtds are
    /// killed, the root's comes back after the outage, the other one once the console shows
    /// the root's session back.
    TargetRestartOtherDead,
}

/// The second target's name in [`Outage::TargetRestartOtherDead`].
pub const OTHER_IQN: &str = "iqn.2024-01.org.terra-os:keeper-other";

/// What a run left: the console, and the lines of `/writes.log` as (number, guest uptime).
pub struct Run {
    /// The VM's console and how it ended.
    pub out: Outcome,
    /// The writer's lines.
    pub lines: Vec<(u64, f64)>,
}

impl Run {
    /// The writer's last report: what follows `TERRA-WRITER done ` (`lines=… errors=…
    /// kernel-io-errors=…`).
    pub fn done(&self) -> Option<&str> {
        self.out
            .log
            .lines()
            .find_map(|l| l.split("TERRA-WRITER done ").nth(1))
    }

    /// The longest pause between two writes (the outage the writer lived through) and the
    /// guest time of the write that ended it.
    pub fn stall(&self) -> (f64, f64) {
        self.lines
            .windows(2)
            .map(|w| (w[1].1 - w[0].1, w[1].1))
            .fold((0.0, 0.0), |best, x| if x.0 > best.0 { x } else { best })
    }
}

/// Runs the outage against the busybox root whose init is [`WRITER`], on LUN image `name`.
pub fn run(name: &str, chap: bool, outage: Outage) -> crate::Result<Run> {
    let root = Root {
        lun: lun(name)?,
        args: format!("rw init=/bin/keeper-writer terra.writer={WRITE_SECS}"),
        log: "os/writes.log",
        memory_mb: None,
    };
    run_on(root, chap, outage)
}

/// [`run`] over IPv6 alone: the node takes its address by SLAAC (`ip=auto6`) and its root
/// from tgtd on the host's `::1`, which QEMU's user network shows it as
/// [`tgtd::GUEST_HOST_ADDR6`]; the keeper must reconnect to that portal.
pub fn run_ipv6(name: &str, outage: Outage) -> crate::Result<Run> {
    let root = Root {
        lun: lun(name)?,
        args: format!("ip=auto6 rw init=/bin/keeper-writer terra.writer={WRITE_SECS}"),
        log: "os/writes.log",
        memory_mb: None,
    };
    run_over(root, false, outage, true)
}

/// A diskless root to run the outage against.
pub struct Root {
    /// The LUN image.
    pub lun: tgtd::Lun,
    /// What the command line adds to start the root's writer.
    pub args: String,
    /// Where the writer's file is, relative to the top of the LUN's filesystem.
    pub log: &'static str,
    /// The guest's memory when the default is too small.
    pub memory_mb: Option<u32>,
}

/// A diskless node: the lab's kernel and initramfs, a virtio NIC on QEMU's user network,
/// initiator [`INITIATOR`], rescue halts; `append` adds the targets and the root's args.
pub fn node_vm(append: &str) -> Vm {
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.nic = Some("virtio".into());
    vm.append = format!("terra.rescue=halt rd.iscsi.initiator={INITIATOR} {append}");
    vm
}

/// Boots `root` from tgtd, lets it write for a few seconds, makes the outage, and returns
/// the console and the writer's file once the VM has powered off.
pub fn run_on(root: Root, chap: bool, outage: Outage) -> crate::Result<Run> {
    run_over(root, chap, outage, false)
}

/// [`run_on`], the target on the host's `::1` (the guest's fec0::2) when `ipv6`.
fn run_over(root: Root, chap: bool, outage: Outage, ipv6: bool) -> crate::Result<Run> {
    let img = root.lun;
    let (host_addr, guest_addr) = if ipv6 {
        ("::1", format!("[{}]", tgtd::GUEST_HOST_ADDR6))
    } else {
        ("127.0.0.1", GUEST_HOST_ADDR.to_string())
    };
    let mut t = serve_on(host_addr, &img.0, None, chap)?;
    let port = t.port;
    let target = if chap {
        format!(
            "netroot=iscsi:keeper-node:{NODE_SECRET}:keeper-target:{TARGET_SECRET}@{guest_addr}::{port}:1:{IQN}"
        )
    } else {
        format!("netroot=iscsi:{guest_addr}::{port}:1:{IQN}")
    };
    // The other session: an empty data LUN on a second tgtd, logged in first.
    let mut other = None;
    if outage == Outage::TargetRestartOtherDead {
        let data = crate::disk::tempdir("keeper-other")
            .map_err(|e| format!("scratch dir: {e}"))?
            .join("data.img");
        std::fs::File::create(&data)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| format!("data LUN: {e}"))?;
        let mut o = Tgtd::start()?;
        o.target(1, OTHER_IQN, &data)
            .map_err(|e| format!("other target: {e}"))?;
        other = Some((o, data));
    }
    let other_arg = other
        .as_ref()
        .map(|(o, _)| format!("netroot=iscsi:{GUEST_HOST_ADDR}::{}:1:{OTHER_IQN} ", o.port))
        .unwrap_or_default();
    let mut vm = node_vm(&format!("{other_arg}{target} {}", root.args));
    if let Some(mb) = root.memory_mb {
        vm.memory_mb = mb;
    }
    vm.timeout = Duration::from_secs(420);
    let monitor = crate::disk::tempdir("keeper-mon")
        .map_err(|e| format!("scratch dir: {e}"))?
        .join("monitor.sock");
    let mut running = vm.spawn_captured(Some(&monitor))?;
    let started = running.wait_for("TERRA-WRITER start", Duration::from_secs(360));
    if !started {
        return Err(format!(
            "the writer never started; serial log:\n{}",
            running.log()
        ));
    }
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
            t = serve_on(host_addr, &img.0, Some(port), chap)?;
            eprintln!("host: tgtd back on port {port}");
            // The other target stays away until the root's session is back (a keeper held
            // up by the dead session never gets there: the test then fails on the order),
            // then comes back: a session left down would hold the final poweroff (the kernel
            // flushes every disk's cache, and that command waits out the recovery timeout).
            // Waiting on the console rather than a fixed time keeps the order a fact about
            // the keeper, not about how much CPU a loaded host gave the guest.
            if let Some((other_port, data)) = other_gone {
                let root_back = format!("{IQN} at {guest_addr}:{port} is back after");
                if !running.wait_for(&root_back, Duration::from_secs(90)) {
                    eprintln!("host: the root's session not back within 90 s");
                }
                std::thread::sleep(Duration::from_secs(2));
                let mut o = Tgtd::start_at(other_port)?;
                o.target(1, OTHER_IQN, &data)
                    .map_err(|e| format!("other target: {e}"))?;
                eprintln!("host: the other tgtd back on port {other_port}");
                other = Some((o, data));
            }
        }
        Outage::LinkDown => {
            let info = running.monitor("info network")?;
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
            running.monitor(&format!("set_link {nic} on"))?;
            eprintln!("host: link {nic} up");
        }
    }
    let out = running.finish()?;
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
        .map_err(|e| format!("mount the LUN image: {e}"))?
        .unwrap_or_default();
    let lines = text
        .lines()
        .filter_map(|l| {
            let (n, t) = l.split_once(' ')?;
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    Ok(Run { out, lines })
}

/// UUID of the Debian root installed for the iscsid scenario.
pub const DEBIAN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000d3";

/// The lab's Debian root with open-iscsi ([`crate::debian`], image v1) installed by
/// `terra install` and copied to LUN image `name`; its writer unit runs on the command line
/// this adds.
pub fn debian_root(name: &str) -> crate::Result<Root> {
    let a = crate::harness::artifacts();
    let images = crate::debian::debian_images()?;
    let installed = crate::debian::debian_disk(&a.terra, &images, crate::debian::V1, DEBIAN_UUID)?;
    crate::disk::claim_scratch(&format!("{name}.img"))?;
    let lun = tgtd::Lun(crate::disk::scratch_copy(
        &installed,
        &format!("{name}.img"),
    )?);
    Ok(Root {
        lun,
        args: format!("terra.demo=iscsi-writer terra.writer={WRITE_SECS}"),
        log: "writes.log",
        memory_mb: Some(1024),
    })
}
