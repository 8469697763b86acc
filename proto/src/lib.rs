//! ferry's wire formats: the six lab protocols, sans-IO.
//!
//! Bytes in, typed messages out, and back; no sockets, files or clocks. Every
//! decoder refuses bad input with an error instead of panicking, caps every
//! length before allocating, and uses checked arithmetic on wire numbers.
//!
//! # Layout
//! - [`crc`]: CRC-32/IEEE as the handouts compute it, fed chunk by chunk.
//! - [`names`]: the one name normaliser ([`names::SafeName`], [`names::RelPath`]).
//! - [`service`]: the six services, their transports and default ports.
//! - UDP, one datagram = one message, parse/encode functions:
//!   [`udp_upload`] (seed 000), [`udp_download`] (seed 001 §4), [`udp_sum`] (seed 001 §3).
//! - TCP, tokio-util `Decoder`/`Encoder`s:
//!   [`tcp_upload`] (seed 002), [`magic`] (seed 003), [`signal`] (seed 004).
//!
//! `docs/PROTOCOLS.md` is the book: every byte, with worked examples.
#![warn(missing_docs, unreachable_pub)]

/// The clock every timing rule here takes: tokio's, so that a driver's
/// `now` and a paused test clock are the same clock.
pub use tokio::time::Instant;

pub mod crc;
pub mod ledger;
pub mod magic;
pub mod names;
pub mod service;
pub mod show;
pub mod signal;
pub mod tcp_upload;
pub mod udp_download;
pub mod udp_sum;
pub mod udp_upload;

#[cfg(test)]
mod testutil;
