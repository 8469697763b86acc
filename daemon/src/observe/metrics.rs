//! The Prometheus metrics, in the Prometheus text format (version 0.0.4),
//! which `promtool check metrics` checks (see docs/DEPLOY.md for the list).
//!
//! Every label takes values from a fixed set (services, outcomes,
//! directions, refusal reasons), so the number of series is bounded: no
//! client string ever becomes a label.

use std::time::Duration;

use ferry_config::ServiceId;

use crate::limits::{RefusalReason, REASONS};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::{Attempt, Outcome};

/// The services that move files (udp_sum answers, it moves none), for
/// labels made ahead of time (so every series is there from the start, at 0).
fn file_services() -> impl Iterator<Item = ServiceId> {
    ServiceId::ALL
        .into_iter()
        .filter(|s| *s != ServiceId::UdpSum)
}

/// Whether `service`'s attempts are transfers in the metrics: a refused
/// sum is an attempt on the page and in the log, but udp_sum is counted by
/// `ferry_sum_requests_total` (answered and refused), so the transfer
/// series and their alert see file transfers only.
fn moves_files(service: &str) -> bool {
    service != ServiceId::UdpSum.name()
}

/// The directions a service's bytes move in.
fn directions(s: ServiceId) -> &'static [&'static str] {
    match s {
        ServiceId::UdpDownload | ServiceId::MagicDownload => &["out"],
        ServiceId::Signal => &["in", "out"],
        ServiceId::UdpUpload | ServiceId::TcpUpload | ServiceId::UdpSum => &["in"],
    }
}

// Invariant for the helpers below: the names, help texts, labels and
// buckets given are valid and each registered once, which is all the
// constructors and `register` can fail on.

fn register<M: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    made: prometheus::Result<M>,
) -> M {
    let m = made.expect("a valid metric");
    r.register(Box::new(m.clone())).expect("registered once");
    m
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Buckets from `start`, ×4 each, `count` of them.
fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    (start, count): (f64, usize),
) -> HistogramVec {
    register(
        r,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets(start, count)),
            labels,
        ),
    )
}

fn buckets(start: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, 4.0, count).expect("valid buckets")
}

/// The daemon's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    transfers: IntCounterVec,
    bytes: IntCounterVec,
    in_flight: IntGaugeVec,
    duration: HistogramVec,
    connections: IntGaugeVec,
    udp_sessions: IntGauge,
    refusals: IntCounterVec,
    storage_errors: IntCounterVec,
    ping: Histogram,
    sums: IntCounterVec,
}

