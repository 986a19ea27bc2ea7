//! The controller's lab: an image for diskless nodes (the demo root plus an init that proves
//! which node ran and which version it booted), tagged `v1` to `v4` (one more layer each;
//! `v3` cannot boot), and
//! the controller process itself (`terra-controller serve` on loopback, its own tgtd),
//! stopped by PID with its tgtd when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::oci_root::{layer_from_dir, put_image, put_layer, sha256};
use crate::{free_port, lab_dir, Result};

/// The node's first init: appends its hostname and version to `/etc/node-proof` (the `/etc`
/// overlay's upper directory lives on its LUN) and says so on the console, then runs the
/// demo init.
pub const NODE_INIT: &str = r#"#!/bin/sh
h=$(cat /proc/sys/kernel/hostname)
v=$(cat /usr/share/fleet-version)
echo "node $h version=$v" >> /etc/node-proof
sync
echo "TERRA-NODE-PROOF $h version=$v"
exec /sbin/init
"#;

/// Kernel arguments of the fleet's nodes.
/// A tentative version is confirmed (`terra.demo=health`), which the controller hears of.
pub const NODE_CMDLINE: &str =
    "console=ttyS0 panic=-1 terra.demo=health terra.demo=poweroff terra.rescue=halt init=/bin/node-init";

/// The fleet image's layout (tags `v1`, `v2`; `v3` without the node's init, `v4` after
/// it), cached under target/lab/images by content. (A version whose health check fails is
/// the Debian node's, `tests/scenarios/auto_update.rs`.)
pub fn layout(busybox: &Path) -> Result<PathBuf> {
    let _turn = crate::lab_lock("fleet-layout")?;
    let work = crate::disk::tempdir("fleet-image")?;
    let root = work.join("root");
    crate::disk::demo_root(&root, busybox, "os")?;
    crate::disk::write_exec(&root.join("bin/node-init"), NODE_INIT)?;
    fs::create_dir_all(root.join("usr/share")).map_err(|e| e.to_string())?;
    fs::write(root.join("usr/share/fleet-version"), "v1\n").map_err(|e| e.to_string())?;
    let base = layer_from_dir(&root)?;
    let top_root = work.join("top");
    fs::create_dir_all(top_root.join("usr/share")).map_err(|e| e.to_string())?;
    fs::write(top_root.join("usr/share/fleet-version"), "v2\n").map_err(|e| e.to_string())?;
    let top = layer_from_dir(&top_root)?;
    // v3 takes the node's init away (a whiteout): no version can boot without it, so
    // stage0 falls back in the same boot. v4 fixes that (v2 plus a new version file).
    let broken_root = work.join("broken");
    fs::create_dir_all(broken_root.join("bin")).map_err(|e| e.to_string())?;
    fs::write(broken_root.join("bin/.wh.node-init"), "").map_err(|e| e.to_string())?;
    let broken = layer_from_dir(&broken_root)?;
    let fixed_root = work.join("fixed");
    fs::create_dir_all(fixed_root.join("usr/share")).map_err(|e| e.to_string())?;
    fs::write(fixed_root.join("usr/share/fleet-version"), "v4\n").map_err(|e| e.to_string())?;
    let fixed = layer_from_dir(&fixed_root)?;
    let key = sha256(
        &[
            base.as_slice(),
            top.as_slice(),
            broken.as_slice(),
            fixed.as_slice(),
        ]
        .concat(),
    );
    let layout = lab_dir()
        .join("images")
        .join(format!("fleet-{}", &key[7..19]));
    if !layout.join("index.json").is_file() {
        let tmp = work.join("layout");
        fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let b = put_layer(&tmp, &base, true)?;
        let t = put_layer(&tmp, &top, true)?;
        let x = put_layer(&tmp, &broken, true)?;
        let f = put_layer(&tmp, &fixed, true)?;
        put_image(&tmp, "v1", std::slice::from_ref(&b), &[])?;
        put_image(&tmp, "v2", &[b.clone(), t.clone()], &[])?;
        put_image(&tmp, "v3", &[b.clone(), t.clone(), x], &[])?;
        put_image(&tmp, "v4", &[b, t, f], &[])?;
        fs::create_dir_all(layout.parent().expect("images dir")).map_err(|e| e.to_string())?;
        crate::publish_dir(&tmp, &layout)?;
    }
    let _ = fs::remove_dir_all(&work);
    Ok(layout)
}

/// How to start a controller.
#[derive(Debug, Clone)]
pub struct ControllerSpec {
    /// The `terra-controller` binary.
    pub program: PathBuf,
    /// Its state directory.
    pub state: PathBuf,
    /// `--database`, when not the default SQLite file.
    pub database: Option<String>,
    /// HTTP port on 127.0.0.1.
    pub http_port: u16,
    /// tgtd's port on 127.0.0.1.
    pub iscsi_port: u16,
    /// tgtd's control port.
    pub control_port: u16,
    /// The kernel and initramfs nodes boot.
    pub kernel: PathBuf,
    /// See `kernel`.
    pub initramfs: PathBuf,
    /// Extra arguments (`--chap`, …).
    pub extra: Vec<String>,
    /// Extra environment (`TERRA_CRASH_AT`, …).
    pub env: Vec<(String, String)>,
}

