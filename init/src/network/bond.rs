//! Bonds: dracut's `bond=<name>[:<slaves>[:<options>[:<mtu>]]]`, Terra OS's
//! `bondslaves=a,b` (`bond0` in 802.3ad, as Terra OS v18 made it) and node.toml's
//! `[[network.bonds]]`; their options as the bonding driver's netlink attributes
//! (`IFLA_BOND_*`, include/uapi/linux/if_link.h), with the names and values its sysfs files
//! take (Documentation/networking/bonding.rst), which is what dracut's options are.
//! Parsing and emitting only: `links.rs` makes the bond.

use std::borrow::Cow;
use std::fmt;
use std::net::Ipv4Addr;

use super::ifname::{valid_ifname, IFNAME_EXPECTED};
use super::types::{parse_mac, valid_mtu, Selector};
use crate::config::network::BondSection;

/// How a value is read, and how wide it is on the wire.
#[derive(Debug)]
enum Ty {
    /// A number up to 255, sent as u8.
    U8,
    /// A number up to 65535, sent as u16.
    U16,
    /// A number, sent as u32.
    U32,
    /// A name from the table (or its number), sent as u8.
    Word8(&'static [(&'static str, u8)]),
    /// A name from the table (or its number), sent as u32.
    Word32(&'static [(&'static str, u8)]),
    /// IPv4 addresses separated by `;` (dracut's way inside a comma-separated list), sent
    /// as a nested list of big-endian addresses.
    Targets,
    /// A member's name, sent as its interface index.
    Slave,
}

/// One option the driver takes over netlink.
#[derive(Debug)]
struct Known {
    /// The sysfs name (`/sys/class/net/<bond>/bonding/<name>`).
    name: &'static str,
    /// `IFLA_BOND_*`.
    attr: u16,
    ty: Ty,
}

const BOOL: &[(&str, u8)] = &[("0", 0), ("1", 1)];

/// bonding.rst "mode".
const MODES: &[(&str, u8)] = &[
    ("balance-rr", 0),
    ("active-backup", 1),
    ("balance-xor", 2),
    ("broadcast", 3),
    ("802.3ad", 4),
    ("balance-tlb", 5),
    ("balance-alb", 6),
];

/// `IFLA_BOND_MODE`.
const IFLA_BOND_MODE: u16 = 1;
/// `IFLA_BOND_ARP_IP_TARGET`'s list is nested.
const NLA_F_NESTED: u16 = 0x8000;
/// `BOND_MAX_ARP_TARGETS` (include/net/bonding.h).
const MAX_ARP_TARGETS: usize = 16;

/// The options, by the attribute numbers of include/uapi/linux/if_link.h.
#[rustfmt::skip]
const KNOWN: &[Known] = &[
    Known { name: "mode", attr: IFLA_BOND_MODE, ty: Ty::Word8(MODES) },
    Known { name: "miimon", attr: 3, ty: Ty::U32 },
    Known { name: "updelay", attr: 4, ty: Ty::U32 },
    Known { name: "downdelay", attr: 5, ty: Ty::U32 },
    Known { name: "use_carrier", attr: 6, ty: Ty::Word8(BOOL) },
    Known { name: "arp_interval", attr: 7, ty: Ty::U32 },
    Known { name: "arp_ip_target", attr: 8, ty: Ty::Targets },
    Known {
        name: "arp_validate",
        attr: 9,
        ty: Ty::Word32(&[
            ("none", 0),
            ("active", 1),
            ("backup", 2),
            ("all", 3),
            ("filter", 4),
            ("filter_active", 5),
            ("filter_backup", 6),
        ]),
    },
    Known { name: "arp_all_targets", attr: 10, ty: Ty::Word32(&[("any", 0), ("all", 1)]) },
    Known { name: "primary", attr: 11, ty: Ty::Slave },
    Known {
        name: "primary_reselect",
        attr: 12,
        ty: Ty::Word8(&[("always", 0), ("better", 1), ("failure", 2)]),
    },
    Known {
        name: "fail_over_mac",
        attr: 13,
        ty: Ty::Word8(&[("none", 0), ("active", 1), ("follow", 2)]),
    },
    Known {
        name: "xmit_hash_policy",
        attr: 14,
        ty: Ty::Word8(&[
            ("layer2", 0),
            ("layer3+4", 1),
            ("layer2+3", 2),
            ("encap2+3", 3),
            ("encap3+4", 4),
            ("vlan+srcmac", 5),
        ]),
    },
    Known { name: "resend_igmp", attr: 15, ty: Ty::U32 },
    Known { name: "num_grat_arp", attr: 16, ty: Ty::U8 },
    Known { name: "num_unsol_na", attr: 16, ty: Ty::U8 },
    Known { name: "all_slaves_active", attr: 17, ty: Ty::Word8(BOOL) },
    Known { name: "min_links", attr: 18, ty: Ty::U32 },
    Known { name: "lp_interval", attr: 19, ty: Ty::U32 },
    Known { name: "packets_per_slave", attr: 20, ty: Ty::U32 },
    Known { name: "lacp_rate", attr: 21, ty: Ty::Word8(&[("slow", 0), ("fast", 1)]) },
    Known {
        name: "ad_select",
        attr: 22,
        ty: Ty::Word8(&[("stable", 0), ("bandwidth", 1), ("count", 2)]),
    },
    Known { name: "ad_actor_sys_prio", attr: 24, ty: Ty::U16 },
    Known { name: "ad_user_port_key", attr: 25, ty: Ty::U16 },
    Known { name: "tlb_dynamic_lb", attr: 27, ty: Ty::Word8(BOOL) },
    Known { name: "peer_notif_delay", attr: 28, ty: Ty::U32 },
    Known { name: "lacp_active", attr: 29, ty: Ty::Word8(&[("off", 0), ("on", 1)]) },
    Known { name: "missed_max", attr: 30, ty: Ty::U8 },
];

