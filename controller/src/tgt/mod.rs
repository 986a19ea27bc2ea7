//! tgtd, the iSCSI target each node's disk is served from: its management protocol spoken
//! directly over its control socket, as `tgtadm` does, so that a CHAP secret never lands
//! on a command line (`/proc/*/cmdline` is world-readable), and [`spawn_tgtd`] to start it.
//!
//! tgtd answers one request per connection on its event loop; requests from several
//! threads are serialized there.

pub mod show;
pub mod wire;

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use show::{Session, Target};
pub use wire::{Code, Invalid};
use wire::{Request, Response};

/// Where tgtd puts its control socket (tgt's `TGT_IPC_DIR`): `socket.<control port>`.
pub const SOCKET_DIR: &str = "/var/run/tgtd";

/// How long one request may take. tgtd answers from its event loop, so even a new LUN
/// (which opens its backing file) answers in milliseconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// tgtd's whole `show` for thousands of targets is a few MiB; more means a broken answer.
const MAX_ANSWER: usize = 64 << 20;

/// How long [`Tgt::delete_target`] waits for a LUN's commands in flight to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`spawn_tgtd`] waits for tgtd to answer.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// tgtd reads `-C` into a C `short`.
const MAX_CONTROL_PORT: u16 = i16::MAX as u16;

/// A tgtd, by its control port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tgt {
    control_port: u16,
}

/// What a request was for: names the target, LUN, path or user an error is about (never
/// a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Ping,
    Targets,
    Portals,
    Accounts,
    NewTarget {
        tid: u32,
        iqn: String,
    },
    DeleteTarget {
        tid: u32,
    },
    NewLun {
        tid: u32,
        lun: u64,
        backing: PathBuf,
    },
    BindInitiatorName {
        tid: u32,
        iqn: String,
    },
    NewAccount {
        user: String,
    },
    DeleteAccount {
        user: String,
    },
    BindAccount {
        tid: u32,
        user: String,
        outgoing: bool,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Ping => f.write_str("show system"),
            Operation::Targets => f.write_str("show targets"),
            Operation::Portals => f.write_str("show portals"),
            Operation::Accounts => f.write_str("show accounts"),
            Operation::NewTarget { tid, iqn } => write!(f, "new target {tid} ({iqn})"),
            Operation::DeleteTarget { tid } => write!(f, "delete target {tid}"),
            Operation::NewLun { tid, lun, backing } => {
                write!(f, "new LUN {lun} of target {tid} on {}", backing.display())
            }
            Operation::BindInitiatorName { tid, iqn } => {
                write!(f, "bind initiator {iqn} to target {tid}")
            }
            Operation::NewAccount { user } => write!(f, "new account {user}"),
            Operation::DeleteAccount { user } => write!(f, "delete account {user}"),
            Operation::BindAccount {
                tid,
                user,
                outgoing,
            } => {
                let dir = if *outgoing { "outgoing" } else { "incoming" };
                write!(f, "bind {dir} account {user} to target {tid}")
            }
        }
    }
}

/// Why talking to tgtd, or starting it, failed.
#[derive(Debug)]
pub enum TgtError {
    /// Refused before anything was sent.
    Invalid { op: Operation, reason: Invalid },
    /// tgtd's control socket does not answer (tgtd is not running on that control port).
    Connect {
        op: Operation,
        socket: PathBuf,
        source: io::Error,
    },
    /// The exchange broke off midway (or timed out).
    Io {
        op: Operation,
        socket: PathBuf,
        source: io::Error,
    },
    /// tgtd refused the request.
    Tgtd { op: Operation, code: Code },
    /// tgtd's answer does not read.
    Malformed { op: Operation, detail: String },
    /// [`spawn_tgtd`]: tgtd only takes control ports up to 32767.
    ControlPort(u16),
    /// [`spawn_tgtd`]: a tgtd already answers on this control port.
    AlreadyRunning { control_port: u16 },
    /// [`spawn_tgtd`]: the log file could not be opened.
    Log { path: PathBuf, source: io::Error },
    /// [`spawn_tgtd`]: tgtd could not be executed.
    Spawn { source: io::Error },
    /// [`spawn_tgtd`]: tgtd exited, did not answer in time, or does not serve the portal
    /// (tgtd falls back to 0.0.0.0:3260 when it cannot bind the one it was given); it was
    /// killed if still running. `log` ends with what tgtd printed.
    NotStarted {
        control_port: u16,
        portal: SocketAddr,
        why: String,
        log: String,
    },
}

