//! Whole images built from the host's real kernel modules (Debian's 6.1 kernel on our
//! machines, ARCHITECTURE.md §6) and from a fake modules directory with compressed modules.

use crate::common;
use common::kver;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use terra_builder::cpio::{read_archive, S_IFMT, S_IFREG};
use terra_builder::initramfs::{build, Compression, InitramfsError, InitramfsSpec};
use terra_builder::kmod::{Kernel, KernelSource, KmodError};
use terra_init::modindex::ModuleIndex;

/// The newest installed kernel of the test bed (scripts/setup-host.sh installs one).
/// Returns an Option only to keep the call sites short: a host without one fails.
fn real_kernel() -> Option<KernelSource> {
    let root = PathBuf::from("/lib/modules");
    Some(KernelSource {
        modules_root: root,
        kver: Some(kver()),
        modules_dir: None,
    })
}

/// A 1 MB stand-in for stage0 with fixed contents.
fn dummy_stage0(dir: &Path) -> PathBuf {
    let path = dir.join("stage0");
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn spec(dir: &Path, kernel: KernelSource, modules: &[&str], out: &str) -> InitramfsSpec {
    let mut s = InitramfsSpec::new(dummy_stage0(dir), dir.join(out));
    s.kernel = kernel;
    s.modules = modules.iter().map(|m| m.to_string()).collect();
    s
}

/// The image's entries: path → (mode, data).
fn unpack(image: &[u8], compression: Compression) -> BTreeMap<String, (u32, Vec<u8>)> {
    let cpio = match compression {
        Compression::Zstd(_) => zstd::stream::decode_all(image).unwrap(),
        Compression::None => image.to_vec(),
        Compression::Gzip(_) => panic!("not used here"),
    };
    read_archive(&cpio)
        .unwrap()
        .into_iter()
        .map(|r| (r.name.to_string(), (r.header.mode, r.data.to_vec())))
        .collect()
}

fn sha256(path: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let Some(kernel) = real_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "hostname = \"terra-01\"\n").unwrap();
    let mut a = spec(tmp.path(), kernel.clone(), &[], "a.img");
    a.modules = terra_builder::initramfs::default_modules();
    a.config = Some(config);
    a.busybox = Some(PathBuf::from("/bin/busybox")).filter(|p| p.exists());
    let mut b = a.clone();
    b.output = tmp.path().join("b.img");
    let ra = build(&a).unwrap();
    let rb = build(&b).unwrap();
    assert_eq!(ra, rb);
    assert_eq!(sha256(&a.output), sha256(&b.output));
    assert_eq!(
        ra.compressed_bytes,
        std::fs::metadata(&a.output).unwrap().len()
    );
    assert!(ra.uncompressed_bytes > ra.compressed_bytes);

    // The time is an input too.
    let mut c = a.clone();
    c.output = tmp.path().join("c.img");
    c.mtime = 1_700_000_000;
    build(&c).unwrap();
    assert_ne!(sha256(&a.output), sha256(&c.output));
}

#[test]
fn layout_matches_what_stage0_reads() {
    let Some(kernel) = real_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(
        tmp.path(),
        kernel,
        &["virtio_blk", "ext4", "virtio-blk"],
        "x.img",
    );
    s.busybox = Some(PathBuf::from("/bin/busybox")).filter(|p| p.exists());
    s.compression = Compression::None;
    s.load = vec!["virtio-blk".into(), "ext4".into(), "virtio_blk".into()];
    let report = build(&s).unwrap();
    let files = unpack(&std::fs::read(&s.output).unwrap(), s.compression);

    use terra_init::layout;
    let (init_mode, init) = &files[layout::INIT];
    assert_eq!(init, &std::fs::read(&s.stage0).unwrap());
    assert_eq!(init_mode & 0o777, 0o755);
    assert_eq!(files["dev/console"].0, 0o020600);
    for d in ["dev", "proc", "sys", "run", "sysroot"] {
        assert_eq!(files[d].0 & S_IFMT, 0o040000, "{d}");
    }
    assert!(String::from_utf8_lossy(&files[layout::INITRD_RELEASE].1)
        .contains("NAME=\"Terra initramfs\""));
    assert!(!files.contains_key(layout::NODE_CONFIG));
    // Requested, deduplicated, and only what there is to load (ext4 is a module here).
    assert_eq!(files[layout::MODULES_LOAD].1, b"virtio_blk\next4\n");
    if s.busybox.is_some() {
        assert_eq!(files[layout::RESCUE_SHELL].1, b"busybox");
        assert_eq!(files["bin/busybox"].0 & 0o777, 0o755);
    }
    // One packed .ko per module of the closure.
    let modules: Vec<&String> = files
        .keys()
        .filter(|k| k.ends_with(".ko") && files[*k].0 & S_IFMT == S_IFREG)
        .collect();
    assert_eq!(modules.len(), report.modules.len());
}

