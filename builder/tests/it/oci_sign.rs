//! `terra key generate` and `terra sign` against peers that are not ours: openssl verifies
//! each signature terra made over its payload; containers/image (skopeo, reading cosign's
//! `.sig` attachments through `use-sigstore-attachments`) reads the signature manifest
//! terra pushed to Debian's docker-registry; npm's @sigstore/verify verifies the Sigstore
//! bundles terra attaches as referrers; keys in cosign's encrypted format come from a Go
//! program on x/crypto; and terra's own verifier (`--verify-key`) accepts the image, and
//! refuses it with a key that did not sign.

use crate::oci_common;
use crate::oci_common::{signing, sigstore_tools};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_common::*;
use signing::*;
use sigstore_tools::*;

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

    // A key terra cannot use is refused by name.
    fs::write(w("enc.key"), "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n").unwrap();
    let (ok, _, err) = terra_env(
        &["sign", "--key", w("enc.key").to_str().unwrap(), &r],
        Some("pw"),
    );
    assert!(
        !ok && err.contains("enc.key") && err.contains("cosign encrypted key"),
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

/// terra in a session of its own (`setsid`: no controlling terminal, so a password is never
/// asked at the terminal the tests run in), `COSIGN_PASSWORD` set to `password` or unset.
fn terra_env(args: &[&str], password: Option<&str>) -> (bool, String, String) {
    let mut cmd = std::process::Command::new("setsid");
    cmd.arg(env!("CARGO_BIN_EXE_terra")).args(args);
    match password {
        Some(p) => cmd.env("COSIGN_PASSWORD", p),
        None => cmd.env_remove("COSIGN_PASSWORD"),
    };
    let out = bounded(&mut cmd, T);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A layout's index.json.
fn index_of(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// A blob of a layout.
fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

/// The bundles of the referrers index.json lists (entries with the bundle's artifactType),
/// each written to a file in `dir`; checks each referrer's manifest on the way.
fn layout_bundles(layout: &Path, subject: &str, dir: &Path) -> Vec<PathBuf> {
    let index = index_of(layout);
    let mut out = Vec::new();
    for e in index["manifests"].as_array().unwrap() {
        if e["artifactType"] != BUNDLE {
            continue;
        }
        let m: serde_json::Value =
            serde_json::from_slice(&layout_blob(layout, e["digest"].as_str().unwrap())).unwrap();
        if m["subject"]["digest"] != subject {
            continue;
        }
        assert_eq!(m["artifactType"], BUNDLE);
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(
            layout_blob(layout, m["config"]["digest"].as_str().unwrap()),
            b"{}"
        );
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], BUNDLE);
        let path = dir.join(format!("bundle-{}-{}.json", &subject[7..19], out.len()));
        fs::write(
            &path,
            layout_blob(layout, layers[0]["digest"].as_str().unwrap()),
        )
        .unwrap();
        out.push(path);
    }
    out
}

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// GET from the registry: the body (HTTP/1.0, so never chunked).
fn registry_get(host: &str, path: &str, accept: &str) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    assert!(
        resp.starts_with(b"HTTP/1.0 200") || resp.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&resp[..at])
    );
    resp[at + 4..].to_vec()
}

/// The bundles the registry lists for `subject` in its referrers fallback tag, written to
/// files in `dir`.
fn registry_bundles(host: &str, repo: &str, subject: &str, dir: &Path) -> Vec<PathBuf> {
    let index: serde_json::Value = serde_json::from_slice(&registry_get(
        host,
        &format!("/v2/{repo}/manifests/{}", subject.replace(':', "-")),
        "application/vnd.oci.image.index.v1+json",
    ))
    .unwrap();
    let mut out = Vec::new();
    for e in index["manifests"].as_array().unwrap() {
        assert_eq!(e["artifactType"], BUNDLE);
        let m: serde_json::Value = serde_json::from_slice(&registry_get(
            host,
            &format!("/v2/{repo}/manifests/{}", e["digest"].as_str().unwrap()),
            "application/vnd.oci.image.manifest.v1+json",
        ))
        .unwrap();
        assert_eq!(m["subject"]["digest"], subject);
        let bundle = registry_get(
            host,
            &format!(
                "/v2/{repo}/blobs/{}",
                m["layers"][0]["digest"].as_str().unwrap()
            ),
            "*/*",
        );
        let path = dir.join(format!(
            "registry-bundle-{}-{}.json",
            &subject[7..19],
            out.len()
        ));
        fs::write(&path, bundle).unwrap();
        out.push(path);
    }
    out
}

