//! The boot, as a script: each phase in order (ARCHITECTURE.md §2); any failure goes to rescue.

use std::convert::Infallible;
use std::fmt;
use std::path::Path;

use crate::config::{BootConfig, ConfigError, NodeConfig, RescueAction};
use crate::devices::{DeviceError, Devices, Paths};
use crate::early::{self, EarlyError};
use crate::iscsi::{self, target::Plan, IscsiError};
use crate::layout;
use crate::live::{self, LiveError};
use crate::network::lease::{Lease, Lease6};
use crate::network::{self, NetConfig, NetworkError};
use crate::report::{peak_rss_kb, uptime_ms, BootReport, Clock, RootReport};
use crate::rescue::{self, Diagnostics};
use crate::select::{self, SelectError, VersionReport};
use crate::storage::{self, StorageError};
use crate::switch::{self, SwitchError};

/// Where the kernel shows the firmware's iSCSI Boot Firmware Table.
const IBFT_DIR: &str = "/sys/firmware/ibft";

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
    /// Phase root: no version could be mounted.
    Select(SelectError),
    /// Phase root: the live medium's image could not be mounted.
    Live(LiveError),
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
            Failure::Live(e) => e.fmt(f),
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
from_error!(EarlyError => Early, ConfigError => Config, DeviceError => Devices, NetworkError => Network, IscsiError => Iscsi, StorageError => Storage, SelectError => Select, LiveError => Live, SwitchError => Switch);

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
        d.finish_preloads();
        diag.blocks = d.block_summary();
        diag.loaded = d.loaded.clone();
        diag.failed = d.failed.clone();
        diag.unmatched = d.unmatched;
        // Read only now: the table is for a boot that failed.
        let table = std::fs::read_to_string(Path::new("/").join(crate::hints::HINTS_FILE))
            .unwrap_or_default();
        diag.missing_drivers =
            crate::hints::missing_drivers(&crate::hints::Hints::parse(&table), &d.driverless());
    }
    rescue::enter(&diag, s.rescue)
}

