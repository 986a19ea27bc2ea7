//! The network phase's jobs: one thread per candidate link and family, each bringing its
//! link up, awaiting carrier and running DHCP, DHCPv6, SLAAC or a static plan; the first
//! "any link" success of a family stops the others. What a job plans, `apply.rs` applies.

use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::netlink::{Link, Netlink, NetlinkError, Route6};
use super::{dhcp, dhcp6, ipv6, socket, Attempt, IfaceConfig, Method};

/// A job's result: the address plan, or what went wrong.
pub(super) struct Job {
    pub(super) link: Link,
    pub(super) group_any: bool,
    pub(super) ipv6: bool,
    pub(super) result: Result<Planned, Attempt>,
}

/// A plan of either family.
pub(super) enum Planned {
    V4(Plan),
    V6(Plan6),
}

/// What to apply to a link for IPv6.
pub(super) struct Plan6 {
    pub(super) method: &'static str,
    pub(super) address: Ipv6Addr,
    pub(super) prefix: u8,
    /// Routes stage0 adds (a static gateway's default route).
    pub(super) add: Vec<Route6>,
    /// Routes the kernel already has from router advertisements.
    pub(super) learned: Vec<Route6>,
    pub(super) dns: Vec<Ipv6Addr>,
    pub(super) search: Vec<String>,
    pub(super) lifetimes: Option<(u32, u32)>,
    pub(super) server_duid: Option<String>,
    /// The address is the kernel's (SLAAC): only read back.
    pub(super) kernels: bool,
    pub(super) mtu: Option<u32>,
    pub(super) started: Instant,
}

/// How long DHCPv6 waits, after its Reply, for a router advertisement to bring the default
/// route (the kernel usually has it by then: it solicits routers right after DAD).
pub(super) const RA_GRACE: Duration = Duration::from_secs(5);

/// What to apply to a link.
pub(super) struct Plan {
    pub(super) source: &'static str,
    pub(super) offered: dhcp::Offered,
    pub(super) mtu: Option<u32>,
    pub(super) started: Instant,
}

/// Runs every job in its own thread; the first success among the "any" jobs stops the rest.
pub(super) fn run_jobs(
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
