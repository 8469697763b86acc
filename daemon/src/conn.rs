//! One framed TCP connection, shared by the three TCP services (mini-redis's
//! `Connection`): the stream, its read buffer, the configuration the
//! connection took when it opened, and `read_frame`, the one "decode what is
//! buffered, else read with a deadline" loop.
//!
//! A frame's wait has two phases ([`Wait`]): before its first byte the
//! connection is idle (a stop, or an eviction at the connection cap, ends
//! the wait quietly with [`Read::Stopped`]); from the first byte the rest
//! must come within its own deadline, which stray bytes cannot extend.
//! Every wait also ends on abort.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::attention::Watch;
use crate::ctx::Ctx;
use crate::failure::{Awaited, Failure, Violation};
use crate::limits::{IdleConnections, IdleGuard};

/// Bytes a connection reads from its socket at most at once (32 KiB keeps a
/// crowd of concurrent uploads small: measured in docs/BENCHMARKS.md).
pub(crate) const READ_CHUNK: usize = 32 * 1024;

/// Bytes read at once for an upload its backend writes on a thread of its
/// own ([`crate::storage::UploadSink::large_reads`]): few such run at once.
pub(crate) const READ_CHUNK_LARGE: usize = 256 * 1024;

/// The "no deadline" of a frame inside a transfer: only the read gap applies.
const NO_FRAME_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a refused or failed client gets to read its last reply.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a connection waits on besides its socket.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Shutdown started: idle connections end.
    pub(crate) stop: CancellationToken,
    /// The grace period is over: every wait ends.
    pub(crate) abort: CancellationToken,
    /// Idle connections, the longest-idle closed first at the cap.
    pub(crate) idle: Arc<IdleConnections>,
}

impl Signals {
    /// The daemon's.
    pub(crate) fn of(ctx: &Ctx) -> Signals {
        Signals {
            stop: ctx.stop.clone(),
            abort: ctx.abort.clone(),
            idle: Arc::clone(&ctx.idle),
        }
    }
}

/// How long a frame may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait {
    /// The frame's first byte by then. Until it comes, the connection is
    /// idle: a stop ends the wait.
    pub(crate) first_by: Instant,
    /// The rest within this long of the first byte; `None`: by `first_by`.
    pub(crate) rest_within: Option<Duration>,
    /// Each read at most this long (a protocol's read gap, a transfer's
    /// idle timeout).
    pub(crate) gap: Option<Duration>,
    /// What a timeout before the first byte waited for.
    pub(crate) first_what: Awaited,
    /// What a timeout after it waited for.
    pub(crate) rest_what: Awaited,
    /// Whether a stop ends the wait while idle (false inside a transfer).
    pub(crate) stoppable: bool,
}

impl Wait {
    /// A whole header by `by` (the connection's header deadline), idle
    /// until its first byte.
    pub(crate) fn header(by: Instant, what: Awaited) -> Wait {
        Wait {
            first_by: by,
            rest_within: None,
            gap: None,
            first_what: what,
            rest_what: what,
            stoppable: true,
        }
    }

    /// The next frame inside a transfer: each read within `idle` of the
    /// last, shutdown or not; the frame as a whole has no deadline of its
    /// own (a slow but steady client is never cut).
    pub(crate) fn in_transfer(now: Instant, idle: Duration, what: Awaited) -> Wait {
        Wait {
            first_by: now + idle,
            rest_within: Some(NO_FRAME_DEADLINE),
            gap: Some(idle),
            first_what: what,
            rest_what: what,
            stoppable: false,
        }
    }
}

/// What a wait for a frame brought.
#[derive(Debug)]
pub(crate) enum Read<T> {
    /// A whole frame.
    Frame(T),
    /// Nothing was sent and the connection was told to end: shutdown, or
    /// (when evictable) the cap needs its place.
    Stopped(Stop),
    /// The client closed its side; what it left is still in the buffer
    /// (for the codec's `decode_eof`).
    End,
}

/// Why an idle wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server is shutting down.
    Shutdown,
    /// The connection cap needs this idle connection's place.
    Evicted,
}

