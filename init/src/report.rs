//! The phase clock and the boot report that the real system finds in `/run/terra/boot.json`.

use std::time::Instant;

use serde::Serialize;

use crate::iscsi::Attached;
use crate::network::lease::{Lease, Lease6, MadeLink};

/// One finished phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Phase name (ARCHITECTURE.md §2).
    pub name: &'static str,
    /// Duration in milliseconds.
    pub ms: f64,
}

/// Measures phases from stage0's start.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    last: Instant,
    /// Kernel uptime when stage0 started, in ms (CLOCK_BOOTTIME).
    pub uptime_at_start_ms: f64,
    /// Finished phases.
    pub phases: Vec<Phase>,
}

impl Clock {
    /// Starts the clock.
    pub fn start() -> Self {
        let now = Instant::now();
        Clock {
            start: now,
            last: now,
            uptime_at_start_ms: uptime_ms(),
            phases: Vec::new(),
        }
    }

    /// Ends the current phase; logs and records its duration.
    pub fn phase(&mut self, name: &'static str) {
        let now = Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        self.last = now;
        log::info!("phase {name} done in {ms:.1} ms");
        self.phases.push(Phase { name, ms });
    }

    /// Milliseconds since stage0 started.
    pub fn total_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// One line per phase, for the rescue report.
    pub fn summary(&self) -> String {
        let mut s: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{} {:.1} ms", p.name, p.ms))
            .collect();
        s.push(format!("total {:.1} ms", self.total_ms()));
        s.join(", ")
    }
}

/// Kernel uptime in ms, from CLOCK_BOOTTIME (what /proc/uptime shows).
pub fn uptime_ms() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 * 1000.0 + t.tv_nsec() as f64 / 1e6)
        .unwrap_or(0.0)
}

/// The root that was mounted.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RootReport {
    /// Device node.
    pub device: String,
    /// Filesystem type.
    pub fstype: String,
    /// Filesystem label.
    pub label: Option<String>,
    /// Filesystem UUID.
    pub uuid: Option<String>,
    /// Mount options.
    pub options: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// `/run/terra/boot.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BootReport<'a> {
    /// stage0 version.
    pub stage0: &'static str,
    /// Kernel uptime when stage0 started.
    pub uptime_at_start_ms: f64,
    /// Kernel uptime when the real init was executed.
    pub uptime_at_init_ms: f64,
    /// Time spent in stage0.
    pub initramfs_ms: f64,
    /// Per-phase durations.
    pub phases: &'a [Phase],
    /// The root.
    pub root: &'a RootReport,
    /// The version chosen, when the root filesystem has versions (null otherwise).
    pub version: Option<&'a crate::select::VersionReport>,
    /// The init executed.
    pub init: &'a str,
    /// Modules loaded, in order.
    pub modules: &'a [String],
    /// Interfaces the network phase configured (empty when it did not run).
    pub network: &'a [&'a Lease],
    /// Interfaces the network phase configured for IPv6 (`network::lease::Lease6`: method,
    /// address, prefix, gateway, routes, DNS, search; empty when none).
    pub network_ipv6: &'a [&'a Lease6],
    /// Links the network phase made or renamed: bonds, VLANs, `ifname=` (empty when none).
    pub network_links: &'a [MadeLink],
    /// iSCSI targets logged in to and their disks (no secrets).
    pub iscsi: &'a [Attached],
    /// stage0's peak resident memory (VmHWM), kB.
    pub stage0_peak_rss_kb: Option<u64>,
}

/// This process's peak resident set size (VmHWM) in kB, from /proc/self/status.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
