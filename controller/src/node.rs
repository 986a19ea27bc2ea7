//! A node as `terra node add` gives it: node.toml checked for what the controller needs
//! (hostname, MAC, image, optional initiator and CHAP), its iSCSI names, and the node.toml
//! the node boots with (its per-node initramfs carries it, never the command line).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use terra_builder::bootargs::Mac;
use terra_init::config::NodeConfig;

/// The IQN prefix of the names the controller makes.
pub const IQN_PREFIX: &str = "iqn.2024-01.org.terra-os";

/// Why a node.toml cannot be added; each names the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file (or `request` for an API body).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for SpecError {}

/// CHAP credentials of one node's target: the node logs in as `user`; with `mutual_*` the
/// target proves itself too.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chap {
    /// The name the node logs in with.
    pub user: String,
    /// Its secret.
    pub secret: String,
    /// The name the target answers with (mutual CHAP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_user: Option<String>,
    /// The target's secret (mutual CHAP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_secret: Option<String>,
}

impl fmt::Debug for Chap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("secret", &"***")
            .field("mutual_user", &self.mutual_user)
            .finish()
    }
}

/// What the controller takes from a node.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The hostname: the node's key, and part of its file and IQN names.
    pub hostname: String,
    /// Its MAC.
    pub mac: Mac,
    /// The image reference.
    pub image: String,
    /// Its initiator IQN (node.toml's `[iscsi] initiator`, or one made from the hostname).
    pub initiator: String,
    /// CHAP credentials from its `[[iscsi.targets]]` entry, if it has one with `chap_user`.
    pub chap: Option<Chap>,
}

/// Whether `name` is a hostname label the controller can use in file names and IQNs:
/// RFC 1123 (letters, digits, inner hyphens), at most 63 characters.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `iqn` looks like an iSCSI qualified name (RFC 3720 §3.2.6.3.1).
fn valid_iqn(iqn: &str) -> bool {
    iqn.starts_with("iqn.")
        && iqn.len() <= 223
        && iqn
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:".contains(&b))
}

impl NodeSpec {
    /// Checks node.toml `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<NodeSpec, SpecError> {
        let err = |message: String| SpecError {
            file: file.to_string(),
            message,
        };
        let (node, hostname) = named(text, file)?;
        let mac_text = node.mac.clone().ok_or_else(|| {
            err("`mac` is required: the node is found by it when it boots".into())
        })?;
        let mac = Mac::parse(&mac_text)
            .ok_or_else(|| err(format!("mac = {mac_text:?}: not a MAC address")))?;
        let image = node
            .image
            .clone()
            .ok_or_else(|| err("`image` is required: the node's root comes from it".into()))?;
        let initiator = match &node.iscsi.initiator {
            Some(i) if valid_iqn(i) => i.clone(),
            Some(i) => {
                return Err(err(format!(
                    "[iscsi] initiator = {i:?}: not an iqn. name (lowercase)"
                )))
            }
            None => format!("{IQN_PREFIX}:node.{hostname}"),
        };
        let chap = match node.iscsi.targets.as_slice() {
            [] => None,
            [t] => match (&t.chap_user, &t.chap_secret) {
                (Some(user), Some(secret)) => Some(Chap {
                    user: user.clone(),
                    secret: String::from_utf8_lossy(secret.expose()).into_owned(),
                    mutual_user: t.mutual_user.clone(),
                    mutual_secret: t
                        .mutual_secret
                        .as_ref()
                        .map(|s| String::from_utf8_lossy(s.expose()).into_owned()),
                }),
                (None, None) => None,
                _ => {
                    return Err(err(
                        "[[iscsi.targets]]: chap_user and chap_secret go together".into(),
                    ))
                }
            },
            _ => {
                return Err(err(
                    "[[iscsi.targets]]: the controller serves one target per node; give at \
                     most one entry (for its CHAP credentials)"
                        .into(),
                ))
            }
        };
        if let Some(c) = &chap {
            check_chap(c).map_err(err)?;
        }
        Ok(NodeSpec {
            hostname,
            mac,
            image,
            initiator,
            chap,
        })
    }

    /// The node's target IQN.
    pub fn target(&self) -> String {
        target_iqn(&self.hostname)
    }
}

