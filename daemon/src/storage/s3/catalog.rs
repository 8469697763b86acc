//! The catalog: every stored name in etcd, pointing at its object(s), and
//! the records that let a sweeper find what no name points at.
//!
//! Keys, under the catalog prefix (default `ferry/`):
//! - `n/<name>`: a stored file ([`Entry::File`]) or a whole tree
//!   ([`Entry::Tree`], its manifest), so a name, and all of a tree, appears
//!   in one transaction or not at all;
//! - `p/<instance>/<id>`: an upload in progress (its object, its multipart
//!   upload id): what a restarted instance removes at once;
//! - `g/<id>`: an object a name stopped pointing at (`overwrite`), removed
//!   after a grace so downloads in flight finish.
//!
//! Where a name goes is decided by [`decide`], with no I/O: the same
//! `on_conflict` rules as the local backend, over the names etcd holds now;
//! the claim is then a transaction that holds only if nothing changed.

use std::io;

use ferry_config::OnConflict;
use serde::{Deserialize, Serialize};

use super::etcd::{Compare, Etcd, Op};
use crate::storage::numbered::{number_of, numbered, stem};
use crate::storage::StorageError;

/// One stored file: its object and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileRec {
    /// The object's key in the bucket.
    #[serde(rename = "o")]
    pub object: String,
    /// Its size.
    #[serde(rename = "s")]
    pub size: u64,
    /// Its CRC-32.
    #[serde(rename = "c")]
    pub crc: u32,
    /// Its BLAKE3, hex: what "an identical retry" compares. Left out of a
    /// tree's files (trees are never retries), which keeps a manifest of
    /// 10,000 files under etcd's 1.5 MiB request limit.
    #[serde(rename = "b", default, skip_serializing_if = "String::is_empty")]
    pub blake3: String,
    /// Who stored it ([`crate::storage::Origin`]'s record). Left out of a
    /// tree's files: the tree's own is theirs (filled in when read).
    #[serde(rename = "f", default, skip_serializing_if = "String::is_empty")]
    pub from: String,
}

/// One file of a stored tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TreeFile {
    /// Its path in the tree, slash-joined.
    #[serde(rename = "p")]
    pub path: String,
    /// Its object.
    #[serde(flatten)]
    pub rec: FileRec,
}

/// What a name holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum Entry {
    /// A file.
    File(FileRec),
    /// A tree: every file in it, in path order.
    Tree {
        /// The files.
        files: Vec<TreeFile>,
        /// Who stored it.
        #[serde(rename = "f", default, skip_serializing_if = "String::is_empty")]
        from: String,
    },
}

impl Entry {
    /// The objects it points at.
    pub(super) fn objects(&self) -> Vec<&str> {
        match self {
            Entry::File(f) => vec![f.object.as_str()],
            Entry::Tree { files, .. } => files.iter().map(|f| f.rec.object.as_str()).collect(),
        }
    }

    /// Who stored it.
    fn from(&self) -> &str {
        match self {
            Entry::File(f) => &f.from,
            Entry::Tree { from, .. } => from,
        }
    }

    /// An identical retry: the same bytes (size and BLAKE3) from the same
    /// sender. Trees are never taken as retries (as on the local backend).
    fn same_as(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::File(a), Entry::File(b)) => {
                a.size == b.size && a.blake3 == b.blake3 && a.from == b.from
            }
            _ => false,
        }
    }
}

/// Where a new entry goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// An identical file is stored under this name: store nothing.
    Same(String),
    /// Claim this name, free now.
    Claim(String),
    /// Replace this name, as it was at this revision (`overwrite`).
    Replace(String, i64),
    /// Refuse the upload.
    Refuse(Refusal),
}

/// Why an upload is refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `reject`, and the name is taken.
    Exists(String),
    /// `overwrite` of a file by a tree or the reverse.
    KindDiffers(String),
}

