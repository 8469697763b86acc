//! `udp_sum` (seed 001 §3): "Adding two numbers". The reply mirrors the
//! request's layout; bad input gets `ERROR: <reason>`. Unlike the lab server,
//! an out-of-range number never shuts the service down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_config::ServiceId;
use ferry_proto::udp_sum::{
    check_range, encode_error, encode_reply, parse_request, Layout, SumError, SumRequest,
    DEFAULT_MAX_REQUEST_LEN, MAX_NAME_LEN,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::failure::Failure;
use crate::limits::{ReplyBudget, REPLIES_PER_SECOND};
use crate::report::{Direction, Transfer};

/// This service's name in logs and metrics.
const SERVICE: &str = ServiceId::UdpSum.name();

/// How long a name sent alone waits for its number.
const PENDING_TTL: Duration = Duration::from_secs(10);
/// Names waiting for their number, at most (≈ 300 KiB).
const MAX_PENDING: usize = 1024;
/// How long a `name<space>integer` datagram waits for a bare integer from the
/// same peer before it is answered as name and number. A two-datagram client
/// whose name ends in a number (`Client 1`, then `7`) sends its number at
/// once; a one-datagram `Ann 7` client gets its answer this much later.
const SPACED_HOLD: Duration = Duration::from_millis(300);

/// A reply to send: the client's name and number, in the layout it used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    peer: SocketAddr,
    client: String,
    number: i64,
    layout: Layout,
}

/// What a peer sent that waits for more.
#[derive(Debug)]
enum Held {
    /// A name alone: the number should follow.
    Name(String),
    /// `name<space>integer`: the answer, unless a bare integer follows, which
    /// makes the whole text the name.
    Spaced { text: String, answer: Answer },
}

/// The pairing rules of udp_sum, sans-IO: requests in with the time they
/// arrived, answers out; time passes through [`Pairs::on_timeout`].
///
/// - `name:number` (any separator but a space, or JSON): answered at once.
/// - a name alone, then a bare integer within 10 s: one answer, two datagrams.
/// - `name<space>integer`: held for [`SPACED_HOLD`]; a bare integer from the
///   same peer in that time makes the whole text the name (`Client 1`, then
///   `7`); otherwise it is answered as name and number.
/// - a bare integer with nothing held: answered with an empty name.
#[derive(Debug, Default)]
struct Pairs {
    held: HashMap<SocketAddr, (Held, Instant)>,
}

impl Pairs {
    /// A parsed request from `peer` at `now`; `text` is the datagram as text.
    fn on_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        req: SumRequest,
        text: &str,
    ) -> Vec<Answer> {
        let mut out = Vec::new();
        match req {
            SumRequest::Full {
                name,
                number,
                layout: Layout::Separated(b' '),
            } if text.len() <= MAX_NAME_LEN => {
                let answer = Answer {
                    peer,
                    client: name,
                    number,
                    layout: Layout::Separated(b' '),
                };
                let held = Held::Spaced {
                    text: text.to_owned(),
                    answer,
                };
                out.extend(self.hold(now, peer, held));
            }
            SumRequest::Full {
                name,
                number,
                layout,
            } => out.push(Answer {
                peer,
                client: name,
                number,
                layout,
            }),
            SumRequest::NameOnly(name) => out.extend(self.hold(now, peer, Held::Name(name))),
            SumRequest::NumberOnly(number) => {
                let client = match self.held.remove(&peer) {
                    Some((Held::Spaced { text, .. }, _)) => text,
                    Some((Held::Name(name), at)) if now.duration_since(at) < PENDING_TTL => name,
                    _ => String::new(),
                };
                out.push(Answer {
                    peer,
                    client,
                    number,
                    layout: Layout::TwoDatagrams,
                });
            }
        }
        out
    }

    /// Holds `held` for `peer`; a spaced request it displaces is answered.
    fn hold(&mut self, now: Instant, peer: SocketAddr, held: Held) -> Option<Answer> {
        self.held.retain(|_, (h, at)| {
            matches!(h, Held::Spaced { .. }) || now.duration_since(*at) < PENDING_TTL
        });
        if self.held.len() >= MAX_PENDING && !self.held.contains_key(&peer) {
            return match held {
                Held::Spaced { answer, .. } => Some(answer),
                Held::Name(_) => None,
            };
        }
        match self.held.insert(peer, (held, now)) {
            Some((Held::Spaced { answer, .. }, _)) => Some(answer),
            _ => None,
        }
    }

    /// When the next held spaced request is due.
    fn deadline(&self) -> Option<Instant> {
        self.held
            .values()
            .filter(|(h, _)| matches!(h, Held::Spaced { .. }))
            .map(|(_, at)| *at + SPACED_HOLD)
            .min()
    }

    /// Time passed: spaced requests no integer followed are answered.
    fn on_timeout(&mut self, now: Instant) -> Vec<Answer> {
        let due: Vec<SocketAddr> = self
            .held
            .iter()
            .filter(|(_, (h, at))| matches!(h, Held::Spaced { .. }) && now >= *at + SPACED_HOLD)
            .map(|(peer, _)| *peer)
            .collect();
        due.into_iter()
            .filter_map(|peer| match self.held.remove(&peer) {
                Some((Held::Spaced { answer, .. }, _)) => Some(answer),
                _ => None,
            })
            .collect()
    }
}

