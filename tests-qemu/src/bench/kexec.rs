//! `cargo xtask bench --only kexec`: what booting a version on its own kernel costs when the
//! machine starts another one. One disk whose default version carries Debian's cloud
//! kernel (`lab::kernels`), booted alternately:
//!
//! - **kexec**: the lab's kernel and initramfs start, stage0 chooses the version and kexecs
//!   into its kernel and Terra initramfs, whose stage0 boots it (the first boot after an
//!   upgrade, or every boot where the firmware's kernel is not the default's);
//! - **direct**: the version's kernel and initramfs started by QEMU itself, as an
//!   installed disk's ESP starts them once the default carries them.
//!
//! Guest time to the root's init: kernel start to init exec, plus, for kexec, the first
//! boot up to the kexec (`boot.json`'s `version.kexec.first_boot_ms`). Firmware and
//! bootloader time is the same for both and not counted.

use std::fs;
use std::path::Path;

use crate::bench::{max, median, min};
use crate::disk::{scratch_copy, with_mount};
use crate::{harness, kernels, versions};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000001b9";

/// Runs `boots` boots of each kind; returns the markdown table.
pub fn run_kexec(terra: &Path, boots: usize) -> crate::Result<String> {
    let busybox = crate::host::static_busybox().ok_or("static busybox missing")?;
    let (klayout, k) = kernels::layout(&busybox)?;
    let vlayout = versions::layout(&busybox)?;
    let base = versions::fresh_disk(terra, &vlayout, UUID, "bench-kexec-base")?;
    versions::upgrade(terra, &base, &klayout, "k2", &[])?;
    // Confirmed once, so every measured boot is a plain boot of the default.
    let first = harness::boot()
        .disk(&base)
        .append("terra.demo=bless")
        .keep_writes()
        .timeout(200)
        .vm();
    let out = first.run_captured()?;
    if !out.log.contains("TERRA-DEMO-BLESS rc=0") {
        return Err(format!(
            "the kexec bench disk did not confirm v2:\n{}",
            out.log
        ));
    }
    let initramfs = crate::lab_dir().join("scratch/bench-kexec-initramfs.img");
    with_mount(&base, |m| {
        let src = m.join("v2/boot/terra/initramfs.img");
        fs::copy(&src, &initramfs).map_err(|e| format!("{}: {e}", src.display()))
    })?;
    let mut kexec: Vec<f64> = Vec::new();
    let mut first_ms: Vec<f64> = Vec::new();
    let mut direct: Vec<f64> = Vec::new();
    for i in 0..boots {
        for kind in ["kexec", "direct"] {
            let d = scratch_copy(&base, "bench-kexec.img")?;
            let mut vm = harness::boot().disk(&d).timeout(200).vm();
            if kind == "direct" {
                vm.kernel = k.image.clone();
                vm.initrd = Some(initramfs.clone());
            }
            let out = vm.run_captured()?;
            let _ = fs::remove_file(&d);
            let r = crate::vm::boot_report(&out.log)
                .ok_or_else(|| format!("{kind}: no boot report:\n{}", out.log))?;
            let at = r["uptime_at_init_ms"].as_f64().unwrap_or(f64::NAN);
            let before = r["version"]["kexec"]["first_boot_ms"].as_f64();
            match (kind, before) {
                ("kexec", Some(ms)) => {
                    first_ms.push(ms);
                    kexec.push(ms + at);
                }
                ("direct", None) => direct.push(at),
                _ => return Err(format!("{kind} boot {i}: unexpected report {r}")),
            }
            eprintln!(
                "bench: {kind} boot {i}: root init at {:.0} ms (first boot {before:?} ms)",
                at + before.unwrap_or(0.0)
            );
        }
    }
    let (kx, di) = (median(&kexec), median(&direct));
    Ok(format!(
        "### Booting a version on its own kernel ({} → {}, demo root, TCG), median of {boots}\n\n\
         | boot | guest time to the root's init, median (min–max) ms | vs direct |\n|---|---|---|\n\
         | direct (the version's kernel started by the firmware/ESP) | {di:.0} ({:.0}–{:.0}) | 1.00× |\n\
         | kexec (lab kernel → stage0 → kexec → version's kernel) | {kx:.0} ({:.0}–{:.0}) | {:.2}× |\n\
         | of which the first boot, up to the kexec | {:.0} | |\n",
        crate::build::artifacts()?.kver,
        k.release,
        min(&direct),
        max(&direct),
        min(&kexec),
        max(&kexec),
        kx / di,
        median(&first_ms),
    ))
}
