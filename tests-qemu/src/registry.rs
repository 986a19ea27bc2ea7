//! Debian's docker-registry on 127.0.0.1, and an HTTP proxy in front of it that logs
//! every request (its Range header, the status, the body bytes it passed on) and can cut
//! or stall one transfer, or hide the registry's range support: what the registry tests
//! and the update benchmark count fetches with, from the wire rather than from terra.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// docker-registry serving from `<dir>/data`, killed (by PID) on drop.
pub struct Registry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Registry {
    /// Starts it with its config and storage under `dir` and waits until `/v2/` answers.
    pub fn start(dir: &Path) -> crate::Result<Registry> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("docker-registry: {e} (apt-get install docker-registry)"))?;
        let r = Registry { child, port };
        let start = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                    return Ok(r);
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "docker-registry did not answer on 127.0.0.1:{port}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the proxy passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET /v2/…/blobs/sha256:… HTTP/1.1`.
    pub line: String,
    /// The client's `Range` header, if it sent one (also when the proxy hid it).
    pub range: Option<String>,
    /// The registry's status code (0 when it sent none).
    pub status: u16,
    /// Response body bytes the client was sent.
    pub body: u64,
}

impl Request {
    /// Whether it is a GET of blob `digest`.
    pub fn gets_blob(&self, digest: &str) -> bool {
        self.line.starts_with("GET ") && self.line.contains(&format!("/blobs/{digest} "))
    }
}

/// What the proxy does to one transfer: the first response to a request whose line
/// contains `pattern` is passed on for `after` body bytes, then…
#[derive(Debug, Clone)]
pub struct Cut {
    /// Part of the request line (a blob's digest).
    pub pattern: String,
    /// Body bytes passed on first.
    pub after: u64,
    /// …the connection is closed (false), or held open without sending more until the
    /// client goes away or the proxy is dropped (true: a kill mid-download).
    pub stall: bool,
}

/// How the proxy behaves.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// One transfer to cut or stall.
    pub cut: Option<Cut>,
    /// Drop every `Range` header, as a registry without range support would ignore it.
    pub ignore_ranges: bool,
}

struct Shared {
    log: Mutex<Vec<Request>>,
    cut: Mutex<Option<Cut>>,
    stop: AtomicBool,
    ignore_ranges: bool,
}

/// A streaming HTTP/1.1 proxy on 127.0.0.1, one request per connection (it forces
/// `Connection: close`). Stopped and joined on drop.
pub struct Proxy {
    /// Its port.
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16, opts: ProxyOptions) -> crate::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("proxy: {e}"))?
            .port();
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            cut: Mutex::new(opts.cut),
            stop: AtomicBool::new(false),
            ignore_ranges: opts.ignore_ranges,
        });
        let s2 = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if s2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s3 = s2.clone();
                workers.push(std::thread::spawn(move || {
                    let _ = forward(conn, upstream, &s3);
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Ok(Proxy {
            port,
            shared,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests passed on so far, in the order they ended.
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests so far, forgetting them.
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.shared.log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets the next cut or stall.
    pub fn set_cut(&self, cut: Option<Cut>) {
        *self.shared.cut.lock().unwrap_or_else(|p| p.into_inner()) = cut;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The total body bytes of `requests` (what a client was sent).
pub fn body_bytes(requests: &[Request]) -> u64 {
    requests.iter().map(|r| r.body).sum()
}

fn forward(mut client: TcpStream, upstream: u16, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let end = loop {
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = client.read(&mut buf)?;
        if n == 0 || head.len() > 64 << 10 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    // A request body (uploads) follows the head; what came with it is passed on as is.
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.trim_end().split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut range = None;
    let mut content_length = 0u64;
    let mut req = format!("{first}\r\n");
    for l in lines {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if lower.starts_with("range:") {
            range = Some(l[6..].trim().to_string());
            if shared.ignore_ranges {
                continue;
            }
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(req.as_bytes())?;
    up.write_all(&rest)?;
    let mut left = content_length.saturating_sub(rest.len() as u64);
    while left > 0 {
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        up.write_all(&buf[..n])?;
        left = left.saturating_sub(n as u64);
    }
    // The response head, passed on whole.
    let mut resp = Vec::new();
    let body_start = loop {
        if let Some(p) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = up.read(&mut buf)?;
        if n == 0 {
            break resp.len();
        }
        resp.extend_from_slice(&buf[..n]);
    };
    let status = String::from_utf8_lossy(&resp[..body_start.min(resp.len())])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let cut = {
        let mut c = shared.cut.lock().unwrap_or_else(|p| p.into_inner());
        match c.as_ref() {
            Some(cut) if first.contains(&cut.pattern) => c.take(),
            _ => None,
        }
    };
    let mut record = Request {
        line: first,
        range,
        status,
        body: 0,
    };
    let result = relay(
        &mut client,
        &mut up,
        &resp,
        body_start,
        cut,
        shared,
        &mut record.body,
    );
    shared
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(record);
    result
}

/// Sends the head and body bytes already read, then streams the rest of the response,
/// counting body bytes, until the registry closes or the cut applies.
fn relay(
    client: &mut TcpStream,
    up: &mut TcpStream,
    first: &[u8],
    body_start: usize,
    cut: Option<Cut>,
    shared: &Shared,
    body: &mut u64,
) -> std::io::Result<()> {
    let limit = cut.as_ref().map_or(u64::MAX, |c| c.after);
    client.write_all(&first[..body_start])?;
    let mut pending = first[body_start..].to_vec();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let room = usize::try_from(limit - *body).unwrap_or(usize::MAX);
        let send = pending.len().min(room);
        client.write_all(&pending[..send])?;
        *body += send as u64;
        if *body >= limit {
            break;
        }
        let n = up.read(&mut buf)?;
        if n == 0 {
            return client.flush();
        }
        pending = buf[..n].to_vec();
    }
    client.flush()?;
    if cut.is_some_and(|c| c.stall) {
        // Hold the connection: the client waits for bytes that do not come, until it is
        // killed (its end closes) or the proxy stops.
        let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
        let start = Instant::now();
        let mut probe = [0u8; 1];
        while !shared.stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(120) {
            match client.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
    client.shutdown(Shutdown::Both)
}

/// `len` bytes that do not compress (xorshift from `seed`): layers whose compressed size
/// is their size, so byte counts say what was fetched whatever the compression.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
