//! Signed images against real peers: keys and signatures made by `openssl`, attached to
//! images in Debian's docker-registry (on 127.0.0.1) by `skopeo` (containers/image writes
//! cosign's `sha256-<hex>.sig` tags), copied into OCI layouts by skopeo, and real cosign
//! signatures from containers/image's fixtures. Every refusal must leave the target
//! untouched; a tag moved in the middle of a pull must not be followed.

use crate::oci_common;
use crate::oci_common::signing;

use std::fs;
use std::path::{Path, PathBuf};

use oci_common::*;
use signing::*;

/// Bound on one terra run in these tests.
const T: u64 = 120;

fn marker(text: &str) -> Vec<u8> {
    layer(&[
        E::Dir("etc/", 0o755),
        E::FileFull("etc/marker", text.as_bytes().to_vec(), 0o644, 0, 0, vec![]),
    ])
}

struct Lab {
    reg: Registry,
    work: tempfile::TempDir,
    regd: PathBuf,
    k1: Key,
    k2: Key,
}

impl Lab {
    fn new() -> Lab {
        let reg = Registry::start();
        let work = tempfile::tempdir().unwrap();
        let regd = registries_d(work.path());
        let k1 = openssl_key(work.path(), "k1");
        let k2 = openssl_key(work.path(), "k2");
        Lab {
            reg,
            work,
            regd,
            k1,
            k2,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Writes a one-layer image whose /etc/marker says `text` and pushes it as
    /// `repo:tag`, with the signatures `sign` makes for its digest attached by skopeo
    /// (none: pushed unsigned). Returns the manifest digest.
    fn publish(
        &self,
        repo: &str,
        tag: &str,
        text: &str,
        sign: impl Fn(&str) -> Vec<(Vec<u8>, String)>,
    ) -> String {
        let src = self.path(&format!("src-{}-{tag}", repo.replace('/', "-")));
        let d = image_layout(&src, tag, &[(marker(text), Comp::Gzip)]);
        self.push(&src, tag, repo, &sign(&d));
        d
    }

    fn push(&self, src: &Path, tag: &str, repo: &str, sigs: &[(Vec<u8>, String)]) {
        let dir = self.path(&format!("dir-{}-{tag}", repo.replace('/', "-")));
        let _ = fs::remove_dir_all(&dir);
        dir_with_signatures(src, tag, &dir, sigs);
        push_dir_signed(&self.reg.host(), &dir, &format!("{repo}:{tag}"), &self.regd);
    }

    fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.reg.host())
    }

    fn sign(&self, key: &Key, payload: Vec<u8>) -> Vec<(Vec<u8>, String)> {
        let sig = openssl_sign(key, &payload);
        vec![(payload, sig)]
    }
}

fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// A refusal: terra failed, its message names the reference, the digest and the key and
/// says `why`, and `target` was never created.
fn assert_refused(
    (ok, out, err): (bool, String, String),
    names: &[&str],
    why: &str,
    target: &Path,
) {
    assert!(!ok, "accepted: {out}");
    for n in names {
        assert!(err.contains(n), "the error does not name {n:?}: {err}");
    }
    assert!(err.contains(why), "expected {why:?} in: {err}");
    assert!(
        !target.exists(),
        "{} was written on a refusal",
        target.display()
    );
}

