//! Paths inside the initramfs: the builder writes them and stage0 reads them (ARCHITECTURE.md §3).

/// stage0 itself.
pub const INIT: &str = "init";
/// Embedded node configuration.
pub const NODE_CONFIG: &str = "etc/terra/node.toml";
/// Marks the image as an initrd for systemd roots.
pub const INITRD_RELEASE: &str = "etc/initrd-release";
/// Modules that stage0 loads unconditionally, one name per line (written by the builder).
pub const MODULES_LOAD: &str = "etc/terra/modules.load";
/// Root of the packed kernel modules; `<kver>/` lies below.
pub const MODULES_DIR: &str = "lib/modules";
/// Firmware the packed modules declare.
pub const FIRMWARE_DIR: &str = "lib/firmware";
/// The session keeper alone (`keeper` built beside stage0), packed when the builder finds
/// it; without it stage0 leaves a copy of itself as the keeper.
pub const KEEPER: &str = "lib/terra/keeper";
/// The confirmation command alone (`bless` built beside stage0), left at [`BLESS_PROGRAM`]
/// when a tentative version boots.
pub const BLESS: &str = "lib/terra/bless";
/// Rescue shell, present only when the builder was asked for one.
pub const RESCUE_SHELL: &str = "bin/sh";
/// Where the root filesystem is mounted before the switch.
pub const SYSROOT: &str = "/sysroot";
/// Directory for what stage0 hands to the real system.
pub const RUN_TERRA: &str = "/run/terra";
/// Boot report written for the real system.
pub const BOOT_REPORT: &str = "/run/terra/boot.json";
/// Where a node with a fleet controller keeps the controller's URL, its token (mode 0600,
/// tmpfs) and the reports not yet delivered (`report/outbox.rs`).
pub const REPORT_DIR: &str = "/run/terra/report";
/// The confirmation command stage0 leaves for the real system when a tentative version
/// boots (`bless.rs`): [`BLESS`] from the initramfs.
pub const BLESS_PROGRAM: &str = "/run/terra/bless";
/// Where the top level of the root filesystem is mounted while stage0 (or the
/// confirmation in the real system) reads and writes the boot state.
pub const TOP: &str = "/run/terra/top";
/// Index files kept (filtered) next to the packed modules.
pub const MODULE_INDEX_FILES: [&str; 4] = [
    "modules.dep",
    "modules.alias",
    "modules.builtin",
    "modules.softdep",
];
/// Absolute form of [`MODULES_DIR`], as stage0 sees it.
pub const MODULES_DIR_ABS: &str = "/lib/modules";
/// Absolute form of [`NODE_CONFIG`], as stage0 sees it.
pub const NODE_CONFIG_ABS: &str = "/etc/terra/node.toml";
/// Absolute form of [`MODULES_LOAD`], as stage0 sees it.
pub const MODULES_LOAD_ABS: &str = "/etc/terra/modules.load";
