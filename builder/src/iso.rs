//! `terra iso`: a hybrid ISO 9660 image that boots a kernel and an initramfs under BIOS (El
//! Torito, and as a disk through GRUB's hybrid MBR) and UEFI (the El Torito EFI image, also
//! exposed as a GPT/MBR partition), with GRUB from the distribution.
//!
//! grub-mkrescue would do this in one call, but it stamps the image with the current time
//! (its `--modification-date` doubles as the filesystem UUID its embedded config searches
//! for), so the same inputs never give the same bytes. The image is assembled here from the
//! same parts instead: `grub-mkimage` for the two GRUB cores, `mkfs.fat --invariant` and
//! mtools for the EFI system image, `xorriso -as mkisofs` for the ISO, every time taken from
//! `SOURCE_DATE_EPOCH` (xorriso and mtools both honour it).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bootargs::{split_user_args, ArgsError, Node};
use crate::tool::{self, ToolError};

/// Volume label when none is given.
pub const DEFAULT_LABEL: &str = "TERRA";
/// Consoles on every ISO: VGA and the first serial port. The last `console=` becomes
/// /dev/console, so the serial port gets the init's output (headless servers, QEMU).
pub const CONSOLE_ARGS: [&str; 2] = ["console=tty0", "console=ttyS0,115200"];
/// Where the kernel and initramfs live on the image.
pub const KERNEL_PATH: &str = "/boot/vmlinuz";
/// See [`KERNEL_PATH`].
pub const INITRAMFS_PATH: &str = "/boot/initramfs.img";
/// Where a live ISO's root image lives: dracut's default (`rd.live.dir=LiveOS`,
/// `rd.live.squashimg=squashfs.img`), which stage0 also reads.
pub const LIVE_IMAGE_PATH: &str = "/LiveOS/squashfs.img";

const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// Modules built into both GRUB cores: with everything embedded the image needs no module
/// directory, and GRUB finds its config through the marker file wherever it booted from.
const GRUB_MODULES: &[&str] = &[
    "iso9660",
    "part_msdos",
    "part_gpt",
    "normal",
    "configfile",
    "linux",
    "serial",
    "terminal",
    "search",
    "echo",
    "test",
    "all_video",
    "gzio",
];

/// What to put on the ISO.
#[derive(Debug, Clone)]
pub struct IsoSpec {
    /// Kernel image (bzImage).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// Extra kernel arguments, as one command line (double quotes group).
    pub cmdline: String,
    /// A node.toml whose kernel arguments are added (hostname=, version=, …).
    pub node: Option<PathBuf>,
    /// ISO 9660 volume label.
    pub label: String,
    /// Output file.
    pub output: PathBuf,
    /// Every timestamp on the image.
    pub source_date_epoch: u64,
    /// A squashfs root for a live ISO (see [`crate::live`]): placed at
    /// [`LIVE_IMAGE_PATH`], and the kernel line gains `root=live:LABEL=<label>`.
    pub live: Option<PathBuf>,
    /// A Unified Kernel Image (`terra uki`, signed for Secure Boot) that UEFI firmware
    /// starts directly as `/EFI/BOOT/BOOTX64.EFI` instead of GRUB: its own command line and
    /// initramfs apply. BIOS still boots GRUB with [`IsoSpec::kernel`].
    pub uki: Option<PathBuf>,
}

