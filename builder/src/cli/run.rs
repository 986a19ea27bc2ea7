//! `terra run`: an image in a throwaway VM, over `terra_builder::run`.

use std::path::PathBuf;
use std::time::Instant;

use terra_builder::oci::Progress;
use terra_builder::run::{self, Accel, Firmware, RunSpec, Session};

use super::images::{debug_notes, policy, skipped_xattrs, FetchArgs, REF_HELP};
use super::CliError;

/// Boot an image in a throwaway QEMU VM, the console on this terminal
///
/// Installs REF as `terra install` would on a bootable disk (mbr = true: GRUB, the ESP, the
/// host's kernel with a Terra initramfs) in a sparse disk image under $TMPDIR (default
/// /var/tmp), then boots it in QEMU with the serial console on this terminal: Ctrl-A X
/// quits, Ctrl-A C is QEMU's monitor. The VM has a virtio NIC on QEMU's user network (DHCP;
/// the host is 10.0.2.2). When QEMU exits, or terra gets SIGINT, SIGTERM or SIGHUP (the VM
/// is stopped first), the disk and its directory are removed; the install leaves no loop
/// device or mount behind. Needs root (loop devices, mkfs and mount, like terra install)
/// and qemu-system-x86_64 (and OVMF for --uefi).
#[derive(Debug, clap::Args)]
#[command(after_long_help = REF_HELP)]
pub struct RunArgs {
    /// The image (see `terra image --help`)
    #[arg(value_name = "REF")]
    reference: String,
    /// Boot under UEFI (OVMF) instead of BIOS (SeaBIOS)
    #[arg(long)]
    uefi: bool,
    /// The disk's size: a number with K, M, G or T (a bare number is MiB); sparse
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = run::parse_size)]
    disk_size: u64,
    /// Extra kernel arguments; repeatable
    #[arg(long = "append", value_name = "ARGS", allow_hyphen_values = true)]
    appends: Vec<String>,
    /// Forward 127.0.0.1:PORT on the host to the guest's port 22
    #[arg(long, value_name = "PORT")]
    ssh: Option<u16>,
    /// Use KVM (default when /dev/kvm can be opened)
    #[arg(long, conflicts_with = "tcg")]
    kvm: bool,
    /// Use software emulation (TCG; default without /dev/kvm)
    #[arg(long)]
    tcg: bool,
    /// Guest memory, MiB
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs
    #[arg(long, value_name = "N", default_value_t = 2)]
    cpus: u32,
    /// The kernel to boot, its modules in /lib/modules/<release> (default: the host's
    /// newest /boot/vmlinuz-* with modules)
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// `terra run`.
pub fn run(a: RunArgs, progress: &dyn Progress) -> Result<(), CliError> {
    let mut spec = RunSpec::new(&a.reference);
    spec.firmware = if a.uefi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    spec.accel = match (a.kvm, a.tcg) {
        (true, _) => Some(Accel::Kvm),
        (_, true) => Some(Accel::Tcg),
        _ => None,
    };
    spec.disk_mib = a.disk_size;
    spec.append = a.appends.join(" ").trim().to_string();
    spec.ssh = a.ssh;
    spec.memory_mib = a.memory;
    spec.cpus = a.cpus;
    spec.kernel = a.kernel;
    spec.platform = a.fetch.platform.unwrap_or_default();
    spec.plain_http = a.fetch.plain_http;
    spec.verify = policy(&a.fetch.verify_keys)?;
    let started = Instant::now();
    let session = Session::prepare(&spec, progress)?;
    skipped_xattrs(&session.install.unpack.skipped_xattrs);
    debug_notes(&session.install.unpack.notes);
    let vm = &session.vm;
    eprintln!(
        "terra: installed {} on {} ({} MiB, sparse) in {:.1} s",
        session.install.image,
        vm.disk.display(),
        spec.disk_mib,
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "terra: booting ({}, {}, {} MiB, {} CPUs); Ctrl-A X quits, and the disk is removed",
        vm.accel.name().to_uppercase(),
        match vm.firmware {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        },
        vm.memory_mib,
        vm.cpus
    );
    if let Some(port) = vm.ssh {
        eprintln!("terra: ssh -p {port} root@127.0.0.1 reaches the guest's port 22");
    }
    session.boot()?;
    eprintln!("terra: the VM stopped; its disk is removed");
    Ok(())
}
