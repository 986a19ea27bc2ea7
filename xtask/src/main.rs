//! `cargo xtask qemu | test`: the developer's and CI's entry points.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

mod bench_controller;
mod bench_rollout;
mod circles;
mod runner;

use lab::build::{self, Artifacts};
use lab::vm::{self, Accel, Vm};

const USAGE: &str = "usage:
  cargo xtask qemu [--check] [--append ARGS] [--accel tcg|kvm] [--kernel K] [--initramfs I]
                   [--disk D]... [--timeout SECS] [--smp N] [--nic virtio|e1000|none] [--iscsi]
      Builds stage0, an initramfs and a demo root (an OCI image installed by `terra install`
      on a btrfs disk image: label `os`, subvolume `os`) and boots
      them with the serial console on this terminal. --check boots without interaction and
      exits 0 only when the root's init ran (so not when a phase such as network failed),
      printing the boot times. --nic (default virtio) attaches a NIC on QEMU user networking:
      `--append ip=dhcp` then runs the network phase. --iscsi serves the demo root from tgtd
      on 127.0.0.1 (LUN 1, a copy of the demo disk) to a VM without disks, which logs in
      through 10.0.2.2 with Terra's ISCSI_* keys; tgtd stops when the VM does.
  cargo xtask qemu ... [--iso | --pxe | --disk-boot] [--uefi]
      --iso boots the kernel and initramfs from a CD-ROM made by `terra iso`; --pxe from a
      tree made by `terra pxe`, over QEMU's TFTP with its iPXE ROM (the default entry);
      --disk-boot from the disk alone (no -kernel): the demo root installed by `terra
      install` with `mbr = true` (GRUB, ESP), or the first --disk; --uefi uses OVMF on
      -machine q35 instead of SeaBIOS. --append goes into the artifact.
  cargo xtask kernel [--check-only] [--fragment F]... [-o OUT] [-j N] [--boot]
      `terra kernel` on Debian's linux-source (unpacked once under target/kernel/src) with
      kernel-config/base.config and qemu.config unless --fragment is given; OUT defaults to
      target/kernel/qemu. --boot then boots the new kernel with a Terra initramfs of its
      modules (like `cargo xtask qemu --check`).
  cargo xtask test [FILTER | --skip NAME | libtest options]...
      Sets up the host (scripts/setup-host.sh: needs root or sudo when packages are
      missing), builds every test binary of the workspace once (dev profile; the lab runs
      that terra and terra-controller), builds the lab's artifacts, then runs the binaries
      two at a time, heaviest first (the QEMU scenarios' binary with 4 test threads), each
      line prefixed with its binary (whole logs in target/lab/test-logs/). Ends with every
      binary's wall time and the 10 slowest boot scenarios
      (target/lab/timings/scenarios.jsonl). Arguments go to every test binary.
  cargo xtask circles [SRC_DIR]...
      Lists file-level import circles in each crate's src/ (exit 1 when there is one).
  cargo xtask deb
      The Debian package: terra, stage0, the module sets and the kernel hooks, in
      target/deb/terra_<version>_amd64.deb.
  cargo xtask bench [--boots N] [--gen-runs N] [--accel tcg|kvm] [--dhcp-runs N]
                    [--iscsi-runs N] [--only dhcp|unpack|iscsi|netboot|upgrade|verify|create|extensions|kexec|keeper|tentative|restart|update]
                    [--only controller [--nodes N] [--full-nodes N] [--image-mb N]
                                       [--requests N]]
                    [--only rollout [--sim-nodes N] [--requests N]]
      terra vs mkinitramfs vs dracut: generation time, image size, boot time to the root's
      init on the same kernel and disk; then time to a DHCP lease, stage0 vs busybox udhcpc
      against one dnsmasq in network namespaces (root); time from network up to an iSCSI
      LUN's disk, stage0's initiator vs open-iscsi's iscsistart, in the same VM setup against
      tgtd (--iscsi-runs boots each, default 3); a diskless node's whole boot from one tgtd
      LUN, Terra's image vs dracut's with network and iscsi (--boots each; --only netboot);
      OCI unpack, terra vs umoci, on a 300 MiB
      3-layer image; versions: `terra upgrade` of a 10 MiB top layer over a 500 MiB base vs a
      full unpack (time, new data), and the boot cost of a tentative version and of a
      same-boot fallback (--boots each); update (--only update): the bytes `terra upgrade
      --disk` fetches from a local registry for that 10 MiB layer vs full pulls of the image
      by `terra image pull` and skopeo; what --verify-key adds to `terra image pull` of the
      demo image from a local registry (--only verify); `terra create` of the README's Debian
      example vs `buildah bud` of the equivalent Containerfile (--only create, --boots builds
      each); the root phase with 0, 1 and 5 extensions and adding 50 MB as an extension vs
      a rebuilt image and an upgrade (--only extensions, --boots each); booting a version on its own kernel,
      kexec from the lab's kernel vs that kernel started directly (--only kexec, --boots
      each); a diskless root's writes through a 10 s target restart, stage0's keeper vs
      open-iscsi's iscsid adopting the session in the lab's Debian root (--only keeper,
      --boots runs each); a tentative version's boot against a plain one, stage0's root
      phase (--only tentative, --boots each; part of --only update); from `terra apply
      --reboot` in a booted Debian node to the new version's init, kexec vs a full reboot
      through SeaBIOS and GRUB (--only restart, --boots each; part of --only update).
      --only …: that case alone. --only controller (root): provisioning 1, 10 and
      100 nodes (--nodes) from one 500 MiB image through the controller (golden LUN, then
      reflink clones on a btrfs state directory) vs a full `terra install` per node
      (--full-nodes, default 10): time and new disk bytes per node; and `/ipxe?mac=`
      requests per second with 1,000 nodes in the database (--requests, default 50,000).
      --only rollout: boot reports per second and their p50/p99 from 10,000 simulated
      nodes (--sim-nodes) against SQLite and PostgreSQL (--requests, default 20,000), a
      10,000-node rollout's planning time, the time from a canary's failure report to the
      pause, and a real diskless node's report phase with the controller answering, refused
      and silent.
      Results in target/bench/results.{md,json}.";

