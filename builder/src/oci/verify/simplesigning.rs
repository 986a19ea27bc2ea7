//! The cosign "simple signing" payload (`application/vnd.dev.cosign.simplesigning.v1+json`),
//! parsed strictly: no I/O here, bytes in and a typed payload or a typed error out.
//!
//! The format is containers/image's `containers-signature(5)` JSON with cosign's type:
//!
//! ```json
//! {"critical": {"identity": {"docker-reference": "registry.example/os"},
//!               "image": {"docker-manifest-digest": "sha256:…"},
//!               "type": "cosign container image signature"},
//!  "optional": null}
//! ```
//!
//! Strictness is deliberate. Go's `encoding/json` matches field names case-insensitively and
//! keeps the last of duplicate keys, so two parsers may read two different digests out of one
//! payload; here every name must match exactly (`Critical` is refused, not folded), a key
//! may appear once, `critical` and its objects hold exactly the fields the format defines
//! (containers-signature(5): a consumer must reject unknown fields in `critical`), and
//! nothing may follow the document.

use std::fmt;

use serde::Deserialize;

use crate::oci::blob::Digest;

/// The media type of a payload layer in a signature manifest.
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// `critical.type` of a cosign signature. (`atomic container signature` is the GPG
/// simple-signing type, which is not accepted: a GPG signature is not what the trusted keys
/// vouch for.)
pub const COSIGN_TYPE: &str = "cosign container image signature";

/// Payloads larger than this are refused before parsing; cosign's are a few hundred bytes
/// (more only with many `-a` annotations in `optional`).
pub const MAX_PAYLOAD: u64 = 256 << 10;

/// A payload that parsed: what it claims, not yet whether it is for the image at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`: the repository the signer named. Not enforced
    /// (an image copied to another registry keeps its digest and its signature).
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`: the manifest (or index) digest signed.
    pub manifest_digest: Digest,
    /// `optional`, when an object: the signer's free-form annotations.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Why a payload is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Larger than [`MAX_PAYLOAD`].
    TooLarge(u64),
    /// Not JSON of the expected shape: the parser's message (which names the field, e.g.
    /// `unknown field \`Critical\``, `duplicate field \`critical\``).
    Json(String),
    /// `critical.type` is not [`COSIGN_TYPE`].
    Type(String),
    /// `critical.image.docker-manifest-digest` is not a digest.
    Digest(String),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::TooLarge(n) => {
                write!(
                    f,
                    "payload of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit"
                )
            }
            PayloadError::Json(e) => write!(f, "malformed payload: {e}"),
            PayloadError::Type(t) => {
                write!(f, "payload critical.type is {t:?}, not {COSIGN_TYPE:?}")
            }
            PayloadError::Digest(e) => write!(f, "payload docker-manifest-digest: {e}"),
        }
    }
}

impl std::error::Error for PayloadError {}

