//! `cargo xtask test`'s runner: builds every test binary of the workspace once, then runs
//! them itself, two lanes at a time.
//!
//! `cargo test` runs a workspace's test binaries one after another, so a binary with one
//! long test leaves a core idle, and a binary that boots VMs waits on its guests while
//! nothing else runs. Here the binaries run in [`LANES`] lanes: the QEMU scenarios' binary
//! (the longest) starts first in one lane while the others run in turn in the second, heavy
//! ones first. Every line a binary prints reaches the terminal as it comes, prefixed with the
//! binary's name, and its whole output is also kept in `target/lab/test-logs/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Test binaries running at once. The machine this is tuned for has two cores; the scenario
/// binary's guests spend much of their time waiting (timeouts, a stopped target, DHCP), and
/// the host tests fill that time.
pub const LANES: usize = 2;

/// One test binary cargo built.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// `package::target` (`terra-builder::it`, `terra-init::lib`).
    pub name: String,
    /// The executable.
    pub exe: PathBuf,
    /// The package's directory: cargo runs tests there, and so do we.
    pub dir: PathBuf,
    /// libtest threads for this binary.
    pub threads: usize,
    /// Rough cost, for ordering: higher starts earlier.
    pub weight: u32,
}

/// Builds every test binary of the workspace (and the binaries integration tests run) with
/// `cargo test --workspace --no-run`, and lists them.
pub fn build(cargo: &str, workspace: &Path) -> Result<Vec<TestBinary>, String> {
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cargo} test --no-run: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo test --no-run failed ({})", out.status));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let manifest = msg["manifest_path"].as_str().unwrap_or_default();
        let dir = Path::new(manifest)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workspace.to_path_buf());
        let package = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = msg["target"]["name"].as_str().unwrap_or("?");
        let kind = msg["target"]["kind"][0].as_str().unwrap_or("?");
        let name = if kind == "lib" {
            format!("{package}::lib")
        } else {
            format!("{package}::{target}")
        };
        let (threads, weight) = cost(&package, kind, target);
        bins.push(TestBinary {
            name,
            exe: PathBuf::from(exe),
            dir,
            threads,
            weight,
        });
    }
    // Heavy first; among equals, a stable order by name.
    bins.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.name.cmp(&b.name)));
    bins.dedup_by(|a, b| a.exe == b.exe);
    Ok(bins)
}

/// Threads and weight of a binary, from what it is. The scenario binary boots dozens of VMs
/// under TCG, many of them waiting on purpose (a target stopped for 10 s, a DHCP server that
/// never answers): it gets more threads than cores. The rest are ordered by what they did in
/// past runs (see `cargo xtask test`'s slowest list): VM boots first, then disk and image
/// work, then the quick ones.
fn cost(package: &str, kind: &str, target: &str) -> (usize, u32) {
    match (package, kind, target) {
        ("tests-qemu", "test", "scenarios") => (4, 100),
        ("controller", "test", "fleet") => (2, 60),
        ("tests-qemu", "test", _) => (2, 50),
        ("builder", "test", _) => (2, 40),
        ("init", "lib", _) => (2, 30),
        _ => (2, 10),
    }
}

/// What a binary did.
#[derive(Debug)]
pub struct Ran {
    /// The binary's name.
    pub name: String,
    /// Passed (exit 0).
    pub ok: bool,
    /// Wall time.
    pub took: Duration,
    /// Its whole output.
    pub log: PathBuf,
}

/// Runs `bins` in [`LANES`] lanes, in order; `args` go to every binary (a filter, `--skip`).
pub fn run(bins: Vec<TestBinary>, args: &[String], logs: &Path) -> Result<Vec<Ran>, String> {
    std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let queue = Arc::new(Mutex::new(
        bins.into_iter().collect::<std::collections::VecDeque<_>>(),
    ));
    let done = Arc::new(Mutex::new(Vec::new()));
    let lanes: Vec<_> = (0..LANES)
        .map(|_| {
            let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
            let (args, logs) = (args.to_vec(), logs.to_path_buf());
            std::thread::spawn(move || loop {
                let Some(bin) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                let ran = run_one(&bin, &args, &logs);
                if let Ok(mut d) = done.lock() {
                    d.push(ran);
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.join()
            .map_err(|_| "a test lane panicked".to_string())?;
    }
    let ran = std::mem::take(&mut *done.lock().map_err(|_| "poisoned".to_string())?);
    Ok(ran)
}

/// Runs one binary, its lines prefixed and kept in its log.
fn run_one(bin: &TestBinary, args: &[String], logs: &Path) -> Ran {
    let log = logs.join(format!("{}.log", bin.name.replace("::", "-")));
    let started = Instant::now();
    let tag = format!("[{}]", bin.name);
    eprintln!(
        "{tag} {} (--test-threads={})",
        bin.exe.display(),
        bin.threads
    );
    let child = Command::new(&bin.exe)
        .current_dir(&bin.dir)
        .env("CARGO_MANIFEST_DIR", &bin.dir)
        .arg(format!("--test-threads={}", bin.threads))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{tag} cannot start: {e}");
            return Ran {
                name: bin.name.clone(),
                ok: false,
                took: started.elapsed(),
                log,
            };
        }
    };
    let file = Arc::new(Mutex::new(std::fs::File::create(&log).ok()));
    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let (tag, file) = (tag.clone(), Arc::clone(&file));
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("{tag} {line}");
                if let Ok(mut f) = file.lock() {
                    if let Some(f) = f.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                }
            }
        })
    })
    .collect();
    for p in pumps {
        let _ = p.join();
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    let took = started.elapsed();
    eprintln!(
        "{tag} {} in {:.1} s",
        if ok { "passed" } else { "FAILED" },
        took.as_secs_f64()
    );
    Ran {
        name: bin.name.clone(),
        ok,
        took,
        log,
    }
}
