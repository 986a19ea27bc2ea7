//! stage0's iSCSI initiator against a real target: the lab's tgtd ([`lab::tgtd`]) on
//! 127.0.0.1, driven from the host in userspace (the host kernel has no iscsi_tcp). Each
//! test starts its own tgtd on a free port with a private control port; it is stopped by PID
//! and its LUN images removed when the test ends, pass or fail.
//!
//! Needs root (tgtadm insists) and the Debian packages `tgt` and `libiscsi-bin`.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::tgtd::Tgtd;
use terra_init::iscsi::chap::{Chap, ChapAlgorithm, ChapError, Credentials, Secret};
use terra_init::iscsi::login::{connect, LoginConfig, LoginError, LoginErrorKind, Session};
use terra_init::iscsi::target::Portal;
use terra_init::iscsi::text::Digest;

const INITIATOR: &str = "iqn.2024-01.org.terra-os:test-initiator";
const MARKER: &[u8] = b"TERRA-ISCSI-LUN1";
const LUN_MB: u64 = 16;

/// A lab tgtd whose LUN images (block 0 holds [`MARKER`]) live in a scratch directory that
/// goes with it. Setup failures fail the test with the lab's message.
struct Target {
    tgtd: Tgtd,
    dir: PathBuf,
}

fn which(cmd: &str) -> bool {
    lab::host::which(cmd).is_some()
}

impl Target {
    fn start() -> Target {
        Target::start_on("127.0.0.1")
    }

