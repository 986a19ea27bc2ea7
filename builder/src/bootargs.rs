//! Kernel arguments for boot media (ISO, PXE): a node's identity and `[boot]` settings from
//! its node.toml, written as the command-line keys stage0 reads (ARCHITECTURE.md §5), so a node
//! boots the same from a shared initramfs as from one that embeds its config.

use std::fmt;
use std::path::{Path, PathBuf};

use terra_init::cmdline;
use terra_init::config::network::{BondSection, VlanSection};
use terra_init::config::{ConfigError, NodeConfig};
use terra_init::network::ipconfig::parse_mac;
use terra_init::network::{bond, vlan};

/// A node config and where it came from.
#[derive(Debug, Clone)]
pub struct Node {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub config: NodeConfig,
}

/// Errors turning node configs and user arguments into kernel arguments.
#[derive(Debug)]
pub enum ArgsError {
    /// The node file cannot be read.
    Read { path: PathBuf, err: std::io::Error },
    /// The node file is not a valid node.toml.
    Node(ConfigError),
    /// A node value cannot be written as a kernel argument.
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A user-supplied argument cannot be carried by this boot medium.
    Arg {
        arg: String,
        medium: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Read { path, err } => {
                write!(f, "cannot read node config {}: {err}", path.display())
            }
            ArgsError::Node(e) => write!(f, "{e}"),
            ArgsError::Value {
                path,
                key,
                value,
                reason,
            } => write!(f, "{}: {key} = {value:?}: {reason}", path.display()),
            ArgsError::Arg {
                arg,
                medium,
                reason,
            } => write!(
                f,
                "kernel argument {arg:?} cannot go into {medium}: {reason}"
            ),
        }
    }
}

impl std::error::Error for ArgsError {}

