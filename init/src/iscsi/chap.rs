//! CHAP for iSCSI (RFC 7143 §12.1.3 over RFC 1994), initiator side: one-way (the target
//! checks us) and mutual (we check the target too). Algorithms: MD5 (CHAP_A=5) and SHA-256
//! (CHAP_A=7). Secrets live in [`Secret`], which never prints (node.toml's type, defined with
//! the `[iscsi]` schema in `crate::config::iscsi`).

use std::fmt;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// Re-exported: CHAP code and its callers name it here.
pub use crate::config::iscsi::Secret;

/// A CHAP algorithm, by its IANA PPP authentication algorithm number (RFC 7143 §12.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapAlgorithm {
    /// 5: MD5 (RFC 1994).
    Md5,
    /// 7: SHA-256.
    Sha256,
}

impl ChapAlgorithm {
    /// The CHAP_A number.
    pub fn code(self) -> u8 {
        match self {
            ChapAlgorithm::Md5 => 5,
            ChapAlgorithm::Sha256 => 7,
        }
    }

    /// From a CHAP_A number.
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim() {
            "5" => Some(ChapAlgorithm::Md5),
            "7" => Some(ChapAlgorithm::Sha256),
            _ => None,
        }
    }

    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            ChapAlgorithm::Md5 => "MD5",
            ChapAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// The response: H(id || secret || challenge) (RFC 1994 §4.1).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            ChapAlgorithm::Md5 => {
                let mut h = Md5::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
            ChapAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                h.update([id]);
                h.update(secret);
                h.update(challenge);
                h.finalize().to_vec()
            }
        }
    }
}

/// A CHAP name and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// CHAP_N.
    pub user: String,
    /// The shared secret.
    pub secret: Secret,
}

/// CHAP settings for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chap {
    /// What we answer the target's challenge with.
    pub initiator: Credentials,
    /// With mutual CHAP: the name and secret the target must prove.
    pub mutual: Option<Credentials>,
    /// Algorithms we offer, preferred first.
    pub algorithms: Vec<ChapAlgorithm>,
}

impl Chap {
    /// One-way CHAP offering SHA-256 then MD5.
    pub fn new(user: &str, secret: Secret) -> Self {
        Chap {
            initiator: Credentials {
                user: user.into(),
                secret,
            },
            mutual: None,
            algorithms: vec![ChapAlgorithm::Sha256, ChapAlgorithm::Md5],
        }
    }
}

/// CHAP went wrong. No variant carries a secret or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChapError {
    /// The target chose an algorithm we did not offer, or none.
    Algorithm(String),
    /// A key the exchange needs is missing.
    Missing(&'static str),
    /// A key has a value we cannot use.
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        why: &'static str,
    },
    /// Mutual CHAP: the target answered with another name.
    TargetName {
        /// The name configured.
        expected: String,
        /// The name the target gave.
        got: String,
    },
    /// Mutual CHAP: the target's response does not match its secret.
    TargetResponse,
    /// The same secret is configured for both directions, which RFC 7143 §12.1.3 forbids
    /// (it lets an attacker reflect the target's challenge).
    SameSecret,
}

impl fmt::Display for ChapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChapError::Algorithm(a) => write!(
                f,
                "CHAP: the target chose algorithm CHAP_A={a:?}, which was not offered"
            ),
            ChapError::Missing(k) => write!(f, "CHAP: the target did not send {k}"),
            ChapError::Invalid { key, why } => {
                write!(f, "CHAP: invalid {key} from the target: {why}")
            }
            ChapError::TargetName { expected, got } => write!(
                f,
                "mutual CHAP: the target authenticated as {got:?}, expected {expected:?}"
            ),
            ChapError::TargetResponse => f.write_str(
                "mutual CHAP: the target's response does not match the configured mutual secret",
            ),
            ChapError::SameSecret => f.write_str(
                "CHAP: the mutual secret must differ from the initiator secret (RFC 7143 §12.1.3)",
            ),
        }
    }
}

impl std::error::Error for ChapError {}

