//! `ferry`: the command-line client for every protocol ferryd serves.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry::{Client, Error, GetVia, Ports, Progress, SendVia};
use ferry_config::ServiceId;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::json;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the server broke the protocol, the connection failed mid-way, or a
     tcp upload was not confirmed stored
  2  bad command line
  3  server not reachable
  4  refused by the server (its reason is printed: no such file, name refused, too large, busy)
  5  verification failed (size or CRC-32 mismatch)
  6  timed out
  7  local file problem (missing, exists without --force, cannot write)
  130  interrupted (Ctrl-C); nothing partial is left";

const EXAMPLES: &str = "\
Examples:
  ferry ping                          health check of localhost (exit 0 when healthy)
  ferry --host lab1 send report.pdf   upload, acknowledged and CRC-checked
  ferry send --via udp photo.jpg      the lab's UDP upload with its retry rule
  ferry get report.pdf -o /tmp/       download to /tmp/report.pdf
  ferry get --via magic notes.txt     the COSC264 protocol
  ferry send-dir ./project            a whole tree, stored whole or not at all
  ferry get-dir project -o copy       and back
  ferry sum \"Client of Ann\" 7         adding two numbers
  ferry --handout --signal-port 8080 send report.pdf   test a student's own 004 server
  ferry bench signal-up --size 1M --clients 50 --duration 10s   load generator";

