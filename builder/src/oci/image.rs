//! A resolved image and its parts: the platform, the config, the ordered layers with where
//! their bytes are, and the manifest documents read on the way (`oci::resolve` gets
//! from a reference to an [`Image`]).

use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::blob::Digest;
use super::verify::Verified;
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
    /// `config`: what a container runs; terra reads its labels.
    #[serde(default)]
    pub config: RunConfig,
}

/// The image config label naming the image's PID 1 (`terra create` records it from
/// server.toml's `init`): stage0 starts it when neither node.toml nor the kernel line
/// names an init.
pub const INIT_LABEL: &str = "org.terra.init";

/// `config` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunConfig {
    /// `Labels` (null in many images).
    #[serde(rename = "Labels", default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

impl ConfigInfo {
    /// The init the image names ([`INIT_LABEL`]), when it is an absolute path.
    pub fn init(&self) -> Option<&str> {
        let i = self.config.labels.as_ref()?.get(INIT_LABEL)?;
        (i.starts_with('/') && !i.contains('\0') && !i.split('/').any(|c| c == ".."))
            .then_some(i.as_str())
    }
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

/// Where terra keeps its temporary files: the system's temporary directory (`$TMPDIR`,
/// else `/tmp`) when it takes writes, else `/run`. On a booted Terra version `/tmp` is
/// often part of the read-only root (Debian mounts no tmpfs there), while `/run` is always
/// a tmpfs.
pub fn temp_base() -> PathBuf {
    let tmp = std::env::temp_dir();
    let probe = tmp.join(format!(".terra-probe-{}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {
            let _ = fs::remove_dir(&probe);
            tmp
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tmp,
        Err(_) => PathBuf::from("/run"),
    }
}

/// A fresh directory under [`temp_base`].
pub(crate) fn temp_dir(prefix: &str) -> Result<PathBuf, OciError> {
    let base = temp_base();
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

/// A descriptor's digest, parsed.
pub(crate) fn desc_digest(d: &Descriptor) -> Result<Digest, OciError> {
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

/// The OCI chain IDs of `diff_ids`: the first is its diff_id, each next one
/// `sha256(previous + " " + diff_id)` (image-spec, config.md "Layer ChainID").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {d}").as_bytes());
                let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            }
        };
        out.push(next);
    }
    out
}

/// Whether a path names an existing OCI layout (for error messages).
pub fn is_layout(path: &Path) -> bool {
    path.join("oci-layout").is_file()
}
