//! `terra image unpack` against `umoci unpack` of the same images, entry by entry (type,
//! mode, owner, size, content hash, link target, device number, xattrs, mtime, hardlink
//! identity); and unpack's all-or-nothing rename.

use crate::oci_common;

use std::fs;
use std::path::Path;

use oci_common::*;

/// Unpacks layout:tag with terra and umoci and compares the trees.
fn compare(layout: &Path, tag: &str, what: &str) {
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("terra-root");
    let (ok, out, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:{tag}", layout.display()),
        ours.to_str().unwrap(),
    ]);
    assert!(ok, "terra image unpack failed: {err}");
    assert!(out.contains("unpacked"), "{out}");
    let theirs = umoci_unpack(layout, tag, &work.path().join("bundle"));
    assert_same(&snapshot(&ours), &snapshot(&theirs), what);
}

#[test]
fn rich_single_layer_matches_umoci() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image_layout(&layout, "rich", &[(layer(&rich_layer()), Comp::Gzip)]);
    compare(&layout, "rich", "rich image");
    // The parts umoci and we could both get wrong the same way, checked directly.
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("r");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:rich", layout.display()),
        root.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let s = snapshot(&root);
    assert_eq!(s["usr/bin/su"].mode, 0o4755);
    assert_eq!(s["usr/bin/wall"].mode, 0o2755);
    assert_eq!((s["usr/bin/wall"].gid, s["tmp"].mode), (5, 0o1777));
    assert_eq!(s["usr/bin/sudo"].same_as.as_deref(), Some("usr/bin/su"));
    assert_eq!(
        s["etc/localtime"].link.as_deref(),
        Some("/usr/share/zoneinfo/UTC")
    );
    assert_eq!(s["home/user/notes"].uid, 1000);
    assert_eq!(s["usr/bin/ping"].xattrs[0].0, "security.capability");
    assert_eq!((s["dev/null"].kind, s["dev/null"].rdev), ("char", 0x103));
    assert_eq!(s["dev/initctl"].kind, "fifo");
    assert_eq!(s["etc/os-release"].mtime, MTIME as i64);
    assert_eq!(s["etc"].mtime, MTIME as i64);
}

#[test]
fn whiteouts_opaque_dirs_and_replacements_match_umoci() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let base = layer(&[
        E::Dir("etc/", 0o755),
        E::Dir("etc/conf.d/", 0o755),
        E::File("etc/conf.d/a", b"a", 0o644),
        E::File("etc/conf.d/b", b"b", 0o644),
        E::Dir("etc/conf.d/sub/", 0o755),
        E::File("etc/conf.d/sub/c", b"c", 0o644),
        E::Dir("var/", 0o755),
        E::Dir("var/lib/", 0o755),
        E::File("var/lib/gone", b"will be whited out", 0o644),
        E::Dir("var/lib/gonedir/", 0o755),
        E::File("var/lib/gonedir/x", b"x", 0o644),
        E::File("opt", b"a file that becomes a directory", 0o644),
        E::Dir("srv/", 0o755),
        E::File("srv/data", b"a directory that becomes a file", 0o644),
        E::File("usr-bin-tool", b"tool v1", 0o755),
        E::Symlink("link-to-dir", "var/lib"),
    ]);
    let upper = layer(&[
        E::Dir("etc/", 0o755),
        E::Dir("etc/conf.d/", 0o750),
        E::File("etc/conf.d/.wh..wh..opq", b"", 0o644),
        E::File("etc/conf.d/new", b"only this survives", 0o644),
        E::Dir("var/", 0o755),
        E::Dir("var/lib/", 0o755),
        E::File("var/lib/.wh.gone", b"", 0o644),
        E::File("var/lib/.wh.gonedir", b"", 0o644),
        E::File("var/lib/.wh.never-existed", b"", 0o644),
        E::Dir("opt/", 0o711),
        E::File("opt/inside", b"now a directory", 0o644),
        E::File("srv", b"now a file", 0o600),
        E::File("usr-bin-tool", b"tool v2, longer than before", 0o700),
        // A symlink replaced by a directory: the directory must not land in var/lib.
        E::Dir("link-to-dir/", 0o755),
        E::File("link-to-dir/own", b"own", 0o644),
    ]);
    let top = layer(&[
        // Hardlink across layers, to a file of the first layer.
        E::Hardlink("etc/conf.d/new-link", "etc/conf.d/new"),
        E::Hardlink("tool-link", "usr-bin-tool"),
        E::Dir("var/", 0o755),
        E::File("var/.wh.lib", b"", 0o644),
    ]);
    image_layout(
        &layout,
        "layers",
        // umoci 0.4.7 predates zstd layers: they are compared below, terra with itself.
        &[
            (base.clone(), Comp::Gzip),
            (upper.clone(), Comp::Gzip),
            (top.clone(), Comp::None),
        ],
    );
    compare(&layout, "layers", "whiteouts and replacements");
    let zlayout = dir.path().join("zstd-layout");
    image_layout(
        &zlayout,
        "layers",
        &[(base, Comp::Zstd), (upper, Comp::Zstd), (top, Comp::Zstd)],
    );
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("r");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:layers", layout.display()),
        root.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let s = snapshot(&root);
    let zroot = work.path().join("z");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:layers", zlayout.display()),
        zroot.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_same(
        &snapshot(&zroot),
        &s,
        "zstd layers vs the same layers gzipped",
    );
    let names: Vec<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "etc",
            "etc/conf.d",
            "etc/conf.d/new",
            "etc/conf.d/new-link",
            "link-to-dir",
            "link-to-dir/own",
            "opt",
            "opt/inside",
            "srv",
            "tool-link",
            "usr-bin-tool",
            "var"
        ]
    );
    assert_eq!(
        s["etc/conf.d/new-link"].same_as.as_deref(),
        Some("etc/conf.d/new")
    );
    assert_eq!(s["link-to-dir"].kind, "dir");
}

