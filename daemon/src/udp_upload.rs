//! `udp_upload` (seed 000): `file_info`, buffer size, data datagrams, `OK`.
//!
//! One receive loop owns the session table, keyed by peer address (IP and
//! port). Each session is a task fed through a bounded channel; it writes
//! through [`crate::storage`] and sends `OK` only after the file is durable.
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
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use ferry_proto::names::SafeName;
use ferry_proto::udp_upload::{
    encode_buffer_size, encode_error, looks_like_file_info, parse_file_info, FileInfo, Progress,
    UploadProgress, DEFAULT_MAX_HEADER_LEN, OK,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::limits::{Limiter, Permit, Refusal, ReplyBudget, REPLIES_PER_SECOND};
use crate::report::Transfer;
use crate::storage::Stored;
use crate::tcp::Failure;
use crate::Ctx;

/// Queued data per session, in bytes (bounds memory when the disk is slow).
const QUEUE_BYTES: usize = 256 * 1024;

struct Handle {
    id: u64,
    /// The session's place under the caps. It lives here, in the table, so
    /// that removing a session frees its place at once: a retry replacing it
    /// takes the place it leaves.
    _permit: Permit,
    /// Why the loop ended the session, if it did (dropped unsent: replaced).
    ended: Option<oneshot::Sender<String>>,
    /// The buffer size this session announced (a reload does not change it).
    buffer_size: usize,
    info: FileInfo,
    tx: mpsc::Sender<Bytes>,
    started_data: bool,
    /// Data bytes passed to the session so far.
    received: u64,
    last_seen: Instant,
}

impl Handle {
    /// True when a datagram of `len` bytes is exactly the next chunk this
    /// session expects: a full buffer, or the rest of the file. Such a
    /// datagram is data even if its bytes parse as a `file_info` (a file
    /// whose content is JSON).
    fn expects(&self, len: usize) -> bool {
        let left = self.info.size.saturating_sub(self.received);
        left > 0 && len as u64 == left.min(self.buffer_size as u64)
    }
}

/// A session this quiet is taken for one its client gave up on: the handout
/// client waits 1 s for `OK` before retrying, while an upload in progress
/// sends datagrams back to back. So a same-file session from the same IP is
/// replaced only when idle this long, and two students behind one NAT
/// uploading the same file do not cancel each other.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The receive loop: datagrams and session ends in, each handed to the
/// [`Receiver`].
pub async fn serve(ctx: Arc<Ctx>, socket: UdpSocket) {
    tracing::info!(service = "udp_upload", addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), buffer_size = ctx.config().udp_upload.buffer_size, "listening");
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut r = Receiver {
        ctx: Arc::clone(&ctx),
        socket: Arc::new(socket),
        limiter: Limiter::new(),
        budget: ReplyBudget::new(REPLIES_PER_SECOND),
        ended_tx,
        sessions: HashMap::new(),
        next_id: 0,
        stopping: false,
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        ctx.udp_sessions
            .store(r.sessions.len(), std::sync::atomic::Ordering::Relaxed);
        let (n, peer) = tokio::select! {
            _ = ctx.stop.cancelled(), if !r.stopping => {
                r.stopping = true;
                if r.sessions.is_empty() { break }
                continue;
            }
            _ = ctx.abort.cancelled() => break,
            Some((peer, id)) = ended_rx.recv() => {
                if r.sessions.get(&peer).map(|h| h.id) == Some(id) {
                    r.sessions.remove(&peer);
                }
                if r.stopping && r.sessions.is_empty() { break }
                continue;
            }
            pair = crate::udp::recv_datagram(&r.socket, &mut buf) => pair,
        };
        tracing::trace!(peer = %peer, len = n, "datagram");
        if r.on_datagram(peer, &buf[..n]).await.is_break() {
            break;
        }
    }
    tracing::debug!(service = "udp_upload", "receive loop ended");
}

/// The session table and what decides over it: one per service.
struct Receiver {
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    limiter: Arc<Limiter>,
    budget: ReplyBudget,
    ended_tx: mpsc::UnboundedSender<(SocketAddr, u64)>,
    sessions: HashMap<SocketAddr, Handle>,
    next_id: u64,
    stopping: bool,
}

impl Receiver {
    /// `ERROR: <why>` to `peer`, within the reply budget.
    async fn reply_error(&self, peer: SocketAddr, why: String) {
        if self.budget.allow() {
            let _ = self.socket.send_to(&encode_error(&why), peer).await;
        } else {
            tracing::debug!(peer = %peer, "error reply over the budget: not sent");
        }
    }

