//! Image references as `terra image` and node.toml's `image =` take them, with skopeo's
//! transport prefixes: `oci:PATH[:TAG]`, `docker-archive:PATH`, and registry references
//! (`[docker://]host[:port]/repo[:tag|@sha256:…]`, Docker Hub defaults for short names).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::OciError;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, optionally naming a tag
    /// (`org.opencontainers.image.ref.name` in its index.json).
    Layout {
        /// The layout directory.
        path: PathBuf,
        /// The tag; without it the layout must hold exactly one manifest.
        tag: Option<String>,
    },
    /// A `docker save` tarball.
    DockerArchive {
        /// The tarball.
        path: PathBuf,
    },
    /// An image in a registry.
    Registry(oci_client::Reference),
}

/// Tag grammar of the distribution spec: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl FromStr for ImageRef {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, OciError> {
        let bad = |reason: &str| OciError::Reference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            // The tag follows the last ':' when what follows is a tag (so a path may hold
            // colons as long as a tag is then given, as with skopeo).
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !p.is_empty() && valid_tag(t) => (p, Some(t.to_string())),
                _ => (rest, None),
            };
            if path.is_empty() || path.starts_with(':') {
                return Err(bad("oci: needs a layout directory, oci:PATH[:TAG]"));
            }
            return Ok(ImageRef::Layout {
                path: PathBuf::from(path),
                tag,
            });
        }
        if let Some(path) = s.strip_prefix("docker-archive:") {
            if path.is_empty() {
                return Err(bad("docker-archive: needs a tarball, docker-archive:PATH"));
            }
            return Ok(ImageRef::DockerArchive {
                path: PathBuf::from(path),
            });
        }
        let name = s.strip_prefix("docker://").unwrap_or(s);
        if name.is_empty() {
            return Err(bad("empty reference"));
        }
        if let Some((transport, _)) = name.split_once(':') {
            if matches!(
                transport,
                "dir" | "oci-archive" | "docker-daemon" | "containers-storage"
            ) {
                return Err(bad(
                    "unsupported transport (use oci:, docker-archive: or a registry reference)",
                ));
            }
        }
        let r = oci_client::Reference::try_from(name).map_err(|e| bad(&e.to_string()))?;
        Ok(ImageRef::Registry(r))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Layout { path, tag: None } => write!(f, "oci:{}", path.display()),
            ImageRef::Layout { path, tag: Some(t) } => write!(f, "oci:{}:{t}", path.display()),
            ImageRef::DockerArchive { path } => write!(f, "docker-archive:{}", path.display()),
            ImageRef::Registry(r) => write!(f, "{}", r.whole()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn layout_and_archive() {
        assert_eq!(
            parse("oci:/tmp/x:v1"),
            ImageRef::Layout {
                path: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse("oci:rel/dir"),
            ImageRef::Layout {
                path: "rel/dir".into(),
                tag: None
            }
        );
        assert_eq!(
            parse("oci:/a:b/c"),
            ImageRef::Layout {
                path: "/a:b/c".into(),
                tag: None
            }
        );
        assert_eq!(
            parse("docker-archive:/x/y.tar"),
            ImageRef::DockerArchive {
                path: "/x/y.tar".into()
            }
        );
        assert!("oci:".parse::<ImageRef>().is_err());
        assert!("oci::tag".parse::<ImageRef>().is_err());
        assert!("dir:/x".parse::<ImageRef>().is_err());
    }

    #[test]
    fn registry_defaults() {
        let ImageRef::Registry(r) = parse("alpine:3.20") else {
            panic!()
        };
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), Some("3.20"));
        let ImageRef::Registry(r) = parse("docker://127.0.0.1:5000/org/os:6") else {
            panic!()
        };
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "org/os");
        assert_eq!(r.tag(), Some("6"));
        let d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let ImageRef::Registry(r) = parse(&format!("localhost:5000/os@{d}")) else {
            panic!()
        };
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.digest(), Some(d));
        assert!("Upper/Case".parse::<ImageRef>().is_err());
    }
}
