//! The handout's pause framing of `signal` (seed 004), driven over a socket.
//!
//! The rules (where a name or a file ends, how pieces are cut, what `DON`
//! means) are sans-IO in [`ferry_proto::signal::handout`]; this module only
//! reads the socket and the clock, writes, and moves bytes through storage.
//!
//! | request (after the tag) | ferry's answer |
//! |---|---|
//! | `SAF` pause name pause data pause `DON` | nothing (the client reads nothing); the file is stored on a task of its own while the socket is read on, and before a later request of the connection reads storage |
//! | `SAR` pause count:u32, then count × (pause name pause data pause `DON`) | nothing; each file is stored as an upload under its name |
//! | `RAF` pause name pause | `ERR` (not found or refused), or a 36-byte signal, then pieces of at most 1024 bytes, each sent once the client's `PON` for the last one came, then `DON` alone |
//! | `RAR` pause name | count:u32 (0 when the directory is missing), then per regular file at its top: name, pause, data, pause, `DON`, pause |
//!
//! Nothing here ever sends a ferry frame: a handout client would read it as data.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferry_config::Config;
use ferry_proto::names::{RelPath, SafeName};
use ferry_proto::signal::handout::{
    found_signal, piece_len, After, DataEvent, EndBy, FileData, HandoutError, LostPause, Name,
    QuietText, COUNT_LEN, DON, PIECE,
};
use ferry_proto::signal::{Tag, TAG_LEN};
use tokio::time::Instant;

use super::{Conn, Sink};
use crate::ctx::Ctx;
use crate::failure::{Awaited, Failure, NameOf, Refusal, Violation, When};
use crate::report::{Direction, Outcome, Transfer};
use crate::storage::{Download, StorageError};
use crate::tcp::{ClientStream, SEND_CHUNK};

/// How long ferry waits for the first `PON` of a download before deciding the
/// client does not send them (and streaming instead). Long, because a slow
/// handout client (one that sleeps before each `recv`) must stay in lock step.
const FIRST_PON_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a wait on the socket brought.
enum Arrival {
    /// New bytes are in the buffer.
    Bytes,
    /// The deadline passed with nothing new.
    Quiet,
    /// The client closed its side.
    End,
}

