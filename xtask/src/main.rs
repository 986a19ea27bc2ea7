//! `cargo xtask qemu | test`: the developer's and CI's entry points.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use lab::build::{self, Artifacts};
use lab::disk::BtrfsDisk;
use lab::vm::{self, Accel, Vm};

const USAGE: &str = "usage:
  cargo xtask qemu [--check] [--append ARGS] [--accel tcg|kvm] [--kernel K] [--initramfs I]
                   [--disk D]... [--timeout SECS] [--smp N] [--nic virtio|e1000|none]
      Builds stage0, an initramfs and a demo btrfs root (label `os`, subvolume `os`) and boots
      them with the serial console on this terminal. --check boots without interaction and
      exits 0 only when the root's init ran (so not when a phase such as network failed),
      printing the boot times. --nic (default virtio) attaches a NIC on QEMU user networking:
      `--append ip=dhcp` then runs the network phase.
  cargo xtask test
      Unit tests, then the QEMU boot scenarios (tests-qemu).
  cargo xtask bench [--boots N] [--gen-runs N] [--accel tcg|kvm]
      terra vs mkinitramfs vs dracut: generation time, image size, boot time to the root's
      init on the same kernel and disk. Results in target/bench/results.{md,json}.";

/// UUID of the demo disk, pinned so `root=UUID=` can be tried by hand.
pub const DEMO_UUID: &str = "7e44a1a0-5ca1-4e00-9000-00000000d001";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("qemu") => qemu(args.collect()),
        Some("test") => test(),
        Some("bench") => bench(args.collect()),
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
    let disks = if q.disks.is_empty() {
        let busybox = lab::host::static_busybox()
            .ok_or("no static busybox (apt-get install busybox-static)")?;
        vec![BtrfsDisk::new("os", DEMO_UUID, &["os"]).image(&busybox)?]
    } else {
        q.disks.clone()
    };
    let accel = q.accel.unwrap_or_else(|| vm::detect_accel(&kernel));
    let mut vm = Vm::new(&kernel, &initramfs, accel);
    vm.disks = disks;
    vm.smp = q.smp;
    vm.nic = q.nic.clone();
    vm.append = q.append.join(" ");
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

fn test() -> Result<bool, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = |c: &mut Command| {
        c.current_dir(lab::workspace())
            .status()
            .map(|s| s.success())
            .map_err(|e| e.to_string())
    };
    eprintln!("xtask: unit tests");
    if !status(Command::new(&cargo).args(["test", "--workspace", "--exclude", "tests-qemu"]))? {
        return Ok(false);
    }
    eprintln!("xtask: host tools and artifacts");
    build::artifacts()?;
    eprintln!("xtask: QEMU boot scenarios");
    status(Command::new(&cargo).args(["test", "-p", "tests-qemu", "--", "--test-threads=2"]))
}

fn bench(args: Vec<String>) -> Result<bool, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut opts = lab::bench::Options {
        gen_runs: 3,
        boots: 3,
        accel: Accel::Tcg,
    };
    let mut accel = None;
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
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    opts.accel = match accel {
        Some(a) => a,
        None => {
            let (kernel, _) = lab::host::find_kernel().ok_or("no kernel under /boot")?;
            vm::detect_accel(&kernel)
        }
    };
    let md = lab::bench::run_all(&opts)?;
    println!("{md}");
    Ok(true)
}
