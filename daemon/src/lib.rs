//! ferryd: one daemon serving the six lab file-transfer protocols at once.
//!
//! # Layout
//! The path a file takes, socket to disk:
//! - [`Daemon::bind`] binds every enabled service and opens [`storage`];
//!   [`Daemon::serve`] runs them until the shutdown future resolves.
//! - One module per service: [`udp_upload`], [`udp_download`], [`udp_sum`],
//!   [`tcp_upload`], [`magic`], [`signal`]. Each decodes with `ferry_proto`,
//!   names files only through `ferry_proto::names`, and moves bytes through
//!   [`storage`].
//! - [`limits`]: connection, session and download caps. [`tcp`]: the accept
//!   loop, deadlines and refusals shared by the TCP services; [`udp`] the
//!   socket buffers and receive step shared by the UDP services. [`report`]: the
//!   one log event per finished transfer.
//!
//! # Shutdown
//! `stop` (a [`CancellationToken`]) ends accepting and idle connections;
//! transfers in flight get `shutdown_grace` to finish; then `abort` cancels
//! them, which removes their temporary files. No acknowledged file is lost and
//! no partial file is ever visible.

pub mod limits;
pub mod logs;
pub mod magic;
pub mod report;
pub mod signal;
pub mod storage;
pub mod tcp;
pub mod tcp_upload;
pub mod udp;
pub mod udp_download;
pub mod udp_sum;
pub mod udp_upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_config::Config;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::Limiter;
use crate::storage::Storage;

