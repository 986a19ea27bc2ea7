//! `terra install` with `mbr = true` on image files (needs root: loop devices, mkfs, mtools):
//! the GPT, the FAT ESP and its files, the same bytes from the same inputs, the refusals,
//! and a SIGKILL at each step of an ESP sync (`TERRA_CRASH_AT`) leaving an ESP whose
//! config names complete slot files, which the next `terra` command on the disk finishes.
//! The kernel is the host's (scripts/setup-host.sh installs one); stage0 is stood in for by
//! the static busybox, since nothing here boots (tests-qemu/tests/scenarios/disk_boot.rs does).

use crate::oci_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use lab::versions::power_cut;
use oci_common::{layer, tagged_layout, terra, Comp, E};

const UUID: &str = "5e2b7c1a-0d4f-4a8e-9b6c-3f1e2d4c5b6a";
/// The kill test's disks: tests run in parallel, and two filesystems with one UUID at once
/// would be refused by mkfs.btrfs.
const KILL_UUID: &str = "6a1c2d3e-4f50-4617-8829-3a4b5c6d7e8f";
const RAID_UUID: &str = "7b2d3e4f-5061-4728-9930-4b5c6d7e8f90";
/// The ESP starts at 2 MiB (after 1 MiB of alignment and the 1 MiB BIOS boot partition).
const ESP_OFFSET: &str = "@@2M";

pub(crate) fn host_kernel() -> PathBuf {
    let mut k: Vec<PathBuf> = fs::read_dir("/boot")
        .expect("/boot")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .is_some_and(|r| {
                    Path::new("/lib/modules")
                        .join(r)
                        .join("modules.dep")
                        .is_file()
                })
        })
        .collect();
    k.sort();
    k.pop()
        .expect("a /boot/vmlinuz-* with modules (run scripts/setup-host.sh)")
}

fn layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let image = |body: &'static [u8]| {
        vec![(
            layer(&[
                E::Dir("sbin", 0o755),
                E::File("sbin/init", b"#!/bin/sh\n", 0o755),
                E::Dir("etc", 0o755),
                E::File("etc/version", body, 0o644),
            ]),
            Comp::Gzip,
        )]
    };
    tagged_layout(&layout, &[("v1", image(b"one\n")), ("v2", image(b"two\n"))]);
    layout
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut c = terra();
    c.args(args).env("TERRA_STAGE0", "/bin/busybox");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Installs `layout:v1` on a new 512 MiB image file `name` with `mbr = true`.
fn install(dir: &Path, layout: &Path, name: &str, uuid: &str) -> PathBuf {
    let disk = dir.join(name);
    let node = dir.join(format!("{name}.toml"));
    fs::write(
        &node,
        format!(
            "hostname = \"esp-1\"\nimage = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\nmbr = true\n\
             [[groups.disk]]\ndevice = \"{}\"\nsize = 512\n",
            layout.display(),
            disk.display()
        ),
    )
    .unwrap();
    let kernel = host_kernel();
    let (ok, out) = run(
        &[
            "install",
            node.to_str().unwrap(),
            "--uuid",
            uuid,
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "terra.demo=poweroff",
        ],
        &[],
    );
    assert!(ok, "{out}");
    disk
}

/// A file of the ESP in disk image `disk`, through mtools; None when missing.
pub(crate) fn esp_file(disk: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}{ESP_OFFSET}", disk.display()))
        .arg(format!("::/{path}"))
        .arg("-")
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

pub(crate) fn partition_table(disk: &Path) -> serde_json::Value {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = v.get_mut("partitiontable").unwrap().take();
    // Device names follow the file name; everything else must match.
    let mut t = t;
    t.as_object_mut().unwrap().remove("device");
    for p in t["partitions"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("node");
    }
    t
}

/// The slot `grub.cfg` (or, without one, `grub.cfg.new`) boots, with its files complete:
/// the same bytes as `kernel` and some initramfs.
pub(crate) fn live_slot(disk: &Path) -> (String, String) {
    let cfg = esp_file(disk, "terra/grub.cfg")
        .or_else(|| esp_file(disk, "terra/grub.cfg.new"))
        .expect("grub.cfg or grub.cfg.new");
    let cfg = String::from_utf8(cfg).unwrap();
    let line = cfg
        .lines()
        .find(|l| l.trim_start().starts_with("linux /terra/"))
        .unwrap_or_else(|| panic!("no linux line in\n{cfg}"));
    let slot = line.trim_start()["linux /terra/".len()..][..1].to_string();
    let kernel = esp_file(disk, &format!("terra/{slot}/vmlinuz")).expect("slot kernel");
    assert_eq!(
        kernel,
        fs::read(host_kernel()).unwrap(),
        "slot {slot} kernel"
    );
    let initramfs = esp_file(disk, &format!("terra/{slot}/initramfs.img")).expect("initramfs");
    // A complete zstd stream: zstd -t reads it to its end.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), &initramfs).unwrap();
    assert!(
        Command::new("zstd")
            .arg("-tq")
            .arg(tmp.path())
            .status()
            .unwrap()
            .success(),
        "slot {slot}: torn initramfs"
    );
    (slot, cfg)
}

