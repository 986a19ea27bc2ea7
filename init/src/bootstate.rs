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

#[cfg(test)]
#[path = "bootstate/stage0_dae8990.rs"]
mod stage0_dae8990;

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
///
/// Stored as a plain string. A status this code does not know (a newer Terra's) is kept
/// as [`Status::Other`] and written back as it was: such a version is never a candidate,
/// never the default and never collected, and the rest of the state stays usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Status {
    /// Confirmed by a booted system at least once (or installed as the first version).
    Good,
    /// Not confirmed yet: booted while tries are left.
    Tentative,
    /// Failed, ran out of tries or was rejected: never chosen again.
    Bad,
    /// Fetched and built by `terra upgrade --download-only`, not a boot candidate until
    /// `terra apply`: only in [`BootState::staged`].
    Staged,
    /// A status a newer Terra wrote, as it was written.
    Other(String),
}

impl From<String> for Status {
    fn from(s: String) -> Self {
        match s.as_str() {
            "good" => Status::Good,
            "tentative" => Status::Tentative,
            "bad" => Status::Bad,
            "staged" => Status::Staged,
            _ => Status::Other(s),
        }
    }
}

impl From<Status> for String {
    fn from(s: Status) -> Self {
        s.as_str().to_string()
    }
}

impl Status {
    /// The status as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Good => "good",
            Status::Tentative => "tentative",
            Status::Bad => "bad",
            Status::Staged => "staged",
            Status::Other(s) => s,
        }
    }
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
    /// The init its image names (`org.terra.init`, recorded by `terra create`): started
    /// when neither node.toml nor the kernel line names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
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
    /// Every version that boots or booted (good, tentative, bad), oldest first.
    pub versions: Vec<Version>,
    /// Versions `terra upgrade --download-only` made, oldest first: subvolumes like the
    /// others, never candidates until `terra apply` moves one into [`Self::versions`] as
    /// tentative. A list of its own rather than a status in `versions`: a stage0 from
    /// before staging refuses a status it does not know (and then boots the default only,
    /// never the tentative version), while it ignores an unknown field and keeps it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<Version>,
    /// Manifest digests that were bad on this node, oldest first, at most
    /// [`MAX_REJECTED`]: kept after their versions are collected, so that neither an
    /// upgrade nor an automatic update applies one again unless asked for it by digest
    /// (`terra upgrade --force REF@sha256:…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
    /// The version stage0 kexecd into its own kernel and that has not reached the root
    /// phase there yet: still set at a later boot, that kernel never got there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kexec_pending: Option<String>,
    /// Fields a newer Terra wrote.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Rejected digests remembered; the oldest are forgotten first.
pub const MAX_REJECTED: usize = 32;
/// Bytes of a reason kept in [`Rejected::reason`] (a health check's output can be long;
/// the version's own `reason` keeps it whole while the version exists).
pub const REJECTED_REASON_BYTES: usize = 1024;

/// A manifest digest that was bad on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// The manifest digest.
    pub digest: String,
    /// The version that had it.
    pub name: String,
    /// The image reference it was made from.
    pub image: String,
    /// Why it became bad.
    pub reason: String,
    /// When (RFC 3339, UTC).
    pub when: String,
    /// Fields a newer Terra wrote.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image {} ({}) was bad on this node as version {} ({}, {})",
            self.image, self.digest, self.name, self.reason, self.when
        )
    }
}

/// What an upgrade to an image should do, by its manifest digest ([`BootState::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A version that is not bad has that digest: nothing to fetch or build.
    Present(String),
    /// A staged version has it: apply that one rather than build it again.
    Staged(String),
    /// Build a new version.
    New,
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