impl ControllerSpec {
    /// A controller on fresh ports; guests reach it at 10.0.2.2.
    pub fn new(program: &Path, state: &Path, kernel: &Path, initramfs: &Path) -> Result<Self> {
        Ok(ControllerSpec {
            program: program.to_path_buf(),
            state: state.to_path_buf(),
            database: None,
            http_port: free_port()?,
            iscsi_port: free_port()?,
            control_port: crate::tgtd::control_port(),
            kernel: kernel.to_path_buf(),
            initramfs: initramfs.to_path_buf(),
            extra: Vec::new(),
            env: Vec::new(),
        })
    }

    /// The URL tests use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The URL guests use (QEMU user networking's view of the host).
    pub fn guest_url(&self) -> String {
        format!("http://{}:{}", crate::tgtd::GUEST_HOST_ADDR, self.http_port)
    }

    /// `terra-controller COMMAND …` against this controller (its URL and token file), as
    /// an operator runs `terra node`/`terra rollout`: (success, stdout + stderr).
    pub fn cli(&self, command: &str, args: &[&str]) -> (bool, String) {
        match Command::new(&self.program)
            .arg(command)
            .args(["--server", &self.url()])
            .arg("--token-file")
            .arg(self.state.join("token"))
            .args(args)
            .output()
        {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("{}: {e}", self.program.display())),
        }
    }
}

/// A running controller.
pub struct Controller {
    child: Child,
    /// How it was started.
    pub spec: ControllerSpec,
}

impl Controller {
    /// Starts it and waits (bounded) for its API; an early exit returns its log.
    pub fn start(spec: &ControllerSpec) -> Result<Controller> {
        fs::create_dir_all(&spec.state).map_err(|e| format!("{}: {e}", spec.state.display()))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.state.join("controller.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&spec.program);
        // A relative --state, as people type it, from the directory above it.
        let (Some(parent), Some(name)) = (spec.state.parent(), spec.state.file_name()) else {
            return Err(format!("{}: no parent directory", spec.state.display()));
        };
        cmd.current_dir(parent)
            .arg("serve")
            .arg("--state")
            .arg(name)
            .args(["--listen", &format!("127.0.0.1:{}", spec.http_port)])
            .args(["--public-url", &spec.guest_url()])
            .args(["--iscsi-listen", &format!("127.0.0.1:{}", spec.iscsi_port)])
            .args([
                "--iscsi-portal",
                &format!("{}:{}", crate::tgtd::GUEST_HOST_ADDR, spec.iscsi_port),
            ])
            .args(["--tgtd-control-port", &spec.control_port.to_string()])
            .arg("--kernel")
            .arg(&spec.kernel)
            .arg("--initramfs")
            .arg(&spec.initramfs)
            .args(["--cmdline", NODE_CMDLINE, "--lun-size", "256"])
            .args(&spec.extra)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(db) = &spec.database {
            cmd.args(["--database", db]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", spec.program.display()))?;
        let mut c = Controller {
            child,
            spec: spec.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.child.try_wait() {
                return Err(format!("the controller exited ({status}):\n{}", c.log()));
            }
            if std::net::TcpStream::connect(("127.0.0.1", spec.http_port)).is_ok() {
                return Ok(c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "the controller did not listen in 120 s:\n{}",
            c.log()
        ))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.spec.state.join("controller.log")).unwrap_or_default()
    }

    /// Waits for it to end by itself (a crash point), bounded.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Kills it (SIGKILL, by PID); its tgtd keeps running, as after a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) it: stopped, its socket still accepts
    /// connections and nothing answers (a controller that hangs); its tgtd, a process of
    /// its own, keeps serving the LUNs.
    pub fn pause(&self, stopped: bool) {
        let sig = if stopped {
            libc::SIGSTOP
        } else {
            libc::SIGCONT
        };
        // SAFETY: kill(2) on our own child's PID (not yet waited for, so not reused); no
        // memory is touched.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// The PID of the tgtd it started (from `<state>/tgtd.pid`).
    pub fn tgtd_pid(&self) -> Option<i32> {
        fs::read_to_string(self.spec.state.join("tgtd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Kills the tgtd a controller with state directory `state` started (by its PID file).
pub fn kill_tgtd(state: &Path) {
    let pid: Option<i32> = fs::read_to_string(state.join("tgtd.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if let Some(pid) = pid {
        // Only a tgtd: a stale PID file must not kill whatever took the number.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "tgtd" {
            // SAFETY: kill(2) with a PID checked above to be a tgtd; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        kill_tgtd(&self.spec.state);
    }
}

/// Opens `url` in a real browser, Debian's headless Chromium (a fresh profile under a
/// scratch directory, so a cookie the page sets lives for this visit only): a screenshot
/// into `png` and the DOM after loading. Bounded to 60 s per run.
pub fn browse(url: &str, png: &Path) -> Result<String> {
    let profile = crate::disk::tempdir("chromium")?;
    let run = |extra: &[String]| -> Result<std::process::Output> {
        Command::new("timeout")
            .args([
                "60",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("chromium (apt-get install chromium): {e}"))
    };
    let shot = run(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1280,1000".into(),
    ])?;
    let dom = run(&["--dump-dom".into()])?;
    let _ = fs::remove_dir_all(&profile);
    if !shot.status.success() || !dom.status.success() || !png.is_file() {
        return Err(format!(
            "chromium failed on {}: {}",
            url.split('?').next().unwrap_or(url),
            String::from_utf8_lossy(&dom.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&dom.stdout).into_owned())
}
