//! `terra upgrade|apply|versions|bless|rollback|gc` on disk images made by `terra install`
//! (real mkfs.btrfs, loop devices, btrfs snapshots): only new layers are unpacked, the
//! states agree at each step, a kill at any step leaves the default and a re-run completes,
//! a full disk is a clear error with nothing left as a candidate, staged versions wait for
//! `terra apply` and count towards --keep, and a digest that was bad on the node is refused
//! unless named by digest with --force (from a real registry). Needs root.

use crate::oci_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_common::{layer, run_terra, tagged_layout, terra, Comp, Layers, Registry, E};

/// A layout with images tagged by name, each a list of layers.
fn layout(dir: &Path, images: &[(&str, Layers)]) -> PathBuf {
    let layout = dir.join("layout");
    tagged_layout(&layout, images);
    layout
}

fn base() -> Vec<u8> {
    layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/os-release", b"NAME=test\n", 0o644),
        E::Dir("sbin", 0o755),
        E::File("sbin/init", b"#!/sbin/init\n", 0o755),
        E::Dir("usr", 0o755),
        E::File("usr/base", &[7u8; 4096], 0o644),
    ])
}

fn top(tag: &'static [u8]) -> Vec<u8> {
    layer(&[E::File("etc/version", tag, 0o644)])
}

