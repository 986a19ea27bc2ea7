//! Live ISOs (`terra iso --live REF`): the image becomes a squashfs root on the medium, and
//! stage0 boots it under a tmpfs overlay with no disk (`root=live:LABEL=…`,
//! `init/src/live.rs`).
//!
//! - The demo image's live ISO boots from a CD-ROM under SeaBIOS, and the same file as a
//!   USB stick (QEMU's usb-storage on xHCI) under OVMF. The root is an overlay on a loop
//!   device, and it takes writes even in `/usr`.
//! - An installer ISO (the demo root plus `terra`, stage0 and the tools `terra install`
//!   runs; `lab::live`) boots with `init=` its install script, which installs the demo
//!   image onto the machine's empty disk with `mbr = true`; that disk then boots on its own
//!   under SeaBIOS, with no ISO and no `-kernel`.
//! - A live ISO whose kernel line names an image the medium lacks ends in rescue naming
//!   the path and the device.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lab::build::Initramfs;
use lab::harness::{artifacts, boot, busybox, expect, report, run, Boot};
use lab::vm::{Firmware, Vm};

const INSTALLED_UUID: &str = "7e44a1a0-5ca1-4e00-9000-00000000011e";

fn work_dir() -> PathBuf {
    let dir = lab::lab_dir().join("live");
    std::fs::create_dir_all(&dir).expect("live dir");
    dir
}

/// The lab's initramfs plus the drivers of the media a live ISO boots from on real machines
/// (the QEMU set has none: its roots are on virtio): `ata_piix` for the `pc` machine's IDE
/// CD-ROM, `ahci` for q35's SATA one, `xhci_pci` and `usb_storage` for a USB stick.
fn live_initramfs() -> &'static PathBuf {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let a = artifacts();
        let img = work_dir().join("initramfs-live.img");
        Initramfs {
            extra: vec![
                "--module".into(),
                "ata_piix,ahci,xhci_pci,usb_storage".into(),
            ],
            ..Default::default()
        }
        .build(&a.terra, &a.stage0, &a.kver, &img)
        .expect("initramfs with the CD-ROM drivers");
        img
    })
}

/// `terra iso --live REF` with the lab's kernel and [`live_initramfs`]; prints terra's
/// report.
fn live_iso(reference: &str, name: &str, cmdline: &str) -> PathBuf {
    let a = artifacts();
    let iso = work_dir().join(name);
    let out = lab::run(
        Command::new(&a.terra)
            .arg("iso")
            .arg("--kernel")
            .arg(&a.kernel)
            .arg("--initramfs")
            .arg(live_initramfs())
            .args(["--live", reference, "--cmdline", cmdline, "-o"])
            .arg(&iso)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprint!("{out}");
    assert!(
        out.contains("squashfs"),
        "terra iso reports the live root: {out}"
    );
    iso
}

/// The demo image's live ISO, made once.
fn demo_iso() -> &'static PathBuf {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let (layout, _) = lab::oci_root::demo_layout(&busybox()).expect("demo image");
        let reference = format!("oci:{}:{}", layout.display(), lab::oci_root::DEMO_TAG);
        live_iso(
            &reference,
            "demo-live.iso",
            "panic=-1 terra.demo=poweroff terra.demo=persist",
        )
    })
}

/// A live boot of the demo ISO: the root is the overlay over the squashfs on a loop device,
/// found by the ISO's label, and it takes writes.
#[track_caller]
fn expect_live_demo(vm: &Vm) {
    let out = run(vm);
    expect(
        &out,
        &[
            "TERRA-DEMO-INIT",
            "subvol=os pid=1",
            "TERRA-DEMO-USR-WRITE ok",
            "TERRA-DEMO-ETC-WRITE ok",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    let r = report(&out);
    assert_eq!(r["root"]["fstype"], "overlay", "{r}");
    assert_eq!(r["root"]["label"], "TERRA", "{r}");
    assert!(
        r["root"]["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("/dev/loop")),
        "{r}"
    );
    assert_eq!(r["root"]["read_only"], false, "{r}");
    assert!(out.exited, "the VM should power off");
}

/// A VM under `firmware` with the lab's kernel and [`live_initramfs`] (used only when it
/// boots with `-kernel`).
fn live_vm(firmware: Firmware) -> Boot {
    boot().initrd(live_initramfs()).firmware(firmware)
}

#[test]
fn a_live_iso_boots_its_squashfs_root_from_a_cdrom_under_seabios() {
    expect_live_demo(&live_vm(Firmware::Bios).cdrom(demo_iso()).vm());
}

#[test]
fn the_same_iso_on_a_usb_stick_boots_under_ovmf() {
    // No -kernel: the firmware boots the stick, which holds the ISO's bytes as `dd`
    // writes them.
    let mut vm = live_vm(Firmware::Uefi).from_disk().vm();
    vm.add_usb_stick(demo_iso());
    expect_live_demo(&vm);
}

#[test]
fn a_missing_image_on_the_medium_is_named_in_rescue() {
    let mut vm = live_vm(Firmware::Bios).timeout(90).vm();
    // The kernel directly (no firmware, no GRUB): only stage0's handling is under test.
    vm.append =
        "root=live:CDLABEL=TERRA rd.live.squashimg=absent.img terra.rescue=halt terra.timeout=20"
            .into();
    vm.extra = vec![
        "-drive".into(),
        format!("file={},media=cdrom,readonly=on", demo_iso().display()),
    ];
    let out = run(&vm);
    expect(&out, &["/LiveOS/absent.img", "rd.live.squashimg="]);
    assert!(
        !out.log.contains("TERRA-DEMO-INIT"),
        "no root may start:\n{}",
        out.log
    );
}

/// An empty 512 MiB disk (sparse).
fn blank_disk(path: &Path) {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path).expect("blank disk");
    f.set_len(512 << 20).expect("size the blank disk");
}

#[test]
fn a_live_iso_installs_a_disk_that_boots_on_its_own() {
    let a = artifacts();
    let reference = lab::live::installer_image(a, &busybox()).expect("installer image");
    let iso = live_iso(
        &reference,
        "installer-live.iso",
        &format!(
            "panic=-1 init=/bin/live-install terra.live.uuid={INSTALLED_UUID} \
             terra.live.cmdline=panic=-1,terra.demo=poweroff \
             terra.modules=virtio_pci,virtio_blk,btrfs"
        ),
    );
    // The busybox root has no udev or modprobe to load the target disk's driver and btrfs
    // once stage0 found the medium; terra.modules= has stage0 load them (a distribution's
    // live root has both).
    let disk = work_dir().join("installed.img");
    blank_disk(&disk);

    let out = live_vm(Firmware::Bios)
        .cdrom(iso)
        .disk(&disk)
        .keep_writes()
        .memory_mb(1024)
        .timeout(600)
        .run();
    expect(
        &out,
        &[
            "TERRA-LIVE-ROOT overlay",
            "terra: installed",
            "TERRA-LIVE-INSTALL rc=0",
        ],
    );
    assert!(out.exited, "the installer should power off");

    // The installed disk alone: firmware, its GRUB, its kernel and initramfs, its root.
    let out = live_vm(Firmware::Bios).from_disk().disk(&disk).run();
    expect(
        &out,
        &[
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-HOSTNAME terra-installed",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    assert_eq!(report(&out)["root"]["uuid"], INSTALLED_UUID);
    let _ = std::fs::remove_file(&disk);
}
