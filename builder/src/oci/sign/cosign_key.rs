//! cosign's encrypted private keys (`cosign generate-key-pair`): a PEM block labelled
//! `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign: `ENCRYPTED COSIGN PRIVATE KEY`) whose body
//! is the JSON of go-securesystemslib's `encrypted` package:
//!
//! ```json
//! {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": "<base64>"},
//!  "cipher": {"name": "nacl/secretbox", "nonce": "<base64>"},
//!  "ciphertext": "<base64>"}
//! ```
//!
//! scrypt turns the password and salt into a 32-byte key; NaCl's secretbox (XSalsa20-Poly1305,
//! the tag before the ciphertext) opens the PKCS#8 DER of the private key. No I/O here.

use std::fmt;

use base64::Engine as _;
use crypto_secretbox::aead::{Aead as _, KeyInit as _};
use crypto_secretbox::XSalsa20Poly1305;
use p256::elliptic_curve::zeroize::Zeroizing;
use serde::Deserialize;

/// The PEM labels of cosign's encrypted keys, newest first.
pub const PEM_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// The largest scrypt N accepted: 2^17 (128 MiB with r = 8), go-securesystemslib's
/// strongest setting. A file asking for more is refused rather than allowed to exhaust
/// memory.
const MAX_LOG_N: u8 = 17;

/// Why an encrypted key does not open. Never holds the password or key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The file is not the expected PEM, JSON or parameters (what is wrong).
    Form(String),
    /// The secretbox did not open: the password is wrong (or the file was altered).
    WrongPassword,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::Form(why) => write!(f, "{why}"),
            SealError::WrongPassword => write!(
                f,
                "wrong password: the key does not decrypt with it (COSIGN_PASSWORD when set, \
                 else the one typed)"
            ),
        }
    }
}

impl std::error::Error for SealError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Whether PEM text is one of cosign's encrypted keys.
pub fn is_encrypted(text: &str) -> bool {
    PEM_LABELS
        .iter()
        .any(|l| text.contains(&format!("-----BEGIN {l}-----")))
}

/// Opens a cosign encrypted key (the whole PEM text) with `password`: the PKCS#8 DER.
pub fn decrypt_pem(text: &str, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let (label, body) = p256::pkcs8::der::pem::decode_vec(text.trim().as_bytes())
        .map_err(|e| SealError::Form(format!("not a PEM block: {e}")))?;
    if !PEM_LABELS.contains(&label) {
        return Err(SealError::Form(format!(
            "PEM label {label:?}, not {:?} or {:?}",
            PEM_LABELS[0], PEM_LABELS[1]
        )));
    }
    decrypt(&body, password)
}

