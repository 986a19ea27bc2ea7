//! `terra update --disk` against a real registry (Debian's docker-registry): node.toml's
//! `[update]` decides whether the tag's image is staged, applied now or in a window, or
//! left alone; a digest rejected on the node is never applied again by itself; bad
//! policies and unreachable sources are clear errors that change nothing. Needs root.

use std::fs;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::oci_common::{layer, run_terra, Comp, Registry, E};
use crate::upgrade::{layout, pairs, states, with_mount};

fn base() -> Vec<u8> {
    layer(&[
        E::Dir("etc", 0o755),
        E::File("etc/os-release", b"NAME=test\n", 0o644),
        E::Dir("sbin", 0o755),
        E::File("sbin/init", b"#!/sbin/init\n", 0o755),
    ])
}

fn top(tag: &'static [u8]) -> Vec<u8> {
    layer(&[E::File("etc/version", tag, 0o644)])
}

/// node.toml for the disk at `disk`, with `update` as its `[update]` table.
fn node_toml(layout: &Path, disk: &Path, update: &str) -> String {
    format!(
        "hostname = \"upd-1\"\nimage = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\n\
         [[groups.disk]]\ndevice = \"{}\"\nsize = 256\n{update}",
        layout.display(),
        disk.display()
    )
}

fn install(dir: &Path, layout: &Path, update: &str) -> PathBuf {
    let disk = dir.join("disk.img");
    let node = dir.join("node.toml");
    fs::write(&node, node_toml(layout, &disk, update)).unwrap();
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(ok, "{err}");
    disk
}

/// Rewrites the node.toml kept on the disk, as an admin changing the policy would.
fn set_policy(disk: &Path, layout: &Path, update: &str) {
    let text = node_toml(layout, disk, update);
    with_mount(disk, |top| {
        fs::write(top.join(".terra/node.toml"), text).unwrap()
    });
}

fn update(disk: &Path, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["update", "--disk", disk.to_str().unwrap()];
    a.extend_from_slice(args);
    run_terra(&a)
}

/// A window of every day that is open now (`open`) or opens in two hours, in UTC.
fn window(open: bool) -> String {
    let now = Timestamp::now();
    let (from, to) = if open {
        (
            now - SignedDuration::from_hours(1),
            now + SignedDuration::from_hours(1),
        )
    } else {
        (
            now + SignedDuration::from_hours(2),
            now + SignedDuration::from_hours(3),
        )
    };
    let hm = |t: Timestamp| t.strftime("%H:%M").to_string();
    format!("* {}-{}", hm(from), hm(to))
}

#[test]
fn the_policy_decides_what_is_staged_and_applied_and_a_rejected_digest_stays_out() {
    let _disks = crate::common::host_disks(module_path!());
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("v2", vec![(base(), Comp::Gzip), (top(b"2\n"), Comp::Gzip)]),
            ("v3", vec![(base(), Comp::Gzip), (top(b"3\n"), Comp::Gzip)]),
        ],
    );
    // The tag the node follows.
    reg.push_as(&l, "v2", "upd/os", "stable");
    let source = format!(
        "[update]\nsource = \"{}/upd/os:stable\"\nplain_http = true\n",
        reg.host()
    );
    let disk = install(dir.path(), &l, &format!("{source}strategy = \"manual\"\n"));

    // --check looks, and changes nothing.
    let (ok, out, err) = update(&disk, &["--check"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("not on this node: stage it") && out.contains("strategy manual"),
        "{out}"
    );
    assert_eq!(states(&disk), pairs(&[("os", "default")]));

    // Manual: staged, never applied by update.
    let (ok, out, err) = update(&disk, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("version v2 is staged"), "{out}");
    assert_eq!(states(&disk), pairs(&[("os", "default"), ("v2", "staged")]));

    // A window that is closed now: it stays staged and update says when it will apply.
    set_policy(
        &disk,
        &l,
        &format!("{source}window = [\"{}\"]\n", window(false)),
    );
    let (ok, out, err) = update(&disk, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("staged as v2 already") && out.contains("next window"),
        "{out}"
    );
    assert_eq!(states(&disk), pairs(&[("os", "default"), ("v2", "staged")]));

    // Inside the window: applied (with --disk nothing reboots), once.
    set_policy(
        &disk,
        &l,
        &format!("{source}window = [\"{}\"]\n", window(true)),
    );
    let (ok, out, err) = update(&disk, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("applied v2") && out.contains("boots next"),
        "{out}"
    );
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "tentative")])
    );
    let (ok, out, err) = update(&disk, &[]);
    assert!(
        ok && out.contains("version v2 is that image already"),
        "{out}{err}"
    );

    // Rejected on the node: the tag still names it, update never applies it again.
    let (ok, _, err) = run_terra(&["bless", "--disk", disk.to_str().unwrap(), "bad"]);
    assert!(ok, "{err}");
    let (ok, out, err) = update(&disk, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("was rejected on this node as v2") && out.contains("not applying"),
        "{out}"
    );
    assert_eq!(states(&disk), pairs(&[("os", "default"), ("v2", "bad")]));

    // The tag moves on: immediate stages and applies the new image.
    reg.push_as(&l, "v3", "upd/os", "stable");
    set_policy(&disk, &l, &source);
    let (ok, out, err) = update(&disk, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("strategy immediate") && out.contains("applied v3"),
        "{out}"
    );
    assert_eq!(
        states(&disk),
        pairs(&[("os", "default"), ("v2", "bad"), ("v3", "tentative")])
    );
}

#[test]
fn bad_policies_and_unreachable_sources_are_clear_errors_that_change_nothing() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let l = layout(
        dir.path(),
        &[
            ("v1", vec![(base(), Comp::Gzip)]),
            ("v2", vec![(base(), Comp::Gzip), (top(b"2\n"), Comp::Gzip)]),
        ],
    );
    let disk = install(dir.path(), &l, "");
    let (ok, out, err) = update(&disk, &[]);
    assert!(ok && out.contains("no [update] source"), "{out}{err}");

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (policy, says) in [
        (
            "[update]\nsource = \"oci:x:v2\"\nwindow = [\"Sat 2am-4am\"]\n".to_string(),
            ".terra/node.toml: update.window[0]: \"Sat 2am-4am\": \"2am\" is not a time of day",
        ),
        (
            "[update]\nsource = \"oci:x:v2\"\nstrategy = \"sometimes\"\n".to_string(),
            "update.strategy: \"sometimes\"",
        ),
        (
            "[update]\nsource = \"oci:x:v2\"\ndelay = \"a bit\"\n".to_string(),
            "update.delay: \"a bit\": not a duration",
        ),
        (
            "[update]\nsource = \"controller\"\n".to_string(),
            "update.source = \"controller\"",
        ),
        (
            format!("[update]\nsource = \"127.0.0.1:{dead}/upd/os:stable\"\nplain_http = true\n"),
            "Connection refused",
        ),
        (
            format!("[update]\nsource = \"oci:{}:v9\"\n", l.display()),
            "v9",
        ),
    ] {
        set_policy(&disk, &l, &policy);
        let (ok, out, err) = update(&disk, &[]);
        assert!(!ok && err.contains(says), "{policy}: {out}{err}");
        assert_eq!(states(&disk), pairs(&[("os", "default")]), "{policy}");
    }
}
