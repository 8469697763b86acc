//! The S3 backend: file bytes in an S3-compatible bucket (Garage, MinIO,
//! Ceph RGW, AWS), names in etcd, so several ferryd serve one store.
//!
//! - [`store`]: the S3 calls (rusty-s3 signs, hyper sends);
//! - [`etcd`]: etcd's JSON gateway, member by member;
//! - [`catalog`]: names → objects, and where an upload's name goes
//!   ([`catalog::decide`], no I/O);
//! - [`upload`], [`read`], [`tree`]: the storage interface's streams;
//! - [`sweep`]: removing objects no name points at.
//!
//! An object is written first, under a key no one else uses
//! (`<prefix>objects/<time>-<instance>-<n>`), and its name claimed in etcd
//! only once it is whole and checked. Until then a pending record in etcd
//! says whose it is, so a restarted instance removes what it left.

mod catalog;
mod etcd;
mod http;
mod identity;
mod read;
mod store;
mod sweep;
mod tree;
mod upload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_config::{OnConflict, StorageConfig};
use ferry_proto::names::{RelPath, SafeName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use self::catalog::{Catalog, Pending};
pub(crate) use self::http::roots;
pub use self::http::CaError;
pub(crate) use self::store::Secret;
use self::store::Store;
use self::upload::{S3Upload, Target};
use crate::storage::{
    Announced, Backend, Download, Origin, StorageError, TreeReader, TreeUpload, Upload,
};

/// The instance id's file in the state directory.
const INSTANCE_FILE: &str = ".ferry-instance";

/// Memory budget unit: permits are KiB, so one part fits a `u32` of them.
const UNIT: u64 = 1024;

/// What the backend's pieces share.
pub(super) struct Shared {
    store: Store,
    catalog: Catalog,
    /// `<prefix>objects/`.
    objects: String,
    on_conflict: OnConflict,
    part_size: usize,
    budget: Arc<Semaphore>,
    wait_for_memory: Duration,
    sweep_after: Duration,
    state: PathBuf,
    counter: AtomicU64,
    /// This process's run: see [`Pending::run`].
    run: String,
    /// The etcd lease this instance's registration is held on.
    lease: std::sync::atomic::AtomicI64,
    tasks: TaskTracker,
    /// Held while the backend lives: the state directory's lock.
    _lock: std::fs::File,
}

/// The S3 backend.
pub(crate) struct S3Backend {
    shared: Arc<Shared>,
}

/// Seconds since the epoch.
pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum S3OpenError {
    /// The configuration or the credentials are unusable.
    #[error("{0}")]
    Config(String),
    /// The bucket or etcd cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// A running ferryd holds this instance's id: the state directory was
    /// copied from another instance's.
    #[error("{0}")]
    InstanceInUse(String),
    /// Another ferryd uses this state directory (and its instance id).
    #[error("storage.path {path}: {source}")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Who holds it.
        source: crate::storage::OpenError,
    },
    /// The state directory cannot be used.
    #[error("storage.path {path}: {source}")]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why the S3 credentials could not be read; names the file or the
/// variable, never a value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// `credentials_file` cannot be read.
    #[error("storage.s3.credentials_file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A key is missing (or empty) where it was looked for.
    #[error("{key} is not set {}", match .file { Some(p) => format!("in {}", p.display()), None => "in the environment (or set storage.s3.credentials_file)".to_owned() })]
    Missing {
        /// The variable.
        key: &'static str,
        /// The file looked in; `None`: the environment.
        file: Option<PathBuf>,
    },
}

/// Reads the access key: from `credentials_file` when set, else from the
/// environment. The error names the file or variable, never a value.
pub(crate) fn load_credentials(s3: &ferry_config::storage::S3) -> Result<Secret, CredentialsError> {
    let vars = match &s3.credentials_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::File {
                path: path.clone(),
                source,
            })?;
            parse_env_file(&text)
        }
        None => ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .into_iter()
            .filter_map(|k| Some((k.to_owned(), std::env::var(k).ok()?)))
            .collect(),
    };
    let get = |key: &'static str| {
        vars.iter()
            .find(|(n, v)| n == key && !v.is_empty())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| CredentialsError::Missing {
                key,
                file: s3.credentials_file.clone(),
            })
    };
    Ok(Secret {
        key_id: get("AWS_ACCESS_KEY_ID")?,
        secret: get("AWS_SECRET_ACCESS_KEY")?,
    })
}

