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
use crate::tcp::{ClientStream, TcpService};
use ferry_config::ServiceId;

/// The `magic_download` service.
#[derive(Clone, Copy)]
pub(crate) struct Service;

impl TcpService for Service {
    const NAME: &'static str = ServiceId::MagicDownload.name();

    async fn handle(self, ctx: Arc<Ctx>, conn: Connection<TcpStream>) {
        serve(&ctx, conn).await;
    }

    /// The protocol has no error record, and StatusCode 0 would tell the
    /// student the file is missing: a refused connection is simply closed.
    async fn refuse(self, stream: TcpStream, _why: Refusal) {
        drop(stream);
    }
}

/// One connection: one FileRequest, its answer, the close.
async fn serve<S: ClientStream>(ctx: &Ctx, mut conn: Connection<S>) {
    let mut t = Transfer::start(
        &ctx.observe,
        ServiceId::MagicDownload,
        Direction::Download,
        conn.peer,
    );
    match serve_one(ctx, &mut conn, &mut t).await {
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

/// The FileRequest: all of it within `header_timeout`, and "a read gap of
/// 1 s aborts": each read waits at most `read_timeout`.
async fn read_request<S: ClientStream>(conn: &mut Connection<S>) -> Result<FileRequest, Failure> {
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

async fn serve_one<S: ClientStream>(
    ctx: &Ctx,
    conn: &mut Connection<S>,
    t: &mut Transfer,
) -> Result<(), Failure> {
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
    S::send_file(conn, download, t).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::tcp::pipe::{answer, ctx, last_attempt, Pipe};

    fn connect(ctx: &Arc<Ctx>) -> Pipe {
        Pipe::serve(ctx, |ctx, conn| async move { serve(&ctx, conn).await })
    }

    fn request(name: &str) -> Vec<u8> {
        let mut r = vec![0x49, 0x7E, 1];
        r.extend_from_slice(&(name.len() as u16).to_be_bytes());
        r.extend_from_slice(name.as_bytes());
        r
    }

    #[tokio::test]
    async fn a_file_request_gets_status_1_the_length_and_the_bytes() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[("lab3.txt", b"magic bytes")]);
        let Pipe { mut client, served } = connect(&ctx);
        client.write_all(&request("lab3.txt")).await.unwrap();
        let got = answer(&mut client).await;
        served.await.unwrap();
        let mut expected = vec![0x49, 0x7E, 2, 1, 0, 0, 0, 11];
        expected.extend_from_slice(b"magic bytes");
        assert_eq!(got, expected);
        let a = last_attempt(&ctx);
        assert_eq!((a.outcome, a.bytes), (Outcome::Sent, 11));
    }

    #[tokio::test]
    async fn a_missing_file_gets_status_0_and_no_data() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        client.write_all(&request("nope.txt")).await.unwrap();
        assert_eq!(answer(&mut client).await, [0x49, 0x7E, 2, 0, 0, 0, 0, 0]);
        served.await.unwrap();
        let a = last_attempt(&ctx);
        assert_eq!(a.outcome, Outcome::Failed);
        assert_eq!(a.reason.as_deref(), Some("no such file: nope.txt"));
    }

    #[tokio::test]
    async fn a_wrong_magic_number_is_closed_without_a_byte_and_diagnosed() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[("a", b"x")]);
        let Pipe { mut client, served } = connect(&ctx);
        client
            .write_all(&[0x7E, 0x49, 1, 0, 1, b'a'])
            .await
            .unwrap();
        assert_eq!(answer(&mut client).await, b"");
        served.await.unwrap();
        let a = last_attempt(&ctx);
        assert_eq!(
            a.reason.as_deref(),
            Some("bad magic number 0x7E49, expected 0x497E")
        );
        let d = a.diagnosis.unwrap();
        assert!(d.rule.contains("not the magic number 0x497E"), "{}", d.rule);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_gap_of_a_second_closes_the_connection() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[("lab3.txt", b"x")]);
        let Pipe { mut client, served } = connect(&ctx);
        // The header, then the name 1.2 s later: past the 1 s read gap.
        let r = request("lab3.txt");
        client.write_all(&r[..5]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = client.write_all(&r[5..]).await;
        assert_eq!(answer(&mut client).await, b"");
        served.await.unwrap();
        let a = last_attempt(&ctx);
        assert_eq!(
            a.reason.as_deref(),
            Some("timed out waiting for the FileRequest")
        );
        let d = a.diagnosis.unwrap();
        assert!(d.rule.contains("name of 8 bytes and 0 came"), "{}", d.rule);
    }
}
