//! Registry pulls into an OCI image layout with oci-client (distribution-spec HTTP API,
//! token auth, rustls). The client runs on a current-thread tokio runtime created here:
//! async stays inside the builder. Manifests are checked against the digest that names
//! them, blobs against their descriptors while they stream to a temporary file, and only
//! checked bytes get a content address in the layout.
//!
//! With a verification policy the tag is resolved once: the manifest (or index) bytes as
//! received are hashed, that digest must carry a cosign signature by a trusted key (the
//! `sha256-<hex>.sig` tag of the same repository), and only then is the layout created and
//! anything else fetched, by digest, from the verified bytes.

use std::collections::BTreeSet;
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

use super::blob::Digest;
use super::fetch::{fetch_blob, flatten};
use super::image::{
    chain_ids, desc_digest, parse_document, select_platform, Compression, ConfigInfo, Document,
    Platform,
};
use super::layout::{Layout, MAX_JSON_BLOB};
use super::progress::{Phase, Progress, Silent};
use super::verify::{
    self, bundle, cosign, simplesigning, Problem, Refusal, Verified, VerifyError, VerifyPolicy,
};
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
    /// Require a signature by one of these keys on the digest the reference resolves to;
    /// checked before the layout is created or any blob fetched. The signature is copied
    /// into the layout (tagged `sha256-<hex>.sig`) so the layout verifies offline later.
    pub verify: Option<VerifyPolicy>,
    /// Layer chains (OCI ChainIDs, `sha256:<hex>`) the destination already holds, e.g. a
    /// disk's `.terra/layers`: the layers up to the longest of them that the image shares
    /// are not fetched (the image's config, fetched first, names its chains).
    pub have_chains: BTreeSet<String>,
    /// The layout holds nothing but this image's download (a disk's `.terra/downloads`):
    /// blobs and partial downloads of any other image are removed from it, once the
    /// manifest is known (and its signature checked).
    pub prune: bool,
    /// Fetch the manifests and the config (and check the signature), no layer: to check a
    /// reference before committing to it.
    pub skip_layers: bool,
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The index's digest, when the reference named one.
    pub index_digest: Option<Digest>,
    /// What the layout's index.json names for this pull: the top (signed) digest when
    /// verified, else the platform's manifest.
    pub named_digest: Digest,
    /// The name given to the manifest in the layout's index.json.
    pub tag: Option<String>,
    /// Blobs downloaded (manifest, config and layers not already present).
    pub fetched: usize,
    /// Bytes downloaded in this run (a resumed blob counts only what it still lacked).
    pub bytes: u64,
    /// Blobs already present and checked.
    pub reused: usize,
    /// Layers not fetched because [`PullOptions::have_chains`] holds their chain.
    pub skipped: usize,
    /// Blobs whose download went on from the partial file an earlier run left.
    pub resumed: usize,
    /// The signature that verified the image, when a policy asked for one.
    pub verified: Option<Verified>,
}

/// Installs rustls's ring provider for this process: reqwest (built without a provider of
/// its own, for the builder's TLS stack) needs one before any client is made. A second
/// install fails harmlessly.
pub fn ensure_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Pulls `reference` (one platform of it) into the layout at `dir`, created when missing,
/// naming it with the reference's tag (`latest` when it names neither tag nor digest).
pub fn pull(reference: &Reference, dir: &Path, opts: &PullOptions) -> Result<PullReport, OciError> {
    pull_with(reference, dir, opts, &Silent)
}

