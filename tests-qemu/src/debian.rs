//! Two Debian 12 (bookworm) systemd roots as OCI images in one image layout, made the way a
//! user would make them: `debootstrap --variant=minbase` with systemd, udev and dbus, a little
//! tidying (no apt lists, docs, man pages or locales; an empty `/etc/machine-id`; no host
//! `/etc/hostname` or `/etc/resolv.conf`), then the tree packed as a gzip layer.
//!
//! Image `v1` is that one layer; image `v2` is the same layer plus a second, small one that
//! changes `/etc/terra-demo-version` from `1` to `2`. Both hold a oneshot unit,
//! `terra-demo-marker.service` (wanted by and ordered after `multi-user.target`), that prints
//! [`MULTI_USER_MARKER`] with the version, then the root mount, whether `/etc` and `/var`
//! take writes, and the failed units with their errors, on the console; when the kernel
//! command line has `terra.demo=poweroff` (which [`crate::harness::boot`] always passes) a
//! transient unit powers off once every boot job is done, so units ordered after
//! `multi-user.target` (Terra's confirmation) still run. No kernel in the images, nothing
//! Terra-specific.
//!
//! The layout is built once (about two minutes, most of it downloading packages) and cached
//! under `target/lab/images/debian-bookworm-<FIXTURE_VERSION>`; concurrent callers, in this
//! process or others, wait on a lock file and then share it. Building needs root (debootstrap)
//! and Debian's mirror (`TERRA_DEBIAN_MIRROR` overrides `http://deb.debian.org/debian`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::lab_dir;
use crate::oci_root::{installed_disk_sized, put_image, put_layer, root_layer_from_dir};

/// Names the cached layout; bump it whenever what goes into the images changes.
pub const FIXTURE_VERSION: &str = "f5";

/// The Debian release the images are made from.
pub const SUITE: &str = "bookworm";

/// Packages debootstrap adds to minbase: systemd as `/sbin/init`, udev for device units
/// (`/etc/fstab` names the root by label), dbus for logind, and open-iscsi, whose iscsid
/// adopts a diskless root's session from stage0's keeper (its units start only when a
/// session exists, so local-disk boots are unchanged).
pub const PACKAGES: &str = "systemd-sysv,udev,dbus,open-iscsi";

/// The mirror used unless `TERRA_DEBIAN_MIRROR` is set.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Tag of the first image: the debootstrapped root as one layer.
pub const V1: &str = "v1";

/// Tag of the second image: v1's layer plus one setting `/etc/terra-demo-version` to `2`.
pub const V2: &str = "v2";

/// Printed on the console by the image's marker unit once `multi-user.target` is reached,
/// followed by ` version=<1|2> uptime=<guest seconds>`.
pub const MULTI_USER_MARKER: &str = "TERRA-DEBIAN-MULTI-USER";

/// The marker unit's line with the root mount: `TERRA-DEBIAN-ROOT <source> <fstype>
/// vfs=<mount options> fs=<superblock options>`.
pub const ROOT_MARKER: &str = "TERRA-DEBIAN-ROOT";

/// The marker unit's line saying whether `/etc` and `/var` take writes:
/// `TERRA-DEBIAN-WRITABLE /etc=yes|no /var=yes|no`.
pub const WRITABLE_MARKER: &str = "TERRA-DEBIAN-WRITABLE";

/// The marker unit's line with the failed units: `TERRA-DEBIAN-FAILED <units or none>`;
/// then, for each, `TERRA-DEBIAN-FAILED-UNIT <unit> Result=… ExecMainStatus=…` and the last
/// three lines of its journal.
pub const FAILED_MARKER: &str = "TERRA-DEBIAN-FAILED";

/// Printed once the boot is complete, just before the image asks systemd to power off
/// (`terra.demo=poweroff`), followed by ` state=<systemctl is-system-running>`.
pub const POWEROFF_MARKER: &str = "TERRA-DEBIAN-POWEROFF";

/// Size of the disk images [`debian_disk`] installs onto, in MiB.
pub const DISK_MB: u64 = 1024;

/// Every mtime in the layers is clamped to this (2023-11-14), like `SOURCE_DATE_EPOCH`.
const MTIME_CLAMP: u64 = 1_700_000_000;