impl Node {
    /// Reads and validates a node.toml; unlike stage0, a missing file is an error.
    pub fn load(path: &Path) -> Result<Self, ArgsError> {
        let text = std::fs::read_to_string(path).map_err(|err| ArgsError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let config = NodeConfig::parse(&text, path).map_err(ArgsError::Node)?;
        Ok(Node {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The node's kernel arguments: `hostname=`; the `[boot]` table as `version=`, `root=`,
    /// `init=`, `terra.timeout=`, `terra.rescue=`, `terra.modules=`; `[network]` and
    /// One `[[network.bonds]]` entry as `bond=`.
    fn bond_arg(&self, b: &BondSection) -> Result<String, ArgsError> {
        let refuse = |value: String, reason| Err(self.unsupported("network.bonds", value, reason));
        if let Err(e) = bond::from_section("network.bonds", b) {
            return refuse(e, "not a valid bond");
        }
        if b.slaves.iter().any(|m| parse_mac(m).is_some()) {
            return refuse(
                b.slaves.join(","),
                "bond= names members by interface name; name them, or embed this node.toml in \
                 the initramfs (terra initramfs --config)",
            );
        }
        // Valid options hold neither ':' nor spaces (bond::from_section checked them).
        let opts = b.options.as_deref().unwrap_or("");
        // A mode always goes in (the options' own, else `mode`, else balance-rr as dracut's
        // default), so the options field is never empty.
        let mut fields: Vec<String> = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        if !fields.iter().any(|o| o.starts_with("mode=")) {
            let mode = b.mode.as_deref().unwrap_or("balance-rr");
            fields.insert(0, format!("mode={mode}"));
        }
        let field = fields.join(",");
        let mut arg = format!("bond={}:{}:{field}", b.name, b.slaves.join(","));
        if let Some(mtu) = b.mtu {
            arg.push_str(&format!(":{mtu}"));
        }
        Ok(arg)
    }

    /// One `[[network.vlans]]` entry as `vlan=<name>:<parent>` (the ID is in the name).
    fn vlan_arg(&self, v: &VlanSection) -> Result<String, ArgsError> {
        let refuse = |value: String, reason| Err(self.unsupported("network.vlans", value, reason));
        if let Err(e) = vlan::from_section("network.vlans", v) {
            return refuse(e.into_owned(), "not a valid VLAN");
        }
        if parse_mac(&v.parent).is_some() {
            return refuse(
                v.parent.clone(),
                "vlan= names the parent by interface name; name it, or embed this node.toml in \
                 the initramfs (terra initramfs --config)",
            );
        }
        if let Some(mtu) = v.mtu {
            return refuse(
                mtu.to_string(),
                "no kernel argument carries a VLAN's MTU; embed this node.toml in the initramfs \
                 (terra initramfs --config)",
            );
        }
        let name = v
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{}", v.parent, v.id));
        if vlan::id_from_name(&name) != Some(v.id) {
            return refuse(
                name,
                "vlan= takes the ID from the name (<parent>.<id> or vlan<id>); name it so, or \
                 embed this node.toml in the initramfs (terra initramfs --config)",
            );
        }
        Ok(format!("vlan={name}:{}", v.parent))
    }

    /// `[iscsi]` as Terra OS's keys (see [`Node::network_args`], [`Node::iscsi_args`]).
    pub fn kernel_args(&self) -> Result<Vec<String>, ArgsError> {
        let c = &self.config;
        let mut args = Vec::new();
        let mut push = |key: &'static str, arg: &'static str, value: &str| {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(ArgsError::Value {
                    path: self.path.clone(),
                    key,
                    value: value.to_string(),
                    reason: "empty, or has spaces or quotes, which a kernel argument cannot carry",
                });
            }
            args.push(format!("{arg}={value}"));
            Ok(())
        };
        if let Some(h) = &c.hostname {
            if !valid_hostname(h) {
                return Err(ArgsError::Value {
                    path: self.path.clone(),
                    key: "hostname",
                    value: h.clone(),
                    reason: "expected letters, digits, '-' and '.' (RFC 1123), at most 253",
                });
            }
            push("hostname", "hostname", h)?;
        }
        let b = &c.boot;
        if let Some(v) = &b.version {
            push("boot.version", "version", v)?;
        }
        if let Some(v) = &b.root {
            push("boot.root", "root", v)?;
        }
        if let Some(v) = &b.init {
            push("boot.init", "init", v)?;
        }
        if let Some(v) = b.timeout {
            push("boot.timeout", "terra.timeout", &v.to_string())?;
        }
        if let Some(v) = &b.rescue {
            push("boot.rescue", "terra.rescue", v)?;
        }
        if !b.modules.is_empty() {
            push("boot.modules", "terra.modules", &b.modules.join(","))?;
        }
        args.extend(self.network_args()?);
        args.extend(self.iscsi_args()?);
        Ok(args)
    }

    fn unsupported(&self, key: &'static str, value: String, reason: &'static str) -> ArgsError {
        ArgsError::Value {
            path: self.path.clone(),
            key,
            value,
            reason,
        }
    }

    /// `[network]` in Terra OS's keys, which stage0 reads: a static interface as
    /// `network=<address/prefix> gateway=<gw>`, DHCP as `ip=dhcp`, the interface by
    /// `iface=<name or MAC>`, DNS as `nameservers=a,b`, the bound as `terra.net.timeout=`.
    /// Bonds and VLANs become dracut's `bond=<name>:<members>:mode=<mode>[,<options>][:<mtu>]`
    /// and `vlan=<name>:<parent>`, which stage0 reads into the same links. Terra OS's keys
    /// describe one interface; more, an MTU, and what those keys cannot say (members or
    /// parents by MAC, a VLAN name without its ID, a VLAN's MTU) need the node.toml embedded
    /// in the initramfs, and are refused here rather than silently dropped.
    pub fn network_args(&self) -> Result<Vec<String>, ArgsError> {
        let n = &self.config.network;
        let mut args = Vec::new();
        if n.interfaces.len() > 1 {
            return Err(self.unsupported(
                "network.interfaces",
                format!("{} interfaces", n.interfaces.len()),
                "kernel arguments describe one interface; embed this node.toml in the \
                 initramfs (terra initramfs --config) instead",
            ));
        }
        for b in &n.bonds {
            args.push(self.bond_arg(b)?);
        }
        for v in &n.vlans {
            args.push(self.vlan_arg(v)?);
        }
        let mut nameservers = n.nameservers.clone();
        if let Some(i) = n.interfaces.first() {
            if let Some(mtu) = i.mtu {
                return Err(self.unsupported(
                    "network.interfaces.mtu",
                    mtu.to_string(),
                    "no kernel argument carries it; embed this node.toml in the initramfs \
                     (terra initramfs --config) instead",
                ));
            }
            // As stage0 reads the entry (`ipconfig::node_interfaces`): the first IPv4 and the
            // first IPv6 address, the gateway with the address of its family, DHCPv4 unless
            // an address or only IPv6 is asked for. IPv6 goes as dracut's `ip=` forms on
            // "any link", which `iface=` below pins as it pins `ip=dhcp`.
            let v4 = i
                .addresses
                .iter()
                .find(|a| terra_init::network::ipconfig::parse_cidr(a).is_some());
            let v6 = i
                .addresses
                .iter()
                .find_map(|a| terra_init::network::ipconfig::parse_cidr6(a));
            let gw_v6 = i.gateway.as_deref().filter(|g| g.contains(':'));
            let only_v6 = v6.is_some() || i.dhcp6 == Some(true) || i.auto6 == Some(true);
            match v4 {
                Some(addr) if i.dhcp != Some(true) => {
                    args.push(format!("network={addr}"));
                    if let Some(gw) = i.gateway.as_ref().filter(|_| gw_v6.is_none()) {
                        args.push(format!("gateway={gw}"));
                    }
                }
                None if i.dhcp == Some(false) || (i.dhcp.is_none() && only_v6) => {}
                _ => args.push("ip=dhcp".into()),
            }
            if let Some((addr, prefix)) = v6 {
                let gw = gw_v6.map(|g| format!("[{g}]")).unwrap_or_default();
                args.push(format!("ip=[{addr}]::{gw}:{prefix}:::none"));
            }
            if i.auto6 == Some(true) {
                args.push("ip=auto6".into());
            }
            if i.dhcp6 == Some(true) {
                args.push("ip=dhcp6".into());
            }
            if let Some(sel) = i.name.as_ref().or(i.mac.as_ref()) {
                args.push(format!("iface={sel}"));
            }
            nameservers.extend(i.nameservers.iter().cloned());
        }
        if !nameservers.is_empty() {
            args.push(format!("nameservers={}", nameservers.join(",")));
        }
        if let Some(t) = n.timeout {
            args.push(format!("terra.net.timeout={t}"));
        }
        check_words(self, "network", &args)?;
        Ok(args)
    }

    /// `[iscsi]` as Terra OS's `ISCSI_INITIATOR=`, `ISCSI_TARGET_NAME=`,
    /// `ISCSI_TARGET_IP=` for the first target without a LUN, and dracut's
    /// `netroot=iscsi:<host>::<port>:<lun>:<iqn>` (RFC 4173) for the others. A target's
    /// CHAP secret would be served in clear text with the PXE tree: refused. Without a
    /// `[network]` interface the node gets `ip=dhcp`, since it must reach its target.
    pub fn iscsi_args(&self) -> Result<Vec<String>, ArgsError> {
        let i = &self.config.iscsi;
        let mut args = Vec::new();
        if let Some(name) = &i.initiator {
            args.push(format!("ISCSI_INITIATOR={name}"));
        }
        let mut terra_keys_used = false;
        for t in &i.targets {
            if t.chap_secret.is_some() || t.mutual_secret.is_some() {
                return Err(self.unsupported(
                    "iscsi.targets.chap_secret",
                    t.iqn.clone(),
                    "a CHAP secret on the kernel command line is readable by anyone who can \
                     fetch the boot files; embed this node.toml in the initramfs instead",
                ));
            }
            if t.lun.is_none() && !terra_keys_used {
                terra_keys_used = true;
                args.push(format!("ISCSI_TARGET_NAME={}", t.iqn));
                args.push(format!("ISCSI_TARGET_IP={}", t.portal));
                continue;
            }
            let (host, port) = split_portal(&t.portal);
            let lun = t.lun.map(|l| l.to_string()).unwrap_or_default();
            args.push(format!("netroot=iscsi:{host}::{port}:{lun}:{}", t.iqn));
        }
        if !i.targets.is_empty() && self.config.network.interfaces.is_empty() {
            args.push("ip=dhcp".into());
        }
        check_words(self, "iscsi", &args)?;
        Ok(args)
    }

    /// The node's MAC address, normalized, for PXE.
    pub fn mac(&self) -> Result<Mac, ArgsError> {
        let raw = self.config.mac.as_deref().ok_or_else(|| ArgsError::Value {
            path: self.path.clone(),
            key: "mac",
            value: String::new(),
            reason: "missing: a PXE entry is selected by the node's MAC address",
        })?;
        Mac::parse(raw).ok_or_else(|| ArgsError::Value {
            path: self.path.clone(),
            key: "mac",
            value: raw.to_string(),
            reason: "expected six hex octets separated by ':' or '-'",
        })
    }
}

/// `host[:port]` (IPv6 in brackets) as host and port (empty when absent).
fn split_portal(portal: &str) -> (&str, &str) {
    match portal.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && (h.starts_with('[') || !h.contains(':')) => (h, p),
        _ => (portal, ""),
    }
}

/// Values from a table that a kernel argument cannot carry (spaces, quotes).
fn check_words(node: &Node, key: &'static str, args: &[String]) -> Result<(), ArgsError> {
    match args
        .iter()
        .find(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c == '"'))
    {
        Some(a) => Err(node.unsupported(
            key,
            a.clone(),
            "has spaces or quotes, which a kernel argument cannot carry",
        )),
        None => Ok(()),
    }
}

/// RFC 1123 host name (dots allowed for a fully qualified name).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `52:54:00:12:34:56` or `52-54-00-12-34-56` (any case).
    pub fn parse(s: &str) -> Option<Mac> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        for (b, p) in m.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Mac(m))
    }

    /// Lowercase hex joined by `sep`: iPXE's `${mac:hexhyp}` with `-`, pxelinux's file
    /// names after `01-`.
    pub fn joined(&self, sep: &str) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(sep)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined(":"))
    }
}

