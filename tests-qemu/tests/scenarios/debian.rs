//! A Debian 12 systemd root, made as a user would (debootstrap → OCI image layout, see
//! `lab::debian`) and written by `terra install`, upgraded to a second such image: stage0
//! boots it into systemd, which reaches multi-user.target, confirms it and powers the VM
//! off. (The first image's boot to multi-user, its root mount and its power-off are checked
//! by `auto_update::a_debian_node_updates_itself…`, whose node images are this image plus terra.)

use lab::debian::{self, DebianImages};
use lab::harness::{artifacts, boot, expect, scratch_copy};

const UPGRADE_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000d2";

/// Under TCG a Debian boot to multi-user takes a while; this bounds the whole run.
const TIMEOUT_S: u64 = 300;

fn images() -> DebianImages {
    debian::debian_images().expect("Debian images (debootstrap needs root and Debian's mirror)")
}

/// A Debian root upgraded to a second Debian image confirms itself: stage0 boots v2 as
/// tentative and leaves its runtime unit, systemd runs it once the boot is complete, and
/// v2 is the default afterwards. Neither image knows about Terra's versions. (A Debian
/// version whose health check fails is `auto_update::a_debian_node_updates_itself…`.)
#[test]
fn a_debian_root_upgraded_to_a_second_image_confirms_itself() {
    let terra = &artifacts().terra;
    let images = images();
    let cached = debian::debian_disk(terra, &images, debian::V1, UPGRADE_UUID)
        .expect("Debian v1 installed by terra install");
    let disk = scratch_copy(&cached, "debian-upgrade.img");
    let up = lab::versions::upgrade(terra, &disk, &images.layout, debian::V2, &[])
        .expect("terra upgrade to Debian v2");
    assert!(up.contains("1 of 2 layers from chains"), "{up}");
    let out = boot()
        .disk(&disk)
        .memory_mb(1024)
        .keep_writes()
        .timeout(TIMEOUT_S)
        .run();
    expect(
        &out,
        &[
            "is tentative (2 tries left",
            &format!("{} version=2 ", debian::MULTI_USER_MARKER),
            "version v2 confirmed: it is the default now",
            debian::POWEROFF_MARKER,
        ],
    );
    let states = lab::versions::states(terra, &disk).expect("terra versions");
    let _ = std::fs::remove_file(&disk);
    assert_eq!(
        states,
        [
            ("os".to_string(), "good".to_string(), 0),
            ("v2".to_string(), "default".to_string(), 0)
        ],
        "{}",
        out.log
    );
}
