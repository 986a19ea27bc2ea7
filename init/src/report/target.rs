//! What the controller names for a node that updates itself (`[update] source =
//! "controller"`): the answer to `GET <url>/v1/target`, as bytes in and a checked value
//! out. No I/O here; `terra update` asks ([`super::outbox::Destination::target`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a node asks, under the controller's URL.
pub const TARGET_PATH: &str = "/v1/target";

/// The largest answer read.
pub const MAX_ANSWER: usize = 4 * 1024;

/// The controller's answer: the image to run, or none (stay on what runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The image the node should run now; None when no rollout moves it.
    #[serde(default)]
    pub target: Option<Target>,
}

/// One image, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The image reference the rollout was started with (its tag may have moved since).
    pub image: String,
    /// The manifest digest the rollout resolved it to: what the node must run.
    pub digest: String,
    /// The rollout that names it.
    pub rollout: String,
}

/// Why an answer is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Larger than [`MAX_ANSWER`].
    TooLarge(usize),
    /// Not JSON of this shape (serde's words).
    Malformed(String),
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    Digest(String),
    /// The image or the rollout is empty, too long or not printable.
    Field(&'static str),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::TooLarge(n) => write!(f, "answer of {n} bytes: larger than {MAX_ANSWER}"),
            TargetError::Malformed(e) => write!(f, "malformed answer: {e}"),
            TargetError::Digest(d) => write!(f, "digest {d:?} is not sha256:<64 hex digits>"),
            TargetError::Field(k) => write!(f, "field {k}: empty, too long or not printable"),
        }
    }
}

impl std::error::Error for TargetError {}

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl Answer {
    /// Reads an answer's body: at most [`MAX_ANSWER`] bytes, this shape, a sha256 digest,
    /// an image and rollout of printable ASCII up to 512 bytes.
    pub fn parse(body: &[u8]) -> Result<Answer, TargetError> {
        if body.len() > MAX_ANSWER {
            return Err(TargetError::TooLarge(body.len()));
        }
        let a: Answer =
            serde_json::from_slice(body).map_err(|e| TargetError::Malformed(e.to_string()))?;
        if let Some(t) = &a.target {
            if !valid_digest(&t.digest) {
                return Err(TargetError::Digest(t.digest.chars().take(80).collect()));
            }
            let fine = |s: &str| {
                !s.is_empty() && s.len() <= 512 && s.bytes().all(|b| b.is_ascii_graphic())
            };
            if !fine(&t.image) {
                return Err(TargetError::Field("image"));
            }
            if !fine(&t.rollout) {
                return Err(TargetError::Field("rollout"));
            }
        }
        Ok(a)
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_answer_names_an_image_or_nothing() {
        let named = Answer {
            target: Some(Target {
                image: "10.0.2.2:5000/os:v3".into(),
                digest: D.into(),
                rollout: "r-1".into(),
            }),
        };
        assert_eq!(Answer::parse(&named.to_bytes()), Ok(named));
        assert_eq!(Answer::parse(b"{\"target\":null}"), Ok(Answer::default()));
        assert_eq!(Answer::parse(b"{}"), Ok(Answer::default()));
    }

    #[test]
    fn bad_answers_are_refused_saying_what() {
        let with = |image: &str, digest: &str, rollout: &str| {
            format!(
                r#"{{"target":{{"image":"{image}","digest":"{digest}","rollout":"{rollout}"}}}}"#
            )
        };
        assert!(matches!(
            Answer::parse(with("os", "sha256:00", "r").as_bytes()),
            Err(TargetError::Digest(_))
        ));
        assert!(matches!(
            Answer::parse(with("os", &D.to_uppercase(), "r").as_bytes()),
            Err(TargetError::Digest(_))
        ));
        assert_eq!(
            Answer::parse(with("", D, "r").as_bytes()),
            Err(TargetError::Field("image"))
        );
        assert_eq!(
            Answer::parse(with("a b", D, "r").as_bytes()),
            Err(TargetError::Field("image"))
        );
        assert_eq!(
            Answer::parse(with("os", D, "").as_bytes()),
            Err(TargetError::Field("rollout"))
        );
        assert!(matches!(
            Answer::parse(b"{\"target\":1}"),
            Err(TargetError::Malformed(_))
        ));
        assert!(matches!(
            Answer::parse(b"{\"other\":1}"),
            Err(TargetError::Malformed(_))
        ));
        assert_eq!(
            Answer::parse(&vec![b' '; MAX_ANSWER + 1]),
            Err(TargetError::TooLarge(MAX_ANSWER + 1))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_checked_answer_or_an_error(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(Answer { target: Some(t) }) = Answer::parse(&b) {
                prop_assert!(valid_digest(&t.digest));
                prop_assert!(!t.image.is_empty() && !t.rollout.is_empty());
            }
        }

        #[test]
        fn any_image_and_rollout_round_trip(image in "[!-~]{1,60}", rollout in "[!-~]{1,20}") {
            let a = Answer { target: Some(Target { image, digest: D.into(), rollout }) };
            prop_assert_eq!(Answer::parse(&a.to_bytes()), Ok(a));
        }
    }
}
