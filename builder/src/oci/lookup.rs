//! What a reference names right now, without fetching its layers: `terra update` asks this
//! before it decides to fetch anything. A registry tag costs one manifest request (an
//! index's platform entry names the manifest's digest); a layout is read from its index.

use super::blob::Digest;
use super::image::{parse_document, select_platform, Document};
use super::layout::Layout;
use super::reference::ImageRef;
use super::registry::{self, credentials, ensure_tls_provider};
use super::resolve::{resolve_layout, ResolveOptions};
use super::OciError;

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
            let rt = registry::runtime(&r.to_string())?;
            rt.block_on(lookup_registry(reference, opts))
        }
    }
}

async fn lookup_registry(
    reference: &oci_client::Reference,
    opts: &ResolveOptions,
) -> Result<Named, OciError> {
    let whole = reference.whole();
    let client = registry::client(opts.plain_http, 60, &whole)?;
    let auth = credentials(reference, None);
    // Checked against a digest the reference names; a tag's is the bytes' own.
    let (bytes, top) = registry::fetch_manifest(&client, reference, &auth, None).await?;
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
