//! The keys that check a node's images: those node.toml names, those kept on the disk
//! for upgrades, and the policy they make with `--verify-key`'s.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use terra_init::bootstate::STATE_DIR;
use terra_init::config::NodeConfig;

use crate::oci::verify::KeyError;
use crate::oci::{TrustedKey, VerifyPolicy};

/// Where `terra install` keeps the node's trusted keys, inside `.terra/`: upgrades of the
/// disk are checked with them.
pub const KEYS_DIR: &str = "keys";

/// The keys node.toml's `[signature] keys` names, relative to `config_dir`.
pub fn node_keys(node: &NodeConfig, config_dir: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    node.signature
        .keys
        .iter()
        .map(|k| TrustedKey::from_file(&config_dir.join(k)))
        .collect()
}

/// The keys kept on the disk whose top level is `top`.
pub fn disk_keys(top: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    let dir = top.join(STATE_DIR).join(KEYS_DIR);
    let mut paths: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Ok(Vec::new()),
    };
    paths.sort();
    paths.iter().map(|p| TrustedKey::from_file(p)).collect()
}

/// Keeps `keys` on the disk (public keys: readable by all).
pub fn keep_keys(top: &Path, keys: &[TrustedKey]) -> io::Result<()> {
    let dir = top.join(STATE_DIR).join(KEYS_DIR);
    fs::create_dir_all(&dir)?;
    for k in keys {
        let name = format!("{}.pub", k.fingerprint().hex());
        fs::write(dir.join(name), k.pem())?;
    }
    Ok(())
}

/// The policy of `given` (`--verify-key`) plus `more`; an error when `require` and there
/// is no key at all. None means the image is not checked.
pub fn combine_policy(
    given: Option<&VerifyPolicy>,
    more: Vec<TrustedKey>,
    require: bool,
    what: &str,
) -> Result<Option<VerifyPolicy>, String> {
    let mut keys: Vec<TrustedKey> = given.map(|p| p.keys().to_vec()).unwrap_or_default();
    for k in more {
        if !keys.iter().any(|o| o.fingerprint() == k.fingerprint()) {
            keys.push(k);
        }
    }
    if keys.is_empty() {
        return if require {
            Err(format!(
                "{what}: [signature] require = true but there is no key to check the image with \
                 (node.toml [signature] keys, or --verify-key)"
            ))
        } else {
            Ok(None)
        };
    }
    VerifyPolicy::new(keys).map(Some).map_err(|e| e.to_string())
}
