//! `udp_upload` (seed 000): `file_info`, buffer size, data datagrams, `OK`.
//!
//! One receive loop owns the session table, keyed by peer address (IP and
//! port). Each session is a task fed through a bounded channel; it writes
//! through [`crate::storage`] and sends `OK` only after the file is durable.
//! Datagrams are received into [`crate::udp::RecvPool`]; those of 32 KiB or
//! more reach a large upload's writer thread without a copy, smaller ones
//! are gathered into 64 KiB writes (docs/BENCHMARKS.md). The protocol
//! has no flow control, so the socket buffer is what absorbs a moment when
//! ferryd is not scheduled: ferryd asks for 64 MiB, granted up to
//! `net.core.rmem_max` (deploy/60-ferry.conf raises it).
//! - A fresh `file_info` from a peer restarts its session; one from a new port
//!   of the same IP with the same name, size and checksum (a handout client
//!   retrying from a new socket) replaces the old session too, once that one
//!   has been idle for 500 ms (so two clients behind one NAT sending the same
//!   file do not cancel each other).
//! - An identical `file_info` arriving before any data is a duplicate datagram
//!   and is ignored (answering it twice would make the client read the second
//!   buffer size as the reply to its data).
//! - Any error is sent back as `ERROR: <reason>` ("if there is any exception …
//!   send it to the client"), and the loop goes on.
//! - Sessions expire after `session_timeout` with no datagram; total and per-IP
//!   session counts are capped; no datagram may exceed the announced buffer size.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use ferry_config::{Config, ServiceId};
use ferry_proto::names::SafeName;
use ferry_proto::udp_upload::{
    encode_buffer_size, encode_error, looks_like_file_info, parse_file_info, FileInfo, Progress,
    UdpUploadError, UploadProgress, DEFAULT_MAX_HEADER_LEN, OK,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::ctx::Ctx;
use crate::failure::{Awaited, Failure, NameOf, Refusal as FailureRefusal, Violation};
use crate::limits::{canonical, Limiter, Permit, Refusal, ReplyBudget, REPLIES_PER_SECOND};
use crate::report::{Direction, Outcome, Transfer};
use crate::storage::Stored;

/// This service's name in logs and metrics.
const SERVICE: &str = ServiceId::UdpUpload.name();

/// Queued data per session, in bytes (bounds memory when the disk is slow).
const QUEUE_BYTES: usize = 256 * 1024;

/// A session this quiet is taken for one its client gave up on: the handout
/// client waits 1 s for `OK` before retrying, while an upload in progress
/// sends datagrams back to back. So a same-file session from the same IP is
/// replaced only when idle this long, and two students behind one NAT
/// uploading the same file do not cancel each other.
const ABANDONED_AFTER: Duration = Duration::from_millis(500);

/// The rules over the sessions, sans-IO: which datagram is what, when a
/// retry replaces a session, which session gives way under pressure. Time
/// is an input; `T` is what the driver keeps per session (its queue, its
/// place under the caps).
struct SessionTable<T> {
    sessions: HashMap<SocketAddr, Entry<T>>,
    next_id: u64,
}

/// One session as the rules see it.
struct Entry<T> {
    id: u64,
    info: FileInfo,
    /// The buffer size this session announced (a reload does not change it).
    buffer_size: usize,
    started_data: bool,
    /// Data bytes passed to the session so far.
    received: u64,
    last_seen: Instant,
    io: T,
}

impl<T> Entry<T> {
    /// True when a datagram of `len` bytes is exactly the next chunk this
    /// session expects: a full buffer, or the rest of the file. Such a
    /// datagram is data even if its bytes parse as a `file_info` (a file
    /// whose content is JSON).
    fn expects(&self, len: usize) -> bool {
        let left = self.info.size.saturating_sub(self.received);
        left > 0 && len as u64 == left.min(self.buffer_size as u64)
    }
}

/// What a datagram is, by the table's rules.
#[derive(Debug, PartialEq)]
enum Datagram {
    /// A `file_info`: a new upload (or a duplicate of the current one).
    FileInfo(FileInfo),
    /// A broken `file_info` from a peer with no session: the reply.
    BadFileInfo(UdpUploadError),
    /// Data for the peer's session (or for none).
    Data,
}

/// What a data datagram does.
enum DataVerdict<'a, T> {
    /// No session from that peer.
    NoSession,
    /// Larger than the session's buffer size: the session has been removed.
    TooLarge { buffer_size: usize, io: T },
    /// For this session's queue.
    Forward(&'a mut T),
}

impl<T> Default for SessionTable<T> {
    fn default() -> Self {
        SessionTable {
            sessions: HashMap::new(),
            next_id: 0,
        }
    }
}

impl<T> SessionTable<T> {
    fn len(&self) -> usize {
        self.sessions.len()
    }

    /// What `datagram` from `peer` is. A `file_info` is recognised only
    /// when it is not exactly the next chunk the peer's session expects
    /// (a duplicate of the session's own `file_info` before any data is
    /// still a duplicate, whatever its length).
    fn classify(&self, peer: SocketAddr, datagram: &[u8], max_header: usize) -> Datagram {
        let next_chunk = self.sessions.get(&peer).is_some_and(|h| {
            h.expects(datagram.len())
                && (h.started_data
                    || parse_file_info(datagram, DEFAULT_MAX_HEADER_LEN)
                        .ok()
                        .as_ref()
                        != Some(&h.info))
        });
        if next_chunk || !looks_like_file_info(datagram) {
            return Datagram::Data;
        }
        match parse_file_info(datagram, max_header) {
            Ok(info) => Datagram::FileInfo(info),
            Err(e) if !self.sessions.contains_key(&peer) => Datagram::BadFileInfo(e),
            // Data that happens to start with '{': for the session.
            Err(_) => Datagram::Data,
        }
    }

    /// Whether `info` repeats the peer's own `file_info` before any data
    /// (a duplicate datagram, to ignore: answering it twice would make the
    /// client read the second buffer size as the reply to its data).
    fn is_duplicate(&self, peer: SocketAddr, info: &FileInfo) -> bool {
        self.sessions
            .get(&peer)
            .is_some_and(|h| h.info == *info && !h.started_data)
    }

    /// The NAT-retry rule: the same upload (name, size, checksum) from
    /// another port of `peer`'s IP replaces a session idle for at least
    /// [`ABANDONED_AFTER`] at `now` (a handout client retrying from a new
    /// socket). Returns what the replaced sessions kept.
    fn remove_abandoned(&mut self, now: Instant, peer: SocketAddr, info: &FileInfo) -> Vec<T> {
        let gone: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(addr, h)| {
                addr.ip() == peer.ip()
                    && h.info == *info
                    && now.saturating_duration_since(h.last_seen) >= ABANDONED_AFTER
            })
            .map(|(addr, _)| *addr)
            .collect();
        gone.into_iter().filter_map(|a| self.remove(a)).collect()
    }

    /// The session that has gone longest without a datagram, if that is at
    /// least [`ABANDONED_AFTER`] at `now` (and it is from `ip`'s address,
    /// when given): the one to give way under pressure, with how long it
    /// has been quiet.
    fn stalled(&self, now: Instant, ip: Option<IpAddr>) -> Option<(SocketAddr, Duration)> {
        let ip = ip.map(canonical);
        self.sessions
            .iter()
            .filter(|(addr, h)| {
                ip.map_or(true, |ip| canonical(addr.ip()) == ip)
                    && now.saturating_duration_since(h.last_seen) >= ABANDONED_AFTER
            })
            .min_by_key(|(_, h)| h.last_seen)
            .map(|(addr, h)| (*addr, now.saturating_duration_since(h.last_seen)))
    }

    /// A new session for `peer` at `now`; its id.
    fn insert(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        info: FileInfo,
        buffer_size: usize,
        io: T,
    ) -> u64 {
        self.next_id += 1;
        let entry = Entry {
            id: self.next_id,
            info,
            buffer_size,
            started_data: false,
            received: 0,
            last_seen: now,
            io,
        };
        self.sessions.insert(peer, entry);
        self.next_id
    }

    /// A data datagram of `len` bytes from `peer` at `now`.
    fn on_data(&mut self, now: Instant, peer: SocketAddr, len: usize) -> DataVerdict<'_, T> {
        let Some(h) = self.sessions.get_mut(&peer) else {
            return DataVerdict::NoSession;
        };
        h.started_data = true;
        h.received += len as u64;
        h.last_seen = now;
        if len > h.buffer_size {
            let buffer_size = h.buffer_size;
            return match self.remove(peer) {
                Some(io) => DataVerdict::TooLarge { buffer_size, io },
                None => DataVerdict::NoSession,
            };
        }
        match self.sessions.get_mut(&peer) {
            Some(h) => DataVerdict::Forward(&mut h.io),
            None => DataVerdict::NoSession,
        }
    }

    fn remove(&mut self, peer: SocketAddr) -> Option<T> {
        self.sessions.remove(&peer).map(|h| h.io)
    }

    /// Removes `peer`'s session if it is still the one numbered `id` (a
    /// session task that ended; a newer one may have its place).
    fn remove_ended(&mut self, peer: SocketAddr, id: u64) {
        if self.sessions.get(&peer).map(|h| h.id) == Some(id) {
            self.sessions.remove(&peer);
        }
    }
}

