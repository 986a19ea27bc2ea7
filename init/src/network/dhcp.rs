//! DHCPv4 client (RFC 2131): the messages (dhcproto for the wire format, checked here before
//! anything is trusted) and the state machine INIT → SELECTING → REQUESTING → BOUND, with
//! INIT-REBOOT when an address is asked for. No I/O here: the machine talks through
//! [`Transport`], which `socket.rs` implements over UDP and the tests implement in memory.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, Flags, HType, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// RFC 2131 §2: the fixed BOOTP header before the options (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
/// RFC 1542 §3.3 / RFC 951: BOOTP relays and old servers expect at least 300 bytes.
pub const BOOTP_MIN_LEN: usize = 300;
/// Replies longer than this are not DHCP on any link we boot from (jumbo frames included).
pub const MAX_REPLY_LEN: usize = 4096;
/// An option list longer than this is a bomb, not a lease.
pub const MAX_OPTIONS: usize = 128;
/// RFC 2131 §3: the magic cookie 99.130.83.99 that starts the options.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// The options asked for in the Parameter Request List (RFC 2132 §9.8).
pub const REQUESTED: [OptionCode; 13] = [
    OptionCode::SubnetMask,           // 1
    OptionCode::Router,               // 3
    OptionCode::DomainNameServer,     // 6
    OptionCode::Hostname,             // 12
    OptionCode::DomainName,           // 15
    OptionCode::RootPath,             // 17
    OptionCode::InterfaceMtu,         // 26
    OptionCode::BroadcastAddr,        // 28
    OptionCode::NtpServers,           // 42
    OptionCode::TFTPServerName,       // 66
    OptionCode::BootfileName,         // 67
    OptionCode::DomainSearch,         // 119
    OptionCode::ClasslessStaticRoute, // 121
];

/// Who the client is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The link's Ethernet address (chaddr).
    pub mac: [u8; 6],
    /// Host name to send (option 12), when the config has one.
    pub hostname: Option<String>,
}

impl Identity {
    /// RFC 2132 §9.14: type 1 (Ethernet) followed by the hardware address.
    pub fn client_id(&self) -> Vec<u8> {
        let mut id = vec![1u8];
        id.extend_from_slice(&self.mac);
        id
    }
}

/// What a server's reply says, once it has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// DHCPOFFER
    Offer,
    /// DHCPACK
    Ack,
    /// DHCPNAK
    Nak,
}

impl fmt::Display for ReplyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyKind::Offer => "OFFER",
            ReplyKind::Ack => "ACK",
            ReplyKind::Nak => "NAK",
        })
    }
}

/// The configuration a server hands out (RFC 2132 option numbers beside each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// yiaddr.
    pub address: Ipv4Addr,
    /// 1, as a prefix length; the classful default when absent.
    pub prefix: u8,
    /// 3
    pub routers: Vec<Ipv4Addr>,
    /// 121 (RFC 3442): (destination, prefix, gateway); when present, 3 is ignored (§3.5 ibid.).
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// 6
    pub dns: Vec<Ipv4Addr>,
    /// 12
    pub hostname: Option<String>,
    /// 15
    pub domain: Option<String>,
    /// 17
    pub root_path: Option<String>,
    /// 26
    pub mtu: Option<u16>,
    /// 28
    pub broadcast: Option<Ipv4Addr>,
    /// 42
    pub ntp: Vec<Ipv4Addr>,
    /// 66
    pub tftp_server: Option<String>,
    /// 67
    pub bootfile: Option<String>,
    /// 119 (RFC 3397), without trailing dots.
    pub search: Vec<String>,
    /// 51, seconds.
    pub lease_time: Option<u32>,
    /// 54
    pub server_id: Ipv4Addr,
}

impl Default for Offered {
    fn default() -> Self {
        Offered {
            address: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            routers: Vec::new(),
            classless_routes: Vec::new(),
            dns: Vec::new(),
            hostname: None,
            domain: None,
            root_path: None,
            mtu: None,
            broadcast: None,
            ntp: Vec::new(),
            tftp_server: None,
            bootfile: None,
            search: Vec::new(),
            lease_time: None,
            server_id: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// A checked server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub kind: ReplyKind,
    /// What it offers (for a NAK only `server_id` is meaningful).
    pub offered: Offered,
    /// A NAK's reason (option 56), if any.
    pub message: Option<String>,
}

/// Why a received datagram was not taken as a reply to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than the fixed header.
    Truncated(usize),
    /// Longer than [`MAX_REPLY_LEN`].
    Oversized(usize),
    /// The magic cookie is not 99.130.83.99.
    BadMagic,
    /// op is not BOOTREPLY.
    NotAReply,
    /// A reply to another transaction.
    WrongXid(u32),
    /// A reply for another hardware address or type.
    WrongHardware,
    /// The option list does not walk cleanly (length past the end, no End, too many).
    BadOptions(&'static str),
    /// dhcproto could not decode it.
    Undecodable(String),
    /// No message type (option 53): a plain BOOTP reply.
    NoMessageType,
    /// A message type a client does not receive.
    UnexpectedType(String),
    /// No server identifier (option 54), which RFC 2131 §4.3.1 requires.
    NoServerId,
    /// yiaddr is not a usable host address.
    BadAddress(Ipv4Addr),
    /// The subnet mask is not contiguous.
    BadNetmask(Ipv4Addr),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Truncated(n) => write!(f, "truncated ({n} bytes)"),
            Rejected::Oversized(n) => write!(f, "oversized ({n} bytes)"),
            Rejected::BadMagic => write!(f, "bad magic cookie"),
            Rejected::NotAReply => write!(f, "not a BOOTREPLY"),
            Rejected::WrongXid(x) => write!(f, "xid {x:#010x} is not ours"),
            Rejected::WrongHardware => write!(f, "for another hardware address"),
            Rejected::BadOptions(why) => write!(f, "bad options: {why}"),
            Rejected::Undecodable(e) => write!(f, "undecodable: {e}"),
            Rejected::NoMessageType => write!(f, "no DHCP message type (BOOTP)"),
            Rejected::UnexpectedType(t) => write!(f, "unexpected message type {t}"),
            Rejected::NoServerId => write!(f, "no server identifier"),
            Rejected::BadAddress(a) => write!(f, "unusable address {a}"),
            Rejected::BadNetmask(m) => write!(f, "non-contiguous netmask {m}"),
        }
    }
}

