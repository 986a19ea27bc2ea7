//! The prober against images made by the real tools, with blkid and partx as the
//! reference readers, and against hostile bytes.

use super::gpt::crc32;
use super::*;
use proptest::prelude::*;
use std::io::Cursor;
use std::os::unix::fs::{symlink, FileExt};
use std::process::Command;
use tempfile::TempDir;

// -- the real tools, and blkid/partx as the reference readers --------------------------

/// A tool that makes or reads the test images. A missing one is a broken test bed, not
/// a reason to skip.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: the probe tests need btrfs-progs, e2fsprogs, dosfstools, \
                 xorriso, squashfs-tools, systemd (systemd-repart) and util-linux (blkid, partx)"
            )
        })
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(tool(cmd))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// What `blkid -p` (low-level superblock probing, no cache, no root needed) says.
fn blkid(path: &Path, tag: &str) -> Option<String> {
    let out = Command::new(tool("blkid"))
        .args(["-p", "-o", "value", "-s", tag])
        .arg(path)
        .output()
        .expect("blkid runs");
    let v = String::from_utf8_lossy(&out.stdout);
    let v = v.trim_end_matches('\n');
    (!v.is_empty()).then(|| v.to_string())
}

/// `partx --show` of a disk image: (number, PARTUUID, PARTLABEL) per partition.
fn partx(img: &Path) -> Vec<(u32, String, Option<String>)> {
    run("partx", &["--show", "-g", "-o", "NR,UUID,NAME", s(img)])
        .lines()
        .map(|line| {
            let line = line.trim_start();
            let (nr, rest) = line.split_once(' ').expect("NR column");
            let rest = rest.trim_start();
            let (uuid, name) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = Some(name.trim_end().to_string()).filter(|n| !n.is_empty());
            (nr.parse().expect("NR"), uuid.to_string(), name)
        })
        .collect()
}

fn sized(dir: &TempDir, name: &str, size: u64) -> PathBuf {
    let p = dir.path().join(name);
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn patch(path: &Path, off: u64, data: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, off).unwrap();
}

fn probe(path: &Path) -> Identity {
    probe_fs(&mut File::open(path).unwrap()).unwrap()
}

fn part(path: &Path, partno: u32, ss: u64) -> Option<Identity> {
    partition_identity(&mut File::open(path).unwrap(), partno, ss).unwrap()
}

/// Our LABEL and UUID are blkid's, byte for byte.
fn assert_blkid_agrees(path: &Path, id: &Identity) {
    assert_eq!(
        id.label,
        blkid(path, "LABEL"),
        "LABEL of {}",
        path.display()
    );
    assert_eq!(id.uuid, blkid(path, "UUID"), "UUID of {}", path.display());
}

// -- filesystems ------------------------------------------------------------------------

#[test]
fn btrfs_label_and_fsid() {
    let dir = TempDir::new().unwrap();
    let img = sized(&dir, "btrfs.img", 120 << 20);
    let uuid = "6f1c1d3e-8a2b-4c5d-9e0f-a1b2c3d4e5f6";
    run(
        "mkfs.btrfs",
        &["-q", "-f", "-L", "terra os", "-U", uuid, s(&img)],
    );
    let id = probe(&img);
    assert_eq!(id.fstype, Some(FsType::Btrfs));
    assert_eq!(id.label.as_deref(), Some("terra os"));
    assert_eq!(id.uuid.as_deref(), Some(uuid));
    assert_eq!((id.partuuid, id.partlabel), (None, None));
    assert_eq!(id.devices, Some(1));
    assert_eq!(blkid(&img, "TYPE").as_deref(), Some("btrfs"));
    assert_blkid_agrees(&img, &probe(&img));
}

#[test]
fn btrfs_raid1_members_share_the_fsid_and_count() {
    let dir = TempDir::new().unwrap();
    let a = sized(&dir, "a.img", 128 << 20);
    let b = sized(&dir, "b.img", 128 << 20);
    let uuid = "6f1c1d3e-8a2b-4c5d-9e0f-a1b2c3d4e5f7";
    run(
        "mkfs.btrfs",
        &[
            "-q",
            "-f",
            "-L",
            "pair",
            "-U",
            uuid,
            "-d",
            "raid1",
            "-m",
            "raid1",
            s(&a),
            s(&b),
        ],
    );
    for img in [&a, &b] {
        let id = probe(img);
        assert_eq!(id.uuid.as_deref(), Some(uuid));
        assert_eq!(id.devices, Some(2));
    }
}