/// The target name `--iscsi` serves the demo root under.
const ISCSI_IQN: &str = "iqn.2024-01.org.terra-os:demo-root";

/// UUID of the demo disk, pinned so `root=UUID=` can be tried by hand.
pub const DEMO_UUID: &str = "7e44a1a0-5ca1-4e00-9000-00000000d001";
/// Filesystem UUID of the bootable demo disk (`--disk-boot`).
pub const DISK_BOOT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-00000000d002";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("qemu") => qemu(args.collect()),
        Some("test") => test(args.collect()),
        Some("circles") => circles(args.map(PathBuf::from).collect()),
        Some("bench") => bench(args.collect()),
        Some("kernel") => kernel(args.collect()),
        Some("deb") => deb(),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(true)
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct QemuArgs {
    check: bool,
    append: Vec<String>,
    accel: Option<Accel>,
    kernel: Option<PathBuf>,
    initramfs: Option<PathBuf>,
    disks: Vec<PathBuf>,
    timeout: Option<u64>,
    smp: u32,
    nic: Option<String>,
    iscsi: bool,
    iso: bool,
    pxe: bool,
    disk_boot: bool,
    uefi: bool,
}

fn parse_qemu(args: Vec<String>) -> Result<QemuArgs, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut q = QemuArgs {
        smp: 1,
        // A NIC on QEMU user networking unless --nic none: `--append ip=dhcp` just works.
        nic: Some("virtio".into()),
        ..Default::default()
    };
    let s = |v: std::ffi::OsString| {
        v.into_string()
            .map_err(|_| "argument is not UTF-8".to_string())
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("check") => q.check = true,
            Long("append") => q.append.push(s(p.value().map_err(|e| e.to_string())?)?),
            Long("accel") => {
                let v = s(p.value().map_err(|e| e.to_string())?)?;
                q.accel =
                    Some(Accel::parse(&v).ok_or(format!("--accel {v}: expected tcg or kvm"))?);
            }
            Long("kernel") => q.kernel = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("initramfs") => q.initramfs = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("disk") => q.disks.push(p.value().map_err(|e| e.to_string())?.into()),
            Long("timeout") => {
                let v = s(p.value().map_err(|e| e.to_string())?)?;
                q.timeout = Some(
                    v.parse()
                        .map_err(|_| format!("--timeout {v}: expected seconds"))?,
                );
            }
            Long("smp") => {
                let v = s(p.value().map_err(|e| e.to_string())?)?;
                q.smp = v
                    .parse()
                    .map_err(|_| format!("--smp {v}: expected a number"))?;
            }
            Long("iscsi") => q.iscsi = true,
            Long("iso") => q.iso = true,
            Long("pxe") => q.pxe = true,
            Long("uefi") => q.uefi = true,
            Long("disk-boot") => q.disk_boot = true,
            Long("nic") => {
                let v = s(p.value().map_err(|e| e.to_string())?)?;
                q.nic = match v.as_str() {
                    "none" => None,
                    "virtio" | "e1000" => Some(v),
                    _ => return Err(format!("--nic {v}: expected virtio, e1000 or none")),
                };
            }
            Long("help") | Short('h') => return Err(USAGE.into()),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    Ok(q)
}

