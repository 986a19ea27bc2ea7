//! `terra sign` and `terra key generate`: cosign's key-based signature in the classic
//! format, made by terra, so that signing needs neither openssl nor skopeo. What is
//! written is what [`super::verify`] (and cosign) read: a manifest tagged
//! `sha256-<hex>.sig` beside the image (its repository, or its OCI layout) whose layers are
//! simple-signing payloads naming the digest the reference resolves to (the manifest or
//! index as stored), each with the base64 DER ECDSA P-256 signature of its bytes in the
//! `dev.cosignproject.cosign/signature` annotation. Signing again adds a layer (another
//! key's signature beside the first), as cosign does.
//!
//! Keys: PKCS#8 PEM (`BEGIN PRIVATE KEY`, what [`generate`] and `openssl genpkey` write) or
//! SEC1 (`BEGIN EC PRIVATE KEY`). Encrypted keys (cosign's `ENCRYPTED SIGSTORE PRIVATE
//! KEY`) are refused with what to do instead.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

use super::blob::Digest;
use super::layout::{ref_name, Layout};
use super::verify::cosign::{self, SIGNATURE_ANNOTATION};
use super::verify::simplesigning::{self, Payload};
use super::OciError;

/// Why a key cannot be made or used.
#[derive(Debug)]
pub enum KeyError {
    /// Reading or writing the file failed.
    Io {
        /// The file.
        path: String,
        /// What failed.
        err: std::io::Error,
    },
    /// The file holds no private key terra can use (why).
    Form {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, err } => write!(f, "{path}: {err}"),
            KeyError::Form { path, why } => write!(f, "{path}: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A private key that signs images.
pub struct ImageKey {
    key: SigningKey,
}

impl fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never reaches a log.
        f.write_str("ImageKey(<private>)")
    }
}

/// A new key pair: the private key as PKCS#8 PEM and the public key as PKIX PEM (what
/// `--verify-key` and node.toml `[signature]` take).
pub fn generate() -> Result<(String, String), KeyError> {
    let mut bytes = [0u8; 32];
    loop {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|err| KeyError::Io {
                path: "/dev/urandom".into(),
                err,
            })?;
        // A scalar out of range (below one in 2^32 draws) is drawn again.
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            bytes.fill(0);
            let private = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| KeyError::Form {
                    path: "the new key".into(),
                    why: e.to_string(),
                })?;
            let public = key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| KeyError::Form {
                    path: "the new key".into(),
                    why: e.to_string(),
                })?;
            return Ok((private.to_string(), public));
        }
    }
}

impl ImageKey {
    /// Reads a private key file.
    pub fn load(path: &Path) -> Result<ImageKey, KeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| KeyError::Io {
            path: shown.clone(),
            err,
        })?;
        let form = |why: String| KeyError::Form {
            path: shown.clone(),
            why,
        };
        if text.contains("ENCRYPTED") {
            return Err(form(
                "an encrypted key (cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`): terra cannot \
                 decrypt it yet; use a key from `terra key generate`, or export this one \
                 unencrypted"
                    .into(),
            ));
        }
        let key = if text.contains("BEGIN PRIVATE KEY") {
            SigningKey::from_pkcs8_pem(&text).map_err(|e| form(format!("PKCS#8: {e}")))?
        } else if text.contains("BEGIN EC PRIVATE KEY") {
            let secret =
                p256::SecretKey::from_sec1_pem(&text).map_err(|e| form(format!("SEC1: {e}")))?;
            SigningKey::from(secret)
        } else {
            return Err(form(
                "no `BEGIN PRIVATE KEY` (PKCS#8) or `BEGIN EC PRIVATE KEY` (SEC1) block".into(),
            ));
        };
        Ok(ImageKey { key })
    }

    /// The base64 of the DER ECDSA P-256/SHA-256 signature of `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }

    /// The public key as PKIX PEM.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }
}

/// cosign's config of a signature image: an empty image whose one "layer" is the payload.
pub fn signature_config(payload_digests: &[Digest]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": payload_digests.iter().map(Digest::to_string).collect::<Vec<_>>(),
        },
    }))
    .unwrap_or_default()
}

/// A signature manifest's layers: payload digest, size and base64 signature.
type SignatureLayers = Vec<(Digest, u64, String)>;

