//! `terra install` on image files (needs root: mkfs.btrfs, loop devices, mount): a single
//! disk and raid1 over two, their subvolumes, fstab and hostname, the refusal to
//! overwrite a disk that holds a filesystem, and a bootable install that lacks a host tool
//! leaving its disk as it was.

use crate::oci_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_common::*;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files attached as loop devices and mounted (top level, subvolid 5) read-only;
/// undone on drop.
struct Mount {
    dir: tempfile::TempDir,
    loops: Vec<String>,
}

impl Mount {
    fn new(files: &[&Path]) -> Mount {
        let loops: Vec<String> = files
            .iter()
            .map(|f| {
                sh(Command::new("losetup")
                    .args(["--find", "--show", "--read-only"])
                    .arg(f))
                .trim()
                .to_string()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let opts: Vec<String> = loops.iter().map(|l| format!("device={l}")).collect();
        sh(Command::new("mount")
            .args([
                "-t",
                "btrfs",
                "-o",
                &format!("ro,subvolid=5,{}", opts.join(",")),
            ])
            .arg(&loops[0])
            .arg(dir.path()));
        Mount { dir, loops }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

fn image(dir: &Path) -> String {
    let layout = dir.join("layout");
    image_layout(
        &layout,
        "v1",
        &[
            (layer(&rich_layer()), Comp::Gzip),
            (
                layer(&[
                    E::Dir("etc/", 0o755),
                    E::File("etc/fstab", b"# from the image\n", 0o644),
                ]),
                Comp::Gzip,
            ),
        ],
    );
    format!("oci:{}:v1", layout.display())
}

fn subvolumes(mnt: &Path) -> Vec<String> {
    let list = sh(Command::new("btrfs").args(["subvolume", "list"]).arg(mnt));
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|l| l.rsplit(" path ").next().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn single_disk_image_file() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let node = dir.path().join("node.toml");
    fs::write(
        &node,
        format!(
            r#"hostname = "terra-test-01"
image = "{}"
[[groups]]
label = "os"
type = "single"
  [[groups.disk]]
  device = "{}"
  size = 256
  [[groups.subvolumes]]
  name = "home"
  path = "/home"
  [[groups.subvolumes]]
  name = "var-log"
  path = "/var/log"
[controller]
url = "http://10.0.2.2:8080"
"#,
            image(dir.path()),
            disk.display()
        ),
    )
    .unwrap();
    fs::write(dir.path().join("controller.token"), "node-token-123\n").unwrap();
    let (ok, out, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("into subvolume os of LABEL=os"), "{out}");
    assert_eq!(fs::metadata(&disk).unwrap().len(), 256 << 20);
    let id = terra_init::probe::probe_fs(&mut fs::File::open(&disk).unwrap()).unwrap();
    assert_eq!(id.label.as_deref(), Some("os"));
    let m = Mount::new(&[&disk]);
    let all = subvolumes(m.path());
    let (chains, subvols): (Vec<&String>, Vec<&String>) = all
        .iter()
        .partition(|s| s.starts_with(".terra/layers/sha256-"));
    assert_eq!(subvols, ["home", "os", "persist", "var-log"]);
    assert_eq!(
        chains.len(),
        2,
        "one read-only chain subvolume per layer: {all:?}"
    );
    let root = m.path().join("os");
    // The first version: read-only, the default, recorded with its image's digest.
    let ro = sh(Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(&root)
        .arg("ro"));
    assert_eq!(ro.trim(), "ro=true");
    let state = terra_init::bootstate::load(m.path()).unwrap().unwrap();
    assert_eq!(state.default, "os");
    assert_eq!(state.versions.len(), 1);
    assert!(state.versions[0].digest.starts_with("sha256:"), "{state:?}");
    assert_eq!(state.versions[0].chains.len(), 2);
    assert_eq!(
        fs::read_to_string(m.path().join(".terra/node.toml")).unwrap(),
        fs::read_to_string(&node).unwrap(),
        "the node's config is kept on the disk for upgrades"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(m.path().join(".terra/node.toml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "it may hold CHAP secrets"
    );
    // The controller's token beside it, where stage0 reads it, for root alone.
    let token = m.path().join(".terra/controller.token");
    assert_eq!(fs::read_to_string(&token).unwrap(), "node-token-123");
    assert_eq!(
        fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/fstab")).unwrap(),
        "# written by terra install\n\
         LABEL=os / btrfs subvol=/os 0 0\n\
         LABEL=os /home btrfs subvol=/home 0 0\n\
         LABEL=os /var/log btrfs subvol=/var-log 0 0\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "terra-test-01\n"
    );
    assert!(root.join("var/log").is_dir());
    // The image itself, checked against a plain unpack of it.
    let plain = dir.path().join("plain");
    let (ok, _, err) = run_terra(&[
        "image",
        "unpack",
        &image(dir.path()),
        plain.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let mut want = snapshot(&plain);
    let mut got = snapshot(&root);
    for k in [
        "etc/fstab",
        "etc/hostname",
        "var",
        "var/log",
        "home",
        "etc",
        "dev",
        "proc",
        "sys",
        "run",
    ] {
        want.remove(k);
        got.remove(k);
    }
    assert_same(&got, &want, "installed root vs plain unpack");
    drop(m);

    // Installing again onto the disk that now holds a filesystem is refused…
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "disk {} holds a btrfs filesystem labelled \"os\"",
            disk.display()
        )) && err.contains("--force"),
        "{err}"
    );
    // …unless forced.
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap(), "--force"]);
    assert!(ok, "{err}");
}

#[test]
fn raid1_over_two_image_files_with_disks_from_the_command_line() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    for f in [&a, &b] {
        fs::File::create(f).unwrap().set_len(300 << 20).unwrap();
    }
    let node = dir.path().join("node.toml");
    fs::write(
        &node,
        "[boot]\nversion = \"v1\"\n[[groups]]\nlabel = \"pool\"\ntype = \"raid1\"\n\
         [[groups.disk]]\ndevice = \"/dev/placeholder-a\"\n[[groups.disk]]\ndevice = \"/dev/placeholder-b\"\n",
    )
    .unwrap();
    let (ok, out, err) = run_terra(&[
        "install",
        node.to_str().unwrap(),
        "--image",
        &image(dir.path()),
        "--disk",
        a.to_str().unwrap(),
        "--disk",
        b.to_str().unwrap(),
        "--uuid",
        "7e44a1a0-5ca1-4e00-9000-0000000000c3",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("group pool (raid1)"), "{out}");
    for f in [&a, &b] {
        let id = terra_init::probe::probe_fs(&mut fs::File::open(f).unwrap()).unwrap();
        assert_eq!(id.label.as_deref(), Some("pool"));
        assert_eq!(
            id.uuid.as_deref(),
            Some("7e44a1a0-5ca1-4e00-9000-0000000000c3")
        );
    }
    let m = Mount::new(&[&a, &b]);
    let df = sh(Command::new("btrfs")
        .args(["filesystem", "df"])
        .arg(m.path()));
    assert!(
        df.contains("Data, RAID1") && df.contains("Metadata, RAID1"),
        "{df}"
    );
    let all = subvolumes(m.path());
    assert!(all.contains(&"v1".to_string()), "{all:?}");
    assert_eq!(
        fs::read_to_string(m.path().join("v1/etc/fstab")).unwrap(),
        "# written by terra install\nLABEL=pool / btrfs subvol=/v1 0 0\n"
    );
    assert_eq!(
        fs::read_to_string(m.path().join("v1/etc/os-release")).unwrap(),
        "NAME=test\n"
    );
}

#[test]
fn missing_disk_without_size_and_bad_profiles_are_refused() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.toml");
    let nowhere: PathBuf = dir.path().join("nowhere.img");
    fs::write(
        &node,
        format!(
            "image = \"{}\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"{}\"\n",
            image(dir.path()),
            nowhere.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!("disk {}: does not exist", nowhere.display())),
        "{err}"
    );
    let (ok, _, err) = run_terra(&[
        "install",
        node.to_str().unwrap(),
        "--disk",
        "/a",
        "--disk",
        "/b",
    ]);
    assert!(
        !ok && err.contains("2 --disk given but node.toml has 1 disks"),
        "{err}"
    );
    fs::write(&node, "bogus = 1\n").unwrap();
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(!ok && err.contains("bogus"), "{err}");
    // A controller without its token file is named before any disk is made.
    let disk = dir.path().join("made.img");
    fs::write(
        &node,
        format!(
            "image = \"{}\"\n[[groups]]\nlabel = \"os\"\n[[groups.disk]]\ndevice = \"{}\"\n\
             size = 256\n[controller]\nurl = \"http://10.0.2.2:8080\"\n",
            image(dir.path()),
            disk.display()
        ),
    )
    .unwrap();
    let (ok, _, err) = run_terra(&["install", node.to_str().unwrap()]);
    assert!(
        !ok && err.contains("controller.token_file") && err.contains("controller.token"),
        "{err}"
    );
    assert!(!disk.exists(), "a disk was made");
}

/// A directory to put on `PATH`: a symlink to every program of the host's `PATH` except
/// `without`, so a run sees this host minus those tools.
fn path_without(dir: &Path, without: &[&str]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let link = dir.join(&name);
            if without.iter().any(|w| name == *w) || link.exists() {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), link).unwrap();
        }
    }
    for w in without {
        assert!(!dir.join(w).exists());
    }
    dir.to_path_buf()
}

