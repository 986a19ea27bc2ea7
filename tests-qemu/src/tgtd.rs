//! iSCSI targets for the lab: tgtd on the host's loopback, serving disk images as LUN 1.
//! QEMU's user networking shows the host's 127.0.0.1 to the guest as 10.0.2.2. Each
//! [`Tgtd`] has its own port and control port and is stopped by PID when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{lab_dir, run};

/// Where the guest finds the host's loopback under QEMU user networking.
pub const GUEST_HOST_ADDR: &str = "10.0.2.2";

/// A running tgtd.
pub struct Tgtd {
    child: Child,
    ctl: String,
    /// The TCP port it listens on (on 127.0.0.1).
    pub port: u16,
    tids: Vec<u32>,
    log: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Tgtd {
    /// Starts tgtd on 127.0.0.1 and a free port; fails with the package to install when
    /// tgtd is missing.
    pub fn start() -> crate::Result<Tgtd> {
        if crate::host::which("tgtd").is_none() || crate::host::which("tgtadm").is_none() {
            return Err("tgtd is not installed: apt-get install -y tgt".into());
        }
        let dir = lab_dir().join("tgtd");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            // tgtd takes control ports up to 32767; retries move on if one is taken.
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let ctl = (16_000 + (std::process::id() * 100 + n) % 15_000).to_string();
            let log = dir.join(format!("tgtd-{port}.log"));
            let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new("tgtd")
                .args([
                    "-f",
                    "-C",
                    &ctl,
                    "--iscsi",
                    &format!("portal=127.0.0.1:{port}"),
                ])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start tgtd: {e}"))?;
            let mut t = Tgtd {
                child,
                ctl,
                port,
                tids: Vec::new(),
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = t.child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && t.adm(&["--mode", "sys", "--op", "show"]).is_ok()
                {
                    return Ok(t);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = t.log_text();
        }
        Err(format!("tgtd would not start:\n{last}"))
    }

    /// tgtd's own log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs tgtadm against this tgtd.
    pub fn adm(&self, args: &[&str]) -> crate::Result<String> {
        run(Command::new("tgtadm")
            .args(["-C", &self.ctl, "--lld", "iscsi"])
            .args(args))
    }

    /// Target `tid` named `iqn`, open to every initiator, with `image` as LUN 1.
    pub fn target(&mut self, tid: u32, iqn: &str, image: &Path) -> crate::Result<()> {
        self.tids.push(tid);
        let t = tid.to_string();
        self.adm(&[
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            &t,
            "--targetname",
            iqn,
        ])?;
        self.adm(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            &t,
            "--lun",
            "1",
            "--backing-store",
            &image.to_string_lossy(),
        ])?;
        self.adm(&[
            "--mode",
            "target",
            "--op",
            "bind",
            "--tid",
            &t,
            "--initiator-address",
            "ALL",
        ])
        .map(drop)
    }

    /// A CHAP account for `tid`: incoming (the target checks the initiator) or outgoing
    /// (mutual CHAP: the target proves itself).
    pub fn account(&self, tid: u32, user: &str, secret: &str, outgoing: bool) -> crate::Result<()> {
        self.adm(&[
            "--mode",
            "account",
            "--op",
            "new",
            "--user",
            user,
            "--password",
            secret,
        ])?;
        let t = tid.to_string();
        let mut args = vec![
            "--mode", "account", "--op", "bind", "--tid", &t, "--user", user,
        ];
        if outgoing {
            args.push("--outgoing");
        }
        self.adm(&args).map(drop)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        // tgtd ignores SIGTERM; "delete system" ends it, but only once no target is left.
        for tid in &self.tids {
            let t = tid.to_string();
            let _ = self.adm(&["--mode", "target", "--op", "delete", "--force", "--tid", &t]);
        }
        let _ = self.adm(&["--op", "delete", "--mode", "system"]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // By PID, never by name: other tgtd instances may be serving other tests.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The init an iSCSI-booted demo root runs first: it proves it ran from the LUN by writing
/// a file the host reads back from the image, then goes on to the demo init.
pub const PROOF_INIT: &str = r#"#!/bin/sh
echo "TERRA-ISCSI-PROOF uptime=$(cut -d' ' -f1 /proc/uptime)" > /iscsi-proof
sync
echo "TERRA-ISCSI-PROOF written"
exec /sbin/init
"#;

/// A writable copy of `image` (a demo btrfs disk) named `name`, with [`PROOF_INIT`] as
/// `/bin/iscsi-init` in each of `subvolumes`. Needs root (loop mount).
pub fn lun_image(image: &Path, name: &str, subvolumes: &[&str]) -> crate::Result<PathBuf> {
    let dir = lab_dir().join("tgtd");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lun = dir.join(format!("{name}-{}.img", std::process::id()));
    std::fs::copy(image, &lun)
        .map_err(|e| format!("{} -> {}: {e}", image.display(), lun.display()))?;
    with_mounted(&lun, |mnt| {
        for sv in subvolumes {
            let init = mnt.join(sv).join("bin/iscsi-init");
            std::fs::write(&init, PROOF_INIT)
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| format!("{}: {e}", init.display()))?;
        }
        Ok(())
    })?;
    Ok(lun)
}

/// Reads `rel` from the filesystem in `image` (loop mount, read-only).
pub fn read_from_image(image: &Path, rel: &str) -> crate::Result<Option<String>> {
    with_mounted(image, |mnt| Ok(std::fs::read_to_string(mnt.join(rel)).ok()))
}

fn with_mounted<T>(image: &Path, f: impl FnOnce(&Path) -> crate::Result<T>) -> crate::Result<T> {
    if !crate::host::nix_is_root() {
        return Err("mounting a disk image needs root".into());
    }
    let _turn = crate::disk::DISK_LOCK
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let work = crate::disk::tempdir("lun")?;
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    crate::host::forget_stale_btrfs_devices();
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(image)
        .arg(&mnt))?;
    let result = f(&mnt);
    let unmounted = run(Command::new("umount").arg(&mnt));
    let _ = std::fs::remove_dir_all(&work);
    let v = result?;
    unmounted?;
    Ok(v)
}
