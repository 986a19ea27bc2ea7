//! Extensions: images whose tree is `/usr/…` (and `/etc/…`) that stage0 overlays on the
//! chosen version (issue 28). `terra extension add` keeps each as a read-only subvolume
//! `.terra/extensions/<SUBVOLUME>` and names it in the list [`LIST_FILE`]; stage0 applies
//! those whose `extension-release` fits the version ([`check`], systemd's sysext rules).
//!
//! This file has no I/O: names, the list's format, os-release parsing and matching. The
//! overlay itself is [`overlay`].

pub mod overlay;

/// Under `.terra`: the extensions' subvolumes.
pub const EXTENSIONS_DIR: &str = "extensions";
/// Under `.terra`: the list of extensions (one [`Entry`] a line), written atomically.
pub const LIST_FILE: &str = "extensions.list";
/// Where an extension names itself: `extension-release.NAME` in this directory.
pub const RELEASE_DIR: &str = "usr/lib/extension-release.d";
/// The file name's prefix in [`RELEASE_DIR`].
pub const RELEASE_PREFIX: &str = "extension-release.";

/// Whether `name` can name an extension: a file name part without `/`, blanks or a
/// leading dot, at most 128 bytes (it also names a subvolume).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@'))
}

/// One extension on a disk, as [`LIST_FILE`] records it (fields tab-separated, in this
/// order; a list written before `template` has five fields and reads with it empty). A
/// NAME may have several entries, each for other versions: [`select`] applies per NAME the
/// first that fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The extension's name (its `extension-release.NAME`).
    pub name: String,
    /// Its subvolume under `.terra/extensions`.
    pub subvolume: String,
    /// The image's manifest digest.
    pub digest: String,
    /// The image reference it was added from.
    pub image: String,
    /// The key that verified it (empty when none did).
    pub verified_by: String,
    /// The reference as given when it is a template (`{VERSION_ID}`…), which each upgrade
    /// expands again for its version; empty otherwise.
    pub template: String,
}

/// The list's text: one line per entry.
pub fn format_list(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let f = [
            &e.name,
            &e.subvolume,
            &e.digest,
            &e.image,
            &e.verified_by,
            &e.template,
        ];
        out.push_str(&f.map(|s| s.replace(['\t', '\n'], " ")).join("\t"));
        out.push('\n');
    }
    out
}

/// Parses the list; a malformed line (or a subvolume named twice) is an error naming its
/// number.
pub fn parse_list(text: &str) -> Result<Vec<Entry>, String> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let ok = matches!(f.len(), 5 | 6) && valid_name(f[0]) && valid_name(f[1]);
        if !ok || out.iter().any(|e| e.subvolume == f[1]) {
            return Err(format!(
                "line {}: not NAME, SUBVOLUME, DIGEST, IMAGE, KEY[, TEMPLATE]",
                i + 1
            ));
        }
        out.push(Entry {
            name: f[0].into(),
            subvolume: f[1].into(),
            digest: f[2].into(),
            image: f[3].into(),
            verified_by: f[4].into(),
            template: f.get(5).copied().unwrap_or_default().into(),
        });
    }
    Ok(out)
}

/// What stage0 does with `entries` on one version: each, in name order (the list's order
/// within a NAME), with Ok when it is applied. Per NAME the first that `fits` is applied;
/// the later ones of that NAME are not (and `fits` is not asked about them).
pub fn select(
    mut entries: Vec<Entry>,
    mut fits: impl FnMut(&Entry) -> Result<(), String>,
) -> Vec<(Entry, Result<(), String>)> {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<(Entry, Result<(), String>)> = Vec::with_capacity(entries.len());
    for e in entries {
        let applied = out.iter().find(|(o, r)| o.name == e.name && r.is_ok());
        let r = match applied {
            Some((o, _)) => Err(format!("{} from {} is applied", o.name, o.image)),
            None => fits(&e),
        };
        out.push((e, r));
    }
    out
}

/// The value of `key` in os-release-format text (`KEY=value`, quotes and `#` comments as
/// os-release(5) has them); None when absent or empty.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let v = text.lines().rev().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then_some(v.trim())
    })?;
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    (!v.is_empty()).then_some(v)
}

