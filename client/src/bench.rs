//! `ferry bench`: a load generator an admin can point at their own box.
//!
//! N clients run the same operation over and over, for a count or a
//! duration, through this crate's real code paths (so every transfer is
//! verified as in normal use). Uploads read one source file of the chosen
//! size; downloads fetch one file the bench uploads first, into a scratch
//! directory in `/dev/shm` where fsync costs nothing, so the client's disk
//! does not become the measurement.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Client, Error, GetVia, NoProgress, SendVia};

/// What to measure (also the CLI's `WORKLOAD` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `signal` SAF uploads.
    SignalUp,
    /// `signal` RAF downloads.
    SignalDown,
    /// `tcp_upload` uploads.
    TcpUp,
    /// `magic_download` downloads.
    MagicDown,
    /// `udp_upload` uploads.
    UdpUp,
    /// `udp_download` downloads.
    UdpDown,
    /// `PIN`/`PON` round trips.
    Ping,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::SignalUp => "signal-up",
            Workload::SignalDown => "signal-down",
            Workload::TcpUp => "tcp-up",
            Workload::MagicDown => "magic-down",
            Workload::UdpUp => "udp-up",
            Workload::UdpDown => "udp-down",
            Workload::Ping => "ping",
        }
    }
}

/// How much to do.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Bytes per transfer.
    pub size: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Stop after this many transfers in all (if set)...
    pub count: Option<u64>,
    /// ...or after this long.
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The workload.
    pub workload: &'static str,
    /// Bytes per transfer.
    pub size: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Transfers that succeeded.
    pub transfers: u64,
    /// Transfers that failed.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// Payload bytes moved per second by the successful transfers.
    pub bytes_per_second: f64,
    /// Successful transfers per second.
    pub transfers_per_second: f64,
    /// Latency of one transfer, in milliseconds: median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// Writes a file of `size` pseudo-random bytes (incompressible, deterministic).
pub fn make_source(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut left = size;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        rng.fill(&mut block);
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()
}

fn scratch_dir() -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_owned()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("ferry-bench-{}", std::process::id()))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `workload` against `client` as `plan` says.
pub async fn run(client: &Client, workload: Workload, plan: Plan) -> Result<Report, Error> {
    let scratch = Scratch(scratch_dir());
    std::fs::create_dir_all(&scratch.0).map_err(|e| Error::Local(format!("scratch dir: {e}")))?;
    let source = scratch.0.join("source.bin");
    if workload != Workload::Ping {
        make_source(&source, plan.size).map_err(|e| Error::Local(format!("source file: {e}")))?;
    }
    let remote = format!("ferry-bench-{}-{}.bin", std::process::id(), plan.size);
    if matches!(
        workload,
        Workload::SignalDown | Workload::MagicDown | Workload::UdpDown
    ) {
        let sent = client
            .send(SendVia::Signal, &source, Some(&remote), &NoProgress)
            .await?;
        debug_assert!(sent.stored_as.is_some());
    }
    let started = Instant::now();
    let job = Job {
        client: client.clone(),
        workload,
        plan,
        source,
        remote,
        deadline: started + plan.duration,
        issued: Arc::new(AtomicU64::new(0)),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..plan.clients.max(1) {
        let dir = scratch.0.join(format!("w{worker}"));
        tasks.spawn(job.clone().worker(worker, dir));
    }
    let mut all = Tally::default();
    while let Some(r) = tasks.join_next().await {
        let t = r.map_err(|e| Error::Protocol(format!("bench worker: {e}")))?;
        all.lat.extend(t.lat);
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
    }
    Ok(all.report(workload, plan, started.elapsed().as_secs_f64()))
}

/// What every worker of a run shares.
#[derive(Clone)]
struct Job {
    client: Client,
    workload: Workload,
    plan: Plan,
    source: PathBuf,
    remote: String,
    deadline: Instant,
    /// Transfers started so far, over all workers.
    issued: Arc<AtomicU64>,
}

/// One worker's latencies and errors.
#[derive(Default)]
struct Tally {
    lat: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl Job {
    /// One client: transfers until the count or the time is up.
    async fn worker(self, worker: usize, dir: PathBuf) -> Tally {
        let _ = std::fs::create_dir_all(&dir);
        let mut tally = Tally::default();
        loop {
            let k = self.issued.fetch_add(1, Ordering::Relaxed);
            if self.plan.count.is_some_and(|c| k >= c)
                || (self.plan.count.is_none() && Instant::now() >= self.deadline)
            {
                break;
            }
            let t = Instant::now();
            let r = one(
                &self.client,
                self.workload,
                &self.source,
                &self.remote,
                &dir,
                worker,
                k,
            )
            .await;
            match r {
                Ok(()) => tally.lat.push(t.elapsed()),
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(e.to_string());
                }
            }
        }
        tally
    }
}

impl Tally {
    fn report(mut self, workload: Workload, plan: Plan, seconds: f64) -> Report {
        self.lat.sort();
        let lat = &self.lat;
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1000.0
        };
        let transfers = lat.len() as u64;
        let payload = if workload == Workload::Ping {
            0
        } else {
            plan.size
        };
        Report {
            workload: workload.name(),
            size: plan.size,
            clients: plan.clients,
            transfers,
            errors: self.errors,
            first_error: self.first_error.clone(),
            seconds,
            bytes_per_second: (transfers * payload) as f64 / seconds,
            transfers_per_second: transfers as f64 / seconds,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        }
    }
}

async fn one(
    client: &Client,
    workload: Workload,
    source: &Path,
    remote: &str,
    dir: &Path,
    worker: usize,
    k: u64,
) -> Result<(), Error> {
    let name = format!("bench-{}-{worker}-{k}.bin", std::process::id());
    let out = dir.join("out.bin");
    match workload {
        Workload::Ping => client.ping().await.map(drop),
        Workload::SignalUp => client
            .send(SendVia::Signal, source, Some(&name), &NoProgress)
            .await
            .map(drop),
        Workload::TcpUp => client
            .send(SendVia::Tcp, source, Some(&name), &NoProgress)
            .await
            .map(drop),
        Workload::UdpUp => client
            .send(SendVia::Udp, source, Some(&name), &NoProgress)
            .await
            .map(drop),
        Workload::SignalDown => client
            .get(GetVia::Signal, remote, &out, true, &NoProgress)
            .await
            .map(drop),
        Workload::MagicDown => client
            .get(GetVia::Magic, remote, &out, true, &NoProgress)
            .await
            .map(drop),
        Workload::UdpDown => client
            .get(GetVia::Udp, remote, &out, true, &NoProgress)
            .await
            .map(drop),
    }
}
