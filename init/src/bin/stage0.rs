//! stage0: PID 1 of a Terra initramfs.

fn main() {
    // Only PID 1: the session keeper is its own binary (`keeper`), which every image packs
    // beside stage0; stage0 carries no copy of it (ARCHITECTURE §2.6).
    if std::process::id() != 1 {
        eprintln!(
            "stage0 is Terra's PID 1 in the initramfs; the booted system confirms its version with {}",
            terra_init::layout::BLESS_PROGRAM
        );
        std::process::exit(2);
    }
    // With panic=abort a panic would kill PID 1 and the kernel with it; there is no panic
    // on purpose in stage0, but if one slips through, say so and power off cleanly.
    std::panic::set_hook(Box::new(|info| {
        println!("terra: stage0 bug: {info}");
        terra_init::rescue::halt(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }));
    terra_init::boot::run()
}
