//! DHCPv6 (RFC 8415): the wire format of the few messages and options a boot needs, without
//! I/O, and the client's Solicit → Advertise → Request → Reply exchange for one address
//! (IA_NA) over any [`Transport6`].
//!
//! Why by hand and not `dhcproto::v6`: stage0 has ~60 KB left under its size limit, and a
//! client needs nine option codes; the crate's v6 module decodes every option it knows (and
//! its domain names through a DNS library) into one large enum. The format is simple — a
//! type, a 24-bit transaction id, then (code, length, value) options, some of which nest — so
//! a checked view of it costs little and keeps unknown options as [`Opt::Other`].

use std::fmt;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::dhcp::{Heard, Rng};

/// UDP port clients listen on (RFC 8415 §7.2).
pub const CLIENT_PORT: u16 = 546;
/// UDP port servers and relays listen on.
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1), link scope.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Message types (RFC 8415 §7.3).
pub mod kind {
    /// Client looks for servers.
    pub const SOLICIT: u8 = 1;
    /// Server offers.
    pub const ADVERTISE: u8 = 2;
    /// Client asks the chosen server.
    pub const REQUEST: u8 = 3;
    /// Server answers.
    pub const REPLY: u8 = 7;
}

/// Option codes (RFC 8415 §21, RFC 3646 for 23 and 24).
pub mod code {
    /// OPTION_CLIENTID (§21.2).
    pub const CLIENT_ID: u16 = 1;
    /// OPTION_SERVERID (§21.3).
    pub const SERVER_ID: u16 = 2;
    /// OPTION_IA_NA (§21.4).
    pub const IA_NA: u16 = 3;
    /// OPTION_IAADDR (§21.6).
    pub const IA_ADDR: u16 = 5;
    /// OPTION_ORO (§21.7).
    pub const ORO: u16 = 6;
    /// OPTION_PREFERENCE (§21.8).
    pub const PREFERENCE: u16 = 7;
    /// OPTION_ELAPSED_TIME (§21.9).
    pub const ELAPSED_TIME: u16 = 8;
    /// OPTION_STATUS_CODE (§21.13).
    pub const STATUS_CODE: u16 = 13;
    /// OPTION_DNS_SERVERS (RFC 3646 §3).
    pub const DNS_SERVERS: u16 = 23;
    /// OPTION_DOMAIN_LIST (RFC 3646 §4).
    pub const DOMAIN_LIST: u16 = 24;
}

/// Status codes a client acts on (RFC 8415 §21.13).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0;
    /// The server has no addresses for the IA.
    pub const NO_ADDRS_AVAIL: u16 = 2;
    /// The address is not on this link.
    pub const NOT_ON_LINK: u16 = 4;
}

/// One option, typed where the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    /// A DUID naming the client.
    ClientId(Vec<u8>),
    /// A DUID naming the server.
    ServerId(Vec<u8>),
    /// An identity association for non-temporary addresses.
    IaNa(IaNa),
    /// An address inside an IA_NA.
    IaAddr(IaAddr),
    /// Options the client asks for.
    Oro(Vec<u16>),
    /// The server's preference, 0–255.
    Preference(u8),
    /// Hundredths of a second since the client's first message of the exchange.
    ElapsedTime(u16),
    /// A status code and its message.
    Status(u16, String),
    /// Recursive DNS servers.
    DnsServers(Vec<Ipv6Addr>),
    /// Domain search list.
    DomainList(Vec<String>),
    /// Anything else, kept as it came.
    Other(u16, Vec<u8>),
}

/// OPTION_IA_NA's value (RFC 8415 §21.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    /// The client's identifier for the IA.
    pub iaid: u32,
    /// Seconds until the client renews with its server.
    pub t1: u32,
    /// Seconds until it asks any server.
    pub t2: u32,
    /// Addresses and status.
    pub options: Vec<Opt>,
}

/// OPTION_IAADDR's value (RFC 8415 §21.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    /// The address.
    pub address: Ipv6Addr,
    /// Preferred lifetime, seconds.
    pub preferred: u32,
    /// Valid lifetime, seconds.
    pub valid: u32,
    /// A status, if any.
    pub options: Vec<Opt>,
}

/// A client/server message (RFC 8415 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub kind: u8,
    /// Transaction id, 24 bits.
    pub xid: u32,
    /// Options.
    pub options: Vec<Opt>,
}