/// Asserts sigstore-js refuses, printing `why`.
fn sigstore_js_refuses(bundle: &Path, public: &Path, digest: &str, why: &str) {
    let (ok, out) = sigstore_js_verifies(bundle, public, digest);
    assert!(!ok && out.contains(why), "{why}: {out}");
}

#[test]
fn terras_sigstore_bundle_verifies_with_sigstore_js_and_alone_with_terra() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let k1 = openssl_key(work.path(), "k1");
    let k2 = openssl_key(work.path(), "k2");

    // Two images in a layout, each signed by k1 in both formats (the default).
    let layout = w("layout");
    let digest = image_layout(&layout, "v1", &[(marker(), Comp::Gzip)]);
    let other_layout = w("other");
    let other = image_layout(
        &other_layout,
        "v1",
        &[(layer(&[E::Dir("etc/", 0o755)]), Comp::Gzip)],
    );
    assert_ne!(digest, other);
    let r = format!("oci:{}:v1", layout.display());
    for reference in [&r, &format!("oci:{}:v1", other_layout.display())] {
        let (ok, out, err) = terra_bounded(
            &["sign", "--key", k1.private.to_str().unwrap(), reference],
            T,
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains("classic") && out.contains("bundle"), "{out}");
    }
    let bundles = layout_bundles(&layout, &digest, work.path());
    assert_eq!(bundles.len(), 1, "{:#}", index_of(&layout));
    let theirs = layout_bundles(&other_layout, &other, work.path());
    assert_eq!(theirs.len(), 1);

    // sigstore-js: k1's bundle verifies for its digest; refused with k2, and for the other
    // image's digest (each bundle names only its own).
    let (ok, out) = sigstore_js_verifies(&bundles[0], &k1.public, &digest);
    assert!(ok, "{out}");
    assert!(
        out.contains("by-hint: verified") && out.contains("any-hint: verified"),
        "{out}"
    );
    sigstore_js_refuses(
        &bundles[0],
        &k2.public,
        &digest,
        "signature verification failed",
    );
    sigstore_js_refuses(&bundles[0], &k2.public, &digest, "key not found");
    sigstore_js_refuses(&theirs[0], &k1.public, &digest, "is not a subject");
    sigstore_js_refuses(&bundles[0], &k1.public, &other, "is not a subject");

    // Signing again with the same key stores nothing new; another key adds a referrer.
    let (ok, _, err) = terra_bounded(&["sign", "--key", k1.private.to_str().unwrap(), &r], T);
    assert!(ok, "{err}");
    assert_eq!(layout_bundles(&layout, &digest, work.path()).len(), 1);
    let (ok, _, err) = terra_bounded(
        &[
            "sign",
            "--format",
            "bundle",
            "--key",
            k2.private.to_str().unwrap(),
            &r,
        ],
        T,
    );
    assert!(ok, "{err}");
    let both = layout_bundles(&layout, &digest, work.path());
    assert_eq!(both.len(), 2);
    assert!(sigstore_js_verifies(&both[1], &k2.public, &digest).0);
    // --format bundle left the .sig manifest as k1 made it.
    assert_eq!(layout_signatures(&layout, &digest).len(), 1);

    // terra's verifier with the bundle alone: the .sig entry removed from index.json.
    let mut index = index_of(&layout);
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != sig_tag.as_str());
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let unpacked = w("unpacked");
    let (ok, out, err) = terra_bounded(
        &[
            "image",
            "unpack",
            "--verify-key",
            k1.public.to_str().unwrap(),
            &r,
            unpacked.to_str().unwrap(),
        ],
        T,
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("signature verified: {digest}")),
        "{out}"
    );
    let k3 = openssl_key(work.path(), "k3");
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
    assert!(
        !ok && err.contains("does not verify with any trusted key"),
        "{err}"
    );
    assert!(!refused.exists());
    // --format classic writes no referrer.
    let classic_only = w("classic-only");
    let d = image_layout(&classic_only, "v1", &[(marker(), Comp::Gzip)]);
    let (ok, _, err) = terra_bounded(
        &[
            "sign",
            "--format",
            "classic",
            "--key",
            k1.private.to_str().unwrap(),
            &format!("oci:{}:v1", classic_only.display()),
        ],
        T,
    );
    assert!(ok, "{err}");
    assert!(layout_bundles(&classic_only, &d, work.path()).is_empty());
    assert_eq!(layout_signatures(&classic_only, &d).len(), 1);

    // In a registry without the referrers API: the bundle alone (no .sig tag), listed in the
    // sha256-<hex> fallback tag.
    let reg = Registry::start();
    reg.push(&layout, "v1", "bundled/os");
    let reference = format!("{}/bundled/os:v1", reg.host());
    for key in [&k1, &k2] {
        let (ok, out, err) = terra_bounded(
            &[
                "sign",
                "--plain-http",
                "--format",
                "bundle",
                "--key",
                key.private.to_str().unwrap(),
                &reference,
            ],
            T,
        );
        assert!(ok, "{out}{err}");
    }
    let tags = tags(&reg.host(), "bundled/os");
    assert!(tags.contains(&digest.replace(':', "-")), "{tags:?}");
    assert!(!tags.iter().any(|t| t.ends_with(".sig")), "{tags:?}");
    let pushed = registry_bundles(&reg.host(), "bundled/os", &digest, work.path());
    assert_eq!(pushed.len(), 2, "one referrer per key");
    assert!(sigstore_js_verifies(&pushed[0], &k1.public, &digest).0);
    assert!(sigstore_js_verifies(&pushed[1], &k2.public, &digest).0);
    sigstore_js_refuses(
        &pushed[0],
        &k2.public,
        &digest,
        "signature verification failed",
    );
    for (key, accepted) in [(&k1, true), (&k2, true), (&k3, false)] {
        let pulled = w(&format!(
            "pulled-{}",
            key.public.file_name().unwrap().to_string_lossy()
        ));
        let (ok, out, err) = terra_bounded(
            &[
                "image",
                "pull",
                "--plain-http",
                "--verify-key",
                key.public.to_str().unwrap(),
                "--layout",
                pulled.to_str().unwrap(),
                &reference,
            ],
            T,
        );
        assert_eq!(ok, accepted, "{out}{err}");
        if !accepted {
            assert!(
                err.contains("does not verify with any trusted key"),
                "{err}"
            );
        }
    }
}

