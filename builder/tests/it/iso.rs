//! `terra iso`: the image is reproducible, carries the node's arguments and a volume label,
//! and has both boot paths (El Torito BIOS and EFI). Booting it is tests-qemu/tests/scenarios/artifacts.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

const GRUB_PC: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";
const GRUB_EFI: &str = "/usr/lib/grub/x86_64-efi/linux.mod";

fn terra(args: &[&str], epoch: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_terra"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .unwrap()
}

fn check(o: &Output) {
    assert!(
        o.status.success(),
        "terra failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Stand-ins for a kernel and an initramfs: the ISO only carries them.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let k = dir.join("vmlinuz");
    let i = dir.join("initrd.img");
    std::fs::write(&k, vec![0x4b; 300_000]).unwrap();
    std::fs::write(&i, vec![0x49; 200_000]).unwrap();
    (k, i)
}

fn sha256(p: &Path) -> String {
    let d = Sha256::digest(std::fs::read(p).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The GRUB tools are host packages (grub-common, grub-pc-bin, grub-efi-amd64-bin, mtools,
/// xorriso, dosfstools); CI installs them with scripts/setup-host.sh.
fn tools_present() -> bool {
    let ok = Path::new(GRUB_PC).exists() && Path::new(GRUB_EFI).exists();
    assert!(
        ok,
        "GRUB images missing: apt-get install grub-common grub-pc-bin grub-efi-amd64-bin mtools xorriso dosfstools"
    );
    ok
}

#[test]
fn same_inputs_give_the_same_bytes() {
    tools_present();
    let d = tempfile::tempdir().unwrap();
    let (k, i) = inputs(d.path());
    let a = d.path().join("a.iso");
    let b = d.path().join("b.iso");
    check(&terra(
        &["iso", "--kernel", s(&k), "--initramfs", s(&i), "-o", s(&a)],
        "1700000000",
    ));
    // Different input mtimes and a later wall clock must not matter.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let f = std::fs::File::options().append(true).open(&k).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    check(&terra(
        &["iso", "--kernel", s(&k), "--initramfs", s(&i), "-o", s(&b)],
        "1700000000",
    ));
    assert_eq!(sha256(&a), sha256(&b));
    // Another epoch is another image.
    check(&terra(
        &["iso", "--kernel", s(&k), "--initramfs", s(&i), "-o", s(&b)],
        "1700000001",
    ));
    assert_ne!(sha256(&a), sha256(&b));
}

#[test]
fn image_has_label_boot_paths_and_node_arguments() {
    tools_present();
    let d = tempfile::tempdir().unwrap();
    let (k, i) = inputs(d.path());
    let node = d.path().join("node.toml");
    std::fs::write(
        &node,
        "hostname = \"terra-07\"\nmac = \"52:54:00:00:00:07\"\n[boot]\nversion = \"v9\"\n",
    )
    .unwrap();
    let iso = d.path().join("t.iso");
    let o = terra(
        &[
            "iso",
            "--kernel",
            s(&k),
            "--initramfs",
            s(&i),
            "--node",
            s(&node),
            "--cmdline",
            "quiet terra.debug",
            "--label",
            "TERRA_TEST",
            "-o",
            s(&iso),
        ],
        "0",
    );
    check(&o);
    let out = Command::new("xorriso")
        .args(["-indev", s(&iso), "-report_el_torito", "plain", "-pvd_info"])
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("Volume Id    : TERRA_TEST"), "{report}");
    // Two El Torito entries: BIOS (platform 0x00) and UEFI (0xef).
    assert!(
        report.contains("BIOS") && report.contains("UEFI"),
        "{report}"
    );
    let cfg = d.path().join("grub.cfg");
    let x = Command::new("xorriso")
        .args([
            "-osirrox",
            "on",
            "-indev",
            s(&iso),
            "-extract",
            "/boot/grub/grub.cfg",
            s(&cfg),
        ])
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let cfg = std::fs::read_to_string(&cfg).unwrap();
    assert!(cfg.contains("set timeout=0\n"), "{cfg}");
    assert!(
        cfg.contains(
            "linux /boot/vmlinuz console=tty0 console=ttyS0,115200 hostname=terra-07 version=v9 quiet terra.debug\n"
        ),
        "{cfg}"
    );
    // Nothing else of the node: no MAC on an image that any machine may boot.
    assert!(!cfg.contains("52:54:00"), "{cfg}");
}

#[test]
fn errors_name_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let (k, _) = inputs(d.path());
    let missing = d.path().join("nope.img");
    let o = terra(
        &[
            "iso",
            "--kernel",
            s(&k),
            "--initramfs",
            s(&missing),
            "-o",
            "/tmp/x.iso",
        ],
        "0",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.starts_with("terra: cannot read initramfs ") && err.contains("nope.img"),
        "{err}"
    );
    let o = terra(&["iso", "--kernel", s(&k), "-o", "x.iso"], "0");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--initramfs <I>"));
    let o = terra(
        &[
            "iso",
            "--kernel",
            s(&k),
            "--initramfs",
            s(&k),
            "--label",
            "terra",
            "-o",
            "x.iso",
        ],
        "0",
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("volume label \"terra\""));
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "hostname = \"a b\"\n").unwrap();
    let o = terra(
        &[
            "iso",
            "--kernel",
            s(&k),
            "--initramfs",
            s(&k),
            "--node",
            s(&bad),
            "-o",
            "x.iso",
        ],
        "0",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml: hostname"), "{err}");
}
