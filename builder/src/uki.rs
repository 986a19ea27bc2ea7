//! `terra uki`: a Unified Kernel Image — one EFI application holding the kernel, the
//! initramfs, the command line and an os-release — from systemd's EFI stub, optionally
//! signed for Secure Boot.
//!
//! The layout is the UAPI group's "Unified Kernel Image" specification (and what systemd's
//! ukify does): the stub's PE sections, then `.osrel`, `.cmdline`, `.uname`, `.initrd`
//! and `.linux`, each at the next section-aligned address after the previous, `.linux`
//! last. The stub (systemd-stub) finds them by name in its own loaded image and starts the
//! kernel with the initramfs and command line; under Secure Boot it ignores a command line
//! passed by the boot loader, so the signature covers everything the kernel is given.
//!
//! The PE is written here ([`crate::pe`]) rather than by `objcopy --add-section
//! --change-section-vma`: no dependency on binutils' PE support (and its changing
//! defaults), addresses computed from the stub's own layout instead of fixed offsets that
//! a larger stub would overlap, and output that depends on the inputs alone. Signing is
//! `sbsign` (package sbsigntool), which writes the Authenticode signature. sbsign puts the
//! current time in the signature (a PKCS#7 signingTime attribute) and has no option to
//! choose it, so it runs under `faketime` (package faketime) with the clock frozen at
//! `SOURCE_DATE_EPOCH`: a signed image is then the same bytes too. (RSA PKCS#1 v1.5
//! signatures are deterministic; the time was the only varying part. Firmware does not
//! read signingTime, and EDK2 checks no validity periods: it has no trusted clock.)

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pe::{
    self, NewSection, PeError, IMAGE_SCN_CNT_CODE, IMAGE_SCN_CNT_INITIALIZED_DATA,
    IMAGE_SCN_MEM_READ,
};
use crate::tool::{self, ToolError};

/// systemd's EFI stub for x86-64 as Debian installs it.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The Debian package that ships [`DEFAULT_STUB`].
pub const STUB_PACKAGE: &str = "systemd-boot-efi";
/// The Debian package of `sbsign`.
pub const SBSIGN_PACKAGE: &str = "sbsigntool";
/// The Debian package of `faketime`, which fixes the time sbsign writes.
pub const FAKETIME_PACKAGE: &str = "faketime";

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct UkiSpec {
    /// systemd's EFI stub.
    pub stub: PathBuf,
    /// The kernel (an x86 bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The whole kernel command line; empty: no `.cmdline` section.
    pub cmdline: String,
    /// The `.osrel` contents; None: [`default_os_release`].
    pub os_release: Option<PathBuf>,
    /// Sign with this key and certificate.
    pub sign: Option<Signer>,
    /// The image to write.
    pub output: PathBuf,
    /// The signing time written into a signature (seconds since the epoch).
    pub source_date_epoch: u64,
}

impl UkiSpec {
    /// A spec with Debian's stub, no command line, the default os-release, unsigned.
    pub fn new(kernel: PathBuf, initramfs: PathBuf, output: PathBuf) -> Self {
        UkiSpec {
            stub: PathBuf::from(DEFAULT_STUB),
            kernel,
            initramfs,
            cmdline: String::new(),
            os_release: None,
            sign: None,
            output,
            source_date_epoch: 0,
        }
    }
}

/// A Secure Boot signing key pair, PEM files as `sbsign` reads them.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The private key.
    pub key: PathBuf,
    /// The X.509 certificate (the one enrolled in the firmware's db, or one it chains to).
    pub cert: PathBuf,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct UkiReport {
    /// Size of the image.
    pub bytes: u64,
    /// The kernel release, from the kernel's setup header (the `.uname` section).
    pub uname: Option<String>,
    /// The sections added to the stub: name, address in memory, size.
    pub sections: Vec<(String, u32, u32)>,
    /// Whether it was signed.
    pub signed: bool,
}

