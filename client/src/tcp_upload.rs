//! `tcp_upload`: size and name, wait for `go ahead`, stream the file.
//!
//! The protocol has no acknowledgement. ferryd sends `STORED: <name>` once
//! the file is durable, or `ERROR: <reason>`, then closes; this client reads
//! to the end and reports stored only on `STORED:`. A close with nothing
//! (a server that died before storing, or one that never confirms) is an
//! error, unless `--handout` says the server is a student's, which cannot
//! confirm: then it is reported sent, not stored.

use std::path::Path;

use ferry_proto::crc::Crc32;
use ferry_proto::tcp_upload::{encode_header, GO_AHEAD, STORED_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Client, Error, Progress, Result, Sent};

pub(crate) async fn send(
    client: &Client,
    path: &Path,
    name: &str,
    progress: &dyn Progress,
) -> Result<Sent> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::Local(format!("cannot open {}: {e}", path.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Error::Local(e.to_string()))?
        .len();
    let mut s = client.connect(client.ports.tcp_upload).await?;
    let t = client.timeout;
    let timed = |what: &str| Error::Timeout(what.to_owned());
    tokio::time::timeout(t, s.write_all(&encode_header(size, name)))
        .await
        .map_err(|_| timed("sending the header"))?
        .map_err(|e| Error::io("sending the header", e))?;
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(t, s.read(&mut reply))
        .await
        .map_err(|_| timed("waiting for `go ahead`"))?
        .map_err(|e| Error::io("waiting for `go ahead`", e))?;
    if &reply[..n] != GO_AHEAD {
        let text = String::from_utf8_lossy(&reply[..n]).into_owned();
        return Err(match text.strip_prefix("ERROR: ") {
            Some(reason) => Error::Refused(reason.to_owned()),
            None if n == 0 => {
                Error::Protocol("the server closed the connection instead of `go ahead`".into())
            }
            None => Error::Protocol(format!("expected `go ahead`, got {text:?}")),
        });
    }
    progress.start(name, Some(size));
    let mut crc = Crc32::new();
    let mut pace = crate::Pacer::new(client.upload_rate);
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file
            .read(&mut buf[..want])
            .await
            .map_err(|e| Error::Local(e.to_string()))?;
        if n == 0 {
            return Err(Error::Local(format!(
                "{} shrank while being sent",
                path.display()
            )));
        }
        crc.update(&buf[..n]);
        if let Err(e) = tokio::time::timeout(t, s.write_all(&buf[..n]))
            .await
            .map_err(|_| timed("sending data"))?
        {
            return Err(Error::io("sending data", e));
        }
        left -= n as u64;
        progress.advance(n as u64);
        pace.sent(n).await;
    }
    let _ = s.shutdown().await;
    let mut rest = Vec::new();
    let r = tokio::time::timeout(t, s.read_to_end(&mut rest)).await;
    progress.finish();
    match r {
        Err(_) => return Err(timed("waiting for the server to store the file")),
        Ok(Err(e)) => return Err(Error::io("waiting for the server to store the file", e)),
        Ok(Ok(_)) => {}
    }
    if let Some(reason) = rest.strip_prefix(b"ERROR: ") {
        return Err(Error::Refused(String::from_utf8_lossy(reason).into_owned()));
    }
    let stored_as = match rest.strip_prefix(STORED_PREFIX) {
        Some(name) => Some(String::from_utf8_lossy(name).into_owned()),
        None if client.handout => None,
        None => {
            return Err(Error::Protocol(
                "the server closed the connection without confirming that it stored the file \
                 (it may have stopped before storing it; a student's server never confirms: use --handout)"
                    .into(),
            ))
        }
    };
    Ok(Sent {
        stored_as,
        bytes: size,
        crc: crc.value(),
        attempts: 1,
    })
}