#[test]
fn signatures_made_by_openssl_attached_by_skopeo_in_a_registry_and_a_layout() {
    let lab = Lab::new();
    let other = digest(b"another image");
    let k1 = lab.k1.public.to_str().unwrap().to_string();
    let k2 = lab.k2.public.to_str().unwrap().to_string();
    let host = lab.reg.host();
    // (case, what the refusal says; None: accepted)
    type Signer<'a> = Box<dyn Fn(&str, &str) -> Vec<(Vec<u8>, String)> + 'a>;
    let cases: Vec<(&str, Signer, Option<&str>)> = vec![
        (
            "good",
            Box::new(|r, d| lab.sign(&lab.k1, cosign_payload(r, d))),
            None,
        ),
        ("unsigned", Box::new(|_, _| vec![]), Some("unsigned (no ")),
        (
            "other-key",
            Box::new(|r, d| lab.sign(&lab.k2, cosign_payload(r, d))),
            Some("the signature does not verify with any trusted key"),
        ),
        (
            "other-digest",
            Box::new(|r, _| lab.sign(&lab.k1, cosign_payload(r, &other))),
            Some("but for another image"),
        ),
        (
            "tampered",
            Box::new(|r, d| {
                let (_, sig) = lab.sign(&lab.k1, cosign_payload(r, d)).remove(0);
                vec![(cosign_payload("evil.example/os", d), sig)]
            }),
            Some("the signature does not verify with any trusted key"),
        ),
        (
            "wrong-type",
            Box::new(|r, d| {
                lab.sign(
                    &lab.k1,
                    payload_text("critical", r, d, "atomic container signature"),
                )
            }),
            Some("critical.type is \"atomic container signature\""),
        ),
        (
            "case",
            Box::new(|r, d| {
                lab.sign(
                    &lab.k1,
                    payload_text("Critical", r, d, "cosign container image signature"),
                )
            }),
            Some("unknown field `Critical`"),
        ),
    ];
    for (case, signer, refusal) in &cases {
        let repo = format!("signed/{case}");
        let docker_ref = format!("{host}/{repo}");
        let d = lab.publish(&repo, "v1", case, |d| signer(&docker_ref, d));
        let reference = lab.reference(&repo, "v1");

        // A registry reference, straight to a tree.
        let target = lab.path(&format!("tree-{case}"));
        let run = terra_bounded(
            &[
                "image",
                "unpack",
                "--plain-http",
                &reference,
                target.to_str().unwrap(),
                "--verify-key",
                &k1,
            ],
            T,
        );
        // The same image into a layout with `terra image pull`.
        let pulled = lab.path(&format!("pulled-{case}"));
        let pull = terra_bounded(
            &[
                "image",
                "pull",
                "--plain-http",
                &reference,
                "--layout",
                pulled.to_str().unwrap(),
                "--verify-key",
                &k1,
            ],
            T,
        );
        // skopeo's copy of the registry's tags (the image and its .sig) into a layout.
        let layout = lab.path(&format!("layout-{case}"));
        copy_to_layout(&host, &repo, "v1", &layout);
        if tags(&host, &repo).contains(&sig_tag(&d)) {
            copy_to_layout(&host, &repo, &sig_tag(&d), &layout);
        }
        let from_layout = lab.path(&format!("tree-layout-{case}"));
        let layout_ref = format!("oci:{}:v1", layout.display());
        let offline = terra_bounded(
            &[
                "image",
                "unpack",
                &layout_ref,
                from_layout.to_str().unwrap(),
                "--verify-key",
                &k1,
            ],
            T,
        );
        match refusal {
            None => {
                let (ok, out, err) = run;
                assert!(ok, "{case}: {err}");
                assert!(
                    out.contains(&format!("signature verified: {d} signed by {k1}")),
                    "{case}: {out}"
                );
                assert_eq!(
                    fs::read_to_string(target.join("etc/marker")).unwrap(),
                    *case
                );
                let (ok, out, err) = pull;
                assert!(ok, "{case}: {err}");
                assert!(out.contains(&format!("signature verified: {d}")), "{out}");
                let (ok, out, err) = offline;
                assert!(ok, "{case}: {err}");
                assert!(out.contains(&format!("signature verified: {d}")), "{out}");
                assert_eq!(
                    fs::read_to_string(from_layout.join("etc/marker")).unwrap(),
                    *case
                );
                // Without the key the same image is refused when another key is given.
                let no = lab.path(&format!("tree-k2-{case}"));
                assert_refused(
                    terra_bounded(
                        &[
                            "image",
                            "unpack",
                            "--plain-http",
                            &reference,
                            no.to_str().unwrap(),
                            "--verify-key",
                            &k2,
                        ],
                        T,
                    ),
                    &[&reference, &d, &k2],
                    "does not verify with any trusted key",
                    &no,
                );
            }
            Some(why) => {
                assert_refused(run, &[&reference, &d, &k1], why, &target);
                assert_refused(pull, &[&reference, &d, &k1], why, &pulled);
                let why = if *case == "unsigned" {
                    "unsigned (no manifest tagged"
                } else {
                    why
                };
                assert_refused(offline, &[&layout_ref, &d, &k1], why, &from_layout);
            }
        }
    }

    // Any one of several keys suffices: the image signed by k2 passes with k1 and k2.
    let target = lab.path("tree-both-keys");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--plain-http",
            &lab.reference("signed/other-key", "v1"),
            target.to_str().unwrap(),
            "--verify-key",
            &k1,
            "--verify-key",
            &k2,
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("signed by {k2}")), "{out}");

    // Key files that are not public P-256 keys are refused up front, naming the file and
    // never printing what is in it.
    let target = lab.path("tree-private");
    let private = lab.k1.private.to_str().unwrap();
    let (ok, _, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--plain-http",
            &lab.reference("signed/good", "v1"),
            target.to_str().unwrap(),
            "--verify-key",
            private,
        ],
        T,
    );
    assert!(
        !ok && err.contains(private) && err.contains("private key"),
        "{err}"
    );
    let secret = fs::read_to_string(&lab.k1.private).unwrap();
    let body: String = secret.lines().nth(1).unwrap().to_string();
    assert!(!err.contains(&body), "the private key leaked into: {err}");
    assert!(!target.exists());
}