/// Why bytes are not a message the client can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the 4-byte header.
    Short,
    /// An option runs past its container.
    Truncated {
        /// The option's code.
        code: u16,
    },
    /// A known option's value has the wrong size or content.
    Malformed {
        /// The option's code.
        code: u16,
    },
    /// Options nested deeper than any this client reads.
    TooDeep,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Short => write!(f, "shorter than a DHCPv6 header"),
            ParseError::Truncated { code } => write!(f, "option {code} runs past its end"),
            ParseError::Malformed { code } => write!(f, "option {code} is malformed"),
            ParseError::TooDeep => write!(f, "options nested too deep"),
        }
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Uncompressed DNS names, one after the other (RFC 1035 §3.1, as RFC 3646 §4 uses them).
fn parse_names(mut b: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    while !b.is_empty() {
        let mut labels: Vec<String> = Vec::new();
        loop {
            let (&len, rest) = b.split_first()?;
            b = rest;
            if len == 0 {
                break;
            }
            // 0xC0 would be a compression pointer: not allowed here.
            if len > 63 || usize::from(len) > b.len() {
                return None;
            }
            let (label, rest) = b.split_at(usize::from(len));
            b = rest;
            if !label
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
            {
                return None;
            }
            labels.push(String::from_utf8_lossy(label).into_owned());
        }
        if !labels.is_empty() {
            names.push(labels.join("."));
        }
    }
    Some(names)
}

fn emit_names(names: &[String], out: &mut Vec<u8>) {
    for n in names {
        for l in n.split('.').filter(|l| !l.is_empty()) {
            let l = &l.as_bytes()[..l.len().min(63)];
            out.push(l.len() as u8);
            out.extend_from_slice(l);
        }
        out.push(0);
    }
}

/// Options, `depth` levels down (IA_NA → IAADDR → status is the deepest a client reads).
fn parse_options(mut b: &[u8], depth: u8) -> Result<Vec<Opt>, ParseError> {
    if depth > 3 {
        return Err(ParseError::TooDeep);
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(ParseError::Truncated { code: 0 });
        }
        let code = be16(b);
        let len = usize::from(be16(&b[2..]));
        let v = b.get(4..4 + len).ok_or(ParseError::Truncated { code })?;
        b = &b[4 + len..];
        let bad = ParseError::Malformed { code };
        let opt = match code {
            code::CLIENT_ID => Opt::ClientId(v.to_vec()),
            code::SERVER_ID => Opt::ServerId(v.to_vec()),
            code::IA_NA => {
                if v.len() < 12 {
                    return Err(bad);
                }
                Opt::IaNa(IaNa {
                    iaid: be32(v),
                    t1: be32(&v[4..]),
                    t2: be32(&v[8..]),
                    options: parse_options(&v[12..], depth + 1)?,
                })
            }
            code::IA_ADDR => {
                if v.len() < 24 {
                    return Err(bad);
                }
                Opt::IaAddr(IaAddr {
                    address: v6(v),
                    preferred: be32(&v[16..]),
                    valid: be32(&v[20..]),
                    options: parse_options(&v[24..], depth + 1)?,
                })
            }
            code::ORO if v.len() % 2 == 0 => Opt::Oro(v.chunks(2).map(be16).collect()),
            code::PREFERENCE if v.len() == 1 => Opt::Preference(v[0]),
            code::ELAPSED_TIME if v.len() == 2 => Opt::ElapsedTime(be16(v)),
            code::STATUS_CODE if v.len() >= 2 => {
                Opt::Status(be16(v), String::from_utf8_lossy(&v[2..]).into_owned())
            }
            code::DNS_SERVERS if v.len() % 16 == 0 => {
                Opt::DnsServers(v.chunks(16).map(v6).collect())
            }
            code::DOMAIN_LIST => Opt::DomainList(parse_names(v).ok_or(bad)?),
            code::ORO
            | code::PREFERENCE
            | code::ELAPSED_TIME
            | code::STATUS_CODE
            | code::DNS_SERVERS => return Err(bad),
            _ => Opt::Other(code, v.to_vec()),
        };
        out.push(opt);
    }
    Ok(out)
}

