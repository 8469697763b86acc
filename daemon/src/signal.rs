//! `signal` (seed 004): many requests per connection, each answered in turn.
//!
//! | request | answer |
//! |---------|--------|
//! | `PIN` | `PON` |
//! | `SAF` name size data crc | `DON` stored-name, or `ERR` reason (after the last byte) |
//! | `RAF` path | `SAF` path size data crc, or `ERR` reason |
//! | `SAR` name, `SAF` entries…, `DON` | `DON` stored-name, or `ERR` reason (after `DON`) |
//! | `RAR` path | `SAR` name, `SAF` entries…, `DON` name; or `ERR` reason |
//! | `CLS` | the connection closes (the server keeps running) |
//! | anything else | `ERR` reason; a corrupt stream is then closed |
//!
//! That is ferry's dialect. The handout's own, with pauses instead of
//! lengths, is served beside it on the same port, chosen per request from the
//! bytes after the tag ([`ferry_proto::signal::handout::detect`]); see
//! [`handout`]. A `PON` between requests (a handout client answering pieces
//! of a download) is read and ignored.

/// `expr?` inside a handler that holds a transfer: a failure ends the
/// transfer with its reason (one `transfer failed` event) before it is
/// passed on to end the connection.
macro_rules! or_fail {
    ($t:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $t.failed(&e);
                return Err(e);
            }
        }
    };
}

mod handout;

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use ferry_proto::names::{RelPath, SafeName};
use ferry_proto::signal::handout::{detect, Dialect};
use ferry_proto::signal::{SignalCodec, SignalError, SignalFrame, Tag, TAG_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use crate::conn::{reply_and_close, Connection, Read, Stop, Wait};
use crate::ctx::Ctx;
use crate::failure::{Awaited, Failure, NameOf, Violation, When};
use crate::limits::Refusal;
use crate::report::{Direction, Outcome, Transfer};
use crate::storage::{Download, StorageError, Stored, TreeUpload, Upload};
use crate::tcp::{send_download_keeping, ClientStream, TcpService};
use ferry_config::ServiceId;

/// The `signal` service.
#[derive(Clone, Copy)]
pub(crate) struct Service;

impl TcpService for Service {
    const NAME: &'static str = ServiceId::Signal.name();

    async fn handle(self, ctx: Arc<Ctx>, io: Connection<TcpStream>) {
        serve(ctx, io).await
    }

    /// Over the caps a `PIN` is still answered (it is the health check:
    /// a busy daemon is not a dead one); any other request gets the
    /// refusal as `ERR`.
    async fn refuse(self, mut stream: TcpStream, why: Refusal) {
        let mut tag = [0u8; TAG_LEN];
        let read = tokio::time::timeout(PIN_OVER_CAP_WAIT, stream.read_exact(&mut tag)).await;
        if matches!(read, Ok(Ok(_))) && Tag::from_bytes(&tag) == Some(Tag::Pin) {
            let _ = stream.write_all(&encode_frame(SignalFrame::Pong)).await;
            let _ = stream.shutdown().await;
            return;
        }
        reply_and_close(
            &mut stream,
            &encode_frame(SignalFrame::Error(why.to_string())),
        )
        .await;
    }
}

/// Serves one signal connection to its end: requests in either dialect,
/// each answered in turn.
async fn serve<S: ClientStream>(ctx: Arc<Ctx>, mut io: Connection<S>) {
    let limits = &io.config.limits;
    let codec = SignalCodec::new(limits.max_name_len, limits.max_file_size.0);
    let on_control = crate::control::on_control_thread();
    if on_control {
        io.watch = ctx.attention.get().map(|a| a.watch());
    }
    let mut conn = Conn {
        ctx: &ctx,
        io,
        codec,
        wbuf: BytesMut::new(),
        commits: std::collections::VecDeque::new(),
        pending: None,
        control: on_control,
        ran_on: false,
    };
    let ended = conn.run().await;
    match ended {
        Ok(Ended::Handover) => {
            let Conn {
                io, codec, pending, ..
            } = conn;
            handover(Arc::clone(&ctx), io, codec, pending).await;
        }
        other => conn.close(other.map(|_| ())).await,
    }
}

/// How long a connection over the caps may take to send its first request,
/// to be answered if it is `PIN` (within the refusal's [`crate::conn::REPLY_TIMEOUT`]).
const PIN_OVER_CAP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Moves a connection whose first transfer request just came from the
/// control thread (where `PIN` is answered at once, never behind transfer
/// tasks) to the main runtime, and serves it there to its end; the
/// connection's permit stays with the control task waiting here.
async fn handover<S: ClientStream>(
    ctx: Arc<Ctx>,
    io: Connection<S>,
    codec: SignalCodec,
    pending: Option<Request>,
) {
    let Some(main) = ctx.main.get().cloned() else {
        return;
    };
    let (stream, rest) = io.into_parts();
    let loose = match stream.loosen() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot move the connection to the main runtime");
            return;
        }
    };
    let task = main.spawn(async move {
        let stream = match S::fasten(loose) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot take the connection on the main runtime");
                return;
            }
        };
        let mut conn = Conn {
            ctx: &ctx,
            io: Connection::from_parts(stream, rest),
            codec,
            wbuf: BytesMut::new(),
            commits: std::collections::VecDeque::new(),
            pending,
            control: false,
            ran_on: false,
        };
        let ended = conn.run().await;
        conn.close(ended.map(|_| ())).await;
    });
    let _ = task.await;
}

