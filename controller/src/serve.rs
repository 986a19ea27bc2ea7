//! `terra serve`: opens the state directory and database, makes sure tgtd runs, finishes
//! what a killed controller left, then serves HTTP while a watcher keeps tgtd's targets in
//! step with the database (tgtd keeps no state: after it restarts, every target is made
//! again) and notices nodes that booted.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::db::{redact_url, Db};
use crate::http::{self, App};
use crate::node::random_token;
use crate::provision::{Controller, Settings};
use crate::storage::{write_private, Storage, DEFAULT_LUN_MB};
use crate::tgt::{spawn_tgtd, Tgt};

/// tgtd's control port the controller uses by default (not the system tgtd's 0).
pub const DEFAULT_TGTD_CONTROL_PORT: u16 = 13260;

/// `terra serve`'s options.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The state directory.
    pub state: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the state directory.
    pub database: Option<String>,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// The URL nodes reach the HTTP server at.
    pub public_url: String,
    /// tgtd's portal (`addr:port`).
    pub iscsi_listen: String,
    /// The portal nodes are told (`host:port`).
    pub iscsi_portal: String,
    /// tgtd's control port.
    pub tgtd_control_port: u16,
    /// Shared kernel.
    pub kernel: PathBuf,
    /// Shared initramfs.
    pub initramfs: PathBuf,
    /// Kernel arguments of every entry.
    pub cmdline: String,
    /// The token file (default `<state>/token`, made on first start).
    pub token_file: Option<PathBuf>,
    /// Generated CHAP for every node.
    pub chap: bool,
    /// Registries over plain HTTP.
    pub plain_http: bool,
    /// LUN size, MiB.
    pub lun_mb: u64,
    /// `--verify-key` files: images must be signed by one of them.
    pub verify_keys: Vec<PathBuf>,
}

impl ServeOptions {
    /// Defaults around a state directory.
    pub fn new(state: &Path) -> ServeOptions {
        ServeOptions {
            state: state.to_path_buf(),
            database: None,
            listen: "127.0.0.1:8080".parse().expect("address"),
            public_url: String::new(),
            iscsi_listen: "127.0.0.1:3260".into(),
            iscsi_portal: String::new(),
            tgtd_control_port: DEFAULT_TGTD_CONTROL_PORT,
            kernel: state.join("boot/vmlinuz"),
            initramfs: state.join("boot/initrd.img"),
            cmdline: String::new(),
            token_file: None,
            chap: false,
            plain_http: false,
            lun_mb: DEFAULT_LUN_MB,
            verify_keys: Vec::new(),
        }
    }
}

/// A file's content, or a new random one written owner-only.
fn read_or_make(path: &Path, len: usize) -> Result<String, String> {
    match fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let value = random_token(len).map_err(|e| format!("random: {e}"))?;
    write_private(path, format!("{value}\n").as_bytes()).map_err(|e| e.to_string())?;
    Ok(value)
}

/// Starts tgtd when it does not answer on its control port; its PID goes to
/// `<state>/tgtd.pid`. It runs in its own session: nodes keep their disks while the
/// controller restarts.
fn ensure_tgtd(tgt: &Tgt, opts: &ServeOptions) -> Result<Option<u32>, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // The tgtd this controller started stays its child: reap it once it has died, so a
    // restarted tgtd leaves no zombie behind (by its PID only: other children are waited
    // for by the code that made them).
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let started = STARTED.load(Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(started as i32) {
        if let Ok(Some(_)) =
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG)
        {
            STARTED.store(0, Ordering::SeqCst);
        }
    }
    if tgt.ping().is_ok() {
        return Ok(None);
    }
    let portal: std::net::SocketAddr = opts.iscsi_listen.parse().map_err(|e| {
        format!(
            "--iscsi-listen {}: {e} (an address:port)",
            opts.iscsi_listen
        )
    })?;
    let pid = spawn_tgtd(opts.tgtd_control_port, portal, &opts.state.join("tgtd.log"))
        .map_err(|e| format!("tgtd on {}: {e}", opts.iscsi_listen))?;
    STARTED.store(pid, Ordering::SeqCst);
    let pid_file = opts.state.join("tgtd.pid");
    fs::write(&pid_file, format!("{pid}\n")).map_err(|e| format!("{}: {e}", pid_file.display()))?;
    Ok(Some(pid))
}

