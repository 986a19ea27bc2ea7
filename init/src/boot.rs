//! The boot, as a script: each phase in order (DESIGN.md §2); any failure goes to rescue.

use std::convert::Infallible;
use std::fmt;
use std::path::Path;

use crate::config::{BootConfig, ConfigError, NodeConfig, RescueAction};
use crate::devices::{DeviceError, Devices, Paths};
use crate::early::{self, EarlyError};
use crate::layout;
use crate::report::{peak_rss_kb, uptime_ms, BootReport, Clock, RootReport};
use crate::rescue::{self, Diagnostics};
use crate::storage::{self, StorageError};
use crate::switch::{self, SwitchError};

/// A failed phase.
#[derive(Debug)]
pub enum Failure {
    /// Phase early.
    Early(EarlyError),
    /// Phase config.
    Config(ConfigError),
    /// Phase devices.
    Devices(DeviceError),
    /// Phase storage.
    Storage(StorageError),
    /// Phases root and switch.
    Switch(SwitchError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Early(e) => e.fmt(f),
            Failure::Config(e) => e.fmt(f),
            Failure::Devices(e) => e.fmt(f),
            Failure::Storage(e) => e.fmt(f),
            Failure::Switch(e) => e.fmt(f),
        }
    }
}

macro_rules! from_error {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self { Failure::$v(e) }
        }
    )*};
}
from_error!(EarlyError => Early, ConfigError => Config, DeviceError => Devices, StorageError => Storage, SwitchError => Switch);

/// What the boot has learnt so far; rescue reports from it.
struct State {
    clock: Clock,
    phase: &'static str,
    rescue: RescueAction,
    awaited: Option<String>,
    devices: Option<Devices>,
}

/// Boots: runs the phases in order and execs the real init. Never returns.
pub fn run() -> ! {
    let mut s = State {
        clock: Clock::start(),
        phase: "early",
        rescue: RescueAction::Shell,
        awaited: None,
        devices: None,
    };
    let err = match boot(&mut s) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let mut diag = Diagnostics {
        phase: s.phase,
        error: err.to_string(),
        awaited: s.awaited.clone(),
        timings: s.clock.summary(),
        ..Default::default()
    };
    if let Some(d) = &s.devices {
        diag.blocks = d.block_summary();
        diag.loaded = d.loaded.clone();
        diag.failed = d.failed.clone();
        diag.unmatched = d.unmatched;
    }
    rescue::enter(&diag, s.rescue)
}

fn boot(s: &mut State) -> Result<Infallible, Failure> {
    early::setup()?;
    s.clock.phase("early");

    s.phase = "config";
    let cfg = load_config()?;
    if cfg.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    s.rescue = cfg.rescue;
    s.awaited = Some(cfg.root.to_string());
    s.clock.phase("config");

    s.phase = "devices";
    let kver = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut forced: Vec<String> = std::fs::read_to_string(layout::MODULES_LOAD_ABS)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    forced.extend(cfg.modules.iter().cloned());
    let devices = s
        .devices
        .insert(Devices::start(Paths::system(&kver), &forced)?);
    s.clock.phase("devices");

    s.phase = "storage";
    let root = storage::mount_root(&cfg, devices)?;
    s.clock.phase("storage");

    s.phase = "root";
    switch::check_root(Path::new(layout::SYSROOT), &cfg.init)?;
    s.clock.phase("root");

    s.phase = "switch";
    switch::enter_root()?;
    s.clock.phase("switch");
    write_report(s, &root, &cfg.init);
    log::info!(
        "exec {} after {:.1} ms in the initramfs (peak RSS {} kB)",
        cfg.init,
        s.clock.total_ms(),
        peak_rss_kb().unwrap_or(0)
    );
    Err(switch::exec_init(&cfg.init).into())
}

fn load_config() -> Result<BootConfig, ConfigError> {
    let node = NodeConfig::load(Path::new(layout::NODE_CONFIG_ABS))?;
    let cmdline = std::fs::read("/proc/cmdline").unwrap_or_default();
    BootConfig::resolve(node, &String::from_utf8_lossy(&cmdline))
}

/// Writes /run/terra/boot.json (now inside the real root's /run). Best effort: a report
/// that cannot be written must not stop the boot.
fn write_report(s: &State, root: &RootReport, init: &str) {
    let modules = s
        .devices
        .as_ref()
        .map(|d| d.loaded.as_slice())
        .unwrap_or_default();
    let report = BootReport {
        stage0: env!("CARGO_PKG_VERSION"),
        uptime_at_start_ms: s.clock.uptime_at_start_ms,
        uptime_at_init_ms: uptime_ms(),
        initramfs_ms: s.clock.total_ms(),
        phases: &s.clock.phases,
        root,
        init,
        modules,
        stage0_peak_rss_kb: peak_rss_kb(),
    };
    let result = std::fs::create_dir_all(layout::RUN_TERRA).and_then(|()| {
        let json = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
        std::fs::write(layout::BOOT_REPORT, json)
    });
    if let Err(e) = result {
        log::warn!("cannot write {}: {e}", layout::BOOT_REPORT);
    }
}