/// `path`'s SHA-256 by coreutils' sha256sum (an independent reader of the whole image).
fn sha256_file(path: &Path) -> String {
    sh(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `mbr = true` needs GRUB and mtools; when one is missing the install fails naming it and
/// its Debian package before anything is written: the disk (a filesystem worth keeping,
/// overwritable with --force) is byte for byte what it was.
#[test]
fn a_bootable_install_without_grub_or_mtools_leaves_the_disk_untouched() {
    let _disks = crate::common::host_disks(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    fs::File::create(&disk).unwrap().set_len(400 << 20).unwrap();
    sh(Command::new("mkfs.btrfs")
        .args(["-q", "-L", "precious"])
        .arg(&disk));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(SeekFrom::Start(300 << 20)).unwrap();
        f.write_all(&b"terra: keep me ".repeat(4096)).unwrap();
    }
    let before = sha256_file(&disk);
    let node = dir.path().join("node.toml");
    fs::write(
        &node,
        format!(
            "image = \"{}\"\n[[groups]]\nlabel = \"os\"\nmbr = true\n[[groups.disk]]\ndevice = \"{}\"\n",
            image(dir.path()),
            disk.display()
        ),
    )
    .unwrap();
    for (missing, package) in [("grub-mkimage", "grub-common"), ("mcopy", "mtools")] {
        let bin = path_without(&dir.path().join(format!("bin-{missing}")), &[missing]);
        let out = terra()
            .args(["install", node.to_str().unwrap(), "--force"])
            .env("PATH", &bin)
            // What disk_boot.rs packs as stage0: the check must stop on the tool alone.
            .env("TERRA_STAGE0", "/bin/busybox")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "installed without {missing}: {err}");
        assert!(
            err.contains(&format!("{missing}: not found (apt-get install {package})"))
                && err.contains("before anything was written"),
            "{err}"
        );
        assert_eq!(
            sha256_file(&disk),
            before,
            "the disk changed although {missing} is missing"
        );
    }
    let id = terra_init::probe::probe_fs(&mut fs::File::open(&disk).unwrap()).unwrap();
    assert_eq!(id.label.as_deref(), Some("precious"));
}
