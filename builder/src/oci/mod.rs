//! OCI images: references, image layouts, docker archives, registry pulls and layer
//! application. `terra image pull|unpack` and `terra install` stand on this module.
//!
//! Trust flows from the reference: a manifest's bytes are checked against the digest that
//! names it (or that the index/layout names), the config and every layer against the
//! manifest's descriptors (digest and size), and each layer's uncompressed stream against
//! the config's `diff_ids`. Nothing is renamed into place until every check has passed.
//! With a [`VerifyPolicy`], the digest a reference resolves to must also carry a signature
//! by a trusted key ([`verify`]) before anything else is fetched or written.

pub mod apply;
pub mod archive;
pub mod blob;
pub mod fetch;
pub mod image;
pub mod layout;
pub mod lookup;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod sign;
pub mod tarstream;
pub mod verify;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use apply::{unpack, unpack_into, unpack_with, ApplyOptions, UnpackReport};
pub use blob::Digest;
pub use image::{Compression, Image, Layer, Platform};
pub use lookup::{lookup, Named};
pub use progress::{Progress, Silent};
pub use reference::ImageRef;
pub use registry::{pull, pull_with, PullOptions, PullReport};
pub use resolve::{resolve, resolve_with, ResolveOptions};
pub use verify::{TrustedKey, Verified, VerifyError, VerifyPolicy};

/// Everything that can go wrong with an image; each variant names the reference, blob or
/// path it failed on.
#[derive(Debug)]
pub enum OciError {
    /// The reference cannot be parsed.
    Reference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of a layout, archive or target could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// A blob failed a check or could not be read: digest, size, media type, format.
    Blob {
        /// The blob's digest (or, in a docker archive, its member name).
        blob: String,
        /// What is wrong.
        reason: String,
    },
    /// The reference names nothing in the source.
    NotFound {
        /// The reference.
        reference: String,
        /// What was looked for and what is there.
        reason: String,
    },
    /// No manifest in the index matches the platform.
    Platform {
        /// The reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },
    /// The registry refused or failed a request.
    Registry {
        /// The reference.
        reference: String,
        /// The client's message.
        message: String,
    },
    /// Applying a layer entry failed.
    Apply {
        /// The layer blob.
        blob: String,
        /// The entry's path in the layer.
        entry: String,
        /// What failed.
        reason: String,
    },
    /// The image has no valid signature by a trusted key (the error names the reference,
    /// the digest, the keys and what was wrong).
    Signature(Box<VerifyError>),
}

impl fmt::Display for OciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OciError::Reference { reference, reason } => {
                write!(f, "invalid image reference {reference:?}: {reason}")
            }
            OciError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            OciError::Blob { blob, reason } => write!(f, "blob {blob}: {reason}"),
            OciError::NotFound { reference, reason } => write!(f, "{reference}: {reason}"),
            OciError::Platform {
                reference,
                wanted,
                available,
            } => write!(
                f,
                "{reference}: no manifest for platform {wanted} (the index has: {})",
                if available.is_empty() {
                    "none with a platform".to_string()
                } else {
                    available.join(", ")
                }
            ),
            OciError::Registry { reference, message } => {
                write!(f, "registry: {reference}: {message}")
            }
            OciError::Apply {
                blob,
                entry,
                reason,
            } => write!(f, "layer {blob}: entry {entry:?}: {reason}"),
            OciError::Signature(e) => write!(f, "signature: {e}"),
        }
    }
}

impl std::error::Error for OciError {}

impl OciError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: io::Error) -> Self {
        OciError::Io {
            path: path.into(),
            err,
        }
    }

    pub(crate) fn blob(blob: impl fmt::Display, reason: impl Into<String>) -> Self {
        OciError::Blob {
            blob: blob.to_string(),
            reason: reason.into(),
        }
    }
}

/// Media types this module reads and writes.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Every manifest media type a registry may answer with.
    pub const MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
}
