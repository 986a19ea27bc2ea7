//! What a node tells its controller, as JSON: one [`Message`] per event — the boot stage0
//! chose a version for, and the booted system's confirmation or rejection of it (`bless`).
//! Both ends use this type (stage0 and `bless` write it, the controller reads it), so the
//! format has one definition. Bytes only: sending is [`super::send`]'s.
//!
//! A message always fits [`MAX_BODY`]: [`Message::fit`] shortens what can grow (reasons,
//! fallbacks, phases) before it is sent, and [`Message::parse`] refuses anything larger or
//! malformed, naming what is wrong.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::http::MAX_BODY;
use super::{Phase, VersionReport};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// stage0 chose a version and is about to start it.
    Boot,
    /// The booted system confirmed its tentative version (health checks passed).
    Confirmed,
    /// The booted system rejected it (a health check failed, or `bless bad`).
    Rejected,
    /// `terra update` applied the version the controller named and is restarting into it
    /// (the next boot decides; stage0's report of that boot follows).
    Applied,
}

impl Event {
    /// The event's name on the wire and in the controller's tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Boot => "boot",
            Event::Confirmed => "confirmed",
            Event::Rejected => "rejected",
            Event::Applied => "applied",
        }
    }
}

/// A candidate that failed before the chosen one, in the boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// The version.
    pub name: String,
    /// Why it was a candidate (`tentative`, `default`, …).
    pub why: String,
    /// Why it failed.
    pub reason: String,
}

/// The kexec that brought the version onto its own kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kexec {
    /// The kernel that booted first.
    pub from_release: String,
    /// That first boot's time up to the kexec, ms.
    pub first_boot_ms: u64,
    /// The version's kernel.
    pub release: String,
}

/// The version part: boot.json's `version` without what only the node needs, plus the
/// image it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The version's name.
    pub name: String,
    /// Its image's manifest digest (empty when unknown).
    #[serde(default)]
    pub digest: String,
    /// Its image reference.
    #[serde(default)]
    pub image: String,
    /// Why stage0 chose it (`tentative`, `default`, `last_good`, `pinned`).
    pub why: String,
    /// Whether it is on trial.
    #[serde(default)]
    pub tentative: bool,
    /// Tries left after this boot.
    #[serde(default)]
    pub tries_left: u32,
    /// Candidates that failed first, in this boot.
    #[serde(default)]
    pub fallbacks: Vec<Fallback>,
    /// Set when this boot came through a kexec.
    #[serde(default)]
    pub kexec: Option<Kexec>,
}

/// One phase's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// The phase (ARCHITECTURE.md §2).
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// What happened.
    pub event: Event,
    /// The node's hostname: the controller accepts it only from that node's token.
    pub hostname: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): ties a confirmation to
    /// its boot, and makes a report sent twice count once.
    pub boot_id: String,
    /// `stage0` (on the boot path), `bless` (from the booted system) or `terra` (`terra
    /// update` applying a version).
    pub sent_by: String,
    /// The version; None on a root without versions.
    #[serde(default)]
    pub version: Option<Version>,
    /// Why it was rejected (the failing check and the end of its output).
    #[serde(default)]
    pub reason: Option<String>,
    /// stage0's phases, in order (empty for confirmations).
    #[serde(default)]
    pub phases: Vec<PhaseTime>,
    /// Time in the initramfs up to the report, ms.
    #[serde(default)]
    pub initramfs_ms: f64,
    /// Kernel uptime when stage0 started, ms.
    #[serde(default)]
    pub uptime_at_start_ms: f64,
}

/// Longest reason kept (fallbacks' and a rejection's), in bytes.
pub const MAX_REASON: usize = 400;
/// Most fallbacks kept (a boot tries few versions; the first ones matter).
pub const MAX_FALLBACKS: usize = 8;
/// Longest name (hostname, version, boot id, release, phase) accepted.
const MAX_NAME: usize = 255;

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Larger than [`MAX_BODY`].
    TooLarge(usize),
    /// Not JSON of this shape (serde's words: the field and the position).
    Malformed(String),
    /// A field is empty or longer than it may be.
    Field(&'static str),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::TooLarge(n) => {
                write!(f, "report of {n} bytes: larger than {MAX_BODY}")
            }
            MessageError::Malformed(e) => write!(f, "malformed report: {e}"),
            MessageError::Field(k) => write!(f, "report field {k}: empty or too long"),
        }
    }
}

