//! The HTTP listener (`[http]`): `/metrics` for Prometheus, the lab page at
//! `/`, its data as JSON under `/api/`, and the protocol book at `/book`.
//!
//! It is one more TCP service on the shared accept loop, so it has the same
//! connection caps (total and per address, refused with a `503`), and hyper
//! reads each request's header within `limits.header_timeout`. One request
//! per connection (no keep-alive: an idle browser tab holds nothing), the
//! whole exchange within `header_timeout + idle_timeout`. Requests have no
//! body to read and the page never serves a stored file's contents.
//!
//! | path | what | who |
//! |---|---|---|
//! | `/` | the lab page: transfers in flight, recent attempts with a diagnosis of each failure, the ledger; refreshes every 5 s | everyone: their own address's; `http.admin` networks: all |
//! | `/api/attempts`, `/api/live`, `/api/ledger` | the same as JSON | as the page |
//! | `/metrics` | Prometheus text format | everyone (counts only, no names) |
//! | `/book` | docs/PROTOCOLS.md, which the diagnoses link into | everyone |

mod page;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;

use crate::conn::{reply_and_close, Connection, REPLY_TIMEOUT};
use crate::ctx::Ctx;
use crate::limits::Refusal;
use crate::observe::Viewer;
use crate::tcp::{Caps, TcpService};

/// Largest request header hyper buffers (its minimum is 8 KiB).
const MAX_HEADER: usize = 16 * 1024;

/// Page and API connections at once, at most, on a cap of their own: they
/// never count against the transfers' (64 × the largest answer, a full page
/// of 200 rows with names cut to 160 characters, is a few tens of MiB).
pub(crate) const PAGE_CONNECTIONS: usize = 64;

/// Page and API connections from one address at once, at most (a student
/// reloading, a browser's parallel fetches); past it, `503` with the reason.
pub(crate) const PAGE_CONNECTIONS_PER_IP: usize = 4;

/// Attempts and ledger entries in one page or JSON answer, at most.
const PAGE_ROWS: usize = 200;

/// The HTTP listener as a TCP service.
#[derive(Clone, Copy)]
pub(crate) struct Service;

impl TcpService for Service {
    const NAME: &'static str = "http";

    async fn handle(self, ctx: Arc<Ctx>, conn: Connection<TcpStream>) {
        let config = Arc::clone(&conn.config);
        let ip = conn.peer.ip();
        let viewer = Viewer {
            ip,
            admin: config.http.admin.iter().any(|net| net.contains(ip)),
        };
        let app = router(Arc::clone(&ctx), viewer);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(config.limits.header_timeout.0)
            .keep_alive(false)
            .max_buf_size(MAX_HEADER);
        let serving =
            http1.serve_connection(TokioIo::new(conn.stream), TowerToHyperService::new(app));
        tokio::pin!(serving);
        let whole = config.limits.header_timeout.0 + config.limits.idle_timeout.0;
        tokio::select! {
            r = tokio::time::timeout(whole, serving.as_mut()) => match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "http connection ended"),
                Err(_) => tracing::debug!("http connection timed out"),
            },
            _ = ctx.stop.cancelled() => {
                serving.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(REPLY_TIMEOUT, serving).await;
            }
        }
    }

    fn caps<'a>(ctx: &'a Ctx, _config: &ferry_config::Config) -> Caps<'a> {
        Caps {
            limiter: &ctx.page_connections,
            total: PAGE_CONNECTIONS,
            per_ip: PAGE_CONNECTIONS_PER_IP,
            makes_room: false,
        }
    }

    async fn refuse(self, mut stream: TcpStream, why: Refusal) {
        let body = match why {
            Refusal::Full(n) => {
                format!("the page is busy ({n} requests at once); try again shortly\n")
            }
            Refusal::FullForIp(n) => format!(
                "too many page requests from your address ({n} at once); try again shortly\n"
            ),
        };
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        reply_and_close(&mut stream, reply.as_bytes()).await;
    }
}

/// What every handler sees: the daemon and who is asking.
#[derive(Clone)]
struct Seen {
    ctx: Arc<Ctx>,
    viewer: Viewer,
}

fn router(ctx: Arc<Ctx>, viewer: Viewer) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/api/attempts", get(attempts))
        .route("/api/live", get(live))
        .route("/api/ledger", get(ledger))
        .route("/book", get(book))
        .fallback(not_found)
        .with_state(Seen { ctx, viewer })
}

/// An HTML answer: no script, no outside asset, nothing framed elsewhere.
fn html(body: String) -> Response {
    let mut r = Html(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index(State(s): State<Seen>) -> Response {
    html(page::render(&page::Data {
        viewer: s.viewer,
        live: s.ctx.observe.live(&s.viewer),
        attempts: s.ctx.observe.recent(&s.viewer, PAGE_ROWS),
        ledger: s.ctx.observe.ledger_entries(&s.viewer, PAGE_ROWS),
        ports: s
            .ctx
            .bound
            .get()
            .map(|b| b.iter().map(|(id, a)| (id.to_string(), a.port())).collect())
            .unwrap_or_default(),
    }))
}

async fn metrics(State(s): State<Seen>) -> Response {
    let sessions = s
        .ctx
        .udp_sessions
        .load(std::sync::atomic::Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.ctx.observe.metrics.render(sessions),
    )
        .into_response()
}

async fn attempts(State(s): State<Seen>) -> Response {
    Json(s.ctx.observe.recent(&s.viewer, PAGE_ROWS)).into_response()
}

async fn live(State(s): State<Seen>) -> Response {
    Json(s.ctx.observe.live(&s.viewer)).into_response()
}

async fn ledger(State(s): State<Seen>) -> Response {
    Json(s.ctx.observe.ledger_entries(&s.viewer, PAGE_ROWS)).into_response()
}

async fn book() -> Response {
    html(page::book())
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found: try / or /metrics\n").into_response()
}
