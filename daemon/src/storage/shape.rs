//! What every backend checks of a tree being received: its depth, its
//! size, its entries (directories count), and paths that repeat or are both
//! a file and a directory.

use std::collections::HashSet;

use ferry_proto::names::RelPath;

use crate::storage::StorageError;

/// The files of a tree so far, and its limit on depth.
#[derive(Debug, Default)]
pub(crate) struct TreeShape {
    /// Every file's path, slash-joined.
    files_seen: HashSet<String>,
    /// Every directory the files need, slash-joined: they count as entries.
    dirs_seen: HashSet<String>,
    /// Components in a path, at most.
    pub(crate) max_depth: usize,
    /// Files admitted.
    pub(crate) files: usize,
    /// Their bytes together.
    pub(crate) bytes: u64,
}

impl TreeShape {
    /// A tree at most `max_depth` deep, with nothing in it yet.
    pub(crate) fn new(max_depth: usize) -> TreeShape {
        TreeShape {
            max_depth,
            ..TreeShape::default()
        }
    }
}

impl TreeShape {
    /// Checks one file against the tree's limits and paths and counts it.
    pub(crate) fn admit(
        &mut self,
        path: &RelPath,
        size: u64,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<(), StorageError> {
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
        self.files += 1;
        self.bytes = bytes;
        Ok(())
    }
}
