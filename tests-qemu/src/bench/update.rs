//! `cargo xtask bench --only update`: what updating a node costs, part by part, each
//! measured side by side with what it saves against.
//!
//! - [`fetch`]: bytes fetched from a registry by `terra upgrade --disk` for a changed top
//!   layer over a big base the disk holds, against a full pull of the same image;
//! - [`restart`]: from `terra apply --reboot` in a booted Debian node to the new version's
//!   init, kexec against a full reboot through SeaBIOS and GRUB.

pub mod fetch;
pub mod restart;

use std::path::Path;

/// Runs every part of the update case (`boots` restarts of each kind); a part that fails
/// is reported in place.
pub fn run_update(terra: &Path, boots: usize) -> String {
    let mut md = String::from("### Update\n");
    md.push_str(&fetch::run_fetch(terra).map_or_else(
        |e| format!("\n#### Fetch\n\nnot measured: {e}\n"),
        |r| r.render(),
    ));
    md.push_str(&restart_case(boots));
    md
}

/// The restart part as markdown (`boots` restarts of each kind); a failure is reported in
/// place.
pub fn restart_case(boots: usize) -> String {
    restart::run_restart(boots).map_or_else(
        |e| format!("\n#### Restart\n\nnot measured: {e}\n"),
        |r| r.render(),
    )
}