impl TgtError {
    /// tgtd's error code, when tgtd refused the request (e.g. [`Code::TargetExists`]).
    pub fn code(&self) -> Option<Code> {
        match self {
            TgtError::Tgtd { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for TgtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TgtError::Invalid { op, reason } => write!(f, "tgtd: {op}: {reason}"),
            TgtError::Connect { op, socket, source } => {
                write!(
                    f,
                    "tgtd: {op}: cannot connect to {}: {source}",
                    socket.display()
                )
            }
            TgtError::Io { op, socket, source } => {
                write!(f, "tgtd: {op}: on {}: {source}", socket.display())
            }
            TgtError::Tgtd { op, code } => write!(f, "tgtd: {op}: {code}"),
            TgtError::Malformed { op, detail } => write!(f, "tgtd: {op}: {detail}"),
            TgtError::ControlPort(p) => {
                write!(f, "tgtd: control port {p} is above {MAX_CONTROL_PORT}")
            }
            TgtError::AlreadyRunning { control_port } => {
                write!(
                    f,
                    "tgtd: one already answers on control port {control_port}"
                )
            }
            TgtError::Log { path, source } => {
                write!(f, "tgtd: log {}: {source}", path.display())
            }
            TgtError::Spawn { source } => write!(f, "tgtd: cannot run it: {source}"),
            TgtError::NotStarted {
                control_port,
                portal,
                why,
                log,
            } => write!(
                f,
                "tgtd (control port {control_port}, portal {portal}): {why}; its log ends:\n{log}"
            ),
        }
    }
}

impl std::error::Error for TgtError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TgtError::Invalid { reason, .. } => Some(reason),
            TgtError::Connect { source, .. }
            | TgtError::Io { source, .. }
            | TgtError::Log { source, .. }
            | TgtError::Spawn { source } => Some(source),
            _ => None,
        }
    }
}

impl Tgt {
    /// The tgtd started with `-C control_port`.
    pub fn new(control_port: u16) -> Tgt {
        Tgt { control_port }
    }

