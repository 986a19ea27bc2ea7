//! `terra key generate` and `terra sign`: signing images for `--verify-key` and node.toml
//! `[signature]` without openssl or skopeo (`terra_builder::oci::sign`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use terra_builder::oci::sign::{self, ImageKey};
use terra_builder::oci::ImageRef;

use super::CliError;

/// Make and manage image signing keys
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    Generate(GenerateArgs),
}

/// Make an ECDSA P-256 key pair: PREFIX.key (PKCS#8 PEM, mode 0600) signs with `terra
/// sign --key`, PREFIX.pub (PKIX PEM) verifies with `--verify-key` and node.toml
/// [signature]
///
/// Neither file may exist: a key is never overwritten.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where the pair goes: PREFIX.key and PREFIX.pub
    #[arg(long, value_name = "PREFIX", default_value = "terra")]
    output: PathBuf,
}

/// Sign an image by digest with cosign's key-based signatures
///
/// REF is resolved once; the digest it names (the manifest or index as stored) is signed
/// as cosign does, in two formats by default: classic (a simple-signing payload and its
/// ECDSA P-256 signature in the manifest tagged sha256-<hex>.sig beside the image) and
/// cosign v3's Sigstore bundle (a DSSE-signed in-toto statement attached as an OCI 1.1
/// referrer: listed in an OCI layout's index.json, or pushed to the registry and listed in
/// its sha256-<hex> referrers tag). Signing again (another key) adds a signature beside
/// the first. What `terra install`, `upgrade` and `image pull` check with --verify-key, and
/// cosign verifies.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The private key: PKCS#8 or SEC1 PEM (e.g. from `terra key generate`), or cosign's
    /// encrypted key (`cosign generate-key-pair`; the password from COSIGN_PASSWORD, else
    /// asked at the terminal)
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Which signature formats to write
    #[arg(long, value_enum, default_value_t = Format::Both)]
    format: Format,
    /// Talk HTTP to the registry (a local one)
    #[arg(long)]
    plain_http: bool,
    /// The image: oci:PATH[:TAG] or a registry reference
    #[arg(value_name = "REF")]
    reference: String,
}

/// `terra sign --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// The sha256-<hex>.sig manifest (cosign before v3, containers/image)
    Classic,
    /// The Sigstore bundle v0.3 referrer (cosign v3)
    Bundle,
    /// Both
    Both,
}

/// Runs `terra key …`.
pub fn key(a: KeyArgs) -> Result<(), CliError> {
    match a.command {
        KeyCommand::Generate(g) => generate(g),
    }
}

fn generate(a: GenerateArgs) -> Result<(), CliError> {
    let with = |ext: &str| {
        let mut p = a.output.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private_path, public_path) = (with(".key"), with(".pub"));
    for p in [&private_path, &public_path] {
        if p.exists() {
            return Err(format!("{}: exists; a key is never overwritten", p.display()).into());
        }
    }
    let (private, public) = sign::generate()?;
    // The private key is created 0600 from the start, never readable by others.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private_path)
        .map_err(|e| format!("{}: {e}", private_path.display()))?;
    f.write_all(private.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", private_path.display()))?;
    std::fs::write(&public_path, public).map_err(|e| format!("{}: {e}", public_path.display()))?;
    println!(
        "terra: wrote {} (private, 0600) and {} (public: --verify-key, node.toml [signature])",
        private_path.display(),
        public_path.display()
    );
    Ok(())
}

/// Runs `terra sign`.
pub fn sign(a: SignArgs) -> Result<(), CliError> {
    let key = ImageKey::load(&a.key)?;
    let r: ImageRef = a.reference.parse()?;
    let formats = match a.format {
        Format::Classic => sign::Formats::Classic,
        Format::Bundle => sign::Formats::Bundle,
        Format::Both => sign::Formats::Both,
    };
    let signed = match &r {
        ImageRef::Layout { path, tag } => {
            let layout = terra_builder::oci::layout::Layout::open(path)?;
            sign::sign_layout(&layout, tag.as_deref(), &a.reference, &key, formats)?
        }
        ImageRef::Registry(reference) => {
            sign::sign_registry(reference, a.plain_http, &key, formats)?
        }
        ImageRef::DockerArchive { .. } => {
            return Err(format!(
                "{}: a docker archive has no digest to sign; load it into a registry or a \
                 layout first",
                a.reference
            )
            .into())
        }
    };
    println!(
        "terra: signed {} ({}) with {}: {}",
        a.reference,
        signed.digest,
        a.key.display(),
        signed.locations()
    );
    Ok(())
}
