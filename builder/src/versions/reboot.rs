//! Restarting the running system into a version (`terra apply --reboot`, `terra upgrade
//! --reboot`): cleanly through systemd when it runs, so services stop first; through kexec
//! of the version's kernel and initramfs (or the base kernel, for a version that carries
//! none) when the machine allows it, skipping firmware and bootloader; through a normal
//! reboot otherwise. [`plan`] decides, from what it is given, and is tested on its own;
//! [`prepare_reboot`] loads the kernel and [`Reboot::start`] restarts.
//!
//! The kexec'd command line is the running one without `BOOT_IMAGE=` and the
//! `terra.kexec.*` keys: the stage0 that starts chooses afresh, so the tentative version
//! spends a try as it would after a firmware reboot, and stage0's own kexec rule brings
//! the chosen version's kernel when the loaded one is not it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::bootstate::{self, Status};
use terra_init::kexec::{self, KexecError};

use super::top::open;
use super::{io_err, log_line, Target, VersionsError};
use crate::tool;

/// Present when systemd is PID 1 (sd_booted(3)).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// The running kernel's command line.
const PROC_CMDLINE: &str = "/proc/cmdline";

/// Who restarts the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// systemd's `kexec.target`|`reboot.target`: systemd stops the services and unmounts
    /// first.
    Systemd,
    /// No systemd: sync, then reboot(2) here.
    Syscall,
}

/// How the machine restarts into the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// Into the loaded kernel: no firmware, no bootloader.
    Kexec {
        /// Who restarts.
        via: Via,
        /// The kernel directory that was loaded.
        kernel: PathBuf,
    },
    /// Through the firmware and bootloader.
    Reboot {
        /// Who restarts.
        via: Via,
        /// Why not kexec.
        why: String,
    },
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Kexec {
                via: Via::Systemd,
                kernel,
            } => write!(
                f,
                "kexec of the kernel in {} through systemd's kexec.target (services stop first; \
                 firmware and bootloader are skipped)",
                kernel.display()
            ),
            Method::Kexec {
                via: Via::Syscall,
                kernel,
            } => write!(
                f,
                "kexec of the kernel in {} (no systemd: sync, then reboot(RB_KEXEC))",
                kernel.display()
            ),
            Method::Reboot {
                via: Via::Systemd,
                why,
            } => write!(
                f,
                "a normal reboot through systemd's reboot.target (no kexec: {why})"
            ),
            Method::Reboot {
                via: Via::Syscall,
                why,
            } => write!(
                f,
                "a normal reboot (no systemd: sync, then reboot(RB_AUTOBOOT); no kexec: {why})"
            ),
        }
    }
}

/// The kernel directory a kexec into `version` on top level `top` loads: the version's
/// own, else the install's base kernel; or why there is none to load. `cmdline` is the
/// running command line: `terra.kexec=off` there turns kexec off here too.
pub fn kexec_kernel(top: &Path, version: &str, cmdline: &str) -> Result<PathBuf, String> {
    if cmdline.split_whitespace().any(|w| w == "terra.kexec=off") {
        return Err("terra.kexec=off is on the command line".into());
    }
    bootstate::kernel_dir(top, version).ok_or_else(|| {
        format!(
            "version {version} carries no kernel ({}) and the disk has no base kernel ({}/{})",
            bootstate::KERNEL_DIR,
            bootstate::STATE_DIR,
            bootstate::BASE_KERNEL_DIR
        )
    })
}

/// Decides how to restart: kexec of `kernel` when there is one and `load` (the
/// kexec_file_load) takes it, else a normal reboot saying why; through systemd when it
/// runs. Any refused load falls back to a reboot: a refusal of the machine's (no kexec,
/// lockdown, no memory) is no fault of the version, and a kernel that is not one is
/// found by stage0 at the boot, which marks the version bad and boots the default.
pub fn plan(
    systemd: bool,
    kernel: Result<PathBuf, String>,
    load: impl FnOnce(&Path) -> Result<(), KexecError>,
) -> Method {
    let via = if systemd { Via::Systemd } else { Via::Syscall };
    let kernel = kernel.and_then(|k| match load(&k) {
        Ok(()) => Ok(k),
        Err(e) if e.is_environment() => Err(format!("the machine refuses it: {e}")),
        Err(e) => Err(e.to_string()),
    });
    match kernel {
        Ok(kernel) => Method::Kexec { via, kernel },
        Err(why) => Method::Reboot { via, why },
    }
}

