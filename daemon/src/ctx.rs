//! What every service shares: the configuration in force, storage, the
//! caps and quotas, and the shutdown tokens.

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use ferry_config::{Config, ServiceId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::failure::{Failure, Refusal};
use crate::limits::{IdleConnections, Limiter, UploadQuota};
use crate::observe::Observer;
use crate::storage::{Download, Origin, Storage, StorageError, TreeReader};
use ferry_proto::names::RelPath;

/// What every service shares.
pub(crate) struct Ctx {
    /// The configuration in force; replaced as a whole by a reload.
    live: ArcSwap<Config>,
    /// The storage root.
    pub(crate) storage: Storage,
    /// The cap on TCP connections, shared by the TCP services.
    pub(crate) connections: Arc<Limiter>,
    /// The cap on lab page connections, apart from the transfers' (see
    /// [`crate::http`]): a crowd at the page never takes a transfer's place.
    pub(crate) page_connections: Arc<Limiter>,
    /// `signal` connections waiting for a request: the first to close at the cap.
    pub(crate) idle: Arc<IdleConnections>,
    /// Per-address upload quotas, over every upload protocol.
    pub(crate) uploads: UploadQuota,
    /// Cancelled when shutdown starts: stop accepting, end idle connections.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the grace period ends: abort transfers in flight.
    pub(crate) abort: CancellationToken,
    /// Every task of every service, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// UDP upload sessions in the table right now.
    pub(crate) udp_sessions: AtomicUsize,
    /// The most UDP upload sessions the table has held at once.
    pub(crate) udp_sessions_peak: AtomicUsize,
    /// Attempts, metrics and the ledger: what the HTTP listener shows.
    pub(crate) observe: Arc<Observer>,
    /// The main runtime, where signal transfers run once the control
    /// thread has read their request (set when serving starts).
    pub(crate) main: std::sync::OnceLock<tokio::runtime::Handle>,
    /// The control thread's heartbeat, once it runs: the handout framing
    /// asks it whether a pause may have been lost ([`crate::attention`]).
    pub(crate) attention: std::sync::OnceLock<Arc<crate::attention::Shared>>,
    /// Where each service listens, once bound (the page shows it).
    pub(crate) bound: std::sync::OnceLock<Vec<(ServiceId, std::net::SocketAddr)>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Whether any value in force changed.
    pub changed: bool,
    /// Keys whose new values need a restart (they keep their old values until then).
    pub needs_restart: Vec<String>,
}

impl Ctx {
    /// Who an upload from `peer` is from, under `[access]`.
    pub(crate) fn origin_for(&self, peer: IpAddr) -> Origin {
        crate::access::origin_for(&self.config().access, peer)
    }

    /// Refuses `peer` a download of `label`, stored by `origin`, when
    /// `[access]` says so (and logs it for the admin).
    pub(crate) fn may_download(
        &self,
        peer: IpAddr,
        label: &str,
        origin: Origin,
    ) -> Result<(), StorageError> {
        use crate::access::Refusal;
        let refusal = match crate::access::may_download(&self.config().access, peer, origin) {
            Ok(()) => return Ok(()),
            Err(Refusal::AnotherSender) => StorageError::Private(label.to_owned()),
            Err(Refusal::Unrecorded) => StorageError::Unrecorded(label.to_owned()),
        };
        tracing::info!(%peer, name = %label, ?origin, "download refused by [access]");
        Err(refusal)
    }

    /// Opens the file `path` for `peer`, if `[access]` lets it download it.
    pub(crate) async fn open_for(
        &self,
        peer: IpAddr,
        path: &RelPath,
    ) -> Result<Download, StorageError> {
        let download = self.storage.open_read(path).await?;
        self.may_download(peer, &path.to_string(), download.origin())?;
        Ok(download)
    }

    /// Opens the directory `path` for `peer`, if `[access]` lets it
    /// download it (its files are checked again as they are sent).
    pub(crate) async fn tree_for(
        &self,
        peer: IpAddr,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<TreeReader, StorageError> {
        let tree = self.storage.read_tree(path, max_entries, max_depth).await?;
        self.may_download(peer, &path.to_string(), tree.origin())?;
        Ok(tree)
    }

    /// Shared state for a daemon serving `config` from `storage`.
    pub(crate) fn new(config: Config, storage: Storage) -> Ctx {
        let uploads = UploadQuota::new(
            config.limits.max_uploads_per_ip,
            config.limits.max_upload_bytes_per_ip.0,
            config.limits.upload_window.0,
        );
        let observe = Arc::new(Observer::open(storage.root(), &config));
        Ctx {
            observe,
            bound: std::sync::OnceLock::new(),
            main: std::sync::OnceLock::new(),
            attention: std::sync::OnceLock::new(),
            live: ArcSwap::from_pointee(config),
            storage,
            connections: Limiter::new(),
            page_connections: Limiter::new(),
            idle: Arc::default(),
            uploads,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            udp_sessions: AtomicUsize::new(0),
            udp_sessions_peak: AtomicUsize::new(0),
        }
    }

    /// Spawns `task` on the main runtime (where disk work belongs, whichever
    /// thread asks), tracked for shutdown.
    pub(crate) fn spawn_main<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.main.get() {
            Some(main) => self.tracker.spawn_on(task, main),
            None => self.tracker.spawn(task),
        }
    }

    /// The configuration in force now. Each connection, session and download
    /// takes it once when it starts, so a reload never changes a transfer
    /// midway.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.live.load_full()
    }

    /// Admits one more upload of `size` announced bytes from `ip` at `now`
    /// under the per-address quotas, or refuses it with the reason the
    /// client is told.
    pub(crate) fn admit_upload(&self, now: Instant, ip: IpAddr, size: u64) -> Result<(), Failure> {
        self.quota_result(self.uploads.admit(now, ip, size))
    }

    /// Like [`Ctx::admit_upload`], taking nothing (to decide before evicting anyone).
    pub(crate) fn check_upload(&self, now: Instant, ip: IpAddr, size: u64) -> Result<(), Failure> {
        self.quota_result(self.uploads.check(now, ip, size))
    }

    fn quota_result(&self, r: Result<(), Duration>) -> Result<(), Failure> {
        r.map_err(|wait| {
            let l = &self.config().limits;
            Failure::Refused(Refusal::Quota {
                files: l.max_uploads_per_ip,
                bytes: l.max_upload_bytes_per_ip,
                window: l.upload_window,
                retry_secs: crate::limits::retry_secs(wait),
            })
        })
    }

    /// Applies what can change without rebinding; see [`crate::Controller::reload`].
    pub(crate) fn reload(&self, new: Config) -> Reload {
        let old = self.config();
        let mut applied = new;
        let mut needs_restart = Vec::new();
        macro_rules! keep {
            ($($field:ident).+, $key:expr) => {
                if applied.$($field).+ != old.$($field).+ {
                    needs_restart.push(String::from($key));
                    applied.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!(storage, "storage");
        if applied.access.downloads == ferry_config::Downloads::Sender
            && !self.storage.records_origins()
        {
            // A restart says why: the root cannot record senders.
            keep!(access.downloads, "access.downloads");
        }
        keep!(on_conflict, "on_conflict");
        keep!(log.format, "log.format");
        for id in ServiceId::ALL {
            let (enabled, bind) = old.endpoint(id);
            let (new_enabled, new_bind) = applied.endpoint_mut(id);
            if *new_enabled != enabled {
                needs_restart.push(format!("{id}.enabled"));
                *new_enabled = enabled;
            }
            if *new_bind != bind {
                needs_restart.push(format!("{id}.bind"));
                *new_bind = bind;
            }
        }
        // The quotas' state lives in their buckets, made at start.
        keep!(limits.max_uploads_per_ip, "limits.max_uploads_per_ip");
        keep!(
            limits.max_upload_bytes_per_ip,
            "limits.max_upload_bytes_per_ip"
        );
        keep!(limits.upload_window, "limits.upload_window");
        keep!(udp_download.budget_per_ip, "udp_download.budget_per_ip");
        keep!(udp_download.budget_window, "udp_download.budget_window");
        // The HTTP listener is bound, and the observer and the ledger made, at start.
        keep!(http.enabled, "http.enabled");
        keep!(http.bind, "http.bind");
        keep!(http.recent, "http.recent");
        keep!(ledger.enabled, "ledger.enabled");
        keep!(ledger.max_size, "ledger.max_size");
        keep!(ledger.keep, "ledger.keep");
        let changed = applied != *old;
        self.live.store(Arc::new(applied));
        Reload {
            changed,
            needs_restart,
        }
    }
}
