//! A LUKS2 keyslot opened with a passphrase: the KDF (PBKDF2 or Argon2) derives the area
//! key, AES-XTS (plain64 IVs, 512-byte sectors from 0) decrypts the keyslot area, LUKS1's
//! anti-forensic merge (hash diffusion over the stripes) yields the volume key, and the
//! volume key digest (PBKDF2) says whether it is the right one. No I/O: the caller reads
//! the area. Keys live in [`Secret`]s, zeroed when dropped.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::KeyInit;
use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

use super::header::{Kdf, KeyDigest, Keyslot};
use super::LuksError;

/// Bytes that must not outlive their use: zeroed on drop, never printed.
pub struct Secret(pub Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into the vector; the
            // volatile write keeps the compiler from dropping the zeroing as dead.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, LuksError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| LuksError::Header(format!("{what}: {e}")))
}

/// PBKDF2-HMAC with the named hash into `out`.
fn pbkdf2(
    hash: &str,
    pass: &[u8],
    salt: &[u8],
    rounds: u32,
    out: &mut [u8],
) -> Result<(), LuksError> {
    match hash {
        "sha256" => pbkdf2::pbkdf2_hmac::<Sha256>(pass, salt, rounds, out),
        "sha512" => pbkdf2::pbkdf2_hmac::<Sha512>(pass, salt, rounds, out),
        other => return Err(LuksError::Unsupported(format!("PBKDF2 hash {other}"))),
    }
    Ok(())
}

/// The area key the keyslot's KDF derives from `pass`.
pub fn derive(kdf: &Kdf, pass: &[u8], len: usize) -> Result<Secret, LuksError> {
    let mut out = Secret(vec![0u8; len]);
    match kdf {
        Kdf::Pbkdf2 {
            hash,
            iterations,
            salt,
        } => pbkdf2(hash, pass, &b64(salt, "kdf salt")?, *iterations, &mut out.0)?,
        Kdf::Argon2i {
            time,
            memory,
            cpus,
            salt,
        }
        | Kdf::Argon2id {
            time,
            memory,
            cpus,
            salt,
        } => {
            let alg = match kdf {
                Kdf::Argon2i { .. } => argon2::Algorithm::Argon2i,
                _ => argon2::Algorithm::Argon2id,
            };
            let params = argon2::Params::new(*memory, *time, *cpus, Some(len))
                .map_err(|e| LuksError::Unsupported(format!("argon2 parameters: {e}")))?;
            argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                .hash_password_into(pass, &b64(salt, "kdf salt")?, &mut out.0)
                .map_err(|e| LuksError::Unsupported(format!("argon2: {e}")))?;
        }
    }
    Ok(out)
}

/// Decrypts `data` in place with AES-XTS, plain64 IVs (the sector number, little-endian),
/// 512-byte sectors numbered from 0, as keyslot areas are written.
pub fn xts_decrypt(key: &[u8], data: &mut [u8]) -> Result<(), LuksError> {
    use xts_mode::{get_tweak_default, Xts128};
    if !data.len().is_multiple_of(512) {
        return Err(LuksError::Header(
            "keyslot area not a whole number of sectors".into(),
        ));
    }
    let (k1, k2) = key.split_at(key.len() / 2);
    match key.len() {
        32 => Xts128::new(
            aes::Aes128::new(GenericArray::from_slice(k1)),
            aes::Aes128::new(GenericArray::from_slice(k2)),
        )
        .decrypt_area(data, 512, 0, get_tweak_default),
        64 => Xts128::new(
            aes::Aes256::new(GenericArray::from_slice(k1)),
            aes::Aes256::new(GenericArray::from_slice(k2)),
        )
        .decrypt_area(data, 512, 0, get_tweak_default),
        n => {
            return Err(LuksError::Unsupported(format!(
                "an AES-XTS key of {n} bytes"
            )))
        }
    }
    Ok(())
}

