//! Just enough ELF64 to tell whether a binary is static.

/// Why a binary is not static, or None when it is.
pub fn not_static_reason(bytes: &[u8]) -> Option<String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) {
        return Some("not an ELF64 file".into());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Some("truncated ELF header".into());
    };
    let mut dynamic = None;
    for i in 0..phnum as usize {
        let ph = phoff as usize + i * phentsize as usize;
        match u32_at(ph) {
            // PT_INTERP: asks for a dynamic loader.
            Some(3) => return Some("has a PT_INTERP program header (dynamic loader)".into()),
            // PT_DYNAMIC: fine for static-pie, as long as nothing is NEEDED.
            Some(2) => dynamic = u64_at(ph + 8).zip(u64_at(ph + 32)),
            None => return Some("truncated program headers".into()),
            _ => {}
        }
    }
    if let Some((off, size)) = dynamic {
        let mut o = off as usize;
        while o + 16 <= (off + size) as usize {
            match u64_at(o) {
                Some(0) | None => break,
                // DT_NEEDED
                Some(1) => return Some("has DT_NEEDED entries (shared libraries)".into()),
                _ => {}
            }
            o += 16;
        }
    }
    None
}
