//! Issue 24 end to end: Debian 12 systemd nodes that carry terra (installed from its .deb
//! in the image, `lab::debian_node`) update themselves from a registry on the host.

use std::process::Command;

use lab::debian_node::{self, NodeImages};

fn node_images() -> NodeImages {
    let deb = lab::package::build_deb().expect("cargo xtask deb");
    debian_node::node_images(&deb).expect("Debian node images (root, Debian's mirror)")
}

/// The node images hold terra as dpkg installed it, with the health checks each needs.
#[test]
fn the_node_images_carry_terra_installed_from_its_package() {
    let images = node_images();
    for tag in [debian_node::N1, debian_node::N3] {
        let dir = lab::lab_dir()
            .join("scratch")
            .join(format!("node-image-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(&lab::harness::artifacts().terra)
            .args(["image", "unpack"])
            .arg(images.reference(tag))
            .arg(&dir)
            .output()
            .expect("terra image unpack");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = std::fs::read_to_string(dir.join("var/lib/dpkg/status")).unwrap();
        let terra = status
            .split("\n\n")
            .find(|p| p.starts_with("Package: terra\n"))
            .expect("terra in dpkg's status");
        assert!(terra.contains("Status: install ok installed"), "{terra}");
        assert!(
            status.contains("Package: btrfs-progs\n"),
            "the Recommends came along"
        );
        assert!(dir.join("usr/bin/terra").is_file());
        assert!(dir
            .join("usr/lib/systemd/system/terra-update.timer")
            .is_file());
        let checks: Vec<String> = std::fs::read_dir(dir.join("etc/terra/health.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            checks.len(),
            if tag == debian_node::N3 { 2 } else { 1 },
            "{checks:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

const NODE_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e1";
const DISKLESS_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e2";
const DISKLESS_IQN: &str = "iqn.2024-01.org.terra-os:update-node";
const DISKLESS_INITIATOR: &str = "iqn.2024-01.org.terra-os:update-initiator";

/// docker-registry on the host (storage under `scratch/<name>`) holding [`debian_node::N2`]
/// as `terra/node:2` and [`debian_node::N3`] as `terra/node:stable`; returns it and the
/// repository as the guest reaches it (QEMU's user network: the host's loopback is
/// 10.0.2.2).
fn node_registry(images: &NodeImages, name: &str) -> (lab::registry::Registry, String) {
    let reg_dir = lab::lab_dir().join("scratch").join(name);
    let _ = std::fs::remove_dir_all(&reg_dir);
    std::fs::create_dir_all(&reg_dir).unwrap();
    let reg = lab::registry::Registry::start(&reg_dir).expect("docker-registry");
    for (tag, as_tag) in [(debian_node::N2, "2"), (debian_node::N3, "stable")] {
        lab::run(Command::new("skopeo").args([
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &images.reference(tag),
            &format!("docker://{}/terra/node:{as_tag}", reg.host()),
        ]))
        .expect("skopeo copy to the registry");
    }
    let from_guest = format!("{}:{}/terra/node", lab::tgtd::GUEST_HOST_ADDR, reg.port);
    (reg, from_guest)
}

/// Runtime settings for the shipped timer (in /run, so gone at the next boot): it fires two
/// seconds after it is started instead of 15 minutes after boot, and the service's output
/// also goes to the console the scenario reads.
const TIMER_SOON: &str = "mkdir -p /run/systemd/system/terra-update.timer.d \
     /run/systemd/system/terra-update.service.d\n\
     printf '[Timer]\\nOnBootSec=\\nOnActiveSec=2s\\nRandomizedDelaySec=0\\n' \
     > /run/systemd/system/terra-update.timer.d/e2e.conf\n\
     printf '[Service]\\nStandardOutput=journal+console\\nStandardError=journal+console\\n' \
     > /run/systemd/system/terra-update.service.d/e2e.conf\n\
     systemctl daemon-reload\n\
     systemctl start terra-update.timer && echo terra-update.timer started\n";

/// The drain hook (`[update] pre_reboot`): says on the console which version comes next.
const DRAIN: &str =
    "#!/bin/sh\necho \"TERRA-E2E-DRAIN before $TERRA_UPDATE_VERSION\" > /dev/console\n";

/// Inside a booted Debian 12 systemd node that carries terra from its package, on a disk
/// `terra install` made bootable (`mbr = true`: SeaBIOS, GRUB, the base kernel in
/// `.terra/kernel`): `terra upgrade --download-only` from a registry, then `terra apply
/// --reboot`, which kexecs through systemd (no firmware, no GRUB); v2's health check
/// passes and it confirms. The node is a disk node of a fleet controller (`terra node add
/// --disk-node`: `[controller]` and its token on the disk), and follows it (`[update]
/// source = "controller"`, fetching through `mirror`): a rollout names the `stable` image,
/// the shipped `terra-update.timer` fires `terra update`, which asks the controller, runs
/// the drain hook, tells the controller it applied v3 and kexecs into it; v3's health check
/// fails, it is rejected, systemd reboots through the firmware into the default. The
/// controller heard every step (the boots through `terra-report.service`, since a disk boot
/// has no network in the initramfs), paused the rollout on the rejection, and names the
/// node nothing more.
#[test]
fn a_debian_node_updates_itself_and_a_failing_health_check_sends_it_back() {
    let terra = &lab::harness::artifacts().terra;
    let images = node_images();
    let (reg, from_guest) = node_registry(&images, "node-registry");
    let (ctl_spec, ctl) = controller("debian-node-controller");
    // The node as the operator registers it: its hostname, as the installed node.toml says.
    let work = lab::lab_dir()
        .join("scratch")
        .join("debian-node-registration");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let file = work.join("node.toml");
    std::fs::write(&file, "hostname = \"terra-demo\"\n").unwrap();
    let (ok, out) = ctl_spec.cli("node", &["add", "--disk-node", file.to_str().unwrap()]);
    assert!(ok, "{out}\n{}", ctl.log());
    let handed = std::fs::read_to_string(&file).unwrap();
    let controller_table = &handed[handed.find("[controller]").expect(&handed)..];
    let token = std::fs::read_to_string(work.join("controller.token")).unwrap();
    let stable = format!("{}/terra/node:stable", reg.host());
    let (ok, out) = ctl_spec.cli(
        "rollout",
        &[
            "start",
            &stable,
            "--nodes",
            "terra-demo",
            "--confirm-within",
            "30m",
        ],
    );
    assert!(ok, "{out}\n{}", ctl.log());
    let cached = debian_node::boot_disk(&images, NODE_UUID, "terra.e2e")
        .expect("terra install of node image n1 on a bootable disk");
    let disk = lab::harness::scratch_copy(&cached, "debian-node-update.img");
    debian_node::prepare(
        &disk,
        &[
            (
                "on-1.1",
                format!(
                    "terra upgrade --download-only --plain-http {from_guest}:2\n\
                     terra versions\nterra apply --reboot\n"
                ),
            ),
            ("on-2.1", TIMER_SOON.into()),
            (
                "on-2.2",
                "terra versions\nterra update --now\nsystemctl poweroff\n".into(),
            ),
            ("drain", DRAIN.into()),
        ],
        &format!(
            "\n[update]\nsource = \"controller\"\nmirror = \"{}:{}\"\nplain_http = true\n\
             strategy = \"immediate\"\npre_reboot = \"/etc/terra-e2e/drain\"\n\n{controller_table}",
            lab::tgtd::GUEST_HOST_ADDR,
            reg.port
        ),
        &[("controller.token", token.clone())],
    )
    .expect("the node's steps, [update] and [controller]");
    let out = lab::harness::boot()
        .from_disk()
        .disk(&disk)
        .nic("virtio")
        .memory_mb(1536)
        .max_boots(4)
        .timeout(900)
        .keep_writes()
        .run();
    eprintln!("{}", out.log);
    let kexec = "kexec of the kernel in /";
    lab::harness::expect(
        &out,
        &[
            "TERRA-E2E-BOOT n=1 version=1",
            "staged: `terra apply v2` makes it boot",
            &format!("rebooting into v2: {kexec}"),
            "through systemd's kexec.target",
            "TERRA-E2E-BOOT n=2 version=2",
            "terra: health check 10-terra passed",
            "terra-update.timer started",
            &format!(
                "terra update: the controller at {} names sha256:",
                ctl_spec.guest_url()
            ),
            &format!("fetched as {from_guest}@sha256:"),
            "terra update: applied v3",
            "running update.pre_reboot /etc/terra-e2e/drain",
            "TERRA-E2E-DRAIN before v3",
            &format!(
                "terra update: told the controller at {}: v3 applied",
                ctl_spec.guest_url()
            ),
            &format!("rebooting into v3: {kexec}"),
            "terra: health check 20-app failed",
            debian_node::FAILING_CHECK_SAYS,
            "terra: version v3 rejected by health check 20-app: the next boot runs v2",
            "TERRA-E2E-STEP2.2",
            "20-app | app answers 503 on :8080",
            "names no image for this node now: nothing to do",
        ],
    );
    // Four kernels: the firmware's, two kexecs, the firmware's after the rejection.
    assert_eq!(out.boots, 4, "{}", out.log);
    assert!(
        !out.log.contains(token.trim()),
        "the token reached the console"
    );
    // The Debian root itself (the lab's debootstrapped image under the node's layers): its
    // marker unit saw multi-user.target on subvolume os of the btrfs group, and systemd
    // powered the VM off at the end.
    lab::harness::expect(
        &out,
        &[
            "Welcome to",
            &format!("{} version=1 ", lab::debian::MULTI_USER_MARKER),
        ],
    );
    let root = out
        .log
        .lines()
        .find_map(|l| l.split(&format!("{} ", lab::debian::ROOT_MARKER)).nth(1))
        .unwrap_or_else(|| panic!("no root marker:\n{}", out.log));
    assert!(
        root.contains(" btrfs ") && root.contains("subvol=/os"),
        "the root should be subvolume os of the btrfs group: {root}"
    );
    assert!(out.exited, "the node powers off:\n{}", out.log);
    let states = lab::versions::states(terra, &disk).expect("terra versions");
    let _ = std::fs::remove_file(&disk);
    assert_eq!(
        states
            .iter()
            .map(|(n, s, _)| (n.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        [("os", "good"), ("v2", "default"), ("v3", "bad")],
        "{}",
        out.log
    );
    // The controller's view: the rollout paused on the node's rejection, with the check's
    // words, and the node's life as it reported it (the boots through terra-report.service).
    let (ok, status) = ctl_spec.cli("rollout", &["status", "--json"]);
    assert!(ok, "{status}");
    let rollouts: serde_json::Value = serde_json::from_str(&status).unwrap();
    let r = &rollouts[0];
    assert_eq!(r["state"], "paused", "{r:#}\n{}", ctl.log());
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("node terra-demo: rejected: health check 20-app failed"),
        "{r:#}"
    );
    let (ok, shown) = ctl_spec.cli("node", &["show", "terra-demo", "--json"]);
    assert!(ok, "{shown}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let events: Vec<(String, String, String)> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or("").to_string(),
                e["version"].as_str().unwrap_or("").to_string(),
                e["report"]["sent_by"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for want in [
        ("applied", "v3", "terra"),
        ("boot", "v3", "stage0"),
        ("rejected", "v3", "bless"),
        ("boot", "v2", "stage0"),
    ] {
        assert!(
            events
                .iter()
                .any(|(e, v, by)| (e.as_str(), v.as_str(), by.as_str()) == want),
            "no {want:?} in {events:?}\n{}",
            ctl.log()
        );
    }
    assert_eq!(shown["running_version"], "v2", "{shown:#}");
}

/// A fleet controller on loopback (state under `scratch/<name>`, `--plain-http` for the
/// lab's registry), started and stopped by the caller's handle.
fn controller(name: &str) -> (lab::fleet::ControllerSpec, lab::fleet::Controller) {
    let state = lab::lab_dir().join("scratch").join(name);
    let _ = std::fs::remove_dir_all(&state);
    let a = lab::harness::artifacts();
    let program = lab::build::controller().expect("terra-controller");
    let mut spec = lab::fleet::ControllerSpec::new(&program, &state, &a.kernel, &a.initramfs)
        .expect("a controller spec");
    spec.extra.push("--plain-http".into());
    let c = lab::fleet::Controller::start(&spec).unwrap_or_else(|e| panic!("{e}"));
    (spec, c)
}

/// The same node diskless: its disk is a tgtd LUN that stage0 logs in to (the lab's kernel
/// from QEMU, so the restart is a normal reboot: the node has no base kernel). Inside the
/// booted Debian node, `terra upgrade --download-only` stages v2 on the LUN, `terra apply
/// --reboot` restarts, stage0 logs in again and boots v2, its health check passes and it
/// confirms. The node's networkd takes the link over (stage0's hand-off in
/// /run/systemd/network keeps its name and address) instead of leaving it pending while
/// `systemd-networkd-wait-online` stalls the boot. (A connection error when iscsid adopts
/// the session may show: that is iscsid's takeover, `iscsi_keeper.rs`.)
#[test]
fn a_diskless_debian_node_upgrades_itself_on_its_lun() {
    let terra = &lab::harness::artifacts().terra;
    let images = node_images();
    let (_reg, from_guest) = node_registry(&images, "node-registry-diskless");
    let cached = lab::oci_root::installed_disk_sized(
        terra,
        &images.reference(debian_node::N1),
        "os",
        DISKLESS_UUID,
        &format!(
            "debian-node-plain-{}",
            &images.digest(debian_node::N1).unwrap()[7..19]
        ),
        2048,
    )
    .expect("terra install of node image n1");
    let lun = lab::harness::scratch_copy(&cached, "debian-node-lun.img");
    debian_node::prepare(
        &lun,
        &[
            (
                "on-1.1",
                format!(
                    "networkctl list --no-pager\n\
                     terra upgrade --download-only --plain-http {from_guest}:2\n\
                     terra apply --reboot\n"
                ),
            ),
            (
                "on-2.1",
                "terra versions\ncat /run/systemd/network/10-terra-eth0.network\n\
                 systemctl poweroff\n"
                    .into(),
            ),
        ],
        "",
        &[],
    )
    .expect("the node's steps");
    let mut tgt = lab::tgtd::Tgtd::start_on("127.0.0.1").expect("tgtd");
    tgt.target(1, DISKLESS_IQN, &lun).expect("the node's LUN");
    let out = lab::harness::boot()
        .nic("virtio")
        .memory_mb(1536)
        .append(&format!(
            "rd.iscsi.initiator={DISKLESS_INITIATOR} netroot=iscsi:{}::{}:1:{DISKLESS_IQN} terra.e2e",
            lab::tgtd::GUEST_HOST_ADDR,
            tgt.port
        ))
        .max_boots(2)
        .timeout(600)
        .run();
    drop(tgt);
    eprintln!("{}", out.log);
    lab::harness::expect(
        &out,
        &[
            "TERRA-E2E-BOOT n=1 version=1",
            "staged: `terra apply v2` makes it boot",
            "rebooting into v2: a normal reboot through systemd's reboot.target",
            "TERRA-E2E-BOOT n=2 version=2",
            "terra: health check 10-terra passed",
            "TERRA-E2E-STEP2.1",
            "TERRA-E2E-STEP2.1 KeepConfiguration=yes",
        ],
    );
    // networkd took the link over (udev kept its name; the lease renewed in place): without
    // the hand-off it stays "pending".
    assert!(
        out.log.lines().any(|l| l.contains("TERRA-E2E-STEP1.1")
            && l.contains(" eth0 ")
            && l.contains("configured")),
        "networkd did not configure eth0:\n{}",
        out.log
    );
    assert_eq!(out.boots, 2, "{}", out.log);
    assert!(out.exited, "v2 powers off:\n{}", out.log);
    let states = lab::versions::states(terra, &lun).expect("terra versions");
    let _ = std::fs::remove_file(&lun);
    assert_eq!(
        states
            .iter()
            .map(|(n, s, _)| (n.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        [("os", "good"), ("v2", "default")],
        "{}",
        out.log
    );
}
