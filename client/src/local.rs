//! Local files: downloads are written to a temporary file (or directory) next
//! to the destination and renamed into place only when complete and verified.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The last component of a local path, as the name to send it under.
pub fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::Local(format!("{} has no usable file name", path.display())))
}

/// Opens a local file to send, with its size.
pub async fn open_source(path: &Path) -> Result<(tokio::fs::File, u64)> {
    let fail = |e: std::io::Error| Error::Local(format!("cannot read {}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(fail)?;
    let size = file.metadata().await.map_err(fail)?.len();
    Ok((file, size))
}

/// Where a download goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The final path.
    pub path: PathBuf,
    force: bool,
}

impl Target {
    /// `dest` is a file path, or an existing directory to put `remote`'s last
    /// component in. Refuses an existing destination unless `force`.
    pub fn new(dest: &Path, remote: &str, force: bool) -> Result<Target> {
        let last = remote
            .rsplit(['/', '\\'])
            .find(|c| !c.is_empty())
            .filter(|c| *c != "." && *c != "..")
            .ok_or_else(|| {
                Error::Local(format!("cannot name a local file after {remote:?}; use -o"))
            })?;
        let path = if dest.as_os_str().is_empty() {
            PathBuf::from(last)
        } else if dest.is_dir() {
            dest.join(last)
        } else {
            dest.to_owned()
        };
        if !force && std::fs::symlink_metadata(&path).is_ok() {
            return Err(Error::Local(format!(
                "{} exists; use --force to replace it",
                path.display()
            )));
        }
        Ok(Target { path, force })
    }

    /// Exactly `dest` (default `./<last component of remote>`), for a tree.
    pub fn exact(dest: &Path, remote: &str, force: bool) -> Result<Target> {
        if dest.as_os_str().is_empty() {
            return Target::new(dest, remote, force);
        }
        if !force && std::fs::symlink_metadata(dest).is_ok() {
            return Err(Error::Local(format!(
                "{} exists; use --force to replace it",
                dest.display()
            )));
        }
        Ok(Target {
            path: dest.to_owned(),
            force,
        })
    }

    fn temp_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parent.join(format!(".{name}.ferry-part-{}", std::process::id()))
    }

    /// Opens the temporary file, written by a thread of its own.
    pub async fn create_file(&self) -> Result<PartFile> {
        let temp = self.temp_path();
        let file = std::fs::File::create(&temp)
            .map_err(|e| Error::Local(format!("cannot create {}: {e}", temp.display())))?;
        let (tx, rx) = tokio::sync::mpsc::channel(WRITER_DEPTH);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ferry-writer".into())
            .spawn(move || {
                let _ = done_tx.send(writer(file, rx));
            })
            .map_err(|e| Error::Local(format!("cannot start a writer thread: {e}")))?;
        Ok(PartFile {
            tx: Some(tx),
            done: Some(done),
            pending: bytes::BytesMut::new(),
            temp: Some(temp),
            target: self.clone(),
        })
    }

    /// Creates the temporary directory for a tree.
    pub fn create_dir(&self) -> Result<PartDir> {
        let temp = self.temp_path();
        std::fs::create_dir(&temp)
            .map_err(|e| Error::Local(format!("cannot create {}: {e}", temp.display())))?;
        Ok(PartDir {
            temp: Some(temp),
            target: self.clone(),
        })
    }
}

/// Buffers queued for a download's writer thread (each at most a socket
/// read or [`GATHER`] bytes).
const WRITER_DEPTH: usize = 8;
/// Small pieces (datagrams) are gathered into writes of this size.
const GATHER: usize = 256 * 1024;

/// What the connection hands the writer thread.
enum Write {
    /// Append these bytes.
    Data(bytes::Bytes),
    /// Everything is written: sync, then report.
    Commit,
}

/// The writer thread: appends in order; syncs only when told to commit
/// (a download given up is not worth a sync).
fn writer(
    mut file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<Write>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Write::Data(data) => file.write_all(&data)?,
            Write::Commit => return file.sync_all(),
        }
    }
    Err(std::io::Error::other("the download was given up"))
}

/// A download being written, by a thread of its own so the socket is read
/// while the disk writes; dropped without `commit`, it is removed.
pub struct PartFile {
    tx: Option<tokio::sync::mpsc::Sender<Write>>,
    done: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
    pending: bytes::BytesMut,
    temp: Option<PathBuf>,
    target: Target,
}

