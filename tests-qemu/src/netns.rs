//! Private networks: network namespaces joined by veth pairs (a client namespace facing a
//! server namespace, say) or holding a tap device for QEMU, with dnsmasq as their DHCP server.
//! Unlike QEMU's user networking, this DHCP server sends whatever options a test asks for
//! (option 17 root-path, say), and servers started in a namespace (tgtd, …) are reached by a
//! guest at the tap's address. The host's own interfaces are never touched.
//!
//! Every `ip` command is bounded in time; a namespace is deleted by name (which removes its
//! taps and veths) and dnsmasq killed by PID when their guards drop, pass or fail. Daemons
//! started here also get `SIGKILL` should the thread that started them die first
//! (`PR_SET_PDEATHSIG`), so a test runner killed mid-run leaves none behind. Needs root, `ip`
//! (iproute2) and `dnsmasq` (dnsmasq-base), and `/dev/net/tun` for taps; [`require`] and
//! [`require_veth`] say which is missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound on each `ip` command.
const IP_LIMIT: Duration = Duration::from_secs(10);
/// Bound on dnsmasq becoming ready.
const DNSMASQ_READY: Duration = Duration::from_secs(10);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Checks that this host can make namespaced networks for VMs: root, `ip`, `/dev/net/tun`,
/// `dnsmasq`. The error names everything missing and how to get it.
pub fn require() -> crate::Result<()> {
    check("a namespaced network for the VM", true)
}

/// Checks that this host can make namespaces joined by veth pairs with dnsmasq in them (no
/// taps, so no `/dev/net/tun`): root, `ip`, `dnsmasq`. The error names everything missing and
/// how to get it.
pub fn require_veth() -> crate::Result<()> {
    check("network namespaces joined by veth pairs", false)
}

/// The check behind [`require`] (`tap`: `/dev/net/tun` too) and [`require_veth`]; `what`
/// names what needs it in the message.
fn check(what: &str, tap: bool) -> crate::Result<()> {
    let mut missing = Vec::new();
    if !crate::host::nix_is_root() {
        missing.push("root (network namespaces and their devices need it)".to_string());
    }
    if crate::host::which("ip").is_none() {
        missing.push("ip: apt-get install -y iproute2".to_string());
    }
    if tap && !Path::new("/dev/net/tun").exists() {
        missing.push(TUN_MISSING.to_string());
    }
    if crate::host::which("dnsmasq").is_none() {
        missing.push(DNSMASQ_MISSING.to_string());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what} needs what this host lacks:\n  {}\n\
             (as root, scripts/setup-host.sh installs the packages)",
            missing.join("\n  ")
        ))
    }
}

const TUN_MISSING: &str = "/dev/net/tun (modprobe tun; in a container, pass the device in)";
const DNSMASQ_MISSING: &str = "dnsmasq: apt-get install -y dnsmasq-base";

/// What [`run_timed`] saw of a command: its wall time from spawn to exit, status and output.
#[derive(Debug)]
pub struct Timed {
    /// From just before the spawn to the moment its exit was reaped.
    pub elapsed: Duration,
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `cmd` (stdin from /dev/null, output captured) to completion within `limit`, killing
/// it by PID after that, and times it from spawn to exit: a thread waits on the child, so the
/// exit is seen when it happens, not at the next poll. A non-zero exit is not an error here
/// (see [`Timed::status`]); not finishing within `limit` is.
pub fn run_timed(cmd: &mut Command, limit: Duration) -> crate::Result<Timed> {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let pid = child.id();
    // Drained as it comes, so a child with much to say cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send((status, start.elapsed()));
    });
    match rx.recv_timeout(limit) {
        Ok((status, elapsed)) => {
            let _ = waiter.join();
            let status = status.map_err(|e| format!("{what}: {e}"))?;
            Ok(Timed {
                elapsed,
                status,
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
            })
        }
        Err(_) => {
            // The waiter still owns the child; kill it by PID and let the waiter reap it.
            if let Ok(p) = i32::try_from(pid) {
                // SAFETY: kill(2) on the PID of a child this process spawned and has not
                // reaped (its waiter has not reported).
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            let _ = waiter.join();
            // The readers end when the pipes close; not waited for, should something the
            // command started still hold them.
            drop((out, err));
            Err(format!("{what} did not finish within {limit:?}"))
        }
    }
}

