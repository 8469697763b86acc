//! What the three UDP services share: socket buffers and the receive step.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

/// Asks the kernel for larger socket buffers (best effort: the kernel caps it
/// at `net.core.rmem_max`), so a burst of datagrams is queued, not dropped.
pub fn set_buffer_sizes(socket: &UdpSocket, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket fd, a pointer to a c_int and its length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "setsockopt buffer size");
        }
    }
}

/// A UDP socket bound to `addr` (with `SO_REUSEPORT` when `shared`), and
/// connected to `peer` when given: a connected socket on a shared port gets
/// that peer's datagrams and, above all, its ICMP errors (a closed port stops
/// a download at the next send instead of being flooded).
pub(crate) fn bind(
    addr: SocketAddr,
    shared: bool,
    peer: Option<SocketAddr>,
) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    if let Some(peer) = peer {
        s.connect(&peer.into())?;
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// The next datagram into `buf`: its length and sender. Errors from the
/// socket (ICMP errors from earlier sends surface here) are logged at debug
/// and skipped, so they never end a service's receive loop.
pub(crate) async fn recv_datagram(socket: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
    loop {
        match socket.recv_from(buf).await {
            Ok(pair) => return pair,
            Err(e) => tracing::debug!(error = %e, "recv_from"),
        }
    }
}
