//! A disk made by `terra install` with `mbr = true` boots on its own: no `-kernel`, no
//! `-initrd`, the firmware runs GRUB from the disk (its MBR and BIOS boot partition under
//! SeaBIOS, `/EFI/BOOT/BOOTX64.EFI` on the ESP under OVMF), GRUB boots the ESP's slot of the
//! default version, and stage0 runs the image's init. The same disk file for both firmwares.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use lab::harness::{artifacts, busybox, expect, report, run};
use lab::oci_root;
use lab::vm::{Firmware, Vm};

const BOOT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e5";

fn disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let a = artifacts();
        oci_root::demo_boot_disk(
            &a.terra,
            &busybox(),
            &a.stage0,
            &a.kernel,
            BOOT_UUID,
            "terra.demo=poweroff",
        )
        .expect("bootable disk from terra install")
    })
    .clone()
}

fn boot(firmware: Firmware) {
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, lab::harness::accel());
    vm.boot_disk = true;
    vm.firmware = firmware;
    vm.disks = vec![disk()];
    // Firmware, GRUB, then Linux, all under TCG.
    vm.timeout = Duration::from_secs(150);
    let out = run(&vm);
    expect(
        &out,
        &["TERRA-DEMO-INIT", "subvol=os pid=1", "TERRA-DEMO-POWEROFF"],
    );
    let r = report(&out);
    assert_eq!(r["root"]["uuid"], BOOT_UUID);
    assert_eq!(r["version"]["name"], "os");
    assert!(out.exited, "the VM should power off");
}

#[test]
fn an_installed_disk_boots_by_itself_under_seabios() {
    boot(Firmware::Bios);
}

#[test]
fn the_same_disk_boots_by_itself_under_ovmf() {
    boot(Firmware::Uefi);
}
