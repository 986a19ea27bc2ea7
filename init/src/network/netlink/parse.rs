//! rtnetlink answers as the network phase reads them: links, addresses and routes
//! (linux/rtnetlink.h, if_link.h, if_addr.h) parsed from the kernel's bytes with the
//! crate's header parsers and bounds-checked attribute walks; no I/O. The socket that sends
//! the requests and gathers the answers is the parent module.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_core::NlasIterator;
use netlink_packet_route::address::AddressHeader;
use netlink_packet_route::link::{LinkFlags, LinkHeader, LinkLayerType};
use netlink_packet_route::route::{RouteFlags, RouteHeader, RouteType};

use crate::network::types::format_mac;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (6 bytes for Ethernet).
    pub mac: Vec<u8>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier (IFF_LOWER_UP).
    pub carrier: bool,
    /// Operationally up (IFF_RUNNING): the kernel's link watcher has processed the carrier.
    pub running: bool,
    /// The loopback device.
    pub loopback: bool,
    /// An Ethernet-like link (ARPHRD_ETHER), the kind DHCP can run on.
    pub ether: bool,
    /// Current MTU.
    pub mtu: Option<u32>,
    /// The bond (or other master) it is enslaved to (IFLA_MASTER).
    pub master: Option<u32>,
    /// The link it sits on, for a VLAN (IFLA_LINK, when it differs from the index).
    pub parent: Option<u32>,
    /// The driver's kind for a virtual link: `bond`, `vlan`, `veth`… (IFLA_INFO_KIND).
    pub kind: Option<String>,
    /// A VLAN's ID (IFLA_VLAN_ID), a bond's mode (IFLA_BOND_MODE): the first attribute
    /// of IFLA_INFO_DATA for those two kinds.
    pub kind_value: Option<u16>,
}

impl Link {
    /// "52:54:00:12:34:56".
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// A virtual link stage0 makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virtual {
    /// A bond (driver `bonding`).
    Bond,
    /// An 802.1Q VLAN on the given link (driver `8021q`).
    Vlan {
        /// The parent's index.
        parent: u32,
    },
}

impl Virtual {
    /// The kind as the kernel names it (IFLA_INFO_KIND).
    pub fn kind(self) -> &'static str {
        match self {
            Virtual::Bond => "bond",
            Virtual::Vlan { .. } => "vlan",
        }
    }
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Destination prefix length (0 = default route).
    pub prefix: u8,
    /// Next hop; None for a directly connected (link scope) route.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface.
    pub oif: u32,
    /// The gateway is on the link even though no address's subnet covers it (RTNH_F_ONLINK).
    pub onlink: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_route(f, self.destination, self.prefix, self.gateway)
    }
}

/// A route as `ip route` shows it: `default` or `<net>/<prefix>`, then ` via <gateway>`.
fn write_route<A: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    destination: A,
    prefix: u8,
    gateway: Option<A>,
) -> fmt::Result {
    if prefix == 0 {
        write!(f, "default")?;
    } else {
        write!(f, "{destination}/{prefix}")?;
    }
    if let Some(g) = gateway {
        write!(f, " via {g}")?;
    }
    Ok(())
}

/// An IPv6 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    /// Destination network.
    pub destination: Ipv6Addr,
    /// Destination prefix length (0 = default route).
    pub prefix: u8,
    /// Next hop (for a router learned from an advertisement, its link-local address).
    pub gateway: Option<Ipv6Addr>,
    /// Output interface.
    pub oif: u32,
    /// Who installed it (`RTPROT_*`: 2 kernel, 3 boot, 9 router advertisement).
    pub protocol: u8,
}

/// `RTPROT_RA`: a route the kernel learned from a router advertisement.
pub const RTPROT_RA: u8 = 9;

impl fmt::Display for Route6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_route(f, self.destination, self.prefix, self.gateway)
    }
}