fn boot(s: &mut State) -> Result<Infallible, Failure> {
    early::setup()?;
    s.clock.phase("early");

    s.phase = "config";
    // Read once: every loader below takes its keys from the same line.
    let cmdline = std::fs::read("/proc/cmdline").unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let cfg = load_config(&cmdline)?;
    let mut iscsi_plan = load_iscsi(&cfg, &cmdline)?;
    let mut net = load_network(&cfg, &cmdline, iscsi_plan.as_ref())?;
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
    // With one CPU a parallel load only competes with finding the disk; with more it hides
    // the root filesystem module's load time behind device discovery.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let preload = (cpus > 1).then(|| cfg.expected_fs_module());
    let devices = s.devices.insert(Devices::start(
        Paths::system(&kver),
        &forced,
        preload.as_deref(),
    )?);
    s.clock.phase("devices");

    // rd.iscsi.firmware / ip=ibft: the kernel shows the firmware's table only once
    // iscsi_ibft is loaded; its targets join the plan and its NICs become the network.
    let firmware = iscsi_plan.as_ref().is_some_and(|p| p.firmware);
    let ibft_net = net.as_ref().is_some_and(|n| n.ibft);
    if firmware || ibft_net {
        s.phase = "iscsi";
        devices.load("iscsi_ibft");
        let dir = Path::new(IBFT_DIR);
        let ibft = iscsi::target::read_ibft(dir);
        if let Some(plan) = iscsi_plan.as_mut().filter(|p| p.firmware) {
            plan.add_firmware(&ibft, dir)?;
        }
        let interfaces = ibft.interfaces();
        if let Some(net) = net.as_mut().filter(|_| ibft_net) {
            if interfaces.is_empty() {
                log::warn!("network: the iBFT describes no usable NIC; DHCP on any link");
            } else {
                log::info!("network: from the iBFT: {} interface(s)", interfaces.len());
                net.interfaces = interfaces;
                net.nameservers.extend(ibft.nameservers());
            }
        }
    }

    // Only when something needs it: a boot without a network need never touches a NIC.
    let mut net_report = None;
    if let Some(net) = &net {
        s.phase = "network";
        // Bonds and VLANs are made by drivers no device asks for.
        for m in net.links.modules() {
            devices.load_with(m.name, m.params);
        }
        net_report = Some(network::bring_up(
            net,
            &mut |d| devices.pump(d),
            &network::Handoff::system(),
        )?);
        s.clock.phase("network");
    }

    let mut attached = Vec::new();
    if let Some(mut plan) = iscsi_plan {
        s.phase = "iscsi";
        if plan.from_dhcp {
            let offered: Vec<&str> = net_report
                .iter()
                .flat_map(|r| &r.configured)
                .filter_map(|c| c.lease.root_path.as_deref())
                .collect();
            let mut added = 0;
            for root_path in &offered {
                if iscsi::target::add_root_path(&mut plan, &cfg.node.iscsi, root_path)? {
                    added += 1;
                }
            }
            if added == 0 {
                return Err(IscsiError::NoDhcpRootPath {
                    offered: offered
                        .iter()
                        .map(|p| iscsi::target::redact_netroot(p))
                        .collect(),
                }
                .into());
            }
        }
        attached = iscsi::attach(&plan, devices)?;
        s.clock.phase("iscsi");
    }

    s.phase = "storage";
    let root_dev = storage::find_root(&cfg, devices)?;
    s.clock.phase("storage");

    s.phase = "root";
    let chosen = match &cfg.live {
        // A live medium carries one root and no boot state: nothing to choose or count.
        Some(l) => {
            let root = live::mount_root(l, &root_dev, &mut |m| devices.load(m))?;
            switch::check_root(Path::new(layout::SYSROOT), &cfg.init)?;
            Ok(select::Chosen {
                root,
                version: None,
            })
        }
        None => select::mount_root(&cfg, &root_dev, &mut |m| devices.load(m)),
    };
    let chosen = match chosen {
        // Marked bad after a kexec into its kernel: the firmware's kernel boots the next
        // choice, and this version is never chosen again, so the reboot cannot loop.
        Err(e @ SelectError::AfterKexec { marked: true, .. }) => {
            log::error!("root: {e}; rebooting");
            rescue::halt(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
        }
        r => r?,
    };
    let (root, version) = (chosen.root, chosen.version);
    s.clock.phase("root");

    // The network phase, when it ran, already set the name (config first, then the lease).
    if net_report
        .as_ref()
        .and_then(|r| r.hostname.as_ref())
        .is_none()
    {
        set_hostname(&cfg, &cmdline);
    }
    s.phase = "switch";
    iscsi::keeper::place(&attached);
    switch::enter_root()?;
    s.clock.phase("switch");
    // Inside the real root, before the exec: the keeper is PID 1's child and outlives it.
    iscsi::keeper::leave(&attached);
    write_report(
        s,
        &root,
        version.as_ref(),
        &cfg.init,
        net_report.as_ref(),
        &attached,
    );
    log::info!(
        "exec {} after {:.1} ms in the initramfs (peak RSS {} kB)",
        cfg.init,
        s.clock.total_ms(),
        peak_rss_kb().unwrap_or(0)
    );
    let err = switch::exec_init(&cfg.init);
    // The initramfs is gone: the next boot is where another version can run. Marked bad,
    // this one is never chosen again, so a reboot cannot loop.
    if let Some(v) = &version {
        if select::exec_failed(&root, v, &err.to_string()) {
            rescue::halt(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        }
    }
    Err(err.into())
}

/// `hostname=` (Terra OS's key, the last one wins) or node.toml's `hostname`, set before
/// the switch so the real init starts with it and a configured name beats one from DHCP.
/// (Linux ≥ 5.19 applies `hostname=` itself at boot; node.toml's name and older kernels
/// need this.) Best effort: a name the kernel refuses is logged, not fatal.
fn set_hostname(cfg: &BootConfig, cmdline: &str) {
    let from_cmdline = crate::cmdline::split(cmdline)
        .into_iter()
        .rev()
        .filter(|p| p.key == "hostname")
        .filter_map(|p| p.value)
        .find(|v| !v.is_empty());
    let Some(name) = from_cmdline.or_else(|| cfg.node.hostname.clone()) else {
        return;
    };
    match nix::unistd::sethostname(&name) {
        Ok(()) => log::info!("hostname {name}"),
        Err(e) => log::warn!("cannot set hostname {name:?}: {e}"),
    }
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

/// Writes /run/terra/boot.json (now inside the real root's /run). Best effort: a report
/// that cannot be written must not stop the boot.
fn write_report(
    s: &State,
    root: &RootReport,
    version: Option<&VersionReport>,
    init: &str,
    net: Option<&network::NetworkReport>,
    iscsi: &[iscsi::Attached],
) {
    let network: Vec<&Lease> = net
        .iter()
        .flat_map(|r| &r.configured)
        .map(|c| &c.lease)
        .collect();
    let network_ipv6: Vec<&Lease6> = net
        .iter()
        .flat_map(|r| &r.configured6)
        .map(|c| &c.lease)
        .collect();
    let network_links = net.map_or(&[][..], |r| &r.links[..]);
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
        version,
        init,
        modules,
        network: &network,
        network_ipv6: &network_ipv6,
        network_links,
        iscsi,
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
