//! The login state machine (RFC 7143 §6.3, §11.12, §11.13) over any `Read + Write`, and a
//! userspace session good for a few SCSI commands (INQUIRY, READ CAPACITY) and a logout.
//! stage0 uses the session only up to the Full Feature Phase, then hands the socket to the
//! kernel; the host tests drive it further against tgtd.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::chap::{Chap, ChapAlgorithm, ChapError, Exchange};
use super::pdu::{
    lun_to_wire, Digests, LoginRequest, LoginResponse, LogoutRequest, NopOut, Pdu, RawPdu,
    ScsiCommand, Stage, RESERVED_TAG,
};
use super::target::Portal;
use super::text::{self, Digest, Negotiated, Negotiation, Params, TextError};

/// What a login needs besides the connection.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// Our iSCSI name (InitiatorName, §13.5).
    pub initiator_name: String,
    /// The target's iSCSI name (TargetName, §13.4).
    pub target_name: String,
    /// CHAP, when the target wants it; None offers AuthMethod=None.
    pub chap: Option<Chap>,
    /// Operational keys to offer.
    pub params: Params,
    /// Initiator Session ID (§11.12.5); see [`isid_for`].
    pub isid: [u8; 6],
    /// Target Session Identifying Handle (§11.12.6): 0 for a new session (or to reinstate
    /// the one with this ISID, §6.3.5), the target's TSIH to add a connection to a session
    /// it still has (session continuation, used after a dropped connection).
    pub tsih: u16,
    /// The session's initial CmdSN: carried by every login request and by the first
    /// command of the Full Feature Phase (§11.12.9).
    pub cmd_sn: u32,
    /// Bound on the whole login, connect included.
    pub timeout: Duration,
}

impl LoginConfig {
    /// A config with default parameters, no CHAP, a 10 s bound and the ISID derived from
    /// the target name.
    pub fn new(initiator_name: &str, target_name: &str) -> Self {
        LoginConfig {
            initiator_name: initiator_name.into(),
            target_name: target_name.into(),
            chap: None,
            params: Params::default(),
            isid: isid_for(initiator_name, target_name),
            tsih: 0,
            cmd_sn: 1,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A stable ISID for (initiator, target): Random format (T=10b, §11.12.5) with B and C taken
/// from a hash of the names. Stable across boots on purpose: when a rebooted node logs in
/// again with the same ISID, the target reinstates the session (§6.3.5) instead of keeping
/// the dead one (and its reservations) until it times out.
pub fn isid_for(initiator: &str, target: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in initiator.bytes().chain([0]).chain(target.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    [0x80, b[0], b[1], b[2], 0, 0]
}

/// Why a login failed, without the where (see [`LoginError`]).
#[derive(Debug)]
pub enum LoginErrorKind {
    /// TCP connect failed: refused, no route, unresolvable.
    Unreachable(io::Error),
    /// No answer in time.
    Timeout {
        /// What we were doing.
        during: &'static str,
    },
    /// The connection broke mid-login.
    Io(io::Error),
    /// The target answered with a failure status (§11.13.5).
    Status {
        /// Status-Class: 1 redirection, 2 initiator error, 3 target error.
        class: u8,
        /// Status-Detail.
        detail: u8,
        /// Whether we offered CHAP (helps explain 0x0201).
        offered_chap: bool,
        /// The CHAP algorithm the target had chosen, if it got that far.
        chap_algorithm: Option<ChapAlgorithm>,
    },
    /// The target redirected us (class 1); [`connect`] follows these.
    Redirect {
        /// TargetAddress as sent (§13.8).
        address: String,
        /// 0x0102 (moved permanently) rather than 0x0101 (temporarily).
        permanent: bool,
    },
    /// CHAP failed on our side (bad challenge, mutual check failed).
    Chap(ChapError),
    /// A text key could not be parsed or negotiated.
    Text(TextError),
    /// The target broke the protocol.
    Protocol(String),
    /// Redirects went round in circles.
    TooManyRedirects(Vec<String>),
}

/// The text of a login Status-Class/Status-Detail pair (§11.13.5).
pub fn status_text(class: u8, detail: u8) -> &'static str {
    match (class, detail) {
        (0, 0) => "success",
        (1, 1) => "target moved temporarily",
        (1, 2) => "target moved permanently",
        (2, 0) => "initiator error",
        (2, 1) => "authentication failure",
        (2, 2) => "authorization failure: this initiator may not access the target",
        (2, 3) => "target not found",
        (2, 4) => "target removed",
        (2, 5) => "unsupported iSCSI version",
        (2, 6) => "too many connections",
        (2, 7) => "missing parameter",
        (2, 8) => "cannot include this connection in the session",
        (2, 9) => "session type not supported",
        (2, 10) => "session does not exist",
        (2, 11) => "invalid request during login",
        (3, 0) => "target error",
        (3, 1) => "service unavailable",
        (3, 2) => "out of resources",
        (1, _) => "redirection",
        (2, _) => "initiator error",
        (3, _) => "target error",
        _ => "unknown status",
    }
}

impl fmt::Display for LoginErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginErrorKind::Unreachable(e) => write!(f, "portal unreachable: {e}"),
            LoginErrorKind::Timeout { during } => write!(f, "timed out {during}"),
            LoginErrorKind::Io(e) => write!(f, "connection failed: {e}"),
            LoginErrorKind::Status {
                class,
                detail,
                offered_chap,
                ..
            } => {
                write!(
                    f,
                    "{} (status class {class:#04x}, detail {detail:#04x})",
                    status_text(*class, *detail)
                )?;
                match (class, detail, offered_chap) {
                    (2, 1, false) => write!(f, "; the target wants CHAP and none is configured"),
                    (2, 1, true) => write!(f, "; check the CHAP user and secret"),
                    _ => Ok(()),
                }
            }
            LoginErrorKind::Redirect { address, permanent } => write!(
                f,
                "redirected {} to {address}",
                if *permanent {
                    "permanently"
                } else {
                    "temporarily"
                }
            ),
            LoginErrorKind::Chap(e) => e.fmt(f),
            LoginErrorKind::Text(e) => e.fmt(f),
            LoginErrorKind::Protocol(m) => write!(f, "protocol error: {m}"),
            LoginErrorKind::TooManyRedirects(v) => {
                write!(f, "too many redirects: {}", v.join(" -> "))
            }
        }
    }
}

