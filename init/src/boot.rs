//! The boot, as a script: each phase in order (ARCHITECTURE.md §2); any failure goes to rescue.

use std::convert::Infallible;
use std::fmt;
use std::path::Path;

use nix::sys::reboot::RebootMode;

use crate::config::{BootConfig, ConfigError, NodeConfig, RescueAction};
use crate::devices::{DeviceError, Devices};
use crate::early::{self, EarlyError};
use crate::iscsi::{self, target::Plan, IscsiError};
use crate::layout;
use crate::layout::REPORT_DIR;
use crate::network::{self, NetConfig, NetworkError, NetworkReport};
use crate::report::message::{self, Event, Message};
use crate::report::outbox::{Destination, Outbox};
use crate::report::{self, peak_rss_kb, send, Clock, Parts};
use crate::rescue::{self, Diagnostics};
use crate::select::{self, Chosen, SelectError};
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
    /// Phase network.
    Network(NetworkError),
    /// Phase iscsi.
    Iscsi(IscsiError),
    /// Phase storage.
    Storage(StorageError),
    /// Phase root: no version (or live image) could be mounted.
    Select(SelectError),
    /// Phases root and switch.
    Switch(SwitchError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Early(e) => e.fmt(f),
            Failure::Config(e) => e.fmt(f),
            Failure::Devices(e) => e.fmt(f),
            Failure::Network(e) => e.fmt(f),
            Failure::Iscsi(e) => e.fmt(f),
            Failure::Storage(e) => e.fmt(f),
            Failure::Select(e) => e.fmt(f),
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
from_error!(EarlyError => Early, ConfigError => Config, DeviceError => Devices, NetworkError => Network, IscsiError => Iscsi, StorageError => Storage, SelectError => Select, SwitchError => Switch);

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
    if let Some(d) = &mut s.devices {
        diag.add_devices(d);
    }
    rescue::enter(&diag, s.rescue)
}

fn boot(s: &mut State) -> Result<Infallible, Failure> {
    early::setup()?;
    s.clock.phase("early");

    s.phase = "config";
    let (cfg, mut iscsi_plan, mut net) = configure()?;
    s.rescue = cfg.rescue;
    s.awaited = Some(cfg.root.to_string());
    s.clock.phase("config");

    s.phase = "devices";
    let devices = s.devices.insert(Devices::start_for_boot(&cfg)?);
    s.clock.phase("devices");

    // The iBFT, only with rd.iscsi.firmware or ip=ibft: its targets and NICs join the plans.
    s.phase = "iscsi";
    iscsi::merge_firmware(iscsi_plan.as_mut(), net.as_mut(), devices)?;

    // Only when something needs it: a boot without a network need never touches a NIC.
    let mut net_report = None;
    if let Some(net) = &net {
        s.phase = "network";
        net_report = Some(network::run(net, devices)?);
        s.clock.phase("network");
    }

    let mut attached = Vec::new();
    if let Some(mut plan) = iscsi_plan {
        s.phase = "iscsi";
        iscsi::add_dhcp_targets(&mut plan, &cfg.node.iscsi, net_report.as_ref())?;
        attached = iscsi::attach(&plan, devices)?;
        s.clock.phase("iscsi");
    }
    // A root on the network: the real system's networkd must keep what stage0 configured.
    if let (false, Some(r)) = (attached.is_empty(), &net_report) {
        let leases: Vec<_> = r.configured.iter().map(|c| &c.lease).collect();
        if let Err(e) = network::networkd::write(Path::new(network::networkd::DIR), &leases) {
            log::warn!("cannot hand the boot network to networkd: {e}");
        }
    }

    s.phase = "storage";
    let root_dev = storage::find_root(&cfg, devices)?;
    s.clock.phase("storage");

    s.phase = "root";
    let chosen = match select::mount(&cfg, &root_dev, &mut |m| devices.load(m)) {
        // Failed after a kexec into its kernel, and the state says so (marked bad, or its
        // kernel not started again): the firmware's kernel boots the next choice, and
        // never this kexec again, so the reboot cannot loop.
        Err(
            e @ SelectError::AfterKexec {
                recorded: Some(_), ..
            },
        ) => {
            log::error!("root: {e}; rebooting");
            rescue::halt(RebootMode::RB_AUTOBOOT)
        }
        r => r?,
    };
    s.clock.phase("root");

    // The fleet controller hears which version this boot chose, before the switch.
    let hostname = cfg
        .hostname
        .clone()
        .or_else(|| net_report.as_ref().and_then(|r| r.hostname.clone()))
        .or_else(|| chosen.disk_hostname.clone());
    if report_boot(&cfg, &chosen, hostname, net_report.is_some(), &s.clock) {
        s.clock.phase("report");
    }

    s.phase = "switch";
    // The network phase, when it ran, already set the name (config first, then the lease).
    if net_report.as_ref().is_none_or(|r| r.hostname.is_none()) {
        switch::set_hostname(cfg.hostname.as_deref());
    }
    iscsi::keeper::place(&attached);
    switch::enter_root()?;
    s.clock.phase("switch");
    // Inside the real root, before the exec: the keeper is PID 1's child and outlives it.
    iscsi::keeper::leave(&attached);
    report::write(
        &s.clock,
        &Parts {
            root: &chosen.root,
            version: chosen.version.as_ref(),
            init: &chosen.init,
            modules: &devices.loaded,
            network: net_report.as_ref().map(NetworkReport::records),
            iscsi: attached.iter().map(|a| &a.report).collect(),
        },
    );
    log::info!(
        "exec {} after {:.1} ms in the initramfs (peak RSS {} kB)",
        chosen.init,
        s.clock.total_ms(),
        peak_rss_kb().unwrap_or(0)
    );
    let err = switch::exec_init(&chosen.init);
    // The initramfs is gone: the next boot is where another version can run. Marked bad,
    // this one is never chosen again, so a reboot cannot loop.
    if let Some(v) = &chosen.version {
        if select::exec_failed(&chosen.root, v, &err.to_string()) {
            rescue::halt(RebootMode::RB_AUTOBOOT);
        }
    }
    Err(err.into())
}

