//! Uploads into the local root: streamed into the work area, checked,
//! fsynced, placed; the CRC-32 recorded beside the data (with the size and
//! modification time it is for). An identical retry is found by size, CRC-32
//! and sender, then confirmed by comparing the bytes: nothing is hashed on
//! the way in.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use ferry_proto::crc::Crc32;
use ferry_proto::names::SafeName;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::origin::{origin_at, origin_of, set_origin};
use super::sys::{fsync_dir, open_file, set_xattr, start_writeback, xattr, xattr_at};
use super::Local;
use crate::storage::{Origin, Reader, StorageError, Stored, UploadSink};

/// Bytes an upload gathers before handing them to the file (bounds memory per upload).
const WRITE_BATCH: usize = 64 * 1024;

/// Uploads announced at this size or more get a writer thread of their own
/// (a lane), if one is free: the socket is read, the data hashed and
/// written, all at once (measured in docs/BENCHMARKS.md).
pub(crate) const PIPE_MIN: u64 = 4 << 20;
/// Lanes at once: each holds a thread and up to [`PIPE_DEPTH`] buffers.
pub(crate) const PIPE_LANES: usize = 4;
/// Buffers queued for a lane's thread, at most (each one socket read, at
/// most [`crate::conn::READ_CHUNK_LARGE`]: 2 MiB per lane).
const PIPE_DEPTH: usize = 8;

/// A large upload's written data is handed to the disk (without waiting)
/// every this many bytes, so the fsync before the acknowledgement waits
/// for the last of it only.
const WRITE_BEHIND: u64 = 8 << 20;

/// What a lane's thread hands back: the file, or why not.
type Piped = io::Result<std::fs::File>;

/// A large upload's writer thread: it writes what the connection hands it,
/// in order, while the connection reads on.
pub(crate) struct Pipe {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    done: tokio::sync::oneshot::Receiver<Piped>,
    _lane: tokio::sync::OwnedSemaphorePermit,
}

