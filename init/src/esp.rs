//! The EFI system partition of a bootable disk (`[[groups]] mbr = true`, ARCHITECTURE.md,
//! "ESP and bootloader"): GRUB's files, two slots of kernel and initramfs, and the GRUB
//! config that names one of them. `terra install` fills it, and every change of the default
//! version (`terra bless|rollback`, the booted system's `bless`) brings it up to date with
//! [`sync`], so the firmware boots the default's kernel without `-kernel`/`-initrd`.
//!
//! Layout on the ESP (FAT):
//!
//! ```text
//! /EFI/BOOT/BOOTX64.EFI          GRUB for UEFI (the removable-media path)
//! /terra/a/{vmlinuz,initramfs.img}
//! /terra/b/{vmlinuz,initramfs.img}
//! /terra/grub.cfg                one entry: the slot in use
//! /terra/grub.cfg.new            only between two steps of a sync
//! /terra/entry                   version, release, slot and command line, for people
//! ```
//!
//! Crash safety: the files GRUB reads are `grub.cfg`, or `grub.cfg.new` when `grub.cfg`
//! is missing (GRUB's embedded config says so), and the slot the one it names. A sync
//! writes only into the other slot, syncs it, writes `grub.cfg.new`, syncs it, then renames
//! it over `grub.cfg` and syncs the directory. Until the rename GRUB reads the old config
//! and the untouched old slot; after it, the new config and a slot that was complete
//! before the config could name it. FAT has no journal, so a power cut inside the rename
//! may leave no `grub.cfg`: then `grub.cfg.new` is complete, and GRUB (and the next sync,
//! which finishes the rename first) uses it. This code never runs in stage0's boot path.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::bootstate::{self, INITRAMFS_FILE, KERNEL_FILE, STATE_DIR};

/// Inside [`STATE_DIR`]: the PARTUUID of the disk's ESP, written by `terra install`. Its
/// presence means "this disk boots from its ESP: keep the ESP on the default".
pub const ESP_FILE: &str = "esp";
/// Inside [`STATE_DIR`]: the kernel command line of the ESP's GRUB entry (one line).
pub const CMDLINE_FILE: &str = "cmdline";
/// GPT partition name of the ESP.
pub const ESP_PARTLABEL: &str = "terra-esp";
/// GPT partition name of the btrfs partition beside it.
pub const ROOT_PARTLABEL: &str = "terra-root";
/// GPT partition name of the BIOS boot partition (GRUB's core.img).
pub const BIOS_PARTLABEL: &str = "terra-bios";
/// The UEFI loader, at the path firmware boots from removable media (no NVRAM entry needed).
pub const EFI_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";
/// Terra's directory on the ESP.
pub const DIR: &str = "terra";
/// The GRUB config GRUB reads, inside [`DIR`].
pub const GRUB_CFG: &str = "grub.cfg";
/// The config being written, inside [`DIR`]; GRUB reads it when [`GRUB_CFG`] is missing.
pub const GRUB_CFG_NEW: &str = "grub.cfg.new";
/// What the ESP boots, inside [`DIR`] (see [`Entry`]).
pub const ENTRY_FILE: &str = "entry";
/// The two slots, directories inside [`DIR`].
pub const SLOTS: [&str; 2] = ["a", "b"];

/// What an ESP boots: the version, its kernel release, the slot holding its files and the
/// kernel command line. `grub.cfg` carries it in its first lines (the truth, since it is
/// what GRUB reads); [`ENTRY_FILE`] is a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The default version.
    pub version: String,
    /// Its kernel's release.
    pub release: String,
    /// `a` or `b`.
    pub slot: String,
    /// The kernel arguments.
    pub cmdline: String,
}

impl Entry {
    /// `key=value` lines.
    pub fn render(&self) -> String {
        format!(
            "version={}\nrelease={}\nslot={}\ncmdline={}\n",
            self.version, self.release, self.slot, self.cmdline
        )
    }

    /// Reads [`Entry::render`]'s lines, also as `# `-comments of a grub.cfg; None when a
    /// key is missing or the slot is not one of [`SLOTS`].
    pub fn parse(text: &str) -> Option<Entry> {
        let get = |key: &str| {
            text.lines().find_map(|l| {
                let l = l.strip_prefix("# ").unwrap_or(l);
                l.strip_prefix(key)?.strip_prefix('=').map(str::to_string)
            })
        };
        let slot = get("slot").filter(|s| SLOTS.contains(&s.as_str()))?;
        Some(Entry {
            version: get("version")?,
            release: get("release")?,
            slot,
            cmdline: get("cmdline")?,
        })
    }
}

