//! `server.toml`, the recipe `terra create` builds an OS image from (Terra OS's format):
//! parsed strictly (an unknown key is an error naming it and its line) and checked before
//! any build starts. No I/O: the caller reads the file.

use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::oci::reference::valid_tag;
use crate::oci::ImageRef;

/// A server.toml problem: the file, the line, the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line; 0 when the problem has no place (a missing key).
    pub line: usize,
    /// The key (`components[1].systemd`), or empty for a syntax error.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// server.toml as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    hostname: Spanned<String>,
    version: Spanned<String>,
    os: Spanned<String>,
    repo: Option<Spanned<String>>,
    userland: Option<Spanned<String>>,
    init: Option<Spanned<String>>,
    #[serde(default)]
    components: Vec<RawComponent>,
    ssh: Option<RawSsh>,
    netplan: Option<Spanned<RawNetplan>>,
    resolvconf: Option<Spanned<RawResolvconf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    image: Spanned<String>,
    #[serde(default)]
    systemd: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default)]
    authorized_keys: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetplan {
    #[serde(default)]
    interfaces: Vec<Spanned<RawInterface>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: String,
    #[serde(default)]
    addresses: Vec<String>,
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolvconf {
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
}

/// A checked server.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The file, for messages.
    pub path: PathBuf,
    /// Written to `/etc/hostname`; the image's name under `repo`.
    pub hostname: String,
    /// The image's tag.
    pub version: String,
    /// The base image as terra reads it (relative layout and archive paths made relative
    /// to server.toml's directory), and its line.
    pub os: (ImageRef, usize),
    /// Where `--push` sends `<repo>/<hostname>:<version>`.
    pub repo: Option<(String, usize)>,
    /// Containerfile lines, each with its server.toml line.
    pub userland: Vec<(String, usize)>,
    /// PID 1 of the image, recorded in its config.
    pub init: Option<(String, usize)>,
    /// Images whose files go on top, with the units they enable.
    pub components: Vec<Component>,
    /// root's authorized keys, and the line of the first.
    pub authorized_keys: Vec<String>,
    /// Network interfaces to configure, and the line of `[netplan]`.
    pub netplan: Option<(Vec<Interface>, usize)>,
    /// The resolver, and the line of `[resolvconf]`.
    pub resolvconf: Option<(Resolvconf, usize)>,
}

/// One `[[components]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The image (as terra reads it) and its line.
    pub image: (ImageRef, usize),
    /// Units to enable, each with its line.
    pub systemd: Vec<(String, usize)>,
}

/// One `[[netplan.interfaces]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface's name (`eth0`) or a glob networkd matches (`en*`).
    pub name: String,
    /// Static addresses with prefix; none: DHCP.
    pub addresses: Vec<String>,
    /// The default gateway.
    pub gateway: Option<String>,
}

/// `[resolvconf]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolvconf {
    /// Name servers.
    pub nameservers: Vec<String>,
    /// Search domains.
    pub search: Vec<String>,
}

