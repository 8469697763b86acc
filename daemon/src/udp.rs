//! What the three UDP services share: socket buffers and the receive step.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Asks the kernel for larger socket buffers (best effort: the kernel caps it
/// at `net.core.rmem_max`), so a burst of datagrams is queued, not dropped.
pub fn set_buffer_sizes(socket: &UdpSocket, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    for r in [
        sock.set_recv_buffer_size(bytes),
        sock.set_send_buffer_size(bytes),
    ] {
        if let Err(e) = r {
            tracing::debug!(error = %e, "setsockopt buffer size");
        }
    }
}

/// Says once, at start, when the kernel granted udp_upload's socket less
/// receive buffer than asked (`net.core.rmem_max`), and what that costs.
pub(crate) fn warn_if_small(socket: &UdpSocket, asked: usize) {
    let got = socket2::SockRef::from(socket)
        .recv_buffer_size()
        .unwrap_or(0);
    // Linux reports twice the size it grants (its bookkeeping share).
    if got < asked {
        tracing::warn!(
            asked_mib = asked >> 20,
            granted_kib = got >> 10,
            "udp_upload: the kernel caps the socket receive buffer (net.core.rmem_max); an unpaced client on a busy machine may need retries: install deploy/60-ferry.conf (the package does)"
        );
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