/// A failed login, naming the portal and the target.
#[derive(Debug)]
pub struct LoginError {
    /// The portal, as `addr:port`.
    pub portal: String,
    /// The target name.
    pub target: String,
    /// What went wrong.
    pub kind: LoginErrorKind,
}

impl LoginError {
    /// The target's Status-Class and Status-Detail, when it answered with a failure.
    pub fn status(&self) -> Option<(u8, u8)> {
        match self.kind {
            LoginErrorKind::Status { class, detail, .. } => Some((class, detail)),
            _ => None,
        }
    }

    /// Authentication failed: the target refused our CHAP (0x0201), or the target failed
    /// mutual CHAP.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self.kind,
            LoginErrorKind::Status {
                class: 2,
                detail: 1,
                ..
            } | LoginErrorKind::Chap(ChapError::TargetResponse | ChapError::TargetName { .. })
        )
    }

    /// The target does not exist on this portal (0x0203).
    pub fn is_unknown_target(&self) -> bool {
        self.status() == Some((2, 3))
    }
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iSCSI login to {} at {} failed: {}",
            self.target, self.portal, self.kind
        )
    }
}

impl std::error::Error for LoginError {}

fn io_kind(e: io::Error, during: &'static str) -> LoginErrorKind {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LoginErrorKind::Timeout { during },
        io::ErrorKind::InvalidData => LoginErrorKind::Protocol(e.to_string()),
        _ => LoginErrorKind::Io(e),
    }
}

/// A logged-in session in the Full Feature Phase, still in userspace.
#[derive(Debug)]
pub struct Session<S> {
    stream: S,
    /// InitiatorName.
    pub initiator_name: String,
    /// TargetName.
    pub target_name: String,
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH the target assigned.
    pub tsih: u16,
    /// The negotiated parameters.
    pub negotiated: Negotiated,
    /// CmdSN of the next command (starts at the login's CmdSN).
    pub cmd_sn: u32,
    /// ExpStatSN: the last StatSN seen plus one.
    pub exp_stat_sn: u32,
    /// MaxCmdSN from the last response.
    pub max_cmd_sn: u32,
    /// The CHAP algorithm used, if any.
    pub chap_algorithm: Option<ChapAlgorithm>,
    /// Login round trips (request/response pairs).
    pub round_trips: u32,
    next_itt: u32,
}