/// An empty BOOTREQUEST (op 1, htype 1, addresses 0, the magic cookie and End), decoded
/// from bytes. Not `v4::Message::new_with_id`: its `..Default::default()` asks `rand` for an
/// xid it then overwrites, and the first such call waits for the kernel's CRNG — a second
/// of the network phase under QEMU early in boot.
fn blank_request() -> v4::Message {
    let mut b = [0u8; 241];
    b[0] = 1;
    b[1] = 1;
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b[240] = 255;
    v4::Message::decode(&mut Decoder::new(&b)).unwrap_or_else(|_| {
        let z = Ipv4Addr::UNSPECIFIED;
        v4::Message::new_with_id(0, z, z, z, z, &[])
    })
}

fn base_message(id: &Identity, xid: u32, secs: u16, kind: MessageType) -> v4::Message {
    let mut msg = blank_request();
    msg.set_xid(xid)
        .set_chaddr(&id.mac)
        .set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_secs(secs)
        // RFC 2131 §4.1: a client that cannot receive unicast before it is configured sets
        // BROADCAST; we receive on a UDP socket, which needs exactly that.
        .set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(id.client_id()));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    opts.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
    if let Some(h) = &id.hostname {
        opts.insert(DhcpOption::Hostname(h.clone()));
    }
    msg
}

fn encode(msg: &v4::Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(BOOTP_MIN_LEN);
    // Encoding into a Vec only fails for values that do not fit their fields (a hostname of
    // more than 255 bytes): the option is then cut, which the server may reject on its own.
    if msg.encode(&mut Encoder::new(&mut out)).is_err() {
        out.clear();
        let mut m = msg.clone();
        m.opts_mut().remove(OptionCode::Hostname);
        let _ = m.encode(&mut Encoder::new(&mut out));
    }
    if out.len() < BOOTP_MIN_LEN {
        out.resize(BOOTP_MIN_LEN, 0); // zero = Pad after End
    }
    out
}

/// DHCPDISCOVER (RFC 2131 §4.4.1).
pub fn discover(id: &Identity, xid: u32, secs: u16) -> Vec<u8> {
    encode(&base_message(id, xid, secs, MessageType::Discover))
}

/// DHCPREQUEST: in SELECTING with the chosen server's identifier, or in INIT-REBOOT without
/// one (RFC 2131 §4.3.2); both carry the requested address in option 50 and ciaddr 0.
pub fn request(
    id: &Identity,
    xid: u32,
    secs: u16,
    requested: Ipv4Addr,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut msg = base_message(id, xid, secs, MessageType::Request);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(requested));
    if let Some(s) = server {
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(s));
    }
    encode(&msg)
}

/// Whether an option's length is one its fixed format allows. dhcproto decodes these codes
/// assuming the length (a `debug_assert!`, or `len - 3`), so a wrong one must not reach it:
/// Rapid Commit is empty (RFC 4039), Client FQDN has 3 fixed bytes (RFC 4702 §2), the Client
/// Network Interface is 3 bytes (RFC 4578 §2.2), Bulk Leasequery times are 4 (RFC 6926 §6.2).
fn length_fits(code: u8, len: usize) -> bool {
    match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        152..=155 => len == 4,
        _ => true,
    }
}

/// Walks the option list (RFC 2132 §2) without trusting it: every length inside the packet,
/// an End, and not more than [`MAX_OPTIONS`] options.
fn walk_options(mut opts: &[u8]) -> Result<(), Rejected> {
    let mut count = 0usize;
    loop {
        match opts {
            [] => return Err(Rejected::BadOptions("no End option")),
            [255, ..] => return Ok(()),
            [0, rest @ ..] => opts = rest,
            [_, len, rest @ ..] => {
                let len = usize::from(*len);
                if len > rest.len() {
                    return Err(Rejected::BadOptions("option runs past the end"));
                }
                count += 1;
                if count > MAX_OPTIONS {
                    return Err(Rejected::BadOptions("too many options"));
                }
                if !length_fits(opts[0], len) {
                    return Err(Rejected::BadOptions("option length wrong for its code"));
                }
                opts = &rest[len..];
            }
            [_] => return Err(Rejected::BadOptions("option without a length")),
        }
    }
}

