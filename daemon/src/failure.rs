//! Why a transfer failed, as types: one [`Failure`] for every service, which
//! decides once whether the client can still be answered
//! ([`Failure::answerable`]); each service words the answer in its own
//! protocol. The reasons are enums whose `Display` is the text the client and
//! the log get, so the diagnosis and the metrics match on variants, never on
//! words ([`crate::observe::diagnose`]).

use std::io;

use ferry_config::{Dur, Size};
use ferry_proto::magic::MagicError;
use ferry_proto::names::NameError;
use ferry_proto::signal::handout::{Ambiguous, HandoutError};
use ferry_proto::signal::SignalError;
use ferry_proto::tcp_upload::TcpUploadError;
use ferry_proto::udp_upload::UdpUploadError;

use crate::storage::StorageError;

/// Why a connection's, session's or download's transfer failed. The text is
/// what the client is told.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The client broke its protocol's rules.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// The rules of this server refuse what the client asked.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A wait on the client ran out.
    #[error("timed out waiting for {0}")]
    Timeout(Awaited),
    /// The client went away.
    #[error("the client closed the connection {0}")]
    Closed(When),
    /// A frame was cut off mid-way (e.g. the file shrank while being sent):
    /// no reply can be framed, the connection just closes.
    #[error("transfer broken off: {0}")]
    Broken(String),
    /// The file being sent got shorter than announced (before any frame
    /// was cut: the client can still be told).
    #[error("the file shrank while being sent")]
    Shrank,
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
    /// The transfer's task ended before it reported a result.
    #[error("the transfer ended without a result (its connection or task ended first)")]
    Unended,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

/// What a client sent that its protocol does not allow.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Violation {
    #[error(transparent)]
    Magic(#[from] MagicError),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Handout(#[from] HandoutError),
    /// Handout framing whose file end cannot be told.
    #[error(transparent)]
    Ambiguous(#[from] Ambiguous),
    #[error(transparent)]
    TcpUpload(#[from] TcpUploadError),
    #[error(transparent)]
    UdpUpload(#[from] UdpUploadError),
    #[error(transparent)]
    Sum(#[from] ferry_proto::udp_sum::SumError),
    /// tcp_upload: the connection ended inside the header.
    #[error("incomplete header")]
    IncompleteHeader,
    /// tcp_upload: a second header after the file.
    #[error("second header")]
    SecondHeader,
    /// A signal frame where a file's data or its end belongs.
    #[error("unexpected {0} inside a file")]
    UnexpectedInFile(&'static str),
    /// A signal frame where a tree's entries or its end belong.
    #[error("unexpected {0} inside a tree: send SAF entries and DON")]
    UnexpectedInTree(&'static str),
    /// The client sent `ERR` in the middle of its tree.
    #[error("the client abandoned the tree: {0}")]
    AbandonedTree(String),
    /// A tree entry whose bytes do not match its CRC-32.
    #[error("{entry}: {mismatch}")]
    EntryChecksum {
        entry: String,
        mismatch: StorageError,
    },
    /// A handout SAR cut short: its files are not stored.
    #[error("the SAR it came in did not arrive whole ({0}), so none of its files was stored")]
    SarNotWhole(String),
    /// udp_upload: a datagram over the buffer size the server announced.
    #[error("a datagram of {len} bytes is larger than the buffer size {buffer_size}")]
    OverBufferSize { len: usize, buffer_size: usize },
    /// udp_upload: data from an address with no session.
    #[error("no upload in progress from {0}: send the file_info JSON first")]
    NoSession(std::net::SocketAddr),
}

/// Which part of a request a refused name was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameOf {
    /// A file's name (`refused name "…"`).
    File,
    /// A tree's name.
    Directory,
    /// A file inside a tree.
    Entry,
}

impl std::fmt::Display for NameOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameOf::File => "name",
            NameOf::Directory => "directory name",
            NameOf::Entry => "entry",
        })
    }
}

/// What this server's rules refuse (the client's request was well formed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// A name no storage path can be made of.
    #[error("refused {of} {shown:?}: {error}")]
    Name {
        of: NameOf,
        shown: String,
        error: NameError,
    },
    /// magic_download's name (not quoted: the client's name is logged apart).
    #[error("refused name: {0}")]
    RequestedName(NameError),
    /// A name over `limits.max_name_len`.
    #[error("the name is {len} bytes long, the limit is {max}")]
    NameLength { len: usize, max: usize },
    /// An announced size over `limits.max_file_size`.
    #[error("the file is {size} bytes, the limit is {max}")]
    FileSize { size: u64, max: u64 },
    /// A handout file (no size announced) that ran past the limit.
    #[error("the file is over the limit of {0} bytes")]
    OverSizeLimit(u64),
    /// magic_download: a file its 4-byte length cannot announce.
    #[error("{path} is {size} bytes, more than the 4-byte DataLength can announce")]
    TooLargeForMagic { path: String, size: u64 },
    /// A handout SAR over `signal.max_tree_files`.
    #[error("more than {0} files in one SAR")]
    TooManyInSar(usize),
    /// The address's upload quota.
    #[error(
        "{QUOTA_REFUSAL} ({files} files and {bytes} per {window}); try again in {retry_secs} s"
    )]
    Quota {
        files: usize,
        bytes: Size,
        window: Dur,
        retry_secs: u64,
    },
    /// A file larger than an address's whole udp_download budget.
    #[error("the file is larger than an address's download budget ({per} per {window})")]
    OverBudget { per: Size, window: Dur },
    /// The address's udp_download budget is spent for now.
    #[error("your address has used its download budget ({per} per {window}); try again in {retry_secs} s")]
    BudgetSpent {
        per: Size,
        window: Dur,
        retry_secs: u64,
    },
    /// The caps on transfers at once.
    #[error(transparent)]
    Caps(#[from] crate::limits::Refusal),
    /// A new upload while the server is stopping.
    #[error("the server is shutting down; try again shortly")]
    ShuttingDown,
    /// A udp_upload session that made no progress while the server was full.
    #[error("evicted: no datagram for {ms} ms while the server was full")]
    Stalled { ms: u128 },
    /// Stored, but its ledger line could not be written: not acknowledged.
    #[error("the file is stored, but the server could not record it ({0}); send it again later")]
    NotRecorded(String),
}