/// The GRUB config of `entry`: serial and VGA consoles, no delay, one menu entry titled
/// with the version, booting the slot's kernel and initramfs. The entry's lines come first
/// What every Terra GRUB config starts with (the ESP's and `terra iso`'s): the console
/// on VGA and the first serial port, the one entry, no menu delay.
pub const GRUB_PREAMBLE: &str = "serial --unit=0 --speed=115200\n\
terminal_input console serial\n\
terminal_output console serial\n\
set default=0\n\
set timeout=0\n\
\n";

/// as comments, so the config says itself what it boots.
pub fn grub_cfg(entry: &Entry) -> String {
    let mut s = String::from("# Written by Terra (terra install, terra bless|rollback, bless).\n");
    for line in entry.render().lines() {
        s.push_str("# ");
        s.push_str(line);
        s.push('\n');
    }
    let slot = &entry.slot;
    // The version name is a plain subvolume name; the quotes keep GRUB from reading
    // anything in the title.
    let title = format!("Terra {} ({})", entry.version, entry.release).replace('\'', "");
    s.push_str(GRUB_PREAMBLE);
    s.push_str(&format!(
        "menuentry '{title}' {{\n\
         \x20   linux /{DIR}/{slot}/{KERNEL_FILE} {}\n\
         \x20   initrd /{DIR}/{slot}/{INITRAMFS_FILE}\n\
         }}\n",
        entry.cmdline
    ));
    s
}

/// GRUB's embedded early config (in both GRUB images): find the ESP by its FAT volume id
/// (`XXXX-XXXX`) and read [`GRUB_CFG`], or [`GRUB_CFG_NEW`] when a power cut left only
/// that one.
pub fn early_config(fat_uuid: &str) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {fat_uuid}\n\
         set prefix=($root)/{DIR}\n\
         if [ -f ($root)/{DIR}/{GRUB_CFG} ]; then\n\
         \x20   configfile ($root)/{DIR}/{GRUB_CFG}\n\
         else\n\
         \x20   configfile ($root)/{DIR}/{GRUB_CFG_NEW}\n\
         fi\n"
    )
}

/// A step of [`sync_with`] after which the test hook runs (kill tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The new slot's kernel and initramfs are written and synced.
    SlotWritten,
    /// `grub.cfg.new` is written and synced.
    ConfigStaged,
    /// `grub.cfg.new` has been renamed over `grub.cfg`.
    ConfigRenamed,
}

impl Step {
    /// The name `TERRA_CRASH_AT` uses.
    pub fn name(self) -> &'static str {
        match self {
            Step::SlotWritten => "esp-slot",
            Step::ConfigStaged => "esp-staged",
            Step::ConfigRenamed => "esp-renamed",
        }
    }
}

/// Why the ESP could not be found, mounted or updated; each names the file, partition or
/// device.
#[derive(Debug)]
pub enum EspError {
    /// The version has no kernel directory, and the install kept no base kernel.
    NoKernel {
        /// The version.
        version: String,
        /// The top level searched.
        top: PathBuf,
    },
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// A file on the ESP could not be written, synced or renamed.
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// No block device has the partition UUID `.terra/esp` records.
    NotFound {
        /// The PARTUUID.
        partuuid: String,
        /// Where it was recorded.
        record: PathBuf,
    },
    /// Mounting the ESP failed.
    Mount {
        /// The partition.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// The kernel's answer.
        err: nix::Error,
    },
}

impl fmt::Display for EspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EspError::NoKernel { version, top } => write!(
                f,
                "version {version} has no kernel ({}/{version}/{} or {}/{STATE_DIR}/{}): \
                 nothing for the ESP to boot",
                top.display(),
                bootstate::KERNEL_DIR,
                top.display(),
                bootstate::BASE_KERNEL_DIR
            ),
            EspError::Read { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            EspError::Write { path, err } => {
                write!(f, "cannot write the ESP's {}: {err}", path.display())
            }
            EspError::NotFound { partuuid, record } => write!(
                f,
                "no block device has PARTUUID {partuuid} (the ESP {} names)",
                record.display()
            ),
            EspError::Mount {
                device,
                mountpoint,
                err,
            } => write!(
                f,
                "cannot mount the ESP {} (vfat) at {}: {err}",
                device.display(),
                mountpoint.display()
            ),
        }
    }
}