impl Why {
    /// Its name on the wire (boot.json, the fleet report): serde's spelling of it.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Pinned => "pinned",
            Why::Tentative => "tentative",
            Why::Default => "default",
            Why::LastGood => "last_good",
        }
    }
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
    /// The image's digest was bad on this node before; only a request by digest with
    /// `--force` applies it again.
    Rejected(Box<Rejected>),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io { path, err } => write!(f, "{}: {err}", path.display()),
            StateError::Invalid { path, reason } => write!(f, "{}: {reason}", path.display()),
            StateError::Refused(why) => f.write_str(why),
            StateError::Rejected(r) => write!(
                f,
                "{r}: it is not applied again unless asked for by digest, \
                 `terra upgrade --force REF@{}`",
                r.digest
            ),
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
            staged: Vec::new(),
            rejected: Vec::new(),
            kexec_pending: None,
            extra: Default::default(),
        }
    }

    /// The version named `name` (staged versions are not versions yet: [`Self::staged`]).
    pub fn get(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Version> {
        self.versions.iter_mut().find(|v| v.name == name)
    }

    /// The staged version named `name`.
    pub fn staged_version(&self, name: &str) -> Option<&Version> {
        self.staged.iter().find(|v| v.name == name)
    }

    /// Whether the state names subvolume `name`, as a version or a staged one.
    pub fn knows(&self, name: &str) -> bool {
        self.get(name).is_some() || self.staged_version(name).is_some()
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

    /// The state a version shows to users: `default`, `tentative`, `good`, `bad`,
    /// `staged`, or a newer Terra's status as it was written.
    pub fn shown_state<'a>(&self, v: &'a Version) -> &'a str {
        if v.name == self.default && v.status == Status::Good {
            "default"
        } else {
            v.status.as_str()
        }
    }

    /// Why digest `digest` must not be applied again, when it was bad on this node.
    pub fn rejection(&self, digest: &str) -> Option<&Rejected> {
        self.rejected
            .iter()
            .rev()
            .find(|r| !digest.is_empty() && r.digest == digest)
    }

    /// Checks the invariants: known format, unique valid names over versions and staged
    /// ones, staged versions only in [`Self::staged`], at most one tentative, and a
    /// default that exists and is good.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not one this Terra reads ({FORMAT})",
                self.format
            ));
        }
        let all: Vec<&Version> = self.versions.iter().chain(&self.staged).collect();
        for (i, v) in all.iter().enumerate() {
            if !valid_name(&v.name) {
                return Err(format!("version name {:?} is not a plain name", v.name));
            }
            if all[..i].iter().any(|o| o.name == v.name) {
                return Err(format!("version {:?} is listed twice", v.name));
            }
        }
        if let Some(v) = self.versions.iter().find(|v| v.status == Status::Staged) {
            return Err(format!(
                "version {:?} is staged but listed among the versions",
                v.name
            ));
        }
        if let Some(v) = self.staged.iter().find(|v| v.status != Status::Staged) {
            return Err(format!(
                "version {:?} is listed as staged but is {}",
                v.name,
                v.status.as_str()
            ));
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
                "the default {:?} is {}, not good",
                v.name,
                v.status.as_str()
            )),
            None => Err(format!("the default {:?} is not a version", self.default)),
        }
    }

    /// Starts a boot that is not pinned: a tentative version with tries left spends one
    /// (the caller stores the state before switching); one without tries becomes bad.
    /// Returns the candidates in order: the tentative one, the default, then the other
    /// good versions, last good first. Bad, staged and unknown versions are never
    /// candidates.
    pub fn begin_boot(&mut self) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(t) = self
            .versions
            .iter()
            .position(|v| v.status == Status::Tentative)
        {
            let t = &mut self.versions[t];
            if t.tries_left > 0 {
                t.tries_left -= 1;
                out.push(Candidate {
                    name: t.name.clone(),
                    why: Why::Tentative,
                });
            } else {
                let name = t.name.clone();
                self.set_bad(&name, "no tries left: it never confirmed a boot", true);
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

    /// Marks `name` bad for `reason` and remembers its digest ([`Self::rejected`]); returns
    /// whether it became bad. When it was the default, the last good version becomes the
    /// default; with no other good version the default stays (a state always has one) and
    /// stays good, and false is returned.
    pub fn mark_bad(&mut self, name: &str, reason: &str) -> bool {
        let successor = (name == self.default)
            .then(|| self.good_fallbacks().first().map(|v| v.name.clone()))
            .flatten();
        if name == self.default && successor.is_none() {
            return false;
        }
        if !self.set_bad(name, reason, true) {
            return false;
        }
        if let Some(s) = successor {
            self.default = s;
        }
        true
    }

    /// Makes version `name` bad; with `remember`, its digest joins [`Self::rejected`]
    /// (a failure on this node). Returns whether there is such a version.
    fn set_bad(&mut self, name: &str, reason: &str, remember: bool) -> bool {
        let Some(v) = self.get_mut(name) else {
            return false;
        };
        v.status = Status::Bad;
        v.tries_left = 0;
        v.reason = Some(reason.to_string());
        let v = v.clone();
        if remember && !v.digest.is_empty() {
            let mut reason = reason.to_string();
            if reason.len() > REJECTED_REASON_BYTES {
                let mut cut = REJECTED_REASON_BYTES;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
                reason.push('…');
            }
            self.rejected.retain(|r| r.digest != v.digest);
            self.rejected.push(Rejected {
                digest: v.digest,
                name: v.name,
                image: v.image,
                reason,
                when: now_rfc3339(),
                extra: Default::default(),
            });
            let over = self.rejected.len().saturating_sub(MAX_REJECTED);
            self.rejected.drain(..over);
        }
        true
    }

    /// The booted system confirms `name`: a tentative version becomes good and the
    /// default, and its digest is no longer remembered as rejected (it was applied again
    /// by digest and proved good). Confirming a good version is a no-op; a bad one is
    /// refused.
    pub fn confirm(&mut self, name: &str) -> Result<bool, StateError> {
        let generation = self.generation + 1;
        let v = self
            .get_mut(name)
            .ok_or_else(|| StateError::Refused(format!("no version {name:?}")))?;
        match &v.status {
            Status::Good => Ok(false),
            Status::Bad => Err(StateError::Refused(format!(
                "version {name:?} is bad ({}); it cannot be confirmed",
                v.reason.as_deref().unwrap_or("no reason recorded")
            ))),
            Status::Tentative => {
                v.status = Status::Good;
                v.tries_left = 0;
                v.confirmed = generation;
                let digest = v.digest.clone();
                self.default = name.to_string();
                self.rejected.retain(|r| r.digest != digest);
                Ok(true)
            }
            other => Err(StateError::Refused(format!(
                "version {name:?} is {}, not tentative; it cannot be confirmed",
                other.as_str()
            ))),
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

    /// Refuses a change of what boots next while the booted version (`booted`, the
    /// running system's) is still tentative: it must be confirmed or rejected first, or
    /// its verdict would land on a state that no longer expects it.
    pub fn settled_boot(&self, booted: Option<&str>) -> Result<(), StateError> {
        match booted {
            Some(b) if self.get(b).is_some_and(|v| v.status == Status::Tentative) => {
                Err(StateError::Refused(format!(
                    "the running version {b} is tentative: confirm it (`terra bless good`) \
                     or reject it (`terra bless bad`) first"
                )))
            }
            _ => Ok(()),
        }
    }

    /// What an upgrade to an image with manifest `digest` does: nothing when a version
    /// that is not bad has it, apply the staged one that has it, or build a new one. A
    /// digest that was bad on this node ([`Self::rejected`]) is refused unless `force`d
    /// (the operator asked for it by digest).
    pub fn admit(&self, digest: &str, force: bool) -> Result<Admission, StateError> {
        if digest.is_empty() {
            return Ok(Admission::New);
        }
        if let Some(v) = self
            .versions
            .iter()
            .find(|v| v.digest == digest && v.status != Status::Bad)
        {
            return Ok(Admission::Present(v.name.clone()));
        }
        if let Some(r) = self.rejection(digest).filter(|_| !force) {
            return Err(StateError::Rejected(Box::new(r.clone())));
        }
        Ok(
            match self.staged.iter().rev().find(|v| v.digest == digest) {
                Some(v) => Admission::Staged(v.name.clone()),
                None => Admission::New,
            },
        )
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
    /// never confirmed is superseded (bad, but not remembered as rejected: being replaced
    /// before a verdict proves nothing about it); the default and the good versions are
    /// kept.
    pub fn add_tentative(&mut self, mut v: Version, tries: u32) -> Result<(), StateError> {
        if self.knows(&v.name) {
            return Err(StateError::Refused(format!(
                "a version named {:?} exists",
                v.name
            )));
        }
        let superseded = format!("superseded by {} before it was confirmed", v.name);
        let old: Vec<String> = self
            .versions
            .iter()
            .filter(|o| o.status == Status::Tentative)
            .map(|o| o.name.clone())
            .collect();
        for o in old {
            self.set_bad(&o, &superseded, false);
        }
        v.status = Status::Tentative;
        v.tries_left = tries.max(1);
        v.confirmed = 0;
        v.reason = None;
        self.versions.push(v);
        Ok(())
    }

    /// Adds `v` as a staged version: on the disk, never a candidate, until
    /// [`Self::apply_staged`].
    pub fn add_staged(&mut self, mut v: Version) -> Result<(), StateError> {
        if self.knows(&v.name) {
            return Err(StateError::Refused(format!(
                "a version named {:?} exists",
                v.name
            )));
        }
        v.status = Status::Staged;
        v.tries_left = 0;
        v.confirmed = 0;
        v.reason = None;
        self.staged.push(v);
        Ok(())
    }

    /// Makes the staged version `name` (the newest staged one when None) tentative with
    /// `tries` boots, as [`Self::add_tentative`] does (superseding an unconfirmed
    /// tentative one). A staged version whose digest was rejected since it was staged is
    /// refused unless `force`d. Returns its name.
    pub fn apply_staged(
        &mut self,
        name: Option<&str>,
        tries: u32,
        force: bool,
    ) -> Result<String, StateError> {
        let i = match name {
            Some(n) => self
                .staged
                .iter()
                .position(|v| v.name == n)
                .ok_or_else(|| match self.get(n) {
                    Some(v) => StateError::Refused(format!(
                        "version {n:?} is {}, not staged",
                        self.shown_state(v)
                    )),
                    None => StateError::Refused(format!("no staged version {n:?}")),
                })?,
            None => self.staged.len().checked_sub(1).ok_or_else(|| {
                StateError::Refused(
                    "no staged version (`terra upgrade --download-only REF` stages one)".into(),
                )
            })?,
        };
        if let Some(r) = self.rejection(&self.staged[i].digest).filter(|_| !force) {
            return Err(StateError::Rejected(Box::new(r.clone())));
        }
        let v = self.staged.remove(i);
        let n = v.name.clone();
        self.add_tentative(v, tries)?;
        Ok(n)
    }

    /// Makes the last good version the default; a pending tentative version is dropped:
    /// bad, and remembered as rejected (the operator went back rather than on, so no
    /// upgrade or update brings it again unless asked for by digest). Returns the new
    /// default.
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

    /// Versions garbage collection may remove so that at most `keep` remain, staged ones
    /// counted: bad ones first, then staged ones, then good ones, each oldest first. Never
    /// the default, the booted one, the last good one, a tentative one, the newest staged
    /// one (what `terra apply` applies) or one of a status this code does not know.
    pub fn collectable(&self, keep: usize, booted: Option<&str>) -> Vec<String> {
        let last_good = self.good_fallbacks().first().map(|v| v.name.clone());
        let newest_staged = self.staged.last().map(|v| v.name.as_str());
        let protected = |v: &Version| {
            v.name == self.default
                || Some(v.name.as_str()) == booted
                || Some(&v.name) == last_good.as_ref()
                || Some(v.name.as_str()) == newest_staged
                || matches!(v.status, Status::Tentative | Status::Other(_))
        };
        let mut order: Vec<&Version> = self
            .versions
            .iter()
            .chain(&self.staged)
            .filter(|v| !protected(v))
            .collect();
        // Bad, then staged, then good; oldest first within each (both lists are oldest
        // first already; the sort is stable). A staged version never booted: fetching it
        // again costs less than losing a version that is known to work.
        order.sort_by_key(|v| match v.status {
            Status::Bad => 0,
            Status::Staged => 1,
            _ => 2,
        });
        let excess = (self.versions.len() + self.staged.len()).saturating_sub(keep);
        order
            .into_iter()
            .take(excess)
            .map(|v| v.name.clone())
            .collect()
    }

    /// Forgets a version or a staged one (its subvolume is deleted by the caller first).
    pub fn remove(&mut self, name: &str) {
        if name != self.default {
            self.versions.retain(|v| v.name != name);
            self.staged.retain(|v| v.name != name);
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
            init: None,
            extra: Default::default(),
        }
    }

    fn with_digest(name: &str, digest: &str) -> Version {
        Version {
            digest: digest.into(),
            ..version(name)
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
    fn a_staged_version_never_boots_until_applied() {
        let mut s = BootState::new(version("os"));
        s.add_staged(version("v2")).unwrap();
        assert_eq!(s.staged_version("v2").unwrap().status, Status::Staged);
        assert!(s.get("v2").is_none(), "not a version yet");
        assert!(s.add_staged(version("v2")).is_err(), "names are unique");
        assert!(s.add_tentative(version("v2"), 3).is_err());
        // Boots leave it alone.
        for _ in 0..3 {
            assert_eq!(names(&s.begin_boot()), [("os", Why::Default)]);
        }
        assert_eq!(s.shown_state(s.staged_version("v2").unwrap()), "staged");
        s.check().unwrap();
        // Applied: tentative with its tries, and the next boot tries it.
        assert_eq!(s.apply_staged(None, 2, false).unwrap(), "v2");
        assert!(s.staged.is_empty());
        assert_eq!(s.tentative().unwrap().name, "v2");
        assert_eq!(s.tentative().unwrap().tries_left, 2);
        assert_eq!(
            names(&s.begin_boot()),
            [("v2", Why::Tentative), ("os", Why::Default)]
        );
    }

    #[test]
    fn apply_takes_the_newest_staged_or_the_named_one_and_says_what_is_wrong() {
        let mut s = BootState::new(version("os"));
        let err = s.apply_staged(None, 3, false).unwrap_err().to_string();
        assert!(err.contains("no staged version") && err.contains("--download-only"));
        s.add_staged(version("v2")).unwrap();
        s.add_staged(version("v3")).unwrap();
        s.add_tentative(version("v4"), 3).unwrap();
        let err = s
            .apply_staged(Some("os"), 3, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"os\" is default, not staged"), "{err}");
        let err = s
            .apply_staged(Some("v9"), 3, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no staged version \"v9\""), "{err}");
        // The newest: v3; it supersedes the unconfirmed v4, which is not remembered.
        assert_eq!(s.apply_staged(None, 3, false).unwrap(), "v3");
        assert_eq!(s.get("v4").unwrap().status, Status::Bad);
        assert!(s
            .get("v4")
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("superseded"));
        assert!(s.rejected.is_empty(), "superseded is no proof of badness");
        assert_eq!(s.apply_staged(Some("v2"), 1, false).unwrap(), "v2");
        assert_eq!(s.tentative().unwrap().name, "v2");
        s.check().unwrap();
    }

    #[test]
    fn nothing_changes_what_boots_while_the_booted_version_is_tentative() {
        let mut s = BootState::new(version("os"));
        s.add_tentative(version("v2"), 3).unwrap();
        assert!(s.settled_boot(None).is_ok(), "offline, nothing is booted");
        assert!(s.settled_boot(Some("os")).is_ok());
        let err = s.settled_boot(Some("v2")).unwrap_err().to_string();
        assert!(
            err.contains("v2 is tentative") && err.contains("terra bless"),
            "{err}"
        );
        s.confirm("v2").unwrap();
        assert!(s.settled_boot(Some("v2")).is_ok());
    }

    #[test]
    fn a_digest_that_failed_here_is_remembered_beyond_its_version() {
        let mut s = BootState::new(with_digest("os", "sha256:a"));
        assert_eq!(
            s.admit("sha256:a", false).unwrap(),
            Admission::Present("os".into())
        );
        assert_eq!(s.admit("sha256:b", false).unwrap(), Admission::New);
        s.add_tentative(with_digest("v2", "sha256:b"), 1).unwrap();
        s.begin_boot();
        // Out of tries: bad, and its digest is remembered.
        assert_eq!(names(&s.begin_boot()), [("os", Why::Default)]);
        let r = s.rejection("sha256:b").unwrap();
        assert_eq!(
            (r.name.as_str(), r.image.as_str()),
            ("v2", "oci:/images:v2")
        );
        assert!(
            r.reason.contains("no tries left") && r.when.ends_with('Z'),
            "{r:?}"
        );
        // Collected: the version goes, the memory stays, and the digest is refused.
        for n in s.collectable(1, None) {
            s.remove(&n);
        }
        assert!(s.get("v2").is_none());
        let err = s.admit("sha256:b", false).unwrap_err();
        assert!(
            matches!(&err, StateError::Rejected(r) if r.name == "v2"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("--force REF@sha256:b") && text.contains("no tries left"),
            "{text}"
        );
        // Asked for by digest: admitted; once it confirms a boot, forgotten.
        assert_eq!(s.admit("sha256:b", true).unwrap(), Admission::New);
        s.add_tentative(with_digest("v3", "sha256:b"), 1).unwrap();
        s.begin_boot();
        s.confirm("v3").unwrap();
        assert!(s.rejection("sha256:b").is_none());
        // Each way a version fails is remembered; a superseded one is not.
        s.add_tentative(with_digest("v4", "sha256:c"), 3).unwrap();
        s.reject(None, "health check failed").unwrap();
        s.add_tentative(with_digest("v5", "sha256:d"), 3).unwrap();
        s.rollback().unwrap();
        s.add_tentative(with_digest("v6", "sha256:e"), 3).unwrap();
        s.mark_bad("v6", "init missing");
        s.add_tentative(with_digest("v7", "sha256:f"), 3).unwrap();
        s.add_tentative(with_digest("v8", "sha256:g"), 3).unwrap();
        let remembered: Vec<(&str, &str)> = s
            .rejected
            .iter()
            .map(|r| (r.name.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            remembered,
            [
                ("v4", "health check failed"),
                ("v5", "dropped by a rollback"),
                ("v6", "init missing")
            ]
        );
        s.check().unwrap();
    }

    #[test]
    fn a_staged_digest_is_applied_not_built_again_unless_rejected_since() {
        let mut s = BootState::new(with_digest("os", "sha256:a"));
        s.add_staged(with_digest("v2", "sha256:b")).unwrap();
        assert_eq!(
            s.admit("sha256:b", false).unwrap(),
            Admission::Staged("v2".into())
        );
        // Another version with that digest failed meanwhile (a forced one, say).
        s.add_tentative(with_digest("v3", "sha256:b"), 1).unwrap();
        s.reject(None, "health check failed").unwrap();
        assert!(matches!(
            s.admit("sha256:b", false),
            Err(StateError::Rejected(_))
        ));
        let err = s.apply_staged(Some("v2"), 3, false).unwrap_err();
        assert!(matches!(err, StateError::Rejected(_)), "{err}");
        assert_eq!(s.staged.len(), 1, "a refused apply changes nothing");
        assert_eq!(s.apply_staged(Some("v2"), 3, true).unwrap(), "v2");
    }

    #[test]
    fn the_rejected_list_is_bounded_and_keeps_reasons_short() {
        let mut s = BootState::new(version("os"));
        for i in 0..MAX_REJECTED + 5 {
            let n = format!("v{i}");
            s.add_tentative(with_digest(&n, &format!("sha256:{i}")), 1)
                .unwrap();
            s.mark_bad(&n, &"é".repeat(REJECTED_REASON_BYTES));
        }
        assert_eq!(s.rejected.len(), MAX_REJECTED);
        assert_eq!(s.rejected[0].name, "v5", "the oldest are forgotten first");
        let r = &s.rejected[MAX_REJECTED - 1].reason;
        assert!(
            r.len() <= REJECTED_REASON_BYTES + 3 && r.ends_with('…'),
            "{}",
            r.len()
        );
        // The version keeps its whole reason while it exists.
        assert_eq!(
            s.get("v36").unwrap().reason.as_ref().unwrap().len(),
            2 * REJECTED_REASON_BYTES
        );
    }

    #[test]
    fn collection_counts_staged_and_takes_bad_then_older_staged_then_good() {
        let mut s = BootState::new(version("a"));
        for n in ["b", "c"] {
            s.add_tentative(version(n), 1).unwrap();
            s.confirm(n).unwrap();
            s.generation += 1;
        }
        s.add_tentative(version("d"), 1).unwrap();
        s.mark_bad("d", "x");
        s.add_staged(version("s1")).unwrap();
        s.add_staged(version("s2")).unwrap();
        s.add_staged(version("s3")).unwrap();
        // default c, last good b; s3 is the newest staged. Seven listed.
        assert_eq!(s.collectable(6, None), ["d"]);
        assert_eq!(s.collectable(4, None), ["d", "s1", "s2"]);
        assert_eq!(s.collectable(3, None), ["d", "s1", "s2", "a"]);
        assert_eq!(s.collectable(1, None), ["d", "s1", "s2", "a"]);
        assert_eq!(s.collectable(1, Some("a")), ["d", "s1", "s2"]);
        s.remove("s1");
        assert!(s.staged_version("s1").is_none());
    }

    #[test]
    fn an_unknown_status_is_kept_and_never_boots() {
        let mut s = BootState::new(version("os"));
        let mut v = version("v2");
        v.status = Status::Other("quarantined".into());
        s.versions.push(v);
        let json = serde_json::to_vec(&s).unwrap();
        let mut back = parse(&json, Path::new("state.json")).unwrap();
        assert_eq!(back.versions[1].status, Status::Other("quarantined".into()));
        assert_eq!(back.shown_state(&back.versions[1]), "quarantined");
        assert_eq!(names(&back.begin_boot()), [("os", Why::Default)]);
        assert!(back.collectable(1, None).is_empty());
        assert!(back.confirm("v2").is_err());
        let again = serde_json::to_value(&back).unwrap();
        assert_eq!(again["versions"][1]["status"], "quarantined");
        // As the default it breaks the invariant: the file is refused, not half-used.
        back.default = "v2".into();
        assert!(back.check().unwrap_err().contains("quarantined"));
    }

    /// An older stage0 (today's ESPs may still carry one) reads a state with staged
    /// versions and rejected digests, boots the tentative version or the default but
    /// never a staged one, and writes back what it does not understand.
    #[test]
    fn an_older_stage0_boots_from_a_newer_state() {
        use super::stage0_dae8990 as old;
        let mut s = BootState::new(version("os"));
        s.add_tentative(with_digest("v2", "sha256:b"), 1).unwrap();
        s.reject(None, "health check failed").unwrap();
        s.add_staged(version("v3")).unwrap();
        s.add_staged(version("v4")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        store(dir.path(), &mut s).unwrap();
        let file = std::fs::read(&p).unwrap();

        // No tentative version: the old code boots the default, nothing else.
        let mut o = old::parse(&file, &p).expect("the old parser reads the new state");
        let c = o.begin_boot();
        let c: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(c, ["os"]);

        // A tentative one (applied v4): the old code tries it first, counts, stores.
        s.apply_staged(Some("v4"), 2, false).unwrap();
        store(dir.path(), &mut s).unwrap();
        let mut o = old::load(dir.path()).unwrap().unwrap();
        let c = o.begin_boot();
        let c: Vec<(&str, old::Why)> = c.iter().map(|c| (c.name.as_str(), c.why)).collect();
        assert_eq!(c, [("v4", old::Why::Tentative), ("os", old::Why::Default)]);
        old::store(dir.path(), &mut o).unwrap();
        // What it wrote, read by today's code: its count, and everything it did not know.
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.get("v4").unwrap().tries_left, 1);
        assert_eq!(back.staged, s.staged);
        assert_eq!(back.rejected, s.rejected);
        assert_eq!(back.versions.len(), 3);
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

    /// One step of a node's life. Images come from a small pool of digests so that the
    /// same image is offered again after it failed.
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
        /// `terra upgrade` (`force`: asked for by digest).
        Upgrade {
            tries: u32,
            image: u8,
            force: bool,
        },
        /// `terra upgrade --download-only`.
        Stage {
            image: u8,
        },
        /// `terra apply`, of the newest staged version or the `pick`th.
        Apply {
            tries: u32,
            pick: Option<usize>,
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
            (0u32..4, 0u8..4, proptest::bool::weighted(0.1)).prop_map(|(tries, image, force)| {
                Step::Upgrade {
                    tries,
                    image,
                    force,
                }
            }),
            (0u8..4).prop_map(|image| Step::Stage { image }),
            (0u32..4, proptest::option::of(0usize..3))
                .prop_map(|(tries, pick)| Step::Apply { tries, pick }),
            Just(Step::Rollback),
            (1usize..4).prop_map(|keep| Step::Gc { keep }),
        ];
        leaf.prop_recursive(1, 2, 1, |inner| {
            inner.prop_map(|s| Step::CrashDuring(Box::new(s)))
        })
    }

    /// The node: its state, the last version name given, and what the running system
    /// booted.
    struct Node {
        s: BootState,
        n: u32,
        booted: Option<String>,
        /// Versions whose kexec never reached the root: none may be kexecd into again.
        lost: Vec<String>,
    }

    impl Node {
        fn new_version(&mut self, image: u8) -> Version {
            self.n += 1;
            with_digest(&format!("v{}", self.n), &format!("sha256:{image}"))
        }
    }

    /// Applies a step as stage0 and terra do (`lifecycle.rs` for the commands), checking
    /// the rules each step must keep.
    fn apply(node: &mut Node, step: &Step) -> Result<(), TestCaseError> {
        let before = node.s.clone();
        match step {
            Step::KexecBoot { arrives } => {
                node.booted = None;
                node.s.kexec_unfinished();
                let first = node.s.begin_boot()[0].name.clone();
                if node
                    .s
                    .get(&first)
                    .is_some_and(|v| v.kernel_failed.is_none())
                {
                    prop_assert!(!node.lost.contains(&first), "{first} is kexecd into again");
                    node.s.kexec_started(&first);
                    if *arrives {
                        node.s.kexec_arrived(&first);
                        node.booted = Some(first);
                    } else {
                        node.lost.push(first);
                    }
                } else {
                    node.booted = Some(first);
                }
            }
            Step::Unhealthy => {
                if let Some(b) = node.booted.clone() {
                    let failure = HealthFailure {
                        check: "10-x".into(),
                        result: "exit status 1".into(),
                        output: String::new(),
                    };
                    if node.s.reject_unhealthy(&b, failure).is_ok() {
                        prop_assert_eq!(&node.s.get(&b).unwrap().status, &Status::Bad);
                        prop_assert!(node.s.get(&b).unwrap().health.is_some());
                        prop_assert!(node
                            .s
                            .rejection(&node.s.get(&b).unwrap().digest.clone())
                            .is_some());
                    }
                }
            }
            Step::Boot { fail } => {
                node.booted = None;
                node.s.kexec_unfinished();
                let candidates = node.s.begin_boot();
                for (i, c) in candidates.iter().enumerate() {
                    prop_assert!(node.s.staged_version(&c.name).is_none(), "staged {c:?}");
                    if fail.get(i).copied().unwrap_or(false) {
                        node.s.mark_bad(&c.name, "failed in the initramfs");
                    } else {
                        node.booted = Some(c.name.clone());
                        break;
                    }
                }
                prop_assert_eq!(
                    &node.s.staged,
                    &before.staged,
                    "a boot never touches staged ones"
                );
            }
            Step::Confirm => {
                if let Some(b) = node.booted.clone() {
                    let _ = node.s.confirm(&b);
                }
            }
            Step::Reject => {
                let _ = node.s.reject(None, "rejected");
            }
            Step::Upgrade {
                tries,
                image,
                force,
            } => {
                let digest = format!("sha256:{image}");
                if node.s.settled_boot(node.booted.as_deref()).is_ok() {
                    match node.s.admit(&digest, *force) {
                        Err(StateError::Rejected(r)) => {
                            prop_assert!(!force && r.digest == digest);
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                        Ok(Admission::Present(name)) => {
                            prop_assert!(node
                                .s
                                .get(&name)
                                .is_some_and(|v| v.status != Status::Bad));
                        }
                        Ok(Admission::Staged(name)) => {
                            prop_assert_eq!(
                                node.s.apply_staged(Some(&name), *tries, *force)?,
                                name
                            );
                        }
                        Ok(Admission::New) => {
                            prop_assert!(*force || node.s.rejection(&digest).is_none());
                            let v = node.new_version(*image);
                            node.s.add_tentative(v, *tries)?;
                        }
                    }
                }
            }
            Step::Stage { image } => {
                let digest = format!("sha256:{image}");
                if node.s.settled_boot(node.booted.as_deref()).is_ok() {
                    if let Ok(Admission::New) = node.s.admit(&digest, false) {
                        let v = node.new_version(*image);
                        node.s.add_staged(v)?;
                    }
                }
            }
            Step::Apply { tries, pick } => {
                let name = pick
                    .and_then(|i| node.s.staged.get(i))
                    .map(|v| v.name.clone());
                let refused = node.s.settled_boot(node.booted.as_deref()).is_err();
                if !refused {
                    match node.s.apply_staged(name.as_deref(), *tries, false) {
                        Ok(applied) => {
                            let t = node.s.tentative().unwrap();
                            prop_assert_eq!(&t.name, &applied);
                            prop_assert!(node.s.rejection(&t.digest).is_none());
                        }
                        Err(_) => {
                            prop_assert_eq!(&node.s, &before, "a refused apply changes nothing")
                        }
                    }
                }
            }
            Step::Rollback => {
                let _ = node.s.rollback();
            }
            Step::Gc { keep } => {
                for name in node.s.collectable(*keep, node.booted.as_deref()) {
                    node.s.remove(&name);
                }
                prop_assert_eq!(
                    &node.s.rejected,
                    &before.rejected,
                    "the memory outlives the versions"
                );
                // Never what boots next or what apply takes.
                let mut kept = vec![before.default.clone()];
                kept.extend(node.booted.clone());
                kept.extend(before.tentative().map(|t| t.name.clone()));
                kept.extend(before.good_fallbacks().first().map(|v| v.name.clone()));
                kept.extend(before.staged.last().map(|v| v.name.clone()));
                for k in kept {
                    prop_assert!(node.s.knows(&k), "{k} was collected");
                }
            }
            Step::CrashDuring(inner) => {
                let mut scratch = Node {
                    s: node.s.clone(),
                    n: node.n,
                    booted: node.booted.clone(),
                    lost: node.lost.clone(),
                };
                apply(&mut scratch, inner)?;
                node.n = scratch.n;
                node.booted = scratch.booted;
            }
        }
        // Whatever failed in this step is remembered; what was superseded is not.
        if !matches!(step, Step::CrashDuring(_)) {
            for v in &node.s.versions {
                let was = before.get(&v.name).map(|b| &b.status);
                if v.status == Status::Bad && was.is_some_and(|w| *w != Status::Bad) {
                    let superseded = v.reason.as_deref().unwrap_or("").starts_with("superseded");
                    if superseded {
                        prop_assert_eq!(
                            node.s.rejection(&v.digest),
                            before.rejection(&v.digest),
                            "superseded {} is not remembered",
                            &v.name
                        );
                    } else {
                        prop_assert!(
                            node.s
                                .rejection(&v.digest)
                                .is_some_and(|r| r.name == v.name),
                            "{} became bad ({:?}) and is not remembered",
                            &v.name,
                            &v.reason
                        );
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        /// Every sequence of boots (with any candidates failing), confirmations,
        /// rejections, upgrades, staging, applies, rollbacks, collections and crashes
        /// leaves a state that passes its invariants, whose default is a good version that
        /// still exists, and whose candidates at the next boot are never bad nor staged.
        #[test]
        fn every_history_keeps_a_bootable_default(steps in proptest::collection::vec(step(), 0..40)) {
            let mut node = Node { s: BootState::new(version("os")), n: 1, booted: None, lost: Vec::new() };
            for st in &steps {
                apply(&mut node, st)?;
                let s = &node.s;
                prop_assert!(s.check().is_ok(), "{:?} after {st:?}", s.check());
                let mut next = s.clone();
                let c = next.begin_boot();
                prop_assert!(!c.is_empty());
                for cand in &c {
                    prop_assert!(next.get(&cand.name).is_some_and(|v| v.status != Status::Bad));
                    prop_assert!(next.staged_version(&cand.name).is_none());
                }
                let tentative = s.versions.iter().filter(|v| v.status == Status::Tentative).count();
                prop_assert!(tentative <= 1);
                // The state survives its own file.
                let json = serde_json::to_vec(s).unwrap();
                prop_assert_eq!(&parse(&json, Path::new("state.json")).unwrap(), s);
            }
        }

        #[test]
        fn arbitrary_state_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes, Path::new("state.json"));
        }
    }
}
