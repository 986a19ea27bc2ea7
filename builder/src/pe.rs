//! Just enough PE/COFF to make a Unified Kernel Image: a checked view of the headers of an
//! EFI application (the systemd stub), sections appended after its own, and the image
//! checksum. No I/O.
//!
//! Offsets follow Microsoft's "PE Format" specification: §2 (MS-DOS stub, `e_lfanew` at
//! 0x3c, the `PE\0\0` signature), §3.3 "COFF File Header", §3.4 "Optional Header" (PE32
//! and PE32+), §3.4.3 "Optional Header Data Directories" (the certificate table is entry 4),
//! §4 "Section Table" and §5.5 "The Attribute Certificate Table". Every read is
//! bounds-checked; a malformed file is a [`PeError`], never a panic.

use std::fmt;

/// `e_lfanew`: the file offset of the PE signature (§2).
const E_LFANEW: usize = 0x3c;
const PE_SIGNATURE: &[u8; 4] = b"PE\0\0";

/// COFF file header (§3.3), after the signature.
const COFF_HEADER_SIZE: usize = 20;
const COFF_NUMBER_OF_SECTIONS: usize = 2;
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
/// A COFF symbol table record (§5.4): the string table follows the records, its first four
/// bytes its size.
const COFF_SYMBOL_SIZE: usize = 18;

/// Optional header (§3.4): fields at the same offset in PE32 and PE32+.
const OPT_MAGIC: usize = 0;
const OPT_SIZE_OF_CODE: usize = 4;
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
/// `Magic` values.
const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// `NumberOfRvaAndSizes` and the data directories: PE32 and PE32+ differ here (the
/// Windows-specific fields before them are 4 or 8 bytes wide).
const PE32_NUMBER_OF_RVA_AND_SIZES: usize = 92;
const PE32_PLUS_NUMBER_OF_RVA_AND_SIZES: usize = 108;
/// Data directory entry of the attribute certificate table (§3.4.3): an Authenticode
/// signature; its "address" is a file offset.
const CERTIFICATE_TABLE: usize = 4;

/// Section header (§4): 40 bytes.
const SECTION_HEADER_SIZE: usize = 40;
const SH_VIRTUAL_SIZE: usize = 8;
const SH_VIRTUAL_ADDRESS: usize = 12;
const SH_SIZE_OF_RAW_DATA: usize = 16;
const SH_POINTER_TO_RAW_DATA: usize = 20;
const SH_CHARACTERISTICS: usize = 36;

/// Section flags (§4.1).
pub const IMAGE_SCN_CNT_CODE: u32 = 0x0000_0020;
/// See [`IMAGE_SCN_CNT_CODE`].
pub const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// See [`IMAGE_SCN_CNT_CODE`].
pub const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;

/// Why bytes are not a PE image we can extend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeError {
    /// No `MZ` at the start or no `PE\0\0` where `e_lfanew` points.
    NotPe,
    /// An optional header magic other than PE32 (0x10b) or PE32+ (0x20b).
    UnsupportedMagic(u16),
    /// A header or table points outside the file.
    Truncated { what: &'static str },
    /// An alignment that is zero or not a power of two.
    BadAlignment { what: &'static str, value: u32 },
    /// The image carries an Authenticode signature, which appending sections would break.
    Signed,
    /// The section table has no free entry for the section: the first section's data
    /// follows the headers too closely.
    NoHeaderRoom { section: String },
    /// A section name longer than 8 bytes, not ASCII, or empty.
    SectionName(String),
    /// A section with no bytes.
    EmptySection(String),
    /// The image would pass 4 GiB, the limit of PE's 32-bit sizes and addresses.
    TooLarge { section: String },
}

impl fmt::Display for PeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeError::NotPe => write!(f, "not a PE/COFF image (no MZ header or PE signature)"),
            PeError::UnsupportedMagic(m) => write!(
                f,
                "unsupported optional header magic {m:#x} (expected PE32 0x10b or PE32+ 0x20b)"
            ),
            PeError::Truncated { what } => write!(f, "truncated PE image: {what} out of bounds"),
            PeError::BadAlignment { what, value } => {
                write!(f, "{what} {value:#x} is not a power of two")
            }
            PeError::Signed => write!(
                f,
                "the image is already signed (it has an attribute certificate table); \
                 use an unsigned stub"
            ),
            PeError::NoHeaderRoom { section } => write!(
                f,
                "no room in the section table for {section}: the first section's data \
                 follows the headers too closely"
            ),
            PeError::SectionName(n) => {
                write!(f, "section name {n:?}: expected 1 to 8 ASCII characters")
            }
            PeError::EmptySection(n) => write!(f, "section {n} would be empty"),
            PeError::TooLarge { section } => {
                write!(f, "section {section} would put the image past 4 GiB")
            }
        }
    }
}

