//! LUKS2 volumes opened natively (issue 26): the header and its JSON ([`header`]), a
//! keyslot opened with a passphrase into the volume key ([`keyslot`]). No I/O in either;
//! reading the header area and the keyslot area from the device is the caller's.

pub mod header;
pub mod keyslot;

use std::fmt;

/// Why a LUKS2 volume could not be read or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LuksError {
    /// The header or its metadata is not valid LUKS2 (what is wrong).
    Header(String),
    /// Valid, but something stage0 does not implement (what).
    Unsupported(String),
    /// The passphrase or key opens no keyslot.
    WrongKey,
}

impl fmt::Display for LuksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LuksError::Header(w) => write!(f, "not a valid LUKS2 header: {w}"),
            LuksError::Unsupported(w) => write!(f, "unsupported LUKS2 feature: {w}"),
            LuksError::WrongKey => f.write_str("the key opens no keyslot"),
        }
    }
}

impl std::error::Error for LuksError {}

/// Opens the volume in `device` (an image file's bytes: its header area and keyslot areas)
/// with `pass`: the volume key of the first keyslot it opens.
pub fn open_with_passphrase(device: &[u8], pass: &[u8]) -> Result<keyslot::Secret, LuksError> {
    let (_, meta) = header::read(device)?;
    let mut last = LuksError::WrongKey;
    for (n, slot) in &meta.keyslots {
        let Some(digest) = meta.digests.values().find(|d| d.keyslots.contains(n)) else {
            continue;
        };
        let area = usize::try_from(slot.area.offset)
            .ok()
            .and_then(|o| device.get(o..o.checked_add(usize::try_from(slot.area.size).ok()?)?))
            .ok_or_else(|| LuksError::Header(format!("keyslot {n}'s area is past the end")))?;
        match keyslot::open(slot, digest, pass, area) {
            Ok(k) => return Ok(k),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    /// cryptsetup with `pass` on stdin.
    fn cryptsetup(args: &[&str], pass: &[u8]) -> std::process::Output {
        let mut c = Command::new("cryptsetup")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cryptsetup (apt-get install cryptsetup-bin)");
        c.stdin.take().unwrap().write_all(pass).unwrap();
        c.wait_with_output().unwrap()
    }

    /// The volume key as `cryptsetup luksDump --dump-volume-key` prints it.
    fn their_key(img: &str, pass_file: &str) -> Vec<u8> {
        let out = Command::new("cryptsetup")
            .args([
                "luksDump",
                "-q",
                "--dump-volume-key",
                "--key-file",
                pass_file,
                img,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let dump = text.split("MK dump:").nth(1).expect("an MK dump");
        dump.split_whitespace()
            .take_while(|w| w.len() == 2)
            .map(|w| u8::from_str_radix(w, 16).unwrap())
            .collect()
    }

    /// Volumes made by cryptsetup (PBKDF2, Argon2id and Argon2i keyslots; 512- and 256-bit
    /// XTS keys; a second keyslot) open with their passphrases into the volume key cryptsetup
    /// itself dumps, and refuse a wrong passphrase.
    #[test]
    fn volumes_cryptsetup_made_open_into_its_volume_key() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, b"correct horse").unwrap();
        let cases: &[(&str, &[&str])] = &[
            (
                "pbkdf2",
                &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
            ),
            (
                "pbkdf2-sha512-aes128",
                &[
                    "--pbkdf",
                    "pbkdf2",
                    "--hash",
                    "sha512",
                    "--pbkdf-force-iterations",
                    "1000",
                    "--key-size",
                    "256",
                ],
            ),
            (
                "argon2id",
                &[
                    "--pbkdf",
                    "argon2id",
                    "--pbkdf-memory",
                    "32768",
                    "--pbkdf-parallel",
                    "2",
                    "--pbkdf-force-iterations",
                    "4",
                ],
            ),
            (
                "argon2i",
                &[
                    "--pbkdf",
                    "argon2i",
                    "--pbkdf-memory",
                    "16384",
                    "--pbkdf-parallel",
                    "1",
                    "--pbkdf-force-iterations",
                    "4",
                ],
            ),
        ];
        for (name, opts) in cases {
            let img = dir.path().join(format!("{name}.img"));
            std::fs::File::create(&img)
                .unwrap()
                .set_len(24 << 20)
                .unwrap();
            let img = img.to_str().unwrap();
            let mut args = vec!["luksFormat", "-q", "--type", "luks2"];
            args.extend_from_slice(opts);
            args.extend_from_slice(&[img, "-"]);
            let out = cryptsetup(&args, b"correct horse");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let device = std::fs::read(img).unwrap();
            let ours = open_with_passphrase(&device, b"correct horse").unwrap();
            assert_eq!(
                ours.0,
                their_key(img, pass_file.to_str().unwrap()),
                "{name}"
            );
            assert_eq!(
                open_with_passphrase(&device, b"wrong horse").unwrap_err(),
                LuksError::WrongKey,
                "{name}"
            );
        }
        // A second keyslot, added by luksAddKey: either passphrase opens the volume.
        let img = dir.path().join("pbkdf2.img");
        let img = img.to_str().unwrap();
        let out = cryptsetup(
            &[
                "luksAddKey",
                "-q",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                pass_file.to_str().unwrap(),
                img,
                "-",
            ],
            b"battery staple",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = std::fs::read(img).unwrap();
        let a = open_with_passphrase(&device, b"correct horse").unwrap();
        let b = open_with_passphrase(&device, b"battery staple").unwrap();
        assert_eq!(a.0, b.0);
    }
}