/// Installs `oci:<layout>:v1` on a fresh 256 MiB disk image with a persistent subvolume.
fn installed(dir: &Path, layout: &Path, mb: u64) -> PathBuf {
    let disk = dir.join("disk.img");
    let node = dir.join("node.toml");
    fs::write(
        &node,
        format!(
            "hostname = \"up-1\"\nimage = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\n\
             [[groups.disk]]\ndevice = \"{}\"\nsize = {mb}\n\
             [[groups.subvolumes]]\nname = \"data\"\npath = \"/var/lib/data\"\n",
            layout.display(),
            disk.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(ok, "{err}");
    disk
}

fn versions(disk: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = run_terra(&["versions", "--disk", disk.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn states(disk: &Path) -> Vec<(String, String)> {
    versions(disk)
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Runs a shell-free command on the disk's top level, mounted at a temp dir.
fn with_mount<T>(disk: &Path, f: impl FnOnce(&Path) -> T) -> T {
    let m = tempfile::tempdir().unwrap();
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(disk)
        .arg(m.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    /// Unmounts even when `f` panics (a failed assertion must not leave the loop mount).
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let done = Command::new("umount").arg(self.0).status();
            if !done.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
            let _ = Command::new("btrfs")
                .args(["device", "scan", "--forget"])
                .output();
        }
    }
    let _unmount = Unmount(m.path());
    f(m.path())
}

/// What a power cut would clear after a SIGKILL: the lab's helper (the killed terra's
/// mount of the top level and its loop devices; the disk keeps what the kill left).
use lab::versions::power_cut;

fn upgrade(disk: &Path, reference: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["upgrade", "--disk", disk.to_str().unwrap(), reference];
    args.extend_from_slice(extra);
    run_terra(&args)
}

#[test]
fn upgrades_unpack_only_new_layers_and_every_command_agrees() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let other_base = layer(&[E::File("etc/os-release", b"NAME=other\n", 0o644)]);
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("v2", vec![(base(), Comp::Gzip), (top(b"2\n"), Comp::Gzip)]),
            ("v3", vec![(base(), Comp::Gzip), (top(b"3\n"), Comp::Zstd)]),
            (
                "other",
                vec![(other_base, Comp::None), (top(b"o\n"), Comp::None)],
            ),
        ],
    );
    let disk = installed(dir.path(), &l, 256);
    let r = |tag: &str| format!("oci:{}:{tag}", l.display());
    assert_eq!(states(&disk), pairs(&[("os", "default")]));

    let (ok, out, err) = upgrade(&disk, &r("v2"), &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("version v2 from")
            && out.contains("1 of 2 layers from chains on the disk, 1 unpacked"),
        "{out}"
    );
    let v = versions(&disk);
    assert_eq!(v[1]["state"], "tentative");
    assert_eq!(v[1]["tries_left"], 3);
    assert!(v[1]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(v[1]["created"].as_str().unwrap().ends_with('Z'));
    // Only the new layer's bytes (and the node's files) are exclusive to v2.
    let excl = v[1]["exclusive_bytes"].as_u64().unwrap();
    assert!(excl < 64 * 1024, "v2 holds {excl} exclusive bytes");

    // The same image again: nothing to do.
    let (ok, out, err) = upgrade(&disk, &r("v2"), &[]);
    assert!(ok && out.contains("nothing to do"), "{out}{err}");

    with_mount(&disk, |m| {
        assert_eq!(fs::read_to_string(m.join("v2/etc/version")).unwrap(), "2\n");
        assert!(fs::read_to_string(m.join("v2/etc/fstab"))
            .unwrap()
            .contains("LABEL=os / btrfs subvol=/v2 0 0"));
        assert_eq!(
            fs::read_to_string(m.join("v2/etc/hostname")).unwrap(),
            "up-1\n"
        );
        assert!(
            m.join("v2/var/lib/data").is_dir(),
            "mount point of the persistent subvolume"
        );
        let err = fs::write(m.join("v2/etc/x"), b"x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(30),
            "versions are read-only: {err}"
        );
        assert!(
            !m.join("os/etc/version").exists(),
            "the old version is untouched"
        );
    });

    // Offline confirmation, then a rollback, then a new tentative one superseding nothing.
    let d = disk.to_str().unwrap();
    let (ok, out, err) = run_terra(&["bless", "--disk", d, "good"]);
    assert!(ok && out.contains("v2 confirmed"), "{out}{err}");
    assert_eq!(states(&disk), pairs(&[("os", "good"), ("v2", "default")]));
    let (ok, out, err) = run_terra(&["rollback", "--disk", d]);
    assert!(ok && out.contains("default is now os"), "{out}{err}");
    assert_eq!(states(&disk), pairs(&[("os", "default"), ("v2", "good")]));
    let (ok, _, err) = run_terra(&["bless", "--disk", d, "good"]);
    assert!(!ok && err.contains("no tentative version"), "{err}");

    // An image sharing no layer unpacks both; one sharing the base reuses it.
    let (ok, out, err) = upgrade(&disk, &r("other"), &["--name", "o1", "--tries", "2"]);
    assert!(
        ok && out.contains("0 of 2 layers from chains"),
        "{out}{err}"
    );
    let (ok, out, err) = upgrade(&disk, &r("v3"), &["--keep", "3"]);
    assert!(
        ok && out.contains("1 of 2 layers from chains"),
        "{out}{err}"
    );
    // v3 superseded the unconfirmed o1; keep 3 removed the bad o1, nothing protected.
    assert!(out.contains("removed old versions o1"), "{out}");
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "good"), ("v3", "tentative")])
    );
    let (ok, out, err) = run_terra(&["gc", "--disk", d, "--keep", "1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("nothing to remove"),
        "default, last good and tentative stay: {out}"
    );
    with_mount(&disk, |m| {
        let chains: Vec<_> = fs::read_dir(m.join(".terra/layers")).unwrap().collect();
        // base, base+2, base+3: the "other" chains went with o1.
        assert_eq!(chains.len(), 3, "{chains:?}");
    });
    let (ok, _, err) = upgrade(&disk, &r("other"), &["--name", "bad/name"]);
    assert!(!ok && err.contains("bad/name"), "{err}");
}

