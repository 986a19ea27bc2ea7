//! Booting a version on the kernel it carries: `kexec_file_load` of the version's kernel
//! and Terra initramfs (`boot/terra/` in the version, written by `terra upgrade`), with the
//! running command line plus `terra.kexec.into=<version>` so the next stage0 boots that version
//! without counting or kexecing again (ARCHITECTURE.md, "Kernels").

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[cfg(test)]
use crate::bootstate::RELEASE_FILE;
use crate::bootstate::{self, INITRAMFS_FILE, KERNEL_DIR, KERNEL_FILE};

/// A version's kernel that cannot be loaded.
#[derive(Debug)]
pub enum KexecError {
    /// A file of the kernel directory cannot be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
    /// The kernel refused the image (not a bzImage, a signature it enforces, no memory).
    Load {
        /// The kernel image.
        kernel: PathBuf,
        /// The errno.
        err: nix::errno::Errno,
    },
}

impl fmt::Display for KexecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KexecError::Open { path, err } => write!(f, "kexec: {}: {err}", path.display()),
            KexecError::Load { kernel, err } => write!(
                f,
                "kexec_file_load of {} refused: {err} (EPERM/EKEYREJECTED: lockdown or an \
                 unsigned kernel; ENOEXEC: not a kernel image)",
                kernel.display()
            ),
        }
    }
}

impl std::error::Error for KexecError {}

/// The running kernel's release (`uname -r`).
pub fn running_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The release of the kernel version root `root` carries, when it carries one.
pub fn carried_release(root: &Path) -> Option<String> {
    let dir = root.join(KERNEL_DIR);
    if !bootstate::is_kernel_dir(&dir) {
        return None;
    }
    bootstate::kernel_release(&dir)
}

/// What the root phase does with the kernel of the version it chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelPlan {
    /// Boot it on the running kernel: it carries none, or the running one.
    Running,
    /// Boot it on the running kernel although it carries another, for this reason (said on
    /// the console and in boot.json).
    RunningInstead(String),
    /// Record the kexec in the boot state, load this release and kexec into it.
    Kexec(String),
}

/// The kexec rule (ARCHITECTURE.md, "Kernels that travel with versions"), without I/O:
/// the version's carried release, the running one, why its kernel failed before (its
/// [`crate::bootstate::Version::kernel_failed`]) and whether the boot state can record the
/// kexec. A kernel that once did not reach the root is not started again, and a kexec
/// that could not be recorded is not made: either could loop through rescue for ever.
pub fn plan(
    carried: Option<&str>,
    running: &str,
    failed: Option<&str>,
    can_record: bool,
) -> KernelPlan {
    let Some(release) = carried.filter(|r| *r != running) else {
        return KernelPlan::Running;
    };
    if let Some(why) = failed {
        return KernelPlan::RunningInstead(why.to_string());
    }
    if !can_record {
        return KernelPlan::RunningInstead(format!(
            "kernel {release} is not started: the boot state is read-only here, so a kernel \
             that never reached the root could not be told from one that did"
        ));
    }
    KernelPlan::Kexec(release.to_string())
}

/// The running command line without what belongs to this boot only: `BOOT_IMAGE=` (the
/// bootloader's note about the kernel it loaded, not the next one) and the
/// `terra.kexec.*` keys a previous stage0 added.
pub fn plain_cmdline(current: &str) -> Vec<&str> {
    current
        .split_whitespace()
        .filter(|w| {
            let key = w.split('=').next().unwrap_or("");
            key != "BOOT_IMAGE" && !key.starts_with("terra.kexec.")
        })
        .collect()
}

/// The command line for the kexec into `version`: the running one without our kexec
/// keys, plus `terra.kexec.into=<version>` and where this boot came from and when.
pub fn next_cmdline(current: &str, version: &str, release: &str, uptime_ms: u64) -> String {
    let mut kept = plain_cmdline(current);
    let pin = format!("terra.kexec.into={version}");
    let from = format!("terra.kexec.from={release}@{uptime_ms}");
    kept.push(&pin);
    kept.push(&from);
    kept.join(" ")
}

/// Loads the kernel and initramfs of the version mounted at `root` for the next reboot.
pub fn load(root: &Path, cmdline: &str) -> Result<(), KexecError> {
    load_dir(&root.join(KERNEL_DIR), cmdline)
}