/// Checks and parses a datagram received on port 68 as a reply to transaction `xid` of the
/// client with hardware address `mac`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: &[u8; 6]) -> Result<Reply, Rejected> {
    if bytes.len() < HEADER_LEN {
        return Err(Rejected::Truncated(bytes.len()));
    }
    if bytes.len() > MAX_REPLY_LEN {
        return Err(Rejected::Oversized(bytes.len()));
    }
    // Offsets of RFC 2131 §2, figure 1.
    if bytes[0] != 2 {
        return Err(Rejected::NotAReply);
    }
    let got_xid = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if got_xid != xid {
        return Err(Rejected::WrongXid(got_xid));
    }
    if bytes[1] != 1 || bytes[2] != 6 || bytes[28..34] != mac[..] {
        return Err(Rejected::WrongHardware);
    }
    if bytes[236..240] != MAGIC {
        return Err(Rejected::BadMagic);
    }
    walk_options(&bytes[HEADER_LEN..])?;
    let msg = v4::Message::decode(&mut Decoder::new(bytes))
        .map_err(|e| Rejected::Undecodable(e.to_string()))?;
    let opts = msg.opts();
    let kind = match opts.get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(MessageType::Offer)) => ReplyKind::Offer,
        Some(DhcpOption::MessageType(MessageType::Ack)) => ReplyKind::Ack,
        Some(DhcpOption::MessageType(MessageType::Nak)) => ReplyKind::Nak,
        Some(DhcpOption::MessageType(t)) => return Err(Rejected::UnexpectedType(format!("{t:?}"))),
        _ => return Err(Rejected::NoMessageType),
    };
    let Some(DhcpOption::ServerIdentifier(server_id)) = opts.get(OptionCode::ServerIdentifier)
    else {
        return Err(Rejected::NoServerId);
    };
    let mut o = Offered {
        server_id: *server_id,
        ..Offered::default()
    };
    let message = match opts.get(OptionCode::Message) {
        Some(DhcpOption::Message(m)) => Some(m.clone()),
        _ => None,
    };
    if kind == ReplyKind::Nak {
        return Ok(Reply {
            kind,
            offered: o,
            message,
        });
    }
    let address = msg.yiaddr();
    if !usable_host(address) {
        return Err(Rejected::BadAddress(address));
    }
    o.address = address;
    o.prefix = classful_prefix(address);
    for (_, opt) in opts.iter() {
        match opt {
            DhcpOption::SubnetMask(m) => {
                o.prefix = mask_to_prefix(*m).ok_or(Rejected::BadNetmask(*m))?;
            }
            DhcpOption::Router(r) => o.routers = r.clone(),
            DhcpOption::ClasslessStaticRoute(routes) => {
                o.classless_routes = routes
                    .iter()
                    .map(|(net, gw)| (net.network(), net.prefix_len(), *gw))
                    .collect();
            }
            DhcpOption::DomainNameServer(d) => o.dns = d.clone(),
            DhcpOption::Hostname(h) => o.hostname = Some(h.clone()),
            DhcpOption::DomainName(d) => o.domain = Some(d.trim_end_matches('.').to_string()),
            DhcpOption::RootPath(p) => o.root_path = Some(p.clone()),
            DhcpOption::InterfaceMtu(m) => o.mtu = Some(*m),
            DhcpOption::BroadcastAddr(b) => o.broadcast = Some(*b),
            DhcpOption::NtpServers(n) => o.ntp = n.clone(),
            DhcpOption::TFTPServerName(t) => o.tftp_server = Some(text(t)),
            DhcpOption::BootfileName(b) => o.bootfile = Some(text(b)),
            DhcpOption::DomainSearch(names) => {
                o.search = names
                    .iter()
                    .map(|n| n.to_string().trim_end_matches('.').to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
            }
            DhcpOption::AddressLeaseTime(t) => o.lease_time = Some(*t),
            _ => {}
        }
    }
    Ok(Reply {
        kind,
        offered: o,
        message,
    })
}

/// Options 66 and 67 are NVT ASCII that some servers NUL-terminate.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\0')
        .to_string()
}

