//! Persistent state beside read-only versions (the root phase mounts it before the
//! switch, so the real init starts with it): the root group's subvolumes that the node's
//! node.toml lists, read-write where it says, and an overlay on `/etc` whose upper
//! directory lives in a persistent subvolume, so an admin's edits survive upgrades.
//!
//! The node.toml read here is the one `terra install` kept on the disk
//! (`.terra/node.toml`), not the initramfs's: the disk knows its own layout.

use std::path::Path;

use crate::bootstate::{NODE_FILE, STATE_DIR};
use crate::config::NodeConfig;
use crate::layout::SYSROOT;
use crate::storage::{self, RootDevice};

/// The subvolume that holds the `/etc` overlay's upper and work directories unless
/// node.toml's `[boot] etc_overlay` names another (`""` turns the overlay off).
pub const DEFAULT_ETC_OVERLAY: &str = "persist";

/// The node.toml kept on the disk (`.terra/node.toml` under the top level `top`); None,
/// logged, when it cannot be read: then there are no persistent mounts.
pub fn disk_node(top: &Path) -> Option<NodeConfig> {
    let node_path = top.join(STATE_DIR).join(NODE_FILE);
    match NodeConfig::load(&node_path) {
        Ok(n) => Some(n),
        Err(e) => {
            log::error!("persist: {e}; no persistent mounts");
            None
        }
    }
}

/// Mounts the persistent subvolumes and the `/etc` overlay that `node` (the disk's,
/// [`disk_node`]) names under /sysroot; `top` is the filesystem's top level, mounted
/// read-write. Returns what was mounted (mount point, source). A mount that fails is
/// logged and skipped: the version still boots.
pub fn mount(
    node: &NodeConfig,
    top: &Path,
    dev: &RootDevice,
    version_read_only: bool,
    load_module: &mut dyn FnMut(&str) -> bool,
) -> Vec<(String, String)> {
    let mut done = Vec::new();
    // The overlay first: mounted over /etc later, it would hide subvolumes mounted below it.
    let overlay = node
        .boot
        .etc_overlay
        .clone()
        .unwrap_or_else(|| DEFAULT_ETC_OVERLAY.to_string());
    if !overlay.is_empty() && version_read_only {
        etc_overlay(top, &overlay, load_module, &mut done);
    }
    let label = dev.id.label.as_deref();
    let subvolumes = node
        .groups
        .iter()
        .filter(|g| Some(g.label.as_str()) == label)
        .flat_map(|g| &g.subvolumes)
        .filter(|s| s.path != "/");
    for sv in subvolumes {
        let target = format!("{SYSROOT}{}", sv.path);
        match storage::mount_at(dev, &target, &format!("subvol={}", sv.name), false) {
            Ok(_) => {
                log::info!("persist: subvolume {} on {}", sv.name, sv.path);
                done.push((sv.path.clone(), format!("subvol={}", sv.name)));
            }
            Err(e) => log::error!("persist: subvolume {} on {}: {e}", sv.name, sv.path),
        }
    }
    done
}

/// Mounts the `/etc` overlay whose upper directory lives in subvolume `overlay`.
fn etc_overlay(
    top: &Path,
    overlay: &str,
    load_module: &mut dyn FnMut(&str) -> bool,
    done: &mut Vec<(String, String)>,
) {
    if !crate::bootstate::valid_name(overlay) {
        log::error!("persist: boot.etc_overlay = {overlay:?} is not a subvolume name");
        return;
    }
    let base = top.join(overlay);
    if !base.is_dir() {
        log::debug!("persist: no subvolume {overlay}: /etc stays the version's");
        return;
    }
    let upper = base.join("etc/upper");
    let work = base.join("etc/work");
    if let Err(e) = std::fs::create_dir_all(&upper).and_then(|()| std::fs::create_dir_all(&work)) {
        log::error!("persist: {}: {e}; /etc stays read-only", base.display());
        return;
    }
    if !load_module("fs-overlay") {
        load_module("overlay");
    }
    let target = format!("{SYSROOT}/etc");
    let options = format!(
        "lowerdir={target},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    match nix::mount::mount(
        Some("overlay"),
        target.as_str(),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    ) {
        Ok(()) => {
            log::info!("persist: /etc is an overlay kept in subvolume {overlay}");
            done.push(("/etc".into(), format!("overlay upper={overlay}/etc/upper")));
        }
        Err(e) => log::error!("persist: overlay on /etc ({options}): {e}"),
    }
}
