//! Root versions on a disk: `terra upgrade`, `terra versions`, `terra bless`, `terra
//! rollback`, `terra gc`, and the version `terra install` makes first.
//!
//! A version is a read-only btrfs subvolume at the top level of the root group; the boot
//! state beside it (`.terra/state.json`, [`terra_init::bootstate`]) says which is the
//! default, which is tentative and which are bad. Each image layer chain (OCI chain ID)
//! is kept as a read-only subvolume under `.terra/layers`, so an upgrade snapshots the
//! longest chain it shares with what is on the disk and unpacks only the layers above it.
//!
//! Crash safety, step by step: work happens in `.terra/staging-<name>`, which every
//! operation sweeps first, with a `.terra/pending-<name>` marker for a version between
//! its subvolume and the stored state; a chain subvolume appears only
//! complete (a snapshot taken after its layer is applied); a version subvolume is renamed
//! into place only complete and read-only; and it becomes a candidate only when the state
//! that names it has been stored (write, fsync, rename). So a kill at any point leaves the
//! old state with its default, and a re-run completes.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use terra_init::bootstate::{
    self, BootState, StateError, Status, Version, DEFAULT_TRIES, LAYERS_DIR, NODE_FILE, STATE_DIR,
};
use terra_init::config::{Group, NodeConfig};

use crate::bootdisk;
use crate::bootfiles::{self, BootFilesError, BootInitramfs, KernelDir};
use crate::install::{self, InstallError, Loops, Mounted};
use crate::oci::progress::Phase;
use crate::oci::verify::KeyError;
use crate::oci::{
    self, ApplyOptions, Image, ImageRef, OciError, ResolveOptions, TrustedKey, UnpackReport,
    VerifyPolicy,
};
use crate::oci::{Progress, Silent};
use crate::tool::{self, ToolError};

/// Where `terra upgrade` and friends act.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Disks, disk images or LUN files of the root group; empty means the running system
    /// (found from `/run/terra/boot.json`).
    pub disks: Vec<PathBuf>,
}

/// Why a version operation stopped; each names the disk, version or image.
#[derive(Debug)]
pub enum VersionsError {
    /// Disks, loop devices, mounts.
    Install(InstallError),
    /// The boot state.
    State(StateError),
    /// The image.
    Image(OciError),
    /// A host tool.
    Tool(ToolError),
    /// Not enough free space for the layers to unpack.
    NoSpace {
        /// The disk (or the running system's root device).
        disk: String,
        /// What is needed at least, bytes.
        need: u64,
        /// What is free, bytes.
        free: u64,
    },
    /// The operation makes no sense here.
    Refused(String),
    /// The kernel a version carries: its files or its initramfs.
    Kernel {
        /// The version.
        version: String,
        /// What went wrong.
        err: crate::bootfiles::BootFilesError,
    },
    /// A file of the disk.
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
}

impl fmt::Display for VersionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionsError::Install(e) => e.fmt(f),
            VersionsError::State(e) => e.fmt(f),
            VersionsError::Image(e) => e.fmt(f),
            VersionsError::Tool(e) => e.fmt(f),
            VersionsError::Kernel { version, err } => write!(f, "version {version}: {err}"),
            VersionsError::NoSpace { disk, need, free } => write!(
                f,
                "{disk}: not enough free space: the new layers need at least {} MiB, {} MiB \
                 are free (nothing was written; `terra gc --keep N` frees old versions)",
                need >> 20,
                free >> 20
            ),
            VersionsError::Refused(why) => f.write_str(why),
            VersionsError::Io { path, err } => write!(f, "{}: {err}", path.display()),
        }
    }
}

impl std::error::Error for VersionsError {}

macro_rules! from_error {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for VersionsError {
            fn from(e: $t) -> Self { VersionsError::$v(e) }
        }
    )*};
}
from_error!(InstallError => Install, StateError => State, OciError => Image, ToolError => Tool);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VersionsError + '_ {
    move |err| VersionsError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The top level of a root group's filesystem, mounted read-write for the duration.
pub struct Top {
    /// The mount point.
    pub path: PathBuf,
    /// What to call the disk in messages.
    pub disk: String,
    /// The filesystem label.
    pub label: String,
    /// The version the running system booted (running-system mode only).
    pub booted: Option<String>,
    /// Kernel names of the disks attached for `--disk` (where the ESP is looked for);
    /// empty on the running system (every block device).
    pub disks: Vec<String>,
    _lock: fs::File,
    _mounted: Mounted,
    _loops: Loops,
    _work: oci::image::TempDir,
}

