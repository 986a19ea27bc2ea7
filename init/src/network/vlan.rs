//! 802.1Q VLAN links: dracut's `vlan=<name>:<phys>` (the VLAN ID comes from the name, in
//! one of the kernel's four naming styles) and node.toml's `[[network.vlans]]`; the link's
//! netlink attributes (IFLA_VLAN_*, include/uapi/linux/if_link.h). Parsing and emitting
//! only: `links.rs` makes the link.

use std::borrow::Cow;

use super::ifname::{valid_ifname, IFNAME_EXPECTED};
use super::types::{parse_mac, valid_mtu, Selector};
use crate::config::network::VlanSection;

/// `IFLA_VLAN_ID` (u16) inside `IFLA_INFO_DATA`.
pub const IFLA_VLAN_ID: u16 = 1;

/// A VLAN link to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanSpec {
    /// Its name.
    pub name: String,
    /// The link it sits on (a NIC or a bond).
    pub parent: Selector,
    /// VLAN ID, 1 to 4094 (IEEE 802.1Q §9.6: 0 and 4095 are reserved).
    pub id: u16,
    /// MTU to set.
    pub mtu: Option<u32>,
}

fn valid_id(id: u16) -> bool {
    (1..=4094).contains(&id)
}

/// The VLAN ID a name carries, in the styles of `vconfig set_name_type` that dracut
/// reads: `vlan0005` and `vlan5` (VLAN_PLUS_VID, _NO_PAD), `eth0.0005` and `eth0.5`
/// (DEV_PLUS_VID, _NO_PAD). Decimal, leading zeros ignored.
pub fn id_from_name(name: &str) -> Option<u16> {
    let all_digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let digits = match name.strip_prefix("vlan") {
        Some(d) if all_digits(d) => d,
        _ => match name.rsplit_once('.') {
            Some((dev, d)) if !dev.is_empty() && all_digits(d) => d,
            _ => return None,
        },
    };
    // `parse` of the whole run would also take a long run of zeros; the ID is what is left.
    let id: u16 = digits.trim_start_matches('0').parse().ok()?;
    valid_id(id).then_some(id)
}

/// What `vlan=` must look like, for messages.
pub const EXPECTED: &str = "<name>:<parent>, the VLAN ID (1 to 4094) in the name as \
     vlan<id>, vlan<0-padded id>, <parent>.<id> or <parent>.<0-padded id>; names of 1 to 15 \
     characters without '/', ':', '%' or spaces";

/// Parses `vlan=`'s value.
pub fn parse_vlan(v: &str) -> Result<VlanSpec, &'static str> {
    let (name, parent) = v.split_once(':').ok_or(EXPECTED)?;
    if !valid_ifname(name) || !valid_ifname(parent) {
        return Err(EXPECTED);
    }
    let id = id_from_name(name).ok_or(EXPECTED)?;
    Ok(VlanSpec {
        name: name.to_string(),
        parent: Selector::Name(parent.to_string()),
        id,
        mtu: None,
    })
}

/// A `[[network.vlans]]` entry; `at` names it in errors (`network.vlans[0]`).
pub fn from_section(at: &str, s: &VlanSection) -> Result<VlanSpec, Cow<'static, str>> {
    if !valid_id(s.id) {
        return Err(format!("{at}.id = {}: expected 1 to 4094", s.id).into());
    }
    let parent = match parse_mac(&s.parent) {
        Some(m) => Selector::Mac(m),
        None if valid_ifname(&s.parent) => Selector::Name(s.parent.clone()),
        None => {
            return Err(format!(
                "{at}.parent = {:?}: expected a MAC or {IFNAME_EXPECTED}",
                s.parent
            )
            .into())
        }
    };
    let name = match &s.name {
        Some(n) if valid_ifname(n) => n.clone(),
        Some(n) => return Err(format!("{at}.name = {n:?}: expected {IFNAME_EXPECTED}").into()),
        None => {
            let n = format!("{}.{}", s.parent, s.id);
            if !valid_ifname(&n) {
                return Err(format!(
                    "{at}: the default name {n:?} is not a valid interface name; give a name"
                )
                .into());
            }
            n
        }
    };
    if let Some(m) = s.mtu.filter(|m| !valid_mtu(*m)) {
        return Err(format!("{at}.mtu = {m}: expected 68 to 65535").into());
    }
    Ok(VlanSpec {
        name,
        parent,
        id: s.id,
        mtu: s.mtu,
    })
}

