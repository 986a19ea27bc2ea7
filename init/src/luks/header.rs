//! The LUKS2 on-disk header (LUKS2 format specification, version 1.1): the 4 KiB binary
//! header, its SHA-256 checksum over the whole header area, and the JSON metadata after
//! it, read into the fields unlocking needs. No I/O: the caller reads the header area.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

use super::LuksError;

/// The binary header's size.
pub const BINARY_SIZE: usize = 4096;
/// The primary header's magic.
pub const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// The secondary header's magic.
pub const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// The largest header area the specification allows (4 MiB).
pub const MAX_HEADER: u64 = 4 << 20;

/// Offsets in the binary header.
const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_CSUM_ALG: usize = 72;
const OFF_UUID: usize = 168;
const OFF_CSUM: usize = 448;
const CSUM_LEN: usize = 64;

/// What the binary header says before the JSON is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// Primary (`LUKS\xba\xbe`) or secondary (`SKUL\xba\xbe`).
    pub primary: bool,
    /// The header area's size, JSON included.
    pub hdr_size: u64,
    /// Bumped by every metadata update: of two valid headers the higher wins.
    pub seqid: u64,
    /// The volume's UUID as text.
    pub uuid: String,
}

/// Reads the binary header at the start of `bytes` (at least [`BINARY_SIZE`]).
pub fn binary(bytes: &[u8]) -> Result<Binary, LuksError> {
    let b = bytes
        .get(..BINARY_SIZE)
        .ok_or_else(|| LuksError::Header("shorter than the 4 KiB binary header".into()))?;
    let primary = match &b[..6] {
        m if m == MAGIC => true,
        m if m == MAGIC_SECONDARY => false,
        _ => return Err(LuksError::Header("no LUKS magic".into())),
    };
    let version = u16::from_be_bytes([b[OFF_VERSION], b[OFF_VERSION + 1]]);
    if version != 2 {
        return Err(LuksError::Header(format!("LUKS version {version}, not 2")));
    }
    let be64 = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_be_bytes(a)
    };
    let hdr_size = be64(OFF_HDR_SIZE);
    // The specification's sizes: 16 KiB to 4 MiB, a power of two.
    if !(16384..=MAX_HEADER).contains(&hdr_size) || !hdr_size.is_power_of_two() {
        return Err(LuksError::Header(format!(
            "header size {hdr_size} is not one LUKS2 allows"
        )));
    }
    Ok(Binary {
        primary,
        hdr_size,
        seqid: be64(OFF_SEQID),
        uuid: c_string(&b[OFF_UUID..OFF_UUID + 40]),
    })
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Checks the header area `area` (`hdr_size` bytes: binary header and JSON) against its
/// checksum and returns its metadata.
pub fn read(area: &[u8]) -> Result<(Binary, Metadata), LuksError> {
    let bin = binary(area)?;
    let size =
        usize::try_from(bin.hdr_size).map_err(|_| LuksError::Header("header size".into()))?;
    let area = area
        .get(..size)
        .ok_or_else(|| LuksError::Header(format!("header area shorter than its {size} bytes")))?;
    let alg = c_string(&area[OFF_CSUM_ALG..OFF_CSUM_ALG + 32]);
    if alg != "sha256" {
        return Err(LuksError::Header(format!(
            "checksum algorithm {alg:?}: only sha256 is read"
        )));
    }
    let mut h = Sha256::new();
    h.update(&area[..OFF_CSUM]);
    h.update([0u8; CSUM_LEN]);
    h.update(&area[OFF_CSUM + CSUM_LEN..]);
    if h.finalize()[..] != area[OFF_CSUM..OFF_CSUM + 32] {
        return Err(LuksError::Header("checksum mismatch".into()));
    }
    let json = &area[BINARY_SIZE..];
    let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
    let meta: Metadata = serde_json::from_slice(&json[..end])
        .map_err(|e| LuksError::Header(format!("metadata JSON: {e}")))?;
    Ok((bin, meta))
}

/// The JSON metadata, the parts unlocking reads (others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Keyslots by number.
    pub keyslots: BTreeMap<String, Keyslot>,
    /// Data segments by number.
    pub segments: BTreeMap<String, Segment>,
    /// Digests of the volume key by number.
    pub digests: BTreeMap<String, KeyDigest>,
    /// Tokens (systemd's `systemd-tpm2` among them), kept as JSON.
    #[serde(default)]
    pub tokens: BTreeMap<String, serde_json::Value>,
}

