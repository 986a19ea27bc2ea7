//! `terra sign` and `terra key generate`: cosign's key-based signatures, made by terra, so
//! that signing needs neither openssl nor skopeo nor cosign. Two formats, both by default:
//!
//! - classic: a manifest tagged `sha256-<hex>.sig` beside the image (its repository, or its
//!   OCI layout) whose layers are simple-signing payloads naming the digest the reference
//!   resolves to (the manifest or index as stored), each with the base64 DER ECDSA P-256
//!   signature of its bytes in the `dev.cosignproject.cosign/signature` annotation. Signing
//!   again adds a layer (another key's signature beside the first), as cosign does.
//! - bundle ([`bundle`]): cosign v3's Sigstore bundle v0.3 as an OCI 1.1 referrer of the
//!   digest: in a layout an index.json entry with the bundle's `artifactType`; in a registry
//!   a manifest pushed by digest and listed in the `sha256-<hex>` referrers fallback tag.
//!
//! What is written is what [`super::verify`] (and cosign) read. Keys: PKCS#8 PEM (`BEGIN
//! PRIVATE KEY`, what [`generate`] and `openssl genpkey` write), SEC1 (`BEGIN EC PRIVATE
//! KEY`), or cosign's encrypted key ([`cosign_key`], the password from [`password`]).

pub mod bundle;
pub mod cosign_key;
pub mod password;

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

use p256::elliptic_curve::zeroize::Zeroizing;
use sha2::Digest as _;

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
    /// Reads a private key file; a cosign encrypted key is opened with the password from
    /// [`password::for_key`] (`COSIGN_PASSWORD`, else the terminal).
    pub fn load(path: &Path) -> Result<ImageKey, KeyError> {
        Self::load_with(path, password::for_key)
    }

    /// Reads a private key file, asking `password` (given how to name the key) only for an
    /// encrypted one.
    pub fn load_with(
        path: &Path,
        password: impl FnOnce(&str) -> Result<Zeroizing<String>, String>,
    ) -> Result<ImageKey, KeyError> {
        let shown = path.display().to_string();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|err| KeyError::Io {
            path: shown.clone(),
            err,
        })?);
        let form = |why: String| KeyError::Form {
            path: shown.clone(),
            why,
        };
        let key = if cosign_key::is_encrypted(&text) {
            let pw = password(&shown).map_err(&form)?;
            let der = cosign_key::decrypt_pem(&text, pw.as_bytes())
                .map_err(|e| form(format!("cosign encrypted key: {e}")))?;
            SigningKey::from_pkcs8_der(&der).map_err(|e| {
                form(format!(
                    "the decrypted key is not an ECDSA P-256 PKCS#8 key: {e}"
                ))
            })?
        } else if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            return Err(form(
                "a PKCS#8 key encrypted by openssl: terra reads cosign's encrypted keys, or \
                 unencrypted PKCS#8/SEC1 (`openssl pkey -in KEY -out PLAIN`)"
                    .into(),
            ));
        } else if text.contains("BEGIN PRIVATE KEY") {
            SigningKey::from_pkcs8_pem(&text).map_err(|e| form(format!("PKCS#8: {e}")))?
        } else if text.contains("BEGIN EC PRIVATE KEY") {
            let secret =
                p256::SecretKey::from_sec1_pem(&text).map_err(|e| form(format!("SEC1: {e}")))?;
            SigningKey::from(secret)
        } else {
            return Err(form(
                "no `BEGIN PRIVATE KEY` (PKCS#8), `BEGIN EC PRIVATE KEY` (SEC1) or \
                 `BEGIN ENCRYPTED SIGSTORE PRIVATE KEY` (cosign) block"
                    .into(),
            ));
        };
        Ok(ImageKey { key })
    }

    /// A key from its signing half (tests).
    #[cfg(test)]
    pub(crate) fn from_signing_key(key: SigningKey) -> ImageKey {
        ImageKey { key }
    }

    /// The base64 SHA-256 of the public key's DER SubjectPublicKeyInfo: the key hint cosign
    /// writes in a bundle.
    pub fn hint(&self) -> String {
        let der = self
            .key
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(der))
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

