//! ferryd: one daemon serving the six lab file-transfer protocols at once.
//!
//! # Layout
//! The path a file takes, socket to disk:
//! - [`Daemon::bind`] binds every enabled service (the table is
//!   [`ServiceId`]) and opens the storage root; [`Daemon::serve`] runs them
//!   until the shutdown future resolves.
//! - `ctx`: what every service shares (the configuration in force, storage,
//!   caps, shutdown tokens); `failure`: the one failure type, which decides
//!   once whether the client can still be answered.
//! - The UDP services, each a receive loop over a sans-IO core that takes
//!   time as an input: `udp_upload` (its session table), `udp_download`,
//!   `udp_sum` (its pending pairs); `udp` holds their socket helpers.
//! - The TCP services over one accept loop (`tcp`) and one framed
//!   connection (`conn`: the buffer, `read_frame` with its deadlines, the
//!   connection's configuration snapshot): `tcp_upload`, `magic`, `signal`.
//! - `storage`: the one interface to the root (uploads, downloads, trees),
//!   with the local filesystem behind it, each file keeping who sent it;
//!   `access`: hand-in privacy, who may download what (asked through
//!   `ctx`'s `open_for`/`tree_for`). `limits`: caps, budgets, quotas;
//!   `report`: the one record of each transfer attempt (its log event,
//!   metrics, the lab page and the ledger, kept by `observe`); `http`: the
//!   HTTP listener (metrics, the lab page, the ledger); [`logs`]: log output.
//!
//! # Shutdown
//! `stop` (a [`CancellationToken`](tokio_util::sync::CancellationToken)) ends accepting and idle connections;
//! transfers in flight get `shutdown_grace` to finish; then `abort` cancels
//! them, which removes their temporary files. No acknowledged file is lost and
//! no partial file is ever visible.
#![warn(missing_docs, unreachable_pub)]

mod access;
mod attention;
mod conn;
mod control;
mod ctx;
mod failure;
mod http;
mod limits;
pub mod logs;
mod magic;
mod observe;
mod report;
mod signal;
mod storage;
mod tcp;
mod tcp_upload;
mod udp;
mod udp_download;
mod udp_sum;
mod udp_upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use ferry_config::ServiceId;
use ferry_config::{BackendKind, Config, Transport};
use tokio::net::{TcpListener, UdpSocket};

use crate::ctx::Ctx;
pub use crate::ctx::Reload;
pub use crate::limits::REPLIES_PER_SECOND;
pub use crate::observe::{LEDGER_FILE, LEDGER_OLD};
pub use crate::storage::{CaError, CredentialsError, OpenError, S3OpenError, LOCK_FILE, WORK_DIR};
pub use crate::udp::set_buffer_sizes;

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

    /// The most UDP upload sessions open at once since the daemon started.
    pub fn udp_sessions_peak(&self) -> usize {
        self.ctx
            .udp_sessions_peak
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// TCP connections open now (bounded by `limits.max_connections`).
    pub fn tcp_connections(&self) -> usize {
        self.ctx.connections.in_use()
    }

    /// TCP connections idle or still sending a request header now: the
    /// ones a newcomer at the cap may make room from.
    pub fn idle_connections(&self) -> usize {
        self.ctx.idle.len()
    }
}

/// The addresses the services are bound to (`None` when disabled): one
/// entry per service, indexed by it (`addrs[ServiceId::Signal]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundAddrs {
    services: [Option<SocketAddr>; ServiceId::ALL.len()],
    /// The HTTP listener (`[http]`).
    pub http: Option<SocketAddr>,
}

impl BoundAddrs {
    /// Where `service` listens, if it is enabled.
    pub fn get(&self, service: ServiceId) -> Option<SocketAddr> {
        self[service]
    }
}

impl std::ops::Index<ServiceId> for BoundAddrs {
    type Output = Option<SocketAddr>;

    fn index(&self, service: ServiceId) -> &Option<SocketAddr> {
        &self.services[service.index()]
    }
}

impl std::ops::IndexMut<ServiceId> for BoundAddrs {
    fn index_mut(&mut self, service: ServiceId) -> &mut Option<SocketAddr> {
        &mut self.services[service.index()]
    }
}

/// Reads the S3 credentials `s3` names (its file, or the environment), for
/// `check-config`; the error names what is missing, never a value.
pub fn check_s3_credentials(
    s3: &ferry_config::storage::S3,
) -> Result<(), storage::CredentialsError> {
    storage::load_credentials(s3).map(|_| ())
}