/// Errors of `terra uki`; each names the file and, for missing parts, the package.
#[derive(Debug)]
pub enum UkiError {
    /// The stub is missing or unreadable.
    Stub { path: PathBuf, err: io::Error },
    /// The stub is not a PE image we can extend.
    StubFormat { path: PathBuf, err: PeError },
    /// The kernel, initramfs or os-release is missing or unreadable.
    Input {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The kernel is not one the stub can start.
    Kernel { path: PathBuf, why: String },
    /// The signing key or certificate is missing, unreadable or not PEM.
    Signing {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// The image could not be written.
    Write { path: PathBuf, err: io::Error },
    /// `sbsign` failed.
    Tool(ToolError),
}

impl fmt::Display for UkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UkiError::Stub { path, err } if err.kind() == io::ErrorKind::NotFound => write!(
                f,
                "EFI stub {} not found (apt-get install {STUB_PACKAGE}, or --stub PATH)",
                path.display()
            ),
            UkiError::Stub { path, err } => {
                write!(f, "cannot read the EFI stub {}: {err}", path.display())
            }
            UkiError::StubFormat { path, err } => write!(
                f,
                "{}: not a usable EFI stub: {err} (expected systemd's linuxx64.efi.stub from \
                 {STUB_PACKAGE})",
                path.display()
            ),
            UkiError::Input { what, path, err } => {
                write!(f, "cannot read {what} {}: {err}", path.display())
            }
            UkiError::Kernel { path, why } => write!(f, "kernel {}: {why}", path.display()),
            UkiError::Signing { what, path, why } => write!(
                f,
                "signing {what} {}: {why} (sbsign takes a PEM private key and a PEM X.509 \
                 certificate)",
                path.display()
            ),
            UkiError::Write { path, err } => write!(f, "cannot write {}: {err}", path.display()),
            UkiError::Tool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UkiError {}

impl From<ToolError> for UkiError {
    fn from(e: ToolError) -> Self {
        UkiError::Tool(e)
    }
}

/// The `.osrel` section when none is given: names Terra, so a boot menu that lists UKIs
/// (systemd-boot reads `.osrel`) shows what this is.
pub fn default_os_release() -> String {
    format!(
        "NAME=\"Terra\"\nID=terra\nPRETTY_NAME=\"Terra\"\nVERSION_ID=\"{}\"\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The parts of the x86 boot protocol's setup header the stub depends on
/// (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").
mod setup {
    /// `boot_flag`: 0xAA55.
    pub const BOOT_FLAG: usize = 0x1fe;
    /// `header`: "HdrS".
    pub const HEADER: usize = 0x202;
    /// `version`: the boot protocol version.
    pub const VERSION: usize = 0x206;
    /// `kernel_version`: pointer to the version string, minus 0x200 (read by
    /// [`crate::bootdisk::setup_release`]; the tests write it).
    #[cfg(test)]
    pub const KERNEL_VERSION: usize = 0x20e;
    /// `relocatable_kernel` (protocol 2.05+).
    pub const RELOCATABLE: usize = 0x234;
    /// `xloadflags` (protocol 2.12+).
    pub const XLOADFLAGS: usize = 0x236;
    /// `XLF_EFI_HANDOVER_64`: the 64-bit EFI handover entry point exists.
    pub const XLF_EFI_HANDOVER_64: u16 = 1 << 3;
}

/// Checks `kernel` is an x86 bzImage systemd-stub can start — relocatable, with the 64-bit
/// EFI handover entry, which Debian 12's stub (systemd 252) jumps to — and returns its
/// release from the `kernel_version` string.
pub fn check_kernel(kernel: &[u8]) -> Result<Option<String>, String> {
    let u16_at = |off: usize| {
        kernel
            .get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if kernel.get(setup::HEADER..setup::HEADER + 4) != Some(b"HdrS")
        || u16_at(setup::BOOT_FLAG) != Some(0xaa55)
    {
        return Err("not an x86 bzImage (no HdrS setup header)".into());
    }
    let version = u16_at(setup::VERSION).unwrap_or(0);
    if version < 0x20c {
        return Err(format!(
            "boot protocol {}.{:02} is older than 2.12 (no xloadflags)",
            version >> 8,
            version & 0xff
        ));
    }
    if kernel.get(setup::RELOCATABLE) != Some(&1) {
        return Err(
            "not relocatable (the stub runs the kernel where the firmware loaded it)".into(),
        );
    }
    if u16_at(setup::XLOADFLAGS).unwrap_or(0) & setup::XLF_EFI_HANDOVER_64 == 0 {
        return Err(
            "no 64-bit EFI handover entry (CONFIG_EFI_STUB and CONFIG_EFI_HANDOVER_PROTOCOL)"
                .into(),
        );
    }
    Ok(crate::bootdisk::setup_release(kernel))
}

/// The sections of the image, in the order ukify writes them (`.linux` last).
pub fn sections<'d>(
    os_release: &'d [u8],
    cmdline: &'d [u8],
    uname: Option<&'d [u8]>,
    initramfs: &'d [u8],
    kernel: &'d [u8],
) -> Vec<NewSection<'d>> {
    let data = |name, data| NewSection {
        name,
        data,
        characteristics: IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ,
    };
    let mut out = vec![data(".osrel", os_release)];
    if !cmdline.is_empty() {
        out.push(data(".cmdline", cmdline));
    }
    if let Some(u) = uname {
        out.push(data(".uname", u));
    }
    out.push(data(".initrd", initramfs));
    // Marked as code like ukify does: an old stub runs the kernel in place.
    out.push(NewSection {
        name: ".linux",
        data: kernel,
        characteristics: IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ,
    });
    out
}

/// Reads an input, which must not be empty (a section of no bytes means a wrong file).
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, UkiError> {
    let err = |err| UkiError::Input {
        what,
        path: path.to_path_buf(),
        err,
    };
    let bytes = std::fs::read(path).map_err(err)?;
    if bytes.is_empty() {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty file",
        )));
    }
    Ok(bytes)
}

