//! Uploads into the bucket: gathered into parts of `part_size` (one PUT for
//! a file that fits in one part, a multipart upload past it, the next part
//! filling while the last is sent), each sent with its CRC-32 for the store
//! to check; the name claimed in the catalog only once the object is whole
//! and its CRC-32 matches the client's.
//!
//! Memory: an upload holds at most two parts (the one filling, the one in
//! flight), taken from the backend's budget before it starts; a smaller
//! announced file holds only its size.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use ferry_proto::crc::Crc32;
use ferry_proto::names::SafeName;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::catalog::{Entry, FileRec, TreeFile};
use super::Shared;
use crate::storage::{StorageError, Stored, UploadSink};

/// Where a finished upload goes.
pub(super) enum Target {
    /// Under this name (by `on_conflict`), from this sender (its record).
    Name(SafeName, String),
    /// Into a tree being received, at this path (its files, in order).
    InTree(Arc<Mutex<Vec<TreeFile>>>, String),
}

/// A multipart upload under way.
struct Multipart {
    upload_id: String,
    etags: Vec<String>,
    inflight: Option<JoinHandle<std::io::Result<String>>>,
}

/// One upload into the bucket. Dropping it without `commit` removes
/// whatever of it reached the store.
pub(super) struct S3Upload {
    pub(super) shared: Arc<Shared>,
    pub(super) target: Target,
    /// The pending record's id (the object's, or its tree's).
    pub(super) pending_id: String,
    /// Whether the pending record is this upload's own (not its tree's).
    pub(super) own_pending: bool,
    pub(super) key: String,
    pub(super) limit: u64,
    pub(super) exact: bool,
    pub(super) buf: BytesMut,
    pub(super) written: u64,
    pub(super) crc: Crc32,
    pub(super) hash: blake3::Hasher,
    multipart: Option<Multipart>,
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// Set once committed: nothing to clean up.
    done: bool,
}

