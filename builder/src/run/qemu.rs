//! The QEMU command line of `terra run`'s VM, as data: a pure function of [`VmSpec`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::tool::Need;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// OVMF as Debian's `ovmf` package installs it (code and variables in one image).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// How QEMU runs the guest's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`/dev/kvm`), with the host's CPU model.
    Kvm,
    /// Software emulation: slow, works everywhere.
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` opens for reading and writing (as QEMU opens it), else TCG.
    pub fn detect() -> Accel {
        if open_kvm().is_ok() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    /// The name QEMU's `-accel` takes (and messages show, upper-cased).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Opens `/dev/kvm` as QEMU does (read and write).
pub fn open_kvm() -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
}

/// The firmware that boots the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on `-machine pc`: GRUB from the disk's MBR and BIOS boot partition.
    Bios,
    /// OVMF on `-machine q35`: GRUB from the ESP's `/EFI/BOOT/BOOTX64.EFI`.
    Uefi,
}

/// What the VM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The raw disk image the firmware boots (written to: it is thrown away).
    pub disk: PathBuf,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// KVM or TCG.
    pub accel: Accel,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Host port on 127.0.0.1 forwarded to the guest's port 22.
    pub ssh: Option<u16>,
}

/// What running `vm` needs on the host, for a check before the install.
pub fn needs(firmware: Firmware) -> Vec<Need> {
    let mut n = Need::programs(&[QEMU], "qemu-system-x86");
    if firmware == Firmware::Uefi {
        n.push(Need::File(PathBuf::from(OVMF), "ovmf"));
    }
    n
}

/// A value inside a QEMU option list: commas are doubled.
fn opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// QEMU's arguments for `vm`: the firmware boots the virtio disk; the serial console and
/// QEMU's monitor share stdio (`-nographic`: Ctrl-A X quits, Ctrl-A C is the monitor); one
/// virtio NIC on user networking (DHCP, the host at 10.0.2.2), with `--ssh`'s forward.
pub fn qemu_args(vm: &VmSpec) -> Vec<OsString> {
    let mut a: Vec<String> = vec!["-name".into(), "terra-run".into()];
    let machine = match vm.firmware {
        Firmware::Bios => "pc",
        Firmware::Uefi => "q35",
    };
    a.extend(["-machine", machine, "-accel", vm.accel.name()].map(String::from));
    if vm.accel == Accel::Kvm {
        a.extend(["-cpu", "host"].map(String::from));
    }
    if vm.firmware == Firmware::Uefi {
        a.extend(["-bios".into(), OVMF.into()]);
    }
    a.extend([
        "-m".into(),
        vm.memory_mib.to_string(),
        "-smp".into(),
        vm.cpus.to_string(),
        "-nographic".into(),
        "-drive".into(),
        format!("file={},format=raw,if=none,id=disk0", opt(&vm.disk)),
        "-device".into(),
        "virtio-blk-pci,drive=disk0,bootindex=0".into(),
        "-nic".into(),
    ]);
    let mut nic = "user,model=virtio-net-pci".to_string();
    if let Some(port) = vm.ssh {
        nic.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:22"));
    }
    a.push(nic);
    a.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            disk: PathBuf::from("/var/tmp/terra-run-1-0/disk.img"),
            firmware: Firmware::Bios,
            accel: Accel::Tcg,
            memory_mib: 2048,
            cpus: 2,
            ssh: None,
        }
    }

    fn line(vm: &VmSpec) -> String {
        qemu_args(vm)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn bios_under_tcg_boots_the_disk_with_the_console_on_stdio() {
        assert_eq!(
            line(&spec()),
            "-name terra-run -machine pc -accel tcg -m 2048 -smp 2 -nographic \
             -drive file=/var/tmp/terra-run-1-0/disk.img,format=raw,if=none,id=disk0 \
             -device virtio-blk-pci,drive=disk0,bootindex=0 -nic user,model=virtio-net-pci"
        );
    }

    #[test]
    fn uefi_kvm_and_ssh() {
        let vm = VmSpec {
            firmware: Firmware::Uefi,
            accel: Accel::Kvm,
            ssh: Some(2222),
            disk: PathBuf::from("/tmp/a,b/disk.img"),
            ..spec()
        };
        let l = line(&vm);
        assert!(
            l.starts_with(
                "-name terra-run -machine q35 -accel kvm -cpu host -bios /usr/share/ovmf/OVMF.fd "
            ),
            "{l}"
        );
        assert!(l.ends_with(",hostfwd=tcp:127.0.0.1:2222-:22"), "{l}");
        // A comma in the path is doubled, not an option separator.
        assert!(l.contains("file=/tmp/a,,b/disk.img,format=raw"), "{l}");
    }

    #[test]
    fn uefi_needs_ovmf() {
        assert_eq!(needs(Firmware::Bios).len(), 1);
        assert!(needs(Firmware::Uefi)
            .iter()
            .any(|n| matches!(n, Need::File(p, "ovmf") if p == Path::new(OVMF))));
    }
}
