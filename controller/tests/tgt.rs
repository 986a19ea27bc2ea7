//! The tgtd client against a real tgtd, with libiscsi's tools (`iscsi-inq`, `iscsi-perf`)
//! as the independent initiator. Each test starts its own tgtd on 127.0.0.1 and kills it
//! by PID when it ends, pass or fail.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};
use terra_controller::tgt::{spawn_tgtd, Code, Target, Tgt, TgtError};

const TARGET: &str = "iqn.2024-01.org.terra.test:node-1";
const A: &str = "iqn.2024-01.org.terra.test:initiator-a";
const B: &str = "iqn.2024-01.org.terra.test:initiator-b";

/// Whether tgtd and libiscsi's tools are installed; says what is missing if not.
fn tools() -> bool {
    for (tool, package) in [
        ("tgtd", "tgt"),
        ("iscsi-inq", "libiscsi-bin"),
        ("iscsi-perf", "libiscsi-bin"),
    ] {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            eprintln!("skipped: {tool} is not installed (apt-get install {package})");
            return false;
        }
    }
    true
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tgtd of one test's own.
struct Lab {
    tgt: Tgt,
    pid: u32,
    portal: SocketAddr,
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("tgtd.log");
        let mut errors = Vec::new();
        for _ in 0..8 {
            // 31000..32699: above tests-qemu's tgtds (16000..30999), within tgtd's limit;
            // unique per test and process.
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let ctl = 31_000 + ((std::process::id() % 170) * 10 + n % 10) as u16;
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let portal = SocketAddr::from(([127, 0, 0, 1], port));
            match spawn_tgtd(ctl, portal, &log) {
                Ok(pid) => {
                    return Lab {
                        tgt: Tgt::new(ctl),
                        pid,
                        portal,
                        dir,
                    }
                }
                // Taken control port, or a port taken between the probe and tgtd: retry.
                Err(e) => errors.push(e.to_string()),
            }
        }
        panic!("tgtd would not start:\n{}", errors.join("\n"));
    }

    /// A sparse 64 MiB file in the test's directory.
    fn sparse(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let f = std::fs::File::create(&path).expect("create the LUN file");
        f.set_len(64 << 20).expect("size the LUN file");
        path
    }

    /// A target with a LUN on a sparse file that only initiator `A` may log in to.
    fn target_for_a(&self, tid: u32) -> PathBuf {
        let lun = self.sparse(&format!("lun-{tid}.img"));
        self.tgt.new_target(tid, TARGET).expect("new target");
        self.tgt.new_lun(tid, 1, &lun).expect("new LUN");
        self.tgt.bind_initiator_name(tid, A).expect("bind A");
        lun
    }

    fn url(&self) -> String {
        format!("iscsi://{}/{TARGET}/1", self.portal)
    }

    /// `iscsi-inq` as `initiator` on LUN 1 of [`TARGET`]. CHAP credentials go in its
    /// environment (libiscsi reads LIBISCSI_CHAP_USERNAME/PASSWORD), off its command line.
    fn inquiry(&self, initiator: &str, chap: Option<(&str, &str)>) -> Result<String, String> {
        let mut cmd = Command::new("iscsi-inq");
        cmd.args(["-i", initiator, &self.url()]);
        if let Some((user, secret)) = chap {
            cmd.env("LIBISCSI_CHAP_USERNAME", user)
                .env("LIBISCSI_CHAP_PASSWORD", secret);
        }
        run(
            cmd,
            &self.dir.path().join("inq.out"),
            Duration::from_secs(20),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tgtd.log")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        kill(self.pid);
        let socket = self.tgt.socket_path();
        let mut lock = socket.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(lock);
    }
}