/// [`pull`], telling `progress` of each blob (config, then layers) and the bytes fetched;
/// a blob already in the layout counts as done at once.
pub fn pull_with(
    reference: &Reference,
    dir: &Path,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, OciError> {
    let whole = reference.whole();
    ensure_tls_provider();
    let rt = runtime(&whole)?;
    let auth = credentials(reference, opts.docker_config.as_deref());
    rt.block_on(pull_async(reference, dir, opts, &auth, progress))
}

async fn pull_async(
    reference: &Reference,
    dir: &Path,
    opts: &PullOptions,
    auth: &RegistryAuth,
    progress: &dyn Progress,
) -> Result<PullReport, OciError> {
    let whole = reference.whole();
    let client = client(opts.plain_http, 300, &whole)?;
    let mut report = PullReport {
        manifest_digest: Digest::sha256_of(b""),
        index_digest: None,
        named_digest: Digest::sha256_of(b""),
        tag: match (reference.tag(), reference.digest()) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        },
        fetched: 0,
        bytes: 0,
        reused: 0,
        skipped: 0,
        resumed: 0,
        verified: None,
    };

    // The one request that resolves the tag: everything after it is by digest, from these
    // bytes (or from bytes checked against a digest they name).
    let (bytes, mut digest) = fetch_manifest(&client, reference, auth, None).await?;
    let mut signature = None;
    if let Some(policy) = &opts.verify {
        let (v, copy) = verify_signature(&client, reference, auth, &digest, policy).await?;
        report.verified = Some(v);
        signature = Some(copy);
    }
    // Nothing is written before the signature check: the layout is created only now.
    let layout = &Layout::create(dir)?;
    let mut doc = parse_document(&bytes, &digest.to_string())?;
    // The indexes above the manifest, top first: with a signature they go into the layout
    // too, so that the tag there names the digest that was signed.
    let mut parents: Vec<(Vec<u8>, Digest, String)> = Vec::new();
    let mut manifest_bytes = bytes;
    for _ in 0..4 {
        let Document::Index(index) = &doc else { break };
        report.index_digest.get_or_insert(digest.clone());
        let index_mt = index
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| media::OCI_INDEX.to_string());
        let desc = select_platform(index, &opts.platform, &whole)?;
        let want: Digest = desc
            .digest()
            .to_string()
            .parse()
            .map_err(|e: String| OciError::blob(desc.digest(), e))?;
        let by_digest = reference.clone_with_digest(want.to_string());
        let (b, d) = fetch_manifest(&client, &by_digest, auth, Some(desc.size())).await?;
        doc = parse_document(&b, &d.to_string())?;
        parents.push((std::mem::replace(&mut manifest_bytes, b), digest, index_mt));
        digest = d;
    }
    let Document::Manifest(manifest) = doc else {
        return Err(OciError::NotFound {
            reference: whole,
            reason: "indexes nest more than 4 levels deep".into(),
        });
    };
    report.manifest_digest = digest.clone();

    // Config first: it names the layers' diff_ids (so their chains), and a bad one fails
    // before the big blobs.
    let cdesc = manifest.config();
    let cd = desc_digest(cdesc)?;
    if cdesc.size() > MAX_JSON_BLOB {
        return Err(OciError::blob(
            &cd,
            "config larger than the limit for configs",
        ));
    }
    let mut layers = Vec::new();
    for desc in manifest.layers() {
        let d = desc_digest(desc)?;
        if Compression::from_media_type(desc.media_type().as_ref()).is_none() {
            return Err(OciError::blob(
                &d,
                format!(
                    "unknown layer media type {:?}",
                    desc.media_type().to_string()
                ),
            ));
        }
        layers.push((d, desc.size()));
    }
    if opts.prune {
        let keep = std::iter::once(cd.clone())
            .chain(layers.iter().map(|l| l.0.clone()))
            .collect();
        layout.retain_blobs(&keep)?;
    }
    let total = cdesc.size() + layers.iter().map(|l| l.1).sum::<u64>();
    let phase = Phase::start(progress, "pull", 1 + layers.len(), total);
    progress.item(0, &cd.to_string());
    get_blob(
        &client,
        reference,
        layout,
        &cd,
        cdesc.size(),
        progress,
        &mut report,
    )
    .await?;
    let cfg = layout.read_blob(&cd, Some(cdesc.size()))?;
    let config = serde_json::from_slice::<ConfigInfo>(&cfg)
        .map_err(|e| OciError::blob(&cd, format!("malformed image config: {e}")))?;
    let chains = chain_ids(&config.rootfs.diff_ids);
    let have = if opts.skip_layers {
        layers.len()
    } else if chains.len() != layers.len() {
        // The mismatch is refused when the image is read; nothing is skipped here.
        0
    } else {
        chains
            .iter()
            .rposition(|c| opts.have_chains.contains(c))
            .map_or(0, |i| i + 1)
    };
    for (i, (d, size)) in layers.iter().enumerate() {
        progress.item(i + 1, &d.to_string());
        if i < have {
            progress.advance(*size);
            report.skipped += 1;
            continue;
        }
        get_blob(&client, reference, layout, d, *size, progress, &mut report).await?;
    }

    drop(phase);
    // The manifest last: a layout never names an image whose blobs are not all there.
    write_manifest(layout, &manifest_bytes, &digest)?;
    report.fetched += 1;
    report.bytes += manifest_bytes.len() as u64;
    let mt = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    let mut desc = descriptor(&mt, manifest_bytes.len(), &digest)?;
    if let Some(copy) = signature {
        // The signed digest is the top one: name the indexes above the manifest (bottom
        // up, so each is written after what it points to) and tag the top, then copy the
        // signature beside it.
        for (bytes, d, mt) in parents.iter().rev() {
            write_manifest(layout, bytes, d)?;
            desc = descriptor(mt, bytes.len(), d)?;
        }
        report.named_digest = parents.first().map_or(digest.clone(), |p| p.1.clone());
        layout.set_ref(report.tag.as_deref(), desc)?;
        if let Some(copy) = copy {
            copy.store(layout)?;
        }
    } else {
        report.named_digest = digest.clone();
        layout.set_ref(report.tag.as_deref(), desc)?;
    }
    Ok(report)
}

