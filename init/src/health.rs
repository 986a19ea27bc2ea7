//! Health checks: whether a tentative version is good is for the booted system to say
//! (ARCHITECTURE.md, "Confirmation"). `bless good` runs the executables in
//! [`DIR`] (from the image, or the persistent `/etc` overlay) one at a time in lexical
//! order, after the boot is complete; each must exit 0 within a bound. A check that
//! overruns is killed with its whole process group. Of a check's output (stdout and
//! stderr, one pipe) only the last [`TAIL_BYTES`] are kept: memory stays bounded whatever
//! it prints, and what is recorded is the check's own words (its environment is cleared).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Where the checks are, in the booted system.
pub const DIR: &str = "/etc/terra/health.d";
/// How much of a check's output is kept: its end.
pub const TAIL_BYTES: usize = 4096;
/// The `PATH` a check runs with.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a running check is looked at when it prints nothing: a check may exit while
/// a child of it still holds its output open.
const TICK: Duration = Duration::from_millis(100);

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Another exit status.
    Exited(i32),
    /// Ended by a signal it did not get from us.
    Signaled(i32),
    /// Still running at the bound: killed with its process group.
    TimedOut(Duration),
    /// It could not be started (not a format the kernel runs, a missing interpreter…).
    NotRun(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("passed"),
            Outcome::Exited(code) => write!(f, "exit status {code}"),
            Outcome::Signaled(sig) => write!(f, "killed by signal {sig}"),
            Outcome::TimedOut(bound) => write!(
                f,
                "did not finish within {} s (killed with its process group)",
                bound.as_secs_f64()
            ),
            Outcome::NotRun(why) => write!(f, "cannot run: {why}"),
        }
    }
}

/// One check that ran.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Its file name in [`DIR`].
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The end of its output, at most [`TAIL_BYTES`], control characters other than
    /// newline and tab replaced (it is shown on terminals).
    pub output: String,
    /// Whether output before [`Ran::output`] was dropped.
    pub truncated: bool,
    /// How long it took.
    pub took: Duration,
}

/// The checks of a directory and the files in it that are not checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Executable files, in lexical order of their names.
    pub checks: Vec<PathBuf>,
    /// Names that are skipped, with why.
    pub skipped: Vec<(String, &'static str)>,
}

/// What a run of every check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Checks that passed, in order.
    pub passed: Vec<Ran>,
    /// The first check that failed; the ones after it were not run.
    pub failed: Option<Ran>,
    /// Files that are not checks, with why.
    pub skipped: Vec<(String, &'static str)>,
}

/// The directory of checks cannot be read.
#[derive(Debug)]
pub struct HealthError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    pub err: std::io::Error,
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health checks in {}: {}", self.dir.display(), self.err)
    }
}

impl std::error::Error for HealthError {}

/// The checks in `dir`: regular files (symlinks followed) with an execute bit, in lexical
/// order of their names. Hidden files are ignored; anything else is skipped and named. A
/// missing directory has no checks.
pub fn find(dir: &Path) -> Result<Found, HealthError> {
    let err = |err| HealthError {
        dir: dir.to_path_buf(),
        err,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::default()),
        Err(e) => return Err(err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(err)?;
        names.push(entry.file_name());
    }
    names.sort();
    let mut found = Found::default();
    for name in names {
        let shown = name.to_string_lossy().into_owned();
        if shown.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => found.checks.push(path),
            Ok(m) if m.is_file() => found.skipped.push((shown, "not executable")),
            Ok(_) => found.skipped.push((shown, "not a regular file")),
            Err(_) => found
                .skipped
                .push((shown, "cannot be read (a dangling link?)")),
        }
    }
    Ok(found)
}

/// Runs the checks in `dir` in order, each bounded by `timeout`, with only `env` (and
/// `PATH`) in its environment; stops at the first that fails. `each` hears every check
/// that ran, as it ends.
pub fn run_all(
    dir: &Path,
    timeout: Duration,
    env: &[(&str, &str)],
    each: &mut dyn FnMut(&Ran),
) -> Result<Report, HealthError> {
    let found = find(dir)?;
    let mut report = Report {
        skipped: found.skipped,
        ..Default::default()
    };
    for check in &found.checks {
        let ran = run(check, timeout, env);
        each(&ran);
        if ran.outcome != Outcome::Passed {
            report.failed = Some(ran);
            break;
        }
        report.passed.push(ran);
    }
    Ok(report)
}

