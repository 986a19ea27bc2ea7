//! `terra upgrade --disk` and `terra install` from a registry: Debian's docker-registry on
//! 127.0.0.1 behind the lab's logging proxy, whose log (not terra's report) says what was
//! fetched. Only the layers the disk lacks are fetched; a transfer cut or killed midway
//! resumes with a range request on the next run (an upgrade's, an install's, a plain
//! `terra image pull`'s); a registry that ignores ranges still completes; an unreachable
//! registry or a missing tag fails with the state and the disk unchanged. Needs root.

use std::fs;
use std::path::{Path, PathBuf};

use lab::registry::{noise, Cut, Proxy, ProxyOptions, Request};
use lab::versions::power_cut;

use crate::oci_common::{layer, terra, Comp, Registry, E};
use crate::upgrade::{installed, layout, pairs, states, upgrade, with_mount};

/// The base layer's file: big enough that fetching it again would show.
const BASE: usize = 24 << 20;
/// The changed top layer's file.
const TOP: usize = 6 << 20;

/// Two images sharing a big base, pushed to a registry; v1 installed from their layout.
struct Fixture {
    dir: tempfile::TempDir,
    reg: Registry,
    disk: PathBuf,
    /// v2's blobs: config, base layer, top layer (digest, size).
    config: (String, u64),
    base: (String, u64),
    top: (String, u64),
}

fn blobs_of(layout: &Path, tag: &str) -> Vec<(String, u64)> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let hex = entry["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = layer(&[
        E::Dir("sbin", 0o755),
        E::File("sbin/init", b"#!/sbin/init\n", 0o755),
        E::Dir("usr", 0o755),
        E::FileFull("usr/base", noise(1, BASE), 0o644, 0, 0, vec![]),
    ]);
    let top = layer(&[E::FileFull("usr/top", noise(2, TOP), 0o644, 0, 0, vec![])]);
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base.clone(), Comp::None)]),
            ("v2", vec![(base, Comp::None), (top, Comp::Gzip)]),
        ],
    );
    let reg = Registry::start();
    reg.push(&l, "v1", "terra/os");
    reg.push(&l, "v2", "terra/os");
    let disk = installed(dir.path(), &l, 256);
    let b = blobs_of(&l, "v2");
    Fixture {
        config: b[0].clone(),
        base: b[1].clone(),
        top: b[2].clone(),
        dir,
        reg,
        disk,
    }
}

fn blob_gets<'a>(reqs: &'a [Request], digest: &str) -> Vec<&'a Request> {
    reqs.iter().filter(|r| r.gets_blob(digest)).collect()
}

/// The size of the partial download of `digest` on a bootable disk's root filesystem (its
/// third partition, from `table`).
fn partial_len_on_partition(disk: &Path, table: &serde_json::Value, digest: &str) -> Option<u64> {
    let start = table["partitions"][2]["start"].as_u64().unwrap();
    let m = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .arg("-o")
        .arg(format!("ro,loop,offset={}", start * 512))
        .arg(disk)
        .arg(m.path())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mount the root partition of {}",
        disk.display()
    );
    let len = fs::metadata(
        m.path()
            .join(".terra/downloads/blobs/sha256")
            .join(format!("{}.partial", &digest[7..])),
    )
    .map(|md| md.len())
    .ok();
    let _ = std::process::Command::new("umount").arg(m.path()).status();
    let _ = std::process::Command::new("btrfs")
        .args(["device", "scan", "--forget"])
        .output();
    len
}

/// The partial download of `digest` on the disk, if any: its size.
fn partial_len(disk: &Path, digest: &str) -> Option<u64> {
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    with_mount(disk, |m| {
        fs::metadata(
            m.join(".terra/downloads/blobs/sha256")
                .join(format!("{hex}.partial")),
        )
        .ok()
        .map(|md| md.len())
    })
}

