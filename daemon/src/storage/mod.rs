//! Storage: the one interface every service moves bytes through, and the
//! backends behind it.
//!
//! The interface is streaming and async all the way, with no file
//! descriptor or path in it, so an object store can implement it as well as
//! the local filesystem does:
//! - [`Storage::begin_write`] → [`UploadSink::write`]… →
//!   [`UploadSink::commit`] (or drop it: nothing is stored);
//! - [`Storage::open_read`] → a [`Reader`] with its size, read in chunks;
//! - [`Storage::begin_tree`] → [`TreeSink::begin_file`]… → [`TreeSink::commit`],
//!   all or nothing; [`Storage::read_tree`] → a [`TreeSource`], file by file;
//! - [`Storage::list_files`]: the regular files at the top of a directory.
//!
//! A backend may offer fast paths: the local one lends its file to
//! `sendfile(2)` ([`Reader::sendfile_source`]); a caller that gets `None`
//! copies through [`Reader::read_chunk`].
//!
//! Guarantees every backend keeps:
//! - `commit` returns only once the data is durable, and callers
//!   acknowledge only after it returns; no reader ever sees a partial file.
//! - A failed, cut or abandoned upload leaves nothing under any name.
//! - Names are [`SafeName`]/[`RelPath`] values, built only by the normaliser.
//! - Same-name uploads never destroy data (`on_conflict`), and a retried
//!   upload identical to one already stored is acknowledged with the stored
//!   name instead of being stored twice.
//! - Every file ferry receives keeps who sent it ([`Origin`]); a retry is
//!   identical only if it comes from the same sender, and `overwrite`
//!   replaces only a file from the same sender (another's upload of the name
//!   gets a numbered one), so no one replaces a classmate's hand-in or an
//!   admin's published file.
//!
//! # Layout
//! - this module: the interface ([`Backend`] and the four stream traits),
//!   [`StorageError`], [`Stored`]; `origin` ([`Origin`]);
//! - [`local`]: the local filesystem backend (root, work area, lock, reaper),
//!   with `naming` (the `on_conflict` policy, numbered names), `upload`
//!   (streaming writes, digest and CRC attributes), `tree` (trees in and
//!   out) and `sys` (the raw system calls).

mod local;
pub(crate) mod numbered;
mod origin;
mod s3;
mod shape;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use ferry_config::OnConflict;
use ferry_proto::crc::format_hex;
use ferry_proto::names::{RelPath, SafeName};

pub use local::{OpenError, LOCK_FILE, WORK_DIR};
pub(crate) use origin::Origin;
pub(crate) use s3::load_credentials;
pub(crate) use s3::roots;
pub use s3::CaError;
pub use s3::CredentialsError;
pub use s3::S3OpenError;

/// Why a storage operation failed; the text goes to the client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    /// No such file or directory.
    #[error("no such file: {0}")]
    NotFound(String),
    /// A symlink, device, socket or the like.
    #[error("{0} is not a regular file or directory")]
    NotRegular(String),
    /// A file was asked for, a directory found (or the reverse).
    #[error("{0} is a directory")]
    IsDirectory(String),
    /// `{0}` is not a directory.
    #[error("{0} is not a directory")]
    NotDirectory(String),
    /// `on_conflict = "reject"` and the name is taken.
    #[error("{0} already exists")]
    Exists(String),
    /// Received size differs from the announced one.
    #[error("size mismatch: expected {expected} bytes, received {received}")]
    SizeMismatch {
        /// Announced size.
        expected: u64,
        /// Bytes written.
        received: u64,
    },
    /// CRC-32 of the data differs from the announced one.
    #[error("checksum mismatch: expected {}, the data has {}", format_hex(*.expected), format_hex(*.actual))]
    ChecksumMismatch {
        /// Announced CRC.
        expected: u32,
        /// CRC of the data.
        actual: u32,
    },
    /// A file without an announced size went past the cap.
    #[error("the file is over the limit of {max} bytes")]
    TooLarge {
        /// The cap.
        max: u64,
    },
    /// A tree broke one of its limits or repeated a path.
    #[error("{0}")]
    BadTree(String),
    /// The shared store (the bucket or etcd) cannot be reached, or is out
    /// of room for uploads just now: nothing was stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store stopped answering while a name was being claimed: the
    /// claim may or may not have been made, so nothing is removed.
    #[error("storage unavailable: {0}")]
    Unsettled(String),
    /// The filesystem is nearly out of inodes: a new file is refused before
    /// it is made, keeping a reserve for uploads in progress and ferryd's
    /// own files (a crowd of tiny files must not leave `No space left on
    /// device` for everyone).
    #[error(
        "the server's storage has no room for more files ({free} inodes left); try again later"
    )]
    NoInodes {
        /// Inodes still free.
        free: u64,
    },
    /// Hand-in privacy: handed in from another address.
    #[error(
        "{0} was handed in from another address: only that address (or an admin) can download it"
    )]
    Private(String),
    /// Hand-in privacy: received with no record of its sender.
    #[error("{0} was stored with no record of who sent it: only an admin can download it")]
    Unrecorded(String),
    /// The disk or the OS failed (full disk, I/O error, …).
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// A stored file or tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The name it is stored under, relative to the root.
    pub name: String,
    /// Its size in bytes (sum of files for a tree).
    pub size: u64,
    /// Its CRC-32 (0 for a tree).
    pub crc: u32,
    /// True when an identical file was already there and nothing new was written.
    pub deduplicated: bool,
}

