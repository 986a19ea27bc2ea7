//! Where iSCSI targets come from: node.toml's `[iscsi]` table, Terra's `ISCSI_*` kernel
//! command line keys, dracut's `netroot=iscsi:…` (RFC 4173) and `rd.iscsi.initiator=`, a
//! DHCP root path in the same syntax, and the firmware's iBFT (`rd.iscsi.firmware`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::chap::{Chap, ChapAlgorithm, Credentials, Secret};
use crate::cmdline;
use crate::config::iscsi::{redact_netroot, IscsiSection};
use crate::config::ConfigError;
use crate::network::ipconfig::{IfaceConfig, Method, StaticAddr};
use crate::network::types::{parse_mac, Selector};

/// The default iSCSI port (RFC 7143 §13.8 / IANA).
pub const DEFAULT_PORT: u16 = 3260;
/// The initiator name when nothing names one.
pub const DEFAULT_INITIATOR: &str = "iqn.2025-01.org.terra-os:stage0";
/// Default bound on connecting, logging in and waiting for a LUN's disk.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A portal: host (an IP literal or a name) and TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// Address or host name, IPv6 without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Portal {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
    pub fn parse(s: &str) -> Option<Portal> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            let port = match after {
                "" => DEFAULT_PORT,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (h.to_string(), port)
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (s.to_string(), DEFAULT_PORT)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (s.to_string(), DEFAULT_PORT),
            }
        };
        let valid_host = !host.is_empty()
            && (host.parse::<IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        (valid_host && port != 0).then_some(Portal { host, port })
    }

    /// Parses a TargetAddress value, `address[:port][,portal-group-tag]` (RFC 7143 §13.8).
    pub fn parse_target_address(s: &str) -> Option<Portal> {
        let addr = s.rsplit_once(',').map_or(s, |(a, _)| a);
        Portal::parse(addr)
    }
}

/// Which source named a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// node.toml `[iscsi]`.
    NodeConfig,
    /// `ISCSI_TARGET_NAME=` / `ISCSI_TARGET_IP=`.
    TerraKeys,
    /// `netroot=iscsi:…`.
    Netroot,
    /// DHCP option 17, root path.
    DhcpRootPath,
    /// iBFT.
    Firmware,
}

impl Source {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::NodeConfig => "node.toml",
            Source::TerraKeys => "ISCSI_TARGET_*",
            Source::Netroot => "netroot=",
            Source::DhcpRootPath => "DHCP root-path",
            Source::Firmware => "iBFT",
        }
    }
}

/// One target to log in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where.
    pub portal: Portal,
    /// The target's iSCSI name.
    pub iqn: String,
    /// The LUN whose disk we wait for; None: every LUN, at least one disk.
    pub lun: Option<u64>,
    /// CHAP, if any.
    pub chap: Option<Chap>,
    /// Who named it.
    pub source: Source,
}

/// Everything the iscsi phase does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Our iSCSI name.
    pub initiator: String,
    /// Targets, in order.
    pub targets: Vec<Target>,
    /// Per-target bound.
    pub timeout: Duration,
    /// `netroot=dhcp`: the target comes from the DHCP lease's root path, which the
    /// network phase knows (see [`parse_netroot`]).
    pub from_dhcp: bool,
    /// `rd.iscsi.firmware`: targets (and the network) come from the iBFT, which the kernel
    /// shows only once `iscsi_ibft` is loaded (see [`Plan::add_firmware`]).
    pub firmware: bool,
    /// The initiator name was given on the command line (it then beats the iBFT's).
    pub initiator_given: bool,
}

/// A parsed `iscsi:` root path (RFC 4173 §5, with dracut's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netroot {
    /// CHAP name and secret (dracut: `user:pass@`).
    pub chap: Option<(String, Secret)>,
    /// Mutual CHAP (dracut: `user:pass:ruser:rpass@`).
    pub mutual: Option<(String, Secret)>,
    /// Server and port.
    pub portal: Portal,
    /// LUN (Linux numbering); None when the field is empty.
    pub lun: Option<u64>,
    /// dracut's iface name field, ignored by stage0.
    pub iface: Option<String>,
    /// dracut's network device field: the interface the portal is reached by.
    pub netdev: Option<String>,
    /// Target name.
    pub iqn: String,
}

