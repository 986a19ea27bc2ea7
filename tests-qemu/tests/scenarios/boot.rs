//! Boot scenarios: real QEMU, Debian's kernel, stage0 from this tree, btrfs disks made by
//! mkfs.btrfs. Each scenario: options, boot, expect a console line.

use std::path::PathBuf;

use lab::build::Initramfs;
use lab::disk::{self, BtrfsDisk};
use lab::harness::{artifacts, boot, busybox, expect, os_disk, report, run, OS_UUID};

const DATA_UUID: &str = "7e44a1a0-5ca1-4e00-9000-0000000000b2";

/// Label `terra-data`: subvolume `v7`.
fn data_disk() -> PathBuf {
    BtrfsDisk::new("terra-data", DATA_UUID, &["v7"])
        .image(&busybox())
        .expect("data disk")
}

#[test]
fn boots_by_label_and_subvolume() {
    let out = boot()
        .disk(os_disk())
        .append("root=LABEL=os rootflags=subvol=v2")
        .run();
    expect(
        &out,
        &["TERRA-DEMO-INIT", "subvol=v2 pid=1", "TERRA-DEMO-POWEROFF"],
    );
    let r = report(&out);
    assert_eq!(r["root"]["device"], "/dev/vda");
    assert_eq!(r["root"]["options"], "subvol=v2");
    assert_eq!(r["root"]["fstype"], "btrfs");
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["early", "config", "devices", "storage", "root", "switch"]
    );
    assert!(out.exited, "VM should power off");
}

#[test]
fn boots_by_uuid_with_default_subvolume_on_two_cpus() {
    // Two CPUs: stage0 loads btrfs on a thread while it looks for the disk.
    let out = boot()
        .disk(os_disk())
        .append(&format!("root=UUID={} terra.debug", OS_UUID.to_uppercase()))
        .smp(2)
        .run();
    expect(
        &out,
        &[
            "TERRA-DEMO-INIT",
            "subvol=os pid=1",
            "stage0: preloading fs-btrfs",
        ],
    );
    let r = report(&out);
    assert_eq!(r["root"]["uuid"], OS_UUID);
    let modules = r["modules"].as_array().unwrap();
    assert!(modules.iter().any(|m| m == "btrfs"), "{modules:?}");
}

#[test]
fn boots_by_terra_disk_label_and_version() {
    let out = boot()
        .disks([os_disk(), data_disk()])
        .append("disk_label=terra-data version=v7")
        .run();
    expect(&out, &["TERRA-DEMO-INIT", "subvol=v7 pid=1"]);
    assert_eq!(report(&out)["root"]["device"], "/dev/vdb");
}

#[test]
fn finds_the_label_on_the_second_disk() {
    let blank = disk::blank("blank-64m", 64).expect("blank disk");
    let out = boot()
        .disks([blank, os_disk()])
        .append("root=LABEL=os")
        .run();
    expect(&out, &["TERRA-DEMO-INIT", "subvol=os pid=1"]);
    assert_eq!(report(&out)["root"]["device"], "/dev/vdb");
}

#[test]
fn missing_disk_ends_in_rescue_naming_the_label_and_halts() {
    let out = boot()
        .disk(os_disk())
        .append("root=LABEL=nowhere terra.timeout=3 terra.rescue=halt")
        .timeout(120)
        .run();
    expect(
        &out,
        &[
            "boot failed in phase storage",
            "root device LABEL=nowhere did not appear within 3 s",
            "vda: btrfs LABEL=os",
            "modules loaded:",
            "powering off",
        ],
    );
    assert!(!out.log.contains("TERRA-DEMO-INIT"));
    assert!(out.exited, "the VM must halt, not hang:\n{}", out.log);
}

/// The root on a disk controller whose driver the image lacks (the PIIX IDE controller of
/// QEMU's `pc` machine; the QEMU set packs no `ata_piix`): the rescue report names the
/// controller by bus address, class and IDs, and the module the full kernel would use.
#[test]
fn a_root_behind_a_controller_without_its_driver_names_the_missing_module() {
    let mut vm = boot()
        .append("terra.timeout=3 terra.rescue=halt")
        .timeout(120)
        .vm();
    vm.extra = vec![
        "-drive".into(),
        format!("file={},format=raw,if=ide,snapshot=on", os_disk().display()),
    ];
    let out = run(&vm);
    expect(
        &out,
        &[
            "boot failed in phase storage",
            "terra: PCI 0000:00:01.1 IDE controller [8086:7010] needs ata_piix — not in this \
             initramfs; add it with --module ata_piix",
        ],
    );
    assert!(out.exited, "the VM must halt:\n{}", out.log);

    // The fix it names works: the same image with --module ata_piix boots from that disk.
    let a = artifacts();
    let img = lab::lab_dir().join("scratch/initramfs-ata-piix.img");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    Initramfs {
        extra: vec!["--module".into(), "ata_piix".into()],
        ..Default::default()
    }
    .build(&a.terra, &a.stage0, &a.kver, &img)
    .expect("initramfs with ata_piix");
    vm.initrd = Some(img);
    vm.append = "terra.demo=poweroff terra.timeout=20 terra.rescue=halt".into();
    let out = run(&vm);
    expect(&out, &["TERRA-DEMO-INIT", "subvol=os pid=1"]);
    assert_eq!(report(&out)["root"]["uuid"], OS_UUID);
}