/// v2 is the tentative version, whole, and its downloads are gone from the disk.
fn assert_upgraded(disk: &Path, what: &str) {
    assert_eq!(
        states(disk),
        pairs(&[("os", "default"), ("v2", "tentative")]),
        "{what}"
    );
    with_mount(disk, |m| {
        assert!(
            fs::read(m.join("v2/usr/top")).unwrap() == noise(2, TOP),
            "{what}: v2's top layer"
        );
        assert!(m.join("v2/usr/base").is_file(), "{what}");
        assert!(
            !m.join(".terra/downloads").exists(),
            "{what}: the downloads are removed once the version is built"
        );
    });
}

/// The state and the disk as a failed run must leave them: the default alone, nothing
/// downloaded or staged.
fn assert_untouched(disk: &Path, what: &str) {
    assert_eq!(states(disk), pairs(&[("os", "default")]), "{what}");
    with_mount(disk, |m| {
        let names: Vec<String> = fs::read_dir(m.join(".terra"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("staging-")
                || n.starts_with("pending-")
                || n == "downloads"),
            "{what}: {names:?}"
        );
        assert!(!m.join("v2").exists(), "{what}");
    });
}

#[test]
fn an_upgrade_from_a_registry_fetches_only_the_layers_the_disk_lacks() {
    let _disks = crate::common::host_disks(module_path!());
    let f = fixture();

    // Bad input first: nothing is written.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, _, err) = upgrade(
        &f.disk,
        &format!("127.0.0.1:{port}/terra/os:v2"),
        &["--plain-http"],
    );
    assert!(!ok, "nothing listens on {port}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}/terra/os:v2"))
            && err.contains("Connection refused"),
        "{err}"
    );
    assert_untouched(&f.disk, "unreachable registry");
    let (ok, _, err) = upgrade(
        &f.disk,
        &format!("{}/terra/os:nope", f.reg.host()),
        &["--plain-http"],
    );
    assert!(
        !ok && err.contains("terra/os:nope") && err.contains("no such manifest"),
        "{err}"
    );
    assert_untouched(&f.disk, "missing tag");

    let proxy = Proxy::start(f.reg.port, ProxyOptions::default()).unwrap();
    let r = format!("{}/terra/os:v2", proxy.host());
    let allocated = || {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&f.disk).unwrap().blocks() * 512
    };
    let before = allocated();
    let (ok, out, err) = upgrade(&f.disk, &r, &["--plain-http"]);
    assert!(ok, "{err}");
    // The image file holds the unpacked layer, not the download as well: its space went
    // back to the host's filesystem (fstrim through the loop device).
    let grown = allocated().saturating_sub(before);
    assert!(
        grown < TOP as u64 * 3 / 2,
        "the disk image grew by {grown} bytes"
    );
    assert!(
        out.contains("1 of 2 layers from chains on the disk"),
        "{out}"
    );
    let reqs = proxy.take();
    assert!(
        blob_gets(&reqs, &f.base.0).is_empty(),
        "the base is on the disk: {reqs:#?}"
    );
    let top = blob_gets(&reqs, &f.top.0);
    assert_eq!(top.len(), 1, "{reqs:#?}");
    assert_eq!(
        (top[0].status, top[0].body, top[0].range.as_deref()),
        (200, f.top.1, None)
    );
    assert_eq!(blob_gets(&reqs, &f.config.0).len(), 1, "{reqs:#?}");
    let blobs: Vec<_> = reqs.iter().filter(|r| r.line.contains("/blobs/")).collect();
    assert_eq!(blobs.len(), 2, "config and top layer only: {reqs:#?}");
    // Manifest + config + the top layer, nothing else of size.
    let total = lab::registry::body_bytes(&reqs);
    assert!(
        total < f.top.1 + f.config.1 + 8192,
        "{total} bytes: {reqs:#?}"
    );
    assert_upgraded(&f.disk, "upgrade");

    // The same image again: the manifest and the config tell it is there already.
    let (ok, out, err) = upgrade(&f.disk, &r, &["--plain-http"]);
    assert!(ok && out.contains("nothing to do"), "{out}{err}");
    let reqs = proxy.take();
    assert!(
        reqs.iter()
            .filter(|r| r.line.contains("/blobs/"))
            .all(|r| r.gets_blob(&f.config.0)),
        "{reqs:#?}"
    );
}

