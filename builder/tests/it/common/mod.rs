//! Helpers shared by the builder's integration tests.

use std::path::Path;

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
