//! Phase 3, devices: kernel modules by modalias (coldplug, then uevents) and block devices
//! identified by their superblocks. No udev, no blkid, no kmod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

use crate::config::BootConfig;
use crate::modindex::{IndexError, ModuleIndex};
use crate::probe::{self, Identity};

/// Why the devices phase could not start.
#[derive(Debug)]
pub enum DeviceError {
    /// The module index of the running kernel could not be read.
    Index(IndexError),
    /// The uevent socket could not be opened.
    Uevent(Errno),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Index(e) => write!(f, "module index: {e}"),
            DeviceError::Uevent(e) => write!(f, "cannot open the uevent netlink socket: {e}"),
        }
    }
}

impl std::error::Error for DeviceError {}

/// Where the devices phase looks; the real system's paths unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/lib/modules/<kver>`
    pub modules: PathBuf,
    /// `/sys` (coldplug reads `bus/*/devices/*/modalias` and `devices/system/cpu/modalias`)
    pub sys: PathBuf,
    /// `/sys/class/block`
    pub sys_block: PathBuf,
    /// `/dev`
    pub dev: PathBuf,
}

impl Paths {
    /// Paths of the running system for kernel release `kver`.
    pub fn system(kver: &str) -> Self {
        Paths {
            modules: Path::new(crate::layout::MODULES_DIR_ABS).join(kver),
            sys: "/sys".into(),
            sys_block: "/sys/class/block".into(),
            dev: "/dev".into(),
        }
    }
}

/// Module loading and the block devices seen so far.
pub struct Devices {
    paths: Paths,
    index: ModuleIndex,
    uevent: Option<OwnedFd>,
    /// Modules loaded (or found already loaded), in order.
    pub loaded: Vec<String>,
    /// Modules that failed, with the kernel's answer.
    pub failed: Vec<(String, String)>,
    attempted: HashSet<String>,
    modaliases: HashSet<String>,
    /// Modaliases no packed module serves (counted for the rescue report).
    pub unmatched: usize,
    /// Block devices identified so far, by kernel name.
    pub blocks: BTreeMap<String, Identity>,
    /// Block devices that could not be read, with the reason.
    pub unreadable: BTreeMap<String, String>,
    preloads: Vec<Preload>,
    /// Parameters for modules loaded with [`Devices::load_with`].
    params: HashMap<String, String>,
}

/// A thread loading modules in order; it yields each module with how its load went.
type Preload = std::thread::JoinHandle<Vec<(String, Result<(), String>)>>;

impl Devices {
    /// The devices phase as the boot runs it: the running kernel's packed modules, the
    /// builder's `modules.load` and the configured modules forced, and the root
    /// filesystem's module loaded on a thread when there is a CPU to spare.
    pub fn start_for_boot(cfg: &BootConfig) -> Result<Self, DeviceError> {
        let kver = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(crate::layout::MODULES_LOAD_ABS).unwrap_or_default();
        let mut forced = modules_load(&text);
        forced.extend(cfg.modules.iter().cloned());
        // With one CPU a parallel load only competes with finding the disk; with more it
        // hides the root filesystem module's load time behind device discovery.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let preload = (cpus > 1).then(|| cfg.expected_fs_module());
        Devices::start(Paths::system(&kver), &forced, preload.as_deref())
    }

    /// Binds the uevent socket first (so nothing that appears during coldplug is missed),
    /// starts loading `preload` on a thread, then loads the forced modules and coldplugs.
    pub fn start(
        paths: Paths,
        forced: &[String],
        preload: Option<&str>,
    ) -> Result<Self, DeviceError> {
        let uevent = open_uevent_socket().map_err(DeviceError::Uevent)?;
        let index = ModuleIndex::load(&paths.modules).map_err(DeviceError::Index)?;
        let mut devices = Devices {
            paths,
            index,
            uevent: Some(uevent),
            loaded: Vec::new(),
            failed: Vec::new(),
            attempted: HashSet::new(),
            modaliases: HashSet::new(),
            unmatched: 0,
            blocks: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            preloads: Vec::new(),
            params: HashMap::new(),
        };
        if let Some(p) = preload {
            devices.preload(p);
        }
        for m in forced {
            devices.load(m);
        }
        devices.coldplug();
        Ok(devices)
    }

