//! `cargo xtask deb`: Terra as a Debian package, made with `dpkg-deb` from this workspace's
//! release build:
//!
//! | path | what |
//! |---|---|
//! | `/usr/bin/terra` | the CLI |
//! | `/usr/lib/terra/stage0` | the static stage0 (where `terra` looks when no `--stage0` is given) |
//! | `/usr/lib/terra/keeper` | the static session keeper, packed beside stage0 into every image |
//! | `/usr/share/terra/modules/{qemu,baremetal}.modules` | the module sets |
//! | `/etc/kernel/postinst.d/zz-terra`, `/etc/kernel/postrm.d/zz-terra` | the kernel hooks (`builder/package/`) |
//! | `/etc/terra/initramfs.conf` | the switch: `TERRA_INITRAMFS=no` until the admin says yes |
//! | `/usr/share/doc/terra/README.md` | the README |
//! | `/usr/share/bash-completion/completions/terra`, `/usr/share/zsh/vendor-completions/_terra`, `/usr/share/fish/vendor_completions.d/terra.fish` | shell completions (`terra completions SHELL`) |
//! | `/usr/share/man/man1/terra.1.gz`, `terra-<command>.1.gz` | the man pages (`terra man DIR`), gzipped as dh_compress does |
//!
//! It `Provides: linux-initramfs-tool`, as dracut does, so a kernel package can be installed
//! with Terra as the generator, but it replaces nothing: initramfs-tools stays when present.
//! Files are owned by root and their times clamped to `SOURCE_DATE_EPOCH` (dpkg-deb), so the
//! same build gives the same package.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{build, run, workspace};

/// Every mtime in the package is clamped to this (2023-11-14).
const SOURCE_DATE_EPOCH: &str = "1700000000";