/// Logs in over `stream`. `random` fills mutual CHAP challenges. The stream's own timeouts
/// bound each read; `deadline` bounds the whole.
pub fn login<S: Read + Write>(
    mut stream: S,
    cfg: &LoginConfig,
    deadline: Instant,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Session<S>, LoginErrorKind> {
    const ITT: u32 = 0;
    let mut neg = Negotiation::new(cfg.params.clone());
    let mut exchange = match &cfg.chap {
        Some(c) => Some(Exchange::new(c).map_err(LoginErrorKind::Chap)?),
        None => None,
    };
    #[derive(PartialEq)]
    enum Auth {
        Offered,
        SentAlgorithms,
        SentResponse,
        Done,
    }
    let mut auth = Auth::Offered;
    let leading = vec![
        ("InitiatorName".to_string(), cfg.initiator_name.clone()),
        ("TargetName".to_string(), cfg.target_name.clone()),
        ("SessionType".to_string(), "Normal".to_string()),
    ];
    // Without CHAP there is nothing to negotiate in the security stage: start in the
    // operational stage, as open-iscsi does, and save a round trip (§6.3).
    let mut stage = if exchange.is_some() {
        Stage::Security
    } else {
        Stage::Operational
    };
    let mut offered: HashSet<String> = HashSet::new();
    let mut keys: Vec<(String, String)> = leading;
    match &exchange {
        Some(ex) => {
            // Mutual CHAP insists on authenticating the target, so None is not offered.
            let methods = if ex.mutual() { "CHAP" } else { "CHAP,None" };
            keys.push(("AuthMethod".into(), methods.into()));
        }
        None => {
            keys.extend(neg.offer());
            offered.extend(keys.iter().map(|(k, _)| k.clone()));
        }
    }
    let mut exp_stat_sn = 0u32;
    let mut round_trips = 0u32;
    for _ in 0..32 {
        if Instant::now() >= deadline {
            return Err(LoginErrorKind::Timeout {
                during: "logging in",
            });
        }
        // T=1 asks to move on: from security once CHAP is answered (or not needed), from
        // the operational stage always. While CHAP is in progress T=0 (RFC 7143 §12.1.3).
        let (transit, nsg) = match stage {
            Stage::Security => (
                matches!(auth, Auth::Offered | Auth::SentResponse | Auth::Done),
                Stage::Operational,
            ),
            _ => (true, Stage::FullFeature),
        };
        let req = LoginRequest {
            transit,
            cont: false,
            csg: stage,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: cfg.isid,
            tsih: cfg.tsih,
            itt: ITT,
            cid: 0,
            cmd_sn: cfg.cmd_sn,
            exp_stat_sn,
            data: text::emit(&keys),
        };
        let resp = round_trip(&mut stream, req, &mut round_trips)?;
        exp_stat_sn = resp.stat_sn.wrapping_add(1);
        let got = text::parse(&resp.data).map_err(LoginErrorKind::Text)?;
        match resp.status_class {
            0 => {}
            1 => {
                let address = got
                    .iter()
                    .find(|(k, _)| k == "TargetAddress")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        LoginErrorKind::Protocol("redirect without TargetAddress".into())
                    })?;
                return Err(LoginErrorKind::Redirect {
                    address,
                    permanent: resp.status_detail == 2,
                });
            }
            class => {
                return Err(LoginErrorKind::Status {
                    class,
                    detail: resp.status_detail,
                    offered_chap: exchange.is_some(),
                    chap_algorithm: exchange.as_ref().and_then(|e| e.algorithm),
                })
            }
        }
        if resp.version_active != 0 {
            return Err(LoginErrorKind::Protocol(format!(
                "unsupported version {}",
                resp.version_active
            )));
        }
        if resp.csg != stage {
            return Err(LoginErrorKind::Protocol(format!(
                "target answered in stage {:?}, we are in {stage:?}",
                resp.csg
            )));
        }
        keys = Vec::new();
        match stage {
            Stage::Security => {
                for (k, v) in &got {
                    if matches!(k.as_str(), "TargetPortalGroupTag" | "TargetAlias") {
                        neg.apply(k, v, true).map_err(LoginErrorKind::Text)?;
                    }
                }
                let Some(ex) = exchange.as_mut() else {
                    return Err(LoginErrorKind::Protocol(
                        "security stage without CHAP".into(),
                    ));
                };
                match auth {
                    Auth::Offered => match find(&got, "AuthMethod") {
                        Some("CHAP") => {
                            keys = ex.offer();
                            auth = Auth::SentAlgorithms;
                        }
                        Some("None") if !ex.mutual() => auth = Auth::Done,
                        Some(m) => {
                            return Err(LoginErrorKind::Protocol(format!(
                                "target chose AuthMethod={m}, which was not offered"
                            )))
                        }
                        None => {
                            return Err(LoginErrorKind::Protocol(
                                "target did not answer AuthMethod".into(),
                            ))
                        }
                    },
                    Auth::SentAlgorithms => {
                        keys = ex.respond(&got, random).map_err(LoginErrorKind::Chap)?;
                        auth = Auth::SentResponse;
                    }
                    Auth::SentResponse => {
                        ex.verify(&got).map_err(LoginErrorKind::Chap)?;
                        auth = Auth::Done;
                    }
                    Auth::Done => {}
                }
                if auth == Auth::Done && resp.transit {
                    if resp.nsg != Stage::Operational {
                        return Err(LoginErrorKind::Protocol(format!(
                            "target moved from security to {:?}",
                            resp.nsg
                        )));
                    }
                    stage = Stage::Operational;
                    keys = neg.offer();
                    offered.extend(keys.iter().map(|(k, _)| k.clone()));
                }
            }
            Stage::Operational => {
                for (k, v) in &got {
                    let ours = offered.contains(k.as_str());
                    if let Some(answer) = neg.apply(k, v, ours).map_err(LoginErrorKind::Text)? {
                        offered.insert(k.clone());
                        keys.push(answer);
                    }
                }
                if resp.transit && resp.nsg == Stage::FullFeature && keys.is_empty() {
                    return Ok(Session {
                        stream,
                        initiator_name: cfg.initiator_name.clone(),
                        target_name: cfg.target_name.clone(),
                        isid: cfg.isid,
                        tsih: resp.tsih,
                        negotiated: neg.finish(),
                        cmd_sn: cfg.cmd_sn,
                        exp_stat_sn,
                        max_cmd_sn: resp.max_cmd_sn,
                        chap_algorithm: exchange.and_then(|e| e.algorithm),
                        round_trips,
                        next_itt: 1,
                    });
                }
            }
            Stage::FullFeature | Stage::Reserved => {
                return Err(LoginErrorKind::Protocol(format!(
                    "login in stage {stage:?}"
                )))
            }
        }
    }
    Err(LoginErrorKind::Protocol(
        "login did not finish within 32 exchanges".into(),
    ))
}

