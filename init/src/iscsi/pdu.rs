//! iSCSI PDUs (RFC 7143 §11): the 48-byte Basic Header Segment as a checked view with named
//! offsets, the PDUs an initiator sends or receives during login and a simple read as typed
//! structs, and framing (AHS, padding, CRC32C digests). No I/O beyond `Read`/`Write`.
//! Opcodes we do not model (R2T, Async Message, Task Management, SNACK, Data-Out) are kept
//! whole as [`Pdu::Other`].

use std::fmt;
use std::io::{self, Read, Write};

/// Length of the Basic Header Segment (§11.2.1).
pub const BHS_LEN: usize = 48;
/// The largest data segment the 24-bit DataSegmentLength can describe (§11.2.1.5).
pub const MAX_DATA_SEGMENT: usize = (1 << 24) - 1;
/// The Initiator/Target Task Tag value meaning "none" (§11.18.4, §11.19.4).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Opcodes (§11.2.1.2). Initiator opcodes are 0x00–0x1f, target opcodes 0x20–0x3f.
pub mod op {
    /// NOP-Out (§11.18).
    pub const NOP_OUT: u8 = 0x00;
    /// SCSI Command (§11.3).
    pub const SCSI_COMMAND: u8 = 0x01;
    /// Login Request (§11.12).
    pub const LOGIN_REQUEST: u8 = 0x03;
    /// Text Request (§11.10).
    pub const TEXT_REQUEST: u8 = 0x04;
    /// Logout Request (§11.14).
    pub const LOGOUT_REQUEST: u8 = 0x06;
    /// NOP-In (§11.19).
    pub const NOP_IN: u8 = 0x20;
    /// SCSI Response (§11.4).
    pub const SCSI_RESPONSE: u8 = 0x21;
    /// Login Response (§11.13).
    pub const LOGIN_RESPONSE: u8 = 0x23;
    /// Text Response (§11.11).
    pub const TEXT_RESPONSE: u8 = 0x24;
    /// SCSI Data-In (§11.7).
    pub const DATA_IN: u8 = 0x25;
    /// Logout Response (§11.15).
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    /// Reject (§11.17).
    pub const REJECT: u8 = 0x3f;
}

/// Named offsets of the BHS fields common to every PDU (§11.2.1).
mod off {
    /// Byte 0: bit 6 = I (immediate delivery), bits 0–5 = opcode (§11.2.1.1, §11.2.1.2).
    pub const OPCODE: usize = 0;
    /// Byte 1: F bit and opcode-specific flags (§11.2.1.3).
    pub const FLAGS: usize = 1;
    /// Byte 4: TotalAHSLength in 4-byte words (§11.2.1.4).
    pub const TOTAL_AHS_LEN: usize = 4;
    /// Bytes 5–7: DataSegmentLength, 24 bits, padding excluded (§11.2.1.5).
    pub const DATA_LEN: usize = 5;
    /// Bytes 8–15: LUN, or opcode-specific (ISID + TSIH in login PDUs) (§11.2.1.6).
    pub const LUN: usize = 8;
    /// Bytes 16–19: Initiator Task Tag (§11.2.1.7).
    pub const ITT: usize = 16;
}

/// What went wrong decoding a PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduError {
    /// Fewer bytes than the header announces.
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The data segment is longer than the receiver accepts.
    TooLong {
        /// Announced DataSegmentLength.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A CRC32C header or data digest did not match (§13.1).
    Digest {
        /// "header" or "data".
        which: &'static str,
        /// Digest on the wire.
        got: u32,
        /// Digest computed.
        want: u32,
    },
    /// A field holds a value the PDU cannot carry.
    Field {
        /// The PDU.
        pdu: &'static str,
        /// What is wrong.
        what: &'static str,
    },
}

impl fmt::Display for PduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PduError::Short { need, got } => write!(f, "truncated PDU: {got} of {need} bytes"),
            PduError::TooLong { len, max } => {
                write!(f, "data segment of {len} bytes exceeds the limit of {max}")
            }
            PduError::Digest { which, got, want } => write!(
                f,
                "{which} digest mismatch: got {got:#010x}, computed {want:#010x}"
            ),
            PduError::Field { pdu, what } => write!(f, "invalid {pdu}: {what}"),
        }
    }
}

impl std::error::Error for PduError {}

/// A checked view over a Basic Header Segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bhs<'a>(&'a [u8; BHS_LEN]);

impl<'a> Bhs<'a> {
    /// Views the first 48 bytes of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, PduError> {
        bytes
            .get(..BHS_LEN)
            .and_then(|b| <&[u8; BHS_LEN]>::try_from(b).ok())
            .map(Bhs)
            .ok_or(PduError::Short {
                need: BHS_LEN,
                got: bytes.len(),
            })
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8; BHS_LEN] {
        self.0
    }

    /// The opcode without the I bit.
    pub fn opcode(&self) -> u8 {
        self.0[off::OPCODE] & 0x3f
    }

    /// The I (immediate) bit (§11.2.1.1).
    pub fn immediate(&self) -> bool {
        self.0[off::OPCODE] & 0x40 != 0
    }

    /// Byte 1.
    pub fn flags(&self) -> u8 {
        self.0[off::FLAGS]
    }

    /// Additional Header Segments length in bytes (§11.2.1.4).
    pub fn ahs_len(&self) -> usize {
        usize::from(self.0[off::TOTAL_AHS_LEN]) * 4
    }

    /// DataSegmentLength in bytes, padding excluded (§11.2.1.5).
    pub fn data_len(&self) -> usize {
        let b = &self.0[off::DATA_LEN..off::DATA_LEN + 3];
        (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
    }

    /// Bytes 8–15 as a big-endian number (the LUN field of most PDUs).
    pub fn lun(&self) -> u64 {
        self.u64_at(off::LUN)
    }

    /// Initiator Task Tag (§11.2.1.7).
    pub fn itt(&self) -> u32 {
        self.u32_at(off::ITT)
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_be_bytes(b)
    }
}

