//! Where a node's reports wait for its controller. stage0 sends the boot report once,
//! bounded; what it could not deliver waits in [`layout::REPORT_DIR`] (tmpfs, root only)
//! beside the controller's URL and the node's token, for `bless report` in the booted
//! system (run by `terra-report.service`), which also sends the confirmation or rejection
//! of the version the same way. Nothing here is shown: the token never reaches a log.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::message::Message;
use super::send::{self, SendError};
use super::target::{Answer, MAX_ANSWER, TARGET_PATH};
use crate::config::controller::{ControllerSection, ControllerUrl, DEFAULT_TOKEN_FILE};
use crate::layout;

/// The controller a node reports to, and the token that says who the node is.
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    /// The controller's base URL.
    pub url: ControllerUrl,
    url_text: String,
    token: String,
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token stays out of every log line, including debug ones.
        f.debug_struct("Destination")
            .field("url", &self.url_text)
            .field("token", &"<hidden>")
            .finish()
    }
}

impl Destination {
    /// The destination `[controller]` names, its token file read relative to `dir` (the
    /// directory of the node.toml holding the table); None without a URL.
    pub fn load(section: &ControllerSection, dir: &Path) -> Result<Option<Self>, String> {
        let Some(url) = &section.url else {
            return Ok(None);
        };
        let file = dir.join(section.token_file.as_deref().unwrap_or(DEFAULT_TOKEN_FILE));
        let token = std::fs::read_to_string(&file)
            .map_err(|e| format!("controller token {}: {e}", file.display()))?;
        Self::new(url, token.trim()).map(Some).map_err(|e| {
            format!(
                "[controller] in the node.toml beside {}: {e}",
                file.display()
            )
        })
    }

    /// A destination from a URL and a token.
    pub fn new(url: &str, token: &str) -> Result<Self, String> {
        let parsed = ControllerUrl::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
        if token.is_empty() {
            return Err("the token file is empty".into());
        }
        Ok(Destination {
            url: parsed,
            url_text: url.to_string(),
            token: token.to_string(),
        })
    }

    /// The URL as written.
    pub fn url_text(&self) -> &str {
        &self.url_text
    }

    /// Sends `m` within `bound`.
    pub fn send(&self, m: &Message, bound: Duration) -> Result<u16, SendError> {
        send::send(&self.url, &self.token, &m.to_bytes(), bound)
    }

    /// Asks the controller, within `bound`, which image it names for this node now.
    pub fn target(&self, bound: Duration) -> Result<Answer, String> {
        let body = send::fetch(
            &self.url,
            &self.token,
            TARGET_PATH,
            bound,
            MAX_ANSWER + 1024,
        )
        .map_err(|e| e.to_string())?;
        Answer::parse(&body).map_err(|e| format!("controller {}: {e}", self.url_text))
    }
}

/// The directory reports wait in.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

const URL_FILE: &str = "url";
const TOKEN_FILE: &str = "token";
const HOSTNAME_FILE: &str = "hostname";
const PENDING: &str = "pending";