/// Loads the kernel and initramfs of kernel directory `dir` (a version's
/// [`KERNEL_DIR`] or the install's base kernel) for the next reboot.
pub fn load_dir(dir: &Path, cmdline: &str) -> Result<(), KexecError> {
    let open = |name: &str| {
        let path = dir.join(name);
        File::open(&path).map_err(|err| KexecError::Open { path, err })
    };
    let kernel = open(KERNEL_FILE)?;
    let initrd = open(INITRAMFS_FILE)?;
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    // SAFETY: both descriptors are open files owned by this frame; the command line is a
    // NUL-terminated buffer that lives across the call and whose length (NUL included) is
    // passed with it; flags 0 asks for a normal (not crash) kernel load.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd.as_raw_fd(),
            line.len(),
            line.as_ptr(),
            0usize,
        )
    };
    if rc != 0 {
        return Err(KexecError::Load {
            kernel: dir.join(KERNEL_FILE),
            err: nix::errno::Errno::last(),
        });
    }
    Ok(())
}

impl KexecError {
    /// Whether the failure is the machine's rather than the version's: kexec missing from
    /// the kernel, refused by lockdown or signature policy, or no memory for the image.
    /// Then the version boots on the running kernel instead of counting as broken.
    pub fn is_environment(&self) -> bool {
        use nix::errno::Errno;
        matches!(
            self,
            KexecError::Load {
                err: Errno::ENOSYS
                    | Errno::EPERM
                    | Errno::EKEYREJECTED
                    | Errno::EACCES
                    | Errno::ENOMEM
                    | Errno::EBUSY,
                ..
            }
        )
    }
}

/// Starts the loaded kernel. Returns only when the reboot failed.
pub fn exec() -> nix::errno::Errno {
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_command_line_pins_the_version_once() {
        let line = next_cmdline(
            "BOOT_IMAGE=/terra/a/vmlinuz root=LABEL=os console=ttyS0 terra.kexec.into=v1 terra.kexec.from=x@1",
            "v2",
            "6.1.0-9-amd64",
            1234,
        );
        assert_eq!(
            line,
            "root=LABEL=os console=ttyS0 terra.kexec.into=v2 terra.kexec.from=6.1.0-9-amd64@1234"
        );
        let c = crate::config::BootConfig::resolve(Default::default(), &line).unwrap();
        assert_eq!(
            c.kexec,
            crate::config::Kexec::Into {
                version: "v2".into(),
                from: Some(("6.1.0-9-amd64".into(), 1234)),
            }
        );
    }

    #[test]
    fn a_kernel_is_started_only_when_it_differs_has_not_failed_and_can_be_recorded() {
        let run = "6.1.0-57-amd64";
        let cloud = "6.1.0-57-cloud-amd64";
        assert_eq!(plan(None, run, None, true), KernelPlan::Running);
        assert_eq!(plan(Some(run), run, None, true), KernelPlan::Running);
        assert_eq!(
            plan(Some(run), run, Some("failed"), false),
            KernelPlan::Running
        );
        assert_eq!(
            plan(Some(cloud), run, None, true),
            KernelPlan::Kexec(cloud.into())
        );
        // It did not reach the root last time: the running kernel, and the reason.
        assert_eq!(
            plan(Some(cloud), run, Some("no root"), true),
            KernelPlan::RunningInstead("no root".into())
        );
        // Nothing could record it: a kexec that fails would loop; none.
        match plan(Some(cloud), run, None, false) {
            KernelPlan::RunningInstead(why) => assert!(why.contains(cloud), "{why}"),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_release_is_read_from_the_version() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(carried_release(t.path()), None);
        std::fs::create_dir_all(t.path().join(KERNEL_DIR)).unwrap();
        std::fs::write(
            t.path().join(KERNEL_DIR).join(RELEASE_FILE),
            "6.1.0-9-cloud-amd64\n",
        )
        .unwrap();
        // Without the kernel and initramfs beside it, it carries nothing.
        assert_eq!(carried_release(t.path()), None);
        std::fs::write(t.path().join(KERNEL_DIR).join(KERNEL_FILE), b"k").unwrap();
        std::os::unix::fs::symlink(
            "/etc/passwd",
            t.path().join(KERNEL_DIR).join(INITRAMFS_FILE),
        )
        .unwrap();
        assert_eq!(
            carried_release(t.path()),
            None,
            "a symlink is never followed"
        );
        std::fs::remove_file(t.path().join(KERNEL_DIR).join(INITRAMFS_FILE)).unwrap();
        std::fs::write(t.path().join(KERNEL_DIR).join(INITRAMFS_FILE), b"i").unwrap();
        assert_eq!(
            carried_release(t.path()).as_deref(),
            Some("6.1.0-9-cloud-amd64")
        );
    }
}