/// The start of the quota refusal's text.
pub(crate) const QUOTA_REFUSAL: &str = "your address has reached its upload quota";

/// What a wait on the client was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaited {
    /// A signal request.
    Request,
    /// The rest of a signal request.
    RestOfRequest,
    /// A file's data inside a transfer.
    Data,
    /// magic_download's FileRequest.
    FileRequest,
    /// tcp_upload's header.
    Header,
    /// tcp_upload's name to settle.
    Name,
    /// A handout file's data or its `DON`.
    RestOfFileOrDon,
    /// The client to read what was sent.
    ClientToRead,
    /// udp_upload's next datagram.
    NextDatagram,
    /// A handout file name.
    FileName,
    /// A handout directory name.
    DirectoryName,
    /// A handout SAR's file count.
    SarCount,
}

impl std::fmt::Display for Awaited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Awaited::Request => "a request",
            Awaited::RestOfRequest => "the rest of a request",
            Awaited::Data => "data",
            Awaited::FileRequest => "the FileRequest",
            Awaited::Header => "the header",
            Awaited::Name => "the name",
            Awaited::RestOfFileOrDon => "the rest of the file or its DON",
            Awaited::ClientToRead => "the client to read",
            Awaited::NextDatagram => "the next datagram",
            Awaited::FileName => "a file name",
            Awaited::DirectoryName => "a directory name",
            Awaited::SarCount => "the SAR file count",
        })
    }
}

/// When the client went away.
#[derive(Debug)]
pub(crate) enum When {
    /// tcp_upload: inside the 8-byte size.
    AfterHeaderBytes(usize),
    /// tcp_upload: after its header, without reading `go ahead`.
    BeforeGoAhead,
    /// tcp_upload: before the announced size arrived.
    Early(Option<TcpUploadError>),
    /// Handout framing: before the end of a part.
    BeforeEndOf(Awaited),
    /// Handout framing: before the `DON` that ends a file.
    BeforeDon,
    /// In the middle of a signal request.
    MidRequest(SignalError),
    /// In the middle of a signal transfer.
    MidTransfer,
    /// In the middle of a handout download.
    MidDownload,
    /// magic_download: before its request was whole.
    BeforeFileRequest,
    /// Idle when the server stopped.
    IdleAtShutdown,
    /// udp_download: an ICMP port unreachable came back.
    PortUnreachable,
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::AfterHeaderBytes(n) => write!(f, "after {n} header bytes"),
            When::BeforeGoAhead => f.write_str("before `go ahead`"),
            When::Early(None) => f.write_str("early"),
            When::Early(Some(e)) => write!(f, "early: {e}"),
            When::BeforeEndOf(what) => write!(f, "before the end of {what}"),
            When::BeforeDon => f.write_str("before the DON that ends the file"),
            When::MidRequest(e) => write!(f, "in the middle of a request ({e})"),
            When::MidTransfer => f.write_str("in the middle of a transfer"),
            When::MidDownload => f.write_str("in the middle of a download"),
            When::BeforeFileRequest => f.write_str("before a complete FileRequest"),
            When::IdleAtShutdown => f.write_str("idle at shutdown"),
            When::PortUnreachable => f.write_str(
                "(its port is closed: ICMP port unreachable; nobody there asked for this file)",
            ),
        }
    }
}

impl Failure {
    /// A name refused as `of`, shown as the client sent it.
    pub(crate) fn name(of: NameOf, shown: impl Into<String>, error: NameError) -> Failure {
        Failure::Refused(Refusal::Name {
            of,
            shown: shown.into(),
            error,
        })
    }

    /// A protocol's own error: a violation.
    pub(crate) fn violation(e: impl Into<Violation>) -> Failure {
        Failure::Violation(e.into())
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