/// Splits a user's `--cmdline` as the kernel would (double quotes group), giving one word
/// per parameter with its quotes removed.
pub fn split_user_args(line: &str) -> Vec<String> {
    cmdline::split(line)
        .into_iter()
        .map(|p| match p.value {
            Some(v) => format!("{}={v}", p.key),
            None => p.key,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> Node {
        Node {
            path: PathBuf::from("n1.toml"),
            config: NodeConfig::parse(text, Path::new("n1.toml")).unwrap(),
        }
    }

    #[test]
    fn node_args_from_identity_and_boot_table() {
        let n = node(
            "hostname = \"terra-01\"\nmac = \"52:54:00:AB:CD:EF\"\n[boot]\nversion = \"v6\"\n\
             root = \"LABEL=data\"\ntimeout = 9\nrescue = \"halt\"\nmodules = [\"e1000\", \"nvme\"]\n",
        );
        assert_eq!(
            n.kernel_args().unwrap(),
            [
                "hostname=terra-01",
                "version=v6",
                "root=LABEL=data",
                "terra.timeout=9",
                "terra.rescue=halt",
                "terra.modules=e1000,nvme"
            ]
        );
        assert_eq!(n.mac().unwrap().joined("-"), "52-54-00-ab-cd-ef");
        assert!(node("").kernel_args().unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_file_and_key() {
        let e = node("hostname = \"bad host\"\n").kernel_args().unwrap_err();
        assert!(e.to_string().contains("n1.toml: hostname"), "{e}");
        let e = node("[boot]\ninit = \"/sbin/my init\"\n")
            .kernel_args()
            .unwrap_err();
        assert!(e.to_string().contains("boot.init"), "{e}");
        let e = node("mac = \"52:54:00:12:34\"\n").mac().unwrap_err();
        assert!(e.to_string().contains("n1.toml: mac"), "{e}");
        let e = node("hostname = \"a\"\n").mac().unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn network_and_iscsi_tables_become_terra_os_keys() {
        let n = node(
            "hostname = \"n\"\n\
             [network]\nnameservers = [\"10.0.0.1\"]\ntimeout = 20\n\
             [[network.interfaces]]\nmac = \"52:54:00:00:00:01\"\naddresses = [\"10.0.0.5/24\"]\n\
             gateway = \"10.0.0.254\"\nnameservers = [\"10.0.0.2\"]\n\
             [iscsi]\ninitiator = \"iqn.2024-01.org.terra-os:n\"\n\
             [[iscsi.targets]]\nportal = \"10.0.0.9\"\niqn = \"iqn.2024-01.org.terra-os:root\"\n\
             [[iscsi.targets]]\nportal = \"10.0.0.9:3261\"\niqn = \"iqn.2024-01.org.terra-os:data\"\nlun = 2\n",
        );
        assert_eq!(
            n.kernel_args().unwrap(),
            [
                "hostname=n",
                "network=10.0.0.5/24",
                "gateway=10.0.0.254",
                "iface=52:54:00:00:00:01",
                "nameservers=10.0.0.1,10.0.0.2",
                "terra.net.timeout=20",
                "ISCSI_INITIATOR=iqn.2024-01.org.terra-os:n",
                "ISCSI_TARGET_NAME=iqn.2024-01.org.terra-os:root",
                "ISCSI_TARGET_IP=10.0.0.9",
                "netroot=iscsi:10.0.0.9::3261:2:iqn.2024-01.org.terra-os:data",
            ]
        );
        // What the builder writes is what stage0 reads: its own parsers accept the line
        // and see the same interface and targets.
        let line = n.kernel_args().unwrap().join(" ");
        let net = terra_init::network::ipconfig::resolve(
            &Default::default(),
            None,
            &line,
            Default::default(),
        )
        .unwrap()
        .expect("network needed");
        assert_eq!(net.hostname.as_deref(), Some("n"));
        assert_eq!(net.interfaces.len(), 1);
        assert_eq!(net.nameservers.len(), 2);
        let plan = terra_init::iscsi::target::plan(&Default::default(), &line)
            .unwrap()
            .expect("iscsi needed");
        assert_eq!(plan.initiator, "iqn.2024-01.org.terra-os:n");
        let mut iqns: Vec<&str> = plan.targets.iter().map(|t| t.iqn.as_str()).collect();
        iqns.sort();
        assert_eq!(
            iqns,
            [
                "iqn.2024-01.org.terra-os:data",
                "iqn.2024-01.org.terra-os:root"
            ]
        );
        let dhcp = node("[[network.interfaces]]\nname = \"eth0\"\n");
        assert_eq!(dhcp.kernel_args().unwrap(), ["ip=dhcp", "iface=eth0"]);
        // IPv6 as dracut's forms, read back by stage0 as the node.toml entry would be.
        let v6 = node(
            "[[network.interfaces]]\nname = \"eth0\"\nauto6 = true\ndhcp6 = true\n\
             addresses = [\"fd00::5/64\"]\ngateway = \"fd00::1\"\n",
        );
        let args = v6.kernel_args().unwrap();
        assert_eq!(
            args,
            [
                "ip=[fd00::5]::[fd00::1]:64:::none",
                "ip=auto6",
                "ip=dhcp6",
                "iface=eth0"
            ]
        );
        let net = terra_init::network::ipconfig::resolve(
            &Default::default(),
            None,
            &args.join(" "),
            Default::default(),
        )
        .unwrap()
        .expect("network needed");
        assert_eq!(net.interfaces.len(), 3);
        assert!(net.interfaces.iter().all(|i| i.method.is_ipv6()
            && i.selector == terra_init::network::ipconfig::Selector::Name("eth0".into())));
        let iscsi_only =
            node("[[iscsi.targets]]\nportal = \"[fd00::9]:3260\"\niqn = \"iqn.x:y\"\nlun = 1\n");
        assert_eq!(
            iscsi_only.kernel_args().unwrap(),
            ["netroot=iscsi:[fd00::9]::3260:1:iqn.x:y", "ip=dhcp"]
        );
    }

    #[test]
    fn what_kernel_arguments_cannot_carry_is_refused() {
        let e = node(
            "[[iscsi.targets]]\nportal = \"10.0.0.9\"\niqn = \"iqn.x:y\"\nchap_user = \"u\"\nchap_secret = \"0123456789abcdef\"\n",
        )
        .kernel_args()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("n1.toml: iscsi.targets.chap_secret") && e.contains("iqn.x:y"),
            "{e}"
        );
        assert!(!e.contains("0123456789abcdef"), "{e}");
        let e =
            node("[[network.interfaces]]\nname = \"a\"\n[[network.interfaces]]\nname = \"b\"\n")
                .kernel_args()
                .unwrap_err()
                .to_string();
        assert!(e.contains("network.interfaces"), "{e}");
        let e = node("[[network.interfaces]]\nmtu = 9000\n")
            .kernel_args()
            .unwrap_err()
            .to_string();
        assert!(e.contains("mtu"), "{e}");
        // What bond= and vlan= cannot say.
        for (toml, key) in [
            (
                "[[network.bonds]]\nname = \"bond0\"\nslaves = [\"52:54:00:12:34:56\"]\n",
                "network.bonds",
            ),
            (
                "[[network.vlans]]\nname = \"vlan5\"\nparent = \"52:54:00:12:34:56\"\nid = 5\n",
                "network.vlans",
            ),
            (
                "[[network.vlans]]\nparent = \"eth0\"\nid = 5\nmtu = 1400\n",
                "network.vlans",
            ),
            (
                "[[network.vlans]]\nname = \"storage\"\nparent = \"eth0\"\nid = 5\n",
                "network.vlans",
            ),
        ] {
            let e = node(toml).kernel_args().unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("--config"), "{e}");
        }
        // And what is not a bond or a VLAN at all.
        let e = node("[[network.vlans]]\nparent = \"eth0\"\nid = 4095\n")
            .kernel_args()
            .unwrap_err()
            .to_string();
        assert!(e.contains("network.vlans") && e.contains("4094"), "{e}");
        let e = node(
            "[[network.bonds]]\nname = \"bond0\"\nslaves = [\"eth0\"]\n\
             options = \"arp_ip_target=fe80::1\"\n",
        )
        .kernel_args()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("network.bonds") && e.contains("arp_ip_target"),
            "{e}"
        );
    }

    /// Bonds and VLANs reach stage0 as `bond=`/`vlan=` and make the same links as the
    /// node.toml they came from would when embedded.
    #[test]
    fn bonds_and_vlans_become_arguments_stage0_reads_back_the_same() {
        use terra_init::network::ipconfig::{resolve, Needs};
        for (toml, want) in [
            (
                "[[network.interfaces]]\nname = \"bond0.5\"\ndhcp = true\n\
                 [[network.bonds]]\nname = \"bond0\"\nslaves = [\"eth0\", \"eth1\"]\n\
                 mode = \"active-backup\"\noptions = \"miimon=100,primary=eth1\"\nmtu = 9000\n\
                 [[network.vlans]]\nparent = \"bond0\"\nid = 5\n",
                &[
                    "bond=bond0:eth0,eth1:mode=active-backup,miimon=100,primary=eth1:9000",
                    "vlan=bond0.5:bond0",
                ][..],
            ),
            (
                "[[network.bonds]]\nname = \"bond1\"\nslaves = [\"eno1\"]\n\
                 options = \"mode=802.3ad,lacp_rate=fast\"\n\
                 [[network.vlans]]\nname = \"vlan7\"\nparent = \"bond1\"\nid = 7\n",
                &[
                    "bond=bond1:eno1:mode=802.3ad,lacp_rate=fast",
                    "vlan=vlan7:bond1",
                ][..],
            ),
            (
                "[[network.bonds]]\nname = \"bond0\"\nslaves = [\"eth0\"]\n",
                &["bond=bond0:eth0:mode=balance-rr"][..],
            ),
        ] {
            let n = node(toml);
            let args = n.network_args().unwrap();
            for w in want {
                assert!(args.iter().any(|a| a == w), "{w} in {args:?}");
            }
            let needs = Needs {
                network: true,
                ..Needs::default()
            };
            let from_toml = resolve(&n.config.network, None, "", needs)
                .unwrap()
                .unwrap();
            let from_args = resolve(&Default::default(), None, &args.join(" "), needs)
                .unwrap()
                .unwrap();
            assert_eq!(from_args.links, from_toml.links, "{toml}");
        }
    }

    #[test]
    fn macs_parse_in_both_spellings() {
        let a = Mac::parse("52:54:00:12:34:56").unwrap();
        assert_eq!(Mac::parse("52-54-00-12-34-56"), Some(a));
        assert_eq!(a.to_string(), "52:54:00:12:34:56");
        for bad in [
            "",
            "52:54:00:12:34:5",
            "52:54:00:12:34:56:78",
            "zz:54:00:12:34:56",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn user_args_split_like_the_kernel() {
        assert_eq!(
            split_user_args(" console=ttyS0  rootflags=\"a b\" quiet"),
            ["console=ttyS0", "rootflags=a b", "quiet"]
        );
    }
}