#[test]
fn ext2_ext3_ext4_all_mount_as_ext4() {
    let dir = TempDir::new().unwrap();
    for (mkfs, label, uuid) in [
        (
            "mkfs.ext4",
            Some("rootfs"),
            "11111111-2222-3333-4444-555555555555",
        ),
        ("mkfs.ext3", None, "0a0b0c0d-0e0f-4a4b-8c8d-8e8f90919293"),
        (
            "mkfs.ext2",
            Some("sixteen-chars-xx"),
            "ffffffff-ffff-4fff-bfff-ffffffffffff",
        ),
    ] {
        let img = sized(&dir, &format!("{mkfs}.img"), 8 << 20);
        let mut args = vec!["-q", "-F", "-U", uuid];
        if let Some(l) = label {
            args.extend(["-L", l]);
        }
        args.push(s(&img));
        run(mkfs, &args);
        let id = probe(&img);
        assert_eq!(id.fstype, Some(FsType::Ext4), "{mkfs}");
        assert_eq!(id.fstype.map(|t| t.as_str()), Some("ext4"));
        assert_eq!(id.label.as_deref(), label, "{mkfs}");
        assert_eq!(id.uuid.as_deref(), Some(uuid), "{mkfs}");
        assert_eq!(blkid(&img, "TYPE").as_deref(), mkfs.strip_prefix("mkfs."));
        assert_blkid_agrees(&img, &id);
    }
}

#[test]
fn ext_external_journal_is_not_a_filesystem() {
    let dir = TempDir::new().unwrap();
    let img = sized(&dir, "journal.img", 8 << 20);
    run(
        "mkfs.ext4",
        &["-q", "-F", "-O", "journal_dev", "-L", "jrnl", s(&img)],
    );
    assert_eq!(blkid(&img, "TYPE").as_deref(), Some("jbd"));
    assert_eq!(probe(&img), Identity::default());
}

#[test]
fn fat32_fat16_fat12() {
    let dir = TempDir::new().unwrap();
    for (bits, size, label) in [
        ("32", 64 << 20, Some("TERRA-ESP")),
        ("16", 16 << 20, Some("LBL16")),
        ("12", 2 << 20, None),
    ] {
        let img = sized(&dir, &format!("fat{bits}.img"), size);
        let mut args = vec!["-F", bits, "-i", "1234ABCD"];
        if let Some(l) = label {
            args.extend(["-n", l]);
        }
        args.push(s(&img));
        run("mkfs.vfat", &args);
        let id = probe(&img);
        assert_eq!(id.fstype, Some(FsType::Vfat), "FAT{bits}");
        assert_eq!(id.label.as_deref(), label, "FAT{bits}");
        assert_eq!(id.uuid.as_deref(), Some("1234-ABCD"), "FAT{bits}");
        assert_eq!(blkid(&img, "TYPE").as_deref(), Some("vfat"));
        assert_eq!(blkid(&img, "VERSION"), Some(format!("FAT{bits}")));
        assert_blkid_agrees(&img, &id);
    }
}

#[test]
fn fat_label_from_root_directory_then_boot_sector() {
    let dir = TempDir::new().unwrap();
    // Relabelled in the root directory only: the root directory is right (as in blkid).
    let img = sized(&dir, "fat32.img", 64 << 20);
    run("mkfs.vfat", &["-F", "32", "-n", "ROOTDIR", s(&img)]);
    patch(&img, 0x47, b"BOOTSECT   ");
    assert_eq!(probe(&img).label.as_deref(), Some("ROOTDIR"));
    assert_eq!(blkid(&img, "LABEL").as_deref(), Some("ROOTDIR"));
    assert_eq!(blkid(&img, "LABEL_FATBOOT").as_deref(), Some("BOOTSECT"));
    // A label in the boot sector only: we fall back to it, blkid reports it only as
    // LABEL_FATBOOT (no LABEL).
    let img = sized(&dir, "fat16.img", 16 << 20);
    run("mkfs.vfat", &["-F", "16", s(&img)]);
    assert_eq!(probe(&img).label, None);
    patch(&img, 0x2B, b"BOOTONLY   ");
    assert_eq!(probe(&img).label.as_deref(), Some("BOOTONLY"));
    assert_eq!(blkid(&img, "LABEL"), None);
    assert_eq!(blkid(&img, "LABEL_FATBOOT").as_deref(), Some("BOOTONLY"));
}

