//! terra, the builder: turns a kernel's modules, stage0 and a node config into boot
//! artifacts. The `terra` binary is a thin argument parser over this library.

pub mod cpio;
pub mod elf;
pub mod initramfs;
pub mod kmod;

pub use initramfs::{build, BuildReport, Compression, InitramfsError, InitramfsSpec};