/// The shared initramfs as served: a copy padded with zeros to a multiple of 4 bytes when
/// it is not one already. The kernel reads the node's own archive, appended after it, only
/// at a 4-byte boundary (and skips zeros between archives); iPXE under BIOS aligns initrds
/// itself, but under UEFI the kernel's EFI stub concatenates `initrd=` files as they are.
fn aligned_initramfs(initramfs: &Path, state: &Path) -> Result<PathBuf, String> {
    let len = fs::metadata(initramfs)
        .map_err(|e| format!("--initramfs {}: {e}", initramfs.display()))?
        .len();
    if len % 4 == 0 {
        return Ok(initramfs.to_path_buf());
    }
    let mut data =
        fs::read(initramfs).map_err(|e| format!("--initramfs {}: {e}", initramfs.display()))?;
    data.resize(data.len().next_multiple_of(4), 0);
    let served = state.join("initrd.served.img");
    write_private(&served, &data).map_err(|e| e.to_string())?;
    Ok(served)
}

/// Whether a tgtd listening on `portals` serves `want`: the same address and port, or the
/// port on the wildcard address of its family.
pub fn portal_served(portals: &[SocketAddr], want: SocketAddr) -> bool {
    portals.iter().any(|p| {
        p.port() == want.port()
            && (p.ip() == want.ip() || (p.ip().is_unspecified() && p.is_ipv4() == want.is_ipv4()))
    })
}

/// Runs the controller until it is killed.
pub fn serve(mut opts: ServeOptions) -> Result<(), String> {
    for (what, p) in [("--kernel", &opts.kernel), ("--initramfs", &opts.initramfs)] {
        if !p.is_file() {
            return Err(format!(
                "{what} {}: no such file (the kernel and initramfs every node boots; build the \
                 initramfs with `terra initramfs --modules-list \
                 /usr/share/terra/modules/baremetal.modules` — initramfs/baremetal.modules in a \
                 source tree —, which holds the NIC drivers and iscsi_tcp)",
                p.display()
            ));
        }
    }
    // Absolute from here on: LUN paths go to tgtd, which does not run where we do
    // (`--state state`, as people type it, made every node add fail).
    opts.state = std::path::absolute(&opts.state)
        .map_err(|e| format!("--state {}: {e}", opts.state.display()))?;
    let verify = if opts.verify_keys.is_empty() {
        None
    } else {
        Some(
            terra_builder::oci::VerifyPolicy::from_files(&opts.verify_keys)
                .map_err(|e| format!("--verify-key: {e}"))?,
        )
    };
    fs::create_dir_all(&opts.state).map_err(|e| format!("{}: {e}", opts.state.display()))?;
    let storage = Storage::open(&opts.state).map_err(|e| e.to_string())?;
    let id = read_or_make(&opts.state.join("id"), 12)?;
    let token_file = opts
        .token_file
        .clone()
        .unwrap_or_else(|| opts.state.join("token"));
    let token = read_or_make(&token_file, 32)?;
    let url = opts.database.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            opts.state.join("terra.db").display()
        )
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async move {
        let db = Db::open(&url).await.map_err(|e| e.to_string())?;
        let tgt = Tgt::new(opts.tgtd_control_port);
        match ensure_tgtd(&tgt, &opts)? {
            Some(pid) => eprintln!(
                "terra serve: started tgtd (pid {pid}) on {}",
                opts.iscsi_listen
            ),
            // A tgtd that outlived a controller (by design) listens where that controller
            // said: nodes must not be sent to a portal nobody serves.
            None => {
                let want: SocketAddr = opts.iscsi_listen.parse().map_err(|e| {
                    format!(
                        "--iscsi-listen {}: {e} (an address:port)",
                        opts.iscsi_listen
                    )
                })?;
                let portals = tgt.portals().map_err(|e| e.to_string())?;
                if !portal_served(&portals, want) {
                    let shown: Vec<String> = portals.iter().map(|p| p.to_string()).collect();
                    return Err(format!(
                        "--iscsi-listen {want}: the tgtd already running on control port {} \
                         serves iSCSI on {} only; nodes would be sent to a portal nobody \
                         listens on. Stop that tgtd (its PID is in {}) or start with \
                         --iscsi-listen {} or another --tgtd-control-port",
                        opts.tgtd_control_port,
                        shown.join(", "),
                        opts.state.join("tgtd.pid").display(),
                        shown.first().map_or("ADDR:PORT", String::as_str),
                    ));
                }
            }
        }
        let portal = if opts.iscsi_portal.is_empty() {
            opts.iscsi_listen.clone()
        } else {
            opts.iscsi_portal.clone()
        };
        let public_url = if opts.public_url.is_empty() {
            format!("http://{}", opts.listen)
        } else {
            opts.public_url.trim_end_matches('/').to_string()
        };
        let ctl = Arc::new(Controller::new(
            db,
            storage,
            tgt.clone(),
            Settings {
                id: id.clone(),
                portal,
                plain_http: opts.plain_http,
                chap: opts.chap,
                lun_mb: opts.lun_mb,
                cmdline: opts.cmdline.clone(),
                report_url: public_url.clone(),
                verify,
            },
        ));
        for line in ctl.recover().await.map_err(|e| e.to_string())? {
            eprintln!("terra serve: {line}");
        }
        for line in ctl.recover_rollouts().await.map_err(|e| e.to_string())? {
            eprintln!("terra serve: {line}");
        }
        match ctl.restore().await {
            Ok(r) if !r.is_empty() => {
                eprintln!("terra serve: targets made again for {}", r.join(", "))
            }
            Ok(_) => {}
            Err(e) => eprintln!("terra serve: {e}"),
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| format!("--listen {}: {e}", opts.listen))?;
        eprintln!(
            "terra serve: controller {id} on http://{} (nodes use {public_url}), iSCSI on {} \
             (nodes use {}), database {} ({}), state {}",
            opts.listen,
            opts.iscsi_listen,
            ctl.settings.portal,
            redact_url(&url),
            ctl.db.backend,
            opts.state.display()
        );
        let watcher = {
            let (ctl, opts) = (ctl.clone(), opts.clone());
            tokio::spawn(async move { watch(ctl, opts).await })
        };
        let initramfs = aligned_initramfs(&opts.initramfs, &opts.state)?;
        let reports = crate::reports::Sink::start(ctl.clone());
        let app = Arc::new(App {
            ctl,
            reports,
            token,
            public_url,
            kernel: opts.kernel.clone(),
            initramfs,
        });
        let served = axum::serve(listener, http::router(app))
            .await
            .map_err(|e| format!("http: {e}"));
        watcher.abort();
        served
    })
}