fn emit_options(opts: &[Opt], out: &mut Vec<u8>) {
    for o in opts {
        let mut v = Vec::new();
        let code = match o {
            Opt::ClientId(d) => {
                v.extend_from_slice(d);
                code::CLIENT_ID
            }
            Opt::ServerId(d) => {
                v.extend_from_slice(d);
                code::SERVER_ID
            }
            Opt::IaNa(ia) => {
                v.extend_from_slice(&ia.iaid.to_be_bytes());
                v.extend_from_slice(&ia.t1.to_be_bytes());
                v.extend_from_slice(&ia.t2.to_be_bytes());
                emit_options(&ia.options, &mut v);
                code::IA_NA
            }
            Opt::IaAddr(a) => {
                v.extend_from_slice(&a.address.octets());
                v.extend_from_slice(&a.preferred.to_be_bytes());
                v.extend_from_slice(&a.valid.to_be_bytes());
                emit_options(&a.options, &mut v);
                code::IA_ADDR
            }
            Opt::Oro(codes) => {
                codes
                    .iter()
                    .for_each(|c| v.extend_from_slice(&c.to_be_bytes()));
                code::ORO
            }
            Opt::Preference(p) => {
                v.push(*p);
                code::PREFERENCE
            }
            Opt::ElapsedTime(t) => {
                v.extend_from_slice(&t.to_be_bytes());
                code::ELAPSED_TIME
            }
            Opt::Status(s, m) => {
                v.extend_from_slice(&s.to_be_bytes());
                v.extend_from_slice(m.as_bytes());
                code::STATUS_CODE
            }
            Opt::DnsServers(a) => {
                a.iter().for_each(|a| v.extend_from_slice(&a.octets()));
                code::DNS_SERVERS
            }
            Opt::DomainList(n) => {
                emit_names(n, &mut v);
                code::DOMAIN_LIST
            }
            Opt::Other(c, d) => {
                v.extend_from_slice(d);
                *c
            }
        };
        // Lengths are 16 bits: nothing this client builds comes near; a longer value is cut.
        v.truncate(usize::from(u16::MAX));
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(&v);
    }
}

impl Message {
    /// Parses a client/server message (relay messages are not for clients: their options
    /// parse as [`Opt::Other`]).
    pub fn parse(b: &[u8]) -> Result<Message, ParseError> {
        if b.len() < 4 {
            return Err(ParseError::Short);
        }
        Ok(Message {
            kind: b[0],
            xid: u32::from_be_bytes([0, b[1], b[2], b[3]]),
            options: parse_options(&b[4..], 0)?,
        })
    }

    /// The message's bytes.
    pub fn emit(&self) -> Vec<u8> {
        let x = self.xid.to_be_bytes();
        let mut out = vec![self.kind, x[1], x[2], x[3]];
        emit_options(&self.options, &mut out);
        out
    }

    fn server_id(&self) -> Option<&[u8]> {
        self.options.iter().find_map(|o| match o {
            Opt::ServerId(d) => Some(&d[..]),
            _ => None,
        })
    }

    fn client_id(&self) -> Option<&[u8]> {
        self.options.iter().find_map(|o| match o {
            Opt::ClientId(d) => Some(&d[..]),
            _ => None,
        })
    }

    fn status(&self) -> Option<(u16, &str)> {
        status_of(&self.options)
    }

    fn ia_na(&self, iaid: u32) -> Option<&IaNa> {
        self.options.iter().find_map(|o| match o {
            Opt::IaNa(ia) if ia.iaid == iaid => Some(ia),
            _ => None,
        })
    }
}

fn status_of(opts: &[Opt]) -> Option<(u16, &str)> {
    opts.iter().find_map(|o| match o {
        Opt::Status(c, m) => Some((*c, m.as_str())),
        _ => None,
    })
}

/// DUID-LL (RFC 8415 §11.4): type 3, hardware type 1 (Ethernet), the MAC. Stable across
/// boots without storage, which a diskless node has none of before its root.
pub fn duid_ll(mac: &[u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(mac);
    d
}

/// What a server assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The address (applied as /128: DHCPv6 gives no prefix, RFC 8415 §21.6).
    pub address: Ipv6Addr,
    /// Preferred lifetime, seconds.
    pub preferred: u32,
    /// Valid lifetime, seconds.
    pub valid: u32,
    /// T1 and T2 of the IA, seconds.
    pub t1: u32,
    /// T2, seconds.
    pub t2: u32,
    /// The server's DUID.
    pub server_id: Vec<u8>,
    /// Its preference (Advertise), 0 when absent.
    pub preference: u8,
    /// DNS servers (option 23).
    pub dns: Vec<Ipv6Addr>,
    /// Domain search list (option 24).
    pub search: Vec<String>,
}

