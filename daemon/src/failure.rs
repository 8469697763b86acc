//! Why a transfer failed: one type for every service, which decides once
//! whether the client can still be answered ([`Failure::answerable`]); each
//! service words the answer in its own protocol.

use std::io;

use crate::storage::StorageError;

/// Why a connection's, session's or download's transfer failed. The text is
/// what the client is told.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The client sent something the protocol or the rules refuse.
    #[error("{0}")]
    Refused(String),
    /// A wait on the client ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The client went away.
    #[error("the client closed the connection {0}")]
    Closed(String),
    /// A frame was cut off mid-way (e.g. the file shrank while being sent):
    /// no reply can be framed, the connection just closes.
    #[error("transfer broken off: {0}")]
    Broken(String),
    /// The grace period after SIGTERM ran out.
    #[error("aborted: the server is shutting down")]
    Aborted,
    /// A newer request from the same client took this one's place (a fresh
    /// `file_info`): it ends without a reply.
    #[error("replaced by a new request from the same client")]
    Replaced,
    /// The connection cap needed this connection's place while it was
    /// still sending its request header, the slowest at it.
    #[error("closed to make room: the server is at its connection cap and this request's header was the slowest to arrive")]
    Evicted,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

impl Failure {
    /// A refusal from any displayable reason.
    pub(crate) fn refused(why: impl std::fmt::Display) -> Failure {
        Failure::Refused(why.to_string())
    }

    /// Whether the client can still be sent a reply saying why: not when it
    /// has gone, the socket failed, a frame was cut mid-way, or a newer
    /// request replaced this one.
    pub(crate) fn answerable(&self) -> bool {
        !matches!(
            self,
            Failure::Closed(_) | Failure::Io(_) | Failure::Broken(_) | Failure::Replaced
        )
    }

    /// The failure as seen once part of a frame is on the wire: what the
    /// peer did stays as it is, anything else breaks the frame off.
    pub(crate) fn mid_frame(self) -> Failure {
        match self {
            e @ (Failure::Aborted
            | Failure::Io(_)
            | Failure::Closed(_)
            | Failure::Timeout(_)
            | Failure::Broken(_)) => e,
            other => Failure::Broken(other.to_string()),
        }
    }
}