impl fmt::Debug for Bhs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bhs")
            .field("opcode", &format_args!("{:#04x}", self.opcode()))
            .field("immediate", &self.immediate())
            .field("flags", &format_args!("{:#04x}", self.flags()))
            .field("ahs_len", &self.ahs_len())
            .field("data_len", &self.data_len())
            .field("itt", &format_args!("{:#010x}", self.itt()))
            .finish()
    }
}

/// A builder for a BHS: zeroed, fields written at their offsets.
struct BhsBuf([u8; BHS_LEN]);

impl BhsBuf {
    fn new(opcode: u8, immediate: bool, flags: u8) -> Self {
        let mut b = [0u8; BHS_LEN];
        b[off::OPCODE] = opcode | if immediate { 0x40 } else { 0 };
        b[off::FLAGS] = flags;
        BhsBuf(b)
    }
    fn u8(&mut self, at: usize, v: u8) -> &mut Self {
        self.0[at] = v;
        self
    }
    fn u16(&mut self, at: usize, v: u16) -> &mut Self {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(&mut self, at: usize, v: &[u8]) -> &mut Self {
        self.0[at..at + v.len()].copy_from_slice(v);
        self
    }
}

/// A whole PDU as it travels: BHS, AHS and data segment (unpadded). Digests are not stored;
/// they are computed and checked by [`RawPdu::encode`] and [`RawPdu::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPdu {
    /// The BHS; AHS length and DataSegmentLength in it are rewritten on encode.
    pub bhs: [u8; BHS_LEN],
    /// Additional Header Segments (a multiple of 4 bytes).
    pub ahs: Vec<u8>,
    /// The data segment, without padding.
    pub data: Vec<u8>,
}

/// Which digests are in effect on a connection (§13.1). They apply only in the Full Feature
/// Phase: login PDUs never carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

impl RawPdu {
    /// A view of the BHS.
    pub fn view(&self) -> Bhs<'_> {
        Bhs(&self.bhs)
    }

    /// Encodes with lengths filled in, padding, and the digests in effect.
    pub fn encode(&self, digests: Digests) -> Vec<u8> {
        let mut bhs = self.bhs;
        let ahs_words = u8::try_from(self.ahs.len().div_ceil(4)).unwrap_or(u8::MAX);
        bhs[off::TOTAL_AHS_LEN] = ahs_words;
        let len = self.data.len().min(MAX_DATA_SEGMENT);
        bhs[off::DATA_LEN..off::DATA_LEN + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        let mut out = Vec::with_capacity(BHS_LEN + self.ahs.len() + len + 12);
        out.extend_from_slice(&bhs);
        out.extend_from_slice(&self.ahs);
        out.resize(BHS_LEN + usize::from(ahs_words) * 4, 0);
        if digests.header {
            out.extend_from_slice(&crc32c(&out).to_le_bytes());
        }
        if len > 0 {
            let start = out.len();
            out.extend_from_slice(&self.data[..len]);
            out.resize(out.len() + pad4(len), 0);
            if digests.data {
                let d = crc32c(&out[start..]);
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
        out
    }

    /// Decodes one PDU from the front of `bytes`; returns it and the bytes consumed.
    /// `max_data` bounds the data segment the caller is willing to accept.
    pub fn decode(
        bytes: &[u8],
        digests: Digests,
        max_data: usize,
    ) -> Result<(RawPdu, usize), PduError> {
        let bhs = Bhs::new(bytes)?;
        let data_len = bhs.data_len();
        if data_len > max_data {
            return Err(PduError::TooLong {
                len: data_len,
                max: max_data,
            });
        }
        let hdr_end = BHS_LEN + bhs.ahs_len();
        let hdr_digest_end = hdr_end + if digests.header { 4 } else { 0 };
        let data_end = hdr_digest_end + data_len + pad4(data_len);
        let total = data_end + if digests.data && data_len > 0 { 4 } else { 0 };
        if bytes.len() < total {
            return Err(PduError::Short {
                need: total,
                got: bytes.len(),
            });
        }
        if digests.header {
            check_digest("header", &bytes[..hdr_end], &bytes[hdr_end..hdr_digest_end])?;
        }
        if digests.data && data_len > 0 {
            check_digest(
                "data",
                &bytes[hdr_digest_end..data_end],
                &bytes[data_end..total],
            )?;
        }
        Ok((
            RawPdu {
                bhs: *bhs.bytes(),
                ahs: bytes[BHS_LEN..hdr_end].to_vec(),
                data: bytes[hdr_digest_end..hdr_digest_end + data_len].to_vec(),
            },
            total,
        ))
    }

    /// Reads one PDU from a stream.
    pub fn read_from<R: Read>(r: &mut R, digests: Digests, max_data: usize) -> io::Result<Self> {
        let mut bhs = [0u8; BHS_LEN];
        r.read_exact(&mut bhs)?;
        let view = Bhs(&bhs);
        let data_len = view.data_len();
        if data_len > max_data {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                PduError::TooLong {
                    len: data_len,
                    max: max_data,
                },
            ));
        }
        let rest = view.ahs_len()
            + if digests.header { 4 } else { 0 }
            + data_len
            + pad4(data_len)
            + if digests.data && data_len > 0 { 4 } else { 0 };
        let mut buf = Vec::with_capacity(BHS_LEN + rest);
        buf.extend_from_slice(&bhs);
        buf.resize(BHS_LEN + rest, 0);
        r.read_exact(&mut buf[BHS_LEN..])?;
        RawPdu::decode(&buf, digests, max_data)
            .map(|(p, _)| p)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes the PDU to a stream in one write.
    pub fn write_to<W: Write>(&self, w: &mut W, digests: Digests) -> io::Result<()> {
        w.write_all(&self.encode(digests))?;
        w.flush()
    }
}

fn check_digest(which: &'static str, covered: &[u8], wire: &[u8]) -> Result<(), PduError> {
    let got = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]);
    let want = crc32c(covered);
    if got == want {
        Ok(())
    } else {
        Err(PduError::Digest { which, got, want })
    }
}

