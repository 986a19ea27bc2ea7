//! The live installer image: the busybox demo root plus what `terra install` needs to make a
//! disk that boots on its own (`mbr = true`), so a live ISO (`terra iso --live`) can install
//! from itself the way Terra OS's did: boot the ISO, `terra install`, reboot.
//!
//! Besides the demo root it holds, at their host paths: `terra`, and stage0 with its keeper
//! and bless in `/usr/lib/terra` (the packaged location `terra` looks in); the host tools `terra
//! install` runs (btrfs-progs, sfdisk/partx, dosfstools, mtools, grub-mkimage) with their
//! shared libraries (`ldd`); GRUB's two module directories; the lab's kernel at
//! `/boot/vmlinuz-<release>` with the modules of the QEMU set and their dependencies; the
//! demo image as an OCI layout at [`INSTALL_SOURCE`]; and [`INSTALLER`], the init a test
//! boots with `init=`. Built as one layer, cached under target/lab/images by the inputs'
//! sizes and times.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::build::Artifacts;
use crate::disk::{demo_root, tempdir, write_exec};
use crate::elf::parse_ldd;
use crate::oci_root::{demo_layout, layout_from_dir, DEMO_TAG};
use crate::{lab_dir, run};

/// Where the image to install sits in the live root (an OCI layout).
pub const INSTALL_SOURCE: &str = "/srv/demo-image";

/// The init of the installer boot: installs the demo image onto `/dev/vda` with `mbr =
/// true` and reports. Printed markers: `TERRA-LIVE-ROOT <fstype of />`, then `terra
/// install`'s output and `TERRA-LIVE-INSTALL rc=<code>`; then it powers off. The kernel
/// arguments `terra.live.uuid=` and `terra.live.cmdline=` (commas for spaces) pass the
/// root UUID and the installed disk's own kernel arguments.
pub const INSTALLER: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "TERRA-LIVE-ROOT $(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)"
uuid=; extra=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    terra.live.uuid=*) uuid="${arg#terra.live.uuid=}" ;;
    terra.live.cmdline=*) extra="$(echo "${arg#terra.live.cmdline=}" | tr ',' ' ')" ;;
  esac
done
cat > /tmp/node.toml <<EOF
hostname = "terra-installed"
image = "oci:/srv/demo-image:demo"

[[groups]]
label = "os"
mbr = true
  [[groups.disk]]
  device = "/dev/vda"
EOF
kernel=$(ls /boot/vmlinuz-* | head -n 1)
terra --quiet install /tmp/node.toml --uuid "$uuid" --kernel "$kernel" --cmdline "$extra" 2>&1
echo "TERRA-LIVE-INSTALL rc=$?"
sync
poweroff -f
"#;

/// Host tools `terra install` runs for an `mbr = true` disk (mount, umount, losetup and
/// blockdev are busybox's).
const TOOLS: [&str; 7] = [
    "/usr/sbin/mkfs.btrfs",
    "/usr/bin/btrfs",
    "/usr/sbin/sfdisk",
    "/usr/bin/partx",
    "/usr/sbin/mkfs.fat",
    "/usr/bin/mtools",
    "/usr/bin/grub-mkimage",
];

const GRUB_DIRS: [&str; 2] = ["/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi"];

/// The installer image's OCI layout and reference (`oci:<layout>:demo`).
pub fn installer_image(a: &Artifacts, busybox: &Path) -> crate::Result<String> {
    use std::hash::{Hash, Hasher};
    let keeper = a.stage0.with_file_name("keeper");
    let bless = a.stage0.with_file_name("bless");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [&a.terra, &a.stage0, &keeper, &bless, &a.kernel] {
        let m = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        (m.len(), m.modified().ok()).hash(&mut h);
    }
    (INSTALLER, "modules-5").hash(&mut h);
    let dir = lab_dir().join("images");
    let layout = dir.join(format!("live-installer-{:016x}", h.finish()));
    let reference = format!("oci:{}:{DEMO_TAG}", layout.display());
    if layout.join("index.json").is_file() {
        return Ok(reference);
    }
    let _turn = crate::lab_lock("live-installer")?;
    if layout.join("index.json").is_file() {
        return Ok(reference);
    }
    let work = tempdir("live-installer")?;
    let made = fill(&work.join("root"), a, busybox)
        .and_then(|()| layout_from_dir(&work.join("root"), &work.join("layout")))
        .and_then(|_| {
            fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            crate::publish_dir(&work.join("layout"), &layout)
        });
    let _ = fs::remove_dir_all(&work);
    made.map(|()| reference)
}

fn copy(from: &Path, root: &Path, to: &Path) -> crate::Result<()> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    // cp keeps symlinks as symlinks (mtools' m* names) and modes; a directory's contents
    // merge into one that is already there.
    if from.is_dir() && !fs::symlink_metadata(from).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        return run(Command::new("cp").arg("-a").arg(from.join(".")).arg(&dest)).map(|_| ());
    }
    run(Command::new("cp").arg("-a").arg(from).arg(&dest)).map(|_| ())
}

