//! `ferryd`: the daemon's command line.

mod checks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_config::{Config, LogFormat};
use sd_notify::NotifyState;
use tracing_subscriber::EnvFilter;

/// Threads for file I/O (tokio's blocking pool); see `main`.
const MAX_BLOCKING_THREADS: usize = 16;

/// `EX_TEMPFAIL` from sysexits.h: another ferryd holds the storage root.
const EX_TEMPFAIL: u8 = 75;

/// `EX_UNAVAILABLE` from sysexits.h: the S3 bucket or etcd cannot be reached.
const EX_UNAVAILABLE: u8 = 69;

/// `EX_CONFIG` from sysexits.h: a configuration error.
const EX_CONFIG: u8 = 78;

/// Serves the six lab file-transfer protocols at once.
///
/// With no arguments: every protocol on its default port (udp_upload 9000,
/// udp_download 9001, udp_sum 9002, tcp_upload 9003, magic_download 9004,
/// signal 9005), storing under ./ferry-data.
#[derive(Parser, Debug)]
#[command(
    name = "ferryd",
    version,
    after_help = "Examples:\n  ferryd\n  ferryd --storage /srv/ferry\n  ferryd --config /etc/ferry/ferryd.toml\n  ferryd check-config /etc/ferry/ferryd.toml\n  ferryd print-config --storage /srv/ferry"
)]
struct Cli {
    /// The TOML configuration file (default: embedded defaults).
    #[arg(long, short, env = "FERRYD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Storage root, overriding the file's `storage`.
    #[arg(long, short, env = "FERRYD_STORAGE", global = true)]
    storage: Option<PathBuf>,
    /// Log format, overriding the file's `log.format`.
    #[arg(long, env = "FERRYD_LOG_FORMAT", global = true)]
    log_format: Option<Format>,
    /// Log filter, overriding the file's `log.level` (e.g. `debug`, `ferryd=trace`).
    #[arg(long, env = "FERRYD_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Checks a configuration file and what it names; exits 78 (EX_CONFIG)
    /// with the offending key (and line), or the check that failed.
    ///
    /// Besides the file: the log filter, and the storage root (it exists or
    /// can be created, is a directory, not under /proc, /sys or /dev, and
    /// files can be created in it). With --bind, every enabled address is
    /// bound and let go (run it while ferryd is stopped).
    CheckConfig {
        /// The file (default: --config).
        file: Option<PathBuf>,
        /// Also check that every enabled address can be bound now.
        #[arg(long)]
        bind: bool,
    },
    /// Sends PIN to the configured signal port (on loopback when bound to
    /// all addresses); exits 0 on PON, 1 otherwise. The health check.
    Ping {
        /// Print nothing; only the exit code tells.
        #[arg(long, short)]
        quiet: bool,
        /// How long to wait for PON.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Prints the effective configuration, every default filled in.
    PrintConfig,
    /// Writes the man page and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn load(cli: &Cli, file: Option<&PathBuf>) -> Result<Config, ferry_config::ConfigError> {
    let mut config = match file.or(cli.config.as_ref()) {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(s) = &cli.storage {
        config.storage.path = s.clone();
    }
    if let Some(f) = cli.log_format {
        config.log.format = match f {
            Format::Text => LogFormat::Text,
            Format::Json => LogFormat::Json,
        };
    }
    if let Some(l) = &cli.log_level {
        config.log.level = l.clone();
    }
    config.validate()?;
    Ok(config)
}

/// A duration in the config's grammar (`5s`, `500ms`).
fn parse_duration(s: &str) -> Result<Duration, ferry_config::UnitError> {
    s.parse::<ferry_config::Dur>().map(|d| d.0)
}

/// Changes the log filter of the running daemon (SIGHUP).
type LogHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}

fn init_logging(config: &Config) -> LogHandle {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter(&config.log.level));
    let json = config.log.format == LogFormat::Json;
    // Text: no colour codes (the journal, files and pipes get plain text) and
    // every control character a client sent escaped (ferryd::logs).
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .with_writer(ferryd::logs::EscapedStderr)
    });
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .init();
    handle
}

/// Tells systemd (when `NOTIFY_SOCKET` is set; otherwise does nothing).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// SIGHUP: re-read the file, validate, apply what can change without
/// rebinding, and say what needs a restart. A bad file changes nothing.
async fn reload_on_hup(
    mut hup: tokio::signal::unix::Signal,
    cli: Arc<Cli>,
    controller: ferryd::Controller,
    log: LogHandle,
    status: String,
) {
    while hup.recv().await.is_some() {
        let mut states = vec![NotifyState::Reloading];
        states.extend(NotifyState::monotonic_usec_now().ok());
        notify(&states);
        match load(&cli, None) {
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the configuration is bad; nothing changed");
                notify(&[
                    NotifyState::Ready,
                    NotifyState::Status(
                        "reload refused: bad configuration; running with the previous one",
                    ),
                ]);
            }
            Ok(new) => {
                let level = new.log.level.clone();
                let report = controller.reload(new);
                if let Err(e) = log.reload(filter(&level)) {
                    tracing::warn!(error = %e, "cannot change the log level");
                }
                if report.needs_restart.is_empty() {
                    tracing::info!(changed = report.changed, "configuration reloaded");
                } else {
                    tracing::warn!(
                        changed = report.changed,
                        needs_restart = ?report.needs_restart,
                        "configuration reloaded; these keys keep their old values until a restart"
                    );
                }
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
        }
    }
}

