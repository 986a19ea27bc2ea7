//! From a reference to a checked image: an OCI layout's tag, a docker archive or a
//! registry pull, through indexes (by platform) to the manifest, config and layers.

use std::collections::BTreeSet;
use std::path::PathBuf;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::archive;
use super::blob::Digest;
use super::image::{
    desc_digest, layers_from, parse_document, select_platform, temp_dir, ConfigInfo, Document,
    Image, Platform, TempDir,
};
use super::layout::{ref_name, Layout};
use super::progress::{Progress, Silent};
use super::reference::ImageRef;
use super::registry;
use super::verify::{self, Refusal, VerifyError, VerifyPolicy};
use super::OciError;

/// How to resolve a reference.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The platform picked from an index.
    pub platform: Platform,
    /// Registry pulls: plain HTTP.
    pub plain_http: bool,
    /// Require a signature by one of these keys on the digest the reference resolves to,
    /// checked before anything else is fetched or written (see [`verify`]).
    pub verify: Option<VerifyPolicy>,
    /// Where a registry image is downloaded: a directory kept after the image is gone, so
    /// that an interrupted download resumes (a disk's `.terra/downloads`, which holds
    /// only the image being fetched: other images' blobs there are removed). Default: a
    /// temporary directory removed with the image.
    pub download_dir: Option<PathBuf>,
    /// Layer chains the destination holds: their layers are not fetched from a registry
    /// (see [`registry::PullOptions::have_chains`]), and the image's layers below them have
    /// no bytes to read.
    pub have_chains: BTreeSet<String>,
    /// A registry image's manifests and config only, no layer (see
    /// [`registry::PullOptions::skip_layers`]): its layers have no bytes to read.
    pub skip_layers: bool,
}

/// Resolves a reference to a checked image. A registry reference is pulled into a
/// temporary layout first.
///
/// With [`ResolveOptions::verify`], the digest the reference names (a layout's tag, a
/// registry tag's manifest or index as received) must carry a signature by a trusted key
/// before anything below it is read or fetched; the image's [`Image::verified`] says which.
pub fn resolve(r: &ImageRef, opts: &ResolveOptions) -> Result<Image, OciError> {
    resolve_with(r, opts, &Silent)
}

/// [`resolve`], telling `progress` of a registry reference's pull.
pub fn resolve_with(
    r: &ImageRef,
    opts: &ResolveOptions,
    progress: &dyn Progress,
) -> Result<Image, OciError> {
    match r {
        ImageRef::Layout { path, tag } => resolve_layout_verified(
            &Layout::open(path)?,
            tag.as_deref(),
            r,
            &opts.platform,
            opts.verify.as_ref(),
        ),
        ImageRef::DockerArchive { path } => {
            if let Some(policy) = &opts.verify {
                // `docker save` keeps no signatures, and its manifest.json has no digest
                // that a signature could name.
                return Err(VerifyError::new(
                    r.to_string(),
                    None,
                    policy,
                    Refusal::Unsupported(
                        "a docker archive carries no signatures; use a registry or an OCI layout"
                            .into(),
                    ),
                )
                .into());
            }
            archive::resolve(path, &r.to_string())
        }
        ImageRef::Registry(reg) => {
            let (dir, guard) = match &opts.download_dir {
                Some(d) => (d.clone(), None),
                None => {
                    let dir = temp_dir("terra-pull")?;
                    (dir.clone(), Some(TempDir(dir)))
                }
            };
            let pull = registry::PullOptions {
                platform: opts.platform.clone(),
                plain_http: opts.plain_http,
                verify: opts.verify.clone(),
                have_chains: opts.have_chains.clone(),
                prune: opts.download_dir.is_some(),
                skip_layers: opts.skip_layers,
                ..Default::default()
            };
            // The pull verified the digest the tag resolved to (once, from the bytes it
            // received) and fetched everything else by digest into our own temporary
            // layout, which is read back here without a second verification.
            let report = registry::pull_with(reg, &dir, &pull, progress)?;
            let layout = Layout::open(&dir)?;
            // By the digest the pull resolved (a by-digest pull leaves its manifest unnamed,
            // beside a signature tag when verified).
            let top = report.named_digest.to_string();
            let desc = layout
                .index()?
                .manifests()
                .iter()
                .find(|m| m.digest().to_string() == top)
                .cloned()
                .ok_or_else(|| OciError::NotFound {
                    reference: r.to_string(),
                    reason: format!("the pulled layout does not name {top}"),
                })?;
            let mut image = resolve_descriptor(&layout, desc, r.to_string(), &opts.platform)?;
            image.verified = report.verified;
            image.temp = guard;
            Ok(image)
        }
    }
}

