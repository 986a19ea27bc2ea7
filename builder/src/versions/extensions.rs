//! `terra extension add|remove|list`: extension images (issue 28) kept beside the
//! versions. Each is a read-only subvolume `.terra/extensions/<NAME>-<digest12>` made from
//! layer chains like a version ([`unpack_tree`]), named by the list
//! `.terra/extensions.list` ([`terra_init::extensions::Entry`]), which is written whole
//! (temporary file, fsync, rename). stage0 applies what the list names at the next boot,
//! per NAME the first entry that fits the version ([`select`]).
//!
//! A reference may be a template (`{ID}`, `{VERSION_ID}`, `{ARCH}`, [`expand`]): `add`
//! expands it for the default version and keeps it in the list, and `terra upgrade`
//! ([`for_version`]) expands it again for a new version that no entry of that NAME fits,
//! fetching that image before the version becomes a candidate.
//!
//! Crash safety: the tree is built in `.terra/staging-.extension` (swept like a version's
//! staging), checked, renamed into place, and only then named by a stored list; a
//! subvolume the list does not name (a run killed before the store, or after the store of
//! a removal) is deleted by the next `terra extension` command or upgrade.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use terra_init::bootstate::{BootState, STATE_DIR};
use terra_init::extensions::{
    check, field, format_list, host_architecture, parse_list, select, valid_name, Entry,
    EXTENSIONS_DIR, LIST_FILE, RELEASE_DIR, RELEASE_PREFIX,
};

use super::build::{chain_dir, set_read_only, sync_tree, unpack_tree};
use super::crash::crash_point;
use super::disk::subvolume_delete;
use super::keys::{combine_policy, disk_keys};
use super::top::{chains_on_disk, downloads_dir, open, Top};
use super::{io_err, log_line, Target, VersionsError};
use crate::oci::{self, ApplyOptions, ImageRef, Progress, ResolveOptions};

/// The staging subvolume under `.terra` (a version name never starts with a dot).
const STAGING: &str = "staging-.extension";

/// The placeholders a template reference may hold.
pub const PLACEHOLDERS: [&str; 3] = ["{ID}", "{VERSION_ID}", "{ARCH}"];

/// What `terra extension add` did.
#[derive(Debug, Clone)]
pub enum Added {
    /// An extension of that name with that digest is there already.
    Same(Entry),
    /// Added, replacing the older ones of the same name that no version needs more than
    /// it (`replaced`: their digests).
    New {
        /// The extension as listed now.
        entry: Entry,
        /// The digests of those it replaced.
        replaced: Vec<String>,
        /// Whether it fits the default version, and why not.
        fits: Result<(), String>,
    },
}

/// One line of `terra extension list`.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The extension.
    pub entry: Entry,
    /// Whether stage0 applies it on the default version (named), and why not.
    pub fits: Result<(), String>,
    /// The default version.
    pub version: String,
    /// The versions on the disk stage0 applies it on.
    pub versions: Vec<String>,
}