/// Why a datagram was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not a DHCPv6 message.
    Parse(ParseError),
    /// Not the answer expected now.
    Kind(u8),
    /// Another transaction's.
    Xid,
    /// Names another client, or none.
    ClientId,
    /// No server id, or (a Reply) not the server asked.
    ServerId,
    /// A status other than success, at the top or in the IA.
    Status(u16, String),
    /// No address for our IA.
    NoAddress,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Parse(e) => write!(f, "unreadable: {e}"),
            Rejected::Kind(k) => write!(f, "message type {k} not expected"),
            Rejected::Xid => write!(f, "another transaction"),
            Rejected::ClientId => write!(f, "for another client"),
            Rejected::ServerId => write!(f, "missing or other server id"),
            Rejected::Status(c, m) => write!(f, "status {c} ({m})"),
            Rejected::NoAddress => write!(f, "no address in the IA_NA"),
        }
    }
}

/// Checks an Advertise or Reply against what we sent and takes the address out of it
/// (RFC 8415 §16.3, §16.10, §18.2.10).
pub fn read_answer(
    bytes: &[u8],
    expect: u8,
    xid: u32,
    client_id: &[u8],
    server_id: Option<&[u8]>,
    iaid: u32,
) -> Result<Assigned, Rejected> {
    let m = Message::parse(bytes).map_err(Rejected::Parse)?;
    if m.kind != expect {
        return Err(Rejected::Kind(m.kind));
    }
    if m.xid != xid {
        return Err(Rejected::Xid);
    }
    if m.client_id() != Some(client_id) {
        return Err(Rejected::ClientId);
    }
    let sid = m.server_id().ok_or(Rejected::ServerId)?;
    if server_id.is_some_and(|s| s != sid) {
        return Err(Rejected::ServerId);
    }
    if let Some((c, msg)) = m.status().filter(|(c, _)| *c != status::SUCCESS) {
        return Err(Rejected::Status(c, msg.to_string()));
    }
    let ia = m.ia_na(iaid).ok_or(Rejected::NoAddress)?;
    if let Some((c, msg)) = status_of(&ia.options).filter(|(c, _)| *c != status::SUCCESS) {
        return Err(Rejected::Status(c, msg.to_string()));
    }
    // The first usable address: valid lifetime not zero, preferred ≤ valid (§21.6), and
    // no error status of its own.
    let addr = ia
        .options
        .iter()
        .find_map(|o| match o {
            Opt::IaAddr(a)
                if a.valid > 0
                    && a.preferred <= a.valid
                    && !a.address.is_unspecified()
                    && !a.address.is_multicast()
                    && status_of(&a.options).is_none_or(|(c, _)| c == status::SUCCESS) =>
            {
                Some(a)
            }
            _ => None,
        })
        .ok_or(Rejected::NoAddress)?;
    let mut out = Assigned {
        address: addr.address,
        preferred: addr.preferred,
        valid: addr.valid,
        t1: ia.t1,
        t2: ia.t2,
        server_id: sid.to_vec(),
        preference: 0,
        dns: Vec::new(),
        search: Vec::new(),
    };
    for o in &m.options {
        match o {
            Opt::Preference(p) => out.preference = *p,
            Opt::DnsServers(d) => out.dns.extend(d),
            Opt::DomainList(n) => out.search.extend(n.iter().cloned()),
            _ => {}
        }
    }
    Ok(out)
}

/// How DHCPv6 messages reach the servers: UDP from the link-local address, port 546, to
/// ff02::1:2 port 547 ([`super::socket::UdpTransport6`]) or a test's fake.
pub trait Transport6 {
    /// Sends one message to All_DHCP_Relay_Agents_and_Servers.
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()>;
    /// Waits up to `timeout` for one datagram from a server port; `Ok(None)` when none came.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>>;
}

/// Retransmission parameters (RFC 8415 §7.6): initial and maximum timeout, maximum count
/// (0: none).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    irt: Duration,
    mrt: Duration,
    mrc: u32,
}

/// SOL_TIMEOUT, SOL_MAX_RT.
const SOLICIT: Backoff = Backoff {
    irt: Duration::from_secs(1),
    mrt: Duration::from_secs(3600),
    mrc: 0,
};
/// REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC.
const REQUEST: Backoff = Backoff {
    irt: Duration::from_secs(1),
    mrt: Duration::from_secs(30),
    mrc: 10,
};