#[test]
fn invalid_node_toml_ends_in_rescue_naming_the_key() {
    let a = artifacts();
    let dir = disk::tempdir("badcfg").unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, "hostname = \"n1\"\n[boot]\ntimeuot = 5\n").unwrap();
    let img = dir.join("initramfs.img");
    Initramfs {
        config: Some(cfg),
        ..Default::default()
    }
    .build(&a.terra, &a.stage0, &a.kver, &img)
    .expect("initramfs with a bad config");
    let out = boot()
        .disk(os_disk())
        .append("terra.rescue=halt")
        .initrd(img)
        .timeout(120)
        .run();
    let _ = std::fs::remove_dir_all(&dir);
    expect(
        &out,
        &[
            "boot failed in phase config",
            "/etc/terra/node.toml",
            "timeuot",
            "powering off",
        ],
    );
    assert!(out.exited);
}

#[test]
fn init_override_runs_another_program() {
    let out = boot().disk(os_disk()).append("init=/bin/alt-init").run();
    expect(&out, &["TERRA-ALT-INIT pid=1"]);
    assert!(!out.log.contains("TERRA-DEMO-INIT"));
}

#[test]
fn stage0_is_static() {
    let a = artifacts();
    let bytes = std::fs::read(&a.stage0).unwrap();
    assert_eq!(
        lab::elf::not_static_reason(&bytes),
        None,
        "{}",
        a.stage0.display()
    );
    // And the checker does catch a dynamic binary.
    let dynamic = std::fs::read("/bin/ls").unwrap();
    assert!(lab::elf::not_static_reason(&dynamic).is_some());
    // The size budget: stage0 stays within 2 MB.
    assert!(
        bytes.len() <= 2_000_000,
        "stage0 is {} bytes, over its 2 MB budget",
        bytes.len()
    );
    // The session keeper built beside it is static too, and is packed into the image.
    let keeper = a.stage0.with_file_name("keeper");
    let kbytes = std::fs::read(&keeper).unwrap_or_else(|e| panic!("{}: {e}", keeper.display()));
    assert_eq!(
        lab::elf::not_static_reason(&kbytes),
        None,
        "{}",
        keeper.display()
    );
    let listing = lab::run(std::process::Command::new("sh").arg("-c").arg(format!(
        "zstd -dc '{}' 2>/dev/null | cpio -t 2>/dev/null || gzip -dc '{}' | cpio -t",
        a.initramfs.display(),
        a.initramfs.display()
    )))
    .expect("list the initramfs");
    assert!(
        listing.lines().any(|l| l == "lib/terra/keeper"),
        "the keeper is not in {}:\n{listing}",
        a.initramfs.display()
    );
    eprintln!(
        "stage0 {} bytes, keeper {} bytes",
        bytes.len(),
        kbytes.len()
    );
}

/// `terra initramfs --host` for the lab guest: its devices (every modalias under
/// /sys/devices, printed by the demo root) copied into a sysfs tree, the bare-metal module
/// set cut down to them (`--host-sysfs`), and that image boots the lab disk; the drivers
/// of hardware the guest lacks are left out and the image is a fraction of the full set.
#[test]
fn a_host_only_image_made_for_the_lab_guest_boots_it() {
    let a = artifacts();
    let out = boot().disk(os_disk()).append("terra.demo=modaliases").run();
    expect(&out, &["TERRA-DEMO-POWEROFF"]);
    let dir = disk::tempdir("host-sysfs").unwrap();
    let sysfs = dir.join("sys");
    let devices = lab::vm::modaliases_to_sysfs(&out.log, &sysfs).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        devices >= 5,
        "too few modaliases on the console:\n{}",
        out.log
    );
    let baremetal = lab::workspace().join("initramfs/baremetal.modules");
    let build = |extra: Vec<String>, img: &std::path::Path| {
        Initramfs {
            extra,
            ..Default::default()
        }
        .build(&a.terra, &a.stage0, &a.kver, img)
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::metadata(img).unwrap().len()
    };
    let list = vec![
        "--modules-list".to_string(),
        baremetal.display().to_string(),
    ];
    let full = build(list.clone(), &dir.join("full.img"));
    let host_img = dir.join("host.img");
    let mut host_args = list;
    host_args.extend(["--host-sysfs".to_string(), sysfs.display().to_string()]);
    let host = build(host_args, &host_img);
    eprintln!(
        "measured: the lab guest's {devices} modaliases; bare-metal set {full} bytes, --host {host} bytes ({:.0}%)",
        host as f64 * 100.0 / full as f64
    );
    assert!(
        host * 2 < full,
        "--host ({host} bytes) should be well under the bare-metal set ({full} bytes)"
    );
    let out = boot()
        .disk(os_disk())
        .append("terra.rescue=halt")
        .initrd(host_img)
        .run();
    let _ = std::fs::remove_dir_all(&dir);
    expect(&out, &["TERRA-DEMO-INIT", "subvol=os pid=1"]);
}
