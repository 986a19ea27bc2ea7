//! Tools that are not ours for `terra sign`'s cosign formats (oci_sign.rs):
//!
//! - npm's `@sigstore/verify` (sigstore-js) run by Node (Debian's nodejs): `sigstore_verify.js`
//!   beside this file verifies a Sigstore bundle with a public key as the only trust material.
//!   The package is installed once from the npm registry into `target/lab`, in a directory
//!   keyed by the hash of the script and the pinned version.
//! - Go's crypto and golang.org/x/crypto (Debian's golang-golang-x-crypto-dev: Debian packages
//!   neither cosign nor sigstore's Go libraries): `cosign_keygen.go` writes a key pair in
//!   cosign's encrypted format, built offline in GOPATH mode against Debian's Go sources.
//!
//! Both are made on first use under a lab lock; a directory whose making did not finish is
//! made again (its marker is written last).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::signing::bounded;

const VERIFY_JS: &str = include_str!("sigstore_verify.js");
const KEYGEN_GO: &str = include_str!("cosign_keygen.go");

/// sigstore-js's verifier, pinned: 2.1 is the last line whose engines include Node 18
/// (Debian 12's nodejs, what setup-host installs on CI) as well as 20; 4.x wants Node 22.
const SIGSTORE_VERIFY: &str = "@sigstore/verify@2.1.1";

/// Builds (once per lab) what `make` makes in the directory `dir`, keyed by `key`: `make`
/// fills a temporary directory, which is renamed into place when it succeeded.
fn cached(
    name: &str,
    key: &str,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let hash = super::sha256_hex(key.as_bytes());
    let dir = lab::lab_dir().join(name).join(&hash[..16]);
    let ready = dir.join(".terra-ready");
    if ready.is_file() {
        return Ok(dir);
    }
    let _turn = lab::lab_lock(name).map_err(|e| e.to_string())?;
    if ready.is_file() {
        return Ok(dir);
    }
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    make(&tmp)?;
    std::fs::write(tmp.join(".terra-ready"), key).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn run(cmd: &mut Command, secs: u64) -> Result<(), String> {
    let out = bounded(cmd, secs);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The directory holding `sigstore_verify.js` and its `node_modules`.
fn verifier_dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = DIR.get_or_init(|| {
        cached(
            "npm-sigstore-verify",
            &format!("{SIGSTORE_VERIFY}\n{VERIFY_JS}"),
            |dir| {
                std::fs::write(dir.join("verify.js"), VERIFY_JS)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                eprintln!("lab: installing {SIGSTORE_VERIFY} into {}", dir.display());
                // npm's cache in the lab too: CI may have no $HOME.
                run(
                    Command::new("npm")
                        .args([
                            "install",
                            "--no-audit",
                            "--no-fund",
                            "--ignore-scripts",
                            "--prefix",
                        ])
                        .arg(dir)
                        .arg(SIGSTORE_VERIFY)
                        .env("npm_config_cache", lab::lab_dir().join("npm-cache"))
                        .env("npm_config_update_notifier", "false"),
                    300,
                )
                .map_err(|e| {
                    format!(
                        "{e}\n(npm: Debian's nodejs and npm, scripts/setup-host.sh installs them)"
                    )
                })
            },
        )
    });
    match made {
        Ok(p) => p,
        Err(e) => panic!("installing {SIGSTORE_VERIFY}: {e}"),
    }
}

/// sigstore-js's verdict on the bundle at `bundle` with the public key `public`, for
/// `digest`: (accepted, what it printed).
pub fn sigstore_js_verifies(bundle: &Path, public: &Path, digest: &str) -> (bool, String) {
    let dir = verifier_dir();
    let out = bounded(
        Command::new("node")
            .arg(dir.join("verify.js"))
            .arg(bundle)
            .arg(public)
            .arg(digest)
            .current_dir(dir),
        60,
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The built key generator.
fn keygen() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = BIN.get_or_init(|| {
        cached("go-cosign-keygen", KEYGEN_GO, |dir| {
            let src = dir.join("main.go");
            std::fs::write(&src, KEYGEN_GO).map_err(|e| format!("{}: {e}", src.display()))?;
            // GOPATH mode over Debian's Go sources, offline.
            run(
                Command::new("go")
                    .arg("build")
                    .arg("-o")
                    .arg(dir.join("cosign-keygen"))
                    .arg(&src)
                    .current_dir(dir)
                    .env("GO111MODULE", "off")
                    .env("GOPATH", "/usr/share/gocode")
                    .env("GOCACHE", lab::lab_dir().join("go-cache"))
                    .env("GOPROXY", "off")
                    .env("GOTOOLCHAIN", "local")
                    .env("GOFLAGS", "")
                    .env("CGO_ENABLED", "0"),
                300,
            )
            .map_err(|e| {
                format!(
                    "{e}\n(needs Debian's golang-go and golang-golang-x-crypto-dev: \
                     scripts/setup-host.sh installs them)"
                )
            })
        })
        .map(|d| d.join("cosign-keygen"))
    });
    match made {
        Ok(p) => p,
        Err(e) => panic!("building the cosign key generator: {e}"),
    }
}

/// A key pair in cosign's encrypted format under the PEM `label`, sealed with `password`:
/// (`PREFIX.key`, `PREFIX.pub`).
pub fn cosign_key_pair(dir: &Path, name: &str, label: &str, password: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let out = bounded(
        Command::new(keygen())
            .arg(&prefix)
            .arg(label)
            .env("COSIGN_PASSWORD", password),
        60,
    );
    assert!(
        out.status.success(),
        "cosign-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}
