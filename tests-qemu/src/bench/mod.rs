//! `cargo xtask bench`: Terra side by side with initramfs-tools and dracut, in one run, on the
//! same kernel, the same QEMU setup and the same btrfs root disk. Numbers, not pass/fail.

pub mod dhcp;
pub mod iscsi;
pub mod keeper;
pub mod kexec;
pub mod netboot;
pub mod unpack;
pub mod upgrade;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::build::{self, Initramfs};
use crate::disk::BtrfsDisk;
use crate::vm::{Accel, Vm};
use crate::{lab_dir, run};

/// UUID of the benchmark disk.
const BENCH_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000be";

/// One initramfs generator under test.
#[derive(Debug, Clone)]
pub struct Generator {
    /// Row name.
    pub name: &'static str,
    /// Whether its image is booted (a host-only image is for this host's hardware).
    pub boot: bool,
}

/// Writes an image to the given path; returns the wall time taken, s.
type GenerateFn<'a> = Box<dyn Fn(&Path) -> crate::Result<f64> + 'a>;

/// Measurements of one generator.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Generator name.
    pub name: String,
    /// Median generation wall time, s.
    pub gen_s: f64,
    /// Image size, bytes.
    pub size: u64,
    /// Unpacked size (sum of the file sizes in the image), bytes.
    pub unpacked: u64,
    /// Guest uptime at the root's init, s, per boot.
    pub init_at: Vec<f64>,
    /// Time between the kernel running /init and the root's init, s, per boot.
    pub in_initramfs: Vec<f64>,
    /// Boots that did not reach the root's init.
    pub failed_boots: usize,
    /// stage0's peak RSS as it logged it before exec, kB (Terra only).
    pub peak_rss_kb: Option<u64>,
}

/// The peak RSS stage0 logs on its exec line.
fn stage0_peak_rss(log: &str) -> Option<u64> {
    log.split("(peak RSS ")
        .nth(1)?
        .split(" kB")
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Generation runs per generator.
    pub gen_runs: usize,
    /// Boots per image.
    pub boots: usize,
    /// Accelerator.
    pub accel: Accel,
    /// Only the DHCP case (`--only dhcp`): no images, no boots.
    pub only_dhcp: bool,
    /// Only the OCI unpack case (`--only unpack`).
    pub only_unpack: bool,
    /// Runs of each DHCP client.
    pub dhcp_runs: usize,
    /// Only the iSCSI case (`--only iscsi`).
    pub only_iscsi: bool,
    /// Boots per iSCSI initiator.
    pub iscsi_runs: usize,
    /// Only the versions case (`--only upgrade`).
    pub only_upgrade: bool,
    /// Only the signature case (`--only verify`).
    pub only_verify: bool,
    /// Only the kexec case (`--only kexec`).
    pub only_kexec: bool,
    /// Only the session keeper case (`--only keeper`).
    pub only_keeper: bool,
    /// Only the diskless boot case (`--only netboot`; `boots` boots per image).
    pub only_netboot: bool,
}

/// Median; NaN for no values.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Smallest; NaN for no values.
pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

/// Largest; NaN for no values.
pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// Installs initramfs-tools and dracut-core when missing (apt, as root).
pub fn ensure_peers() -> crate::Result<()> {
    let mut missing = Vec::new();
    if crate::host::which("mkinitramfs").is_none() {
        missing.push("initramfs-tools");
    }
    if crate::host::which("dracut").is_none() {
        missing.push("dracut-core");
    }
    if missing.is_empty() {
        return Ok(());
    }
    crate::host::apt_install(&missing)
}