/// The 1-based line of byte `offset` in `src`.
pub fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses and checks server.toml's text; `path` names it in errors and anchors relative
/// image paths.
pub fn parse(path: &Path, src: &str) -> Result<Spec, SpecError> {
    let err = |span: Option<Range<usize>>, key: &str, message: String| SpecError {
        path: path.to_path_buf(),
        line: span.map(|s| line_of(src, s.start)).unwrap_or(0),
        key: key.to_string(),
        message,
    };
    let raw: Raw = toml::from_str(src).map_err(|e| {
        let msg = e.message().to_string();
        // toml names an unknown key in its message; the span is where it is.
        err(e.span(), "", msg)
    })?;
    let line = |r: &Range<usize>| line_of(src, r.start);
    let dir = path.parent().unwrap_or(Path::new("."));

    let hostname = raw.hostname.get_ref().clone();
    if !valid_hostname(&hostname) {
        return Err(err(
            Some(raw.hostname.span()),
            "hostname",
            format!("{hostname:?} is not a host name (letters, digits and '-', labels joined by '.', at most 63 bytes each)"),
        ));
    }
    let version = raw.version.get_ref().clone();
    if !valid_tag(&version) {
        return Err(err(
            Some(raw.version.span()),
            "version",
            format!(
                "{version:?} is not an image tag ([A-Za-z0-9_][A-Za-z0-9._-]*, at most 128 bytes)"
            ),
        ));
    }
    let image = |s: &Spanned<String>, key: &str| -> Result<(ImageRef, usize), SpecError> {
        let r: ImageRef = s
            .get_ref()
            .parse()
            .map_err(|e: crate::oci::OciError| err(Some(s.span()), key, e.to_string()))?;
        Ok((anchor(r, dir), line(&s.span())))
    };
    let os = image(&raw.os, "os")?;
    let repo = match &raw.repo {
        Some(r) => {
            let probe = format!("{}/{}:{}", r.get_ref(), hostname, version);
            match probe.parse::<ImageRef>() {
                Ok(ImageRef::Registry(_)) => Some((r.get_ref().clone(), line(&r.span()))),
                _ => {
                    return Err(err(
                        Some(r.span()),
                        "repo",
                        format!(
                            "{:?} is not a registry repository (registry.example/org)",
                            r.get_ref()
                        ),
                    ))
                }
            }
        }
        None => None,
    };
    let userland = match &raw.userland {
        Some(u) => userland_lines(src, u).map_err(|(l, m)| SpecError {
            path: path.to_path_buf(),
            line: l,
            key: "userland".into(),
            message: m,
        })?,
        None => Vec::new(),
    };
    let init = match &raw.init {
        Some(i) => {
            let v = i.get_ref();
            if !v.starts_with('/') || v.contains('\0') || v.split('/').any(|c| c == "..") {
                return Err(err(
                    Some(i.span()),
                    "init",
                    format!("{v:?} is not an absolute path in the image"),
                ));
            }
            Some((v.clone(), line(&i.span())))
        }
        None => None,
    };
    let mut components = Vec::new();
    for (n, c) in raw.components.iter().enumerate() {
        let key = format!("components[{n}]");
        let image = image(&c.image, &format!("{key}.image"))?;
        let mut systemd = Vec::new();
        for u in &c.systemd {
            if !valid_unit(u.get_ref()) {
                return Err(err(
                    Some(u.span()),
                    &format!("{key}.systemd"),
                    format!(
                        "{:?} is not a unit name (name.service, name.timer, name.socket, …)",
                        u.get_ref()
                    ),
                ));
            }
            systemd.push((u.get_ref().clone(), line(&u.span())));
        }
        components.push(Component { image, systemd });
    }
    let mut authorized_keys = Vec::new();
    if let Some(ssh) = &raw.ssh {
        for (n, k) in ssh.authorized_keys.iter().enumerate() {
            let v = k.get_ref().trim();
            let kind = v.split_whitespace().next().unwrap_or("");
            if v.contains('\n')
                || !(kind.starts_with("ssh-")
                    || kind.starts_with("ecdsa-")
                    || kind.starts_with("sk-"))
            {
                return Err(err(
                    Some(k.span()),
                    &format!("ssh.authorized_keys[{n}]"),
                    "not one OpenSSH public key line (ssh-ed25519 AAAA… comment)".into(),
                ));
            }
            authorized_keys.push(v.to_string());
        }
    }
    let netplan = match &raw.netplan {
        Some(np) => {
            let mut out = Vec::new();
            for (n, i) in np.get_ref().interfaces.iter().enumerate() {
                let key = format!("netplan.interfaces[{n}]");
                let at = Some(i.span());
                let i = i.get_ref();
                if i.name.is_empty()
                    || i.name.len() > 15
                    || !i
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.*:".contains(&b))
                {
                    return Err(err(
                        at,
                        &format!("{key}.name"),
                        format!("{:?} is not an interface name", i.name),
                    ));
                }
                for a in &i.addresses {
                    if !valid_cidr(a) {
                        return Err(err(at, &format!("{key}.addresses"), format!("{a:?} is not an address with a prefix (10.0.0.5/24, 2001:db8::5/64)")));
                    }
                }
                if let Some(g) = &i.gateway {
                    if g.parse::<IpAddr>().is_err() {
                        return Err(err(
                            at,
                            &format!("{key}.gateway"),
                            format!("{g:?} is not an IP address"),
                        ));
                    }
                    if i.addresses.is_empty() {
                        return Err(err(at, &format!("{key}.gateway"), "a gateway needs static addresses (without them the interface uses DHCP)".into()));
                    }
                }
                out.push(Interface {
                    name: i.name.clone(),
                    addresses: i.addresses.clone(),
                    gateway: i.gateway.clone(),
                });
            }
            if out.is_empty() {
                return Err(err(
                    Some(np.span()),
                    "netplan.interfaces",
                    "names no interface".into(),
                ));
            }
            Some((out, line(&np.span())))
        }
        None => None,
    };
    let resolvconf = match &raw.resolvconf {
        Some(r) => {
            let at = Some(r.span());
            let v = r.get_ref();
            for s in &v.nameservers {
                if s.parse::<IpAddr>().is_err() {
                    return Err(err(
                        at,
                        "resolvconf.nameservers",
                        format!("{s:?} is not an IP address"),
                    ));
                }
            }
            for s in &v.search {
                if !valid_hostname(s) {
                    return Err(err(
                        at,
                        "resolvconf.search",
                        format!("{s:?} is not a domain name"),
                    ));
                }
            }
            if v.nameservers.is_empty() && v.search.is_empty() {
                return Err(err(
                    at,
                    "resolvconf",
                    "names neither nameservers nor search domains".into(),
                ));
            }
            Some((
                Resolvconf {
                    nameservers: v.nameservers.clone(),
                    search: v.search.clone(),
                },
                line(&r.span()),
            ))
        }
        None => None,
    };
    Ok(Spec {
        path: path.to_path_buf(),
        hostname,
        version,
        os,
        repo,
        userland,
        init,
        components,
        authorized_keys,
        netplan,
        resolvconf,
    })
}

