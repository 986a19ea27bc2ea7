//! Raw kernel interfaces of the iscsi phase: the C layout of NETLINK_ISCSI messages
//! (`struct iscsi_uevent` in include/scsi/iscsi_if.h), encoded by hand in native byte order
//! so no struct is ever transmuted.

/// `enum iscsi_uevent_e`: requests (UEVENT_BASE = 10) and kernel events (KEVENT_BASE = 100).
pub mod ev {
    /// ISCSI_UEVENT_CREATE_SESSION.
    pub const CREATE_SESSION: u32 = 11;
    /// ISCSI_UEVENT_DESTROY_SESSION.
    pub const DESTROY_SESSION: u32 = 12;
    /// ISCSI_UEVENT_CREATE_CONN.
    pub const CREATE_CONN: u32 = 13;
    /// ISCSI_UEVENT_DESTROY_CONN.
    pub const DESTROY_CONN: u32 = 14;
    /// ISCSI_UEVENT_BIND_CONN.
    pub const BIND_CONN: u32 = 15;
    /// ISCSI_UEVENT_SET_PARAM.
    pub const SET_PARAM: u32 = 16;
    /// ISCSI_UEVENT_START_CONN.
    pub const START_CONN: u32 = 17;
    /// ISCSI_UEVENT_STOP_CONN.
    pub const STOP_CONN: u32 = 18;
    /// ISCSI_UEVENT_SEND_PDU: the kernel sends a PDU on a bound connection (login).
    pub const SEND_PDU: u32 = 19;
    /// ISCSI_KEVENT_RECV_PDU: a PDU the kernel received and leaves to userspace (login).
    pub const RECV_PDU: u32 = 101;
    /// ISCSI_KEVENT_CONN_ERROR: a connection failed (`r.connerror`).
    pub const CONN_ERROR: u32 = 102;
    /// ISCSI_KEVENT_IF_ERROR: the kernel's reply when it refused the request.
    pub const IF_ERROR: u32 = 103;
}

/// `ISCSI_NL_GRP_ISCSID`: the multicast group of kernel events for the session daemon
/// (connection errors, received login PDUs).
pub const NL_GRP_ISCSID: u32 = 1;

/// `STOP_CONN_TERM`: the connection goes away.
pub const STOP_CONN_TERM: u32 = 0x1;
/// `STOP_CONN_RECOVER`: the connection is stopped for a new login; the session stays, its
/// SCSI devices blocked until the connection starts again or the recovery timeout ends.
pub const STOP_CONN_RECOVER: u32 = 0x3;

/// `enum iscsi_param`, the ones stage0 sets.
pub mod param {
    /// ISCSI_PARAM_MAX_RECV_DLENGTH.
    pub const MAX_RECV_DLENGTH: u32 = 0;
    /// ISCSI_PARAM_MAX_XMIT_DLENGTH.
    pub const MAX_XMIT_DLENGTH: u32 = 1;
    /// ISCSI_PARAM_HDRDGST_EN.
    pub const HDRDGST_EN: u32 = 2;
    /// ISCSI_PARAM_DATADGST_EN.
    pub const DATADGST_EN: u32 = 3;
    /// ISCSI_PARAM_INITIAL_R2T_EN.
    pub const INITIAL_R2T_EN: u32 = 4;
    /// ISCSI_PARAM_MAX_R2T.
    pub const MAX_R2T: u32 = 5;
    /// ISCSI_PARAM_IMM_DATA_EN.
    pub const IMM_DATA_EN: u32 = 6;
    /// ISCSI_PARAM_FIRST_BURST.
    pub const FIRST_BURST: u32 = 7;
    /// ISCSI_PARAM_MAX_BURST.
    pub const MAX_BURST: u32 = 8;
    /// ISCSI_PARAM_PDU_INORDER_EN.
    pub const PDU_INORDER_EN: u32 = 9;
    /// ISCSI_PARAM_DATASEQ_INORDER_EN.
    pub const DATASEQ_INORDER_EN: u32 = 10;
    /// ISCSI_PARAM_ERL.
    pub const ERL: u32 = 11;
    /// ISCSI_PARAM_EXP_STATSN.
    pub const EXP_STATSN: u32 = 14;
    /// ISCSI_PARAM_TARGET_NAME.
    pub const TARGET_NAME: u32 = 15;
    /// ISCSI_PARAM_TPGT.
    pub const TPGT: u32 = 16;
    /// ISCSI_PARAM_PERSISTENT_ADDRESS.
    pub const PERSISTENT_ADDRESS: u32 = 17;
    /// ISCSI_PARAM_PERSISTENT_PORT.
    pub const PERSISTENT_PORT: u32 = 18;
    /// ISCSI_PARAM_SESS_RECOVERY_TMO: seconds a failed connection may take to come back
    /// before the kernel fails the session's I/O.
    pub const SESS_RECOVERY_TMO: u32 = 19;
    /// ISCSI_PARAM_PING_TMO: seconds a NOP-Out may wait for its NOP-In.
    pub const PING_TMO: u32 = 30;
    /// ISCSI_PARAM_RECV_TMO: seconds of silence before the kernel sends a NOP-Out.
    pub const RECV_TMO: u32 = 31;
    /// ISCSI_PARAM_IFACE_NAME.
    pub const IFACE_NAME: u32 = 32;
    /// ISCSI_PARAM_INITIATOR_NAME.
    pub const INITIATOR_NAME: u32 = 34;
    /// ISCSI_PARAM_TARGET_ALIAS.
    pub const TARGET_ALIAS: u32 = 36;