/// Runs one check: its own process group, stdin from /dev/null, stdout and stderr into
/// one pipe whose last [`TAIL_BYTES`] are kept, killed (the whole group) at `timeout`.
pub fn run(path: &Path, timeout: Duration, env: &[(&str, &str)]) -> Ran {
    let start = Instant::now();
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut tail = Tail::default();
    let outcome = match spawn(path, env) {
        Ok((child, output)) => {
            watch(child, output, start + timeout, &mut tail).unwrap_or(Outcome::TimedOut(timeout))
        }
        Err(e) => Outcome::NotRun(e.to_string()),
    };
    let output = tail.text();
    Ran {
        name,
        outcome,
        output,
        truncated: tail.dropped,
        took: start.elapsed(),
    }
}

fn spawn(path: &Path, env: &[(&str, &str)]) -> std::io::Result<(std::process::Child, File)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let write_err = write.try_clone()?;
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", PATH)
        .envs(env.iter().copied())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err))
        .process_group(0);
    let child = cmd.spawn();
    // The command holds our copies of the write end: without dropping it, the pipe never
    // reads as closed.
    drop(cmd);
    Ok((child?, File::from(read)))
}

/// Reads `output` into `tail` until the check has exited and its output is closed, or
/// `deadline`: then kills its process group and returns None.
fn watch(
    mut child: std::process::Child,
    mut output: File,
    deadline: Instant,
    tail: &mut Tail,
) -> Option<Outcome> {
    let mut buf = [0u8; 4096];
    let mut open = true;
    let mut exited: Option<ExitStatus> = None;
    loop {
        if exited.is_none() {
            exited = child.try_wait().ok().flatten();
        }
        if let (Some(status), false) = (exited, open) {
            return Some(outcome_of(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if !open {
            std::thread::sleep(left.min(TICK));
            continue;
        }
        // Once it has exited, only what is already in the pipe is read: a child it left
        // behind may hold the pipe open for ever.
        let wait = if exited.is_some() {
            Duration::ZERO
        } else {
            left.min(TICK)
        };
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(output.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) if exited.is_some() => open = false,
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => match output.read(&mut buf) {
                Ok(0) | Err(_) => open = false,
                Ok(n) => tail.push(&buf[..n]),
            },
            Err(_) => open = false,
        }
    }
    // Overran: the whole group, so that what it started goes too.
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    None
}

fn outcome_of(status: ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Passed,
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signaled(sig),
        (None, None) => Outcome::Exited(-1),
    }
}

/// The last [`TAIL_BYTES`] of a stream, in at most twice that much memory.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    dropped: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > 2 * TAIL_BYTES {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.bytes.len() > TAIL_BYTES {
            let extra = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..extra);
            self.dropped = true;
        }
    }

    fn text(&mut self) -> String {
        self.cut();
        String::from_utf8_lossy(&self.bytes)
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '?'
                } else {
                    c
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, name: &str, text: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn checks_run_in_lexical_order_and_non_executables_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("order.log");
        let checks = d.path().join("health.d");
        std::fs::create_dir(&checks).unwrap();
        let append = |n: &str| format!("#!/bin/sh\necho {n} >> {}\necho ok-{n}\n", log.display());
        put(&checks, "20-b", &append("20-b"), 0o755);
        put(&checks, "10-a", &append("10-a"), 0o755);
        put(&checks, "100-c", &append("100-c"), 0o755);
        put(&checks, "README", "not a check\n", 0o644);
        put(&checks, ".hidden", "#!/bin/sh\nexit 1\n", 0o755);
        std::fs::create_dir(checks.join("sub.d")).unwrap();
        let mut seen = Vec::new();
        let r = run_all(&checks, Duration::from_secs(10), &[], &mut |ran| {
            seen.push(ran.name.clone())
        })
        .unwrap();
        assert!(r.failed.is_none(), "{:?}", r.failed);
        // Lexical, not numeric: "100-c" sorts before "20-b".
        assert_eq!(seen, ["10-a", "100-c", "20-b"]);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "10-a\n100-c\n20-b\n"
        );
        assert_eq!(r.passed[0].output, "ok-10-a\n");
        assert_eq!(
            r.skipped,
            [
                ("README".to_string(), "not executable"),
                ("sub.d".to_string(), "not a regular file")
            ]
        );
        // No directory: no checks, nothing to fail.
        let none = run_all(
            &d.path().join("absent"),
            Duration::from_secs(1),
            &[],
            &mut |_| {},
        )
        .unwrap();
        assert!(none.passed.is_empty() && none.failed.is_none());
    }

    #[test]
    fn the_first_failing_check_stops_the_run_with_its_status_and_output() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "10-ok", "#!/bin/sh\nexit 0\n", 0o755);
        put(
            d.path(),
            "20-db",
            "#!/bin/sh\necho \"checking $TERRA_VERSION\"\necho 'database: connection refused' >&2\nexit 3\n",
            0o755,
        );
        put(
            d.path(),
            "30-never",
            "#!/bin/sh\ntouch /tmp/never-ran\nexit 0\n",
            0o755,
        );
        let r = run_all(
            d.path(),
            Duration::from_secs(10),
            &[("TERRA_VERSION", "v7")],
            &mut |_| {},
        )
        .unwrap();
        let f = r.failed.unwrap();
        assert_eq!(f.name, "20-db");
        assert_eq!(f.outcome, Outcome::Exited(3));
        assert_eq!(f.outcome.to_string(), "exit status 3");
        assert_eq!(f.output, "checking v7\ndatabase: connection refused\n");
        assert_eq!(r.passed.len(), 1);
    }

    #[test]
    fn a_check_that_hangs_is_killed_with_its_process_group_at_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("child.pid");
        // A child of its own that would outlive it, then a hang.
        put(
            d.path(),
            "hang",
            &format!(
                "#!/bin/sh\nsleep 300 &\necho $! > {}\necho started\nsleep 300\n",
                pidfile.display()
            ),
            0o755,
        );
        let start = Instant::now();
        let ran = run(&d.path().join("hang"), Duration::from_millis(700), &[]);
        let took = start.elapsed();
        assert_eq!(ran.outcome, Outcome::TimedOut(Duration::from_millis(700)));
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(ran.output, "started\n");
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed and, its parent gone, reaped by init (or a subreaper) shortly after.
        let gone = (0..50).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| !s.contains(") Z "));
            if alive {
                std::thread::sleep(Duration::from_millis(100));
            }
            !alive
        });
        assert!(gone, "the check's background child {child} survived it");
    }

    #[test]
    fn output_keeps_only_its_end_and_no_control_characters() {
        let d = tempfile::tempdir().unwrap();
        // 1 MiB of lines, then an escape sequence and a last line.
        put(
            d.path(),
            "noisy",
            "#!/bin/sh\ni=0\nwhile [ $i -lt 16384 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; i=$((i+1)); done\nprintf '\\033[31mred\\n'\necho the-end\nexit 1\n",
            0o755,
        );
        let ran = run(&d.path().join("noisy"), Duration::from_secs(60), &[]);
        assert_eq!(ran.outcome, Outcome::Exited(1));
        assert!(ran.truncated);
        assert!(ran.output.len() <= TAIL_BYTES, "{}", ran.output.len());
        assert!(
            ran.output.ends_with("?[31mred\nthe-end\n"),
            "{}",
            ran.output
        );
        let mut t = Tail::default();
        for _ in 0..1000 {
            t.push(&[b'a'; 1000]);
            assert!(t.bytes.len() <= 2 * TAIL_BYTES);
        }
    }

    #[test]
    fn a_check_that_cannot_be_started_fails_and_its_environment_is_its_own() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "no-shebang", "exit 0\n", 0o755);
        let ran = run(&d.path().join("no-shebang"), Duration::from_secs(5), &[]);
        assert!(
            matches!(ran.outcome, Outcome::NotRun(_)),
            "{:?}",
            ran.outcome
        );
        put(d.path(), "env", "#!/bin/sh\nenv | sort\n", 0o755);
        let ran = run(&d.path().join("env"), Duration::from_secs(5), &[("A", "b")]);
        assert_eq!(ran.outcome, Outcome::Passed);
        // Nothing of the caller's environment (where a secret could be) reaches a check.
        for (k, _) in std::env::vars().filter(|(k, _)| k != "PATH" && k != "PWD") {
            assert!(
                !ran.output.contains(&format!("{k}=")),
                "{k} in {}",
                ran.output
            );
        }
        assert!(
            ran.output.contains("A=b\n") && ran.output.contains("PATH="),
            "{}",
            ran.output
        );
    }
}
