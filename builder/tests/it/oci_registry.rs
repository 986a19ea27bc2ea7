//! Pulls from a real registry: Debian's docker-registry on 127.0.0.1 (a free port, its
//! storage in a temporary directory, killed by PID when the test ends), images pushed by
//! skopeo from layouts these tests write.

use crate::oci_common;

use std::fs;
use std::path::Path;

use oci_common::*;

fn marker_layer(text: &'static str) -> Vec<u8> {
    layer(&[
        E::Dir("etc/", 0o755),
        E::File("etc/arch", text.as_bytes(), 0o644),
        E::File("bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
    ])
}

fn read_index(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap()
}

#[test]
fn pull_by_tag_and_by_digest_then_unpack() {
    let _disks = crate::common::host_disks(module_path!());
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let manifest = image_layout(
        src.path(),
        "v1",
        &[
            (marker_layer("amd64\n"), Comp::Gzip),
            (layer(&rich_layer()), Comp::None),
        ],
    );
    reg.push(src.path(), "v1", "terra/os");
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("pulled");
    let reference = format!("{}/terra/os:v1", reg.host());
    let (ok, out, err) = run_terra(&[
        "image",
        "pull",
        "--plain-http",
        &reference,
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&manifest), "{out}");
    // Captured stderr is no terminal: no progress bar, no line control.
    assert!(
        !err.contains("pull [") && !err.contains('\r') && !err.contains("\x1b["),
        "{err:?}"
    );
    let index = read_index(&layout);
    assert_eq!(index["manifests"][0]["digest"], manifest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    // The pulled layout is a real one: umoci reads it, and unpacks what we unpack.
    let ours = work.path().join("ours");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v1", layout.display()),
        ours.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let theirs = umoci_unpack(&layout, "v1", &work.path().join("bundle"));
    assert_same(&snapshot(&ours), &snapshot(&theirs), "pulled image");

    // A second pull reuses every blob.
    let (ok, out, err) = run_terra(&[
        "image",
        "pull",
        "--plain-http",
        &reference,
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("3 already there"), "{out}");

    // By digest, straight to a tree.
    let by_digest = work.path().join("by-digest");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        "--plain-http",
        &format!("{}/terra/os@{manifest}", reg.host()),
        by_digest.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_same(
        &snapshot(&by_digest),
        &snapshot(&ours),
        "by digest vs by tag",
    );

    // terra install pulls it too.
    let disk = work.path().join("disk.img");
    let node = work.path().join("node.toml");
    fs::write(
        &node,
        format!(
            "image = \"{reference}\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"{}\"\nsize = 200\n",
            disk.display()
        ),
    )
    .unwrap();
    let (ok, out, err) = run_terra(&["install", node.to_str().unwrap(), "--plain-http"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{reference}@{manifest}")), "{out}");
    let id = terra_init::probe::probe_fs(&mut fs::File::open(&disk).unwrap()).unwrap();
    assert_eq!(id.label.as_deref(), Some("os"));
}

#[test]
fn docker_schema2_manifests_pull_and_unpack() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    image_layout(
        src.path(),
        "v1",
        &[
            (marker_layer("amd64\n"), Comp::Gzip),
            (layer(&rich_layer()), Comp::Gzip),
        ],
    );
    // skopeo converts to Docker's media types (manifest v2 schema 2, rootfs.diff.tar.gzip).
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.path().display()),
        &format!("docker://{}/terra/docker:v1", reg.host()),
    ]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let (ok, _, err) = run_terra(&[
        "image",
        "pull",
        "--plain-http",
        &format!("{}/terra/docker:v1", reg.host()),
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        read_index(&layout)["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let ours = work.path().join("ours");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v1", layout.display()),
        ours.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let reference = work.path().join("reference");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &format!("oci:{}:v1", src.path().display()),
        reference.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_same(
        &snapshot(&ours),
        &snapshot(&reference),
        "docker schema 2 vs OCI",
    );
}

#[test]
fn multi_platform_index_picks_the_platform() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let (amd, amd_size) = add_image(
        src.path(),
        "amd64",
        &[(marker_layer("amd64\n"), Comp::Gzip)],
    );
    let (arm, arm_size) = add_image(
        src.path(),
        "arm64",
        &[(marker_layer("arm64\n"), Comp::Gzip)],
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_size,
             "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    }))
    .unwrap();
    let index_digest = put_blob(src.path(), &index);
    write_index(
        src.path(),
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        })],
    );
    reg.push(src.path(), "multi", "terra/multi");
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/terra/multi:multi", reg.host());
    for (platform, want) in [
        (None, "amd64\n"),
        (Some("linux/arm64"), "arm64\n"),
        (Some("linux/arm64/v8"), "arm64\n"),
    ] {
        let dest = work.path().join(format!(
            "root-{}",
            platform.unwrap_or("default").replace('/', "-")
        ));
        let mut args = vec!["image", "unpack", "--plain-http"];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.extend([reference.as_str(), dest.to_str().unwrap()]);
        let (ok, _, err) = run_terra(&args);
        assert!(ok, "{platform:?}: {err}");
        assert_eq!(fs::read_to_string(dest.join("etc/arch")).unwrap(), want);
    }
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        "--plain-http",
        "--platform",
        "linux/riscv64",
        &reference,
        work.path().join("none").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("no manifest for platform linux/riscv64")
            && err.contains("linux/arm64/v8, linux/amd64"),
        "{err}"
    );
    // Pull by the index's digest into a layout: the chosen manifest is stored.
    let layout = work.path().join("layout");
    let (ok, out, err) = run_terra(&[
        "image",
        "pull",
        "--plain-http",
        "--platform",
        "linux/arm64",
        &format!("{}/terra/multi@{index_digest}", reg.host()),
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&arm), "{out}");
    assert_eq!(read_index(&layout)["manifests"][0]["digest"], arm.as_str());
}

