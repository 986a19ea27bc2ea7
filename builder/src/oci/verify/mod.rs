//! Signed images: an image is used only when a signature by a trusted key names the exact
//! digest its reference resolved to.
//!
//! The order closes the time-of-check gap of "verify the tag, then pull the tag": the
//! reference is resolved once, the manifest (or index) bytes as received are hashed, that
//! digest is what must be signed, an index's platform manifest is picked from those verified
//! bytes, and every later fetch is by digest (each blob checked as always). `oci::resolve`
//! does this for every caller when [`ResolveOptions::verify`](super::ResolveOptions) holds
//! a [`VerifyPolicy`], before anything is written to a target.
//!
//! Supported: cosign's key-based signatures in the classic format ([`cosign`]: the
//! `sha256-<hex>.sig` tag holding [`simplesigning`] payloads), ECDSA P-256 with SHA-256,
//! public keys as PKIX PEM (`BEGIN PUBLIC KEY`, what `cosign generate-key-pair` and
//! `openssl ec -pubout` write). Also cosign v3's Sigstore bundle v0.3
//! ([`bundle`]) attached as an OCI 1.1 referrer (the referrers API, or its `sha256-<hex>`
//! fallback tag): a DSSE envelope whose in-toto statement names the digest. Offline: no
//! transparency log, no certificates; a `dev.sigstore.cosign/bundle` or certificate
//! annotation, or a bundle's `verificationMaterial`, is neither needed nor trusted.

pub mod bundle;
pub mod cosign;
pub mod simplesigning;

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};

use super::blob::Digest;
use super::layout::{ref_name, Layout};
use super::OciError;
use simplesigning::{Payload, PayloadError};

/// A public key trusted to sign images.
#[derive(Clone)]
pub struct TrustedKey {
    name: String,
    fingerprint: Digest,
    key: VerifyingKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({self})")
    }
}

impl fmt::Display for TrustedKey {
    /// The name and the start of the fingerprint: `cosign.pub (sha256:1a2b3c4d5e6f7a8b)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (sha256:{})",
            self.name,
            &self.fingerprint.hex()[..16]
        )
    }
}

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The file (or name) of the key.
    pub key: String,
    /// What is wrong; never the file's content.
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verification key {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for KeyError {}

impl TrustedKey {
    /// A key from PKIX PEM text (`-----BEGIN PUBLIC KEY-----`), named `name` in messages.
    /// Only ECDSA P-256 keys are accepted (cosign's default and only `generate-key-pair`
    /// kind). A private key given by mistake is refused without echoing any of it.
    pub fn from_pem(name: impl Into<String>, pem: &str) -> Result<TrustedKey, KeyError> {
        let name = name.into();
        let bad = |reason: &str| KeyError {
            key: name.clone(),
            reason: reason.to_string(),
        };
        if pem.contains("PRIVATE KEY") {
            return Err(bad(
                "holds a private key; give the public key (`openssl ec -pubout`, cosign.pub)",
            ));
        }
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(bad(
                "not a PEM public key (expected -----BEGIN PUBLIC KEY-----)",
            ));
        }
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            bad(&format!(
                "not an ECDSA P-256 public key in PKIX form ({e}); only P-256 keys are supported"
            ))
        })?;
        let der = key
            .to_public_key_der()
            .map_err(|e| bad(&format!("cannot re-encode the key: {e}")))?;
        Ok(TrustedKey {
            name,
            fingerprint: Digest::sha256_of(der.as_bytes()),
            key,
        })
    }

    /// A key from a PEM file, named by its path.
    pub fn from_file(path: &Path) -> Result<TrustedKey, KeyError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeyError {
            key: name.clone(),
            reason: e.to_string(),
        })?;
        if bytes.len() > 64 << 10 {
            return Err(KeyError {
                key: name,
                reason: "larger than any PEM public key".into(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| KeyError {
            key: name.clone(),
            reason: "not a PEM text file".into(),
        })?;
        Self::from_pem(name, &text)
    }

    /// The public key as PKIX PEM (what `terra install` keeps on the disk for upgrades).
    pub fn pem(&self) -> String {
        self.key
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }

    /// How messages name the key (its file, usually).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the key's DER SubjectPublicKeyInfo: what a version's state should record
    /// (a file name may be reused for another key; the fingerprint cannot).
    pub fn fingerprint(&self) -> &Digest {
        &self.fingerprint
    }

    fn verifies(&self, payload: &[u8], signature: &Signature) -> bool {
        self.key.verify(payload, signature).is_ok()
    }
}

/// Which keys an image must be signed by: any one of them suffices.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    keys: Vec<TrustedKey>,
}