#[test]
fn a_signed_index_is_verified_and_its_platform_taken_from_the_verified_bytes() {
    let lab = Lab::new();
    let k1 = lab.k1.public.to_str().unwrap().to_string();
    let src = lab.path("src-multi");
    let (amd, amd_size) = add_image(&src, "amd64", &[(marker("amd64"), Comp::Gzip)]);
    let (arm, arm_size) = add_image(&src, "arm64", &[(marker("arm64"), Comp::Zstd)]);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd,
             "size": amd_size, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm,
             "size": arm_size, "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }))
    .unwrap();
    let index_digest = put_blob(&src, &index);
    write_index(
        &src,
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        })],
    );
    let docker_ref = format!("{}/multi/os", lab.reg.host());
    lab.push(
        &src,
        "multi",
        "multi/os",
        &lab.sign(&lab.k1, cosign_payload(&docker_ref, &index_digest)),
    );
    let reference = lab.reference("multi/os", "multi");

    // The index digest is what is signed; the arm64 manifest comes from its bytes.
    let tree = lab.path("tree-arm64");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--plain-http",
            "--platform",
            "linux/arm64",
            &reference,
            tree.to_str().unwrap(),
            "--verify-key",
            &k1,
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("signature verified: {index_digest}")),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/marker")).unwrap(),
        "arm64"
    );

    // By digest, the same: the digest is pinned by the reference and still must be signed.
    let by_digest = format!("{}/multi/os@{index_digest}", lab.reg.host());
    let tree = lab.path("tree-by-digest");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--plain-http",
            &by_digest,
            tree.to_str().unwrap(),
            "--verify-key",
            &k1,
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("signature verified: {index_digest}")),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/marker")).unwrap(),
        "amd64"
    );
    let tree = lab.path("tree-by-digest-k2");
    assert_refused(
        terra_bounded(
            &[
                "image",
                "unpack",
                "--plain-http",
                &by_digest,
                tree.to_str().unwrap(),
                "--verify-key",
                lab.k2.public.to_str().unwrap(),
            ],
            T,
        ),
        &[&by_digest, &index_digest],
        "does not verify with any trusted key",
        &tree,
    );

    // A pull keeps the signature beside the image, tagged as cosign tags it, so the layout
    // verifies with the registry gone.
    let layout = lab.path("pulled");
    let (ok, _, err) = terra_bounded(
        &[
            "image",
            "pull",
            "--plain-http",
            &reference,
            "--layout",
            layout.to_str().unwrap(),
            "--verify-key",
            &k1,
        ],
        T,
    );
    assert!(ok, "{err}");
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let names: Vec<(String, String)> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        names.contains(&("multi".to_string(), index_digest.clone())),
        "the tag names the signed index: {names:?}"
    );
    assert!(
        names.iter().any(|(t, _)| *t == sig_tag(&index_digest)),
        "{names:?}"
    );
    let Lab { reg, work, .. } = lab;
    drop(reg);
    let tree = work.path().join("tree-offline");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            &format!("oci:{}:multi", layout.display()),
            tree.to_str().unwrap(),
            "--verify-key",
            &k1,
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&index_digest), "{out}");
    assert_eq!(
        fs::read_to_string(tree.join("etc/marker")).unwrap(),
        "amd64"
    );
    // skopeo reads the pulled layout (the image and the signature tag are whole images).
    must(
        std::process::Command::new("skopeo")
            .args(["--insecure-policy", "inspect", "--raw"])
            .arg(format!(
                "oci:{}:{}",
                layout.display(),
                sig_tag(&index_digest)
            )),
        60,
    );
}

#[test]
fn a_tag_moved_during_the_pull_is_not_followed() {
    let lab = Lab::new();
    let k1 = lab.k1.public.to_str().unwrap().to_string();
    let host = lab.reg.host();
    let docker_ref = format!("{host}/moving/os");
    // Both images are signed by the trusted key: what keeps B out is the pinned digest,
    // not its signature.
    let a = lab.publish("moving/os", "v1", "image A", |d| {
        lab.sign(&lab.k1, cosign_payload(&docker_ref, d))
    });
    let b = lab.publish("moving/os", "b", "image B", |d| {
        lab.sign(&lab.k1, cosign_payload(&docker_ref, d))
    });
    assert_ne!(a, b);
    // Through a proxy that moves v1 to B right after the registry answered the tag's
    // manifest request and before terra sees the answer.
    let (h2, repo) = (host.clone(), "moving/os");
    let proxy = Proxy::start(
        lab.reg.port,
        "GET /v2/moving/os/manifests/v1 ".to_string(),
        Box::new(move || retag(&h2, repo, "b", "v1")),
    );
    let reference = format!("{}/moving/os:v1", proxy.host());
    let tree = lab.path("tree");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--plain-http",
            &reference,
            tree.to_str().unwrap(),
            "--verify-key",
            &k1,
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("signature verified: {a}")), "{out}");
    assert_eq!(
        fs::read_to_string(tree.join("etc/marker")).unwrap(),
        "image A"
    );
    let requests = proxy.requests();
    let by_tag: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/manifests/v1 "))
        .collect();
    assert_eq!(by_tag.len(), 1, "the tag is resolved once: {requests:#?}");
    // Everything after it names A's digest (or A's signature tag), never the tag again.
    assert!(
        requests
            .iter()
            .any(|r| r.contains(&format!("/manifests/{}", sig_tag(&a)))),
        "{requests:#?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains(&b[7..]) || r.contains(&sig_tag(&b))),
        "nothing of B was fetched: {requests:#?}"
    );
    // The tag did move: a fresh pull now gets B.
    let tree_b = lab.path("tree-b");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--plain-http",
            &lab.reference("moving/os", "v1"),
            tree_b.to_str().unwrap(),
            "--verify-key",
            &k1,
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("signature verified: {b}")), "{out}");
    assert_eq!(
        fs::read_to_string(tree_b.join("etc/marker")).unwrap(),
        "image B"
    );
}