fn pipe_thread(mut file: std::fs::File, mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> Piped {
    use std::io::Write;
    let (mut written, mut flushed) = (0u64, 0u64);
    while let Some(data) = rx.blocking_recv() {
        file.write_all(&data)?;
        written += data.len() as u64;
        if written - flushed >= WRITE_BEHIND {
            start_writeback(&file, flushed, written - flushed);
            flushed = written;
        }
    }
    Ok(file)
}

/// Where a finished upload goes.
pub(super) enum Dest {
    /// Into the root under this name.
    Root(SafeName),
    /// Into a tree being received (already in place in its temporary dir).
    InTree,
}

/// An upload in progress. Dropping it without `commit` removes the temporary file.
pub(crate) struct LocalUpload {
    pub(super) storage: Local,
    pub(super) dest: Dest,
    pub(super) temp: Option<PathBuf>,
    pub(super) file: Option<File>,
    pub(super) pending: BytesMut,
    /// The announced size, or the cap when `exact` is false.
    pub(super) expected: u64,
    pub(super) exact: bool,
    pub(super) written: u64,
    pub(super) crc: Crc32,
    /// A large upload's writer thread, when it has a lane.
    pub(super) pipe: Option<Pipe>,
    /// Who sent it: recorded on the file before it is made durable.
    pub(super) origin: Origin,
}

impl LocalUpload {
    /// Hands the file to a writer thread holding `lane`.
    pub(super) async fn pipe(&mut self, lane: tokio::sync::OwnedSemaphorePermit) {
        let Some(file) = self.file.take() else {
            return;
        };
        let file = file.into_std().await;
        let (tx, rx) = tokio::sync::mpsc::channel(PIPE_DEPTH);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("ferry-writer".into())
            .spawn(move || {
                let _ = done_tx.send(pipe_thread(file, rx));
            });
        match spawned {
            Ok(_) => {
                self.pipe = Some(Pipe {
                    tx: Some(tx),
                    done,
                    _lane: lane,
                })
            }
            Err(e) => tracing::debug!(error = %e, "no writer thread: writing in line"),
        }
        if self.pipe.is_none() {
            // The thread did not start: `file` went with the closure. Open
            // it again to write in line.
            if let Some(temp) = &self.temp {
                if let Ok(f) = tokio::fs::OpenOptions::new().write(true).open(temp).await {
                    self.file = Some(f);
                }
            }
        }
    }

    /// Appends a small piece (a datagram): pieces are gathered into 64 KiB
    /// writes. Refuses to go past the announced size.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.account(data)?;
        self.pending.extend_from_slice(data);
        if self.pending.len() >= WRITE_BATCH {
            let batch = self.pending.split();
            match self.pipe.is_some() {
                true => self.send(batch.freeze()).await?,
                false => self.write_out(&batch).await?,
            }
        }
        Ok(())
    }

    /// Appends a piece of a stream the caller owns (a socket read): to the
    /// writer thread as it is, or straight to the file.
    pub(crate) async fn write_owned(&mut self, data: Bytes) -> Result<(), StorageError> {
        match self.pipe.is_some() {
            true => self.write_piped(data).await,
            false => self.write_owned_in_line(data).await,
        }
    }

    /// Writes a piece the caller owns on the blocking pool as it is: no
    /// copy into the file's own buffer, which would stay allocated for as
    /// long as the upload lasts (32 KiB for each of a thousand uploads).
    async fn write_owned_in_line(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.account(&data)?;
        self.write_pending().await?;
        // tokio's file writes behind: its error comes with the next call,
        // and `into_std` would drop it. Flushing reports it here.
        if let Some(f) = self.file.as_mut() {
            f.flush().await?;
        }
        let Some(file) = self.file.take() else {
            return Err(io::Error::other("upload already finished").into());
        };
        let mut std = file.into_std().await;
        let (std, written) = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let r = std.write_all(&data);
            (std, r)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        self.file = Some(File::from_std(std));
        Ok(written?)
    }

    async fn write_piped(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.account(&data)?;
        if !self.pending.is_empty() {
            let batch = self.pending.split().freeze();
            self.send(batch).await?;
        }
        self.send(data).await
    }

    /// To the writer thread; if it has stopped, why.
    async fn send(&mut self, data: Bytes) -> Result<(), StorageError> {
        let sent = match self.pipe.as_ref().and_then(|p| p.tx.as_ref()) {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread ended early: its write failed.
        Err(match self.finish_pipe().await {
            Err(e) => e,
            Ok(()) => io::Error::other("the writer thread stopped").into(),
        })
    }

    /// Ends the writer thread: the file back, in line.
    async fn finish_pipe(&mut self) -> Result<(), StorageError> {
        let Some(mut pipe) = self.pipe.take() else {
            return Ok(());
        };
        pipe.tx = None;
        let file = (&mut pipe.done)
            .await
            .map_err(|_| io::Error::other("the writer thread died"))??;
        self.file = Some(File::from_std(file));
        Ok(())
    }

    /// Appends a piece of a stream (a socket read, already large) straight to
    /// the file, so a TCP upload holds no second copy of its data.
    pub(crate) async fn write_direct(&mut self, data: &[u8]) -> Result<(), StorageError> {
        match self.pipe.is_some() {
            true => self.write_piped(Bytes::copy_from_slice(data)).await,
            false => self.write_in_line(data).await,
        }
    }

    async fn write_in_line(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.account(data)?;
        self.write_pending().await?;
        self.write_out(data).await
    }

    /// Writes what [`LocalUpload::write`] gathered, ahead of a piece that
    /// goes straight to the file.
    async fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = self.pending.split();
        self.write_out(&batch).await
    }

    fn account(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let total = self.written + data.len() as u64;
        if total > self.expected && !self.exact {
            return Err(StorageError::TooLarge { max: self.expected });
        }
        if total > self.expected {
            return Err(StorageError::SizeMismatch {
                expected: self.expected,
                received: total,
            });
        }
        self.crc.update(data);
        self.written = total;
        Ok(())
    }

    async fn write_out(&mut self, data: &[u8]) -> Result<(), StorageError> {
        match self.file.as_mut() {
            Some(f) => Ok(f.write_all(data).await?),
            None => Err(io::Error::other("upload already finished").into()),
        }
    }

    /// Checks size (and CRC when given), makes the data durable and puts it in
    /// place. Returns only when an acknowledgement may be sent.
    pub(crate) async fn commit(
        mut self,
        expected_crc: Option<u32>,
    ) -> Result<Stored, StorageError> {
        if self.exact && self.written != self.expected {
            return Err(StorageError::SizeMismatch {
                expected: self.expected,
                received: self.written,
            });
        }
        let crc = self.crc.value();
        if let Some(expected) = expected_crc {
            if expected != crc {
                return Err(StorageError::ChecksumMismatch {
                    expected,
                    actual: crc,
                });
            }
        }
        if !self.pending.is_empty() {
            let batch = self.pending.split();
            match self.pipe.is_some() {
                true => self.send(batch.freeze()).await?,
                false => self.write_out(&batch).await?,
            }
        }
        self.finish_pipe().await?;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        file.flush().await?;
        // Kept beside the data, durable with it (the sync below): what a
        // retry is first matched by, and `STAT` answers without a read.
        set_crc(&file, self.crc.value()).await;
        set_origin(&file, self.origin)?;
        file.sync_all().await?;
        drop(file);
        let size = self.written;
        let name = match &self.dest {
            Dest::InTree => {
                // Stays where it is; the tree commit moves it.
                self.temp = None;
                return Ok(Stored {
                    name: String::new(),
                    size,
                    crc,
                    deduplicated: false,
                });
            }
            Dest::Root(name) => name.clone(),
        };
        let temp = self
            .temp
            .clone()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        let (stored, dedup) =
            place_file(self.storage.clone(), temp, name, self.origin, size, crc).await?;
        self.temp = None;
        Ok(Stored {
            name: stored,
            size,
            crc,
            deduplicated: dedup,
        })
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            // The reaper unlinks it, off the runtime.
            self.storage.reap(temp);
        }
    }
}