/// How much an upload will hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announced {
    /// Exactly this many bytes (the protocol sent the size first).
    Exact(u64),
    /// Not announced: at most this many (the handout's signal framing ends a
    /// file by a pause and `DON`).
    AtMost(u64),
}

impl Announced {
    /// The bytes it allows, and whether exactly that many must come.
    pub(crate) fn limit(self) -> (u64, bool) {
        match self {
            Announced::Exact(n) => (n, true),
            Announced::AtMost(n) => (n, false),
        }
    }
}

/// A storage backend: where uploads go and downloads come from.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Where the data lives, for logs and the status line.
    fn location(&self) -> &Path;

    /// Starts background work (removing leftovers) once the daemon serves.
    fn start_background(&self);

    /// Waits up to `limit` for background work given so far (at a clean stop).
    async fn flush_background(&self, limit: Duration);

    /// Starts an upload from `from` to be stored as `name`.
    async fn begin_write(
        &self,
        name: SafeName,
        size: Announced,
        from: Origin,
    ) -> Result<Upload, StorageError>;

    /// Opens a stored file for reading.
    async fn open_read(&self, path: &RelPath) -> Result<Download, StorageError>;

    /// Opens a stored directory for sending, file by file in path order.
    async fn read_tree(
        &self,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<TreeReader, StorageError>;

    /// The regular files directly inside a stored directory, in name order,
    /// with their sizes; at most `max_entries`.
    async fn list_files(
        &self,
        path: &RelPath,
        max_entries: usize,
    ) -> Result<Vec<(SafeName, u64)>, StorageError>;

    /// Starts receiving a tree from `from` to be stored as `name`, at most
    /// `max_depth` deep.
    async fn begin_tree(
        &self,
        name: SafeName,
        max_depth: usize,
        from: Origin,
    ) -> Result<TreeUpload, StorageError>;

    /// Whether the backend keeps who stored each file (the local one needs
    /// extended attributes on the root's filesystem).
    fn records_origins(&self) -> bool;
}

/// An upload in progress. Dropping it without `commit` stores nothing.
#[async_trait]
pub(crate) trait UploadSink: Send {
    /// Appends a small piece (a datagram): a backend may gather pieces.
    /// Refuses to go past the announced size.
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError>;

    /// Appends a piece of a stream (a socket read, already large), with no
    /// second copy.
    async fn write_direct(&mut self, data: &[u8]) -> Result<(), StorageError>;

    /// Appends a piece of a stream the caller owns: a backend with a writer
    /// of its own takes it as it is, with no copy.
    async fn write_owned(&mut self, data: bytes::Bytes) -> Result<(), StorageError> {
        self.write_direct(&data).await
    }

    /// Whether the caller should read in large pieces for this upload
    /// (the backend writes them on a thread of its own).
    fn large_reads(&self) -> bool {
        false
    }

    /// Bytes written so far.
    fn written(&self) -> u64;

    /// CRC-32 of the bytes written so far.
    fn crc(&self) -> u32;

    /// Checks the size (and the CRC-32 when given), makes the data durable
    /// and puts it in place. Returns only when an acknowledgement may be sent.
    async fn commit(self: Box<Self>, expected_crc: Option<u32>) -> Result<Stored, StorageError>;
}

/// A stored file opened for reading; it never changes while open.
#[async_trait]
pub(crate) trait Reader: Send {
    /// Its size when opened.
    fn size(&self) -> u64;

    /// Who stored it.
    fn origin(&self) -> Origin;

