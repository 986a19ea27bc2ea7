//! node.toml's `[network]` table as written: plain data, checked only for its shape. The
//! network phase (`network::ipconfig`) validates the values and overlays the kernel
//! command line on them.

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
}

/// One `[[network.interfaces]]` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    /// Kernel name, e.g. `eth0`.
    pub name: Option<String>,
    /// Hardware address, e.g. `52:54:00:12:34:56`.
    pub mac: Option<String>,
    /// Ask a DHCP server (the default when no address is given).
    pub dhcp: Option<bool>,
    /// Static addresses with prefix, e.g. `10.0.0.5/24` (the first one is used).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Default gateway for a static address.
    pub gateway: Option<String>,
    /// MTU to set.
    pub mtu: Option<u32>,
    /// DNS servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
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
}
