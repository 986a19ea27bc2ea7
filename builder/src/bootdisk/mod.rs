//! Disks that boot on their own (`[[groups]] mbr = true`, ARCHITECTURE.md "ESP and
//! bootloader"): the GPT of the root group's first disk, GRUB for BIOS and UEFI, the FAT
//! ESP, and keeping the ESP on the default version ([`terra_init::esp`] holds the ESP's
//! layout and its sync, shared with the booted system's `bless`).
//!
//! GRUB, because one bootloader from the distribution's packages (grub-pc-bin,
//! grub-efi-amd64-bin) serves both firmwares, reads the FAT ESP under both, and loads a
//! Linux kernel and initramfs from it with a plain config; `terra iso` already builds its
//! images the same way. Both images are made with `grub-mkimage` with every module built in
//! and an early config that finds the ESP by its FAT volume id, so GRUB needs no module
//! directory and no NVRAM entry.
//!
//! BIOS: GRUB's `boot.img` goes into the MBR's first 440 bytes (the disk signature and the
//! protective partition table after them are kept) and core.img into the BIOS boot
//! partition. grub-bios-setup would do it, but it is not in grub-pc-bin and it probes the
//! host's devices; the two fields it patches are written here instead (see
//! [`grub::patch_bios_boot`]), which also keeps the bytes a function of the inputs.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use terra_init::bootstate::STATE_DIR;
use terra_init::esp::{
    self, EspError, EspFiles, BIOS_PARTLABEL, CMDLINE_FILE, EFI_LOADER, ESP_FILE, ESP_PARTLABEL,
    ROOT_PARTLABEL,
};

use crate::bootfiles::{BootFilesError, BootInitramfs, FoundKernel};
use crate::tool::{self, Need, ToolError};

mod grub;
mod mtools;

pub use grub::{grub_images, install_bios, patch_bios_boot, MBR_CODE_BYTES};
pub use mtools::MtoolsEsp;

/// GPT type of the BIOS boot partition (GRUB's core.img).
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
/// GPT type of the EFI system partition.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type of a Linux filesystem (the btrfs partition).
pub const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Size of the BIOS boot partition, MiB (core.img is about 150 KiB).
pub const BIOS_BOOT_MIB: u64 = 1;
/// Size of the ESP, MiB: two slots of kernel and initramfs with room to grow.
pub const ESP_MIB: u64 = 256;
/// The least the btrfs partition may get, MiB (mkfs.btrfs needs about 110).
pub const MIN_ROOT_MIB: u64 = 128;
/// Where the first partition starts, MiB (alignment; the GPT fits before it).
const FIRST_MIB: u64 = 1;

/// Kernel consoles of an installed disk, as `terra iso` writes them.
pub use crate::iso::CONSOLE_ARGS;

/// The identifiers of a bootable disk, derived from one seed (the root filesystem's UUID),
/// so the same install gives the same partition table and the same ESP volume id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The GPT's disk GUID.
    pub disk_guid: String,
    /// PARTUUID of partition 1 (BIOS boot).
    pub bios_guid: String,
    /// PARTUUID of partition 2 (ESP).
    pub esp_guid: String,
    /// PARTUUID of partition 3 (btrfs).
    pub root_guid: String,
    /// The ESP's FAT volume id, 8 hex digits (GRUB and blkid show it as `XXXX-XXXX`).
    pub fat_id: String,
}

