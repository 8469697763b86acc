//! `tcp_upload`: size and name, wait for `go ahead`, stream the file.
//!
//! The protocol has no acknowledgement. ferryd sends `STORED: <name>` once
//! the file is durable, or `ERROR: <reason>`, then closes; this client reads
//! to the end and reports stored only on `STORED:`. A close with nothing
//! (a server that died before storing, or one that never confirms) is an
//! error, unless `--handout` says the server is a student's, which cannot
//! confirm: then it is reported sent, not stored.

use ferry_config::ServiceId;
use std::path::Path;

use ferry_proto::crc::Crc32;
use ferry_proto::tcp_upload::{encode_header, GO_AHEAD, STORED_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::watched::Watched;
use crate::{Client, Error, Progress, Result, Sent, ServerText};

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
    let mut s = client.connect(client.ports[ServiceId::TcpUpload]).await?;
    go_ahead(client, &mut s, size, name).await?;
    progress.start(name, Some(size));
    let crc = stream(client, &mut s, &mut file, path, size, progress).await?;
    let _ = s.shutdown().await;
    let stored_as = confirmation(client, &mut s).await;
    progress.finish();
    Ok(Sent {
        stored_as: stored_as?,
        bytes: size,
        crc,
        attempts: 1,
    })
}

fn timed(what: &str) -> Error {
    Error::Timeout(what.to_owned())
}

/// Sends the header and waits for `go ahead` (or the server's `ERROR:`).
async fn go_ahead(client: &Client, s: &mut Watched, size: u64, name: &str) -> Result<()> {
    let t = client.timeout;
    tokio::time::timeout(t, s.write_all(&encode_header(size, name)))
        .await
        .map_err(|_| timed("sending the header"))?
        .map_err(|e| Error::io("sending the header", e))?;
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(t, s.read(&mut reply))
        .await
        .map_err(|_| timed("waiting for `go ahead`"))?
        .map_err(|e| Error::io("waiting for `go ahead`", e))?;
    if &reply[..n] == GO_AHEAD {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&reply[..n]).into_owned();
    Err(match text.strip_prefix("ERROR: ") {
        Some(reason) => Error::Refused(reason.into()),
        None if n == 0 => {
            Error::Protocol("the server closed the connection instead of `go ahead`".into())
        }
        None => Error::Protocol(format!("expected `go ahead`, got {text:?}")).hinted(
            crate::wrong_port::hint(
                ServiceId::TcpUpload,
                client.ports[ServiceId::TcpUpload],
                Some(&reply[..n]),
            ),
        ),
    })
}

/// The file's `size` bytes, paced if asked; their CRC-32.
async fn stream(
    client: &Client,
    s: &mut Watched,
    file: &mut tokio::fs::File,
    path: &Path,
    size: u64,
    progress: &dyn Progress,
) -> Result<u32> {
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
        tokio::time::timeout(client.timeout, s.write_all(&buf[..n]))
            .await
            .map_err(|_| timed("sending data"))?
            .map_err(|e| Error::io("sending data", e))?;
        left -= n as u64;
        progress.advance(n as u64);
        pace.sent(n).await;
    }
    Ok(crc.value())
}

/// What the server said once the data was in: the stored name, or why not.
async fn confirmation(client: &Client, s: &mut Watched) -> Result<Option<String>> {
    let mut rest = Vec::new();
    let what = "waiting for the server to store the file";
    tokio::time::timeout(client.timeout, s.read_to_end(&mut rest))
        .await
        .map_err(|_| timed(what))?
        .map_err(|e| Error::io(what, e))?;
    if let Some(reason) = rest.strip_prefix(b"ERROR: ") {
        return Err(Error::Refused(ServerText::from_wire(reason)));
    }
    match rest.strip_prefix(STORED_PREFIX) {
        Some(name) => Ok(Some(String::from_utf8_lossy(name).into_owned())),
        None if client.handout => Ok(None),
        None => Err(Error::Protocol(
            "the server closed the connection without confirming that it stored the file \
             (it may have stopped before storing it; a student's server never confirms: use --handout)"
                .into(),
        )),
    }
}