#[test]
fn a_killed_upgrade_leaves_the_default_and_a_rerun_completes() {
    let _disks = crate::common::host_disks_alone(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("v2", vec![(base(), Comp::Gzip), (top(b"2\n"), Comp::Gzip)]),
        ],
    );
    let disk = installed(dir.path(), &l, 256);
    let pristine = dir.path().join("pristine.img");
    fs::copy(&disk, &pristine).unwrap();
    let r = format!("oci:{}:v2", l.display());
    for point in ["unpacked", "chained", "renamed", "built", "stored"] {
        fs::copy(&pristine, &disk).unwrap();
        let out = terra()
            .args(["upgrade", "--disk", disk.to_str().unwrap(), &r])
            .env("TERRA_CRASH_AT", point)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{point}: {out:?}");
        power_cut(&disk);
        // Whatever the kill left, the default is there, whole, and nothing half-made is
        // a candidate.
        let st = states(&disk);
        assert_eq!(st[0], ("os".to_string(), "default".to_string()), "{point}");
        if point == "stored" {
            assert_eq!(st[1], ("v2".to_string(), "tentative".to_string()));
        } else {
            assert_eq!(st.len(), 1, "{point}: {st:?}");
        }
        with_mount(&disk, |m| {
            assert!(m.join("os/sbin/init").is_file(), "{point}");
        });
        // A re-run completes (or finds the work done).
        let (ok, out, err) = upgrade(&disk, &r, &[]);
        assert!(ok, "{point}: {err}");
        assert!(
            out.contains("version v2") || out.contains("nothing to do"),
            "{point}: {out}"
        );
        assert_eq!(
            states(&disk),
            pairs(&[("os", "default"), ("v2", "tentative")]),
            "{point}"
        );
        with_mount(&disk, |m| {
            assert_eq!(
                fs::read_to_string(m.join("v2/etc/version")).ok().as_deref(),
                Some("2\n"),
                "{point}"
            );
            let left: Vec<_> = fs::read_dir(m.join(".terra"))
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("staging-"))
                .collect();
            assert!(left.is_empty(), "{point}: {left:?}");
        });
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_no_candidate() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    // 200 MiB of incompressible-looking bytes, stored uncompressed: the free-space check
    // refuses it before writing. The same size of zeros, gzip-compressed to almost
    // nothing, passes that check and fills the disk while unpacking.
    // (xorshift64, all 8 bytes of each step: a byte per step took seconds in a debug build.)
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..200 << 17)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let big = layer(&[E::FileFull("usr/big", noise, 0o644, 0, 0, vec![])]);
    let zeros = layer(&[E::FileFull(
        "usr/zeros",
        vec![0u8; 200 << 20],
        0o644,
        0,
        0,
        vec![],
    )]);
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("big", vec![(base(), Comp::Gzip), (big, Comp::None)]),
            ("zeros", vec![(base(), Comp::Gzip), (zeros, Comp::Gzip)]),
        ],
    );
    let disk = installed(dir.path(), &l, 160);
    for tag in ["big", "zeros"] {
        let (ok, _, err) = upgrade(&disk, &format!("oci:{}:{tag}", l.display()), &[]);
        assert!(!ok, "{tag} cannot fit");
        assert!(err.contains("not enough free space"), "{tag}: {err}");
        assert_eq!(states(&disk), pairs(&[("os", "default")]), "{tag}");
        with_mount(&disk, |m| {
            let names: Vec<String> = fs::read_dir(m.join(".terra"))
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !names.iter().any(|n| n.starts_with("staging-")),
                "{tag}: {names:?}"
            );
            assert!(!m.join("v2").exists(), "{tag}");
        });
    }
}

