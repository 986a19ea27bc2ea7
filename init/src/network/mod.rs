//! Phase 4, network: only when something needs it (`ip=`, `rd.neednet=1`, Terra's
//! `network=`, node.toml `[network]`). Loopback up; links renamed, bonds and VLANs made
//! (`links.rs`); the wanted links found (waiting for late NICs while uevents are handled);
//! each candidate brought up, its carrier awaited and DHCP, DHCPv6, SLAAC (`ipv6.rs`) or a
//! static address run in its own thread; the results applied over netlink and read back; `rd.route=` routes added;
//! lease and link files, resolv.conf and the host name handed to the real system. Links,
//! addresses and routes are never torn down: they outlive switch_root.

pub mod bond;
pub mod dhcp;
pub mod dhcp6;
pub mod ifname;
pub mod ipconfig;
pub mod ipv6;
pub mod lease;
pub mod links;
pub mod netlink;
pub mod route;
pub mod socket;
pub mod types;
pub mod vlan;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::devices::Devices;
use crate::report::network::{Lease, Lease6, LeaseRoute, LeaseRoute6, MadeLink, NetworkRecords};
pub use ipconfig::{IfaceConfig, Method, NetConfig};
use links::Built;
use netlink::{Link, Netlink, NetlinkError, Route, Route6};
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

/// A job's result: the address plan, or what went wrong.
struct Job {
    link: Link,
    group_any: bool,
    ipv6: bool,
    result: Result<Planned, Attempt>,
}

/// A plan of either family.
enum Planned {
    V4(Plan),
    V6(Plan6),
}

/// What to apply to a link for IPv6.
struct Plan6 {
    method: &'static str,
    address: Ipv6Addr,
    prefix: u8,
    /// Routes stage0 adds (a static gateway's default route).
    add: Vec<Route6>,
    /// Routes the kernel already has from router advertisements.
    learned: Vec<Route6>,
    dns: Vec<Ipv6Addr>,
    search: Vec<String>,
    lifetimes: Option<(u32, u32)>,
    server_duid: Option<String>,
    /// The address is the kernel's (SLAAC): only read back.
    kernels: bool,
    mtu: Option<u32>,
    started: Instant,
}

/// How long DHCPv6 waits, after its Reply, for a router advertisement to bring the default
/// route (the kernel usually has it by then: it solicits routers right after DAD).
const RA_GRACE: Duration = Duration::from_secs(5);

/// What to apply to a link.
struct Plan {
    source: &'static str,
    offered: dhcp::Offered,
    mtu: Option<u32>,
    started: Instant,
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

/// Runs every job in its own thread; the first success among the "any" jobs stops the rest.
fn run_jobs(
    jobs: Vec<(Link, IfaceConfig, bool)>,
    deadline: Instant,
    hostname: Option<&str>,
    pump: &mut dyn FnMut(Duration),
) -> Vec<Job> {
    let any_done = AtomicBool::new(false);
    let any6_done = AtomicBool::new(false);
    let never = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(link, iface, any)| {
                let ipv6 = iface.method.is_ipv6();
                let stop = match (any, ipv6) {
                    (true, false) => &any_done,
                    (true, true) => &any6_done,
                    (false, _) => &never,
                };
                scope.spawn(move || {
                    let result = if ipv6 {
                        run_one6(&link, &iface, deadline, stop, any).map(Planned::V6)
                    } else {
                        run_one(&link, &iface, deadline, stop, any, hostname).map(Planned::V4)
                    };
                    if any && result.is_ok() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    Job {
                        link,
                        group_any: any,
                        ipv6,
                        result,
                    }
                })
            })
            .collect();
        // Device events keep being handled while the clients run.
        while handles.iter().any(|h| !h.is_finished()) {
            pump(Duration::from_millis(50));
        }
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// A job's link, up with the configured MTU, once its carrier came or the deadline passed.
struct Up {
    /// The job's own netlink socket.
    nl: Netlink,
    /// Whether the link has carrier.
    carrier: bool,
}

/// What every job does first, whatever the family: its own netlink socket, the link up with
/// the configured MTU, and its carrier awaited until `deadline`.
fn link_up(
    link: &Link,
    iface: &IfaceConfig,
    deadline: Instant,
    started: Instant,
) -> Result<Up, Attempt> {
    let fail = |carrier, e: NetlinkError| Attempt::on(link, carrier, e.to_string());
    let mut nl = Netlink::open().map_err(|e| fail(link.carrier, e))?;
    nl.set_up(link, iface.mtu)
        .map_err(|e| fail(link.carrier, e))?;
    let now = nl
        .wait_carrier(link.index, deadline)
        .map_err(|e| fail(false, e))?;
    log::debug!(
        "{}: carrier {} after {:.1} ms (running {})",
        link.name,
        if now.carrier { "up" } else { "down" },
        started.elapsed().as_secs_f64() * 1000.0,
        now.running
    );
    Ok(Up {
        nl,
        carrier: now.carrier,
    })
}

impl Up {
    /// An exchange needs carrier: without it nothing is sent (`why` says what was not done).
    fn require_carrier(&self, link: &Link, why: &str) -> Result<(), Attempt> {
        if self.carrier {
            Ok(())
        } else {
            Err(Attempt::on(link, false, format!("no carrier; {why}")))
        }
    }

