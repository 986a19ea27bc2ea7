//! The iSCSI bench's root init (`init=/bin/bench-iscsi`, PID 1 after stage0's switch): the
//! network is up and iscsi_tcp, sd_mod and crc32c are loaded by stage0. It times one
//! initiator from here to the LUN's block device and prints one marker line:
//!
//! `TERRA-BENCH-ISCSI initiator=stage0 ms=12.3 device=sda login_ms=4.5 …`
//!
//! or `TERRA-BENCH-ISCSI initiator=… error=…` on failure, then powers off. Parameters come
//! from /proc/cmdline: `bench.initiator=stage0|iscsistart bench.portal=HOST:PORT
//! bench.iqn=IQN`; `bench.debug` also prints iscsistart's own output after the marker (for
//! looking into a run by hand, see bench/iscsi.rs).
//!
//! - `stage0`: stage0's own code in-process (`login::connect`, `netlink::hand_off`,
//!   `netlink::scan`), as its iscsi phase runs it;
//! - `iscsistart`: open-iscsi's `/sbin/iscsistart -i … -t … -g 1 -a … -p …`, waited for.
//!
//! Sub-steps, ms from the same start: stage0 `login_ms`, `handoff_ms` (the kernel has the
//! session), `scan_ms`; iscsistart `session_ms` (a session first shows in sysfs), `exit_ms`.
//!
//! Then the same wait for both: an `sd*` disk of nonzero size below an iSCSI session in
//! sysfs, polled every millisecond. Never exits (it is PID 1) and never panics on purpose.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use terra_init::iscsi::login::{self, LoginConfig};
use terra_init::iscsi::netlink::{self, Netlink};
use terra_init::iscsi::target::Portal;

/// The marker the host looks for on the console.
const MARKER: &str = "TERRA-BENCH-ISCSI";
/// open-iscsi's initiator in the bench root.
const ISCSISTART: &str = "/sbin/iscsistart";
/// Where iscsistart's own output goes (shown only when it fails).
const ISCSISTART_LOG: &str = "/run/iscsistart.log";
/// Bound on iscsistart, and on the disk appearing.
const LIMIT: Duration = Duration::from_secs(60);
/// Poll interval for the disk (and for iscsistart's exit).
const POLL: Duration = Duration::from_millis(1);

/// Which initiator to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initiator {
    Stage0,
    Iscsistart,
}

impl Initiator {
    fn name(self) -> &'static str {
        match self {
            Initiator::Stage0 => "stage0",
            Initiator::Iscsistart => "iscsistart",
        }
    }
}

/// The bench parameters from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Params {
    initiator: Initiator,
    portal: Portal,
    iqn: String,
}

/// Parses `bench.initiator=`, `bench.portal=` and `bench.iqn=` from a command line.
fn parse_params(cmdline: &str) -> Result<Params, String> {
    let (mut initiator, mut portal, mut iqn) = (None, None, None);
    for word in cmdline.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        match k {
            "bench.initiator" => {
                initiator = Some(match v {
                    "stage0" => Initiator::Stage0,
                    "iscsistart" => Initiator::Iscsistart,
                    _ => return Err(format!("bench.initiator={v}: expected stage0|iscsistart")),
                })
            }
            "bench.portal" => {
                let p = Portal::parse(v).ok_or(format!("bench.portal={v}: not HOST:PORT"))?;
                portal = Some(p);
            }
            "bench.iqn" => iqn = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(Params {
        initiator: initiator.ok_or("no bench.initiator= on the command line")?,
        portal: portal.ok_or("no bench.portal= on the command line")?,
        iqn: iqn.ok_or("no bench.iqn= on the command line")?,
    })
}

/// Each initiator logs in under its own name, so a session a previous boot left on the
/// target is reinstated by the same initiator only.
fn initiator_name(i: Initiator) -> String {
    format!("iqn.2024-01.org.terra-os:bench-{}", i.name())
}

/// Mounts `fstype` at `target` unless `probe` already exists (stage0 moved its mounts here).
fn ensure_mount(probe: &str, fstype: &std::ffi::CStr, target: &std::ffi::CStr) {
    if Path::new(probe).exists() {
        return;
    }
    let dir = Path::new(target.to_str().unwrap_or("/"));
    let _ = std::fs::create_dir_all(dir);
    // SAFETY: all pointers are valid NUL-terminated strings or null data, as mount(2)
    // accepts for these pseudo filesystems.
    unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        );
    }
}

