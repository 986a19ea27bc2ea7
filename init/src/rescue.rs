//! rescue: say what was awaited and what was seen, then shell, reboot or halt.
//! PID 1 must never exit, so nothing here returns. [`hints`] names the drivers a failed
//! boot lacked.

pub mod hints;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::reboot::{reboot, RebootMode};

use crate::config::RescueAction;
use crate::devices::Devices;
use crate::layout::RESCUE_SHELL;

/// Everything the rescue report can tell.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// The phase that failed.
    pub phase: &'static str,
    /// The error, already formatted.
    pub error: String,
    /// What was being waited for (the root spec), if known.
    pub awaited: Option<String>,
    /// Block devices seen, one per line.
    pub blocks: Vec<String>,
    /// Modules loaded.
    pub loaded: Vec<String>,
    /// Modules that failed, with reasons.
    pub failed: Vec<(String, String)>,
    /// Modaliases no packed module serves.
    pub unmatched: usize,
    /// Storage and network devices without a driver, each with the module the full kernel
    /// would load (`hints::missing_drivers`).
    pub missing_drivers: Vec<String>,
    /// Phase timings.
    pub timings: String,
}

impl Diagnostics {
    /// Adds what the devices phase saw: block devices, modules loaded and failed (the
    /// preloads finished first), modaliases without a driver, and the drivers the hints
    /// table names for the storage and network devices among them.
    pub fn add_devices(&mut self, d: &mut Devices) {
        d.finish_preloads();
        self.blocks = d.block_summary();
        self.loaded = d.loaded.clone();
        self.failed = d.failed.clone();
        self.unmatched = d.unmatched;
        // Read only now: the table is for a boot that failed.
        let table =
            std::fs::read_to_string(Path::new("/").join(hints::HINTS_FILE)).unwrap_or_default();
        self.missing_drivers =
            hints::missing_drivers(&hints::Hints::parse(&table), &d.driverless());
    }

    /// The report as printed on the console.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "\nterra: boot failed in phase {}: {}\n",
            self.phase, self.error
        ));
        if let Some(a) = &self.awaited {
            s.push_str(&format!("terra: waited for root {a}\n"));
        }
        if self.blocks.is_empty() {
            s.push_str("terra: block devices seen: none\n");
        } else {
            s.push_str("terra: block devices seen:\n");
            for b in &self.blocks {
                s.push_str(&format!("terra:   {b}\n"));
            }
        }
        s.push_str(&format!(
            "terra: modules loaded: {}\n",
            if self.loaded.is_empty() {
                "none".to_string()
            } else {
                self.loaded.join(" ")
            }
        ));
        for (m, why) in &self.failed {
            s.push_str(&format!("terra: module {m} failed: {why}\n"));
        }
        if self.unmatched > 0 {
            s.push_str(&format!(
                "terra: {} device(s) have no driver in the initramfs\n",
                self.unmatched
            ));
        }
        for line in &self.missing_drivers {
            s.push_str(&format!("terra: {line}\n"));
        }
        s.push_str(&format!("terra: phase timings: {}\n", self.timings));
        s
    }
}

/// Prints the report and carries out `action`. Never returns.
pub fn enter(diag: &Diagnostics, action: RescueAction) -> ! {
    let report = diag.render();
    log::error!("boot failed in phase {}: {}", diag.phase, diag.error);
    // The console directly as well: kmsg lines may be hidden by `quiet`.
    let _ = std::io::stdout().write_all(report.as_bytes());
    let _ = std::io::stdout().flush();
    match action {
        RescueAction::Shell if Path::new("/").join(RESCUE_SHELL).exists() => shell_loop(),
        RescueAction::Shell => {
            println!(
                "terra: no rescue shell in this initramfs (build it with --rescue-shell); halting"
            );
            halt(RebootMode::RB_POWER_OFF)
        }
        RescueAction::Reboot => halt(RebootMode::RB_AUTOBOOT),
        RescueAction::Halt => halt(RebootMode::RB_POWER_OFF),
    }
}

fn shell_loop() -> ! {
    loop {
        println!("terra: starting rescue shell; exit it to start another");
        let shell = format!("/{RESCUE_SHELL}");
        match Command::new(&shell).env("PS1", "terra-rescue# ").spawn() {
            Ok(mut child) => {
                let _ = child.wait();
            }
            Err(e) => {
                println!("terra: cannot start {shell}: {e}; halting");
                halt(RebootMode::RB_POWER_OFF);
            }
        }
        crate::early::reap_children();
    }
}

/// Syncs and reboots or powers off; if the kernel refuses, sleeps forever.
pub fn halt(mode: RebootMode) -> ! {
    println!(
        "terra: {}",
        if mode == RebootMode::RB_AUTOBOOT {
            "rebooting"
        } else {
            "powering off"
        }
    );
    nix::unistd::sync();
    let _ = reboot(mode);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_what_was_awaited_and_seen() {
        let d = Diagnostics {
            phase: "storage",
            error: "root device LABEL=missing did not appear within 3 s".into(),
            awaited: Some("LABEL=missing".into()),
            blocks: vec!["vda: btrfs LABEL=os".into()],
            loaded: vec!["virtio_blk".into()],
            failed: vec![("crc32c_intel".into(), "No such device".into())],
            unmatched: 2,
            missing_drivers: vec![
                "PCI 0000:00:01.1 IDE controller [8086:7010] needs ata_piix — not in this \
                 initramfs; add it with --module ata_piix"
                    .into(),
            ],
            timings: "early 1.0 ms".into(),
        };
        let r = d.render();
        for want in [
            "phase storage",
            "LABEL=missing",
            "vda: btrfs LABEL=os",
            "virtio_blk",
            "crc32c_intel failed",
            "2 device(s)",
            "terra: PCI 0000:00:01.1 IDE controller [8086:7010] needs ata_piix",
            "early 1.0 ms",
        ] {
            assert!(r.contains(want), "{want} missing from {r}");
        }
    }
}
