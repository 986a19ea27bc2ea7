//! tgtd's management protocol as `tgtadm` speaks it over tgtd's UNIX socket: a request
//! header with a parameter text, a response header with the text tgtd prints (read by
//! [`super::show`]). No I/O here.
//!
//! The headers are tgt's `struct tgtadm_req` and `struct tgtadm_rsp` (usr/tgtadm.h) in host
//! byte order (tgtd and its clients share a machine); the error codes are its
//! `enum tgtadm_errno` (usr/tgtadm_error.h). Checked against tgt 1.0.85 with exchanges
//! captured from `tgtadm` (testdata/).

use std::fmt;
use std::path::Path;

/// Size of a request header.
pub const REQUEST_LEN: usize = 120;
/// Size of a response header.
pub const RESPONSE_LEN: usize = 8;
/// The longest parameter text tgtd takes (its `MAX_MGT_BUFSIZE`): it drops a longer
/// request without answering.
pub const MAX_PARAMS: usize = 8 * 1024;

/// Offsets in the request header. `sid` (80, u64), `cid` (96), `host_no` (100),
/// `device_type` (104; 0 is a disk) and `pack` (112) stay zero in every request we send.
mod off {
    pub const MODE: usize = 0;
    pub const OP: usize = 4;
    /// `char lld[64]`: the driver's name, NUL-padded.
    pub const LLD: usize = 8;
    /// u32: header and parameter text.
    pub const LEN: usize = 72;
    /// i32: -1 for every target (show) or the global target (accounts).
    pub const TID: usize = 76;
    /// u64: `u64::MAX` when the request names no LUN.
    pub const LUN: usize = 88;
    /// u32: 0 incoming, 1 outgoing account.
    pub const AC_DIR: usize = 108;
    pub const FORCE: usize = 116;
}

/// The driver every request addresses (tgtd's `--lld iscsi`).
const LLD: &[u8] = b"iscsi";

/// `enum tgtadm_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    System = 0,
    Target = 1,
    Device = 2,
    Portal = 3,
    Account = 7,
}

/// `enum tgtadm_op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    New = 0,
    Delete = 1,
    Show = 2,
    Bind = 3,
    Update = 5,
}

/// A CHAP secret: redacted in Debug output, so never in a log or an error.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One `key=value` of the parameter text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    TargetName(String),
    /// A target's state: `ready`, or `offline` (no logins, no new commands).
    State(&'static str),
    Path(String),
    InitiatorName(String),
    User(String),
    /// Must come last, right after [`Param::User`]: tgtd takes the password as everything
    /// after the comma that ends the user name.
    Password(Secret),
}

impl Param {
    fn key(&self) -> &'static str {
        match self {
            Param::TargetName(_) => "targetname",
            Param::State(_) => "state",
            Param::Path(_) => "path",
            Param::InitiatorName(_) => "initiator-name",
            Param::User(_) => "user",
            Param::Password(_) => "password",
        }
    }

    fn value(&self) -> &str {
        match self {
            Param::TargetName(v) | Param::Path(v) | Param::InitiatorName(v) | Param::User(v) => v,
            Param::State(v) => v,
            Param::Password(Secret(v)) => v,
        }
    }

    /// Refuses what tgtd would misread. It splits the text on ',' (except a password, the
    /// rest of the text), finds `initiator-address=` and the like anywhere in it with
    /// strstr (so a name holding one would bind an address), reads values as C strings,
    /// and prints names and paths one per line in `show`.
    fn check(&self) -> Result<(), Invalid> {
        let (field, v) = (self.key(), self.value());
        if v.is_empty() {
            return Err(Invalid::Empty(field));
        }
        let bad = |c: char| match self {
            Param::Password(_) => c == '\0',
            Param::Path(_) => c == ',' || c.is_control(),
            _ => c == ',' || c == '=' || c.is_control() || c.is_whitespace(),
        };
        match v.chars().find(|&c| bad(c)) {
            Some(ch) => Err(Invalid::Char { field, ch }),
            None => Ok(()),
        }
    }
}