/// SIGKILL by PID (tgtd catches SIGTERM; other tgtds serve other tests), then reaps it:
/// tgtd is this process's child.
fn kill(pid: u32) {
    let Some(pid) = Pid::from_raw(pid as i32) else {
        return;
    };
    let _ = rustix::process::kill_process(pid, Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}

/// Runs `cmd` with its output in `out`, killed by PID after `limit`: its output if it
/// succeeded, else its output and status.
fn run(mut cmd: Command, out: &Path, limit: Duration) -> Result<String, String> {
    let file = std::fs::File::create(out).expect("output file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("run the initiator");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(text),
        Some(s) => Err(format!("{s}: {text}")),
        None => Err(format!("timed out after {limit:?}: {text}")),
    }
}

/// A background initiator, killed by PID when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A secret no other test and no other process uses.
fn unique_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!(
        "{:016x}{:08x}",
        nanos ^ 0x5eed_5eed_5eed,
        std::process::id() ^ n
    )
}

/// Processes whose command line holds `needle`.
fn cmdlines_holding(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // A process may end while we look.
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(needle) {
                found.push(format!("{:?}: {line}", entry.file_name()));
            }
        }
    }
    found
}

#[test]
fn initiator_name_acl_lets_only_that_initiator_in() {
    if !tools() {
        return;
    }
    let lab = Lab::start();
    lab.tgt.ping().expect("ping");
    let lun = lab.target_for_a(1);

    let targets = lab.tgt.targets().expect("targets");
    assert_eq!(
        targets,
        [Target {
            tid: 1,
            iqn: TARGET.into(),
            luns: vec![(1, lun)],
            initiator_names: vec![A.into()],
            ..Target::default()
        }]
    );

    let inq = lab.inquiry(A, None).expect("A logs in");
    assert!(inq.contains("Vendor:IET"), "{inq}");
    let refused = lab.inquiry(B, None).expect_err("B is refused");
    assert!(refused.contains("Target not found"), "{refused}");
}

#[test]
fn chap_account_checks_the_secret_and_stays_off_command_lines() {
    if !tools() {
        return;
    }
    let lab = Lab::start();
    lab.target_for_a(2);
    let secret = unique_secret();
    lab.tgt.new_account("node-1", &secret).expect("new account");
    // Nothing ran a command with the secret: not all of it, not any 8 characters of it.
    for part in secret.as_bytes().windows(8) {
        let part = std::str::from_utf8(part).expect("ASCII");
        assert_eq!(cmdlines_holding(part), Vec::<String>::new(), "{part}");
    }
    lab.tgt.bind_account(2, "node-1", false).expect("bind");
    lab.tgt
        .new_account("target-1", &unique_secret())
        .expect("new outgoing");
    lab.tgt
        .bind_account(2, "target-1", true)
        .expect("bind outgoing");

    assert_eq!(lab.tgt.accounts().expect("accounts").len(), 2);
    let t = &lab.tgt.targets().expect("targets")[0];
    assert_eq!(t.accounts, ["node-1"]);
    assert_eq!(t.outgoing_accounts, ["target-1"]);

    // One-way CHAP: libiscsi does not ask the target to authenticate.
    lab.inquiry(A, Some(("node-1", &secret)))
        .expect("the right secret logs in");
    let refused = lab
        .inquiry(A, Some(("node-1", "not-the-secret-at-all")))
        .expect_err("a wrong secret is refused");
    assert!(refused.contains("Authentication failure"), "{refused}");
    let refused = lab.inquiry(A, None).expect_err("no secret is refused");
    assert!(refused.contains("Authentication failure"), "{refused}");

    // Neither an error nor tgtd's log repeats the secret.
    let e = lab
        .tgt
        .new_account("node-1", &secret)
        .expect_err("duplicate");
    assert_eq!(e.code(), Some(Code::UserExists));
    let shown = format!("{e} / {e:?}");
    assert!(!shown.contains(&secret), "{shown}");
    assert!(shown.contains("node-1") && shown.contains("this account already exists"));
    assert!(!lab.log().contains(&secret));

    lab.tgt.delete_account("node-1").expect("delete account");
    assert_eq!(lab.tgt.accounts().expect("accounts"), ["target-1"]);
    assert!(lab.tgt.targets().expect("targets")[0].accounts.is_empty());
    let e = lab.tgt.delete_account("node-1").expect_err("gone");
    assert_eq!(e.code(), Some(Code::NoUser));
}

