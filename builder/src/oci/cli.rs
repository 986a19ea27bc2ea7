//! `terra image pull|unpack` and `terra install`: argument parsing over `terra_builder::oci`
//! and `terra_builder::install`. Part of the `terra` binary only (main.rs includes it).

use std::path::PathBuf;

use terra_builder::install::{self, InstallSpec};
use terra_builder::oci::{
    self, ApplyOptions, ImageRef, OciError, Platform, ResolveOptions, Verified, VerifyPolicy,
};

/// A failure the binary prints after `terra: `.
pub type CliError = Box<dyn std::error::Error>;

pub const IMAGE_USAGE: &str = "\
terra image — OCI images

Usage:
  terra image pull REF --layout DIR [--platform OS/ARCH[/VARIANT]] [--plain-http]
                   [--verify-key PEM]...
  terra image unpack REF DIR [--platform OS/ARCH[/VARIANT]] [--plain-http] [--no-devices]
                   [--verify-key PEM]...

REF is oci:PATH[:TAG] (an OCI image layout), docker-archive:PATH (a `docker save`
tarball), or a registry reference host[:port]/repo[:tag|@sha256:…] (`alpine:3.20` means
docker.io/library/alpine:3.20). Credentials come from ~/.docker/config.json
($DOCKER_CONFIG/config.json).

