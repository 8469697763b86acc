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

/// Who holds an instance id: the host, the state directory and the run.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Holder {
    host: String,
    state: String,
    pid: u32,
    run: String,
}

impl Holder {
    fn me(state: &std::path::Path, run: &str) -> Holder {
        Holder {
            host: hostname(),
            state: state.to_string_lossy().into_owned(),
            pid: std::process::id(),
            run: run.to_owned(),
        }
    }

    /// An earlier run of this very instance: the same host and the same
    /// state directory, which this process holds locked, so no other live
    /// process can be using it. (A copy of the directory has another path,
    /// or is on another host.) Decided without looking at processes: a
    /// sandbox may hide them, and a container's ferryd may reuse a pid.
    fn predecessor_of(&self, me: &Holder) -> bool {
        self.host == me.host && self.state == me.state && self.run != me.run
    }
}

/// The host's name (`uname`: readable whatever `/proc` a sandbox leaves).
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Why the id could not be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum TakeError {
    #[error("instance id {id} is held by a running ferryd (pid {pid} on {host}, state directory {state}): this state directory was copied from another instance's; give this ferryd a state directory of its own (an empty one makes a new id)")]
    Held {
        id: String,
        pid: u32,
        host: String,
        state: String,
    },
    #[error("etcd: {0}")]
    Etcd(std::io::Error),
}

/// Takes this instance's id for this run: its lease, kept alive by [`keep`].
/// An id held by an earlier run of this instance (killed: same host, same
/// state directory) is taken over at once; one whose holder's lease runs
/// out within [`LEASE_TTL`] (a holder that died elsewhere) then; one still
/// held after that is refused.
pub(super) async fn take(
    catalog: &Catalog,
    state: &std::path::Path,
    run: &str,
) -> Result<i64, TakeError> {
    let etcd = &catalog.etcd;
    let key = catalog.instance_key();
    let holder_me = Holder::me(state, run);
    let me = serde_json::to_vec(&holder_me).unwrap_or_default();
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
        match holder {
            // An earlier run of this instance, killed: its lease still
            // runs, but nothing keeps it alive. Taken over at once.
            Some(h) if h.predecessor_of(&holder_me) => {
                let stale = Compare::ModRevision(key.clone(), kv.mod_revision);
                let _ = etcd.txn(&[stale], &[Op::Delete(key.clone())]).await;
            }
            _ if tokio::time::Instant::now() >= give_up => {
                let h = holder.unwrap_or(Holder {
                    host: "?".into(),
                    state: "?".into(),
                    pid: 0,
                    run: String::new(),
                });
                return Err(TakeError::Held {
                    id: catalog.instance.clone(),
                    pid: h.pid,
                    host: h.host,
                    state: h.state,
                });
            }
            // Someone else's: gone if its lease runs out.
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
                    match take(&shared.catalog, &shared.state, &shared.run).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_earlier_run_of_the_same_directory_on_this_host_is_taken_over() {
        let me = Holder::me(std::path::Path::new("/var/lib/ferry"), "run2");
        let earlier = Holder {
            run: "run1".into(),
            pid: 1,
            ..Holder::me(std::path::Path::new("/var/lib/ferry"), "")
        };
        assert!(earlier.predecessor_of(&me));
        // A copy of the directory (another path), or the same path on
        // another host, is someone else, whatever its pid.
        let copy = Holder {
            run: "run1".into(),
            ..Holder::me(std::path::Path::new("/srv/ferry-copy"), "")
        };
        assert!(!copy.predecessor_of(&me));
        let elsewhere = Holder {
            host: "other-box".into(),
            run: "run1".into(),
            ..Holder::me(std::path::Path::new("/var/lib/ferry"), "")
        };
        assert!(!elsewhere.predecessor_of(&me));
        // This very run is not its own predecessor.
        assert!(!Holder::me(std::path::Path::new("/var/lib/ferry"), "run2").predecessor_of(&me));
        assert!(!hostname().is_empty());
    }
}