impl std::error::Error for EspError {}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> EspError + '_ {
    move |err| EspError::Read {
        path: path.to_path_buf(),
        err,
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> EspError + '_ {
    move |err| EspError::Write {
        path: path.to_path_buf(),
        err,
    }
}

/// The kernel command line `terra install` kept on the top level `top`.
pub fn cmdline(top: &Path) -> Result<String, EspError> {
    let path = top.join(STATE_DIR).join(CMDLINE_FILE);
    let text = fs::read_to_string(&path).map_err(read_err(&path))?;
    Ok(text.trim().to_string())
}

/// The ESP's PARTUUID that `terra install` recorded on `top`; None on a disk that does not
/// boot from an ESP.
pub fn recorded_partuuid(top: &Path) -> Result<Option<String>, EspError> {
    let path = top.join(STATE_DIR).join(ESP_FILE);
    match fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_ascii_lowercase())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(EspError::Read { path, err }),
    }
}

/// The file operations a sync needs, on paths relative to the ESP's root (`terra/grub.cfg`).
/// Each write is durable when it returns. [`MountedEsp`] works on a mounted ESP (the
/// booted system's `bless`); the builder drives mtools on the partition, so a build host
/// needs no vfat driver.
pub trait EspFiles {
    /// The file's bytes; None when it does not exist.
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, EspError>;
    /// The file's length; None when it does not exist.
    fn len(&mut self, rel: &str) -> Result<Option<u64>, EspError>;
    /// Creates the directory and its parents when missing.
    fn mkdir_all(&mut self, rel: &str) -> Result<(), EspError>;
    /// Writes `rel` with the contents of the host file `src`, replacing it, and syncs it.
    fn copy_in(&mut self, src: &Path, rel: &str) -> Result<(), EspError>;
    /// Writes `rel` with `data`, replacing it, and syncs it.
    fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), EspError>;
    /// Renames `from` over `to` and syncs the directory.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError>;
}

/// An ESP mounted at a directory.
#[derive(Debug, Clone)]
pub struct MountedEsp(pub PathBuf);

impl EspFiles for MountedEsp {
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, EspError> {
        let path = self.0.join(rel);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(EspError::Read { path, err }),
        }
    }

    fn len(&mut self, rel: &str) -> Result<Option<u64>, EspError> {
        let path = self.0.join(rel);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(EspError::Read { path, err }),
        }
    }

    fn mkdir_all(&mut self, rel: &str) -> Result<(), EspError> {
        let path = self.0.join(rel);
        fs::create_dir_all(&path).map_err(write_err(&path))
    }

    fn copy_in(&mut self, src: &Path, rel: &str) -> Result<(), EspError> {
        let dst = self.0.join(rel);
        let mut from = File::open(src).map_err(read_err(src))?;
        let mut to = File::create(&dst).map_err(write_err(&dst))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf).map_err(read_err(src))?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).map_err(write_err(&dst))?;
        }
        to.sync_all().map_err(write_err(&dst))?;
        sync_parent(&dst)
    }

    fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), EspError> {
        let path = self.0.join(rel);
        let mut f = File::create(&path).map_err(write_err(&path))?;
        f.write_all(data).map_err(write_err(&path))?;
        f.sync_all().map_err(write_err(&path))?;
        sync_parent(&path)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError> {
        let dst = self.0.join(to);
        fs::rename(self.0.join(from), &dst).map_err(write_err(&dst))?;
        sync_parent(&dst)
    }
}

fn sync_parent(path: &Path) -> Result<(), EspError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dir))
}

fn rel(parts: &[&str]) -> String {
    parts.join("/")
}

/// The entry the ESP boots: from `grub.cfg`, else from `grub.cfg.new` (what GRUB falls
/// back to).
pub fn current(esp: &mut dyn EspFiles) -> Result<Option<Entry>, EspError> {
    for name in [GRUB_CFG, GRUB_CFG_NEW] {
        if let Some(bytes) = esp.read(&rel(&[DIR, name]))? {
            return Ok(Entry::parse(&String::from_utf8_lossy(&bytes)));
        }
    }
    Ok(None)
}

