//! Handing a logged-in connection to the kernel's iscsi_tcp over NETLINK_ISCSI, then finding
//! the LUN's block device.
//!
//! Design choice: stage0 carries the login PDUs itself, over the TCP socket, before the
//! kernel sees it; open-iscsi's iscsid/iscsistart (and u-root's iscsinl) bind the socket
//! first and carry the login through the kernel with ISCSI_UEVENT_SEND_PDU and
//! ISCSI_KEVENT_RECV_PDU. Ours keeps one login implementation, the one the host tests drive
//! against tgtd, and needs no event plumbing. What the kernel would have learnt from
//! watching the login is passed explicitly: the next CmdSN at session creation, ExpStatSN
//! and every negotiated value as ISCSI_PARAM_*.
//!
//! Order (as iscsid): create session → create connection → bind the socket → set
//! parameters (DATADGST_EN needs the bound socket) → start. CHAP secrets are not passed:
//! the kernel never logs in again by itself and would only expose them in sysfs.

use std::fmt;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::login::Session;
use super::sys::{self, ev, param, KernelEvent, Uevent};
use super::target::Portal;
use super::text::Digest;

/// Commands the kernel may queue per session (power of two; open-iscsi's default).
pub const CMDS_MAX: u16 = 128;
/// Queue depth per LUN (open-iscsi's default).
pub const QUEUE_DEPTH: u16 = 32;

/// A step of the handoff failed.
#[derive(Debug)]
pub enum HandoffError {
    /// /sys/class/iscsi_transport/tcp/handle is missing: iscsi_tcp is not loaded.
    Transport {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: String,
    },
    /// The netlink socket could not be used.
    Socket(Errno),
    /// The kernel refused a request.
    Kernel {
        /// The request, e.g. "ISCSI_UEVENT_BIND_CONN" or "set param TARGET_NAME".
        op: String,
        /// Its answer.
        errno: Errno,
    },
    /// The kernel did not answer.
    NoReply {
        /// The request.
        op: String,
    },
    /// Writing the SCSI host's scan file failed.
    Scan {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffError::Transport { path, error } => write!(
                f,
                "iscsi_tcp transport not available ({}: {error}); is the iscsi_tcp module in the initramfs?",
                path.display()
            ),
            HandoffError::Socket(e) => write!(f, "NETLINK_ISCSI socket: {e}"),
            HandoffError::Kernel { op, errno } => write!(f, "kernel refused {op}: {errno}"),
            HandoffError::NoReply { op } => write!(f, "kernel did not answer {op}"),
            HandoffError::Scan { path, error } => {
                write!(f, "cannot scan ({}): {error}", path.display())
            }
        }
    }
}

impl std::error::Error for HandoffError {}

/// A NETLINK_ISCSI socket bound to one transport.
pub struct Netlink {
    fd: OwnedFd,
    /// The transport's handle (a kernel pointer, opaque to us).
    pub handle: u64,
    seq: u32,
}

/// A NETLINK_ISCSI socket bound to the multicast `groups` (0: none, requests only).
fn iscsi_socket(groups: u32) -> Result<std::os::fd::OwnedFd, HandoffError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkISCSI,
    )
    .map_err(HandoffError::Socket)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(HandoffError::Socket)?;
    Ok(fd)
}