fn guid(seed: &str, what: &str) -> String {
    let h = Sha256::digest(format!("terra-gpt:{seed}:{what}").as_bytes());
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&h[..16]);
    // A random (version 4, RFC 4122 variant) GUID in form, so tools take it as one.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl Layout {
    /// The identifiers for `seed`.
    pub fn derive(seed: &str) -> Layout {
        let fat = Sha256::digest(format!("terra-fat:{seed}").as_bytes());
        Layout {
            disk_guid: guid(seed, "disk"),
            bios_guid: guid(seed, "bios"),
            esp_guid: guid(seed, "esp"),
            root_guid: guid(seed, "root"),
            fat_id: fat[..4].iter().map(|v| format!("{v:02x}")).collect(),
        }
    }

    /// The FAT volume id as GRUB's `search --fs-uuid` and blkid write it.
    pub fn fat_uuid(&self) -> String {
        format!("{}-{}", &self.fat_id[..4], &self.fat_id[4..])
    }

    /// The sfdisk script: BIOS boot, ESP, then btrfs over the rest.
    pub fn sfdisk_script(&self) -> String {
        let sectors = |mib: u64| mib * 2048;
        format!(
            "label: gpt\n\
             label-id: {}\n\
             first-lba: 34\n\
             start={}, size={}, type={BIOS_BOOT_TYPE}, uuid={}, name={BIOS_PARTLABEL}\n\
             start={}, size={}, type={ESP_TYPE}, uuid={}, name={ESP_PARTLABEL}\n\
             start={}, type={LINUX_TYPE}, uuid={}, name={ROOT_PARTLABEL}\n",
            self.disk_guid,
            sectors(FIRST_MIB),
            sectors(BIOS_BOOT_MIB),
            self.bios_guid,
            sectors(FIRST_MIB + BIOS_BOOT_MIB),
            sectors(ESP_MIB),
            self.esp_guid,
            sectors(FIRST_MIB + BIOS_BOOT_MIB + ESP_MIB),
            self.root_guid,
        )
    }
}

/// The LBA (512-byte sectors) where the BIOS boot partition starts.
pub const BIOS_BOOT_LBA: u64 = FIRST_MIB * 2048;

/// Why a disk could not be made bootable; each names the disk, partition or file.
#[derive(Debug)]
pub enum BootDiskError {
    /// The disk is too small for the BIOS boot partition, the ESP and a btrfs partition.
    TooSmall {
        /// The disk.
        disk: PathBuf,
        /// Its size, MiB.
        mib: u64,
    },
    /// A disk, partition or file could not be read or written.
    Io {
        /// What.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// The partition did not appear after partitioning.
    NoPartition {
        /// The disk.
        disk: String,
        /// The partition's name.
        partlabel: &'static str,
    },
    /// A host tool failed.
    Tool(ToolError),
    /// The ESP.
    Esp(EspError),
    /// No kernel to boot.
    NoKernel {
        /// Why.
        reason: String,
    },
    /// The base kernel's directory.
    Kernel(BootFilesError),
}

impl fmt::Display for BootDiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootDiskError::TooSmall { disk, mib } => write!(
                f,
                "disk {}: {mib} MiB is too small for mbr = true: it needs {} MiB (BIOS boot \
                 partition, {ESP_MIB} MiB ESP, at least {MIN_ROOT_MIB} MiB for btrfs)",
                disk.display(),
                min_disk_mib()
            ),
            BootDiskError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            BootDiskError::NoPartition { disk, partlabel } => write!(
                f,
                "disk {disk}: partition {partlabel} did not appear after partitioning"
            ),
            BootDiskError::Tool(e) => e.fmt(f),
            BootDiskError::Esp(e) => e.fmt(f),
            BootDiskError::NoKernel { reason } => write!(f, "mbr = true: {reason}"),
            BootDiskError::Kernel(e) => write!(f, "the base kernel: {e}"),
        }
    }
}

impl std::error::Error for BootDiskError {}

impl From<ToolError> for BootDiskError {
    fn from(e: ToolError) -> Self {
        BootDiskError::Tool(e)
    }
}

