//! The DHCP case of `cargo xtask bench`: time to a lease, stage0's client against busybox
//! `udhcpc`, against the same dnsmasq in the same run. Everything happens in two network
//! namespaces made here (client and server, a veth pair between them, links already up);
//! the host's own interfaces are never touched. dnsmasq is killed by PID and the namespaces
//! deleted when the guard drops; every command is bounded by a timeout.
//!
//! Each run is timed from spawn to exit of the client process (`ip netns exec` included, the
//! same for both). stage0's client is `init/examples/dhcp_lease.rs`, which runs the network
//! phase (`network::bring_up`, so the address is also applied and read back) and also prints
//! its own in-process time, reported alongside. udhcpc runs with a no-op script, so it
//! configures nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{run, workspace};

/// Bound on one client run (both clients give up well before: 10 s / 3 discovers).
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Bound on dnsmasq becoming ready.
const DNSMASQ_READY: Duration = Duration::from_secs(5);
/// The server side's address and the range it hands out (the netns tests' subnet).
const SERVER_ADDR: &str = "10.77.0.1/24";
const RANGE: &str = "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h";
const CLIENT_MAC: &str = "02:00:00:00:00:01";

/// Times of one DHCP bench, ms per run.
#[derive(Debug, Clone, Default)]
pub struct DhcpResult {
    /// stage0 (dhcp_lease example), spawn to exit.
    pub stage0_ms: Vec<f64>,
    /// stage0, as the example measured it around `bring_up` (no process start-up).
    pub stage0_inner_ms: Vec<f64>,
    /// stage0, the link's own job inside `bring_up` (DHCP exchange, address applied).
    pub stage0_exchange_ms: Vec<f64>,
    /// busybox udhcpc, spawn to exit.
    pub udhcpc_ms: Vec<f64>,
    /// The busybox version line.
    pub busybox: String,
}

use crate::bench::{max, median, min};

fn summary(v: &[f64]) -> String {
    format!("{:.1} ({:.1}–{:.1})", median(v), min(v), max(v))
}

impl DhcpResult {
    /// stage0's median over udhcpc's (spawn to exit).
    pub fn ratio(&self) -> f64 {
        median(&self.stage0_ms) / median(&self.udhcpc_ms)
    }

    /// The markdown section for results.md.
    pub fn render(&self, stage0_size: Option<u64>) -> String {
        let mut s = String::from("\n## DHCP: time to a lease (links up, same dnsmasq)\n\n");
        s.push_str(&format!(
            "Two network namespaces and a veth pair, dnsmasq on one side; the clients alternate, \
             {} runs each after one warm-up run each; spawn to exit of the client process, ms.\n\n",
            self.stage0_ms.len()
        ));
        s.push_str("| client | time to a lease, median (min–max) ms | × udhcpc |\n");
        s.push_str("|---|---|---|\n");
        s.push_str(&format!(
            "| stage0 (network::bring_up, address applied) | {} | {:.2}× |\n",
            summary(&self.stage0_ms),
            self.ratio()
        ));
        s.push_str(&format!(
            "| busybox udhcpc (-s /bin/true) | {} | 1.00× |\n",
            summary(&self.udhcpc_ms)
        ));
        s.push_str(&format!(
            "\nstage0 in-process: around bring_up {} ms; the link's own job (DHCP exchange, \
             address applied and read back) {} ms. {}.\n",
            summary(&self.stage0_inner_ms),
            summary(&self.stage0_exchange_ms),
            self.busybox
        ));
        if let Some(b) = stage0_size {
            s.push_str(&format!("stage0 binary (with networking): {b} bytes.\n"));
        }
        s
    }

    /// The `dhcp` object of results.json.
    pub fn to_json(&self, stage0_size: Option<u64>) -> serde_json::Value {
        let stats = |v: &[f64]| {
            serde_json::json!({
                "runs_ms": v,
                "median_ms": median(v),
                "min_ms": min(v),
                "max_ms": max(v),
            })
        };
        serde_json::json!({
            "runs": self.stage0_ms.len(),
            "stage0": stats(&self.stage0_ms),
            "stage0_in_process": stats(&self.stage0_inner_ms),
            "stage0_exchange": stats(&self.stage0_exchange_ms),
            "udhcpc": stats(&self.udhcpc_ms),
            "ratio_stage0_over_udhcpc": self.ratio(),
            "busybox": self.busybox,
            "stage0_bytes": stage0_size,
        })
    }
}

