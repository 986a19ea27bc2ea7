//! `cargo xtask deb`: Terra as a Debian package, made with `dpkg-deb` from this workspace's
//! release build:
//!
//! | path | what |
//! |---|---|
//! | `/usr/bin/terra` | the CLI |
//! | `/usr/bin/terra-controller` | `terra serve` and `terra node` (terra execs it from beside itself) |
//! | `/usr/lib/terra/stage0` | the static stage0 (where `terra` looks when no `--stage0` is given) |
//! | `/usr/lib/terra/keeper` | the static session keeper, packed beside stage0 into every image |
//! | `/usr/lib/terra/bless` | the static confirmation command (health checks), packed beside stage0 into every image |
//! | `/usr/share/terra/modules/{qemu,baremetal}.modules` | the module sets |
//! | `/etc/kernel/postinst.d/zz-terra`, `/etc/kernel/postrm.d/zz-terra` | the kernel hooks (`builder/package/`) |
//! | `/etc/terra/initramfs.conf` | the switch: `TERRA_INITRAMFS=yes` (Terra writes every kernel's initramfs) |
//! | `/usr/lib/systemd/system/terra-update.{service,timer}` | `terra update` every hour, off until enabled (`systemctl enable --now terra-update.timer`) |
//! | `/usr/share/doc/terra/README.md` | the README |
//! | `/usr/share/bash-completion/completions/terra`, `/usr/share/zsh/vendor-completions/_terra`, `/usr/share/fish/vendor_completions.d/terra.fish` | shell completions (`terra completions SHELL`), and the same three for `terra-controller` |
//! | `/usr/share/man/man1/terra.1.gz`, `terra-<command>.1.gz`, `terra-controller*.1.gz` | the man pages (`terra man DIR`, `terra-controller man DIR`), gzipped as dh_compress does |
//!
//! Terra is the machine's initramfs generator, in place of initramfs-tools, as dracut is:
//! it `Provides`, `Conflicts` with and `Replaces` the virtual package `linux-initramfs-tool`
//! (Debian policy §7.6.2 for a virtual package only one provider of may be installed), so
//! `apt install ./terra_*.deb` removes initramfs-tools (or dracut; `dpkg -i` refuses until
//! it is gone) and kernel packages' `initramfs-tools | linux-initramfs-tool` stays met. Its postinst writes Terra's initramfs for every
//! installed kernel at once, and again whenever a package activates the `update-initramfs`
//! trigger, as dracut's does. Files are owned by root and their times clamped to
//! `SOURCE_DATE_EPOCH` (dpkg-deb), so the same build gives the same package.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{build, run, workspace};

/// Every mtime in the package is clamped to this (2023-11-14).
const SOURCE_DATE_EPOCH: &str = "1700000000";

/// Builds terra (release) and stage0 and packs them; returns the .deb's path
/// (`target/deb/terra_<version>_amd64.deb`). The package is made again only when what goes
/// into it changed (a digest of every input beside it), and one caller at a time makes it:
/// the package test and the update scenarios' node images share one.
pub fn build_deb() -> crate::Result<PathBuf> {
    // Once per process: scenarios running side by side share one package, and none sees
    // it while another rewrites it.
    static DEB: std::sync::OnceLock<crate::Result<PathBuf>> = std::sync::OnceLock::new();
    DEB.get_or_init(make_deb).clone()
}

