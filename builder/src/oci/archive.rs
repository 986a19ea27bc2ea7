//! `docker save` tarballs (docker-archive): `manifest.json` names the config and the layer
//! members; layers are checked against the config's `diff_ids`, the config against its
//! name when that is a digest. Layers are read in place from the tarball.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::blob::Digest;
use super::image::{Compression, ConfigInfo, Image, Layer};
use super::layout::MAX_JSON_BLOB;
use super::OciError;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A member's bytes in the tarball.
#[derive(Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

/// Resolves the (single) image of a docker archive.
pub fn resolve(path: &Path, reference: &str) -> Result<Image, OciError> {
    let members = index(path)?;
    let read = |name: &str| -> Result<Vec<u8>, OciError> {
        let m = members
            .get(&normalize(name))
            .ok_or_else(|| OciError::blob(name, "missing from the archive"))?;
        if m.size > MAX_JSON_BLOB {
            return Err(OciError::blob(name, "larger than the limit for JSON files"));
        }
        let mut f = fs::File::open(path).map_err(|e| OciError::io(path, e))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(|e| OciError::io(path, e))?;
        let mut buf = Vec::new();
        f.take(m.size)
            .read_to_end(&mut buf)
            .map_err(|e| OciError::io(path, e))?;
        Ok(buf)
    };
    let manifest: Vec<Entry> = serde_json::from_slice(&read("manifest.json")?)
        .map_err(|e| OciError::blob("manifest.json", format!("malformed: {e}")))?;
    let entry = match manifest.as_slice() {
        [one] => one,
        [] => {
            return Err(OciError::NotFound {
                reference: reference.into(),
                reason: "the archive holds no image".into(),
            })
        }
        many => {
            return Err(OciError::NotFound {
                reference: reference.into(),
                reason: format!(
                    "the archive holds {} images ({}); only single-image archives are supported",
                    many.len(),
                    many.iter()
                        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
    };
    let config_bytes = read(&entry.config)?;
    // `<hex>.json` (docker < 25) or `blobs/sha256/<hex>` (docker ≥ 25) name the content.
    let stem = entry
        .config
        .strip_suffix(".json")
        .unwrap_or(&entry.config)
        .rsplit('/')
        .next()
        .unwrap_or("");
    let config_digest = format!("sha256:{stem}").parse::<Digest>().ok();
    if let Some(d) = &config_digest {
        d.check(&config_bytes, None)
            .map_err(|r| OciError::blob(&entry.config, r))?;
    }
    let config: ConfigInfo = serde_json::from_slice(&config_bytes)
        .map_err(|e| OciError::blob(&entry.config, format!("malformed image config: {e}")))?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(OciError::blob(
            &entry.config,
            format!(
                "the config lists {} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        let m = *members
            .get(&normalize(name))
            .ok_or_else(|| OciError::blob(name, "missing from the archive"))?;
        let mut head = [0u8; 4];
        let mut f = fs::File::open(path).map_err(|e| OciError::io(path, e))?;
        f.seek(SeekFrom::Start(m.offset))
            .map_err(|e| OciError::io(path, e))?;
        let n = f
            .take(m.size.min(4))
            .read(&mut head)
            .map_err(|e| OciError::io(path, e))?;
        layers.push(Layer {
            name: name.clone(),
            digest: None,
            size: Some(m.size),
            compression: Compression::sniff(&head[..n]),
            diff_id: Some(
                diff_id
                    .parse()
                    .map_err(|e: String| OciError::blob(&entry.config, e))?,
            ),
            path: path.to_path_buf(),
            offset: m.offset,
        });
    }
    Ok(Image {
        reference: reference.into(),
        manifest_digest: None,
        config_digest,
        config,
        layers,
        verified: None,
        temp: None,
    })
}

fn normalize(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Every regular member's position; symlinked members (docker dedups layers that way)
/// point at their target's bytes.
fn index(path: &Path) -> Result<HashMap<String, Member>, OciError> {
    let f = fs::File::open(path).map_err(|e| OciError::io(path, e))?;
    let mut ar = tar::Archive::new(f);
    let mut members = HashMap::new();
    let mut links = Vec::new();
    let bad = |e: std::io::Error| OciError::blob(path.display(), format!("not a tarball: {e}"));
    for e in ar.entries().map_err(bad)? {
        let e = e.map_err(bad)?;
        let name = normalize(&String::from_utf8_lossy(&e.path_bytes()));
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(
                    name,
                    Member {
                        offset: e.raw_file_position(),
                        size: e.size(),
                    },
                );
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(target) = e.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    let resolved = if e.header().entry_type() == tar::EntryType::Symlink {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        normalize(&format!("{dir}/{target}"))
                    } else {
                        normalize(&target)
                    };
                    links.push((name, resolved));
                }
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(m) = members.get(&target).copied() {
            members.insert(name, m);
        }
    }
    Ok(members)
}
