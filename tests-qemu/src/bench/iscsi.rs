//! The iSCSI case of `cargo xtask bench`: time from network up to the LUN's block device,
//! stage0's initiator against open-iscsi's `iscsistart`, on the same VM setup.
//!
//! Every boot is the lab's Terra initramfs on the lab's kernel, a NIC on QEMU user networking
//! with a static `ip=` and `rd.neednet=1` (so stage0 brings the network up), and
//! `terra.modules=` loading iscsi_tcp, sd_mod and crc32c_generic before the switch. The root
//! (a local btrfs disk) runs `init=/bin/bench-iscsi` (src/bin/bench-iscsi.rs) as PID 1, which
//! times one initiator from its start to an iSCSI `sd` disk of nonzero size in sysfs and
//! prints a marker line. A fresh tgtd on the host's 127.0.0.1 (the guest's 10.0.2.2) serves
//! the same blank 64 MiB LUN to each boot, so every login meets the same target state.
//!
//! `iscsistart` is not installed on the host (open-iscsi's postinst starts daemons and
//! pulls in udev rules): `apt-get download` fetches open-iscsi, libopeniscsiusr and libisns0 into
//! target/lab/iscsistart, `dpkg -x` unpacks them, and `ldd` gives the shared-library closure
//! that goes into the bench root with the dynamic loader. When that fails the iscsistart
//! side is skipped and the report says what is missing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::bench::{max, median, min};
use crate::build::Artifacts;
use crate::disk::BtrfsDisk;
use crate::tgtd::{Tgtd, GUEST_HOST_ADDR};
use crate::vm::{Accel, Vm};
use crate::{lab_dir, run};

/// The marker the guest prints.
pub const MARKER: &str = "TERRA-BENCH-ISCSI";
/// The target tgtd serves the LUN under.
pub const IQN: &str = "iqn.2024-01.org.terra-os:bench-lun";
/// UUID of the iSCSI bench root disk (not the boot bench's: the two images differ).
const ROOT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000015c5";
/// The cache kind prefix of the root disk image.
const ROOT_KIND: &str = "bench-iscsi";
/// LUN size.
const LUN_MB: u64 = 64;
/// Bound on one boot.
const BOOT_LIMIT: Duration = Duration::from_secs(240);
/// Extra kernel arguments for every boot, for looking into a run by hand (e.g.
/// `bench.debug loglevel=7`: iscsistart's output and the kernel's SCSI messages).
pub const APPEND_ENV: &str = "TERRA_BENCH_ISCSI_APPEND";
/// The packages unpacked for open-iscsi's tools: iscsistart needs the first two; iscsiadm and
/// iscsid (the netboot case's dracut image) also link libisns.
pub const OPEN_ISCSI_DEBS: [&str; 3] = ["open-iscsi", "libopeniscsiusr", "libisns0"];
/// Bound on `apt-get download`.
const APT_LIMIT: &str = "180";
/// What the guest's network and modules need from stage0.
const NET_ARGS: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off rd.neednet=1 \
                        terra.modules=iscsi_tcp,sd_mod,crc32c_generic";
/// Root and console: kernel messages at warning and above only, so neither initiator pays
/// for the serial console printing the SCSI scan (at 115200 baud a line costs milliseconds).
const ROOT_ARGS: &str = "root=LABEL=os rootflags=subvol=os rootfstype=btrfs loglevel=4 \
                         init=/bin/bench-iscsi";

/// One initiator under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// stage0's code (login, kernel handoff, scan), in the root's init.
    Stage0,
    /// open-iscsi's `iscsistart`, spawned and waited for.
    Iscsistart,
}

impl Initiator {
    /// The `bench.initiator=` value.
    pub fn name(self) -> &'static str {
        match self {
            Initiator::Stage0 => "stage0",
            Initiator::Iscsistart => "iscsistart",
        }
    }
}

/// What the guest's marker line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// `initiator=`.
    pub initiator: String,
    /// `ms=`: the root's init start → the disk, ms.
    pub ms: f64,
    /// `device=`.
    pub device: String,
    /// Every other `key=value` (`login_ms`, `handoff_ms`, `scan_ms`, `session_ms`,
    /// `exit_ms`).
    pub extra: BTreeMap<String, String>,
}

impl Marker {
    /// A numeric extra field.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.extra.get(key)?.parse().ok()
    }
}

