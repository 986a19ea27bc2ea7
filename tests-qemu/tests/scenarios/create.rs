//! An image made by `terra create` (lab::created: the demo base, a RUN step, an init named
//! only in server.toml) installed by `terra install` boots: stage0 starts the init the
//! image config names (no `init=` on the kernel line, none in node.toml), and the guest
//! sees what the RUN step wrote.

use lab::harness::{artifacts, boot, busybox, expect, report};
use lab::{created, oci_root};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e6";

#[test]
fn a_created_image_boots_its_own_init() {
    let a = artifacts();
    let layout =
        created::created_layout(&a.terra, &busybox()).expect("terra create made the image");
    let key = layout
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk = oci_root::installed_disk(
        &a.terra,
        &format!("oci:{}:{}", layout.display(), created::TAG),
        "os",
        UUID,
        &format!("os-{key}"),
    )
    .expect("disk installed from the created image");
    let out = boot().disk(disk).run();
    expect(
        &out,
        &[
            &format!("{} pid=1", created::MARKER),
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    let r = report(&out);
    assert_eq!(r["init"], "/sbin/created-init", "{r}");
    assert!(out.exited, "the VM should power off");
}