impl std::error::Error for PeError {}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name, NUL padding removed.
    pub name: String,
    /// Size in memory.
    pub virtual_size: u32,
    /// Address in memory, relative to the image base.
    pub virtual_address: u32,
    /// Size in the file (a multiple of the file alignment).
    pub size_of_raw_data: u32,
    /// Where the data is in the file.
    pub pointer_to_raw_data: u32,
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

impl Section {
    /// The first address after the section in memory: the loader maps the larger of the
    /// two sizes (a zero `VirtualSize` means the raw size).
    fn virtual_end(&self) -> u64 {
        u64::from(self.virtual_address) + u64::from(self.virtual_size.max(self.size_of_raw_data))
    }
}

/// A parsed PE image over borrowed bytes.
#[derive(Debug, Clone)]
pub struct Pe<'a> {
    bytes: &'a [u8],
    /// Offset of the COFF file header.
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    /// Offset of the data directories and their count.
    data_dirs: usize,
    data_dir_count: u32,
    /// Offset of the section table.
    section_table: usize,
    sections: Vec<Section>,
}

fn u16_at(b: &[u8], off: usize, what: &'static str) -> Result<u16, PeError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(PeError::Truncated { what })
}

fn u32_at(b: &[u8], off: usize, what: &'static str) -> Result<u32, PeError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(PeError::Truncated { what })
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn round_up(v: u64, align: u32) -> u64 {
    let a = u64::from(align);
    v.div_ceil(a) * a
}

impl<'a> Pe<'a> {
    /// Parses the headers and the section table.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PeError> {
        if bytes.get(..2) != Some(b"MZ") {
            return Err(PeError::NotPe);
        }
        let sig = u32_at(bytes, E_LFANEW, "e_lfanew")? as usize;
        if bytes.get(sig..sig + 4) != Some(PE_SIGNATURE) {
            return Err(PeError::NotPe);
        }
        let coff = sig + 4;
        if bytes.len() < coff + COFF_HEADER_SIZE {
            return Err(PeError::Truncated {
                what: "COFF file header",
            });
        }
        let nsections = u16_at(bytes, coff + COFF_NUMBER_OF_SECTIONS, "NumberOfSections")?;
        let opt_size = u16_at(
            bytes,
            coff + COFF_SIZE_OF_OPTIONAL_HEADER,
            "SizeOfOptionalHeader",
        )?;
        let opt = coff + COFF_HEADER_SIZE;
        let section_table = opt + usize::from(opt_size);
        let (count_at, dirs_at) = match u16_at(bytes, opt + OPT_MAGIC, "optional header")? {
            PE32_MAGIC => (
                PE32_NUMBER_OF_RVA_AND_SIZES,
                PE32_NUMBER_OF_RVA_AND_SIZES + 4,
            ),
            PE32_PLUS_MAGIC => (
                PE32_PLUS_NUMBER_OF_RVA_AND_SIZES,
                PE32_PLUS_NUMBER_OF_RVA_AND_SIZES + 4,
            ),
            m => return Err(PeError::UnsupportedMagic(m)),
        };
        let data_dir_count = u32_at(bytes, opt + count_at, "NumberOfRvaAndSizes")?;
        // The directories must lie inside the optional header the COFF header sized.
        let dirs_end = dirs_at as u64 + u64::from(data_dir_count) * 8;
        if dirs_end > u64::from(opt_size) || section_table > bytes.len() {
            return Err(PeError::Truncated {
                what: "optional header",
            });
        }
        let mut sections = Vec::with_capacity(usize::from(nsections));
        for i in 0..usize::from(nsections) {
            let h = section_table + i * SECTION_HEADER_SIZE;
            let raw = bytes
                .get(h..h + SECTION_HEADER_SIZE)
                .ok_or(PeError::Truncated {
                    what: "section table",
                })?;
            let name_end = raw[..8].iter().position(|&b| b == 0).unwrap_or(8);
            let s = Section {
                name: String::from_utf8_lossy(&raw[..name_end]).into_owned(),
                virtual_size: u32_at(raw, SH_VIRTUAL_SIZE, "section header")?,
                virtual_address: u32_at(raw, SH_VIRTUAL_ADDRESS, "section header")?,
                size_of_raw_data: u32_at(raw, SH_SIZE_OF_RAW_DATA, "section header")?,
                pointer_to_raw_data: u32_at(raw, SH_POINTER_TO_RAW_DATA, "section header")?,
                characteristics: u32_at(raw, SH_CHARACTERISTICS, "section header")?,
            };
            let end = u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data);
            if s.size_of_raw_data > 0 && end > bytes.len() as u64 {
                return Err(PeError::Truncated {
                    what: "section data",
                });
            }
            sections.push(s);
        }
        let pe = Pe {
            bytes,
            coff,
            opt,
            data_dirs: opt + dirs_at,
            data_dir_count,
            section_table,
            sections,
        };
        for (what, value) in [
            ("SectionAlignment", pe.section_alignment()?),
            ("FileAlignment", pe.file_alignment()?),
        ] {
            if !value.is_power_of_two() {
                return Err(PeError::BadAlignment { what, value });
            }
        }
        Ok(pe)
    }

    /// The section table, in file order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The bytes of the first section named `name`, cut to its virtual size (the raw data
    /// is padded to the file alignment).
    pub fn section_data(&self, name: &str) -> Option<&'a [u8]> {
        let s = self.sections.iter().find(|s| s.name == name)?;
        let len = s.virtual_size.min(s.size_of_raw_data) as usize;
        let start = s.pointer_to_raw_data as usize;
        self.bytes.get(start..start + len)
    }

    /// `SectionAlignment`: sections start at multiples of it in memory.
    pub fn section_alignment(&self) -> Result<u32, PeError> {
        u32_at(
            self.bytes,
            self.opt + OPT_SECTION_ALIGNMENT,
            "SectionAlignment",
        )
    }

    /// `FileAlignment`: section data starts at multiples of it in the file.
    pub fn file_alignment(&self) -> Result<u32, PeError> {
        u32_at(self.bytes, self.opt + OPT_FILE_ALIGNMENT, "FileAlignment")
    }

    /// `SizeOfImage`: the image's size in memory.
    pub fn size_of_image(&self) -> Result<u32, PeError> {
        u32_at(self.bytes, self.opt + OPT_SIZE_OF_IMAGE, "SizeOfImage")
    }

    /// `SizeOfHeaders`: the headers' size in the file, rounded to the file alignment.
    pub fn size_of_headers(&self) -> Result<u32, PeError> {
        u32_at(self.bytes, self.opt + OPT_SIZE_OF_HEADERS, "SizeOfHeaders")
    }

    /// The `CheckSum` field as stored.
    pub fn stored_checksum(&self) -> Result<u32, PeError> {
        u32_at(self.bytes, self.opt + OPT_CHECKSUM, "CheckSum")
    }

    /// The image checksum computed over the bytes (see [`checksum`]).
    pub fn computed_checksum(&self) -> u32 {
        checksum(self.bytes, self.opt + OPT_CHECKSUM)
    }

    /// Whether the image carries an attribute certificate table (an Authenticode
    /// signature).
    pub fn is_signed(&self) -> bool {
        self.data_directory(CERTIFICATE_TABLE)
            .is_some_and(|(off, size)| off != 0 || size != 0)
    }

    /// Data directory `index` as (address, size), when the header has that many.
    fn data_directory(&self, index: usize) -> Option<(u32, u32)> {
        if index as u64 >= u64::from(self.data_dir_count) {
            return None;
        }
        let at = self.data_dirs + index * 8;
        Some((
            u32_at(self.bytes, at, "data directory").ok()?,
            u32_at(self.bytes, at + 4, "data directory").ok()?,
        ))
    }

    /// The COFF symbol table and its string table, as a file range, when the image has one.
    /// Linkers leave it in EFI stubs that were not stripped; images should have none (§3.3
    /// calls it deprecated for images).
    fn symbol_table(&self) -> Option<(usize, usize)> {
        let at = u32_at(self.bytes, self.coff + COFF_POINTER_TO_SYMBOL_TABLE, "").ok()? as usize;
        if at == 0 {
            return None;
        }
        let count = u32_at(self.bytes, self.coff + COFF_NUMBER_OF_SYMBOLS, "").ok()? as usize;
        let strings = at.checked_add(count.checked_mul(COFF_SYMBOL_SIZE)?)?;
        let strings_len = u32_at(self.bytes, strings, "").map_or(0, |n| n as usize);
        Some((at, strings.checked_add(strings_len)?))
    }
}

