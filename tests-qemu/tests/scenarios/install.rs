//! Disks written by `terra install` from OCI images boot: stage0 finds the group by label,
//! mounts the root subvolume the install made, and runs the image's init.

use lab::build;
use lab::harness::{artifacts, boot, busybox, expect, report};
use lab::oci_root;

const INSTALL_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e1";
const RAID_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e2";

#[test]
fn a_disk_written_by_terra_install_boots_to_the_image_init() {
    let disk =
        oci_root::demo_disk(&artifacts().terra, &busybox(), INSTALL_UUID).expect("installed disk");
    let out = boot().disk(disk).run();
    expect(
        &out,
        &["TERRA-DEMO-INIT", "subvol=os pid=1", "TERRA-DEMO-POWEROFF"],
    );
    let r = report(&out);
    assert_eq!(r["root"]["fstype"], "btrfs");
    assert_eq!(r["root"]["uuid"], INSTALL_UUID);
    assert_eq!(r["root"]["options"], "subvol=os");
    assert!(out.exited, "VM should power off");
}

#[test]
fn a_raid1_group_written_by_terra_install_boots() {
    let a = artifacts();
    let (layout, digest) = oci_root::demo_layout(&busybox()).expect("demo image");
    let disks = oci_root::installed_raid1(
        &a.terra,
        &format!("oci:{}:{}", layout.display(), oci_root::DEMO_TAG),
        "os",
        RAID_UUID,
        &format!("os-raid1-oci-{}", &digest[7..19]),
    )
    .expect("installed raid1 disks");
    // stage0 waits for both members (the superblock counts them) and names them to btrfs.
    let out = boot()
        .disks(disks)
        .append(&format!("root=UUID={RAID_UUID}"))
        .run();
    expect(&out, &["TERRA-DEMO-INIT", "subvol=os pid=1"]);
    let r = report(&out);
    assert_eq!(r["root"]["uuid"], RAID_UUID);
    let options = r["root"]["options"].as_str().unwrap();
    assert!(options.contains("device=/dev/v"), "{options}");
}

/// The unpack benchmark (numbers, not pass/fail): `cargo test --release -p tests-qemu
/// --test scenarios -- --ignored --nocapture install::unpack_benchmark`; TERRA_BENCH_MB
/// sets the size.
#[test]
#[ignore]
fn unpack_benchmark() {
    let mb = std::env::var("TERRA_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let terra = build::terra().expect("terra builds");
    let table = lab::bench::unpack::unpack(&terra, mb, 3).expect("benchmark runs");
    println!("{table}");
}
