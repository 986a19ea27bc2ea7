//! `cargo xtask bench --only controller`: what a node costs the controller, side by side in
//! one run. The state directory is a fresh btrfs filesystem (a loop-mounted image), the image
//! about 500 MiB (lab::oci_root::bench_layout).
//!
//! - Provisioning through the controller's API: the first node builds the golden LUN, every
//!   further one is a reflink clone plus its tgtd target; time and new disk bytes per node
//!   for 1, 10 and 100 nodes.
//! - Terra OS's way, a full `terra install` of the image per node, for `--full-nodes` nodes.
//! - Boot-script throughput: `GET /ipxe?mac=` for random MACs among 1,000 nodes in the
//!   database, from a bounded load loop on loopback, beside `GET /boot.ipxe` (no database).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::fleet::{Controller, ControllerSpec};
use terra_controller::client::Client;
use terra_controller::db::Db;

/// Options.
pub struct Options {
    /// Nodes provisioned by clone (the report shows 1, 10 and every tenfold step up to it).
    pub nodes: usize,
    /// Nodes installed in full, Terra OS's way.
    pub full_nodes: usize,
    /// Image size, MiB.
    pub image_mb: usize,
    /// Requests of the throughput loop.
    pub requests: usize,
}

struct Mounted(PathBuf);

