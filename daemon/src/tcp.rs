//! What the three TCP services share: the accept loop with its connection
//! caps and refusals, and the two ways a stored file goes out.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::conn::{Connection, Signals, REPLY_TIMEOUT};
use crate::ctx::Ctx;
use crate::failure::{Awaited, Failure};
use crate::limits::{Permit, Refusal};
use crate::report::Transfer;
use crate::storage::{Download, StorageError};

/// Bytes read from disk per write to the socket (64 KiB: with tokio's own file
/// buffer, about 128 KiB per download in flight).
pub(crate) const SEND_CHUNK: usize = 64 * 1024;

/// Refusals being written at once, per service (each lives at most
/// [`REPLY_TIMEOUT`]); past that, a connection over the caps is closed
/// without one, so a flood of connections cannot pile up refusal tasks.
const MAX_REFUSALS: usize = 64;

/// A client's byte stream: a TCP socket in the daemon, an in-memory pipe
/// (`tokio::io::duplex`) in unit tests. How a stored file goes out is the
/// stream's to say: `sendfile(2)` on a socket, a plain copy elsewhere.
pub(crate) trait ClientStream:
    AsyncRead + AsyncWrite + Unpin + Send + Sync + Sized + 'static
{
    /// The stream loose from the runtime that serves it, to be fastened on
    /// another (signal's control thread hands transfers to the main runtime).
    type Loose: Send + 'static;

    /// Sends `download` whole, counting into `t`; no CRC on the wire.
    fn send_file<'a>(
        conn: &'a mut Connection<Self>,
        download: Download,
        t: &'a mut Transfer,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a;

    /// Bytes written that the client's kernel has not yet acknowledged (the
    /// socket's send queue): the handout's pauses start once it is empty.
    fn unsent(&self) -> usize;

    /// Loosens the stream from this runtime.
    fn loosen(self) -> io::Result<Self::Loose>;

    /// Fastens a loosened stream to the runtime this is called on.
    fn fasten(loose: Self::Loose) -> io::Result<Self>;
}

impl ClientStream for TcpStream {
    type Loose = std::net::TcpStream;

    fn send_file<'a>(
        conn: &'a mut Connection<Self>,
        download: Download,
        t: &'a mut Transfer,
    ) -> impl Future<Output = Result<(), Failure>> + Send + 'a {
        sendfile_download(conn, download, t)
    }

    /// `SIOCOUTQ`; 0 if the query fails.
    fn unsent(&self) -> usize {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: the fd is open for the call and `n` is a valid c_int to write to.
        let r = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r < 0 {
            0
        } else {
            usize::try_from(n).unwrap_or(0)
        }
    }

    fn loosen(self) -> io::Result<std::net::TcpStream> {
        self.into_std()
    }

    fn fasten(loose: std::net::TcpStream) -> io::Result<Self> {
        TcpStream::from_std(loose)
    }
}

/// The services' unit tests: an in-memory pipe, whose bytes are taken as
/// soon as they are written, and which no runtime owns.
#[cfg(test)]
impl ClientStream for tokio::io::DuplexStream {
    type Loose = Self;

    async fn send_file(
        conn: &mut Connection<Self>,
        download: Download,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        send_download(conn, download, t).await.map(|_| ())
    }

    fn unsent(&self) -> usize {
        0
    }

    fn loosen(self) -> io::Result<Self> {
        Ok(self)
    }

    fn fasten(loose: Self) -> io::Result<Self> {
        Ok(loose)
    }
}

/// One TCP protocol.
pub(crate) trait TcpService: Copy + Send + Sync + 'static {
    /// The service's name in logs and the config.
    const NAME: &'static str;

    /// Serves one connection to its end.
    fn handle(self, ctx: Arc<Ctx>, conn: Connection<TcpStream>) -> impl Future<Output = ()> + Send;

    /// Tells a client over the connection caps, in the protocol's own way.
    fn refuse(self, stream: TcpStream, why: Refusal) -> impl Future<Output = ()> + Send;

    /// The cap this service's connections count against: the transfers'
    /// shared one ([`Caps::transfers`]) unless the service has its own.
    fn caps<'a>(ctx: &'a Ctx, config: &ferry_config::Config) -> Caps<'a> {
        Caps::transfers(ctx, config)
    }
}

/// A cap on connections: the limiter, its total and per-address sizes, and
/// whether a newcomer over it may close an idle connection to make room.
pub(crate) struct Caps<'a> {
    pub(crate) limiter: &'a Arc<crate::limits::Limiter>,
    pub(crate) total: usize,
    pub(crate) per_ip: usize,
    pub(crate) makes_room: bool,
}