fn iso(dir: &TempDir, name: &str, args: &[&str]) -> PathBuf {
    let content = dir.path().join(format!("{name}.d"));
    fs::create_dir_all(&content).unwrap();
    fs::write(content.join("hello"), "hi\n").unwrap();
    let out = dir.path().join(name);
    let mut all = vec!["-as", "mkisofs", "-quiet", "-o", s(&out)];
    all.extend(args);
    all.push(s(&content));
    run("xorriso", &all);
    out
}

#[test]
fn iso9660_label_and_date_uuid() {
    let dir = TempDir::new().unwrap();
    let img = iso(
        &dir,
        "fixed.iso",
        &["-V", "TERRA_LIVE", "--modification-date=2024010203040506"],
    );
    let id = probe(&img);
    assert_eq!(id.fstype, Some(FsType::Iso9660));
    assert_eq!(id.label.as_deref(), Some("TERRA_LIVE"));
    assert_eq!(id.uuid.as_deref(), Some("2024-01-02-03-04-05-06"));
    assert_eq!(blkid(&img, "TYPE").as_deref(), Some("iso9660"));
    assert_blkid_agrees(&img, &id);

    // the date of the run, in the same shape
    let img = iso(&dir, "now.iso", &["-V", "VOLID"]);
    let id = probe(&img);
    let uuid = id.uuid.clone().expect("a date");
    assert_eq!(uuid.len(), 22);
    for (i, c) in uuid.chars().enumerate() {
        assert_eq!(c == '-', [4, 7, 10, 13, 16, 19].contains(&i), "{uuid}");
    }
    assert_blkid_agrees(&img, &id);
}

#[test]
fn iso9660_uuid_prefers_the_modification_date() {
    let dir = TempDir::new().unwrap();
    let img = iso(
        &dir,
        "dates.iso",
        &["-V", "D", "--modification-date=2024010203040506"],
    );
    // creation date (PVD +813) differs: the modification date (+830) still wins
    patch(&img, 0x8000 + 813, b"2011121314151617");
    assert_eq!(probe(&img).uuid.as_deref(), Some("2024-01-02-03-04-05-06"));
    assert_blkid_agrees(&img, &probe(&img));
    // modification date unset (all '0', zero offset): the creation date
    let mut unset = [b'0'; 17];
    unset[16] = 0;
    patch(&img, 0x8000 + 830, &unset);
    assert_eq!(probe(&img).uuid.as_deref(), Some("2011-12-13-14-15-16-17"));
    assert_blkid_agrees(&img, &probe(&img));
}

#[test]
fn iso9660_joliet_labels_as_blkid_merges_them() {
    let dir = TempDir::new().unwrap();
    for (i, label) in ["Terra Live 2024 mixedCase", "Ünïcødé label", "lower"]
        .into_iter()
        .enumerate()
    {
        let img = iso(&dir, &format!("j{i}.iso"), &["-J", "-V", label]);
        let id = probe(&img);
        assert_eq!(id.label.as_deref(), Some(label));
        assert_eq!(blkid(&img, "VERSION").as_deref(), Some("Joliet Extension"));
        assert_blkid_agrees(&img, &id);
    }
}

#[test]
fn squashfs_type_only() {
    let dir = TempDir::new().unwrap();
    let content = dir.path().join("content");
    fs::create_dir(&content).unwrap();
    fs::write(content.join("f"), "x").unwrap();
    let img = dir.path().join("out.sqfs");
    run(
        "mksquashfs",
        &[s(&content), s(&img), "-quiet", "-no-progress", "-noappend"],
    );
    let id = probe(&img);
    assert_eq!(
        id,
        Identity {
            fstype: Some(FsType::Squashfs),
            ..Identity::default()
        }
    );
    assert_eq!(blkid(&img, "TYPE").as_deref(), Some("squashfs"));
    assert_blkid_agrees(&img, &id);
}

#[test]
fn nothing_recognized_is_not_an_error() {
    for len in [0, 1, 511, 512, 1100, 4096, 0x8801, 70_000] {
        let mut zeros = Cursor::new(vec![0u8; len]);
        assert_eq!(probe_fs(&mut zeros).unwrap(), Identity::default(), "{len}");
        assert_eq!(partition_identity(&mut zeros, 1, 512).unwrap(), None);
        assert_eq!(partition_identity(&mut zeros, 1, 4096).unwrap(), None);
    }
    let err = partition_identity(&mut Cursor::new(Vec::new()), 1, 1000).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(FsType::Iso9660.to_string(), "iso9660");
}

// -- partition tables ---------------------------------------------------------------------

