//! The lifecycle of versions on a disk: `terra upgrade` adds a tentative one (or, with
//! `--download-only`, a staged one that `terra apply` makes tentative later), `collect`
//! (after each upgrade, and `terra gc`) removes old ones, `terra versions` lists them,
//! `terra bless` confirms or rejects, `terra rollback` goes back to the last good one.
//! A digest that was bad on the node is not applied again unless asked for by digest
//! with `--force` ([`BootState::admit`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use terra_init::bootstate::{
    self, Admission, BootState, Rejected, StateError, DEFAULT_TRIES, LAYERS_DIR, STATE_DIR,
};

use super::build::{build_version, chain_dir, Built, NewVersion};
use super::crash::crash_point;
use super::disk::subvolume_delete;
use super::extensions;
use super::keys::{combine_policy, disk_keys};
use super::top::{
    chains_on_disk, downloads_dir, follow_esp, open, pending_marker, settled, sweep, Top,
};
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
    /// Fetch and build it as a staged version (`--download-only`): not a boot candidate
    /// until [`apply`].
    pub stage_only: bool,
    /// Apply a digest that was bad on this node (`--force`): only for a reference by
    /// digest (`REF@sha256:…`), so that no tag can bring a rejected image back.
    pub force: bool,
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
            stage_only: false,
            force: false,
        }
    }
}

/// Versions kept unless `--keep` says otherwise.
pub const DEFAULT_KEEP: usize = 3;

/// What an upgrade did.
#[derive(Debug, Clone)]
pub enum Upgraded {
    /// A version (or, for a download-only upgrade, a staged one) with the same manifest
    /// digest is there already.
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
    /// A new staged version (`stage_only`): [`apply`] makes it tentative.
    Staged {
        /// Its name.
        name: String,
        /// The build.
        built: Built,
        /// Versions removed by the collection.
        removed: Vec<String>,
    },
    /// The image was staged already: that version was applied instead of built again.
    Applied(Applied),
}

impl Upgraded {
    /// The version the upgrade left: the one there already, the new, staged or applied one.
    pub fn name(&self) -> &str {
        match self {
            Upgraded::Same(name)
            | Upgraded::New { name, .. }
            | Upgraded::Staged { name, .. }
            | Upgraded::Applied(Applied { name, .. }) => name,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The version that is tentative now.
    pub name: String,
    /// Tries it has.
    pub tries: u32,
    /// The tentative version it superseded (bad now, never confirmed).
    pub superseded: Option<String>,
}

impl VersionsError {
    /// The memory of a bad digest that refused an upgrade or apply, when that is why it
    /// stopped (`terra update` skips such an image quietly).
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            VersionsError::State(StateError::Rejected(r)) => Some(r.as_ref()),
            _ => None,
        }
    }
}

/// The digest a reference names, when it names one (`REGISTRY/REPO@sha256:…`).
fn named_digest(r: &ImageRef) -> Option<&str> {
    match r {
        ImageRef::Registry(r) => r.digest(),
        _ => None,
    }
}