/// RT·(1 + RAND) with RAND in −0.1..0.1 (RFC 8415 §15), or 0..0.1 when `positive` (the
/// first Solicit's, so the first Advertises are waited for a full IRT); in whole
/// milliseconds, without floating point.
fn jitter(rt: Duration, rng: &mut Rng, positive: bool) -> Duration {
    let ms = u64::try_from(rt.as_millis()).unwrap_or(u64::MAX / 2);
    let tenth = ms / 10;
    let r = rng.next_u64();
    let spread = if positive {
        r % (tenth + 1)
    } else {
        (r % (2 * tenth + 1)).wrapping_sub(tenth)
    };
    Duration::from_millis(ms.wrapping_add(spread))
}

/// The next retransmission timeout after `prev` (RFC 8415 §15): IRT + RAND·IRT first, then
/// 2·RTprev + RAND·RTprev, held at MRT + RAND·MRT.
fn next_rt(prev: Option<Duration>, b: Backoff, rng: &mut Rng, solicit: bool) -> Duration {
    let rt = match prev {
        None => jitter(b.irt, rng, solicit),
        // 2·RTprev + RAND·RTprev = RTprev + RTprev·(1 + RAND).
        Some(p) => p + jitter(p, rng, false),
    };
    if rt > b.mrt {
        jitter(b.mrt, rng, false)
    } else {
        rt
    }
}

/// What one run sent and heard, for the log and the failure report.
#[derive(Debug, Clone, Default)]
pub struct Transcript6 {
    /// Solicits sent.
    pub solicits: u32,
    /// Requests sent.
    pub requests: u32,
    /// What came back.
    pub heard: Heard,
}

impl fmt::Display for Transcript6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} SOLICIT, {} REQUEST; {}",
            self.solicits, self.requests, self.heard
        )
    }
}

/// How a run ended without an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dhcp6Error {
    /// The deadline passed.
    TimedOut,
    /// Another interface won.
    Cancelled,
    /// The socket failed for good.
    Io(String),
}

impl fmt::Display for Dhcp6Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dhcp6Error::TimedOut => write!(f, "no address before the deadline"),
            Dhcp6Error::Cancelled => write!(f, "cancelled"),
            Dhcp6Error::Io(e) => write!(f, "{e}"),
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Settings6 {
    /// The link's MAC (DUID-LL and IAID come from it).
    pub mac: [u8; 6],
    /// The run ends here without an address.
    pub deadline: Instant,
}

impl Settings6 {
    /// IAID: the MAC's last four bytes, stable across boots (RFC 8415 §12).
    pub fn iaid(&self) -> u32 {
        u32::from_be_bytes([self.mac[2], self.mac[3], self.mac[4], self.mac[5]])
    }
}

fn client_message(
    kind: u8,
    xid: u32,
    s: &Settings6,
    server: Option<(&[u8], Ipv6Addr)>,
    started: Instant,
) -> Vec<u8> {
    // Elapsed time in hundredths of a second, 0xffff when longer (§21.9).
    let elapsed = u16::try_from(started.elapsed().as_millis() / 10).unwrap_or(u16::MAX);
    let mut ia = IaNa {
        iaid: s.iaid(),
        t1: 0,
        t2: 0,
        options: Vec::new(),
    };
    let mut options = vec![Opt::ClientId(duid_ll(&s.mac))];
    if let Some((sid, addr)) = server {
        options.push(Opt::ServerId(sid.to_vec()));
        ia.options.push(Opt::IaAddr(IaAddr {
            address: addr,
            preferred: 0,
            valid: 0,
            options: Vec::new(),
        }));
    }
    options.push(Opt::IaNa(ia));
    options.push(Opt::ElapsedTime(elapsed));
    options.push(Opt::Oro(vec![code::DNS_SERVERS, code::DOMAIN_LIST]));
    Message { kind, xid, options }.emit()
}