/// Adds `key`'s signature of `digest` (as `docker_reference`) to `layers` (an existing
/// `.sig` manifest's, kept first; the same signature again replaces itself). Returns the
/// payload, which the caller stores beside the manifest.
fn add_signature(
    layers: &mut SignatureLayers,
    docker_reference: &str,
    digest: &Digest,
    key: &ImageKey,
) -> Vec<u8> {
    let payload = Payload::cosign_bytes(docker_reference, digest);
    let signature = key.sign(&payload);
    let payload_digest = Digest::sha256_of(&payload);
    layers.retain(|(d, _, s)| !(d == &payload_digest && s == &signature));
    layers.push((payload_digest, payload.len() as u64, signature));
    payload
}

/// The signed layers of an existing signature manifest (unsigned ones are dropped).
fn signed_layers(manifest: &[u8], sig_tag: &str) -> Result<SignatureLayers, OciError> {
    Ok(cosign::signature_layers(manifest)
        .map_err(|reason| OciError::Reference {
            reference: sig_tag.to_string(),
            reason,
        })?
        .into_iter()
        .filter_map(|l| l.signature.map(|sig| (l.digest, l.size, sig)))
        .collect())
}

/// The signature manifest holding `layers` (earlier signatures first), with its config.
pub fn signature_manifest(layers: &[(Digest, u64, String)]) -> (Vec<u8>, Vec<u8>) {
    let config = signature_config(&layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": super::media::OCI_MANIFEST,
        "config": {
            "mediaType": super::media::OCI_CONFIG,
            "digest": Digest::sha256_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().map(|(d, size, sig)| serde_json::json!({
            "mediaType": simplesigning::MEDIA_TYPE,
            "digest": d.to_string(),
            "size": size,
            "annotations": {SIGNATURE_ANNOTATION: sig},
        })).collect::<Vec<_>>(),
    });
    (serde_json::to_vec(&manifest).unwrap_or_default(), config)
}

/// What `terra sign` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The digest signed.
    pub digest: Digest,
    /// Where the signature is (`<layout>:sha256-<hex>.sig` or `<repo>:sha256-<hex>.sig`).
    pub at: String,
    /// Signatures the signature manifest now holds.
    pub signatures: usize,
}

/// Signs the image `tag` names in `layout` (the digest of the manifest or index its
/// index.json entry names) as `docker_reference`, adding to its `.sig` manifest when it
/// has one.
pub fn sign_layout(
    layout: &Layout,
    tag: Option<&str>,
    docker_reference: &str,
    key: &ImageKey,
) -> Result<Signed, OciError> {
    let index = layout.index()?;
    let entries: Vec<_> = index
        .manifests()
        .iter()
        .filter(|m| match tag {
            Some(t) => ref_name(m) == Some(t),
            None => ref_name(m).is_none_or(|n| !n.ends_with(".sig")),
        })
        .collect();
    let named = match entries.as_slice() {
        [one] => one,
        [] => {
            return Err(OciError::NotFound {
                reference: format!("oci:{}", layout.path().display()),
                reason: format!(
                    "no manifest named {} in its index.json",
                    tag.unwrap_or("(any)")
                ),
            })
        }
        _ => {
            return Err(OciError::Reference {
                reference: format!("oci:{}", layout.path().display()),
                reason: "the layout holds several images: name one with :TAG".into(),
            })
        }
    };
    let digest: Digest = named
        .digest()
        .to_string()
        .parse()
        .map_err(|reason: String| OciError::Reference {
            reference: format!("oci:{}", layout.path().display()),
            reason,
        })?;
    let sig_tag = cosign::signature_tag(&digest);
    let mut layers = Vec::new();
    if let Some(old) = index
        .manifests()
        .iter()
        .find(|m| ref_name(m) == Some(sig_tag.as_str()))
    {
        let old_digest: Digest =
            old.digest()
                .to_string()
                .parse()
                .map_err(|reason: String| OciError::Reference {
                    reference: sig_tag.clone(),
                    reason,
                })?;
        layers = signed_layers(&layout.read_blob(&old_digest, Some(old.size()))?, &sig_tag)?;
    }
    let payload = add_signature(&mut layers, docker_reference, &digest, key);
    layout.write_blob(&payload)?;
    let (manifest, config) = signature_manifest(&layers);
    layout.write_blob(&config)?;
    let manifest_digest = layout.write_blob(&manifest)?;
    let desc =
        super::registry::descriptor(super::media::OCI_MANIFEST, manifest.len(), &manifest_digest)?;
    layout.set_ref(Some(&sig_tag), desc)?;
    Ok(Signed {
        digest,
        at: format!("oci:{}:{sig_tag}", layout.path().display()),
        signatures: layers.len(),
    })
}

