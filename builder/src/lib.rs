//! terra, the builder: turns a kernel's modules, stage0 and a node config into boot
//! artifacts. The `terra` binary is a thin argument parser over this library.

pub mod bootargs;
pub mod bootdisk;
pub mod bootfiles;
pub mod cpio;
pub mod create;
pub mod elf;
pub mod hostonly;
pub mod initramfs;
pub mod install;
pub mod installing;
pub mod iso;
pub mod kernel;
pub mod kmod;
pub mod live;
pub mod oci;
pub mod pe;
pub mod pxe;
pub mod run;
pub mod tool;
pub mod uki;
pub mod update;
pub mod versions;

pub use initramfs::{build, BuildReport, Compression, InitramfsError, InitramfsSpec};
