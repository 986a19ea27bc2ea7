//! One recovery attempt: a new TCP connection bound to the session's existing kernel
//! connection, a login carried by the kernel, then the new parameters and a start.
//!
//! Why the kernel carries the login here (stage0 logs in over its own socket at boot): the
//! session has run, and only the kernel knows its current CmdSN. A login request must carry
//! it (RFC 7143 §11.12.9 / §4.2.2.1: a continued session expects it, a reinstated one starts
//! numbering from it), and the kernel writes it into every login PDU it sends for us
//! (ISCSI_UEVENT_SEND_PDU). Its answers come back as ISCSI_KEVENT_RECV_PDU. [`KernelLink`]
//! makes that pair a `Read + Write`, so login.rs's state machine runs unchanged.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use super::Kept;
use crate::iscsi::login::{self, LoginError, LoginErrorKind, Session};
use crate::iscsi::netlink::{self, Events, HandoffError, Netlink};
use crate::iscsi::pdu::{Bhs, BHS_LEN};
use crate::iscsi::sys::KernelEvent;

/// A recovery attempt failed.
#[derive(Debug)]
pub enum RecoveryError {
    /// Connecting or logging in failed (names portal, target and status).
    Login(LoginError),
    /// The kernel refused a step.
    Kernel {
        /// Target name.
        target: String,
        /// Portal.
        portal: String,
        /// The step and the kernel's answer.
        error: HandoffError,
    },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::Login(e) => e.fmt(f),
            RecoveryError::Kernel {
                target,
                portal,
                error,
            } => write!(f, "session with {target} at {portal}: {error}"),
        }
    }
}

impl std::error::Error for RecoveryError {}

/// A bound connection's login traffic through the kernel: written PDUs go out with
/// ISCSI_UEVENT_SEND_PDU, and reads return the PDUs the kernel hands up. Owns the TCP
/// socket (the kernel holds its own reference after the bind) and netlink sockets of its
/// own, so events it consumes are never missed by the keeper's main socket (every member of
/// the group gets every event).
pub struct KernelLink {
    nl: Netlink,
    events: Events,
    sid: u32,
    cid: u32,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    deadline: Instant,
    _socket: TcpStream,
}

impl KernelLink {
    /// Binds `socket` to connection `cid` of session `sid` (STOP_CONN_RECOVER must have
    /// released the old one).
    pub fn bind(
        sys: &Path,
        sid: u32,
        cid: u32,
        socket: TcpStream,
        deadline: Instant,
    ) -> Result<Self, HandoffError> {
        // Listening before anything is sent: the first answer may come at once.
        let events = Events::open()?;
        let mut nl = Netlink::open(sys, "tcp")?;
        nl.bind_conn(sid, cid, socket.as_raw_fd(), true)?;
        Ok(KernelLink {
            nl,
            events,
            sid,
            cid,
            out: Vec::new(),
            inbuf: Vec::new(),
            deadline,
            _socket: socket,
        })
    }

    /// Sends every complete PDU in `out`.
    fn flush_pdus(&mut self) -> io::Result<()> {
        while let Some((hdr_len, data_len, total)) = complete_pdu(&self.out) {
            let (hdr, rest) = self.out.split_at(hdr_len);
            self.nl
                .send_pdu(self.sid, self.cid, hdr, &rest[..data_len])
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.out.drain(..total);
        }
        Ok(())
    }
}

/// When `buf` starts with a whole PDU (no digests: none during a login): its header
/// length (BHS and AHS), data length and length on the wire (data padded to 4).
fn complete_pdu(buf: &[u8]) -> Option<(usize, usize, usize)> {
    let bhs = Bhs::new(buf.get(..BHS_LEN)?).ok()?;
    let hdr_len = BHS_LEN + bhs.ahs_len();
    let data_len = bhs.data_len();
    let total = hdr_len + data_len + (4 - data_len % 4) % 4;
    (buf.len() >= total).then_some((hdr_len, data_len, total))
}

impl Write for KernelLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.flush_pdus()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pdus()
    }
}

impl Read for KernelLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.inbuf.is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no login response"));
            }
            let event = self
                .events
                .next(left.min(std::time::Duration::from_secs(1)))
                .map_err(|e| io::Error::other(e.to_string()))?;
            match event {
                Some(KernelEvent::RecvPdu { sid, cid, pdu })
                    if (sid, cid) == (self.sid, self.cid) =>
                {
                    // The kernel copies the 48-byte header and the data without its padding;
                    // the PDU reader expects the wire form.
                    self.inbuf = pdu;
                    let data_len = self.inbuf.len().saturating_sub(BHS_LEN);
                    self.inbuf
                        .resize(self.inbuf.len() + (4 - data_len % 4) % 4, 0);
                }
                Some(KernelEvent::ConnError { sid, cid, error })
                    if (sid, cid) == (self.sid, self.cid) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("the kernel reports connection error {error} during the login"),
                    ));
                }
                _ => {}
            }
        }
        let n = buf.len().min(self.inbuf.len());
        buf[..n].copy_from_slice(&self.inbuf[..n]);
        self.inbuf.drain(..n);
        Ok(n)
    }
}

/// Reconnects `k` with TSIH `tsih` (0: reinstate the session) and puts the new connection into the kernel session:
/// connect (following redirects) → bind → login through the kernel → parameters → start.
/// On failure the connection is stopped for recovery again, ready for the next attempt.
/// Returns the session's TSIH (a new one when the target reinstated the session).
pub fn attempt(nl: &mut Netlink, sys: &Path, k: &Kept, tsih: u16) -> Result<u16, RecoveryError> {
    let mut cfg = k.login_config();
    cfg.tsih = tsih;
    let (sid, cid) = (k.sid, k.cid);
    let kernel = |error| RecoveryError::Kernel {
        target: k.target.clone(),
        portal: k.portal.to_string(),
        error,
    };
    let session: Session<KernelLink> =
        login::connect_via(&k.portal, &cfg, &mut |stream, cfg, deadline| {
            let result = KernelLink::bind(sys, sid, cid, stream, deadline)
                .map_err(|e| LoginErrorKind::Io(io::Error::other(e.to_string())))
                .and_then(|link| {
                    login::login(link, cfg, deadline, &mut crate::entropy::fill_secret)
                });
            if result.is_err() {
                // Releases the socket just bound (if it was): the next bind needs a free slot.
                let _ = nl.stop_conn_for_recovery(sid, cid);
            }
            result
        })
        .map_err(RecoveryError::Login)?;
    let params = netlink::kernel_params(&session, &k.portal);
    if let Err(e) = netlink::configure_and_start(nl, sid, cid, &params) {
        let _ = nl.stop_conn_for_recovery(sid, cid);
        return Err(kernel(e));
    }
    Ok(session.tsih)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::pdu::{Digests, LoginRequest, Pdu, Stage};

    #[test]
    fn written_bytes_split_into_pdus_as_the_kernel_wants_them() {
        let pdu = Pdu::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 0, 0, 0],
            tsih: 3,
            itt: 0,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: b"InitiatorName=iqn.x\0".to_vec(),
        })
        .emit(Digests::default());
        assert_eq!(pdu.len(), 48 + 20);
        assert_eq!(complete_pdu(&pdu[..47]), None);
        assert_eq!(complete_pdu(&pdu[..60]), None);
        assert_eq!(complete_pdu(&pdu), Some((48, 20, 68)));
        let mut two = pdu.clone();
        two.extend_from_slice(&pdu[..10]);
        assert_eq!(complete_pdu(&two), Some((48, 20, 68)));
    }
}
