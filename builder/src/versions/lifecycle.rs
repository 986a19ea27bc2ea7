//! The lifecycle of versions on a disk: `terra upgrade` adds a tentative one, `collect`
//! (after each upgrade, and `terra gc`) removes old ones, `terra versions` lists them,
//! `terra bless` confirms or rejects, `terra rollback` goes back to the last good one.

use std::fs;
use std::path::Path;
use std::process::Command;

use terra_init::bootstate::{self, BootState, Status, DEFAULT_TRIES, LAYERS_DIR, STATE_DIR};

use super::build::{build_version, Built, NewVersion};
use super::crash::crash_point;
use super::disk::subvolume_delete;
use super::keys::{combine_policy, disk_keys};
use super::top::{follow_esp, open, pending_marker, settled, sweep, Top};
use super::{io_err, log_line, Target, VersionsError};
use crate::bootdisk;
use crate::bootfiles::BootInitramfs;
use crate::oci::{self, ApplyOptions, ImageRef, Progress, ResolveOptions, Silent};
use crate::tool;

/// `terra upgrade` options.
#[derive(Debug, Clone)]
pub struct UpgradeSpec {
    /// The image reference.
    pub reference: String,
    /// The new version's name (default `vN`).
    pub name: Option<String>,
    /// Boots it gets before it must be confirmed.
    pub tries: u32,
    /// Versions kept by the collection after the upgrade.
    pub keep: usize,
    /// Resolution (platform, plain HTTP).
    pub resolve: ResolveOptions,
    /// Layer application.
    pub apply: ApplyOptions,
    /// Leave the version writable.
    pub writable: bool,
}

impl UpgradeSpec {
    /// Defaults for `reference`.
    pub fn new(reference: &str) -> Self {
        UpgradeSpec {
            reference: reference.to_string(),
            name: None,
            tries: DEFAULT_TRIES,
            keep: DEFAULT_KEEP,
            resolve: ResolveOptions::default(),
            apply: ApplyOptions::default(),
            writable: false,
        }
    }
}

/// Versions kept unless `--keep` says otherwise.
pub const DEFAULT_KEEP: usize = 3;

/// What an upgrade did.
#[derive(Debug, Clone)]
pub enum Upgraded {
    /// A version with the same manifest digest is there already.
    Same(String),
    /// A new tentative version.
    New {
        /// Its name.
        name: String,
        /// Tries it has.
        tries: u32,
        /// The build.
        built: Built,
        /// Versions removed by the collection.
        removed: Vec<String>,
    },
}

/// `terra upgrade`: pulls and checks the image (before anything is written), then makes
/// a new tentative version and collects old ones.
pub fn upgrade(target: &Target, spec: &UpgradeSpec) -> Result<Upgraded, VersionsError> {
    upgrade_with(target, spec, &Silent)
}

