//! Storage: one root for every service, and the only code that touches it.
//!
//! The interface is small and streaming, so another backend can implement it:
//! [`Storage::begin_write`] → [`Upload::write`]… → [`Upload::commit`] (or
//! drop it), and [`Storage::open_read`] → a file and its size.
//! Directory trees use [`Storage::begin_tree`] the same way.
//!
//! Guarantees:
//! - An upload streams into a temporary file in the root's hidden work area
//!   (`.ferry-work`), is checked (size always, CRC-32 when the protocol has one),
//!   fsynced, then renamed into place and the directory fsynced. No reader sees
//!   a partial file; `commit` returns only once the data is durable, and callers
//!   acknowledge only after it returns.
//! - A failed, cut or abandoned upload removes its temporary file (on drop);
//!   leftovers from a crash are removed by [`Storage::open`].
//! - Names are [`SafeName`]/[`RelPath`] values, built only by the normaliser.
//!   Reads refuse symlinks and anything that is not a regular file or a
//!   directory, at every component, then check the resolved path is inside the
//!   root. Writes never follow a link: they rename into the root without
//!   replacing (`RENAME_NOREPLACE`) unless `on_conflict = "overwrite"`.
//! - Same-name uploads never destroy data (`on_conflict`), and a retried upload
//!   identical to one already stored (same name, size, CRC-32) is acknowledged
//!   with the stored name instead of being stored twice.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use ferry_config::OnConflict;
use ferry_proto::crc::{format_hex, Crc32};
use ferry_proto::names::{RelPath, SafeName};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Name of the hidden work area inside the root (refused as a name by the normaliser).
pub const WORK_DIR: &str = ".ferry-work";

/// The lock file in the root: one daemon per storage root (`flock`).
pub const LOCK_FILE: &str = ".ferry-lock";

/// Prefix of a work area a crash left behind, renamed at start and removed
/// by the reaper once the daemon serves.
const TRASH_PREFIX: &str = ".ferry-trash-";

/// Why the storage root could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another daemon holds the root's lock.
    #[error("it is in use by another ferryd{}; stop that one first, or give this one another storage root", .holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The pid written in the lock file, if readable.
        holder: Option<u32>,
    },
    /// Anything else.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Bytes an upload gathers before handing them to the file (bounds memory per upload).
const WRITE_BATCH: usize = 64 * 1024;

/// Candidates `rename` tries for one upload past where the last one of the
/// same name was stored (a hint kept per name), so a name never runs out and
/// no upload probes thousands of candidates.
const MAX_PROBES: u32 = 1000;

/// Numbers above this are not counted on from (see `highest_number`).
const MAX_NUMBER: u32 = 1_000_000_000;

/// Names whose next free number is remembered, at most (then forgotten and
/// found again by probing).
const MAX_HINTS: usize = 100_000;

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

/// Work for the reaper thread.
enum Reap {
    /// Remove this file or tree.
    Path(PathBuf),
    /// Answer once everything sent before is done.
    Flush(std::sync::mpsc::Sender<()>),
}

struct Inner {
    root: PathBuf,
    work: PathBuf,
    on_conflict: OnConflict,
    counter: AtomicU64,
    /// Per name, the number after the last one `rename` stored it under.
    next_number: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Paths to remove, off the runtime (abandoned uploads and trees).
    reaper: std::sync::mpsc::Sender<Reap>,
    /// Replaced trees, for the reaper once their grace is over (one thread
    /// waits for each in turn: the grace is the same for all).
    later: std::sync::mpsc::Sender<(std::time::Instant, PathBuf)>,
    /// Its receiving end, until [`Storage::start_reaper`] starts the thread.
    reaper_rx: std::sync::Mutex<Option<std::sync::mpsc::Receiver<Reap>>>,
    /// Held for the daemon's life: the root's exclusive lock.
    _lock: std::fs::File,
}

/// The storage root. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Storage {
    inner: Arc<Inner>,
}