/// A GPT disk image from systemd-repart, one partition per (label, uuid, contents).
fn repart(dir: &TempDir, name: &str, parts: &[(&str, &str, Option<&Path>)]) -> PathBuf {
    let defs = dir.path().join(format!("{name}.repart.d"));
    fs::create_dir_all(&defs).unwrap();
    for (i, (label, uuid, copy)) in parts.iter().enumerate() {
        let mut conf = format!("[Partition]\nType=linux-generic\nLabel={label}\nUUID={uuid}\n");
        match copy {
            Some(src) => conf.push_str(&format!("CopyBlocks={}\n", s(src))),
            None => conf.push_str("SizeMinBytes=2M\nSizeMaxBytes=2M\n"),
        }
        fs::write(defs.join(format!("{i:02}.conf")), conf).unwrap();
    }
    let img = dir.path().join(name);
    run(
        "systemd-repart",
        &[
            "--empty=create",
            "--size=12M",
            "--dry-run=no",
            "--seed=c0ffee00-1111-2222-3333-444455556666",
            &format!("--definitions={}", s(&defs)),
            s(&img),
        ],
    );
    img
}

const UUID_A: &str = "11111111-2222-4333-8444-555555555555";
const UUID_B: &str = "a1b2c3d4-e5f6-4789-8abc-def012345678";

#[test]
fn gpt_entries_match_partx() {
    let dir = TempDir::new().unwrap();
    let img = repart(
        &dir,
        "gpt.img",
        &[("root", UUID_A, None), ("dätä €x", UUID_B, None)],
    );
    let table = partx(&img);
    assert_eq!(
        table,
        [
            (1, UUID_A.to_string(), Some("root".to_string())),
            (2, UUID_B.to_string(), Some("dätä €x".to_string()))
        ]
    );
    for (nr, uuid, name) in table {
        let id = part(&img, nr, 512).expect("an entry");
        assert_eq!(id.partuuid, Some(uuid));
        assert_eq!(id.partlabel, name);
        assert_eq!((id.fstype, id.label, id.uuid), (None, None, None));
    }
    for nr in [0, 3, 128, 129, u32::MAX] {
        assert_eq!(part(&img, nr, 512), None, "{nr}");
    }
    // the same bytes read as a 4K-sector disk have no table where one would be
    assert_eq!(part(&img, 1, 4096), None);
}

#[test]
fn gpt_backup_header_stands_in_for_a_damaged_primary() {
    let dir = TempDir::new().unwrap();
    let img = repart(&dir, "gpt.img", &[("root", UUID_A, None)]);
    let want = part(&img, 1, 512);
    assert!(want.is_some());
    // one byte of the primary header's disk GUID: its CRC no longer holds
    patch(&img, 512 + 0x38, &[0xFF]);
    assert_eq!(part(&img, 1, 512), want);
    assert_eq!(partx(&img).len(), 1, "libblkid also falls back");
    // and with the backup (the last LBA) damaged too, there is no table
    let len = fs::metadata(&img).unwrap().len();
    patch(&img, len - 512, b"NOT PART");
    assert_eq!(part(&img, 1, 512), None);
}

/// The UEFI mixed-endian bytes of a textual GUID.
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&text.replace('-', "")[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    order.map(|i| hex[i])
}

/// A GPT header (UEFI §5.3.2) with a correct HeaderCRC32.
fn gpt_header(my: u64, alt: u64, entries_lba: u64, count: u32, size: u32, crc: u32) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[0x18..0x20].copy_from_slice(&my.to_le_bytes());
    h[0x20..0x28].copy_from_slice(&alt.to_le_bytes());
    h[0x38..0x48].copy_from_slice(&guid_bytes("c0ffee00-1111-2222-3333-444455556666"));
    h[0x48..0x50].copy_from_slice(&entries_lba.to_le_bytes());
    h[0x50..0x54].copy_from_slice(&count.to_le_bytes());
    h[0x54..0x58].copy_from_slice(&size.to_le_bytes());
    h[0x58..0x5C].copy_from_slice(&crc.to_le_bytes());
    let c = crc32(&h);
    h[0x10..0x14].copy_from_slice(&c.to_le_bytes());
    h
}