    /// The control port it was started with (`-C`).
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// Its control socket.
    pub fn socket_path(&self) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("socket.{}", self.control_port))
    }

    /// tgtd answers on its control socket (a `sys show`).
    pub fn ping(&self) -> Result<(), TgtError> {
        self.call(Operation::Ping, Ok(Request::show_system()))
            .map(drop)
    }

    /// Every target with its LUNs, ACLs, accounts and sessions.
    pub fn targets(&self) -> Result<Vec<Target>, TgtError> {
        let op = Operation::Targets;
        let text = self.call(op.clone(), Ok(Request::show_targets()))?;
        show::parse_targets(&text).map_err(|e| TgtError::Malformed {
            op,
            detail: e.to_string(),
        })
    }

    /// The addresses tgtd listens on for iSCSI.
    pub fn portals(&self) -> Result<Vec<SocketAddr>, TgtError> {
        let op = Operation::Portals;
        let text = self.call(op.clone(), Ok(Request::show_portals()))?;
        show::parse_portals(&text).map_err(|e| TgtError::Malformed {
            op,
            detail: e.to_string(),
        })
    }

    /// A target named `iqn`; it has no LUN and lets no initiator in yet.
    pub fn new_target(&self, tid: u32, iqn: &str) -> Result<(), TgtError> {
        let op = Operation::NewTarget {
            tid,
            iqn: iqn.to_string(),
        };
        self.call(op, Request::new_target(tid, iqn)).map(drop)
    }

    /// Deletes a target even with sessions (`--force`: tgtd drops them). tgtd refuses
    /// while a LUN has commands in flight, so the target goes offline first (it fails new
    /// commands) and the delete is retried until they drain, for at most 5 s; past that
    /// the target stays, offline, and [`Code::LunActive`] is returned.
    pub fn delete_target(&self, tid: u32) -> Result<(), TgtError> {
        let op = Operation::DeleteTarget { tid };
        self.call(op.clone(), Request::offline_target(tid))?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            match self.call(op.clone(), Request::delete_target(tid, true)) {
                Err(e) if e.code() == Some(Code::LunActive) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => return r.map(drop),
            }
        }
    }

    /// LUN `lun` of target `tid` on the file or block device `backing` (an absolute path).
    pub fn new_lun(&self, tid: u32, lun: u64, backing: &Path) -> Result<(), TgtError> {
        let op = Operation::NewLun {
            tid,
            lun,
            backing: backing.to_path_buf(),
        };
        self.call(op, Request::new_lun(tid, lun, backing)).map(drop)
    }

    /// Lets initiator `iqn` log in to target `tid` (tgtd's `--initiator-name` ACL); with
    /// only name ACLs, no other initiator may.
    pub fn bind_initiator_name(&self, tid: u32, iqn: &str) -> Result<(), TgtError> {
        let op = Operation::BindInitiatorName {
            tid,
            iqn: iqn.to_string(),
        };
        self.call(op, Request::bind_initiator_name(tid, iqn))
            .map(drop)
    }

    /// A CHAP account. The secret goes only over the control socket; no error or Debug
    /// output holds it.
    pub fn new_account(&self, user: &str, secret: &str) -> Result<(), TgtError> {
        let op = Operation::NewAccount {
            user: user.to_string(),
        };
        self.call(op, Request::new_account(user, secret)).map(drop)
    }

    /// Deletes an account, unbinding it from every target.
    pub fn delete_account(&self, user: &str) -> Result<(), TgtError> {
        let op = Operation::DeleteAccount {
            user: user.to_string(),
        };
        self.call(op, Request::delete_account(user)).map(drop)
    }

    /// Binds account `user` to target `tid`: incoming (the initiator must authenticate with
    /// it) or outgoing (the target authenticates to the initiator; one per target).
    pub fn bind_account(&self, tid: u32, user: &str, outgoing: bool) -> Result<(), TgtError> {
        let op = Operation::BindAccount {
            tid,
            user: user.to_string(),
            outgoing,
        };
        self.call(op, Request::bind_account(tid, user, outgoing))
            .map(drop)
    }

    /// Every account's user name.
    pub fn accounts(&self) -> Result<Vec<String>, TgtError> {
        let text = self.call(Operation::Accounts, Ok(Request::show_accounts()))?;
        Ok(show::parse_accounts(&text))
    }

    /// Sends `req` and returns tgtd's text.
    fn call(&self, op: Operation, req: Result<Request, Invalid>) -> Result<String, TgtError> {
        self.exchange(op, req).map(|(text, _)| text)
    }

    /// Sends `req`; returns tgtd's text and the PID of the process that answered (the
    /// socket's peer credentials: the process that listens on it).
    fn exchange(
        &self,
        op: Operation,
        req: Result<Request, Invalid>,
    ) -> Result<(String, u32), TgtError> {
        let req = match req {
            Ok(r) => r,
            Err(reason) => return Err(TgtError::Invalid { op, reason }),
        };
        let socket = self.socket_path();
        let mut s = match UnixStream::connect(&socket) {
            Ok(s) => s,
            Err(source) => return Err(TgtError::Connect { op, socket, source }),
        };
        let answer = (|| {
            s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            let peer = rustix::net::sockopt::socket_peercred(&s)?.pid;
            s.write_all(&req.encode())?;
            let mut head = [0u8; wire::RESPONSE_LEN];
            s.read_exact(&mut head)?;
            let head = Response::parse(&head);
            let mut body = Vec::new();
            if head.error().is_none() {
                let n = head.text_len().filter(|&n| n <= MAX_ANSWER);
                body.resize(n.unwrap_or(0), 0);
                s.read_exact(&mut body)?;
            }
            Ok::<_, io::Error>((head, body, peer.as_raw_pid().unsigned_abs()))
        })();
        let (head, body, peer) = match answer {
            Ok(a) => a,
            Err(source) => return Err(TgtError::Io { op, socket, source }),
        };
        if let Some(code) = head.error() {
            return Err(TgtError::Tgtd { op, code });
        }
        match head.text_len() {
            Some(n) if n <= MAX_ANSWER => Ok((wire::text(&body), peer)),
            _ => Err(TgtError::Malformed {
                op,
                detail: format!("an answer of {} bytes", head.len),
            }),
        }
    }
}