/// A section to append.
#[derive(Debug, Clone, Copy)]
pub struct NewSection<'d> {
    /// 1 to 8 ASCII characters (longer names would need a string table the stub does not
    /// read).
    pub name: &'d str,
    /// Contents: the section's virtual size is their length.
    pub data: &'d [u8],
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

/// `image` with `new` appended, in order, after its own sections: each at the next
/// `SectionAlignment` boundary in memory and the next `FileAlignment` boundary in the file,
/// its raw data padded with zeros to the file alignment; `NumberOfSections`,
/// `SizeOfCode`/`SizeOfInitializedData`, `SizeOfImage` and `CheckSum` updated. A symbol
/// table at the end of the file is dropped (the loader never reads it, and section data
/// must not follow it). Signed images are refused: their signature would no longer match.
/// The output depends on the inputs alone.
pub fn append_sections(image: &[u8], new: &[NewSection<'_>]) -> Result<Vec<u8>, PeError> {
    let pe = Pe::parse(image)?;
    if pe.is_signed() {
        return Err(PeError::Signed);
    }
    let section_alignment = pe.section_alignment()?;
    let file_alignment = pe.file_alignment()?;
    let mut out = image.to_vec();
    if let Some((start, end)) = pe.symbol_table() {
        if end == image.len() {
            out.truncate(start);
            put_u32(&mut out, pe.coff + COFF_POINTER_TO_SYMBOL_TABLE, 0);
            put_u32(&mut out, pe.coff + COFF_NUMBER_OF_SYMBOLS, 0);
        }
    }

    // New section headers go into the zeros between the table and the first section's data.
    let first_data = pe
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data > 0)
        .map(|s| s.pointer_to_raw_data as usize)
        .min()
        .unwrap_or(out.len());
    let header_limit = first_data.min(pe.size_of_headers()? as usize);
    let mut header_at = pe.section_table + pe.sections.len() * SECTION_HEADER_SIZE;

    let mut virtual_end = match pe.sections.iter().map(Section::virtual_end).max() {
        Some(end) => end,
        None => u64::from(pe.size_of_headers()?),
    };
    let (mut code, mut data) = (
        u32_at(image, pe.opt + OPT_SIZE_OF_CODE, "SizeOfCode")?,
        u32_at(
            image,
            pe.opt + OPT_SIZE_OF_INITIALIZED_DATA,
            "SizeOfInitializedData",
        )?,
    );
    let count = pe.sections.len() + new.len();
    let count = u16::try_from(count).map_err(|_| PeError::NoHeaderRoom {
        section: new.last().map_or_else(String::new, |s| s.name.to_string()),
    })?;

    for s in new {
        if s.name.is_empty() || s.name.len() > 8 || !s.name.is_ascii() {
            return Err(PeError::SectionName(s.name.to_string()));
        }
        if s.data.is_empty() {
            return Err(PeError::EmptySection(s.name.to_string()));
        }
        let header_end = header_at + SECTION_HEADER_SIZE;
        if header_end > header_limit || out[header_at..header_end].iter().any(|&b| b != 0) {
            return Err(PeError::NoHeaderRoom {
                section: s.name.to_string(),
            });
        }
        let too_large = || PeError::TooLarge {
            section: s.name.to_string(),
        };
        let virtual_address = round_up(virtual_end, section_alignment);
        let pointer = round_up(out.len() as u64, file_alignment);
        let raw_size = round_up(s.data.len() as u64, file_alignment);
        let virtual_size = s.data.len() as u64;
        virtual_end = virtual_address + virtual_size.max(raw_size);
        if virtual_end > u64::from(u32::MAX) || pointer + raw_size > u64::from(u32::MAX) {
            return Err(too_large());
        }
        out.resize(pointer as usize, 0);
        out.extend_from_slice(s.data);
        out.resize((pointer + raw_size) as usize, 0);

        let h = &mut out[header_at..header_end];
        h[..s.name.len()].copy_from_slice(s.name.as_bytes());
        put_u32(h, SH_VIRTUAL_SIZE, virtual_size as u32);
        put_u32(h, SH_VIRTUAL_ADDRESS, virtual_address as u32);
        put_u32(h, SH_SIZE_OF_RAW_DATA, raw_size as u32);
        put_u32(h, SH_POINTER_TO_RAW_DATA, pointer as u32);
        put_u32(h, SH_CHARACTERISTICS, s.characteristics);
        header_at = header_end;

        let sum = if s.characteristics & IMAGE_SCN_CNT_CODE != 0 {
            &mut code
        } else {
            &mut data
        };
        *sum = sum.checked_add(raw_size as u32).ok_or_else(too_large)?;
    }

    put_u16(&mut out, pe.coff + COFF_NUMBER_OF_SECTIONS, count);
    put_u32(&mut out, pe.opt + OPT_SIZE_OF_CODE, code);
    put_u32(&mut out, pe.opt + OPT_SIZE_OF_INITIALIZED_DATA, data);
    let size_of_image = round_up(virtual_end, section_alignment);
    let size_of_image = u32::try_from(size_of_image).map_err(|_| PeError::TooLarge {
        section: new.last().map_or_else(String::new, |s| s.name.to_string()),
    })?;
    put_u32(&mut out, pe.opt + OPT_SIZE_OF_IMAGE, size_of_image);
    let sum = checksum(&out, pe.opt + OPT_CHECKSUM);
    put_u32(&mut out, pe.opt + OPT_CHECKSUM, sum);
    Ok(out)
}

