//! `terra extension add|remove|list`: extension images on a node's disk, over
//! `terra_builder::versions::extensions`.

use terra_builder::oci::{ApplyOptions, Progress, ResolveOptions};
use terra_builder::versions::extensions::{self, Added};
use terra_builder::versions::Target;

use super::images::{FetchArgs, REF_HELP};
use super::versions::{DiskArgs, Installed, COMMON};
use super::CliError;

/// Add, remove or list extension images (overlaid on /usr and /etc at boot)
///
/// An extension is an OCI image whose tree is /usr/… (and /etc/…) with one
/// /usr/lib/extension-release.d/extension-release.NAME saying which versions it fits
/// (systemd's sysext format: ID, VERSION_ID or SYSEXT_LEVEL, ARCHITECTURE against the
/// version's os-release). It is kept as a read-only subvolume beside the versions; from
/// the next boot stage0 overlays the ones that fit the chosen version on /usr and /etc,
/// read-only, and names those it skipped, with why, in boot.json (`version.extensions`).
#[derive(Debug, clap::Args)]
#[command(after_long_help = COMMON)]
pub struct ExtensionArgs {
    #[command(subcommand)]
    command: ExtensionCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ExtensionCommand {
    Add(AddArgs),
    Remove(RemoveArgs),
    List(ListArgs),
}

/// Fetch, check and keep an extension image; it applies from the next boot
///
/// Checked like `terra upgrade` checks a root (the signature under node.toml's
/// [signature] or --verify-key, every blob), unpacked from layer chains the disk shares
/// with its versions, and refused, with nothing kept, unless it holds one
/// extension-release.NAME and nothing outside /usr and /etc. An extension of the same NAME
/// is replaced (one that fits a version on the disk the new one does not fit stays for
/// it). Without REF, every [[extensions]] image of the node.toml on the disk.
///
/// REF may be a template holding {ID}, {VERSION_ID} and {ARCH} (e.g.
/// 'registry.example/ext/hello:{VERSION_ID}'): it is expanded from the default version's
/// os-release (ARCH: its ARCHITECTURE, else this machine's, as systemd names it: x86-64,
/// arm64…) and kept, so that `terra upgrade` fetches the image it names for a new version
/// that the extension does not fit before that version can boot (or refuses the upgrade,
/// naming the extension).
#[derive(Debug, clap::Args)]
#[command(after_long_help = REF_HELP)]
struct AddArgs {
    /// The image (see `terra image --help`)
    #[arg(value_name = "REF")]
    reference: Option<String>,
    #[command(flatten)]
    disk: DiskArgs,
    /// Leave out device nodes and fifos
    #[arg(long)]
    no_devices: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Forget an extension: every image of NAME, or those added from REF; gone at the next boot
#[derive(Debug, clap::Args)]
struct RemoveArgs {
    /// Its NAME or image reference
    #[arg(value_name = "NAME|REF")]
    what: String,
    #[command(flatten)]
    disk: DiskArgs,
}

/// List the extensions: name, fits the default version?, versions it is on, digest, image
#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    disk: DiskArgs,
}

/// Runs `terra extension`.
pub fn extension(a: ExtensionArgs, progress: &dyn Progress) -> Result<(), CliError> {
    match a.command {
        ExtensionCommand::Add(a) => add(a, progress),
        ExtensionCommand::Remove(a) => {
            for gone in extensions::remove(&a.disk.target(), &a.what)? {
                println!(
                    "terra: extension {} ({}) removed; the next boot is without it",
                    gone.name, gone.image
                );
            }
            Ok(())
        }
        ExtensionCommand::List(a) => {
            let listed = extensions::list(&a.disk.target())?;
            println!(
                "{:<16} {:<5} {:<12} {:<19}  IMAGE",
                "NAME", "FITS", "VERSIONS", "DIGEST"
            );
            for l in &listed {
                let e = &l.entry;
                let digest = e.digest.get(..19).unwrap_or(&e.digest);
                let fits = if l.fits.is_ok() { "yes" } else { "no" };
                let on = if l.versions.is_empty() {
                    "-".to_string()
                } else {
                    l.versions.join(",")
                };
                print!(
                    "{:<16} {fits:<5} {on:<12} {digest:<19}  {}",
                    e.name, e.image
                );
                if !e.template.is_empty() {
                    print!(" (template {})", e.template);
                }
                match &l.fits {
                    Ok(()) => println!(),
                    Err(why) => println!(" (not on {}: {why})", l.version),
                }
            }
            Ok(())
        }
    }
}

fn add(a: AddArgs, progress: &dyn Progress) -> Result<(), CliError> {
    let target = a.disk.target();
    let refs = match a.reference {
        Some(r) => vec![r],
        None => extensions::node_images(&target)?,
    };
    if refs.is_empty() {
        return Err("no REF, and the disk's node.toml lists no [[extensions]]".into());
    }
    let resolve = a.fetch.resolve()?;
    let apply = ApplyOptions {
        devices: !a.no_devices,
        ..Default::default()
    };
    add_all(&target, &refs, &resolve, &apply, progress)
}

/// After `terra install`: adds node.toml's `[[extensions]]`, checked with the keys the
/// install kept on the disk.
pub fn after_install(i: &Installed, progress: &dyn Progress) -> Result<(), CliError> {
    add_all(&i.target, &i.extensions, &i.resolve, &i.apply, progress)
}

/// Adds each of `refs` to `target`, saying what became of it.
pub fn add_all(
    target: &Target,
    refs: &[String],
    resolve: &ResolveOptions,
    apply: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<(), CliError> {
    for r in refs {
        match extensions::add(target, r, resolve, apply, progress)? {
            Added::Same(e) => println!("terra: extension {} is {r} already", e.name),
            Added::New {
                entry,
                replaced,
                fits,
            } => {
                let was = if replaced.is_empty() {
                    String::new()
                } else {
                    format!(" (replacing {})", replaced.join(", "))
                };
                let verified = if entry.verified_by.is_empty() {
                    String::new()
                } else {
                    format!(", verified by {}", entry.verified_by)
                };
                let from = if entry.template.is_empty() {
                    r.clone()
                } else {
                    format!("{} ({r})", entry.image)
                };
                println!(
                    "terra: extension {} from {from} ({}{verified}) added{was}; it applies from the next boot",
                    entry.name, entry.digest
                );
                if let Err(why) = fits {
                    println!(
                        "terra: note: {} does not fit the default version: {why}",
                        entry.name
                    );
                }
            }
        }
    }
    Ok(())
}