impl VlanSpec {
    /// `IFLA_INFO_DATA` for kind `vlan`: the ID (the protocol stays the kernel's default,
    /// 802.1Q).
    pub fn info_data(&self) -> Vec<(u16, Vec<u8>)> {
        vec![(IFLA_VLAN_ID, self.id.to_ne_bytes().to_vec())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_from_the_four_naming_styles() {
        assert_eq!(id_from_name("vlan0005"), Some(5));
        assert_eq!(id_from_name("vlan5"), Some(5));
        assert_eq!(id_from_name("eth0.0005"), Some(5));
        assert_eq!(id_from_name("eth0.5"), Some(5));
        assert_eq!(id_from_name("bond0.4094"), Some(4094));
        // Decimal, not octal as a 0-prefixed number would be read by some tools.
        assert_eq!(id_from_name("vlan0010"), Some(10));
        for none in [
            "vlan",
            "vlan0",
            "vlan4095",
            "vlan70000",
            "eth0",
            "eth0.",
            ".5",
            "eth0.x5",
            "vlanx",
            "vlan-5",
        ] {
            assert_eq!(id_from_name(none), None, "{none}");
        }
        // Not `vlan<digits>`: the digits after the last dot.
        assert_eq!(id_from_name("vlan7.5"), Some(5));
    }

    #[test]
    fn vlan_values() {
        assert_eq!(
            parse_vlan("vlan5:eth0"),
            Ok(VlanSpec {
                name: "vlan5".into(),
                parent: Selector::Name("eth0".into()),
                id: 5,
                mtu: None,
            })
        );
        assert_eq!(parse_vlan("bond0.42:bond0").map(|v| v.id), Ok(42));
        for bad in [
            "",
            "vlan5",
            "vlan5:",
            ":eth0",
            "vlan5:eth0:x",
            "lan:eth0",
            "vlan0:eth0",
            "vlan4095:eth0",
            "vlan5:a/b",
        ] {
            assert!(parse_vlan(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_vlan("vlan300:eth0").unwrap().info_data(),
            vec![(IFLA_VLAN_ID, 300u16.to_ne_bytes().to_vec())]
        );
    }

    #[test]
    fn sections() {
        let s = VlanSection {
            name: None,
            parent: "bond0".into(),
            id: 42,
            mtu: Some(1496),
        };
        let v = from_section("network.vlans[0]", &s).unwrap();
        assert_eq!((v.name.as_str(), v.id, v.mtu), ("bond0.42", 42, Some(1496)));
        let by_mac = VlanSection {
            parent: "52:54:00:00:00:01".into(),
            name: Some("v42".into()),
            ..s.clone()
        };
        assert_eq!(
            from_section("x", &by_mac).unwrap().parent,
            Selector::Mac([0x52, 0x54, 0, 0, 0, 1])
        );
        for (bad, needle) in [
            (
                VlanSection { id: 0, ..s.clone() },
                "network.vlans[0].id = 0",
            ),
            (
                VlanSection {
                    id: 4095,
                    ..s.clone()
                },
                "network.vlans[0].id",
            ),
            (
                VlanSection {
                    parent: "a/b".into(),
                    ..s.clone()
                },
                "network.vlans[0].parent",
            ),
            (
                VlanSection {
                    name: Some("x".repeat(16)),
                    ..s.clone()
                },
                "network.vlans[0].name",
            ),
            (
                VlanSection {
                    parent: "enp0s31f6np0".into(),
                    id: 4000,
                    ..s.clone()
                },
                "default name",
            ),
            (
                VlanSection {
                    mtu: Some(20),
                    ..s.clone()
                },
                "network.vlans[0].mtu",
            ),
        ] {
            let e = from_section("network.vlans[0]", &bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(v in "[0-9a-z.:/%]{0,40}") {
            if let Ok(s) = parse_vlan(&v) {
                prop_assert!(valid_id(s.id));
                prop_assert!(valid_ifname(&s.name));
            }
        }
    }
}