impl Storage {
    /// Opens (creating if needed) the root, takes its lock (one daemon per
    /// root: a second one fails here, having touched nothing), checks it is a
    /// writable directory, and sets a fresh work area. What a crash left in
    /// the old one is renamed aside at once and removed by the reaper once
    /// the daemon serves ([`Storage::start_reaper`]), so a restart never waits
    /// on it.
    pub(crate) fn open(root: &Path, on_conflict: OnConflict) -> Result<Storage, OpenError> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        if !std::fs::metadata(&root)?.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", root.display())).into());
        }
        let lock = lock_root(&root)?;
        let work = root.join(WORK_DIR);
        match std::fs::symlink_metadata(&work) {
            Ok(_) => {
                let leftovers = std::fs::read_dir(&work)?.next().is_some();
                if leftovers {
                    let trash = root.join(format!(
                        "{TRASH_PREFIX}{}-{}",
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or_default()
                    ));
                    std::fs::rename(&work, &trash)?;
                    tracing::info!(path = %trash.display(), "set aside the work area of an earlier run; removing it in the background");
                } else {
                    std::fs::remove_dir(&work)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::create_dir(&work)?;
        // Prove the root is writable now rather than at the first upload.
        let probe = work.join("probe");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)?;
        let (reaper, reaper_rx) = std::sync::mpsc::channel();
        let (later, later_rx) = std::sync::mpsc::channel::<(std::time::Instant, PathBuf)>();
        let forward = reaper.clone();
        std::thread::Builder::new()
            .name("ferry-reap-later".into())
            .spawn(move || {
                for (due, path) in later_rx {
                    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                    if forward.send(Reap::Path(path)).is_err() {
                        break;
                    }
                }
            })?;
        for entry in std::fs::read_dir(&root)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TRASH_PREFIX)
            {
                let _ = reaper.send(Reap::Path(entry.path()));
            }
        }
        Ok(Storage {
            inner: Arc::new(Inner {
                root,
                work,
                on_conflict,
                counter: AtomicU64::new(0),
                next_number: std::sync::Mutex::new(std::collections::HashMap::new()),
                reaper,
                later,
                reaper_rx: std::sync::Mutex::new(Some(reaper_rx)),
                _lock: lock,
            }),
        })
    }

    /// Starts the reaper: one thread of its own (never a runtime worker nor
    /// the shared file-I/O pool) removing abandoned uploads, trees and crash
    /// leftovers, however many entries they hold. Called once the daemon
    /// serves; before that, removals queue.
    pub(crate) fn start_reaper(&self) {
        let rx = self
            .inner
            .reaper_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(rx) = rx else { return };
        let spawned = std::thread::Builder::new()
            .name("ferry-reaper".into())
            .spawn(move || {
                for job in rx {
                    let path = match job {
                        Reap::Path(p) => p,
                        Reap::Flush(done) => {
                            let _ = done.send(());
                            continue;
                        }
                    };
                    let r = match std::fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                        Ok(_) => std::fs::remove_file(&path),
                        Err(_) => Ok(()),
                    };
                    if let Err(e) = r {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the reaper thread");
        }
    }

    /// Hands a path to the reaper (never blocks).
    fn reap(&self, path: PathBuf) {
        let _ = self.inner.reaper.send(Reap::Path(path));
    }

    /// Waits up to `limit` for the reaper to finish what it was given (at a
    /// clean stop, so no leftovers wait for the next start).
    pub(crate) async fn flush_reaper(&self, limit: std::time::Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.inner.reaper.send(Reap::Flush(tx)).is_err() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || rx.recv_timeout(limit)).await;
    }

    /// The canonical root.
    pub(crate) fn root(&self) -> &Path {
        &self.inner.root
    }

    fn temp_path(&self, kind: &str) -> PathBuf {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        self.inner
            .work
            .join(format!("{kind}-{}-{n}", std::process::id()))
    }

    /// Starts an upload of `size` bytes to be stored as `name`.
    pub(crate) async fn begin_write(
        &self,
        name: SafeName,
        size: u64,
    ) -> Result<Upload, StorageError> {
        self.begin(name, size, true).await
    }

    /// Starts an upload whose size is not announced (the handout's signal
    /// framing ends a file by a pause and `DON`): at most `max` bytes.
    pub(crate) async fn begin_write_capped(
        &self,
        name: SafeName,
        max: u64,
    ) -> Result<Upload, StorageError> {
        self.begin(name, max, false).await
    }

    async fn begin(&self, name: SafeName, size: u64, exact: bool) -> Result<Upload, StorageError> {
        let temp = self.temp_path("upload");
        let file = File::create(&temp).await?;
        Ok(Upload {
            storage: self.clone(),
            dest: Dest::Root(name),
            temp: Some(temp),
            file: Some(file),
            pending: BytesMut::new(),
            expected: size,
            exact,
            written: 0,
            crc: Crc32::new(),
            hash: Some(blake3::Hasher::new()),
        })
    }

    /// Opens a stored file for reading.
    pub(crate) async fn open_read(&self, path: &RelPath) -> Result<Download, StorageError> {
        let full = self.resolve(path, Want::File).await?;
        let file = open_nofollow(&full)
            .await
            .map_err(|e| map_open_error(e, path))?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(StorageError::NotRegular(path.to_string()));
        }
        Ok(Download {
            file,
            size: meta.len(),
        })
    }

    /// Opens a stored directory for sending, streamed: [`TreeReader::next`]
    /// gives its regular files one by one in path order, reading one
    /// directory at a time (memory bounded by the depth, not the tree), and
    /// every entry is opened relative to the directories opened before it,
    /// so a tree replaced meanwhile (`on_conflict = "overwrite"`) is still
    /// sent whole in the version that was there when it started.
    pub(crate) async fn read_tree(
        &self,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<TreeReader, StorageError> {
        let full = self.resolve(path, Want::Dir).await?;
        let label = path.to_string();
        let root = tokio::task::spawn_blocking(move || {
            let fd = open_dir(&full)?;
            let names = list_dir(&fd, &label)?;
            Ok::<_, StorageError>(DirLevel {
                fd,
                prefix: None,
                names: names.into_iter(),
            })
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        Ok(TreeReader {
            label: path.to_string(),
            stack: vec![root],
            max_entries,
            max_depth,
            entries: 0,
        })
    }

    /// The regular files directly inside a stored directory (no recursion),
    /// in name order: what a handout `RAR` client, which writes every file
    /// flat into one folder, can receive. At most `max_entries`.
    pub(crate) async fn list_files(
        &self,
        path: &RelPath,
        max_entries: usize,
    ) -> Result<Vec<(SafeName, u64)>, StorageError> {
        let full = self.resolve(path, Want::Dir).await?;
        let label = path.to_string();
        tokio::task::spawn_blocking(move || list_top(&full, max_entries, &label))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Starts receiving a directory tree to be stored as `name`, at most
    /// `max_depth` components deep.
    pub(crate) async fn begin_tree(
        &self,
        name: SafeName,
        max_depth: usize,
    ) -> Result<TreeUpload, StorageError> {
        let dir = self.temp_path("tree");
        tokio::fs::create_dir(&dir).await?;
        Ok(TreeUpload {
            storage: self.clone(),
            name,
            dir: Some(dir),
            files_seen: std::collections::HashSet::new(),
            dirs_seen: std::collections::HashSet::new(),
            max_depth,
            files: 0,
            bytes: 0,
        })
    }

    /// Checks every component below the root: each directory must be a real
    /// directory (not a symlink), the last must be what is wanted. Then checks
    /// the resolved path is still inside the root.
    async fn resolve(&self, path: &RelPath, want: Want) -> Result<PathBuf, StorageError> {
        let mut full = self.inner.root.clone();
        let parts = path.components();
        for (i, part) in parts.iter().enumerate() {
            full.push(part.as_str());
            let meta = match tokio::fs::symlink_metadata(&full).await {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(path.to_string()))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(StorageError::NotFound(path.to_string()))
                }
                Err(e) => return Err(e.into()),
            };
            let ft = meta.file_type();
            let last = i + 1 == parts.len();
            if ft.is_symlink() || !(ft.is_dir() || ft.is_file()) {
                return Err(StorageError::NotRegular(path.to_string()));
            }
            if !last && !ft.is_dir() {
                return Err(StorageError::NotFound(path.to_string()));
            }
            if last {
                match want {
                    Want::File if ft.is_dir() => {
                        return Err(StorageError::IsDirectory(path.to_string()))
                    }
                    Want::Dir if !ft.is_dir() => {
                        return Err(StorageError::NotDirectory(path.to_string()))
                    }
                    _ => {}
                }
            }
        }
        let real = tokio::fs::canonicalize(&full).await?;
        if !real.starts_with(&self.inner.root) {
            return Err(StorageError::NotRegular(path.to_string()));
        }
        Ok(real)
    }

    /// Records `set` as the next number to try for `name`; or, with `None`,
    /// gives it (found by one pass over the root the first time since start,
    /// outside the lock).
    fn number_hint(&self, name: &SafeName, set: Option<u32>) -> u32 {
        let lock = || {
            self.inner
                .next_number
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if let Some(n) = set {
            let mut h = lock();
            if h.len() >= MAX_HINTS {
                h.clear();
            }
            h.insert(name.as_str().to_owned(), n);
            return n;
        }
        if let Some(&n) = lock().get(name.as_str()) {
            return n;
        }
        let n = highest_number(&self.inner.root, name.as_str()).map_or(1, |k| k + 1);
        lock().insert(name.as_str().to_owned(), n);
        n
    }

    /// Moves a finished temporary file or tree into the root under `name`,
    /// following `on_conflict`. `same` says whether an existing entry is
    /// identical to the new one (a retried upload), in which case the new one
    /// is dropped and the existing name returned.
    fn place(
        &self,
        temp: &Path,
        name: &SafeName,
        same: &dyn Fn(&Path) -> bool,
    ) -> Result<(String, bool), StorageError> {
        let root = &self.inner.root;
        let hint = |n: Option<u32>| self.number_hint(name, n);
        let mut n = 0u32;
        let mut probes = 0u32;
        loop {
            let candidate = if n == 0 {
                name.as_str().to_owned()
            } else {
                numbered(name.as_str(), n)
            };
            let target = root.join(&candidate);
            if same(&target) {
                return Ok((candidate, true));
            }
            match self.inner.on_conflict {
                OnConflict::Overwrite => {
                    if let Some(old) = replace(temp, &target, &self.inner.work)? {
                        let due = std::time::Instant::now() + REPLACED_TREE_GRACE;
                        let _ = self.inner.later.send((due, old));
                    }
                    return Ok((candidate, false));
                }
                _ => match rename_noreplace(temp, &target) {
                    Ok(()) => {
                        if n > 0 {
                            hint(Some(n + 1));
                        }
                        return Ok((candidate, false));
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Another upload took the name since the check above;
                        // if it stored the same bytes, this one is a copy.
                        if same(&target) {
                            return Ok((candidate, true));
                        }
                        if self.inner.on_conflict == OnConflict::Reject {
                            return Err(StorageError::Exists(candidate));
                        }
                        // After the name itself, go straight to the number the
                        // last upload of this name was stored under (a retry
                        // of it is found there), then on.
                        n = if n == 0 {
                            hint(None).saturating_sub(1).max(1)
                        } else {
                            n.saturating_add(1)
                        };
                        probes += 1;
                        if probes > MAX_PROBES || n >= MAX_NUMBER {
                            return Err(StorageError::Exists(candidate));
                        }
                    }
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Want {
    File,
    Dir,
}

/// `report.pdf` → `report (3).pdf`; `archive.tar.gz` → `archive (3).tar.gz`;
/// `.bashrc` → `.bashrc (3)`; `Makefile` → `Makefile (3)`.
/// The stem is shortened if needed so the result still fits in 255 bytes.
/// The highest `k` of the entries in `dir` named [`numbered`]`(name, k)`.
fn highest_number(dir: &Path, name: &str) -> Option<u32> {
    let stem_end = match name.find('.') {
        Some(0) | None => name.len(),
        Some(i) => i,
    };
    let (stem, ext) = name.split_at(stem_end);
    let head = format!("{stem} (");
    let tail = format!("){ext}");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let entry = e.file_name();
            let entry = entry.to_str()?;
            let k = entry
                .strip_prefix(head.as_str())?
                .strip_suffix(tail.as_str())?;
            k.parse::<u32>()
                .ok()
                .filter(|&k| numbered(name, k) == entry)
        })
        .max()
}

pub(crate) fn numbered(name: &str, n: u32) -> String {
    let stem_end = match name.find('.') {
        Some(0) | None => name.len(),
        Some(i) => i,
    };
    let (stem, ext) = name.split_at(stem_end);
    let suffix = format!(" ({n})");
    let room = ferry_proto::names::MAX_COMPONENT_LEN.saturating_sub(suffix.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = format!("{}{suffix}{ext}", &stem[..cut]);
    // An extension alone too long to keep: shorten the whole name instead.
    if out.len() > ferry_proto::names::MAX_COMPONENT_LEN {
        let mut cut = ferry_proto::names::MAX_COMPONENT_LEN - suffix.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}{suffix}", &name[..cut]);
    }
    out
}

fn map_open_error(e: io::Error, path: &RelPath) -> StorageError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => StorageError::NotRegular(path.to_string()),
        Some(libc::ENOENT) => StorageError::NotFound(path.to_string()),
        _ => StorageError::Io(e),
    }
}

async fn open_nofollow(path: &Path) -> io::Result<File> {
    let mut opts = tokio::fs::OpenOptions::new();
    opts.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    opts.open(path).await
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `rename` that fails with `AlreadyExists` instead of replacing (Linux `renameat2`).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(from, to, libc::RENAME_NOREPLACE)
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (cpath(from)?, cpath(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Atomically puts `temp` at `target`, whatever is there: a file is replaced
/// by `rename`; a directory is swapped in with `RENAME_EXCHANGE` and the old
/// one removed from the work area.
/// How long a tree replaced by `overwrite` stays (in the work area) before
/// the reaper removes it, so a `RAR` still sending it (from its directory
/// handles) finishes the old version instead of failing part-way.
const REPLACED_TREE_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// Puts `temp` at `target`, replacing what is there; a replaced tree is
/// returned (now inside the work area) for the reaper, later.
fn replace(temp: &Path, target: &Path, work: &Path) -> io::Result<Option<PathBuf>> {
    let temp_is_dir = std::fs::symlink_metadata(temp)?.is_dir();
    let existing = std::fs::symlink_metadata(target).ok();
    if let Some(m) = &existing {
        if m.is_dir() != temp_is_dir {
            // Overwriting means a file for a file or a tree for a tree; a
            // file upload never deletes a directory tree, nor the reverse.
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file and a directory cannot replace each other",
            ));
        }
    }
    match existing {
        Some(m) if m.is_dir() || temp_is_dir => {
            renameat2(temp, target, libc::RENAME_EXCHANGE)?;
            // `temp` now holds the old entry, inside the work area.
            let old = temp;
            debug_assert!(old.starts_with(work));
            if m.is_dir() {
                Ok(Some(old.to_owned()))
            } else {
                std::fs::remove_file(old).map(|()| None)
            }
        }
        _ => std::fs::rename(temp, target).map(|()| None),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Where a finished upload goes.
enum Dest {
    /// Into the root under this name.
    Root(SafeName),
    /// Into a tree being received (already in place in its temporary dir).
    InTree,
}

/// An upload in progress. Dropping it without `commit` removes the temporary file.
pub(crate) struct Upload {
    storage: Storage,
    dest: Dest,
    temp: Option<PathBuf>,
    file: Option<File>,
    pending: BytesMut,
    /// The announced size, or the cap when `exact` is false.
    expected: u64,
    exact: bool,
    written: u64,
    crc: Crc32,
    /// BLAKE3 of the data, for uploads into the root: what makes a retry
    /// "identical" (CRC-32 is trivially forged). Trees are never deduplicated.
    hash: Option<blake3::Hasher>,
}

impl Upload {
    /// Appends a small piece (a datagram): pieces are gathered into 64 KiB
    /// writes. Refuses to go past the announced size.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.account(data)?;
        self.pending.extend_from_slice(data);
        if self.pending.len() >= WRITE_BATCH {
            let batch = self.pending.split();
            self.write_out(&batch).await?;
        }
        Ok(())
    }

    /// Appends a piece of a stream (a socket read, already large) straight to
    /// the file, so a TCP upload holds no second copy of its data.
    pub(crate) async fn write_direct(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.account(data)?;
        if !self.pending.is_empty() {
            let batch = self.pending.split();
            self.write_out(&batch).await?;
        }
        self.write_out(data).await
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
        if let Some(h) = self.hash.as_mut() {
            h.update(data);
        }
        self.written = total;
        Ok(())
    }

    async fn write_out(&mut self, data: &[u8]) -> Result<(), StorageError> {
        match self.file.as_mut() {
            Some(f) => Ok(f.write_all(data).await?),
            None => Err(io::Error::other("upload already finished").into()),
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// CRC-32 of the bytes written so far.
    pub(crate) fn crc(&self) -> u32 {
        self.crc.value()
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
            self.write_out(&batch).await?;
        }
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        file.flush().await?;
        let digest = self.hash.take().map(|h| *h.finalize().as_bytes());
        if let Some(digest) = digest {
            // Kept beside the data, durable with it (the sync below).
            set_digest(&file, &digest).await;
        }
        set_crc(&file, self.crc.value()).await;
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
        let storage = self.storage.clone();
        let (stored, dedup) = tokio::task::spawn_blocking(move || {
            let same = |existing: &Path| digest.is_some_and(|d| same_file(existing, size, &d));
            let placed = storage.place(&temp, &name, &same)?;
            if placed.1 {
                std::fs::remove_file(&temp)?;
            } else {
                fsync_dir(&storage.inner.root)?;
            }
            Ok::<_, StorageError>(placed)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        self.temp = None;
        Ok(Stored {
            name: stored,
            size,
            crc,
            deduplicated: dedup,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            // The reaper unlinks it, off the runtime.
            self.storage.reap(temp);
        }
    }
}

/// The extended attribute holding a stored file's BLAKE3 digest.
const DIGEST_XATTR: &std::ffi::CStr = c"user.ferry.blake3";

/// Records the digest on the file (best effort: a file system without user
/// extended attributes just never deduplicates).
async fn set_digest(file: &File, digest: &[u8; 32]) {
    use std::os::fd::AsRawFd;
    let Ok(meta) = file.metadata().await else {
        return;
    };
    let v = digest_record(digest, &meta);
    let fd = file.as_raw_fd();
    // SAFETY: a valid open fd, a NUL-terminated name and a buffer of that length.
    let r = unsafe { libc::fsetxattr(fd, DIGEST_XATTR.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "no digest attribute: retries of this file will be stored again");
    }
}

/// The extended attribute caching a stored file's CRC-32, with the size and
/// modification time it was computed for (so a file edited in place by an
/// admin is read again): crc u32, size u64, mtime seconds i64, nanoseconds
/// u32, big-endian, 24 bytes.
const CRC_XATTR: &std::ffi::CStr = c"user.ferry.crc32";

/// The digest attribute: BLAKE3 (32 bytes), then the size and modification
/// time it was computed for, as in [`crc_record`]: a file an admin edited in
/// place is never taken for a copy of what was uploaded.
fn digest_record(digest: &[u8; 32], meta: &std::fs::Metadata) -> [u8; 52] {
    let mut v = [0u8; 52];
    v[..32].copy_from_slice(digest);
    v[32..].copy_from_slice(&crc_record(0, meta)[4..]);
    v
}

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
    use std::os::fd::AsRawFd;
    let Ok(meta) = file.metadata().await else {
        return;
    };
    let v = crc_record(crc, &meta);
    // SAFETY: a valid open fd, a NUL-terminated name and a 24-byte buffer.
    unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            CRC_XATTR.as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        );
    }
}

impl Download {
    /// The CRC-32 recorded when ferry stored the file, if it is still the
    /// same file (size and modification time); `None` means read it.
    pub(crate) async fn cached_crc(&self) -> Option<u32> {
        use std::os::fd::AsRawFd;
        let meta = self.file.metadata().await.ok()?;
        let mut v = [0u8; 24];
        // SAFETY: a valid open fd, a NUL-terminated name and a 24-byte buffer.
        let n = unsafe {
            libc::fgetxattr(
                self.file.as_raw_fd(),
                CRC_XATTR.as_ptr(),
                v.as_mut_ptr().cast(),
                v.len(),
            )
        };
        let crc = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        (n == 24 && v == crc_record(crc, &meta)).then_some(crc)
    }
}

/// True when `path` is a regular file (not a link) of `size` bytes whose
/// recorded BLAKE3 digest is `digest`: identical bytes, with no read of the
/// file. A file without a digest (stored by an admin, or on a file system
/// without user attributes) is never taken for a copy.
fn same_file(path: &Path, size: u64, digest: &[u8; 32]) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != size {
        return false;
    }
    let Ok(c) = cpath(path) else {
        return false;
    };
    let mut stored = [0u8; 52];
    // SAFETY: NUL-terminated path and name, a buffer of that length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            DIGEST_XATTR.as_ptr(),
            stored.as_mut_ptr().cast(),
            stored.len(),
        )
    };
    n == 52 && stored == digest_record(digest, &meta)
}

/// A stored file opened for reading.
pub(crate) struct Download {
    /// The open file, at offset 0.
    pub file: File,
    /// Its size when opened (uploads replace files by rename, so an open file never changes).
    pub size: u64,
}

impl Download {
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

/// A directory tree being received; dropping it without `commit` removes it.
pub(crate) struct TreeUpload {
    storage: Storage,
    name: SafeName,
    dir: Option<PathBuf>,
    /// Every file's path, slash-joined.
    files_seen: std::collections::HashSet<String>,
    /// Every directory the files need, slash-joined: they count as entries.
    dirs_seen: std::collections::HashSet<String>,
    max_depth: usize,
    files: usize,
    bytes: u64,
}

impl TreeUpload {
    /// Files received so far.
    pub(crate) fn files(&self) -> usize {
        self.files
    }

    /// Checks one entry against the tree's limits and paths and records it;
    /// the tree's bytes with it.
    fn admit_entry(
        &mut self,
        path: &RelPath,
        size: u64,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<u64, StorageError> {
        let parts = path.components();
        if parts.len() > self.max_depth {
            // The path itself may be 1 KiB of `d/d/…`: the reason names its start.
            let shown: String = path.to_slash_string().chars().take(40).collect();
            return Err(StorageError::BadTree(format!(
                "an entry is {} levels deep, the limit is {} ({shown}…)",
                parts.len(),
                self.max_depth
            )));
        }
        let bytes = self
            .bytes
            .checked_add(size)
            .filter(|&b| b <= max_bytes)
            .ok_or_else(|| {
                StorageError::BadTree(format!("the tree is over the limit of {max_bytes} bytes"))
            })?;
        // Directories count as entries, and a path may not repeat nor be both
        // a file and a directory. One pass over the prefixes of one joined
        // string: linear in the path's length (its depth is capped above).
        let joined = path.to_slash_string();
        let mut new_dirs = Vec::new();
        for (at, _) in joined.match_indices('/') {
            let prefix = &joined[..at];
            if self.files_seen.contains(prefix) {
                return Err(StorageError::BadTree(format!(
                    "{prefix} is both a file and a directory"
                )));
            }
            if !self.dirs_seen.contains(prefix) {
                new_dirs.push(prefix);
            }
        }
        if self.dirs_seen.contains(&joined) {
            return Err(StorageError::BadTree(format!(
                "{path} is both a file and a directory"
            )));
        }
        if self.files_seen.contains(&joined) {
            return Err(StorageError::BadTree(format!("{path} appears twice")));
        }
        let entries = self.files + self.dirs_seen.len() + new_dirs.len() + 1;
        if entries > max_entries {
            return Err(StorageError::BadTree(format!(
                "more than {max_entries} entries (files and directories) in one tree"
            )));
        }
        let new_dirs: Vec<String> = new_dirs.into_iter().map(str::to_owned).collect();
        self.dirs_seen.extend(new_dirs);
        self.files_seen.insert(joined);
        Ok(bytes)
    }

    /// Starts one file of the tree at `path` (relative to the tree).
    pub(crate) async fn begin_file(
        &mut self,
        path: &RelPath,
        size: u64,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Upload, StorageError> {
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| io::Error::other("tree already finished"))?;
        let bytes = self.admit_entry(path, size, max_entries, max_bytes)?;
        let full = dir.join(path.to_path_buf());
        if let Some(parent) = full.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
                        StorageError::BadTree(format!("{path} is below a file"))
                    }
                    _ => StorageError::Io(e),
                })?;
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&full)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists | io::ErrorKind::IsADirectory => {
                    StorageError::BadTree(format!("{path} is both a file and a directory"))
                }
                _ => StorageError::Io(e),
            })?;
        self.files += 1;
        self.bytes = bytes;
        Ok(Upload {
            storage: self.storage.clone(),
            dest: Dest::InTree,
            temp: Some(full),
            file: Some(file),
            pending: BytesMut::new(),
            expected: size,
            exact: true,
            written: 0,
            crc: Crc32::new(),
            hash: None,
        })
    }

    /// Makes the whole tree durable and moves it into the root at once.
    pub(crate) async fn commit(mut self) -> Result<Stored, StorageError> {
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| io::Error::other("tree already finished"))?;
        let storage = self.storage.clone();
        let name = self.name.clone();
        let bytes = self.bytes;
        let stored = tokio::task::spawn_blocking(move || {
            fsync_dirs(&dir)?;
            let (stored, _) = storage.place(&dir, &name, &|_| false)?;
            fsync_dir(&storage.inner.root)?;
            Ok::<_, StorageError>(stored)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        self.dir = None;
        Ok(Stored {
            name: stored,
            size: bytes,
            crc: 0,
            deduplicated: false,
        })
    }
}

