//! Root versions end to end (issue 11): one disk written by `terra install`, upgraded with
//! `terra upgrade --disk` (or staged with `--download-only` and applied with `terra apply
//! --disk`), booted again and again under QEMU with its writes kept. stage0 chooses, counts
//! and falls back; the demo root confirms with `/run/terra/bless`; `terra versions --json`
//! agrees after every step.

use std::path::{Path, PathBuf};
use std::process::Command;

use lab::harness::{artifacts, boot, busybox, expect, report, versions_of, want, Boot};
use lab::versions::{self, fresh_disk, upgrade};

const LIFECYCLE_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000f1";
const KILLED_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000f2";
const ISCSI_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000f3";
const WRONG_INIT_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000f4";
const HEALTH_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000f5";

/// The scenario's disk, booted with its writes kept.
fn kept(disk: &Path) -> Boot {
    boot().disk(disk).keep_writes()
}

fn st(disk: &Path) -> Vec<(String, String, u64)> {
    versions_of(disk)
}

fn setup(name: &str, uuid: &str) -> (PathBuf, PathBuf) {
    let layout = versions::layout(&busybox()).expect("versions layout");
    let disk = fresh_disk(&artifacts().terra, &layout, uuid, name).expect("installed disk");
    (layout, disk)
}

#[test]
fn upgrade_confirm_pin_fallback_tries_and_gc() {
    let terra = &artifacts().terra;
    let (layout, disk) = setup("versions-lifecycle", LIFECYCLE_UUID);
    assert_eq!(st(&disk), want(&[("os", "default", 0)]));

    // v1 (installed as `os`): read-only, with /etc and the data subvolume writable.
    let out = kept(&disk).append("terra.demo=persist").run();
    expect(
        &out,
        &[
            "subvol=v1 pid=1",
            "TERRA-DEMO-ETC-WRITE ok",
            "TERRA-DEMO-DATA-WRITE ok",
            "TERRA-DEMO-USR-WRITE failed",
            "Read-only file system",
        ],
    );
    let r = report(&out);
    assert_eq!(r["version"]["name"], "os");
    assert_eq!(r["version"]["why"], "default");
    assert_eq!(r["version"]["tentative"], false);

    // Upgrade to v2: only its top layer is unpacked; it boots tentatively and the /etc
    // edit and the data made under v1 are there.
    let up = upgrade(terra, &disk, &layout, "v2", &[]).expect("upgrade to v2");
    assert!(up.contains("1 of 2 layers from chains"), "{up}");
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "tentative", 3)])
    );
    let out = kept(&disk).run();
    expect(
        &out,
        &[
            "subvol=v2 pid=1",
            "TERRA-DEMO-ETC-EDIT edited",
            "TERRA-DEMO-DATA kept",
            "is tentative (2 tries left",
        ],
    );
    let r = report(&out);
    assert_eq!(r["version"]["name"], "v2");
    assert_eq!(r["version"]["why"], "tentative");
    assert_eq!(r["version"]["tries_left"], 2);
    assert_eq!(r["version"]["confirm"], "/run/terra/bless good");
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "tentative", 2)])
    );

    // version=os pins: v1 boots and no counter moves.
    let out = kept(&disk).append("version=os").run();
    expect(&out, &["subvol=v1 pid=1"]);
    assert_eq!(report(&out)["version"]["why"], "pinned");
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "tentative", 2)])
    );

    // The booted v2 confirms itself: it is the default from now on.
    let out = kept(&disk).append("terra.demo=bless").run();
    expect(
        &out,
        &[
            "subvol=v2 pid=1",
            "version v2 confirmed",
            "TERRA-DEMO-BLESS rc=0",
        ],
    );
    assert_eq!(st(&disk), want(&[("os", "good", 0), ("v2", "default", 0)]));

    // v3 has no init: marked bad and v2 boots in the same boot.
    upgrade(terra, &disk, &layout, "v3", &[]).expect("upgrade to v3");
    let out = kept(&disk).run();
    expect(
        &out,
        &[
            "version v3 (tentative) cannot boot",
            "fell back to version v2 (default) after v3 failed",
            "subvol=v2 pid=1",
        ],
    );
    let r = report(&out);
    assert_eq!(r["version"]["name"], "v2");
    assert_eq!(r["version"]["fallbacks"][0]["name"], "v3");
    let reason = r["version"]["fallbacks"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("/sbin/init"), "{reason}");
    let s = st(&disk);
    assert_eq!(s[2], ("v3".to_string(), "bad".to_string(), 0), "{s:?}");

    // v4 never confirms: two tries, then the default, and no loop. The collection after
    // the upgrade (keep 3) removes the bad v3.
    let up = upgrade(terra, &disk, &layout, "v4", &["--tries", "2"]).expect("upgrade to v4");
    assert!(up.contains("removed old versions v3"), "{up}");
    for left in [1, 0] {
        let out = kept(&disk).run();
        expect(&out, &["TERRA-V4-RAN subvol=v4"]);
        assert_eq!(
            st(&disk),
            want(&[
                ("os", "good", 0),
                ("v2", "default", 0),
                ("v4", "tentative", left)
            ])
        );
    }
    let out = kept(&disk).run();
    expect(&out, &["subvol=v2 pid=1"]);
    assert!(!out.log.contains("TERRA-V4-RAN"), "{}", out.log);
    assert_eq!(
        st(&disk),
        want(&[("os", "good", 0), ("v2", "default", 0), ("v4", "bad", 0)])
    );

    // GC never removes the default or the last good version.
    let gc = lab::run(
        Command::new(terra)
            .args(["gc", "--keep", "1", "--disk"])
            .arg(&disk),
    )
    .expect("terra gc");
    assert!(gc.contains("removed v4"), "{gc}");
    assert_eq!(st(&disk), want(&[("os", "good", 0), ("v2", "default", 0)]));
}

