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
use crate::tcp::TcpService;
use ferry_config::ServiceId;

/// Reads the header into the buffer: the size and at least one name byte,
/// all within `header_timeout`, then the rest of the name, whatever arrives
/// until the line goes quiet for `name_settle` (the client sends nothing
/// else before it reads `go ahead`, seed 002 step 7).
async fn read_header(conn: &mut Conn, codec: &UploadCodec) -> Result<(), Failure> {
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

type Conn = Connection<TcpStream>;

/// The `tcp_upload` service.
#[derive(Clone, Copy)]
pub(crate) struct Service;

impl TcpService for Service {
    const NAME: &'static str = ServiceId::TcpUpload.name();

    async fn handle(self, ctx: Arc<Ctx>, mut conn: Conn) {
        let mut t = Transfer::start(
            &ctx.observe,
            ServiceId::TcpUpload,
            Direction::Upload,
            conn.peer,
        );
        match upload(&ctx, &mut conn, &mut t).await {
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

    async fn refuse(self, mut stream: TcpStream, why: Refusal) {
        reply_and_close(&mut stream, &encode_error(&why.to_string())).await;
    }
}

async fn upload(ctx: &Ctx, conn: &mut Conn, t: &mut Transfer) -> Result<Stored, Failure> {
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