#[test]
fn errors_name_the_target_and_tgtds_reason() {
    if !tools() {
        return;
    }
    let lab = Lab::start();
    lab.tgt.new_target(3, TARGET).expect("new target");

    let e = lab
        .tgt
        .new_target(3, "iqn.2024-01.org.terra.test:other")
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::TargetExists));
    assert_eq!(
        e.to_string(),
        "tgtd: new target 3 (iqn.2024-01.org.terra.test:other): this target already exists"
    );

    lab.tgt.delete_target(3).expect("delete");
    assert_eq!(lab.tgt.targets().expect("targets"), []);
    let e = lab.tgt.delete_target(3).unwrap_err();
    assert_eq!(e.code(), Some(Code::NoTarget));
    assert_eq!(
        e.to_string(),
        "tgtd: delete target 3: can't find the target"
    );

    let lun = lab.sparse("orphan.img");
    let e = lab.tgt.new_lun(9, 1, &lun).unwrap_err();
    assert_eq!(e.code(), Some(Code::NoTarget));
    assert!(e.to_string().contains(&lun.display().to_string()), "{e}");
    let e = lab.tgt.bind_account(9, "nobody", false).unwrap_err();
    assert_eq!(e.code(), Some(Code::NoTarget), "{e}");

    // Refused here, before tgtd could misread it.
    let e = lab
        .tgt
        .bind_initiator_name(3, "iqn.x,initiator-address=ALL");
    assert!(matches!(e, Err(TgtError::Invalid { .. })), "{e:?}");
    assert!(matches!(
        lab.tgt.new_target(0, TARGET),
        Err(TgtError::Invalid { .. })
    ));

    // Without tgtd, the socket is gone.
    let tgt = lab.tgt.clone();
    drop(lab);
    let e = tgt.ping().unwrap_err();
    assert!(matches!(e, TgtError::Connect { .. }), "{e:?}");
}

#[test]
fn targets_show_a_logged_in_initiator() {
    if !tools() {
        return;
    }
    let lab = Lab::start();
    lab.target_for_a(4);
    // iscsi-inq logs out at once; iscsi-perf stays logged in, reading with one command in
    // flight, until it is killed.
    let out = std::fs::File::create(lab.dir.path().join("perf.out")).expect("perf.out");
    let perf = Background(
        Command::new("iscsi-perf")
            .args(["-m", "1", "-i", A, &lab.url()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("iscsi-perf"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let sessions = loop {
        let t = lab.tgt.targets().expect("targets");
        if !t[0].sessions.is_empty() || Instant::now() >= deadline {
            break t[0].sessions.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].initiator, A);
    assert_eq!(sessions[0].address, Some([127, 0, 0, 1].into()));

    // Forced, even with the session on.
    lab.tgt.delete_target(4).expect("delete with a session");
    assert_eq!(lab.tgt.targets().expect("targets"), []);
    drop(perf);
}

#[test]
fn spawn_refuses_a_taken_control_port_or_portal() {
    if !tools() {
        return;
    }
    let lab = Lab::start();
    let log = lab.dir.path().join("second.log");
    let e = spawn_tgtd(lab.tgt.control_port(), lab.portal, &log).unwrap_err();
    assert!(matches!(e, TgtError::AlreadyRunning { .. }), "{e}");

    // tgtd does not fail when it cannot bind its portal: it listens on 0.0.0.0:3260
    // instead. spawn_tgtd sees that, kills it, and says why.
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let portal = taken.local_addr().expect("its address");
    let ctl = 32_700 + (std::process::id() % 60) as u16;
    let e = spawn_tgtd(ctl, portal, &log).unwrap_err();
    let socket = Tgt::new(ctl).socket_path();
    let mut lock = socket.clone().into_os_string();
    lock.push(".lock");
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(lock);
    assert!(matches!(e, TgtError::NotStarted { .. }), "{e}");
    assert!(e.to_string().contains("Address already in use"), "{e}");
}