#[test]
fn an_mbr_install_partitions_the_disk_and_fills_the_esp_the_same_way_twice() {
    let _disks = crate::common::host_disks(module_path!());
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout(tmp.path());
    // Same inputs: the node.toml (embedded in the initramfs) names the same disk path, so
    // each install goes to disk.img and is then moved aside.
    let a = tmp.path().join("a.img");
    fs::rename(install(tmp.path(), &layout, "disk.img", UUID), &a).unwrap();

    let t = partition_table(&a);
    assert_eq!(t["label"], "gpt");
    let parts = t["partitions"].as_array().unwrap();
    let field = |i: usize, k: &str| parts[i][k].as_str().unwrap().to_string();
    assert_eq!(parts.len(), 3, "{t}");
    assert_eq!(field(0, "type"), "21686148-6449-6E6F-744E-656564454649");
    assert_eq!(field(1, "type"), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(field(1, "name"), "terra-esp");
    assert_eq!(field(2, "name"), "terra-root");
    assert_eq!(parts[1]["size"], 256 * 2048);

    // The MBR holds GRUB's boot.img pointing at core.img in partition 1 (LBA 2048).
    let mbr = fs::read(&a).unwrap()[..512].to_vec();
    assert_eq!(&mbr[0x5c..0x64], &2048u64.to_le_bytes());
    assert_eq!(&mbr[510..], b"\x55\xaa");

    let (slot, cfg) = live_slot(&a);
    assert_eq!(slot, "a");
    assert!(cfg.contains(&format!("root=UUID={UUID}")), "{cfg}");
    assert!(cfg.contains("terra.demo=poweroff"), "{cfg}");
    assert!(cfg.contains("menuentry 'Terra os ("), "{cfg}");
    let entry = String::from_utf8(esp_file(&a, "terra/entry").unwrap()).unwrap();
    assert!(entry.starts_with("version=os\n"), "{entry}");
    assert!(esp_file(&a, "EFI/BOOT/BOOTX64.EFI").is_some_and(|b| b.starts_with(b"MZ")));
    assert!(esp_file(&a, "terra/grub.cfg.new").is_none());
    let fsck = Command::new("fsck.fat")
        .arg("-n")
        .arg(format!("--offset={}", 2 << 20))
        .arg(&a)
        .output();
    // Older fsck.fat has no --offset; the mtools reads above already parsed the FAT.
    if let Ok(o) = fsck {
        if !String::from_utf8_lossy(&o.stderr).contains("offset") {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
    }

    let b = tmp.path().join("b.img");
    fs::rename(install(tmp.path(), &layout, "disk.img", UUID), &b).unwrap();
    assert_eq!(partition_table(&a), partition_table(&b));
    for f in [
        "EFI/BOOT/BOOTX64.EFI",
        "terra/grub.cfg",
        "terra/entry",
        "terra/a/vmlinuz",
        "terra/a/initramfs.img",
    ] {
        assert!(esp_file(&a, f) == esp_file(&b, f), "{f} differs");
    }
    // core.img in the BIOS boot partition too.
    let core = |d: &Path| fs::read(d).unwrap()[1 << 20..2 << 20].to_vec();
    assert!(core(&a) == core(&b), "core.img differs");
}

#[test]
fn mbr_on_another_group_or_a_small_disk_is_refused() {
    let _disks = crate::common::host_disks(module_path!());
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout(tmp.path());
    let node = tmp.path().join("node.toml");
    let d = |n: &str| tmp.path().join(n).display().to_string();
    fs::write(
        &node,
        format!(
            "image = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"{}\"\n\
             size = 512\n[[groups]]\nlabel = \"data\"\nmbr = true\n[[groups.disk]]\n\
             device = \"{}\"\nsize = 512\n",
            layout.display(),
            d("os.img"),
            d("data.img")
        ),
    )
    .unwrap();
    let (ok, out) = run(&["install", node.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(out.contains("group \"data\": mbr = true"), "{out}");
    assert!(
        !tmp.path().join("os.img").exists(),
        "nothing is written first"
    );

    fs::write(
        &node,
        format!(
            "image = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\nmbr = true\n[[groups.disk]]\n\
             device = \"{}\"\nsize = 200\n",
            layout.display(),
            d("small.img")
        ),
    )
    .unwrap();
    let (ok, out) = run(&["install", node.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(out.contains("too small for mbr = true"), "{out}");
}

#[test]
fn a_killed_esp_sync_leaves_a_bootable_esp_and_the_next_command_completes_it() {
    let _disks = crate::common::host_disks_alone(module_path!());
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout(tmp.path());
    let template = install(tmp.path(), &layout, "template.img", KILL_UUID);
    let reference = format!("oci:{}:v2", layout.display());
    let (ok, out) = run(
        &["upgrade", "--disk", template.to_str().unwrap(), &reference],
        &[],
    );
    assert!(ok, "{out}");
    for point in ["esp-slot", "esp-staged", "esp-renamed"] {
        let disk = tmp.path().join(format!("{point}.img"));
        assert!(Command::new("cp")
            .args(["--sparse=always"])
            .arg(&template)
            .arg(&disk)
            .status()
            .unwrap()
            .success());
        let d = disk.to_str().unwrap();
        // Confirming v2 makes it the default: the ESP sync after the store is killed.
        let (ok, out) = run(
            &["bless", "--disk", d, "good"],
            &[("TERRA_CRASH_AT", point)],
        );
        assert!(!ok, "{point}: terra was not killed:\n{out}");
        // Its cleanup never ran: unmount and detach what it left.
        power_cut(&disk);
        let (slot, cfg) = live_slot(&disk);
        let expect_new = point == "esp-renamed";
        assert_eq!(
            cfg.contains("# version=v2"),
            expect_new,
            "{point}: the ESP boots\n{cfg}"
        );
        assert_eq!(slot, if expect_new { "b" } else { "a" }, "{point}");

        // Any terra command on the disk finishes the sync.
        let (ok, out) = run(&["versions", "--disk", d], &[]);
        assert!(ok, "{point}: {out}");
        let (slot, cfg) = live_slot(&disk);
        assert_eq!(slot, "b", "{point}");
        assert!(cfg.contains("# version=v2"), "{point}: {cfg}");
        assert!(esp_file(&disk, "terra/grub.cfg.new").is_none(), "{point}");
        let entry = String::from_utf8(esp_file(&disk, "terra/entry").unwrap()).unwrap();
        assert!(entry.starts_with("version=v2\n"), "{point}: {entry}");
        // And the old default's slot is still whole, for the next change.
        assert!(esp_file(&disk, "terra/a/vmlinuz").is_some());
        fs::remove_file(&disk).unwrap();
    }
    // Rollback follows too: back to os, into slot a.
    let d = template.to_str().unwrap();
    let (ok, out) = run(&["bless", "--disk", d, "good"], &[]);
    assert!(ok && out.contains("the ESP boots v2 now"), "{out}");
    let (ok, out) = run(&["rollback", "--disk", d], &[]);
    assert!(ok && out.contains("the ESP boots os now"), "{out}");
    let (slot, cfg) = live_slot(&template);
    assert_eq!(slot, "a");
    assert!(cfg.contains("# version=os"), "{cfg}");
}

#[test]
fn a_raid1_group_boots_from_its_first_disk_and_its_versions_open_from_both() {
    let _disks = crate::common::host_disks(module_path!());
    let tmp = tempfile::tempdir().unwrap();
    let layout = layout(tmp.path());
    let node = tmp.path().join("node.toml");
    let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
    fs::write(
        &node,
        format!(
            "image = \"oci:{}:v1\"\n[[groups]]\nlabel = \"os\"\ntype = \"raid1\"\nmbr = true\n\
             [[groups.disk]]\ndevice = \"{}\"\nsize = 512\n[[groups.disk]]\ndevice = \"{}\"\n\
             size = 512\n",
            layout.display(),
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let kernel = host_kernel();
    let (ok, out) = run(
        &[
            "install",
            node.to_str().unwrap(),
            "--uuid",
            RAID_UUID,
            "--kernel",
            kernel.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert_eq!(
        partition_table(&a)["partitions"].as_array().unwrap().len(),
        3
    );
    // The second disk is a whole-disk btrfs member.
    let probe = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "btrfs");
    let (_, cfg) = live_slot(&a);
    assert!(cfg.contains(&format!("root=UUID={RAID_UUID}")), "{cfg}");
    let (ok, out) = run(
        &[
            "versions",
            "--disk",
            a.to_str().unwrap(),
            "--disk",
            b.to_str().unwrap(),
        ],
        &[],
    );
    // Both members open the group: its one version is listed as the default.
    assert!(
        ok && out
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["os", "default"])),
        "{out}"
    );
}