impl Drop for TreeUpload {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // However big, removed by the reaper's own thread.
            self.storage.reap(dir);
        }
    }
}

fn fsync_dirs(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_dirs(&entry.path())?;
        }
    }
    fsync_dir(dir)
}

/// A stored directory being sent; see [`Storage::read_tree`].
pub(crate) struct TreeReader {
    label: String,
    stack: Vec<DirLevel>,
    max_entries: usize,
    max_depth: usize,
    entries: usize,
}

struct DirLevel {
    fd: std::os::fd::OwnedFd,
    prefix: Option<RelPath>,
    names: std::vec::IntoIter<(SafeName, bool)>,
}

impl TreeReader {
    /// The next regular file (its path in the tree, opened), or `None` at
    /// the end. More than `max_entries` entries (files and directories) is
    /// an error; directories deeper than `max_depth` are skipped.
    pub(crate) async fn next(&mut self) -> Result<Option<(RelPath, Download)>, StorageError> {
        loop {
            let depth = self.stack.len();
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some((name, is_dir)) = top.names.next() else {
                self.stack.pop();
                continue;
            };
            self.entries += 1;
            if self.entries > self.max_entries {
                return Err(StorageError::BadTree(format!(
                    "{} has more than {} entries (files and directories)",
                    self.label, self.max_entries
                )));
            }
            let rel = match &top.prefix {
                Some(p) => p.join(name.clone()),
                None => RelPath::from_name(name.clone()),
            };
            let dir = top.fd.try_clone()?;
            let label = self.label.clone();
            if is_dir {
                if depth >= self.max_depth {
                    tracing::warn!(tree = label, path = %rel, "skipping a directory deeper than signal.max_tree_depth");
                    continue;
                }
                let level = tokio::task::spawn_blocking(move || {
                    let fd = open_at(&dir, name.as_str(), libc::O_DIRECTORY)?;
                    let names = list_dir(&fd, &label)?;
                    Ok::<_, StorageError>(DirLevel {
                        fd,
                        prefix: Some(rel),
                        names: names.into_iter(),
                    })
                })
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
                self.stack.push(level);
                continue;
            }
            let file = tokio::task::spawn_blocking(move || {
                // O_NONBLOCK: a FIFO put in the tree meanwhile cannot hang the open.
                let fd = open_at(&dir, name.as_str(), libc::O_NONBLOCK)?;
                let file = std::fs::File::from(fd);
                let meta = file.metadata()?;
                Ok::<_, io::Error>(meta.is_file().then_some((file, meta.len())))
            })
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
            match file {
                Some((file, size)) => {
                    return Ok(Some((
                        rel,
                        Download {
                            file: File::from_std(file),
                            size,
                        },
                    )))
                }
                None => continue,
            }
        }
    }
}