/// Signs the image `reference` names in its registry (the digest of the manifest or index
/// the registry serves for it), adding to its `.sig` manifest when it has one. Credentials
/// as for pulls (the docker config); `plain_http` for a registry on loopback.
pub fn sign_registry(
    reference: &oci_client::Reference,
    plain_http: bool,
    key: &ImageKey,
) -> Result<Signed, OciError> {
    super::registry::ensure_tls_provider();
    let whole = reference.whole();
    let rt = super::registry::runtime(&whole)?;
    rt.block_on(sign_in_registry(reference, plain_http, key))
}

async fn sign_in_registry(
    reference: &oci_client::Reference,
    plain_http: bool,
    key: &ImageKey,
) -> Result<Signed, OciError> {
    use oci_client::RegistryOperation;
    let whole = reference.whole();
    let client = super::registry::client(plain_http, 60, &whole)?;
    let auth = super::registry::credentials(reference, None);
    let (_, digest) = super::registry::fetch_manifest(&client, reference, &auth, None).await?;
    let sig_tag = cosign::signature_tag(&digest);
    let sig_ref = oci_client::Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        sig_tag.clone(),
    );
    let mut layers = match client
        .pull_manifest_raw(&sig_ref, &auth, &[super::media::OCI_MANIFEST])
        .await
    {
        Ok((bytes, _)) => signed_layers(&bytes, &sig_ref.whole())?,
        Err(_) => Vec::new(),
    };
    let docker_reference = format!("{}/{}", reference.registry(), reference.repository());
    let payload = add_signature(&mut layers, &docker_reference, &digest, key);
    let payload_digest = Digest::sha256_of(&payload);
    let (manifest, config) = signature_manifest(&layers);
    let failed = |e| super::registry::registry_error(&sig_ref.whole(), e);
    client
        .auth(&sig_ref, &auth, RegistryOperation::Push)
        .await
        .map_err(failed)?;
    client
        .push_blob(&sig_ref, payload.clone(), &payload_digest.to_string())
        .await
        .map_err(failed)?;
    client
        .push_blob(
            &sig_ref,
            config.clone(),
            &Digest::sha256_of(&config).to_string(),
        )
        .await
        .map_err(failed)?;
    client
        .push_manifest_raw(
            &sig_ref,
            manifest,
            http::HeaderValue::from_static(super::media::OCI_MANIFEST),
        )
        .await
        .map_err(failed)?;
    Ok(Signed {
        digest,
        at: sig_ref.whole(),
        signatures: layers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::VerifyingKey;
    use p256::pkcs8::DecodePublicKey as _;

    #[test]
    fn a_generated_key_signs_what_its_public_half_verifies() {
        let (private, public) = generate().unwrap();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{private}"
        );
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, &private).unwrap();
        let key = ImageKey::load(&path).unwrap();
        assert_eq!(key.public_pem(), public);
        assert!(!format!("{key:?}").contains("BEGIN"));
        let b64 = key.sign(b"payload");
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let sig = Signature::from_der(&der).unwrap();
        let vk = VerifyingKey::from_public_key_pem(&public).unwrap();
        assert!(vk.verify(b"payload", &sig).is_ok());
        assert!(vk.verify(b"other", &sig).is_err());
        // Two keys are two keys.
        assert_ne!(generate().unwrap().1, public);
    }

    #[test]
    fn keys_terra_cannot_use_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, want) in [
            ("enc.key", "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "encrypted"),
            ("pub.key", "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n", "no `BEGIN PRIVATE KEY`"),
            ("bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PKCS#8"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = ImageKey::load(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(want), "{e}");
        }
        let e = ImageKey::load(&dir.path().join("absent.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.key"), "{e}");
    }

    #[test]
    fn the_signature_manifest_reads_as_cosigns() {
        let p = b"{\"critical\":{}}".to_vec();
        let d = Digest::sha256_of(&p);
        let (manifest, config) = signature_manifest(&[(d.clone(), p.len() as u64, "MEUC".into())]);
        let layers = cosign::signature_layers(&manifest).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!((&layers[0].digest, layers[0].size), (&d, p.len() as u64));
        assert_eq!(layers[0].signature.as_deref(), Some("MEUC"));
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], d.to_string());
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(
            m["config"]["digest"],
            Digest::sha256_of(&config).to_string()
        );
    }
}