#[test]
fn a_kill_in_the_middle_of_a_layer_leaves_the_default_and_a_rerun_completes() {
    let _disks = crate::common::host_disks_alone(module_path!());
    let dir = tempfile::tempdir().unwrap();
    // 400 files of 256 KiB: long enough to be killed while it is being written.
    let names: Vec<String> = (0..400).map(|i| format!("usr/many/f{i:03}")).collect();
    let entries: Vec<E> = names
        .iter()
        .map(|n| {
            E::FileFull(
                Box::leak(n.clone().into_boxed_str()),
                vec![(n.len() % 251) as u8; 256 << 10],
                0o644,
                0,
                0,
                vec![],
            )
        })
        .collect();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            (
                "v2",
                vec![(base(), Comp::Gzip), (layer(&entries), Comp::Gzip)],
            ),
        ],
    );
    let disk = installed(dir.path(), &l, 512);
    let r = format!("oci:{}:v2", l.display());
    let mut child = terra()
        .args(["upgrade", "--disk", disk.to_str().unwrap(), &r])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // terra's mount of the top level is in this mount namespace: watch its staging tree
    // and kill it once the big layer is partly written.
    let started = std::time::Instant::now();
    let mut seen = 0;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let many = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .find(|m| m.contains(&format!("terra-versions-{}-", child.id())))
            .map(|m| PathBuf::from(m).join(".terra/staging-v2/usr/many"));
        seen = many
            .and_then(|p| fs::read_dir(p).ok())
            .map_or(0, |d| d.count());
        if seen >= 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        seen >= 20 && !status.success(),
        "killed mid-layer: {seen} files, {status:?}"
    );
    power_cut(&disk);
    assert_eq!(states(&disk), pairs(&[("os", "default")]));
    let (ok, out, err) = upgrade(&disk, &r, &[]);
    assert!(ok && out.contains("version v2"), "{out}{err}");
    with_mount(&disk, |m| {
        assert_eq!(fs::read_dir(m.join("v2/usr/many")).unwrap().count(), 400);
    });
}