/// Also: `terra gc` between the two runs removes the partial download, and the next run
/// fetches the blob whole; a partial file whose bytes were damaged (a power cut) fails the
/// digest once resumed, and the blob is fetched again whole in the same run.
#[test]
fn a_download_cut_midway_resumes_on_the_next_run_with_or_without_ranges() {
    let _disks = crate::common::host_disks(module_path!());
    let f = fixture();
    let pristine = f.dir.path().join("pristine.img");
    fs::copy(&f.disk, &pristine).unwrap();
    const CUT: u64 = 2 << 20;
    for what in ["ranges", "no ranges", "gc between", "damaged prefix"] {
        let ignore_ranges = what == "no ranges";
        fs::copy(&pristine, &f.disk).unwrap();
        let proxy = Proxy::start(
            f.reg.port,
            ProxyOptions {
                cut: Some(Cut {
                    pattern: f.top.0.clone(),
                    after: CUT,
                    stall: false,
                }),
                ignore_ranges,
            },
        )
        .unwrap();
        let r = format!("{}/terra/os:v2", proxy.host());
        let (ok, _, err) = upgrade(&f.disk, &r, &["--plain-http"]);
        assert!(!ok, "{what}: the connection was cut");
        assert!(
            err.contains(&f.top.0) && err.contains("next run"),
            "{what}: {err}"
        );
        assert_eq!(states(&f.disk), pairs(&[("os", "default")]), "{what}");
        let first = proxy.take();
        let cut = blob_gets(&first, &f.top.0);
        assert_eq!((cut.len(), cut[0].body), (1, CUT), "{what}: {first:#?}");
        let kept = partial_len(&f.disk, &f.top.0).unwrap_or(0);
        assert!(kept > 0 && kept <= CUT, "{what}: {kept} bytes kept");
        let hex = &f.top.0[7..];
        if what == "damaged prefix" {
            with_mount(&f.disk, |m| {
                let p = m.join(format!(".terra/downloads/blobs/sha256/{hex}.partial"));
                let mut bytes = fs::read(&p).unwrap();
                bytes[1000] ^= 0xff;
                fs::write(&p, bytes).unwrap();
            });
        }
        if what == "gc between" {
            let d = f.disk.to_str().unwrap();
            let (ok, _, err) = crate::oci_common::run_terra(&["gc", "--disk", d]);
            assert!(ok, "{err}");
            assert_eq!(
                partial_len(&f.disk, &f.top.0),
                None,
                "gc removed the download"
            );
        }

        let (ok, _, err) = upgrade(&f.disk, &r, &["--plain-http"]);
        assert!(ok, "{what}: {err}");
        let second = proxy.take();
        let rest = blob_gets(&second, &f.top.0);
        if what == "damaged prefix" {
            let got: Vec<_> = rest
                .iter()
                .map(|r| (r.range.clone(), r.status, r.body))
                .collect();
            assert_eq!(
                got,
                [
                    (Some(format!("bytes={kept}-")), 206, f.top.1 - kept),
                    (None, 200, f.top.1)
                ],
                "{what}"
            );
            assert_upgraded(&f.disk, what);
            continue;
        }
        assert_eq!(rest.len(), 1, "{what}: {second:#?}");
        // (range asked, status, body): what the second run's request for the blob was.
        let want = match what {
            "gc between" => (None, 200, f.top.1),
            "no ranges" => (Some(format!("bytes={kept}-")), 200, f.top.1),
            // Exactly what the partial file lacks: the runs fetch the blob once between them.
            _ => (Some(format!("bytes={kept}-")), 206, f.top.1 - kept),
        };
        assert_eq!(
            (rest[0].range.clone(), rest[0].status, rest[0].body),
            want,
            "{what}"
        );
        assert!(blob_gets(&second, &f.base.0).is_empty(), "{what}");
        assert_upgraded(&f.disk, what);
    }
}

