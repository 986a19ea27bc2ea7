//! Phase 1, early: pseudo filesystems, logging, child reaping.

use std::fmt;
use std::fs;
use std::io::Write;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A pseudo filesystem that could not be mounted.
#[derive(Debug)]
pub struct EarlyError {
    /// Mount point.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// The kernel's answer.
    pub errno: Errno,
}

impl fmt::Display for EarlyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot mount {} on {}: {}",
            self.fstype, self.target, self.errno
        )
    }
}

impl std::error::Error for EarlyError {}

/// (source, target, fstype, flags, data) in mount order: /dev/pts needs /dev.
const PSEUDO: [(&str, &str, &str, u64, &str); 5] = [
    ("proc", "/proc", "proc", 0, ""),
    ("sysfs", "/sys", "sysfs", 0, ""),
    ("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        0,
        "gid=5,mode=620,ptmxmode=000",
    ),
    ("tmpfs", "/run", "tmpfs", 0, "mode=0755"),
];

/// Mounts /proc, /sys, /dev, /dev/pts and /run, and turns on logging.
pub fn setup() -> Result<(), EarlyError> {
    for (source, target, fstype, _, data) in PSEUDO {
        let _ = fs::create_dir_all(target);
        let flags = MsFlags::MS_NOSUID
            | if fstype == "devtmpfs" || fstype == "tmpfs" {
                MsFlags::empty()
            } else {
                MsFlags::MS_NOEXEC
            };
        match mount(Some(source), target, Some(fstype), flags, Some(data)) {
            // Already there (CONFIG_DEVTMPFS_MOUNT, or a second start): fine.
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(errno) => {
                return Err(EarlyError {
                    target,
                    fstype,
                    errno,
                })
            }
        }
    }
    // The kernel rate-limits /dev/kmsg writers to a handful of lines per 5 s by default,
    // which would drop most of a boot's log: ask it not to (as systemd does).
    let _ = fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    Logger::install();
    Ok(())
}

/// Reaps exited children. PID 1 inherits every orphan; zombies must not pile up.
pub fn reap_children() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Logs to /dev/kmsg, so lines land in the kernel log (and on the console at the
/// kernel's loglevel), falling back to the console when /dev/kmsg cannot be opened.
struct Logger {
    kmsg: Mutex<Option<fs::File>>,
}

impl Logger {
    fn install() {
        let kmsg = fs::OpenOptions::new().write(true).open("/dev/kmsg").ok();
        let logger = Box::leak(Box::new(Logger {
            kmsg: Mutex::new(kmsg),
        }));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // syslog priorities: err 3, warning 4, info 6, debug 7.
        let prio = match record.level() {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            // Debug lines exist only with terra.debug; whoever asked wants them on the
            // console, which shows priority 7 only with the kernel's `debug`/`loglevel=8`.
            log::Level::Info | log::Level::Debug | log::Level::Trace => 6,
        };
        let line = format!("<{prio}>stage0: {}\n", record.args());
        let mut guard = match self.kmsg.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // One write() is one kmsg record; long lines are cut by the kernel, not split.
        let written = guard
            .as_mut()
            .is_some_and(|f| f.write_all(line.as_bytes()).is_ok());
        if !written {
            let _ = std::io::stderr().write_all(&line.as_bytes()[3..]);
        }
    }

    fn flush(&self) {}
}
