//! Links, addresses and routes over a blocking `NETLINK_ROUTE` socket. The requests are
//! netlink-packet-route's types; the socket is nix's (no async runtime in stage0). Every
//! request asks for an ACK, so a refusal comes back as the kernel's errno with the request
//! named. The answers are read by `netlink/parse.rs` (no I/O), which also holds the types they
//! become ([`Link`], [`Route`], [`Route6`], [`Address6`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBond, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily as SockFamily, MsgFlags,
    NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

mod parse;

use parse::{parse_answer, Answer, IFA_F_NODAD, NLMSG_DONE, NLMSG_ERROR};
pub use parse::{
    Address6, Link, Route, Route6, Virtual, IFA_F_DADFAILED, IFA_F_TENTATIVE, RTPROT_RA, SCOPE_LINK,
};

/// A netlink request that failed; `what` names the request and the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// e.g. "add address 10.0.2.15/24 on eth0".
    pub what: String,
    /// The kernel's (or the socket's) answer.
    pub errno: Errno,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netlink: {}: {}", self.what, self.errno)
    }
}

impl std::error::Error for NetlinkError {}

/// A blocking rtnetlink socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// A receive that takes longer than this means the kernel is not answering.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

impl Netlink {
    /// Opens and binds a `NETLINK_ROUTE` socket.
    pub fn open() -> Result<Self, NetlinkError> {
        let err = |errno| NetlinkError {
            what: "open NETLINK_ROUTE socket".into(),
            errno,
        };
        let fd = socket(
            SockFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(err)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(err)?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(err)?;
        // Dumps of a busy host can be large; 32 KiB per datagram is what the kernel uses.
        Ok(Netlink {
            fd,
            seq: 1,
            buf: vec![0u8; 32 * 1024],
        })
    }

    /// Sends one request and collects the answers until the ACK (or, for a dump, DONE).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<Answer>, NetlinkError> {
        let err = |errno| NetlinkError {
            what: what(),
            errno,
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        sendto(
            self.fd.as_raw_fd(),
            &out,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(err)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(err(Errno::ETIMEDOUT)),
                Err(e) => return Err(err(e)),
            };
            let mut data = self.buf.get(..n).unwrap_or_default();
            while data.len() >= 16 {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if len < 16 || len > data.len() {
                    return Err(err(Errno::EBADMSG));
                }
                let (one, rest) = data.split_at(len);
                data = rest
                    .get(len.next_multiple_of(4) - len..)
                    .unwrap_or_default();
                // struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32 (netlink(7)).
                let message_type = u16::from_ne_bytes([one[4], one[5]]);
                let msg_seq = u32::from_ne_bytes([one[8], one[9], one[10], one[11]]);
                if msg_seq != seq {
                    continue;
                }
                let payload = &one[16..];
                match message_type {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .and_then(|c| <[u8; 4]>::try_from(c).ok())
                            .map_or(-(Errno::EBADMSG as i32), i32::from_ne_bytes);
                        return match code {
                            0 => Ok(answers),
                            c => Err(err(Errno::from_raw(-c))),
                        };
                    }
                    NLMSG_DONE => return Ok(answers),
                    t => {
                        answers.extend(parse_answer(t, payload));
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(answers);
                        }
                    }
                }
            }
        }
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let answers = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            &|| "list links".into(),
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                Answer::Link(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// One link by index.
    pub fn link(&mut self, index: u32) -> Result<Link, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let answers = self.request(RouteNetlinkMessage::GetLink(msg), 0, &|| {
            format!("get link {index}")
        })?;
        answers
            .into_iter()
            .find_map(|m| match m {
                Answer::Link(l) => Some(l),
                _ => None,
            })
            .ok_or(NetlinkError {
                what: format!("get link {index}"),
                errno: Errno::ENODEV,
            })
    }

    /// Sets a link up, and its MTU when given.
    pub fn set_up(&mut self, link: &Link, mtu: Option<u32>) -> Result<(), NetlinkError> {
        self.set_link(
            link,
            Some(LinkFlags::Up),
            mtu.map(LinkAttribute::Mtu),
            &|| match mtu {
                Some(m) => format!("set {} up with mtu {m}", link.name),
                None => format!("set {} up", link.name),
            },
        )
    }

    /// A link by name, if there is one.
    pub fn link_named(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// Makes a virtual link named `name` with the kind's `IFLA_INFO_DATA` attributes
    /// (payloads as netlink carries them), or, when a link of that name and kind exists,
    /// changes it to them: NLM_F_CREATE without NLM_F_EXCL, so the step can run again. The
    /// kernel refuses a link of that name but another kind (EOPNOTSUPP); the caller reads
    /// the link back to see that it is what was asked.
    pub fn create_or_update(
        &mut self,
        name: &str,
        what: Virtual,
        data: Vec<(u16, Vec<u8>)>,
    ) -> Result<(), NetlinkError> {
        let nlas = data.into_iter().map(|(k, v)| DefaultNla::new(k, v));
        let (kind, data) = match what {
            Virtual::Bond => (
                InfoKind::Bond,
                InfoData::Bond(nlas.map(InfoBond::Other).collect()),
            ),
            Virtual::Vlan { .. } => (
                InfoKind::Vlan,
                InfoData::Vlan(nlas.map(InfoVlan::Other).collect()),
            ),
        };
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Virtual::Vlan { parent } = what {
            msg.attributes.push(LinkAttribute::Link(parent));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(kind),
            LinkInfo::Data(data),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE,
            &|| format!("make {} {name}", what.kind()),
        )
        .map(drop)
    }

    fn set_link(
        &mut self,
        link: &Link,
        flags: Option<LinkFlags>,
        attribute: Option<LinkAttribute>,
        what: &dyn Fn() -> String,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = link.index;
        if let Some(f) = flags {
            msg.header.flags = f;
            msg.header.change_mask = LinkFlags::Up;
        }
        msg.attributes.extend(attribute);
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK, what)
            .map(drop)
    }

    /// Sets a link down (the bonding driver enslaves only links that are down).
    pub fn set_down(&mut self, link: &Link) -> Result<(), NetlinkError> {
        self.set_link(link, Some(LinkFlags::empty()), None, &|| {
            format!("set {} down", link.name)
        })
    }

    /// Enslaves a link to a bond (IFLA_MASTER).
    pub fn set_master(&mut self, link: &Link, master: &Link) -> Result<(), NetlinkError> {
        self.set_link(
            link,
            None,
            Some(LinkAttribute::Controller(master.index)),
            &|| format!("enslave {} to {}", link.name, master.name),
        )
    }

    /// Renames a link (it must be down).
    pub fn rename(&mut self, link: &Link, name: &str) -> Result<(), NetlinkError> {
        self.set_link(
            link,
            None,
            Some(LinkAttribute::IfName(name.to_string())),
            &|| format!("rename {} ({}) to {name}", link.name, link.mac_string()),
        )
    }

    /// Waits until `index` has carrier, at most until `deadline`; returns the link as last seen.
    pub fn wait_carrier(&mut self, index: u32, deadline: Instant) -> Result<Link, NetlinkError> {
        loop {
            let link = self.link(index)?;
            if link.carrier || Instant::now() >= deadline {
                return Ok(link);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds (or replaces) an IPv4 address with its prefix and broadcast address.
    pub fn add_address(
        &mut self,
        link: &Link,
        address: Ipv4Addr,
        prefix: u8,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = link.index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(address)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(address)));
        if let Some(b) = broadcast {
            msg.attributes.push(AddressAttribute::Broadcast(b));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("add address {address}/{prefix} on {}", link.name),
        )
        .map(drop)
    }

    /// The IPv4 addresses of a link, with their prefix lengths.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let answers = self.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP, &|| {
            "list addresses".into()
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                Answer::Address {
                    index: i,
                    local,
                    prefix,
                } if i == index => Some((local, prefix)),
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) an IPv4 route in the main table.
    pub fn add_route(&mut self, route: &Route, ifname: &str) -> Result<(), NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: AddressFamily::Inet,
            destination_prefix_length: route.prefix,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: if route.gateway.is_some() {
                RouteScope::Universe
            } else {
                RouteScope::Link
            },
            kind: RouteType::Unicast,
            flags: if route.onlink {
                RouteFlags::Onlink
            } else {
                RouteFlags::empty()
            },
            ..RouteHeader::default()
        };
        let destination = (route.prefix > 0).then_some(RouteAddress::Inet(route.destination));
        let gateway = route.gateway.map(RouteAddress::Inet);
        self.new_route(msg, destination, gateway, route.oif, &|| match ifname {
            "" => format!("add route {route}"),
            dev => format!("add route {route} dev {dev}"),
        })
    }

    /// Sends `msg` as a new (or replacing) route with its destination, gateway and output
    /// interface (0: none, so the kernel picks the one that reaches the gateway).
    fn new_route(
        &mut self,
        mut msg: RouteMessage,
        destination: Option<RouteAddress>,
        gateway: Option<RouteAddress>,
        oif: u32,
        what: &dyn Fn() -> String,
    ) -> Result<(), NetlinkError> {
        if let Some(d) = destination {
            msg.attributes.push(RouteAttribute::Destination(d));
        }
        if let Some(g) = gateway {
            msg.attributes.push(RouteAttribute::Gateway(g));
        }
        if oif != 0 {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            what,
        )
        .map(drop)
    }

    /// Adds (or replaces) an IPv6 address. `nodad` skips duplicate address detection (for
    /// an address a DHCPv6 server assigned us, which checked it, so it is usable at once).
    pub fn add_address6(
        &mut self,
        link: &Link,
        address: Ipv6Addr,
        prefix: u8,
        nodad: bool,
    ) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.index = link.index;
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V6(address)));
        if nodad {
            msg.attributes.push(AddressAttribute::Flags(
                netlink_packet_route::address::AddressFlags::from_bits_retain(IFA_F_NODAD),
            ));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("add address {address}/{prefix} on {}", link.name),
        )
        .map(drop)
    }

    /// The IPv6 addresses of a link, with scope and flags.
    pub fn addresses6(&mut self, index: u32) -> Result<Vec<Address6>, NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        let answers = self.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP, &|| {
            "list IPv6 addresses".into()
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                Answer::Address6 { index: i, address } if i == index => Some(address),
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) an IPv6 route in the main table.
    pub fn add_route6(&mut self, route: &Route6, ifname: &str) -> Result<(), NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: AddressFamily::Inet6,
            destination_prefix_length: route.prefix,
            table: RouteHeader::RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        let destination = (route.prefix > 0).then_some(RouteAddress::Inet6(route.destination));
        let gateway = route.gateway.map(RouteAddress::Inet6);
        self.new_route(msg, destination, gateway, route.oif, &|| {
            format!("add route {route} dev {ifname}")
        })
    }

    /// The IPv6 unicast routes of the main table.
    pub fn routes6(&mut self) -> Result<Vec<Route6>, NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        let answers = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, &|| {
            "list IPv6 routes".into()
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                Answer::Route6(r, table, kind)
                    if table == RouteHeader::RT_TABLE_MAIN && kind == RouteType::Unicast =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect())
    }

    /// The IPv4 unicast routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let answers = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, &|| {
            "list routes".into()
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                Answer::Route(r, table, kind)
                    if table == RouteHeader::RT_TABLE_MAIN && kind == RouteType::Unicast =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect())
    }
}