impl VerifyPolicy {
    /// A policy trusting `keys`; at least one (an empty policy would trust nothing, which
    /// is never what a caller meant).
    pub fn new(keys: Vec<TrustedKey>) -> Result<VerifyPolicy, KeyError> {
        if keys.is_empty() {
            return Err(KeyError {
                key: "(none)".into(),
                reason: "a verification policy needs at least one key".into(),
            });
        }
        Ok(VerifyPolicy { keys })
    }

    /// A policy from PEM files (`--verify-key`, node.toml's `[signature] keys`).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<VerifyPolicy, KeyError> {
        let keys = paths
            .iter()
            .map(|p| TrustedKey::from_file(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

/// A signature that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The digest signed: what the reference resolved to (an index's, for a multi-platform
    /// image; the platform manifest was then picked from the index's verified bytes).
    pub digest: Digest,
    /// The name of the key that verified it.
    pub key: String,
    /// That key's fingerprint ([`TrustedKey::fingerprint`]).
    pub key_fingerprint: Digest,
    /// The signature manifest's digest, and the payload blob's, for the record.
    pub signature_manifest: Digest,
    /// The payload blob that was signed.
    pub payload: Digest,
}

/// A payload with its signature as found in storage.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The payload blob's digest (how problems name it).
    pub payload_digest: Digest,
    /// The payload bytes, already checked against `payload_digest`.
    pub payload: Vec<u8>,
    /// The signature annotation.
    pub signature: Option<String>,
}

/// Why one candidate signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The payload layer has no signature annotation.
    NoAnnotation,
    /// The annotation is not base64.
    Base64,
    /// The decoded annotation is not a DER ECDSA signature.
    Der,
    /// No trusted key verifies the signature over the payload bytes.
    NoTrustedKey,
    /// A trusted key signed it, but the payload is refused.
    Payload {
        /// The key that verified the signature.
        key: String,
        /// What is wrong with the payload.
        error: PayloadError,
    },
    /// A trusted key signed it, for another image.
    OtherDigest {
        /// The key that verified the signature.
        key: String,
        /// The digest the payload names.
        names: Digest,
    },
    /// The payload blob could not be fetched or read.
    Fetch(String),
    /// A Sigstore bundle refused (with the key that verified it, when one did).
    Bundle {
        /// The key that verified the envelope, if any.
        key: Option<String>,
        /// What is wrong.
        error: bundle::BundleError,
    },
    /// A trusted key signed a statement whose subjects do not include the digest.
    NotASubject {
        /// The key that verified the envelope.
        key: String,
        /// The subjects' digests, as `alg:hex`.
        subjects: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoAnnotation => write!(f, "no {} annotation", cosign::SIGNATURE_ANNOTATION),
            Problem::Base64 => write!(f, "the signature annotation is not base64"),
            Problem::Der => write!(f, "the signature is not a DER ECDSA signature"),
            Problem::NoTrustedKey => {
                write!(f, "the signature does not verify with any trusted key")
            }
            Problem::Payload { key, error } => write!(f, "signed by {key}, but {error}"),
            Problem::OtherDigest { key, names } => {
                write!(f, "signed by {key}, but for another image: {names}")
            }
            Problem::Fetch(e) => write!(f, "{e}"),
            Problem::Bundle { key: None, error } => write!(f, "{error}"),
            Problem::Bundle {
                key: Some(key),
                error,
            } => write!(f, "signed by {key}, but {error}"),
            Problem::NotASubject { key, subjects } => write!(
                f,
                "signed by {key}, but for another image: the statement names {}",
                subjects.join(", ")
            ),
        }
    }
}

/// What was wrong, beside the reference, digest and keys of [`VerifyError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No signature manifest (`where` says where it was looked for).
    Unsigned {
        /// The tag, and the registry or layout.
        looked: String,
    },
    /// A signature manifest exists but it holds no simple-signing payload, or it is
    /// malformed.
    BadSignatureManifest {
        /// Its digest, when known.
        manifest: Option<Digest>,
        /// What is wrong.
        reason: String,
    },
    /// Signatures exist and none is acceptable: each payload with why.
    Rejected(Vec<(Digest, Problem)>),
    /// The source cannot carry signatures (a docker archive).
    Unsupported(String),
}

