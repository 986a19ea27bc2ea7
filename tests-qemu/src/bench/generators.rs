//! The generators case of `cargo xtask bench`: Terra's initramfs (default, bare-metal set,
//! `--host` for the lab guest) beside initramfs-tools and dracut on the same kernel, the
//! same QEMU setup and the same btrfs root ([`super::bench_disk`]): generation time, image
//! size, and the boot to the root's init.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{bench_disk, boot_times, max, median, min, timed, unpacked_size, Options};
use crate::build::{self, Artifacts, Initramfs};
use crate::vm::Vm;

/// One initramfs generator under test.
#[derive(Debug, Clone)]
pub struct Generator {
    /// Row name.
    pub name: &'static str,
    /// Whether its image is booted (a host-only image is for this host's hardware).
    pub boot: bool,
}

/// Writes an image to the given path; returns the wall time taken, s.
type GenerateFn<'a> = Box<dyn Fn(&Path) -> crate::Result<f64> + 'a>;

/// Measurements of one generator.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Generator name.
    pub name: String,
    /// Median generation wall time, s.
    pub gen_s: f64,
    /// Image size, bytes.
    pub size: u64,
    /// Unpacked size (sum of the file sizes in the image), bytes.
    pub unpacked: u64,
    /// Guest uptime at the root's init, s, per boot.
    pub init_at: Vec<f64>,
    /// Time between the kernel running /init and the root's init, s, per boot.
    pub in_initramfs: Vec<f64>,
    /// Boots that did not reach the root's init.
    pub failed_boots: usize,
    /// stage0's peak RSS as it logged it before exec, kB (Terra only).
    pub peak_rss_kb: Option<u64>,
}

