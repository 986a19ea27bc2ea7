//! Confirmation: the booted system says whether the version it runs is good.
//!
//! When a tentative version boots, stage0 leaves this command at [`PROGRAM`] (a bind mount
//! of the initramfs's `bless` binary, [`BLESS`]: none of it is in stage0) and, for systemd
//! roots, a runtime unit in `/run/systemd/system` ordered after
//! `boot-complete.target` and `multi-user.target`, so nothing in the image has to change.
//! Other inits call `/run/terra/bless good` once they are up. `good` first runs the health
//! checks in `/etc/terra/health.d` ([`crate::health`]): a failing one rejects the version
//! instead, recording the check and the end of its output, and the unit reboots into the
//! default. The command mounts the root filesystem's top level in a private mount
//! namespace and changes the boot state there.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::bootstate::{self, HealthFailure, StateError};
use crate::config::update::DEFAULT_HEALTH_TIMEOUT;
use crate::esp;
use crate::health::{self, Ran};
use crate::layout::{BLESS, BLESS_PROGRAM as PROGRAM, BOOT_REPORT};
use crate::report::message::{self, Event, Message};
use crate::report::outbox::Outbox;

/// systemd's runtime unit directory.
pub const UNIT_DIR: &str = "/run/systemd/system";
/// The unit that runs [`PROGRAM`] once the boot is complete.
pub const UNIT: &str = "terra-bless.service";

const UNIT_TEXT: &str = "\
# Written by Terra's stage0: this boot runs a tentative root version. Once the boot is
# complete (units RequiredBy=boot-complete.target gate that too), the checks in
# /etc/terra/health.d run; all passing makes the version the default. A failing check
# rejects it, and the reboot brings the default back (FailureAction).
[Unit]
Description=Confirm the Terra root version this boot runs (health checks in /etc/terra/health.d)
DefaultDependencies=no
Requires=boot-complete.target
After=boot-complete.target multi-user.target
Conflicts=shutdown.target
Before=shutdown.target
FailureAction=reboot

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/run/terra/bless good
# Each check is bounded by bless itself (node.toml [update] health_timeout).
TimeoutStartSec=infinity
StandardOutput=journal+console
";

/// Leaves [`PROGRAM`] in /run (before the switch) and, when the root at `root` runs
/// systemd, its unit. Returns the command the real system runs, or None when stage0 could
/// not leave itself there.
pub fn install(root: &Path) -> Option<String> {
    if let Err(e) = leave_program() {
        log::error!("cannot leave {PROGRAM} for the confirmation: {e}");
        return None;
    }
    if runs_systemd(root) {
        place_unit(UNIT, UNIT_TEXT);
    }
    Some(format!("{PROGRAM} good"))
}

/// The unit that sends the reports stage0 could not deliver ([`crate::report::outbox`]).
pub const REPORT_UNIT: &str = "terra-report.service";

const REPORT_UNIT_TEXT: &str = "\
# Written by Terra's stage0: the fleet controller did not hear of this boot from the
# initramfs (no network there, or the controller did not answer in time). Once the
# network is up, the report waiting in /run/terra/report is sent.
[Unit]
Description=Send this boot's Terra report to the fleet controller
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=/run/terra/bless report
TimeoutStartSec=180
StandardOutput=journal+console
";

/// Leaves [`PROGRAM`] (unless the confirmation already did) and, on a systemd root at
/// `root`, [`REPORT_UNIT`]: the booted system sends what stage0 could not.
pub fn place_report_unit(root: &Path) {
    let placed = std::fs::metadata(PROGRAM).is_ok_and(|m| m.len() > 0);
    if !placed {
        if let Err(e) = leave_program() {
            log::error!("cannot leave {PROGRAM} to send the boot report: {e}");
            return;
        }
    }
    if runs_systemd(root) {
        place_unit(REPORT_UNIT, REPORT_UNIT_TEXT);
    }
}

/// Whether the root at `root` runs systemd: `/run/systemd/system` existing tells programs
/// that systemd is PID 1, which would mislead them under another init.
fn runs_systemd(root: &Path) -> bool {
    ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"]
        .iter()
        .any(|p| crate::switch::resolve_in_root(root, p).is_ok_and(|p| p.is_file()))
}

/// Writes runtime unit `name` and wants it from multi-user.target.
fn place_unit(name: &str, text: &str) {
    let unit = Path::new(UNIT_DIR).join(name);
    let wants = Path::new(UNIT_DIR).join("multi-user.target.wants");
    let unit_written = std::fs::create_dir_all(&wants)
        .and_then(|()| std::fs::write(&unit, text))
        .and_then(|()| std::os::unix::fs::symlink(format!("../{name}"), wants.join(name)));
    if let Err(e) = unit_written {
        log::warn!("cannot write {}: {e}", unit.display());
    }
}