/// `terra versions --rejected --json`.
fn rejected(disk: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = run_terra(&[
        "versions",
        "--disk",
        disk.to_str().unwrap(),
        "--rejected",
        "--json",
    ]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn apply(disk: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["apply", "--disk", disk.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_terra(&args)
}

#[test]
fn staged_versions_wait_for_apply_and_count_towards_keep() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let tags = ["v2", "v3", "v4", "v5", "o1"];
    let mut images = vec![("v1", vec![(base(), Comp::Gzip)])];
    for t in tags {
        images.push((
            t,
            vec![(base(), Comp::Gzip), (top(t.as_bytes()), Comp::Gzip)],
        ));
    }
    let l = layout(dir.path(), &images);
    let disk = installed(dir.path(), &l, 256);
    let d = disk.to_str().unwrap();
    let r = |tag: &str| format!("oci:{}:{tag}", l.display());

    // Nothing staged: a clear error naming the disk.
    let (ok, _, err) = apply(&disk, &[]);
    assert!(
        !ok && err.contains(d) && err.contains("no staged version"),
        "{err}"
    );

    // Staged: on the disk, whole, read-only, and not a candidate.
    let (ok, out, err) = upgrade(&disk, &r("v2"), &["--download-only"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("version v2 from") && out.contains("staged: `terra apply v2`"),
        "{out}"
    );
    assert_eq!(states(&disk), pairs(&[("os", "default"), ("v2", "staged")]));
    assert_eq!(versions(&disk)[1]["tries_left"], 0);
    with_mount(&disk, |m| {
        assert_eq!(fs::read_to_string(m.join("v2/etc/version")).unwrap(), "v2");
        assert!(fs::write(m.join("v2/etc/x"), b"x").is_err(), "read-only");
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(m.join(".terra/state.json")).unwrap()).unwrap();
        // Not among the versions an older stage0 chooses from.
        assert_eq!(state["versions"].as_array().unwrap().len(), 1, "{state}");
        assert_eq!(state["staged"][0]["name"], "v2", "{state}");
    });
    let (ok, out, err) = upgrade(&disk, &r("v2"), &["--download-only"]);
    assert!(ok && out.contains("nothing to do"), "{out}{err}");

    // --reboot makes no sense offline, nor for a version that only is staged.
    let (ok, _, err) = apply(&disk, &["--reboot"]);
    assert!(
        !ok && err.contains("--reboot") && err.contains("--disk"),
        "{err}"
    );
    let (ok, _, err) = upgrade(&disk, &r("v3"), &["--download-only", "--reboot"]);
    assert!(!ok && err.contains("--download-only"), "{err}");

    // Applied: tentative with its tries.
    let (ok, out, err) = apply(&disk, &["--tries", "2"]);
    assert!(
        ok && out.contains("version v2 applied: tentative with 2 tries"),
        "{out}{err}"
    );
    assert_eq!(
        versions(&disk)
            .iter()
            .map(|v| (
                v["name"].clone(),
                v["state"].clone(),
                v["tries_left"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            ("os".into(), "default".into(), 0.into()),
            ("v2".into(), "tentative".into(), 2.into())
        ]
    );
    let (ok, _, err) = apply(&disk, &[]);
    assert!(!ok && err.contains("no staged version"), "{err}");
    let (ok, _, err) = apply(&disk, &["v2"]);
    assert!(
        !ok && err.contains("\"v2\" is tentative, not staged"),
        "{err}"
    );

    // Upgrading to an image that is staged applies it rather than building it again.
    let (ok, _, err) = upgrade(&disk, &r("v3"), &["--download-only"]);
    assert!(ok, "{err}");
    let (ok, out, err) = upgrade(&disk, &r("v3"), &[]);
    assert!(
        ok && out.contains("was staged as v3")
            && out.contains("version v3 applied")
            && out.contains("v2, never confirmed, is superseded"),
        "{out}{err}"
    );
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "bad"), ("v3", "tentative")])
    );
    // Superseded is no proof of badness: nothing remembered.
    assert!(rejected(&disk).is_empty());

    // Staged versions count towards --keep: the bad one goes first, then the older staged.
    let (ok, out, err) = upgrade(
        &disk,
        &r("o1"),
        &["--download-only", "--keep", "3", "--name", "o1"],
    );
    assert!(ok && out.contains("removed old versions v2"), "{out}{err}");
    let (ok, out, err) = upgrade(
        &disk,
        &r("v4"),
        &["--download-only", "--keep", "4", "--name", "v4"],
    );
    assert!(ok && !out.contains("removed"), "{out}{err}");
    let (ok, out, err) = upgrade(
        &disk,
        &r("v5"),
        &["--download-only", "--keep", "4", "--name", "v5"],
    );
    assert!(ok && out.contains("removed old versions o1"), "{out}{err}");
    assert_eq!(
        states(&disk),
        pairs(&[
            ("os", "default"),
            ("v3", "tentative"),
            ("v4", "staged"),
            ("v5", "staged")
        ])
    );
    // The newest staged version stays, as the default and the tentative one do.
    let (ok, out, err) = run_terra(&["gc", "--disk", d, "--keep", "1"]);
    assert!(ok && out.contains("removed v4"), "{out}{err}");
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v3", "tentative"), ("v5", "staged")])
    );
    // Its layer chains stayed too: applying it later unpacks nothing.
    with_mount(&disk, |m| {
        assert!(!m.join("v4").exists() && !m.join("o1").exists());
        assert_eq!(
            fs::read_dir(m.join(".terra/layers")).unwrap().count(),
            3,
            "base, base+v3, base+v5"
        );
    });
    let (ok, out, err) = apply(&disk, &["v5"]);
    assert!(
        ok && out.contains("v3, never confirmed, is superseded"),
        "{out}{err}"
    );
    let (ok, out, err) = run_terra(&["versions", "--disk", d]);
    assert!(ok, "{err}");
    assert!(
        out.contains("superseded by v5 before it was confirmed"),
        "why a version is bad: {out}"
    );
}

