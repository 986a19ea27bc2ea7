//! The builder's integration tests, one test binary: each file here was a binary of its own
//! (tests/*.rs), each linking the builder, tokio, the OCI client and the lab, run one after
//! another. As modules of one binary they link once and share the test threads. Tests that
//! use the host's loop devices, mounts and btrfs device list take
//! [`common::host_disks`], so that tests of different files still never overlap there.

mod common;
mod oci_common;

mod cli;
mod cli_help;
mod create;
mod disk_boot;
mod extension;
mod gnu_cpio;
mod initramfs;
mod install;
mod iso;
mod kernel;
mod oci_corpus;
mod oci_hostile;
mod oci_registry;
mod oci_sign;
mod oci_signed;
mod oci_tar_gaps;
mod oci_unpack;
mod pxe;
mod update;
mod upgrade;
mod upgrade_fetch;
