//! The image corpus's buildah-made images (busybox, `RUN` steps as root and as `USER
//! 1000`, files of lower layers deleted and replaced; per-instruction layers, squashed, and
//! with a file added by `umoci insert`) installed by `terra install` boot: stage0 mounts
//! the subvolume, and the guest sees what the layers' `RUN` steps left.

use lab::harness::{artifacts, boot, busybox, expect, report};
use lab::oci_root::{self, corpus};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e3";

#[test]
fn the_buildah_image_installed_by_terra_boots() {
    let c = corpus::corpus(&busybox()).expect("the image corpus");
    let key = c
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `layers-umoci` adds a file with `umoci insert`: its top layer ends without padding or
    // end-of-archive blocks, the layer `terra install` used to refuse.
    for (tag, marker) in [
        ("layers", "none"),
        ("squash", "none"),
        ("layers-umoci", "inserted by umoci"),
    ] {
        let disk = oci_root::installed_disk(
            &artifacts().terra,
            &format!("oci:{}:{tag}", c.buildah_layout().display()),
            "os",
            UUID,
            &format!("os-buildah-{tag}-{key}"),
        )
        .expect("disk installed from the buildah image");
        let out = boot().disk(disk).append("init=/sbin/corpus-check").run();
        expect(
            &out,
            &[
                "TERRA-CORPUS mine=1000:644 busybox=4755 doc-a=directory old=absent b=b, changed",
                &format!("TERRA-CORPUS-MARKER {marker}"),
                "TERRA-DEMO-INIT",
                "subvol=os pid=1",
                "TERRA-DEMO-POWEROFF",
            ],
        );
        let r = report(&out);
        assert_eq!(r["root"]["uuid"], UUID, "{tag}");
        assert_eq!(r["root"]["options"], "subvol=os", "{tag}");
        assert!(out.exited, "{tag}: the VM should power off");
    }
}

/// The unpack benchmark on the buildah image alone (numbers, not pass/fail; `cargo xtask
/// bench --only unpack` runs it after the 300 MiB case): `cargo test -p tests-qemu --test
/// image_corpus -- --ignored --nocapture buildah_unpack_benchmark`.
#[test]
#[ignore]
fn buildah_unpack_benchmark() {
    let terra = lab::build::terra().expect("terra builds");
    let table = lab::bench::unpack::unpack_buildah(&terra, &busybox(), 10).expect("benchmark runs");
    println!("{table}");
}