/// A bonding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(u8);

impl Mode {
    /// `balance-rr`, the kernel's default and dracut's.
    pub const BALANCE_RR: Mode = Mode(0);
    /// `active-backup`.
    pub const ACTIVE_BACKUP: Mode = Mode(1);
    /// `802.3ad` (LACP), Terra OS's `bondslaves=`.
    pub const IEEE_8023AD: Mode = Mode(4);

    /// By name (`802.3ad`) or number (`4`).
    pub fn parse(s: &str) -> Option<Mode> {
        word(MODES, s).map(Mode)
    }

    /// Its number (`IFLA_BOND_MODE`).
    pub fn number(self) -> u8 {
        self.0
    }

    /// Its name in bonding.rst.
    pub fn name(self) -> &'static str {
        MODES
            .iter()
            .find(|(_, v)| *v == self.0)
            .map_or("?", |(n, _)| n)
    }
}

/// A name of the table, or one of its numbers.
fn word(table: &[(&str, u8)], s: &str) -> Option<u8> {
    table
        .iter()
        .find(|(n, v)| *n == s || s.parse::<u8>().ok() == Some(*v))
        .map(|(_, v)| *v)
}

/// An option's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Num(u32),
    Targets(Vec<Ipv4Addr>),
    Slave(String),
}

/// One bonding option, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondOption {
    known: &'static Known,
    value: Value,
}

impl PartialEq for Known {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Known {}

impl fmt::Display for BondOption {
    /// `name=value`, words by name: what the bonding driver's sysfs file would show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.known.name)?;
        match (&self.value, &self.known.ty) {
            (Value::Num(n), Ty::Word8(t) | Ty::Word32(t)) => {
                match t.iter().find(|(_, v)| u32::from(*v) == *n) {
                    Some((name, _)) => write!(f, "{name}"),
                    None => write!(f, "{n}"),
                }
            }
            (Value::Num(n), _) => write!(f, "{n}"),
            (Value::Targets(t), _) => {
                let list: Vec<String> = t.iter().map(|a| a.to_string()).collect();
                write!(f, "{}", list.join(";"))
            }
            (Value::Slave(s), _) => write!(f, "{s}"),
        }
    }
}