/// The guest's marker line in a console log: `Some(Ok)` for a measurement, `Some(Err)` for
/// the error it reported, None when there is none.
pub fn parse_marker(log: &str) -> Option<Result<Marker, String>> {
    let rest = log
        .lines()
        .find_map(|l| l.split_once(MARKER).map(|(_, r)| r.trim()))?;
    if let Some((_, e)) = rest.split_once(" error=") {
        return Some(Err(e.trim().to_string()));
    }
    let mut fields: BTreeMap<String, String> = rest
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let initiator = fields.remove("initiator");
    let ms = fields.remove("ms").and_then(|v| v.parse::<f64>().ok());
    let device = fields.remove("device");
    Some(match (initiator, ms, device) {
        (Some(initiator), Some(ms), Some(device)) => Ok(Marker {
            initiator,
            ms,
            device,
            extra: fields,
        }),
        _ => Err(format!("incomplete marker line: {MARKER} {rest}")),
    })
}

/// iscsistart unpacked from Debian's packages, with what it needs to run in the root.
#[derive(Debug, Clone)]
pub struct IscsistartDist {
    /// The binary.
    pub binary: PathBuf,
    /// Files for the root: (absolute path in the root, host file).
    pub libs: Vec<(PathBuf, PathBuf)>,
    /// open-iscsi's package version.
    pub version: String,
    /// Where [`OPEN_ISCSI_DEBS`] are unpacked (`dpkg -x`): a tree laid out like
    /// the host's.
    pub tree: PathBuf,
}

/// Fetches (once) and unpacks [`OPEN_ISCSI_DEBS`] into target/lab/iscsistart;
/// the error says precisely what is missing.
pub fn fetch_iscsistart() -> crate::Result<IscsistartDist> {
    for (tool, pkg) in [
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("ldd", "libc-bin"),
        ("timeout", "coreutils"),
    ] {
        if crate::host::which(tool).is_none() {
            return Err(format!(
                "{tool} is missing (package {pkg}): cannot fetch open-iscsi's iscsistart"
            ));
        }
    }
    let dir = lab_dir().join("iscsistart");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let debs = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "deb"));
        v.sort();
        v
    };
    let have = |prefix: &str| {
        debs(&dir).iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
    };
    if OPEN_ISCSI_DEBS.iter().any(|pkg| !have(&format!("{pkg}_"))) {
        run(Command::new("timeout")
            .args([APT_LIMIT, "apt-get", "download"])
            .args(OPEN_ISCSI_DEBS)
            .current_dir(&dir))
        .map_err(|e| {
            format!(
                "`apt-get download {}` failed, so there is no open-iscsi to compare with: {e}",
                OPEN_ISCSI_DEBS.join(" ")
            )
        })?;
    }
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    let mut version = String::new();
    for deb in debs(&dir) {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        let name = deb.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("open-iscsi_")) {
            version = run(Command::new("dpkg-deb")
                .args(["-f"])
                .arg(&deb)
                .arg("Version"))?
            .trim()
            .to_string();
        }
    }
    let binary = root.join("sbin/iscsistart");
    if !binary.is_file() {
        return Err(format!(
            "open-iscsi's package has no sbin/iscsistart (unpacked in {})",
            root.display()
        ));
    }
    let lib_dirs = [
        root.join("usr/lib/x86_64-linux-gnu"),
        root.join("lib/x86_64-linux-gnu"),
    ];
    let ld_path = std::env::join_paths(&lib_dirs).map_err(|e| e.to_string())?;
    let out = run(Command::new("ldd")
        .arg(&binary)
        .env("LD_LIBRARY_PATH", ld_path))?;
    let libs = crate::elf::parse_ldd(&out).map_err(|e| format!("iscsistart needs {e}"))?;
    Ok(IscsistartDist {
        binary,
        libs,
        version,
        tree: root,
    })
}

