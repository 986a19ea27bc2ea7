//! `terra create`: an OS image from a server.toml (`terra_builder::create`).

use std::path::PathBuf;

use clap::Args;
use terra_builder::create::{self, Options};
use terra_builder::oci::sign::ImageKey;
use terra_builder::oci::ImageRef;

use super::CliError;

/// Build an OS image from a server.toml with buildah, and push or sign it
///
/// server.toml (Terra OS's format) names the base image (`os`), Containerfile lines run
/// on it (`userland`: RUN, COPY/ADD relative to server.toml, ENV, WORKDIR, USER…),
/// components whose files go on top and the units they enable, the host name, root's SSH
/// keys, the network (systemd-networkd files, or netplan where the base has it), the
/// resolver and the image's init. Every error names the key and its line; nothing is
/// pushed unless every step succeeded. Needs root and Debian's buildah; storage is
/// buildah's (CONTAINERS_STORAGE_CONF). The same inputs give the same image
/// (SOURCE_DATE_EPOCH, else 0, is its time).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Write the image into an OCI layout (the tag defaults to `version`)
    #[arg(long, value_name = "oci:DIR[:TAG]")]
    output: Option<String>,
    /// Push the image to <repo>/<hostname>:<version>
    #[arg(long)]
    push: bool,
    /// Sign what was written and pushed (cosign's format, as `terra sign --key`)
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// Talk HTTP to registries (a local one)
    #[arg(long)]
    plain_http: bool,
    /// The recipe
    #[arg(value_name = "server.toml")]
    spec: PathBuf,
}

/// Runs `terra create`.
pub fn create(a: CreateArgs) -> Result<(), CliError> {
    let src = std::fs::read_to_string(&a.spec).map_err(|e| format!("{}: {e}", a.spec.display()))?;
    let spec = create::spec::parse(&a.spec, &src)?;
    if !rustix::process::geteuid().is_root() {
        return Err(
            "terra create needs root (buildah builds rootful, with chroot isolation)".into(),
        );
    }
    let output = match &a.output {
        Some(o) => match o.parse::<ImageRef>()? {
            l @ ImageRef::Layout { .. } => Some(l),
            _ => return Err(format!("--output {o}: expected an OCI layout, oci:DIR[:TAG]").into()),
        },
        None => None,
    };
    let sign_key = a.sign_key.as_deref().map(ImageKey::load).transpose()?;
    let timestamp = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970"))?,
        Err(_) => 0,
    };
    let opts = Options {
        output,
        push: a.push,
        sign_key,
        plain_http: a.plain_http,
        timestamp,
    };
    for w in create::create(&spec, &opts)? {
        match &w.signature {
            Some(s) => println!("terra: created {} ({}), signed: {s}", w.at, w.digest),
            None => println!("terra: created {} ({})", w.at, w.digest),
        }
    }
    Ok(())
}
