//! Phase 4, network: only when something needs it (`ip=`, `rd.neednet=1`, Terra's
//! `network=`, node.toml `[network]`). Loopback up; links renamed, bonds and VLANs made
//! (`links.rs`); the wanted links found (waiting for late NICs while uevents are handled);
//! each candidate brought up, its carrier awaited and DHCP, DHCPv6, SLAAC (`ipv6.rs`) or a
//! static address run in its own thread (`jobs.rs`); the results applied over netlink and
//! read back (`apply.rs`); `rd.route=` routes added; lease and link files, resolv.conf and
//! the host name handed to the real system. Links, addresses and routes are never torn
//! down: they outlive switch_root.

mod apply;
pub mod bond;
pub mod dhcp;
pub mod dhcp6;
pub mod ifname;
pub mod ipconfig;
pub mod ipv6;
mod jobs;
pub mod lease;
pub mod links;
pub mod netlink;
pub mod networkd;
pub mod route;
pub mod socket;
pub mod types;
pub mod vlan;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::devices::Devices;
use crate::report::network::{Lease, Lease6, LeaseRoute, MadeLink, NetworkRecords};
use apply::{apply, apply6};
pub use ipconfig::{IfaceConfig, Method, NetConfig};
use jobs::{run_jobs, Planned};
use links::Built;
use netlink::{Link, Netlink, NetlinkError, Route};
use route::ExtraRoute;
pub use types::Selector;

/// Where the handoff goes and whether the host name is set (tests say no, or use a UTS
/// namespace of their own).
#[derive(Debug, Clone)]
pub struct Handoff {
    /// `/run/terra`.
    pub run_dir: PathBuf,
    /// Call sethostname.
    pub set_hostname: bool,
}

impl Handoff {
    /// The real system's.
    pub fn system() -> Self {
        Handoff {
            run_dir: PathBuf::from(crate::layout::RUN_TERRA),
            set_hostname: true,
        }
    }
}

/// What one link did, for the failure report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Interface name.
    pub ifname: String,
    /// Hardware address.
    pub mac: String,
    /// Carrier when the attempt ended.
    pub carrier: bool,
    /// What happened: the DHCP transcript, or the error.
    pub outcome: String,
}

impl Attempt {
    /// What a job on `link` came to, with the carrier as it was then.
    fn on(link: &Link, carrier: bool, outcome: String) -> Self {
        Attempt {
            ifname: link.name.clone(),
            mac: link.mac_string(),
            carrier,
            outcome,
        }
    }

    /// A link that was configured (it had carrier), with what it got.
    fn configured(link: &Link, outcome: String) -> Self {
        Attempt::on(link, true, outcome)
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, carrier {}): {}",
            self.ifname,
            self.mac,
            if self.carrier { "up" } else { "down" },
            self.outcome
        )
    }
}

/// Why the network phase failed.
#[derive(Debug)]
pub enum NetworkError {
    /// A netlink request failed.
    Netlink(NetlinkError),
    /// A wanted link did not appear in time.
    NoLink {
        /// What was wanted.
        wanted: String,
        /// The links that were there.
        seen: Vec<String>,
    },
    /// No lease (or not every named interface got one) before the deadline.
    NoLease {
        /// Seconds the phase was allowed.
        timeout_s: u64,
        /// Every link tried.
        attempts: Vec<Attempt>,
    },
    /// A link to be made or renamed cannot be (its name is taken, it exists as something
    /// else…).
    Link {
        /// The link's name.
        link: String,
        /// What is wrong.
        problem: String,
    },
    /// An `rd.route=` the kernel refused.
    Route {
        /// The route as given.
        route: ExtraRoute,
        /// The kernel's answer.
        error: NetlinkError,
    },
    /// An address or route did not read back as set.
    Verify {
        /// Interface name.
        ifname: String,
        /// What is missing.
        missing: String,
    },
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::Netlink(e) => e.fmt(f),
            NetworkError::NoLink { wanted, seen } => write!(
                f,
                "no link {wanted} appeared; links seen: {}",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ),
            NetworkError::NoLease {
                timeout_s,
                attempts,
            } => {
                write!(f, "no network configuration within {timeout_s} s")?;
                if attempts.is_empty() {
                    write!(f, "; no link was tried")?;
                }
                for a in attempts {
                    write!(f, "\n  link {a}")?;
                }
                Ok(())
            }
            NetworkError::Link { link, problem } => write!(f, "{link}: {problem}"),
            NetworkError::Route { route, error } => write!(f, "rd.route={route}: {error}"),
            NetworkError::Verify { ifname, missing } => {
                write!(f, "{ifname}: {missing} did not read back after being set")
            }
        }
    }
}

impl std::error::Error for NetworkError {}

