//! The local filesystem backend: one root directory.
//!
//! - An upload streams into a temporary file in the root's hidden work area
//!   (`.ferry-work`), is checked (size always, CRC-32 when the protocol has
//!   one), fsynced, then renamed into place and the directory fsynced.
//! - A failed, cut or abandoned upload removes its temporary file (on drop,
//!   through the reaper thread); leftovers from a crash are set aside at
//!   [`Local::open`] and removed once the daemon serves.
//! - Reads refuse symlinks and anything that is not a regular file or a
//!   directory, at every component, then check the resolved path is inside
//!   the root. Writes never follow a link: they rename into the root without
//!   replacing (`RENAME_NOREPLACE`) unless `on_conflict = "overwrite"`.
//! - One daemon per root: an exclusive `flock` on `.ferry-lock`.

mod naming;
mod origin;
mod sys;
pub(super) use sys::lock_root;
mod tree;
mod upload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use ferry_config::OnConflict;
use ferry_proto::crc::Crc32;
use ferry_proto::names::{RelPath, SafeName};
use tokio::fs::File;

use self::sys::{list_dir, open_dir, open_nofollow};
use self::tree::{list_top, DirLevel, LocalTree, LocalTreeReader};
use self::upload::{Dest, LocalFile, LocalUpload};
use super::{Announced, Backend, Download, Origin, StorageError, TreeReader, TreeUpload, Upload};

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
    /// Where each sender's last upload of a name was placed: where its
    /// retry is looked for first.
    last_placed: std::sync::Mutex<std::collections::HashMap<(Origin, String), String>>,
    /// Paths to remove, off the runtime (abandoned uploads and trees).
    reaper: std::sync::mpsc::Sender<Reap>,
    /// Replaced trees, for the reaper once their grace is over (one thread
    /// waits for each in turn: the grace is the same for all).
    later: std::sync::mpsc::Sender<(std::time::Instant, PathBuf)>,
    /// Its receiving end, until [`Storage::start_reaper`] starts the thread.
    reaper_rx: std::sync::Mutex<Option<std::sync::mpsc::Receiver<Reap>>>,
    /// Held for the daemon's life: the root's exclusive lock.
    _lock: std::fs::File,
    /// Writer threads for large uploads ([`upload::PIPE_LANES`] at most).
    lanes: Arc<tokio::sync::Semaphore>,
    /// Whether the root's file system keeps who stored each file.
    origins: bool,
}

/// The local root. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Local {
    inner: Arc<Inner>,
}

/// Free inodes a new upload leaves at least (256): room for the uploads in
/// progress to finish and for ferryd's own files (the ledger's rotation, a
/// temporary file).
pub(crate) const INODE_RESERVE: u64 = 256;