/// Makes [`PROGRAM`] the initramfs's confirmation command ([`BLESS`]) without copying
/// it: a read-only bind mount on an empty file in /run. The mount moves with /run into the
/// real root, and it keeps the file after the switch empties the initramfs (the inode
/// lives as long as the mount; a copy in tmpfs would hold the same memory). A copy only
/// when the kernel refuses the bind mount.
fn leave_program() -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let packed = format!("/{BLESS}");
    if !Path::new(&packed).is_file() {
        return Err(std::io::Error::other(format!(
            "the initramfs has no {packed} (built without the bless binary beside stage0)"
        )));
    }
    let program = Path::new(PROGRAM);
    if let Some(dir) = program.parent() {
        std::fs::create_dir_all(dir)?;
    }
    drop(std::fs::File::create(program)?);
    let bound = mount(
        Some(packed.as_str()),
        PROGRAM,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    match bound {
        Ok(()) => {
            // Read-only: the running system must not write into the program every
            // confirmation runs. A failure leaves it writable, which root could change anyway.
            let _ = mount(
                None::<&str>,
                PROGRAM,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
            Ok(())
        }
        Err(e) => {
            log::warn!("cannot bind {packed} to {PROGRAM} ({e}); copying it");
            std::fs::copy(&packed, program).map(|_| ())
        }
    }
}

/// Good or bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Make the booted version good and the default.
    Good,
    /// Make it bad: the next boot falls back.
    Bad,
}

impl Verdict {
    /// Parses `good`/`bad`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "good" => Some(Verdict::Good),
            "bad" => Some(Verdict::Bad),
            _ => None,
        }
    }
}

/// What the boot report says about the running version: root device, version name, the
/// top level's mount options, and whether this boot is a tentative one (and the bound on
/// each health check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    /// Root device node.
    pub device: String,
    /// The booted version.
    pub name: String,
    /// Mount options of the top level.
    pub top_options: String,
    /// Whether this boot counted as a try of a tentative version.
    pub tentative: bool,
    /// Seconds each health check may take (boot.json `version.health_timeout`).
    pub health_timeout: Option<u64>,
    /// The version as the fleet controller hears of it (confirmation, rejection).
    pub version: message::Version,
}

/// Reads the booted version from boot report bytes.
pub fn booted_from_report(bytes: &[u8]) -> Result<Booted, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{BOOT_REPORT}: {e}"))?;
    let text = |ptr: &str| {
        v.pointer(ptr)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{BOOT_REPORT}: no {ptr}: this boot did not choose a version"))
    };
    Ok(Booted {
        device: text("/root/device")?,
        name: text("/version/name")?,
        top_options: text("/version/top_options")?,
        tentative: v.pointer("/version/tentative") == Some(&serde_json::Value::Bool(true)),
        health_timeout: v
            .pointer("/version/health_timeout")
            .and_then(|t| t.as_u64()),
        version: message::Version {
            name: text("/version/name")?,
            digest: text("/version/digest").unwrap_or_default(),
            image: text("/version/image").unwrap_or_default(),
            why: text("/version/why").unwrap_or_default(),
            tentative: v.pointer("/version/tentative") == Some(&serde_json::Value::Bool(true)),
            tries_left: v
                .pointer("/version/tries_left")
                .and_then(|t| t.as_u64())
                .unwrap_or(0) as u32,
            fallbacks: Vec::new(),
            kexec: None,
        },
    })
}

fn read_booted() -> Result<Booted, String> {
    let report = std::fs::read(BOOT_REPORT).map_err(|e| format!("{BOOT_REPORT}: {e}"))?;
    booted_from_report(&report)
}

/// A change the booted system makes to its own version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Good, the default.
    Confirm,
    /// Bad, by the caller's word.
    Reject,
    /// Bad: a health check failed.
    Unhealthy(HealthFailure),
}

