//! The session keeper: a small process stage0 leaves behind to re-establish the iSCSI
//! root's connections after the switch, for systems that run no iscsid (ARCHITECTURE.md
//! §2.5).
//!
//! At ErrorRecoveryLevel 0 the kernel does not reconnect by itself: it blocks the disk's
//! I/O, sends ISCSI_KEVENT_CONN_ERROR to the session daemon, and fails the I/O once the
//! recovery timeout passes. Before exec'ing the real init, stage0 copies itself to
//! [`PROGRAM`] and starts it as `@keeper` (a child of PID 1 survives PID 1's exec), with
//! what a new login needs written to its stdin ([`wire`]): portal, names, ISID, TSIH and
//! CHAP secrets, held in memory only. The keeper ([`main`]) listens for connection errors
//! and logs in again into the same kernel session ([`relogin`]), so the disk and the root
//! on it never go away. It exits when the system's own iscsid runs ([`watch`]).

mod relogin;
mod watch;
pub mod wire;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::chap::Chap;
use super::login::LoginConfig;
use super::target::Portal;
use super::Attached;

pub use relogin::RecoveryError;

/// The keeper's program in the real root's /run: the initramfs's own keeper binary
/// ([`crate::layout::KEEPER`], copied by [`place`] before the switch).
pub const PROGRAM: &str = "/run/terra/keeper";
/// What the keeper says, one line per event, with the monotonic time (no secrets).
pub const LOG: &str = "/run/terra/keeper.log";
/// The keeper's argv\[0\]. The `@` asks systemd to spare it when it kills the remaining
/// processes at shutdown (systemd's "root storage daemon" convention), so the root's
/// connection is kept until the root is unmounted.
pub const ARGV0: &str = "@keeper";

/// A kernel session the keeper looks after, with what a new login needs.
#[derive(Debug, Clone)]
pub struct Kept {
    /// iSCSI session id in the kernel.
    pub sid: u32,
    /// Its connection id.
    pub cid: u32,
    /// SCSI host number.
    pub host: u32,
    /// The portal the target was named with (redirects are followed again).
    pub portal: Portal,
    /// InitiatorName.
    pub initiator: String,
    /// TargetName.
    pub target: String,
    /// The session's ISID.
    pub isid: [u8; 6],
    /// The TSIH the target gave the session.
    pub tsih: u16,
    /// Bound on one login.
    pub timeout: Duration,
    /// CHAP (secrets included), limited to the algorithm the target accepted.
    pub chap: Option<Chap>,
}

impl Kept {
    /// The login that re-establishes this session (TSIH 0 until the caller sets it).
    pub fn login_config(&self) -> LoginConfig {
        let mut cfg = LoginConfig::new(&self.initiator, &self.target);
        cfg.isid = self.isid;
        cfg.chap = self.chap.clone();
        cfg.timeout = self.timeout.min(Duration::from_secs(10));
        cfg
    }
}

/// Before the switch, while the initramfs is still there: copies its keeper binary to
/// [`PROGRAM`] (in /run, which the switch carries into the real root) when there are
/// sessions to keep and the image has one. The keeper lives as long as the root, and its
/// program's mapped pages are its memory: the keeper alone is a fraction of stage0.
pub fn place(attached: &[Attached]) {
    let own = Path::new("/").join(crate::layout::KEEPER);
    if attached.is_empty() {
        return;
    }
    if !own.is_file() {
        log::error!(
            "iscsi: the image has no session keeper ({}): build it beside stage0 (cargo build --bin keeper)",
            own.display()
        );
        return;
    }
    if let Err(e) = write_program(&own) {
        log::error!("iscsi: cannot copy {} to {PROGRAM}: {e}", own.display());
        let _ = std::fs::remove_file(PROGRAM);
    }
}

/// Leaves a keeper for the sessions of `attached`, after the switch (so it lives in the
/// real root) and before the exec of the real init (so it is PID 1's child, which outlives
/// the exec). Best effort: a keeper that cannot start is logged, the boot goes on.
pub fn leave(attached: &[Attached]) {
    if attached.is_empty() {
        return;
    }
    match spawn(attached) {
        Ok(pid) => log::info!(
            "iscsi: keeper {PROGRAM} (pid {pid}) watches {} session(s); log {LOG}",
            attached.len()
        ),
        Err(e) => log::error!(
            "iscsi: cannot leave the session keeper ({e}): a dropped connection will not come back without iscsid"
        ),
    }
}

/// Copies `from` to [`PROGRAM`], mode 0700.
fn write_program(from: &Path) -> std::io::Result<()> {
    if let Some(dir) = Path::new(PROGRAM).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, PROGRAM)?;
    std::fs::set_permissions(PROGRAM, std::fs::Permissions::from_mode(0o700))
}

fn spawn(attached: &[Attached]) -> std::io::Result<u32> {
    // Placed before the switch ([`place`]), or there is none to start.
    if !Path::new(PROGRAM).is_file() {
        return Err(std::io::Error::other(format!("{PROGRAM} was not placed")));
    }
    let mut child = Command::new(PROGRAM)
        .arg0(ARGV0)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let sessions: Vec<Kept> = attached.iter().map(|a| a.keep.clone()).collect();
    let mut bytes = wire::encode(&sessions);
    let written = match child.stdin.take() {
        Some(mut pipe) => pipe.write_all(&bytes),
        None => Err(std::io::Error::other("no pipe to the keeper")),
    };
    zero(&mut bytes);
    written?;
    // Not waited for: once PID 1 is the real init, it reaps the keeper if it ever exits.
    Ok(child.id())
}

fn zero(bytes: &mut [u8]) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(bytes);
}

/// The keeper's entry point (stage0 run as `keeper` or `@keeper`). Returns the exit code.
pub fn main() -> i32 {
    let mut journal = watch::Journal::open();
    // Its own session: no terminal's hangup reaches it. SIGHUP and SIGTERM stay blocked
    // (pending, never delivered): a sysvinit-style "kill everything" must not take the
    // root's connection down while the root is still mounted. SIGKILL still ends it.
    let _ = nix::unistd::setsid();
    let mut blocked = nix::sys::signal::SigSet::empty();
    blocked.add(nix::sys::signal::Signal::SIGHUP);
    blocked.add(nix::sys::signal::Signal::SIGTERM);
    let _ = blocked.thread_block();
    let mut buf = Vec::new();
    let read = std::io::stdin().take(1 << 16).read_to_end(&mut buf);
    let sessions = read
        .map_err(|e| format!("cannot read the state from stdin: {e}"))
        .and_then(|_| wire::decode(&buf));
    zero(&mut buf);
    let sessions = match sessions {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            journal.say(4, "no session to keep; exiting");
            return 1;
        }
        Err(e) => {
            journal.say(3, &format!("{e}; exiting"));
            return 1;
        }
    };
    watch::run(sessions, &mut journal, Path::new("/sys"))
}