    /// The name of a parameter, for error messages.
    pub fn name(p: u32) -> &'static str {
        match p {
            MAX_RECV_DLENGTH => "MAX_RECV_DLENGTH",
            MAX_XMIT_DLENGTH => "MAX_XMIT_DLENGTH",
            HDRDGST_EN => "HDRDGST_EN",
            DATADGST_EN => "DATADGST_EN",
            INITIAL_R2T_EN => "INITIAL_R2T_EN",
            MAX_R2T => "MAX_R2T",
            IMM_DATA_EN => "IMM_DATA_EN",
            FIRST_BURST => "FIRST_BURST",
            MAX_BURST => "MAX_BURST",
            PDU_INORDER_EN => "PDU_INORDER_EN",
            DATASEQ_INORDER_EN => "DATASEQ_INORDER_EN",
            ERL => "ERL",
            EXP_STATSN => "EXP_STATSN",
            TARGET_NAME => "TARGET_NAME",
            TPGT => "TPGT",
            PERSISTENT_ADDRESS => "PERSISTENT_ADDRESS",
            PERSISTENT_PORT => "PERSISTENT_PORT",
            SESS_RECOVERY_TMO => "SESS_RECOVERY_TMO",
            PING_TMO => "PING_TMO",
            RECV_TMO => "RECV_TMO",
            IFACE_NAME => "IFACE_NAME",
            INITIATOR_NAME => "INITIATOR_NAME",
            TARGET_ALIAS => "TARGET_ALIAS",
            _ => "?",
        }
    }
}

/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
pub const NLMSG_HDR_LEN: usize = 16;

/// `struct iscsi_uevent`, 56 bytes, 8-byte aligned:
///
/// | offset | field |
/// |---|---|
/// | 0 | `uint32_t type` |
/// | 4 | `uint32_t iferror` (a negative errno in replies) |
/// | 8 | `uint64_t transport_handle` |
/// | 16 | `union u` (requests), 24 bytes: its largest members, `msg_bind_conn` and `msg_stop_conn` (u32, u32, u64, u32), pad to 24 |
/// | 40 | `union r` (replies), 16 bytes: `msg_recv_req` (u32, u32, u64) is the largest |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `type`.
    pub kind: u32,
    /// `iferror`.
    pub iferror: i32,
    /// `transport_handle`.
    pub transport_handle: u64,
    /// `u`.
    pub u: [u8; 24],
    /// `r`.
    pub r: [u8; 16],
}

impl Uevent {
    /// sizeof(struct iscsi_uevent).
    pub const LEN: usize = 56;

    /// A zeroed request.
    pub fn new(kind: u32, transport_handle: u64) -> Self {
        Uevent {
            kind,
            iferror: 0,
            transport_handle,
            u: [0; 24],
            r: [0; 16],
        }
    }

    /// Writes a u32 at `off` in the `u` union.
    pub fn set_u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.u[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// Writes a u16 at `off` in the `u` union.
    pub fn set_u16(&mut self, off: usize, v: u16) -> &mut Self {
        self.u[off..off + 2].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// Writes a u64 at `off` in the `u` union.
    pub fn set_u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.u[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// Reads a u32 at `off` in the `r` union.
    pub fn r_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.r[off..off + 4]);
        u32::from_ne_bytes(b)
    }

    /// The bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.iferror.to_ne_bytes());
        b[8..16].copy_from_slice(&self.transport_handle.to_ne_bytes());
        b[16..40].copy_from_slice(&self.u);
        b[40..56].copy_from_slice(&self.r);
        b
    }

    /// From bytes; None if too short.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b = b.get(..Self::LEN)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut h = [0u8; 8];
        h.copy_from_slice(&b[8..16]);
        let mut u = [0u8; 24];
        u.copy_from_slice(&b[16..40]);
        let mut r = [0u8; 16];
        r.copy_from_slice(&b[40..56]);
        Some(Uevent {
            kind: u32_at(0),
            iferror: u32_at(4) as i32,
            transport_handle: u64::from_ne_bytes(h),
            u,
            r,
        })
    }
}