/// The hostname of a node with its own disk (`node add --disk-node`): its node.toml (the
/// one `terra install` keeps on the disk) must name it; nothing else is needed, since the
/// controller makes no LUN, target or boot script for it.
pub fn disk_node_hostname(text: &str, file: &str) -> Result<String, SpecError> {
    named(text, file).map(|(_, hostname)| hostname)
}

/// node.toml `text` parsed, and the hostname it must name (a label the controller can use
/// in file names and IQNs); `file` names it in errors.
fn named(text: &str, file: &str) -> Result<(NodeConfig, String), SpecError> {
    let err = |message: String| SpecError {
        file: file.to_string(),
        message,
    };
    let node = NodeConfig::parse(text, Path::new(file)).map_err(|e| err(e.to_string()))?;
    let hostname = node
        .hostname
        .clone()
        .ok_or_else(|| err("`hostname` is required: it names the node".into()))?;
    if !valid_hostname(&hostname) {
        return Err(err(format!(
            "hostname = {hostname:?}: not a hostname label (letters, digits and inner \
             hyphens, at most 63)"
        )));
    }
    Ok((node, hostname))
}

/// What a node with its own disk stores in the columns only diskless nodes use (MAC,
/// initiator, target: unique, and never a real MAC or IQN).
pub fn disk_placeholder(hostname: &str) -> String {
    format!("disk:{hostname}")
}

/// The target IQN of node `hostname`.
pub fn target_iqn(hostname: &str) -> String {
    format!("{IQN_PREFIX}:target.{hostname}")
}

/// tgtd and the node's login both take CHAP secrets of 12 to 16 characters by RFC 3720's
/// advice (tgtd refuses none, some initiators refuse short ones); the controller accepts
/// 12 and more, printable, without spaces.
fn check_chap(c: &Chap) -> Result<(), String> {
    let ok = |s: &str| s.len() >= 12 && s.bytes().all(|b| b.is_ascii_graphic());
    if !ok(&c.secret) {
        return Err(format!(
            "[[iscsi.targets]] chap_secret of {}: at least 12 printable characters",
            c.user
        ));
    }
    match (&c.mutual_user, &c.mutual_secret) {
        (Some(_), Some(s)) if !ok(s) => {
            Err("[[iscsi.targets]] mutual_secret: at least 12 printable characters".to_string())
        }
        (Some(_), Some(_)) | (None, None) => Ok(()),
        _ => Err("[[iscsi.targets]]: mutual_user and mutual_secret go together".to_string()),
    }
}

/// Random CHAP credentials for a node (`serve --chap`): 24 characters from the kernel's
/// random source.
pub fn generate_chap(hostname: &str) -> Result<Chap, std::io::Error> {
    Ok(Chap {
        user: format!("node.{hostname}"),
        secret: random_token(24)?,
        mutual_user: Some(format!("target.{hostname}")),
        mutual_secret: Some(random_token(24)?),
    })
}