/// Which signature formats `terra sign` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formats {
    /// cosign's classic `sha256-<hex>.sig` manifest.
    Classic,
    /// cosign v3's Sigstore bundle, as an OCI 1.1 referrer.
    Bundle,
    /// Both (what older and newer verifiers each find).
    Both,
}

impl Formats {
    fn classic(self) -> bool {
        self != Formats::Bundle
    }

    fn bundle(self) -> bool {
        self != Formats::Classic
    }
}

/// What `terra sign` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The digest signed.
    pub digest: Digest,
    /// The classic signature: where (`<layout>:sha256-<hex>.sig` or
    /// `<repo>:sha256-<hex>.sig`) and how many signatures its manifest now holds.
    pub classic: Option<(String, usize)>,
    /// The bundle's referrer manifest (`<layout>@<digest>` or `<repo>@<digest>`).
    pub bundle: Option<String>,
}

impl Signed {
    /// Where the signatures went, for messages: `classic AT (N signature(s)); bundle AT`.
    pub fn locations(&self) -> String {
        let mut at = Vec::new();
        if let Some((classic, n)) = &self.classic {
            at.push(format!("classic {classic} ({n} signature(s))"));
        }
        if let Some(bundle) = &self.bundle {
            at.push(format!("bundle {bundle}"));
        }
        at.join("; ")
    }
}

/// The digest a layout descriptor names.
fn descriptor_digest(d: &oci_spec::image::Descriptor, reference: &str) -> Result<Digest, OciError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|reason: String| OciError::Reference {
            reference: reference.to_string(),
            reason,
        })
}

/// Whether a layout's index.json entry is a signature rather than an image: a classic
/// `.sig` tag, a referrers fallback tag, or a referrer (it has an `artifactType`).
fn is_signature_entry(m: &oci_spec::image::Descriptor) -> bool {
    m.artifact_type().is_some()
        || ref_name(m).is_some_and(|n| {
            n.ends_with(".sig") || n.starts_with("sha256-") || n.starts_with("sha512-")
        })
}

/// Signs the image `tag` names in `layout` (the digest of the manifest or index its
/// index.json entry names) as `docker_reference`, in `formats`: adding to its `.sig`
/// manifest when it has one, and listing a bundle referrer in index.json.
pub fn sign_layout(
    layout: &Layout,
    tag: Option<&str>,
    docker_reference: &str,
    key: &ImageKey,
    formats: Formats,
) -> Result<Signed, OciError> {
    let shown = format!("oci:{}", layout.path().display());
    let index = layout.index()?;
    let entries: Vec<_> = index
        .manifests()
        .iter()
        .filter(|m| match tag {
            Some(t) => ref_name(m) == Some(t),
            None => !is_signature_entry(m),
        })
        .collect();
    let named = match entries.as_slice() {
        [one] => *one,
        [] => {
            return Err(OciError::NotFound {
                reference: shown,
                reason: format!(
                    "no manifest named {} in its index.json",
                    tag.unwrap_or("(any)")
                ),
            })
        }
        _ => {
            return Err(OciError::Reference {
                reference: shown,
                reason: "the layout holds several images: name one with :TAG".into(),
            })
        }
    };
    let digest = descriptor_digest(named, &shown)?;
    let classic = if formats.classic() {
        Some(classic_in_layout(
            layout,
            &index,
            &digest,
            docker_reference,
            key,
        )?)
    } else {
        None
    };
    let bundle = if formats.bundle() {
        let subject = bundle::Desc {
            media_type: named.media_type().to_string(),
            digest: digest.clone(),
            size: named.size(),
        };
        Some(bundle_in_layout(layout, &subject, docker_reference, key)?)
    } else {
        None
    };
    Ok(Signed {
        digest,
        classic,
        bundle,
    })
}

