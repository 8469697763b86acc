//! ferry's client library: every protocol `ferryd` serves, for people (the
//! `ferry` binary) and for tests and load generators.
//!
//! # Layout
//! - [`Client`]: where the server is and how long to wait; one method per
//!   operation (`ping`, `send`, `get`, `send_dir`, `get_dir`, `sum`).
//! - One module per protocol: [`signal`], [`tcp_upload`], [`udp_upload`],
//!   [`magic`], [`udp_download`], [`udp_sum`].
//! - [`local`]: downloads land in a temporary file and are renamed into
//!   place only once complete and verified; existing files are kept unless forced.
//! - [`Progress`]: how transfers report bytes moved (the CLI draws bars).
//! - [`Error`]: what went wrong, each kind with its own exit code.
//! - [`bench`]: the load generator behind `ferry bench`.
#![warn(missing_docs, unreachable_pub)]

pub mod bench;
pub mod check;
pub mod local;
pub mod ls;
pub mod magic;
mod progress;
pub mod signal;
pub mod tcp_upload;
pub mod udp_download;
pub mod udp_sum;
pub mod udp_upload;
pub mod watched;
mod wrong_port;

pub use progress::{NoProgress, Progress};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ferry_proto::service::ServiceId;
use tokio::net::{lookup_host, TcpStream};

/// The port of each service, indexed by it (`ports[ServiceId::Signal]`);
/// by default 9000 to 9005.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports([u16; ServiceId::ALL.len()]);

impl Default for Ports {
    fn default() -> Self {
        Ports(ServiceId::ALL.map(ServiceId::default_port))
    }
}

impl std::ops::Index<ServiceId> for Ports {
    type Output = u16;

    fn index(&self, service: ServiceId) -> &u16 {
        &self.0[service.index()]
    }
}

impl std::ops::IndexMut<ServiceId> for Ports {
    fn index_mut(&mut self, service: ServiceId) -> &mut u16 {
        &mut self.0[service.index()]
    }
}

/// What can go wrong, each with the exit code the CLI uses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers at the address (exit 3).
    #[error("cannot reach {what}: {reason}")]
    Unreachable {
        /// Host and port.
        what: String,
        /// Why.
        reason: String,
    },
    /// The server refused, with its reason (exit 4).
    #[error("refused by the server: {0}")]
    Refused(ServerText),
    /// The bytes did not check out (exit 5).
    #[error("verification failed: {0}")]
    Verification(String),
    /// A wait ran out (exit 6).
    #[error("timed out {0}")]
    Timeout(String),
    /// A local file problem (exit 7).
    #[error("{0}")]
    Local(String),
    /// The server broke the protocol, or the connection failed mid-way (exit 1).
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// The CLI's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Protocol(_) => 1,
            Error::Unreachable { .. } => 3,
            Error::Refused(_) => 4,
            Error::Verification(_) => 5,
            Error::Timeout(_) => 6,
            Error::Local(_) => 7,
        }
    }

    /// The error with a word on the port it came from, when there is one:
    /// a reply that was another service's, or a port that is another
    /// service's by default. Refusals keep the server's own words.
    pub(crate) fn hinted(self, hint: Option<String>) -> Error {
        let Some(hint) = hint else { return self };
        match self {
            Error::Protocol(s) if !s.contains("answered like") => {
                Error::Protocol(format!("{s}; {hint}"))
            }
            Error::Timeout(s) => Error::Timeout(format!("{s}; {hint}")),
            Error::Unreachable { what, reason } => Error::Unreachable {
                what,
                reason: format!("{reason}; {hint}"),
            },
            other => other,
        }
    }

    /// A UDP receive error: "connection refused" is the ICMP port-unreachable
    /// of a server that is not there.
    pub(crate) fn udp_recv(server: SocketAddr, context: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            return Error::Unreachable {
                what: server.to_string(),
                reason: e.to_string(),
            };
        }
        Error::io(context, e)
    }

    pub(crate) fn io(context: &str, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::TimedOut => Error::Timeout(context.to_owned()),
            std::io::ErrorKind::ConnectionRefused => Error::Unreachable {
                what: context.to_owned(),
                reason: e.to_string(),
            },
            _ => Error::Protocol(format!("{context}: {e}")),
        }
    }
}

/// Text a server sent, safe for a terminal: every control character (an
/// escape sequence that retitles or clears the screen, a carriage return
/// that overwrites a line, a newline that forges one) written as an escape,
/// `\u{1b}`.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a server said, as it said it; shown (`Display`) only through
/// [`shown`], so no server text reaches a terminal raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerText(String);

