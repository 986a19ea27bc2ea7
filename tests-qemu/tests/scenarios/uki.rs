//! `terra uki` under enforcing Secure Boot: OVMF's Secure Boot build with the lab's test
//! keys enrolled (PK, KEK, and db = the key `terra uki --sign-key` uses), the UKI on an ESP
//! disk as `EFI/BOOT/BOOTX64.EFI`, the demo btrfs root beside it. The signed image boots to
//! the root; the unsigned image and a signed one with one byte of its `.cmdline` changed are
//! refused by the firmware, and no kernel starts.
//!
//! Not QEMU's `-kernel`: this OVMF loads a bzImage its verifier refuses with its legacy
//! loader instead, so a kernel signed by no enrolled key boots that way.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use lab::harness::{accel, artifacts, boot, expect, os_disk, run, Boot};
use lab::secureboot::{self, Keys};
use lab::vm::{self, Firmware, Outcome, Vm};

/// The UKI's whole command line; the hostname shows the signed `.cmdline` reached the root.
/// What every test UKI's command line starts with.
const CMDLINE_BASE: &str = "console=ttyS0,115200 panic=-1 terra.demo=poweroff";
const CMDLINE: &str = "console=ttyS0,115200 panic=-1 terra.demo=poweroff hostname=terra-uki";
/// What OVMF prints once every boot option failed; a refused run ends here.
const NO_BOOT: &str = "BdsDxe: No bootable option or device was found";

struct Setup {
    keys: Keys,
    vars: PathBuf,
    dir: PathBuf,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        for (path, package) in [
            (vm::OVMF_SECBOOT_CODE, "ovmf"),
            (vm::OVMF_VARS_4M, "ovmf"),
            (
                "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
                "systemd-boot-efi",
            ),
            ("/usr/bin/sbsign", "sbsigntool"),
            ("/usr/bin/faketime", "faketime"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: apt-get install {package}"
            );
        }
        let keys = secureboot::test_keys().unwrap_or_else(|e| panic!("{e}"));
        let vars = secureboot::enrolled_vars(&keys).unwrap_or_else(|e| panic!("{e}"));
        let dir = lab::lab_dir().join("uki");
        std::fs::create_dir_all(&dir).expect("uki dir");
        Setup { keys, vars, dir }
    })
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `terra uki` with the lab's kernel and initramfs into `name`, signed with the db key
/// when `signed`.
fn uki(name: &str, signed: bool) -> PathBuf {
    uki_with(name, signed, CMDLINE)
}

fn uki_with(name: &str, signed: bool, cmdline: &str) -> PathBuf {
    let (a, s) = (artifacts(), setup());
    let out = s.dir.join(name);
    let mut cmd = Command::new(&a.terra);
    cmd.args(["uki", "--kernel", path_str(&a.kernel)])
        .args(["--initramfs", path_str(&a.initramfs)])
        .args(["--cmdline", cmdline, "-o", path_str(&out)])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    if signed {
        cmd.args(["--sign-key", path_str(&s.keys.db_key)])
            .args(["--sign-cert", path_str(&s.keys.db_cert)]);
    }
    eprint!("{}", lab::run(&mut cmd).unwrap_or_else(|e| panic!("{e}")));
    out
}

fn signed_uki() -> &'static PathBuf {
    static U: OnceLock<PathBuf> = OnceLock::new();
    U.get_or_init(|| uki("terra-signed.efi", true))
}

fn unsigned_uki() -> &'static PathBuf {
    static U: OnceLock<PathBuf> = OnceLock::new();
    U.get_or_init(|| uki("terra-unsigned.efi", false))
}

/// The signed image with one byte of its `.cmdline` changed (`terra-uki` → `terra-Uki`):
/// still a well-formed PE whose stub would start the kernel, but no longer what was signed.
fn tampered_uki() -> &'static PathBuf {
    static U: OnceLock<PathBuf> = OnceLock::new();
    U.get_or_init(tamper)
}