/// How a connection's request loop ended without a failure.
enum Ended {
    /// The client closed, sent `CLS`, or the server stops.
    Closed,
    /// A transfer request came on the control thread: it goes on on the
    /// main runtime ([`handover`]).
    Handover,
}

fn encode_frame(frame: SignalFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    // Texts are capped far below u16::MAX where they are made, so encoding cannot fail.
    let _ = SignalCodec::default().encode(frame, &mut buf);
    buf.to_vec()
}

struct Conn<'a, S> {
    ctx: &'a Arc<Ctx>,
    io: Connection<S>,
    codec: SignalCodec,
    wbuf: BytesMut,
    /// Handout uploads being finished and stored on tasks of their own,
    /// oldest first, so the socket is read on while the disk syncs (see
    /// [`Conn::settle_commits`]).
    commits: std::collections::VecDeque<tokio::task::JoinHandle<()>>,
    /// A request read on the control thread, served first after the handover.
    pending: Option<Request>,
    /// Running on the control thread: a ferry transfer request is handed over.
    control: bool,
    /// The buffer starts with what followed a `DON` that ran on from its
    /// data: a handout name in it may run on into its own data too.
    ran_on: bool,
}

/// An upload being received, or why it is being discarded.
type Sink = Result<Upload, Failure>;

/// A tree being received, or why it is being discarded.
type TreeSink = Result<TreeUpload, Failure>;

/// A request, in the dialect it came in.
enum Request {
    /// ferry's explicit-length framing: the decoded frame.
    Ferry(SignalFrame),
    /// The handout's pause framing: the tag (consumed); the rest is in the buffer.
    Handout(Tag),
}

