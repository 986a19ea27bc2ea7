//! ISO 9660's volume descriptors, with Joliet's label as blkid merges it.

use super::bytes::*;
use super::{FsType, Identity};

/// ISO 9660 (ECMA-119 §8): the volume descriptor set starts at sector 16 (0x8000) in 2 KiB
/// sectors; the primary volume descriptor (type 1) need not be the first (an El Torito boot
/// record may precede it), so up to 16 descriptors are scanned, as blkid does, until the
/// set terminator (type 255).
pub(super) fn probe(head: &[u8]) -> Option<Identity> {
    const VD_START: usize = 0x8000;
    const SECTOR: usize = 0x800;
    let mut pvd = None;
    let mut joliet = None;
    for i in 0..16 {
        let Some(vd) = bytes(head, VD_START + i * SECTOR, SECTOR) else {
            break;
        };
        // standard identifier "CD001" at 1 (§8.1.2)
        if bytes(vd, 1, 5) != Some(b"CD001") {
            break;
        }
        // volume descriptor type at 0 (§8.1.1)
        match u8_at(vd, 0) {
            Some(255) => break,
            Some(1) if pvd.is_none() => pvd = Some(vd),
            // Joliet: a supplementary descriptor (type 2) whose escape sequences (at 88)
            // announce UCS-2 level 1, 2 or 3.
            Some(2)
                if joliet.is_none()
                    && matches!(bytes(vd, 88, 3), Some(b"%/@" | b"%/C" | b"%/E")) =>
            {
                joliet = Some(vd)
            }
            _ => {}
        }
    }
    let pvd = pvd?;
    // volume identifier at 40, 32 bytes (§8.4.6): d-characters in the PVD, UCS-2BE in Joliet
    let pvd_label = bytes(pvd, 40, 32)?;
    let label = match joliet.and_then(|j| bytes(j, 40, 32)) {
        Some(jl) => joliet_label(jl, pvd_label),
        None => text_label(pvd_label),
    };
    // blkid's UUID: the volume modification date at 830 (§8.4.27), else the creation date
    // at 813 (§8.4.26), each "YYYYMMDDHHMMSScc" + a timezone byte.
    let uuid = iso_date(pvd, 830).or_else(|| iso_date(pvd, 813));
    Some(Identity {
        fstype: Some(FsType::Iso9660),
        label,
        uuid,
        ..Identity::default()
    })
}

/// A date-time field (ECMA-119 §8.4.26.1) as `YYYY-MM-DD-HH-MM-SS-cc`; an unset one (all
/// digits '0' and a zero offset) or one that is not digits is absent.
fn iso_date(pvd: &[u8], off: usize) -> Option<String> {
    let d = bytes(pvd, off, 16)?;
    let tz = u8_at(pvd, off + 16)?;
    if !d.iter().all(u8::is_ascii_digit) || (d.iter().all(|&c| c == b'0') && tz == 0) {
        return None;
    }
    let mut s = String::with_capacity(22);
    for (i, &c) in d.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10 | 12 | 14) {
            s.push('-');
        }
        s.push(char::from(c));
    }
    Some(s)
}

/// The label blkid reports for a Joliet volume: Joliet holds 16 UCS-2 characters, the PVD
/// 32 d-characters (upper case, '_' for anything not representable). When the Joliet label
/// is a prefix of the PVD one (ignoring those substitutions), the two are merged so that
/// neither the case nor the tail beyond 16 characters is lost; else the Joliet label wins.
fn joliet_label(joliet: &[u8], ascii: &[u8]) -> Option<String> {
    let units: Vec<u16> = joliet
        .chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok())
        .map(u16::from_be_bytes)
        .collect();
    let merged = merge_joliet(&units, ascii).unwrap_or(units);
    let end = merged.iter().position(|&u| u == 0).unwrap_or(merged.len());
    let text = String::from_utf16_lossy(merged.get(..end)?);
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

fn merge_joliet(units: &[u16], ascii: &[u8]) -> Option<Vec<u16>> {
    let mut out = Vec::with_capacity(ascii.len() + 1);
    let (mut u, mut a) = (0, 0);
    while let (Some(&first), Some(&c)) = (units.get(u), ascii.get(a)) {
        let mut unit = first;
        // A surrogate pair is one character, so one '_' in the PVD.
        if (0xD800..=0xDBFF).contains(&unit) {
            if let Some(&low @ 0xDC00..=0xDFFF) = units.get(u + 1) {
                out.push(unit);
                u += 1;
                unit = low;
            }
        }
        if c == b'_' {
            out.push(unit);
        } else if unit == u16::from(b'_') {
            out.push(u16::from(c));
        } else if unit <= 0xFF && (unit as u8).eq_ignore_ascii_case(&c) {
            out.push(if c.is_ascii_uppercase() {
                unit
            } else {
                u16::from(c)
            });
        } else {
            return None;
        }
        u += 1;
        a += 1;
    }
    out.extend(ascii.get(a..)?.iter().map(|&c| u16::from(c)));
    Some(out)
}