    /// A static address: a named link gets it with or without carrier; "any link" means
    /// the first one that is plugged in.
    fn static_allowed(&self, link: &Link, any: bool) -> Result<(), Attempt> {
        if any && !self.carrier {
            return Err(Attempt::on(link, false, "no carrier".into()));
        }
        Ok(())
    }

    /// A failed exchange, with the carrier read again: it may have gone meanwhile.
    fn failed(&mut self, link: &Link, outcome: String) -> Attempt {
        let carrier = self.nl.link(link.index).map(|l| l.carrier).unwrap_or(false);
        Attempt::on(link, carrier, outcome)
    }
}

/// The link's hardware address as a DHCP client identity (`client` names the protocol).
fn ethernet_mac(link: &Link, client: &str) -> Result<[u8; 6], Attempt> {
    <[u8; 6]>::try_from(link.mac.as_slice()).map_err(|_| {
        Attempt::on(
            link,
            true,
            format!("not an Ethernet address: {client} needs one"),
        )
    })
}

/// One IPv4 job: the link up, then a static address planned or a DHCP exchange run.
fn run_one(
    link: &Link,
    iface: &IfaceConfig,
    deadline: Instant,
    stop: &AtomicBool,
    any: bool,
    hostname: Option<&str>,
) -> Result<Plan, Attempt> {
    let started = Instant::now();
    let mut up = link_up(link, iface, deadline, started)?;
    match &iface.method {
        Method::Auto6 | Method::Dhcp6 | Method::Static6(_) => Err(Attempt::on(
            link,
            up.carrier,
            "an IPv6 method in the IPv4 client".into(),
        )),
        Method::Static(s) => {
            up.static_allowed(link, any)?;
            Ok(Plan {
                source: "static",
                offered: dhcp::Offered {
                    address: s.address,
                    prefix: s.prefix,
                    routers: s.gateway.into_iter().collect(),
                    ..Default::default()
                },
                mtu: iface.mtu,
                started,
            })
        }
        Method::Dhcp { requested } => {
            up.require_carrier(link, "nothing sent")?;
            let mac = ethernet_mac(link, "DHCP")?;
            let mut t = socket::UdpTransport::bind(&link.name)
                .map_err(|e| Attempt::on(link, true, format!("cannot bind UDP port 68: {e}")))?;
            let settings = dhcp::Settings {
                identity: dhcp::Identity {
                    mac,
                    hostname: hostname.map(str::to_string),
                },
                requested: *requested,
                deadline,
            };
            let mut log = dhcp::Transcript::default();
            let mut rng = dhcp::Rng::from_kernel();
            let reply = dhcp::run(&mut t, &settings, stop, &mut rng, &mut log)
                .map_err(|e| up.failed(link, format!("DHCP {e}: {log}")))?;
            log::info!("{}: {log}", link.name);
            Ok(Plan {
                source: "dhcp",
                mtu: reply
                    .offered
                    .mtu
                    .map(u32::from)
                    .filter(|m| *m >= 68)
                    .or(iface.mtu),
                offered: reply.offered,
                started,
            })
        }
    }
}

/// One IPv6 job: IPv6 switched on for the link (before it goes up, so the kernel solicits
/// routers), then SLAAC awaited, a DHCPv6 exchange run, or a static address planned.
fn run_one6(
    link: &Link,
    iface: &IfaceConfig,
    deadline: Instant,
    stop: &AtomicBool,
    any: bool,
) -> Result<Plan6, Attempt> {
    let started = Instant::now();
    ipv6::enable(&link.name, iface.method == Method::Auto6)
        .map_err(|e| Attempt::on(link, link.carrier, e.to_string()))?;
    let mut up = link_up(link, iface, deadline, started)?;
    let plan = |method, address, prefix| Plan6 {
        method,
        address,
        prefix,
        add: Vec::new(),
        learned: Vec::new(),
        dns: Vec::new(),
        search: Vec::new(),
        lifetimes: None,
        server_duid: None,
        kernels: false,
        mtu: iface.mtu,
        started,
    };
    let fail = |outcome: String| Attempt::on(link, true, outcome);
    match &iface.method {
        Method::Static6(s) => {
            up.static_allowed(link, any)?;
            let mut p = plan("static", s.address, s.prefix);
            p.add = s
                .gateway
                .map(|g| Route6 {
                    destination: Ipv6Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(g),
                    oif: link.index,
                    protocol: 0,
                })
                .into_iter()
                .collect();
            Ok(p)
        }
        Method::Auto6 => {
            up.require_carrier(link, "no router heard")?;
            let a = ipv6::wait_autoconf(&mut up.nl, link.index, deadline, stop)
                .map_err(|e| fail(format!("SLAAC: {e}")))?;
            let mut p = plan("auto6", a.address.address, a.address.prefix);
            p.kernels = true;
            p.learned = std::iter::once(a.default).chain(a.routes).collect();
            Ok(p)
        }
        Method::Dhcp6 => {
            up.require_carrier(link, "nothing sent")?;
            let mac = ethernet_mac(link, "DHCPv6")?;
            // Messages go from the link-local address, usable once DAD is done.
            let ll = ipv6::wait_link_local(&mut up.nl, link.index, deadline, stop)
                .map_err(|e| fail(format!("DHCPv6: {e}")))?;
            let mut t = socket::UdpTransport6::bind(&link.name, link.index, ll)
                .map_err(|e| fail(format!("cannot bind UDP [{ll}]:546: {e}")))?;
            let settings = dhcp6::Settings6 { mac, deadline };
            let mut log = dhcp6::Transcript6::default();
            let mut rng = dhcp::Rng::from_kernel();
            let a = dhcp6::run(&mut t, &settings, stop, &mut rng, &mut log)
                .map_err(|e| up.failed(link, format!("DHCPv6 {e}: {log}")))?;
            log::info!("{}: {log}", link.name);
            // DHCPv6 gives an address, not a route: the default route and the on-link
            // prefix come from router advertisements (RFC 8415 §18.2.10.1 leaves them there).
            let ra_until = deadline.min(Instant::now() + RA_GRACE);
            let default = ipv6::wait_default_route(&mut up.nl, link.index, ra_until, stop)
                .map_err(|e| fail(e.to_string()))?;
            let mut p = plan("dhcp6", a.address, 128);
            p.dns = a.dns;
            p.search = a.search;
            p.lifetimes = Some((a.preferred, a.valid));
            p.server_duid = Some(a.server_id.iter().map(|b| format!("{b:02x}")).collect());
            p.learned = default.into_iter().collect();
            Ok(p)
        }
        Method::Dhcp { .. } | Method::Static(_) => Err(Attempt::on(
            link,
            up.carrier,
            "an IPv4 method in the IPv6 client".into(),
        )),
    }
}

/// Applies an IPv6 plan (a DHCPv6 or static address and route; nothing for SLAAC, whose
/// address the kernel made) and reads it back with the routes the kernel learned.
fn apply6(nl: &mut Netlink, link: &Link, plan: &Plan6) -> Result<Lease6, NetworkError> {
    if plan.mtu.is_some() {
        nl.set_up(link, plan.mtu)?;
    }
    if !plan.kernels {
        // No DAD: the address was assigned to us (by a server that checked its bindings,
        // or by the administrator), and a boot should not wait a second more for it.
        nl.add_address6(link, plan.address, plan.prefix, true)?;
    }
    for r in &plan.add {
        nl.add_route6(r, &link.name)?;
    }
    if !nl
        .addresses6(link.index)?
        .iter()
        .any(|a| a.address == plan.address && a.prefix == plan.prefix)
    {
        return Err(NetworkError::Verify {
            ifname: link.name.clone(),
            missing: format!("address {}/{}", plan.address, plan.prefix),
        });
    }
    let installed: Vec<Route6> = nl
        .routes6()?
        .into_iter()
        .filter(|r| r.oif == link.index)
        .collect();
    for r in &plan.add {
        if !installed.iter().any(|i| {
            i.prefix == r.prefix && i.gateway == r.gateway && i.destination == r.destination
        }) {
            return Err(NetworkError::Verify {
                ifname: link.name.clone(),
                missing: format!("route {r}"),
            });
        }
    }
    // The routes as they stand now: the kernel's from advertisements, and ours.
    let routes: Vec<LeaseRoute6> = installed
        .iter()
        .filter(|r| {
            r.prefix == 0
                || (r.prefix < 128
                    && !r.destination.is_unicast_link_local()
                    && !r.destination.is_multicast())
        })
        .map(|r| LeaseRoute6 {
            destination: format!("{}/{}", r.destination, r.prefix),
            gateway: r.gateway,
            origin: if r.protocol == netlink::RTPROT_RA {
                "ra"
            } else if plan
                .add
                .iter()
                .any(|a| a.prefix == r.prefix && a.gateway == r.gateway)
            {
                "static"
            } else {
                "kernel"
            },
        })
        .collect();
    let gateway = installed
        .iter()
        .find(|r| r.prefix == 0 && r.gateway.is_some())
        .and_then(|r| r.gateway)
        .or_else(|| plan.learned.iter().find_map(|r| r.gateway));
    let lease = Lease6 {
        interface: link.name.clone(),
        mac: link.mac_string(),
        link: None,
        method: plan.method,
        address: plan.address,
        prefix: plan.prefix,
        gateway,
        routes,
        dns: plan.dns.clone(),
        search: plan.search.clone(),
        preferred_lifetime_s: plan.lifetimes.map(|l| l.0),
        valid_lifetime_s: plan.lifetimes.map(|l| l.1),
        server_duid: plan.server_duid.clone(),
        acquired_uptime_ms: crate::report::uptime_ms(),
        elapsed_ms: plan.started.elapsed().as_secs_f64() * 1000.0,
    };
    log::info!(
        "{}: {}/{} ({}){}",
        link.name,
        plan.address,
        plan.prefix,
        plan.method,
        gateway
            .map(|g| format!(", default via {g}"))
            .unwrap_or_default()
    );
    Ok(lease)
}

fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(net) & mask
}

