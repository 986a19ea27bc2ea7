//! The links the network phase makes before it configures any: stable names first
//! (`ifname=`, so bonds and VLANs can name NICs by them), then bonds, then VLANs (which may
//! sit on a bond). Each step waits (bounded) for the links it needs, asks over netlink, and
//! reads the result back. Every step can run again: a rename to the name a link already has
//! does nothing, and a bond or VLAN that exists with that name and kind is updated.
//!
//! Which links the interfaces then go to ([`Built::eligible`]): bond members and VLAN
//! parents are taken; "any link" means the links made at the top of each stack (the
//! VLANs, and the bonds no VLAN sits on), since whoever asks for a bond or a VLAN at boot
//! means to use it; a MAC names the link on top of that NIC, never a member.

use std::time::{Duration, Instant};

use super::bond::BondSpec;
use super::ifname::Rename;
use super::netlink::{Link, Netlink, Virtual};
use super::types::Selector;
use super::vlan::VlanSpec;
use super::NetworkError;
use crate::report::network::{LinkKind, MadeLink, Member};

/// What to make, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPlan {
    /// `ifname=`.
    pub renames: Vec<Rename>,
    /// `bond=`, `bondslaves=`, `[[network.bonds]]`.
    pub bonds: Vec<BondSpec>,
    /// `vlan=`, `[[network.vlans]]`.
    pub vlans: Vec<VlanSpec>,
}

/// A module to load before the links are made, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// Module name.
    pub name: &'static str,
    /// Parameters for `finit_module`.
    pub params: &'static str,
}

impl LinkPlan {
    /// Nothing to make.
    pub fn is_empty(&self) -> bool {
        self.renames.is_empty() && self.bonds.is_empty() && self.vlans.is_empty()
    }

    /// Whether bonds or VLANs are made (links the interfaces may go to).
    pub fn makes_links(&self) -> bool {
        !self.bonds.is_empty() || !self.vlans.is_empty()
    }

    /// The drivers the plan needs: no device asks for them, so the boot loads them.
    /// `bonding` with `max_bonds=0`: by default it makes a `bond0` of its own on load, which
    /// would linger beside the bonds asked for.
    pub fn modules(&self) -> Vec<Module> {
        let mut m = Vec::new();
        if !self.bonds.is_empty() {
            m.push(Module {
                name: "bonding",
                params: "max_bonds=0",
            });
        }
        if !self.vlans.is_empty() {
            m.push(Module {
                name: "8021q",
                params: "",
            });
        }
        m
    }

    /// The names this plan gives to links.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.renames
            .iter()
            .map(|r| r.name.as_str())
            .chain(self.bonds.iter().map(|b| b.name.as_str()))
            .chain(self.vlans.iter().map(|v| v.name.as_str()))
    }

    /// A bond that takes `name` as a member, if any.
    pub fn bond_of(&self, name: &str) -> Option<&BondSpec> {
        self.bonds
            .iter()
            .find(|b| b.slaves.contains(&Selector::Name(name.to_string())))
    }

    /// What is wrong with the plan as a whole, naming the link: a name given twice, a
    /// member in two bonds or in a bond of its own, a bond's `primary` that is not its
    /// member, a VLAN on a bond member.
    pub fn check(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for n in self.names() {
            if seen.contains(&n) {
                return Err(format!("{n} is given to two links"));
            }
            seen.push(n);
        }
        let mut macs: Vec<[u8; 6]> = Vec::new();
        for r in &self.renames {
            if macs.contains(&r.mac) {
                return Err(format!(
                    "{} is renamed twice",
                    super::types::format_mac(&r.mac)
                ));
            }
            macs.push(r.mac);
        }
        let mut members: Vec<(&Selector, &str)> = Vec::new();
        for b in &self.bonds {
            for s in &b.slaves {
                if let Some((_, other)) = members.iter().find(|(m, _)| *m == s) {
                    return Err(format!("{s} is a member of both {other} and {}", b.name));
                }
                if self
                    .bonds
                    .iter()
                    .any(|o| *s == Selector::Name(o.name.clone()))
                {
                    return Err(format!("{}: a bond cannot be a member of a bond", b.name));
                }
                members.push((s, &b.name));
            }
            for p in b.options.iter().filter_map(|o| o.slave()) {
                let named = b.slaves.iter().any(|s| *s == Selector::Name(p.to_string()));
                let by_mac = b.slaves.iter().any(|s| matches!(s, Selector::Mac(_)));
                if !named && !by_mac {
                    return Err(format!("{}: primary={p} is not one of its members", b.name));
                }
            }
        }
        for v in &self.vlans {
            if let Some((_, bond)) = members.iter().find(|(m, _)| **m == v.parent) {
                return Err(format!(
                    "{}: its parent {} is a member of {bond}; put the VLAN on {bond}",
                    v.name, v.parent
                ));
            }
        }
        Ok(())
    }
}

