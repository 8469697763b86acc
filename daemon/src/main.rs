//! `ferryd`: the daemon's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_config::{Config, LogFormat};

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
    /// Checks a configuration file; exits 78 (EX_CONFIG) with the offending key and line if bad.
    CheckConfig {
        /// The file (default: --config).
        file: Option<PathBuf>,
    },
    /// Prints the effective configuration, every default filled in.
    PrintConfig,
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
        config.storage = s.clone();
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

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            return match load(&cli, file.as_ref()) {
                Ok(_) => {
                    println!("configuration ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferryd: bad configuration: {e}");
                    ExitCode::from(EX_CONFIG)
                }
            };
        }
        Some(Command::PrintConfig) => {
            return match load(&cli, None) {
                Ok(c) => {
                    print!("{}", c.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferryd: bad configuration: {e}");
                    ExitCode::from(EX_CONFIG)
                }
            };
        }
        None => {}
    }
    let config = match load(&cli, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferryd: bad configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging(&config);
    // A file-size limit (ulimit -f) must fail the one write, not kill the daemon.
    // SAFETY: setting a signal's disposition to SIG_IGN at start, before any thread.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferryd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let daemon = match ferryd::Daemon::bind(config).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("ferryd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let a = daemon.addrs();
        let show = |s: Option<std::net::SocketAddr>| {
            s.map(|a| a.to_string()).unwrap_or_else(|| "off".into())
        };
        tracing::info!(
            udp_upload = %show(a.udp_upload),
            udp_download = %show(a.udp_download),
            udp_sum = %show(a.udp_sum),
            tcp_upload = %show(a.tcp_upload),
            magic_download = %show(a.magic_download),
            signal = %show(a.signal),
            "bound"
        );
        daemon.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
