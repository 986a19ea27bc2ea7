//! `cargo xtask bench --only netboot`: a diskless node's whole boot, from kernel start to the
//! root's init, over iSCSI from one tgtd LUN on a tap in a network namespace: Terra's image against
//! dracut's (`--no-hostonly`, modules `network iscsi`, open-iscsi's tools), same kernel,
//! same LUN, same command line.
//!
//! The LUN is a copy of the boot bench's root ([`crate::bench::bench_disk`]: btrfs label `os`,
//! subvolume `os`, whose `/sbin/init` prints `/proc/uptime` and powers off). The VM has no
//! disk, only a virtio NIC on a tap in a network namespace of the bench's own ([`Segment`]),
//! where dnsmasq hands out addresses and a fresh tgtd serves the LUN to every boot at
//! [`PORTAL`] (see there why not QEMU's user networking). Both images get the same keys,
//! which both understand: `ip=dhcp`, `rd.iscsi.initiator=`,
//! `netroot=iscsi:<portal>::<port>:1:<iqn>` and `root=LABEL=os rootflags=subvol=os
//! rootfstype=btrfs`. The host's own interfaces are never touched.
//!
//! dracut's network module is `network-legacy` (see [`dracut_image`] for why not
//! `systemd-networkd`). Its iscsi module wants `iscsi-iname`, `iscsiadm` and `iscsid` on the host. open-iscsi
//! is not installed for that (its postinst enables daemons and adds udev rules): the bench
//! reuses the packages the iSCSI case fetches with `apt-get download`
//! ([`crate::bench::iscsi::fetch_iscsistart`]) and runs dracut in a mount namespace of its own
//! (`unshare -m`) where read-only overlays put the unpacked tree over `/usr/sbin`, `/usr/lib`
//! and `/etc`. dracut then finds the tools, libraries, units and `iscsid.conf` where
//! open-iscsi would have put them; nothing changes outside the namespace. The helper that
//! Debian's `iscsid.service` runs first (`/lib/open-iscsi/startup-checks.sh`) is not among
//! what dracut's iscsi module installs; without it iscsid does not start in the initramfs,
//! so the bench adds what the unit runs with `--install`. When any of that fails, dracut's side is not run and the
//! report says why.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bench::{boot_times, max, median, min, unpacked_size};
use crate::build::Artifacts;
use crate::netns::{Dnsmasq, Netns};
use crate::run;
use crate::tgtd::{Lun, Tgtd};
use crate::vm::{Accel, Tap, Vm};

/// The target tgtd serves the root under.
pub const IQN: &str = "iqn.2024-01.org.terra-os:bench-netboot";
/// The initiator name both images log in with.
pub const INITIATOR: &str = "iqn.2024-01.org.terra-os:bench-node";
/// Bound on one boot (dracut's takes about a minute under TCG).
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// Bound on generating dracut's image (about five minutes on a busy 2-core host).
const DRACUT_LIMIT: &str = "900";
/// Extra kernel arguments for every boot of both images, for looking into a run by hand.
pub const APPEND_ENV: &str = "TERRA_BENCH_NETBOOT_APPEND";

/// The kernel command line of every boot: only keys both images understand.
pub fn append(portal: &str, port: &str) -> String {
    format!(
        "ip=dhcp rd.iscsi.initiator={INITIATOR} \
         netroot=iscsi:{portal}::{port}:1:{IQN} \
         root=LABEL=os rootflags=subvol=os rootfstype=btrfs"
    )
}

/// The namespace side of the tap: DHCP server and iSCSI portal for the VM.
///
/// Not the lab's usual tgtd on 127.0.0.1 behind QEMU's user networking (the guest's
/// 10.0.2.2): dracut's `iscsiroot` first asks the portal for its targets (SendTargets) and
/// then logs in to the node record of the portal on its command line, and tgtd answers
/// discovery with the address it listens on, so a tgtd on 127.0.0.1 leaves records for
/// 127.0.0.1 and dracut's login finds "No records found". On the tap, tgtd listens on the
/// very address the guest reaches.
pub const PORTAL: &str = "10.78.0.1";

/// The bench's network: namespace `terra-netboot-<pid>-<n>` with tap `tap0` at
/// [`PORTAL`]/24 and dnsmasq serving 10.78.0.50–99 on it. dnsmasq is killed by PID before
/// the namespace (and the tap with it) is deleted, however the bench ends.
struct Segment {
    dnsmasq: Dnsmasq,
    ns: Netns,
}