/// A GPT disk as the spec lays it out, for sector sizes no tool here writes:
/// (partition number, unique GUID, name) per used entry, 128 entries of 128 bytes.
fn synth_gpt(ss: usize, sectors: usize, parts: &[(usize, &str, &str)]) -> Vec<u8> {
    let linux = guid_bytes("0fc63daf-8483-4772-8e79-3d69d8477de4");
    let mut entries = vec![0u8; 128 * 128];
    for (nr, uuid, name) in parts {
        let e = &mut entries[(nr - 1) * 128..*nr * 128];
        e[0..16].copy_from_slice(&linux);
        e[16..32].copy_from_slice(&guid_bytes(uuid));
        for (i, u) in name.encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }
    let crc = crc32(&entries);
    let array_sectors = entries.len().div_ceil(ss);
    let last = sectors - 1;
    let mut disk = vec![0u8; ss * sectors];
    // protective MBR: one 0xEE entry over the disk
    disk[446 + 4] = 0xEE;
    disk[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    disk[446 + 12..446 + 16].copy_from_slice(&(last as u32).to_le_bytes());
    disk[510..512].copy_from_slice(&[0x55, 0xAA]);
    let primary = gpt_header(1, last as u64, 2, 128, 128, crc);
    disk[ss..ss + 92].copy_from_slice(&primary);
    disk[2 * ss..2 * ss + entries.len()].copy_from_slice(&entries);
    let backup_entries = last - array_sectors;
    let backup = gpt_header(last as u64, 1, backup_entries as u64, 128, 128, crc);
    disk[last * ss..last * ss + 92].copy_from_slice(&backup);
    disk[backup_entries * ss..backup_entries * ss + entries.len()].copy_from_slice(&entries);
    disk
}

#[test]
fn synthetic_gpt_agrees_with_partx_at_512_and_reads_at_4096() {
    let dir = TempDir::new().unwrap();
    let parts = [(1, UUID_A, "esp 🦀"), (3, UUID_B, "")];
    // first, the builder is checked against a real reader
    let img = dir.path().join("synth512.img");
    fs::write(&img, synth_gpt(512, 4096, &parts)).unwrap();
    assert_eq!(
        partx(&img),
        [
            (1, UUID_A.to_string(), Some("esp 🦀".to_string())),
            (3, UUID_B.to_string(), None)
        ]
    );
    // then at 4 KiB sectors, where the header is at byte 4096
    let mut disk = Cursor::new(synth_gpt(4096, 512, &parts));
    let one = partition_identity(&mut disk, 1, 4096).unwrap().unwrap();
    assert_eq!(one.partuuid.as_deref(), Some(UUID_A));
    assert_eq!(one.partlabel.as_deref(), Some("esp 🦀"));
    assert_eq!(
        partition_identity(&mut disk, 2, 4096).unwrap(),
        None,
        "unused entry"
    );
    let three = partition_identity(&mut disk, 3, 4096).unwrap().unwrap();
    assert_eq!(three.partuuid.as_deref(), Some(UUID_B));
    assert_eq!(three.partlabel, None);
    assert_eq!(partition_identity(&mut disk, 1, 512).unwrap(), None);
}

#[test]
fn gpt_hostile_sizes_are_refused() {
    for (count, size) in [(1_000_000, 128), (128, 1 << 20), (128, 64), (0, 128)] {
        let mut disk = synth_gpt(512, 4096, &[(1, UUID_A, "x")]);
        // both headers claim the hostile array (with CRCs that hold)
        let crc = crc32(&disk[1024..1024 + 128 * 128]);
        disk[512..604].copy_from_slice(&gpt_header(1, 4095, 2, count, size, crc));
        let last = 4095 * 512;
        disk[last..last + 92].copy_from_slice(&gpt_header(4095, 1, 4063, count, size, crc));
        assert_eq!(
            partition_identity(&mut Cursor::new(disk), 1, 512).unwrap(),
            None,
            "{count} × {size}"
        );
    }
}

/// An MBR disk of 16384 sectors: primaries 1 (Linux), 2 (extended, two logicals in an
/// EBR chain), 4 (Linux); slot 3 empty.
fn synth_mbr(signature: u32) -> Vec<u8> {
    fn entry(sector: &mut [u8], slot: usize, kind: u8, start: u32, len: u32) {
        let e = &mut sector[446 + 16 * slot..446 + 16 * slot + 16];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&len.to_le_bytes());
    }
    let mut disk = vec![0u8; 16384 * 512];
    for sector in [0, 4096, 6144] {
        disk[sector * 512 + 510..sector * 512 + 512].copy_from_slice(&[0x55, 0xAA]);
    }
    disk[440..444].copy_from_slice(&signature.to_le_bytes());
    entry(&mut disk[..512], 0, 0x83, 2048, 2048);
    entry(&mut disk[..512], 1, 0x05, 4096, 8192);
    entry(&mut disk[..512], 3, 0x83, 12288, 2048);
    // EBRs: the logical partition relative to its EBR, the link relative to the
    // extended partition
    entry(&mut disk[4096 * 512..4097 * 512], 0, 0x83, 1, 1000);
    entry(&mut disk[4096 * 512..4097 * 512], 1, 0x05, 2048, 2048);
    entry(&mut disk[6144 * 512..6145 * 512], 0, 0x83, 1, 1000);
    disk
}

