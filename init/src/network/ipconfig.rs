//! What the network phase is asked to do: node.toml's `[network]` overlaid by the kernel
//! command line. Kernel and dracut keys: `ip=` (every form below, several times),
//! `BOOTIF=`, `nameserver=`, `rd.neednet=`, `bond=`, `vlan=`, `ifname=`, `rd.route=`
//! (parsed in `bond.rs`, `vlan.rs`, `ifname.rs`, `route.rs`); Terra OS keys: `hostname=`,
//! `network=<cidr>`, `gateway=`, `nameservers=a,b`, `iface=`, `bondslaves=`; ours:
//! `terra.net.timeout=<s>`. Invalid values are errors naming the key, as in the rest of the
//! config phase.
//!
//! Bonds, VLANs, renames and routes shape the network the phase brings up; they do not by
//! themselves make the network needed (as `nameserver=` does not). Bonds and VLANs from the
//! command line replace node.toml's, as its interfaces do.
//!
//! `ip=` forms (Documentation/admin-guide/nfs/nfsroot.rst and dracut.cmdline(7)):
//! - `off | none` — no network from `ip=`;
//! - `dhcp | on | any | bootp | both` — DHCP on any Ethernet link (BOOTIF= or iface= narrows);
//! - `<dev>:<autoconf>[:<mtu>[:<mac>]]` — dracut's per-device form;
//! - `<client>:<server>:<gw>:<netmask>:<hostname>:<dev>:<autoconf>[:<dns0>[:<dns1>[:<ntp0>]]]`
//!   — the kernel's form; dracut's `[:<mtu>[:<mac>]]` tail is accepted in place of the DNS
//!   fields. A client address with autoconf `dhcp` is asked for first (INIT-REBOOT).
//! - IPv6 (dracut.cmdline(7)): `auto6` (SLAAC from router advertisements) and `dhcp6`
//!   (DHCPv6, IA_NA), alone (any link) or as `<dev>:auto6`, `<dev>:dhcp6`; and the static
//!   form `[<addr>]:[<server>]:[<gw>]:<prefixlen>:<hostname>:<dev>:none[:<mtu>[:<mac>]]`,
//!   IPv6 addresses in brackets as dracut writes them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::bond::{self, BondSpec};
use super::ifname::{self, Rename};
use super::links::LinkPlan;
use super::route::{self, ExtraRoute};
use super::vlan::{self, VlanSpec};
use crate::cmdline;
use crate::config::network::NetworkSection;
use crate::config::ConfigError;
use crate::layout;

// The shared types, at their old path too: the builder names them here.
pub use super::types::{parse_mac, Selector};
use super::types::{parse_netmask, valid_mtu};

/// Default bound on the whole network phase.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAddr {
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
}

/// A static IPv6 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAddr6 {
    /// Address.
    pub address: Ipv6Addr,
    /// Prefix length, 1 to 128.
    pub prefix: u8,
    /// Default gateway (a link-local one is reached through this interface).
    pub gateway: Option<Ipv6Addr>,
}

/// How an interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// DHCPv4, asking first for `requested` when given.
    Dhcp {
        /// INIT-REBOOT address.
        requested: Option<Ipv4Addr>,
    },
    /// A fixed address.
    Static(StaticAddr),
    /// IPv6 stateless autoconfiguration: the kernel forms the address from a router
    /// advertisement's prefix (RFC 4862); stage0 enables it and waits for the result.
    Auto6,
    /// DHCPv6 (RFC 8415), one address (IA_NA); the on-link prefix and the default route come
    /// from router advertisements.
    Dhcp6,
    /// A fixed IPv6 address.
    Static6(StaticAddr6),
}

impl Method {
    /// Whether the method configures IPv6 (the phase keeps IPv4 and IPv6 winners apart).
    pub fn is_ipv6(&self) -> bool {
        matches!(self, Method::Auto6 | Method::Dhcp6 | Method::Static6(_))
    }
}

/// One interface to bring up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Which link.
    pub selector: Selector,
    /// DHCP or static.
    pub method: Method,
    /// MTU to set before anything else.
    pub mtu: Option<u32>,
}

/// The network phase's whole task, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Interfaces, in the order given.
    pub interfaces: Vec<IfaceConfig>,
    /// DNS servers from the config (before any a lease brings).
    pub nameservers: Vec<Ipv4Addr>,
    /// IPv6 DNS servers from the config (`nameserver=[v6]` or a bare IPv6 address,
    /// node.toml), after the IPv4 ones in resolv.conf.
    pub nameservers6: Vec<Ipv6Addr>,
    /// Host name from the config (wins over a lease's option 12).
    pub hostname: Option<String>,
    /// Bound on the phase.
    pub timeout: Duration,
    /// The interfaces are to be the firmware's (`ip=ibft`, or `rd.iscsi.firmware` with no
    /// other network configured): the boot replaces them with the iBFT's NICs once the
    /// table is readable, after the devices phase.
    pub ibft: bool,
    /// Links to make before any interface is configured: renames, bonds, VLANs.
    pub links: LinkPlan,
    /// `rd.route=`: routes added once the interfaces are configured.
    pub routes: Vec<ExtraRoute>,
}

/// What other phases ask of the network, beside the command line and node.toml.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Another phase needs the network (iSCSI): as if `rd.neednet=1` were given.
    pub network: bool,
    /// `rd.iscsi.firmware`: the iBFT configures the network unless something else does.
    pub firmware: bool,
}

/// `BOOTIF=01-52-54-00-12-34-56` (pxelinux: ARP type 1, then the address), or a plain MAC.
fn parse_bootif(s: &str) -> Option<[u8; 6]> {
    match s.strip_prefix("01-") {
        Some(rest) if rest.len() == 17 => parse_mac(rest),
        _ => parse_mac(s),
    }
}

/// `10.0.0.5/24`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let prefix: u8 = p.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((a.parse().ok()?, prefix))
}

