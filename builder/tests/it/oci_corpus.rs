//! Images made by real tools (`lab::oci_root::corpus`: umoci insert/repack, buildah,
//! skopeo, GNU tar layers) unpack with terra exactly as `umoci unpack` unpacks them, entry
//! by entry and attribute by attribute. Where umoci cannot read an image's form (zstd, old
//! GNU sparse entries), the reference is the same layers in a form it reads, and the test
//! says so. The corpus is built once per tool versions and cached under target/lab/corpus.

use crate::oci_common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use lab::netns::{run_timed, Timed};
use lab::oci_root::corpus::{self, Corpus, Image};
use oci_common::*;

/// Bound on one unpack (terra's or umoci's) of a corpus image.
const LIMIT: Duration = Duration::from_secs(120);

fn the_corpus() -> &'static Corpus {
    static C: OnceLock<Result<Corpus, String>> = OnceLock::new();
    let busybox = lab::host::static_busybox();
    match C.get_or_init(|| match busybox {
        Some(bb) => corpus::corpus(&bb),
        None => Err("the corpus needs a static busybox (apt-get install busybox-static)".into()),
    }) {
        Ok(c) => c,
        Err(e) => panic!("building the image corpus failed: {e}"),
    }
}

fn bounded(cmd: &mut Command) -> Timed {
    run_timed(cmd, LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// terra's unpack of `reference` into `dest`; its stderr.
fn terra_unpack(reference: &str, dest: &Path) -> String {
    let t = bounded(
        Command::new(env!("CARGO_BIN_EXE_terra"))
            .env("TERRA_DEBUG", "1")
            .args(["image", "unpack", reference])
            .arg(dest),
    );
    assert!(
        t.status.success(),
        "terra image unpack {reference} failed: {}",
        t.stderr
    );
    t.stderr
}

/// umoci's unpack of layout:tag into bundle; Err with its stderr when it refuses.
fn umoci_unpack_bounded(layout: &Path, tag: &str, bundle: &Path) -> Result<(), String> {
    let t = bounded(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
    if t.status.success() {
        Ok(())
    } else {
        Err(t.stderr)
    }
}

/// Unpacks one corpus image with terra and its reference with umoci; returns terra's
/// tree and the differences, each naming the entry and the attribute.
fn compare(img: &Image) -> (BTreeMap<String, Info>, Vec<String>) {
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("terra");
    let start = now();
    terra_unpack(&img.terra_ref, &ours);
    let bundle = work.path().join("bundle");
    let (layout, tag) = &img.umoci;
    if let Err(e) = umoci_unpack_bounded(layout, tag, &bundle) {
        panic!(
            "{}: umoci unpack {}:{tag} failed: {e}",
            img.name,
            layout.display()
        );
    }
    let end = now();
    let mine = snapshot(&ours);
    let mut theirs = snapshot(&bundle.join("rootfs"));
    // A directory no layer has an entry for (umoci insert's `etc` above `etc/marker`) is
    // made by both at unpack time, with that time as its mtime: not compared.
    let made_now = |t: i64| (start..=end).contains(&t);
    let mut mine_cmp = mine.clone();
    for (path, ours) in mine_cmp.iter_mut() {
        if let Some(t) = theirs.get_mut(path) {
            if ours.kind == "dir" && t.kind == "dir" && made_now(ours.mtime) && made_now(t.mtime) {
                (ours.mtime, t.mtime) = (0, 0);
            }
        }
    }
    let reference = match img.reference_note {
        Some(_) => "umoci (other form)",
        None => "umoci",
    };
    let diffs = differences(&mine_cmp, &theirs, reference);
    (mine, diffs)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Compares every named image and fails listing each difference under its image.
fn all_match(names: &[&str]) -> BTreeMap<String, BTreeMap<String, Info>> {
    let c = the_corpus();
    let mut failures = Vec::new();
    let mut trees = BTreeMap::new();
    for name in names {
        let img = c
            .get(name)
            .unwrap_or_else(|| panic!("no corpus image {name}"));
        let (tree, diffs) = compare(img);
        if !diffs.is_empty() {
            failures.push(format!(
                "{name} ({}){}:\n  {}",
                img.terra_ref,
                img.reference_note
                    .map(|n| format!(" [reference: {n}]"))
                    .unwrap_or_default(),
                diffs.join("\n  ")
            ));
        }
        trees.insert(name.to_string(), tree);
    }
    assert!(
        failures.is_empty(),
        "terra and umoci disagree:\n{}",
        failures.join("\n")
    );
    trees
}

#[test]
fn umoci_insert_and_repack_images_match_umoci() {
    let t = all_match(&[
        "umoci-insert-dir",
        "umoci-insert-file",
        "umoci-insert-whiteout",
        "umoci-insert-opaque",
        "umoci-repack",
    ]);
    // The rules themselves, so that umoci and terra cannot be wrong together.
    let opaque = &t["umoci-insert-opaque"];
    assert!(opaque.contains_key("etc/d/sub/new"));
    assert!(!opaque.contains_key("etc/d/sub/b") && !opaque.contains_key("etc/d/a"));
    let repack = &t["umoci-repack"];
    assert_eq!(repack["etc/d/sub"].kind, "file");
    assert_eq!(repack["etc/marker.d"].kind, "dir");
    assert!(!repack.contains_key("etc/marker"));
}

/// Issue 18's layer: one header and 3 bytes of data, no padding, no end-of-archive blocks.
/// terra unpacks it, saying so on its debug line; GNU tar refuses it (it is not POSIX).
#[test]
fn umoci_insert_layer_without_padding_unpacks_with_a_debug_line() {
    let c = the_corpus();
    let (tar, blob) = top_layer(&c.umoci_layout(), "file");
    assert_eq!(tar.len(), 515, "umoci insert's layer changed shape");
    let work = tempfile::tempdir().unwrap();
    let err = terra_unpack(
        &format!("oci:{}:file", c.umoci_layout().display()),
        &work.path().join("r"),
    );
    assert!(
        err.contains(&format!(
            "terra: debug: layer {blob}: the stream ends at byte 515"
        )) && err.contains("509 padding bytes and the end-of-archive blocks are missing"),
        "{err}"
    );
    assert_eq!(fs::read(work.path().join("r/etc/marker")).unwrap(), b"hi\n");
    let p = work.path().join("layer.tar");
    fs::write(&p, &tar).unwrap();
    let gnu = bounded(Command::new("tar").arg("-tf").arg(&p));
    assert!(
        !gnu.status.success(),
        "GNU tar now reads it: {}",
        gnu.stdout
    );
}

/// The same layer with its data cut short is refused by both, and terra's error names the
/// blob and the entry.
#[test]
fn truncated_data_is_refused_naming_the_blob_and_the_entry() {
    let c = the_corpus();
    let (tar, _) = top_layer(&c.umoci_layout(), "file");
    let dir = tempfile::tempdir().unwrap();
    for cut in [514usize, 513, 300] {
        let layout = dir.path().join(format!("cut-{cut}"));
        let short = tar[..cut].to_vec();
        image_layout(&layout, "cut", &[(short.clone(), Comp::Gzip)]);
        let blob = digest(&gzip(&short));
        let t = bounded(
            Command::new(env!("CARGO_BIN_EXE_terra"))
                .args(["image", "unpack", &format!("oci:{}:cut", layout.display())])
                .arg(dir.path().join(format!("r-{cut}"))),
        );
        assert!(!t.status.success(), "a layer cut at {cut} unpacked");
        if cut > 512 {
            assert!(
                t.stderr.contains(&format!(
                    "layer {blob}: entry \"etc/marker\": data truncated"
                )),
                "cut at {cut}: {}",
                t.stderr
            );
        } else {
            // Inside the header: there is no entry yet to name.
            assert!(t.stderr.contains(&format!("blob {blob}")), "{}", t.stderr);
        }
        let refused = umoci_unpack_bounded(&layout, "cut", &dir.path().join(format!("b-{cut}")));
        assert!(refused.is_err(), "umoci accepted a layer cut at {cut}");
    }
}

#[test]
fn buildah_images_match_umoci() {
    let t = all_match(&[
        "buildah-layers",
        "buildah-squash",
        "buildah-then-umoci-insert",
    ]);
    assert_eq!(
        t["buildah-then-umoci-insert"]["etc/umoci-marker"].size,
        "inserted by umoci\n".len() as u64
    );
    for name in ["buildah-layers", "buildah-squash"] {
        let s = &t[name];
        // RUN as root and as USER 1000, deletions of a lower layer's files, a file that
        // became a directory, setuid set by a later layer.
        assert_eq!(s["home/user/mine"].uid, 1000, "{name}");
        assert_eq!(s["home/user/dir"].mode, 0o750, "{name}");
        assert_eq!(s["bin/busybox"].mode, 0o4755, "{name}");
        assert_eq!(s["usr/share/doc/a"].kind, "dir", "{name}");
        assert!(!s.contains_key("usr/share/doc/old"), "{name}");
        assert_eq!(
            s["usr/share/doc/b-link"].same_as.as_deref(),
            Some("usr/share/doc/b")
        );
        assert_eq!(s["tmp"].mode, 0o1777, "{name}");
        assert_eq!(s["sbin/init"].mode & 0o111, 0o111, "{name}");
    }
    let c = the_corpus();
    assert!(layer_count(&c.buildah_layout(), "layers") >= 4);
    assert_eq!(layer_count(&c.buildah_layout(), "squash"), 1);
}

#[test]
fn skopeo_conversions_match_umoci() {
    all_match(&[
        "skopeo-docker-archive",
        "skopeo-oci-from-docker-archive",
        "skopeo-oci-from-dir-gzip",
        "skopeo-oci-from-dir-zstd",
    ]);
    // The zstd image's reference is the gzip one: the same layers, by their diff_ids.
    let c = the_corpus();
    let ids = |l: &str| config(&c.dir.join(l), "layers")["rootfs"]["diff_ids"].clone();
    assert_eq!(ids("from-dir-zstd"), ids("from-dir-gzip"));
    assert_eq!(ids("from-dir-zstd"), ids("buildah"));
    let m = manifest(&c.dir.join("from-dir-zstd"), "layers");
    assert!(m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"));
}

/// The type flags of every header in layout:tag's layers (extension headers included),
/// to check that the corpus holds the forms it claims to.
fn typeflags(layout: &Path, tag: &str) -> Vec<Vec<u8>> {
    use std::io::Read;
    let m = manifest(layout, tag);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&blob(layout, l["digest"].as_str().unwrap())[..])
                .read_to_end(&mut tar)
                .unwrap();
            let mut ar = tar::Archive::new(&tar[..]);
            let mut entries = ar.entries().unwrap();
            entries = entries.raw(true);
            entries
                .map(|e| e.unwrap().header().entry_type().as_byte())
                .collect()
        })
        .collect()
}

#[test]
fn gnu_tar_layers_match_umoci() {
    let c = the_corpus();
    let flags = typeflags(&c.dir.join("gnu"), "layers");
    assert!(
        flags[0].contains(&b'x') && flags[2].contains(&b'x'),
        "PAX layers"
    );
    assert!(
        flags[1].contains(&b'L') && flags[1].contains(&b'K'),
        "GNU long names"
    );
    assert!(!flags[1].contains(&b'x'), "layer 2 is GNU, not PAX");
    let flags = typeflags(&c.dir.join("gnu"), "sparse-gnu");
    assert!(flags[0].contains(&b'S'), "old GNU sparse entries");
    let t = all_match(&["gnu-tar-layers", "gnu-tar-sparse-pax"]);
    let s = &t["gnu-tar-layers"];
    let long = "usr/share/a-directory-whose-name-is-long-enough/to-need/more-than-the-hundred-bytes/of-a-ustar-name";
    assert!(s.contains_key(&format!("{long}/file-with-a-long-name")));
    assert!(s.contains_key(&format!("{long}/gnu-long-names/file")));
    assert_eq!(s["tree/x"].kind, "file");
    assert_eq!(s["tree/y"].kind, "dir");
    assert!(!s.contains_key("tree/y/inside") && !s.contains_key("tree/gone"));
    assert!(!s.contains_key("opq/old") && !s.contains_key("opq/sub"));
    // A hardlink whose target is in the layer below.
    assert_eq!(
        s["etc/zz-cross-layer-link"].same_as.as_deref(),
        Some("etc/target")
    );
    assert_eq!(
        s["etc/target"].size,
        "hardlinked from layer 2\n".len() as u64
    );
    assert_eq!((s["dev/null"].kind, s["dev/null"].rdev), ("char", 0x103));
    assert!(s["etc/xattrs"]
        .xattrs
        .iter()
        .any(|(k, _)| k == "user.comment"));
}

/// Old GNU sparse entries: umoci 0.4.7 refuses them (its typeflag switch lacks 'S', which
/// Go's reader expands), so terra is held to the spec's rule, a regular file with the
/// content the entry describes: the same files as the PAX sparse form umoci reads.
#[test]
fn old_gnu_sparse_unpacks_as_the_pax_form_does() {
    let c = the_corpus();
    let work = tempfile::tempdir().unwrap();
    match umoci_unpack_bounded(&c.dir.join("gnu"), "sparse-gnu", &work.path().join("b")) {
        Err(e) => assert!(e.contains("unknown typeflag '\\x53'"), "umoci: {e}"),
        // A umoci that reads it is the reference itself.
        Ok(()) => {
            let ours = work.path().join("mine");
            terra_unpack(&oci_ref(&c.dir.join("gnu"), "sparse-gnu"), &ours);
            let d = differences(
                &snapshot(&ours),
                &snapshot(&work.path().join("b/rootfs")),
                "umoci",
            );
            assert!(d.is_empty(), "{}", d.join("\n"));
        }
    }
    let t = all_match(&["gnu-tar-sparse-old-gnu"]);
    let s = &t["gnu-tar-sparse-old-gnu"];
    assert_eq!(s["s/holes"].size, 3 << 20);
    // The holes stay holes.
    use std::os::unix::fs::MetadataExt;
    let r = work.path().join("holes");
    terra_unpack(&oci_ref(&c.dir.join("gnu"), "sparse-gnu"), &r);
    let m = fs::metadata(r.join("s/holes")).unwrap();
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
}

/// terra keeps a sparse file's holes (PAX forms, which carry the map).
#[test]
fn pax_sparse_files_keep_their_holes() {
    use std::os::unix::fs::MetadataExt;
    let c = the_corpus();
    for v in ["0.0", "0.1", "1.0"] {
        let work = tempfile::tempdir().unwrap();
        let r = work.path().join("r");
        terra_unpack(&oci_ref(&c.dir.join("gnu"), &format!("sparse-pax-{v}")), &r);
        let m = fs::metadata(r.join("s/holes")).unwrap();
        assert_eq!(m.len(), 3 << 20);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "format {v}: {} blocks",
            m.blocks()
        );
        let data = fs::read(r.join("s/holes")).unwrap();
        assert_eq!(&data[1 << 20..(1 << 20) + 6], b"middle");
        assert_eq!(&data[(3 << 20) - 4..], b"tail");
    }
}

fn oci_ref(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

fn manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(&blob(layout, &d)).unwrap()
}

fn config(layout: &Path, tag: &str) -> serde_json::Value {
    let m = manifest(layout, tag);
    serde_json::from_slice(&blob(layout, m["config"]["digest"].as_str().unwrap())).unwrap()
}

fn layer_count(layout: &Path, tag: &str) -> usize {
    manifest(layout, tag)["layers"].as_array().unwrap().len()
}

/// The top layer of layout:tag, uncompressed, and its blob digest.
fn top_layer(layout: &Path, tag: &str) -> (Vec<u8>, String) {
    use std::io::Read;
    let m = manifest(layout, tag);
    let top = m["layers"].as_array().unwrap().last().unwrap().clone();
    let d = top["digest"].as_str().unwrap().to_string();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob(layout, &d)[..])
        .read_to_end(&mut tar)
        .unwrap();
    (tar, d)
}
