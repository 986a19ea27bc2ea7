//! Text keys (RFC 7143 §6.1) and the negotiation of operational parameters (§6.2, §13).
//! Pure functions over bytes and values: the login state machine feeds them what the target
//! says and sends what they produce.

use std::fmt;

/// Parses a text data segment: `key=value` pairs, each ended by a NUL (§6.1). A last pair
/// without its NUL is accepted; empty strings between NULs are skipped; a pair without `=`
/// is an error naming it.
pub fn parse(data: &[u8]) -> Result<Vec<(String, String)>, TextError> {
    let mut out = Vec::new();
    for item in data.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let s = String::from_utf8_lossy(item);
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| TextError::Malformed(truncate(&s)))?;
        // Keys are up to 63 bytes of letters, digits, '.', '-', '+', '@', '_' (§6.1).
        if k.is_empty()
            || k.len() > 63
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+@_".contains(c))
        {
            return Err(TextError::Malformed(truncate(&s)));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Encodes pairs as a text data segment.
pub fn emit<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A text segment or a negotiated value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Not `key=value`.
    Malformed(String),
    /// A value outside what the key allows.
    Value {
        /// The key.
        key: String,
        /// The value received.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// The target answered `Reject` to a key we must have (§6.2).
    Rejected(String),
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Malformed(s) => write!(f, "malformed text key {s:?}"),
            TextError::Value {
                key,
                value,
                expected,
            } => write!(f, "target answered {key}={value}, expected {expected}"),
            TextError::Rejected(k) => write!(f, "target rejected {k}"),
        }
    }
}

impl std::error::Error for TextError {}

/// A digest choice (§13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// No digest.
    None,
    /// CRC32C.
    Crc32c,
}

impl Digest {
    /// The key value.
    pub fn as_str(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }

    /// Parses a key value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

/// What the initiator asks for: its offer of operational keys. Defaults are what stage0
/// wants for a root disk: large bursts, immediate data, no digests, ERL 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Largest data segment we accept, declared (§13.12).
    pub max_recv_data_segment_length: u32,
    /// Maximum SCSI payload per sequence (§13.13).
    pub max_burst_length: u32,
    /// Maximum unsolicited data per command (§13.14).
    pub first_burst_length: u32,
    /// Whether the target must send R2T before any data (§13.10).
    pub initial_r2t: bool,
    /// Whether data may ride in the command PDU (§13.11).
    pub immediate_data: bool,
    /// Header digests in order of preference (§13.1).
    pub header_digest: Vec<Digest>,
    /// Data digests in order of preference (§13.1).
    pub data_digest: Vec<Digest>,
    /// Connections per session (§13.2).
    pub max_connections: u32,
    /// Outstanding R2Ts per task (§13.17).
    pub max_outstanding_r2t: u32,
    /// DataPDUInOrder (§13.18).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (§13.19).
    pub data_sequence_in_order: bool,
    /// DefaultTime2Wait, seconds (§13.15).
    pub default_time2wait: u32,
    /// DefaultTime2Retain, seconds (§13.16).
    pub default_time2retain: u32,
    /// ErrorRecoveryLevel (§13.20); the kernel's iscsi_tcp implements 0 only.
    pub error_recovery_level: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 262_144,
            initial_r2t: false,
            immediate_data: true,
            header_digest: vec![Digest::None],
            data_digest: vec![Digest::None],
            max_connections: 1,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            default_time2wait: 2,
            default_time2retain: 0,
            error_recovery_level: 0,
        }
    }
}

/// The negotiated outcome: what both sides use in the Full Feature Phase. Starts at the
/// RFC defaults (§13), which hold for any key the target does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Our MaxRecvDataSegmentLength: the largest data segment the target may send us.
    pub max_recv_data_segment_length: u32,
    /// The target's MaxRecvDataSegmentLength: the largest we may send.
    pub max_xmit_data_segment_length: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// HeaderDigest.
    pub header_digest: Digest,
    /// DataDigest.
    pub data_digest: Digest,
    /// MaxConnections.
    pub max_connections: u32,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// DefaultTime2Wait.
    pub default_time2wait: u32,
    /// DefaultTime2Retain.
    pub default_time2retain: u32,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u32,
    /// TargetPortalGroupTag, declared by the target in its first response (§13.9).
    pub target_portal_group_tag: Option<u16>,
    /// TargetAlias (§13.6).
    pub target_alias: Option<String>,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            max_recv_data_segment_length: 8192,
            max_xmit_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            initial_r2t: true,
            immediate_data: true,
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_connections: 1,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            default_time2wait: 2,
            default_time2retain: 20,
            error_recovery_level: 0,
            target_portal_group_tag: None,
            target_alias: None,
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, TextError> {
    match v {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(TextError::Value {
            key: key.into(),
            value: v.into(),
            expected: "Yes or No",
        }),
    }
}

