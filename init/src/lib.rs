//! stage0, Terra's PID 1 in the initramfs, as a library: one module per boot phase
//! (DESIGN.md §2) plus the types the builder shares with it.

pub mod layout;
pub mod modindex;
pub mod probe;
