//! GRUB for a bootable disk: the two images from `grub-mkimage`, and the BIOS boot code
//! (boot.img in the MBR, core.img in the BIOS boot partition) patched as grub-bios-setup
//! would patch it.

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::esp;

use super::{io_err, BootDiskError, BIOS_BOOT_LBA, BIOS_BOOT_MIB};
use crate::tool::{self, Need};

const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// Built into both GRUB images: no module directory on the disk.
const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "search",
    "search_fs_uuid",
    "configfile",
    "normal",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "all_video",
    "gzio",
];

/// What [`grub_images`] and [`install_bios`] run and read: grub-mkimage, and the module
/// directories of both platforms.
pub fn needs() -> Vec<Need> {
    vec![
        Need::Program("grub-mkimage", "grub-common"),
        Need::File(Path::new(GRUB_PC_DIR).join("boot.img"), "grub-pc-bin"),
        Need::File(
            Path::new(GRUB_EFI_DIR).join("linux.mod"),
            "grub-efi-amd64-bin",
        ),
    ]
}

/// GRUB's two images, made in `work`: `core.img` (i386-pc) and `BOOTX64.EFI`
/// (x86_64-efi), both with [`esp::early_config`] for the FAT volume id `fat_uuid`.
pub fn grub_images(work: &Path, fat_uuid: &str) -> Result<(PathBuf, PathBuf), BootDiskError> {
    tool::require_file(&Path::new(GRUB_PC_DIR).join("boot.img"), "grub-pc-bin")?;
    tool::require_file(
        &Path::new(GRUB_EFI_DIR).join("linux.mod"),
        "grub-efi-amd64-bin",
    )?;
    fs::create_dir_all(work).map_err(io_err(work))?;
    let early = work.join("early.cfg");
    fs::write(&early, esp::early_config(fat_uuid)).map_err(io_err(&early))?;
    let mkimage = |format: &str, dir: &str, out: &Path, extra: &str| {
        let mut c = Command::new("grub-mkimage");
        c.env("SOURCE_DATE_EPOCH", "0")
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .args(["-O", format, "-d", dir, "-p", "/terra", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(out)
            .args(GRUB_MODULES)
            .arg(extra);
        tool::run(&mut c, "grub-common").map(|_| ())
    };
    let core = work.join("core.img");
    let efi = work.join("BOOTX64.EFI");
    mkimage("i386-pc", GRUB_PC_DIR, &core, "biosdisk")?;
    mkimage("x86_64-efi", GRUB_EFI_DIR, &efi, "efi_gop")?;
    Ok((core, efi))
}

/// Offsets in GRUB's boot.img (grub-core/boot/i386/pc/boot.S) and diskboot.img, the first
/// sector of core.img (diskboot.S).
const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
/// The MBR code area: the disk signature and partition table follow it.
pub const MBR_CODE_BYTES: usize = 440;
/// The first blocklist entry at the end of diskboot.img: start (u64), length in sectors
/// (u16), segment (u16), growing downwards.
const BLOCKLIST: usize = 512 - 12;

/// boot.img and core.img patched for core.img at LBA `core_lba`, as grub-bios-setup
/// patches them when it embeds core.img in one contiguous run: boot.img gets core.img's
/// first sector at 0x5c (its LBA read loads that one sector, diskboot) and the NOPs over
/// the floppy check that grub-bios-setup writes for hard disks; diskboot's first
/// blocklist entry gets the rest of core.img (from `core_lba + 1`, `sectors - 1` long,
/// loaded at segment 0x820 as the entry already says), the entry below it staying zero as
/// the terminator. Returns the MBR code bytes and core.img padded to whole sectors.
pub fn patch_bios_boot(
    boot_img: &[u8],
    core_img: &[u8],
    core_lba: u64,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    if boot_img.len() != 512 || &boot_img[510..] != b"\x55\xaa" {
        return Err("boot.img is not a 512-byte boot sector".into());
    }
    if core_img.len() < 1024 {
        return Err("core.img is shorter than two sectors".into());
    }
    let mut boot = boot_img[..MBR_CODE_BYTES].to_vec();
    boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    boot[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    let mut core = core_img.to_vec();
    core.resize(core.len().div_ceil(512) * 512, 0);
    let rest = u16::try_from(core.len() / 512 - 1)
        .map_err(|_| format!("core.img is too large ({} bytes)", core.len()))?;
    // grub-mkimage already fills in the length (the rest of core.img, in sectors); the
    // segment is diskboot's default and the entry below must be the zero terminator.
    let len = u16::from_le_bytes([core[BLOCKLIST + 8], core[BLOCKLIST + 9]]);
    if (len != 0 && len != rest)
        || core[BLOCKLIST + 10..BLOCKLIST + 12] != 0x820u16.to_le_bytes()
        || core[BLOCKLIST - 12..BLOCKLIST] != [0; 12]
    {
        return Err("core.img's first sector is not GRUB's diskboot.img".into());
    }
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&rest.to_le_bytes());
    Ok((boot, core))
}

/// Installs GRUB for BIOS on the whole-disk device `disk`: core.img into the BIOS boot
/// partition, boot.img into the MBR's code area.
pub fn install_bios(disk: &Path, core_img: &Path) -> Result<(), BootDiskError> {
    let boot_path = Path::new(GRUB_PC_DIR).join("boot.img");
    let boot = fs::read(&boot_path).map_err(io_err(&boot_path))?;
    let core = fs::read(core_img).map_err(io_err(core_img))?;
    let (mbr, core) =
        patch_bios_boot(&boot, &core, BIOS_BOOT_LBA).map_err(|e| BootDiskError::Io {
            path: core_img.to_path_buf(),
            err: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
    if core.len() as u64 > BIOS_BOOT_MIB << 20 {
        return Err(BootDiskError::Io {
            path: core_img.to_path_buf(),
            err: io::Error::other("core.img does not fit in the BIOS boot partition"),
        });
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io_err(disk))?;
    f.seek(SeekFrom::Start(BIOS_BOOT_LBA * 512))
        .and_then(|_| f.write_all(&core))
        .and_then(|()| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(&mbr))
        .and_then(|()| f.sync_all())
        .map_err(io_err(disk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_and_core_are_patched_where_grub_reads_them() {
        let mut boot = vec![0u8; 512];
        boot[510] = 0x55;
        boot[511] = 0xaa;
        boot[DRIVE_CHECK] = 0xeb;
        let mut core = vec![7u8; 3 * 512 + 100];
        core[BLOCKLIST - 12..512].fill(0);
        core[BLOCKLIST] = 2;
        core[510..512].copy_from_slice(&0x820u16.to_le_bytes());
        let (mbr, core) = patch_bios_boot(&boot, &core, 2048).unwrap();
        assert_eq!(mbr.len(), 440);
        assert_eq!(&mbr[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(core.len(), 4 * 512);
        assert_eq!(&core[500..508], &2049u64.to_le_bytes());
        assert_eq!(&core[508..510], &3u16.to_le_bytes());
        assert_eq!(&core[510..512], &0x820u16.to_le_bytes());
        assert!(patch_bios_boot(&boot[..400], &core, 1).is_err());
    }

    #[test]
    fn grub_packages_boot_img_is_patchable() {
        let boot = Path::new(GRUB_PC_DIR).join("boot.img");
        let disk = Path::new(GRUB_PC_DIR).join("diskboot.img");
        let (Ok(boot), Ok(mut core)) = (fs::read(boot), fs::read(disk)) else {
            panic!("grub-pc-bin is not installed (scripts/setup-host.sh)");
        };
        core.resize(4096, 0);
        let (mbr, core) = patch_bios_boot(&boot, &core, 2048).unwrap();
        assert_eq!(&mbr[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&core[508..510], &7u16.to_le_bytes());
    }
}