fn fill(root: &Path, a: &Artifacts, busybox: &Path) -> crate::Result<()> {
    demo_root(root, busybox, "live")?;
    write_exec(&root.join("bin/live-install"), INSTALLER)?;
    for d in ["tmp", "mnt", "srv", "boot"] {
        fs::create_dir_all(root.join(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    copy(&a.terra, root, Path::new("/usr/bin/terra"))?;
    copy(&a.stage0, root, Path::new("/usr/lib/terra/stage0"))?;
    for helper in ["keeper", "bless"] {
        let path = a.stage0.with_file_name(helper);
        if path.is_file() {
            copy(&path, root, &Path::new("/usr/lib/terra").join(helper))?;
        }
    }
    // Every program's libraries, once each.
    let mut libs = BTreeMap::new();
    for bin in TOOLS.iter().map(Path::new).chain([a.terra.as_path()]) {
        if !bin.exists() {
            return Err(format!(
                "{} is missing on this host (scripts/setup-host.sh installs it)",
                bin.display()
            ));
        }
        if fs::symlink_metadata(bin).is_ok_and(|m| m.file_type().is_symlink()) {
            copy(bin, root, bin)?;
            continue;
        }
        if bin != a.terra {
            copy(bin, root, bin)?;
        }
        for (to, from) in parse_ldd(&run(Command::new("ldd").arg(bin))?)? {
            libs.insert(to, from);
        }
    }
    for (to, from) in &libs {
        // Follow the host's library symlinks: the root gets the file under the asked name.
        let dest = root.join(to.strip_prefix("/").unwrap_or(to));
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        fs::copy(from, &dest)
            .map_err(|e| format!("{} → {}: {e}", from.display(), dest.display()))?;
    }
    // mtools converts names through iconv's code page 850: glibc's gconv module and its
    // configuration (a distribution's root has them all).
    let gconv = Path::new("/usr/lib/x86_64-linux-gnu/gconv");
    for f in ["gconv-modules", "gconv-modules.d", "IBM850.so"] {
        copy(&gconv.join(f), root, &gconv.join(f))?;
    }
    // mtools' commands are its links in /usr/bin (mcopy, mmd, mren…).
    for entry in fs::read_dir("/usr/bin").map_err(|e| format!("/usr/bin: {e}"))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if fs::read_link(&path).is_ok_and(|t| t == Path::new("mtools")) {
            copy(&path, root, &path)?;
        }
    }
    for d in GRUB_DIRS {
        copy(Path::new(d), root, Path::new(d))?;
    }
    copy(
        &a.kernel,
        root,
        &Path::new("/boot").join(format!("vmlinuz-{}", a.kver)),
    )?;
    modules(root, &a.kver)?;
    copy(&demo_layout(busybox)?.0, root, Path::new(INSTALL_SOURCE))
}

/// The QEMU set's modules and their dependencies, the crypto and library modules, and every
/// index file, into the root's `/lib/modules/<kver>`.
fn modules(root: &Path, kver: &str) -> crate::Result<()> {
    let host = Path::new("/lib/modules").join(kver);
    let dest = root.join("lib/modules").join(kver);
    fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for entry in fs::read_dir(&host).map_err(|e| format!("{}: {e}", host.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.") && entry.path().is_file() {
            fs::copy(entry.path(), dest.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    let dep =
        fs::read_to_string(host.join("modules.dep")).map_err(|e| format!("modules.dep: {e}"))?;
    let wanted: BTreeSet<String> = include_str!("../../initramfs/qemu.modules")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().replace('-', "_"))
        .filter(|l| !l.is_empty())
        .collect();
    // Soft dependencies name aliases (btrfs: `blake2b-256`, `crypto-crc32c`…): the crypto
    // and library modules go in whole rather than resolving them here.
    let whole = ["kernel/crypto", "kernel/lib", "kernel/arch"].map(String::from);
    for rel in needed_modules(&dep, &wanted).into_iter().chain(whole) {
        let from = host.join(&rel);
        if from.exists() {
            copy(
                &from,
                root,
                &Path::new("/lib/modules").join(kver).join(&rel),
            )?;
        }
    }
    Ok(())
}

/// The modules.dep paths of `wanted` (names with `_`) and everything they depend on.
pub fn needed_modules(dep: &str, wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let table: BTreeMap<String, (String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(path, deps)| {
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
                .split('.')
                .next()
                .unwrap_or("")
                .replace('-', "_");
            let deps = deps.split_whitespace().map(str::to_string).collect();
            (name, (path.to_string(), deps))
        })
        .collect();
    let mut out = BTreeSet::new();
    for w in wanted {
        if let Some((path, deps)) = table.get(w) {
            out.insert(path.clone());
            out.extend(deps.iter().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_with_their_dependencies() {
        let dep = "kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/raid6/raid6_pq.ko\n\
                   kernel/crypto/xor.ko:\nkernel/drivers/block/virtio_blk.ko:\n\
                   kernel/fs/isofs/isofs.ko: kernel/drivers/cdrom/cdrom.ko\n";
        let wanted: BTreeSet<String> = ["btrfs", "isofs", "absent"].map(String::from).into();
        let got: Vec<String> = needed_modules(dep, &wanted).into_iter().collect();
        assert_eq!(
            got,
            [
                "kernel/crypto/xor.ko",
                "kernel/drivers/cdrom/cdrom.ko",
                "kernel/fs/btrfs/btrfs.ko",
                "kernel/fs/isofs/isofs.ko",
                "kernel/lib/raid6/raid6_pq.ko"
            ]
        );
    }
}
