//! A disk made by `terra install` with `mbr = true` boots on its own: no `-kernel`, no
//! `-initrd`, the firmware runs GRUB from the disk (its MBR and BIOS boot partition under
//! SeaBIOS, `/EFI/BOOT/BOOTX64.EFI` on the ESP under OVMF), GRUB boots the ESP's slot of the
//! default version, and stage0 runs the image's init. The same disk file for both firmwares.

use std::path::PathBuf;
use std::sync::OnceLock;

use lab::harness::{artifacts, boot, busybox, expect, report, run, scratch_copy};
use lab::oci_root;
use lab::vm::Firmware;

const BOOT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e5";
const BLESS_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e6";

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

fn boots_by_itself(firmware: Firmware) {
    // Firmware, GRUB, then Linux, all under TCG.
    let out = boot().from_disk().firmware(firmware).disk(disk()).run();
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
    boots_by_itself(Firmware::Bios);
}

#[test]
fn the_same_disk_boots_by_itself_under_ovmf() {
    boots_by_itself(Firmware::Uefi);
}

/// The booted system's confirmation brings the ESP along: a tentative version boots from
/// the old default's ESP entry, `/run/terra/bless good` makes it the default and rewrites
/// the ESP (in its private mount namespace, vfat loaded by stage0), and the next boot's
/// GRUB entry names it.
#[test]
fn the_booted_systems_confirmation_moves_the_esp_to_the_new_default() {
    let a = artifacts();
    let layout = lab::versions::layout(&busybox()).expect("versions layout");
    let cached = oci_root::boot_disk(
        &oci_root::BootDisk {
            terra: &a.terra,
            stage0: &a.stage0,
            kernel: &a.kernel,
            image: &format!("oci:{}:v1", layout.display()),
            uuid: BLESS_UUID,
            append: "terra.demo=bless terra.demo=poweroff",
            size_mb: oci_root::BOOT_DISK_MB,
        },
        "boot-bless",
    )
    .expect("bootable disk");
    let disk = scratch_copy(&cached, "disk-boot-bless.img");
    lab::versions::upgrade(&a.terra, &disk, &layout, "v2", &[]).expect("terra upgrade");
    let cfg = |d: &std::path::Path| {
        String::from_utf8(
            oci_root::esp_file(d, "terra/grub.cfg")
                .unwrap()
                .expect("grub.cfg"),
        )
        .unwrap()
    };
    assert!(cfg(&disk).contains("# version=os\n"), "{}", cfg(&disk));

    let vm = boot().from_disk().disk(&disk).keep_writes().vm();
    let out = run(&vm);
    expect(
        &out,
        &[
            "subvol=v2 pid=1",
            "the ESP boots v2 now",
            "TERRA-DEMO-BLESS rc=0",
        ],
    );
    let c = cfg(&disk);
    assert!(
        c.contains("# version=v2\n") && c.contains("# slot=b\n"),
        "{c}"
    );
    assert!(oci_root::esp_file(&disk, "terra/grub.cfg.new")
        .unwrap()
        .is_none());

    let out = run(&vm);
    expect(&out, &["subvol=v2 pid=1", "TERRA-DEMO-POWEROFF"]);
    assert_eq!(report(&out)["version"]["why"], "default");
    let _ = std::fs::remove_file(&disk);
}

/// A power cut in the middle of an ESP sync's last step (the old `grub.cfg` gone, the new
/// one still `grub.cfg.new`) leaves a disk that boots: GRUB's early config falls back to
/// `grub.cfg.new`. The builder test `disk_boot` kills the sync at every step and checks the
/// files; this boots the one state only GRUB's fallback can save.
#[test]
fn a_disk_cut_off_between_the_esp_configs_still_boots() {
    let copy = scratch_copy(&disk(), "disk-boot-cut.img");
    let moved = std::process::Command::new("mmove")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@2M", copy.display()))
        .args(["::/terra/grub.cfg", "::/terra/grub.cfg.new"])
        .output()
        .unwrap();
    assert!(moved.status.success(), "{moved:?}");
    assert!(oci_root::esp_file(&copy, "terra/grub.cfg")
        .unwrap()
        .is_none());
    let out = boot().from_disk().disk(&copy).run();
    expect(&out, &["subvol=os pid=1", "TERRA-DEMO-POWEROFF"]);
    let _ = std::fs::remove_file(&copy);
}
