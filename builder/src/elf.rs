//! Just enough ELF to answer two questions about a file the builder packs: which strings
//! a kernel module's `.modinfo` section holds, and whether an executable asks for a program
//! interpreter (that is, whether it is dynamically linked).
//!
//! A checked view over bytes: every offset read is bounds-checked and a malformed file is an
//! [`ElfError`], never a panic. Offsets follow the System V gABI, "ELF Header",
//! "Section Header" and "Program Header" chapters; both classes and both byte orders are read.

use std::fmt;

/// `e_ident[EI_CLASS]` values.
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
/// `e_ident[EI_DATA]` values.
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
/// Section header index escapes (gABI "Extended Section Header Indices").
const SHN_XINDEX: u16 = 0xffff;
/// `e_phnum` escape: the real count is in section 0's `sh_info`.
const PN_XNUM: u16 = 0xffff;
/// `sh_type` of a section that occupies no file space (`.bss`).
const SHT_NOBITS: u32 = 8;
/// `p_type` of the program header naming the interpreter of a dynamic executable.
pub const PT_INTERP: u32 = 3;

/// Why bytes could not be read as ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// The file does not start with `\x7fELF`.
    NotElf,
    /// `EI_CLASS` or `EI_DATA` holds a value we do not know.
    Unsupported { class: u8, data: u8 },
    /// A header, table or section points outside the file.
    Truncated { what: &'static str },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf => write!(f, "not an ELF file"),
            ElfError::Unsupported { class, data } => {
                write!(f, "unsupported ELF class {class} / data encoding {data}")
            }
            ElfError::Truncated { what } => write!(f, "truncated ELF file: {what} out of bounds"),
        }
    }
}

impl std::error::Error for ElfError {}

/// A parsed ELF file header over borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    is64: bool,
    big_endian: bool,
    phoff: u64,
    phentsize: u16,
    phnum: u64,
    shoff: u64,
    shentsize: u16,
    shnum: u64,
    shstrndx: u64,
}

/// One section header, with the fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Offset of the name in the section name string table.
    pub name: u32,
    /// `sh_type`
    pub kind: u32,
    /// `sh_offset`
    pub offset: u64,
    /// `sh_size`
    pub size: u64,
    /// `sh_link`
    pub link: u32,
    /// `sh_info`
    pub info: u32,
}

