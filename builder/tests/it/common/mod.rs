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

/// Held by a test that uses state the whole host shares: loop devices, mounts of disk images
/// and the kernel's list of btrfs devices (`btrfs device scan --forget` drops every unmounted
/// one). The builder's tests used to be one binary per file, run one after another, so tests
/// of different files never overlapped; in the one binary they do. Tests of the same file may
/// still run side by side, as they always did; a test of another file waits until they are
/// done. Call it first thing in the test, with `module_path!()`.
pub fn host_disks(file: &'static str) -> HostDisks {
    take(file, false)
}

/// [`host_disks`] for a test that cuts the power: `lab::versions::power_cut` unmounts every
/// `terra-versions-*` mount on the host, a running terra's too, so no other test is at the
/// host's disks meanwhile, not even one of its own file.
pub fn host_disks_alone(file: &'static str) -> HostDisks {
    take(file, true)
}

fn take(file: &'static str, alone: bool) -> HostDisks {
    let (lock, cv) = &HOST_DISKS;
    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
    while state
        .0
        .is_some_and(|(holder, exclusive)| exclusive || alone || holder != file)
    {
        state = cv.wait(state).unwrap_or_else(|p| p.into_inner());
    }
    *state = (Some((file, alone)), state.1 + 1);
    HostDisks
}

/// Which file's tests hold the host's disks (and whether one holds them alone), and how
/// many tests.
type Holders = Mutex<(Option<(&'static str, bool)>, usize)>;
static HOST_DISKS: (Holders, Condvar) = (Mutex::new((None, 0)), Condvar::new());

/// Lets other tests at the host's disks when the last test holding them is done (also when
/// that test panics).
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
