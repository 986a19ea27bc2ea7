//! The keeper's loop: wait for a connection error (or notice one in sysfs), recover, and
//! step aside once the system runs its own iscsid.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::relogin;
use super::{Kept, LOG};
use crate::iscsi::netlink::{self, Events, Netlink};
use crate::iscsi::sys::KernelEvent;

/// How often the keeper looks at sysfs and for iscsid when no event comes.
const TICK: Duration = Duration::from_secs(5);
/// First pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause while the kernel still holds the I/O: the writes wait at most this long
/// past the target's return (plus the login). A connect to a target that is away costs one
/// SYN, so 1 s (iscsid waits 3 s between attempts) is cheap.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Pause once the recovery timeout has passed (the I/O fails; a login still brings the
/// disk back, so the keeper keeps trying, slowly).
const LATE_PAUSE: Duration = Duration::from_secs(30);

/// Where the keeper reports: the kernel log (so the console) and [`LOG`].
pub struct Journal {
    kmsg: Option<File>,
    file: Option<File>,
}

impl Journal {
    /// Opens /dev/kmsg and [`LOG`] (mode 0600); either may be missing.
    pub fn open() -> Self {
        Journal {
            kmsg: std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .ok(),
            file: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(LOG)
                .ok(),
        }
    }

    /// One line at syslog priority `prio` (3 error, 4 warning, 5 notice, 6 info).
    pub fn say(&mut self, prio: u8, msg: &str) {
        if let Some(k) = &mut self.kmsg {
            let _ = k.write_all(format!("<{prio}>terra-keeper: {msg}\n").as_bytes());
        }
        if let Some(f) = &mut self.file {
            let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
                .unwrap_or(0.0);
            let _ = f.write_all(format!("[{t:>11.3}] {msg}\n").as_bytes());
        }
    }
}

/// Why the keeper should step aside: the system's own iscsid runs (it adopts the kernel's
/// sessions when it starts, and two daemons recovering one connection would fight). Its
/// PID file or a process named `iscsid`; the abstract socket `@ISCSIADM_ABSTRACT_NAMESPACE`
/// alone is not enough, since systemd holds it for a socket-activated iscsid that has not
/// started (and adopted nothing) yet.
pub fn iscsid_running(proc: &Path, run: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // Only root's processes count: any user can name a process `iscsid`, and a keeper
    // that stepped aside for it would leave the root disk without recovery.
    let roots = |pid: &str| std::fs::metadata(proc.join(pid)).is_ok_and(|m| m.uid() == 0);
    if let Ok(pid) = std::fs::read_to_string(run.join("iscsid.pid")) {
        let pid = pid.trim();
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && roots(pid) {
            return Some(format!(
                "iscsid runs (pid {pid}, {}/iscsid.pid)",
                run.display()
            ));
        }
    }
    let dir = std::fs::read_dir(proc).ok()?;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if roots(pid)
            && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "iscsid")
        {
            return Some(format!("iscsid runs (pid {pid})"));
        }
    }
    None
}

fn iscsid() -> Option<String> {
    iscsid_running(Path::new("/proc"), Path::new("/run"))
}

/// A session whose connection failed: when it failed, and when to try again.
struct Recovery {
    start: Instant,
    next: Instant,
    pause: Duration,
    late: bool,
    attempts: u64,
    tmo: Duration,
}

/// A kept session and, while its connection is down, its recovery.
struct Watched {
    k: Kept,
    down: Option<Recovery>,
}