fn qemu(args: Vec<String>) -> Result<bool, String> {
    let q = parse_qemu(args)?;
    lab::host::ensure()?;
    let (kernel, initramfs) = match (&q.kernel, &q.initramfs) {
        (Some(k), Some(i)) => (k.clone(), i.clone()),
        _ => {
            eprintln!("xtask: building stage0, terra and the initramfs");
            let a: Artifacts = build::artifacts()?;
            (
                q.kernel.clone().unwrap_or(a.kernel),
                q.initramfs.clone().unwrap_or(a.initramfs),
            )
        }
    };
    // With --iscsi the demo root lives in tgtd, which lives until this function returns.
    let mut iscsi = None;
    if q.disk_boot && (q.iso || q.pxe || q.iscsi) {
        return Err(
            "--disk-boot boots the disk: it goes with neither --iso, --pxe nor --iscsi".into(),
        );
    }
    let disks = if q.disk_boot && q.disks.is_empty() {
        let busybox = lab::host::static_busybox()
            .ok_or("no static busybox (apt-get install busybox-static)")?;
        // The kernel arguments live on the disk's ESP: the demo's poweroff goes in there.
        let mut append = q.append.join(" ");
        if q.check {
            append.push_str(" terra.demo=poweroff");
        }
        vec![lab::oci_root::demo_boot_disk(
            &build::terra()?,
            &busybox,
            &build::stage0()?,
            &kernel,
            DISK_BOOT_UUID,
            append.trim(),
        )?]
    } else if q.iscsi {
        let busybox = lab::host::static_busybox()
            .ok_or("no static busybox (apt-get install busybox-static)")?;
        // The same demo root as without --iscsi (written by `terra install`), copied so
        // that the guest may write to it.
        let base = match q.disks.first() {
            Some(d) => d.clone(),
            None => lab::oci_root::demo_disk(&build::terra()?, &busybox, DEMO_UUID)?,
        };
        let lun = lab::tgtd::lun_image(&base, "xtask", &[])?;
        let mut t = lab::tgtd::Tgtd::start()?;
        t.target(1, ISCSI_IQN, &lun)?;
        eprintln!(
            "xtask: tgtd serves {} as {ISCSI_IQN} LUN 1 on 127.0.0.1:{}",
            lun.display(),
            t.port
        );
        iscsi = Some((t, lab::tgtd::Lun(lun)));
        Vec::new()
    } else if q.disks.is_empty() {
        let busybox = lab::host::static_busybox()
            .ok_or("no static busybox (apt-get install busybox-static)")?;
        // The demo root is a real OCI image installed by `terra install`, the path a node's
        // root takes.
        let terra = build::terra()?;
        vec![lab::oci_root::demo_disk(&terra, &busybox, DEMO_UUID)?]
    } else {
        q.disks.clone()
    };
    let accel = q.accel.unwrap_or_else(|| vm::detect_accel(&kernel));
    let mut vm = Vm::new(&kernel, &initramfs, accel);
    vm.disks = disks;
    vm.boot_disk = q.disk_boot;
    vm.smp = q.smp;
    vm.nic = q.nic.clone();
    vm.append = q.append.join(" ");
    if let Some((t, _)) = &iscsi {
        if vm.nic.is_none() {
            return Err("--iscsi needs a NIC: drop --nic none".into());
        }
        vm.append = format!(
            "ISCSI_INITIATOR=iqn.2024-01.org.terra-os:xtask ISCSI_TARGET_NAME={ISCSI_IQN} ISCSI_TARGET_IP={}:{} {}",
            lab::tgtd::GUEST_HOST_ADDR,
            t.port,
            vm.append
        );
    }
    boot_media(&q, &mut vm, &kernel, &initramfs)?;
    if q.check {
        vm.append.push_str(" terra.demo=poweroff");
        vm.timeout = Duration::from_secs(q.timeout.unwrap_or(180));
        eprintln!(
            "xtask: booting ({accel:?}, at most {} s)",
            vm.timeout.as_secs()
        );
        let out = vm.run_captured()?;
        print!("{}", out.log);
        if let Some(line) = out
            .log
            .lines()
            .find(|l| l.contains("boot failed in phase network"))
        {
            eprintln!("xtask: check FAILED: the network phase failed: {line}");
            return Ok(false);
        }
        let Some(uptime) = vm::demo_init_uptime(&out.log) else {
            eprintln!(
                "xtask: check FAILED: the root's init did not run ({} after {:.1} s)",
                if out.exited {
                    "the VM stopped"
                } else {
                    "timed out"
                },
                out.elapsed.as_secs_f64()
            );
            return Ok(false);
        };
        println!("\n=== terra boot check passed ({accel:?}) ===");
        println!("guest time from kernel start to the root's init: {uptime:.2} s");
        if let Some(r) = vm::boot_report(&out.log) {
            println!(
                "initramfs (stage0) time: {:.0} ms, started at {:.0} ms after kernel start",
                r["initramfs_ms"].as_f64().unwrap_or(0.0),
                r["uptime_at_start_ms"].as_f64().unwrap_or(0.0)
            );
            if let Some(phases) = r["phases"].as_array() {
                let line: Vec<String> = phases
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {:.0} ms",
                            p["name"].as_str().unwrap_or("?"),
                            p["ms"].as_f64().unwrap_or(0.0)
                        )
                    })
                    .collect();
                println!("phases: {}", line.join(", "));
            }
        }
        println!(
            "host wall time of the VM run: {:.1} s",
            out.elapsed.as_secs_f64()
        );
        return Ok(true);
    }
    vm.timeout = Duration::from_secs(q.timeout.unwrap_or(3600));
    eprintln!("xtask: booting ({accel:?}); quit with Ctrl-A X");
    Ok(vm.run_interactive()?.success())
}