/// A short content hash, so the cached root image changes with what goes into it.
fn content_hash(files: &[&Path]) -> crate::Result<String> {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    Ok(h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The bench root: label `os`, subvolume `os`, `/bin/bench-iscsi`, and (when available)
/// `/sbin/iscsistart` with its libraries and loader. Stale images of earlier contents are
/// removed.
pub fn bench_root(init: &Path, dist: Option<&IscsistartDist>) -> crate::Result<PathBuf> {
    let mut files: Vec<&Path> = vec![init];
    if let Some(d) = dist {
        files.push(&d.binary);
        files.extend(d.libs.iter().map(|(_, src)| src.as_path()));
    }
    let kind = format!("{ROOT_KIND}-{}", content_hash(&files)?);
    let disks = lab_dir().join("disks");
    if let Ok(entries) = fs::read_dir(&disks) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.contains(ROOT_UUID) && n.contains(ROOT_KIND) && !n.contains(&kind) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    BtrfsDisk::new("os", ROOT_UUID, &["os"]).image_with(&kind, |dir, _| {
        let e = |p: &Path, err: std::io::Error| format!("{}: {err}", p.display());
        for d in [
            "bin",
            "sbin",
            "etc/iscsi",
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "var/lib/iscsi",
        ] {
            fs::create_dir_all(dir.join(d)).map_err(|err| e(&dir.join(d), err))?;
        }
        let copy = |src: &Path, rel: &Path| -> crate::Result<()> {
            let dst = dir.join(rel.strip_prefix("/").unwrap_or(rel));
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(|err| e(parent, err))?;
            }
            // fs::copy follows symlinks: the root gets the library itself.
            fs::copy(src, &dst)
                .map(drop)
                .map_err(|err| format!("{} -> {}: {err}", src.display(), dst.display()))
        };
        copy(init, Path::new("bin/bench-iscsi"))?;
        if let Some(d) = dist {
            copy(&d.binary, Path::new("sbin/iscsistart"))?;
            for (rel, src) in &d.libs {
                copy(src, rel)?;
            }
        }
        fs::write(
            dir.join("etc/os-release"),
            "NAME=\"Terra iSCSI bench\"\nID=terra-bench\n",
        )
        .map_err(|err| e(&dir.join("etc/os-release"), err))
    })
}

/// The marker's sub-steps in the order they happen.
const STEP_ORDER: [&str; 5] = ["login_ms", "handoff_ms", "scan_ms", "session_ms", "exit_ms"];

/// Per-initiator measurements.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// The root's init start → the disk, ms, per boot.
    pub ms: Vec<f64>,
    /// Sub-steps, ms from the same start (stage0: login_ms, handoff_ms, scan_ms;
    /// iscsistart: session_ms, exit_ms), per boot.
    pub steps: BTreeMap<String, Vec<f64>>,
    /// Boots without a measurement, with why.
    pub failures: Vec<String>,
}

/// Results of the iSCSI case.
#[derive(Debug, Clone)]
pub struct IscsiResult {
    /// Accelerator of the boots.
    pub accel: Accel,
    /// The kernel release.
    pub kver: String,
    /// Boots per initiator.
    pub runs: usize,
    /// stage0's initiator.
    pub stage0: Side,
    /// iscsistart: its measurements and open-iscsi's version, or why it was skipped.
    pub iscsistart: Result<(Side, String), String>,
}

fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!("{:.1} ({:.1}–{:.1})", median(v), min(v), max(v))
}

impl IscsiResult {
    /// stage0's median over iscsistart's; NaN when either is missing.
    pub fn ratio(&self) -> f64 {
        match &self.iscsistart {
            Ok((s, _)) => median(&self.stage0.ms) / median(&s.ms),
            Err(_) => f64::NAN,
        }
    }

