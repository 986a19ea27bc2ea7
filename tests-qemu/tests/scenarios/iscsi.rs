//! iSCSI root scenarios: tgtd on the host serves a btrfs demo root as LUN 1; the VM has no
//! disk, only a NIC on QEMU user networking, and reaches tgtd at 10.0.2.2. stage0 logs in
//! itself, hands the session to the kernel and boots the root from it. For `netroot=dhcp`
//! the VM's NIC is instead on a tap in a network namespace of its own, where dnsmasq hands
//! out the root path (option 17, which QEMU's DHCP cannot send) and tgtd listens.

use lab::disk::BtrfsDisk;
use lab::harness::{artifacts, boot, expect, expect_lun_proof, lease, phases};
use lab::netns::{Dnsmasq, Netns};
use lab::tgtd::{self, Tgtd, GUEST_HOST_ADDR, GUEST_HOST_ADDR6};
use lab::vm::{self, Outcome, Tap};

const LUN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000c5";
const IQN: &str = "iqn.2024-01.org.terra-os:lab-root";
const INITIATOR: &str = "iqn.2024-01.org.terra-os:lab-node";

/// A fresh, writable LUN image: label `os`, subvolume `os`, with /bin/iscsi-init.
fn lun(name: &str) -> tgtd::Lun {
    let busybox = lab::host::static_busybox().expect("static busybox");
    let base = BtrfsDisk::new("os", LUN_UUID, &["os"])
        .image(&busybox)
        .expect("demo disk");
    tgtd::Lun(tgtd::lun_image(&base, name, &["os"]).expect("LUN image"))
}

/// A tgtd serving `image` as LUN 1 of target 1, [`IQN`].
fn serve(image: &std::path::Path) -> Tgtd {
    let mut t = Tgtd::start().expect("tgtd");
    t.target(1, IQN, image).expect("target");
    t
}

fn diskless(append: &str) -> Outcome {
    diskless_on(None, append)
}

/// A diskless VM with a virtio NIC on QEMU user networking, or on `tap` when given.
fn diskless_on(tap: Option<Tap>, append: &str) -> Outcome {
    let mut vm = boot()
        .nic("virtio")
        .append("terra.rescue=halt")
        .append(append)
        .timeout(240);
    if let Some(tap) = tap {
        vm = vm.tap(tap);
    }
    let out = vm.run();
    // What stage0 said about the iscsi and network phases, for whoever reads test output.
    for l in out.log.lines().filter(|l| {
        l.contains("iscsi:")
            || l.contains("phase network")
            || l.contains("phase iscsi")
            || l.contains("stage0: eth")
    }) {
        eprintln!("guest: {l}");
    }
    eprintln!("VM run: {:.1} s", out.elapsed.as_secs_f64());
    out
}

/// The demo root booted from the LUN after stage0's network and iscsi phases: its init wrote
/// the proof file and went on; `extra` are further lines the console must show.
#[track_caller]
fn expect_lun_root(out: &Outcome, extra: &[&str]) {
    let mut needles = vec![
        "iscsi: logged in to",
        "TERRA-ISCSI-PROOF written",
        "TERRA-DEMO-INIT",
        "subvol=os pid=1",
    ];
    needles.extend_from_slice(extra);
    expect(out, &needles);
    let p = phases(out);
    assert!(
        p.iter().any(|n| n == "network") && p.iter().any(|n| n == "iscsi"),
        "{p:?}"
    );
}

#[test]
fn boots_from_terra_keys_and_writes_to_the_lun() {
    let img = lun("terra-keys");
    let t = serve(&img.0);
    let out = diskless(&format!(
        "ISCSI_INITIATOR={INITIATOR} ISCSI_TARGET_NAME={IQN} ISCSI_TARGET_IP={GUEST_HOST_ADDR}:{} rw init=/bin/iscsi-init",
        t.port
    ));
    drop(t);
    expect_lun_root(&out, &[]);
    expect_lun_proof(&img.0);
}

