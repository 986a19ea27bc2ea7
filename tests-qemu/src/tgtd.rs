//! iSCSI targets for the lab: tgtd serving disk images as LUN 1, either on the host's
//! loopback ([`Tgtd::start`]; QEMU's user networking shows the host's 127.0.0.1 to the guest
//! as 10.0.2.2) or on an address inside a network namespace ([`Tgtd::start_in`], for a VM on
//! a [`crate::netns`] tap). Each [`Tgtd`] has its own control port, driven by `tgtadm` from
//! the host (the control socket is a file, so this works for a namespaced tgtd too), and is
//! stopped by PID when dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::{lab_dir, run};

/// Where the guest finds the host's loopback under QEMU user networking.
pub const GUEST_HOST_ADDR: &str = "10.0.2.2";

/// Where the guest finds the host's IPv6 loopback (`::1`) under QEMU user networking, which
/// advertises fec0::/64 to it (router advertisements) for SLAAC.
pub const GUEST_HOST_ADDR6: &str = "fec0::2";

/// iSCSI's well-known port, which a tgtd in a namespace of its own can always take.
pub const ISCSI_PORT: u16 = 3260;

/// A running tgtd.
pub struct Tgtd {
    child: Child,
    ctl: String,
    /// The address it listens on: 127.0.0.1, or the one given to [`Tgtd::start_in`].
    pub addr: String,
    /// The TCP port it listens on.
    pub port: u16,
    /// Runs in a network namespace (readiness is then checked there, not by connecting).
    namespaced: bool,
    tids: Vec<u32>,
    log: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tgtd control port (a socket name under /var/run/tgtd, not a TCP port; tgtd takes up to
/// 32767) for a tgtd of this lab, the controller's included ([`crate::fleet`]): one counter
/// per process, so no two tgtds of one process share one, spread by PID across processes
/// (a taken one makes tgtd exit, and [`Tgtd`] retries with the next).
pub fn control_port() -> u16 {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    (16_000 + (std::process::id().wrapping_mul(100).wrapping_add(n)) % 15_000) as u16
}

impl Tgtd {
    /// Starts tgtd on 127.0.0.1 and a free port; fails with the package to install when
    /// tgtd is missing.
    pub fn start() -> crate::Result<Tgtd> {
        Self::spawn(None, "127.0.0.1", None)
    }

    /// Starts tgtd on 127.0.0.1:`port`: a target that comes back where it was (after
    /// [`Tgtd::kill`]).
    pub fn start_at(port: u16) -> crate::Result<Tgtd> {
        Self::spawn(None, "127.0.0.1", Some(port))
    }

    /// Kills tgtd at once (SIGKILL, by PID), as a crash or a power loss of the target
    /// would: its connections close, and it forgets every session.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.tids.clear();
    }

    /// Starts tgtd on another loopback address of the host (all of 127/8 is loopback on
    /// Linux) and a free port: a second portal, e.g. for a login redirect. `::1` gives an
    /// IPv6 portal, which QEMU's user networking shows the guest as [`GUEST_HOST_ADDR6`].
    pub fn start_on(addr: &str) -> crate::Result<Tgtd> {
        Self::spawn(None, addr, None)
    }

    /// Starts tgtd on `addr`:`port` of the host (e.g. `::1` again after [`Tgtd::kill`]).
    pub fn start_on_at(addr: &str, port: u16) -> crate::Result<Tgtd> {
        Self::spawn(None, addr, Some(port))
    }

    /// Starts tgtd inside `ns`, listening on `addr` (an IPv4 address of one of its
    /// interfaces, e.g. a tap's) and [`ISCSI_PORT`]. It gets `SIGKILL` should the calling
    /// thread die before dropping it ([`crate::netns::die_with_parent`]). Drop it before the
    /// namespace.
    pub fn start_in(ns: &Netns, addr: &str) -> crate::Result<Tgtd> {
        Self::spawn(Some(ns), addr, None)
    }

    fn spawn(ns: Option<&Netns>, addr: &str, fixed: Option<u16>) -> crate::Result<Tgtd> {
        if crate::host::which("tgtd").is_none() || crate::host::which("tgtadm").is_none() {
            return Err("tgtd is not installed: apt-get install -y tgt".into());
        }
        let dir = lab_dir().join("tgtd");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = match (ns, fixed) {
                (_, Some(p)) => p,
                (Some(_), None) => ISCSI_PORT,
                (None, None) => crate::free_port_on(addr)?,
            };
            // tgtd takes control ports up to 32767; retries move on if one is taken.
            let ctl = control_port().to_string();
            let log = dir.join(format!("tgtd-{ctl}-{port}.log"));
            let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            let mut cmd = match ns {
                Some(ns) => {
                    let mut c = ns.command("tgtd");
                    crate::netns::die_with_parent(&mut c);
                    c
                }
                None => Command::new("tgtd"),
            };
            let child = cmd
                .args([
                    "-f",
                    "-C",
                    &ctl,
                    "--iscsi",
                    // tgtd reads an IPv6 portal in brackets.
                    &if addr.contains(':') {
                        format!("portal=[{addr}]:{port}")
                    } else {
                        format!("portal={addr}:{port}")
                    },
                ])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start tgtd: {e}"))?;
            let mut t = Tgtd {
                child,
                ctl,
                addr: addr.to_string(),
                port,
                namespaced: ns.is_some(),
                tids: Vec::new(),
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = t.child.try_wait() {
                    break;
                }
                if t.listening() && t.adm(&["--mode", "sys", "--op", "show"]).is_ok() {
                    return Ok(t);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = t.log_text();
        }
        Err(format!("tgtd would not start:\n{last}"))
    }

    /// Whether tgtd listens on its portal. In a namespace this reads the namespace's TCP
    /// table through tgtd's own /proc entry (`ip netns exec` execs tgtd, so the child's PID
    /// is tgtd's) instead of connecting across namespaces.
    fn listening(&self) -> bool {
        if !self.namespaced {
            return std::net::TcpStream::connect((self.addr.as_str(), self.port)).is_ok();
        }
        let Ok(want) = self.addr.parse::<Ipv4Addr>() else {
            return false;
        };
        let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", self.child.id()))
            .unwrap_or_default();
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let Some((a, p)) = f.get(1).and_then(|s| s.split_once(':')) else {
                return false;
            };
            // The kernel prints the address as the u32 it holds in network order.
            let a = u32::from_str_radix(a, 16).map(|a| Ipv4Addr::from(a.to_ne_bytes()));
            let p = u16::from_str_radix(p, 16);
            a == Ok(want) && p == Ok(self.port) && f.get(3) == Some(&"0A") // LISTEN
        })
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
    // Unique in this process too: scenarios that pick one name run side by side.
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let lun = dir.join(format!("{name}-{}-{n}.img", std::process::id()));
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(&lun))?;
    crate::disk::with_mount(&lun, |mnt| {
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

/// Like [`lun_image`], and writes `files` (path relative to each subvolume, content) as
/// executables too.
pub fn lun_image_with(
    image: &Path,
    name: &str,
    subvolumes: &[&str],
    files: &[(&str, &str)],
) -> crate::Result<PathBuf> {
    let lun = lun_image(image, name, subvolumes)?;
    crate::disk::with_mount(&lun, |mnt| {
        for sv in subvolumes {
            for (rel, text) in files {
                let path = mnt.join(sv).join(rel);
                std::fs::write(&path, text)
                    .and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok(())
    })?;
    Ok(lun)
}

/// Reads `rel` from the filesystem in `image` (loop mount, read-only).
pub fn read_from_image(image: &Path, rel: &str) -> crate::Result<Option<String>> {
    crate::disk::with_mount(image, |mnt| Ok(std::fs::read_to_string(mnt.join(rel)).ok()))
}

/// A LUN image file, removed when dropped (when the test or command ends, pass or fail).
#[derive(Debug)]
pub struct Lun(pub PathBuf);

impl Drop for Lun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