/// Mounts the top level of the root group on `target`'s disks (or the running system's
/// root device), takes the version lock and sweeps what a killed run left.
pub fn open(target: &Target) -> Result<Top, VersionsError> {
    if !rustix::process::geteuid().is_root() {
        return Err(VersionsError::Refused(
            "versions live on btrfs subvolumes: run as root (mount, loop devices)".into(),
        ));
    }
    let work = oci::image::temp_dir("terra-versions")?;
    let work_guard = oci::image::TempDir(work.clone());
    let mnt = work.join("top");
    let mut loops = Loops(Vec::new());
    let mut disks = Vec::new();
    let (mounted, disk, booted, first_dev) = if target.disks.is_empty() {
        let report = fs::read(terra_init::layout::BOOT_REPORT).map_err(|e| {
            VersionsError::Refused(format!(
                "{}: {e}: without --disk, terra acts on the running system, which must have \
                 booted a version with Terra",
                terra_init::layout::BOOT_REPORT
            ))
        })?;
        let booted =
            terra_init::bless::booted_from_report(&report).map_err(VersionsError::Refused)?;
        fs::create_dir_all(&mnt).map_err(io_err(&mnt))?;
        tool::run(
            Command::new("mount")
                .args(["-t", "btrfs", "-o", &booted.top_options])
                .arg(&booted.device)
                .arg(&mnt),
            "mount",
        )?;
        (
            Mounted(mnt.clone()),
            booted.device.clone(),
            Some(booted.name),
            booted.device,
        )
    } else {
        let group = Group {
            disk: target
                .disks
                .iter()
                .map(|d| terra_init::config::Disk {
                    device: d.to_string_lossy().into_owned(),
                    size: None,
                })
                .collect(),
            ..Default::default()
        };
        let devs = install::attach(&group, &mut loops)?;
        disks = devs
            .iter()
            .filter_map(|d| Some(Path::new(d).file_name()?.to_str()?.to_string()))
            .collect();
        // A bootable disk (mbr = true) holds the filesystem in its terra-root partition.
        let devs: Vec<String> = devs.iter().map(|d| bootdisk::root_member(d)).collect();
        // A copy of a disk image carries its filesystem's UUID; the kernel may still hold
        // a registration of that UUID on a loop device that is gone. Forget unmounted ones.
        let _ = Command::new("btrfs")
            .args(["device", "scan", "--forget"])
            .output();
        let mounted = install::mount(&devs, &mnt)?;
        let disk = target
            .disks
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        (mounted, disk, None, devs[0].clone())
    };
    // The label from the superblock (stage0's prober), not a `btrfs filesystem label` run.
    let label = fs::File::open(&first_dev)
        .and_then(|mut f| terra_init::probe::probe_fs(&mut f))
        .map_err(io_err(Path::new(&first_dev)))?
        .label
        .unwrap_or_default();
    let dir = mnt.join(STATE_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let lock_path = dir.join("lock");
    let lock = fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            VersionsError::Refused(format!(
                "{disk}: another terra is changing its versions ({} is locked)",
                lock_path.display()
            ))
        },
    )?;
    let top = Top {
        path: mnt,
        disk,
        label,
        booted,
        disks,
        _lock: lock,
        _mounted: mounted,
        _loops: loops,
        _work: work_guard,
    };
    sweep(&top.path)?;
    // Like the sweep, finish what a killed run left: an ESP behind the stored default.
    if let Ok(Some(state)) = bootstate::load(&top.path) {
        follow_esp(&top, &state.default);
    }
    Ok(top)
}

/// Brings the disk's ESP, when it boots from one (`.terra/esp`), to the default version.
/// A failure is said, not returned: the stored state is the truth, and the next `terra`
/// command on the disk (every one syncs when it opens it) or `bless` catches up. Returns a
/// note for the user when the ESP changed.
fn follow_esp(top: &Top, default: &str) -> String {
    let synced = crate::bootdisk::follow_default(&top.path, default, &top.disks, &mut |step| {
        crash_point(step.name())
    });
    match synced {
        Ok(Some(true)) => format!("; the ESP boots {default} now"),
        Ok(_) => String::new(),
        Err(e) => {
            log_line(&format!(
                "warning: the ESP was not brought to {default}: {e} (the boot state is \
                 stored; the next terra command on this disk retries)"
            ));
            String::new()
        }
    }
}

impl Top {
    /// The boot state; a filesystem without one was not installed with versions.
    pub fn state(&self) -> Result<BootState, VersionsError> {
        bootstate::load(&self.path)?.ok_or_else(|| {
            VersionsError::Refused(format!(
                "{}: no {}/{} (installed before versions, or not by terra install)",
                self.disk,
                STATE_DIR,
                bootstate::STATE_FILE
            ))
        })
    }

    /// Stores the boot state crash-safely.
    pub fn store(&self, state: &mut BootState) -> Result<(), VersionsError> {
        Ok(bootstate::store(&self.path, state)?)
    }

    /// The node.toml `terra install` kept on the disk (empty when there is none).
    pub fn node(&self) -> Result<NodeConfig, VersionsError> {
        let p = self.path.join(STATE_DIR).join(NODE_FILE);
        NodeConfig::load(&p).map_err(|e| VersionsError::Install(InstallError::Config(e)))
    }
}