impl<'a> Elf<'a> {
    /// Reads the ELF file header (gABI "ELF Header").
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.get(0..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ElfError::NotElf);
        }
        let class = *bytes.get(4).ok_or(ElfError::NotElf)?;
        let data = *bytes.get(5).ok_or(ElfError::NotElf)?;
        let is64 = match class {
            ELFCLASS32 => false,
            ELFCLASS64 => true,
            _ => return Err(ElfError::Unsupported { class, data }),
        };
        let big_endian = match data {
            ELFDATA2LSB => false,
            ELFDATA2MSB => true,
            _ => return Err(ElfError::Unsupported { class, data }),
        };
        let mut elf = Elf {
            bytes,
            is64,
            big_endian,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
            shoff: 0,
            shentsize: 0,
            shnum: 0,
            shstrndx: 0,
        };
        const WHAT: &str = "file header";
        // (e_phoff, e_shoff, e_phentsize) offsets differ between the classes; the rest
        // follow e_phentsize in the same order.
        let (phoff, shoff, ph) = if is64 { (32, 40, 54) } else { (28, 32, 42) };
        elf.phoff = elf.word(phoff, WHAT)?;
        elf.shoff = elf.word(shoff, WHAT)?;
        elf.phentsize = elf.u16(ph, WHAT)?;
        let phnum = elf.u16(ph + 2, WHAT)?;
        elf.shentsize = elf.u16(ph + 4, WHAT)?;
        let shnum = elf.u16(ph + 6, WHAT)?;
        let shstrndx = elf.u16(ph + 8, WHAT)?;
        elf.shnum = u64::from(shnum);
        elf.phnum = u64::from(phnum);
        elf.shstrndx = u64::from(shstrndx);
        // Files with many sections keep the real counts in section 0.
        if elf.shoff != 0 && (shnum == 0 || shstrndx == SHN_XINDEX || phnum == PN_XNUM) {
            let zero = elf.section_at(0)?;
            if shnum == 0 {
                elf.shnum = zero.size;
            }
            if shstrndx == SHN_XINDEX {
                elf.shstrndx = u64::from(zero.link);
            }
            if phnum == PN_XNUM {
                elf.phnum = u64::from(zero.info);
            }
        }
        Ok(elf)
    }

    /// Whether this is a 64-bit (ELFCLASS64) file.
    pub fn is64(&self) -> bool {
        self.is64
    }

    fn slice(&self, off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
        let start = usize::try_from(off).map_err(|_| ElfError::Truncated { what })?;
        let len = usize::try_from(len).map_err(|_| ElfError::Truncated { what })?;
        let end = start.checked_add(len).ok_or(ElfError::Truncated { what })?;
        self.bytes
            .get(start..end)
            .ok_or(ElfError::Truncated { what })
    }

    fn u16(&self, off: u64, what: &'static str) -> Result<u16, ElfError> {
        let b = self.slice(off, 2, what)?;
        let b = [b[0], b[1]];
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, off: u64, what: &'static str) -> Result<u32, ElfError> {
        let b = self.slice(off, 4, what)?;
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(&self, off: u64, what: &'static str) -> Result<u64, ElfError> {
        let b = self.slice(off, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(if self.big_endian {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        })
    }

    /// An address-sized field: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, off: u64, what: &'static str) -> Result<u64, ElfError> {
        if self.is64 {
            self.u64(off, what)
        } else {
            self.u32(off, what).map(u64::from)
        }
    }

    fn section_at(&self, index: u64) -> Result<Section, ElfError> {
        const WHAT: &str = "section header";
        let base = index
            .checked_mul(u64::from(self.shentsize))
            .and_then(|o| o.checked_add(self.shoff))
            .ok_or(ElfError::Truncated { what: WHAT })?;
        let min = if self.is64 { 64 } else { 40 };
        if self.shentsize < min {
            return Err(ElfError::Truncated { what: WHAT });
        }
        // sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info
        let (offset, size, link) = if self.is64 {
            (24, 32, 40)
        } else {
            (16, 20, 24)
        };
        Ok(Section {
            name: self.u32(base, WHAT)?,
            kind: self.u32(base + 4, WHAT)?,
            offset: self.word(base + offset, WHAT)?,
            size: self.word(base + size, WHAT)?,
            link: self.u32(base + link, WHAT)?,
            info: self.u32(base + link + 4, WHAT)?,
        })
    }

    /// All section headers, in table order.
    pub fn sections(&self) -> Result<Vec<Section>, ElfError> {
        if self.shoff == 0 {
            return Ok(Vec::new());
        }
        // Bound the count by the file size before allocating for it.
        let table =
            self.shnum
                .checked_mul(u64::from(self.shentsize))
                .ok_or(ElfError::Truncated {
                    what: "section header table",
                })?;
        self.slice(self.shoff, table, "section header table")?;
        (0..self.shnum).map(|i| self.section_at(i)).collect()
    }

    /// The file bytes of a section (empty for `SHT_NOBITS`).
    pub fn section_data(&self, s: &Section) -> Result<&'a [u8], ElfError> {
        if s.kind == SHT_NOBITS {
            return Ok(&[]);
        }
        self.slice(s.offset, s.size, "section data")
    }

    /// The data of the first section called `name`, if any.
    pub fn section_by_name(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        let sections = self.sections()?;
        let Some(strtab) = sections.get(usize::try_from(self.shstrndx).unwrap_or(usize::MAX))
        else {
            return Ok(None);
        };
        let strtab = self.section_data(strtab)?;
        for s in &sections {
            let start = usize::try_from(s.name).unwrap_or(usize::MAX);
            let Some(rest) = strtab.get(start..) else {
                continue;
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if &rest[..end] == name.as_bytes() {
                return self.section_data(s).map(Some);
            }
        }
        Ok(None)
    }

    /// `p_type` of every program header.
    pub fn program_header_types(&self) -> Result<Vec<u32>, ElfError> {
        const WHAT: &str = "program header table";
        if self.phoff == 0 || self.phnum == 0 {
            return Ok(Vec::new());
        }
        let table = self
            .phnum
            .checked_mul(u64::from(self.phentsize))
            .ok_or(ElfError::Truncated { what: WHAT })?;
        self.slice(self.phoff, table, WHAT)?;
        if self.phentsize < 4 {
            return Err(ElfError::Truncated { what: WHAT });
        }
        (0..self.phnum)
            .map(|i| self.u32(self.phoff + i * u64::from(self.phentsize), WHAT))
            .collect()
    }

    /// Whether the file names a program interpreter (`PT_INTERP`): a dynamically linked
    /// executable cannot run in an initramfs that lacks its loader and libraries.
    pub fn has_interpreter(&self) -> Result<bool, ElfError> {
        Ok(self.program_header_types()?.contains(&PT_INTERP))
    }
}