/// [`upgrade`], telling `progress` of the pull of a registry image and of the layers
/// unpacked.
pub fn upgrade_with(
    target: &Target,
    spec: &UpgradeSpec,
    progress: &dyn Progress,
) -> Result<Upgraded, VersionsError> {
    let r: ImageRef = spec.reference.parse()?;
    let top = open(target)?;
    let mut state = top.state()?;
    let node = top.node()?;
    // A disk that boots from its ESP gets the ESP brought to each new default (mtools).
    if top
        .path
        .join(STATE_DIR)
        .join(terra_init::esp::ESP_FILE)
        .exists()
    {
        tool::check(&bootdisk::esp_needs())?;
    }
    // The keys the node was installed with check every upgrade, with --verify-key's.
    let mut resolve = spec.resolve.clone();
    let kept = disk_keys(&top.path).map_err(|e| VersionsError::Refused(e.to_string()))?;
    resolve.verify = combine_policy(
        spec.resolve.verify.as_ref(),
        kept,
        node.signature.require,
        &top.disk,
    )
    .map_err(VersionsError::Refused)?;
    let image = oci::resolve_with(&r, &resolve, progress)?;
    if let Some(b) = top.booted.as_deref() {
        if state.get(b).is_some_and(|v| v.status == Status::Tentative) {
            return Err(VersionsError::Refused(format!(
                "the running version {b} is tentative: confirm it (`terra bless good`) or \
                 reject it (`terra bless bad`) before the next upgrade"
            )));
        }
    }
    let digest = image
        .manifest_digest
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    if let Some(same) = state
        .versions
        .iter()
        .find(|v| !digest.is_empty() && v.digest == digest && v.status != Status::Bad)
    {
        return Ok(Upgraded::Same(same.name.clone()));
    }
    let name = match &spec.name {
        Some(n) if !bootstate::valid_name(n) => {
            return Err(VersionsError::Refused(format!(
                "--name {n:?}: a version name is a plain subvolume name"
            )))
        }
        Some(n) if state.get(n).is_some() => {
            return Err(VersionsError::Refused(format!(
                "{}: a version named {n:?} exists",
                top.disk
            )))
        }
        Some(n) => n.clone(),
        None => next_name(&state, &top.path),
    };
    let dest = top.path.join(&name);
    if dest.exists() {
        return Err(VersionsError::Refused(format!(
            "{}: {} exists and is not a version; choose another --name",
            top.disk,
            dest.display()
        )));
    }
    if let Some(pin) = &node.boot.version {
        log_line(&format!(
            "warning: the node's node.toml sets [boot] version = {pin:?}: stage0 boots that \
             version only (a pin); remove it there for upgrades to boot"
        ));
    }
    let boot = BootInitramfs::for_disk(&top.path.join(STATE_DIR)).map_err(|err| {
        VersionsError::Kernel {
            version: name.clone(),
            err,
        }
    })?;
    let (version, built) = build_version(
        &top.path,
        &NewVersion {
            name: &name,
            image: &image,
            reference: &spec.reference,
            node: &node,
            label: &top.label,
            apply: &spec.apply,
            writable: spec.writable,
            verify: true,
            boot: Some(&boot),
            progress,
        },
    )?;
    crash_point("built");
    state.add_tentative(version, spec.tries)?;
    top.store(&mut state)?;
    settled(&top.path, &name);
    crash_point("stored");
    let removed = collect(&top, &mut state, spec.keep)?;
    Ok(Upgraded::New {
        name,
        tries: spec.tries.max(1),
        built,
        removed,
    })
}

/// `v<N>`, N one more than the highest such name so far (at least 2: the first install
/// is `os` or its own name), skipping names taken on the disk.
fn next_name(state: &BootState, top: &Path) -> String {
    let highest = state
        .versions
        .iter()
        .filter_map(|v| v.name.strip_prefix('v')?.parse::<u64>().ok())
        .max()
        .unwrap_or(1);
    (highest + 1..)
        .map(|n| format!("v{n}"))
        .find(|n| state.get(n).is_none() && !top.join(n).exists())
        .unwrap_or_else(|| "v".into())
}

/// Removes versions beyond `keep` (never the default, the booted one, the last good or
/// the tentative one) and the chain subvolumes no remaining version stands on. Each
/// version gets a `pending-` marker, is forgotten by the stored state, then deleted: a
/// kill in between leaves a subvolume the next sweep removes.
pub fn collect(
    top: &Top,
    state: &mut BootState,
    keep: usize,
) -> Result<Vec<String>, VersionsError> {
    let doomed = state.collectable(keep.max(1), top.booted.as_deref());
    for name in &doomed {
        let marker = pending_marker(&top.path, name);
        fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&marker))?;
        state.remove(name);
    }
    if !doomed.is_empty() {
        top.store(state)?;
        crash_point("forgotten");
    }
    sweep(&top.path)?;
    // Chains: keep every prefix of a remaining version's chains.
    let wanted: std::collections::HashSet<String> = state
        .versions
        .iter()
        .flat_map(|v| v.chains.iter().map(|c| c.replace(':', "-")))
        .collect();
    let layers = top.path.join(STATE_DIR).join(LAYERS_DIR);
    if layers.is_dir() {
        for entry in fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            if !wanted.contains(entry.file_name().to_string_lossy().as_ref()) {
                subvolume_delete(&entry.path())?;
            }
        }
    }
    Ok(doomed)
}

