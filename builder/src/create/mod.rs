//! `terra create`: an OS image from Terra OS's `server.toml`. The build engine is buildah
//! ([`buildah`]): `userland`'s lines and the components run as a Containerfile on the
//! base `os`; then the settings ([`settings`]: host name, SSH keys, network, resolver,
//! units) are written into a working container's tree, the init is recorded in the image
//! config ([`INIT_LABEL`]), and the image is committed and pushed (an OCI layout, a
//! registry) and optionally signed. Nothing is pushed unless every step succeeded.

pub mod buildah;
pub mod settings;
pub mod spec;

use std::fmt;
use std::path::{Path, PathBuf};

use buildah::{transport, Buildah};
pub use spec::{Spec, SpecError};

use crate::oci::sign::{Formats, ImageKey};
use crate::oci::{ImageRef, OciError};

pub use crate::oci::image::INIT_LABEL;

/// Why `terra create` failed.
#[derive(Debug)]
pub enum CreateError {
    /// server.toml (or what it asks of the base): file, line, key.
    Spec(SpecError),
    /// A `userland` step or a component failed in the engine (its output is above).
    Step {
        /// The file.
        path: PathBuf,
        /// Its line.
        line: usize,
        /// The key.
        key: String,
        /// The instruction.
        instruction: String,
        /// How buildah ended.
        status: String,
    },
    /// The engine failed outside the steps (starting, mounting, committing, pushing).
    Engine(String),
    /// Writing the settings into the tree.
    Tree(String),
    /// Signing.
    Sign(OciError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Spec(e) => e.fmt(f),
            CreateError::Step {
                path,
                line,
                key,
                instruction,
                status,
            } => write!(
                f,
                "{}:{line}: {key}: `{instruction}` failed ({status}); its output is above; \
                 nothing was pushed",
                path.display()
            ),
            CreateError::Engine(e) => write!(f, "{e}; nothing was pushed"),
            CreateError::Tree(e) => write!(
                f,
                "writing the settings into the image: {e}; nothing was pushed"
            ),
            CreateError::Sign(e) => write!(f, "signing: {e}"),
        }
    }
}

impl std::error::Error for CreateError {}

impl From<SpecError> for CreateError {
    fn from(e: SpecError) -> Self {
        CreateError::Spec(e)
    }
}

/// Where `terra create` puts the image and how.
#[derive(Debug, Default)]
pub struct Options {
    /// An OCI layout (`oci:DIR[:TAG]`; the tag defaults to `version`).
    pub output: Option<ImageRef>,
    /// Push to `<repo>/<hostname>:<version>`.
    pub push: bool,
    /// Sign what was written and pushed.
    pub sign_key: Option<ImageKey>,
    /// Plain HTTP to registries (the base, components, the push).
    pub plain_http: bool,
    /// The time written into the image (`SOURCE_DATE_EPOCH`, else 0).
    pub timestamp: u64,
}

/// One place the image went.
#[derive(Debug, Clone)]
pub struct Written {
    /// As terra names it (`oci:DIR:TAG`, `REGISTRY/REPO:TAG`).
    pub at: String,
    /// The manifest's digest there.
    pub digest: String,
    /// Where its signature went, when signed.
    pub signature: Option<String>,
}

/// How the build names its base and components (buildah transports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The base.
    pub os: String,
    /// The components, in server.toml's order.
    pub components: Vec<String>,
}

/// The build's names for the images `spec` reads. buildah 1.28 names a layout's image
/// after its path and refuses a path that is not a valid repository name (capitals, a
/// component starting with a dot): such a layout is reached through a symlink named by
/// its path's hash in `<tmp>/terra-create-layouts`, stable across runs since the name
/// ends up in the image (its `base.name` annotation).
pub fn sources(spec: &Spec) -> Result<Sources, CreateError> {
    let name = |r: &ImageRef| -> Result<String, CreateError> {
        match r {
            ImageRef::Layout { path, tag } => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                if repository_path(&path) {
                    return Ok(transport(r));
                }
                let dir = crate::oci::image::temp_base().join("terra-create-layouts");
                let hash = crate::oci::blob::Digest::sha256_of(path.as_os_str().as_encoded_bytes());
                let link = dir.join(&hash.hex()[..16]);
                let made = std::fs::create_dir_all(&dir).and_then(|()| {
                    let tmp = dir.join(format!(".{}-{}", &hash.hex()[..16], std::process::id()));
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(&path, &tmp)?;
                    std::fs::rename(&tmp, &link)
                });
                made.map_err(|e| CreateError::Engine(format!("{}: {e}", link.display())))?;
                Ok(transport(&ImageRef::Layout {
                    path: link,
                    tag: tag.clone(),
                }))
            }
            r => Ok(transport(r)),
        }
    };
    Ok(Sources {
        os: name(&spec.os.0)?,
        components: spec
            .components
            .iter()
            .map(|c| name(&c.image.0))
            .collect::<Result<_, _>>()?,
    })
}

