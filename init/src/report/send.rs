//! Sends one report to the controller (or fetches the image it names for the node),
//! bounded: connect, write and the answer all fit in one time budget, with no retry (on the boot path nothing may wait on a
//! controller that is down). The host must be an address: stage0 resolves no names.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::http::{self, WireError};
use crate::config::controller::ControllerUrl;

/// What stage0 gives a report on the boot path.
pub const BOOT_BOUND: Duration = Duration::from_millis(300);

/// Why a report was not delivered.
#[derive(Debug)]
pub enum SendError {
    /// The URL's host is a name, not an address.
    Name(String),
    /// The request could not be made, or the answer was not HTTP.
    Wire(WireError),
    /// Connecting, writing or reading failed (refused, unreachable, reset).
    Io {
        /// The controller's address.
        to: SocketAddr,
        /// What failed.
        err: io::Error,
    },
    /// The bound passed before the answer's status line arrived.
    Timeout {
        /// The controller's address.
        to: SocketAddr,
        /// The bound.
        bound: Duration,
    },
    /// The controller answered, but not 2xx.
    Refused {
        /// The controller's address.
        to: SocketAddr,
        /// Its status code.
        status: u16,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Name(h) => write!(
                f,
                "controller host {h:?} is a name: the initramfs resolves none (give its address)"
            ),
            SendError::Wire(e) => write!(f, "{e}"),
            SendError::Io { to, err } => write!(f, "controller {to}: {err}"),
            SendError::Timeout { to, bound } => {
                write!(
                    f,
                    "controller {to}: no answer within {} ms",
                    bound.as_millis()
                )
            }
            SendError::Refused { to, status } => {
                write!(f, "controller {to} answered HTTP {status}")
            }
        }
    }
}

impl std::error::Error for SendError {}

impl From<WireError> for SendError {
    fn from(e: WireError) -> Self {
        SendError::Wire(e)
    }
}

/// POSTs `body` with `token` to `url`'s reports path within `bound`; Ok with the 2xx status.
pub fn send(
    url: &ControllerUrl,
    token: &str,
    body: &[u8],
    bound: Duration,
) -> Result<u16, SendError> {
    let request = http::request(url, token, body)?;
    exchange(url, &request, bound, None).map(|(status, _)| status)
}

/// GETs `what` under `url` with `token` within `bound`; Ok with the 2xx answer's body (at
/// most `max` bytes of answer are read).
pub fn fetch(
    url: &ControllerUrl,
    token: &str,
    what: &str,
    bound: Duration,
    max: usize,
) -> Result<Vec<u8>, SendError> {
    let request = http::get(url, what, token)?;
    let (_, answer) = exchange(url, &request, bound, Some(max))?;
    Ok(http::body(&answer).unwrap_or_default().to_vec())
}

/// Writes `request` to `url`'s address and reads the answer, all within `bound`: only its
/// status line when `whole` is None, else up to `whole` bytes until the peer closes. Ok with
/// a 2xx status and what was read.
fn exchange(
    url: &ControllerUrl,
    request: &[u8],
    bound: Duration,
    whole: Option<usize>,
) -> Result<(u16, Vec<u8>), SendError> {
    let ip: IpAddr = url
        .host
        .parse()
        .map_err(|_| SendError::Name(url.host.clone()))?;
    let to = SocketAddr::new(ip, url.port);
    let deadline = Instant::now() + bound;
    let io = |err: io::Error| match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => SendError::Timeout { to, bound },
        _ => SendError::Io { to, err },
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(SendError::Timeout { to, bound })
    };
    let mut stream = TcpStream::connect_timeout(&to, left()?).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(request).map_err(io)?;
    // A report needs only the status line: read until it is whole, the peer closes, or
    // time is up. A fetch reads until the peer closes (the request said so).
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    loop {
        let enough = match whole {
            None => answer.contains(&b'\n') || answer.len() >= 1024,
            Some(max) => answer.len() >= max,
        };
        if enough {
            break;
        }
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf).map_err(io)? {
            0 => break,
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    match http::status(&answer)? {
        s @ 200..=299 => Ok((s, answer)),
        status => Err(SendError::Refused { to, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Child, Command, Stdio};

    /// Python's http.server, a peer that is not ours: it records each POST (path, headers,
    /// body) as a JSON line and answers 204 to `Bearer good`, 403 to anything else.
    const PEER: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        rec = {"path": self.path, "auth": self.headers.get("Authorization"),
               "host": self.headers.get("Host"), "type": self.headers.get("Content-Type"),
               "body": body.decode()}
        with open(sys.argv[1], "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(204 if rec["auth"] == "Bearer good" else 403)
        self.end_headers()
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer good"
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

    /// The peer, killed by PID when dropped.
    struct Peer(Child);

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn peer(log: &std::path::Path) -> (Peer, u16) {
        // Started directly (no `timeout` wrapper, whose kill would orphan python), with
        // no handle on our stderr: dropped, it is killed by its PID.
        let mut child = Command::new("python3")
            .args(["-c", PEER])
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the peer's port");
        (Peer(child), port)
    }

    #[test]
    fn a_report_reaches_a_real_http_server_which_sees_the_token_and_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let (_peer, port) = peer(&log);
        let url = ControllerUrl::parse(&format!("http://127.0.0.1:{port}/terra")).unwrap();
        let body = br#"{"version":{"name":"v2","why":"tentative"}}"#;
        let bound = Duration::from_secs(5);
        assert_eq!(send(&url, "good", body, bound).unwrap(), 204);
        let refused = send(&url, "other", body, bound).unwrap_err();
        assert!(
            matches!(refused, SendError::Refused { status: 403, .. }),
            "{refused}"
        );
        let seen: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["path"], "/terra/v1/reports");
        assert_eq!(seen[0]["auth"], "Bearer good");
        assert_eq!(seen[0]["host"], format!("127.0.0.1:{port}"));
        assert_eq!(seen[0]["type"], "application/json");
        assert_eq!(seen[0]["body"], std::str::from_utf8(body).unwrap());
        // The error says who answered what, never the token.
        assert!(!refused.to_string().contains("other"), "{refused}");
    }

    #[test]
    fn a_fetch_reads_the_whole_answer_of_a_real_http_server() {
        let dir = tempfile::tempdir().unwrap();
        let (_peer, port) = peer(&dir.path().join("requests.jsonl"));
        let url = ControllerUrl::parse(&format!("http://127.0.0.1:{port}/terra")).unwrap();
        let bound = Duration::from_secs(5);
        let body = fetch(&url, "good", "/v1/target", bound, 4096).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["path"], "/terra/v1/target");
        let refused = fetch(&url, "bad", "/v1/target", bound, 4096).unwrap_err();
        assert!(
            matches!(refused, SendError::Refused { status: 401, .. }),
            "{refused}"
        );
    }

    #[test]
    fn a_silent_or_absent_controller_ends_the_send_at_once_or_at_the_bound() {
        // Silent: accepts, never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url =
            ControllerUrl::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let start = Instant::now();
        let err = send(&url, "t", b"{}", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, SendError::Timeout { .. }), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // Absent: nothing listens on the port.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = ControllerUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = send(&url, "t", b"{}", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, SendError::Io { .. }), "{err}");
        // A name is not looked up.
        let url = ControllerUrl::parse("http://controller.example").unwrap();
        assert!(matches!(
            send(&url, "t", b"{}", Duration::from_millis(300)),
            Err(SendError::Name(_))
        ));
    }
}