/// Tells the node's controller, if it has one, that the booted version was confirmed or
/// rejected (with `reason`): at once, bounded; when that fails the report waits in the
/// outbox for `bless report`. Said, never returned: the verdict is recorded either way.
fn tell_controller(booted: &Booted, event: Event, reason: Option<String>) {
    let outbox = Outbox::system();
    let dest = match outbox.destination() {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "terra: bless: report: {e}");
            return;
        }
    };
    // The name stage0 reported the boot under (the system may have renamed itself).
    let hostname = outbox.hostname().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let m = Message::from_system(
        event,
        hostname,
        "bless",
        Some(booted.version.clone()),
        reason,
    );
    // Earlier reports first (the boot's, if stage0 could not send it), then this one.
    let left = outbox.leave(&m);
    let mut quiet = |_: &str| {};
    match (
        left,
        outbox.deliver(&dest, TELL_BOUND, 2, Duration::from_secs(1), &mut quiet),
    ) {
        (_, Ok(_)) => {
            let _ = writeln!(
                std::io::stdout(),
                "terra: the controller at {} heard: {} {}",
                dest.url_text(),
                booted.name,
                event.as_str()
            );
        }
        (Ok(path), Err(e)) => {
            let _ = writeln!(
                std::io::stderr(),
                "terra: bless: the controller did not hear it ({e}); it waits in {} for `{PROGRAM} report`",
                path.display()
            );
        }
        (Err(le), Err(e)) => {
            let _ = writeln!(
                std::io::stderr(),
                "terra: bless: the controller did not hear it ({e}), and it cannot wait in {}: {le}",
                crate::layout::REPORT_DIR
            );
        }
    }
}

/// How long a confirmation's report may take.
const TELL_BOUND: Duration = Duration::from_secs(3);

/// `bless report`: sends what waits in the outbox, trying for about a minute (the
/// network may come up after the unit starts).
fn report_pending() -> Result<(String, i32), String> {
    let outbox = Outbox::system();
    let Some(dest) = outbox.destination()? else {
        return Ok(("no fleet controller: nothing to report".into(), 0));
    };
    let mut say = |s: &str| {
        let _ = writeln!(std::io::stderr(), "terra: bless: {s}");
    };
    let n = outbox.deliver(
        &dest,
        Duration::from_secs(5),
        12,
        Duration::from_secs(5),
        &mut say,
    )?;
    Ok((
        format!(
            "{n} report(s) delivered to the controller at {}",
            dest.url_text()
        ),
        0,
    ))
}

/// Records `verdict` for the booted version, in a private mount namespace, without health
/// checks (`terra bless` on the running system: the admin's word). Returns what was done,
/// for the user.
pub fn bless(verdict: Verdict) -> Result<String, String> {
    let change = match verdict {
        Verdict::Good => Change::Confirm,
        Verdict::Bad => Change::Reject,
    };
    let booted = read_booted()?;
    let done = record(&booted, change)?;
    match verdict {
        Verdict::Good if booted.tentative => tell_controller(&booted, Event::Confirmed, None),
        Verdict::Good => {}
        Verdict::Bad => tell_controller(
            &booted,
            Event::Rejected,
            Some("rejected by the booted system (bless bad)".into()),
        ),
    }
    Ok(done)
}

/// What `bless good` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Confirmed (or nothing to do); the message for the user.
    Good(String),
    /// A health check failed and the version was rejected; the message for the user.
    Rejected(String),
}

/// `bless good`: when this boot is a tentative one, runs the health checks first; all
/// passing (or none there) confirms the version, the first failing one rejects it with the
/// check's name, result and output. Progress goes to stdout, a failure's output to stderr.
pub fn confirm_if_healthy() -> Result<Confirmed, String> {
    let booted = read_booted()?;
    if booted.tentative {
        if let Some(failure) = run_checks(&booted)? {
            let reason = format!(
                "health check {} failed: {}; {}",
                failure.check,
                failure.result,
                failure.output.trim()
            );
            let message = record(&booted, Change::Unhealthy(failure))?;
            tell_controller(&booted, Event::Rejected, Some(reason));
            return Ok(Confirmed::Rejected(message));
        }
    }
    let message = record(&booted, Change::Confirm)?;
    if booted.tentative {
        tell_controller(&booted, Event::Confirmed, None);
    }
    Ok(Confirmed::Good(message))
}

/// Runs the checks of [`health::DIR`] for `booted`, saying what happens; the first
/// failure, if any.
fn run_checks(booted: &Booted) -> Result<Option<HealthFailure>, String> {
    let secs = booted.health_timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    let env = [("TERRA_VERSION", booted.name.as_str())];
    let report = health::run_all(
        Path::new(health::DIR),
        Duration::from_secs(secs),
        &env,
        &mut say_ran,
    )
    .map_err(|e| e.to_string())?;
    for (name, why) in &report.skipped {
        let _ = writeln!(
            std::io::stdout(),
            "terra: health check {name} skipped: {why}"
        );
    }
    Ok(report.failed.map(|f| HealthFailure {
        check: f.name,
        result: f.outcome.to_string(),
        output: f.output,
    }))
}