/// Decodes a binary value (§6.1): `0x` hexadecimal or `0b` base64.
pub fn decode_binary(v: &str) -> Option<Vec<u8>> {
    let (prefix, body) = (v.get(..2)?, v.get(2..)?);
    match prefix {
        "0x" | "0X" => {
            let body = if body.len() % 2 == 1 {
                format!("0{body}")
            } else {
                body.to_string()
            };
            (0..body.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(body.get(i..i + 2)?, 16).ok())
                .collect()
        }
        "0b" | "0B" => decode_base64(body),
        _ => None,
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// Encodes bytes as a `0x` binary value.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn find<'a>(keys: &'a [(String, String)], k: &str) -> Option<&'a str> {
    keys.iter()
        .rev()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

/// Our challenge length: RFC 1994 leaves it open; 32 bytes is what LIO and open-iscsi's
/// newer releases send and well under tgtd's 1024-byte limit.
const CHALLENGE_LEN: usize = 32;

/// One CHAP exchange, driven by the login state machine.
pub struct Exchange<'a> {
    cfg: &'a Chap,
    /// The algorithm the target chose.
    pub algorithm: Option<ChapAlgorithm>,
    ours: Option<(u8, Vec<u8>)>,
}

impl<'a> Exchange<'a> {
    /// Starts an exchange; refuses a configuration that reuses one secret both ways.
    pub fn new(cfg: &'a Chap) -> Result<Self, ChapError> {
        if let Some(m) = &cfg.mutual {
            if m.secret == cfg.initiator.secret {
                return Err(ChapError::SameSecret);
            }
        }
        Ok(Exchange {
            cfg,
            algorithm: None,
            ours: None,
        })
    }

    /// The first CHAP keys: our algorithm list (CHAP_A).
    pub fn offer(&self) -> Vec<(String, String)> {
        let list: Vec<String> = self
            .cfg
            .algorithms
            .iter()
            .map(|a| a.code().to_string())
            .collect();
        vec![("CHAP_A".into(), list.join(","))]
    }

    /// Answers the target's CHAP_A/CHAP_I/CHAP_C with CHAP_N/CHAP_R and, for mutual CHAP,
    /// our own CHAP_I/CHAP_C. `random` fills our challenge (injected so tests are exact).
    pub fn respond(
        &mut self,
        target: &[(String, String)],
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Vec<(String, String)>, ChapError> {
        let a = find(target, "CHAP_A").ok_or(ChapError::Missing("CHAP_A"))?;
        let alg = ChapAlgorithm::from_code(a)
            .filter(|x| self.cfg.algorithms.contains(x))
            .ok_or_else(|| ChapError::Algorithm(a.to_string()))?;
        self.algorithm = Some(alg);
        let id: u8 = find(target, "CHAP_I")
            .ok_or(ChapError::Missing("CHAP_I"))?
            .trim()
            .parse()
            .map_err(|_| ChapError::Invalid {
                key: "CHAP_I",
                why: "not a number from 0 to 255",
            })?;
        let challenge = decode_binary(find(target, "CHAP_C").ok_or(ChapError::Missing("CHAP_C"))?)
            .ok_or(ChapError::Invalid {
                key: "CHAP_C",
                why: "not a 0x or 0b binary value",
            })?;
        if challenge.is_empty() || challenge.len() > 1024 {
            return Err(ChapError::Invalid {
                key: "CHAP_C",
                why: "length must be 1 to 1024 bytes",
            });
        }
        let r = alg.response(id, self.cfg.initiator.secret.expose(), &challenge);
        let mut keys = vec![
            ("CHAP_N".to_string(), self.cfg.initiator.user.clone()),
            ("CHAP_R".to_string(), encode_hex(&r)),
        ];
        if self.cfg.mutual.is_some() {
            let mut buf = [0u8; CHALLENGE_LEN + 1];
            // Never hand the target its own challenge back (§12.1.3: reflection).
            loop {
                random(&mut buf);
                if buf[1..] != challenge[..] {
                    break;
                }
            }
            let (our_id, our_challenge) = (buf[0], buf[1..].to_vec());
            keys.push(("CHAP_I".into(), our_id.to_string()));
            keys.push(("CHAP_C".into(), encode_hex(&our_challenge)));
            self.ours = Some((our_id, our_challenge));
        }
        Ok(keys)
    }

    /// With mutual CHAP, checks the target's CHAP_N and CHAP_R; otherwise nothing to check.
    pub fn verify(&self, target: &[(String, String)]) -> Result<(), ChapError> {
        let (Some(m), Some((id, challenge)), Some(alg)) =
            (&self.cfg.mutual, &self.ours, self.algorithm)
        else {
            return Ok(());
        };
        let name = find(target, "CHAP_N").ok_or(ChapError::Missing("CHAP_N"))?;
        if name != m.user {
            return Err(ChapError::TargetName {
                expected: m.user.clone(),
                got: name.to_string(),
            });
        }
        let got = decode_binary(find(target, "CHAP_R").ok_or(ChapError::Missing("CHAP_R"))?)
            .ok_or(ChapError::Invalid {
                key: "CHAP_R",
                why: "not a 0x or 0b binary value",
            })?;
        let want = alg.response(*id, m.secret.expose(), challenge);
        if ct_eq(&got, &want) {
            Ok(())
        } else {
            Err(ChapError::TargetResponse)
        }
    }

    /// Whether we still wait for the target to prove itself.
    pub fn mutual(&self) -> bool {
        self.cfg.mutual.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secrets_never_print() {
        let c = Chap::new("user", Secret::new("hunter2hunter2"));
        let dbg = format!("{c:?}");
        assert!(dbg.contains("***") && !dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn md5_response_matches_rfc1994() {
        // Independently computed: md5(0x01 || "secret" || 0x00..0x0f).
        let challenge: Vec<u8> = (0u8..16).collect();
        let r = ChapAlgorithm::Md5.response(1, b"secret", &challenge);
        let mut h = Md5::new();
        h.update([1u8]);
        h.update(b"secret");
        h.update(&challenge);
        assert_eq!(r, h.finalize().to_vec());
        assert_eq!(r.len(), 16);
        assert_eq!(ChapAlgorithm::Sha256.response(1, b"s", b"c").len(), 32);
        // A known vector: MD5 of the three bytes 0x00 'a' 'b'.
        assert_eq!(
            encode_hex(&ChapAlgorithm::Md5.response(0, b"a", b"b")),
            encode_hex(&Md5::digest([0u8, b'a', b'b']))
        );
    }

    #[test]
    fn binary_values_decode_hex_and_base64() {
        assert_eq!(decode_binary("0x0102ff"), Some(vec![1, 2, 255]));
        assert_eq!(decode_binary("0XABC"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQL/"), Some(vec![1, 2, 255]));
        assert_eq!(decode_binary("0bAQI="), Some(vec![1, 2]));
        assert_eq!(decode_binary("0102"), None);
        assert_eq!(decode_binary("0xzz"), None);
        assert_eq!(decode_binary("0x"), Some(vec![]));
    }

    #[test]
    fn one_way_exchange() {
        let cfg = Chap::new("alice", Secret::new("s3cr3t-s3cr3t"));
        let mut ex = Exchange::new(&cfg).unwrap();
        assert_eq!(ex.offer(), kv(&[("CHAP_A", "7,5")]));
        let keys = ex
            .respond(
                &kv(&[("CHAP_A", "5"), ("CHAP_I", "9"), ("CHAP_C", "0x0a0b0c")]),
                &mut |_| unreachable!("no challenge in one-way CHAP"),
            )
            .unwrap();
        let want = ChapAlgorithm::Md5.response(9, b"s3cr3t-s3cr3t", &[10, 11, 12]);
        assert_eq!(
            keys,
            kv(&[("CHAP_N", "alice"), ("CHAP_R", &encode_hex(&want))])
        );
        assert_eq!(ex.algorithm, Some(ChapAlgorithm::Md5));
        assert!(ex.verify(&[]).is_ok());
    }

    #[test]
    fn mutual_exchange_checks_the_target() {
        let mut cfg = Chap::new("alice", Secret::new("initiator-secret"));
        cfg.mutual = Some(Credentials {
            user: "target".into(),
            secret: Secret::new("target-secret!"),
        });
        let mut ex = Exchange::new(&cfg).unwrap();
        let keys = ex
            .respond(
                &kv(&[
                    ("CHAP_A", "7"),
                    ("CHAP_I", "1"),
                    ("CHAP_C", "0b AQI=".replace(' ', "").as_str()),
                ]),
                &mut |b| b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8),
            )
            .unwrap();
        assert_eq!(keys[2], ("CHAP_I".to_string(), "0".to_string()));
        let our_challenge: Vec<u8> = (1u8..=32).collect();
        assert_eq!(keys[3].1, encode_hex(&our_challenge));
        let good = ChapAlgorithm::Sha256.response(0, b"target-secret!", &our_challenge);
        assert!(ex
            .verify(&kv(&[("CHAP_N", "target"), ("CHAP_R", &encode_hex(&good))]))
            .is_ok());
        let bad = ChapAlgorithm::Sha256.response(0, b"guess", &our_challenge);
        assert_eq!(
            ex.verify(&kv(&[("CHAP_N", "target"), ("CHAP_R", &encode_hex(&bad))])),
            Err(ChapError::TargetResponse)
        );
        assert!(matches!(
            ex.verify(&kv(&[
                ("CHAP_N", "mallory"),
                ("CHAP_R", &encode_hex(&good))
            ])),
            Err(ChapError::TargetName { .. })
        ));
        assert_eq!(ex.verify(&[]), Err(ChapError::Missing("CHAP_N")));
    }

    #[test]
    fn refuses_what_rfc7143_forbids() {
        let mut cfg = Chap::new("a", Secret::new("same-secret"));
        cfg.mutual = Some(Credentials {
            user: "t".into(),
            secret: Secret::new("same-secret"),
        });
        assert_eq!(Exchange::new(&cfg).err(), Some(ChapError::SameSecret));
        let cfg = Chap {
            algorithms: vec![ChapAlgorithm::Md5],
            ..Chap::new("a", Secret::new("x"))
        };
        let mut ex = Exchange::new(&cfg).unwrap();
        assert!(matches!(
            ex.respond(
                &kv(&[("CHAP_A", "7"), ("CHAP_I", "1"), ("CHAP_C", "0x01")]),
                &mut |_| {}
            ),
            Err(ChapError::Algorithm(_))
        ));
        assert!(matches!(
            ex.respond(
                &kv(&[("CHAP_A", "5"), ("CHAP_I", "300"), ("CHAP_C", "0x01")]),
                &mut |_| {}
            ),
            Err(ChapError::Invalid { key: "CHAP_I", .. })
        ));
        assert!(matches!(
            ex.respond(
                &kv(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x")]),
                &mut |_| {}
            ),
            Err(ChapError::Invalid { key: "CHAP_C", .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_binary_values_never_panic(s in "0[xXbB][ -~]{0,40}") {
            let _ = decode_binary(&s);
        }

        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode_binary(&encode_hex(&bytes)), Some(bytes));
        }
    }
}