impl ServerText {
    /// The text as the server sent it (lossy where it was not UTF-8).
    pub fn from_wire(bytes: &[u8]) -> ServerText {
        ServerText(String::from_utf8_lossy(bytes).into_owned())
    }

    /// The text as received, for matching (never for a terminal).
    pub fn as_received(&self) -> &str {
        &self.0
    }

    /// Whether the server's text contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0.contains(needle)
    }
}

impl From<String> for ServerText {
    fn from(text: String) -> ServerText {
        ServerText(text)
    }
}

impl From<&str> for ServerText {
    fn from(text: &str) -> ServerText {
        ServerText(text.to_owned())
    }
}

impl std::fmt::Display for ServerText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shown(&self.0))
    }
}

/// A whole line of the CLI's output, safe for a terminal: as [`shown`], but
/// the line breaks ferry itself writes between lines stay.
pub fn shown_lines(text: &str) -> String {
    text.split('\n').map(shown).collect::<Vec<_>>().join("\n")
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Which protocol an upload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVia {
    /// `signal` SAF: acknowledged and CRC-checked end to end (default).
    Signal,
    /// `tcp_upload`: size, name, `go ahead`, data.
    Tcp,
    /// `udp_upload`: the lab's JSON header and retry rule.
    Udp,
}

/// Which protocol a download uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetVia {
    /// `signal` RAF: size and CRC checked (default).
    Signal,
    /// `magic_download`: size checked.
    Magic,
    /// `udp_download`, checked against ferry's `STAT` size and CRC.
    Udp,
}

/// What an upload achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The name the server stored it under, when the protocol says.
    pub stored_as: Option<String>,
    /// Bytes sent.
    pub bytes: u64,
    /// CRC-32 of the bytes (0 for a tree).
    pub crc: u32,
    /// Attempts made (UDP retries).
    pub attempts: usize,
}

/// What a download achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Where it was written.
    pub path: std::path::PathBuf,
    /// Bytes received (sum of files for a tree).
    pub bytes: u64,
    /// CRC-32 of the bytes (0 for a tree).
    pub crc: u32,
    /// Files (1 for a single file).
    pub files: usize,
}

/// A server and how to talk to it.
#[derive(Debug, Clone)]
pub struct Client {
    /// Host name or address.
    pub host: String,
    /// The service ports.
    pub ports: Ports,
    /// Longest wait for any reply or the next bytes (default 10 s).
    pub timeout: Duration,
    /// How long a UDP upload waits for each reply before retrying (the lab's 1 s).
    pub udp_reply_timeout: Duration,
    /// UDP attempts before giving up (default 5).
    pub udp_attempts: usize,
    /// Paces each upload (TCP and UDP) to this many bytes per second (None:
    /// as fast as possible): `ferry send --rate`, and `ferry bench --rate` to
    /// play students on real links.
    pub upload_rate: Option<u64>,
    /// Speak exactly as the handouts' clients do, for testing a student's
    /// own server: `signal` in the handout's pause framing (no lengths, no
    /// CRC, no acknowledgement), `udp_download` without ferry's `STAT`.
    /// tcp_upload, udp_upload, magic_download and udp_sum are the handouts'
    /// own exchanges either way.
    pub handout: bool,
    /// Port of ferryd's HTTP listener (`ferry ls`; default 9080).
    pub http_port: u16,
}

/// Keeps a transfer at or under a rate: call [`Pacer::sent`] after each write.
pub(crate) struct Pacer {
    rate: Option<u64>,
    started: std::time::Instant,
    bytes: u64,
}

impl Pacer {
    pub(crate) fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate: rate.filter(|&r| r > 0),
            started: std::time::Instant::now(),
            bytes: 0,
        }
    }

    pub(crate) async fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

impl Client {
    /// A client for `host` with the default ports and timeouts.
    pub fn new(host: impl Into<String>) -> Client {
        Client {
            host: host.into(),
            ports: Ports::default(),
            timeout: Duration::from_secs(10),
            udp_reply_timeout: Duration::from_secs(1),
            udp_attempts: 5,
            upload_rate: None,
            handout: false,
            http_port: 9080,
        }
    }

