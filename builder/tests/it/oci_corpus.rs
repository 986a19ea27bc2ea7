//! Images made by real tools (`lab::oci_root::corpus`: umoci insert/repack, buildah,
//! skopeo, GNU tar layers) unpack with terra exactly as `umoci unpack` unpacks them, entry
//! by entry and attribute by attribute. Where umoci cannot read an image's form (zstd, old
//! GNU sparse entries), the reference is the same layers in a form it reads, and the test
//! says so. The corpus is built once per tool versions and cached under target/lab/corpus.
//! Every layer of it reads with terra's tar reader as with Go's (`oci_common::go_tar`), and
//! so do archives GNU tar makes here in the forms issue 29 names: sparse files in every
//! format side by side, incremental dumps, xattrs of every namespace; where umoci refuses
//! an entry type Go reads (`S`, `D`), GNU tar's own extraction is the reference tree.

use crate::oci_common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use lab::netns::{run_timed, Timed};
use lab::oci_root::corpus::{self, Corpus, Image};
use oci_common::go_tar;
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

/// Every layer blob of every corpus layout (gzip, zstd or plain) reads with terra's tar
/// reader exactly as with Go's: entries, contents, how each stream ends.
#[test]
fn every_corpus_layer_reads_as_go_reads_it() {
    use std::io::Read;
    let c = the_corpus();
    let work = tempfile::tempdir().unwrap();
    let mut layers = Vec::new();
    let mut layouts = vec![c.dir.clone()];
    while let Some(d) = layouts.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "blobs") {
                layouts.push(p.clone());
            }
            let blobs = p.join("blobs/sha256");
            if !blobs.is_dir() {
                continue;
            }
            for b in fs::read_dir(&blobs).unwrap() {
                let b = b.unwrap().path();
                let raw = fs::read(&b).unwrap();
                let mut tar = Vec::new();
                if raw.starts_with(&[0x1f, 0x8b]) {
                    flate2::read::MultiGzDecoder::new(&raw[..])
                        .read_to_end(&mut tar)
                        .unwrap();
                } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                    tar = zstd::decode_all(&raw[..]).unwrap();
                } else if raw.len() >= 512 && &raw[257..262] == b"ustar" {
                    tar = raw;
                } else {
                    continue;
                }
                let out = work.path().join(format!("{}.tar", layers.len()));
                fs::write(&out, &tar).unwrap();
                layers.push(out);
            }
        }
    }
    assert!(layers.len() >= 15, "{} layers in the corpus", layers.len());
    let refs: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
    let d = go_tar::disagreements(&refs);
    assert!(d.is_empty(), "{} disagreements:\n{}", d.len(), d.join("\n"));
}

/// GNU tar's archive of `members` of `dir` with `args`.
fn gnu_tar(args: &[&str], dir: &Path, members: &[&str], out: &Path) {
    let t = bounded(
        Command::new("tar")
            .args(["--sort=name", "--numeric-owner"])
            .args(args)
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .args(members),
    );
    assert!(t.status.success(), "GNU tar {args:?}: {}", t.stderr);
}

/// GNU tar's extraction of `tars` one after another into `dir`, as root (owners, modes,
/// xattrs of every namespace): the reference where umoci refuses an entry type.
fn gnu_tar_extract(tars: &[&Path], dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for t in tars {
        let x = bounded(
            Command::new("tar")
                .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
                .arg(t)
                .arg("-C")
                .arg(dir),
        );
        assert!(x.status.success(), "GNU tar -x: {}", x.stderr);
    }
}

/// A one-layer-per-tar OCI image of `tars`, unpacked by terra and by umoci; terra's tree,
/// its stderr, and umoci's tree or error.
#[allow(clippy::type_complexity)]
fn unpack_tars(
    tars: &[&Path],
    work: &Path,
) -> (
    BTreeMap<String, Info>,
    String,
    Result<BTreeMap<String, Info>, String>,
) {
    let layers: Vec<(Vec<u8>, Comp)> = tars
        .iter()
        .map(|t| (fs::read(t).unwrap(), Comp::Gzip))
        .collect();
    let layout = work.join("layout");
    image_layout(&layout, "t", &layers);
    let ours = work.join("terra");
    let stderr = terra_unpack(&oci_ref(&layout, "t"), &ours);
    let bundle = work.join("bundle");
    let umoci =
        umoci_unpack_bounded(&layout, "t", &bundle).map(|()| snapshot(&bundle.join("rootfs")));
    (snapshot(&ours), stderr, umoci)
}

