//! The sweeper: removes what no name points at. At start and every so
//! often: the uploads this instance left in an earlier run (its pending
//! records of another run: a record of this run is an upload in flight,
//! which may have begun before the first pass), and, on any instance: objects a name stopped pointing at
//! (`overwrite`) once the grace for downloads in flight is over, uploads
//! pending on an instance whose registration has expired (it is gone: see
//! `identity`), multipart uploads no pending record explains, and objects no
//! record explains that are older than `sweep_after`. It never removes an
//! object a name points at: the names are read after the objects are
//! listed, so an object named meanwhile is seen as named.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::catalog::{Garbage, Pending};
use super::etcd::{Compare, Op};
use super::{now_secs, Shared};
use crate::storage::StorageError;

/// How long a replaced object stays for downloads in flight.
const REPLACED_GRACE: u64 = 300;

/// An instance unregistered this long (its lease expired: it is gone) has
/// its pending uploads removed by the others. Measured on this process's
/// monotonic clock, between passes: no clock across instances is compared.
const GONE_FOR: Duration = Duration::from_secs(2 * super::identity::LEASE_TTL);

/// Pending records of unregistered instances, and when this sweeper first
/// saw each so.
pub(super) type Unregistered = std::collections::HashMap<String, tokio::time::Instant>;

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Swept {
    pub uploads: usize,
    pub objects: usize,
    /// Multipart uploads no pending record explains, aborted.
    pub orphans: usize,
}