/// Parses `iscsi:[user:pass[:ruser:rpass]@]server:[proto]:[port]:[[iface:]netdev:]lun:iqn`.
/// The server may be an IPv6 address in brackets; the target name may contain colons;
/// the LUN is hexadecimal as RFC 4173 says (`1`, `1f`, or a full 8-byte SAM LUN such as
/// `0001-0000-0000-0000`). Errors never repeat the credentials.
pub fn parse_netroot(v: &str) -> Result<Netroot, &'static str> {
    let v = v
        .strip_prefix("iscsi:")
        .ok_or("a value starting with iscsi:")?;
    // As dracut: credentials only when an '@' precedes at least four colons.
    let (auth, v) = match v.split_once('@') {
        Some((a, rest)) if rest.matches(':').count() >= 4 => (Some(a), rest),
        _ => (None, v),
    };
    let (mut chap, mut mutual) = (None, None);
    if let Some(a) = auth.filter(|a| !a.is_empty()) {
        let parts: Vec<&str> = a.split(':').collect();
        match parts.as_slice() {
            [u, p] => chap = Some((u.to_string(), Secret::new(*p))),
            [u, p, ru, rp] => {
                chap = Some((u.to_string(), Secret::new(*p)));
                mutual = Some((ru.to_string(), Secret::new(*rp)));
            }
            _ => return Err("credentials as user:password or user:password:ruser:rpassword"),
        }
    }
    let (server, rest) = if let Some(r) = v.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or("a closing ] after the IPv6 server")?;
        (h, after.strip_prefix(':').ok_or("':' after the server")?)
    } else {
        v.split_once(':').ok_or("server:protocol:port:lun:target")?
    };
    // The target name starts at the first ":iqn.", ":eui." or ":naa."; else it is
    // everything after the LUN field (RFC 4173: the last field, colons allowed).
    let named = ["iqn.", "eui.", "naa."]
        .iter()
        .filter_map(|p| {
            if rest.starts_with(p) {
                Some(0)
            } else {
                rest.find(&format!(":{p}")).map(|i| i + 1)
            }
        })
        .min();
    let (fields, iqn): (Vec<&str>, &str) = match named {
        Some(i) => {
            let head = rest[..i].strip_suffix(':').unwrap_or(&rest[..i]);
            (head.split(':').collect(), &rest[i..])
        }
        None => {
            let mut it = rest.splitn(4, ':');
            let f: Vec<&str> = it.by_ref().take(3).collect();
            (f, it.next().unwrap_or(""))
        }
    };
    if iqn.is_empty() {
        return Err("a target name as the last field");
    }
    let (port, iface, netdev, lun) = match fields.as_slice() {
        [_proto, port, lun] => (*port, None, None, *lun),
        [_proto, port, netdev, lun] => (*port, None, Some(*netdev), *lun),
        [_proto, port, iface, netdev, lun] => (*port, Some(*iface), Some(*netdev), *lun),
        [_proto, port] => (*port, None, None, ""),
        _ => return Err("server:protocol:port:lun:target"),
    };
    let port = match port {
        "" => DEFAULT_PORT,
        p => p.parse().ok().filter(|&p| p != 0).ok_or("a port number")?,
    };
    if server.is_empty() {
        return Err("a server address");
    }
    let portal = Portal::parse(&if server.contains(':') {
        format!("[{server}]:{port}")
    } else {
        format!("{server}:{port}")
    })
    .ok_or("a server address")?;
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    Ok(Netroot {
        chap,
        mutual,
        portal,
        lun: parse_rfc4173_lun(lun)?,
        iface: nonempty(iface),
        netdev: nonempty(netdev),
        iqn: iqn.to_string(),
    })
}

/// RFC 4173's LUN field: hexadecimal, empty for "not given". A value of more than four hex
/// digits (dashes allowed) is an 8-byte SAM LUN, converted to Linux's numbering.
fn parse_rfc4173_lun(s: &str) -> Result<Option<u64>, &'static str> {
    if s.is_empty() {
        return Ok(None);
    }
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    let bad = "a hexadecimal LUN";
    if hex.is_empty() || hex.len() > 16 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad);
    }
    if hex.len() <= 4 && !s.contains('-') {
        return u64::from_str_radix(&hex, 16).map(Some).map_err(|_| bad);
    }
    let padded = format!("{hex:0<16}");
    let wire = u64::from_str_radix(&padded, 16).map_err(|_| bad)?;
    Ok(Some(super::pdu::lun_from_wire(wire)))
}

/// The iSCSI Boot Firmware Table as the kernel shows it under /sys/firmware/ibft.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ibft {
    /// `initiator/initiator-name`.
    pub initiator: Option<String>,
    /// `ethernetN/`: how the firmware configured the NICs (for the network phase).
    pub nics: Vec<IbftNic>,
    /// `targetN/`.
    pub targets: Vec<IbftTarget>,
}

/// One `ethernetN` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IbftNic {
    /// `index`.
    pub index: u32,
    /// `mac`.
    pub mac: Option<String>,
    /// `ip-addr`.
    pub ip: Option<IpAddr>,
    /// `prefix-len`.
    pub prefix: Option<u8>,
    /// `gateway`.
    pub gateway: Option<IpAddr>,
    /// `primary-dns`, `secondary-dns`.
    pub dns: Vec<IpAddr>,
    /// `dhcp`: the firmware got its address by DHCP from this server.
    pub dhcp: Option<IpAddr>,
    /// `vlan`.
    pub vlan: Option<u16>,
    /// `hostname`.
    pub hostname: Option<String>,
}

/// One `targetN` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbftTarget {
    /// `index`.
    pub index: u32,
    /// `ip-addr` and `port`.
    pub portal: Portal,
    /// `target-name`.
    pub iqn: String,
    /// `lun`.
    pub lun: Option<u64>,
    /// `nic-assoc`: the index of the NIC that reaches it.
    pub nic: Option<u32>,
    /// `chap-name`/`chap-secret` and `rev-chap-name`/`rev-chap-secret`.
    pub chap: Option<Chap>,
}

