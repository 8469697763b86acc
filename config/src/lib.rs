//! ferryd's configuration: the TOML file, its embedded defaults and validation.
//!
//! Every key has a default, so an empty file (or none) serves all six
//! protocols. Unknown keys are errors, reported with their line, so a typo
//! never silently leaves a default in force. The README's configuration
//! reference lists every key; `deploy/ferryd.toml` is the commented example.
//!
//! # Layout
//! - [`units`]: durations, sizes and networks as written in the file.
//! - [`Config`] and one struct per table, each with its defaults.
//! - [`Config::parse`] / [`Config::load`] / [`Config::validate`].
#![warn(missing_docs, unreachable_pub)]

pub mod storage;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use ferry_proto::service::{ServiceId, Transport};
use serde::{Deserialize, Serialize};

pub use storage::{BackendKind, StorageConfig};
pub use units::{Dur, IpNet, Size, UnitError};

/// What an upload does when its name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Store as `report (1).pdf`, `report (2).pdf`, …: nothing is ever lost (default).
    #[default]
    Rename,
    /// Replace the old file atomically.
    Overwrite,
    /// Refuse the upload with an error.
    Reject,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where files live: a directory (default `./ferry-data`), or a
    /// `[storage]` table (`backend = "s3"`, `[storage.s3]`, `[storage.catalog]`).
    pub storage: StorageConfig,
    /// What an upload does when its name is taken (default `rename`).
    pub on_conflict: OnConflict,
    /// How long transfers in flight may finish after SIGTERM (default 10 s;
    /// keep it below the unit's `TimeoutStopSec`).
    pub shutdown_grace: Dur,
    /// Logging.
    pub log: LogConfig,
    /// Limits shared by every service.
    pub limits: Limits,
    /// `udp_upload` (seed 000).
    pub udp_upload: UdpUpload,
    /// `udp_download` (seed 001 §4).
    pub udp_download: UdpDownload,
    /// `udp_sum` (seed 001 §3).
    pub udp_sum: UdpSum,
    /// `tcp_upload` (seed 002).
    pub tcp_upload: TcpUpload,
    /// `magic_download` (seed 003).
    pub magic_download: MagicDownload,
    /// `signal` (seed 004).
    pub signal: Signal,
    /// The HTTP listener: metrics, the lab page, the ledger.
    pub http: Http,
    /// The ledger of stored files.
    pub ledger: Ledger,
    /// Who may download what (hand-in privacy).
    pub access: Access,
}

/// Who may download a file that ferry received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Downloads {
    /// Only the address that sent it, and `access.admin` networks (default:
    /// a lab hands work in, and a hand-in is not for classmates to copy).
    #[default]
    Sender,
    /// Anyone who names it.
    Anyone,
}

/// `[access]`: hand-in privacy. A file ferry received can be downloaded,
/// by every download protocol, only from the address that sent it (and
/// from `admin` networks); a file ferry did not receive (put in the storage
/// by an admin) or one uploaded from an `admin` network is published: anyone
/// can download it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// `sender` (default) or `anyone`.
    pub downloads: Downloads,
    /// Networks that may download every file, and whose uploads are
    /// published (default none: an admin reads the storage directory).
    pub admin: Vec<IpNet>,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            downloads: Downloads::Sender,
            admin: Vec::new(),
        }
    }
}

/// `[http]`: `/metrics` for Prometheus, the lab page at `/` (live
/// transfers, recent attempts with a diagnosis of each failure, the
/// ledger) and its JSON under `/api/`. It shares the TCP connection caps
/// and the header deadline with the protocol services.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Serve it (default true, on loopback only: see `bind`).
    pub enabled: bool,
    /// Address to bind (default `127.0.0.1:9080`: only this machine; bind
    /// `0.0.0.0:9080` so students can read their own diagnoses).
    pub bind: SocketAddr,
    /// Networks that see every client's attempts and files (default
    /// loopback); anyone else sees only those from their own address.
    pub admin: Vec<IpNet>,
    /// Transfer attempts kept for the page (default 1000, about 1 KiB each:
    /// at most about 1 MiB).
    pub recent: usize,
}