/// Why a template reference does not expand for a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{…}` that is not one of [`PLACEHOLDERS`].
    Unknown {
        /// The template.
        reference: String,
        /// What it holds.
        placeholder: String,
    },
    /// A `{` without its `}`, or a `}` alone.
    Unbalanced {
        /// The template.
        reference: String,
    },
    /// The version's os-release lacks the field (or its value is not a tag's part).
    Missing {
        /// The template.
        reference: String,
        /// The os-release field.
        field: &'static str,
        /// The version.
        version: String,
        /// The value, when there is one that cannot stand in a reference.
        value: Option<String>,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = PLACEHOLDERS.join(", ");
        match self {
            TemplateError::Unknown {
                reference,
                placeholder,
            } => write!(
                f,
                "extension {reference}: unknown placeholder {placeholder} (a template holds \
                 {known})"
            ),
            TemplateError::Unbalanced { reference } => write!(
                f,
                "extension {reference}: unbalanced braces (a template holds {known})"
            ),
            TemplateError::Missing {
                reference,
                field,
                version,
                value: None,
            } => write!(
                f,
                "extension {reference}: version {version}'s os-release has no {field} to \
                 expand the template with"
            ),
            TemplateError::Missing {
                reference,
                field,
                version,
                value: Some(v),
            } => write!(
                f,
                "extension {reference}: version {version}'s os-release has {field}={v:?}, \
                 which cannot stand in a reference (letters, digits, ._-)"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Why `terra upgrade` refused a version: an extension on the disk does not fit it and no
/// image that does could be fetched.
#[derive(Debug, Clone)]
pub struct Misfit {
    /// The disk.
    pub disk: String,
    /// The extension's NAME.
    pub name: String,
    /// The images listed for it.
    pub images: Vec<String>,
    /// The new version.
    pub version: String,
    /// Its os-release, in short (`ID=… VERSION_ID=…`).
    pub os: String,
    /// Why it does not fit, and why nothing that fits was fetched.
    pub why: String,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: upgrade refused: extension {} ({}) does not fit the new version {} ({}): \
             {}. Nothing was kept; `terra extension remove {}` lets versions come without it",
            self.disk,
            self.name,
            self.images.join(", "),
            self.version,
            self.os,
            self.why,
            self.name
        )
    }
}

/// Whether `reference` is a template (holds a `{`).
pub fn is_template(reference: &str) -> bool {
    reference.contains(['{', '}'])
}

/// `template` with its placeholders replaced from `os` (the os-release of `version`):
/// `{ID}` (`linux` when absent, as os-release(5) says), `{VERSION_ID}`, `{ARCH}` (its
/// `ARCHITECTURE`, else this machine's as systemd names it: `x86-64`, `arm64`…).
pub fn expand(template: &str, os: &str, version: &str) -> Result<String, TemplateError> {
    let unbalanced = || TemplateError::Unbalanced {
        reference: template.to_string(),
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let after = rest[i..].strip_prefix('{').ok_or_else(unbalanced)?;
        let end = after.find('}').ok_or_else(unbalanced)?;
        let key = &after[..end];
        if key.contains('{') {
            return Err(unbalanced());
        }
        let (name, value) = match key {
            "ID" => ("ID", Some(field(os, "ID").unwrap_or("linux"))),
            "VERSION_ID" => ("VERSION_ID", field(os, "VERSION_ID")),
            "ARCH" => (
                "ARCHITECTURE",
                Some(field(os, "ARCHITECTURE").unwrap_or(host_architecture())),
            ),
            _ => {
                return Err(TemplateError::Unknown {
                    reference: template.to_string(),
                    placeholder: format!("{{{key}}}"),
                })
            }
        };
        let ok = |v: &str| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        match value {
            Some(v) if ok(v) => out.push_str(v),
            v => {
                return Err(TemplateError::Missing {
                    reference: template.to_string(),
                    field: name,
                    version: version.to_string(),
                    value: v.map(str::to_string),
                })
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `terra extension add`: fetches and checks `reference` (a template is expanded for the
/// default version first; its signature is checked like `terra upgrade`'s), unpacks it,
/// checks that it is an extension (one `usr/lib/extension-release.d/extension-release.NAME`,
/// nothing outside `/usr` and `/etc`) and keeps it. Entries of the same NAME go, except
/// those that fit a version on the disk the new one does not fit, and one holding the
/// NAME's template when the new one is no template. A refused image leaves nothing on the
/// disk.
pub fn add(
    target: &Target,
    reference: &str,
    resolve: &ResolveOptions,
    apply: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Added, VersionsError> {
    let top = open(target)?;
    let mut entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
    let state = top.state()?;
    let default_os = os_release(&top.path, &state.default);
    let (template, r) = if is_template(reference) {
        let r = expand(reference, &default_os, &state.default)?;
        (reference.to_string(), r)
    } else {
        (String::new(), reference.to_string())
    };
    let fetched = fetch(&top, &entries, &r, &template, resolve, apply, progress);
    top.clear_downloads();
    let entry = match fetched? {
        Fetched::Listed(mut same) => {
            // Added again as a template: later upgrades expand it.
            if !template.is_empty() && same.template != template {
                for e in entries.iter_mut().filter(|e| e.subvolume == same.subvolume) {
                    e.template.clone_from(&template);
                }
                write_list(&top.path, &entries)?;
                same.template = template;
            }
            return Ok(Added::Same(same));
        }
        Fetched::New(e) => e,
    };
    let versions = version_oses(&top.path, &state);
    let new_fits: Vec<bool> = versions
        .iter()
        .map(|(_, os)| fits(&top.path, &entry, os).is_ok())
        .collect();
    let (mut kept, mut gone) = (Vec::new(), Vec::new());
    for e in entries {
        let serves = e.name != entry.name
            || versions
                .iter()
                .zip(&new_fits)
                .any(|((_, os), new)| !new && fits(&top.path, &e, os).is_ok());
        if serves {
            kept.push(e);
        } else {
            gone.push(e);
        }
    }
    // The NAME's template stays until `remove`: with an entry holding it, if the new one
    // does not.
    let held = |v: &[Entry]| {
        v.iter()
            .any(|e| e.name == entry.name && !e.template.is_empty())
    };
    if entry.template.is_empty() && !held(&kept) {
        if let Some(i) = gone.iter().position(|e| !e.template.is_empty()) {
            kept.push(gone.remove(i));
            kept.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    // First among its NAME: where an older one fits too, the new one is applied.
    let at = kept
        .iter()
        .position(|e| e.name >= entry.name)
        .unwrap_or(kept.len());
    kept.insert(at, entry.clone());
    write_list(&top.path, &kept)?;
    for o in &gone {
        remove_subvolume(&extension_dir(&top.path, o));
    }
    let fits = fits(&top.path, &entry, &default_os);
    Ok(Added::New {
        entry,
        replaced: gone.into_iter().map(|o| o.digest).collect(),
        fits,
    })
}

/// What [`fetch`] found.
enum Fetched {
    /// An entry of the list has that name and digest.
    Listed(Entry),
    /// A new subvolume, read-only, in place; the list does not name it yet.
    New(Entry),
}

/// Fetches `reference` (not a template) as `terra extension add` does: resolved with the
/// disk's keys and `[signature]` policy plus `resolve`'s, unpacked, checked, renamed into
/// `.terra/extensions/` read-only. The caller lists it (or deletes it).
fn fetch(
    top: &Top,
    entries: &[Entry],
    reference: &str,
    template: &str,
    resolve: &ResolveOptions,
    apply: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Fetched, VersionsError> {
    let r: ImageRef = reference.parse()?;
    let node = top.node()?;
    let mut resolve = resolve.clone();
    let kept = disk_keys(&top.path).map_err(|e| VersionsError::Refused(e.to_string()))?;
    resolve.verify = combine_policy(
        resolve.verify.as_ref(),
        kept,
        node.signature.require,
        &top.disk,
    )
    .map_err(|e| VersionsError::Refused(format!("extension {reference}: {e}")))?;
    resolve.download_dir = Some(downloads_dir(&top.path));
    resolve.have_chains = chains_on_disk(&top.path)?;
    let image = oci::resolve_with(&r, &resolve, progress)?;
    let staging = top.path.join(STATE_DIR).join(STAGING);
    let (chains, built) = unpack_tree(&top.path, &staging, &image, apply, true, progress)?;
    let name = match extension_name(&staging) {
        Ok(n) => n,
        Err(why) => {
            // Nothing kept: the tree and the chains this run made.
            let _ = subvolume_delete(&staging);
            for c in &chains[built.reused..] {
                let _ = subvolume_delete(&chain_dir(&top.path, c));
            }
            return Err(VersionsError::Refused(format!(
                "{reference} is not an extension: {why} (nothing was kept)"
            )));
        }
    };
    let digest = image
        .manifest_digest
        .as_ref()
        .map(|d| d.to_string())
        .or_else(|| chains.last().cloned())
        .unwrap_or_default();
    let hex = digest.rsplit(':').next().unwrap_or_default();
    let subvolume = format!("{name}-{}", &hex[..hex.len().min(12)]);
    if let Some(same) = entries
        .iter()
        .find(|e| e.subvolume == subvolume || (e.name == name && e.digest == digest))
    {
        let _ = subvolume_delete(&staging);
        return Ok(Fetched::Listed(same.clone()));
    }
    let dir = top.path.join(STATE_DIR).join(EXTENSIONS_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let dest = dir.join(&subvolume);
    let kept = sync_tree(&staging)
        .and_then(|()| fs::rename(&staging, &dest).map_err(io_err(&dest)))
        .and_then(|()| set_read_only(&dest));
    if let Err(e) = kept {
        let _ = subvolume_delete(&staging);
        let _ = subvolume_delete(&dest);
        return Err(e);
    }
    Ok(Fetched::New(Entry {
        name,
        subvolume,
        digest,
        image: reference.to_string(),
        verified_by: image
            .verified
            .as_ref()
            .map(|k| format!("{} ({})", k.key, k.key_fingerprint))
            .unwrap_or_default(),
        template: template.to_string(),
    }))
}

/// Before version `version` (built, not yet in the stored state) becomes a candidate:
/// every extension NAME on the disk needs an entry that fits it. For a NAME without one,
/// its template expanded for `version` is fetched like `terra extension add` fetches
/// (`resolve` as the upgrade's, plus the disk's keys and policy) and listed after that
/// NAME's entries (the older versions keep theirs). Returns what was fetched, listed;
/// refuses with a [`Misfit`] when nothing fitting can be had, after deleting what this
/// call fetched (the list unchanged).
pub(super) fn for_version(
    top: &Top,
    version: &str,
    resolve: &ResolveOptions,
    apply: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Vec<Entry>, VersionsError> {
    let mut entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
    let os = os_release(&top.path, version);
    let mut names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    names.sort();
    names.dedup();
    let mut fetched: Vec<Entry> = Vec::new();
    for name in names {
        let own: Vec<&Entry> = entries.iter().filter(|e| e.name == name).collect();
        let Err(why) = own
            .iter()
            .map(|e| fits(&top.path, e, &os))
            .find(Result::is_ok)
            .unwrap_or_else(|| fits(&top.path, own[own.len() - 1], &os))
        else {
            continue;
        };
        match fetch_fitting(top, &entries, &own, &os, version, resolve, apply, progress) {
            Ok(e) => fetched.push(e),
            Err(more) => {
                for f in &fetched {
                    remove_subvolume(&extension_dir(&top.path, f));
                }
                return Err(VersionsError::Extension(Box::new(Misfit {
                    disk: top.disk.clone(),
                    name,
                    images: own.iter().map(|e| e.image.clone()).collect(),
                    version: version.to_string(),
                    os: os_summary(&os),
                    why: format!("{why}; {more}"),
                })));
            }
        }
    }
    if fetched.is_empty() {
        return Ok(fetched);
    }
    for f in &fetched {
        let at = entries
            .iter()
            .rposition(|e| e.name <= f.name)
            .map_or(0, |i| i + 1);
        entries.insert(at, f.clone());
    }
    if let Err(e) = write_list(&top.path, &entries) {
        for f in &fetched {
            remove_subvolume(&extension_dir(&top.path, f));
        }
        return Err(e);
    }
    crash_point("extensions");
    Ok(fetched)
}

/// For [`for_version`]: the image `own`'s template names for the version whose os-release
/// is `os`, fetched, checked to be that extension and to fit; Err says why there is none.
#[allow(clippy::too_many_arguments)]
fn fetch_fitting(
    top: &Top,
    entries: &[Entry],
    own: &[&Entry],
    os: &str,
    version: &str,
    resolve: &ResolveOptions,
    apply: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Entry, String> {
    let name = &own[0].name;
    let Some(template) = own
        .iter()
        .map(|e| e.template.as_str())
        .find(|t| !t.is_empty())
    else {
        return Err(format!(
            "its reference is no template (with {}) that could name an image for this \
             version",
            PLACEHOLDERS.join(", ")
        ));
    };
    let r = expand(template, os, version).map_err(|e| e.to_string())?;
    if own.iter().any(|e| e.image == r) {
        return Err(format!(
            "its template {template} names {r} for this version, the image it has"
        ));
    }
    let fetched = fetch(top, entries, &r, template, resolve, apply, progress);
    let e = match fetched {
        Ok(Fetched::New(e)) => e,
        Ok(Fetched::Listed(e)) => {
            return Err(format!(
                "{r} (its template {template} for this version) is {}, listed already",
                e.digest
            ))
        }
        Err(err) => {
            return Err(format!(
                "{r} (its template {template} for this version) cannot be fetched: {err}"
            ))
        }
    };
    let wrong = if e.name != *name {
        Some(format!("{r} is extension {}, not {name}", e.name))
    } else {
        fits(&top.path, &e, os).err().map(|w| {
            format!("{r} (its template {template} for this version) does not fit either: {w}")
        })
    };
    match wrong {
        Some(w) => {
            remove_subvolume(&extension_dir(&top.path, &e));
            Err(w)
        }
        None => Ok(e),
    }
}

/// After a collection (`terra gc`, and after each upgrade): an entry stage0 would apply
/// on no version of `state` goes when another of its NAME is applied on one (fetched for a
/// version since collected, or left by a killed upgrade); the only ones of a NAME stay
/// (they may wait for a version to come), and so does one holding a template when no
/// applied one of its NAME holds one. Returns what went.
pub(super) fn prune(top: &Path, state: &BootState) -> Result<Vec<Entry>, VersionsError> {
    let entries = read_list(top)?;
    if entries.is_empty() {
        return Ok(entries);
    }
    let applied = applied_on(top, &entries, &version_oses(top, state));
    let used = |e: &Entry| applied.get(&e.subvolume).is_some_and(|v| !v.is_empty());
    let others = |e: &Entry, template: bool| {
        entries
            .iter()
            .any(|o| o.name == e.name && used(o) && (!template || !o.template.is_empty()))
    };
    // Kept: used, the only ones of the NAME, or holding a template no used one holds.
    let (kept, gone): (Vec<Entry>, Vec<Entry>) = entries.iter().cloned().partition(|e| {
        used(e) || !others(e, false) || (!e.template.is_empty() && !others(e, true))
    });
    if gone.is_empty() {
        return Ok(gone);
    }
    write_list(top, &kept)?;
    for g in &gone {
        remove_subvolume(&extension_dir(top, g));
    }
    Ok(gone)
}

/// The images the node.toml kept on the disk lists in `[[extensions]]`.
pub fn node_images(target: &Target) -> Result<Vec<String>, VersionsError> {
    let top = open(target)?;
    Ok(top
        .node()?
        .extensions
        .into_iter()
        .map(|e| e.image)
        .collect())
}

/// `terra extension remove`: forgets the extensions named `what` (every entry of that
/// NAME, else those added from that image or template) and deletes their subvolumes; the
/// next boot is without them.
pub fn remove(target: &Target, what: &str) -> Result<Vec<Entry>, VersionsError> {
    let top = open(target)?;
    let entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
    let by_name = entries.iter().any(|e| e.name == what);
    let (gone, kept): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| {
        if by_name {
            e.name == what
        } else {
            e.image == what || e.template == what
        }
    });
    if gone.is_empty() {
        return Err(VersionsError::Refused(format!(
            "{}: no extension {what:?} (`terra extension list` names them)",
            top.disk
        )));
    }
    write_list(&top.path, &kept)?;
    for g in &gone {
        remove_subvolume(&extension_dir(&top.path, g));
    }
    Ok(gone)
}

/// `terra extension list`: the extensions in the order stage0 considers them, each with
/// whether it is applied on the default version and the versions it is applied on.
pub fn list(target: &Target) -> Result<Vec<Listed>, VersionsError> {
    let top = open(target)?;
    let entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
    let state = top.state()?;
    let mut applied = applied_on(&top.path, &entries, &version_oses(&top.path, &state));
    let default_os = os_release(&top.path, &state.default);
    Ok(select(entries, |e| fits(&top.path, e, &default_os))
        .into_iter()
        .map(|(entry, fits)| Listed {
            versions: applied.remove(&entry.subvolume).unwrap_or_default(),
            entry,
            fits,
            version: state.default.clone(),
        })
        .collect())
}

/// The extension's name from its one `extension-release.NAME`, after checking that the
/// tree holds nothing outside `usr/` and `etc/`.
fn extension_name(tree: &Path) -> Result<String, String> {
    let mut outside: Vec<String> = Vec::new();
    let entries = fs::read_dir(tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", tree.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.file_type().is_ok_and(|t| t.is_dir());
        if !(dir && (name == "usr" || name == "etc")) {
            outside.push(format!("/{name}"));
        }
    }
    if !outside.is_empty() {
        outside.sort();
        return Err(format!(
            "it holds {} (an extension holds directories /usr and /etc only)",
            outside.join(", ")
        ));
    }
    let rel = tree.join(RELEASE_DIR);
    let mut names: Vec<String> = fs::read_dir(&rel)
        .map_err(|_| format!("no /{RELEASE_DIR}/{RELEASE_PREFIX}NAME"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix(RELEASE_PREFIX).map(str::to_string)
        })
        .collect();
    names.sort();
    match names.as_slice() {
        [] => Err(format!("no /{RELEASE_DIR}/{RELEASE_PREFIX}NAME")),
        [n] if !valid_name(n) => Err(format!(
            "/{RELEASE_DIR}/{RELEASE_PREFIX}{n}: {n:?} is not a valid name (letters, digits, \
             -_.+@)"
        )),
        [n] if !rel.join(format!("{RELEASE_PREFIX}{n}")).is_file() => Err(format!(
            "/{RELEASE_DIR}/{RELEASE_PREFIX}{n} is not a regular file"
        )),
        [n] => Ok(n.clone()),
        more => Err(format!(
            "/{RELEASE_DIR} names {} extensions ({}); one image is one extension",
            more.len(),
            more.join(", ")
        )),
    }
}

/// The os-release of version `version` under `top` (`/etc/os-release`, else
/// `/usr/lib/os-release`; empty when it has neither).
fn os_release(top: &Path, version: &str) -> String {
    let root = top.join(version);
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| fs::read_to_string(root.join(p)).ok())
        .unwrap_or_default()
}

/// The versions of `state` (staged ones too), each with its os-release.
fn version_oses(top: &Path, state: &BootState) -> Vec<(String, String)> {
    state
        .versions
        .iter()
        .chain(&state.staged)
        .map(|v| (v.name.clone(), os_release(top, &v.name)))
        .collect()
}

/// An entry's subvolume.
fn extension_dir(top: &Path, e: &Entry) -> PathBuf {
    top.join(STATE_DIR).join(EXTENSIONS_DIR).join(&e.subvolume)
}

/// Whether `entry` fits the version whose os-release is `os` (the shared rules,
/// [`check`], on this machine's architecture), and why not.
fn fits(top: &Path, entry: &Entry, os: &str) -> Result<(), String> {
    let release = extension_dir(top, entry)
        .join(RELEASE_DIR)
        .join(format!("{RELEASE_PREFIX}{}", entry.name));
    fs::read_to_string(&release)
        .map_err(|e| format!("{}: {e}", release.display()))
        .and_then(|r| check(&r, os, host_architecture()))
}

/// For each entry (by subvolume), the versions of `versions` stage0 applies it on.
fn applied_on(
    top: &Path,
    entries: &[Entry],
    versions: &[(String, String)],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = entries
        .iter()
        .map(|e| (e.subvolume.clone(), Vec::new()))
        .collect();
    for (name, os) in versions {
        for (e, r) in select(entries.to_vec(), |e| fits(top, e, os)) {
            if r.is_ok() {
                out.entry(e.subvolume).or_default().push(name.clone());
            }
        }
    }
    out
}

/// `ID=… VERSION_ID=…` (those of the os-release fields the rules read that it has).
fn os_summary(os: &str) -> String {
    let fields: Vec<String> = ["ID", "VERSION_ID", "SYSEXT_LEVEL", "ARCHITECTURE"]
        .iter()
        .filter_map(|k| field(os, k).map(|v| format!("{k}={v}")))
        .collect();
    if fields.is_empty() {
        "its os-release names no ID or VERSION_ID".into()
    } else {
        fields.join(" ")
    }
}

fn list_path(top: &Path) -> PathBuf {
    top.join(STATE_DIR).join(LIST_FILE)
}

/// The list on the disk (empty when there is none).
fn read_list(top: &Path) -> Result<Vec<Entry>, VersionsError> {
    let p = list_path(top);
    match fs::read_to_string(&p) {
        Ok(t) => {
            parse_list(&t).map_err(|e| VersionsError::Refused(format!("{}: {e}", p.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(VersionsError::Io { path: p, err: e }),
    }
}

/// Stores the list: a temporary file, fsync, rename.
fn write_list(top: &Path, entries: &[Entry]) -> Result<(), VersionsError> {
    let p = list_path(top);
    let tmp = p.with_extension("list.tmp");
    let written = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(format_list(entries).as_bytes())
                .and_then(|()| f.sync_all())
        })
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, &p).map_err(io_err(&p)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Deletes the subvolumes under `.terra/extensions` that `entries` do not name.
fn sweep(top: &Path, entries: &[Entry]) {
    let dir = top.join(STATE_DIR).join(EXTENSIONS_DIR);
    let Ok(found) = fs::read_dir(&dir) else {
        return;
    };
    for e in found.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !entries.iter().any(|x| x.subvolume == name) {
            log_line(&format!(
                "removing {} left by an interrupted run",
                e.path().display()
            ));
            remove_subvolume(&e.path());
        }
    }
}

/// Deletes a subvolume; a failure is said, not fatal (the list no longer names it).
fn remove_subvolume(path: &Path) {
    if let Err(e) = subvolume_delete(path) {
        log_line(&format!("cannot remove {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_from_the_version_s_os_release() {
        let os = "ID=terra-demo\nVERSION_ID=\"2\"\n";
        let t = "reg.example/ext/hello:{ID}-{VERSION_ID}-{ARCH}";
        let want = format!("reg.example/ext/hello:terra-demo-2-{}", host_architecture());
        assert_eq!(expand(t, os, "v2").as_deref(), Ok(want.as_str()));
        let arm = format!("{os}ARCHITECTURE=arm64\n");
        assert_eq!(expand("h:{ARCH}", &arm, "v2").as_deref(), Ok("h:arm64"));
        // No ID in os-release means linux; no template, no change.
        assert_eq!(
            expand("h:{ID}", "VERSION_ID=1\n", "v").as_deref(),
            Ok("h:linux")
        );
        assert_eq!(expand("oci:/x:h", os, "v").as_deref(), Ok("oci:/x:h"));
        assert!(!is_template("oci:/x:h") && is_template(t));

        let e = expand("h:{VERSION}", os, "v2").unwrap_err();
        assert_eq!(
            e,
            TemplateError::Unknown {
                reference: "h:{VERSION}".into(),
                placeholder: "{VERSION}".into()
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("h:{VERSION}") && msg.contains("{VERSION_ID}"),
            "{msg}"
        );
        let e = expand("h:{VERSION_ID}", "ID=t\n", "v3").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("h:{VERSION_ID}") && msg.contains("v3") && msg.contains("no VERSION_ID"),
            "{msg}"
        );
        let e = expand("h:{VERSION_ID}", "VERSION_ID=1/2\n", "v").unwrap_err();
        assert!(e.to_string().contains("\"1/2\""), "{e}");
        for bad in ["h:{ID", "h:ID}", "h:{{ID}}"] {
            assert_eq!(
                expand(bad, os, "v"),
                Err(TemplateError::Unbalanced {
                    reference: bad.into()
                })
            );
        }
    }

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for f in files {
            let p = t.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "ID=_any\n").unwrap();
        }
        t
    }

    #[test]
    fn an_extension_names_itself_once_and_stays_in_usr_and_etc() {
        let rel = "usr/lib/extension-release.d/extension-release.hello";
        let t = tree(&[rel, "usr/bin/hello", "etc/hello.conf"]);
        assert_eq!(extension_name(t.path()), Ok("hello".into()));
        let t = tree(&["usr/bin/hello"]);
        let e = extension_name(t.path()).unwrap_err();
        assert!(
            e.contains("no /usr/lib/extension-release.d/extension-release.NAME"),
            "{e}"
        );
        let t = tree(&[rel, "opt/x", "usr/bin/hello"]);
        let e = extension_name(t.path()).unwrap_err();
        assert!(
            e.contains("/opt") && e.contains("/usr and /etc only"),
            "{e}"
        );
        let t = tree(&[rel, "usr/lib/extension-release.d/extension-release.two"]);
        let e = extension_name(t.path()).unwrap_err();
        assert!(e.contains("2 extensions (hello, two)"), "{e}");
        let t = tree(&["usr/lib/extension-release.d/extension-release.a b"]);
        assert!(extension_name(t.path())
            .unwrap_err()
            .contains("not a valid name"));
    }
}