/// Sends the boot report to the controller the initramfs's node.toml names (diskless
/// nodes: their per-node archive) or else the disk's, when there is one: once, within
/// [`send::BOOT_BOUND`], and only when the network is up. What was not delivered waits in
/// the outbox for `terra-report.service` in the booted system; the destination is kept
/// there too, for the confirmation. Never fails the boot. Returns whether there was a
/// controller to report to.
fn report_boot(
    cfg: &BootConfig,
    chosen: &Chosen,
    hostname: Option<String>,
    network_up: bool,
    clock: &Clock,
) -> bool {
    let from_initramfs = match Destination::load(
        &cfg.node.controller,
        Path::new(layout::NODE_CONFIG_ABS)
            .parent()
            .unwrap_or(Path::new("/")),
    ) {
        Ok(d) => d,
        Err(e) => {
            log::warn!("report: {e}; this boot is not reported");
            return false;
        }
    };
    let Some(dest) = from_initramfs.or_else(|| chosen.disk_controller.clone()) else {
        return false;
    };
    let version = chosen.version.as_ref().map(message::Version::from_report);
    let mut m = Message {
        event: Event::Boot,
        hostname: hostname.unwrap_or_default(),
        boot_id: message::boot_id(),
        sent_by: "stage0".into(),
        version,
        reason: None,
        phases: message::phase_times(&clock.phases),
        initramfs_ms: (clock.total_ms() * 10.0).round() / 10.0,
        uptime_at_start_ms: clock.uptime_at_start_ms,
    };
    m.fit();
    let outbox = Outbox::system();
    if let Err(e) = outbox.keep(&dest, &m.hostname) {
        log::warn!("report: cannot keep the controller's address in {REPORT_DIR}: {e}");
    }
    let sent = if network_up {
        dest.send(&m, send::BOOT_BOUND)
            .map_err(|e| log::warn!("report: not sent ({e}); the booted system sends it"))
            .is_ok()
    } else {
        log::info!("report: no network in the initramfs; the booted system sends it");
        false
    };
    if sent {
        log::info!("report: boot reported to {}", dest.url_text());
    } else {
        match outbox.leave(&m) {
            Ok(_) => crate::bless::place_report_unit(Path::new(layout::SYSROOT)),
            Err(e) => log::warn!("report: cannot leave it in {REPORT_DIR}: {e}"),
        }
    }
    true
}

