//! `udp_download` (seed 001 §4): a name in, the file out in 2048-byte chunks.
//!
//! Guarded against amplification: only sources in `allow` are answered at
//! all, downloads are capped in total and per address, and each is paced to
//! `rate` bytes per second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::crc::Crc32;
use ferry_proto::names::RelPath;
use ferry_proto::udp_download::{
    encode_error, encode_stat_reply, parse_request, Request, CHUNK_SIZE, DEFAULT_MAX_REQUEST_LEN,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::limits::{Limiter, Permit};
use crate::report::Transfer;
use crate::storage::Download;
use crate::tcp::Failure;
use crate::Ctx;

/// Bytes read from disk at once (sent as 32 chunks).
const READ_BLOCK: usize = 32 * CHUNK_SIZE;

/// The receive loop.
pub async fn serve(ctx: Arc<Ctx>, socket: UdpSocket) {
    tracing::info!(service = "udp_download", addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let socket = Arc::new(socket);
    let limiter = Limiter::new();
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
            continue;
        }
        let request = match parse_request(&buf[..n], max) {
            Ok(r) => r,
            Err(e) => {
                let _ = socket.send_to(&encode_error(&e.to_string()), peer).await;
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
                tracing::warn!(service = "udp_download", peer = %peer, reason = %why, "download refused");
                let _ = socket.send_to(&encode_error(&why.to_string()), peer).await;
                continue;
            }
        };
        let task = Task {
            ctx: Arc::clone(&ctx),
            socket: Arc::clone(&socket),
            peer,
            _permit: permit,
        };
        ctx.tracker.spawn(task.run(request));
    }
}

struct Task {
    ctx: Arc<Ctx>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    _permit: Permit,
}

impl Task {
    async fn run(self, request: Request) {
        let mut t = Transfer::start("udp_download", self.peer);
        let (name, stat) = match request {
            Request::File(n) => (n, false),
            Request::Stat(n) => (n, true),
        };
        t.requested = name.clone();
        let result = async {
            let path = RelPath::parse(&name, self.ctx.config().limits.max_name_len)
                .map_err(|e| Failure::refused(format!("refused name {name:?}: {e}")))?;
            t.stored = path.to_string();
            let download = self.ctx.storage.open_read(&path).await?;
            if stat {
                self.stat(download, &mut t).await
            } else {
                self.send(download, &mut t).await
            }
        }
        .await;
        match result {
            Ok(()) => t.ok(if stat { "stat" } else { "sent" }),
            Err(e) => {
                let _ = self
                    .socket
                    .send_to(&encode_error(&e.to_string()), self.peer)
                    .await;
                t.failed(&e);
            }
        }
    }

    async fn stat(&self, mut download: Download, t: &mut Transfer) -> Result<(), Failure> {
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
        }
        t.crc = Some(crc.value());
        self.socket
            .send_to(&encode_stat_reply(download.size, crc.value()), self.peer)
            .await?;
        Ok(())
    }

    async fn send(&self, mut download: Download, t: &mut Transfer) -> Result<(), Failure> {
        let rate = self.ctx.config().udp_download.rate.0;
        let started = Instant::now();
        let mut crc = Crc32::new();
        let mut block = BytesMut::with_capacity(READ_BLOCK);
        let mut sent = 0u64;
        let mut left = download.size;
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
            for chunk in data.chunks(CHUNK_SIZE) {
                self.socket.send_to(chunk, self.peer).await?;
            }
            sent += take as u64;
            left -= take as u64;
            t.bytes = sent;
            // "End of file is detected when the size of the chunk is less than
            // 2048": a file that is a multiple of 2048 ends with an empty datagram.
            if take < READ_BLOCK || left == 0 {
                if take % CHUNK_SIZE == 0 {
                    self.socket.send_to(&[], self.peer).await?;
                }
                break;
            }
            if rate > 0 {
                let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
        }
        t.crc = Some(crc.value());
        Ok(())
    }
}