    /// The markdown section for results.md.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "\n## iSCSI: network up → the LUN's block device (same kernel, same tgtd setup)\n\n",
        );
        s.push_str(&format!(
            "Terra initramfs, kernel {}, static `ip=` on virtio-net (QEMU user networking), \
             iscsi_tcp/sd_mod/crc32c loaded by stage0; the root's init (PID 1) times one \
             initiator from its start to an iSCSI `sd` disk of nonzero size in sysfs (1 ms \
             poll), logging in to a fresh tgtd per boot on the host (10.0.2.2, LUN 1 = {LUN_MB} \
             MiB blank). {} boots per initiator, alternating, under {:?}{}; guest ms.\n\n",
            self.kver,
            self.runs,
            self.accel,
            if self.accel == Accel::Tcg {
                " (emulated: absolute times are inflated for both)"
            } else {
                ""
            }
        ));
        s.push_str("| initiator | network up → disk, median (min–max) ms | × iscsistart | failed boots |\n");
        s.push_str("|---|---|---|---|\n");
        let ratio = self.ratio();
        s.push_str(&format!(
            "| stage0 (login, netlink handoff, scan; in-process) | {} | {} | {} |\n",
            summary(&self.stage0.ms),
            if ratio.is_finite() {
                format!("{ratio:.2}×")
            } else {
                "–".into()
            },
            self.stage0.failures.len()
        ));
        match &self.iscsistart {
            Ok((side, version)) => s.push_str(&format!(
                "| open-iscsi `iscsistart` {version} (spawned, waited for) | {} | 1.00× | {} |\n",
                summary(&side.ms),
                side.failures.len()
            )),
            Err(_) => s.push_str("| open-iscsi `iscsistart` | not measured (below) | – | – |\n"),
        }
        let steps = |side: &Side| {
            let mut v: Vec<(&String, &Vec<f64>)> = side.steps.iter().collect();
            v.sort_by_key(|(k, _)| STEP_ORDER.iter().position(|o| o == k));
            v.iter()
                .map(|(k, v)| format!("{} {:.1}", k.trim_end_matches("_ms"), median(v)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "\nSteps, median ms from the same start (handoff: the kernel has stage0's session; \
             session: iscsistart's session first seen in sysfs): stage0 {}",
            steps(&self.stage0)
        ));
        if let Ok((side, _)) = &self.iscsistart {
            s.push_str(&format!("; iscsistart {}", steps(side)));
        }
        s.push_str(".\n");
        match &self.iscsistart {
            Err(e) => s.push_str(&format!(
                "\niscsistart was not measured:\n\n```\n{}\n```\n",
                e.trim_end()
            )),
            Ok((_, version)) if version.starts_with("2.1.8") => s.push_str(
                "\nWhere iscsistart's time goes (strace of 2.1.8 in this VM): the process forks \
                 its event-loop child, then the parent sleeps a fixed 1 s before asking it over \
                 IPC to log in; the rest is dynamic loading, the login, the kernel session and \
                 the scan.\n",
            ),
            Ok(_) => {}
        }
        let failures: Vec<&String> = self
            .stage0
            .failures
            .iter()
            .chain(self.iscsistart.iter().flat_map(|(s, _)| s.failures.iter()))
            .collect();
        if !failures.is_empty() {
            s.push('\n');
        }
        for f in failures {
            s.push_str(&format!("- failed: {f}\n"));
        }
        s
    }

    /// The `iscsi` object of results.json.
    pub fn to_json(&self) -> serde_json::Value {
        let side = |s: &Side| {
            serde_json::json!({
                "runs_ms": s.ms,
                "median_ms": median(&s.ms),
                "min_ms": min(&s.ms),
                "max_ms": max(&s.ms),
                "steps_ms": s.steps,
                "failures": s.failures,
            })
        };
        serde_json::json!({
            "accel": format!("{:?}", self.accel),
            "kernel": self.kver,
            "runs": self.runs,
            "stage0": side(&self.stage0),
            "iscsistart": match &self.iscsistart {
                Ok((s, version)) => {
                    let mut j = side(s);
                    j["version"] = serde_json::json!(version);
                    j
                }
                Err(e) => serde_json::json!({ "error": e }),
            },
            "ratio_stage0_over_iscsistart": self.ratio(),
        })
    }
}

/// Why a boot gave no measurement, and its console log (with tgtd's log when useful).
struct BootFailure {
    why: String,
    log: String,
}

impl From<String> for BootFailure {
    fn from(why: String) -> Self {
        BootFailure {
            why,
            log: String::new(),
        }
    }
}

/// One boot timing `who`: a fresh tgtd serving `lun`, the VM, the marker.
fn one_boot(
    a: &Artifacts,
    accel: Accel,
    root: &Path,
    lun: &Path,
    who: Initiator,
) -> Result<(Marker, String), BootFailure> {
    let mut tgtd = Tgtd::start()?;
    tgtd.target(1, IQN, lun)?;
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel);
    vm.disks = vec![root.to_path_buf()];
    vm.nic = Some("virtio".into());
    vm.timeout = BOOT_LIMIT;
    vm.append = format!(
        "{ROOT_ARGS} {NET_ARGS} bench.initiator={} bench.portal={GUEST_HOST_ADDR}:{} \
         bench.iqn={IQN} {}",
        who.name(),
        tgtd.port,
        std::env::var(APPEND_ENV).unwrap_or_default()
    );
    let out = vm.run_captured()?;
    let log = format!(
        "{}\n--- tgtd log\n{}",
        out.log,
        if out.log.contains(MARKER) {
            String::new()
        } else {
            tgtd.log_text()
        }
    );
    let why = match parse_marker(&out.log) {
        Some(Ok(m)) if m.initiator == who.name() => return Ok((m, log)),
        Some(Ok(m)) => format!(
            "the guest measured {} instead of {}",
            m.initiator,
            who.name()
        ),
        Some(Err(e)) => e,
        None => format!(
            "no {MARKER} line (VM {} after {:.0} s)",
            if out.exited { "ended" } else { "timed out" },
            out.elapsed.as_secs_f64()
        ),
    };
    Err(BootFailure { why, log })
}