pub(super) fn descriptor(
    media_type: &str,
    size: usize,
    d: &Digest,
) -> Result<Descriptor, OciError> {
    Ok(Descriptor::new(
        MediaType::from(media_type),
        size as u64,
        oci_spec::image::Digest::try_from(d.to_string())
            .map_err(|e| OciError::blob(d, e.to_string()))?,
    ))
}

/// Writes manifest bytes under their own digest (which may be sha512).
fn write_manifest(layout: &Layout, bytes: &[u8], d: &Digest) -> Result<(), OciError> {
    if &layout.write_blob(bytes)? != d {
        let (tmp, mut f) = layout.temp_blob()?;
        f.write_all(bytes).map_err(|e| OciError::io(&tmp, e))?;
        layout.commit_blob(&tmp, d)?;
    }
    Ok(())
}

/// A verified signature's manifest and blobs, to be copied into the pulled layout.
struct SignatureCopy {
    /// The classic format's `.sig` tag; None for a referrer (listed unnamed, with its
    /// artifactType, in index.json as OCI image-layout 1.1 lists referrers).
    tag: Option<String>,
    artifact_type: Option<&'static str>,
    manifest: Vec<u8>,
    digest: Digest,
    media_type: String,
    blobs: Vec<Vec<u8>>,
}

impl SignatureCopy {
    fn store(&self, layout: &Layout) -> Result<(), OciError> {
        for b in &self.blobs {
            layout.write_blob(b)?;
        }
        write_manifest(layout, &self.manifest, &self.digest)?;
        let mut desc = descriptor(&self.media_type, self.manifest.len(), &self.digest)?;
        if let Some(at) = self.artifact_type {
            desc.set_artifact_type(Some(MediaType::from(at)));
        }
        layout.set_ref(self.tag.as_deref(), desc)
    }
}

/// Requires a signature of `digest` by a key of `policy` in the reference's repository:
/// cosign's classic `sha256-<hex>.sig` tag first, then Sigstore bundles attached as
/// referrers. Fails closed: nothing found, nothing valid, or a lookup that fails refuses
/// the image, naming the reference, digest and keys and each signature's problem.
async fn verify_signature(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    digest: &Digest,
    policy: &VerifyPolicy,
) -> Result<(Verified, Option<SignatureCopy>), OciError> {
    let classic = match classic_signature(client, reference, auth, digest, policy).await {
        Ok(v) => return Ok(v),
        Err(r) => r,
    };
    let problems = match bundle_signatures(client, reference, auth, digest, policy).await {
        Ok(v) => return Ok(v),
        Err(p) => p,
    };
    let refusal = verify::combine(classic, problems);
    Err(VerifyError::new(reference.whole(), Some(digest), policy, refusal).into())
}