/// What every service shares.
pub struct Ctx {
    /// The configuration in force; replaced as a whole by a reload.
    live: std::sync::RwLock<Arc<Config>>,
    /// The storage root.
    pub storage: Storage,
    /// The cap on TCP connections, shared by the TCP services.
    pub connections: Arc<Limiter>,
    /// `signal` connections waiting for a request: the first to close at the cap.
    pub idle: Arc<limits::IdleConnections>,
    /// Per-address upload quotas, over every upload protocol.
    pub uploads: limits::UploadQuota,
    /// Cancelled when shutdown starts: stop accepting, end idle connections.
    pub stop: CancellationToken,
    /// Cancelled when the grace period ends: abort transfers in flight.
    pub abort: CancellationToken,
    /// Every task of every service, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// UDP upload sessions in the table right now.
    pub udp_sessions: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    /// The configuration in force now. Each connection, session and download
    /// takes it once when it starts, so a reload never changes a transfer
    /// midway.
    pub fn config(&self) -> Arc<Config> {
        // The lock only guards a pointer swap; a poisoned lock still holds a valid Arc.
        Arc::clone(&self.live.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Admits one more upload of `size` announced bytes from `ip` under the
    /// per-address quotas, or refuses it with the reason the client is told.
    pub fn admit_upload(&self, ip: std::net::IpAddr, size: u64) -> Result<(), tcp::Failure> {
        self.quota_result(self.uploads.admit(std::time::Instant::now(), ip, size))
    }

    /// Like [`Ctx::admit_upload`], taking nothing (to decide before evicting anyone).
    pub fn check_upload(&self, ip: std::net::IpAddr, size: u64) -> Result<(), tcp::Failure> {
        self.quota_result(self.uploads.check(std::time::Instant::now(), ip, size))
    }

    fn quota_result(&self, r: Result<(), std::time::Duration>) -> Result<(), tcp::Failure> {
        r.map_err(|wait| {
                let l = &self.config().limits;
                tcp::Failure::Refused(format!(
                    "your address has reached its upload quota ({} files and {} per {}); try again in {} s",
                    l.max_uploads_per_ip,
                    l.max_upload_bytes_per_ip,
                    l.upload_window,
                    wait.as_secs().max(1)
                ))
            })
    }

    /// Applies what can change without rebinding; see [`Controller::reload`].
    fn reload(&self, new: Config) -> Reload {
        let old = self.config();
        let mut applied = new;
        let mut needs_restart = Vec::new();
        macro_rules! keep {
            ($($field:ident).+, $key:expr) => {
                if applied.$($field).+ != old.$($field).+ {
                    needs_restart.push($key);
                    applied.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!(storage, "storage");
        keep!(on_conflict, "on_conflict");
        keep!(log.format, "log.format");
        keep!(udp_upload.enabled, "udp_upload.enabled");
        keep!(udp_upload.bind, "udp_upload.bind");
        keep!(udp_download.enabled, "udp_download.enabled");
        keep!(udp_download.bind, "udp_download.bind");
        keep!(udp_sum.enabled, "udp_sum.enabled");
        keep!(udp_sum.bind, "udp_sum.bind");
        keep!(tcp_upload.enabled, "tcp_upload.enabled");
        keep!(tcp_upload.bind, "tcp_upload.bind");
        keep!(magic_download.enabled, "magic_download.enabled");
        keep!(magic_download.bind, "magic_download.bind");
        keep!(signal.enabled, "signal.enabled");
        keep!(signal.bind, "signal.bind");
        keep!(limits.max_uploads_per_ip, "limits.max_uploads_per_ip");
        keep!(
            limits.max_upload_bytes_per_ip,
            "limits.max_upload_bytes_per_ip"
        );
        keep!(limits.upload_window, "limits.upload_window");
        keep!(udp_download.budget_per_ip, "udp_download.budget_per_ip");
        keep!(udp_download.budget_window, "udp_download.budget_window");
        let changed = applied != *old;
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(applied);
        Reload {
            changed,
            needs_restart,
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// Whether any value in force changed.
    pub changed: bool,
    /// Keys whose new values need a restart (they keep their old values until then).
    pub needs_restart: Vec<&'static str>,
}

/// A handle to a running daemon, for reloading its configuration.
#[derive(Clone)]
pub struct Controller {
    ctx: Arc<Ctx>,
}

impl Controller {
    /// Puts a new, validated configuration in force for new connections,
    /// sessions and downloads: limits, timeouts, the sum service's name and
    /// number, the UDP buffer size and pacing, the allow-list, the log level
    /// (applied by the caller). Addresses, `enabled`, `storage`, `on_conflict`
    /// and `log.format` need a restart and are reported.
    pub fn reload(&self, new: Config) -> Reload {
        self.ctx.reload(new)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.ctx.config()
    }

    /// UDP upload sessions open now (bounded by `udp_upload.max_sessions`).
    pub fn udp_sessions(&self) -> usize {
        self.ctx
            .udp_sessions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TCP connections open now (bounded by `limits.max_connections`).
    pub fn tcp_connections(&self) -> usize {
        self.ctx.connections.in_use()
    }
}

/// The addresses the services are bound to (`None` when disabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    /// `udp_upload`.
    pub udp_upload: Option<SocketAddr>,
    /// `udp_download`.
    pub udp_download: Option<SocketAddr>,
    /// `udp_sum`.
    pub udp_sum: Option<SocketAddr>,
    /// `tcp_upload`.
    pub tcp_upload: Option<SocketAddr>,
    /// `magic_download`.
    pub magic_download: Option<SocketAddr>,
    /// `signal`.
    pub signal: Option<SocketAddr>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ferry_config::ConfigError),
    /// The storage root is unusable.
    #[error("storage root {path}: {source}")]
    Storage {
        /// The root.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another ferryd serves this storage root.
    #[error("storage root {path}: {source}")]
    Locked {
        /// The root.
        path: std::path::PathBuf,
        /// Who holds it.
        source: storage::OpenError,
    },
    /// A port could not be bound.
    #[error("cannot bind {service} to {addr}: {source}")]
    Bind {
        /// The service.
        service: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

struct Sockets {
    udp_upload: Option<UdpSocket>,
    udp_download: Option<UdpSocket>,
    udp_sum: Option<UdpSocket>,
    tcp_upload: Option<TcpListener>,
    magic_download: Option<TcpListener>,
    signal: Option<TcpListener>,
}

/// A daemon with every socket bound, ready to serve.
pub struct Daemon {
    ctx: Arc<Ctx>,
    sockets: Sockets,
    addrs: BoundAddrs,
}

async fn bind_udp(
    service: &'static str,
    enabled: bool,
    addr: SocketAddr,
) -> Result<Option<UdpSocket>, StartError> {
    if !enabled {
        return Ok(None);
    }
    // udp_download shares its port with one connected socket per download.
    let sock =
        udp::bind(addr, service == "udp_download", None).map_err(|source| StartError::Bind {
            service,
            addr,
            source,
        })?;
    udp::set_buffer_sizes(&sock, 4 << 20);
    Ok(Some(sock))
}

async fn bind_tcp(
    service: &'static str,
    enabled: bool,
    addr: SocketAddr,
) -> Result<Option<TcpListener>, StartError> {
    if !enabled {
        return Ok(None);
    }
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| StartError::Bind {
            service,
            addr,
            source,
        })
}

fn local<S>(s: &Option<S>, f: impl Fn(&S) -> std::io::Result<SocketAddr>) -> Option<SocketAddr> {
    s.as_ref().and_then(|s| f(s).ok())
}

impl Daemon {
    /// Validates the configuration, opens storage (cleaning its work area) and
    /// binds every enabled service.
    pub async fn bind(config: Config) -> Result<Daemon, StartError> {
        config.validate()?;
        let storage =
            Storage::open(&config.storage, config.on_conflict).map_err(|source| match source {
                storage::OpenError::Io(source) => StartError::Storage {
                    path: config.storage.clone(),
                    source,
                },
                locked => StartError::Locked {
                    path: config.storage.clone(),
                    source: locked,
                },
            })?;
        let c = &config;
        let sockets = Sockets {
            udp_upload: bind_udp("udp_upload", c.udp_upload.enabled, c.udp_upload.bind).await?,
            udp_download: bind_udp("udp_download", c.udp_download.enabled, c.udp_download.bind)
                .await?,
            udp_sum: bind_udp("udp_sum", c.udp_sum.enabled, c.udp_sum.bind).await?,
            tcp_upload: bind_tcp("tcp_upload", c.tcp_upload.enabled, c.tcp_upload.bind).await?,
            magic_download: bind_tcp(
                "magic_download",
                c.magic_download.enabled,
                c.magic_download.bind,
            )
            .await?,
            signal: bind_tcp("signal", c.signal.enabled, c.signal.bind).await?,
        };
        let addrs = BoundAddrs {
            udp_upload: local(&sockets.udp_upload, UdpSocket::local_addr),
            udp_download: local(&sockets.udp_download, UdpSocket::local_addr),
            udp_sum: local(&sockets.udp_sum, UdpSocket::local_addr),
            tcp_upload: local(&sockets.tcp_upload, TcpListener::local_addr),
            magic_download: local(&sockets.magic_download, TcpListener::local_addr),
            signal: local(&sockets.signal, TcpListener::local_addr),
        };
        let connections = Limiter::new();
        let uploads = limits::UploadQuota::new(
            config.limits.max_uploads_per_ip,
            config.limits.max_upload_bytes_per_ip.0,
            config.limits.upload_window.0,
        );
        let ctx = Arc::new(Ctx {
            live: std::sync::RwLock::new(Arc::new(config)),
            storage,
            connections,
            idle: Arc::default(),
            uploads,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            udp_sessions: std::sync::atomic::AtomicUsize::new(0),
        });
        Ok(Daemon {
            ctx,
            sockets,
            addrs,
        })
    }

    /// A handle for reloading the configuration while serving.
    pub fn controller(&self) -> Controller {
        Controller {
            ctx: Arc::clone(&self.ctx),
        }
    }

    /// Where each service listens.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// The storage root, canonical.
    pub fn storage_root(&self) -> &std::path::Path {
        self.ctx.storage.root()
    }

    /// Serves until `shutdown` resolves, then stops accepting, gives transfers
    /// in flight the grace period, aborts the rest (removing their temporary
    /// files) and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Daemon { ctx, sockets, .. } = self;
        let t = &ctx.tracker;
        if let Some(s) = sockets.udp_upload {
            t.spawn(udp_upload::serve(Arc::clone(&ctx), s));
        }
        if let Some(s) = sockets.udp_download {
            t.spawn(udp_download::serve(Arc::clone(&ctx), s));
        }
        if let Some(s) = sockets.udp_sum {
            t.spawn(udp_sum::serve(Arc::clone(&ctx), s));
        }
        if let Some(l) = sockets.tcp_upload {
            t.spawn(tcp::serve(Arc::clone(&ctx), l, tcp_upload::Service));
        }
        if let Some(l) = sockets.magic_download {
            t.spawn(tcp::serve(Arc::clone(&ctx), l, magic::Service));
        }
        if let Some(l) = sockets.signal {
            t.spawn(tcp::serve(Arc::clone(&ctx), l, signal::Service));
        }
        tracing::info!(root = %ctx.storage.root().display(), "serving");
        // Only now, with every port answering, may leftovers be removed.
        ctx.storage.start_reaper();

        shutdown.await;
        let grace = ctx.config().shutdown_grace.0;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: no new transfers, waiting for those in flight"
        );
        ctx.stop.cancel();
        ctx.tracker.close();
        if tokio::time::timeout(grace, ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: aborting transfers still in flight");
            ctx.abort.cancel();
            if tokio::time::timeout(Duration::from_secs(5), ctx.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("some tasks did not stop within 5 s of the abort");
            }
        }
        // What aborted transfers left goes now, not at the next start.
        ctx.storage.flush_reaper(Duration::from_secs(10)).await;
        tracing::info!("stopped");
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    Daemon::bind(config).await?.serve(shutdown).await;
    Ok(())
}
