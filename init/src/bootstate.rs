//! The boot state of a root group (ARCHITECTURE.md, "Versions and boot state"): which
//! version is the default, which one is tentative with how many tries are left, which are
//! bad, and what each was made from. stage0 reads and changes it before the switch; `terra
//! upgrade|versions|bless|rollback` and the confirmation in the real system change it too.
//!
//! The file is `.terra/state.json` at the top level of the root's btrfs filesystem, beside
//! the version subvolumes. Every change writes a new file, syncs it and renames it over
//! the old one ([`store`]), so a crash leaves either the old or the new state, never a torn
//! one. The transitions are plain functions on [`BootState`] (no I/O) so that every
//! sequence of boots, confirmations, upgrades and crashes can be checked in tests: none
//! may leave the state without a good default.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::TOP;

/// Directory at the top level of the root filesystem that holds Terra's own files.
pub const STATE_DIR: &str = ".terra";
/// The state file inside [`STATE_DIR`].
pub const STATE_FILE: &str = "state.json";
/// The node.toml `terra install` kept on the disk, inside [`STATE_DIR`].
pub const NODE_FILE: &str = "node.toml";
/// Read-only subvolumes of layer chains, inside [`STATE_DIR`] (what upgrades start from).
pub const LAYERS_DIR: &str = "layers";
/// Inside a version that carries its kernel: the kernel, the Terra initramfs built for it
/// from the version's own modules, and its release (`uname -r`), as `terra upgrade` and
/// `terra install` write them.
pub const KERNEL_DIR: &str = "boot/terra";
/// The kernel `terra install` was given, for versions without one, inside [`STATE_DIR`]
/// (same three files as [`KERNEL_DIR`]).
pub const BASE_KERNEL_DIR: &str = "kernel";
/// The kernel image in a kernel directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// The initramfs in a kernel directory.
pub const INITRAMFS_FILE: &str = "initramfs.img";
/// The kernel release (one line) in a kernel directory.
pub const RELEASE_FILE: &str = "release";

/// The kernel directory of version `name` on the top level `top`: its own
/// ([`KERNEL_DIR`]) when it carries one that has not failed ([`Version::kernel_failed`]),
/// else the install's ([`BASE_KERNEL_DIR`]) when there is one.
pub fn kernel_dir(top: &Path, name: &str) -> Option<PathBuf> {
    // A version whose kernel did not reach the root after a kexec boots on the install's.
    let own_failed = load(top)
        .ok()
        .flatten()
        .and_then(|s| s.get(name).map(|v| v.kernel_failed.is_some()))
        .unwrap_or(false);
    [
        (!own_failed).then(|| top.join(name).join(KERNEL_DIR)),
        Some(top.join(STATE_DIR).join(BASE_KERNEL_DIR)),
    ]
    .into_iter()
    .flatten()
    .find(|d| is_kernel_dir(d))
}

/// Whether `dir` is a complete kernel directory: its three files, regular files only (a
/// symlink in a kernel directory is never followed).
pub fn is_kernel_dir(dir: &Path) -> bool {
    [RELEASE_FILE, KERNEL_FILE, INITRAMFS_FILE]
        .iter()
        .all(|f| std::fs::symlink_metadata(dir.join(f)).is_ok_and(|m| m.file_type().is_file()))
}

/// The release recorded in a kernel directory.
pub fn kernel_release(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(RELEASE_FILE)).ok()?;
    let r = text.trim();
    (!r.is_empty()).then(|| r.to_string())
}

/// The format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Tries a new version gets unless told otherwise.
pub const DEFAULT_TRIES: u32 = 3;

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Confirmed by a booted system at least once (or installed as the first version).
    Good,
    /// Not confirmed yet: booted while tries are left.
    Tentative,
    /// Failed, ran out of tries or was rejected: never chosen again.
    Bad,
}