/// Adds `key`'s classic signature of `digest` to the layout's `.sig` manifest.
fn classic_in_layout(
    layout: &Layout,
    index: &oci_spec::image::ImageIndex,
    digest: &Digest,
    docker_reference: &str,
    key: &ImageKey,
) -> Result<(String, usize), OciError> {
    let sig_tag = cosign::signature_tag(digest);
    let mut layers = Vec::new();
    if let Some(old) = index
        .manifests()
        .iter()
        .find(|m| ref_name(m) == Some(sig_tag.as_str()))
    {
        let old_digest = descriptor_digest(old, &sig_tag)?;
        layers = signed_layers(&layout.read_blob(&old_digest, Some(old.size()))?, &sig_tag)?;
    }
    let payload = add_signature(&mut layers, docker_reference, digest, key);
    layout.write_blob(&payload)?;
    let (manifest, config) = signature_manifest(&layers);
    layout.write_blob(&config)?;
    let manifest_digest = layout.write_blob(&manifest)?;
    let desc =
        super::registry::descriptor(super::media::OCI_MANIFEST, manifest.len(), &manifest_digest)?;
    layout.set_ref(Some(&sig_tag), desc)?;
    Ok((
        format!("oci:{}:{sig_tag}", layout.path().display()),
        layers.len(),
    ))
}

/// Stores `key`'s bundle for `subject` and its referrer manifest in the layout, listed in
/// index.json with the bundle's `artifactType` (as OCI image-layout 1.1 lists referrers).
fn bundle_in_layout(
    layout: &Layout,
    subject: &bundle::Desc,
    name: &str,
    key: &ImageKey,
) -> Result<String, OciError> {
    let b = bundle::bundle(name, &subject.digest, key);
    let referrer = bundle::referrer(&b, subject);
    layout.write_blob(&b)?;
    layout.write_blob(bundle::EMPTY)?;
    let rd = layout.write_blob(&referrer)?;
    let mut desc = super::registry::descriptor(super::media::OCI_MANIFEST, referrer.len(), &rd)?;
    desc.set_artifact_type(Some(oci_spec::image::MediaType::from(
        super::verify::bundle::MEDIA_TYPE,
    )));
    layout.set_ref(None, desc)?;
    Ok(format!("oci:{}@{rd}", layout.path().display()))
}

/// Signs the image `reference` names in its registry (the digest of the manifest or index
/// the registry serves for it) in `formats`: adding to its `.sig` manifest when it has one,
/// and pushing a bundle referrer listed in the referrers fallback tag. Credentials as for
/// pulls (the docker config); `plain_http` for a registry on loopback.
pub fn sign_registry(
    reference: &oci_client::Reference,
    plain_http: bool,
    key: &ImageKey,
    formats: Formats,
) -> Result<Signed, OciError> {
    super::registry::ensure_tls_provider();
    let whole = reference.whole();
    let rt = super::registry::runtime(&whole)?;
    rt.block_on(sign_in_registry(reference, plain_http, key, formats))
}

async fn sign_in_registry(
    reference: &oci_client::Reference,
    plain_http: bool,
    key: &ImageKey,
    formats: Formats,
) -> Result<Signed, OciError> {
    use oci_client::RegistryOperation;
    let whole = reference.whole();
    let client = super::registry::client(plain_http, 60, &whole)?;
    let auth = super::registry::credentials(reference, None);
    let (manifest, digest) =
        super::registry::fetch_manifest(&client, reference, &auth, None).await?;
    client
        .auth(reference, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| super::registry::registry_error(&whole, e))?;
    let repo = Repo {
        client: &client,
        auth: &auth,
        reference,
    };
    let docker_reference = format!("{}/{}", reference.registry(), reference.repository());
    let classic = if formats.classic() {
        Some(repo.classic(&digest, &docker_reference, key).await?)
    } else {
        None
    };
    let bundle = if formats.bundle() {
        // The subject's media type as the manifest states it (every OCI and Docker schema 2
        // manifest and index does).
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| super::media::OCI_MANIFEST.to_string());
        let subject = bundle::Desc {
            media_type,
            digest: digest.clone(),
            size: manifest.len() as u64,
        };
        Some(repo.bundle(&subject, &docker_reference, key).await?)
    } else {
        None
    };
    Ok(Signed {
        digest,
        classic,
        bundle,
    })
}

