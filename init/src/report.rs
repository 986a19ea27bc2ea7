//! What stage0 hands to the real system: the phase clock, the boot report the real system
//! finds in `/run/terra/boot.json` ([`write`]), and the records of each phase it carries
//! (the root, the version, the iSCSI disks, and [`network`]'s leases and links). The phases
//! build these records; this module imports none of them, so the arrows run one way.

pub mod http;
pub mod message;
pub mod network;
pub mod outbox;
pub mod send;
pub mod target;

use std::time::Instant;

use serde::Serialize;

use crate::bootstate::Why;
use crate::layout;
use network::{Lease, Lease6, MadeLink, NetworkRecords};

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

/// A candidate that failed in the initramfs.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The version.
    pub name: String,
    /// Why it was a candidate.
    pub why: Why,
    /// Why it failed.
    pub reason: String,
}

/// The `version` section of `/run/terra/boot.json`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// The version that booted.
    pub name: String,
    /// The image it was made from.
    pub image: String,
    /// That image's manifest digest (what a fleet's rollout names).
    pub digest: String,
    /// Why it was chosen.
    pub why: Why,
    /// Whether it is tentative (the real system is to confirm it).
    pub tentative: bool,
    /// Tries left after this boot (tentative versions).
    pub tries_left: u32,
    /// Candidates that failed before it, in this boot.
    pub fallbacks: Vec<Attempt>,
    /// The state's generation after this boot's changes.
    pub generation: u64,
    /// Mount options of the top level (device= members), for the confirmation.
    pub top_options: String,
    /// The confirmation command, when there is something to confirm.
    pub confirm: Option<String>,
    /// Persistent mounts stage0 made: mount point and what is there.
    pub mounts: Vec<(String, String)>,
    /// The extensions on the disk: applied, skipped (with why) or failed.
    pub extensions: Vec<crate::extensions::overlay::Outcome>,
    /// Why the kernel the version carries was not started (it boots on the running one).
    pub kernel_skipped: Option<String>,
    /// Seconds each health check may take when the booted system confirms this tentative
    /// version (the disk's node.toml `[update] health_timeout`, default 120).
    pub health_timeout: Option<u64>,
    /// When this boot came through a kexec into the version's kernel: from what.
    pub kexec: Option<KexecReport>,
}

/// How a version came to run on its own kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KexecReport {
    /// The kernel that booted first and chose the version.
    pub from_release: String,
    /// How long that first boot took, from its kernel's start to the kexec (ms).
    pub first_boot_ms: u64,
    /// The version's kernel, running now.
    pub release: String,
}

/// An iSCSI target that is now a local disk (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct IscsiReport {
    /// Target name.
    pub target: String,
    /// Portal logged in to.
    pub portal: String,
    /// Who named the target.
    pub source: &'static str,
    /// The block device, e.g. `sda`.
    pub device: String,
    /// iSCSI session id in the kernel.
    pub sid: u32,
    /// SCSI host number.
    pub host: u32,
    /// The CHAP algorithm used, if any.
    pub chap: Option<&'static str>,
    /// The target proved itself too (mutual CHAP).
    pub mutual_chap: bool,
    /// Connect + login time.
    pub login_ms: f64,
    /// Login through disk, in total.
    pub total_ms: f64,
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
    pub version: Option<&'a VersionReport>,
    /// The init executed.
    pub init: &'a str,
    /// Modules loaded, in order.
    pub modules: &'a [String],
    /// Interfaces the network phase configured (empty when it did not run).
    pub network: &'a [&'a Lease],
    /// Interfaces the network phase configured for IPv6 ([`Lease6`]: method,
    /// address, prefix, gateway, routes, DNS, search; empty when none).
    pub network_ipv6: &'a [&'a Lease6],
    /// Links the network phase made or renamed: bonds, VLANs, `ifname=` (empty when none).
    pub network_links: &'a [MadeLink],
    /// iSCSI targets logged in to and their disks (no secrets).
    pub iscsi: &'a [&'a IscsiReport],
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