/// Sends a login request and reads the response. A response with C=1 continues in the
/// next one, which an empty request fetches (§6.3, §11.13.2); the text is joined.
fn round_trip<S: Read + Write>(
    stream: &mut S,
    mut req: LoginRequest,
    round_trips: &mut u32,
) -> Result<LoginResponse, LoginErrorKind> {
    let mut text = Vec::new();
    for _ in 0..16 {
        Pdu::LoginRequest(req.clone())
            .to_raw()
            .write_to(stream, Digests::default())
            .map_err(|e| io_kind(e, "sending a login request"))?;
        *round_trips += 1;
        let raw = RawPdu::read_from(stream, Digests::default(), 65_536)
            .map_err(|e| io_kind(e, "waiting for the login response"))?;
        match Pdu::from_raw(raw) {
            Pdu::LoginResponse(mut r) => {
                text.extend_from_slice(&r.data);
                if r.status_class == 0 && r.cont {
                    req.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    req.transit = false;
                    req.data.clear();
                    continue;
                }
                r.data = text;
                return Ok(r);
            }
            Pdu::Reject(r) => {
                return Err(LoginErrorKind::Protocol(format!(
                    "target rejected the login request (reason {:#04x})",
                    r.reason
                )))
            }
            other => {
                return Err(LoginErrorKind::Protocol(format!(
                    "expected a Login Response, got {} (opcode {:#04x})",
                    other.name(),
                    other.to_raw().view().opcode()
                )))
            }
        }
    }
    Err(LoginErrorKind::Protocol(
        "login response continued for more than 16 PDUs".into(),
    ))
}

fn find<'a>(keys: &'a [(String, String)], k: &str) -> Option<&'a str> {
    keys.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

/// Connects to `portal` and logs in, following redirects (at most 4) and, when a target
/// picks CHAP_A=7 but refuses our SHA-256 response, retrying once with MD5 only: tgtd up to
/// at least 1.0.85 maps CHAP_A=7 to SHA-1 (IANA: 6 is SHA-1, 7 SHA-256). The retry gives an
/// attacker nothing new: the login is in clear text, so one who can fail our first attempt
/// could as well have rewritten our CHAP_A list.
pub fn connect(portal: &Portal, cfg: &LoginConfig) -> Result<Session<TcpStream>, LoginError> {
    connect_via(portal, cfg, &mut |stream, cfg, deadline| {
        login(stream, cfg, deadline, &mut crate::entropy::fill_secret)
    })
}

/// How [`connect_via`] logs in over a fresh TCP connection: directly over the socket
/// (stage0), or through the kernel once the socket is bound to a session (the keeper).
pub type LogIn<'a, S> =
    dyn FnMut(TcpStream, &LoginConfig, Instant) -> Result<Session<S>, LoginErrorKind> + 'a;

/// [`connect`], with the login over each TCP connection left to `log_in`: redirects and
/// the MD5 retry are the same whoever carries the PDUs.
pub fn connect_via<S>(
    portal: &Portal,
    cfg: &LoginConfig,
    log_in: &mut LogIn<'_, S>,
) -> Result<Session<S>, LoginError> {
    let deadline = Instant::now() + cfg.timeout;
    let mut cfg = cfg.clone();
    let mut portal = portal.clone();
    let mut hops = vec![portal.to_string()];
    let mut md5_retry_done = false;
    loop {
        let err = |kind| LoginError {
            portal: portal.to_string(),
            target: cfg.target_name.clone(),
            kind,
        };
        let stream = open(&portal, deadline).map_err(err)?;
        let result = log_in(stream, &cfg, deadline);
        match result {
            Ok(s) => return Ok(s),
            Err(LoginErrorKind::Redirect { address, .. }) => {
                if hops.len() > 4 {
                    hops.push(address);
                    return Err(err(LoginErrorKind::TooManyRedirects(hops)));
                }
                let next = Portal::parse_target_address(&address).ok_or_else(|| {
                    err(LoginErrorKind::Protocol(format!(
                        "redirect to an unusable TargetAddress {address:?}"
                    )))
                })?;
                log::info!("iscsi: {} redirects {} to {next}", portal, cfg.target_name);
                hops.push(next.to_string());
                portal = next;
            }
            // tgtd answers CHAP_A=7 but computes SHA-1 for it, then fails our SHA-256
            // response with 0x0200 (it cannot even decode it) or 0x0201.
            Err(LoginErrorKind::Status {
                class: 2,
                detail: 0 | 1,
                chap_algorithm: Some(ChapAlgorithm::Sha256),
                ..
            }) if !md5_retry_done
                && cfg
                    .chap
                    .as_ref()
                    .is_some_and(|c| c.algorithms.contains(&ChapAlgorithm::Md5)) =>
            {
                md5_retry_done = true;
                log::warn!(
                    "iscsi: {} at {portal} chose CHAP SHA-256 but refused the response; retrying with MD5",
                    cfg.target_name
                );
                if let Some(c) = cfg.chap.as_mut() {
                    c.algorithms = vec![ChapAlgorithm::Md5];
                }
            }
            Err(kind) => return Err(err(kind)),
        }
    }
}