/// Builds terra (release) and stage0 and packs them; returns the .deb's path
/// (`target/deb/terra_<version>_amd64.deb`).
pub fn build_deb() -> crate::Result<PathBuf> {
    let terra = build::terra()?;
    let stage0 = build::stage0()?;
    let ws = workspace();
    let version = workspace_version(&ws)?;
    let out_dir = crate::lab_dir()
        .parent()
        .map(|t| t.join("deb"))
        .ok_or("no target directory")?;
    let root = out_dir.join("root");
    let _ = fs::remove_dir_all(&root);
    let pkg = ws.join("builder/package");
    let files: Vec<(PathBuf, &str, u32)> = vec![
        (terra.clone(), "usr/bin/terra", 0o755),
        (
            stage0.with_file_name("keeper"),
            "usr/lib/terra/keeper",
            0o755,
        ),
        (stage0, "usr/lib/terra/stage0", 0o755),
        (
            ws.join("initramfs/qemu.modules"),
            "usr/share/terra/modules/qemu.modules",
            0o644,
        ),
        (
            ws.join("initramfs/baremetal.modules"),
            "usr/share/terra/modules/baremetal.modules",
            0o644,
        ),
        (
            pkg.join("kernel-postinst"),
            "etc/kernel/postinst.d/zz-terra",
            0o755,
        ),
        (
            pkg.join("kernel-postrm"),
            "etc/kernel/postrm.d/zz-terra",
            0o755,
        ),
        (
            pkg.join("initramfs.conf"),
            "etc/terra/initramfs.conf",
            0o644,
        ),
        (ws.join("README.md"), "usr/share/doc/terra/README.md", 0o644),
    ];
    let mut installed_kb = 0;
    for (src, rel, mode) in &files {
        let dst = root.join(rel);
        fs::create_dir_all(dst.parent().unwrap_or(&root)).map_err(|e| e.to_string())?;
        fs::copy(src, &dst).map_err(|e| format!("{} → {}: {e}", src.display(), dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("{}: {e}", dst.display()))?;
        installed_kb += fs::metadata(&dst)
            .map(|m| m.len().div_ceil(1024))
            .unwrap_or(0);
    }
    installed_kb += generated_docs(&terra, &root)?;
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control).map_err(|e| e.to_string())?;
    fs::write(
        control.join("control"),
        format!(
            "Package: terra\nVersion: {version}\nArchitecture: amd64\nSection: admin\n\
             Priority: optional\nMaintainer: Terra maintainers <terra@localhost>\n\
             Installed-Size: {installed_kb}\nProvides: linux-initramfs-tool\n\
             Recommends: btrfs-progs\n\
             Suggests: grub-pc-bin, grub-efi-amd64-bin, mtools, dosfstools, fdisk, xorriso\n\
             Description: boot layer of a container-native OS\n \
             terra builds Terra initramfs images (a static PID 1, stage0), installs OCI images\n \
             as read-only btrfs versions with upgrades that fall back by themselves, and makes\n \
             bootable disks, ISOs and PXE trees. The kernel hook builds every kernel's\n \
             initramfs with Terra once TERRA_INITRAMFS=yes in /etc/terra/initramfs.conf.\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        control.join("conffiles"),
        "/etc/kernel/postinst.d/zz-terra\n/etc/kernel/postrm.d/zz-terra\n/etc/terra/initramfs.conf\n",
    )
    .map_err(|e| e.to_string())?;
    let deb = out_dir.join(format!("terra_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb))?;
    Ok(deb)
}

/// Writes what `terra` generates from its own command-line definition into the package
/// root: the completions where bash-completion, zsh and fish look for a package's, and the
/// man pages, gzipped (`-9`, no name or time, as dh_compress does) so that man finds
/// them. Returns their size in KiB.
fn generated_docs(terra: &Path, root: &Path) -> crate::Result<u64> {
    let mut kb = 0;
    let mut write = |rel: &str, data: &[u8]| -> crate::Result<()> {
        let dst = root.join(rel);
        fs::create_dir_all(dst.parent().unwrap_or(root)).map_err(|e| e.to_string())?;
        fs::write(&dst, data).map_err(|e| format!("{}: {e}", dst.display()))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("{}: {e}", dst.display()))?;
        kb += (data.len() as u64).div_ceil(1024);
        Ok(())
    };
    for (shell, rel) in [
        ("bash", "usr/share/bash-completion/completions/terra"),
        ("zsh", "usr/share/zsh/vendor-completions/_terra"),
        ("fish", "usr/share/fish/vendor_completions.d/terra.fish"),
    ] {
        let script = run(Command::new(terra).args(["completions", shell]))?;
        write(rel, script.as_bytes())?;
    }
    let pages = root.join("man.tmp");
    let _ = fs::remove_dir_all(&pages);
    run(Command::new(terra).arg("man").arg(&pages))?;
    let mut names: Vec<PathBuf> = fs::read_dir(&pages)
        .map_err(|e| format!("{}: {e}", pages.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for page in names {
        let text = fs::read(&page).map_err(|e| format!("{}: {e}", page.display()))?;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &text).map_err(|e| e.to_string())?;
        let gz = gz.finish().map_err(|e| e.to_string())?;
        let name = page.file_name().unwrap_or_default().to_string_lossy();
        write(&format!("usr/share/man/man1/{name}.gz"), &gz)?;
    }
    fs::remove_dir_all(&pages).map_err(|e| format!("{}: {e}", pages.display()))?;
    if !root.join("usr/share/man/man1/terra.1.gz").is_file() {
        return Err("terra man wrote no terra.1".into());
    }
    Ok(kb)
}

/// The workspace's `version` (Cargo.toml `[workspace.package]`).
fn workspace_version(ws: &Path) -> crate::Result<String> {
    let text = fs::read_to_string(ws.join("Cargo.toml")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("version")?.trim().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| "no version in Cargo.toml".into())
}

/// Names the cached Debian root of the kernel-hook test; bump it when its packages change.
const HOOK_ROOT_VERSION: &str = "h1";

/// A Debian root (`debootstrap --variant=minbase` of bookworm with `kmod` and `linux-base`,
/// what a kernel package needs to install) made once under `target/lab/roots`, copied to
/// `target/lab/scratch/<name>` for each use. Needs root and Debian's mirror
/// (`TERRA_DEBIAN_MIRROR`).
pub fn hook_root(name: &str) -> crate::Result<PathBuf> {
    let cached = crate::lab_dir()
        .join("roots")
        .join(format!("bookworm-hooks-{HOOK_ROOT_VERSION}"));
    if !cached.join("usr/bin/dpkg").is_file() {
        let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let mirror = std::env::var("TERRA_DEBIAN_MIRROR")
            .unwrap_or_else(|_| crate::debian::DEFAULT_MIRROR.into());
        crate::debian::debootstrap(&tmp, &mirror, "kmod,linux-base")?;
        let _ = fs::remove_dir_all(&cached);
        fs::rename(&tmp, &cached).map_err(|e| format!("{}: {e}", cached.display()))?;
    }
    let copy = crate::lab_dir().join("scratch").join(name);
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(copy.parent().unwrap_or(&copy)).map_err(|e| e.to_string())?;
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&copy))?;
    Ok(copy)
}