fn staging_name(name: &str) -> String {
    format!("staging-{name}")
}

fn pending_marker(top: &Path, name: &str) -> PathBuf {
    top.join(STATE_DIR).join(format!("pending-{name}"))
}

/// Drops the marker once the state that names `name` is stored.
pub fn settled(top: &Path, name: &str) {
    let _ = fs::remove_file(pending_marker(top, name));
}

/// Deletes what a killed run left: staging subvolumes, and versions that no stored state
/// names while their `pending-` marker is still there (renamed into place but never
/// stored, or forgotten by a collection but not yet deleted).
fn sweep(top: &Path) -> Result<(), VersionsError> {
    let dir = top.join(STATE_DIR);
    let mut leftovers = Vec::new();
    let mut markers = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("staging-") {
            leftovers.push(entry.path());
        } else if let Some(version) = name.strip_prefix("pending-") {
            markers.push((entry.path(), version.to_string()));
        }
    }
    if !markers.is_empty() {
        let state = bootstate::load(top)?;
        for (marker, version) in markers {
            let known = state.as_ref().is_some_and(|s| s.get(&version).is_some());
            let path = top.join(&version);
            // The subvolume goes first, the marker after: a kill in between leaves the
            // marker for the next sweep.
            if !known && path.exists() && !remove_leftover(&path) {
                continue;
            }
            if let Err(e) = fs::remove_file(&marker) {
                log_line(&format!("cannot remove {}: {e}", marker.display()));
            }
        }
    }
    for p in leftovers {
        remove_leftover(&p);
    }
    Ok(())
}

/// Deletes a subvolume an interrupted run left; a failure is said, not fatal (it must not
/// stop `rollback` or `versions`). Returns whether it is gone.
fn remove_leftover(path: &Path) -> bool {
    log_line(&format!(
        "removing {} left by an interrupted run",
        path.display()
    ));
    match subvolume_delete(path) {
        Ok(()) => true,
        Err(e) => {
            log_line(&format!("cannot remove {}: {e}", path.display()));
            false
        }
    }
}

/// Test hook: with `TERRA_CRASH_AT=<point>` in the environment, the process kills itself
/// with SIGKILL at that point, so tests can show each step is crash-safe (README,
/// "Versions"). Points: `unpacked`, `chained`, `renamed`, `built`, `stored`, `forgotten`,
/// and those of an ESP sync (`esp-slot`, `esp-staged`, `esp-renamed`, [`terra_init::esp::Step`]);
/// the controller's provisioning steps use it too.
pub fn crash_point(point: &str) {
    if std::env::var_os("TERRA_CRASH_AT").is_some_and(|v| v == point) {
        eprintln!("terra: TERRA_CRASH_AT={point}: killing myself");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

fn log_line(msg: &str) {
    eprintln!("terra: {msg}");
}

fn subvolume_delete(path: &Path) -> Result<(), VersionsError> {
    tool::run(
        Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(path),
        "btrfs-progs",
    )?;
    Ok(())
}

fn snapshot(src: &Path, dst: &Path, read_only: bool) -> Result<(), VersionsError> {
    let mut cmd = Command::new("btrfs");
    cmd.args(["subvolume", "snapshot"]);
    if read_only {
        cmd.arg("-r");
    }
    tool::run(cmd.arg(src).arg(dst), "btrfs-progs")?;
    Ok(())
}

/// The OCI chain IDs of `diff_ids`: the first is its diff_id, each next one
/// `sha256(previous + " " + diff_id)` (image-spec, config.md "Layer ChainID").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {d}").as_bytes());
                let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}")
            }
        };
        out.push(next);
    }
    out
}

/// A chain ID as a subvolume name (`sha256:ab…` → `sha256-ab…`).
fn chain_dir(top: &Path, chain: &str) -> PathBuf {
    top.join(STATE_DIR)
        .join(LAYERS_DIR)
        .join(chain.replace(':', "-"))
}