/// What the driver keeps per session.
struct Handle {
    /// The session's place under the caps. It lives here, in the table, so
    /// that removing a session frees its place at once: a retry replacing it
    /// takes the place it leaves.
    _permit: Permit,
    /// Why the loop ended the session, if it did (dropped unsent: replaced).
    ended: Option<oneshot::Sender<Failure>>,
    tx: mpsc::Sender<Bytes>,
}

impl Handle {
    /// Tells the session task why the loop ended it.
    fn end(mut self, why: Failure) {
        if let Some(tell) = self.ended.take() {
            let _ = tell.send(why);
        }
    }
}

/// The receive loop: datagrams and session ends in, each handed to the
/// [`Receiver`].
pub(crate) async fn serve(ctx: Arc<Ctx>, socket: UdpSocket) {
    tracing::info!(service = SERVICE, addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), buffer_size = ctx.config().udp_upload.buffer_size, "listening");
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut r = Receiver {
        ctx: Arc::clone(&ctx),
        socket: Arc::new(socket),
        limiter: Limiter::new(),
        budget: ReplyBudget::new(REPLIES_PER_SECOND),
        ended_tx,
        table: SessionTable::default(),
        stopping: false,
    };
    let mut pool = crate::udp::RecvPool::new();
    loop {
        ctx.udp_sessions
            .store(r.table.len(), std::sync::atomic::Ordering::Relaxed);
        ctx.udp_sessions_peak
            .fetch_max(r.table.len(), std::sync::atomic::Ordering::Relaxed);
        let (n, peer) = tokio::select! {
            _ = ctx.stop.cancelled(), if !r.stopping => {
                r.stopping = true;
                if r.table.len() == 0 { break }
                continue;
            }
            _ = ctx.abort.cancelled() => break,
            Some((peer, id)) = ended_rx.recv() => {
                r.table.remove_ended(peer, id);
                if r.stopping && r.table.len() == 0 { break }
                continue;
            }
            pair = pool.recv(&r.socket) => pair,
        };
        tracing::trace!(peer = %peer, len = n, "datagram");
        if r.on_datagram(Instant::now(), peer, &mut pool, n)
            .await
            .is_break()
        {
            break;
        }
    }
    tracing::debug!(service = SERVICE, "receive loop ended");
}