/// One version: a read-only subvolume at the top level named [`Version::name`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// The subvolume's name (`os` for the first install).
    pub name: String,
    /// Where it stands.
    pub status: Status,
    /// Boots left before a tentative version becomes bad.
    #[serde(default)]
    pub tries_left: u32,
    /// The image reference it was made from.
    pub image: String,
    /// The image's manifest digest.
    pub digest: String,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// The state generation at which it was confirmed; 0 when never. The good version
    /// confirmed most recently after the default is the "last good" one.
    #[serde(default)]
    pub confirmed: u64,
    /// The OCI chain IDs of its layers, base first: the read-only subvolumes under
    /// `.terra/layers` it was made from, which later upgrades snapshot.
    #[serde(default)]
    pub chains: Vec<String>,
    /// Why it is bad.
    #[serde(default)]
    pub reason: Option<String>,
    /// Mounted read-write when the command line says `rw` (images that need a writable
    /// root); versions are read-only otherwise.
    #[serde(default)]
    pub writable: bool,
    /// The key whose cosign signature the image carried (name and fingerprint), when it
    /// was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// The release of the kernel it carries (in its [`KERNEL_DIR`]); none: it boots on the
    /// kernel that boots the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Why the kernel it carries is no longer started (it did not reach the root after a
    /// kexec): the version boots on the machine's kernel instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_failed: Option<String>,
    /// The health check that rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthFailure>,
    /// Fields a newer Terra wrote: kept as they are when this code rewrites the file.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The health check (in `/etc/terra/health.d`) that rejected a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthFailure {
    /// The check's file name.
    pub check: String,
    /// How it ended: `exit status 3`, `did not finish within 120 s …`.
    pub result: String,
    /// The end of its output (at most 4 KiB).
    pub output: String,
}

/// `.terra/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootState {
    /// [`FORMAT`].
    pub format: u32,
    /// Bumped by every change that is stored.
    pub generation: u64,
    /// The version that boots when nothing else is chosen; always a good one.
    pub default: String,
    /// Every version, oldest first.
    pub versions: Vec<Version>,
    /// The version stage0 kexecd into its own kernel and that has not reached the root
    /// phase there yet: still set at a later boot, that kernel never got there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kexec_pending: Option<String>,
    /// Fields a newer Terra wrote.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why a candidate is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// `version=` (or node.toml's `[boot] version`) named it: no counting, no fallback.
    Pinned,
    /// The tentative version, with tries left.
    Tentative,
    /// The default.
    Default,
    /// A good version that is not the default (the last good one comes first).
    LastGood,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::Pinned => "pinned by version=",
            Why::Tentative => "tentative",
            Why::Default => "default",
            Why::LastGood => "last good",
        })
    }
}

/// A version to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The subvolume.
    pub name: String,
    /// Why it is a candidate.
    pub why: Why,
}

/// A state file that cannot be used or a transition that is not allowed.
#[derive(Debug)]
pub enum StateError {
    /// Reading or writing the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// The file does not parse or breaks an invariant.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A transition that the state does not allow (no such version, nothing to confirm…).
    Refused(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            StateError::Invalid { path, reason } => write!(f, "{}: {reason}", path.display()),
            StateError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StateError {}

/// Whether `name` can be a version: a plain subvolume name that is not Terra's own.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', ',', '\0'])
        && !name.chars().any(char::is_whitespace)
}

impl BootState {
    /// The state of a fresh install: one good version that is the default.
    pub fn new(first: Version) -> Self {
        let mut first = first;
        first.status = Status::Good;
        first.tries_left = 0;
        first.confirmed = 1;
        BootState {
            format: FORMAT,
            generation: 1,
            default: first.name.clone(),
            versions: vec![first],
            kexec_pending: None,
            extra: Default::default(),
        }
    }

    /// The version named `name`.
    pub fn get(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Version> {
        self.versions.iter_mut().find(|v| v.name == name)
    }

    /// The tentative version, if any.
    pub fn tentative(&self) -> Option<&Version> {
        self.versions.iter().find(|v| v.status == Status::Tentative)
    }

    /// Good versions other than the default, most recently confirmed first: the first is
    /// the "last good" one.
    pub fn good_fallbacks(&self) -> Vec<&Version> {
        let mut good: Vec<&Version> = self
            .versions
            .iter()
            .filter(|v| v.status == Status::Good && v.name != self.default)
            .collect();
        good.sort_by_key(|v| std::cmp::Reverse(v.confirmed));
        good
    }

    /// The state a version shows to users: `default`, `tentative`, `good` or `bad`.
    pub fn shown_state(&self, v: &Version) -> &'static str {
        match v.status {
            _ if v.name == self.default => "default",
            Status::Good => "good",
            Status::Tentative => "tentative",
            Status::Bad => "bad",
        }
    }