/// The benchmark root: label `os`, subvolume `os`, `/sbin/init` = bench-init, plus what
/// dracut's systemd switch-root wants (`/run`, `/tmp`, an os-release).
pub fn bench_disk(init: &Path) -> crate::Result<PathBuf> {
    BtrfsDisk::new("os", BENCH_UUID, &["os"]).image_with("bench-v1", |dir, _| {
        let e = |p: &Path, err: std::io::Error| format!("{}: {err}", p.display());
        for d in ["sbin", "etc", "dev", "proc", "sys", "run", "tmp"] {
            fs::create_dir_all(dir.join(d)).map_err(|err| e(&dir.join(d), err))?;
        }
        fs::copy(init, dir.join("sbin/init")).map_err(|err| e(init, err))?;
        fs::write(
            dir.join("etc/os-release"),
            "NAME=\"Terra bench\"\nID=terra-bench\n",
        )
        .map_err(|err| e(&dir.join("etc/os-release"), err))
    })
}

/// Wall time of one successful run of `cmd`, s.
pub(crate) fn timed(cmd: &mut Command) -> crate::Result<f64> {
    let start = Instant::now();
    run(cmd)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Sum of the sizes of the files an image unpacks to (unmkinitramfs handles early cpio
/// segments and every compressor the three generators use).
pub(crate) fn unpacked_size(image: &Path) -> crate::Result<u64> {
    let dir = crate::disk::tempdir("unpack")?;
    let result = run(Command::new("unmkinitramfs").arg(image).arg(&dir)).and_then(|_| {
        let out = run(Command::new("du")
            .args(["-sb", "--apparent-size"])
            .arg(&dir))?;
        out.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("du printed {out:?}"))
    });
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Seconds from a console log: the kernel's timestamp of "Run /init as init process" and the
/// root init's own uptime line.
pub(crate) fn boot_times(log: &str) -> Option<(f64, Option<f64>)> {
    let at_init: f64 = log
        .lines()
        .find_map(|l| l.split("TERRA-BENCH-INIT uptime=").nth(1))?
        .trim()
        .parse()
        .ok()?;
    let run_init = log
        .lines()
        .find(|l| l.contains("Run /init as init process"))
        .and_then(crate::vm::log_time);
    Some((at_init, run_init.map(|t| at_init - t)))
}

/// The lab guest's devices as a sysfs tree for `--host-sysfs`: one boot of the demo disk
/// whose root prints every modalias (`terra.demo=modaliases`).
fn guest_sysfs(
    a: &build::Artifacts,
    accel: crate::vm::Accel,
    out_dir: &Path,
) -> crate::Result<PathBuf> {
    let busybox = crate::host::static_busybox()
        .ok_or("no static busybox (apt-get install busybox-static)")?;
    let disk = crate::disk::BtrfsDisk::new("os", "7e44a1a0-5ca1-4e00-9000-0000000000b5", &["os"])
        .image(&busybox)?;
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel);
    vm.disks = vec![disk];
    vm.append = "terra.demo=poweroff terra.demo=modaliases".into();
    let out = vm.run_captured()?;
    let sysfs = out_dir.join("guest-sysfs");
    let _ = fs::remove_dir_all(&sysfs);
    let n = crate::vm::modaliases_to_sysfs(&out.log, &sysfs)?;
    if n == 0 {
        return Err("the lab guest printed no modaliases (terra.demo=modaliases)".into());
    }
    eprintln!("bench: the lab guest has {n} devices with a modalias");
    Ok(sysfs)
}

fn bench_dir() -> crate::Result<PathBuf> {
    let out_dir = lab_dir()
        .parent()
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    Ok(out_dir)
}

/// The DHCP case: its markdown section and its `dhcp` object for results.json.
fn dhcp_case(
    opts: &Options,
    stage0_size: Option<u64>,
) -> crate::Result<(String, serde_json::Value)> {
    let r = dhcp::run_dhcp(opts.dhcp_runs)?;
    Ok((r.render(stage0_size), r.to_json(stage0_size)))
}

/// `--only dhcp`: the DHCP case alone; writes target/bench/results.{json,md}.
fn run_dhcp_only(opts: &Options) -> crate::Result<String> {
    let out_dir = bench_dir()?;
    let stage0 = build::stage0()?;
    let stage0_size = fs::metadata(&stage0).map(|m| m.len()).ok();
    let (md, json) = dhcp_case(opts, stage0_size)?;
    fs::write(out_dir.join("results.md"), &md).map_err(|e| e.to_string())?;
    fs::write(
        out_dir.join("results.json"),
        serde_json::json!({ "stage0_bytes": stage0_size, "dhcp": json }).to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok(md)
}

/// The iSCSI case: its markdown section and its `iscsi` object for results.json. A failure
/// is reported in both, not returned.
fn iscsi_case(opts: &Options, a: &build::Artifacts, out_dir: &Path) -> (String, serde_json::Value) {
    match iscsi::run_iscsi(a, opts.accel, opts.iscsi_runs, out_dir) {
        Ok(r) => (r.render(), r.to_json()),
        Err(e) => {
            eprintln!("bench: the iSCSI case failed: {e}");
            (
                format!("\n## iSCSI: network up → the LUN's block device\n\nnot measured: {e}\n"),
                serde_json::json!({ "error": e }),
            )
        }
    }
}

/// `--only iscsi`: the iSCSI case alone; writes target/bench/results.{json,md}.
fn run_iscsi_only(opts: &Options) -> crate::Result<String> {
    let out_dir = bench_dir()?;
    let a = build::artifacts()?;
    let stage0_size = fs::metadata(&a.stage0).map(|m| m.len()).ok();
    let (md, json) = iscsi_case(opts, &a, &out_dir);
    fs::write(out_dir.join("results.md"), &md).map_err(|e| e.to_string())?;
    fs::write(
        out_dir.join("results.json"),
        serde_json::json!({ "stage0_bytes": stage0_size, "iscsi": json }).to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok(md)
}

/// The diskless boot case: its markdown section and its `netboot` object for results.json.
/// A failure is reported in both, not returned.
fn netboot_case(
    opts: &Options,
    a: &build::Artifacts,
    out_dir: &Path,
) -> (String, serde_json::Value) {
    match netboot::run_netboot(a, opts.accel, opts.boots.max(1), out_dir) {
        Ok(r) => (r.render(), r.to_json()),
        Err(e) => {
            eprintln!("bench: the netboot case failed: {e}");
            (
                format!("\n## Diskless boot over iSCSI: kernel start → the root's init\n\nnot measured: {e}\n"),
                serde_json::json!({ "error": e }),
            )
        }
    }
}

/// `--only netboot`: the diskless boot case alone; writes target/bench/results.{json,md}.
fn run_netboot_only(opts: &Options) -> crate::Result<String> {
    let out_dir = bench_dir()?;
    let a = build::artifacts()?;
    let stage0_size = fs::metadata(&a.stage0).map(|m| m.len()).ok();
    let (md, json) = netboot_case(opts, &a, &out_dir);
    fs::write(out_dir.join("results.md"), &md).map_err(|e| e.to_string())?;
    fs::write(
        out_dir.join("results.json"),
        serde_json::json!({ "stage0_bytes": stage0_size, "netboot": json }).to_string(),
    )
    .map_err(|e| e.to_string())?;
    Ok(md)
}

/// What `--verify-key` adds to a pull: the ignored benchmark test in
/// builder/tests/oci_signed.rs, built with the release profile (a registry on loopback).
fn verify_case() -> crate::Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run(Command::new(cargo).current_dir(crate::workspace()).args([
        "test",
        "--release",
        "-p",
        "terra-builder",
        "--test",
        "oci_signed",
        "--",
        "--ignored",
        "--nocapture",
        "--exact",
        "verify_benchmark",
    ]))?;
    let start = out
        .find("### Signature check")
        .ok_or_else(|| format!("no table in the benchmark's output:\n{out}"))?;
    let end = out[start..]
        .find("test verify_benchmark")
        .map_or(out.len(), |e| start + e);
    Ok(out[start..end].trim_end().to_string() + "\n")
}

/// The versions case as markdown; a failure is reported in place.
fn kexec_case(terra: &Path, boots: usize) -> String {
    kexec::run_kexec(terra, boots.max(1)).unwrap_or_else(|e| {
        format!("### Booting a version on its own kernel\n\nnot measured: {e}\n")
    })
}

fn upgrade_case(terra: &Path, boots: usize) -> String {
    match upgrade::run_upgrade(terra, 3, boots) {
        Ok(r) => r.render(),
        Err(e) => format!("### Upgrade\n\nnot measured: {e}\n"),
    }
}

/// Runs the whole benchmark; writes target/bench/results.{json,md} and returns the markdown.
pub fn run_all(opts: &Options) -> crate::Result<String> {
    if opts.only_dhcp {
        return run_dhcp_only(opts);
    }
    if opts.only_iscsi {
        return run_iscsi_only(opts);
    }
    if opts.only_netboot {
        return run_netboot_only(opts);
    }
    if opts.only_verify {
        let md = verify_case()?;
        fs::write(bench_dir()?.join("results-verify.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_kexec {
        let md = kexec_case(&build::terra()?, opts.boots);
        fs::write(bench_dir()?.join("results-kexec.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_keeper {
        let md = keeper::run_keeper(opts.boots.max(1)).unwrap_or_else(|e| {
            format!("### A diskless root through a target restart\n\nnot measured: {e}\n")
        });
        fs::write(bench_dir()?.join("results-keeper.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_upgrade {
        let md = upgrade_case(&build::terra()?, opts.boots);
        fs::write(bench_dir()?.join("results-upgrade.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_unpack {
        let md = unpack_case(&build::terra()?);
        fs::write(bench_dir()?.join("results-unpack.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    crate::host::ensure()?;
    ensure_peers()?;
    let a = build::artifacts()?;
    let init = build::bench_init()?;
    let disk = bench_disk(&init)?;
    let out_dir = bench_dir()?;
    let kver = a.kver.clone();
    let sysfs = guest_sysfs(&a, opts.accel, &out_dir)?;
    let baremetal = crate::workspace().join("initramfs/baremetal.modules");
    let terra_with = |extra: Vec<String>| -> GenerateFn {
        let (a, kver) = (&a, &kver);
        Box::new(move |out: &Path| {
            let start = Instant::now();
            Initramfs {
                extra: extra.clone(),
                ..Default::default()
            }
            .build(&a.terra, &a.stage0, kver, out)?;
            Ok(start.elapsed().as_secs_f64())
        })
    };
    let list = vec![
        "--modules-list".to_string(),
        baremetal.display().to_string(),
    ];
    let mut host = list.clone();
    host.extend(["--host-sysfs".to_string(), sysfs.display().to_string()]);

    let gens: Vec<(Generator, GenerateFn)> = vec![
        (
            Generator {
                name: "terra",
                boot: true,
            },
            terra_with(Vec::new()),
        ),
        (
            Generator {
                name: "terra, bare-metal set",
                boot: true,
            },
            terra_with(list),
        ),
        (
            Generator {
                name: "terra --host (bare-metal set, lab guest)",
                boot: true,
            },
            terra_with(host),
        ),
        (
            Generator {
                name: "mkinitramfs",
                boot: true,
            },
            Box::new(|out: &Path| timed(Command::new("mkinitramfs").arg("-o").arg(out).arg(&kver))),
        ),
        (
            Generator {
                name: "dracut --no-hostonly",
                boot: true,
            },
            Box::new(|out: &Path| {
                timed(
                    Command::new("dracut")
                        .args(["-q", "--force", "--no-hostonly", "--kver", &kver])
                        .arg(out),
                )
            }),
        ),
        (
            Generator {
                name: "dracut --hostonly",
                boot: false,
            },
            Box::new(|out: &Path| {
                timed(
                    Command::new("dracut")
                        .args(["-q", "--force", "--hostonly", "--kver", &kver])
                        .arg(out),
                )
            }),
        ),
    ];

    let mut rows = Vec::new();
    for (i, (g, generate)) in gens.iter().enumerate() {
        let image = out_dir.join(format!("image-{i}.img"));
        let mut times = Vec::new();
        for _ in 0..opts.gen_runs {
            times.push(generate(&image)?);
        }
        let mut row = Row {
            name: g.name.to_string(),
            gen_s: median(&times),
            size: fs::metadata(&image).map(|m| m.len()).unwrap_or(0),
            unpacked: unpacked_size(&image).unwrap_or(0),
            ..Default::default()
        };
        eprintln!(
            "bench: {} generated in {:.2} s (median of {}), {} bytes",
            g.name,
            row.gen_s,
            times.len(),
            row.size
        );
        if g.boot {
            for n in 0..opts.boots {
                let mut vm = Vm::new(&a.kernel, &image, opts.accel);
                vm.disks = vec![disk.clone()];
                vm.append = "root=LABEL=os rootflags=subvol=os rootfstype=btrfs".into();
                vm.timeout = Duration::from_secs(180);
                let out = vm.run_captured()?;
                match boot_times(&out.log) {
                    Some((at, inside)) => {
                        eprintln!("bench: {} boot {}: root init at {at:.2} s", g.name, n + 1);
                        row.init_at.push(at);
                        row.peak_rss_kb = row.peak_rss_kb.or(stage0_peak_rss(&out.log));
                        if let Some(t) = inside {
                            row.in_initramfs.push(t);
                        }
                    }
                    None => {
                        let log = out_dir.join(format!("failed-boot-{i}-{n}.log"));
                        let _ = fs::write(&log, &out.log);
                        eprintln!(
                            "bench: {} boot {} did not reach the root's init; log in {}",
                            g.name,
                            n + 1,
                            log.display()
                        );
                        row.failed_boots += 1;
                    }
                }
            }
        }
        rows.push(row);
    }
    let stage0_size = fs::metadata(&a.stage0).map(|m| m.len()).unwrap_or(0);
    let mut md = render(&rows, stage0_size, opts);
    let mut json = to_json(&rows, stage0_size, opts);
    // After the image rows: a DHCP failure (no dnsmasq, say) is reported, not fatal to them.
    let dhcp = match dhcp_case(opts, Some(stage0_size)) {
        Ok((dmd, djson)) => {
            md.push_str(&dmd);
            djson
        }
        Err(e) => {
            eprintln!("bench: the DHCP case failed: {e}");
            md.push_str(&format!(
                "\n## DHCP: time to a lease (links up, same dnsmasq)\n\nnot measured: {e}\n"
            ));
            serde_json::json!({ "error": e })
        }
    };
    json["dhcp"] = dhcp;
    let (imd, ijson) = iscsi_case(opts, &a, &out_dir);
    md.push_str(&imd);
    json["iscsi"] = ijson;
    let (nmd, njson) = netboot_case(opts, &a, &out_dir);
    md.push_str(&nmd);
    json["netboot"] = njson;
    md.push_str(&unpack_case(&a.terra));
    md.push('\n');
    md.push_str(&upgrade_case(&a.terra, opts.boots));
    md.push('\n');
    md.push_str(
        &verify_case().unwrap_or_else(|e| format!("### Signature check\n\nnot measured: {e}\n")),
    );
    fs::write(out_dir.join("results.md"), &md).map_err(|e| e.to_string())?;
    fs::write(out_dir.join("results.json"), json.to_string()).map_err(|e| e.to_string())?;
    Ok(md)
}

/// The OCI unpack case: terra vs umoci on a ~300 MiB, 3-layer image, and on the image
/// corpus's buildah-made image (small: more runs); failures are reported.
fn unpack_case(terra: &Path) -> String {
    let mut md = match unpack::unpack(terra, 300, 3) {
        Ok(md) => format!("\n{md}"),
        Err(e) => {
            eprintln!("bench: the unpack case failed: {e}");
            format!("\n### Unpack\n\nnot measured: {e}\n")
        }
    };
    let buildah = crate::host::static_busybox()
        .ok_or_else(|| "no static busybox (apt-get install busybox-static)".to_string())
        .and_then(|bb| unpack::unpack_buildah(terra, &bb, 10));
    match buildah {
        Ok(t) => md.push_str(&format!("\n{t}")),
        Err(e) => {
            eprintln!("bench: the buildah unpack case failed: {e}");
            md.push_str(&format!(
                "\n### Unpack: buildah image\n\nnot measured: {e}\n"
            ));
        }
    }
    md
}

fn ratio(v: f64, base: f64) -> String {
    if v.is_finite() && base.is_finite() && base > 0.0 {
        format!("{:.1}×", v / base)
    } else {
        "–".into()
    }
}

fn render(rows: &[Row], stage0_size: u64, opts: &Options) -> String {
    let base = rows.first().cloned().unwrap_or_default();
    let mb = |b: u64| b as f64 / 1e6;
    let mut s = format!(
        "Kernel start → root init, guest seconds under {:?}; {} boots per image; generation: median of {} runs.\n\n",
        opts.accel, opts.boots, opts.gen_runs
    );
    s.push_str("| generator | generate (s) | × terra | image (MB) | × terra | unpacked (MB) | root init at, median (min–max) s | × terra | in initramfs, median s | failed boots |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let booted = !r.init_at.is_empty();
        s.push_str(&format!(
            "| {} | {:.2} | {} | {:.2} | {} | {:.2} | {} | {} | {} | {} |\n",
            r.name,
            r.gen_s,
            ratio(r.gen_s, base.gen_s),
            mb(r.size),
            ratio(r.size as f64, base.size as f64),
            mb(r.unpacked),
            if booted {
                format!(
                    "{:.2} ({:.2}–{:.2})",
                    median(&r.init_at),
                    min(&r.init_at),
                    max(&r.init_at)
                )
            } else {
                "not booted".into()
            },
            if booted {
                ratio(median(&r.init_at), median(&base.init_at))
            } else {
                "–".into()
            },
            if r.in_initramfs.is_empty() {
                "–".into()
            } else {
                format!("{:.2}", median(&r.in_initramfs))
            },
            r.failed_boots,
        ));
    }
    s.push_str(&format!("\nstage0 binary: {stage0_size} bytes"));
    if let Some(kb) = base.peak_rss_kb {
        s.push_str(&format!("; stage0 peak RSS during boot: {kb} kB"));
    }
    s.push_str(".\n");
    s
}

fn to_json(rows: &[Row], stage0_size: u64, opts: &Options) -> serde_json::Value {
    serde_json::json!({
        "accel": format!("{:?}", opts.accel),
        "boots": opts.boots,
        "gen_runs": opts.gen_runs,
        "stage0_bytes": stage0_size,
        "rows": rows.iter().map(|r| serde_json::json!({
            "name": r.name,
            "generate_s": r.gen_s,
            "image_bytes": r.size,
            "unpacked_bytes": r.unpacked,
            "root_init_at_s": r.init_at,
            "in_initramfs_s": r.in_initramfs,
            "failed_boots": r.failed_boots,
            "peak_rss_kb": r.peak_rss_kb,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_times_come_from_the_console() {
        let log = "[    3.234908] Run /init as init process\n...\nTERRA-BENCH-INIT uptime=5.50\n";
        let (at, inside) = boot_times(log).unwrap();
        assert_eq!(at, 5.5);
        assert!((inside.unwrap() - 2.265092).abs() < 1e-9);
        assert!(boot_times("[ 1.0] Run /init as init process\n").is_none());
        assert_eq!(
            stage0_peak_rss(
                "stage0: exec /sbin/init after 1.0 ms in the initramfs (peak RSS 1234 kB)"
            ),
            Some(1234)
        );
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
