//! What `terra update` does, decided without I/O: node.toml's `[update]` read into a
//! [`Policy`], and [`decide`] turning the policy, what the source names now and what the
//! disk holds into a [`Plan`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use terra_init::config::update::UpdateSection;

use super::window::{self, next_opening, open_now, Opening, Window};

/// Where newer images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An image reference whose tag is followed, by digest.
    Image(String),
    /// The fleet controller names the image (rollouts).
    Controller,
}

/// When a found image is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Stage and apply (and reboot) as soon as it is found.
    Immediate,
    /// Stage when found; apply and reboot inside a window.
    Window,
    /// Stage only; `terra apply` applies.
    Manual,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Immediate => "immediate",
            Strategy::Window => "window",
            Strategy::Manual => "manual",
        })
    }
}

/// node.toml's `[update]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Where images come from.
    pub source: Source,
    /// When they are applied.
    pub strategy: Strategy,
    /// The maintenance windows (strategy `window`).
    pub windows: Vec<Window>,
    /// The longest random delay before applying.
    pub delay: Duration,
    /// The drain hook run before a reboot.
    pub pre_reboot: Option<PathBuf>,
}

/// A key of `[update]` that cannot be used: the key (`update.window[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The key, as `update.<key>`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for PolicyError {}

fn key_err(key: &str, reason: impl fmt::Display) -> PolicyError {
    PolicyError {
        key: format!("update.{key}"),
        reason: reason.to_string(),
    }
}