/// Whether buildah can name an image after `path`: each component lowercase letters and
/// digits, joined inside by `.`, `_` or `-`.
fn repository_path(path: &Path) -> bool {
    path.to_str().is_some_and(|p| {
        p.split('/').filter(|c| !c.is_empty()).all(|c| {
            let b = c.as_bytes();
            b.iter()
                .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
    })
}

/// The Containerfile for `spec`'s userland and components; the last stage is the image.
pub fn containerfile(spec: &Spec, src: &Sources) -> String {
    let mut s = String::from("# Made by terra create from server.toml\n");
    for (n, c) in src.components.iter().enumerate() {
        s.push_str(&format!("FROM {c} AS terra-component-{n}\n"));
    }
    s.push_str(&format!("FROM {}\n", src.os));
    for (line, _) in &spec.userland {
        s.push_str(line);
        s.push('\n');
    }
    for n in 0..src.components.len() {
        s.push_str(&format!("COPY --from=terra-component-{n} / /\n"));
    }
    s
}

/// Builds `spec`'s image and writes it where `opts` says. `Ok` lists where it went.
pub fn create(spec: &Spec, opts: &Options) -> Result<Vec<Written>, CreateError> {
    let mut dests = Vec::new();
    if let Some(o) = &opts.output {
        let ImageRef::Layout { path, tag } = o else {
            return Err(CreateError::Engine(
                "--output takes an OCI layout: oci:DIR[:TAG]".into(),
            ));
        };
        let tag = tag.clone().unwrap_or_else(|| spec.version.clone());
        dests.push(ImageRef::Layout {
            path: path.clone(),
            tag: Some(tag),
        });
    }
    if opts.push {
        let Some((repo, _)) = &spec.repo else {
            return Err(SpecError {
                path: spec.path.clone(),
                line: 0,
                key: "repo".into(),
                message: "--push needs repo = \"REGISTRY/ORG\"".into(),
            }
            .into());
        };
        let r = format!("{repo}/{}:{}", spec.hostname, spec.version);
        dests.push(
            r.parse()
                .map_err(|e: OciError| CreateError::Engine(e.to_string()))?,
        );
    }
    if dests.is_empty() {
        return Err(CreateError::Engine(
            "nowhere to put the image: give --output oci:DIR[:TAG] or --push".into(),
        ));
    }
    let work_dir = crate::oci::image::temp_dir("terra-create")
        .map_err(|e| CreateError::Engine(e.to_string()))?;
    let work = crate::oci::image::TempDir(work_dir);
    let b = Buildah {
        plain_http: opts.plain_http,
        timestamp: opts.timestamp,
    };
    // Local names unique to this run (the work directory's name); removed at the end
    // whatever happens.
    let id = work
        .0
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("x")
        .to_ascii_lowercase();
    // The build's image ID, once known (it is untagged).
    let mut built = String::new();
    let done = format!(
        "localhost/terra-create/{}:{}-{id}",
        spec.hostname, spec.version
    );
    let result = build(spec, &b, &mut built, &done, &work.0).and_then(|()| {
        let mut out = Vec::new();
        for d in &dests {
            let digest = b.push(&done, &transport(d), &work.0)?;
            out.push((d.clone(), digest));
        }
        Ok(out)
    });
    b.rmi(&[&done]);
    if !built.is_empty() {
        b.rmi(&[&built]);
    }
    let pushed = result?;
    let mut written = Vec::new();
    for (d, digest) in pushed {
        let at = match &d {
            ImageRef::Layout { path, tag } => {
                format!("oci:{}:{}", path.display(), tag.as_deref().unwrap_or(""))
            }
            ImageRef::Registry(r) => r.whole(),
            ImageRef::DockerArchive { path } => path.display().to_string(),
        };
        let signature = match &opts.sign_key {
            Some(key) => Some(sign(&d, &at, &digest, key, opts.plain_http)?),
            None => None,
        };
        written.push(Written {
            at,
            digest,
            signature,
        });
    }
    Ok(written)
}

/// bud, the settings in a working container, the init label, commit as `done`.
fn build(
    spec: &Spec,
    b: &Buildah,
    built: &mut String,
    done: &str,
    work: &Path,
) -> Result<(), CreateError> {
    let file = work.join("Containerfile");
    let src = sources(spec)?;
    std::fs::write(&file, containerfile(spec, &src))
        .map_err(|e| CreateError::Engine(format!("{}: {e}", file.display())))?;
    let context = spec
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let iid = work.join("iid");
    if let Err(f) = b.bud(&file, context, &iid)? {
        return Err(step_error(spec, &src, f));
    }
    let id = std::fs::read_to_string(&iid)
        .map_err(|e| CreateError::Engine(format!("{}: {e}", iid.display())))?;
    let id = id.trim().trim_start_matches("sha256:");
    built.push_str(id);
    let ctr = b.from(id)?;
    let r = (|| {
        let root = b.mount(&ctr)?;
        let applied = settings::apply(spec, &root);
        b.umount(&ctr)?;
        applied?;
        if let Some((init, _)) = &spec.init {
            b.label(&ctr, INIT_LABEL, init)?;
        }
        b.commit(&ctr, done)
    })();
    if r.is_err() {
        b.rm(&ctr);
    }
    r
}

/// Which server.toml key and line a failed step came from.
fn step_error(spec: &Spec, src: &Sources, f: buildah::BudFailure) -> CreateError {
    let step = f.step.unwrap_or_default();
    let first = |s: &str| s.lines().next().unwrap_or("").trim().to_string();
    let shown = first(&step);
    let (line, key) = if let Some((_, l)) = spec
        .userland
        .iter()
        .find(|(t, _)| !shown.is_empty() && first(t) == shown)
    {
        (*l, "userland".to_string())
    } else if let Some(n) =
        (0..spec.components.len()).find(|n| shown.contains(&format!("terra-component-{n}")))
    {
        (spec.components[n].image.1, format!("components[{n}].image"))
    } else if shown.starts_with("FROM") {
        let n = src
            .components
            .iter()
            .position(|c| shown.contains(c.as_str()));
        match n {
            Some(n) => (spec.components[n].image.1, format!("components[{n}].image")),
            None => (spec.os.1, "os".into()),
        }
    } else {
        (0, "userland".into())
    };
    CreateError::Step {
        path: spec.path.clone(),
        line,
        key,
        instruction: if shown.is_empty() {
            "the build".into()
        } else {
            shown
        },
        status: f.status,
    }
}

/// Signs the image at `d` (digest as pushed) in both of cosign's formats, as `terra sign`
/// does by default.
fn sign(
    d: &ImageRef,
    at: &str,
    digest: &str,
    key: &ImageKey,
    plain_http: bool,
) -> Result<String, CreateError> {
    let signed = match d {
        ImageRef::Layout { path, tag } => {
            let layout = crate::oci::layout::Layout::open(path).map_err(CreateError::Sign)?;
            crate::oci::sign::sign_layout(&layout, tag.as_deref(), at, key, Formats::Both)
                .map_err(CreateError::Sign)?
        }
        ImageRef::Registry(r) => {
            let by_digest: ImageRef = format!("{}/{}@{digest}", r.registry(), r.repository())
                .parse()
                .map_err(CreateError::Sign)?;
            match by_digest {
                ImageRef::Registry(r) => {
                    crate::oci::sign::sign_registry(&r, plain_http, key, Formats::Both)
                        .map_err(CreateError::Sign)?
                }
                _ => {
                    return Err(CreateError::Engine(format!(
                        "{at}: not a registry reference"
                    )))
                }
            }
        }
        ImageRef::DockerArchive { .. } => {
            return Err(CreateError::Engine(
                "a docker archive cannot be signed".into(),
            ))
        }
    };
    Ok(signed.locations())
}