impl Local {
    /// Opens (creating if needed) the root, takes its lock (one daemon per
    /// root: a second one fails here, having touched nothing), checks it is a
    /// writable directory, and sets a fresh work area. What a crash left in
    /// the old one is renamed aside at once and removed by the reaper once
    /// the daemon serves ([`Local::start_reaper`]), so a restart never waits
    /// on it.
    pub(crate) fn open(root: &Path, on_conflict: OnConflict) -> Result<Local, OpenError> {
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
        let origins = origin::supports_origins(&work);
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
        Ok(Local {
            inner: Arc::new(Inner {
                root,
                work,
                on_conflict,
                counter: AtomicU64::new(0),
                next_number: std::sync::Mutex::new(std::collections::HashMap::new()),
                last_placed: std::sync::Mutex::new(std::collections::HashMap::new()),
                reaper,
                later,
                reaper_rx: std::sync::Mutex::new(Some(reaper_rx)),
                _lock: lock,
                lanes: Arc::new(tokio::sync::Semaphore::new(upload::PIPE_LANES)),
                origins,
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

    /// Refuses a new file when the root's filesystem has fewer than
    /// [`INODE_RESERVE`] free inodes, checked like free bytes are by the
    /// kernel; a filesystem that reports no inode count is not checked.
    pub(crate) fn room_for_a_file(&self) -> Result<(), StorageError> {
        let Ok(st) = rustix::fs::statvfs(self.root()) else {
            return Ok(());
        };
        if st.f_files > 0 && st.f_favail < INODE_RESERVE {
            return Err(StorageError::NoInodes { free: st.f_favail });
        }
        Ok(())
    }

    async fn begin(
        &self,
        name: SafeName,
        size: u64,
        exact: bool,
        origin: Origin,
    ) -> Result<LocalUpload, StorageError> {
        self.room_for_a_file()?;
        let temp = self.temp_path("upload");
        let file = File::create(&temp).await?;
        let mut upload = LocalUpload {
            storage: self.clone(),
            dest: Dest::Root(name),
            temp: Some(temp),
            file: Some(file),
            pending: BytesMut::new(),
            expected: size,
            exact,
            written: 0,
            crc: Crc32::new(),
            pipe: None,
            origin,
        };
        if exact && size >= upload::PIPE_MIN {
            if let Ok(lane) = Arc::clone(&self.inner.lanes).try_acquire_owned() {
                upload.pipe(lane).await;
            }
        }
        Ok(upload)
    }

    /// Opens a stored file for reading.
    async fn open_file(&self, path: &RelPath) -> Result<LocalFile, StorageError> {
        let full = self.resolve(path, Want::File).await?;
        let file = open_nofollow(&full)
            .await
            .map_err(|e| map_open_error(e, path))?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(StorageError::NotRegular(path.to_string()));
        }
        Ok(LocalFile::new(file, &meta))
    }

    /// Opens a stored directory for sending, streamed: [`LocalTreeReader::next`]
    /// gives its regular files one by one in path order, reading one
    /// directory at a time (memory bounded by the depth, not the tree), and
    /// every entry is opened relative to the directories opened before it,
    /// so a tree replaced meanwhile (`on_conflict = "overwrite"`) is still
    /// sent whole in the version that was there when it started.
    async fn open_tree(
        &self,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<LocalTreeReader, StorageError> {
        let full = self.resolve(path, Want::Dir).await?;
        let label = path.to_string();
        let (root, origin) = tokio::task::spawn_blocking(move || {
            let fd = open_dir(&full)?;
            let names = list_dir(&fd, &label)?;
            let origin = origin::origin_of(&fd);
            let level = DirLevel {
                fd,
                prefix: None,
                names: names.into_iter(),
            };
            Ok::<_, StorageError>((level, origin))
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        Ok(LocalTreeReader {
            label: path.to_string(),
            stack: vec![root],
            max_entries,
            max_depth,
            entries: 0,
            origin,
        })
    }

    /// The regular files directly inside a stored directory (no recursion),
    /// in name order: what a handout `RAR` client, which writes every file
    /// flat into one folder, can receive. At most `max_entries`.
    async fn top_files(
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
    async fn new_tree(
        &self,
        name: SafeName,
        max_depth: usize,
        origin: Origin,
    ) -> Result<LocalTree, StorageError> {
        let dir = self.temp_path("tree");
        tokio::fs::create_dir(&dir).await?;
        Ok(LocalTree {
            storage: self.clone(),
            name,
            dir: Some(dir),
            shape: crate::storage::shape::TreeShape::new(max_depth),
            origin,
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
}

#[derive(Clone, Copy)]
enum Want {
    File,
    Dir,
}

fn map_open_error(e: io::Error, path: &RelPath) -> StorageError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => StorageError::NotRegular(path.to_string()),
        Some(libc::ENOENT) => StorageError::NotFound(path.to_string()),
        _ => StorageError::Io(e),
    }
}

#[async_trait]
impl Backend for Local {
    fn location(&self) -> &Path {
        self.root()
    }

    fn start_background(&self) {
        self.start_reaper();
    }

    async fn flush_background(&self, limit: Duration) {
        self.flush_reaper(limit).await;
    }

    async fn begin_write(
        &self,
        name: SafeName,
        size: Announced,
        from: Origin,
    ) -> Result<Upload, StorageError> {
        let (limit, exact) = size.limit();
        let upload = self.begin(name, limit, exact, from).await?;
        Ok(Box::new(upload))
    }

    async fn open_read(&self, path: &RelPath) -> Result<Download, StorageError> {
        Ok(Box::new(self.open_file(path).await?))
    }

    async fn read_tree(
        &self,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<TreeReader, StorageError> {
        Ok(Box::new(
            self.open_tree(path, max_entries, max_depth).await?,
        ))
    }

    async fn list_files(
        &self,
        path: &RelPath,
        max_entries: usize,
    ) -> Result<Vec<(SafeName, u64)>, StorageError> {
        self.top_files(path, max_entries).await
    }

    async fn begin_tree(
        &self,
        name: SafeName,
        max_depth: usize,
        from: Origin,
    ) -> Result<TreeUpload, StorageError> {
        Ok(Box::new(self.new_tree(name, max_depth, from).await?))
    }

    fn records_origins(&self) -> bool {
        self.inner.origins
    }
}

#[cfg(test)]
mod tests;
