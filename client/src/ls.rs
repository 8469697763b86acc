//! `ferry ls`: the files ferryd stored, from its ledger, through the HTTP
//! listener's `/api/ledger` (newest first; a client outside `http.admin`
//! sees those sent from its own address).
//!
//! The request is one `GET` over a plain TCP connection, HTTP/1.1 with
//! `connection: close`: the answer is read to its end (at most
//! [`MAX_ANSWER`]) and its body decoded as JSON, chunked or not.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Client, Error};

/// Largest answer read (the ledger API returns at most 200 entries).
const MAX_ANSWER: u64 = 8 << 20;

/// One stored file, as ferryd's ledger has it.
pub type StoredFile = ferry_proto::ledger::LedgerEntry;

impl Client {
    /// The files the server's ledger lists, newest first.
    pub async fn ls(&self) -> Result<Vec<StoredFile>, Error> {
        let what = format!("{}:{}", self.host, self.http_port);
        let body =
            tokio::time::timeout(self.timeout, get(&self.host, self.http_port, "/api/ledger"))
                .await
                .map_err(|_| Error::Timeout(format!("waiting for {what}")))??;
        serde_json::from_slice(&body).map_err(|e| {
            Error::Protocol(format!(
                "{what} answered something that is not the ledger: {e}"
            ))
        })
    }
}

/// The body of `GET path` on `host:port`, or why not.
async fn get(host: &str, port: u16, path: &str) -> Result<Vec<u8>, Error> {
    let what = format!("{host}:{port}");
    let mut s = TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::Unreachable {
            what: format!(
                "{what} (ferryd's HTTP listener, loopback-only unless [http] bind says otherwise)"
            ),
            reason: e.to_string(),
        })?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\naccept: application/json\r\nconnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| Error::Protocol(format!("{what}: {e}")))?;
    let mut answer = Vec::new();
    (&mut s)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| Error::Protocol(format!("{what}: {e}")))?;
    body(&answer).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

/// The body of a whole HTTP/1.1 answer, checked to be a `200`.
fn body(answer: &[u8]) -> Result<Vec<u8>, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of header")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let rest = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("the server answered {status:?}"));
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        dechunk(rest)
    } else {
        Ok(rest.to_vec())
    }
}

/// A chunked body, joined.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line has no end")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("a chunk is cut short")?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk is cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_plain_and_chunked() {
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]").unwrap(),
            b"[]"
        );
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1;x\r\n]\r\n0\r\n\r\n")
                .unwrap(),
            b"[]"
        );
        assert_eq!(
            body(b"HTTP/1.1 503 Service Unavailable\r\n\r\nbusy").unwrap_err(),
            "the server answered \"HTTP/1.1 503 Service Unavailable\""
        );
        assert!(body(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nz\r\n").is_err());
        assert!(body(b"garbage").is_err());
    }
}
