//! Applies a job's plan over netlink (address, routes, MTU) and reads it back into the lease
//! the real system gets.

use std::net::Ipv4Addr;

use super::jobs::{Plan, Plan6};
use super::netlink::{self, Link, Netlink, Route, Route6};
use super::{dhcp, NetworkError};
use crate::report::network::{Lease, Lease6, LeaseRoute, LeaseRoute6};

/// Applies an IPv6 plan (a DHCPv6 or static address and route; nothing for SLAAC, whose
/// address the kernel made) and reads it back with the routes the kernel learned.
pub(super) fn apply6(nl: &mut Netlink, link: &Link, plan: &Plan6) -> Result<Lease6, NetworkError> {
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
pub(super) fn routes_for(o: &dhcp::Offered, oif: u32) -> Vec<Route> {
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

pub(super) fn apply(nl: &mut Netlink, link: &Link, plan: &Plan) -> Result<Lease, NetworkError> {
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