impl PartFile {
    /// Appends bytes (copied; small pieces are gathered).
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(data);
        if self.pending.len() >= GATHER {
            let batch = self.pending.split().freeze();
            self.send(Write::Data(batch)).await?;
        }
        Ok(())
    }

    /// Appends bytes the caller owns (a socket read), with no copy.
    pub async fn write_owned(&mut self, data: bytes::Bytes) -> Result<()> {
        if !self.pending.is_empty() {
            let batch = self.pending.split().freeze();
            self.send(Write::Data(batch)).await?;
        }
        self.send(Write::Data(data)).await
    }

    async fn send(&mut self, msg: Write) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped: its write failed.
        Err(self
            .finish()
            .await
            .err()
            .unwrap_or_else(|| Error::Local("cannot write: the writer thread stopped".into())))
    }

    /// Waits for the thread's result.
    async fn finish(&mut self) -> Result<()> {
        self.tx = None;
        let done = self
            .done
            .take()
            .ok_or_else(|| Error::Local("file already closed".into()))?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Local(format!("cannot write: {e}"))),
            Err(_) => Err(Error::Local("cannot write: the writer thread died".into())),
        }
    }

    /// Writes what is left, syncs and renames into place.
    pub async fn commit(mut self) -> Result<PathBuf> {
        if !self.pending.is_empty() {
            let batch = self.pending.split().freeze();
            self.send(Write::Data(batch)).await?;
        }
        self.send(Write::Commit).await?;
        self.finish().await?;
        let temp = self
            .temp
            .take()
            .ok_or_else(|| Error::Local("file already closed".into()))?;
        place(&temp, &self.target)?;
        Ok(self.target.path.clone())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// A tree being written; dropped without `commit`, it is removed.
pub struct PartDir {
    temp: Option<PathBuf>,
    target: Target,
}

impl PartDir {
    /// The temporary directory, to write entries under.
    pub fn root(&self) -> &Path {
        self.temp.as_deref().unwrap_or(Path::new("."))
    }

    /// Renames the finished tree into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        let temp = self
            .temp
            .take()
            .ok_or_else(|| Error::Local("tree already finished".into()))?;
        if self.target.force && self.target.path.is_dir() {
            // --force writes into the existing directory: the tree's files
            // replace theirs, every other local file stays. Every path is
            // checked first, so a conflict changes nothing.
            let r = check_merge(&temp, &self.target.path)
                .and_then(|()| merge(&temp, &self.target.path));
            let _ = std::fs::remove_dir_all(&temp);
            return r.map(|()| self.target.path.clone());
        }
        let r = place(&temp, &self.target);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&temp);
        }
        r.map(|()| self.target.path.clone())
    }
}

impl Drop for PartDir {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// Fails, touching nothing, if [`merge`] would meet a path that is a
/// directory on one side and a file (or link) on the other.
fn check_merge(from: &Path, into: &Path) -> Result<()> {
    let local =
        |p: &Path, e: std::io::Error| Error::Local(format!("cannot read {}: {e}", p.display()));
    for entry in std::fs::read_dir(from).map_err(|e| local(from, e))? {
        let entry = entry.map_err(|e| local(from, e))?;
        let dest = into.join(entry.file_name());
        let is_dir = entry.file_type().map_err(|e| local(&dest, e))?.is_dir();
        match std::fs::symlink_metadata(&dest) {
            Err(_) => {}
            Ok(m) if is_dir && m.is_dir() => check_merge(&entry.path(), &dest)?,
            Ok(m) if !is_dir && m.is_file() => {}
            Ok(_) => {
                return Err(Error::Local(format!(
                    "{} exists locally as a {}; nothing was changed",
                    dest.display(),
                    if is_dir { "file" } else { "directory or link" }
                )))
            }
        }
    }
    Ok(())
}

/// Moves every file under `from` to the same path under `into`, replacing a
/// file there, creating directories as needed; a path that is a directory on
/// one side and a file on the other is an error (nothing of it is replaced).
fn merge(from: &Path, into: &Path) -> Result<()> {
    let local =
        |p: &Path, e: std::io::Error| Error::Local(format!("cannot write {}: {e}", p.display()));
    let entries = std::fs::read_dir(from).map_err(|e| local(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| local(from, e))?;
        let dest = into.join(entry.file_name());
        let is_dir = entry.file_type().map_err(|e| local(&dest, e))?.is_dir();
        let existing = std::fs::symlink_metadata(&dest).ok();
        match (is_dir, existing) {
            (true, Some(m)) if m.is_dir() => merge(&entry.path(), &dest)?,
            (true, None) | (false, None) => {
                std::fs::rename(entry.path(), &dest).map_err(|e| local(&dest, e))?
            }
            (false, Some(m)) if m.is_file() => {
                std::fs::rename(entry.path(), &dest).map_err(|e| local(&dest, e))?
            }
            _ => {
                return Err(Error::Local(format!(
                    "{} exists locally as a {} and is kept",
                    dest.display(),
                    if is_dir { "file" } else { "directory or link" }
                )))
            }
        }
    }
    Ok(())
}

/// Moves `temp` to the target: replacing only with `force`; otherwise a
/// destination that appeared meanwhile is kept and the download reported.
fn place(temp: &Path, target: &Target) -> Result<()> {
    let to = &target.path;
    let fail = |e: std::io::Error| {
        Error::Local(format!("cannot move the download to {}: {e}", to.display()))
    };
    if target.force || temp.is_dir() {
        if !target.force && std::fs::symlink_metadata(to).is_ok() {
            return Err(Error::Local(format!(
                "{} exists; use --force to replace it",
                to.display()
            )));
        }
        return std::fs::rename(temp, to).map_err(fail);
    }
    // No-replace for files: link (fails if the name exists), then unlink the temp.
    match std::fs::hard_link(temp, to) {
        Ok(()) => {
            let _ = std::fs::remove_file(temp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(temp);
            Err(Error::Local(format!(
                "{} exists; use --force to replace it",
                to.display()
            )))
        }
        Err(e) => Err(fail(e)),
    }
}
