//! What the network phase hands to the real system: `/run/terra/network/<ifname>.json` per
//! configured interface, `/run/terra/network/links/<ifname>.json` per link it made or
//! renamed (bonds, VLANs, `ifname=`), and `/run/terra/resolv.conf`. `/run` is moved into the
//! new root by the switch phase, so they survive it (as do the kernel's links, addresses and
//! routes).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::report::network::{Lease, Lease6, MadeLink};

/// `<run>/network/<ifname>.json`.
pub fn lease_path(run: &Path, ifname: &str) -> PathBuf {
    run.join("network").join(format!("{ifname}.json"))
}

/// Writes the lease file; returns its path.
pub fn write_lease(run: &Path, lease: &Lease) -> io::Result<PathBuf> {
    let path = lease_path(run, &lease.interface);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// `<run>/network/ipv6/<ifname>.json`.
pub fn lease6_path(run: &Path, ifname: &str) -> PathBuf {
    run.join("network")
        .join("ipv6")
        .join(format!("{ifname}.json"))
}

/// Writes the IPv6 description of an interface; returns its path.
pub fn write_lease6(run: &Path, lease: &Lease6) -> io::Result<PathBuf> {
    let path = lease6_path(run, &lease.interface);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(lease).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// `<run>/network/links/<ifname>.json`.
pub fn link_path(run: &Path, ifname: &str) -> PathBuf {
    run.join("network")
        .join("links")
        .join(format!("{ifname}.json"))
}

/// Writes the description of a link stage0 made; returns its path.
pub fn write_link(run: &Path, link: &MadeLink) -> io::Result<PathBuf> {
    let path = link_path(run, &link.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(link).map_err(io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// resolv.conf text: servers in order without duplicates (glibc reads at most 3), and the
/// search list (option 119, else the domain names).
pub fn resolv_conf<A: Into<IpAddr> + Copy>(nameservers: &[A], search: &[String]) -> String {
    let mut s = String::from("# written by terra stage0\n");
    let mut seen: Vec<IpAddr> = Vec::new();
    for n in nameservers {
        let n: IpAddr = (*n).into();
        if !seen.contains(&n) {
            seen.push(n);
            s.push_str(&format!("nameserver {n}\n"));
        }
    }
    let mut domains: Vec<&str> = Vec::new();
    for d in search {
        if !domains.contains(&d.as_str()) {
            domains.push(d);
        }
    }
    if !domains.is_empty() {
        s.push_str(&format!("search {}\n", domains.join(" ")));
    }
    s
}

/// Writes `<run>/resolv.conf`; returns its path.
pub fn write_resolv(run: &Path, text: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(run)?;
    let path = run.join("resolv.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::network::{LinkKind, Member};
    use std::net::Ipv4Addr;

    #[test]
    fn resolv_conf_dedups_and_searches() {
        let t = resolv_conf(
            &[
                Ipv4Addr::new(10, 0, 2, 3),
                Ipv4Addr::new(1, 1, 1, 1),
                Ipv4Addr::new(10, 0, 2, 3),
            ],
            &["a.example".into(), "example".into(), "a.example".into()],
        );
        assert_eq!(
            t,
            "# written by terra stage0\nnameserver 10.0.2.3\nnameserver 1.1.1.1\nsearch a.example example\n"
        );
    }

    #[test]
    fn lease_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lease = crate::report::network::sample_lease("dhcp");
        let p = write_lease(dir.path(), &lease).unwrap();
        assert_eq!(p, dir.path().join("network/eth0.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(v["address"], "10.0.2.15");
        assert_eq!(v["routes"][0]["gateway"], "10.0.2.2");
        assert_eq!(v["lease_time_s"], 86400);
        assert!(v["root_path"].is_null());
        assert!(v["link"].is_null());
        assert!(v["routes"][0].get("origin").is_none());
        // A root path's CHAP credentials never reach the file.
        let chap = Lease {
            root_path: Some("iscsi:node:s3cret-chap@10.0.2.2::3260:1:iqn.2024-01.x:root".into()),
            ..lease
        };
        let p = write_lease(dir.path(), &chap).unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        assert!(!text.contains("s3cret-chap"), "{text}");
        assert!(
            text.contains("iscsi:***@10.0.2.2::3260:1:iqn.2024-01.x:root"),
            "{text}"
        );
    }

    #[test]
    fn made_links_are_described_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let bond = MadeLink {
            name: "bond0".into(),
            mac: "52:54:00:00:b0:01".into(),
            mtu: None,
            kind: LinkKind::Bond {
                mode: "802.3ad",
                options: vec!["miimon=100".into()],
                slaves: vec![
                    Member {
                        name: "lan0".into(),
                        mac: "52:54:00:00:b0:01".into(),
                    },
                    Member {
                        name: "lan1".into(),
                        mac: "52:54:00:00:b0:02".into(),
                    },
                ],
            },
        };
        let p = write_link(dir.path(), &bond).unwrap();
        assert_eq!(p, dir.path().join("network/links/bond0.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(v["kind"], "bond");
        assert_eq!(v["mode"], "802.3ad");
        assert_eq!(v["slaves"][1]["name"], "lan1");
        assert_eq!(v["options"][0], "miimon=100");
        let vlan = MadeLink {
            name: "vlan5".into(),
            mac: "52:54:00:00:b0:01".into(),
            mtu: Some(1496),
            kind: LinkKind::Vlan {
                id: 5,
                parent: "bond0".into(),
            },
        };
        let v = serde_json::to_value(&vlan).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "vlan5", "mac": "52:54:00:00:b0:01", "mtu": 1496,
                "kind": "vlan", "id": 5, "parent": "bond0"})
        );
        let renamed = MadeLink {
            name: "lan0".into(),
            mac: "52:54:00:00:b0:01".into(),
            mtu: None,
            kind: LinkKind::Renamed {
                from: "eth0".into(),
            },
        };
        assert_eq!(serde_json::to_value(&renamed).unwrap()["from"], "eth0");
    }
}
