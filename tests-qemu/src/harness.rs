//! What every boot scenario shares: the lab built once per test binary, the accelerator,
//! the demo OS disk and writable copies of cached images, one way to boot a VM ([`boot`]),
//! and assertions that print the serial log on failure. Every VM a scenario runs is timed
//! ([`crate::timings`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::build::{self, Artifacts};
use crate::disk::BtrfsDisk;
use crate::timings;
use crate::vm::{self, Accel, Firmware, NetBoot, Outcome, Tap, Vm};

/// Filesystem UUID of [`os_disk`].
pub const OS_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000a1";

/// Host tools, stage0, terra and the default initramfs, built once; a failure fails the test.
pub fn artifacts() -> &'static Artifacts {
    timings::mark();
    static A: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    match A.get_or_init(build::artifacts) {
        Ok(a) => a,
        Err(e) => panic!("lab setup failed: {e}"),
    }
}

/// `TERRA_ACCEL` when set, else what works here.
pub fn accel() -> Accel {
    static A: OnceLock<Accel> = OnceLock::new();
    *A.get_or_init(|| {
        std::env::var("TERRA_ACCEL")
            .ok()
            .and_then(|a| Accel::parse(&a))
            .unwrap_or_else(|| vm::detect_accel(&artifacts().kernel))
    })
}

/// The host's static busybox.
pub fn busybox() -> PathBuf {
    timings::mark();
    crate::host::static_busybox().expect("static busybox (apt-get install busybox-static)")
}

/// The demo OS disk: btrfs label `os`, [`OS_UUID`], subvolumes `os` and `v2`, each a busybox
/// demo root tagged with its name. Built once and cached under target/lab/disks by its
/// recipe; boots write to a throwaway snapshot (use [`scratch_copy`] to keep writes).
pub fn os_disk() -> PathBuf {
    BtrfsDisk::new("os", OS_UUID, &["os", "v2"])
        .image(&busybox())
        .expect("os disk")
}

/// A copy of the cached `image` at target/lab/scratch/`name`, for a scenario that writes to
/// it (an upgrade, [`Boot::keep_writes`]); an earlier copy of that name is replaced. A name
/// belongs to the first test that uses it ([`crate::disk::claim_scratch`]): the scenarios
/// share one process.
pub fn scratch_copy(image: &Path, name: &str) -> PathBuf {
    crate::disk::claim_scratch(name)
        .and_then(|()| crate::disk::scratch_copy(image, name))
        .unwrap_or_else(|e| panic!("scratch copy of {}: {e}", image.display()))
}

/// A VM to boot: the lab's kernel and default initramfs under [`accel`], no disk, no NIC,
/// `terra.demo=poweroff` on the command line (the demo root's init ends the run) and a
/// 150 s bound. Set what the scenario needs, then [`Boot::run`].
pub fn boot() -> Boot {
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.append = "terra.demo=poweroff".into();
    vm.timeout = Duration::from_secs(150);
    Boot { vm }
}

/// A VM being set up by [`boot`]; each setter says what it changes on the [`Vm`].
#[must_use]
#[derive(Debug, Clone)]
pub struct Boot {
    vm: Vm,
}

impl Boot {
    /// Attaches a disk image (virtio, after those already given).
    pub fn disk(mut self, image: impl Into<PathBuf>) -> Self {
        self.vm.disks.push(image.into());
        self
    }

    /// Attaches disk images in order.
    pub fn disks(mut self, images: impl IntoIterator<Item = PathBuf>) -> Self {
        self.vm.disks.extend(images);
        self
    }

    /// Adds kernel arguments.
    pub fn append(mut self, args: &str) -> Self {
        if !args.is_empty() {
            self.vm.append = format!("{} {args}", self.vm.append);
        }
        self
    }

    /// Boots this initramfs instead of the lab's default one.
    pub fn initrd(mut self, image: impl Into<PathBuf>) -> Self {
        self.vm.initrd = Some(image.into());
        self
    }

    /// A NIC of this model on QEMU user networking ([`Vm::nic`]).
    pub fn nic(mut self, model: &str) -> Self {
        self.vm.nic = Some(model.into());
        self
    }

    /// The NIC on this tap instead of user networking ([`Vm::tap`]).
    pub fn tap(mut self, tap: Tap) -> Self {
        self.vm.tap = Some(tap);
        self
    }

    /// Boots from the network through QEMU's iPXE ROM ([`Vm::netboot`]).
    pub fn netboot(mut self, netboot: NetBoot) -> Self {
        self.vm.netboot = Some(netboot);
        self
    }

    /// Boots this ISO from a CD-ROM drive ([`Vm::cdrom`]).
    pub fn cdrom(mut self, iso: impl Into<PathBuf>) -> Self {
        self.vm.cdrom = Some(iso.into());
        self
    }

