//! `terra run` boots an image in a throwaway VM and leaves nothing behind: on a terminal
//! (a pty) the demo image boots to its init under TCG, its shell answers what is typed,
//! Ctrl-A X quits, terra exits 0 and the terminal's modes are as before; SIGINT once QEMU
//! runs (the console a pipe) stops QEMU and terra exits 1 saying so; SIGTERM during the install lets the install
//! clean up and then stops. Each time the temporary directory ($TMPDIR, one per test) is
//! empty afterwards, no loop device is backed by a file in it, nothing is mounted under
//! it, and QEMU is gone. A user other than root is refused before anything is done.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lab::harness::{artifacts, busybox};
use lab::oci_root;

/// `terra run` of the demo image, its stdout (the console) and stderr collected.
struct TerraRun {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    tmp: PathBuf,
    /// With a terminal: its master side (to type on) and its slave side (to read its modes).
    pty: Option<(fs::File, OwnedFd)>,
}

/// A new pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the pointed-to ints; name, termios and winsize
    // may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // SAFETY: fcntl on an fd just opened; children of other tests must not inherit it.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both fds were just opened and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The modes of the terminal `fd`: input, output and local flags.
fn modes(fd: &OwnedFd) -> (libc::tcflag_t, libc::tcflag_t, libc::tcflag_t) {
    // SAFETY: termios is plain data; tcgetattr fills it in.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a live fd and a pointer to a live termios.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    (t.c_iflag, t.c_oflag, t.c_lflag)
}

/// Starts `terra run ARGS oci:<demo layout>:demo` with `$TMPDIR` a fresh directory named
/// after `name`; stdin and stdout a new pty when `tty`, else stdin empty and stdout a pipe.
fn start(name: &str, args: &[&str], tty: bool) -> TerraRun {
    let a = artifacts();
    let (layout, _) = oci_root::demo_layout(&busybox()).expect("demo image");
    let tmp = lab::lab_dir().join("scratch").join(format!("run-{name}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new(&a.terra);
    cmd.arg("run")
        .args(args)
        .arg(format!("oci:{}:{}", layout.display(), oci_root::DEMO_TAG))
        .env("TMPDIR", &tmp)
        .env("TERRA_STAGE0", &a.stage0)
        .stderr(Stdio::piped());
    let mut pty = None;
    if tty {
        let (master, slave) = openpty();
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()));
        pty = Some((fs::File::from(master), slave));
    } else {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("terra run");
    // The command's copies of the slave side are gone with it (the Stdio values).
    drop(cmd);
    let collect = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = buf.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        buf
    };
    let out = match &pty {
        // Reading the master ends (EIO) once every slave fd is closed.
        Some((master, _)) => collect(Box::new(master.try_clone().unwrap())),
        None => collect(Box::new(child.stdout.take().unwrap())),
    };
    let err = collect(Box::new(child.stderr.take().unwrap()));
    TerraRun {
        child,
        out,
        err,
        tmp,
        pty,
    }
}

impl TerraRun {
    fn output(&self) -> String {
        format!(
            "--- console\n{}\n--- stderr\n{}",
            self.out.lock().unwrap(),
            self.err.lock().unwrap()
        )
    }

    /// Waits (at most `limit`) until `ready` holds; false at the limit.
    fn wait_until(&mut self, limit: Duration, mut ready: impl FnMut(&mut Self) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if ready(self) {
                return true;
            }
            thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Whether terra has exited.
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// terra's exit status within `limit`; at the limit terra and its QEMU are killed and
    /// the test fails.
    fn exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The readers end with the pipes; give them a moment to take the rest.
                thread::sleep(Duration::from_millis(300));
                return s;
            }
            thread::sleep(Duration::from_millis(200));
        }
        self.kill();
        panic!(
            "terra run did not exit within {} s\n{}",
            limit.as_secs(),
            self.output()
        );
    }

    /// QEMU's PID, when terra runs it now.
    fn qemu(&self) -> Option<u32> {
        children(self.child.id())
            .into_iter()
            .find(|&p| comm(p).is_some_and(|c| c.starts_with("qemu-system")))
    }

    /// Types `keys` on the terminal.
    fn type_keys(&mut self, keys: &[u8]) {
        let (master, _) = self.pty.as_mut().expect("a terminal");
        master.write_all(keys).unwrap();
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on terra's PID, our child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    fn kill(&mut self) {
        if let Some(q) = self.qemu() {
            // SAFETY: kill(2) on the PID of our child's QEMU.
            unsafe { libc::kill(i32::try_from(q).unwrap(), libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Nothing of the run is left: its directory is empty, no loop device is backed by a
    /// file in it, nothing is mounted under it, and `qemu` (its PID) is gone.
    fn assert_nothing_left(&self, qemu: Option<u32>) {
        let left: Vec<_> = fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            left.is_empty(),
            "left in $TMPDIR: {left:?}\n{}",
            self.output()
        );
        let tmp = self.tmp.to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        assert!(
            !mounts.lines().any(|l| l.contains(&tmp)),
            "still mounted:\n{mounts}"
        );
        let loops = loop_backing_files();
        assert!(
            !loops.iter().any(|(_, f)| f.starts_with(&tmp)),
            "loop devices left: {loops:?}"
        );
        if let Some(q) = qemu {
            assert!(
                !Path::new(&format!("/proc/{q}")).exists(),
                "QEMU (PID {q}) still runs"
            );
        }
    }
}

impl Drop for TerraRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

/// PIDs whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid …; comm may hold spaces and parentheses.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// Each loop device's backing file.
fn loop_backing_files() -> Vec<(String, String)> {
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        let f = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
        Some((name, f.trim().to_string()))
    })
    .collect()
}

