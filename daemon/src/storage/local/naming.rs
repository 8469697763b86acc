//! The naming policy: where a finished upload goes under `on_conflict`, the
//! numbered names of `rename` (`report (3).pdf`) and the per-name hint that
//! keeps finding them cheap.

use std::io;
use std::path::{Path, PathBuf};

use ferry_config::OnConflict;
use ferry_proto::names::SafeName;

use super::origin::origin_at;
use super::sys::{rename_exchange, rename_noreplace};
use super::Local;
use crate::storage::numbered::{number_of, numbered};
use crate::storage::{Origin, StorageError};

/// Candidates `rename` tries for one upload past where the last one of the
/// same name was stored (a hint kept per name), so a name never runs out and
/// no upload probes thousands of candidates.
const MAX_PROBES: u32 = 1000;

/// Numbers above this are not counted on from (see `highest_number`).
const MAX_NUMBER: u32 = 1_000_000_000;

/// Names whose next free number is remembered, at most (then forgotten and
/// found again by probing).
const MAX_HINTS: usize = 100_000;

impl Local {
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

    /// Moves a finished temporary file or tree from `from` into the root
    /// under `name`, following `on_conflict`. `same` says whether an existing
    /// entry is identical to the new one (a retried upload), in which case
    /// the new one is dropped and the existing name returned. `overwrite`
    /// replaces only an entry from the same sender: another's (a
    /// classmate's hand-in, an admin's file) is kept, and the new one gets a
    /// numbered name as under `rename`.
    ///
    /// A retry is looked for first where this sender's last upload of the
    /// name went, so it is found whatever numbers other senders took since.
    pub(super) fn place(
        &self,
        temp: &Path,
        name: &SafeName,
        from: Origin,
        same: &dyn Fn(&Path) -> bool,
    ) -> Result<(String, bool), StorageError> {
        let key = (from, name.as_str().to_owned());
        let last = || {
            self.inner
                .last_placed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        let before = last().get(&key).cloned();
        if let Some(prev) = before {
            if same(&self.inner.root.join(&prev)) {
                return Ok((prev, true));
            }
        }
        let placed = self.place_by_policy(temp, name, from, same)?;
        let mut map = last();
        if map.len() >= MAX_HINTS {
            map.clear();
        }
        map.insert(key, placed.0.clone());
        Ok(placed)
    }

    fn place_by_policy(
        &self,
        temp: &Path,
        name: &SafeName,
        from: Origin,
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
            let replaceable = || origin_at(&target).map_or(true, |o| o == from);
            match self.inner.on_conflict {
                OnConflict::Overwrite if replaceable() => {
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

/// The highest `k` of the entries in `dir` named [`numbered`]`(name, k)`.
fn highest_number(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| number_of(name, e.file_name().to_str()?))
        .max()
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
            rename_exchange(temp, target)?;
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