/// A restart into a version, its kernel loaded when it kexecs.
#[derive(Debug)]
pub struct Reboot {
    /// The version the restart is for.
    pub version: String,
    /// How.
    pub method: Method,
}

impl fmt::Display for Reboot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rebooting into {}: {}", self.version, self.method)
    }
}

/// Gets the running system ready to restart into `version` (a tentative or good one):
/// finds its kernel and loads it for kexec when the machine allows. Nothing restarts yet:
/// say [`Reboot`]'s method, then [`Reboot::start`]. Refused with `--disk` (there is no
/// running system of that disk to restart).
pub fn prepare_reboot(target: &Target, version: &str) -> Result<Reboot, VersionsError> {
    if !target.disks.is_empty() {
        return Err(VersionsError::Refused(
            "--reboot restarts the running system into the version; with --disk there is \
             none to restart (boot the disk to try the version)"
                .into(),
        ));
    }
    let current = std::fs::read_to_string(PROC_CMDLINE).map_err(io_err(Path::new(PROC_CMDLINE)))?;
    let line = kexec::plain_cmdline(current.trim()).join(" ");
    if let Some(pin) = line.split_whitespace().find(|w| w.starts_with("version=")) {
        log_line(&format!(
            "warning: the command line pins {pin}: the restarted system boots that version, \
             not {version}"
        ));
    }
    let top = open(target)?;
    let state = top.state()?;
    match state.get(version).map(|v| &v.status) {
        Some(Status::Good | Status::Tentative) => {}
        Some(s) => {
            return Err(VersionsError::Refused(format!(
                "{}: version {version} is {}: it does not boot",
                top.disk,
                s.as_str()
            )))
        }
        None if state.staged_version(version).is_some() => {
            return Err(VersionsError::Refused(format!(
                "{}: version {version} is staged: `terra apply {version}` makes it boot",
                top.disk
            )))
        }
        None => {
            return Err(VersionsError::Refused(format!(
                "{}: no version {version}",
                top.disk
            )))
        }
    }
    let systemd = Path::new(SYSTEMD_RUNNING).is_dir();
    let kernel = kexec_kernel(&top.path, version, &line);
    // The load reads both files into the kernel now: the top level can go afterwards.
    let method = plan(systemd, kernel, |dir| kexec::load_dir(dir, &line));
    drop(top);
    Ok(Reboot {
        version: version.to_string(),
        method,
    })
}