    /// Reads the next bytes into `buf` (cleared first): `max` of them, fewer
    /// only at the end of the file (callers cut fixed-size chunks from it);
    /// an empty `buf` means the end.
    async fn read_chunk(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<()>;

    /// The CRC-32 recorded when ferry stored the file, if still valid;
    /// `None` means read it.
    async fn cached_crc(&self) -> Option<u32>;

    /// Records `crc`, summed from the whole file as read through this
    /// reader, for [`Reader::cached_crc`] (a backend may do nothing).
    async fn record_crc(&mut self, _crc: u32) {}

    /// The local backend's fast path: the open file, for `sendfile(2)`.
    fn sendfile_source(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// A tree being received; dropping it without `commit` stores nothing.
#[async_trait]
pub(crate) trait TreeSink: Send {
    /// Files received so far.
    fn files(&self) -> usize;

    /// Starts one file of the tree at `path` (relative to the tree), checked
    /// against the tree's limits.
    async fn begin_file(
        &mut self,
        path: &RelPath,
        size: u64,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Upload, StorageError>;

    /// Makes the whole tree durable and puts it in place at once.
    async fn commit(self: Box<Self>) -> Result<Stored, StorageError>;
}

/// A stored tree being sent.
#[async_trait]
pub(crate) trait TreeSource: Send {
    /// Who stored the tree (its files say it again, one by one).
    fn origin(&self) -> Origin;

    /// The next regular file, its path in the tree and the file opened;
    /// `None` at the end.
    async fn next(&mut self) -> Result<Option<(RelPath, Download)>, StorageError>;
}

/// An upload, whatever the backend.
pub(crate) type Upload = Box<dyn UploadSink>;
/// A download, whatever the backend.
pub(crate) type Download = Box<dyn Reader>;
/// A tree upload, whatever the backend.
pub(crate) type TreeUpload = Box<dyn TreeSink>;
/// A tree download, whatever the backend.
pub(crate) type TreeReader = Box<dyn TreeSource>;

/// The storage every service shares. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Storage {
    backend: Arc<dyn Backend>,
}

impl Storage {
    /// The local filesystem under `root`; see [`local::Local::open`].
    pub(crate) fn open_local(root: &Path, on_conflict: OnConflict) -> Result<Storage, OpenError> {
        Ok(Storage {
            backend: Arc::new(local::Local::open(root, on_conflict)?),
        })
    }

    /// The S3 backend (bytes in a bucket, names in etcd); see
    /// [`s3::S3Backend::open`].
    pub(crate) async fn open_s3(
        config: &ferry_config::StorageConfig,
        on_conflict: OnConflict,
    ) -> Result<Storage, S3OpenError> {
        Ok(Storage {
            backend: Arc::new(s3::S3Backend::open(config, on_conflict).await?),
        })
    }

    /// Where the data lives.
    pub(crate) fn root(&self) -> &Path {
        self.backend.location()
    }

    /// Starts background work, once the daemon serves.
    pub(crate) fn start_reaper(&self) {
        self.backend.start_background();
    }

    /// Waits up to `limit` for background work (at a clean stop).
    pub(crate) async fn flush_reaper(&self, limit: Duration) {
        self.backend.flush_background(limit).await;
    }

    /// Starts an upload from `from` of exactly `size` bytes to be stored
    /// as `name`.
    pub(crate) async fn begin_write(
        &self,
        name: SafeName,
        size: u64,
        from: Origin,
    ) -> Result<Upload, StorageError> {
        self.backend
            .begin_write(name, Announced::Exact(size), from)
            .await
    }

    /// Starts an upload whose size is not announced: at most `max` bytes.
    pub(crate) async fn begin_write_capped(
        &self,
        name: SafeName,
        max: u64,
        from: Origin,
    ) -> Result<Upload, StorageError> {
        self.backend
            .begin_write(name, Announced::AtMost(max), from)
            .await
    }

    /// Whether who stored each file is kept; see [`Backend::records_origins`].
    pub(crate) fn records_origins(&self) -> bool {
        self.backend.records_origins()
    }

    /// Opens a stored file for reading.
    pub(crate) async fn open_read(&self, path: &RelPath) -> Result<Download, StorageError> {
        self.backend.open_read(path).await
    }

    /// Opens a stored directory for sending; see [`Backend::read_tree`].
    pub(crate) async fn read_tree(
        &self,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<TreeReader, StorageError> {
        self.backend.read_tree(path, max_entries, max_depth).await
    }

    /// The regular files at the top of a stored directory; see [`Backend::list_files`].
    pub(crate) async fn list_files(
        &self,
        path: &RelPath,
        max_entries: usize,
    ) -> Result<Vec<(SafeName, u64)>, StorageError> {
        self.backend.list_files(path, max_entries).await
    }

    /// Starts receiving a tree; see [`Backend::begin_tree`].
    pub(crate) async fn begin_tree(
        &self,
        name: SafeName,
        max_depth: usize,
        from: Origin,
    ) -> Result<TreeUpload, StorageError> {
        self.backend.begin_tree(name, max_depth, from).await
    }
}