/// An image refused for want of a valid signature: the reference, the digest it resolved
/// to, the keys that were trusted, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The reference as given.
    pub reference: String,
    /// The digest the reference resolved to (None when resolution never got that far).
    pub digest: Option<Digest>,
    /// The trusted keys, as [`TrustedKey`]'s Display names them.
    pub keys: Vec<String>,
    /// What was wrong.
    pub refusal: Refusal,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reference)?;
        if let Some(d) = &self.digest {
            write!(f, " ({d})")?;
        }
        write!(
            f,
            ": refused, no valid signature by a trusted key ({}): ",
            self.keys.join(", ")
        )?;
        match &self.refusal {
            Refusal::Unsigned { looked } => write!(f, "unsigned (no {looked})"),
            Refusal::BadSignatureManifest { manifest, reason } => {
                write!(f, "signature manifest")?;
                if let Some(m) = manifest {
                    write!(f, " {m}")?;
                }
                write!(f, ": {reason}")
            }
            Refusal::Rejected(problems) => {
                let each: Vec<String> = problems
                    .iter()
                    .map(|(d, p)| format!("payload {d}: {p}"))
                    .collect();
                write!(f, "{}", each.join("; "))
            }
            Refusal::Unsupported(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for VerifyError {}

impl VerifyError {
    /// A refusal of `reference` at `digest` under `policy`.
    pub fn new(
        reference: impl Into<String>,
        digest: Option<&Digest>,
        policy: &VerifyPolicy,
        refusal: Refusal,
    ) -> Self {
        VerifyError {
            reference: reference.into(),
            digest: digest.cloned(),
            keys: policy.keys.iter().map(ToString::to_string).collect(),
            refusal,
        }
    }
}

impl From<VerifyError> for OciError {
    fn from(e: VerifyError) -> Self {
        OciError::Signature(Box::new(e))
    }
}

/// Checks one candidate: the signature over the payload bytes first (so only authenticated
/// bytes are parsed as a payload), then the payload's type and digest. Returns the key.
fn check_one<'p>(
    c: &Candidate,
    digest: &Digest,
    policy: &'p VerifyPolicy,
) -> Result<&'p TrustedKey, Problem> {
    let text = c.signature.as_deref().ok_or(Problem::NoAnnotation)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| Problem::Base64)?;
    let sig = Signature::from_der(&der).map_err(|_| Problem::Der)?;
    let key = policy
        .keys
        .iter()
        .find(|k| k.verifies(&c.payload, &sig))
        .ok_or(Problem::NoTrustedKey)?;
    let payload = Payload::parse(&c.payload).map_err(|error| Problem::Payload {
        key: key.to_string(),
        error,
    })?;
    if &payload.manifest_digest != digest {
        return Err(Problem::OtherDigest {
            key: key.to_string(),
            names: payload.manifest_digest,
        });
    }
    Ok(key)
}

/// Accepts `digest` when at least one candidate is signed by a trusted key and names it;
/// otherwise every candidate's problem, in order. Never panics, whatever the candidates.
pub fn check(
    candidates: &[Candidate],
    digest: &Digest,
    policy: &VerifyPolicy,
    signature_manifest: &Digest,
) -> Result<Verified, Refusal> {
    if candidates.is_empty() {
        return Err(Refusal::BadSignatureManifest {
            manifest: Some(signature_manifest.clone()),
            reason: format!("no {} layer", simplesigning::MEDIA_TYPE),
        });
    }
    let mut problems = Vec::new();
    for c in candidates {
        match check_one(c, digest, policy) {
            Ok(key) => {
                return Ok(Verified {
                    digest: digest.clone(),
                    key: key.name.clone(),
                    key_fingerprint: key.fingerprint.clone(),
                    signature_manifest: signature_manifest.clone(),
                    payload: c.payload_digest.clone(),
                })
            }
            Err(p) => problems.push((c.payload_digest.clone(), p)),
        }
    }
    Err(Refusal::Rejected(problems))
}

