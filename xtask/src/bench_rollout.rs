//! `cargo xtask bench --only rollout`: what boot reports and rollouts cost, side by side in
//! one run.
//!
//! - Reports from 10,000 simulated nodes (rows in the database, each with its token): `POST
//!   /v1/reports` over [`CONNECTIONS`] keep-alive connections (nodes booting at once each
//!   send their own), each report a new boot of a random node,
//!   against SQLite and a PostgreSQL server the benchmark starts: reports per second, p50
//!   and p99 latency; then as many check-ins (`GET /v1/target`, what a node with its own
//!   disk asks), the same way.
//! - A rollout of 10,000 nodes in waves `1,1%,10%,50%,100%`: the time to plan and store it.
//! - A rollout to 100 simulated nodes: the canary reports a boot on trial, then its
//!   rejection; the time from sending the rejection to the rollout being paused.
//! - The report on the boot path: the report phase of a real diskless node (QEMU, TCG)
//!   with the controller answering, refusing (killed: the port is closed) and silent
//!   (SIGSTOP: the bound), beside the node's whole time in the initramfs.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use lab::fleet::{Controller, ControllerSpec};
use terra_controller::client::Client;
use terra_controller::db::{Db, NodeRow};
use terra_controller::rollout::{RolloutView, StartRequest};

/// Connections the report load comes over at once.
const CONNECTIONS: usize = 64;

/// Options.
pub struct Options {
    /// Simulated nodes in the database.
    pub nodes: usize,
    /// Reports sent per backend.
    pub requests: usize,
}

/// A simulated node's row: another controller's (this one serves no target for it), with
/// its report token.
pub fn sim_node(hostname: String, mac: String, report_token: String) -> NodeRow {
    NodeRow {
        initiator: format!("iqn.2024-01.org.terra-os:node.{hostname}"),
        target: format!("iqn.2024-01.org.terra-os:target.{hostname}"),
        hostname,
        mac,
        image: String::new(),
        digest: String::new(),
        version: "os".into(),
        portal: "10.0.2.2:3260".into(),
        controller: "bench-elsewhere".into(),
        tid: 0,
        state: "ready".into(),
        reason: String::new(),
        config: String::new(),
        chap: String::new(),
        updated: 0,
        report_token,
    }
}

fn row(i: usize) -> NodeRow {
    sim_node(
        format!("s{i}"),
        format!(
            "52:54:01:{:02x}:{:02x}:{:02x}",
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff
        ),
        format!("bench-token-{i:06}-0123456789abcdef"),
    )
}

/// Starts a rollout of `reference` over every node in `waves`.
fn start(client: &Client, reference: String, waves: &str) -> Result<RolloutView, String> {
    client
        .start_rollout(&StartRequest {
            reference,
            nodes: "all".into(),
            waves: waves.into(),
            max_unavailable: 0,
            pause_after_failures: 1,
            confirm_within: "30m".into(),
        })
        .map_err(|e| e.to_string())
}

fn report(i: usize, n: usize, event: &str, digest: &str, tentative: bool) -> String {
    serde_json::json!({
        "event": event, "hostname": format!("s{i}"), "boot_id": format!("bench-{n}"),
        "sent_by": "stage0",
        "version": {"name": "v2", "digest": digest, "why": "tentative", "tentative": tentative,
                    "fallbacks": []},
        "reason": if event == "rejected" { "health check 10-bench failed: exit status 1" } else { "" },
        "phases": [{"name": "early", "ms": 1.2}, {"name": "config", "ms": 0.4},
                   {"name": "devices", "ms": 180.3}, {"name": "network", "ms": 950.1},
                   {"name": "iscsi", "ms": 120.7}, {"name": "storage", "ms": 30.2},
                   {"name": "root", "ms": 210.9}],
        "initramfs_ms": 1493.8, "uptime_at_start_ms": 801.5
    })
    .to_string()
}

