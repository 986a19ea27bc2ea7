//! stage0's network phase (`terra_init::network`) against real parts on the host: the DHCP
//! client (and the static `ip=` form) runs, in a thread that entered them, inside network
//! namespaces this test makes with [`lab::netns`], with veth pairs to server namespaces where
//! `dnsmasq` is the DHCP server. It checks the lease's fields as applied to the link (read
//! back with iproute2) and handed off, option 121 over option 3, a NAK, a silent server, two
//! servers on one segment, two links, a link that comes up late; and IPv6: SLAAC from
//! dnsmasq's router advertisements, a DHCPv6 address with the advertisement's route,
//! DHCPv4 and DHCPv6 side by side, a silent DHCPv6 link, the static IPv6 form (read back
//! with `ip -6`, and the `network/ipv6/<if>.json` handoff). The host's own interfaces
//! are never touched. Every namespace is deleted and every dnsmasq killed by PID when its
//! guard drops; every client run is bounded by its `terra.net.timeout=`.
//!
//! Needs root, `ip` (iproute2) and `dnsmasq` (dnsmasq-base); each test fails first, naming
//! what this host lacks.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::netns::{Dnsmasq, Netns};
use terra_init::network::{self, dhcp6, ipconfig, Handoff, NetworkError, NetworkReport};

