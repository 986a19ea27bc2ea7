//! Links the network phase makes before it configures any (ARCHITECTURE.md §2.2,
//! `init/src/network/links.rs`), in two boots of the lab's kernel, and a third, short one
//! for a malformed key:
//!
//! - **A bond over two NICs on QEMU user networking** (one slirp per NIC, each with its own
//!   DHCP server; both hand 10.0.2.15 to the bond's MAC). `ifname=` gives the NICs stable
//!   names by MAC, Terra OS's `bondslaves=` makes `bond0` (802.3ad) over them, `ip=dhcp`
//!   takes the lease on the bond (the top of what was made), and two `rd.route=` add routes
//!   (one via a gateway, one onto the bond). Then the host pulls the active member's cable
//!   (`set_link … off` on QEMU's monitor) and the guest still reaches 10.0.2.2.
//! - **A VLAN on an active-backup bond**, with `bond=` and `vlan=`, on two NICs whose frames
//!   QEMU sends to this test over loopback UDP (`-netdev dgram`): user networking cannot
//!   carry 802.1Q tags and the host kernel has no 8021q. The test is the DHCP server: it
//!   answers DISCOVERs tagged with VID 5 with a tagged OFFER/ACK (10.5.0.50), and every
//!   DISCOVER with an untagged decoy OFFER (10.9.0.99) first. The lease must be the tagged
//!   one, and every DHCP frame the guest sent must carry VID 5 and the bond's MAC.
//! - **A malformed `bond=`** ends the boot in the config phase with the key named.
//!
//! The root's init (`net-check`) prints the boot report, the lease and link files, the
//! kernel's view (`ip`, `/proc/net/bonding`, `/proc/net/route`) and, for the first boot, the
//! pings around the pulled cable.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use lab::disk::BtrfsDisk;
use lab::harness::{boot, busybox, expect, report, run};
use lab::vm::Outcome;

/// Not the demo OS disk's UUID: this disk's roots run `net-check`, a recipe of its own.
const BONDS_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b1";