fn usable_host(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// The prefix length of a contiguous netmask.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// RFC 791 classes, for a server that sends no subnet mask.
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Sends and receives datagrams for one interface.
pub trait Transport {
    /// Broadcasts one message to the servers (255.255.255.255:67).
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()>;
    /// Waits up to `timeout` for one datagram; `Ok(None)` when none came.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>>;
}

/// A small PRNG (splitmix64) for xids and jitter; seeded from the kernel by the caller.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from the kernel without waiting for its CRNG
    /// ([`crate::entropy::fill_nonce`]): a transaction id need not be a secret.
    pub fn from_kernel() -> Self {
        let mut b = [0u8; 8];
        crate::entropy::fill_nonce(&mut b);
        Rng(u64::from_ne_bytes(b))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Retransmission delay before attempt `n` + 1 (RFC 2131 §4.1): exponential, randomized by
/// up to ±0.5 s. RFC 2131 starts at 4 s; a boot waits on this and the first packet is often
/// lost while the link settles, so we start at 1 s (as dhcpcd and systemd-networkd do) and
/// cap at 16 s.
pub fn backoff(attempt: u32, rng: &mut Rng) -> Duration {
    let base_ms = 1000u64.saturating_mul(1u64 << attempt.min(4));
    let jitter = (rng.next_u64() % 1001) as i64 - 500;
    Duration::from_millis((base_ms as i64 + jitter).max(500) as u64)
}

/// What one interface's client did, for the failure report.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// DISCOVERs sent.
    pub discovers: u32,
    /// REQUESTs sent.
    pub requests: u32,
    /// What came back: "OFFER 10.0.2.15/24 from 10.0.2.2 at 1.2 ms" (from the first send), …
    pub heard: Heard,
    /// When the first message went out; replies are timed from here.
    pub started: Option<Instant>,
}

/// What a DHCP client (v4 or v6) heard and could not send, for the error that ends a run
/// without an address.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    /// Replies taken, the last 16.
    pub received: Vec<String>,
    /// Datagrams ignored.
    pub ignored: u32,
    /// The reasons of the last few ignored datagrams.
    pub ignored_reasons: Vec<String>,
    /// Send errors, the first few.
    pub send_errors: Vec<String>,
}

impl Heard {
    /// Records a reply taken.
    pub fn take(&mut self, line: String) {
        if self.received.len() >= 16 {
            self.received.remove(0);
        }
        self.received.push(line);
    }

    /// Records an ignored datagram and why.
    pub fn ignore(&mut self, why: &dyn fmt::Display) {
        self.ignored += 1;
        if self.ignored_reasons.len() >= 4 {
            self.ignored_reasons.remove(0);
        }
        self.ignored_reasons.push(why.to_string());
    }

    /// Records a failed send.
    pub fn send_error(&mut self, e: &dyn fmt::Display) {
        if self.send_errors.len() < 4 {
            self.send_errors.push(e.to_string());
        }
    }
}

impl fmt::Display for Heard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.received.is_empty() {
            write!(f, "received nothing")?;
        } else {
            write!(f, "received {}", self.received.join(", "))?;
        }
        if self.ignored > 0 {
            write!(
                f,
                "; ignored {} datagram(s): {}",
                self.ignored,
                self.ignored_reasons.join(", ")
            )?;
        }
        if !self.send_errors.is_empty() {
            write!(f, "; send errors: {}", self.send_errors.join(", "))?;
        }
        Ok(())
    }
}

impl Transcript {
    fn receive(&mut self, r: &Reply) {
        let ms = self
            .started
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0);
        let line = match r.kind {
            ReplyKind::Nak => format!(
                "NAK from {}{}",
                r.offered.server_id,
                r.message
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "{} {}/{} from {}",
                r.kind, r.offered.address, r.offered.prefix, r.offered.server_id
            ),
        };
        self.heard.take(format!("{line} at {ms:.1} ms"));
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} DISCOVER, {} REQUEST; {}",
            self.discovers, self.requests, self.heard
        )
    }
}

/// How a DHCP run ended without a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpError {
    /// The deadline passed.
    TimedOut,
    /// Another interface won (or the phase was cancelled).
    Cancelled,
    /// The socket failed for good.
    Io(String),
}

impl fmt::Display for DhcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhcpError::TimedOut => write!(f, "no lease before the deadline"),
            DhcpError::Cancelled => write!(f, "cancelled"),
            DhcpError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// One client run's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Who we are.
    pub identity: Identity,
    /// An address to ask for first (INIT-REBOOT, RFC 2131 §3.2).
    pub requested: Option<Ipv4Addr>,
    /// The run ends here without a lease.
    pub deadline: Instant,
}

/// REQUESTs sent in REQUESTING or INIT-REBOOT before starting over with a DISCOVER.
const REQUEST_TRIES: u32 = 4;

/// Runs the client until it holds a lease (the ACK), the deadline passes or `stop` is set.
pub fn run(
    t: &mut dyn Transport,
    s: &Settings,
    stop: &AtomicBool,
    rng: &mut Rng,
    log: &mut Transcript,
) -> Result<Reply, DhcpError> {
    let start = Instant::now();
    let secs = || u16::try_from(start.elapsed().as_secs()).unwrap_or(u16::MAX);
    let mut init_reboot = s.requested;
    loop {
        let xid = rng.next_u64() as u32;
        // INIT-REBOOT: ask for the known address without a server id.
        if let Some(addr) = init_reboot.take() {
            match exchange(
                t,
                s,
                stop,
                rng,
                log,
                xid,
                &|| request(&s.identity, xid, secs(), addr, None),
                true,
                REQUEST_TRIES,
            )? {
                Some(r) if r.kind == ReplyKind::Ack => return Ok(r),
                // NAK or silence: start over (RFC 2131 §3.2 step 3).
                _ => continue,
            }
        }
        // INIT → SELECTING: the first OFFER is taken.
        let offer = match exchange(
            t,
            s,
            stop,
            rng,
            log,
            xid,
            &|| discover(&s.identity, xid, secs()),
            false,
            u32::MAX,
        )? {
            Some(r) if r.kind == ReplyKind::Offer => r,
            _ => continue,
        };
        // REQUESTING, with the same xid (RFC 2131 §4.4.1).
        let (addr, server) = (offer.offered.address, offer.offered.server_id);
        match exchange(
            t,
            s,
            stop,
            rng,
            log,
            xid,
            &|| request(&s.identity, xid, secs(), addr, Some(server)),
            true,
            REQUEST_TRIES,
        )? {
            Some(r) if r.kind == ReplyKind::Ack && r.offered.address == addr => return Ok(r),
            Some(_) => {
                // A NAK (or an ACK for another address): back to INIT after a short, random
                // pause so that a confused server is not hammered.
                let pause = Duration::from_millis(100 + rng.next_u64() % 400);
                sleep_until(Instant::now() + pause, s.deadline, stop)?;
            }
            None => {}
        }
    }
}

