//! What server.toml says about the system, written into the built tree: the host name,
//! root's SSH keys, networkd (or netplan) files, the resolver, the components' units
//! enabled as `systemctl enable` would, and checks that the init and every key apply to
//! this base. Every path is resolved beneath the tree, never through its symlinks.

use std::path::Path;

use rustix::fs::FileType;

use super::spec::{Interface, Resolvconf, Spec};
use super::CreateError;
use crate::oci::apply::{
    chmod_beneath, mkdir_beneath, read_beneath, stat_beneath, symlink_beneath, write_file_beneath,
};

/// Where systemd looks for unit files of the system, in its order.
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// networkd's and netplan's programs: one of them must be in the tree for `[netplan]`.
const NETWORKD: &[&str] = &[
    "usr/lib/systemd/systemd-networkd",
    "lib/systemd/systemd-networkd",
];
const NETPLAN: &str = "usr/sbin/netplan";

/// Writes the settings of `spec` into `root` (the built image's tree).
pub fn apply(spec: &Spec, root: &Path) -> Result<(), CreateError> {
    let at = |line: usize, key: &str, message: String| {
        CreateError::Spec(super::spec::SpecError {
            path: spec.path.clone(),
            line,
            key: key.into(),
            message,
        })
    };
    let io = |e: crate::oci::OciError| CreateError::Tree(e.to_string());
    if let Some((init, line)) = &spec.init {
        match stat_beneath(root, init).map_err(io)? {
            Some((FileType::RegularFile, mode)) if mode & 0o111 != 0 => {}
            Some(_) => {
                return Err(at(
                    *line,
                    "init",
                    format!("{init} is not an executable file in the image"),
                ))
            }
            None => return Err(at(*line, "init", format!("{init} is not in the image"))),
        }
    }
    write_file_beneath(
        root,
        "etc/hostname",
        format!("{}\n", spec.hostname).as_bytes(),
        0o644,
    )
    .map_err(io)?;
    if !spec.authorized_keys.is_empty() {
        mkdir_beneath(root, "root/.ssh").map_err(io)?;
        chmod_beneath(root, "root/.ssh", 0o700).map_err(io)?;
        let mut keys = spec.authorized_keys.join("\n");
        keys.push('\n');
        write_file_beneath(root, "root/.ssh/authorized_keys", keys.as_bytes(), 0o600)
            .map_err(io)?;
    }
    if let Some((ifs, line)) = &spec.netplan {
        let has = |p: &str| stat_beneath(root, p).map(|s| s.is_some());
        if has(NETPLAN).map_err(io)? {
            write_file_beneath(
                root,
                "etc/netplan/90-terra.yaml",
                netplan_yaml(ifs).as_bytes(),
                0o600,
            )
            .map_err(io)?;
        } else if NETWORKD
            .iter()
            .map(|p| has(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?
            .contains(&true)
        {
            for (n, i) in ifs.iter().enumerate() {
                let name = format!("etc/systemd/network/50-terra-{n}.network");
                write_file_beneath(root, &name, network_file(i).as_bytes(), 0o644).map_err(io)?;
            }
            enable(root, "systemd-networkd.service").map_err(|m| at(*line, "netplan", m))?;
        } else {
            return Err(at(
                *line,
                "netplan",
                "the base has neither systemd-networkd nor netplan to apply it".into(),
            ));
        }
    }
    if let Some((r, _)) = &spec.resolvconf {
        // A file, replacing a symlink to a resolver's runtime file: the settings asked for
        // are the ones the system uses.
        write_file_beneath(root, "etc/resolv.conf", resolv_conf(r).as_bytes(), 0o644)
            .map_err(io)?;
    }
    for (n, c) in spec.components.iter().enumerate() {
        for (unit, line) in &c.systemd {
            enable(root, unit).map_err(|m| at(*line, &format!("components[{n}].systemd"), m))?;
        }
    }
    Ok(())
}

/// Enables `unit` in `root` as `systemctl enable` does: a symlink in each
/// `<target>.wants/` (or `.requires/`) its `[Install]` section names, its aliases, and the
/// units its `Also=` names.
pub fn enable(root: &Path, unit: &str) -> Result<(), String> {
    let mut todo = vec![unit.to_string()];
    let mut done: Vec<String> = Vec::new();
    while let Some(u) = todo.pop() {
        if done.contains(&u) {
            continue;
        }
        let (dir, text) = find_unit(root, &u)?.ok_or_else(|| {
            format!(
                "{u}: no such unit in the image (looked in /{})",
                UNIT_DIRS.join(", /")
            )
        })?;
        let install = install_section(&text);
        if install.is_empty() && u == unit {
            return Err(format!(
                "/{dir}/{u} has no [Install] section to enable it by"
            ));
        }
        let target = format!("/{dir}/{u}");
        for (key, value) in install {
            for name in value.split_whitespace() {
                let link = match key.as_str() {
                    "WantedBy" => format!("etc/systemd/system/{name}.wants/{u}"),
                    "RequiredBy" => format!("etc/systemd/system/{name}.requires/{u}"),
                    "Alias" => format!("etc/systemd/system/{name}"),
                    "Also" => {
                        todo.push(name.to_string());
                        continue;
                    }
                    _ => continue,
                };
                if link.ends_with(&format!("/{u}")) && u.contains("@.") {
                    return Err(format!(
                        "{u} is a template: name an instance (name@instance.service)"
                    ));
                }
                symlink_beneath(root, &link, &target).map_err(|e| e.to_string())?;
            }
        }
        done.push(u);
    }
    Ok(())
}

/// The unit's directory and text, first found in systemd's order.
fn find_unit(root: &Path, unit: &str) -> Result<Option<(&'static str, String)>, String> {
    for dir in UNIT_DIRS {
        if let Some(bytes) =
            read_beneath(root, &format!("{dir}/{unit}")).map_err(|e| e.to_string())?
        {
            return Ok(Some((dir, String::from_utf8_lossy(&bytes).into_owned())));
        }
    }
    Ok(None)
}

/// `[Install]`'s key-value pairs.
fn install_section(text: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with('[') {
            inside = l == "[Install]";
        } else if inside && !l.starts_with('#') && !l.starts_with(';') {
            if let Some((k, v)) = l.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

/// A systemd-networkd `.network` file for one interface.
pub fn network_file(i: &Interface) -> String {
    let mut s = format!(
        "# Written by terra create from server.toml [netplan]\n[Match]\nName={}\n\n[Network]\n",
        i.name
    );
    if i.addresses.is_empty() {
        s.push_str("DHCP=yes\n");
    } else {
        for a in &i.addresses {
            s.push_str(&format!("Address={a}\n"));
        }
        if let Some(g) = &i.gateway {
            s.push_str(&format!("Gateway={g}\n"));
        }
    }
    s
}

/// Netplan YAML for the interfaces (bases that configure their network with netplan).
pub fn netplan_yaml(ifs: &[Interface]) -> String {
    let mut s = String::from("# Written by terra create from server.toml [netplan]\nnetwork:\n  version: 2\n  ethernets:\n");
    for i in ifs {
        s.push_str(&format!("    \"{}\":\n", i.name));
        if i.name.contains('*') {
            s.push_str(&format!("      match:\n        name: \"{}\"\n", i.name));
        }
        if i.addresses.is_empty() {
            s.push_str("      dhcp4: true\n");
        } else {
            s.push_str("      addresses:\n");
            for a in &i.addresses {
                s.push_str(&format!("        - \"{a}\"\n"));
            }
            if let Some(g) = &i.gateway {
                s.push_str(&format!(
                    "      routes:\n        - to: default\n          via: \"{g}\"\n"
                ));
            }
        }
    }
    s
}

/// `/etc/resolv.conf`.
pub fn resolv_conf(r: &Resolvconf) -> String {
    let mut s = String::from("# Written by terra create from server.toml [resolvconf]\n");
    for n in &r.nameservers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !r.search.is_empty() {
        s.push_str(&format!("search {}\n", r.search.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn unit(root: &Path, dir: &str, name: &str, text: &str) {
        fs::create_dir_all(root.join(dir)).unwrap();
        fs::write(root.join(dir).join(name), text).unwrap();
    }

    #[test]
    fn enables_as_systemctl_does() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        unit(r, "lib/systemd/system", "agent.service", "[Unit]\nDescription=a\n[Install]\nWantedBy=multi-user.target\nAlias=ag.service\nAlso=agent.socket\n");
        unit(
            r,
            "usr/lib/systemd/system",
            "agent.socket",
            "[Install]\nWantedBy=sockets.target\n",
        );
        enable(r, "agent.service").unwrap();
        let l = |p: &str| fs::read_link(r.join(p)).unwrap();
        assert_eq!(
            l("etc/systemd/system/multi-user.target.wants/agent.service"),
            Path::new("/lib/systemd/system/agent.service")
        );
        assert_eq!(
            l("etc/systemd/system/ag.service"),
            Path::new("/lib/systemd/system/agent.service")
        );
        assert_eq!(
            l("etc/systemd/system/sockets.target.wants/agent.socket"),
            Path::new("/usr/lib/systemd/system/agent.socket")
        );
    }

    #[test]
    fn a_missing_or_uninstallable_unit_is_named() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let e = enable(r, "nope.service").unwrap_err();
        assert!(e.contains("nope.service: no such unit"), "{e}");
        unit(
            r,
            "etc/systemd/system",
            "static.service",
            "[Service]\nExecStart=/bin/true\n",
        );
        let e = enable(r, "static.service").unwrap_err();
        assert!(e.contains("no [Install] section"), "{e}");
    }

    #[test]
    fn a_unit_symlinked_out_of_the_tree_is_not_read_from_the_host() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        fs::create_dir_all(r.join("lib/systemd/system")).unwrap();
        fs::write(
            t.path().join("host.service"),
            "[Install]\nWantedBy=evil.target\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            t.path().join("host.service"),
            r.join("lib/systemd/system/x.service"),
        )
        .unwrap();
        assert!(enable(&r, "x.service")
            .unwrap_err()
            .contains("no such unit"));
    }

    #[test]
    fn network_files() {
        let dhcp = Interface {
            name: "en*".into(),
            addresses: vec![],
            gateway: None,
        };
        assert!(network_file(&dhcp).contains("Name=en*\n\n[Network]\nDHCP=yes\n"));
        let fixed = Interface {
            name: "eth0".into(),
            addresses: vec!["10.0.0.5/24".into()],
            gateway: Some("10.0.0.1".into()),
        };
        assert!(network_file(&fixed).ends_with("Address=10.0.0.5/24\nGateway=10.0.0.1\n"));
        assert!(netplan_yaml(&[fixed]).contains("via: \"10.0.0.1\""));
        let r = Resolvconf {
            nameservers: vec!["192.0.2.53".into()],
            search: vec!["example".into()],
        };
        assert!(resolv_conf(&r).ends_with("nameserver 192.0.2.53\nsearch example\n"));
    }
}
