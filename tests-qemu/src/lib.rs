//! The QEMU lab.
