//! What stage0 hands the keeper over its stdin pipe: one record per session, a line per
//! field, values hex-encoded (names and secrets need no escaping). Secrets travel only
//! here: never in argv, the environment or a file. Both sides zero their buffers.

use std::fmt::Write as _;
use std::time::Duration;

use super::Kept;
use crate::iscsi::chap::{Chap, ChapAlgorithm, Credentials, Secret};
use crate::iscsi::target::Portal;

const MAGIC: &str = "terra-keeper 1";

/// The bytes for `sessions`. The caller zeroes them once written.
pub fn encode(sessions: &[Kept]) -> Vec<u8> {
    let mut s = String::with_capacity(1024);
    let _ = writeln!(s, "{MAGIC}");
    for k in sessions {
        let _ = writeln!(s, "session");
        let _ = writeln!(s, "sid {}", k.sid);
        let _ = writeln!(s, "cid {}", k.cid);
        let _ = writeln!(s, "host {}", k.host);
        put(&mut s, "portal", k.portal.to_string().as_bytes());
        put(&mut s, "initiator", k.initiator.as_bytes());
        put(&mut s, "target", k.target.as_bytes());
        put(&mut s, "isid", &k.isid);
        let _ = writeln!(s, "tsih {}", k.tsih);
        let _ = writeln!(s, "timeout_ms {}", k.timeout.as_millis());
        if let Some(c) = &k.chap {
            let algs: Vec<String> = c.algorithms.iter().map(|a| a.code().to_string()).collect();
            let _ = writeln!(s, "chap_algorithms {}", algs.join(","));
            put(&mut s, "chap_user", c.initiator.user.as_bytes());
            put(&mut s, "chap_secret", c.initiator.secret.expose());
            if let Some(m) = &c.mutual {
                put(&mut s, "mutual_user", m.user.as_bytes());
                put(&mut s, "mutual_secret", m.secret.expose());
            }
        }
        let _ = writeln!(s, "end");
    }
    s.into_bytes()
}

/// `key hex\n`, hex-encoded straight into `s`: no copy of a secret is left elsewhere.
fn put(s: &mut String, key: &str, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push_str(key);
    s.push(' ');
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s.push('\n');
}

fn unhex(v: &str) -> Result<Vec<u8>, String> {
    if !v.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..v.len())
        .step_by(2)
        .map(|i| {
            v.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| "bad hex".to_string())
        })
        .collect()
}

fn text(v: &str) -> Result<String, String> {
    String::from_utf8(unhex(v)?).map_err(|_| "not UTF-8".to_string())
}

#[derive(Default)]
struct Partial {
    sid: Option<u32>,
    cid: Option<u32>,
    host: Option<u32>,
    portal: Option<Portal>,
    initiator: Option<String>,
    target: Option<String>,
    isid: Option<[u8; 6]>,
    tsih: u16,
    timeout: Option<Duration>,
    algorithms: Vec<ChapAlgorithm>,
    chap_user: Option<String>,
    chap_secret: Option<Secret>,
    mutual_user: Option<String>,
    mutual_secret: Option<Secret>,
}

impl Partial {
    fn finish(self) -> Result<Kept, String> {
        let need = |what: &str| format!("session record without {what}");
        let chap = match (self.chap_user, self.chap_secret) {
            (Some(user), Some(secret)) => Some(Chap {
                initiator: Credentials { user, secret },
                mutual: match (self.mutual_user, self.mutual_secret) {
                    (Some(user), Some(secret)) => Some(Credentials { user, secret }),
                    _ => None,
                },
                algorithms: self.algorithms,
            }),
            _ => None,
        };
        Ok(Kept {
            sid: self.sid.ok_or_else(|| need("sid"))?,
            cid: self.cid.ok_or_else(|| need("cid"))?,
            host: self.host.ok_or_else(|| need("host"))?,
            portal: self.portal.ok_or_else(|| need("portal"))?,
            initiator: self.initiator.ok_or_else(|| need("initiator"))?,
            target: self.target.ok_or_else(|| need("target"))?,
            isid: self.isid.ok_or_else(|| need("isid"))?,
            tsih: self.tsih,
            timeout: self.timeout.unwrap_or(Duration::from_secs(10)),
            chap,
        })
    }
}