/// RFC 1123 host names (labels of letters, digits and hyphens), at most 64 bytes as the
/// kernel allows.
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_dhcp_word(s: &str) -> bool {
    matches!(s, "dhcp" | "on" | "any" | "bootp" | "both")
}

const IP_EXPECTED: &str = "off, none, dhcp, on, any, dhcp6, auto6, <dev>:<dhcp|dhcp6|auto6>, \
     <client>:<server>:<gw>:<netmask>:<hostname>:<dev>:<off|none|dhcp>[:<dns0>[:<dns1>]], or \
     [<v6 address>]::[<v6 gw>]:<prefix length>:<hostname>:<dev>:none";

/// What one `ip=` says.
#[derive(Debug)]
struct IpArg {
    iface: Option<IfaceConfig>,
    hostname: Option<String>,
    nameservers: Vec<Ipv4Addr>,
}

/// The method an autoconf word names in the per-device form (`<dev>:<word>`).
fn autoconf_method(w: &str) -> Option<Method> {
    match w {
        "dhcp6" => Some(Method::Dhcp6),
        "auto6" => Some(Method::Auto6),
        w if is_dhcp_word(w) => Some(Method::Dhcp { requested: None }),
        _ => None,
    }
}

/// Splits `ip=`'s value at the colons outside brackets (`[fd00::5]::[fd00::1]:64:…`); None
/// for unbalanced brackets.
fn split_fields(v: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in v.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return None,
            ':' if depth == 0 => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then_some(())?;
    out.push(&v[start..]);
    Some(out)
}