impl BondOption {
    /// The option's sysfs name.
    pub fn name(&self) -> &'static str {
        self.known.name
    }

    /// The member this option names (`primary`), if any.
    pub fn slave(&self) -> Option<&str> {
        match &self.value {
            Value::Slave(s) => Some(s),
            _ => None,
        }
    }

    /// The attribute (`IFLA_BOND_*`, payload in host order as netlink has it), with a
    /// member's name turned into its index by `index_of`; None when that member is unknown.
    pub fn attribute(&self, index_of: &dyn Fn(&str) -> Option<u32>) -> Option<(u16, Vec<u8>)> {
        let payload = match (&self.value, &self.known.ty) {
            (Value::Num(n), Ty::U8 | Ty::Word8(_)) => vec![u8::try_from(*n).ok()?],
            (Value::Num(n), Ty::U16) => u16::try_from(*n).ok()?.to_ne_bytes().to_vec(),
            (Value::Num(n), _) => n.to_ne_bytes().to_vec(),
            (Value::Slave(s), _) => index_of(s)?.to_ne_bytes().to_vec(),
            (Value::Targets(list), _) => {
                // Nested: one attribute per address, numbered from 0, each 4 bytes in network
                // order (bond_netlink.c reads them with nla_get_be32).
                let mut out = Vec::new();
                for (i, a) in list.iter().enumerate() {
                    out.extend_from_slice(&8u16.to_ne_bytes());
                    out.extend_from_slice(&(i as u16).to_ne_bytes());
                    out.extend_from_slice(&a.octets());
                }
                return Some((self.known.attr | NLA_F_NESTED, out));
            }
        };
        Some((self.known.attr, payload))
    }
}

/// Every option name, for messages.
fn known_names() -> String {
    let mut names: Vec<&str> = KNOWN.iter().map(|k| k.name).collect();
    names.dedup();
    names.join(", ")
}

fn parse_value(known: &'static Known, v: &str) -> Result<Value, String> {
    let number = |max: u32| {
        v.parse::<u32>()
            .ok()
            .filter(|n| *n <= max)
            .map(Value::Num)
            .ok_or_else(|| format!("{}=<0 to {max}>, not {v:?}", known.name))
    };
    match &known.ty {
        Ty::U8 => number(u8::MAX.into()),
        Ty::U16 => number(u16::MAX.into()),
        Ty::U32 => number(u32::MAX),
        Ty::Word8(t) | Ty::Word32(t) => word(t, v).map(|n| Value::Num(n.into())).ok_or_else(|| {
            let names: Vec<&str> = t.iter().map(|(n, _)| *n).collect();
            format!("{}=<{}>, not {v:?}", known.name, names.join("|"))
        }),
        Ty::Targets => {
            let list: Option<Vec<Ipv4Addr>> = v.split(';').map(|a| a.parse().ok()).collect();
            match list {
                Some(l) if !l.is_empty() && l.len() <= MAX_ARP_TARGETS => Ok(Value::Targets(l)),
                _ => Err(format!(
                    "{}=<1 to {MAX_ARP_TARGETS} IPv4 addresses separated by ';'>, not {v:?}",
                    known.name
                )),
            }
        }
        Ty::Slave if valid_ifname(v) => Ok(Value::Slave(v.to_string())),
        Ty::Slave => Err(format!("{}=<a member's name>, not {v:?}", known.name)),
    }
}

/// Options as dracut takes them: `key=value` separated by commas (spaces too, as in
/// initscripts' `BONDING_OPTS`). `mode` is returned apart. A later value of a key replaces
/// an earlier one, as a second write to the sysfs file would.
pub fn parse_options(s: &str) -> Result<(Option<Mode>, Vec<BondOption>), String> {
    let mut mode = None;
    let mut options: Vec<BondOption> = Vec::new();
    for item in s.split([',', ' ']).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("bonding options as key=value; {item:?} has no value"))?;
        let known = KNOWN.iter().find(|k| k.name == key).ok_or_else(|| {
            format!(
                "bonding options named {}; {key:?} is not one of them",
                known_names()
            )
        })?;
        let value = parse_value(known, value)?;
        if known.attr == IFLA_BOND_MODE {
            if let Value::Num(n) = value {
                mode = u8::try_from(n).ok().map(Mode);
            }
            continue;
        }
        options.retain(|o| o.known.attr != known.attr);
        options.push(BondOption { known, value });
    }
    Ok((mode, options))
}

/// A bond to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondSpec {
    /// Its name.
    pub name: String,
    /// Its members, in the order they are enslaved (the first one's MAC becomes the
    /// bond's).
    pub slaves: Vec<Selector>,
    /// The bonding mode.
    pub mode: Mode,
    /// The other options.
    pub options: Vec<BondOption>,
    /// MTU to set on the bond (its members follow).
    pub mtu: Option<u32>,
}