/// A `file_info` admitted: what its session starts with.
struct Admitted {
    /// The configuration, taken once for the session.
    config: Arc<Config>,
    info: FileInfo,
    name: SafeName,
    /// Its place under the caps.
    permit: Permit,
}

/// The driver over the session table: replies, caps, session tasks.
struct Receiver {
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    limiter: Arc<Limiter>,
    budget: ReplyBudget,
    ended_tx: mpsc::UnboundedSender<(SocketAddr, u64)>,
    table: SessionTable<Handle>,
    stopping: bool,
}

impl Receiver {
    /// `ERROR: <why>` to `peer`, within the reply budget.
    async fn reply_error(&self, peer: SocketAddr, why: &Failure) {
        if self.budget.allow(Instant::now()) {
            let _ = self
                .socket
                .send_to(&encode_error(&why.to_string()), peer)
                .await;
        } else {
            tracing::debug!(peer = %peer, "error reply over the budget: not sent");
        }
    }

    /// A `file_info` refused: the `ERROR` reply and a failed attempt, both
    /// within the reply budget (the source may be forged; a flood must not
    /// flood the log either).
    async fn refused(
        &self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        requested: String,
        why: Failure,
    ) {
        if !self.budget.allow(now) {
            tracing::debug!(peer = %peer, "error reply over the budget: not sent");
            return;
        }
        let _ = self
            .socket
            .send_to(&encode_error(&why.to_string()), peer)
            .await;
        let mut t = Transfer::start(
            &self.ctx.observe,
            ServiceId::UdpUpload,
            Direction::Upload,
            peer,
        );
        t.saw(datagram);
        t.requested = requested;
        t.failed(&why);
    }

