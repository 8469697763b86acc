//! The ledger's record of one stored file: a line of ferryd's
//! `<storage>/.ferry-ledger.jsonl` and an element of its `/api/ledger`
//! answer (JSON), which `ferry ls` reads.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// When it was acknowledged (RFC 3339, UTC).
    pub time: String,
    /// Who sent it (address and port, e.g. `"127.0.0.1:40210"`).
    pub peer: SocketAddr,
    /// Over which protocol (a service name).
    pub service: String,
    /// The name it was sent with.
    pub requested: String,
    /// The name it is stored under.
    pub stored: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its CRC-32 (`%08X`; empty for a tree).
    pub crc: String,
    /// `stored`, or `deduplicated` (identical to a file already stored).
    pub outcome: String,
    /// True when the protocol cannot prove `peer` sent it (UDP: a
    /// datagram's source address is whatever its sender wrote, and the
    /// handouts' UDP carries no nonce). Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified_source: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_flat_json_with_the_peer_as_text() {
        let e = LedgerEntry {
            time: "2026-12-03T08:00:00Z".into(),
            peer: "127.0.0.1:40210".parse().unwrap(),
            service: "signal".into(),
            requested: "a.txt".into(),
            stored: "a(1).txt".into(),
            size: 5,
            crc: "3610A686".into(),
            outcome: "stored".into(),
            unverified_source: false,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"time":"2026-12-03T08:00:00Z","peer":"127.0.0.1:40210","service":"signal","requested":"a.txt","stored":"a(1).txt","size":5,"crc":"3610A686","outcome":"stored"}"#
        );
        assert_eq!(serde_json::from_str::<LedgerEntry>(&line).unwrap(), e);
        let udp = LedgerEntry {
            service: "udp_upload".into(),
            unverified_source: true,
            ..e
        };
        let line = serde_json::to_string(&udp).unwrap();
        assert!(
            line.ends_with(r#""outcome":"stored","unverified_source":true}"#),
            "{line}"
        );
    }
}
