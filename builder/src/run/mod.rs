//! `terra run`: an image booted in a throwaway QEMU VM. The image is installed as
//! `terra install` installs it on a bootable disk (`mbr = true`: GRUB, the ESP, the host's
//! kernel with a Terra initramfs) in a sparse disk image in a temporary directory; the
//! firmware boots that disk with the serial console on the terminal; when QEMU exits, or
//! terra gets SIGINT, SIGTERM or SIGHUP ([`signals`]: QEMU is stopped first), the directory
//! goes with the disk in it. The install detaches its loop devices and unmounts before it
//! returns, failed or not, so nothing else is left.

use std::fmt;
use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::install::{self, InstallError, InstallReport, InstallSpec};
use crate::oci::{self, Platform, VerifyPolicy};
use crate::tool::{self, Missing};

pub mod qemu;
pub mod signals;

pub use qemu::{qemu_args, Accel, Firmware, VmSpec};

/// The disk's size when none is given: sparse, so only what the guest writes takes space.
pub const DEFAULT_DISK_MIB: u64 = 10 << 10;

/// What to run, and how.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The image reference (as `terra install --image` takes it).
    pub image: String,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// KVM or TCG; None: [`Accel::detect`].
    pub accel: Option<Accel>,
    /// The disk's size, MiB.
    pub disk_mib: u64,
    /// Extra kernel arguments (GRUB's entry on the disk).
    pub append: String,
    /// Host port on 127.0.0.1 forwarded to the guest's port 22.
    pub ssh: Option<u16>,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// The kernel the disk boots (default: the host's newest `/boot/vmlinuz-*`).
    pub kernel: Option<PathBuf>,
    /// Platform picked from an image index.
    pub platform: Platform,
    /// Registry over plain HTTP.
    pub plain_http: bool,
    /// Refuse the image unless signed by one of these keys.
    pub verify: Option<VerifyPolicy>,
}

impl RunSpec {
    /// `image` with the defaults: BIOS, detected acceleration, a 10 GiB disk, 2 GiB of
    /// memory, 2 CPUs, no port forwarded.
    pub fn new(image: &str) -> RunSpec {
        RunSpec {
            image: image.to_string(),
            firmware: Firmware::Bios,
            accel: None,
            disk_mib: DEFAULT_DISK_MIB,
            append: String::new(),
            ssh: None,
            memory_mib: 2048,
            cpus: 2,
            kernel: None,
            platform: Platform::default(),
            plain_http: false,
            verify: None,
        }
    }
}

/// Why `terra run` stopped.
#[derive(Debug)]
pub enum RunError {
    /// Not root: the install needs loop devices, mkfs and mount.
    NotRoot,
    /// QEMU or the firmware is missing (nothing was written).
    Missing(Missing),
    /// `--disk-size` is too small for a bootable disk.
    DiskTooSmall {
        /// Given, MiB.
        mib: u64,
        /// The least, MiB.
        min: u64,
    },
    /// `--kvm`, but `/dev/kvm` does not open.
    Kvm(io::Error),
    /// `--ssh PORT`, but 127.0.0.1:PORT is taken.
    SshPort {
        /// The port.
        port: u16,
        /// Why it cannot be bound.
        err: io::Error,
    },
    /// The temporary directory or a file in it.
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// Installing the image on the VM's disk failed.
    Install(InstallError),
    /// QEMU could not be started or waited for.
    Qemu(io::Error),
    /// QEMU exited with a failure (its own message is above on the terminal).
    VmFailed(ExitStatus),
    /// A signal ended the run; the VM was stopped and everything removed.
    Interrupted(i32),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::NotRoot => write!(
                f,
                "terra run needs root (it installs the image on the VM's disk with loop \
                 devices, mkfs and mount, like terra install)"
            ),
            RunError::Missing(e) => write!(f, "{e}"),
            RunError::DiskTooSmall { mib, min } => write!(
                f,
                "--disk-size: {mib} MiB is too small; a bootable disk needs at least {min} MiB"
            ),
            RunError::Kvm(e) => write!(f, "--kvm: /dev/kvm: {e} (--tcg emulates instead)"),
            RunError::SshPort { port, err } => {
                write!(f, "--ssh {port}: 127.0.0.1:{port}: {err}")
            }
            RunError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            RunError::Install(e) => write!(f, "installing the image on the VM's disk: {e}"),
            RunError::Qemu(e) => write!(f, "cannot run {}: {e}", qemu::QEMU),
            RunError::VmFailed(s) => write!(f, "{} failed ({s})", qemu::QEMU),
            RunError::Interrupted(sig) => write!(
                f,
                "interrupted by {}: the VM was stopped and its disk removed",
                signals::name(*sig)
            ),
        }
    }
}