impl From<EspError> for BootDiskError {
    fn from(e: EspError) -> Self {
        BootDiskError::Esp(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BootDiskError + '_ {
    move |err| BootDiskError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The host tools and GRUB's files that making a disk bootable needs, for a check before
/// the disk is partitioned.
pub fn needs() -> Vec<Need> {
    let mut n = Need::programs(&["sfdisk"], "fdisk");
    // partx finds a fresh GPT that a loop device's partscan missed.
    n.extend(Need::programs(&["partx"], "util-linux"));
    n.extend(Need::programs(&["mkfs.fat"], "dosfstools"));
    n.extend(esp_needs());
    n.extend(grub::needs());
    n
}

/// What keeping an ESP on the default version runs ([`MtoolsEsp`]).
pub fn esp_needs() -> Vec<Need> {
    Need::programs(&["mcopy", "mmd", "mren", "mdir"], "mtools")
}

/// The smallest disk `mbr = true` accepts, MiB (the GPT backup takes the last MiB).
pub fn min_disk_mib() -> u64 {
    FIRST_MIB + BIOS_BOOT_MIB + ESP_MIB + MIN_ROOT_MIB + 1
}

/// Writes the GPT of `layout` on `disk` (an image file or a block device; sfdisk makes the
/// kernel re-read a device's table).
pub fn partition(disk: &Path, layout: &Layout) -> Result<(), BootDiskError> {
    let size = fs::File::open(disk)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(io_err(disk))?;
    if size >> 20 < min_disk_mib() {
        return Err(BootDiskError::TooSmall {
            disk: disk.to_path_buf(),
            mib: size >> 20,
        });
    }
    tool::run_with_input(
        Command::new("sfdisk")
            .args(["--quiet", "--wipe", "always", "--wipe-partitions", "always"])
            .arg(disk),
        "fdisk",
        layout.sfdisk_script().as_bytes(),
    )?;
    Ok(())
}

/// The partitions of the whole-disk device `dev` (e.g. `/dev/loop3`): number and device
/// path, from sysfs.
pub fn partitions(dev: &str) -> Vec<(u32, PathBuf)> {
    let Some(name) = Path::new(dev).file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let sys = Path::new("/sys/class/block").join(name);
    let mut out: Vec<(u32, PathBuf)> = fs::read_dir(&sys)
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                let n: u32 = fs::read_to_string(e.path().join("partition"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                let pname = e.file_name().into_string().ok()?;
                Some((n, Path::new("/dev").join(pname.replace('!', "/"))))
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Makes the kernel add `dev`'s partitions when it shows none: `losetup --partscan` does
/// not always find a GPT written just before (seen on Debian's 6.1), `partx --add` does.
/// A disk without a partition table stays as it is.
fn scan_partitions(dev: &str) {
    if partitions(dev).is_empty() {
        let _ = Command::new("partx").args(["--add", dev]).output();
    }
}

/// The partition of `dev` named `partlabel` (GPT name), probed like stage0 probes.
pub fn partition_named(dev: &str, partlabel: &str) -> Option<PathBuf> {
    scan_partitions(dev);
    partitions(dev).into_iter().find_map(|(_, p)| {
        let name = p.file_name()?.to_str()?.to_string();
        let id =
            terra_init::probe::identify(&name, Path::new("/dev"), Path::new("/sys/class/block"))
                .ok()?;
        (id.partlabel.as_deref() == Some(partlabel)).then_some(p)
    })
}

/// The btrfs member a disk contributes: its `terra-root` partition on a bootable disk,
/// else the whole disk.
pub fn root_member(dev: &str) -> String {
    // A disk with a GPT is a bootable one: its partitions may show a moment after the
    // loop device does, so wait for them rather than fall back to the whole disk.
    if !has_gpt(dev) {
        return dev.to_string();
    }
    wait_partition(dev, ROOT_PARTLABEL)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dev.to_string())
}

/// Whether `dev` carries a GPT header (`EFI PART` at LBA 1).
fn has_gpt(dev: &str) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut sig = [0u8; 8];
    fs::File::open(dev)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(512))?;
            f.read_exact(&mut sig)
        })
        .is_ok()
        && &sig == b"EFI PART"
}

/// Waits (briefly) for `partlabel` to appear on `dev` after partitioning.
pub fn wait_partition(dev: &str, partlabel: &'static str) -> Result<PathBuf, BootDiskError> {
    for _ in 0..50 {
        if let Some(p) = partition_named(dev, partlabel) {
            return Ok(p);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(BootDiskError::NoPartition {
        disk: dev.to_string(),
        partlabel,
    })
}

/// Makes the FAT32 ESP on `part` with the layout's volume id.
pub fn mkfs_esp(part: &Path, layout: &Layout) -> Result<(), BootDiskError> {
    tool::run(
        Command::new("mkfs.fat")
            .args(["-F", "32", "-n", "TERRA-ESP", "-i", &layout.fat_id])
            .arg(part),
        "dosfstools",
    )?;
    Ok(())
}

/// Records on the top level `top` what keeps the ESP on the default: the kernel command
/// line and the ESP's PARTUUID (ARCHITECTURE.md, "Versions and boot state").
pub fn record(top: &Path, layout: &Layout, cmdline: &str) -> Result<(), BootDiskError> {
    let dir = top.join(STATE_DIR);
    for (name, text) in [
        (CMDLINE_FILE, cmdline),
        (ESP_FILE, layout.esp_guid.as_str()),
    ] {
        let path = dir.join(name);
        fs::write(&path, format!("{text}\n")).map_err(io_err(&path))?;
    }
    Ok(())
}

/// The release of a bzImage, from its setup header (`kernel_version`, Linux boot
/// protocol 2.00+): the string's first word.
pub fn bzimage_release(path: &Path) -> Result<String, BootDiskError> {
    let bad = |why: &str| BootDiskError::Io {
        path: path.to_path_buf(),
        err: io::Error::new(io::ErrorKind::InvalidData, why.to_string()),
    };
    let f = fs::File::open(path).map_err(io_err(path))?;
    // The string sits in the real-mode setup code, at most 64 KiB in.
    let mut head = Vec::new();
    f.take(0x1_0000)
        .read_to_end(&mut head)
        .map_err(io_err(path))?;
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad("not a bzImage (no HdrS setup header)"));
    }
    setup_release(&head).ok_or_else(|| bad("no kernel_version string in the setup header"))
}

/// The release a bzImage's setup header names (`kernel_version`: an offset from 0x200 to
/// a NUL-terminated string, whose first word it is), from the image's first bytes.
pub fn setup_release(head: &[u8]) -> Option<String> {
    let off = head
        .get(0x20e..0x210)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .filter(|&p| p != 0)?;
    let text = head.get(usize::from(off) + 0x200..)?;
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    String::from_utf8_lossy(&text[..end])
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// The whole-disk device of a partition device (sysfs nests a partition in its disk).
pub fn disk_of(part: &Path) -> Option<PathBuf> {
    let name = part.file_name()?.to_str()?;
    let real = fs::canonicalize(Path::new("/sys/class/block").join(name)).ok()?;
    let disk = real.parent()?.file_name()?.to_str()?;
    Some(Path::new("/dev").join(disk.replace('!', "/")))
}

/// Brings the ESP of the disk whose top level is mounted at `top` to the default version,
/// when the disk has one (`.terra/esp`). `within` names the disks to look on (kernel names,
/// e.g. `loop3`; empty: every block device). Returns whether the ESP changed, None when
/// the disk has no ESP. `at` is the crash hook.
pub fn follow_default(
    top: &Path,
    default: &str,
    within: &[String],
    at: &mut dyn FnMut(esp::Step),
) -> Result<Option<bool>, EspError> {
    let Some(partuuid) = esp::recorded_partuuid(top)? else {
        return Ok(None);
    };
    let device = esp::find_partition(
        &partuuid,
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        within,
    )
    .ok_or_else(|| EspError::NotFound {
        partuuid,
        record: top.join(STATE_DIR).join(ESP_FILE),
    })?;
    esp::sync_with(top, &mut MtoolsEsp::new(&device), default, at).map(Some)
}

/// What `terra install` needs to make the root group's first disk bootable, worked out
/// before any disk is touched.
#[derive(Debug, Clone)]
pub struct BootPlan {
    /// The disk that gets the GPT.
    pub disk: PathBuf,
    /// Its identifiers.
    pub layout: Layout,
    /// The base kernel (`.terra/kernel`) for versions without their own.
    pub kernel: FoundKernel,
    /// The kernel command line, as GRUB words.
    pub cmdline: String,
    /// The root filesystem's UUID: the seed of [`Layout`], and `root=`.
    pub root_uuid: String,
    /// A UKI UEFI firmware starts instead of GRUB (`terra install --uki`). stage0 in it
    /// still chooses the version; the ESP's slots serve BIOS boots.
    pub uki: Option<PathBuf>,
}

/// The base kernel: `kernel` (a bzImage whose modules are in `/lib/modules/<release>` or
/// `/usr/lib/modules/<release>`), else the host's newest `/boot/vmlinuz-*` with modules.
pub fn base_kernel(kernel: Option<&Path>) -> Result<FoundKernel, BootDiskError> {
    let Some(image) = kernel else {
        return crate::bootfiles::find_kernel(Path::new("/"))
            .map_err(BootDiskError::Kernel)?
            .ok_or_else(|| BootDiskError::NoKernel {
                reason: "no /boot/vmlinuz-<release> with modules in /lib/modules/<release> \
                         on this host: pass --kernel FILE"
                    .into(),
            });
    };
    let release = bzimage_release(image)?;
    ["/lib/modules", "/usr/lib/modules"]
        .iter()
        .map(|d| Path::new(d).join(&release))
        .find(|m| m.join("modules.dep").is_file())
        .map(|modules_dir| FoundKernel {
            image: image.to_path_buf(),
            release: release.clone(),
            modules_dir,
        })
        .ok_or_else(|| BootDiskError::NoKernel {
            reason: format!(
                "--kernel {}: release {release} has no modules (no /lib/modules/{release}/modules.dep)",
                image.display()
            ),
        })
}

/// The kernel command line of an installed disk: the consoles `terra iso` uses, `root=`
/// by the root filesystem's UUID, the node's own arguments (as `terra iso`/`pxe` write
/// them; left out with a note when a kernel argument cannot carry them, since the
/// initramfs embeds the same node.toml), then `extra`. Each one a GRUB word.
pub fn kernel_cmdline(
    config: &Path,
    node: &terra_init::config::NodeConfig,
    root_uuid: &str,
    extra: &str,
) -> String {
    let mut args: Vec<String> = CONSOLE_ARGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("root=UUID={root_uuid}"));
    let n = crate::bootargs::Node {
        path: config.to_path_buf(),
        config: node.clone(),
    };
    match n.kernel_args() {
        Ok(a) => args.extend(a),
        Err(e) => eprintln!(
            "terra: note: {e}; the node's settings reach stage0 through the node.toml in \
             the disk's initramfs instead"
        ),
    }
    args.extend(crate::bootargs::split_user_args(extra));
    args.iter()
        .map(|a| crate::iso::grub_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// After the root group's first version is stored on the top level `top` (mounted): the
/// base kernel and its initramfs in `.terra/kernel`, the records, GRUB on the disk
/// (`whole`, the whole-disk device) and in the ESP (`esp_part`), and the ESP synced to
/// `default`.
pub fn finish(
    plan: &BootPlan,
    top: &Path,
    whole: &Path,
    esp_part: &Path,
    work: &Path,
    default: &str,
    boot: &BootInitramfs,
) -> Result<(), BootDiskError> {
    let kdir = top
        .join(STATE_DIR)
        .join(terra_init::bootstate::BASE_KERNEL_DIR);
    crate::bootfiles::write_kernel_dir(&kdir, &plan.kernel, boot).map_err(BootDiskError::Kernel)?;
    record(top, &plan.layout, &plan.cmdline)?;
    let (core, efi) = grub_images(&work.join("grub"), &plan.layout.fat_uuid())?;
    install_bios(whole, &core)?;
    mkfs_esp(esp_part, &plan.layout)?;
    let mut files = MtoolsEsp::new(esp_part);
    if let Some((dir, _)) = EFI_LOADER.rsplit_once('/') {
        files.mkdir_all(dir)?;
    }
    files.copy_in(plan.uki.as_deref().unwrap_or(&efi), EFI_LOADER)?;
    esp::sync_with(top, &mut files, default, &mut |_| ())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_a_function_of_the_seed() {
        let a = Layout::derive("0f3e8f6c-1a7e-4e55-9d0a-5b0d8c1e2f3a");
        assert_eq!(a, Layout::derive("0f3e8f6c-1a7e-4e55-9d0a-5b0d8c1e2f3a"));
        assert_ne!(a.esp_guid, Layout::derive("other").esp_guid);
        assert_ne!(a.esp_guid, a.root_guid);
        assert_eq!(a.esp_guid.len(), 36);
        assert_eq!(&a.esp_guid[14..15], "4");
        let s = a.sfdisk_script();
        assert!(s.contains(&format!("start=2048, size=2048, type={BIOS_BOOT_TYPE}")));
        assert!(s.contains(&format!("start=4096, size=524288, type={ESP_TYPE}")));
        assert!(s.contains("name=terra-esp"));
        assert_eq!(a.fat_uuid().len(), 9);
    }
}
