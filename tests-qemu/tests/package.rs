//! Terra as a Debian package (issues 16 and 23): the .deb from `cargo xtask deb` holds terra,
//! terra-controller, stage0, the module sets and the kernel hooks, and replaces
//! initramfs-tools as the generator, as dracut does. Installed with apt into a Debian 12 root
//! as a user's machine has one (initramfs-tools and linux-image-amd64), it removes
//! initramfs-tools and writes the installed kernel's initramfs with Terra (`dpkg -i`
//! refuses until initramfs-tools is removed, then does the same); a
//! kernel package installed afterwards (Debian's cloud kernel, with its real maintainer
//! scripts) gets Terra's `/boot/initrd.img-<version>`, which boots the machine itself under
//! QEMU up to systemd, which starts the shipped `terra-controller.service`; removing the
//! kernel removes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lab::harness::{expect, run};
use lab::{kernels, package};

const MACHINE_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000001c1";

/// A unit in the machine root that runs [`CONTROLLER_CHECK`] once systemd started the
/// controller, and powers the machine off.
const CONTROLLER_CHECK_UNIT: &str = "[Unit]
Description=lab: check terra-controller.service
After=terra-controller.service

[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/local/sbin/terra-e2e-controller
ExecStartPost=/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
";

/// What the unit runs: the controller as systemd started it (its API with the token it
/// made, its state's modes, tgtd beside it), and the boot report stage0 left.
const CONTROLLER_CHECK: &str = r#"#!/bin/sh
say() { echo "TERRA-E2E-CONTROLLER $*"; }
say kernel "$(uname -r)"
for i in $(seq 90); do
    [ -s /var/lib/terra/token ] && terra-controller node list --json \
        --server http://127.0.0.1:8080 --token-file /var/lib/terra/token > /run/nodes 2>&1 && break
    sleep 1
done
say terra-controller.service "$(systemctl is-active terra-controller.service)"
pidof tgtd > /dev/null && say tgtd running
say nodes: "$(tr -d '\n ' < /run/nodes)"
say "$(stat -c '%a %U %n' /var/lib/terra/token)"
say "$(stat -c '%a %U %n' /var/lib/terra)"
say boot.json "$(tr -d '\n' < /run/terra/boot.json)"
"#;

/// A file only Terra's initramfs has (the session keeper, `init::layout::KEEPER`).
const TERRA_MARKER: &str = "lib/terra/keeper";

fn sh(cmd: &mut Command) -> String {
    lab::run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// `args` run in `root` (bounded in time); (success, stdout + stderr).
fn in_root_status(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .args([
            "--kill-after=10",
            &package::ROOT_COMMAND_TIMEOUT_S.to_string(),
            "chroot",
        ])
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("chroot {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn in_root(root: &Path, args: &[&str]) -> String {
    let (ok, out) = in_root_status(root, args);
    assert!(ok, "{args:?} in {} failed:\n{out}", root.display());
    out
}

/// The package, built once for the tests of this process.
fn deb() -> &'static PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| package::build_deb().expect("cargo xtask deb"))
}

/// dpkg's status of `package` in `root` ("" when dpkg never heard of it).
fn status(root: &Path, package: &str) -> String {
    let (_, out) = in_root_status(root, &["dpkg-query", "-W", "-f=${Status}", package]);
    out.trim().to_string()
}

/// The one kernel release installed in a machine root.
fn installed_kernel(root: &Path) -> String {
    let mut releases: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    releases.remove(0)
}

/// Whether `image` is an initramfs Terra wrote (zstd, its marker inside).
fn is_terras(image: &Path) -> bool {
    let out = Command::new("timeout")
        .arg("60")
        .args(["sh", "-c", "zstd -dc < \"$1\" | cpio -it --quiet", "sh"])
        .arg(image)
        .output()
        .expect("zstd and cpio run");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == TERRA_MARKER)
}

/// A machine root with a copy of the package in /tmp, and its kernel's initramfs-tools
/// image checked.
fn machine(name: &str) -> (PathBuf, String) {
    let root = package::machine_root(name).expect("Debian root");
    std::fs::copy(deb(), root.join("tmp/terra.deb")).unwrap();
    let kver = installed_kernel(&root);
    assert_eq!(status(&root, "initramfs-tools"), "install ok installed");
    let initrd = root.join(format!("boot/initrd.img-{kver}"));
    assert!(
        initrd.is_file() && !is_terras(&initrd),
        "no initramfs-tools image"
    );
    (root, kver)
}

#[test]
fn the_package_holds_terra_and_the_controller_and_replaces_the_generator() {
    let contents = sh(Command::new("dpkg-deb").arg("--contents").arg(deb()));
    for path in [
        "./usr/bin/terra",
        "./usr/bin/terra-controller",
        "./usr/lib/terra/stage0",
        "./usr/lib/terra/bless",
        "./usr/share/terra/modules/baremetal.modules",
        "./etc/kernel/postinst.d/zz-terra",
        "./etc/kernel/postrm.d/zz-terra",
        "./etc/terra/initramfs.conf",
        "./usr/share/bash-completion/completions/terra",
        "./usr/share/zsh/vendor-completions/_terra",
        "./usr/share/fish/vendor_completions.d/terra.fish",
        "./usr/share/bash-completion/completions/terra-controller",
        "./usr/share/zsh/vendor-completions/_terra-controller",
        "./usr/share/fish/vendor_completions.d/terra-controller.fish",
        "./usr/share/man/man1/terra.1.gz",
        "./usr/share/man/man1/terra-initramfs.1.gz",
        "./usr/share/man/man1/terra-image-unpack.1.gz",
        "./usr/share/man/man1/terra-upgrade.1.gz",
        "./usr/share/man/man1/terra-controller.1.gz",
        "./usr/share/man/man1/terra-controller-serve.1.gz",
        "./usr/share/man/man1/terra-controller-node-add.1.gz",
        "./usr/lib/systemd/system/terra-update.service",
        "./usr/lib/systemd/system/terra-update.timer",
        "./usr/share/man/man1/terra-update.1.gz",
        "./usr/lib/systemd/system/terra-controller.service",
        "./etc/terra/controller.env",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    for line in contents.lines() {
        assert!(line.contains(" root/root "), "not root's: {line}");
    }
    // Debian policy §7.6.2: one provider of linux-initramfs-tool at a time.
    for field in ["Provides", "Conflicts", "Replaces"] {
        let value = sh(Command::new("dpkg-deb").arg("-f").arg(deb()).arg(field));
        assert_eq!(value.trim(), "linux-initramfs-tool", "{field}");
    }
}

#[test]
fn dpkg_i_refuses_beside_initramfs_tools_and_installs_once_it_is_removed() {
    let (root, kver) = machine("package-dpkg");
    let initrd = root.join(format!("boot/initrd.img-{kver}"));
    let before = std::fs::read(&initrd).unwrap();
    // initramfs-tools' own `Conflicts: linux-initramfs-tool`; dpkg removes nothing for it.
    let (ok, out) = in_root_status(&root, &["dpkg", "-i", "/tmp/terra.deb"]);
    eprintln!("dpkg -i beside initramfs-tools:\n{out}");
    assert!(!ok, "{out}");
    for line in [
        "initramfs-tools conflicts with linux-initramfs-tool",
        "terra provides linux-initramfs-tool and is to be installed.",
        "conflicting packages - not installing terra",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    assert_eq!(status(&root, "initramfs-tools"), "install ok installed");
    assert_ne!(status(&root, "terra"), "install ok installed");
    assert_eq!(std::fs::read(&initrd).unwrap(), before, "the image changed");

    // The README's way with dpkg alone.
    in_root(&root, &["dpkg", "-r", "--force-depends", "initramfs-tools"]);
    let out = in_root(&root, &["dpkg", "-i", "/tmp/terra.deb"]);
    eprintln!("dpkg -i without initramfs-tools:\n{out}");
    assert!(
        out.contains(&format!("terra: building /boot/initrd.img-{kver}")),
        "{out}"
    );
    assert_eq!(status(&root, "terra"), "install ok installed");
    assert!(is_terras(&initrd));
    // Nothing is left broken: the kernel's `initramfs-tools | linux-initramfs-tool` holds.
    in_root(&root, &["dpkg", "--audit"]);
    in_root(&root, &["apt-get", "check"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn apt_install_replaces_initramfs_tools_and_the_kernel_hook_makes_a_bootable_initramfs() {
    let (root, kver) = machine("package-apt");
    let out = in_root(&root, &["apt-get", "install", "-y", "/tmp/terra.deb"]);
    eprintln!("apt-get install ./terra.deb:\n{out}");
    let removed = out
        .split("The following packages will be REMOVED:")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .unwrap_or_default();
    assert_eq!(removed.trim(), "initramfs-tools", "{out}");
    // Once, at the end of the run, with btrfs-progs' activation of the trigger.
    let building = format!("terra: building /boot/initrd.img-{kver}");
    assert_eq!(out.matches(&building).count(), 1, "{out}");
    assert_eq!(status(&root, "terra"), "install ok installed");
    assert_ne!(status(&root, "initramfs-tools"), "install ok installed");
    assert!(is_terras(&root.join(format!("boot/initrd.img-{kver}"))));
    in_root(&root, &["apt-get", "check"]);
    // The update timer ships off: a node updates itself only once someone enables it
    // (nothing links it into timers.target.wants), and its service runs `terra update`.
    assert!(
        !root
            .join("etc/systemd/system/timers.target.wants/terra-update.timer")
            .exists(),
        "the timer was enabled by the package"
    );
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/terra-update.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/terra update"), "{unit}");
    // The controller's unit ships off too; its state is /var/lib/terra, and only its own
    // process stops with it (tgtd, which it starts, outlives it).
    assert!(!root
        .join("etc/systemd/system/multi-user.target.wants/terra-controller.service")
        .exists());
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/terra-controller.service"))
            .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/terra-controller serve --state /var/lib/terra")
            && unit.contains("StateDirectory=terra\n")
            && unit.contains("KillMode=process\n"),
        "{unit}"
    );
    in_root(&root, &["terra-controller", "serve", "--help"]);
    in_root(&root, &["terra", "update", "--help"]);

    // A kernel installed now gets Terra's image from the hook (the QEMU set, for the lab).
    let kernel_deb = kernels::cloud_kernel_deb().expect("the cloud kernel package");
    let k = kernels::cloud_kernel().expect("cloud kernel");
    std::fs::copy(&kernel_deb, root.join("tmp/kernel.deb")).unwrap();
    let conf = root.join("etc/terra/initramfs.conf");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "MODULES_LIST=/usr/share/terra/modules/baremetal.modules",
        "MODULES_LIST=/usr/share/terra/modules/qemu.modules",
    );
    std::fs::write(&conf, text).unwrap();
    let initrd = root.join(format!("boot/initrd.img-{}", k.release));
    let out = in_root(&root, &["dpkg", "-i", "/tmp/kernel.deb"]);
    assert!(
        initrd.is_file() && is_terras(&initrd),
        "no Terra {} after the hook:\n{out}",
        initrd.display()
    );

    // The machine itself boots: the hook's image and the kernel it was made for, the root
    // (this machine root, as a disk) up to systemd, which starts the shipped
    // terra-controller.service (enabled as an operator does, its settings in the env file
    // the package ships): it answers the API with the token it made in its state
    // directory, both private, and tgtd runs beside it.
    std::fs::write(
        root.join("etc/terra/controller.env"),
        format!(
            "TERRA_SERVE_ARGS=\"--listen 127.0.0.1:8080 --public-url http://127.0.0.1:8080 \
             --kernel /boot/vmlinuz-{r} --initramfs /boot/initrd.img-{r}\"\n",
            r = k.release
        ),
    )
    .unwrap();
    in_root(&root, &["systemctl", "enable", "terra-controller.service"]);
    // The controller runs its own tgtd (on its own control port): Debian's tgt.service,
    // which would hold the iSCSI port first, stays off, as the README says.
    let _ = in_root_status(&root, &["systemctl", "disable", "tgt.service"]);
    std::fs::write(
        root.join("etc/systemd/system/terra-e2e-controller.service"),
        CONTROLLER_CHECK_UNIT,
    )
    .unwrap();
    let check = root.join("usr/local/sbin/terra-e2e-controller");
    std::fs::create_dir_all(check.parent().unwrap()).unwrap();
    std::fs::write(&check, CONTROLLER_CHECK).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    in_root(
        &root,
        &["systemctl", "enable", "terra-e2e-controller.service"],
    );
    let disk = package::root_disk(&root, MACHINE_UUID).expect("the machine root as a disk");
    let mut vm = lab::vm::Vm::new(&k.image, &initrd, lab::harness::accel());
    vm.disks = vec![disk.clone()];
    vm.memory_mb = 1024;
    vm.append = format!("root=UUID={MACHINE_UUID} rw");
    vm.timeout = std::time::Duration::from_secs(400);
    let out = run(&vm);
    let _ = std::fs::remove_file(&disk);
    expect(
        &out,
        &[
            &format!("TERRA-E2E-CONTROLLER kernel {}", k.release),
            "TERRA-E2E-CONTROLLER terra-controller.service active",
            "TERRA-E2E-CONTROLLER tgtd running",
            "TERRA-E2E-CONTROLLER nodes: []",
            "TERRA-E2E-CONTROLLER 600 root /var/lib/terra/token",
            "TERRA-E2E-CONTROLLER 700 root /var/lib/terra",
        ],
    );
    // stage0's boot report, on one line (the journal prefixes each console line).
    let report: serde_json::Value = out
        .log
        .lines()
        .find_map(|l| l.split("TERRA-E2E-CONTROLLER boot.json ").nth(1))
        .and_then(|j| serde_json::from_str(j.trim()).ok())
        .unwrap_or_else(|| panic!("no boot report:\n{}", out.log));
    assert_eq!(report["root"]["uuid"], MACHINE_UUID, "{report:#}");
    assert!(out.exited, "the machine powers off:\n{}", out.log);

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
