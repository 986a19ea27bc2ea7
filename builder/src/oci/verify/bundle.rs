//! The Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`, cosign v3's
//! default) as a key-based image signature: a DSSE envelope whose payload is an in-toto
//! statement naming the image digest as its subject. No I/O: bytes in, typed results out.
//!
//! Only what an offline key-based check needs is read: `mediaType`, the `dsseEnvelope`
//! (payload, payloadType, signatures) and, inside the signed payload, the statement's
//! `_type`, `subject` and `predicateType`. `verificationMaterial` (transparency-log entries,
//! timestamps, certificates) is neither needed nor trusted. As with simple signing, names are
//! exact and duplicates refused, and the statement is parsed only after its signature
//! verified.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::simplesigning::MAX_PAYLOAD;

/// The bundle media type (and the referrer's `artifactType`).
pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// DSSE `payloadType` of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// in-toto Statement v1 `_type`.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";

/// The predicate type cosign v3 gives an image signature (an attestation with another
/// predicate, e.g. SLSA provenance, names the image too but is not a signature of it).
pub const COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";

/// Why a bundle or its statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// Larger than the payload limit.
    TooLarge(u64),
    /// Not JSON of the expected shape (the parser's message names the field).
    Json(String),
    /// Another bundle media type.
    MediaType(String),
    /// A message-signature bundle (blob signing), not a DSSE envelope.
    NoEnvelope,
    /// The envelope's payloadType is not in-toto.
    PayloadType(String),
    /// Base64 that does not decode (which field).
    Base64(&'static str),
    /// The statement's `_type` is not Statement v1.
    StatementType(String),
    /// The statement's predicate is not cosign's signature predicate.
    PredicateType(String),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::TooLarge(n) => write!(f, "bundle of {n} bytes exceeds the limit"),
            BundleError::Json(e) => write!(f, "malformed bundle: {e}"),
            BundleError::MediaType(m) => write!(f, "bundle mediaType {m:?}, not {MEDIA_TYPE:?}"),
            BundleError::NoEnvelope => write!(f, "the bundle holds no DSSE envelope"),
            BundleError::PayloadType(t) => {
                write!(f, "DSSE payloadType {t:?}, not {IN_TOTO:?}")
            }
            BundleError::Base64(what) => write!(f, "{what} is not base64"),
            BundleError::StatementType(t) => {
                write!(f, "statement _type {t:?}, not {STATEMENT_V1:?}")
            }
            BundleError::PredicateType(t) => {
                write!(f, "predicateType {t:?}, not {COSIGN_SIGN:?}")
            }
        }
    }
}

impl std::error::Error for BundleError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBundle {
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "verificationMaterial", default)]
    _verification_material: Option<serde_json::Value>,
    #[serde(rename = "dsseEnvelope", default)]
    dsse_envelope: Option<WireEnvelope>,
    #[serde(rename = "messageSignature", default)]
    _message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<WireSignature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    sig: String,
    #[serde(rename = "keyid", default)]
    _keyid: Option<String>,
}

/// A DSSE envelope out of a bundle: what the signatures cover is [`pae`] of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The decoded payload (an in-toto statement, not yet parsed).
    pub payload: Vec<u8>,
    /// The payload type.
    pub payload_type: String,
    /// The decoded signatures (DER ECDSA for cosign's keys).
    pub signatures: Vec<Vec<u8>>,
}