/// An IPv6 address in brackets, as dracut writes them; None for anything else.
fn bracketed_v6(s: &str) -> Option<Ipv6Addr> {
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// `[<addr>]:[<server>]:[<gw>]:<prefixlen>:<hostname>:<dev>:<none|off>[:<mtu>[:<mac>]]`.
fn parse_ip6_static(f: &[&str]) -> Option<IpArg> {
    let field = |i: usize| f.get(i).copied().unwrap_or("");
    let opt6 = |s: &str| -> Option<Option<Ipv6Addr>> {
        match s {
            "" => Some(None),
            s => bracketed_v6(s).map(Some),
        }
    };
    let address = bracketed_v6(field(0))?;
    let _server = opt6(field(1))?;
    let gateway = opt6(field(2))?;
    let prefix = match field(3) {
        "" => 64,
        p => p.parse().ok().filter(|p| (1..=128).contains(p))?,
    };
    let hostname = match field(4) {
        "" => None,
        h if valid_hostname(h) => Some(h.to_string()),
        _ => return None,
    };
    let mut selector = match field(5) {
        "" => Selector::Any,
        d => Selector::Name(d.to_string()),
    };
    if !matches!(field(6), "" | "none" | "off") {
        return None;
    }
    let usable = |a: &Ipv6Addr| !a.is_unspecified() && !a.is_multicast() && !a.is_loopback();
    if !usable(&address) || gateway.is_some_and(|g| !usable(&g)) {
        return None;
    }
    let mut mtu = None;
    if let Some(m) = f.get(7).filter(|m| !m.is_empty()) {
        mtu = Some(m.parse().ok().filter(|m| valid_mtu(*m))?);
    }
    if f.len() > 8 {
        selector = Selector::Mac(parse_mac(&f[8..].join(":"))?);
    }
    Some(IpArg {
        iface: Some(IfaceConfig {
            selector,
            method: Method::Static6(StaticAddr6 {
                address,
                prefix,
                gateway,
            }),
            mtu,
        }),
        hostname,
        nameservers: Vec::new(),
    })
}

fn parse_ip(v: &str) -> Option<IpArg> {
    let none = IpArg {
        iface: None,
        hostname: None,
        nameservers: Vec::new(),
    };
    if matches!(v, "off" | "none") {
        return Some(none);
    }
    if let Some(method) = autoconf_method(v) {
        return Some(IpArg {
            iface: Some(IfaceConfig {
                selector: Selector::Any,
                method,
                mtu: None,
            }),
            ..none
        });
    }
    if v.starts_with('[') {
        return parse_ip6_static(&split_fields(v)?);
    }
    if v.contains('[') {
        return None;
    }
    let f: Vec<&str> = v.split(':').collect();
    // dracut's <dev>:<autoconf>[:<mtu>[:<mac>]]
    if f.len() >= 2 && f[0].parse::<Ipv4Addr>().is_err() && !f[0].is_empty() {
        let method = autoconf_method(f[1])?;
        let mtu = match f.get(2) {
            None | Some(&"") => None,
            Some(m) => Some(m.parse().ok().filter(|m| valid_mtu(*m))?),
        };
        let selector = if f.len() > 3 {
            Selector::Mac(parse_mac(&f[3..].join(":"))?)
        } else {
            Selector::Name(f[0].to_string())
        };
        // With a MAC the name is only a label: the MAC decides (dracut does the same).
        return Some(IpArg {
            iface: Some(IfaceConfig {
                selector,
                method,
                mtu,
            }),
            ..none
        });
    }
    if f.len() < 2 {
        return None;
    }
    let field = |i: usize| f.get(i).copied().unwrap_or("");
    let opt_ip = |s: &str| -> Option<Option<Ipv4Addr>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    let client = opt_ip(field(0))?;
    let _server = opt_ip(field(1))?;
    let gateway = opt_ip(field(2))?;
    let prefix = match field(3) {
        "" => None,
        m => Some(parse_netmask(m)?),
    };
    let hostname = match field(4) {
        "" => None,
        h if valid_hostname(h) => Some(h.to_string()),
        _ => return None,
    };
    let selector = match field(5) {
        "" => Selector::Any,
        d => Selector::Name(d.to_string()),
    };
    let method = match (field(6), client) {
        ("off" | "none", Some(address)) | ("", Some(address)) => Method::Static(StaticAddr {
            address,
            prefix: prefix.unwrap_or(24),
            gateway,
        }),
        ("off" | "none", None) => return None,
        (w, requested) if w.is_empty() || is_dhcp_word(w) => Method::Dhcp { requested },
        _ => return None,
    };
    let mut nameservers = Vec::new();
    let mut mtu = None;
    let mut selector = selector;
    let tail: Vec<&str> = f.iter().skip(7).copied().collect();
    if let Some(first) = tail.first() {
        if first.contains('.') {
            // Kernel: dns0, dns1, ntp0.
            for s in tail.iter().take(2).filter(|s| !s.is_empty()) {
                nameservers.push(s.parse().ok()?);
            }
        } else {
            // dracut: mtu, mac.
            if !first.is_empty() {
                mtu = Some(first.parse().ok().filter(|m| valid_mtu(*m))?);
            }
            if tail.len() > 1 {
                selector = Selector::Mac(parse_mac(&tail[1..].join(":"))?);
            }
        }
    }
    Some(IpArg {
        iface: Some(IfaceConfig {
            selector,
            method,
            mtu,
        }),
        hostname,
        nameservers,
    })
}

fn node_error(message: String) -> ConfigError {
    ConfigError::Node {
        path: PathBuf::from(layout::NODE_CONFIG),
        message,
    }
}

fn node_interfaces(section: &NetworkSection) -> Result<Vec<IfaceConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, s) in section.interfaces.iter().enumerate() {
        let at = format!("network.interfaces[{i}]");
        let selector = match (&s.name, &s.mac) {
            (_, Some(m)) => Selector::Mac(parse_mac(m).ok_or_else(|| {
                node_error(format!("{at}.mac = {m:?}: expected aa:bb:cc:dd:ee:ff"))
            })?),
            (Some(n), None) if !n.is_empty() => Selector::Name(n.clone()),
            _ => return Err(node_error(format!("{at}: needs name or mac"))),
        };
        if let Some(m) = s.mtu {
            if !valid_mtu(m) {
                return Err(node_error(format!("{at}.mtu = {m}: expected 68 to 65535")));
            }
        }
        let gateway = match &s.gateway {
            None => None,
            Some(g) => Some(g.parse::<std::net::IpAddr>().map_err(|_| {
                node_error(format!("{at}.gateway = {g:?}: expected an IP address"))
            })?),
        };
        // IPv4 and IPv6 addresses each take the first of their family; the gateway goes
        // with the address of its family.
        let (mut v4, mut v6) = (None, None);
        for a in &s.addresses {
            if let Some(c) = parse_cidr(a) {
                v4 = v4.or(Some(c));
            } else if let Some(c) = parse_cidr6(a) {
                v6 = v6.or(Some(c));
            } else {
                return Err(node_error(format!(
                    "{at}.addresses: {a:?}: expected an IPv4 or IPv6 address/prefix"
                )));
            }
        }
        let (gateway4, gateway6) = match gateway {
            Some(std::net::IpAddr::V4(g)) => (Some(g), None),
            Some(std::net::IpAddr::V6(g)) => (None, Some(g)),
            None => (None, None),
        };
        let mut methods = Vec::new();
        match (s.dhcp, v4) {
            (Some(true), Some(_)) => {
                return Err(node_error(format!(
                    "{at}: dhcp = true and an IPv4 address exclude each other"
                )))
            }
            (_, Some((address, prefix))) => methods.push(Method::Static(StaticAddr {
                address,
                prefix,
                gateway: gateway4,
            })),
            (Some(true), None) => methods.push(Method::Dhcp { requested: None }),
            (Some(false), None)
                if v6.is_none() && s.dhcp6 != Some(true) && s.auto6 != Some(true) =>
            {
                return Err(node_error(format!("{at}: dhcp = false needs addresses")))
            }
            (Some(false), None) => {}
            // As before IPv6: no address means DHCPv4, unless the entry asks only for IPv6.
            (None, None) if v6.is_none() && s.dhcp6 != Some(true) && s.auto6 != Some(true) => {
                methods.push(Method::Dhcp { requested: None })
            }
            (None, None) => {}
        }
        if let Some((address, prefix)) = v6 {
            if s.dhcp6 == Some(true) || s.auto6 == Some(true) {
                return Err(node_error(format!(
                    "{at}: dhcp6/auto6 = true and an IPv6 address exclude each other"
                )));
            }
            methods.push(Method::Static6(StaticAddr6 {
                address,
                prefix,
                gateway: gateway6,
            }));
        } else if gateway6.is_some() {
            return Err(node_error(format!(
                "{at}.gateway: an IPv6 gateway needs an IPv6 address in addresses"
            )));
        }
        if s.auto6 == Some(true) {
            methods.push(Method::Auto6);
        }
        if s.dhcp6 == Some(true) {
            methods.push(Method::Dhcp6);
        }
        out.extend(methods.into_iter().map(|method| IfaceConfig {
            selector: selector.clone(),
            method,
            mtu: s.mtu,
        }));
    }
    Ok(out)
}

/// `fd00::5/64`, with or without brackets around the address.
pub fn parse_cidr6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, p) = s.rsplit_once('/')?;
    let prefix: u8 = p.parse().ok()?;
    (1..=128).contains(&prefix).then_some(())?;
    let a = a
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(a);
    Some((a.parse().ok()?, prefix))
}

/// A DNS server as `nameserver=` gives it: IPv4, IPv6, or IPv6 in brackets.
fn parse_nameserver(s: &str) -> Option<std::net::IpAddr> {
    let bare = s
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse().ok()
}

fn parse_servers(
    list: &[String],
    what: &str,
    v4: &mut Vec<Ipv4Addr>,
    v6: &mut Vec<Ipv6Addr>,
) -> Result<(), ConfigError> {
    for s in list {
        match parse_nameserver(s) {
            Some(std::net::IpAddr::V4(a)) => v4.push(a),
            Some(std::net::IpAddr::V6(a)) => v6.push(a),
            None => {
                return Err(node_error(format!(
                    "{what} = {s:?}: expected IPv4 or IPv6 addresses"
                )))
            }
        }
    }
    Ok(())
}

