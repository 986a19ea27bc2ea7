//! Restart: from `terra apply --reboot` inside a booted Debian 12 node to the new
//! version's init, on a disk `terra install` made bootable (`mbr = true`: SeaBIOS, GRUB,
//! the base kernel in `.terra/kernel`), under QEMU:
//!
//! - **kexec**: what terra does — systemd stops the services, the loaded base kernel
//!   starts, its stage0 chooses v2;
//! - **full reboot**: the same disk with `terra.kexec=off` on its command line, so terra
//!   reboots through systemd's reboot.target: SeaBIOS, GRUB, the same kernel and stage0.
//!
//! v2 is staged on the disk beforehand (`terra upgrade --download-only --disk`); the node's
//! agent runs `terra apply --reboot` once it is up (`lab::debian_node`). Times are the host's
//! clock at the arrival of console lines (polled every 50 ms): the apply's "rebooting into
//! v2" line; the old kernel's last words ("Starting new kernel" / "Restarting system");
//! the next kernel's start, which is the arrival of its stage0's first line less that
//! line's kernel timestamp (the guest clock follows the host's under TCG); systemd's
//! "Welcome to" of v2. Between the last words and the next kernel lie the firmware and GRUB
//! (reading the kernel and initramfs through BIOS calls), or kexec's purgatory (which checks
//! the loaded segments' digests).

use std::fs;
use std::time::{Duration, Instant};

use crate::bench::median;
use crate::debian_node::{self, NodeImages};
use crate::disk::scratch_copy;
use crate::vm::Running;

const KEXEC_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000ba";
const REBOOT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000bb";

/// The bound on one run: a Debian boot to multi-user, the restart, the next boot's init.
const RUN_BOUND: Duration = Duration::from_secs(600);

/// The marks of one restart, host seconds since the apply said it restarts.
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    /// The old kernel's last words.
    pub last_words: f64,
    /// The next kernel's start.
    pub kernel: f64,
    /// v2's systemd says "Welcome to".
    pub init: f64,
}

/// One kind of restart, measured `n` times.
#[derive(Debug, Clone)]
pub struct Kind {
    /// What restarts.
    pub name: &'static str,
    /// Each run's marks.
    pub runs: Vec<Marks>,
}