/// CRC32C (Castagnoli), the iSCSI digest (§13.1; test vectors in RFC 7143 Appendix B.4).
/// It goes on the wire least significant byte first, as the appendix shows.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crate::crc::CASTAGNOLI.checksum(bytes)
}

/// Login stages, the CSG and NSG fields (§11.12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    Security,
    /// 1: LoginOperationalNegotiation.
    Operational,
    /// 3: FullFeaturePhase.
    FullFeature,
    /// 2 is reserved.
    Reserved,
}

impl Stage {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Stage::Security,
            1 => Stage::Operational,
            3 => Stage::FullFeature,
            _ => Stage::Reserved,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Stage::Security => 0,
            Stage::Operational => 1,
            Stage::Reserved => 2,
            Stage::FullFeature => 3,
        }
    }
}

/// Transit/Continue/CSG/NSG in byte 1 of login PDUs (§11.12.1–§11.12.3).
fn login_flags(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> u8 {
    (if transit { 0x80 } else { 0 })
        | (if cont { 0x40 } else { 0 })
        | (csg.bits() << 2)
        | if transit { nsg.bits() } else { 0 }
}

/// Login Request (§11.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to go to stage `nsg` (§11.12.1).
    pub transit: bool,
    /// C: the text continues in the next PDU (§11.12.2).
    pub cont: bool,
    /// Current stage (§11.12.3).
    pub csg: Stage,
    /// Next stage; meaningful only with `transit` (§11.12.3).
    pub nsg: Stage,
    /// Version-max (§11.12.4); 0 for RFC 7143.
    pub version_max: u8,
    /// Version-min (§11.12.5).
    pub version_min: u8,
    /// Initiator Session ID (§11.12.5).
    pub isid: [u8; 6],
    /// Target Session Identifying Handle; 0 for a new session (§11.12.6).
    pub tsih: u16,
    /// Initiator Task Tag, the same for the whole login (§11.12.7).
    pub itt: u32,
    /// Connection ID (§11.12.8).
    pub cid: u16,
    /// CmdSN: the session's initial CmdSN on a leading login (§11.12.9).
    pub cmd_sn: u32,
    /// ExpStatSN (§11.12.10).
    pub exp_stat_sn: u32,
    /// Text keys (§11.12.11).
    pub data: Vec<u8>,
}

/// Login Response (§11.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    /// T (§11.13.1).
    pub transit: bool,
    /// C (§11.13.2).
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max (§11.13.3).
    pub version_max: u8,
    /// Version-active (§11.13.4).
    pub version_active: u8,
    /// ISID as sent.
    pub isid: [u8; 6],
    /// TSIH, set by the target in the final response (§11.12.6).
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN (§11.13.3).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class (§11.13.5): 0 success, 1 redirection, 2 initiator error, 3 target error.
    pub status_class: u8,
    /// Status-Detail (§11.13.5).
    pub status_detail: u8,
    /// Text keys.
    pub data: Vec<u8>,
}

/// Text Request (§11.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    /// I bit.
    pub immediate: bool,
    /// F: final (§11.10.1).
    pub final_: bool,
    /// C: continue (§11.10.2).
    pub cont: bool,
    /// LUN or reserved.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (§11.10.4).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Text keys.
    pub data: Vec<u8>,
}

/// Text Response (§11.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    /// F: final (§11.11.1).
    pub final_: bool,
    /// C: continue (§11.11.2).
    pub cont: bool,
    /// LUN or reserved.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (§11.11.4).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Text keys.
    pub data: Vec<u8>,
}

/// SCSI Command (§11.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    /// I bit.
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows (§11.3.1).
    pub final_: bool,
    /// R: data flows to the initiator (§11.3.1).
    pub read: bool,
    /// W: data flows to the target (§11.3.1).
    pub write: bool,
    /// ATTR: task attribute, 0 untagged, 1 simple … (§11.3.1).
    pub attr: u8,
    /// Logical Unit Number, in SAM's 8-byte format (see [`lun_to_wire`]).
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length (§11.3.4).
    pub expected_len: u32,
    /// CmdSN (§11.3.5).
    pub cmd_sn: u32,
    /// ExpStatSN (§11.3.6).
    pub exp_stat_sn: u32,
    /// Command Descriptor Block, zero-padded to 16 bytes (§11.3.7).
    pub cdb: [u8; 16],
    /// Immediate data.
    pub data: Vec<u8>,
}

/// SCSI Response (§11.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o, u, O, U: bidirectional overflow/underflow, overflow, underflow (§11.4.1).
    pub flags: u8,
    /// iSCSI Response: 0 command completed at target (§11.4.3).
    pub response: u8,
    /// SCSI status, e.g. 0 GOOD, 2 CHECK CONDITION (§11.4.2).
    pub status: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// SNACK Tag (§11.4.6).
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN (§11.4.6).
    pub exp_data_sn: u32,
    /// Bidirectional Read Residual Count (§11.4.5).
    pub bidi_residual: u32,
    /// Residual Count (§11.4.5).
    pub residual: u32,
    /// SenseLength + sense data, or response data (§11.4.7).
    pub data: Vec<u8>,
}