#[test]
fn mbr_primary_and_logical_numbers_match_partx() {
    let dir = TempDir::new().unwrap();
    let img = dir.path().join("mbr.img");
    fs::write(&img, synth_mbr(0xDEAD_BEEF)).unwrap();
    let table = partx(&img);
    let numbers: Vec<u32> = table.iter().map(|p| p.0).collect();
    assert_eq!(numbers, [1, 2, 4, 5, 6]);
    for (nr, uuid, name) in table {
        let id = part(&img, nr, 512).expect("an entry");
        assert_eq!(id.partuuid, Some(uuid), "{nr}");
        assert_eq!(id.partlabel, name);
    }
    assert_eq!(
        part(&img, 5, 512).unwrap().partuuid.as_deref(),
        Some("deadbeef-05")
    );
    for nr in [3, 7, 255] {
        assert_eq!(part(&img, nr, 512), None, "{nr}");
    }
    // no disk signature: the entry exists, blkid gives it no PARTUUID
    let id = partition_identity(&mut Cursor::new(synth_mbr(0)), 1, 512).unwrap();
    assert_eq!(id, Some(Identity::default()));
}

#[test]
fn mbr_ebr_loop_ends() {
    let mut disk = synth_mbr(1);
    // the second EBR links back to the first
    disk[6144 * 512 + 446 + 16 + 4] = 0x05;
    disk[6144 * 512 + 446 + 16 + 12..6144 * 512 + 446 + 16 + 16]
        .copy_from_slice(&1u32.to_le_bytes());
    let mut disk = Cursor::new(disk);
    // one logical partition per trip round the loop, until the cap of 256 EBRs
    assert!(partition_identity(&mut disk, 200, 512).unwrap().is_some());
    assert_eq!(partition_identity(&mut disk, 300, 512).unwrap(), None);
}

// -- identify() over a /dev + /sys/class/block look-alike ---------------------------------