/// Instructions `userland` may hold: those that change the tree or the build's
/// environment. `FROM` (the base is `os`), `ENTRYPOINT`/`CMD` (an OS image boots its init)
/// and the rest are refused.
const USERLAND: &[&str] = &[
    "RUN", "COPY", "ADD", "ENV", "WORKDIR", "USER", "ARG", "LABEL", "SHELL",
];

/// `userland`'s instructions (continuation lines joined as the engine joins them), each
/// with the server.toml line where it starts; `(line, why)` when one is not allowed.
fn userland_lines(src: &str, u: &Spanned<String>) -> Result<Vec<(String, usize)>, (usize, String)> {
    // Lines come from the source text: TOML itself joins a basic string's lines that end
    // in `\`, so the value may have fewer lines than the file. The k-th instruction of the
    // value starts on the k-th instruction line of the source.
    let span = u.span();
    let first = line_of(src, span.start);
    let starts: Vec<usize> = instructions(&src[span])
        .into_iter()
        .map(|(_, n)| first + n)
        .collect();
    let mut out = Vec::new();
    for (k, (text, _)) in instructions(u.get_ref()).into_iter().enumerate() {
        let at = starts.get(k).copied().unwrap_or(first);
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if text.trim_end().ends_with('\\') {
            return Err((
                at,
                "the last instruction ends with a line continuation".into(),
            ));
        }
        if !USERLAND.contains(&word.as_str()) {
            return Err((
                at,
                format!(
                    "`{word}` is not allowed here (userland takes {}; the base is `os`)",
                    USERLAND.join(", ")
                ),
            ));
        }
        out.push((text, at));
    }
    Ok(out)
}

/// Containerfile instructions of `text`: continuation lines joined, comments and blank
/// lines skipped; each with the 0-based line it starts on.
fn instructions(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for (n, l) in text.lines().enumerate() {
        let t = l.trim().trim_start_matches(['"', '\'']);
        if current.is_none() && (t.trim().is_empty() || t.starts_with('#')) {
            continue;
        }
        let (mut joined, start) = current.take().unwrap_or((String::new(), n));
        let l = if joined.is_empty() { t } else { l };
        joined.push_str(l);
        if l.trim_end().ends_with('\\') {
            joined.push('\n');
            current = Some((joined, start));
        } else {
            out.push((joined, start));
        }
    }
    out.extend(current);
    out
}