/// Reads `storage.s3.ca_file` (if set) as ferryd would at start, for
/// `check-config`: an unreadable file, or one with no usable CA certificate.
pub fn check_s3_ca(s3: &ferry_config::storage::S3) -> Result<(), storage::CaError> {
    storage::roots(s3.ca_file.as_deref()).map(|_| ())
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
        source: OpenError,
    },
    /// The S3 backend's store or catalog cannot be used.
    #[error("storage: {0}")]
    Store(#[from] storage::S3OpenError),
    /// `access.downloads = "sender"` on a root that cannot keep who sent
    /// each file.
    #[error("storage root {path}: its file system keeps no extended attributes, so ferryd cannot record who sent each file, which access.downloads = \"sender\" needs (ext4, xfs, btrfs and tmpfs keep them); store elsewhere, or set access.downloads = \"anyone\"")]
    NoOrigins {
        /// The root.
        path: std::path::PathBuf,
    },
    /// The HTTP listener's port could not be bound.
    #[error("cannot bind http to {addr}: {source}")]
    BindHttp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A port could not be bound.
    #[error("cannot bind {service} to {addr}: {source}")]
    Bind {
        /// The service.
        service: ServiceId,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// udp_upload's socket receive buffer asked for (the kernel caps it at
/// `net.core.rmem_max`): 64 MiB absorbs about 60 ms of a loopback-speed
/// sender while the receive loop is not scheduled.
const UDP_UPLOAD_RCVBUF: usize = 64 << 20;

/// A bound socket of one service.
enum Bound {
    Udp(UdpSocket),
    Tcp(TcpListener),
}

impl Bound {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Udp(s) => s.local_addr(),
            Bound::Tcp(l) => l.local_addr(),
        }
    }
}

/// A daemon with every socket bound, ready to serve.
pub struct Daemon {
    ctx: Arc<Ctx>,
    sockets: Vec<(ServiceId, Bound)>,
    http: Option<TcpListener>,
    addrs: BoundAddrs,
}

async fn bind_one(service: ServiceId, addr: SocketAddr) -> Result<Bound, StartError> {
    let err = |source| StartError::Bind {
        service,
        addr,
        source,
    };
    match service.transport() {
        Transport::Udp => {
            // udp_download shares its port with one connected socket per download.
            let shared = service == ServiceId::UdpDownload;
            let sock = udp::bind(addr, shared, None).map_err(err)?;
            // udp_upload's clients send with no flow control: its receive
            // buffer is what absorbs a busy moment (capped by
            // net.core.rmem_max; the package raises that: deploy/60-ferry.conf).
            let bytes = if service == ServiceId::UdpUpload {
                UDP_UPLOAD_RCVBUF
            } else {
                4 << 20
            };
            udp::set_buffer_sizes(&sock, bytes);
            if service == ServiceId::UdpUpload {
                udp::warn_if_small(&sock, bytes);
            }
            Ok(Bound::Udp(sock))
        }
        Transport::Tcp => TcpListener::bind(addr).await.map(Bound::Tcp).map_err(err),
    }
}