/// One TCP connection: stream, read buffer, configuration snapshot.
pub(crate) struct Connection<S> {
    /// The socket.
    pub(crate) stream: S,
    /// Bytes read and not yet decoded.
    pub(crate) buf: BytesMut,
    /// The configuration in force when the connection opened: a reload
    /// never changes a connection midway.
    pub(crate) config: Arc<Config>,
    /// The client.
    pub(crate) peer: SocketAddr,
    /// The first bytes of the current request (see [`Connection::mark_head`]),
    /// at most [`HEAD_LEN`]: what a failure's diagnosis shows.
    pub(crate) head: Vec<u8>,
    /// Bytes read from the socket at once: [`READ_CHUNK`], or
    /// [`READ_CHUNK_LARGE`] during a large upload.
    pub(crate) read_chunk: usize,
    /// The heartbeat of the thread this connection is read on, if it has one.
    pub(crate) watch: Option<Watch>,
    /// When a read last found the socket empty (took less than it offered).
    drained_at: Instant,
    /// Bytes in the buffer came from a read that may have waited unread
    /// for [`LOST_PAUSE`] or longer (see [`crate::attention`]):
    /// a pause of the handout framing may hide inside them. Set by reads,
    /// cleared by whoever consumes the bytes.
    pub(crate) waited: bool,
    signals: Signals,
}

/// How long bytes may wait unread before a handout pause may hide among
/// them: half the handout's 0.1 s (its client sleeps 0.1 s between sends,
/// so on loopback its pieces arrive at least that far apart; a shorter
/// stall cannot join two of them).
const LOST_PAUSE: Duration = Duration::from_millis(50);

/// Bytes of a request kept in [`Connection::head`].
pub(crate) const HEAD_LEN: usize = 64;

/// A connection without its stream, to move it to another runtime.
pub(crate) struct Parts {
    buf: BytesMut,
    config: Arc<Config>,
    peer: SocketAddr,
    head: Vec<u8>,
    read_chunk: usize,
    waited: bool,
    signals: Signals,
}

impl<S> Connection<S> {
    /// The stream, and everything else.
    pub(crate) fn into_parts(self) -> (S, Parts) {
        let Connection {
            stream,
            buf,
            config,
            peer,
            head,
            read_chunk,
            waited,
            signals,
            ..
        } = self;
        let parts = Parts {
            buf,
            config,
            peer,
            head,
            read_chunk,
            waited,
            signals,
        };
        (stream, parts)
    }

