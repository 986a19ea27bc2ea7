//! Private networks for VMs: a network namespace with a tap device for QEMU and dnsmasq as its
//! DHCP server. Unlike QEMU's user networking, this DHCP server sends whatever options a test
//! asks for (option 17 root-path, say), and servers started in the namespace (tgtd, …) are
//! reached by the guest at the tap's address. The host's own interfaces are never touched.
//!
//! Every `ip` command is bounded in time; the namespace is deleted by name (which removes its
//! tap) and dnsmasq killed by PID when their guards drop, pass or fail. Daemons started here
//! also get `SIGKILL` should the thread that started them die first (`PR_SET_PDEATHSIG`), so
//! a test runner killed mid-run leaves none behind. Needs root, `ip` (iproute2), `/dev/net/tun`
//! and `dnsmasq` (dnsmasq-base); [`require`] says which is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bound on each `ip` command.
const IP_LIMIT: Duration = Duration::from_secs(10);
/// Bound on dnsmasq becoming ready.
const DNSMASQ_READY: Duration = Duration::from_secs(10);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Checks that this host can make namespaced networks: root, `ip`, `/dev/net/tun`, `dnsmasq`.
/// The error names everything missing and how to get it.
pub fn require() -> crate::Result<()> {
    let mut missing = Vec::new();
    if !crate::host::nix_is_root() {
        missing.push("root (network namespaces and tap devices need it)".to_string());
    }
    if crate::host::which("ip").is_none() {
        missing.push("ip: apt-get install -y iproute2".to_string());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (modprobe tun; in a container, pass the device in)".into());
    }
    if crate::host::which("dnsmasq").is_none() {
        missing.push("dnsmasq: apt-get install -y dnsmasq-base".to_string());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "a namespaced network for the VM needs what this host lacks:\n  {}\n\
             (as root, scripts/setup-host.sh installs the packages)",
            missing.join("\n  ")
        ))
    }
}

/// Runs `cmd` to completion within `limit` (killed by PID after it), failing with its stderr.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> crate::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {limit:?}"));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes a daemon get `SIGKILL` when the thread that spawned it dies, so that nothing
/// outlives a test runner killed before its guards could drop. (`ip netns exec` execs the
/// daemon; the setting survives exec.) The spawning thread must live as long as the daemon
/// should: the guard's owner, normally the test's own thread.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A network namespace `terra-<tag>-<pid>-<n>` with its loopback up; deleted on drop, with
/// every device in it. Kill the processes running in it first (drop their guards before
/// this one), or the namespace lives on unnamed until they end.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes the namespace. Fails with [`require`]'s message when the host lacks something.
    pub fn new(tag: &str) -> crate::Result<Netns> {
        require()?;
        let name = format!(
            "terra-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run_bounded(Command::new("ip").args(["netns", "add", &name]), IP_LIMIT)?;
        // From here on, Drop deletes it.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name, for `ip netns exec` and `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args…`, bounded in time.
    pub fn ip(&self, args: &[&str]) -> crate::Result<String> {
        run_bounded(
            Command::new("ip").args(["-n", &self.name]).args(args),
            IP_LIMIT,
        )
    }

    /// A command running `program` inside the namespace (`ip netns exec`, which execs it:
    /// the child's PID is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// A persistent tap device `ifname` in the namespace with address `cidr` (e.g.
    /// `10.77.0.1/24`), up. It has carrier once QEMU opens it (see [`crate::vm::Tap`]).
    pub fn add_tap(&self, ifname: &str, cidr: &str) -> crate::Result<()> {
        self.ip(&["tuntap", "add", "dev", ifname, "mode", "tap"])?;
        self.ip(&["addr", "add", cidr, "dev", ifname])?;
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its virtual devices (the tap) with it.
        let _ = run_bounded(
            Command::new("ip").args(["netns", "del", &self.name]),
            IP_LIMIT,
        );
    }
}

/// dnsmasq as a DHCP server only (`--port=0`: no DNS) inside a [`Netns`], in the foreground,
/// logging every exchange (`--log-dhcp`), offering at once (`--no-ping`); killed by PID on
/// drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    dir: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq on `iface` of `ns`, handing out `range` (dnsmasq's `--dhcp-range`
    /// value, e.g. `10.77.0.50,10.77.0.99,255.255.255.0,1h`), with `extra` arguments (e.g.
    /// `--dhcp-option=17,iscsi:…`; no quotes: given as an argument, dnsmasq would send them
    /// as part of the value). Returns once dnsmasq logs its range, within a bound.
    pub fn start(ns: &Netns, iface: &str, range: &str, extra: &[&str]) -> crate::Result<Dnsmasq> {
        let dir = crate::disk::tempdir("dnsmasq")?;
        let log = dir.join("dnsmasq.log");
        let mut cmd = ns.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--bind-interfaces",
            "--log-dhcp",
            // No ping before an offer: nothing else is on this network, and it costs 3 s.
            "--no-ping",
        ])
        .arg(format!("--interface={iface}"))
        .arg(format!("--dhcp-range={range}"))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = die_with_parent(&mut cmd)
            .spawn()
            .map_err(|e| format!("cannot start dnsmasq: {e}"))?;
        // From here on, Drop kills it and removes the directory.
        let mut d = Dnsmasq { child, dir };
        let start = Instant::now();
        while start.elapsed() < DNSMASQ_READY {
            if d.log().contains("DHCP, IP range") {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!("dnsmasq ended ({status}); its log:\n{}", d.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "dnsmasq not ready within {DNSMASQ_READY:?}; its log:\n{}",
            d.log()
        ))
    }

    /// Its log so far (every DHCP exchange, with the options sent).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// Its lease file: one line per lease, `expiry mac address hostname client-id`.
    pub fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.join("leases")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // `ip netns exec` execs dnsmasq, so this PID is dnsmasq's.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