#[test]
fn terra_signs_with_cosigns_encrypted_keys() {
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let password = "correct horse battery staple";
    // Made as cosign makes them (Go, x/crypto's scrypt and secretbox), both PEM labels;
    // cosign encrypts with an empty password too.
    let (new_key, new_pub) = cosign_key_pair(
        work.path(),
        "sigstore",
        "ENCRYPTED SIGSTORE PRIVATE KEY",
        password,
    );
    let (old_key, old_pub) =
        cosign_key_pair(work.path(), "cosign", "ENCRYPTED COSIGN PRIVATE KEY", "");
    let layout = w("layout");
    let digest = image_layout(&layout, "v1", &[(marker(), Comp::Gzip)]);
    let r = format!("oci:{}:v1", layout.display());

    // A wrong password, and none (no terminal to ask at), are refused by name, without the
    // password in any output; nothing is written.
    let before = fs::read(layout.join("index.json")).unwrap();
    let wrong = "not the password";
    let (ok, out, err) = terra_env(
        &["sign", "--key", new_key.to_str().unwrap(), &r],
        Some(wrong),
    );
    assert!(
        !ok && err.contains("sigstore.key") && err.contains("wrong password"),
        "{err}"
    );
    assert!(!err.contains(wrong) && !out.contains(wrong), "{out}{err}");
    let (ok, _, err) = terra_env(&["sign", "--key", new_key.to_str().unwrap(), &r], None);
    assert!(
        !ok && err.contains("sigstore.key") && err.contains("set COSIGN_PASSWORD"),
        "{err}"
    );
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), before);

    for (key, public, pw) in [(&new_key, &new_pub, password), (&old_key, &old_pub, "")] {
        let (ok, out, err) = terra_env(&["sign", "--key", key.to_str().unwrap(), &r], Some(pw));
        assert!(ok, "{out}{err}");
        assert!(out.contains(&digest), "{out}");
        assert!(pw.is_empty() || (!out.contains(pw) && !err.contains(pw)));
        // openssl verifies the classic signature, sigstore-js the bundle, with the public key
        // the Go program wrote.
        let sigs = layout_signatures(&layout, &digest);
        let (payload, sig) = sigs.last().unwrap();
        assert!(
            openssl_verifies(public, payload, sig),
            "openssl refused {sig}"
        );
        let bundles = layout_bundles(&layout, &digest, work.path());
        let (ok, out) = sigstore_js_verifies(bundles.last().unwrap(), public, &digest);
        assert!(ok, "{out}");
    }
    assert_eq!(layout_signatures(&layout, &digest).len(), 2);
}

