//! Trees in the local root: received whole into the work area and moved in
//! at once; sent from directory handles, so a tree replaced meanwhile is
//! still sent in one version.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::BytesMut;
use ferry_proto::crc::Crc32;
use ferry_proto::names::{RelPath, SafeName};
use tokio::fs::File;

use super::origin::set_origin_dirs;
use super::sys::{fsync_dir, fsync_dirs, list_dir, open_at, At};
use super::upload::{Dest, LocalFile, LocalUpload};
use super::Local;
use crate::storage::shape::TreeShape;
use crate::storage::{Download, Origin, StorageError, Stored, TreeSink, TreeSource, Upload};

/// A directory tree being received; dropping it without `commit` removes it.
pub(crate) struct LocalTree {
    pub(super) storage: Local,
    pub(super) name: SafeName,
    pub(super) dir: Option<PathBuf>,
    pub(super) shape: TreeShape,
    /// Who sent it: recorded on every file and on the directory.
    pub(super) origin: Origin,
}

impl LocalTree {
    /// Starts one file of the tree at `path` (relative to the tree).
    pub(crate) async fn begin_file(
        &mut self,
        path: &RelPath,
        size: u64,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<LocalUpload, StorageError> {
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| io::Error::other("tree already finished"))?;
        self.shape.admit(path, size, max_entries, max_bytes)?;
        self.storage.room_for_a_file()?;
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
        Ok(LocalUpload {
            storage: self.storage.clone(),
            dest: Dest::InTree,
            temp: Some(full),
            file: Some(file),
            pending: BytesMut::new(),
            expected: size,
            exact: true,
            written: 0,
            crc: Crc32::new(),
            pipe: None,
            origin: self.origin,
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
        let bytes = self.shape.bytes;
        let from = self.origin;
        let stored = tokio::task::spawn_blocking(move || {
            set_origin_dirs(&dir, from)?;
            fsync_dirs(&dir)?;
            let (stored, _) = storage.place(&dir, &name, from, &|_| false)?;
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

impl Drop for LocalTree {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // However big, removed by the reaper's own thread.
            self.storage.reap(dir);
        }
    }
}

/// A stored directory being sent; see [`Local::read_tree`].
pub(crate) struct LocalTreeReader {
    pub(super) label: String,
    pub(super) stack: Vec<DirLevel>,
    pub(super) max_entries: usize,
    pub(super) max_depth: usize,
    pub(super) entries: usize,
    /// Who stored the directory asked for.
    pub(super) origin: Origin,
}

pub(super) struct DirLevel {
    pub(super) fd: std::os::fd::OwnedFd,
    pub(super) prefix: Option<RelPath>,
    pub(super) names: std::vec::IntoIter<(SafeName, bool)>,
}

impl LocalTreeReader {
    /// The next regular file (its path in the tree, opened), or `None` at
    /// the end. More than `max_entries` entries (files and directories) is
    /// an error; directories deeper than `max_depth` are skipped.
    pub(crate) async fn next(&mut self) -> Result<Option<(RelPath, LocalFile)>, StorageError> {
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
                    let fd = open_at(&dir, name.as_str(), At::Dir)?;
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
                let fd = open_at(&dir, name.as_str(), At::File)?;
                let file = std::fs::File::from(fd);
                let meta = file.metadata()?;
                Ok::<_, io::Error>(meta.is_file().then_some((file, meta)))
            })
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
            match file {
                Some((file, meta)) => {
                    return Ok(Some((rel, LocalFile::new(File::from_std(file), &meta))))
                }
                None => continue,
            }
        }
    }
}

pub(super) fn list_top(
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

#[async_trait]
impl TreeSink for LocalTree {
    fn files(&self) -> usize {
        self.shape.files
    }

    async fn begin_file(
        &mut self,
        path: &RelPath,
        size: u64,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Upload, StorageError> {
        let upload = LocalTree::begin_file(self, path, size, max_entries, max_bytes).await?;
        Ok(Box::new(upload))
    }

    async fn commit(self: Box<Self>) -> Result<Stored, StorageError> {
        LocalTree::commit(*self).await
    }
}

#[async_trait]
impl TreeSource for LocalTreeReader {
    fn origin(&self) -> Origin {
        self.origin
    }

    async fn next(&mut self) -> Result<Option<(RelPath, Download)>, StorageError> {
        let next = LocalTreeReader::next(self).await?;
        Ok(next.map(|(rel, file)| (rel, Box::new(file) as Download)))
    }
}
