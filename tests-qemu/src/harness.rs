//! What every boot scenario shares: the lab built once per test binary, the accelerator,
//! a VM with the scenario defaults, and assertions that print the serial log on failure.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::build::{self, Artifacts};
use crate::vm::{self, Accel, Outcome, Vm};

/// Host tools, stage0, terra and the default initramfs, built once; a failure fails the test.
pub fn artifacts() -> &'static Artifacts {
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
    crate::host::static_busybox().expect("static busybox (apt-get install busybox-static)")
}

/// A VM with the default initramfs, the given disks, and `terra.demo=poweroff` so the demo
/// root's init ends the run.
pub fn vm(disks: Vec<PathBuf>, append: &str, timeout: u64) -> Vm {
    let a = artifacts();
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel());
    vm.disks = disks;
    vm.append = format!("terra.demo=poweroff {append}");
    vm.timeout = Duration::from_secs(timeout);
    vm
}

/// Boots the lab's kernel and initramfs on `disk` with its writes kept, for scenarios that
/// boot one disk again and again.
pub fn boot_kept(disk: &std::path::Path, append: &str, timeout: u64) -> Outcome {
    let mut v = vm(vec![disk.to_path_buf()], append, timeout);
    v.keep_writes = true;
    run(&v)
}

/// `terra versions --disk D`, as (name, state, tries left).
pub fn versions_of(disk: &std::path::Path) -> Vec<(String, String, u64)> {
    crate::versions::states(&artifacts().terra, disk).expect("terra versions")
}

/// What [`versions_of`] should say.
pub fn want(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    list.iter()
        .map(|(n, s, t)| (n.to_string(), s.to_string(), *t))
        .collect()
}

/// Runs the VM; a QEMU that cannot start fails the test.
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
pub fn expect_lun_proof(image: &std::path::Path) {
    let proof = crate::tgtd::read_from_image(image, "os/iscsi-proof").expect("mount the LUN image");
    assert!(
        proof
            .as_deref()
            .is_some_and(|p| p.contains("TERRA-ISCSI-PROOF")),
        "no proof file in {}: {proof:?}",
        image.display()
    );
}
