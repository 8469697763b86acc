//! `magic_download` (seed 003): FileRequest in, FileResponse and the data out.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use ferry_proto::magic::{RequestCodec, ResponseHeader, Status};
use ferry_proto::names::RelPath;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::limits::Refusal;
use crate::report::Transfer;
use crate::storage::StorageError;
use crate::tcp::{read_until, reply_and_close, sendfile_download, write_all, Failure, TcpService};
use crate::Ctx;

/// The `magic_download` service.
#[derive(Clone, Copy)]
pub struct Service;

impl TcpService for Service {
    const NAME: &'static str = "magic_download";

    async fn handle(self, ctx: Arc<Ctx>, mut stream: TcpStream, peer: SocketAddr) {
        let mut t = Transfer::start(Self::NAME, peer);
        match serve_one(&ctx, &mut stream, &mut t).await {
            Ok(outcome) => t.ok(outcome),
            // "A malformed request is answered by closing the connection."
            Err(e) => t.failed(&e),
        }
        // Close without a reset: late client bytes must not destroy the response.
        reply_and_close(&mut stream, &[]).await;
    }

    /// The protocol has no error record, and StatusCode 0 would tell the
    /// student the file is missing: a refused connection is simply closed.
    async fn refuse(self, stream: TcpStream, _why: Refusal) {
        drop(stream);
    }
}

async fn serve_one(
    ctx: &Ctx,
    stream: &mut TcpStream,
    t: &mut Transfer,
) -> Result<&'static str, Failure> {
    let limits = &ctx.config().limits;
    let gap = ctx.config().magic_download.read_timeout.0;
    let whole = Instant::now() + limits.header_timeout.0;
    let mut buf = BytesMut::with_capacity(64);
    let mut codec = RequestCodec;
    // "A read gap of 1 s aborts": each read waits at most `read_timeout`.
    let request = loop {
        if let Some(req) = codec.decode(&mut buf).map_err(Failure::refused)? {
            break req;
        }
        let deadline = (Instant::now() + gap).min(whole);
        let idle = buf.is_empty();
        let read = read_until(ctx, stream, &mut buf, deadline, "the FileRequest");
        let n = if idle {
            tokio::select! {
                _ = ctx.stop.cancelled() => return Err(Failure::Closed("idle at shutdown".into())),
                r = read => r?,
            }
        } else {
            read.await?
        };
        if n == 0 {
            codec.decode_eof(&mut buf).map_err(Failure::refused)?;
            return Err(Failure::Closed("before a complete FileRequest".into()));
        }
    };
    t.requested = request.name.clone();
    let not_found = |why: String| Failure::Refused(why);
    let found = match RelPath::parse(&request.name, limits.max_name_len) {
        Err(e) => Err(not_found(format!("refused name: {e}"))),
        Ok(path) => match ctx.storage.open_read(&path).await {
            Ok(d) if d.size > u64::from(u32::MAX) => Err(not_found(format!(
                "{path} is {} bytes, more than the 4-byte DataLength can announce",
                d.size
            ))),
            Ok(d) => Ok((path, d)),
            Err(
                e @ (StorageError::NotFound(_)
                | StorageError::NotRegular(_)
                | StorageError::IsDirectory(_)),
            ) => Err(not_found(e.to_string())),
            Err(e) => Err(e.into()),
        },
    };
    let (path, download) = match found {
        Ok(pair) => pair,
        Err(e) => {
            // "A missing file gets StatusCode 0 and DataLength 0."
            write_all(
                ctx,
                stream,
                &ResponseHeader::NOT_FOUND.to_bytes(),
                limits.idle_timeout.0,
            )
            .await?;
            tracing::info!(requested = ?request.name, reason = %e, "answered StatusCode 0");
            return Ok("not found");
        }
    };
    t.stored = path.to_string();
    // Invariant: checked above that the size fits in u32.
    let length = u32::try_from(download.size).unwrap_or(u32::MAX);
    let header = ResponseHeader {
        status: Status::Found,
        length,
    };
    write_all(ctx, stream, &header.to_bytes(), limits.idle_timeout.0).await?;
    sendfile_download(ctx, stream, &download, t).await?;
    Ok("sent")
}