/// One keyslot.
#[derive(Debug, Clone, Deserialize)]
pub struct Keyslot {
    /// `luks2` (the only type that holds a key).
    #[serde(rename = "type")]
    pub kind: String,
    /// The volume key's size in bytes.
    pub key_size: usize,
    /// The anti-forensic splitter.
    pub af: Af,
    /// Where the split key is stored, encrypted.
    pub area: Area,
    /// How the passphrase becomes the area's key.
    pub kdf: Kdf,
}

/// `af`: LUKS1's splitter.
#[derive(Debug, Clone, Deserialize)]
pub struct Af {
    /// `luks1`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stripes (4000 by default).
    pub stripes: usize,
    /// The diffusion hash.
    pub hash: String,
}

/// `area`: the keyslot's encrypted material.
#[derive(Debug, Clone, Deserialize)]
pub struct Area {
    /// `raw`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Byte offset on the device (a decimal string).
    #[serde(deserialize_with = "number")]
    pub offset: u64,
    /// Bytes.
    #[serde(deserialize_with = "number")]
    pub size: u64,
    /// `aes-xts-plain64`.
    pub encryption: String,
    /// The area key's size in bytes.
    pub key_size: usize,
}

/// `kdf`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Kdf {
    /// PBKDF2 with an HMAC.
    Pbkdf2 {
        /// `sha256`, `sha512`, …
        hash: String,
        /// Iterations.
        iterations: u32,
        /// Base64.
        salt: String,
    },
    /// Argon2i.
    Argon2i {
        /// Iterations.
        time: u32,
        /// KiB.
        memory: u32,
        /// Lanes.
        cpus: u32,
        /// Base64.
        salt: String,
    },
    /// Argon2id.
    Argon2id {
        /// Iterations.
        time: u32,
        /// KiB.
        memory: u32,
        /// Lanes.
        cpus: u32,
        /// Base64.
        salt: String,
    },
}

/// One data segment.
#[derive(Debug, Clone, Deserialize)]
pub struct Segment {
    /// `crypt`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the data starts on the device, bytes.
    #[serde(deserialize_with = "number")]
    pub offset: u64,
    /// `dynamic` (to the end of the device) or bytes.
    pub size: String,
    /// The dm-crypt cipher, `aes-xts-plain64`.
    pub encryption: String,
    /// The IV offset, sectors (a decimal string).
    #[serde(default, deserialize_with = "number_opt")]
    pub iv_tweak: Option<u64>,
    /// 512 or 4096.
    pub sector_size: u32,
}

/// A digest of the volume key: how a derived key is known to be right.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyDigest {
    /// `pbkdf2`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The keyslots whose key it checks.
    pub keyslots: Vec<String>,
    /// The segments that key opens.
    pub segments: Vec<String>,
    /// The HMAC's hash.
    pub hash: String,
    /// Iterations.
    pub iterations: u32,
    /// Base64.
    pub salt: String,
    /// Base64.
    pub digest: String,
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number")))
}

fn number_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    number(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header area with `json`, checksummed as cryptsetup does.
    pub(crate) fn area(json: &str, size: usize) -> Vec<u8> {
        let mut a = vec![0u8; size];
        a[..6].copy_from_slice(MAGIC);
        a[OFF_VERSION + 1] = 2;
        a[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&(size as u64).to_be_bytes());
        a[OFF_CSUM_ALG..OFF_CSUM_ALG + 6].copy_from_slice(b"sha256");
        a[BINARY_SIZE..BINARY_SIZE + json.len()].copy_from_slice(json.as_bytes());
        let sum = Sha256::digest(&a);
        a[OFF_CSUM..OFF_CSUM + 32].copy_from_slice(&sum);
        a
    }

    const JSON: &str = r#"{"keyslots":{},"tokens":{},"segments":{},"digests":{},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#;

    #[test]
    fn a_checksummed_header_reads_and_a_flipped_byte_does_not() {
        let mut a = area(JSON, 16384);
        let (b, m) = read(&a).unwrap();
        assert!(b.primary);
        assert_eq!(b.hdr_size, 16384);
        assert!(m.keyslots.is_empty());
        a[9000] ^= 1;
        assert!(read(&a).unwrap_err().to_string().contains("checksum"));
    }

    proptest! {
        #[test]
        fn hostile_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20_000), size_pow in 14u32..16) {
            let _ = read(&bytes);
            // A valid checksum over hostile JSON.
            let size = 1usize << size_pow;
            let text: String = bytes.iter().take(size - BINARY_SIZE - 1).map(|&b| (b % 95 + 32) as char).collect();
            let _ = read(&area(&text, size));
        }
    }
}
