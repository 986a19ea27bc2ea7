//! What the network's parsers share: which link an entry names ([`Selector`]) and the
//! small value parsers every link key uses. It imports none of the parsers, which all
//! import it.

use super::dhcp::mask_to_prefix;

/// Which link an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Any Ethernet link; the first to succeed wins.
    Any,
    /// By kernel name.
    Name(String),
    /// By hardware address.
    Mac([u8; 6]),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Any => write!(f, "any Ethernet link"),
            Selector::Name(n) => write!(f, "{n}"),
            Selector::Mac(m) => write!(f, "{}", format_mac(m)),
        }
    }
}

/// Parses a MAC in `aa:bb:cc:dd:ee:ff` or `aa-bb-…` form.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// "aa:bb:…" for any hardware address.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A netmask (`255.255.255.0`) or a prefix length (`24`).
pub fn parse_netmask(s: &str) -> Option<u8> {
    if let Ok(p) = s.parse::<u8>() {
        return (p <= 32).then_some(p);
    }
    mask_to_prefix(s.parse().ok()?)
}

/// An MTU the kernel accepts on an Ethernet link (IPv4's minimum of 68 up to 65535).
pub fn valid_mtu(m: u32) -> bool {
    (68..=65535).contains(&m)
}