/// Free bytes for unprivileged data on the filesystem at `path`.
fn free_bytes(path: &Path) -> Result<u64, VersionsError> {
    let st = rustix::fs::statvfs(path).map_err(|e| VersionsError::Io {
        path: path.to_path_buf(),
        err: e.into(),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What a new version is made from and how it is written.
pub struct NewVersion<'a> {
    /// Its subvolume name.
    pub name: &'a str,
    /// The image, resolved and checked.
    pub image: &'a Image,
    /// The reference as the user gave it, for the state.
    pub reference: &'a str,
    /// The node config kept on the disk (fstab, hostname, mount points).
    pub node: &'a NodeConfig,
    /// The root group's label.
    pub label: &'a str,
    /// Layer application options.
    pub apply: &'a ApplyOptions,
    /// Leave it writable (images that need a writable root; `rw` mounts it so).
    pub writable: bool,
    /// Check the blobs of the layers to unpack before writing (false when the caller
    /// checked every blob already).
    pub verify: bool,
    /// When the image carries a kernel, build its initramfs so (`None`: the version
    /// boots on whatever kernel boots the machine).
    pub boot: Option<&'a BootInitramfs>,
    /// Told of each layer unpacked and its bytes.
    pub progress: &'a dyn Progress,
}

/// What building a version did.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// Layers the image has.
    pub layers: usize,
    /// Layers taken from a chain already on the disk (a snapshot, no unpack).
    pub reused: usize,
    /// The layers unpacked.
    pub unpack: UnpackReport,
    /// The kernel it carries, with its initramfs.
    pub kernel: Option<KernelDir>,
}

/// Makes version `v.name` under `top`: snapshot of the longest chain on the disk, the
/// remaining layers applied one by one (each leaving its chain subvolume), the node's
/// files, read-only, renamed into place. Returns the state entry (not stored: the caller
/// adds it to the state) and what was done. A failure deletes the staging subvolume.
pub fn build_version(top: &Path, v: &NewVersion) -> Result<(Version, Built), VersionsError> {
    let diff_ids = &v.image.config.rootfs.diff_ids;
    if diff_ids.len() != v.image.layers.len() {
        return Err(VersionsError::Refused(format!(
            "{}: {} layers but {} diff_ids in the config",
            v.image.reference,
            v.image.layers.len(),
            diff_ids.len()
        )));
    }
    let chains = chain_ids(diff_ids);
    let have = chains
        .iter()
        .rposition(|c| chain_dir(top, c).is_dir())
        .map_or(0, |i| i + 1);
    // Layers below `have` are on the disk already, made from verified blobs: only the
    // ones to unpack are read now, all of them before anything is written.
    if v.verify {
        v.image.verify_layers_from(have)?;
    }
    // Never start what cannot fit. Compressed sizes are a lower
    // bound on what unpacking writes; a full disk later is still caught and cleaned up.
    let need: u64 = v.image.layers[have..]
        .iter()
        .map(|l| l.size.unwrap_or(0))
        .sum();
    let free = free_bytes(top)?;
    if need > free {
        return Err(VersionsError::NoSpace {
            disk: top.display().to_string(),
            need,
            free,
        });
    }
    let layers_dir = top.join(STATE_DIR).join(LAYERS_DIR);
    fs::create_dir_all(&layers_dir).map_err(io_err(&layers_dir))?;
    let staging = top.join(STATE_DIR).join(staging_name(v.name));
    if have > 0 {
        snapshot(&chain_dir(top, &chains[have - 1]), &staging, false)?;
    } else {
        install::subvolume_create(&staging)?;
    }
    let built = fill(top, &staging, v, &chains, have);
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = subvolume_delete(&staging);
            return Err(disk_full(e, top));
        }
    };
    // Renamed while writable (btrfs refuses to move a read-only subvolume), then made
    // read-only; until the caller stores a state that names it, it is not a candidate.
    let dest = top.join(v.name);
    // The marker names the subvolume as ours until a stored state does: a run killed
    // between the rename and the store leaves it for the next run's sweep to remove.
    let marker = pending_marker(top, v.name);
    fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&marker))?;
    fs::rename(&staging, &dest).map_err(io_err(&dest))?;
    crash_point("renamed");
    if !v.writable {
        tool::run(
            Command::new("btrfs")
                .args(["property", "set", "-ts"])
                .arg(&dest)
                .args(["ro", "true"]),
            "btrfs-progs",
        )?;
    }
    let version = Version {
        name: v.name.to_string(),
        status: Status::Tentative,
        tries_left: 0,
        image: v.reference.to_string(),
        digest: v
            .image
            .manifest_digest
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
        created: bootstate::now_rfc3339(),
        confirmed: 0,
        chains,
        reason: None,
        writable: v.writable,
        verified_by: v
            .image
            .verified
            .as_ref()
            .map(|k| format!("{} ({})", k.key, k.key_fingerprint)),
        kernel: built.kernel.as_ref().map(|k| k.release.clone()),
        extra: Default::default(),
    };
    Ok((version, built))
}

