//! The Sigstore bundle v0.3 that `cosign sign --new-bundle-format --key` attaches: an
//! in-toto Statement v1 with cosign's signature predicate naming the signed digest, in a
//! DSSE envelope signed (ECDSA P-256, SHA-256) over its pre-authentication encoding, with the
//! public key's hint (base64 SHA-256 of its DER SubjectPublicKeyInfo) as verification
//! material. It travels as an OCI 1.1 referrer: a manifest whose `artifactType` is the bundle
//! media type, whose config is the empty descriptor, whose one layer is the bundle and whose
//! `subject` is the signed manifest. What [`super::super::verify::bundle`] reads.
//!
//! The referrer carries no creation time, unlike cosign's: the same key signing the same
//! digest again makes the same bytes (ECDSA here is deterministic, RFC 6979), so it is
//! stored once rather than piling up.

use base64::Engine as _;

use super::super::blob::Digest;
use super::super::media;
use super::super::verify::bundle::{pae, COSIGN_SIGN, IN_TOTO, MEDIA_TYPE, STATEMENT_V1};
use super::ImageKey;

/// The OCI empty descriptor's media type (its content is `{}`).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The OCI empty descriptor's content.
pub const EMPTY: &[u8] = b"{}";

/// A descriptor: media type, digest, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

impl Desc {
    /// The descriptor of `bytes`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Desc {
        Desc {
            media_type: media_type.to_string(),
            digest: Digest::sha256_of(bytes),
            size: bytes.len() as u64,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.size,
        })
    }
}

/// The annotations cosign gives a bundle referrer (less its creation time).
fn annotations() -> serde_json::Value {
    serde_json::json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": COSIGN_SIGN,
    })
}

/// The in-toto statement: `subject` named `name` at `digest`, cosign's signature predicate.
pub fn statement(name: &str, digest: &Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "_type": STATEMENT_V1,
        "subject": [{"name": name, "digest": {digest.algorithm().name(): digest.hex()}}],
        "predicateType": COSIGN_SIGN,
        "predicate": {},
    }))
    .unwrap_or_default()
}

/// The bundle: `key`'s DSSE signature of the statement naming `digest` as `name`.
pub fn bundle(name: &str, digest: &Digest, key: &ImageKey) -> Vec<u8> {
    let payload = statement(name, digest);
    let b64 = base64::engine::general_purpose::STANDARD;
    let hint = key.hint();
    let sig = key.sign(&pae(IN_TOTO, &payload));
    serde_json::to_vec(&serde_json::json!({
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64.encode(&payload),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": sig, "keyid": hint}],
        },
    }))
    .unwrap_or_default()
}

/// The referrer manifest of `bundle` for `subject`.
pub fn referrer(bundle: &[u8], subject: &Desc) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": MEDIA_TYPE,
        "config": Desc::of(EMPTY_MEDIA_TYPE, EMPTY).json(),
        "layers": [Desc::of(MEDIA_TYPE, bundle).json()],
        "subject": subject.json(),
        "annotations": annotations(),
    }))
    .unwrap_or_default()
}

/// The referrers fallback tag's index (OCI distribution 1.1, for registries without the
/// referrers API) with `referrer` added to `old` (an existing one's bytes, if any): an
/// entry already there is not listed twice. Malformed old bytes are an error (replacing
/// them would drop other tools' referrers).
pub fn fallback_index(old: Option<&[u8]>, referrer: &[u8]) -> Result<Vec<u8>, String> {
    let mut index = match old {
        Some(b) => serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .filter(|v| v["manifests"].is_array())
            .ok_or("not an image index with a manifests list")?,
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [],
        }),
    };
    let d = Desc::of(media::OCI_MANIFEST, referrer);
    let list = index["manifests"]
        .as_array_mut()
        .ok_or("not an image index with a manifests list")?;
    if !list
        .iter()
        .any(|m| m["digest"].as_str() == Some(&d.digest.to_string()))
    {
        let mut entry = d.json();
        entry["artifactType"] = MEDIA_TYPE.into();
        entry["annotations"] = annotations();
        list.push(entry);
    }
    serde_json::to_vec(&index).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::super::verify::{bundle_layers, Problem};
    use super::super::super::verify::{check_bundle, TrustedKey, VerifyPolicy};
    use super::*;

    fn key(seed: u8) -> ImageKey {
        ImageKey::from_signing_key(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    fn policy(k: &ImageKey) -> VerifyPolicy {
        VerifyPolicy::new(vec![TrustedKey::from_pem("k", &k.public_pem()).unwrap()]).unwrap()
    }

    #[test]
    fn terras_verifier_reads_the_bundle_and_its_referrer() {
        let (k1, k2) = (key(1), key(2));
        let d = Digest::sha256_of(b"image");
        let b = bundle("r/os", &d, &k1);
        assert!(check_bundle(&b, &d, &policy(&k1)).is_ok());
        assert_eq!(
            check_bundle(&b, &d, &policy(&k2)).unwrap_err(),
            Problem::NoTrustedKey
        );
        assert!(matches!(
            check_bundle(&b, &Digest::sha256_of(b"other"), &policy(&k1)),
            Err(Problem::NotASubject { .. })
        ));
        // Deterministic: the same key and digest make the same bundle.
        assert_eq!(b, bundle("r/os", &d, &k1));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let hint = v["verificationMaterial"]["publicKey"]["hint"]
            .as_str()
            .unwrap();
        assert_eq!(v["dsseEnvelope"]["signatures"][0]["keyid"], hint);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(hint)
                .unwrap()
                .len(),
            32
        );

        let subject = Desc::of(media::OCI_MANIFEST, b"image");
        let r = referrer(&b, &subject);
        assert_eq!(
            bundle_layers(&r),
            vec![(Digest::sha256_of(&b), b.len() as u64)]
        );
        let m: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(m["artifactType"], MEDIA_TYPE);
        assert_eq!(m["subject"]["digest"], d.to_string());
        assert_eq!(m["config"]["digest"], Digest::sha256_of(b"{}").to_string());
    }

    #[test]
    fn the_fallback_index_adds_once_and_keeps_others() {
        let one = fallback_index(None, b"r1").unwrap();
        let two = fallback_index(Some(&one), b"r2").unwrap();
        assert_eq!(fallback_index(Some(&two), b"r1").unwrap(), two);
        let v: serde_json::Value = serde_json::from_slice(&two).unwrap();
        let list = v["manifests"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["digest"], Digest::sha256_of(b"r2").to_string());
        assert_eq!(list[1]["artifactType"], MEDIA_TYPE);
        assert!(fallback_index(Some(b"[]"), b"r1").is_err());
    }
}
