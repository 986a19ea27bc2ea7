//! Kernel arguments for boot media (ISO, PXE): a node's identity and `[boot]` settings from
//! its node.toml, written as the command-line keys stage0 reads (DESIGN.md §5), so a node
//! boots the same from a shared initramfs as from one that embeds its config.

use std::fmt;
use std::path::{Path, PathBuf};

use terra_init::cmdline;
use terra_init::config::{ConfigError, NodeConfig};

/// A node config and where it came from.
#[derive(Debug, Clone)]
pub struct Node {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub config: NodeConfig,
}

/// Errors turning node configs and user arguments into kernel arguments.
#[derive(Debug)]
pub enum ArgsError {
    /// The node file cannot be read.
    Read { path: PathBuf, err: std::io::Error },
    /// The node file is not a valid node.toml.
    Node(ConfigError),
    /// A node value cannot be written as a kernel argument.
    Value {
        path: PathBuf,
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A user-supplied argument cannot be carried by this boot medium.
    Arg {
        arg: String,
        medium: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Read { path, err } => {
                write!(f, "cannot read node config {}: {err}", path.display())
            }
            ArgsError::Node(e) => write!(f, "{e}"),
            ArgsError::Value {
                path,
                key,
                value,
                reason,
            } => write!(f, "{}: {key} = {value:?}: {reason}", path.display()),
            ArgsError::Arg {
                arg,
                medium,
                reason,
            } => write!(f, "kernel argument {arg:?} cannot go into {medium}: {reason}"),
        }
    }
}

impl std::error::Error for ArgsError {}

impl Node {
    /// Reads and validates a node.toml; unlike stage0, a missing file is an error.
    pub fn load(path: &Path) -> Result<Self, ArgsError> {
        let text = std::fs::read_to_string(path).map_err(|err| ArgsError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let config = NodeConfig::parse(&text, path).map_err(ArgsError::Node)?;
        Ok(Node {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The node's kernel arguments: `hostname=` and the `[boot]` table as `version=`,
    /// `root=`, `init=`, `terra.timeout=`, `terra.rescue=`, `terra.modules=`.
    pub fn kernel_args(&self) -> Result<Vec<String>, ArgsError> {
        let c = &self.config;
        let mut args = Vec::new();
        let mut push = |key: &'static str, arg: &'static str, value: &str| {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(ArgsError::Value {
                    path: self.path.clone(),
                    key,
                    value: value.to_string(),
                    reason: "empty, or has spaces or quotes, which a kernel argument cannot carry",
                });
            }
            args.push(format!("{arg}={value}"));
            Ok(())
        };
        if let Some(h) = &c.hostname {
            if !valid_hostname(h) {
                return Err(ArgsError::Value {
                    path: self.path.clone(),
                    key: "hostname",
                    value: h.clone(),
                    reason: "expected letters, digits, '-' and '.' (RFC 1123), at most 253",
                });
            }
            push("hostname", "hostname", h)?;
        }
        let b = &c.boot;
        if let Some(v) = &b.version {
            push("boot.version", "version", v)?;
        }
        if let Some(v) = &b.root {
            push("boot.root", "root", v)?;
        }
        if let Some(v) = &b.init {
            push("boot.init", "init", v)?;
        }
        if let Some(v) = b.timeout {
            push("boot.timeout", "terra.timeout", &v.to_string())?;
        }
        if let Some(v) = &b.rescue {
            push("boot.rescue", "terra.rescue", v)?;
        }
        if !b.modules.is_empty() {
            push("boot.modules", "terra.modules", &b.modules.join(","))?;
        }
        Ok(args)
    }

    /// The node's MAC address, normalized, for PXE.
    pub fn mac(&self) -> Result<Mac, ArgsError> {
        let raw = self.config.mac.as_deref().ok_or_else(|| ArgsError::Value {
            path: self.path.clone(),
            key: "mac",
            value: String::new(),
            reason: "missing: a PXE entry is selected by the node's MAC address",
        })?;
        Mac::parse(raw).ok_or_else(|| ArgsError::Value {
            path: self.path.clone(),
            key: "mac",
            value: raw.to_string(),
            reason: "expected six hex octets separated by ':' or '-'",
        })
    }
}

/// RFC 1123 host name (dots allowed for a fully qualified name).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `52:54:00:12:34:56` or `52-54-00-12-34-56` (any case).
    pub fn parse(s: &str) -> Option<Mac> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        for (b, p) in m.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Mac(m))
    }

    /// Lowercase hex joined by `sep`: iPXE's `${mac:hexhyp}` with `-`, pxelinux's file
    /// names after `01-`.
    pub fn joined(&self, sep: &str) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(sep)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined(":"))
    }
}

/// Splits a user's `--cmdline` as the kernel would (double quotes group), giving one word
/// per parameter with its quotes removed.
pub fn split_user_args(line: &str) -> Vec<String> {
    cmdline::split(line)
        .into_iter()
        .map(|p| match p.value {
            Some(v) => format!("{}={v}", p.key),
            None => p.key,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(text: &str) -> Node {
        Node {
            path: PathBuf::from("n1.toml"),
            config: NodeConfig::parse(text, Path::new("n1.toml")).unwrap(),
        }
    }

    #[test]
    fn node_args_from_identity_and_boot_table() {
        let n = node(
            "hostname = \"terra-01\"\nmac = \"52:54:00:AB:CD:EF\"\n[boot]\nversion = \"v6\"\n\
             root = \"LABEL=data\"\ntimeout = 9\nrescue = \"halt\"\nmodules = [\"e1000\", \"nvme\"]\n",
        );
        assert_eq!(
            n.kernel_args().unwrap(),
            [
                "hostname=terra-01",
                "version=v6",
                "root=LABEL=data",
                "terra.timeout=9",
                "terra.rescue=halt",
                "terra.modules=e1000,nvme"
            ]
        );
        assert_eq!(n.mac().unwrap().joined("-"), "52-54-00-ab-cd-ef");
        assert!(node("").kernel_args().unwrap().is_empty());
    }

    #[test]
    fn bad_values_name_file_and_key() {
        let e = node("hostname = \"bad host\"\n").kernel_args().unwrap_err();
        assert!(e.to_string().contains("n1.toml: hostname"), "{e}");
        let e = node("[boot]\ninit = \"/sbin/my init\"\n")
            .kernel_args()
            .unwrap_err();
        assert!(e.to_string().contains("boot.init"), "{e}");
        let e = node("mac = \"52:54:00:12:34\"\n").mac().unwrap_err();
        assert!(e.to_string().contains("n1.toml: mac"), "{e}");
        let e = node("hostname = \"a\"\n").mac().unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn macs_parse_in_both_spellings() {
        let a = Mac::parse("52:54:00:12:34:56").unwrap();
        assert_eq!(Mac::parse("52-54-00-12-34-56"), Some(a));
        assert_eq!(a.to_string(), "52:54:00:12:34:56");
        for bad in ["", "52:54:00:12:34:5", "52:54:00:12:34:56:78", "zz:54:00:12:34:56"] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn user_args_split_like_the_kernel() {
        assert_eq!(
            split_user_args(" console=ttyS0  rootflags=\"a b\" quiet"),
            ["console=ttyS0", "rootflags=a b", "quiet"]
        );
    }
}