/// Sends `msg` and hands each datagram that comes before `until` to `take`, until it says
/// it has what it waited for (true). One function (through `dyn`) for both exchanges.
fn exchange(
    t: &mut dyn Transport6,
    msg: &[u8],
    until: Instant,
    stop: &AtomicBool,
    log: &mut Transcript6,
    take: &mut dyn FnMut(&[u8], &mut Transcript6) -> bool,
) -> Result<(), Dhcp6Error> {
    if let Err(e) = t.send(msg) {
        log.heard.send_error(&e);
    }
    let mut buf = [0u8; 1500];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Dhcp6Error::Cancelled);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        match t.recv(&mut buf, left.min(Duration::from_millis(200))) {
            Ok(Some(n)) => {
                if take(&buf[..n.min(buf.len())], log) {
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(e) => return Err(Dhcp6Error::Io(e.to_string())),
        }
    }
}

/// Runs Solicit → Advertise → Request → Reply until an address is assigned, the deadline
/// passes or `stop` is set. Advertises are gathered for the first retransmission timeout
/// and the most preferred taken (one of preference 255 at once, §18.2.1); after that the
/// first one. A Request that is not answered after REQ_MAX_RC tries, or is answered with
/// NoAddrsAvail or NotOnLink, starts over with a Solicit (§18.2.10.1).
pub fn run(
    t: &mut dyn Transport6,
    s: &Settings6,
    stop: &AtomicBool,
    rng: &mut Rng,
    log: &mut Transcript6,
) -> Result<Assigned, Dhcp6Error> {
    let cid = duid_ll(&s.mac);
    let iaid = s.iaid();
    let started = Instant::now();
    let ms = move || started.elapsed().as_secs_f64() * 1000.0;
    loop {
        // Solicit, until an Advertise is chosen.
        let xid = (rng.next_u64() & 0xff_ffff) as u32;
        let mut rt = None;
        let mut best: Option<Assigned> = None;
        let mut first_round = true;
        let offer = loop {
            if Instant::now() >= s.deadline {
                return Err(Dhcp6Error::TimedOut);
            }
            let timeout = next_rt(rt, SOLICIT, rng, rt.is_none());
            rt = Some(timeout);
            let msg = client_message(kind::SOLICIT, xid, s, None, started);
            log.solicits += 1;
            let until = (Instant::now() + timeout).min(s.deadline);
            exchange(t, &msg, until, stop, log, &mut |b, log| match read_answer(
                b,
                kind::ADVERTISE,
                xid,
                &cid,
                None,
                iaid,
            ) {
                Ok(a) => {
                    log.heard.take(format!(
                        "ADVERTISE {} (preference {}) at {:.1} ms",
                        a.address,
                        a.preference,
                        ms()
                    ));
                    let pref = a.preference;
                    if best.as_ref().is_none_or(|b| pref > b.preference) {
                        best = Some(a);
                    }
                    pref == 255 || !first_round
                }
                Err(why) => {
                    log.heard.ignore(&why);
                    false
                }
            })?;
            first_round = false;
            if let Some(b) = best.take() {
                break b;
            }
        };
        // Request the advertised address from that server.
        let xid = (rng.next_u64() & 0xff_ffff) as u32;
        let req_started = Instant::now();
        let mut rt = None;
        for _ in 0..REQUEST.mrc {
            if Instant::now() >= s.deadline {
                return Err(Dhcp6Error::TimedOut);
            }
            let timeout = next_rt(rt, REQUEST, rng, false);
            rt = Some(timeout);
            let msg = client_message(
                kind::REQUEST,
                xid,
                s,
                Some((&offer.server_id, offer.address)),
                req_started,
            );
            log.requests += 1;
            let until = (Instant::now() + timeout).min(s.deadline);
            let mut outcome: Option<Result<Assigned, Rejected>> = None;
            exchange(t, &msg, until, stop, log, &mut |b, log| match read_answer(
                b,
                kind::REPLY,
                xid,
                &cid,
                Some(&offer.server_id),
                iaid,
            ) {
                Ok(a) => {
                    log.heard
                        .take(format!("REPLY {} at {:.1} ms", a.address, ms()));
                    outcome = Some(Ok(a));
                    true
                }
                Err(why @ Rejected::Status(status::NO_ADDRS_AVAIL | status::NOT_ON_LINK, _)) => {
                    log.heard.take(format!("REPLY {why}"));
                    outcome = Some(Err(why));
                    true
                }
                Err(why) => {
                    log.heard.ignore(&why);
                    false
                }
            })?;
            match outcome {
                Some(Ok(mut a)) => {
                    a.preference = offer.preference;
                    return Ok(a);
                }
                // The server has nothing for us: look for servers again.
                Some(Err(_)) => break,
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    // Not proptest's trait of the same name.
    use super::Rng;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    fn server_msg(kind: u8, xid: u32, addr: &str, extra: Vec<Opt>) -> Vec<u8> {
        let mut options = vec![
            Opt::ServerId(vec![0, 1, 0, 1, 9, 9, 9, 9]),
            Opt::ClientId(duid_ll(&MAC)),
            Opt::IaNa(IaNa {
                iaid: u32::from_be_bytes([0, 0, 0, 1]),
                t1: 1800,
                t2: 2880,
                options: vec![Opt::IaAddr(IaAddr {
                    address: addr.parse().unwrap(),
                    preferred: 3600,
                    valid: 7200,
                    options: vec![],
                })],
            }),
            Opt::DnsServers(vec!["fd00:77::53".parse().unwrap()]),
            Opt::DomainList(vec!["lab.example".into(), "example".into()]),
        ];
        options.extend(extra);
        Message { kind, xid, options }.emit()
    }

    #[test]
    fn solicit_bytes_name_the_client_and_ask_for_dns() {
        let s = Settings6 {
            mac: MAC,
            deadline: Instant::now(),
        };
        let b = client_message(kind::SOLICIT, 0x12_3456, &s, None, Instant::now());
        // Type 1, xid 0x123456, then OPTION_CLIENTID (1) of length 10: DUID-LL of the MAC.
        assert_eq!(
            &b[..18],
            &[1, 0x12, 0x34, 0x56, 0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1]
        );
        let m = Message::parse(&b).unwrap();
        assert!(m.options.contains(&Opt::Oro(vec![23, 24])));
        assert!(m.ia_na(1).is_some());
        assert_eq!(m.emit(), b);
    }

    #[test]
    fn answers_are_checked_before_they_are_taken() {
        let cid = duid_ll(&MAC);
        let ok = server_msg(kind::ADVERTISE, 7, "fd00:77::150", vec![Opt::Preference(5)]);
        let a = read_answer(&ok, kind::ADVERTISE, 7, &cid, None, 1).unwrap();
        assert_eq!(a.address, "fd00:77::150".parse::<Ipv6Addr>().unwrap());
        assert_eq!((a.preference, a.valid, a.t1), (5, 7200, 1800));
        assert_eq!(a.search, ["lab.example", "example"]);
        assert_eq!(a.dns.len(), 1);
        assert_eq!(
            read_answer(&ok, kind::REPLY, 7, &cid, None, 1),
            Err(Rejected::Kind(2))
        );
        assert_eq!(
            read_answer(&ok, kind::ADVERTISE, 8, &cid, None, 1),
            Err(Rejected::Xid)
        );
        assert_eq!(
            read_answer(&ok, kind::ADVERTISE, 7, &duid_ll(&[9; 6]), None, 1),
            Err(Rejected::ClientId)
        );
        assert_eq!(
            read_answer(&ok, kind::ADVERTISE, 7, &cid, Some(&[1, 2]), 1),
            Err(Rejected::ServerId)
        );
        assert_eq!(
            read_answer(&ok, kind::ADVERTISE, 7, &cid, None, 2),
            Err(Rejected::NoAddress)
        );
        let no = server_msg(
            kind::REPLY,
            7,
            "fd00:77::150",
            vec![Opt::Status(status::NO_ADDRS_AVAIL, "none left".into())],
        );
        assert_eq!(
            read_answer(&no, kind::REPLY, 7, &cid, None, 1),
            Err(Rejected::Status(2, "none left".into()))
        );
    }

    /// A server on the other side of a queue: answers each Solicit with an Advertise and
    /// each Request with a Reply, dropping the first `drop` messages.
    struct FakeServer {
        drop: u32,
        inbox: VecDeque<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Transport6 for FakeServer {
        fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
            self.sent.push(packet[0]);
            if self.drop > 0 {
                self.drop -= 1;
                return Ok(());
            }
            let m = Message::parse(packet).unwrap();
            let kind = match m.kind {
                kind::SOLICIT => kind::ADVERTISE,
                _ => kind::REPLY,
            };
            // Noise first: another transaction's answer.
            self.inbox
                .push_back(server_msg(kind, m.xid ^ 1, "fd00:77::99", vec![]));
            self.inbox
                .push_back(server_msg(kind, m.xid, "fd00:77::150", vec![]));
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
            match self.inbox.pop_front() {
                Some(m) => {
                    buf[..m.len()].copy_from_slice(&m);
                    Ok(Some(m.len()))
                }
                None => {
                    std::thread::sleep(timeout.min(Duration::from_millis(20)));
                    Ok(None)
                }
            }
        }
    }

    #[test]
    fn the_exchange_survives_a_lost_solicit() {
        let mut t = FakeServer {
            drop: 1,
            inbox: VecDeque::new(),
            sent: Vec::new(),
        };
        let s = Settings6 {
            mac: MAC,
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let mut log = Transcript6::default();
        let a = run(
            &mut t,
            &s,
            &AtomicBool::new(false),
            &mut Rng::new(1),
            &mut log,
        )
        .unwrap();
        assert_eq!(a.address, "fd00:77::150".parse::<Ipv6Addr>().unwrap());
        assert_eq!(t.sent, [1, 1, 3]);
        assert_eq!(log.heard.ignored, 2, "{log}");
        assert!(
            log.to_string().starts_with("sent 2 SOLICIT, 1 REQUEST"),
            "{log}"
        );
    }

    #[test]
    fn a_silent_link_ends_at_the_deadline() {
        let mut t = FakeServer {
            drop: u32::MAX,
            inbox: VecDeque::new(),
            sent: Vec::new(),
        };
        let s = Settings6 {
            mac: MAC,
            deadline: Instant::now() + Duration::from_millis(1500),
        };
        let start = Instant::now();
        let r = run(
            &mut t,
            &s,
            &AtomicBool::new(false),
            &mut Rng::new(1),
            &mut Transcript6::default(),
        );
        assert_eq!(r, Err(Dhcp6Error::TimedOut));
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn retransmission_doubles_and_is_capped() {
        let mut rng = Rng::new(3);
        let first = next_rt(None, SOLICIT, &mut rng, true);
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_millis(1100));
        let second = next_rt(Some(first), SOLICIT, &mut rng, false);
        assert!(second >= first.mul_f64(1.9) && second <= first.mul_f64(2.1));
        let capped = next_rt(Some(Duration::from_secs(29)), REQUEST, &mut rng, false);
        assert!(capped <= Duration::from_secs(33) && capped >= Duration::from_secs(27));
    }

    fn arb_opt() -> impl Strategy<Value = Opt> {
        let leaf = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Opt::ClientId),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Opt::ServerId),
            proptest::collection::vec(any::<u16>(), 0..5).prop_map(Opt::Oro),
            any::<u8>().prop_map(Opt::Preference),
            any::<u16>().prop_map(Opt::ElapsedTime),
            (any::<u16>(), "[a-z ]{0,12}").prop_map(|(c, m)| Opt::Status(c, m)),
            proptest::collection::vec(any::<[u8; 16]>().prop_map(Ipv6Addr::from), 0..3)
                .prop_map(Opt::DnsServers),
            proptest::collection::vec("[a-z0-9]{1,10}(\\.[a-z0-9-]{1,10}){0,2}", 0..3)
                .prop_map(Opt::DomainList),
            (100u16..200, proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(c, d)| Opt::Other(c, d)),
        ];
        let addr = (
            any::<[u8; 16]>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(leaf.clone(), 0..2),
        )
            .prop_map(|(a, p, v, options)| {
                Opt::IaAddr(IaAddr {
                    address: Ipv6Addr::from(a),
                    preferred: p,
                    valid: v,
                    options,
                })
            });
        prop_oneof![
            leaf,
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(addr, 0..3)
            )
                .prop_map(|(iaid, t1, t2, options)| Opt::IaNa(IaNa {
                    iaid,
                    t1,
                    t2,
                    options
                })),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::parse(&b);
            let _ = read_answer(&b, kind::REPLY, 0, &duid_ll(&MAC), None, 1);
            let _ = parse_names(&b);
        }

        #[test]
        fn messages_round_trip(
            kind in 1u8..14,
            xid in 0u32..0x100_0000,
            options in proptest::collection::vec(arb_opt(), 0..6),
        ) {
            let m = Message { kind, xid, options };
            let b = m.emit();
            prop_assert_eq!(Message::parse(&b).unwrap(), m.clone());
            // Cut anywhere, a message is an error or a shorter message: never a panic.
            for n in 0..b.len() {
                let _ = Message::parse(&b[..n]);
            }
        }
    }
}