/// The steps between the staging snapshot and the rename.
fn fill(
    top: &Path,
    staging: &Path,
    v: &NewVersion,
    chains: &[String],
    have: usize,
) -> Result<Built, VersionsError> {
    let mut built = Built {
        layers: chains.len(),
        reused: have,
        unpack: UnpackReport::default(),
        kernel: None,
    };
    let todo = &v.image.layers[have.min(v.image.layers.len())..];
    let _phase = Phase::start(
        v.progress,
        "unpack",
        todo.len(),
        todo.iter().filter_map(|l| l.size).sum(),
    );
    for (i, (layer, chain)) in v.image.layers.iter().zip(chains).skip(have).enumerate() {
        v.progress.item(i, &layer.name);
        let mut u = oci::apply::Unpacker::new(staging, v.apply.clone())?;
        u.apply_layer_with(layer, v.progress)?;
        let r = u.finish()?;
        crash_point("unpacked");
        built.unpack.layers += 1;
        built.unpack.entries += r.entries;
        built.unpack.whiteouts += r.whiteouts;
        built.unpack.bytes += r.bytes;
        built.unpack.skipped_devices += r.skipped_devices;
        // A snapshot is created whole or not at all, and btrfs flushes the source's
        // data first: a chain subvolume that exists is complete.
        snapshot(staging, &chain_dir(top, chain), true)?;
        crash_point("chained");
    }
    write_node_files(staging, v.node, v.label, v.name)?;
    let kernel_err = |err| VersionsError::Kernel {
        version: v.name.to_string(),
        err,
    };
    clear_kernel_dir(staging).map_err(kernel_err)?;
    if let Some(spec) = v.boot {
        built.kernel = carried_kernel(staging, spec).map_err(kernel_err)?;
        crash_point("kernel");
    }
    // Everything on disk before the version can be named by a stored state: the node's
    // files were written after the last chain snapshot flushed the tree.
    let dir = fs::File::open(staging).map_err(io_err(staging))?;
    rustix::fs::syncfs(&dir).map_err(|e| VersionsError::Io {
        path: staging.to_path_buf(),
        err: e.into(),
    })?;
    Ok(built)
}

/// Removes an image's own `boot/terra`: it could hold anything (symlinks to the build
/// host's files included), and only what the builder writes there may count as the
/// version's kernel. `boot` itself must stay inside the tree.
fn clear_kernel_dir(staging: &Path) -> Result<(), BootFilesError> {
    let boot = staging.join("boot");
    if fs::symlink_metadata(&boot).is_err() {
        return Ok(());
    }
    let inside = match (boot.canonicalize(), staging.canonicalize()) {
        (Ok(b), Ok(r)) => b.starts_with(&r).then_some(b),
        _ => None,
    };
    let Some(boot) = inside else {
        return Err(BootFilesError::Escapes {
            path: staging.join("boot"),
            root: staging.to_path_buf(),
        });
    };
    let dir = boot.join("terra");
    let io = |err| BootFilesError::Io {
        path: dir.clone(),
        err,
    };
    match fs::symlink_metadata(&dir) {
        // remove_dir_all does not follow symlinks inside the tree it removes.
        Ok(m) if m.is_dir() => fs::remove_dir_all(&dir).map_err(io),
        Ok(_) => fs::remove_file(&dir).map_err(io),
        Err(_) => Ok(()),
    }
}

/// The kernel directory of a version being built (`boot/terra`), when its tree carries a
/// kernel with modules.
fn carried_kernel(
    staging: &Path,
    spec: &BootInitramfs,
) -> Result<Option<KernelDir>, BootFilesError> {
    let Some(kernel) = bootfiles::find_kernel(staging)? else {
        return Ok(None);
    };
    let escapes = || BootFilesError::Escapes {
        path: staging.join(bootstate::KERNEL_DIR),
        root: staging.to_path_buf(),
    };
    // `boot` is the image's: made beneath the root, and checked to stay there before
    // anything is written through the path.
    oci::apply::mkdir_beneath(staging, bootstate::KERNEL_DIR).map_err(|_| escapes())?;
    let dest = staging.join(bootstate::KERNEL_DIR);
    let inside = match (dest.canonicalize(), staging.canonicalize()) {
        (Ok(d), Ok(r)) => d.starts_with(r),
        _ => false,
    };
    if !inside {
        return Err(escapes());
    }
    bootfiles::write_kernel_dir(&dest, &kernel, spec).map(Some)
}

/// A full disk while unpacking, said as such.
fn disk_full(e: VersionsError, top: &Path) -> VersionsError {
    let text = e.to_string();
    if text.contains("os error 28") || text.contains("No space left") {
        return VersionsError::NoSpace {
            disk: top.display().to_string(),
            need: 0,
            free: free_bytes(top).unwrap_or(0),
        };
    }
    e
}