impl Ibft {
    /// The network the firmware used to reach its targets, for the network phase
    /// (dracut's `ip=ibft`): each NIC a target is associated with (every NIC when none
    /// says), pinned by MAC, with the firmware's static IPv4 address or DHCP when the
    /// firmware got its address by DHCP (or has none). NICs without a MAC, or on a VLAN
    /// (stage0 makes no VLAN links), are skipped.
    pub fn interfaces(&self) -> Vec<IfaceConfig> {
        let used: Vec<u32> = self.targets.iter().filter_map(|t| t.nic).collect();
        self.nics
            .iter()
            .filter(|n| used.is_empty() || used.contains(&n.index))
            .filter(|n| match n.vlan {
                // stage0 makes no VLAN links: untagged DHCP there would only time out.
                Some(v) => {
                    log::warn!(
                        "network: iBFT NIC {} is on VLAN {v}; not supported",
                        n.index
                    );
                    false
                }
                None => true,
            })
            .filter_map(|n| {
                let mac = parse_mac(n.mac.as_deref()?)?;
                let v4 = |a: Option<IpAddr>| match a {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                };
                let method = match (v4(n.ip), n.prefix, n.dhcp) {
                    (Some(address), Some(prefix), None) if prefix <= 32 => {
                        Method::Static(StaticAddr {
                            address,
                            prefix,
                            gateway: v4(n.gateway),
                        })
                    }
                    (requested, _, _) => Method::Dhcp { requested },
                };
                Some(IfaceConfig {
                    selector: Selector::Mac(mac),
                    method,
                    mtu: None,
                })
            })
            .collect()
    }

