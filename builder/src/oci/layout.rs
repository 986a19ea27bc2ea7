//! OCI image layouts (image-layout.md): `oci-layout`, `index.json` and content-addressed
//! `blobs/<alg>/<hex>`. Reads check every blob against its descriptor; writes go through a
//! temporary file renamed into place, so a layout never holds a blob under a wrong name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::{json, Value};

use super::blob::Digest;
use super::OciError;

/// Annotation naming a manifest in a layout's index (annotations.md).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The suffix of a blob's partial download ([`Layout::partial_path`]).
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Manifests and configs are small; a descriptor claiming more is refused before reading.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens an existing layout; its `oci-layout` file must say version 1.x.
    pub fn open(path: &Path) -> Result<Self, OciError> {
        let marker = path.join("oci-layout");
        let text = fs::read(&marker).map_err(|e| OciError::io(&marker, e))?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| OciError::Io {
            path: marker.clone(),
            err: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        match v["imageLayoutVersion"].as_str() {
            Some(ver) if ver.starts_with("1.") => Ok(Layout {
                root: path.to_path_buf(),
            }),
            other => Err(OciError::io(
                &marker,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unsupported imageLayoutVersion {other:?}"),
                ),
            )),
        }
    }

    /// Opens the layout at `path`, creating an empty one when the directory is missing or
    /// empty. An empty `oci-layout` marker counts as missing: it is what a power cut leaves of
    /// a layout whose creation was not yet on disk (blobs are checked by digest when used).
    pub fn create(path: &Path) -> Result<Self, OciError> {
        let marker = path.join("oci-layout");
        if fs::metadata(&marker).is_ok_and(|m| m.is_file() && m.len() > 0) {
            return Self::open(path);
        }
        let blobs = path.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|e| OciError::io(&blobs, e))?;
        let layout = Layout {
            root: path.to_path_buf(),
        };
        layout.write_file(
            "index.json",
            &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": []})).unwrap_or_default(),
        )?;
        layout.write_file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(layout)
    }

    /// The layout directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (the digest's hex is checked at parse time, so
    /// it cannot climb out of `blobs/`).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    /// Where a blob being downloaded collects its bytes, beside its address
    /// (`blobs/<alg>/<hex>.partial`): a later pull resumes from it.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        let mut p = self.blob_path(d).into_os_string();
        p.push(PARTIAL_SUFFIX);
        PathBuf::from(p)
    }

    /// Removes every blob and partial download but those of `keep`, and every name from
    /// index.json: for a layout that only ever holds the image being fetched (a disk's
    /// downloads), so that an image no longer wanted does not hold on to its space.
    pub fn retain_blobs(&self, keep: &std::collections::HashSet<Digest>) -> Result<(), OciError> {
        let blobs = self.root.join("blobs");
        let entries = fs::read_dir(&blobs).map_err(|e| OciError::io(&blobs, e))?;
        for alg in entries {
            let alg = alg.map_err(|e| OciError::io(&blobs, e))?;
            let dir = alg.path();
            if !dir.is_dir() {
                // A temporary file of an interrupted write.
                fs::remove_file(&dir).map_err(|e| OciError::io(&dir, e))?;
                continue;
            }
            for f in fs::read_dir(&dir).map_err(|e| OciError::io(&dir, e))? {
                let f = f.map_err(|e| OciError::io(&dir, e))?;
                let name = f.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(PARTIAL_SUFFIX).unwrap_or(&name);
                let wanted = format!("{}:{hex}", alg.file_name().to_string_lossy())
                    .parse::<Digest>()
                    .is_ok_and(|d| keep.contains(&d));
                if !wanted {
                    fs::remove_file(f.path()).map_err(|e| OciError::io(f.path(), e))?;
                }
            }
        }
        self.write_file(
            "index.json",
            &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": []})).unwrap_or_default(),
        )
    }

    /// Reads a small (JSON) blob and checks it against digest and size.
    pub fn read_blob(&self, d: &Digest, size: Option<u64>) -> Result<Vec<u8>, OciError> {
        if size.is_some_and(|s| s > MAX_JSON_BLOB) {
            return Err(OciError::blob(
                d,
                format!("descriptor size {size:?} exceeds the {MAX_JSON_BLOB}-byte limit for manifests and configs"),
            ));
        }
        let path = self.blob_path(d);
        let data = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                OciError::blob(d, format!("missing from the layout ({})", path.display()))
            }
            _ => OciError::io(&path, e),
        })?;
        d.check(&data, size).map_err(|r| OciError::blob(d, r))?;
        Ok(data)
    }

    /// Whether the blob is present with the right size and content.
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        let path = self.blob_path(d);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => {}
            _ => return false,
        }
        let Ok(f) = fs::File::open(&path) else {
            return false;
        };
        super::blob::VerifyingReader::new(f, Some(d.clone()), Some(size))
            .finish()
            .is_ok()
    }

    /// A temporary file for a blob being written; [`Layout::commit_blob`] names it.
    pub fn temp_blob(&self) -> Result<(PathBuf, fs::File), OciError> {
        let dir = self.root.join("blobs");
        for n in 0..1000u32 {
            let p = dir.join(format!(".tmp-{}-{n}", std::process::id()));
            match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(f) => return Ok((p, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(OciError::io(&p, e)),
            }
        }
        Err(OciError::io(
            &dir,
            std::io::Error::other("cannot create a temporary blob file"),
        ))
    }

    /// Moves a written (and already checked) temporary file to its content address.
    pub fn commit_blob(&self, tmp: &Path, d: &Digest) -> Result<(), OciError> {
        let dest = self.blob_path(d);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(|e| OciError::io(dir, e))?;
        }
        fs::rename(tmp, &dest).map_err(|e| OciError::io(&dest, e))
    }

    /// Writes a blob whose content is in memory; returns its digest.
    pub fn write_blob(&self, data: &[u8]) -> Result<Digest, OciError> {
        let d = Digest::sha256_of(data);
        if self.has_blob(&d, data.len() as u64) {
            return Ok(d);
        }
        let (tmp, mut f) = self.temp_blob()?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .map_err(|e| OciError::io(&tmp, e))?;
        self.commit_blob(&tmp, &d)?;
        Ok(d)
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, OciError> {
        let path = self.root.join("index.json");
        let text = fs::read(&path).map_err(|e| OciError::io(&path, e))?;
        serde_json::from_slice(&text).map_err(|e| {
            OciError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Names `desc` `tag` in index.json (replacing what had that name), or adds it unnamed.
    pub fn set_ref(&self, tag: Option<&str>, mut desc: Descriptor) -> Result<(), OciError> {
        let mut index = self.index()?;
        let mut manifests: Vec<Descriptor> = index.manifests().clone();
        if let Some(tag) = tag {
            manifests.retain(|m| ref_name(m) != Some(tag));
            let mut ann = desc.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME.to_string(), tag.to_string());
            desc.set_annotations(Some(ann));
        } else {
            manifests.retain(|m| !(ref_name(m).is_none() && m.digest() == desc.digest()));
        }
        manifests.push(desc);
        index.set_manifests(manifests);
        let text = serde_json::to_vec(&index).map_err(|e| {
            OciError::io(
                self.root.join("index.json"),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        self.write_file("index.json", &text)
    }

    fn write_file(&self, name: &str, data: &[u8]) -> Result<(), OciError> {
        let dest = self.root.join(name);
        let tmp = self
            .root
            .join(format!(".{name}.tmp-{}", std::process::id()));
        // Synced before the rename: otherwise a power cut can leave the new name on an
        // empty file (btrfs commits the rename without the unsynced data).
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
            .map_err(|e| OciError::io(&tmp, e))?;
        fs::rename(&tmp, &dest).map_err(|e| OciError::io(&dest, e))
    }
}

/// The `org.opencontainers.image.ref.name` annotation of a descriptor.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_blobs_keeps_only_the_named_blobs_and_their_partial_downloads() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::create(t.path()).unwrap();
        let a = layout.write_blob(b"a").unwrap();
        let b = layout.write_blob(b"b").unwrap();
        let (c, d) = (Digest::sha256_of(b"c"), Digest::sha256_of(b"d"));
        fs::write(layout.partial_path(&c), b"c-part").unwrap();
        fs::write(layout.partial_path(&d), b"d-part").unwrap();
        assert!(layout
            .partial_path(&c)
            .ends_with(format!("{}.partial", c.hex())));
        let (tmp, _) = layout.temp_blob().unwrap();
        let desc = Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            1,
            oci_spec::image::Digest::try_from(a.to_string()).unwrap(),
        );
        layout.set_ref(Some("old"), desc).unwrap();

        let keep = [a.clone(), c.clone()].into_iter().collect();
        layout.retain_blobs(&keep).unwrap();
        assert!(layout.has_blob(&a, 1));
        assert!(!layout.blob_path(&b).exists());
        assert_eq!(fs::read(layout.partial_path(&c)).unwrap(), b"c-part");
        assert!(!layout.partial_path(&d).exists());
        assert!(!tmp.exists(), "a temporary file of an interrupted write");
        assert!(layout.index().unwrap().manifests().is_empty());
    }
}