fn say_ran(ran: &Ran) {
    let took = ran.took.as_secs_f64();
    if ran.outcome == health::Outcome::Passed {
        let _ = writeln!(
            std::io::stdout(),
            "terra: health check {} passed ({took:.1} s)",
            ran.name
        );
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "terra: health check {} failed: {} ({took:.1} s){}",
        ran.name,
        ran.outcome,
        if ran.output.is_empty() {
            "; it printed nothing"
        } else if ran.truncated {
            "; the end of its output:"
        } else {
            "; its output:"
        }
    );
    for line in ran.output.lines() {
        let _ = writeln!(err, "  | {line}");
    }
}

/// Makes `change` to the booted version's state under the disk's lock, in a private mount
/// namespace; then brings the ESP to the default. Returns what was done.
fn record(booted: &Booted, change: Change) -> Result<String, String> {
    private_mounts()?;
    let name = booted.name.clone();
    bootstate::with_top(&booted.device, &booted.top_options, |top| {
        // Wait for a `terra` that is changing the versions (it holds this lock), so that
        // neither overwrites the other's change.
        let lock_path = top.join(bootstate::STATE_DIR).join("lock");
        let lock = std::fs::File::create(&lock_path).map_err(|err| StateError::Io {
            path: lock_path.clone(),
            err,
        })?;
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            StateError::Io {
                path: lock_path.clone(),
                err: std::io::Error::other(format!("flock: {e}")),
            }
        })?;
        let mut state = bootstate::load(top)?
            .ok_or_else(|| StateError::Refused("the root filesystem has no boot state".into()))?;
        let message = match change {
            Change::Confirm => {
                if state.confirm(&name)? {
                    format!("version {name} confirmed: it is the default now")
                } else {
                    return Ok(format!("version {name} is already good; nothing to do"));
                }
            }
            Change::Reject => {
                state.reject(Some(&name), "rejected by the booted system")?;
                format!(
                    "version {name} rejected: the next boot runs {}",
                    state.default
                )
            }
            Change::Unhealthy(failure) => {
                let check = failure.check.clone();
                state.reject_unhealthy(&name, failure)?;
                format!(
                    "version {name} rejected by health check {check}: the next boot runs {}",
                    state.default
                )
            }
        };
        bootstate::store(top, &mut state)?;
        Ok(message + &follow_esp(top, &state.default))
    })
    .map_err(|e| e.to_string())
}

/// Where [`follow_esp`] mounts the ESP, inside this command's private mount namespace.
const ESP_MOUNT: &str = "/run/terra/esp";

/// Brings the disk's ESP (when it boots from one) to the default just stored. A failure
/// is said, not returned: the state is the truth, and the next sync (any `terra` command
/// on the disk, or the next confirmation) catches up. Returns a note when the ESP changed.
fn follow_esp(top: &Path, default: &str) -> String {
    match esp::with_esp(top, Path::new(ESP_MOUNT), |mnt| {
        esp::sync(top, mnt, default)
    }) {
        Ok(Some(true)) => format!("; the ESP boots {default} now"),
        Ok(_) => String::new(),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "terra: bless: warning: the ESP was not brought to {default}: {e}"
            );
            String::new()
        }
    }
}

/// A mount namespace of our own, so the top level never shows in the system's mounts.
fn private_mounts() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))
}

const USAGE: &str = "\
usage: bless [good [--no-health] | bad | check | report]
Confirms (good, the default) or rejects (bad) the Terra root version this boot runs.
good first runs the executables in /etc/terra/health.d in name order when this boot is
a tentative one (each within node.toml [update] health_timeout seconds, default 120): the
first that fails rejects the version instead (exit status 3; reboot to run the default).
--no-health skips them; check runs them and changes nothing (exit status 3 on a failure).
report sends what waits for the fleet controller in /run/terra/report (node.toml
[controller]); good and bad tell it too.";

/// Exit status of `bless good` when a health check rejected the version, and of `bless
/// check` when a check failed.
pub const EXIT_UNHEALTHY: i32 = 3;

/// What `bless` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `good`: confirm, after the health checks unless `--no-health`.
    Good {
        /// Run the health checks first.
        health: bool,
    },
    /// `bad`: reject.
    Bad,
    /// `check`: run the health checks only.
    Check,
    /// `report`: send the reports waiting for the fleet controller.
    Report,
}

