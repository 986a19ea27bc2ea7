//! `terra pxe`: a tree to serve over TFTP or HTTP. iPXE (BIOS and UEFI) loads `boot.ipxe`,
//! which chains the booting machine's own script `<mac>.ipxe` (MAC with dashes, iPXE's
//! `${mac:hexhyp}`) or, without one, boots the default entry. pxelinux reads
//! `pxelinux.cfg/01-<mac>` or `pxelinux.cfg/default`, in the format Terra OS wrote them.
//! Every file names the kernel and initramfs relative to itself, so the tree works from the
//! root or a subdirectory of any TFTP or HTTP server.
//!
//! ```text
//! DIR/vmlinuz  DIR/initrd.img
//! DIR/boot.ipxe  DIR/52-54-00-12-34-56.ipxe …
//! DIR/pxelinux.cfg/default  DIR/pxelinux.cfg/01-52-54-00-12-34-56 …
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::bootargs::{split_user_args, ArgsError, Mac, Node};

/// The kernel's name in the tree (Terra OS's).
pub const KERNEL_NAME: &str = "vmlinuz";
/// The initramfs's name in the tree (Terra OS's).
pub const INITRD_NAME: &str = "initrd.img";
/// The iPXE script a DHCP server or `bootfile=` points machines at.
pub const BOOT_SCRIPT: &str = "boot.ipxe";
/// pxelinux's configuration directory.
pub const PXELINUX_DIR: &str = "pxelinux.cfg";
/// pxelinux's loader and its library module as Debian ships them (packages `pxelinux` and
/// `syslinux-common`), copied into the tree with [`PxeSpec::pxelinux`].
pub const PXELINUX_FILES: [(&str, &str); 2] = [
    ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    (
        "/usr/lib/syslinux/modules/bios/ldlinux.c32",
        "syslinux-common",
    ),
];
/// Arguments every entry starts with (Terra OS's marker; stage0 ignores it).
const BASE_ARGS: &[&str] = &["boot=terra"];

/// What to put in the tree.
#[derive(Debug, Clone)]
pub struct PxeSpec {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs (shared by all nodes: their identity travels on the command line).
    pub initramfs: PathBuf,
    /// node.toml files, one per machine.
    pub nodes: Vec<PathBuf>,
    /// Extra kernel arguments for every entry (double quotes group).
    pub cmdline: String,
    /// The tree's directory.
    pub output: PathBuf,
    /// Also copy pxelinux itself ([`PXELINUX_FILES`]) so BIOS machines can boot
    /// `pxelinux.0` instead of iPXE.
    pub pxelinux: bool,
}

/// One machine's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// Its MAC address.
    pub mac: Mac,
    /// Its node.toml.
    pub node: PathBuf,
    /// Its kernel arguments (without `initrd=`).
    pub args: Vec<String>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct PxeReport {
    /// Arguments of the default entry.
    pub default_args: Vec<String>,
    /// The nodes' entries, by MAC.
    pub nodes: Vec<NodeEntry>,
    /// Stale per-node files of earlier runs that were removed.
    pub removed: Vec<PathBuf>,
}