impl<S: ClientStream> Conn<'_, S> {
    /// Serves one handout-framed request, its tag already read. A failure
    /// that ends the connection has been answered the handout's way (or not
    /// at all) and comes back as [`Failure::Broken`], so no ferry `ERR` follows.
    pub(super) async fn handout(&mut self, tag: Tag) -> Result<(), Failure> {
        let cfg = Arc::clone(&self.io.config);
        let result = match tag {
            Tag::Saf => self.receive_handout_file(&cfg, After::Request, None).await,
            Tag::Sar => self.receive_handout_repo(&cfg).await,
            Tag::Raf => self.send_handout_file(&cfg).await,
            Tag::Rar => self.send_handout_repo(&cfg).await,
            // `detect` answers Handout only for the four tags above.
            _ => Ok(()),
        };
        result.map_err(|e| match e {
            e if !e.answerable() || matches!(e, Failure::Aborted) => e,
            other => Failure::Broken(other.to_string()),
        })
    }

    /// Reads more bytes into the buffer, waiting until `deadline` at most.
    async fn arrive(&mut self, deadline: Instant) -> Result<Arrival, Failure> {
        match self.io.read_more(deadline, Awaited::Data).await {
            Ok(0) => Ok(Arrival::End),
            Ok(_) => Ok(Arrival::Bytes),
            Err(Failure::Timeout(_)) => Ok(Arrival::Quiet),
            Err(e) => Err(e),
        }
    }

    /// A handout name: every byte until the stream is quiet for
    /// `handout_settle`; the whole name within `header_timeout`.
    /// `data_follows`: a `SAF` or `SAR` name, whose pause after it must not
    /// have been lost ([`QuietText`]).
    async fn quiet_text(
        &mut self,
        cfg: &Config,
        what: Awaited,
        data_follows: bool,
    ) -> Result<Name, Failure> {
        let mut text = QuietText::new(
            cfg.signal.handout_settle.0,
            cfg.limits.max_name_len,
            data_follows,
        );
        let give_up = Instant::now() + cfg.limits.header_timeout.0;
        // What made earlier bytes doubtful went with them: a stall while
        // the tag alone was read says nothing of a name sent after it.
        if self.io.buf.is_empty() {
            self.io.waited = false;
            self.ran_on = false;
        }
        loop {
            let now = Instant::now();
            // A name whose pause has passed ends before new bytes count.
            if let Some(name) = text.on_timeout(now) {
                return Ok(name);
            }
            if !self.io.buf.is_empty() {
                let bytes = self.io.buf.split();
                let doubt = self.take_doubt();
                text.on_bytes(now, &bytes, doubt)
                    .map_err(Failure::violation)?;
            }
            let deadline = text.deadline().unwrap_or(give_up).min(give_up);
            match self.arrive(deadline).await? {
                Arrival::Bytes => {}
                Arrival::Quiet if Instant::now() >= give_up => {
                    return Err(Failure::Timeout(what));
                }
                Arrival::Quiet => {}
                Arrival::End => {
                    return Err(Failure::Closed(When::BeforeEndOf(what)));
                }
            }
        }
    }

    /// Why the buffered bytes may hide a lost pause, if they may; the
    /// question is answered once per bytes.
    fn take_doubt(&mut self) -> Option<LostPause> {
        let waited = std::mem::take(&mut self.io.waited);
        let ran_on = std::mem::take(&mut self.ran_on);
        if waited {
            Some(LostPause::Waited)
        } else if ran_on {
            Some(LostPause::RanOn)
        } else {
            None
        }
    }

    /// Exactly `n` bytes (a `SAR` count), within `header_timeout`.
    async fn exact(&mut self, cfg: &Config, n: usize, what: Awaited) -> Result<Bytes, Failure> {
        let deadline = Instant::now() + cfg.limits.header_timeout.0;
        while self.io.buf.len() < n {
            match self.arrive(deadline).await? {
                Arrival::Bytes => {}
                Arrival::Quiet => return Err(Failure::Timeout(what)),
                Arrival::End => return Err(Failure::Closed(When::BeforeEndOf(what))),
            }
        }
        Ok(self.io.buf.split_to(n).freeze())
    }

    /// A handout file's data into `writer`, up to the `DON` that ends it;
    /// what came after the `DON` stays in the buffer for the next request.
    /// The socket is read as bytes come, never waiting on the disk: the
    /// client's pauses are seen only by a reader that is there for them.
    async fn handout_data(
        &mut self,
        cfg: &Config,
        after: After,
        writer: &Writer,
        t: &mut Transfer,
    ) -> Result<EndBy, Failure> {
        let idle = cfg.limits.idle_timeout.0;
        let mut data = FileData::new(
            cfg.signal.handout_settle.0,
            cfg.signal.handout_pause.0,
            after,
        );
        loop {
            if !self.io.buf.is_empty() {
                let bytes = self.io.buf.split().freeze();
                self.io.waited = false;
                let evs = data
                    .on_bytes(Instant::now(), bytes)
                    .map_err(Failure::violation)?;
                if let Some(by) = self.take(evs, writer, t).await {
                    return Ok(by);
                }
            }
            // Past the size limit nothing a client sends can be a file: the
            // upload is refused, and the connection ends here.
            if t.bytes > cfg.limits.max_file_size.0 {
                return Err(Failure::Refused(Refusal::OverSizeLimit(
                    cfg.limits.max_file_size.0,
                )));
            }
            let waiting = data.deadline();
            let deadline = waiting.unwrap_or_else(|| Instant::now() + idle);
            let evs = match self.arrive(deadline).await? {
                Arrival::Bytes => continue,
                Arrival::Quiet if waiting.is_none() => {
                    return Err(Failure::Timeout(Awaited::RestOfFileOrDon))
                }
                Arrival::Quiet => data
                    .on_timeout(Instant::now())
                    .map_err(Failure::violation)?,
                Arrival::End => data
                    .on_eof()
                    .map_err(|_| Failure::Closed(When::BeforeDon))?,
            };
            if let Some(by) = self.take(evs, writer, t).await {
                return Ok(by);
            }
        }
    }

    /// Hands file bytes to the writer; puts what followed `DON` back and
    /// says how the file ended, if it did.
    async fn take(
        &mut self,
        evs: Vec<DataEvent>,
        writer: &Writer,
        t: &mut Transfer,
    ) -> Option<EndBy> {
        for ev in evs {
            match ev {
                DataEvent::Data(bytes) => {
                    t.bytes += bytes.len() as u64;
                    writer.write(bytes).await;
                }
                DataEvent::End { rest, by } => {
                    // A name that came in the same piece as the data before
                    // it may run on into its own data.
                    self.ran_on = by == EndBy::Command && rest.len() > TAG_LEN;
                    let mut buf = BytesMut::from(&rest[..]);
                    buf.extend_from_slice(&self.io.buf);
                    self.io.buf = buf;
                    return Some(by);
                }
            }
        }
        None
    }

    /// `SAF` (or one file of a `SAR`): name, data, `DON`; then stored on a
    /// task of its own ([`store_handout_file`]) while the socket is read on.
    /// `refused` discards the file for that reason.
    async fn receive_handout_file(
        &mut self,
        cfg: &Config,
        after: After,
        refused: Option<Refusal>,
    ) -> Result<(), Failure> {
        let (writer, t) = self.read_handout_file(cfg, after, refused).await?;
        self.store_later(writer, t).await;
        Ok(())
    }

    /// The client pauses 0.1 s and sends its next name; the socket must be
    /// read then, whatever the disk is doing. So a file is stored on a task
    /// of its own, and a request that reads storage waits for it
    /// (`settle_commits`).
    async fn store_later(&mut self, writer: Writer, t: Transfer) {
        let ctx = Arc::clone(self.ctx);
        let task = self.ctx.spawn_main(store_handout_file(ctx, writer, t));
        self.commits.push_back(task);
        self.settle_commits(MAX_PENDING_COMMITS).await;
    }

    /// One handout file, name to `DON`: its bytes written (or discarded, if
    /// refused) by its writer, not yet stored.
    async fn read_handout_file(
        &mut self,
        cfg: &Config,
        after: After,
        refused: Option<Refusal>,
    ) -> Result<(Writer, Transfer), Failure> {
        let mut t = self.transfer(Direction::Upload);
        let name = or_fail!(t, self.quiet_text(cfg, Awaited::FileName, true).await);
        t.requested = String::from_utf8_lossy(&name.text).into_owned();
        // A name whose own DON is already inside it leaves nothing to
        // follow: the connection ends here, with the reason.
        if let Some(how) = name.lost.filter(|how| !how.resumable()) {
            let e = Failure::violation(HandoutError::LostPause(how));
            t.failed(&e);
            return Err(e);
        }
        let target = match (refused, name.sure()) {
            (Some(why), _) => Err(Failure::Refused(why)),
            // The file is read to its DON and discarded.
            (None, Err(e)) => Err(Failure::violation(e)),
            (None, Ok(raw)) => self.admit_name(&raw, &t.requested),
        };
        // The file is created and written on a task of its own while this
        // one reads on.
        let from = self.ctx.origin_for(self.io.peer.ip());
        let writer = Writer::spawn(self.ctx, target, cfg.limits.max_file_size.0, from);
        let by = match self.handout_data(cfg, after, &writer, &mut t).await {
            Ok(by) => by,
            Err(e) => {
                // Dropping the sink (after the writer ends) leaves nothing.
                let _ = writer.finish().await;
                t.failed(&e);
                return Err(e);
            }
        };
        if by.recovered() {
            tracing::debug!(
                ?by,
                "the pause before DON was lost: the end found from what followed it"
            );
        }
        Ok((writer, t))
    }

    /// The upload's name, if it is one and the client may upload now.
    fn admit_name(&self, raw: &[u8], shown: &str) -> Result<SafeName, Failure> {
        let name =
            SafeName::for_upload_bytes(raw).map_err(|e| Failure::name(NameOf::File, shown, e))?;
        self.ctx
            .admit_upload(tokio::time::Instant::now(), self.io.peer.ip(), 0)?;
        Ok(name)
    }

    /// `SAR`: a 4-byte count, then that many files, each stored as an upload
    /// once all of them have come whole. A `DON` glued to the next name
    /// cannot be seen inside a SAR (a name can be anything), but it costs
    /// the SAR a file: the count then comes out wrong at the end, the SAR
    /// fails, and nothing of it is stored. Files past `max_tree_entries`
    /// are read and discarded.
    async fn receive_handout_repo(&mut self, cfg: &Config) -> Result<(), Failure> {
        let raw = self.exact(cfg, COUNT_LEN, Awaited::SarCount).await?;
        let count = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let max = cfg.signal.max_tree_entries;
        tracing::debug!(count, "handout SAR");
        let mut held = Vec::new();
        for i in 0..count as usize {
            let refused = (i >= max).then_some(Refusal::TooManyInSar(max));
            let after = if i + 1 < count as usize {
                After::Name
            } else {
                After::Request
            };
            match self.read_handout_file(cfg, after, refused).await {
                Ok(file) => held.push(file),
                Err(e) => {
                    // Dropping a writer's upload leaves nothing of it.
                    for (writer, t) in held {
                        let _ = writer.finish().await;
                        t.failed(&Failure::Violation(Violation::SarNotWhole(e.to_string())));
                    }
                    return Err(e);
                }
            }
        }
        for (writer, t) in held {
            self.store_later(writer, t).await;
        }
        Ok(())
    }

    /// `RAF`: `ERR`, or the 36-byte signal, the pieces and `DON`.
    async fn send_handout_file(&mut self, cfg: &Config) -> Result<(), Failure> {
        let mut t = self.transfer(Direction::Download);
        let raw = or_fail!(t, self.quiet_text(cfg, Awaited::FileName, false).await).text;
        t.requested = String::from_utf8_lossy(&raw).into_owned();
        self.settle_commits(0).await;
        match self.open_requested(&raw, cfg.limits.max_name_len).await {
            Ok((path, download)) => {
                t.stored = path.to_string();
                let signal = found_signal(download.size());
                or_fail!(t, self.write_raw(&signal).await);
                or_fail!(t, self.send_pieces(cfg, download, &mut t).await);
                t.ok(Outcome::Sent);
            }
            Err(e) => {
                t.failed(&e);
                self.write_raw(b"ERR").await?;
            }
        }
        Ok(())
    }

    /// The pieces of a `RAF` answer, in lock step with the client's `PON`s
    /// (each `recv(1024)` then returns exactly one piece, and no piece is 3
    /// bytes, so none reads as `DON`), then `DON`. A client that sends no
    /// `PON` within [`FIRST_PON_WAIT`] gets the rest streamed, and `DON`
    /// once it has taken every byte and a pause has passed.
    async fn send_pieces(
        &mut self,
        cfg: &Config,
        mut download: Download,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        let size = download.size();
        let mut crc = ferry_proto::crc::Crc32::new();
        let mut ahead = BytesMut::new();
        let mut chunk = BytesMut::new();
        let mut offset = 0u64;
        let mut lockstep = true;
        let mut pon_wait = FIRST_PON_WAIT;
        while offset < size {
            let len = piece_len(offset, size);
            while ahead.len() < len {
                download
                    .read_chunk(&mut chunk, SEND_CHUNK)
                    .await
                    .map_err(StorageError::from)?;
                if chunk.is_empty() {
                    return Err(Failure::Broken("the file shrank while being sent".into()));
                }
                ahead.extend_from_slice(&chunk);
            }
            let piece = ahead.split_to(len);
            crc.update(&piece);
            self.write_raw(&piece).await?;
            offset += len as u64;
            t.bytes += len as u64;
            if lockstep {
                if self.pon(pon_wait).await? {
                    pon_wait = cfg.limits.idle_timeout.0;
                } else {
                    tracing::debug!(offset, "no PON from the client: streaming the rest");
                    lockstep = false;
                }
            }
        }
        t.crc = Some(crc.value());
        if !lockstep {
            self.pause_until_taken(cfg).await?;
        }
        self.write_raw(DON).await
    }

    /// Waits up to `wait` for the client's `PON`; false if none came (or
    /// something else did, which stays in the buffer).
    async fn pon(&mut self, wait: std::time::Duration) -> Result<bool, Failure> {
        let deadline = Instant::now() + wait;
        loop {
            if self.io.buf.starts_with(b"PON") {
                let _ = self.io.buf.split_to(3);
                return Ok(true);
            }
            if !b"PON".starts_with(&self.io.buf[..self.io.buf.len().min(3)]) {
                return Ok(false);
            }
            match self.arrive(deadline).await? {
                Arrival::Bytes => {}
                Arrival::Quiet => return Ok(false),
                Arrival::End => return Err(Failure::Closed(When::MidDownload)),
            }
        }
    }

    /// `RAR`: the count of regular files at the top of the directory (0 when
    /// it is missing or refused), then each file: name, data, `DON`, with a
    /// pause after each so the client's `recv` returns each alone.
    async fn send_handout_repo(&mut self, cfg: &Config) -> Result<(), Failure> {
        let mut t = self.transfer(Direction::Download);
        let raw = or_fail!(t, self.quiet_text(cfg, Awaited::DirectoryName, false).await).text;
        t.requested = super::as_directory(&String::from_utf8_lossy(&raw));
        self.settle_commits(0).await;
        let listed = match super::stored_path(&raw, cfg.limits.max_name_len) {
            Ok(path) => self.list_for(cfg, path, t.peer()).await,
            Err(e) => Err(e),
        };
        let (path, files) = match listed {
            Ok(pair) => pair,
            Err(e) => {
                t.failed(&e);
                self.write_raw(&0u32.to_be_bytes()).await?;
                return Ok(());
            }
        };
        t.stored = path.to_string();
        let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
        or_fail!(t, self.write_raw(&count.to_be_bytes()).await);
        for (i, (name, _)) in files.into_iter().enumerate() {
            let sent = self
                .send_handout_repo_file(cfg, &path, i, name, &mut t)
                .await;
            or_fail!(t, sent);
        }
        t.ok(Outcome::Sent);
        Ok(())
    }

    /// The files of the directory `path`, if `[access]` lets `peer`
    /// download it (the count goes first, so it is checked before).
    async fn list_for(
        &self,
        cfg: &Config,
        path: RelPath,
        peer: std::net::IpAddr,
    ) -> Result<(RelPath, Vec<(SafeName, u64)>), Failure> {
        let max = cfg.signal.max_tree_entries;
        self.ctx.tree_for(peer, &path, max, 1).await?;
        let files = self.ctx.storage.list_files(&path, max).await?;
        Ok((path, files))
    }

    /// One file of a handout `RAR`: name, data, `DON`, each alone.
    async fn send_handout_repo_file(
        &mut self,
        cfg: &Config,
        dir: &ferry_proto::names::RelPath,
        i: usize,
        name: SafeName,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        let download = self
            .ctx
            .open_for(t.peer(), &dir.join(name.clone()))
            .await
            .map_err(|e| match e {
                e @ (StorageError::Private(_) | StorageError::Unrecorded(_)) => {
                    Failure::Broken(e.to_string())
                }
                e => Failure::Broken(format!("the directory changed while being sent: {e}")),
            })?;
        if i > 0 {
            self.pause_until_taken(cfg).await?;
        }
        self.write_raw(name.as_str().as_bytes()).await?;
        self.pause_until_taken(cfg).await?;
        self.stream_handout(cfg, download, t).await?;
        self.pause_until_taken(cfg).await?;
        self.write_raw(DON).await
    }

    /// A file's bytes as fast as the client takes them, with one pause
    /// before the last 4 bytes when the size is 3 more than a multiple of
    /// 1024 (so a prompt client's last `recv` is never exactly 3 bytes).
    async fn stream_handout(
        &mut self,
        cfg: &Config,
        mut download: Download,
        t: &mut Transfer,
    ) -> Result<(), Failure> {
        let size = download.size();
        let split = match size % PIECE as u64 {
            3 if size > 3 => size - 4,
            3 => 2,
            _ => size,
        };
        let mut chunk = BytesMut::new();
        let mut sent = 0u64;
        while sent < size {
            if sent == split {
                self.pause_until_taken(cfg).await?;
            }
            let want = usize::try_from(if sent < split {
                split - sent
            } else {
                size - sent
            })
            .unwrap_or(usize::MAX)
            .min(SEND_CHUNK);
            download
                .read_chunk(&mut chunk, want)
                .await
                .map_err(StorageError::from)?;
            if chunk.is_empty() {
                return Err(Failure::Broken("the file shrank while being sent".into()));
            }
            self.write_raw(&chunk).await?;
            sent += chunk.len() as u64;
            t.bytes += chunk.len() as u64;
        }
        Ok(())
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.io.write_all(bytes).await
    }

    /// Waits until the client's kernel has acknowledged every byte sent
    /// (the socket's send queue is empty), then `handout_pause` more, so the
    /// next write reaches the client's `recv` on its own.
    async fn pause_until_taken(&mut self, cfg: &Config) -> Result<(), Failure> {
        let give_up = Instant::now() + cfg.limits.idle_timeout.0;
        let abort = self.io.aborted().clone();
        let stream = &self.io.stream;
        let wait = async {
            while stream.unsent() > 0 {
                if Instant::now() >= give_up {
                    return Err(Failure::Timeout(Awaited::ClientToRead));
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            tokio::time::sleep(cfg.signal.handout_pause.0).await;
            Ok(())
        };
        tokio::select! {
            _ = abort.cancelled() => Err(Failure::Aborted),
            r = wait => r,
        }
    }
}

/// Handout uploads of one connection being stored at once, at most; past
/// that, reading waits for the oldest (only a disk slower than the client's
/// 0.1 s pauses gets there).
const MAX_PENDING_COMMITS: usize = 8;

/// Waits for the writer, stores the file (fsynced, renamed into place) and
/// logs the transfer: the second half of a handout `SAF`, off the read path.
async fn store_handout_file(ctx: Arc<Ctx>, writer: Writer, mut t: Transfer) {
    let result = match writer.finish().await {
        Ok(upload) => upload.commit(None).await.map_err(Failure::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(stored) => {
            // The size was not announced: it counts now.
            ctx.uploads
                .spend(tokio::time::Instant::now(), t.peer(), stored.size);
            t.stored = stored.name;
            t.crc = Some(stored.crc);
            t.ok(Outcome::of_upload(stored.deduplicated));
        }
        Err(e) => t.failed(&e),
    }
}

/// Reads of a handout file waiting for the disk, at most (each at most
/// 32 KiB: 2 MiB per upload); past that the reader waits too.
const WRITE_QUEUE: usize = 64;

/// The disk side of a handout upload: creates the file and writes what the
/// reader hands it, on a task of its own.
struct Writer {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: tokio::task::JoinHandle<Sink>,
}

impl Writer {
    fn spawn(
        ctx: &Ctx,
        target: Result<SafeName, Failure>,
        max: u64,
        from: crate::storage::Origin,
    ) -> Writer {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let storage = ctx.storage.clone();
        let task = ctx.spawn_main(async move {
            let mut sink: Sink = match target {
                Ok(name) => storage
                    .begin_write_capped(name, max, from)
                    .await
                    .map_err(Failure::from),
                Err(e) => Err(e),
            };
            // Everything is received even once the sink has failed, so the
            // reader never blocks on a full queue.
            while let Some(bytes) = rx.recv().await {
                if let Ok(upload) = &mut sink {
                    if let Err(e) = upload.write_direct(&bytes).await {
                        sink = Err(e.into());
                    }
                }
            }
            sink
        });
        Writer { tx: Some(tx), task }
    }

    async fn write(&self, bytes: Bytes) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(bytes).await;
        }
    }

    /// Waits for every byte handed over to be written; the upload, or why not.
    async fn finish(mut self) -> Sink {
        self.tx = None;
        match (&mut self.task).await {
            Ok(sink) => sink,
            Err(e) => Err(Failure::Broken(format!("the writer failed: {e}"))),
        }
    }
}