/// What [`build`] made: the links for the reports, and which links are taken.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// Links made or renamed, in order.
    pub links: Vec<MadeLink>,
    /// Indexes of bond members and VLAN parents.
    taken: Vec<u32>,
    /// Indexes of the links made at the top of each stack.
    tops: Vec<u32>,
}

impl Built {
    /// Whether an interface entry with this selector may go to `l` (see the module doc).
    pub fn eligible(&self, sel: &Selector, l: &Link) -> bool {
        match sel {
            Selector::Any if !self.tops.is_empty() => self.tops.contains(&l.index),
            Selector::Any | Selector::Mac(_) => {
                !self.taken.contains(&l.index) && l.master.is_none()
            }
            Selector::Name(_) => true,
        }
    }

    /// The description of a link made or renamed, by name.
    pub fn made(&self, name: &str) -> Option<&MadeLink> {
        self.links.iter().find(|m| m.name == name)
    }
}

/// Whether `l` is what `sel` names, as a link to build on: by name, or by MAC among the
/// links that are not bonds or VLANs (those share their first member's or parent's MAC).
fn names(sel: &Selector, l: &Link) -> bool {
    match sel {
        Selector::Name(n) => &l.name == n,
        Selector::Mac(m) => l.mac == m[..] && !matches!(l.kind.as_deref(), Some("bond" | "vlan")),
        Selector::Any => false,
    }
}

/// Waits (bounded, device events handled) for the link `sel` names; `role` says why, for
/// the error.
fn wait_for(
    nl: &mut Netlink,
    pump: &mut dyn FnMut(Duration),
    deadline: Instant,
    sel: &Selector,
    role: &str,
) -> Result<Link, NetworkError> {
    loop {
        let links = nl.links()?;
        if let Some(l) = links.iter().find(|l| names(sel, l)) {
            return Ok(l.clone());
        }
        if Instant::now() >= deadline {
            return Err(NetworkError::NoLink {
                wanted: format!("{sel} ({role})"),
                seen: links
                    .iter()
                    .map(|l| format!("{} ({})", l.name, l.mac_string()))
                    .collect(),
            });
        }
        pump(Duration::from_millis(50));
    }
}

fn problem(link: &str, problem: String) -> NetworkError {
    NetworkError::Link {
        link: link.to_string(),
        problem,
    }
}

/// Reads a made link back by name: it must exist with the kind asked for.
fn read_back(nl: &mut Netlink, name: &str, kind: &str) -> Result<Link, NetworkError> {
    match nl.link_named(name)? {
        Some(l) if l.kind.as_deref() == Some(kind) => Ok(l),
        Some(l) => Err(problem(
            name,
            format!(
                "a link of that name exists as {}, not a {kind}",
                l.kind.as_deref().unwrap_or("a NIC")
            ),
        )),
        None => Err(problem(
            name,
            format!("the {kind} is not there after being made"),
        )),
    }
}

/// Makes the plan's links (see the module doc). Called with the phase's deadline: links
/// that do not appear in time end the phase like a missing NIC.
pub fn build(
    plan: &LinkPlan,
    nl: &mut Netlink,
    pump: &mut dyn FnMut(Duration),
    deadline: Instant,
) -> Result<Built, NetworkError> {
    let mut built = Built::default();
    for r in &plan.renames {
        rename(nl, r, pump, deadline, &mut built)?;
    }
    for b in &plan.bonds {
        bond(nl, b, pump, deadline, &mut built)?;
    }
    for v in &plan.vlans {
        vlan(nl, v, pump, deadline, &mut built)?;
    }
    let taken = built.taken.clone();
    built.tops.retain(|t| !taken.contains(t));
    Ok(built)
}

fn rename(
    nl: &mut Netlink,
    r: &Rename,
    pump: &mut dyn FnMut(Duration),
    deadline: Instant,
    built: &mut Built,
) -> Result<(), NetworkError> {
    let link = wait_for(nl, pump, deadline, &Selector::Mac(r.mac), "to be renamed")?;
    if link.name == r.name {
        return Ok(());
    }
    if let Some(holder) = nl.link_named(&r.name)? {
        // The kernel would say EEXIST; say which link holds the name. dracut's advice
        // stands: stable names outside the kernel's ethN avoid this.
        return Err(problem(
            &r.name,
            format!(
                "cannot rename {} ({}): {} ({}) has that name; choose a name outside the \
                 kernel's own (ethN)",
                link.name,
                link.mac_string(),
                holder.name,
                holder.mac_string()
            ),
        ));
    }
    // A link is renamed only while down; stage0 has not brought NICs up yet.
    if link.up {
        nl.set_down(&link)?;
    }
    nl.rename(&link, &r.name)?;
    let now = nl.link(link.index)?;
    if now.name != r.name {
        return Err(NetworkError::Verify {
            ifname: link.name,
            missing: format!("the name {}", r.name),
        });
    }
    log::info!(
        "{}: renamed from {} ({})",
        r.name,
        link.name,
        link.mac_string()
    );
    built.links.push(MadeLink {
        name: r.name.clone(),
        mac: now.mac_string(),
        mtu: None,
        kind: LinkKind::Renamed { from: link.name },
    });
    Ok(())
}

