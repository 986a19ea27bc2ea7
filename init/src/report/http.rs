//! A node's requests to the fleet controller, as bytes: one HTTP/1.1 `POST` of JSON to
//! `<url>/v1/reports` (a report), or a `GET` of `<url>/v1/target` (which image the
//! controller names for the node), each with the node's token as a bearer credential; and
//! the status and body of the answer. No I/O here ([`super::send`] does it), so both are
//! tested on captured bytes and by property tests.

use std::fmt;

use crate::config::controller::ControllerUrl;

/// Where reports go, under the controller's URL.
pub const REPORTS_PATH: &str = "/v1/reports";

/// The largest report body sent: a boot report is a few hundred bytes, and the controller
/// refuses more than this too.
pub const MAX_BODY: usize = 8 * 1024;

/// The longest token accepted.
const MAX_TOKEN: usize = 256;

/// Why a request cannot be made or an answer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The token is empty, too long, or holds what a header cannot (its value is never
    /// shown).
    Token,
    /// The body is larger than [`MAX_BODY`].
    TooLarge(usize),
    /// The answer does not start with an HTTP/1.x status line (its first bytes, printable).
    Answer(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Token => f.write_str(
                "the controller token is empty, longer than 256 bytes, or not printable ASCII \
                 without spaces",
            ),
            WireError::TooLarge(n) => write!(f, "the report is {n} bytes, over {MAX_BODY}"),
            WireError::Answer(s) => write!(f, "not an HTTP answer: {s:?}"),
        }
    }
}

impl std::error::Error for WireError {}

/// The request bytes: `POST <path>/v1/reports`, `Host`, `Authorization: Bearer`, JSON of
/// `body`'s length, `Connection: close`.
pub fn request(url: &ControllerUrl, token: &str, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let token = checked(token)?;
    if body.len() > MAX_BODY {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut out = format!(
        "POST {}{REPORTS_PATH} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Ok(out)
}

/// The request bytes of `GET <path><what>` (`what` a path under the controller's URL, such
/// as [`super::target::TARGET_PATH`]), with the same headers as a report but no body.
pub fn get(url: &ControllerUrl, what: &str, token: &str) -> Result<Vec<u8>, WireError> {
    let token = checked(token)?;
    Ok(format!(
        "GET {}{what} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
    )
    .into_bytes())
}

/// The token trimmed, or [`WireError::Token`] when a header cannot carry it.
fn checked(token: &str) -> Result<&str, WireError> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WireError::Token);
    }
    Ok(token)
}

/// The body of a whole answer (`Connection: close`, so everything after the headers;
/// cut to its `Content-Length` when it gives one). None when the headers do not end.
pub fn body(answer: &[u8]) -> Option<&[u8]> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, rest) = (&answer[..end], &answer[end + 4..]);
    let length = std::str::from_utf8(head).ok().and_then(|h| {
        h.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
    });
    Some(match length {
        Some(n) if n <= rest.len() => &rest[..n],
        _ => rest,
    })
}

/// The status code of an answer's first line (`HTTP/1.1 204 No Content`).
pub fn status(answer: &[u8]) -> Result<u16, WireError> {
    let shown = || {
        WireError::Answer(
            answer
                .iter()
                .take(40)
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect(),
        )
    };
    let line = answer.split(|&b| b == b'\n').next().ok_or_else(shown)?;
    let line = std::str::from_utf8(line).map_err(|_| shown())?.trim_end();
    let mut words = line.split(' ');
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return Err(shown());
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || code.len() != 3 {
        return Err(shown());
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(s: &str) -> ControllerUrl {
        ControllerUrl::parse(s).unwrap()
    }

    #[test]
    fn a_report_is_one_post_with_the_token_as_bearer() {
        let r = request(
            &url("http://10.0.2.2:8080/terra/"),
            "tok-123\n",
            b"{\"a\":1}",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /terra/v1/reports HTTP/1.1\r\nHost: 10.0.2.2:8080\r\n\
             Authorization: Bearer tok-123\r\nContent-Type: application/json\r\n\
             Content-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}"
        );
        let r = request(&url("http://ctl"), "t", b"").unwrap();
        assert!(r.starts_with(b"POST /v1/reports HTTP/1.1\r\nHost: ctl\r\n"));
    }

    #[test]
    fn tokens_that_would_break_the_header_and_big_bodies_are_refused() {
        let u = url("http://ctl");
        for bad in ["", "  ", "a b", "a\r\nX-Evil: 1", "tök"] {
            assert_eq!(request(&u, bad, b"{}"), Err(WireError::Token), "{bad:?}");
        }
        assert_eq!(request(&u, &"t".repeat(257), b"{}"), Err(WireError::Token));
        assert_eq!(
            request(&u, "t", &vec![b' '; MAX_BODY + 1]),
            Err(WireError::TooLarge(MAX_BODY + 1))
        );
        // The error never carries the token.
        assert!(!WireError::Token.to_string().contains("a b"));
    }

    #[test]
    fn a_target_request_is_one_get_with_the_token_as_bearer() {
        let r = get(&url("http://10.0.2.2:8080/terra"), "/v1/target", "tok").unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET /terra/v1/target HTTP/1.1\r\nHost: 10.0.2.2:8080\r\n\
             Authorization: Bearer tok\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            get(&url("http://ctl"), "/v1/target", "a b"),
            Err(WireError::Token)
        );
    }

    #[test]
    fn answers_give_their_body() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: x\r\n\r\n{}junk";
        assert_eq!(body(a), Some(&b"{}"[..]));
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}"),
            Some(&b"{\"a\":1}"[..])
        );
        // A length beyond what came: what came.
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nab"),
            Some(&b"ab"[..])
        );
        assert_eq!(body(b"HTTP/1.1 200 OK\r\nContent-Length: 2"), None);
    }

    #[test]
    fn answers_give_their_status() {
        assert_eq!(status(b"HTTP/1.1 204 No Content\r\n\r\n"), Ok(204));
        assert_eq!(status(b"HTTP/1.0 403 Forbidden\r\nx"), Ok(403));
        assert_eq!(status(b"HTTP/1.1 200\r\n"), Ok(200));
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 2000 x\r\n",
            b"HTTP/1.1 abc x\r\n",
            b"HTTP/1.1 099 x\r\n",
        ] {
            assert!(matches!(status(bad), Err(WireError::Answer(_))), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_answer_bytes_give_a_status_or_an_error(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(c) = status(&b) {
                prop_assert!((100..600).contains(&c));
            }
        }

        #[test]
        fn any_answer_bytes_give_a_body_within_them_or_none(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(found) = body(&b) {
                prop_assert!(found.len() <= b.len());
            }
        }

        #[test]
        fn accepted_tokens_keep_the_request_to_its_headers(t in "[ -~\r\n\t]{0,40}") {
            if let Ok(r) = request(&url("http://ctl"), &t, b"{}") {
                let text = String::from_utf8(r).unwrap();
                prop_assert_eq!(text.matches("\r\n").count(), 7);
            }
        }
    }
}