/// Issue 29, 5: GNU tar's sparse formats side by side in one archive: old GNU (`S`, its map
/// in extension blocks), PAX 0.0, 0.1 and 1.0, of a file whose size is no multiple of a
/// block. Go reads each; terra read none of the archive (the tar crate refused the old GNU
/// entry). umoci refuses the `S` entry; GNU tar's extraction is the reference.
#[test]
fn gnu_tar_sparse_formats_side_by_side_unpack_as_gnu_tar_extracts_them() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let work = tempfile::tempdir().unwrap();
    let parts: Vec<(&str, Vec<&str>)> = vec![
        ("gnu", vec!["--format=gnu", "--sparse"]),
        (
            "pax-0.0",
            vec!["--format=pax", "--sparse", "--sparse-version=0.0"],
        ),
        (
            "pax-0.1",
            vec!["--format=pax", "--sparse", "--sparse-version=0.1"],
        ),
        (
            "pax-1.0",
            vec!["--format=pax", "--sparse", "--sparse-version=1.0"],
        ),
    ];
    let all = work.path().join("all.tar");
    for (i, (name, args)) in parts.iter().enumerate() {
        let src = work.path().join("src").join(name);
        fs::create_dir_all(&src).unwrap();
        let p = src.join(format!("sparse-{name}"));
        let mut f = fs::File::create(&p).unwrap();
        // 30 data runs: more than an old GNU header holds, so extension blocks follow.
        for i in 0..30u64 {
            f.seek(SeekFrom::Start(i * 65536 + 7)).unwrap();
            f.write_all(format!("run {i} of {name}").as_bytes())
                .unwrap();
        }
        f.set_len(30 * 65536 + 333).unwrap();
        drop(f);
        fs::write(src.join(format!("plain-{name}")), b"not sparse\n").unwrap();
        let t = work.path().join(format!("{name}.tar"));
        gnu_tar(args, &src, &["."], &t);
        if i == 0 {
            fs::copy(&t, &all).unwrap();
        } else {
            let a = bounded(
                Command::new("tar")
                    .arg("--concatenate")
                    .arg("-f")
                    .arg(&all)
                    .arg(&t),
            );
            assert!(a.status.success(), "tar -A: {}", a.stderr);
        }
    }
    let tar = fs::read(&all).unwrap();
    let go = go_tar::assert_agree(&tar, "GNU tar's sparse formats");
    assert!(go_tar::accepted(&go), "{go}");
    assert!(go.contains("entry type=S name=./sparse-gnu"), "{go}");
    for v in ["0.0", "0.1", "1.0"] {
        assert!(go.contains(&format!("name=./sparse-pax-{v} ")), "{go}");
    }
    let (mine, _, umoci) = unpack_tars(&[&all], work.path());
    match umoci {
        Err(e) => assert!(e.contains("unknown typeflag '\\x53'"), "umoci: {e}"),
        Ok(_) => panic!("umoci 0.4.7 now unpacks old GNU sparse files: make it the reference"),
    }
    let reference = work.path().join("gnu-tar");
    gnu_tar_extract(&[&all], &reference);
    let d = differences(&mine, &snapshot(&reference), "GNU tar");
    assert!(d.is_empty(), "{}", d.join("\n"));
    for (name, _) in &parts {
        let m = fs::metadata(work.path().join("terra").join(format!("sparse-{name}"))).unwrap();
        assert_eq!(m.len(), 30 * 65536 + 333);
        assert!(m.blocks() * 512 < 1 << 20, "{name}: {} blocks", m.blocks());
    }
}

/// Issue 29, 6: GNU incremental dumps (`--listed-incremental`): each directory is a `D`
/// entry whose data lists the names it held. Go reads them as directories (mode 040755)
/// with that data; terra refused the type. umoci refuses it too; GNU tar's plain extraction
/// of the level 0 and level 1 dumps is the reference.
#[test]
fn gnu_incremental_dumps_unpack_as_gnu_tar_extracts_them() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("etc/sub")).unwrap();
    fs::write(src.join("etc/a"), b"a in level 0\n").unwrap();
    fs::write(src.join("etc/sub/b"), b"b in level 0\n").unwrap();
    fs::write(src.join("top"), b"top\n").unwrap();
    let snar = work.path().join("snar");
    let l0 = work.path().join("level0.tar");
    let arg = format!("--listed-incremental={}", snar.display());
    // The members, not `.`: umoci refuses a root entry that is not of type `5` first.
    gnu_tar(&["--format=gnu", &arg], &src, &["etc", "top"], &l0);
    // Level 1: a new file, a changed one; the dump lists every directory again.
    fs::write(src.join("etc/sub/new"), b"new in level 1\n").unwrap();
    fs::write(src.join("etc/a"), b"a changed in level 1\n").unwrap();
    let l1 = work.path().join("level1.tar");
    gnu_tar(&["--format=gnu", &arg], &src, &["etc", "top"], &l1);
    for (t, what) in [(&l0, "level 0"), (&l1, "level 1")] {
        let go = go_tar::assert_agree(&fs::read(t).unwrap(), what);
        assert!(go_tar::accepted(&go), "{what}: {go}");
        assert!(go.contains("entry type=D name=etc/sub/ "), "{what}: {go}");
    }
    let (mine, _, umoci) = unpack_tars(&[&l0, &l1], work.path());
    match umoci {
        Err(e) => assert!(e.contains("unknown typeflag '\\x44'"), "umoci: {e}"),
        Ok(_) => panic!("umoci 0.4.7 now unpacks GNU dumpdirs: make it the reference"),
    }
    let reference = work.path().join("gnu-tar");
    gnu_tar_extract(&[&l0, &l1], &reference);
    let d = differences(&mine, &snapshot(&reference), "GNU tar");
    assert!(d.is_empty(), "{}", d.join("\n"));
    assert_eq!(mine["etc/sub"].kind, "dir");
    assert_eq!(mine["etc/a"].size, "a changed in level 1\n".len() as u64);
    assert!(mine.contains_key("etc/sub/new"));
}