impl From<NetlinkError> for NetworkError {
    fn from(e: NetlinkError) -> Self {
        NetworkError::Netlink(e)
    }
}

/// One configured interface.
#[derive(Debug, Clone)]
pub struct Configured {
    /// The link.
    pub link: Link,
    /// What it got.
    pub lease: Lease,
}

/// One interface configured for IPv6.
#[derive(Debug, Clone)]
pub struct Configured6 {
    /// The link.
    pub link: Link,
    /// What it got.
    pub lease: Lease6,
}

/// What the network phase did.
#[derive(Debug, Clone, Default)]
pub struct NetworkReport {
    /// Interfaces configured for IPv4.
    pub configured: Vec<Configured>,
    /// Interfaces configured for IPv6 (an interface may be in both lists).
    pub configured6: Vec<Configured6>,
    /// Every link tried, with its outcome.
    pub attempts: Vec<Attempt>,
    /// Host name set, if any.
    pub hostname: Option<String>,
    /// Links made or renamed (bonds, VLANs, `ifname=`).
    pub links: Vec<MadeLink>,
}

impl NetworkReport {
    /// The boot report's network parts: the IPv4 leases, the IPv6 configurations and the
    /// links made, in the order they were configured.
    pub fn records(&self) -> NetworkRecords<'_> {
        NetworkRecords {
            leases: self.configured.iter().map(|c| &c.lease).collect(),
            leases6: self.configured6.iter().map(|c| &c.lease).collect(),
            links: &self.links,
        }
    }

    /// One line per configured interface, for logs and the rescue report.
    pub fn summary(&self) -> Vec<String> {
        self.configured
            .iter()
            .map(|c| {
                format!(
                    "{}: {}/{} ({}{})",
                    c.link.name,
                    c.lease.address,
                    c.lease.prefix,
                    c.lease.source,
                    c.lease
                        .server_id
                        .map(|s| format!(" from {s}"))
                        .unwrap_or_default()
                )
            })
            .chain(self.configured6.iter().map(|c| {
                format!(
                    "{}: {}/{} ({}{})",
                    c.link.name,
                    c.lease.address,
                    c.lease.prefix,
                    c.lease.method,
                    c.lease
                        .gateway
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default()
                )
            }))
            .collect()
    }
}

/// The network phase as the boot runs it: loads the drivers of the links it is to make
/// (bonds and VLANs are made by drivers no device asks for), then [`bring_up`] with the
/// system's handoff, handling `devices`' events while it waits.
pub fn run(cfg: &NetConfig, devices: &mut Devices) -> Result<NetworkReport, NetworkError> {
    for m in cfg.links.modules() {
        devices.load_with(m.name, m.params);
    }
    bring_up(cfg, &mut |d| devices.pump(d), &Handoff::system())
}

/// Brings the network up as `cfg` says. `pump` waits for (and handles) device events for at
/// most the given time, so NICs whose drivers load late still show up.
pub fn bring_up(
    cfg: &NetConfig,
    pump: &mut dyn FnMut(Duration),
    handoff: &Handoff,
) -> Result<NetworkReport, NetworkError> {
    let deadline = Instant::now() + cfg.timeout;
    let mut nl = Netlink::open()?;
    for l in nl.links()?.iter().filter(|l| l.loopback && !l.up) {
        nl.set_up(l, None)?;
    }
    // Before any interface is looked for: the links to configure may be the ones made.
    let built = links::build(&cfg.links, &mut nl, pump, deadline)?;
    let jobs = find_links(cfg, &built, &mut nl, pump, deadline)?;
    let results = run_jobs(jobs, deadline, cfg.hostname.as_deref(), pump);

    let mut report = NetworkReport::default();
    // "Any link" is decided per family: an IPv4 winner does not stop the IPv6 search.
    let mut any_won = [false; 2];
    let mut any_tried = [false; 2];
    let mut named_failed = false;
    for job in results {
        let family = usize::from(job.ipv6);
        match job.result {
            Ok(planned) => {
                if job.group_any {
                    if any_won[family] {
                        continue; // a later winner of "any": leave it unconfigured
                    }
                    any_won[family] = true;
                }
                let plan = match planned {
                    Planned::V4(plan) => plan,
                    Planned::V6(plan) => {
                        let mut lease = apply6(&mut nl, &job.link, &plan)?;
                        lease.link = built.made(&job.link.name).cloned();
                        report.attempts.push(Attempt::configured(
                            &job.link,
                            format!("{} {}/{}", lease.method, lease.address, lease.prefix),
                        ));
                        report.configured6.push(Configured6 {
                            link: job.link,
                            lease,
                        });
                        continue;
                    }
                };
                let mut lease = apply(&mut nl, &job.link, &plan)?;
                lease.link = built.made(&job.link.name).cloned();
                report.attempts.push(Attempt::configured(
                    &job.link,
                    format!("{} {}/{}", lease.source, lease.address, lease.prefix),
                ));
                report.configured.push(Configured {
                    link: job.link,
                    lease,
                });
            }
            Err(a) => {
                if job.group_any {
                    any_tried[family] = true;
                } else {
                    named_failed = true;
                }
                report.attempts.push(a);
            }
        }
    }
    if named_failed
        || (0..2).any(|f| any_tried[f] && !any_won[f])
        || (report.configured.is_empty() && report.configured6.is_empty())
    {
        return Err(NetworkError::NoLease {
            timeout_s: cfg.timeout.as_secs(),
            attempts: report.attempts,
        });
    }
    // After the addresses: a gateway is reachable only through a configured subnet.
    for r in &cfg.routes {
        add_extra_route(&mut nl, r, &mut report)?;
    }
    report.links = built.links;
    handoff_files(cfg, handoff, &mut report);
    Ok(report)
}