fn open(portal: &Portal, deadline: Instant) -> Result<TcpStream, LoginErrorKind> {
    // Portals are addresses: stage0 does not resolve names (musl's resolver would add
    // ~25 KiB to PID 1 for a case iSCSI boot setups do not use).
    let Ok(ip) = portal.host.parse::<IpAddr>() else {
        return Err(LoginErrorKind::Unreachable(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a host name; stage0 does not resolve names, give the portal's IP address",
                portal.host
            ),
        )));
    };
    let addrs = [SocketAddr::new(ip, portal.port)];
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LoginErrorKind::Timeout {
                during: "connecting",
            });
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                // Login PDUs are small request/response pairs: Nagle only adds delay.
                let _ = s.set_nodelay(true);
                s.set_read_timeout(Some(left))
                    .and_then(|()| s.set_write_timeout(Some(left)))
                    .map_err(LoginErrorKind::Io)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(LoginErrorKind::Timeout {
                    during: "connecting",
                })
            }
            Err(e) => last = e,
        }
    }
    Err(LoginErrorKind::Unreachable(last))
}

/// A SCSI command in the userspace session went wrong.
#[derive(Debug)]
pub enum SessionError {
    /// The connection failed.
    Io(io::Error),
    /// The target rejected a PDU (§11.17).
    Rejected(u8),
    /// The command ended with a SCSI status other than GOOD.
    Scsi {
        /// SCSI status.
        status: u8,
        /// iSCSI response code.
        response: u8,
        /// Sense data, if any.
        sense: Vec<u8>,
    },
    /// The target broke the protocol.
    Protocol(String),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Io(e) => write!(f, "iSCSI connection failed: {e}"),
            SessionError::Rejected(r) => write!(f, "target rejected the PDU (reason {r:#04x})"),
            SessionError::Scsi {
                status,
                response,
                sense,
            } => write!(
                f,
                "SCSI status {status:#04x}, response {response:#04x}, sense {sense:02x?}"
            ),
            SessionError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for SessionError {}

impl SessionError {
    /// CHECK CONDITION with sense key UNIT ATTENTION (fixed or descriptor sense format).
    pub fn is_unit_attention(&self) -> bool {
        let SessionError::Scsi {
            status: 2, sense, ..
        } = self
        else {
            return false;
        };
        let key = match sense.first().map(|b| b & 0x7f) {
            Some(0x70 | 0x71) => sense.get(2).map(|k| k & 0x0f),
            Some(0x72 | 0x73) => sense.get(1).map(|k| k & 0x0f),
            _ => None,
        };
        key == Some(6)
    }
}

/// INQUIRY's standard data, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    /// Peripheral device type: 0 disk, 0x0c storage array controller (tgtd's LUN 0).
    pub device_type: u8,
    /// T10 vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Product revision.
    pub revision: String,
}

impl<S: Read + Write> Session<S> {
    fn digests(&self) -> Digests {
        Digests {
            header: self.negotiated.header_digest == Digest::Crc32c,
            data: self.negotiated.data_digest == Digest::Crc32c,
        }
    }

    fn send(&mut self, pdu: Pdu) -> Result<(), SessionError> {
        let d = self.digests();
        pdu.to_raw()
            .write_to(&mut self.stream, d)
            .map_err(SessionError::Io)
    }

    fn recv(&mut self) -> Result<Pdu, SessionError> {
        let d = self.digests();
        let max = self.negotiated.max_recv_data_segment_length as usize;
        let raw = RawPdu::read_from(&mut self.stream, d, max).map_err(SessionError::Io)?;
        Ok(Pdu::from_raw(raw))
    }

    fn saw_status(&mut self, stat_sn: u32, max_cmd_sn: u32) {
        self.exp_stat_sn = stat_sn.wrapping_add(1);
        self.max_cmd_sn = max_cmd_sn;
    }