/// Checks one Sigstore bundle (bytes already checked against their descriptor): a trusted
/// key must verify a DSSE signature over the envelope's PAE, then the statement (parsed
/// only then) must be cosign's signature predicate with `digest` among its subjects.
pub fn check_bundle<'p>(
    bytes: &[u8],
    digest: &Digest,
    policy: &'p VerifyPolicy,
) -> Result<&'p TrustedKey, Problem> {
    let env = bundle::parse_bundle(bytes).map_err(|error| Problem::Bundle { key: None, error })?;
    let signed = bundle::pae(&env.payload_type, &env.payload);
    let key = env
        .signatures
        .iter()
        .filter_map(|der| Signature::from_der(der).ok())
        .find_map(|sig| policy.keys.iter().find(|k| k.verifies(&signed, &sig)))
        .ok_or(Problem::NoTrustedKey)?;
    let subjects = bundle::parse_statement(&env.payload).map_err(|error| Problem::Bundle {
        key: Some(key.to_string()),
        error,
    })?;
    let alg = digest.algorithm().name();
    if subjects
        .iter()
        .any(|s| s.digests.get(alg).map(String::as_str) == Some(digest.hex()))
    {
        return Ok(key);
    }
    Err(Problem::NotASubject {
        key: key.to_string(),
        subjects: subjects
            .iter()
            .flat_map(|s| s.digests.iter().map(|(a, h)| format!("{a}:{h}")))
            .collect(),
    })
}

/// Turns fetched payload blobs into candidates, recording a fetch failure as that layer's
/// problem rather than failing the whole check (another layer may still verify).
pub(crate) fn candidates_from(
    layers: &[cosign::SignatureLayer],
    mut fetch: impl FnMut(&cosign::SignatureLayer) -> Result<Vec<u8>, String>,
) -> (Vec<Candidate>, Vec<(Digest, Problem)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for l in layers {
        if l.size > simplesigning::MAX_PAYLOAD {
            bad.push((
                l.digest.clone(),
                Problem::Fetch(format!(
                    "payload of {} bytes exceeds the {}-byte limit",
                    l.size,
                    simplesigning::MAX_PAYLOAD
                )),
            ));
            continue;
        }
        match fetch(l) {
            Ok(payload) => ok.push(Candidate {
                payload_digest: l.digest.clone(),
                payload,
                signature: l.signature.clone(),
            }),
            Err(e) => bad.push((l.digest.clone(), Problem::Fetch(e))),
        }
    }
    (ok, bad)
}

/// Checks a signature manifest's bytes (already checked against `manifest_digest`) and
/// its payloads (fetched by `fetch`, which must check them against digest and size).
pub(crate) fn check_manifest(
    manifest: &[u8],
    manifest_digest: &Digest,
    digest: &Digest,
    policy: &VerifyPolicy,
    fetch: impl FnMut(&cosign::SignatureLayer) -> Result<Vec<u8>, String>,
) -> Result<Verified, Refusal> {
    let layers =
        cosign::signature_layers(manifest).map_err(|reason| Refusal::BadSignatureManifest {
            manifest: Some(manifest_digest.clone()),
            reason,
        })?;
    let (candidates, mut fetch_problems) = candidates_from(&layers, fetch);
    if candidates.is_empty() && !fetch_problems.is_empty() {
        return Err(Refusal::Rejected(fetch_problems));
    }
    match check(&candidates, digest, policy, manifest_digest) {
        Ok(v) => Ok(v),
        Err(Refusal::Rejected(mut p)) => {
            p.append(&mut fetch_problems);
            Err(Refusal::Rejected(p))
        }
        Err(other) => Err(other),
    }
}

/// Verifies `digest` against the signatures an OCI layout holds: the manifest tagged
/// `sha256-<hex>.sig` in its index.json (as `skopeo copy` of a cosign signature tag writes
/// it), then Sigstore bundle referrers (index.json entries with the bundle's
/// `artifactType`, and the `sha256-<hex>` referrers fallback tag); every blob read from the
/// layout is checked against its descriptor.
pub fn verify_layout(
    layout: &Layout,
    digest: &Digest,
    reference: &str,
    policy: &VerifyPolicy,
) -> Result<Verified, OciError> {
    let classic = match classic_in_layout(layout, digest, policy) {
        Ok(v) => return Ok(v),
        Err(r) => r,
    };
    let problems = match bundles_in_layout(layout, digest, policy) {
        Ok(v) => return Ok(v),
        Err(p) => p,
    };
    Err(VerifyError::new(reference, Some(digest), policy, combine(classic, problems)).into())
}