/// Checks a signing input exists and is PEM, so a typo fails here, naming the file,
/// rather than inside sbsign.
fn check_pem(what: &'static str, path: &Path, label: &str) -> Result<(), UkiError> {
    let err = |why: String| UkiError::Signing {
        what,
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    if !text.contains("-----BEGIN ") || !text.contains(label) {
        return Err(err(format!("no PEM {label} block")));
    }
    Ok(())
}

/// Builds the image: reads the inputs, appends the sections to the stub, writes it beside
/// the output and renames it into place (signed by `sbsign` in between when asked), so
/// the output is never half written.
pub fn build(spec: &UkiSpec) -> Result<UkiReport, UkiError> {
    let stub = std::fs::read(&spec.stub).map_err(|err| UkiError::Stub {
        path: spec.stub.clone(),
        err,
    })?;
    if let Some(s) = &spec.sign {
        check_pem("key", &s.key, "PRIVATE KEY")?;
        check_pem("certificate", &s.cert, "CERTIFICATE")?;
    }
    let kernel = read("kernel", &spec.kernel)?;
    let uname = check_kernel(&kernel).map_err(|why| UkiError::Kernel {
        path: spec.kernel.clone(),
        why,
    })?;
    let initramfs = read("initramfs", &spec.initramfs)?;
    let os_release = match &spec.os_release {
        Some(p) => read("os-release", p)?,
        None => default_os_release().into_bytes(),
    };
    let added = sections(
        &os_release,
        spec.cmdline.as_bytes(),
        uname.as_deref().map(str::as_bytes),
        &initramfs,
        &kernel,
    );
    let image = pe::append_sections(&stub, &added).map_err(|err| UkiError::StubFormat {
        path: spec.stub.clone(),
        err,
    })?;
    let parsed = pe::Pe::parse(&image).map_err(|err| UkiError::StubFormat {
        path: spec.stub.clone(),
        err,
    })?;
    let first_added = parsed.sections().len() - added.len();
    let report_sections = parsed.sections()[first_added..]
        .iter()
        .map(|s| (s.name.clone(), s.virtual_address, s.virtual_size))
        .collect();

    let tmp = sibling(&spec.output, ".tmp");
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|err| UkiError::Write {
            path: path.to_path_buf(),
            err,
        })
    };
    write(&tmp, &image)?;
    let result = (|| {
        let done = match &spec.sign {
            None => tmp.clone(),
            Some(s) => {
                let signed = sibling(&spec.output, ".signed.tmp");
                let mut cmd = sbsign(spec.source_date_epoch)?;
                cmd.arg("--key")
                    .arg(&s.key)
                    .arg("--cert")
                    .arg(&s.cert)
                    .arg("--output")
                    .arg(&signed)
                    .arg(&tmp);
                if let Err(e) = tool::run(&mut cmd, FAKETIME_PACKAGE) {
                    let _ = std::fs::remove_file(&signed);
                    return Err(e.into());
                }
                signed
            }
        };
        std::fs::rename(&done, &spec.output).map_err(|err| UkiError::Write {
            path: spec.output.clone(),
            err,
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    let bytes = std::fs::metadata(&spec.output)
        .map_err(|err| UkiError::Write {
            path: spec.output.clone(),
            err,
        })?
        .len();
    Ok(UkiReport {
        bytes,
        uname,
        sections: report_sections,
        signed: spec.sign.is_some(),
    })
}

/// `sbsign` under `faketime` with the clock frozen at `epoch` (an absolute time without
/// `@` stops libfaketime's clock). sbsign is looked up first: through faketime a missing
/// sbsign would read as faketime's failure.
fn sbsign(epoch: u64) -> Result<Command, ToolError> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("sbsign").is_file()));
    if !on_path {
        return Err(ToolError {
            command: "sbsign".into(),
            package: SBSIGN_PACKAGE,
            kind: tool::ToolErrorKind::NotFound,
        });
    }
    let mut cmd = Command::new("faketime");
    cmd.env("TZ", "UTC")
        .arg("-f")
        .arg(faketime_spec(epoch))
        .arg("sbsign");
    Ok(cmd)
}