/// `/etc/fstab`, `/etc/hostname` and the mount points of the node's subvolumes.
fn write_node_files(
    root: &Path,
    node: &NodeConfig,
    label: &str,
    name: &str,
) -> Result<(), VersionsError> {
    for g in &node.groups {
        for sv in g.subvolumes.iter().filter(|s| s.path != "/") {
            oci::apply::mkdir_beneath(root, &sv.path)?;
        }
    }
    // Images made FROM scratch often lack the mount points stage0 moves into the root;
    // a read-only version could never get them later.
    for dir in ["dev", "proc", "sys", "run"] {
        oci::apply::mkdir_beneath(root, dir)?;
    }
    let fstab = install::fstab(&node.groups, label, name);
    oci::apply::write_file_beneath(root, "etc/fstab", fstab.as_bytes(), 0o644)?;
    if let Some(h) = &node.hostname {
        oci::apply::write_file_beneath(root, "etc/hostname", format!("{h}\n").as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Where `terra install` keeps the node's trusted keys, inside `.terra/`: upgrades of the
/// disk are checked with them.
pub const KEYS_DIR: &str = "keys";

/// The keys node.toml's `[signature] keys` names, relative to `config_dir`.
pub fn node_keys(node: &NodeConfig, config_dir: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    node.signature
        .keys
        .iter()
        .map(|k| TrustedKey::from_file(&config_dir.join(k)))
        .collect()
}

/// The keys kept on the disk whose top level is `top`.
pub fn disk_keys(top: &Path) -> Result<Vec<TrustedKey>, KeyError> {
    let dir = top.join(STATE_DIR).join(KEYS_DIR);
    let mut paths: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Ok(Vec::new()),
    };
    paths.sort();
    paths.iter().map(|p| TrustedKey::from_file(p)).collect()
}

/// Keeps `keys` on the disk (public keys: readable by all).
pub fn keep_keys(top: &Path, keys: &[TrustedKey]) -> io::Result<()> {
    let dir = top.join(STATE_DIR).join(KEYS_DIR);
    fs::create_dir_all(&dir)?;
    for k in keys {
        let name = format!("{}.pub", k.fingerprint().hex());
        fs::write(dir.join(name), k.pem())?;
    }
    Ok(())
}

/// The policy of `given` (`--verify-key`) plus `more`; an error when `require` and there
/// is no key at all. None means the image is not checked.
pub fn combine_policy(
    given: Option<&VerifyPolicy>,
    more: Vec<TrustedKey>,
    require: bool,
    what: &str,
) -> Result<Option<VerifyPolicy>, String> {
    let mut keys: Vec<TrustedKey> = given.map(|p| p.keys().to_vec()).unwrap_or_default();
    for k in more {
        if !keys.iter().any(|o| o.fingerprint() == k.fingerprint()) {
            keys.push(k);
        }
    }
    if keys.is_empty() {
        return if require {
            Err(format!(
                "{what}: [signature] require = true but there is no key to check the image with \
                 (node.toml [signature] keys, or --verify-key)"
            ))
        } else {
            Ok(None)
        };
    }
    VerifyPolicy::new(keys).map(Some).map_err(|e| e.to_string())
}

/// `terra upgrade` options.
#[derive(Debug, Clone)]
pub struct UpgradeSpec {
    /// The image reference.
    pub reference: String,
    /// The new version's name (default `vN`).
    pub name: Option<String>,
    /// Boots it gets before it must be confirmed.
    pub tries: u32,
    /// Versions kept by the collection after the upgrade.
    pub keep: usize,
    /// Resolution (platform, plain HTTP).
    pub resolve: ResolveOptions,
    /// Layer application.
    pub apply: ApplyOptions,
    /// Leave the version writable.
    pub writable: bool,
}

impl UpgradeSpec {
    /// Defaults for `reference`.
    pub fn new(reference: &str) -> Self {
        UpgradeSpec {
            reference: reference.to_string(),
            name: None,
            tries: DEFAULT_TRIES,
            keep: DEFAULT_KEEP,
            resolve: ResolveOptions::default(),
            apply: ApplyOptions::default(),
            writable: false,
        }
    }
}

/// Versions kept unless `--keep` says otherwise.
pub const DEFAULT_KEEP: usize = 3;

/// What an upgrade did.
#[derive(Debug, Clone)]
pub enum Upgraded {
    /// A version with the same manifest digest is there already.
    Same(String),
    /// A new tentative version.
    New {
        /// Its name.
        name: String,
        /// Tries it has.
        tries: u32,
        /// The build.
        built: Built,
        /// Versions removed by the collection.
        removed: Vec<String>,
    },
}

/// `terra upgrade`: pulls and checks the image (before anything is written), then makes
/// a new tentative version and collects old ones.
pub fn upgrade(target: &Target, spec: &UpgradeSpec) -> Result<Upgraded, VersionsError> {
    upgrade_with(target, spec, &Silent)
}

/// [`upgrade`], telling `progress` of the pull of a registry image and of the layers
/// unpacked.
pub fn upgrade_with(
    target: &Target,
    spec: &UpgradeSpec,
    progress: &dyn Progress,
) -> Result<Upgraded, VersionsError> {
    let r: ImageRef = spec.reference.parse()?;
    let top = open(target)?;
    let mut state = top.state()?;
    let node = top.node()?;
    // The keys the node was installed with check every upgrade, with --verify-key's.
    let mut resolve = spec.resolve.clone();
    let kept = disk_keys(&top.path).map_err(|e| VersionsError::Refused(e.to_string()))?;
    resolve.verify = combine_policy(
        spec.resolve.verify.as_ref(),
        kept,
        node.signature.require,
        &top.disk,
    )
    .map_err(VersionsError::Refused)?;
    let image = oci::resolve_with(&r, &resolve, progress)?;
    if let Some(b) = top.booted.as_deref() {
        if state.get(b).is_some_and(|v| v.status == Status::Tentative) {
            return Err(VersionsError::Refused(format!(
                "the running version {b} is tentative: confirm it (`terra bless good`) or \
                 reject it (`terra bless bad`) before the next upgrade"
            )));
        }
    }
    let digest = image
        .manifest_digest
        .as_ref()
        .map(|d| d.to_string())
        .unwrap_or_default();
    if let Some(same) = state
        .versions
        .iter()
        .find(|v| !digest.is_empty() && v.digest == digest && v.status != Status::Bad)
    {
        return Ok(Upgraded::Same(same.name.clone()));
    }
    let name = match &spec.name {
        Some(n) if !bootstate::valid_name(n) => {
            return Err(VersionsError::Refused(format!(
                "--name {n:?}: a version name is a plain subvolume name"
            )))
        }
        Some(n) if state.get(n).is_some() => {
            return Err(VersionsError::Refused(format!(
                "{}: a version named {n:?} exists",
                top.disk
            )))
        }
        Some(n) => n.clone(),
        None => next_name(&state, &top.path),
    };
    let dest = top.path.join(&name);
    if dest.exists() {
        return Err(VersionsError::Refused(format!(
            "{}: {} exists and is not a version; choose another --name",
            top.disk,
            dest.display()
        )));
    }
    if let Some(pin) = &node.boot.version {
        log_line(&format!(
            "warning: the node's node.toml sets [boot] version = {pin:?}: stage0 boots that \
             version only (a pin); remove it there for upgrades to boot"
        ));
    }
    let boot = BootInitramfs::for_disk(&top.path.join(STATE_DIR)).map_err(|err| {
        VersionsError::Kernel {
            version: name.clone(),
            err,
        }
    })?;
    let (version, built) = build_version(
        &top.path,
        &NewVersion {
            name: &name,
            image: &image,
            reference: &spec.reference,
            node: &node,
            label: &top.label,
            apply: &spec.apply,
            writable: spec.writable,
            verify: true,
            boot: Some(&boot),
            progress,
        },
    )?;
    crash_point("built");
    state.add_tentative(version, spec.tries)?;
    top.store(&mut state)?;
    settled(&top.path, &name);
    crash_point("stored");
    let removed = collect(&top, &mut state, spec.keep)?;
    Ok(Upgraded::New {
        name,
        tries: spec.tries.max(1),
        built,
        removed,
    })
}

/// `v<N>`, N one more than the highest such name so far (at least 2: the first install
/// is `os` or its own name), skipping names taken on the disk.
fn next_name(state: &BootState, top: &Path) -> String {
    let highest = state
        .versions
        .iter()
        .filter_map(|v| v.name.strip_prefix('v')?.parse::<u64>().ok())
        .max()
        .unwrap_or(1);
    (highest + 1..)
        .map(|n| format!("v{n}"))
        .find(|n| state.get(n).is_none() && !top.join(n).exists())
        .unwrap_or_else(|| "v".into())
}

/// Removes versions beyond `keep` (never the default, the booted one, the last good or
/// the tentative one) and the chain subvolumes no remaining version stands on. Each
/// version gets a `pending-` marker, is forgotten by the stored state, then deleted: a
/// kill in between leaves a subvolume the next sweep removes.
pub fn collect(
    top: &Top,
    state: &mut BootState,
    keep: usize,
) -> Result<Vec<String>, VersionsError> {
    let doomed = state.collectable(keep.max(1), top.booted.as_deref());
    for name in &doomed {
        let marker = pending_marker(&top.path, name);
        fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&marker))?;
        state.remove(name);
    }
    if !doomed.is_empty() {
        top.store(state)?;
        crash_point("forgotten");
    }
    sweep(&top.path)?;
    // Chains: keep every prefix of a remaining version's chains.
    let wanted: std::collections::HashSet<String> = state
        .versions
        .iter()
        .flat_map(|v| v.chains.iter().map(|c| c.replace(':', "-")))
        .collect();
    let layers = top.path.join(STATE_DIR).join(LAYERS_DIR);
    if layers.is_dir() {
        for entry in fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            if !wanted.contains(entry.file_name().to_string_lossy().as_ref()) {
                subvolume_delete(&entry.path())?;
            }
        }
    }
    Ok(doomed)
}

