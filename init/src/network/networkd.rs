//! The interfaces a network root depends on, handed to systemd-networkd in the real system:
//! one `/run/systemd/network/10-terra-<ifname>.network` each, so that networkd, when the
//! root runs it, keeps the address and routes stage0 configured (`KeepConfiguration=yes`:
//! not flushed at its start, kept when a lease would lapse or networkd stops) and renews a
//! DHCP lease with the client identifier stage0 used (type 1 and the MAC), so the server
//! hands back the same address. Without it, networkd drops the addresses it did not make
//! and the iSCSI connection under the root breaks until its DHCP is done (seen as a
//! two-minute stall of a Debian node). dracut hands its network to the real root for the
//! same reason. The name sorts before a distribution's or image's own `.network` files, and
//! the first file that matches a link is the one networkd uses.
//!
//! A NIC that kept its kernel name (`eth0`) also gets `10-terra-<ifname>.link` naming it
//! what it is called: the real root's udev would rename it by its policy (`ens3`), which an
//! interface that is up refuses, and a link whose rename failed is never handed to networkd
//! (it stays "pending", and `systemd-networkd-wait-online` waits its two minutes). Links
//! stage0 made or renamed (bonds, VLANs, `ifname=`) carry names given by userspace, which
//! udev's default policy keeps.
//!
//! [`unit`] and [`link_unit`] are the files' text (no I/O); [`write`] puts them in place.

use std::io;
use std::path::{Path, PathBuf};

use crate::report::network::Lease;

/// Where the files go in the real system (`/run` moves into it).
pub const DIR: &str = "/run/systemd/network";

/// The file for `lease`'s interface.
pub fn path(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("10-terra-{ifname}.network"))
}

/// The `.network` text that keeps `lease`'s configuration.
pub fn unit(lease: &Lease) -> String {
    let mut s = format!(
        "# Written by Terra's stage0: the root is reached through {}; keep what stage0\n\
         # configured on it.\n[Match]\nName={}\n\n[Network]\nKeepConfiguration=yes\n",
        lease.interface, lease.interface
    );
    if lease.source == "dhcp" {
        s.push_str("DHCP=ipv4\n\n[DHCPv4]\nClientIdentifier=mac\n");
    } else {
        s.push_str(&format!("Address={}/{}\n", lease.address, lease.prefix));
        for r in &lease.routers {
            s.push_str(&format!("Gateway={r}\n"));
        }
        for d in &lease.dns {
            s.push_str(&format!("DNS={d}\n"));
        }
    }
    s
}

/// The `.link` text that keeps a plain NIC's kernel name; None for a link stage0 made or
/// renamed.
pub fn link_unit(lease: &Lease) -> Option<String> {
    lease.link.is_none().then(|| {
        format!(
            "# Written by Terra's stage0: the root is reached through {}, which is up and\n\
             # cannot be renamed.\n[Match]\nMACAddress={}\nOriginalName={}\n\n[Link]\n\
             NamePolicy=\nName={}\n",
            lease.interface, lease.mac, lease.interface, lease.interface
        )
    })
}

/// Writes the files of each lease into `dir`; returns the paths written.
pub fn write(dir: &Path, leases: &[&Lease]) -> io::Result<Vec<PathBuf>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for l in leases {
        let p = path(dir, &l.interface);
        std::fs::write(&p, unit(l))?;
        let link = p.with_extension("link");
        written.push(p);
        if let Some(text) = link_unit(l) {
            std::fs::write(&link, text)?;
            written.push(link);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(source: &'static str) -> Lease {
        crate::report::network::sample_lease(source)
    }

    #[test]
    fn a_dhcp_lease_is_kept_and_renewed_with_stage0s_client_id() {
        let u = unit(&lease("dhcp"));
        assert!(u.contains("[Match]\nName=eth0\n"), "{u}");
        assert!(u.contains("KeepConfiguration=yes\n"), "{u}");
        assert!(u.contains("DHCP=ipv4\n"), "{u}");
        assert!(u.contains("[DHCPv4]\nClientIdentifier=mac\n"), "{u}");
        assert!(!u.contains("Address="), "{u}");
    }

    #[test]
    fn a_static_configuration_is_written_as_it_is() {
        let u = unit(&lease("static"));
        assert!(u.contains("Address=10.0.2.15/24\n"), "{u}");
        assert!(u.contains("Gateway=10.0.2.2\n"), "{u}");
        assert!(u.contains("DNS=10.0.2.3\n"), "{u}");
        assert!(!u.contains("DHCP="), "{u}");
    }

    #[test]
    fn files_sort_before_an_images_own_and_are_written_per_interface() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = lease("static");
        other.interface = "bond0".into();
        other.link = Some(crate::report::network::MadeLink {
            name: "bond0".into(),
            mac: other.mac.clone(),
            mtu: None,
            kind: crate::report::network::LinkKind::Bond {
                mode: "active-backup",
                options: Vec::new(),
                slaves: Vec::new(),
            },
        });
        let written = write(dir.path(), &[&lease("dhcp"), &other]).unwrap();
        assert_eq!(
            written,
            [
                dir.path().join("10-terra-eth0.network"),
                dir.path().join("10-terra-eth0.link"),
                dir.path().join("10-terra-bond0.network")
            ]
        );
        let link = std::fs::read_to_string(&written[1]).unwrap();
        assert!(
            link.contains("MACAddress=52:54:00:12:34:56\nOriginalName=eth0\n"),
            "{link}"
        );
        assert!(link.contains("[Link]\nNamePolicy=\nName=eth0\n"), "{link}");
        assert!(std::fs::read_to_string(&written[2])
            .unwrap()
            .contains("Name=bond0"));
        assert!("10-terra-eth0.network" < "80-terra-e2e.network");
        assert!(write(&dir.path().join("none"), &[]).unwrap().is_empty());
        assert!(!dir.path().join("none").exists());
    }
}