/// A name held now: the name, its entry, its revision.
pub(super) type Taken = (String, Entry, i64);

/// Numbers `rename` goes up to.
const MAX_NUMBER: u32 = 1_000_000_000;

/// Decides where `new`, uploaded as `name`, goes under `policy`, given the
/// names held now that are `name` or its numbered forms. `overwrite`
/// replaces only an entry from the same sender; another's is kept and the
/// new one numbered, as under `rename`.
pub(super) fn decide(name: &str, policy: OnConflict, new: &Entry, taken: &[Taken]) -> Decision {
    let existing = taken.iter().find(|(n, _, _)| n == name);
    if let Some((n, e, _)) = existing {
        if e.same_as(new) {
            return Decision::Same(n.clone());
        }
    }
    match (policy, existing) {
        (_, None) => Decision::Claim(name.to_owned()),
        (OnConflict::Reject, Some(_)) => Decision::Refuse(Refusal::Exists(name.to_owned())),
        (OnConflict::Overwrite, Some((n, e, rev))) if e.from() == new.from() => {
            if matches!(e, Entry::File(_)) != matches!(new, Entry::File(_)) {
                Decision::Refuse(Refusal::KindDiffers(n.clone()))
            } else {
                Decision::Replace(n.clone(), *rev)
            }
        }
        (OnConflict::Rename | OnConflict::Overwrite, Some(_)) => {
            let mut numbered_taken: Vec<(u32, &Taken)> = taken
                .iter()
                .filter_map(|t| Some((number_of(name, &t.0)?, t)))
                .collect();
            numbered_taken.sort_by_key(|(k, _)| *k);
            if let Some((_, (n, _, _))) =
                numbered_taken.iter().find(|(_, (_, e, _))| e.same_as(new))
            {
                return Decision::Same(n.clone());
            }
            let next = numbered_taken.last().map_or(1, |(k, _)| k + 1);
            if next >= MAX_NUMBER {
                return Decision::Refuse(Refusal::Exists(name.to_owned()));
            }
            Decision::Claim(numbered(name, next))
        }
    }
}

/// An upload in progress, as recorded under `p/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pending {
    /// Its object's key.
    #[serde(rename = "o")]
    pub object: String,
    /// Its multipart upload, once started.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// `object` is a prefix: every object under it (a tree's files).
    #[serde(rename = "x", default, skip_serializing_if = "std::ops::Not::not")]
    pub prefix: bool,
    /// When it started (seconds since the epoch).
    #[serde(rename = "t")]
    pub since: u64,
    /// The run of the instance (one per process start) that began it: a
    /// record of this instance from an earlier run is a leftover.
    #[serde(rename = "r", default)]
    pub run: String,
}

/// Objects no name points at any more (what `overwrite` replaced), as
/// recorded under `g/`: one record per replacement, however many files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Garbage {
    /// The objects' keys.
    #[serde(rename = "o")]
    pub objects: Vec<String>,
    /// Since when (seconds since the epoch).
    #[serde(rename = "t")]
    pub since: u64,
}

/// The catalog in etcd.
pub(super) struct Catalog {
    pub(super) etcd: Etcd,
    prefix: String,
    /// This instance's id, for its pending records.
    pub(super) instance: String,
}

/// Largest catalog entry: etcd refuses requests over 1.5 MiB by default
/// (`--max-request-bytes`), and a transaction carries a little more.
const MAX_ENTRY: usize = 1_500_000;

/// How often a claim is retried when another one changed the names first.
const MAX_RACES: usize = 64;

fn unavailable(e: io::Error) -> StorageError {
    StorageError::Unavailable(format!("the catalog (etcd): {e}"))
}