/// SCSI Data-In (§11.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIn {
    /// F: last PDU of the sequence (§11.7.1).
    pub final_: bool,
    /// A: the target asks for a DataACK SNACK (§11.7.2).
    pub ack: bool,
    /// O: residual overflow (§11.7.5).
    pub overflow: bool,
    /// U: residual underflow (§11.7.5).
    pub underflow: bool,
    /// S: the PDU carries the SCSI status (§11.7.3).
    pub has_status: bool,
    /// SCSI status, valid with `has_status`.
    pub status: u8,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag.
    pub ttt: u32,
    /// StatSN, valid with `has_status`.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN (§11.7.4).
    pub data_sn: u32,
    /// Buffer Offset (§11.7.6).
    pub offset: u32,
    /// Residual Count (§11.7.5).
    pub residual: u32,
    /// The data.
    pub data: Vec<u8>,
}

/// Logout Request (§11.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// I bit.
    pub immediate: bool,
    /// Reason Code: 0 close the session, 1 the connection, 2 for recovery (§11.14.1).
    pub reason: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID to close (§11.14.3).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// Logout Response (§11.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response: 0 closed successfully (§11.15.1).
    pub response: u8,
    /// Initiator Task Tag.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait (§11.15.2).
    pub time2wait: u16,
    /// Time2Retain (§11.15.3).
    pub time2retain: u16,
}

/// NOP-Out (§11.18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    /// I bit.
    pub immediate: bool,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag; [`RESERVED_TAG`] when answering a NOP-In (§11.18.1).
    pub itt: u32,
    /// Target Transfer Tag: copied from the NOP-In being answered (§11.18.2).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Ping data.
    pub data: Vec<u8>,
}

/// NOP-In (§11.19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag: not [`RESERVED_TAG`] when the target wants an answer (§11.19.1).
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Ping data.
    pub data: Vec<u8>,
}

/// Reject (§11.17).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Reason (§11.17.1), e.g. 0x04 protocol error, 0x09 invalid PDU field.
    pub reason: u8,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (§11.17.2).
    pub data_sn: u32,
    /// The rejected PDU's header (§11.17.3).
    pub data: Vec<u8>,
}

/// A PDU, typed where we model it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// Login Request.
    LoginRequest(LoginRequest),
    /// Login Response.
    LoginResponse(LoginResponse),
    /// Text Request.
    TextRequest(TextRequest),
    /// Text Response.
    TextResponse(TextResponse),
    /// SCSI Command.
    ScsiCommand(ScsiCommand),
    /// SCSI Response.
    ScsiResponse(ScsiResponse),
    /// SCSI Data-In.
    DataIn(DataIn),
    /// Logout Request.
    LogoutRequest(LogoutRequest),
    /// Logout Response.
    LogoutResponse(LogoutResponse),
    /// NOP-Out.
    NopOut(NopOut),
    /// NOP-In.
    NopIn(NopIn),
    /// Reject.
    Reject(Reject),
    /// Any other opcode, or a modelled one carrying AHS (extended CDBs), kept whole.
    Other(RawPdu),
}

