//! Boot artifacts under QEMU: the hybrid ISO from `terra iso` under SeaBIOS and OVMF, and the
//! PXE tree from `terra pxe` over TFTP and HTTP under both firmwares (QEMU's iPXE ROMs), with
//! the demo btrfs root attached. A node's MAC selects its entry (its hostname shows in the
//! root); an unknown MAC boots the default entry.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lab::harness::{artifacts, boot, expect, os_disk, Boot};
use lab::vm::{self, Firmware, NetBoot, Outcome};

const NODE1_MAC: &str = "52:54:00:7e:44:01";
const NODE2_MAC: &str = "52:54:00:7e:44:02";
const UNKNOWN_MAC: &str = "52:54:00:7e:44:99";
/// What every entry passes: the serial console for the log, panic=-1 so a failure ends the
/// VM, and the demo root powers off once it has reported.
const TEST_ARGS: &str = "console=ttyS0,115200 panic=-1 terra.demo=poweroff";

/// Firmware and ROMs the scenarios boot with, named with their packages when missing.
fn require_host_files() {
    for (path, package) in [
        (vm::OVMF, "ovmf"),
        ("/usr/lib/ipxe/qemu/pxe-virtio.rom", "ipxe-qemu"),
        ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
        ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
        (
            "/usr/lib/syslinux/modules/bios/ldlinux.c32",
            "syslinux-common",
        ),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: apt-get install {package}"
        );
    }
}

fn work_dir() -> PathBuf {
    let dir = lab::lab_dir().join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn terra(args: &[&str]) -> String {
    let a = artifacts();
    lab::run(
        Command::new(&a.terra)
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// One ISO for both firmwares, with a node's hostname to show that --node reaches the root.
fn iso() -> &'static PathBuf {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let a = artifacts();
        let dir = work_dir();
        let node = dir.join("iso-node.toml");
        std::fs::write(&node, "hostname = \"terra-iso\"\n").expect("node.toml");
        let iso = dir.join("terra.iso");
        let out = terra(&[
            "iso",
            "--kernel",
            path_str(&a.kernel),
            "--initramfs",
            path_str(&a.initramfs),
            "--node",
            path_str(&node),
            "--cmdline",
            "panic=-1 terra.demo=poweroff",
            "-o",
            path_str(&iso),
        ]);
        eprint!("{out}");
        iso
    })
}

/// The PXE tree: two nodes and the default entry.
fn pxe_tree() -> &'static PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let a = artifacts();
        let dir = work_dir();
        let mut args: Vec<String> = vec![
            "pxe".into(),
            "--kernel".into(),
            path_str(&a.kernel).into(),
            "--initramfs".into(),
            path_str(&a.initramfs).into(),
            "--cmdline".into(),
            TEST_ARGS.into(),
        ];
        for (name, mac) in [("terra-n1", NODE1_MAC), ("terra-n2", NODE2_MAC)] {
            let node = dir.join(format!("{name}.toml"));
            std::fs::write(&node, format!("hostname = \"{name}\"\nmac = \"{mac}\"\n"))
                .expect("node.toml");
            args.extend(["--node".into(), path_str(&node).into()]);
        }
        let tree = dir.join("pxe");
        args.extend(["--pxelinux".into(), "-o".into(), path_str(&tree).into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        eprint!("{}", terra(&args));
        tree
    })
}

/// A minimal HTTP/1.0 file server for the PXE tree on 127.0.0.1 (the guest reaches it at
/// 10.0.2.2), on a thread that lives as long as the test process. Returns the port.
fn http_server() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let root = pxe_tree().clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root);
                });
            }
        });
        port
    })
}