/// Why a request was refused before being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// tgtd's tids are positive C `int`s.
    Tid(u32),
    /// `u64::MAX` means "no LUN" to tgtd.
    Lun(u64),
    /// The field is empty.
    Empty(&'static str),
    /// The field holds a character tgtd would misread (see the module's checks).
    Char { field: &'static str, ch: char },
    /// The backing store's path is not UTF-8 (tgtd's answers are text).
    NotUtf8,
    /// The backing store's path is relative (tgtd would resolve it against its own cwd).
    NotAbsolute,
    /// The parameter text is longer than [`MAX_PARAMS`].
    TooLong(usize),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Tid(t) => write!(f, "tid {t} is not in 1..={}", i32::MAX),
            Invalid::Lun(l) => write!(f, "LUN {l} is reserved"),
            Invalid::Empty(field) => write!(f, "{field} is empty"),
            Invalid::Char { field, ch } => write!(f, "{field} may not contain {ch:?}"),
            Invalid::NotUtf8 => f.write_str("the backing store's path is not UTF-8"),
            Invalid::NotAbsolute => f.write_str("the backing store's path is not absolute"),
            Invalid::TooLong(n) => write!(f, "{n} bytes of parameters (tgtd takes {MAX_PARAMS})"),
        }
    }
}

impl std::error::Error for Invalid {}

/// A management request; its builders refuse what tgtd would misread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    mode: Mode,
    op: Op,
    /// -1: every target, or the global one.
    tid: i32,
    lun: Option<u64>,
    outgoing: bool,
    force: bool,
    params: Vec<Param>,
}

impl Request {
    fn new(mode: Mode, op: Op) -> Request {
        Request {
            mode,
            op,
            tid: -1,
            lun: None,
            outgoing: false,
            force: false,
            params: Vec::new(),
        }
    }

    fn tid(mut self, tid: u32) -> Result<Request, Invalid> {
        self.tid = match i32::try_from(tid) {
            Ok(t) if t > 0 => t,
            _ => return Err(Invalid::Tid(tid)),
        };
        Ok(self)
    }

    fn param(mut self, p: Param) -> Result<Request, Invalid> {
        p.check()?;
        self.params.push(p);
        let len = self.text().len();
        if len > MAX_PARAMS {
            return Err(Invalid::TooLong(len));
        }
        Ok(self)
    }

    /// `--mode sys --op show`: tgtd's state, drivers and backing stores.
    pub fn show_system() -> Request {
        Request::new(Mode::System, Op::Show)
    }

    /// `--mode target --op show`: every target.
    pub fn show_targets() -> Request {
        Request::new(Mode::Target, Op::Show)
    }

    /// `--mode portal --op show`: the addresses tgtd listens on.
    pub fn show_portals() -> Request {
        Request::new(Mode::Portal, Op::Show)
    }

    /// `--mode account --op show`: every account's user name.
    pub fn show_accounts() -> Request {
        Request::new(Mode::Account, Op::Show)
    }

    /// `--mode target --op new --tid T --targetname IQN`.
    pub fn new_target(tid: u32, iqn: &str) -> Result<Request, Invalid> {
        Request::new(Mode::Target, Op::New)
            .tid(tid)?
            .param(Param::TargetName(iqn.to_string()))
    }

    /// `--mode target --op delete --tid T [--force]`; forced, tgtd also drops the target's
    /// sessions.
    pub fn delete_target(tid: u32, force: bool) -> Result<Request, Invalid> {
        let mut r = Request::new(Mode::Target, Op::Delete).tid(tid)?;
        r.force = force;
        Ok(r)
    }

    /// `--mode target --op update --tid T --name state --value offline`: the target takes
    /// no logins and fails new commands (busy), so that its LUNs drain.
    pub fn offline_target(tid: u32) -> Result<Request, Invalid> {
        Request::new(Mode::Target, Op::Update)
            .tid(tid)?
            .param(Param::State("offline"))
    }