impl Segment {
    fn new() -> crate::Result<Segment> {
        crate::netns::require()?;
        let ns = Netns::new("netboot")?;
        ns.add_tap("tap0", &format!("{PORTAL}/24"))?;
        let dnsmasq = Dnsmasq::start(&ns, "tap0", "10.78.0.50,10.78.0.99,255.255.255.0,1h", &[])?;
        Ok(Segment { dnsmasq, ns })
    }

    fn tap(&self) -> Tap {
        Tap {
            netns: self.ns.name().to_string(),
            ifname: "tap0".into(),
        }
    }
}

/// One image under test.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Row name.
    pub name: String,
    /// Console log file prefix.
    pub tag: &'static str,
    /// The image, or why there is none.
    pub image: Option<PathBuf>,
    /// Why the side was not run.
    pub skipped: Option<String>,
    /// Image size, bytes.
    pub size: u64,
    /// Unpacked size, bytes (0 when unknown).
    pub unpacked: u64,
    /// Guest uptime at the root's init, s, per boot.
    pub init_at: Vec<f64>,
    /// From the kernel running /init to the root's init, s, per boot.
    pub in_initramfs: Vec<f64>,
    /// Boots that did not reach the root's init, with why.
    pub failures: Vec<String>,
}

impl Side {
    fn new(name: &str, tag: &'static str, image: crate::Result<PathBuf>) -> Side {
        let mut s = Side {
            name: name.into(),
            tag,
            ..Default::default()
        };
        match image {
            Ok(p) => {
                s.size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                s.unpacked = unpacked_size(&p).unwrap_or(0);
                s.image = Some(p);
            }
            Err(e) => {
                eprintln!("bench: netboot: {name} is not measured: {e}");
                s.skipped = Some(e);
            }
        }
        s
    }
}

/// Results of the netboot case.
#[derive(Debug, Clone)]
pub struct NetbootResult {
    /// Accelerator of the boots.
    pub accel: Accel,
    /// The kernel release.
    pub kver: String,
    /// Boots per image.
    pub boots: usize,
    /// Terra's image, then dracut's.
    pub sides: Vec<Side>,
    /// dracut's network module, read from its image (`systemd-networkd`, `network-legacy`…).
    pub dracut_network: Option<String>,
    /// The portal's address ([`PORTAL`]).
    pub portal: String,
}

/// Installs dracut-core and dracut-network when missing (apt, as root; no recommends, so
/// not open-iscsi).
pub fn ensure_dracut_network() -> crate::Result<()> {
    let mut missing = Vec::new();
    if crate::host::which("dracut").is_none() {
        missing.push("dracut-core");
    }
    if !Path::new(DRACUT_MODULES).join("95iscsi").is_dir() {
        missing.push("dracut-network");
    }
    if missing.is_empty() {
        return Ok(());
    }
    crate::host::apt_install(&missing)
}

/// Where Debian's dracut keeps its modules.
const DRACUT_MODULES: &str = "/usr/lib/dracut/modules.d";