/// The PE image checksum (the algorithm of imagehlp's `CheckSumMappedFile`, which the
/// specification names in §3.4.2 without spelling out): the file as little-endian 16-bit
/// words (an odd last byte padded with zero), the 4-byte `CheckSum` field at
/// `checksum_at` skipped, added with end-around carry folded into 16 bits, plus the file's
/// length. Firmware does not check it; signing tools and Windows do.
pub fn checksum(bytes: &[u8], checksum_at: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, pair) in bytes.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_at && at < checksum_at + 4 {
            continue;
        }
        let word = u16::from_le_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG_AT: usize = 0x40;
    const OPT_SIZE: usize = 240;

    /// A minimal PE32+ EFI application: DOS header, signature at 0x40, COFF header, a
    /// 240-byte optional header (16 data directories), one `.text` section of 0x30 bytes
    /// at 0x1000; SectionAlignment 0x1000, FileAlignment 0x200, SizeOfHeaders 0x200.
    fn tiny_pe() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        put_u32(&mut b, E_LFANEW, SIG_AT as u32);
        b[SIG_AT..SIG_AT + 4].copy_from_slice(PE_SIGNATURE);
        let coff = SIG_AT + 4;
        put_u16(&mut b, coff, 0x8664);
        put_u16(&mut b, coff + COFF_NUMBER_OF_SECTIONS, 1);
        put_u16(&mut b, coff + COFF_SIZE_OF_OPTIONAL_HEADER, OPT_SIZE as u16);
        let opt = coff + COFF_HEADER_SIZE;
        put_u16(&mut b, opt, PE32_PLUS_MAGIC);
        put_u32(&mut b, opt + OPT_SIZE_OF_CODE, 0x200);
        put_u32(&mut b, opt + OPT_SECTION_ALIGNMENT, 0x1000);
        put_u32(&mut b, opt + OPT_FILE_ALIGNMENT, 0x200);
        put_u32(&mut b, opt + OPT_SIZE_OF_IMAGE, 0x2000);
        put_u32(&mut b, opt + OPT_SIZE_OF_HEADERS, 0x200);
        put_u32(&mut b, opt + PE32_PLUS_NUMBER_OF_RVA_AND_SIZES, 16);
        let sh = opt + OPT_SIZE;
        b[sh..sh + 5].copy_from_slice(b".text");
        put_u32(&mut b, sh + SH_VIRTUAL_SIZE, 0x30);
        put_u32(&mut b, sh + SH_VIRTUAL_ADDRESS, 0x1000);
        put_u32(&mut b, sh + SH_SIZE_OF_RAW_DATA, 0x200);
        put_u32(&mut b, sh + SH_POINTER_TO_RAW_DATA, 0x200);
        put_u32(
            &mut b,
            sh + SH_CHARACTERISTICS,
            IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ,
        );
        b[0x200..0x230].fill(0xc3);
        b
    }

    fn data(name: &'static str, bytes: &'static [u8]) -> NewSection<'static> {
        NewSection {
            name,
            data: bytes,
            characteristics: IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ,
        }
    }

    #[test]
    fn parses_the_tiny_image() {
        let b = tiny_pe();
        let pe = Pe::parse(&b).unwrap();
        assert_eq!(pe.sections().len(), 1);
        assert_eq!(pe.sections()[0].name, ".text");
        assert_eq!(pe.section_data(".text"), Some(&[0xc3; 0x30][..]));
        assert_eq!(pe.section_alignment(), Ok(0x1000));
        assert!(!pe.is_signed());
    }

    #[test]
    fn appended_sections_follow_aligned_in_memory_and_file() {
        let b = tiny_pe();
        let long = vec![0x5a; 0x1234];
        let out = append_sections(
            &b,
            &[
                data(".osrel", b"ID=terra\n"),
                NewSection {
                    name: ".linux",
                    data: &long,
                    characteristics: IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_READ,
                },
            ],
        )
        .unwrap();
        let pe = Pe::parse(&out).unwrap();
        let s = pe.sections();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[1],
            Section {
                name: ".osrel".into(),
                virtual_size: 9,
                virtual_address: 0x2000,
                size_of_raw_data: 0x200,
                pointer_to_raw_data: 0x400,
                characteristics: IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ,
            }
        );
        assert_eq!(s[2].virtual_address, 0x3000);
        assert_eq!(s[2].pointer_to_raw_data, 0x600);
        assert_eq!(s[2].size_of_raw_data, 0x1400);
        assert_eq!(pe.section_data(".osrel"), Some(&b"ID=terra\n"[..]));
        assert_eq!(pe.section_data(".linux"), Some(&long[..]));
        assert_eq!(out.len(), 0x600 + 0x1400);
        // 0x3000 + 0x1400 rounded up to the section alignment.
        assert_eq!(pe.size_of_image(), Ok(0x5000));
        assert_eq!(pe.stored_checksum(), Ok(pe.computed_checksum()));
        let opt = SIG_AT + 4 + COFF_HEADER_SIZE;
        assert_eq!(
            u32_at(&out, opt + OPT_SIZE_OF_CODE, "").unwrap(),
            0x200 + 0x1400
        );
        assert_eq!(
            u32_at(&out, opt + OPT_SIZE_OF_INITIALIZED_DATA, "").unwrap(),
            0x200
        );
        // The stub's own bytes are untouched outside the header fields.
        assert_eq!(out[0x200..0x400], b[0x200..0x400]);
    }

    #[test]
    fn same_inputs_same_bytes() {
        let b = tiny_pe();
        let s = [data(".cmdline", b"console=ttyS0")];
        assert_eq!(append_sections(&b, &s), append_sections(&b, &s));
    }

    #[test]
    fn a_trailing_symbol_table_is_dropped() {
        let mut b = tiny_pe();
        let coff = SIG_AT + 4;
        put_u32(&mut b, coff + COFF_POINTER_TO_SYMBOL_TABLE, 0x400);
        put_u32(&mut b, coff + COFF_NUMBER_OF_SYMBOLS, 2);
        // Two records, then a string table of 4 + 3 bytes: an unaligned file end.
        b.extend_from_slice(&[0x11; 36]);
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(b"ab\0");
        let out = append_sections(&b, &[data(".osrel", b"ID=terra\n")]).unwrap();
        let pe = Pe::parse(&out).unwrap();
        assert_eq!(pe.sections()[1].pointer_to_raw_data, 0x400);
        assert_eq!(u32_at(&out, coff + COFF_POINTER_TO_SYMBOL_TABLE, ""), Ok(0));
        assert_eq!(u32_at(&out, coff + COFF_NUMBER_OF_SYMBOLS, ""), Ok(0));
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(Pe::parse(b"\x7fELF").unwrap_err(), PeError::NotPe);
        let b = tiny_pe();
        assert!(matches!(
            Pe::parse(&b[..0x100]),
            Err(PeError::Truncated { .. })
        ));

        let mut signed = tiny_pe();
        let dirs = SIG_AT + 4 + COFF_HEADER_SIZE + PE32_PLUS_NUMBER_OF_RVA_AND_SIZES + 4;
        put_u32(&mut signed, dirs + CERTIFICATE_TABLE * 8, 0x400);
        put_u32(&mut signed, dirs + CERTIFICATE_TABLE * 8 + 4, 0x10);
        assert_eq!(
            append_sections(&signed, &[data(".osrel", b"x")]),
            Err(PeError::Signed)
        );

        for bad in ["", ".toolongname", ".é"] {
            assert_eq!(
                append_sections(
                    &b,
                    &[data(".osrel", b"x")].map(|mut s| {
                        s.name = bad;
                        s
                    })
                ),
                Err(PeError::SectionName(bad.into()))
            );
        }
        assert_eq!(
            append_sections(&b, &[data(".cmdline", b"")]),
            Err(PeError::EmptySection(".cmdline".into()))
        );

        // The table starts at 0x148 and holds .text: SizeOfHeaders 0x200 leaves room for
        // (0x200 - 0x170) / 40 = 3 more headers.
        let many = [
            data(".a", b"1"),
            data(".b", b"2"),
            data(".c", b"3"),
            data(".d", b"4"),
        ];
        assert!(append_sections(&b, &many[..3]).is_ok());
        assert_eq!(
            append_sections(&b, &many),
            Err(PeError::NoHeaderRoom {
                section: ".d".into()
            })
        );
    }

    #[test]
    fn checksum_skips_its_field_and_adds_the_length() {
        // Words 0x0201 and 0x0403, the field (ignored), an odd last byte 0x05.
        let bytes = [1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 5];
        assert_eq!(checksum(&bytes, 4), 0x0201 + 0x0403 + 5 + 9);
        // Carries fold back into the low 16 bits.
        let bytes = [0xff, 0xff, 0x02, 0x00];
        assert_eq!(checksum(&bytes, 100), (0xffff + 2 - 0x10000 + 1) + 4);
    }

    /// Debian's systemd stub carries a checksum its linker computed: ours agrees on real
    /// bytes, and the stub takes the sections a UKI needs.
    #[test]
    fn the_distributions_stub() {
        let path = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
        let Ok(stub) = std::fs::read(path) else {
            eprintln!("skipped: {path} is missing (apt-get install systemd-boot-efi)");
            return;
        };
        let pe = Pe::parse(&stub).unwrap();
        assert_eq!(pe.stored_checksum(), Ok(pe.computed_checksum()));
        let sections = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
            .map(|name| data(name, b"0123456789"));
        let out = append_sections(&stub, &sections).unwrap();
        let uki = Pe::parse(&out).unwrap();
        let stub_end = pe
            .sections()
            .iter()
            .map(Section::virtual_end)
            .max()
            .unwrap();
        let added = &uki.sections()[pe.sections().len()..];
        assert_eq!(added.len(), 5);
        assert!(u64::from(added[0].virtual_address) >= stub_end);
        assert_eq!(uki.stored_checksum(), Ok(uki.computed_checksum()));
    }
}
