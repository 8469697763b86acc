//! Downloads from the bucket: the catalog gives the object, its size and
//! CRC-32 before a byte is read (magic_download sends the size first); the
//! object streams from the store in the pieces it arrives in.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use ferry_proto::names::{RelPath, SafeName};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::catalog::{Entry, FileRec, TreeFile};
use super::http::flatten;
use super::upload::store_error;
use super::Shared;
use crate::storage::{Download, Origin, Reader, StorageError, TreeReader, TreeSource};

/// A path inside a tree, longest accepted when read back from the catalog.
const MAX_PATH: usize = 1 << 16;

/// What a path names: a file, or a directory (its files, relative to it).
enum Found {
    File(FileRec),
    /// A tree or a directory in one, and who stored the tree.
    Dir(Vec<TreeFile>, String),
}

/// Looks `path` up: its first component in the catalog, the rest inside
/// that tree.
async fn find(shared: &Shared, path: &RelPath) -> Result<Found, StorageError> {
    let label = path.to_slash_string();
    let parts = path.components();
    let top = &parts[0];
    let entry = shared
        .catalog
        .lookup(top.as_str())
        .await?
        .ok_or_else(|| StorageError::NotFound(label.clone()))?;
    match entry {
        Entry::File(rec) if parts.len() == 1 => Ok(Found::File(rec)),
        Entry::File(_) => Err(StorageError::NotFound(label)),
        Entry::Tree { files, from } if parts.len() == 1 => Ok(Found::Dir(files, from)),
        Entry::Tree { files, from } => {
            let inner: Vec<&str> = parts[1..].iter().map(SafeName::as_str).collect();
            let inner = inner.join("/");
            let below = format!("{inner}/");
            let mut under = Vec::new();
            for f in files {
                if f.path == inner {
                    return Ok(Found::File(FileRec { from, ..f.rec }));
                }
                if let Some(rest) = f.path.strip_prefix(&below) {
                    under.push(TreeFile {
                        path: rest.to_owned(),
                        rec: f.rec,
                    });
                }
            }
            match under.is_empty() {
                true => Err(StorageError::NotFound(label)),
                false => Ok(Found::Dir(under, from)),
            }
        }
    }
}

pub(super) async fn open(shared: &Arc<Shared>, path: &RelPath) -> Result<Download, StorageError> {
    match find(shared, path).await? {
        Found::File(rec) => Ok(Box::new(S3Reader::open(shared.clone(), rec).await?)),
        Found::Dir(..) => Err(StorageError::IsDirectory(path.to_slash_string())),
    }
}

pub(super) async fn tree(
    shared: &Arc<Shared>,
    path: &RelPath,
    max_entries: usize,
    max_depth: usize,
) -> Result<TreeReader, StorageError> {
    let label = path.to_slash_string();
    let Found::Dir(files, from) = find(shared, path).await? else {
        return Err(StorageError::NotDirectory(label));
    };
    let mut dirs = std::collections::HashSet::new();
    for f in &files {
        for (at, _) in f.path.match_indices('/') {
            dirs.insert(&f.path[..at]);
        }
    }
    if files.len() + dirs.len() > max_entries {
        return Err(StorageError::BadTree(format!(
            "{label} has more than {max_entries} entries (files and directories)"
        )));
    }
    let files: Vec<TreeFile> = files
        .into_iter()
        .filter(|f| {
            let deep = f.path.split('/').count() > max_depth;
            if deep {
                tracing::warn!(
                    tree = label,
                    path = f.path,
                    "skipping a file deeper than signal.max_tree_depth"
                );
            }
            !deep
        })
        .collect();
    Ok(Box::new(S3TreeReader {
        shared: shared.clone(),
        files: files.into_iter(),
        from,
    }))
}

pub(super) async fn list(
    shared: &Arc<Shared>,
    path: &RelPath,
    max_entries: usize,
) -> Result<Vec<(SafeName, u64)>, StorageError> {
    let label = path.to_slash_string();
    let Found::Dir(files, _) = find(shared, path).await? else {
        return Err(StorageError::NotDirectory(label));
    };
    let mut out: Vec<(SafeName, u64)> = files
        .iter()
        .filter(|f| !f.path.contains('/'))
        .filter_map(|f| Some((SafeName::component(&f.path).ok()?, f.rec.size)))
        .collect();
    out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    if out.len() > max_entries {
        return Err(StorageError::BadTree(format!(
            "{label} has more than {max_entries} files"
        )));
    }
    Ok(out)
}

/// A tree's files, opened one by one.
struct S3TreeReader {
    shared: Arc<Shared>,
    files: std::vec::IntoIter<TreeFile>,
    /// Who stored the tree: the record of each of its files.
    from: String,
}

/// The origin a catalog record gives; an entry from before senders were
/// recorded has none (nothing in the bucket was put there by hand).
fn origin(record: &str) -> Origin {
    match record {
        "" => Origin::Unrecorded,
        r => Origin::parse(r.as_bytes()),
    }
}

#[async_trait]
impl TreeSource for S3TreeReader {
    fn origin(&self) -> Origin {
        origin(&self.from)
    }

    async fn next(&mut self) -> Result<Option<(RelPath, Download)>, StorageError> {
        let Some(f) = self.files.next() else {
            return Ok(None);
        };
        let rel = RelPath::parse(&f.path, MAX_PATH).map_err(|e| {
            StorageError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a catalog path is damaged: {e}"),
            ))
        })?;
        let rec = FileRec {
            from: self.from.clone(),
            ..f.rec
        };
        Ok(Some((
            rel,
            Box::new(S3Reader::open(self.shared.clone(), rec).await?),
        )))
    }
}

/// One object, streamed from the store. The GET is made at the open, so a
/// store that cannot be reached is a refusal before the first byte, in the
/// protocol's own way, not a connection cut mid-file.
struct S3Reader {
    shared: Arc<Shared>,
    rec: FileRec,
    body: Option<Incoming>,
    left: Bytes,
    read: u64,
}

impl S3Reader {
    async fn open(shared: Arc<Shared>, rec: FileRec) -> Result<S3Reader, StorageError> {
        let body = match rec.size {
            0 => None,
            _ => Some(shared.store.get(&rec.object).await.map_err(store_error)?),
        };
        Ok(S3Reader {
            shared,
            rec,
            body,
            left: Bytes::new(),
            read: 0,
        })
    }

    /// The next piece of the object, empty at its end.
    async fn next_piece(&mut self) -> io::Result<Bytes> {
        if self.read >= self.rec.size {
            return Ok(Bytes::new());
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(Bytes::new());
        };
        loop {
            let frame = tokio::time::timeout(self.shared.wait_for_memory, body.frame())
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the object store stopped sending")
                })?;
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(data);
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, flatten(&e)))
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the object store sent {} of {} bytes",
                            self.read, self.rec.size
                        ),
                    ))
                }
            }
        }
    }
}

#[async_trait]
impl Reader for S3Reader {
    fn size(&self) -> u64 {
        self.rec.size
    }

    fn origin(&self) -> Origin {
        origin(&self.rec.from)
    }

    async fn read_chunk(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<()> {
        buf.clear();
        while buf.len() < max {
            if self.left.is_empty() {
                self.left = self.next_piece().await?;
                if self.left.is_empty() {
                    break;
                }
            }
            let n = self.left.len().min(max - buf.len());
            buf.extend_from_slice(&self.left[..n]);
            self.left.advance(n);
            self.read += n as u64;
        }
        Ok(())
    }

    async fn cached_crc(&self) -> Option<u32> {
        Some(self.rec.crc)
    }
}
