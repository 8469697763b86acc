//! `tcp_upload` (seed 002): size and name, `go ahead`, the data.

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

use crate::conn::{reply_and_close, Connection, Read, Wait};
use crate::ctx::Ctx;
use crate::failure::{Awaited, Failure, NameOf, Violation, When};
use crate::limits::Refusal;
use crate::report::{Direction, Outcome, Transfer};
use crate::storage::Stored;
use crate::tcp::{ClientStream, TcpService};
use ferry_config::ServiceId;

/// Reads the header into the buffer: the size and at least one name byte,
/// all within `header_timeout`, then the rest of the name, whatever arrives
/// until the line goes quiet for `name_settle` (the client sends nothing
/// else before it reads `go ahead`, seed 002 step 7).
async fn read_header<S: ClientStream>(
    conn: &mut Connection<S>,
    codec: &UploadCodec,
) -> Result<(), Failure> {
    let by = Instant::now() + conn.config.limits.header_timeout.0;
    match conn
        .fill(SIZE_LEN + 1, &Wait::header(by, Awaited::Header))
        .await?
    {
        Read::Frame(()) => {}
        // Nothing sent yet: an idle connection, closed at shutdown.
        Read::Stopped(_) => return Err(Failure::Aborted),
        Read::End => {
            let got = conn.buf.len();
            return Err(Failure::Closed(When::AfterHeaderBytes(got)));
        }
    }
    let settle = conn.config.tcp_upload.name_settle.0;
    let check = |buf: &BytesMut| codec.check_partial_header(buf).map_err(Failure::violation);
    if conn.settle(settle, by, Awaited::Name, check).await? {
        Ok(())
    } else {
        Err(Failure::Closed(When::BeforeGoAhead))
    }
}

/// The `tcp_upload` service.
#[derive(Clone, Copy)]
pub(crate) struct Service;

impl TcpService for Service {
    const NAME: &'static str = ServiceId::TcpUpload.name();

    async fn handle(self, ctx: Arc<Ctx>, conn: Connection<TcpStream>) {
        serve(&ctx, conn).await;
    }

    async fn refuse(self, mut stream: TcpStream, why: Refusal) {
        reply_and_close(&mut stream, &encode_error(&why.to_string())).await;
    }
}

/// One connection: one upload, its answer, the close.
async fn serve<S: ClientStream>(ctx: &Ctx, mut conn: Connection<S>) {
    let mut t = Transfer::start(
        &ctx.observe,
        ServiceId::TcpUpload,
        Direction::Upload,
        conn.peer,
    );
    match upload(ctx, &mut conn, &mut t).await {
        Ok(stored) => t.ok(Outcome::of_upload(stored.deduplicated)),
        Err(e) => {
            // The handout client reads nothing after `go ahead`; ferry's
            // client does, so the reason is sent either way.
            conn.reply_and_close(&encode_error(&e.to_string())).await;
            t.saw(&conn.head);
            t.failed(&e);
        }
    }
}

async fn upload<S: ClientStream>(
    ctx: &Ctx,
    conn: &mut Connection<S>,
    t: &mut Transfer,
) -> Result<Stored, Failure> {
    let limits = &conn.config.limits;
    let mut codec = UploadCodec::new(
        ferry_proto::tcp_upload::DEFAULT_MAX_NAME_LEN.min(limits.max_name_len),
        limits.max_file_size.0,
    );
    let guard = conn.header_guard();
    tokio::select! {
        r = read_header(conn, &codec) => r?,
        _ = guard.evicted() => return Err(Failure::Evicted),
    }
    drop(guard);
    let header = match codec.decode(&mut conn.buf).map_err(Failure::violation)? {
        Some(UploadFrame::Header(h)) => h,
        _ => return Err(Failure::Violation(Violation::IncompleteHeader)),
    };
    t.requested = header.name.clone();
    let name = SafeName::for_upload(&header.name)
        .map_err(|e| Failure::name(NameOf::File, header.name.as_str(), e))?;
    ctx.admit_upload(tokio::time::Instant::now(), t.peer(), header.size)?;
    let from = ctx.origin_for(t.peer());
    let mut upload = ctx.storage.begin_write(name, header.size, from).await?;
    if upload.large_reads() {
        conn.read_chunk = crate::conn::READ_CHUNK_LARGE;
    }
    conn.write_all(GO_AHEAD).await?;
    let idle = conn.config.limits.idle_timeout.0;
    loop {
        let wait = Wait::in_transfer(Instant::now(), idle, Awaited::Data);
        match conn.read_frame(&mut codec, &wait).await? {
            Read::Frame(UploadFrame::Data(chunk)) => {
                upload.write_owned(chunk).await?;
                t.bytes = upload.written();
            }
            Read::Frame(UploadFrame::End) => break,
            Read::Frame(UploadFrame::Header(_)) => {
                return Err(Failure::Violation(Violation::SecondHeader))
            }
            Read::End | Read::Stopped(_) => {
                let err = codec.decode_eof(&mut conn.buf).err();
                return Err(Failure::Closed(When::Early(err)));
            }
        }
    }
    t.crc = Some(upload.crc());
    let stored = upload.commit(None).await?;
    t.bytes = stored.size;
    t.stored(&stored.name, stored.deduplicated)?;
    if !conn.buf.is_empty() {
        tracing::warn!(
            extra = conn.buf.len(),
            "bytes after the announced size were ignored"
        );
    }
    // Only now, durable: say so (ferry's client waits for it; a handout
    // client has stopped reading and never sees it).
    let _ = conn.write_all(&encode_stored(&stored.name)).await;
    let _ = conn.stream.shutdown().await;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::tcp::pipe::{answer, ctx, last_attempt, visible, Pipe};

    fn connect(ctx: &Arc<Ctx>) -> Pipe {
        Pipe::serve(ctx, |ctx, conn| async move { serve(&ctx, conn).await })
    }

    fn header(size: u64, name: &str) -> Vec<u8> {
        let mut h = size.to_be_bytes().to_vec();
        h.extend_from_slice(name.as_bytes());
        h
    }

    #[tokio::test]
    async fn the_handout_exchange_stores_the_file_after_go_ahead() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        client.write_all(&header(11, "notes.txt")).await.unwrap();
        let mut go = [0u8; 8];
        client.read_exact(&mut go).await.unwrap();
        assert_eq!(&go, b"go ahead");
        client.write_all(b"hello world").await.unwrap();
        let rest = answer(&mut client).await;
        served.await.unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), "STORED: notes.txt");
        assert_eq!(
            std::fs::read(root.path().join("notes.txt")).unwrap(),
            b"hello world"
        );
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Stored);
    }

    #[tokio::test(start_paused = true)]
    async fn data_sent_with_the_name_is_taken_as_the_name_and_nothing_is_stored() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        // A client that does not wait for `go ahead`: its data runs into the name.
        let mut all = header(5, "a.txt");
        all.extend_from_slice(b"hello");
        client.write_all(&all).await.unwrap();
        let got = answer(&mut client).await;
        served.await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("go ahead"), "{text}");
        assert!(text.contains("ERROR: timed out waiting for data"), "{text}");
        let visible = visible(root.path());
        assert!(visible.is_empty(), "{visible:?}");
        let a = last_attempt(&ctx);
        assert_eq!(a.requested, "a.txthello");
        let d = a.diagnosis.unwrap();
        assert!(
            d.rule.contains("No file data came after `go ahead`"),
            "{}",
            d.rule
        );
    }
}