/// Bound on debootstrap, which downloads about 40 MB of packages.
const DEBOOTSTRAP_TIMEOUT_S: u32 = 1800;

/// The marker unit's script, part of the image.
const MARKER_SCRIPT: &str = r#"#!/bin/sh
# Terra lab (tests-qemu/src/debian.rs): tells the console that systemd reached
# multi-user.target and how the system looks, and powers off once the boot is complete when
# the kernel command line has terra.demo=poweroff.
version=$(cat /etc/terra-demo-version 2>/dev/null || echo none)
echo "TERRA-DEBIAN-MULTI-USER version=$version uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "TERRA-DEBIAN-ROOT $(findmnt -n -o SOURCE,FSTYPE /) vfs=$(findmnt -n -o VFS-OPTIONS /) fs=$(findmnt -n -o FS-OPTIONS /)"
writable=""
for d in /etc /var; do
  if touch "$d/.terra-demo-write" 2>/dev/null; then rm -f "$d/.terra-demo-write"; w=yes; else w=no; fi
  writable="$writable $d=$w"
done
echo "TERRA-DEBIAN-WRITABLE$writable"
failed=$(systemctl list-units --state=failed --plain --no-legend --full \
  | awk '{ print ($1 == "●") ? $2 : $1 }' | tr '\n' ' ')
echo "TERRA-DEBIAN-FAILED ${failed:-none}"
for unit in $failed; do
  echo "TERRA-DEBIAN-FAILED-UNIT $unit $(systemctl show -p Result -p ExecMainStatus "$unit" | tr '\n' ' ')"
  journalctl -b -u "$unit" -p err --no-pager -o cat | sort -u | head -n 4 | sed "s/^/  $unit: /"
done
case " $(cat /proc/cmdline) " in
  *" terra.demo=poweroff "*)
    # From a transient unit, once every boot job (this one included) is done, so units
    # ordered after multi-user.target run first. Not `systemctl poweroff`: it asks logind
    # first, and waits 2 x 25 s when logind is down.
    systemd-run --no-block --collect --unit=terra-demo-poweroff \
      -p StandardOutput=journal+console /bin/sh -c \
      'echo "TERRA-DEBIAN-POWEROFF state=$(systemctl is-system-running --wait)"; systemctl start --no-block --job-mode=replace-irreversibly poweroff.target' ;;
esac
"#;

/// The marker unit, part of the image.
const MARKER_UNIT: &str = "[Unit]
Description=Terra lab: report multi-user.target on the console
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/terra-demo-marker
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
";

/// Printed by the writer unit once iscsid runs and the keeper is gone (or 60 s passed):
/// `TERRA-DEBIAN-ISCSID iscsid=<pids> keeper=<pids> sessions=<iscsiadm -m session>`.
pub const ISCSID_MARKER: &str = "TERRA-DEBIAN-ISCSID";

