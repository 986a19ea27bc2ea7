//! `terra image pull|unpack`, over `terra_builder::oci`, and the image options every
//! command that takes an image shares ([`FetchArgs`]).

use std::path::PathBuf;

use terra_builder::oci::{
    self, ApplyOptions, Image, ImageRef, OciError, Platform, Progress, ResolveOptions, Verified,
    VerifyPolicy,
};

use super::CliError;

/// What REF may be, for every command that takes an image.
pub(super) const REF_HELP: &str = "\
REF is oci:PATH[:TAG] (an OCI image layout), docker-archive:PATH (a `docker save` tarball), \
or a registry reference host[:port]/repo[:tag|@sha256:…] (`alpine:3.20` means \
docker.io/library/alpine:3.20). Credentials come from ~/.docker/config.json \
($DOCKER_CONFIG/config.json).";

/// What `--verify-key` checks, for `terra image pull|unpack`.
const VERIFY_HELP: &str = "\
With --verify-key, REF is resolved once and the digest it names (the manifest or index as \
received) must carry a cosign signature by one of the keys (the sha256-<hex>.sig tag in the \
registry repository, or in the layout); the platform's manifest and every blob are then \
taken by digest from the verified bytes. An unsigned image, a bad signature, one for another \
digest or by another key is refused before anything is written. pull copies the signature \
into the layout, so `unpack oci:DIR:TAG --verify-key` works offline after it.";

/// Pull and unpack OCI images
///
/// Every blob's digest and size are checked. With TERRA_DEBUG=1, what was accepted although
/// unusual (a layer missing its final padding or end-of-archive blocks, as Go's tar reader
/// accepts) is printed on stderr.
#[derive(Debug, clap::Args)]
#[command(after_long_help = VERIFY_HELP)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    Pull(PullArgs),
    Unpack(UnpackArgs),
}

/// How an image is fetched and checked: the options `image pull`, `image unpack`,
/// `install` and `upgrade` share.
#[derive(Debug, Default, clap::Args)]
pub struct FetchArgs {
    /// Platform picked from an index (default linux/amd64)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
    /// Talk HTTP to the registry (a local one)
    #[arg(long)]
    pub plain_http: bool,
    /// Require a cosign signature by this ECDSA P-256 public key (PKIX PEM, e.g.
    /// cosign.pub) on the digest REF resolves to; repeatable, any one suffices
    ///
    /// Checked before anything is written (see `terra image --help`).
    #[arg(long = "verify-key", value_name = "PEM")]
    pub verify_keys: Vec<PathBuf>,
}

impl FetchArgs {
    /// The resolve options these ask for.
    pub fn resolve(&self) -> Result<ResolveOptions, CliError> {
        Ok(ResolveOptions {
            platform: self.platform.clone().unwrap_or_default(),
            plain_http: self.plain_http,
            verify: policy(&self.verify_keys)?,
            ..Default::default()
        })
    }
}

