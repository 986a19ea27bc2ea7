//! `terra upgrade|versions|bless|rollback|gc`: argument parsing over
//! `terra_builder::versions`. Part of the `terra` binary only (main.rs includes it).

use std::path::PathBuf;

use terra_builder::oci::Platform;
use terra_builder::versions::{self, Target, UpgradeSpec, Upgraded, DEFAULT_KEEP};
use terra_init::bless::Verdict;

/// A failure the binary prints after `terra: `.
pub type CliError = Box<dyn std::error::Error>;

const COMMON: &str = "\
Without --disk these act on the running system (the root device and booted version named
in /run/terra/boot.json); with --disk on a root group's disks, disk images or LUN files,
offline (repeat --disk for each member of a multi-disk group). They need root.";

pub const UPGRADE_USAGE: &str = "\
terra upgrade — add a root version from an OCI image; it boots tentatively

Usage: terra upgrade [--disk PATH]... REF [--name NAME] [--tries N] [--keep N]
                     [--verify-key PEM]...

Pulls and checks REF like `terra install` (every blob before anything is written), checks
free space, then makes a read-only btrfs subvolume NAME (default vN) from a snapshot of the
longest layer chain the disk already holds plus only the layers above it, writes the
node's /etc/fstab and hostname into it (from the node.toml `terra install` kept on the
disk), and marks it tentative: the next boots try it until the booted system confirms it
(`/run/terra/bless good`, run by systemd on its own) or its tries run out and the default
boots again. An image whose digest a version already has changes nothing. The booted
version, the default and the last good one are never touched; old versions beyond --keep
are removed. A killed upgrade leaves the old default bootable; run it again to finish.

Options:
      --disk PATH         the root group's disks (repeatable); default: the running system
      --name NAME         the version's subvolume name (default vN)
      --tries N           boots before an unconfirmed version is bad (default 3)
      --keep N            versions kept afterwards (default 3)
      --writable          leave the version writable (mounted rw when booted with `rw`)
      --platform P        platform picked from an index (default linux/amd64)
      --plain-http        talk HTTP to the registry
      --no-devices        leave out device nodes and fifos
      --verify-key PEM    refuse the image unless a cosign signature by this ECDSA P-256
                          public key names the digest REF resolves to (repeatable; checked
                          before anything is written, see `terra image --help`)
  -h, --help              print this help
";

pub const VERSIONS_USAGE: &str = "\
terra versions — the root versions on a disk and their states

Usage: terra versions [--disk PATH]... [--json]

States: default (boots when nothing else is chosen), tentative (boots while tries are
left, until confirmed), good (confirmed once; the last good one is the fallback), bad.
--json prints an array of objects with name, state, tries_left, image, digest, created,
exclusive_bytes, booted and reason.
";

pub const BLESS_USAGE: &str = "\
terra bless — confirm (good) or reject (bad) the tentative version

Usage: terra bless [--disk PATH]... [good|bad]

On the running system it acts on the booted version, like /run/terra/bless; offline on a
disk, on its tentative version. good makes it the default; bad makes the next boot run
the default.
";

pub const ROLLBACK_USAGE: &str = "\
terra rollback — make the last good version the default again

Usage: terra rollback [--disk PATH]...

A pending tentative version is dropped (bad).
";

pub const GC_USAGE: &str = "\
terra gc — remove old versions and the layer chains nothing stands on

Usage: terra gc [--disk PATH]... [--keep N]

Keeps N versions (default 3), removing bad ones first, then the oldest; never the
default, the booted one, the last good one or a tentative one.
";

fn args(e: lexopt::Error, cmd: &str) -> CliError {
    format!("{e} (see `terra {cmd} --help`)").into()
}

fn number(parser: &mut lexopt::Parser, cmd: &str, option: &str) -> Result<usize, CliError> {
    let v = parser.value().map_err(|e| args(e, cmd))?;
    v.to_string_lossy()
        .parse()
        .map_err(|_| format!("{cmd}: {option} {v:?}: expected a whole number").into())
}