/// Sigstore bundles among the referrers of `digest` (the registry's referrers API, or the
/// `sha256-<hex>` fallback tag's index): each referrer manifest with the bundle's
/// `artifactType`, fetched by digest, its bundle layers checked with
/// [`verify::check_bundle`]. No referrers is an empty list of problems.
async fn bundle_signatures(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    digest: &Digest,
    policy: &VerifyPolicy,
) -> Result<(Verified, Option<SignatureCopy>), Vec<(Digest, Problem)>> {
    let subject = reference.clone_with_digest(digest.to_string());
    let index = client
        .pull_referrers(&subject, Some(bundle::MEDIA_TYPE))
        .await
        .map_err(|e| {
            vec![(
                digest.clone(),
                Problem::Fetch(format!("cannot list referrers: {}", flatten(&e))),
            )]
        })?;
    let mut problems = Vec::new();
    // A registry may ignore the artifactType filter: filter again.
    for entry in index
        .manifests
        .iter()
        .filter(|e| e.artifact_type.as_deref() == Some(bundle::MEDIA_TYPE))
        .take(cosign::MAX_SIGNATURES)
    {
        let Ok(md) = entry.digest.parse::<Digest>() else {
            continue;
        };
        let size = u64::try_from(entry.size).ok();
        let manifest = match fetch_manifest(
            client,
            &reference.clone_with_digest(md.to_string()),
            auth,
            size,
        )
        .await
        {
            Ok((m, _)) => m,
            Err(e) => {
                problems.push((md, Problem::Fetch(e.to_string())));
                continue;
            }
        };
        for (bd, bsize) in verify::bundle_layers(&manifest) {
            if bsize > simplesigning::MAX_PAYLOAD {
                problems.push((bd, Problem::Fetch("bundle larger than the limit".into())));
                continue;
            }
            let bytes = match fetch_small_blob(client, reference, &bd, bsize).await {
                Ok(b) => b,
                Err(e) => {
                    problems.push((bd, Problem::Fetch(e)));
                    continue;
                }
            };
            match verify::check_bundle(&bytes, digest, policy) {
                Ok(key) => {
                    let copy = referrer_copy(client, reference, md.clone(), manifest, bytes).await;
                    let v = Verified {
                        digest: digest.clone(),
                        key: key.name().to_string(),
                        key_fingerprint: key.fingerprint().clone(),
                        signature_manifest: md,
                        payload: bd,
                    };
                    return Ok((v, copy));
                }
                Err(p) => problems.push((bd, p)),
            }
        }
    }
    Err(problems)
}

/// The verified referrer, whole, for the pulled layout: its manifest, the bundle and the
/// config (an empty descriptor's `{}`, usually). None when it has other layers or its
/// config cannot be fetched: only the copy is lost, not the verification.
async fn referrer_copy(
    client: &Client,
    reference: &Reference,
    digest: Digest,
    manifest: Vec<u8>,
    bundle_bytes: Vec<u8>,
) -> Option<SignatureCopy> {
    let v = serde_json::from_slice::<serde_json::Value>(&manifest).ok()?;
    if v["layers"].as_array()?.len() != 1 {
        return None;
    }
    let cd: Digest = v["config"]["digest"].as_str()?.parse().ok()?;
    let csize = v["config"]["size"].as_u64()?;
    if csize > simplesigning::MAX_PAYLOAD {
        return None;
    }
    let config = fetch_small_blob(client, reference, &cd, csize).await.ok()?;
    Some(SignatureCopy {
        tag: None,
        artifact_type: Some(bundle::MEDIA_TYPE),
        media_type: v["mediaType"]
            .as_str()
            .unwrap_or(media::OCI_MANIFEST)
            .to_string(),
        manifest,
        digest,
        blobs: vec![bundle_bytes, config],
    })
}

/// Looks up the cosign signature of `digest` in the reference's repository (the
/// `sha256-<hex>.sig` tag), fetches its payloads (each checked against its descriptor) and
/// checks them against `policy`.
async fn classic_signature(
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
    digest: &Digest,
    policy: &VerifyPolicy,
) -> Result<(Verified, Option<SignatureCopy>), Refusal> {
    let tag = cosign::signature_tag(digest);
    let sig_ref = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        tag.clone(),
    );
    let (manifest, sig_digest) = match fetch_manifest(client, &sig_ref, auth, None).await {
        Ok(x) => x,
        Err(OciError::NotFound { .. }) => {
            return Err(Refusal::Unsigned {
                looked: format!(
                    "tag {tag} in {}/{}",
                    reference.registry(),
                    reference.repository()
                ),
            })
        }
        Err(e) => {
            return Err(Refusal::BadSignatureManifest {
                manifest: None,
                reason: format!("cannot fetch {tag}: {e}"),
            })
        }
    };
    let layers =
        cosign::signature_layers(&manifest).map_err(|reason| Refusal::BadSignatureManifest {
            manifest: Some(sig_digest.clone()),
            reason,
        })?;
    // Fetch first (async), check after (sync): the check sees only bytes that matched
    // their descriptors.
    let mut fetched = std::collections::BTreeMap::new();
    for l in layers
        .iter()
        .filter(|l| l.size <= simplesigning::MAX_PAYLOAD)
    {
        let r = fetch_small_blob(client, reference, &l.digest, l.size).await;
        fetched.insert(l.digest.clone(), r);
    }
    let verified = verify::check_manifest(&manifest, &sig_digest, digest, policy, |l| {
        fetched
            .get(&l.digest)
            .cloned()
            .unwrap_or_else(|| Err("not fetched".into()))
    })?;
    // For the copy in the layout: the payload that verified, and the signature manifest's
    // config (a layout must hold every blob its manifests name). A config we cannot fetch
    // only costs the copy, not the verification.
    let parsed = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap_or_default();
    let every_layer = parsed["layers"].as_array().is_some_and(|ls| {
        ls.iter().all(|l| {
            l["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .is_some_and(|d| matches!(fetched.get(&d), Some(Ok(_))))
        })
    });
    let mut blobs: Vec<Vec<u8>> = fetched.into_values().filter_map(Result::ok).collect();
    let config = (|| {
        let d: Digest = parsed["config"]["digest"].as_str()?.parse().ok()?;
        Some((d, parsed["config"]["size"].as_u64()?))
    })();
    let mut complete = false;
    if let Some((d, size)) = config.filter(|(_, size)| *size <= simplesigning::MAX_PAYLOAD) {
        if let Ok(b) = fetch_small_blob(client, reference, &d, size).await {
            blobs.push(b);
            complete = true;
        }
    }
    if !complete || !every_layer {
        // Without its config the copy would be an incomplete image: keep none of it.
        return Ok((verified, None));
    }
    let media_type = parsed["mediaType"]
        .as_str()
        .unwrap_or(media::OCI_MANIFEST)
        .to_string();
    let copy = SignatureCopy {
        tag: Some(tag),
        artifact_type: None,
        manifest,
        digest: sig_digest,
        media_type,
        blobs,
    };
    Ok((verified, Some(copy)))
}