/// The overlays that show `tree` (an unpacked package) in place of the host's directories:
/// (host directory, the tree's directories over it, topmost first). Directories of the tree
/// that the host has under one name (`/sbin` is `/usr/sbin` on a merged-/usr host) share an
/// overlay. Whole top directories are covered because some of the package's directories
/// (`/etc/iscsi`, `/lib/open-iscsi`) do not exist on the host.
pub fn overlays(tree: &Path) -> crate::Result<Vec<(PathBuf, Vec<PathBuf>)>> {
    let mut by_host: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for rel in [
        "sbin", "usr/sbin", "bin", "usr/bin", "lib", "usr/lib", "etc",
    ] {
        let src = tree.join(rel);
        if !src.is_dir() {
            continue;
        }
        let host = Path::new("/").join(rel);
        let host = fs::canonicalize(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        by_host.entry(host).or_default().push(src);
    }
    for dirs in by_host.values() {
        // overlayfs options are split at ',' and lower directories at ':'.
        if let Some(bad) = dirs
            .iter()
            .find(|d| d.to_string_lossy().contains([',', ':']))
        {
            return Err(format!(
                "{}: a path with ',' or ':' cannot be an overlay layer",
                bad.display()
            ));
        }
    }
    Ok(by_host.into_iter().collect())
}

/// The shell script that mounts [`overlays`] and execs `dracut` with `args` (run under
/// `unshare -m`, whose mounts are private to it).
pub fn dracut_script(overlays: &[(PathBuf, Vec<PathBuf>)]) -> String {
    let mut s = String::from("set -e\n");
    for (host, layers) in overlays {
        let lower: Vec<String> = layers
            .iter()
            .map(|l| l.to_string_lossy().into_owned())
            .chain([host.to_string_lossy().into_owned()])
            .collect();
        s.push_str(&format!(
            "mount -t overlay terra-bench -o 'lowerdir={}' '{}'\n",
            lower.join(":"),
            host.display()
        ));
    }
    s.push_str("exec dracut \"$@\"\n");
    s
}

/// dracut's image: `--no-hostonly`, modules `network iscsi`, open-iscsi from `tree`.
///
/// The network module is `network-legacy` (dhclient and dracut's `ifup`). Left to itself,
/// dracut 059 picks `systemd-networkd` on a host that has it, and with that module nothing
/// runs the initqueue's `online` hooks, which is where the iscsi module logs in: the boot
/// waits at "Reached target network.target" until dracut's timeout.
fn dracut_image(kver: &str, tree: &Path, out: &Path) -> crate::Result<()> {
    check_libraries(tree)?;
    let script = dracut_script(&overlays(tree)?);
    let unit = tree.join("lib/systemd/system/iscsid.service");
    let helpers = fs::read_to_string(&unit)
        .map(|u| unit_helpers(&u, tree))
        .unwrap_or_default();
    let mut cmd = Command::new("timeout");
    cmd.args([DRACUT_LIMIT, "unshare", "-m", "sh", "-c", &script, "dracut"]);
    for h in &helpers {
        cmd.args(["--install", h]);
    }
    run(cmd
        .args([
            "-q",
            "--force",
            "--no-hostonly",
            "--add",
            "network-legacy network iscsi",
            "--omit",
            "systemd-networkd",
            "--kver",
            kver,
        ])
        .arg(out))?;
    // dracut leaves out a module whose check fails; say so instead of booting an image
    // that cannot log in.
    let listing = run(Command::new("lsinitrd").arg(out))?;
    let missing: Vec<&str> = DRACUT_ISCSI_TOOLS
        .into_iter()
        .chain(["iscsiroot"])
        .filter(|b| !listing.contains(&format!("sbin/{b}\n")))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "dracut's image lacks {} (its iscsi module was not installed); `lsinitrd {}`",
            missing.join(", "),
            out.display()
        ));
    }
    Ok(())
}

/// The programs a systemd unit's `Exec*=` lines run that `tree` holds (absolute paths),
/// other than open-iscsi's tools, which dracut's iscsi module installs itself.
pub fn unit_helpers(unit: &str, tree: &Path) -> Vec<String> {
    let mut v: Vec<String> = unit
        .lines()
        .filter_map(|l| {
            let (key, value) = l.trim().split_once('=')?;
            if !key.trim().starts_with("Exec") {
                return None;
            }
            // Prefixes such as `-` (failure ignored) or `@` come before the path.
            let prog = value.trim().trim_start_matches(['-', '@', ':', '+', '!']);
            let prog = prog.split_whitespace().next()?;
            let name = Path::new(prog).file_name()?.to_str()?;
            let ours = DRACUT_ISCSI_TOOLS.contains(&name);
            (prog.starts_with('/') && !ours && tree.join(&prog[1..]).is_file())
                .then(|| prog.to_string())
        })
        .collect();
    v.dedup();
    v
}

/// open-iscsi's tools that dracut's iscsi module installs.
const DRACUT_ISCSI_TOOLS: [&str; 3] = ["iscsiadm", "iscsid", "iscsi-iname"];

/// Fails unless every library of [`DRACUT_ISCSI_TOOLS`] is in `tree` or on the host:
/// dracut-install leaves out a library it cannot find without failing, and the image's
/// iscsiadm then dies at boot.
fn check_libraries(tree: &Path) -> crate::Result<()> {
    let dirs = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"].map(|d| tree.join(d));
    let path = std::env::join_paths(&dirs).map_err(|e| e.to_string())?;
    for tool in DRACUT_ISCSI_TOOLS {
        let out = run(Command::new("ldd")
            .arg(tree.join("sbin").join(tool))
            .env("LD_LIBRARY_PATH", &path))?;
        crate::elf::parse_ldd(&out).map_err(|e| format!("{tool} needs {e}"))?;
    }
    Ok(())
}