/// The benchmark's work directory (a 48 GB sparse btrfs image holding GBs once filled),
/// removed when the benchmark ends, however it ends; dropped after [`Mounted`].
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Bytes in use on the filesystem at `mnt`, after btrfs settled its accounting.
fn used(mnt: &Path) -> Result<u64, String> {
    run(Command::new("btrfs").args(["filesystem", "sync"]).arg(mnt))?;
    let s = rustix::fs::statvfs(mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    Ok((s.f_blocks - s.f_bfree) * s.f_frsize)
}

fn mib(b: f64) -> String {
    format!("{:.2} MiB", b / 1048576.0)
}

/// Runs the benchmark; returns its Markdown report.
pub fn run_bench(o: &Options) -> Result<String, String> {
    let a = lab::build::artifacts()?;
    let program = lab::build::controller()?;
    let image = lab::oci_root::bench_layout(o.image_mb)?;
    let reference = format!("oci:{}:bench", image.display());
    let work = lab::disk::tempdir("bench-controller")?;
    let _scratch = Scratch(work.clone());
    let fs_image = work.join("state.btrfs");
    std::fs::File::create(&fs_image)
        .and_then(|f| f.set_len(48 << 30))
        .map_err(|e| format!("{}: {e}", fs_image.display()))?;
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&fs_image))?;
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&fs_image)
        .arg(&mnt))?;
    let _mounted = Mounted(mnt.clone());

    // The controller's way.
    let state = mnt.join("controller");
    let mut spec = ControllerSpec::new(&program, &state, &a.kernel, &a.initramfs)?;
    spec.extra = vec!["--lun-size".into(), "2048".into()];
    let c = Controller::start(&spec)?;
    let token = std::fs::read_to_string(state.join("token")).map_err(|e| e.to_string())?;
    let client =
        Client::new(&spec.url(), Some(token.trim().to_string())).map_err(|e| e.to_string())?;
    let node_dir = work.join("nodes");
    std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
    let mut marks = Vec::new(); // (nodes, seconds since start, bytes used)
    let base = used(&mnt)?;
    let t0 = Instant::now();
    let mut first = Duration::ZERO;
    for i in 0..o.nodes {
        let text = format!(
            "hostname = \"b{i}\"\nmac = \"52:54:00:b0:{:02x}:{:02x}\"\nimage = \"{reference}\"\n",
            i / 256,
            i % 256
        );
        let started = Instant::now();
        client
            .add(&text, &format!("b{i}.toml"))
            .map_err(|e| format!("{e}\n{}", c.log()))?;
        if i == 0 {
            first = started.elapsed();
        }
        let n = i + 1;
        if n == 1 || n == o.nodes || (n >= 10 && n.is_power_of_ten()) {
            marks.push((n, t0.elapsed(), used(&mnt)? - base));
        }
    }

    // Terra OS's way: the whole image installed per node.
    let full_dir = mnt.join("full");
    std::fs::create_dir_all(&full_dir).map_err(|e| e.to_string())?;
    let full_base = used(&mnt)?;
    let mut full_times = Vec::new();
    for i in 0..o.full_nodes {
        let lun = full_dir.join(format!("f{i}.img"));
        let cfg = node_dir.join(format!("f{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "image = \"{reference}\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\n\
                 device = \"{}\"\nsize = 2048\n",
                lun.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        run(Command::new(&a.terra).arg("install").arg(&cfg))?;
        full_times.push(started.elapsed());
    }
    let full_bytes = used(&mnt)? - full_base;

    // Throughput: 1,000 nodes in the database (rows of another controller, so this one does
    // not try to serve their targets), random MACs, keep-alive connections.
    let url = format!("sqlite://{}?mode=rwc", state.join("terra.db").display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let in_db = o.nodes.max(1000);
    let (script_rps, static_rps) = rt.block_on(async {
        let db = Db::open(&url).await.map_err(|e| e.to_string())?;
        for i in o.nodes..in_db {
            db.add_node(crate::bench_rollout::sim_node(
                format!("r{i}"),
                format!("52:54:00:c0:{:02x}:{:02x}", i / 256, i % 256),
                format!("bench-token-r{i}"),
            ))
            .await
            .map_err(|e| format!("{e:?}"))?;
        }
        let macs: Vec<String> = (0..in_db)
            .map(|i| {
                if i < o.nodes {
                    format!("52-54-00-b0-{:02x}-{:02x}", i / 256, i % 256)
                } else {
                    format!("52-54-00-c0-{:02x}-{:02x}", i / 256, i % 256)
                }
            })
            .collect();
        let script = load(
            &spec.url(),
            |i| format!("/ipxe?mac={}", macs[i * 7919 % macs.len()]),
            o.requests,
        )
        .await?;
        let fixed = load(&spec.url(), |_| "/boot.ipxe".to_string(), o.requests).await?;
        Ok::<_, String>((script, fixed))
    })?;
    drop(c);

    let mut md = String::from("## Controller: provisioning and boot scripts\n\n");
    md.push_str(&format!(
        "Image: {} MiB (`lab::oci_root::bench_layout`), state directory on btrfs (loop image), \
         LUNs 2048 MiB sparse; TCG-free (no VM). Command: `cargo xtask bench --only controller`.\n\n",
        o.image_mb
    ));
    md.push_str("| nodes | wall time | per node after the first | new disk bytes | per node after the first |\n|---|---|---|---|---|\n");
    let (_, _, first_bytes) = marks[0];
    for (n, t, b) in &marks {
        let (per_t, per_b) = if *n > 1 {
            let dt = t.as_secs_f64() - first.as_secs_f64();
            (
                format!("{:.0} ms", dt * 1000.0 / (*n as f64 - 1.0)),
                mib((*b as f64 - first_bytes as f64).max(0.0) / (*n as f64 - 1.0)),
            )
        } else {
            ("—".into(), "—".into())
        };
        md.push_str(&format!(
            "| {n} (clone) | {:.2} s | {per_t} | {} | {per_b} |\n",
            t.as_secs_f64(),
            mib(*b as f64)
        ));
    }
    let full_avg =
        full_times.iter().map(Duration::as_secs_f64).sum::<f64>() / full_times.len().max(1) as f64;
    let full_per_bytes = full_bytes as f64 / o.full_nodes.max(1) as f64;
    md.push_str(&format!(
        "| {} (full install each) | {:.2} s | {:.0} ms | {} | {} |\n\n",
        o.full_nodes,
        full_times.iter().map(Duration::as_secs_f64).sum::<f64>(),
        full_avg * 1000.0,
        mib(full_bytes as f64),
        mib(full_per_bytes)
    ));
    if let Some((n, t, b)) = marks.last().filter(|(n, _, _)| *n > 1) {
        let per_t = (t.as_secs_f64() - first.as_secs_f64()) / (*n as f64 - 1.0);
        let per_b = (*b as f64 - first_bytes as f64).max(1.0) / (*n as f64 - 1.0);
        md.push_str(&format!(
            "A node after the first: {:.0}× faster and {:.0}× less new disk than a full install \
             (goal: ≤ 1 s and ≤ 1 MiB: {} and {}).\n\n",
            full_avg / per_t.max(1e-9),
            full_per_bytes / per_b,
            if per_t <= 1.0 { "met" } else { "missed" },
            if per_b <= 1048576.0 { "met" } else { "missed" },
        ));
    }
    md.push_str(&format!(
        "Boot scripts, {} requests over 8 keep-alive connections, {in_db} nodes in SQLite: \
         `/ipxe?mac=` {script_rps:.0}/s, `/boot.ipxe` (no database) {static_rps:.0}/s \
         (ratio {:.2}; goal ≥ 5,000/s: {}).\n",
        o.requests,
        script_rps / static_rps,
        if script_rps >= 5000.0 {
            "met"
        } else {
            "missed"
        }
    ));
    Ok(md)
}

/// `requests` GETs of `path(i)` over 8 keep-alive connections, each driven by a thread
/// with a minimal HTTP/1.1 client (so the load loop spends little of the two cores the
/// server has); requests per second.
async fn load(base: &str, path: impl Fn(usize) -> String, requests: usize) -> Result<f64, String> {
    let addr = base.trim_start_matches("http://").to_string();
    let paths: Vec<String> = (0..requests).map(&path).collect();
    let per = requests.div_ceil(8);
    let started = Instant::now();
    let threads: Vec<_> = paths
        .chunks(per)
        .map(|chunk| {
            let (addr, chunk) = (addr.clone(), chunk.to_vec());
            std::thread::spawn(move || keep_alive_gets(&addr, &chunk))
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a load thread panicked".to_string())??;
    }
    Ok(requests as f64 / started.elapsed().as_secs_f64())
}

/// GETs `paths` one after another on one connection; every answer must be 200.
fn keep_alive_gets(addr: &str, paths: &[String]) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    for p in paths {
        write!(writer, "GET {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            .map_err(|e| format!("{p}: {e}"))?;
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("{p}: {e}"))?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(format!("{p}: {}", line.trim()));
        }
        let mut length = 0usize;
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("{p}: {e}"))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().map_err(|_| format!("{p}: {l}"))?;
                }
            }
        }
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("{p}: {e}"))?;
    }
    Ok(())
}

trait PowerOfTen {
    fn is_power_of_ten(&self) -> bool;
}

impl PowerOfTen for usize {
    fn is_power_of_ten(&self) -> bool {
        let mut n = *self;
        while n >= 10 && n.is_multiple_of(10) {
            n /= 10;
        }
        n == 1
    }
}
