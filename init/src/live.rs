//! A live root (`root=live:LABEL=…`, as dracut's dmsquash-live spells it): the medium the
//! storage phase found (an ISO 9660 by its label, or any filesystem) holds a squashfs image
//! of the root, `LiveOS/squashfs.img` unless `rd.live.dir=`/`rd.live.squashimg=` say
//! otherwise. stage0 mounts the medium read-only, the image through a loop device, and lays
//! a tmpfs over it with overlayfs: the root takes writes, and they vanish at poweroff.
//!
//! Every mount lives under `/run/terra/live`, so it moves into the real root with `/run`
//! (`live/medium`, `live/image`, `live/rw/{upper,work}`) and the booted system can see
//! what it runs from.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::config::Live;
use crate::layout::SYSROOT;
use crate::report::RootReport;
use crate::storage::RootDevice;

/// Where the live mounts go (under /run, which moves into the real root).
pub const LIVE_DIR: &str = "/run/terra/live";

/// Modules a live root needs beyond the medium's filesystem (loaded by alias or name;
/// built-in ones cost nothing).
pub const MODULES: [&str; 3] = ["loop", "squashfs", "overlay"];

/// Why the live root could not be set up; each names the device or file and the step.
#[derive(Debug)]
pub enum LiveError {
    /// A mount(2) failed.
    Mount {
        /// What was mounted.
        source: String,
        /// Filesystem type.
        fstype: String,
        /// Where.
        target: String,
        /// Options.
        options: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The medium has no image at the expected path.
    NoImage {
        /// The medium's device.
        device: String,
        /// The path on the medium.
        path: String,
    },
    /// Attaching the image to a loop device failed.
    Loop {
        /// What was being done.
        step: &'static str,
        /// The file or device involved.
        path: String,
        /// The error.
        err: std::io::Error,
    },
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveError::Mount {
                source,
                fstype,
                target,
                options,
                errno,
            } => write!(
                f,
                "live root: cannot mount {source} ({fstype}, options {options:?}) on {target}: {errno}"
            ),
            LiveError::NoImage { device, path } => write!(
                f,
                "live root: {device} has no {path} (set rd.live.dir= and rd.live.squashimg= if the image is elsewhere)"
            ),
            LiveError::Loop { step, path, err } => {
                write!(f, "live root: {step} {path}: {err}")?;
                if err.kind() == std::io::ErrorKind::NotFound {
                    write!(f, " (is the loop module in this initramfs?)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LiveError {}

/// The squashfs image's path on the medium for `live` (no leading slash).
pub fn image_path(live: &Live) -> String {
    let dir = live.dir.trim_matches('/');
    let img = live.image.trim_start_matches('/');
    if dir.is_empty() {
        img.to_string()
    } else {
        format!("{dir}/{img}")
    }
}

/// The overlay's mount options for the three directories.
pub fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    )
}

/// Mounts the live root at /sysroot from the medium `dev`: medium, image, tmpfs, overlay.
/// `load_module` loads what the kernel needs (see [`MODULES`]).
pub fn mount_root(
    live: &Live,
    dev: &RootDevice,
    load_module: &mut dyn FnMut(&str) -> bool,
) -> Result<RootReport, LiveError> {
    for m in MODULES {
        if !load_module(m) {
            log::debug!("live root: module {m} not loaded (built in, or missing)");
        }
    }
    let base = Path::new(LIVE_DIR);
    let medium = base.join("medium");
    do_mount(
        &dev.device,
        &medium,
        &dev.fstype,
        MsFlags::MS_RDONLY,
        &dev.options,
    )?;
    let rel = image_path(live);
    let file = medium.join(&rel);
    if !file.is_file() {
        return Err(LiveError::NoImage {
            device: dev.device.clone(),
            path: format!("/{rel}"),
        });
    }
    let (loop_dev, held) = attach_loop(&file)?;
    log::info!("live root: /{rel} on {} is {loop_dev}", dev.device);
    let image = base.join("image");
    do_mount(&loop_dev, &image, "squashfs", MsFlags::MS_RDONLY, "")?;
    // The mount holds the device now; with AUTOCLEAR, closing the last fd before it would
    // have detached the image.
    drop(held);
    let rw = base.join("rw");
    do_mount("tmpfs", &rw, "tmpfs", MsFlags::empty(), "mode=0755")?;
    let (upper, work) = (rw.join("upper"), rw.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(|err| LiveError::Loop {
            step: "create",
            path: d.display().to_string(),
            err,
        })?;
    }
    let options = overlay_options(&image, &upper, &work);
    do_mount(
        "overlay",
        Path::new(SYSROOT),
        "overlay",
        MsFlags::empty(),
        &options,
    )?;
    Ok(RootReport {
        device: loop_dev,
        fstype: "overlay".into(),
        label: dev.id.label.clone(),
        uuid: dev.id.uuid.clone(),
        options,
        read_only: false,
    })
}

fn do_mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    options: &str,
) -> Result<(), LiveError> {
    let _ = std::fs::create_dir_all(target);
    let data = (!options.is_empty()).then_some(options);
    mount(Some(source), target, Some(fstype), flags, data).map_err(|errno| LiveError::Mount {
        source: source.to_string(),
        fstype: fstype.to_string(),
        target: target.display().to_string(),
        options: options.to_string(),
        errno,
    })
}

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// Attaches `file` read-only to a free loop device (`LOOP_CTL_GET_FREE`, then
/// `LOOP_CONFIGURE` in one call, so no other process can see a half-set device).
/// Returns the device node and an open fd of it: the device detaches itself
/// (`LO_FLAGS_AUTOCLEAR`) when its last user lets go, so keep the fd until it is mounted.
pub fn attach_loop(file: &Path) -> Result<(String, File), LiveError> {
    let err = |step: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |err: std::io::Error| LiveError::Loop { step, path, err }
    };
    let control = Path::new("/dev/loop-control");
    let ctl = open_waiting(control, false).map_err(err("open", control))?;
    let backing = File::open(file).map_err(err("open", file))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is open for the call's duration.
    let n = unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }
        .map_err(|e| err("find a free loop device with", control)(e.into()))?;
    let node = PathBuf::from(format!("/dev/loop{n}"));
    let dev = open_waiting(&node, true).map_err(err("open", &node))?;
    let mut name = [0u8; 64];
    let bytes = file.as_os_str().as_encoded_bytes();
    let len = bytes.len().min(63);
    name[..len].copy_from_slice(&bytes[..len]);
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            device: 0,
            inode: 0,
            rdevice: 0,
            offset: 0,
            sizelimit: 0,
            number: 0,
            encrypt_type: 0,
            encrypt_key_size: 0,
            flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            file_name: name,
            crypt_name: [0; 64],
            encrypt_key: [0; 32],
            init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `cfg` is a valid `struct loop_config` that outlives the call; the kernel only
    // reads it. Both fds are open for the call's duration.
    unsafe { loop_configure(dev.as_raw_fd(), &cfg) }
        .map_err(|e| err("attach the image to", &node)(e.into()))?;
    Ok((node.display().to_string(), dev))
}

/// Opens `path`, waiting up to a second for devtmpfs to create the node (a module just
/// loaded, a loop device just allocated).
fn open_waiting(path: &Path, write: bool) -> std::io::Result<File> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match OpenOptions::new().read(true).write(write).open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_path_joins_dir_and_name_as_dracut_does() {
        let live = |dir: &str, image: &str| Live {
            dir: dir.into(),
            image: image.into(),
        };
        assert_eq!(image_path(&Live::default()), "LiveOS/squashfs.img");
        assert_eq!(
            image_path(&live("/boot/live/", "root.sqfs")),
            "boot/live/root.sqfs"
        );
        assert_eq!(image_path(&live("", "/root.sqfs")), "root.sqfs");
    }

    #[test]
    fn kernel_structs_have_the_kernels_sizes() {
        // linux/loop.h: loop_info64 is 232 bytes, loop_config 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