/// Sends what `make` builds and waits for an answer, retransmitting with backoff up to `tries`
/// times. In SELECTING (`requesting` false) OFFERs are awaited; otherwise ACK or NAK.
/// `Ok(None)` when the tries ran out.
#[allow(clippy::too_many_arguments)]
fn exchange(
    t: &mut dyn Transport,
    s: &Settings,
    stop: &AtomicBool,
    rng: &mut Rng,
    log: &mut Transcript,
    xid: u32,
    make: &dyn Fn() -> Vec<u8>,
    requesting: bool,
    tries: u32,
) -> Result<Option<Reply>, DhcpError> {
    let mut buf = vec![0u8; MAX_REPLY_LEN + 1];
    for attempt in 0..tries {
        if stop.load(Ordering::Relaxed) {
            return Err(DhcpError::Cancelled);
        }
        if Instant::now() >= s.deadline {
            return Err(DhcpError::TimedOut);
        }
        match t.send(&make()) {
            Ok(()) => {
                log.started.get_or_insert_with(Instant::now);
                if requesting {
                    log.requests += 1;
                } else {
                    log.discovers += 1;
                }
            }
            Err(e) => {
                // ENETDOWN and friends while a link settles: the next try may work.
                log.heard.send_error(&e);
            }
        }
        let until = (Instant::now() + backoff(attempt, rng)).min(s.deadline);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(DhcpError::Cancelled);
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            // Short slices so a stop is seen quickly.
            let slice = (until - now).min(Duration::from_millis(100));
            let n = match t.recv(&mut buf, slice) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DhcpError::Io(format!("receive: {e}"))),
            };
            let reply = match parse_reply(buf.get(..n).unwrap_or_default(), xid, &s.identity.mac) {
                Ok(r) => r,
                Err(why) => {
                    log.heard.ignore(&why);
                    continue;
                }
            };
            let wanted = if requesting {
                reply.kind != ReplyKind::Offer
            } else {
                reply.kind == ReplyKind::Offer
            };
            if !wanted {
                log.heard
                    .ignore(&Rejected::UnexpectedType(reply.kind.to_string()));
                continue;
            }
            log.receive(&reply);
            return Ok(Some(reply));
        }
    }
    Ok(None)
}

