//! `terra extension add|remove|list --disk` on a disk made by `terra install` (real
//! mkfs.btrfs, loop devices, btrfs subvolumes): an extension is kept read-only beside the
//! versions and listed with whether it fits the default version; an image that is not an
//! extension (no extension-release, a file outside /usr and /etc) and an unsigned one
//! under `[signature] require` are refused with the reason, leaving nothing on the disk.
//! A template reference (`hello-{VERSION_ID}`) travels with upgrades: `terra upgrade`
//! fetches the tag for the new version first, or refuses naming the extension and leaves
//! the disk as it was. Needs root.

use std::fs;
use std::path::Path;

use crate::oci_common::signing::openssl_key;
use crate::oci_common::{layer, run_terra, terra, Comp, E};
use crate::upgrade::{installed, layout, pairs, states, upgrade, with_mount};
use lab::versions::power_cut;

fn root() -> Vec<u8> {
    root_with(b"NAME=test\nID=t\nVERSION_ID=1\n", b"1\n")
}

/// A root with this os-release and `/etc/build` (so two roots of one VERSION_ID differ).
fn root_with(os_release: &'static [u8], build: &'static [u8]) -> Vec<u8> {
    layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/os-release", os_release, 0o644),
        E::File("etc/build", build, 0o644),
        E::Dir("sbin", 0o755),
        E::File("sbin/init", b"#!/sbin/init\n", 0o755),
        E::Dir("usr", 0o755),
    ])
}

const REL: &str = "usr/lib/extension-release.d/extension-release.";