#[test]
fn identify_follows_sysfs_to_the_parent_table() {
    let dir = TempDir::new().unwrap();
    let fs_img = sized(&dir, "root.ext4", 4 << 20);
    let fs_uuid = "0a0b0c0d-0e0f-4a4b-8c8d-8e8f90919293";
    run(
        "mkfs.ext4",
        &["-q", "-F", "-L", "rootfs", "-U", fs_uuid, s(&fs_img)],
    );
    let disk = repart(&dir, "disk.img", &[("root", UUID_A, Some(&fs_img))]);

    let dev = dir.path().join("dev");
    fs::create_dir(&dev).unwrap();
    fs::copy(&disk, dev.join("vda")).unwrap();
    // vda1 holds the partition's bytes, where partx says they are
    let geometry = run("partx", &["--show", "-g", "-o", "START,SECTORS", s(&disk)]);
    let nums: Vec<u64> = geometry
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let mut bytes = vec![0u8; (nums[1] * 512) as usize];
    File::open(&disk)
        .unwrap()
        .read_exact_at(&mut bytes, nums[0] * 512)
        .unwrap();
    fs::write(dev.join("vda1"), bytes).unwrap();
    // a 4K-sector disk whose partition 3 has no filesystem
    fs::write(
        dev.join("sdb"),
        synth_gpt(4096, 512, &[(3, UUID_B, "data")]),
    )
    .unwrap();
    fs::write(dev.join("sdb3"), vec![0u8; 8192]).unwrap();

    let devices = dir.path().join("sys/devices/pci0000:00/virtio0/block");
    for (disk, parts, lbs) in [("vda", ["vda1"], "512\n"), ("sdb", ["sdb3"], "4096\n")] {
        fs::create_dir_all(devices.join(disk).join("queue")).unwrap();
        fs::write(devices.join(disk).join("queue/logical_block_size"), lbs).unwrap();
        for p in parts {
            fs::create_dir_all(devices.join(disk).join(p)).unwrap();
            let nr = p.trim_start_matches(disk);
            fs::write(
                devices.join(disk).join(p).join("partition"),
                format!("{nr}\n"),
            )
            .unwrap();
        }
    }
    let class = dir.path().join("sys/class/block");
    fs::create_dir_all(&class).unwrap();
    let target = "../../devices/pci0000:00/virtio0/block";
    for (name, rel) in [
        ("vda", "vda"),
        ("vda1", "vda/vda1"),
        ("sdb", "sdb"),
        ("sdb3", "sdb/sdb3"),
    ] {
        symlink(format!("{target}/{rel}"), class.join(name)).unwrap();
    }

    assert_eq!(
        identify("vda1", &dev, &class).unwrap(),
        Identity {
            fstype: Some(FsType::Ext4),
            label: Some("rootfs".into()),
            uuid: Some(fs_uuid.into()),
            partuuid: Some(UUID_A.into()),
            partlabel: Some("root".into()),
            devices: None,
        }
    );
    // the whole disk: no filesystem, no partition entry
    assert_eq!(identify("vda", &dev, &class).unwrap(), Identity::default());
    assert_eq!(
        identify("sdb3", &dev, &class).unwrap(),
        Identity {
            partuuid: Some(UUID_B.into()),
            partlabel: Some("data".into()),
            ..Identity::default()
        }
    );

    // errors name the device
    let err = identify("vdz", &dev, &class).unwrap_err();
    assert!(matches!(&err, ProbeError::Open { path, .. } if path == &dev.join("vdz")));
    assert!(err.to_string().contains(s(&dev.join("vdz"))), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    fs::remove_file(dev.join("vda")).unwrap();
    let err = identify("vda1", &dev, &class).unwrap_err();
    assert!(matches!(&err, ProbeError::Open { path, .. } if path == &dev.join("vda")));
}

// -- no input makes the probe panic -------------------------------------------------------

/// Writes `b` at `off` when it fits.
fn put(data: &mut [u8], off: usize, b: &[u8]) {
    if let Some(dst) = data.get_mut(off..off + b.len()) {
        dst.copy_from_slice(b);
    }
}

/// Plants one format's magic (and enough of its header to get past the first checks)
/// in random bytes, so the deeper parsing meets hostile values.
fn stamp(data: &mut [u8], kind: u8, f: [u32; 8]) {
    match kind % 6 {
        0 => {
            put(data, 510, &[0x55, 0xAA]);
            put(data, 0x0B, &(512u16 << (f[1] % 4)).to_le_bytes());
            put(data, 0x0D, &[1u8 << (f[2] % 8)]);
            put(data, 0x0E, &((f[3] as u16) | 1).to_le_bytes());
            put(data, 0x10, &[(f[4] as u8) | 1]);
            put(data, 0x15, &[0xF8]);
            if f[0] & 1 == 0 {
                put(data, 0x52, b"FAT32   ");
                put(data, 0x16, &[0, 0]);
                put(data, 0x24, &(f[5] | 1).to_le_bytes());
                put(data, 0x2C, &(f[6] % 64).to_le_bytes());
            } else {
                put(data, 0x36, b"FAT16   ");
                put(data, 0x16, &((f[5] as u16) | 1).to_le_bytes());
            }
        }
        1 => put(data, 0x10040, b"_BHRfS_M"),
        2 => put(data, 1024 + 0x38, &[0x53, 0xEF]),
        3 => {
            for i in 0..(f[0] % 17) as usize {
                let vd = 0x8000 + i * 0x800;
                put(data, vd, &[(f[1] >> (i % 4)) as u8 % 3]);
                put(data, vd + 1, b"CD001");
                put(data, vd + 88, b"%/E");
            }
        }
        4 => {
            let ss = if f[0] & 1 == 0 { 512 } else { 4096 };
            put(data, 446 + 4, &[0xEE]);
            put(data, 510, &[0x55, 0xAA]);
            let entries_lba = u64::from(f[1] % 64);
            let count = f[2] % 1100;
            let size = 128 << (f[3] % 4);
            let start = entries_lba as usize * ss;
            let crc = data
                .get(start..start + count as usize * size as usize)
                .map_or(f[4], crc32);
            let h = gpt_header(1, u64::from(f[5]), entries_lba, count, size, crc);
            put(data, ss, &h);
        }
        _ => {
            put(data, 510, &[0x55, 0xAA]);
            for slot in 0..4 {
                let e = 446 + 16 * slot;
                put(data, e, &[0]);
                put(
                    data,
                    e + 4,
                    &[[0x05, 0x0F, 0x83, 0x85][(f[slot] % 4) as usize]],
                );
                put(data, e + 8, &(f[slot + 4] % 400).to_le_bytes());
            }
        }
    }
}

/// `len` pseudo-random bytes from `seed` (xorshift64*): as arbitrary as generated
/// bytes for the parser, far cheaper than a 200 KB vector strategy in a debug build.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn probe_everything(data: &[u8], partno: u32) {
    let _ = probe_fs(&mut Cursor::new(data));
    for ss in [512, 4096] {
        let _ = partition_identity(&mut Cursor::new(data), partno, ss);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..200_000),
        partno in 0u32..300,
    ) {
        probe_everything(&data, partno);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn short_arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        partno in 0u32..10,
    ) {
        probe_everything(&data, partno);
    }

    #[test]
    fn planted_magics_never_panic(
        len in 0usize..200_000,
        seed in any::<u64>(),
        kind in any::<u8>(),
        fields in any::<[u32; 8]>(),
        partno in 0u32..300,
    ) {
        let mut data = noise(len, seed);
        stamp(&mut data, kind, fields);
        probe_everything(&data, partno);
    }
}