/// dracut's network module as `lsinitrd` names it among the image's modules.
fn dracut_network_module(image: &Path) -> Option<String> {
    let listing = run(Command::new("lsinitrd").arg(image)).ok()?;
    let modules = listing.split("dracut modules:").nth(1)?;
    modules
        .split_whitespace()
        .take_while(|w| !w.starts_with("==="))
        .find(|m| {
            [
                "systemd-networkd",
                "network-legacy",
                "network-manager",
                "connman",
            ]
            .contains(m)
        })
        .map(str::to_string)
}

/// One boot of `image` from a fresh tgtd serving `lun`: the console log.
fn one_boot(
    a: &Artifacts,
    accel: Accel,
    image: &Path,
    lun: &Path,
    net: &Segment,
) -> crate::Result<String> {
    let mut tgtd = Tgtd::start_in(&net.ns, PORTAL)?;
    tgtd.target(1, IQN, lun)?;
    let mut vm = Vm::new(&a.kernel, image, accel);
    vm.nic = Some("virtio".into());
    vm.tap = Some(net.tap());
    vm.timeout = BOOT_LIMIT;
    vm.append = format!(
        "{} {}",
        append(PORTAL, &tgtd.port.to_string()),
        std::env::var(APPEND_ENV).unwrap_or_default()
    );
    let out = vm.run_captured()?;
    if out.log.contains("TERRA-BENCH-INIT") {
        return Ok(out.log);
    }
    Err(format!(
        "no TERRA-BENCH-INIT line (VM {} after {:.0} s)\n{}\n--- tgtd log\n{}\n--- dnsmasq log\n{}",
        if out.exited { "ended" } else { "timed out" },
        out.elapsed.as_secs_f64(),
        out.log,
        tgtd.log_text(),
        net.dnsmasq.log()
    ))
}