fn make_deb() -> crate::Result<PathBuf> {
    let terra = build::terra()?;
    let controller = build::controller()?;
    let stage0 = build::stage0()?;
    let ws = workspace();
    let version = workspace_version(&ws)?;
    let out_dir = crate::lab_dir()
        .parent()
        .map(|t| t.join("deb"))
        .ok_or("no target directory")?;
    let _turn = crate::lab_lock("deb")?;
    let root = out_dir.join("root");
    let pkg = ws.join("builder/package");
    let files: Vec<(PathBuf, &str, u32)> = vec![
        (terra.clone(), "usr/bin/terra", 0o755),
        (controller.clone(), "usr/bin/terra-controller", 0o755),
        (
            stage0.with_file_name("keeper"),
            "usr/lib/terra/keeper",
            0o755,
        ),
        (stage0.with_file_name("bless"), "usr/lib/terra/bless", 0o755),
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
        (
            pkg.join("terra-update.service"),
            "usr/lib/systemd/system/terra-update.service",
            0o644,
        ),
        (
            pkg.join("terra-update.timer"),
            "usr/lib/systemd/system/terra-update.timer",
            0o644,
        ),
        (
            pkg.join("terra-controller.service"),
            "usr/lib/systemd/system/terra-controller.service",
            0o644,
        ),
        (
            pkg.join("controller.env"),
            "etc/terra/controller.env",
            0o644,
        ),
        (ws.join("README.md"), "usr/share/doc/terra/README.md", 0o644),
    ];
    let deb = out_dir.join(format!("terra_{version}_amd64.deb"));
    let stamp = deb.with_extension("inputs");
    // This file's text too: the control fields and scripts written below are in it.
    let mut inputs: Vec<u8> = format!("{version}\n{}", include_str!("package.rs")).into_bytes();
    let extra = ["postinst"].map(|f| (pkg.join(f), "", 0));
    for (src, rel, mode) in files.iter().chain(extra.iter()) {
        let data = fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
        inputs.extend_from_slice(
            format!("{rel} {mode:o} {}\n", crate::oci_root::sha256(&data)).as_bytes(),
        );
    }
    let key = crate::oci_root::sha256(&inputs);
    if deb.is_file() && fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return Ok(deb);
    }
    let _ = fs::remove_file(&stamp);
    let _ = fs::remove_dir_all(&root);
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
    installed_kb += generated_docs(&terra, "terra", &root)?;
    installed_kb += generated_docs(&controller, "terra-controller", &root)?;
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control).map_err(|e| e.to_string())?;
    fs::write(
        control.join("control"),
        format!(
            "Package: terra\nVersion: {version}\nArchitecture: amd64\nSection: admin\n\
             Priority: optional\nMaintainer: Terra maintainers <terra@localhost>\n\
             Installed-Size: {installed_kb}\n{RELATIONS}\
             Description: boot layer of a container-native OS\n \
             terra builds Terra initramfs images (a static PID 1, stage0), installs OCI images\n \
             as read-only btrfs versions with upgrades that fall back by themselves, and makes\n \
             bootable disks, ISOs and PXE trees; terra serve provisions diskless nodes.\n \
             .\n \
             It is the machine's initramfs generator, in place of initramfs-tools: installing\n \
             it writes every installed kernel's initramfs with Terra, and the kernel hook\n \
             writes each new kernel's (TERRA_INITRAMFS in /etc/terra/initramfs.conf).\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        control.join("conffiles"),
        "/etc/kernel/postinst.d/zz-terra\n/etc/kernel/postrm.d/zz-terra\n/etc/terra/initramfs.conf\n\
         /etc/terra/controller.env\n",
    )
    .map_err(|e| e.to_string())?;
    let postinst = control.join("postinst");
    fs::copy(pkg.join("postinst"), &postinst)
        .map_err(|e| format!("{}: {e}", postinst.display()))?;
    fs::set_permissions(&postinst, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", postinst.display()))?;
    // As dracut: a package that changes what an initramfs holds (firmware, modules)
    // activates this trigger; the postinst then rewrites every kernel's image.
    fs::write(
        control.join("triggers"),
        "interest-noawait update-initramfs\n",
    )
    .map_err(|e| e.to_string())?;
    // Written beside and renamed: another process never reads a package half written.
    let part = deb.with_extension("deb.part");
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&part))?;
    fs::rename(&part, &deb).map_err(|e| format!("{}: {e}", deb.display()))?;
    fs::write(&stamp, key).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(deb)
}

/// The package's relations to others (Debian policy §7): Terra is the one initramfs
/// generator, as dracut is, so it provides, conflicts with and replaces the virtual
/// `linux-initramfs-tool` that initramfs-tools, dracut and tiny-initramfs provide (policy
/// §7.6.2, the pattern for a virtual package only one provider of may be installed).
/// Provides keeps kernel packages' `initramfs-tools | linux-initramfs-tool` met; apt
/// settles the conflict by removing initramfs-tools, while `dpkg -i` refuses as long as
/// initramfs-tools is installed (its own `Conflicts: linux-initramfs-tool`, which dpkg never
/// settles by removing a package), exactly as for dracut.
pub const RELATIONS: &str = "Provides: linux-initramfs-tool\n\
    Conflicts: linux-initramfs-tool\n\
    Replaces: linux-initramfs-tool\n\
    Recommends: btrfs-progs, ca-certificates, mtools\n\
    Suggests: tgt, grub-pc-bin, grub-efi-amd64-bin, dosfstools, fdisk, xorriso\n";