/// The writer of the keeper scenarios, for a Debian root on iSCSI (run by
/// `terra-demo-writer.service` when the kernel command line has `terra.demo=iscsi-writer`):
/// waits for open-iscsi's iscsid to adopt the session and stage0's keeper to step aside,
/// then appends a numbered line with the guest uptime to `writes.log` at the top level of
/// the root's btrfs filesystem every 200 ms for `terra.writer=` seconds, syncing each, and
/// reports errors, the keeper's and iscsid's logs, then powers off at once (a stopping
/// open-iscsi.service would log the root's session out).
const WRITER_SCRIPT: &str = concat!(
    r#"#!/bin/sh
# Terra lab (tests-qemu/src/debian.rs): writes through an iSCSI outage on a Debian root.
secs=30
for arg in $(cat /proc/cmdline); do
  case "$arg" in terra.writer=*) secs=${arg#terra.writer=} ;; esac
done
keeper() {
  for d in /proc/[0-9]*; do
    [ "$(cat $d/comm 2>/dev/null)" = keeper ] && echo ${d#/proc/}
  done
}
n=0
while { [ -n "$(keeper)" ] || ! pidof iscsid >/dev/null; } && [ $n -lt 300 ]; do
  sleep 0.2; n=$((n+1))
done
echo "TERRA-DEBIAN-ISCSID iscsid=$(pidof iscsid) keeper=$(keeper) sessions=$(iscsiadm -m session 2>&1 | tr '\n' ' ')"
echo "--- keeper.log"
cat /run/terra/keeper.log
echo "--- end keeper.log"
dev=$(findmnt -n -o SOURCE / | sed 's/\[.*//')
mkdir -p /run/terra-top
mount -o subvolid=5 "$dev" /run/terra-top || echo "TERRA-WRITER cannot mount $dev"
log=/run/terra-top/writes.log
"#,
    crate::writer::write_loop!(),
    r#"journalctl -b -u iscsid -u open-iscsi --no-pager -o short-monotonic | tail -n 40 | sed 's/^/TERRA-ISCSID-LOG /'
umount /run/terra-top
sync
systemctl poweroff --force --force
"#
);

/// The writer's unit, part of the image; it runs only on the keeper scenario's command line.
const WRITER_UNIT: &str = "[Unit]
Description=Terra lab: write through an iSCSI outage
ConditionKernelCommandLine=terra.demo=iscsi-writer
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/terra-demo-writer
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
";

/// The cached layout holding images [`V1`] and [`V2`].
#[derive(Debug, Clone)]
pub struct DebianImages {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// Manifest digest of [`V1`].
    pub v1_digest: String,
    /// Manifest digest of [`V2`].
    pub v2_digest: String,
}

impl DebianImages {
    /// The image reference for `terra` (`oci:<layout>:<tag>`).
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }

    /// The manifest digest of `tag` ([`V1`] or [`V2`]).
    pub fn digest(&self, tag: &str) -> Option<&str> {
        match tag {
            V1 => Some(&self.v1_digest),
            V2 => Some(&self.v2_digest),
            _ => None,
        }
    }
}

/// The Debian images, built on first use (needs root and Debian's mirror) and cached.
pub fn debian_images() -> crate::Result<DebianImages> {
    let images = lab_dir().join("images");
    let layout = images.join(format!("debian-{SUITE}-{FIXTURE_VERSION}"));
    if !layout.join("index.json").is_file() {
        fs::create_dir_all(&images).map_err(|e| format!("{}: {e}", images.display()))?;
        let lock_path = images.join(format!(".debian-{SUITE}-{FIXTURE_VERSION}.lock"));
        let lock =
            fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
        // Another caller may have finished while this one waited.
        if !layout.join("index.json").is_file() {
            build(&images, &layout)?;
        }
    }
    read_digests(&layout)
}

/// A disk image of [`DISK_MB`] MiB written by `terra install` from image `tag` ([`V1`] or
/// [`V2`]): label `os`, filesystem UUID `uuid`, the root in subvolume `os`. Cached under
/// target/lab/disks by tag, UUID and manifest digest; needs root.
pub fn debian_disk(
    terra: &Path,
    images: &DebianImages,
    tag: &str,
    uuid: &str,
) -> crate::Result<PathBuf> {
    let digest = images
        .digest(tag)
        .ok_or_else(|| format!("no Debian image tagged {tag:?} (there are {V1} and {V2})"))?;
    installed_disk_sized(
        terra,
        &images.reference(tag),
        "os",
        uuid,
        &format!("debian-{tag}-{uuid}-{}", &digest[7..19]),
        DISK_MB,
    )
}

/// Guest seconds since kernel start when the marker unit ran, from a console log.
pub fn multi_user_uptime(log: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| l.split(&format!("{MULTI_USER_MARKER} ")).nth(1))
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix("uptime="))
        })
        .and_then(|s| s.parse().ok())
}

/// The manifest digests of v1 and v2 in the layout's index.json.
fn read_digests(layout: &Path) -> crate::Result<DebianImages> {
    let path = layout.join("index.json");
    let text = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let index: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let digest = |tag: &str| {
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{}: no manifest tagged {tag}", path.display()))
    };
    Ok(DebianImages {
        layout: layout.to_path_buf(),
        v1_digest: digest(V1)?,
        v2_digest: digest(V2)?,
    })
}

