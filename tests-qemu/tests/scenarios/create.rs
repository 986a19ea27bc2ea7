//! An image made by `terra create` (lab::created: the demo base, a RUN step, an init named
//! only in server.toml) installed by `terra install` boots: stage0 starts the init the
//! image config names (no `init=` on the kernel line, none in node.toml), and the guest
//! sees what the RUN step wrote.

use lab::harness::{artifacts, boot, busybox, expect, report};
use lab::{created, oci_root};

const UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000e6";

#[test]
fn a_created_image_boots_its_own_init() {
    let a = artifacts();
    let layout =
        created::created_layout(&a.terra, &busybox()).expect("terra create made the image");
    let key = layout
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk = oci_root::installed_disk(
        &a.terra,
        &format!("oci:{}:{}", layout.display(), created::TAG),
        "os",
        UUID,
        &format!("os-{key}"),
    )
    .expect("disk installed from the created image");
    let out = boot().disk(disk).run();
    expect(
        &out,
        &[
            &format!("{} pid=1", created::MARKER),
            "TERRA-DEMO-INIT",
            "TERRA-DEMO-POWEROFF",
        ],
    );
    let r = report(&out);
    assert_eq!(r["init"], "/sbin/created-init", "{r}");
    assert!(out.exited, "the VM should power off");
}

/// Bound on one walkthrough command (the Debian build, the boot under TCG).
const STEP_S: u64 = 900;

/// README's "Make your OS image", every command as written there, in a directory with
/// the package, against Debian's docker-registry on loopback (`localhost:5000` in the
/// README is that registry's address here) and a Debian 12 base from the lab as
/// `web/debian:bookworm`: the key, `terra create --push --sign-key`, `terra run` (with
/// `--tcg`, KVM hanging on the lab's hosts, and `terra.demo=poweroff`, which makes the
/// base power off once booted) booting it to systemd where the image's own unit runs
/// `terra versions`, and `terra install --verify-key` onto a disk image.
#[test]
fn the_readme_walkthrough_makes_signs_runs_and_installs_a_debian_image() {
    use std::process::Command;
    let a = artifacts();
    let deb = lab::package::build_deb().expect("cargo xtask deb");
    let work = lab::disk::tempdir("walkthrough").expect("a scratch directory");
    let reg_dir = work.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let registry = lab::registry::Registry::start(&reg_dir).expect("docker-registry on loopback");
    let host = format!("127.0.0.1:{}", registry.port);
    created::debian_example(&work, &host, &deb, false).expect("the README's example laid out");
    let disk = work.join("web-disk.img");
    std::fs::write(
        work.join("node.toml"),
        format!(
            "hostname = \"web\"\n[[groups]]\nlabel = \"os\"\ntype = \"single\"\n  [[groups.disk]]\n  device = \"{}\"\n  size = 2048\n",
            disk.display()
        ),
    )
    .unwrap();
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(&a.terra, bin.join("terra")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    let commands = created::readme_block(created::README_COMMANDS)
        .expect("the README's commands")
        .replace("localhost:5000", &host);
    for line in commands.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut line = line.replace("terra_*.deb", &deb.display().to_string());
        if line.starts_with("terra run ") {
            line = line.replace(
                "terra run ",
                "terra run --tcg --append terra.demo=poweroff ",
            );
        }
        let t = lab::netns::run_timed(
            Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(&work)
                .env("PATH", &path)
                .env("CONTAINERS_STORAGE_CONF", work.join("storage.conf")),
            std::time::Duration::from_secs(STEP_S),
        )
        .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(t.status.success(), "{line}:\n{}{}", t.stdout, t.stderr);
        outputs.push((line, format!("{}{}", t.stdout, t.stderr)));
    }
    let out = |prefix: &str| {
        outputs
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    };
    let reference = format!("{host}/acme/web:1");
    assert!(
        out("terra create").contains(&format!("terra: created {reference}")),
        "{}",
        out("terra create")
    );
    let console = out("terra run");
    // The base's marker unit, then the image's own unit printing the version table.
    assert!(
        console.contains(lab::debian::MULTI_USER_MARKER),
        "{console}"
    );
    // `terra versions` in the guest: version os, booted (*), from the pushed reference.
    assert!(
        console
            .lines()
            .any(|l| l.contains("os*") && l.contains(&reference)),
        "terra versions in the guest:\n{console}"
    );
    assert!(console.contains(lab::debian::POWEROFF_MARKER), "{console}");
    let installed = out("terra install");
    assert!(
        installed.contains(&format!("terra: installed {reference}@sha256:"))
            && installed.contains("into subvolume os"),
        "{installed}"
    );
    assert!(disk.is_file());
    let _ = std::fs::remove_dir_all(&work);
}
