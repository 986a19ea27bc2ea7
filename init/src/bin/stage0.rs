//! stage0: PID 1 of a Terra initramfs.

fn main() {
    // With panic=abort a panic would kill PID 1 and the kernel with it; there is no panic
    // on purpose in stage0, but if one slips through, say so and power off cleanly.
    std::panic::set_hook(Box::new(|info| {
        println!("terra: stage0 bug: {info}");
        terra_init::rescue::halt(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }));
    terra_init::boot::run()
}