/// `[ledger]`: every stored file (time, peer, service, requested and stored
/// name, size, CRC-32), one JSON line each, appended to
/// `<storage>/.ferry-ledger.jsonl` as the upload is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ledger {
    /// Keep it (default true).
    pub enabled: bool,
    /// Past this size the file is rotated into `.ferry-ledger.1.jsonl`, so
    /// the ledger holds at most twice this (default 64 MiB, about 200,000
    /// uploads): the rotated file keeps the lines younger than `keep`, and
    /// if they are too many, the oldest of the addresses with the most go
    /// first.
    pub max_size: Size,
    /// How long a line is kept, room allowing (default 180 days: a
    /// semester and its appeals).
    pub keep: Dur,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` (default) or `ferryd=debug`.
    pub level: String,
}

/// `[limits]`: what bounds every service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest file accepted by any upload, checked before a byte is written
    /// (default 4 GiB, the largest the magic protocol's 4-byte length can serve).
    pub max_file_size: Size,
    /// Longest name or path accepted, in bytes (default 1024).
    pub max_name_len: usize,
    /// TCP connections open at once over all TCP services (default 1024);
    /// the excess is refused in each protocol's own way, never queued.
    pub max_connections: usize,
    /// TCP connections open at once from one IP address (default 64).
    pub max_connections_per_ip: usize,
    /// Time a client has to send a whole request header (default 10 s), so a
    /// slow-loris client cannot hold a connection by trickling a header.
    pub header_timeout: Dur,
    /// Longest wait for the next bytes in the middle of a transfer (default 30 s).
    pub idle_timeout: Dur,
    /// Uploads one address may start per `upload_window`, over every upload
    /// protocol (default 2000; an IPv6 /64 is one address). Stops one client
    /// from flooding the root or squatting names.
    pub max_uploads_per_ip: usize,
    /// Bytes one address may upload per `upload_window` (default 64 GiB).
    pub max_upload_bytes_per_ip: Size,
    /// The window those quotas refill over (default 1 hour).
    pub upload_window: Dur,
}

/// `[udp_upload]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpUpload {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default `0.0.0.0:9000`; `[::]:9000` for IPv6 and IPv4).
    pub bind: SocketAddr,
    /// Buffer size announced to clients (default 1452: 1500-byte Ethernet MTU
    /// − 40 IPv6 − 8 UDP, so no datagram is fragmented on IPv4 or IPv6).
    pub buffer_size: usize,
    /// An upload with no datagram for this long is dropped (default 10 s).
    pub session_timeout: Dur,
    /// Uploads in progress at once (default 1024, each holding one open
    /// temporary file and a 64 KiB write buffer at most: ≤ 64 MiB).
    pub max_sessions: usize,
    /// Uploads in progress at once from one IP address (default 16).
    pub max_sessions_per_ip: usize,
}

/// `[udp_download]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpDownload {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default `0.0.0.0:9001`).
    pub bind: SocketAddr,
    /// Networks allowed to download (default: loopback, the private ranges and
    /// link-local). UDP sources can be forged, and one small request makes the
    /// server send a whole file, so an open UDP download server is an
    /// amplification weapon; a lab box serves its campus network, not the Internet.
    pub allow: Vec<IpNet>,
    /// Bytes per second one download is paced to, datagram by datagram
    /// (default 8 MiB, about a 100 Mbit/s link; 0 = unpaced). The lab
    /// protocol has no flow control: pacing keeps a student client's socket
    /// buffer (the default, about 60 datagrams) from overflowing while it
    /// prints a line per datagram on a busy machine, and bounds what one
    /// forged request can send.
    pub rate: Size,
    /// Downloads in progress at once (default 256).
    pub max_downloads: usize,
    /// Downloads in progress at once to one IP address (default 4).
    pub max_downloads_per_ip: usize,
    /// Bytes one address may be sent (or have read for `STAT`) per
    /// `budget_window` (default 4 GiB): what forged requests naming a victim
    /// inside `allow` can make ferryd send it, at most. A download is refused
    /// at its start when the rest of the budget cannot hold the whole file.
    pub budget_per_ip: Size,
    /// The window the budget refills over (default 10 minutes).
    pub budget_window: Dur,
}

