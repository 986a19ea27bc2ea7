//! IPv6 on one link: the kernel's per-interface switches, and waiting (bounded) for what the
//! kernel does by itself — duplicate address detection of the link-local address, and the
//! stateless autoconfiguration (RFC 4862) of an address and a default route from router
//! advertisements (RFC 4861). stage0 parses no router advertisement: the kernel already
//! does, and the result is read back over netlink.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::netlink::{Address6, Netlink, NetlinkError, Route6, SCOPE_LINK};

/// Why IPv6 could not be set up on a link.
#[derive(Debug)]
pub enum Ipv6Error {
    /// The kernel has no IPv6 for this link (no `/proc/sys/net/ipv6/conf/<if>`).
    Unsupported {
        /// The interface.
        ifname: String,
    },
    /// A switch could not be written.
    Sysctl {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Reading addresses or routes failed.
    Netlink(NetlinkError),
    /// Nothing came before the deadline.
    TimedOut {
        /// What was waited for.
        waiting_for: &'static str,
        /// What the link had by then.
        seen: String,
    },
    /// Another interface won.
    Cancelled,
}

impl fmt::Display for Ipv6Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ipv6Error::Unsupported { ifname } => write!(
                f,
                "{ifname}: the kernel has no IPv6 here (/proc/sys/net/ipv6/conf/{ifname} missing)"
            ),
            Ipv6Error::Sysctl { path, error } => write!(f, "{}: {error}", path.display()),
            Ipv6Error::Netlink(e) => e.fmt(f),
            Ipv6Error::TimedOut { waiting_for, seen } => {
                write!(f, "no {waiting_for} before the deadline; {seen}")
            }
            Ipv6Error::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for Ipv6Error {}

impl From<NetlinkError> for Ipv6Error {
    fn from(e: NetlinkError) -> Self {
        Ipv6Error::Netlink(e)
    }
}

/// Turns IPv6 on for `ifname` and has it accept router advertisements, and with
/// `autoconf` form addresses from their prefixes. Done before the link goes up: the kernel
/// solicits routers (RS) once, after the link-local address passes DAD, and only if it
/// accepts advertisements then. A forwarding interface ignores advertisements unless
/// `accept_ra` is 2 (ip-sysctl.rst), so that is written where forwarding is on.
pub fn enable(ifname: &str, autoconf: bool) -> Result<(), Ipv6Error> {
    let dir = PathBuf::from("/proc/sys/net/ipv6/conf").join(ifname);
    if !dir.is_dir() {
        return Err(Ipv6Error::Unsupported {
            ifname: ifname.into(),
        });
    }
    let forwarding = std::fs::read_to_string(dir.join("forwarding"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    let mut writes = vec![
        ("disable_ipv6", "0"),
        ("accept_ra", if forwarding { "2" } else { "1" }),
        ("accept_ra_defrtr", "1"),
    ];
    if autoconf {
        writes.push(("autoconf", "1"));
    }
    for (name, value) in writes {
        let path = dir.join(name);
        // Skip when already so: a read-only /proc/sys (a container) is fine then.
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
            continue;
        }
        std::fs::write(&path, value).map_err(|error| Ipv6Error::Sysctl { path, error })?;
    }
    Ok(())
}

fn describe(addrs: &[Address6], routes: &[Route6]) -> String {
    let a: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!(
                "{}/{}{}",
                a.address,
                a.prefix,
                if a.usable() { "" } else { " (tentative)" }
            )
        })
        .collect();
    let r: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    format!(
        "addresses: {}; routes: {}",
        if a.is_empty() {
            "none".into()
        } else {
            a.join(", ")
        },
        if r.is_empty() {
            "none".into()
        } else {
            r.join(", ")
        }
    )
}

/// Polls (every 50 ms) until `done` says so, the deadline passes or `stop` is set.
fn poll<T>(
    nl: &mut Netlink,
    index: u32,
    deadline: Instant,
    stop: &AtomicBool,
    waiting_for: &'static str,
    mut done: impl FnMut(&[Address6], &[Route6]) -> Option<T>,
) -> Result<T, Ipv6Error> {
    loop {
        let addrs = nl.addresses6(index)?;
        let routes: Vec<Route6> = nl
            .routes6()?
            .into_iter()
            .filter(|r| r.oif == index)
            .collect();
        if let Some(t) = done(&addrs, &routes) {
            return Ok(t);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(Ipv6Error::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(Ipv6Error::TimedOut {
                waiting_for,
                seen: describe(&addrs, &routes),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The link's link-local address once DAD has passed (about a second on a fresh link): the
/// source of DHCPv6 messages.
pub fn wait_link_local(
    nl: &mut Netlink,
    index: u32,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Ipv6Addr, Ipv6Error> {
    poll(
        nl,
        index,
        deadline,
        stop,
        "usable link-local address",
        |addrs, _| {
            addrs
                .iter()
                .find(|a| a.scope == SCOPE_LINK && a.usable())
                .map(|a| a.address)
        },
    )
}

/// The default route a router advertisement gave the link, if any.
pub fn ra_default(routes: &[Route6]) -> Option<&Route6> {
    routes.iter().find(|r| r.prefix == 0 && r.gateway.is_some())
}

/// What SLAAC gave a link.
#[derive(Debug, Clone)]
pub struct Autoconf {
    /// The global address (past DAD).
    pub address: Address6,
    /// The default route learned from the advertisement.
    pub default: Route6,
    /// The on-link prefix routes learned with it.
    pub routes: Vec<Route6>,
}

/// Waits for a usable global-scope address and a default route on the link, both from the
/// kernel's handling of router advertisements.
pub fn wait_autoconf(
    nl: &mut Netlink,
    index: u32,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Autoconf, Ipv6Error> {
    poll(
        nl,
        index,
        deadline,
        stop,
        "global address and default route from a router advertisement",
        |addrs, routes| {
            // Global or site scope: QEMU's user networking still advertises the old
            // site-local fec0::/64, which the kernel gives scope site (200).
            let address = *addrs.iter().find(|a| a.scope < SCOPE_LINK && a.usable())?;
            let default = ra_default(routes)?.clone();
            Some(Autoconf {
                address,
                default,
                routes: routes
                    .iter()
                    .filter(|r| {
                        r.prefix > 0 && r.prefix < 128 && !r.destination.is_unicast_link_local()
                    })
                    .cloned()
                    .collect(),
            })
        },
    )
}

/// Waits until `deadline` (or `stop`) for a default route from a router advertisement; None
/// when none came. For DHCPv6, whose address carries no route.
pub fn wait_default_route(
    nl: &mut Netlink,
    index: u32,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Option<Route6>, Ipv6Error> {
    match poll(nl, index, deadline, stop, "default route", |_, routes| {
        ra_default(routes).cloned()
    }) {
        Ok(r) => Ok(Some(r)),
        Err(Ipv6Error::TimedOut { .. } | Ipv6Error::Cancelled) => Ok(None),
        Err(e) => Err(e),
    }
}