/// Runs `cmd` to completion within `limit` (killed by PID after it), returning its stdout and
/// failing with its stderr.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> crate::Result<String> {
    let t = run_timed(cmd, limit)?;
    if !t.status.success() {
        return Err(format!("{cmd:?} failed ({}):\n{}", t.status, t.stderr));
    }
    Ok(t.stdout)
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
    /// Makes the namespace. Fails with [`require_veth`]'s message when the host lacks
    /// something ([`Netns::add_tap`] also needs `/dev/net/tun`: check [`require`] for VMs).
    pub fn new(tag: &str) -> crate::Result<Netns> {
        require_veth()?;
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

    /// The file `ip netns add` bound it to, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Moves the calling thread into the namespace (`setns`): that thread alone, and the
    /// threads it spawns afterwards, not the process. Call it on a thread made for the purpose,
    /// which ends with the work done there.
    pub fn enter(&self) -> crate::Result<()> {
        use std::os::fd::AsRawFd;
        let path = self.path();
        let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: setns(2) on a descriptor this function owns for the call; it changes only
        // this thread's network namespace and touches no memory of ours.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
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
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A persistent tap device `ifname` in the namespace with address `cidr` (e.g.
    /// `10.77.0.1/24`), up. It has carrier once QEMU opens it (see [`crate::vm::Tap`]).
    pub fn add_tap(&self, ifname: &str, cidr: &str) -> crate::Result<()> {
        if !Path::new("/dev/net/tun").exists() {
            return Err(format!("a tap device needs {TUN_MISSING}"));
        }
        self.ip(&["tuntap", "add", "dev", ifname, "mode", "tap"])?;
        self.add_addr(ifname, cidr)?;
        self.link_up(ifname)
    }

    /// A veth pair: `ifname` with MAC address `mac` in this namespace, its peer `peer_if` in
    /// `peer`; both down. Each end goes with its namespace when that is deleted.
    pub fn add_veth(
        &self,
        ifname: &str,
        mac: &str,
        peer: &Netns,
        peer_if: &str,
    ) -> crate::Result<()> {
        run_bounded(
            Command::new("ip").args([
                "link", "add", ifname, "address", mac, "netns", &self.name, "type", "veth", "peer",
                "name", peer_if, "netns", &peer.name,
            ]),
            IP_LIMIT,
        )
        .map(drop)
    }

    /// Adds address `cidr` (e.g. `10.77.0.1/24`) to `ifname`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> crate::Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Sets `ifname` up.
    pub fn link_up(&self, ifname: &str) -> crate::Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Sets `ifname` down (a veth peer then loses carrier).
    pub fn link_down(&self, ifname: &str) -> crate::Result<()> {
        self.ip(&["link", "set", ifname, "down"]).map(drop)
    }

    /// Waits, at most `limit`, for `ifname` to have carrier (`LOWER_UP`: for a veth, once
    /// both ends are up).
    pub fn wait_carrier(&self, ifname: &str, limit: Duration) -> crate::Result<()> {
        let start = Instant::now();
        loop {
            if self
                .ip(&["link", "show", "dev", ifname])?
                .contains("LOWER_UP")
            {
                return Ok(());
            }
            if start.elapsed() >= limit {
                return Err(format!(
                    "{ifname} in {}: no carrier within {limit:?}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds IPv6 address `cidr` to `ifname` and sets the link up, with duplicate address
    /// detection off for the link (`accept_dad=0`): the address, and the link-local one the
    /// kernel makes once the link has carrier (router advertisements go out from it), are
    /// usable at once, so a server started next can bind them and answer a client's first
    /// router solicitation. (A veth has no link-local address before its peer is up, so it
    /// cannot be waited for here.)
    pub fn add_addr6(&self, ifname: &str, cidr: &str) -> crate::Result<()> {
        crate::netns::run_bounded(
            self.command("sysctl")
                .arg("-qw")
                .arg(format!("net.ipv6.conf.{ifname}.accept_dad=0")),
            IP_LIMIT,
        )?;
        self.ip(&["-6", "addr", "add", cidr, "dev", ifname, "nodad"])?;
        self.link_up(ifname)
    }

    /// Removes the IPv4 routes and addresses on `ifname` (what a DHCP client applied), so
    /// the next client starts from a bare link.
    pub fn flush(&self, ifname: &str) -> crate::Result<()> {
        self.ip(&["-4", "route", "flush", "dev", ifname])?;
        self.ip(&["-4", "addr", "flush", "dev", ifname]).map(drop)
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
/// logging every exchange (`--log-dhcp`), offering at once (`--no-ping`) unless started with
/// [`Dnsmasq::start_pinging`]; killed by PID on drop.
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
        Self::spawn(ns, iface, range, extra, false)
    }

    /// [`Dnsmasq::start`] with dnsmasq's default ping check left on: before offering an
    /// address it has not leased, dnsmasq pings it and waits for silence, so a client's first
    /// offer comes late. For measuring against dnsmasq as it is normally run.
    pub fn start_pinging(
        ns: &Netns,
        iface: &str,
        range: &str,
        extra: &[&str],
    ) -> crate::Result<Dnsmasq> {
        Self::spawn(ns, iface, range, extra, true)
    }

    fn spawn(
        ns: &Netns,
        iface: &str,
        range: &str,
        extra: &[&str],
        ping: bool,
    ) -> crate::Result<Dnsmasq> {
        if crate::host::which("dnsmasq").is_none() {
            return Err(format!(
                "a DHCP server in {} needs {DNSMASQ_MISSING}",
                ns.name
            ));
        }
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
        ])
        // No ping before an offer: nothing else is on this network, and it costs 3 s.
        .args((!ping).then_some("--no-ping"))
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
            // An IPv4 range, an IPv6 one, or router advertisements alone (`ra-only`).
            let log = d.log();
            if [
                "DHCP, IP range",
                "DHCPv6, IP range",
                "router advertisement on",
            ]
            .iter()
            .any(|m| log.contains(m))
            {
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