fn tamper() -> PathBuf {
    let mut bytes = std::fs::read(signed_uki()).expect("signed UKI");
    let needle = b"hostname=terra-uki";
    let at: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the command line is in the image once");
    bytes[at[0] + "hostname=terra-".len()] = b'U';
    let out = setup().dir.join("terra-tampered.efi");
    std::fs::write(&out, bytes).expect("write tampered UKI");
    out
}

fn sbverify(image: &Path) -> bool {
    Command::new("sbverify")
        .arg("--cert")
        .arg(&setup().keys.db_cert)
        .arg(image)
        .output()
        .expect("sbverify runs (apt-get install sbsigntool)")
        .status
        .success()
}

/// A VM under OVMF with Secure Boot enforcing that boots `efi` from an ESP disk, with the
/// demo root as the second disk.
fn secure_vm(efi: &Path, timeout: u64) -> Vm {
    let esp = efi.with_extension("esp.img");
    secureboot::esp_disk(efi, &esp).unwrap_or_else(|e| panic!("{e}"));
    // The firmware boots the ESP disk.
    enforcing_vm()
        .disk(esp)
        .disk(os_disk())
        .timeout(timeout)
        .vm()
}

/// Boots `efi` and returns the console once the firmware has given up (or the bound
/// passed): OVMF then waits for a key at its boot menu, so the VM is killed.
fn refused(efi: &Path) -> Outcome {
    let vm = secure_vm(efi, 150);
    let mut running = vm.spawn_captured(None).expect("qemu runs");
    let gave_up = running.wait_for(NO_BOOT, Duration::from_secs(150));
    let out = running.stop();
    assert!(gave_up, "the firmware did not give up:\n{}", out.log);
    out
}

#[track_caller]
fn expect_refused(out: &Outcome) {
    // OVMF names the ESP disk's boot option (virtio-blk: "UEFI Misc Device") and the
    // verifier's verdict, e.g. `BdsDxe: failed to load Boot0001 "UEFI Misc Device" from
    // PciRoot(0x0)/Pci(0x2,0x0): Access Denied`.
    let refusal = out.log.lines().find(|l| {
        l.contains("BdsDxe: failed to load")
            && l.contains("UEFI Misc Device")
            && l.trim_end().ends_with("Access Denied")
    });
    let Some(refusal) = refusal else {
        panic!("no refusal of the ESP disk in:\n{}", out.log)
    };
    eprintln!("after {:.1} s: {refusal}", out.elapsed.as_secs_f64());
    for started in ["EFI stub", "Linux version", "TERRA-DEMO-INIT", "stage0"] {
        assert!(!out.log.contains(started), "{started:?} ran:\n{}", out.log);
    }
}

/// No VM: sbverify agrees with the firmware to come, and signing is reproducible.
#[test]
fn signatures_check_and_signed_images_are_reproducible() {
    let signed = signed_uki();
    assert!(sbverify(signed), "the signed UKI does not verify");
    assert!(!sbverify(unsigned_uki()));
    assert!(!sbverify(tampered_uki()));
    let again = uki("terra-signed-again.efi", true);
    assert!(
        std::fs::read(signed).expect("signed") == std::fs::read(&again).expect("again"),
        "two signed builds of the same inputs differ"
    );
}