    /// One datagram at `now`: a `file_info` (a new upload) or data for a session.
    async fn on_datagram(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        pool: &mut crate::udp::RecvPool,
        n: usize,
    ) -> ControlFlow<()> {
        let datagram = pool.peek(n);
        let max_header =
            DEFAULT_MAX_HEADER_LEN.max(self.ctx.config().limits.max_name_len * 6 + 128);
        match self.table.classify(peer, datagram, max_header) {
            Datagram::FileInfo(info) => {
                let requested = info.name.clone();
                match self.on_file_info(now, peer, info) {
                    // Answered here, before the session starts (so before
                    // its `OK`), not once its file exists: the handout
                    // client waits only 1 s for it, and making the file
                    // waits for a blocking thread, which a lab day keeps
                    // busy. The data waits in the session's queue; a file
                    // that cannot be made is told as the reply to the data
                    // (`ERROR: ...`).
                    Ok(Some(admitted)) => {
                        let size = encode_buffer_size(admitted.config.udp_upload.buffer_size);
                        let _ = self.socket.send_to(&size, peer).await;
                        self.start(now, peer, admitted, datagram);
                    }
                    Ok(None) => {}
                    Err(why) => self.refused(now, peer, datagram, requested, why).await,
                }
                ControlFlow::Continue(())
            }
            Datagram::BadFileInfo(why) => {
                tracing::debug!(peer = %peer, error = %why, "bad file_info");
                self.refused(now, peer, datagram, String::new(), Failure::violation(why))
                    .await;
                ControlFlow::Continue(())
            }
            Datagram::Data => self.on_data(now, peer, pool, n).await,
        }
    }

    /// A `file_info`: admitted (the session to start), or a duplicate to
    /// ignore (`None`), or why not (the reply).
    fn on_file_info(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        info: FileInfo,
    ) -> Result<Option<Admitted>, Failure> {
        if self.table.is_duplicate(peer, &info) {
            tracing::debug!(peer = %peer, "duplicate file_info ignored");
            return Ok(None);
        }
        if self.stopping {
            return Err(Failure::Refused(FailureRefusal::ShuttingDown));
        }
        // A fresh file_info from a peer restarts its session. The session
        // takes the configuration once, here.
        self.table.remove(peer);
        let config = self.ctx.config();
        let max_name = config.limits.max_name_len;
        if info.name.len() > max_name {
            return Err(Failure::Refused(FailureRefusal::NameLength {
                len: info.name.len(),
                max: max_name,
            }));
        }
        let name = SafeName::for_upload(&info.name).map_err(|e| {
            tracing::warn!(service = SERVICE, peer = %peer, requested = ?info.name, error = %e, "refused");
            Failure::name(NameOf::File, info.name.as_str(), e)
        })?;
        let max = config.limits.max_file_size.0;
        if info.size > max {
            return Err(Failure::Refused(FailureRefusal::FileSize {
                size: info.size,
                max,
            }));
        }
        // The same upload retried from a new port replaces the abandoned
        // session, taking its place under the caps.
        drop(self.table.remove_abandoned(now, peer, &info));
        let permit = self.admit(&config, now, peer, &info).map_err(|why| {
            tracing::warn!(service = SERVICE, peer = %peer, reason = %why, "session refused");
            why
        })?;
        Ok(Some(Admitted {
            config,
            info,
            name,
            permit,
        }))
    }

