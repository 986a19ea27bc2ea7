//! Registry pulls into an OCI image layout with oci-client (distribution-spec HTTP API,
//! token auth, rustls). The client runs on a current-thread tokio runtime created here:
//! async stays inside the builder. Manifests are checked against the digest that names
//! them, blobs against their descriptors while they stream to a temporary file, and only
//! checked bytes get a content address in the layout.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, MediaType};

use super::blob::{Digest, Hasher};
use super::image::{parse_document, select_platform, ConfigInfo, Document, Platform};
use super::layout::{Layout, MAX_JSON_BLOB};
use super::{media, OciError};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform picked from an index.
    pub platform: Platform,
    /// Talk HTTP instead of HTTPS (a local registry).
    pub plain_http: bool,
    /// Docker config with credentials (default `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The index's digest, when the reference named one.
    pub index_digest: Option<Digest>,
    /// The name given to the manifest in the layout's index.json.
    pub tag: Option<String>,
    /// Blobs downloaded (manifest, config and layers not already present).
    pub fetched: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Blobs already present and checked.
    pub reused: usize,
}

/// Pulls `reference` (one platform of it) into the layout at `dir`, created when missing,
/// naming it with the reference's tag (`latest` when it names neither tag nor digest).
pub fn pull(reference: &Reference, dir: &Path, opts: &PullOptions) -> Result<PullReport, OciError> {
    let whole = reference.whole();
    // reqwest without a built-in provider needs one installed; a second install fails
    // harmlessly when another pull in this process did it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OciError::Registry {
            reference: whole.clone(),
            message: format!("cannot start the async runtime: {e}"),
        })?;
    let layout = Layout::create(dir)?;
    let auth = credentials(reference, opts.docker_config.as_deref());
    rt.block_on(pull_async(reference, &layout, opts, &auth))
}

async fn pull_async(
    reference: &Reference,
    layout: &Layout,
    opts: &PullOptions,
    auth: &RegistryAuth,
) -> Result<PullReport, OciError> {
    let whole = reference.whole();
    let client = Client::new(ClientConfig {
        protocol: if opts.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // We choose the platform ourselves, from the raw index.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..Default::default()
    });
    let mut report = PullReport {
        manifest_digest: Digest::sha256_of(b""),
        index_digest: None,
        tag: match (reference.tag(), reference.digest()) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        },
        fetched: 0,
        bytes: 0,
        reused: 0,
    };

    let (bytes, mut digest) = fetch_manifest(&client, reference, auth, None).await?;
    let mut doc = parse_document(&bytes, &digest.to_string())?;
    let mut manifest_bytes = bytes;
    for _ in 0..4 {
        let Document::Index(index) = &doc else { break };
        report.index_digest.get_or_insert(digest.clone());
        let desc = select_platform(index, &opts.platform, &whole)?;
        let want: Digest = desc
            .digest()
            .to_string()
            .parse()
            .map_err(|e: String| OciError::blob(desc.digest(), e))?;
        let by_digest = reference.clone_with_digest(want.to_string());
        let (b, d) = fetch_manifest(&client, &by_digest, auth, Some(desc.size())).await?;
        doc = parse_document(&b, &d.to_string())?;
        manifest_bytes = b;
        digest = d;
    }
    let Document::Manifest(manifest) = doc else {
        return Err(OciError::NotFound {
            reference: whole,
            reason: "indexes nest more than 4 levels deep".into(),
        });
    };
    report.manifest_digest = digest.clone();

    // Config first: it names the layers' diff_ids, and a bad one fails before the big blobs.
    let mut blobs: Vec<&Descriptor> = vec![manifest.config()];
    blobs.extend(manifest.layers());
    for (i, desc) in blobs.into_iter().enumerate() {
        let d: Digest = desc
            .digest()
            .to_string()
            .parse()
            .map_err(|e: String| OciError::blob(desc.digest(), e))?;
        if i > 0 && super::image::Compression::from_media_type(desc.media_type().as_ref()).is_none()
        {
            return Err(OciError::blob(
                &d,
                format!(
                    "unknown layer media type {:?}",
                    desc.media_type().to_string()
                ),
            ));
        }
        if i == 0 && desc.size() > MAX_JSON_BLOB {
            return Err(OciError::blob(
                &d,
                "config larger than the limit for configs",
            ));
        }
        if layout.has_blob(&d, desc.size()) {
            report.reused += 1;
            continue;
        }
        fetch_blob(&client, reference, layout, desc, &d).await?;
        report.fetched += 1;
        report.bytes += desc.size();
        if i == 0 {
            let cfg = layout.read_blob(&d, Some(desc.size()))?;
            serde_json::from_slice::<ConfigInfo>(&cfg)
                .map_err(|e| OciError::blob(&d, format!("malformed image config: {e}")))?;
        }
    }

    // The manifest last: a layout never names an image whose blobs are not all there.
    let written = layout.write_blob(&manifest_bytes)?;
    if written != digest {
        // Only a non-sha256 digest can differ here: keep its own address.
        let (tmp, mut f) = layout.temp_blob()?;
        f.write_all(&manifest_bytes)
            .map_err(|e| OciError::io(&tmp, e))?;
        layout.commit_blob(&tmp, &digest)?;
    }
    report.fetched += 1;
    report.bytes += manifest_bytes.len() as u64;
    let mt = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    let desc = Descriptor::new(
        MediaType::from(mt.as_str()),
        manifest_bytes.len() as u64,
        oci_spec::image::Digest::try_from(digest.to_string())
            .map_err(|e| OciError::blob(&digest, e.to_string()))?,
    );
    layout.set_ref(report.tag.as_deref(), desc)?;
    Ok(report)
}