impl Reboot {
    /// Restarts. Through systemd it returns once systemd has the job (this process is
    /// stopped with the rest); otherwise it returns only when the reboot failed.
    pub fn start(self) -> Result<(), VersionsError> {
        use rustix::system::{reboot, RebootCommand};
        let (via, action, command) = match &self.method {
            Method::Kexec { via, .. } => (*via, "kexec", RebootCommand::Kexec),
            Method::Reboot { via, .. } => (*via, "reboot", RebootCommand::Restart),
        };
        if via == Via::Systemd {
            // The target itself, queued without waiting, rather than `systemctl kexec`:
            // that asks logind first (a D-Bus round that timed out for 50 s on a Debian
            // node without a session) and then waits for the job, which stops the unit
            // running this (terra-update.service) — a wait on itself. Run by root and not
            // on a terminal, `systemctl kexec` checks no inhibitors either; this is its own
            // fallback path.
            tool::run(
                Command::new("systemctl").args([
                    "--no-block",
                    "--job-mode=replace-irreversibly",
                    "start",
                    &format!("{action}.target"),
                ]),
                "systemd",
            )?;
            return Ok(());
        }
        // What the page cache holds goes to the disks first: reboot(2) does not sync.
        rustix::fs::sync();
        let err = reboot(command).err().unwrap_or(rustix::io::Errno::INVAL);
        Err(VersionsError::Refused(format!(
            "reboot({action}) failed: {err} (the version boots at the next restart)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(err: nix::errno::Errno) -> KexecError {
        KexecError::Load {
            kernel: "/t/v2/boot/terra/vmlinuz".into(),
            err,
        }
    }

    #[test]
    fn kexec_when_the_kernel_loads_through_systemd_when_it_runs() {
        let k = PathBuf::from("/t/v2/boot/terra");
        let mut loaded = None;
        let m = plan(true, Ok(k.clone()), |d| {
            loaded = Some(d.to_path_buf());
            Ok(())
        });
        assert_eq!(loaded.as_ref(), Some(&k));
        assert_eq!(
            m,
            Method::Kexec {
                via: Via::Systemd,
                kernel: k.clone()
            }
        );
        assert!(m.to_string().contains("kexec.target"), "{m}");
        let m = plan(false, Ok(k.clone()), |_| Ok(()));
        assert_eq!(
            m,
            Method::Kexec {
                via: Via::Syscall,
                kernel: k
            }
        );
        assert!(m.to_string().contains("RB_KEXEC"), "{m}");
    }

    #[test]
    fn a_refused_load_or_no_kernel_reboots_and_says_why() {
        let k = PathBuf::from("/t/v2/boot/terra");
        let m = plan(true, Ok(k.clone()), |_| {
            Err(refused(nix::errno::Errno::ENOSYS))
        });
        let Method::Reboot { via, why } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(*via, Via::Systemd);
        assert!(why.contains("the machine refuses it"), "{why}");
        assert!(m.to_string().contains("reboot.target"), "{m}");
        // A kernel that is no kernel: a reboot too, and stage0 finds it at the boot.
        let m = plan(false, Ok(k), |_| Err(refused(nix::errno::Errno::ENOEXEC)));
        let Method::Reboot { via, why } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(*via, Via::Syscall);
        assert!(why.contains("ENOEXEC") && !why.contains("machine"), "{why}");
        assert!(m.to_string().contains("RB_AUTOBOOT"), "{m}");
        // Nothing to load: never calls the loader.
        let m = plan(true, Err("no kernel".into()), |_| panic!("loaded"));
        assert_eq!(
            m,
            Method::Reboot {
                via: Via::Systemd,
                why: "no kernel".into()
            }
        );
    }

    #[test]
    fn the_kernel_is_the_versions_own_else_the_base_one_unless_kexec_is_off() {
        let t = tempfile::tempdir().unwrap();
        let kdir = |d: &Path| {
            std::fs::create_dir_all(d).unwrap();
            for f in [
                bootstate::KERNEL_FILE,
                bootstate::INITRAMFS_FILE,
                bootstate::RELEASE_FILE,
            ] {
                std::fs::write(d.join(f), b"6.1.0-9-amd64\n").unwrap();
            }
        };
        let err = kexec_kernel(t.path(), "v2", "root=LABEL=os").unwrap_err();
        assert!(
            err.contains("v2 carries no kernel") && err.contains(".terra/kernel"),
            "{err}"
        );
        let base = t.path().join(".terra/kernel");
        kdir(&base);
        assert_eq!(kexec_kernel(t.path(), "v2", "root=LABEL=os").unwrap(), base);
        let own = t.path().join("v2/boot/terra");
        kdir(&own);
        assert_eq!(kexec_kernel(t.path(), "v2", "root=LABEL=os").unwrap(), own);
        let err = kexec_kernel(t.path(), "v2", "root=LABEL=os terra.kexec=off").unwrap_err();
        assert!(err.contains("terra.kexec=off"), "{err}");
    }

    #[test]
    fn reboot_is_refused_with_a_disk() {
        let t = Target {
            disks: vec!["/tmp/disk.img".into()],
        };
        let err = prepare_reboot(&t, "v2").unwrap_err().to_string();
        assert!(err.contains("--disk"), "{err}");
    }
}
