//! Hostile layers: each is refused or contained, and nothing outside the unpack directory
//! changes. The unpack directory sits in a sandbox with sentinel files beside it, so an
//! escape through `..`, an absolute path, a symlink or a hardlink would show there.

use crate::oci_common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oci_common::*;

struct Outcome {
    ok: bool,
    err: String,
    /// The unpacked tree (empty when refused).
    tree: std::collections::BTreeMap<String, Info>,
}

/// Unpacks `layers` into sandbox/root and checks the sandbox outside root is unchanged,
/// the host's /etc/passwd too.
fn unpack_hostile(layers: Vec<Vec<E>>) -> Outcome {
    let sandbox = tempfile::tempdir().unwrap();
    let s = sandbox.path();
    fs::create_dir_all(s.join("outside/dir")).unwrap();
    fs::write(s.join("outside/secret"), b"do not touch").unwrap();
    fs::write(s.join("outside/dir/file"), b"nor this").unwrap();
    let layout = tempfile::tempdir().unwrap();
    let tars: Vec<(Vec<u8>, Comp)> = layers.iter().map(|l| (layer(l), Comp::Gzip)).collect();
    image_layout(layout.path(), "evil", &tars);
    let passwd = fs::metadata("/etc/passwd").unwrap();
    let before = snapshot(&s.join("outside"));
    let root = s.join("root");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:evil", layout.path().display()),
        root.to_str().unwrap(),
    ]);
    assert_same(
        &snapshot(&s.join("outside")),
        &before,
        "the sandbox outside the root",
    );
    let names: Vec<String> = fs::read_dir(s)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut expected = vec!["outside".to_string()];
    if ok {
        expected.push("root".into());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted, expected,
        "the sandbox holds only outside/ (and root/)"
    );
    let after = fs::metadata("/etc/passwd").unwrap();
    assert_eq!(
        (passwd.ino(), passwd.nlink(), passwd.mtime(), passwd.len()),
        (after.ino(), after.nlink(), after.mtime(), after.len()),
        "/etc/passwd changed"
    );
    for p in ["/tmp/terra-escaped", "/terra-escaped", "/etc/terra-escaped"] {
        assert!(!Path::new(p).exists(), "{p} was created");
    }
    let tree = if ok {
        snapshot(&root)
    } else {
        Default::default()
    };
    Outcome { ok, err, tree }
}

fn raw(path: &str, kind: u8, link: &str, data: &[u8]) -> E {
    E::Raw(
        path.as_bytes().to_vec(),
        kind,
        link.as_bytes().to_vec(),
        data.to_vec(),
    )
}

#[test]
fn dotdot_paths_are_contained() {
    let o = unpack_hostile(vec![vec![
        raw("../outside/secret", b'0', "", b"overwritten"),
        raw("../../../../../../tmp/terra-escaped", b'0', "", b"escaped"),
        raw("a/../../outside/dir/file", b'0', "", b"overwritten"),
    ]]);
    assert!(o.ok, "{}", o.err);
    // `..` is clamped at the root, as in a chroot.
    assert_eq!(o.tree["outside/secret"].size, 11);
    assert!(o.tree.contains_key("tmp/terra-escaped"));
}

#[test]
fn absolute_paths_are_contained() {
    let o = unpack_hostile(vec![vec![
        raw("/etc/terra-escaped", b'0', "", b"escaped"),
        raw("/tmp/terra-escaped", b'0', "", b"escaped"),
    ]]);
    assert!(o.ok, "{}", o.err);
    assert!(o.tree.contains_key("etc/terra-escaped") && o.tree.contains_key("tmp/terra-escaped"));
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let sandbox_guess = "/tmp"; // an absolute host directory that certainly exists
    let o = unpack_hostile(vec![
        vec![
            E::Symlink("up", "../../../.."),
            E::Symlink("abs", sandbox_guess),
            E::Dir("etc/", 0o755),
            E::Symlink("hostetc", "/etc"),
            E::Symlink("passwd-link", "/etc/passwd"),
        ],
        vec![
            // Through a relative symlink climbing out, an absolute one, and a symlinked
            // directory named like a system one.
            raw("up/tmp/terra-escaped", b'0', "", b"escaped"),
            raw("abs/terra-escaped", b'0', "", b"escaped"),
            raw("hostetc/terra-escaped", b'0', "", b"escaped"),
            // A regular file over a symlink to a host file replaces the symlink.
            raw("passwd-link", b'0', "", b"root::0:0::/:/bin/sh\n"),
        ],
    ]);
    assert!(o.ok, "{}", o.err);
    assert!(
        o.tree.contains_key("tmp/terra-escaped"),
        "{:?}",
        o.tree.keys()
    );
    assert!(
        o.tree.contains_key("etc/terra-escaped"),
        "{:?}",
        o.tree.keys()
    );
    assert_eq!(o.tree["passwd-link"].kind, "file");
    // A symlink loop (`etc -> /etc` is itself, in the root) or a dangling symlinked
    // parent is refused rather than guessed around.
    for target in ["/etc", "/nonexistent"] {
        let o = unpack_hostile(vec![
            vec![raw("etc", b'2', target, b"")],
            vec![raw("etc/terra-escaped", b'0', "", b"escaped")],
        ]);
        assert!(!o.ok, "{target}");
        assert!(o.err.contains("entry \"etc/terra-escaped\""), "{}", o.err);
    }
}

#[test]
fn a_symlink_named_dot_is_refused() {
    for path in [".", "./", "./."] {
        let o = unpack_hostile(vec![vec![
            E::Dir("dir/", 0o755),
            raw(path, b'2', "/", b""),
            raw("./pwned", b'0', "", b"x"),
        ]]);
        assert!(!o.ok, "{path}: a symlink replacing the root was accepted");
        assert!(
            o.err.contains("refusing to replace the unpack root"),
            "{}",
            o.err
        );
    }
}

#[test]
fn hardlinks_to_outside_are_refused_or_contained() {
    let o = unpack_hostile(vec![vec![raw("stolen", b'1', "../outside/secret", b"")]]);
    assert!(!o.ok, "a hardlink to a missing in-root target was accepted");
    assert!(o.err.contains("hardlink target"), "{}", o.err);
    let o = unpack_hostile(vec![vec![raw("shadow", b'1', "/etc/passwd", b"")]]);
    assert!(!o.ok);
    // Through a symlink to the host's /etc: resolution stays in the root.
    let o = unpack_hostile(vec![
        vec![E::Symlink("hostetc", "/etc")],
        vec![raw("shadow", b'1', "hostetc/passwd", b"")],
    ]);
    assert!(!o.ok, "{:?}", o.tree.keys());
    // When the root has the target, the link is made to it, inside.
    let o = unpack_hostile(vec![vec![
        E::Dir("etc/", 0o755),
        E::File("etc/passwd", b"inside", 0o644),
        raw("shadow", b'1', "../../etc/passwd", b""),
    ]]);
    assert!(o.ok, "{}", o.err);
    assert_eq!(o.tree["shadow"].same_as.as_deref(), Some("etc/passwd"));
}

#[test]
fn whiteouts_cannot_reach_outside() {
    let o = unpack_hostile(vec![
        vec![E::Symlink("up", "../outside"), E::Dir("d/", 0o755)],
        vec![
            raw("../outside/.wh.secret", b'0', "", b""),
            raw("up/.wh.dir", b'0', "", b""),
            raw("../.wh.outside", b'0', "", b""),
            raw("up/.wh..wh..opq", b'0', "", b""),
        ],
    ]);
    assert!(o.ok, "{}", o.err);
}