/// An IPv6 address of a link as the kernel shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address6 {
    /// The address.
    pub address: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
    /// `RT_SCOPE_*`: 0 global, 200 site, 253 link, 254 host.
    pub scope: u8,
    /// `IFA_F_*` (IFA_FLAGS when present, else the header's 8 bits).
    pub flags: u32,
}

/// `IFA_F_TENTATIVE`: duplicate address detection still runs; the address cannot be used.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_DADFAILED`: another node has the address.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_NODAD`: no duplicate address detection.
pub(super) const IFA_F_NODAD: u32 = 0x02;
/// `RT_SCOPE_LINK` (global is 0, site 200, host 254).
pub const SCOPE_LINK: u8 = 253;

impl Address6 {
    /// Usable as a source: neither tentative nor failed.
    pub fn usable(&self) -> bool {
        self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0
    }
}

/// One answer of the kernel, reduced to what the network phase reads.
///
/// Answers are read with the crate's header parsers and only the attributes named here,
/// not with `RouteNetlinkMessage`'s full parser: that one decodes every attribute of every
/// message family (traffic control, bridge, VF…), which alone added ~0.5 MB to stage0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Link(Link),
    Address {
        index: u32,
        local: Ipv4Addr,
        prefix: u8,
    },
    Route(Route, u8, RouteType),
    Address6 {
        index: u32,
        address: Address6,
    },
    Route6(Route6, u8, RouteType),
}

// rtnetlink message types and attributes (linux/rtnetlink.h, if_link.h, if_addr.h).
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
/// IFLA_VLAN_ID and IFLA_BOND_MODE: both attribute 1 of their kind's IFLA_INFO_DATA.
const INFO_DATA_FIRST: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const AF_INET6: u8 = 10;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
/// sizeof(struct ifinfomsg), sizeof(struct ifaddrmsg), sizeof(struct rtmsg).
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;

fn ipv4(v: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
}

fn ipv6(v: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(v).ok().map(Ipv6Addr::from)
}

fn u32_ne(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes)
}

/// Visits the attributes after a fixed header; a malformed one ends the walk.
fn attributes(payload: &[u8], header_len: usize, mut f: impl FnMut(u16, &[u8])) {
    let Some(rest) = payload.get(header_len..) else {
        return;
    };
    for nla in NlasIterator::new(rest) {
        match nla {
            Ok(nla) => f(nla.kind(), nla.value()),
            Err(_) => break,
        }
    }
}