#[test]
fn install_verifies_before_the_first_mkfs() {
    let _disks = crate::common::host_disks(module_path!());
    let lab = Lab::new();
    let k1 = lab.k1.public.to_str().unwrap().to_string();
    let host = lab.reg.host();
    let docker_ref = format!("{host}/node/os");
    let src = lab.path("src-node");
    let signed = image_layout(&src, "v1", &[(marker("signed root"), Comp::Gzip)]);
    let payload = cosign_payload(&docker_ref, &signed);
    let sig = openssl_sign(&lab.k1, &payload);
    lab.push(&src, "v1", "node/os", &[(payload.clone(), sig.clone())]);

    let node = |disk: &Path| {
        let path = lab.path("node.toml");
        fs::write(
            &path,
            format!(
                "hostname = \"signed-01\"\n[[groups]]\nlabel = \"os\"\ntype = \"single\"\n  \
                 [[groups.disk]]\n  device = \"{}\"\n  size = 256\n",
                disk.display()
            ),
        )
        .unwrap();
        path
    };
    let disk = lab.path("disk.img");
    let (ok, out, err) = terra_bounded(
        &[
            "install",
            node(&disk).to_str().unwrap(),
            "--image",
            &lab.reference("node/os", "v1"),
            "--plain-http",
            "--verify-key",
            &k1,
        ],
        300,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&signed), "{out}");
    let id = terra_init::probe::probe_fs(&mut fs::File::open(&disk).unwrap()).unwrap();
    assert_eq!(id.label.as_deref(), Some("os"));

    // The same image re-pushed with one changed layer (a new digest) and the old
    // signature copied beside it: refused before any disk is created.
    let src2 = lab.path("src-node-2");
    let changed = image_layout(&src2, "v2", &[(marker("changed root"), Comp::Gzip)]);
    lab.push(&src2, "v2", "node/os", &[(payload, sig)]);
    let disk2 = lab.path("disk2.img");
    let reference = lab.reference("node/os", "v2");
    assert_refused(
        terra_bounded(
            &[
                "install",
                node(&disk2).to_str().unwrap(),
                "--image",
                &reference,
                "--plain-http",
                "--verify-key",
                &k1,
            ],
            300,
        ),
        &[&reference, &changed, &k1],
        &format!("but for another image: {signed}"),
        &disk2,
    );
    // And unsigned images are refused the same way.
    let src3 = lab.path("src-node-3");
    let unsigned = image_layout(&src3, "v3", &[(marker("unsigned root"), Comp::Gzip)]);
    lab.reg.push(&src3, "v3", "node/os");
    let reference = lab.reference("node/os", "v3");
    assert_refused(
        terra_bounded(
            &[
                "install",
                node(&disk2).to_str().unwrap(),
                "--image",
                &reference,
                "--plain-http",
                "--verify-key",
                &k1,
            ],
            300,
        ),
        &[&reference, &unsigned, &k1],
        "unsigned",
        &disk2,
    );

    // terra upgrade checks the same way, before anything is written to the disk, with the
    // keys the disk was installed with: no --verify-key needed.
    let d = disk.to_str().unwrap();
    let (ok, _, err) = terra_bounded(&["upgrade", "--disk", d, &reference, "--plain-http"], 300);
    assert!(!ok && err.contains(&unsigned), "{err}");
    let versions = |d: &str| {
        let (ok, out, err) = terra_bounded(&["versions", "--disk", d, "--json"], 120);
        assert!(ok, "{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    };
    assert_eq!(versions(d).len(), 1, "nothing was added");
    crate::upgrade::with_mount(&disk, |m| {
        assert!(
            !m.join(".terra/downloads").exists(),
            "nothing was downloaded to the disk before the signature check"
        );
    });
    let src4 = lab.path("src-node-4");
    let up = image_layout(
        &src4,
        "v4",
        &[
            (marker("signed root"), Comp::Gzip),
            (marker("upgrade"), Comp::Gzip),
        ],
    );
    lab.push(
        &src4,
        "v4",
        "node/os",
        &lab.sign(&lab.k1, cosign_payload(&docker_ref, &up)),
    );
    let v4 = lab.reference("node/os", "v4");
    let (ok, out, err) = terra_bounded(&["upgrade", "--disk", d, &v4, "--plain-http"], 300);
    assert!(ok, "{err}");
    assert!(out.contains("1 of 2 layers from chains"), "{out}");
    let v = versions(d);
    assert_eq!(v[1]["state"], "tentative");
    let by = v[1]["verified_by"].as_str().unwrap_or_default();
    assert!(by.contains("sha256:"), "the state records the key: {v:?}");

    // node.toml's [signature] instead of --verify-key; `require` with no key is refused.
    let with_policy = |disk: &Path, policy: &str| {
        let path = lab.path("node-policy.toml");
        fs::write(
            &path,
            format!(
                "[signature]\n{policy}\n[[groups]]\nlabel = \"os\"\n  [[groups.disk]]\n  \
                 device = \"{}\"\n  size = 256\n",
                disk.display()
            ),
        )
        .unwrap();
        terra_bounded(
            &[
                "install",
                path.to_str().unwrap(),
                "--image",
                &lab.reference("node/os", "v1"),
                "--plain-http",
            ],
            300,
        )
    };
    let disk3 = lab.path("disk3.img");
    let (ok, out, err) = with_policy(&disk3, &format!("keys = [{k1:?}]"));
    assert!(ok && out.contains(&signed), "{out}{err}");
    let disk4 = lab.path("disk4.img");
    let (ok, _, err) = with_policy(&disk4, "require = true");
    assert!(!ok && err.contains("require = true"), "{err}");
    assert!(!disk4.exists(), "nothing written");
}

// ---- Real cosign signatures: containers/image's fixtures (tests/fixtures/cosign) ----

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cosign")
}

