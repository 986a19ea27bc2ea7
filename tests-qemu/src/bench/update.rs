//! `cargo xtask bench --only update`: what updating a node costs, part by part, each
//! measured side by side with what it saves against.
//!
//! - [`fetch`]: bytes fetched from a registry by `terra upgrade --disk` for a changed top
//!   layer over a big base the disk holds, against a full pull of the same image.

pub mod fetch;

use std::path::Path;

/// Runs every part of the update case; a part that fails is reported in place.
pub fn run_update(terra: &Path) -> String {
    let mut md = String::from("### Update\n");
    md.push_str(&fetch::run_fetch(terra).map_or_else(
        |e| format!("\n#### Fetch\n\nnot measured: {e}\n"),
        |r| r.render(),
    ));
    md
}