/// Fetches a small blob into memory, refusing more than `size` bytes and checking digest
/// and size.
async fn fetch_small_blob(
    client: &Client,
    reference: &Reference,
    d: &Digest,
    size: u64,
) -> Result<Vec<u8>, String> {
    let digest_str = d.to_string();
    let mut stream = client
        .pull_blob_stream(reference, digest_str.as_str())
        .await
        .map_err(|e| format!("cannot fetch {d}: {}", flatten(&e)))?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let bytes = chunk.map_err(|e| format!("cannot fetch {d}: {e}"))?;
        if (out.len() + bytes.len()) as u64 > size {
            return Err(format!(
                "{d}: the registry sent more than the {size} bytes the manifest gives"
            ));
        }
        out.extend_from_slice(&bytes);
    }
    d.check(&out, Some(size)).map_err(|r| format!("{d}: {r}"))?;
    Ok(out)
}

/// Fetches a manifest and checks its bytes: against the digest in the reference (by-digest
/// pulls and index entries), and against the size the index gave.
pub(super) async fn fetch_manifest(
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

/// A blob into the layout unless it is there already (checked), counted in `report`.
async fn get_blob(
    client: &Client,
    reference: &Reference,
    layout: &Layout,
    d: &Digest,
    size: u64,
    progress: &dyn Progress,
    report: &mut PullReport,
) -> Result<(), OciError> {
    if layout.has_blob(d, size) {
        progress.advance(size);
        report.reused += 1;
        return Ok(());
    }
    let f = fetch_blob(client, reference, layout, d, size, progress).await?;
    report.fetched += 1;
    report.bytes += f.transferred;
    if f.resumed_from > 0 {
        report.resumed += 1;
    }
    Ok(())
}

/// The current-thread runtime a registry request runs on (async stays inside the builder).
pub(super) fn runtime(reference: &str) -> Result<tokio::runtime::Runtime, OciError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OciError::Registry {
            reference: reference.to_string(),
            message: format!("cannot start the async runtime: {e}"),
        })
}

/// The registry client every request uses: HTTP or HTTPS, a 30 s connect bound and
/// `read_secs` for reads; the platform is chosen by us, from the raw index.
pub(super) fn client(
    plain_http: bool,
    read_secs: u64,
    reference: &str,
) -> Result<Client, OciError> {
    new_client(
        ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(read_secs)),
            ..Default::default()
        },
        reference,
    )
}

/// The registry client for `config`. reqwest panics when it finds no CA certificates on
/// the system (a minimal root without `ca-certificates`, even for plain HTTP): that is
/// an error naming the reference and the package, not a crash.
fn new_client(config: ClientConfig, reference: &str) -> Result<Client, OciError> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Client::new(config)));
    std::panic::set_hook(quiet);
    made.map_err(|p| OciError::Registry {
        reference: reference.to_string(),
        message: format!(
            "cannot make an HTTP client: {} (install ca-certificates)",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("it failed")
        ),
    })
}

pub(super) fn registry_error(reference: &str, e: OciDistributionError) -> OciError {
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