/// One refusal out of the classic format's and the bundles' problems.
pub(crate) fn combine(classic: Refusal, bundle_problems: Vec<(Digest, Problem)>) -> Refusal {
    match (classic, bundle_problems.is_empty()) {
        (Refusal::Unsigned { looked }, true) => Refusal::Unsigned {
            looked: format!("{looked}, nor any {} referrer", bundle::MEDIA_TYPE),
        },
        (r, true) => r,
        (Refusal::Rejected(mut p), false) => {
            p.extend(bundle_problems);
            Refusal::Rejected(p)
        }
        (_, false) => Refusal::Rejected(bundle_problems),
    }
}

fn classic_in_layout(
    layout: &Layout,
    digest: &Digest,
    policy: &VerifyPolicy,
) -> Result<Verified, Refusal> {
    let tag = cosign::signature_tag(digest);
    let index = layout.index().map_err(|e| Refusal::BadSignatureManifest {
        manifest: None,
        reason: e.to_string(),
    })?;
    let Some(desc) = index
        .manifests()
        .iter()
        .find(|m| ref_name(m) == Some(tag.as_str()))
    else {
        return Err(Refusal::Unsigned {
            looked: format!(
                "manifest tagged {tag} in the layout {}",
                layout.path().display()
            ),
        });
    };
    let sig_digest: Digest =
        desc.digest()
            .to_string()
            .parse()
            .map_err(|e: String| Refusal::BadSignatureManifest {
                manifest: None,
                reason: e,
            })?;
    let bytes = layout
        .read_blob(&sig_digest, Some(desc.size()))
        .map_err(|e| Refusal::BadSignatureManifest {
            manifest: Some(sig_digest.clone()),
            reason: e.to_string(),
        })?;
    check_manifest(&bytes, &sig_digest, digest, policy, |l| {
        layout
            .read_blob(&l.digest, Some(l.size))
            .map_err(|e| e.to_string())
    })
}

/// Descriptors (digest, size) of a JSON list's entries with the bundle's `artifactType`.
fn bundle_entries(list: &serde_json::Value) -> Vec<(Digest, u64)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["artifactType"].as_str() == Some(bundle::MEDIA_TYPE))
        .filter_map(|e| Some((e["digest"].as_str()?.parse().ok()?, e["size"].as_u64()?)))
        .take(cosign::MAX_SIGNATURES)
        .collect()
}

/// Bundle layers of a referrer manifest: (digest, size).
pub(crate) fn bundle_layers(manifest: &[u8]) -> Vec<(Digest, u64)> {
    let v = serde_json::from_slice::<serde_json::Value>(manifest).unwrap_or_default();
    v["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mediaType"].as_str() == Some(bundle::MEDIA_TYPE))
        .filter_map(|l| Some((l["digest"].as_str()?.parse().ok()?, l["size"].as_u64()?)))
        .take(cosign::MAX_SIGNATURES)
        .collect()
}

