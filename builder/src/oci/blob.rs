//! Content digests (`sha256:…`, `sha512:…`) and readers that check a stream against one.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A content digest as the OCI image spec writes it (descriptor.md, "Digests"):
/// `algorithm:encoded`, where only the registered sha256 and sha512 are accepted, with
/// lowercase hex of the right length, so that an encoded part can name a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, 64 hex digits.
    Sha256,
    /// SHA-512, 128 hex digits.
    Sha512,
}

impl Algorithm {
    /// The name in a digest and in a layout's `blobs/` directory.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex(&Sha256::digest(data)),
        }
    }

    /// The digest of `data` with this digest's algorithm.
    pub fn of_same_kind(&self, data: &[u8]) -> Self {
        let mut h = Hasher::new(self.algorithm);
        h.update(data);
        h.finish()
    }

    /// Checks `data` against this digest and `size` (when known); the error says what differs.
    pub fn check(&self, data: &[u8], size: Option<u64>) -> Result<(), String> {
        if let Some(size) = size {
            if data.len() as u64 != size {
                return Err(format!(
                    "size mismatch: expected {size} bytes, got {}",
                    data.len()
                ));
            }
        }
        let actual = self.of_same_kind(data);
        if &actual != self {
            return Err(format!("digest mismatch: content hashes to {actual}"));
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} has no algorithm prefix"))?;
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(format!("digest {s:?}: unsupported algorithm {other:?}")),
        };
        if hex.len() != algorithm.hex_len()
            || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format!(
                "digest {s:?}: expected {} lowercase hex digits",
                algorithm.hex_len()
            ));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// An incremental hash of either algorithm.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex(&h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex(&h.finalize()),
            },
        }
    }
}

/// A reader that hashes and counts what passes through it and refuses to read past an
/// expected size, so a blob larger than its descriptor says fails early instead of filling
/// the disk. [`VerifyingReader::finish`] drains the rest and compares.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    expected: Option<Digest>,
    size: Option<u64>,
}

impl<R: Read> VerifyingReader<R> {
    /// Checks `inner` against `expected` (when given) and `size` (when given); with neither
    /// it only counts.
    pub fn new(inner: R, expected: Option<Digest>, size: Option<u64>) -> Self {
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, |d| d.algorithm());
        VerifyingReader {
            inner,
            hasher: Hasher::new(algorithm),
            count: 0,
            expected,
            size,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads to the end, then compares size and digest; the error says what differs.
    pub fn finish(mut self) -> Result<Digest, String> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        if let Some(size) = self.size {
            if self.count != size {
                return Err(format!(
                    "size mismatch: expected {size} bytes, got {}",
                    self.count
                ));
            }
        }
        let actual = self.hasher.finish();
        match &self.expected {
            Some(expected) if *expected != actual => Err(format!(
                "digest mismatch: expected {expected}, content hashes to {actual}"
            )),
            _ => Ok(actual),
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(size) = self.size {
            if self.count > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("size mismatch: more than the {size} bytes the descriptor gives"),
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let d = Digest::sha256_of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.check(b"hello", Some(5)).is_ok());
        assert!(d.check(b"hellp", Some(5)).unwrap_err().contains("digest"));
        assert!(d.check(b"hello", Some(6)).unwrap_err().contains("size"));
        for bad in [
            "sha256:../../etc",
            "md5:00",
            "sha256",
            "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn verifying_reader_bounds_and_compares() {
        let d = Digest::sha256_of(b"abcdef");
        let mut r = VerifyingReader::new(&b"abcdef"[..], Some(d.clone()), Some(6));
        let mut first = [0u8; 2];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), d);
        let mut r = VerifyingReader::new(&b"abcdefg"[..], Some(d.clone()), Some(6));
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        let r = VerifyingReader::new(&b"abcdeX"[..], Some(d), Some(6));
        assert!(r.finish().unwrap_err().contains("digest mismatch"));
    }
}