/// `n` random characters from [A-Za-z0-9].
pub fn random_token(n: usize) -> Result<String, std::io::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(std::io::Error::other)?;
        // Rejection sampling keeps the characters uniform.
        for b in buf {
            if (b as usize) < ALPHABET.len() * 4 && out.len() < n {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// TOML's basic string for `s`.
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The node.toml the node boots with: its name and MAC, its `[network]` and `[boot]` as
/// given, the controller's `[iscsi]` (its initiator, its target on `portal`, LUN 1, CHAP)
/// and, with `report_url`, `[controller]` (its token travels beside it, in its own file).
pub fn boot_config(
    given: &str,
    hostname: &str,
    mac: &str,
    initiator: &str,
    portal: &str,
    chap: Option<&Chap>,
    report_url: Option<&str>,
) -> String {
    let mut out = format!(
        "# written by the Terra controller for node {hostname}\nhostname = {}\nmac = {}\n",
        toml_str(hostname),
        toml_str(mac)
    );
    // The tables the node's own boot reads are kept; the install-time ones (image, groups)
    // and the iSCSI table (the controller's) are not.
    if let Ok(table) = given.parse::<toml::Table>() {
        for key in ["network", "boot", "signature"] {
            if let Some(v) = table.get(key) {
                let mut t = toml::Table::new();
                t.insert(key.to_string(), v.clone());
                out.push_str(&toml::to_string(&t).unwrap_or_default());
            }
        }
    }
    out.push_str(&format!(
        "[iscsi]\ninitiator = {}\n[[iscsi.targets]]\nportal = {}\niqn = {}\nlun = 1\n",
        toml_str(initiator),
        toml_str(portal),
        toml_str(&target_iqn(hostname))
    ));
    if let Some(c) = chap {
        out.push_str(&format!(
            "chap_user = {}\nchap_secret = {}\n",
            toml_str(&c.user),
            toml_str(&c.secret)
        ));
        if let (Some(u), Some(s)) = (&c.mutual_user, &c.mutual_secret) {
            out.push_str(&format!(
                "mutual_user = {}\nmutual_secret = {}\n",
                toml_str(u),
                toml_str(s)
            ));
        }
    }
    if let Some(url) = report_url {
        out.push_str(&format!("[controller]\nurl = {}\n", toml_str(url)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "hostname = \"n1\"\nmac = \"52-54-00-AA-00-01\"\nimage = \"oci:/x:v1\"\n";

    #[test]
    fn a_node_toml_gives_names_and_iqns() {
        let s = NodeSpec::parse(NODE, "n1.toml").unwrap();
        assert_eq!(s.hostname, "n1");
        assert_eq!(s.mac.to_string(), "52:54:00:aa:00:01");
        assert_eq!(s.initiator, "iqn.2024-01.org.terra-os:node.n1");
        assert_eq!(s.target(), "iqn.2024-01.org.terra-os:target.n1");
        assert_eq!(s.chap, None);
    }

    #[test]
    fn bad_node_tomls_name_the_file_and_key() {
        for (text, want) in [
            (
                "mac = \"52:54:00:00:00:01\"\nimage = \"x\"\n",
                "`hostname` is required",
            ),
            (
                "hostname = \"a/b\"\nmac = \"52:54:00:00:00:01\"\nimage = \"x\"\n",
                "not a hostname",
            ),
            (
                "hostname = \"a\"\nmac = \"52:54\"\nimage = \"x\"\n",
                "not a MAC",
            ),
            (
                "hostname = \"a\"\nmac = \"52:54:00:00:00:01\"\n",
                "`image` is required",
            ),
            ("hostname = \"a\"\nbogus = 1\n", "bogus"),
            (
                "hostname = \"a\"\nmac = \"52:54:00:00:00:01\"\nimage = \"x\"\n[iscsi]\n\
                 initiator = \"Node A\"\n",
                "not an iqn.",
            ),
            (
                "hostname = \"a\"\nmac = \"52:54:00:00:00:01\"\nimage = \"x\"\n\
                 [[iscsi.targets]]\nportal = \"p\"\niqn = \"i\"\nchap_user = \"u\"\n\
                 chap_secret = \"short\"\n",
                "at least 12",
            ),
        ] {
            let e = NodeSpec::parse(text, "bad.toml").unwrap_err();
            assert_eq!(e.file, "bad.toml");
            assert!(e.to_string().contains(want), "{e} (want {want})");
            // A secret never shows in the message.
            assert!(!e.to_string().contains("short"), "{e}");
        }
    }

    #[test]
    fn the_boot_config_parses_back_with_the_targets_chap() {
        let given = format!("{NODE}[boot]\ntimeout = 30\n[[groups]]\nlabel = \"os\"\n");
        let chap = generate_chap("n1").unwrap();
        let text = boot_config(
            &given,
            "n1",
            "52:54:00:aa:00:01",
            "iqn.2024-01.org.terra-os:node.n1",
            "10.0.2.2:3260",
            Some(&chap),
            Some("http://10.0.2.2:8080"),
        );
        let back = NodeConfig::parse(&text, Path::new("boot.toml")).unwrap();
        assert_eq!(back.hostname.as_deref(), Some("n1"));
        assert_eq!(back.boot.timeout, Some(30));
        assert!(back.groups.is_empty() && back.image.is_none());
        let t = &back.iscsi.targets[0];
        assert_eq!(t.portal, "10.0.2.2:3260");
        assert_eq!(t.iqn, "iqn.2024-01.org.terra-os:target.n1");
        assert_eq!(
            t.chap_secret.as_ref().unwrap().expose(),
            chap.secret.as_bytes()
        );
        assert!(!format!("{chap:?}").contains(&chap.secret));
        assert_eq!(back.controller.url.as_deref(), Some("http://10.0.2.2:8080"));
        assert_eq!(back.controller.token_file, None);
    }

    #[test]
    fn tokens_are_random_alphanumerics() {
        let a = random_token(32).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_token(32).unwrap());
    }
}
