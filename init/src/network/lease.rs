//! What the network phase hands to the real system: `/run/terra/network/<ifname>.json` per
//! configured interface, `/run/terra/network/links/<ifname>.json` per link it made or
//! renamed (bonds, VLANs, `ifname=`), and `/run/terra/resolv.conf`. `/run` is moved into the
//! new root by the switch phase, so they survive it (as do the kernel's links, addresses and
//! routes).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

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

/// `<run>/network/<ifname>.json`.
pub fn lease_path(run: &Path, ifname: &str) -> PathBuf {
    run.join("network").join(format!("{ifname}.json"))
}

/// Writes the lease file; returns its path.
pub fn write_lease(run: &Path, lease: &Lease) -> io::Result<PathBuf> {
    let path = lease_path(run, &lease.interface);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
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

/// `<run>/network/ipv6/<ifname>.json`.
pub fn lease6_path(run: &Path, ifname: &str) -> PathBuf {
    run.join("network")
        .join("ipv6")
        .join(format!("{ifname}.json"))
}

/// Writes the IPv6 description of an interface; returns its path.
pub fn write_lease6(run: &Path, lease: &Lease6) -> io::Result<PathBuf> {
    let path = lease6_path(run, &lease.interface);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// `<run>/network/links/<ifname>.json`.
pub fn link_path(run: &Path, ifname: &str) -> PathBuf {
    run.join("network")
        .join("links")
        .join(format!("{ifname}.json"))
}

/// Writes the description of a link stage0 made; returns its path.
pub fn write_link(run: &Path, link: &MadeLink) -> io::Result<PathBuf> {
    let path = link_path(run, &link.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(link).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// resolv.conf text: servers in order without duplicates (glibc reads at most 3), and the
/// search list (option 119, else the domain names).
pub fn resolv_conf<A: Into<IpAddr> + Copy>(nameservers: &[A], search: &[String]) -> String {
    let mut s = String::from("# written by terra stage0\n");
    let mut seen: Vec<IpAddr> = Vec::new();
    for n in nameservers {
        let n: IpAddr = (*n).into();
        if !seen.contains(&n) {
            seen.push(n);
            s.push_str(&format!("nameserver {n}\n"));
        }
    }
    let mut domains: Vec<&str> = Vec::new();
    for d in search {
        if !domains.contains(&d.as_str()) {
            domains.push(d);
        }
    }
    if !domains.is_empty() {
        s.push_str(&format!("search {}\n", domains.join(" ")));
    }
    s
}

/// Writes `<run>/resolv.conf`; returns its path.
pub fn write_resolv(run: &Path, text: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(run)?;
    let path = run.join("resolv.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Writes a root path with any `user:secret@` replaced: leases go to files and reports that
/// anyone on the system may read.
fn redacted_root_path<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(p) => s.serialize_some(&crate::iscsi::target::redact_netroot(p)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_dedups_and_searches() {
        let t = resolv_conf(
            &[
                Ipv4Addr::new(10, 0, 2, 3),
                Ipv4Addr::new(1, 1, 1, 1),
                Ipv4Addr::new(10, 0, 2, 3),
            ],
            &["a.example".into(), "example".into(), "a.example".into()],
        );
        assert_eq!(
            t,
            "# written by terra stage0\nnameserver 10.0.2.3\nnameserver 1.1.1.1\nsearch a.example example\n"
        );
    }

    #[test]
    fn lease_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lease = Lease {
            interface: "eth0".into(),
            mac: "52:54:00:12:34:56".into(),
            link: None,
            source: "dhcp",
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            broadcast: None,
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            routes: vec![LeaseRoute {
                destination: "0.0.0.0/0".into(),
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
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
            server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
            acquired_uptime_ms: 1.0,
            elapsed_ms: 2.0,
        };
        let p = write_lease(dir.path(), &lease).unwrap();
        assert_eq!(p, dir.path().join("network/eth0.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(v["address"], "10.0.2.15");
        assert_eq!(v["routes"][0]["gateway"], "10.0.2.2");
        assert_eq!(v["lease_time_s"], 86400);
        assert!(v["root_path"].is_null());
        assert!(v["link"].is_null());
        assert!(v["routes"][0].get("origin").is_none());
        // A root path's CHAP credentials never reach the file.
        let chap = Lease {
            root_path: Some("iscsi:node:s3cret-chap@10.0.2.2::3260:1:iqn.2024-01.x:root".into()),
            ..lease
        };
        let p = write_lease(dir.path(), &chap).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        assert!(!text.contains("s3cret-chap"), "{text}");
        assert!(
            text.contains("iscsi:***@10.0.2.2::3260:1:iqn.2024-01.x:root"),
            "{text}"
        );
    }

    #[test]
    fn made_links_are_described_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let bond = MadeLink {
            name: "bond0".into(),
            mac: "52:54:00:00:b0:01".into(),
            mtu: None,
            kind: LinkKind::Bond {
                mode: "802.3ad",
                options: vec!["miimon=100".into()],
                slaves: vec![
                    Member {
                        name: "lan0".into(),
                        mac: "52:54:00:00:b0:01".into(),
                    },
                    Member {
                        name: "lan1".into(),
                        mac: "52:54:00:00:b0:02".into(),
                    },
                ],
            },
        };
        let p = write_link(dir.path(), &bond).unwrap();
        assert_eq!(p, dir.path().join("network/links/bond0.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(v["kind"], "bond");
        assert_eq!(v["mode"], "802.3ad");
        assert_eq!(v["slaves"][1]["name"], "lan1");
        assert_eq!(v["options"][0], "miimon=100");
        let vlan = MadeLink {
            name: "vlan5".into(),
            mac: "52:54:00:00:b0:01".into(),
            mtu: Some(1496),
            kind: LinkKind::Vlan {
                id: 5,
                parent: "bond0".into(),
            },
        };
        let v = serde_json::to_value(&vlan).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "vlan5", "mac": "52:54:00:00:b0:01", "mtu": 1496,
                "kind": "vlan", "id": 5, "parent": "bond0"})
        );
        let renamed = MadeLink {
            name: "lan0".into(),
            mac: "52:54:00:00:b0:01".into(),
            mtu: None,
            kind: LinkKind::Renamed {
                from: "eth0".into(),
            },
        };
        assert_eq!(serde_json::to_value(&renamed).unwrap()["from"], "eth0");
    }
}