/// Fetches a manifest and checks its bytes: against the digest in the reference (by-digest
/// pulls and index entries), and against the size the index gave.
async fn fetch_manifest(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    size: Option<u64>,
) -> Result<(Vec<u8>, Digest), OciError> {
    let whole = reference.whole();
    let (bytes, _header_digest) = client
        .pull_manifest_raw(reference, auth, &media::MANIFESTS)
        .await
        .map_err(|e| registry_error(&whole, e))?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(OciError::blob(&whole, "manifest larger than the limit"));
    }
    let digest = match reference.digest() {
        Some(d) => {
            let want: Digest = d.parse().map_err(|e: String| OciError::Reference {
                reference: whole.clone(),
                reason: e,
            })?;
            want.check(&bytes, size)
                .map_err(|r| OciError::blob(&want, r))?;
            want
        }
        None => Digest::sha256_of(&bytes),
    };
    Ok((bytes.to_vec(), digest))
}

/// Streams a blob into a temporary file of the layout, hashing and counting as it goes,
/// and gives it its content address only when digest and size match the descriptor.
async fn fetch_blob(
    client: &Client,
    reference: &Reference,
    layout: &Layout,
    desc: &Descriptor,
    d: &Digest,
) -> Result<(), OciError> {
    let size = desc.size();
    let digest_str = d.to_string();
    let mut stream = client
        .pull_blob_stream(reference, digest_str.as_str())
        .await
        .map_err(|e| OciError::blob(d, format!("cannot fetch: {}", flatten(&e))))?;
    let (tmp, file) = layout.temp_blob()?;
    let cleanup = TempFile(tmp.clone());
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Hasher::new(d.algorithm());
    let mut count = 0u64;
    let mut stream_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                count += bytes.len() as u64;
                if count > size {
                    return Err(OciError::blob(
                        d,
                        format!("size mismatch: the registry sent more than the {size} bytes the manifest gives"),
                    ));
                }
                hasher.update(&bytes);
                out.write_all(&bytes).map_err(|e| OciError::io(&tmp, e))?;
            }
            // oci-client checks the digest too and fails the stream's end; our own
            // check below says what differs, so keep going to it.
            Err(e) => {
                stream_error = Some(e);
                break;
            }
        }
    }
    let actual = hasher.finish();
    if count == size && &actual != d {
        return Err(OciError::blob(
            d,
            format!("digest mismatch: the registry's content hashes to {actual}"),
        ));
    }
    if let Some(e) = stream_error {
        return Err(OciError::blob(d, format!("transfer failed: {e}")));
    }
    if count != size {
        return Err(OciError::blob(
            d,
            format!("size mismatch: expected {size} bytes, the registry sent {count}"),
        ));
    }
    let file = out
        .into_inner()
        .map_err(|e| OciError::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| OciError::io(&tmp, e))?;
    layout.commit_blob(&tmp, d)?;
    std::mem::forget(cleanup);
    Ok(())
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn flatten(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, url } => {
            let errs: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            format!("{} ({url})", errs.join("; "))
        }
        other => other.to_string(),
    }
}

fn registry_error(reference: &str, e: OciDistributionError) -> OciError {
    let unknown = match &e {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        _ => false,
    };
    if unknown {
        OciError::NotFound {
            reference: reference.to_string(),
            reason: format!("no such manifest in the registry ({})", flatten(&e)),
        }
    } else {
        OciError::Registry {
            reference: reference.to_string(),
            message: flatten(&e),
        }
    }
}

/// The docker config's key for a registry: Docker Hub's is its historic v1 URL.
fn auth_keys(registry: &str) -> Vec<String> {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ],
        r => vec![r.into(), format!("https://{r}"), format!("http://{r}")],
    }
}

/// Credentials for the reference's registry from the docker config (`auths` entries with
/// `auth` = base64 `user:password`, or `username`/`password`); anonymous otherwise.
pub fn credentials(reference: &Reference, config: Option<&Path>) -> RegistryAuth {
    let path = config.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
            })
    });
    let Some(text) = path.and_then(|p| fs::read(p).ok()) else {
        return RegistryAuth::Anonymous;
    };
    credentials_from(&text, reference.registry())
}

/// Credentials for `registry` from docker config.json text.
pub fn credentials_from(text: &[u8], registry: &str) -> RegistryAuth {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) else {
        return RegistryAuth::Anonymous;
    };
    for key in auth_keys(registry) {
        let Some(entry) = v["auths"].get(&key) else {
            continue;
        };
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth) {
                if let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':') {
                    return RegistryAuth::Basic(u.to_string(), p.to_string());
                }
            }
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return RegistryAuth::Basic(u.to_string(), p.to_string());
        }
        if let Some(t) = entry["registrytoken"].as_str() {
            return RegistryAuth::Bearer(t.to_string());
        }
    }
    RegistryAuth::Anonymous
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials() {
        let text = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "127.0.0.1:5000":{"username":"a","password":"b:c"}}}"#;
        assert!(matches!(
            credentials_from(text, "docker.io"),
            RegistryAuth::Basic(u, p) if u == "user" && p == "pass"
        ));
        assert!(matches!(
            credentials_from(text, "127.0.0.1:5000"),
            RegistryAuth::Basic(u, p) if u == "a" && p == "b:c"
        ));
        assert!(matches!(
            credentials_from(text, "quay.io"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            credentials_from(b"not json", "quay.io"),
            RegistryAuth::Anonymous
        ));
    }
}