impl<'a> Caps<'a> {
    /// The cap the transfer services share (`limits.max_connections`,
    /// `limits.max_connections_per_ip`); idle ones and header tricklers make
    /// room for newcomers.
    pub(crate) fn transfers(ctx: &'a Ctx, config: &ferry_config::Config) -> Caps<'a> {
        Caps {
            limiter: &ctx.connections,
            total: config.limits.max_connections,
            per_ip: config.limits.max_connections_per_ip,
            makes_room: true,
        }
    }

    fn acquire(&self, ip: std::net::IpAddr) -> Result<Permit, Refusal> {
        self.limiter.try_acquire(ip, self.total, self.per_ip)
    }
}

/// Accepts until shutdown; each connection runs in its own task holding a
/// permit of the shared connection cap. Over the cap, the client is refused at
/// once rather than queued.
pub(crate) async fn serve<S: TcpService>(ctx: Arc<Ctx>, listener: TcpListener, service: S) {
    tracing::info!(service = S::NAME, addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS));
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(service = S::NAME, error = %e, "accept failed");
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let config = ctx.config();
        match S::caps(&ctx, &config).acquire(peer.ip()) {
            Ok(permit) => {
                ctx.tracker
                    .spawn(connection(Arc::clone(&ctx), service, stream, peer, permit));
            }
            Err(why) => over_the_cap(&ctx, service, stream, peer, why, &refusals),
        }
    }
    tracing::debug!(service = S::NAME, "stopped accepting");
}

/// Serves one connection to its end, holding its permit, in its span.
fn connection<S: TcpService>(
    ctx: Arc<Ctx>,
    service: S,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Permit,
) -> impl Future<Output = ()> + Send {
    // At debug only: the transfer events carry service and peer themselves,
    // so an info line names them once.
    let span = tracing::debug_span!("conn", service = S::NAME, peer = %peer);
    // The configuration is taken once, here, for the whole connection.
    let conn = Connection::new(stream, peer, ctx.config(), Signals::of(&ctx));
    async move {
        let _permit = permit;
        let metrics = Arc::clone(&ctx.observe);
        metrics.metrics.connection(S::NAME, 1);
        service.handle(ctx, conn).await;
        metrics.metrics.connection(S::NAME, -1);
    }
    .instrument(span)
}

/// A client over the caps: the longest-idle signal connection makes room
/// for it if one can (one of this address's, which frees both its share and
/// the total, or anyone's when only the total is full; a newcomer whose own
/// address is at its share never takes another address's place); otherwise
/// it is refused in the protocol's way, at most [`MAX_REFUSALS`] at once.
fn over_the_cap<S: TcpService>(
    ctx: &Arc<Ctx>,
    service: S,
    stream: TcpStream,
    peer: SocketAddr,
    why: Refusal,
    refusals: &Arc<tokio::sync::Semaphore>,
) {
    let config = ctx.config();
    let caps = S::caps(ctx, &config);
    let own_full = caps.limiter.held_by(peer.ip()) >= caps.per_ip;
    let evicted = caps.makes_room
        && (ctx.idle.evict_oldest(Some(peer.ip()))
            || (!own_full && matches!(why, Refusal::Full(_)) && ctx.idle.evict_oldest(None)));
    if evicted {
        tracing::info!(service = S::NAME, peer = %peer, "at the connection cap: closed the longest-idle connection to make room");
        ctx.tracker.spawn(admit_when_freed(
            Arc::clone(ctx),
            service,
            stream,
            peer,
            why,
        ));
        return;
    }
    tracing::warn!(service = S::NAME, peer = %peer, reason = %why, "connection refused");
    ctx.observe.metrics.refused(S::NAME, why.reason());
    let Ok(slot) = Arc::clone(refusals).try_acquire_owned() else {
        tracing::debug!(service = S::NAME, peer = %peer, "too many refusals in flight: closed without one");
        return;
    };
    ctx.tracker.spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REPLY_TIMEOUT, service.refuse(stream, why)).await;
    });
}

/// Serves `stream` once the connection the accept loop evicted has given
/// back its permit (it ends after its last reply, within
/// [`REPLY_TIMEOUT`]), else refuses it as before.
async fn admit_when_freed<S: TcpService>(
    ctx: Arc<Ctx>,
    service: S,
    stream: TcpStream,
    peer: SocketAddr,
    why: Refusal,
) {
    let config = ctx.config();
    let caps = S::caps(&ctx, &config);
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT + Duration::from_millis(500);
    let permit = caps
        .limiter
        .acquire_by(peer.ip(), caps.total, caps.per_ip, deadline)
        .await;
    match permit {
        Ok(permit) => connection(Arc::clone(&ctx), service, stream, peer, permit).await,
        Err(_) => {
            let _ = tokio::time::timeout(REPLY_TIMEOUT, service.refuse(stream, why)).await;
        }
    }
}

/// Streams a stored file to the client: reads of [`SEND_CHUNK`], each write
/// within `idle_timeout`, bytes and CRC-32 counted into `t`. Returns the CRC.
pub(crate) async fn send_download<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    download: Download,
    t: &mut Transfer,
) -> Result<u32, Failure> {
    send_download_keeping(conn, download, t)
        .await
        .map(|(crc, _)| crc)
}