const SMALL: [&str; 7] = [
    "--tcg",
    "--memory",
    "512",
    "--cpus",
    "1",
    "--disk-size",
    "512M",
];

#[test]
fn terra_run_boots_the_image_on_a_terminal_and_ctrl_a_x_removes_everything() {
    let started = Instant::now();
    let mut r = start("boot", &SMALL, true);
    let before = modes(&r.pty.as_ref().unwrap().1);
    let mut qemu = None;
    let mut booting = None;
    let shell = r.wait_until(Duration::from_secs(400), |r| {
        if qemu.is_none() {
            qemu = r.qemu();
            booting = qemu.map(|_| Instant::now());
        }
        r.out
            .lock()
            .unwrap()
            .contains("Welcome to the Terra demo root")
            || r.exited()
    });
    assert!(
        shell,
        "the demo root's shell did not start within 400 s\n{}",
        r.output()
    );
    let to_init = booting.map_or(0.0, |b| b.elapsed().as_secs_f64());
    // The guest's shell reads this terminal: what it prints comes from the guest.
    thread::sleep(Duration::from_millis(500));
    r.type_keys(b"echo run-$((40+2))\r");
    let answered = r.wait_until(Duration::from_secs(30), |r| {
        r.out.lock().unwrap().contains("run-42")
    });
    assert!(answered, "the guest's shell did not answer\n{}", r.output());
    r.type_keys(b"\x01x");
    let status = r.exit(Duration::from_secs(60));
    let out = r.output();
    assert!(status.success(), "terra run: {status}\n{out}");
    for needle in [
        "TERRA-DEMO-INIT",
        "subvol=os pid=1",
        "TERRA-DEMO-HOSTNAME terra-run",
        "terra: booting (TCG, BIOS",
        "terra: the VM stopped; its disk is removed",
    ] {
        assert!(out.contains(needle), "expected {needle:?}\n{out}");
    }
    assert!(qemu.is_some(), "QEMU was never seen running\n{out}");
    assert_eq!(
        modes(&r.pty.as_ref().unwrap().1),
        before,
        "the terminal's modes changed"
    );
    r.assert_nothing_left(qemu);
    eprintln!(
        "terra run: {:.1} s in all, {to_init:.1} s from QEMU's start to the demo root's shell (TCG)",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn sigint_while_the_vm_boots_stops_qemu_and_removes_everything() {
    let mut r = start("sigint", &SMALL, false);
    let mut qemu = None;
    let running = r.wait_until(Duration::from_secs(300), |r| {
        qemu = qemu.or_else(|| r.qemu());
        // The firmware has begun writing to the console.
        qemu.is_some() && !r.out.lock().unwrap().is_empty()
    });
    assert!(running, "QEMU did not start within 300 s\n{}", r.output());
    r.signal(libc::SIGINT);
    let status = r.exit(Duration::from_secs(30));
    let out = r.output();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("terra: interrupted by SIGINT: the VM was stopped and its disk removed"),
        "{out}"
    );
    assert!(!out.contains("TERRA-DEMO-INIT"), "{out}");
    r.assert_nothing_left(qemu);
}

#[test]
fn sigterm_during_the_install_leaves_no_loop_device_or_mount() {
    let mut r = start("sigterm", &SMALL, false);
    // The install is under way once its loop device is attached (it takes about a second
    // or two: polled often).
    let tmp = r.tmp.to_string_lossy().into_owned();
    let start = Instant::now();
    let mut attached = false;
    while !attached && !r.exited() && start.elapsed() < Duration::from_secs(120) {
        attached = loop_backing_files()
            .iter()
            .any(|(_, f)| f.starts_with(&tmp));
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        attached,
        "no loop device on the VM's disk seen\n{}",
        r.output()
    );
    r.signal(libc::SIGTERM);
    let status = r.exit(Duration::from_secs(180));
    let out = r.output();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("terra: interrupted by SIGTERM: the VM was stopped and its disk removed"),
        "{out}"
    );
    // Noted during the install, seen after it: no VM was started.
    assert!(!out.contains("terra: booting"), "{out}");
    r.assert_nothing_left(None);
}

#[test]
fn terra_run_as_another_user_says_it_needs_root() {
    let a = artifacts();
    if lab::host::which("setpriv").is_none() {
        eprintln!("skipped: no setpriv (util-linux)");
        return;
    }
    let out = Command::new("timeout")
        .args([
            "30",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&a.terra)
        .args(["run", "--tcg", "oci:/nonexistent:demo"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && !err.contains("terra:") {
        eprintln!("skipped: uid 65534 cannot execute {}", a.terra.display());
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("terra run needs root"), "{err}");
}