#[test]
fn a_killed_download_only_stages_nothing_that_boots_and_a_rerun_completes() {
    let _disks = crate::common::host_disks_alone(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("v2", vec![(base(), Comp::Gzip), (top(b"2\n"), Comp::Gzip)]),
        ],
    );
    let disk = installed(dir.path(), &l, 256);
    let pristine = dir.path().join("pristine.img");
    fs::copy(&disk, &pristine).unwrap();
    let r = format!("oci:{}:v2", l.display());
    use std::os::unix::process::ExitStatusExt;
    // The points around the rename and the store (the build before them is the upgrade's,
    // killed at each of its points above).
    for point in ["renamed", "built", "stored"] {
        fs::copy(&pristine, &disk).unwrap();
        let out = terra()
            .args([
                "upgrade",
                "--download-only",
                "--disk",
                disk.to_str().unwrap(),
                &r,
            ])
            .env("TERRA_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}: {out:?}");
        power_cut(&disk);
        let st = states(&disk);
        if point == "stored" {
            assert_eq!(st, pairs(&[("os", "default"), ("v2", "staged")]), "{point}");
        } else {
            assert_eq!(st, pairs(&[("os", "default")]), "{point}");
        }
        let (ok, out, err) = upgrade(&disk, &r, &["--download-only"]);
        assert!(ok, "{point}: {err}");
        assert!(
            out.contains("staged: `terra apply v2`") || out.contains("nothing to do"),
            "{point}: {out}"
        );
        assert_eq!(
            states(&disk),
            pairs(&[("os", "default"), ("v2", "staged")]),
            "{point}"
        );
    }
    // apply stores once: killed right after, it is tentative.
    let out = terra()
        .args(["apply", "--disk", disk.to_str().unwrap()])
        .env("TERRA_CRASH_AT", "applied")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    power_cut(&disk);
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "tentative")])
    );
}

#[test]
fn a_digest_that_was_bad_here_is_refused_unless_forced_by_digest() {
    let _disks = crate::common::host_disks(module_path!());
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("v2", vec![(base(), Comp::Gzip), (top(b"2\n"), Comp::Gzip)]),
        ],
    );
    reg.push(&l, "v2", "up/os");
    let disk = installed(dir.path(), &l, 256);
    let d = disk.to_str().unwrap();
    let tag = format!("{}/up/os:v2", reg.host());
    let up = |reference: &str, args: &[&str]| {
        let mut a = vec!["--plain-http"];
        a.extend_from_slice(args);
        upgrade(&disk, reference, &a)
    };
    let (ok, _, err) = up(&tag, &[]);
    assert!(ok, "{err}");
    let digest = versions(&disk)[1]["digest"].as_str().unwrap().to_string();
    let (ok, _, err) = run_terra(&["bless", "--disk", d, "bad"]);
    assert!(ok, "{err}");
    // Collected, and still remembered, with why.
    let (ok, out, err) = run_terra(&["gc", "--disk", d, "--keep", "1"]);
    assert!(ok && out.contains("removed v2"), "{out}{err}");
    let r = rejected(&disk);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["digest"], digest.as_str());
    assert_eq!(r[0]["name"], "v2");
    assert_eq!(r[0]["image"], tag.as_str());
    assert_eq!(r[0]["reason"], "rejected by terra bless bad");
    let (ok, out, err) = run_terra(&["versions", "--disk", d]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Bad on this node") && out.contains(&digest),
        "{out}"
    );

    // Neither an upgrade nor a download brings it back, and --force needs the digest.
    for args in [&[][..], &["--download-only"]] {
        let (ok, _, err) = up(&tag, args);
        assert!(
            !ok && err.contains(&digest)
                && err.contains("rejected by terra bless bad")
                && err.contains("--force"),
            "{args:?}: {err}"
        );
    }
    let (ok, _, err) = up(&tag, &["--force"]);
    assert!(
        !ok && err.contains("named by") && err.contains("digest") && err.contains("tag"),
        "{err}"
    );
    assert_eq!(states(&disk), pairs(&[("os", "default")]));

    // By digest, forced: it is tried again; once it confirms a boot, it is forgotten.
    let by_digest = format!("{}/up/os@{digest}", reg.host());
    let (ok, out, err) = up(&by_digest, &["--force"]);
    assert!(ok && out.contains("tentative"), "{out}{err}");
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "tentative")])
    );
    assert_eq!(rejected(&disk).len(), 1, "until it proves good");
    let (ok, _, err) = run_terra(&["bless", "--disk", d, "good"]);
    assert!(ok, "{err}");
    assert!(rejected(&disk).is_empty());
}