#[test]
fn a_missing_tag_is_a_clear_error() {
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    image_layout(src.path(), "v1", &[(marker_layer("amd64\n"), Comp::Gzip)]);
    reg.push(src.path(), "v1", "terra/os");
    let work = tempfile::tempdir().unwrap();
    for reference in [
        format!("{}/terra/os:v9", reg.host()),
        format!("{}/terra/nothing:v1", reg.host()),
    ] {
        let (ok, _, err) = run_terra(&[
            "image",
            "pull",
            "--plain-http",
            &reference,
            "--layout",
            work.path().join("l").to_str().unwrap(),
        ]);
        assert!(!ok);
        eprintln!("{err}");
        assert!(err.starts_with("terra: "), "{err}");
        assert!(
            err.contains(&reference) && err.contains("no such manifest in the registry"),
            "{err}"
        );
    }
    // Nothing is written after failed pulls: the layout is created only once the tag has
    // resolved (and, with --verify-key, its signature checked).
    assert!(!work.path().join("l").exists());
}

#[test]
fn a_corrupted_blob_is_a_digest_error_and_nothing_is_installed() {
    let _disks = crate::common::host_disks(module_path!());
    let reg = Registry::start();
    let src = tempfile::tempdir().unwrap();
    let tar = marker_layer("amd64\n");
    image_layout(src.path(), "v1", &[(tar.clone(), Comp::Gzip)]);
    reg.push(src.path(), "v1", "terra/os");
    let blob = digest(&gzip(&tar));
    let file = reg.blob_file(&blob);
    let mut data = fs::read(&file).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    fs::write(&file, data).unwrap();

    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/terra/os:v1", reg.host());
    let dest = work.path().join("root");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        "--plain-http",
        &reference,
        dest.to_str().unwrap(),
    ]);
    assert!(!ok);
    eprintln!("{err}");
    assert!(
        err.contains(&format!("blob {blob}")) && err.contains("digest mismatch"),
        "{err}"
    );
    assert!(!dest.exists());
    let layout = work.path().join("layout");
    let (ok, _, err) = run_terra(&[
        "image",
        "pull",
        "--plain-http",
        &reference,
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("digest mismatch"), "{err}");
    assert!(!layout.join("blobs/sha256").join(&blob[7..]).exists());
    assert!(
        !layout
            .join("blobs/sha256")
            .join(format!("{}.partial", &blob[7..]))
            .exists(),
        "bad bytes are not kept for a resume"
    );
    assert_eq!(read_index(&layout)["manifests"], serde_json::json!([]));

    // terra install checks the manifest and config before touching the disk, and fetches
    // the layers onto the filesystem it made: the bad blob stops it before any version
    // exists (a re-run resumes what was fetched; see upgrade_fetch).
    let disk = work.path().join("disk.img");
    let node = work.path().join("node.toml");
    fs::write(
        &node,
        format!(
            "image = \"{reference}\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"{}\"\nsize = 300\n",
            disk.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap(), "--plain-http"]);
    assert!(!ok);
    eprintln!("{err}");
    assert!(err.contains("digest mismatch"), "{err}");
    let (ok, _, err) = run_terra(&["versions", "--disk", disk.to_str().unwrap()]);
    assert!(
        !ok && err.contains("state.json"),
        "no version was installed: {err}"
    );
}