pull copies one platform of a registry image into the OCI layout DIR (created when
missing), tagged with REF's tag. unpack applies the image's layers (whiteouts, hardlinks,
owners, modes, xattrs, device nodes when root) into a new directory renamed to DIR once
complete; an existing DIR is replaced atomically. Every blob's digest and size are checked.
With TERRA_DEBUG=1, what was accepted although unusual (a layer missing its final padding
or end-of-archive blocks, as Go's tar reader accepts) is printed on stderr.

With --verify-key, REF is resolved once and the digest it names (the manifest or index
as received) must carry a cosign signature by one of the keys (the sha256-<hex>.sig tag
in the registry repository, or in the layout); the platform's manifest and every blob are
then taken by digest from the verified bytes. An unsigned image, a bad signature, one for
another digest or by another key is refused before anything is written. pull copies the
signature into the layout, so `unpack oci:DIR:TAG --verify-key` works offline after it.

Options:
      --layout DIR        (pull) the OCI layout to write
      --platform P        platform picked from an index (default linux/amd64)
      --plain-http        talk HTTP to the registry (a local one)
      --no-devices        (unpack) leave out device nodes and fifos
      --verify-key PEM    require a cosign signature by this ECDSA P-256 public key
                          (PKIX PEM, e.g. cosign.pub); repeatable, any one suffices
  -h, --help              print this help
";

pub const INSTALL_USAGE: &str = "\
terra install — make node.toml's disk groups and install an OCI image as the root

Usage: terra install NODE.TOML [--image REF] [--disk PATH]... [--force] [--verify-key PEM]...
                     [--kernel FILE] [--cmdline ARGS]

For each [[groups]] of NODE.TOML: mkfs.btrfs with its label and type (single, raid0,
raid1, raid5, raid10) over its disks, its subvolumes, and for the group labelled `os` (or
the first) the image unpacked into the root subvolume (`os`, or [boot] version, or the
subvolume whose path is /) with /etc/fstab (LABEL=<label> <path> btrfs subvol=/<name> 0 0)
and /etc/hostname. Disks are block devices or image files, created at `size` MiB when
missing. A disk holding a filesystem or partition table is refused unless --force. Needs
root.

With `mbr = true` on the root group, its first disk boots on its own under BIOS and UEFI:
a GPT with a BIOS boot partition, a 256 MiB FAT ESP (PARTLABEL terra-esp) and btrfs on the
rest; GRUB for both firmwares; the default version's kernel and a Terra initramfs for it
on the ESP (a version that carries no kernel boots the base kernel, --kernel).

Options:
      --image REF         the image (default: node.toml's `image`); see `terra image --help`
      --disk PATH         replaces node.toml's disks in order (repeatable); with no
                          [[groups]], makes one group `os` of type single
      --force             overwrite disks that hold data
      --uuid UUID         filesystem UUID of the root group
      --platform P        platform picked from an index (default linux/amd64)
      --plain-http        talk HTTP to the registry
      --no-devices        leave out device nodes and fifos
      --writable          leave the first version writable (booted rw with `rw`)
      --verify-key PEM    refuse the image unless a cosign signature by this key names
                          its digest (repeatable; see `terra image --help`)
      --kernel FILE       (mbr = true) the base kernel, its modules in /lib/modules/<release>
                          (default: the host's newest /boot/vmlinuz-* with modules)
      --cmdline ARGS      (mbr = true) extra kernel arguments of the disk's GRUB entry
  -h, --help              print this help
";

fn args(e: lexopt::Error, cmd: &str) -> CliError {
    format!("{e} (see `terra {cmd} --help`)").into()
}

fn platform(v: std::ffi::OsString) -> Result<Platform, CliError> {
    Ok(v.to_string_lossy().parse::<Platform>()?)
}

/// The policy of the `--verify-key` files given, if any.
fn policy(keys: &[PathBuf]) -> Result<Option<VerifyPolicy>, CliError> {
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
pub fn cmd_image(parser: &mut lexopt::Parser) -> Result<(), CliError> {
    use lexopt::prelude::*;
    let sub = match parser.next().map_err(|e| args(e, "image"))? {
        Some(Short('h') | Long("help")) => {
            print!("{IMAGE_USAGE}");
            return Ok(());
        }
        Some(Value(v)) => v.to_string_lossy().into_owned(),
        Some(other) => return Err(args(other.unexpected(), "image")),
        None => {
            return Err(
                format!("image: missing subcommand (pull or unpack)\n\n{IMAGE_USAGE}").into(),
            )
        }
    };
    let mut positional: Vec<String> = Vec::new();
    let mut layout: Option<PathBuf> = None;
    let mut resolve = ResolveOptions::default();
    let mut apply = ApplyOptions::default();
    let mut keys: Vec<PathBuf> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| args(e, "image"))? {
        match arg {
            Short('h') | Long("help") => {
                print!("{IMAGE_USAGE}");
                return Ok(());
            }
            Long("layout") => layout = Some(parser.value().map_err(|e| args(e, "image"))?.into()),
            Long("platform") => {
                resolve.platform = platform(parser.value().map_err(|e| args(e, "image"))?)?
            }
            Long("plain-http") => resolve.plain_http = true,
            Long("no-devices") => apply.devices = false,
            Long("verify-key") => keys.push(parser.value().map_err(|e| args(e, "image"))?.into()),
            Value(v) => positional.push(v.to_string_lossy().into_owned()),
            _ => return Err(args(arg.unexpected(), "image")),
        }
    }
    resolve.verify = policy(&keys)?;
    match (sub.as_str(), positional.as_slice()) {
        ("pull", [reference]) => {
            let layout = layout.ok_or("image pull: missing --layout DIR")?;
            let r: ImageRef = reference.parse()?;
            let ImageRef::Registry(reg) = &r else {
                return Err(OciError::Reference {
                    reference: reference.clone(),
                    reason: "pull takes a registry reference (unpack reads oci: and docker-archive: directly)".into(),
                }
                .into());
            };
            let report = oci::pull(
                reg,
                &layout,
                &oci::PullOptions {
                    platform: resolve.platform,
                    plain_http: resolve.plain_http,
                    docker_config: None,
                    verify: resolve.verify,
                },
            )?;
            if let Some(v) = &report.verified {
                print_verified(v);
            }
            println!(
                "terra: pulled {} ({}) into {}{}: {} blobs fetched ({} bytes), {} already there",
                reg.whole(),
                report.manifest_digest,
                layout.display(),
                report
                    .tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                report.fetched,
                report.bytes,
                report.reused
            );
            Ok(())
        }
        ("unpack", [reference, dir]) => {
            let r: ImageRef = reference.parse()?;
            let image = oci::resolve(&r, &resolve)?;
            if let Some(v) = &image.verified {
                print_verified(v);
            }
            let report = oci::unpack(&image, std::path::Path::new(dir), &apply)?;
            println!(
                "terra: unpacked {} into {}: {} layers, {} entries, {} whiteouts, {} bytes{}",
                image.reference,
                dir,
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
            debug_notes(&report.notes);
            Ok(())
        }
        ("pull", _) => Err("usage: terra image pull REF --layout DIR".into()),
        ("unpack", _) => Err("usage: terra image unpack REF DIR".into()),
        (other, _) => Err(format!(
            "image: unknown subcommand {other:?} (pull or unpack; see `terra image --help`)"
        )
        .into()),
    }
}

/// What an unpack accepted although unusual, on stderr when `TERRA_DEBUG` is set.
fn debug_notes(notes: &[String]) {
    if std::env::var_os("TERRA_DEBUG").is_some_and(|v| !v.is_empty()) {
        for n in notes {
            eprintln!("terra: debug: {n}");
        }
    }
}

/// `terra install …`
pub fn cmd_install(parser: &mut lexopt::Parser) -> Result<(), CliError> {
    use lexopt::prelude::*;
    let mut config: Option<PathBuf> = None;
    let mut spec = InstallSpec::new(std::path::Path::new(""));
    let mut keys: Vec<PathBuf> = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| args(e, "install"))? {
        match arg {
            Short('h') | Long("help") => {
                print!("{INSTALL_USAGE}");
                return Ok(());
            }
            Long("image") => {
                spec.image = Some(
                    parser
                        .value()
                        .map_err(|e| args(e, "install"))?
                        .to_string_lossy()
                        .into_owned(),
                )
            }
            Long("disk") => spec
                .disks
                .push(parser.value().map_err(|e| args(e, "install"))?.into()),
            Long("force") => spec.force = true,
            Long("uuid") => {
                spec.root_uuid = Some(
                    parser
                        .value()
                        .map_err(|e| args(e, "install"))?
                        .to_string_lossy()
                        .into_owned(),
                )
            }
            Long("platform") => {
                spec.platform = platform(parser.value().map_err(|e| args(e, "install"))?)?
            }
            Long("plain-http") => spec.plain_http = true,
            Long("no-devices") => spec.apply.devices = false,
            Long("writable") => spec.writable = true,
            Long("verify-key") => keys.push(parser.value().map_err(|e| args(e, "install"))?.into()),
            Long("kernel") => {
                spec.kernel = Some(parser.value().map_err(|e| args(e, "install"))?.into())
            }
            Long("cmdline") => {
                let v = parser.value().map_err(|e| args(e, "install"))?;
                spec.cmdline = [spec.cmdline.as_str(), &v.to_string_lossy()]
                    .join(" ")
                    .trim()
                    .to_string();
            }
            Value(v) if config.is_none() => config = Some(v.into()),
            _ => return Err(args(arg.unexpected(), "install")),
        }
    }
    spec.config = config.ok_or("install: missing NODE.TOML (see `terra install --help`)")?;
    spec.verify = policy(&keys)?;
    let report = install::install(&spec)?;
    debug_notes(&report.unpack.notes);
    for (label, profile, disks) in &report.groups {
        println!(
            "terra: group {label} ({profile}): {}",
            disks
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "terra: installed {} into subvolume {} of LABEL={}: {} layers, {} entries, {} bytes",
        report.image,
        report.root_subvolume,
        report.root_label,
        report.unpack.layers,
        report.unpack.entries,
        report.unpack.bytes
    );
    Ok(())
}