    /// A place under the caps and the quota for `info`, or why not.
    fn admit(
        &mut self,
        config: &Config,
        now: Instant,
        peer: SocketAddr,
        info: &FileInfo,
    ) -> Result<Permit, Failure> {
        let cfg = &config.udp_upload;
        // The quota decides before anyone is evicted for this upload; it is
        // charged only when the upload is stored (UDP sources can be forged:
        // a session that never completes must cost its address nothing).
        self.ctx.check_upload(now, peer.ip(), info.size)?;
        let acquire =
            |l: &Arc<Limiter>| l.try_acquire(peer.ip(), cfg.max_sessions, cfg.max_sessions_per_ip);
        let mut acquired = acquire(&self.limiter);
        if let Err(why) = &acquired {
            // Under pressure, a session making no progress gives way before a
            // new one is refused: one of this address's, or anyone's when
            // only the total is full.
            let own_full = self.limiter.held_by(peer.ip()) >= cfg.max_sessions_per_ip;
            let from = (own_full || matches!(why, Refusal::FullForIp(_))).then(|| peer.ip());
            if self.evict_stalled(now, from) {
                acquired = acquire(&self.limiter);
            }
        }
        acquired.map_err(|why| {
            self.ctx.observe.metrics.refused(SERVICE, why.reason());
            Failure::Refused(why.into())
        })
    }

    /// Ends the session [`SessionTable::stalled`] names, if any; its place
    /// under the caps is free on return.
    fn evict_stalled(&mut self, now: Instant, ip: Option<IpAddr>) -> bool {
        let Some((addr, quiet)) = self.table.stalled(now, ip) else {
            return false;
        };
        if let Some(h) = self.table.remove(addr) {
            h.end(Failure::Refused(FailureRefusal::Stalled {
                ms: quiet.as_millis(),
            }));
            tracing::info!(service = SERVICE, peer = %addr, "evicted a stalled session to make room");
        }
        true
    }

    /// Puts a session in the table and starts its task.
    fn start(&mut self, now: Instant, peer: SocketAddr, admitted: Admitted, datagram: &[u8]) {
        let Admitted {
            config,
            info,
            name,
            permit,
        } = admitted;
        let buffer_size = config.udp_upload.buffer_size;
        let (tx, rx) = mpsc::channel((QUEUE_BYTES / buffer_size).max(8));
        let (ended_by_loop, why_ended) = oneshot::channel();
        let handle = Handle {
            _permit: permit,
            ended: Some(ended_by_loop),
            tx,
        };
        let id = self
            .table
            .insert(now, peer, info.clone(), buffer_size, handle);
        let session = Session {
            ctx: Arc::clone(&self.ctx),
            config,
            socket: Arc::clone(&self.socket),
            peer,
            info,
            name,
            head: datagram.to_vec(),
        };
        let ended = self.ended_tx.clone();
        // On the receive loop's runtime (its thread, and the blocking
        // threads it starts, at its priority): the handout client waits 1 s
        // for the `OK` after its last datagram, and on a lab day the main
        // runtime's queue is longer than that (docs/BENCHMARKS.md). TCP
        // uploads, flow-controlled and patient, stay there.
        self.ctx.tracker.spawn(async move {
            session.run(rx, why_ended).await;
            let _ = ended.send((peer, id));
        });
    }

    /// A data datagram: to its session's queue, or an error reply.
    async fn on_data(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        pool: &mut crate::udp::RecvPool,
        n: usize,
    ) -> ControlFlow<()> {
        let tx = match self.table.on_data(now, peer, n) {
            DataVerdict::Forward(h) => h.tx.clone(),
            DataVerdict::NoSession => {
                tracing::debug!(peer = %peer, len = n, "data without a session");
                // One failed attempt, as every refusal is (within the reply
                // budget): a student whose first datagram was no file_info
                // (another service's request, often) sees it on the page.
                let why = Failure::Violation(Violation::NoSession(peer));
                self.refused(now, peer, pool.peek(n), String::new(), why)
                    .await;
                return ControlFlow::Continue(());
            }
            DataVerdict::TooLarge { buffer_size, io } => {
                let why = || {
                    Failure::Violation(Violation::OverBufferSize {
                        len: n,
                        buffer_size,
                    })
                };
                io.end(why());
                self.reply_error(peer, &why()).await;
                return ControlFlow::Continue(());
            }
        };
        tokio::select! {
            _ = self.ctx.abort.cancelled() => ControlFlow::Break(()),
            r = tx.send(pool.take(n)) => { let _ = r; ControlFlow::Continue(()) }
        }
    }
}