/// Every second: tgtd answers (else it is started again), every node's target is there
/// (else made again), and nodes whose initiator logged in are marked booted (a node that
/// boots and powers off within seconds is still seen logged in).
async fn watch(ctl: Arc<Controller>, opts: ServeOptions) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tgt = ctl.tgt.clone();
        let o = opts.clone();
        match tokio::task::spawn_blocking(move || ensure_tgtd(&tgt, &o)).await {
            Ok(Ok(Some(pid))) => {
                eprintln!("terra serve: tgtd was gone; started it again (pid {pid})")
            }
            Ok(Err(e)) => {
                eprintln!("terra serve: {e}");
                continue;
            }
            _ => {}
        }
        match ctl.restore().await {
            Ok(r) if !r.is_empty() => {
                eprintln!("terra serve: targets made again for {}", r.join(", "))
            }
            Ok(_) => {}
            Err(e) => eprintln!("terra serve: {e}"),
        }
        if let Ok(b) = ctl.notice_boots().await {
            for h in b {
                eprintln!("terra serve: node {h} booted");
            }
        }
        // Deadlines, the next members of each rollout (reports move them at once).
        match ctl.advance_all().await {
            Ok(said) => said.iter().for_each(|l| eprintln!("terra serve: {l}")),
            Err(e) => eprintln!("terra serve: rollouts: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_portal_is_served_by_its_address_or_the_wildcard_of_its_family() {
        let p = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(portal_served(&[p("127.0.0.1:3260")], p("127.0.0.1:3260")));
        assert!(portal_served(&[p("0.0.0.0:3260")], p("10.0.0.1:3260")));
        assert!(portal_served(
            &[p("[::]:3260"), p("0.0.0.0:3260")],
            p("[::1]:3260")
        ));
        assert!(!portal_served(&[p("127.0.0.1:3260")], p("127.0.0.1:3261")));
        assert!(!portal_served(&[p("127.0.0.1:3260")], p("127.0.0.2:3260")));
        assert!(!portal_served(&[p("[::]:3260")], p("127.0.0.1:3260")));
        assert!(!portal_served(&[], p("127.0.0.1:3260")));
    }
}