/// The values of `key=value` entries in a `.modinfo` section, in section order.
/// The section is a sequence of NUL-terminated strings, possibly with NUL padding between.
pub fn modinfo_values<'a>(modinfo: &'a [u8], key: &str) -> Vec<&'a str> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 with a `.modinfo` section and an optional PT_INTERP.
    pub(crate) fn tiny_elf64(modinfo: &[u8], interp: bool) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = ELFCLASS64;
        out[5] = ELFDATA2LSB;
        out[6] = 1;
        // program header table right after the file header
        let phoff = out.len() as u64;
        let ph_type: u32 = if interp { PT_INTERP } else { 1 };
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&ph_type.to_le_bytes());
        out.extend_from_slice(&ph);
        let modinfo_off = out.len() as u64;
        out.extend_from_slice(modinfo);
        let strtab_off = out.len() as u64;
        out.extend_from_slice(shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let sh = |name: u32, kind: u32, off: u64, size: u64| {
            let mut s = vec![0u8; 64];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[4..8].copy_from_slice(&kind.to_le_bytes());
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&size.to_le_bytes());
            s
        };
        out.extend(sh(0, 0, 0, 0));
        out.extend(sh(1, 1, modinfo_off, modinfo.len() as u64));
        out.extend(sh(10, 3, strtab_off, shstrtab.len() as u64));
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&1u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&3u16.to_le_bytes());
        out[62..64].copy_from_slice(&2u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_modinfo_and_interp() {
        let info = b"license=GPL\0firmware=a/b.bin\0\0\0firmware=c.fw\0depends=\0";
        let bytes = tiny_elf64(info, true);
        let elf = Elf::parse(&bytes).unwrap();
        let m = elf.section_by_name(".modinfo").unwrap().unwrap();
        assert_eq!(m, info);
        assert_eq!(modinfo_values(m, "firmware"), vec!["a/b.bin", "c.fw"]);
        assert!(elf.has_interpreter().unwrap());
        assert_eq!(elf.section_by_name(".nope").unwrap(), None);
        let bytes = tiny_elf64(info, false);
        assert!(!Elf::parse(&bytes).unwrap().has_interpreter().unwrap());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = tiny_elf64(b"firmware=x\0", false);
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            if let Ok(elf) = Elf::parse(cut) {
                let _ = elf.section_by_name(".modinfo");
                let _ = elf.has_interpreter();
            }
        }
        assert_eq!(Elf::parse(b"MZ\0\0").unwrap_err(), ElfError::NotElf);
        assert!(matches!(
            Elf::parse(b"\x7fELF\x03\x01"),
            Err(ElfError::Unsupported { class: 3, .. })
        ));
    }

    #[test]
    fn corrupted_offsets_are_errors() {
        let mut bytes = tiny_elf64(b"firmware=x\0", false);
        // section header table offset far past the end
        bytes[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        let elf = Elf::parse(&bytes).unwrap();
        assert!(elf.sections().is_err());
        assert!(elf.section_by_name(".modinfo").is_err());
    }

    #[test]
    fn reads_a_real_module() {
        // Any installed kernel's e100 (uncompressed, as Debian 12 ships them).
        let bytes = std::fs::read_dir("/lib/modules")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .find_map(|e| {
                std::fs::read(e.path().join("kernel/drivers/net/ethernet/intel/e100.ko")).ok()
            })
            .expect("an installed kernel with e100.ko (run scripts/setup-host.sh)");
        let elf = Elf::parse(&bytes).unwrap();
        assert!(elf.is64());
        let m = elf.section_by_name(".modinfo").unwrap().unwrap();
        let fw = modinfo_values(m, "firmware");
        assert!(fw.contains(&"e100/d101m_ucode.bin"), "{fw:?}");
    }
}