/// Brings the ESP mounted at `esp` to the kernel of version `default` on the top level
/// `top` (see the module doc for the steps). Returns whether anything changed.
pub fn sync(top: &Path, esp: &Path, default: &str) -> Result<bool, EspError> {
    sync_with(
        top,
        &mut MountedEsp(esp.to_path_buf()),
        default,
        &mut |_| (),
    )
}

/// [`sync`] on any [`EspFiles`], calling `at` after each [`Step`] (the builder's
/// `TERRA_CRASH_AT` hook).
pub fn sync_with(
    top: &Path,
    esp: &mut dyn EspFiles,
    default: &str,
    at: &mut dyn FnMut(Step),
) -> Result<bool, EspError> {
    let kdir = bootstate::kernel_dir(top, default).ok_or_else(|| EspError::NoKernel {
        version: default.to_string(),
        top: top.to_path_buf(),
    })?;
    let release = bootstate::kernel_release(&kdir).ok_or_else(|| EspError::Read {
        path: kdir.join(bootstate::RELEASE_FILE),
        err: io::Error::new(io::ErrorKind::InvalidData, "empty"),
    })?;
    let cmdline = cmdline(top)?;
    let files = [KERNEL_FILE, INITRAMFS_FILE];
    esp.mkdir_all(DIR)?;
    let cfg = rel(&[DIR, GRUB_CFG]);
    let cfg_new = rel(&[DIR, GRUB_CFG_NEW]);

    // A power cut inside the last sync's rename: finish it before anything else, so the
    // config GRUB reads is never the one about to be rewritten.
    if esp.len(&cfg)?.is_none() && esp.len(&cfg_new)?.is_some() {
        esp.rename(&cfg_new, &cfg)?;
    }

    let live = current(esp)?;
    let wanted = |slot: &str| Entry {
        version: default.to_string(),
        release: release.clone(),
        slot: slot.to_string(),
        cmdline: cmdline.clone(),
    };
    if let Some(e) = &live {
        if *e == wanted(&e.slot) && slot_complete(esp, &kdir, &e.slot, &files)? {
            // Up to date; the copy for people may still be behind after a kill.
            let entry = rel(&[DIR, ENTRY_FILE]);
            if esp.read(&entry)?.as_deref() != Some(e.render().as_bytes()) {
                esp.write(&entry, e.render().as_bytes())?;
            }
            return Ok(false);
        }
    }
    let target = match live.as_ref().map(|e| e.slot.as_str()) {
        Some("a") => "b",
        _ => "a",
    };
    let new = wanted(target);
    esp.mkdir_all(&rel(&[DIR, target]))?;
    for name in files {
        esp.copy_in(&kdir.join(name), &rel(&[DIR, target, name]))?;
    }
    at(Step::SlotWritten);
    esp.write(&cfg_new, grub_cfg(&new).as_bytes())?;
    at(Step::ConfigStaged);
    esp.rename(&cfg_new, &cfg)?;
    at(Step::ConfigRenamed);
    // Not read by GRUB: written in place.
    esp.write(&rel(&[DIR, ENTRY_FILE]), new.render().as_bytes())?;
    Ok(true)
}

/// Whether the slot holds every kernel file at its full length (a killed copy is short).
fn slot_complete(
    esp: &mut dyn EspFiles,
    kdir: &Path,
    slot: &str,
    files: &[&str],
) -> Result<bool, EspError> {
    for name in files {
        let src = kdir.join(name);
        let want = fs::metadata(&src).map_err(read_err(&src))?.len();
        if esp.len(&rel(&[DIR, slot, name]))? != Some(want) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The block device whose PARTUUID is `partuuid`, probed with [`crate::probe::identify`]
/// under `sys_block` (normally `/sys/class/block`) and `dev` (`/dev`). With `within`
/// non-empty, only partitions of those disks (kernel names such as `loop3`, `vda`) count:
/// a copy of the same disk image attached elsewhere carries the same PARTUUID.
pub fn find_partition(
    partuuid: &str,
    sys_block: &Path,
    dev: &Path,
    within: &[String],
) -> Option<PathBuf> {
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| sys_block.join(n).join("partition").is_file())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        if !within.is_empty() {
            let parent = fs::canonicalize(sys_block.join(&name)).ok()?;
            let disk = parent.parent()?.file_name()?.to_str()?.to_string();
            if !within.contains(&disk) {
                return None;
            }
        }
        let id = crate::probe::identify(&name, dev, sys_block).ok()?;
        (id.partuuid.as_deref() == Some(partuuid)).then(|| dev.join(name.replace('!', "/")))
    })
}

