//! The one HTTP/1.1 client the S3 backend talks through, to the store and to
//! etcd's JSON gateway: hyper's pooled client with a deadline on every
//! request, over TLS (rustls) for an `https://` URL.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Largest response body read whole (listings, errors, etcd answers).
pub(super) const MAX_BODY: usize = 64 << 20;

/// A pooled HTTP client; cheap to clone.
#[derive(Clone)]
pub(super) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Why the CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Not readable, or not PEM.
    #[error("storage.s3.ca_file {}: {why}", path.display())]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// No certificate in it, or one rustls cannot use as a root.
    #[error("storage.s3.ca_file {}: {why}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
}

/// The roots an https endpoint is checked against: the Mozilla roots, and
/// every certificate in `ca_file`.
pub(crate) fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, CaError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let text = std::fs::read(path).map_err(|e| CaError::Unreadable {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| CaError::Unreadable {
            path: path.to_owned(),
            why: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CaError::Invalid {
            path: path.to_owned(),
            why: "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    for cert in certs {
        roots.add(cert).map_err(|e| CaError::Invalid {
            path: path.to_owned(),
            why: format!("not a CA certificate rustls can use: {e}"),
        })?;
    }
    Ok(roots)
}

impl Http {
    /// A client for `http://` and `https://` URLs; https checked against `roots`.
    pub(super) fn new(connect_timeout: Duration, roots: rustls::RootCertStore) -> Http {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_be_readable_pem_with_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            roots(None).unwrap().len(),
            webpki_roots::TLS_SERVER_ROOTS.len()
        );
        let missing = dir.path().join("nope.pem");
        let e = roots(Some(&missing)).unwrap_err().to_string();
        assert!(
            e.starts_with("storage.s3.ca_file ") && e.contains("No such file"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        let e = roots(Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = roots(Some(&broken)).unwrap_err().to_string();
        assert!(e.contains("storage.s3.ca_file"), "{e}");
    }
}
