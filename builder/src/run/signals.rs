//! SIGINT, SIGTERM and SIGHUP while `terra run` runs: noted instead of ending the process,
//! so that the VM is stopped and its disk removed before terra exits. A signal during the
//! install lets the install finish its own cleanup (loop devices, mounts) and is seen
//! after it; during the boot it stops QEMU at once (SIGTERM to the VM's PID, sent from the
//! handler).

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The signals noted.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The last signal noted, 0 for none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// QEMU's PID while it runs, 0 otherwise.
static VM: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
    let pid = VM.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes no pointers.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

/// The handlers, installed while this lives; the previous dispositions come back on drop.
pub struct Caught {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Caught {
    /// Installs the handlers (with `SA_RESTART`: the install's reads and writes go on).
    pub fn install() -> io::Result<Caught> {
        CAUGHT.store(0, Ordering::SeqCst);
        VM.store(0, Ordering::SeqCst);
        let mut caught = Caught {
            previous: Vec::new(),
        };
        for sig in SIGNALS {
            // SAFETY: sigaction is plain data; all-zero is a valid value to fill in.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: sa_mask is a valid sigset_t owned by `action`.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: as above; `old` is written by sigaction.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live sigaction values; the handler only touches
            // atomics and calls kill(2), both async-signal-safe.
            if unsafe { libc::sigaction(sig, &action, &mut old) } != 0 {
                return Err(io::Error::last_os_error());
            }
            caught.previous.push((sig, old));
        }
        Ok(caught)
    }

    /// The signal noted so far, if any.
    pub fn signal(&self) -> Option<i32> {
        match CAUGHT.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// QEMU runs as `pid`: a signal from now on stops it; one noted before stops it now.
    pub fn watch(&self, pid: u32) {
        let pid = i32::try_from(pid).unwrap_or(0);
        VM.store(pid, Ordering::SeqCst);
        if pid > 0 && self.signal().is_some() {
            stop(pid);
        }
    }

    /// QEMU has exited (and been waited for).
    pub fn unwatch(&self) {
        VM.store(0, Ordering::SeqCst);
    }
}

impl Drop for Caught {
    fn drop(&mut self) {
        VM.store(0, Ordering::SeqCst);
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: `old` is the disposition sigaction returned for `sig`.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
    }
}

/// SIGTERM to `pid` (QEMU then restores the terminal and exits).
fn stop(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// A signal's name as messages show it.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}