pub(super) fn parse_answer(message_type: u16, payload: &[u8]) -> Option<Answer> {
    match message_type {
        RTM_NEWLINK => {
            let h = LinkHeader::parse(payload).ok()?;
            let mut link = Link {
                index: h.index,
                name: String::new(),
                mac: Vec::new(),
                up: h.flags.contains(LinkFlags::Up),
                carrier: h.flags.contains(LinkFlags::LowerUp),
                running: h.flags.contains(LinkFlags::Running),
                loopback: h.flags.contains(LinkFlags::Loopback),
                ether: h.link_layer_type == LinkLayerType::Ether,
                mtu: None,
                master: None,
                parent: None,
                kind: None,
                kind_value: None,
            };
            let mut data = Vec::new();
            attributes(payload, IFINFOMSG_LEN, |kind, v| match kind {
                IFLA_IFNAME => {
                    link.name = String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string()
                }
                IFLA_ADDRESS => link.mac = v.to_vec(),
                IFLA_MTU => link.mtu = u32_ne(v),
                IFLA_MASTER => link.master = u32_ne(v).filter(|m| *m != 0),
                IFLA_LINK => link.parent = u32_ne(v).filter(|p| *p != h.index && *p != 0),
                IFLA_LINKINFO => attributes(v, 0, |k, v| match k {
                    IFLA_INFO_KIND => {
                        link.kind = Some(
                            String::from_utf8_lossy(v)
                                .trim_end_matches('\0')
                                .to_string(),
                        )
                    }
                    IFLA_INFO_DATA => data = v.to_vec(),
                    _ => {}
                }),
                _ => {}
            });
            // The kind comes first in the kernel's answer, but nothing promises it.
            if matches!(link.kind.as_deref(), Some("vlan" | "bond")) {
                attributes(&data, 0, |k, v| {
                    if k == INFO_DATA_FIRST && link.kind_value.is_none() {
                        link.kind_value = match v {
                            [m] => Some(u16::from(*m)),
                            [a, b] => Some(u16::from_ne_bytes([*a, *b])),
                            _ => None,
                        };
                    }
                });
            }
            Some(Answer::Link(link))
        }
        // struct ifaddrmsg: family, prefixlen, flags, scope (u8 each), index (u32).
        RTM_NEWADDR if payload.first() == Some(&AF_INET6) => {
            let h = payload.get(..IFADDRMSG_LEN)?;
            let mut address = None;
            let mut flags = u32::from(h[2]);
            attributes(payload, IFADDRMSG_LEN, |kind, v| match kind {
                // For IPv6, IFA_ADDRESS is the address (IFA_LOCAL only on point-to-point).
                IFA_ADDRESS => address = ipv6(v),
                IFA_FLAGS => flags = u32_ne(v).unwrap_or(flags),
                _ => {}
            });
            Some(Answer::Address6 {
                index: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
                address: Address6 {
                    address: address?,
                    prefix: h[1],
                    scope: h[3],
                    flags,
                },
            })
        }
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        RTM_NEWROUTE if payload.first() == Some(&AF_INET6) => {
            let h = RouteHeader::parse(payload).ok()?;
            let protocol = *payload.get(5)?;
            let mut route = Route6 {
                destination: Ipv6Addr::UNSPECIFIED,
                prefix: h.destination_prefix_length,
                gateway: None,
                oif: 0,
                protocol,
            };
            let mut table = h.table;
            attributes(payload, RTMSG_LEN, |kind, v| match kind {
                RTA_DST => route.destination = ipv6(v).unwrap_or(Ipv6Addr::UNSPECIFIED),
                RTA_GATEWAY => route.gateway = ipv6(v),
                RTA_OIF => route.oif = u32_ne(v).unwrap_or(0),
                RTA_TABLE => table = u32_ne(v).map_or(table, |t| t.min(255) as u8),
                _ => {}
            });
            Some(Answer::Route6(route, table, h.kind))
        }
        RTM_NEWADDR => {
            let h = AddressHeader::parse(payload).ok()?;
            let mut local = None;
            attributes(payload, IFADDRMSG_LEN, |kind, v| {
                if kind == IFA_LOCAL {
                    local = ipv4(v);
                }
            });
            Some(Answer::Address {
                index: h.index,
                local: local?,
                prefix: h.prefix_len,
            })
        }
        RTM_NEWROUTE => {
            let h = RouteHeader::parse(payload).ok()?;
            let mut route = Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: h.destination_prefix_length,
                gateway: None,
                oif: 0,
                onlink: h.flags.contains(RouteFlags::Onlink),
            };
            let mut table = h.table;
            attributes(payload, RTMSG_LEN, |kind, v| match kind {
                RTA_DST => route.destination = ipv4(v).unwrap_or(Ipv4Addr::UNSPECIFIED),
                RTA_GATEWAY => route.gateway = ipv4(v),
                RTA_OIF => route.oif = u32_ne(v).unwrap_or(0),
                RTA_TABLE => table = u32_ne(v).map_or(table, |t| t.min(255) as u8),
                _ => {}
            });
            Some(Answer::Route(route, table, h.kind))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{
        InfoBond, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo, LinkMessage,
    };
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
    use netlink_packet_route::AddressFamily;

    #[test]
    fn route_display() {
        let r = Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            oif: 2,
            onlink: false,
        };
        assert_eq!(r.to_string(), "default via 10.0.2.2");
        assert_eq!(
            format_mac(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            "52:54:00:12:34:56"
        );
    }

    #[test]
    fn ipv6_addresses_and_routes_read_back() {
        use netlink_packet_core::Emitable;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = 64;
        msg.header.index = 3;
        msg.header.scope = netlink_packet_route::address::AddressScope::Site;
        msg.attributes.push(AddressAttribute::Address(
            "fec0::5054:ff:fe12:3456".parse().unwrap(),
        ));
        msg.attributes.push(AddressAttribute::Flags(
            netlink_packet_route::address::AddressFlags::from_bits_retain(IFA_F_TENTATIVE),
        ));
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let Some(Answer::Address6 { index, address }) = parse_answer(RTM_NEWADDR, &buf) else {
            panic!("not an IPv6 address")
        };
        assert_eq!((index, address.prefix, address.scope), (3, 64, 200));
        assert!(!address.usable(), "tentative");
        assert_eq!(address.address.to_string(), "fec0::5054:ff:fe12:3456");
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet6;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Ra;
        route.header.kind = RouteType::Unicast;
        route
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet6(
                "fe80::2".parse().unwrap(),
            )));
        route.attributes.push(RouteAttribute::Oif(3));
        let mut buf = vec![0u8; route.buffer_len()];
        route.emit(&mut buf);
        let Some(Answer::Route6(r, table, RouteType::Unicast)) = parse_answer(RTM_NEWROUTE, &buf)
        else {
            panic!("not an IPv6 route")
        };
        assert_eq!(table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!((r.prefix, r.oif, r.protocol), (0, 3, RTPROT_RA));
        assert_eq!(r.to_string(), "default via fe80::2");
        // Cut anywhere: never a panic.
        for n in 0..buf.len() {
            let _ = parse_answer(RTM_NEWROUTE, &buf[..n]);
        }
    }

    /// An RTM_NEWLINK as the crate's emitter writes it (the layout the kernel uses: the
    /// header, then attributes, IFLA_LINKINFO nesting the kind and its data).
    fn newlink(index: u32, attributes: Vec<LinkAttribute>) -> Vec<u8> {
        use netlink_packet_core::Emitable;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.link_layer_type = LinkLayerType::Ether;
        msg.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        msg.attributes = attributes;
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[test]
    fn links_read_their_master_parent_and_kind() {
        let vlan = newlink(
            7,
            vec![
                LinkAttribute::IfName("vlan5".into()),
                LinkAttribute::Address(vec![0x52, 0x54, 0, 0, 0xb0, 1]),
                LinkAttribute::Link(6),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vlan),
                    LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(5)])),
                ]),
            ],
        );
        let Some(Answer::Link(l)) = parse_answer(RTM_NEWLINK, &vlan) else {
            panic!("not a link")
        };
        assert_eq!(
            (
                l.name.as_str(),
                l.kind.as_deref(),
                l.parent,
                l.kind_value,
                l.master
            ),
            ("vlan5", Some("vlan"), Some(6), Some(5), None)
        );
        assert!(l.carrier && l.up && l.ether);
        let bond = newlink(
            6,
            vec![
                LinkAttribute::IfName("bond0".into()),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Bond),
                    LinkInfo::Data(InfoData::Bond(vec![
                        InfoBond::Mode(netlink_packet_route::link::BondMode::Ieee8023Ad),
                        InfoBond::MiiMon(100),
                    ])),
                ]),
            ],
        );
        let Some(Answer::Link(l)) = parse_answer(RTM_NEWLINK, &bond) else {
            panic!("not a link")
        };
        assert_eq!((l.kind.as_deref(), l.kind_value), (Some("bond"), Some(4)));
        let member = newlink(
            2,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Controller(6),
                // IFLA_LINK naming the link itself, as physical NICs report it.
                LinkAttribute::Link(2),
            ],
        );
        let Some(Answer::Link(l)) = parse_answer(RTM_NEWLINK, &member) else {
            panic!("not a link")
        };
        assert_eq!((l.master, l.parent, l.kind), (Some(6), None, None));
        // Cut anywhere, a message is a link with less, or nothing: never a panic.
        for n in 0..vlan.len() {
            let _ = parse_answer(RTM_NEWLINK, &vlan[..n]);
        }
    }
}
