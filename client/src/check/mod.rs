//! `ferry check`: a student's server graded against its handout, rule by
//! rule (as h2spec does for HTTP/2). Each rule has an id, one line, the
//! handout section it comes from, and whether the handout requires it or
//! only advises it (an advice rule not met is reported, never a failure).
//! Each rule runs under its own deadline: a server that hangs fails that
//! rule, never the checker.

mod report;
mod tcp;
mod udp;

use std::time::Duration;

use ferry_config::ServiceId;

use crate::{Client, Error, Result};

pub use report::{junit, to_json};

/// One rule of a handout.
#[derive(Debug)]
pub struct Rule {
    /// Its id, `protocol.name`.
    pub id: &'static str,
    /// What a conforming server does, in one line.
    pub says: &'static str,
    /// Where the handout says so.
    pub section: &'static str,
    /// The handout only implies it: not meeting it does not fail the run.
    pub advice: bool,
}

/// What a rule found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The server did what the rule says.
    Pass,
    /// It did not.
    Fail(Evidence),
    /// The rule could not be checked here, and why (e.g. no `--file`).
    Skipped(String),
}

/// What was expected and what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// What the rule expected.
    pub expected: String,
    /// The bytes that arrived (at most [`EVIDENCE_LEN`]).
    pub got: Vec<u8>,
    /// What went wrong, in words.
    pub note: String,
}

/// Bytes of a reply kept as evidence.
pub const EVIDENCE_LEN: usize = 64;

impl Evidence {
    fn new(expected: impl Into<String>, got: &[u8], note: impl Into<String>) -> Evidence {
        Evidence {
            expected: expected.into(),
            got: got[..got.len().min(EVIDENCE_LEN)].to_vec(),
            note: note.into(),
        }
    }
}

/// A rule and its verdict.
#[derive(Debug)]
pub struct Checked {
    /// The rule.
    pub rule: &'static Rule,
    /// What the check found.
    pub verdict: Verdict,
}

impl Checked {
    /// Whether this result fails the run: a required rule not met.
    pub fn fails(&self) -> bool {
        matches!(self.verdict, Verdict::Fail(_)) && !self.rule.advice
    }
}

/// Every rule of one protocol, checked against one server.
#[derive(Debug)]
pub struct Report {
    /// The protocol.
    pub protocol: ServiceId,
    /// The server, `host:port`.
    pub server: String,
    /// One per rule, in the catalogue's order.
    pub results: Vec<Checked>,
}

impl Report {
    /// No required rule failed.
    pub fn passed(&self) -> bool {
        !self.results.iter().any(Checked::fails)
    }
}

/// What `ferry check` is told besides the server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// A file the server has (udp_download, magic_download).
    pub file: Option<String>,
    /// Its content, to compare the bytes with.
    pub expect: Option<Vec<u8>>,
}

/// The catalogue of `protocol`'s rules.
pub fn rules(protocol: ServiceId) -> &'static [Rule] {
    match protocol {
        ServiceId::UdpUpload => udp::UPLOAD,
        ServiceId::UdpDownload => udp::DOWNLOAD,
        ServiceId::UdpSum => udp::SUM,
        ServiceId::TcpUpload => tcp::UPLOAD,
        ServiceId::MagicDownload => tcp::MAGIC,
        ServiceId::Signal => tcp::SIGNAL,
    }
}

/// How long one rule may take: a server that hangs fails the rule.
pub(crate) const RULE_DEADLINE: Duration = Duration::from_secs(8);

/// Checks every rule of `protocol` against the server at the client's host
/// and that protocol's port. `Err` only when the server cannot be reached.
pub async fn check(client: &Client, protocol: ServiceId, opts: &Options) -> Result<Report> {
    let port = client.ports[protocol];
    let addr = client.resolve(port).await?;
    let verdicts = match protocol {
        ServiceId::UdpUpload => udp::check_upload(addr).await?,
        ServiceId::UdpDownload => udp::check_download(addr, opts).await?,
        ServiceId::UdpSum => udp::check_sum(addr).await?,
        ServiceId::TcpUpload => tcp::check_upload(addr).await?,
        ServiceId::MagicDownload => tcp::check_magic(addr, opts).await?,
        ServiceId::Signal => tcp::check_signal(addr).await?,
    };
    let results = rules(protocol)
        .iter()
        .zip(verdicts)
        .map(|(rule, verdict)| Checked { rule, verdict })
        .collect();
    Ok(Report {
        protocol,
        server: format!("{}:{port}", client.host),
        results,
    })
}

/// Runs one rule's check under [`RULE_DEADLINE`]. A refused connection or
/// an ICMP port-unreachable ends the run (the server is not there); any
/// other error fails the rule with its words.
pub(crate) async fn within<F>(expected: &str, check: F) -> Result<Verdict>
where
    F: std::future::Future<Output = Result<Verdict>>,
{
    match tokio::time::timeout(RULE_DEADLINE, check).await {
        Err(_) => Ok(Verdict::Fail(Evidence::new(
            expected,
            b"",
            format!("no answer within {} s", RULE_DEADLINE.as_secs()),
        ))),
        Ok(Err(e @ Error::Unreachable { .. })) => Err(e),
        Ok(Err(e)) => Ok(Verdict::Fail(Evidence::new(expected, b"", e.to_string()))),
        Ok(Ok(v)) => Ok(v),
    }
}

/// `Pass` if `ok`, else a failure with the evidence.
pub(crate) fn verdict(ok: bool, expected: &str, got: &[u8], note: impl Into<String>) -> Verdict {
    if ok {
        Verdict::Pass
    } else {
        Verdict::Fail(Evidence::new(expected, got, note))
    }
}

/// An I/O error as the checker reports it: a refused connection or an
/// ICMP port-unreachable is "not there".
pub(crate) fn io(addr: std::net::SocketAddr, what: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        return Error::Unreachable {
            what: addr.to_string(),
            reason: e.to_string(),
        };
    }
    Error::Protocol(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_in_the_protocol_book_and_ids_are_unique() {
        let book = include_str!("../../../docs/PROTOCOLS.md");
        let mut seen = std::collections::HashSet::new();
        for protocol in ServiceId::ALL {
            for rule in rules(protocol) {
                assert!(rule.id.starts_with(&format!("{protocol}.")), "{}", rule.id);
                assert!(seen.insert(rule.id), "{} twice", rule.id);
                assert!(
                    book.contains(&format!("| `{}` | {} |", rule.id, rule.says)),
                    "{} is not in docs/PROTOCOLS.md as written",
                    rule.id
                );
            }
        }
    }
}