#[test]
fn docker_archive_unpacks_like_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image_layout(
        &layout,
        "v1",
        &[
            (layer(&rich_layer()), Comp::Gzip),
            (
                layer(&[
                    E::File("etc/.wh.os-release", b"", 0o644),
                    E::File("etc/motd", b"hi", 0o644),
                ]),
                Comp::Gzip,
            ),
        ],
    );
    let archive = dir.path().join("image.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker-archive:{}:terra/test:v1", archive.display()),
    ]);
    let a = dir.path().join("from-archive");
    let b = dir.path().join("from-layout");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("docker-archive:{}", archive.display()),
        a.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v1", layout.display()),
        b.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let sa = snapshot(&a);
    assert!(sa.contains_key("etc/motd") && !sa.contains_key("etc/os-release"));
    assert_same(&sa, &snapshot(&b), "docker-archive vs oci layout");
}

/// Breaks a copy of a good layout with `spoil`, unpacks it over an existing good tree, and
/// checks the error names the blob and the good tree is untouched, with no staging left.
fn refused(spoil: impl Fn(&Path, &str), expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let tar = layer(&rich_layer());
    image_layout(&layout, "v1", &[(tar.clone(), Comp::Gzip)]);
    let target = dir.path().join("root");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v1", layout.display()),
        target.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let before = snapshot(&target);
    let layer_digest = digest(&gzip(&tar));
    spoil(&layout, &layer_digest);
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v1", layout.display()),
        target.to_str().unwrap(),
    ]);
    assert!(!ok, "a spoiled image unpacked");
    assert!(err.starts_with("terra: "), "{err}");
    for e in expect {
        let e = e.replace("LAYER", &layer_digest);
        assert!(err.contains(&e), "expected {e:?} in {err:?}");
    }
    assert_same(
        &snapshot(&target),
        &before,
        "the good tree after a failed unpack",
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.contains("terra-unpack")),
        "staging left behind: {left:?}"
    );
}

fn blob_path(layout: &Path, d: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap())
}

#[test]
fn corrupted_layer_is_a_digest_error_and_the_old_tree_stays() {
    refused(
        |layout, d| {
            let p = blob_path(layout, d);
            let mut data = fs::read(&p).unwrap();
            let n = data.len();
            data[n / 2] ^= 0x55;
            fs::write(&p, data).unwrap();
        },
        &["blob LAYER", "digest mismatch"],
    );
}

#[test]
fn truncated_layer_is_refused() {
    refused(
        |layout, d| {
            let p = blob_path(layout, d);
            let data = fs::read(&p).unwrap();
            fs::write(&p, &data[..data.len() / 2]).unwrap();
        },
        &["blob LAYER", "size mismatch"],
    );
}

#[test]
fn unknown_layer_media_type_is_refused() {
    refused(
        |layout, _| {
            // Rewrite the manifest with a media type nobody knows, and point index.json at it.
            let index: serde_json::Value =
                serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
            let md = index["manifests"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string();
            let mut m: serde_json::Value =
                serde_json::from_slice(&fs::read(blob_path(layout, &md)).unwrap()).unwrap();
            m["layers"][0]["mediaType"] = "application/x-mystery".into();
            let bytes = serde_json::to_vec(&m).unwrap();
            let nd = put_blob(layout, &bytes);
            let mut index = index;
            index["manifests"][0]["digest"] = nd.into();
            index["manifests"][0]["size"] = bytes.len().into();
            fs::write(
                layout.join("index.json"),
                serde_json::to_vec(&index).unwrap(),
            )
            .unwrap();
        },
        &[
            "blob LAYER",
            "unknown layer media type \"application/x-mystery\"",
        ],
    );
}

#[test]
fn a_missing_tag_lists_the_tags() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image_layout(
        &layout,
        "v1",
        &[(layer(&[E::File("a", b"a", 0o644)]), Comp::Gzip)],
    );
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v2", layout.display()),
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("no manifest tagged \"v2\"") && err.contains("tags: v1"),
        "{err}"
    );
    assert!(!dir.path().join("r").exists());
}

#[test]
fn no_devices_leaves_nodes_out() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    image_layout(&layout, "v1", &[(layer(&rich_layer()), Comp::Gzip)]);
    let root = dir.path().join("r");
    let (ok, out, err) = run_terra(&[
        "image",
        "unpack",
        "--no-devices",
        &format!("oci:{}:v1", layout.display()),
        root.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("3 device nodes/fifos left out"), "{out}");
    let s = snapshot(&root);
    assert!(!s.contains_key("dev/null") && !s.contains_key("dev/initctl"));
    assert!(s.contains_key("bin/sh"));
}
