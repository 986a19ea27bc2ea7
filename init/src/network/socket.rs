//! The DHCP client's socket: UDP port 68 bound to one interface.
//!
//! Why not AF_PACKET: an unconfigured interface can still send a UDP broadcast when the
//! socket is bound to it (SO_BINDTODEVICE; the kernel routes 255.255.255.255 out of the bound
//! device with source 0.0.0.0), and it receives replies that are broadcast, which servers do
//! when the request has the BROADCAST flag (RFC 2131 §4.1) and QEMU's user networking always
//! does. So no raw frames, no IP/UDP header building or checksums, no BPF filter and no
//! `unsafe`; the kernel demultiplexes by interface, so one socket per interface can share
//! port 68 (SO_REUSEADDR) and the clients run in parallel. The cost: a server that ignores
//! the BROADCAST flag and unicasts to the offered address is not heard.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use super::dhcp::Transport;

/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// UDP port of DHCP servers.
pub const SERVER_PORT: u16 = 67;

/// A UDP socket of `family` bound to device `ifname`, sharing its port (SO_REUSEADDR) with
/// the sockets of other devices. The device comes first: the port is then shared only with
/// sockets bound to other devices.
fn udp_on(family: AddressFamily, ifname: &str) -> Result<std::os::fd::OwnedFd, Errno> {
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    Ok(fd)
}

/// One datagram from source port `port` within `timeout`; None on timeout or for a datagram
/// from another port (another client's broadcast, say).
fn recv_from_port(
    sock: &UdpSocket,
    buf: &mut [u8],
    timeout: Duration,
    port: u16,
) -> std::io::Result<Option<usize>> {
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    match sock.recv_from(buf) {
        Ok((n, from)) if from.port() == port => Ok(Some(n)),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A UDP socket on port 68 of one interface, sending broadcasts to port 67.
pub struct UdpTransport {
    sock: UdpSocket,
}

impl UdpTransport {
    /// Binds 0.0.0.0:68 on `ifname`.
    pub fn bind(ifname: &str) -> Result<Self, Errno> {
        let fd = udp_on(AddressFamily::Inet, ifname)?;
        setsockopt(&fd, sockopt::Broadcast, &true)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
        )?;
        Ok(UdpTransport {
            sock: UdpSocket::from(fd),
        })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        self.sock
            .send_to(packet, SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT))
            .map(drop)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        recv_from_port(&self.sock, buf, timeout, SERVER_PORT)
    }
}

/// The DHCPv6 client's socket: UDP port 546 on one interface's link-local address, sending
/// to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) port 547 through that interface
/// (RFC 8415 §7.1, §18.2). Bound to the link-local address so the kernel's source is the
/// one servers answer to; the address must have left DAD's tentative state first, or the
/// bind fails (`EADDRNOTAVAIL`).
pub struct UdpTransport6 {
    sock: UdpSocket,
    ifindex: u32,
}

impl UdpTransport6 {
    /// Binds `[link_local%ifindex]:546` on `ifname`.
    pub fn bind(ifname: &str, ifindex: u32, link_local: std::net::Ipv6Addr) -> Result<Self, Errno> {
        use nix::sys::socket::SockaddrIn6;
        let fd = udp_on(AddressFamily::Inet6, ifname)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(std::net::SocketAddrV6::new(
                link_local,
                super::dhcp6::CLIENT_PORT,
                0,
                ifindex,
            )),
        )?;
        Ok(UdpTransport6 {
            sock: UdpSocket::from(fd),
            ifindex,
        })
    }
}

impl super::dhcp6::Transport6 for UdpTransport6 {
    fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        self.sock
            .send_to(
                packet,
                std::net::SocketAddrV6::new(
                    super::dhcp6::ALL_SERVERS,
                    super::dhcp6::SERVER_PORT,
                    0,
                    self.ifindex,
                ),
            )
            .map(drop)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        recv_from_port(&self.sock, buf, timeout, super::dhcp6::SERVER_PORT)
    }
}