#[test]
fn signed_uki_boots_under_enforcing_secure_boot() {
    let out = run(&secure_vm(signed_uki(), 300));
    expect(
        &out,
        &[
            // The kernel's own view: it was started under enforcing Secure Boot.
            "Secure boot enabled",
            &format!("Kernel command line: {CMDLINE}"),
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-HOSTNAME terra-uki\n",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    assert!(out.exited, "the VM should power off");
    eprintln!(
        "signed UKI: root after {:.1} s under {:?}",
        out.elapsed.as_secs_f64(),
        accel()
    );
}

#[test]
fn unsigned_uki_is_refused() {
    expect_refused(&refused(unsigned_uki()));
}

#[test]
fn tampered_uki_is_refused() {
    expect_refused(&refused(tampered_uki()));
}

/// A VM under enforcing Secure Boot with the test keys enrolled that boots what the
/// firmware finds first (no `-kernel`).
fn enforcing_vm() -> Boot {
    boot()
        .firmware(Firmware::SecureBoot)
        .efi_vars(&setup().vars)
        .from_disk()
}

/// `terra iso --live … --uki`: under UEFI the ISO starts the signed UKI itself (no GRUB), so
/// enforcing Secure Boot covers the kernel, the initramfs and the command line that names
/// the live medium; stage0 then boots the squashfs root from the CD (virtio-scsi, whose
/// drivers the QEMU set has).
#[test]
fn a_live_iso_starts_its_signed_uki_under_secure_boot() {
    let (a, s) = (artifacts(), setup());
    let uki = uki_with(
        "terra-live-signed.efi",
        true,
        &format!("{CMDLINE_BASE} hostname=terra-uki-live root=live:LABEL=TERRA"),
    );
    let busybox = lab::host::static_busybox().expect("static busybox");
    let (layout, _) = lab::oci_root::demo_layout(&busybox).expect("demo image");
    let iso = s.dir.join("terra-live-uki.iso");
    let reference = format!("oci:{}:{}", layout.display(), lab::oci_root::DEMO_TAG);
    let out = lab::run(
        Command::new(&a.terra)
            .args(["iso", "--kernel", path_str(&a.kernel)])
            .args(["--initramfs", path_str(&a.initramfs)])
            .args(["--live", &reference, "--uki", path_str(&uki)])
            .args(["-o", path_str(&iso)])
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprint!("{out}");

    let mut vm = enforcing_vm().vm();
    vm.add_scsi_cdrom(&iso);
    let out = run(&vm);
    lab::harness::expect(
        &out,
        &[
            "Secure boot enabled",
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-HOSTNAME terra-uki-live",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    let r = lab::harness::report(&out);
    assert_eq!(r["root"]["fstype"], "overlay", "{r}");
    assert_eq!(r["root"]["label"], "TERRA", "{r}");
}

/// `terra install --uki`: the bootable disk's ESP starts the signed UKI under UEFI instead
/// of GRUB, so enforcing Secure Boot covers the installed disk's kernel, initramfs and
/// command line; stage0 in it still finds the root by UUID and boots its version.
#[test]
fn an_installed_disk_starts_its_signed_uki_under_secure_boot() {
    const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000001c2";
    let (a, s) = (artifacts(), setup());
    let uki = uki_with(
        "terra-disk-signed.efi",
        true,
        &format!("{CMDLINE_BASE} hostname=terra-uki-disk root=UUID={UUID}"),
    );
    let busybox = lab::host::static_busybox().expect("static busybox");
    let (layout, _) = lab::oci_root::demo_layout(&busybox).expect("demo image");
    let disk = s.dir.join("installed-uki.img");
    let _ = std::fs::remove_file(&disk);
    let node = s.dir.join("installed-uki.toml");
    std::fs::write(
        &node,
        format!(
            "hostname = \"terra-uki-disk\"\nimage = \"oci:{}:{}\"\n\n[[groups]]\nlabel = \"os\"\n\
             mbr = true\n  [[groups.disk]]\n  device = \"{}\"\n  size = 512\n",
            layout.display(),
            lab::oci_root::DEMO_TAG,
            disk.display()
        ),
    )
    .expect("node.toml");
    let out = lab::run(
        Command::new(&a.terra)
            .args(["--quiet", "install", path_str(&node), "--uuid", UUID])
            .args(["--kernel", path_str(&a.kernel), "--uki", path_str(&uki)]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprint!("{out}");

    let out = enforcing_vm().disk(&disk).run();
    let _ = std::fs::remove_file(&disk);
    lab::harness::expect(
        &out,
        &[
            "Secure boot enabled",
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-HOSTNAME terra-uki-disk",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    assert_eq!(lab::harness::report(&out)["root"]["uuid"], UUID);
}
