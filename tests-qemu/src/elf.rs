//! Just enough ELF64 to tell whether a binary is static, and which shared libraries a
//! dynamic one needs (from `ldd`).

use std::path::{Path, PathBuf};

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

/// The libraries `ldd` lists: (where it goes in the root, host file). Named libraries go to
/// /lib/x86_64-linux-gnu under the name the binary asks for; the loader keeps its path.
pub fn parse_ldd(out: &str) -> crate::Result<Vec<(PathBuf, PathBuf)>> {
    let mut v = Vec::new();
    let mut missing = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, target)) = line.split_once("=>") {
            let name = name.trim();
            let path = target.trim().split(" (").next().unwrap_or("").trim();
            if path == "not found" || path.is_empty() {
                missing.push(name.to_string());
                continue;
            }
            v.push((
                Path::new("/lib/x86_64-linux-gnu").join(name),
                PathBuf::from(path),
            ));
        } else if line.starts_with('/') {
            let path = line.split(" (").next().unwrap_or(line).trim();
            v.push((PathBuf::from(path), PathBuf::from(path)));
        }
        // Anything else (linux-vdso.so.1) is the kernel's.
    }
    if !missing.is_empty() {
        return Err(format!(
            "ldd: libraries found neither in the given directories nor on the host: {}",
            missing.join(", ")
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_closure() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibcrypto.so.3 => /lib/x86_64-linux-gnu/libcrypto.so.3 (0x00007f9e)\n\
                   \tlibopeniscsiusr.so.0.2.0 => /x/usr/lib/x86_64-linux-gnu/libopeniscsiusr.so.0.2.0 (0x1)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f9e6b2bf000)\n";
        let libs = parse_ldd(out).unwrap();
        assert_eq!(
            libs,
            vec![
                (
                    PathBuf::from("/lib/x86_64-linux-gnu/libcrypto.so.3"),
                    PathBuf::from("/lib/x86_64-linux-gnu/libcrypto.so.3")
                ),
                (
                    PathBuf::from("/lib/x86_64-linux-gnu/libopeniscsiusr.so.0.2.0"),
                    PathBuf::from("/x/usr/lib/x86_64-linux-gnu/libopeniscsiusr.so.0.2.0")
                ),
                (
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2")
                ),
            ]
        );
        let e = parse_ldd("\tlibkmod.so.2 => not found\n").unwrap_err();
        assert!(e.contains("libkmod.so.2"), "{e}");
    }
}