fn ext(name: &'static str, release: &'static [u8], extra: &[E]) -> Vec<u8> {
    let path: &'static str = Box::leak(format!("{REL}{name}").into_boxed_str());
    let mut entries = vec![
        E::Dir("usr", 0o755),
        E::Dir("usr/bin", 0o755),
        E::File("usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o755),
        E::Dir("usr/lib", 0o755),
        E::Dir("usr/lib/extension-release.d", 0o755),
        E::File(path, release, 0o644),
    ];
    entries.extend_from_slice(extra);
    layer(&entries)
}

fn ext_cmd(disk: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["extension", args[0], "--disk", disk.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    run_terra(&all)
}

/// The disk's extension subvolumes and the list's names.
fn on_disk(disk: &Path) -> (Vec<String>, String) {
    with_mount(disk, |m| {
        let mut subvols: Vec<String> = fs::read_dir(m.join(".terra/extensions"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        subvols.sort();
        let list = fs::read_to_string(m.join(".terra/extensions.list")).unwrap_or_default();
        (subvols, list)
    })
}

#[test]
fn extensions_are_checked_kept_listed_and_removed() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let none = |l: Vec<u8>| vec![(l, Comp::None)];
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(root(), Comp::Gzip)]),
            ("hello", none(ext("hello", b"ID=t\nVERSION_ID=1\n", &[]))),
            ("other", none(ext("other", b"ID=t\nVERSION_ID=2\n", &[]))),
            (
                "bare",
                none(layer(&[
                    E::Dir("usr", 0o755),
                    E::Dir("usr/bin", 0o755),
                    E::File("usr/bin/hello", b"#!/bin/sh\n", 0o755),
                ])),
            ),
            (
                "outside",
                none(ext(
                    "outside",
                    b"ID=_any\n",
                    &[E::Dir("opt", 0o755), E::File("opt/x", b"x", 0o644)],
                )),
            ),
        ],
    );
    let disk = installed(dir.path(), &l, 256);
    let r = |tag: &str| format!("oci:{}:{tag}", l.display());

    // Not extensions: refused with the reason, nothing kept (no subvolume, no chain).
    let chains_before = with_mount(&disk, |m| {
        fs::read_dir(m.join(".terra/layers")).unwrap().count()
    });
    let (ok, _, err) = ext_cmd(&disk, &["add", &r("bare")]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&r("bare"))
            && err.contains("not an extension")
            && err.contains("no /usr/lib/extension-release.d/extension-release.NAME"),
        "{err}"
    );
    let (ok, _, err) = ext_cmd(&disk, &["add", &r("outside")]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("/opt") && err.contains("/usr and /etc only"),
        "{err}"
    );
    assert_eq!(on_disk(&disk), (vec![], String::new()));
    let chains_after = with_mount(&disk, |m| {
        fs::read_dir(m.join(".terra/layers")).unwrap().count()
    });
    assert_eq!(chains_before, chains_after);

    // Two extensions: one fits v1's os-release, one names another VERSION_ID.
    let (ok, out, err) = ext_cmd(&disk, &["add", &r("hello")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("extension hello from") && !out.contains("does not fit"),
        "{out}"
    );
    let (ok, out, err) = ext_cmd(&disk, &["add", &r("other")]);
    assert!(ok, "{err}");
    assert!(
        out.contains("other does not fit the default version: it is for VERSION_ID=2, the version is VERSION_ID=1"),
        "{out}"
    );
    // The same image again changes nothing.
    let (ok, out, err) = ext_cmd(&disk, &["add", &r("hello")]);
    assert!(
        ok && out.contains("is ") && out.contains("already"),
        "{out}{err}"
    );
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 2, "{subvols:?}");
    assert!(
        subvols[0].starts_with("hello-") && subvols[1].starts_with("other-"),
        "{subvols:?}"
    );
    assert!(
        list.starts_with("hello\thello-") && list.contains(&r("other")),
        "{list}"
    );
    // Read-only subvolumes holding the tree.
    with_mount(&disk, |m| {
        let p = m.join(".terra/extensions").join(&subvols[0]);
        assert!(p.join("usr/bin/hello").is_file());
        assert!(
            fs::write(p.join("usr/x"), b"x").is_err(),
            "writable: {}",
            p.display()
        );
    });
    let (ok, out, err) = ext_cmd(&disk, &["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("hello") && lines[1].contains(" yes ") && lines[1].contains("sha256:"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("other")
            && lines[2].contains(" no ")
            && lines[2].contains("(not on os: it is for VERSION_ID=2"),
        "{out}"
    );

    // Removed by name or by image; a name not there is refused.
    let (ok, out, err) = ext_cmd(&disk, &["remove", &r("other")]);
    assert!(ok && out.contains("extension other"), "{out}{err}");
    let (ok, _, err) = ext_cmd(&disk, &["remove", "other"]);
    assert!(!ok && err.contains("no extension \"other\""), "{err}");
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 1, "{subvols:?}");
    assert!(!list.contains("other"), "{list}");

    // A subvolume the list does not name (a run killed before storing it) is swept.
    with_mount(&disk, |m| {
        let s = std::process::Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(m.join(".terra/extensions/stray-1"))
            .output()
            .unwrap();
        assert!(s.status.success(), "{s:?}");
    });
    let (ok, _, err) = ext_cmd(&disk, &["list"]);
    assert!(ok && err.contains("stray-1"), "{err}");
    assert_eq!(on_disk(&disk).0.len(), 1);

    // Without REF: the [[extensions]] of the node.toml on the disk.
    let (ok, _, err) = ext_cmd(&disk, &["add"]);
    assert!(!ok && err.contains("lists no [[extensions]]"), "{err}");
    with_mount(&disk, |m| {
        let node = m.join(".terra/node.toml");
        let mut text = fs::read_to_string(&node).unwrap();
        text.push_str(&format!("\n[[extensions]]\nimage = \"{}\"\n", r("other")));
        fs::write(&node, text).unwrap();
    });
    let (ok, out, err) = ext_cmd(&disk, &["add"]);
    assert!(ok && out.contains("extension other from"), "{out}{err}");
    let (ok, out, err) = ext_cmd(&disk, &["remove", "other"]);
    assert!(ok && out.contains("extension other"), "{out}{err}");

    // [signature] require with the node's key: an unsigned extension is refused.
    let key = openssl_key(dir.path(), "k");
    with_mount(&disk, |m| {
        fs::create_dir_all(m.join(".terra/keys")).unwrap();
        fs::copy(&key.public, m.join(".terra/keys/k.pub")).unwrap();
        let node = m.join(".terra/node.toml");
        let mut text = fs::read_to_string(&node).unwrap();
        text.push_str("\n[signature]\nrequire = true\n");
        fs::write(&node, text).unwrap();
    });
    for args in [&["add", r("other").as_str()][..], &["add"]] {
        let (ok, _, err) = ext_cmd(&disk, args);
        assert!(!ok, "{err}");
        assert!(
            err.contains(&r("other")) && err.contains("signature"),
            "{err}"
        );
    }
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 1, "{subvols:?}");
    assert!(!list.contains("other"), "{list}");
}

