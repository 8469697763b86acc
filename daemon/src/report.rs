//! The one record of each transfer attempt: one log event (`transfer
//! finished` or `transfer failed`, the same fields on every service), the
//! metrics, the lab page's recent attempts with a diagnosis of each
//! failure, and the ledger line of each stored file.
//!
//! A [`Transfer`] ends once: [`Transfer::ok`] or [`Transfer::failed`]. One
//! dropped without either (its task was cancelled, or an early return
//! skipped it) still logs a failure, so no attempt goes unrecorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use ferry_config::{ServiceId, Transport};
use ferry_proto::crc::format_hex;

use crate::failure::{Failure, Refusal};
pub(crate) use crate::observe::Outcome;
use crate::observe::{diagnose, rfc3339, Attempt, LedgerEntry, Observer};
use crate::storage::StorageError;

pub(crate) use crate::observe::Direction;

/// Bytes of the client's request kept for a failure's diagnosis.
const HEAD_LEN: usize = 64;

/// Collects what one transfer attempt did and reports it once, when it ends.
pub(crate) struct Transfer {
    obs: Arc<Observer>,
    id: u64,
    service: ServiceId,
    direction: Direction,
    peer: SocketAddr,
    started: Instant,
    at: SystemTime,
    /// The name the client asked for, as sent.
    pub requested: String,
    /// The name stored under or served from (reported only on success).
    pub stored: String,
    /// Bytes moved.
    pub bytes: u64,
    /// CRC-32 of the bytes, when known.
    pub crc: Option<u32>,
    /// The first bytes the client sent in this attempt.
    head: Vec<u8>,
    /// The ledger line is written (see [`Transfer::stored`]).
    in_ledger: bool,
    done: bool,
}

