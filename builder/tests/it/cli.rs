//! The `terra` binary: usage, exit status and `terra: ` error lines.

use crate::common;
use common::kver;
use std::process::{Command, Output};

fn terra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terra"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn have_kernel() -> bool {
    !kver().is_empty()
}

#[test]
fn help_prints_usage() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["initramfs", "--help"],
        &["uki", "--help"],
    ] {
        let o = terra(args);
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage: terra"),
            "{args:?}"
        );
    }
    let o = terra(&["initramfs", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--kver",
        "--modules-dir",
        "--stage0",
        "--config",
        "--module",
        "--modules-list",
        "--rescue-shell",
        "--busybox",
        "--compress",
        "-o",
    ] {
        assert!(text.contains(opt), "{opt} missing from help");
    }
}

#[test]
fn usage_errors_exit_2_naming_the_argument() {
    for (args, needle) in [
        (&[][..], "Usage: terra"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["initramfs"], "--output <OUT>"),
        (&["initramfs", "--bogus"], "--bogus"),
        (
            &["initramfs", "--compress", "lz4", "-o", "/dev/null"],
            "lz4",
        ),
        (
            &["uki", "--kernel", "k", "--initramfs", "i"],
            "--output <OUT>",
        ),
        (
            &[
                "uki",
                "--kernel",
                "k",
                "--initramfs",
                "i",
                "--sign-key",
                "k",
                "-o",
                "x",
            ],
            "--sign-cert <CERT>",
        ),
        (
            &["kernel", "--source", "s", "-o", "o", "-j", "many"],
            "many",
        ),
        (&["image", "pull", "alpine"], "--layout <DIR>"),
        (&["image", "unpack", "oci:x"], "<DIR>"),
        (&["bless", "maybe"], "[possible values: good, bad]"),
        (&["upgrade", "r", "--platform", "amd64"], "OS/ARCH"),
        (&["gc", "--keep", "-1"], "-1"),
    ] {
        let o = terra(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn failures_exit_1_with_a_terra_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let o = terra(&[
        "pxe",
        "--kernel",
        "/nonexistent/vmlinuz",
        "--initramfs",
        "/nonexistent/initrd",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("terra: ") && e.contains("/nonexistent/vmlinuz"),
        "{e}"
    );
    let o = terra(&["image", "unpack", "oci:/nonexistent/layout", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("terra: ") && e.contains("/nonexistent/layout"),
        "{e}"
    );
}

#[test]
fn repeated_and_comma_separated_values_add_up() {
    // Parsed, not run: a bad path after them fails only when building.
    let o = terra(&[
        "iso",
        "--kernel",
        "/nonexistent/k",
        "--initramfs",
        "i",
        "--cmdline",
        "a=1",
        "--cmdline=-b",
        "-o",
        "x.iso",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn build_errors_name_the_module_and_kernel() {
    if !have_kernel() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let stage0 = tmp.path().join("stage0");
    std::fs::write(&stage0, b"stage0").unwrap();
    let out = tmp.path().join("x.img");
    let (s, o) = (stage0.to_str().unwrap(), out.to_str().unwrap());

    let r = terra(&[
        "initramfs",
        "--stage0",
        s,
        "--module",
        "virtio_blk,no_such_mod",
        "-o",
        o,
    ]);
    assert_eq!(r.status.code(), Some(1));
    let e = stderr(&r);
    assert!(
        e.starts_with(&format!(
            "terra: module no_such_mod not found for kernel {}",
            kver()
        )),
        "{e}"
    );

    let r = terra(&["initramfs", "--stage0", s, "--kver", "0.0.1-nope", "-o", o]);
    assert_eq!(r.status.code(), Some(1));
    let e = stderr(&r);
    assert!(e.contains("0.0.1-nope") && e.contains(&kver()), "{e}");

    let r = terra(&[
        "initramfs",
        "--stage0",
        s,
        "--modules-list",
        "/nonexistent/list",
        "-o",
        o,
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("/nonexistent/list"), "{}", stderr(&r));
    assert!(!out.exists());
}

#[test]
fn builds_an_image_from_a_module_list() {
    if !have_kernel() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let stage0 = tmp.path().join("stage0");
    std::fs::write(&stage0, b"stage0").unwrap();
    let list = tmp.path().join("list");
    std::fs::write(&list, "# storage\nvirtio_blk\n\nsd_mod # disks\n").unwrap();
    let out = tmp.path().join("x.img");
    let r = terra(&[
        "initramfs",
        "--stage0",
        stage0.to_str().unwrap(),
        "--modules-list",
        list.to_str().unwrap(),
        "--module",
        "virtio_net",
        "--compress",
        "gzip",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains(&format!("kernel {}", kver())) && stdout.contains("gzip"),
        "{stdout}"
    );
    let gz = std::fs::read(&out).unwrap();
    assert_eq!(&gz[..2], b"\x1f\x8b");
    let mut cpio = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut cpio)
        .unwrap();
    let recs = terra_builder::cpio::read_archive(&cpio).unwrap();
    let load = recs
        .iter()
        .find(|r| r.name == "etc/terra/modules.load")
        .unwrap();
    // Only --module is loaded unconditionally; the list's modules are packed for on-demand loading.
    assert_eq!(load.data, b"virtio_net\n");
    for packed in ["virtio_blk.ko", "sd_mod.ko", "virtio_net.ko"] {
        assert!(
            recs.iter().any(|r| r.name.ends_with(packed)),
            "{packed} not packed"
        );
    }
}

#[test]
fn an_invalid_node_config_is_packed_with_a_warning_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let stage0 = tmp.path().join("stage0");
    std::fs::write(&stage0, b"stage0").unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(&cfg, "hostname = \"n\"\n[boot]\ntimeuot = 3\n").unwrap();
    let out = tmp.path().join("x.img");
    let r = terra(&[
        "initramfs",
        "--stage0",
        stage0.to_str().unwrap(),
        "--module",
        "virtio_blk",
        "--config",
        cfg.to_str().unwrap(),
        "--compress",
        "none",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(err.contains("warning") && err.contains("timeuot"), "{err}");
}