/// `epoch` as libfaketime's absolute time, `YYYY-MM-DD hh:mm:ss` (UTC with TZ=UTC).
fn faketime_spec(epoch: u64) -> String {
    terra_init::bootstate::rfc3339(epoch)
        .trim_end_matches('Z')
        .replace('T', " ")
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage's first 0x300 bytes as the boot protocol lays them out: protocol 2.15,
    /// relocatable, with the 64-bit handover entry and a version string at 0x280.
    fn bzimage_head() -> Vec<u8> {
        let mut k = vec![0u8; 0x300];
        k[setup::BOOT_FLAG..setup::BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        k[setup::HEADER..setup::HEADER + 4].copy_from_slice(b"HdrS");
        k[setup::VERSION..setup::VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        k[setup::KERNEL_VERSION..setup::KERNEL_VERSION + 2].copy_from_slice(&0x80u16.to_le_bytes());
        k[setup::RELOCATABLE] = 1;
        k[setup::XLOADFLAGS..setup::XLOADFLAGS + 2].copy_from_slice(&0x000bu16.to_le_bytes());
        let v = b"6.1.0-37-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        k[0x280..0x280 + v.len()].copy_from_slice(v);
        k
    }

    #[test]
    fn a_kernel_the_stub_can_start() {
        assert_eq!(
            check_kernel(&bzimage_head()),
            Ok(Some("6.1.0-37-amd64".into()))
        );
        let mut k = bzimage_head();
        k[setup::XLOADFLAGS] = 0x03;
        assert!(check_kernel(&k).unwrap_err().contains("handover"));
        let mut k = bzimage_head();
        k[setup::RELOCATABLE] = 0;
        assert!(check_kernel(&k).unwrap_err().contains("relocatable"));
        assert!(check_kernel(b"\x7fELF").unwrap_err().contains("bzImage"));
    }

    #[test]
    fn the_signing_clock() {
        assert_eq!(faketime_spec(0), "1970-01-01 00:00:00");
        assert_eq!(faketime_spec(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn sections_in_ukify_order_linux_last() {
        let names: Vec<&str> = sections(b"ID=terra", b"quiet", Some(b"6.1"), b"i", b"k")
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]);
        let names: Vec<&str> = sections(b"ID=terra", b"", None, b"i", b"k")
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, [".osrel", ".initrd", ".linux"]);
    }

    fn spec_in(dir: &Path, stub: &Path) -> UkiSpec {
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, bzimage_head()).unwrap();
        let initrd = dir.join("initrd.img");
        std::fs::write(&initrd, b"070701 an initramfs").unwrap();
        let mut spec = UkiSpec::new(kernel, initrd, dir.join("terra.efi"));
        spec.stub = stub.to_path_buf();
        spec.cmdline = "console=ttyS0 terra.demo=poweroff".into();
        spec
    }

    #[test]
    fn errors_name_the_file_and_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &dir.path().join("no-stub.efi"));
        let e = build(&spec).unwrap_err().to_string();
        assert!(
            e.contains("no-stub.efi") && e.contains("systemd-boot-efi"),
            "{e}"
        );

        let not_pe = dir.path().join("stub.efi");
        std::fs::write(&not_pe, b"#!/bin/sh\n").unwrap();
        let e = build(&spec_in(dir.path(), &not_pe))
            .unwrap_err()
            .to_string();
        assert!(e.contains("stub.efi") && e.contains("not a PE"), "{e}");

        let mut spec = spec_in(dir.path(), &not_pe);
        spec.sign = Some(Signer {
            key: dir.path().join("db.key"),
            cert: dir.path().join("db.crt"),
        });
        let e = build(&spec).unwrap_err().to_string();
        assert!(e.contains("signing key") && e.contains("db.key"), "{e}");
        assert!(!spec.output.exists());
    }

    /// With Debian's stub: the sections read back, the output is the same bytes twice.
    #[test]
    fn builds_from_the_distributions_stub() {
        let stub = Path::new(DEFAULT_STUB);
        if !stub.exists() {
            eprintln!("skipped: {DEFAULT_STUB} is missing (apt-get install {STUB_PACKAGE})");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), stub);
        let report = build(&spec).unwrap();
        assert_eq!(report.uname.as_deref(), Some("6.1.0-37-amd64"));
        let first = std::fs::read(&spec.output).unwrap();
        assert_eq!(first.len() as u64, report.bytes);
        let pe = pe::Pe::parse(&first).unwrap();
        assert_eq!(
            pe.section_data(".cmdline"),
            Some(&b"console=ttyS0 terra.demo=poweroff"[..])
        );
        assert_eq!(pe.section_data(".uname"), Some(&b"6.1.0-37-amd64"[..]));
        assert_eq!(
            pe.section_data(".osrel"),
            Some(default_os_release().as_bytes())
        );
        assert_eq!(pe.section_data(".linux"), Some(&bzimage_head()[..]));
        build(&spec).unwrap();
        assert_eq!(std::fs::read(&spec.output).unwrap(), first);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