impl Outbox {
    /// The outbox at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Outbox { dir: dir.into() }
    }

    /// The running system's ([`layout::REPORT_DIR`]).
    pub fn system() -> Self {
        Self::at(layout::REPORT_DIR)
    }

    /// Keeps `d` for the booted system: the URL, the token in a file only root reads, and
    /// the hostname the boot was reported under (later reports must say the same).
    pub fn keep(&self, d: &Destination, hostname: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.dir.join(PENDING))?;
        write_private(&self.dir.join(URL_FILE), d.url_text.as_bytes())?;
        write_private(&self.dir.join(HOSTNAME_FILE), hostname.as_bytes())?;
        write_private(&self.dir.join(TOKEN_FILE), d.token.as_bytes())
    }

    /// The hostname the boot was reported under; None when none was kept.
    pub fn hostname(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(HOSTNAME_FILE))
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    }

    /// The destination kept here; None when this node has no controller.
    pub fn destination(&self) -> Result<Option<Destination>, String> {
        let url_file = self.dir.join(URL_FILE);
        let url = match std::fs::read_to_string(&url_file) {
            Ok(u) => u,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", url_file.display())),
        };
        let token_file = self.dir.join(TOKEN_FILE);
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| format!("{}: {e}", token_file.display()))?;
        Destination::new(url.trim(), token.trim())
            .map(Some)
            .map_err(|e| format!("{}: {e}", self.dir.display()))
    }

    /// Leaves `m` to be sent later (one file per event: a later one of the same kind
    /// replaces it). Returns its path.
    pub fn leave(&self, m: &Message) -> io::Result<PathBuf> {
        let dir = self.dir.join(PENDING);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", m.event.as_str()));
        write_private(&path, &m.to_bytes())?;
        Ok(path)
    }

    /// Reports waiting, oldest event first (boot before its confirmation).
    pub fn pending(&self) -> Vec<PathBuf> {
        let order = ["boot.json", "confirmed.json", "rejected.json"];
        order
            .iter()
            .map(|n| self.dir.join(PENDING).join(n))
            .filter(|p| p.is_file())
            .collect()
    }

    /// Sends every waiting report to `d`, each within `bound`, trying `tries` times with
    /// `pause` between rounds; a delivered one is removed. `say` hears each failure.
    /// Returns how many were delivered; Err names the first still waiting and why.
    pub fn deliver(
        &self,
        d: &Destination,
        bound: Duration,
        tries: u32,
        pause: Duration,
        say: &mut dyn FnMut(&str),
    ) -> Result<usize, String> {
        let mut delivered = 0;
        for round in 1..=tries.max(1) {
            let mut last = None;
            for path in self.pending() {
                let sent = std::fs::read(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|b| {
                        Message::parse(&b).map_err(|e| format!("{}: {e}", path.display()))
                    })
                    .and_then(|m| d.send(&m, bound).map_err(|e| e.to_string()));
                match sent {
                    Ok(_) => {
                        let _ = std::fs::remove_file(&path);
                        delivered += 1;
                    }
                    Err(e) => {
                        say(&format!("report {} not delivered: {e}", path.display()));
                        last = Some(e);
                        // Later events wait for the earlier one (the controller reads
                        // them in order).
                        break;
                    }
                }
            }
            match last {
                None => return Ok(delivered),
                Some(e) if round == tries.max(1) => return Err(e),
                Some(_) => std::thread::sleep(pause),
            }
        }
        Ok(delivered)
    }
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::message::Event;
    use std::os::unix::fs::PermissionsExt;

    fn message(event: Event) -> Message {
        Message {
            event,
            hostname: "n1".into(),
            boot_id: "b1".into(),
            sent_by: "stage0".into(),
            version: None,
            reason: None,
            phases: Vec::new(),
            initramfs_ms: 0.0,
            uptime_at_start_ms: 0.0,
        }
    }

    #[test]
    fn the_token_is_kept_for_root_alone_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.token"), "s3cret-token\n").unwrap();
        let section = ControllerSection {
            url: Some("http://10.0.2.2:8080".into()),
            token_file: Some("node.token".into()),
        };
        let d = Destination::load(&section, dir.path()).unwrap().unwrap();
        assert!(!format!("{d:?}").contains("s3cret"), "{d:?}");
        let outbox = Outbox::at(dir.path().join("report"));
        outbox.keep(&d, "n1").unwrap();
        assert_eq!(outbox.hostname().as_deref(), Some("n1"));
        let mode = std::fs::metadata(dir.path().join("report/token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(outbox.destination().unwrap(), Some(d));
        // No URL, no destination; a URL without its token file is named.
        assert_eq!(
            Destination::load(&ControllerSection::default(), dir.path()).unwrap(),
            None
        );
        let missing = ControllerSection {
            url: Some("http://10.0.2.2:8080".into()),
            token_file: None,
        };
        let e = Destination::load(&missing, dir.path()).unwrap_err();
        assert!(e.contains("controller.token"), "{e}");
    }

    #[test]
    fn undelivered_reports_wait_in_order_and_an_absent_controller_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::at(dir.path());
        outbox.leave(&message(Event::Confirmed)).unwrap();
        outbox.leave(&message(Event::Boot)).unwrap();
        let names: Vec<_> = outbox
            .pending()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["boot.json", "confirmed.json"]);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let d = Destination::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let mut heard = Vec::new();
        let e = outbox
            .deliver(
                &d,
                Duration::from_millis(200),
                2,
                Duration::ZERO,
                &mut |s| heard.push(s.to_string()),
            )
            .unwrap_err();
        assert!(e.contains("127.0.0.1"), "{e}");
        // Two rounds, each stopping at the first: the confirmation waits for its boot.
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(heard.iter().all(|h| h.contains("boot.json")), "{heard:?}");
        assert_eq!(outbox.pending().len(), 2);
    }
}