impl<S: ClientStream> Conn<'_, S> {
    /// Ends the connection after its loop, once its handout uploads are
    /// stored (a connection's end says its files are in place): a quiet
    /// close, or the failure's `ERR` when the client can still be told.
    async fn close(&mut self, ended: Result<(), Failure>) {
        self.settle_commits(0).await;
        match ended {
            Ok(()) => {
                let _ = self.io.stream.shutdown().await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                if e.answerable() {
                    let frame = encode_frame(SignalFrame::Error(clip(e.to_string(), MAX_REASON)));
                    self.io.reply_and_close(&frame).await;
                }
            }
        }
    }

    async fn run(&mut self) -> Result<Ended, Failure> {
        loop {
            let request = match self.pending.take() {
                Some(request) => request,
                None => match self.next_request().await {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(e) => {
                        self.refused_request(&e);
                        return Err(e);
                    }
                },
            };
            let route = route(&request, self.control);
            if route.settle_first {
                self.settle_commits(0).await;
            }
            if route.handover {
                self.pending = Some(request);
                return Ok(Ended::Handover);
            }
            let frame = match request {
                Request::Ferry(frame) => frame,
                Request::Handout(tag) => {
                    self.handout(tag).await?;
                    continue;
                }
            };
            match frame {
                SignalFrame::Ping => {
                    let read = tokio::time::Instant::now();
                    self.send(SignalFrame::Pong).await?;
                    self.ctx.observe.metrics.ping(read.elapsed());
                }
                // A handout client answers every piece of a download with
                // PON, sometimes one more after DON: nothing to answer.
                SignalFrame::Pong => tracing::trace!("ignoring a PON between requests"),
                SignalFrame::Close => {
                    tracing::debug!("client sent CLS");
                    return Ok(Ended::Closed);
                }
                SignalFrame::RequestFile(path) => self.send_file(path).await?,
                SignalFrame::RequestRepo(path) => self.send_tree(path).await?,
                SignalFrame::FileHeader { name, size } => self.receive_file(name, size).await?,
                SignalFrame::SendRepo(name) => self.receive_tree(name).await?,
                other => {
                    let tag = frame_label(&other);
                    self.send(SignalFrame::Error(format!(
                        "unexpected {tag}: send PIN, SAF, RAF, SAR, RAR or CLS"
                    )))
                    .await?
                }
            }
        }
        Ok(Ended::Closed)
    }

    /// A request the codec refused before it was whole (too large, a bad
    /// name length, cut off, no request at all): still one failed attempt,
    /// with the name if the head holds it. A connection that sent nothing
    /// (or only blanks) before it went idle made no attempt.
    fn refused_request(&self, e: &Failure) {
        let head = &self.io.head;
        if head.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let direction = match head.get(..TAG_LEN).and_then(Tag::from_bytes) {
            Some(Tag::Saf | Tag::Sar) => Direction::Upload,
            Some(Tag::Raf | Tag::Rar) => Direction::Download,
            _ => Direction::Request,
        };
        let mut t = self.transfer(direction);
        if let Some(&[hi, lo]) = head.get(TAG_LEN..TAG_LEN + 2) {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if let Some(name) = head.get(TAG_LEN + 2..TAG_LEN + 2 + len) {
                t.requested = String::from_utf8_lossy(name).into_owned();
            }
        }
        t.failed(e);
    }

    /// A transfer attempt of this connection's current request, its first
    /// bytes noted for the diagnosis.
    fn transfer(&self, direction: Direction) -> Transfer {
        let mut t = Transfer::start(
            &self.ctx.observe,
            ServiceId::Signal,
            direction,
            self.io.peer,
        );
        t.saw(&self.io.head);
        t
    }

    /// Waits until at most `keep` handout uploads of this connection are
    /// still being stored (0: every earlier upload is stored, as a request
    /// that reads storage must see it).
    async fn settle_commits(&mut self, keep: usize) {
        while self.commits.len() > keep {
            if let Some(task) = self.commits.pop_front() {
                // The task logs its own outcome; a panic in it is not ours to repeat.
                let _ = task.await;
            }
        }
    }

    /// The next request: waits up to `idle_timeout` for a first byte
    /// (ending quietly at shutdown, or when the cap needs the place), then
    /// `header_timeout` for the rest.
    async fn next_request(&mut self) -> Result<Option<Request>, Failure> {
        self.io.mark_head();
        let limits = &self.io.config.limits;
        // Set once: whitespace between requests (skipped by the codec) does
        // not keep an idle connection alive.
        let wait = Wait {
            first_by: Instant::now() + limits.idle_timeout.0,
            rest_within: Some(limits.header_timeout.0),
            gap: None,
            first_what: Awaited::Request,
            rest_what: Awaited::RestOfRequest,
            stoppable: true,
        };
        // Idle, or trickling a request: the cap may close it for a newcomer.
        let guard = self.io.header_guard();
        let mut requests = Requests(&mut self.codec);
        let read = tokio::select! {
            r = self.io.read_frame(&mut requests, &wait) => r?,
            _ = guard.evicted() => Read::Stopped(Stop::Evicted),
        };
        drop(guard);
        match read {
            Read::Frame(request) => Ok(Some(request)),
            Read::Stopped(Stop::Shutdown) => Ok(None),
            Read::Stopped(Stop::Evicted) => {
                tracing::info!(
                    "closed while idle or sending a request, to make room at the connection cap"
                );
                let reason = "closing this idle connection to make room: the server is at its connection cap";
                let _ = self.send(SignalFrame::Error(reason.into())).await;
                Ok(None)
            }
            Read::End => match self.codec.decode_eof(&mut self.io.buf) {
                Ok(frame) => Ok(frame.map(Request::Ferry)),
                Err(e) => Err(Failure::Closed(When::MidRequest(e))),
            },
        }
    }

    /// The next frame inside a transfer (data, a CRC, a tree entry).
    async fn next_in_transfer(&mut self) -> Result<SignalFrame, Failure> {
        let idle = self.io.config.limits.idle_timeout.0;
        let wait = Wait::in_transfer(Instant::now(), idle, Awaited::Data);
        match self.io.read_frame(&mut self.codec, &wait).await? {
            Read::Frame(frame) => Ok(frame),
            Read::End | Read::Stopped(_) => Err(Failure::Closed(When::MidTransfer)),
        }
    }

    async fn send(&mut self, frame: SignalFrame) -> Result<(), Failure> {
        let frame = match frame {
            SignalFrame::Error(reason) => SignalFrame::Error(clip(reason, MAX_REASON)),
            other => other,
        };
        self.wbuf.clear();
        self.codec
            .encode(frame, &mut self.wbuf)
            .map_err(Failure::violation)?;
        let data = std::mem::take(&mut self.wbuf);
        let r = self.io.write_all(&data).await;
        self.wbuf = data;
        r
    }

    /// Receives one file's data and CRC into `sink`, writing while the sink is
    /// good and only discarding once it has failed, so the stream stays in step.
    async fn receive_into(&mut self, sink: &mut Sink, t: &mut Transfer) -> Result<u32, Failure> {
        loop {
            match self.next_in_transfer().await? {
                SignalFrame::Data(chunk) => {
                    t.bytes += chunk.len() as u64;
                    if let Ok(upload) = sink {
                        if let Err(e) = upload.write_owned(chunk).await {
                            *sink = Err(e.into());
                        }
                    }
                }
                SignalFrame::FileEnd { crc } => return Ok(crc),
                other => {
                    return Err(Failure::Violation(Violation::UnexpectedInFile(
                        frame_label(&other),
                    )))
                }
            }
        }
    }

    async fn receive_file(&mut self, name: String, size: u64) -> Result<(), Failure> {
        let mut t = self.transfer(Direction::Upload);
        t.requested = name.clone();
        let mut sink: Sink = match SafeName::for_upload(&name) {
            Ok(n) => {
                match self
                    .ctx
                    .admit_upload(tokio::time::Instant::now(), t.peer(), size)
                {
                    Ok(()) => self
                        .ctx
                        .storage
                        .begin_write(n, size, self.ctx.origin_for(t.peer()))
                        .await
                        .map_err(Failure::from),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(Failure::name(NameOf::File, name.as_str(), e)),
        };
        let large = matches!(&sink, Ok(u) if u.large_reads());
        if large {
            self.io.read_chunk = crate::conn::READ_CHUNK_LARGE;
        }
        let received = self.receive_into(&mut sink, &mut t).await;
        self.io.read_chunk = crate::conn::READ_CHUNK;
        let crc = or_fail!(t, received);
        t.crc = Some(crc);
        let result = match sink {
            Ok(upload) => upload.commit(Some(crc)).await.map_err(Failure::from),
            Err(e) => Err(e),
        };
        self.finish(result, t).await
    }

    /// Answers a SAF or SAR: `DON` once stored, `ERR` otherwise; logs it.
    async fn finish(
        &mut self,
        result: Result<Stored, Failure>,
        mut t: Transfer,
    ) -> Result<(), Failure> {
        match result {
            Ok(stored) => {
                // Not acknowledged without its ledger line.
                if let Err(e) = t.stored(&stored.name, stored.deduplicated) {
                    let reply = SignalFrame::Error(e.to_string());
                    t.failed(&e);
                    return self.send(reply).await;
                }
                // Stored whatever happens to the reply: logged as such first.
                t.ok(Outcome::of_upload(stored.deduplicated));
                self.send(SignalFrame::Done(stored.name)).await?;
            }
            Err(e) => {
                let reply = SignalFrame::Error(e.to_string());
                t.failed(&e);
                self.send(reply).await?;
            }
        }
        Ok(())
    }

    async fn receive_tree(&mut self, name: String) -> Result<(), Failure> {
        let cfg = Arc::clone(&self.io.config);
        let mut t = self.transfer(Direction::Upload);
        t.requested = as_directory(&name);
        let mut tree: TreeSink = match SafeName::for_upload(&name) {
            Ok(n) => match self
                .ctx
                .admit_upload(tokio::time::Instant::now(), t.peer(), 0)
            {
                Ok(()) => self
                    .ctx
                    .storage
                    .begin_tree(n, cfg.signal.max_tree_depth, self.ctx.origin_for(t.peer()))
                    .await
                    .map_err(Failure::from),
                Err(e) => Err(e),
            },
            Err(e) => Err(Failure::name(NameOf::Directory, name.as_str(), e)),
        };
        loop {
            match or_fail!(t, self.next_in_transfer().await) {
                SignalFrame::FileHeader { name: entry, size } => {
                    or_fail!(
                        t,
                        self.receive_entry(&cfg, &mut tree, entry, size, &mut t)
                            .await
                    )
                }
                SignalFrame::Done(_) => break,
                SignalFrame::Error(reason) => {
                    tree = Err(Failure::Violation(Violation::AbandonedTree(reason)));
                    break;
                }
                other => {
                    let e = Failure::Violation(Violation::UnexpectedInTree(frame_label(&other)));
                    t.failed(&e);
                    return Err(e);
                }
            }
        }
        let result = match tree {
            Ok(tr) => {
                let files = tr.files();
                let r = tr.commit().await.map_err(Failure::from);
                if let Ok(s) = &r {
                    // Its entries were charged as they came.
                    t.bytes = s.size;
                    tracing::debug!(files, "tree stored");
                }
                r
            }
            Err(e) => Err(e),
        };
        self.finish(result, t).await
    }

    /// The stored file a client asked for by `raw`, opened, or why not.
    async fn open_requested(
        &self,
        raw: &[u8],
        max_len: usize,
    ) -> Result<(RelPath, crate::storage::Download), Failure> {
        let path = stored_path(raw, max_len)?;
        let download = self.ctx.open_for(self.io.peer.ip(), &path).await?;
        Ok((path, download))
    }

    /// One `SAF` entry of a tree: received into the tree while it is good,
    /// read and discarded once it has failed (the first failure is kept).
    async fn receive_entry(
        &mut self,
        cfg: &ferry_config::Config,
        tree: &mut TreeSink,
        entry: String,
        size: u64,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        let (max_entries, max_bytes) = (cfg.signal.max_tree_entries, cfg.signal.max_tree_size.0);
        let peer = t.peer();
        let mut sink: Sink = match tree {
            Ok(tr) => match RelPath::parse(&entry, cfg.limits.max_name_len) {
                // Each entry is an upload of the address's quota, files and
                // bytes: a tree is not a way around it (issue 23).
                Ok(path) => match self
                    .ctx
                    .admit_upload(tokio::time::Instant::now(), peer, size)
                {
                    Ok(()) => tr
                        .begin_file(&path, size, max_entries, max_bytes)
                        .await
                        .map_err(Failure::from),
                    Err(e) => Err(e),
                },
                Err(e) => Err(Failure::name(NameOf::Entry, entry.as_str(), e)),
            },
            // The tree has failed already: its first failure is the one kept.
            Err(_) => Err(Failure::Broken(
                "an earlier entry of the tree failed".into(),
            )),
        };
        let crc = self.receive_into(&mut sink, t).await?;
        let stored = match sink {
            Ok(upload) => upload.commit(Some(crc)).await.map_err(|e| match e {
                e @ StorageError::ChecksumMismatch { .. } => {
                    Failure::Violation(Violation::EntryChecksum {
                        entry: entry.clone(),
                        mismatch: e,
                    })
                }
                other => Failure::from(other),
            }),
            Err(e) => Err(e),
        };
        if let (Err(e), Ok(_)) = (stored, &*tree) {
            // Dropping the tree removes everything received so far.
            *tree = Err(e);
        }
        Ok(())
    }

    async fn send_file(&mut self, raw: String) -> Result<(), Failure> {
        let mut t = self.transfer(Direction::Download);
        t.requested = raw.clone();
        let max = self.io.config.limits.max_name_len;
        match self.open_requested(raw.as_bytes(), max).await {
            Ok((path, download)) => {
                t.stored = path.to_string();
                or_fail!(
                    t,
                    self.stream_file(path.to_string(), download, &mut t).await
                );
                t.ok(Outcome::Sent);
            }
            Err(e) => {
                let reply = SignalFrame::Error(e.to_string());
                t.failed(&e);
                self.send(reply).await?;
            }
        }
        Ok(())
    }

    /// Writes a whole `SAF`: header, data from disk, CRC computed on the way.
    /// An error after the header cannot be framed, so it ends the connection
    /// without a reply.
    async fn stream_file(
        &mut self,
        name: String,
        download: Download,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        let size = download.size();
        // The CRC-32 recorded when the file was stored (still valid for
        // its size and modification time) lets the kernel send the data
        // (`sendfile`); without it, the data passes through here to be summed.
        let cached = match download.sendfile_source() {
            Some(_) => download.cached_crc().await,
            None => None,
        };
        self.send(SignalFrame::FileHeader { name, size }).await?;
        let crc = match cached {
            Some(crc) => {
                S::send_file(&mut self.io, download, t)
                    .await
                    .map_err(Failure::mid_frame)?;
                t.crc = Some(crc);
                crc
            }
            None => {
                let (crc, mut download) = send_download_keeping(&mut self.io, download, t)
                    .await
                    .map_err(Failure::mid_frame)?;
                // Summed from the whole file: the next RAF can use sendfile.
                download.record_crc(crc).await;
                crc
            }
        };
        self.io.write_all(&crc.to_be_bytes()).await
    }

    async fn send_tree(&mut self, raw: String) -> Result<(), Failure> {
        let mut t = self.transfer(Direction::Download);
        t.requested = as_directory(&raw);
        let cfg = Arc::clone(&self.io.config);
        let opened = match RelPath::parse(&raw, cfg.limits.max_name_len) {
            Ok(path) => self
                .ctx
                .tree_for(
                    t.peer(),
                    &path,
                    cfg.signal.max_tree_entries,
                    cfg.signal.max_tree_depth,
                )
                .await
                .map(|r| (path, r))
                .map_err(Failure::from),
            Err(e) => Err(Failure::name(NameOf::File, raw.as_str(), e)),
        };
        let (path, mut reader) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                let reply = SignalFrame::Error(e.to_string());
                t.failed(&e);
                self.send(reply).await?;
                return Ok(());
            }
        };
        t.stored = path.to_string();
        let name = path.file_name().to_string();
        or_fail!(t, self.send(SignalFrame::SendRepo(name.clone())).await);
        loop {
            // Each file is checked too: an admin may have put another
            // sender's file into a published directory.
            let next = reader.next().await.and_then(|entry| match entry {
                Some((rel, download)) => {
                    let label = format!("{path}/{rel}");
                    self.ctx.may_download(t.peer(), &label, download.origin())?;
                    Ok(Some((rel, download)))
                }
                None => Ok(None),
            });
            match next {
                Ok(Some((rel, download))) => {
                    or_fail!(t, self.stream_file(rel.to_string(), download, &mut t).await)
                }
                Ok(None) => break,
                Err(e) => {
                    // Between two entries: the client drops the tree whole.
                    let e = Failure::from(e);
                    let reply = SignalFrame::Error(e.to_string());
                    t.failed(&e);
                    self.send(reply).await?;
                    return Ok(());
                }
            }
        }
        t.crc = None;
        or_fail!(t, self.send(SignalFrame::Done(name)).await);
        t.ok(Outcome::Sent);
        Ok(())
    }
}

