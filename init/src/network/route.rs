//! dracut's `rd.route=<net>/<netmask>:<gateway>[:<interface>]` (dracut.cmdline(7)): routes
//! added once the interfaces are configured, so that their gateways are reachable. IPv4
//! only; the IPv6 form (`[net/prefix]:[gw]`) is refused by name until stage0 speaks IPv6.

use std::fmt;
use std::net::Ipv4Addr;

use super::ifname::valid_ifname;
use super::types::parse_netmask;

/// One `rd.route=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraRoute {
    /// Destination network (host bits clear).
    pub destination: Ipv4Addr,
    /// Its prefix length; 0 makes it a default route.
    pub prefix: u8,
    /// Next hop; None for a route straight onto `dev`.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface; None lets the kernel find the one that reaches the gateway.
    pub dev: Option<String>,
}

impl fmt::Display for ExtraRoute {
    /// As written on the command line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:", self.destination, self.prefix)?;
        if let Some(g) = self.gateway {
            write!(f, "{g}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, ":{d}")?;
        }
        Ok(())
    }
}

/// What `rd.route=` must look like, for messages.
pub const EXPECTED: &str = "<net>/<prefix or netmask>:<gateway>[:<interface>] (IPv4), \
     the network's host bits clear; the gateway may be empty when an interface is named";

/// Parses `rd.route=`'s value.
pub fn parse_rd_route(v: &str) -> Result<ExtraRoute, &'static str> {
    if v.starts_with('[') {
        return Err("an IPv4 route: the IPv6 form is not supported yet");
    }
    let fields: Vec<&str> = v.split(':').collect();
    let (net, gw, dev) = match fields.as_slice() {
        [net, gw] => (*net, *gw, None),
        [net, gw, dev] => (*net, *gw, Some(*dev)),
        _ => return Err(EXPECTED),
    };
    let (addr, mask) = net.split_once('/').ok_or(EXPECTED)?;
    let destination: Ipv4Addr = addr.parse().map_err(|_| EXPECTED)?;
    let prefix = parse_netmask(mask).ok_or(EXPECTED)?;
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    // The kernel refuses a destination with host bits set (EINVAL): say so here, by key.
    if u32::from(destination) & host_bits != 0 {
        return Err(EXPECTED);
    }
    let gateway = match gw {
        "" => None,
        g => Some(g.parse::<Ipv4Addr>().map_err(|_| EXPECTED)?),
    };
    let dev = match dev {
        None | Some("") => None,
        Some(d) if valid_ifname(d) => Some(d.to_string()),
        Some(_) => return Err(EXPECTED),
    };
    if gateway.is_none() && dev.is_none() {
        return Err(EXPECTED);
    }
    Ok(ExtraRoute {
        destination,
        prefix,
        gateway,
        dev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dracut_forms() {
        let r = parse_rd_route("192.168.200.0/24:192.168.100.222:ens10").unwrap();
        assert_eq!(
            r,
            ExtraRoute {
                destination: Ipv4Addr::new(192, 168, 200, 0),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 168, 100, 222)),
                dev: Some("ens10".into()),
            }
        );
        assert_eq!(r.to_string(), "192.168.200.0/24:192.168.100.222:ens10");
        let r = parse_rd_route("10.99.0.0/255.255.0.0:10.0.2.2").unwrap();
        assert_eq!((r.prefix, r.dev), (16, None));
        let r = parse_rd_route("0.0.0.0/0:10.0.2.2").unwrap();
        assert_eq!(r.prefix, 0);
        // A route straight onto a link.
        let r = parse_rd_route("10.98.0.0/16::bond0").unwrap();
        assert_eq!(r.gateway, None);
        assert_eq!(r.to_string(), "10.98.0.0/16::bond0");
    }

    #[test]
    fn bad_values() {
        for bad in [
            "",
            "10.0.0.0/8",
            "10.0.0.0:10.0.0.1",
            "10.0.0.1/8:10.0.0.254",
            "10.0.0.0/33:10.0.0.1",
            "10.0.0.0/255.0.255.0:10.0.0.1",
            "10.0.0.0/8:gw",
            "10.0.0.0/8:",
            "10.0.0.0/8::",
            "10.0.0.0/8:10.0.0.1:a/b",
            "10.0.0.0/8:10.0.0.1:eth0:x",
            "[2001:db8::/32]:[2001:db8::1]",
        ] {
            assert!(parse_rd_route(bad).is_err(), "{bad:?}");
        }
        assert!(parse_rd_route("[2001:db8::/32]:[2001:db8::1]")
            .unwrap_err()
            .contains("IPv6"));
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(v in "[0-9a-z./:\\[\\]]{0,60}") {
            if let Ok(r) = parse_rd_route(&v) {
                // What parses prints back as something that parses to the same route.
                prop_assert_eq!(parse_rd_route(&r.to_string()), Ok(r));
            }
        }
    }
}