/// This machine's architecture as systemd names it (`ARCHITECTURE=`).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        a => a,
    }
}

/// Whether an extension fits a version: `release` is its `extension-release.NAME`, `os`
/// the version's os-release, `arch` the machine's ([`host_architecture`]). systemd's
/// rules: `ARCHITECTURE`, when given and not `_any`, must be `arch`; `ID` must be given
/// and be `_any` (fits everything) or the version's `ID`; then, when the version has a
/// `VERSION_ID` or `SYSEXT_LEVEL`, the extension's `SYSEXT_LEVEL` must be the version's
/// when both give one, else its `VERSION_ID` the version's. Err says why not.
pub fn check(release: &str, os: &str, arch: &str) -> Result<(), String> {
    if let Some(a) = field(release, "ARCHITECTURE").filter(|a| *a != "_any") {
        if a != arch {
            return Err(format!(
                "it is for ARCHITECTURE={a}, this machine is {arch}"
            ));
        }
    }
    let id = field(release, "ID").ok_or("its extension-release has no ID")?;
    if id == "_any" {
        return Ok(());
    }
    let os_id = field(os, "ID").unwrap_or("linux");
    if id != os_id {
        return Err(format!("it is for ID={id}, the version is ID={os_id}"));
    }
    let (os_version, os_level) = (field(os, "VERSION_ID"), field(os, "SYSEXT_LEVEL"));
    if let (Some(l), Some(os_l)) = (field(release, "SYSEXT_LEVEL"), os_level) {
        if l != os_l {
            return Err(format!(
                "it is for SYSEXT_LEVEL={l}, the version has SYSEXT_LEVEL={os_l}"
            ));
        }
    } else if let Some(os_v) = os_version {
        match field(release, "VERSION_ID") {
            Some(v) if v == os_v => {}
            Some(v) => {
                return Err(format!(
                    "it is for VERSION_ID={v}, the version is VERSION_ID={os_v}"
                ))
            }
            None => {
                return Err(format!(
                    "its extension-release names no VERSION_ID (the version is VERSION_ID={os_v})"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OS: &str = "NAME=\"Terra demo\"\nID=terra-demo\nVERSION_ID=\"1\"\n";

    #[test]
    fn id_and_version_must_fit() {
        let x86 = "x86-64";
        assert_eq!(check("ID=terra-demo\nVERSION_ID=1\n", OS, x86), Ok(()));
        assert_eq!(check("ID=_any\n", OS, x86), Ok(()));
        let e = check("ID=terra-demo\nVERSION_ID=2\n", OS, x86).unwrap_err();
        assert_eq!(e, "it is for VERSION_ID=2, the version is VERSION_ID=1");
        let e = check("ID=debian\nVERSION_ID=1\n", OS, x86).unwrap_err();
        assert!(
            e.contains("ID=debian") && e.contains("ID=terra-demo"),
            "{e}"
        );
        assert!(check("VERSION_ID=1\n", OS, x86)
            .unwrap_err()
            .contains("no ID"));
        let e = check("ID=terra-demo\n", OS, x86).unwrap_err();
        assert!(e.contains("no VERSION_ID"), "{e}");
    }

    #[test]
    fn architecture_and_sysext_level() {
        let r = "ID=_any\nARCHITECTURE=arm64\n";
        assert!(check(r, OS, "x86-64").unwrap_err().contains("arm64"));
        assert_eq!(check(r, OS, "arm64"), Ok(()));
        assert_eq!(check("ID=_any\nARCHITECTURE=_any\n", OS, "x86-64"), Ok(()));
        let os = "ID=t\nVERSION_ID=7\nSYSEXT_LEVEL=2.1\n";
        // The level decides when both give one, whatever VERSION_ID says.
        assert_eq!(
            check("ID=t\nSYSEXT_LEVEL=2.1\nVERSION_ID=9\n", os, "x"),
            Ok(())
        );
        let e = check("ID=t\nSYSEXT_LEVEL=3\n", os, "x").unwrap_err();
        assert!(e.contains("SYSEXT_LEVEL=3"), "{e}");
        // A version without VERSION_ID and SYSEXT_LEVEL (rolling): ID alone decides.
        assert_eq!(check("ID=t\nVERSION_ID=5\n", "ID=t\n", "x"), Ok(()));
        // No ID in os-release means linux.
        assert_eq!(check("ID=linux\n", "NAME=x\n", "x"), Ok(()));
    }

    #[test]
    fn fields_follow_os_release_quoting() {
        let t = "# c\nA=\"x y\"\nB='z'\nC=\nD=plain\nD=last\n";
        assert_eq!(field(t, "A"), Some("x y"));
        assert_eq!(field(t, "B"), Some("z"));
        assert_eq!(field(t, "C"), None);
        assert_eq!(field(t, "D"), Some("last"));
        assert_eq!(field(t, "E"), None);
    }

    #[test]
    fn the_list_round_trips_and_bad_lines_are_named() {
        let e = Entry {
            name: "hello".into(),
            subvolume: "hello-0123456789ab".into(),
            digest: "sha256:01".into(),
            image: "oci:/x:hello-1".into(),
            verified_by: String::new(),
            template: "oci:/x:hello-{VERSION_ID}".into(),
        };
        let text = format_list(std::slice::from_ref(&e));
        assert_eq!(parse_list(&text), Ok(vec![e]));
        assert!(parse_list("a\tb\n").unwrap_err().starts_with("line 1"));
        // A list written before templates (five fields) still reads; a NAME may come
        // twice, a subvolume may not.
        let old = "a\ta-1\td\ti\t\na\ta-2\td\ti\tk\tt\n";
        let l = parse_list(old).unwrap();
        assert_eq!((l[0].template.as_str(), l[1].template.as_str()), ("", "t"));
        let dup = "a\ta-1\td\ti\t\nb\ta-1\td\ti\t\n";
        assert!(parse_list(dup).unwrap_err().starts_with("line 2"));
        assert!(!valid_name("../x") && !valid_name("") && !valid_name(".h"));
        assert!(valid_name("hello_1.2"));
    }

    #[test]
    fn per_name_the_first_fitting_entry_is_applied() {
        let e = |name: &str, sub: &str| Entry {
            name: name.into(),
            subvolume: sub.into(),
            digest: String::new(),
            image: format!("img-{sub}"),
            verified_by: String::new(),
            template: String::new(),
        };
        let list = vec![e("b", "b-1"), e("a", "a-1"), e("a", "a-2"), e("a", "a-3")];
        let mut asked = Vec::new();
        let out = select(list, |x| {
            asked.push(x.subvolume.clone());
            if x.subvolume == "a-1" {
                Err("no".into())
            } else {
                Ok(())
            }
        });
        let got: Vec<(&str, bool)> = out
            .iter()
            .map(|(x, r)| (x.subvolume.as_str(), r.is_ok()))
            .collect();
        assert_eq!(
            got,
            [("a-1", false), ("a-2", true), ("a-3", false), ("b-1", true)]
        );
        assert_eq!(out[2].1, Err("a from img-a-2 is applied".into()));
        assert_eq!(asked, ["a-1", "a-2", "b-1"]);
    }

    proptest! {
        #[test]
        fn matching_never_panics_and_any_fits_all(r in "\\PC{0,80}", os in "\\PC{0,80}") {
            let _ = check(&r, &os, "x86-64");
            let _ = parse_list(&r);
            prop_assert_eq!(check("ID=_any\n", &os, "x86-64"), Ok(()));
        }

        #[test]
        fn entries_round_trip(name in "[a-z][a-z0-9_-]{0,20}", image in "[ -~]{0,40}") {
            let e = Entry {
                name: name.clone(),
                subvolume: format!("{name}-1"),
                digest: "sha256:00".into(),
                image,
                verified_by: "k (fp)".into(),
                template: "t:{ID}".into(),
            };
            prop_assert_eq!(parse_list(&format_list(std::slice::from_ref(&e))), Ok(vec![e]));
        }
    }
}