impl std::error::Error for MessageError {}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn shorten(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
}

impl Version {
    /// The report's version part from boot.json's (which carries the image and digest).
    pub fn from_report(v: &VersionReport) -> Self {
        Version {
            name: v.name.clone(),
            digest: v.digest.clone(),
            image: v.image.clone(),
            why: v.why.as_str().to_string(),
            tentative: v.tentative,
            tries_left: v.tries_left,
            fallbacks: v
                .fallbacks
                .iter()
                .map(|a| Fallback {
                    name: a.name.clone(),
                    why: a.why.as_str().to_string(),
                    reason: a.reason.clone(),
                })
                .collect(),
            kexec: v.kexec.as_ref().map(|k| Kexec {
                from_release: k.from_release.clone(),
                first_boot_ms: k.first_boot_ms,
                release: k.release.clone(),
            }),
        }
    }
}

/// The phases as the report carries them.
pub fn phase_times(phases: &[Phase]) -> Vec<PhaseTime> {
    phases
        .iter()
        .map(|p| PhaseTime {
            name: p.name.to_string(),
            ms: (p.ms * 10.0).round() / 10.0,
        })
        .collect()
}

/// This boot's id, as the kernel gives it (empty when /proc cannot say).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Message {
    /// A report from the booted system (`bless`'s verdict, `terra update`'s applied
    /// version): this boot's id, no phases, no initramfs times, fitted to size.
    pub fn from_system(
        event: Event,
        hostname: String,
        sent_by: &str,
        version: Option<Version>,
        reason: Option<String>,
    ) -> Message {
        let mut m = Message {
            event,
            hostname,
            boot_id: boot_id(),
            sent_by: sent_by.into(),
            version,
            reason,
            phases: Vec::new(),
            initramfs_ms: 0.0,
            uptime_at_start_ms: 0.0,
        };
        m.fit();
        m
    }

    /// Shortens what can grow so the JSON fits [`MAX_BODY`]: reasons to [`MAX_REASON`],
    /// fallbacks to [`MAX_FALLBACKS`], then, if still too large, the reasons further.
    pub fn fit(&mut self) {
        let mut max = MAX_REASON;
        loop {
            if let Some(r) = &mut self.reason {
                shorten(r, max);
            }
            if let Some(v) = &mut self.version {
                v.fallbacks.truncate(MAX_FALLBACKS);
                for f in &mut v.fallbacks {
                    shorten(&mut f.reason, max);
                }
            }
            if self.to_bytes().len() <= MAX_BODY || max < 16 {
                return;
            }
            max /= 2;
        }
    }

    /// How the event went, in one word the controller lists: `booted`, `tentative` (on
    /// trial), `fell back` (a candidate failed first), `confirmed`, `rejected`.
    pub fn result(&self) -> &'static str {
        match self.event {
            Event::Confirmed => "confirmed",
            Event::Rejected => "rejected",
            Event::Applied => "applied",
            Event::Boot => match &self.version {
                Some(v) if !v.fallbacks.is_empty() => "fell back",
                Some(v) if v.tentative => "tentative",
                _ => "booted",
            },
        }
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a body as the controller receives it: at most [`MAX_BODY`] bytes, this shape,
    /// names that are present and short.
    pub fn parse(body: &[u8]) -> Result<Message, MessageError> {
        if body.len() > MAX_BODY {
            return Err(MessageError::TooLarge(body.len()));
        }
        let m: Message =
            serde_json::from_slice(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
        let named = |s: &str| !s.is_empty() && s.len() <= MAX_NAME;
        if !named(&m.hostname) {
            return Err(MessageError::Field("hostname"));
        }
        if !named(&m.boot_id) {
            return Err(MessageError::Field("boot_id"));
        }
        if !named(&m.sent_by) {
            return Err(MessageError::Field("sent_by"));
        }
        if let Some(v) = &m.version {
            if !named(&v.name) || v.why.len() > MAX_NAME || v.digest.len() > MAX_NAME {
                return Err(MessageError::Field("version"));
            }
        }
        if m.phases
            .iter()
            .any(|p| !named(&p.name) || !p.ms.is_finite())
        {
            return Err(MessageError::Field("phases"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Message {
        Message {
            event: Event::Boot,
            hostname: "n1".into(),
            boot_id: "0b5c1a52-6e0c-4a57-9d2b-3c1f1d1e2f30".into(),
            sent_by: "stage0".into(),
            version: Some(Version {
                name: "v2".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                image: "registry/os:v2".into(),
                why: "default".into(),
                tentative: false,
                tries_left: 0,
                fallbacks: vec![Fallback {
                    name: "v3".into(),
                    why: "tentative".into(),
                    reason: "no /sbin/init in the version".into(),
                }],
                kexec: None,
            }),
            reason: None,
            phases: vec![PhaseTime {
                name: "early".into(),
                ms: 1.5,
            }],
            initramfs_ms: 812.3,
            uptime_at_start_ms: 640.0,
        }
    }

    #[test]
    fn a_message_goes_through_json_unchanged() {
        let m = sample();
        let bytes = m.to_bytes();
        assert_eq!(Message::parse(&bytes).unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["event"], "boot");
        assert_eq!(
            v["version"]["fallbacks"][0]["reason"],
            "no /sbin/init in the version"
        );
        assert_eq!(m.result(), "fell back");
        let mut ok = sample();
        ok.version.as_mut().unwrap().fallbacks.clear();
        assert_eq!(ok.result(), "booted");
        ok.version.as_mut().unwrap().tentative = true;
        assert_eq!(ok.result(), "tentative");
        ok.event = Event::Rejected;
        assert_eq!(ok.result(), "rejected");
    }

    #[test]
    fn why_is_named_on_the_wire_as_serde_names_it_in_boot_json() {
        use crate::bootstate::Why;
        for w in [Why::Pinned, Why::Tentative, Why::Default, Why::LastGood] {
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
        }
    }

    #[test]
    fn bad_bodies_are_refused_naming_what_is_wrong() {
        assert!(matches!(
            Message::parse(&vec![b' '; MAX_BODY + 1]),
            Err(MessageError::TooLarge(_))
        ));
        let e = Message::parse(br#"{"event":"boot"}"#).unwrap_err();
        assert!(e.to_string().contains("hostname"), "{e}");
        let e = Message::parse(br#"{"event":"exploded","hostname":"n1"}"#).unwrap_err();
        assert!(e.to_string().contains("exploded"), "{e}");
        let mut m = sample();
        m.hostname = String::new();
        assert_eq!(
            Message::parse(&m.to_bytes()),
            Err(MessageError::Field("hostname"))
        );
        let mut m = sample();
        m.version.as_mut().unwrap().name = "x".repeat(300);
        assert_eq!(
            Message::parse(&m.to_bytes()),
            Err(MessageError::Field("version"))
        );
    }

    #[test]
    fn fit_keeps_a_message_with_huge_reasons_under_the_limit() {
        let mut m = sample();
        m.reason = Some("é".repeat(5000));
        let v = m.version.as_mut().unwrap();
        v.fallbacks = (0..20)
            .map(|i| Fallback {
                name: format!("v{i}"),
                why: "tentative".into(),
                reason: "x".repeat(3000),
            })
            .collect();
        m.fit();
        let bytes = m.to_bytes();
        assert!(bytes.len() <= MAX_BODY, "{}", bytes.len());
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back.version.unwrap().fallbacks.len(), MAX_FALLBACKS);
        assert!(back.reason.unwrap().ends_with("..."));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(
            b in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let _ = Message::parse(&b);
        }

        #[test]
        fn fitted_messages_always_parse(reason in "\\PC{0,3000}", n in 0usize..30) {
            let mut m = sample();
            m.reason = Some(reason.clone());
            m.version.as_mut().unwrap().fallbacks = (0..n)
                .map(|i| Fallback { name: format!("v{i}"), why: "default".into(), reason: reason.clone() })
                .collect();
            m.fit();
            prop_assert!(Message::parse(&m.to_bytes()).is_ok());
        }
    }
}