/// Mounts the vfat partition `device` at `mountpoint`, runs `f` on it and unmounts. In
/// the booted system stage0 has loaded `vfat` and its `nls_*` modules before the switch
/// (`select.rs`); elsewhere the kernel's request_module does.
pub fn mount_esp<T>(
    device: &Path,
    mountpoint: &Path,
    f: impl FnOnce(&Path) -> Result<T, EspError>,
) -> Result<T, EspError> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    fs::create_dir_all(mountpoint).map_err(write_err(mountpoint))?;
    mount(
        Some(device),
        mountpoint,
        Some("vfat"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|err| EspError::Mount {
        device: device.to_path_buf(),
        mountpoint: mountpoint.to_path_buf(),
        err,
    })?;
    let out = f(mountpoint);
    // Everything written was synced file by file; a busy mount point is detached.
    if umount2(mountpoint, MntFlags::empty()).is_err() {
        let _ = umount2(mountpoint, MntFlags::MNT_DETACH);
    }
    out
}

/// Finds the ESP that `.terra/esp` on `top` names among the running system's block
/// devices, mounts it at `mountpoint`, runs `f` and unmounts. Ok(None) when the disk
/// records no ESP (it does not boot from one).
pub fn with_esp<T>(
    top: &Path,
    mountpoint: &Path,
    f: impl FnOnce(&Path) -> Result<T, EspError>,
) -> Result<Option<T>, EspError> {
    let Some(partuuid) = recorded_partuuid(top)? else {
        return Ok(None);
    };
    let device = find_partition(
        &partuuid,
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        &[],
    )
    .ok_or_else(|| EspError::NotFound {
        partuuid: partuuid.clone(),
        record: top.join(STATE_DIR).join(ESP_FILE),
    })?;
    mount_esp(&device, mountpoint, f).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top_with_kernel(t: &Path, version: &str, release: &str, kernel: &[u8]) {
        let k = t.join(version).join(bootstate::KERNEL_DIR);
        fs::create_dir_all(&k).unwrap();
        fs::write(k.join(KERNEL_FILE), kernel).unwrap();
        fs::write(k.join(INITRAMFS_FILE), [kernel, b"-initramfs"].concat()).unwrap();
        fs::write(k.join(bootstate::RELEASE_FILE), format!("{release}\n")).unwrap();
        fs::create_dir_all(t.join(STATE_DIR)).unwrap();
        fs::write(
            t.join(STATE_DIR).join(CMDLINE_FILE),
            "console=ttyS0 root=UUID=x\n",
        )
        .unwrap();
    }

    #[test]
    fn entries_round_trip_through_grub_cfg() {
        let e = Entry {
            version: "v2".into(),
            release: "6.1.0-9-amd64".into(),
            slot: "b".into(),
            cmdline: "console=ttyS0 root=UUID=x".into(),
        };
        let cfg = grub_cfg(&e);
        assert_eq!(Entry::parse(&cfg), Some(e.clone()));
        assert_eq!(Entry::parse(&e.render()), Some(e));
        assert!(cfg.contains("linux /terra/b/vmlinuz console=ttyS0 root=UUID=x\n"));
        assert!(cfg.contains("initrd /terra/b/initramfs.img\n"));
        assert!(cfg.contains("menuentry 'Terra v2 (6.1.0-9-amd64)'"));
        assert_eq!(
            Entry::parse("version=a\nrelease=b\nslot=c\ncmdline=\n"),
            None
        );
    }

    #[test]
    fn sync_alternates_slots_and_does_nothing_when_current() {
        let t = tempfile::tempdir().unwrap();
        let (top, esp) = (t.path().join("top"), t.path().join("esp"));
        top_with_kernel(&top, "os", "6.1.0-1", b"kernel one");
        top_with_kernel(&top, "v2", "6.1.0-2", b"kernel two, longer");
        assert!(sync(&top, &esp, "os").unwrap());
        assert_eq!(
            current(&mut MountedEsp(esp.clone())).unwrap().unwrap().slot,
            "a"
        );
        assert!(!sync(&top, &esp, "os").unwrap());
        assert!(sync(&top, &esp, "v2").unwrap());
        let e = current(&mut MountedEsp(esp.clone())).unwrap().unwrap();
        assert_eq!((e.version.as_str(), e.slot.as_str()), ("v2", "b"));
        assert_eq!(
            fs::read(esp.join("terra/b/vmlinuz")).unwrap(),
            b"kernel two, longer"
        );
        assert_eq!(
            fs::read_to_string(esp.join("terra/entry")).unwrap(),
            e.render()
        );
        // Back to os: into slot a again, never the slot grub.cfg names.
        assert!(sync(&top, &esp, "os").unwrap());
        assert_eq!(
            current(&mut MountedEsp(esp.clone())).unwrap().unwrap().slot,
            "a"
        );
        assert!(!esp.join("terra/grub.cfg.new").exists());
    }

    #[test]
    fn a_torn_slot_or_a_lost_config_is_repaired() {
        let t = tempfile::tempdir().unwrap();
        let (top, esp) = (t.path().join("top"), t.path().join("esp"));
        top_with_kernel(&top, "os", "6.1.0-1", b"kernel one");
        sync(&top, &esp, "os").unwrap();
        fs::write(esp.join("terra/a/initramfs.img"), b"short").unwrap();
        assert!(sync(&top, &esp, "os").unwrap());
        assert_eq!(
            current(&mut MountedEsp(esp.clone())).unwrap().unwrap().slot,
            "b"
        );
        // A power cut inside the rename: only grub.cfg.new is left.
        fs::rename(esp.join("terra/grub.cfg"), esp.join("terra/grub.cfg.new")).unwrap();
        assert_eq!(
            current(&mut MountedEsp(esp.clone())).unwrap().unwrap().slot,
            "b"
        );
        assert!(!sync(&top, &esp, "os").unwrap());
        assert!(esp.join("terra/grub.cfg").is_file());
    }

    #[test]
    fn a_version_without_kernel_is_named() {
        let t = tempfile::tempdir().unwrap();
        let e = sync(t.path(), &t.path().join("esp"), "v9").unwrap_err();
        assert!(e.to_string().contains("version v9 has no kernel"), "{e}");
    }

    /// A fake /sys/class/block and /dev: disk `vdx` (a real GPT made by sfdisk) with
    /// partition 2, the way sysfs nests a partition in its disk.
    #[test]
    fn the_esp_is_found_by_partuuid_on_the_disks_allowed() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let t = tempfile::tempdir().unwrap();
        let (dev, sys) = (t.path().join("dev"), t.path().join("sys"));
        fs::create_dir_all(&dev).unwrap();
        let disk = dev.join("vdx");
        File::create(&disk).unwrap().set_len(8 << 20).unwrap();
        let uuid = "3b1c5d2e-8f4a-4b6c-9d0e-1f2a3b4c5d6e";
        let mut sfdisk = Command::new("sfdisk")
            .args(["--quiet"])
            .arg(&disk)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sfdisk (util-linux's fdisk package)");
        write!(
            sfdisk.stdin.take().unwrap(),
            "label: gpt\nstart=2048, size=2048\nstart=4096, size=4096, uuid={uuid}, name={ESP_PARTLABEL}\n"
        )
        .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        File::create(dev.join("vdx2"))
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        fs::create_dir_all(sys.join("vdx/vdx2")).unwrap();
        fs::write(sys.join("vdx/vdx2/partition"), "2\n").unwrap();
        std::os::unix::fs::symlink(sys.join("vdx/vdx2"), sys.join("vdx2")).unwrap();

        let found = find_partition(uuid, &sys, &dev, &[]);
        assert_eq!(found, Some(dev.join("vdx2")));
        assert_eq!(
            find_partition(uuid, &sys, &dev, &["vdx".to_string()]),
            Some(dev.join("vdx2"))
        );
        assert_eq!(find_partition(uuid, &sys, &dev, &["vdy".to_string()]), None);
        assert_eq!(
            find_partition("00000000-0000-4000-8000-000000000000", &sys, &dev, &[]),
            None
        );
    }

    #[test]
    fn early_config_falls_back_to_the_new_config() {
        let c = early_config("abcd-1234");
        assert!(c.contains("--fs-uuid --set=root abcd-1234"));
        assert!(c.contains("configfile ($root)/terra/grub.cfg.new"));
    }
}