/// One version as `terra versions` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    /// Subvolume name.
    pub name: String,
    /// `default`, `tentative`, `good` or `bad`.
    pub state: &'static str,
    /// Boots left (tentative).
    pub tries_left: u32,
    /// Image reference.
    pub image: String,
    /// Manifest digest.
    pub digest: String,
    /// When it was made.
    pub created: String,
    /// Bytes only this version holds (btrfs exclusive bytes of its subvolume).
    pub exclusive_bytes: Option<u64>,
    /// Whether the running system booted it.
    pub booted: bool,
    /// Why it is bad.
    pub reason: Option<String>,
    /// The key whose signature the image carried, when `--verify-key` checked it.
    pub verified_by: Option<String>,
    /// The release of the kernel it carries.
    pub kernel: Option<String>,
    /// Why that kernel is no longer started (it boots on the machine's).
    pub kernel_failed: Option<String>,
    /// The health check that rejected it: its name, result and the end of its output.
    pub health: Option<terra_init::bootstate::HealthFailure>,
}

/// `terra versions`.
pub fn list(target: &Target) -> Result<Vec<VersionInfo>, VersionsError> {
    let top = open(target)?;
    let state = top.state()?;
    Ok(state
        .versions
        .iter()
        .map(|v| VersionInfo {
            name: v.name.clone(),
            state: state.shown_state(v),
            tries_left: v.tries_left,
            image: v.image.clone(),
            digest: v.digest.clone(),
            created: v.created.clone(),
            exclusive_bytes: exclusive_bytes(&top.path.join(&v.name)),
            booted: top.booted.as_deref() == Some(v.name.as_str()),
            reason: v.reason.clone(),
            verified_by: v.verified_by.clone(),
            kernel: v.kernel.clone(),
            kernel_failed: v.kernel_failed.clone(),
            health: v.health.clone(),
        })
        .collect())
}

/// Exclusive bytes of the tree at `path`, from `btrfs filesystem du` (no quotas needed).
pub fn exclusive_bytes(path: &Path) -> Option<u64> {
    let out = tool::run(
        Command::new("btrfs")
            .args(["filesystem", "du", "-s", "--raw"])
            .arg(path),
        "btrfs-progs",
    )
    .ok()?;
    out.lines().nth(1)?.split_whitespace().nth(1)?.parse().ok()
}

/// `terra bless` on a disk: confirms or rejects the tentative version.
pub fn bless(
    target: &Target,
    verdict: terra_init::bless::Verdict,
) -> Result<String, VersionsError> {
    use terra_init::bless::Verdict;
    if target.disks.is_empty() {
        return terra_init::bless::bless(verdict).map_err(VersionsError::Refused);
    }
    let top = open(target)?;
    let mut state = top.state()?;
    let tentative = state
        .tentative()
        .map(|t| t.name.clone())
        .ok_or_else(|| VersionsError::Refused(format!("{}: no tentative version", top.disk)))?;
    let msg = match verdict {
        Verdict::Good => {
            state.confirm(&tentative)?;
            format!("version {tentative} confirmed: it is the default now")
        }
        Verdict::Bad => {
            state.reject(Some(&tentative), "rejected by terra bless bad")?;
            format!(
                "version {tentative} rejected; the default stays {}",
                state.default
            )
        }
    };
    top.store(&mut state)?;
    let note = follow_esp(&top, &state.default);
    Ok(msg + &note)
}

/// `terra rollback`: the last good version becomes the default.
pub fn rollback(target: &Target) -> Result<String, VersionsError> {
    let top = open(target)?;
    let mut state = top.state()?;
    let previous = state.default.clone();
    let to = state.rollback()?;
    top.store(&mut state)?;
    let note = follow_esp(&top, &state.default);
    Ok(format!("default is now {to} (was {previous}){note}"))
}

/// `terra gc`.
pub fn gc(target: &Target, keep: usize) -> Result<Vec<String>, VersionsError> {
    let top = open(target)?;
    let mut state = top.state()?;
    collect(&top, &mut state, keep)
}