impl Kind {
    fn median(&self, f: impl Fn(&Marks) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
}

/// Both kinds.
#[derive(Debug, Clone)]
pub struct RestartResult {
    /// kexec, then full reboot.
    pub kinds: Vec<Kind>,
}

/// A disk holding n1 with v2 (image n2) staged and the agent's step: `terra apply
/// --reboot` in n1's first boot. `append` goes on the disk's command line.
fn staged_disk(images: &NodeImages, uuid: &str, append: &str) -> crate::Result<std::path::PathBuf> {
    let cached = debian_node::boot_disk(images, uuid, append)?;
    let staged = cached.with_extension("staged.img");
    if staged.is_file() {
        return Ok(staged);
    }
    let work = cached.with_extension("staging.img");
    crate::run(
        std::process::Command::new("cp")
            .arg("--reflink=auto")
            .arg(&cached)
            .arg(&work),
    )?;
    let terra = &crate::build::artifacts()?.terra;
    crate::versions::upgrade(
        terra,
        &work,
        &images.layout,
        debian_node::N2,
        &["--download-only"],
    )?;
    debian_node::prepare(
        &work,
        &[("on-1.1", "terra apply --reboot\n".into())],
        "",
        &[],
    )?;
    fs::rename(&work, &staged).map_err(|e| format!("{}: {e}", staged.display()))?;
    Ok(staged)
}

/// Console lines with the host time they arrived, until `needle` has arrived `nth` times
/// (or the VM ended, or [`RUN_BOUND`]).
fn watch(vm: &mut Running, needle: &str, nth: usize) -> Vec<(f64, String)> {
    let start = Instant::now();
    let mut lines: Vec<(f64, String)> = Vec::new();
    while start.elapsed() < RUN_BOUND {
        let log = vm.log();
        let complete = log.rsplit_once('\n').map_or("", |(done, _)| done);
        let now = start.elapsed().as_secs_f64();
        for l in complete.lines().skip(lines.len()) {
            lines.push((now, l.to_string()));
        }
        if lines.iter().filter(|(_, l)| l.contains(needle)).count() >= nth || vm.ended() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lines
}

fn marks(lines: &[(f64, String)]) -> crate::Result<Marks> {
    let after = |from: usize, needle: &str| {
        lines[from..]
            .iter()
            .position(|(_, l)| l.contains(needle))
            .map(|i| from + i)
    };
    let missing = |what: &str| {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(40)
            .map(|(_, l)| l.as_str())
            .collect();
        format!(
            "no {what} on the console; its end:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    };
    let apply = after(0, "rebooting into v2:").ok_or_else(|| missing("\"rebooting into v2\""))?;
    let last = after(apply, "Starting new kernel")
        .into_iter()
        .chain(after(apply, "Restarting system"))
        .min()
        .ok_or_else(|| missing("last words of the old kernel"))?;
    let stage0 = after(last, "] stage0: ").ok_or_else(|| missing("the next stage0"))?;
    let uptime = crate::vm::log_time(&lines[stage0].1)
        .ok_or_else(|| missing("a kernel timestamp on stage0's line"))?;
    let init = after(stage0, "Welcome to").ok_or_else(|| missing("v2's systemd"))?;
    let t0 = lines[apply].0;
    Ok(Marks {
        last_words: lines[last].0 - t0,
        kernel: lines[stage0].0 - uptime - t0,
        init: lines[init].0 - t0,
    })
}

/// Runs `n` restarts of each kind, alternating.
pub fn run_restart(n: usize) -> crate::Result<RestartResult> {
    let deb = crate::package::build_deb()?;
    let images = debian_node::node_images(&deb)?;
    let disks = [
        ("kexec", staged_disk(&images, KEXEC_UUID, "terra.e2e")?),
        (
            "full reboot (terra.kexec=off: SeaBIOS, GRUB)",
            staged_disk(&images, REBOOT_UUID, "terra.e2e terra.kexec=off")?,
        ),
    ];
    let mut kinds: Vec<Kind> = disks
        .iter()
        .map(|(name, _)| Kind {
            name,
            runs: Vec::new(),
        })
        .collect();
    for i in 0..n.max(1) {
        for (k, (name, staged)) in disks.iter().enumerate() {
            let disk = scratch_copy(staged, "update-restart.img")?;
            let mut vm = crate::harness::boot()
                .from_disk()
                .disk(&disk)
                .nic("virtio")
                .memory_mb(1536)
                .max_boots(2)
                .keep_writes()
                .timeout(RUN_BOUND.as_secs())
                .vm()
                .spawn_captured(None)?;
            // The second "Welcome to" is v2's systemd.
            let lines = watch(&mut vm, "Welcome to", 2);
            drop(vm.stop());
            let _ = fs::remove_file(&disk);
            let m = marks(&lines).map_err(|e| format!("{name}, run {i}: {e}"))?;
            eprintln!(
                "bench: restart {name} {i}: last words {:.1} s, kernel {:.1} s, init {:.1} s",
                m.last_words, m.kernel, m.init
            );
            kinds[k].runs.push(m);
        }
    }
    Ok(RestartResult { kinds })
}

impl RestartResult {
    /// The markdown table.
    pub fn render(&self) -> String {
        let n = self.kinds.first().map_or(0, |k| k.runs.len());
        let mut md = format!(
            "\n#### Restart: `terra apply --reboot` to v2's init, Debian 12 node, SeaBIOS + GRUB disk, TCG, median of {n}\n\n\
             Host seconds from terra's \"rebooting into v2\" line: services stop and the old kernel \
             ends; then firmware and GRUB, or kexec's purgatory, up to the next kernel's start \
             (its stage0's first line less that line's kernel timestamp); then kernel and stage0 \
             to v2's systemd.\n\n\
             | restart | services stop, kernel ends | firmware + GRUB / purgatory | kernel + stage0 to v2's init | total | vs kexec |\n\
             |---|---|---|---|---|---|\n"
        );
        let base = self.kinds.first().map(|k| k.median(|m| m.init));
        for k in &self.kinds {
            let (last, kernel, init) = (
                k.median(|m| m.last_words),
                k.median(|m| m.kernel),
                k.median(|m| m.init),
            );
            md.push_str(&format!(
                "| {} | {last:.1} s | {:.1} s | {:.1} s | {init:.1} s | {} |\n",
                k.name,
                kernel - last,
                init - kernel,
                base.map_or("?".into(), |b| format!("{:.2}×", init / b)),
            ));
        }
        md
    }
}