/// One client for every protocol ferryd serves.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, after_help = format!("{EXAMPLES}\n\n{EXIT_CODES}"))]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// The server's host name or address.
    #[arg(long, env = "FERRY_HOST", default_value = "localhost", global = true)]
    host: String,
    /// The six services' ports (`--udp-upload-port` … `--signal-port`).
    #[command(flatten)]
    ports: PortFlags,
    /// Port of ferryd's HTTP listener (for `ls`).
    #[arg(long, env = "FERRY_HTTP_PORT", default_value_t = 9080, global = true)]
    http_port: u16,
    /// Longest wait for the server (e.g. 10s, 500ms, 1m): over TCP, each
    /// exchange must bring at least 1 KiB (or end) within it, so a server
    /// that drips a byte at a time is cut.
    #[arg(long, env = "FERRY_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    timeout: Duration,
    /// How long UDP waits for each reply before retrying (the lab's 1 s).
    #[arg(long, env = "FERRY_UDP_TIMEOUT", default_value = "1s", value_parser = parse_duration, global = true)]
    udp_timeout: Duration,
    /// UDP attempts before giving up.
    #[arg(long, env = "FERRY_UDP_ATTEMPTS", default_value_t = 5, global = true)]
    attempts: usize,
    /// Speak exactly as the lab handouts' clients do, to test a student's own
    /// server: signal in the handout's 0.1 s pause framing (no lengths, no
    /// CRC-32, no acknowledgement: a send is reported once the server closes
    /// after CLS), and udp downloads without ferry's STAT request (nothing to
    /// verify the size against). The other protocols are the handouts' own
    /// exchanges either way.
    #[arg(long, env = "FERRY_HANDOUT", global = true)]
    handout: bool,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print one JSON object per result on stdout (errors too).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload files.
    Send {
        /// Files to upload.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Protocol: signal (acknowledged, CRC-checked), tcp or udp.
        #[arg(long, value_enum, default_value_t = SendProto::Signal)]
        via: SendProto,
        /// Name to store it under (one file only).
        #[arg(long = "as")]
        as_name: Option<String>,
        /// Pace the upload to this many bytes per second (e.g. 20M). The lab's
        /// UDP upload has no flow control: on a busy machine or a slow link a
        /// paced upload loses no datagrams and needs no retry.
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
    },
    /// Download a file; written to a temporary file and renamed once complete and verified.
    Get {
        /// The remote name (a path inside the server's root).
        name: String,
        /// Where to write it: a file, or an existing directory (default: ./NAME).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Protocol: signal (size and CRC checked), magic (size checked) or udp (size and CRC checked).
        #[arg(long, value_enum, default_value_t = GetProto::Signal)]
        via: GetProto,
        /// Replace an existing local file.
        #[arg(long)]
        force: bool,
    },
    /// Upload a directory tree (SAR); symlinks and special files are skipped.
    SendDir {
        /// The directory.
        dir: PathBuf,
        /// Name to store it under.
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Download a directory tree (RAR), whole or not at all.
    GetDir {
        /// The remote directory.
        name: String,
        /// Where to put it (default: ./NAME).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write into an existing local directory: each file of the tree
        /// replaces the local file of the same path; every other local file
        /// is kept.
        #[arg(long)]
        force: bool,
    },
    /// Health check: PIN, expect PON; prints the round-trip time.
    Ping,
    /// List the files the server stored (its ledger, newest first): name,
    /// size, CRC-32, time. Through ferryd's HTTP listener (--http-port); a
    /// client outside its admin networks sees the files sent from its own
    /// address.
    Ls,
    /// Grade a server (a student's) against its handout, rule by rule:
    /// pass, FAIL with what was expected and what arrived, or advice (what
    /// the handout only implies). Exit 0 when every required rule passes, 1
    /// when one fails, 3 when the server cannot be reached.
    Check {
        /// udp_upload, udp_download, udp_sum, tcp_upload, magic_download or signal.
        #[arg(value_parser = parse_service)]
        protocol: ServiceId,
        /// A file the server has (udp_download, magic_download).
        #[arg(long)]
        file: Option<String>,
        /// A local copy of --file, to compare the bytes with.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Also write the results as JUnit XML to this file (for a course's CI).
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Adding two numbers: send a name and an integer (1..100), get the server's.
    Sum {
        /// Your name, e.g. "Client of Ann".
        name: String,
        /// An integer from 1 to 100.
        #[arg(allow_negative_numbers = true)]
        number: i64,
    },
    /// Load generator: N clients repeat one operation; reports throughput,
    /// transfers/s, latency percentiles and errors.
    Bench {
        /// What to measure.
        #[arg(value_enum)]
        workload: ferry::bench::Workload,
        /// Bytes per transfer (e.g. 1048576, 64K, 1M, 1G).
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        size: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Stop after this many transfers in all.
        #[arg(long)]
        count: Option<u64>,
        /// Or after this long (ignored with --count).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Pace each client's uploads to this many bytes/s (e.g. 12M for a
        /// 100 Mbit/s student link); default: as fast as possible.
        #[arg(long, value_parser = parse_size)]
        rate: Option<u64>,
    },
    /// Writes the man page and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SendProto {
    Signal,
    Tcp,
    Udp,
}

/// A size in the configuration's grammar ([`ferry_config::Size`]): `64K`,
/// `1M` and `1 GiB` are powers of 1024, `1MB` of 1000.
fn parse_size(s: &str) -> Result<u64, ferry_config::UnitError> {
    s.parse::<ferry_config::Size>().map(|size| size.0)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GetProto {
    Signal,
    Magic,
    Udp,
}

/// A duration in the configuration's grammar ([`ferry_config::Dur`]):
/// `10s`, `500ms`, `1m 30s`; a bare number is refused.
fn parse_duration(s: &str) -> Result<Duration, ferry_config::UnitError> {
    match s.parse::<ferry_config::Dur>()? {
        ferry_config::Dur(d) if d.is_zero() => Err(ferry_config::UnitError::Zero(s.to_owned())),
        ferry_config::Dur(d) => Ok(d),
    }
}

/// indicatif bars on stderr, only when both stdout and stderr are terminals.
struct Bars {
    enabled: bool,
    /// Say on stderr when a UDP upload starts again (not with -q or --json).
    announce: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn new(enabled: bool, announce: bool) -> Bars {
        Bars {
            enabled,
            announce,
            bar: Mutex::new(None),
        }
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f(b);
        }
    }
}

impl Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        // Sizes as every other line of ferry writes them ([`human`]),
        // not indicatif's own.
        let template = if total.is_some() {
            "{msg} [{bar:30}] {done}/{total} {rate} ETA {eta}"
        } else {
            "{msg} {spinner} {done} {rate}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            let style = style
                .with_key("done", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human(s.pos()));
                })
                .with_key("total", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human(s.len().unwrap_or(0)));
                })
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    // Whole bytes a second: the fraction is noise.
                    let _ = write!(w, "{}/s", human(s.per_sec() as u64));
                });
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn advance(&self, n: u64) {
        self.with(|b| b.inc(n));
    }

    fn restart(&self) {
        self.with(|b| b.set_position(0));
    }

    fn retry(&self, attempt: usize, of: usize, why: &str) {
        if !self.announce {
            return;
        }
        let line = format!(
            "ferry: {}; starting again (attempt {attempt} of {of})",
            ferry::shown(why)
        );
        let guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

/// A byte count for people: `512 B`, `8.0 MiB` (binary units, one decimal):
/// the one formatter of every size the CLI writes, progress bars included.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

struct Out {
    quiet: bool,
    json: bool,
}

impl Out {
    fn ok(&self, text: String, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else if !self.quiet {
            // Names and texts in it may come from the server.
            println!("{}", ferry::shown_lines(&text));
        }
    }

    fn err(&self, command: &str, e: &Error) -> u8 {
        let kind = match e {
            Error::Unreachable { .. } => "unreachable",
            Error::Refused(_) => "refused",
            Error::Verification(_) => "verification",
            Error::Timeout(_) => "timeout",
            Error::Local(_) => "local",
            Error::Protocol(_) => "protocol",
        };
        if self.json {
            println!(
                "{}",
                json!({"ok": false, "command": command, "error": e.to_string(), "kind": kind, "exit_code": e.exit_code()})
            );
        } else {
            eprintln!("ferry: {command}: {}", ferry::shown_lines(&e.to_string()));
        }
        e.exit_code()
    }
}

/// What every command runs with.
struct Run<'a> {
    client: Client,
    out: Out,
    bars: Bars,
    global: &'a Global,
    started: Instant,
}

