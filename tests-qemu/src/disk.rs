//! Demo roots (busybox) on btrfs disk images with subvolumes, cached under target/lab/disks.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{lab_dir, run};

/// The demo root's init: prints a marker line with the guest uptime, the boot report, then
/// powers off (`terra.demo=poweroff`, used by `--check` and the tests) or gives a shell.
pub const DEMO_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
echo "TERRA-DEMO-INIT uptime=$(cut -d' ' -f1 /proc/uptime) subvol=$(cat /etc/demo-subvol) pid=$$"
echo "TERRA-DEMO-HOSTNAME $(cat /proc/sys/kernel/hostname)"
echo "=== Terra demo root on $(uname -r) ==="
if [ -f /run/terra/boot.json ]; then
  echo "--- /run/terra/boot.json"
  cat /run/terra/boot.json
  echo
  echo "--- end boot.json"
fi
if [ -d /run/terra/network ]; then
  echo "--- network"
  ip -4 addr
  ip -4 route
  for f in /run/terra/network/*.json; do echo "--- lease $f"; cat "$f"; echo; done
  echo "--- hostname $(hostname)"
  echo "--- end network"
fi
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    terra.demo=persist)
      echo edited > /etc/demo-edit && echo "TERRA-DEMO-ETC-WRITE ok"
      echo kept > /var/lib/demo/data && echo "TERRA-DEMO-DATA-WRITE ok"
      if touch /usr/demo-write 2>/run/demo-err; then echo "TERRA-DEMO-USR-WRITE ok"
      else echo "TERRA-DEMO-USR-WRITE failed: $(cat /run/demo-err)"; fi ;;
    terra.demo=bless) /run/terra/bless good; echo "TERRA-DEMO-BLESS rc=$?" ;;
    terra.demo=health)
      # What an init other than systemd does: confirm once up (health checks first), and
      # reboot into the default when that fails. Only a tentative boot has /run/terra/bless.
      if [ -x /run/terra/bless ]; then
        /run/terra/bless good; rc=$?; echo "TERRA-DEMO-BLESS rc=$rc"
        if [ $rc -ne 0 ]; then echo "TERRA-DEMO-REBOOT"; sync; reboot -f; fi
      fi ;;
    terra.demo=modaliases)
      find /sys/devices -name modalias | while read -r f; do
        echo "TERRA-MODALIAS ${f#/sys/} $(cat "$f")"
      done ;;
  esac
done
[ -f /etc/demo-edit ] && echo "TERRA-DEMO-ETC-EDIT $(cat /etc/demo-edit)"
[ -f /var/lib/demo/data ] && echo "TERRA-DEMO-DATA $(cat /var/lib/demo/data)"
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    terra.demo=poweroff) echo "TERRA-DEMO-POWEROFF"; sync; poweroff -f ;;
  esac
done
echo "Welcome to the Terra demo root. 'poweroff -f' ends the VM."
exec setsid cttyhack sh
"#;

/// An alternative init, to test `init=`.
pub const ALT_INIT: &str = "#!/bin/sh\necho \"TERRA-ALT-INIT pid=$$\"\n/bin/poweroff -f\n";

/// Writes a busybox demo root into `dir`; `/etc/demo-subvol` holds `tag`.
pub fn demo_root(dir: &Path, busybox: &Path, tag: &str) -> crate::Result<()> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    for d in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "root", "usr",
    ] {
        fs::create_dir_all(dir.join(d)).map_err(|e| err(&dir.join(d), e))?;
    }
    let bb = dir.join("bin/busybox");
    fs::copy(busybox, &bb).map_err(|e| err(&bb, e))?;
    let list = run(Command::new(busybox).arg("--list"))?;
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link).map_err(|e| err(&link, e))?;
        }
    }
    write_exec(&dir.join("sbin/init"), DEMO_INIT)?;
    write_exec(&dir.join("bin/alt-init"), ALT_INIT)?;
    let files = [
        ("etc/demo-subvol", format!("{tag}\n")),
        (
            "etc/os-release",
            "NAME=\"Terra demo\"\nID=terra-demo\n".to_string(),
        ),
        ("etc/hostname", "terra-demo\n".to_string()),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).map_err(|e| err(&dir.join(name), e))?;
    }
    Ok(())
}

/// Writes an executable (mode 0755) file.
pub(crate) fn write_exec(path: &Path, text: &str) -> crate::Result<()> {
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A btrfs disk image: label, pinned UUID, and demo-root subvolumes.
#[derive(Debug, Clone)]
pub struct BtrfsDisk {
    /// Filesystem label.
    pub label: String,
    /// Filesystem UUID (pinned so tests can name it).
    pub uuid: String,
    /// Subvolumes, each holding a demo root tagged with its name.
    pub subvolumes: Vec<String>,
}

/// The lab's loop mounts of btrfs images take turns, threads and processes alike: copies
/// share UUIDs, the kernel refuses two mounted filesystems with one UUID, and
/// [`crate::host::forget_stale_btrfs_devices`] must not run between another mount's scan
/// and its mount. (`terra install` and `terra upgrade` mount disks of UUIDs of their own
/// and do not take it.)
pub fn mount_lock() -> crate::Result<crate::LabLock> {
    crate::lab_lock("mount")
}

impl BtrfsDisk {
    /// A disk labelled `label` with the given subvolumes.
    pub fn new(label: &str, uuid: &str, subvolumes: &[&str]) -> Self {
        BtrfsDisk {
            label: label.into(),
            uuid: uuid.into(),
            subvolumes: subvolumes.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Path of the cached image with demo roots, built on first use (needs root for the
    /// loop mount).
    pub fn image(&self, busybox: &Path) -> crate::Result<PathBuf> {
        self.image_with("demo-v6", |dir, subvol| demo_root(dir, busybox, subvol))
    }

    /// Path of the cached image whose subvolumes `fill(dir, name)` populates; `kind` names
    /// the content in the cache (change it when the content changes).
    pub fn image_with(
        &self,
        kind: &str,
        fill: impl Fn(&Path, &str) -> crate::Result<()>,
    ) -> crate::Result<PathBuf> {
        let dir = lab_dir().join("disks");
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = format!(
            "{}-{}-{}-{kind}.img",
            self.label,
            &self.uuid,
            self.subvolumes.join("+")
        );
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
        let _turn = mount_lock()?;
        // Another thread or process may have built it while this one waited.
        if path.is_file() {
            return Ok(path);
        }
        if !crate::host::nix_is_root() {
            return Err(
                "making btrfs subvolumes on a disk image needs a loop mount: run as root".into(),
            );
        }
        let tmp = crate::temp_name(&path);
        let work = tempdir("disk")?;
        let mnt = work.join("mnt");
        fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        fs::File::create(&tmp)
            .and_then(|f| f.set_len(160 << 20))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        run(Command::new("mkfs.btrfs")
            .args(["-q", "-f", "-L", &self.label, "-U", &self.uuid])
            .arg(&tmp))?;
        crate::host::forget_stale_btrfs_devices();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&tmp)
            .arg(&mnt))?;
        let filled = (|| {
            for sv in &self.subvolumes {
                run(Command::new("btrfs")
                    .args(["subvolume", "create"])
                    .arg(mnt.join(sv)))?;
                fill(&mnt.join(sv), sv)?;
            }
            Ok::<(), String>(())
        })();
        let unmounted = run(Command::new("umount").arg(&mnt));
        let _ = fs::remove_dir_all(&work);
        let done = filled
            .and(unmounted)
            .and_then(|_| crate::publish(&tmp, &path));
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done.map(|()| path)
    }
}

/// A blank (zeroed, sparse) disk image of `mb` MB at target/lab/disks/`name`.img, made
/// anew (truncated) on every call: give each caller its own `name`.
pub fn blank(name: &str, mb: u64) -> crate::Result<PathBuf> {
    let dir = lab_dir().join("disks");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.img"));
    fs::File::create(&path)
        .and_then(|f| f.set_len(mb << 20))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// A fresh directory under target/lab/tmp.
pub fn tempdir(prefix: &str) -> crate::Result<PathBuf> {
    let base = lab_dir().join("tmp");
    fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    for n in 0..1000u32 {
        let p = base.join(format!("{prefix}-{}-{n}", std::process::id()));
        if fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!(
        "cannot create a temporary directory under {}",
        base.display()
    ))
}

/// A sparse copy of `src` at `target/lab/scratch/<name>`, for a run that writes to a cached
/// image; an earlier copy of that name is replaced. The copy is made under a temporary name
/// and renamed into place, so the file at `<name>` is always whole.
pub fn scratch_copy(src: &Path, name: &str) -> crate::Result<PathBuf> {
    let dir = lab_dir().join("scratch");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dst = dir.join(name);
    let tmp = crate::temp_name(&dst);
    let copied = run(Command::new("cp").arg("--sparse=always").arg(src).arg(&tmp))
        .and_then(|_| crate::publish(&tmp, &dst));
    if copied.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    copied.map(|()| dst)
}

/// Claims scratch name `name` for the calling test (its thread, which libtest names after
/// it): scenarios run side by side in one test binary, and two of them writing one scratch
/// file would corrupt each other's runs. A name another thread of this process claimed is
/// an error naming both (pick another name); the same thread may claim it again (a test
/// or a bench that starts over from a fresh copy).
pub fn claim_scratch(name: &str) -> crate::Result<()> {
    static CLAIMED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);
    let me = std::thread::current();
    let me = me
        .name()
        .map_or_else(|| format!("{:?}", me.id()), str::to_string);
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let owner = claimed
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert_with(|| me.clone());
    if *owner == me {
        Ok(())
    } else {
        Err(format!(
            "scratch name {name:?} is used by {owner} and {me}: give each scenario its own"
        ))
    }
}

/// Runs `f` on `image` loop-mounted (read-write) at a temporary directory, unmounting after
/// (under [`mount_lock`]; stale btrfs devices forgotten before and after). A partitioned
/// image (a bootable disk `terra install` made with `mbr = true`) mounts its btrfs
/// partition. Needs root.
pub fn with_mount<T>(image: &Path, f: impl FnOnce(&Path) -> crate::Result<T>) -> crate::Result<T> {
    if !crate::host::nix_is_root() {
        return Err("mounting a disk image needs root".into());
    }
    let _turn = mount_lock()?;
    let work = tempdir("mnt")?;
    crate::host::forget_stale_btrfs_devices();
    let device = if partitioned(image)? {
        let dev = run(Command::new("losetup")
            .args(["--partscan", "--show", "--find"])
            .arg(image))?
        .trim()
        .to_string();
        let part = btrfs_partition(&dev);
        if part.is_none() {
            let _ = run(Command::new("losetup").args(["-d", &dev]));
        }
        Some((
            dev,
            part.ok_or_else(|| format!("{}: no btrfs partition", image.display()))?,
        ))
    } else {
        None
    };
    let mounted = match &device {
        Some((_, part)) => run(Command::new("mount").arg(part).arg(&work)),
        None => run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(&work)),
    };
    let out = mounted.and_then(|_| {
        let _ = run(&mut Command::new("sync"));
        let out = f(&work);
        let _ = run(Command::new("umount").arg(&work));
        out
    });
    if let Some((dev, _)) = &device {
        let _ = run(Command::new("losetup").args(["-d", dev]));
    }
    let _ = fs::remove_dir_all(&work);
    crate::host::forget_stale_btrfs_devices();
    out
}

/// Whether `image` starts with a partition table (the MBR signature, which a GPT's
/// protective MBR carries too); a whole-disk btrfs leaves those bytes zero.
fn partitioned(image: &Path) -> crate::Result<bool> {
    use std::io::Read;
    let mut sector = [0u8; 512];
    fs::File::open(image)
        .and_then(|mut f| f.read_exact(&mut sector))
        .map_err(|e| format!("{}: {e}", image.display()))?;
    Ok(sector[510..] == [0x55, 0xAA])
}

/// The partition of loop device `dev` that holds btrfs. `losetup --partscan` does not
/// always find a GPT written just before (Debian's 6.1); `partx --add` does, and the nodes
/// may show a moment later.
fn btrfs_partition(dev: &str) -> Option<String> {
    for attempt in 0..20 {
        if attempt == 1 {
            let _ = Command::new("partx").args(["--add", dev]).output();
        }
        let found = (1..=8).map(|n| format!("{dev}p{n}")).find(|p| {
            Path::new(p).exists()
                && Command::new("blkid")
                    .args(["-p", "-o", "value", "-s", "TYPE", p])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "btrfs")
        });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}
