//! Secure Boot in the lab: a test PK, KEK and db made with openssl, enrolled into a copy of
//! OVMF's variable store with Secure Boot on by virt-firmware's `virt-fw-vars` (PyPI; not
//! packaged in Debian 12), and an ESP disk image holding one EFI application at the
//! removable-media path, which OVMF boots with no boot entry.
//!
//! virt-firmware lives in a virtual environment under `target/lab` rather than in the
//! system's Python: Debian 12 refuses `pip install` outside a venv (PEP 668), and
//! `--break-system-packages` would change the host for every other program. It needs only
//! Debian's python3-venv; the version is pinned so every run enrolls the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{lab_dir, run};

/// The virt-firmware release the lab installs.
pub const VIRT_FIRMWARE: &str = "virt-firmware==26.10";
/// The owner GUID of the lab's keys in PK, KEK and db (any fixed GUID will do).
pub const OWNER_GUID: &str = "7e44a1a0-5ecb-4007-9000-7e44a1a0c0de";

/// The lab's Secure Boot keys: PEM keys and self-signed certificates.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Platform key certificate.
    pub pk_cert: PathBuf,
    /// Key exchange key certificate.
    pub kek_cert: PathBuf,
    /// The signing key whose certificate is in db: images it signs may run.
    pub db_key: PathBuf,
    /// Its certificate.
    pub db_cert: PathBuf,
}

fn dir() -> crate::Result<PathBuf> {
    let d = lab_dir().join("secureboot");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// The test keys, made once (RSA 2048, SHA-256: what OVMF's verifier accepts) and kept
/// under `target/lab/secureboot`.
pub fn test_keys() -> crate::Result<Keys> {
    let d = dir()?;
    let _turn = crate::lab_lock("secureboot-keys")?;
    let pair = |name: &str| -> crate::Result<(PathBuf, PathBuf)> {
        let (key, cert) = (d.join(format!("{name}.key")), d.join(format!("{name}.crt")));
        if !(key.is_file() && cert.is_file()) {
            run(Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"])
                .args(["-days", "3650", "-subj"])
                .arg(format!("/CN=Terra lab test {name}/"))
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert))
            .map_err(|e| format!("{e}\n(openssl: apt-get install openssl)"))?;
        }
        Ok((key, cert))
    };
    let (_, pk_cert) = pair("PK")?;
    let (_, kek_cert) = pair("KEK")?;
    let (db_key, db_cert) = pair("db")?;
    Ok(Keys {
        pk_cert,
        kek_cert,
        db_key,
        db_cert,
    })
}

/// `virt-fw-vars` from a venv under `target/lab`, made on first use (`python3 -m venv`,
/// then pip from PyPI, bounded at 5 minutes). A venv whose install did not finish is made
/// again: the marker is written last.
pub fn virt_fw_vars() -> crate::Result<PathBuf> {
    let venv = lab_dir().join("venv-virt-firmware");
    let tool = venv.join("bin/virt-fw-vars");
    let ready = venv.join(".terra-ready");
    if ready.is_file() && tool.is_file() {
        return Ok(tool);
    }
    let _turn = crate::lab_lock("venv-virt-firmware")?;
    // Another thread or process may have made it while this one waited.
    if ready.is_file() && tool.is_file() {
        return Ok(tool);
    }
    let _ = std::fs::remove_dir_all(&venv);
    // Debian's interpreter when there is one: python3-venv is its venv module.
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    eprintln!("lab: installing {VIRT_FIRMWARE} into {}", venv.display());
    run(Command::new(python).args(["-m", "venv"]).arg(&venv)).map_err(|e| {
        format!("{e}\n(python3 -m venv needs Debian's python3-venv: apt-get install python3-venv)")
    })?;
    run(Command::new("timeout")
        .arg("300")
        .arg(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VIRT_FIRMWARE,
        ]))?;
    std::fs::write(&ready, VIRT_FIRMWARE).map_err(|e| format!("{}: {e}", ready.display()))?;
    Ok(tool)
}

/// A copy of [`crate::vm::OVMF_VARS_4M`] with `keys` enrolled (PK, KEK, db) and Secure
/// Boot enabled: OVMF then runs only EFI images signed by the db key.
pub fn enrolled_vars(keys: &Keys) -> crate::Result<PathBuf> {
    let out = dir()?.join("OVMF_VARS_4M.terra-test.fd");
    // Written beside and renamed into place: a VM of another test may be reading the store
    // (copy-on-write) while this one makes it anew. The name keeps its `.fd`.
    let tmp = PathBuf::from(format!("{}.fd", crate::temp_name(&out).display()));
    let tool = virt_fw_vars()?;
    let made = run(Command::new(tool)
        .arg("-i")
        .arg(crate::vm::OVMF_VARS_4M)
        .arg("-o")
        .arg(&tmp)
        .arg("--set-pk")
        .arg(OWNER_GUID)
        .arg(&keys.pk_cert)
        .arg("--add-kek")
        .arg(OWNER_GUID)
        .arg(&keys.kek_cert)
        .arg("--add-db")
        .arg(OWNER_GUID)
        .arg(&keys.db_cert)
        .arg("--secure-boot"))
    .and_then(|_| crate::publish(&tmp, &out));
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made.map(|()| out)
}

/// The removable-media path UEFI firmware boots on x86-64 (UEFI 2.10, §3.5.1.1).
pub const REMOVABLE_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// Writes a disk image at `out`: a GPT with one EFI system partition from 1 MiB, FAT,
/// holding `efi` as [`REMOVABLE_PATH`]. Made by sfdisk, mkfs.fat and mtools, so no mount.
pub fn esp_disk(efi: &Path, out: &Path) -> crate::Result<()> {
    const MIB: u64 = 1 << 20;
    let efi_len = std::fs::metadata(efi)
        .map_err(|e| format!("{}: {e}", efi.display()))?
        .len();
    // FAT overhead and the GPT's two copies fit in the margin.
    let part_mib = (efi_len.div_ceil(MIB) + 16).max(64);
    let disk = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    disk.set_len((part_mib + 2) * MIB)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    drop(disk);
    let script = format!(
        "label: gpt\nstart=2048, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
        part_mib * MIB / 512
    );
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().map_err(|e| format!("sfdisk: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("sfdisk: {e}"))?;
    }
    let done = child
        .wait_with_output()
        .map_err(|e| format!("sfdisk: {e}"))?;
    if !done.status.success() {
        return Err(format!(
            "sfdisk {}: {}",
            out.display(),
            String::from_utf8_lossy(&done.stderr)
        ));
    }
    run(Command::new("mkfs.fat")
        .args(["--invariant", "--offset", "2048", "-n", "TERRA-ESP"])
        .arg(out)
        .arg((part_mib * 1024).to_string()))?;
    let image = format!("{}@@{MIB}", out.display());
    for dir in ["::/EFI", "::/EFI/BOOT"] {
        run(Command::new("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &image, dir]))?;
    }
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &image])
        .arg(efi)
        .arg(format!("::/{REMOVABLE_PATH}")))?;
    Ok(())
}