fn json(v: &impl Serialize) -> Vec<u8> {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Catalog {
    pub(super) fn new(etcd: Etcd, prefix: &str, instance: String) -> Catalog {
        Catalog {
            etcd,
            prefix: prefix.to_owned(),
            instance,
        }
    }

    fn name_key(&self, name: &str) -> String {
        format!("{}n/{name}", self.prefix)
    }

    /// The key of one of this instance's pending uploads.
    pub(super) fn pending_key(&self, id: &str) -> String {
        format!("{}p/{}/{id}", self.prefix, self.instance)
    }

    /// This instance's registration (see `identity`).
    pub(super) fn instance_key(&self) -> String {
        format!("{}{}", self.instance_prefix(), self.instance)
    }

    /// The prefix of every instance's registration.
    pub(super) fn instance_prefix(&self) -> String {
        format!("{}i/", self.prefix)
    }

    /// The prefix of every pending record (of every instance).
    pub(super) fn pending_prefix(&self) -> String {
        format!("{}p/", self.prefix)
    }

    /// The prefix of every garbage record.
    pub(super) fn garbage_prefix(&self) -> String {
        format!("{}g/", self.prefix)
    }

    /// Checks etcd answers.
    pub(super) async fn check(&self) -> io::Result<()> {
        self.etcd.get(&self.name_key("")).await.map(|_| ())
    }

    /// What `name` (a top-level name) holds.
    pub(super) async fn lookup(&self, name: &str) -> Result<Option<Entry>, StorageError> {
        let Some(kv) = self
            .etcd
            .get(&self.name_key(name))
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        parse_entry(&kv.value).map(Some)
    }

    /// Every name and what it holds.
    pub(super) async fn all(&self) -> Result<Vec<(String, Entry)>, StorageError> {
        let head = self.name_key("");
        let kvs = self.etcd.list(&head).await.map_err(unavailable)?;
        kvs.into_iter()
            .map(|kv| Ok((kv.key[head.len()..].to_owned(), parse_entry(&kv.value)?)))
            .collect()
    }

    /// The names held now that are `name` or one of its numbered forms.
    async fn taken(&self, name: &str) -> Result<Vec<Taken>, StorageError> {
        let head = self.name_key("");
        let kvs = self
            .etcd
            .list(&self.name_key(stem(name)))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for kv in kvs {
            let n = &kv.key[head.len()..];
            if n == name || number_of(name, n).is_some() {
                out.push((n.to_owned(), parse_entry(&kv.value)?, kv.mod_revision));
            }
        }
        Ok(out)
    }

    /// Records an upload starting.
    pub(super) async fn add_pending(
        &self,
        id: &str,
        pending: &Pending,
    ) -> Result<(), StorageError> {
        self.etcd
            .put(&self.pending_key(id), &json(pending))
            .await
            .map_err(unavailable)
    }

    /// Removes the record of an upload that ended without a name.
    pub(super) async fn remove_pending(&self, id: &str) -> io::Result<()> {
        self.etcd.delete(&self.pending_key(id)).await
    }

    /// The claim's transaction: `target` named `value` and the upload's
    /// pending record removed, if `compare` holds and the record is still
    /// there (see [`Catalog::still_recorded`]).
    async fn put_name(
        &self,
        compare: Compare,
        mut ops: Vec<Op>,
        target: &str,
        value: &[u8],
        pending_id: &str,
    ) -> io::Result<bool> {
        let record = self.pending_key(pending_id);
        ops.push(Op::Put(self.name_key(target), value.to_vec()));
        ops.push(Op::Delete(record.clone()));
        self.etcd
            .txn(&[compare, Compare::Present(record)], &ops)
            .await
    }

    /// After a claim's transaction failed: the names changed (try again),
    /// or the upload's record is gone, swept (this instance seemed gone to
    /// another), and its objects with it: the upload fails. A claim needs
    /// the record, so a name never points at objects that are gone.
    async fn still_recorded(&self, pending_id: &str) -> Result<(), StorageError> {
        let record = self
            .etcd
            .get(&self.pending_key(pending_id))
            .await
            .map_err(unavailable)?;
        match record {
            Some(_) => Ok(()),
            None => Err(StorageError::Io(io::Error::other(
                "the upload's record was swept (its instance seemed gone): nothing was stored; send it again",
            ))),
        }
    }

    /// Puts `entry` under `name` (or where `policy` sends it) and removes
    /// the upload's pending record, in one transaction. Returns the name
    /// and whether an identical file was already there (then `entry`'s
    /// objects are the caller's to remove).
    pub(super) async fn claim(
        &self,
        name: &str,
        policy: OnConflict,
        entry: &Entry,
        pending_id: &str,
        now: u64,
    ) -> Result<(String, bool), StorageError> {
        let value = json(entry);
        if value.len() > MAX_ENTRY {
            return Err(StorageError::BadTree(format!(
                "the tree is too large for the catalog ({} bytes of names, at most {MAX_ENTRY}; etcd's --max-request-bytes)",
                value.len()
            )));
        }
        for _ in 0..MAX_RACES {
            let taken = self.taken(name).await?;
            // Our own claim, already made: a transaction whose answer was
            // lost and that was sent again (or this loop after it).
            if let Some((n, _, _)) = taken.iter().find(|t| t.1 == *entry) {
                let _ = self.remove_pending(pending_id).await;
                return Ok((n.clone(), false));
            }
            let (target, compare, ops) = match decide(name, policy, entry, &taken) {
                Decision::Same(n) => {
                    let _ = self.remove_pending(pending_id).await;
                    return Ok((n, true));
                }
                Decision::Refuse(Refusal::Exists(n)) => return Err(StorageError::Exists(n)),
                Decision::Refuse(Refusal::KindDiffers(n)) => {
                    return Err(StorageError::Io(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{n}: a file and a directory cannot replace each other"),
                    )))
                }
                Decision::Claim(n) => {
                    let c = Compare::Absent {
                        key: self.name_key(&n),
                        prefix: false,
                    };
                    (n, c, Vec::new())
                }
                Decision::Replace(n, rev) => {
                    let old = taken
                        .iter()
                        .find(|t| t.0 == n)
                        .map(|t| t.1.objects())
                        .unwrap_or_default();
                    let g = Garbage {
                        objects: old.into_iter().map(str::to_owned).collect(),
                        since: now,
                    };
                    let ops = vec![Op::Put(
                        format!("{}{pending_id}", self.garbage_prefix()),
                        json(&g),
                    )];
                    (n.clone(), Compare::ModRevision(self.name_key(&n), rev), ops)
                }
            };
            let made = self.put_name(compare, ops, &target, &value, pending_id);
            match made.await {
                Ok(true) => return Ok((target, false)),
                Ok(false) => self.still_recorded(pending_id).await?,
                // The answer was lost: the claim may have been made.
                Err(e) => {
                    return match self.lookup(&target).await {
                        Ok(Some(found)) if found == *entry => Ok((target, false)),
                        Ok(_) => Err(unavailable(e)),
                        // Not known whether the name was claimed: the
                        // objects stay (the sweeper removes them if not).
                        Err(_) => Err(StorageError::Unsettled(format!(
                            "the catalog (etcd): {e}; whether {target} was stored is not known yet"
                        ))),
                    };
                }
            }
        }
        Err(StorageError::Exists(name.to_owned()))
    }
}