impl Daemon {
    /// Validates the configuration, opens storage (cleaning its work area) and
    /// binds every enabled service.
    pub async fn bind(config: Config) -> Result<Daemon, StartError> {
        config.validate()?;
        let storage = match config.storage.backend {
            BackendKind::Local => {
                let path = &config.storage.path;
                storage::Storage::open_local(path, config.on_conflict).map_err(|source| {
                    match source {
                        OpenError::Io(source) => StartError::Storage {
                            path: path.clone(),
                            source,
                        },
                        locked => StartError::Locked {
                            path: path.clone(),
                            source: locked,
                        },
                    }
                })?
            }
            BackendKind::S3 => {
                storage::Storage::open_s3(&config.storage, config.on_conflict).await?
            }
        };
        if config.access.downloads == ferry_config::Downloads::Sender && !storage.records_origins()
        {
            return Err(StartError::NoOrigins {
                path: storage.root().to_owned(),
            });
        }
        let mut sockets = Vec::new();
        let mut addrs = BoundAddrs::default();
        for id in ServiceId::ALL {
            if let (true, addr) = config.endpoint(id) {
                let bound = bind_one(id, addr).await?;
                addrs[id] = bound.local_addr().ok();
                sockets.push((id, bound));
            }
        }
        let http = match config.http.enabled {
            true => Some(
                TcpListener::bind(config.http.bind)
                    .await
                    .map_err(|source| StartError::BindHttp {
                        addr: config.http.bind,
                        source,
                    })?,
            ),
            false => None,
        };
        addrs.http = http.as_ref().and_then(|l| l.local_addr().ok());
        let ctx = Arc::new(Ctx::new(config, storage));
        let _ = ctx
            .observe
            .ports
            .set(ServiceId::ALL.map(|id| addrs[id].map(|a| a.port())));
        let _ = ctx.bound.set(
            ServiceId::ALL
                .into_iter()
                .filter_map(|id| addrs.get(id).map(|a| (id, a)))
                .collect(),
        );
        Ok(Daemon {
            ctx,
            sockets,
            http,
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
        let Daemon {
            ctx, sockets, http, ..
        } = self;
        let _ = ctx.main.set(tokio::runtime::Handle::current());
        // Held until serving ends: dropping one ends its thread.
        let Threads { page, control, udp } = start_threads(&ctx, http.is_some());
        if let Some(l) = http {
            serve_on(&ctx, page.as_ref(), l, http::Service);
        }
        for (id, bound) in sockets {
            let c = Arc::clone(&ctx);
            match (id, bound) {
                (ServiceId::UdpUpload, Bound::Udp(s)) => {
                    udp_on(&ctx, udp.as_ref(), s);
                    continue;
                }
                (ServiceId::UdpDownload, Bound::Udp(s)) => {
                    ctx.tracker.spawn(udp_download::serve(c, s))
                }
                (ServiceId::UdpSum, Bound::Udp(s)) => ctx.tracker.spawn(udp_sum::serve(c, s)),
                (ServiceId::TcpUpload, Bound::Tcp(l)) => {
                    ctx.tracker.spawn(tcp::serve(c, l, tcp_upload::Service))
                }
                (ServiceId::MagicDownload, Bound::Tcp(l)) => {
                    ctx.tracker.spawn(tcp::serve(c, l, magic::Service))
                }
                (ServiceId::Signal, Bound::Tcp(l)) => {
                    serve_on(&ctx, control.as_ref(), l, signal::Service);
                    continue;
                }
                // bind_one binds each service by its own transport.
                (id, _) => {
                    tracing::error!(service = %id, "bound with the wrong transport");
                    continue;
                }
            };
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
        if let Some(ledger) = &ctx.observe.ledger {
            ledger.sync();
        }
        tracing::info!("stopped");
    }
}

/// The lab page's thread (when the page is served), the control thread and
/// udp_upload's, each `None` if it could not start (its socket then is
/// served on the main runtime, and says so).
fn start_threads(ctx: &Arc<Ctx>, page: bool) -> Threads {
    let page = match page.then(control::Control::start_page) {
        Some(Err(e)) => {
            tracing::warn!(error = %e, "no page thread: the lab page is served among the transfers");
            None
        }
        other => other.and_then(Result::ok),
    };
    let udp = control::Control::start_udp()
        .map_err(|e| tracing::warn!(error = %e, "no udp_upload thread: its datagrams are read among the transfers"))
        .ok();
    let control = match control::Control::start() {
        Ok(c) => {
            let _ = ctx.attention.set(Arc::clone(&c.attention));
            Some(c)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no control thread: PIN is answered among the transfers");
            None
        }
    };
    Threads { page, control, udp }
}

/// The threads with runtimes of their own, held until serving ends
/// (dropping one ends its thread).
struct Threads {
    page: Option<control::Control>,
    control: Option<control::Control>,
    udp: Option<control::Control>,
}

/// A TCP listener served on a thread of its own when there is one (its
/// socket moved to that thread's runtime), else on the main runtime.
fn serve_on<S: tcp::TcpService>(
    ctx: &Arc<Ctx>,
    thread: Option<&control::Control>,
    l: TcpListener,
    service: S,
) {
    run_on(ctx, thread, l, S::NAME, move |c, l| {
        tcp::serve(c, l, service)
    });
}

/// udp_upload's receive loop on a thread of its own when there is one.
fn udp_on(ctx: &Arc<Ctx>, thread: Option<&control::Control>, s: UdpSocket) {
    run_on(ctx, thread, s, "udp_upload", udp_upload::serve);
}

/// A socket the runtimes can hand to each other (registered anew with the
/// receiving runtime's reactor).
trait Movable: Sized + Send + 'static {
    type Std: Send + 'static;
    fn into_std(self) -> std::io::Result<Self::Std>;
    fn from_std(std: Self::Std) -> std::io::Result<Self>;
}

/// tokio's sockets already have both conversions, under the same names.
macro_rules! movable {
    ($($tokio:ident => $std:ty),*) => {$(
        impl Movable for $tokio {
            type Std = $std;
            fn into_std(self) -> std::io::Result<Self::Std> {
                $tokio::into_std(self)
            }
            fn from_std(std: Self::Std) -> std::io::Result<Self> {
                $tokio::from_std(std)
            }
        }
    )*};
}
movable!(TcpListener => std::net::TcpListener, UdpSocket => std::net::UdpSocket);

/// `serve(ctx, socket)` on `thread` when there is one (the socket moved to
/// that thread's runtime), else on the main runtime.
fn run_on<M, F, Fut>(
    ctx: &Arc<Ctx>,
    thread: Option<&control::Control>,
    socket: M,
    service: &'static str,
    serve: F,
) where
    M: Movable,
    F: FnOnce(Arc<Ctx>, M) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let c = Arc::clone(ctx);
    let Some(thread) = thread else {
        ctx.tracker.spawn(serve(c, socket));
        return;
    };
    match socket.into_std() {
        Ok(std) => thread.spawn(&ctx.tracker, async move {
            match M::from_std(std) {
                Ok(socket) => serve(c, socket).await,
                Err(e) => tracing::error!(service, error = %e, "cannot serve on its thread"),
            }
        }),
        Err(e) => tracing::error!(service, error = %e, "cannot move the socket to its thread"),
    }
}

/// Binds and serves until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    Daemon::bind(config).await?.serve(shutdown).await;
    Ok(())
}