/// Starts the sweeper: a pass at once (this instance's leftovers from its
/// last run go then), then one every `sweep_after / 4`, kept between 1 s
/// and 10 minutes.
pub(super) fn start(shared: Arc<Shared>) {
    let every = (shared.sweep_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        let mut unregistered = Unregistered::new();
        loop {
            match pass(&shared, now_secs(), &mut unregistered).await {
                Ok(s) if s != Swept::default() => {
                    tracing::info!(
                        uploads = s.uploads,
                        objects = s.objects,
                        orphaned_multipart_uploads = s.orphans,
                        "swept leftovers from the object store"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sweeping the object store failed; trying again later")
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Removes every object under `prefix`.
pub(super) async fn remove_prefix(shared: &Shared, prefix: &str) -> io::Result<()> {
    for key in shared.store.list(prefix).await? {
        shared.store.delete(&key).await?;
    }
    Ok(())
}

/// Removes what a pending record stands for, but for named objects.
async fn remove_pending(shared: &Shared, p: &Pending, named: &HashSet<String>) -> io::Result<()> {
    if let Some(u) = &p.upload_id {
        shared.store.abort(&p.object, u).await?;
    }
    let keys = match p.prefix {
        true => shared.store.list(&p.object).await?,
        false => vec![p.object.clone()],
    };
    for key in keys.iter().filter(|k| !named.contains(*k)) {
        shared.store.delete(key).await?;
    }
    Ok(())
}

/// Aborts the multipart uploads under ferry's objects that no live
/// pending record explains (the answer to CreateMultipartUpload was lost,
/// or its record could not be written) once older than `sweep_after`:
/// their parts would otherwise be kept, and billed, for ever.
async fn abort_orphans(shared: &Shared, pending: &HashSet<String>, now: u64) -> io::Result<usize> {
    let mut aborted = 0;
    for u in shared.store.list_multipart(&shared.objects).await? {
        let tree = u
            .key
            .strip_prefix(shared.objects.as_str())
            .and_then(|rest| rest.split_once('/'))
            .map(|(t, _)| format!("{}{t}/", shared.objects));
        if pending.contains(&u.key) || tree.is_some_and(|t| pending.contains(&t)) {
            continue;
        }
        let born_at = u
            .initiated
            .or_else(|| u.key.strip_prefix(shared.objects.as_str()).and_then(born));
        let old = born_at.is_some_and(|b| now.saturating_sub(b) > shared.sweep_after.as_secs());
        if old && shared.store.abort(&u.key, &u.upload_id).await.is_ok() {
            tracing::info!(key = %u.key, "aborted a multipart upload no pending record explains");
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// The time at the head of an object id (`<secs hex>-…`).
fn born(id: &str) -> Option<u64> {
    u64::from_str_radix(id.split('-').next()?, 16).ok()
}

/// One pass.
pub(super) async fn pass(
    shared: &Shared,
    now: u64,
    unregistered: &mut Unregistered,
) -> Result<Swept, StorageError> {
    let io = |e: io::Error| StorageError::Unavailable(e.to_string());
    let mut swept = Swept::default();
    let etcd = &shared.catalog.etcd;
    let records = etcd
        .list(&shared.catalog.pending_prefix())
        .await
        .map_err(io)?;
    // Listed before the names are read: an object named after this sees its name.
    let objects = shared.store.list(&shared.objects).await.map_err(io)?;
    let garbage = etcd
        .list(&shared.catalog.garbage_prefix())
        .await
        .map_err(io)?;
    let named: HashSet<String> = shared
        .catalog
        .all()
        .await?
        .iter()
        .flat_map(|(_, e)| {
            e.objects()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let live = super::identity::live(&shared.catalog).await.map_err(io)?;
    let (pending, uploads) = sweep_pending(shared, records, &named, &live, unregistered).await;
    swept.uploads = uploads;
    swept.orphans = abort_orphans(shared, &pending, now).await.map_err(io)?;
    let (replaced, objects_gone) = sweep_garbage(shared, garbage, &named, now).await;
    swept.objects = objects_gone;
    for key in objects {
        let Some(rest) = key.strip_prefix(shared.objects.as_str()) else {
            continue;
        };
        let tree_prefix = rest
            .split_once('/')
            .map(|(t, _)| format!("{}{t}/", shared.objects));
        let explained = named.contains(&key)
            || pending.contains(&key)
            || replaced.contains(&key)
            || tree_prefix.is_some_and(|t| pending.contains(&t));
        let old = born(rest).is_some_and(|b| now.saturating_sub(b) > shared.sweep_after.as_secs());
        if !explained && old && shared.store.delete(&key).await.is_ok() {
            swept.objects += 1;
        }
    }
    Ok(swept)
}

/// Pending uploads: this instance's from an earlier run, and those of an
/// instance unregistered (gone) for [`GONE_FOR`], removed. A record whose
/// upload was named after all (a claim whose answer was lost) only goes;
/// its objects stay. An instance wrongly taken for gone loses nothing: its
/// claim requires the record, so it cannot name what was removed. Returns
/// the objects of the records kept (uploads in flight) and how many were
/// removed.
async fn sweep_pending(
    shared: &Shared,
    records: Vec<super::etcd::Kv>,
    named: &HashSet<String>,
    live: &HashSet<String>,
    unregistered: &mut Unregistered,
) -> (HashSet<String>, usize) {
    let own = shared.catalog.pending_key("");
    let pending_prefix = shared.catalog.pending_prefix();
    let mut pending = HashSet::new();
    let mut seen = HashSet::new();
    let mut removed = 0;
    for kv in records {
        let Ok(p) = serde_json::from_slice::<Pending>(&kv.value) else {
            continue;
        };
        let earlier_run = kv.key.starts_with(&own) && p.run != shared.run;
        let instance = kv
            .key
            .strip_prefix(&pending_prefix)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        // Never this instance's own records of this run, whatever its
        // lease did: they are its uploads in flight.
        let gone = !kv.key.starts_with(&own) && !live.contains(instance) && {
            seen.insert(kv.key.clone());
            let first = *unregistered
                .entry(kv.key.clone())
                .or_insert_with(tokio::time::Instant::now);
            first.elapsed() >= GONE_FOR
        };
        if !(earlier_run || gone) {
            pending.insert(p.object);
            continue;
        }
        // The record goes first, and only as it was listed: a claim needs
        // the record, so once it is gone no name can be given to these
        // objects, and a claim made since leaves it changed (or gone) and
        // the objects alone. Objects whose removal then fails are no
        // record's, and go by the age rule.
        let unchanged = Compare::ModRevision(kv.key.clone(), kv.mod_revision);
        let etcd = &shared.catalog.etcd;
        if etcd
            .txn(&[unchanged], &[Op::Delete(kv.key.clone())])
            .await
            .unwrap_or(false)
        {
            let _ = remove_pending(shared, &p, named).await;
            removed += 1;
        }
    }
    unregistered.retain(|k, _| seen.contains(k));
    (pending, removed)
}

/// Objects `overwrite` replaced, removed once their grace is over (but for
/// any a name points at again). Returns every replaced object still listed
/// and how many were removed.
async fn sweep_garbage(
    shared: &Shared,
    garbage: Vec<super::etcd::Kv>,
    named: &HashSet<String>,
    now: u64,
) -> (HashSet<String>, usize) {
    let mut replaced = HashSet::new();
    let mut removed = 0;
    for kv in garbage {
        let Ok(g) = serde_json::from_slice::<Garbage>(&kv.value) else {
            continue;
        };
        replaced.extend(g.objects.iter().cloned());
        let old = now.saturating_sub(g.since) > REPLACED_GRACE;
        let mut gone = true;
        for o in g.objects.iter().filter(|o| !named.contains(*o)) {
            gone &= old && shared.store.delete(o).await.is_ok();
        }
        if gone {
            let _ = shared.catalog.etcd.delete(&kv.key).await;
            removed += g.objects.len();
        }
    }
    (replaced, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_id_starts_with_its_time() {
        assert_eq!(born("0067a1b2c3-abc-1f"), Some(0x67a1b2c3));
        assert_eq!(born("zz-abc"), None);
    }
}
