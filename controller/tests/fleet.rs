//! The controller end to end (ARCHITECTURE.md, "The controller"), with real parts: `terra-controller serve`
//! on loopback with its own tgtd, SQLite or a PostgreSQL server the test starts, QEMU
//! machines booting through iPXE over HTTP (SeaBIOS and OVMF), and libiscsi's `iscsi-inq`
//! as an independent initiator checking who may log in to which target.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::fleet::{self, Controller, ControllerSpec};
use lab::harness::{accel, artifacts, busybox};
use lab::vm::{Firmware, NetBoot, Outcome, Vm};

const PROGRAM: &str = env!("CARGO_BIN_EXE_terra-controller");

fn spec(state: &Path) -> ControllerSpec {
    let a = artifacts();
    ControllerSpec::new(Path::new(PROGRAM), state, &a.kernel, &a.initramfs)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start(spec: &ControllerSpec) -> Controller {
    Controller::start(spec).unwrap_or_else(|e| panic!("{e}"))
}

fn image(tag: &str) -> String {
    let layout = fleet::layout(&busybox()).unwrap_or_else(|e| panic!("{e}"));
    format!("oci:{}:{tag}", layout.display())
}

fn node_toml(dir: &Path, host: &str, mac: &str, image: &str) -> PathBuf {
    let p = dir.join(format!("{host}.toml"));
    std::fs::write(
        &p,
        format!("hostname = \"{host}\"\nmac = \"{mac}\"\nimage = \"{image}\"\n"),
    )
    .unwrap();
    p
}

/// `terra-controller node …` against `c`; (success, stdout + stderr).
fn node(c: &ControllerSpec, args: &[&str]) -> (bool, String) {
    cli(c, "node", args)
}

/// `terra-controller COMMAND …` with `c`'s server and token; (success, stdout + stderr).
fn cli(c: &ControllerSpec, command: &str, args: &[&str]) -> (bool, String) {
    c.cli(command, args)
}

fn list(c: &ControllerSpec) -> Vec<serde_json::Value> {
    let (ok, out) = node(c, &["list", "--json"]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A plain HTTP GET on loopback: (status, body).
fn get(url: &str) -> (u16, Vec<u8>) {
    get_with(url, "")
}

/// A GET with extra header lines (each ending in CRLF).
fn get_with(url: &str, headers: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// `iscsi-inq` as `initiator` (with `chap` = (user, secret)) against LUN 1 of `target` on
/// the controller's tgtd: whether the login and INQUIRY succeeded.
fn inquiry(c: &ControllerSpec, initiator: &str, target: &str, chap: Option<(&str, &str)>) -> bool {
    let auth = chap.map(|(u, s)| format!("{u}%{s}@")).unwrap_or_default();
    let url = format!("iscsi://{auth}127.0.0.1:{}/{target}/1", c.iscsi_port);
    let out = Command::new("timeout")
        .args(["30", "iscsi-inq", "-i", initiator, &url])
        .output()
        .expect("iscsi-inq (apt-get install libiscsi-bin)");
    out.status.success()
}

/// A node's own initramfs as the controller serves it, as text.
fn served_cpio(c: &ControllerSpec, mac: &str) -> String {
    let (status, body) = get(&format!(
        "{}/nodes/{}/node.cpio",
        c.url(),
        mac.replace(':', "-")
    ));
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// The CHAP credentials in a node's own initramfs, as the controller serves it.
fn served_chap(c: &ControllerSpec, mac: &str) -> (String, String) {
    let text = served_cpio(c, mac);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_string()
    };
    (field("chap_user"), field("chap_secret"))
}

/// The report token in a node's own initramfs, as the controller serves it (the file
/// beside node.toml that `[controller]` names by default).
fn served_report_token(c: &ControllerSpec, mac: &str) -> String {
    let text = served_cpio(c, mac);
    assert!(
        text.contains("[controller]\nurl = \"http://10.0.2.2:"),
        "no [controller] in {text}"
    );
    let at = text
        .find("etc/terra/controller.token")
        .unwrap_or_else(|| panic!("no token file in {text}"));
    text[at + "etc/terra/controller.token".len()..]
        .trim_start_matches('\0')
        .chars()
        // 32 characters, and the next header may follow without padding.
        .take(32)
        .collect()
}

/// POSTs `body` to the controller's report endpoint as a node does (stage0's own sender):
/// the HTTP status.
fn post_report(c: &ControllerSpec, token: &str, body: &[u8]) -> u16 {
    use terra_init::config::controller::ControllerUrl;
    use terra_init::report::send::{send, SendError};
    let url = ControllerUrl::parse(&c.url()).unwrap();
    match send(&url, token, body, Duration::from_secs(10)) {
        Ok(status) | Err(SendError::Refused { status, .. }) => status,
        Err(e) => panic!("{e}"),
    }
}

/// A report POST with any body (over the size stage0 keeps to): the HTTP status.
fn post_raw_report(c: &ControllerSpec, token: &str, body: &[u8]) -> u16 {
    post_raw_status(c, token, body).expect("an answer")
}

/// [`post_raw_report`], None when no answer came (the controller died).
fn post_raw_status(c: &ControllerSpec, token: &str, body: &[u8]) -> Option<u16> {
    let rest = c.url().strip_prefix("http://").unwrap().to_string();
    let mut s = std::net::TcpStream::connect(&rest).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/reports HTTP/1.1\r\nHost: {rest}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// `node show NAME --json`.
fn show(c: &ControllerSpec, name: &str) -> serde_json::Value {
    let (ok, out) = node(c, &["show", name, "--json"]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A node's event of kind `event` (newest first), as `node show` gives it.
fn event<'a>(shown: &'a serde_json::Value, event: &str) -> &'a serde_json::Value {
    shown["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["event"] == event))
        .unwrap_or_else(|| panic!("no {event} event: {shown:#}"))
}

fn netboot(c: &ControllerSpec, mac: &str, firmware: Firmware) -> Vm {
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.firmware = firmware;
    vm.netboot = Some(NetBoot {
        tftp_dir: None,
        bootfile: format!("{}/boot.ipxe", c.guest_url()),
        mac: mac.into(),
    });
    vm.timeout = Duration::from_secs(420);
    vm
}

#[track_caller]
fn expect_node(out: &Outcome, host: &str, version: &str) {
    for needle in [
        format!("TERRA-NODE-PROOF {host} version={version}"),
        format!("TERRA-DEMO-HOSTNAME {host}\n"),
        "TERRA-DEMO-POWEROFF".to_string(),
    ] {
        assert!(
            out.log.contains(&needle),
            "no {needle:?} in the serial log:\n{}",
            out.log
        );
    }
}

/// The `/etc/node-proof` lines on a node's LUN (the `/etc` overlay's upper directory).
fn proof(c: &ControllerSpec, host: &str) -> String {
    let lun = c.state.join("luns").join(format!("{host}.img"));
    lab::tgtd::read_from_image(&lun, "persist/etc/upper/node-proof")
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default()
}

#[test]
fn two_nodes_boot_at_once_from_their_own_luns_and_report_their_boots() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&dir.path().join("state"));
    s.extra.push("--chap".into());
    let c = start(&s);
    let v1 = image("v1");
    let (m1, m2) = ("52:54:00:7e:50:01", "52:54:00:7e:50:02");
    for (host, mac) in [("n1", m1), ("n2", m2)] {
        let file = node_toml(dir.path(), host, mac, &v1);
        let (ok, out) = node(&s, &["add", file.to_str().unwrap()]);
        assert!(ok, "{out}\n{}", c.log());
        assert!(out.contains(&format!("node {host} is ready")), "{out}");
    }
    let nodes = list(&s);
    assert_eq!(nodes.len(), 2);
    for (n, host) in nodes.iter().zip(["n1", "n2"]) {
        let keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = [
            "hostname",
            "mac",
            "image",
            "version",
            "initiator",
            "target",
            "state",
            "running_version",
            "running_digest",
            "last_boot",
            "last_result",
            "last_seen",
        ];
        want.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(n["hostname"], host);
        assert_eq!(n["state"], "ready");
        assert_eq!(n["image"], v1.as_str());
        // No boot yet, so nothing reported.
        assert_eq!(
            (&n["last_seen"], &n["last_result"]),
            (&0.into(), &"".into())
        );
    }
    // The second LUN is a clone: it shares the golden LUN's blocks (on btrfs or XFS).
    let (n1_t, n2_t) = (
        nodes[0]["target"].as_str().unwrap(),
        nodes[1]["target"].as_str().unwrap(),
    );
    let (n1_i, n2_i) = (
        nodes[0]["initiator"].as_str().unwrap(),
        nodes[1]["initiator"].as_str().unwrap(),
    );

    // Both machines at once: n1 under SeaBIOS, n2 under OVMF.
    let r1 = netboot(&s, m1, Firmware::Bios)
        .spawn_captured(None)
        .expect("qemu");
    let r2 = netboot(&s, m2, Firmware::Uefi)
        .spawn_captured(None)
        .expect("qemu");
    let (o1, o2) = (r1.finish().expect("n1 runs"), r2.finish().expect("n2 runs"));
    expect_node(&o1, "n1", "v1");
    expect_node(&o2, "n2", "v1");
    // Each wrote to its own root only.
    let (p1, p2) = (proof(&s, "n1"), proof(&s, "n2"));
    assert!(
        p1.contains("node n1") && !p1.contains("node n2"),
        "n1's LUN: {p1}"
    );
    assert!(
        p2.contains("node n2") && !p2.contains("node n1"),
        "n2's LUN: {p2}"
    );
    // The controller saw both log in.
    let states: Vec<String> = list(&s)
        .iter()
        .map(|n| n["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["booted", "booted"], "{}", c.log());
    // And each reported its boot from the initramfs: the version its LUN runs, with the
    // image's digest and the phase times.
    for (n, o) in list(&s).iter().zip([&o1, &o2]) {
        let host = n["hostname"].as_str().unwrap();
        assert!(
            o.log.contains("report: boot reported to http://10.0.2.2:"),
            "{host}: {}",
            o.log
        );
        assert_eq!(n["running_version"], n["version"], "{n}");
        assert_eq!(n["last_result"], "booted", "{n}");
        assert!(
            n["running_digest"].as_str().unwrap().starts_with("sha256:"),
            "{n}"
        );
        let shown = show(&s, host);
        let boot = event(&shown, "boot");
        let r = &boot["report"];
        assert_eq!(
            (&r["hostname"], &r["sent_by"]),
            (&host.into(), &"stage0".into())
        );
        assert_eq!(r["version"]["name"], n["version"]);
        let phases: Vec<&str> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            phases,
            ["early", "config", "devices", "network", "iscsi", "storage", "root"],
            "{r}"
        );
        assert!(r["initramfs_ms"].as_f64().unwrap() > 0.0, "{r}");
    }
    let (ok, page) = node(&s, &["show", "n1"]);
    assert!(ok && page.contains("phases (ms): early"), "{page}");

    // Each target lets in its own initiator, with its CHAP secret, and nobody else.
    let (u1, s1) = served_chap(&s, m1);
    assert!(
        inquiry(&s, n1_i, n1_t, Some((&u1, &s1))),
        "n1's initiator with n1's CHAP"
    );
    assert!(
        !inquiry(&s, n2_i, n1_t, Some((&u1, &s1))),
        "n2's initiator on n1's target"
    );
    assert!(
        !inquiry(&s, n1_i, n1_t, Some((&u1, "wrong-secret-123456"))),
        "a wrong secret"
    );
    assert!(!inquiry(&s, n1_i, n1_t, None), "no CHAP at all");
    let (u2, s2) = served_chap(&s, m2);
    assert!(inquiry(&s, n2_i, n2_t, Some((&u2, &s2))));
    assert!(!inquiry(&s, n1_i, n2_t, Some((&u2, &s2))));
    // No secret in the controller's log or its command line.
    let log = c.log();
    assert!(
        !log.contains(&s1) && !log.contains(&s2),
        "a secret in the log:\n{log}"
    );

    // An upgrade of n1's LUN while it is off adds v2 as its default (n2 stays on v1); the
    // rollout test boots such an upgrade, with the controller hanging meanwhile.
    let (ok, out) = node(&s, &["upgrade", "n1", &image("v2")]);
    assert!(ok, "{out}\n{}", c.log());
    let now = list(&s);
    assert_eq!(now[0]["image"], image("v2").as_str());
    assert_ne!(now[0]["version"], nodes[0]["version"]);
    assert_eq!(now[1]["version"], nodes[1]["version"]);

    // Deleting a node removes its target, LUN and entry.
    let (ok, out) = node(&s, &["delete", "n2"]);
    assert!(ok, "{out}");
    assert!(!s.state.join("luns/n2.img").exists());
    assert!(!inquiry(&s, n2_i, n2_t, Some((&u2, &s2))));
    assert_eq!(list(&s).len(), 1);
}

#[test]
fn unknown_machines_are_recorded_and_bad_input_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&dir.path().join("state"));
    let c = start(&s);
    let v1 = image("v1");
    // The boot entry chains by MAC; an unknown MAC gets the default entry and is recorded.
    let (status, body) = get(&format!("{}/boot.ipxe", s.url()));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/ipxe?mac=${mac:hexhyp}"));
    let (status, body) = get(&format!("{}/ipxe?mac=52-54-00-99-00-01", s.url()));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("not a known node"));
    let (ok, out) = node(&s, &["discovered"]);
    assert!(ok && out.contains("52:54:00:99:00:01"), "{out}");
    // The shared files honour range requests (iPXE and UEFI HTTP boot resume with them).
    let whole = std::fs::read(&artifacts().kernel).unwrap();
    let (status, part) = get_with(
        &format!("{}/assets/vmlinuz", s.url()),
        "Range: bytes=512-1023\r\n",
    );
    assert_eq!(status, 206);
    assert_eq!(part, whole[512..1024]);

    let good = node_toml(dir.path(), "a1", "52:54:00:7e:51:01", &v1);
    let (ok, out) = node(&s, &["add", good.to_str().unwrap()]);
    assert!(ok, "{out}\n{}", c.log());
    let cases = [
        (
            "bad.toml",
            "hostname = \"x\"\nbogus = 1\n".to_string(),
            "bogus",
        ),
        (
            "dup-mac.toml",
            format!("hostname = \"a2\"\nmac = \"52:54:00:7E:51:01\"\nimage = \"{v1}\"\n"),
            "belongs to node a1",
        ),
        (
            "dup-host.toml",
            format!("hostname = \"a1\"\nmac = \"52:54:00:7e:51:09\"\nimage = \"{v1}\"\n"),
            "belongs to node a1",
        ),
        (
            "no-image.toml",
            "hostname = \"a3\"\nmac = \"52:54:00:7e:51:03\"\nimage = \"oci:/nonexistent:v1\"\n"
                .to_string(),
            "image oci:/nonexistent:v1",
        ),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (ok, out) = node(&s, &["add", p.to_str().unwrap()]);
        assert!(!ok && out.contains(want), "{name}: {out}");
        assert!(
            out.contains(name) || want.contains("node a1") || want.starts_with("image"),
            "{name}: {out}"
        );
    }
    // Nothing was created for them.
    assert_eq!(list(&s).len(), 1);

    // Boot reports: only with the node's own token, for itself, well formed and small.
    let token = served_report_token(&s, "52:54:00:7e:51:01");
    let report = |host: &str| {
        format!(
            r#"{{"event":"boot","hostname":"{host}","boot_id":"b-1","sent_by":"stage0","version":{{"name":"os","why":"default"}}}}"#
        )
    };
    assert_eq!(post_report(&s, "not-a-token", report("a1").as_bytes()), 401);
    assert_eq!(post_report(&s, &token, report("a2").as_bytes()), 403);
    assert_eq!(post_report(&s, &token, b"{\"event\":\"boot\""), 400);
    let huge = report("a1").replace("\"os\"", &format!("\"{}\"", "x".repeat(9000)));
    // Over 8 KiB: stage0's own sender will not even build it; a raw client is refused.
    assert_eq!(post_raw_report(&s, &token, huge.as_bytes()), 413);
    assert_eq!(
        show(&s, "a1")["events"],
        serde_json::json!([]),
        "nothing recorded"
    );
    assert_eq!(list(&s)[0]["last_seen"], 0);
    assert_eq!(post_report(&s, &token, report("a1").as_bytes()), 204);
    assert_eq!(post_report(&s, &token, report("a1").as_bytes()), 204);
    let shown = show(&s, "a1");
    assert_eq!(
        shown["events"].as_array().unwrap().len(),
        1,
        "sent twice, counted once"
    );
    assert_eq!(shown["running_version"], "os");
    assert!(!c.log().contains(&token), "the token in the log");
    let luns: Vec<_> = std::fs::read_dir(s.state.join("luns")).unwrap().collect();
    assert_eq!(luns.len(), 1);
    // Changes need the token.
    let out = Command::new(PROGRAM)
        .args(["node", "--server", &s.url(), "delete", "a1"])
        .env_remove("TERRA_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    assert_eq!(list(&s).len(), 1);
}

/// Targets on the controller's tgtd, by IQN (through tgtadm, not the controller's code).
fn tgtd_targets(s: &ControllerSpec) -> Vec<String> {
    let out = Command::new("tgtadm")
        .args([
            "-C",
            &s.control_port.to_string(),
            "--lld",
            "iscsi",
            "--mode",
            "target",
            "--op",
            "show",
        ])
        .output()
        .expect("tgtadm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Target ")
                .and_then(|r| r.split_once(": "))
                .map(|(_, iqn)| iqn.to_string())
        })
        .collect()
}

#[test]
fn a_killed_controller_leaves_a_ready_node_or_nothing_and_tgtd_restarts_heal() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let v1 = image("v1");
    // The golden LUN first, so every crash point below is past it.
    let s = spec(&state);
    {
        let _c = start(&s);
        let f = node_toml(dir.path(), "k0", "52:54:00:7e:52:00", &v1);
        let (ok, out) = node(&s, &["add", f.to_str().unwrap()]);
        assert!(ok, "{out}");
    }
    for (i, point) in [
        "controller-lun",
        "controller-target",
        "controller-entry",
        "controller-ready",
    ]
    .iter()
    .enumerate()
    {
        let mut crashing = s.clone();
        crashing.env = vec![("TERRA_CRASH_AT".into(), point.to_string())];
        let mut c = start(&crashing);
        let host = format!("k{}", i + 1);
        let f = node_toml(
            dir.path(),
            &host,
            &format!("52:54:00:7e:52:0{}", i + 1),
            &v1,
        );
        let (ok, out) = node(&s, &["add", f.to_str().unwrap()]);
        assert!(
            !ok,
            "{point}: the add should have died with the controller: {out}"
        );
        assert!(
            c.wait_exit(Duration::from_secs(30)),
            "{point}: controller still running"
        );
        // Its tgtd stays up, as after a real crash (Drop would stop it).
        std::mem::forget(c);
        let c = start(&s);
        let nodes = list(&s);
        let n = nodes
            .iter()
            .find(|n| n["hostname"] == host.as_str())
            .unwrap_or_else(|| panic!("{point}: node {host} gone: {nodes:?}\n{}", c.log()));
        assert_eq!(n["state"], "ready", "{point}: {n}\n{}", c.log());
        drop(c);
    }
    // Every node has exactly its target, LUN and entry; nothing else is left.
    let c = start(&s);
    let nodes = list(&s);
    let mut want: Vec<String> = nodes
        .iter()
        .map(|n| n["target"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    let mut got = tgtd_targets(&s);
    got.sort();
    assert_eq!(got, want, "{}", c.log());
    let mut luns: Vec<String> = std::fs::read_dir(s.state.join("luns"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    luns.sort();
    assert_eq!(luns, ["k0.img", "k1.img", "k2.img", "k3.img", "k4.img"]);
    // tgtd killed: the controller starts it again and makes every target again.
    let before = c.tgtd_pid().expect("tgtd pid");
    fleet::kill_tgtd(&s.state);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tgtd_targets(&s).len() < want.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(c.tgtd_pid(), Some(before));
    let mut back = tgtd_targets(&s);
    back.sort();
    assert_eq!(back, want, "{}", c.log());
    let k0 = &nodes[0];
    assert!(inquiry(
        &s,
        k0["initiator"].as_str().unwrap(),
        k0["target"].as_str().unwrap(),
        None
    ));
    // A delete killed half-way finishes on restart.
    drop(c);
    let mut crashing = s.clone();
    crashing.env = vec![("TERRA_CRASH_AT".into(), "controller-deleting".into())];
    let mut c = start(&crashing);
    let (ok, _) = node(&s, &["delete", "k1"]);
    assert!(!ok);
    assert!(c.wait_exit(Duration::from_secs(30)));
    std::mem::forget(c);
    let c = start(&s);
    assert!(
        list(&s).iter().all(|n| n["hostname"] != "k1"),
        "{}",
        c.log()
    );
    assert!(!s.state.join("luns/k1.img").exists());
    assert_eq!(tgtd_targets(&s).len(), 4);
    // Restarted with another portal while its tgtd still runs on the old one: it says so
    // and stops, instead of sending nodes to a portal nobody listens on.
    let mut c = c;
    c.kill();
    std::mem::forget(c);
    let mut moved = s.clone();
    moved.iscsi_port = lab::free_port().unwrap();
    let err = Controller::start(&moved)
        .err()
        .expect("a controller on another portal");
    assert!(
        err.contains(&format!("--iscsi-listen 127.0.0.1:{}", moved.iscsi_port))
            && err.contains(&format!("serves iSCSI on 127.0.0.1:{} only", s.iscsi_port)),
        "{err}"
    );
    let c = start(&s);
    assert_eq!(tgtd_targets(&s).len(), 4, "{}", c.log());
}

#[test]
fn two_controllers_on_one_postgresql_share_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, s1, s2) = on_one_postgres(dir.path(), ["c1", "c2"]);
    let (_c1, _c2) = (start(&s1), start(&s2));
    let v1 = image("v1");
    let (m1, m2) = ("52:54:00:7e:53:01", "52:54:00:7e:53:02");
    let f1 = node_toml(dir.path(), "p1", m1, &v1);
    let f2 = node_toml(dir.path(), "p2", m2, &v1);
    // Both at once, each through its own controller.
    let t = {
        let (s2, f2) = (s2.clone(), f2.clone());
        std::thread::spawn(move || node(&s2, &["add", f2.to_str().unwrap()]))
    };
    let (ok1, out1) = node(&s1, &["add", f1.to_str().unwrap()]);
    let (ok2, out2) = t.join().unwrap();
    assert!(ok1 && ok2, "{out1}\n{out2}");
    // Either controller lists both.
    assert_eq!(list(&s1), list(&s2));
    assert_eq!(list(&s2).len(), 2);
    // p1's LUN is on c1; it boots through c2's HTTP server.
    let o = netboot(&s2, m1, Firmware::Bios)
        .run_captured()
        .expect("qemu");
    expect_node(&o, "p1", "v1");
    assert!(proof(&s1, "p1").contains("node p1"));
    // A change to a node another controller holds is refused with where it is.
    let (ok, out) = node(&s2, &["delete", "p1"]);
    assert!(!ok && out.contains("controller"), "{out}");
}

/// Runs `cmd`, a program this test has just copied (which may run another it copied): a
/// test thread that forks between a copy's open and close holds the file open for writing
/// until its child execs, and exec fails with ETXTBSY for that moment, so that error (ours,
/// or the one terra reports for the controller beside it) is retried, bounded.
fn output_of_copy(cmd: &mut Command) -> std::process::Output {
    for _ in 0..50 {
        match cmd.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {}
            Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Text file busy") => {}
            other => return other.unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{cmd:?}: still busy (ETXTBSY) after 5 s")
}

#[test]
fn terra_serve_and_node_run_the_controller_found_beside_terra() {
    let dir = tempfile::tempdir().unwrap();
    let terra = dir.path().join("terra");
    std::fs::copy(&artifacts().terra, &terra).unwrap();
    // Alone, terra says where it looked (with no terra-controller on PATH either).
    let out = output_of_copy(
        Command::new(&terra)
            .args(["node", "list"])
            .env("PATH", dir.path().join("empty")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("terra-controller") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Beside it, `terra node --help` is the controller's.
    std::fs::copy(PROGRAM, dir.path().join("terra-controller")).unwrap();
    let out = output_of_copy(Command::new(&terra).args(["node", "--help"]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Manage the nodes of a Terra controller"));
}

#[test]
fn a_controller_with_a_verify_key_refuses_unsigned_images_before_making_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("key.pem"), dir.path().join("pub.pem"));
    for args in [
        vec![
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            key.to_str().unwrap(),
        ],
        vec![
            "ec",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A key that is not one stops the controller at start, naming it.
    let mut bad = spec(&dir.path().join("bad"));
    bad.extra = vec![
        "--verify-key".into(),
        dir.path().join("none.pem").display().to_string(),
    ];
    let err = Controller::start(&bad).err().expect("refused");
    assert!(
        err.contains("--verify-key") && err.contains("none.pem"),
        "{err}"
    );

    let mut s = spec(&dir.path().join("state"));
    s.extra = vec!["--verify-key".into(), public.display().to_string()];
    let c = start(&s);
    let v1 = image("v1");
    let f = node_toml(dir.path(), "s1", "52:54:00:7e:54:01", &v1);
    let (ok, out) = node(&s, &["add", f.to_str().unwrap()]);
    assert!(!ok, "an unsigned image was accepted: {out}");
    assert!(
        out.contains(&format!("image {v1}")) && out.contains("sign"),
        "{out}\n{}",
        c.log()
    );
    assert!(list(&s).is_empty());
    // A rollout of it is refused the same way, before it is stored.
    let (ok, out) = rollout(&s, &["start", &v1]);
    assert!(
        !ok && out.contains(&format!("image {v1}")) && out.contains("sign"),
        "{out}"
    );
    let (ok, out) = rollout(&s, &["status"]);
    assert!(ok && out.contains("no rollouts"), "{out}");
    assert_eq!(std::fs::read_dir(s.state.join("luns")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(s.state.join("golden")).unwrap().count(),
        0
    );
}

/// `terra rollout …` against `c`; (success, stdout + stderr).
fn rollout(c: &ControllerSpec, args: &[&str]) -> (bool, String) {
    cli(c, "rollout", args)
}

/// Starts a rollout; its id.
fn start_rollout(c: &ControllerSpec, args: &[&str]) -> String {
    let (ok, out) = rollout(c, &[&["start"], args].concat());
    assert!(ok, "{out}");
    out.split_whitespace()
        .nth(1)
        .filter(|id| id.starts_with("r-"))
        .unwrap_or_else(|| panic!("no rollout id in {out}"))
        .to_string()
}

/// `rollout status ID --json`.
fn rollout_status(c: &ControllerSpec, id: &str) -> serde_json::Value {
    let (ok, out) = rollout(c, &["status", id, "--json"]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Each member's state, by hostname.
fn member_states(v: &serde_json::Value) -> Vec<(String, String)> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["hostname"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn states(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}

/// Boots the netboot machines `macs` at once (SeaBIOS and OVMF in turn) and returns their
/// consoles.
fn boot_all(c: &ControllerSpec, macs: &[&str]) -> Vec<Outcome> {
    let running: Vec<_> = macs
        .iter()
        .enumerate()
        .map(|(i, mac)| {
            let fw = if i % 2 == 0 {
                Firmware::Bios
            } else {
                Firmware::Uefi
            };
            netboot(c, mac, fw).spawn_captured(None).expect("qemu")
        })
        .collect();
    running
        .into_iter()
        .map(|r| r.finish().expect("the node runs"))
        .collect()
}

/// A fleet moves in waves on what its nodes report: v2 reaches the canary, then the rest;
/// v3 (no init) makes the canary fall back in the same boot, and the rollout pauses there
/// naming the node and stage0's reason, with nobody else touched; v3 is never offered to
/// the canary again; after an abort, a fixed v4 reaches everyone. The second wave's node
/// boots while the controller hangs: its report waits for the booted system. (A health
/// check's rejection in a rollout: the Debian disk node, `auto_update.rs`.)
#[test]
fn a_rollout_moves_the_fleet_in_waves_and_stops_at_the_first_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&dir.path().join("state"));
    let c = start(&s);
    let (m1, m2) = ("52:54:00:7e:52:01", "52:54:00:7e:52:02");
    for (host, mac) in [("r1", m1), ("r2", m2)] {
        let file = node_toml(dir.path(), host, mac, &image("v1"));
        let (ok, out) = node(&s, &["add", file.to_str().unwrap()]);
        assert!(ok, "{out}\n{}", c.log());
    }
    let (ok, out) = node(&s, &["label", "r1", "ring=canary", "rack=a"]);
    assert!(ok && out.contains("rack=a ring=canary"), "{out}");
    let (ok, out) = node(&s, &["label", "r1", "rack-"]);
    assert!(ok && out.contains("node r1: ring=canary"), "{out}");

    // Bad plans change nothing.
    for (args, want) in [
        (vec!["--nodes", "r1,nobody"], "no node named nobody"),
        (vec!["--nodes", "label=ring=none"], "no node matches"),
        (vec!["--waves", "0%"], "--waves"),
        (vec!["--confirm-within", "soon"], "--confirm-within"),
    ] {
        let (ok, out) = rollout(&s, &[&["start", &image("v2")], &args[..]].concat());
        assert!(!ok && out.contains(want), "{args:?}: {out}");
    }
    let (ok, out) = rollout(&s, &["start", "oci:/nonexistent:v9"]);
    assert!(!ok && out.contains("oci:/nonexistent:v9"), "{out}");
    let (ok, out) = rollout(&s, &["status"]);
    assert!(ok && out.contains("no rollouts"), "{out}");

    // v2: the canary first (wave 1), the rest once it confirmed.
    let id = start_rollout(&s, &[&image("v2"), "--waves", "1,100%"]);
    let v = rollout_status(&s, &id);
    assert_eq!(
        member_states(&v),
        states(&[("r1", "waiting"), ("r2", "pending")])
    );
    let o = &boot_all(&s, &[m1])[0];
    expect_node(o, "r1", "v2");
    assert!(o.log.contains("TERRA-DEMO-BLESS rc=0"), "{}", o.log);
    let v = rollout_status(&s, &id);
    assert_eq!(
        member_states(&v),
        states(&[("r1", "confirmed"), ("r2", "waiting")]),
        "{v:#}\n{}",
        c.log()
    );
    // r2 boots it while the controller hangs (SIGSTOP once stage0 runs: the kernel still
    // accepts the connection, nobody answers; tgtd serves the LUN on its own): the boot
    // goes on after the send bound, and the report waits for the booted system, whose
    // confirmation delivers it once the controller is back.
    let mut r = netboot(&s, m2, Firmware::Uefi)
        .spawn_captured(None)
        .expect("qemu");
    let in_stage0 = r.wait_for("phase devices done", Duration::from_secs(300));
    c.pause(true);
    let waited = r.wait_for("the booted system sends it", Duration::from_secs(300));
    c.pause(false);
    let o = r.finish().expect("r2 runs");
    assert!(in_stage0 && waited, "{}", o.log);
    assert!(o.log.contains("no answer within 300 ms"), "{}", o.log);
    let report_ms: f64 = o
        .log
        .lines()
        .find_map(|l| l.split("phase report done in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no report phase:\n{}", o.log));
    eprintln!("measured: the report phase took {report_ms:.1} ms with a silent controller");
    assert!(report_ms < 1500.0, "the send is bounded: {report_ms} ms");
    expect_node(&o, "r2", "v2");
    assert!(o.log.contains("TERRA-DEMO-BLESS rc=0"), "{}", o.log);
    let v = rollout_status(&s, &id);
    assert_eq!(v["state"], "done", "{v:#}\n{}", c.log());
    // r2's trial boot (stage0's report, delivered late) and its confirmation, one boot id.
    let shown = show(&s, "r2");
    let boot = event(&shown, "boot");
    assert_eq!(boot["result"], "tentative");
    assert_eq!(boot["report"]["sent_by"], "stage0");
    assert!(
        boot["report"]["phases"].to_string().contains("\"root\""),
        "{boot}"
    );
    let confirmed = event(&shown, "confirmed");
    assert_eq!(confirmed["report"]["sent_by"], "bless");
    assert_eq!(confirmed["report"]["boot_id"], boot["report"]["boot_id"]);
    assert_eq!(shown["events"].as_array().unwrap().len(), 2, "{shown:#}");
    let v2_digest = v["digest"].as_str().unwrap().to_string();
    for n in list(&s) {
        assert_eq!(n["running_digest"], v2_digest.as_str(), "{n}");
        assert_eq!(n["last_result"], "confirmed", "{n}");
    }

    // v3 cannot boot: the canary falls back in the same boot, the rollout pauses on its
    // report, and r2 is not touched.
    let id3 = start_rollout(&s, &[&image("v3"), "--nodes", "all", "--waves", "1,100%"]);
    let o = &boot_all(&s, &[m1])[0];
    expect_node(o, "r1", "v2");
    assert!(o.log.contains("fell back to version"), "{}", o.log);
    let v = rollout_status(&s, &id3);
    assert_eq!(v["state"], "paused", "{v:#}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("node r1") && reason.contains("fell back from"),
        "{reason}"
    );
    assert!(reason.contains("node-init"), "stage0's reason: {reason}");
    assert_eq!(
        member_states(&v),
        states(&[("r1", "failed"), ("r2", "pending")])
    );
    let (ok, page) = rollout(&s, &["status", &id3]);
    assert!(ok && page.contains("failed: r1: fell back from"), "{page}");
    // The fleet page in a real browser: the paused rollout and its failing node.
    let token = std::fs::read_to_string(s.state.join("token")).unwrap();
    let (status, body) = get(&format!("{}/fleet", s.url()));
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let png = dir.path().join("fleet.png");
    let dom = fleet::browse(&format!("{}/fleet?token={}", s.url(), token.trim()), &png)
        .unwrap_or_else(|e| panic!("{e}"));
    for want in [
        id3.as_str(),
        "class=\"paused\">paused",
        "fell back from",
        ">r1</a>",
        ">r2</a>",
    ] {
        assert!(dom.contains(want), "no {want:?} in the page:\n{dom}");
    }
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "a blank screenshot?"
    );
    let dom = fleet::browse(
        &format!("{}/fleet/nodes/r1?token={}", s.url(), token.trim()),
        &png,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The node page is behind the cookie the fleet page sets: a fresh browser is refused.
    assert!(dom.contains("needs the controller's token"), "{dom}");
    let (status, body) = get_with(
        &format!("{}/fleet/nodes/r1", s.url()),
        &format!("Authorization: Bearer {}\r\n", token.trim()),
    );
    let page = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(
        page.contains("<svg") && page.contains(">root</text>"),
        "{page}"
    );
    assert!(page.contains("fell back from"), "{page}");

    // r2 is held by the paused rollout: a second one must wait for an abort.
    let (ok, out) = rollout(&s, &["start", &image("v4")]);
    assert!(!ok && out.contains(&id3) && out.contains("abort"), "{out}");
    let (ok, out) = rollout(&s, &["abort", &id3]);
    assert!(ok && out.contains("aborted"), "{out}");
    assert_eq!(
        member_states(&rollout_status(&s, &id3)),
        states(&[("r1", "failed"), ("r2", "aborted")])
    );
    // The canary is never offered v3 again.
    let again = start_rollout(&s, &[&image("v3"), "--nodes", "r1"]);
    let v = rollout_status(&s, &again);
    assert_eq!(member_states(&v), states(&[("r1", "skipped")]));
    assert_eq!(v["state"], "done", "{v:#}");

    // v4, everyone in one wave: both boot it and confirm.
    let id4 = start_rollout(&s, &[&image("v4"), "--waves", "100%"]);
    let outs = boot_all(&s, &[m1, m2]);
    expect_node(&outs[0], "r1", "v4");
    expect_node(&outs[1], "r2", "v4");
    let v = rollout_status(&s, &id4);
    assert_eq!(v["state"], "done", "{v:#}\n{}", c.log());
    assert_eq!(
        member_states(&v),
        states(&[("r1", "confirmed"), ("r2", "confirmed")])
    );
    let log = c.log();
    assert!(
        log.contains(&format!("rollout {id3} paused after 1 failure(s): node r1")),
        "{log}"
    );
}

/// Restarts `s`'s controller with `TERRA_CRASH_AT=point`, runs `trigger` (which reaches
/// the point), waits for the controller to kill itself (within `within`; its tgtd stays up,
/// as after a real crash), and starts it again: the restarted controller.
fn crash_at(
    s: &ControllerSpec,
    point: &str,
    within: Duration,
    trigger: impl FnOnce(),
) -> Controller {
    let mut crashing = s.clone();
    crashing.env = vec![("TERRA_CRASH_AT".into(), point.to_string())];
    let mut c = start(&crashing);
    trigger();
    assert!(c.wait_exit(within), "{point}: still running\n{}", c.log());
    std::mem::forget(c);
    start(s)
}

/// Two controllers' specs on one PostgreSQL server (returned too: it stops when dropped),
/// their state directories `names` under `dir`.
fn on_one_postgres(
    dir: &Path,
    names: [&str; 2],
) -> (lab::postgres::Postgres, ControllerSpec, ControllerSpec) {
    let pg = lab::postgres::Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let mut a = spec(&dir.join(names[0]));
    let mut b = spec(&dir.join(names[1]));
    a.database = Some(pg.url());
    b.database = Some(pg.url());
    (pg, a, b)
}

/// A GET that may lose its answer (the controller killing itself mid-request): the body.
fn get_maybe(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    (!raw.is_empty()).then(|| String::from_utf8_lossy(&raw).into_owned())
}

/// Waits (bounded) until member `host` of rollout `id` is in `state`; the last status.
fn wait_member(c: &ControllerSpec, id: &str, host: &str, state: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let v = rollout_status(c, id);
        let now = member_states(&v);
        if now.iter().any(|(h, s)| h == host && s == state) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{host} never {state}: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The boot report stage0 sends after booting `version` (`digest`) on trial, or the
/// booted system's confirmation of it.
fn sim_report(host: &str, event: &str, version: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": event, "hostname": host, "boot_id": format!("sim-{host}"),
        "sent_by": if event == "boot" { "stage0" } else { "bless" },
        "version": {"name": version, "digest": digest, "why": "tentative", "tentative": true},
        "phases": [{"name": "early", "ms": 1.0}],
    }))
    .unwrap()
}

/// Crash safety of rollouts with real controllers, tgtd and LUN upgrades on one PostgreSQL
/// (the nodes are simulated by their HTTP requests: the boot script, the reports): SIGKILL
/// after a member was offered, after it was moved to `upgrading`, after its LUN was
/// upgraded, and after a report was stored → on restart the rollout continues where it
/// was; five boot-script requests for one node at two controllers start one upgrade; never
/// more members moving than `--max-unavailable`.
#[test]
fn a_killed_controller_continues_its_rollout_and_two_never_move_a_node_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, a, b) = on_one_postgres(dir.path(), ["a", "b"]);
    let (ca, cb) = (start(&a), start(&b));
    let macs = [
        "52:54:00:7e:55:01",
        "52:54:00:7e:55:02",
        "52:54:00:7e:55:03",
    ];
    let mut tokens = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let f = node_toml(dir.path(), &format!("k{}", i + 1), mac, &image("v1"));
        let (ok, out) = node(&a, &["add", f.to_str().unwrap()]);
        assert!(ok, "{out}\n{}", ca.log());
        tokens.push(served_report_token(&b, mac));
    }
    let ipxe = |c: &ControllerSpec, mac: &str| {
        get_maybe(&format!("{}/ipxe?mac={}", c.url(), mac.replace(':', "-"))).unwrap_or_default()
    };
    let moving = |v: &serde_json::Value| {
        member_states(v)
            .iter()
            .filter(|(_, s)| ["waiting", "upgrading", "booting", "trial"].contains(&s.as_str()))
            .count()
    };

    // Killed right after offering the first member: on restart the wave goes on.
    drop(cb);
    let cb = crash_at(&b, "rollout-offered", Duration::from_secs(30), || {
        let (ok, out) = rollout(
            &b,
            &[
                "start",
                &image("v2"),
                "--waves",
                "100%",
                "--max-unavailable",
                "2",
            ],
        );
        assert!(!ok, "the start should have died with the controller: {out}");
    });
    let (ok, out) = rollout(&b, &["status", "--json"]);
    assert!(ok, "{out}");
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = all[0]["id"]
        .as_str()
        .expect("the rollout was stored")
        .to_string();
    let v = wait_member(&b, &id, "k2", "waiting");
    assert_eq!(
        member_states(&v),
        states(&[("k1", "waiting"), ("k2", "waiting"), ("k3", "pending")])
    );
    let digest = v["digest"].as_str().unwrap().to_string();

    // Killed after moving k1 to upgrading, before its LUN was touched: k1 waits again.
    drop(ca);
    let ca = crash_at(&a, "rollout-upgrading", Duration::from_secs(30), || {
        let _ = ipxe(&a, macs[0]);
    });
    assert!(
        ca.log().contains("node k1's upgrade was interrupted"),
        "{}",
        ca.log()
    );
    wait_member(&b, &id, "k1", "waiting");

    // Five requests for k1's boot script at once, at both controllers: one upgrade.
    let answers: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..5)
            .map(|i| {
                let (c, mac) = (if i % 2 == 0 { &a } else { &b }, macs[0]);
                sc.spawn(move || ipxe(c, mac))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let started = answers
        .iter()
        .filter(|t| t.contains("gets its rollout's version now"))
        .count();
    assert_eq!(started, 1, "{answers:#?}");
    let v = wait_member(&b, &id, "k1", "booting");
    let k1_version = v["members"][0]["version"].as_str().unwrap().to_string();
    assert!(!k1_version.is_empty(), "{v:#}");
    assert!(moving(&v) <= 2, "{v:#}");

    // Killed after k2's LUN was upgraded, before the member moved: the next boot script
    // request upgrades again (finding the version there) and k2 is booting.
    drop(ca);
    let ca = crash_at(&a, "rollout-upgraded", Duration::from_secs(180), || {
        let _ = ipxe(&a, macs[1]);
    });
    wait_member(&b, &id, "k2", "waiting");
    assert!(ipxe(&a, macs[1]).contains("gets its rollout's version now"));
    let v = wait_member(&b, &id, "k2", "booting");
    let k2_version = v["members"][1]["version"].as_str().unwrap().to_string();

    // k1's boot report reaches a controller that dies right after storing it: on restart
    // the stored report moves k1 all the same.
    drop(cb);
    let _cb = crash_at(&b, "report-stored", Duration::from_secs(30), || {
        let _ = post_raw_status(
            &b,
            &tokens[0],
            &sim_report("k1", "boot", &k1_version, &digest),
        );
    });
    wait_member(&a, &id, "k1", "trial");
    // Confirmations move k1 and k2 to confirmed, which lets k3 in (at most two moving).
    for (i, (host, version)) in [("k1", &k1_version), ("k2", &k2_version)]
        .iter()
        .enumerate()
    {
        if *host == "k2" {
            assert_eq!(
                post_report(&a, &tokens[i], &sim_report(host, "boot", version, &digest)),
                204
            );
        }
        assert_eq!(
            post_report(
                &a,
                &tokens[i],
                &sim_report(host, "confirmed", version, &digest)
            ),
            204
        );
    }
    let v = wait_member(&a, &id, "k3", "waiting");
    assert!(moving(&v) <= 2, "{v:#}");
    assert!(ipxe(&a, macs[2]).contains("gets its rollout's version now"));
    let v = wait_member(&a, &id, "k3", "booting");
    let k3_version = v["members"][2]["version"].as_str().unwrap().to_string();
    for event in ["boot", "confirmed"] {
        assert_eq!(
            post_report(
                &b,
                &tokens[2],
                &sim_report("k3", event, &k3_version, &digest)
            ),
            204
        );
    }
    let v = rollout_status(&a, &id);
    assert_eq!(v["state"], "done", "{v:#}\n{}", ca.log());
    // Every LUN got the rollout's digest.
    for host in ["k1", "k2", "k3"] {
        assert_eq!(show(&a, host)["digest"], digest.as_str(), "{host}");
    }
}

/// A report as a node with its own disk sends it: `applied` by `terra update`, `boot` by
/// stage0 (with the fallbacks it gives), `confirmed` by bless.
fn disk_report(host: &str, event: &str, version: &str, digest: &str, fell_from: &str) -> Vec<u8> {
    let fallbacks = if fell_from.is_empty() {
        serde_json::json!([])
    } else {
        serde_json::json!([{"name": fell_from, "why": "tentative",
                            "reason": "no /sbin/init in the version"}])
    };
    serde_json::to_vec(&serde_json::json!({
        "event": event, "hostname": host, "boot_id": format!("disk-{host}-{event}-{version}"),
        "sent_by": match event { "boot" => "stage0", "applied" => "terra", _ => "bless" },
        "version": {"name": version, "digest": digest, "why": "tentative",
                    "tentative": fell_from.is_empty(), "fallbacks": fallbacks},
    }))
    .unwrap()
}

/// A node with its own disk (`node add --disk-node`): its node.toml gains `[controller]
/// url` and its token file (0600); it has no LUN, target or boot script. It asks `GET
/// /v1/target` (with the node's own sender) for what to run: nothing until a rollout names
/// it, then the rollout's image and digest. `applied` (its `terra update`) moves it to
/// booting with its version's name, its boot and confirmation finish the rollout; a later
/// version it falls back from fails and pauses that rollout, which then names nothing.
#[test]
fn a_disk_node_asks_for_its_target_and_moves_on_its_own_reports() {
    use terra_init::report::outbox::Destination;
    let dir = tempfile::tempdir().unwrap();
    let s = spec(&dir.path().join("state"));
    let c = start(&s);
    let file = dir.path().join("d1.toml");
    std::fs::write(
        &file,
        "hostname = \"d1\"\n[update]\nsource = \"controller\"\n",
    )
    .unwrap();
    let (ok, out) = node(&s, &["add", "--disk-node", file.to_str().unwrap()]);
    assert!(
        ok && out.contains("node d1 has its own disk"),
        "{out}\n{}",
        c.log()
    );
    let kept = std::fs::read_to_string(&file).unwrap();
    let cfg = terra_init::config::NodeConfig::parse(&kept, &file).unwrap();
    // The URL nodes reach the controller by (its --public-url).
    assert_eq!(
        cfg.controller.url.as_deref(),
        Some(s.guest_url().as_str()),
        "{kept}"
    );
    let token_file = dir.path().join("controller.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!out.contains(token.trim()) && !c.log().contains(token.trim()));
    // Listed as a disk node: no MAC, initiator or target; no LUN made.
    let n = list(&s)
        .into_iter()
        .find(|n| n["hostname"] == "d1")
        .unwrap();
    assert_eq!(
        (&n["state"], &n["mac"], &n["target"]),
        (&"disk".into(), &"".into(), &"".into())
    );
    assert!(!s.state.join("luns/d1.img").exists());
    // The same hostname twice is refused; a LUN upgrade is not for it.
    let (ok, out) = node(&s, &["add", "--disk-node", file.to_str().unwrap()]);
    assert!(!ok && out.contains("d1"), "{out}");
    let (ok, out) = node(&s, &["upgrade", "d1", &image("v2")]);
    assert!(!ok && out.contains("updates itself"), "{out}");

    // The node's own way of asking (its token file read as the node reads it), over the
    // host's loopback instead of the guests' address.
    let kept_dest = Destination::load(&cfg.controller, dir.path())
        .unwrap()
        .unwrap();
    assert_eq!(kept_dest.url_text(), s.guest_url());
    let dest = Destination::new(&s.url(), token.trim()).unwrap();
    let ask = || dest.target(Duration::from_secs(10)).unwrap().target;
    assert_eq!(ask(), None, "no rollout names it yet");
    let stranger = Destination::new(&s.url(), "not-a-node-token").unwrap();
    let e = stranger.target(Duration::from_secs(10)).unwrap_err();
    assert!(e.contains("401"), "{e}");

    // v2: named to it; applied, booted on trial, confirmed → done.
    let id = start_rollout(&s, &[&image("v2"), "--nodes", "d1"]);
    let v = rollout_status(&s, &id);
    let v2 = v["digest"].as_str().unwrap().to_string();
    assert_eq!(member_states(&v), states(&[("d1", "waiting")]));
    let t = ask().expect("the rollout names v2");
    assert_eq!(
        (t.image.as_str(), t.digest.as_str(), t.rollout.as_str()),
        (image("v2").as_str(), v2.as_str(), id.as_str())
    );
    assert_eq!(
        post_report(&s, &token, &disk_report("d1", "applied", "v7", &v2, "")),
        204
    );
    let v = wait_member(&s, &id, "d1", "booting");
    assert_eq!(v["members"][0]["version"], "v7", "{v:#}");
    for event in ["boot", "confirmed"] {
        assert_eq!(
            post_report(&s, &token, &disk_report("d1", event, "v7", &v2, "")),
            204
        );
    }
    let v = rollout_status(&s, &id);
    assert_eq!(v["state"], "done", "{v:#}\n{}", c.log());
    assert_eq!(ask(), None, "a finished rollout names nothing");
    let n = show(&s, "d1");
    assert_eq!(
        (&n["running_digest"], &n["last_result"]),
        (&v2.as_str().into(), &"confirmed".into())
    );
    assert!(
        n["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "applied"),
        "{n:#}"
    );

    // v3: applied as v8, but stage0 falls back from v8 to v7 → failed with its reason,
    // the rollout pauses and names nothing more.
    let id3 = start_rollout(&s, &[&image("v3"), "--nodes", "d1"]);
    let v3 = ask().expect("the rollout names v3").digest;
    assert_eq!(
        post_report(&s, &token, &disk_report("d1", "applied", "v8", &v3, "")),
        204
    );
    wait_member(&s, &id3, "d1", "booting");
    assert_eq!(
        post_report(&s, &token, &disk_report("d1", "boot", "v7", &v2, "v8")),
        204
    );
    let v = wait_member(&s, &id3, "d1", "failed");
    assert_eq!(v["state"], "paused", "{v:#}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("fell back from v8 (tentative): no /sbin/init"),
        "{v:#}"
    );
    assert_eq!(ask(), None, "a paused rollout names nothing");
    let (ok, out) = rollout(&s, &["abort", &id3]);
    assert!(ok, "{out}");
    // Never offered again.
    let again = start_rollout(&s, &[&image("v3"), "--nodes", "d1"]);
    assert_eq!(
        member_states(&rollout_status(&s, &again)),
        states(&[("d1", "skipped")])
    );
    assert_eq!(ask(), None);

    let (ok, out) = node(&s, &["delete", "d1"]);
    assert!(ok, "{out}");
    assert!(list(&s).is_empty());
    assert!(dest
        .target(Duration::from_secs(10))
        .unwrap_err()
        .contains("401"));
}