    /// Checks the invariants: known format, unique valid names, at most one tentative,
    /// and a default that exists and is good.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not one this Terra reads ({FORMAT})",
                self.format
            ));
        }
        for (i, v) in self.versions.iter().enumerate() {
            if !valid_name(&v.name) {
                return Err(format!("version name {:?} is not a plain name", v.name));
            }
            if self.versions[..i].iter().any(|o| o.name == v.name) {
                return Err(format!("version {:?} is listed twice", v.name));
            }
        }
        if self
            .versions
            .iter()
            .filter(|v| v.status == Status::Tentative)
            .count()
            > 1
        {
            return Err("more than one tentative version".into());
        }
        match self.get(&self.default) {
            Some(v) if v.status == Status::Good => Ok(()),
            Some(v) => Err(format!(
                "the default {:?} is {:?}, not good",
                v.name, v.status
            )),
            None => Err(format!("the default {:?} is not a version", self.default)),
        }
    }

    /// Starts a boot that is not pinned: a tentative version with tries left spends one
    /// (the caller stores the state before switching); one without tries becomes bad.
    /// Returns the candidates in order: the tentative one, the default, then the other
    /// good versions, last good first. Bad versions are never candidates.
    pub fn begin_boot(&mut self) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(t) = self
            .versions
            .iter_mut()
            .find(|v| v.status == Status::Tentative)
        {
            if t.tries_left > 0 {
                t.tries_left -= 1;
                out.push(Candidate {
                    name: t.name.clone(),
                    why: Why::Tentative,
                });
            } else {
                t.status = Status::Bad;
                t.reason = Some("no tries left: it never confirmed a boot".into());
            }
        }
        out.push(Candidate {
            name: self.default.clone(),
            why: Why::Default,
        });
        out.extend(self.good_fallbacks().into_iter().map(|v| Candidate {
            name: v.name.clone(),
            why: Why::LastGood,
        }));
        out
    }

    /// Marks `name` bad for `reason`; returns whether it became bad. When it was the
    /// default, the last good version becomes the default; with no other good version the
    /// default stays (a state always has one) and stays good, and false is returned.
    pub fn mark_bad(&mut self, name: &str, reason: &str) -> bool {
        let successor = (name == self.default)
            .then(|| self.good_fallbacks().first().map(|v| v.name.clone()))
            .flatten();
        if name == self.default && successor.is_none() {
            return false;
        }
        let Some(v) = self.get_mut(name) else {
            return false;
        };
        v.status = Status::Bad;
        v.tries_left = 0;
        v.reason = Some(reason.to_string());
        if let Some(s) = successor {
            self.default = s;
        }
        true
    }

    /// The booted system confirms `name`: a tentative version becomes good and the
    /// default. Confirming a good version is a no-op; a bad one is refused.
    pub fn confirm(&mut self, name: &str) -> Result<bool, StateError> {
        let generation = self.generation + 1;
        let v = self
            .get_mut(name)
            .ok_or_else(|| StateError::Refused(format!("no version {name:?}")))?;
        match v.status {
            Status::Good => Ok(false),
            Status::Bad => Err(StateError::Refused(format!(
                "version {name:?} is bad ({}); it cannot be confirmed",
                v.reason.as_deref().unwrap_or("no reason recorded")
            ))),
            Status::Tentative => {
                v.status = Status::Good;
                v.tries_left = 0;
                v.confirmed = generation;
                self.default = name.to_string();
                Ok(true)
            }
        }
    }

    /// Rejects the tentative version `name` (or the tentative one when None).
    pub fn reject(&mut self, name: Option<&str>, reason: &str) -> Result<String, StateError> {
        let t = match name {
            Some(n) => self
                .get(n)
                .filter(|v| v.status == Status::Tentative)
                .ok_or_else(|| StateError::Refused(format!("version {n:?} is not tentative")))?,
            None => self
                .tentative()
                .ok_or_else(|| StateError::Refused("no tentative version".into()))?,
        };
        let n = t.name.clone();
        self.mark_bad(&n, reason);
        Ok(n)
    }

    /// The booted system's health check `failure` rejects the tentative version `name`:
    /// it is bad, with the check's name, result and output.
    pub fn reject_unhealthy(
        &mut self,
        name: &str,
        failure: HealthFailure,
    ) -> Result<(), StateError> {
        let reason = format!("health check {} failed: {}", failure.check, failure.result);
        self.reject(Some(name), &reason)?;
        if let Some(v) = self.get_mut(name) {
            v.health = Some(failure);
        }
        Ok(())
    }

    /// Before a kexec into the kernel `name` carries: marks it, so that a later boot
    /// knows when that kernel never reached its root phase ([`BootState::kexec_unfinished`]).
    pub fn kexec_started(&mut self, name: &str) {
        self.kexec_pending = Some(name.to_string());
    }

    /// The stage0 on `name`'s kernel reached the root phase and mounted it: the mark goes.
    /// Returns whether the state changed.
    pub fn kexec_arrived(&mut self, name: &str) -> bool {
        if self.kexec_pending.as_deref() != Some(name) {
            return false;
        }
        self.kexec_pending = None;
        true
    }

    /// At a boot that did not come through a kexec: a mark still set means the kernel of
    /// that version never reached the root (it hung, panicked, or found no root and went
    /// to rescue). Its kernel is not started again ([`Version::kernel_failed`]): the
    /// version boots on the machine's kernel from now on, so a rescue that reboots cannot
    /// loop through the same kexec. Returns the version.
    pub fn kexec_unfinished(&mut self) -> Option<String> {
        let name = self.kexec_pending.take()?;
        let v = self.get_mut(&name)?;
        let kernel = v.kernel.as_deref().unwrap_or("its own");
        v.kernel_failed = Some(format!(
            "kernel {kernel} did not reach the root after a kexec: booting on the machine's kernel"
        ));
        Some(name)
    }

    /// `name`'s own kernel failed after a kexec for `reason`: it is not started again.
    pub fn kernel_failed(&mut self, name: &str, reason: &str) -> bool {
        match self.get_mut(name) {
            Some(v) => {
                v.kernel_failed = Some(reason.to_string());
                true
            }
            None => false,
        }
    }

    /// Adds `v` as the tentative version with `tries` boots. A tentative version that was
    /// never confirmed is superseded (bad); the default and the good versions are kept.
    pub fn add_tentative(&mut self, mut v: Version, tries: u32) -> Result<(), StateError> {
        if self.get(&v.name).is_some() {
            return Err(StateError::Refused(format!(
                "a version named {:?} exists",
                v.name
            )));
        }
        let superseded = format!("superseded by {} before it was confirmed", v.name);
        for old in self
            .versions
            .iter_mut()
            .filter(|o| o.status == Status::Tentative)
        {
            old.status = Status::Bad;
            old.tries_left = 0;
            old.reason = Some(superseded.clone());
        }
        v.status = Status::Tentative;
        v.tries_left = tries.max(1);
        v.confirmed = 0;
        v.reason = None;
        self.versions.push(v);
        Ok(())
    }

    /// Makes the last good version the default; a pending tentative version is dropped
    /// (bad) so that the next boot is the rollback's. Returns the new default.
    pub fn rollback(&mut self) -> Result<String, StateError> {
        let target = self
            .good_fallbacks()
            .first()
            .map(|v| v.name.clone())
            .ok_or_else(|| {
                StateError::Refused(format!(
                    "no good version other than the default {:?} to roll back to",
                    self.default
                ))
            })?;
        if let Some(t) = self.tentative().map(|t| t.name.clone()) {
            self.mark_bad(&t, "dropped by a rollback");
        }
        self.default = target.clone();
        Ok(target)
    }

    /// Versions garbage collection may remove so that at most `keep` remain: bad ones
    /// first, then the oldest. Never the default, the booted one, the last good one or a
    /// tentative one.
    pub fn collectable(&self, keep: usize, booted: Option<&str>) -> Vec<String> {
        let last_good = self.good_fallbacks().first().map(|v| v.name.clone());
        let protected = |v: &Version| {
            v.name == self.default
                || Some(v.name.as_str()) == booted
                || Some(&v.name) == last_good.as_ref()
                || v.status == Status::Tentative
        };
        let mut order: Vec<&Version> = self.versions.iter().filter(|v| !protected(v)).collect();
        // Bad first, then oldest first (the list is oldest first already; stable sort).
        order.sort_by_key(|v| v.status != Status::Bad);
        let excess = self.versions.len().saturating_sub(keep);
        order
            .into_iter()
            .take(excess)
            .map(|v| v.name.clone())
            .collect()
    }

    /// Forgets a version (its subvolume is deleted by the caller first).
    pub fn remove(&mut self, name: &str) {
        if name != self.default {
            self.versions.retain(|v| v.name != name);
        }
    }
}