impl Command {
    /// Parses the arguments after the command's name; None for a usage error.
    pub fn parse(args: &[String]) -> Option<Self> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            [] | ["good"] => Some(Command::Good { health: true }),
            ["good", "--no-health"] | ["--no-health", "good"] | ["--no-health"] => {
                Some(Command::Good { health: false })
            }
            ["bad"] => Some(Command::Bad),
            ["check"] => Some(Command::Check),
            ["report"] => Some(Command::Report),
            _ => None,
        }
    }
}

/// The command's entry: `bless [ARGS]` (the program's name) or `<anything> bless [ARGS]`.
/// Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let called_bless = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "bless");
    let rest: &[String] = match (called_bless, args.get(1).map(String::as_str)) {
        (true, _) => args.get(1..).unwrap_or_default(),
        (false, Some("bless")) => args.get(2..).unwrap_or_default(),
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    let Some(command) = Command::parse(rest) else {
        eprintln!("{USAGE}");
        return 2;
    };
    let done = match command {
        Command::Good { health: true } => confirm_if_healthy().map(|c| match c {
            Confirmed::Good(msg) => (msg, 0),
            Confirmed::Rejected(msg) => (msg, EXIT_UNHEALTHY),
        }),
        Command::Good { health: false } => bless(Verdict::Good).map(|m| (m, 0)),
        Command::Bad => bless(Verdict::Bad).map(|m| (m, 0)),
        Command::Check => check_only(),
        Command::Report => report_pending(),
    };
    match done {
        Ok((msg, code)) => {
            let _ = writeln!(std::io::stdout(), "terra: {msg}");
            code
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "terra: bless: {e}");
            1
        }
    }
}

/// `bless check`: the health checks with this boot's bound (or the default), nothing
/// recorded.
fn check_only() -> Result<(String, i32), String> {
    let booted = read_booted().unwrap_or_else(|_| Booted {
        device: String::new(),
        name: String::new(),
        top_options: String::new(),
        tentative: false,
        health_timeout: None,
        version: message::Version::default(),
    });
    Ok(match run_checks(&booted)? {
        None => ("the health checks passed".into(), 0),
        Some(f) => (
            format!("health check {} failed: {}", f.check, f.result),
            EXIT_UNHEALTHY,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_booted_version_or_says_why_not() {
        let ok =
            br#"{"root":{"device":"/dev/vda"},"version":{"name":"v2","top_options":"subvolid=5"}}"#;
        assert_eq!(
            booted_from_report(ok).unwrap(),
            Booted {
                device: "/dev/vda".into(),
                name: "v2".into(),
                top_options: "subvolid=5".into(),
                tentative: false,
                health_timeout: None,
                version: message::Version {
                    name: "v2".into(),
                    ..Default::default()
                },
            }
        );
        let tentative = br#"{"root":{"device":"/dev/vda"},"version":{"name":"v2","image":"r/os:v2","digest":"sha256:ab","why":"tentative","tries_left":2,"top_options":"subvolid=5","tentative":true,"health_timeout":30}}"#;
        let b = booted_from_report(tentative).unwrap();
        assert!(b.tentative);
        assert_eq!(b.health_timeout, Some(30));
        // What the controller hears of it.
        let v = &b.version;
        assert_eq!(
            (
                v.image.as_str(),
                v.digest.as_str(),
                v.why.as_str(),
                v.tries_left,
                v.tentative
            ),
            ("r/os:v2", "sha256:ab", "tentative", 2, true)
        );
        let err =
            booted_from_report(br#"{"root":{"device":"/dev/vda"},"version":null}"#).unwrap_err();
        assert!(err.contains("/version/name"), "{err}");
        assert!(booted_from_report(b"{").is_err());
    }

    #[test]
    fn the_verbs() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Command::parse(&args(&[])),
            Some(Command::Good { health: true })
        );
        assert_eq!(
            Command::parse(&args(&["good"])),
            Some(Command::Good { health: true })
        );
        assert_eq!(
            Command::parse(&args(&["good", "--no-health"])),
            Some(Command::Good { health: false })
        );
        assert_eq!(Command::parse(&args(&["bad"])), Some(Command::Bad));
        assert_eq!(Command::parse(&args(&["check"])), Some(Command::Check));
        assert_eq!(Command::parse(&args(&["report"])), Some(Command::Report));
        assert_eq!(Command::parse(&args(&["bad", "--no-health"])), None);
        assert_eq!(Command::parse(&args(&["maybe"])), None);
        assert_eq!(main(&args(&["bless", "maybe"])), 2);
        assert_eq!(main(&args(&["stage0"])), 2);
    }
}
