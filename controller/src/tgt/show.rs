//! The text tgtd prints for `show` requests (tgt's usr/target.c and usr/iscsi/), read
//! into types. It is meant for people, so this reads it by its fixed indentation and
//! skips lines it does not know.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A target as `--mode target --op show` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Target id.
    pub tid: u32,
    /// Target name.
    pub iqn: String,
    /// LUNs with a backing store, by number (not LUN 0, tgtd's controller LUN).
    pub luns: Vec<(u64, PathBuf)>,
    /// Initiator names allowed to log in (`--initiator-name` ACLs).
    pub initiator_names: Vec<String>,
    /// Initiator addresses allowed to log in (`--initiator-address` ACLs: an address, a
    /// network, or `ALL`).
    pub initiator_addresses: Vec<String>,
    /// Incoming CHAP accounts (the initiator authenticates).
    pub accounts: Vec<String>,
    /// The outgoing account (the target authenticates, mutual CHAP), tgtd keeps one at most.
    pub outgoing_accounts: Vec<String>,
    /// Logged-in initiators.
    pub sessions: Vec<Session>,
}

/// An I_T nexus: one initiator logged in to a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// tgtd's nexus id (the session's TSIH).
    pub id: u64,
    /// The initiator's name.
    pub initiator: String,
    /// The address its first connection came from.
    pub address: Option<IpAddr>,
}

/// A line of tgtd's text that does not read as expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// 1-based.
    pub line: usize,
    /// The line.
    pub text: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} of tgtd's answer reads {:?}",
            self.line, self.text
        )
    }
}

impl std::error::Error for Malformed {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Nexus,
    Luns,
    Accounts,
    Acl,
    Other,
}