impl Policy {
    /// Reads `[update]`; None when it names no source (the node does not update itself).
    pub fn from_section(s: &UpdateSection) -> Result<Option<Policy>, PolicyError> {
        let Some(source) = s.source.as_deref().map(str::trim) else {
            if s.strategy.is_some() || !s.window.is_empty() || s.delay.is_some() {
                return Err(key_err(
                    "source",
                    "missing: strategy, window and delay need a source to update from",
                ));
            }
            return Ok(None);
        };
        let source = match source {
            "" => return Err(key_err("source", "empty")),
            "controller" => Source::Controller,
            r => Source::Image(r.to_string()),
        };
        let windows = s
            .window
            .iter()
            .enumerate()
            .map(|(i, w)| {
                w.parse::<Window>()
                    .map_err(|e| key_err(&format!("window[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let strategy = match s.strategy.as_deref() {
            None if windows.is_empty() => Strategy::Immediate,
            None | Some("window") => Strategy::Window,
            Some("immediate") => Strategy::Immediate,
            Some("manual") => Strategy::Manual,
            Some(other) => {
                return Err(key_err(
                    "strategy",
                    format!("{other:?}: one of \"immediate\", \"window\", \"manual\""),
                ))
            }
        };
        if strategy == Strategy::Window && windows.is_empty() {
            return Err(key_err(
                "window",
                "strategy \"window\" needs at least one window, e.g. \"Sat,Sun 02:00-04:00\"",
            ));
        }
        let delay = match &s.delay {
            Some(d) => window::parse_delay(d).map_err(|e| key_err("delay", e))?,
            None => Duration::ZERO,
        };
        let pre_reboot = match s.pre_reboot.as_deref() {
            Some(p) if !p.starts_with('/') => {
                return Err(key_err("pre_reboot", format!("{p:?}: an absolute path")))
            }
            p => p.map(PathBuf::from),
        };
        Ok(Some(Policy {
            source,
            strategy,
            windows,
            delay,
            pre_reboot,
        }))
    }

    /// Whether a version may be applied at `now`; else when it may next (None: never by
    /// itself, or no window opens).
    pub fn may_apply(&self, now: Timestamp) -> Result<Option<Opening>, Option<Opening>> {
        match self.strategy {
            Strategy::Immediate => Ok(None),
            Strategy::Manual => Err(None),
            Strategy::Window => match open_now(&self.windows, now) {
                Some(o) => Ok(Some(o)),
                None => Err(next_opening(&self.windows, now)),
            },
        }
    }
}

/// What the disk holds, as far as the decision goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskView {
    /// The booted version, when it is still tentative (nothing is applied before it is
    /// confirmed or rejected).
    pub booted_tentative: Option<String>,
    /// A version made from the found digest that is a candidate or running: good or
    /// tentative.
    pub current: Option<String>,
    /// A staged version made from the found digest.
    pub staged: Option<String>,
    /// Why the found digest was rejected on this node, when it was.
    pub rejected: Option<String>,
}

/// What `terra update` does now.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The booted version is tentative: wait for its confirmation.
    WaitForConfirmation(String),
    /// The found image is a version already (good or tentative).
    UpToDate(String),
    /// The found digest failed on this node before: never applied again by itself.
    Rejected(String),
    /// Fetch and build it as a staged version (`fetch`), unless it is staged already
    /// (`staged`); then apply it now, or leave it staged until `then`.
    Update {
        /// The staged version made from it already, if any.
        staged: Option<String>,
        /// What follows the staging.
        then: Then,
    },
}

/// After staging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Then {
    /// Apply and reboot now (after the random delay, and inside `until` when a window
    /// is open).
    Apply {
        /// When the open window closes, if one is open.
        until: Option<Timestamp>,
    },
    /// Leave it staged: the next window opens then (None: manual, or no window opens).
    Wait(Option<Opening>),
}

/// Decides what `terra update` does at `now`, given the policy and what the disk holds
/// of the digest the source names.
pub fn decide(policy: &Policy, disk: &DiskView, now: Timestamp) -> Plan {
    if let Some(v) = &disk.current {
        return Plan::UpToDate(v.clone());
    }
    if let Some(why) = &disk.rejected {
        return Plan::Rejected(why.clone());
    }
    if let Some(b) = &disk.booted_tentative {
        return Plan::WaitForConfirmation(b.clone());
    }
    let then = match policy.may_apply(now) {
        Ok(open) => Then::Apply {
            until: open.map(|o| o.end),
        },
        Err(next) => Then::Wait(next),
    };
    Plan::Update {
        staged: disk.staged.clone(),
        then,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> UpdateSection {
        let node = terra_init::config::NodeConfig::parse(
            &format!("[update]\n{text}"),
            std::path::Path::new("node.toml"),
        )
        .unwrap();
        node.update
    }

    fn policy(toml: &str) -> Policy {
        Policy::from_section(&section(toml)).unwrap().unwrap()
    }

    #[test]
    fn no_source_no_updates_and_defaults() {
        assert_eq!(Policy::from_section(&section("")).unwrap(), None);
        let p = policy("source = \"reg.example/os:stable\"");
        assert_eq!(p.strategy, Strategy::Immediate);
        assert_eq!(p.delay, Duration::ZERO);
        let p = policy("source = \"controller\"\nwindow = [\"Sat 02:00-04:00\"]");
        assert_eq!(
            (p.source, p.strategy),
            (Source::Controller, Strategy::Window)
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (toml, key) in [
            ("window = [\"Sat 02:00-04:00\"]", "update.source"),
            (
                "source = \"r\"\nwindow = [\"Sat 02:00-04:00\", \"Sun 2-4\"]",
                "update.window[1]",
            ),
            ("source = \"r\"\nstrategy = \"window\"", "update.window"),
            ("source = \"r\"\nstrategy = \"often\"", "update.strategy"),
            ("source = \"r\"\ndelay = \"a while\"", "update.delay"),
            (
                "source = \"r\"\npre_reboot = \"drain.sh\"",
                "update.pre_reboot",
            ),
            ("source = \" \"", "update.source"),
        ] {
            let e = Policy::from_section(&section(toml)).unwrap_err();
            assert_eq!(e.key, key, "{toml}: {e}");
        }
    }

    #[test]
    fn the_plan_follows_policy_disk_and_clock() {
        let sat_3am: Timestamp = "2026-12-12T03:00:00Z".parse().unwrap();
        let monday: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let win = policy("source = \"r\"\nwindow = [\"Sat,Sun 02:00-04:00\"]");
        let fresh = DiskView::default();
        assert_eq!(
            decide(&win, &fresh, sat_3am),
            Plan::Update {
                staged: None,
                then: Then::Apply {
                    until: Some("2026-12-12T04:00:00Z".parse().unwrap())
                }
            }
        );
        match decide(&win, &fresh, monday) {
            Plan::Update {
                then: Then::Wait(Some(o)),
                ..
            } => assert_eq!(o.start, "2026-12-12T02:00:00Z".parse().unwrap()),
            other => panic!("{other:?}"),
        }
        let manual = policy("source = \"r\"\nstrategy = \"manual\"");
        assert_eq!(
            decide(&manual, &fresh, sat_3am),
            Plan::Update {
                staged: None,
                then: Then::Wait(None)
            }
        );
        let rejected = DiskView {
            rejected: Some("v3 failed health check 10-http".into()),
            ..DiskView::default()
        };
        assert!(matches!(
            decide(&win, &rejected, sat_3am),
            Plan::Rejected(_)
        ));
        let unconfirmed = DiskView {
            booted_tentative: Some("v4".into()),
            ..DiskView::default()
        };
        assert_eq!(
            decide(&win, &unconfirmed, sat_3am),
            Plan::WaitForConfirmation("v4".into())
        );
        let current = DiskView {
            current: Some("v5".into()),
            booted_tentative: Some("v5".into()),
            ..DiskView::default()
        };
        assert_eq!(decide(&win, &current, sat_3am), Plan::UpToDate("v5".into()));
    }
}
