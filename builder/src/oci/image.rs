//! From a reference to a checked image: manifest (through indexes, by platform), config
//! and the ordered layers with where their bytes are.

use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::blob::Digest;
use super::layout::{ref_name, Layout};
use super::progress::{Progress, Silent};
use super::reference::ImageRef;
use super::verify::{self, Refusal, Verified, VerifyError, VerifyPolicy};
use super::{media, OciError};

/// A platform as `--platform` gives it: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8`, `v7`, …
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!("platform {s:?}: expected OS/ARCH[/VARIANT]")),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Whether an index entry's platform (as serialized) is this one. A missing variant
    /// on our side accepts any; arm64's implied variant is v8.
    fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        if os != self.os || arch != self.architecture {
            return false;
        }
        match (&self.variant, variant) {
            (None, _) => true,
            (Some(w), Some(v)) => w == v,
            (Some(w), None) => arch == "arm64" && w == "v8",
        }
    }
}

/// How to resolve a reference.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// The platform picked from an index.
    pub platform: Platform,
    /// Registry pulls: plain HTTP.
    pub plain_http: bool,
    /// Require a signature by one of these keys on the digest the reference resolves to,
    /// checked before anything else is fetched or written (see [`super::verify`]).
    pub verify: Option<VerifyPolicy>,
}

/// A layer's compression, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression a layer media type says; None for a type that is not a layer.
    pub fn from_media_type(mt: &str) -> Option<Self> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The compression a stream's first bytes show (docker archives carry no media types).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// One layer: what it is and where its bytes are.
#[derive(Debug, Clone)]
pub struct Layer {
    /// How errors name it: the digest, or the member of a docker archive.
    pub name: String,
    /// The compressed blob's digest (None in a docker archive, which names layers by path).
    pub digest: Option<Digest>,
    /// The blob's size.
    pub size: Option<u64>,
    /// Compression.
    pub compression: Compression,
    /// The uncompressed tar's digest, from the config's `rootfs.diff_ids`.
    pub diff_id: Option<Digest>,
    /// The file holding the bytes.
    pub path: PathBuf,
    /// Where they start in it.
    pub offset: u64,
}

impl Layer {
    /// The blob's raw (possibly compressed) bytes.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, OciError> {
        let mut f = fs::File::open(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::blob(
                &self.name,
                format!("missing ({} does not exist)", self.path.display()),
            ),
            _ => OciError::io(&self.path, e),
        })?;
        if self.offset != 0 {
            f.seek(SeekFrom::Start(self.offset))
                .map_err(|e| OciError::io(&self.path, e))?;
        }
        Ok(match self.size {
            // A member of an archive ends where the next begins; a layout's blob is its own
            // file, whose extra bytes the size check then sees.
            Some(size) if self.offset != 0 => Box::new(f.take(size)),
            _ => Box::new(f),
        })
    }
}

/// The fields of an image config that unpacking needs (config.md).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigInfo {
    /// `os`.
    #[serde(default)]
    pub os: String,
    /// `architecture`.
    #[serde(default)]
    pub architecture: String,
    /// `variant`.
    #[serde(default)]
    pub variant: Option<String>,
    /// `rootfs`.
    #[serde(default)]
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// The uncompressed layers' digests, in order.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// A resolved image.
#[derive(Debug)]
pub struct Image {
    /// The reference it came from.
    pub reference: String,
    /// The image manifest's digest (None for a docker archive).
    pub manifest_digest: Option<Digest>,
    /// The config's digest.
    pub config_digest: Option<Digest>,
    /// The config, parsed.
    pub config: ConfigInfo,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// The signature that verified the image, when a policy asked for one.
    pub verified: Option<Verified>,
    /// A registry pull's temporary layout, removed with the image.
    pub(crate) temp: Option<TempDir>,
}

impl Image {
    /// Reads every layer blob that has a digest and checks it (digest and size), so that a
    /// caller about to destroy something (a disk) fails before it does. Unpacking checks
    /// again as it reads.
    pub fn verify_blobs(&self) -> Result<(), OciError> {
        self.verify_layers_from(0)
    }