/// A signature file of skopeo's dir: format: (mimeType, payload, annotations).
fn read_sigstore_file(path: &Path) -> (String, Vec<u8>, serde_json::Value) {
    use base64::Engine as _;
    let raw = fs::read(path).unwrap();
    let json = raw.strip_prefix(b"\0sigstore-json\n").unwrap();
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    (
        v["mimeType"].as_str().unwrap().to_string(),
        base64::engine::general_purpose::STANDARD
            .decode(v["payload"].as_str().unwrap())
            .unwrap(),
        v["annotations"].clone(),
    )
}

/// An OCI layout holding a fixture's manifest tagged `v1` (its blobs are not in the
/// fixture) and its signatures as the `sha256-<hex>.sig` manifest cosign would push: one
/// layer per signature, the payload as the blob, the annotations on the descriptor.
fn fixture_layout(dir: &Path, fixture: &str, signatures: &[PathBuf]) -> (PathBuf, String) {
    let layout = dir.join(fixture);
    let manifest = fs::read(fixtures().join(fixture).join("manifest.json")).unwrap();
    let d = put_blob(&layout, &manifest);
    let config =
        br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = put_blob(&layout, config);
    let layers: Vec<serde_json::Value> = signatures
        .iter()
        .map(|s| {
            let (mt, payload, annotations) = read_sigstore_file(s);
            let pd = put_blob(&layout, &payload);
            serde_json::json!({"mediaType": mt, "digest": pd, "size": payload.len(),
                               "annotations": annotations})
        })
        .collect();
    let sigm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                   "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let sd = put_blob(&layout, &sigm);
    write_index(
        &layout,
        vec![
            serde_json::json!({
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": d, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": "v1"}
            }),
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sd, "size": sigm.len(),
                "annotations": {"org.opencontainers.image.ref.name": sig_tag(&d)}
            }),
        ],
    );
    (layout, d)
}