fn bundles_in_layout(
    layout: &Layout,
    digest: &Digest,
    policy: &VerifyPolicy,
) -> Result<Verified, Vec<(Digest, Problem)>> {
    let mut problems = Vec::new();
    let Ok(text) = std::fs::read(layout.path().join("index.json")) else {
        return Err(problems);
    };
    let top = serde_json::from_slice::<serde_json::Value>(&text).unwrap_or_default();
    let mut referrers = bundle_entries(&top["manifests"]);
    // The referrers fallback tag: an index listing them.
    let fallback = format!("{}-{}", digest.algorithm().name(), digest.hex());
    let tagged =
        top["manifests"].as_array().into_iter().flatten().find(|m| {
            m["annotations"][super::layout::REF_NAME].as_str() == Some(fallback.as_str())
        });
    if let Some((d, size)) = tagged.and_then(|m| {
        Some((
            m["digest"].as_str()?.parse::<Digest>().ok()?,
            m["size"].as_u64()?,
        ))
    }) {
        match layout.read_blob(&d, Some(size)) {
            Ok(b) => {
                let v = serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default();
                referrers.extend(bundle_entries(&v["manifests"]));
            }
            Err(e) => problems.push((d, Problem::Fetch(e.to_string()))),
        }
    }
    referrers.dedup();
    for (md, size) in referrers {
        let manifest = match layout.read_blob(&md, Some(size)) {
            Ok(m) => m,
            Err(e) => {
                problems.push((md, Problem::Fetch(e.to_string())));
                continue;
            }
        };
        for (bd, bsize) in bundle_layers(&manifest) {
            if bsize > simplesigning::MAX_PAYLOAD {
                problems.push((bd, Problem::Fetch("bundle larger than the limit".into())));
                continue;
            }
            match layout.read_blob(&bd, Some(bsize)) {
                Ok(bytes) => match check_bundle(&bytes, digest, policy) {
                    Ok(key) => {
                        return Ok(Verified {
                            digest: digest.clone(),
                            key: key.name.clone(),
                            key_fingerprint: key.fingerprint.clone(),
                            signature_manifest: md,
                            payload: bd,
                        })
                    }
                    Err(p) => problems.push((bd, p)),
                },
                Err(e) => problems.push((bd, Problem::Fetch(e.to_string()))),
            }
        }
    }
    Err(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    use proptest::prelude::*;

    fn signer(seed: u8) -> (SigningKey, TrustedKey) {
        let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (
            sk,
            TrustedKey::from_pem(format!("key{seed}"), &pem).unwrap(),
        )
    }

    fn candidate(sk: &SigningKey, payload: &[u8]) -> Candidate {
        let sig: Signature = sk.sign(payload);
        Candidate {
            payload_digest: Digest::sha256_of(payload),
            payload: payload.to_vec(),
            signature: Some(
                base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()),
            ),
        }
    }

    #[test]
    fn accepts_only_a_trusted_key_naming_the_digest() {
        let (sk1, k1) = signer(1);
        let (sk2, k2) = signer(2);
        let image = Digest::sha256_of(b"image");
        let other = Digest::sha256_of(b"other");
        let sigm = Digest::sha256_of(b"sig manifest");
        let policy = VerifyPolicy::new(vec![k1.clone()]).unwrap();
        let good = candidate(&sk1, &Payload::cosign_bytes("r/os", &image));
        let v = check(std::slice::from_ref(&good), &image, &policy, &sigm).unwrap();
        assert_eq!(v.key, "key1");
        assert_eq!(&v.key_fingerprint, k1.fingerprint());

        let by2 = candidate(&sk2, &Payload::cosign_bytes("r/os", &image));
        let for_other = candidate(&sk1, &Payload::cosign_bytes("r/os", &other));
        let mut tampered = good.clone();
        tampered.payload = Payload::cosign_bytes("r/os", &other);
        let Err(Refusal::Rejected(p)) =
            check(&[by2.clone(), for_other, tampered], &image, &policy, &sigm)
        else {
            panic!()
        };
        assert_eq!(p[0].1, Problem::NoTrustedKey);
        assert!(matches!(&p[1].1, Problem::OtherDigest { names, .. } if *names == other));
        assert_eq!(p[2].1, Problem::NoTrustedKey);

        // Any one trusted key suffices, and a good signature after bad ones is found.
        let both = VerifyPolicy::new(vec![k1, k2]).unwrap();
        assert_eq!(
            check(&[by2.clone(), good], &image, &both, &sigm)
                .unwrap()
                .key,
            "key2"
        );
        assert!(VerifyPolicy::new(vec![]).is_err());
    }

    #[test]
    fn keys_refuse_private_and_foreign_material() {
        let (sk, k) = signer(3);
        let private = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&sk, Default::default())
            .unwrap()
            .to_string();
        let e = TrustedKey::from_pem("k.pem", &private).unwrap_err();
        assert!(e.reason.contains("private key"));
        assert!(!e.to_string().contains(&private[30..60]));
        assert!(TrustedKey::from_pem("x", "hello").is_err());
        // An Ed25519 SPKI (RFC 8410 §10.1's example).
        let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let e = TrustedKey::from_pem("ed.pub", ed).unwrap_err();
        assert!(e.reason.contains("P-256"), "{e}");
        assert!(k.to_string().starts_with("key3 (sha256:"));
    }

    proptest! {
        // Arbitrary annotation and payload bytes never panic the check.
        #[test]
        fn arbitrary_candidates_never_panic(
            sig in proptest::option::of(".{0,200}"),
            raw in proptest::collection::vec(any::<u8>(), 0..200),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let (_, k) = signer(4);
            let policy = VerifyPolicy::new(vec![k]).unwrap();
            let d = Digest::sha256_of(b"i");
            let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
            for s in [sig.clone(), Some(b64)] {
                let c = Candidate { payload_digest: Digest::sha256_of(&payload), payload: payload.clone(), signature: s };
                prop_assert!(check(&[c], &d, &policy, &d).is_err());
            }
        }
    }
}