/// Sends WATCHDOG=1 from the runtime itself at half the interval systemd
/// asks for: if the event loop wedges, the pings stop and systemd restarts us.
async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// The one-line STATUS= summary: the bound services and the root.
fn status_line(a: &ferryd::BoundAddrs, root: &std::path::Path) -> String {
    let services: Vec<String> = ferryd::ServiceId::ALL
        .into_iter()
        .filter_map(|id| a.get(id).map(|addr| format!("{id} {addr}")))
        .collect();
    let http = a
        .http
        .map(|h| format!("; page http://{h}/"))
        .unwrap_or_default();
    format!(
        "serving {} from {}{http}",
        services.join(", "),
        root.display()
    )
}

/// The commands that only look at the configuration or write files.
fn offline_command(cli: &Cli) -> Option<ExitCode> {
    let bad = |e: &dyn std::fmt::Display| {
        eprintln!("ferryd: bad configuration: {e}");
        ExitCode::from(EX_CONFIG)
    };
    Some(match cli.command.as_ref()? {
        Command::CheckConfig { file, bind } => match load(cli, file.as_ref()) {
            Ok(config) => {
                let checked = checks::storage(&config).and_then(|()| match bind {
                    true => checks::binds(&config),
                    false => Ok(()),
                });
                match checked {
                    Ok(()) => {
                        println!(
                            "configuration ok; {} {} usable{}",
                            match config.storage.backend {
                                ferry_config::BackendKind::Local => "storage root",
                                ferry_config::BackendKind::S3 =>
                                    "S3 credentials read; state directory",
                            },
                            config.storage.path.display(),
                            if *bind {
                                "; every address can be bound"
                            } else {
                                ""
                            }
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => bad(&e),
                }
            }
            Err(e) => bad(&e),
        },
        Command::Ping { quiet, timeout } => match load(cli, None) {
            Ok(config) => match checks::ping(&config, *timeout) {
                Ok((addr, took)) => {
                    if !quiet {
                        println!("PON from {addr} in {:.2} ms", took.as_secs_f64() * 1e3);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    if !quiet {
                        eprintln!("ferryd: ping: {e}");
                    }
                    ExitCode::FAILURE
                }
            },
            Err(e) => bad(&e),
        },
        Command::PrintConfig => match load(cli, None) {
            Ok(c) => {
                print!("{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => bad(&e),
        },
        Command::GenerateDocs { dir } => {
            match ferry_gendocs::generate_docs(<Cli as clap::CommandFactory>::command(), "8", dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferryd: generate-docs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = offline_command(&cli) {
        return code;
    }
    let config = match load(&cli, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferryd: bad configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let log = init_logging(&config);
    // A file-size limit (ulimit -f) must fail the one write, not kill the daemon.
    // SAFETY: setting a signal's disposition to SIG_IGN at start, before any thread.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    raise_open_file_limit();
    // File I/O runs on tokio's blocking pool. Its default of 512 threads lets a
    // crowd of uploads spawn hundreds of threads, each with a stack and a
    // malloc arena: the benchmarks measured 373 MiB peak RSS for 1000
    // concurrent 1 MiB uploads. A small pool queues the writes instead.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferryd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(Arc::new(cli), config, log))
}

/// Binds, tells systemd, serves until SIGTERM or SIGINT; reloads on SIGHUP.
async fn serve(cli: Arc<Cli>, config: Config, log: LogHandle) -> ExitCode {
    let Signals { term, int, hup } = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferryd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let daemon = match ferryd::Daemon::bind(config).await {
        Ok(d) => d,
        Err(e) => {
            // Once: the log is on stderr, where a plain line would repeat it.
            tracing::error!(error = %e, "cannot start");
            return match e {
                ferryd::StartError::Locked { .. }
                | ferryd::StartError::Store(ferryd::S3OpenError::Locked { .. })
                | ferryd::StartError::Store(ferryd::S3OpenError::InstanceInUse(_)) => {
                    ExitCode::from(EX_TEMPFAIL)
                }
                ferryd::StartError::Store(ferryd::S3OpenError::Unreachable(_)) => {
                    ExitCode::from(EX_UNAVAILABLE)
                }
                ferryd::StartError::Store(ferryd::S3OpenError::Config(_)) => {
                    ExitCode::from(EX_CONFIG)
                }
                _ => ExitCode::FAILURE,
            };
        }
    };
    let a = daemon.addrs();
    let show = |id| a.get(id).map_or_else(|| "off".into(), |a| a.to_string());
    use ferryd::ServiceId as S;
    tracing::info!(
        udp_upload = %show(S::UdpUpload),
        udp_download = %show(S::UdpDownload),
        udp_sum = %show(S::UdpSum),
        tcp_upload = %show(S::TcpUpload),
        magic_download = %show(S::MagicDownload),
        signal = %show(S::Signal),
        http = %a.http.map_or_else(|| "off".into(), |a| a.to_string()),
        "bound"
    );
    // Every listener is bound and the storage root checked: ready.
    let status = status_line(&a, daemon.storage_root());
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog on"
        );
        tokio::spawn(watchdog(interval));
    }
    let controller = daemon.controller();
    tokio::spawn(reload_on_hup(hup, cli, controller, log, status));
    daemon
        .serve(async {
            shutdown_signal(term, int).await;
            notify(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: finishing transfers in flight"),
            ]);
        })
        .await;
    ExitCode::SUCCESS
}

/// Raises the soft open-file limit to the hard one: every transfer holds a
/// socket and a file, and the common soft default (1024) is far below what
/// hundreds of students need. Logged either way.
fn raise_open_file_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    match (before, rlimit::increase_nofile_limit(u64::MAX)) {
        (Ok(from), Ok(to)) => tracing::info!(from, to, "open-file limit"),
        (_, Err(e)) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        (Err(e), _) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// The signals ferryd handles, installed before it binds anything: a signal
/// that arrives between READY=1 and the first poll must not fall back to its
/// default action (which, for SIGTERM and SIGHUP, kills the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