    /// One datagram: a `file_info` (a new upload) or data for a session.
    async fn on_datagram(&mut self, peer: SocketAddr, datagram: &[u8]) -> ControlFlow<()> {
        // A duplicate of the session's own file_info before any data is still
        // a duplicate, whatever its length.
        let next_chunk = self.sessions.get(&peer).is_some_and(|h| {
            h.expects(datagram.len())
                && (h.started_data
                    || parse_file_info(datagram, DEFAULT_MAX_HEADER_LEN)
                        .ok()
                        .as_ref()
                        != Some(&h.info))
        });
        if !next_chunk && looks_like_file_info(datagram) {
            let max_header =
                DEFAULT_MAX_HEADER_LEN.max(self.ctx.config().limits.max_name_len * 6 + 128);
            match parse_file_info(datagram, max_header) {
                Ok(info) => {
                    if let Err(why) = self.on_file_info(peer, info).await {
                        self.reply_error(peer, why).await;
                    }
                    return ControlFlow::Continue(());
                }
                Err(e) if !self.sessions.contains_key(&peer) => {
                    tracing::debug!(peer = %peer, error = %e, "bad file_info");
                    self.reply_error(peer, e.to_string()).await;
                    return ControlFlow::Continue(());
                }
                // Data that happens to start with '{': fall through to the session.
                Err(_) => {}
            }
        }
        self.on_data(peer, datagram).await
    }

    /// A `file_info`: starts a session, or says why not (the reply).
    async fn on_file_info(&mut self, peer: SocketAddr, info: FileInfo) -> Result<(), String> {
        if let Some(h) = self.sessions.get(&peer) {
            if h.info == info && !h.started_data {
                tracing::debug!(peer = %peer, "duplicate file_info ignored");
                return Ok(());
            }
        }
        if self.stopping {
            return Err("the server is shutting down; try again shortly".into());
        }
        // A fresh file_info from a peer restarts its session.
        self.sessions.remove(&peer);
        let config = self.ctx.config();
        let max_name = config.limits.max_name_len;
        if info.name.len() > max_name {
            return Err(format!(
                "the name is {} bytes long, the limit is {max_name}",
                info.name.len()
            ));
        }
        let name = SafeName::for_upload(&info.name).map_err(|e| {
            tracing::warn!(service = "udp_upload", peer = %peer, requested = ?info.name, error = %e, "refused");
            format!("refused name {:?}: {e}", info.name)
        })?;
        let max = config.limits.max_file_size.0;
        if info.size > max {
            return Err(format!(
                "the file is {} bytes, the limit is {max}",
                info.size
            ));
        }
        // The same upload retried from a new port replaces the abandoned
        // session, taking its place under the caps.
        self.sessions.retain(|addr, h| {
            !(addr.ip() == peer.ip() && h.info == info && h.last_seen.elapsed() >= ABANDONED_AFTER)
        });
        let permit = self.admit(peer, &info).map_err(|why| {
            tracing::warn!(service = "udp_upload", peer = %peer, reason = %why, "session refused");
            why
        })?;
        self.start(peer, info, name, permit);
        Ok(())
    }

    /// A place under the caps and the quota for `info`, or why not.
    fn admit(&mut self, peer: SocketAddr, info: &FileInfo) -> Result<Permit, String> {
        let config = self.ctx.config();
        let cfg = &config.udp_upload;
        // The quota decides before anyone is evicted for this upload, and is
        // charged only once it has a place.
        self.ctx
            .check_upload(peer.ip(), info.size)
            .map_err(|e| e.to_string())?;
        let acquire =
            |l: &Arc<Limiter>| l.try_acquire(peer.ip(), cfg.max_sessions, cfg.max_sessions_per_ip);
        let mut acquired = acquire(&self.limiter);
        if let Err(why) = &acquired {
            // Under pressure, a session making no progress gives way before a
            // new one is refused: one of this address's, or anyone's when
            // only the total is full.
            let own_full = self.limiter.held_by(peer.ip()) >= cfg.max_sessions_per_ip;
            let from = (own_full || matches!(why, Refusal::FullForIp(_))).then(|| peer.ip());
            if evict_stalled(&mut self.sessions, from) {
                acquired = acquire(&self.limiter);
            }
        }
        let permit = acquired.map_err(|why| why.to_string())?;
        self.ctx
            .admit_upload(peer.ip(), info.size)
            .map_err(|e| e.to_string())?;
        Ok(permit)
    }

    /// Puts a session in the table and starts its task.
    fn start(&mut self, peer: SocketAddr, info: FileInfo, name: SafeName, permit: Permit) {
        let buffer_size = self.ctx.config().udp_upload.buffer_size;
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::channel((QUEUE_BYTES / buffer_size).max(8));
        let (ended_by_loop, why_ended) = oneshot::channel();
        self.sessions.insert(
            peer,
            Handle {
                id,
                _permit: permit,
                ended: Some(ended_by_loop),
                info: info.clone(),
                buffer_size,
                tx,
                started_data: false,
                received: 0,
                last_seen: Instant::now(),
            },
        );
        let session = Session {
            ctx: Arc::clone(&self.ctx),
            socket: Arc::clone(&self.socket),
            peer,
            info,
            name,
            buffer_size,
        };
        let ended = self.ended_tx.clone();
        self.ctx.tracker.spawn(async move {
            session.run(rx, why_ended).await;
            let _ = ended.send((peer, id));
        });
    }