/// Where a request is served, and whether it waits first for the
/// connection's earlier handout uploads to be stored.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    /// Every earlier upload stored before it is served (or handed over).
    settle_first: bool,
    /// Served on the main runtime, not here on the control thread.
    handover: bool,
}

/// The dispatch rules, with no I/O:
/// - pings (`PIN`, a stray `PON`) and `CLS` are answered where they are read,
///   at once, never behind an upload being stored;
/// - the handout's pause framing stays on the control thread (a pause is
///   seen only by a reader that is there for it), and settles on its own
///   where it reads storage;
/// - any other ferry request sees every earlier handout upload stored, and
///   on the control thread is handed to the main runtime.
fn route(request: &Request, on_control: bool) -> Route {
    match request {
        Request::Ferry(SignalFrame::Ping | SignalFrame::Pong) | Request::Handout(_) => Route {
            settle_first: false,
            handover: false,
        },
        Request::Ferry(SignalFrame::Close) => Route {
            settle_first: true,
            handover: false,
        },
        Request::Ferry(_) => Route {
            settle_first: true,
            handover: on_control,
        },
    }
}

/// The codec between requests: a handout-framed request is taken by its
/// tag (the rest stays in the buffer for the handout driver), anything else
/// is a ferry frame.
struct Requests<'a>(&'a mut SignalCodec);

