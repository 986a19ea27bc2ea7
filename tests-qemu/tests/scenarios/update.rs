//! Issue 24 end to end: Debian 12 systemd nodes that carry terra (installed from its .deb
//! in the image, `lab::debian_node`) update themselves from a registry on the host.

use std::process::Command;

use lab::debian_node::{self, NodeImages};

fn node_images() -> NodeImages {
    let deb = lab::package::build_deb().expect("cargo xtask deb");
    debian_node::node_images(&deb).expect("Debian node images (root, Debian's mirror)")
}

/// The node images hold terra as dpkg installed it, with the health checks each needs.
#[test]
fn the_node_images_carry_terra_installed_from_its_package() {
    let images = node_images();
    for tag in [debian_node::N1, debian_node::N3] {
        let dir = lab::lab_dir()
            .join("scratch")
            .join(format!("node-image-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(&lab::harness::artifacts().terra)
            .args(["image", "unpack"])
            .arg(images.reference(tag))
            .arg(&dir)
            .output()
            .expect("terra image unpack");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = std::fs::read_to_string(dir.join("var/lib/dpkg/status")).unwrap();
        let terra = status
            .split("\n\n")
            .find(|p| p.starts_with("Package: terra\n"))
            .expect("terra in dpkg's status");
        assert!(terra.contains("Status: install ok installed"), "{terra}");
        assert!(
            status.contains("Package: btrfs-progs\n"),
            "the Recommends came along"
        );
        assert!(dir.join("usr/bin/terra").is_file());
        assert!(dir
            .join("usr/lib/systemd/system/terra-update.timer")
            .is_file());
        let checks: Vec<String> = std::fs::read_dir(dir.join("etc/terra/health.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            checks.len(),
            if tag == debian_node::N3 { 2 } else { 1 },
            "{checks:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