fn parse_num(key: &str, v: &str, lo: u32, hi: u32) -> Result<u32, TextError> {
    // Numbers may be decimal or 0x-hex (§6.1, numerical-value).
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    };
    n.filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| TextError::Value {
            key: key.into(),
            value: v.into(),
            expected: "a number in the key's range",
        })
}

/// The operational negotiation of one login: what we offered and what came of it.
#[derive(Debug, Clone)]
pub struct Negotiation {
    offer: Params,
    /// The result so far.
    pub result: Negotiated,
}

impl Negotiation {
    /// Starts from an offer; the result starts at the RFC defaults plus our own
    /// declaration of MaxRecvDataSegmentLength.
    pub fn new(offer: Params) -> Self {
        let result = Negotiated {
            max_recv_data_segment_length: offer.max_recv_data_segment_length,
            ..Negotiated::default()
        };
        Negotiation { offer, result }
    }

    /// The keys of our offer, in the order open-iscsi sends them.
    pub fn offer(&self) -> Vec<(String, String)> {
        let o = &self.offer;
        let list = |d: &[Digest]| d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",");
        vec![
            ("HeaderDigest".into(), list(&o.header_digest)),
            ("DataDigest".into(), list(&o.data_digest)),
            ("MaxConnections".into(), o.max_connections.to_string()),
            ("InitialR2T".into(), yes_no(o.initial_r2t).into()),
            ("ImmediateData".into(), yes_no(o.immediate_data).into()),
            (
                "MaxRecvDataSegmentLength".into(),
                o.max_recv_data_segment_length.to_string(),
            ),
            ("MaxBurstLength".into(), o.max_burst_length.to_string()),
            ("FirstBurstLength".into(), o.first_burst_length.to_string()),
            ("DefaultTime2Wait".into(), o.default_time2wait.to_string()),
            (
                "DefaultTime2Retain".into(),
                o.default_time2retain.to_string(),
            ),
            (
                "MaxOutstandingR2T".into(),
                o.max_outstanding_r2t.to_string(),
            ),
            ("DataPDUInOrder".into(), yes_no(o.data_pdu_in_order).into()),
            (
                "DataSequenceInOrder".into(),
                yes_no(o.data_sequence_in_order).into(),
            ),
            (
                "ErrorRecoveryLevel".into(),
                o.error_recovery_level.to_string(),
            ),
        ]
    }

    /// Applies one key from the target. `offered` says whether we proposed the key in this
    /// login (then the target's value is an answer; else it is the target's proposal, and we
    /// return the answer to send). Result functions per §13: min, max, OR, AND, or the first
    /// of our list that the target picked.
    pub fn apply(
        &mut self,
        key: &str,
        value: &str,
        offered: bool,
    ) -> Result<Option<(String, String)>, TextError> {
        // §6.2: NotUnderstood, Irrelevant and Reject leave the key at its default; a
        // rejected digest or ERL simply stays None / 0, which is what we can live with.
        if offered && matches!(value, "NotUnderstood" | "Irrelevant" | "Reject") {
            log::debug!("iscsi: target answered {key}={value}; keeping the default");
            return Ok(None);
        }
        let o = &self.offer;
        let r = &mut self.result;
        let answer = |k: &str, v: String| Ok(Some((k.to_string(), v)));
        match key {
            "HeaderDigest" | "DataDigest" => {
                let ours = if key == "HeaderDigest" {
                    &o.header_digest
                } else {
                    &o.data_digest
                };
                let chosen = if offered {
                    Digest::parse(value)
                        .filter(|d| ours.contains(d))
                        .ok_or_else(|| TextError::Value {
                            key: key.into(),
                            value: value.into(),
                            expected: "one of the digests offered",
                        })?
                } else {
                    // The target proposes a list: we pick the first we accept (§6.2.1).
                    value
                        .split(',')
                        .filter_map(Digest::parse)
                        .find(|d| ours.contains(d))
                        .ok_or_else(|| TextError::Value {
                            key: key.into(),
                            value: value.into(),
                            expected: "a digest we accept",
                        })?
                };
                if key == "HeaderDigest" {
                    r.header_digest = chosen;
                } else {
                    r.data_digest = chosen;
                }
                if offered {
                    Ok(None)
                } else {
                    answer(key, chosen.as_str().into())
                }
            }
            // Declarative (§13.12): what the target can receive bounds what we send.
            "MaxRecvDataSegmentLength" => {
                r.max_xmit_data_segment_length = parse_num(key, value, 512, 16_777_215)?;
                Ok(None)
            }
            "MaxConnections" => {
                let v = parse_num(key, value, 1, 65535)?;
                r.max_connections = v.min(o.max_connections);
                self.answer_num(key, offered, |r| r.max_connections)
            }
            "MaxBurstLength" => {
                let v = parse_num(key, value, 512, 16_777_215)?;
                r.max_burst_length = v.min(o.max_burst_length);
                self.answer_num(key, offered, |r| r.max_burst_length)
            }
            "FirstBurstLength" => {
                let v = parse_num(key, value, 512, 16_777_215)?;
                r.first_burst_length = v.min(o.first_burst_length);
                self.answer_num(key, offered, |r| r.first_burst_length)
            }
            "MaxOutstandingR2T" => {
                let v = parse_num(key, value, 1, 65535)?;
                r.max_outstanding_r2t = v.min(o.max_outstanding_r2t);
                self.answer_num(key, offered, |r| r.max_outstanding_r2t)
            }
            "DefaultTime2Wait" => {
                let v = parse_num(key, value, 0, 3600)?;
                r.default_time2wait = v.max(o.default_time2wait);
                self.answer_num(key, offered, |r| r.default_time2wait)
            }
            "DefaultTime2Retain" => {
                let v = parse_num(key, value, 0, 3600)?;
                r.default_time2retain = v.min(o.default_time2retain);
                self.answer_num(key, offered, |r| r.default_time2retain)
            }
            "ErrorRecoveryLevel" => {
                let v = parse_num(key, value, 0, 2)?;
                r.error_recovery_level = v.min(o.error_recovery_level);
                self.answer_num(key, offered, |r| r.error_recovery_level)
            }
            "InitialR2T" => {
                r.initial_r2t = parse_bool(key, value)? || o.initial_r2t;
                let v = r.initial_r2t;
                self.answer_bool(key, offered, v)
            }
            "ImmediateData" => {
                r.immediate_data = parse_bool(key, value)? && o.immediate_data;
                let v = r.immediate_data;
                self.answer_bool(key, offered, v)
            }
            "DataPDUInOrder" => {
                r.data_pdu_in_order = parse_bool(key, value)? || o.data_pdu_in_order;
                let v = r.data_pdu_in_order;
                self.answer_bool(key, offered, v)
            }
            "DataSequenceInOrder" => {
                r.data_sequence_in_order = parse_bool(key, value)? || o.data_sequence_in_order;
                let v = r.data_sequence_in_order;
                self.answer_bool(key, offered, v)
            }
            "TargetPortalGroupTag" => {
                r.target_portal_group_tag = Some(parse_num(key, value, 0, 65535)? as u16);
                Ok(None)
            }
            "TargetAlias" => {
                r.target_alias = Some(value.to_string());
                Ok(None)
            }
            // Declarations and keys the login state machine handles itself.
            "TargetAddress" | "TargetName" | "InitiatorName" | "SessionType" | "AuthMethod" => {
                Ok(None)
            }
            // RFC 3720 markers, obsolete in RFC 7143 (§13.25): we never use them.
            "IFMarker" | "OFMarker" if !offered => answer(key, "No".into()),
            "OFMarkInt" | "IFMarkInt" if !offered => answer(key, "Irrelevant".into()),
            _ if key.starts_with("X-") || key.starts_with("X#") || key.starts_with("Z-") => {
                if offered {
                    Ok(None)
                } else {
                    answer(key, "NotUnderstood".into())
                }
            }
            _ if !offered => answer(key, "NotUnderstood".into()),
            _ => Ok(None),
        }
    }

    fn answer_num(
        &self,
        key: &str,
        offered: bool,
        get: impl Fn(&Negotiated) -> u32,
    ) -> Result<Option<(String, String)>, TextError> {
        Ok((!offered).then(|| (key.to_string(), get(&self.result).to_string())))
    }

    fn answer_bool(
        &self,
        key: &str,
        offered: bool,
        v: bool,
    ) -> Result<Option<(String, String)>, TextError> {
        Ok((!offered).then(|| (key.to_string(), yes_no(v).to_string())))
    }

    /// Checks the whole: FirstBurstLength may not exceed MaxBurstLength (§13.14), which the
    /// kernel enforces when the connection starts.
    pub fn finish(mut self) -> Negotiated {
        let r = &mut self.result;
        if r.first_burst_length > r.max_burst_length {
            r.first_burst_length = r.max_burst_length;
        }
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_nul_separated_pairs() {
        let keys = parse(b"TargetPortalGroupTag=1\0HeaderDigest=None\0\0TargetAlias=a=b").unwrap();
        assert_eq!(
            keys,
            vec![
                ("TargetPortalGroupTag".to_string(), "1".to_string()),
                ("HeaderDigest".into(), "None".into()),
                ("TargetAlias".into(), "a=b".into()),
            ]
        );
        assert!(parse(b"novalue\0").is_err());
        assert!(parse(b"bad key=1\0").is_err());
        assert_eq!(parse(b"").unwrap(), vec![]);
    }

    #[test]
    fn emit_is_parse_inverse() {
        let pairs = vec![
            (
                "InitiatorName".to_string(),
                "iqn.2024-01.test:x".to_string(),
            ),
            ("AuthMethod".into(), "CHAP,None".into()),
        ];
        let bytes = emit(&pairs);
        assert_eq!(
            bytes,
            b"InitiatorName=iqn.2024-01.test:x\0AuthMethod=CHAP,None\0"
        );
        assert_eq!(parse(&bytes).unwrap(), pairs);
    }

    #[test]
    fn result_functions_follow_rfc7143_section_13() {
        let mut n = Negotiation::new(Params {
            initial_r2t: false,
            immediate_data: true,
            header_digest: vec![Digest::Crc32c, Digest::None],
            ..Params::default()
        });
        for (k, v) in [
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "No"),
            ("MaxRecvDataSegmentLength", "8192"),
            ("HeaderDigest", "CRC32C"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "5"),
            ("DefaultTime2Retain", "20"),
            ("ErrorRecoveryLevel", "0"),
            ("TargetPortalGroupTag", "1"),
        ] {
            assert_eq!(n.apply(k, v, true).unwrap(), None, "{k}");
        }
        let r = n.finish();
        assert_eq!(r.max_burst_length, 262_144, "min");
        assert_eq!(r.first_burst_length, 65_536, "min");
        assert!(r.initial_r2t, "OR");
        assert!(!r.immediate_data, "AND");
        assert_eq!(r.max_xmit_data_segment_length, 8192, "declarative");
        assert_eq!(r.max_recv_data_segment_length, 262_144, "ours");
        assert_eq!(r.header_digest, Digest::Crc32c);
        assert_eq!(r.default_time2wait, 5, "max");
        assert_eq!(r.default_time2retain, 0, "min");
        assert_eq!(r.target_portal_group_tag, Some(1));
    }

    #[test]
    fn target_proposals_get_answers() {
        let mut n = Negotiation::new(Params::default());
        assert_eq!(
            n.apply("HeaderDigest", "CRC32C,None", false).unwrap(),
            Some(("HeaderDigest".into(), "None".into()))
        );
        assert_eq!(
            n.apply("MaxBurstLength", "65536", false).unwrap(),
            Some(("MaxBurstLength".into(), "65536".into()))
        );
        assert_eq!(
            n.apply("X-com.example.Foo", "1", false).unwrap(),
            Some(("X-com.example.Foo".into(), "NotUnderstood".into()))
        );
        assert_eq!(
            n.apply("IFMarker", "Yes", false).unwrap(),
            Some(("IFMarker".into(), "No".into()))
        );
    }

    #[test]
    fn bad_answers_name_the_key() {
        let mut n = Negotiation::new(Params::default());
        let e = n.apply("HeaderDigest", "CRC32C", true).unwrap_err();
        assert!(e.to_string().contains("HeaderDigest=CRC32C"), "{e}");
        let e = n.apply("MaxBurstLength", "lots", true).unwrap_err();
        assert!(e.to_string().contains("MaxBurstLength"), "{e}");
        assert!(n.apply("InitialR2T", "Maybe", true).is_err());
        // Special values keep the default.
        assert_eq!(n.apply("DataDigest", "Reject", true).unwrap(), None);
        assert_eq!(n.result.data_digest, Digest::None);
    }

    #[test]
    fn first_burst_never_exceeds_max_burst() {
        let mut n = Negotiation::new(Params {
            first_burst_length: 1 << 20,
            max_burst_length: 1 << 20,
            ..Params::default()
        });
        n.apply("MaxBurstLength", "262144", true).unwrap();
        n.apply("FirstBurstLength", "1048576", true).unwrap();
        let r = n.finish();
        assert!(r.first_burst_length <= r.max_burst_length);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(pairs) = parse(&bytes) {
                let mut n = Negotiation::new(Params::default());
                for (k, v) in &pairs {
                    let _ = n.apply(k, v, true);
                    let _ = n.apply(k, v, false);
                }
                prop_assert_eq!(parse(&emit(&pairs)).unwrap(), pairs);
            }
        }

        #[test]
        fn numeric_results_never_exceed_the_offer(v in 512u32..16_777_215) {
            let mut n = Negotiation::new(Params::default());
            let s = v.to_string();
            n.apply("MaxBurstLength", &s, true).unwrap();
            n.apply("FirstBurstLength", &s, true).unwrap();
            let r = n.finish();
            prop_assert!(r.max_burst_length <= Params::default().max_burst_length);
            prop_assert!(r.first_burst_length <= r.max_burst_length);
        }
    }
}