impl Run<'_> {
    async fn command(&self, command: &Command) -> u8 {
        match command {
            Command::Ping => self.ping().await,
            Command::Ls => self.ls().await,
            Command::Sum { name, number } => self.sum(name, *number).await,
            Command::Check {
                protocol,
                file,
                expect,
                junit,
            } => {
                self.check(*protocol, file.clone(), expect.as_deref(), junit.as_deref())
                    .await
            }
            Command::Send {
                files,
                via,
                as_name,
                rate,
            } => self.send(files, *via, as_name.as_deref(), *rate).await,
            Command::Get {
                name,
                output,
                via,
                force,
            } => {
                self.get(name, output.clone().unwrap_or_default(), *via, *force)
                    .await
            }
            Command::SendDir { dir, as_name } => self.send_dir(dir, as_name.as_deref()).await,
            Command::GetDir {
                name,
                output,
                force,
            } => {
                self.get_dir(name, output.clone().unwrap_or_default(), *force)
                    .await
            }
            Command::Bench {
                workload,
                size,
                clients,
                count,
                duration,
                rate,
            } => {
                let plan = ferry::bench::Plan {
                    size: *size,
                    clients: *clients,
                    count: *count,
                    duration: *duration,
                };
                self.bench(*workload, plan, *rate).await
            }
            Command::GenerateDocs { .. } => 0,
        }
    }

    async fn ping(&self) -> u8 {
        let client = &self.client;
        match client.ping().await {
            Ok(rtt) => {
                let ms = rtt.as_secs_f64() * 1000.0;
                self.out.ok(
                    format!("PON from {}:{} in {ms:.2} ms", client.host, client.ports[ServiceId::Signal]),
                    json!({"ok": true, "command": "ping", "host": client.host, "port": client.ports[ServiceId::Signal], "rtt_ms": ms}),
                );
                0
            }
            Err(e) => self.out.err("ping", &e),
        }
    }

    async fn ls(&self) -> u8 {
        match self.client.ls().await {
            Ok(files) => {
                let mut text = String::new();
                for f in &files {
                    let renamed = if f.stored != f.requested {
                        format!(" (sent as {:?})", f.requested)
                    } else {
                        String::new()
                    };
                    let unverified = match f.unverified_source {
                        true => " (UDP: unverified)",
                        false => "",
                    };
                    text.push_str(&format!(
                        "{}  {:>10}  {:8}  {}{renamed}  via {} from {}{unverified}\n",
                        f.time,
                        human(f.size),
                        f.crc,
                        f.stored,
                        f.service,
                        f.peer
                    ));
                }
                text.push_str(&format!("{} file(s)", files.len()));
                self.out
                    .ok(text, json!({"ok": true, "command": "ls", "files": files}));
                0
            }
            Err(e) => self.out.err("ls", &e),
        }
    }

    async fn check(
        &self,
        protocol: ServiceId,
        file: Option<String>,
        expect: Option<&std::path::Path>,
        junit: Option<&std::path::Path>,
    ) -> u8 {
        let expect = match expect.map(std::fs::read).transpose() {
            Ok(e) => e,
            Err(e) => {
                return self
                    .out
                    .err("check", &Error::Local(format!("--expect: {e}")))
            }
        };
        let opts = ferry::check::Options { file, expect };
        let report = match ferry::check::check(&self.client, protocol, &opts).await {
            Ok(r) => r,
            Err(e) => return self.out.err("check", &e),
        };
        if let Some(path) = junit {
            if let Err(e) = std::fs::write(path, ferry::check::junit(&report)) {
                return self.out.err(
                    "check",
                    &Error::Local(format!("--junit {}: {e}", path.display())),
                );
            }
        }
        let mut text = vec![format!(
            "ferry check {} against {}",
            protocol, report.server
        )];
        for c in &report.results {
            text.extend(c.lines());
        }
        text.push(report.summary());
        self.out.ok(text.join("\n"), ferry::check::to_json(&report));
        u8::from(!report.passed())
    }

    async fn sum(&self, name: &str, number: i64) -> u8 {
        match self.client.sum(name, number).await {
            Ok((server, theirs)) => {
                self.out.ok(
                    format!("{name}: {number}\n{server}: {theirs}\nsum: {}", number + theirs),
                    json!({"ok": true, "command": "sum", "client": name, "client_number": number, "server": server, "server_number": theirs, "sum": number + theirs}),
                );
                0
            }
            Err(e) => self.out.err("sum", &e),
        }
    }

    async fn send(
        &self,
        files: &[PathBuf],
        via: SendProto,
        as_name: Option<&str>,
        rate: Option<u64>,
    ) -> u8 {
        let mut client = self.client.clone();
        client.upload_rate = rate;
        if as_name.is_some() && files.len() > 1 {
            eprintln!(
                "ferry: send: --as names one file, but {} were given",
                files.len()
            );
            return 2;
        }
        let via_lib = match via {
            SendProto::Signal => SendVia::Signal,
            SendProto::Tcp => SendVia::Tcp,
            SendProto::Udp => SendVia::Udp,
        };
        let mut first_error = 0;
        for file in files {
            let t = Instant::now();
            match client.send(via_lib, file, as_name, &self.bars).await {
                Ok(sent) => self.sent(file, via, &sent, t),
                Err(e) => {
                    let code = self.out.err("send", &e);
                    if first_error == 0 {
                        first_error = code;
                    }
                }
            }
        }
        first_error
    }

    /// The line (or JSON object) for one sent file.
    fn sent(&self, file: &std::path::Path, via: SendProto, sent: &ferry::Sent, t: Instant) {
        let mut stored = match (sent.stored_as.as_deref(), via) {
            (Some(s), _) => format!(", stored as {s:?}"),
            (None, SendProto::Udp) => {
                ", stored (the lab's UDP upload does not say under which name)".into()
            }
            (None, _) => String::new(),
        };
        if self.global.handout && matches!(via, SendProto::Signal) {
            stored.push_str(" (handout framing: not acknowledged, nothing verified)");
        }
        let tries = if self.global.verbose && sent.attempts > 1 {
            format!(" after {} attempts", sent.attempts)
        } else {
            String::new()
        };
        let via_name = format!("{via:?}").to_lowercase();
        let crc = ferry_proto::crc::format_hex(sent.crc);
        self.out.ok(
            format!(
                "sent {} ({}) via {via_name}{stored}, CRC-32 {crc}{tries}",
                file.display(),
                human(sent.bytes),
            ),
            json!({"ok": true, "command": "send", "file": file, "via": via_name, "stored_as": sent.stored_as, "bytes": sent.bytes, "crc": crc, "attempts": sent.attempts, "seconds": t.elapsed().as_secs_f64()}),
        );
    }

    async fn get(&self, name: &str, dest: PathBuf, via: GetProto, force: bool) -> u8 {
        let via_lib = match via {
            GetProto::Signal => GetVia::Signal,
            GetProto::Magic => GetVia::Magic,
            GetProto::Udp => GetVia::Udp,
        };
        match self
            .client
            .get(via_lib, name, &dest, force, &self.bars)
            .await
        {
            Ok(got) => {
                let crc = ferry_proto::crc::format_hex(got.crc);
                self.out.ok(
                    format!("got {name} -> {} ({}, CRC-32 {crc})", got.path.display(), human(got.bytes)),
                    json!({"ok": true, "command": "get", "name": name, "path": got.path, "via": format!("{via:?}").to_lowercase(), "bytes": got.bytes, "crc": crc, "seconds": self.started.elapsed().as_secs_f64()}),
                );
                0
            }
            Err(e) => self.out.err("get", &e),
        }
    }

    async fn send_dir(&self, dir: &std::path::Path, as_name: Option<&str>) -> u8 {
        match self.client.send_dir(dir, as_name, &self.bars).await {
            Ok(sent) => {
                let size = human(sent.bytes);
                self.out.ok(
                    match &sent.stored_as {
                        Some(name) => format!("sent {} ({size}), stored as {name:?}", dir.display()),
                        None => format!("sent {} ({size}) as the handout's flat repo (not acknowledged)", dir.display()),
                    },
                    json!({"ok": true, "command": "send-dir", "dir": dir, "stored_as": sent.stored_as, "bytes": sent.bytes, "seconds": self.started.elapsed().as_secs_f64()}),
                );
                0
            }
            Err(e) => self.out.err("send-dir", &e),
        }
    }

    async fn get_dir(&self, name: &str, dest: PathBuf, force: bool) -> u8 {
        match self.client.get_dir(name, &dest, force, &self.bars).await {
            Ok(got) => {
                self.out.ok(
                    format!("got {name}/ -> {} ({} files, {})", got.path.display(), got.files, human(got.bytes)),
                    json!({"ok": true, "command": "get-dir", "name": name, "path": got.path, "files": got.files, "bytes": got.bytes, "seconds": self.started.elapsed().as_secs_f64()}),
                );
                0
            }
            Err(e) => self.out.err("get-dir", &e),
        }
    }

    async fn bench(
        &self,
        workload: ferry::bench::Workload,
        plan: ferry::bench::Plan,
        rate: Option<u64>,
    ) -> u8 {
        let mut client = self.client.clone();
        client.upload_rate = rate;
        let r = match ferry::bench::run(&client, workload, plan).await {
            Ok(r) => r,
            Err(e) => return self.out.err("bench", &e),
        };
        self.out.ok(
            format!(
                "{} size {} x {} clients: {} transfers, {} errors in {:.2} s\n\
                 throughput {:.1} MiB/s, {:.1} transfers/s\n\
                 latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
                r.workload, human(r.size), r.clients, r.transfers, r.errors, r.seconds,
                r.bytes_per_second / (1 << 20) as f64, r.transfers_per_second,
                r.p50_ms, r.p99_ms, r.max_ms,
                r.first_error.as_deref().map(|e| format!("\nfirst error: {e}")).unwrap_or_default()
            ),
            json!({"ok": r.errors == 0, "command": "bench", "workload": r.workload, "size": r.size,
                   "clients": r.clients, "transfers": r.transfers, "errors": r.errors,
                   "first_error": r.first_error, "seconds": r.seconds,
                   "bytes_per_second": r.bytes_per_second, "transfers_per_second": r.transfers_per_second,
                   "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms}),
        );
        u8::from(r.errors > 0)
    }
}

/// A port flag for each service, made from the service table: the flag
/// and variable each service names ([`ServiceId::port_flag`],
/// [`ServiceId::port_env`]), its default port.
#[derive(Debug, Clone, Copy)]
struct PortFlags(Ports);

impl clap::FromArgMatches for PortFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut ports = Ports::default();
        for id in ServiceId::ALL {
            if let Some(port) = m.get_one::<u16>(id.port_flag()) {
                ports[id] = *port;
            }
        }
        Ok(PortFlags(ports))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// Other spellings students try for a port flag (`--tcp-port`), taken as
/// the flag instead of suggesting an unrelated one.
fn port_aliases(id: ServiceId) -> &'static [&'static str] {
    match id {
        ServiceId::TcpUpload => &["tcp-port"],
        ServiceId::MagicDownload => &["magic-download-port"],
        ServiceId::UdpUpload | ServiceId::UdpDownload | ServiceId::UdpSum | ServiceId::Signal => {
            &[]
        }
    }
}