fn signature_files(fixture: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixtures().join(fixture))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("signature-")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn cosign_made_signatures_from_containers_image_fixtures() {
    use terra_builder::oci::layout::Layout;
    use terra_builder::oci::verify::{verify_layout, VerifyPolicy};
    use terra_builder::oci::OciError;

    let work = tempfile::tempdir().unwrap();
    let key = fixtures().join("cosign.pub");
    let policy = VerifyPolicy::from_files(&[&key]).unwrap();

    for fixture in [
        "dir-img-cosign-valid",
        "dir-img-cosign-valid-2",
        "dir-img-cosign-valid-with-tag",
        "dir-img-cosign-mixed",
    ] {
        let (layout, d) = fixture_layout(work.path(), fixture, &signature_files(fixture));
        let v = verify_layout(
            &Layout::open(&layout).unwrap(),
            &d.parse().unwrap(),
            fixture,
            &policy,
        )
        .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(v.digest.to_string(), d);
        assert_eq!(v.key, key.display().to_string());
        // Through the CLI the check passes and resolution goes on to the blobs the fixture
        // does not ship: the failure is about a missing blob, not the signature.
        let target = work.path().join(format!("tree-{fixture}"));
        let (ok, _, err) = terra_bounded(
            &[
                "image",
                "unpack",
                &format!("oci:{}:v1", layout.display()),
                target.to_str().unwrap(),
                "--verify-key",
                key.to_str().unwrap(),
            ],
            T,
        );
        assert!(
            !ok && err.contains("missing from the layout"),
            "{fixture}: {err}"
        );
        assert!(!err.contains("signature"), "{fixture}: {err}");
    }

    let unknown = fixtures().join("unknown-cosign-key.signature");
    for (fixture, sigs, why) in [
        (
            "dir-img-cosign-modified-manifest",
            signature_files("dir-img-cosign-modified-manifest"),
            "but for another image: sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00",
        ),
        (
            "dir-img-cosign-manifest-digest-error",
            signature_files("dir-img-cosign-manifest-digest-error"),
            "but for another image: sha256:634a8f35",
        ),
        (
            "dir-img-cosign-valid",
            vec![unknown.clone()],
            "the signature does not verify with any trusted key",
        ),
        (
            "dir-img-cosign-other-attachment",
            signature_files("dir-img-cosign-other-attachment"),
            "no application/vnd.dev.cosign.simplesigning.v1+json layer",
        ),
    ] {
        let dir = work.path().join(format!("refused-{fixture}"));
        let (layout, d) = fixture_layout(&dir, fixture, &sigs);
        let e = verify_layout(
            &Layout::open(&layout).unwrap(),
            &d.parse().unwrap(),
            fixture,
            &policy,
        )
        .unwrap_err();
        assert!(matches!(e, OciError::Signature(_)), "{fixture}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&d) && msg.contains("cosign.pub") && msg.contains(why),
            "{fixture}: {msg}"
        );
        let target = dir.join("tree");
        let reference = format!("oci:{}:v1", layout.display());
        assert_refused(
            terra_bounded(
                &[
                    "image",
                    "unpack",
                    &reference,
                    target.to_str().unwrap(),
                    "--verify-key",
                    key.to_str().unwrap(),
                ],
                T,
            ),
            &[&reference, &d, "cosign.pub"],
            why,
            &target,
        );
    }
}

/// Stores `manifest` as `repo:tag` in the registry's filesystem storage, laid out as
/// distribution stores a pushed manifest (the blob, its revision link, the tag's links).
/// The fixtures ship a manifest without its config and layer blobs, and a registry refuses a
/// manifest push whose blobs it does not have; it serves a stored one regardless.
fn seed_manifest(reg: &Registry, repo: &str, tag: &str, manifest: &[u8]) -> String {
    let d = digest(manifest);
    let hex = &d[7..];
    let v2 = reg.dir.path().join("data/docker/registry/v2");
    let link = d.clone();
    let put = |p: PathBuf, data: &[u8]| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    put(
        v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
        manifest,
    );
    let r = v2.join("repositories").join(repo).join("_manifests");
    put(
        r.join(format!("revisions/sha256/{hex}/link")),
        link.as_bytes(),
    );
    put(r.join(format!("tags/{tag}/current/link")), link.as_bytes());
    put(
        r.join(format!("tags/{tag}/index/sha256/{hex}/link")),
        link.as_bytes(),
    );
    d
}

#[test]
fn cosign_made_signatures_from_containers_image_fixtures_served_by_a_registry() {
    let reg = Registry::start();
    let host = reg.host();
    let work = tempfile::tempdir().unwrap();
    let key = fixtures().join("cosign.pub");
    let unknown = fixtures().join("unknown-cosign-key.signature");
    // (fixture, its signature files, None = accepted or what the refusal says)
    let cases: Vec<(&str, Vec<PathBuf>, Option<&str>)> = vec![
        (
            "dir-img-cosign-valid",
            signature_files("dir-img-cosign-valid"),
            None,
        ),
        (
            "dir-img-cosign-valid-2",
            signature_files("dir-img-cosign-valid-2"),
            None,
        ),
        (
            "dir-img-cosign-mixed",
            signature_files("dir-img-cosign-mixed"),
            None,
        ),
        (
            "dir-img-cosign-modified-manifest",
            signature_files("dir-img-cosign-modified-manifest"),
            Some("but for another image"),
        ),
        // A schema 1 manifest: the registry's digest of it is not the digest of the
        // bytes it serves, and the pull stops there, before any signature is looked at.
        (
            "dir-img-cosign-manifest-digest-error",
            signature_files("dir-img-cosign-manifest-digest-error"),
            Some("Invalid digest"),
        ),
        (
            "dir-img-cosign-valid",
            vec![unknown],
            Some("the signature does not verify with any trusted key"),
        ),
    ];
    for (i, (fixture, sigs, refused)) in cases.into_iter().enumerate() {
        let repo = format!("cosign/case{i}");
        let manifest = fs::read(fixtures().join(fixture).join("manifest.json")).unwrap();
        let d = seed_manifest(&reg, &repo, "v1", &manifest);
        // The signatures as cosign lays them out (`sha256-<hex>.sig`, one layer per
        // signature), pushed by skopeo from a layout.
        let (layout, ld) = fixture_layout(&work.path().join(format!("case{i}")), fixture, &sigs);
        assert_eq!(ld, d);
        must(
            std::process::Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--preserve-digests"])
                .args(["--dest-tls-verify=false"])
                .arg(format!("oci:{}:{}", layout.display(), sig_tag(&d)))
                .arg(format!("docker://{host}/{repo}:{}", sig_tag(&d))),
            120,
        );
        let reference = format!("{host}/{repo}:v1");
        let pulled = work.path().join(format!("pulled{i}"));
        let (ok, out, err) = terra_bounded(
            &[
                "image",
                "pull",
                "--plain-http",
                &reference,
                "--layout",
                pulled.to_str().unwrap(),
                "--verify-key",
                key.to_str().unwrap(),
            ],
            T,
        );
        match refused {
            // Verified; the pull then stops at the config blob the fixture does not ship.
            None => {
                assert!(!ok, "{fixture}: {out}");
                assert!(!err.contains("signature"), "{fixture}: {err}");
                assert!(err.contains("961769676411f082"), "{fixture}: {err}");
            }
            Some(why) if why == "Invalid digest" => {
                assert_refused((ok, out, err), &[&reference, &d], why, &pulled)
            }
            Some(why) => assert_refused(
                (ok, out, err),
                &[&reference, &d, "cosign.pub"],
                why,
                &pulled,
            ),
        }
    }
}