    /// Runs a command that reads up to `alloc` bytes from LUN `lun` (a Linux LUN number).
    pub fn command_in(
        &mut self,
        lun: u64,
        cdb: &[u8],
        alloc: u32,
    ) -> Result<Vec<u8>, SessionError> {
        let itt = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1).max(1);
        let mut c = [0u8; 16];
        let n = cdb.len().min(16);
        c[..n].copy_from_slice(&cdb[..n]);
        let cmd_sn = self.cmd_sn;
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: lun_to_wire(lun),
            itt,
            expected_len: alloc,
            cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
            data: Vec::new(),
        }))?;
        let mut buf = vec![0u8; alloc as usize];
        let mut got = 0usize;
        loop {
            match self.recv()? {
                Pdu::DataIn(d) if d.itt == itt => {
                    let off = d.offset as usize;
                    let end = off.saturating_add(d.data.len()).min(buf.len());
                    if off < end {
                        buf[off..end].copy_from_slice(&d.data[..end - off]);
                        got = got.max(end);
                    }
                    if d.has_status {
                        self.saw_status(d.stat_sn, d.max_cmd_sn);
                        if d.status != 0 {
                            return Err(SessionError::Scsi {
                                status: d.status,
                                response: 0,
                                sense: Vec::new(),
                            });
                        }
                        buf.truncate(got);
                        return Ok(buf);
                    }
                }
                Pdu::ScsiResponse(r) if r.itt == itt => {
                    self.saw_status(r.stat_sn, r.max_cmd_sn);
                    if r.status != 0 || r.response != 0 {
                        // Sense data follows a 2-byte SenseLength (§11.4.7).
                        let sense = r.data.get(2..).unwrap_or_default().to_vec();
                        return Err(SessionError::Scsi {
                            status: r.status,
                            response: r.response,
                            sense,
                        });
                    }
                    buf.truncate(got);
                    return Ok(buf);
                }
                Pdu::NopIn(n) if n.ttt != RESERVED_TAG => {
                    // A ping from the target: answer with the same TTT and data (§11.18).
                    self.saw_status(self.exp_stat_sn.wrapping_sub(1), n.max_cmd_sn);
                    self.send(Pdu::NopOut(NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: RESERVED_TAG,
                        ttt: n.ttt,
                        cmd_sn: self.cmd_sn,
                        exp_stat_sn: self.exp_stat_sn,
                        data: n.data,
                    }))?;
                }
                Pdu::Reject(r) => return Err(SessionError::Rejected(r.reason)),
                other => log::debug!("iscsi: ignoring {} during a command", other.name()),
            }
        }
    }

    /// Like [`Session::command_in`], retrying once after a UNIT ATTENTION: the first
    /// command after a LUN appears or resets reports the event instead of running (SAM-5).
    pub fn command_in_retry(
        &mut self,
        lun: u64,
        cdb: &[u8],
        alloc: u32,
    ) -> Result<Vec<u8>, SessionError> {
        match self.command_in(lun, cdb, alloc) {
            Err(e) if e.is_unit_attention() => self.command_in(lun, cdb, alloc),
            r => r,
        }
    }

    /// SCSI INQUIRY (SPC-4 §6.6), standard data.
    pub fn inquiry(&mut self, lun: u64) -> Result<Inquiry, SessionError> {
        let d = self.command_in(lun, &[0x12, 0, 0, 0, 96, 0], 96)?;
        if d.len() < 36 {
            return Err(SessionError::Protocol(format!(
                "INQUIRY returned {} bytes",
                d.len()
            )));
        }
        let s = |r: std::ops::Range<usize>| String::from_utf8_lossy(&d[r]).trim().to_string();
        Ok(Inquiry {
            device_type: d[0] & 0x1f,
            vendor: s(8..16),
            product: s(16..32),
            revision: s(32..36),
        })
    }

    /// SCSI READ CAPACITY(10) (SBC-3 §5.15): (number of blocks, block length).
    pub fn read_capacity(&mut self, lun: u64) -> Result<(u64, u32), SessionError> {
        let d = self.command_in_retry(lun, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8)?;
        if d.len() < 8 {
            return Err(SessionError::Protocol(format!(
                "READ CAPACITY returned {} bytes",
                d.len()
            )));
        }
        let last = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let len = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        Ok((u64::from(last) + 1, len))
    }

    /// Reads `count` blocks at `lba` with READ(10) (SBC-3 §5.11).
    pub fn read10(
        &mut self,
        lun: u64,
        lba: u32,
        count: u16,
        block_len: u32,
    ) -> Result<Vec<u8>, SessionError> {
        let l = lba.to_be_bytes();
        let c = count.to_be_bytes();
        let cdb = [0x28, 0, l[0], l[1], l[2], l[3], 0, c[0], c[1], 0];
        self.command_in_retry(lun, &cdb, u32::from(count) * block_len)
    }

    /// Closes the session with a Logout Request (reason 0, §11.14).
    pub fn logout(mut self) -> Result<(), SessionError> {
        let itt = self.next_itt;
        self.send(Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: 0,
            itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        }))?;
        loop {
            match self.recv()? {
                Pdu::LogoutResponse(r) if r.itt == itt => {
                    return if r.response == 0 {
                        Ok(())
                    } else {
                        Err(SessionError::Protocol(format!(
                            "logout refused (response {})",
                            r.response
                        )))
                    };
                }
                Pdu::Reject(r) => return Err(SessionError::Rejected(r.reason)),
                _ => {}
            }
        }
    }

    /// The connection, for the kernel handoff.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Gives up the session's connection.
    pub fn into_stream(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::chap::Secret;

    /// A scripted target: answers each request with the next canned response and records
    /// what the initiator sent.
    #[derive(Debug)]
    struct Script {
        responses: Vec<Vec<u8>>,
        out: Vec<u8>,
        sent: Vec<LoginRequest>,
        inbuf: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.inbuf.is_empty() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no more responses"));
            }
            let n = buf.len().min(self.inbuf.len());
            buf[..n].copy_from_slice(&self.inbuf[..n]);
            self.inbuf.drain(..n);
            Ok(n)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(buf);
            while let Ok((p, n)) = Pdu::parse(&self.out, Digests::default(), 1 << 20) {
                self.out.drain(..n);
                if let Pdu::LoginRequest(r) = p {
                    self.sent.push(r);
                }
                if !self.responses.is_empty() {
                    let r = self.responses.remove(0);
                    self.inbuf.extend(r);
                }
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn response(
        csg: Stage,
        nsg: Stage,
        transit: bool,
        status: (u8, u8),
        keys: &[(&str, &str)],
    ) -> Vec<u8> {
        Pdu::LoginResponse(LoginResponse {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_active: 0,
            isid: [0x80, 0, 0, 0, 0, 0],
            tsih: if transit && nsg == Stage::FullFeature {
                7
            } else {
                0
            },
            itt: 0,
            stat_sn: 100,
            exp_cmd_sn: 1,
            max_cmd_sn: 32,
            status_class: status.0,
            status_detail: status.1,
            data: text::emit(keys),
        })
        .emit(Digests::default())
    }

    fn script(responses: Vec<Vec<u8>>) -> Script {
        Script {
            responses,
            out: Vec::new(),
            sent: Vec::new(),
            inbuf: Vec::new(),
        }
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn login_without_auth_is_one_round_trip() {
        let s = script(vec![response(
            Stage::Operational,
            Stage::FullFeature,
            true,
            (0, 0),
            &[
                ("TargetPortalGroupTag", "1"),
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("MaxRecvDataSegmentLength", "65536"),
                ("ImmediateData", "Yes"),
                ("InitialR2T", "Yes"),
                ("MaxBurstLength", "262144"),
                ("FirstBurstLength", "65536"),
            ],
        )]);
        let cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.test:t");
        let sess = login(s, &cfg, deadline(), &mut |_| {}).unwrap();
        assert_eq!(sess.tsih, 7);
        assert_eq!(sess.exp_stat_sn, 101);
        assert_eq!(sess.round_trips, 1);
        assert_eq!(sess.negotiated.max_xmit_data_segment_length, 65536);
        assert_eq!(sess.negotiated.target_portal_group_tag, Some(1));
        assert!(sess.negotiated.initial_r2t);
        let sent = &sess.stream.sent;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].csg, Stage::Operational);
        assert_eq!(sent[0].nsg, Stage::FullFeature);
        assert!(sent[0].transit);
        let keys = text::parse(&sent[0].data).unwrap();
        assert_eq!(
            keys[0],
            ("InitiatorName".into(), "iqn.2024-01.test:i".into())
        );
        assert_eq!(keys[1], ("TargetName".into(), "iqn.2024-01.test:t".into()));
        assert!(keys.iter().all(|(k, _)| k != "AuthMethod"));
    }

    #[test]
    fn chap_login_walks_the_security_stage() {
        let secret = "chap-secret-123";
        let s = script(vec![
            response(
                Stage::Security,
                Stage::Security,
                false,
                (0, 0),
                &[("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1")],
            ),
            response(
                Stage::Security,
                Stage::Security,
                false,
                (0, 0),
                &[("CHAP_A", "5"), ("CHAP_I", "3"), ("CHAP_C", "0x0102030405")],
            ),
            response(Stage::Security, Stage::Operational, true, (0, 0), &[]),
            response(Stage::Operational, Stage::FullFeature, true, (0, 0), &[]),
        ]);
        let mut cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.test:t");
        cfg.chap = Some(Chap::new("user", Secret::new(secret)));
        let sess = login(s, &cfg, deadline(), &mut |_| {}).unwrap();
        assert_eq!(sess.chap_algorithm, Some(ChapAlgorithm::Md5));
        let sent = &sess.stream.sent;
        assert_eq!(sent.len(), 4);
        assert_eq!((sent[0].csg, sent[0].transit), (Stage::Security, true));
        assert_eq!(
            text::parse(&sent[1].data).unwrap(),
            vec![("CHAP_A".to_string(), "7,5".to_string())]
        );
        assert!(!sent[1].transit, "T=0 while CHAP is in progress");
        let r = ChapAlgorithm::Md5.response(3, secret.as_bytes(), &[1, 2, 3, 4, 5]);
        assert_eq!(
            text::parse(&sent[2].data).unwrap(),
            vec![
                ("CHAP_N".to_string(), "user".to_string()),
                ("CHAP_R".to_string(), crate::iscsi::chap::encode_hex(&r)),
            ]
        );
        assert!(sent[2].transit);
        assert_eq!(sent[3].csg, Stage::Operational);
        assert_eq!(sent[3].exp_stat_sn, 101);
        assert_eq!(sess.negotiated.target_portal_group_tag, Some(1));
    }

    #[test]
    fn failures_carry_the_status() {
        let s = script(vec![response(
            Stage::Operational,
            Stage::Operational,
            false,
            (2, 3),
            &[],
        )]);
        let cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.test:nope");
        let e = login(s, &cfg, deadline(), &mut |_| {}).unwrap_err();
        let e = LoginError {
            portal: "127.0.0.1:3260".into(),
            target: cfg.target_name.clone(),
            kind: e,
        };
        assert!(e.is_unknown_target());
        let msg = e.to_string();
        assert!(
            msg.contains("iqn.2024-01.test:nope")
                && msg.contains("target not found")
                && msg.contains("0x03"),
            "{msg}"
        );
    }

    #[test]
    fn redirects_are_reported() {
        let s = script(vec![response(
            Stage::Operational,
            Stage::Operational,
            false,
            (1, 1),
            &[("TargetAddress", "10.0.0.9:3261,1")],
        )]);
        let cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.test:t");
        match login(s, &cfg, deadline(), &mut |_| {}) {
            Err(LoginErrorKind::Redirect { address, permanent }) => {
                assert_eq!(address, "10.0.0.9:3261,1");
                assert!(!permanent);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn target_proposals_are_answered_before_full_feature() {
        let s = script(vec![
            response(
                Stage::Operational,
                Stage::Operational,
                false,
                (0, 0),
                &[("X-vendor.Thing", "1"), ("MaxBurstLength", "65536")],
            ),
            response(Stage::Operational, Stage::FullFeature, true, (0, 0), &[]),
        ]);
        let cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.test:t");
        let sess = login(s, &cfg, deadline(), &mut |_| {}).unwrap();
        let keys = text::parse(&sess.stream.sent[1].data).unwrap();
        assert_eq!(
            keys,
            vec![("X-vendor.Thing".to_string(), "NotUnderstood".to_string())]
        );
        assert_eq!(sess.negotiated.max_burst_length, 65536);
    }

    #[test]
    fn silence_is_a_timeout() {
        let cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.test:t");
        assert!(matches!(
            login(script(vec![]), &cfg, deadline(), &mut |_| {}),
            Err(LoginErrorKind::Timeout { .. })
        ));
    }

    /// Real answers of tgtd 1.0.85 (captured by `capture_fixtures` in tests-qemu/tests/scenarios/iscsi_login.rs).
    const TGTD_NONE: &[u8] = include_bytes!("fixtures/tgtd-login-none.bin");
    const TGTD_CHAP: &[u8] = include_bytes!("fixtures/tgtd-login-chap-md5.bin");

    fn split_pdus(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (_, n) = Pdu::parse(bytes, Digests::default(), 65_536).unwrap();
            out.push(bytes[..n].to_vec());
            bytes = &bytes[n..];
        }
        out
    }

    #[test]
    fn tgtd_fixtures_round_trip() {
        for fixture in [TGTD_NONE, TGTD_CHAP] {
            for bytes in split_pdus(fixture) {
                let (pdu, _) = Pdu::parse(&bytes, Digests::default(), 65_536).unwrap();
                let Pdu::LoginResponse(r) = &pdu else {
                    panic!("{pdu:?}")
                };
                assert_eq!((r.status_class, r.status_detail), (0, 0));
                assert!(text::parse(&r.data).is_ok());
                assert_eq!(
                    pdu.emit(Digests::default()),
                    bytes,
                    "emit gives tgtd's bytes"
                );
            }
        }
        let chap = split_pdus(TGTD_CHAP);
        assert_eq!(chap.len(), 4);
        let (Pdu::LoginResponse(challenge), _) =
            Pdu::parse(&chap[1], Digests::default(), 65_536).unwrap()
        else {
            panic!()
        };
        let keys = text::parse(&challenge.data).unwrap();
        assert_eq!(keys[0], ("CHAP_A".to_string(), "5".to_string()));
        assert!(keys
            .iter()
            .any(|(k, v)| k == "CHAP_C" && v.starts_with("0x")));
    }

    #[test]
    fn tgtd_fixtures_replay_through_the_state_machine() {
        let s = script(split_pdus(TGTD_NONE));
        let cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.org.terra-os:open");
        let sess = login(s, &cfg, deadline(), &mut |_| {}).unwrap();
        assert_eq!(sess.negotiated.target_portal_group_tag, Some(1));
        assert!(sess.negotiated.initial_r2t && sess.negotiated.immediate_data);
        assert_eq!(sess.negotiated.max_burst_length, 262_144);
        assert!(sess.tsih != 0);

        let s = script(split_pdus(TGTD_CHAP));
        let mut cfg = LoginConfig::new("iqn.2024-01.test:i", "iqn.2024-01.org.terra-os:chap");
        let mut chap = Chap::new("node1", Secret::new("node1-secret-12"));
        chap.algorithms = vec![ChapAlgorithm::Md5];
        cfg.chap = Some(chap);
        let sess = login(s, &cfg, deadline(), &mut |_| {}).unwrap();
        assert_eq!(sess.chap_algorithm, Some(ChapAlgorithm::Md5));
        assert_eq!(sess.round_trips, 4);
    }

    #[test]
    fn isid_is_stable_and_random_format() {
        let a = isid_for("iqn.a", "iqn.t");
        assert_eq!(a, isid_for("iqn.a", "iqn.t"));
        assert_ne!(a, isid_for("iqn.b", "iqn.t"));
        assert_eq!(a[0], 0x80);
        assert_eq!(&a[4..], &[0, 0]);
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A session as a login would leave it, over no stream.
    pub fn session(negotiated: Negotiated) -> Session<()> {
        Session {
            stream: (),
            initiator_name: "iqn.2024-01.test:i".into(),
            target_name: "iqn.2024-01.test:t".into(),
            isid: [0x80, 0, 0, 0, 0, 0],
            tsih: 1,
            negotiated,
            cmd_sn: 1,
            exp_stat_sn: 101,
            max_cmd_sn: 32,
            chap_algorithm: None,
            round_trips: 1,
            next_itt: 1,
        }
    }
}