impl Args for PortFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        ServiceId::ALL.into_iter().fold(cmd, |cmd, id| {
            cmd.arg(
                clap::Arg::new(id.port_flag())
                    .long(id.port_flag())
                    .aliases(port_aliases(id))
                    .env(id.port_env())
                    .value_name(id.port_flag().replace('-', "_").to_uppercase())
                    .value_parser(clap::value_parser!(u16))
                    .default_value(id.default_port().to_string())
                    .global(true)
                    .help(format!("Port of {id}")),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl Global {
    fn client(&self) -> Client {
        Client {
            host: self.host.clone(),
            ports: self.ports.0,
            timeout: self.timeout,
            udp_reply_timeout: self.udp_timeout,
            udp_attempts: self.attempts,
            upload_rate: None,
            handout: self.handout,
            http_port: self.http_port,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let g = &cli.global;
    if let Command::GenerateDocs { dir } = &cli.command {
        return match ferry_gendocs::generate_docs(
            <Cli as clap::CommandFactory>::command(),
            "1",
            dir,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferry: generate-docs: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let run = Run {
        client: g.client(),
        out: Out {
            quiet: g.quiet,
            json: g.json,
        },
        bars: Bars::new(
            !g.quiet
                && !g.json
                && std::io::stdout().is_terminal()
                && std::io::stderr().is_terminal(),
            !g.quiet && !g.json,
        ),
        global: g,
        started: Instant::now(),
    };
    // Ctrl-C drops the transfer, whose partial download removes itself.
    // The handler is in place before the command starts: `ctrl_c()` would
    // install it only when first polled, after the command's first steps
    // (a partial file already made), and a Ctrl-C then killed ferry.
    let mut interrupt =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ferry: cannot handle Ctrl-C: {e}");
                return ExitCode::FAILURE;
            }
        };
    let code = tokio::select! {
        code = run.command(&cli.command) => code,
        _ = interrupt.recv() => {
            if !g.quiet {
                eprintln!("ferry: interrupted; no partial download was left behind");
            }
            130
        }
    };
    ExitCode::from(code)
}

/// A service by its name (`signal`, `udp_upload`, …).
fn parse_service(text: &str) -> Result<ServiceId, String> {
    ServiceId::ALL
        .into_iter()
        .find(|s| s.name() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = ServiceId::ALL.iter().map(|s| s.name()).collect();
            format!("{text:?} is not a protocol; one of {}", names.join(", "))
        })
}