/// A layout or archive path relative to server.toml's directory.
fn anchor(r: ImageRef, dir: &Path) -> ImageRef {
    match r {
        ImageRef::Layout { path, tag } if path.is_relative() => ImageRef::Layout {
            path: dir.join(path),
            tag,
        },
        ImageRef::DockerArchive { path } if path.is_relative() => ImageRef::DockerArchive {
            path: dir.join(path),
        },
        r => r,
    }
}

/// RFC 1123 host (or domain) name.
fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A systemd unit name with a known suffix.
fn valid_unit(s: &str) -> bool {
    const KINDS: &[&str] = &[
        ".service",
        ".socket",
        ".timer",
        ".path",
        ".mount",
        ".target",
        ".automount",
        ".swap",
    ];
    KINDS.iter().any(|k| s.len() > k.len() && s.ends_with(k))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:\\".contains(&b))
        && !s.starts_with('.')
}

/// `ADDRESS/PREFIX` with a prefix the address family allows.
fn valid_cidr(s: &str) -> bool {
    let Some((a, p)) = s.split_once('/') else {
        return false;
    };
    match (a.parse::<IpAddr>(), p.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
        (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"hostname = "example"
version = "6"
os = "oci:base-layout:bookworm"
repo = "registry.example/org"
userland = """
RUN apt-get install -y \
    openssh-server
# a comment
COPY motd /etc/motd
"""
init = "/lib/systemd/systemd"
[[components]]
image = "registry.example/org/agent:3"
systemd = ["agent.service"]
[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3Nza ops"]
[netplan]
[[netplan.interfaces]]
name = "eth0"
addresses = ["10.0.0.5/24"]
gateway = "10.0.0.1"
[resolvconf]
nameservers = ["192.0.2.53"]
search = ["example"]
"#;

    fn p(src: &str) -> Result<Spec, SpecError> {
        parse(Path::new("/srv/x/server.toml"), src)
    }

    #[test]
    fn reads_terra_os_server_toml() {
        let s = p(GOOD).unwrap();
        assert_eq!(s.hostname, "example");
        assert_eq!(
            s.os.0,
            ImageRef::Layout {
                path: "/srv/x/base-layout".into(),
                tag: Some("bookworm".into())
            }
        );
        assert_eq!(s.os.1, 3);
        assert_eq!(
            s.userland,
            vec![
                ("RUN apt-get install -y openssh-server".to_string(), 6),
                ("COPY motd /etc/motd".to_string(), 9)
            ]
        );
        assert_eq!(
            s.components[0].systemd,
            vec![("agent.service".to_string(), 14)]
        );
        assert_eq!(s.init, Some(("/lib/systemd/systemd".into(), 11)));
        let (ifs, l) = s.netplan.unwrap();
        assert_eq!(l, 17);
        assert_eq!(ifs[0].gateway.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = p(&GOOD.replace("init =", "colour = \"red\"\ninit =")).unwrap_err();
        assert_eq!(e.line, 11, "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
        assert!(e.to_string().starts_with("/srv/x/server.toml:11:"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_line() {
        for (from, to, key, line) in [
            (
                "hostname = \"example\"",
                "hostname = \"ex ample\"",
                "hostname",
                1,
            ),
            ("version = \"6\"", "version = \".6\"", "version", 2),
            ("COPY motd", "FROM busybox\nCOPY motd", "userland", 9),
            (
                "\"agent.service\"",
                "\"agent\"",
                "components[0].systemd",
                14,
            ),
            (
                "10.0.0.5/24",
                "10.0.0.5",
                "netplan.interfaces[0].addresses",
                18,
            ),
            ("192.0.2.53", "resolver", "resolvconf.nameservers", 22),
            ("/lib/systemd/systemd", "lib/systemd/systemd", "init", 11),
            (
                "ssh-ed25519 AAAAC3Nza ops",
                "AAAAC3Nza ops",
                "ssh.authorized_keys[0]",
                16,
            ),
        ] {
            let src = GOOD.replace(from, to);
            assert_ne!(src, GOOD);
            let e = p(&src).unwrap_err();
            assert_eq!((e.key.as_str(), e.line), (key, line), "{e}");
        }
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = p("hostname = \"a\"\nversion = \"1\"\n").unwrap_err();
        assert!(e.to_string().contains("os"), "{e}");
    }
}