/// The xattrs of `user.*`, `trusted.*` and `security.*` that GNU tar writes
/// (`--xattrs --xattrs-include='*'`), on files, a directory and a symlink, with a SELinux
/// label of the build host among them.
fn xattr_layer(work: &Path) -> std::path::PathBuf {
    let src = work.join("xsrc");
    fs::create_dir_all(src.join("dir")).unwrap();
    let set = |p: &Path, k: &str, v: &[u8]| {
        rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty())
            .unwrap_or_else(|e| panic!("setxattr {k} on {}: {e}", p.display()));
    };
    let f = src.join("file");
    fs::write(&f, b"with xattrs\n").unwrap();
    set(&f, "user.comment", b"hello");
    set(&f, "user.empty-ish", b"\0");
    set(&f, "trusted.terra", b"trusted value");
    // VFS_CAP_REVISION_2, cap_net_raw permitted and effective.
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    set(&f, "security.capability", &cap);
    set(&f, "security.selinux", b"system_u:object_r:bin_t:s0\0");
    set(&src.join("dir"), "user.on-a-directory", b"d");
    std::os::unix::fs::symlink("file", src.join("link")).unwrap();
    set(&src.join("link"), "trusted.on-a-symlink", b"l");
    let t = work.join("xattrs.tar");
    gnu_tar(
        &["--format=pax", "--xattrs", "--xattrs-include=*"],
        &src,
        &["."],
        &t,
    );
    t
}

/// Issue 29, 8: xattrs of every namespace the unpacking process may set are kept, as umoci
/// keeps them (`user.*`, `trusted.*` and `security.capability` as root); the build host's
/// SELinux label is left out, as umoci leaves it out, and terra says so.
#[test]
fn gnu_tar_xattrs_of_every_namespace_unpack_as_umoci_unpacks_them() {
    let work = tempfile::tempdir().unwrap();
    let t = xattr_layer(work.path());
    let go = go_tar::assert_agree(&fs::read(&t).unwrap(), "GNU tar xattrs");
    assert!(go.contains("xattrs=security.capability="), "{go}");
    let (mine, stderr, umoci) = unpack_tars(&[&t], work.path());
    let umoci = umoci.unwrap_or_else(|e| panic!("umoci: {e}"));
    let d = differences(&mine, &umoci, "umoci");
    assert!(d.is_empty(), "{}", d.join("\n"));
    let names =
        |p: &str| -> Vec<String> { mine[p].xattrs.iter().map(|(k, _)| k.clone()).collect() };
    assert_eq!(
        names("file"),
        [
            "security.capability",
            "trusted.terra",
            "user.comment",
            "user.empty-ish"
        ]
    );
    assert_eq!(names("dir"), ["user.on-a-directory"]);
    assert_eq!(names("link"), ["trusted.on-a-symlink"]);
    assert!(
        stderr
            .contains("terra: warning: xattr left out: ./file: security.selinux: the build host's"),
        "{stderr}"
    );
}

/// On a filesystem without xattrs (ramfs), each xattr is left out and named on stderr; the
/// unpack itself succeeds, as umoci's does (it ignores ENOTSUP).
#[test]
fn xattrs_a_filesystem_refuses_are_left_out_and_named() {
    let _disks = crate::common::host_disks(module_path!());
    let work = tempfile::tempdir().unwrap();
    let t = xattr_layer(work.path());
    let layout = work.path().join("layout");
    image_layout(&layout, "t", &[(fs::read(&t).unwrap(), Comp::Gzip)]);
    let mnt = work.path().join("ramfs");
    fs::create_dir(&mnt).unwrap();
    let m = bounded(
        Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(&mnt),
    );
    assert!(m.status.success(), "mount ramfs (needs root): {}", m.stderr);
    let run = bounded(
        Command::new(env!("CARGO_BIN_EXE_terra"))
            .args(["image", "unpack", &oci_ref(&layout, "t")])
            .arg(mnt.join("root")),
    );
    let tree = run.status.success().then(|| snapshot(&mnt.join("root")));
    let u = bounded(Command::new("umount").arg(&mnt));
    assert!(u.status.success(), "umount: {}", u.stderr);
    let tree = tree.unwrap_or_else(|| panic!("terra: {}", run.stderr));
    assert!(tree.values().all(|i| i.xattrs.is_empty()));
    for line in [
        "./file: user.comment: the filesystem does not support it",
        "./file: trusted.terra: the filesystem does not support it",
        "./file: security.capability: the filesystem does not support it",
        "./dir/: user.on-a-directory: the filesystem does not support it",
        "./link: trusted.on-a-symlink: the filesystem does not support it",
    ] {
        assert!(
            run.stderr
                .contains(&format!("terra: warning: xattr left out: {line}")),
            "{line}: {}",
            run.stderr
        );
    }
}