/// The root's init. With `terra.check=failover` it finds the bond's active member, prints
/// it for the host (which pulls that cable), waits until the member has lost its carrier,
/// and pings the slirp gateway again.
const CHECK: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
echo "TERRA-NET-CHECK start uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "--- /run/terra/boot.json"
cat /run/terra/boot.json
echo
echo "--- end boot.json"
for f in /run/terra/network/*.json /run/terra/network/links/*.json; do
  [ -f "$f" ] && { echo "--- file $f"; cat "$f"; echo; }
done
echo "--- ip"
ip -4 addr
ip -4 route
ip -d link
for b in /proc/net/bonding/*; do echo "--- bonding $b"; cat "$b"; done
echo "--- proc route"
cat /proc/net/route
echo "--- end"
failover=
for arg in $(cat /proc/cmdline); do
  case "$arg" in terra.check=failover) failover=1 ;; esac
done
if [ -n "$failover" ]; then
  ping -c 2 -W 3 10.0.2.2 >/dev/null && echo "TERRA-NET-PING-BEFORE ok" || echo "TERRA-NET-PING-BEFORE failed"
  agg=$(cat /sys/class/net/bond0/bonding/ad_aggregator 2>/dev/null)
  active=
  for s in $(cat /sys/class/net/bond0/bonding/slaves); do
    [ "$(cat /sys/class/net/$s/bonding_slave/ad_aggregator_id 2>/dev/null)" = "$agg" ] && active=$s
  done
  [ -n "$active" ] || active=$(cat /sys/class/net/bond0/bonding/active_slave)
  echo "TERRA-NET-ACTIVE $active"
  i=0
  while [ "$(cat /sys/class/net/$active/carrier)" = 1 ] && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i+1))
  done
  echo "TERRA-NET-PULLED $active carrier=$(cat /sys/class/net/$active/carrier)"
  # miimon (100 ms) notices, then the bond moves to the other member.
  sleep 2
  grep -E '^(Slave Interface|MII Status|Aggregator ID|Currently Active Slave)' /proc/net/bonding/bond0 | sed 's/^/TERRA-NET-BOND /'
  ping -c 3 -W 3 10.0.2.2 >/dev/null && echo "TERRA-NET-PING-AFTER ok" || echo "TERRA-NET-PING-AFTER failed"
fi
echo "TERRA-NET-CHECK end"
sync
poweroff -f
"#;

/// Label `os`, subvolume `os`: the demo root with `/bin/net-check`.
fn bonds_disk() -> PathBuf {
    let busybox = busybox();
    BtrfsDisk::new("os", BONDS_UUID, &["os"])
        .image_with("net-check-v1", |dir, subvol| {
            lab::disk::demo_root(dir, &busybox, subvol)?;
            let p = dir.join("bin/net-check");
            std::fs::write(&p, CHECK)
                .and_then(|()| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .expect("os disk")
}

/// The JSON file the root's init printed (`--- file <path>`).
#[track_caller]
fn file(out: &Outcome, path: &str) -> serde_json::Value {
    let marker = format!("--- file {path}\n");
    let Some(at) = out.log.find(&marker) else {
        panic!("no {path} in:\n{}", out.log)
    };
    let start = at + marker.len();
    let end = out.log[start..]
        .find("\n---")
        .map_or(out.log.len(), |e| e + start);
    serde_json::from_str(out.log[start..end].trim())
        .unwrap_or_else(|e| panic!("{path} is not JSON ({e}) in:\n{}", out.log))
}

/// Prints the run's length and the guest's lines about links (visible with --nocapture).
fn show(out: &Outcome) {
    for l in out
        .log
        .lines()
        .filter(|l| l.contains("TERRA-NET") || l.contains("stage0: ") && !l.contains("loaded "))
    {
        eprintln!("guest: {l}");
    }
    eprintln!("VM run: {:.1} s", out.elapsed.as_secs_f64());
}

/// A virtio NIC with a fixed MAC on netdev `netdev`, named `id` for the monitor. It reports
/// a speed and duplex as a real NIC does: the bonding driver keeps a member whose speed it
/// cannot read down in 802.3ad mode ("failed to get link speed/duplex").
fn nic(netdev: String, id: &str, mac: &str) -> Vec<String> {
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("virtio-net-pci,netdev={id}-net,id={id},mac={mac},speed=1000,duplex=full"),
    ]
}

#[test]
fn bond_of_renamed_nics_takes_a_lease_adds_routes_and_survives_a_pulled_cable() {
    let mut v = boot()
        .disk(bonds_disk())
        .append(
            "init=/bin/net-check terra.check=failover terra.rescue=halt terra.net.timeout=40 \
             ifname=lan0:52:54:00:00:b0:01 ifname=lan1:52:54:00:00:b0:02 bondslaves=lan0,lan1 \
             ip=dhcp rd.route=10.99.0.0/16:10.0.2.2 rd.route=10.98.0.0/255.255.0.0::bond0",
        )
        .timeout(240)
        .vm();
    for (id, mac) in [("nic0", "52:54:00:00:b0:01"), ("nic1", "52:54:00:00:b0:02")] {
        v.extra.extend(nic(format!("user,id={id}-net"), id, mac));
    }
    let monitor = lab::disk::tempdir("bond-mon")
        .expect("scratch dir")
        .join("monitor.sock");
    let mut running = v
        .spawn_captured(Some(&monitor))
        .unwrap_or_else(|e| panic!("{e}"));
    let ready = running.wait_for("TERRA-NET-ACTIVE ", Duration::from_secs(200));
    let log = running.log();
    let active = log
        .lines()
        .find_map(|l| l.split("TERRA-NET-ACTIVE ").nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if ready {
        // The member names are the stable ones: lan0 is nic0's MAC, lan1 nic1's.
        let nic = if active == "lan1" { "nic1" } else { "nic0" };
        running
            .monitor(&format!("set_link {nic} off"))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("host: {active} ({nic}) cable pulled");
    }
    let out = running.finish().unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(monitor.parent().expect("scratch dir"));
    show(&out);
    assert!(ready, "the check never reached the failover:\n{}", out.log);
    expect(
        &out,
        &[
            "TERRA-NET-CHECK start",
            "inet 10.0.2.15/24",
            "default via 10.0.2.2 dev bond0",
            "10.99.0.0/16 via 10.0.2.2 dev bond0",
            "10.98.0.0/16 dev bond0",
            "Bonding Mode: IEEE 802.3ad Dynamic link aggregation",
            "Slave Interface: lan0",
            "Slave Interface: lan1",
            "TERRA-NET-PING-BEFORE ok",
            &format!("TERRA-NET-PULLED {active} carrier=0"),
            "TERRA-NET-PING-AFTER ok",
            "TERRA-NET-CHECK end",
        ],
    );
    assert!(
        active == "lan0" || active == "lan1",
        "active member {active:?}"
    );
    // The lease is the bond's, and says what the bond is; the members have none.
    let lease = file(&out, "/run/terra/network/bond0.json");
    assert_eq!(lease["address"], "10.0.2.15");
    assert_eq!(lease["source"], "dhcp");
    assert_eq!(lease["mac"], "52:54:00:00:b0:01", "the first member's MAC");
    assert_eq!(lease["link"]["kind"], "bond");
    assert_eq!(lease["link"]["mode"], "802.3ad");
    let routes = lease["routes"].as_array().expect("routes");
    for (dest, gw) in [
        ("10.99.0.0/16", serde_json::json!("10.0.2.2")),
        ("10.98.0.0/16", serde_json::Value::Null),
    ] {
        assert!(
            routes.iter().any(|r| r["destination"] == dest
                && r["gateway"] == gw
                && r["origin"] == "rd.route"),
            "{dest} not in {routes:?}"
        );
    }
    assert!(!out.log.contains("--- file /run/terra/network/lan0.json"));
    assert!(!out.log.contains("--- file /run/terra/network/lan1.json"));
    // The links made, as the real system finds them.
    let bond = file(&out, "/run/terra/network/links/bond0.json");
    let slaves: Vec<&str> = bond["slaves"]
        .as_array()
        .expect("slaves")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(slaves, ["lan0", "lan1"]);
    assert_eq!(bond["slaves"][1]["mac"], "52:54:00:00:b0:02");
    for (name, mac) in [("lan0", "52:54:00:00:b0:01"), ("lan1", "52:54:00:00:b0:02")] {
        let l = file(&out, &format!("/run/terra/network/links/{name}.json"));
        assert_eq!(l["kind"], "renamed");
        assert!(
            l["from"].as_str().is_some_and(|f| f.starts_with("eth")),
            "{l}"
        );
        assert_eq!(l["mac"], mac);
    }
    let made = report(&out)["network_links"].clone();
    let names: Vec<&str> = made
        .as_array()
        .expect("network_links")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["lan0", "lan1", "bond0"]);
}

/// What the test's DHCP server saw: one entry per DHCP frame from the guest.
#[derive(Debug, Clone)]
struct Seen {
    vid: Option<u16>,
    src: [u8; 6],
    kind: Option<MessageType>,
    requested: Option<Ipv4Addr>,
}

/// An Ethernet frame's parts (IEEE 802.3; 802.1Q tag when the type is 0x8100).
struct Frame<'a> {
    src: [u8; 6],
    vid: Option<u16>,
    ethertype: u16,
    payload: &'a [u8],
}

fn parse_frame(f: &[u8]) -> Option<Frame<'_>> {
    let src = f.get(6..12)?.try_into().ok()?;
    let t = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if t == 0x8100 {
        let tci = u16::from_be_bytes([*f.get(14)?, *f.get(15)?]);
        Some(Frame {
            src,
            vid: Some(tci & 0x0fff),
            ethertype: u16::from_be_bytes([*f.get(16)?, *f.get(17)?]),
            payload: f.get(18..)?,
        })
    } else {
        Some(Frame {
            src,
            vid: None,
            ethertype: t,
            payload: f.get(14..)?,
        })
    }
}

/// The UDP payload of an IPv4 packet to `port` (RFC 791, RFC 768).
fn udp_to(ip: &[u8], port: u16) -> Option<&[u8]> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    (u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) == port).then(|| udp.get(8..))?
}

/// A broadcast frame from the server (10.5.0.1:67) to 255.255.255.255:68, tagged with `vid`
/// when given. The UDP checksum is left 0 (RFC 768: none computed).
fn server_frame(vid: Option<u16>, dhcp: &[u8]) -> Vec<u8> {
    const SERVER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x5e, 0x01];
    let mut udp = Vec::new();
    udp.extend_from_slice(&67u16.to_be_bytes());
    udp.extend_from_slice(&68u16.to_be_bytes());
    udp.extend_from_slice(&((8 + dhcp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(dhcp);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&[10, 5, 0, 1]);
    ip.extend_from_slice(&[255, 255, 255, 255]);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&udp);
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&SERVER_MAC);
    if let Some(v) = vid {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

/// An OFFER or ACK for `req`, giving `address` (server 10.5.0.1, a /24, one hour).
fn answer(req: &v4::Message, kind: MessageType, address: Ipv4Addr) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = v4::Message::new_with_id(req.xid(), z, address, z, z, req.chaddr());
    m.set_opcode(Opcode::BootReply);
    m.set_flags(req.flags());
    let server = Ipv4Addr::new(10, 5, 0, 1);
    for o in [
        DhcpOption::MessageType(kind),
        DhcpOption::ServerIdentifier(server),
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
        DhcpOption::Router(vec![server]),
        DhcpOption::AddressLeaseTime(3600),
    ] {
        m.opts_mut().insert(o);
    }
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).expect("encode");
    out
}

/// The test's DHCP server on the VLAN: a thread on a loopback UDP socket that QEMU's
/// `dgram` NICs send every frame to. It answers to the address a frame came from (the NIC
/// that sent it). Stopped and joined on drop.
struct VlanServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VlanServer {
    const VID: u16 = 5;
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 5, 0, 50);
    const DECOY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 99);

    fn start() -> VlanServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("its address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(f) = parse_frame(&buf[..n]) else {
                        continue;
                    };
                    if f.ethertype != 0x0800 {
                        continue; // IPv6 and ARP: not the DHCP server's business
                    }
                    let Some(dhcp) = udp_to(f.payload, 67) else {
                        continue;
                    };
                    let Ok(req) = v4::Message::decode(&mut Decoder::new(dhcp)) else {
                        continue;
                    };
                    let kind = req.opts().msg_type();
                    let requested = match req.opts().get(v4::OptionCode::RequestedIpAddress) {
                        Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
                        _ => None,
                    };
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
                        vid: f.vid,
                        src: f.src,
                        kind,
                        requested,
                    });
                    let mut replies = Vec::new();
                    if kind == Some(MessageType::Discover) {
                        // The decoy first: a client that took untagged answers takes it.
                        replies.push(server_frame(
                            None,
                            &answer(&req, MessageType::Offer, Self::DECOY),
                        ));
                        if f.vid == Some(Self::VID) {
                            replies.push(server_frame(
                                f.vid,
                                &answer(&req, MessageType::Offer, Self::ADDRESS),
                            ));
                        }
                    } else if kind == Some(MessageType::Request)
                        && f.vid == Some(Self::VID)
                        && requested.is_none_or(|r| r == Self::ADDRESS)
                    {
                        replies.push(server_frame(
                            f.vid,
                            &answer(&req, MessageType::Ack, Self::ADDRESS),
                        ));
                    }
                    for r in replies {
                        let _ = sock.send_to(&r, from);
                    }
                }
            })
        };
        VlanServer {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for VlanServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A free loopback UDP port for QEMU to receive on.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

#[test]
fn vlan_on_a_bond_takes_the_tagged_lease_only() {
    let server = VlanServer::start();
    let mut v = boot()
        .disk(bonds_disk())
        .append(
            "init=/bin/net-check terra.rescue=halt terra.net.timeout=40 \
             bond=bond1:eth0,eth1:mode=active-backup,miimon=100 vlan=vlan5:bond1 ip=dhcp",
        )
        .timeout(180)
        .vm();
    let macs = ["52:54:00:00:c0:01", "52:54:00:00:c0:02"];
    for (id, mac) in ["nic0", "nic1"].into_iter().zip(macs) {
        let netdev = format!(
            "dgram,id={id}-net,local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            free_udp_port(),
            server.addr.port()
        );
        v.extra.extend(nic(netdev, id, mac));
    }
    let out = run(&v);
    let seen = server.seen();
    drop(server);
    show(&out);
    eprintln!("DHCP frames seen: {seen:?}");
    expect(
        &out,
        &[
            "TERRA-NET-CHECK start",
            "inet 10.5.0.50/24",
            "default via 10.5.0.1 dev vlan5",
            "Bonding Mode: fault-tolerance (active-backup)",
            "TERRA-NET-CHECK end",
        ],
    );
    // Every DHCP frame the guest sent was tagged with VID 5 and came from the bond's MAC
    // (its first member's, which the VLAN shares); it asked for the tagged offer only.
    let bond_mac = [0x52, 0x54, 0, 0, 0xc0, 0x01];
    assert!(
        seen.iter().any(|s| s.kind == Some(MessageType::Discover)),
        "no DISCOVER reached the server: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.kind == Some(MessageType::Request)),
        "no REQUEST reached the server: {seen:?}"
    );
    for s in &seen {
        assert_eq!(s.vid, Some(VlanServer::VID), "{s:?}");
        assert_eq!(s.src, bond_mac, "{s:?}");
        assert_ne!(s.requested, Some(VlanServer::DECOY), "{s:?}");
    }
    let lease = file(&out, "/run/terra/network/vlan5.json");
    assert_eq!(lease["address"], "10.5.0.50");
    assert_eq!(lease["server_id"], "10.5.0.1");
    assert_eq!(lease["link"]["kind"], "vlan");
    assert_eq!(lease["link"]["id"], 5);
    assert_eq!(lease["link"]["parent"], "bond1");
    let bond = file(&out, "/run/terra/network/links/bond1.json");
    assert_eq!(bond["mode"], "active-backup");
    assert_eq!(bond["options"][0], "miimon=100");
    // Neither the bond nor its members were configured themselves.
    for name in ["bond1", "eth0", "eth1"] {
        assert!(
            !out.log
                .contains(&format!("--- file /run/terra/network/{name}.json")),
            "{name} has a lease"
        );
    }
    let made = report(&out)["network_links"].clone();
    assert_eq!(made[1]["name"], "vlan5");
    assert_eq!(made[1]["kind"], "vlan");
}

#[test]
fn a_malformed_link_key_ends_in_rescue_naming_it() {
    // The config phase refuses it before any device is touched: a short boot.
    let out = boot()
        .append(
            "terra.rescue=halt ip=dhcp vlan=vlan5:eth0 bond=bond0:eth0,eth1:mode=802.3ad,lacp=fast",
        )
        .timeout(120)
        .run();
    show(&out);
    expect(
        &out,
        &[
            "boot failed in phase config",
            "invalid bond=\"bond0:eth0,eth1:mode=802.3ad,lacp=fast\"",
            "\"lacp\" is not one of them",
            "powering off",
        ],
    );
    assert!(out.exited, "{}", out.log);
}
