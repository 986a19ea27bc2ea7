//! `terra key generate` and `terra sign` against peers that are not ours: openssl verifies
//! each signature terra made over its payload; containers/image (skopeo, reading cosign's
//! `.sig` attachments through `use-sigstore-attachments`) reads the signature manifest
//! terra pushed to Debian's docker-registry; and terra's own verifier (`--verify-key`)
//! accepts the image, and refuses it with a key that did not sign.

use crate::oci_common;
use crate::oci_common::signing;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use oci_common::*;
use signing::*;

/// Bound on one terra run in these tests.
const T: u64 = 120;

fn marker() -> Vec<u8> {
    layer(&[
        E::Dir("etc/", 0o755),
        E::FileFull(
            "etc/marker",
            b"signed by terra".to_vec(),
            0o644,
            0,
            0,
            vec![],
        ),
    ])
}

/// openssl's verdict on `sig_b64` over `payload` with the PEM public key `public`.
fn openssl_verifies(public: &Path, payload: &[u8], sig_b64: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (p, s) = (dir.path().join("payload"), dir.path().join("sig.der"));
    fs::write(&p, payload).unwrap();
    fs::write(
        &s,
        base64::engine::general_purpose::STANDARD
            .decode(sig_b64)
            .unwrap(),
    )
    .unwrap();
    let out = bounded(
        std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(&s)
            .arg(&p),
        30,
    );
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

/// The (payload, signature) pairs of a `.sig` manifest in `layout`.
fn layout_signatures(layout: &Path, digest: &str) -> Vec<(Vec<u8>, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
        .unwrap_or_else(|| panic!("no {tag} in {index:#}"));
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(entry["digest"].as_str().unwrap())).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                blob(l["digest"].as_str().unwrap()),
                l["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn terra_signs_an_image_in_a_layout_and_a_registry_as_cosign_does() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    // A key pair from terra; a second from openssl (PKCS#8), which terra signs with too.
    let prefix = w("k1");
    let (ok, out, err) = terra_bounded(
        &["key", "generate", "--output", prefix.to_str().unwrap()],
        T,
    );
    assert!(ok, "{out}{err}");
    let (k1_key, k1_pub) = (w("k1.key"), w("k1.pub"));
    assert_eq!(
        fs::metadata(&k1_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err) = terra_bounded(
        &["key", "generate", "--output", prefix.to_str().unwrap()],
        T,
    );
    assert!(!ok && err.contains("never overwritten"), "{err}");
    let k2 = openssl_key(work.path(), "k2");
    let k3 = openssl_key(work.path(), "k3");

    // In a layout: the digest index.json names, signed by k1 then k2.
    let layout = w("layout");
    let digest = image_layout(&layout, "v1", &[(marker(), Comp::Gzip)]);
    let r = format!("oci:{}:v1", layout.display());
    for key in [&k1_key, &k2.private] {
        let (ok, out, err) = terra_bounded(&["sign", "--key", key.to_str().unwrap(), &r], T);
        assert!(ok, "{out}{err}");
        assert!(out.contains(&digest), "{out}");
    }
    let sigs = layout_signatures(&layout, &digest);
    assert_eq!(sigs.len(), 2, "two keys, two signatures");
    for ((payload, sig), public) in sigs.iter().zip([&k1_pub, &k2.public]) {
        assert!(
            openssl_verifies(public, payload, sig),
            "openssl refused {sig}"
        );
        assert!(!openssl_verifies(&k3.public, payload, sig));
        let p: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            p["critical"]["image"]["docker-manifest-digest"],
            digest.as_str()
        );
        assert_eq!(p["critical"]["type"], "cosign container image signature");
    }
    // terra's verifier: either key verifies; a key that did not sign is refused.
    for public in [&k1_pub, &k2.public] {
        let out_dir = w(&format!(
            "unpacked-{}",
            public.file_name().unwrap().to_string_lossy()
        ));
        let (ok, out, err) = terra_bounded(
            &[
                "image",
                "unpack",
                "--verify-key",
                public.to_str().unwrap(),
                &r,
                out_dir.to_str().unwrap(),
            ],
            T,
        );
        assert!(ok, "{out}{err}");
        assert_eq!(
            fs::read(out_dir.join("etc/marker")).unwrap(),
            b"signed by terra"
        );
    }
    let refused = w("refused");
    let (ok, _, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--verify-key",
            k3.public.to_str().unwrap(),
            &r,
            refused.to_str().unwrap(),
        ],
        T,
    );
    assert!(!ok && err.contains(&digest), "{err}");
    assert!(!refused.exists());

    // In a registry: the same image pushed by skopeo, signed there by terra.
    let reg = Registry::start();
    reg.push(&layout, "v1", "signed/os");
    let reference = format!("{}/signed/os:v1", reg.host());
    let (ok, out, err) = terra_bounded(
        &[
            "sign",
            "--plain-http",
            "--key",
            k1_key.to_str().unwrap(),
            &reference,
        ],
        T,
    );
    assert!(ok, "{out}{err}");
    let tag = format!("{}.sig", digest.replace(':', "-"));
    assert!(tags(&reg.host(), "signed/os").contains(&tag));
    // containers/image reads terra's attachment as a cosign signature: skopeo copies it
    // into a dir: as a sigstore signature file, whose payload openssl verifies.
    let regd = registries_d(work.path());
    let dir = w("from-skopeo");
    must(
        std::process::Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                "--registries.d",
            ])
            .arg(&regd)
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dir.display())),
        120,
    );
    let raw = fs::read(dir.join("signature-1")).expect("skopeo found no signature");
    let json = raw
        .strip_prefix(b"\0sigstore-json\n")
        .expect("a sigstore signature");
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(v["payload"].as_str().unwrap())
        .unwrap();
    let sig = v["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap();
    assert!(openssl_verifies(&k1_pub, &payload, sig));
    // terra pulls it with the key, and refuses it with another.
    let pulled = w("pulled");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "pull",
            "--plain-http",
            "--verify-key",
            k1_pub.to_str().unwrap(),
            "--layout",
            pulled.to_str().unwrap(),
            &reference,
        ],
        T,
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = terra_bounded(
        &[
            "image",
            "pull",
            "--plain-http",
            "--verify-key",
            k3.public.to_str().unwrap(),
            "--layout",
            w("pulled-refused").to_str().unwrap(),
            &reference,
        ],
        T,
    );
    assert!(!ok && err.contains("does not verify"), "{err}");

    // Keys terra cannot use, and a docker archive, are refused by name.
    fs::write(w("enc.key"), "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").unwrap();
    let (ok, _, err) = terra_bounded(&["sign", "--key", w("enc.key").to_str().unwrap(), &r], T);
    assert!(
        !ok && err.contains("enc.key") && err.contains("encrypted"),
        "{err}"
    );
    let (ok, _, err) = terra_bounded(
        &[
            "sign",
            "--key",
            k1_key.to_str().unwrap(),
            &format!("oci:{}:nope", layout.display()),
        ],
        T,
    );
    assert!(!ok && err.contains("nope"), "{err}");
}
