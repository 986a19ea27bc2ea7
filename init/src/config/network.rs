//! node.toml's `[network]` table as written: plain data, checked only for its shape. The
//! network phase (`network::ipconfig`, `network::bond`, `network::vlan`) validates the
//! values and overlays the kernel command line on them.

use serde::Deserialize;

/// node.toml `[network]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Bound on the phase, seconds (like `terra.net.timeout=`).
    pub timeout: Option<u64>,
    /// DNS servers for every interface.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Interfaces to configure; a non-empty list makes the network needed at boot.
    #[serde(default)]
    pub interfaces: Vec<InterfaceSection>,
    /// Bonds made before any interface is configured.
    #[serde(default)]
    pub bonds: Vec<BondSection>,
    /// VLANs made (after the bonds, so a VLAN may sit on one) before any interface is
    /// configured.
    #[serde(default)]
    pub vlans: Vec<VlanSection>,
}

/// One `[[network.interfaces]]` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    /// Kernel name, e.g. `eth0`.
    pub name: Option<String>,
    /// Hardware address, e.g. `52:54:00:12:34:56`.
    pub mac: Option<String>,
    /// Ask a DHCP server (the default when no address is given and neither `dhcp6` nor
    /// `auto6` is set).
    pub dhcp: Option<bool>,
    /// Ask a DHCPv6 server for an address (like `ip=<dev>:dhcp6`).
    pub dhcp6: Option<bool>,
    /// IPv6 stateless autoconfiguration from router advertisements (like `ip=<dev>:auto6`).
    pub auto6: Option<bool>,
    /// Static addresses with prefix, e.g. `10.0.0.5/24` or `fd00::5/64` (the first of each
    /// family is used).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Default gateway for the static address of its family (IPv4 or IPv6).
    pub gateway: Option<String>,
    /// MTU to set.
    pub mtu: Option<u32>,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// One `[[network.bonds]]` entry: what dracut's `bond=` says, as a table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BondSection {
    /// The bond's name, e.g. `bond0`.
    pub name: String,
    /// Member links, by name or by MAC.
    #[serde(default)]
    pub slaves: Vec<String>,
    /// Bonding mode by name or number, e.g. `802.3ad` or `active-backup` (default
    /// `balance-rr`, the kernel's).
    pub mode: Option<String>,
    /// Bonding options as for `bond=`: comma-separated `key=value`, e.g.
    /// `"miimon=100,lacp_rate=fast"`.
    pub options: Option<String>,
    /// MTU of the bond (its members follow).
    pub mtu: Option<u32>,
}

/// One `[[network.vlans]]` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VlanSection {
    /// The VLAN link's name (default `<parent>.<id>`).
    pub name: Option<String>,
    /// The link it sits on, by name (a NIC or a bond) or MAC.
    pub parent: String,
    /// VLAN ID, 1 to 4094.
    pub id: u16,
    /// MTU of the VLAN link (at most its parent's).
    pub mtu: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::NodeConfig;

    #[test]
    fn unknown_interface_keys_are_named() {
        let err = NodeConfig::parse(
            "[network]\n[[network.interfaces]]\nname = \"e\"\nbogus = 1\n",
            Path::new("node.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bonds_and_vlans_parse_and_unknown_keys_are_named() {
        let node = NodeConfig::parse(
            "[[network.bonds]]\nname = \"bond0\"\nslaves = [\"eth0\", \"52:54:00:00:00:02\"]\n\
             mode = \"802.3ad\"\noptions = \"miimon=100\"\nmtu = 9000\n\
             [[network.vlans]]\nparent = \"bond0\"\nid = 42\n",
            Path::new("node.toml"),
        )
        .unwrap();
        assert_eq!(node.network.bonds[0].slaves.len(), 2);
        assert_eq!(node.network.bonds[0].mtu, Some(9000));
        assert_eq!(node.network.vlans[0].id, 42);
        assert_eq!(node.network.vlans[0].name, None);
        for (text, key) in [
            ("[[network.bonds]]\nname = \"b\"\nlacp = 1\n", "lacp"),
            (
                "[[network.vlans]]\nparent = \"e\"\nid = 5\nvid = 5\n",
                "vid",
            ),
            ("[[network.vlans]]\nparent = \"e\"\nid = 70000\n", "id"),
        ] {
            let err = NodeConfig::parse(text, Path::new("node.toml")).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }
}