fn sleep_until(until: Instant, deadline: Instant, stop: &AtomicBool) -> Result<(), DhcpError> {
    let until = until.min(deadline);
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return Err(DhcpError::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn id() -> Identity {
        Identity {
            mac: MAC,
            hostname: Some("node1".into()),
        }
    }

    /// A server reply built with dhcproto, as a server would send it.
    fn reply(kind: MessageType, xid: u32, yiaddr: Ipv4Addr, extra: Vec<DhcpOption>) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = v4::Message::new_with_id(xid, z, yiaddr, z, z, &MAC);
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier([10, 0, 2, 2].into()));
        for o in extra {
            m.opts_mut().insert(o);
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    /// An OFFER shaped like QEMU user networking's (10.0.2.15/24, router 10.0.2.2, DNS
    /// 10.0.2.3, lease 86400 s).
    fn slirp_offer(xid: u32) -> Vec<u8> {
        reply(
            MessageType::Offer,
            xid,
            [10, 0, 2, 15].into(),
            vec![
                DhcpOption::SubnetMask([255, 255, 255, 0].into()),
                DhcpOption::Router(vec![[10, 0, 2, 2].into()]),
                DhcpOption::DomainNameServer(vec![[10, 0, 2, 3].into()]),
                DhcpOption::AddressLeaseTime(86400),
            ],
        )
    }

    #[test]
    fn requests_encode_as_if_built_with_new_with_id() {
        let i = id();
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = v4::Message::new_with_id(0x0bad_cafe, z, z, z, z, &i.mac);
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_secs(3)
            .set_flags(Flags::default().set_broadcast());
        *m.opts_mut() = base_message(&i, 0x0bad_cafe, 3, MessageType::Discover)
            .opts()
            .clone();
        assert_eq!(discover(&i, 0x0bad_cafe, 3), encode(&m));
    }

    #[test]
    fn discover_is_padded_broadcast_and_asks_for_the_options() {
        let d = discover(&id(), 0x1234_5678, 0);
        assert!(d.len() >= BOOTP_MIN_LEN);
        let m = v4::Message::decode(&mut Decoder::new(&d)).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert!(m.flags().broadcast());
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(m.chaddr(), &MAC);
        let o = m.opts();
        assert!(o.has_msg_type(MessageType::Discover));
        assert_eq!(
            o.get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
        assert_eq!(
            o.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("node1".into()))
        );
        let Some(DhcpOption::ParameterRequestList(prl)) = o.get(OptionCode::ParameterRequestList)
        else {
            panic!("no PRL")
        };
        let codes: Vec<u8> = prl.iter().map(|c| u8::from(*c)).collect();
        assert_eq!(codes, [1, 3, 6, 12, 15, 17, 26, 28, 42, 66, 67, 119, 121]);
    }

    #[test]
    fn request_carries_server_and_address() {
        let r = request(
            &id(),
            7,
            3,
            [10, 0, 2, 15].into(),
            Some([10, 0, 2, 2].into()),
        );
        let m = v4::Message::decode(&mut Decoder::new(&r)).unwrap();
        assert_eq!(m.secs(), 3);
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress([10, 0, 2, 15].into()))
        );
        assert!(m.opts().get(OptionCode::ServerIdentifier).is_some());
        let reboot = request(&id(), 7, 0, [10, 0, 2, 15].into(), None);
        let m = v4::Message::decode(&mut Decoder::new(&reboot)).unwrap();
        assert!(m.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn parses_an_offer_with_every_option() {
        let bytes = reply(
            MessageType::Offer,
            9,
            [192, 168, 7, 20].into(),
            vec![
                DhcpOption::SubnetMask([255, 255, 240, 0].into()),
                DhcpOption::Router(vec![[192, 168, 0, 1].into()]),
                DhcpOption::ClasslessStaticRoute(vec![
                    ("0.0.0.0/0".parse().unwrap(), [192, 168, 0, 254].into()),
                    ("10.9.0.0/16".parse().unwrap(), [192, 168, 0, 2].into()),
                ]),
                DhcpOption::DomainNameServer(vec![[1, 1, 1, 1].into(), [8, 8, 8, 8].into()]),
                DhcpOption::Hostname("n7".into()),
                DhcpOption::DomainName("example.net".into()),
                DhcpOption::RootPath("iscsi:192.168.0.5::3260:1:iqn.x".into()),
                DhcpOption::InterfaceMtu(9000),
                DhcpOption::BroadcastAddr([192, 168, 15, 255].into()),
                DhcpOption::NtpServers(vec![[192, 168, 0, 3].into()]),
                DhcpOption::TFTPServerName(b"tftp.example.net\0".to_vec()),
                DhcpOption::BootfileName(b"pxelinux.0".to_vec()),
                DhcpOption::DomainSearch(vec![
                    "a.example.net".parse().unwrap(),
                    "example.net".parse().unwrap(),
                ]),
                DhcpOption::AddressLeaseTime(600),
            ],
        );
        let r = parse_reply(&bytes, 9, &MAC).unwrap();
        assert_eq!(r.kind, ReplyKind::Offer);
        let o = r.offered;
        assert_eq!(o.address, Ipv4Addr::new(192, 168, 7, 20));
        assert_eq!(o.prefix, 20);
        assert_eq!(o.routers, vec![Ipv4Addr::new(192, 168, 0, 1)]);
        assert_eq!(
            o.classless_routes,
            vec![
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(192, 168, 0, 254)),
                (
                    Ipv4Addr::new(10, 9, 0, 0),
                    16,
                    Ipv4Addr::new(192, 168, 0, 2)
                ),
            ]
        );
        assert_eq!(o.dns.len(), 2);
        assert_eq!(o.hostname.as_deref(), Some("n7"));
        assert_eq!(o.domain.as_deref(), Some("example.net"));
        assert_eq!(o.mtu, Some(9000));
        assert_eq!(o.broadcast, Some(Ipv4Addr::new(192, 168, 15, 255)));
        assert_eq!(o.ntp, vec![Ipv4Addr::new(192, 168, 0, 3)]);
        assert_eq!(o.tftp_server.as_deref(), Some("tftp.example.net"));
        assert_eq!(o.bootfile.as_deref(), Some("pxelinux.0"));
        assert_eq!(o.search, vec!["a.example.net", "example.net"]);
        assert_eq!(o.lease_time, Some(600));
        assert_eq!(o.server_id, Ipv4Addr::new(10, 0, 2, 2));
        assert!(o.root_path.unwrap().starts_with("iscsi:"));
    }

    #[test]
    fn rejects_what_is_not_ours() {
        let ok = slirp_offer(5);
        assert!(parse_reply(&ok, 5, &MAC).is_ok());
        assert_eq!(parse_reply(&ok, 6, &MAC), Err(Rejected::WrongXid(5)));
        assert_eq!(
            parse_reply(&ok, 5, &[0, 1, 2, 3, 4, 5]),
            Err(Rejected::WrongHardware)
        );
        assert!(matches!(
            parse_reply(&ok[..200], 5, &MAC),
            Err(Rejected::Truncated(200))
        ));
        let mut req = ok.clone();
        req[0] = 1;
        assert_eq!(parse_reply(&req, 5, &MAC), Err(Rejected::NotAReply));
        let mut magic = ok.clone();
        magic[236] = 0;
        assert_eq!(parse_reply(&magic, 5, &MAC), Err(Rejected::BadMagic));
        let mut big = ok.clone();
        big.resize(MAX_REPLY_LEN + 1, 0);
        assert!(matches!(
            parse_reply(&big, 5, &MAC),
            Err(Rejected::Oversized(_))
        ));
        let zero = reply(MessageType::Offer, 5, Ipv4Addr::UNSPECIFIED, vec![]);
        assert!(matches!(
            parse_reply(&zero, 5, &MAC),
            Err(Rejected::BadAddress(_))
        ));
        let bad_mask = reply(
            MessageType::Offer,
            5,
            [10, 0, 0, 2].into(),
            vec![DhcpOption::SubnetMask([255, 0, 255, 0].into())],
        );
        assert!(matches!(
            parse_reply(&bad_mask, 5, &MAC),
            Err(Rejected::BadNetmask(_))
        ));
        let discover_echo = discover(&id(), 5, 0);
        assert!(parse_reply(&discover_echo, 5, &MAC).is_err());
    }

    #[test]
    fn option_bombs_are_rejected() {
        let mut b = slirp_offer(5);
        let end = b.iter().rposition(|&x| x == 255).unwrap();
        b.truncate(end);
        for _ in 0..200 {
            b.extend_from_slice(&[224, 1, 0]);
        }
        b.push(255);
        assert_eq!(
            parse_reply(&b, 5, &MAC),
            Err(Rejected::BadOptions("too many options"))
        );
        let mut past = slirp_offer(5);
        past.truncate(HEADER_LEN);
        past.extend_from_slice(&[53, 1, 2, 54, 200, 1]);
        assert_eq!(
            parse_reply(&past, 5, &MAC),
            Err(Rejected::BadOptions("option runs past the end"))
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask_to_prefix([255, 255, 255, 0].into()), Some(24));
        assert_eq!(mask_to_prefix([0, 0, 0, 0].into()), Some(0));
        assert_eq!(mask_to_prefix([255, 255, 255, 255].into()), Some(32));
        assert_eq!(mask_to_prefix([255, 0, 255, 0].into()), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut rng = Rng::new(1);
        for attempt in 0..10 {
            let d = backoff(attempt, &mut rng).as_millis() as i64;
            let base = 1000i64 << attempt.min(4);
            assert!((d - base).abs() <= 500, "{attempt}: {d}");
        }
    }

    type Script = Box<dyn FnMut(&v4::Message, usize) -> Vec<Vec<u8>>>;

    /// A server in memory: answers by script, records what the client sent.
    struct Scripted {
        sent: Vec<v4::Message>,
        queue: VecDeque<Vec<u8>>,
        on_send: Script,
    }

    impl Transport for Scripted {
        fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
            assert!(packet.len() >= BOOTP_MIN_LEN);
            let m = v4::Message::decode(&mut Decoder::new(packet)).unwrap();
            let n = self.sent.len();
            let answers = (self.on_send)(&m, n);
            self.queue.extend(answers);
            self.sent.push(m);
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
            match self.queue.pop_front() {
                Some(p) => {
                    buf[..p.len()].copy_from_slice(&p);
                    Ok(Some(p.len()))
                }
                None => {
                    std::thread::sleep(timeout.min(Duration::from_millis(5)));
                    Ok(None)
                }
            }
        }
    }

    fn kind(m: &v4::Message) -> MessageType {
        match m.opts().get(OptionCode::MessageType) {
            Some(DhcpOption::MessageType(t)) => *t,
            _ => panic!("no type"),
        }
    }

    fn settings(secs: u64) -> Settings {
        Settings {
            identity: id(),
            requested: None,
            deadline: Instant::now() + Duration::from_secs(secs),
        }
    }

    #[test]
    fn nak_restarts_with_a_new_xid() {
        let mut naks = 1;
        let mut t = Scripted {
            sent: vec![],
            queue: VecDeque::new(),
            on_send: Box::new(move |m, _| match kind(m) {
                MessageType::Discover => vec![
                    // Noise first: another client's offer, then ours.
                    slirp_offer(m.xid().wrapping_add(1)),
                    slirp_offer(m.xid()),
                ],
                MessageType::Request if naks > 0 => {
                    naks -= 1;
                    vec![reply(
                        MessageType::Nak,
                        m.xid(),
                        Ipv4Addr::UNSPECIFIED,
                        vec![],
                    )]
                }
                MessageType::Request => vec![reply(
                    MessageType::Ack,
                    m.xid(),
                    [10, 0, 2, 15].into(),
                    vec![DhcpOption::SubnetMask([255, 255, 255, 0].into())],
                )],
                _ => vec![],
            }),
        };
        let mut log = Transcript::default();
        let r = run(
            &mut t,
            &settings(10),
            &AtomicBool::new(false),
            &mut Rng::new(7),
            &mut log,
        )
        .unwrap();
        assert_eq!(r.kind, ReplyKind::Ack);
        assert_eq!(r.offered.address, Ipv4Addr::new(10, 0, 2, 15));
        let kinds: Vec<MessageType> = t.sent.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                MessageType::Discover,
                MessageType::Request,
                MessageType::Discover,
                MessageType::Request
            ]
        );
        assert_eq!(t.sent[0].xid(), t.sent[1].xid());
        assert_ne!(t.sent[1].xid(), t.sent[2].xid());
        assert_eq!(log.heard.ignored, 2, "{log}");
        assert!(log.to_string().contains("NAK from 10.0.2.2"), "{log}");
    }

    #[test]
    fn silence_retransmits_then_times_out() {
        let mut t = Scripted {
            sent: vec![],
            queue: VecDeque::new(),
            on_send: Box::new(|_, _| vec![]),
        };
        let mut log = Transcript::default();
        let start = Instant::now();
        let err = run(
            &mut t,
            &settings(3),
            &AtomicBool::new(false),
            &mut Rng::new(3),
            &mut log,
        )
        .unwrap_err();
        assert_eq!(err, DhcpError::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(4));
        assert!(log.discovers >= 2, "{log}");
        assert!(log.to_string().contains("received nothing"), "{log}");
    }

    #[test]
    fn init_reboot_asks_for_the_known_address_first() {
        let mut t = Scripted {
            sent: vec![],
            queue: VecDeque::new(),
            on_send: Box::new(|m, _| {
                vec![reply(
                    MessageType::Ack,
                    m.xid(),
                    [10, 0, 2, 99].into(),
                    vec![],
                )]
            }),
        };
        let mut s = settings(5);
        s.requested = Some([10, 0, 2, 99].into());
        let r = run(
            &mut t,
            &s,
            &AtomicBool::new(false),
            &mut Rng::new(1),
            &mut Transcript::default(),
        )
        .unwrap();
        assert_eq!(r.offered.address, Ipv4Addr::new(10, 0, 2, 99));
        assert_eq!(kind(&t.sent[0]), MessageType::Request);
        assert!(t.sent[0].opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn a_stop_cancels() {
        let mut t = Scripted {
            sent: vec![],
            queue: VecDeque::new(),
            on_send: Box::new(|_, _| vec![]),
        };
        let stop = AtomicBool::new(true);
        assert_eq!(
            run(
                &mut t,
                &settings(5),
                &stop,
                &mut Rng::new(1),
                &mut Transcript::default()
            )
            .unwrap_err(),
            DhcpError::Cancelled
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = parse_reply(&bytes, 5, &MAC);
        }

        #[test]
        fn mutated_offers_never_panic(pos in 0usize..400, val in any::<u8>(), cut in 0usize..400) {
            let mut b = slirp_offer(5);
            if pos < b.len() { b[pos] = val; }
            b.truncate(cut.max(1));
            let _ = parse_reply(&b, 5, &MAC);
        }

        #[test]
        fn fixed_length_options_with_other_lengths_are_refused(
            code in proptest::sample::select(vec![80u8, 81, 94, 152, 153, 154, 155]),
            len in 0u8..8,
        ) {
            let mut b = slirp_offer(5);
            b.truncate(HEADER_LEN);
            b.extend_from_slice(&[53, 1, 2, 54, 4, 10, 0, 2, 2, code, len]);
            b.extend(std::iter::repeat_n(0u8, usize::from(len)));
            b.push(255);
            let ok_len = match code { 80 => len == 0, 81 => len >= 3, 94 => len == 3, _ => len == 4 };
            if !ok_len {
                prop_assert!(parse_reply(&b, 5, &MAC).is_err());
            }
        }

        #[test]
        fn arbitrary_options_after_a_valid_header(
            opts in proptest::collection::vec(any::<u8>(), 0..1200),
            valid_type in any::<bool>(),
        ) {
            let mut b = slirp_offer(5);
            b.truncate(HEADER_LEN);
            if valid_type {
                b.extend_from_slice(&[53, 1, 2, 54, 4, 10, 0, 2, 2]);
            }
            b.extend_from_slice(&opts);
            if let Ok(r) = parse_reply(&b, 5, &MAC) {
                // Accepted only with a message type and a usable address.
                prop_assert!(r.kind == ReplyKind::Nak || r.offered.address == Ipv4Addr::new(10, 0, 2, 15));
            }
        }

        #[test]
        fn wrong_op_or_xid_is_never_accepted(op in any::<u8>(), xid in any::<u32>()) {
            let mut b = slirp_offer(xid);
            b[0] = op;
            let r = parse_reply(&b, 5, &MAC);
            if op != 2 || xid != 5 {
                prop_assert!(r.is_err());
            } else {
                prop_assert!(r.is_ok());
            }
        }

        #[test]
        fn oversized_is_never_accepted(extra in (MAX_REPLY_LEN + 1)..(MAX_REPLY_LEN * 3)) {
            let mut b = slirp_offer(5);
            b.resize(extra, 0);
            prop_assert!(matches!(parse_reply(&b, 5, &MAC), Err(Rejected::Oversized(_))));
        }
    }
}