impl Netlink {
    /// Opens the socket for the transport named `transport` ("tcp") as found under `sys`
    /// (normally /sys).
    pub fn open(sys: &Path, transport: &str) -> Result<Self, HandoffError> {
        let path = sys
            .join("class/iscsi_transport")
            .join(transport)
            .join("handle");
        let handle = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|s| s.trim().parse::<u64>().map_err(|e| e.to_string()))
            .map_err(|error| HandoffError::Transport {
                path: path.clone(),
                error,
            })?;
        let fd = iscsi_socket(0)?;
        // The kernel answers synchronously; a bound keeps PID 1 from hanging on a bug.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(10, 0))
            .map_err(HandoffError::Socket)?;
        Ok(Netlink { fd, handle, seq: 0 })
    }

    /// Sends one request and returns the kernel's reply (the same struct, `r` filled in).
    fn call(&mut self, e: &Uevent, extra: &[u8], op: &str) -> Result<Uevent, HandoffError> {
        let mut payload = e.encode().to_vec();
        payload.extend_from_slice(extra);
        self.seq = self.seq.wrapping_add(1);
        let msg = sys::nlmsg(e.kind as u16, self.seq, &payload);
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(HandoffError::Socket)?;
        let mut buf = vec![0u8; 8192];
        for _ in 0..16 {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(HandoffError::Socket(e)),
            };
            for (kind, body) in sys::nlmsgs(&buf[..n]) {
                // Replies carry the request's type in nlmsg_type (iscsi_if_send_reply).
                if u32::from(kind) != e.kind {
                    continue;
                }
                let Some(reply) = Uevent::decode(body) else {
                    continue;
                };
                if reply.kind == ev::IF_ERROR {
                    return Err(HandoffError::Kernel {
                        op: op.to_string(),
                        errno: Errno::from_raw(-reply.iferror),
                    });
                }
                return Ok(reply);
            }
        }
        Err(HandoffError::NoReply { op: op.to_string() })
    }

    /// For requests whose reply is `r.retcode` (0 or a negative errno).
    fn call_rc(&mut self, e: &Uevent, extra: &[u8], op: &str) -> Result<(), HandoffError> {
        let reply = self.call(e, extra, op)?;
        match reply.r_u32(0) as i32 {
            0 => Ok(()),
            rc => Err(HandoffError::Kernel {
                op: op.to_string(),
                errno: Errno::from_raw(rc.abs()),
            }),
        }
    }

    /// ISCSI_UEVENT_CREATE_SESSION: returns (session id, SCSI host number).
    pub fn create_session(
        &mut self,
        initial_cmdsn: u32,
        cmds_max: u16,
        queue_depth: u16,
    ) -> Result<(u32, u32), HandoffError> {
        let mut e = Uevent::new(ev::CREATE_SESSION, self.handle);
        e.set_u32(0, initial_cmdsn)
            .set_u16(4, cmds_max)
            .set_u16(6, queue_depth);
        let r = self.call(&e, &[], "ISCSI_UEVENT_CREATE_SESSION")?;
        Ok((r.r_u32(0), r.r_u32(4)))
    }

    /// ISCSI_UEVENT_CREATE_CONN: returns the connection id.
    pub fn create_conn(&mut self, sid: u32, cid: u32) -> Result<u32, HandoffError> {
        let mut e = Uevent::new(ev::CREATE_CONN, self.handle);
        e.set_u32(0, sid).set_u32(4, cid);
        let r = self.call(&e, &[], "ISCSI_UEVENT_CREATE_CONN")?;
        if r.r_u32(0) != sid {
            return Err(HandoffError::Kernel {
                op: "ISCSI_UEVENT_CREATE_CONN".into(),
                errno: Errno::EINVAL,
            });
        }
        Ok(r.r_u32(4))
    }

    /// ISCSI_UEVENT_BIND_CONN: the kernel takes its own reference to the socket behind
    /// `fd` (sockfd_lookup), so our descriptor may be closed afterwards.
    pub fn bind_conn(
        &mut self,
        sid: u32,
        cid: u32,
        fd: i32,
        leading: bool,
    ) -> Result<(), HandoffError> {
        let mut e = Uevent::new(ev::BIND_CONN, self.handle);
        e.set_u32(0, sid)
            .set_u32(4, cid)
            .set_u64(8, fd as u64)
            .set_u32(16, u32::from(leading));
        self.call_rc(&e, &[], "ISCSI_UEVENT_BIND_CONN")
    }

    /// ISCSI_UEVENT_SET_PARAM: `value` goes as a NUL-terminated string.
    pub fn set_param(
        &mut self,
        sid: u32,
        cid: u32,
        p: u32,
        value: &str,
    ) -> Result<(), HandoffError> {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        let mut e = Uevent::new(ev::SET_PARAM, self.handle);
        e.set_u32(0, sid)
            .set_u32(4, cid)
            .set_u32(8, p)
            .set_u32(12, data.len() as u32);
        self.call_rc(&e, &data, &format!("set param {}", param::name(p)))
    }

    /// ISCSI_UEVENT_START_CONN: the Full Feature Phase, in the kernel.
    pub fn start_conn(&mut self, sid: u32, cid: u32) -> Result<(), HandoffError> {
        let mut e = Uevent::new(ev::START_CONN, self.handle);
        e.set_u32(0, sid).set_u32(4, cid);
        self.call_rc(&e, &[], "ISCSI_UEVENT_START_CONN")
    }

    /// ISCSI_UEVENT_STOP_CONN with STOP_CONN_TERM (cleanup after a failed handoff).
    pub fn stop_conn(&mut self, sid: u32, cid: u32) -> Result<(), HandoffError> {
        self.stop_conn_with(sid, cid, sys::STOP_CONN_TERM)
    }

    /// ISCSI_UEVENT_STOP_CONN with STOP_CONN_RECOVER, after a connection error: the kernel
    /// releases the dead socket and keeps the session (its disks blocked, not gone). Until
    /// this call it answers BIND_CONN and SEND_PDU on the connection with ENOTCONN.
    pub fn stop_conn_for_recovery(&mut self, sid: u32, cid: u32) -> Result<(), HandoffError> {
        self.stop_conn_with(sid, cid, sys::STOP_CONN_RECOVER)
    }

    fn stop_conn_with(&mut self, sid: u32, cid: u32, flag: u32) -> Result<(), HandoffError> {
        let mut e = Uevent::new(ev::STOP_CONN, self.handle);
        e.set_u32(0, sid)
            .set_u32(4, cid)
            .set_u64(8, 0)
            .set_u32(16, flag);
        self.call_rc(&e, &[], "ISCSI_UEVENT_STOP_CONN")
    }

    /// ISCSI_UEVENT_SEND_PDU: the kernel sends `hdr` (BHS and AHS) and `data` (unpadded) on
    /// a bound connection. Login requests sent this way carry the session's current CmdSN,
    /// which the kernel writes in (only the kernel knows it once the session ran).
    pub fn send_pdu(
        &mut self,
        sid: u32,
        cid: u32,
        hdr: &[u8],
        data: &[u8],
    ) -> Result<(), HandoffError> {
        let mut e = Uevent::new(ev::SEND_PDU, self.handle);
        e.set_u32(0, sid)
            .set_u32(4, cid)
            .set_u32(8, hdr.len() as u32)
            .set_u32(12, data.len() as u32);
        let mut extra = hdr.to_vec();
        extra.extend_from_slice(data);
        self.call_rc(&e, &extra, "ISCSI_UEVENT_SEND_PDU")
    }

    /// ISCSI_UEVENT_DESTROY_CONN.
    pub fn destroy_conn(&mut self, sid: u32, cid: u32) -> Result<(), HandoffError> {
        let mut e = Uevent::new(ev::DESTROY_CONN, self.handle);
        e.set_u32(0, sid).set_u32(4, cid);
        self.call_rc(&e, &[], "ISCSI_UEVENT_DESTROY_CONN")
    }

    /// ISCSI_UEVENT_DESTROY_SESSION.
    pub fn destroy_session(&mut self, sid: u32) -> Result<(), HandoffError> {
        let mut e = Uevent::new(ev::DESTROY_SESSION, self.handle);
        e.set_u32(0, sid);
        self.call_rc(&e, &[], "ISCSI_UEVENT_DESTROY_SESSION")
    }
}

