//! `terra extension add|remove|list`: extension images (issue 28) kept beside the
//! versions. Each is a read-only subvolume `.terra/extensions/<NAME>-<digest12>` made from
//! layer chains like a version ([`unpack_tree`]), named by the list
//! `.terra/extensions.list` ([`terra_init::extensions::Entry`]), which is written whole
//! (temporary file, fsync, rename). stage0 applies what the list names at the next boot.
//!
//! Crash safety: the tree is built in `.terra/staging-.extension` (swept like a version's
//! staging), checked, renamed into place, and only then named by a stored list; a
//! subvolume the list does not name (a run killed before the store, or after the store of
//! a removal) is deleted by the next `terra extension` command.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use terra_init::bootstate::STATE_DIR;
use terra_init::extensions::{
    check, format_list, host_architecture, parse_list, valid_name, Entry, EXTENSIONS_DIR,
    LIST_FILE, RELEASE_DIR, RELEASE_PREFIX,
};

use super::build::{chain_dir, set_read_only, sync_tree, unpack_tree};
use super::disk::subvolume_delete;
use super::keys::{combine_policy, disk_keys};
use super::top::{chains_on_disk, downloads_dir, open, Top};
use super::{io_err, log_line, Target, VersionsError};
use crate::oci::{self, ApplyOptions, ImageRef, Progress, ResolveOptions};

/// The staging subvolume under `.terra` (a version name never starts with a dot).
const STAGING: &str = "staging-.extension";

/// What `terra extension add` did.
#[derive(Debug, Clone)]
pub enum Added {
    /// An extension of that name with that digest is there already.
    Same(Entry),
    /// Added (or replaced an older one of the same name: `replaced` is its digest).
    New {
        /// The extension as listed now.
        entry: Entry,
        /// The digest of the one it replaced.
        replaced: Option<String>,
        /// Whether it fits the default version, and why not.
        fits: Result<(), String>,
    },
}

/// One line of `terra extension list`.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The extension.
    pub entry: Entry,
    /// Whether it fits the default version (named), and why not.
    pub fits: Result<(), String>,
    /// The default version.
    pub version: String,
}

/// `terra extension add`: fetches and checks `reference` (its signature like `terra
/// upgrade`'s), unpacks it, checks that it is an extension (one
/// `usr/lib/extension-release.d/extension-release.NAME`, nothing outside `/usr` and
/// `/etc`) and keeps it. A refused image leaves nothing on the disk.
pub fn add(
    target: &Target,
    reference: &str,
    resolve: &ResolveOptions,
    apply: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Added, VersionsError> {
    let r: ImageRef = reference.parse()?;
    let top = open(target)?;
    let mut entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
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
    top.clear_downloads();
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
    if let Some(same) = entries
        .iter()
        .find(|e| e.name == name && e.digest == digest)
    {
        let _ = subvolume_delete(&staging);
        return Ok(Added::Same(same.clone()));
    }
    let hex = digest.rsplit(':').next().unwrap_or_default();
    let subvolume = format!("{name}-{}", &hex[..hex.len().min(12)]);
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
    let entry = Entry {
        name: name.clone(),
        subvolume,
        digest,
        image: reference.to_string(),
        verified_by: image
            .verified
            .as_ref()
            .map(|k| format!("{} ({})", k.key, k.key_fingerprint))
            .unwrap_or_default(),
    };
    let old = entries.iter().position(|e| e.name == name);
    let old = old.map(|i| entries.remove(i));
    entries.push(entry.clone());
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    write_list(&top.path, &entries)?;
    if let Some(o) = &old {
        remove_subvolume(&dir.join(&o.subvolume));
    }
    let fits = fits_default(&top, &entry).map(|(_, f)| f)?;
    Ok(Added::New {
        entry,
        replaced: old.map(|o| o.digest),
        fits,
    })
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

/// `terra extension remove`: forgets the extension named `what` (its NAME or the image
/// reference it was added from) and deletes its subvolume; the next boot is without it.
pub fn remove(target: &Target, what: &str) -> Result<Entry, VersionsError> {
    let top = open(target)?;
    let mut entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
    let i = entries
        .iter()
        .position(|e| e.name == what)
        .or_else(|| entries.iter().position(|e| e.image == what))
        .ok_or_else(|| {
            VersionsError::Refused(format!(
                "{}: no extension {what:?} (`terra extension list` names them)",
                top.disk
            ))
        })?;
    let gone = entries.remove(i);
    write_list(&top.path, &entries)?;
    remove_subvolume(
        &top.path
            .join(STATE_DIR)
            .join(EXTENSIONS_DIR)
            .join(&gone.subvolume),
    );
    Ok(gone)
}

/// `terra extension list`: the extensions, each with whether it fits the default version.
pub fn list(target: &Target) -> Result<Vec<Listed>, VersionsError> {
    let top = open(target)?;
    let entries = read_list(&top.path)?;
    sweep(&top.path, &entries);
    entries
        .into_iter()
        .map(|entry| {
            let (version, fits) = fits_default(&top, &entry)?;
            Ok(Listed {
                entry,
                fits,
                version,
            })
        })
        .collect()
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

/// The default version's name and whether `entry` fits it.
fn fits_default(top: &Top, entry: &Entry) -> Result<(String, Result<(), String>), VersionsError> {
    let state = top.state()?;
    let root = top.path.join(&state.default);
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| fs::read_to_string(root.join(p)).ok())
        .unwrap_or_default();
    let release = top
        .path
        .join(STATE_DIR)
        .join(EXTENSIONS_DIR)
        .join(&entry.subvolume)
        .join(RELEASE_DIR)
        .join(format!("{RELEASE_PREFIX}{}", entry.name));
    let fits = fs::read_to_string(&release)
        .map_err(|e| format!("{}: {e}", release.display()))
        .and_then(|r| check(&r, &os, host_architecture()));
    Ok((state.default, fits))
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