/// One version as `terra versions` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    /// Subvolume name.
    pub name: String,
    /// `default`, `tentative`, `good` or `bad`.
    pub state: &'static str,
    /// Boots left (tentative).
    pub tries_left: u32,
    /// Image reference.
    pub image: String,
    /// Manifest digest.
    pub digest: String,
    /// When it was made.
    pub created: String,
    /// Bytes only this version holds (btrfs exclusive bytes of its subvolume).
    pub exclusive_bytes: Option<u64>,
    /// Whether the running system booted it.
    pub booted: bool,
    /// Why it is bad.
    pub reason: Option<String>,
    /// The key whose signature the image carried, when `--verify-key` checked it.
    pub verified_by: Option<String>,
    /// The release of the kernel it carries.
    pub kernel: Option<String>,
}

/// `terra versions`.
pub fn list(target: &Target) -> Result<Vec<VersionInfo>, VersionsError> {
    let top = open(target)?;
    let state = top.state()?;
    Ok(state
        .versions
        .iter()
        .map(|v| VersionInfo {
            name: v.name.clone(),
            state: state.shown_state(v),
            tries_left: v.tries_left,
            image: v.image.clone(),
            digest: v.digest.clone(),
            created: v.created.clone(),
            exclusive_bytes: exclusive_bytes(&top.path.join(&v.name)),
            booted: top.booted.as_deref() == Some(v.name.as_str()),
            reason: v.reason.clone(),
            verified_by: v.verified_by.clone(),
            kernel: v.kernel.clone(),
        })
        .collect())
}