/// Builds the dhcp_lease example (release). Returns its path.
pub fn build_example() -> crate::Result<PathBuf> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "terra-init",
                "--example",
                "dhcp_lease",
            ]),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    Ok(target.join("release/examples/dhcp_lease"))
}

/// What a bounded run left: its wall time, status and output.
struct Timed {
    elapsed: Duration,
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Spawns `cmd`, waits at most `limit` (killing it by PID past that), times spawn to exit.
fn run_bounded(cmd: &mut Command, limit: Duration) -> crate::Result<Timed> {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let elapsed = start.elapsed();
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = tx.send((status, elapsed, out, err));
    });
    match rx.recv_timeout(limit) {
        Ok((status, elapsed, stdout, stderr)) => {
            let _ = waiter.join();
            let status = status.map_err(|e| format!("{what}: {e}"))?;
            Ok(Timed {
                elapsed,
                ok: status.success(),
                stdout,
                stderr,
            })
        }
        Err(_) => {
            // The waiter still owns the child; kill it by PID and let the waiter reap it.
            if let Ok(p) = i32::try_from(pid) {
                // SAFETY: kill(2) on the PID of a child this process spawned and has not reaped.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            let _ = waiter.join();
            Err(format!("{what} did not finish within {limit:?}"))
        }
    }
}

/// The two namespaces and dnsmasq; deleted and killed on drop.
struct Lab {
    client_ns: String,
    server_ns: String,
    client_if: String,
    dnsmasq_pid: Option<u32>,
    dir: PathBuf,
}

impl Lab {
    fn new() -> crate::Result<Self> {
        let pid = std::process::id();
        let dir = crate::disk::tempdir("bench-dhcp")?;
        let mut lab = Lab {
            client_ns: format!("terra-bdhcp-c-{pid}"),
            server_ns: format!("terra-bdhcp-s-{pid}"),
            client_if: format!("tbc{pid}"),
            dnsmasq_pid: None,
            dir,
        };
        let server_if = format!("tbs{pid}");
        // From here on, Drop cleans up whatever was made.
        lab.sh(&["ip", "netns", "add", &lab.client_ns.clone()])?;
        lab.sh(&["ip", "netns", "add", &lab.server_ns.clone()])?;
        let (c, s, ci) = (
            lab.client_ns.clone(),
            lab.server_ns.clone(),
            lab.client_if.clone(),
        );
        lab.sh(&[
            "ip", "link", "add", &ci, "address", CLIENT_MAC, "netns", &c, "type", "veth", "peer",
            "name", &server_if, "netns", &s,
        ])?;
        lab.sh(&["ip", "-n", &c, "link", "set", "lo", "up"])?;
        lab.sh(&["ip", "-n", &s, "link", "set", "lo", "up"])?;
        lab.sh(&[
            "ip",
            "-n",
            &s,
            "addr",
            "add",
            SERVER_ADDR,
            "dev",
            &server_if,
        ])?;
        lab.sh(&["ip", "-n", &s, "link", "set", &server_if, "up"])?;
        lab.sh(&["ip", "-n", &c, "link", "set", &ci, "up"])?;
        lab.start_dnsmasq(&server_if)?;
        lab.wait_carrier()?;
        Ok(lab)
    }