    /// [`Image::verify_blobs`] for the layers from index `first` on (an upgrade reads only
    /// the layers above the chain the disk already holds).
    pub fn verify_layers_from(&self, first: usize) -> Result<(), OciError> {
        for layer in self
            .layers
            .iter()
            .skip(first)
            .filter(|l| l.digest.is_some())
        {
            super::blob::VerifyingReader::new(layer.open()?, layer.digest.clone(), layer.size)
                .finish()
                .map_err(|r| OciError::blob(&layer.name, r))?;
        }
        Ok(())
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
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
            super::archive::resolve(path, &r.to_string())
        }
        ImageRef::Registry(reg) => {
            let dir = temp_dir("terra-pull")?;
            let guard = TempDir(dir.clone());
            let pull = super::registry::PullOptions {
                platform: opts.platform.clone(),
                plain_http: opts.plain_http,
                verify: opts.verify.clone(),
                ..Default::default()
            };
            // The pull verified the digest the tag resolved to (once, from the bytes it
            // received) and fetched everything else by digest into our own temporary
            // layout, which is read back here without a second verification.
            let report = super::registry::pull_with(reg, &dir, &pull, progress)?;
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
            image.temp = Some(guard);
            Ok(image)
        }
    }
}

/// A fresh directory under the system's temporary directory.
pub(crate) fn temp_dir(prefix: &str) -> Result<PathBuf, OciError> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("{prefix}-{}-{n}", std::process::id()));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(OciError::io(&p, e)),
        }
    }
    Err(OciError::io(
        &base,
        std::io::Error::other("cannot create a temporary directory"),
    ))
}

/// A parsed manifest document.
pub(crate) enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// Parses manifest bytes, telling an index from an image manifest by `mediaType` and, when
/// that is absent (it is optional in OCI), by which list the document has.
pub(crate) fn parse_document(bytes: &[u8], name: &str) -> Result<Document, OciError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| OciError::blob(name, format!("not a JSON manifest: {e}")))?;
    let mt = v.get("mediaType").and_then(|m| m.as_str());
    let is_index = match mt {
        Some(media::OCI_INDEX | media::DOCKER_LIST) => true,
        Some(media::OCI_MANIFEST | media::DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(OciError::blob(
                name,
                format!("unknown manifest media type {other:?}"),
            ))
        }
        None => v.get("manifests").is_some(),
    };
    let bad = |e: serde_json::Error| OciError::blob(name, format!("malformed manifest: {e}"));
    if is_index {
        serde_json::from_value(v)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(bad)
    } else {
        serde_json::from_value(v)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(bad)
    }
}

fn desc_digest(d: &Descriptor) -> Result<Digest, OciError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|e: String| OciError::blob(d.digest(), e))
}

/// Picks the index entry for `platform`; the error lists what the index offers.
pub(crate) fn select_platform(
    index: &ImageIndex,
    platform: &Platform,
    reference: &str,
) -> Result<Descriptor, OciError> {
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let os = p.os().to_string();
        let arch = p.architecture().to_string();
        let variant = p.variant().as_deref();
        if platform.matches(&os, &arch, variant) {
            return Ok(m.clone());
        }
        available.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
    }
    Err(OciError::Platform {
        reference: reference.to_string(),
        wanted: platform.to_string(),
        available,
    })
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

/// The layers of a manifest with the config's diff_ids beside them.
pub(crate) fn layers_from(
    descs: &[Descriptor],
    config: &ConfigInfo,
    config_digest: &Digest,
    path_of: impl Fn(&Digest) -> PathBuf,
) -> Result<Vec<Layer>, OciError> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != descs.len() {
        return Err(OciError::blob(
            config_digest,
            format!(
                "the config lists {} diff_ids for {} layers",
                diff_ids.len(),
                descs.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (d, diff_id) in descs.iter().zip(diff_ids) {
        let digest = desc_digest(d)?;
        let mt = d.media_type().to_string();
        let compression = Compression::from_media_type(&mt)
            .ok_or_else(|| OciError::blob(&digest, format!("unknown layer media type {mt:?}")))?;
        let diff_id: Digest = diff_id
            .parse()
            .map_err(|e: String| OciError::blob(config_digest, e))?;
        layers.push(Layer {
            name: digest.to_string(),
            path: path_of(&digest),
            digest: Some(digest),
            size: Some(d.size()),
            compression,
            diff_id: Some(diff_id),
            offset: 0,
        });
    }
    Ok(layers)
}

/// Whether a path names an existing OCI layout (for error messages).
pub fn is_layout(path: &Path) -> bool {
    path.join("oci-layout").is_file()
}
