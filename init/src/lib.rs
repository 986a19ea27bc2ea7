//! stage0, Terra's PID 1 in the initramfs, as a library: one module per boot phase
//! (ARCHITECTURE.md §2) plus the types the builder shares with it.

pub mod bless;
pub mod boot;
pub mod bootstate;
pub mod cmdline;
pub mod config;
pub mod crc;
pub mod devices;
pub mod early;
pub mod entropy;
pub mod esp;
pub mod extensions;
pub mod health;
pub mod iscsi;
pub mod kexec;
pub mod layout;
pub mod live;
pub mod luks;
pub mod modindex;
pub mod network;
pub mod persist;
pub mod probe;
pub mod report;
pub mod rescue;
pub mod select;
pub mod storage;
pub mod switch;

/// The driver-hints table, which the builder writes (its old path, kept for the builder).
pub use rescue::hints;