// ---- cosign v3: a Sigstore bundle v0.3 attached as an OCI 1.1 referrer ----

/// Attaches to `image` in `host/repo` a Sigstore bundle v0.3 built as the Sigstore bundle
/// spec describes it: an in-toto Statement v1 naming `subject`, in a DSSE envelope whose
/// signature openssl makes over the PAE; uploaded (as oras would) as a referrer manifest
/// (`artifactType`, `subject`, the bundle as its layer) listed in the referrers fallback tag
/// `sha256-<hex>` (an index), since Debian's docker-registry 2.8 has no referrers API.
#[allow(clippy::too_many_arguments)]
fn attach_bundle(
    host: &str,
    repo: &str,
    image: &str,
    image_size: usize,
    subject: &str,
    predicate: &str,
    key: &Key,
) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    const IN_TOTO: &str = "application/vnd.in-toto+json";
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("{host}/{repo}"),
                     "digest": {"sha256": subject.strip_prefix("sha256:").unwrap()}}],
        "predicateType": predicate,
        "predicate": {},
    }))
    .unwrap();
    // DSSE v1 PAE: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
    let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), statement.len()).into_bytes();
    pae.extend_from_slice(&statement);
    let sig = openssl_sign(key, &pae);
    let bundle = serde_json::to_vec(&serde_json::json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": "test key"}, "tlogEntries": []},
        "dsseEnvelope": {"payload": b64.encode(&statement), "payloadType": IN_TOTO,
                         "signatures": [{"sig": sig, "keyid": ""}]},
    }))
    .unwrap();
    upload_blob(host, repo, &bundle);
    upload_blob(host, repo, b"{}");
    let referrer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(b"{}"),
                   "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": digest(&bundle), "size": bundle.len()}],
        "subject": {"mediaType": MANIFEST, "digest": image, "size": image_size},
    }))
    .unwrap();
    let rd = digest(&referrer);
    upload_manifest(host, repo, &rd, MANIFEST, &referrer);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": rd, "size": referrer.len(),
                       "artifactType": BUNDLE}],
    }))
    .unwrap();
    upload_manifest(host, repo, &image.replace(':', "-"), INDEX, &index);
}