// The wire shape. `deny_unknown_fields` plus serde's exact, case-sensitive names and its
// duplicate-field check give the strictness described above.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    critical: WireCritical,
    // cosign writes `"optional": null`; containers/image writes an object; both may omit
    // it. Anything but an object or null is refused by the type.
    #[serde(default)]
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCritical {
    identity: WireIdentity,
    image: WireImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

impl Payload {
    /// Parses payload bytes. Never panics, whatever the bytes (serde_json bounds nesting
    /// at 128 levels, so a deep `optional` cannot exhaust the stack).
    pub fn parse(bytes: &[u8]) -> Result<Payload, PayloadError> {
        if bytes.len() as u64 > MAX_PAYLOAD {
            return Err(PayloadError::TooLarge(bytes.len() as u64));
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
        if wire.critical.kind != COSIGN_TYPE {
            return Err(PayloadError::Type(wire.critical.kind));
        }
        let manifest_digest = wire
            .critical
            .image
            .docker_manifest_digest
            .parse::<Digest>()
            .map_err(PayloadError::Digest)?;
        Ok(Payload {
            docker_reference: wire.critical.identity.docker_reference,
            manifest_digest,
            optional: wire.optional,
        })
    }

    /// The payload cosign signs for `digest` (as `cosign sign` writes it, byte for byte),
    /// for tests and for tools that make signatures for Terra.
    pub fn cosign_bytes(docker_reference: &str, digest: &Digest) -> Vec<u8> {
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest.to_string()},
                "type": COSIGN_TYPE,
            },
            "optional": null,
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A real cosign payload: containers/image's fixture dir-img-cosign-valid/signature-1
    // (made by cosign; Debian's golang-github-containers-image-dev 5.23.1).
    const COSIGN: &[u8] = br#"{"critical":{"identity":{"docker-reference":"192.168.64.2:5000/cosign-signed-single-sample"},"image":{"docker-manifest-digest":"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"},"type":"cosign container image signature"},"optional":null}"#;

    #[test]
    fn parses_cosign_payload() {
        let p = Payload::parse(COSIGN).unwrap();
        assert_eq!(
            p.docker_reference,
            "192.168.64.2:5000/cosign-signed-single-sample"
        );
        assert_eq!(
            p.manifest_digest.to_string(),
            "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
        );
        assert_eq!(p.optional, None);
        let ours = Payload::cosign_bytes(&p.docker_reference, &p.manifest_digest);
        assert_eq!(Payload::parse(&ours).unwrap(), p);
    }

    #[test]
    fn optional_object_or_absent() {
        let with = String::from_utf8_lossy(COSIGN).replace(
            r#""optional":null"#,
            r#""optional":{"creator":"x","n":[1,2]}"#,
        );
        assert!(Payload::parse(with.as_bytes()).unwrap().optional.is_some());
        let without = String::from_utf8_lossy(COSIGN).replace(r#","optional":null"#, "");
        assert!(Payload::parse(without.as_bytes()).is_ok());
        let string =
            String::from_utf8_lossy(COSIGN).replace(r#""optional":null"#, r#""optional":"x""#);
        assert!(matches!(
            Payload::parse(string.as_bytes()),
            Err(PayloadError::Json(_))
        ));
    }

    #[test]
    fn strict_names_and_shape() {
        let text = String::from_utf8_lossy(COSIGN).into_owned();
        let cases: Vec<(String, &str)> = vec![
            (text.replace(r#""critical""#, r#""Critical""#), "Critical"),
            (text.replace(r#""image""#, r#""Image""#), "Image"),
            (
                text.replace("docker-manifest-digest", "Docker-Manifest-Digest"),
                "Docker-Manifest-Digest",
            ),
            (text.replace(r#""type""#, r#""Type""#), "Type"),
            (text.replace("docker-reference", "docker-Reference"), "docker-Reference"),
            (
                text.replace(r#""optional":null"#, r#""optional":null,"extra":1"#),
                "extra",
            ),
            (
                text.replace(r#""type":"#, r#""more":1,"type":"#),
                "more",
            ),
            // A second digest after the first: Go keeps the last, we keep neither.
            (
                text.replace(
                    r#""type":"cosign"#,
                    r#""image":{"docker-manifest-digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"type":"cosign"#,
                ),
                "duplicate",
            ),
            (format!("{text} {{}}"), "trailing"),
        ];
        for (bad, what) in cases {
            let e = Payload::parse(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(&e, PayloadError::Json(m) if m.contains(what)),
                "{what}: {e}"
            );
        }
        let wrong_type = text.replace(
            "cosign container image signature",
            "atomic container signature",
        );
        assert_eq!(
            Payload::parse(wrong_type.as_bytes()),
            Err(PayloadError::Type("atomic container signature".into()))
        );
        let upper = text.replace("634a8f", "634A8F");
        assert!(matches!(
            Payload::parse(upper.as_bytes()),
            Err(PayloadError::Digest(_))
        ));
        let big = vec![b' '; MAX_PAYLOAD as usize + 1];
        assert!(matches!(
            Payload::parse(&big),
            Err(PayloadError::TooLarge(_))
        ));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let nested = text.replace(
            r#""optional":null"#,
            &format!(r#""optional":{{"x":{deep}}}"#),
        );
        assert!(Payload::parse(nested.as_bytes()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        // Arbitrary bytes: an error or a payload, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Payload::parse(&bytes);
        }

        // A real payload with bytes flipped, cut or spliced: anything that still parses
        // names a well-formed digest and cosign's type.
        #[test]
        fn mutated_payload(edits in proptest::collection::vec((0usize..COSIGN.len(), any::<u8>()), 1..6),
                           cut in 0usize..=COSIGN.len()) {
            let mut b = COSIGN.to_vec();
            for (i, v) in edits {
                b[i] = v;
            }
            b.truncate(cut.max(1));
            if let Ok(p) = Payload::parse(&b) {
                prop_assert!(p.manifest_digest.to_string().starts_with("sha"));
            }
        }

        // JSON-looking text made of the format's own tokens.
        #[test]
        fn token_soup(parts in proptest::collection::vec(prop_oneof![
            Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("null"),
            Just(r#""critical""#), Just(r#""identity""#), Just(r#""image""#), Just(r#""type""#),
            Just(r#""optional""#), Just(r#""docker-reference""#), Just(r#""docker-manifest-digest""#),
            Just(r#""cosign container image signature""#),
            Just(r#""sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00""#),
            Just(r#""\ud800""#), Just("1e999"), Just("-0"),
        ], 0..40)) {
            let _ = Payload::parse(parts.concat().as_bytes());
        }
    }
}