struct Session {
    ctx: Arc<Ctx>,
    /// The configuration when the session started.
    config: Arc<Config>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    info: FileInfo,
    name: SafeName,
    /// The `file_info` datagram, for a failure's diagnosis.
    head: Vec<u8>,
}

impl Session {
    async fn run(self, rx: mpsc::Receiver<Bytes>, mut why_ended: oneshot::Receiver<Failure>) {
        let mut t = Transfer::start(
            &self.ctx.observe,
            ServiceId::UdpUpload,
            Direction::Upload,
            self.peer,
        );
        t.saw(&self.head);
        t.requested = self.info.name.clone();
        match self.receive(rx, &mut t).await {
            Ok(stored) => {
                self.ctx
                    .uploads
                    .charge(tokio::time::Instant::now(), self.peer.ip(), stored.size);
                t.stored = stored.name.clone();
                t.ok(Outcome::of_upload(stored.deduplicated));
            }
            // The loop ended the session: it says why (and has answered the
            // client), or it dropped it for a new file_info.
            Err(Failure::Replaced) => match why_ended.try_recv() {
                Ok(why) => t.failed(&why),
                Err(_) => t.failed(&Failure::Replaced),
            },
            Err(e) => {
                let _ = self
                    .socket
                    .send_to(&encode_error(&e.to_string()), self.peer)
                    .await;
                t.failed(&e);
            }
        }
    }