/// Writes what `program` (named `name`) generates from its own command-line definition into
/// the package root: the completions where bash-completion, zsh and fish look for a
/// package's, and the man pages, gzipped (`-9`, no name or time, as dh_compress does) so
/// that man finds them. Returns their size in KiB.
fn generated_docs(program: &Path, name: &str, root: &Path) -> crate::Result<u64> {
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
        (
            "bash",
            format!("usr/share/bash-completion/completions/{name}"),
        ),
        ("zsh", format!("usr/share/zsh/vendor-completions/_{name}")),
        (
            "fish",
            format!("usr/share/fish/vendor_completions.d/{name}.fish"),
        ),
    ] {
        let script = run(Command::new(program).args(["completions", shell]))?;
        write(&rel, script.as_bytes())?;
    }
    let pages = root.join("man.tmp");
    let _ = fs::remove_dir_all(&pages);
    run(Command::new(program).arg("man").arg(&pages))?;
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
        let page = page.file_name().unwrap_or_default().to_string_lossy();
        write(&format!("usr/share/man/man1/{page}.gz"), &gz)?;
    }
    fs::remove_dir_all(&pages).map_err(|e| format!("{}: {e}", pages.display()))?;
    if !root
        .join(format!("usr/share/man/man1/{name}.1.gz"))
        .is_file()
    {
        return Err(format!("{name} man wrote no {name}.1"));
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

/// What debootstrap adds to minbase for the package test: a Debian 12 machine's
/// initramfs generator and kernel, as a user's machine has them (the kernel's postinst runs
/// initramfs-tools' hook, so `/boot/initrd.img-<version>` is initramfs-tools').
pub const MACHINE_PACKAGES: &str = "initramfs-tools,linux-image-amd64,systemd-sysv,tgt";

/// What `apt install ./terra.deb` fetches for the package's Recommends ([`RELATIONS`]); the
/// cached root holds them in apt's archive cache, as they would be after any earlier
/// download, so that the test's apt needs no mirror.
pub fn machine_cached_debs() -> Vec<&'static str> {
    RELATIONS
        .lines()
        .find_map(|l| l.trim().strip_prefix("Recommends:"))
        .map(|r| r.split(',').map(str::trim).collect())
        .unwrap_or_default()
}

/// Bound on copying a cached root and on each command the test runs in one.
pub const ROOT_COMMAND_TIMEOUT_S: u32 = 600;

/// Serializes making the cached root between the tests of one process (processes meet at
/// the rename).
static ROOT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `root` as an ext4 disk image with filesystem UUID `uuid` (`mkfs.ext4 -d`: no mount, no
/// loop device), in `target/lab/scratch/<root's name>.img`, with room to spare.
pub fn root_disk(root: &Path, uuid: &str) -> crate::Result<PathBuf> {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: no name", root.display()))?;
    let img = crate::lab_dir().join("scratch").join(format!("{name}.img"));
    let used_kb: u64 = run(Command::new("du").args(["-sk", "-x"]).arg(root))?
        .split_whitespace()
        .next()
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| format!("du -sk {}: no size", root.display()))?;
    let _ = fs::remove_file(&img);
    fs::File::create(&img)
        .and_then(|f| f.set_len((used_kb * 3 / 2 + 512 * 1024) * 1024))
        .map_err(|e| format!("{}: {e}", img.display()))?;
    run(Command::new("timeout")
        .arg(ROOT_COMMAND_TIMEOUT_S.to_string())
        .args(["mkfs.ext4", "-q", "-F", "-L", "machine", "-U", uuid, "-d"])
        .arg(root)
        .arg(&img))?;
    Ok(img)
}

/// A Debian 12 root as a user's machine has one (`debootstrap --variant=minbase` of
/// bookworm with [`MACHINE_PACKAGES`]), made once under
/// `target/lab/roots/bookworm-machine-<digest of the recipe>` (a new recipe is a new
/// directory) and copied to `target/lab/scratch/<name>` for each use. Needs root and
/// Debian's mirror (`TERRA_DEBIAN_MIRROR`).
pub fn machine_root(name: &str) -> crate::Result<PathBuf> {
    let recipe = format!(
        "debootstrap --variant=minbase --include={MACHINE_PACKAGES} {}; \
         apt-get install --download-only {}",
        crate::debian::SUITE,
        machine_cached_debs().join(",")
    );
    let digest = crate::oci_root::sha256(recipe.as_bytes());
    let cached = crate::lab_dir()
        .join("roots")
        .join(format!("bookworm-machine-{}", &digest[7..19]));
    {
        let _guard = ROOT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if !cached.join("usr/bin/dpkg").is_file() {
            let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let mirror = std::env::var("TERRA_DEBIAN_MIRROR")
                .unwrap_or_else(|_| crate::debian::DEFAULT_MIRROR.into());
            eprintln!(
                "lab: {recipe} from {mirror} (once, into {})",
                cached.display()
            );
            crate::debian::debootstrap(&tmp, &mirror, MACHINE_PACKAGES)?;
            run(Command::new("timeout")
                .arg(ROOT_COMMAND_TIMEOUT_S.to_string())
                .arg("chroot")
                .arg(&tmp)
                .args(["apt-get", "install", "-q", "-y", "--download-only"])
                .args(machine_cached_debs())
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
            let _ = fs::remove_dir_all(&cached);
            fs::rename(&tmp, &cached).map_err(|e| format!("{}: {e}", cached.display()))?;
        }
    }
    let copy = crate::lab_dir().join("scratch").join(name);
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(copy.parent().unwrap_or(&copy)).map_err(|e| e.to_string())?;
    run(Command::new("timeout")
        .arg(ROOT_COMMAND_TIMEOUT_S.to_string())
        .args(["cp", "-a", "--reflink=auto"])
        .arg(&cached)
        .arg(&copy))?;
    Ok(copy)
}