/// Moves a finished upload into the root (off the runtime); an identical
/// retry from the same sender is dropped for the stored one.
async fn place_file(
    storage: Local,
    temp: PathBuf,
    name: ferry_proto::names::SafeName,
    from: Origin,
    size: u64,
    crc: u32,
) -> Result<(String, bool), StorageError> {
    tokio::task::spawn_blocking(move || {
        // A retry is the same bytes from the same sender.
        let same = |existing: &Path| {
            origin_at(existing) == Some(from) && same_file(existing, &temp, size, crc)
        };
        let placed = storage.place(&temp, &name, from, &same)?;
        if placed.1 {
            std::fs::remove_file(&temp)?;
        } else {
            fsync_dir(&storage.inner.root)?;
        }
        Ok::<_, StorageError>(placed)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// The extended attribute a ferryd before 2026-12-04 kept a stored file's
/// BLAKE3 digest in: still read as the mark of an upload (see
/// [`super::origin`]), no longer written.
pub(super) const DIGEST_XATTR: &str = "user.ferry.blake3";

/// The extended attribute caching a stored file's CRC-32, with the size and
/// modification time it was computed for (so a file edited in place by an
/// admin is read again): crc u32, size u64, mtime seconds i64, nanoseconds
/// u32, big-endian, 24 bytes.
const CRC_XATTR: &str = "user.ferry.crc32";

fn crc_record(crc: u32, meta: &std::fs::Metadata) -> [u8; 24] {
    use std::os::unix::fs::MetadataExt;
    let mut v = [0u8; 24];
    v[..4].copy_from_slice(&crc.to_be_bytes());
    v[4..12].copy_from_slice(&meta.len().to_be_bytes());
    v[12..20].copy_from_slice(&meta.mtime().to_be_bytes());
    v[20..24].copy_from_slice(&(meta.mtime_nsec() as u32).to_be_bytes());
    v
}

/// Records the CRC-32 on the file (best effort), for `STAT` without a read.
async fn set_crc(file: &File, crc: u32) {
    if let Ok(meta) = file.metadata().await {
        let _ = set_xattr(file, CRC_XATTR, &crc_record(crc, &meta));
    }
}

impl LocalFile {
    /// The CRC-32 recorded when ferry stored the file, if it is still the
    /// same file (size and modification time); `None` means read it.
    pub(crate) async fn cached_crc(&self) -> Option<u32> {
        let meta = self.file.metadata().await.ok()?;
        let v: [u8; 24] = xattr(&self.file, CRC_XATTR)?;
        let crc = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        (v == crc_record(crc, &meta)).then_some(crc)
    }
}

/// True when `path` is a regular file (not a link) of `size` bytes whose
/// recorded CRC-32 (still valid for its size and modification time) is
/// `crc`, and whose bytes are those of `temp`. The CRC-32 is trivially
/// forged, so it only picks the candidates; the comparison decides, and it
/// reads files only for a retry that matched on all three. A file without a
/// record (stored by an admin, edited in place, or on a file system without
/// user attributes) is never taken for a copy.
fn same_file(path: &Path, temp: &Path, size: u64, crc: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != size {
        return false;
    }
    let recorded = xattr_at::<24>(path, CRC_XATTR).is_some_and(|v| v == crc_record(crc, &meta));
    recorded && same_bytes(path, temp, size).unwrap_or(false)
}

/// Whether the regular file at `path` (never through a link) and `temp`
/// hold the same `size` bytes.
fn same_bytes(path: &Path, temp: &Path, size: u64) -> io::Result<bool> {
    use std::io::Read;
    let mut a = open_file(path)?;
    let mut b = std::fs::File::open(temp)?;
    let meta = a.metadata()?;
    if !meta.is_file() || meta.len() != size || b.metadata()?.len() != size {
        return Ok(false);
    }
    const PIECE: usize = 256 * 1024;
    let (mut x, mut y) = (vec![0u8; PIECE], vec![0u8; PIECE]);
    let mut left = size;
    while left > 0 {
        let n = PIECE.min(usize::try_from(left).unwrap_or(PIECE));
        a.read_exact(&mut x[..n])?;
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// A stored file opened for reading.
pub(crate) struct LocalFile {
    /// The open file, at offset 0.
    pub(super) file: File,
    /// Its size when opened (uploads replace files by rename, so an open file never changes).
    pub(super) size: u64,
    /// Its size and modification time when opened, as the CRC record has
    /// them: a CRC-32 summed from this open file is recorded only if they
    /// are the same after the read (an admin's edit in between is not).
    stamp: [u8; 20],
    /// Who stored it, read at open.
    origin: Origin,
}

impl LocalFile {
    /// An open file and its metadata at open.
    pub(super) fn new(file: File, meta: &std::fs::Metadata) -> LocalFile {
        let mut stamp = [0u8; 20];
        stamp.copy_from_slice(&crc_record(0, meta)[4..]);
        let origin = origin_of(&file);
        LocalFile {
            file,
            size: meta.len(),
            stamp,
            origin,
        }
    }

    /// Records `crc`, summed from the whole of this open file, so the next
    /// `RAF` sends it with `sendfile` and `STAT` answers without a read;
    /// only if the file is as it was when opened (best effort).
    pub(crate) async fn record_crc(&self, crc: u32) {
        let Ok(meta) = self.file.metadata().await else {
            return;
        };
        let record = crc_record(crc, &meta);
        if record[4..] == self.stamp {
            let _ = set_xattr(&self.file, CRC_XATTR, &record);
        }
    }

    /// Reads the next bytes into `buf` (cleared first); an empty `buf` means the end.
    pub(crate) async fn read_chunk(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<()> {
        buf.clear();
        buf.reserve(max);
        let mut limited = (&mut self.file).take(max as u64);
        while buf.len() < max {
            if limited.read_buf(buf).await? == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl UploadSink for LocalUpload {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        LocalUpload::write(self, data).await
    }

    async fn write_direct(&mut self, data: &[u8]) -> Result<(), StorageError> {
        LocalUpload::write_direct(self, data).await
    }

    async fn write_owned(&mut self, data: Bytes) -> Result<(), StorageError> {
        LocalUpload::write_owned(self, data).await
    }

    fn large_reads(&self) -> bool {
        self.pipe.is_some()
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn crc(&self) -> u32 {
        self.crc.value()
    }

    async fn commit(self: Box<Self>, expected_crc: Option<u32>) -> Result<Stored, StorageError> {
        LocalUpload::commit(*self, expected_crc).await
    }
}

#[async_trait]
impl Reader for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn origin(&self) -> Origin {
        self.origin
    }

    async fn read_chunk(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<()> {
        LocalFile::read_chunk(self, buf, max).await
    }

    async fn cached_crc(&self) -> Option<u32> {
        LocalFile::cached_crc(self).await
    }

    async fn record_crc(&mut self, crc: u32) {
        LocalFile::record_crc(self, crc).await
    }

    fn sendfile_source(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.file.as_fd())
    }
}