    /// [`Failure::Replaced`]: the loop ended the session, which must end
    /// without a reply.
    async fn receive(
        &self,
        mut rx: mpsc::Receiver<Bytes>,
        t: &mut Transfer,
    ) -> Result<Stored, Failure> {
        let cfg = &self.config.udp_upload;
        let mut upload = self
            .ctx
            .storage
            .begin_write(
                self.name.clone(),
                self.info.size,
                self.ctx.origin_for(self.peer.ip()),
            )
            .await?;
        let mut progress = UploadProgress::new(&self.info);
        loop {
            match progress.status() {
                Ok(Progress::Complete) => break,
                Ok(Progress::NeedMore { .. }) => {}
                Err(e) => return Err(Failure::violation(e)),
            }
            let chunk = tokio::select! {
                _ = self.ctx.abort.cancelled() => return Err(Failure::Aborted),
                r = tokio::time::timeout(cfg.session_timeout.0, rx.recv()) => match r {
                    Err(_) => return Err(Failure::Timeout(Awaited::NextDatagram)),
                    Ok(None) => return Err(Failure::Replaced),
                    Ok(Some(c)) => c,
                },
            };
            // Counted as received even when it breaks the rules below.
            t.bytes += chunk.len() as u64;
            progress.accept(&chunk).map_err(Failure::violation)?;
            // A large upload's writer thread takes a large datagram as it is
            // (shared with the receive pool); small datagrams are gathered
            // into larger writes.
            match upload.large_reads() && chunk.len() >= crate::udp::RecvPool::SHARE_MIN {
                true => upload.write_owned(chunk).await?,
                false => upload.write(&chunk).await?,
            }
        }
        t.crc = Some(progress.crc());
        let stored = upload.commit(Some(self.info.checksum)).await?;
        t.stored(&stored.name, stored.deduplicated)?;
        // Only now, with the data durable: "If the message is received, then it
        // means the file was sent correctly."
        self.socket.send_to(OK, self.peer).await?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, size: u64) -> FileInfo {
        FileInfo {
            name: name.into(),
            size,
            checksum: 7,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_retry_from_a_new_port_replaces_a_session_only_once_it_is_quiet() {
        let t0 = Instant::now();
        let mut t = SessionTable::default();
        t.insert(t0, addr(1), info("a.txt", 10), 1452, "first");
        // Another student behind the same NAT, same file, while the first is busy.
        assert!(t
            .remove_abandoned(t0 + ms(499), addr(2), &info("a.txt", 10))
            .is_empty());
        // Another file from the same address never replaces it.
        assert!(t
            .remove_abandoned(t0 + ms(900), addr(2), &info("b.txt", 10))
            .is_empty());
        // Another address never does either.
        let other = SocketAddr::from(([10, 0, 0, 2], 2));
        assert!(t
            .remove_abandoned(t0 + ms(900), other, &info("a.txt", 10))
            .is_empty());
        assert_eq!(t.len(), 1);
        // The handout client retries after 1 s without OK.
        let gone = t.remove_abandoned(t0 + ms(500), addr(2), &info("a.txt", 10));
        assert_eq!(gone, vec!["first"]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn data_keeps_a_session_from_counting_as_abandoned_or_stalled() {
        let t0 = Instant::now();
        let mut t = SessionTable::default();
        t.insert(t0, addr(1), info("a.txt", 10_000), 1000, ());
        assert!(matches!(
            t.on_data(t0 + ms(400), addr(1), 1000),
            DataVerdict::Forward(_)
        ));
        assert_eq!(t.stalled(t0 + ms(800), None), None);
        assert!(t
            .remove_abandoned(t0 + ms(800), addr(2), &info("a.txt", 10_000))
            .is_empty());
        assert_eq!(t.stalled(t0 + ms(900), None), Some((addr(1), ms(500))));
        let elsewhere: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(t.stalled(t0 + ms(900), Some(elsewhere)), None);
    }

    #[test]
    fn the_stalled_session_that_gives_way_is_the_quietest() {
        let t0 = Instant::now();
        let mut t = SessionTable::default();
        t.insert(t0, addr(1), info("a", 1), 100, ());
        t.insert(t0 + ms(100), addr(2), info("b", 1), 100, ());
        assert_eq!(t.stalled(t0 + ms(550), None), Some((addr(1), ms(550))));
        t.remove(addr(1));
        assert_eq!(t.stalled(t0 + ms(550), None), None);
        assert_eq!(t.stalled(t0 + ms(600), None), Some((addr(2), ms(500))));
    }

    #[test]
    fn the_next_chunk_is_data_even_when_it_parses_as_a_file_info() {
        let mut t = SessionTable::default();
        let json = br#"{"name": "x", "size": 3, "checksum": "00000001"}"#;
        let n = json.len() as u64;
        t.insert(Instant::now(), addr(1), info("doc.json", n), 1452, ());
        let expected = FileInfo {
            name: "x".into(),
            size: 3,
            checksum: 1,
        };
        // From a peer with no session it is a file_info...
        assert_eq!(
            t.classify(addr(2), json, 4096),
            Datagram::FileInfo(expected.clone())
        );
        // ...from the session's peer, exactly the file's bytes, it is data.
        assert_eq!(t.classify(addr(1), json, 4096), Datagram::Data);
        // A broken header from a stranger is answered; from the session it is data.
        assert!(matches!(
            t.classify(addr(2), b"{nope", 4096),
            Datagram::BadFileInfo(_)
        ));
        assert_eq!(t.classify(addr(1), b"{nope", 4096), Datagram::Data);
    }

    #[test]
    fn a_repeated_file_info_before_data_is_a_duplicate_and_after_it_a_restart() {
        let t0 = Instant::now();
        let mut t = SessionTable::default();
        let i = info("a.txt", 5000);
        t.insert(t0, addr(1), i.clone(), 1000, ());
        assert!(t.is_duplicate(addr(1), &i));
        assert!(!t.is_duplicate(addr(1), &info("b.txt", 5000)));
        let _ = t.on_data(t0, addr(1), 1000);
        assert!(!t.is_duplicate(addr(1), &i));
    }

    #[test]
    fn a_datagram_over_the_buffer_size_ends_the_session() {
        let t0 = Instant::now();
        let mut t = SessionTable::default();
        t.insert(t0, addr(1), info("a", 5000), 1000, "h");
        match t.on_data(t0, addr(1), 1001) {
            DataVerdict::TooLarge { buffer_size, io } => assert_eq!((buffer_size, io), (1000, "h")),
            _ => panic!("not refused"),
        }
        assert!(matches!(t.on_data(t0, addr(1), 10), DataVerdict::NoSession));
    }
}