    /// A data datagram: to its session's queue, or an error reply.
    async fn on_data(&mut self, peer: SocketAddr, datagram: &[u8]) -> ControlFlow<()> {
        let n = datagram.len();
        let Some(h) = self.sessions.get_mut(&peer) else {
            tracing::debug!(peer = %peer, len = n, "data without a session");
            let why = format!("no upload in progress from {peer}: send the file_info JSON first");
            self.reply_error(peer, why).await;
            return ControlFlow::Continue(());
        };
        h.started_data = true;
        h.received += n as u64;
        h.last_seen = Instant::now();
        if n > h.buffer_size {
            let why = format!(
                "a datagram of {n} bytes is larger than the buffer size {}",
                h.buffer_size
            );
            if let Some(tell) = h.ended.take() {
                let _ = tell.send(why.clone());
            }
            self.sessions.remove(&peer);
            self.reply_error(peer, why).await;
            return ControlFlow::Continue(());
        }
        let tx = h.tx.clone();
        tokio::select! {
            _ = self.ctx.abort.cancelled() => ControlFlow::Break(()),
            r = tx.send(Bytes::copy_from_slice(datagram)) => { let _ = r; ControlFlow::Continue(()) }
        }
    }
}

/// Ends the session that has gone longest without a datagram, if that is at
/// least [`ABANDONED_AFTER`] (and it is from `ip`'s address, when given); its
/// place under the caps is free on return.
fn evict_stalled(sessions: &mut HashMap<SocketAddr, Handle>, ip: Option<std::net::IpAddr>) -> bool {
    let ip = ip.map(crate::limits::canonical);
    let victim = sessions
        .iter()
        .filter(|(addr, h)| {
            ip.map_or(true, |ip| crate::limits::canonical(addr.ip()) == ip)
                && h.last_seen.elapsed() >= ABANDONED_AFTER
        })
        .min_by_key(|(_, h)| h.last_seen)
        .map(|(addr, _)| *addr);
    let Some(addr) = victim else { return false };
    if let Some(mut h) = sessions.remove(&addr) {
        if let Some(tell) = h.ended.take() {
            let _ = tell.send(format!(
                "evicted: no datagram for {} ms while the server was full",
                h.last_seen.elapsed().as_millis()
            ));
        }
        tracing::info!(service = "udp_upload", peer = %addr, "evicted a stalled session to make room");
    }
    true
}

struct Session {
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    info: FileInfo,
    name: SafeName,
    buffer_size: usize,
}

impl Session {
    async fn run(self, rx: mpsc::Receiver<Bytes>, mut why_ended: oneshot::Receiver<String>) {
        let mut t = Transfer::start("udp_upload", self.peer);
        t.requested = self.info.name.clone();
        t.stored = self.name.to_string();
        match self.receive(rx, &mut t).await {
            Ok(stored) => {
                t.stored = stored.name.clone();
                t.ok(if stored.deduplicated {
                    "deduplicated"
                } else {
                    "stored"
                });
            }
            // The loop ended the session: it says why (and has answered the
            // client), or it dropped it for a new file_info.
            Err(None) => match why_ended.try_recv() {
                Ok(why) => t.failed(&why),
                Err(_) => t.failed(&"replaced by a new file_info"),
            },
            Err(Some(e)) => {
                let _ = self
                    .socket
                    .send_to(&encode_error(&e.to_string()), self.peer)
                    .await;
                t.failed(&e);
            }
        }
    }

    /// `Err(None)`: the session was replaced and must end without a reply.
    async fn receive(
        &self,
        mut rx: mpsc::Receiver<Bytes>,
        t: &mut Transfer,
    ) -> Result<Stored, Option<Failure>> {
        let cfg = &self.ctx.config().udp_upload;
        let mut upload = self
            .ctx
            .storage
            .begin_write(self.name.clone(), self.info.size)
            .await
            .map_err(|e| Some(e.into()))?;
        self.socket
            .send_to(&encode_buffer_size(self.buffer_size), self.peer)
            .await
            .map_err(|e| Some(e.into()))?;
        let mut progress = UploadProgress::new(&self.info);
        loop {
            match progress.status() {
                Ok(Progress::Complete) => break,
                Ok(Progress::NeedMore { .. }) => {}
                Err(e) => return Err(Some(Failure::refused(e))),
            }
            let chunk = tokio::select! {
                _ = self.ctx.abort.cancelled() => return Err(Some(Failure::Aborted)),
                r = tokio::time::timeout(cfg.session_timeout.0, rx.recv()) => match r {
                    Err(_) => return Err(Some(Failure::Timeout("the next datagram"))),
                    Ok(None) => return Err(None),
                    Ok(Some(c)) => c,
                },
            };
            progress
                .accept(&chunk)
                .map_err(|e| Some(Failure::refused(e)))?;
            upload.write(&chunk).await.map_err(|e| Some(e.into()))?;
            t.bytes = progress.received();
        }
        t.crc = Some(progress.crc());
        let stored = upload
            .commit(Some(self.info.checksum))
            .await
            .map_err(|e| Some(e.into()))?;
        // Only now, with the data durable: "If the message is received, then it
        // means the file was sent correctly."
        self.socket
            .send_to(OK, self.peer)
            .await
            .map_err(|e| Some(e.into()))?;
        Ok(stored)
    }
}
