//! The confirmation command alone (ARCHITECTURE.md, "Confirmation"): what stage0 leaves at
//! `/run/terra/bless` when a tentative version boots. The booted system runs it (`bless
//! good` after the health checks, `bless bad`, `bless check`); stage0 carries none of it.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(terra_init::bless::main(&args));
}