/// A NETLINK_ISCSI socket in the multicast group the kernel sends its events to
/// ([`sys::NL_GRP_ISCSID`]): connection errors, and the PDUs of a login it carries.
/// Requests go through a [`Netlink`] of their own, so replies and events never mix.
pub struct Events {
    fd: OwnedFd,
    buf: Vec<u8>,
    /// Events read while waiting for another one, oldest first.
    backlog: std::collections::VecDeque<KernelEvent>,
}

impl Events {
    /// Joins the group. Every member gets every event: an iscsid started later sees them too.
    pub fn open() -> Result<Self, HandoffError> {
        let fd = iscsi_socket(1 << (sys::NL_GRP_ISCSID - 1))?;
        Ok(Events {
            fd,
            buf: vec![0u8; 16_384],
            backlog: Default::default(),
        })
    }

    /// The next event, waiting at most `timeout`; None when none came. An overrun socket
    /// (ENOBUFS: events were lost) reads as None too: callers re-check the connections'
    /// states in sysfs on every timeout anyway.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<KernelEvent>, HandoffError> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(Some(e));
        }
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(HandoffError::Socket(e)),
        }
        let n = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ENOBUFS) => return Ok(None),
            Err(e) => return Err(HandoffError::Socket(e)),
        };
        for (_, body) in sys::nlmsgs(&self.buf[..n]) {
            if let Some(e) = KernelEvent::decode(body) {
                self.backlog.push_back(e);
            }
        }
        Ok(self.backlog.pop_front())
    }

    /// Puts back an event read while waiting for another, for the next [`Events::next`].
    pub fn defer(&mut self, e: KernelEvent) {
        self.backlog.push_back(e);
    }
}