/// What the boot report says beside the clock's phases, as the phases left it.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The root mounted.
    pub root: &'a RootReport,
    /// The version chosen (None on a filesystem without versions).
    pub version: Option<&'a VersionReport>,
    /// The init about to be executed.
    pub init: &'a str,
    /// Modules loaded, in order.
    pub modules: &'a [String],
    /// The network phase's records; None when it did not run.
    pub network: Option<NetworkRecords<'a>>,
    /// The iSCSI disks attached.
    pub iscsi: Vec<&'a IscsiReport>,
}

impl<'a> BootReport<'a> {
    /// The report as of now: the clock's phases and times, and the phases' parts.
    pub fn new(clock: &'a Clock, parts: &'a Parts<'a>, network: &'a NetworkRecords<'a>) -> Self {
        BootReport {
            stage0: env!("CARGO_PKG_VERSION"),
            uptime_at_start_ms: clock.uptime_at_start_ms,
            uptime_at_init_ms: uptime_ms(),
            initramfs_ms: clock.total_ms(),
            phases: &clock.phases,
            root: parts.root,
            version: parts.version,
            init: parts.init,
            modules: parts.modules,
            network: &network.leases,
            network_ipv6: &network.leases6,
            network_links: network.links,
            iscsi: &parts.iscsi,
            stage0_peak_rss_kb: peak_rss_kb(),
        }
    }
}

/// Writes [`layout::BOOT_REPORT`] (inside the real root's /run, after the switch). Best
/// effort: a report that cannot be written must not stop the boot.
pub fn write(clock: &Clock, parts: &Parts<'_>) {
    let network = parts.network.clone().unwrap_or_default();
    let report = BootReport::new(clock, parts, &network);
    let result = std::fs::create_dir_all(layout::RUN_TERRA).and_then(|()| {
        let json = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
        std::fs::write(layout::BOOT_REPORT, json)
    });
    if let Err(e) = result {
        log::warn!("cannot write {}: {e}", layout::BOOT_REPORT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_report_keeps_its_fields_and_order_and_no_secret() {
        let mut clock = Clock::start();
        clock.phase("early");
        let root = RootReport {
            device: "/dev/sda".into(),
            fstype: "btrfs".into(),
            ..RootReport::default()
        };
        let disk = IscsiReport {
            target: "iqn.2024-01.x:root".into(),
            portal: "10.0.2.2:3260".into(),
            source: "netroot",
            device: "sda".into(),
            sid: 1,
            host: 2,
            chap: Some("SHA-256"),
            mutual_chap: false,
            login_ms: 1.5,
            total_ms: 9.0,
        };
        let modules = ["virtio_net".to_string()];
        let parts = Parts {
            root: &root,
            version: None,
            init: "/sbin/init",
            modules: &modules,
            network: None,
            iscsi: vec![&disk],
        };
        let network = NetworkRecords::default();
        let v = serde_json::to_value(BootReport::new(&clock, &parts, &network)).unwrap();
        let text = serde_json::to_string(&BootReport::new(&clock, &parts, &network)).unwrap();
        let keys = [
            "stage0",
            "uptime_at_start_ms",
            "uptime_at_init_ms",
            "initramfs_ms",
            "phases",
            "root",
            "version",
            "init",
            "modules",
            "network",
            "network_ipv6",
            "network_links",
            "iscsi",
            "stage0_peak_rss_kb",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(v["phases"][0]["name"], "early");
        assert_eq!(v["version"], serde_json::Value::Null);
        assert_eq!(v["network"], serde_json::json!([]));
        assert_eq!(v["iscsi"][0]["device"], "sda");
        assert_eq!(v["iscsi"][0]["chap"], "SHA-256");
        assert_eq!(v["iscsi"][0].as_object().unwrap().len(), 10);
    }
}