    /// Loads a module (by name or alias) with its dependencies; failures are recorded, not fatal:
    /// a missing driver shows up later as a device that never appears, which is what the
    /// rescue report explains.
    pub fn load(&mut self, name: &str) -> bool {
        let candidates = self.index.resolve(name);
        if candidates.is_empty() {
            if self.index.is_builtin(name) {
                return true;
            }
            if self.attempted.insert(name.to_string()) {
                self.failed
                    .push((name.to_string(), "not in the initramfs".to_string()));
            }
            return false;
        }
        let mut any = false;
        for module in candidates {
            any |= self.load_module(&module);
        }
        any
    }

    /// Loads a module like [`Devices::load`], the module itself (not its dependencies)
    /// with these parameters (`finit_module`'s `param_values`, e.g. `max_bonds=0`).
    pub fn load_with(&mut self, name: &str, params: &str) -> bool {
        if !params.is_empty() {
            for m in self.index.resolve(name) {
                self.params.insert(m, params.to_string());
            }
        }
        self.load(name)
    }

    fn load_module(&mut self, module: &str) -> bool {
        let order = match self.index.load_order(module) {
            Ok(o) => o,
            Err(e) => {
                self.failed.push((module.to_string(), e.to_string()));
                return false;
            }
        };
        let mut ok = true;
        for m in order {
            if !self.attempted.insert(m.clone()) {
                ok &= self.loaded.contains(&m);
                continue;
            }
            let Some(rel) = self.index.path(&m) else {
                continue;
            };
            let path = self.paths.modules.join(rel);
            let start = Instant::now();
            match insmod(&path, self.params.get(&m).map_or("", String::as_str)) {
                Ok(()) => {
                    log::debug!(
                        "loaded {m} in {:.1} ms",
                        start.elapsed().as_secs_f64() * 1000.0
                    );
                    self.loaded.push(m);
                }
                Err(e) => {
                    // Soft dependencies such as crc32c_intel may refuse this CPU; the
                    // module that needs one still loads if another provider did.
                    log::debug!("module {m}: {e}");
                    self.failed.push((m, e));
                    ok = false;
                }
            }
        }
        ok || self.loaded.iter().any(|l| l == module)
    }

    /// Starts loading `name` (a module or alias, with its load order) on a thread of its own,
    /// so that a slow module — btrfs takes about a second to load under TCG — loads while
    /// the devices it will mount are still being found. Modules it takes on are skipped by
    /// [`Devices::load`]; [`Devices::finish_preloads`] waits for them.
    pub fn preload(&mut self, name: &str) {
        let mut jobs = Vec::new();
        for module in self.index.resolve(name) {
            for m in self.index.load_order(&module).unwrap_or_default() {
                if let Some(rel) = self.index.path(&m) {
                    if self.attempted.insert(m.clone()) {
                        jobs.push((m, self.paths.modules.join(rel)));
                    }
                }
            }
        }
        if jobs.is_empty() {
            return;
        }
        log::debug!("preloading {name}");
        self.preloads.push(std::thread::spawn(move || {
            jobs.into_iter()
                .map(|(m, path)| {
                    let start = Instant::now();
                    let r = insmod(&path, "");
                    log::debug!(
                        "preloaded {m} in {:.1} ms",
                        start.elapsed().as_secs_f64() * 1000.0
                    );
                    (m, r)
                })
                .collect()
        }));
    }

    /// Waits for the modules started by [`Devices::preload`] and records how they went.
    pub fn finish_preloads(&mut self) {
        for handle in std::mem::take(&mut self.preloads) {
            // With panic=abort a panicking thread ends the process, so join only fails in tests.
            for (m, result) in handle.join().unwrap_or_default() {
                match result {
                    Ok(()) => self.loaded.push(m),
                    Err(e) => {
                        log::debug!("module {m}: {e}");
                        self.failed.push((m, e));
                    }
                }
            }
        }
    }