/// `terra upgrade`: pulls and checks the image (before anything is written), then makes
/// a new tentative version (or a staged one, `stage_only`) and collects old ones. Refused
/// while the booted version is tentative, and for a digest that was bad on this node
/// unless `force` with a reference by digest.
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
    let wanted = named_digest(&r);
    if spec.force && wanted.is_none() {
        return Err(VersionsError::Refused(format!(
            "--force applies an image that was bad on this node only when it is named by \
             digest (REGISTRY/REPO@sha256:…), never by a tag: {} names none (its digest is \
             in `terra versions --rejected`)",
            spec.reference
        )));
    }
    let top = open(target)?;
    let mut state = top.state()?;
    // Before any download: the booted version's verdict comes first.
    state.settled_boot(top.booted.as_deref())?;
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
    // A registry image downloads onto the disk, resumably, and only the layers above the
    // chains the disk holds.
    resolve.download_dir = Some(downloads_dir(&top.path));
    resolve.have_chains = chains_on_disk(&top.path)?;
    let had_chains = resolve.have_chains.clone();
    let image = oci::resolve_with(&r, &resolve, progress)?;
    let digest = image
        .manifest_digest
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    if let Some(w) = wanted.filter(|w| *w != digest) {
        return Err(VersionsError::Refused(format!(
            "{}: asked for {w}, resolved to {digest}",
            spec.reference
        )));
    }
    match state.admit(&digest, spec.force)? {
        Admission::Present(same) => {
            top.clear_downloads();
            return Ok(Upgraded::Same(same));
        }
        Admission::Staged(same) if spec.stage_only => {
            top.clear_downloads();
            return Ok(Upgraded::Same(same));
        }
        Admission::Staged(staged) => {
            top.clear_downloads();
            return apply_in(&top, &mut state, Some(&staged), spec.tries, spec.force)
                .map(Upgraded::Applied);
        }
        Admission::New => {}
    }
    let name = match &spec.name {
        Some(n) if !bootstate::valid_name(n) => {
            return Err(VersionsError::Refused(format!(
                "--name {n:?}: a version name is a plain subvolume name"
            )))
        }
        Some(n) if state.knows(n) => {
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
    let (version, mut built) = build_version(
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
    // A version never becomes a candidate without its extensions.
    match extensions::for_version(&top, &name, &spec.resolve, &spec.apply, progress) {
        Ok(fetched) => built.extensions = fetched,
        Err(e) => {
            discard(&top, &name, &had_chains);
            return Err(e);
        }
    }
    if spec.stage_only {
        state.add_staged(version)?;
    } else {
        state.add_tentative(version, spec.tries)?;
    }
    top.store(&mut state)?;
    settled(&top.path, &name);
    top.clear_downloads();
    crash_point("stored");
    let removed = collect(&top, &mut state, spec.keep)?;
    Ok(if spec.stage_only {
        Upgraded::Staged {
            name,
            built,
            removed,
        }
    } else {
        Upgraded::New {
            name,
            tries: spec.tries.max(1),
            built,
            removed,
        }
    })
}

/// Deletes version `name`, built but never stored, and the chain subvolumes made since
/// `had` was listed, so that a refused upgrade leaves the disk as it found it. A failure
/// is said: the `pending-` marker stays then, and the next sweep finishes.
fn discard(top: &Top, name: &str, had: &BTreeSet<String>) {
    let made = chains_on_disk(&top.path).unwrap_or_default();
    let gone = subvolume_delete(&top.path.join(name))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            for c in made.difference(had) {
                subvolume_delete(&chain_dir(&top.path, c)).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
    match gone {
        Ok(()) => settled(&top.path, name),
        Err(e) => log_line(&format!("cannot remove the refused version {name}: {e}")),
    }
    top.clear_downloads();
}

/// `terra apply`: makes the staged version `name` (the newest staged one when None)
/// tentative with `tries` boots, so that the next boot tries it. Refused while the booted
/// version is tentative, and for a version whose digest was bad on this node since it was
/// staged. One store: a crash leaves it staged or tentative.
pub fn apply(target: &Target, name: Option<&str>, tries: u32) -> Result<Applied, VersionsError> {
    let top = open(target)?;
    let mut state = top.state()?;
    state.settled_boot(top.booted.as_deref())?;
    apply_in(&top, &mut state, name, tries, false)
}

fn apply_in(
    top: &Top,
    state: &mut BootState,
    name: Option<&str>,
    tries: u32,
    force: bool,
) -> Result<Applied, VersionsError> {
    let superseded = state.tentative().map(|t| t.name.clone());
    let name = state
        .apply_staged(name, tries, force)
        .map_err(|e| match e {
            StateError::Refused(why) => VersionsError::Refused(format!("{}: {why}", top.disk)),
            e => e.into(),
        })?;
    top.store(state)?;
    crash_point("applied");
    Ok(Applied {
        name,
        tries: tries.max(1),
        superseded,
    })
}

/// `v<N>`, N one more than the highest such name so far (at least 2: the first install
/// is `os` or its own name), skipping names taken on the disk.
fn next_name(state: &BootState, top: &Path) -> String {
    let highest = state
        .versions
        .iter()
        .chain(&state.staged)
        .filter_map(|v| v.name.strip_prefix('v')?.parse::<u64>().ok())
        .max()
        .unwrap_or(1);
    (highest + 1..)
        .map(|n| format!("v{n}"))
        .find(|n| !state.knows(n) && !top.join(n).exists())
        .unwrap_or_else(|| "v".into())
}

/// Removes versions beyond `keep`, staged ones counted ([`BootState::collectable`]: bad
/// first, then older staged ones, then the oldest good; never the default, the booted one,
/// the last good, the tentative or the newest staged one) and the chain subvolumes no
/// remaining version stands on. Each
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
    for e in extensions::prune(&top.path, state)? {
        log_line(&format!(
            "extension {} from {} fits no version left: removed",
            e.name, e.image
        ));
    }
    // Chains: keep every prefix of a remaining version's chains.
    let wanted: std::collections::HashSet<String> = state
        .versions
        .iter()
        .chain(&state.staged)
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
    /// `default`, `tentative`, `good`, `bad` or `staged`.
    pub state: String,
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

/// What `terra versions` shows.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The versions, oldest first, then the staged ones, oldest first.
    pub versions: Vec<VersionInfo>,
    /// The digests that were bad on this node, oldest first (kept after their versions
    /// are collected).
    pub rejected: Vec<Rejected>,
}

/// `terra versions`.
pub fn list(target: &Target) -> Result<Listing, VersionsError> {
    let top = open(target)?;
    let state = top.state()?;
    let versions = state
        .versions
        .iter()
        .chain(&state.staged)
        .map(|v| VersionInfo {
            name: v.name.clone(),
            state: state.shown_state(v).to_string(),
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
        .collect();
    Ok(Listing {
        versions,
        rejected: state.rejected.clone(),
    })
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
    // No upgrade runs (the lock is ours): a download left behind is not wanted.
    top.clear_downloads();
    collect(&top, &mut state, keep)
}
