//! The network phase against real parts on the host: the client runs (in a thread that
//! entered them) inside network namespaces this test makes, with veth pairs to a server
//! namespace where `dnsmasq` is the DHCP server. The host's own interfaces are never touched.
//! Every namespace is deleted and every dnsmasq killed by PID when its guard drops; every
//! client run is bounded by its `terra.net.timeout=`.
//!
//! Needs root, `ip` (iproute2) and `dnsmasq` (dnsmasq-base).

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, unshare, CloneFlags};
use terra_init::network::{self, ipconfig, Handoff, NetworkError, NetworkReport};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_tools() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "these tests make network namespaces: run them as root"
    );
    for (tool, pkg) in [("ip", "iproute2"), ("dnsmasq", "dnsmasq-base")] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        assert!(found, "{tool} is missing: apt-get install {pkg}");
    }
}

/// A network namespace, deleted (with its veths) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!(
            "terra-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair: `client_if` (with `mac`) in `client`, `server_if` in `server`.
fn veth(client: &Netns, client_if: &str, mac: &str, server: &Netns, server_if: &str) {
    sh(&[
        "ip",
        "link",
        "add",
        client_if,
        "address",
        mac,
        "netns",
        &client.name,
        "type",
        "veth",
        "peer",
        "name",
        server_if,
        "netns",
        &server.name,
    ]);
}

/// dnsmasq as a DHCP server only (port=0: no DNS), in the foreground, killed by PID on drop.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(ns: &Netns, iface: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dnsmasq.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--bind-interfaces",
                "--log-dhcp",
            ])
            .arg(format!("--interface={iface}"))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        // It is ready when it logs its DHCP range.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("DHCP, IP range")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `ip netns exec` execs dnsmasq, so this PID is dnsmasq's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the network phase for `cmdline` inside `ns` (and a UTS namespace of its own, so the
/// host name it sets is checked without touching the host's). Returns the result, the
/// hostname seen afterwards, the handoff directory and the elapsed time.
fn phase_in(
    ns: &Netns,
    cmdline: &str,
) -> (
    Result<NetworkReport, NetworkError>,
    String,
    tempfile::TempDir,
    Duration,
) {
    let cfg = ipconfig::resolve(&Default::default(), None, cmdline)
        .expect("valid cmdline")
        .expect("network needed");
    let run = tempfile::tempdir().unwrap();
    let handoff = Handoff {
        run_dir: run.path().to_path_buf(),
        set_hostname: true,
    };
    let path = format!("/run/netns/{}", ns.name);
    let (result, hostname, elapsed) = std::thread::scope(|s| {
        s.spawn(|| {
            // setns and unshare act on this thread only; the client threads it spawns inherit.
            let fd = File::open(&path).expect("netns handle");
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
            unshare(CloneFlags::CLONE_NEWUTS).expect("unshare UTS");
            nix::unistd::sethostname("before").expect("sethostname");
            let start = Instant::now();
            let r = network::bring_up(&cfg, &mut |d| std::thread::sleep(d), &handoff);
            let elapsed = start.elapsed();
            let h = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            (r, h, elapsed)
        })
        .join()
        .expect("client thread")
    });
    (result, hostname, run, elapsed)
}

