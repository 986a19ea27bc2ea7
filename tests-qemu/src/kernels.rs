//! A second kernel for the lab, so that a version can carry a kernel other than the one
//! that boots the VM: Debian's cloud kernel (`linux-image-cloud-amd64`), whose release
//! (`…-cloud-amd64`) differs from `linux-image-amd64`'s. Fetched once with `apt-get
//! download` (no installation on the host) and unpacked under `target/lab/kernels`.
//!
//! The kernel layout (cached under `target/lab/images`) shares the versions layout's base
//! layer (`lab::versions::layout`), so an upgrade from `v1` reuses its chain:
//!
//! | tag | on top of the base | what it is |
//! |---|---|---|
//! | `k2` | the cloud kernel and its storage modules | `/etc/demo-subvol` = k2 |
//! | `k3` | the same, `/sbin/init` whited out | fails in the first initramfs, before any kexec |
//! | `k4` | a "kernel" that is not one | `kexec_file_load` refuses it |

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::{demo_root, tempdir};
use crate::oci_root::{layer_from_dir, sha256};
use crate::versions::{layer_of, write_layout_at};
use crate::{lab_dir, run};

/// Modules the version's kernel needs to find and mount its root in the lab (with their
/// dependencies), and what `terra upgrade` then packs into its initramfs.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "sd_mod",
    "btrfs",
    "crc32c_generic",
    "iscsi_tcp",
    "overlay",
    "vfat",
    "nls_cp437",
    "nls_ascii",
];

/// A kernel unpacked from a Debian package.
#[derive(Debug, Clone)]
pub struct DebKernel {
    /// `boot/vmlinuz-<release>`.
    pub image: PathBuf,
    /// Its release.
    pub release: String,
    /// `lib/modules/<release>`, indexed by depmod.
    pub modules_dir: PathBuf,
}

/// The cloud kernel's package, downloaded once into `target/lab/kernels` (never installed
/// on the host); also what the package test installs into a Debian root.
pub fn cloud_kernel_deb() -> crate::Result<PathBuf> {
    let dir = lab_dir().join("kernels");
    let cached = |dir: &Path| {
        fs::read_dir(dir).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.extension().is_some_and(|x| x == "deb")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("linux-image-"))
            })
        })
    };
    if let Some(deb) = cached(&dir) {
        return Ok(deb);
    }
    // The metapackage names the current kernel package.
    let depends = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))
        .map_err(|e| {
            format!("{e}\n(the lab needs Debian's apt to fetch linux-image-cloud-amd64)")
        })?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .ok_or_else(|| {
            format!("apt-cache depends linux-image-cloud-amd64 names no kernel:\n{depends}")
        })?
        .to_string();
    let work = tempdir("cloud-kernel")?;
    run(Command::new("apt-get")
        .args(["download", "-q", &package])
        .current_dir(&work))
    .map_err(|e| {
        format!("{e}\n(apt-get download {package}: the package mirror must be reachable)")
    })?;
    let deb = cached(&work).ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dest = dir.join(deb.file_name().unwrap_or_default());
    fs::rename(&deb, &dest)
        .or_else(|_| fs::copy(&deb, &dest).map(|_| ()))
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    let _ = fs::remove_dir_all(&work);
    Ok(dest)
}

/// Debian's cloud kernel, fetched and unpacked once.
pub fn cloud_kernel() -> crate::Result<DebKernel> {
    // The download, the unpacked tree and the layout each take their turn across processes.
    let _turn = crate::lab_lock("cloud-kernel")?;
    let dir = lab_dir().join("kernels").join("cloud");
    if let Some(k) = unpacked(&dir) {
        return Ok(k);
    }
    let deb = cloud_kernel_deb()?;
    let work = tempdir("cloud-kernel")?;
    let tree = work.join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let release = unpacked_release(&tree)
        .ok_or_else(|| format!("{}: no boot/vmlinuz-* inside", deb.display()))?;
    // Installing the package would run depmod; unpacking it does not.
    run(Command::new("depmod").arg("-b").arg(&tree).arg(&release))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tree, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = fs::remove_dir_all(&work);
    unpacked(&dir).ok_or_else(|| {
        format!(
            "{}: no kernel with modules after unpacking {}",
            dir.display(),
            deb.display()
        )
    })
}