/// Builds the layout in a work directory beside `layout` and renames it into place.
fn build(images: &Path, layout: &Path) -> crate::Result<()> {
    if !crate::host::nix_is_root() {
        return Err(format!(
            "building the Debian images ({}) needs root: debootstrap chroots and makes device \
             nodes",
            layout.display()
        ));
    }
    let work = images.join(format!(".debian-{SUITE}-{FIXTURE_VERSION}.build"));
    // Left by a build that was killed; this caller holds the lock, so nobody else uses it.
    if work.exists() {
        unmount_under(&work);
        fs::remove_dir_all(&work).map_err(|e| format!("removing {}: {e}", work.display()))?;
    }
    let built = build_in(&work);
    let placed = built.and_then(|()| {
        fs::rename(work.join("layout"), layout).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                work.join("layout").display(),
                layout.display()
            )
        })
    });
    let _ = fs::remove_dir_all(&work);
    placed
}

fn build_in(work: &Path) -> crate::Result<()> {
    let rootfs = work.join("rootfs");
    let out = work.join("layout");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mirror = std::env::var("TERRA_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());

    let start = Instant::now();
    eprintln!(
        "lab: debootstrap {SUITE} ({PACKAGES}) from {mirror} into {}",
        rootfs.display()
    );
    debootstrap(&rootfs, &mirror, PACKAGES)?;
    eprintln!(
        "lab: debootstrap took {:.0} s",
        start.elapsed().as_secs_f64()
    );
    tidy(&rootfs)?;
    add_marker(&rootfs, "1")?;

    let start = Instant::now();
    let base = root_layer_from_dir(&rootfs, MTIME_CLAMP)?;
    let base_blob = put_layer(&out, &base, true)?;
    let extra = work.join("v2");
    let etc = extra.join("etc");
    fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
    // The layer's /etc entry must not change /etc: give it the base's owner and mode.
    copy_owner_and_mode(&rootfs.join("etc"), &etc)?;
    write(&etc.join("terra-demo-version"), "2\n", 0o644)?;
    let extra_blob = put_layer(&out, &root_layer_from_dir(&extra, MTIME_CLAMP)?, true)?;
    let title = format!("Debian {SUITE} systemd root (Terra lab)");
    put_image(
        &out,
        V1,
        std::slice::from_ref(&base_blob),
        &[
            ("org.opencontainers.image.title", &title),
            ("org.opencontainers.image.version", "1"),
        ],
    )?;
    put_image(
        &out,
        V2,
        &[base_blob.clone(), extra_blob],
        &[
            ("org.opencontainers.image.title", &title),
            ("org.opencontainers.image.version", "2"),
        ],
    )?;
    eprintln!(
        "lab: packed the Debian root ({} MB tar, {} MB gzip) in {:.0} s",
        base.len() >> 20,
        base_blob.size >> 20,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lazily unmounts what a killed debootstrap left mounted under `dir` (its chroot's /proc,
/// /sys, /dev/pts), deepest first, so removing the directory cannot reach into them.
fn unmount_under(dir: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
}

/// `debootstrap --variant=minbase --include=<packages>` of [`SUITE`] from `mirror` into
/// `rootfs`, bounded in time. A failed run is tried once more from scratch (a mirror that
/// drops a connection mid-download is the usual cause); a second failure carries the end of
/// debootstrap's output and of its log (where the extracting tar's own error lands) and the
/// free space where it wrote.
pub fn debootstrap(rootfs: &Path, mirror: &str, packages: &str) -> crate::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("debootstrap").is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin/debootstrap").is_file();
    if !found {
        return Err(
            "debootstrap is missing: apt-get install debootstrap (scripts/setup-host.sh)".into(),
        );
    }
    match debootstrap_once(rootfs, mirror, packages) {
        Ok(()) => Ok(()),
        Err(first) => {
            eprintln!("lab: {first}\nlab: trying debootstrap once more");
            unmount_under(rootfs);
            let _ = fs::remove_dir_all(rootfs);
            debootstrap_once(rootfs, mirror, packages)
                .map_err(|second| format!("{second}\n(the first attempt had failed too)"))
        }
    }
}

fn debootstrap_once(rootfs: &Path, mirror: &str, packages: &str) -> crate::Result<()> {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "--kill-after=10",
        &DEBOOTSTRAP_TIMEOUT_S.to_string(),
        "debootstrap",
        "--variant=minbase",
        &format!("--include={packages}"),
        SUITE,
    ])
    .arg(rootfs)
    .arg(mirror)
    .env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let tail = |text: &str, n: usize| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log_path = rootfs.join("debootstrap/debootstrap.log");
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let timed_out = if out.status.code() == Some(124) {
        format!(" (stopped after {DEBOOTSTRAP_TIMEOUT_S} s)")
    } else {
        String::new()
    };
    let df = Command::new("df")
        .arg("-h")
        .arg(rootfs.parent().unwrap_or(rootfs))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    Err(format!(
        "debootstrap of {SUITE} from {mirror} into {} failed ({}){timed_out}:\n{}\n\
         the end of {}:\n{}\nfree space there:\n{}",
        rootfs.display(),
        out.status,
        tail(&output, 8),
        log_path.display(),
        tail(&log, 20),
        df.trim_end()
    ))
}

/// What Debian's own container images drop, and what must not come from the build host.
pub(crate) fn tidy(root: &Path) -> crate::Result<()> {
    for dir in [
        "dev",
        "run",
        "tmp",
        "var/tmp",
        "var/lib/apt/lists",
        "var/log/apt",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ] {
        clear_dir(&root.join(dir))?;
    }
    for file in [
        "etc/hostname",
        "etc/resolv.conf",
        "var/lib/dbus/machine-id",
        "var/log/bootstrap.log",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
    ] {
        remove(&root.join(file))?;
    }
    // apt's package caches and downloaded .debs, debconf's and dpkg's backups.
    for (dir, suffix) in [
        ("var/cache/apt", ".bin"),
        ("var/cache/apt/archives", ".deb"),
        ("var/cache/debconf", "-old"),
        ("var/lib/dpkg", "-old"),
    ] {
        let d = root.join(dir);
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            if e.file_name().to_string_lossy().ends_with(suffix) {
                remove(&e.path())?;
            }
        }
    }
    // Empty, not absent: with a read-only root systemd mounts a transient ID over it, and
    // commits it once the root is writable; an empty file is not a "first boot".
    write(&root.join("etc/machine-id"), "", 0o444)
}