/// `terra upgrade|versions|bless|rollback|gc`.
pub fn cmd(name: &str, parser: &mut lexopt::Parser) -> Result<(), CliError> {
    use lexopt::prelude::*;
    let usage = match name {
        "upgrade" => UPGRADE_USAGE,
        "versions" => VERSIONS_USAGE,
        "bless" => BLESS_USAGE,
        "rollback" => ROLLBACK_USAGE,
        _ => GC_USAGE,
    };
    let mut target = Target::default();
    let mut spec = UpgradeSpec::new("");
    let mut positional: Vec<String> = Vec::new();
    let mut json = false;
    let mut keep = DEFAULT_KEEP;
    let mut keys: Vec<PathBuf> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| args(e, name))? {
        match arg {
            Short('h') | Long("help") => {
                print!("{usage}\n{COMMON}\n");
                return Ok(());
            }
            Long("disk") => target
                .disks
                .push(PathBuf::from(parser.value().map_err(|e| args(e, name))?)),
            Long("json") if name == "versions" => json = true,
            Long("keep") if name == "upgrade" || name == "gc" => {
                keep = number(parser, name, "--keep")?;
                spec.keep = keep;
            }
            Long("name") if name == "upgrade" => {
                spec.name = Some(
                    parser
                        .value()
                        .map_err(|e| args(e, name))?
                        .to_string_lossy()
                        .into_owned(),
                )
            }
            Long("tries") if name == "upgrade" => {
                spec.tries = u32::try_from(number(parser, name, "--tries")?)
                    .map_err(|_| "upgrade: --tries is too large")?
            }
            Long("writable") if name == "upgrade" => spec.writable = true,
            Long("platform") if name == "upgrade" => {
                spec.resolve.platform = parser
                    .value()
                    .map_err(|e| args(e, name))?
                    .to_string_lossy()
                    .parse::<Platform>()?
            }
            Long("plain-http") if name == "upgrade" => spec.resolve.plain_http = true,
            Long("no-devices") if name == "upgrade" => spec.apply.devices = false,
            Long("verify-key") if name == "upgrade" => {
                keys.push(PathBuf::from(parser.value().map_err(|e| args(e, name))?))
            }
            Value(v) => positional.push(v.to_string_lossy().into_owned()),
            _ => return Err(args(arg.unexpected(), name)),
        }
    }
    match (name, positional.as_slice()) {
        ("upgrade", [reference]) => {
            spec.reference = reference.clone();
            if !keys.is_empty() {
                spec.resolve.verify = Some(terra_builder::oci::VerifyPolicy::from_files(&keys)?);
            }
            match versions::upgrade(&target, &spec)? {
                Upgraded::Same(v) => {
                    println!("terra: version {v} is {reference} already; nothing to do")
                }
                Upgraded::New {
                    name,
                    tries,
                    built,
                    removed,
                } => {
                    println!(
                        "terra: version {name} from {reference}: {} of {} layers from chains on the disk, {} unpacked ({} entries, {} bytes); tentative with {tries} tries",
                        built.reused, built.layers, built.unpack.layers, built.unpack.entries, built.unpack.bytes
                    );
                    if let Some(k) = &built.kernel {
                        println!(
                            "terra: version {name} carries kernel {}: its initramfs is {} bytes",
                            k.release, k.initramfs_bytes
                        );
                        if !k.left_out.is_empty() {
                            eprintln!(
                                "terra: warning: kernel {} has no module {} (left out of its initramfs)",
                                k.release,
                                k.left_out.join(", ")
                            );
                        }
                    }
                    if !removed.is_empty() {
                        println!("terra: removed old versions {}", removed.join(", "));
                    }
                }
            }
            Ok(())
        }
        ("versions", []) => {
            let list = versions::list(&target)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<12} {:<10} {:>5} {:>12}  {:<20}  IMAGE",
                    "NAME", "STATE", "TRIES", "EXCLUSIVE", "CREATED"
                );
                for v in &list {
                    println!(
                        "{:<12} {:<10} {:>5} {:>12}  {:<20}  {}{}",
                        format!("{}{}", v.name, if v.booted { "*" } else { "" }),
                        v.state,
                        v.tries_left,
                        v.exclusive_bytes.map_or("?".into(), |b| b.to_string()),
                        v.created,
                        v.image,
                        v.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        ("bless", rest) if rest.len() <= 1 => {
            let verdict = match rest.first().map(String::as_str) {
                None | Some("good") => Verdict::Good,
                Some("bad") => Verdict::Bad,
                Some(other) => return Err(format!("bless: {other:?}: expected good or bad").into()),
            };
            println!("terra: {}", versions::bless(&target, verdict)?);
            Ok(())
        }
        ("rollback", []) => {
            println!("terra: {}", versions::rollback(&target)?);
            Ok(())
        }
        ("gc", []) => {
            let removed = versions::gc(&target, keep)?;
            if removed.is_empty() {
                println!("terra: nothing to remove");
            } else {
                println!("terra: removed {}", removed.join(", "));
            }
            Ok(())
        }
        ("upgrade", _) => Err(format!("upgrade: expected one image reference\n\n{usage}").into()),
        _ => Err(format!("{name}: unexpected arguments {positional:?}\n\n{usage}").into()),
    }
}