fn matches(sel: &Selector, l: &Link) -> bool {
    match sel {
        Selector::Any => l.ether && !l.loopback && l.mac.len() == 6,
        Selector::Name(n) => &l.name == n,
        Selector::Mac(m) => l.mac == m[..],
    }
}

/// Adds one `rd.route=` and reads it back; the lease of the interface it leaves by lists
/// it (`origin: rd.route`).
fn add_extra_route(
    nl: &mut Netlink,
    r: &ExtraRoute,
    report: &mut NetworkReport,
) -> Result<(), NetworkError> {
    let fail = |error| NetworkError::Route {
        route: r.clone(),
        error,
    };
    let oif = match &r.dev {
        None => 0,
        Some(d) => match nl.link_named(d).map_err(fail)? {
            Some(l) => l.index,
            None => {
                return Err(fail(NetlinkError {
                    what: format!("find interface {d}"),
                    errno: nix::errno::Errno::ENODEV,
                }))
            }
        },
    };
    let route = Route {
        destination: r.destination,
        prefix: r.prefix,
        gateway: r.gateway,
        oif,
        onlink: false,
    };
    nl.add_route(&route, r.dev.as_deref().unwrap_or(""))
        .map_err(fail)?;
    let installed = nl.routes().map_err(fail)?;
    let Some(found) = installed.iter().find(|i| {
        i.prefix == r.prefix
            && i.destination == r.destination
            && i.gateway == r.gateway
            && (oif == 0 || i.oif == oif)
    }) else {
        return Err(NetworkError::Verify {
            ifname: r.dev.clone().unwrap_or_else(|| "rd.route".into()),
            missing: format!("route {route}"),
        });
    };
    log::info!("rd.route: {route} (interface {})", found.oif);
    if let Some(c) = report
        .configured
        .iter_mut()
        .find(|c| c.link.index == found.oif)
    {
        c.lease.routes.push(LeaseRoute {
            destination: format!("{}/{}", r.destination, r.prefix),
            gateway: r.gateway,
            origin: Some("rd.route"),
        });
    }
    Ok(())
}

/// Waits (bounded) until every selector matches a link; returns one job per (link, entry).
/// Among the links, only those `built` leaves eligible (bond members and VLAN parents are
/// taken; "any link" is the top of what was made).
fn find_links(
    cfg: &NetConfig,
    built: &Built,
    nl: &mut Netlink,
    pump: &mut dyn FnMut(Duration),
    deadline: Instant,
) -> Result<Vec<(Link, IfaceConfig, bool)>, NetworkError> {
    loop {
        let links = nl.links()?;
        let mut jobs = Vec::new();
        let mut missing = None;
        let fits = |sel: &Selector, l: &Link| matches(sel, l) && built.eligible(sel, l);
        let named: Vec<&Link> = links
            .iter()
            .filter(|l| {
                cfg.interfaces
                    .iter()
                    .any(|i| i.selector != Selector::Any && fits(&i.selector, l))
            })
            .collect();
        for i in &cfg.interfaces {
            let found: Vec<&Link> = links
                .iter()
                .filter(|l| fits(&i.selector, l))
                .filter(|l| i.selector != Selector::Any || !named.contains(l))
                .collect();
            if found.is_empty() {
                missing = Some(i.selector.to_string());
            }
            let any = i.selector == Selector::Any;
            jobs.extend(found.into_iter().map(|l| (l.clone(), i.clone(), any)));
        }
        if missing.is_none() {
            return Ok(jobs);
        }
        if Instant::now() >= deadline {
            return Err(NetworkError::NoLink {
                wanted: missing.unwrap_or_default(),
                seen: links
                    .iter()
                    .map(|l| format!("{} ({})", l.name, l.mac_string()))
                    .collect(),
            });
        }
        pump(Duration::from_millis(50));
    }
}

