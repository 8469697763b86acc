//! `tcp_upload` (seed 002): size and name, `go ahead`, the data.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use ferry_proto::names::SafeName;
use ferry_proto::tcp_upload::{
    encode_error, encode_stored, UploadCodec, UploadFrame, GO_AHEAD, SIZE_LEN,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::limits::Refusal;
use crate::report::Transfer;
use crate::storage::Stored;
use crate::tcp::{read_until, reply_and_close, write_all, Failure, TcpService};
use crate::Ctx;

/// Reads the header into `buf`: the size and at least one name byte, all
/// within `header_timeout`, then the rest of the name, whatever arrives
/// until the line goes quiet (the client sends nothing else before it reads
/// `go ahead`, seed 002 step 7).
async fn read_header(
    ctx: &Ctx,
    stream: &mut TcpStream,
    codec: &UploadCodec,
    buf: &mut BytesMut,
) -> Result<(), Failure> {
    let deadline = Instant::now() + ctx.config().limits.header_timeout.0;
    while buf.len() <= SIZE_LEN {
        let idle = buf.is_empty();
        let read = read_until(ctx, stream, buf, deadline, "the header");
        let n = if idle {
            // Nothing sent yet: an idle connection, closed at shutdown.
            tokio::select! {
                _ = ctx.stop.cancelled() => return Err(Failure::Aborted),
                r = read => r?,
            }
        } else {
            read.await?
        };
        if n == 0 {
            return Err(Failure::Closed(format!("after {} header bytes", buf.len())));
        }
    }
    let settle = ctx.config().tcp_upload.name_settle.0;
    loop {
        codec.check_partial_header(buf).map_err(Failure::refused)?;
        let quiet_at = (Instant::now() + settle).min(deadline);
        match read_until(ctx, stream, buf, quiet_at, "the name").await {
            Ok(0) => return Err(Failure::Closed("before `go ahead`".into())),
            Ok(_) => continue,
            Err(Failure::Timeout(_)) if Instant::now() < deadline => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The `tcp_upload` service.
#[derive(Clone, Copy)]
pub struct Service;

impl TcpService for Service {
    const NAME: &'static str = "tcp_upload";

    async fn handle(self, ctx: Arc<Ctx>, mut stream: TcpStream, peer: SocketAddr) {
        let mut t = Transfer::start(Self::NAME, peer);
        match upload(&ctx, &mut stream, &mut t).await {
            Ok(stored) => t.ok(if stored.deduplicated {
                "deduplicated"
            } else {
                "stored"
            }),
            Err(e) => {
                // The handout client reads nothing after `go ahead`; ferry's
                // client does, so the reason is sent either way.
                reply_and_close(&mut stream, &encode_error(&e.to_string())).await;
                t.failed(&e);
            }
        }
    }

    async fn refuse(self, mut stream: TcpStream, why: Refusal) {
        reply_and_close(&mut stream, &encode_error(&why.to_string())).await;
    }
}

async fn upload(ctx: &Ctx, stream: &mut TcpStream, t: &mut Transfer) -> Result<Stored, Failure> {
    let limits = &ctx.config().limits;
    let mut codec = UploadCodec::new(
        ferry_proto::tcp_upload::DEFAULT_MAX_NAME_LEN.min(limits.max_name_len),
        limits.max_file_size.0,
    );
    let mut buf = BytesMut::with_capacity(1024);
    read_header(ctx, stream, &codec, &mut buf).await?;
    let header = match codec.decode(&mut buf).map_err(Failure::refused)? {
        Some(UploadFrame::Header(h)) => h,
        _ => return Err(Failure::Refused("incomplete header".into())),
    };
    t.requested = header.name.clone();
    let name = SafeName::for_upload(&header.name)
        .map_err(|e| Failure::refused(format!("refused name {:?}: {e}", header.name)))?;
    t.stored = name.to_string();
    ctx.admit_upload(t.peer(), header.size)?;
    let mut upload = ctx.storage.begin_write(name, header.size).await?;
    write_all(ctx, stream, GO_AHEAD, limits.idle_timeout.0).await?;

    loop {
        while let Some(frame) = codec.decode(&mut buf).map_err(Failure::refused)? {
            match frame {
                UploadFrame::Data(chunk) => {
                    upload.write_direct(&chunk).await?;
                    t.bytes = upload.written();
                }
                UploadFrame::End => {
                    t.crc = Some(upload.crc());
                    let stored = upload.commit(None).await?;
                    t.stored = stored.name.clone();
                    if !buf.is_empty() {
                        tracing::warn!(
                            extra = buf.len(),
                            "bytes after the announced size were ignored"
                        );
                    }
                    // Only now, durable: say so (ferry's client waits for it;
                    // a handout client has stopped reading and never sees it).
                    let confirm = encode_stored(&stored.name);
                    let _ = write_all(ctx, stream, &confirm, limits.idle_timeout.0).await;
                    let _ = stream.shutdown().await;
                    return Ok(stored);
                }
                UploadFrame::Header(_) => return Err(Failure::Refused("second header".into())),
            }
        }
        let deadline = Instant::now() + limits.idle_timeout.0;
        if read_until(ctx, stream, &mut buf, deadline, "data").await? == 0 {
            let err = codec.decode_eof(&mut buf).err();
            return Err(Failure::Closed(
                err.map(|e| format!("early: {e}"))
                    .unwrap_or_else(|| "early".into()),
            ));
        }
    }
}
