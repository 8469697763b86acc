//! The one log event per finished transfer.

use std::net::SocketAddr;
use std::time::Instant;

use ferry_proto::crc::format_hex;

/// Collects what one transfer did and logs it once, when finished.
pub(crate) struct Transfer {
    service: &'static str,
    peer: SocketAddr,
    started: Instant,
    /// The name the client asked for, as sent.
    pub requested: String,
    /// The name stored under or served from.
    pub stored: String,
    /// Bytes moved.
    pub bytes: u64,
    /// CRC-32 of the bytes, when known.
    pub crc: Option<u32>,
}

impl Transfer {
    /// Starts timing a transfer.
    pub(crate) fn start(service: &'static str, peer: SocketAddr) -> Self {
        Self {
            service,
            peer,
            started: Instant::now(),
            requested: String::new(),
            stored: String::new(),
            bytes: 0,
            crc: None,
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> std::net::IpAddr {
        self.peer.ip()
    }

    /// Logs success (`outcome` says what: "stored", "sent", "deduplicated").
    pub(crate) fn ok(self, outcome: &'static str) {
        tracing::info!(
            service = self.service,
            peer = %self.peer,
            requested = ?self.requested,
            stored = ?self.stored,
            bytes = self.bytes,
            crc = %self.crc.map(format_hex).unwrap_or_default(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome,
            "transfer finished"
        );
    }

    /// Logs failure with its reason.
    pub(crate) fn failed(self, error: &dyn std::fmt::Display) {
        tracing::warn!(
            service = self.service,
            peer = %self.peer,
            requested = ?self.requested,
            stored = ?self.stored,
            bytes = self.bytes,
            crc = %self.crc.map(format_hex).unwrap_or_default(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = "failed",
            error = %error,
            "transfer failed"
        );
    }
}