    /// Resolves `host:port` to one address.
    pub async fn resolve(&self, port: u16) -> Result<SocketAddr> {
        let what = format!("{}:{port}", self.host);
        let mut addrs =
            lookup_host((self.host.as_str(), port))
                .await
                .map_err(|e| Error::Unreachable {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
        addrs.next().ok_or(Error::Unreachable {
            what,
            reason: "the name has no address".into(),
        })
    }

    /// A UDP socket connected to `host:port`, for one exchange.
    pub(crate) async fn udp(&self, port: u16) -> Result<(tokio::net::UdpSocket, SocketAddr)> {
        let server = self.resolve(port).await?;
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| Error::io("opening a UDP socket", e))?;
        sock.connect(server)
            .await
            .map_err(|e| Error::io("opening a UDP socket", e))?;
        Ok((sock, server))
    }

    /// A connection to `port`, its reads bounded by `timeout` over each
    /// exchange ([`watched`]).
    pub(crate) async fn connect(&self, port: u16) -> Result<watched::Watched> {
        let addr = self.resolve(port).await?;
        let what = addr.to_string();
        match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(Error::Timeout(format!("connecting to {what}"))),
            Ok(Err(e)) => Err(Error::Unreachable {
                what,
                reason: e.to_string(),
            }),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(watched::Watched::new(s, self.timeout))
            }
        }
    }

    /// `PIN` → `PON` on the signal service; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        self.on(ServiceId::Signal, signal::ping(self)).await
    }

    /// `op` on `service`: its error says so when the port is another
    /// service's by default.
    async fn on<T>(
        &self,
        service: ServiceId,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let port = self.ports[service];
        op.await
            .map_err(|e| e.hinted(wrong_port::hint(service, port, None)))
    }

    /// Uploads `path` as `name` (default: its file name).
    pub async fn send(
        &self,
        via: SendVia,
        path: &Path,
        name: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Sent> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => local::file_name(path)?,
        };
        match via {
            SendVia::Signal if self.handout => {
                let op = signal::handout::send_file(self, path, &name, progress);
                self.on(ServiceId::Signal, op).await
            }
            SendVia::Signal => {
                let op = signal::send_file(self, path, &name, progress);
                self.on(ServiceId::Signal, op).await
            }
            SendVia::Tcp => {
                let op = tcp_upload::send(self, path, &name, progress);
                self.on(ServiceId::TcpUpload, op).await
            }
            SendVia::Udp => {
                let op = udp_upload::send(self, path, &name, progress);
                self.on(ServiceId::UdpUpload, op).await
            }
        }
    }

    /// Downloads `name` to `dest` (a file path, or an existing directory to put
    /// it in). An existing file is kept unless `force`.
    pub async fn get(
        &self,
        via: GetVia,
        name: &str,
        dest: &Path,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Got> {
        let target = local::Target::new(dest, name, force)?;
        match via {
            GetVia::Signal if self.handout => {
                let op = signal::handout::get_file(self, name, target, progress);
                self.on(ServiceId::Signal, op).await
            }
            GetVia::Signal => {
                let op = signal::get_file(self, name, target, progress);
                self.on(ServiceId::Signal, op).await
            }
            GetVia::Magic => {
                let op = magic::get(self, name, target, progress);
                self.on(ServiceId::MagicDownload, op).await
            }
            GetVia::Udp if self.handout => {
                let op = udp_download::get_plain(self, name, target, progress);
                self.on(ServiceId::UdpDownload, op).await
            }
            GetVia::Udp => {
                let op = udp_download::get(self, name, target, progress);
                self.on(ServiceId::UdpDownload, op).await
            }
        }
    }

    /// Uploads the directory `dir` as a tree named `name` (default: its name).
    /// With [`Client::handout`], the handout's flat repo: the regular files
    /// at the top of `dir`, and no name.
    pub async fn send_dir(
        &self,
        dir: &Path,
        name: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Sent> {
        if self.handout {
            return signal::handout::send_dir(self, dir, progress).await;
        }
        let name = match name {
            Some(n) => n.to_owned(),
            None => local::file_name(dir)?,
        };
        signal::send_dir(self, dir, &name, progress).await
    }

    /// Downloads the tree `name` to exactly `dest` (default: `./<name>`),
    /// whole or not at all. An existing `dest` is kept unless `force`.
    pub async fn get_dir(
        &self,
        name: &str,
        dest: &Path,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Got> {
        let target = local::Target::exact(dest, name, force)?;
        if self.handout {
            return signal::handout::get_dir(self, name, target, progress).await;
        }
        signal::get_dir(self, name, target, progress).await
    }

    /// The adding-two-numbers exchange: sends `name` and `number`, returns the
    /// server's name and number.
    pub async fn sum(&self, name: &str, number: i64) -> Result<(String, i64)> {
        self.on(ServiceId::UdpSum, udp_sum::sum(self, name, number))
            .await
    }
}