    fn sh(&self, args: &[&str]) -> crate::Result<String> {
        let t = run_bounded(
            Command::new(args[0]).args(&args[1..]),
            Duration::from_secs(10),
        )?;
        if !t.ok {
            return Err(format!("{args:?} failed:\n{}", t.stderr));
        }
        Ok(t.stdout)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// dnsmasq as a DHCP server only, with the netns tests' flags.
    fn start_dnsmasq(&mut self, iface: &str) -> crate::Result<()> {
        let log = self.dir.join("dnsmasq.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--bind-interfaces",
                "--log-dhcp",
                RANGE,
            ])
            .arg(format!("--interface={iface}"))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!(
                "--dhcp-leasefile={}",
                self.dir.join("leases").display()
            ))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start dnsmasq: {e}"))?;
        // `ip netns exec` execs dnsmasq, so this PID is dnsmasq's. The Child is dropped
        // without waiting; Drop kills and reaps it by PID.
        self.dnsmasq_pid = Some(child.id());
        let start = Instant::now();
        while start.elapsed() < DNSMASQ_READY {
            if self.log().contains("DHCP, IP range") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "dnsmasq not ready within {DNSMASQ_READY:?}; its log:\n{}",
            self.log()
        ))
    }

    /// The veth reports carrier once both ends are up; wait (bounded) so no run waits for it.
    fn wait_carrier(&self) -> crate::Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let out = self.sh(&["ip", "-n", &self.client_ns, "link", "show", &self.client_if])?;
            if out.contains("LOWER_UP") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{}: no carrier within 5 s", self.client_if))
    }

    /// Removes what a stage0 run applied (address, routes), so every run starts the same.
    fn flush(&self) -> crate::Result<()> {
        let (c, i) = (&self.client_ns, &self.client_if);
        self.sh(&["ip", "-n", c, "-4", "route", "flush", "dev", i])?;
        self.sh(&["ip", "-n", c, "-4", "addr", "flush", "dev", i])?;
        Ok(())
    }

    /// One stage0 run: (spawn to exit, in-process, exchange) ms.
    fn stage0(&self, example: &Path) -> crate::Result<(f64, f64, f64)> {
        self.flush()?;
        let t = run_bounded(
            Command::new("ip")
                .args(["netns", "exec", &self.client_ns])
                .arg(example)
                .args([&self.client_if, "10"]),
            RUN_LIMIT,
        )?;
        if !t.ok {
            return Err(format!(
                "stage0's DHCP client failed:\n{}\ndnsmasq:\n{}",
                t.stderr,
                self.log()
            ));
        }
        let field = |key: &str| {
            t.stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("dhcp_lease printed no {key}: {:?}", t.stdout))
        };
        Ok((
            t.elapsed.as_secs_f64() * 1000.0,
            field("lease_ms")?,
            field("exchange_ms")?,
        ))
    }

    /// One udhcpc run, spawn to exit, ms.
    fn udhcpc(&self, busybox: &Path) -> crate::Result<f64> {
        self.flush()?;
        let t = run_bounded(
            Command::new("ip")
                .args(["netns", "exec", &self.client_ns])
                .arg(busybox)
                .args(["udhcpc", "-i", &self.client_if, "-n", "-q", "-f"])
                .args(["-s", "/bin/true"]),
            RUN_LIMIT,
        )?;
        if !t.ok {
            return Err(format!(
                "udhcpc failed:\n{}{}\ndnsmasq:\n{}",
                t.stdout,
                t.stderr,
                self.log()
            ));
        }
        Ok(t.elapsed.as_secs_f64() * 1000.0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(pid) = self.dnsmasq_pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) and waitpid(2) on the PID of dnsmasq, a child of this process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the DHCP bench: `runs` alternating runs of each client after one warm-up each.
/// Needs root, iproute2, dnsmasq and busybox.
pub fn run_dhcp(runs: usize) -> crate::Result<DhcpResult> {
    if !is_root() {
        return Err("the DHCP bench makes network namespaces: run it as root".into());
    }
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("dnsmasq", "dnsmasq-base"),
        ("busybox", "busybox-static"),
    ] {
        if crate::host::which(tool).is_none() {
            return Err(format!("{tool} is missing: apt-get install {pkg}"));
        }
    }
    let busybox = crate::host::which("busybox").ok_or("busybox is missing")?;
    let version = Command::new(&busybox)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .trim_end_matches('.')
                .to_string()
        })
        .unwrap_or_default();
    let example = build_example()?;
    let lab = Lab::new()?;
    // Warm-up: dnsmasq's first offer to a new client waits on its ping check.
    lab.stage0(&example)?;
    lab.udhcpc(&busybox)?;
    let mut r = DhcpResult {
        busybox: version,
        ..Default::default()
    };
    for n in 0..runs {
        let (outer, inner, exchange) = lab.stage0(&example)?;
        let u = lab.udhcpc(&busybox)?;
        eprintln!(
            "bench: dhcp run {}: stage0 {outer:.1} ms ({inner:.1} in-process, {exchange:.1} exchange), udhcpc {u:.1} ms",
            n + 1
        );
        r.stage0_ms.push(outer);
        r.stage0_inner_ms.push(inner);
        r.stage0_exchange_ms.push(exchange);
        r.udhcpc_ms.push(u);
    }
    Ok(r)
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