/// The marker unit, enabled, and `/etc/terra-demo-version`.
fn add_marker(root: &Path, version: &str) -> crate::Result<()> {
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(|e| format!("{}: {e}", wants.display()))?;
    for (name, script, unit) in [
        ("terra-demo-marker", MARKER_SCRIPT, MARKER_UNIT),
        ("terra-demo-writer", WRITER_SCRIPT, WRITER_UNIT),
    ] {
        write(&root.join("usr/local/sbin").join(name), script, 0o755)?;
        let path = format!("/etc/systemd/system/{name}.service");
        write(&root.join(&path[1..]), unit, 0o644)?;
        let link = wants.join(format!("{name}.service"));
        std::os::unix::fs::symlink(&path, &link).map_err(|e| format!("{}: {e}", link.display()))?;
    }
    write(
        &root.join("etc/terra-demo-version"),
        &format!("{version}\n"),
        0o644,
    )
}

fn write(path: &Path, text: &str, mode: u32) -> crate::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn copy_owner_and_mode(from: &Path, to: &Path) -> crate::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = fs::metadata(from).map_err(|e| format!("{}: {e}", from.display()))?;
    std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid()))
        .and_then(|()| fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777)))
        .map_err(|e| format!("{}: {e}", to.display()))
}

/// Removes a file, symlink or tree; a missing one is fine.
fn remove(path: &Path) -> crate::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| format!("removing {}: {e}", path.display()))
}

/// Empties a directory, keeping it; a missing one is fine.
fn clear_dir(dir: &Path) -> crate::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        remove(&e.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uptime_comes_from_the_marker_line() {
        let log = "x\nTERRA-DEBIAN-MULTI-USER version=2 uptime=41.07\nTERRA-DEBIAN-ROOT /\n";
        assert_eq!(multi_user_uptime(log), Some(41.07));
        assert_eq!(multi_user_uptime("nothing"), None);
    }
}