/// Lease files, resolv.conf and the host name: best effort, like the boot report — a
/// handoff file that cannot be written must not stop a boot whose network is up.
fn handoff_files(cfg: &NetConfig, handoff: &Handoff, report: &mut NetworkReport) {
    for l in &report.links {
        if let Err(e) = lease::write_link(&handoff.run_dir, l) {
            log::warn!("cannot write the description of {}: {e}", l.name);
        }
    }
    let mut dns: Vec<std::net::IpAddr> = cfg.nameservers.iter().map(|&a| a.into()).collect();
    let mut search = Vec::new();
    for c in &report.configured {
        if let Err(e) = lease::write_lease(&handoff.run_dir, &c.lease) {
            log::warn!("cannot write the lease of {}: {e}", c.link.name);
        }
        dns.extend(c.lease.dns.iter().map(|&a| std::net::IpAddr::from(a)));
        if c.lease.search.is_empty() {
            search.extend(c.lease.domain.iter().cloned());
        } else {
            search.extend(c.lease.search.iter().cloned());
        }
    }
    dns.extend(cfg.nameservers6.iter().map(|&a| std::net::IpAddr::from(a)));
    for c in &report.configured6 {
        if let Err(e) = lease::write_lease6(&handoff.run_dir, &c.lease) {
            log::warn!("cannot write the IPv6 description of {}: {e}", c.link.name);
        }
        dns.extend(c.lease.dns.iter().map(|&a| std::net::IpAddr::from(a)));
        search.extend(c.lease.search.iter().cloned());
    }
    if let Err(e) = lease::write_resolv(&handoff.run_dir, &lease::resolv_conf(&dns, &search)) {
        log::warn!("cannot write resolv.conf: {e}");
    }
    let hostname = cfg.hostname.clone().or_else(|| {
        report
            .configured
            .iter()
            .find_map(|c| c.lease.hostname.clone())
            .filter(|h| ipconfig::valid_hostname(h))
    });
    if let (Some(h), true) = (&hostname, handoff.set_hostname) {
        match nix::unistd::sethostname(h) {
            Ok(()) => log::info!("hostname {h}"),
            Err(e) => log::warn!("cannot set hostname {h}: {e}"),
        }
    }
    report.hostname = hostname;
}

#[cfg(test)]
mod tests {
    use super::apply::routes_for;
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn classless_routes_replace_the_router() {
        let o = dhcp::Offered {
            address: Ipv4Addr::new(10, 77, 0, 50),
            prefix: 24,
            routers: vec![Ipv4Addr::new(10, 77, 0, 1)],
            classless_routes: vec![
                (Ipv4Addr::new(10, 99, 0, 0), 16, Ipv4Addr::new(10, 77, 0, 1)),
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 77, 0, 254)),
                (Ipv4Addr::new(10, 98, 0, 0), 16, Ipv4Addr::UNSPECIFIED),
                (
                    Ipv4Addr::new(10, 97, 0, 0),
                    16,
                    Ipv4Addr::new(172, 16, 0, 1),
                ),
            ],
            ..Default::default()
        };
        let r = routes_for(&o, 3);
        assert_eq!(r.len(), 4);
        assert_eq!(r[1].to_string(), "default via 10.77.0.254");
        assert_eq!(r[2].gateway, None);
        assert!(!r[0].onlink && r[3].onlink);
        let plain = dhcp::Offered {
            classless_routes: vec![],
            ..o
        };
        assert_eq!(
            routes_for(&plain, 3)[0].to_string(),
            "default via 10.77.0.1"
        );
    }

    #[test]
    fn no_lease_message_lists_each_link() {
        let e = NetworkError::NoLease {
            timeout_s: 4,
            attempts: vec![
                Attempt {
                    ifname: "eth0".into(),
                    mac: "52:54:00:12:34:56".into(),
                    carrier: true,
                    outcome: "DHCP no lease before the deadline: sent 3 DISCOVER, 0 REQUEST; received nothing".into(),
                },
                Attempt {
                    ifname: "eth1".into(),
                    mac: "52:54:00:12:34:57".into(),
                    carrier: false,
                    outcome: "no carrier; nothing sent".into(),
                },
            ],
        };
        let s = e.to_string();
        assert!(s.contains("within 4 s"), "{s}");
        assert!(
            s.contains("link eth0 (52:54:00:12:34:56, carrier up): DHCP"),
            "{s}"
        );
        assert!(
            s.contains("link eth1 (52:54:00:12:34:57, carrier down): no carrier"),
            "{s}"
        );
    }
}