#[test]
fn install_adds_the_node_toml_extensions() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(root(), Comp::Gzip)]),
            (
                "hello",
                vec![(ext("hello", b"ID=t\nVERSION_ID=1\n", &[]), Comp::None)],
            ),
        ],
    );
    let disk = dir.path().join("disk.img");
    let node = dir.path().join("node.toml");
    fs::write(
        &node,
        format!(
            "image = \"oci:{0}:v1\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\n\
             device = \"{1}\"\nsize = 256\n[[extensions]]\nimage = \"oci:{0}:hello\"\n",
            l.display(),
            disk.display()
        ),
    )
    .unwrap();
    let (ok, out, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("extension hello from"), "{out}");
    let (ok, out, err) = ext_cmd(&disk, &["list"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("hello") && l.contains(" yes ")),
        "{out}"
    );
}

/// What a refused upgrade must leave alone: the state file, the list, the entries of the
/// top level and of `.terra` (no `pending-` marker), the extension subvolumes, the chains.
fn snapshot_of(disk: &Path) -> Vec<String> {
    with_mount(disk, |m| {
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v.join(" ")
        };
        vec![
            fs::read_to_string(m.join(".terra/state.json")).unwrap(),
            fs::read_to_string(m.join(".terra/extensions.list")).unwrap_or_default(),
            names(m),
            names(&m.join(".terra")),
            names(&m.join(".terra/extensions")),
            names(&m.join(".terra/layers")),
        ]
    })
}