/// The receive loop: datagrams and the hold deadline into [`Pairs`], its
/// answers out through the reply budget.
pub(crate) async fn serve(ctx: Arc<Ctx>, socket: UdpSocket) {
    tracing::info!(service = SERVICE, addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let mut pairs = Pairs::default();
    let mut buf = vec![0u8; DEFAULT_MAX_REQUEST_LEN + 1];
    // Every reply here answers a datagram that may come from a forged source.
    let budget = ReplyBudget::new(REPLIES_PER_SECOND);
    loop {
        let deadline = pairs.deadline();
        let answers = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = sleep_until(deadline), if deadline.is_some() => pairs.on_timeout(Instant::now()),
            (n, peer) = crate::udp::recv_datagram(&socket, &mut buf) => {
                match parse_request(&buf[..n], DEFAULT_MAX_REQUEST_LEN).and_then(in_range) {
                    Ok(req) => {
                        let text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                        pairs.on_request(Instant::now(), peer, req, &text)
                    }
                    Err(e) => {
                        ctx.observe.metrics.sum(false);
                        // Recorded as replied: within the reply budget, so
                        // forged datagrams cannot flood the page or the log.
                        if budget.allow(tokio::time::Instant::now()) {
                            refused(&ctx, peer, &buf[..n], e.clone());
                            reply_error(&socket, peer, &e).await;
                        }
                        Vec::new()
                    }
                }
            }
        };
        for answer in answers {
            send_answer(&ctx, &socket, &budget, answer).await;
        }
    }
}

