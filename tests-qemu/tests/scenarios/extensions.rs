//! Extensions end to end (issue 28): a root whose os-release is `ID=terra-demo
//! VERSION_ID=1` installed by `terra install`, two extension images made by umoci added
//! with `terra extension add --disk`, booted under QEMU. The one that fits is overlaid on
//! `/usr` (read-only) and `/etc` (beneath the persistent overlay's writable layer); the
//! one naming `VERSION_ID=2` is skipped and boot.json says why. Removing the fitting one
//! takes it away at the next boot.

use std::path::Path;
use std::process::Command;

use lab::disk::{claim_scratch, scratch_copy, tempdir};
use lab::extensions::{extension_layout, installed, root_layout};
use lab::harness::{artifacts, boot, busybox, expect, report};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e1";

fn terra_ext(disk: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(&artifacts().terra)
        .arg("extension")
        .arg(args[0])
        .arg("--disk")
        .arg(disk)
        .args(&args[1..])
        .output()
        .expect("terra runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_fitting_extension_is_overlaid_read_only_and_another_version_id_is_skipped() {
    let terra = &artifacts().terra;
    let root = root_layout(&busybox()).expect("root layout");
    let cached = installed(terra, &root, UUID).expect("installed disk");
    claim_scratch("extensions.img").unwrap();
    let disk = scratch_copy(&cached, "extensions.img").expect("scratch copy");
    let work = tempdir("ext-images").unwrap();
    let layout = extension_layout(
        &work,
        &[
            (
                "hello",
                "ID=terra-demo\nVERSION_ID=1\n",
                &[
                    ("usr/bin/hello", "#!/bin/sh\necho hello from an extension\n"),
                    ("etc/hello.conf", "from the extension\n"),
                ],
            ),
            (
                "other",
                "ID=terra-demo\nVERSION_ID=2\n",
                &[("usr/bin/other", "#!/bin/sh\necho other\n")],
            ),
        ],
    )
    .expect("umoci images");
    let r = |tag: &str| format!("oci:{}:{tag}", layout.display());
    for tag in ["hello", "other"] {
        let (ok, out) = terra_ext(&disk, &["add", &r(tag)]);
        assert!(ok, "{out}");
    }

    let out = boot().disk(&disk).keep_writes().run();
    expect(
        &out,
        &[
            "subvol=v1 pid=1",
            "TERRA-EXT-HELLO hello from an extension",
            "TERRA-EXT-OTHER absent",
            "TERRA-EXT-USR-WRITE failed",
            "Read-only file system",
            "TERRA-EXT-ETC from the extension",
            "TERRA-EXT-ETC-WRITE edited",
            "TERRA-EXT-MOUNT overlay /usr overlay ro",
        ],
    );
    let rep = report(&out);
    let ext = rep["version"]["extensions"].as_array().expect("extensions");
    assert_eq!(ext.len(), 2, "{ext:?}");
    assert_eq!(ext[0]["name"], "hello");
    assert_eq!(ext[0]["status"], "applied");
    assert_eq!(ext[0]["image"], r("hello").as_str());
    assert!(ext[0].get("reason").is_none(), "{ext:?}");
    assert_eq!(ext[1]["name"], "other");
    assert_eq!(ext[1]["status"], "skipped");
    assert_eq!(
        ext[1]["reason"],
        "it is for VERSION_ID=2, the version is VERSION_ID=1"
    );

    // Removed: the next boot is without it; the /etc edit stays in the persistent layer.
    let (ok, out) = terra_ext(&disk, &["remove", "hello"]);
    assert!(ok, "{out}");
    let out = boot().disk(&disk).keep_writes().run();
    expect(
        &out,
        &[
            "TERRA-EXT-HELLO missing",
            "TERRA-EXT-USR-WRITE failed",
            "TERRA-EXT-ETC edited",
        ],
    );
    let rep = report(&out);
    let ext = rep["version"]["extensions"].as_array().expect("extensions");
    assert_eq!(ext.len(), 1, "{ext:?}");
    assert_eq!(ext[0]["status"], "skipped");
    let _ = std::fs::remove_dir_all(&work);
}