impl Transfer {
    /// Starts timing an attempt of `service` from `peer`.
    pub(crate) fn start(
        obs: &Arc<Observer>,
        service: ServiceId,
        direction: Direction,
        peer: SocketAddr,
    ) -> Self {
        let at = SystemTime::now();
        Self {
            id: obs.begin(service.name(), direction, peer, at),
            obs: Arc::clone(obs),
            service,
            direction,
            peer,
            started: Instant::now(),
            at,
            requested: String::new(),
            stored: String::new(),
            bytes: 0,
            crc: None,
            head: Vec::new(),
            in_ledger: false,
            done: false,
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> std::net::IpAddr {
        self.peer.ip()
    }

    /// Notes bytes the client sent; the first [`HEAD_LEN`] are kept for the
    /// diagnosis.
    pub(crate) fn saw(&mut self, bytes: &[u8]) {
        let room = HEAD_LEN.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Success: `outcome` says what (stored, deduplicated, sent).
    pub(crate) fn ok(mut self, outcome: Outcome) {
        self.done = true;
        let took = self.started.elapsed();
        let crc = self.crc.map(format_hex);
        tracing::info!(
            service = self.service.name(),
            peer = %self.peer,
            requested = %self.requested,
            stored = %self.stored,
            bytes = self.bytes,
            crc = crc.as_deref(),
            duration_ms = took.as_millis() as u64,
            outcome = outcome.name(),
            "transfer finished"
        );
        if matches!(outcome, Outcome::Stored | Outcome::Deduplicated) {
            // A protocol with no acknowledgement (the handout's) records it
            // here; a failure is logged by the ledger.
            let _ = self.ledger(outcome);
        }
        let stored = std::mem::take(&mut self.stored);
        let attempt = self.attempt(outcome, None, Some(stored));
        self.obs.end(self.id, attempt, took);
    }

    /// The upload is stored as `name`: its ledger line is written now, so a
    /// protocol that acknowledges next (`STORED`, `OK`, `DON`) never
    /// acknowledges a file the ledger could miss after a crash; if the line
    /// cannot be written (a full disk), the upload must not be acknowledged
    /// (the file stays: an identical retry is acknowledged once the line can
    /// be written). [`Transfer::ok`] follows.
    pub(crate) fn stored(&mut self, name: &str, deduplicated: bool) -> Result<(), Failure> {
        self.stored = name.to_owned();
        self.ledger(Outcome::of_upload(deduplicated))
            .map_err(|e| Failure::Refused(Refusal::NotRecorded(e.to_string())))
    }

    fn ledger(&mut self, outcome: Outcome) -> std::io::Result<()> {
        if self.in_ledger {
            return Ok(());
        }
        self.in_ledger = true;
        if let Some(ledger) = &self.obs.ledger {
            let written = ledger.append(LedgerEntry {
                time: rfc3339(SystemTime::now()),
                peer: self.peer,
                service: self.service.name().to_owned(),
                requested: self.requested.clone(),
                stored: self.stored.clone(),
                size: self.bytes,
                crc: self.crc.map(format_hex).unwrap_or_default(),
                outcome: outcome.name().to_owned(),
                unverified_source: self.unverified_source(),
            });
            if written.is_err() {
                // Not recorded: a later attempt may write it.
                self.in_ledger = false;
            }
            return written;
        }
        Ok(())
    }

    /// Failure, with the reason the client was (or would have been) told.
    pub(crate) fn failed(mut self, why: &Failure) {
        self.done = true;
        self.fail(why);
    }

    fn fail(&mut self, why: &Failure) {
        let took = self.started.elapsed();
        let crc = self.crc.map(format_hex);
        tracing::warn!(
            service = self.service.name(),
            peer = %self.peer,
            requested = %self.requested,
            bytes = self.bytes,
            crc = crc.as_deref(),
            duration_ms = took.as_millis() as u64,
            outcome = Outcome::Failed.name(),
            reason = %why,
            "transfer failed"
        );
        match why {
            Failure::Storage(
                StorageError::Io(_) | StorageError::Unavailable(_) | StorageError::Unsettled(_),
            ) => self.obs.metrics.storage_error(self.service.name()),
            Failure::Refused(Refusal::Quota { .. }) => self.obs.metrics.refused(
                self.service.name(),
                crate::limits::RefusalReason::UploadQuota,
            ),
            _ => {}
        }
        let attempt = self.attempt(Outcome::Failed, Some(why), None);
        self.obs.end(self.id, attempt, took);
    }

    /// Whether the client's address is unproven: a UDP source is whatever
    /// the sender wrote (RELIABILITY.md, "What the handouts' UDP can prove").
    fn unverified_source(&self) -> bool {
        self.service.transport() == Transport::Udp
    }

    fn attempt(
        &self,
        outcome: Outcome,
        failure: Option<&Failure>,
        stored: Option<String>,
    ) -> Attempt {
        let reason = failure.map(|f| f.to_string());
        let diagnosis = failure.zip(reason.as_deref()).map(|(failure, r)| {
            diagnose(&crate::observe::Failed {
                service: self.service,
                failure,
                reason: r,
                head: &self.head,
                requested: &self.requested,
                bytes: self.bytes,
                ports: self.obs.ports.get(),
            })
        });
        Attempt {
            time: rfc3339(self.at),
            service: self.service.name(),
            direction: self.direction,
            peer: self.peer,
            // The page and the API show a name cut to a sane length (the
            // log has it whole): a client's 8 KB of quotes, escaped, must
            // not make every page request megabytes.
            requested: crate::observe::diagnose::clip(&self.requested, SHOWN_NAME),
            stored: stored.filter(|s| !s.is_empty()),
            bytes: self.bytes,
            crc: self.crc.map(format_hex),
            duration_ms: self.started.elapsed().as_millis() as u64,
            outcome,
            reason,
            diagnosis,
            unverified_source: self.unverified_source(),
        }
    }
}

/// Characters of a requested name an attempt keeps for the page and the API.
pub(crate) const SHOWN_NAME: usize = 160;

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.fail(&Failure::Unended);
        }
    }
}