    /// Put together again, around `stream` (on a thread without a heartbeat).
    pub(crate) fn from_parts(stream: S, p: Parts) -> Connection<S> {
        Connection {
            stream,
            buf: p.buf,
            config: p.config,
            peer: p.peer,
            head: p.head,
            read_chunk: p.read_chunk,
            watch: None,
            drained_at: Instant::now(),
            waited: p.waited,
            signals: p.signals,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection from `peer` under `config`.
    pub(crate) fn new(
        stream: S,
        peer: SocketAddr,
        config: Arc<Config>,
        signals: Signals,
    ) -> Connection<S> {
        Connection {
            stream,
            buf: BytesMut::with_capacity(1024),
            config,
            peer,
            head: Vec::new(),
            read_chunk: READ_CHUNK,
            watch: None,
            drained_at: Instant::now(),
            waited: false,
            signals,
        }
    }

    /// A new request starts at the head of the buffer: [`Connection::head`]
    /// starts again from what is buffered.
    pub(crate) fn mark_head(&mut self) {
        self.head.clear();
        self.head
            .extend_from_slice(&self.buf[..self.buf.len().min(HEAD_LEN)]);
    }

    /// The next frame `codec` decodes, reading as `wait` allows.
    pub(crate) async fn read_frame<D>(
        &mut self,
        codec: &mut D,
        wait: &Wait,
    ) -> Result<Read<D::Item>, Failure>
    where
        D: Decoder,
        D::Error: Into<Violation>,
    {
        let mut rest_by = None;
        loop {
            if let Some(frame) = codec.decode(&mut self.buf).map_err(Failure::violation)? {
                return Ok(Read::Frame(frame));
            }
            match self.wait_for_bytes(wait, &mut rest_by).await? {
                Arrived::Bytes => {}
                Arrived::End => return Ok(Read::End),
                Arrived::Stopped(why) => return Ok(Read::Stopped(why)),
            }
        }
    }

    /// Reads until at least `len` bytes are buffered, as `wait` allows.
    pub(crate) async fn fill(&mut self, len: usize, wait: &Wait) -> Result<Read<()>, Failure> {
        let mut rest_by = None;
        while self.buf.len() < len {
            match self.wait_for_bytes(wait, &mut rest_by).await? {
                Arrived::Bytes => {}
                Arrived::End => return Ok(Read::End),
                Arrived::Stopped(why) => return Ok(Read::Stopped(why)),
            }
        }
        Ok(Read::Frame(()))
    }

    /// Reads whatever comes until the line has been quiet for `quiet` (a
    /// name's end, seed 002), by `by` at most; `check` sees the buffer
    /// after each read and may refuse it. Returns false if the client
    /// closed its side first.
    pub(crate) async fn settle(
        &mut self,
        quiet: Duration,
        by: Instant,
        what: Awaited,
        mut check: impl FnMut(&BytesMut) -> Result<(), Failure>,
    ) -> Result<bool, Failure> {
        loop {
            check(&self.buf)?;
            let quiet_at = (Instant::now() + quiet).min(by);
            match self.read_more(quiet_at, what).await {
                Ok(0) => return Ok(false),
                Ok(_) => continue,
                Err(Failure::Timeout(_)) if Instant::now() < by => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// One wait for more bytes under `wait`; `rest_by` is the deadline of
    /// the rest of the frame, set at its first byte.
    async fn wait_for_bytes(
        &mut self,
        wait: &Wait,
        rest_by: &mut Option<Instant>,
    ) -> Result<Arrived, Failure> {
        let now = Instant::now();
        let idle = self.buf.is_empty() && rest_by.is_none();
        let (phase_by, what) = if idle {
            (wait.first_by, wait.first_what)
        } else {
            let by = *rest_by.get_or_insert_with(|| match wait.rest_within {
                Some(within) => now + within,
                None => wait.first_by,
            });
            (by, wait.rest_what)
        };
        let deadline = wait.gap.map_or(phase_by, |gap| (now + gap).min(phase_by));
        if !(idle && wait.stoppable) {
            return Ok(arrived(self.read_more(deadline, what).await?));
        }
        let stop = self.signals.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => Ok(Arrived::Stopped(Stop::Shutdown)),
            r = self.read_more(deadline, what) => Ok(arrived(r?)),
        }
    }

    /// A place among the connections the cap may close: held while a
    /// request header is read (a client that trickles its header holds a
    /// slot as an idle one does, and is the first to go when a newcomer
    /// needs it, the longest-waiting first). Its `evicted()` ends the wait.
    pub(crate) fn header_guard(&self) -> IdleGuard {
        self.signals.idle.enter(self.peer.ip())
    }

    /// Reads more bytes into the buffer, waiting at most until `deadline`
    /// (and never past an abort). Returns the count; 0 is end of stream.
    pub(crate) async fn read_more(
        &mut self,
        deadline: Instant,
        what: Awaited,
    ) -> Result<usize, Failure> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(self.read_chunk);
        }
        let offered = self.buf.capacity() - self.buf.len();
        tokio::select! {
            _ = self.signals.abort.cancelled() => Err(Failure::Aborted),
            r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)) => match r {
                Ok(r) => {
                    let n = r?;
                    self.note_wait(n, offered);
                    if self.head.len() < HEAD_LEN {
                        let new = &self.buf[self.buf.len() - n..];
                        let take = new.len().min(HEAD_LEN - self.head.len());
                        self.head.extend_from_slice(&new[..take]);
                    }
                    Ok(n)
                }
                Err(_) => Err(Failure::Timeout(what)),
            },
        }
    }

    /// After a read of `n` bytes out of `offered`: whether they may have
    /// waited unread (the thread was away), and whether the socket is empty.
    fn note_wait(&mut self, n: usize, offered: usize) {
        let now = Instant::now();
        if n > 0 {
            if let Some(watch) = &self.watch {
                self.waited |= watch.may_have_waited(now, self.drained_at, LOST_PAUSE);
            }
        }
        if n < offered {
            self.drained_at = now;
        }
    }

    /// Writes all of `data`, each write within `idle_timeout` (a client that
    /// stops reading cannot hold the task), and never past an abort.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> Result<(), Failure> {
        let timeout = self.config.limits.idle_timeout.0;
        tokio::select! {
            _ = self.signals.abort.cancelled() => Err(Failure::Aborted),
            r = tokio::time::timeout(timeout, self.stream.write_all(data)) => match r {
                Ok(r) => Ok(r?),
                Err(_) => Err(Failure::Timeout(Awaited::ClientToRead)),
            },
        }
    }

    /// Whether the grace period is over.
    pub(crate) fn aborted(&self) -> &CancellationToken {
        &self.signals.abort
    }

    /// Best-effort final reply, then a lingering close: see [`reply_and_close`].
    pub(crate) async fn reply_and_close(&mut self, reply: &[u8]) {
        reply_and_close(&mut self.stream, reply).await;
    }
}

