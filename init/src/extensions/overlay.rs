//! The root phase's part of extensions: the fitting ones overlaid, read-only, on the
//! chosen version's `/usr` (and `/etc`, beneath the persistent `/etc` overlay mounted
//! after), all or none.

use std::path::Path;

use nix::mount::{umount2, MntFlags, MsFlags};
use serde::Serialize;

use super::{check, host_architecture, parse_list, select, EXTENSIONS_DIR, LIST_FILE, RELEASE_DIR};
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
/// mounted at `sysroot` (per NAME the first that fits, [`select`]), in name order (the
/// first on top), read-only. A failure unmounts what it mounted: the version boots
/// without extensions.
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
    let entries = match parse_list(&text) {
        Ok(l) => l,
        Err(e) => {
            log::error!("extensions: {}: {e}; none applied", list_path.display());
            return Vec::new();
        }
    };
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(sysroot.join(p)).ok())
        .unwrap_or_default();
    let dir = top.join(STATE_DIR).join(EXTENSIONS_DIR);
    let (mut usr, mut etc, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let chosen = select(entries, |e| {
        let release = dir
            .join(&e.subvolume)
            .join(RELEASE_DIR)
            .join(format!("extension-release.{}", e.name));
        std::fs::read_to_string(&release)
            .map_err(|err| format!("{}: {err}", release.display()))
            .and_then(|r| check(&r, &os, host_architecture()))
    });
    for (e, fits) in chosen {
        let root = dir.join(&e.subvolume);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::{format_list, Entry};
    use std::fs;

    /// A top level with extensions `a` (usr only; listed three times: `a-0` for `ID=other`,
    /// then `a-1` and `a-2` that both fit) and `b` (usr and etc), fitting `ID=t`, and `c`
    /// for `ID=other`; a sysroot with `usr` and, when `etc`, an `etc`.
    fn fixture(etc: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("top");
        let mut entries = Vec::new();
        for (name, sub, id, with_etc) in [
            ("b", "b-1", "t", true),
            ("a", "a-0", "other", false),
            ("a", "a-1", "t", false),
            ("a", "a-2", "t", false),
            ("c", "c-1", "other", false),
        ] {
            let root = top.join(".terra/extensions").join(sub);
            let rel = root.join("usr/lib/extension-release.d");
            fs::create_dir_all(&rel).unwrap();
            fs::write(
                rel.join(format!("extension-release.{name}")),
                format!("ID={id}\n"),
            )
            .unwrap();
            fs::write(root.join(format!("usr/{name}")), name).unwrap();
            fs::write(root.join("usr/same"), sub).unwrap();
            if with_etc {
                fs::create_dir_all(root.join("etc")).unwrap();
                fs::write(root.join(format!("etc/{name}.conf")), name).unwrap();
            }
            entries.push(Entry {
                name: name.into(),
                subvolume: sub.into(),
                digest: "sha256:00".into(),
                image: format!("img-{sub}"),
                verified_by: String::new(),
                template: String::new(),
            });
        }
        fs::write(top.join(".terra/extensions.list"), format_list(&entries)).unwrap();
        let sysroot = t.path().join("sysroot");
        fs::create_dir_all(sysroot.join("usr/lib")).unwrap();
        fs::write(sysroot.join("usr/lib/os-release"), "ID=t\n").unwrap();
        if etc {
            fs::create_dir_all(sysroot.join("etc")).unwrap();
        }
        t
    }

    fn statuses(out: &[Outcome]) -> Vec<(&str, &str)> {
        out.iter().map(|o| (o.name.as_str(), o.status)).collect()
    }

    /// Mounts need root; elsewhere the test has nothing to check.
    fn root() -> bool {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[test]
    fn fitting_extensions_are_overlaid_read_only_in_name_order() {
        if !root() {
            return;
        }
        let t = fixture(true);
        let (top, sysroot) = (t.path().join("top"), t.path().join("sysroot"));
        let out = apply(&top, &sysroot, &mut |_| true);
        let usr = sysroot.join("usr");
        let seen = (
            usr.join("a").is_file(),
            usr.join("b").is_file(),
            usr.join("c").exists(),
        );
        let etc = fs::read_to_string(sysroot.join("etc/b.conf")).ok();
        let same = fs::read_to_string(usr.join("same")).ok();
        let write = fs::write(usr.join("new"), b"x");
        let _ = umount2(&sysroot.join("etc"), MntFlags::MNT_DETACH);
        let _ = umount2(&usr, MntFlags::MNT_DETACH);
        assert_eq!(
            statuses(&out),
            [
                ("a", "skipped"),
                ("a", "applied"),
                ("a", "skipped"),
                ("b", "applied"),
                ("c", "skipped")
            ]
        );
        let other = Some("it is for ID=other, the version is ID=t");
        assert_eq!(out[0].reason.as_deref(), other);
        // Per name the first that fits: a-2 fits too, but a-1 is applied.
        assert_eq!(out[2].reason.as_deref(), Some("a from img-a-1 is applied"));
        assert_eq!(out[4].reason.as_deref(), other);
        assert_eq!(seen, (true, true, false));
        assert_eq!(etc.as_deref(), Some("b"));
        // The first name is on top.
        assert_eq!(same.as_deref(), Some("a-1"));
        assert!(write.is_err(), "/usr is writable");
    }

    #[test]
    fn a_failed_overlay_applies_none() {
        if !root() {
            return;
        }
        // No /etc to mount on: /usr is mounted first, then taken away again.
        let t = fixture(false);
        let (top, sysroot) = (t.path().join("top"), t.path().join("sysroot"));
        let out = apply(&top, &sysroot, &mut |_| true);
        let left = sysroot.join("usr/a").exists();
        if left {
            let _ = umount2(&sysroot.join("usr"), MntFlags::MNT_DETACH);
        }
        assert_eq!(
            statuses(&out),
            [
                ("a", "skipped"),
                ("a", "failed"),
                ("a", "skipped"),
                ("b", "failed"),
                ("c", "skipped")
            ]
        );
        assert!(
            out[1]
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("overlay on"),
            "{out:?}"
        );
        assert!(!left, "/usr stayed overlaid");
    }
}