/// `KEY=value` lines (optionally `export KEY=value`, quoted values, `#` comments).
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// 12 hex digits no other process makes: the time, the pid and `salt`, hashed.
fn fresh_id(salt: &str) -> String {
    let seed = format!(
        "{:?}{}{salt}",
        std::time::SystemTime::now(),
        std::process::id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..12].to_owned()
}

/// This instance's id, kept in the state directory across restarts.
fn instance_id(state: &Path) -> io::Result<String> {
    let file = state.join(INSTANCE_FILE);
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(id.to_owned());
        }
    }
    let id = fresh_id(&state.to_string_lossy());
    let temp = state.join(format!("{INSTANCE_FILE}.tmp"));
    std::fs::write(&temp, &id)?;
    std::fs::rename(&temp, &file)?;
    Ok(id)
}

impl S3Backend {
    /// Reads the credentials, checks the bucket and etcd answer.
    pub(crate) async fn open(
        config: &StorageConfig,
        on_conflict: OnConflict,
    ) -> Result<S3Backend, S3OpenError> {
        let (Some(s3), Some(cat)) = (&config.s3, &config.catalog) else {
            return Err(S3OpenError::Config(
                "backend = \"s3\" needs [storage.s3] and [storage.catalog]".into(),
            ));
        };
        let secret = load_credentials(s3).map_err(|e| S3OpenError::Config(e.to_string()))?;
        let state_err = |source| S3OpenError::State {
            path: config.path.clone(),
            source,
        };
        std::fs::create_dir_all(&config.path).map_err(state_err)?;
        let state = std::fs::canonicalize(&config.path).map_err(state_err)?;
        // One ferryd per state directory: two would share an instance id,
        // and each would take the other's uploads in flight for its own
        // leftovers at its start.
        let lock = crate::storage::local::lock_root(&state).map_err(|source| match source {
            crate::storage::OpenError::Io(source) => S3OpenError::State {
                path: state.clone(),
                source,
            },
            locked => S3OpenError::Locked {
                path: state.clone(),
                source: locked,
            },
        })?;
        let instance = instance_id(&state).map_err(state_err)?;
        let roots =
            http::roots(s3.ca_file.as_deref()).map_err(|e| S3OpenError::Config(e.to_string()))?;
        let http = http::Http::new(Duration::from_secs(5), roots);
        let timeout = s3.request_timeout.0;
        let store = Store::new(
            http.clone(),
            &s3.endpoint,
            &s3.bucket,
            &s3.region,
            &secret,
            timeout,
        )
        .map_err(|e| S3OpenError::Config(format!("storage.s3: {e}")))?;
        store.check(&s3.prefix).await.map_err(|e| {
            S3OpenError::Unreachable(format!("bucket {:?} at {}: {e}", s3.bucket, s3.endpoint))
        })?;
        let etcd = etcd::Etcd::new(http, &cat.etcd, cat.timeout.0);
        let catalog = Catalog::new(etcd, &cat.prefix, instance);
        catalog.check().await.map_err(|e| {
            S3OpenError::Unreachable(format!("etcd ({}): {e}", cat.etcd.join(", ")))
        })?;
        let run = fresh_id("");
        let lease = identity::take(&catalog, &state, &run)
            .await
            .map_err(|e| match e {
                e @ identity::TakeError::Held { .. } => S3OpenError::InstanceInUse(e.to_string()),
                identity::TakeError::Etcd(e) => {
                    S3OpenError::Unreachable(format!("etcd ({}): {e}", cat.etcd.join(", ")))
                }
            })?;
        let budget = (s3.memory_budget.0 / UNIT) as usize;
        Ok(S3Backend {
            shared: Arc::new(Shared {
                store,
                catalog,
                objects: format!("{}objects/", s3.prefix),
                on_conflict,
                part_size: s3.part_size.0 as usize,
                budget: Arc::new(Semaphore::new(budget)),
                wait_for_memory: timeout,
                sweep_after: s3.sweep_after.0,
                state,
                counter: AtomicU64::new(0),
                run,
                lease: std::sync::atomic::AtomicI64::new(lease),
                tasks: TaskTracker::new(),
                _lock: lock,
            }),
        })
    }
}

impl Shared {
    /// The pending record of an upload starting now, in this run.
    fn pending(&self, object: String, upload_id: Option<String>, prefix: bool) -> Pending {
        Pending {
            object,
            upload_id,
            prefix,
            since: now_secs(),
            run: self.run.clone(),
        }
    }