    /// `--mode logicalunit --op new --tid T --lun L --backing-store PATH`.
    pub fn new_lun(tid: u32, lun: u64, backing: &Path) -> Result<Request, Invalid> {
        if lun == u64::MAX {
            return Err(Invalid::Lun(lun));
        }
        let path = backing.to_str().ok_or(Invalid::NotUtf8)?;
        if !backing.is_absolute() {
            return Err(Invalid::NotAbsolute);
        }
        let mut r = Request::new(Mode::Device, Op::New).tid(tid)?;
        r.lun = Some(lun);
        r.param(Param::Path(path.to_string()))
    }

    /// `--mode target --op bind --tid T --initiator-name IQN`.
    pub fn bind_initiator_name(tid: u32, iqn: &str) -> Result<Request, Invalid> {
        Request::new(Mode::Target, Op::Bind)
            .tid(tid)?
            .param(Param::InitiatorName(iqn.to_string()))
    }

    /// `--mode account --op new --user U --password S`.
    pub fn new_account(user: &str, secret: &str) -> Result<Request, Invalid> {
        Request::new(Mode::Account, Op::New)
            .param(Param::User(user.to_string()))?
            .param(Param::Password(Secret(secret.to_string())))
    }

    /// `--mode account --op delete --user U`: also unbinds it from every target.
    pub fn delete_account(user: &str) -> Result<Request, Invalid> {
        Request::new(Mode::Account, Op::Delete).param(Param::User(user.to_string()))
    }

    /// `--mode account --op bind --tid T --user U [--outgoing]`.
    pub fn bind_account(tid: u32, user: &str, outgoing: bool) -> Result<Request, Invalid> {
        let mut r = Request::new(Mode::Account, Op::Bind).tid(tid)?;
        r.outgoing = outgoing;
        r.param(Param::User(user.to_string()))
    }

    /// The parameter text: `key=value` joined by ',', NUL-terminated (tgtd reads it as a C
    /// string); nothing at all without parameters, as tgtadm sends it.
    fn text(&self) -> Vec<u8> {
        let mut t = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                t.push(b',');
            }
            t.extend_from_slice(p.key().as_bytes());
            t.push(b'=');
            t.extend_from_slice(p.value().as_bytes());
        }
        if !t.is_empty() {
            t.push(0);
        }
        t
    }

    /// The bytes to send: header, then the parameter text.
    pub fn encode(&self) -> Vec<u8> {
        let text = self.text();
        let mut b = vec![0u8; REQUEST_LEN];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(off::MODE, &(self.mode as u32).to_ne_bytes());
        put(off::OP, &(self.op as u32).to_ne_bytes());
        put(off::LLD, LLD);
        // The builders cap the text at MAX_PARAMS, far below u32::MAX.
        put(off::LEN, &((REQUEST_LEN + text.len()) as u32).to_ne_bytes());
        put(off::TID, &self.tid.to_ne_bytes());
        put(off::LUN, &self.lun.unwrap_or(u64::MAX).to_ne_bytes());
        put(off::AC_DIR, &u32::from(self.outgoing).to_ne_bytes());
        put(off::FORCE, &u32::from(self.force).to_ne_bytes());
        b.extend_from_slice(&text);
        b
    }
}

/// A response header: tgtd's verdict and the length of what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// 0 on success, else an `enum tgtadm_errno` (see [`Code`]).
    pub status: u32,
    /// Header and text; tgtd sends no text with an error.
    pub len: u32,
}

