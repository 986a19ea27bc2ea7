//! What a reference names right now, without fetching its layers: `terra update` asks this
//! before it decides to fetch anything. A registry tag costs one manifest request (two
//! when it names an index); a layout is read from its index.

use oci_client::client::{ClientConfig, ClientProtocol};

use super::blob::Digest;
use super::image::{parse_document, select_platform, Document};
use super::layout::{Layout, MAX_JSON_BLOB};
use super::reference::ImageRef;
use super::registry::{credentials, ensure_tls_provider};
use super::resolve::{resolve_layout, ResolveOptions};
use super::{media, OciError};

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The image manifest's digest for the platform: what a version made from it records.
    pub manifest: Digest,
    /// The reference pinned to what it names now (a registry tag gains `@<digest>` of the
    /// manifest or index it resolved to, the digest a signature signs), so that fetching it
    /// later gets this image even when the tag has moved on.
    pub pinned: String,
}

/// Looks up what `r` names now.
pub fn lookup(r: &ImageRef, opts: &ResolveOptions) -> Result<Named, OciError> {
    match r {
        ImageRef::Layout { path, tag } => {
            let image = resolve_layout(&Layout::open(path)?, tag.as_deref(), r, &opts.platform)?;
            let manifest = image.manifest_digest.ok_or_else(|| OciError::NotFound {
                reference: r.to_string(),
                reason: "the layout names no manifest digest".into(),
            })?;
            Ok(Named {
                manifest,
                pinned: r.to_string(),
            })
        }
        ImageRef::DockerArchive { .. } => Err(OciError::Reference {
            reference: r.to_string(),
            reason: "a docker archive has no digest to follow; use a registry or an OCI layout"
                .into(),
        }),
        ImageRef::Registry(reference) => {
            ensure_tls_provider();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| OciError::Registry {
                    reference: r.to_string(),
                    message: format!("cannot start the async runtime: {e}"),
                })?;
            rt.block_on(lookup_registry(reference, opts))
        }
    }
}

async fn lookup_registry(
    reference: &oci_client::Reference,
    opts: &ResolveOptions,
) -> Result<Named, OciError> {
    let whole = reference.whole();
    let client = super::registry::new_client(
        ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        },
        &whole,
    )?;
    let auth = credentials(reference, None);
    let (bytes, _) = client
        .pull_manifest_raw(reference, &auth, &media::MANIFESTS)
        .await
        .map_err(|e| super::registry::registry_error(&whole, e))?;
    if bytes.len() as u64 > MAX_JSON_BLOB {
        return Err(OciError::blob(&whole, "manifest larger than the limit"));
    }
    let top = match reference.digest() {
        Some(d) => {
            let want: Digest = d.parse().map_err(|e: String| OciError::Reference {
                reference: whole.clone(),
                reason: e,
            })?;
            want.check(&bytes, None)
                .map_err(|why| OciError::blob(&want, why))?;
            want
        }
        None => Digest::sha256_of(&bytes),
    };
    let manifest = match parse_document(&bytes, &top.to_string())? {
        Document::Manifest(_) => top.clone(),
        Document::Index(index) => {
            let desc = select_platform(&index, &opts.platform, &whole)?;
            desc.digest()
                .to_string()
                .parse()
                .map_err(|e: String| OciError::blob(desc.digest(), e))?
        }
    };
    let base = format!(
        "{}/{}",
        reference.resolve_registry(),
        reference.repository()
    );
    let pinned = match reference.tag() {
        Some(tag) => format!("{base}:{tag}@{top}"),
        None => format!("{base}@{top}"),
    };
    Ok(Named { manifest, pinned })
}