    /// A key no other upload, on any instance, uses: the time first, so
    /// the sweeper can tell an object's age from its key.
    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!(
            "{:010x}-{}-{nanos:08x}{n:x}",
            now_secs(),
            self.catalog.instance
        )
    }

    /// Memory for an upload of at most `limit` bytes: all of it when it fits
    /// in one part, else two parts. Waits for it, up to `wait_for_memory`.
    async fn memory_for(&self, limit: u64) -> Result<OwnedSemaphorePermit, StorageError> {
        let part = self.part_size as u64;
        let bytes = if limit <= part { limit } else { 2 * part };
        let permits = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let acquire = self.budget.clone().acquire_many_owned(permits);
        match tokio::time::timeout(self.wait_for_memory, acquire).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(StorageError::Unavailable(
                "every upload's share of memory is in use (storage.s3.memory_budget); try again shortly".into(),
            )),
        }
    }

    /// Starts an upload to `key` under a pending record of its own.
    async fn begin(
        self: &Arc<Self>,
        target: Target,
        limit: u64,
        exact: bool,
    ) -> Result<S3Upload, StorageError> {
        let permit = self.memory_for(limit).await?;
        let id = self.new_id();
        let key = format!("{}{id}", self.objects);
        let pending = self.pending(key.clone(), None, false);
        self.catalog.add_pending(&id, &pending).await?;
        Ok(S3Upload::new(
            self.clone(),
            target,
            id,
            true,
            key,
            limit,
            exact,
            permit,
        ))
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> &Path {
        &self.shared.state
    }

    fn start_background(&self) {
        identity::keep(self.shared.clone());
        sweep::start(self.shared.clone());
    }

    async fn flush_background(&self, limit: Duration) {
        self.shared.tasks.close();
        let _ = tokio::time::timeout(limit, self.shared.tasks.wait()).await;
        // Stopped cleanly: the id is free at once, not when the lease runs
        // out. Revoking the lease removes only what this run holds.
        let lease = self.shared.lease.load(std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::time::timeout(limit, self.shared.catalog.etcd.revoke(lease)).await;
    }

    async fn begin_write(
        &self,
        name: SafeName,
        size: Announced,
        from: Origin,
    ) -> Result<Upload, StorageError> {
        let (limit, exact) = size.limit();
        let target = Target::Name(name, from.record().unwrap_or_default());
        Ok(Box::new(self.shared.begin(target, limit, exact).await?))
    }

    async fn open_read(&self, path: &RelPath) -> Result<Download, StorageError> {
        read::open(&self.shared, path).await
    }

    async fn read_tree(
        &self,
        path: &RelPath,
        max_entries: usize,
        max_depth: usize,
    ) -> Result<TreeReader, StorageError> {
        read::tree(&self.shared, path, max_entries, max_depth).await
    }

    async fn list_files(
        &self,
        path: &RelPath,
        max_entries: usize,
    ) -> Result<Vec<(SafeName, u64)>, StorageError> {
        read::list(&self.shared, path, max_entries).await
    }

    async fn begin_tree(
        &self,
        name: SafeName,
        max_depth: usize,
        from: Origin,
    ) -> Result<TreeUpload, StorageError> {
        Ok(Box::new(
            tree::S3Tree::begin(self.shared.clone(), name, max_depth, from).await?,
        ))
    }

    fn records_origins(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_read_like_a_shell_would() {
        let vars = parse_env_file(
            "# key\nexport AWS_ACCESS_KEY_ID=\"GK1\"\n\nAWS_SECRET_ACCESS_KEY='s=cret'\n",
        );
        assert_eq!(
            vars,
            vec![
                ("AWS_ACCESS_KEY_ID".into(), "GK1".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "s=cret".into())
            ]
        );
    }

    #[test]
    fn a_missing_credential_names_the_variable_and_the_file_not_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s3.env");
        std::fs::write(&file, "AWS_ACCESS_KEY_ID=GKsecretish\n").unwrap();
        let s3: ferry_config::storage::S3 = serde_json::from_value(serde_json::json!({
            "endpoint": "http://h:1", "bucket": "b", "credentials_file": file,
        }))
        .unwrap();
        let err = load_credentials(&s3).unwrap_err().to_string();
        assert!(
            err.starts_with("AWS_SECRET_ACCESS_KEY is not set in "),
            "{err}"
        );
        assert!(!err.contains("GKsecretish"), "{err}");
        let s = Secret {
            key_id: "GK".into(),
            secret: "topsecret".into(),
        };
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