    /// The firmware's IPv4 DNS servers.
    pub fn nameservers(&self) -> Vec<std::net::Ipv4Addr> {
        let mut out = Vec::new();
        for d in self.nics.iter().flat_map(|n| &n.dns) {
            if let IpAddr::V4(a) = d {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
    }
}

fn read_attr(dir: &Path, name: &str) -> Option<String> {
    let s = std::fs::read_to_string(dir.join(name)).ok()?;
    let s = s.trim_end_matches(['\n', '\0']).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// An iBFT address: `%pI4` or `%pI6` (eight groups of four hex digits); all zeros means
/// "not set".
fn ibft_ip(s: Option<String>) -> Option<IpAddr> {
    let ip: IpAddr = s?.parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}

/// The kernel prints an iBFT LUN as its eight bytes in `%x` without padding
/// (drivers/firmware/iscsi_ibft.c), so `00 01 00…` reads "01000000". Single-level LUNs
/// (the only kind firmware boots from in practice) decode unambiguously: the last six
/// bytes are zeros, the first is 0 (peripheral) or 0x40–0x7f (flat space).
pub fn parse_ibft_lun(s: &str) -> Option<u64> {
    let head = s.trim().strip_suffix("000000")?;
    if !head.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match head.len() {
        2 | 3 if head.starts_with('0') => u64::from_str_radix(&head[1..], 16).ok(),
        4 => {
            let b0 = u8::from_str_radix(&head[..2], 16).ok()?;
            let b1 = u8::from_str_radix(&head[2..], 16).ok()?;
            (b0 & 0xc0 == 0x40).then_some((u64::from(b0) << 8) | u64::from(b1))
        }
        _ => None,
    }
}

/// Reads the iBFT from `dir` (normally /sys/firmware/ibft); absent means empty.
pub fn read_ibft(dir: &Path) -> Ibft {
    let mut ibft = Ibft {
        initiator: read_attr(&dir.join("initiator"), "initiator-name"),
        ..Ibft::default()
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Bit 0 of `flags` marks a valid block (iBFT spec §3.x "Block Valid").
        let valid = read_attr(&path, "flags")
            .and_then(|f| parse_int(&f))
            .is_none_or(|f| f & 1 == 1);
        let index = read_attr(&path, "index")
            .and_then(|i| parse_int(&i))
            .unwrap_or(0) as u32;
        if name.starts_with("ethernet") && valid {
            let mut dns = Vec::new();
            dns.extend(ibft_ip(read_attr(&path, "primary-dns")));
            dns.extend(ibft_ip(read_attr(&path, "secondary-dns")));
            ibft.nics.push(IbftNic {
                index,
                mac: read_attr(&path, "mac"),
                ip: ibft_ip(read_attr(&path, "ip-addr")),
                prefix: read_attr(&path, "prefix-len").and_then(|p| p.parse().ok()),
                gateway: ibft_ip(read_attr(&path, "gateway")),
                dns,
                dhcp: ibft_ip(read_attr(&path, "dhcp")),
                vlan: read_attr(&path, "vlan")
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v != 0),
                hostname: read_attr(&path, "hostname"),
            });
        } else if name.starts_with("target") && valid {
            let (Some(ip), Some(iqn)) = (
                ibft_ip(read_attr(&path, "ip-addr")),
                read_attr(&path, "target-name"),
            ) else {
                log::warn!("iscsi: iBFT {name} has no address or target name; skipped");
                continue;
            };
            let port = read_attr(&path, "port")
                .and_then(|p| p.parse().ok())
                .filter(|&p| p != 0)
                .unwrap_or(DEFAULT_PORT);
            let creds = |n: &str, s: &str| -> Option<Credentials> {
                Some(Credentials {
                    user: read_attr(&path, n)?,
                    secret: Secret::new(read_attr(&path, s)?),
                })
            };
            let chap = creds("chap-name", "chap-secret").map(|initiator| Chap {
                initiator,
                mutual: creds("rev-chap-name", "rev-chap-secret"),
                algorithms: vec![ChapAlgorithm::Sha256, ChapAlgorithm::Md5],
            });
            ibft.targets.push(IbftTarget {
                index,
                portal: Portal {
                    host: ip.to_string(),
                    port,
                },
                iqn,
                lun: read_attr(&path, "lun").and_then(|l| parse_ibft_lun(&l)),
                nic: read_attr(&path, "nic-assoc").and_then(|n| n.parse().ok()),
                chap,
            });
        }
    }
    ibft
}

fn parse_int(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn chap_from(
    user: Option<&str>,
    secret: Option<&Secret>,
    mutual_user: Option<&str>,
    mutual_secret: Option<&Secret>,
) -> Option<Chap> {
    let initiator = Credentials {
        user: user?.to_string(),
        secret: secret?.clone(),
    };
    let mutual = match (mutual_user, mutual_secret) {
        (Some(u), Some(s)) => Some(Credentials {
            user: u.to_string(),
            secret: s.clone(),
        }),
        _ => None,
    };
    Some(Chap {
        initiator,
        mutual,
        algorithms: vec![ChapAlgorithm::Sha256, ChapAlgorithm::Md5],
    })
}

fn node_error(message: String) -> ConfigError {
    ConfigError::Node {
        path: PathBuf::from(crate::layout::NODE_CONFIG),
        message,
    }
}

fn key_error(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// node.toml's targets, checked.
fn configured_targets(node: &IscsiSection) -> Result<Vec<Target>, ConfigError> {
    let mut out = Vec::new();
    for (i, t) in node.targets.iter().enumerate() {
        let at = format!("iscsi.targets[{i}]");
        let portal = Portal::parse(&t.portal).ok_or_else(|| {
            node_error(format!(
                "{at}.portal = {:?}: expected host[:port], IPv6 in brackets",
                t.portal
            ))
        })?;
        if t.iqn.is_empty() {
            return Err(node_error(format!("{at}.iqn is empty")));
        }
        let pair = |u: &Option<String>, s: &Option<Secret>, what: &str| match (u, s) {
            (Some(_), None) | (None, Some(_)) => Err(node_error(format!(
                "{at}: {what}_user and {what}_secret go together"
            ))),
            _ => Ok(()),
        };
        pair(&t.chap_user, &t.chap_secret, "chap")?;
        pair(&t.mutual_user, &t.mutual_secret, "mutual")?;
        if t.mutual_user.is_some() && t.chap_user.is_none() {
            return Err(node_error(format!(
                "{at}: mutual CHAP needs chap_user and chap_secret too"
            )));
        }
        out.push(Target {
            portal,
            iqn: t.iqn.clone(),
            lun: t.lun,
            chap: chap_from(
                t.chap_user.as_deref(),
                t.chap_secret.as_ref(),
                t.mutual_user.as_deref(),
                t.mutual_secret.as_ref(),
            ),
            source: Source::NodeConfig,
        });
    }
    Ok(out)
}

/// The CHAP node.toml configures for `iqn`, so that a target named on the command line can
/// use credentials kept out of /proc/cmdline.
fn chap_for(node: &IscsiSection, iqn: &str) -> Option<Chap> {
    node.targets.iter().find(|t| t.iqn == iqn).and_then(|t| {
        chap_from(
            t.chap_user.as_deref(),
            t.chap_secret.as_ref(),
            t.mutual_user.as_deref(),
            t.mutual_secret.as_ref(),
        )
    })
}

/// Works out the targets from node.toml and the command line. None when there is nothing
/// to log in to. Targets named on the command line replace those of node.toml (as `root=`
/// replaces `[boot] root`); with `rd.iscsi.firmware` the iBFT's are added later by
/// [`Plan::add_firmware`]. The initiator name: the last of `rd.iscsi.initiator=` and
/// `ISCSI_INITIATOR=`, else the iBFT's, else node.toml's, else [`DEFAULT_INITIATOR`].
pub fn plan(node: &IscsiSection, cmdline: &str) -> Result<Option<Plan>, ConfigError> {
    let configured = configured_targets(node)?;
    let mut initiator: Option<String> = None;
    let mut cmdline_targets = Vec::new();
    let (mut terra_name, mut terra_ip) = (None, None);
    let mut firmware = false;
    let mut from_dhcp = false;
    for p in cmdline::split(cmdline) {
        let v = p.value.as_deref();
        match (p.key.as_str(), v) {
            ("rd.iscsi.initiator" | "ISCSI_INITIATOR", Some(s)) if !s.is_empty() => {
                initiator = Some(s.to_string())
            }
            ("rd.iscsi.initiator" | "ISCSI_INITIATOR", _) => {
                return Err(key_error(&p.key, v.unwrap_or(""), "an iSCSI name"))
            }
            ("ISCSI_TARGET_NAME", Some(s)) if !s.is_empty() => terra_name = Some(s.to_string()),
            ("ISCSI_TARGET_IP", Some(s)) => {
                terra_ip = Some(
                    Portal::parse(s)
                        .ok_or_else(|| key_error(&p.key, s, "an address, optionally with :port"))?,
                )
            }
            ("ISCSI_TARGET_NAME", _) => {
                return Err(key_error(&p.key, v.unwrap_or(""), "an iSCSI name"))
            }
            ("netroot", Some(s)) if s.starts_with("iscsi:") => {
                let n = parse_netroot(s)
                    .map_err(|expected| key_error(&p.key, &redact_netroot(s), expected))?;
                let chap = match n.chap {
                    Some((u, secret)) => {
                        let mut c = Chap::new(&u, secret);
                        c.mutual = n.mutual.map(|(user, secret)| Credentials { user, secret });
                        Some(c)
                    }
                    None => chap_for(node, &n.iqn),
                };
                cmdline_targets.push(Target {
                    portal: n.portal,
                    iqn: n.iqn,
                    lun: n.lun,
                    chap,
                    source: Source::Netroot,
                });
            }
            ("netroot", Some("dhcp" | "dhcp6")) => from_dhcp = true,
            ("rd.iscsi.firmware" | "rd.iscsi.ibft", None | Some("1")) => firmware = true,
            ("rd.iscsi.firmware" | "rd.iscsi.ibft", Some("0")) => firmware = false,
            ("rd.iscsi.firmware" | "rd.iscsi.ibft", Some(s)) => {
                return Err(key_error(&p.key, s, "no value, 0 or 1"))
            }
            _ => {}
        }
    }
    match (terra_name, terra_ip) {
        (Some(iqn), Some(portal)) => cmdline_targets.push(Target {
            portal,
            chap: chap_for(node, &iqn),
            lun: node
                .targets
                .iter()
                .find(|t| t.iqn == iqn)
                .and_then(|t| t.lun),
            iqn,
            source: Source::TerraKeys,
        }),
        (Some(_), None) => {
            return Err(key_error(
                "ISCSI_TARGET_IP",
                "",
                "an address to go with ISCSI_TARGET_NAME",
            ))
        }
        (None, Some(_)) => {
            return Err(key_error(
                "ISCSI_TARGET_NAME",
                "",
                "a target name to go with ISCSI_TARGET_IP",
            ))
        }
        (None, None) => {}
    }
    let targets = if cmdline_targets.is_empty() {
        configured
    } else {
        cmdline_targets
    };
    if targets.is_empty() && !from_dhcp && !firmware {
        return Ok(None);
    }
    Ok(Some(Plan {
        initiator_given: initiator.is_some(),
        initiator: initiator
            .or_else(|| node.initiator.clone())
            .unwrap_or_else(|| DEFAULT_INITIATOR.to_string()),
        targets,
        timeout: node
            .timeout
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT),
        from_dhcp,
        firmware,
    }))
}

impl Plan {
    /// Adds the iBFT's targets (`rd.iscsi.firmware`) and takes its initiator name unless
    /// the command line gave one. A table without targets is an error only when nothing
    /// else names one (node.toml, the command line, or a DHCP root path still to come);
    /// otherwise it is logged and the boot goes on with the others.
    pub fn add_firmware(&mut self, ibft: &Ibft, dir: &Path) -> Result<(), super::IscsiError> {
        if ibft.targets.is_empty() {
            let e = super::IscsiError::NoFirmwareTarget {
                path: dir.to_path_buf(),
                published: dir.is_dir(),
            };
            if self.targets.is_empty() && !self.from_dhcp {
                return Err(e);
            }
            log::warn!("iscsi: {e}; going on with the other targets");
            return Ok(());
        }
        if !self.initiator_given {
            if let Some(name) = &ibft.initiator {
                self.initiator = name.clone();
            }
        }
        for t in &ibft.targets {
            let chap = match &t.chap {
                None => String::new(),
                Some(c) => format!(
                    ", CHAP user {}{}",
                    c.initiator.user,
                    c.mutual
                        .as_ref()
                        .map(|m| format!(", mutual with {}", m.user))
                        .unwrap_or_default()
                ),
            };
            log::info!(
                "iscsi: the iBFT names {} at {} (LUN {}{chap})",
                t.iqn,
                t.portal,
                t.lun.map_or("any".to_string(), |l| l.to_string())
            );
        }
        self.targets.extend(ibft.targets.iter().map(|t| Target {
            portal: t.portal.clone(),
            iqn: t.iqn.clone(),
            lun: t.lun,
            chap: t.chap.clone(),
            source: Source::Firmware,
        }));
        Ok(())
    }
}

/// Adds the target of a DHCP root path (option 17, `iscsi:…` as in `netroot=`) to a plan
/// made with `netroot=dhcp`. Other root paths (NFS, …) are not ours and are ignored.
/// Returns whether a target was added.
pub fn add_root_path(
    plan: &mut Plan,
    node: &IscsiSection,
    root_path: &str,
) -> Result<bool, ConfigError> {
    if !root_path.starts_with("iscsi:") {
        return Ok(false);
    }
    let n = parse_netroot(root_path)
        .map_err(|expected| key_error("DHCP root-path", &redact_netroot(root_path), expected))?;
    let chap = match n.chap {
        Some((u, secret)) => {
            let mut c = Chap::new(&u, secret);
            c.mutual = n.mutual.map(|(user, secret)| Credentials { user, secret });
            Some(c)
        }
        None => chap_for(node, &n.iqn),
    };
    plan.targets.push(Target {
        portal: n.portal,
        iqn: n.iqn,
        lun: n.lun,
        chap,
        source: Source::DhcpRootPath,
    });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(h: &str, p: u16) -> Portal {
        Portal {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn portals_parse() {
        assert_eq!(Portal::parse("10.0.2.2"), Some(portal("10.0.2.2", 3260)));
        assert_eq!(
            Portal::parse("10.0.2.2:3261"),
            Some(portal("10.0.2.2", 3261))
        );
        assert_eq!(Portal::parse("[fe80::1]:99"), Some(portal("fe80::1", 99)));
        assert_eq!(Portal::parse("[fe80::1]"), Some(portal("fe80::1", 3260)));
        assert_eq!(Portal::parse("fe80::1"), Some(portal("fe80::1", 3260)));
        assert_eq!(
            Portal::parse("san.example"),
            Some(portal("san.example", 3260))
        );
        assert_eq!(Portal::parse("a:b"), None);
        assert_eq!(Portal::parse(""), None);
        assert_eq!(Portal::parse("x y"), None);
        assert_eq!(portal("fe80::1", 3260).to_string(), "[fe80::1]:3260");
        assert_eq!(
            Portal::parse_target_address("10.1.1.1:3262,2"),
            Some(portal("10.1.1.1", 3262))
        );
        assert_eq!(
            Portal::parse_target_address("[2001:db8::5],1"),
            Some(portal("2001:db8::5", 3260))
        );
    }

    #[test]
    fn rfc4173_examples() {
        // RFC 4173 §5's examples.
        let n = parse_netroot("iscsi:192.0.2.1::::iqn.2000-01.com.example:disk0").unwrap();
        assert_eq!(n.portal, portal("192.0.2.1", 3260));
        assert_eq!(n.lun, None);
        assert_eq!(n.iqn, "iqn.2000-01.com.example:disk0");
        let n = parse_netroot(
            "iscsi:192.0.2.1:6:3261:4752-3A4B-6C7D-8E9F:iqn.1991-05.com.microsoft:fancy:disk",
        )
        .unwrap();
        assert_eq!(n.portal, portal("192.0.2.1", 3261));
        assert_eq!(n.iqn, "iqn.1991-05.com.microsoft:fancy:disk");
        assert_eq!(
            n.lun,
            Some(crate::iscsi::pdu::lun_from_wire(0x4752_3a4b_6c7d_8e9f))
        );
        let n =
            parse_netroot("iscsi:[2001:db8::1]:6:3260:1f:iqn.2001-04.com.example:storage").unwrap();
        assert_eq!(n.portal, portal("2001:db8::1", 3260));
        assert_eq!(n.lun, Some(0x1f));
        // A name that is not iqn./eui./naa. is everything after the LUN.
        let n = parse_netroot("iscsi:san.example::::custom:name").unwrap();
        assert_eq!(n.iqn, "custom:name");
        assert_eq!(n.lun, None);
    }

    #[test]
    fn dracut_extensions() {
        let n = parse_netroot(
            "iscsi:user:pass:tuser:tpass@10.0.2.2::3260:eth0:1:iqn.2024-01.org.terra:root",
        )
        .unwrap();
        assert_eq!(n.chap.as_ref().map(|c| c.0.as_str()), Some("user"));
        assert_eq!(n.chap.as_ref().map(|c| c.1.expose()), Some(&b"pass"[..]));
        assert_eq!(n.mutual.as_ref().map(|c| c.0.as_str()), Some("tuser"));
        assert_eq!(n.netdev.as_deref(), Some("eth0"));
        assert_eq!(n.lun, Some(1));
        let n =
            parse_netroot("iscsi:@192.168.1.100::3260::iqn.2009-01.com.example:testdi@sk").unwrap();
        assert_eq!(n.iqn, "iqn.2009-01.com.example:testdi@sk");
        assert!(n.chap.is_none());
        let n = parse_netroot("iscsi:10.0.0.1::3260:default:eth1:0:iqn.2024-01.x:y").unwrap();
        assert_eq!(
            (n.iface.as_deref(), n.netdev.as_deref(), n.lun),
            (Some("default"), Some("eth1"), Some(0))
        );
    }

    #[test]
    fn bad_netroots_are_refused_without_echoing_secrets() {
        for bad in [
            "nfs:10.0.0.1:/root",
            "iscsi:",
            "iscsi:10.0.0.1::3260:1:",
            "iscsi:10.0.0.1::port:1:iqn.2024-01.x:y",
            "iscsi:10.0.0.1::3260:xyz:iqn.2024-01.x:y",
            "iscsi:[::1::3260:1:iqn.2024-01.x:y",
        ] {
            assert!(parse_netroot(bad).is_err(), "{bad}");
        }
        let e = plan(
            &IscsiSection::default(),
            "netroot=iscsi:u:topsecret@10.0.0.1::99999:1:iqn.2024-01.x:y",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("netroot") && !e.contains("topsecret"), "{e}");
    }

    fn section(text: &str) -> IscsiSection {
        #[derive(serde::Deserialize)]
        struct W {
            iscsi: IscsiSection,
        }
        toml::from_str::<W>(text).unwrap().iscsi
    }

    #[test]
    fn node_toml_targets() {
        let s = section(
            r#"
[iscsi]
initiator = "iqn.2024-01.org.terra:node1"
timeout = 12
[[iscsi.targets]]
portal = "10.0.2.2:3260"
iqn = "iqn.2024-01.org.terra:root"
lun = 1
chap_user = "node1"
chap_secret = "node1-secret"
mutual_user = "target"
mutual_secret = "target-secret"
"#,
        );
        let p = plan(&s, "quiet").unwrap().unwrap();
        assert_eq!(p.initiator, "iqn.2024-01.org.terra:node1");
        assert_eq!(p.timeout, Duration::from_secs(12));
        let t = &p.targets[0];
        assert_eq!(t.portal, portal("10.0.2.2", 3260));
        assert_eq!(t.lun, Some(1));
        let chap = t.chap.as_ref().unwrap();
        assert_eq!(chap.initiator.user, "node1");
        assert_eq!(chap.mutual.as_ref().unwrap().user, "target");
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("secret\"") && !dbg.contains("node1-secret"),
            "{dbg}"
        );
    }

    #[test]
    fn node_toml_mistakes_are_named() {
        let s = section("[iscsi]\n[[iscsi.targets]]\nportal = \"a b\"\niqn = \"x\"\n");
        let e = plan(&s, "").unwrap_err().to_string();
        assert!(e.contains("iscsi.targets[0].portal"), "{e}");
        let s = section(
            "[iscsi]\n[[iscsi.targets]]\nportal = \"1.2.3.4\"\niqn = \"x\"\nchap_user = \"u\"\n",
        );
        let e = plan(&s, "").unwrap_err().to_string();
        assert!(e.contains("chap_user and chap_secret"), "{e}");
    }

    #[test]
    fn terra_keys() {
        let p = plan(
            &IscsiSection::default(),
            "ISCSI_INITIATOR=iqn.2024-01.org.terra:n1 ISCSI_TARGET_NAME=iqn.2024-01.org.terra:root ISCSI_TARGET_IP=10.0.2.2"
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.initiator, "iqn.2024-01.org.terra:n1");
        assert_eq!(
            p.targets,
            vec![Target {
                portal: portal("10.0.2.2", 3260),
                iqn: "iqn.2024-01.org.terra:root".into(),
                lun: None,
                chap: None,
                source: Source::TerraKeys,
            }]
        );
        let e = plan(&IscsiSection::default(), "ISCSI_TARGET_NAME=iqn.x").unwrap_err();
        assert!(e.to_string().contains("ISCSI_TARGET_IP"), "{e}");
        let e = plan(&IscsiSection::default(), "ISCSI_TARGET_IP=a:b:c:d:").unwrap_err();
        assert!(e.to_string().contains("ISCSI_TARGET_IP"), "{e}");
    }

    #[test]
    fn cmdline_targets_take_chap_from_node_toml() {
        let s = section(
            "[iscsi]\ninitiator = \"iqn.n\"\n[[iscsi.targets]]\nportal = \"192.0.2.9\"\niqn = \"iqn.2024-01.x:root\"\nlun = 3\nchap_user = \"u\"\nchap_secret = \"sssssssssss\"\n",
        );
        let p = plan(
            &s,
            "rd.iscsi.initiator=iqn.override netroot=iscsi:10.0.2.2::::iqn.2024-01.x:root",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.initiator, "iqn.override");
        assert_eq!(
            p.targets.len(),
            1,
            "the command line replaces node.toml's targets"
        );
        assert_eq!(p.targets[0].portal, portal("10.0.2.2", 3260));
        assert_eq!(p.targets[0].chap.as_ref().unwrap().initiator.user, "u");
        let p = plan(
            &s,
            "ISCSI_TARGET_NAME=iqn.2024-01.x:root ISCSI_TARGET_IP=10.0.2.2:3261",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.targets[0].lun, Some(3));
        assert_eq!(p.targets[0].portal.port, 3261);
    }

    #[test]
    fn nothing_to_do_without_targets() {
        assert_eq!(
            plan(
                &IscsiSection::default(),
                "root=LABEL=os rd.iscsi.initiator=iqn.x"
            )
            .unwrap(),
            None
        );
        let p = plan(&IscsiSection::default(), "netroot=dhcp")
            .unwrap()
            .unwrap();
        assert!(p.from_dhcp && p.targets.is_empty());
        assert_eq!(p.initiator, DEFAULT_INITIATOR);
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A sysfs tree laid out as drivers/firmware/iscsi_ibft.c + iscsi_boot_sysfs.c make it.
    fn fake_ibft() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(p, "initiator/initiator-name", "iqn.2024-01.fw:node7\n");
        write(p, "initiator/flags", "3\n");
        write(p, "ethernet0/index", "0\n");
        write(p, "ethernet0/flags", "3\n");
        write(p, "ethernet0/ip-addr", "10.0.2.15\n");
        write(p, "ethernet0/prefix-len", "24\n");
        write(p, "ethernet0/gateway", "10.0.2.2\n");
        write(p, "ethernet0/primary-dns", "10.0.2.3\n");
        write(p, "ethernet0/secondary-dns", "0.0.0.0\n");
        write(p, "ethernet0/mac", "52:54:00:12:34:56\n");
        write(p, "ethernet0/vlan", "0\n");
        write(p, "target0/index", "0\n");
        write(p, "target0/flags", "3\n");
        write(p, "target0/ip-addr", "10.0.2.2\n");
        write(p, "target0/port", "3260\n");
        write(p, "target0/lun", "01000000\n");
        write(p, "target0/nic-assoc", "0\n");
        write(p, "target0/target-name", "iqn.2024-01.fw:root\n");
        write(p, "target0/chap-name", "fwuser\n");
        write(p, "target0/chap-secret", "fw-secret-123\n");
        write(p, "target0/rev-chap-name", "fw-target\n");
        write(p, "target0/rev-chap-secret", "fw-target-secret\n");
        write(p, "target1/flags", "0\n");
        write(p, "target1/ip-addr", "10.9.9.9\n");
        write(p, "target1/target-name", "iqn.invalid\n");
        d
    }

    #[test]
    fn ibft_is_read_from_sysfs() {
        let d = fake_ibft();
        let ibft = read_ibft(d.path());
        assert_eq!(ibft.initiator.as_deref(), Some("iqn.2024-01.fw:node7"));
        assert_eq!(ibft.nics.len(), 1);
        let nic = &ibft.nics[0];
        assert_eq!(nic.ip, "10.0.2.15".parse().ok());
        assert_eq!(nic.prefix, Some(24));
        assert_eq!(nic.dns, vec!["10.0.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(nic.vlan, None);
        assert_eq!(ibft.targets.len(), 1, "the invalid block is skipped");
        let t = &ibft.targets[0];
        assert_eq!(t.portal, portal("10.0.2.2", 3260));
        assert_eq!(t.lun, Some(1));
        assert_eq!(t.nic, Some(0));
        assert_eq!(t.chap.as_ref().unwrap().initiator.user, "fwuser");
        let mutual = t
            .chap
            .as_ref()
            .unwrap()
            .mutual
            .as_ref()
            .expect("mutual CHAP");
        assert_eq!(mutual.user, "fw-target");
        let mut p = plan(&IscsiSection::default(), "rd.iscsi.firmware")
            .unwrap()
            .expect("asking for the firmware is a plan even before the table is read");
        assert!(p.firmware && p.targets.is_empty());
        p.add_firmware(&ibft, d.path()).unwrap();
        assert_eq!(p.initiator, "iqn.2024-01.fw:node7");
        assert_eq!(p.targets[0].source, Source::Firmware);
        let mut given = plan(
            &IscsiSection::default(),
            "rd.iscsi.firmware rd.iscsi.initiator=iqn.given",
        )
        .unwrap()
        .unwrap();
        given.add_firmware(&ibft, d.path()).unwrap();
        assert_eq!(
            given.initiator, "iqn.given",
            "the command line beats the iBFT"
        );
        assert_eq!(
            plan(&IscsiSection::default(), "quiet").unwrap(),
            None,
            "the iBFT is used only when asked"
        );
        // The network the firmware used: its NIC by MAC, its static address and gateway.
        assert_eq!(
            ibft.interfaces(),
            vec![IfaceConfig {
                selector: Selector::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
                method: Method::Static(StaticAddr {
                    address: "10.0.2.15".parse().unwrap(),
                    prefix: 24,
                    gateway: "10.0.2.2".parse().ok(),
                }),
                mtu: None,
            }]
        );
        assert_eq!(
            ibft.nameservers(),
            vec!["10.0.2.3".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        // A firmware that used DHCP: DHCP again, asking for the same address.
        let mut dhcp = ibft.clone();
        dhcp.nics[0].dhcp = "10.0.2.2".parse().ok();
        assert_eq!(
            dhcp.interfaces()[0].method,
            Method::Dhcp {
                requested: "10.0.2.15".parse().ok()
            }
        );
        let mut tagged = ibft.clone();
        tagged.nics[0].vlan = Some(100);
        assert!(tagged.interfaces().is_empty(), "VLAN NICs are skipped");
        let none = read_ibft(Path::new("/nonexistent"));
        let mut only_fw = plan(&IscsiSection::default(), "rd.iscsi.firmware")
            .unwrap()
            .unwrap();
        let e = only_fw
            .add_firmware(&none, Path::new("/nonexistent"))
            .unwrap_err();
        assert!(e.to_string().contains("published no iBFT"), "{e}");
        let e = only_fw
            .add_firmware(&Ibft::default(), d.path())
            .unwrap_err();
        assert!(e.to_string().contains("has no valid target"), "{e}");
        // With other targets (or a DHCP root path to come) an empty table is not fatal.
        let mut others = plan(
            &IscsiSection::default(),
            "rd.iscsi.firmware netroot=iscsi:10.0.2.2::::iqn.2024-01.x:root",
        )
        .unwrap()
        .unwrap();
        others
            .add_firmware(&none, Path::new("/nonexistent"))
            .unwrap();
        assert_eq!(others.targets.len(), 1);
        let mut dhcp = plan(&IscsiSection::default(), "rd.iscsi.firmware netroot=dhcp")
            .unwrap()
            .unwrap();
        dhcp.add_firmware(&none, Path::new("/nonexistent")).unwrap();
        assert!(read_ibft(Path::new("/nonexistent")).targets.is_empty());
    }

    #[test]
    fn dhcp_root_path_adds_a_target() {
        let mut p = plan(&IscsiSection::default(), "netroot=dhcp")
            .unwrap()
            .unwrap();
        assert!(!add_root_path(&mut p, &IscsiSection::default(), "nfs:10.0.0.1:/root").unwrap());
        assert!(p.targets.is_empty());
        add_root_path(
            &mut p,
            &IscsiSection::default(),
            "iscsi:192.168.0.5::3260:1:iqn.2024-01.x:root",
        )
        .unwrap();
        assert_eq!(p.targets[0].source, Source::DhcpRootPath);
        assert_eq!(p.targets[0].lun, Some(1));
        assert!(add_root_path(&mut p, &IscsiSection::default(), "iscsi:bad").is_err());
    }

    #[test]
    fn ibft_luns() {
        assert_eq!(parse_ibft_lun("00000000"), Some(0));
        assert_eq!(parse_ibft_lun("01000000"), Some(1));
        assert_eq!(parse_ibft_lun("0ff000000"), Some(255));
        assert_eq!(parse_ibft_lun("4101000000"), Some(0x4101));
        assert_eq!(parse_ibft_lun("1234"), None);
    }
}