/// A number out of range is refused as its datagram arrives (so the
/// attempt shows what was sent), except `name number` with a space, which
/// may be a name ending in a number with the integer still to come.
fn in_range(req: SumRequest) -> Result<SumRequest, SumError> {
    match &req {
        SumRequest::Full {
            layout: Layout::Separated(b' '),
            ..
        } => Ok(req),
        SumRequest::Full { number, .. } | SumRequest::NumberOnly(number) => {
            check_range(*number).map(|_| req)
        }
        SumRequest::NameOnly(_) => Ok(req),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

async fn send_answer(ctx: &Ctx, socket: &UdpSocket, budget: &ReplyBudget, a: Answer) {
    let config = ctx.config();
    let cfg = &config.udp_sum;
    if !budget.allow(tokio::time::Instant::now()) {
        tracing::debug!(peer = %a.peer, "reply over the budget: not sent");
        return;
    }
    if let Err(e) = check_range(a.number) {
        ctx.observe.metrics.sum(false);
        let request = format!("{}:{}", a.client, a.number);
        refused(ctx, a.peer, request.as_bytes(), e.clone());
        reply_error(socket, a.peer, &e).await;
        return;
    }
    ctx.observe.metrics.sum(true);
    tracing::info!(
        service = SERVICE,
        peer = %a.peer,
        client = ?a.client,
        server = ?cfg.server_name,
        client_number = a.number,
        server_number = cfg.number,
        sum = a.number + cfg.number,
        "sum answered"
    );
    for datagram in encode_reply(&cfg.server_name, cfg.number, a.layout) {
        let _ = socket.send_to(&datagram, a.peer).await;
    }
}

/// A refused request is one failed attempt: on the page, in
/// `/api/attempts` and in the log, with what arrived.
fn refused(ctx: &Ctx, peer: SocketAddr, request: &[u8], e: SumError) {
    let mut t = Transfer::start(&ctx.observe, ServiceId::UdpSum, Direction::Request, peer);
    t.saw(request);
    t.requested = String::from_utf8_lossy(request).trim().to_owned();
    t.failed(&Failure::violation(e));
}

/// Answers `ERROR: …` (the attempt was logged by [`refused`]).
async fn reply_error(socket: &UdpSocket, peer: SocketAddr, e: &SumError) {
    let _ = socket.send_to(&encode_error(e), peer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn feed(p: &mut Pairs, now: Instant, from: SocketAddr, text: &str) -> Vec<Answer> {
        let req = parse_request(text.as_bytes(), DEFAULT_MAX_REQUEST_LEN).expect("parses");
        p.on_request(now, from, req, text)
    }

    fn answer(port: u16, client: &str, number: i64, layout: Layout) -> Answer {
        Answer {
            peer: peer(port),
            client: client.into(),
            number,
            layout,
        }
    }

    #[test]
    fn a_name_ending_in_a_number_then_an_integer_is_one_name() {
        let t0 = Instant::now();
        let mut p = Pairs::default();
        assert_eq!(feed(&mut p, t0, peer(1), "Client 1"), vec![]);
        assert_eq!(p.deadline(), Some(t0 + SPACED_HOLD));
        let got = feed(&mut p, t0 + Duration::from_millis(5), peer(1), "7");
        assert_eq!(got, vec![answer(1, "Client 1", 7, Layout::TwoDatagrams)]);
        assert_eq!(p.deadline(), None);
        assert_eq!(p.on_timeout(t0 + Duration::from_secs(5)), vec![]);
    }

    #[test]
    fn name_space_number_alone_is_answered_after_the_hold() {
        let t0 = Instant::now();
        let mut p = Pairs::default();
        assert_eq!(feed(&mut p, t0, peer(1), "Ann 7"), vec![]);
        let just_before = t0 + SPACED_HOLD - Duration::from_millis(1);
        assert_eq!(p.on_timeout(just_before), vec![]);
        assert_eq!(
            p.on_timeout(t0 + SPACED_HOLD),
            vec![answer(1, "Ann", 7, Layout::Separated(b' '))]
        );
        // An integer after the hold has nothing to complete.
        let got = feed(&mut p, t0 + SPACED_HOLD * 2, peer(1), "5");
        assert_eq!(got, vec![answer(1, "", 5, Layout::TwoDatagrams)]);
    }

    #[test]
    fn other_peers_and_layouts_are_not_held() {
        let t0 = Instant::now();
        let mut p = Pairs::default();
        assert_eq!(feed(&mut p, t0, peer(1), "Client 1"), vec![]);
        // Another peer's integer does not complete it.
        let got = feed(&mut p, t0, peer(2), "7");
        assert_eq!(got, vec![answer(2, "", 7, Layout::TwoDatagrams)]);
        let got = feed(&mut p, t0, peer(3), "Bob:9");
        assert_eq!(got, vec![answer(3, "Bob", 9, Layout::Separated(b':'))]);
        // A new spaced request from the same peer answers the one it displaces.
        let got = feed(&mut p, t0 + Duration::from_millis(10), peer(1), "Client 2");
        assert_eq!(got, vec![answer(1, "Client", 1, Layout::Separated(b' '))]);
        assert_eq!(
            p.deadline(),
            Some(t0 + Duration::from_millis(10) + SPACED_HOLD)
        );
    }

    #[test]
    fn a_name_alone_waits_ten_seconds_for_its_number() {
        let t0 = Instant::now();
        let mut p = Pairs::default();
        assert_eq!(feed(&mut p, t0, peer(1), "Client of Ann"), vec![]);
        assert_eq!(p.deadline(), None, "names alone set no timer");
        let got = feed(&mut p, t0 + Duration::from_secs(9), peer(1), "7");
        assert_eq!(
            got,
            vec![answer(1, "Client of Ann", 7, Layout::TwoDatagrams)]
        );
        assert_eq!(feed(&mut p, t0, peer(1), "Client of Ann"), vec![]);
        let got = feed(&mut p, t0 + PENDING_TTL, peer(1), "7");
        assert_eq!(got, vec![answer(1, "", 7, Layout::TwoDatagrams)]);
    }
}