impl std::error::Error for RunError {}

/// Parses a disk size: a number with an optional binary unit `K`, `M`, `G` or `T` (`KiB`,
/// `MB`… taken alike); a bare number is MiB, as node.toml's `size`. Returns MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size like 10G or 512M"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let mib = match unit {
        "K" => n / 1024,
        "" | "M" => n,
        "G" => n.saturating_mul(1 << 10),
        "T" => n.saturating_mul(1 << 20),
        _ => return Err(format!("{s:?}: unknown unit (K, M, G or T)")),
    };
    Ok(mib)
}

/// The node.toml of the VM's disk: one group `os`, bootable, one disk of `mib` MiB (its
/// device is replaced by the disk image's path, as `terra install --disk` does).
pub fn node_toml(mib: u64) -> String {
    format!(
        "# written by terra run\nhostname = \"terra-run\"\n\n[[groups]]\nlabel = \"os\"\n\
         mbr = true\n  [[groups.disk]]\n  device = \"disk.img\"\n  size = {mib}\n"
    )
}

/// The temporary directory of one run, removed on drop with everything in it.
#[derive(Debug)]
pub struct Workspace(PathBuf);

impl Workspace {
    /// A new `terra-run-<pid>-<n>` under `$TMPDIR`, else `/var/tmp` (a VM's disk is large:
    /// not in RAM when /tmp is a tmpfs).
    pub fn create() -> Result<Workspace, RunError> {
        let base = std::env::var_os("TMPDIR")
            .filter(|t| !t.is_empty())
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        Workspace::create_in(&base)
    }

