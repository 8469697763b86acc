//! Trees into the bucket: each file an object under the tree's own key
//! prefix, the whole tree one catalog entry (its manifest) claimed in one
//! transaction at the end, so it appears all at once or not at all.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_proto::names::{RelPath, SafeName};

use super::catalog::{Entry, TreeFile};
use super::upload::{S3Upload, Target};
use super::{now_secs, Shared};
use crate::storage::shape::TreeShape;
use crate::storage::{Origin, StorageError, Stored, TreeSink, Upload};

/// A tree being received.
pub(super) struct S3Tree {
    shared: Arc<Shared>,
    name: SafeName,
    /// The pending record's id, and the tree's key prefix under `objects/`.
    id: String,
    shape: TreeShape,
    files: Arc<Mutex<Vec<TreeFile>>>,
    done: bool,
    /// Who sent it (its record).
    from: String,
}

impl S3Tree {
    pub(super) async fn begin(
        shared: Arc<Shared>,
        name: SafeName,
        max_depth: usize,
        from: Origin,
    ) -> Result<S3Tree, StorageError> {
        let id = shared.new_id();
        let pending = shared.pending(format!("{}{id}/", shared.objects), None, true);
        shared.catalog.add_pending(&id, &pending).await?;
        Ok(S3Tree {
            shared,
            name,
            id,
            shape: TreeShape::new(max_depth),
            files: Arc::default(),
            done: false,
            from: from.record().unwrap_or_default(),
        })
    }
}

#[async_trait]
impl TreeSink for S3Tree {
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
        self.shape.admit(path, size, max_entries, max_bytes)?;
        let permit = self.shared.memory_for(size).await?;
        let key = format!("{}{}/{}", self.shared.objects, self.id, self.shape.files);
        let target = Target::InTree(self.files.clone(), path.to_slash_string());
        Ok(Box::new(S3Upload::new(
            self.shared.clone(),
            target,
            self.id.clone(),
            false,
            key,
            size,
            true,
            permit,
        )))
    }

    async fn commit(mut self: Box<Self>) -> Result<Stored, StorageError> {
        let mut files = std::mem::take(&mut *self.files.lock().unwrap_or_else(|e| e.into_inner()));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let entry = Entry::Tree {
            files,
            from: self.from.clone(),
        };
        let shared = self.shared.clone();
        let (name, _) = shared
            .catalog
            .claim(
                self.name.as_str(),
                shared.on_conflict,
                &entry,
                &self.id,
                now_secs(),
            )
            .await
            .inspect_err(|e| {
                // Maybe claimed: its files stay (the sweeper knows).
                self.done = matches!(e, StorageError::Unsettled(_));
            })?;
        self.done = true;
        Ok(Stored {
            name,
            size: self.shape.bytes,
            crc: 0,
            deduplicated: false,
        })
    }
}

impl Drop for S3Tree {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let shared = self.shared.clone();
        let (id, prefix) = (
            self.id.clone(),
            format!("{}{}/", self.shared.objects, self.id),
        );
        if tokio::runtime::Handle::try_current().is_ok() {
            self.shared.tasks.spawn(async move {
                if super::sweep::remove_prefix(&shared, &prefix).await.is_ok() {
                    let _ = shared.catalog.remove_pending(&id).await;
                }
            });
        }
    }
}