#[test]
fn template_extensions_travel_with_upgrades() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let gz = |l: Vec<u8>| vec![(l, Comp::Gzip)];
    let none = |l: Vec<u8>| vec![(l, Comp::None)];
    let l = layout(
        dir.path(),
        &[
            ("v1", gz(root())),
            ("v2", gz(root_with(b"ID=t\nVERSION_ID=2\n", b"2\n"))),
            ("v3", gz(root_with(b"ID=t\nVERSION_ID=3\n", b"3\n"))),
            ("v1b", gz(root_with(b"ID=t\nVERSION_ID=1\n", b"1b\n"))),
            ("hello-1", none(ext("hello", b"ID=t\nVERSION_ID=1\n", &[]))),
            ("hello-2", none(ext("hello", b"ID=t\nVERSION_ID=2\n", &[]))),
            ("tool", none(ext("tool", b"ID=t\nVERSION_ID=2\n", &[]))),
            (
                "hello-1b",
                none(ext(
                    "hello",
                    b"ID=t\nVERSION_ID=1\n",
                    &[E::File("usr/bin/b", b"b", 0o644)],
                )),
            ),
        ],
    );
    let disk = installed(dir.path(), &l, 256);
    let d = disk.to_str().unwrap();
    let r = |tag: &str| format!("oci:{}:{tag}", l.display());
    let template = r("hello-{VERSION_ID}");

    // Templates that do not expand are refused naming the reference; nothing is kept.
    let (ok, _, err) = ext_cmd(&disk, &["add", &r("hello-{VERSION}")]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&r("hello-{VERSION}")) && err.contains("unknown placeholder {VERSION}"),
        "{err}"
    );
    assert_eq!(on_disk(&disk), (vec![], String::new()));

    // `add` expands the template for the default version (os: VERSION_ID=1) and keeps it.
    let (ok, out, err) = ext_cmd(&disk, &["add", &template]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "extension hello from {} ({template})",
            r("hello-1")
        )) && !out.contains("does not fit"),
        "{out}"
    );
    let (_, list) = on_disk(&disk);
    let fields: Vec<&str> = list.trim_end_matches('\n').split('\t').collect();
    assert_eq!(fields.len(), 6, "{list}");
    assert_eq!(
        (fields[0], fields[3], fields[5]),
        ("hello", r("hello-1").as_str(), template.as_str())
    );

    // Killed between the list (with hello-2) and the state: v2 is no candidate, and the
    // entry no version uses goes at the next gc (hello-1 still serves os).
    let out = terra()
        .args(["upgrade", "--disk", d, &r("v2")])
        .env("TERRA_CRASH_AT", "extensions")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    power_cut(&disk);
    assert_eq!(states(&disk), pairs(&[("os", "default")]));
    assert_eq!(on_disk(&disk).1.lines().count(), 2);
    let (ok, _, err) = run_terra(&["gc", "--disk", d]);
    assert!(ok && err.contains("fits no version left"), "{err}");
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 1, "{subvols:?}");
    assert!(
        list.lines().count() == 1 && list.contains(&r("hello-1")),
        "{list}"
    );

    // An upgrade to VERSION_ID=2 fetches hello-2 before v2 becomes a candidate.
    let (ok, out, err) = upgrade(&disk, &r("v2"), &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("extension hello from {} (", r("hello-2")))
            && out.contains("fetched for v2"),
        "{out}"
    );
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "tentative")])
    );
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 2, "{subvols:?}");
    let images: Vec<&str> = list
        .lines()
        .map(|l| l.split('\t').nth(3).unwrap())
        .collect();
    assert_eq!(images, [r("hello-1"), r("hello-2")], "{list}");
    assert!(list.lines().all(|l| l.ends_with(&template)), "{list}");
    // `list` says which fits which: hello-1 is applied on os, hello-2 on v2.
    let (ok, out, err) = ext_cmd(&disk, &["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let cols = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    assert_eq!(cols(lines[1]), "hello yes os", "{out}");
    assert_eq!(cols(lines[2]), "hello no v2", "{out}");
    assert!(lines[2].contains(&r("hello-2")), "{out}");

    // VERSION_ID=3: hello-3 does not exist. Refused naming hello, the disk as it was.
    let before = snapshot_of(&disk);
    let (ok, _, err) = upgrade(&disk, &r("v3"), &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("upgrade refused: extension hello")
            && err.contains("new version v3 (ID=t VERSION_ID=3)")
            && err.contains("it is for VERSION_ID=2, the version is VERSION_ID=3")
            && err.contains(&format!(
                "{} (its template {template} for this version) cannot be fetched",
                r("hello-3")
            )),
        "{err}"
    );
    assert_eq!(snapshot_of(&disk), before);

    // An extension whose reference is no template, that does not fit the new version:
    // refused likewise, naming it.
    let (ok, out, err) = ext_cmd(&disk, &["add", &r("tool")]);
    assert!(
        ok && out.contains("tool does not fit the default version"),
        "{out}{err}"
    );
    let before = snapshot_of(&disk);
    let (ok, _, err) = upgrade(&disk, &r("v1b"), &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("extension tool ({})", r("tool")))
            && err.contains("(ID=t VERSION_ID=1)")
            && err.contains("it is for VERSION_ID=2, the version is VERSION_ID=1")
            && err.contains("no template"),
        "{err}"
    );
    assert_eq!(snapshot_of(&disk), before);
    let (ok, _, err) = ext_cmd(&disk, &["remove", "tool"]);
    assert!(ok, "{err}");

    // Once v2 is rejected and collected, hello-2 fits no version left: gc removes it;
    // hello-1 stays, with the template.
    let (ok, _, err) = run_terra(&["bless", "--disk", d, "bad"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run_terra(&["gc", "--disk", d, "--keep", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("v2"), "{out}");
    assert!(
        err.contains(&format!(
            "extension hello from {} fits no version left",
            r("hello-2")
        )),
        "{err}"
    );
    assert_eq!(states(&disk), pairs(&[("os", "default")]));
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 1, "{subvols:?}");
    assert!(
        list.lines().count() == 1 && list.contains(&r("hello-1")) && list.contains(&template),
        "{list}"
    );

    // Another image of hello for os, added by plain reference: it is applied on os from
    // now on, and hello-1 stays behind it only as the holder of the template; gc keeps it.
    let (ok, out, err) = ext_cmd(&disk, &["add", &r("hello-1b")]);
    assert!(ok && out.contains("extension hello from"), "{out}{err}");
    let (ok, out, err) = ext_cmd(&disk, &["list"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        cols(lines[1]) == "hello yes os" && lines[1].contains(&r("hello-1b")),
        "{out}"
    );
    assert!(
        cols(lines[2]) == "hello no -"
            && lines[2].contains(&format!(
                "(not on os: hello from {} is applied)",
                r("hello-1b")
            )),
        "{out}"
    );
    let (ok, _, err) = run_terra(&["gc", "--disk", d]);
    assert!(ok && !err.contains("fits no version left"), "{err}");
    let (subvols, list) = on_disk(&disk);
    assert_eq!(subvols.len(), 2, "{subvols:?}");
    assert!(
        list.lines().nth(1).is_some_and(|l| l.ends_with(&template)),
        "{list}"
    );
}
