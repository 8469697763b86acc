//! What an admin and a student can see of the daemon: one record per
//! transfer attempt, kept for the lab page with a diagnosis of each failure;
//! the Prometheus metrics; the ledger of stored files.
//!
//! Every service reports through [`crate::report::Transfer`], which logs the
//! attempt's one event and hands the record here, so the log, the page, the
//! metrics and the ledger always agree.
//!
//! # Layout
//! - this module: [`Observer`] (attempts in flight, the recent ones, in
//!   bounded memory) and the [`Attempt`] record;
//! - `diagnose`: sans-IO, what the client sent, what the protocol expected,
//!   which rule it broke, where the protocol book says so;
//! - `metrics`: the counters, gauges and histograms, in the Prometheus text
//!   format;
//! - `ledger`: the append-only file of stored files.

pub(crate) mod diagnose;
mod keep;
mod ledger;
mod metrics;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub(crate) use diagnose::{diagnose, Diagnosis, Failed};
pub(crate) use ledger::{Ledger, LedgerEntry};
pub use ledger::{LEDGER_FILE, LEDGER_OLD};
pub(crate) use metrics::Metrics;

/// Which way a transfer's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    /// An upload: client to ferryd.
    Upload,
    /// A download: ferryd to client.
    Download,
    /// A request that moves no file: a sum, or bytes that were no request.
    Request,
}

impl Direction {
    /// The metrics label: `in` or `out` (as seen from ferryd).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Direction::Upload | Direction::Request => "in",
            Direction::Download => "out",
        }
    }
}

/// How a transfer attempt ended: the log's `outcome`, the metrics' label,
/// the ledger's and the page's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// An upload stored.
    Stored,
    /// An upload identical to one already stored by its sender: not stored again.
    Deduplicated,
    /// A download sent whole.
    Sent,
    /// Anything else.
    Failed,
}

impl Outcome {
    /// Every outcome, for the metrics' fixed series.
    pub(crate) const ALL: [Outcome; 4] = [
        Outcome::Stored,
        Outcome::Deduplicated,
        Outcome::Sent,
        Outcome::Failed,
    ];