    /// Devices on a bus that have a modalias, no driver bound, and no packed module for
    /// them: (the device's directory under `/sys/bus/<bus>/devices`, its modalias). Read
    /// when the boot fails, to name what is missing.
    pub fn driverless(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for dir in bus_devices(&self.paths.sys) {
            if dir.join("driver").exists() {
                continue;
            }
            let Ok(alias) = fs::read_to_string(dir.join("modalias")) else {
                continue;
            };
            let alias = alias.trim();
            if !alias.is_empty() && self.index.resolve(alias).is_empty() {
                out.push((dir, alias.to_string()));
            }
        }
        out.sort();
        out
    }

    /// Loads modules for every modalias of a device on a bus.
    pub fn coldplug(&mut self) {
        let mut aliases = Vec::new();
        collect_modaliases(&self.paths.sys, &mut aliases);
        for alias in aliases {
            self.on_modalias(&alias);
        }
    }

    fn on_modalias(&mut self, alias: &str) {
        if !self.modaliases.insert(alias.to_string()) {
            return;
        }
        if self.index.resolve(alias).is_empty() {
            self.unmatched += 1;
            return;
        }
        log::debug!("modalias {alias}");
        self.load(alias);
    }

    /// Handles uevents until `timeout` passes without one, loading modules for new devices.
    pub fn pump(&mut self, timeout: Duration) {
        let Some(sock) = self.uevent.take() else {
            std::thread::sleep(timeout);
            return;
        };
        let mut buf = vec![0u8; 8192];
        let mut wait = timeout;
        loop {
            let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) if n > 0 => {}
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
            // Drain without blocking; a burst of events comes when a bus driver loads.
            loop {
                match recv(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    &mut buf,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(n) => {
                        if let Some(alias) = uevent_modalias(buf.get(..n).unwrap_or_default()) {
                            self.on_modalias(&alias);
                        }
                    }
                    // ENOBUFS: the kernel dropped events; a coldplug walk catches up.
                    Err(Errno::ENOBUFS) => self.coldplug(),
                    Err(_) => break,
                }
            }
            wait = Duration::ZERO;
        }
        self.uevent = Some(sock);
    }

    /// Probes block devices not yet identified.
    pub fn scan_blocks(&mut self) {
        let Ok(entries) = fs::read_dir(&self.paths.sys_block) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !self.blocks.contains_key(n))
            .collect();
        names.sort();
        for name in names {
            match probe::identify(&name, &self.paths.dev, &self.paths.sys_block) {
                Ok(id) => {
                    log::debug!("block {name}: {}", describe(&id));
                    self.unreadable.remove(&name);
                    self.blocks.insert(name, id);
                }
                // Not ready yet (e.g. an empty CD-ROM drive): try again on the next scan.
                Err(e) => {
                    self.unreadable.insert(name, e.to_string());
                }
            }
        }
    }

    /// Waits until a block device satisfies `want`, handling uevents meanwhile.
    pub fn wait_for_block(
        &mut self,
        deadline: Instant,
        want: impl Fn(&str, &Identity) -> bool,
    ) -> Option<(String, Identity)> {
        loop {
            self.scan_blocks();
            if let Some((n, id)) = self.blocks.iter().find(|(n, id)| want(n, id)) {
                return Some((n.clone(), id.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            crate::early::reap_children();
            self.pump((deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// The block devices seen, one per line, for logs and the rescue report.
    pub fn block_summary(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .blocks
            .iter()
            .map(|(n, id)| format!("{n}: {}", describe(id)))
            .collect();
        out.extend(self.unreadable.iter().map(|(n, e)| format!("{n}: {e}")));
        out
    }

    /// The packed module index.
    pub fn index(&self) -> &ModuleIndex {
        &self.index
    }
}

/// The module names of a `modules.load` file: one per line, `#` comments and blank lines
/// skipped.
pub fn modules_load(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// "btrfs LABEL=os UUID=…" style description of an identity.
pub fn describe(id: &Identity) -> String {
    let mut parts = vec![id.fstype.map_or("unknown", |t| t.as_str()).to_string()];
    for (k, v) in [
        ("LABEL", &id.label),
        ("UUID", &id.uuid),
        ("PARTLABEL", &id.partlabel),
        ("PARTUUID", &id.partuuid),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}

fn insmod(path: &Path, params: &str) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let params = std::ffi::CString::new(params)
        .map_err(|_| format!("{}: parameters with a NUL byte", path.display()))?;
    match finit_module(&file, &params, ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("finit_module {}: {e}", path.display())),
    }
}

fn open_uevent_socket() -> Result<OwnedFd, Errno> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    // Multicast group 1 carries the kernel's own events.
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &NetlinkAddr::new(0, 1),
    )?;
    // Module loads emit bursts; a larger buffer avoids ENOBUFS (best effort).
    let _ = setsockopt(&sock, sockopt::RcvBufForce, &(4 << 20));
    Ok(sock)
}

/// MODALIAS of an `add` uevent (`add@/devpath\0KEY=VALUE\0…`).
pub fn uevent_modalias(msg: &[u8]) -> Option<String> {
    let mut fields = msg.split(|&b| b == 0);
    let header = fields.next()?;
    if !header.starts_with(b"add@") {
        return None;
    }
    fields
        .filter_map(|f| f.strip_prefix(b"MODALIAS="))
        .find_map(|v| std::str::from_utf8(v).ok().map(str::to_string))
}

/// Every device directory under `sys/bus/*/devices/` (symlinks into /sys/devices).
fn bus_devices(sys: &Path) -> Vec<PathBuf> {
    fs::read_dir(sys.join("bus"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|bus| {
            fs::read_dir(bus.path().join("devices"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|dev| dev.path())
        })
        .collect()
}

/// Collects the modalias of every device on a bus, plus the CPU's (which hangs off the
/// cpu subsystem itself). Every device that has a modalias is on a bus, and the bus lists
/// are a few dozen symlinks, where a walk of /sys/devices visits thousands of entries
/// (about 250 ms under TCG).
fn collect_modaliases(sys: &Path, out: &mut Vec<String>) {
    let mut files = vec![sys.join("devices/system/cpu/modalias")];
    files.extend(bus_devices(sys).into_iter().map(|d| d.join("modalias")));
    for file in files {
        if let Ok(s) = fs::read_to_string(&file) {
            let s = s.trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_skips_comments_and_blank_lines() {
        assert_eq!(
            modules_load("# forced\nvirtio_blk\n\n  e1000  \n#x\n"),
            ["virtio_blk", "e1000"]
        );
    }

    #[test]
    fn uevent_add_with_modalias() {
        let msg = b"add@/devices/pci0000:00/0000:00:04.0/virtio1\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio1\0SUBSYSTEM=virtio\0MODALIAS=virtio:d00000002v00001AF4\0SEQNUM=812\0";
        assert_eq!(
            uevent_modalias(msg).as_deref(),
            Some("virtio:d00000002v00001AF4")
        );
        let remove = b"remove@/devices/x\0ACTION=remove\0MODALIAS=virtio:d00000002v00001AF4\0";
        assert_eq!(uevent_modalias(remove), None);
        assert_eq!(uevent_modalias(b"add@/module/btrfs\0ACTION=add\0"), None);
        assert_eq!(uevent_modalias(b""), None);
    }

    #[test]
    fn coldplug_reads_bus_devices_and_the_cpu() {
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        let dev = s.join("devices/pci0000:00/0000:00:04.0");
        fs::create_dir_all(&dev).unwrap();
        fs::write(
            dev.join("modalias"),
            "pci:v00001AF4d00001001sv0sd0bc01sc00i00\n",
        )
        .unwrap();
        let nodev = s.join("devices/pci0000:00/0000:00:00.0");
        fs::create_dir_all(&nodev).unwrap();
        fs::create_dir_all(s.join("bus/pci/devices")).unwrap();
        std::os::unix::fs::symlink(&dev, s.join("bus/pci/devices/0000:00:04.0")).unwrap();
        std::os::unix::fs::symlink(&nodev, s.join("bus/pci/devices/0000:00:00.0")).unwrap();
        fs::create_dir_all(s.join("devices/system/cpu")).unwrap();
        fs::write(
            s.join("devices/system/cpu/modalias"),
            "cpu:type:x86,ven0000fam0006mod003F:feature:,0000\n",
        )
        .unwrap();
        let mut out = Vec::new();
        collect_modaliases(s, &mut out);
        assert_eq!(
            out,
            vec![
                "cpu:type:x86,ven0000fam0006mod003F:feature:,0000",
                "pci:v00001AF4d00001001sv0sd0bc01sc00i00"
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn uevent_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = uevent_modalias(&bytes);
        }
    }
}