impl Decoder for Requests<'_> {
    type Item = Request;
    type Error = SignalError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, SignalError> {
        if let Some(tag) = handout_tag(buf) {
            buf.advance(TAG_LEN);
            return Ok(Some(Request::Handout(tag)));
        }
        Ok(self.0.decode(buf)?.map(Request::Ferry))
    }
}

/// The tag of a handout-framed request at the head of `buf`, if the bytes
/// after it say so (leading whitespace dropped, as the codec does).
fn handout_tag(buf: &mut BytesMut) -> Option<Tag> {
    let blanks = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
    buf.advance(blanks);
    let tag = Tag::from_bytes(buf.get(..TAG_LEN)?)?;
    let after = buf.get(TAG_LEN..).unwrap_or_default();
    (detect(tag, after) == Some(Dialect::Handout)).then_some(tag)
}

/// A directory's name as the page shows it: with one `/` at its end.
fn as_directory(name: &str) -> String {
    match name.ends_with('/') {
        true => name.to_owned(),
        false => format!("{name}/"),
    }
}

/// A path a client asked for, through the normaliser, or the refusal it is told.
fn stored_path(raw: &[u8], max_len: usize) -> Result<RelPath, Failure> {
    RelPath::parse_bytes(raw, max_len)
        .map_err(|e| Failure::name(NameOf::File, String::from_utf8_lossy(raw), e))
}