/// DSSE's pre-authentication encoding (DSSE v1 protocol):
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Parses a bundle down to its DSSE envelope. Never panics, whatever the bytes.
pub fn parse_bundle(bytes: &[u8]) -> Result<Envelope, BundleError> {
    if bytes.len() as u64 > MAX_PAYLOAD {
        return Err(BundleError::TooLarge(bytes.len() as u64));
    }
    let b: WireBundle =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    if b.media_type != MEDIA_TYPE {
        return Err(BundleError::MediaType(b.media_type));
    }
    let env = b.dsse_envelope.ok_or(BundleError::NoEnvelope)?;
    if env.payload_type != IN_TOTO {
        return Err(BundleError::PayloadType(env.payload_type));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(env.payload.as_bytes())
        .map_err(|_| BundleError::Base64("dsseEnvelope.payload"))?;
    let signatures = env
        .signatures
        .iter()
        .take(super::cosign::MAX_SIGNATURES)
        .map(|s| {
            b64.decode(s.sig.as_bytes())
                .map_err(|_| BundleError::Base64("dsseEnvelope.signatures[].sig"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Envelope {
        payload,
        payload_type: env.payload_type,
        signatures,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireStatement {
    #[serde(rename = "_type")]
    kind: String,
    subject: Vec<WireSubject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(rename = "predicate", default)]
    _predicate: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSubject {
    #[serde(default)]
    name: String,
    digest: std::collections::BTreeMap<String, String>,
    // cosign v3 writes the subject's (often empty) annotations.
    #[serde(rename = "annotations", default)]
    _annotations: Option<serde_json::Value>,
}

/// One subject of a statement: its name and its digests by algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `name` (cosign writes the repository).
    pub name: String,
    /// `digest`: algorithm → hex.
    pub digests: std::collections::BTreeMap<String, String>,
}

/// Parses an (already authenticated) in-toto statement and requires Statement v1 with
/// cosign's signature predicate; returns its subjects.
pub fn parse_statement(bytes: &[u8]) -> Result<Vec<Subject>, BundleError> {
    let s: WireStatement =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    if s.kind != STATEMENT_V1 {
        return Err(BundleError::StatementType(s.kind));
    }
    if s.predicate_type != COSIGN_SIGN {
        return Err(BundleError::PredicateType(s.predicate_type));
    }
    Ok(s.subject
        .into_iter()
        .map(|x| Subject {
            name: x.name,
            digests: x.digest,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn bundle_and_statement_shapes() {
        let stmt = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"r/os","digest":{"sha256":"ab"},"annotations":{}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}"#;
        let b64 = base64::engine::general_purpose::STANDARD;
        let bundle = format!(
            r#"{{"mediaType":"{MEDIA_TYPE}","verificationMaterial":{{"publicKey":{{"hint":"x"}}}},"dsseEnvelope":{{"payload":"{}","payloadType":"{IN_TOTO}","signatures":[{{"sig":"{}"}}]}}}}"#,
            b64.encode(stmt),
            b64.encode(b"sig")
        );
        let env = parse_bundle(bundle.as_bytes()).unwrap();
        assert_eq!(env.payload, stmt);
        assert_eq!(env.signatures, vec![b"sig".to_vec()]);
        let subjects = parse_statement(&env.payload).unwrap();
        assert_eq!(subjects[0].digests["sha256"], "ab");
        for (bad, want) in [
            (bundle.replace("v0.3", "v0.2"), "mediaType"),
            (
                bundle.replace("dsseEnvelope", "DsseEnvelope"),
                "DsseEnvelope",
            ),
            (bundle.replace(IN_TOTO, "text/plain"), "payloadType"),
        ] {
            let e = parse_bundle(bad.as_bytes()).unwrap_err();
            assert!(format!("{e:?}{e}").contains(want), "{want}: {e}");
        }
        let s = String::from_utf8_lossy(stmt);
        assert!(matches!(
            parse_statement(s.replace("cosign/sign/v1", "slsa/v1").as_bytes()),
            Err(BundleError::PredicateType(_))
        ));
        assert!(matches!(
            parse_statement(s.replace("Statement/v1", "Statement/v0.1").as_bytes()),
            Err(BundleError::StatementType(_))
        ));
        assert!(matches!(
            parse_statement(s.replace("\"subject\"", "\"Subject\"").as_bytes()),
            Err(BundleError::Json(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_bundle(&bytes);
            let _ = parse_statement(&bytes);
        }
    }
}