/// Exclusive bytes of the tree at `path`, from `btrfs filesystem du` (no quotas needed).
pub fn exclusive_bytes(path: &Path) -> Option<u64> {
    let out = tool::run(
        Command::new("btrfs")
            .args(["filesystem", "du", "-s", "--raw"])
            .arg(path),
        "btrfs-progs",
    )
    .ok()?;
    out.lines().nth(1)?.split_whitespace().nth(1)?.parse().ok()
}

/// `terra bless` on a disk: confirms or rejects the tentative version.
pub fn bless(
    target: &Target,
    verdict: terra_init::bless::Verdict,
) -> Result<String, VersionsError> {
    use terra_init::bless::Verdict;
    if target.disks.is_empty() {
        return terra_init::bless::bless(verdict).map_err(VersionsError::Refused);
    }
    let top = open(target)?;
    let mut state = top.state()?;
    let tentative = state
        .tentative()
        .map(|t| t.name.clone())
        .ok_or_else(|| VersionsError::Refused(format!("{}: no tentative version", top.disk)))?;
    let msg = match verdict {
        Verdict::Good => {
            state.confirm(&tentative)?;
            format!("version {tentative} confirmed: it is the default now")
        }
        Verdict::Bad => {
            state.reject(Some(&tentative), "rejected by terra bless bad")?;
            format!(
                "version {tentative} rejected; the default stays {}",
                state.default
            )
        }
    };
    top.store(&mut state)?;
    let note = follow_esp(&top, &state.default);
    Ok(msg + &note)
}

/// `terra rollback`: the last good version becomes the default.
pub fn rollback(target: &Target) -> Result<String, VersionsError> {
    let top = open(target)?;
    let mut state = top.state()?;
    let previous = state.default.clone();
    let to = state.rollback()?;
    top.store(&mut state)?;
    let note = follow_esp(&top, &state.default);
    Ok(format!("default is now {to} (was {previous}){note}"))
}

/// `terra gc`.
pub fn gc(target: &Target, keep: usize) -> Result<Vec<String>, VersionsError> {
    let top = open(target)?;
    let mut state = top.state()?;
    collect(&top, &mut state, keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_own_kernel_dir_is_removed_without_following_its_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host-secret");
        fs::write(&host, b"secret").unwrap();
        let root = t.path().join("staging");
        fs::create_dir_all(root.join("boot/terra")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("boot/terra/vmlinuz")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("boot/terra/initramfs.img")).unwrap();
        fs::write(root.join("boot/terra/release"), b"6.1\n").unwrap();
        clear_kernel_dir(&root).unwrap();
        assert!(!root.join("boot/terra").exists());
        assert!(root.join("boot").is_dir());
        assert_eq!(fs::read(&host).unwrap(), b"secret");
        // A `boot` that leads out of the tree is refused, and the outside is left alone.
        let outside = t.path().join("outside");
        fs::create_dir_all(outside.join("terra")).unwrap();
        fs::remove_dir_all(root.join("boot")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("boot")).unwrap();
        assert!(matches!(
            clear_kernel_dir(&root),
            Err(BootFilesError::Escapes { .. })
        ));
        assert!(outside.join("terra").is_dir());
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let c = chain_ids(&[a.clone(), b]);
        assert_eq!(c[0], a);
        let h = Sha256::digest(b"sha256:aaaa sha256:bbbb");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(c[1], format!("sha256:{hex}"));
        assert!(chain_ids(&[]).is_empty());
    }
}