/// Runs the netboot case: `boots` boots per image, alternating. Console logs go to
/// `out_dir` as `netboot-<side>-<n>.log` (`failed-netboot-…` when the root's init was not
/// reached). Fails only when nothing can be booted at all.
pub fn run_netboot(
    a: &Artifacts,
    accel: Accel,
    boots: usize,
    out_dir: &Path,
) -> crate::Result<NetbootResult> {
    if !crate::host::nix_is_root() {
        return Err("the netboot bench makes a btrfs root (loop mount): run it as root".into());
    }
    let init = crate::build::bench_init()?;
    let root = crate::bench::bench_disk(&init)?;
    let lun = Lun(crate::disk::scratch_copy(&root, "bench-netboot-lun.img")?);

    let terra = Side::new("terra", "terra", Ok(a.initramfs.clone()));
    let dracut_out = out_dir.join("netboot-dracut.img");
    let made = ensure_dracut_network()
        .and_then(|()| {
            crate::bench::iscsi::fetch_iscsistart().map_err(|e| format!("no open-iscsi: {e}"))
        })
        .and_then(|dist| {
            eprintln!("bench: netboot: generating dracut's image (network-legacy, iscsi)");
            dracut_image(&a.kver, &dist.tree, &dracut_out)
        })
        .map(|()| dracut_out.clone());
    let dracut = Side::new(
        "dracut --no-hostonly (network-legacy, iscsi)",
        "dracut",
        made,
    );
    let dracut_network = dracut.image.as_deref().and_then(dracut_network_module);
    let net = Segment::new()?;
    eprintln!(
        "bench: netboot: namespace {}, dnsmasq and tgtd on {PORTAL}",
        net.ns.name()
    );
    let mut r = NetbootResult {
        accel,
        kver: a.kver.clone(),
        boots,
        sides: vec![terra, dracut],
        dracut_network,
        portal: PORTAL.into(),
    };
    for n in 0..boots {
        for side in r.sides.iter_mut() {
            let Some(image) = side.image.clone() else {
                continue;
            };
            let outcome = one_boot(a, accel, &image, &lun.0, &net).and_then(|log| {
                boot_times(&log)
                    .map(|t| (t, log.clone()))
                    .ok_or_else(|| format!("no uptime on the TERRA-BENCH-INIT line\n{log}"))
            });
            match outcome {
                Ok(((at, inside), log)) => {
                    let _ = fs::write(out_dir.join(format!("netboot-{}-{n}.log", side.tag)), log);
                    eprintln!(
                        "bench: netboot boot {}: {} root init at {at:.2} s",
                        n + 1,
                        side.name
                    );
                    side.init_at.push(at);
                    if let Some(t) = inside {
                        side.in_initramfs.push(t);
                    }
                }
                Err(e) => {
                    let path = out_dir.join(format!("failed-netboot-{}-{n}.log", side.tag));
                    let (why, log) = e.split_once('\n').unwrap_or((&e, ""));
                    let _ = fs::write(&path, log);
                    eprintln!(
                        "bench: netboot boot {} of {} failed: {why}; log in {}",
                        n + 1,
                        side.name,
                        path.display()
                    );
                    side.failures.push(format!(
                        "{} boot {}: {why} (log: {})",
                        side.name,
                        n + 1,
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(r)
}

fn summary(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!("{:.2} ({:.2}–{:.2})", median(v), min(v), max(v))
}

fn times(v: f64, base: f64) -> String {
    if v.is_finite() && base.is_finite() && base > 0.0 {
        format!("{:.1}×", v / base)
    } else {
        "–".into()
    }
}

impl NetbootResult {
    /// dracut's median over Terra's; NaN when either has no boot.
    pub fn ratio(&self) -> f64 {
        match self.sides.as_slice() {
            [t, d, ..] => median(&d.init_at) / median(&t.init_at),
            _ => f64::NAN,
        }
    }

    /// The markdown section for results.md.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "\n## Diskless boot: kernel start → the root's init, over iSCSI (same kernel, LUN \
             and command line)\n\n",
        );
        s.push_str(&format!(
            "Kernel {}, no disk, a virtio NIC on a tap in the bench's network namespace \
             (dnsmasq's DHCP); a fresh tgtd per boot there ({}) serves one btrfs LUN (label `os`, subvolume `os`, whose init \
             prints its uptime and powers off); both images get `{}`. {} boots per image, \
             alternating, under {:?}; guest seconds. dracut's network module: {}.\n\n",
            self.kver,
            self.portal,
            append(&self.portal, "<port>"),
            self.boots,
            self.accel,
            self.dracut_network.as_deref().unwrap_or("unknown"),
        ));
        s.push_str("| image | root init at, median (min–max) s | × terra | in initramfs, median s | image (MB) | × terra | unpacked (MB) | failed boots |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        let base = self.sides.first().cloned().unwrap_or_default();
        for side in &self.sides {
            if side.skipped.is_some() {
                s.push_str(&format!(
                    "| {} | not measured (below) | – | – | – | – | – | – |\n",
                    side.name
                ));
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {:.2} | {} |\n",
                side.name,
                summary(&side.init_at),
                times(median(&side.init_at), median(&base.init_at)),
                if side.in_initramfs.is_empty() {
                    "–".into()
                } else {
                    format!("{:.2}", median(&side.in_initramfs))
                },
                side.size as f64 / 1e6,
                times(side.size as f64, base.size as f64),
                side.unpacked as f64 / 1e6,
                side.failures.len(),
            ));
        }
        let ratio = self.ratio();
        if ratio.is_finite() {
            s.push_str(&format!(
                "\nTerra reaches the root's init {ratio:.1}× sooner than dracut (goal ≥ 3×: {}).\n",
                if ratio >= 3.0 { "met" } else { "missed" }
            ));
        }
        for side in &self.sides {
            if let Some(e) = &side.skipped {
                s.push_str(&format!(
                    "\n{} was not measured:\n\n```\n{}\n```\n",
                    side.name,
                    e.trim_end()
                ));
            }
        }
        let failures: Vec<&String> = self.sides.iter().flat_map(|s| &s.failures).collect();
        if !failures.is_empty() {
            s.push('\n');
        }
        for f in failures {
            s.push_str(&format!("- failed: {f}\n"));
        }
        s
    }

    /// The `netboot` object of results.json.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accel": format!("{:?}", self.accel),
            "kernel": self.kver,
            "boots": self.boots,
            "dracut_network": self.dracut_network,
            "portal": self.portal,
            "sides": self.sides.iter().map(|s| serde_json::json!({
                "name": s.name,
                "skipped": s.skipped,
                "image_bytes": s.size,
                "unpacked_bytes": s.unpacked,
                "root_init_at_s": s.init_at,
                "median_s": median(&s.init_at),
                "in_initramfs_s": s.in_initramfs,
                "failures": s.failures,
            })).collect::<Vec<_>>(),
            "ratio_dracut_over_terra": self.ratio(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_cover_the_hosts_directories_and_share_merged_ones() {
        let tree = crate::disk::tempdir("netboot-tree").unwrap();
        for d in [
            "sbin",
            "usr/sbin",
            "usr/lib/x86_64-linux-gnu",
            "etc/iscsi",
            "usr/share/x",
        ] {
            fs::create_dir_all(tree.join(d)).unwrap();
        }
        let o = overlays(&tree).unwrap();
        let script = dracut_script(&o);
        let _ = fs::remove_dir_all(&tree);
        let sbin = fs::canonicalize("/sbin").unwrap();
        let layers = &o.iter().find(|(h, _)| *h == sbin).unwrap().1;
        if sbin == fs::canonicalize("/usr/sbin").unwrap() {
            // Merged /usr: one overlay carries both of the tree's directories.
            assert_eq!(layers, &vec![tree.join("sbin"), tree.join("usr/sbin")]);
        }
        assert!(o
            .iter()
            .any(|(h, l)| h == Path::new("/etc") && l == &vec![tree.join("etc")]));
        // Only the directories dracut looks in, never /usr/share.
        assert!(!o
            .iter()
            .flat_map(|(_, l)| l)
            .any(|l| l.ends_with("usr/share")));
        assert!(script.starts_with("set -e\n"), "{script}");
        assert!(
            script.contains(&format!(
                "-o 'lowerdir={}:/etc' '/etc'\n",
                tree.join("etc").display()
            )),
            "{script}"
        );
        assert!(script.ends_with("exec dracut \"$@\"\n"), "{script}");
    }

    #[test]
    fn the_units_helpers_are_installed_but_not_the_tools() {
        let tree = crate::disk::tempdir("netboot-unit").unwrap();
        fs::create_dir_all(tree.join("lib/open-iscsi")).unwrap();
        fs::create_dir_all(tree.join("sbin")).unwrap();
        fs::write(tree.join("lib/open-iscsi/startup-checks.sh"), "#!/bin/sh\n").unwrap();
        fs::write(tree.join("sbin/iscsid"), "").unwrap();
        let unit = "[Service]\nType=forking\nPIDFile=/run/iscsid.pid\n\
                    ExecStartPre=-/lib/open-iscsi/startup-checks.sh\n\
                    ExecStart=/sbin/iscsid\nExecStop=/lib/open-iscsi/absent.sh x\n";
        let h = unit_helpers(unit, &tree);
        let _ = fs::remove_dir_all(&tree);
        assert_eq!(h, vec!["/lib/open-iscsi/startup-checks.sh".to_string()]);
    }

    #[test]
    fn overlay_layers_with_separators_are_refused() {
        let tree = crate::disk::tempdir("netboot,tree").unwrap();
        fs::create_dir_all(tree.join("sbin")).unwrap();
        let e = overlays(&tree).unwrap_err();
        let _ = fs::remove_dir_all(&tree);
        assert!(e.contains("cannot be an overlay layer"), "{e}");
    }

    fn side(name: &str, init_at: &[f64]) -> Side {
        Side {
            name: name.into(),
            image: Some(PathBuf::from("/x")),
            size: 2_000_000,
            init_at: init_at.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn the_report_has_the_ratio_or_says_why_not() {
        let mut r = NetbootResult {
            accel: Accel::Tcg,
            kver: "6.1.0".into(),
            boots: 3,
            sides: vec![
                side("terra", &[4.0, 5.0, 6.0]),
                side("dracut", &[20.0, 19.0, 40.0]),
            ],
            dracut_network: Some("systemd-networkd".into()),
            portal: "192.0.2.2".into(),
        };
        assert_eq!(r.ratio(), 4.0);
        let md = r.render();
        assert!(
            md.contains("| dracut | 20.00 (19.00–40.00) | 4.0× |"),
            "{md}"
        );
        assert!(
            md.contains("4.0× sooner than dracut (goal ≥ 3×: met)"),
            "{md}"
        );
        assert!(md.contains("network module: systemd-networkd"), "{md}");
        assert!(md.contains("netroot=iscsi:192.0.2.2::<port>:1:"), "{md}");
        assert_eq!(r.to_json()["sides"][1]["median_s"], 20.0);

        r.sides[1] = Side {
            name: "dracut".into(),
            skipped: Some("dracut's image lacks iscsiadm".into()),
            ..Default::default()
        };
        let md = r.render();
        assert!(md.contains("| dracut | not measured (below) |"), "{md}");
        assert!(
            md.contains("```\ndracut's image lacks iscsiadm\n```"),
            "{md}"
        );
        assert!(!md.contains("sooner"), "{md}");
        assert!(r.ratio().is_nan());
        assert!(r.to_json()["sides"][1]["skipped"].is_string());
    }
}