fn serve(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let rel = path.trim_start_matches('/');
    let body = if rel.split('/').any(|c| c == "..") {
        None
    } else {
        std::fs::read(root.join(rel)).ok()
    };
    let mut out = stream;
    match body {
        Some(data) => {
            write!(
                out,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                data.len()
            )?;
            out.write_all(&data)?;
        }
        None => write!(
            out,
            "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}

/// The demo OS disk under `firmware`; the boot media come from the scenario.
fn base_vm(firmware: Firmware) -> Boot {
    require_host_files();
    // Firmware, GRUB or iPXE, then Linux, all under TCG: UEFI takes the longest.
    boot().firmware(firmware).disk(os_disk()).timeout(300)
}

fn boot_iso(firmware: Firmware) -> Outcome {
    base_vm(firmware).cdrom(iso().clone()).run()
}

enum Via {
    Tftp,
    Http,
    /// pxelinux.0 over TFTP (BIOS only), reading pxelinux.cfg/.
    Pxelinux,
}

fn boot_pxe(firmware: Firmware, via: Via, mac: &str) -> Outcome {
    let tree = pxe_tree().clone();
    let bootfile = match via {
        Via::Tftp => "boot.ipxe".to_string(),
        Via::Http => format!("http://10.0.2.2:{}/boot.ipxe", http_server()),
        Via::Pxelinux => "pxelinux.0".to_string(),
    };
    base_vm(firmware)
        .netboot(NetBoot {
            tftp_dir: (!matches!(via, Via::Http)).then_some(tree),
            bootfile,
            mac: mac.into(),
        })
        .run()
}

#[track_caller]
fn expect_root(out: &Outcome, hostname: &str) {
    expect(
        out,
        &[
            "TERRA-DEMO-INIT",
            "subvol=os pid=1",
            &format!("TERRA-DEMO-HOSTNAME {hostname}\n"),
            "TERRA-DEMO-POWEROFF",
        ],
    );
    assert!(out.exited, "the VM should power off");
}

fn kernel_cmdline(out: &Outcome) -> &str {
    out.log
        .lines()
        .find_map(|l| l.split("Kernel command line: ").nth(1))
        .unwrap_or_else(|| panic!("no kernel command line in:\n{}", out.log))
}

#[test]
fn iso_boots_under_seabios() {
    let out = boot_iso(Firmware::Bios);
    expect_root(&out, "terra-iso");
    assert!(kernel_cmdline(&out).contains("console=ttyS0,115200 hostname=terra-iso"));
}

#[test]
fn iso_boots_under_ovmf() {
    let out = boot_iso(Firmware::Uefi);
    expect_root(&out, "terra-iso");
}

#[test]
fn pxe_tftp_bios_node_mac_selects_its_entry() {
    let out = boot_pxe(Firmware::Bios, Via::Tftp, NODE1_MAC);
    expect_root(&out, "terra-n1");
    assert!(kernel_cmdline(&out).contains("BOOTIF=01-52-54-00-7e-44-01 hostname=terra-n1"));
}

#[test]
fn pxe_tftp_uefi_unknown_mac_gets_the_default() {
    let out = boot_pxe(Firmware::Uefi, Via::Tftp, UNKNOWN_MAC);
    // iPXE's own messages reach the serial console under OVMF.
    expect(&out, &["Terra: no entry for 52:54:00:7e:44:99"]);
    // No hostname= anywhere: the kernel's default name stays.
    expect_root(&out, "(none)");
    let cmdline = kernel_cmdline(&out);
    assert!(!cmdline.contains("hostname="), "{cmdline}");
    assert!(cmdline.contains("BOOTIF=01-52-54-00-7e-44-99"), "{cmdline}");
}

#[test]
fn pxe_http_uefi_node_mac_selects_its_entry() {
    let out = boot_pxe(Firmware::Uefi, Via::Http, NODE2_MAC);
    expect(
        &out,
        &[
            "Terra: node entry for 52:54:00:7e:44:02",
            "http://10.0.2.2:",
        ],
    );
    expect_root(&out, "terra-n2");
}

#[test]
fn pxe_http_bios_unknown_mac_gets_the_default() {
    let out = boot_pxe(Firmware::Bios, Via::Http, UNKNOWN_MAC);
    expect_root(&out, "(none)");
    let cmdline = kernel_cmdline(&out);
    assert!(!cmdline.contains("hostname="), "{cmdline}");
    assert!(cmdline.contains("BOOTIF=01-52-54-00-7e-44-99"), "{cmdline}");
}

#[test]
fn pxelinux_bios_node_mac_selects_its_entry() {
    let out = boot_pxe(Firmware::Bios, Via::Pxelinux, NODE2_MAC);
    expect_root(&out, "terra-n2");
    // pxelinux names the kernel first and appends initrd= from the INITRD line.
    let cmdline = kernel_cmdline(&out).trim_end();
    assert!(
        cmdline.starts_with(
            "BOOT_IMAGE=vmlinuz boot=terra BOOTIF=01-52-54-00-7e-44-02 hostname=terra-n2"
        ),
        "{cmdline}"
    );
    assert!(cmdline.ends_with("initrd=initrd.img"), "{cmdline}");
}