impl S3Upload {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        shared: Arc<Shared>,
        target: Target,
        pending_id: String,
        own_pending: bool,
        key: String,
        limit: u64,
        exact: bool,
        permit: OwnedSemaphorePermit,
    ) -> S3Upload {
        let cap = (limit as usize).min(shared.part_size);
        S3Upload {
            shared,
            target,
            pending_id,
            own_pending,
            key,
            limit,
            exact,
            buf: BytesMut::with_capacity(cap),
            written: 0,
            crc: Crc32::new(),
            hash: blake3::Hasher::new(),
            multipart: None,
            permit: Some(permit),
            done: false,
        }
    }

    /// The pending record that names this upload's multipart upload: its
    /// own, or, for a file of a tree (whose record covers only its
    /// finished objects), one of the file's own.
    fn multipart_record(&self) -> String {
        match self.own_pending {
            true => self.pending_id.clone(),
            false => format!(
                "{}-{}",
                self.pending_id,
                self.key.rsplit('/').next().unwrap_or("")
            ),
        }
    }

    fn account(&mut self, data: &[u8]) -> Result<(), StorageError> {
        let total = self.written + data.len() as u64;
        if total > self.limit {
            return Err(match self.exact {
                true => StorageError::SizeMismatch {
                    expected: self.limit,
                    received: total,
                },
                false => StorageError::TooLarge { max: self.limit },
            });
        }
        self.crc.update(data);
        self.hash.update(data);
        self.written = total;
        Ok(())
    }

    /// Sends every full part in the buffer.
    async fn send_full_parts(&mut self) -> Result<(), StorageError> {
        while self.buf.len() >= self.shared.part_size {
            let part = self.buf.split_to(self.shared.part_size).freeze();
            // The next part in an allocation of its own, of one part's size:
            // growing the rest would double it while the sent part still
            // holds the old one.
            let mut next = BytesMut::with_capacity(self.shared.part_size);
            next.extend_from_slice(&self.buf);
            self.buf = next;
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Starts sending `part` once the part before it is stored.
    async fn send_part(&mut self, part: Bytes) -> Result<(), StorageError> {
        if self.multipart.is_none() {
            let upload_id = self
                .shared
                .store
                .create_multipart(&self.key)
                .await
                .map_err(store_error)?;
            // Recorded before a part is stored, so a restart can abort it.
            let pending = self
                .shared
                .pending(self.key.clone(), Some(upload_id.clone()), false);
            self.shared
                .catalog
                .add_pending(&self.multipart_record(), &pending)
                .await?;
            self.multipart = Some(Multipart {
                upload_id,
                etags: Vec::new(),
                inflight: None,
            });
        }
        let Some(m) = self.multipart.as_mut() else {
            return Ok(());
        };
        if let Some(prev) = m.inflight.take() {
            m.etags.push(join(prev).await?);
        }
        let n = u16::try_from(m.etags.len() + 1).map_err(|_| StorageError::TooLarge {
            max: self.shared.part_size as u64 * u64::from(u16::MAX),
        })?;
        let shared = self.shared.clone();
        let (key, upload_id) = (self.key.clone(), m.upload_id.clone());
        m.inflight = Some(tokio::spawn(async move {
            let mut sum = Crc32::new();
            sum.update(&part);
            let crc = sum.value();
            shared
                .store
                .upload_part(&key, &upload_id, n, part, crc)
                .await
        }));
        Ok(())
    }

    /// Puts the whole object in the bucket: one PUT, or the last part and
    /// the multipart completion.
    async fn finish_object(&mut self) -> Result<(), StorageError> {
        let rest = self.buf.split().freeze();
        if self.multipart.is_none() {
            return self
                .shared
                .store
                .put(&self.key, rest, self.crc.value())
                .await
                .map_err(store_error);
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let Some(m) = self.multipart.as_mut() else {
            return Ok(());
        };
        if let Some(last) = m.inflight.take() {
            m.etags.push(join(last).await?);
        }
        self.shared
            .store
            .complete(&self.key, &m.upload_id, &m.etags)
            .await
            .map_err(store_error)?;
        // Whole now: a failure from here on removes the object itself.
        self.multipart = None;
        if !self.own_pending {
            let _ = self
                .shared
                .catalog
                .remove_pending(&self.multipart_record())
                .await;
        }
        Ok(())
    }

    async fn commit_inner(&mut self, expected_crc: Option<u32>) -> Result<Stored, StorageError> {
        if self.exact && self.written != self.limit {
            return Err(StorageError::SizeMismatch {
                expected: self.limit,
                received: self.written,
            });
        }
        let crc = self.crc.value();
        if let Some(expected) = expected_crc.filter(|&e| e != crc) {
            return Err(StorageError::ChecksumMismatch {
                expected,
                actual: crc,
            });
        }
        self.finish_object().await?;
        self.permit = None;
        let rec = FileRec {
            object: self.key.clone(),
            size: self.written,
            crc,
            blake3: match self.target {
                Target::Name(..) => self.hash.finalize().to_hex().to_string(),
                Target::InTree(..) => String::new(),
            },
            from: match &self.target {
                Target::Name(_, from) => from.clone(),
                Target::InTree(..) => String::new(),
            },
        };
        match &self.target {
            Target::InTree(files, path) => {
                files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(TreeFile {
                        path: path.clone(),
                        rec,
                    });
                Ok(Stored {
                    name: path.clone(),
                    size: self.written,
                    crc,
                    deduplicated: false,
                })
            }
            Target::Name(name, _) => {
                let entry = Entry::File(rec);
                let (stored, same) = self
                    .shared
                    .catalog
                    .claim(
                        name.as_str(),
                        self.shared.on_conflict,
                        &entry,
                        &self.pending_id,
                        super::now_secs(),
                    )
                    .await?;
                if same {
                    // An identical file is already stored: this copy goes.
                    let _ = self.shared.store.delete(&self.key).await;
                }
                Ok(Stored {
                    name: stored,
                    size: self.written,
                    crc,
                    deduplicated: same,
                })
            }
        }
    }

    /// Removes what reached the store (in the background).
    fn clean_up(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let shared = self.shared.clone();
        let key = self.key.clone();
        let multipart = self.multipart.take();
        let pending = (self.own_pending || multipart.is_some()).then(|| self.multipart_record());
        self.shared.tasks.spawn(async move {
            let removed = match multipart {
                Some(m) => {
                    if let Some(task) = m.inflight {
                        let _ = task.await;
                    }
                    shared.store.abort(&key, &m.upload_id).await
                }
                None => shared.store.delete(&key).await,
            };
            match removed {
                Ok(()) => {
                    if let Some(id) = pending {
                        let _ = shared.catalog.remove_pending(&id).await;
                    }
                }
                // Left for the sweeper (its pending record stays).
                Err(e) => tracing::warn!(object = key, error = %e, "could not remove a failed upload's object; the sweeper will"),
            }
        });
    }
}

async fn join(task: JoinHandle<std::io::Result<String>>) -> Result<String, StorageError> {
    task.await
        .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?
        .map_err(store_error)
}

/// A store error as the client sees it.
pub(super) fn store_error(e: std::io::Error) -> StorageError {
    match e.kind() {
        std::io::ErrorKind::InvalidData => StorageError::Io(e),
        _ => StorageError::Unavailable(format!("the object store: {e}")),
    }
}

#[async_trait]
impl UploadSink for S3Upload {
    async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.account(data)?;
        self.buf.extend_from_slice(data);
        self.send_full_parts().await
    }

    async fn write_direct(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.write(data).await
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn crc(&self) -> u32 {
        self.crc.value()
    }

    async fn commit(
        mut self: Box<Self>,
        expected_crc: Option<u32>,
    ) -> Result<Stored, StorageError> {
        let result = self.commit_inner(expected_crc).await;
        match &result {
            // Stored, or an identical file was (this object is gone then).
            Ok(_) | Err(StorageError::Unsettled(_)) => self.done = true,
            Err(_) => self.clean_up(),
        }
        result
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.clean_up();
    }
}