/// A kernel event the keeper acts on (multicast to [`NL_GRP_ISCSID`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// `ISCSI_KEVENT_CONN_ERROR`: `r.connerror` is `{sid, cid, error}` (enum iscsi_err).
    ConnError {
        /// Session.
        sid: u32,
        /// Connection.
        cid: u32,
        /// `enum iscsi_err` (e.g. 1011 ISCSI_ERR_CONN_FAILED).
        error: u32,
    },
    /// `ISCSI_KEVENT_RECV_PDU`: `r.recv_req` is `{sid, cid, recv_handle}`; the PDU (header,
    /// then its data segment without padding) follows the struct.
    RecvPdu {
        /// Session.
        sid: u32,
        /// Connection.
        cid: u32,
        /// Header and data, as the kernel copied them.
        pdu: Vec<u8>,
    },
    /// Any other event.
    Other(u32),
}

impl KernelEvent {
    /// Decodes the payload of an event message; None if too short.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let e = Uevent::decode(body)?;
        Some(match e.kind {
            ev::CONN_ERROR => KernelEvent::ConnError {
                sid: e.r_u32(0),
                cid: e.r_u32(4),
                error: e.r_u32(8),
            },
            ev::RECV_PDU => KernelEvent::RecvPdu {
                sid: e.r_u32(0),
                cid: e.r_u32(4),
                pdu: body.get(Uevent::LEN..).unwrap_or_default().to_vec(),
            },
            k => KernelEvent::Other(k),
        })
    }
}

/// A netlink message: header plus payload, padded to 4 bytes (NLMSG_ALIGN). The kernel
/// routes iSCSI requests by the uevent type, which open-iscsi also puts in `nlmsg_type`.
pub fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + payload.len();
    let mut m = Vec::with_capacity(len + 3);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&std::process::id().to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(len.div_ceil(4) * 4, 0);
    m
}

/// Splits a buffer of netlink messages into (type, payload) pairs.
pub fn nlmsgs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + NLMSG_HDR_LEN <= buf.len() {
        let b = &buf[at..];
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR_LEN || len > b.len() {
            break;
        }
        out.push((kind, &b[NLMSG_HDR_LEN..len]));
        at += len.div_ceil(4) * 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_layout_matches_iscsi_if_h() {
        // ISCSI_UEVENT_BIND_CONN: sid 3, cid 0, transport_eph 7, is_leading 1.
        let mut e = Uevent::new(ev::BIND_CONN, 0x1122_3344_5566_7788);
        e.set_u32(0, 3).set_u32(4, 0).set_u64(8, 7).set_u32(16, 1);
        let b = e.encode();
        assert_eq!(b.len(), 56);
        assert_eq!(&b[0..4], &15u32.to_ne_bytes());
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(&b[16..20], &3u32.to_ne_bytes());
        assert_eq!(&b[24..32], &7u64.to_ne_bytes());
        assert_eq!(&b[32..36], &1u32.to_ne_bytes());
        assert_eq!(Uevent::decode(&b), Some(e));
        assert_eq!(Uevent::decode(&b[..55]), None);
    }

    #[test]
    fn kernel_events_decode_as_iscsi_if_h_lays_them_out() {
        let mut e = Uevent::new(ev::CONN_ERROR, 0);
        e.r[0..4].copy_from_slice(&2u32.to_ne_bytes());
        e.r[4..8].copy_from_slice(&0u32.to_ne_bytes());
        e.r[8..12].copy_from_slice(&1011u32.to_ne_bytes());
        assert_eq!(
            KernelEvent::decode(&e.encode()),
            Some(KernelEvent::ConnError {
                sid: 2,
                cid: 0,
                error: 1011
            })
        );
        let mut e = Uevent::new(ev::RECV_PDU, 0);
        e.r[0..4].copy_from_slice(&3u32.to_ne_bytes());
        let mut b = e.encode().to_vec();
        b.extend_from_slice(&[0x23; 48]);
        assert_eq!(
            KernelEvent::decode(&b),
            Some(KernelEvent::RecvPdu {
                sid: 3,
                cid: 0,
                pdu: vec![0x23; 48]
            })
        );
        assert_eq!(KernelEvent::decode(&[0; 10]), None);
    }

    #[test]
    fn netlink_framing_round_trips() {
        let e = Uevent::new(ev::SET_PARAM, 1).encode();
        let mut payload = e.to_vec();
        payload.extend_from_slice(b"iqn.x\0");
        let m = nlmsg(16, 1, &payload);
        assert_eq!(m.len() % 4, 0);
        let mut two = m.clone();
        two.extend_from_slice(&nlmsg(17, 2, &e));
        let msgs = nlmsgs(&two);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].0, 16);
        assert_eq!(msgs[0].1, &payload[..]);
        assert_eq!(msgs[1].0, 17);
        assert!(nlmsgs(&[0u8; 7]).is_empty());
        assert!(nlmsgs(&[0xffu8; 40]).is_empty());
    }
}
