//! `udp_sum` (seed 001 §3): "Adding two numbers". The reply mirrors the
//! request's layout; bad input gets `ERROR: <reason>`. Unlike the lab server,
//! an out-of-range number never shuts the service down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::udp_sum::{
    check_range, encode_error, encode_reply, parse_request, Layout, SumError, SumRequest,
    DEFAULT_MAX_REQUEST_LEN,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::limits::{ReplyBudget, REPLIES_PER_SECOND};
use crate::Ctx;

/// How long a name sent alone waits for its number.
const PENDING_TTL: Duration = Duration::from_secs(10);
/// Names waiting for their number, at most (≈ 300 KiB).
const MAX_PENDING: usize = 1024;

/// The receive loop.
pub async fn serve(ctx: Arc<Ctx>, socket: UdpSocket) {
    tracing::info!(service = "udp_sum", addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let mut pending: HashMap<SocketAddr, (String, Instant)> = HashMap::new();
    let mut buf = vec![0u8; DEFAULT_MAX_REQUEST_LEN + 1];
    // Every reply here answers a datagram that may come from a forged source.
    let budget = ReplyBudget::new(REPLIES_PER_SECOND);
    loop {
        let (n, peer) = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            pair = crate::udp::recv_datagram(&socket, &mut buf) => pair,
        };
        let answer = match parse_request(&buf[..n], DEFAULT_MAX_REQUEST_LEN) {
            Ok(SumRequest::Full {
                name,
                number,
                layout,
            }) => Some((name, number, layout)),
            Ok(SumRequest::NameOnly(name)) => {
                let now = Instant::now();
                pending.retain(|_, (_, at)| now.duration_since(*at) < PENDING_TTL);
                if pending.len() < MAX_PENDING || pending.contains_key(&peer) {
                    pending.insert(peer, (name, now));
                }
                None
            }
            Ok(SumRequest::NumberOnly(number)) => {
                let name = pending
                    .remove(&peer)
                    .filter(|(_, at)| at.elapsed() < PENDING_TTL)
                    .map(|(n, _)| n)
                    .unwrap_or_default();
                Some((name, number, Layout::TwoDatagrams))
            }
            Err(e) => {
                if budget.allow() {
                    reply_error(&socket, peer, &e).await;
                }
                None
            }
        };
        let Some((client, number, layout)) = answer else {
            continue;
        };
        let config = ctx.config();
        let cfg = &config.udp_sum;
        if !budget.allow() {
            tracing::debug!(peer = %peer, "reply over the budget: not sent");
            continue;
        }
        if let Err(e) = check_range(number) {
            reply_error(&socket, peer, &e).await;
            continue;
        }
        tracing::info!(
            service = "udp_sum",
            peer = %peer,
            client = ?client,
            server = ?cfg.server_name,
            client_number = number,
            server_number = cfg.number,
            sum = number + cfg.number,
            "sum answered"
        );
        for datagram in encode_reply(&cfg.server_name, cfg.number, layout) {
            let _ = socket.send_to(&datagram, peer).await;
        }
    }
}

async fn reply_error(socket: &UdpSocket, peer: SocketAddr, e: &SumError) {
    tracing::info!(service = "udp_sum", peer = %peer, error = %e, "refused");
    let _ = socket.send_to(&encode_error(e), peer).await;
}