/// The handout framing on a pipe with a paused clock: the client's
/// `time.sleep(0.1)` between sends is virtual time, and so are the settle
/// and pause rules they meet. A pause lost in a socket (a busy server, a
/// full buffer) is two parts in one write.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::tcp::pipe::{answer, ctx, last_attempt, visible, Pipe};

    const LAB1: (&str, &[u8]) = ("lab1.py", b"print('lab 1')\n");
    const LAB2: (&str, &[u8]) = ("lab2.py", b"print('lab 2')\n");

    /// The handout client's pause between sends.
    const PAUSE: Duration = Duration::from_millis(100);

    fn connect(ctx: &Arc<Ctx>) -> Pipe {
        Pipe::serve(ctx, super::super::serve)
    }

    /// Sends each part, then pauses, as the handout client does.
    async fn say(client: &mut DuplexStream, parts: &[&[u8]]) {
        for part in parts {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// Closes the client's side (the handout client exits) and reads what
    /// the server still sends, until the connection's end: by then every
    /// upload of it is stored.
    async fn hang_up(mut pipe: Pipe) -> Vec<u8> {
        pipe.client.shutdown().await.unwrap();
        let got = answer(&mut pipe.client).await;
        pipe.served.await.unwrap();
        got
    }

    fn files(list: &[(&str, &[u8])]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, b)| (n.to_string(), String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn two_handout_safs_on_one_connection_are_stored_whole() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        for (name, data) in [LAB1, LAB2] {
            say(&mut pipe.client, &[b"SAF", name.as_bytes(), data, b"DON"]).await;
        }
        let got = hang_up(pipe).await;
        assert!(got.is_empty(), "a handout upload is answered with nothing");
        assert_eq!(visible(root.path()), files(&[LAB1, LAB2]));
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Stored);
    }

    /// Issue 22's case: the server did not read across the pause between
    /// the first file's data and its `DON`, so they arrive as one piece,
    /// and the next request follows.
    #[tokio::test(start_paused = true)]
    async fn data_and_don_in_one_piece_end_the_file_at_the_don() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        let glued = [LAB1.1, b"DON"].concat();
        say(&mut pipe.client, &[b"SAF", LAB1.0.as_bytes(), &glued]).await;
        say(
            &mut pipe.client,
            &[b"SAF", LAB2.0.as_bytes(), LAB2.1, b"DON"],
        )
        .await;
        hang_up(pipe).await;
        assert_eq!(visible(root.path()), files(&[LAB1, LAB2]));
    }

    /// Worse: the `DON`, the next tag and its name all in one piece with
    /// the data. The `DON` + tag ends the file; the name is the next one's.
    #[tokio::test(start_paused = true)]
    async fn data_don_and_the_next_request_in_one_piece_store_both_files_whole() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        let glued = [LAB1.1, b"DONSAF"].concat();
        say(&mut pipe.client, &[b"SAF", LAB1.0.as_bytes(), &glued]).await;
        say(&mut pipe.client, &[LAB2.0.as_bytes(), LAB2.1, b"DON"]).await;
        hang_up(pipe).await;
        assert_eq!(visible(root.path()), files(&[LAB1, LAB2]));
    }

    /// The pause between name and data lost: ferry cannot tell where the
    /// name ended, so it stores nothing of that file and says why.
    #[tokio::test(start_paused = true)]
    async fn a_name_run_into_its_data_is_refused_not_guessed() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        let glued = [LAB1.0.as_bytes(), LAB1.1].concat();
        say(&mut pipe.client, &[b"SAF"]).await;
        // Arrives while the server is not reading (as if it were stopped).
        pipe.client.write_all(&glued).await.unwrap();
        say(&mut pipe.client, &[b"DON"]).await;
        hang_up(pipe).await;
        assert_eq!(visible(root.path()), vec![]);
        let a = last_attempt(&ctx);
        assert_eq!(a.outcome, Outcome::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handout_raf_gets_the_signal_then_pieces_in_lock_step_then_don() {
        let body: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[("big.bin", &body)]);
        let mut pipe = connect(&ctx);
        say(&mut pipe.client, &[b"RAF", b"big.bin"]).await;
        let mut signal = [0u8; 36];
        pipe.client.read_exact(&mut signal).await.unwrap();
        assert_eq!(&signal, &found_signal(2500));
        let mut got = Vec::new();
        // Each piece is taken alone, then answered PON (the handout's loop).
        for want in [1024usize, 1024, 452] {
            let mut piece = vec![0u8; want];
            pipe.client.read_exact(&mut piece).await.unwrap();
            got.extend_from_slice(&piece);
            pipe.client.write_all(b"PON").await.unwrap();
        }
        let mut don = [0u8; 3];
        pipe.client.read_exact(&mut don).await.unwrap();
        assert_eq!(&don, DON);
        assert_eq!(got, body);
        let rest = hang_up(pipe).await;
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handout_raf_of_a_missing_file_is_answered_err() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        say(&mut pipe.client, &[b"RAF", b"nope.py"]).await;
        let got = hang_up(pipe).await;
        assert_eq!(got, b"ERR");
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Failed);
    }

    /// A `SAF` then a `RAF` of the same file on one connection (the handout
    /// client's round trip): the download waits until the upload is stored.
    #[tokio::test(start_paused = true)]
    async fn a_raf_after_a_saf_on_one_connection_gets_the_file_just_sent() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        say(
            &mut pipe.client,
            &[b"SAF", LAB1.0.as_bytes(), LAB1.1, b"DON"],
        )
        .await;
        say(&mut pipe.client, &[b"RAF", LAB1.0.as_bytes()]).await;
        let mut signal = [0u8; 36];
        pipe.client.read_exact(&mut signal).await.unwrap();
        assert_eq!(&signal, &found_signal(LAB1.1.len() as u64));
        let mut piece = vec![0u8; LAB1.1.len()];
        pipe.client.read_exact(&mut piece).await.unwrap();
        assert_eq!(piece, LAB1.1);
        pipe.client.write_all(b"PON").await.unwrap();
        let rest = hang_up(pipe).await;
        assert_eq!(rest, DON);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handout_sar_stores_each_file_under_its_name() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        say(&mut pipe.client, &[b"SAR", &2u32.to_be_bytes()]).await;
        for (name, data) in [LAB1, LAB2] {
            say(&mut pipe.client, &[name.as_bytes(), data, b"DON"]).await;
        }
        hang_up(pipe).await;
        assert_eq!(visible(root.path()), files(&[LAB1, LAB2]));
    }

    /// A SAR whose second file never ends stores none of it.
    #[tokio::test(start_paused = true)]
    async fn a_handout_sar_cut_off_stores_nothing() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let mut pipe = connect(&ctx);
        say(&mut pipe.client, &[b"SAR", &2u32.to_be_bytes()]).await;
        say(&mut pipe.client, &[LAB1.0.as_bytes(), LAB1.1, b"DON"]).await;
        say(&mut pipe.client, &[LAB2.0.as_bytes(), b"print("]).await;
        hang_up(pipe).await;
        assert_eq!(visible(root.path()), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handout_rar_sends_the_count_then_each_file_name_data_don() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("labs")).unwrap();
        let ctx = ctx(
            root.path(),
            &[("labs/lab1.py", LAB1.1), ("labs/lab2.py", LAB2.1)],
        );
        let mut pipe = connect(&ctx);
        say(&mut pipe.client, &[b"RAR", b"labs"]).await;
        let got = hang_up(pipe).await;
        let mut want = 2u32.to_be_bytes().to_vec();
        for (name, data) in [LAB1, LAB2] {
            want.extend_from_slice(name.as_bytes());
            want.extend_from_slice(data);
            want.extend_from_slice(DON);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }

    /// A name that never ends in a pause (a client streaming bytes) is cut
    /// off at `header_timeout`, and nothing is stored.
    #[tokio::test(start_paused = true)]
    async fn a_name_that_never_pauses_times_out() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), &[]);
        let header = ctx.config().limits.header_timeout.0;
        let mut pipe = connect(&ctx);
        say(&mut pipe.client, &[b"SAF"]).await;
        let started = Instant::now();
        let client = &mut pipe.client;
        let trickle = async {
            loop {
                if client.write_all(b"a").await.is_err() {
                    break;
                }
                // Within the 20 ms settle, slow enough to stay under the
                // name length cap until the timeout.
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        };
        let _ = tokio::time::timeout(header * 2, trickle).await;
        let waited = started.elapsed();
        hang_up(pipe).await;
        assert_eq!(visible(root.path()), vec![]);
        assert!(waited >= header && waited < header * 2, "{waited:?}");
        assert_eq!(last_attempt(&ctx).outcome, Outcome::Failed);
    }
}