/// A killed upgrade leaves a disk that boots its default; a staged version (`--download-only`)
/// is never booted by stage0 until `terra apply` makes it tentative. The kill is of a
/// download-only upgrade: up to the store, it runs the same steps as a plain one.
#[test]
fn a_killed_upgrade_boots_the_default_and_a_staged_version_waits_for_apply() {
    let terra = &artifacts().terra;
    let (layout, disk) = setup("versions-killed", KILLED_UUID);
    let out = Command::new(terra)
        .args(["upgrade", "--download-only", "--disk"])
        .arg(&disk)
        .arg(format!("oci:{}:v2", layout.display()))
        .env("TERRA_CRASH_AT", "renamed")
        .output()
        .expect("terra runs");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    // What a power cut clears: the killed process's mount and loop device.
    lab::versions::power_cut(&disk);
    // A re-run completes: v2 is on the disk, staged.
    upgrade(terra, &disk, &layout, "v2", &["--download-only"]).expect("re-run");
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "staged", 0)])
    );
    // What the kill left and the staged v2 are not tried: the default boots and nothing
    // is counted.
    let out = kept(&disk).run();
    expect(&out, &["subvol=v1 pid=1"]);
    assert_eq!(report(&out)["version"]["name"], "os");
    assert!(!out.log.contains("version v2"), "{}", out.log);
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "staged", 0)])
    );
    // Applied, v2 boots tentatively.
    let applied =
        lab::run(Command::new(terra).args(["apply", "--disk"]).arg(&disk)).expect("terra apply");
    assert!(applied.contains("version v2 applied"), "{applied}");
    let out = kept(&disk).run();
    expect(&out, &["subvol=v2 pid=1", "is tentative (2 tries left"]);
    assert_eq!(report(&out)["version"]["why"], "tentative");
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "tentative", 2)])
    );
}

#[test]
fn an_iscsi_lun_counts_and_falls_back_like_a_local_disk() {
    use lab::tgtd::{Tgtd, GUEST_HOST_ADDR};
    const IQN: &str = "iqn.2024-01.org.terra-os:versions-root";
    let terra = &artifacts().terra;
    let (layout, lun) = setup("versions-iscsi", ISCSI_UUID);
    upgrade(terra, &lun, &layout, "v3", &["--name", "v3"]).expect("upgrade to v3");
    let mut t = Tgtd::start().expect("tgtd");
    t.target(1, IQN, &lun).expect("target");
    let out = boot()
        .nic("virtio")
        .append(&format!(
            "terra.rescue=halt ISCSI_INITIATOR=iqn.2024-01.org.terra-os:versions-node \
             ISCSI_TARGET_NAME={IQN} ISCSI_TARGET_IP={GUEST_HOST_ADDR}:{}",
            t.port
        ))
        .timeout(240)
        .run();
    drop(t);
    // The tentative v3 has no init: marked bad on the LUN, v1 boots in the same boot.
    expect(
        &out,
        &[
            "iscsi: logged in to",
            "version v3 (tentative) cannot boot",
            "subvol=v1 pid=1",
        ],
    );
    let s = st(&lun);
    assert_eq!(
        s,
        want(&[("os", "default", 0), ("v3", "bad", 0)]),
        "the state on the LUN"
    );
}