/// terra run at a terminal (util-linux `script` gives it a pty of its own), without
/// `COSIGN_PASSWORD`: once it asks for the password, `typed` and a newline are typed.
/// Returns (success, everything the terminal showed).
fn terra_at_terminal(args: &[&str], typed: &str) -> (bool, String) {
    use std::io::{Read as _, Write as _};
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_terra"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"])
        .env_remove("COSIGN_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    // Typed only once echo is off: what a person types after the prompt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(T);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(shown) if shown.contains("Enter password for private key") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("terra never asked for the password");
            }
        }
    }
    stdin.write_all(format!("{typed}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("terra at a terminal ran longer than {T} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(stdin);
    let mut shown = reader.join().unwrap();
    let _ = child.stderr.take().unwrap().read_to_string(&mut shown);
    (status.success(), shown)
}

#[test]
fn the_password_of_a_cosign_key_is_asked_at_the_terminal_without_echo() {
    let work = tempfile::tempdir().unwrap();
    let password = "typed at the terminal";
    let (key, public) = cosign_key_pair(
        work.path(),
        "cosign",
        "ENCRYPTED SIGSTORE PRIVATE KEY",
        password,
    );
    let layout = work.path().join("layout");
    let digest = image_layout(&layout, "v1", &[(marker(), Comp::Gzip)]);
    let r = format!("oci:{}:v1", layout.display());
    let wrong = "not-the-password-7f3a";
    let (ok, shown) = terra_at_terminal(&["sign", "--key", key.to_str().unwrap(), &r], wrong);
    assert!(!ok && shown.contains("wrong password"), "{shown}");
    assert!(!shown.contains(wrong), "the password was echoed: {shown}");
    let (ok, shown) = terra_at_terminal(&["sign", "--key", key.to_str().unwrap(), &r], password);
    assert!(ok, "{shown}");
    assert!(shown.contains(&digest), "{shown}");
    assert!(
        !shown.contains(password),
        "the password was echoed: {shown}"
    );
    let sigs = layout_signatures(&layout, &digest);
    assert!(openssl_verifies(&public, &sigs[0].0, &sigs[0].1));
}