impl Response {
    /// Reads a header.
    pub fn parse(b: &[u8; RESPONSE_LEN]) -> Response {
        Response {
            status: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            len: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Writes a header.
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[..4].copy_from_slice(&self.status.to_ne_bytes());
        b[4..].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// tgtd's error, if it refused the request.
    pub fn error(&self) -> Option<Code> {
        (self.status != 0).then(|| Code::from_raw(self.status))
    }

    /// Length of the text after the header; `None` if `len` is shorter than a header.
    pub fn text_len(&self) -> Option<usize> {
        (self.len as usize).checked_sub(RESPONSE_LEN)
    }
}

/// The text of a response: what tgtd printed, without the C string's terminating NUL.
pub fn text(body: &[u8]) -> String {
    let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// tgtd's error codes (`enum tgtadm_errno`); their Display is tgtadm's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    NoMemory,
    NoDriver,
    NoTarget,
    NoLun,
    NoSession,
    NoConnection,
    NoBinding,
    TargetExists,
    LunExists,
    BindingExists,
    AclExists,
    NoAcl,
    UserExists,
    NoUser,
    TooManyUsers,
    InvalidRequest,
    OutgoingAccountExists,
    TargetActive,
    LunActive,
    DriverActive,
    Unsupported,
    UnknownParam,
    PreventRemoval,
    /// A code this tgt version did not have.
    Other(u32),
}

/// In `enum tgtadm_errno` order, from 1 (0 is success).
const CODES: [(Code, &str); 24] = [
    (Code::Unknown, "unknown error"),
    (Code::NoMemory, "out of memory"),
    (Code::NoDriver, "can't find the driver"),
    (Code::NoTarget, "can't find the target"),
    (Code::NoLun, "can't find the logical unit"),
    (Code::NoSession, "can't find the session"),
    (Code::NoConnection, "can't find the connection"),
    (Code::NoBinding, "can't find the binding"),
    (Code::TargetExists, "this target already exists"),
    (Code::LunExists, "this logical unit number already exists"),
    (Code::BindingExists, "this binding already exists"),
    (Code::AclExists, "this access control rule already exists"),
    (Code::NoAcl, "this access control rule does not exist"),
    (Code::UserExists, "this account already exists"),
    (Code::NoUser, "can't find the account"),
    (Code::TooManyUsers, "too many accounts"),
    (Code::InvalidRequest, "invalid request"),
    (
        Code::OutgoingAccountExists,
        "this target already has an outgoing account",
    ),
    (Code::TargetActive, "this target is still active"),
    (Code::LunActive, "this logical unit is still active"),
    (Code::DriverActive, "this driver is busy"),
    (Code::Unsupported, "this operation isn't supported"),
    (Code::UnknownParam, "unknown parameter"),
    (Code::PreventRemoval, "this device has Prevent Removal set"),
];

impl Code {
    /// The code for a nonzero status.
    pub fn from_raw(raw: u32) -> Code {
        match raw.checked_sub(1).and_then(|i| CODES.get(i as usize)) {
            Some((c, _)) => *c,
            None => Code::Other(raw),
        }
    }

    /// The status tgtd sends for it.
    pub fn raw(self) -> u32 {
        match self {
            Code::Other(raw) => raw,
            c => CODES
                .iter()
                .position(|(k, _)| *k == c)
                .map_or(0, |i| i as u32 + 1),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match CODES.iter().find(|(c, _)| c == self) {
            Some((_, text)) => f.write_str(text),
            None => write!(f, "tgtd error {}", self.raw()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tgt/testdata")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A captured response: its header, parsed and emitted again, and its text.
    fn response(name: &str) -> (Response, String) {
        let b = fixture(name);
        let head: [u8; RESPONSE_LEN] = b[..RESPONSE_LEN].try_into().unwrap();
        let r = Response::parse(&head);
        assert_eq!(r.encode(), head, "{name}");
        assert_eq!(r.len as usize, b.len(), "{name}: length");
        assert_eq!(r.text_len(), Some(b.len() - RESPONSE_LEN));
        (r, text(&b[RESPONSE_LEN..]))
    }

    const T: &str = "iqn.2024-01.org.terra:node1";
    const A: &str = "iqn.2024-01.org.terra:init-a";

    #[test]
    fn requests_match_tgtadm_bytes() {
        let cases = [
            ("sys_show.req", Request::show_system()),
            ("target_show.req", Request::show_targets()),
            ("portal_show.req", Request::show_portals()),
            ("account_show.req", Request::show_accounts()),
            ("target_new.req", Request::new_target(1, T).unwrap()),
            (
                "lun_new.req",
                Request::new_lun(1, 1, Path::new("/tmp/tgtcap/lun.img")).unwrap(),
            ),
            ("bind_name.req", Request::bind_initiator_name(1, A).unwrap()),
            (
                "account_new.req",
                Request::new_account("alice", "s3cret,with=comma").unwrap(),
            ),
            (
                "account_bind.req",
                Request::bind_account(1, "alice", false).unwrap(),
            ),
            (
                "account_bind_outgoing.req",
                Request::bind_account(1, "bob", true).unwrap(),
            ),
            (
                "account_delete.req",
                Request::delete_account("bob").unwrap(),
            ),
            (
                "target_delete_missing.req",
                Request::delete_target(7, true).unwrap(),
            ),
            ("target_offline.req", Request::offline_target(2).unwrap()),
        ];
        for (name, req) in cases {
            assert_eq!(req.encode(), fixture(name), "{name}");
        }
    }

    #[test]
    fn errors_read_as_tgtadm_prints_them() {
        let (r, t) = response("target_new_dup.rsp");
        assert_eq!(r.error(), Some(Code::TargetExists));
        assert_eq!(Code::TargetExists.to_string(), "this target already exists");
        assert!(t.is_empty());
        let (r, _) = response("target_delete_missing.rsp");
        assert_eq!(r.error(), Some(Code::NoTarget));
        assert_eq!(r.error().unwrap().to_string(), "can't find the target");
        for name in [
            "sys_show.rsp",
            "target_show.rsp",
            "portal_show.rsp",
            "account_show.rsp",
        ] {
            let (r, text) = response(name);
            assert_eq!(r.error(), None);
            assert!(!text.is_empty() && !text.ends_with('\0'), "{name}");
        }
        let (r, _) = response("ok.rsp");
        assert_eq!((r.error(), r.text_len()), (None, Some(0)));
        for raw in 1..=25 {
            assert_eq!(Code::from_raw(raw).raw(), raw);
        }
        assert_eq!(Code::from_raw(25), Code::Other(25));
        assert_eq!(Code::from_raw(24), Code::PreventRemoval);
        assert_eq!(Code::Other(99).to_string(), "tgtd error 99");
        let short = Response { status: 0, len: 3 };
        assert_eq!(short.text_len(), None);
    }

    #[test]
    fn refuses_what_tgtd_would_misread() {
        use Invalid::*;
        let p = Path::new;
        assert_eq!(Request::new_target(0, T), Err(Tid(0)));
        assert_eq!(Request::delete_target(1 << 31, true), Err(Tid(1 << 31)));
        assert!(Request::new_target(i32::MAX as u32, T).is_ok());
        assert_eq!(Request::new_target(1, ""), Err(Empty("targetname")));
        let ch = |field, ch| Err(Char { field, ch });
        assert_eq!(Request::new_target(1, "iqn.a,b"), ch("targetname", ','));
        assert_eq!(Request::new_target(1, "iqn.a\nb"), ch("targetname", '\n'));
        // strstr would find the key inside the name and open the target to everyone.
        assert_eq!(
            Request::bind_initiator_name(1, "iqn.ainitiator-address=ALL"),
            ch("initiator-name", '=')
        );
        assert_eq!(
            Request::bind_initiator_name(1, "iqn.a b"),
            ch("initiator-name", ' ')
        );
        assert_eq!(Request::new_lun(1, 1, p("img")), Err(NotAbsolute));
        assert_eq!(Request::new_lun(1, 1, p("/a,b")), ch("path", ','));
        assert_eq!(Request::new_lun(1, u64::MAX, p("/a")), Err(Lun(u64::MAX)));
        assert!(Request::new_lun(1, 1, p("/with space/x=y")).is_ok());
        {
            use std::os::unix::ffi::OsStrExt;
            let raw = std::ffi::OsStr::from_bytes(b"/\xff");
            assert_eq!(Request::new_lun(1, 1, Path::new(raw)), Err(NotUtf8));
        }
        assert_eq!(Request::new_account("a,b", "s"), ch("user", ','));
        assert_eq!(Request::new_account("a", ""), Err(Empty("password")));
        assert_eq!(Request::new_account("a", "x\0y"), ch("password", '\0'));
        assert!(Request::new_account("a", "sp ace,=;\"'").is_ok());
        let long = "x".repeat(MAX_PARAMS);
        assert!(matches!(Request::new_account("a", &long), Err(TooLong(_))));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let r = Request::new_account("alice", "hunter2-very-secret").unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("alice") && dbg.contains("<redacted>"), "{dbg}");
        let e = Request::new_account("alice", "hunter2\0").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }
}