/// `cargo xtask circles [SRC_DIR...]`: the workspace's crates unless directories are given.
fn circles(dirs: Vec<PathBuf>) -> Result<bool, String> {
    let trees: Vec<PathBuf> = if dirs.is_empty() {
        circles::TREES
            .iter()
            .map(|t| lab::workspace().join(t))
            .collect()
    } else {
        dirs
    };
    let found = circles::find(&trees)?;
    for line in &found {
        println!("{line}");
    }
    println!("{} circle(s)", found.len());
    Ok(found.is_empty())
}

fn deb() -> Result<bool, String> {
    let deb = lab::package::build_deb()?;
    let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
    println!("{} ({size} bytes)", deb.display());
    Ok(true)
}

fn test(args: Vec<String>) -> Result<bool, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = |c: &mut Command| {
        c.current_dir(lab::workspace())
            .status()
            .map(|s| s.success())
            .map_err(|e| e.to_string())
    };
    // The workspace's tests need the host's packages too (mkfs.*, tgtd, a registry…), so
    // the host is set up before any test runs, not only before the QEMU scenarios.
    eprintln!("xtask: host packages (scripts/setup-host.sh)");
    if !status(Command::new("bash").arg("scripts/setup-host.sh"))? {
        return Err(
            "scripts/setup-host.sh failed: the host lacks what the tests need; run it as root \
             (or with sudo) and see its output above"
                .into(),
        );
    }
    lab::timings::clear()?;
    eprintln!("xtask: building every test binary");
    let bins = runner::build(&cargo, &lab::workspace())?;
    // The lab runs the dev-profile terra and terra-controller the build above made: a
    // release build would compile the whole dependency tree a second time (minutes on a
    // fresh machine), and nothing the tests check depends on the profile.
    let debug = lab::target_dir().join("debug");
    std::env::set_var("LAB_TERRA", debug.join("terra"));
    std::env::set_var("LAB_TERRA_CONTROLLER", debug.join("terra-controller"));
    eprintln!("xtask: host tools and artifacts");
    let artifacts = build::artifacts()?;
    // The dev terra would otherwise pack the `stage0` beside it in target/debug: the
    // dynamically linked test build, which an initramfs refuses. Every terra a test runs
    // packs the static one.
    std::env::set_var("TERRA_STAGE0", &artifacts.stage0);
    eprintln!(
        "xtask: {} test binaries in {} lanes (logs in {})",
        bins.len(),
        runner::LANES,
        lab::lab_dir().join("test-logs").display()
    );
    let mut ran = runner::run(bins, &args, &lab::lab_dir().join("test-logs"))?;
    ran.sort_by_key(|r| std::cmp::Reverse(r.took));
    eprintln!("xtask: test binaries, slowest first (wall s):");
    for r in &ran {
        eprintln!(
            "  {:7.1}  {}  {}",
            r.took.as_secs_f64(),
            if r.ok { "ok    " } else { "FAILED" },
            r.name
        );
    }
    print_slowest(10);
    let failed: Vec<_> = ran.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        eprintln!("xtask: FAILED {} (its output: {})", r.name, r.log.display());
    }
    Ok(failed.is_empty())
}