#[test]
fn sigstore_bundle_referrers_made_with_openssl() {
    let lab = Lab::new();
    let host = lab.reg.host();
    let k1 = lab.k1.public.to_str().unwrap().to_string();
    let sign_v1 = "https://sigstore.dev/cosign/sign/v1";
    let other = digest(b"another image");
    // (case, the statement names the image?, predicate, key; refusal)
    let cases: Vec<(&str, bool, &str, &Key, Option<&str>)> = vec![
        ("good", true, sign_v1, &lab.k1, None),
        (
            "other-key",
            true,
            sign_v1,
            &lab.k2,
            Some("does not verify with any trusted key"),
        ),
        (
            "other-subject",
            false,
            sign_v1,
            &lab.k1,
            Some("but for another image: the statement names"),
        ),
        (
            "attestation",
            true,
            "https://slsa.dev/provenance/v1",
            &lab.k1,
            Some("predicateType \"https://slsa.dev/provenance/v1\""),
        ),
    ];
    for (case, own, predicate, key, refusal) in cases {
        let repo = format!("bundle/{case}");
        let src = lab.path(&format!("src-bundle-{case}"));
        let d = image_layout(&src, "v1", &[(marker(case), Comp::Gzip)]);
        lab.reg.push(&src, "v1", &repo);
        let size = fs::read(src.join("blobs/sha256").join(&d[7..]))
            .unwrap()
            .len();
        let subject = if own { d.clone() } else { other.clone() };
        attach_bundle(&host, &repo, &d, size, &subject, predicate, key);
        let reference = lab.reference(&repo, "v1");
        let target = lab.path(&format!("tree-bundle-{case}"));
        let run = terra_bounded(
            &[
                "image",
                "unpack",
                "--plain-http",
                &reference,
                target.to_str().unwrap(),
                "--verify-key",
                &k1,
            ],
            T,
        );
        match refusal {
            None => {
                let (ok, out, err) = run;
                assert!(ok, "{case}: {err}");
                assert!(
                    out.contains(&format!("signature verified: {d} signed by {k1}")),
                    "{out}"
                );
                assert_eq!(fs::read_to_string(target.join("etc/marker")).unwrap(), case);
                // A pull keeps the referrer (listed in index.json with its artifactType,
                // as OCI image-layout 1.1 lists referrers): the layout verifies offline.
                let layout = lab.path(&format!("pulled-bundle-{case}"));
                let (ok, _, err) = terra_bounded(
                    &[
                        "image",
                        "pull",
                        "--plain-http",
                        &reference,
                        "--layout",
                        layout.to_str().unwrap(),
                        "--verify-key",
                        &k1,
                    ],
                    T,
                );
                assert!(ok, "{err}");
                let offline = lab.path(&format!("tree-bundle-offline-{case}"));
                let (ok, out, err) = terra_bounded(
                    &[
                        "image",
                        "unpack",
                        &format!("oci:{}:v1", layout.display()),
                        offline.to_str().unwrap(),
                        "--verify-key",
                        &k1,
                    ],
                    T,
                );
                assert!(ok, "{err}");
                assert!(out.contains(&format!("signature verified: {d}")), "{out}");
                let wrong = lab.path(&format!("tree-bundle-offline-k2-{case}"));
                assert_refused(
                    terra_bounded(
                        &[
                            "image",
                            "unpack",
                            &format!("oci:{}:v1", layout.display()),
                            wrong.to_str().unwrap(),
                            "--verify-key",
                            lab.k2.public.to_str().unwrap(),
                        ],
                        T,
                    ),
                    &[&d],
                    "does not verify with any trusted key",
                    &wrong,
                );
            }
            Some(why) => assert_refused(run, &[&reference, &d, &k1], why, &target),
        }
    }
}

// ---- Benchmark (numbers, not pass/fail): `cargo xtask bench --only verify` ----

/// What `--verify-key` adds to `terra image pull` of the lab's demo image from a registry on
/// loopback: pulls with and without it, alternating, median of `TERRA_BENCH_RUNS` (9).
/// Prints a markdown table.
#[test]
#[ignore]
fn verify_benchmark() {
    use std::time::Instant;
    let lab = Lab::new();
    let busybox = lab::host::static_busybox().expect("static busybox (busybox-static)");
    let (layout, digest) = lab::oci_root::demo_layout(&busybox).expect("the demo image");
    let docker_ref = format!("{}/bench/demo", lab.reg.host());
    let sigs = lab.sign(&lab.k1, cosign_payload(&docker_ref, &digest));
    lab.push(&layout, lab::oci_root::DEMO_TAG, "bench/demo", &sigs);
    let reference = lab.reference("bench/demo", lab::oci_root::DEMO_TAG);
    let key = lab.k1.public.to_str().unwrap().to_string();
    let runs: usize = std::env::var("TERRA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let (mut plain, mut verified) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        for verify in [false, true] {
            let out = lab.path(&format!("pull-{i}-{verify}"));
            let mut args = vec![
                "image",
                "pull",
                &reference,
                "--layout",
                out.to_str().unwrap(),
                "--plain-http",
            ];
            if verify {
                args.extend(["--verify-key", &key]);
            }
            let start = Instant::now();
            let (ok, _, err) = terra_bounded(&args, 120);
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            assert!(ok, "{err}");
            // The first round warms the registry and the page cache.
            if i > 0 {
                if verify { &mut verified } else { &mut plain }.push(ms);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, v) = (median(&mut plain), median(&mut verified));
    let size = fs::metadata(env!("CARGO_BIN_EXE_terra")).map_or(0, |m| m.len());
    println!(
        "### Signature check: `terra image pull` of the demo image from a local registry, median of {runs}\n\n\
         | pull | ms | added |\n|---|---|---|\n\
         | without --verify-key | {p:.1} | |\n\
         | with --verify-key | {v:.1} | {:+.1} ms |\n\n\
         terra binary: {size} bytes (this build)\n",
        v - p
    );
}
