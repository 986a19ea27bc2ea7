//! node.toml's `[iscsi]` table as written: plain data, checked only for its shape, and the
//! [`Secret`] type its CHAP secrets are held in, and the redaction of secrets from
//! messages ([`redact_toml_error`], [`redact_netroot`]). The iscsi phase (`iscsi::target`)
//! validates the entries and merges them with the kernel command line and the iBFT.

use std::fmt;

use serde::Deserialize;

/// `[iscsi]` in node.toml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IscsiSection {
    /// Our iSCSI name.
    pub initiator: Option<String>,
    /// Seconds to wait per target (connect, login, disk).
    pub timeout: Option<u64>,
    /// Targets to log in to.
    #[serde(default)]
    pub targets: Vec<TargetEntry>,
}

/// `[[iscsi.targets]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    /// `host[:port]`, IPv6 in brackets.
    pub portal: String,
    /// The target's iSCSI name.
    pub iqn: String,
    /// The LUN holding the disk (Linux numbering); absent: every LUN the target has.
    pub lun: Option<u64>,
    /// CHAP name we log in with.
    pub chap_user: Option<String>,
    /// CHAP secret we log in with.
    pub chap_secret: Option<Secret>,
    /// Mutual CHAP: the name the target must answer with.
    pub mutual_user: Option<String>,
    /// Mutual CHAP: the secret the target must prove.
    pub mutual_secret: Option<Secret>,
}

/// A CHAP secret. Debug prints `***`; there is no Display; the bytes are overwritten when it
/// is dropped (best effort: copies the allocator made earlier are out of reach).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret's bytes, for computing a CHAP response and nothing else.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            // Every other type: an error that does not repeat the value (serde's default
            // message would quote it, and config errors reach the console).
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(
                    "a CHAP secret must be a string (value not shown)",
                ))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(
                    "a CHAP secret must be a string (value not shown)",
                ))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "a CHAP secret must be a string (value not shown)",
                ))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(
                    "a CHAP secret must be a string (value not shown)",
                ))
            }
        }
        d.deserialize_str(V)
    }
}

/// Removes secrets from a TOML parse error: the parser quotes the offending source line,
/// and a line that sets a CHAP secret must not reach the console.
pub fn redact_toml_error(message: &str) -> String {
    message
        .lines()
        .map(|l| {
            let snippet = l
                .trim_start()
                .split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
            let lower = l.to_ascii_lowercase();
            if snippet && (lower.contains("secret") || lower.contains("token")) {
                let (n, _) = l.split_once('|').unwrap_or((l, ""));
                format!("{n}| (line with a secret not shown)")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A root path (`netroot=`, DHCP option 17) with `user:secret@` replaced, for messages,
/// lease files and the boot report, which anyone on the system may read.
pub fn redact_netroot(v: &str) -> String {
    match v.split_once('@') {
        Some((a, rest)) if a.contains(':') => {
            let scheme = if a.starts_with("iscsi:") {
                "iscsi:"
            } else {
                ""
            };
            format!("{scheme}***@{rest}")
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct W {
        iscsi: IscsiSection,
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<W>("[iscsi]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn toml_errors_do_not_show_secret_lines() {
        let text = "[iscsi]\n[[iscsi.targets]]\nportal = \"1.2.3.4\"\niqn = \"x\"\nchap_user = \"u\"\nchap_secret = 12345678901\n";
        let e = toml::from_str::<W>(text).unwrap_err().to_string();
        let r = redact_toml_error(&e);
        assert!(!r.contains("12345678901"), "{r}");
        assert!(r.contains("not shown"), "{r}");
        let text = "[iscsi]\n[[iscsi.targets]]\nportal = \"1.2.3.4\"\niqn = \"x\"\nchap_secret = \"unterminated\n";
        let e = toml::from_str::<W>(text).unwrap_err().to_string();
        assert!(!redact_toml_error(&e).contains("unterminated"), "{e}");
    }

    #[test]
    fn toml_secrets_of_the_wrong_type_are_not_echoed() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            s: Secret,
        }
        let e = toml::from_str::<T>("s = 98765432\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("value not shown"), "{e}");
        assert!(
            !e.lines()
                .any(|l| l.contains("98765432") && !l.contains('|')),
            "{e}"
        );
        let ok: T = toml::from_str("s = \"x\"").unwrap();
        assert_eq!(format!("{ok:?}"), "T { s: *** }");
    }
}