fn bond(
    nl: &mut Netlink,
    spec: &BondSpec,
    pump: &mut dyn FnMut(Duration),
    deadline: Instant,
    built: &mut Built,
) -> Result<(), NetworkError> {
    // The members first: a bond over links that never come would fail later, and more
    // obscurely (no carrier).
    let role = format!("member of {}", spec.name);
    let mut members = Vec::new();
    for s in &spec.slaves {
        members.push(wait_for(nl, pump, deadline, s, &role)?);
    }
    let index_of = |n: &str| members.iter().find(|m| m.name == n).map(|m| m.index);
    let data = spec.info_data(&index_of).ok_or_else(|| {
        problem(
            &spec.name,
            "its primary option names a link that is not one of its members".into(),
        )
    })?;
    nl.create_or_update(&spec.name, Virtual::Bond, data)?;
    let bond = read_back(nl, &spec.name, "bond")?;
    for m in &members {
        if m.master == Some(bond.index) {
            continue;
        }
        // The bonding driver refuses to enslave a link that is up.
        if m.up {
            nl.set_down(m)?;
        }
        nl.set_master(m, &bond)?;
    }
    nl.set_up(&bond, spec.mtu)?;
    for m in &members {
        if nl.link(m.index)?.master != Some(bond.index) {
            return Err(NetworkError::Verify {
                ifname: m.name.clone(),
                missing: format!("membership of {}", spec.name),
            });
        }
    }
    let bond = nl.link(bond.index)?;
    if bond.kind_value != Some(u16::from(spec.mode.number())) {
        return Err(NetworkError::Verify {
            ifname: spec.name.clone(),
            missing: format!("mode {}", spec.mode.name()),
        });
    }
    log::info!(
        "{}: bond ({}) over {}",
        spec.name,
        spec.mode.name(),
        members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    built.taken.extend(members.iter().map(|m| m.index));
    built.tops.push(bond.index);
    built.links.push(MadeLink {
        name: spec.name.clone(),
        mac: bond.mac_string(),
        mtu: spec.mtu,
        kind: LinkKind::Bond {
            mode: spec.mode.name(),
            options: spec.describe_options(),
            slaves: members
                .iter()
                .map(|m| Member {
                    name: m.name.clone(),
                    mac: m.mac_string(),
                })
                .collect(),
        },
    });
    Ok(())
}

fn vlan(
    nl: &mut Netlink,
    spec: &VlanSpec,
    pump: &mut dyn FnMut(Duration),
    deadline: Instant,
    built: &mut Built,
) -> Result<(), NetworkError> {
    let parent = wait_for(
        nl,
        pump,
        deadline,
        &spec.parent,
        &format!("parent of {}", spec.name),
    )?;
    nl.create_or_update(
        &spec.name,
        Virtual::Vlan {
            parent: parent.index,
        },
        spec.info_data(),
    )?;
    let link = read_back(nl, &spec.name, "vlan")?;
    // An existing VLAN keeps its parent and ID whatever was asked: say so rather than use
    // the wrong one.
    if link.parent != Some(parent.index) || link.kind_value != Some(spec.id) {
        return Err(problem(
            &spec.name,
            format!(
                "exists with another parent or ID than {} and {}",
                parent.name, spec.id
            ),
        ));
    }
    // A VLAN carries nothing while its parent is down.
    if !parent.up {
        nl.set_up(&parent, None)?;
    }
    nl.set_up(&link, spec.mtu)?;
    log::info!("{}: VLAN {} on {}", spec.name, spec.id, parent.name);
    built.taken.push(parent.index);
    built.tops.push(link.index);
    built.links.push(MadeLink {
        name: spec.name.clone(),
        mac: link.mac_string(),
        mtu: spec.mtu,
        kind: LinkKind::Vlan {
            id: spec.id,
            parent: parent.name,
        },
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{bond, ifname, vlan};

    fn link(index: u32, name: &str, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: vec![0x52, 0x54, 0, 0, 0, index as u8],
            up: false,
            carrier: false,
            running: false,
            loopback: false,
            ether: true,
            mtu: None,
            master,
            parent: None,
            kind: None,
            kind_value: None,
        }
    }

    #[test]
    fn the_top_of_each_stack_is_any_link() {
        // eth0, eth1 in bond0; vlan5 on bond0; eth2 alone.
        let built = Built {
            links: vec![],
            taken: vec![2, 3, 5],
            tops: vec![6],
        };
        let [eth0, eth1, eth2, bond0, vlan5] = [
            link(2, "eth0", Some(5)),
            link(3, "eth1", Some(5)),
            link(4, "eth2", None),
            link(5, "bond0", None),
            link(6, "vlan5", None),
        ];
        let any: Vec<&str> = [&eth0, &eth1, &eth2, &bond0, &vlan5]
            .iter()
            .filter(|l| built.eligible(&Selector::Any, l))
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(any, ["vlan5"]);
        // A MAC never names a member or a parent; a name names what it names.
        assert!(!built.eligible(&Selector::Mac([0; 6]), &eth0));
        assert!(!built.eligible(&Selector::Mac([0; 6]), &bond0));
        assert!(built.eligible(&Selector::Mac([0; 6]), &vlan5));
        assert!(built.eligible(&Selector::Name("bond0".into()), &bond0));
        // Nothing made: any Ethernet link, as before.
        let none = Built::default();
        assert!(none.eligible(&Selector::Any, &eth2));
        assert!(
            !none.eligible(&Selector::Any, &eth0),
            "enslaved by someone else"
        );
    }

    #[test]
    fn a_mac_names_the_nic_not_what_shares_its_mac() {
        let mac = Selector::Mac([0x52, 0x54, 0, 0, 0, 2]);
        let nic = link(2, "eth0", None);
        let veth = Link {
            kind: Some("veth".into()),
            ..nic.clone()
        };
        let bond = Link {
            kind: Some("bond".into()),
            ..link(2, "bond0", None)
        };
        let vlan = Link {
            kind: Some("vlan".into()),
            ..link(2, "vlan5", None)
        };
        assert!(names(&mac, &nic) && names(&mac, &veth));
        assert!(!names(&mac, &bond) && !names(&mac, &vlan));
        assert!(names(&Selector::Name("bond0".into()), &bond));
        assert!(!names(&Selector::Any, &nic));
    }

    #[test]
    fn plans_that_cannot_be_made_are_named() {
        let b = |v: &str| bond::parse_bond(Some(v)).unwrap();
        let plan = |bonds: Vec<BondSpec>, vlans: Vec<VlanSpec>, renames: Vec<Rename>| LinkPlan {
            renames,
            bonds,
            vlans,
        };
        let ok = plan(
            vec![b("bond0:lan0,lan1:mode=active-backup,primary=lan1")],
            vec![vlan::parse_vlan("bond0.5:bond0").unwrap()],
            vec![ifname::parse_ifname("lan0:52:54:00:00:00:01").unwrap()],
        );
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(
            ok.modules(),
            [
                Module {
                    name: "bonding",
                    params: "max_bonds=0"
                },
                Module {
                    name: "8021q",
                    params: ""
                }
            ]
        );
        assert!(ok.makes_links());
        assert_eq!(ok.bond_of("lan1").map(|b| b.name.as_str()), Some("bond0"));
        for (bad, needle) in [
            (
                plan(vec![b("bond0:eth0"), b("bond0:eth1")], vec![], vec![]),
                "bond0 is given to two links",
            ),
            (
                plan(vec![b("bond0:eth0"), b("bond1:eth0,eth1")], vec![], vec![]),
                "eth0 is a member of both bond0 and bond1",
            ),
            (
                plan(vec![b("bond0:eth0"), b("bond1:bond0")], vec![], vec![]),
                "a bond cannot be a member",
            ),
            (
                plan(vec![b("bond0:eth0:primary=eth1")], vec![], vec![]),
                "primary=eth1 is not one of its members",
            ),
            (
                plan(
                    vec![b("bond0:eth0,eth1")],
                    vec![vlan::parse_vlan("vlan5:eth1").unwrap()],
                    vec![],
                ),
                "vlan5: its parent eth1 is a member of bond0",
            ),
            (
                plan(
                    vec![],
                    vec![vlan::parse_vlan("lan0.5:lan0").unwrap()],
                    vec![
                        ifname::parse_ifname("lan0:52:54:00:00:00:01").unwrap(),
                        ifname::parse_ifname("lan0:52:54:00:00:00:02").unwrap(),
                    ],
                ),
                "lan0 is given to two links",
            ),
            (
                plan(
                    vec![],
                    vec![],
                    vec![
                        ifname::parse_ifname("lan0:52:54:00:00:00:01").unwrap(),
                        ifname::parse_ifname("lan1:52:54:00:00:00:01").unwrap(),
                    ],
                ),
                "52:54:00:00:00:01 is renamed twice",
            ),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