/// What one read brought.
enum Arrived {
    Bytes,
    End,
    Stopped(Stop),
}

fn arrived(n: usize) -> Arrived {
    if n == 0 {
        Arrived::End
    } else {
        Arrived::Bytes
    }
}

/// Best-effort final reply, then a lingering close: stop writing, and discard
/// what the client is still sending (up to 1 s or 1 MiB) so the reply is not
/// destroyed by a reset.
pub(crate) async fn reply_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    reply: &[u8],
) {
    let _ = tokio::time::timeout(REPLY_TIMEOUT, async {
        stream.write_all(reply).await?;
        stream.shutdown().await?;
        let mut sink = vec![0u8; 16 * 1024];
        let mut drained = 0usize;
        while drained < (1 << 20) {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio_util::codec::{LinesCodec, LinesCodecError};

    /// Lines, with errors as a protocol's own.
    #[derive(Default)]
    struct Lines(LinesCodec);

    impl Decoder for Lines {
        type Item = String;
        type Error = ferry_proto::signal::SignalError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, Self::Error> {
            self.0.decode(src).map_err(|e| match e {
                LinesCodecError::Io(e) => e.into(),
                LinesCodecError::MaxLineLengthExceeded => {
                    ferry_proto::signal::SignalError::Truncated(src.len())
                }
            })
        }
    }

    fn connection() -> (Connection<DuplexStream>, DuplexStream, Signals) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let signals = Signals {
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            idle: Arc::default(),
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
        let conn = Connection::new(ours, peer, Arc::new(Config::default()), signals.clone());
        (conn, theirs, signals)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A request wait as signal's: idle 30 s, then 10 s for the rest.
    fn request_wait(now: Instant) -> Wait {
        Wait {
            first_by: now + secs(30),
            rest_within: Some(secs(10)),
            gap: None,
            first_what: Awaited::Request,
            rest_what: Awaited::RestOfRequest,
            stoppable: true,
        }
    }

    async fn timed_out_after<T: std::fmt::Debug>(
        t0: Instant,
        r: Result<Read<T>, Failure>,
    ) -> (Duration, Awaited) {
        match r {
            Err(Failure::Timeout(what)) => (Instant::now() - t0, what),
            other => panic!("not a timeout: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_times_out_at_its_idle_deadline() {
        let (mut conn, _client, _) = connection();
        let t0 = Instant::now();
        let r = conn
            .read_frame(&mut Lines::default(), &request_wait(t0))
            .await;
        assert_eq!(timed_out_after(t0, r).await, (secs(30), Awaited::Request));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_header_cannot_outlive_the_header_deadline() {
        let (mut conn, mut client, _) = connection();
        let t0 = Instant::now();
        let trickle = tokio::spawn(async move {
            tokio::time::sleep(secs(5)).await;
            // One byte a second, forever: each read succeeds, the frame never ends.
            loop {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(secs(1)).await;
            }
        });
        let r = conn
            .read_frame(&mut Lines::default(), &request_wait(t0))
            .await;
        // The first byte at 5 s; the rest due 10 s later, however it trickles.
        assert_eq!(
            timed_out_after(t0, r).await,
            (secs(15), Awaited::RestOfRequest)
        );
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_frame_comes_back_and_the_rest_stays_buffered() {
        let (mut conn, mut client, _) = connection();
        client.write_all(b"PIN\nPI").await.unwrap();
        let t0 = Instant::now();
        match conn
            .read_frame(&mut Lines::default(), &request_wait(t0))
            .await
        {
            Ok(Read::Frame(line)) => assert_eq!(line, "PIN"),
            other => panic!("{other:?}"),
        }
        assert_eq!(&conn.buf[..], b"PI");
        drop(client);
        assert!(matches!(
            conn.read_frame(&mut Lines::default(), &request_wait(t0))
                .await,
            Ok(Read::End)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_an_idle_wait_but_not_a_started_frame() {
        let (mut conn, _client, signals) = connection();
        let stop = signals.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(secs(3)).await;
            stop.cancel();
        });
        let t0 = Instant::now();
        let r = conn
            .read_frame(&mut Lines::default(), &request_wait(t0))
            .await;
        assert!(matches!(r, Ok(Read::Stopped(Stop::Shutdown))), "{r:?}");
        assert_eq!(Instant::now() - t0, secs(3));
        // A frame under way when shutdown starts is not idle: it gets its deadline.
        let (mut conn, mut client, signals) = connection();
        client.write_all(b"SA").await.unwrap();
        let stop = signals.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(secs(3)).await;
            stop.cancel();
        });
        let t1 = Instant::now();
        let r = conn
            .read_frame(&mut Lines::default(), &request_wait(t1))
            .await;
        assert_eq!(
            timed_out_after(t1, r).await,
            (secs(10), Awaited::RestOfRequest)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_closes_a_trickling_header_through_its_guard() {
        let (mut conn, mut client, signals) = connection();
        // Half a request, then nothing: a header trickler.
        client.write_all(b"PI").await.unwrap();
        let t0 = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(secs(2)).await;
            assert!(signals.idle.evict_oldest(None));
            assert!(!signals.idle.evict_oldest(None), "one guard, evicted once");
        });
        let guard = conn.header_guard();
        let (mut codec, wait) = (Lines::default(), request_wait(t0));
        let read = tokio::select! {
            r = conn.read_frame(&mut codec, &wait) => Some(r),
            _ = guard.evicted() => None,
        };
        assert!(read.is_none(), "{read:?}");
        assert_eq!(t0.elapsed(), secs(2));
        assert_eq!(&conn.buf[..], b"PI");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_gap_ends_a_slow_frame_before_its_deadline() {
        let (mut conn, mut client, _) = connection();
        let t0 = Instant::now();
        // magic_download: the whole request in 10 s, no gap over 1 s.
        let mut wait = Wait::header(t0 + secs(10), Awaited::FileRequest);
        wait.gap = Some(secs(1));
        client.write_all(b"abc").await.unwrap();
        let r = conn.read_frame(&mut Lines::default(), &wait).await;
        assert_eq!(
            timed_out_after(t0, r).await,
            (secs(1), Awaited::FileRequest)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_ends_when_the_line_goes_quiet() {
        let (mut conn, mut client, _) = connection();
        let t0 = Instant::now();
        tokio::spawn(async move {
            for part in [&b"rep"[..], b"ort", b".pdf"] {
                client.write_all(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            // Then nothing until `go ahead` (the handout client waits for it).
            tokio::time::sleep(secs(60)).await;
        });
        let settled = conn
            .settle(
                Duration::from_millis(20),
                t0 + secs(10),
                Awaited::Name,
                |_| Ok(()),
            )
            .await
            .unwrap();
        assert!(settled);
        assert_eq!(&conn.buf[..], b"report.pdf");
        // The last part at 30 ms, then 20 ms of quiet.
        assert_eq!(Instant::now() - t0, Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_still_arriving_at_the_header_deadline_times_out() {
        let (mut conn, mut client, _) = connection();
        let t0 = Instant::now();
        tokio::spawn(async move {
            loop {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let r = conn
            .settle(
                Duration::from_millis(20),
                t0 + secs(1),
                Awaited::Name,
                |_| Ok(()),
            )
            .await;
        assert!(matches!(r, Err(Failure::Timeout(Awaited::Name))), "{r:?}");
        assert_eq!(Instant::now() - t0, secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn inside_a_transfer_only_the_read_gap_counts() {
        let (mut conn, mut client, _) = connection();
        tokio::spawn(async move {
            // A byte every 20 s, with a 30 s gap allowed: slow, never idle.
            for _ in 0..4 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(secs(20)).await;
            }
            client.write_all(b"\n").await.unwrap();
            tokio::time::sleep(secs(60)).await;
        });
        let t0 = Instant::now();
        let wait = Wait::in_transfer(t0, secs(30), Awaited::Data);
        match conn.read_frame(&mut Lines::default(), &wait).await {
            Ok(Read::Frame(line)) => assert_eq!(line, "xxxx"),
            other => panic!("{other:?}"),
        }
        assert_eq!(Instant::now() - t0, secs(80));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_ends_every_wait() {
        let (mut conn, _client, signals) = connection();
        tokio::spawn(async move {
            tokio::time::sleep(secs(1)).await;
            signals.abort.cancel();
        });
        let wait = Wait::in_transfer(Instant::now(), secs(30), Awaited::Data);
        let r = conn.read_frame(&mut Lines::default(), &wait).await;
        assert!(matches!(r, Err(Failure::Aborted)), "{r:?}");
    }
}
