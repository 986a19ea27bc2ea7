//! `cargo xtask bench`: Terra side by side with initramfs-tools and dracut, in one run, on the
//! same kernel, the same QEMU setup and the same btrfs root disk. Numbers, not pass/fail.

pub mod create;
pub mod dhcp;
pub mod extensions;
pub mod generators;
pub mod iscsi;
pub mod keeper;
pub mod kexec;
pub mod netboot;
pub mod tentative;
pub mod unpack;
pub mod update;
pub mod upgrade;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::build;
use crate::disk::BtrfsDisk;
use crate::vm::Accel;
use crate::{lab_dir, run};

/// UUID of the benchmark disk.
const BENCH_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000be";

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
    /// Only the update case (`--only update`): what fetching an update costs.
    pub only_update: bool,
    /// Only the signature case (`--only verify`).
    pub only_verify: bool,
    /// Only the extensions case (`--only extensions`: root phase with 0, 1 and 5
    /// extensions, `boots` boots each; adding 50 MB as an extension vs an upgrade).
    pub only_extensions: bool,
    /// Only the image-making case (`--only create`: terra create vs buildah bud; `boots`
    /// builds each).
    pub only_create: bool,
    /// Only the kexec case (`--only kexec`).
    pub only_kexec: bool,
    /// Only the session keeper case (`--only keeper`).
    pub only_keeper: bool,
    /// Only the diskless boot case (`--only netboot`; `boots` boots per image).
    pub only_netboot: bool,
    /// Only the tentative boot case (`--only tentative`; also part of `--only update`).
    pub only_tentative: bool,
    /// Only the restart case (`--only restart`; also part of `--only update`): `terra
    /// apply --reboot` by kexec against a full reboot.
    pub only_restart: bool,
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
/// builder/tests/it/oci_signed.rs, built with the release profile (a registry on loopback).
fn verify_case() -> crate::Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run(Command::new(cargo).current_dir(crate::workspace()).args([
        "test",
        "--release",
        "-p",
        "terra-builder",
        "--test",
        "it",
        "--",
        "--ignored",
        "--nocapture",
        "--exact",
        "oci_signed::verify_benchmark",
    ]))?;
    let start = out
        .find("### Signature check")
        .ok_or_else(|| format!("no table in the benchmark's output:\n{out}"))?;
    let end = out[start..]
        .find("test oci_signed::verify_benchmark")
        .map_or(out.len(), |e| start + e);
    Ok(out[start..end].trim_end().to_string() + "\n")
}

/// The versions case as markdown; a failure is reported in place.
fn kexec_case(terra: &Path, boots: usize) -> String {
    kexec::run_kexec(terra, boots.max(1)).unwrap_or_else(|e| {
        format!("### Booting a version on its own kernel\n\nnot measured: {e}\n")
    })
}

/// The tentative boot case as markdown; a failure is reported in place.
fn tentative_case(terra: &Path, boots: usize) -> String {
    match tentative::run_tentative(terra, boots) {
        Ok(r) => r.render(),
        Err(e) => format!("### Tentative boot vs plain boot\n\nnot measured: {e}\n"),
    }
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
    if opts.only_extensions {
        let md = extensions::extensions_case(&build::terra()?, opts.boots)?;
        fs::write(bench_dir()?.join("results-extensions.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_create {
        let md = create::create_case(&build::terra()?, opts.boots)?;
        fs::write(bench_dir()?.join("results-create.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
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
    if opts.only_tentative {
        let md = tentative_case(&build::terra()?, opts.boots);
        fs::write(bench_dir()?.join("results-tentative.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_restart {
        let md = update::restart_case(opts.boots);
        fs::write(bench_dir()?.join("results-restart.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_upgrade {
        let md = upgrade_case(&build::terra()?, opts.boots);
        fs::write(bench_dir()?.join("results-upgrade.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_update {
        // What fetching an update costs, then what its tentative boot costs.
        let terra = build::terra()?;
        let mut md = update::run_update(&terra, opts.boots);
        md.push_str(&tentative_case(&terra, opts.boots));
        fs::write(bench_dir()?.join("results-update.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    if opts.only_unpack {
        let md = unpack_case(&build::terra()?);
        fs::write(bench_dir()?.join("results-unpack.md"), &md).map_err(|e| e.to_string())?;
        return Ok(md);
    }
    crate::host::ensure()?;
    generators::ensure_peers()?;
    let a = build::artifacts()?;
    let out_dir = bench_dir()?;
    let stage0_size = fs::metadata(&a.stage0).map(|m| m.len()).unwrap_or(0);
    let (mut md, mut json) = generators::run(opts, &a, &out_dir, stage0_size)?;
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
    // One restart of each kind: each is a Debian boot and more under TCG.
    md.push_str(&update::run_update(&a.terra, 1));
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
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