/// Longest ERR reason sent, in bytes: within any client's text cap.
const MAX_REASON: usize = 1024;

fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn frame_label(frame: &SignalFrame) -> &'static str {
    match frame {
        SignalFrame::Ping => "PIN",
        SignalFrame::Pong => "PON",
        SignalFrame::Close => "CLS",
        SignalFrame::Done(_) => "DON",
        SignalFrame::Error(_) => "ERR",
        SignalFrame::RequestFile(_) => "RAF",
        SignalFrame::RequestRepo(_) => "RAR",
        SignalFrame::SendRepo(_) => "SAR",
        SignalFrame::FileHeader { .. } | SignalFrame::Data(_) | SignalFrame::FileEnd { .. } => {
            "SAF"
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::signal::{encode, encode_file};
    use tokio::io::DuplexStream;

    use super::*;
    use crate::tcp::pipe::{answer, ctx, last_attempt, visible, Pipe};

    fn connect(ctx: &Arc<Ctx>) -> Pipe {
        Pipe::serve(ctx, serve)
    }

    fn frame(f: SignalFrame) -> Vec<u8> {
        encode(f).unwrap()
    }

    /// Every frame the server sent before it closed, decoded.
    async fn frames(client: &mut DuplexStream) -> Vec<SignalFrame> {
        let mut got = BytesMut::from(&answer(client).await[..]);
        let mut codec = SignalCodec::default();
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut got).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn pings_stay_and_transfers_leave_the_control_thread_after_earlier_uploads() {
        let ferry = |f| Request::Ferry(f);
        let here = Route {
            settle_first: false,
            handover: false,
        };
        for on_control in [true, false] {
            assert_eq!(route(&ferry(SignalFrame::Ping), on_control), here);
            assert_eq!(route(&ferry(SignalFrame::Pong), on_control), here);
            assert_eq!(route(&Request::Handout(Tag::Saf), on_control), here);
            assert_eq!(route(&Request::Handout(Tag::Raf), on_control), here);
            let transfer = route(&ferry(SignalFrame::RequestFile("a".into())), on_control);
            assert_eq!(
                transfer,
                Route {
                    settle_first: true,
                    handover: on_control
                }
            );
        }
        assert!(!route(&ferry(SignalFrame::Close), true).handover);
    }

    #[tokio::test]
    async fn pin_is_answered_pon_and_cls_closes_quietly() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        let mut talk = frame(SignalFrame::Ping);
        talk.extend(frame(SignalFrame::Ping));
        talk.extend(frame(SignalFrame::Close));
        client.write_all(&talk).await.unwrap();
        let got = answer(&mut client).await;
        served.await.unwrap();
        assert_eq!(got, b"PONPON");
    }

    #[tokio::test]
    async fn a_saf_is_stored_and_answered_don_with_its_name() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        let mut talk = encode_file("notes.txt", b"hello world").unwrap();
        talk.extend(frame(SignalFrame::Close));
        client.write_all(&talk).await.unwrap();
        let got = frames(&mut client).await;
        served.await.unwrap();
        assert_eq!(got, vec![SignalFrame::Done("notes.txt".into())]);
        assert_eq!(
            std::fs::read(root.path().join("notes.txt")).unwrap(),
            b"hello world"
        );
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Stored);
    }

    #[tokio::test]
    async fn a_saf_whose_crc_is_wrong_is_refused_and_nothing_is_stored() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        let mut talk = encode_file("notes.txt", b"hello world").unwrap();
        let last = talk.len() - 1;
        talk[last] ^= 1;
        // The stream is still in step after the refusal: the next request is served.
        talk.extend(frame(SignalFrame::Ping));
        talk.extend(frame(SignalFrame::Close));
        client.write_all(&talk).await.unwrap();
        let got = frames(&mut client).await;
        served.await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        let SignalFrame::Error(reason) = &got[0] else {
            panic!("{got:?}")
        };
        assert!(reason.contains("checksum mismatch"), "{reason}");
        assert_eq!(got[1], SignalFrame::Pong);
        assert!(!root.path().join("notes.txt").exists());
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Failed);
    }

    #[tokio::test]
    async fn a_raf_gets_the_file_as_a_saf_with_its_crc() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[("lab.txt", b"the lab handout")]);
        let Pipe { mut client, served } = connect(&ctx);
        let mut talk = frame(SignalFrame::RequestFile("lab.txt".into()));
        talk.extend(frame(SignalFrame::Close));
        client.write_all(&talk).await.unwrap();
        let got = answer(&mut client).await;
        served.await.unwrap();
        assert_eq!(got, encode_file("lab.txt", b"the lab handout").unwrap());
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Sent);
    }

    #[tokio::test]
    async fn a_raf_of_a_missing_file_is_answered_err_and_the_connection_goes_on() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        let mut talk = frame(SignalFrame::RequestFile("nope.txt".into()));
        talk.extend(frame(SignalFrame::Ping));
        talk.extend(frame(SignalFrame::Close));
        client.write_all(&talk).await.unwrap();
        let got = frames(&mut client).await;
        served.await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            matches!(&got[0], SignalFrame::Error(r) if r.contains("nope.txt")),
            "{got:?}"
        );
        assert_eq!(got[1], SignalFrame::Pong);
    }

    #[tokio::test]
    async fn an_unknown_tag_is_answered_err_and_the_connection_closes() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        // PIN after the bad tag is never read: the stream cannot be trusted.
        client.write_all(b"GETPIN").await.unwrap();
        let got = frames(&mut client).await;
        served.await.unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(&got[0], SignalFrame::Error(r) if r.contains("GET")),
            "{got:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_told_and_closed_after_idle_timeout() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let idle = ctx.config().limits.idle_timeout.0;
        let started = Instant::now();
        let Pipe { mut client, served } = connect(&ctx);
        let got = frames(&mut client).await;
        served.await.unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(&got[0], SignalFrame::Error(r) if r.contains("timed out")),
            "{got:?}"
        );
        let waited = started.elapsed();
        assert!(waited >= idle && waited < idle * 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn whitespace_does_not_keep_an_idle_connection() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let idle = ctx.config().limits.idle_timeout.0;
        let started = Instant::now();
        let Pipe { mut client, served } = connect(&ctx);
        // A space every tenth of the timeout, for three timeouts.
        let spaces = async {
            for _ in 0..30 {
                if client.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(idle / 10).await;
            }
        };
        let ((), got) = tokio::join!(spaces, served);
        got.unwrap();
        let waited = started.elapsed();
        let got = frames(&mut client).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            matches!(&got[0], SignalFrame::Error(r) if r.contains("timed out waiting for a request")),
            "{got:?}"
        );
        assert!(waited >= idle && waited < idle + idle / 5, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_saf_cut_off_mid_data_stores_nothing() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let Pipe { mut client, served } = connect(&ctx);
        let talk = encode_file("notes.txt", b"hello world").unwrap();
        client.write_all(&talk[..talk.len() - 8]).await.unwrap();
        client.shutdown().await.unwrap();
        let _ = answer(&mut client).await;
        served.await.unwrap();
        let visible = visible(root.path());
        assert!(visible.is_empty(), "{visible:?}");
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Failed);
    }
}
