//! iSCSI root from the firmware's table: OVMF runs QEMU's iPXE ROM, which logs in to tgtd
//! (`sanhook`, with CHAP) and publishes the session in an iBFT, then boots the kernel and
//! initramfs. stage0 gets only `rd.iscsi.firmware`: it loads iscsi_ibft, reads the target,
//! initiator, CHAP credentials and NIC from /sys/firmware/ibft, brings that NIC up as the
//! firmware had it, logs in and boots the LUN's btrfs root, whose init writes a file the host
//! then finds in the image.

use std::path::{Path, PathBuf};

use lab::disk::BtrfsDisk;
use lab::harness::{artifacts, boot, busybox, expect, expect_lun_proof, report};
use lab::tgtd::{self, Tgtd, GUEST_HOST_ADDR};
use lab::vm::{self, Firmware, NetBoot, Outcome};

const LUN_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000c4";
const IQN: &str = "iqn.2024-01.org.terra-os:fw-root";
/// The name iPXE logs in with and writes into the iBFT.
const FW_INITIATOR: &str = "iqn.2024-01.org.terra-os:fw-node";
const MAC: &str = "52:54:00:7e:44:b7";
/// CHAP: iPXE logs in with these and hands them to stage0 in the iBFT. (Mutual CHAP from
/// the iBFT is covered by unit tests only: this iPXE build writes no reverse CHAP into its
/// table.)
const CHAP: (&str, &str) = ("fw-node", "fw-node-secret-77");

/// A scratch directory (TFTP root and LUN image), removed when the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The TFTP tree iPXE fetches: an iPXE script that hooks the LUN, then the kernel and the
/// default initramfs with nothing but `rd.iscsi.firmware` about iSCSI on the command line.
fn tftp_tree(dir: &Path, port: u16, extra: &str) {
    let a = artifacts();
    std::fs::copy(&a.kernel, dir.join("vmlinuz")).expect("copy kernel");
    std::fs::copy(&a.initramfs, dir.join("initrd.img")).expect("copy initramfs");
    let script = format!(
        "#!ipxe\n\
         dhcp\n\
         set initiator-iqn {FW_INITIATOR}\n\
         set username {}\n\
         set password {}\n\
         sanhook iscsi:{GUEST_HOST_ADDR}::{port}:1:{IQN} || goto failed\n\
         echo Terra: iBFT published\n\
         kernel vmlinuz initrd=initrd.img console=ttyS0 panic=-1 terra.demo=poweroff terra.rescue=halt rd.iscsi.firmware rw init=/bin/iscsi-init {extra}\n\
         initrd initrd.img\n\
         boot\n\
         :failed\n\
         echo Terra: sanhook failed\n\
         poweroff\n",
        CHAP.0, CHAP.1
    );
    std::fs::write(dir.join("boot.ipxe"), script).expect("write boot.ipxe");
}

fn ibft_boot(extra: &str) -> (Outcome, Scratch) {
    for (path, package) in [
        (vm::OVMF, "ovmf"),
        ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: apt-get install {package}"
        );
    }
    let scratch = Scratch(lab::disk::tempdir("ibft").expect("scratch dir"));
    let base = BtrfsDisk::new("os", LUN_UUID, &["os"])
        .image(&busybox())
        .expect("demo disk");
    let image = tgtd::lun_image(&base, "ibft", &["os"]).expect("LUN image");
    let lun = scratch.0.join("lun.img");
    std::fs::rename(&image, &lun).expect("move the LUN image into the scratch dir");
    let tftp = scratch.0.join("tftp");
    std::fs::create_dir_all(&tftp).expect("tftp dir");
    let mut t = Tgtd::start().expect("tgtd");
    t.target(1, IQN, &lun).expect("target");
    t.account(1, CHAP.0, CHAP.1, false)
        .expect("incoming account");
    tftp_tree(&tftp, t.port, extra);
    let out = boot()
        .firmware(Firmware::Uefi)
        .memory_mb(768)
        .timeout(300)
        .netboot(NetBoot {
            tftp_dir: Some(tftp),
            bootfile: "boot.ipxe".into(),
            mac: MAC.into(),
        })
        .run();
    drop(t);
    for l in out
        .log
        .lines()
        .filter(|l| l.contains("iscsi:") || l.contains("network:") || l.contains("Terra:"))
    {
        eprintln!("guest: {l}");
    }
    eprintln!("VM run: {:.1} s", out.elapsed.as_secs_f64());
    (out, scratch)
}

#[test]
fn boots_from_the_ibft_that_ipxe_published() {
    let (out, scratch) = ibft_boot("");
    expect(
        &out,
        &[
            "Terra: iBFT published",
            "network: from the iBFT: 1 interface(s)",
            &format!("as {FW_INITIATOR} (iBFT)"),
            "TERRA-ISCSI-PROOF written",
            "TERRA-DEMO-INIT",
        ],
    );
    // The iBFT carried the CHAP credentials (tgtd demands them); the secret, readable in
    // /sys/firmware/ibft, never reaches the console.
    assert!(
        !out.log.contains(CHAP.1),
        "the secret on the console:\n{}",
        out.log
    );
    // The boot report names the target, its source and its disk, and the NIC the firmware
    // configured (static, by its MAC), and no secret.
    let r = report(&out);
    let iscsi = &r["iscsi"][0];
    assert_eq!(iscsi["target"], IQN, "{r}");
    assert_eq!(iscsi["source"], "iBFT", "{r}");
    assert!(iscsi["chap"].is_string(), "{r}");
    assert_eq!(iscsi["mutual_chap"], false, "{r}");
    assert!(
        iscsi["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("sd")),
        "{r}"
    );
    let net = &r["network"][0];
    assert_eq!(net["mac"], MAC, "{r}");
    expect_lun_proof(&scratch.0.join("lun.img"));
}