#[test]
fn boots_via_dracut_netroot() {
    let img = lun("netroot");
    let t = serve(&img.0);
    let out = diskless(&format!(
        "rd.iscsi.initiator={INITIATOR} netroot=iscsi:{GUEST_HOST_ADDR}::{}:1:{IQN} rw init=/bin/iscsi-init",
        t.port
    ));
    drop(t);
    expect(&out, &["TERRA-ISCSI-PROOF written", "TERRA-DEMO-INIT"]);
    expect_lun_proof(&img.0);
}

/// An iSCSI root over IPv6 alone: stage0 takes the address QEMU's router advertisement
/// gives (SLAAC, `ip=auto6`) and logs in to tgtd on the host's `::1`, which the guest reaches
/// as fec0::2; no IPv4 is configured.
#[test]
fn boots_over_ipv6_with_slaac() {
    let img = lun("ipv6");
    let mut t = Tgtd::start_on("::1").expect("tgtd on ::1");
    t.target(1, IQN, &img.0).expect("target");
    let port = t.port;
    let out = diskless(&format!(
        "ip=auto6 rd.iscsi.initiator={INITIATOR} netroot=iscsi:[{GUEST_HOST_ADDR6}]::{port}:1:{IQN} rw init=/bin/iscsi-init"
    ));
    drop(t);
    expect_lun_root(&out, &["(auto6), default via fe80::"]);
    expect_lun_proof(&img.0);
    let r = vm::boot_report(&out.log).expect("boot report");
    assert_eq!(r["network"], serde_json::json!([]), "no IPv4: {r}");
    let v6 = &r["network_ipv6"][0];
    assert_eq!(v6["method"], "auto6", "{r}");
    assert_eq!(v6["prefix"], 64, "{r}");
    assert!(
        v6["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("fec0::")),
        "{r}"
    );
    assert_eq!(
        r["iscsi"][0]["portal"],
        format!("[{GUEST_HOST_ADDR6}]:{port}"),
        "{r}"
    );
}

#[test]
fn boots_with_mutual_chap() {
    let img = lun("chap");
    let t = serve(&img.0);
    t.account(1, "lab-node", "lab-node-secret-1", false)
        .expect("incoming account");
    t.account(1, "lab-target", "lab-target-secret-2", true)
        .expect("outgoing account");
    let out = diskless(&format!(
        "rd.iscsi.initiator={INITIATOR} netroot=iscsi:lab-node:lab-node-secret-1:lab-target:lab-target-secret-2@{GUEST_HOST_ADDR}::{}:1:{IQN} rw init=/bin/iscsi-init",
        t.port
    ));
    drop(t);
    expect(
        &out,
        &["CHAP MD5", "TERRA-ISCSI-PROOF written", "TERRA-DEMO-INIT"],
    );
    let r = vm::boot_report(&out.log).expect("boot report");
    assert_eq!(r["iscsi"][0]["chap"], "MD5", "{r}");
    assert_eq!(r["iscsi"][0]["mutual_chap"], true, "{r}");
    // Only the kernel's own echoes of its command line may show the secrets.
    for l in out.log.lines().filter(|l| !l.contains("ommand line")) {
        assert!(
            !l.contains("lab-node-secret-1") && !l.contains("lab-target-secret-2"),
            "a secret on the console: {l}"
        );
    }
    expect_lun_proof(&img.0);
}

#[test]
fn wrong_target_name_ends_in_rescue_with_the_targets_answer() {
    let img = lun("wrong-name");
    let t = serve(&img.0);
    let out = diskless(&format!(
        "ISCSI_INITIATOR={INITIATOR} ISCSI_TARGET_NAME=iqn.2024-01.org.terra-os:nope ISCSI_TARGET_IP={GUEST_HOST_ADDR}:{}",
        t.port
    ));
    drop(t);
    expect(
        &out,
        &[
            "boot failed in phase iscsi",
            "iqn.2024-01.org.terra-os:nope",
            "target not found (status class 0x02, detail 0x03)",
            "powering off",
        ],
    );
    assert!(!out.log.contains("TERRA-DEMO-INIT"));
    assert!(out.exited, "the VM must halt, not hang");
}

/// The server side of the `netroot=dhcp` scenario, all in namespace `terra-rp-<pid>-<n>`:
/// tap `tap0` at [`RP_SERVER`]/24 for the VM's NIC, tgtd on [`RP_SERVER`]:3260 and dnsmasq
/// handing out addresses with option 17 naming that target. Fields drop in order: tgtd and
/// dnsmasq are killed by PID before the namespace (and the tap with it) is deleted by name,
/// pass or fail.
struct RootPathNet {
    tgtd: Tgtd,
    dnsmasq: Dnsmasq,
    ns: Netns,
}

/// The tap's address: DHCP server, router and iSCSI portal for the VM.
const RP_SERVER: &str = "10.77.0.1";

impl RootPathNet {
    /// Option 17 names the LUN, unless `root_path` gives another value.
    fn new(image: &std::path::Path, root_path: Option<&str>) -> Self {
        let ns = Netns::new("rp").unwrap_or_else(|e| panic!("{e}"));
        ns.add_tap("tap0", &format!("{RP_SERVER}/24"))
            .unwrap_or_else(|e| panic!("tap device: {e}"));
        let mut tgtd = Tgtd::start_in(&ns, RP_SERVER).unwrap_or_else(|e| panic!("{e}"));
        tgtd.target(1, IQN, image).expect("target");
        let root_path = root_path
            .map(str::to_string)
            .unwrap_or_else(|| format!("iscsi:{RP_SERVER}::{}:1:{IQN}", tgtd.port));
        let dnsmasq = Dnsmasq::start(
            &ns,
            "tap0",
            "10.77.0.50,10.77.0.99,255.255.255.0,1h",
            // Unquoted: on the command line dnsmasq would send quotes as part of the value.
            &[&format!("--dhcp-option=17,{root_path}")],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        RootPathNet { tgtd, dnsmasq, ns }
    }

    fn tap(&self) -> Tap {
        Tap {
            netns: self.ns.name().to_string(),
            ifname: "tap0".into(),
        }
    }
}

/// `netroot=dhcp` end to end: nothing on the command line names the target; stage0's network
/// phase gets a lease from a real dnsmasq, takes the target from its root path (RFC 4173),
/// logs in to a real tgtd and boots the root from the LUN, whose init writes the proof file
/// the host then finds in the image.
#[test]
fn boots_from_dhcp_root_path() {
    // First, so a host without root, ip, /dev/net/tun or dnsmasq hears exactly what it lacks.
    lab::netns::require().unwrap_or_else(|e| panic!("{e}"));
    let img = lun("dhcp-root-path");
    let net = RootPathNet::new(&img.0, None);
    let portal = format!("{RP_SERVER}:{}", net.tgtd.port);
    let root_path = format!("iscsi:{RP_SERVER}::{}:1:{IQN}", net.tgtd.port);
    let out = diskless_on(
        Some(net.tap()),
        &format!("rd.iscsi.initiator={INITIATOR} netroot=dhcp rw init=/bin/iscsi-init"),
    );
    let (dnsmasq_log, leases) = (net.dnsmasq.log(), net.dnsmasq.leases());
    let tgtd_log = net.tgtd.log_text();
    drop(net);
    let context = format!(
        "dnsmasq log:\n{dnsmasq_log}\nleases:\n{leases}\ntgtd log:\n{tgtd_log}\nserial log:\n{}",
        out.log
    );
    // The server's side: the guest asked for and got the root path with its lease.
    assert!(
        dnsmasq_log.contains("DHCPACK(tap0) 10.77.0.")
            && dnsmasq_log.contains(&format!("option: 17 root-path  {root_path}")),
        "no lease with a root path from dnsmasq; {context}"
    );
    expect_lun_root(
        &out,
        &[&format!(
            "iscsi: logging in to {IQN} at {portal} as {INITIATOR} (DHCP root-path)"
        )],
    );
    let l = lease(&out, "eth0");
    assert_eq!(l["source"], "dhcp", "{l}");
    assert_eq!(l["server_id"], RP_SERVER, "{l}");
    assert!(
        l["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.77.0.")),
        "{l}"
    );
    assert_eq!(l["root_path"], root_path, "{l}");
    expect_lun_proof(&img.0);
}

/// `netroot=dhcp` with a lease whose root path is not iSCSI: rescue says so, naming what the
/// server offered, instead of waiting for a root that cannot come.
#[test]
fn dhcp_root_path_that_is_not_iscsi_ends_in_rescue_naming_it() {
    lab::netns::require().unwrap_or_else(|e| panic!("{e}"));
    let img = lun("dhcp-nfs-root-path");
    let net = RootPathNet::new(&img.0, Some("nfs:10.77.0.1:/export/root"));
    let out = diskless_on(
        Some(net.tap()),
        &format!("rd.iscsi.initiator={INITIATOR} netroot=dhcp"),
    );
    drop(net);
    expect(
        &out,
        &[
            "boot failed in phase iscsi",
            "netroot=dhcp: no DHCP lease carried an iscsi: root path (option 17); offered: nfs:10.77.0.1:/export/root",
            "powering off",
        ],
    );
    assert!(!out.log.contains("TERRA-DEMO-INIT"));
    assert!(out.exited, "the VM must halt, not hang");
}

/// Terra OS's diskless node, the whole way: `terra pxe` turns the node's node.toml (MAC,
/// hostname, `[iscsi]` initiator and target) into its iPXE entry; the VM (no disk) boots
/// that entry over QEMU's TFTP with its iPXE ROM, stage0 logs in to the node's LUN with the
/// keys the builder wrote, and the root from the LUN runs under the node's hostname.
#[test]
fn pxe_node_boots_its_iscsi_lun_from_terra_pxe() {
    const MAC: &str = "52:54:00:7e:44:c5";
    let img = lun("pxe-node");
    let t = serve(&img.0);
    let dir = lab::disk::tempdir("pxe-iscsi").expect("scratch dir");
    let node = dir.join("iscsi-node.toml");
    std::fs::write(
        &node,
        format!(
            "hostname = \"terra-diskless\"\nmac = \"{MAC}\"\n\
             [iscsi]\ninitiator = \"{INITIATOR}\"\n\
             [[iscsi.targets]]\nportal = \"{GUEST_HOST_ADDR}:{}\"\niqn = \"{IQN}\"\n",
            t.port
        ),
    )
    .expect("node.toml");
    let a = artifacts();
    let tree = dir.join("pxe");
    let built = lab::run(
        std::process::Command::new(&a.terra)
            .arg("pxe")
            .arg("--kernel")
            .arg(&a.kernel)
            .arg("--initramfs")
            .arg(&a.initramfs)
            .args([
                "--cmdline",
                "console=ttyS0 panic=-1 terra.demo=poweroff terra.rescue=halt rw init=/bin/iscsi-init",
            ])
            .arg("--node")
            .arg(&node)
            .arg("-o")
            .arg(&tree),
    );
    let vm = boot()
        .netboot(vm::NetBoot {
            tftp_dir: Some(tree.clone()),
            bootfile: "boot.ipxe".into(),
            mac: MAC.into(),
        })
        .timeout(300);
    let out = built.map(|_| vm.run());
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.unwrap_or_else(|e| panic!("terra pxe: {e}"));
    expect(
        &out,
        &[
            &format!("ISCSI_INITIATOR={INITIATOR} ISCSI_TARGET_NAME={IQN}"),
            &format!("as {INITIATOR} (ISCSI_TARGET_*)"),
            "TERRA-ISCSI-PROOF written",
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-HOSTNAME terra-diskless\n",
        ],
    );
    expect_lun_proof(&img.0);
}