/// The `n` slowest boot scenarios of this run, from the lab's timings.
fn print_slowest(n: usize) {
    match lab::timings::slowest() {
        Ok(all) if all.is_empty() => {}
        Ok(all) => {
            eprintln!(
                "xtask: the {} slowest of {} boot scenarios (wall s, VMs, s in QEMU), from {}:",
                n.min(all.len()),
                all.len(),
                lab::timings::file().display()
            );
            for s in all.iter().take(n) {
                eprintln!(
                    "  {:7.1}  {:2} VM  {:7.1}  {}",
                    s.seconds, s.boots, s.vm_seconds, s.name
                );
            }
        }
        Err(e) => eprintln!("xtask: no scenario timings: {e}"),
    }
}

fn bench(args: Vec<String>) -> Result<bool, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut opts = lab::bench::Options {
        gen_runs: 3,
        boots: 3,
        accel: Accel::Tcg,
        only_dhcp: false,
        only_unpack: false,
        dhcp_runs: 5,
        only_iscsi: false,
        iscsi_runs: 3,
        only_upgrade: false,
        only_update: false,
        only_verify: false,
        only_create: false,
        only_extensions: false,
        only_kexec: false,
        only_keeper: false,
        only_netboot: false,
        only_tentative: false,
        only_restart: false,
    };
    let mut accel = None;
    let mut only_controller = false;
    let mut only_rollout = false;
    let mut reports = bench_rollout::Options {
        nodes: 10_000,
        requests: 20_000,
    };
    let mut fleet = bench_controller::Options {
        nodes: 100,
        full_nodes: 10,
        image_mb: 500,
        requests: 50_000,
    };
    let num = |v: std::ffi::OsString, flag: &str| -> Result<usize, String> {
        v.to_str()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > 0)
            .ok_or(format!("{flag}: expected a positive number"))
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("boots") => opts.boots = num(p.value().map_err(|e| e.to_string())?, "--boots")?,
            Long("gen-runs") => {
                opts.gen_runs = num(p.value().map_err(|e| e.to_string())?, "--gen-runs")?
            }
            Long("accel") => {
                let v = p.value().map_err(|e| e.to_string())?;
                let v = v.to_string_lossy();
                accel = Some(Accel::parse(&v).ok_or(format!("--accel {v}: expected tcg or kvm"))?);
            }
            Long("dhcp-runs") => {
                opts.dhcp_runs = num(p.value().map_err(|e| e.to_string())?, "--dhcp-runs")?
            }
            Long("iscsi-runs") => {
                opts.iscsi_runs = num(p.value().map_err(|e| e.to_string())?, "--iscsi-runs")?
            }
            Long("only") => {
                let v = p.value().map_err(|e| e.to_string())?;
                match v.to_str() {
                    Some("dhcp") => opts.only_dhcp = true,
                    Some("unpack") => opts.only_unpack = true,
                    Some("iscsi") => opts.only_iscsi = true,
                    Some("upgrade") => opts.only_upgrade = true,
                    Some("update") => opts.only_update = true,
                    Some("verify") => opts.only_verify = true,
                    Some("create") => opts.only_create = true,
                    Some("extensions") => opts.only_extensions = true,
                    Some("kexec") => opts.only_kexec = true,
                    Some("keeper") => opts.only_keeper = true,
                    Some("netboot") => opts.only_netboot = true,
                    Some("tentative") => opts.only_tentative = true,
                    Some("restart") => opts.only_restart = true,
                    Some("controller") => only_controller = true,
                    Some("rollout") => only_rollout = true,
                    _ => {
                        return Err(format!(
                            "--only {}: expected dhcp, unpack, iscsi, upgrade, verify, create, extensions, kexec, keeper, netboot, tentative, restart, update, controller or rollout",
                            v.to_string_lossy()
                        ))
                    }
                }
            }
            Long("nodes") => fleet.nodes = num(p.value().map_err(|e| e.to_string())?, "--nodes")?,
            Long("full-nodes") => {
                fleet.full_nodes = num(p.value().map_err(|e| e.to_string())?, "--full-nodes")?
            }
            Long("image-mb") => {
                fleet.image_mb = num(p.value().map_err(|e| e.to_string())?, "--image-mb")?
            }
            Long("requests") => {
                fleet.requests = num(p.value().map_err(|e| e.to_string())?, "--requests")?;
                reports.requests = fleet.requests;
            }
            Long("sim-nodes") => {
                reports.nodes = num(p.value().map_err(|e| e.to_string())?, "--sim-nodes")?
            }
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    if only_controller {
        println!("{}", bench_controller::run_bench(&fleet)?);
        return Ok(true);
    }
    if only_rollout {
        println!("{}", bench_rollout::run_bench(&reports)?);
        return Ok(true);
    }
    opts.accel = match accel {
        Some(a) => a,
        None if opts.only_dhcp || opts.only_unpack => Accel::Tcg, // no VM is booted
        None => {
            let (kernel, _) = lab::host::find_kernel().ok_or("no kernel under /boot")?;
            vm::detect_accel(&kernel)
        }
    };
    let md = lab::bench::run_all(&opts)?;
    println!("{md}");
    Ok(true)
}