/// Fills the database at `url` with `n` simulated nodes.
async fn fill(url: &str, n: usize) -> Result<(), String> {
    let db = Db::open(url).await.map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(4).max(1)) {
        let (db, chunk) = (db.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in chunk {
                db.add_node(row(i)).await.map_err(|e| format!("{e:?}"))?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Sends `requests` (token, report JSON) one after another on one connection, each a
/// report (`POST /v1/reports`, answered 204) or, without a body, a check-in (`GET
/// /v1/target`, answered 200); the latencies.
fn keep_alive(addr: &str, requests: &[(String, Option<String>)]) -> Result<Vec<Duration>, String> {
    let stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut lat = Vec::with_capacity(requests.len());
    for (token, body) in requests {
        let t = Instant::now();
        let want = match body {
            Some(body) => {
                write!(
                    writer,
                    "POST /v1/reports HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .map_err(|e| e.to_string())?;
                "HTTP/1.1 204"
            }
            None => {
                write!(
                    writer,
                    "GET /v1/target HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
                )
                .map_err(|e| e.to_string())?;
                "HTTP/1.1 200"
            }
        };
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with(want) {
            return Err(format!(
                "{}: {}",
                if body.is_some() { "report" } else { "check-in" },
                line.trim()
            ));
        }
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut rest = vec![0; length];
        reader.read_exact(&mut rest).map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// Requests per second, p50 and p99 (ms) of `requests` reports (or, with `check_ins`,
/// `GET /v1/target` check-ins) from `nodes` nodes.
fn load(
    base: &str,
    nodes: usize,
    requests: usize,
    check_ins: bool,
) -> Result<(f64, f64, f64), String> {
    let addr = base.trim_start_matches("http://").to_string();
    let bodies: Vec<(String, Option<String>)> = (0..requests)
        .map(|n| {
            let i = n * 7919 % nodes;
            let body = (!check_ins).then(|| report(i, n, "boot", "sha256:bench", false));
            (row(i).report_token, body)
        })
        .collect();
    let started = Instant::now();
    let threads: Vec<_> = bodies
        .chunks(requests.div_ceil(CONNECTIONS))
        .map(|c| {
            let (addr, c) = (addr.clone(), c.to_vec());
            std::thread::spawn(move || keep_alive(&addr, &c))
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| "a load thread panicked")??);
    }
    let rps = requests as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Ok((rps, at(0.5), at(0.99)))
}

fn token(state: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(state.join("token"))
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
}

/// Runs the benchmark; returns its Markdown report.
pub fn run_bench(o: &Options) -> Result<String, String> {
    let a = lab::build::artifacts()?;
    let program = lab::build::controller()?;
    let busybox = lab::harness::busybox();
    let layout = lab::fleet::layout(&busybox)?;
    let work = lab::disk::tempdir("bench-rollout")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut md = String::from("## Boot reports and rollouts\n\n");
    md.push_str(&format!(
        "Command: `cargo xtask bench --only rollout`. {} simulated nodes (database rows with \
         their tokens), {} reports per backend over {CONNECTIONS} keep-alive connections on \
         loopback, each a new boot of a random node (stored, the node's row updated, retention, \
         rollout check); then as many check-ins (`GET /v1/target`: the token's node, its \
         rollouts).\n\n| backend | requests | per s | p50 | p99 | goal ≥ 5,000/s |\n|---|---|---|---|---|---|\n",
        o.nodes, o.requests
    ));
    let pg = lab::postgres::Postgres::start()?;
    let mut plan = None;
    for backend in ["SQLite", "PostgreSQL"] {
        let state = work.join(backend);
        let mut spec = ControllerSpec::new(&program, &state, &a.kernel, &a.initramfs)?;
        let url = if backend == "SQLite" {
            std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
            format!("sqlite://{}?mode=rwc", state.join("terra.db").display())
        } else {
            pg.url()
        };
        spec.database = Some(url.clone());
        rt.block_on(fill(&url, o.nodes))?;
        let c = Controller::start(&spec)?;
        for (what, check_ins) in [("reports", false), ("check-ins", true)] {
            let (rps, p50, p99) = load(&spec.url(), o.nodes, o.requests, check_ins)
                .map_err(|e| format!("{e}\n{}", c.log()))?;
            md.push_str(&format!(
                "| {backend} | {what} | {rps:.0} | {p50:.1} ms | {p99:.1} ms | {} |\n",
                if rps >= 5000.0 { "met" } else { "missed" }
            ));
        }
        if backend == "PostgreSQL" {
            // Plan and store a rollout over every simulated node.
            let client =
                Client::new(&spec.url(), Some(token(&state)?)).map_err(|e| e.to_string())?;
            let t = Instant::now();
            let v = start(
                &client,
                format!("oci:{}:v2", layout.display()),
                "1,1%,10%,50%,100%",
            )?;
            plan = Some((t.elapsed(), v.counts.values().sum::<u64>(), v.waves_total));
            client
                .rollout_action(&v.rollout.id, "abort")
                .map_err(|e| e.to_string())?;
        }
        drop(c);
    }
    drop(pg);
    if let Some((t, n, waves)) = plan {
        md.push_str(&format!(
            "\nA rollout of {n} nodes in {waves} waves (`1,1%,10%,50%,100%`), planned and stored \
             on PostgreSQL: {:.0} ms.\n",
            t.as_secs_f64() * 1e3
        ));
    }

    // Time from the canary's failure report to the pause, 100 nodes.
    let state = work.join("pause");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let mut spec = ControllerSpec::new(&program, &state, &a.kernel, &a.initramfs)?;
    let url = format!("sqlite://{}?mode=rwc", state.join("terra.db").display());
    spec.database = Some(url.clone());
    rt.block_on(fill(&url, 100))?;
    let c = Controller::start(&spec)?;
    let client = Client::new(&spec.url(), Some(token(&state)?)).map_err(|e| e.to_string())?;
    let v = start(
        &client,
        format!("oci:{}:v2", layout.display()),
        "1,10%,100%",
    )?;
    let canary = v
        .members
        .clone()
        .or_else(|| client.rollout(&v.rollout.id).ok().and_then(|r| r.members))
        .and_then(|m| m.into_iter().find(|m| m.state == "waiting"))
        .ok_or("no canary offered")?;
    let i: usize = canary.hostname[1..].parse().map_err(|_| "canary name")?;
    let addr = spec.url().trim_start_matches("http://").to_string();
    keep_alive(
        &addr,
        &[(
            row(i).report_token,
            Some(report(i, 1, "boot", &v.rollout.digest, true)),
        )],
    )?;
    let t = Instant::now();
    keep_alive(
        &addr,
        &[(
            row(i).report_token,
            Some(report(i, 2, "rejected", &v.rollout.digest, true)),
        )],
    )?;
    let mut paused = None;
    while t.elapsed() < Duration::from_secs(30) {
        if client
            .rollout(&v.rollout.id)
            .map_err(|e| e.to_string())?
            .rollout
            .state
            == "paused"
        {
            paused = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(c);
    let paused = paused.ok_or("the rollout never paused")?;
    md.push_str(&format!(
        "\nA rollout to 100 simulated nodes: from the canary's rejection report to the rollout \
         paused: {:.1} ms (goal < 1 s: {}).\n",
        paused.as_secs_f64() * 1e3,
        if paused < Duration::from_secs(1) {
            "met"
        } else {
            "missed"
        }
    ));
    md.push_str(&boot_path(&a, &program)?);
    let _ = std::fs::remove_dir_all(&work);
    Ok(md)
}

/// The report phase of a real diskless node with the controller answering, refused and
/// silent: (report ms, initramfs ms) each.
fn boot_path(a: &lab::build::Artifacts, program: &std::path::Path) -> Result<String, String> {
    let dir = lab::disk::tempdir("bench-report")?;
    let spec = ControllerSpec::new(program, &dir.join("state"), &a.kernel, &a.initramfs)?;
    let mut c = Controller::start(&spec)?;
    let mac = "52:54:00:7e:5b:01";
    let node = dir.join("b1.toml");
    std::fs::write(
        &node,
        format!(
            "hostname = \"b1\"\nmac = \"{mac}\"\nimage = \"oci:{}:v1\"\n",
            lab::fleet::layout(&lab::harness::busybox())?.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let client = Client::new(&spec.url(), Some(token(&spec.state)?)).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&node).map_err(|e| e.to_string())?;
    client.add(&text, "b1.toml").map_err(|e| e.to_string())?;
    let mut rows = String::from(
        "\nThe report on the boot path: a diskless node (QEMU, TCG), its report phase and its \
         whole time in the initramfs, one boot each.\n\n| controller | report phase | in the \
         initramfs |\n|---|---|---|\n",
    );
    for case in ["answering", "refusing (killed)", "silent (SIGSTOP)"] {
        let mut vm = lab::vm::Vm::new(&a.kernel, &a.initramfs, lab::harness::accel());
        vm.netboot = Some(lab::vm::NetBoot {
            tftp_dir: None,
            bootfile: format!("{}/boot.ipxe", spec.guest_url()),
            mac: mac.into(),
        });
        vm.timeout = Duration::from_secs(420);
        let mut r = vm.spawn_captured(None)?;
        if case != "answering" {
            if !r.wait_for("phase devices done", Duration::from_secs(300)) {
                return Err(format!("{case}: stage0 never ran:\n{}", r.log()));
            }
            if case.starts_with("silent") {
                c.pause(true);
            } else {
                c.kill();
            }
        }
        let out = r.finish()?;
        let phase = |name: &str| {
            out.log
                .lines()
                .find_map(|l| l.split(&format!("phase {name} done in ")).nth(1))
                .and_then(|s| s.split_whitespace().next())
                .and_then(|ms| ms.parse::<f64>().ok())
        };
        let total = out
            .log
            .lines()
            .filter_map(|l| l.split_once(" ms in the initramfs"))
            .find_map(|(before, _)| before.rsplit("after ").next()?.parse::<f64>().ok());
        rows.push_str(&format!(
            "| {case} | {} | {} |\n",
            phase("report").map_or("—".into(), |ms| format!("{ms:.1} ms")),
            total.map_or("—".into(), |ms| format!("{ms:.0} ms"))
        ));
        if case.starts_with("silent") {
            c.pause(false);
        }
        if case != "answering" {
            drop(c);
            c = Controller::start(&spec)?;
        }
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    rows.push_str(
        "\nThe bound is 300 ms (`report::send::BOOT_BOUND`); a node without `[controller]` has \
         no report phase.\n",
    );
    Ok(rows)
}
