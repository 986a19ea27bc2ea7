//! `terra pxe`: the tree's files, per-node entries and their errors. Booting the tree under
//! QEMU is tests-qemu/tests/scenarios/artifacts.rs.

use std::path::Path;
use std::process::{Command, Output};

fn terra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terra"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn setup(dir: &Path) {
    std::fs::write(dir.join("k"), b"kernel").unwrap();
    std::fs::write(dir.join("i"), b"initramfs").unwrap();
    std::fs::write(
        dir.join("n1.toml"),
        "hostname = \"terra-01\"\nmac = \"52:54:00:12:34:56\"\n[boot]\nversion = \"v6\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("n2.toml"),
        "hostname = \"terra-02\"\nmac = \"52:54:00:AB:CD:EF\"\n",
    )
    .unwrap();
}

#[test]
fn tree_has_ipxe_and_pxelinux_entries_per_node_and_a_default() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let p = d.path();
    let tree = p.join("tftp");
    let o = terra(&[
        "pxe",
        "--kernel",
        s(&p.join("k")),
        "--initramfs",
        s(&p.join("i")),
        "--node",
        s(&p.join("n1.toml")),
        "--node",
        s(&p.join("n2.toml")),
        "--cmdline",
        "console=ttyS0",
        "-o",
        s(&tree),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&tree.join("vmlinuz")), "kernel");
    assert_eq!(read(&tree.join("initrd.img")), "initramfs");
    let boot = read(&tree.join("boot.ipxe"));
    assert!(boot.starts_with("#!ipxe\n"), "{boot}");
    assert!(
        boot.contains("${mac:hexhyp}.ipxe || goto default"),
        "{boot}"
    );
    let n1 = read(&tree.join("52-54-00-12-34-56.ipxe"));
    assert!(
        n1.contains(
            "kernel vmlinuz initrd=initrd.img boot=terra BOOTIF=01-52-54-00-12-34-56 hostname=terra-01 version=v6 console=ttyS0\ninitrd initrd.img\nboot\n"
        ),
        "{n1}"
    );
    // pxelinux, as Terra OS wrote it: 01-<mac with dashes>, DEFAULT/LABEL/KERNEL/INITRD/APPEND.
    assert_eq!(
        read(&tree.join("pxelinux.cfg/01-52-54-00-ab-cd-ef")),
        "DEFAULT terra\n\nLABEL terra\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND boot=terra BOOTIF=01-52-54-00-ab-cd-ef hostname=terra-02 console=ttyS0\n"
    );
    assert!(!tree.join("pxelinux.0").exists(), "only with --pxelinux");
    let default = read(&tree.join("pxelinux.cfg/default"));
    assert!(
        default.contains("APPEND boot=terra console=ttyS0\n  IPAPPEND 2\n"),
        "{default}"
    );

    // A node dropped from the list loses its entries.
    let o = terra(&[
        "pxe",
        "--pxelinux",
        "--kernel",
        s(&p.join("k")),
        "--initramfs",
        s(&p.join("i")),
        "--node",
        s(&p.join("n2.toml")),
        "-o",
        s(&tree),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tree.join("52-54-00-12-34-56.ipxe").exists());
    assert!(!tree.join("pxelinux.cfg/01-52-54-00-12-34-56").exists());
    assert!(tree.join("52-54-00-ab-cd-ef.ipxe").exists());
    // --pxelinux: Debian's pxelinux.0 and ldlinux.c32 (packages pxelinux, syslinux-common).
    assert!(tree.join("pxelinux.0").is_file() && tree.join("ldlinux.c32").is_file());
}

#[test]
fn duplicate_macs_and_missing_inputs_are_named() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let p = d.path();
    std::fs::write(
        p.join("n3.toml"),
        "hostname = \"x\"\nmac = \"52-54-00-12-34-56\"\n",
    )
    .unwrap();
    let o = terra(&[
        "pxe",
        "--kernel",
        s(&p.join("k")),
        "--initramfs",
        s(&p.join("i")),
        "--node",
        s(&p.join("n1.toml")),
        "--node",
        s(&p.join("n3.toml")),
        "-o",
        s(&p.join("t")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.starts_with("terra: ")
            && err.contains("n1.toml")
            && err.contains("n3.toml")
            && err.contains("52:54:00:12:34:56"),
        "{err}"
    );
    let o = terra(&[
        "pxe",
        "--kernel",
        s(&p.join("nokernel")),
        "--initramfs",
        s(&p.join("i")),
        "-o",
        s(&p.join("t")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot read kernel") && err.contains("nokernel"),
        "{err}"
    );
    let o = terra(&[
        "pxe",
        "--kernel",
        s(&p.join("k")),
        "--initramfs",
        s(&p.join("noinitrd")),
        "-o",
        s(&p.join("t")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot read initramfs") && err.contains("noinitrd"),
        "{err}"
    );
    std::fs::write(p.join("nomac.toml"), "hostname = \"x\"\n").unwrap();
    let o = terra(&[
        "pxe",
        "--kernel",
        s(&p.join("k")),
        "--initramfs",
        s(&p.join("i")),
        "--node",
        s(&p.join("nomac.toml")),
        "-o",
        s(&p.join("t")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nomac.toml: mac"), "{err}");
}