/// The network task from node.toml's `[network]`, its `hostname` and the command line;
/// `None` when nothing needs the network (then the phase does not touch it).
pub fn resolve(
    section: &NetworkSection,
    node_hostname: Option<&str>,
    line: &str,
    needs: Needs,
) -> Result<Option<NetConfig>, ConfigError> {
    let bad = |p: &cmdline::Param, expected: std::borrow::Cow<'static, str>| ConfigError::Key {
        key: p.key.clone(),
        value: p.value.clone().unwrap_or_default(),
        expected,
    };
    let bad = |p: &cmdline::Param, expected: &'static str| bad(p, expected.into());
    let mut from_ip: Vec<IfaceConfig> = Vec::new();
    let (mut ip_given, mut ip_ibft) = (false, false);
    let mut ip_hostname = None;
    let mut nameservers: Vec<Ipv4Addr> = Vec::new();
    let mut nameservers6: Vec<Ipv6Addr> = Vec::new();
    let mut bootif = None;
    let mut neednet = false;
    let mut hostname = None;
    let mut network = None;
    let mut gateway = None;
    let mut iface = None;
    let mut timeout = section.timeout.map(Duration::from_secs);
    let mut bonds: Vec<BondSpec> = Vec::new();
    let mut vlans: Vec<VlanSpec> = Vec::new();
    let mut renames: Vec<Rename> = Vec::new();
    let mut routes: Vec<ExtraRoute> = Vec::new();
    for p in cmdline::split(line) {
        let v = p.value.as_deref();
        match (p.key.as_str(), v) {
            // dracut's: the firmware's NICs, known once the iBFT is read.
            ("ip", Some("ibft")) => ip_ibft = true,
            ("ip", Some(s)) => {
                ip_given = true;
                let arg = parse_ip(s).ok_or_else(|| bad(&p, IP_EXPECTED))?;
                from_ip.extend(arg.iface);
                ip_hostname = ip_hostname.or(arg.hostname);
                nameservers.extend(arg.nameservers);
            }
            ("BOOTIF", Some(s)) => {
                bootif = Some(parse_bootif(s).ok_or_else(|| bad(&p, "01-aa-bb-cc-dd-ee-ff"))?)
            }
            ("nameserver", Some(s)) => match parse_nameserver(s) {
                Some(std::net::IpAddr::V4(a)) => nameservers.push(a),
                Some(std::net::IpAddr::V6(a)) => nameservers6.push(a),
                None => return Err(bad(&p, "an IPv4 or IPv6 address")),
            },
            ("nameservers", Some(s)) => {
                for a in s.split(',').filter(|a| !a.is_empty()) {
                    nameservers.push(
                        a.parse()
                            .map_err(|_| bad(&p, "IPv4 addresses separated by commas"))?,
                    );
                }
            }
            ("rd.neednet", None | Some("1")) => neednet = true,
            ("rd.neednet", Some("0")) => neednet = false,
            ("hostname", Some(s)) => {
                if !valid_hostname(s) {
                    return Err(bad(&p, "a host name of letters, digits, '-' and '.'"));
                }
                hostname = Some(s.to_string());
            }
            ("network", Some(s)) => {
                network = Some(parse_cidr(s).ok_or_else(|| bad(&p, "an IPv4 address/prefix"))?)
            }
            ("gateway", Some(s)) => {
                gateway = Some(
                    s.parse::<Ipv4Addr>()
                        .map_err(|_| bad(&p, "an IPv4 address"))?,
                )
            }
            ("iface", Some(s)) if !s.is_empty() => {
                iface = Some(match parse_mac(s) {
                    Some(m) => Selector::Mac(m),
                    None => Selector::Name(s.to_string()),
                })
            }
            ("terra.net.timeout", Some(s)) => {
                let secs: u64 = s.parse().map_err(|_| bad(&p, "whole seconds"))?;
                timeout = Some(Duration::from_secs(secs));
            }
            ("bond", v) => bonds.push(bond::parse_bond(v).map_err(|e| ConfigError::Key {
                key: p.key.clone(),
                value: p.value.clone().unwrap_or_default(),
                expected: e,
            })?),
            ("bondslaves", Some(s)) => {
                bonds.push(bond::parse_bondslaves(s).map_err(|e| bad(&p, e))?)
            }
            ("vlan", Some(s)) => vlans.push(vlan::parse_vlan(s).map_err(|e| bad(&p, e))?),
            ("ifname", Some(s)) => renames.push(ifname::parse_ifname(s).map_err(|e| bad(&p, e))?),
            ("rd.route", Some(s)) => routes.push(route::parse_rd_route(s).map_err(|e| bad(&p, e))?),
            ("rd.neednet", Some(_)) => return Err(bad(&p, "0 or 1")),
            ("iface", Some(_)) => return Err(bad(&p, "an interface name or MAC")),
            (
                "ip" | "BOOTIF" | "nameserver" | "nameservers" | "hostname" | "network" | "gateway"
                | "iface" | "terra.net.timeout" | "bondslaves" | "vlan" | "ifname" | "rd.route",
                None,
            ) => return Err(bad(&p, "a value")),
            _ => {}
        }
    }
    if gateway.is_some() && network.is_none() {
        return Err(ConfigError::Key {
            key: "gateway".into(),
            value: gateway.map(|g| g.to_string()).unwrap_or_default(),
            expected: "network=<address/prefix> beside it".into(),
        });
    }
    // The command line wins over node.toml, as dracut's does over its config files.
    let mut interfaces = from_ip;
    if let Some((address, prefix)) = network {
        interfaces.push(IfaceConfig {
            selector: Selector::Any,
            method: Method::Static(StaticAddr {
                address,
                prefix,
                gateway,
            }),
            mtu: None,
        });
    }
    if interfaces.is_empty() {
        interfaces = node_interfaces(section)?;
    }
    let ibft = ip_ibft
        || (needs.firmware && !ip_given && network.is_none() && section.interfaces.is_empty());
    if interfaces.is_empty() && (neednet || needs.network || ibft) {
        interfaces.push(IfaceConfig {
            selector: Selector::Any,
            method: Method::Dhcp { requested: None },
            mtu: None,
        });
    }
    let links = link_plan(section, bonds, vlans, renames)?;
    for i in &interfaces {
        if let Selector::Name(n) = &i.selector {
            if let Some(b) = links.bond_of(n) {
                return Err(ConfigError::Links {
                    what: "ip=/network.interfaces".into(),
                    problem: format!(
                        "{n} is a member of {}: configure {} instead",
                        b.name, b.name
                    ),
                });
            }
        }
    }
    // iface= (Terra) or BOOTIF= (PXE) pins "any link" to one. Not BOOTIF= when bonds or
    // VLANs are made: the NIC the firmware booted from is then a member or a parent, and
    // "any link" means the links made on it (`links.rs`).
    let bootif = bootif.filter(|_| !links.makes_links());
    if let Some(pin) = iface.or(bootif.map(Selector::Mac)) {
        for i in &mut interfaces {
            if i.selector == Selector::Any {
                i.selector = pin.clone();
            }
        }
    }
    if interfaces.is_empty() {
        return Ok(None);
    }
    parse_servers(
        &section.nameservers,
        "network.nameservers",
        &mut nameservers,
        &mut nameservers6,
    )?;
    for (i, s) in section.interfaces.iter().enumerate() {
        parse_servers(
            &s.nameservers,
            &format!("network.interfaces[{i}].nameservers"),
            &mut nameservers,
            &mut nameservers6,
        )?;
    }
    let mut seen = std::collections::HashSet::new();
    nameservers.retain(|n| seen.insert(*n));
    // A few servers at most: a linear check (and no second HashSet type in PID 1).
    let mut unique6: Vec<Ipv6Addr> = Vec::new();
    for n in nameservers6 {
        if !unique6.contains(&n) {
            unique6.push(n);
        }
    }
    let nameservers6 = unique6;
    Ok(Some(NetConfig {
        ibft,
        interfaces,
        nameservers,
        nameservers6,
        hostname: hostname
            .or(ip_hostname)
            .or(node_hostname.map(str::to_string)),
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        links,
        routes,
    }))
}

