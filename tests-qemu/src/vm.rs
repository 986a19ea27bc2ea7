//! QEMU runs: always bounded in time, `panic=-1` and `-no-reboot` so a dead guest ends the VM
//! (unless a run allows reboots, [`Vm::max_boots`], bounded by the number of kernel starts).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation; always works.
    Tcg,
    /// Hardware virtualization; only where it actually works.
    Kvm,
}

impl Accel {
    /// Parses `tcg` or `kvm`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcg" => Some(Accel::Tcg),
            "kvm" => Some(Accel::Kvm),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// KVM when /dev/kvm exists and a kernel actually starts under it within a few seconds
/// (on some hosts KVM is present but hangs), else TCG. The answer is cached per host boot.
pub fn detect_accel(kernel: &Path) -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Accel::Tcg;
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = crate::lab_dir().join("kvm-works");
    if let Ok(c) = std::fs::read_to_string(&cache) {
        if let Some((id, answer)) = c.split_once('\n') {
            if id == boot_id.trim() {
                return if answer.trim() == "yes" {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                };
            }
        }
    }
    let probe = Vm {
        kernel: kernel.to_path_buf(),
        initrd: None,
        disks: Vec::new(),
        append: "earlyprintk=serial".into(),
        accel: Accel::Kvm,
        timeout: Duration::from_secs(8),
        memory_mb: 256,
        smp: 1,
        nic: None,
        firmware: Firmware::Bios,
        cdrom: None,
        netboot: None,
        tap: None,
        keep_writes: false,
        boot_disk: false,
        efi_vars: None,
        extra: Vec::new(),
        max_boots: None,
    };
    let works = probe
        .run_captured()
        .map(|o| o.log.contains("Linux version"))
        .unwrap_or(false);
    let _ = std::fs::create_dir_all(crate::lab_dir());
    // Beside and renamed: another process may be reading the answer.
    let tmp = crate::temp_name(&cache);
    let answer = format!("{}\n{}\n", boot_id.trim(), if works { "yes" } else { "no" });
    if std::fs::write(&tmp, answer).is_err() || crate::publish(&tmp, &cache).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if works {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// One virtual machine.
#[derive(Debug, Clone)]
pub struct Vm {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Raw disk images, attached as virtio disks in order (vda, vdb, …), copy-on-write.
    pub disks: Vec<PathBuf>,
    /// Extra kernel arguments.
    pub append: String,
    /// Accelerator.
    pub accel: Accel,
    /// Hard bound on the run.
    pub timeout: Duration,
    /// Guest memory.
    pub memory_mb: u32,
    /// Guest CPUs.
    pub smp: u32,
    /// A NIC model (`virtio` = virtio-net-pci, `e1000`, or any QEMU model name) on QEMU user
    /// networking (DHCP 10.0.2.15/24, router 10.0.2.2, DNS 10.0.2.3); None = no NIC at all.
    pub nic: Option<String>,
    /// SeaBIOS on `-machine pc`, or OVMF (UEFI) on `-machine q35`, with or without Secure
    /// Boot.
    pub firmware: Firmware,
    /// Boot this ISO from a CD-ROM drive; `kernel`, `initrd` and `append` are then unused.
    pub cdrom: Option<PathBuf>,
    /// Boot from the network with QEMU's iPXE ROM; `kernel`, `initrd` and `append` are then
    /// unused.
    pub netboot: Option<NetBoot>,
    /// Put the NIC on this tap device instead of user networking: QEMU then runs inside the
    /// tap's network namespace (`ip netns exec`), with `nic` as the model (default
    /// virtio-net-pci).
    pub tap: Option<Tap>,
    /// Write to the disk images themselves (scenarios that boot one disk several times);
    /// by default writes go to a throwaway snapshot.
    pub keep_writes: bool,
    /// Boot from the first disk through the firmware (a disk made bootable by `terra
    /// install` with `mbr = true`); `kernel`, `initrd` and `append` are then unused.
    pub boot_disk: bool,
    /// The UEFI variable store of [`Firmware::SecureBoot`] (e.g. one with the lab's keys
    /// enrolled, [`crate::secureboot::enrolled_vars`]), attached copy-on-write so one store
    /// serves every run; None: Debian's empty [`OVMF_VARS_4M`], where nothing is enforced.
    pub efi_vars: Option<PathBuf>,
    /// More QEMU arguments, appended as given (e.g. a disk on another controller).
    pub extra: Vec<String>,
    /// None: `-no-reboot`, a reboot ends the run. Some(n): the guest may reboot (QEMU
    /// resets it and boots the same way again), and the run is stopped once more than `n`
    /// kernels started ([`Outcome::boots`]: each reboot and each kexec starts one).
    pub max_boots: Option<u32>,
}

/// A tap device in a network namespace (see [`crate::netns`]) for the VM's NIC.
#[derive(Debug, Clone)]
pub struct Tap {
    /// The namespace's name; QEMU runs in it.
    pub netns: String,
    /// The tap device, which must exist there (`ip tuntap add … mode tap`).
    pub ifname: String,
}

/// The VM's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, `-machine pc`.
    Bios,
    /// OVMF (package `ovmf`), `-machine q35`.
    Uefi,
    /// OVMF built with Secure Boot and SMM ([`OVMF_SECBOOT_CODE`]), `-machine q35,smm=on`,
    /// its variables from [`Vm::efi_vars`]: whether Secure Boot is enforced is up to them.
    SecureBoot,
}

/// OVMF as Debian's `ovmf` package installs it.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Debian's Secure Boot build of OVMF (package `ovmf`): firmware code only, its variables
/// in a second flash device.
pub const OVMF_SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The empty variable store that goes with [`OVMF_SECBOOT_CODE`] (no keys: setup mode).
pub const OVMF_VARS_4M: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A network boot: a virtio NIC on QEMU user networking whose DHCP hands out `bootfile`,
/// with QEMU's TFTP server on `tftp_dir`. iPXE comes from QEMU's option ROM (package
/// `ipxe-qemu`) under both firmwares.
#[derive(Debug, Clone)]
pub struct NetBoot {
    /// Served over TFTP at 10.0.2.2.
    pub tftp_dir: Option<PathBuf>,
    /// DHCP boot file: a TFTP path or a URL (e.g. `http://10.0.2.2:8080/boot.ipxe`).
    pub bootfile: String,
    /// The NIC's MAC address.
    pub mac: String,
}

/// A value inside a QEMU `-drive`/`-netdev` option list: commas are doubled.
fn qemu_opt(s: &str) -> String {
    s.replace(',', ",,")
}

/// What a captured run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Everything the serial console printed.
    pub log: String,
    /// The VM ended by itself (power off, reboot or panic) rather than by the timeout or
    /// [`Vm::max_boots`].
    pub exited: bool,
    /// Kernels that started (their `Linux version` banners on the console): the first
    /// boot, each reboot and each kexec.
    pub boots: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl Vm {
    /// A VM with the lab's defaults.
    pub fn new(kernel: &Path, initrd: &Path, accel: Accel) -> Self {
        Vm {
            kernel: kernel.to_path_buf(),
            initrd: Some(initrd.to_path_buf()),
            disks: Vec::new(),
            append: String::new(),
            accel,
            timeout: Duration::from_secs(120),
            memory_mb: 512,
            smp: 1,
            nic: None,
            firmware: Firmware::Bios,
            cdrom: None,
            netboot: None,
            tap: None,
            keep_writes: false,
            boot_disk: false,
            efi_vars: None,
            extra: Vec::new(),
            max_boots: None,
        }
    }

    /// The QEMU command line, without the console options.
    pub fn command(&self) -> Command {
        let mut c = match &self.tap {
            // `ip netns exec` execs QEMU: the child's PID is QEMU's, which the timeout kills.
            Some(t) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &t.netns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        let machine = match self.firmware {
            Firmware::Bios => "pc",
            Firmware::Uefi => "q35",
            Firmware::SecureBoot => "q35,smm=on",
        };
        c.args(["-machine", machine, "-accel", self.accel.name()]);
        match self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi => {
                c.args(["-bios", OVMF]);
            }
            Firmware::SecureBoot => {
                // The secure-boot build keeps the variables (the keys, the enforcing switch)
                // in flash that only SMM code may write; `-bios` has no variable store.
                let vars = self.efi_vars.as_deref().unwrap_or(Path::new(OVMF_VARS_4M));
                c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        qemu_opt(OVMF_SECBOOT_CODE)
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,snapshot=on,file={}",
                        qemu_opt(&vars.to_string_lossy())
                    ));
            }
        }
        c.args([
            "-m",
            &self.memory_mb.to_string(),
            "-smp",
            &self.smp.to_string(),
        ]);
        if self.max_boots.is_none() {
            c.arg("-no-reboot");
        }
        if let Some(t) = &self.tap {
            let model = match self.nic.as_deref() {
                None | Some("virtio") => "virtio-net-pci",
                Some(model) => model,
            };
            c.args(["-nic", "none", "-netdev"])
                .arg(format!(
                    "tap,id=tap0,ifname={},script=no,downscript=no",
                    qemu_opt(&t.ifname)
                ))
                .arg("-device")
                .arg(format!("{model},netdev=tap0"));
        } else {
            c.arg("-nic").arg(match self.nic.as_deref() {
                None => "none".to_string(),
                Some("virtio") => "user,model=virtio-net-pci".to_string(),
                Some(model) => format!("user,model={model}"),
            });
        }
        if let Some(iso) = &self.cdrom {
            c.arg("-drive")
                .arg(format!(
                    "file={},media=cdrom,readonly=on",
                    qemu_opt(&iso.to_string_lossy())
                ))
                .args(["-boot", "order=d"]);
        } else if let Some(nb) = &self.netboot {
            let mut netdev = format!("user,id=netboot0,bootfile={}", qemu_opt(&nb.bootfile));
            if let Some(dir) = &nb.tftp_dir {
                netdev.push_str(&format!(",tftp={}", qemu_opt(&dir.to_string_lossy())));
            }
            c.arg("-netdev").arg(netdev).arg("-device").arg(format!(
                "virtio-net-pci,netdev=netboot0,mac={},bootindex=0",
                qemu_opt(&nb.mac)
            ));
        } else if self.boot_disk {
            // The first disk boots (bootindex below), under both firmwares.
        } else {
            c.arg("-kernel").arg(&self.kernel);
            if let Some(i) = &self.initrd {
                c.arg("-initrd").arg(i);
            }
            c.arg("-append")
                .arg(format!("console=ttyS0 panic=-1 {}", self.append).trim_end());
        }
        let snapshot = if self.keep_writes { "off" } else { "on" };
        for (i, d) in self.disks.iter().enumerate() {
            if self.boot_disk && i == 0 {
                // bootindex needs the device spelled out; the same virtio-blk-pci disk.
                c.arg("-drive")
                    .arg(format!(
                        "file={},format=raw,if=none,id=boot0,snapshot={snapshot}",
                        qemu_opt(&d.to_string_lossy())
                    ))
                    .args(["-device", "virtio-blk-pci,drive=boot0,bootindex=0"]);
                continue;
            }
            c.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,snapshot={snapshot}",
                d.display()
            ));
        }
        c.args(&self.extra);
        c
    }

    /// Attaches `image` as a USB stick (usb-storage on an xHCI controller) that the
    /// firmware boots first; writes go to a snapshot.
    pub fn add_usb_stick(&mut self, image: &Path) {
        self.extra.extend([
            "-device".to_string(),
            "qemu-xhci,id=xhci".into(),
            "-drive".into(),
            format!(
                "if=none,id=stick,format=raw,snapshot=on,file={}",
                qemu_opt(&image.to_string_lossy())
            ),
            "-device".into(),
            "usb-storage,bus=xhci.0,drive=stick,bootindex=0".into(),
        ]);
    }

    /// Attaches `iso` as a CD-ROM on virtio-scsi that the firmware boots first (the QEMU
    /// module set drives it, unlike the machines' IDE or SATA CD-ROMs).
    pub fn add_scsi_cdrom(&mut self, iso: &Path) {
        self.extra.extend([
            "-device".to_string(),
            "virtio-scsi-pci,id=scsi0".into(),
            "-drive".into(),
            format!(
                "if=none,id=cd,media=cdrom,readonly=on,file={}",
                qemu_opt(&iso.to_string_lossy())
            ),
            "-device".into(),
            "scsi-cd,bus=scsi0.0,drive=cd,bootindex=0".into(),
        ]);
    }

    /// Runs with the serial console captured, killing QEMU at the timeout.
    pub fn run_captured(&self) -> crate::Result<Outcome> {
        self.spawn_captured(None)?.finish()
    }

    /// Starts the VM with the serial console captured and returns at once, so the host can
    /// act while the guest runs ([`Running`]); with `monitor`, QEMU's human monitor listens
    /// on that Unix socket (e.g. for `set_link`).
    pub fn spawn_captured(&self, monitor: Option<&Path>) -> crate::Result<Running> {
        let start = Instant::now();
        let monitor_arg = match monitor {
            Some(p) => format!("unix:{},server=on,wait=off", qemu_opt(&p.to_string_lossy())),
            None => "none".to_string(),
        };
        let mut child = self
            .command()
            .args([
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                &monitor_arg,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        // `LAB_CONSOLE_DIR=DIR`: each VM's console also goes to DIR/qemu-<pid>.log as it
        // comes, to follow a long scenario while it runs.
        let tee = std::env::var_os("LAB_CONSOLE_DIR").and_then(|dir| {
            let path = Path::new(&dir).join(format!("qemu-{}.log", child.id()));
            fs::create_dir_all(&dir).ok()?;
            let file = fs::File::create(&path).ok()?;
            eprintln!("lab: console of this VM: {}", path.display());
            Some(Arc::new(Mutex::new(file)))
        });
        let mut readers = Vec::new();
        for mut pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            let tee = tee.clone();
            readers.push(std::thread::spawn(move || {
                use std::io::Write;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                    if let Some(t) = &tee {
                        let _ = t
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .write_all(&buf[..n]);
                    }
                }
            }));
        }
        Ok(Running {
            child,
            log,
            readers,
            start,
            timeout: self.timeout,
            max_boots: self.max_boots,
            monitor: monitor.map(Path::to_path_buf),
        })
    }

    /// Runs with the serial console on this terminal (Ctrl-A X quits), bounded by the timeout.
    pub fn run_interactive(&self) -> crate::Result<ExitStatus> {
        let start = Instant::now();
        let mut child = self
            .command()
            .arg("-nographic")
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if start.elapsed() >= self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the VM was stopped after {} s (--timeout)",
                    self.timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A VM started by [`Vm::spawn_captured`]; [`Running::finish`] waits for it (bounded by the
/// VM's timeout) and returns what it printed. Dropping it unfinished kills QEMU.
pub struct Running {
    child: std::process::Child,
    log: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    start: Instant,
    timeout: Duration,
    max_boots: Option<u32>,
    monitor: Option<PathBuf>,
}

impl Running {
    /// The console so far.
    pub fn log(&self) -> String {
        let bytes = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// Whether QEMU has exited.
    pub fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until the console shows `needle`; false when the VM ended or `within` passed
    /// first.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until && self.start.elapsed() < self.timeout {
            if self.log().contains(needle) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.log().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Sends one command to QEMU's human monitor and returns its answer.
    pub fn monitor(&self, command: &str) -> crate::Result<String> {
        use std::io::Write;
        let path = self
            .monitor
            .as_ref()
            .ok_or("the VM has no monitor socket")?;
        let mut s = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("monitor: {e}"))?;
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // The monitor prints a banner, echoes the command and answers; it never closes.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Stops the VM now (by its PID) and returns what it printed: for guests that end
    /// waiting, such as firmware at its boot menu. Like [`Running::finish`], it records the
    /// run's time for the test running it ([`crate::timings`]).
    pub fn stop(mut self) -> Outcome {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        let elapsed = self.start.elapsed();
        crate::timings::record(elapsed);
        let log = self.log();
        Outcome {
            boots: kernel_starts(&log),
            log,
            exited,
            elapsed,
        }
    }

    /// Waits for the VM to end (killing it at the timeout) and returns what it printed.
    pub fn finish(mut self) -> crate::Result<Outcome> {
        let exited = loop {
            let too_many_boots = self
                .max_boots
                .is_some_and(|m| kernel_starts(&self.log()) > m as usize);
            match self.child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if self.start.elapsed() >= self.timeout || too_many_boots => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break false;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("waiting for qemu: {e}"));
                }
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        let elapsed = self.start.elapsed();
        crate::timings::record(elapsed);
        let log = self.log();
        Ok(Outcome {
            boots: kernel_starts(&log),
            log,
            exited,
            elapsed,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // By PID: a test that panics mid-run must not leave its QEMU behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kernels that started according to a console log: the banner each prints first.
pub fn kernel_starts(log: &str) -> usize {
    log.matches("] Linux version ").count()
}

/// The kernel's time stamp of a console line, `[   12.345678] …`, in seconds.
pub fn log_time(line: &str) -> Option<f64> {
    line.trim_start()
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Guest seconds since kernel start printed by the demo init's marker line.
pub fn demo_init_uptime(log: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| l.split("TERRA-DEMO-INIT uptime=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

/// The guest's devices as the demo root printed them (`terra.demo=modaliases`: one
/// `TERRA-MODALIAS devices/<path> <alias>` line each), written as a sysfs tree under `sysfs`
/// for `terra initramfs --host-sysfs`. Returns how many devices there were; a path that
/// would leave `devices/` is refused.
pub fn modaliases_to_sysfs(log: &str, sysfs: &Path) -> crate::Result<usize> {
    let mut devices = 0;
    for l in log.lines() {
        let Some((path, alias)) = l
            .split("TERRA-MODALIAS ")
            .nth(1)
            .and_then(|r| r.trim().split_once(' '))
        else {
            continue;
        };
        if !path.starts_with("devices/") || path.contains("..") {
            return Err(format!("modalias path {path:?} is not under devices/"));
        }
        let file = sysfs.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&file, format!("{alias}\n"))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        devices += 1;
    }
    Ok(devices)
}

/// The boot report the demo init printed, as JSON.
pub fn boot_report(log: &str) -> Option<serde_json::Value> {
    let start = log.find("--- /run/terra/boot.json\n")? + "--- /run/terra/boot.json\n".len();
    let end = log[start..].find("--- end boot.json")? + start;
    serde_json::from_str(log[start..end].trim()).ok()
}
