//! The session keeper alone (ARCHITECTURE.md §2.5): what stage0 leaves at
//! `/run/terra/keeper` when the initramfs carries it, so the process that lives as long as
//! the root maps a few hundred KB instead of all of stage0.

fn main() {
    std::process::exit(terra_init::iscsi::keeper::main());
}