/// The command line's links of one kind (`arg`), else node.toml's `[[table]]` entries,
/// each checked by `parse`; where they came from goes to `sources`.
fn given_or_section<T, S>(
    given: Vec<T>,
    arg: &'static str,
    entries: &[S],
    table: &'static str,
    sources: &mut Vec<&'static str>,
    parse: impl Fn(&str, &S) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    if !given.is_empty() {
        sources.push(arg);
        return Ok(given);
    }
    let out = entries
        .iter()
        .enumerate()
        .map(|(i, s)| parse(&format!("{table}[{i}]"), s))
        .collect::<Result<Vec<T>, String>>()
        .map_err(node_error)?;
    if !out.is_empty() {
        sources.push(table);
    }
    Ok(out)
}

/// The links to make: bonds and VLANs from the command line, else node.toml's; renames
/// from the command line. Checked as a whole (`LinkPlan::check`), the error naming where
/// the links came from.
fn link_plan(
    section: &NetworkSection,
    bonds: Vec<BondSpec>,
    vlans: Vec<VlanSpec>,
    renames: Vec<Rename>,
) -> Result<LinkPlan, ConfigError> {
    let mut sources = Vec::new();
    if !renames.is_empty() {
        sources.push("ifname=");
    }
    let bonds = given_or_section(
        bonds,
        "bond=/bondslaves=",
        &section.bonds,
        "network.bonds",
        &mut sources,
        bond::from_section,
    )?;
    let vlans = given_or_section(
        vlans,
        "vlan=",
        &section.vlans,
        "network.vlans",
        &mut sources,
        |at, s| vlan::from_section(at, s).map_err(|e| e.into_owned()),
    )?;
    let plan = LinkPlan {
        renames,
        bonds,
        vlans,
    };
    plan.check().map_err(|problem| ConfigError::Links {
        what: sources.join(", "),
        problem,
    })?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::network::InterfaceSection;
    use proptest::prelude::*;

    fn r(line: &str) -> Option<NetConfig> {
        resolve(&NetworkSection::default(), None, line, Needs::default()).unwrap()
    }

    fn dhcp_any() -> IfaceConfig {
        IfaceConfig {
            selector: Selector::Any,
            method: Method::Dhcp { requested: None },
            mtu: None,
        }
    }

    #[test]
    fn no_network_unless_asked() {
        assert_eq!(r("root=LABEL=os quiet"), None);
        assert_eq!(r("ip=off"), None);
        assert_eq!(r("ip=none rd.neednet=0"), None);
        assert_eq!(r("nameserver=1.1.1.1 hostname=x"), None);
    }

    #[test]
    fn dhcp_forms() {
        for line in ["ip=dhcp", "ip=on", "ip=any", "rd.neednet=1", "rd.neednet"] {
            let c = r(line).unwrap();
            assert_eq!(c.interfaces, vec![dhcp_any()], "{line}");
            assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        }
        let c = r("ip=eth1:dhcp").unwrap();
        assert_eq!(c.interfaces[0].selector, Selector::Name("eth1".into()));
        let c = r("ip=eth1:dhcp:1400:52:54:00:12:34:56").unwrap();
        assert_eq!(c.interfaces[0].mtu, Some(1400));
        assert_eq!(
            c.interfaces[0].selector,
            Selector::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        let c = r("ip=dhcp BOOTIF=01-52-54-00-12-34-56").unwrap();
        assert_eq!(
            c.interfaces[0].selector,
            Selector::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        let c = r("ip=dhcp ip=eth1:dhcp terra.net.timeout=5").unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.timeout, Duration::from_secs(5));
    }

    #[test]
    fn kernel_static_form() {
        let c = r("ip=10.0.2.50::10.0.2.2:255.255.255.0:node5:eth0:off:10.0.2.3:1.1.1.1").unwrap();
        assert_eq!(
            c.interfaces,
            vec![IfaceConfig {
                selector: Selector::Name("eth0".into()),
                method: Method::Static(StaticAddr {
                    address: Ipv4Addr::new(10, 0, 2, 50),
                    prefix: 24,
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                }),
                mtu: None,
            }]
        );
        assert_eq!(c.hostname.as_deref(), Some("node5"));
        assert_eq!(
            c.nameservers,
            vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        // Client address with dhcp: INIT-REBOOT asks for it.
        let c = r("ip=10.0.2.77:::::eth0:dhcp").unwrap();
        assert_eq!(
            c.interfaces[0].method,
            Method::Dhcp {
                requested: Some(Ipv4Addr::new(10, 0, 2, 77))
            }
        );
        // dracut tail: mtu and mac; prefix length as netmask.
        let c = r("ip=192.168.1.5::192.168.1.1:16::eth0:none:9000").unwrap();
        assert_eq!(c.interfaces[0].mtu, Some(9000));
        assert!(matches!(
            c.interfaces[0].method,
            Method::Static(StaticAddr { prefix: 16, .. })
        ));
        // Empty device: any link.
        let c = r("ip=192.168.1.5:::255.255.255.0:::off").unwrap();
        assert_eq!(c.interfaces[0].selector, Selector::Any);
    }

    #[test]
    fn terra_keys() {
        let c = r("network=10.1.0.9/16 gateway=10.1.0.1 nameservers=10.1.0.2,10.1.0.3 iface=eth2 hostname=n9").unwrap();
        assert_eq!(
            c.interfaces,
            vec![IfaceConfig {
                selector: Selector::Name("eth2".into()),
                method: Method::Static(StaticAddr {
                    address: Ipv4Addr::new(10, 1, 0, 9),
                    prefix: 16,
                    gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
                }),
                mtu: None,
            }]
        );
        assert_eq!(c.nameservers.len(), 2);
        assert_eq!(c.hostname.as_deref(), Some("n9"));
        // iface= also pins ip=dhcp.
        let c = r("ip=dhcp iface=52:54:00:00:00:01").unwrap();
        assert_eq!(
            c.interfaces[0].selector,
            Selector::Mac([0x52, 0x54, 0, 0, 0, 1])
        );
    }

    #[test]
    fn node_toml_network_and_cmdline_override() {
        let node = crate::config::NodeConfig::parse(
            r#"
hostname = "from-node"
[network]
timeout = 12
nameservers = ["9.9.9.9"]
[[network.interfaces]]
mac = "52:54:00:aa:bb:cc"
addresses = ["10.5.0.2/24"]
gateway = "10.5.0.1"
mtu = 1400
[[network.interfaces]]
name = "eth1"
dhcp = true
"#,
            std::path::Path::new("node.toml"),
        )
        .unwrap();
        let c = resolve(
            &node.network,
            node.hostname.as_deref(),
            "",
            Needs::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[0].mtu, Some(1400));
        assert_eq!(c.interfaces[1].method, Method::Dhcp { requested: None });
        assert_eq!(c.timeout, Duration::from_secs(12));
        assert_eq!(c.hostname.as_deref(), Some("from-node"));
        assert_eq!(c.nameservers, vec![Ipv4Addr::new(9, 9, 9, 9)]);
        let c = resolve(
            &node.network,
            node.hostname.as_deref(),
            "ip=dhcp hostname=cmd",
            Needs::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.interfaces, vec![dhcp_any()]);
        assert_eq!(c.hostname.as_deref(), Some("cmd"));
        let bad = NetworkSection {
            interfaces: vec![InterfaceSection {
                name: Some("e".into()),
                addresses: vec!["10.0.0.1".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = resolve(&bad, None, "", Needs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("network.interfaces[0].addresses"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (line, key) in [
            ("ip=dhcp7", "ip"),
            ("ip=eth0:static", "ip"),
            ("ip=10.0.0.1::10.0.0.256:24::eth0:off", "ip"),
            ("ip=10.0.0.1:::255.0.255.0::eth0:off", "ip"),
            ("ip=:::::eth0:off", "ip"),
            ("ip", "ip"),
            ("BOOTIF=zz", "BOOTIF"),
            ("nameserver=dns.example", "nameserver"),
            ("nameservers=1.1.1.1,x", "nameservers"),
            ("network=10.0.0.1", "network"),
            ("network=10.0.0.1/33", "network"),
            ("gateway=10.0.0.1", "gateway"),
            ("hostname=-bad", "hostname"),
            ("rd.neednet=yes", "rd.neednet"),
            ("terra.net.timeout=soon", "terra.net.timeout"),
            ("ip=eth0:dhcp:12", "ip"),
        ] {
            let err =
                resolve(&NetworkSection::default(), None, line, Needs::default()).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Key { key: k, .. } if k == key),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn ipv6_forms() {
        for (line, method) in [("ip=dhcp6", Method::Dhcp6), ("ip=auto6", Method::Auto6)] {
            let c = r(line).unwrap();
            assert_eq!(
                c.interfaces,
                vec![IfaceConfig {
                    selector: Selector::Any,
                    method,
                    mtu: None
                }],
                "{line}"
            );
        }
        let c = r("ip=eth1:dhcp6 ip=eth1:auto6:1400 ip=eth0:dhcp").unwrap();
        assert_eq!(c.interfaces[0].method, Method::Dhcp6);
        assert_eq!(c.interfaces[0].selector, Selector::Name("eth1".into()));
        assert_eq!(c.interfaces[1].method, Method::Auto6);
        assert_eq!(c.interfaces[1].mtu, Some(1400));
        assert_eq!(c.interfaces[2].method, Method::Dhcp { requested: None });
        // dracut's static form, IPv6 in brackets; the gateway may be link-local.
        let c =
            r("ip=[fd00:77::5]::[fe80::1]:64:node6:eth0:none nameserver=[fd00:77::53]").unwrap();
        assert_eq!(
            c.interfaces,
            vec![IfaceConfig {
                selector: Selector::Name("eth0".into()),
                method: Method::Static6(StaticAddr6 {
                    address: "fd00:77::5".parse().unwrap(),
                    prefix: 64,
                    gateway: Some("fe80::1".parse().unwrap()),
                }),
                mtu: None,
            }]
        );
        assert_eq!(c.hostname.as_deref(), Some("node6"));
        assert_eq!(
            c.nameservers6,
            vec!["fd00:77::53".parse::<Ipv6Addr>().unwrap()]
        );
        assert!(c.nameservers.is_empty());
        let c = r("ip=[2001:db8::9]:::48:::off:9000:52:54:00:12:34:56").unwrap();
        assert_eq!(c.interfaces[0].mtu, Some(9000));
        assert_eq!(
            c.interfaces[0].selector,
            Selector::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert!(matches!(
            c.interfaces[0].method,
            Method::Static6(StaticAddr6 {
                prefix: 48,
                gateway: None,
                ..
            })
        ));
        // iface= pins "any link" for IPv6 too.
        let c = r("ip=auto6 iface=eth3").unwrap();
        assert_eq!(c.interfaces[0].selector, Selector::Name("eth3".into()));
        assert!(c.interfaces[0].method.is_ipv6());
    }

    #[test]
    fn bad_ipv6_forms_name_the_key() {
        for line in [
            "ip=dhcp66",
            "ip=eth0:auto7",
            "ip=[fd00::5",
            "ip=fd00::5]::::eth0:none",
            "ip=[fd00::5]::[fe80::1]:129::eth0:none",
            "ip=[fd00::5]::[fe80::1]:0::eth0:none",
            "ip=[fd00::zz]::::eth0:none",
            "ip=[10.0.0.1]::::eth0:none",
            "ip=[fd00::5]::fe80::1:64::eth0:none",
            "ip=[fd00::5]:::64::eth0:dhcp",
            "ip=[::]::::eth0:none",
            "ip=[ff02::1]::::eth0:none",
            "ip=[fd00::5]::[ff02::2]:64::eth0:none",
            "ip=[fd00::5]::[[fe80::1]]:64::eth0:none",
            "ip=[fd00::5]:::64:-x:eth0:none",
            "ip=[fd00::5]:::64::eth0:none:12",
            "nameserver=[fd00::53",
        ] {
            let err =
                resolve(&NetworkSection::default(), None, line, Needs::default()).expect_err(line);
            let key = line.split('=').next().unwrap();
            assert!(
                matches!(&err, ConfigError::Key { key: k, .. } if k == key),
                "{line}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("invalid {key}=")),
                "{err}"
            );
        }
    }

    #[test]
    fn node_toml_ipv6() {
        let node = crate::config::NodeConfig::parse(
            r#"
[network]
nameservers = ["fd00:77::53", "9.9.9.9"]
[[network.interfaces]]
name = "eth0"
auto6 = true
[[network.interfaces]]
name = "eth1"
dhcp6 = true
dhcp = true
[[network.interfaces]]
name = "eth2"
addresses = ["10.5.0.2/24", "fd00:5::2/64"]
gateway = "fd00:5::1"
"#,
            std::path::Path::new("node.toml"),
        )
        .unwrap();
        let c = resolve(&node.network, None, "", Needs::default())
            .unwrap()
            .unwrap();
        let methods: Vec<(String, Method)> = c
            .interfaces
            .iter()
            .map(|i| (i.selector.to_string(), i.method.clone()))
            .collect();
        assert_eq!(
            methods,
            vec![
                ("eth0".into(), Method::Auto6),
                ("eth1".into(), Method::Dhcp { requested: None }),
                ("eth1".into(), Method::Dhcp6),
                (
                    "eth2".into(),
                    Method::Static(StaticAddr {
                        address: Ipv4Addr::new(10, 5, 0, 2),
                        prefix: 24,
                        gateway: None
                    })
                ),
                (
                    "eth2".into(),
                    Method::Static6(StaticAddr6 {
                        address: "fd00:5::2".parse().unwrap(),
                        prefix: 64,
                        gateway: Some("fd00:5::1".parse().unwrap())
                    })
                ),
            ]
        );
        assert_eq!(c.nameservers, vec![Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(c.nameservers6.len(), 1);
        for (text, needle) in [
            (
                "[[network.interfaces]]\nname = \"e\"\naddresses = [\"fd00::1\"]\n",
                "network.interfaces[0].addresses",
            ),
            (
                "[[network.interfaces]]\nname = \"e\"\naddresses = [\"fd00::1/64\"]\nauto6 = true\n",
                "network.interfaces[0]: dhcp6/auto6",
            ),
            (
                "[[network.interfaces]]\nname = \"e\"\ngateway = \"fd00::1\"\nauto6 = true\n",
                "network.interfaces[0].gateway",
            ),
            (
                "[network]\nnameservers = [\"fd00::zz\"]\n[[network.interfaces]]\nname = \"e\"\n",
                "network.nameservers",
            ),
        ] {
            let node =
                crate::config::NodeConfig::parse(text, std::path::Path::new("node.toml")).unwrap();
            let e = resolve(&node.network, None, "", Needs::default()).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn bonds_vlans_renames_and_routes() {
        // Terra OS's bondslaves=: bond0 in 802.3ad; "any link" is left for the phase to
        // point at what it makes.
        let c = r("bondslaves=eth0,eth1 ip=dhcp").unwrap();
        assert_eq!(c.interfaces, vec![dhcp_any()]);
        assert_eq!(c.links.bonds[0].name, "bond0");
        assert_eq!(c.links.bonds[0].mode, super::bond::Mode::IEEE_8023AD);
        // dracut's, with the interface named.
        let c = r("bond=bond1:eno1,eno2:mode=active-backup,miimon=100 ip=bond1:dhcp").unwrap();
        assert_eq!(c.links.bonds[0].mode, super::bond::Mode::ACTIVE_BACKUP);
        assert_eq!(c.interfaces[0].selector, Selector::Name("bond1".into()));
        let c = r("vlan=vlan5:eth0 ip=vlan5:dhcp").unwrap();
        assert_eq!(c.links.vlans[0].id, 5);
        let c = r("ifname=lan0:52:54:00:00:b0:01 rd.route=10.99.0.0/16:10.0.2.2 rd.route=10.98.0.0/16::lan0 ip=dhcp")
            .unwrap();
        assert_eq!(c.links.renames[0].name, "lan0");
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].dev.as_deref(), Some("lan0"));
        // BOOTIF= names the NIC the firmware booted; with a bond it is a member, so it does
        // not pin "any link". iface= still does.
        let c = r("bondslaves=eth0,eth1 ip=dhcp BOOTIF=01-52-54-00-12-34-56").unwrap();
        assert_eq!(c.interfaces[0].selector, Selector::Any);
        let c = r("bondslaves=eth0,eth1 ip=dhcp iface=bond0").unwrap();
        assert_eq!(c.interfaces[0].selector, Selector::Name("bond0".into()));
        // They shape the network; they do not make it needed.
        assert_eq!(
            r("bond=bond0:eth0,eth1 vlan=vlan5:bond0 ifname=lan0:52:54:00:00:b0:01"),
            None
        );
        // A bare `bond` is dracut's default bond.
        let c = r("bond rd.neednet=1").unwrap();
        assert_eq!(c.links.bonds[0].slaves.len(), 2);
    }

    #[test]
    fn node_toml_bonds_and_vlans_unless_the_command_line_has_some() {
        let node = crate::config::NodeConfig::parse(
            r#"
[[network.bonds]]
name = "bond0"
slaves = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
mode = "active-backup"
[[network.vlans]]
parent = "bond0"
id = 42
[[network.interfaces]]
name = "bond0.42"
"#,
            std::path::Path::new("node.toml"),
        )
        .unwrap();
        let c = resolve(&node.network, None, "", Needs::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            c.links.bonds[0].slaves[0],
            Selector::Mac([0x52, 0x54, 0, 0, 0, 1])
        );
        assert_eq!(c.links.vlans[0].name, "bond0.42");
        let c = resolve(
            &node.network,
            None,
            "bondslaves=eth0,eth1",
            Needs::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.links.bonds[0].slaves[0], Selector::Name("eth0".into()));
        assert_eq!(c.links.vlans.len(), 1, "node.toml's VLANs stay");
        let bad = crate::config::NodeConfig::parse(
            "[[network.bonds]]\nname = \"bond0\"\nslaves = [\"eth0\"]\noptions = \"lacp=1\"\n",
            std::path::Path::new("node.toml"),
        )
        .unwrap();
        let e = resolve(&bad.network, None, "", Needs::default()).unwrap_err();
        assert!(e.to_string().contains("network.bonds[0].options"), "{e}");
    }

    #[test]
    fn links_that_cannot_be_made_together_are_named() {
        for (line, needle) in [
            (
                "bond=bond0:eth0 bond=bond1:eth0,eth1 ip=dhcp",
                "invalid bond=/bondslaves=: eth0 is a member of both bond0 and bond1",
            ),
            (
                "bondslaves=eth0,eth1 ip=eth0:dhcp",
                "eth0 is a member of bond0: configure bond0 instead",
            ),
            (
                "ifname=bond0:52:54:00:00:00:01 bondslaves=eth0,eth1",
                "invalid ifname=, bond=/bondslaves=: bond0 is given to two links",
            ),
            (
                "bondslaves=eth0,eth1 vlan=vlan5:eth1",
                "vlan5: its parent eth1 is a member of bond0",
            ),
        ] {
            let e = resolve(&NetworkSection::default(), None, line, Needs::default()).unwrap_err();
            assert!(matches!(e, ConfigError::Links { .. }), "{line}: {e}");
            assert!(e.to_string().contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn invalid_link_keys_are_named_whether_or_not_the_network_is_needed() {
        for (line, key) in [
            ("bond=bond0:eth0:lacp=fast", "bond"),
            ("bond=bond0:eth0:mode=fast", "bond"),
            ("bond=b/0", "bond"),
            ("bondslaves=", "bondslaves"),
            ("bondslaves", "bondslaves"),
            ("vlan=vlan5", "vlan"),
            ("vlan=lan:eth0", "vlan"),
            ("vlan", "vlan"),
            ("ifname=lan0", "ifname"),
            ("ifname=lan0:52:54:00:00:00", "ifname"),
            ("ifname", "ifname"),
            ("rd.route=10.0.0.1/8:10.0.0.254", "rd.route"),
            ("rd.route=[2001:db8::/32]:[2001:db8::1]", "rd.route"),
            ("rd.route", "rd.route"),
        ] {
            for extra in ["", " ip=dhcp"] {
                let line = format!("{line}{extra}");
                let err =
                    resolve(&NetworkSection::default(), None, &line, Needs::default()).unwrap_err();
                assert!(
                    matches!(&err, ConfigError::Key { key: k, .. } if k == key),
                    "{line}: {err}"
                );
                assert!(
                    err.to_string().starts_with(&format!("invalid {key}=")),
                    "{err}"
                );
            }
        }
        let e = r#try("bond=bond0:eth0:lacp=fast");
        assert!(e.contains("\"lacp\" is not one of them"), "{e}");
    }

    fn r#try(line: &str) -> String {
        resolve(&NetworkSection::default(), None, line, Needs::default())
            .unwrap_err()
            .to_string()
    }

    proptest! {
        #[test]
        fn arbitrary_ip_values_never_panic(v in "[0-9a-z.:\\[\\]-]{0,80}") {
            let _ = split_fields(&v);
            let _ = resolve(
                &NetworkSection::default(),
                None,
                &format!("ip={v} BOOTIF={v} iface={v}"),
                Needs::default(),
            );
        }

        #[test]
        fn arbitrary_link_keys_never_panic(v in "[0-9a-z.:,;=/-]{0,60}", w in "[0-9a-z.:]{0,30}") {
            let _ = resolve(
                &NetworkSection::default(),
                None,
                &format!("ip=dhcp bond={v} bondslaves={w} vlan={w} ifname={w} rd.route={v} vlan={v}"),
                Needs::default(),
            );
        }
    }
}