/// Reads `--mode target --op show`. Each target starts at column 0 and its sections at
/// column 4 (tgt's target.c, `tgt_target_show_all`); lines this does not know are skipped.
pub fn parse_targets(text: &str) -> Result<Vec<Target>, Malformed> {
    let mut targets: Vec<Target> = Vec::new();
    let mut section = Section::Other;
    let mut lun = None;
    for (i, line) in text.lines().enumerate() {
        let bad = || Malformed {
            line: i + 1,
            text: line.to_string(),
        };
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if body.is_empty() {
            continue;
        }
        if indent == 0 {
            let (tid, iqn) = body
                .strip_prefix("Target ")
                .and_then(|r| r.split_once(": "))
                .ok_or_else(bad)?;
            targets.push(Target {
                tid: tid.parse().map_err(|_| bad())?,
                iqn: iqn.to_string(),
                ..Target::default()
            });
            section = Section::Other;
            continue;
        }
        let t = targets.last_mut().ok_or_else(bad)?;
        match (indent, section) {
            (4, _) => {
                section = match body {
                    "I_T nexus information:" => Section::Nexus,
                    "LUN information:" => Section::Luns,
                    "Account information:" => Section::Accounts,
                    "ACL information:" => Section::Acl,
                    _ => Section::Other,
                };
                lun = None;
            }
            (8, Section::Nexus) => {
                if let Some(id) = body.strip_prefix("I_T nexus: ") {
                    t.sessions.push(Session {
                        id: id.parse().map_err(|_| bad())?,
                        ..Session::default()
                    });
                }
            }
            // iSCSI's nexus text (usr/iscsi/session.c): "Initiator: NAME alias: ALIAS",
            // then per connection "Connection: CID" and "IP Address: ADDR".
            (12, Section::Nexus) => {
                if let (Some(s), Some(rest)) =
                    (t.sessions.last_mut(), body.strip_prefix("Initiator: "))
                {
                    let name = rest.split_once(" alias: ").map_or(rest, |(n, _)| n);
                    s.initiator = name.to_string();
                }
            }
            (16, Section::Nexus) => {
                if let (Some(s), Some(a)) =
                    (t.sessions.last_mut(), body.strip_prefix("IP Address: "))
                {
                    s.address = s.address.or(a.parse().ok());
                }
            }
            (8, Section::Luns) => {
                if let Some(n) = body.strip_prefix("LUN: ") {
                    lun = Some(n.parse::<u64>().map_err(|_| bad())?);
                }
            }
            (12, Section::Luns) => {
                // LUN 0 (and any LUN without a backing store) prints "None".
                if let Some(p) = body.strip_prefix("Backing store path: ") {
                    if p != "None" {
                        t.luns.push((lun.ok_or_else(bad)?, PathBuf::from(p)));
                    }
                }
            }
            (8, Section::Accounts) => match body.strip_suffix(" (outgoing)") {
                Some(user) => t.outgoing_accounts.push(user.to_string()),
                None => t.accounts.push(body.to_string()),
            },
            // tgtd prints both kinds of ACL alike, addresses first.
            (8, Section::Acl) => {
                if is_address(body) {
                    t.initiator_addresses.push(body.to_string());
                } else {
                    t.initiator_names.push(body.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(targets)
}

/// Whether an ACL entry is an address rule as tgtd reads one (usr/iscsi/target.c,
/// `ip_match`): `ALL`, or a numeric address, in brackets or not, with an optional
/// `/prefix`. Initiator names (`iqn.`, `eui.`, `naa.`) never read as one.
fn is_address(acl: &str) -> bool {
    if acl == "ALL" {
        return true;
    }
    let host = acl.split_once('/').map_or(acl, |(h, _)| h);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<IpAddr>().is_ok()
}

/// Reads `--mode account --op show`: "Account list:", then a user name per line.
pub fn parse_accounts(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::to_string)
        .collect()
}

/// Reads `--mode portal --op show`: "Portal: ADDR:PORT,TPGT" per line, IPv6 in brackets.
pub fn parse_portals(text: &str) -> Result<Vec<SocketAddr>, Malformed> {
    let mut portals = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let portal = line
            .strip_prefix("Portal: ")
            .and_then(|p| p.rsplit_once(','))
            .and_then(|(a, _tpgt)| a.parse().ok())
            .ok_or_else(|| Malformed {
                line: i + 1,
                text: line.to_string(),
            })?;
        portals.push(portal);
    }
    Ok(portals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tgt::wire;

    /// The text of a captured response (testdata/).
    fn shown(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tgt/testdata")
            .join(name);
        let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        wire::text(&b[wire::RESPONSE_LEN..])
    }

    const T: &str = "iqn.2024-01.org.terra:node1";
    const A: &str = "iqn.2024-01.org.terra:init-a";

    #[test]
    fn targets_from_a_real_show() {
        let t = shown("target_show.rsp");
        let targets = parse_targets(&t).unwrap();
        assert_eq!(
            targets,
            [
                Target {
                    tid: 1,
                    iqn: T.into(),
                    luns: vec![(1, "/tmp/tgtcap/lun.img".into())],
                    initiator_names: vec![A.into()],
                    initiator_addresses: vec!["10.0.0.0/8".into()],
                    accounts: vec!["alice".into()],
                    outgoing_accounts: vec!["bob".into()],
                    sessions: vec![],
                },
                Target {
                    tid: 2,
                    iqn: "iqn.2024-01.org.terra:node2".into(),
                    luns: vec![(1, "/tmp/tgtcap/lun.img".into())],
                    initiator_names: vec![A.into()],
                    initiator_addresses: vec![],
                    accounts: vec!["alice".into()],
                    outgoing_accounts: vec![],
                    sessions: vec![Session {
                        id: 6,
                        initiator: A.into(),
                        address: Some("127.0.0.1".parse().unwrap()),
                    }],
                },
            ]
        );
        assert_eq!(parse_targets(""), Ok(vec![]));
    }

    #[test]
    fn show_text_that_does_not_read() {
        let e = parse_targets("Target x: iqn.a\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_targets("Target 1: iqn.a\n    LUN information:\n        LUN: -\n");
        assert_eq!(e.unwrap_err().line, 3);
        assert!(parse_targets("    ACL information:\n").is_err());
        // Unknown lines are skipped: a later tgt may print more.
        let t = parse_targets("Target 3: iqn.b\n    New section:\n        whatever\n").unwrap();
        assert_eq!((t[0].tid, t[0].luns.len()), (3, 0));
    }

    #[test]
    fn acl_entries_by_kind() {
        for a in [
            "ALL",
            "10.0.0.1",
            "10.0.0.0/8",
            "::1",
            "[fe80::1]",
            "[fd00::]/64",
        ] {
            assert!(is_address(a), "{a}");
        }
        for n in [A, "eui.02004567A425678D", "naa.52004567BA64678D", "iqn.x/y"] {
            assert!(!is_address(n), "{n}");
        }
    }

    #[test]
    fn accounts_and_portals() {
        let t = shown("account_show.rsp");
        assert_eq!(parse_accounts(&t), ["bob", "alice"]);
        assert!(parse_accounts("").is_empty());
        let t = shown("portal_show.rsp");
        assert_eq!(
            parse_portals(&t),
            Ok(vec!["127.0.0.1:53003".parse().unwrap()])
        );
        assert_eq!(
            parse_portals("Portal: [::]:3260,1\n"),
            Ok(vec!["[::]:3260".parse().unwrap()])
        );
        assert!(parse_portals("Portal: nowhere,1\n").is_err());
    }
}