impl Pdu {
    /// The PDU's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Pdu::LoginRequest(_) => "Login Request",
            Pdu::LoginResponse(_) => "Login Response",
            Pdu::TextRequest(_) => "Text Request",
            Pdu::TextResponse(_) => "Text Response",
            Pdu::ScsiCommand(_) => "SCSI Command",
            Pdu::ScsiResponse(_) => "SCSI Response",
            Pdu::DataIn(_) => "SCSI Data-In",
            Pdu::LogoutRequest(_) => "Logout Request",
            Pdu::LogoutResponse(_) => "Logout Response",
            Pdu::NopOut(_) => "NOP-Out",
            Pdu::NopIn(_) => "NOP-In",
            Pdu::Reject(_) => "Reject",
            Pdu::Other(_) => "PDU",
        }
    }

    /// Types a raw PDU. Never fails: what we do not model stays [`Pdu::Other`].
    pub fn from_raw(raw: RawPdu) -> Pdu {
        if !raw.ahs.is_empty() {
            return Pdu::Other(raw);
        }
        let b = Bhs(&raw.bhs);
        let fl = b.flags();
        let bit = |m: u8| fl & m != 0;
        let isid = |b: &Bhs<'_>| {
            let mut i = [0u8; 6];
            i.copy_from_slice(&b.0[8..14]);
            i
        };
        match b.opcode() {
            op::LOGIN_REQUEST => Pdu::LoginRequest(LoginRequest {
                transit: bit(0x80),
                cont: bit(0x40),
                csg: Stage::from_bits(fl >> 2),
                nsg: Stage::from_bits(fl),
                version_max: b.0[2],
                version_min: b.0[3],
                isid: isid(&b),
                tsih: b.u16_at(14),
                itt: b.itt(),
                cid: b.u16_at(20),
                cmd_sn: b.u32_at(24),
                exp_stat_sn: b.u32_at(28),
                data: raw.data,
            }),
            op::LOGIN_RESPONSE => Pdu::LoginResponse(LoginResponse {
                transit: bit(0x80),
                cont: bit(0x40),
                csg: Stage::from_bits(fl >> 2),
                nsg: Stage::from_bits(fl),
                version_max: b.0[2],
                version_active: b.0[3],
                isid: isid(&b),
                tsih: b.u16_at(14),
                itt: b.itt(),
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                status_class: b.0[36],
                status_detail: b.0[37],
                data: raw.data,
            }),
            op::TEXT_REQUEST => Pdu::TextRequest(TextRequest {
                immediate: b.immediate(),
                final_: bit(0x80),
                cont: bit(0x40),
                lun: b.lun(),
                itt: b.itt(),
                ttt: b.u32_at(20),
                cmd_sn: b.u32_at(24),
                exp_stat_sn: b.u32_at(28),
                data: raw.data,
            }),
            op::TEXT_RESPONSE => Pdu::TextResponse(TextResponse {
                final_: bit(0x80),
                cont: bit(0x40),
                lun: b.lun(),
                itt: b.itt(),
                ttt: b.u32_at(20),
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                data: raw.data,
            }),
            op::SCSI_COMMAND => {
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&b.0[32..48]);
                Pdu::ScsiCommand(ScsiCommand {
                    immediate: b.immediate(),
                    final_: bit(0x80),
                    read: bit(0x40),
                    write: bit(0x20),
                    attr: fl & 7,
                    lun: b.lun(),
                    itt: b.itt(),
                    expected_len: b.u32_at(20),
                    cmd_sn: b.u32_at(24),
                    exp_stat_sn: b.u32_at(28),
                    cdb,
                    data: raw.data,
                })
            }
            op::SCSI_RESPONSE => Pdu::ScsiResponse(ScsiResponse {
                flags: fl & 0x1e,
                response: b.0[2],
                status: b.0[3],
                itt: b.itt(),
                snack_tag: b.u32_at(20),
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                exp_data_sn: b.u32_at(36),
                bidi_residual: b.u32_at(40),
                residual: b.u32_at(44),
                data: raw.data,
            }),
            op::DATA_IN => Pdu::DataIn(DataIn {
                final_: bit(0x80),
                ack: bit(0x40),
                overflow: bit(0x04),
                underflow: bit(0x02),
                has_status: bit(0x01),
                status: b.0[3],
                lun: b.lun(),
                itt: b.itt(),
                ttt: b.u32_at(20),
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                data_sn: b.u32_at(36),
                offset: b.u32_at(40),
                residual: b.u32_at(44),
                data: raw.data,
            }),
            op::LOGOUT_REQUEST if raw.data.is_empty() => Pdu::LogoutRequest(LogoutRequest {
                immediate: b.immediate(),
                reason: fl & 0x7f,
                itt: b.itt(),
                cid: b.u16_at(20),
                cmd_sn: b.u32_at(24),
                exp_stat_sn: b.u32_at(28),
            }),
            op::LOGOUT_RESPONSE if raw.data.is_empty() => Pdu::LogoutResponse(LogoutResponse {
                response: b.0[2],
                itt: b.itt(),
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                time2wait: b.u16_at(40),
                time2retain: b.u16_at(42),
            }),
            op::NOP_OUT => Pdu::NopOut(NopOut {
                immediate: b.immediate(),
                lun: b.lun(),
                itt: b.itt(),
                ttt: b.u32_at(20),
                cmd_sn: b.u32_at(24),
                exp_stat_sn: b.u32_at(28),
                data: raw.data,
            }),
            op::NOP_IN => Pdu::NopIn(NopIn {
                lun: b.lun(),
                itt: b.itt(),
                ttt: b.u32_at(20),
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                data: raw.data,
            }),
            op::REJECT => Pdu::Reject(Reject {
                reason: b.0[2],
                stat_sn: b.u32_at(24),
                exp_cmd_sn: b.u32_at(28),
                max_cmd_sn: b.u32_at(32),
                data_sn: b.u32_at(36),
                data: raw.data,
            }),
            _ => Pdu::Other(raw),
        }
    }

    /// The PDU as bytes-to-be: BHS fields at their offsets, reserved bytes zero.
    pub fn to_raw(&self) -> RawPdu {
        let (h, data) = match self {
            Pdu::LoginRequest(p) => {
                let mut h = BhsBuf::new(
                    op::LOGIN_REQUEST,
                    true,
                    login_flags(p.transit, p.cont, p.csg, p.nsg),
                );
                h.u8(2, p.version_max)
                    .u8(3, p.version_min)
                    .bytes(8, &p.isid)
                    .u16(14, p.tsih)
                    .u32(16, p.itt)
                    .u16(20, p.cid)
                    .u32(24, p.cmd_sn)
                    .u32(28, p.exp_stat_sn);
                (h, p.data.clone())
            }
            Pdu::LoginResponse(p) => {
                let mut h = BhsBuf::new(
                    op::LOGIN_RESPONSE,
                    false,
                    login_flags(p.transit, p.cont, p.csg, p.nsg),
                );
                h.u8(2, p.version_max)
                    .u8(3, p.version_active)
                    .bytes(8, &p.isid)
                    .u16(14, p.tsih)
                    .u32(16, p.itt)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn)
                    .u8(36, p.status_class)
                    .u8(37, p.status_detail);
                (h, p.data.clone())
            }
            Pdu::TextRequest(p) => {
                let mut h = BhsBuf::new(
                    op::TEXT_REQUEST,
                    p.immediate,
                    (if p.final_ { 0x80 } else { 0 }) | if p.cont { 0x40 } else { 0 },
                );
                h.u64(8, p.lun)
                    .u32(16, p.itt)
                    .u32(20, p.ttt)
                    .u32(24, p.cmd_sn)
                    .u32(28, p.exp_stat_sn);
                (h, p.data.clone())
            }
            Pdu::TextResponse(p) => {
                let mut h = BhsBuf::new(
                    op::TEXT_RESPONSE,
                    false,
                    (if p.final_ { 0x80 } else { 0 }) | if p.cont { 0x40 } else { 0 },
                );
                h.u64(8, p.lun)
                    .u32(16, p.itt)
                    .u32(20, p.ttt)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn);
                (h, p.data.clone())
            }
            Pdu::ScsiCommand(p) => {
                let flags = (if p.final_ { 0x80 } else { 0 })
                    | (if p.read { 0x40 } else { 0 })
                    | (if p.write { 0x20 } else { 0 })
                    | (p.attr & 7);
                let mut h = BhsBuf::new(op::SCSI_COMMAND, p.immediate, flags);
                h.u64(8, p.lun)
                    .u32(16, p.itt)
                    .u32(20, p.expected_len)
                    .u32(24, p.cmd_sn)
                    .u32(28, p.exp_stat_sn)
                    .bytes(32, &p.cdb);
                (h, p.data.clone())
            }
            Pdu::ScsiResponse(p) => {
                // Bit 7 of byte 1 is always 1 in a SCSI Response (§11.4).
                let mut h = BhsBuf::new(op::SCSI_RESPONSE, false, 0x80 | (p.flags & 0x1e));
                h.u8(2, p.response)
                    .u8(3, p.status)
                    .u32(16, p.itt)
                    .u32(20, p.snack_tag)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn)
                    .u32(36, p.exp_data_sn)
                    .u32(40, p.bidi_residual)
                    .u32(44, p.residual);
                (h, p.data.clone())
            }
            Pdu::DataIn(p) => {
                let flags = (if p.final_ { 0x80 } else { 0 })
                    | (if p.ack { 0x40 } else { 0 })
                    | (if p.overflow { 0x04 } else { 0 })
                    | (if p.underflow { 0x02 } else { 0 })
                    | if p.has_status { 0x01 } else { 0 };
                let mut h = BhsBuf::new(op::DATA_IN, false, flags);
                h.u8(3, p.status)
                    .u64(8, p.lun)
                    .u32(16, p.itt)
                    .u32(20, p.ttt)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn)
                    .u32(36, p.data_sn)
                    .u32(40, p.offset)
                    .u32(44, p.residual);
                (h, p.data.clone())
            }
            Pdu::LogoutRequest(p) => {
                let mut h = BhsBuf::new(op::LOGOUT_REQUEST, p.immediate, 0x80 | (p.reason & 0x7f));
                h.u32(16, p.itt)
                    .u16(20, p.cid)
                    .u32(24, p.cmd_sn)
                    .u32(28, p.exp_stat_sn);
                (h, Vec::new())
            }
            Pdu::LogoutResponse(p) => {
                let mut h = BhsBuf::new(op::LOGOUT_RESPONSE, false, 0x80);
                h.u8(2, p.response)
                    .u32(16, p.itt)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn)
                    .u16(40, p.time2wait)
                    .u16(42, p.time2retain);
                (h, Vec::new())
            }
            Pdu::NopOut(p) => {
                let mut h = BhsBuf::new(op::NOP_OUT, p.immediate, 0x80);
                h.u64(8, p.lun)
                    .u32(16, p.itt)
                    .u32(20, p.ttt)
                    .u32(24, p.cmd_sn)
                    .u32(28, p.exp_stat_sn);
                (h, p.data.clone())
            }
            Pdu::NopIn(p) => {
                let mut h = BhsBuf::new(op::NOP_IN, false, 0x80);
                h.u64(8, p.lun)
                    .u32(16, p.itt)
                    .u32(20, p.ttt)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn);
                (h, p.data.clone())
            }
            Pdu::Reject(p) => {
                let mut h = BhsBuf::new(op::REJECT, false, 0x80);
                h.u8(2, p.reason)
                    .u32(16, RESERVED_TAG)
                    .u32(24, p.stat_sn)
                    .u32(28, p.exp_cmd_sn)
                    .u32(32, p.max_cmd_sn)
                    .u32(36, p.data_sn);
                (h, p.data.clone())
            }
            Pdu::Other(raw) => return raw.clone(),
        };
        RawPdu {
            bhs: h.0,
            ahs: Vec::new(),
            data,
        }
    }

    /// Parses one PDU from the front of `bytes` (see [`RawPdu::decode`]).
    pub fn parse(
        bytes: &[u8],
        digests: Digests,
        max_data: usize,
    ) -> Result<(Pdu, usize), PduError> {
        RawPdu::decode(bytes, digests, max_data).map(|(raw, n)| (Pdu::from_raw(raw), n))
    }

    /// Encodes the PDU.
    pub fn emit(&self, digests: Digests) -> Vec<u8> {
        self.to_raw().encode(digests)
    }
}