#[test]
fn a_wrong_init_on_the_command_line_marks_no_version_bad() {
    let terra = &artifacts().terra;
    let (layout, disk) = setup("versions-wrong-init", WRONG_INIT_UUID);
    upgrade(terra, &disk, &layout, "v2", &[]).expect("upgrade to v2");
    // Every version fails the same check: not their fault, so none is marked bad; the
    // boot ends in rescue (halt) instead of a reboot.
    let out = kept(&disk)
        .append("init=/sbin/nowhere terra.rescue=halt")
        .run();
    expect(
        &out,
        &[
            "version v2 (tentative) cannot boot",
            "version os (default) cannot boot",
            "no version can boot",
        ],
    );
    assert!(out.exited, "the VM halts");
    assert_eq!(
        st(&disk),
        want(&[("os", "default", 0), ("v2", "tentative", 2)]),
        "one try spent, nothing marked bad"
    );
}

/// Health checks decide "good" (issue 24): a version whose checks in /etc/terra/health.d
/// pass is confirmed; one whose check fails is rejected with the check's name and the end
/// of its output, and the node (a busybox init doing what a non-systemd init does: reboot
/// when `/run/terra/bless good` fails) boots the default again, in the same VM run.
#[test]
fn health_checks_confirm_a_version_or_reject_it_and_the_default_boots_again() {
    let terra = &artifacts().terra;
    let (_, disk) = setup("versions-health", HEALTH_UUID);
    let layout = versions::health_layout(&busybox()).expect("health layout");

    // h1: 10-ok passes, README is no check: confirmed.
    upgrade(terra, &disk, &layout, "h1", &[]).expect("upgrade to h1");
    let out = kept(&disk).append("terra.demo=health").run();
    expect(
        &out,
        &[
            "subvol=h1 pid=1",
            "terra: health check 10-ok passed",
            "terra: health check README skipped: not executable",
            "version v2 confirmed: it is the default now",
            "TERRA-DEMO-BLESS rc=0",
        ],
    );
    assert_eq!(report(&out)["version"]["health_timeout"], 120);
    assert_eq!(st(&disk), want(&[("os", "good", 0), ("v2", "default", 0)]));

    // h2: 20-fails fails after 10-ok passed; 30-never does not run. The version is
    // rejected, the init reboots, and the default v2 boots and powers off.
    upgrade(terra, &disk, &layout, "h2", &[]).expect("upgrade to h2");
    let out = kept(&disk)
        .append("terra.demo=health")
        .max_boots(2)
        .timeout(240)
        .run();
    expect(
        &out,
        &[
            "subvol=h2 pid=1",
            "terra: health check 10-ok passed",
            "terra: health check 20-fails failed: exit status 3",
            "  | 20-fails: the service did not come up",
            "version v3 rejected by health check 20-fails: the next boot runs v2",
            "TERRA-DEMO-BLESS rc=3",
            "TERRA-DEMO-REBOOT",
            "subvol=h1 pid=1",
        ],
    );
    assert_eq!(out.boots, 2, "{}", out.log);
    assert!(out.exited, "the second boot powers off:\n{}", out.log);
    assert!(!out.log.contains("30-never"), "{}", out.log);
    let reports: Vec<&str> = out.log.split("--- /run/terra/boot.json").collect();
    assert!(
        reports.last().unwrap().contains("\"why\": \"default\""),
        "the second boot runs the default:\n{}",
        out.log
    );
    assert_eq!(
        st(&disk),
        want(&[("os", "good", 0), ("v2", "default", 0), ("v3", "bad", 0)])
    );
    // terra versions says why, in the check's own words (the end of its output).
    let json = lab::run(
        Command::new(terra)
            .args(["versions", "--json", "--disk"])
            .arg(&disk),
    )
    .expect("terra versions --json");
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let v3 = &list[2];
    assert_eq!(v3["reason"], "health check 20-fails failed: exit status 3");
    assert_eq!(v3["health"]["check"], "20-fails");
    assert_eq!(v3["health"]["result"], "exit status 3");
    let output = v3["health"]["output"].as_str().unwrap();
    assert!(output.len() <= 4096, "{} bytes kept", output.len());
    assert!(
        output.ends_with(&format!(
            "20-fails: line {}\n20-fails: the service did not come up\n",
            versions::NOISY_LINES
        )),
        "{output}"
    );
    assert!(
        !output.contains("20-fails: line 1\n"),
        "only the end is kept"
    );
    let table = lab::run(Command::new(terra).args(["versions", "--disk"]).arg(&disk))
        .expect("terra versions");
    assert!(
        table.contains("(health check 20-fails failed: exit status 3)")
            && table.contains("    20-fails | 20-fails: the service did not come up"),
        "{table}"
    );
}