/// LUKS1's diffusion: each hash-sized block of `d` becomes H(be32(i) || block), the last
/// one cut to what is left.
fn diffuse(hash: &str, d: &mut [u8]) -> Result<(), LuksError> {
    let size = match hash {
        "sha256" => 32,
        "sha512" => 64,
        other => return Err(LuksError::Unsupported(format!("AF hash {other}"))),
    };
    for (i, chunk) in d.chunks_mut(size).enumerate() {
        let iv = (i as u32).to_be_bytes();
        let h: Vec<u8> = match size {
            32 => Sha256::new()
                .chain_update(iv)
                .chain_update(&*chunk)
                .finalize()
                .to_vec(),
            _ => Sha512::new()
                .chain_update(iv)
                .chain_update(&*chunk)
                .finalize()
                .to_vec(),
        };
        let n = chunk.len();
        chunk.copy_from_slice(&h[..n]);
    }
    Ok(())
}

/// The anti-forensic merge of `stripes` stripes of `key_size` bytes.
pub fn af_merge(
    split: &[u8],
    key_size: usize,
    stripes: usize,
    hash: &str,
) -> Result<Secret, LuksError> {
    let need = key_size
        .checked_mul(stripes)
        .filter(|&n| n <= split.len() && stripes > 0)
        .ok_or_else(|| LuksError::Header("keyslot area smaller than its stripes".into()))?;
    let mut d = Secret(vec![0u8; key_size]);
    for s in 0..stripes - 1 {
        let block = &split[s * key_size..(s + 1) * key_size];
        for (x, y) in d.0.iter_mut().zip(block) {
            *x ^= y;
        }
        diffuse(hash, &mut d.0)?;
    }
    for (x, y) in d.0.iter_mut().zip(&split[need - key_size..need]) {
        *x ^= y;
    }
    Ok(d)
}

/// Whether `key` is the volume key `digest` describes.
pub fn matches(digest: &KeyDigest, key: &[u8]) -> Result<bool, LuksError> {
    if digest.kind != "pbkdf2" {
        return Err(LuksError::Unsupported(format!(
            "digest type {}",
            digest.kind
        )));
    }
    let want = b64(&digest.digest, "digest")?;
    let mut got = vec![0u8; want.len()];
    pbkdf2(
        &digest.hash,
        key,
        &b64(&digest.salt, "digest salt")?,
        digest.iterations,
        &mut got,
    )?;
    // Not secret-dependent timing that matters here: the digest is public, the key is not
    // compared byte by byte against anything an attacker chose.
    Ok(got == want)
}

/// Opens keyslot `slot` with `pass` given its area's bytes (`area.size` from
/// `area.offset`); the volume key when the passphrase is right, [`LuksError::WrongKey`]
/// when it is not.
pub fn open(
    slot: &Keyslot,
    digest: &KeyDigest,
    pass: &[u8],
    area: &[u8],
) -> Result<Secret, LuksError> {
    if slot.kind != "luks2" || slot.af.kind != "luks1" || slot.area.kind != "raw" {
        return Err(LuksError::Unsupported(format!(
            "keyslot type {} (af {}, area {})",
            slot.kind, slot.af.kind, slot.area.kind
        )));
    }
    if slot.area.encryption != "aes-xts-plain64" {
        return Err(LuksError::Unsupported(format!(
            "keyslot cipher {}",
            slot.area.encryption
        )));
    }
    let split_len = slot
        .key_size
        .checked_mul(slot.af.stripes)
        .ok_or_else(|| LuksError::Header("keyslot size".into()))?;
    let sectors = split_len.div_ceil(512) * 512;
    let mut split = Secret(
        area.get(..sectors)
            .ok_or_else(|| LuksError::Header("keyslot area shorter than its material".into()))?
            .to_vec(),
    );
    let key = derive(&slot.kdf, pass, slot.area.key_size)?;
    xts_decrypt(&key.0, &mut split.0)?;
    let volume = af_merge(&split.0, slot.key_size, slot.af.stripes, &slot.af.hash)?;
    if matches(digest, &volume.0)? {
        Ok(volume)
    } else {
        Err(LuksError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn af_merge_of_one_stripe_is_the_stripe() {
        let k = af_merge(&[7u8; 32], 32, 1, "sha256").unwrap();
        assert_eq!(k.0, vec![7u8; 32]);
        assert!(af_merge(&[0u8; 10], 32, 4000, "sha256").is_err());
        assert!(af_merge(&[0u8; 64], 32, 0, "sha256").is_err());
    }

    #[test]
    fn a_secret_is_not_printed() {
        assert_eq!(
            format!("{:?}", Secret(b"hunter2".to_vec())),
            "Secret(<7 bytes>)"
        );
    }
}