impl Metrics {
    /// Every metric registered, every fixed series at 0.
    pub(crate) fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            transfers: counter(
                &r,
                "ferry_transfers_total",
                "Transfer attempts finished, by service and outcome (stored, deduplicated, sent, failed).",
                &["service", "outcome"],
            ),
            bytes: counter(
                &r,
                "ferry_transfer_bytes_total",
                "Bytes moved by transfers, by service and direction (in: uploads, out: downloads).",
                &["service", "direction"],
            ),
            in_flight: gauge(
                &r,
                "ferry_transfers_in_flight",
                "Transfers in progress now, by service.",
                &["service"],
            ),
            duration: histogram(
                &r,
                "ferry_transfer_duration_seconds",
                "How long transfer attempts took, by service.",
                &["service"],
                (0.001, 10),
            ),
            connections: gauge(
                &r,
                "ferry_tcp_connections",
                "TCP connections open now, by service (http included).",
                &["service"],
            ),
            udp_sessions: register(
                &r,
                IntGauge::new(
                    "ferry_udp_upload_sessions",
                    "udp_upload sessions in progress now.",
                ),
            ),
            refusals: counter(
                &r,
                "ferry_refusals_total",
                "Clients refused before a transfer started, by service and reason.",
                &["service", "reason"],
            ),
            storage_errors: counter(
                &r,
                "ferry_storage_errors_total",
                "Transfers failed by the disk or the operating system (full disk, I/O error), by service.",
                &["service"],
            ),
            ping: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ferry_ping_seconds",
                        "From a PIN read to its PON written, on the signal service.",
                    )
                    .buckets(buckets(0.0001, 9)),
                ),
            ),
            sums: counter(
                &r,
                "ferry_sum_requests_total",
                "udp_sum requests, by outcome (answered, refused).",
                &["outcome"],
            ),
            registry: r,
        };
        m.zero_series();
        m
    }

    /// Makes every fixed series, so each is there (at 0) from the start.
    fn zero_series(&self) {
        for id in file_services() {
            let s = id.name();
            for o in Outcome::ALL.map(Outcome::name) {
                self.transfers.with_label_values(&[s, o]);
            }
            for dir in directions(id) {
                self.bytes.with_label_values(&[s, dir]);
            }
            self.in_flight.with_label_values(&[s]);
            self.duration.with_label_values(&[s]);
            self.storage_errors.with_label_values(&[s]);
        }
        for s in file_services().map(ServiceId::name).chain(["http"]) {
            for why in REASONS {
                self.refusals.with_label_values(&[s, why.label()]);
            }
        }
        for o in ["answered", "refused"] {
            self.sums.with_label_values(&[o]);
        }
    }

    pub(super) fn in_flight(&self, service: &str, delta: i64) {
        if !moves_files(service) {
            return;
        }
        self.in_flight.with_label_values(&[service]).add(delta);
    }

    pub(super) fn finished(&self, a: &Attempt, took: Duration) {
        if !moves_files(a.service) {
            return;
        }
        self.transfers
            .with_label_values(&[a.service, a.outcome.name()])
            .inc();
        self.bytes
            .with_label_values(&[a.service, a.direction.label()])
            .inc_by(a.bytes);
        self.duration
            .with_label_values(&[a.service])
            .observe(took.as_secs_f64());
    }

    /// A transfer failed on storage (the disk, not the client).
    pub(crate) fn storage_error(&self, service: &str) {
        self.storage_errors.with_label_values(&[service]).inc();
    }

    /// A client refused before its transfer started.
    pub(crate) fn refused(&self, service: &str, why: RefusalReason) {
        self.refusals
            .with_label_values(&[service, why.label()])
            .inc();
    }

    /// A TCP connection opened (`1`) or closed (`-1`).
    pub(crate) fn connection(&self, service: &str, delta: i64) {
        self.connections.with_label_values(&[service]).add(delta);
    }

    /// A PIN answered after `took`.
    pub(crate) fn ping(&self, took: Duration) {
        self.ping.observe(took.as_secs_f64());
    }

    /// A udp_sum request answered or refused.
    pub(crate) fn sum(&self, answered: bool) {
        let outcome = if answered { "answered" } else { "refused" };
        self.sums.with_label_values(&[outcome]).inc();
    }

    /// The exposition, with the gauges read now (`udp_sessions`).
    pub(crate) fn render(&self, udp_sessions: usize) -> String {
        self.udp_sessions
            .set(i64::try_from(udp_sessions).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics: cannot encode");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_there_from_the_start() {
        let m = Metrics::new();
        m.ping(Duration::from_micros(300));
        m.refused(ServiceId::Signal.name(), RefusalReason::CapPerAddress);
        m.connection("http", 1);
        let text = m.render(3);
        for line in [
            "# TYPE ferry_transfers_total counter",
            "ferry_transfers_total{outcome=\"failed\",service=\"magic_download\"} 0",
            "ferry_transfer_bytes_total{direction=\"in\",service=\"udp_upload\"} 0",
            "ferry_transfers_in_flight{service=\"signal\"} 0",
            "ferry_udp_upload_sessions 3",
            "ferry_ping_seconds_count 1",
            "ferry_refusals_total{reason=\"cap_per_address\",service=\"signal\"} 1",
            "ferry_tcp_connections{service=\"http\"} 1",
            "# TYPE ferry_transfer_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }
}