/// [`send_download`], giving the download back with the CRC.
pub(crate) async fn send_download_keeping<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    mut download: Download,
    t: &mut Transfer,
) -> Result<(u32, Download), Failure> {
    let mut crc = ferry_proto::crc::Crc32::new();
    let mut chunk = BytesMut::with_capacity(SEND_CHUNK);
    let mut left = download.size();
    while left > 0 {
        download
            .read_chunk(&mut chunk, SEND_CHUNK)
            .await
            .map_err(StorageError::from)?;
        if chunk.is_empty() {
            return Err(Failure::Shrank);
        }
        let take = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        crc.update(&chunk[..take]);
        conn.write_all(&chunk[..take]).await?;
        left -= take as u64;
        t.bytes += take as u64;
    }
    t.crc = Some(crc.value());
    Ok((crc.value(), download))
}

/// Streams a stored file to the client with `sendfile(2)`: the kernel copies
/// from the page cache to the socket, no pass through user space. For
/// protocols that need no checksum on the wire (magic_download); the
/// transfer log then has no CRC. Each wait for the socket is bounded by
/// `idle_timeout` and ends on abort.
pub(crate) async fn sendfile_download(
    conn: &mut Connection<TcpStream>,
    download: Download,
    t: &mut Transfer,
) -> Result<(), Failure> {
    use tokio::io::Interest;
    let Some(source) = download.sendfile_source() else {
        // A backend with no local file: copied through user space.
        return send_download(conn, download, t).await.map(|_| ());
    };
    let idle = conn.config.limits.idle_timeout.0;
    let stream = &conn.stream;
    let len = download.size();
    let mut offset = 0u64;
    while offset < len {
        tokio::select! {
            _ = conn.aborted().cancelled() => return Err(Failure::Aborted),
            r = tokio::time::timeout(idle, stream.writable()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(Failure::Timeout(Awaited::ClientToRead)),
            },
        }
        let want = usize::try_from(len - offset)
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        let sent = stream.try_io(Interest::WRITABLE, || {
            Ok(rustix::fs::sendfile(
                stream,
                source,
                Some(&mut offset),
                want,
            )?)
        });
        match sent {
            Ok(0) => return Err(Failure::Shrank),
            Ok(n) => t.bytes += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A service served on one end of an in-memory pipe, for the services' unit
/// tests: real storage in a temporary root, the client's end to drive.
#[cfg(test)]
pub(crate) mod pipe {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::observe::{Attempt, Viewer};
    use crate::storage::Storage;

    /// The client's address in every test.
    pub(crate) const PEER: ([u8; 4], u16) = ([10, 1, 2, 3], 40000);

    /// A daemon's shared state over `root` holding `files` (placed by the
    /// admin: anyone may download them).
    pub(crate) fn ctx(root: &std::path::Path, files: &[(&str, &[u8])]) -> Arc<Ctx> {
        for (name, bytes) in files {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        let config = ferry_config::Config {
            storage: ferry_config::StorageConfig::local(root),
            ..ferry_config::Config::default()
        };
        let storage = Storage::open_local(root, config.on_conflict).unwrap();
        Arc::new(Ctx::new(config, storage))
    }

    /// The client's end, and the task serving the other.
    pub(crate) struct Pipe {
        pub(crate) client: DuplexStream,
        pub(crate) served: tokio::task::JoinHandle<()>,
    }

    impl Pipe {
        /// `serve` on one end of a new pipe, as a connection from [`PEER`].
        pub(crate) fn serve<F, Fut>(ctx: &Arc<Ctx>, serve: F) -> Pipe
        where
            F: FnOnce(Arc<Ctx>, Connection<DuplexStream>) -> Fut,
            Fut: Future<Output = ()> + Send + 'static,
        {
            let (ours, client) = tokio::io::duplex(1 << 16);
            let conn =
                Connection::new(ours, SocketAddr::from(PEER), ctx.config(), Signals::of(ctx));
            let served = tokio::spawn(serve(Arc::clone(ctx), conn));
            Pipe { client, served }
        }
    }

    /// Everything the server sent before it closed; then the client closes
    /// too, as a real one does (the server's lingering close waits for it).
    pub(crate) async fn answer(client: &mut DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let _ = client.shutdown().await;
        got
    }

    /// The files a student can see in the root (not the work area, the
    /// lock or the ledger), with their contents, by name.
    pub(crate) fn visible(root: &std::path::Path) -> Vec<(String, String)> {
        let mut out: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                let bytes = std::fs::read(root.join(&n)).unwrap();
                (n, String::from_utf8_lossy(&bytes).into_owned())
            })
            .collect();
        out.sort();
        out
    }

    /// The newest attempt from [`PEER`], as the lab page has it.
    pub(crate) fn last_attempt(ctx: &Ctx) -> Attempt {
        let viewer = Viewer {
            ip: SocketAddr::from(PEER).ip(),
            admin: true,
        };
        ctx.observe.recent(&viewer, 1).remove(0)
    }
}