fn parse_entry(value: &[u8]) -> Result<Entry, StorageError> {
    serde_json::from_slice(value).map_err(|e| {
        StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a catalog entry is damaged: {e}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(object: &str, blake3: &str) -> Entry {
        from(object, blake3, "sender 127.0.0.2")
    }

    fn from(object: &str, blake3: &str, sender: &str) -> Entry {
        Entry::File(FileRec {
            object: object.into(),
            size: 3,
            crc: 1,
            blake3: blake3.into(),
            from: sender.into(),
        })
    }

    fn taken(list: &[(&str, &str)]) -> Vec<Taken> {
        list.iter()
            .enumerate()
            .map(|(i, (n, b))| (n.to_string(), file("o", b), i as i64 + 10))
            .collect()
    }

    #[test]
    fn rename_takes_the_name_then_the_next_number() {
        let new = file("new", "x");
        assert_eq!(
            decide("a.txt", OnConflict::Rename, &new, &[]),
            Decision::Claim("a.txt".into())
        );
        let t = taken(&[
            ("a.txt", "1"),
            ("a (1).txt", "2"),
            ("a (5).txt", "3"),
            ("a (x).txt", "4"),
        ]);
        assert_eq!(
            decide("a.txt", OnConflict::Rename, &new, &t),
            Decision::Claim("a (6).txt".into())
        );
        let t = taken(&[("a.txt", "1")]);
        assert_eq!(
            decide("a.txt", OnConflict::Rename, &new, &t),
            Decision::Claim("a (1).txt".into())
        );
    }

    #[test]
    fn an_identical_retry_is_found_under_the_name_or_a_number() {
        let new = file("new", "2");
        let t = taken(&[("a.txt", "1"), ("a (1).txt", "2")]);
        assert_eq!(
            decide("a.txt", OnConflict::Rename, &new, &t),
            Decision::Same("a (1).txt".into())
        );
        let t = taken(&[("a.txt", "2")]);
        for policy in [
            OnConflict::Rename,
            OnConflict::Reject,
            OnConflict::Overwrite,
        ] {
            assert_eq!(
                decide("a.txt", policy, &new, &t),
                Decision::Same("a.txt".into())
            );
        }
    }

    #[test]
    fn reject_and_overwrite() {
        let new = file("new", "x");
        let t = taken(&[("a.txt", "1")]);
        assert_eq!(
            decide("a.txt", OnConflict::Reject, &new, &t),
            Decision::Refuse(Refusal::Exists("a.txt".into()))
        );
        assert_eq!(
            decide("a.txt", OnConflict::Overwrite, &new, &t),
            Decision::Replace("a.txt".into(), 10)
        );
        let tree = Entry::Tree {
            files: vec![],
            from: "sender 127.0.0.2".into(),
        };
        assert_eq!(
            decide("a.txt", OnConflict::Overwrite, &tree, &t),
            Decision::Refuse(Refusal::KindDiffers("a.txt".into()))
        );
    }

    #[test]
    fn another_senders_entry_is_never_replaced_nor_a_retry() {
        let t = taken(&[("a.txt", "1")]);
        let classmate = from("new", "1", "sender 127.0.0.3");
        for policy in [OnConflict::Rename, OnConflict::Overwrite] {
            assert_eq!(
                decide("a.txt", policy, &classmate, &t),
                Decision::Claim("a (1).txt".into()),
                "{policy:?}"
            );
        }
        assert_eq!(
            decide("a.txt", OnConflict::Reject, &classmate, &t),
            Decision::Refuse(Refusal::Exists("a.txt".into()))
        );
    }

    #[test]
    fn trees_are_never_retries() {
        let tree = Entry::Tree {
            files: vec![],
            from: String::new(),
        };
        let t = vec![("d".to_string(), tree.clone(), 3)];
        assert_eq!(
            decide("d", OnConflict::Rename, &tree, &t),
            Decision::Claim("d (1)".into())
        );
    }

    #[test]
    fn entries_round_trip_as_compact_json() {
        let e = Entry::Tree {
            files: vec![TreeFile {
                path: "a/b".into(),
                rec: FileRec {
                    object: "objects/1".into(),
                    size: 2,
                    crc: 3,
                    blake3: "ab".into(),
                    from: String::new(),
                },
            }],
            from: "sender ::1".into(),
        };
        let text = String::from_utf8(json(&e)).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"tree","files":[{"p":"a/b","o":"objects/1","s":2,"c":3,"b":"ab"}],"f":"sender ::1"}"#
        );
        assert_eq!(parse_entry(text.as_bytes()).unwrap(), e);
    }
}