/// Runs until iscsid takes over or every session is gone. Returns the exit code.
///
/// Each failed session recovers on its own schedule: one login attempt at a time for
/// whichever session is due, so a target that stays away does not hold up another whose
/// target came back.
pub fn run(sessions: Vec<Kept>, j: &mut Journal, sys: &Path) -> i32 {
    let (mut nl, mut events) = match (Netlink::open(sys, "tcp"), Events::open()) {
        (Ok(nl), Ok(ev)) => (nl, ev),
        (Err(e), _) | (_, Err(e)) => {
            j.say(3, &format!("cannot open NETLINK_ISCSI: {e}; exiting"));
            return 1;
        }
    };
    for k in &sessions {
        j.say(
            6,
            &format!(
                "keeping session {} (host{}) with {} at {}",
                k.sid, k.host, k.target, k.portal
            ),
        );
    }
    let mut sessions: Vec<Watched> = sessions
        .into_iter()
        .map(|k| Watched { k, down: None })
        .collect();
    let alive = |sid: u32| {
        sys.join(format!("class/iscsi_session/session{sid}"))
            .exists()
    };
    // Looked at before anything the keeper does to a session: iscsid adopting a session
    // drops its connection and logs in again, and the keeper hears that connection error
    // too; acting on it would fight iscsid over the session.
    let steps_aside = |sessions: &[Watched], j: &mut Journal| {
        let why = iscsid()?;
        let what = if sessions.iter().any(|w| w.down.is_some()) {
            "it takes over the recovery"
        } else {
            "it adopts the sessions"
        };
        j.say(5, &format!("{why}: {what}; the keeper exits"));
        Some(0)
    };
    if let Some(code) = steps_aside(&sessions, j) {
        return code;
    }
    loop {
        sessions.retain(|w| {
            let here = alive(w.k.sid);
            if !here {
                j.say(
                    5,
                    &format!("session {} with {} is gone", w.k.sid, w.k.target),
                );
            }
            here
        });
        if sessions.is_empty() {
            j.say(5, "no session left to keep; exiting");
            return 0;
        }
        // An error may have come before the keeper listened, or been lost (ENOBUFS).
        for w in sessions.iter_mut().filter(|w| w.down.is_none()) {
            if netlink::conn_state(sys, w.k.sid, w.k.cid).as_deref() == Some("failed") {
                w.down = Some(fail(&mut nl, sys, &w.k, "found failed in sysfs", j));
            }
        }
        // Wait for an error until the next attempt is due.
        let now = Instant::now();
        let wait = sessions
            .iter()
            .filter_map(|w| {
                w.down
                    .as_ref()
                    .map(|r| r.next.saturating_duration_since(now))
            })
            .min()
            .unwrap_or(TICK);
        let event = events.next(wait);
        if let Some(code) = steps_aside(&sessions, j) {
            return code;
        }
        match event {
            Ok(Some(KernelEvent::ConnError { sid, cid, error })) => {
                if let Some(w) = sessions
                    .iter_mut()
                    .find(|w| (w.k.sid, w.k.cid) == (sid, cid) && w.down.is_none())
                {
                    let why = format!("kernel error {error}");
                    w.down = Some(fail(&mut nl, sys, &w.k, &why, j));
                }
            }
            Ok(_) => {}
            Err(e) => {
                j.say(4, &format!("reading kernel events: {e}"));
                std::thread::sleep(wait.min(TICK));
            }
        }
        for w in sessions.iter_mut() {
            let due = w.down.as_ref().is_some_and(|r| r.next <= Instant::now());
            if due && attempt(&mut nl, &mut events, sys, w, j) {
                w.down = None;
            }
        }
    }
}

/// Session `k`'s connection failed: the kernel is told to hold its I/O for recovery, and
/// the first login attempt is due at once.
fn fail(nl: &mut Netlink, sys: &Path, k: &Kept, why: &str, j: &mut Journal) -> Recovery {
    j.say(
        4,
        &format!(
            "connection of session {} to {} at {} failed ({why}); logging in again",
            k.sid, k.target, k.portal
        ),
    );
    if let Err(e) = nl.stop_conn_for_recovery(k.sid, k.cid) {
        j.say(4, &format!("stopping connection {}:{}: {e}", k.sid, k.cid));
    }
    let now = Instant::now();
    Recovery {
        start: now,
        next: now,
        pause: FIRST_PAUSE,
        late: false,
        attempts: 0,
        tmo: recovery_tmo(sys, k.sid),
    }
}

/// The kernel's recovery timeout for session `sid` (seconds), as sysfs shows it.
fn recovery_tmo(sys: &Path, sid: u32) -> Duration {
    std::fs::read_to_string(sys.join(format!("class/iscsi_session/session{sid}/recovery_tmo")))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(120), |s| Duration::from_secs(s as u64))
}