fn open_dir(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path; the fd returned is ours to own.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` in the directory `dir`, never following a link.
fn open_at(
    dir: &std::os::fd::OwnedFd,
    name: &str,
    flags: libc::c_int,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The entries of an open directory, sorted: (name, is a directory). Links,
/// special files and names the normaliser refuses are skipped (and logged).
fn list_dir(dir: &std::os::fd::OwnedFd, label: &str) -> io::Result<Vec<(SafeName, bool)>> {
    use std::os::fd::AsRawFd;
    // The directory the fd holds, whatever it is called now.
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
        let entry = entry?;
        let ft = entry.file_type()?; // the entry itself, not followed
        let raw = entry.file_name();
        let Some(name) = raw.to_str().and_then(|n| SafeName::component(n).ok()) else {
            tracing::warn!(tree = label, name = ?raw, "skipping an entry whose name cannot be sent");
            continue;
        };
        if ft.is_dir() || ft.is_file() {
            out.push((name, ft.is_dir()));
        } else {
            tracing::warn!(tree = label, name = %name, "skipping a symlink or special file");
        }
    }
    out.sort();
    Ok(out)
}

/// Takes the root's exclusive lock (`flock`, released when the process
/// ends, however it ends) and writes this pid into the lock file.
fn lock_root(root: &Path) -> Result<std::fs::File, OpenError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(root.join(LOCK_FILE))?;
    // SAFETY: a valid open fd for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(OpenError::Locked {
                holder: text.trim().parse().ok(),
            });
        }
        return Err(e.into());
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(file)
}

fn list_top(
    dir: &Path,
    max_entries: usize,
    label: &str,
) -> Result<Vec<(SafeName, u64)>, StorageError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?; // does not follow links
        if !meta.is_file() {
            continue;
        }
        let raw = entry.file_name();
        let Some(name) = raw.to_str().and_then(|n| SafeName::component(n).ok()) else {
            tracing::warn!(tree = label, name = ?raw, "skipping an entry whose name cannot be sent");
            continue;
        };
        if out.len() >= max_entries {
            return Err(StorageError::BadTree(format!(
                "{label} has more than {max_entries} files"
            )));
        }
        out.push((name, meta.len()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SafeName {
        SafeName::component(s).unwrap()
    }

    async fn put(storage: &Storage, n: &str, data: &[u8]) -> Result<Stored, StorageError> {
        let mut up = storage.begin_write(name(n), data.len() as u64).await?;
        up.write(data).await?;
        up.commit(Some(ferry_proto::crc::checksum(data))).await
    }

    fn visible(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".ferry"))
            .collect();
        v.sort();
        v
    }

    /// Waits (bounded) until the reaper has emptied the work area and
    /// removed every trash directory.
    async fn reaped(root: &Path) {
        for _ in 0..500 {
            let work_empty = std::fs::read_dir(root.join(WORK_DIR))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true);
            let trash = std::fs::read_dir(root)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(TRASH_PREFIX));
            if work_empty && !trash {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the reaper did not finish");
    }

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("report.pdf", 1), "report (1).pdf");
        assert_eq!(numbered("a.tar.gz", 2), "a (2).tar.gz");
        assert_eq!(numbered(".bashrc", 3), ".bashrc (3)");
        assert_eq!(numbered("Makefile", 4), "Makefile (4)");
        let long = format!("{}.pdf", "é".repeat(125));
        let n = numbered(&long, 12);
        assert!(n.len() <= 255 && n.ends_with(" (12).pdf"), "{n}");
        let n = numbered(&format!("a.{}", "x".repeat(253)), 3);
        assert!(n.len() <= 255 && n.ends_with(" (3)"), "{n}");
    }

    #[tokio::test]
    async fn rename_policy_keeps_both_and_dedups_retries() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        assert_eq!(put(&s, "r.pdf", b"one").await.unwrap().name, "r.pdf");
        assert_eq!(put(&s, "r.pdf", b"two").await.unwrap().name, "r (1).pdf");
        let again = put(&s, "r.pdf", b"two").await.unwrap();
        assert_eq!(
            (again.name.as_str(), again.deduplicated),
            ("r (1).pdf", true)
        );
        assert_eq!(visible(dir.path()), ["r (1).pdf", "r.pdf"]);
        assert_eq!(std::fs::read(dir.path().join("r.pdf")).unwrap(), b"one");
        assert!(std::fs::read_dir(dir.path().join(WORK_DIR))
            .unwrap()
            .next()
            .is_none());
    }

    #[tokio::test]
    async fn identical_uploads_committing_at_once_store_one_copy() {
        // Regression: the identity check ran only before the rename, so two
        // identical uploads racing for a name could both be stored.
        for _ in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
            let data = vec![5u8; 100_000];
            let (a, b) = tokio::join!(put(&s, "same.bin", &data), put(&s, "same.bin", &data));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!((a.name.as_str(), b.name.as_str()), ("same.bin", "same.bin"));
            assert!(a.deduplicated != b.deduplicated);
            assert_eq!(visible(dir.path()), ["same.bin"]);
        }
    }

    #[tokio::test]
    async fn reject_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), OnConflict::Reject).unwrap();
        put(&s, "a", b"1").await.unwrap();
        assert!(matches!(
            put(&s, "a", b"2").await,
            Err(StorageError::Exists(_))
        ));
        assert!(put(&s, "a", b"1").await.unwrap().deduplicated);
        drop(s);
        let s = Storage::open(dir.path(), OnConflict::Overwrite).unwrap();
        put(&s, "a", b"3").await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"3");
        // Overwrite never swaps a file for a directory tree.
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        std::fs::write(dir.path().join("tree/keep"), b"k").unwrap();
        assert!(put(&s, "tree", b"file").await.is_err());
        assert_eq!(std::fs::read(dir.path().join("tree/keep")).unwrap(), b"k");
    }

    #[tokio::test]
    async fn failed_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        s.start_reaper();
        let mut up = s.begin_write(name("x"), 4).await.unwrap();
        up.write(b"ab").await.unwrap();
        assert!(matches!(
            up.write(b"cde").await,
            Err(StorageError::SizeMismatch { .. })
        ));
        drop(up);
        assert!(put(&s, "y", b"").await.is_ok());
        let mut up = s.begin_write(name("z"), 2).await.unwrap();
        up.write(b"ab").await.unwrap();
        assert!(matches!(
            up.commit(Some(7)).await,
            Err(StorageError::ChecksumMismatch { .. })
        ));
        assert_eq!(visible(dir.path()), ["y"]);
        reaped(dir.path()).await;
    }

    #[tokio::test]
    async fn leftovers_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(WORK_DIR).join("tree-1/a")).unwrap();
        std::fs::write(dir.path().join(WORK_DIR).join("upload-1-1"), b"partial").unwrap();
        let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        // Set aside at once (the work area is fresh), removed once the reaper runs.
        assert!(std::fs::read_dir(dir.path().join(WORK_DIR))
            .unwrap()
            .next()
            .is_none());
        assert_eq!(visible(dir.path()), Vec::<String>::new());
        s.start_reaper();
        reaped(dir.path()).await;
    }

    #[tokio::test]
    async fn numbered_names_never_run_out_and_need_no_probing() {
        let dir = tempfile::tempdir().unwrap();
        // 5,000 numbered copies an earlier run (or a squatter) left behind.
        std::fs::write(dir.path().join("lab1.py"), b"0").unwrap();
        for k in 1..=5000 {
            std::fs::write(dir.path().join(numbered("lab1.py", k)), b"").unwrap();
        }
        let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        assert_eq!(
            put(&s, "lab1.py", b"new").await.unwrap().name,
            "lab1 (5001).py"
        );
        assert_eq!(
            put(&s, "lab1.py", b"newer").await.unwrap().name,
            "lab1 (5002).py"
        );
        // A retry of the last one is still found identical.
        let again = put(&s, "lab1.py", b"newer").await.unwrap();
        assert_eq!(
            (again.name.as_str(), again.deduplicated),
            ("lab1 (5002).py", true)
        );
    }

    #[tokio::test]
    async fn one_storage_per_root() {
        let dir = tempfile::tempdir().unwrap();
        let first = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        let upload = first.begin_write(name("a"), 1).await.unwrap();
        match Storage::open(dir.path(), OnConflict::Rename) {
            Err(OpenError::Locked { holder }) => assert_eq!(holder, Some(std::process::id())),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second storage on the same root opened"),
        }
        // The second open touched nothing: the first's upload is intact.
        assert_eq!(
            std::fs::read_dir(dir.path().join(WORK_DIR))
                .unwrap()
                .count(),
            1
        );
        drop(upload);
        drop(first);
        Storage::open(dir.path(), OnConflict::Rename).expect("free once the first is gone");
    }

    #[tokio::test]
    async fn reads_refuse_symlinks_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        let p = |s: &str| RelPath::parse(s, 1024).unwrap();
        assert!(matches!(
            s.open_read(&p("link")).await,
            Err(StorageError::NotRegular(_))
        ));
        assert!(matches!(
            s.open_read(&p("dirlink/secret")).await,
            Err(StorageError::NotRegular(_))
        ));
        assert!(matches!(
            s.read_tree(&p("dirlink"), 10, 32).await,
            Err(StorageError::NotRegular(_))
        ));
        assert!(matches!(
            s.open_read(&p("missing")).await,
            Err(StorageError::NotFound(_))
        ));
        put(&s, "f", b"data").await.unwrap();
        assert!(matches!(
            s.open_read(&p("f/x")).await,
            Err(StorageError::NotFound(_))
        ));
        let mut d = s.open_read(&p("f")).await.unwrap();
        assert_eq!(d.size, 4);
        let mut buf = BytesMut::new();
        d.read_chunk(&mut buf, 3).await.unwrap();
        assert_eq!(&buf[..], b"dat");
    }

    #[tokio::test]
    async fn trees_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), OnConflict::Rename).unwrap();
        let p = |s: &str| RelPath::parse(s, 1024).unwrap();
        let mut t = s.begin_tree(name("proj"), 32).await.unwrap();
        for (path, data) in [
            ("a.txt", &b"A"[..]),
            ("src/main.rs", b"fn main(){}"),
            ("src/x/y", b""),
        ] {
            let mut up = t
                .begin_file(&p(path), data.len() as u64, 10, 1000)
                .await
                .unwrap();
            up.write(data).await.unwrap();
            up.commit(None).await.unwrap();
        }
        assert!(matches!(
            t.begin_file(&p("a.txt"), 0, 10, 1000).await,
            Err(StorageError::BadTree(_))
        ));
        assert!(matches!(
            t.begin_file(&p("a.txt/z"), 0, 10, 1000).await,
            Err(StorageError::BadTree(_))
        ));
        assert_eq!(visible(dir.path()), Vec::<String>::new());
        let stored = t.commit().await.unwrap();
        assert_eq!(stored.name, "proj");
        let mut reader = s.read_tree(&p("proj"), 10, 32).await.unwrap();
        let mut names = Vec::new();
        while let Some((rel, _)) = reader.next().await.unwrap() {
            names.push(rel.to_string());
        }
        assert_eq!(names, ["a.txt", "src/main.rs", "src/x/y"]);
        // 3 files and 2 directories: 5 entries.
        let mut reader = s.read_tree(&p("proj"), 4, 32).await.unwrap();
        let mut over = None;
        for _ in 0..6 {
            if let Err(e) = reader.next().await {
                over = Some(e);
                break;
            }
        }
        assert!(matches!(over, Some(StorageError::BadTree(_))));
        // A second tree of the same name is renamed; an abandoned one vanishes.
        let t = s.begin_tree(name("proj"), 32).await.unwrap();
        assert_eq!(t.commit().await.unwrap().name, "proj (1)");
        let mut t = s.begin_tree(name("gone"), 32).await.unwrap();
        t.begin_file(&p("f"), 1, 10, 1000).await.unwrap();
        drop(t);
        assert_eq!(visible(dir.path()), ["proj", "proj (1)"]);
        s.start_reaper();
        reaped(dir.path()).await;
    }
}