fn lease_json(run: &Path, ifname: &str) -> serde_json::Value {
    let p = run.join("network").join(format!("{ifname}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Client namespace with `vc0` (02:00:00:00:00:01) facing a server namespace's `vs0`
/// (10.77.0.1/24, up).
fn pair(tag: &str) -> (Netns, Netns) {
    let c = Netns::new(&format!("{tag}c"));
    let s = Netns::new(&format!("{tag}s"));
    veth(&c, "vc0", "02:00:00:00:00:01", &s, "vs0");
    s.ip(&["addr", "add", "10.77.0.1/24", "dev", "vs0"]);
    s.ip(&["link", "set", "vs0", "up"]);
    (c, s)
}

const RANGE: &str = "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h";

#[test]
fn lease_fields_are_applied_to_the_link() {
    require_tools();
    let (c, s) = pair("fields");
    let d = Dnsmasq::start(
        &s,
        "vs0",
        &[
            RANGE,
            "--dhcp-host=02:00:00:00:00:01,10.77.0.60,client60",
            "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=6,10.77.0.1,10.77.0.2",
            "--dhcp-option=15,lab.example",
            "--dhcp-option=119,lab.example,example",
            "--dhcp-option=26,1400",
            "--dhcp-option=42,10.77.0.3",
            "--dhcp-option=17,/srv/nfsroot",
            "--dhcp-option=66,tftp.lab.example",
            "--dhcp-boot=pxelinux.0",
        ],
    );
    let (r, hostname, run, elapsed) = phase_in(&c, "ip=dhcp terra.net.timeout=20");
    let report = r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    assert_eq!(
        report.summary(),
        ["vc0: 10.77.0.60/24 (dhcp from 10.77.0.1)"]
    );
    // Read back with iproute2, independently of our netlink code.
    let addr = c.ip(&["-4", "addr", "show", "dev", "vc0"]);
    assert!(addr.contains("inet 10.77.0.60/24"), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let routes = c.ip(&["-4", "route"]);
    assert!(routes.contains("default via 10.77.0.1 dev vc0"), "{routes}");
    assert!(c.ip(&["link", "show", "lo"]).contains("UP"), "loopback up");
    let l = lease_json(run.path(), "vc0");
    assert_eq!(l["address"], "10.77.0.60");
    assert_eq!(l["prefix"], 24);
    assert_eq!(l["mac"], "02:00:00:00:00:01");
    assert_eq!(l["routers"][0], "10.77.0.1");
    assert_eq!(l["dns"], serde_json::json!(["10.77.0.1", "10.77.0.2"]));
    assert_eq!(l["domain"], "lab.example");
    assert_eq!(l["search"], serde_json::json!(["lab.example", "example"]));
    assert_eq!(l["ntp"][0], "10.77.0.3");
    assert_eq!(l["mtu"], 1400);
    assert_eq!(l["root_path"], "/srv/nfsroot");
    assert_eq!(l["tftp_server"], "tftp.lab.example");
    assert_eq!(l["bootfile"], "pxelinux.0");
    assert_eq!(l["hostname"], "client60");
    assert_eq!(l["server_id"], "10.77.0.1");
    assert_eq!(l["lease_time_s"], 3600);
    assert!(l["acquired_uptime_ms"].as_f64().unwrap() > 0.0);
    let resolv = std::fs::read_to_string(run.path().join("resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 10.77.0.1\nnameserver 10.77.0.2\nsearch lab.example example"),
        "{resolv}"
    );
    assert_eq!(hostname, "client60", "host name from option 12");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let log = d.log();
    assert!(log.contains("DHCPDISCOVER(vs0) 02:00:00:00:00:01"), "{log}");
    assert!(log.contains("DHCPACK(vs0) 10.77.0.60"), "{log}");
}

#[test]
fn option_121_beats_option_3() {
    require_tools();
    let (c, s) = pair("r121");
    let d = Dnsmasq::start(
        &s,
        "vs0",
        &[
            RANGE,
            "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=121,10.99.0.0/16,10.77.0.1,0.0.0.0/0,10.77.0.254",
        ],
    );
    let (r, _, run, _) = phase_in(&c, "ip=vc0:dhcp terra.net.timeout=20 hostname=cfg-wins");
    r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    let routes = c.ip(&["-4", "route"]);
    assert!(
        routes.contains("default via 10.77.0.254 dev vc0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.99.0.0/16 via 10.77.0.1 dev vc0"),
        "{routes}"
    );
    assert!(!routes.contains("default via 10.77.0.1 "), "{routes}");
    let l = lease_json(run.path(), "vc0");
    assert_eq!(l["routers"][0], "10.77.0.1");
    assert_eq!(l["routes"][1]["destination"], "0.0.0.0/0");
    assert_eq!(l["routes"][1]["gateway"], "10.77.0.254");
}

#[test]
fn a_nak_restarts_with_discover() {
    require_tools();
    let (c, s) = pair("nak");
    // Authoritative: a request for an address off this subnet is NAKed.
    let d = Dnsmasq::start(&s, "vs0", &[RANGE, "--dhcp-authoritative"]);
    let (r, _, run, _) = phase_in(&c, "ip=10.88.0.5:::::vc0:dhcp terra.net.timeout=20");
    r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    let log = d.log();
    assert!(log.contains("DHCPNAK(vs0) 10.88.0.5"), "{log}");
    assert!(log.contains("DHCPDISCOVER(vs0)"), "{log}");
    let l = lease_json(run.path(), "vc0");
    let a: Ipv4Addr = l["address"].as_str().unwrap().parse().unwrap();
    assert!(
        (Ipv4Addr::new(10, 77, 0, 50)..=Ipv4Addr::new(10, 77, 0, 99)).contains(&a),
        "{a}"
    );
}

#[test]
fn a_silent_server_ends_in_a_bounded_explained_failure() {
    require_tools();
    let (c, _s) = pair("silent");
    let (r, hostname, _run, elapsed) = phase_in(&c, "ip=dhcp terra.net.timeout=3");
    let err = r.expect_err("no server, no lease").to_string();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    for want in [
        "no network configuration within 3 s",
        "link vc0 (02:00:00:00:00:01, carrier up)",
        "DISCOVER",
        "received nothing",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert_eq!(hostname, "before", "nothing set on failure");
}

#[test]
fn two_servers_on_one_segment() {
    require_tools();
    // client — bridge — two servers, all on 10.77.0.0/24.
    let c = Netns::new("2sc");
    let sw = Netns::new("2ssw");
    let s1 = Netns::new("2s1");
    let s2 = Netns::new("2s2");
    sw.ip(&["link", "add", "br0", "type", "bridge"]);
    sw.ip(&["link", "set", "br0", "up"]);
    veth(&c, "vc0", "02:00:00:00:00:01", &sw, "p0");
    veth(&s1, "e1", "02:00:00:00:01:01", &sw, "p1");
    veth(&s2, "e2", "02:00:00:00:01:02", &sw, "p2");
    for p in ["p0", "p1", "p2"] {
        sw.ip(&["link", "set", p, "master", "br0"]);
        sw.ip(&["link", "set", p, "up"]);
    }
    s1.ip(&["addr", "add", "10.77.0.1/24", "dev", "e1"]);
    s1.ip(&["link", "set", "e1", "up"]);
    s2.ip(&["addr", "add", "10.77.0.2/24", "dev", "e2"]);
    s2.ip(&["link", "set", "e2", "up"]);
    let d1 = Dnsmasq::start(&s1, "e1", &[RANGE]);
    let d2 = Dnsmasq::start(
        &s2,
        "e2",
        &["--dhcp-range=10.77.0.100,10.77.0.149,255.255.255.0,1h"],
    );
    let (r, _, run, _) = phase_in(&c, "ip=dhcp terra.net.timeout=20");
    r.unwrap_or_else(|e| panic!("{e}\ndnsmasq 1:\n{}\ndnsmasq 2:\n{}", d1.log(), d2.log()));
    let l = lease_json(run.path(), "vc0");
    let a: Ipv4Addr = l["address"].as_str().unwrap().parse().unwrap();
    let server = l["server_id"].as_str().unwrap();
    let (lo, hi) = match server {
        "10.77.0.1" => (50, 99),
        "10.77.0.2" => (100, 149),
        other => panic!("lease from {other}"),
    };
    assert!((lo..=hi).contains(&a.octets()[3]), "{a} from {server}");
    // The address is the one its own server acknowledged.
    let acked = if server == "10.77.0.1" {
        d1.log()
    } else {
        d2.log()
    };
    assert!(acked.contains("DHCPACK(e"), "{acked}");
    assert!(acked.contains(&a.to_string()), "{acked}");
}

#[test]
fn two_links_the_first_lease_wins_and_stops_the_other() {
    require_tools();
    let (c, s) = pair("2l");
    let quiet = Netns::new("2lq");
    veth(&c, "vc1", "02:00:00:00:00:02", &quiet, "vq1");
    quiet.ip(&["link", "set", "vq1", "up"]);
    let d = Dnsmasq::start(&s, "vs0", &[RANGE]);
    let (r, _, run, elapsed) = phase_in(&c, "ip=dhcp terra.net.timeout=20");
    let report = r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    assert_eq!(report.configured.len(), 1);
    assert_eq!(report.configured[0].link.name, "vc0");
    assert!(
        elapsed < Duration::from_secs(10),
        "the silent link must be cancelled: {elapsed:?}"
    );
    assert!(!run.path().join("network/vc1.json").exists());
    assert!(!c
        .ip(&["-4", "addr", "show", "dev", "vc1"])
        .contains("inet "));
}

#[test]
fn a_link_that_comes_up_late() {
    require_tools();
    let (c, s) = pair("late");
    s.ip(&["link", "set", "vs0", "down"]);
    let d = Dnsmasq::start(&s, "vs0", &[RANGE]);
    let name = s.name.clone();
    let raiser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        sh(&["ip", "-n", &name, "link", "set", "vs0", "up"]);
    });
    let (r, _, run, elapsed) = phase_in(&c, "ip=dhcp terra.net.timeout=20");
    raiser.join().unwrap();
    r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert_eq!(lease_json(run.path(), "vc0")["source"], "dhcp");
}

#[test]
fn static_ip_form_applies_address_gateway_dns_and_hostname() {
    require_tools();
    let (c, _s) = pair("static");
    let (r, hostname, run, _) = phase_in(
        &c,
        "ip=10.77.0.9::10.77.0.1:255.255.255.0:st9:vc0:off:10.77.0.53 terra.net.timeout=10",
    );
    r.unwrap_or_else(|e| panic!("{e}"));
    assert!(c
        .ip(&["-4", "addr", "show", "dev", "vc0"])
        .contains("inet 10.77.0.9/24"));
    assert!(c
        .ip(&["-4", "route"])
        .contains("default via 10.77.0.1 dev vc0"));
    assert_eq!(hostname, "st9");
    let l = lease_json(run.path(), "vc0");
    assert_eq!(l["source"], "static");
    assert!(std::fs::read_to_string(run.path().join("resolv.conf"))
        .unwrap()
        .contains("nameserver 10.77.0.53"));
    // Reachability over the configured link, through the kernel.
    let ping = Command::new("ip")
        .args(["netns", "exec", &c.name, "ping", "-c1", "-W2", "10.77.0.1"])
        .output();
    if let Ok(p) = ping {
        assert!(p.status.success() || !Path::new("/bin/ping").exists());
    }
}