/// The repository signatures are pushed to.
struct Repo<'a> {
    client: &'a oci_client::Client,
    auth: &'a oci_client::secrets::RegistryAuth,
    reference: &'a oci_client::Reference,
}

impl Repo<'_> {
    fn tagged(&self, tag: String) -> oci_client::Reference {
        oci_client::Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            tag,
        )
    }

    async fn push_blob(&self, bytes: &[u8], shown: &str) -> Result<(), OciError> {
        self.client
            .push_blob(
                self.reference,
                bytes.to_vec(),
                &Digest::sha256_of(bytes).to_string(),
            )
            .await
            .map(|_| ())
            .map_err(|e| super::registry::registry_error(shown, e))
    }

    async fn push_manifest(
        &self,
        at: &oci_client::Reference,
        bytes: Vec<u8>,
        media_type: &'static str,
    ) -> Result<(), OciError> {
        self.client
            .push_manifest_raw(at, bytes, http::HeaderValue::from_static(media_type))
            .await
            .map(|_| ())
            .map_err(|e| super::registry::registry_error(&at.whole(), e))
    }

    /// Adds `key`'s classic signature of `digest` to the `.sig` manifest.
    async fn classic(
        &self,
        digest: &Digest,
        docker_reference: &str,
        key: &ImageKey,
    ) -> Result<(String, usize), OciError> {
        let sig_ref = self.tagged(cosign::signature_tag(digest));
        let mut layers = match self
            .client
            .pull_manifest_raw(&sig_ref, self.auth, &[super::media::OCI_MANIFEST])
            .await
        {
            Ok((bytes, _)) => signed_layers(&bytes, &sig_ref.whole())?,
            Err(_) => Vec::new(),
        };
        let payload = add_signature(&mut layers, docker_reference, digest, key);
        let (manifest, config) = signature_manifest(&layers);
        self.push_blob(&payload, &sig_ref.whole()).await?;
        self.push_blob(&config, &sig_ref.whole()).await?;
        self.push_manifest(&sig_ref, manifest, super::media::OCI_MANIFEST)
            .await?;
        Ok((sig_ref.whole(), layers.len()))
    }

    /// Pushes `key`'s bundle for `subject` as a referrer (by digest) and lists it in the
    /// referrers fallback tag `<alg>-<hex>`: Debian's docker-registry, like every registry
    /// before OCI distribution 1.1, has no referrers API. A registry that has one indexes the
    /// manifest by its `subject` itself; the tag is then redundant, not wrong.
    async fn bundle(
        &self,
        subject: &bundle::Desc,
        name: &str,
        key: &ImageKey,
    ) -> Result<String, OciError> {
        let b = bundle::bundle(name, &subject.digest, key);
        let referrer = bundle::referrer(&b, subject);
        let rd = Digest::sha256_of(&referrer);
        let at = oci_client::Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            rd.to_string(),
        );
        self.push_blob(&b, &at.whole()).await?;
        self.push_blob(bundle::EMPTY, &at.whole()).await?;
        self.push_manifest(&at, referrer.clone(), super::media::OCI_MANIFEST)
            .await?;
        let tag = self.tagged(format!(
            "{}-{}",
            subject.digest.algorithm().name(),
            subject.digest.hex()
        ));
        let old = match super::registry::fetch_manifest(self.client, &tag, self.auth, None).await {
            Ok((bytes, _)) => Some(bytes),
            Err(OciError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let index = bundle::fallback_index(old.as_deref(), &referrer).map_err(|reason| {
            OciError::Reference {
                reference: tag.whole(),
                reason: format!("the referrers fallback tag: {reason}"),
            }
        })?;
        self.push_manifest(&tag, index, super::media::OCI_INDEX)
            .await?;
        Ok(at.whole())
    }
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
            ("enc.key", "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "cosign encrypted key"),
            ("openssl-enc.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nabc\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted by openssl"),
            ("pub.key", "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n", "no `BEGIN PRIVATE KEY`"),
            ("bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PKCS#8"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = ImageKey::load_with(&p, |_| Ok(Zeroizing::new(String::new())))
                .unwrap_err()
                .to_string();
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