    /// SeaBIOS (the default), OVMF, or OVMF with Secure Boot.
    pub fn firmware(mut self, firmware: Firmware) -> Self {
        self.vm.firmware = firmware;
        self
    }

    /// The UEFI variable store for [`Firmware::SecureBoot`] ([`Vm::efi_vars`]).
    pub fn efi_vars(mut self, vars: impl Into<PathBuf>) -> Self {
        self.vm.efi_vars = Some(vars.into());
        self
    }

    /// The firmware boots the first disk: no `-kernel`, `-initrd` or `-append`.
    pub fn from_disk(mut self) -> Self {
        self.vm.boot_disk = true;
        self
    }

    /// Writes go to the disk images themselves, for scenarios that boot one disk again
    /// and again (give them a [`scratch_copy`]).
    pub fn keep_writes(mut self) -> Self {
        self.vm.keep_writes = true;
        self
    }

    /// Guest memory, MiB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.vm.memory_mb = mb;
        self
    }

    /// Guest CPUs.
    pub fn smp(mut self, cpus: u32) -> Self {
        self.vm.smp = cpus;
        self
    }

    /// Lets the guest reboot: QEMU runs without `-no-reboot`, resets the VM and boots it
    /// the same way again, and the run is stopped once more than `kernels` kernels started
    /// (the first boot, each reboot and each kexec start one; [`Outcome::boots`] says how
    /// many did). For scenarios whose node reboots by itself (a rejected version, `terra
    /// apply --reboot`); the last boot ends the run as usual (`terra.demo=poweroff`).
    pub fn max_boots(mut self, kernels: u32) -> Self {
        self.vm.max_boots = Some(kernels);
        self
    }

    /// The bound on the whole run, s.
    pub fn timeout(mut self, secs: u64) -> Self {
        self.vm.timeout = Duration::from_secs(secs);
        self
    }

    /// The VM as set up, for what the setters do not cover (`extra` QEMU arguments,
    /// [`Vm::spawn_captured`] for a host that acts while the guest runs).
    pub fn vm(self) -> Vm {
        self.vm
    }

    /// Runs the VM to its end or its bound; a QEMU that cannot start fails the test.
    pub fn run(self) -> Outcome {
        run(&self.vm)
    }
}

/// `terra versions --disk D`, as (name, state, tries left).
pub fn versions_of(disk: &Path) -> Vec<(String, String, u64)> {
    crate::versions::states(&artifacts().terra, disk).expect("terra versions")
}

/// What [`versions_of`] should say.
pub fn want(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    list.iter()
        .map(|(n, s, t)| (n.to_string(), s.to_string(), *t))
        .collect()
}

/// Runs a VM set up by hand; a QEMU that cannot start fails the test.
pub fn run(vm: &Vm) -> Outcome {
    vm.run_captured().expect("qemu runs")
}

/// Asserts each needle is on the console, printing the whole log when one is not.
#[track_caller]
pub fn expect(out: &Outcome, needles: &[&str]) {
    for n in needles {
        assert!(
            out.log.contains(n),
            "expected {n:?} on the console; serial log ({:.1} s, exited: {}):\n{}",
            out.elapsed.as_secs_f64(),
            out.exited,
            out.log
        );
    }
}

/// The boot report the demo init printed.
#[track_caller]
pub fn report(out: &Outcome) -> serde_json::Value {
    vm::boot_report(&out.log).unwrap_or_else(|| panic!("no boot report in:\n{}", out.log))
}

/// The names of the phases in the boot report the demo init printed, in order.
#[track_caller]
pub fn phases(out: &Outcome) -> Vec<String> {
    report(out)["phases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The lease JSON the demo init printed for `ifname` (/run/terra/network/<ifname>.json).
#[track_caller]
pub fn lease(out: &Outcome, ifname: &str) -> serde_json::Value {
    let marker = format!("--- lease /run/terra/network/{ifname}.json\n");
    let Some(at) = out.log.find(&marker) else {
        panic!("no lease for {ifname} in:\n{}", out.log)
    };
    let start = at + marker.len();
    let end = out.log[start..]
        .find("\n---")
        .map_or(out.log.len(), |e| e + start);
    serde_json::from_str(out.log[start..end].trim())
        .unwrap_or_else(|e| panic!("lease for {ifname} is not JSON ({e}) in:\n{}", out.log))
}

/// Asserts the iSCSI demo root ran from `image`: the proof file its init
/// ([`crate::tgtd::PROOF_INIT`]) wrote is in the LUN image.
#[track_caller]
pub fn expect_lun_proof(image: &Path) {
    let proof = crate::tgtd::read_from_image(image, "os/iscsi-proof").expect("mount the LUN image");
    assert!(
        proof
            .as_deref()
            .is_some_and(|p| p.contains("TERRA-ISCSI-PROOF")),
        "no proof file in {}: {proof:?}",
        image.display()
    );
}