/// The release of the `boot/vmlinuz-<release>` in an unpacked package.
fn unpacked_release(tree: &Path) -> Option<String> {
    fs::read_dir(tree.join("boot"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
}

fn unpacked(dir: &Path) -> Option<DebKernel> {
    let boot = fs::read_dir(dir.join("boot")).ok()?;
    boot.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            let modules_dir = dir.join("lib/modules").join(&release);
            modules_dir
                .join("modules.dep")
                .is_file()
                .then(|| DebKernel {
                    image: e.path(),
                    release,
                    modules_dir,
                })
        })
        .next()
}

/// Writes into `root` what an image carrying `k` holds: `boot/vmlinuz-<release>` and
/// `lib/modules/<release>` with [`MODULES`] and their dependencies, indexed by depmod.
fn add_kernel(root: &Path, k: &DebKernel) -> crate::Result<()> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let boot = root.join("boot");
    fs::create_dir_all(&boot).map_err(|e| err(&boot, e))?;
    let image = boot.join(format!("vmlinuz-{}", k.release));
    fs::copy(&k.image, &image).map_err(|e| err(&image, e))?;
    let index = terra_init::modindex::ModuleIndex::load(&k.modules_dir)
        .map_err(|e| format!("{}: {e}", k.modules_dir.display()))?;
    let keep: HashSet<String> = index
        .closure(MODULES.iter().copied())
        .map_err(|e| format!("kernel {}: {e}", k.release))?
        .into_iter()
        .collect();
    let dest = root.join("lib/modules").join(&k.release);
    for name in &keep {
        let Some(rel) = index.path(name) else {
            continue;
        };
        let to = dest.join(rel);
        fs::create_dir_all(to.parent().unwrap_or(&dest)).map_err(|e| err(&to, e))?;
        fs::copy(k.modules_dir.join(rel), &to).map_err(|e| err(&to, e))?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = k.modules_dir.join(f);
        if from.is_file() {
            fs::copy(&from, dest.join(f)).map_err(|e| err(&from, e))?;
        }
    }
    run(Command::new("depmod").arg("-b").arg(root).arg(&k.release))?;
    Ok(())
}

/// The kernel layout (tags in the module doc).
pub fn layout(busybox: &Path) -> crate::Result<(PathBuf, DebKernel)> {
    let k = cloud_kernel()?;
    let _turn = crate::lab_lock("kernel-layout")?;
    let work = tempdir("kernel-image")?;
    let built = (|| -> crate::Result<PathBuf> {
        let root = work.join("root");
        demo_root(&root, busybox, "v1")?;
        fs::create_dir_all(root.join(&crate::versions::DATA_PATH[1..]))
            .map_err(|e| e.to_string())?;
        let base = layer_from_dir(&root)?;
        let layout = lab_dir().join("images").join(format!(
            "kernels-{}-{}-{}",
            &sha256(&base)[7..19],
            &sha256(MODULES.join(",").as_bytes())[7..13],
            k.release
        ));
        if layout.join("index.json").is_file() {
            return Ok(layout);
        }
        let kroot = work.join("kernel");
        add_kernel(&kroot, &k)?;
        fs::create_dir_all(kroot.join("etc")).map_err(|e| e.to_string())?;
        fs::write(kroot.join("etc/demo-subvol"), "k2\n").map_err(|e| e.to_string())?;
        let k2 = layer_from_dir(&kroot)?;
        let k3 = layer_of(&[
            ("etc/demo-subvol", Some(b"k3\n"), 0o644),
            ("sbin/.wh.init", None, 0o644),
        ])?;
        let bogus = format!("boot/vmlinuz-{}", k.release);
        let k4 = layer_of(&[
            ("etc/demo-subvol", Some(b"k4\n"), 0o644),
            (bogus.as_str(), Some(b"not a kernel\n"), 0o644),
        ])?;
        write_layout_at(
            &layout,
            &[
                ("v1", vec![&base]),
                ("k2", vec![&base, &k2]),
                ("k3", vec![&base, &k2, &k3]),
                ("k4", vec![&base, &k2, &k4]),
            ],
            false,
        )?;
        Ok(layout)
    })();
    let _ = fs::remove_dir_all(&work);
    Ok((built?, k))
}