/// The state of a kernel connection as sysfs shows it (`up`, `failed`, `down`, `bound`);
/// None when it does not exist (any more).
pub fn conn_state(sys: &Path, sid: u32, cid: u32) -> Option<String> {
    let p = sys.join(format!(
        "class/iscsi_connection/connection{sid}:{cid}/state"
    ));
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A session the kernel now runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// iSCSI session id (/sys/class/iscsi_session/session<sid>).
    pub sid: u32,
    /// Connection id.
    pub cid: u32,
    /// SCSI host number (/sys/class/scsi_host/host<host>).
    pub host: u32,
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// The ISCSI_PARAM_* values for a negotiated session, in the order iscsid sets them.
/// `persistent` is the portal the session belongs to (where a recovery would reconnect).
pub fn kernel_params<S>(s: &Session<S>, persistent: &Portal) -> Vec<(u32, String)> {
    let n = &s.negotiated;
    let mut v = vec![
        (
            param::MAX_RECV_DLENGTH,
            n.max_recv_data_segment_length.to_string(),
        ),
        (
            param::MAX_XMIT_DLENGTH,
            n.max_xmit_data_segment_length.to_string(),
        ),
        (param::HDRDGST_EN, flag(n.header_digest == Digest::Crc32c)),
        (param::DATADGST_EN, flag(n.data_digest == Digest::Crc32c)),
        (param::INITIAL_R2T_EN, flag(n.initial_r2t)),
        (param::MAX_R2T, n.max_outstanding_r2t.to_string()),
        (param::IMM_DATA_EN, flag(n.immediate_data)),
        (param::FIRST_BURST, n.first_burst_length.to_string()),
        (param::MAX_BURST, n.max_burst_length.to_string()),
        (param::PDU_INORDER_EN, flag(n.data_pdu_in_order)),
        (param::DATASEQ_INORDER_EN, flag(n.data_sequence_in_order)),
        (param::ERL, n.error_recovery_level.to_string()),
        (param::EXP_STATSN, s.exp_stat_sn.to_string()),
        (param::TARGET_NAME, s.target_name.clone()),
        (param::INITIATOR_NAME, s.initiator_name.clone()),
        (param::PERSISTENT_ADDRESS, persistent.host.clone()),
        (param::PERSISTENT_PORT, persistent.port.to_string()),
        (param::IFACE_NAME, "default".to_string()),
    ];
    if let Some(t) = n.target_portal_group_tag {
        v.push((param::TPGT, t.to_string()));
    }
    if let Some(a) = &n.target_alias {
        v.push((param::TARGET_ALIAS, a.clone()));
    }
    // How the kernel notices a dead connection and how long it holds I/O for a new one
    // (see RECOVERY_TMO_SECS).
    v.push((param::RECV_TMO, NOP_INTERVAL_SECS.to_string()));
    v.push((param::PING_TMO, NOP_TIMEOUT_SECS.to_string()));
    v.push((param::SESS_RECOVERY_TMO, RECOVERY_TMO_SECS.to_string()));
    v
}

/// Seconds of silence before the kernel pings the target with a NOP-Out, and seconds the
/// answer may take before the connection counts as failed: open-iscsi's defaults
/// (`noop_out_interval`, `noop_out_timeout`). Without them a connection whose peer vanished
/// without a FIN or RST (a link down, a rebooted target host) fails only when TCP gives
/// up, after many minutes.
pub const NOP_INTERVAL_SECS: u32 = 5;
/// See [`NOP_INTERVAL_SECS`].
pub const NOP_TIMEOUT_SECS: u32 = 5;
/// How long a failed connection may take to come back before the kernel fails the root
/// disk's I/O (open-iscsi's `replacement_timeout`, kernel default 120 s). Raised to 300 s:
/// Terra's keeper reconnects within seconds of the target's return, and for a root disk
/// waiting for a target that reboots (a few minutes) beats failing writes, which leaves a
/// read-only or broken root. The kernel drops it to 0 on its own once shutdown begins.
pub const RECOVERY_TMO_SECS: u32 = 300;

/// Sets the parameters of a new login on connection `cid` of session `sid` and starts it
/// (the last steps of a handoff, and of a recovery).
pub fn configure_and_start(
    nl: &mut Netlink,
    sid: u32,
    cid: u32,
    params: &[(u32, String)],
) -> Result<(), HandoffError> {
    for (p, v) in params {
        nl.set_param(sid, cid, *p, v)?;
    }
    nl.start_conn(sid, cid)
}

/// Gives a logged-in session to the kernel. On failure the half-made kernel session is torn
/// down again (best effort) and the error says which step failed.
pub fn hand_off(
    nl: &mut Netlink,
    session: Session<TcpStream>,
    persistent: &Portal,
) -> Result<Handoff, HandoffError> {
    // The kernel numbers the session's commands from here: the login used CmdSN
    // `session.cmd_sn` as an immediate PDU, so the first SCSI command carries it again.
    let (sid, host) = nl.create_session(session.cmd_sn, CMDS_MAX, QUEUE_DEPTH)?;
    let result = (|| {
        let cid = nl.create_conn(sid, 0)?;
        nl.bind_conn(sid, cid, session.stream().as_fd().as_raw_fd(), true)?;
        configure_and_start(nl, sid, cid, &kernel_params(&session, persistent))?;
        Ok(cid)
    })();
    match result {
        Ok(cid) => {
            // Our descriptor closes here; the kernel keeps the socket.
            drop(session);
            Ok(Handoff { sid, cid, host })
        }
        Err(e) => {
            let _ = nl.stop_conn(sid, 0);
            let _ = nl.destroy_conn(sid, 0);
            let _ = nl.destroy_session(sid);
            Err(e)
        }
    }
}

/// Asks the SCSI host to scan all channels, targets and LUNs. The write returns once the
/// scan is done (REPORT LUNS and INQUIRY answered); block devices follow when sd_mod binds.
pub fn scan(sys: &Path, host: u32) -> Result<(), HandoffError> {
    let path = sys.join(format!("class/scsi_host/host{host}/scan"));
    std::fs::write(&path, "- - -").map_err(|e| HandoffError::Scan {
        path,
        error: e.to_string(),
    })
}

/// Whether block device `name` is a LUN of SCSI host `host` (and LUN `lun`, when given):
/// its `device` link resolves to `…/host<host>/…/<host>:<channel>:<id>:<lun>`.
pub fn block_is_lun(sys_block: &Path, name: &str, host: u32, lun: Option<u64>) -> bool {
    let Ok(dev) = std::fs::canonicalize(sys_block.join(name).join("device")) else {
        return false;
    };
    let Some(hctl) = dev.file_name().and_then(|f| f.to_str()) else {
        return false;
    };
    let parts: Vec<&str> = hctl.split(':').collect();
    let [h, _, _, l] = parts.as_slice() else {
        return false;
    };
    h.parse::<u32>().ok() == Some(host)
        && lun.is_none_or(|want| l.parse::<u64>().ok() == Some(want))
}

/// How long to wait between checks for a LUN's disk.
pub const POLL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::text::Negotiated;

    #[test]
    fn block_devices_are_matched_by_hctl() {
        let d = tempfile::tempdir().unwrap();
        let devs = d.path().join("devices/platform/host2/session1/target2:0:0");
        for l in ["2:0:0:0", "2:0:0:1"] {
            std::fs::create_dir_all(devs.join(l)).unwrap();
        }
        let block = d.path().join("class/block");
        std::fs::create_dir_all(block.join("sda")).unwrap();
        std::fs::create_dir_all(block.join("vda")).unwrap();
        std::os::unix::fs::symlink(devs.join("2:0:0:1"), block.join("sda/device")).unwrap();
        assert!(block_is_lun(&block, "sda", 2, Some(1)));
        assert!(block_is_lun(&block, "sda", 2, None));
        assert!(!block_is_lun(&block, "sda", 2, Some(0)));
        assert!(!block_is_lun(&block, "sda", 3, None));
        assert!(!block_is_lun(&block, "vda", 2, None));
        assert!(!block_is_lun(&block, "nope", 2, None));
    }

    #[test]
    fn missing_transport_says_what_to_load() {
        let e = Netlink::open(Path::new("/nonexistent"), "tcp")
            .err()
            .unwrap();
        assert!(e.to_string().contains("iscsi_tcp"), "{e}");
    }

    #[test]
    fn kernel_params_carry_the_negotiation() {
        let s = crate::iscsi::login::tests_support::session(Negotiated {
            header_digest: Digest::Crc32c,
            target_portal_group_tag: Some(1),
            ..Negotiated::default()
        });
        let p = kernel_params(
            &s,
            &Portal {
                host: "10.0.2.2".into(),
                port: 3260,
            },
        );
        let get = |k| p.iter().find(|(x, _)| *x == k).map(|(_, v)| v.as_str());
        assert_eq!(get(param::HDRDGST_EN), Some("1"));
        assert_eq!(get(param::DATADGST_EN), Some("0"));
        assert_eq!(get(param::EXP_STATSN), Some("101"));
        assert_eq!(get(param::TARGET_NAME), Some("iqn.2024-01.test:t"));
        assert_eq!(get(param::PERSISTENT_ADDRESS), Some("10.0.2.2"));
        assert_eq!(get(param::TPGT), Some("1"));
        assert_eq!(get(param::MAX_XMIT_DLENGTH), Some("8192"));
        // Digests must be set after bind; nothing secret is ever passed.
        assert!(p.iter().all(|(k, _)| *k < 22 || *k > 25));
    }
}