/// `[udp_sum]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpSum {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default `0.0.0.0:9002`).
    pub bind: SocketAddr,
    /// The name the server answers with (default `Server of ferry`).
    pub server_name: String,
    /// The server's integer, 1..=100 (default 42).
    pub number: i64,
}

/// `[tcp_upload]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpUpload {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default `0.0.0.0:9003`).
    pub bind: SocketAddr,
    /// The quiet gap that ends the file name (default 20 ms): the header has no
    /// name length, and the client sends nothing more until `go ahead`, so the
    /// name is every byte that arrives until the line goes quiet this long.
    pub name_settle: Dur,
}

/// `[magic_download]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MagicDownload {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default `0.0.0.0:9004`).
    pub bind: SocketAddr,
    /// The assignment's read gap: a request with a pause this long is dropped (default 1 s).
    pub read_timeout: Dur,
}

/// `[signal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signal {
    /// Serve it (default true).
    pub enabled: bool,
    /// Address to bind (default `0.0.0.0:9005`).
    pub bind: SocketAddr,
    /// Files in one directory tree sent by SAR or RAR (default 10000).
    pub max_tree_entries: usize,
    /// Total bytes of one tree (default 4 GiB).
    pub max_tree_size: Size,
    /// Components in one path of a tree (default 32): with
    /// `max_tree_entries`, which counts directories as well as files, this
    /// bounds the inodes and the path work one `SAR` can cost.
    pub max_tree_depth: usize,
    /// The handout framing's quiet gap (default 20 ms): a name, or a piece of
    /// a file, ends when the stream has been quiet this long. The handout's
    /// client pauses 0.1 s between messages, so this must be shorter; the
    /// shorter it is, the later ferryd may read (a busy machine) and still
    /// see the pause.
    pub handout_settle: Dur,
    /// The pause ferry makes in the handout framing (default 200 ms): after
    /// the client's kernel has taken every byte of a name or a file, before
    /// the next message, so the client's `recv` returns each alone; and how
    /// long a bare `DON` waits for a second one (a file that is just `DON`).
    pub handout_pause: Dur,
}

fn bind(service: ServiceId) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], service.default_port()))
}

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            storage: StorageConfig::local("./ferry-data"),
            on_conflict: OnConflict::Rename,
            shutdown_grace: secs(10),
            log: LogConfig::default(),
            limits: Limits::default(),
            udp_upload: UdpUpload::default(),
            udp_download: UdpDownload::default(),
            udp_sum: UdpSum::default(),
            tcp_upload: TcpUpload::default(),
            magic_download: MagicDownload::default(),
            signal: Signal::default(),
            http: Http::default(),
            ledger: Ledger::default(),
            access: Access::default(),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9080)),
            // Invariant: the literals are valid networks (tested below).
            admin: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            recent: 1000,
        }
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            enabled: true,
            max_size: Size(64 << 20),
            keep: Dur(Duration::from_secs(180 * 86_400)),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_size: Size(4 << 30),
            max_name_len: 1024,
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout: secs(10),
            idle_timeout: secs(30),
            max_uploads_per_ip: 2000,
            max_upload_bytes_per_ip: Size(64 << 30),
            upload_window: secs(3600),
        }
    }
}

impl Default for UdpUpload {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: bind(ServiceId::UdpUpload),
            buffer_size: 1452,
            session_timeout: secs(10),
            max_sessions: 1024,
            max_sessions_per_ip: 64,
        }
    }
}

