//! What the three UDP services share: socket buffers and the receive step.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

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
    let granted = got / 2;
    if granted < asked {
        tracing::warn!(
            asked_mib = asked >> 20,
            granted_kib = granted >> 10,
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

/// Receive space carved from larger allocations: a datagram big enough to be
/// data leaves as a [`Bytes`] sharing the allocation (no copy and no
/// allocation of its own), a small one is copied out. A live piece keeps its
/// allocation ([`RecvPool::BLOCK`]) alive, so queued data costs at most
/// `BLOCK / SHARE_MIN` (4) times its size, twice for the usual 64 KiB-class
/// datagrams.
pub(crate) struct RecvPool {
    space: BytesMut,
}

impl RecvPool {
    /// One allocation: two datagrams of the largest size.
    const BLOCK: usize = 2 * MAX_DATAGRAM;
    /// Datagrams this large or larger are shared, not copied.
    pub(crate) const SHARE_MIN: usize = 32 * 1024;

    pub(crate) fn new() -> RecvPool {
        RecvPool {
            space: BytesMut::with_capacity(Self::BLOCK),
        }
    }

    /// Receives the next datagram into the pool (never zeroed first: the
    /// kernel writes into spare capacity).
    pub(crate) async fn recv(&mut self, socket: &UdpSocket) -> (usize, SocketAddr) {
        self.space.clear();
        if self.space.capacity() < MAX_DATAGRAM {
            self.space = BytesMut::with_capacity(Self::BLOCK);
        }
        loop {
            match socket.recv_buf_from(&mut self.space).await {
                Ok(pair) => return pair,
                Err(e) => tracing::debug!(error = %e, "recv_from"),
            }
        }
    }

    /// The datagram just received, `n` bytes.
    pub(crate) fn peek(&self, n: usize) -> &[u8] {
        &self.space[..n]
    }

    /// The datagram just received, `n` bytes, to keep.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        match n >= Self::SHARE_MIN {
            true => self.space.split_to(n).freeze(),
            false => Bytes::copy_from_slice(&self.space[..n]),
        }
    }
}

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams taken from the pool stay as received while the pool
    /// receives on: shared ones (large) and copied ones (small) alike, across
    /// the pool's move to a new allocation.
    #[tokio::test]
    async fn taken_datagrams_are_never_overwritten() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let sizes = [
            65_000, 100, 20_000, 65_507, 65_000, 16_384, 16_383, 1, 65_000, 40_000,
        ];
        let mut pool = RecvPool::new();
        let mut kept = Vec::new();
        for (i, &n) in sizes.iter().chain(sizes.iter()).enumerate() {
            let sent: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            tx.send_to(&sent, to).await.unwrap();
            let (got, from) = pool.recv(&rx).await;
            assert_eq!((got, from), (n, tx.local_addr().unwrap()));
            assert_eq!(pool.peek(got), &sent[..]);
            // Every other datagram is only looked at, as a file_info is.
            if i % 2 == 0 || n >= RecvPool::SHARE_MIN {
                kept.push((pool.take(got), sent));
            }
        }
        for (i, (taken, sent)) in kept.iter().enumerate() {
            assert_eq!(&taken[..], &sent[..], "datagram {i}");
        }
    }
}
