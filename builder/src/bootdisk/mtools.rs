//! The ESP's files through mtools ([`terra_init::esp::EspFiles`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::esp::{self, EspError};

use crate::tool;

/// The ESP's files through mtools on the partition itself: the build host needs no vfat
/// driver (a builder VM's kernel may have none) and nothing is mounted. Every write ends
/// with an fsync of the device, which flushes what mtools wrote through it.
#[derive(Debug, Clone)]
pub struct MtoolsEsp {
    dev: PathBuf,
}

impl MtoolsEsp {
    /// The FAT filesystem on `dev` (a partition or an image file).
    pub fn new(dev: &Path) -> Self {
        MtoolsEsp {
            dev: dev.to_path_buf(),
        }
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        // No user or system mtools.conf, no geometry check on a partition, file times
        // from SOURCE_DATE_EPOCH (the same inputs give the same directory entries): FAT's
        // epoch, 1980-01-01.
        c.env("MTOOLSRC", "/dev/null")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", "315532800")
            .env("TZ", "UTC")
            .arg("-i")
            .arg(&self.dev);
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dev.join(rel)
    }

    fn run(&self, c: &mut Command, rel: &str) -> Result<(), EspError> {
        tool::run(c, "mtools")
            .map(|_| ())
            .map_err(|e| EspError::Write {
                path: self.path(rel),
                err: io::Error::other(e.to_string()),
            })?;
        self.flush(rel)
    }

    fn flush(&self, rel: &str) -> Result<(), EspError> {
        fs::OpenOptions::new()
            .write(true)
            .open(&self.dev)
            .and_then(|f| f.sync_all())
            .map_err(|err| EspError::Write {
                path: self.path(rel),
                err,
            })
    }

    fn exists(&self, rel: &str) -> bool {
        self.cmd("mdir")
            .arg(format!("::/{rel}"))
            .stdin(std::process::Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl esp::EspFiles for MtoolsEsp {
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, EspError> {
        let out = self
            .cmd("mcopy")
            .args(["-n", &format!("::/{rel}"), "-"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|err| EspError::Read {
                path: self.path(rel),
                err,
            })?;
        if out.status.success() {
            return Ok(Some(out.stdout));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("not found") {
            return Ok(None);
        }
        Err(EspError::Read {
            path: self.path(rel),
            err: io::Error::other(format!("mcopy: {}", stderr.trim())),
        })
    }

    fn len(&mut self, rel: &str) -> Result<Option<u64>, EspError> {
        Ok(self.read(rel)?.map(|b| b.len() as u64))
    }

    fn mkdir_all(&mut self, rel: &str) -> Result<(), EspError> {
        let mut done = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(part);
            if !self.exists(&done) {
                let mut c = self.cmd("mmd");
                c.arg(format!("::/{done}"));
                self.run(&mut c, &done)?;
            }
        }
        Ok(())
    }

    fn copy_in(&mut self, src: &Path, rel: &str) -> Result<(), EspError> {
        let mut c = self.cmd("mcopy");
        c.arg("-o").arg(src).arg(format!("::/{rel}"));
        self.run(&mut c, rel)
    }

    fn write(&mut self, rel: &str, data: &[u8]) -> Result<(), EspError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        // A name of our own, created exclusively (O_EXCL: never an existing file or a
        // planted symlink) and owner-only: other users share the temporary directory.
        let mut n = 0u32;
        let (tmp, mut file) = loop {
            let tmp = crate::oci::image::temp_base().join(format!(
                "terra-esp-{}-{n}-{}",
                std::process::id(),
                rel.replace('/', "_")
            ));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(err) => return Err(EspError::Write { path: tmp, err }),
            }
        };
        if let Err(err) = file.write_all(data) {
            let _ = fs::remove_file(&tmp);
            return Err(EspError::Write { path: tmp, err });
        }
        drop(file);
        let out = self.copy_in(&tmp, rel);
        let _ = fs::remove_file(&tmp);
        out
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError> {
        let mut c = self.cmd("mren");
        // -D o: replace an existing `to`. mtools drops `to`'s entry, then renames
        // `from`'s: a power cut in between leaves only `from` (grub.cfg.new), which GRUB
        // reads when `to` is missing (terra_init::esp).
        c.args(["-D", "o", &format!("::/{from}"), &format!("::/{to}")]);
        self.run(&mut c, to)
    }
}
