//! `udp_download` (seed 001 §4): a name in, the file out in 2048-byte chunks.
//!
//! Guarded against amplification (UDP sources can be forged): only sources
//! in `allow` are answered at all; downloads are capped in total and per
//! address; each is paced to `rate` bytes per second; each address has a
//! byte budget per window (a download or `STAT` that does not fit is refused
//! at its start); each download sends from a socket connected to its client,
//! so an ICMP "port unreachable" (nobody asked) stops it at the next send;
//! and error replies share the services' reply budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_config::{Config, ServiceId};
use ferry_proto::crc::Crc32;
use ferry_proto::names::RelPath;
use ferry_proto::udp_download::{
    encode_error, encode_stat_reply, parse_request, Request, CHUNK_SIZE, DEFAULT_MAX_REQUEST_LEN,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::failure::{Failure, NameOf, Refusal, When};
use crate::limits::RefusalReason;
use crate::limits::{ByteBudget, Limiter, Permit, ReplyBudget, REPLIES_PER_SECOND};
use crate::report::{Direction, Outcome, Transfer};
use crate::storage::Download;

/// This service's name in logs and metrics.
const SERVICE: &str = ServiceId::UdpDownload.name();

/// Bytes read from disk at once (sent as 32 chunks).
const READ_BLOCK: usize = 32 * CHUNK_SIZE;

/// The receive loop.
pub(crate) async fn serve(ctx: Arc<Ctx>, socket: UdpSocket) {
    tracing::info!(service = SERVICE, addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let socket = Arc::new(socket);
    let limiter = Limiter::new();
    let replies = Arc::new(ReplyBudget::new(REPLIES_PER_SECOND));
    let first = ctx.config();
    let budget = Arc::new(std::sync::Mutex::new(ByteBudget::new(
        first.udp_download.budget_per_ip.0,
        first.udp_download.budget_window.0,
    )));
    // Room for the longest request any configuration allows, plus one byte
    // so an over-long request is seen as such.
    let mut buf = vec![0u8; DEFAULT_MAX_REQUEST_LEN.max(4096 + 8) + 1];
    loop {
        let (n, peer) = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            pair = crate::udp::recv_datagram(&socket, &mut buf) => pair,
        };
        let config = ctx.config();
        let cfg = &config.udp_download;
        let max = DEFAULT_MAX_REQUEST_LEN.max(config.limits.max_name_len + 8);
        if !cfg.allow.iter().any(|net| net.contains(peer.ip())) {
            tracing::debug!(peer = %peer, "request from outside udp_download.allow ignored");
            ctx.observe
                .metrics
                .refused(SERVICE, RefusalReason::NotAllowed);
            continue;
        }
        let request = match parse_request(&buf[..n], max) {
            Ok(r) => r,
            Err(e) => {
                if replies.allow(tokio::time::Instant::now()) {
                    let _ = socket.send_to(&encode_error(&e.to_string()), peer).await;
                }
                continue;
            }
        };
        let permit = match limiter.try_acquire(
            peer.ip(),
            cfg.max_downloads,
            cfg.max_downloads_per_ip,
        ) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(service = SERVICE, peer = %peer, reason = %why, "download refused");
                ctx.observe.metrics.refused(SERVICE, why.reason());
                if replies.allow(tokio::time::Instant::now()) {
                    let _ = socket.send_to(&encode_error(&why.to_string()), peer).await;
                }
                continue;
            }
        };
        let task = Task {
            ctx: Arc::clone(&ctx),
            config: Arc::clone(&config),
            socket: Arc::clone(&socket),
            replies: Arc::clone(&replies),
            budget: Arc::clone(&budget),
            peer,
            _permit: permit,
        };
        ctx.tracker.spawn(task.run(request));
    }
}

struct Task {
    ctx: Arc<Ctx>,
    /// The configuration when the request came: a reload never changes a
    /// download midway.
    config: Arc<Config>,
    socket: Arc<UdpSocket>,
    replies: Arc<ReplyBudget>,
    budget: Arc<std::sync::Mutex<ByteBudget>>,
    peer: SocketAddr,
    _permit: Permit,
}

/// Where a download's datagrams go out: a socket of its own on the service's
/// port, connected to the client (ICMP errors come back to it), or the
/// shared one if that cannot be made.
enum Out<'a> {
    Connected(UdpSocket),
    Shared(&'a UdpSocket, SocketAddr),
}