/// Resolves a tag (or the only manifest) of a layout down to an image.
pub fn resolve_layout(
    layout: &Layout,
    tag: Option<&str>,
    r: &ImageRef,
    platform: &Platform,
) -> Result<Image, OciError> {
    resolve_layout_verified(layout, tag, r, platform, None)
}

/// [`resolve_layout`], requiring with `policy` a signature in the layout (the manifest
/// tagged `sha256-<hex>.sig`) on the digest the tag names, before that digest's bytes are
/// read and before an index is followed.
pub fn resolve_layout_verified(
    layout: &Layout,
    tag: Option<&str>,
    r: &ImageRef,
    platform: &Platform,
    policy: Option<&VerifyPolicy>,
) -> Result<Image, OciError> {
    let reference = r.to_string();
    let index = layout.index()?;
    let desc = match tag {
        Some(t) => index
            .manifests()
            .iter()
            .find(|m| ref_name(m) == Some(t))
            .cloned()
            .ok_or_else(|| OciError::NotFound {
                reference: reference.clone(),
                reason: format!(
                    "no manifest tagged {t:?} in the layout (tags: {})",
                    tags(&index)
                ),
            })?,
        None => match index.manifests().as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(OciError::NotFound {
                    reference,
                    reason: "the layout holds no manifest".into(),
                })
            }
            _ => {
                return Err(OciError::NotFound {
                    reference,
                    reason: format!(
                        "the layout holds several manifests: name one, oci:PATH:TAG (tags: {})",
                        tags(&index)
                    ),
                })
            }
        },
    };
    // The tag's digest is the one signed; below it, each digest comes from bytes already
    // checked against the one above.
    let verified = match policy {
        Some(p) => Some(verify::verify_layout(
            layout,
            &desc_digest(&desc)?,
            &reference,
            p,
        )?),
        None => None,
    };
    let mut image = resolve_descriptor(layout, desc, reference, platform)?;
    image.verified = verified;
    Ok(image)
}

/// Follows a layout's descriptor through indexes (by platform) down to an image.
fn resolve_descriptor(
    layout: &Layout,
    mut desc: Descriptor,
    reference: String,
    platform: &Platform,
) -> Result<Image, OciError> {
    // Indexes may nest; a few levels is all any tool writes.
    for _ in 0..4 {
        let digest = desc_digest(&desc)?;
        let bytes = layout.read_blob(&digest, Some(desc.size()))?;
        match parse_document(&bytes, &digest.to_string())? {
            Document::Index(idx) => desc = select_platform(&idx, platform, &reference)?,
            Document::Manifest(m) => {
                return image_from_manifest(layout, &m, digest, reference);
            }
        }
    }
    Err(OciError::NotFound {
        reference,
        reason: "indexes nest more than 4 levels deep".into(),
    })
}

fn tags(index: &ImageIndex) -> String {
    let t: Vec<&str> = index.manifests().iter().filter_map(ref_name).collect();
    if t.is_empty() {
        "none".into()
    } else {
        t.join(", ")
    }
}

fn image_from_manifest(
    layout: &Layout,
    m: &ImageManifest,
    manifest_digest: Digest,
    reference: String,
) -> Result<Image, OciError> {
    let cdesc = m.config();
    let config_digest = desc_digest(cdesc)?;
    let bytes = layout.read_blob(&config_digest, Some(cdesc.size()))?;
    let config: ConfigInfo = serde_json::from_slice(&bytes)
        .map_err(|e| OciError::blob(&config_digest, format!("malformed image config: {e}")))?;
    let layers = layers_from(m.layers(), &config, &config_digest, |d| layout.blob_path(d))?;
    Ok(Image {
        reference,
        manifest_digest: Some(manifest_digest),
        config_digest: Some(config_digest),
        config,
        layers,
        verified: None,
        temp: None,
    })
}
