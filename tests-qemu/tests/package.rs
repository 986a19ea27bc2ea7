//! Terra as a Debian package (issue 16): the .deb from `cargo xtask deb` holds terra,
//! stage0, the module sets and the kernel hooks; installed into a Debian root, it leaves the
//! distribution's generator alone until `TERRA_INITRAMFS=yes`; then installing a kernel
//! package (Debian's cloud kernel, with its real maintainer scripts) makes that kernel's
//! `/boot/initrd.img-<version>` with Terra, which boots the lab's disk under QEMU; removing
//! the kernel removes it.

use std::path::Path;
use std::process::Command;

use lab::harness::{artifacts, busybox, expect, report, run};
use lab::{kernels, oci_root, package};

const HOOK_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000001c1";

fn sh(cmd: &mut Command) -> String {
    lab::run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

fn in_root(root: &Path, args: &[&str]) -> String {
    sh(Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[test]
fn the_package_installs_and_its_kernel_hook_makes_a_bootable_initramfs() {
    let deb = package::build_deb().expect("cargo xtask deb");
    let contents = sh(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/terra",
        "./usr/lib/terra/stage0",
        "./usr/share/terra/modules/baremetal.modules",
        "./etc/kernel/postinst.d/zz-terra",
        "./etc/kernel/postrm.d/zz-terra",
        "./etc/terra/initramfs.conf",
        "./usr/share/bash-completion/completions/terra",
        "./usr/share/zsh/vendor-completions/_terra",
        "./usr/share/fish/vendor_completions.d/terra.fish",
        "./usr/share/man/man1/terra.1.gz",
        "./usr/share/man/man1/terra-initramfs.1.gz",
        "./usr/share/man/man1/terra-image-unpack.1.gz",
        "./usr/share/man/man1/terra-upgrade.1.gz",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    for line in contents.lines() {
        assert!(line.contains(" root/root "), "not root's: {line}");
    }
    let provides = sh(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Provides"));
    assert_eq!(provides.trim(), "linux-initramfs-tool");

    let kernel_deb = kernels::cloud_kernel_deb().expect("the cloud kernel package");
    let k = kernels::cloud_kernel().expect("cloud kernel");
    let root = package::hook_root("package-hook").expect("Debian root");
    std::fs::copy(&deb, root.join("tmp/terra.deb")).unwrap();
    std::fs::copy(&kernel_deb, root.join("tmp/kernel.deb")).unwrap();
    in_root(&root, &["dpkg", "-i", "/tmp/terra.deb"]);
    assert!(root.join("usr/lib/terra/stage0").is_file());

    // Installed but not chosen: a kernel install makes no Terra image.
    let initrd = root.join(format!("boot/initrd.img-{}", k.release));
    in_root(&root, &["dpkg", "-i", "/tmp/kernel.deb"]);
    assert!(root.join(format!("boot/vmlinuz-{}", k.release)).is_file());
    assert!(!initrd.exists(), "the hook ran without TERRA_INITRAMFS=yes");

    // Chosen: reinstalling the kernel package runs the hook, with the QEMU set.
    let conf = root.join("etc/terra/initramfs.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("TERRA_INITRAMFS=no", "TERRA_INITRAMFS=yes")
        .replace(
            "MODULES_LIST=/usr/share/terra/modules/baremetal.modules",
            "MODULES_LIST=/usr/share/terra/modules/qemu.modules",
        );
    std::fs::write(&conf, text).unwrap();
    let out = in_root(&root, &["dpkg", "-i", "/tmp/kernel.deb"]);
    assert!(
        initrd.is_file(),
        "no {} after the hook:\n{out}",
        initrd.display()
    );

    // The hook's image boots the kernel it was made for on the lab's disk.
    let a = artifacts();
    let disk = oci_root::demo_disk(&a.terra, &busybox(), HOOK_UUID).expect("demo disk");
    let mut vm = lab::vm::Vm::new(&k.image, &initrd, lab::harness::accel());
    vm.disks = vec![disk];
    vm.append = format!("terra.demo=poweroff root=UUID={HOOK_UUID}");
    vm.timeout = std::time::Duration::from_secs(150);
    let out = run(&vm);
    expect(
        &out,
        &[
            "TERRA-DEMO-INIT",
            &format!("Terra demo root on {}", k.release),
        ],
    );
    assert_eq!(report(&out)["root"]["uuid"], HOOK_UUID);

    // Removing the kernel removes its Terra image.
    let package = kernel_deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('_')
        .next()
        .unwrap()
        .to_string();
    in_root(&root, &["dpkg", "-r", &package]);
    assert!(!initrd.exists(), "{} left after removal", initrd.display());
    let _ = std::fs::remove_dir_all(&root);
}