#[test]
fn a_download_killed_midway_resumes_on_the_next_run() {
    let _disks = crate::common::host_disks_alone(module_path!());
    let f = fixture();
    const STALL: u64 = 3 << 20;
    let proxy = Proxy::start(
        f.reg.port,
        ProxyOptions {
            cut: Some(Cut {
                pattern: f.top.0.clone(),
                after: STALL,
                stall: true,
            }),
            ignore_ranges: false,
        },
    )
    .unwrap();
    let r = format!("{}/terra/os:v2", proxy.host());
    let mut child = terra()
        .args([
            "upgrade",
            "--plain-http",
            "--disk",
            f.disk.to_str().unwrap(),
            &r,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // terra's mount of the top level is in this mount namespace: watch the partial file
    // and kill terra once the stalled transfer's bytes are in it.
    let hex = f.top.0.strip_prefix("sha256:").unwrap().to_string();
    let started = std::time::Instant::now();
    let mut seen = 0;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        seen = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .find(|m| m.contains(&format!("terra-versions-{}-", child.id())))
            .map(|m| {
                PathBuf::from(m)
                    .join(".terra/downloads/blobs/sha256")
                    .join(format!("{hex}.partial"))
            })
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        // The last MiB may still be in terra's buffer.
        if seen >= STALL - (1 << 20) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        seen >= STALL - (1 << 20) && !status.success(),
        "killed mid-download: {seen} bytes, {status:?}"
    );
    power_cut(&f.disk);
    assert_eq!(states(&f.disk), pairs(&[("os", "default")]));
    let kept = partial_len(&f.disk, &f.top.0).unwrap();
    assert!(kept >= seen && kept <= STALL, "{kept} bytes kept");
    proxy.take();

    let (ok, _, err) = upgrade(&f.disk, &r, &["--plain-http"]);
    assert!(ok, "{err}");
    let reqs = proxy.take();
    let rest = blob_gets(&reqs, &f.top.0);
    assert_eq!(rest.len(), 1, "{reqs:#?}");
    assert_eq!(
        (rest[0].range.clone(), rest[0].status, rest[0].body),
        (Some(format!("bytes={kept}-")), 206, f.top.1 - kept)
    );
    assert_upgraded(&f.disk, "after the kill");
}

#[test]
fn an_install_from_a_registry_downloads_onto_its_disk_and_a_rerun_resumes() {
    let _disks = crate::common::host_disks_alone(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let base = layer(&[
        E::Dir("sbin", 0o755),
        E::File("sbin/init", b"#!/sbin/init\n", 0o755),
        E::Dir("usr", 0o755),
        E::FileFull("usr/base", noise(1, BASE), 0o644, 0, 0, vec![]),
    ]);
    let l = layout(dir.path(), &[("v1", vec![(base, Comp::None)])]);
    let reg = Registry::start();
    reg.push(&l, "v1", "terra/os");
    let (base_digest, base_size) = blobs_of(&l, "v1")[1].clone();
    const CUT: u64 = 5 << 20;
    let proxy = Proxy::start(
        reg.port,
        ProxyOptions {
            cut: Some(Cut {
                pattern: base_digest.clone(),
                after: CUT,
                stall: false,
            }),
            ignore_ranges: false,
        },
    )
    .unwrap();
    let disk = dir.path().join("disk.img");
    let node = dir.path().join("node.toml");
    fs::write(
        &node,
        format!(
            "image = \"{}/terra/os:v1\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\n\
             device = \"{}\"\nsize = 256\n",
            proxy.host(),
            disk.display()
        ),
    )
    .unwrap();
    let install =
        || crate::oci_common::run_terra(&["install", node.to_str().unwrap(), "--plain-http"]);

    // A tag that is not there, a registry that does not answer: refused before the disk
    // image is even created.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (image, says) in [
        (format!("{}/terra/os:nope", reg.host()), "no such manifest"),
        (
            format!("127.0.0.1:{port}/terra/os:v1"),
            "Connection refused",
        ),
    ] {
        let (ok, _, err) = crate::oci_common::run_terra(&[
            "install",
            node.to_str().unwrap(),
            "--plain-http",
            "--image",
            &image,
        ]);
        assert!(!ok && err.contains(&image) && err.contains(says), "{err}");
        assert!(!disk.exists(), "{image}: the disk was touched");
    }

    // Cut midway: the disk holds the interrupted install's mark and the partial blob, and
    // no boot state (no version to boot).
    let (ok, _, err) = install();
    assert!(
        !ok && err.contains(&base_digest) && err.contains("next run"),
        "{err}"
    );
    let first = proxy.take();
    assert_eq!(blob_gets(&first, &base_digest)[0].body, CUT, "{first:#?}");
    let kept = with_mount(&disk, |m| {
        assert!(m.join(".terra/installing").is_file());
        assert!(!m.join(".terra/state.json").exists());
        assert!(!m.join("os").exists());
        fs::metadata(
            m.join(".terra/downloads/blobs/sha256")
                .join(format!("{}.partial", &base_digest[7..])),
        )
        .unwrap()
        .len()
    });
    assert!(kept > 0 && kept <= CUT, "{kept} bytes kept");

    // The same install again, without --force: it goes on on that filesystem and fetches
    // only the rest of the blob.
    let (ok, out, err) = install();
    assert!(ok, "{err}");
    assert!(out.contains("installed"), "{out}");
    let second = proxy.take();
    let rest = blob_gets(&second, &base_digest);
    assert_eq!(rest.len(), 1, "{second:#?}");
    assert_eq!(
        (rest[0].range.clone(), rest[0].status, rest[0].body),
        (Some(format!("bytes={kept}-")), 206, base_size - kept)
    );
    assert_eq!(states(&disk), pairs(&[("os", "default")]));
    with_mount(&disk, |m| {
        assert!(fs::read(m.join("os/usr/base")).unwrap() == noise(1, BASE));
        assert!(!m.join(".terra/installing").exists());
        assert!(!m.join(".terra/downloads").exists());
        assert!(m.join("persist").is_dir());
    });

    // A finished install is no longer resumable: a third run refuses the disk.
    let (ok, _, err) = install();
    assert!(!ok && err.contains("without --force"), "{err}");

    // Killed later, once the download is whole and the first layer unpacked (its chain
    // subvolume, the staging one, `persist` and the kept node.toml are on the disk): the
    // re-run clears them, unpacks again and fetches nothing of the layer.
    fs::remove_file(&disk).unwrap();
    let out = terra()
        .args(["install", node.to_str().unwrap(), "--plain-http"])
        .env("TERRA_CRASH_AT", "chained")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    power_cut(&disk);
    with_mount(&disk, |m| {
        assert!(m.join(".terra/installing").is_file());
        assert!(fs::read_dir(m.join(".terra/layers")).unwrap().count() == 1);
        assert!(m.join("persist").is_dir());
    });
    proxy.take();
    let (ok, _, err) = install();
    assert!(ok, "{err}");
    let third = proxy.take();
    assert!(blob_gets(&third, &base_digest).is_empty(), "{third:#?}");
    assert_eq!(states(&disk), pairs(&[("os", "default")]));
    with_mount(&disk, |m| {
        assert!(fs::read(m.join("os/usr/base")).unwrap() == noise(1, BASE));
        assert!(!m.join(".terra/installing").exists());
        assert!(!m.join(".terra/downloads").exists());
        let left: Vec<_> = fs::read_dir(m.join(".terra"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("staging-") || n.starts_with("pending-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    });
}

#[test]
fn an_interrupted_bootable_install_resumes_on_its_partition() {
    use crate::disk_boot::{host_kernel, live_slot, partition_table};
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let base = layer(&[
        E::Dir("sbin", 0o755),
        E::File("sbin/init", b"#!/bin/sh\n", 0o755),
        E::FileFull("big", noise(3, 12 << 20), 0o644, 0, 0, vec![]),
    ]);
    let l = layout(dir.path(), &[("v1", vec![(base, Comp::None)])]);
    let reg = Registry::start();
    reg.push(&l, "v1", "terra/os");
    let (digest, size) = blobs_of(&l, "v1")[1].clone();
    let proxy = Proxy::start(
        reg.port,
        ProxyOptions {
            cut: Some(Cut {
                pattern: digest.clone(),
                after: 4 << 20,
                stall: false,
            }),
            ignore_ranges: false,
        },
    )
    .unwrap();
    let disk = dir.path().join("disk.img");
    let node = dir.path().join("node.toml");
    fs::write(
        &node,
        format!(
            "image = \"{}/terra/os:v1\"\n[[groups]]\nlabel = \"os\"\nmbr = true\n\
             [[groups.disk]]\ndevice = \"{}\"\nsize = 512\n",
            proxy.host(),
            disk.display()
        ),
    )
    .unwrap();
    let kernel = host_kernel();
    // No --uuid: the re-run takes the filesystem's (the GPT's identifiers derive from it).
    let install = || {
        let out = terra()
            .args([
                "install",
                node.to_str().unwrap(),
                "--plain-http",
                "--kernel",
            ])
            .arg(&kernel)
            .args(["--cmdline", "terra.demo=poweroff"])
            .env("TERRA_STAGE0", "/bin/busybox")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = install();
    assert!(!ok && err.contains("next run"), "{err}");
    let table = partition_table(&disk);
    let kept = partial_len_on_partition(&disk, &table, &digest).unwrap();
    assert!(kept > 0 && kept <= 4 << 20, "{kept} bytes kept");
    proxy.take();

    let (ok, err) = install();
    assert!(ok, "{err}");
    let reqs = proxy.take();
    let rest = blob_gets(&reqs, &digest);
    assert_eq!(
        rest.iter()
            .map(|r| (r.range.clone(), r.status, r.body))
            .collect::<Vec<_>>(),
        [(Some(format!("bytes={kept}-")), 206, size - kept)]
    );
    assert_eq!(
        partition_table(&disk),
        table,
        "the disk was not partitioned again"
    );
    live_slot(&disk);
    assert_eq!(states(&disk), pairs(&[("os", "default")]));
}

#[test]
fn a_cut_pull_into_a_layout_resumes_on_the_next_pull() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[(
            "v1",
            vec![(
                layer(&[E::FileFull("big", noise(4, 3 << 20), 0o644, 0, 0, vec![])]),
                Comp::Gzip,
            )],
        )],
    );
    let reg = Registry::start();
    reg.push(&l, "v1", "terra/os");
    let (digest, size) = blobs_of(&l, "v1")[1].clone();
    let proxy = Proxy::start(
        reg.port,
        ProxyOptions {
            cut: Some(Cut {
                pattern: digest.clone(),
                after: 1 << 20,
                stall: false,
            }),
            ignore_ranges: false,
        },
    )
    .unwrap();
    let pulled = dir.path().join("pulled");
    let reference = format!("{}/terra/os:v1", proxy.host());
    let layout_arg = pulled.to_str().unwrap();
    let pull = || {
        crate::oci_common::run_terra(&[
            "image",
            "pull",
            "--plain-http",
            &reference,
            "--layout",
            layout_arg,
        ])
    };
    let (ok, _, err) = pull();
    assert!(!ok && err.contains("next run"), "{err}");
    let partial = pulled
        .join("blobs/sha256")
        .join(format!("{}.partial", &digest[7..]));
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept <= 1 << 20, "{kept}");
    proxy.take();
    let (ok, out, err) = pull();
    assert!(ok && out.contains("1 resumed"), "{out}{err}");
    let reqs = proxy.take();
    let rest = blob_gets(&reqs, &digest);
    assert_eq!(
        (rest[0].range.clone(), rest[0].status, rest[0].body),
        (Some(format!("bytes={kept}-")), 206, size - kept)
    );
    assert!(!partial.exists());
    assert_eq!(
        fs::read(pulled.join("blobs/sha256").join(&digest[7..]))
            .unwrap()
            .len() as u64,
        size
    );
}