/// The state file under `top` (the root filesystem's top level).
pub fn path(top: &Path) -> PathBuf {
    top.join(STATE_DIR).join(STATE_FILE)
}

/// Parses state bytes; `path` names the file in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<BootState, StateError> {
    let invalid = |reason: String| StateError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let s: BootState = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    s.check().map_err(invalid)?;
    Ok(s)
}

/// Where [`store`] writes the next state before renaming it over [`path`].
pub fn pending_path(top: &Path) -> PathBuf {
    top.join(STATE_DIR).join(format!("{STATE_FILE}.new"))
}

/// Reads the state under `top`; None when the filesystem has no versions (installed
/// before versions existed, or not by Terra). A `state.json.new` that parses and is newer
/// than `state.json` (or stands where `state.json` is missing or damaged) is the state: a
/// [`store`] synced it and a crash lost only its rename.
pub fn load(top: &Path) -> Result<Option<BootState>, StateError> {
    let p = path(top);
    let main = match std::fs::read(&p) {
        Ok(bytes) => Some(parse(&bytes, &p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(StateError::Io { path: p, err }),
    };
    Ok(match (main, unrenamed(top)) {
        (Some(Ok(s)), Some(n)) if n.generation > s.generation => Some(n),
        (Some(Err(_)) | None, Some(n)) => Some(n),
        (Some(r), _) => Some(r?),
        (None, None) => None,
    })
}

/// `state.json.new` when it parses and passes the invariants.
fn unrenamed(top: &Path) -> Option<BootState> {
    let p = pending_path(top);
    let bytes = std::fs::read(&p).ok()?;
    parse(&bytes, &p).ok()
}

/// Stores `state` under `top` crash-safely with one sync: bumps the generation, writes
/// `state.json.new`, syncs it (its data and its name), then renames it over `state.json`.
/// A crash before the sync completes leaves the old state; after it, the new one, under
/// either name ([`load`] prefers a newer `state.json.new`). A state that breaks an
/// invariant is refused before anything is written.
pub fn store(top: &Path, state: &mut BootState) -> Result<(), StateError> {
    let dir = top.join(STATE_DIR);
    let p = path(top);
    state.generation += 1;
    state.check().map_err(|reason| StateError::Invalid {
        path: p.clone(),
        reason,
    })?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |err| StateError::Io { path, err }
    };
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let tmp = pending_path(top);
    let mut json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Invalid {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    finish_unrenamed(top)?;
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
        .map_err(io_err(&tmp))
        .and_then(|()| std::fs::rename(&tmp, &p).map_err(io_err(&p)));
    if written.is_err() {
        // A store that failed must not become the state at the next load.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Puts a `state.json.new` that [`load`] would read (a crash lost its rename) in its place,
/// durably, before [`store`] writes that name again.
fn finish_unrenamed(top: &Path) -> Result<(), StateError> {
    let Some(pending) = unrenamed(top) else {
        return Ok(());
    };
    let p = path(top);
    let main = std::fs::read(&p).ok().and_then(|b| parse(&b, &p).ok());
    if main.is_some_and(|m| m.generation >= pending.generation) {
        return Ok(());
    }
    let dir = top.join(STATE_DIR);
    std::fs::rename(pending_path(top), &p)
        .and_then(|()| std::fs::File::open(&dir)?.sync_all())
        .map_err(|err| StateError::Io { path: p, err })
}

/// Mounts the top level of `device` with `options` at [`TOP`], runs `f`, unmounts. stage0
/// uses it after the switch (a failed exec marks the version bad) and the confirmation
/// command in the real system; both find the device and options in the boot report.
pub fn with_top<T>(
    device: &str,
    options: &str,
    f: impl FnOnce(&Path) -> Result<T, StateError>,
) -> Result<T, StateError> {
    let top = Path::new(TOP);
    std::fs::create_dir_all(top).map_err(|err| StateError::Io {
        path: top.to_path_buf(),
        err,
    })?;
    nix::mount::mount(
        Some(device),
        TOP,
        Some("btrfs"),
        nix::mount::MsFlags::empty(),
        Some(options),
    )
    .map_err(|e| StateError::Io {
        path: top.to_path_buf(),
        err: io::Error::other(format!("mount {device} ({options}): {e}")),
    })?;
    let out = f(top);
    if let Err(e) = nix::mount::umount2(TOP, nix::mount::MntFlags::MNT_DETACH) {
        log::warn!("cannot unmount {TOP}: {e}");
    }
    out
}

/// Now as RFC 3339 UTC (`2026-12-01T09:30:00Z`), without a calendar crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(name: &str) -> Version {
        Version {
            name: name.into(),
            status: Status::Good,
            tries_left: 0,
            image: format!("oci:/images:{name}"),
            digest: format!("sha256:{name}"),
            created: rfc3339(0),
            confirmed: 0,
            chains: Vec::new(),
            reason: None,
            writable: false,
            verified_by: None,
            kernel: None,
            kernel_failed: None,
            health: None,
            extra: Default::default(),
        }
    }

    fn names(c: &[Candidate]) -> Vec<(&str, Why)> {
        c.iter().map(|c| (c.name.as_str(), c.why)).collect()
    }

    #[test]
    fn a_tentative_version_spends_its_tries_then_the_default_boots() {
        let mut s = BootState::new(version("os"));
        s.add_tentative(version("v2"), 2).unwrap();
        assert_eq!(
            names(&s.begin_boot()),
            [("v2", Why::Tentative), ("os", Why::Default)]
        );
        assert_eq!(s.get("v2").unwrap().tries_left, 1);
        s.begin_boot();
        assert_eq!(s.get("v2").unwrap().tries_left, 0);
        // The third boot finds no tries: v2 is bad, the default boots, and stays so.
        assert_eq!(names(&s.begin_boot()), [("os", Why::Default)]);
        assert_eq!(s.get("v2").unwrap().status, Status::Bad);
        assert_eq!(names(&s.begin_boot()), [("os", Why::Default)]);
        s.check().unwrap();
    }

    #[test]
    fn confirmation_makes_the_default_and_the_old_one_last_good() {
        let mut s = BootState::new(version("os"));
        s.add_tentative(version("v2"), 3).unwrap();
        s.begin_boot();
        assert!(s.confirm("v2").unwrap());
        assert_eq!(s.default, "v2");
        assert!(
            !s.confirm("v2").unwrap(),
            "confirming twice changes nothing"
        );
        assert_eq!(
            names(&s.begin_boot()),
            [("v2", Why::Default), ("os", Why::LastGood)]
        );
        assert_eq!(s.rollback().unwrap(), "os");
        assert_eq!(s.default, "os");
        assert_eq!(s.shown_state(s.get("v2").unwrap()), "good");
    }

    #[test]
    fn a_broken_default_hands_over_to_the_last_good_but_never_leaves_none() {
        let mut s = BootState::new(version("os"));
        assert!(
            !s.mark_bad("os", "init missing"),
            "the only good version is never bad"
        );
        assert_eq!(s.default, "os", "the only version stays the default");
        assert_eq!(s.get("os").unwrap().status, Status::Good);
        s.add_tentative(version("v2"), 1).unwrap();
        s.begin_boot();
        s.confirm("v2").unwrap();
        assert!(s.mark_bad("v2", "mount refused"));
        assert_eq!(s.default, "os");
        assert_eq!(s.get("v2").unwrap().status, Status::Bad);
        s.check().unwrap();
    }

    #[test]
    fn a_new_upgrade_supersedes_an_unconfirmed_one_but_not_the_good_ones() {
        let mut s = BootState::new(version("os"));
        s.add_tentative(version("v2"), 3).unwrap();
        s.add_tentative(version("v3"), 3).unwrap();
        assert_eq!(s.get("v2").unwrap().status, Status::Bad);
        assert_eq!(s.tentative().unwrap().name, "v3");
        assert!(s.add_tentative(version("os"), 3).is_err());
        assert_eq!(s.default, "os");
    }

    #[test]
    fn garbage_collection_keeps_default_booted_last_good_and_tentative() {
        let mut s = BootState::new(version("a"));
        for n in ["b", "c", "d"] {
            s.add_tentative(version(n), 1).unwrap();
            s.confirm(n).unwrap();
            s.generation += 1;
        }
        s.add_tentative(version("e"), 1).unwrap();
        s.mark_bad("e", "x");
        s.add_tentative(version("f"), 1).unwrap();
        // default d, last good c, booted a, tentative f: b and e may go, bad e first.
        assert_eq!(s.collectable(1, Some("a")), ["e", "b"]);
        assert_eq!(s.collectable(5, Some("a")), ["e"]);
        assert!(s.collectable(6, None).is_empty());
    }

    #[test]
    fn unknown_fields_survive_a_rewrite_and_bad_files_are_named() {
        let mut s = BootState::new(version("os"));
        s.versions[0]
            .extra
            .insert("firmware_slot".into(), serde_json::json!("6.1.0-9"));
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &mut s).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.versions[0].extra["firmware_slot"], "6.1.0-9");
        assert_eq!(back.generation, 2);
        assert!(!dir.path().join(".terra/state.json.new").exists());
        std::fs::write(path(dir.path()), b"{\"format\":1,").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(".terra/state.json"), "{err}");
        let mut broken = s.clone();
        broken.default = "nope".into();
        let err = store(dir.path(), &mut broken).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        assert!(load(dir.path()).is_err(), "the refused state wrote nothing");
    }

    #[test]
    fn a_state_synced_but_not_renamed_is_the_state_until_the_next_store_finishes_it() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let mut s = BootState::new(version("os"));
        store(top, &mut s).unwrap();
        let mut newer = s.clone();
        newer.add_tentative(version("v2"), 3).unwrap();
        newer.generation += 1;
        // A crash after store's sync, before its rename.
        let put = |st: &BootState| {
            std::fs::write(pending_path(top), serde_json::to_vec(st).unwrap()).unwrap()
        };
        put(&newer);
        assert_eq!(load(top).unwrap().unwrap(), newer);
        // The next store puts it in place before writing its own change.
        let mut next = load(top).unwrap().unwrap();
        next.begin_boot();
        store(top, &mut next).unwrap();
        assert!(!pending_path(top).exists());
        assert_eq!(load(top).unwrap().unwrap(), next);
        assert_eq!(load(top).unwrap().unwrap().get("v2").unwrap().tries_left, 2);
        // Torn, or older than state.json (a leftover): not the state.
        std::fs::write(pending_path(top), b"{\"format\":1,").unwrap();
        assert_eq!(load(top).unwrap().unwrap(), next);
        put(&s);
        assert_eq!(load(top).unwrap().unwrap(), next);
        let mut again = next.clone();
        store(top, &mut again).unwrap();
        assert_eq!(
            load(top).unwrap().unwrap(),
            again,
            "a leftover is overwritten"
        );
        // state.json damaged, a newer whole one beside it: that one.
        put(&newer);
        std::fs::write(path(top), b"{").unwrap();
        assert_eq!(load(top).unwrap().unwrap(), newer);
        std::fs::remove_file(path(top)).unwrap();
        assert_eq!(load(top).unwrap().unwrap(), newer);
    }

    #[test]
    fn a_kexec_that_never_reaches_the_root_is_not_started_again() {
        let mut s = BootState::new(version("os"));
        s.versions[0].kernel = Some("6.1.0-9-cloud-amd64".into());
        s.kexec_started("os");
        // The next boot did not come through that kexec: the kernel never got there.
        assert_eq!(s.kexec_unfinished().as_deref(), Some("os"));
        let why = s.get("os").unwrap().kernel_failed.clone().unwrap();
        assert!(why.contains("6.1.0-9-cloud-amd64"), "{why}");
        assert_eq!(s.kexec_pending, None);
        assert_eq!(s.kexec_unfinished(), None, "recorded once");
        assert_eq!(
            s.get("os").unwrap().status,
            Status::Good,
            "not bad: the default"
        );
        // One that arrives clears its own mark only.
        s.kexec_started("v2");
        assert!(!s.kexec_arrived("os"));
        assert!(s.kexec_arrived("v2"));
        assert_eq!(s.kexec_pending, None);
        // The version's kernel directory is no longer its own.
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        for d in [
            top.join("os").join(KERNEL_DIR),
            top.join(STATE_DIR).join(BASE_KERNEL_DIR),
        ] {
            std::fs::create_dir_all(&d).unwrap();
            for f in [KERNEL_FILE, INITRAMFS_FILE, RELEASE_FILE] {
                std::fs::write(d.join(f), "6.1\n").unwrap();
            }
        }
        let mut fresh = BootState::new(version("os"));
        store(top, &mut fresh).unwrap();
        assert_eq!(
            kernel_dir(top, "os").unwrap(),
            top.join("os").join(KERNEL_DIR)
        );
        store(top, &mut s).unwrap();
        assert_eq!(
            kernel_dir(top, "os").unwrap(),
            top.join(STATE_DIR).join(BASE_KERNEL_DIR)
        );
    }

    #[test]
    fn a_failed_health_check_is_recorded_on_the_version_it_rejects() {
        let mut s = BootState::new(version("os"));
        s.add_tentative(version("v2"), 3).unwrap();
        let failure = HealthFailure {
            check: "20-db".into(),
            result: "exit status 3".into(),
            output: "connection refused\n".into(),
        };
        s.reject_unhealthy("v2", failure.clone()).unwrap();
        let v = s.get("v2").unwrap();
        assert_eq!(v.status, Status::Bad);
        assert_eq!(
            v.reason.as_deref(),
            Some("health check 20-db failed: exit status 3")
        );
        assert_eq!(v.health.as_ref(), Some(&failure));
        assert_eq!(s.default, "os");
        // Only a tentative version is rejected by a check.
        assert!(s.reject_unhealthy("os", failure).is_err());
        assert_eq!(s.get("os").unwrap().health, None);
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    /// One step of a node's life.
    #[derive(Debug, Clone)]
    enum Step {
        Boot {
            fail: Vec<bool>,
        },
        /// A boot whose first candidate stage0 kexecs into its own kernel, which reaches
        /// the root phase or never does (hangs, or finds no root and reboots from rescue).
        KexecBoot {
            arrives: bool,
        },
        Confirm,
        /// The booted version's health check fails.
        Unhealthy,
        Reject,
        Upgrade {
            tries: u32,
        },
        Rollback,
        Gc {
            keep: usize,
        },
        /// A crash between two stores: the step's change is lost.
        CrashDuring(Box<Step>),
    }

    fn step() -> impl Strategy<Value = Step> {
        let leaf = prop_oneof![
            proptest::collection::vec(any::<bool>(), 0..4).prop_map(|fail| Step::Boot { fail }),
            any::<bool>().prop_map(|arrives| Step::KexecBoot { arrives }),
            Just(Step::Confirm),
            Just(Step::Unhealthy),
            Just(Step::Reject),
            (0u32..4).prop_map(|tries| Step::Upgrade { tries }),
            Just(Step::Rollback),
            (1usize..4).prop_map(|keep| Step::Gc { keep }),
        ];
        leaf.prop_recursive(1, 2, 1, |inner| {
            inner.prop_map(|s| Step::CrashDuring(Box::new(s)))
        })
    }

    /// Applies a step as stage0 and terra do; `booted` is the version that booted, if
    /// any, and `lost` the versions whose kexec never reached the root (none may be
    /// kexecd into again: that is the loop through rescue).
    fn apply(
        s: &mut BootState,
        step: &Step,
        n: &mut u32,
        booted: &mut Option<String>,
        lost: &mut Vec<String>,
    ) {
        match step {
            Step::KexecBoot { arrives } => {
                *booted = None;
                s.kexec_unfinished();
                let first = s.begin_boot()[0].name.clone();
                if s.get(&first).is_some_and(|v| v.kernel_failed.is_none()) {
                    assert!(!lost.contains(&first), "{first} is kexecd into again");
                    s.kexec_started(&first);
                    if *arrives {
                        s.kexec_arrived(&first);
                        *booted = Some(first);
                    } else {
                        lost.push(first);
                    }
                } else {
                    *booted = Some(first);
                }
            }
            Step::Unhealthy => {
                if let Some(b) = booted.clone() {
                    let failure = HealthFailure {
                        check: "10-x".into(),
                        result: "exit status 1".into(),
                        output: String::new(),
                    };
                    if s.reject_unhealthy(&b, failure).is_ok() {
                        assert_eq!(s.get(&b).unwrap().status, Status::Bad);
                        assert!(s.get(&b).unwrap().health.is_some());
                    }
                }
            }
            Step::Boot { fail } => {
                *booted = None;
                s.kexec_unfinished();
                let candidates = s.begin_boot();
                for (i, c) in candidates.iter().enumerate() {
                    if fail.get(i).copied().unwrap_or(false) {
                        s.mark_bad(&c.name, "failed in the initramfs");
                    } else {
                        *booted = Some(c.name.clone());
                        break;
                    }
                }
            }
            Step::Confirm => {
                if let Some(b) = booted.clone() {
                    let _ = s.confirm(&b);
                }
            }
            Step::Reject => {
                let _ = s.reject(None, "rejected");
            }
            Step::Upgrade { tries } => {
                *n += 1;
                s.add_tentative(version(&format!("v{n}")), *tries).unwrap();
            }
            Step::Rollback => {
                let _ = s.rollback();
            }
            Step::Gc { keep } => {
                for name in s.collectable(*keep, booted.as_deref()) {
                    s.remove(&name);
                }
            }
            Step::CrashDuring(inner) => {
                let mut scratch = s.clone();
                apply(&mut scratch, inner, n, booted, &mut lost.clone());
            }
        }
    }

    proptest! {
        /// Every sequence of boots (with any candidates failing, or through a kexec whose
        /// kernel never reaches the root), confirmations, health rejections, rejections,
        /// upgrades, rollbacks, collections and crashes leaves a state that
        /// passes its invariants, whose default is a good version that still exists, and
        /// whose first candidate at the next boot is never bad; and no version whose
        /// kexec never reached the root is kexecd into again.
        #[test]
        fn every_history_keeps_a_bootable_default(steps in proptest::collection::vec(step(), 0..40)) {
            let mut s = BootState::new(version("os"));
            let mut n = 1;
            let mut booted = None;
            let mut lost = Vec::new();
            for st in &steps {
                apply(&mut s, st, &mut n, &mut booted, &mut lost);
                prop_assert!(s.check().is_ok(), "{:?} after {st:?}", s.check());
                let mut next = s.clone();
                let c = next.begin_boot();
                prop_assert!(!c.is_empty());
                for cand in &c {
                    prop_assert!(next.get(&cand.name).is_some_and(|v| v.status != Status::Bad));
                }
                let tentative = s.versions.iter().filter(|v| v.status == Status::Tentative).count();
                prop_assert!(tentative <= 1);
            }
        }

        #[test]
        fn arbitrary_state_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes, Path::new("state.json"));
        }
    }
}