impl BondSpec {
    /// `IFLA_INFO_DATA` for kind `bond`: the mode first (the driver refuses some options in
    /// some modes, and reads the attributes in number order anyway), then the options.
    /// None when an option names a member that `index_of` does not know.
    pub fn info_data(&self, index_of: &dyn Fn(&str) -> Option<u32>) -> Option<Vec<(u16, Vec<u8>)>> {
        let mut out = vec![(IFLA_BOND_MODE, vec![self.mode.0])];
        for o in &self.options {
            out.push(o.attribute(index_of)?);
        }
        Some(out)
    }

    /// The options other than the mode as `name=value` strings: what the reports show.
    pub fn describe_options(&self) -> Vec<String> {
        self.options.iter().map(|o| o.to_string()).collect()
    }
}

/// What `bond=` must look like, for messages.
pub const EXPECTED: &str = "<name>[:<slave>,<slave>…[:<options>[:<mtu>]]], names of 1 to 15 \
     characters without '/', ':', '%' or spaces, options as key=value separated by commas";

/// dracut's default bond, for a bare `bond`: `bond0:eth0,eth1:mode=balance-rr`.
fn dracut_default() -> BondSpec {
    BondSpec {
        name: "bond0".into(),
        slaves: vec![Selector::Name("eth0".into()), Selector::Name("eth1".into())],
        mode: Mode::BALANCE_RR,
        options: Vec::new(),
        mtu: None,
    }
}

fn slave_names(list: &str) -> Option<Vec<Selector>> {
    let names: Vec<Selector> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| valid_ifname(s).then(|| Selector::Name(s.to_string())))
        .collect::<Option<_>>()?;
    (!names.is_empty()).then_some(names)
}

/// Parses `bond=`'s value (None for a bare `bond`), as dracut's parse-bond.sh: one to four
/// fields; a name alone means slaves `eth0,eth1`; the mode defaults to `balance-rr`.
pub fn parse_bond(v: Option<&str>) -> Result<BondSpec, Cow<'static, str>> {
    let v = match v {
        None | Some("") => return Ok(dracut_default()),
        Some(v) => v,
    };
    let fields: Vec<&str> = v.split(':').collect();
    if fields.len() > 4 {
        return Err(EXPECTED.into());
    }
    let name = fields[0];
    if !valid_ifname(name) {
        return Err(EXPECTED.into());
    }
    let slaves = match fields.get(1) {
        None => dracut_default().slaves,
        Some(list) => slave_names(list).ok_or(EXPECTED)?,
    };
    let (mode, options) = match fields.get(2) {
        None => (None, Vec::new()),
        Some(o) => parse_options(o).map_err(|e| format!("{EXPECTED}: {e}"))?,
    };
    let mtu = match fields.get(3) {
        None | Some(&"") => None,
        Some(m) => Some(
            m.parse()
                .ok()
                .filter(|m| valid_mtu(*m))
                .ok_or_else(|| format!("{EXPECTED}: an MTU of 68 to 65535, not {m:?}"))?,
        ),
    };
    Ok(BondSpec {
        name: name.to_string(),
        slaves,
        mode: mode.unwrap_or(Mode::BALANCE_RR),
        options,
        mtu,
    })
}

/// What `bondslaves=` must look like, for messages.
pub const BONDSLAVES_EXPECTED: &str = "<slave>,<slave>…: interface names of 1 to 15 \
     characters without '/', ':', '%' or spaces";

/// Terra OS's `bondslaves=a,b`: `bond0` over those links in 802.3ad (LACP) mode.
pub fn parse_bondslaves(v: &str) -> Result<BondSpec, &'static str> {
    Ok(BondSpec {
        name: "bond0".into(),
        slaves: slave_names(v).ok_or(BONDSLAVES_EXPECTED)?,
        mode: Mode::IEEE_8023AD,
        options: Vec::new(),
        mtu: None,
    })
}