/// Errors of `terra pxe`; each names the file, MAC or argument.
#[derive(Debug)]
pub enum PxeError {
    /// The kernel or initramfs is missing or unreadable.
    Input {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    /// A node config or argument.
    Args(ArgsError),
    /// Two nodes have the same MAC.
    DuplicateMac {
        mac: Mac,
        first: PathBuf,
        second: PathBuf,
    },
    /// A file could not be written.
    Write { path: PathBuf, err: std::io::Error },
    /// pxelinux was asked for and is not installed.
    Pxelinux {
        path: PathBuf,
        package: &'static str,
    },
}

impl fmt::Display for PxeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PxeError::Input { what, path, err } => {
                write!(f, "cannot read {what} {}: {err}", path.display())
            }
            PxeError::Args(e) => write!(f, "{e}"),
            PxeError::DuplicateMac { mac, first, second } => write!(
                f,
                "{} and {} have the same mac {mac}: PXE entries are chosen by MAC",
                first.display(),
                second.display()
            ),
            PxeError::Write { path, err } => write!(f, "cannot write {}: {err}", path.display()),
            PxeError::Pxelinux { path, package } => write!(
                f,
                "--pxelinux: {} is missing (apt-get install {package})",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PxeError {}

impl From<ArgsError> for PxeError {
    fn from(e: ArgsError) -> Self {
        PxeError::Args(e)
    }
}

/// iPXE has no quoting and expands `${…}`, pxelinux's APPEND is one line: refuse what
/// either would mangle.
fn check_args(args: &[String]) -> Result<(), PxeError> {
    for a in args {
        let reason = if a.chars().any(char::is_whitespace) {
            "iPXE cannot quote spaces"
        } else if a.contains('$') {
            "iPXE would expand '$'"
        } else {
            continue;
        };
        return Err(ArgsError::Arg {
            arg: a.clone(),
            medium: "a PXE entry",
            reason,
        }
        .into());
    }
    Ok(())
}

/// The default entry's and every node's arguments; duplicate MACs are errors.
pub fn entries(spec: &PxeSpec) -> Result<(Vec<String>, Vec<NodeEntry>), PxeError> {
    let user = split_user_args(&spec.cmdline);
    check_args(&user)?;
    let base: Vec<String> = BASE_ARGS.iter().map(|s| s.to_string()).collect();
    let default_args = [base.clone(), user.clone()].concat();
    let mut by_mac: BTreeMap<Mac, NodeEntry> = BTreeMap::new();
    for path in &spec.nodes {
        let node = Node::load(path)?;
        let mac = node.mac()?;
        let node_args = node.kernel_args()?;
        check_args(&node_args)?;
        // BOOTIF= as pxelinux's IPAPPEND 2 writes it: the interface this node booted from.
        let bootif = format!("BOOTIF=01-{}", mac.joined("-"));
        let args = [base.clone(), vec![bootif], node_args, user.clone()].concat();
        if let Some(prev) = by_mac.get(&mac) {
            return Err(PxeError::DuplicateMac {
                mac,
                first: prev.node.clone(),
                second: path.clone(),
            });
        }
        by_mac.insert(
            mac,
            NodeEntry {
                mac,
                node: path.clone(),
                args,
            },
        );
    }
    Ok((default_args, by_mac.into_values().collect()))
}

fn ipxe_kernel_lines(args: &[String]) -> String {
    // UEFI: the kernel's EFI stub loads the initramfs named by initrd= from iPXE's virtual
    // filesystem; under BIOS iPXE passes it by the boot protocol and the argument is inert.
    format!(
        "kernel {KERNEL_NAME} initrd={INITRD_NAME} {}\ninitrd {INITRD_NAME}\nboot\n",
        args.join(" ")
    )
}

/// `boot.ipxe`: the machine's own script when there is one, else the default entry.
pub fn ipxe_boot_script(default_args: &[String]) -> String {
    format!(
        "#!ipxe\n\
         # Written by terra pxe. A machine with an entry boots <mac>.ipxe (its MAC in\n\
         # lowercase hex with dashes); any other boots the default entry below.\n\
         imgfetch --name node ${{mac:hexhyp}}.ipxe || goto default\n\
         chain node || goto failed\n\
         \n\
         :default\n\
         echo Terra: no entry for ${{mac}}, booting the default\n\
         {}\
         \n\
         :failed\n\
         echo Terra: boot failed\n\
         exit 1\n",
        ipxe_kernel_lines(
            &[
                default_args.to_vec(),
                vec!["BOOTIF=01-${mac:hexhyp}".to_string()]
            ]
            .concat()
        )
    )
}

/// `<mac>.ipxe` for one node.
pub fn ipxe_node_script(entry: &NodeEntry) -> String {
    format!(
        "#!ipxe\n# Terra node {} ({})\necho Terra: node entry for {}\n{}",
        entry.node.display(),
        entry.mac,
        entry.mac,
        ipxe_kernel_lines(&entry.args)
    )
}

/// A pxelinux config in Terra OS's format. `ipappend` adds BOOTIF= for the default entry,
/// whose MAC is not known when the file is written.
pub fn pxelinux_cfg(args: &[String], ipappend: bool) -> String {
    let mut s = format!(
        "DEFAULT terra\n\nLABEL terra\n  KERNEL {KERNEL_NAME}\n  INITRD {INITRD_NAME}\n  APPEND {}\n",
        args.join(" ")
    );
    if ipappend {
        s.push_str("  IPAPPEND 2\n");
    }
    s
}

fn write(path: &Path, data: &[u8]) -> Result<(), PxeError> {
    std::fs::write(path, data).map_err(|err| PxeError::Write {
        path: path.to_path_buf(),
        err,
    })
}

/// Whether `name` is a per-node file this module writes (`<mac>.ipxe`, `01-<mac>`).
fn is_node_file(name: &str) -> bool {
    name.strip_suffix(".ipxe")
        .or_else(|| name.strip_prefix("01-"))
        .is_some_and(|mac| mac.len() == 17 && Mac::parse(mac).is_some())
}

/// Writes the tree. Per-node files of nodes no longer given are removed, so a machine
/// taken out of the list falls back to the default entry.
pub fn build(spec: &PxeSpec) -> Result<PxeReport, PxeError> {
    for (what, path) in [("kernel", &spec.kernel), ("initramfs", &spec.initramfs)] {
        std::fs::File::open(path).map_err(|err| PxeError::Input {
            what,
            path: path.clone(),
            err,
        })?;
    }
    let (default_args, nodes) = entries(spec)?;
    if spec.pxelinux {
        for (path, package) in PXELINUX_FILES {
            if !Path::new(path).is_file() {
                return Err(PxeError::Pxelinux {
                    path: path.into(),
                    package,
                });
            }
        }
    }
    let cfg_dir = spec.output.join(PXELINUX_DIR);
    std::fs::create_dir_all(&cfg_dir).map_err(|err| PxeError::Write {
        path: cfg_dir.clone(),
        err,
    })?;

    let mut wanted: Vec<PathBuf> = Vec::new();
    for e in &nodes {
        let ipxe = spec.output.join(format!("{}.ipxe", e.mac.joined("-")));
        write(&ipxe, ipxe_node_script(e).as_bytes())?;
        let pxelinux = cfg_dir.join(format!("01-{}", e.mac.joined("-")));
        write(&pxelinux, pxelinux_cfg(&e.args, false).as_bytes())?;
        wanted.extend([ipxe, pxelinux]);
    }
    let mut removed = Vec::new();
    for dir in [&spec.output, &cfg_dir] {
        let list = std::fs::read_dir(dir).map_err(|err| PxeError::Write {
            path: dir.to_path_buf(),
            err,
        })?;
        for entry in list.filter_map(|e| e.ok()) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_node_file(&name) && !wanted.contains(&path) {
                std::fs::remove_file(&path).map_err(|err| PxeError::Write {
                    path: path.clone(),
                    err,
                })?;
                removed.push(path);
            }
        }
    }
    write(
        &spec.output.join(BOOT_SCRIPT),
        ipxe_boot_script(&default_args).as_bytes(),
    )?;
    write(
        &cfg_dir.join("default"),
        pxelinux_cfg(&default_args, true).as_bytes(),
    )?;
    for (what, from, name) in [
        ("kernel", &spec.kernel, KERNEL_NAME),
        ("initramfs", &spec.initramfs, INITRD_NAME),
    ] {
        let to = spec.output.join(name);
        // A copy, not a link: TFTP servers often refuse to follow links out of their root.
        std::fs::copy(from, &to).map_err(|err| PxeError::Input {
            what,
            path: from.clone(),
            err,
        })?;
    }
    if spec.pxelinux {
        for (path, _) in PXELINUX_FILES {
            let from = Path::new(path);
            let to = spec.output.join(from.file_name().unwrap_or_default());
            std::fs::copy(from, &to).map_err(|err| PxeError::Write { path: to, err })?;
        }
    }
    removed.sort();
    Ok(PxeReport {
        default_args,
        nodes,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn spec(dir: &Path, nodes: Vec<PathBuf>) -> PxeSpec {
        PxeSpec {
            kernel: dir.join("k"),
            initramfs: dir.join("i"),
            nodes,
            cmdline: "console=ttyS0".into(),
            output: dir.join("tree"),
            pxelinux: false,
        }
    }

    #[test]
    fn entries_carry_node_args_after_bootif_and_before_user_args() {
        let d = tempfile::tempdir().unwrap();
        let n = node_file(
            d.path(),
            "a.toml",
            "hostname = \"a\"\nmac = \"52:54:00:00:00:0A\"\n[boot]\nversion = \"v2\"\n",
        );
        let (default, nodes) = entries(&spec(d.path(), vec![n])).unwrap();
        assert_eq!(default, ["boot=terra", "console=ttyS0"]);
        assert_eq!(
            nodes[0].args,
            [
                "boot=terra",
                "BOOTIF=01-52-54-00-00-00-0a",
                "hostname=a",
                "version=v2",
                "console=ttyS0"
            ]
        );
        let script = ipxe_node_script(&nodes[0]);
        assert!(
            script.contains("kernel vmlinuz initrd=initrd.img boot=terra BOOTIF="),
            "{script}"
        );
        let cfg = pxelinux_cfg(&nodes[0].args, false);
        assert!(cfg.starts_with("DEFAULT terra\n\nLABEL terra\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND boot=terra "), "{cfg}");
    }

    #[test]
    fn duplicate_macs_name_both_files() {
        let d = tempfile::tempdir().unwrap();
        let a = node_file(d.path(), "a.toml", "mac = \"52:54:00:00:00:0a\"\n");
        let b = node_file(d.path(), "b.toml", "mac = \"52-54-00-00-00-0A\"\n");
        let e = entries(&spec(d.path(), vec![a, b]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.toml") && e.contains("b.toml") && e.contains("52:54:00:00:00:0a"),
            "{e}"
        );
    }

    #[test]
    fn boot_script_chains_by_mac_and_falls_back() {
        let s = ipxe_boot_script(&["boot=terra".into()]);
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains("imgfetch --name node ${mac:hexhyp}.ipxe || goto default\n"));
        assert!(s.contains(
            ":default\n\
             echo Terra: no entry for ${mac}, booting the default\n\
             kernel vmlinuz initrd=initrd.img boot=terra BOOTIF=01-${mac:hexhyp}\n\
             initrd initrd.img\nboot\n"
        ));
    }

    #[test]
    fn args_ipxe_cannot_carry_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut s = spec(d.path(), vec![]);
        s.cmdline = "rootflags=\"a b\"".into();
        assert!(entries(&s)
            .unwrap_err()
            .to_string()
            .contains("rootflags=a b"));
        s.cmdline = "x=${net0/ip}".into();
        assert!(entries(&s).is_err());
    }

    #[test]
    fn node_files_are_recognized() {
        assert!(is_node_file("52-54-00-00-00-0a.ipxe"));
        assert!(is_node_file("01-52-54-00-00-00-0a"));
        assert!(!is_node_file("boot.ipxe"));
        assert!(!is_node_file("default"));
        assert!(!is_node_file("01-52-54"));
    }
}