impl Out<'_> {
    async fn send(&self, datagram: &[u8]) -> Result<(), Failure> {
        let r = match self {
            Out::Connected(s) => s.send(datagram).await,
            Out::Shared(s, peer) => s.send_to(datagram, *peer).await,
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(Failure::Closed(When::PortUnreachable))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Task {
    async fn run(self, request: Request) {
        match request {
            Request::File(name) => self.file(name).await,
            Request::Stat(name) => self.stat_request(name).await,
        }
    }

    /// A download: one transfer attempt, logged and shown as such.
    async fn file(self, name: String) {
        let mut t = Transfer::start(
            &self.ctx.observe,
            ServiceId::UdpDownload,
            Direction::Download,
            self.peer,
        );
        t.saw(name.as_bytes());
        t.requested = name.clone();
        let result = async {
            let path = self.path(&name)?;
            let download = self.ctx.open_for(self.peer.ip(), &path).await?;
            self.reserve(download.size())?;
            t.stored = path.to_string();
            self.send(&self.out(), download, &mut t).await
        }
        .await;
        match result {
            Ok(()) => t.ok(Outcome::Sent),
            Err(e) => {
                self.reply_error(&e).await;
                t.failed(&e);
            }
        }
    }

    /// ferry's `STAT`: the size and CRC-32, answered, not a transfer (only
    /// logged at debug).
    async fn stat_request(self, name: String) {
        let result = async {
            let path = self.path(&name)?;
            let download = self.ctx.open_for(self.peer.ip(), &path).await?;
            let out = self.out();
            if let Some(crc) = download.cached_crc().await {
                // Recorded when stored: no read, nothing from the budget.
                return out.send(&encode_stat_reply(download.size(), crc)).await;
            }
            self.reserve(download.size())?;
            self.stat(&out, download).await
        }
        .await;
        match result {
            Ok(()) => tracing::debug!(peer = %self.peer, requested = %name, "STAT answered"),
            Err(e) => {
                tracing::debug!(peer = %self.peer, requested = %name, reason = %e, "STAT refused");
                self.reply_error(&e).await;
            }
        }
    }

    fn path(&self, name: &str) -> Result<RelPath, Failure> {
        RelPath::parse(name, self.config.limits.max_name_len)
            .map_err(|e| Failure::name(NameOf::File, name, e))
    }

    /// The error datagram; only a client known gone (ICMP) gets none.
    async fn reply_error(&self, e: &Failure) {
        if !matches!(e, Failure::Closed(_)) && self.replies.allow(tokio::time::Instant::now()) {
            let _ = self
                .socket
                .send_to(&encode_error(&e.to_string()), self.peer)
                .await;
        }
    }

    /// Refuses a file the rest of the client's byte budget cannot hold; the
    /// bytes are taken a block at a time before it is sent ([`Task::spend`]),
    /// and what a failure leaves unsent is given back, so a download that
    /// ICMP stops at once costs what it sent.
    fn reserve(&self, size: u64) -> Result<(), Failure> {
        let budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let cfg = &self.config.udp_download;
        let (per, window) = (cfg.budget_per_ip, cfg.budget_window);
        if size > per.0 {
            self.ctx
                .observe
                .metrics
                .refused(SERVICE, RefusalReason::DownloadBudget);
            return Err(Failure::Refused(Refusal::OverBudget { per, window }));
        }
        budget
            .check(tokio::time::Instant::now(), self.peer.ip(), size)
            .map_err(|wait| {
                self.ctx
                    .observe
                    .metrics
                    .refused(SERVICE, RefusalReason::DownloadBudget);
                Failure::Refused(Refusal::BudgetSpent {
                    per,
                    window,
                    retry_secs: crate::limits::retry_secs(wait),
                })
            })
    }

    fn spend(&self, bytes: u64) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        budget.spend(tokio::time::Instant::now(), self.peer.ip(), bytes);
    }

    /// Returns bytes charged but never sent.
    fn give_back(&self, bytes: u64) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        budget.give_back(tokio::time::Instant::now(), self.peer.ip(), bytes);
    }

    fn out(&self) -> Out<'_> {
        let local = self.socket.local_addr();
        match local.and_then(|l| crate::udp::bind(l, true, Some(self.peer))) {
            Ok(s) => Out::Connected(s),
            Err(e) => {
                tracing::debug!(error = %e, "no connected socket: sending from the shared one");
                Out::Shared(&self.socket, self.peer)
            }
        }
    }

    /// Waits until `sent` bytes are [`due`], ending early on abort.
    async fn pace(&self, started: Instant, sent: u64) -> Result<(), Failure> {
        let Some(due) = due(started, sent, self.config.udp_download.rate.0) else {
            return Ok(());
        };
        if due <= Instant::now() {
            return Ok(());
        }
        tokio::select! {
            _ = self.ctx.abort.cancelled() => Err(Failure::Aborted),
            _ = tokio::time::sleep_until(due) => Ok(()),
        }
    }

    /// The size and CRC-32 (a STAT costs the same disk reads as a download,
    /// from the same budget).
    async fn stat(&self, out: &Out<'_>, mut download: Download) -> Result<(), Failure> {
        let mut crc = Crc32::new();
        let mut block = BytesMut::with_capacity(READ_BLOCK);
        loop {
            download
                .read_chunk(&mut block, READ_BLOCK)
                .await
                .map_err(crate::storage::StorageError::from)?;
            if block.is_empty() {
                break;
            }
            crc.update(&block);
            if self.ctx.abort.is_cancelled() {
                return Err(Failure::Aborted);
            }
            // Unpaced (the client waits for the answer), but from the budget.
            self.spend(block.len() as u64);
        }
        // Summed from the whole file: the next STAT (or RAF) needs no read.
        download.record_crc(crc.value()).await;
        out.send(&encode_stat_reply(download.size(), crc.value()))
            .await
    }

    async fn send(
        &self,
        out: &Out<'_>,
        mut download: Download,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let mut crc = Crc32::new();
        let mut block = BytesMut::with_capacity(READ_BLOCK);
        let mut sent = 0u64;
        let mut left = download.size();
        loop {
            if self.ctx.abort.is_cancelled() {
                return Err(Failure::Aborted);
            }
            download
                .read_chunk(&mut block, READ_BLOCK)
                .await
                .map_err(crate::storage::StorageError::from)?;
            let take = block.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let data = &block[..take];
            crc.update(data);
            // Paced per datagram, not per block: a student's client with the
            // default receive buffer (about 60 datagrams) that stalls for a
            // moment must meet a trickle, not a 32-datagram burst.
            // The block is charged before any of it leaves (one lock per
            // block, not per datagram): a client holding its whole file
            // finds the cost already in the budget. What a failure leaves
            // unsent is given back, so a download that ICMP stops costs
            // what it sent.
            self.spend(take as u64);
            let block_start = sent;
            for chunk in data.chunks(CHUNK_SIZE) {
                let r = match out.send(chunk).await {
                    Ok(()) => {
                        sent += chunk.len() as u64;
                        self.pace(started, sent).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    self.give_back(take as u64 - (sent - block_start));
                    return Err(e);
                }
            }
            left -= take as u64;
            t.bytes = sent;
            // "End of file is detected when the size of the chunk is less than
            // 2048": a file that is a multiple of 2048 ends with an empty datagram.
            if take < READ_BLOCK || left == 0 {
                if take % CHUNK_SIZE == 0 {
                    out.send(&[]).await?;
                }
                break;
            }
        }
        t.crc = Some(crc.value());
        Ok(())
    }
}

/// When a download that started at `started` may have sent `sent` bytes,
/// paced to `rate` bytes a second (`None`: unpaced, rate 0).
fn due(started: Instant, sent: u64, rate: u64) -> Option<Instant> {
    (rate > 0).then(|| started + Duration::from_secs_f64(sent as f64 / rate as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_spreads_bytes_evenly_over_time() {
        let t0 = Instant::now();
        assert_eq!(due(t0, 1 << 20, 0), None, "rate 0 is unpaced");
        assert_eq!(due(t0, 0, 1000), Some(t0));
        assert_eq!(due(t0, 500, 1000), Some(t0 + Duration::from_millis(500)));
        let mib = 1 << 20;
        assert_eq!(
            due(t0, 32 * mib, 32 * mib),
            Some(t0 + Duration::from_secs(1))
        );
    }
}
