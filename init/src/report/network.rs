//! The network phase's records for the real system: the IPv4 lease and IPv6 configuration
//! of each interface it configured and each link it made or renamed. `network::lease`
//! writes them to `/run/terra/network/`; the boot report carries them too.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::config::iscsi::redact_netroot;

/// One route as handed over.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseRoute {
    /// `a.b.c.d/n`; `0.0.0.0/0` is the default route.
    pub destination: String,
    /// Next hop; None for an on-link route.
    pub gateway: Option<Ipv4Addr>,
    /// Where it came from when not from the lease or the interface's own configuration:
    /// `rd.route`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
}

/// A member of a bond as it was before being enslaved (the bond gives its members its own
/// MAC in most modes).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Member {
    /// Interface name.
    pub name: String,
    /// Its own hardware address.
    pub mac: String,
}

/// What kind of link stage0 made, and how.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LinkKind {
    /// A NIC given a stable name (`ifname=`).
    Renamed {
        /// The kernel's name before.
        from: String,
    },
    /// A bond.
    Bond {
        /// Bonding mode, by name (`802.3ad`).
        mode: &'static str,
        /// The other options set, `name=value` as the driver's sysfs files take them.
        options: Vec<String>,
        /// Members, in the order they were enslaved.
        slaves: Vec<Member>,
    },
    /// An 802.1Q VLAN.
    Vlan {
        /// VLAN ID.
        id: u16,
        /// The link it sits on.
        parent: String,
    },
}

/// A link stage0 made or renamed; it stays for the real system.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MadeLink {
    /// Interface name.
    pub name: String,
    /// Its hardware address once made.
    pub mac: String,
    /// MTU set, if any.
    pub mtu: Option<u32>,
    /// Kind and settings.
    #[serde(flatten)]
    pub kind: LinkKind,
}

/// The configuration of one interface, from a DHCP lease or static config.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lease {
    /// Interface name.
    pub interface: String,
    /// Its hardware address.
    pub mac: String,
    /// The link's kind and settings when stage0 made or renamed it (a bond, a VLAN, a
    /// stable name); None for a NIC as the kernel named it.
    pub link: Option<MadeLink>,
    /// `dhcp` or `static`.
    pub source: &'static str,
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Broadcast address (option 28).
    pub broadcast: Option<Ipv4Addr>,
    /// Routers offered (option 3), even when option 121 replaced them.
    pub routers: Vec<Ipv4Addr>,
    /// Routes installed.
    pub routes: Vec<LeaseRoute>,
    /// DNS servers (option 6, or config).
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Domain search list (option 119).
    pub search: Vec<String>,
    /// NTP servers (option 42).
    pub ntp: Vec<Ipv4Addr>,
    /// Host name offered (option 12).
    pub hostname: Option<String>,
    /// MTU (option 26, or config).
    pub mtu: Option<u32>,
    /// Root path (option 17); CHAP credentials in it are redacted when written out.
    #[serde(serialize_with = "redacted_root_path")]
    pub root_path: Option<String>,
    /// TFTP server name (option 66).
    pub tftp_server: Option<String>,
    /// Boot file name (option 67).
    pub bootfile: Option<String>,
    /// Lease time in seconds (option 51).
    pub lease_time_s: Option<u32>,
    /// Server identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
    /// Kernel uptime when the lease was acquired, ms (CLOCK_BOOTTIME).
    pub acquired_uptime_ms: f64,
    /// From the start of this interface's attempt (link up) to the lease, ms.
    pub elapsed_ms: f64,
}

/// One IPv6 route as handed over.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseRoute6 {
    /// `prefix/n`; `::/0` is the default route.
    pub destination: String,
    /// Next hop (a router's link-local address, for routes from advertisements); None
    /// for an on-link prefix.
    pub gateway: Option<Ipv6Addr>,
    /// `ra` for a default router the kernel learned from an advertisement, `kernel` for an
    /// on-link prefix the kernel installed (from an advertisement's prefix or the address),
    /// `static` for stage0's own.
    pub origin: &'static str,
}

/// The IPv6 configuration of one interface: `<run>/network/ipv6/<ifname>.json`, beside the
/// IPv4 lease of the same interface (if any), whose fields keep their meaning.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Lease6 {
    /// Interface name.
    pub interface: String,
    /// Its hardware address.
    pub mac: String,
    /// The link's kind and settings when stage0 made or renamed it.
    pub link: Option<MadeLink>,
    /// `auto6` (SLAAC), `dhcp6` or `static`.
    pub method: &'static str,
    /// The global address.
    pub address: Ipv6Addr,
    /// Its prefix length: the advertised prefix's for SLAAC, 128 for DHCPv6 (the on-link
    /// prefix is then a route), the configured one for static.
    pub prefix: u8,
    /// The default router, when there is one.
    pub gateway: Option<Ipv6Addr>,
    /// Routes on this interface: the default and on-link prefixes.
    pub routes: Vec<LeaseRoute6>,
    /// DNS servers (DHCPv6 option 23, or config).
    pub dns: Vec<Ipv6Addr>,
    /// Domain search list (DHCPv6 option 24).
    pub search: Vec<String>,
    /// Preferred lifetime, seconds (DHCPv6).
    pub preferred_lifetime_s: Option<u32>,
    /// Valid lifetime, seconds (DHCPv6).
    pub valid_lifetime_s: Option<u32>,
    /// The DHCPv6 server's DUID, hex.
    pub server_duid: Option<String>,
    /// Kernel uptime when the configuration was complete, ms (CLOCK_BOOTTIME).
    pub acquired_uptime_ms: f64,
    /// From the start of this interface's attempt (link up) to then, ms.
    pub elapsed_ms: f64,
}

/// Writes a root path with any `user:secret@` replaced: leases go to files and reports that
/// anyone on the system may read.
fn redacted_root_path<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(p) => s.serialize_some(&redact_netroot(p)),
        None => s.serialize_none(),
    }
}

/// What the boot report carries of the network phase (empty when it did not run).
#[derive(Debug, Clone, Default)]
pub struct NetworkRecords<'a> {
    /// The IPv4 leases, one per interface configured.
    pub leases: Vec<&'a Lease>,
    /// The IPv6 configurations.
    pub leases6: Vec<&'a Lease6>,
    /// The links made or renamed.
    pub links: &'a [MadeLink],
}

/// A DHCP or static lease of `eth0` on QEMU's user network, for tests.
#[cfg(test)]
pub(crate) fn sample_lease(source: &'static str) -> Lease {
    let gw = Ipv4Addr::new(10, 0, 2, 2);
    Lease {
        interface: "eth0".into(),
        mac: "52:54:00:12:34:56".into(),
        link: None,
        source,
        address: Ipv4Addr::new(10, 0, 2, 15),
        prefix: 24,
        broadcast: None,
        routers: vec![gw],
        routes: vec![LeaseRoute {
            destination: "0.0.0.0/0".into(),
            gateway: Some(gw),
            origin: None,
        }],
        dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
        domain: None,
        search: vec![],
        ntp: vec![],
        hostname: None,
        mtu: None,
        root_path: None,
        tftp_server: None,
        bootfile: None,
        lease_time_s: Some(86400),
        server_id: Some(gw),
        acquired_uptime_ms: 1.0,
        elapsed_ms: 2.0,
    }
}