    /// On another loopback address (all of 127/8 is loopback on Linux).
    fn start_on(addr: &str) -> Target {
        assert!(
            lab::host::nix_is_root(),
            "tgtadm only talks to root: run these tests as root"
        );
        Target {
            tgtd: Tgtd::start_on(addr).unwrap_or_else(|e| panic!("{e}")),
            dir: lab::disk::tempdir("iscsi-login").unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn port(&self) -> u16 {
        self.tgtd.port
    }

    fn adm(&self, args: &[&str]) {
        if let Err(e) = self.tgtd.adm(args) {
            panic!("{e}\ntgtd log:\n{}", self.tgtd.log_text());
        }
    }

    /// Target `tid` named `iqn` with a file-backed LUN 1 whose first block holds MARKER.
    fn target(&mut self, tid: u32, iqn: &str) {
        let img = self.dir.join(format!("lun-{tid}.img"));
        let mut data = MARKER.to_vec();
        data.resize(512, 0);
        std::fs::write(&img, &data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(LUN_MB << 20)
            .unwrap();
        if let Err(e) = self.tgtd.target(tid, iqn, &img) {
            panic!("{e}\ntgtd log:\n{}", self.tgtd.log_text());
        }
    }

    /// An account bound to `tid`, incoming (the target checks us) or outgoing (mutual).
    fn account(&self, tid: u32, user: &str, password: &str, outgoing: bool) {
        if let Err(e) = self.tgtd.account(tid, user, password, outgoing) {
            panic!("{e}\ntgtd log:\n{}", self.tgtd.log_text());
        }
    }

    fn portal(&self) -> Portal {
        Portal {
            host: self.tgtd.addr.clone(),
            port: self.tgtd.port,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // tgtd itself stops when the field drops, right after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` with a hard bound: a hung login fails the test instead of hanging it.
fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("test step did not finish within {secs} s")
        }
    }
}

fn config(iqn: &str) -> LoginConfig {
    let mut c = LoginConfig::new(INITIATOR, iqn);
    c.timeout = Duration::from_secs(5);
    c
}

fn login(portal: Portal, cfg: LoginConfig) -> Result<Session<std::net::TcpStream>, LoginError> {
    bounded(15, move || connect(&portal, &cfg))
}

/// Proves the session: INQUIRY on LUN 0 and 1, READ CAPACITY(10), READ(10) of block 0.
fn prove(mut s: Session<std::net::TcpStream>) {
    let s = bounded(15, move || {
        let inq = s.inquiry(1).expect("INQUIRY LUN 1");
        assert_eq!(inq.device_type, 0, "{inq:?}");
        assert_eq!(inq.vendor, "IET");
        assert_eq!(inq.product, "VIRTUAL-DISK");
        assert_eq!(s.inquiry(0).expect("INQUIRY LUN 0").device_type, 0x0c);
        let (blocks, len) = s.read_capacity(1).expect("READ CAPACITY");
        assert_eq!((blocks, len), ((LUN_MB << 20) / 512, 512));
        let block = s.read10(1, 0, 1, 512).expect("READ(10)");
        assert_eq!(&block[..MARKER.len()], MARKER);
        // A larger read crosses several Data-In PDUs when MaxRecvDataSegmentLength is small.
        let many = s.read10(1, 0, 256, 512).expect("READ(10) of 128 KiB");
        assert_eq!(many.len(), 256 * 512);
        s
    });
    bounded(10, move || s.logout().expect("logout"));
}

#[test]
fn login_without_auth_then_scsi_commands() {
    let mut t = Target::start();
    t.target(1, "iqn.2024-01.org.terra-os:open");
    let start = Instant::now();
    let s = login(t.portal(), config("iqn.2024-01.org.terra-os:open")).expect("login");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "login (no auth) to tgtd: {ms:.2} ms, {} round trip(s), TSIH {}, negotiated {:?}",
        s.round_trips, s.tsih, s.negotiated
    );
    assert_eq!(
        s.round_trips, 1,
        "no auth: straight to the operational stage"
    );
    assert_eq!(s.negotiated.target_portal_group_tag, Some(1));
    assert!(s.tsih != 0);
    prove(s);
}

#[test]
fn crc32c_digests_against_tgtd() {
    let mut t = Target::start();
    t.target(1, "iqn.2024-01.org.terra-os:digests");
    // tgtd offers no digest unless the target is told to.
    for key in ["HeaderDigest", "DataDigest"] {
        t.adm(&[
            "--mode",
            "target",
            "--op",
            "update",
            "--tid",
            "1",
            "--name",
            key,
            "--value",
            "CRC32C,None",
        ]);
    }
    let mut cfg = config("iqn.2024-01.org.terra-os:digests");
    cfg.params.header_digest = vec![Digest::Crc32c];
    cfg.params.data_digest = vec![Digest::Crc32c];
    // Small segments: every READ comes back as many Data-In PDUs, each with digests.
    cfg.params.max_recv_data_segment_length = 4096;
    let s = login(t.portal(), cfg).expect("login with digests");
    assert_eq!(s.negotiated.header_digest, Digest::Crc32c);
    assert_eq!(s.negotiated.data_digest, Digest::Crc32c);
    prove(s);
}

#[test]
fn chap_one_way() {
    let mut t = Target::start();
    t.target(2, "iqn.2024-01.org.terra-os:chap");
    t.account(2, "node1", "node1-secret-12", false);
    let mut cfg = config("iqn.2024-01.org.terra-os:chap");
    cfg.chap = Some(Chap::new("node1", Secret::new("node1-secret-12")));
    let start = Instant::now();
    let s = login(t.portal(), cfg.clone()).expect("CHAP login");
    eprintln!(
        "CHAP login (SHA-256 offered, MD5 after tgtd's refusal) to tgtd: {:.2} ms, {} round trips",
        start.elapsed().as_secs_f64() * 1000.0,
        s.round_trips
    );
    // tgtd (1.0.85) answers CHAP_A=7 but means SHA-1 by it; the initiator falls back.
    assert_eq!(s.chap_algorithm, Some(ChapAlgorithm::Md5));
    prove(s);

    let mut md5 = cfg;
    if let Some(c) = md5.chap.as_mut() {
        c.algorithms = vec![ChapAlgorithm::Md5];
    }
    let start = Instant::now();
    let s = login(t.portal(), md5).expect("CHAP MD5 login");
    eprintln!(
        "CHAP MD5 login to tgtd: {:.2} ms, {} round trips",
        start.elapsed().as_secs_f64() * 1000.0,
        s.round_trips
    );
    assert_eq!(s.round_trips, 4);
    prove(s);
}

#[test]
fn chap_wrong_secret_is_a_clear_authentication_failure() {
    let mut t = Target::start();
    let iqn = "iqn.2024-01.org.terra-os:chap";
    t.target(2, iqn);
    t.account(2, "node1", "node1-secret-12", false);
    let mut cfg = config(iqn);
    cfg.chap = Some(Chap::new("node1", Secret::new("not-the-secret")));
    let e = login(t.portal(), cfg).expect_err("wrong secret must fail");
    let msg = e.to_string();
    eprintln!("wrong secret: {msg}");
    assert!(e.is_authentication_failure(), "{msg}");
    assert_eq!(e.status(), Some((2, 1)));
    assert!(
        msg.contains("authentication failure")
            && msg.contains(iqn)
            && msg.contains("127.0.0.1")
            && msg.contains("check the CHAP user and secret"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-secret") && !format!("{e:?}").contains("not-the-secret"));

    // And no credentials at all against a target that wants CHAP.
    let e = login(t.portal(), config(iqn)).expect_err("no CHAP must fail");
    eprintln!("no CHAP: {e}");
    assert!(e.is_authentication_failure(), "{e}");
}

#[test]
fn chap_mutual() {
    let mut t = Target::start();
    let iqn = "iqn.2024-01.org.terra-os:mutual";
    t.target(3, iqn);
    t.account(3, "node1", "node1-secret-12", false);
    t.account(3, "target3", "target3-secret-12", true);
    let mut cfg = config(iqn);
    let mut chap = Chap::new("node1", Secret::new("node1-secret-12"));
    chap.algorithms = vec![ChapAlgorithm::Md5];
    chap.mutual = Some(Credentials {
        user: "target3".into(),
        secret: Secret::new("target3-secret-12"),
    });
    cfg.chap = Some(chap.clone());
    let s = login(t.portal(), cfg.clone()).expect("mutual CHAP login");
    prove(s);

    // The target proves itself with its secret, which we check: a wrong expectation fails
    // on our side, with our error, not the target's.
    if let Some(m) = chap.mutual.as_mut() {
        m.secret = Secret::new("what-we-think-it-is");
    }
    cfg.chap = Some(chap.clone());
    let e = login(t.portal(), cfg.clone()).expect_err("wrong mutual secret must fail");
    eprintln!("wrong mutual secret: {e}");
    assert!(
        matches!(e.kind, LoginErrorKind::Chap(ChapError::TargetResponse)),
        "{e}"
    );
    assert!(e.is_authentication_failure());

    if let Some(m) = chap.mutual.as_mut() {
        m.user = "someone-else".into();
        m.secret = Secret::new("target3-secret-12");
    }
    cfg.chap = Some(chap);
    let e = login(t.portal(), cfg).expect_err("wrong mutual name must fail");
    assert!(
        matches!(e.kind, LoginErrorKind::Chap(ChapError::TargetName { .. })),
        "{e}"
    );
}

#[test]
fn wrong_target_name_names_it_with_the_status() {
    let mut t = Target::start();
    t.target(1, "iqn.2024-01.org.terra-os:open");
    let wrong = "iqn.2024-01.org.terra-os:no-such-target";
    let e = login(t.portal(), config(wrong)).expect_err("unknown target");
    let msg = e.to_string();
    eprintln!("wrong IQN: {msg}");
    assert!(e.is_unknown_target(), "{msg}");
    assert_eq!(e.status(), Some((2, 3)));
    assert!(
        msg.contains(wrong) && msg.contains("target not found") && msg.contains("detail 0x03"),
        "{msg}"
    );
}

#[test]
fn unreachable_portal_fails_fast() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let e = login(
        Portal {
            host: "127.0.0.1".into(),
            port,
        },
        config("iqn.2024-01.org.terra-os:any"),
    )
    .expect_err("nothing listens");
    assert!(matches!(e.kind, LoginErrorKind::Unreachable(_)), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn silent_portal_times_out() {
    // Accepts TCP but never answers a login: the login's bound must hold.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let c = listener.accept();
        std::thread::sleep(Duration::from_secs(3));
        drop(c);
    });
    let mut cfg = config("iqn.2024-01.org.terra-os:any");
    cfg.timeout = Duration::from_secs(1);
    let start = Instant::now();
    let e = login(
        Portal {
            host: "127.0.0.1".into(),
            port,
        },
        cfg,
    )
    .expect_err("silence");
    assert!(matches!(e.kind, LoginErrorKind::Timeout { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_millis(2500));
    let _ = hold.join();
}

#[test]
fn redirect_is_followed() {
    // tgtd A redirects the target to tgtd B, which serves it. B listens on another
    // loopback address: tgtd never redirects to the address the initiator already uses.
    let mut a = Target::start();
    let mut b = Target::start_on("127.0.0.2");
    let iqn = "iqn.2024-01.org.terra-os:moved";
    a.target(1, iqn);
    b.target(1, iqn);
    let port = b.port().to_string();
    for (name, value) in [
        ("RedirectAddress", "127.0.0.2"),
        ("RedirectPort", port.as_str()),
        ("RedirectReason", "Temporary"),
    ] {
        a.adm(&[
            "--mode", "target", "--op", "update", "--tid", "1", "--name", name, "--value", value,
        ]);
    }
    let s = login(a.portal(), config(iqn)).expect("login via redirect");
    assert_eq!(
        s.stream().peer_addr().unwrap(),
        format!("127.0.0.2:{}", b.port()).parse().unwrap(),
        "connected to the redirect target"
    );
    prove(s);
}

#[test]
fn libiscsi_sees_the_same_lun() {
    // A reference initiator against the same kind of target, for comparison.
    if !which("iscsi-inq") {
        panic!("iscsi-inq not installed: apt-get install -y libiscsi-bin");
    }
    let mut t = Target::start();
    let iqn = "iqn.2024-01.org.terra-os:open";
    t.target(1, iqn);
    let url = format!("iscsi://127.0.0.1:{}/{iqn}/1", t.port());
    let mut child = Command::new("iscsi-inq")
        .args(["-i", INITIATOR, &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(out.contains("Product:VIRTUAL-DISK"), "{out}");
    let mut s = login(t.portal(), config(iqn)).expect("login");
    let inq = bounded(10, move || s.inquiry(1).unwrap());
    assert!(out.contains(&format!("Vendor:{}", inq.vendor)), "{out}");
}

/// Records what a stream reads, to keep real tgtd answers as fixtures.
struct Tap<S> {
    inner: S,
    read: Vec<u8>,
}

impl<S: std::io::Read> std::io::Read for Tap<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<S: std::io::Write> std::io::Write for Tap<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Regenerates init/src/iscsi/fixtures/ from a live tgtd:
/// `cargo test -p tests-qemu --test scenarios iscsi_login::capture_fixtures -- --ignored`.
#[test]
#[ignore]
fn capture_fixtures() {
    let mut t = Target::start();
    t.target(1, "iqn.2024-01.org.terra-os:open");
    t.target(2, "iqn.2024-01.org.terra-os:chap");
    t.account(2, "node1", "node1-secret-12", false);
    let dir = lab::workspace().join("init/src/iscsi/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let capture = |iqn: &str, chap: Option<Chap>, file: &str| {
        let stream = std::net::TcpStream::connect(("127.0.0.1", t.port())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut cfg = config(iqn);
        cfg.chap = chap;
        let s = terra_init::iscsi::login::login(
            Tap {
                inner: stream,
                read: Vec::new(),
            },
            &cfg,
            Instant::now() + Duration::from_secs(5),
            &mut |b| b.fill(7),
        )
        .expect("login");
        std::fs::write(dir.join(file), &s.into_stream().read).unwrap();
    };
    capture("iqn.2024-01.org.terra-os:open", None, "tgtd-login-none.bin");
    let mut chap = Chap::new("node1", Secret::new("node1-secret-12"));
    chap.algorithms = vec![ChapAlgorithm::Md5];
    capture(
        "iqn.2024-01.org.terra-os:chap",
        Some(chap),
        "tgtd-login-chap-md5.bin",
    );
}
