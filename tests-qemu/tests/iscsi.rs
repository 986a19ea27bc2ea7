//! iSCSI root scenarios: tgtd on the host serves a btrfs demo root as LUN 1; the VM has no
//! disk, only a NIC on QEMU user networking, and reaches tgtd at 10.0.2.2. stage0 logs in
//! itself, hands the session to the kernel and boots the root from it.

use std::path::PathBuf;
use std::time::Duration;

use lab::disk::BtrfsDisk;
use lab::harness::{accel, artifacts, expect};
use lab::tgtd::{self, Tgtd, GUEST_HOST_ADDR};
use lab::vm::{self, Outcome, Vm};

const LUN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000c3";
const IQN: &str = "iqn.2024-01.org.terra-os:lab-root";
const INITIATOR: &str = "iqn.2024-01.org.terra-os:lab-node";

/// A LUN image, removed when the test ends, pass or fail.
struct Lun(PathBuf);

impl Drop for Lun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh, writable LUN image: label `os`, subvolume `os`, with /bin/iscsi-init.
fn lun(name: &str) -> Lun {
    let busybox = lab::host::static_busybox().expect("static busybox");
    let base = BtrfsDisk::new("os", LUN_UUID, &["os"])
        .image(&busybox)
        .expect("demo disk");
    Lun(tgtd::lun_image(&base, name, &["os"]).expect("LUN image"))
}

/// A tgtd serving `image` as LUN 1 of target 1, [`IQN`].
fn serve(image: &std::path::Path) -> Tgtd {
    let mut t = Tgtd::start().expect("tgtd");
    t.target(1, IQN, image).expect("target");
    t
}

fn boot(append: &str) -> Outcome {
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.nic = Some("virtio".into());
    vm.append = format!("terra.demo=poweroff terra.rescue=halt {append}");
    vm.timeout = Duration::from_secs(240);
    let out = vm.run_captured().expect("qemu runs");
    // What stage0 said about the iscsi and network phases, for whoever reads test output.
    for l in out.log.lines().filter(|l| {
        l.contains("iscsi:") || l.contains("phase network") || l.contains("phase iscsi")
    }) {
        eprintln!("guest: {l}");
    }
    eprintln!("VM run: {:.1} s", out.elapsed.as_secs_f64());
    out
}

/// The root ran from the LUN: the proof file its init wrote is in the image.
#[track_caller]
fn expect_proof(image: &std::path::Path) {
    let proof = tgtd::read_from_image(image, "os/iscsi-proof").expect("mount the LUN image");
    assert!(
        proof
            .as_deref()
            .is_some_and(|p| p.contains("TERRA-ISCSI-PROOF")),
        "no proof file in {}: {proof:?}",
        image.display()
    );
}

fn phases(out: &Outcome) -> Vec<String> {
    let r = vm::boot_report(&out.log).unwrap_or_else(|| panic!("no boot report in:\n{}", out.log));
    r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn boots_from_terra_keys_and_writes_to_the_lun() {
    let img = lun("terra-keys");
    let t = serve(&img.0);
    let out = boot(&format!(
        "ISCSI_INITIATOR={INITIATOR} ISCSI_TARGET_NAME={IQN} ISCSI_TARGET_IP={GUEST_HOST_ADDR}:{} rw init=/bin/iscsi-init",
        t.port
    ));
    drop(t);
    expect(
        &out,
        &[
            "iscsi: logged in to",
            "TERRA-ISCSI-PROOF written",
            "TERRA-DEMO-INIT",
            "subvol=os pid=1",
        ],
    );
    let p = phases(&out);
    assert!(
        p.iter().any(|n| n == "network") && p.iter().any(|n| n == "iscsi"),
        "{p:?}"
    );
    expect_proof(&img.0);
}

#[test]
fn boots_via_dracut_netroot() {
    let img = lun("netroot");
    let t = serve(&img.0);
    let out = boot(&format!(
        "rd.iscsi.initiator={INITIATOR} netroot=iscsi:{GUEST_HOST_ADDR}::{}:1:{IQN} rw init=/bin/iscsi-init",
        t.port
    ));
    drop(t);
    expect(&out, &["TERRA-ISCSI-PROOF written", "TERRA-DEMO-INIT"]);
    expect_proof(&img.0);
}

#[test]
fn boots_with_mutual_chap() {
    let img = lun("chap");
    let t = serve(&img.0);
    t.account(1, "lab-node", "lab-node-secret-1", false)
        .expect("incoming account");
    t.account(1, "lab-target", "lab-target-secret-2", true)
        .expect("outgoing account");
    let out = boot(&format!(
        "rd.iscsi.initiator={INITIATOR} netroot=iscsi:lab-node:lab-node-secret-1:lab-target:lab-target-secret-2@{GUEST_HOST_ADDR}::{}:1:{IQN} rw init=/bin/iscsi-init",
        t.port
    ));
    drop(t);
    expect(
        &out,
        &["CHAP MD5", "TERRA-ISCSI-PROOF written", "TERRA-DEMO-INIT"],
    );
    // Only the kernel's own echoes of its command line may show the secrets.
    for l in out.log.lines().filter(|l| !l.contains("ommand line")) {
        assert!(
            !l.contains("lab-node-secret-1") && !l.contains("lab-target-secret-2"),
            "a secret on the console: {l}"
        );
    }
    expect_proof(&img.0);
}

#[test]
fn wrong_target_name_ends_in_rescue_with_the_targets_answer() {
    let img = lun("wrong-name");
    let t = serve(&img.0);
    let out = boot(&format!(
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