/// A `[[network.bonds]]` entry; `at` names it in errors (`network.bonds[0]`).
pub fn from_section(at: &str, s: &BondSection) -> Result<BondSpec, String> {
    if !valid_ifname(&s.name) {
        return Err(format!(
            "{at}.name = {:?}: expected {IFNAME_EXPECTED}",
            s.name
        ));
    }
    if s.slaves.is_empty() {
        return Err(format!("{at}.slaves: expected at least one member"));
    }
    let mut slaves = Vec::new();
    for sl in &s.slaves {
        slaves.push(match parse_mac(sl) {
            Some(m) => Selector::Mac(m),
            None if valid_ifname(sl) => Selector::Name(sl.clone()),
            None => {
                return Err(format!(
                    "{at}.slaves: {sl:?}: expected a MAC or {IFNAME_EXPECTED}"
                ))
            }
        });
    }
    let (opt_mode, options) = match &s.options {
        None => (None, Vec::new()),
        Some(o) => parse_options(o).map_err(|e| format!("{at}.options: expected {e}"))?,
    };
    let mode = match (&s.mode, opt_mode) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{at}: mode is given both as mode and in options; keep one"
            ))
        }
        (Some(m), None) => Mode::parse(m).ok_or_else(|| {
            let names: Vec<&str> = MODES.iter().map(|(n, _)| *n).collect();
            format!("{at}.mode = {m:?}: expected one of {}", names.join(", "))
        })?,
        (None, m) => m.unwrap_or(Mode::BALANCE_RR),
    };
    if let Some(m) = s.mtu.filter(|m| !valid_mtu(*m)) {
        return Err(format!("{at}.mtu = {m}: expected 68 to 65535"));
    }
    Ok(BondSpec {
        name: s.name.clone(),
        slaves,
        mode,
        options,
        mtu: s.mtu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(b: &BondSpec) -> Vec<String> {
        b.slaves.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dracut_forms() {
        assert_eq!(parse_bond(None), Ok(dracut_default()));
        assert_eq!(parse_bond(Some("")), Ok(dracut_default()));
        let b = parse_bond(Some("bond1")).unwrap();
        assert_eq!(
            (b.name.as_str(), names(&b)),
            ("bond1", vec!["eth0".into(), "eth1".into()])
        );
        let b = parse_bond(Some("bond0:eno1,eno2")).unwrap();
        assert_eq!(names(&b), ["eno1", "eno2"]);
        assert_eq!(b.mode, Mode::BALANCE_RR);
        let b = parse_bond(Some(
            "bond0:eno1,eno2:mode=802.3ad,miimon=100,xmit_hash_policy=layer3+4,lacp_rate=fast:9000",
        ))
        .unwrap();
        assert_eq!(b.mode, Mode::IEEE_8023AD);
        assert_eq!(b.mtu, Some(9000));
        assert_eq!(
            b.describe_options(),
            ["miimon=100", "xmit_hash_policy=layer3+4", "lacp_rate=fast"]
        );
        // Numbers for words, arp targets with ';', a primary member.
        let b = parse_bond(Some(
            "bond0:eth0,eth1:mode=1,primary=eth1,arp_interval=200,arp_ip_target=10.0.0.1;10.0.0.2",
        ))
        .unwrap();
        assert_eq!(b.mode, Mode::ACTIVE_BACKUP);
        assert_eq!(b.mode.name(), "active-backup");
        assert_eq!(
            b.describe_options(),
            [
                "primary=eth1",
                "arp_interval=200",
                "arp_ip_target=10.0.0.1;10.0.0.2"
            ]
        );
        // The mtu alone, options empty.
        assert_eq!(
            parse_bond(Some("bond0:eth0::1500")).unwrap().mtu,
            Some(1500)
        );
    }

    #[test]
    fn terra_bondslaves() {
        let b = parse_bondslaves("eth0,eth1").unwrap();
        assert_eq!(b.name, "bond0");
        assert_eq!(b.mode, Mode::IEEE_8023AD);
        assert_eq!(names(&b), ["eth0", "eth1"]);
        for bad in ["", ",", "eth0,a/b", "eth0:eth1"] {
            assert!(parse_bondslaves(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_say_which_part() {
        for (v, needle) in [
            ("bond0:eth0:mode=802.3ad:9000:x", "<name>"),
            ("bo/nd:eth0", "<name>"),
            ("bond0:", "<name>"),
            ("bond0:eth0,a:b", "<name>"),
            ("bond0:eth0:lacp=fast", "\"lacp\" is not one"),
            ("bond0:eth0:miimon", "\"miimon\" has no value"),
            ("bond0:eth0:miimon=soon", "miimon=<0 to 4294967295>"),
            ("bond0:eth0:mode=lacp", "mode=<balance-rr|active-backup"),
            ("bond0:eth0:num_grat_arp=300", "num_grat_arp=<0 to 255>"),
            ("bond0:eth0:arp_ip_target=10.0.0.1;x", "arp_ip_target="),
            ("bond0:eth0:primary=a/b", "primary="),
            ("bond0:eth0::12", "MTU of 68 to 65535"),
        ] {
            let e = parse_bond(Some(v)).unwrap_err();
            assert!(e.contains(needle), "{v}: {e}");
        }
        let seventeen = vec!["10.0.0.1"; 17].join(";");
        assert!(parse_bond(Some(&format!("b:e:arp_ip_target={seventeen}"))).is_err());
    }

    #[test]
    fn options_on_the_wire() {
        let b = parse_bond(Some(
            "bond0:eth0,eth1:mode=active-backup,miimon=100,primary=eth1,lacp_rate=fast,\
             ad_actor_sys_prio=300,arp_validate=all,arp_ip_target=10.0.0.1;192.168.1.2",
        ))
        .unwrap();
        let index = |n: &str| (n == "eth1").then_some(7);
        let data = b.info_data(&index).unwrap();
        assert_eq!(
            data,
            vec![
                (1, vec![1]),
                (3, 100u32.to_ne_bytes().to_vec()),
                (11, 7u32.to_ne_bytes().to_vec()),
                (21, vec![1]),
                (24, 300u16.to_ne_bytes().to_vec()),
                (9, 3u32.to_ne_bytes().to_vec()),
                (
                    8 | NLA_F_NESTED,
                    [
                        &8u16.to_ne_bytes()[..],
                        &0u16.to_ne_bytes(),
                        &[10, 0, 0, 1],
                        &8u16.to_ne_bytes(),
                        &1u16.to_ne_bytes(),
                        &[192, 168, 1, 2],
                    ]
                    .concat()
                ),
            ]
        );
        // A primary that is not a member cannot be sent.
        assert_eq!(b.info_data(&|_| None), None);
        // A later value replaces an earlier one.
        let (_, o) = parse_options("miimon=100,miimon=200").unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].to_string(), "miimon=200");
    }

    #[test]
    fn sections() {
        let s = BondSection {
            name: "bond0".into(),
            slaves: vec!["eth0".into(), "52:54:00:00:00:02".into()],
            mode: Some("802.3ad".into()),
            options: Some("miimon=100 lacp_rate=fast".into()),
            mtu: Some(9000),
        };
        let b = from_section("network.bonds[0]", &s).unwrap();
        assert_eq!(b.mode, Mode::IEEE_8023AD);
        assert_eq!(b.slaves[1], Selector::Mac([0x52, 0x54, 0, 0, 0, 2]));
        assert_eq!(b.options.len(), 2);
        let no_mode = BondSection {
            mode: None,
            options: None,
            ..s.clone()
        };
        assert_eq!(from_section("x", &no_mode).unwrap().mode, Mode::BALANCE_RR);
        for (bad, needle) in [
            (
                BondSection {
                    name: "".into(),
                    ..s.clone()
                },
                "network.bonds[0].name",
            ),
            (
                BondSection {
                    slaves: vec![],
                    ..s.clone()
                },
                "network.bonds[0].slaves",
            ),
            (
                BondSection {
                    slaves: vec!["a b".into()],
                    ..s.clone()
                },
                "network.bonds[0].slaves",
            ),
            (
                BondSection {
                    mode: Some("lacp".into()),
                    ..s.clone()
                },
                "network.bonds[0].mode = \"lacp\"",
            ),
            (
                BondSection {
                    options: Some("mode=1".into()),
                    ..s.clone()
                },
                "both",
            ),
            (
                BondSection {
                    options: Some("foo=1".into()),
                    ..s.clone()
                },
                "network.bonds[0].options",
            ),
            (
                BondSection {
                    mtu: Some(70000),
                    ..s.clone()
                },
                "network.bonds[0].mtu",
            ),
        ] {
            let e = from_section("network.bonds[0]", &bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(v in "[0-9a-z.:,;=/+_ -]{0,80}") {
            if let Ok(b) = parse_bond(Some(&v)) {
                prop_assert!(valid_ifname(&b.name));
                // Everything that parses can be sent (members resolved).
                prop_assert!(b.info_data(&|_| Some(1)).is_some());
            }
        }

        #[test]
        fn options_print_back_to_themselves(v in "(miimon=[0-9]{1,4}|lacp_rate=(slow|fast|0|1)|xmit_hash_policy=layer[23]\\+[34]|arp_validate=[0-6]),{0,1}") {
            if let Ok((_, o)) = parse_options(&v) {
                let text: Vec<String> = o.iter().map(|o| o.to_string()).collect();
                prop_assert_eq!(parse_options(&text.join(",")).map(|(_, o)| o), Ok(o));
            }
        }
    }
}
