//! Signatures made by tools that are not ours, for oci_signed.rs: `openssl` makes ECDSA
//! P-256 keys and signs simple-signing payloads; `skopeo` (containers/image) attaches them
//! to images in a registry as cosign's `sha256-<hex>.sig` tags and copies those tags into
//! OCI layouts. Every command runs with a time bound and is killed when it overruns. A
//! logging proxy in front of the registry shows which requests a pull made and can move a
//! tag in the middle of one.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Runs `cmd` with stdout/stderr captured, killing it (by its PID) after `secs` seconds.
pub fn bounded(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {secs} s and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// Runs `cmd` bounded and asserts it succeeded; returns stdout.
pub fn must(cmd: &mut Command, secs: u64) -> String {
    let out = bounded(cmd, secs);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// terra, bounded; returns (success, stdout, stderr).
pub fn terra_bounded(args: &[&str], secs: u64) -> (bool, String, String) {
    let out = bounded(Command::new(env!("CARGO_BIN_EXE_terra")).args(args), secs);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An ECDSA P-256 key pair made by openssl.
pub struct Key {
    /// PKCS#8 PEM private key.
    pub private: PathBuf,
    /// PKIX PEM public key.
    pub public: PathBuf,
}

/// `openssl genpkey` a P-256 key and `openssl pkey -pubout` its public half.
pub fn openssl_key(dir: &Path, name: &str) -> Key {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    must(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&private),
        30,
    );
    must(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
        30,
    );
    Key { private, public }
}

/// `openssl dgst -sha256 -sign`: the base64 of the DER ECDSA signature over `payload`.
pub fn openssl_sign(key: &Key, payload: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("payload");
    let s = dir.path().join("sig.der");
    fs::write(&p, payload).unwrap();
    must(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key.private)
            .arg("-out")
            .arg(&s)
            .arg(&p),
        30,
    );
    base64::engine::general_purpose::STANDARD.encode(fs::read(&s).unwrap())
}

/// A simple-signing payload, written out by hand as cosign writes it (field order and
/// all), with the names and type given so tests can get them wrong on purpose.
pub fn payload_text(critical: &str, docker_ref: &str, digest: &str, kind: &str) -> Vec<u8> {
    format!(
        r#"{{"{critical}":{{"identity":{{"docker-reference":"{docker_ref}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{kind}"}},"optional":null}}"#
    )
    .into_bytes()
}

/// cosign's payload for `digest`.
pub fn cosign_payload(docker_ref: &str, digest: &str) -> Vec<u8> {
    payload_text(
        "critical",
        docker_ref,
        digest,
        "cosign container image signature",
    )
}

/// skopeo's `dir:` copy of `layout:tag` (all platforms, digests kept) with one sigstore
/// signature file per (payload, base64 signature): `signature-N` holds
/// `\0sigstore-json\n` and the JSON containers/image reads (mimeType, payload, annotations).
pub fn dir_with_signatures(layout: &Path, tag: &str, dir: &Path, sigs: &[(Vec<u8>, String)]) {
    must(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("dir:{}", dir.display())),
        120,
    );
    for (i, (payload, sig)) in sigs.iter().enumerate() {
        let mut f = b"\0sigstore-json\n".to_vec();
        f.extend(
            serde_json::to_vec(&serde_json::json!({
                "mimeType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "payload": base64::engine::general_purpose::STANDARD.encode(payload),
                "annotations": {"dev.cosignproject.cosign/signature": sig},
            }))
            .unwrap(),
        );
        fs::write(dir.join(format!("signature-{}", i + 1)), f).unwrap();
    }
}