/// Opens go-securesystemslib's `encrypted` JSON with `password`.
pub fn decrypt(json: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let s: Sealed = serde_json::from_slice(json)
        .map_err(|e| SealError::Form(format!("the encrypted key's JSON: {e}")))?;
    if s.kdf.name != "scrypt" {
        return Err(SealError::Form(format!(
            "kdf.name {:?}, not \"scrypt\"",
            s.kdf.name
        )));
    }
    if s.cipher.name != "nacl/secretbox" {
        return Err(SealError::Form(format!(
            "cipher.name {:?}, not \"nacl/secretbox\"",
            s.cipher.name
        )));
    }
    let KdfParams { n, r, p } = s.kdf.params;
    let log_n = match n {
        n if n.is_power_of_two() && n > 1 && n.trailing_zeros() <= u32::from(MAX_LOG_N) => {
            n.trailing_zeros() as u8
        }
        _ => {
            return Err(SealError::Form(format!(
                "kdf.params.N {n}: not a power of two from 2 to 2^{MAX_LOG_N}"
            )))
        }
    };
    if r != 8 || p != 1 {
        return Err(SealError::Form(format!(
            "kdf.params r={r} p={p}: cosign's keys have r=8 p=1"
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |name: &str, v: &str| {
        b64.decode(v.as_bytes())
            .map_err(|_| SealError::Form(format!("{name} is not base64")))
    };
    let salt = field("kdf.salt", &s.kdf.salt)?;
    let nonce = field("cipher.nonce", &s.cipher.nonce)?;
    let ciphertext = field("ciphertext", &s.ciphertext)?;
    if nonce.len() != 24 {
        return Err(SealError::Form(format!(
            "cipher.nonce of {} bytes, not 24",
            nonce.len()
        )));
    }
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| SealError::Form(format!("kdf.params: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, &salt, &params, key.as_mut())
        .map_err(|e| SealError::Form(format!("scrypt: {e}")))?;
    let cipher = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(key.as_ref()));
    cipher
        .decrypt(
            crypto_secretbox::Nonce::from_slice(&nonce),
            ciphertext.as_slice(),
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `plain` as go-securesystemslib does, with a small N to keep the test fast.
    fn seal(plain: &[u8], password: &[u8], log_n: u8) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (salt, nonce) = ([7u8; 32], [9u8; 24]);
        let mut key = [0u8; 32];
        scrypt::scrypt(
            password,
            &salt,
            &scrypt::Params::new(log_n, 8, 1, 32).unwrap(),
            &mut key,
        )
        .unwrap();
        let ct = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(&key))
            .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plain)
            .unwrap();
        serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 1u64 << log_n, "r": 8, "p": 1},
                    "salt": b64.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": b64.encode(nonce)},
            "ciphertext": b64.encode(ct),
        })
        .to_string()
    }

    #[test]
    fn scrypt_matches_rfc7914s_test_vector() {
        // RFC 7914 §12, the second vector: "password", "NaCl", N=1024, r=8, p=16.
        let mut out = [0u8; 64];
        scrypt::scrypt(
            b"password",
            b"NaCl",
            &scrypt::Params::new(10, 8, 16, 64).unwrap(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[..8], [0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00]);
    }

    #[test]
    fn opens_with_the_password_and_only_with_it() {
        let json = seal(b"pkcs8 der", b"hunter2", 10);
        assert_eq!(
            decrypt(json.as_bytes(), b"hunter2").unwrap().as_slice(),
            b"pkcs8 der"
        );
        assert_eq!(
            decrypt(json.as_bytes(), b"hunter3"),
            Err(SealError::WrongPassword)
        );
        let e = decrypt(json.as_bytes(), b"hunter3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong password") && !e.contains("hunter"), "{e}");
        // The PEM wrapping, under either label.
        let b64 = base64::engine::general_purpose::STANDARD;
        for label in PEM_LABELS {
            let pem = format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                b64.encode(&json)
                    .as_bytes()
                    .chunks(64)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert!(is_encrypted(&pem));
            assert_eq!(
                decrypt_pem(&pem, b"hunter2").unwrap().as_slice(),
                b"pkcs8 der"
            );
        }
    }

    #[test]
    fn malformed_files_are_refused_by_field() {
        let good = seal(b"x", b"pw", 10);
        let v: serde_json::Value = serde_json::from_str(&good).unwrap();
        let with = |ptr: &str, new: serde_json::Value| {
            let mut w = v.clone();
            *w.pointer_mut(ptr).unwrap() = new;
            w.to_string()
        };
        for (bad, want) in [
            (with("/kdf/name", "argon2".into()), "kdf.name"),
            (with("/cipher/name", "aes".into()), "cipher.name"),
            (with("/kdf/params/N", (1u64 << 20).into()), "kdf.params.N"),
            (with("/kdf/params/N", 1000.into()), "kdf.params.N"),
            (with("/kdf/params/r", 1.into()), "r=1"),
            (with("/kdf/salt", "!!".into()), "kdf.salt"),
            (with("/cipher/nonce", "AAAA".into()), "cipher.nonce"),
            ("{}".to_string(), "JSON"),
        ] {
            let e = decrypt(bad.as_bytes(), b"pw").unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        let e = decrypt_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            b"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("PEM label"), "{e}");
    }
}