/// The peak RSS stage0 logs on its exec line.
fn stage0_peak_rss(log: &str) -> Option<u64> {
    log.split("(peak RSS ")
        .nth(1)?
        .split(" kB")
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Installs initramfs-tools and dracut-core when missing (apt, as root).
pub fn ensure_peers() -> crate::Result<()> {
    let mut missing = Vec::new();
    if crate::host::which("mkinitramfs").is_none() {
        missing.push("initramfs-tools");
    }
    if crate::host::which("dracut").is_none() {
        missing.push("dracut-core");
    }
    if missing.is_empty() {
        return Ok(());
    }
    crate::host::apt_install(&missing)
}

/// The lab guest's devices as a sysfs tree for `--host-sysfs`: one boot of the demo disk
/// whose root prints every modalias (`terra.demo=modaliases`).
fn guest_sysfs(
    a: &build::Artifacts,
    accel: crate::vm::Accel,
    out_dir: &Path,
) -> crate::Result<PathBuf> {
    let busybox = crate::host::static_busybox()
        .ok_or("no static busybox (apt-get install busybox-static)")?;
    let disk = crate::disk::BtrfsDisk::new("os", "7e44a1a0-5ca1-4e00-9000-0000000000b5", &["os"])
        .image(&busybox)?;
    let mut vm = Vm::new(&a.kernel, &a.initramfs, accel);
    vm.disks = vec![disk];
    vm.append = "terra.demo=poweroff terra.demo=modaliases".into();
    let out = vm.run_captured()?;
    let sysfs = out_dir.join("guest-sysfs");
    let _ = fs::remove_dir_all(&sysfs);
    let n = crate::vm::modaliases_to_sysfs(&out.log, &sysfs)?;
    if n == 0 {
        return Err("the lab guest printed no modaliases (terra.demo=modaliases)".into());
    }
    eprintln!("bench: the lab guest has {n} devices with a modalias");
    Ok(sysfs)
}

/// Generates and boots every generator's image (`opts.gen_runs` and `opts.boots` each) into
/// `out_dir`; returns the markdown table and the JSON for results.json.
pub fn run(
    opts: &Options,
    a: &Artifacts,
    out_dir: &Path,
    stage0_size: u64,
) -> crate::Result<(String, serde_json::Value)> {
    let init = build::bench_init()?;
    let disk = bench_disk(&init)?;
    let kver = a.kver.clone();
    let sysfs = guest_sysfs(a, opts.accel, out_dir)?;
    let baremetal = crate::workspace().join("initramfs/baremetal.modules");
    let terra_with = |extra: Vec<String>| -> GenerateFn {
        let kver = &kver;
        Box::new(move |out: &Path| {
            let start = Instant::now();
            Initramfs {
                extra: extra.clone(),
                ..Default::default()
            }
            .build(&a.terra, &a.stage0, kver, out)?;
            Ok(start.elapsed().as_secs_f64())
        })
    };
    let list = vec![
        "--modules-list".to_string(),
        baremetal.display().to_string(),
    ];
    let mut host = list.clone();
    host.extend(["--host-sysfs".to_string(), sysfs.display().to_string()]);

    let gens: Vec<(Generator, GenerateFn)> = vec![
        (
            Generator {
                name: "terra",
                boot: true,
            },
            terra_with(Vec::new()),
        ),
        (
            Generator {
                name: "terra, bare-metal set",
                boot: true,
            },
            terra_with(list),
        ),
        (
            Generator {
                name: "terra --host (bare-metal set, lab guest)",
                boot: true,
            },
            terra_with(host),
        ),
        (
            Generator {
                name: "mkinitramfs",
                boot: true,
            },
            Box::new(|out: &Path| timed(Command::new("mkinitramfs").arg("-o").arg(out).arg(&kver))),
        ),
        (
            Generator {
                name: "dracut --no-hostonly",
                boot: true,
            },
            Box::new(|out: &Path| {
                timed(
                    Command::new("dracut")
                        .args(["-q", "--force", "--no-hostonly", "--kver", &kver])
                        .arg(out),
                )
            }),
        ),
        (
            Generator {
                name: "dracut --hostonly",
                boot: false,
            },
            Box::new(|out: &Path| {
                timed(
                    Command::new("dracut")
                        .args(["-q", "--force", "--hostonly", "--kver", &kver])
                        .arg(out),
                )
            }),
        ),
    ];

    let mut rows = Vec::new();
    for (i, (g, generate)) in gens.iter().enumerate() {
        let image = out_dir.join(format!("image-{i}.img"));
        let mut times = Vec::new();
        for _ in 0..opts.gen_runs {
            times.push(generate(&image)?);
        }
        let mut row = Row {
            name: g.name.to_string(),
            gen_s: median(&times),
            size: fs::metadata(&image).map(|m| m.len()).unwrap_or(0),
            unpacked: unpacked_size(&image).unwrap_or(0),
            ..Default::default()
        };
        eprintln!(
            "bench: {} generated in {:.2} s (median of {}), {} bytes",
            g.name,
            row.gen_s,
            times.len(),
            row.size
        );
        if g.boot {
            for n in 0..opts.boots {
                let mut vm = Vm::new(&a.kernel, &image, opts.accel);
                vm.disks = vec![disk.clone()];
                vm.append = "root=LABEL=os rootflags=subvol=os rootfstype=btrfs".into();
                vm.timeout = Duration::from_secs(180);
                let out = vm.run_captured()?;
                match boot_times(&out.log) {
                    Some((at, inside)) => {
                        eprintln!("bench: {} boot {}: root init at {at:.2} s", g.name, n + 1);
                        row.init_at.push(at);
                        row.peak_rss_kb = row.peak_rss_kb.or(stage0_peak_rss(&out.log));
                        if let Some(t) = inside {
                            row.in_initramfs.push(t);
                        }
                    }
                    None => {
                        let log = out_dir.join(format!("failed-boot-{i}-{n}.log"));
                        let _ = fs::write(&log, &out.log);
                        eprintln!(
                            "bench: {} boot {} did not reach the root's init; log in {}",
                            g.name,
                            n + 1,
                            log.display()
                        );
                        row.failed_boots += 1;
                    }
                }
            }
        }
        rows.push(row);
    }
    Ok((
        render(&rows, stage0_size, opts),
        to_json(&rows, stage0_size, opts),
    ))
}

fn ratio(v: f64, base: f64) -> String {
    if v.is_finite() && base.is_finite() && base > 0.0 {
        format!("{:.1}×", v / base)
    } else {
        "–".into()
    }
}

fn render(rows: &[Row], stage0_size: u64, opts: &Options) -> String {
    let base = rows.first().cloned().unwrap_or_default();
    let mb = |b: u64| b as f64 / 1e6;
    let mut s = format!(
        "Kernel start → root init, guest seconds under {:?}; {} boots per image; generation: median of {} runs.\n\n",
        opts.accel, opts.boots, opts.gen_runs
    );
    s.push_str("| generator | generate (s) | × terra | image (MB) | × terra | unpacked (MB) | root init at, median (min–max) s | × terra | in initramfs, median s | failed boots |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let booted = !r.init_at.is_empty();
        s.push_str(&format!(
            "| {} | {:.2} | {} | {:.2} | {} | {:.2} | {} | {} | {} | {} |\n",
            r.name,
            r.gen_s,
            ratio(r.gen_s, base.gen_s),
            mb(r.size),
            ratio(r.size as f64, base.size as f64),
            mb(r.unpacked),
            if booted {
                format!(
                    "{:.2} ({:.2}–{:.2})",
                    median(&r.init_at),
                    min(&r.init_at),
                    max(&r.init_at)
                )
            } else {
                "not booted".into()
            },
            if booted {
                ratio(median(&r.init_at), median(&base.init_at))
            } else {
                "–".into()
            },
            if r.in_initramfs.is_empty() {
                "–".into()
            } else {
                format!("{:.2}", median(&r.in_initramfs))
            },
            r.failed_boots,
        ));
    }
    s.push_str(&format!("\nstage0 binary: {stage0_size} bytes"));
    if let Some(kb) = base.peak_rss_kb {
        s.push_str(&format!("; stage0 peak RSS during boot: {kb} kB"));
    }
    s.push_str(".\n");
    s
}

fn to_json(rows: &[Row], stage0_size: u64, opts: &Options) -> serde_json::Value {
    serde_json::json!({
        "accel": format!("{:?}", opts.accel),
        "boots": opts.boots,
        "gen_runs": opts.gen_runs,
        "stage0_bytes": stage0_size,
        "rows": rows.iter().map(|r| serde_json::json!({
            "name": r.name,
            "generate_s": r.gen_s,
            "image_bytes": r.size,
            "unpacked_bytes": r.unpacked,
            "root_init_at_s": r.init_at,
            "in_initramfs_s": r.in_initramfs,
            "failed_boots": r.failed_boots,
            "peak_rss_kb": r.peak_rss_kb,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage0_logs_its_peak_rss() {
        assert_eq!(
            stage0_peak_rss(
                "stage0: exec /sbin/init after 1.0 ms in the initramfs (peak RSS 1234 kB)"
            ),
            Some(1234)
        );
    }
}
