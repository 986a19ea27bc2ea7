//! Helpers shared by the builder's integration tests.

use std::path::Path;
use std::sync::{Condvar, Mutex};

/// The newest kernel release under /lib/modules (scripts/setup-host.sh installs one).
pub fn kver() -> String {
    terra_builder::kmod::installed_kernels(Path::new("/lib/modules"))
        .ok()
        .and_then(|k| {
            k.into_iter()
                .max_by(|a, b| terra_builder::kmod::version_cmp(a, b))
        })
        .expect("a kernel with modules under /lib/modules (run scripts/setup-host.sh)")
}

/// Held by a test that uses state the whole host shares: loop devices, mounts of disk images,
/// the kernel's list of btrfs devices (`btrfs device scan --forget` drops every unmounted
/// one) and `lab::versions::power_cut` (which unmounts every `terra-versions-*` mount).
/// The builder's tests used to be one binary per file, run one after another, so tests of
/// different files never overlapped; in the one binary they do. Tests of the same file may
/// still run side by side, as they always did; a test of another file waits until they are
/// done. Call it first thing in the test, with `module_path!()`.
pub fn host_disks(file: &'static str) -> HostDisks {
    let (lock, cv) = &HOST_DISKS;
    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
    while state.0.is_some_and(|holder| holder != file) {
        state = cv.wait(state).unwrap_or_else(|p| p.into_inner());
    }
    *state = (Some(file), state.1 + 1);
    HostDisks
}

/// Which file's tests hold the host's disks, and how many of them.
type Holders = Mutex<(Option<&'static str>, usize)>;
static HOST_DISKS: (Holders, Condvar) = (Mutex::new((None, 0)), Condvar::new());

/// Lets other files' tests at the host's disks when the last test of its file is done (also
/// when that test panics).
pub struct HostDisks;

impl Drop for HostDisks {
    fn drop(&mut self) {
        let (lock, cv) = &HOST_DISKS;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        state.1 -= 1;
        if state.1 == 0 {
            state.0 = None;
            cv.notify_all();
        }
    }
}