/// Runs the iSCSI case: `runs` boots per initiator, alternating; failed boots are counted.
/// Console logs are kept in `out_dir`: `iscsi-<initiator>-<n>.log`, and
/// `failed-iscsi-<initiator>-<n>.log` for failed boots. Fails only when nothing can be booted at all.
pub fn run_iscsi(
    a: &Artifacts,
    accel: Accel,
    runs: usize,
    out_dir: &Path,
) -> crate::Result<IscsiResult> {
    if !crate::host::nix_is_root() {
        return Err("the iSCSI bench makes a btrfs root (loop mount): run it as root".into());
    }
    let init = crate::build::bench_iscsi()?;
    let dist = fetch_iscsistart();
    if let Err(e) = &dist {
        eprintln!("bench: iscsistart is not available, only stage0 is measured: {e}");
    }
    let root = bench_root(&init, dist.as_ref().ok())?;
    let lun = crate::disk::blank("bench-iscsi-lun", LUN_MB)?;
    let mut r = IscsiResult {
        accel,
        kver: a.kver.clone(),
        runs,
        stage0: Side::default(),
        iscsistart: dist.map(|d| (Side::default(), d.version)),
    };
    for n in 0..runs {
        for who in [Initiator::Stage0, Initiator::Iscsistart] {
            let side = match who {
                Initiator::Stage0 => &mut r.stage0,
                Initiator::Iscsistart => match &mut r.iscsistart {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            match one_boot(a, accel, &root, &lun, who) {
                Ok((m, log)) => {
                    let _ = fs::write(out_dir.join(format!("iscsi-{}-{n}.log", who.name())), log);
                    eprintln!(
                        "bench: iscsi boot {}: {} {:.1} ms to /dev/{} {:?}",
                        n + 1,
                        who.name(),
                        m.ms,
                        m.device,
                        m.extra
                    );
                    side.ms.push(m.ms);
                    for k in m.extra.keys() {
                        if let Some(v) = m.get(k) {
                            side.steps.entry(k.clone()).or_default().push(v);
                        }
                    }
                }
                Err(BootFailure { why, log }) => {
                    let path = out_dir.join(format!("failed-iscsi-{}-{n}.log", who.name()));
                    let _ = fs::write(&path, log);
                    eprintln!(
                        "bench: iscsi boot {} of {} failed: {why}; log in {}",
                        n + 1,
                        who.name(),
                        path.display()
                    );
                    side.failures.push(format!(
                        "{} boot {}: {why} (log: {})",
                        who.name(),
                        n + 1,
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lines_are_parsed() {
        let log = "[    2.1] random\n\
                   TERRA-BENCH-ISCSI initiator=stage0 ms=12.3 device=sda login_ms=4.5 scan_ms=9\n";
        let m = parse_marker(log).unwrap().unwrap();
        assert_eq!(m.initiator, "stage0");
        assert_eq!(m.ms, 12.3);
        assert_eq!(m.device, "sda");
        assert_eq!(m.get("login_ms"), Some(4.5));
        assert_eq!(m.get("scan_ms"), Some(9.0));
        assert_eq!(m.extra.len(), 2);

        let err = parse_marker(
            "xTERRA-BENCH-ISCSI initiator=iscsistart error=/sbin/iscsistart failed (exit status: 7): x=y\n",
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(err, "/sbin/iscsistart failed (exit status: 7): x=y");
        assert!(
            parse_marker("TERRA-BENCH-ISCSI initiator=stage0 device=sda\n")
                .unwrap()
                .is_err()
        );
        assert!(parse_marker("no marker here\n").is_none());
    }

    #[test]
    fn the_report_has_the_ratio_or_says_why_not() {
        let side = |ms: &[f64]| Side {
            ms: ms.to_vec(),
            ..Default::default()
        };
        let mut r = IscsiResult {
            accel: Accel::Tcg,
            kver: "6.1.0".into(),
            runs: 3,
            stage0: side(&[100.0, 150.0, 120.0]),
            iscsistart: Ok((side(&[1400.0, 1500.0, 1200.0]), "2.1.8-1".into())),
        };
        assert!((r.ratio() - 0.12 / 1.4 * 1.0).abs() < 1e-9);
        let md = r.render();
        assert!(md.contains("| 120.0 (100.0–150.0) | 0.09× | 0 |"), "{md}");
        assert!(md.contains("`iscsistart` 2.1.8-1"), "{md}");
        assert_eq!(r.to_json()["iscsistart"]["median_ms"], 1400.0);
        r.iscsistart = Err("apt-get download failed:\nE: no".into());
        let md = r.render();
        assert!(md.contains("not measured (below)"), "{md}");
        assert!(
            md.contains("```\napt-get download failed:\nE: no\n```"),
            "{md}"
        );
        assert!(r.ratio().is_nan());
        assert!(r.to_json()["iscsistart"]["error"].is_string());
    }
}