/// The config phase: reads the command line once (every loader takes its keys from the
/// same line), then resolves the boot, the iSCSI plan and the network task.
fn configure() -> Result<(BootConfig, Option<Plan>, Option<NetConfig>), ConfigError> {
    let cmdline = std::fs::read("/proc/cmdline").unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let cfg = load_config(&cmdline)?;
    let iscsi_plan = load_iscsi(&cfg, &cmdline)?;
    let net = load_network(&cfg, &cmdline, iscsi_plan.as_ref())?;
    if cfg.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    Ok((cfg, iscsi_plan, net))
}

fn load_config(cmdline: &str) -> Result<BootConfig, ConfigError> {
    let node = NodeConfig::load(Path::new(layout::NODE_CONFIG_ABS))?;
    BootConfig::resolve(node, cmdline)
}

/// The network phase's task, from node.toml and the command line; None when nothing needs
/// the network. iSCSI needs it; with `rd.iscsi.firmware` the iBFT may configure it.
fn load_network(
    cfg: &BootConfig,
    cmdline: &str,
    iscsi: Option<&Plan>,
) -> Result<Option<NetConfig>, ConfigError> {
    let needs = network::ipconfig::Needs {
        network: iscsi.is_some(),
        firmware: iscsi.is_some_and(|p| p.firmware),
    };
    network::ipconfig::resolve(
        &cfg.node.network,
        cfg.node.hostname.as_deref(),
        cmdline,
        needs,
    )
}

/// The iscsi phase's task: targets from node.toml, the command line or the iBFT; None
/// when there is no iSCSI root.
fn load_iscsi(cfg: &BootConfig, cmdline: &str) -> Result<Option<Plan>, ConfigError> {
    iscsi::target::plan(&cfg.node.iscsi, cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ipconfig::{Method, Selector};

    /// What the network phase would do for `line` with an empty node.toml: the interfaces
    /// (None: no network phase) and whether they are to come from the iBFT.
    fn network_for(line: &str) -> (Option<Vec<(Selector, Method)>>, bool) {
        let cfg = BootConfig::resolve(NodeConfig::default(), line).unwrap();
        let plan = load_iscsi(&cfg, line).unwrap();
        let net = load_network(&cfg, line, plan.as_ref()).unwrap();
        let ibft = net.as_ref().is_some_and(|n| n.ibft);
        let ifaces = net.map(|n| {
            n.interfaces
                .into_iter()
                .map(|i| (i.selector, i.method))
                .collect()
        });
        (ifaces, ibft)
    }

    #[test]
    fn the_ibft_configures_the_network_only_when_nothing_else_does() {
        let dhcp_any = Some(vec![(Selector::Any, Method::Dhcp { requested: None })]);
        assert_eq!(network_for("quiet"), (None, false));
        // rd.iscsi.firmware alone: the network is needed, and the iBFT's NICs will replace
        // the DHCP-on-any-link default once the table is read.
        assert_eq!(network_for("rd.iscsi.firmware"), (dhcp_any.clone(), true));
        for line in ["ip=ibft", "ip=\"ibft\"", "rd.iscsi.firmware ip=ibft"] {
            assert_eq!(network_for(line), (dhcp_any.clone(), true), "{line}");
        }
        // An explicit network wins over the firmware's.
        assert_eq!(
            network_for("rd.iscsi.firmware ip=dhcp"),
            (dhcp_any.clone(), false)
        );
        let (ifaces, ibft) = network_for("rd.iscsi.firmware network=10.0.0.5/24");
        assert!(!ibft);
        assert!(matches!(
            ifaces.as_deref(),
            Some([(Selector::Any, Method::Static(_))])
        ));
        // iSCSI without the firmware never reads the table.
        assert_eq!(
            network_for("netroot=iscsi:10.0.2.2::::iqn.2024-01.x:root"),
            (dhcp_any, false)
        );
    }
}
