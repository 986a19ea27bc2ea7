//! stage0: PID 1 of a Terra initramfs.

fn main() {
    // A multi-call binary: as anything but PID 1 it is a command for the booted system
    // (the copy stage0 leaves at /run/terra/bless).
    if std::process::id() != 1 {
        let args: Vec<String> = std::env::args().collect();
        // The copy at /run/terra/keeper, started by stage0 as `@keeper`.
        if terra_init::iscsi::keeper::is_keeper(&args) {
            std::process::exit(terra_init::iscsi::keeper::main());
        }
        std::process::exit(terra_init::bless::main(&args));
    }
    // With panic=abort a panic would kill PID 1 and the kernel with it; there is no panic
    // on purpose in stage0, but if one slips through, say so and power off cleanly.
    std::panic::set_hook(Box::new(|info| {
        println!("terra: stage0 bug: {info}");
        terra_init::rescue::halt(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }));
    terra_init::boot::run()
}
