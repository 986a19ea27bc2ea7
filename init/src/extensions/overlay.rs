//! The root phase's part of extensions: the fitting ones overlaid, read-only, on the
//! chosen version's `/usr` (and `/etc`, beneath the persistent `/etc` overlay mounted
//! after), all or none.

use std::path::Path;

use nix::mount::{umount2, MntFlags, MsFlags};
use serde::Serialize;

use super::{check, host_architecture, parse_list, EXTENSIONS_DIR, LIST_FILE, RELEASE_DIR};
use crate::bootstate::STATE_DIR;

/// What became of one extension at this boot (boot.json `version.extensions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Its name.
    pub name: String,
    /// The image it was added from.
    pub image: String,
    /// `applied`, `skipped` (it does not fit the version) or `failed` (it fits, but the
    /// overlay could not be mounted: no extension is applied then).
    pub status: &'static str,
    /// Why it was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Overlays the extensions listed under `top` (the top level) that fit the version
/// mounted at `sysroot`, in name order (the first on top), read-only. A failure
/// unmounts what it mounted: the version boots without extensions.
pub fn apply(
    top: &Path,
    sysroot: &Path,
    load_module: &mut dyn FnMut(&str) -> bool,
) -> Vec<Outcome> {
    let list_path = top.join(STATE_DIR).join(LIST_FILE);
    let text = match std::fs::read_to_string(&list_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::error!("extensions: {}: {e}; none applied", list_path.display());
            return Vec::new();
        }
    };
    let mut entries = match parse_list(&text) {
        Ok(l) => l,
        Err(e) => {
            log::error!("extensions: {}: {e}; none applied", list_path.display());
            return Vec::new();
        }
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(sysroot.join(p)).ok())
        .unwrap_or_default();
    let dir = top.join(STATE_DIR).join(EXTENSIONS_DIR);
    let (mut usr, mut etc, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for e in entries {
        let root = dir.join(&e.subvolume);
        let release = root
            .join(RELEASE_DIR)
            .join(format!("extension-release.{}", e.name));
        let fits = std::fs::read_to_string(&release)
            .map_err(|err| format!("{}: {err}", release.display()))
            .and_then(|r| check(&r, &os, host_architecture()));
        let reason = match fits {
            Ok(()) => {
                usr.push(root.join("usr"));
                let e_etc = root.join("etc");
                if e_etc.is_dir() {
                    etc.push(e_etc);
                }
                None
            }
            Err(why) => {
                log::warn!("extensions: {} skipped: {why}", e.name);
                Some(why)
            }
        };
        out.push(Outcome {
            name: e.name,
            image: e.image,
            status: if reason.is_some() {
                "skipped"
            } else {
                "applied"
            },
            reason,
        });
    }
    if usr.is_empty() {
        return out;
    }
    if !load_module("fs-overlay") {
        load_module("overlay");
    }
    let usr_at = sysroot.join("usr");
    let mounted = overlay(&usr, &usr_at).and_then(|()| {
        if etc.is_empty() {
            return Ok(());
        }
        overlay(&etc, &sysroot.join("etc")).inspect_err(|_| {
            let _ = umount2(&usr_at, MntFlags::MNT_DETACH);
        })
    });
    match mounted {
        Ok(()) => log::info!("extensions: {} on /usr (read-only)", usr.len()),
        Err(why) => {
            log::error!("extensions: {why}; the version boots without extensions");
            for o in out.iter_mut().filter(|o| o.status == "applied") {
                o.status = "failed";
                o.reason = Some(why.clone());
            }
        }
    }
    out
}

/// Mounts a read-only overlay on `at` with `lowers` above what is there.
fn overlay(lowers: &[std::path::PathBuf], at: &Path) -> Result<(), String> {
    let mut options = String::from("lowerdir=");
    for l in lowers.iter().chain([&at.to_path_buf()]) {
        // `:` and `,` separate lowerdirs and options: subvolume paths never hold them.
        options.push_str(&l.to_string_lossy());
        options.push(':');
    }
    options.pop();
    nix::mount::mount(
        Some("overlay"),
        at,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .map_err(|e| format!("overlay on {} ({options}): {e}", at.display()))
}