/// Starts tgtd detached, serving iSCSI on `portal` only, its output appended to `log`, and
/// returns its PID once it answers on `control_port` (at most 5 s).
///
/// tgtd runs in a session of its own (setsid), so it outlives the caller: nodes keep their
/// disks while the controller restarts. It stays the caller's child while the caller runs:
/// reap it (waitpid) if it stops first.
pub fn spawn_tgtd(control_port: u16, portal: SocketAddr, log: &Path) -> Result<u32, TgtError> {
    if control_port > MAX_CONTROL_PORT {
        return Err(TgtError::ControlPort(control_port));
    }
    let tgt = Tgt::new(control_port);
    // A second tgtd would fail on the socket's lock, but the first one would answer the
    // readiness check below in its place.
    if tgt.ping().is_ok() {
        return Err(TgtError::AlreadyRunning { control_port });
    }
    let open = || OpenOptions::new().create(true).append(true).open(log);
    let (out, err) = match open().and_then(|o| Ok((o.try_clone()?, o))) {
        Ok(f) => f,
        Err(source) => {
            return Err(TgtError::Log {
                path: log.to_path_buf(),
                source,
            })
        }
    };
    let mut cmd = Command::new("tgtd");
    cmd.args(["-f", "-C", &control_port.to_string(), "--iscsi"])
        .arg(format!("portal={portal}"))
        // tgtd would put its socket there instead of where Tgt looks.
        .env_remove("TGT_IPC_SOCKET")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure runs in the forked child before exec; setsid(2) is
    // async-signal-safe, and the closure allocates nothing and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| TgtError::Spawn { source })?;
    let pid = child.id();
    let not_started = |why: String| TgtError::NotStarted {
        control_port,
        portal,
        why,
        log: log_tail(log),
    };
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    let why = loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(not_started(format!("it exited ({status})"))),
            Ok(None) => {}
            Err(e) => break format!("cannot wait for PID {pid}: {e}"),
        }
        // Answered by our tgtd, not by one that took the control port meanwhile.
        if let Ok((_, peer)) = tgt.exchange(Operation::Ping, Ok(Request::show_system())) {
            if peer == pid {
                // tgtd serves requests only from its event loop, after setting up portals.
                match tgt.portals() {
                    Ok(p) if p == [portal] => return Ok(pid),
                    Ok(p) => break format!("it listens on {p:?} instead"),
                    Err(e) => break e.to_string(),
                }
            }
        }
        if Instant::now() >= deadline {
            break format!("no answer within {SPAWN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // By PID: other tgtds may serve other control ports.
    let _ = child.kill();
    let _ = child.wait();
    Err(not_started(why))
}

/// The last lines of tgtd's log, for an error.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_follows_the_control_port() {
        assert_eq!(
            Tgt::new(16002).socket_path(),
            Path::new("/var/run/tgtd/socket.16002")
        );
    }

    #[test]
    fn errors_name_what_they_are_about() {
        let e = TgtError::Tgtd {
            op: Operation::DeleteTarget { tid: 7 },
            code: Code::NoTarget,
        };
        assert_eq!(
            e.to_string(),
            "tgtd: delete target 7: can't find the target"
        );
        assert_eq!(e.code(), Some(Code::NoTarget));
        let e = Tgt::new(1).new_lun(3, 1, Path::new("lun.img")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tgtd: new LUN 1 of target 3 on lun.img: the backing store's path is not absolute"
        );
    }

    #[test]
    fn invalid_secrets_are_not_echoed() {
        let e = Tgt::new(1).new_account("alice", "hunter2\0").unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn spawn_refuses_control_ports_tgtd_cannot_take() {
        let e = spawn_tgtd(
            40000,
            "127.0.0.1:3260".parse().unwrap(),
            Path::new("/dev/null"),
        );
        assert!(matches!(e, Err(TgtError::ControlPort(40000))));
    }
}
