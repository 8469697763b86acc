//! The one HTTP/1.1 client the S3 backend talks through, to the store and to
//! etcd's JSON gateway: hyper's pooled client with a deadline on every
//! request.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest response body read whole (listings, errors, etcd answers).
pub(super) const MAX_BODY: usize = 64 << 20;

/// A pooled HTTP client; cheap to clone.
#[derive(Clone)]
pub(super) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub(super) fn new(connect_timeout: Duration) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Http { client }
    }

    /// Sends `req`; the response's head must arrive within `limit`.
    pub(super) async fn send(
        &self,
        req: Request<Full<Bytes>>,
        limit: Duration,
    ) -> io::Result<Response<Incoming>> {
        match tokio::time::timeout(limit, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                flatten(&e),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}", humantime::format_duration(limit)),
            )),
        }
    }

    /// Sends `req` and reads the whole answer (at most [`MAX_BODY`]) within `limit`.
    pub(super) async fn call(
        &self,
        req: Request<Full<Bytes>>,
        limit: Duration,
    ) -> io::Result<(hyper::StatusCode, Bytes)> {
        let work = async {
            let resp = self.send(req, limit).await?;
            let status = resp.status();
            let body = read_body(resp.into_body()).await?;
            Ok((status, body))
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "answer too slow")))
    }
}

/// Reads a whole body, at most [`MAX_BODY`].
pub(super) async fn read_body(mut body: Incoming) -> io::Result<Bytes> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, flatten(&e)))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(io::Error::other("answer too large"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// An error and its causes on one line ("client error (Connect): tcp connect
/// error: Connection refused"), with no URL in it (a presigned URL carries a
/// signature).
pub(super) fn flatten(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