/// The routes of a lease: option 121 when present (RFC 3442 §3.5: then option 3 is
/// ignored), else a default route via the first router.
fn routes_for(o: &dhcp::Offered, oif: u32) -> Vec<Route> {
    let route = |destination, prefix, gw: Ipv4Addr| Route {
        destination,
        prefix,
        gateway: (!gw.is_unspecified()).then_some(gw),
        oif,
        onlink: !gw.is_unspecified() && !in_subnet(gw, o.address, o.prefix),
    };
    if !o.classless_routes.is_empty() {
        return o
            .classless_routes
            .iter()
            .map(|(d, p, g)| route(*d, *p, *g))
            .collect();
    }
    o.routers
        .first()
        .map(|g| vec![route(Ipv4Addr::UNSPECIFIED, 0, *g)])
        .unwrap_or_default()
}

fn apply(nl: &mut Netlink, link: &Link, plan: &Plan) -> Result<Lease, NetworkError> {
    let o = &plan.offered;
    if plan.mtu.is_some() {
        nl.set_up(link, plan.mtu)?;
    }
    nl.add_address(link, o.address, o.prefix, o.broadcast)?;
    let routes = routes_for(o, link.index);
    for r in &routes {
        nl.add_route(r, &link.name)?;
    }
    // Read everything back: a kernel that accepted a request but shows something else is a
    // boot that would fail later and more obscurely.
    if !nl.addresses(link.index)?.contains(&(o.address, o.prefix)) {
        return Err(NetworkError::Verify {
            ifname: link.name.clone(),
            missing: format!("address {}/{}", o.address, o.prefix),
        });
    }
    let installed = nl.routes()?;
    for r in &routes {
        let found = installed.iter().any(|i| {
            i.oif == r.oif
                && i.prefix == r.prefix
                && i.gateway == r.gateway
                && (r.prefix == 0 || i.destination == r.destination)
        });
        if !found {
            return Err(NetworkError::Verify {
                ifname: link.name.clone(),
                missing: format!("route {r}"),
            });
        }
    }
    let lease = Lease {
        interface: link.name.clone(),
        mac: link.mac_string(),
        link: None,
        source: plan.source,
        address: o.address,
        prefix: o.prefix,
        broadcast: o.broadcast,
        routers: o.routers.clone(),
        routes: routes
            .iter()
            .map(|r| LeaseRoute {
                destination: format!("{}/{}", r.destination, r.prefix),
                gateway: r.gateway,
                origin: None,
            })
            .collect(),
        dns: o.dns.clone(),
        domain: o.domain.clone(),
        search: o.search.clone(),
        ntp: o.ntp.clone(),
        hostname: o.hostname.clone(),
        mtu: plan.mtu,
        root_path: o.root_path.clone(),
        tftp_server: o.tftp_server.clone(),
        bootfile: o.bootfile.clone(),
        lease_time_s: o.lease_time,
        server_id: (plan.source == "dhcp").then_some(o.server_id),
        acquired_uptime_ms: crate::report::uptime_ms(),
        elapsed_ms: plan.started.elapsed().as_secs_f64() * 1000.0,
    };
    log::info!(
        "{}: {}/{} ({}), routes: {}",
        link.name,
        o.address,
        o.prefix,
        plan.source,
        routes
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(lease)
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
    use super::*;

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