impl IsoSpec {
    /// A spec with the default label and no extra arguments.
    pub fn new(kernel: PathBuf, initramfs: PathBuf, output: PathBuf) -> Self {
        IsoSpec {
            kernel,
            initramfs,
            cmdline: String::new(),
            node: None,
            label: DEFAULT_LABEL.into(),
            output,
            source_date_epoch: 0,
            live: None,
            uki: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct IsoReport {
    /// Size of the image.
    pub bytes: u64,
    /// The kernel command line of the default entry.
    pub cmdline: String,
}

/// Errors of `terra iso`; each names the file, argument or tool.
#[derive(Debug)]
pub enum IsoError {
    /// The kernel or initramfs is missing or unreadable.
    Input {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// The volume label is not usable.
    Label { label: String },
    /// Node config or kernel arguments.
    Args(ArgsError),
    /// A file could not be written.
    Write { path: PathBuf, err: std::io::Error },
    /// A host tool failed.
    Tool(ToolError),
}

impl fmt::Display for IsoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsoError::Input { what, path, err } => {
                write!(f, "cannot read {what} {}: {err}", path.display())
            }
            IsoError::Label { label } => write!(
                f,
                "volume label {label:?}: expected 1 to 32 characters A-Z, 0-9 and '_' (ISO 9660 d-characters)"
            ),
            IsoError::Args(e) => write!(f, "{e}"),
            IsoError::Write { path, err } => write!(f, "cannot write {}: {err}", path.display()),
            IsoError::Tool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for IsoError {}

impl From<ToolError> for IsoError {
    fn from(e: ToolError) -> Self {
        IsoError::Tool(e)
    }
}

impl From<ArgsError> for IsoError {
    fn from(e: ArgsError) -> Self {
        IsoError::Args(e)
    }
}

/// The kernel arguments of the default entry: consoles, a live ISO's `root=`, the node's
/// arguments, then the user's (so a user's `version=` wins over the node's: stage0 keeps
/// the last).
pub fn kernel_args(spec: &IsoSpec) -> Result<Vec<String>, IsoError> {
    let mut args: Vec<String> = CONSOLE_ARGS.iter().map(|s| s.to_string()).collect();
    if spec.live.is_some() {
        args.push(format!("root=live:LABEL={}", spec.label));
    }
    if let Some(path) = &spec.node {
        args.extend(Node::load(path)?.kernel_args()?);
    }
    args.extend(split_user_args(&spec.cmdline));
    for a in &args {
        if a.contains(['\'', '\n', '\r']) {
            return Err(ArgsError::Arg {
                arg: a.clone(),
                medium: "a GRUB config",
                reason: "single quotes and line breaks are not supported",
            }
            .into());
        }
    }
    Ok(args)
}

/// One argument as a GRUB script word: bare when it has no characters GRUB's parser
/// treats specially, else single-quoted (GRUB's `linux` re-quotes arguments with spaces
/// for the kernel).
pub(crate) fn grub_word(arg: &str) -> String {
    let plain = arg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._,:/=+@%-".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{arg}'")
    }
}

/// The GRUB configuration: serial and VGA consoles, no menu delay, the Terra entry and a
/// debug entry.
pub fn grub_cfg(args: &[String]) -> String {
    use terra_init::esp::GRUB_PREAMBLE;
    let line: Vec<String> = args.iter().map(|a| grub_word(a)).collect();
    let line = line.join(" ");
    format!(
        "# Written by terra iso.\n\
         {GRUB_PREAMBLE}\
         menuentry 'Terra' {{\n\
         \x20   linux {KERNEL_PATH} {line}\n\
         \x20   initrd {INITRAMFS_PATH}\n\
         }}\n\
         \n\
         menuentry 'Terra (debug, rescue shell)' {{\n\
         \x20   linux {KERNEL_PATH} {line} terra.debug terra.rescue=shell\n\
         \x20   initrd {INITRAMFS_PATH}\n\
         }}\n"
    )
}

fn valid_label(label: &str) -> bool {
    (1..=32).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// FNV-1a over the inputs: names the marker file GRUB searches for, so a Terra ISO finds
/// its own files even when other Terra media are attached (identical inputs, identical
/// files: either copy will do).
fn fingerprint(parts: &[&[u8]], files: &[(&'static str, &Path)]) -> Result<u64, IsoError> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for p in parts {
        eat(p);
    }
    for (what, path) in files {
        let input = |err| IsoError::Input {
            what,
            path: path.to_path_buf(),
            err,
        };
        let mut f = std::fs::File::open(path).map_err(input)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(input)?;
            if n == 0 {
                break;
            }
            eat(&buf[..n]);
        }
    }
    Ok(h)
}

/// A scratch directory next to the output, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), IsoError> {
    std::fs::write(path, data).map_err(|err| IsoError::Write {
        path: path.to_path_buf(),
        err,
    })
}

/// Builds the ISO.
pub fn build(spec: &IsoSpec) -> Result<IsoReport, IsoError> {
    let mut inputs = vec![("kernel", &spec.kernel), ("initramfs", &spec.initramfs)];
    inputs.extend(spec.live.iter().map(|p| ("live image", p)));
    inputs.extend(spec.uki.iter().map(|p| ("UKI", p)));
    for (what, path) in inputs {
        std::fs::File::open(path).map_err(|err| IsoError::Input {
            what,
            path: path.clone(),
            err,
        })?;
    }
    if !valid_label(&spec.label) {
        return Err(IsoError::Label {
            label: spec.label.clone(),
        });
    }
    let args = kernel_args(spec)?;
    let cfg = grub_cfg(&args);
    tool::require_file(
        &Path::new(GRUB_PC_DIR).join("boot_hybrid.img"),
        "grub-pc-bin",
    )?;
    tool::require_file(
        &Path::new(GRUB_EFI_DIR).join("linux.mod"),
        "grub-efi-amd64-bin",
    )?;

    let parent = spec
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = spec
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "terra.iso".into());
    let scratch = Scratch(parent.join(format!(".{name}.terra-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    let grub_dir = scratch.0.join("tree/boot/grub");
    std::fs::create_dir_all(&grub_dir).map_err(|err| IsoError::Write {
        path: grub_dir.clone(),
        err,
    })?;

    let mut files = vec![
        ("kernel", spec.kernel.as_path()),
        ("initramfs", &spec.initramfs),
    ];
    files.extend(spec.live.iter().map(|p| ("live image", p.as_path())));
    files.extend(spec.uki.iter().map(|p| ("UKI", p.as_path())));
    let id = fingerprint(&[cfg.as_bytes(), spec.label.as_bytes()], &files)?;
    let marker = format!("terra-{id:016x}.id");
    write(&grub_dir.join(&marker), b"Terra boot image\n")?;
    write(&grub_dir.join("grub.cfg"), cfg.as_bytes())?;
    let early = scratch.0.join("early.cfg");
    write(
        &early,
        format!(
            "search --no-floppy --set=root --file /boot/grub/{marker}\nset prefix=($root)/boot/grub\n"
        )
        .as_bytes(),
    )?;

    let env = |c: &mut Command| {
        c.env("SOURCE_DATE_EPOCH", spec.source_date_epoch.to_string())
            .env("TZ", "UTC")
            .env("LC_ALL", "C");
    };
    let mkimage = |format: &str, dir: &str, out: &Path| -> Result<(), IsoError> {
        let mut c = Command::new("grub-mkimage");
        env(&mut c);
        c.args(["-O", format, "-d", dir, "-p", "/boot/grub", "-c"])
            .arg(&early)
            .arg("-o")
            .arg(out)
            .args(GRUB_MODULES);
        if format.ends_with("efi") {
            c.arg("fat");
        } else {
            c.arg("biosdisk");
        }
        tool::run(&mut c, "grub-common")?;
        Ok(())
    };
    mkimage(
        "i386-pc-eltorito",
        GRUB_PC_DIR,
        &grub_dir.join("eltorito.img"),
    )?;
    let efi_core = match &spec.uki {
        Some(uki) => uki.clone(),
        None => {
            let core = scratch.0.join("BOOTX64.EFI");
            mkimage("x86_64-efi", GRUB_EFI_DIR, &core)?;
            core
        }
    };

    // The EFI system image: a FAT filesystem with the removable-media path the firmware
    // looks for. --invariant fixes the volume id and dates; mtools takes its times from
    // SOURCE_DATE_EPOCH and -m keeps the file's (set below).
    let efi_len = std::fs::metadata(&efi_core)
        .map_err(|err| IsoError::Write {
            path: efi_core.clone(),
            err,
        })?
        .len();
    let fat_kb = (efi_len / 1024 + 512).div_ceil(512) * 512;
    let efi_img = grub_dir.join("efi.img");
    let mut c = Command::new("mkfs.fat");
    env(&mut c);
    tool::run(
        c.args(["-C", "--invariant", "-i", "5445524d", "-n", "TERRA_EFI"])
            .arg(&efi_img)
            .arg(fat_kb.to_string()),
        "dosfstools",
    )?;
    let mut c = Command::new("mmd");
    env(&mut c);
    tool::run(
        c.arg("-i").arg(&efi_img).args(["::/EFI", "::/EFI/BOOT"]),
        "mtools",
    )?;
    let mut c = Command::new("mcopy");
    env(&mut c);
    tool::run(
        c.arg("-i")
            .arg(&efi_img)
            .arg(&efi_core)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
        "mtools",
    )?;

    let tmp_iso = scratch.0.join("out.iso");
    let mut c = Command::new("xorriso");
    env(&mut c);
    c.args(["-as", "mkisofs", "-o"])
        .arg(&tmp_iso)
        .args(["-V", &spec.label, "-r", "-graft-points"])
        // BIOS: El Torito no-emulation boot of GRUB's CD core; GRUB's hybrid MBR makes the
        // same image boot when written to a USB stick.
        .args([
            "-b",
            "boot/grub/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "--grub2-mbr",
        ])
        .arg(Path::new(GRUB_PC_DIR).join("boot_hybrid.img"))
        // UEFI: the FAT image as El Torito EFI entry and as a partition.
        .args([
            "-eltorito-alt-boot",
            "-e",
            "boot/grub/efi.img",
            "-no-emul-boot",
            "-efi-boot-part",
            "--efi-boot-image",
            "--protective-msdos-label",
        ])
        .arg(format!("boot/={}", scratch.0.join("tree/boot").display()))
        .arg(format!("{}={}", &KERNEL_PATH[1..], spec.kernel.display()))
        .arg(format!(
            "{}={}",
            &INITRAMFS_PATH[1..],
            spec.initramfs.display()
        ));
    if let Some(img) = &spec.live {
        c.arg(format!("{}={}", &LIVE_IMAGE_PATH[1..], img.display()));
    }
    // SOURCE_DATE_EPOCH alone only makes xorriso copy each file's mtime into its other
    // times; the inputs' own mtimes must not reach the image either.
    c.args(["--", "-volume_date", "all_file_dates"])
        .arg(format!("={}", spec.source_date_epoch));
    tool::run(&mut c, "xorriso")?;
    std::fs::rename(&tmp_iso, &spec.output).map_err(|err| IsoError::Write {
        path: spec.output.clone(),
        err,
    })?;
    let bytes = std::fs::metadata(&spec.output)
        .map(|m| m.len())
        .unwrap_or_default();
    Ok(IsoReport {
        bytes,
        cmdline: args.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_has_no_delay_and_both_consoles() {
        let spec = IsoSpec {
            cmdline: "terra.demo=poweroff rootflags=\"a b\"".into(),
            ..IsoSpec::new("k".into(), "i".into(), "o".into())
        };
        let args = kernel_args(&spec).unwrap();
        let cfg = grub_cfg(&args);
        assert!(cfg.contains("set timeout=0\n"), "{cfg}");
        assert!(cfg.contains("terminal_output console serial"), "{cfg}");
        assert!(
            cfg.contains(
                "linux /boot/vmlinuz console=tty0 console=ttyS0,115200 terra.demo=poweroff 'rootflags=a b'\n"
            ),
            "{cfg}"
        );
        assert!(cfg.contains("initrd /boot/initramfs.img"), "{cfg}");
    }

    #[test]
    fn quotes_that_grub_cannot_carry_are_refused() {
        let spec = IsoSpec {
            cmdline: "a='b'".into(),
            ..IsoSpec::new("k".into(), "i".into(), "o".into())
        };
        let e = kernel_args(&spec).unwrap_err();
        assert!(e.to_string().contains("a='b'"), "{e}");
    }

    #[test]
    fn labels_are_d_characters() {
        assert!(valid_label("TERRA"));
        assert!(valid_label("TERRA_2026_01"));
        assert!(!valid_label(""));
        assert!(!valid_label("terra"));
        assert!(!valid_label(&"A".repeat(33)));
    }
}