impl Default for UdpDownload {
    fn default() -> Self {
        let allow = [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ];
        Self {
            enabled: true,
            bind: bind(ServiceId::UdpDownload),
            // Invariant: the literals above are valid networks (tested below).
            allow: allow.iter().filter_map(|n| n.parse().ok()).collect(),
            // Chosen by tests/bench/pacing.py (docs/BENCHMARKS.md): the
            // fastest rate a published-shaped Python client got 16 of 16
            // 5 MiB files whole at beside two CPU-bound processes.
            rate: Size(8 << 20),
            max_downloads: 256,
            max_downloads_per_ip: 4,
            budget_per_ip: Size(4 << 30),
            budget_window: Dur(Duration::from_secs(600)),
        }
    }
}

impl Default for UdpSum {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: bind(ServiceId::UdpSum),
            server_name: "Server of ferry".into(),
            number: 42,
        }
    }
}

impl Default for TcpUpload {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: bind(ServiceId::TcpUpload),
            name_settle: Dur(Duration::from_millis(20)),
        }
    }
}

impl Default for MagicDownload {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: bind(ServiceId::MagicDownload),
            read_timeout: secs(1),
        }
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: bind(ServiceId::Signal),
            max_tree_entries: 10_000,
            max_tree_size: Size(4 << 30),
            max_tree_depth: 32,
            handout_settle: Dur(Duration::from_millis(20)),
            handout_pause: Dur(Duration::from_millis(200)),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{}line {line}, column {column}: {message}", origin.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read from one.
        origin: Option<PathBuf>,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is of the right type but not allowed.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `udp_sum.number`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses a TOML document and validates it.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_from(text, None)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_from(&text, Some(path))
    }

    fn parse_from(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            ConfigError::Parse {
                origin: origin.map(Path::to_owned),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, every default filled in.
    pub fn to_toml(&self) -> String {
        // Serialising plain structs of strings, numbers and tables cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks values the types alone do not, a section at a time (the first
    /// problem found is the one reported).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.storage.check().map_err(|(k, m)| invalid(&k, m))?;
        check_log_filter(&self.log.level).map_err(|m| invalid("log.level", m.to_string()))?;
        self.check_observe()?;
        self.check_connections()?;
        self.check_timings()?;
        self.check_udp()?;
        self.check_sum()?;
        self.check_trees_and_quotas()?;
        self.check_ports()
    }

    /// `[http]` and `[ledger]`.
    fn check_observe(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.http.recent) {
            return Err(invalid(
                "http.recent",
                format!("{} is not in 1..=100000", self.http.recent),
            ));
        }
        if self.ledger.max_size.0 < 4096 {
            return Err(invalid("ledger.max_size", "must be at least 4 KiB".into()));
        }
        Ok(())
    }

    /// The connection caps and the name length of `[limits]`.
    fn check_connections(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(16..=4096).contains(&l.max_name_len) {
            return Err(invalid(
                "limits.max_name_len",
                format!("{} is not in 16..=4096", l.max_name_len),
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections",
                "must be at least 1".into(),
            ));
        }
        if l.max_connections_per_ip == 0 || l.max_connections_per_ip > l.max_connections {
            return Err(invalid(
                "limits.max_connections_per_ip",
                format!(
                    "must be in 1..=limits.max_connections ({})",
                    l.max_connections
                ),
            ));
        }
        Ok(())
    }

    /// Every timeout and pause: none zero, the handout ones within what its clients do.
    fn check_timings(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, d) in [
            ("limits.header_timeout", l.header_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            (
                "udp_upload.session_timeout",
                self.udp_upload.session_timeout,
            ),
            (
                "magic_download.read_timeout",
                self.magic_download.read_timeout,
            ),
            ("tcp_upload.name_settle", self.tcp_upload.name_settle),
            ("signal.handout_settle", self.signal.handout_settle),
            (
                "udp_download.budget_window",
                self.udp_download.budget_window,
            ),
            ("signal.handout_pause", self.signal.handout_pause),
        ] {
            if d.0.is_zero() {
                return Err(invalid(key, "must be longer than 0".into()));
            }
        }
        if self.tcp_upload.name_settle.0 >= Duration::from_secs(1) {
            return Err(invalid(
                "tcp_upload.name_settle",
                "must be under 1s (handout clients wait about 1 s for `go ahead`)".into(),
            ));
        }
        if self.signal.handout_settle.0 >= Duration::from_millis(100) {
            return Err(invalid(
                "signal.handout_settle",
                "must be under 100ms (the handout's client pauses 0.1 s between messages)".into(),
            ));
        }
        if self.signal.handout_pause.0 <= Duration::from_millis(100)
            || self.signal.handout_pause.0 > Duration::from_secs(5)
        {
            return Err(invalid(
                "signal.handout_pause",
                "must be over 100ms (the handout's own pause) and at most 5s".into(),
            ));
        }
        Ok(())
    }

    /// `[udp_upload]` and `[udp_download]`.
    fn check_udp(&self) -> Result<(), ConfigError> {
        let u = &self.udp_upload;
        if !(1..=ferry_proto::udp_upload::MAX_DATAGRAM).contains(&u.buffer_size) {
            return Err(invalid(
                "udp_upload.buffer_size",
                format!("{} is not in 1..=65507", u.buffer_size),
            ));
        }
        if u.max_sessions == 0
            || u.max_sessions_per_ip == 0
            || u.max_sessions_per_ip > u.max_sessions
        {
            return Err(invalid(
                "udp_upload.max_sessions_per_ip",
                "max_sessions and max_sessions_per_ip must be at least 1, per-IP no more than the total".into(),
            ));
        }
        let d = &self.udp_download;
        if d.max_downloads == 0
            || d.max_downloads_per_ip == 0
            || d.max_downloads_per_ip > d.max_downloads
        {
            return Err(invalid(
                "udp_download.max_downloads_per_ip",
                "max_downloads and max_downloads_per_ip must be at least 1, per-IP no more than the total".into(),
            ));
        }
        if d.rate.0 != 0 && d.rate.0 < 2048 {
            return Err(invalid(
                "udp_download.rate",
                "must be 0 (unpaced) or at least 2048 bytes/s".into(),
            ));
        }
        Ok(())
    }

    /// `[udp_sum]`: replies a client can split.
    fn check_sum(&self) -> Result<(), ConfigError> {
        let s = &self.udp_sum;
        ferry_proto::udp_sum::check_range(s.number)
            .map_err(|e| invalid("udp_sum.number", e.to_string()))?;
        if s.server_name.trim().is_empty()
            || s.server_name.len() > ferry_proto::udp_sum::MAX_NAME_LEN
        {
            return Err(invalid(
                "udp_sum.server_name",
                "must be 1..=256 bytes".into(),
            ));
        }
        if s.server_name.contains(['\n', ':', ',', ';', '|']) {
            return Err(invalid(
                "udp_sum.server_name",
                "must not contain a separator (newline : , ; |), or clients cannot split the reply"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The tree limits of `[signal]` and the upload quotas.
    fn check_trees_and_quotas(&self) -> Result<(), ConfigError> {
        if self.signal.max_tree_entries == 0 {
            return Err(invalid(
                "signal.max_tree_entries",
                "must be at least 1".into(),
            ));
        }
        if !(1..=256).contains(&self.signal.max_tree_depth) {
            return Err(invalid(
                "signal.max_tree_depth",
                format!("{} is not in 1..=256", self.signal.max_tree_depth),
            ));
        }
        if self.limits.max_uploads_per_ip == 0 || self.limits.max_upload_bytes_per_ip.0 == 0 {
            return Err(invalid(
                "limits.max_uploads_per_ip",
                "the upload quotas must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether `service` is enabled, and where it binds.
    pub fn endpoint(&self, service: ServiceId) -> (bool, SocketAddr) {
        match service {
            ServiceId::UdpUpload => (self.udp_upload.enabled, self.udp_upload.bind),
            ServiceId::UdpDownload => (self.udp_download.enabled, self.udp_download.bind),
            ServiceId::UdpSum => (self.udp_sum.enabled, self.udp_sum.bind),
            ServiceId::TcpUpload => (self.tcp_upload.enabled, self.tcp_upload.bind),
            ServiceId::MagicDownload => (self.magic_download.enabled, self.magic_download.bind),
            ServiceId::Signal => (self.signal.enabled, self.signal.bind),
        }
    }

    /// `service`'s `enabled` and `bind`, to change.
    pub fn endpoint_mut(&mut self, service: ServiceId) -> (&mut bool, &mut SocketAddr) {
        match service {
            ServiceId::UdpUpload => (&mut self.udp_upload.enabled, &mut self.udp_upload.bind),
            ServiceId::UdpDownload => (&mut self.udp_download.enabled, &mut self.udp_download.bind),
            ServiceId::UdpSum => (&mut self.udp_sum.enabled, &mut self.udp_sum.bind),
            ServiceId::TcpUpload => (&mut self.tcp_upload.enabled, &mut self.tcp_upload.bind),
            ServiceId::MagicDownload => (
                &mut self.magic_download.enabled,
                &mut self.magic_download.bind,
            ),
            ServiceId::Signal => (&mut self.signal.enabled, &mut self.signal.bind),
        }
    }

    fn check_ports(&self) -> Result<(), ConfigError> {
        let enabled: Vec<(ServiceId, SocketAddr)> = ServiceId::ALL
            .into_iter()
            .filter_map(|id| match self.endpoint(id) {
                (true, addr) => Some((id, addr)),
                (false, _) => None,
            })
            .collect();
        if self.http.enabled && self.http.bind.port() != 0 {
            let h = self.http.bind;
            for (id, addr) in &enabled {
                let clash = id.transport() == Transport::Tcp
                    && addr.port() == h.port()
                    && (addr.ip() == h.ip()
                        || addr.ip().is_unspecified()
                        || h.ip().is_unspecified());
                if clash {
                    return Err(ConfigError::Invalid {
                        key: "http.bind".into(),
                        message: format!("port {} is already used by {id}", h.port()),
                    });
                }
            }
        }
        for (i, (a, a_addr)) in enabled.iter().enumerate() {
            for (b, b_addr) in &enabled[i + 1..] {
                let clash = a.transport() == b.transport()
                    && a_addr.port() != 0
                    && a_addr.port() == b_addr.port()
                    && (a_addr.ip() == b_addr.ip()
                        || a_addr.ip().is_unspecified()
                        || b_addr.ip().is_unspecified());
                if clash {
                    return Err(ConfigError::Invalid {
                        key: format!("{b}.bind"),
                        message: format!("port {} is already used by {a}", b_addr.port()),
                    });
                }
            }
        }
        Ok(())
    }

    /// A configuration for tests: every service on `127.0.0.1:0`, storage at `root`.
    pub fn for_tests(root: &Path) -> Config {
        let mut c = Config {
            storage: StorageConfig::local(root),
            ..Config::default()
        };
        for id in ServiceId::ALL {
            *c.endpoint_mut(id).1 = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        c.http.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}

/// The levels a log filter directive may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Why a log filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFilterError {
    /// Nothing given.
    #[error("must not be empty (e.g. \"info\")")]
    Empty,
    /// A word that is not a level where a level belongs.
    #[error("{directive:?}: {level:?} is not a level{}; write a level (trace, debug, info, warn, error, off) or target=level, e.g. \"info,ferryd=debug\"", level_hint(.level))]
    NotALevel {
        /// The directive as written.
        directive: String,
        /// Its level part.
        level: String,
    },
    /// A target that is no module path.
    #[error("{directive:?}: {target:?} is not a target (a crate or module path such as ferryd or ferryd::signal)")]
    NotATarget {
        /// The directive as written.
        directive: String,
        /// Its target part.
        target: String,
    },
}

/// The level a mistyped one probably meant.
fn level_hint(level: &str) -> &'static str {
    match level.to_ascii_lowercase().as_str() {
        "warning" => " (did you mean \"warn\"?)",
        "verbose" | "all" => " (did you mean \"debug\" or \"trace\"?)",
        "err" | "fatal" | "critical" => " (did you mean \"error\"?)",
        _ => "",
    }
}

/// A value the checks refuse, under its key.
fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

/// Checks a tracing filter as ferryd reads it: comma-separated directives,
/// each a level (`info`) or `target=level` (`ferryd=debug`). A bare word
/// that is not a level would be taken as a target and silence everything
/// else (`warning`, `verbose`), so it is refused with the levels there are.
pub fn check_log_filter(filter: &str) -> Result<(), LogFilterError> {
    if filter.trim().is_empty() {
        return Err(LogFilterError::Empty);
    }
    for directive in filter.split(',').map(str::trim) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, directive),
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(LogFilterError::NotALevel {
                directive: directive.to_owned(),
                level: level.to_owned(),
            });
        }
        if let Some(t) = target {
            let ok = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'));
            if !ok {
                return Err(LogFilterError::NotATarget {
                    directive: directive.to_owned(),
                    target: t.to_owned(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.udp_upload.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(c.signal.bind.to_string(), "0.0.0.0:9005");
        assert_eq!(c.udp_download.allow.len(), 8);
    }

    #[test]
    fn a_duration_without_a_unit_is_told_to_add_one() {
        let e = Config::parse("shutdown_grace = 10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"10\" has no unit; write e.g. \"10s\""), "{e}");
        let e = Config::parse("[limits]\nidle_timeout = \"30\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"30\" has no unit"), "{e}");
    }

    #[test]
    fn print_config_writes_durations_as_the_docs_do() {
        let text = Config::default().to_toml();
        for line in [
            "upload_window = \"1h\"",
            "keep = \"180days\"",
            "shutdown_grace = \"10s\"",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn print_config_round_trips() {
        let c = Config::default();
        let text = c.to_toml();
        assert!(text.contains("max_file_size = \"4 GiB\""), "{text}");
        assert_eq!(Config::parse(&text).unwrap(), c);
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            r#"
storage = "/var/lib/ferry"
on_conflict = "reject"
[udp_upload]
bind = "[::]:7000"
buffer_size = 65000
[udp_sum]
enabled = false
[limits]
max_file_size = "10 MiB"
idle_timeout = "1500ms"
"#,
        )
        .unwrap();
        assert_eq!(c.on_conflict, OnConflict::Reject);
        assert_eq!(c.udp_upload.bind.to_string(), "[::]:7000");
        assert_eq!(c.limits.max_file_size, Size(10 << 20));
        assert_eq!(c.limits.idle_timeout.0, Duration::from_millis(1500));
        assert!(!c.udp_sum.enabled);
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let err = Config::parse("storage = \"x\"\n[udp_upload]\nbuffer_sise = 100\n").unwrap_err();
        match err {
            ConfigError::Parse { line, message, .. } => {
                assert_eq!(line, 3);
                assert!(message.contains("unknown field `buffer_sise`"), "{message}");
            }
            other => panic!("{other}"),
        }
        let err = Config::parse("[limits]\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2,"), "{err}");
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn invalid_values() {
        for (text, key) in [
            ("[udp_sum]\nnumber = 101", "udp_sum.number"),
            ("[udp_sum]\nserver_name = \"a:b\"", "udp_sum.server_name"),
            (
                "[udp_upload]\nbuffer_size = 70000",
                "udp_upload.buffer_size",
            ),
            (
                "[limits]\nmax_connections_per_ip = 5000",
                "limits.max_connections_per_ip",
            ),
            ("[limits]\nidle_timeout = \"0s\"", "limits.idle_timeout"),
            ("[signal]\nbind = \"0.0.0.0:9003\"", "signal.bind"),
            ("[udp_download]\nrate = 100", "udp_download.rate"),
        ] {
            match Config::parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Same port on different transports is fine.
        assert!(Config::parse("[signal]\nbind = \"0.0.0.0:9000\"").is_ok());
    }

    const S3_TABLE: &str = r#"
on_conflict = "reject"
[storage]
backend = "s3"
[storage.s3]
endpoint = "http://127.0.0.1:3900"
region = "garage"
bucket = "ferry"
prefix = ""
credentials_file = "/etc/ferry/s3.env"
[storage.catalog]
etcd = ["http://127.0.0.1:2379", "http://127.0.0.1:2479", "http://127.0.0.1:2579"]
"#;

    #[test]
    fn the_storage_table_selects_s3_and_round_trips() {
        let c = Config::parse(S3_TABLE).unwrap();
        assert_eq!(c.storage.backend, BackendKind::S3);
        assert_eq!(c.storage.path, PathBuf::from("./ferry-data"));
        let s3 = c.storage.s3.as_ref().unwrap();
        assert_eq!(
            (s3.region.as_str(), s3.bucket.as_str()),
            ("garage", "ferry")
        );
        assert_eq!(s3.part_size, Size(8 << 20));
        assert_eq!(c.storage.catalog.as_ref().unwrap().etcd.len(), 3);
        let text = c.to_toml();
        assert!(text.contains("[storage.s3]"), "{text}");
        assert_eq!(Config::parse(&text).unwrap(), c);
        // The plain directory form still reads, and prints as it was written.
        let c = Config::parse("storage = \"/srv/ferry\"").unwrap();
        assert_eq!(c.storage, StorageConfig::local("/srv/ferry"));
        assert!(c.to_toml().contains("storage = \"/srv/ferry\""));
    }

    #[test]
    fn an_s3_backend_without_its_tables_or_keys_is_refused() {
        for (text, key) in [
            ("[storage]\nbackend = \"s3\"", "storage.s3"),
            (
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://h:1\"\nbucket = \"b\"",
                "storage.catalog",
            ),
            (
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"h:1\"\nbucket = \"b\"\n[storage.catalog]\netcd = [\"http://e:2379\"]",
                "storage.s3.endpoint",
            ),
            (
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nendpoint = \"http://h:1\"\nbucket = \"b\"\n[storage.catalog]\netcd = []",
                "storage.catalog.etcd",
            ),
        ] {
            match Config::parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = Config::parse("[storage.s3]\nendpoint = \"http://h:1\"\n").unwrap_err();
        assert!(err.to_string().contains("missing field `bucket`"), "{err}");
        let err = Config::parse("[storage]\nbackend = \"s4\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `s4`"), "{err}");
    }
}

#[cfg(test)]
mod shipped_example {
    use super::*;

    /// deploy/ferryd.toml shows every key with its default (the storage root
    /// aside), so the commented example never drifts from the code.
    #[test]
    fn the_example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ferryd.toml");
        let example = Config::load(&path).unwrap();
        let want = Config {
            storage: StorageConfig::local("/var/lib/ferry"),
            ..Config::default()
        };
        assert_eq!(example, want);
        // Every key print-config knows appears in the example.
        let text = std::fs::read_to_string(&path).unwrap();
        for line in want.to_toml().lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    text.contains(&format!("\n{key} = ")),
                    "{key} is missing from the example"
                );
            }
        }
    }

    #[test]
    fn log_filters_that_would_silence_the_log_are_refused() {
        for good in [
            "info",
            "debug",
            "ferryd=debug",
            "info,ferryd::signal=trace",
            "WARN",
            "off",
        ] {
            assert!(check_log_filter(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("warning", "did you mean \"warn\""),
            ("verbose", "did you mean \"debug\""),
            ("ferryd", "is not a level"),
            ("info,ferryd=loud", "\"loud\" is not a level"),
            ("a b=info", "is not a target"),
            ("", "must not be empty"),
        ] {
            let e = Config::parse(&format!("[log]\nlevel = {bad:?}\n")).unwrap_err();
            let text = e.to_string();
            assert!(
                text.starts_with("log.level: ") && text.contains(says),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn http_defaults_to_loopback_and_cannot_take_a_service_port() {
        let c = Config::default();
        assert_eq!(c.http.bind.to_string(), "127.0.0.1:9080");
        assert_eq!(c.http.admin.len(), 2);
        let e = Config::parse("[http]\nbind = \"0.0.0.0:9005\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "http.bind: port 9005 is already used by signal"
        );
        // A UDP service's port is no clash.
        assert!(Config::parse("[http]\nbind = \"0.0.0.0:9000\"\n").is_ok());
    }
}