#[test]
fn btrfs_closure_and_written_index_resolve() {
    let Some(kernel) = real_kernel() else { return };
    let k = Kernel::open(&kernel).unwrap();
    let closure = k.closure(&["btrfs".to_string()]).unwrap();
    for m in ["btrfs", "libcrc32c", "raid6_pq", "xor", "crc32c_generic"] {
        assert!(
            closure.iter().any(|c| c == m),
            "{m} missing from {closure:?}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(
        tmp.path(),
        kernel,
        &["btrfs", "virtio_pci", "virtio_blk", "vfat"],
        "x.img",
    );
    s.compression = Compression::None;
    let report = build(&s).unwrap();
    let files = unpack(&std::fs::read(&s.output).unwrap(), s.compression);
    let dir = format!("lib/modules/{}", kver());
    let text = |f: &str| String::from_utf8(files[&format!("{dir}/{f}")].1.clone()).unwrap();
    let dep = text("modules.dep");
    let idx = ModuleIndex::parse(
        &dep,
        &text("modules.alias"),
        &text("modules.builtin"),
        &text("modules.softdep"),
    );

    // Every module the index names is in the image, decompressed, byte for byte.
    for line in dep.lines() {
        let (path, deps) = line.split_once(':').unwrap();
        for p in std::iter::once(path).chain(deps.split_whitespace()) {
            assert!(p.ends_with(".ko"), "{p}");
            assert!(files.contains_key(&format!("{dir}/{p}")), "{p} not packed");
        }
    }
    let btrfs = idx.path("btrfs").unwrap();
    assert_eq!(
        files[&format!("{dir}/{btrfs}")].1,
        std::fs::read(Path::new("/lib/modules").join(kver()).join(btrfs)).unwrap()
    );
    let order = idx.load_order("btrfs").unwrap();
    assert_eq!(order.last().map(String::as_str), Some("btrfs"));
    assert!(order.iter().any(|m| m == "crc32c_generic"), "{order:?}");
    // virtio_pci is reached by modalias, not modules.dep (ARCHITECTURE.md §6).
    assert_eq!(
        idx.resolve("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
        vec!["virtio_pci"]
    );
    assert_eq!(idx.resolve("virtio:d00000002v00001AF4"), vec!["virtio_blk"]);
    assert!(idx
        .resolve("pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00")
        .is_empty());
    let mut names: Vec<String> = idx.names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, report.modules);
    // vfat may be built in or a module; either way stage0 has nothing left to find.
    assert!(idx.is_builtin("vfat") || idx.path("vfat").is_some());
}

#[test]
fn errors_name_what_is_missing() {
    let Some(kernel) = real_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();

    let s = spec(
        tmp.path(),
        kernel.clone(),
        &["virtio_blk", "no_such_mod"],
        "x.img",
    );
    let e = build(&s).unwrap_err();
    assert!(
        matches!(&e, InitramfsError::Kmod(KmodError::UnknownModule { name, .. }) if name == "no_such_mod")
    );
    let msg = e.to_string();
    assert!(
        msg.contains("no_such_mod") && msg.contains(&kver()),
        "{msg}"
    );
    assert!(!s.output.exists());

    let mut s = spec(tmp.path(), kernel.clone(), &["virtio_blk"], "x.img");
    s.kernel.kver = Some("9.9.9-nope".into());
    let msg = build(&s).unwrap_err().to_string();
    assert!(msg.contains("9.9.9-nope") && msg.contains(&kver()), "{msg}");

    let mut s = spec(tmp.path(), kernel.clone(), &["virtio_blk"], "x.img");
    s.stage0 = tmp.path().join("no-stage0");
    let msg = build(&s).unwrap_err().to_string();
    assert!(
        msg.contains(&*tmp.path().join("no-stage0").to_string_lossy()),
        "{msg}"
    );

    let mut s = spec(tmp.path(), kernel.clone(), &["virtio_blk"], "x.img");
    s.config = Some(tmp.path().join("missing.toml"));
    let msg = build(&s).unwrap_err().to_string();
    assert!(msg.contains("missing.toml"), "{msg}");

    // A dynamically linked busybox would not run in the image.
    let dynamic = PathBuf::from("/bin/ls");
    if dynamic.exists() {
        let mut s = spec(tmp.path(), kernel, &["virtio_blk"], "x.img");
        s.busybox = Some(dynamic);
        let e = build(&s).unwrap_err();
        assert!(matches!(e, InitramfsError::NotStatic { .. }), "{e}");
        assert!(e.to_string().contains("/bin/ls"));
    }
}

#[test]
fn unknown_and_default_kernel_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("modules");
    for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-1"] {
        std::fs::create_dir_all(root.join(v)).unwrap();
        std::fs::write(root.join(v).join("modules.dep"), "").unwrap();
    }
    // Leftovers without an index are not kernels.
    std::fs::create_dir_all(root.join("7.0.0-leftover")).unwrap();

    let newest = Kernel::open(&KernelSource {
        modules_root: root.clone(),
        kver: None,
        modules_dir: None,
    })
    .unwrap();
    assert_eq!(newest.kver, "6.1.0-10-amd64");

    let e = Kernel::open(&KernelSource {
        modules_root: root.clone(),
        kver: Some("6.2".into()),
        modules_dir: None,
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("6.2"), "{msg}");
    assert!(
        msg.contains("installed: 5.10.0-1, 6.1.0-9-amd64, 6.1.0-10-amd64"),
        "{msg}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = Kernel::open(&KernelSource {
        modules_root: empty.clone(),
        kver: None,
        modules_dir: None,
    })
    .unwrap_err();
    assert!(matches!(e, KmodError::NoKernels { .. }), "{e}");
    assert!(e.to_string().contains(&*empty.to_string_lossy()));

    let e = Kernel::open(&KernelSource {
        modules_root: empty,
        kver: None,
        modules_dir: Some(root.join("7.0.0-leftover")),
    })
    .unwrap_err();
    assert!(matches!(e, KmodError::NoIndex { .. }), "{e}");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compressed_modules_and_firmware_are_stored_decompressed() {
    let Some(_) = real_kernel() else { return };
    let real = Path::new("/lib/modules").join(kver());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib/modules/9.9.9-fake");
    let copy = |from: &str, to: &str| {
        let dst = dir.join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(real.join(from), &dst).unwrap();
        dst
    };
    // e100 declares three firmware files; r8169 many, none of which we provide.
    let e100 = copy(
        "kernel/drivers/net/ethernet/intel/e100.ko",
        "kernel/net/e100.ko",
    );
    let crc = copy(
        "kernel/crypto/crc32c_generic.ko",
        "kernel/crypto/crc32c_generic.ko",
    );
    let lib = copy("kernel/lib/libcrc32c.ko", "kernel/lib/libcrc32c.ko");
    copy(
        "kernel/drivers/net/ethernet/realtek/r8169.ko",
        "kernel/net/r8169.ko",
    );
    let originals: Vec<Vec<u8>> = [&e100, &crc, &lib]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    // As the kernel's modules_install compresses them.
    run(Command::new("xz")
        .args(["--check=crc32", "--lzma2=dict=1MiB"])
        .arg(&e100));
    run(Command::new("zstd").args(["-q", "--rm", "-19"]).arg(&crc));
    {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&originals[2]).unwrap();
        std::fs::write(dir.join("kernel/lib/libcrc32c.ko.gz"), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(&lib).unwrap();
    }
    std::fs::write(
        dir.join("modules.dep"),
        "kernel/net/e100.ko.xz: kernel/crypto/crc32c_generic.ko.zst kernel/lib/libcrc32c.ko.gz\n\
         kernel/crypto/crc32c_generic.ko.zst:\n\
         kernel/lib/libcrc32c.ko.gz: kernel/crypto/crc32c_generic.ko.zst\n\
         kernel/net/r8169.ko:\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("modules.alias"),
        "alias pci:v00008086d00001229sv*sd*bc*sc*i* e100\n",
    )
    .unwrap();

    // Firmware: one plain in updates/<kver>, one xz, one zstd.
    let fw = tmp.path().join("firmware");
    let fw_data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
    std::fs::create_dir_all(fw.join("updates/9.9.9-fake/e100")).unwrap();
    std::fs::create_dir_all(fw.join("e100")).unwrap();
    std::fs::write(
        fw.join("updates/9.9.9-fake/e100/d101m_ucode.bin"),
        &fw_data[0],
    )
    .unwrap();
    std::fs::write(fw.join("e100/d101s_ucode.bin"), &fw_data[1]).unwrap();
    run(Command::new("xz")
        .args(["--check=crc32"])
        .arg(fw.join("e100/d101s_ucode.bin")));
    std::fs::write(fw.join("e100/d102e_ucode.bin"), &fw_data[2]).unwrap();
    run(Command::new("zstd")
        .args(["-q", "--rm"])
        .arg(fw.join("e100/d102e_ucode.bin")));

    let mut s = spec(
        tmp.path(),
        KernelSource::default(),
        &["e100", "r8169"],
        "x.img",
    );
    s.kernel.modules_dir = Some(dir.clone());
    s.firmware_root = fw;
    let report = build(&s).unwrap();
    assert_eq!(report.kver, "9.9.9-fake");
    assert_eq!(
        report.modules,
        ["crc32c_generic", "e100", "libcrc32c", "r8169"]
    );
    assert_eq!(
        report.firmware,
        [
            "e100/d101m_ucode.bin",
            "e100/d101s_ucode.bin",
            "e100/d102e_ucode.bin"
        ]
    );
    assert!(!report.missing_firmware.is_empty());
    assert!(report
        .missing_firmware
        .iter()
        .all(|m| m.module == "r8169" && m.firmware.starts_with("rtl_nic/")));

    let files = unpack(&std::fs::read(&s.output).unwrap(), s.compression);
    let m = "lib/modules/9.9.9-fake";
    assert_eq!(files[&format!("{m}/kernel/net/e100.ko")].1, originals[0]);
    assert_eq!(
        files[&format!("{m}/kernel/crypto/crc32c_generic.ko")].1,
        originals[1]
    );
    assert_eq!(
        files[&format!("{m}/kernel/lib/libcrc32c.ko")].1,
        originals[2]
    );
    assert!(!files
        .keys()
        .any(|k| k.ends_with(".xz") || k.ends_with(".zst") || k.ends_with(".gz")));
    assert_eq!(
        String::from_utf8(files[&format!("{m}/modules.dep")].1.clone()).unwrap(),
        "kernel/crypto/crc32c_generic.ko:\n\
         kernel/net/e100.ko: kernel/crypto/crc32c_generic.ko kernel/lib/libcrc32c.ko\n\
         kernel/lib/libcrc32c.ko: kernel/crypto/crc32c_generic.ko\n\
         kernel/net/r8169.ko:\n"
    );
    assert_eq!(files["lib/firmware/e100/d101m_ucode.bin"].1, fw_data[0]);
    assert_eq!(files["lib/firmware/e100/d101s_ucode.bin"].1, fw_data[1]);
    assert_eq!(files["lib/firmware/e100/d102e_ucode.bin"].1, fw_data[2]);

    // A module that does not decompress is an error naming the file.
    std::fs::write(dir.join("kernel/net/e100.ko.xz"), b"not xz").unwrap();
    let msg = build(&s).unwrap_err().to_string();
    assert!(msg.contains("e100.ko.xz") && msg.contains("xz"), "{msg}");
}