/// The value, or a panic with the lab's message.
fn ok<T>(r: lab::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Fails first, naming what this host lacks (root, `ip`, `dnsmasq`).
fn require_tools() {
    ok(lab::netns::require_veth());
}

/// A namespace tagged `tag` (see [`Netns::new`]).
fn netns(tag: &str) -> Netns {
    ok(Netns::new(tag))
}

/// `ip -n <ns> args…`, its output.
fn ip(ns: &Netns, args: &[&str]) -> String {
    ok(ns.ip(args))
}

/// dnsmasq on `iface` of `ns` handing out `range`, with `extra` arguments.
fn dnsmasq(ns: &Netns, iface: &str, range: &str, extra: &[&str]) -> Dnsmasq {
    ok(Dnsmasq::start(ns, iface, range, extra))
}

/// A scratch directory under the lab's, removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The host name this thread sees (its UTS namespace's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim_end().to_string())
        .unwrap_or_default()
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
    RunDir,
    Duration,
) {
    let cfg = ipconfig::resolve(&Default::default(), None, cmdline, Default::default())
        .expect("valid cmdline")
        .expect("network needed");
    let run = RunDir(ok(lab::disk::tempdir("netns-run")));
    let handoff = Handoff {
        run_dir: run.path().to_path_buf(),
        set_hostname: true,
    };
    let (result, hostname, elapsed) = std::thread::scope(|s| {
        s.spawn(|| {
            // setns and unshare act on this thread only; the client threads it spawns inherit.
            ok(ns.enter());
            // SAFETY: unshare(2) gives this thread a UTS namespace of its own; no memory of
            // ours is involved.
            let r = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
            assert_eq!(r, 0, "unshare UTS: {}", std::io::Error::last_os_error());
            std::fs::write("/proc/sys/kernel/hostname", "before").expect("set hostname");
            let start = Instant::now();
            let r = network::bring_up(&cfg, &mut |d| std::thread::sleep(d), &handoff);
            let elapsed = start.elapsed();
            (r, hostname(), elapsed)
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
    let c = netns(&format!("{tag}c"));
    let s = netns(&format!("{tag}s"));
    ok(c.add_veth("vc0", "02:00:00:00:00:01", &s, "vs0"));
    ok(s.add_addr("vs0", "10.77.0.1/24"));
    ok(s.link_up("vs0"));
    (c, s)
}

const RANGE: &str = "10.77.0.50,10.77.0.99,255.255.255.0,1h";

#[test]
fn lease_fields_are_applied_to_the_link() {
    require_tools();
    let (c, s) = pair("fields");
    let d = dnsmasq(
        &s,
        "vs0",
        RANGE,
        &[
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
    let addr = ip(&c, &["-4", "addr", "show", "dev", "vc0"]);
    assert!(addr.contains("inet 10.77.0.60/24"), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let routes = ip(&c, &["-4", "route"]);
    assert!(routes.contains("default via 10.77.0.1 dev vc0"), "{routes}");
    assert!(
        ip(&c, &["link", "show", "lo"]).contains("UP"),
        "loopback up"
    );
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
    let d = dnsmasq(
        &s,
        "vs0",
        RANGE,
        &[
            "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=121,10.99.0.0/16,10.77.0.1,0.0.0.0/0,10.77.0.254",
        ],
    );
    let (r, _, run, _) = phase_in(&c, "ip=vc0:dhcp terra.net.timeout=20 hostname=cfg-wins");
    r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    let routes = ip(&c, &["-4", "route"]);
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
    let d = dnsmasq(&s, "vs0", RANGE, &["--dhcp-authoritative"]);
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
    let c = netns("2sc");
    let sw = netns("2ssw");
    let s1 = netns("2s1");
    let s2 = netns("2s2");
    ip(&sw, &["link", "add", "br0", "type", "bridge"]);
    ok(sw.link_up("br0"));
    ok(c.add_veth("vc0", "02:00:00:00:00:01", &sw, "p0"));
    ok(s1.add_veth("e1", "02:00:00:00:01:01", &sw, "p1"));
    ok(s2.add_veth("e2", "02:00:00:00:01:02", &sw, "p2"));
    for p in ["p0", "p1", "p2"] {
        ip(&sw, &["link", "set", p, "master", "br0"]);
        ok(sw.link_up(p));
    }
    ok(s1.add_addr("e1", "10.77.0.1/24"));
    ok(s1.link_up("e1"));
    ok(s2.add_addr("e2", "10.77.0.2/24"));
    ok(s2.link_up("e2"));
    let d1 = dnsmasq(&s1, "e1", RANGE, &[]);
    let d2 = dnsmasq(&s2, "e2", "10.77.0.100,10.77.0.149,255.255.255.0,1h", &[]);
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
    let quiet = netns("2lq");
    ok(c.add_veth("vc1", "02:00:00:00:00:02", &quiet, "vq1"));
    ok(quiet.link_up("vq1"));
    let d = dnsmasq(&s, "vs0", RANGE, &[]);
    let (r, _, run, elapsed) = phase_in(&c, "ip=dhcp terra.net.timeout=20");
    let report = r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    assert_eq!(report.configured.len(), 1);
    assert_eq!(report.configured[0].link.name, "vc0");
    assert!(
        elapsed < Duration::from_secs(10),
        "the silent link must be cancelled: {elapsed:?}"
    );
    assert!(!run.path().join("network/vc1.json").exists());
    assert!(!ip(&c, &["-4", "addr", "show", "dev", "vc1"]).contains("inet "));
}

#[test]
fn a_link_that_comes_up_late() {
    require_tools();
    let (c, s) = pair("late");
    ok(s.link_down("vs0"));
    let d = dnsmasq(&s, "vs0", RANGE, &[]);
    let (r, _, run, elapsed) = std::thread::scope(|scope| {
        let raiser = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            ok(s.link_up("vs0"));
        });
        let out = phase_in(&c, "ip=dhcp terra.net.timeout=20");
        raiser.join().unwrap();
        out
    });
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
    assert!(ip(&c, &["-4", "addr", "show", "dev", "vc0"]).contains("inet 10.77.0.9/24"));
    assert!(ip(&c, &["-4", "route"]).contains("default via 10.77.0.1 dev vc0"));
    assert_eq!(hostname, "st9");
    let l = lease_json(run.path(), "vc0");
    assert_eq!(l["source"], "static");
    assert!(std::fs::read_to_string(run.path().join("resolv.conf"))
        .unwrap()
        .contains("nameserver 10.77.0.53"));
    // Reachability over the configured link, through the kernel.
    let ping = lab::netns::run_timed(
        c.command("ping").args(["-c1", "-W2", "10.77.0.1"]),
        Duration::from_secs(10),
    );
    if let Ok(p) = ping {
        assert!(p.status.success() || !Path::new("/bin/ping").exists());
    }
}

#[test]
fn ifname_renames_by_mac_and_rd_route_adds_routes() {
    require_tools();
    let (c, _s) = pair("ifname");
    let (r, _, run, _) = phase_in(
        &c,
        "ifname=lan0:02:00:00:00:00:01 ip=10.77.0.9::10.77.0.1:255.255.255.0::lan0:off \
         rd.route=10.99.0.0/16:10.77.0.1 rd.route=10.98.0.0/255.255.0.0::lan0 \
         terra.net.timeout=10",
    );
    let report = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.summary(), ["lan0: 10.77.0.9/24 (static)"]);
    // Read back with iproute2: the veth has its stable name, and both routes are there.
    assert!(ip(&c, &["link", "show", "lan0"]).contains("02:00:00:00:00:01"));
    let routes = ip(&c, &["-4", "route"]);
    assert!(
        routes.contains("10.99.0.0/16 via 10.77.0.1 dev lan0"),
        "{routes}"
    );
    assert!(routes.contains("10.98.0.0/16 dev lan0"), "{routes}");
    let l = lease_json(run.path(), "lan0");
    assert_eq!(l["link"]["kind"], "renamed");
    assert_eq!(l["link"]["from"], "vc0");
    let origins: Vec<&str> = l["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["origin"].as_str())
        .collect();
    assert_eq!(origins, ["rd.route", "rd.route"]);
    let p = run.path().join("network/links/lan0.json");
    let made: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(made["from"], "vc0");
    // Run again: the link already has its name, nothing to do.
    let (again, _, _, _) = phase_in(
        &c,
        "ifname=lan0:02:00:00:00:00:01 ip=10.77.0.9::10.77.0.1:24::lan0:off terra.net.timeout=10",
    );
    assert!(again.unwrap_or_else(|e| panic!("{e}")).links.is_empty());
    // A name another link holds: the error names both.
    let (taken, _, _, _) = phase_in(
        &c,
        "ifname=lo:02:00:00:00:00:01 ip=dhcp terra.net.timeout=3",
    );
    let e = taken.expect_err("lo holds the name").to_string();
    assert!(
        e.contains("cannot rename lan0 (02:00:00:00:00:01): lo"),
        "{e}"
    );
    // A route whose gateway no configured subnet reaches: rescue names the rd.route.
    let (unreachable, _, _, _) = phase_in(
        &c,
        "ip=10.77.0.9::10.77.0.1:24::lan0:off rd.route=10.97.0.0/16:192.0.2.1 terra.net.timeout=10",
    );
    let e = unreachable.expect_err("unreachable gateway").to_string();
    assert!(
        e.starts_with("rd.route=10.97.0.0/16:192.0.2.1: netlink: add route"),
        "{e}"
    );
}

fn lease6_json(run: &Path, ifname: &str) -> serde_json::Value {
    let p = run.join("network/ipv6").join(format!("{ifname}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// [`pair`], with `fd77::1/64` on the server's `vs0`, usable at once, as is its link-local
/// address once the client's end is up (no DAD there), so dnsmasq answers the client's
/// first router solicitation.
fn pair6(tag: &str) -> (Netns, Netns) {
    let (c, s) = pair(tag);
    ok(s.add_addr6("vs0", "fd77::1/64"));
    (c, s)
}

/// Router advertisements every few seconds, the router a default one for 10 minutes
/// (dnsmasq's RA parameters: interface, interval, router lifetime).
const RA_PARAM: &str = "--ra-param=vs0,4,600";

#[test]
fn slaac_from_router_advertisements() {
    require_tools();
    let (c, s) = pair6("slaac");
    let d = dnsmasq(
        &s,
        "vs0",
        "fd77::,ra-only,64,1h",
        &["--enable-ra", RA_PARAM],
    );
    let (r, _, run, elapsed) = phase_in(&c, "ip=auto6 terra.net.timeout=20");
    let report = r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    assert!(report.configured.is_empty(), "no IPv4 asked for");
    assert_eq!(report.configured6.len(), 1);
    let l6 = &report.configured6[0].lease;
    // The kernel's EUI-64 address from the advertised prefix and the veth's MAC.
    assert_eq!(l6.address.to_string(), "fd77::ff:fe00:1");
    assert_eq!(l6.prefix, 64);
    // Read back with iproute2.
    let addr = ip(&c, &["-6", "addr", "show", "dev", "vc0", "scope", "global"]);
    assert!(addr.contains("inet6 fd77::ff:fe00:1/64"), "{addr}");
    let routes = ip(&c, &["-6", "route"]);
    assert!(routes.contains("fd77::/64 dev vc0"), "{routes}");
    assert!(routes.contains("default via fe80::"), "{routes}");
    assert!(routes.contains("dev vc0 proto ra"), "{routes}");
    let l = lease6_json(run.path(), "vc0");
    assert_eq!(l["method"], "auto6");
    assert_eq!(l["address"], "fd77::ff:fe00:1");
    assert_eq!(l["prefix"], 64);
    assert_eq!(l["mac"], "02:00:00:00:00:01");
    assert!(l["gateway"].as_str().unwrap().starts_with("fe80::"), "{l}");
    let origins: Vec<(&str, &str)> = l["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["destination"].as_str().unwrap(),
                r["origin"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(origins.contains(&("::/0", "ra")), "{origins:?}");
    // The kernel installs the advertised on-link prefix itself (proto kernel).
    assert!(origins.contains(&("fd77::/64", "kernel")), "{origins:?}");
    assert!(
        !run.path().join("network/vc0.json").exists(),
        "no IPv4 lease"
    );
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[test]
fn dhcp6_address_with_the_router_advertisements_route() {
    require_tools();
    let (c, s) = pair6("dhcp6");
    let d = dnsmasq(
        &s,
        "vs0",
        "fd77::100,fd77::1ff,64,1h",
        &[
            "--enable-ra",
            RA_PARAM,
            "--dhcp-host=id:00:03:00:01:02:00:00:00:00:01,[fd77::150]",
            "--dhcp-option=option6:dns-server,[fd77::53]",
            "--dhcp-option=option6:domain-search,lab.example,example",
        ],
    );
    let (r, _, run, elapsed) = phase_in(&c, "ip=vc0:dhcp6 terra.net.timeout=20");
    let report = r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    assert_eq!(report.summary().len(), 1, "{:?}", report.summary());
    assert!(
        report.summary()[0].starts_with("vc0: fd77::150/128 (dhcp6 via fe80::"),
        "{:?}",
        report.summary()
    );
    let addr = ip(&c, &["-6", "addr", "show", "dev", "vc0", "scope", "global"]);
    assert!(addr.contains("inet6 fd77::150/128"), "{addr}");
    // The M flag's prefix has no A flag: no SLAAC address beside the leased one.
    assert!(!addr.contains("fd77::ff:fe00:1"), "{addr}");
    let routes = ip(&c, &["-6", "route"]);
    assert!(routes.contains("default via fe80::"), "{routes}");
    // The on-link prefix, from the advertisement (the kernel adds it as its own).
    assert!(
        routes.contains("fd77::/64 dev vc0 proto kernel"),
        "{routes}"
    );
    let l = lease6_json(run.path(), "vc0");
    assert_eq!(l["method"], "dhcp6");
    assert_eq!(l["address"], "fd77::150");
    assert_eq!(l["prefix"], 128);
    assert_eq!(l["dns"], serde_json::json!(["fd77::53"]));
    assert_eq!(l["search"], serde_json::json!(["lab.example", "example"]));
    assert_eq!(l["valid_lifetime_s"], 3600);
    assert!(
        l["server_duid"].as_str().is_some_and(|d| !d.is_empty()),
        "{l}"
    );
    assert!(l["gateway"].as_str().unwrap().starts_with("fe80::"), "{l}");
    let resolv = std::fs::read_to_string(run.path().join("resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver fd77::53\nsearch lab.example example"),
        "{resolv}"
    );
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    let log = d.log();
    assert!(log.contains("DHCPSOLICIT(vs0)"), "{log}");
    assert!(log.contains("DHCPREPLY(vs0) fd77::150"), "{log}");
}

#[test]
fn dhcp6_beside_dhcp4_on_one_link() {
    require_tools();
    let (c, s) = pair6("dual");
    let d = dnsmasq(
        &s,
        "vs0",
        RANGE,
        &[
            "--dhcp-range=fd77::100,fd77::1ff,64,1h",
            "--enable-ra",
            RA_PARAM,
        ],
    );
    let (r, _, run, _) = phase_in(&c, "ip=dhcp ip=dhcp6 terra.net.timeout=20");
    let report = r.unwrap_or_else(|e| panic!("{e}\ndnsmasq:\n{}", d.log()));
    // "Any link" is decided per family: the IPv4 lease does not cancel DHCPv6.
    assert_eq!(report.configured.len(), 1);
    assert_eq!(report.configured6.len(), 1);
    assert_eq!(lease_json(run.path(), "vc0")["source"], "dhcp");
    let a: std::net::Ipv6Addr = lease6_json(run.path(), "vc0")["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        ("fd77::100".parse::<std::net::Ipv6Addr>().unwrap()..="fd77::1ff".parse().unwrap())
            .contains(&a),
        "{a}"
    );
}

#[test]
fn a_silent_dhcp6_link_ends_in_a_bounded_explained_failure() {
    require_tools();
    let (c, _s) = pair6("silent6");
    let (r, _, _, elapsed) = phase_in(&c, "ip=dhcp6 terra.net.timeout=4");
    let err = r.expect_err("no server, no address").to_string();
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    for want in [
        "no network configuration within 4 s",
        "link vc0 (02:00:00:00:00:01, carrier up)",
        "DHCPv6 no address before the deadline: sent ",
        "SOLICIT, 0 REQUEST; received nothing",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn static_ipv6_form() {
    require_tools();
    let (c, _s) = pair6("static6");
    let (r, hostname, run, _) = phase_in(
        &c,
        "ip=[fd77::9]::[fd77::1]:64:st6:vc0:none nameserver=[fd77::53] terra.net.timeout=10",
    );
    r.unwrap_or_else(|e| panic!("{e}"));
    let addr = ip(&c, &["-6", "addr", "show", "dev", "vc0"]);
    assert!(addr.contains("inet6 fd77::9/64"), "{addr}");
    let routes = ip(&c, &["-6", "route"]);
    assert!(routes.contains("default via fd77::1 dev vc0"), "{routes}");
    assert_eq!(hostname, "st6");
    let l = lease6_json(run.path(), "vc0");
    assert_eq!(l["method"], "static");
    assert_eq!(l["gateway"], "fd77::1");
    assert!(std::fs::read_to_string(run.path().join("resolv.conf"))
        .unwrap()
        .contains("nameserver fd77::53"));
}

/// Records what a [`dhcp6::Transport6`] receives: the server's own bytes.
struct Recording<T> {
    inner: T,
    received: Vec<Vec<u8>>,
}

impl<T: dhcp6::Transport6> dhcp6::Transport6 for Recording<T> {
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        self.inner.send(packet)
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        let r = self.inner.recv(buf, timeout)?;
        if let Some(n) = r {
            self.received.push(buf[..n].to_vec());
        }
        Ok(r)
    }
}

/// The DHCPv6 wire format against a real server's bytes: the client run directly over its
/// socket, every Advertise and Reply dnsmasq sent parses, and emits back to the same bytes.
#[test]
fn dhcp6_messages_from_dnsmasq_round_trip() {
    use terra_init::network::{dhcp, ipv6, netlink::Netlink, socket::UdpTransport6};
    require_tools();
    let (c, s) = pair6("wire6");
    let d = dnsmasq(
        &s,
        "vs0",
        "fd77::100,fd77::1ff,64,1h",
        &[
            "--dhcp-option=option6:dns-server,[fd77::53]",
            "--dhcp-option=option6:domain-search,lab.example",
        ],
    );
    let received = std::thread::scope(|sc| {
        sc.spawn(|| {
            ok(c.enter());
            let deadline = Instant::now() + Duration::from_secs(15);
            ipv6::enable("vc0", false).expect("IPv6 on vc0");
            let mut nl = Netlink::open().expect("netlink");
            let link = nl.link_named("vc0").expect("links").expect("vc0");
            nl.set_up(&link, None).expect("up");
            let stop = std::sync::atomic::AtomicBool::new(false);
            let ll = ipv6::wait_link_local(&mut nl, link.index, deadline, &stop)
                .unwrap_or_else(|e| panic!("{e}"));
            let mut t = Recording {
                inner: UdpTransport6::bind("vc0", link.index, ll).expect("bind 546"),
                received: Vec::new(),
            };
            let settings = dhcp6::Settings6 {
                mac: [2, 0, 0, 0, 0, 1],
                deadline,
            };
            let mut log = dhcp6::Transcript6::default();
            let a = dhcp6::run(&mut t, &settings, &stop, &mut dhcp::Rng::new(7), &mut log)
                .unwrap_or_else(|e| panic!("{e}: {log}\ndnsmasq:\n{}", d.log()));
            assert_eq!(a.dns, ["fd77::53".parse::<std::net::Ipv6Addr>().unwrap()]);
            assert_eq!(a.search, ["lab.example"]);
            t.received
        })
        .join()
        .expect("client thread")
    });
    assert!(received.len() >= 2, "an Advertise and a Reply");
    let mut kinds = Vec::new();
    for b in &received {
        let m = dhcp6::Message::parse(b).unwrap_or_else(|e| panic!("{e}: {b:02x?}"));
        assert_eq!(&m.emit(), b, "{m:?}");
        kinds.push(m.kind);
    }
    assert!(kinds.contains(&dhcp6::kind::ADVERTISE) && kinds.contains(&dhcp6::kind::REPLY));
}