/// A Linux LUN number (as in `H:C:T:L`) in SAM's 8-byte LUN format, the inverse of the
/// kernel's `scsilun_to_int`: each 16-bit level of the number fills two bytes, lowest level
/// first. LUN 1 becomes `00 01 00 00 00 00 00 00` (single-level peripheral addressing).
pub fn lun_to_wire(lun: u64) -> u64 {
    let mut b = [0u8; 8];
    for level in 0..4 {
        let v = ((lun >> (16 * level)) & 0xffff) as u16;
        b[2 * level..2 * level + 2].copy_from_slice(&v.to_be_bytes());
    }
    u64::from_be_bytes(b)
}

/// The inverse of [`lun_to_wire`].
pub fn lun_from_wire(wire: u64) -> u64 {
    let b = wire.to_be_bytes();
    (0..4).fold(0u64, |acc, level| {
        acc | u64::from(u16::from_be_bytes([b[2 * level], b[2 * level + 1]])) << (16 * level)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_matches_rfc7143_appendix_b4() {
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113f_db5c);
        // The appendix's READ(10) SCSI Command PDU.
        let mut read10 = [0u8; 48];
        read10[0] = 0x01;
        read10[1] = 0xc0;
        read10[16..20].copy_from_slice(&[0x14, 0, 0, 0]);
        read10[20..24].copy_from_slice(&[0, 0, 0x04, 0]);
        read10[27] = 0x14;
        read10[31] = 0x18;
        read10[32] = 0x28;
        read10[40] = 0x02;
        assert_eq!(crc32c(&read10), 0xd9963a56);
    }

    fn login_request() -> LoginRequest {
        LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 1, 2, 3, 0, 0],
            tsih: 0,
            itt: 7,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: b"InitiatorName=iqn.2024-01.test:i\0".to_vec(),
        }
    }

    #[test]
    fn login_request_layout() {
        let bytes = Pdu::LoginRequest(login_request()).emit(Digests::default());
        assert_eq!(bytes[0], 0x43, "immediate Login Request");
        assert_eq!(bytes[1], 0x87, "T=1 CSG=1 NSG=3");
        assert_eq!(&bytes[5..8], &[0, 0, 33]);
        assert_eq!(&bytes[8..14], &[0x80, 1, 2, 3, 0, 0]);
        assert_eq!(&bytes[16..20], &[0, 0, 0, 7]);
        assert_eq!(&bytes[24..28], &[0, 0, 0, 1]);
        assert_eq!(bytes.len(), 48 + 36, "padded to 4 bytes");
        let (back, n) = Pdu::parse(&bytes, Digests::default(), 8192).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(back, Pdu::LoginRequest(login_request()));
    }

    #[test]
    fn nsg_is_zero_without_transit() {
        let mut r = login_request();
        r.transit = false;
        let bytes = Pdu::LoginRequest(r).emit(Digests::default());
        assert_eq!(bytes[1], 0x04);
    }

    #[test]
    fn digests_are_checked() {
        let d = Digests {
            header: true,
            data: true,
        };
        let mut bytes = Pdu::LoginRequest(login_request()).emit(d);
        assert_eq!(bytes.len(), 48 + 4 + 36 + 4);
        assert!(Pdu::parse(&bytes, d, 8192).is_ok());
        bytes[60] ^= 1;
        assert!(matches!(
            Pdu::parse(&bytes, d, 8192),
            Err(PduError::Digest { which: "data", .. })
        ));
        bytes[60] ^= 1;
        bytes[3] ^= 1;
        assert!(matches!(
            Pdu::parse(&bytes, d, 8192),
            Err(PduError::Digest {
                which: "header",
                ..
            })
        ));
    }

    #[test]
    fn unknown_opcodes_are_kept_whole() {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x31; // R2T
        bhs[1] = 0x80;
        bhs[20] = 9;
        let raw = RawPdu {
            bhs,
            ahs: Vec::new(),
            data: Vec::new(),
        };
        let bytes = raw.encode(Digests::default());
        let (p, _) = Pdu::parse(&bytes, Digests::default(), 0).unwrap();
        assert_eq!(p, Pdu::Other(raw));
        assert_eq!(p.emit(Digests::default()), bytes);
    }

    #[test]
    fn too_long_data_is_refused_before_reading_it() {
        let mut bhs = [0u8; 48];
        bhs[0] = op::LOGIN_RESPONSE;
        bhs[5] = 0x10; // 1 MiB
        assert_eq!(
            RawPdu::decode(&bhs, Digests::default(), 8192),
            Err(PduError::TooLong {
                len: 1 << 20,
                max: 8192
            })
        );
        let err = RawPdu::read_from(&mut &bhs[..], Digests::default(), 8192).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn luns_follow_linux_numbering() {
        assert_eq!(lun_to_wire(0), 0);
        assert_eq!(lun_to_wire(1), 0x0001_0000_0000_0000);
        assert_eq!(lun_to_wire(255), 0x00ff_0000_0000_0000);
        assert_eq!(lun_to_wire(0x4101), 0x4101_0000_0000_0000);
        for l in [0, 1, 7, 255, 0x4101, 0x1_0002] {
            assert_eq!(lun_from_wire(lun_to_wire(l)), l);
        }
    }

    fn stage() -> impl Strategy<Value = Stage> {
        prop_oneof![
            Just(Stage::Security),
            Just(Stage::Operational),
            Just(Stage::FullFeature)
        ]
    }

    fn data() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn typed() -> impl Strategy<Value = Pdu> {
        prop_oneof![
            (
                any::<bool>(),
                stage(),
                stage(),
                any::<[u8; 6]>(),
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
                data()
            )
                .prop_map(|(c, csg, nsg, isid, tsih, itt, sn, data)| {
                    Pdu::LoginRequest(LoginRequest {
                        transit: true,
                        cont: c,
                        csg,
                        nsg,
                        version_max: 0,
                        version_min: 0,
                        isid,
                        tsih,
                        itt,
                        cid: tsih,
                        cmd_sn: sn,
                        exp_stat_sn: sn ^ itt,
                        data,
                    })
                }),
            (
                stage(),
                stage(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                data()
            )
                .prop_map(|(csg, nsg, class, detail, sn, data)| {
                    Pdu::LoginResponse(LoginResponse {
                        transit: true,
                        cont: false,
                        csg,
                        nsg,
                        version_max: 0,
                        version_active: 0,
                        isid: [0x80, 0, 0, 1, 0, 0],
                        tsih: 3,
                        itt: sn,
                        stat_sn: sn,
                        exp_cmd_sn: sn.wrapping_add(1),
                        max_cmd_sn: sn.wrapping_add(9),
                        status_class: class,
                        status_detail: detail,
                        data,
                    })
                }),
            (any::<bool>(), any::<u64>(), any::<u32>(), data()).prop_map(|(f, lun, tag, data)| {
                Pdu::TextRequest(TextRequest {
                    immediate: f,
                    final_: f,
                    cont: !f,
                    lun,
                    itt: tag,
                    ttt: !tag,
                    cmd_sn: tag,
                    exp_stat_sn: 1,
                    data,
                })
            }),
            (any::<u64>(), any::<u32>(), data()).prop_map(|(lun, tag, data)| {
                Pdu::TextResponse(TextResponse {
                    final_: true,
                    cont: false,
                    lun,
                    itt: tag,
                    ttt: RESERVED_TAG,
                    stat_sn: 1,
                    exp_cmd_sn: 2,
                    max_cmd_sn: 3,
                    data,
                })
            }),
            (any::<[u8; 16]>(), 0u8..8, any::<u32>(), any::<bool>()).prop_map(
                |(cdb, attr, len, r)| Pdu::ScsiCommand(ScsiCommand {
                    immediate: false,
                    final_: true,
                    read: r,
                    write: !r,
                    attr,
                    lun: lun_to_wire(1),
                    itt: len ^ 5,
                    expected_len: len,
                    cmd_sn: 4,
                    exp_stat_sn: 5,
                    cdb,
                    data: Vec::new(),
                })
            ),
            (any::<u8>(), any::<u8>(), data()).prop_map(|(f, status, data)| {
                Pdu::ScsiResponse(ScsiResponse {
                    flags: f & 0x1e,
                    response: 0,
                    status,
                    itt: 1,
                    snack_tag: 0,
                    stat_sn: 2,
                    exp_cmd_sn: 3,
                    max_cmd_sn: 4,
                    exp_data_sn: 5,
                    bidi_residual: 0,
                    residual: 6,
                    data,
                })
            }),
            (any::<[bool; 5]>(), any::<u8>(), any::<u32>(), data()).prop_map(
                |(b, status, n, data)| Pdu::DataIn(DataIn {
                    final_: b[0],
                    ack: b[1],
                    overflow: b[2],
                    underflow: b[3],
                    has_status: b[4],
                    status,
                    lun: 0,
                    itt: n,
                    ttt: RESERVED_TAG,
                    stat_sn: n,
                    exp_cmd_sn: n,
                    max_cmd_sn: n,
                    data_sn: 0,
                    offset: n,
                    residual: 0,
                    data,
                })
            ),
            (0u8..0x80, any::<u16>()).prop_map(|(reason, cid)| Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason,
                itt: 9,
                cid,
                cmd_sn: 10,
                exp_stat_sn: 11,
            })),
            (any::<u8>(), any::<u16>()).prop_map(|(r, t)| Pdu::LogoutResponse(LogoutResponse {
                response: r,
                itt: 9,
                stat_sn: 1,
                exp_cmd_sn: 2,
                max_cmd_sn: 3,
                time2wait: t,
                time2retain: !t,
            })),
            (any::<u32>(), data()).prop_map(|(ttt, data)| Pdu::NopOut(NopOut {
                immediate: true,
                lun: 0,
                itt: RESERVED_TAG,
                ttt,
                cmd_sn: 1,
                exp_stat_sn: 2,
                data,
            })),
            (any::<u32>(), data()).prop_map(|(ttt, data)| Pdu::NopIn(NopIn {
                lun: 0,
                itt: RESERVED_TAG,
                ttt,
                stat_sn: 1,
                exp_cmd_sn: 2,
                max_cmd_sn: 3,
                data,
            })),
            (any::<u8>(), data()).prop_map(|(reason, data)| Pdu::Reject(Reject {
                reason,
                stat_sn: 1,
                exp_cmd_sn: 2,
                max_cmd_sn: 3,
                data_sn: 0,
                data,
            })),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            h in any::<bool>(),
            d in any::<bool>(),
        ) {
            let digests = Digests { header: h, data: d };
            if let Ok((pdu, n)) = Pdu::parse(&bytes, digests, 1 << 16) {
                prop_assert!(n <= bytes.len());
                let _ = pdu.emit(digests);
            }
            let _ = RawPdu::read_from(&mut &bytes[..], digests, 1 << 16);
        }

        #[test]
        fn arbitrary_headers_never_panic(mut bhs in any::<[u8; 48]>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Small lengths so that the data is often complete.
            bhs[4] &= 3;
            bhs[5] = 0;
            bhs[6] = 0;
            let mut bytes = bhs.to_vec();
            bytes.extend(tail);
            if let Ok((pdu, _)) = Pdu::parse(&bytes, Digests::default(), 1 << 16) {
                let _ = pdu.name();
                let _ = pdu.emit(Digests::default());
            }
        }

        #[test]
        fn typed_pdus_round_trip(pdu in typed(), h in any::<bool>(), d in any::<bool>()) {
            let digests = Digests { header: h, data: d };
            let bytes = pdu.emit(digests);
            prop_assert_eq!(bytes.len() % 4, 0);
            let (back, n) = Pdu::parse(&bytes, digests, 1 << 16).unwrap();
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(&back, &pdu);
            prop_assert_eq!(back.emit(digests), bytes);
        }

        #[test]
        fn stream_framing_matches_slice_framing(pdu in typed()) {
            let bytes = pdu.emit(Digests::default());
            let raw = RawPdu::read_from(&mut &bytes[..], Digests::default(), 1 << 16).unwrap();
            prop_assert_eq!(Pdu::from_raw(raw), pdu);
        }
    }
}
