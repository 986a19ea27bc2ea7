//! What a booting machine is served: iPXE scripts (one chaining entry, one per node, the
//! default for unknown machines), the per-node initramfs that carries its node.toml (CHAP
//! secrets travel there, never on the command line: the kernel unpacks the concatenated
//! archives, and the later file wins), and pxelinux entries for TFTP-only machines.
//! Formats only; the HTTP server and the TFTP tree write them.

use terra_builder::bootargs::Mac;
use terra_builder::cpio::{Archive, CpioError};
use terra_init::layout::NODE_CONFIG;

/// The node's report token in its initramfs: `[controller]`'s default token file beside
/// node.toml.
pub const TOKEN_FILE: &str = "etc/terra/controller.token";

/// The shared kernel's path under the public URL.
pub const KERNEL_PATH: &str = "/assets/vmlinuz";
/// The shared initramfs's path under the public URL.
pub const INITRD_PATH: &str = "/assets/initrd.img";

/// Arguments of every entry: Terra OS's marker (stage0 ignores it) and the serial console
/// as given to `terra serve --cmdline`.
fn base_args(cmdline: &str) -> String {
    format!("boot=terra {cmdline}").trim_end().to_string()
}

/// `GET /boot.ipxe`: chains to the machine's own script by its MAC.
pub fn chain_script(public_url: &str) -> String {
    format!(
        "#!ipxe\n# Terra controller: every machine asks for its own entry by MAC.\n\
         chain {}/ipxe?mac=${{mac:hexhyp}} || goto failed\nexit\n:failed\n\
         echo Terra: the controller did not answer for ${{mac}}\nexit 1\n",
        public_url.trim_end_matches('/')
    )
}

/// `GET /ipxe?mac=…` for a known node: the shared kernel and initramfs, then its own
/// initramfs (its node.toml). Under UEFI the kernel's EFI stub loads every `initrd=` in
/// order; under BIOS iPXE concatenates the images it loaded.
pub fn node_script(public_url: &str, hostname: &str, mac: &Mac, cmdline: &str) -> String {
    let url = public_url.trim_end_matches('/');
    let dashes = mac.joined("-");
    format!(
        "#!ipxe\n# Terra node {hostname} ({mac})\necho Terra: node {hostname}\n\
         kernel --name vmlinuz {url}{KERNEL_PATH} initrd=initrd.img initrd=node.cpio \
         {} BOOTIF=01-{dashes}\n\
         initrd --name initrd.img {url}{INITRD_PATH}\n\
         initrd --name node.cpio {url}/nodes/{dashes}/node.cpio\n\
         boot\n",
        base_args(cmdline)
    )
}

/// `GET /ipxe?mac=…` for a machine the controller does not know: the default entry, the
/// shared kernel and initramfs without a node config (stage0 then says what is missing
/// and runs its rescue action).
pub fn default_script(public_url: &str, mac: &str, cmdline: &str) -> String {
    let url = public_url.trim_end_matches('/');
    format!(
        "#!ipxe\n# Terra: {mac} is not a known node (recorded as discovered)\n\
         echo Terra: no node for ${{mac}}, booting the default entry\n\
         kernel --name vmlinuz {url}{KERNEL_PATH} initrd=initrd.img {} BOOTIF=01-${{mac:hexhyp}}\n\
         initrd --name initrd.img {url}{INITRD_PATH}\nboot\n",
        base_args(cmdline)
    )
}

/// pxelinux's entry for a node (`pxelinux.cfg/01-<mac>`): pxelinux loads both initramfs
/// files, comma-separated, from the TFTP tree.
pub fn pxelinux_entry(hostname: &str, mac: &Mac, cmdline: &str) -> String {
    let dashes = mac.joined("-");
    format!(
        "# Terra node {hostname}\nDEFAULT terra\nLABEL terra\n  KERNEL vmlinuz\n  \
         APPEND initrd=initrd.img,nodes/{dashes}.cpio {} BOOTIF=01-{dashes}\n",
        base_args(cmdline)
    )
}

/// The per-node initramfs: a newc archive holding node.toml at stage0's path and, when
/// the node reports its boots, its report token beside it (`[controller]`'s default token
/// file; stage0 keeps it in a root-only file for the booted system).
pub fn node_cpio(node_toml: &str, report_token: &str) -> Result<Vec<u8>, CpioError> {
    let mut a = Archive::new();
    a.add_file(NODE_CONFIG, node_toml.as_bytes().to_vec(), false)?;
    if !report_token.is_empty() {
        a.add_file(TOKEN_FILE, report_token.as_bytes().to_vec(), false)?;
    }
    let mut out = Vec::new();
    // A fixed mtime: the same node gets the same bytes.
    a.write(&mut out, 0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_script_loads_both_initramfs_files_in_order() {
        let mac = Mac::parse("52:54:00:aa:00:01").unwrap();
        let s = node_script("http://10.0.2.2:8080/", "n1", &mac, "console=ttyS0");
        assert!(s.starts_with("#!ipxe\n"));
        let shared = s.find("initrd --name initrd.img http://10.0.2.2:8080/assets/initrd.img");
        let own = s
            .find("initrd --name node.cpio http://10.0.2.2:8080/nodes/52-54-00-aa-00-01/node.cpio");
        assert!(shared.is_some() && own.is_some() && shared < own, "{s}");
        assert!(s.contains("initrd=initrd.img initrd=node.cpio boot=terra console=ttyS0"));
        assert!(s.contains("BOOTIF=01-52-54-00-aa-00-01"));
    }

    #[test]
    fn the_chain_script_asks_by_mac() {
        assert!(chain_script("http://c:1").contains("chain http://c:1/ipxe?mac=${mac:hexhyp}"));
    }

    #[test]
    fn the_node_cpio_holds_node_toml_at_stage0s_path() {
        let bytes = node_cpio("hostname = \"n1\"\n", "").unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("070701"));
        assert!(text.contains(NODE_CONFIG));
        assert!(text.contains("hostname = \"n1\""));
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(bytes, node_cpio("hostname = \"n1\"\n", "").unwrap());
        assert!(!text.contains("controller.token"));
        let with = node_cpio("hostname = \"n1\"\n", "tok123").unwrap();
        let text = String::from_utf8_lossy(&with);
        assert!(text.contains(TOKEN_FILE) && text.contains("tok123"));
    }
}
