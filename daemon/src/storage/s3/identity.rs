//! Instance identity that cannot be cloned: while it runs, an instance
//! holds `<prefix>i/<instance>` in etcd on a lease it keeps alive. A second
//! process presenting the same id (a state directory copied from another
//! instance's) finds the key held and refuses to start; the key of an
//! instance that died goes when its lease expires, and that expiry, not a
//! clock, is what tells the sweeper an instance is gone.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catalog::Catalog;
use super::etcd::{Compare, Op};

/// The lease's time to live: how long after its death an instance counts
/// as gone.
pub(super) const LEASE_TTL: u64 = 10;

/// Who holds an instance id.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Holder {
    host: String,
    pid: u32,
    run: String,
}

impl Holder {
    fn me(run: &str) -> Holder {
        Holder {
            host: hostname(),
            pid: std::process::id(),
            run: run.to_owned(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Whether `pid` is a running ferryd on this host.
fn ferryd_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ferryd")
}

/// Why the id could not be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum TakeError {
    #[error("instance id {id} is held by a running ferryd (pid {pid} on {host}): this state directory was copied from another instance's; give this ferryd a state directory of its own (an empty one makes a new id)")]
    Held { id: String, pid: u32, host: String },
    #[error("etcd: {0}")]
    Etcd(std::io::Error),
}

/// Takes this instance's id for this run: its lease, kept alive by [`keep`].
/// An id held by a ferryd that is gone (killed on this host, or whose
/// lease runs out within [`LEASE_TTL`]) is taken over; one held by a
/// running ferryd is refused.
pub(super) async fn take(catalog: &Catalog, run: &str) -> Result<i64, TakeError> {
    let etcd = &catalog.etcd;
    let key = catalog.instance_key();
    let me = serde_json::to_vec(&Holder::me(run)).unwrap_or_default();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(LEASE_TTL + 5);
    loop {
        let lease = etcd.grant(LEASE_TTL).await.map_err(TakeError::Etcd)?;
        let absent = Compare::Absent {
            key: key.clone(),
            prefix: false,
        };
        let put = Op::PutLeased(key.clone(), me.clone(), lease);
        if etcd.txn(&[absent], &[put]).await.map_err(TakeError::Etcd)? {
            return Ok(lease);
        }
        let Some(kv) = etcd.get(&key).await.map_err(TakeError::Etcd)? else {
            continue;
        };
        let holder: Option<Holder> = serde_json::from_slice(&kv.value).ok();
        let here = holder.as_ref().is_some_and(|h| h.host == hostname());
        match holder {
            // This host's ferryd of this id is dead (killed): its lease
            // still runs, but nothing keeps it alive. Taken over at once.
            Some(h) if here && !ferryd_running(h.pid) => {
                let stale = Compare::ModRevision(key.clone(), kv.mod_revision);
                let _ = etcd.txn(&[stale], &[Op::Delete(key.clone())]).await;
            }
            Some(h) if here || tokio::time::Instant::now() >= give_up => {
                return Err(TakeError::Held {
                    id: catalog.instance.clone(),
                    pid: h.pid,
                    host: h.host,
                });
            }
            // Another host's holder: gone if its lease runs out.
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Keeps the lease alive, every third of its time to live; if it expired
/// (etcd out of reach for longer), takes the id again on a new lease.
pub(super) fn keep(shared: Arc<super::Shared>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(LEASE_TTL / 3)).await;
            let id = shared.lease.load(Ordering::Relaxed);
            match shared.catalog.etcd.keep_alive(id).await {
                Ok(ttl) if ttl > 0 => {}
                Ok(_) => {
                    tracing::error!("this instance's registration in etcd expired (etcd was out of reach): taking it again");
                    match take(&shared.catalog, &shared.run).await {
                        Ok(new) => shared.lease.store(new, Ordering::Relaxed),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot take this instance's id again")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keeping this instance's registration alive failed; trying again")
                }
            }
        }
    });
}

/// The instances registered now (their ids).
pub(super) async fn live(catalog: &Catalog) -> std::io::Result<std::collections::HashSet<String>> {
    let prefix = catalog.instance_prefix();
    Ok(catalog
        .etcd
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned))
        .collect())
}