/// `--uefi`, `--iso`, `--pxe`: the firmware, and the kernel and initramfs packed by `terra iso`
/// or `terra pxe` instead of handed to QEMU directly. The kernel arguments go into the
/// artifact, so they are settled here.
fn boot_media(
    q: &QemuArgs,
    vm: &mut Vm,
    kernel: &std::path::Path,
    initramfs: &std::path::Path,
) -> Result<(), String> {
    if q.uefi {
        vm.firmware = vm::Firmware::Uefi;
        if !std::path::Path::new(vm::OVMF).exists() {
            return Err(format!(
                "--uefi: {} is missing (apt-get install ovmf)",
                vm::OVMF
            ));
        }
    }
    if !q.iso && !q.pxe {
        return Ok(());
    }
    if q.iso && q.pxe {
        return Err("--iso and --pxe: choose one".into());
    }
    let mut args = format!("panic=-1 {}", vm.append);
    if q.check {
        args.push_str(" terra.demo=poweroff");
    }
    let dir = lab::lab_dir().join("xtask");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cmd = Command::new(build::terra()?);
    cmd.env("SOURCE_DATE_EPOCH", "0")
        .arg(if q.iso { "iso" } else { "pxe" })
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initramfs);
    if q.iso {
        let iso = dir.join("terra.iso");
        lab::run(cmd.arg("--cmdline").arg(args).arg("-o").arg(&iso))?;
        eprintln!("xtask: booting {} from a CD-ROM", iso.display());
        vm.cdrom = Some(iso);
    } else {
        let tree = dir.join("pxe");
        let args = format!("console=ttyS0,115200 {args}");
        lab::run(cmd.arg("--cmdline").arg(args).arg("-o").arg(&tree))?;
        eprintln!("xtask: network boot from {} over TFTP", tree.display());
        // The netboot NIC is the VM's NIC.
        vm.nic = None;
        vm.netboot = Some(vm::NetBoot {
            tftp_dir: Some(tree),
            bootfile: "boot.ipxe".into(),
            mac: "52:54:00:12:34:56".into(),
        });
    }
    Ok(())
}