/// Copy one platform of a registry image into an OCI layout
///
/// DIR is created when missing; the image is tagged there with REF's tag.
#[derive(Debug, clap::Args)]
#[command(after_long_help = format!("{REF_HELP}\n\n{VERIFY_HELP}"))]
struct PullArgs {
    /// The registry image
    #[arg(value_name = "REF")]
    reference: String,
    /// The OCI layout to write
    #[arg(long, value_name = "DIR")]
    layout: PathBuf,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Apply an image's layers into a directory
///
/// Whiteouts, hardlinks, owners, modes, xattrs and device nodes (when root) are applied
/// into a new directory renamed to DIR once complete; an existing DIR is replaced
/// atomically.
#[derive(Debug, clap::Args)]
#[command(after_long_help = format!("{REF_HELP}\n\n{VERIFY_HELP}"))]
struct UnpackArgs {
    /// The image
    #[arg(value_name = "REF")]
    reference: String,
    /// The directory to make
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Leave out device nodes and fifos
    #[arg(long)]
    no_devices: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// The policy of the `--verify-key` files given, if any.
pub(super) fn policy(keys: &[PathBuf]) -> Result<Option<VerifyPolicy>, CliError> {
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(VerifyPolicy::from_files(keys)?))
}

fn print_verified(v: &Verified) {
    println!(
        "terra: signature verified: {} signed by {} ({})",
        v.digest, v.key, v.key_fingerprint
    );
}

/// `terra image …`
pub fn image(args: ImageArgs, progress: &dyn Progress) -> Result<(), CliError> {
    match args.command {
        ImageCommand::Pull(a) => {
            let resolve = a.fetch.resolve()?;
            let r: ImageRef = a.reference.parse()?;
            let ImageRef::Registry(reg) = &r else {
                return Err(OciError::Reference {
                    reference: a.reference.clone(),
                    reason: "pull takes a registry reference (unpack reads oci: and docker-archive: directly)".into(),
                }
                .into());
            };
            let report = oci::pull_with(
                reg,
                &a.layout,
                &oci::PullOptions {
                    platform: resolve.platform,
                    plain_http: resolve.plain_http,
                    verify: resolve.verify,
                    ..Default::default()
                },
                progress,
            )?;
            if let Some(v) = &report.verified {
                print_verified(v);
            }
            println!(
                "terra: pulled {} ({}) into {}{}: {} blobs fetched ({} bytes{}), {} already there",
                reg.whole(),
                report.manifest_digest,
                a.layout.display(),
                report
                    .tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                report.fetched,
                report.bytes,
                match report.resumed {
                    0 => String::new(),
                    n => format!("; {n} resumed where an earlier pull stopped"),
                },
                report.reused
            );
            Ok(())
        }
        ImageCommand::Unpack(a) => {
            let resolve = a.fetch.resolve()?;
            let apply = ApplyOptions {
                devices: !a.no_devices,
                ..ApplyOptions::default()
            };
            let r: ImageRef = a.reference.parse()?;
            let image = oci::resolve_with(&r, &resolve, progress)?;
            if let Some(v) = &image.verified {
                print_verified(v);
            }
            let report = oci::unpack_with(&image, &a.dir, &apply, progress)?;
            println!(
                "terra: unpacked {} into {}: {} layers, {} entries, {} whiteouts, {} bytes{}",
                image.reference,
                a.dir.display(),
                report.layers,
                report.entries,
                report.whiteouts,
                report.bytes,
                if report.skipped_devices > 0 {
                    format!(", {} device nodes/fifos left out", report.skipped_devices)
                } else {
                    String::new()
                }
            );
            skipped_xattrs(&report.skipped_xattrs);
            debug_notes(&report.notes);
            Ok(())
        }
    }
}

/// Says which xattrs an unpack left out (the first few, and how many).
pub(super) fn skipped_xattrs(skipped: &[String]) {
    const SHOWN: usize = 10;
    for s in skipped.iter().take(SHOWN) {
        eprintln!("terra: warning: xattr left out: {s}");
    }
    if skipped.len() > SHOWN {
        eprintln!(
            "terra: warning: {} more xattrs left out",
            skipped.len() - SHOWN
        );
    }
}

/// Resolves `reference` as `fetch` says, printing the signature `--verify-key` checked.
pub fn resolve_verified(
    reference: &str,
    fetch: &FetchArgs,
    progress: &dyn Progress,
) -> Result<Image, CliError> {
    let resolve = fetch.resolve()?;
    let r: ImageRef = reference.parse()?;
    let image = oci::resolve_with(&r, &resolve, progress)?;
    if let Some(v) = &image.verified {
        print_verified(v);
    }
    Ok(image)
}

/// What an unpack accepted although unusual, on stderr when `TERRA_DEBUG` is set.
pub(super) fn debug_notes(notes: &[String]) {
    if std::env::var_os("TERRA_DEBUG").is_some_and(|v| !v.is_empty()) {
        for n in notes {
            eprintln!("terra: debug: {n}");
        }
    }
}