/// A registries.d telling containers/image to read and write sigstore signatures as
/// cosign attachments (the `sha256-<hex>.sig` tags).
pub fn registries_d(dir: &Path) -> PathBuf {
    let d = dir.join("registries.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    d
}

/// `skopeo copy dir:DIR docker://HOST/REPO_TAG` with its signatures as attachments.
pub fn push_dir_signed(host: &str, dir: &Path, repo_tag: &str, regd: &Path) {
    must(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
            .arg("--registries.d")
            .arg(regd)
            .args(["--dest-tls-verify=false"])
            .arg(format!("dir:{}", dir.display()))
            .arg(format!("docker://{host}/{repo_tag}")),
        120,
    );
}

/// `skopeo copy docker://HOST/REPO:TAG oci:LAYOUT:TAG` (digests kept, no signatures: the
/// image and the `.sig` tag are copied as they are, as two images).
pub fn copy_to_layout(host: &str, repo: &str, tag: &str, layout: &Path) {
    must(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
            .args(["--src-tls-verify=false"])
            .arg(format!("docker://{host}/{repo}:{tag}"))
            .arg(format!("oci:{}:{tag}", layout.display())),
        120,
    );
}

/// `skopeo copy docker://… docker://…` within the registry: moves `to` to what `from` is.
pub fn retag(host: &str, repo: &str, from: &str, to: &str) {
    must(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
            .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("docker://{host}/{repo}:{from}"))
            .arg(format!("docker://{host}/{repo}:{to}")),
        120,
    );
}

/// The tags of a repository, from the registry's API.
pub fn tags(host: &str, repo: &str) -> Vec<String> {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v2/{repo}/tags/list HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("{}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

type Hook = Box<dyn FnOnce() + Send>;

/// An HTTP/1.1 proxy on 127.0.0.1 in front of the registry that logs each request line
/// and, once, runs a hook after the registry answered a given request and before the
/// client gets that answer. Each connection carries one request (`Connection: close` is
/// forced upstream), which is all a test needs. Stopped and joined on drop.
pub struct Proxy {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards to 127.0.0.1:`upstream`; `hook` runs after the first request whose
    /// request line starts with `trigger` has been answered upstream.
    pub fn start(upstream: u16, trigger: String, hook: Hook) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let hook = Arc::new(Mutex::new(Some((trigger, hook))));
        let (l2, s2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (l3, h3) = (l2.clone(), hook.clone());
                workers.push(std::thread::spawn(move || {
                    let _ = forward(conn, upstream, &l3, &h3);
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Proxy {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// The request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[allow(clippy::type_complexity)]
fn forward(
    mut client: TcpStream,
    upstream: u16,
    log: &Mutex<Vec<String>>,
    hook: &Mutex<Option<(String, Hook)>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf)?;
        if n == 0 || head.len() > 64 << 10 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let (head_text, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head_text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    log.lock().unwrap().push(first.clone());
    let mut req = format!("{first}\r\n");
    for l in lines {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            req.push_str(l);
            req.push_str("\r\n");
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    up.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let fire = {
        let mut h = hook.lock().unwrap();
        match h.as_ref() {
            Some((trigger, _)) if first.starts_with(trigger.as_str()) => h.take().map(|(_, f)| f),
            _ => None,
        }
    };
    if let Some(f) = fire {
        f();
    }
    client.write_all(&resp)?;
    client.flush()
}

/// One HTTP/1.1 request to the registry on 127.0.0.1 (`Connection: close`); returns the
/// status and the `Location` header. For uploads skopeo cannot make (an OCI 1.1 referrer
/// index that containers/image 5.23 would rewrite), as oras would make them.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let location = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, location)
}

/// Uploads a blob with the distribution API (POST, then PUT with the digest).
pub fn upload_blob(host: &str, repo: &str, data: &[u8]) {
    let d = super::digest(data);
    let (status, location) = http(
        host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        "application/octet-stream",
        b"",
    );
    assert_eq!(status, 202, "upload start for {d}");
    let path = location
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or(&location)
        .to_string();
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _) = http(
        host,
        "PUT",
        &format!("{path}{sep}digest={d}"),
        "application/octet-stream",
        data,
    );
    assert_eq!(status, 201, "upload of {d}");
}

/// Puts a manifest or index under a tag or digest.
pub fn upload_manifest(host: &str, repo: &str, reference: &str, media_type: &str, data: &[u8]) {
    let (status, _) = http(
        host,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        media_type,
        data,
    );
    assert_eq!(status, 201, "manifest {reference} of {repo}");
}