#[test]
fn whole_image_is_accepted_by_gnu_cpio() {
    let Some(kernel) = real_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(tmp.path(), kernel, &["virtio_net", "btrfs"], "x.img");
    s.compression = Compression::None;
    build(&s).unwrap();
    let out = Command::new("cpio")
        .args(["-it", "--quiet"])
        .stdin(std::fs::File::open(&s.output).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let ours: Vec<String> = unpack(&std::fs::read(&s.output).unwrap(), s.compression)
        .into_keys()
        .collect();
    assert_eq!(listed, ours);
}

/// `--host`: the drivers of devices the machine lacks are left out and reported; drivers
/// its devices match, everything that is not a device driver and what `--module` named
/// stay; the left-out drivers remain in the driver-hints table, so a boot that misses one
/// still names it.
#[test]
fn host_keeps_only_the_drivers_of_the_machines_devices() {
    let Some(kernel) = real_kernel() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("sys/devices/pci0000:00/0000:00:04.0");
    std::fs::create_dir_all(dev.join("virtio1")).unwrap();
    std::fs::write(
        dev.join("modalias"),
        "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
    )
    .unwrap();
    std::fs::write(dev.join("virtio1/modalias"), "virtio:d00000002v00001AF4\n").unwrap();
    let mut s = spec(
        tmp.path(),
        kernel,
        &[
            "virtio_pci",
            "virtio_blk",
            "nvme",
            "e1000e",
            "btrfs",
            "ahci",
        ],
        "host.img",
    );
    s.load = vec!["ahci".into()];
    s.host = Some(tmp.path().join("sys"));
    let r = build(&s).unwrap();
    for m in ["virtio_pci", "virtio_blk", "btrfs", "ahci"] {
        assert!(
            r.modules.iter().any(|p| p == m),
            "{m} kept: {:?}",
            r.modules
        );
    }
    for m in ["nvme", "e1000e"] {
        assert!(
            !r.modules.iter().any(|p| p == m),
            "{m} left out: {:?}",
            r.modules
        );
    }
    assert_eq!(
        r.host_dropped,
        vec!["nvme".to_string(), "e1000e".to_string()]
    );
    let files = unpack(&std::fs::read(&s.output).unwrap(), s.compression);
    let hints = String::from_utf8_lossy(&files[terra_init::hints::HINTS_FILE].1).into_owned();
    assert!(hints.lines().any(|l| l.ends_with(" nvme")), "{hints}");

    // A sysfs without devices is an error naming it.
    s.host = Some(tmp.path().join("nowhere"));
    let e = build(&s).unwrap_err().to_string();
    assert!(e.contains("nowhere") && e.contains("--host-sysfs"), "{e}");
}