/// What a run measured besides the total: `(key, value)` pairs for the marker line.
type Extra = Vec<(&'static str, String)>;

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// stage0's initiator, as its iscsi phase runs it. Returns the netlink socket too: it stays
/// open until the disk is there, as in stage0.
fn run_stage0(p: &Params, t0: Instant) -> Result<(Extra, Option<Netlink>), String> {
    let name = initiator_name(Initiator::Stage0);
    let cfg = LoginConfig::new(&name, &p.iqn);
    let session = login::connect(&p.portal, &cfg).map_err(|e| format!("login: {e}"))?;
    let login_ms = ms(t0.elapsed());
    let sys = Path::new("/sys");
    let mut nl = Netlink::open(sys, "tcp").map_err(|e| format!("netlink: {e}"))?;
    let h = netlink::hand_off(&mut nl, session, &p.portal).map_err(|e| format!("handoff: {e}"))?;
    let handoff_ms = ms(t0.elapsed());
    netlink::scan(sys, h.host).map_err(|e| format!("scan: {e}"))?;
    let scan_ms = ms(t0.elapsed());
    Ok((
        vec![
            ("login_ms", login_ms),
            ("handoff_ms", handoff_ms),
            ("scan_ms", scan_ms),
        ],
        Some(nl),
    ))
}

/// open-iscsi's iscsistart, waited for (bounded, killed by PID past the bound).
fn run_iscsistart(p: &Params, t0: Instant) -> Result<(Extra, Option<Netlink>), String> {
    for d in ["/run/lock/iscsi", "/var/lib/iscsi", "/etc/iscsi"] {
        let _ = std::fs::create_dir_all(d);
    }
    let log =
        std::fs::File::create(ISCSISTART_LOG).map_err(|e| format!("{ISCSISTART_LOG}: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{ISCSISTART_LOG}: {e}"))?;
    let name = initiator_name(Initiator::Iscsistart);
    let port = p.portal.port.to_string();
    let mut child = Command::new(ISCSISTART)
        .args(["-i", &name, "-t", &p.iqn, "-g", "1", "-a", &p.portal.host])
        .args(["-p", &port])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot run {ISCSISTART}: {e}"))?;
    // While waiting, note when the kernel first shows a session (iscsistart's child has
    // logged in and created it), to compare with stage0's handoff.
    let mut session_ms = None;
    let status = loop {
        if session_ms.is_none() && has_session() {
            session_ms = Some(ms(t0.elapsed()));
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() > LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{ISCSISTART} did not exit within {} s: {}",
                    LIMIT.as_secs(),
                    iscsistart_log()
                ));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for {ISCSISTART}: {e}")),
        }
    };
    let exit_ms = ms(t0.elapsed());
    if !status.success() {
        return Err(format!(
            "{ISCSISTART} failed ({status}): {}",
            iscsistart_log()
        ));
    }
    let mut extra = vec![("exit_ms", exit_ms)];
    if let Some(v) = session_ms {
        extra.push(("session_ms", v));
    }
    Ok((extra, None))
}

/// Whether /sys/class/iscsi_session has an entry.
fn has_session() -> bool {
    std::fs::read_dir("/sys/class/iscsi_session")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// iscsistart's output on one line.
fn iscsistart_log() -> String {
    std::fs::read_to_string(ISCSISTART_LOG)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// An `sd*` whole disk of nonzero size whose device sits below an iSCSI session.
fn find_lun() -> Option<String> {
    let sys_block = Path::new("/sys/class/block");
    for entry in std::fs::read_dir(sys_block).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(letters) = name.strip_prefix("sd") else {
            continue;
        };
        if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
            continue;
        }
        let size = std::fs::read_to_string(sys_block.join(&name).join("size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let under_session = std::fs::canonicalize(sys_block.join(&name).join("device"))
            .map(|d| d.to_string_lossy().contains("/session"))
            .unwrap_or(false);
        if size > 0 && under_session {
            return Some(name);
        }
    }
    None
}

fn wait_for_lun(t0: Instant) -> Result<String, String> {
    loop {
        if let Some(d) = find_lun() {
            return Ok(d);
        }
        if t0.elapsed() > LIMIT {
            return Err(format!(
                "no iSCSI sd disk of nonzero size within {} s",
                LIMIT.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// One measurement: the marker line's fields after `initiator=`.
fn measure(p: &Params) -> Result<String, String> {
    let t0 = Instant::now();
    let (extra, nl) = match p.initiator {
        Initiator::Stage0 => run_stage0(p, t0)?,
        Initiator::Iscsistart => run_iscsistart(p, t0)?,
    };
    let device = wait_for_lun(t0)?;
    let total = ms(t0.elapsed());
    drop(nl);
    let mut line = format!("ms={total} device={device}");
    for (k, v) in extra {
        line.push_str(&format!(" {k}={v}"));
    }
    Ok(line)
}

fn main() {
    ensure_mount("/proc/self", c"proc", c"/proc");
    ensure_mount("/sys/class", c"sysfs", c"/sys");
    ensure_mount("/dev/null", c"devtmpfs", c"/dev");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let line = match parse_params(&cmdline) {
        Ok(p) => match measure(&p) {
            Ok(fields) => format!("{MARKER} initiator={} {fields}", p.initiator.name()),
            Err(e) => format!("{MARKER} initiator={} error={e}", p.initiator.name()),
        },
        Err(e) => format!("{MARKER} initiator=unknown error={e}"),
    };
    let mut out = std::io::stdout();
    // One write, on a line of its own, so kernel messages do not split it.
    let _ = out.write_all(format!("\n{}\n", line.replace('\n', " ")).as_bytes());
    if cmdline.split_whitespace().any(|w| w == "bench.debug") {
        let log = std::fs::read_to_string(ISCSISTART_LOG).unwrap_or_default();
        let _ = out.write_all(format!("--- {ISCSISTART_LOG}\n{log}--- end\n").as_bytes());
    }
    let _ = out.flush();
    // SAFETY: sync(2) and reboot(2) take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // If the kernel refused, PID 1 must still not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_come_from_the_command_line() {
        let p = parse_params(
            "console=ttyS0 init=/bin/bench-iscsi bench.initiator=iscsistart \
             bench.portal=10.0.2.2:3261 bench.iqn=iqn.2024-01.org.terra-os:bench quiet",
        )
        .unwrap();
        assert_eq!(p.initiator, Initiator::Iscsistart);
        assert_eq!(p.portal.host, "10.0.2.2");
        assert_eq!(p.portal.port, 3261);
        assert_eq!(p.iqn, "iqn.2024-01.org.terra-os:bench");
        assert!(
            parse_params("bench.initiator=open-iscsi bench.portal=1.2.3.4 bench.iqn=x")
                .unwrap_err()
                .contains("bench.initiator=open-iscsi")
        );
        assert!(parse_params("bench.initiator=stage0 bench.iqn=x")
            .unwrap_err()
            .contains("bench.portal"));
    }
}