    /// A new `terra-run-<pid>-<n>` in `base`.
    pub fn create_in(base: &Path) -> Result<Workspace, RunError> {
        for n in 0..1000u32 {
            let p = base.join(format!("terra-run-{}-{n}", std::process::id()));
            match fs::create_dir(&p) {
                Ok(()) => return Ok(Workspace(p)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(RunError::Io { path: p, err }),
            }
        }
        Err(RunError::Io {
            path: base.to_path_buf(),
            err: io::Error::other("cannot create a temporary directory"),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A VM whose disk is installed, ready to boot; dropping it removes the disk.
pub struct Session {
    /// What QEMU runs.
    pub vm: VmSpec,
    /// What the install did.
    pub install: InstallReport,
    // Dropped in this order: the disk, then the signal handlers.
    work: Workspace,
    caught: signals::Caught,
}

impl Session {
    /// Checks root and the host tools, installs the image on a new disk in a temporary
    /// directory, telling `progress` of the pull and unpack. A signal meanwhile ends it
    /// with [`RunError::Interrupted`] once the install has cleaned up after itself.
    pub fn prepare(spec: &RunSpec, progress: &dyn oci::Progress) -> Result<Session, RunError> {
        if !rustix::process::geteuid().is_root() {
            return Err(RunError::NotRoot);
        }
        let min = crate::bootdisk::min_disk_mib();
        if spec.disk_mib < min {
            return Err(RunError::DiskTooSmall {
                mib: spec.disk_mib,
                min,
            });
        }
        tool::check(&qemu::needs(spec.firmware)).map_err(RunError::Missing)?;
        if spec.accel == Some(Accel::Kvm) {
            qemu::open_kvm().map_err(RunError::Kvm)?;
        }
        if let Some(port) = spec.ssh {
            // Free now, so QEMU's forward is unlikely to fail after the install.
            std::net::TcpListener::bind(("127.0.0.1", port))
                .map_err(|err| RunError::SshPort { port, err })?;
        }
        let caught = signals::Caught::install().map_err(|err| RunError::Io {
            path: PathBuf::from("sigaction"),
            err,
        })?;
        let work = Workspace::create()?;
        let config = work.path().join("node.toml");
        fs::write(&config, node_toml(spec.disk_mib)).map_err(|err| RunError::Io {
            path: config.clone(),
            err,
        })?;
        let disk = work.path().join("disk.img");
        let mut i = InstallSpec::new(&config);
        i.image = Some(spec.image.clone());
        i.disks = vec![disk.clone()];
        i.platform = spec.platform.clone();
        i.plain_http = spec.plain_http;
        i.verify = spec.verify.clone();
        i.kernel = spec.kernel.clone();
        i.cmdline = spec.append.clone();
        let installed = install::install_with(&i, progress);
        if let Some(sig) = caught.signal() {
            return Err(RunError::Interrupted(sig));
        }
        let report = installed.map_err(RunError::Install)?;
        Ok(Session {
            vm: VmSpec {
                disk,
                firmware: spec.firmware,
                accel: spec.accel.unwrap_or_else(Accel::detect),
                memory_mib: spec.memory_mib,
                cpus: spec.cpus,
                ssh: spec.ssh,
            },
            install: report,
            work,
            caught,
        })
    }

    /// The temporary directory that holds the disk.
    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    /// Boots the VM with stdio as its console and waits for QEMU; then removes the disk.
    /// The terminal's settings are put back afterwards, even if QEMU died without.
    pub fn boot(self) -> Result<(), RunError> {
        let stdin = io::stdin();
        let saved = stdin
            .is_terminal()
            .then(|| rustix::termios::tcgetattr(&stdin).ok())
            .flatten();
        let mut child = Command::new(qemu::QEMU)
            .args(qemu_args(&self.vm))
            .spawn()
            .map_err(RunError::Qemu)?;
        self.caught.watch(child.id());
        let status = child.wait();
        self.caught.unwatch();
        if let Some(t) = saved {
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
        }
        if let Some(sig) = self.caught.signal() {
            return Err(RunError::Interrupted(sig));
        }
        let status = status.map_err(RunError::Qemu)?;
        if !status.success() {
            return Err(RunError::VmFailed(status));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terra_init::config::NodeConfig;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G"), Ok(10240));
        assert_eq!(parse_size("10GiB"), Ok(10240));
        assert_eq!(parse_size("512M"), Ok(512));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1t"), Ok(1 << 20));
        assert_eq!(parse_size("2048K"), Ok(2));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10X").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn the_node_toml_is_one_bootable_disk() {
        let n = NodeConfig::parse(&node_toml(4096), Path::new("node.toml")).unwrap();
        assert_eq!(n.groups.len(), 1);
        let g = &n.groups[0];
        assert!(g.mbr);
        assert_eq!(g.label, "os");
        assert_eq!(g.disk[0].size, Some(4096));
        let planned =
            install::plan_groups(&n, &[PathBuf::from("/x/disk.img")], Path::new("n")).unwrap();
        assert_eq!(planned[0].disk[0].device, "/x/disk.img");
        assert_eq!(planned[0].disk[0].size, Some(4096));
    }

    #[test]
    fn the_workspace_goes_with_its_files() {
        let base = tempfile::tempdir().unwrap();
        let w = Workspace::create_in(base.path()).unwrap();
        let p = w.path().to_path_buf();
        assert!(p.starts_with(base.path()));
        fs::write(p.join("disk.img"), b"x").unwrap();
        drop(w);
        assert!(!p.exists());
    }
}
