//! The DHCP case of `cargo xtask bench`: time to a lease, stage0's client against busybox
//! `udhcpc`, against the same dnsmasq in the same run. Everything happens in two network
//! namespaces made here with [`crate::netns`] (client and server, a veth pair between them,
//! links already up); the host's own interfaces are never touched. dnsmasq is killed by PID
//! and the namespaces deleted when their guards drop; every command is bounded by a timeout.
//!
//! Each run is timed from spawn to exit of the client process (`ip netns exec` included, the
//! same for both). stage0's client is `init/examples/dhcp_lease.rs`, which runs the network
//! phase (`network::bring_up`, so the address is also applied and read back) and also prints
//! its own in-process time, reported alongside. udhcpc runs with a no-op script, so it
//! configures nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::{run_timed, Dnsmasq, Netns};
use crate::{run, workspace};

/// Bound on one client run (both clients give up well before: 10 s / 3 discovers).
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Bound on the client's link getting carrier.
const CARRIER_LIMIT: Duration = Duration::from_secs(5);
/// The server side's address and the range it hands out (the subnet of
/// `tests-qemu/tests/scenarios/network_netns.rs`).
const SERVER_ADDR: &str = "10.77.0.1/24";
const RANGE: &str = "10.77.0.50,10.77.0.99,255.255.255.0,1h";
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
    Ok(crate::target_dir().join("release/examples/dhcp_lease"))
}

/// The two namespaces and dnsmasq. Fields drop in order: dnsmasq is killed by PID before the
/// namespaces are deleted by name.
struct Lab {
    dnsmasq: Dnsmasq,
    client: Netns,
    _server: Netns,
    client_if: String,
}

impl Lab {
    fn new() -> crate::Result<Self> {
        let pid = std::process::id();
        let client = Netns::new("bdhcpc")?;
        let server = Netns::new("bdhcps")?;
        let (client_if, server_if) = (format!("tbc{pid}"), format!("tbs{pid}"));
        client.add_veth(&client_if, CLIENT_MAC, &server, &server_if)?;
        server.add_addr(&server_if, SERVER_ADDR)?;
        server.link_up(&server_if)?;
        client.link_up(&client_if)?;
        // dnsmasq as it is normally run, ping check included (the warm-up runs absorb it).
        let dnsmasq = Dnsmasq::start_pinging(&server, &server_if, RANGE, &[])?;
        // The veth has carrier once both ends are up; wait for it so no run does.
        client.wait_carrier(&client_if, CARRIER_LIMIT)?;
        Ok(Lab {
            dnsmasq,
            client,
            _server: server,
            client_if,
        })
    }

    /// One stage0 run: (spawn to exit, in-process, exchange) ms.
    fn stage0(&self, example: &Path) -> crate::Result<(f64, f64, f64)> {
        // Removes what a stage0 run applied (address, routes), so every run starts the same.
        self.client.flush(&self.client_if)?;
        let t = run_timed(
            self.client.command(example).args([&self.client_if, "10"]),
            RUN_LIMIT,
        )?;
        if !t.status.success() {
            return Err(format!(
                "stage0's DHCP client failed:\n{}\ndnsmasq:\n{}",
                t.stderr,
                self.dnsmasq.log()
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
        self.client.flush(&self.client_if)?;
        let t = run_timed(
            self.client
                .command(busybox)
                .args(["udhcpc", "-i", &self.client_if, "-n", "-q", "-f"])
                .args(["-s", "/bin/true"]),
            RUN_LIMIT,
        )?;
        if !t.status.success() {
            return Err(format!(
                "udhcpc failed:\n{}{}\ndnsmasq:\n{}",
                t.stdout,
                t.stderr,
                self.dnsmasq.log()
            ));
        }
        Ok(t.elapsed.as_secs_f64() * 1000.0)
    }
}

/// Runs the DHCP bench: `runs` alternating runs of each client after one warm-up each.
/// Needs root, iproute2, dnsmasq and busybox.
pub fn run_dhcp(runs: usize) -> crate::Result<DhcpResult> {
    crate::netns::require_veth().map_err(|e| format!("the DHCP bench: {e}"))?;
    let busybox = crate::host::which("busybox")
        .ok_or("the DHCP bench needs busybox: apt-get install -y busybox-static")?;
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