/// `cargo xtask kernel`: `terra kernel` on Debian's linux-source.
fn kernel(args: Vec<String>) -> Result<bool, String> {
    use lexopt::prelude::*;
    use terra_builder::kernel as k;
    let mut p = lexopt::Parser::from_args(args);
    let ws = lab::workspace();
    let target = lab::lab_dir()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let mut fragments: Vec<PathBuf> = Vec::new();
    let mut output = target.join("kernel/qemu");
    let mut check_only = false;
    let mut boot = false;
    let mut jobs = None;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("check-only") => check_only = true,
            Long("boot") => boot = true,
            Long("fragment") => fragments.push(p.value().map_err(|e| e.to_string())?.into()),
            Short('o') | Long("output") => output = p.value().map_err(|e| e.to_string())?.into(),
            Short('j') | Long("jobs") => {
                let v = p.value().map_err(|e| e.to_string())?;
                jobs = Some(
                    v.to_str()
                        .and_then(|v| v.parse().ok())
                        .ok_or("-j: expected a number")?,
                );
            }
            Long("help") | Short('h') => return Err(USAGE.into()),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    if fragments.is_empty() {
        fragments = ["base.config", "qemu.config"]
            .iter()
            .map(|f| ws.join("kernel-config").join(f))
            .collect();
    }
    let tarball = k::debian_source_tarball(std::path::Path::new(k::DEBIAN_SOURCE_DIR))
        .map_err(|e| e.to_string())?;
    eprintln!("xtask: kernel source {}", tarball.display());
    let source =
        k::unpack_source(&tarball, &target.join("kernel/src")).map_err(|e| e.to_string())?;
    let mut spec = k::KernelSpec::new(source, fragments, output);
    spec.check_only = check_only;
    if let Some(j) = jobs {
        spec.jobs = j;
    }
    spec.source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok());
    let start = std::time::Instant::now();
    let report = k::build(&spec).map_err(|e| e.to_string())?;
    let (Some(bzimage), Some(kver)) = (report.bzimage, report.kver) else {
        println!(
            "xtask: {} requested options hold after olddefconfig ({:.0} s); {}",
            report.requested,
            start.elapsed().as_secs_f64(),
            report.config.display()
        );
        return Ok(true);
    };
    let size = std::fs::metadata(&bzimage).map(|m| m.len()).unwrap_or(0);
    println!(
        "xtask: kernel {kver} built in {:.0} s: {} ({size} bytes)",
        start.elapsed().as_secs_f64(),
        bzimage.display()
    );
    if !boot {
        return Ok(true);
    }
    // A Terra initramfs of the new kernel's modules; the demo root as with `qemu --check`.
    let initramfs = spec.output.join("initramfs.img");
    let modules = spec.output.join("lib/modules").join(&kver);
    lab::run(
        Command::new(build::terra()?)
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["initramfs", "--stage0"])
            .arg(build::stage0()?)
            .arg("--modules-dir")
            .arg(&modules)
            .arg("-o")
            .arg(&initramfs),
    )?;
    qemu(vec![
        "--check".into(),
        "--nic".into(),
        "none".into(),
        "--kernel".into(),
        bzimage.to_string_lossy().into_owned(),
        "--initramfs".into(),
        initramfs.to_string_lossy().into_owned(),
    ])
}