/// Parses what [`encode`] wrote. Errors never quote a value (it may be a secret).
pub fn decode(bytes: &[u8]) -> Result<Vec<Kept>, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| "state is not UTF-8".to_string())?;
    let mut lines = s.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("state does not start with {MAGIC:?}"));
    }
    let mut out = Vec::new();
    let mut cur: Option<Partial> = None;
    for (n, line) in lines.enumerate() {
        let at = |e: String| format!("state line {}: {e}", n + 2);
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match (key, cur.as_mut()) {
            ("session", None) => cur = Some(Partial::default()),
            ("end", Some(_)) => {
                if let Some(p) = cur.take() {
                    out.push(p.finish().map_err(at)?);
                }
            }
            (_, None) => return Err(at(format!("{key:?} outside a session record"))),
            (_, Some(p)) => {
                let num = |v: &str| v.parse::<u64>().map_err(|_| "not a number".to_string());
                let r: Result<(), String> = (|| {
                    match key {
                        "sid" => {
                            p.sid = Some(u32::try_from(num(value)?).map_err(|e| e.to_string())?)
                        }
                        "cid" => {
                            p.cid = Some(u32::try_from(num(value)?).map_err(|e| e.to_string())?)
                        }
                        "host" => {
                            p.host = Some(u32::try_from(num(value)?).map_err(|e| e.to_string())?)
                        }
                        "tsih" => p.tsih = u16::try_from(num(value)?).map_err(|e| e.to_string())?,
                        "timeout_ms" => p.timeout = Some(Duration::from_millis(num(value)?)),
                        "portal" => {
                            p.portal = Some(Portal::parse(&text(value)?).ok_or("unusable portal")?)
                        }
                        "initiator" => p.initiator = Some(text(value)?),
                        "target" => p.target = Some(text(value)?),
                        "isid" => {
                            let b = unhex(value)?;
                            p.isid = Some(b.try_into().map_err(|_| "ISID is not 6 bytes")?);
                        }
                        "chap_algorithms" => {
                            p.algorithms = value
                                .split(',')
                                .filter_map(ChapAlgorithm::from_code)
                                .collect()
                        }
                        "chap_user" => p.chap_user = Some(text(value)?),
                        "chap_secret" => p.chap_secret = Some(Secret::new(text(value)?)),
                        "mutual_user" => p.mutual_user = Some(text(value)?),
                        "mutual_secret" => p.mutual_secret = Some(Secret::new(text(value)?)),
                        _ => {} // a newer stage0's field
                    }
                    Ok(())
                })();
                r.map_err(|e| at(format!("{key}: {e}")))?;
            }
        }
    }
    if cur.is_some() {
        return Err("state ends inside a session record".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(chap: Option<Chap>) -> Kept {
        Kept {
            sid: 1,
            cid: 0,
            host: 2,
            portal: Portal {
                host: "10.0.2.2".into(),
                port: 3261,
            },
            initiator: "iqn.2024-01.test:i".into(),
            target: "iqn.2024-01.test:t".into(),
            isid: [0x80, 1, 2, 3, 0, 0],
            tsih: 7,
            timeout: Duration::from_secs(10),
            chap,
        }
    }

    #[test]
    fn sessions_round_trip_with_their_secrets() {
        let mut chap = Chap::new("node", Secret::new("s3cret with spaces\nand lines"));
        chap.algorithms = vec![ChapAlgorithm::Md5];
        chap.mutual = Some(Credentials {
            user: "target".into(),
            secret: Secret::new("other"),
        });
        let sessions = vec![kept(Some(chap)), kept(None)];
        let bytes = encode(&sessions);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("other"),
            "hex only"
        );
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        let c = back[0].chap.as_ref().unwrap();
        assert_eq!(
            c.initiator.secret.expose(),
            b"s3cret with spaces\nand lines"
        );
        assert_eq!(c.mutual.as_ref().unwrap().secret.expose(), b"other");
        assert_eq!(c.algorithms, vec![ChapAlgorithm::Md5]);
        assert_eq!(back[0].portal, sessions[0].portal);
        assert_eq!((back[1].isid, back[1].tsih), ([0x80, 1, 2, 3, 0, 0], 7));
        assert!(back[1].chap.is_none());
    }

    #[test]
    fn an_ipv6_portal_comes_back_to_the_keeper() {
        // The keeper reconnects to what it decodes: the address must survive unbracketed.
        let mut k = kept(None);
        k.portal = Portal {
            host: "fec0::2".into(),
            port: 3260,
        };
        let back = decode(&encode(&[k.clone()])).unwrap();
        assert_eq!(back[0].portal, k.portal);
        assert_eq!(back[0].portal.to_string(), "[fec0::2]:3260");
    }

    #[test]
    fn garbage_is_refused_without_echoing_it() {
        assert!(decode(b"").is_err());
        assert!(decode(b"terra-keeper 1\nsession\nsid 1\n").is_err());
        let e = decode(b"terra-keeper 1\nsession\nchap_secret zz-topsecret\nend\n").unwrap_err();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(decode(b"terra-keeper 1\nsession\nsid 1\nend\n").is_err());
    }
}
