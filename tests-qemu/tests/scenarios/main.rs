//! The QEMU boot scenarios, one test binary (`cargo test -p tests-qemu --test scenarios`):
//! each module was a test file of its own, and test names carry the module
//! (`boot::boots_by_label_and_subvolume`). One process builds the lab once
//! ([`lab::harness::artifacts`]) and shares its cached disks, layouts and corpora, so the
//! scenarios run side by side with `--test-threads=N`: every shared fixture has one owner
//! in the lab (one `OnceLock` or lock), every scratch file a name no other test uses, and
//! every built file is written under a temporary name and renamed into place.
//!
//! `tests/package.rs` (the `.deb`/`.rpm` package) stays a binary of its own.

mod artifacts;
// Nodes that update themselves: the longest scenarios (Debian nodes under TCG), named to
// sort first, so that libtest (which starts tests in name order) runs them beside the
// short ones instead of after them.
mod auto_update;
mod boot;
mod create;
mod debian;
mod disk_boot;
mod extensions;
mod image_corpus;
mod install;
mod iscsi;
mod iscsi_firmware;
mod iscsi_keeper;
mod iscsi_login;
mod kernels;
mod live;
mod network;
mod network_bonds;
mod network_netns;
mod run;
mod uki;
mod versions;