// -- what a device holds, before a volume may format it ------------------------------------

/// [`contents::classify`] of an image file, reading its two ends as stage0 does.
fn holds(path: &Path) -> contents::Contents {
    let mut f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let head = read_at(&mut f, 0, contents::SPAN).unwrap();
    let tail = read_at(
        &mut f,
        size.saturating_sub(contents::SPAN as u64),
        contents::SPAN,
    )
    .unwrap();
    contents::classify(&head, &tail, size)
}

/// Each format made by its own tool (mkfs.xfs, mkswap, cryptsetup, make-bcache, pvcreate,
/// mkfs.btrfs/ext4/vfat, systemd-repart) is named as `blkid -p` names it (TYPE, or PTTYPE
/// for a partition table); md-raid and ZFS have no tool here (no md driver, no ZFS in
/// Debian main) and are unit-tested on their magic; a blank image is blank, and one byte anywhere in its first or last
/// MiB makes it data.
#[test]
fn what_a_device_holds_agrees_with_blkid() {
    let dir = TempDir::new().unwrap();
    let mk = |name: &str, mb: u64| sized(&dir, name, mb << 20);
    let mut cases: Vec<PathBuf> = Vec::new();
    let xfs = mk("xfs.img", 320);
    run("mkfs.xfs", &["-q", "-f", s(&xfs)]);
    cases.push(xfs);
    let swap = mk("swap.img", 64);
    run("mkswap", &[s(&swap)]);
    cases.push(swap);
    for v in ["luks1", "luks2"] {
        let img = mk(&format!("{v}.img"), 64);
        let out = Command::new(tool("cryptsetup"))
            .args([
                "luksFormat",
                "-q",
                "--type",
                v,
                "--pbkdf-force-iterations",
                "1000",
            ])
            .args(if v == "luks2" {
                &["--pbkdf", "pbkdf2"][..]
            } else {
                &[][..]
            })
            .args([s(&img), "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(b"not a secret")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "cryptsetup luksFormat --type {v}");
        cases.push(img);
    }
    let bcache = mk("bcache.img", 64);
    run("make-bcache", &["-B", s(&bcache)]);
    cases.push(bcache);
    let btrfs = mk("btrfs.img", 128);
    run("mkfs.btrfs", &["-q", s(&btrfs)]);
    cases.push(btrfs);
    let ext4 = mk("ext4.img", 64);
    run("mkfs.ext4", &["-q", s(&ext4)]);
    cases.push(ext4);
    let fat = mk("vfat.img", 64);
    run("mkfs.vfat", &[s(&fat)]);
    cases.push(fat);
    cases.push(repart(&dir, "gpt.img", &[("data", UUID_A, None)]));
    // pvcreate takes block devices only: the image through a loop device, detached again.
    let lvm = mk("lvm.img", 64);
    let dev = run("losetup", &["--find", "--show", s(&lvm)]);
    let dev = dev.trim();
    let made = Command::new(tool("pvcreate")).args(["-q", dev]).output();
    run("losetup", &["-d", dev]);
    assert!(made.unwrap().status.success(), "pvcreate {dev}");
    cases.push(lvm);
    for img in &cases {
        let theirs = blkid(img, "TYPE").or_else(|| blkid(img, "PTTYPE"));
        let ours = holds(img);
        let named = match ours {
            contents::Contents::Known(t) => Some(t.to_string()),
            _ => None,
        };
        assert_eq!(named, theirs, "{}", img.display());
    }
    let blank = mk("blank.img", 64);
    assert_eq!(holds(&blank), contents::Contents::Blank);
    assert_eq!(blkid(&blank, "TYPE"), None);
    patch(&blank, (64 << 20) - 4096, b"left by something");
    assert_eq!(holds(&blank), contents::Contents::Data);
}
