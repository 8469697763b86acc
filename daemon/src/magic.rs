//! `magic_download` (seed 003): FileRequest in, FileResponse and the data out.

use std::sync::Arc;

use ferry_proto::magic::{FileRequest, RequestCodec, ResponseHeader, Status};
use ferry_proto::names::RelPath;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::conn::{Connection, Read, Wait};
use crate::ctx::Ctx;
use crate::failure::{self, Awaited, Failure, When};
use crate::limits::Refusal;
use crate::report::{Direction, Outcome, Transfer};
use crate::tcp::{sendfile_download, TcpService};
use ferry_config::ServiceId;

type Conn = Connection<TcpStream>;

/// The `magic_download` service.
#[derive(Clone, Copy)]
pub(crate) struct Service;

impl TcpService for Service {
    const NAME: &'static str = ServiceId::MagicDownload.name();

    async fn handle(self, ctx: Arc<Ctx>, mut conn: Conn) {
        let mut t = Transfer::start(
            &ctx.observe,
            ServiceId::MagicDownload,
            Direction::Download,
            conn.peer,
        );
        match serve_one(&ctx, &mut conn, &mut t).await {
            Ok(()) => t.ok(Outcome::Sent),
            // "A malformed request is answered by closing the connection."
            Err(e) => {
                t.saw(&conn.head);
                t.failed(&e);
            }
        }
        // Close without a reset: late client bytes must not destroy the response.
        conn.reply_and_close(&[]).await;
    }

    /// The protocol has no error record, and StatusCode 0 would tell the
    /// student the file is missing: a refused connection is simply closed.
    async fn refuse(self, stream: TcpStream, _why: Refusal) {
        drop(stream);
    }
}

/// The FileRequest: all of it within `header_timeout`, and "a read gap of
/// 1 s aborts": each read waits at most `read_timeout`.
async fn read_request(conn: &mut Conn) -> Result<FileRequest, Failure> {
    let limits = &conn.config.limits;
    let mut wait = Wait::header(
        Instant::now() + limits.header_timeout.0,
        Awaited::FileRequest,
    );
    wait.gap = Some(conn.config.magic_download.read_timeout.0);
    let mut codec = RequestCodec;
    match conn.read_frame(&mut codec, &wait).await? {
        Read::Frame(request) => Ok(request),
        Read::Stopped(_) => Err(Failure::Closed(When::IdleAtShutdown)),
        Read::End => {
            codec
                .decode_eof(&mut conn.buf)
                .map_err(Failure::violation)?;
            Err(Failure::Closed(When::BeforeFileRequest))
        }
    }
}

async fn serve_one(ctx: &Ctx, conn: &mut Conn, t: &mut Transfer) -> Result<(), Failure> {
    let guard = conn.header_guard();
    let request = tokio::select! {
        r = read_request(conn) => r?,
        _ = guard.evicted() => return Err(Failure::Evicted),
    };
    drop(guard);
    t.requested = request.name.clone();
    let max_name_len = conn.config.limits.max_name_len;
    let found = match RelPath::parse(&request.name, max_name_len) {
        Err(e) => Err(Failure::Refused(failure::Refusal::RequestedName(e))),
        Ok(path) => match ctx.open_for(conn.peer.ip(), &path).await {
            Ok(d) if d.size() > u64::from(u32::MAX) => {
                Err(Failure::Refused(failure::Refusal::TooLargeForMagic {
                    path: path.to_string(),
                    size: d.size(),
                }))
            }
            Ok(d) => Ok((path, d)),
            Err(e) => Err(Failure::from(e)),
        },
    };
    let (path, download) = match found {
        Ok(pair) => pair,
        // Whatever kept the file from being opened (missing, refused, an I/O
        // error): the protocol's only answer is "not found", and the
        // attempt failed (logged with the real reason).
        Err(e) => {
            // "A missing file gets StatusCode 0 and DataLength 0."
            conn.write_all(&ResponseHeader::NOT_FOUND.to_bytes())
                .await?;
            return Err(e);
        }
    };
    t.stored = path.to_string();
    // Invariant: checked above that the size fits in u32.
    let length = u32::try_from(download.size()).unwrap_or(u32::MAX);
    let header = ResponseHeader {
        status: Status::Found,
        length,
    };
    conn.write_all(&header.to_bytes()).await?;
    sendfile_download(conn, download, t).await?;
    Ok(())
}
