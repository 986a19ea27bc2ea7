//! `[controller]`: the fleet controller a node reports its boots to. Plain data and the
//! URL's form; what is sent, and when, belongs to the report code (stage0 on the boot path,
//! `bless` in the booted system).
//!
//! The URL is plain HTTP: stage0 carries no TLS, and the boot network is the trust boundary
//! PXE already uses. The node's token, which authenticates it to the controller, is in a
//! file of its own (never in node.toml, never on the kernel command line).

use std::fmt;

use serde::Deserialize;

/// `[controller]` of node.toml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// The controller's base URL, `http://HOST[:PORT][/PATH]`; the boot report goes to
    /// `<url>/v1/reports`.
    pub url: Option<String>,
    /// The file holding the node's token, relative to node.toml's directory (default
    /// [`DEFAULT_TOKEN_FILE`]); it should be readable by root only.
    pub token_file: Option<String>,
}

/// The token file when `[controller] token_file` is not set.
pub const DEFAULT_TOKEN_FILE: &str = "controller.token";

/// The longest URL accepted (an HTTP request line must stay small).
const MAX_URL: usize = 512;

/// A controller URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrl {
    /// Host name or address as written (IPv6 without its brackets).
    pub host: String,
    /// TCP port (80 unless given).
    pub port: u16,
    /// Path without a trailing `/` (empty for the root).
    pub path: String,
}

/// Why a controller URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not `http://` (`https://` included: stage0 has no TLS).
    Scheme,
    /// No host, or characters a host cannot hold.
    Host,
    /// A port that is not 1–65535.
    Port,
    /// Characters a path may not carry in a request line, a query or a fragment.
    Path,
    /// Longer than [`MAX_URL`].
    TooLong,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => {
                "not an http:// URL (reports go over plain HTTP on the boot network: stage0 \
                 carries no TLS; the node's token authenticates it)"
            }
            UrlError::Host => "no host, or a host with characters a host name cannot hold",
            UrlError::Port => "the port is not a number from 1 to 65535",
            UrlError::Path => "the path holds spaces, control characters, `?` or `#`",
            UrlError::TooLong => "longer than 512 bytes",
        })
    }
}

impl std::error::Error for UrlError {}

impl ControllerUrl {
    /// Parses `http://HOST[:PORT][/PATH]`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.len() > MAX_URL {
            return Err(UrlError::TooLong);
        }
        let rest = url.strip_prefix("http://").ok_or(UrlError::Scheme)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Host);
            }
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or(UrlError::Port)?)),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || ".-_:".contains(c);
        if host.is_empty() || !host.chars().all(name_char) {
            return Err(UrlError::Host);
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(UrlError::Port)?,
        };
        if path
            .chars()
            .any(|c| c.is_ascii_control() || c.is_whitespace() || c == '?' || c == '#')
            || !path.is_ascii()
        {
            return Err(UrlError::Path);
        }
        Ok(ControllerUrl {
            host: host.to_string(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The `Host` header's value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls_take_apart_into_host_port_and_path() {
        let u = ControllerUrl::parse("http://10.0.2.2:8080/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.2.2", 8080, "")
        );
        assert_eq!(u.host_header(), "10.0.2.2:8080");
        let u = ControllerUrl::parse("http://ctl.example/terra").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/terra"));
        assert_eq!(u.host_header(), "ctl.example");
        let u = ControllerUrl::parse("http://[fd00::1]:81").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 81));
        assert_eq!(u.host_header(), "[fd00::1]:81");
    }

    #[test]
    fn what_stage0_cannot_or_must_not_send_to_is_refused() {
        for (url, want) in [
            ("https://ctl.example", UrlError::Scheme),
            ("ctl.example:8080", UrlError::Scheme),
            ("http://", UrlError::Host),
            ("http://:8080/", UrlError::Host),
            ("http://a b/", UrlError::Host),
            ("http://[nothex]/", UrlError::Host),
            ("http://ctl:0/", UrlError::Port),
            ("http://ctl:70000/", UrlError::Port),
            ("http://ctl:http/", UrlError::Port),
            ("http://ctl/a b", UrlError::Path),
            ("http://ctl/r?token=x", UrlError::Path),
            ("http://ctl/\r\nX-Evil: 1", UrlError::Path),
        ] {
            assert_eq!(ControllerUrl::parse(url), Err(want.clone()), "{url}");
        }
        assert_eq!(
            ControllerUrl::parse(&format!("http://h/{}", "a".repeat(600))),
            Err(UrlError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in "\\PC{0,80}") {
            let _ = ControllerUrl::parse(&s);
            let _ = ControllerUrl::parse(&format!("http://{s}"));
        }

        #[test]
        fn accepted_urls_never_carry_what_breaks_a_request_line(s in "[ -~\r\n]{0,60}") {
            if let Ok(u) = ControllerUrl::parse(&format!("http://{s}")) {
                for part in [&u.host, &u.path] {
                    prop_assert!(!part.contains([' ', '\r', '\n', '?', '#']));
                }
            }
        }
    }
}