    /// The word.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Deduplicated => "deduplicated",
            Outcome::Sent => "sent",
            Outcome::Failed => "failed",
        }
    }

    /// An upload's outcome once stored.
    pub(crate) const fn of_upload(deduplicated: bool) -> Outcome {
        if deduplicated {
            Outcome::Deduplicated
        } else {
            Outcome::Stored
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One finished transfer attempt, as the page and `/api/attempts` show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Attempt {
    /// When it started (RFC 3339, UTC).
    pub time: String,
    /// The protocol.
    pub service: &'static str,
    /// Upload or download.
    pub direction: Direction,
    /// The client's address.
    pub peer: SocketAddr,
    /// The name the client asked for, as sent (lossy UTF-8).
    pub requested: String,
    /// Where it was stored or served from; only when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    /// Bytes moved.
    pub bytes: u64,
    /// CRC-32 of the bytes, when known (`%08X`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crc: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `stored`, `deduplicated`, `sent` or `failed`.
    pub outcome: Outcome,
    /// Why it failed, as the client was told (or would have been).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a failure: what the client did wrong, in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// True when the protocol cannot prove `peer` sent it (UDP). Left out
    /// when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified_source: bool,
}

/// A transfer in flight, as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Live {
    /// When it started (RFC 3339, UTC).
    pub time: String,
    /// The protocol.
    pub service: &'static str,
    /// Upload or download.
    pub direction: Direction,
    /// The client's address.
    pub peer: SocketAddr,
    /// Seconds since it started (filled in when shown).
    pub seconds: f64,
    #[serde(skip)]
    started: tokio::time::Instant,
}

/// What the observer holds under its lock.
#[derive(Default)]
struct State {
    live: BTreeMap<u64, Live>,
    recent: VecDeque<Attempt>,
}

/// The daemon's observer: one per daemon, shared by every service.
pub(crate) struct Observer {
    /// The Prometheus metrics.
    pub(crate) metrics: Metrics,
    /// The ledger, when kept.
    pub(crate) ledger: Option<Ledger>,
    state: Mutex<State>,
    /// Attempts kept (`http.recent`).
    keep: usize,
    next_id: AtomicU64,
    /// Each service's port once bound (`None`: not served), for the
    /// diagnoses' "that service is on port N here".
    pub(crate) ports: std::sync::OnceLock<[Option<u16>; 6]>,
}

impl Observer {
    /// An observer keeping `keep` recent attempts, with the ledger at
    /// `ledger` (if any).
    pub(crate) fn new(keep: usize, ledger: Option<Ledger>) -> Observer {
        Observer {
            metrics: Metrics::new(),
            ledger,
            state: Mutex::new(State::default()),
            keep: keep.max(1),
            next_id: AtomicU64::new(1),
            ports: std::sync::OnceLock::new(),
        }
    }

    /// Opens the ledger under `root` as `config` says, or none.
    pub(crate) fn open(root: &Path, config: &ferry_config::Config) -> Observer {
        let ledger = config.ledger.enabled.then(|| {
            Ledger::open(root, config.ledger.max_size.0, config.ledger.keep.0).map_err(|e| {
                tracing::warn!(error = %e, "the ledger cannot be opened: stored files are not recorded");
            })
        });
        Observer::new(config.http.recent, ledger.and_then(Result::ok))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transfer started; the id to end it with.
    pub(crate) fn begin(
        &self,
        service: &'static str,
        direction: Direction,
        peer: SocketAddr,
        at: SystemTime,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight(service, 1);
        self.state().live.insert(
            id,
            Live {
                time: rfc3339(at),
                service,
                direction,
                peer,
                seconds: 0.0,
                started: tokio::time::Instant::now(),
            },
        );
        id
    }

    /// A transfer ended: counted, kept for the page, and (if stored) put in
    /// the ledger.
    pub(crate) fn end(&self, id: u64, attempt: Attempt, took: Duration) {
        self.metrics.in_flight(attempt.service, -1);
        self.metrics.finished(&attempt, took);
        let mut state = self.state();
        state.live.remove(&id);
        if state.recent.len() >= self.keep {
            state.recent.pop_front();
        }
        state.recent.push_back(attempt);
    }

    /// The transfers in flight that `viewer` may see, oldest first.
    pub(crate) fn live(&self, viewer: &Viewer) -> Vec<Live> {
        let now = tokio::time::Instant::now();
        self.state()
            .live
            .values()
            .filter(|l| viewer.sees(l.peer.ip()))
            .map(|l| Live {
                seconds: now.duration_since(l.started).as_secs_f64(),
                ..l.clone()
            })
            .collect()
    }

    /// The recent attempts `viewer` may see, newest first, at most `limit`.
    pub(crate) fn recent(&self, viewer: &Viewer, limit: usize) -> Vec<Attempt> {
        self.state()
            .recent
            .iter()
            .rev()
            .filter(|a| viewer.sees(a.peer.ip()))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The most recent ledger entries `viewer` may see, newest first.
    pub(crate) fn ledger_entries(&self, viewer: &Viewer, limit: usize) -> Vec<LedgerEntry> {
        match &self.ledger {
            Some(l) => l.recent(|e| viewer.sees(e.peer.ip()), limit),
            None => Vec::new(),
        }
    }
}

/// Who is looking at the page: an admin sees every client, anyone else
/// only their own address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Viewer {
    /// The viewer's address.
    pub ip: IpAddr,
    /// Whether it is in `http.admin`.
    pub admin: bool,
}

impl Viewer {
    /// Whether the viewer sees what `ip` did: its own exact address only (an
    /// IPv4-mapped IPv6 address is its IPv4 one). Not the /64 the caps count
    /// as one client: two hosts of one IPv6 LAN are two students.
    fn sees(&self, ip: IpAddr) -> bool {
        self.admin || host(self.ip) == host(ip)
    }
}

/// `ip`, with `::ffff:a.b.c.d` as `a.b.c.d` (a dual-stack socket).
fn host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `at` as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod viewer_tests {
    use super::*;

    #[test]
    fn a_student_sees_only_their_own_address_even_in_one_ipv6_64() {
        let me: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        let v = Viewer {
            ip: me,
            admin: false,
        };
        assert!(v.sees(me));
        assert!(!v.sees(neighbour), "the same /64 is not the same student");
        let v4 = Viewer {
            ip: "10.0.0.7".parse().unwrap(),
            admin: false,
        };
        assert!(v4.sees("::ffff:10.0.0.7".parse().unwrap()));
        assert!(!v4.sees("10.0.0.8".parse().unwrap()));
        let admin = Viewer {
            ip: me,
            admin: true,
        };
        assert!(admin.sees(neighbour));
    }
}