/// One login attempt for `w`, whose connection is down; whether it is back. A failure
/// schedules the next attempt (pauses doubling up to [`MAX_PAUSE`], then [`LATE_PAUSE`]
/// once the recovery timeout has passed).
fn attempt(
    nl: &mut Netlink,
    events: &mut Events,
    sys: &Path,
    w: &mut Watched,
    j: &mut Journal,
) -> bool {
    let Some(r) = w.down.as_mut() else {
        return true;
    };
    let k = &mut w.k;
    r.attempts += 1;
    // Always TSIH 0, the same ISID: session reinstatement (RFC 7143 §6.3.5). At
    // ErrorRecoveryLevel 0 a connection failure is a session failure (§7.1.5): the kernel
    // has failed the old connection's commands (the SCSI layer sends them again with new
    // CmdSNs), so continuing the target's session (its TSIH) would leave it waiting for
    // CmdSNs that died with the connection. tgtd, for one, adds the new connection beside
    // the old one and keeps the session's ExpCmdSN.
    match relogin::attempt(nl, sys, k, 0) {
        Ok(new_tsih) => {
            j.say(
                5,
                &format!(
                    "session {} to {} at {} is back after {:.1} s ({} attempt(s); session reinstated, TSIH {} -> {new_tsih})",
                    k.sid,
                    k.target,
                    k.portal,
                    r.start.elapsed().as_secs_f64(),
                    r.attempts,
                    k.tsih
                ),
            );
            k.tsih = new_tsih;
            drain(events, k);
            return true;
        }
        Err(e) => {
            if r.attempts == 1 || r.attempts % 10 == 0 {
                j.say(
                    4,
                    &format!("session {}: attempt {}: {e}", k.sid, r.attempts),
                );
            }
        }
    }
    if !r.late && r.start.elapsed() >= r.tmo {
        r.late = true;
        j.say(
            3,
            &format!(
                "session {} still down after its recovery timeout ({} s): the kernel fails its I/O until it is back; retrying every {} s",
                k.sid,
                r.tmo.as_secs(),
                LATE_PAUSE.as_secs()
            ),
        );
    }
    r.next = Instant::now() + if r.late { LATE_PAUSE } else { r.pause };
    r.pause = (r.pause * 2).min(MAX_PAUSE);
    false
}

/// Drops the errors of `k`'s old connection still queued (from the outage and from failed
/// attempts), keeping other sessions' events.
fn drain(events: &mut Events, k: &Kept) {
    let mut keep = Vec::new();
    while let Ok(Some(e)) = events.next(Duration::ZERO) {
        match e {
            KernelEvent::ConnError { sid, cid, .. } if (sid, cid) == (k.sid, k.cid) => {}
            e => keep.push(e),
        }
    }
    for e in keep {
        events.defer(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iscsid_is_found_by_pid_file_or_name() {
        let d = tempfile::tempdir().unwrap();
        let (proc, run) = (d.path().join("proc"), d.path().join("run"));
        std::fs::create_dir_all(proc.join("42")).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(proc.join("42/comm"), "sh\n").unwrap();
        assert_eq!(iscsid_running(&proc, &run), None);
        std::fs::write(run.join("iscsid.pid"), "77\n").unwrap();
        assert_eq!(iscsid_running(&proc, &run), None, "a stale PID file");
        std::fs::create_dir_all(proc.join("77")).unwrap();
        assert!(iscsid_running(&proc, &run).unwrap().contains("pid 77"));
        std::fs::remove_file(run.join("iscsid.pid")).unwrap();
        // A user's process that calls itself iscsid does not count.
        std::fs::create_dir_all(proc.join("43")).unwrap();
        std::fs::write(proc.join("43/comm"), "iscsid\n").unwrap();
        std::os::unix::fs::chown(proc.join("43"), Some(1000), Some(1000)).unwrap();
        assert_eq!(iscsid_running(&proc, &run), None);
        std::fs::write(proc.join("42/comm"), "iscsid\n").unwrap();
        assert!(iscsid_running(&proc, &run).unwrap().contains("pid 42"));
    }
}
