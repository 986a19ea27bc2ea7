//! Building a version: the image's layer chains (OCI ChainIDs) kept as read-only
//! subvolumes, the longest one on the disk snapshotted and only the layers above it
//! unpacked, the node's files written, the kernel the image carries given its initramfs,
//! and free space checked first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use terra_init::bootstate::{self, Status, Version, LAYERS_DIR, STATE_DIR};
use terra_init::config::NodeConfig;

use super::crash::crash_point;
use super::disk::{fstab, snapshot, subvolume_create, subvolume_delete};
use super::top::{pending_marker, staging_name};
use super::{io_err, VersionsError};
use crate::bootfiles::{self, BootFilesError, BootInitramfs, KernelDir};
pub use crate::oci::image::chain_ids;
use crate::oci::progress::Phase;
use crate::oci::{self, ApplyOptions, Image, Progress, UnpackReport};
use crate::tool;

/// A chain ID as a subvolume name (`sha256:ab…` → `sha256-ab…`).
pub(super) fn chain_dir(top: &Path, chain: &str) -> PathBuf {
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
    /// Extensions an upgrade fetched for it (their templates expanded for its os-release).
    pub extensions: Vec<terra_init::extensions::Entry>,
}

/// Makes version `v.name` under `top`: snapshot of the longest chain on the disk, the
/// remaining layers applied one by one (each leaving its chain subvolume), the node's
/// files, read-only, renamed into place. Returns the state entry (not stored: the caller
/// adds it to the state) and what was done. A failure deletes the staging subvolume.
pub fn build_version(top: &Path, v: &NewVersion) -> Result<(Version, Built), VersionsError> {
    let staging = top.join(STATE_DIR).join(staging_name(v.name));
    let (chains, mut built) = unpack_tree(top, &staging, v.image, v.apply, v.verify, v.progress)?;
    if let Err(e) = finish(&staging, v, &mut built) {
        let _ = subvolume_delete(&staging);
        return Err(disk_full(e, top));
    }
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
        set_read_only(&dest)?;
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
        kernel_failed: None,
        health: None,
        init: v.image.config.init().map(str::to_string),
        extra: Default::default(),
    };
    Ok((version, built))
}

/// Makes a subvolume read-only.
pub(super) fn set_read_only(path: &Path) -> Result<(), VersionsError> {
    tool::run(
        Command::new("btrfs")
            .args(["property", "set", "-ts"])
            .arg(path)
            .args(["ro", "true"]),
        "btrfs-progs",
    )?;
    Ok(())
}

/// Makes the writable subvolume `staging` hold `image`'s tree: a snapshot of the longest
/// layer chain on the disk, then the layers above it applied one by one (each leaving its
/// chain subvolume), after the blobs to read are checked (`verify`) and free space is.
/// Returns the image's chain IDs and what was done; a failure deletes `staging`.
pub(super) fn unpack_tree(
    top: &Path,
    staging: &Path,
    image: &Image,
    apply: &ApplyOptions,
    verify: bool,
    progress: &dyn Progress,
) -> Result<(Vec<String>, Built), VersionsError> {
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(VersionsError::Refused(format!(
            "{}: {} layers but {} diff_ids in the config",
            image.reference,
            image.layers.len(),
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
    if verify {
        image.verify_layers_from(have)?;
    }
    // Never start what cannot fit. Compressed sizes are a lower
    // bound on what unpacking writes; a full disk later is still caught and cleaned up.
    let need: u64 = image.layers[have..]
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
    if have > 0 {
        snapshot(&chain_dir(top, &chains[have - 1]), staging, false)?;
    } else {
        subvolume_create(staging)?;
    }
    match unpack_layers(top, staging, image, apply, progress, &chains, have) {
        Ok(built) => Ok((chains, built)),
        Err(e) => {
            let _ = subvolume_delete(staging);
            Err(disk_full(e, top))
        }
    }
}

/// The layers above `have` applied on `staging`, each leaving its chain subvolume.
fn unpack_layers(
    top: &Path,
    staging: &Path,
    image: &Image,
    apply: &ApplyOptions,
    progress: &dyn Progress,
    chains: &[String],
    have: usize,
) -> Result<Built, VersionsError> {
    let mut built = Built {
        layers: chains.len(),
        reused: have,
        unpack: UnpackReport::default(),
        kernel: None,
        extensions: Vec::new(),
    };
    let todo = &image.layers[have.min(image.layers.len())..];
    let _phase = Phase::start(
        progress,
        "unpack",
        todo.len(),
        todo.iter().filter_map(|l| l.size).sum(),
    );
    for (i, (layer, chain)) in image.layers.iter().zip(chains).skip(have).enumerate() {
        progress.item(i, &layer.name);
        let mut u = oci::apply::Unpacker::new(staging, apply.clone())?;
        u.apply_layer_with(layer, progress)?;
        let r = u.finish()?;
        crash_point("unpacked");
        built.unpack.layers += 1;
        built.unpack.entries += r.entries;
        built.unpack.whiteouts += r.whiteouts;
        built.unpack.bytes += r.bytes;
        built.unpack.skipped_devices += r.skipped_devices;
        built.unpack.skipped_xattrs.extend(r.skipped_xattrs);
        // A snapshot is created whole or not at all, and btrfs flushes the source's
        // data first: a chain subvolume that exists is complete.
        snapshot(staging, &chain_dir(top, chain), true)?;
        crash_point("chained");
    }
    Ok(built)
}

/// The steps between the unpacked tree and the rename: the node's files, the kernel.
fn finish(staging: &Path, v: &NewVersion, built: &mut Built) -> Result<(), VersionsError> {
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
    sync_tree(staging)
}

/// Flushes the filesystem holding `tree`: everything on disk before a stored state can
/// name it (files written after the last chain snapshot flushed the tree).
pub(super) fn sync_tree(tree: &Path) -> Result<(), VersionsError> {
    let dir = fs::File::open(tree).map_err(io_err(tree))?;
    rustix::fs::syncfs(&dir).map_err(|e| VersionsError::Io {
        path: tree.to_path_buf(),
        err: e.into(),
    })
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
    let fstab = fstab(&node.groups, label, name);
    oci::apply::write_file_beneath(root, "etc/fstab", fstab.as_bytes(), 0o644)?;
    if let Some(h) = &node.hostname {
        oci::apply::write_file_beneath(root, "etc/hostname", format!("{h}\n").as_bytes(), 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

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
