//! The handout's own framing of the signal protocol (seed 004), sans-IO.
//!
//! The handout's client gives names and files no length: it separates its
//! messages by sleeping 0.1 s ("`SAF` pause name pause data pause `DON`"), and
//! reads with `recv(36)` for a signal, `recv(4)` for a repo's file count and
//! `recv(1024)` for names and data. ferry serves this framing beside its own
//! ([`super::SignalCodec`]), decided per request by [`detect`].
//!
//! Receiving, a name or a file ends at a *quiet gap*: no byte for `settle`.
//! Time is an input (`now`), so every rule here is a unit test with a fake
//! clock; the daemon's driver only reads the socket and the clock.
//! - [`QuietText`]: a name, everything until the stream goes quiet.
//! - [`FileData`]: a file's bytes, until a piece that is exactly `DON` after a
//!   gap (a `DON` inside the data, not preceded by a pause, is data).
//!
//! Sending, [`piece_len`] cuts a file into the pieces a `recv(1024)` client
//! reads, never one of exactly 3 bytes (which the client would take for
//! `DON`), and [`found_signal`] is the 36-byte answer to a `RAF` that cannot
//! run into the data after it.

use std::time::Duration;

use crate::Instant;

use bytes::{Bytes, BytesMut};

use super::Tag;

/// Bytes the handout's client reads for a signal: `recv(SIGNALSIZE)`, where
/// `SIGNALSIZE = getsizeof(b'CLS')` is 36.
pub const SIGNAL_RECV: usize = 36;
/// Bytes the handout reads for a name or a piece of data: `recv(1024)`.
pub const PIECE: usize = 1024;
/// Bytes of a `SAR`/`RAR` file count: `struct.pack('!I', n)`.
pub const COUNT_LEN: usize = 4;
/// The end-of-file signal.
pub const DON: &[u8; 3] = b"DON";

/// Which framing a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// ferry's: a big-endian length before every text.
    Ferry,
    /// The handout's: texts and files ended by pauses.
    Handout,
}

/// Decides the dialect of a request from its tag and the bytes after it;
/// `None` until enough of them have arrived.
///
/// - `SAF`, `RAF`, `RAR`: a ferry text starts with its length, whose first
///   byte is at most `0x10` ([`super::MAX_TEXT_LEN`] is 4096); a handout name
///   starts with a printable character (the normaliser refuses control
///   characters), so a first byte below `0x20` is ferry, anything else handout.
/// - `SAR`: a handout count starts `00 00` (fewer than 65,536 files); a ferry
///   `SAR` name is never empty, so its length is never `00 00`.
/// - Every other tag is the same in both dialects: ferry.
pub fn detect(tag: Tag, after: &[u8]) -> Option<Dialect> {
    match tag {
        Tag::Saf | Tag::Raf | Tag::Rar => after.first().map(|&b| {
            if b < 0x20 {
                Dialect::Ferry
            } else {
                Dialect::Handout
            }
        }),
        Tag::Sar => match after {
            [] => None,
            [0] => None,
            [0, 0, ..] => Some(Dialect::Handout),
            _ => Some(Dialect::Ferry),
        },
        _ => Some(Dialect::Ferry),
    }
}

/// The answer to a handout `RAF` for a file that exists: `SAF`, the size, and
/// spaces, 36 bytes in all. The client reads it with one `recv(36)` and
/// checks only that it is not `ERR`; being exactly 36 bytes, it cannot run
/// into the first piece of data however late the client reads.
pub fn found_signal(size: u64) -> [u8; SIGNAL_RECV] {
    let mut out = [b' '; SIGNAL_RECV];
    let text = format!("SAF {size}");
    let n = text.len().min(SIGNAL_RECV);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// Length of the piece that starts at `offset` of a `size`-byte file sent to
/// a handout client (0 at the end). Pieces are [`PIECE`] bytes, except the
/// last; a last piece of exactly 3 bytes could be `DON`, so when `size` is
/// 3 more than a multiple of 1024 the last two pieces are 1023 and 4 bytes
/// (2 and 1 for a 3-byte file). No piece is ever 3 bytes long.
pub fn piece_len(offset: u64, size: u64) -> usize {
    let left = size.saturating_sub(offset);
    if size % PIECE as u64 == 3 {
        if left == 3 {
            return 2;
        }
        if left == PIECE as u64 + 3 {
            return PIECE - 1;
        }
    }
    left.min(PIECE as u64) as usize
}

/// Why handout framing was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoutError {
    /// A name longer than the cap arrived before the pause that ends it.
    #[error("the name is longer than {0} bytes (a handout name ends at a pause of 0.1 s)")]
    NameTooLong(usize),
    /// The connection ended in the middle of a file.
    #[error("the connection closed before DON ended the file")]
    NoDon,
    /// The pause between a name and the data after it may have been lost:
    /// where the name ends cannot be told.
    #[error("{0}")]
    LostPause(LostPause),
}

/// How the pause after a name was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostPause {
    /// The name came in one read with bytes that waited while ferry was
    /// not reading (a stopped or starved server).
    Waited,
    /// The name ran on from the end of the previous file (its `DON` and
    /// the request tag came in the same piece as its data).
    RanOn,
    /// The name ends in `DON`: the name, the data and the end marker came
    /// as one piece.
    EndsInDon,
}

impl std::fmt::Display for LostPause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self {
            LostPause::Waited => "the server could not read for a moment, so the name and what followed it arrived together",
            LostPause::RanOn => "the name came in one piece with the previous file's data and DON",
            LostPause::EndsInDon => "the name ends in DON, so the name, the data and DON arrived as one piece",
        };
        write!(
            f,
            "the pause after the name was lost ({how}): where the name ends cannot be told, so the file was not stored; send it again"
        )
    }
}

/// A handout name: every byte until the stream has been quiet for `settle`.
#[derive(Debug)]
pub struct QuietText {
    settle: Duration,
    max: usize,
    last: Option<Instant>,
    text: BytesMut,
    /// Data follows the name after a pause (`SAF`, `SAR`), so a lost pause
    /// would run the data into the name; after a `RAF` or `RAR` name the
    /// client waits for an answer, and nothing can run on.
    data_follows: bool,
    doubt: Option<LostPause>,
}

impl QuietText {
    /// Waits for a name of at most `max` bytes ended by `settle` of quiet;
    /// `data_follows`: the client sends data after the pause.
    pub fn new(settle: Duration, max: usize, data_follows: bool) -> Self {
        Self {
            settle,
            max,
            last: None,
            text: BytesMut::new(),
            data_follows,
            doubt: None,
        }
    }

    /// Bytes that arrived at `now`; `doubt`: they may hide a lost pause.
    pub fn on_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
        doubt: Option<LostPause>,
    ) -> Result<(), HandoutError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.text.len() + bytes.len() > self.max {
            return Err(HandoutError::NameTooLong(self.max));
        }
        self.text.extend_from_slice(bytes);
        self.last = Some(now);
        self.doubt = self.doubt.or(doubt);
        Ok(())
    }

    /// When to call [`QuietText::on_timeout`]: `settle` after the last byte;
    /// `None` before the first.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|t| t + self.settle)
    }

    /// The name, once the stream has been quiet for `settle`, with the way
    /// its pause may have been lost when data follows it.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Name> {
        match self.deadline() {
            Some(d) if now >= d => {
                let text = self.text.split().freeze();
                let lost = if self.data_follows {
                    self.doubt
                        .or(text.ends_with(DON).then_some(LostPause::EndsInDon))
                } else {
                    None
                };
                Some(Name { text, lost })
            }
            _ => None,
        }
    }
}

/// A name [`QuietText`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// Its bytes.
    pub text: Bytes,
    /// How the pause after it may have been lost: then where it ends cannot
    /// be told, and the file must not be stored.
    pub lost: Option<LostPause>,
}

impl Name {
    /// The name, or why it cannot be trusted.
    pub fn sure(self) -> Result<Bytes, HandoutError> {
        match self.lost {
            Some(how) => Err(HandoutError::LostPause(how)),
            None => Ok(self.text),
        }
    }
}

impl LostPause {
    /// Whether the file's own `DON` can still be found after such a name
    /// (the stream is in step again at its end): not when the name itself
    /// ends in `DON`.
    pub fn resumable(self) -> bool {
        !matches!(self, LostPause::EndsInDon)
    }
}

/// What [`FileData`] makes of the bytes it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEvent {
    /// Bytes of the file.
    Data(Bytes),
    /// The file ended with `DON`; `rest` arrived after it and belongs to
    /// whatever comes next (the next request, or the next file's name).
    End {
        /// Bytes after the `DON`.
        rest: Bytes,
        /// How the end was found.
        by: EndBy,
    },
}

/// How [`FileData`] knew where a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndBy {
    /// A piece that was exactly `DON`: the client's pause before it arrived
    /// as a pause.
    Pause,
    /// `DON` ran on from the data (the pause before it was lost on the way,
    /// or while ferry was not reading), and a request tag followed it.
    Command,
    /// `DON` ran on from the data, and then the client went quiet or
    /// closed: the end of what it sent.
    Quiet,
}

impl EndBy {
    /// Whether the pause before `DON` was lost and the end was found from
    /// what followed it.
    pub fn recovered(self) -> bool {
        !matches!(self, EndBy::Pause)
    }
}

/// What the handout client sends after a file's `DON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// A request (`SAF`, `RAF`, `CLS`…), or nothing: a `SAF`, or the last
    /// file of a `SAR`.
    Request,
    /// The next file's name: a file of a `SAR` with more to come. A name
    /// can be anything, so a lost pause there cannot be found again.
    Name,
}

/// The tags a handout client can send after a file, as request starts.
const NEXT_TAGS: [&[u8; 3]; 6] = [b"SAF", b"RAF", b"SAR", b"RAR", b"PIN", b"CLS"];

/// Bytes held back at the end of a piece: `DON` and two bytes of a tag,
/// until the rest shows whether they are `DON` + a request.
const HOLD: usize = 5;

fn is_tag(b: &[u8]) -> bool {
    NEXT_TAGS.iter().any(|t| b == &t[..])
}

/// Where `DON` + a request tag starts in `b`, if anywhere.
fn find_don_tag(b: &[u8]) -> Option<usize> {
    memchr::memmem::find_iter(b, DON).find(|&i| b.get(i + 3..i + 6).is_some_and(is_tag))
}

#[derive(Debug)]
enum DataState {
    /// The next bytes start a new piece (the stream has been quiet).
    Quiet,
    /// Inside a piece of `len` bytes so far; its last bytes (at most
    /// [`HOLD`]) are held back.
    Piece { len: u64 },
    /// A piece ended in `DON` and then the stream was quiet: the end, unless
    /// what comes next says otherwise. `glued`: the piece held more than
    /// `DON` (the pause before it may have been lost).
    Tentative { glued: bool },
    /// The first bytes (at most 3) of the piece after a tentative end.
    Next { glued: bool },
    /// Done.
    Ended,
}

/// Why a file's end could not be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguous {
    /// `DON` ran on from the data, and a piece that is not a request came
    /// after it in a `SAR`: the next name, or more data.
    #[error("the pause before DON was lost, and the next piece could be the next file's name or more data")]
    NameOrData,
}

/// A handout file's data: the bytes until the `DON` that ends it.
///
/// A piece is bytes that arrive without a pause of `settle` between them.
/// The rules, in order:
/// - a piece that ends in `DON` (or is exactly `DON`) ends the file, unless
///   the next piece, arriving within `confirm`, is another bare `DON` (then
///   the first was the file's content: a file ending in `DON`, or exactly
///   `DON`, is sent as `…DON` pause `DON`);
/// - `DON` followed by a request tag (`SAF RAF SAR RAR PIN CLS`) inside a
///   piece ends the file there, when a request can follow ([`After::Request`]):
///   the pauses around that `DON` were lost (a client whose send buffer was
///   still full, a server that was not reading), and the handout client
///   sends nothing else after a file;
/// - a longer piece that merely ends in `DON`, followed by a piece that is
///   no request, was data (a client pausing inside its data) for a `SAF`,
///   and is [`Ambiguous`] inside a `SAR`;
/// - the end is settled by the next piece, the end of the connection, or
///   `confirm` of quiet, whichever comes first.
///
/// `DON` anywhere else (inside data, or after a pause but as the start of a
/// longer piece) is data.
#[derive(Debug)]
pub struct FileData {
    settle: Duration,
    confirm: Duration,
    after: After,
    last: Option<Instant>,
    state: DataState,
    /// The held-back end of the current piece, or the start of the piece
    /// after a tentative end.
    held: BytesMut,
}

impl FileData {
    /// Starts after the pause that ended the name: the first bytes start a
    /// piece. `after`: what the client sends once the file has ended.
    pub fn new(settle: Duration, confirm: Duration, after: After) -> Self {
        Self {
            settle,
            confirm,
            after,
            last: None,
            state: DataState::Quiet,
            held: BytesMut::new(),
        }
    }

    /// When to call [`FileData::on_timeout`], if a rule is waiting on time.
    pub fn deadline(&self) -> Option<Instant> {
        let last = self.last?;
        match self.state {
            DataState::Piece { .. } | DataState::Next { .. } => Some(last + self.settle),
            DataState::Tentative { .. } => Some(last + self.confirm),
            DataState::Quiet | DataState::Ended => None,
        }
    }

    /// True once the file has ended.
    pub fn ended(&self) -> bool {
        matches!(self.state, DataState::Ended)
    }

    /// Bytes that arrived at `now`.
    pub fn on_bytes(&mut self, now: Instant, bytes: Bytes) -> Result<Vec<DataEvent>, Ambiguous> {
        if bytes.is_empty() || self.ended() {
            return Ok(Vec::new());
        }
        // A rule whose time has come is settled before the new bytes count.
        let mut out = self.on_timeout(now)?;
        if self.ended() {
            if let Some(DataEvent::End { rest, .. }) = out.last_mut() {
                let mut all = BytesMut::from(&rest[..]);
                all.extend_from_slice(&bytes);
                *rest = all.freeze();
            }
            return Ok(out);
        }
        self.last = Some(now);
        match std::mem::replace(&mut self.state, DataState::Quiet) {
            DataState::Quiet => self.piece(0, bytes, &mut out),
            DataState::Piece { len } => self.piece(len, bytes, &mut out),
            DataState::Tentative { glued } | DataState::Next { glued } => {
                self.held.extend_from_slice(&bytes);
                self.next(glued, false, &mut out)?;
            }
            DataState::Ended => self.state = DataState::Ended,
        }
        Ok(out)
    }

    /// More bytes of a piece that holds `len` bytes so far.
    fn piece(&mut self, len: u64, bytes: Bytes, out: &mut Vec<DataEvent>) {
        let len = len + bytes.len() as u64;
        let all = if self.held.is_empty() {
            bytes
        } else {
            let mut all = self.held.split();
            all.extend_from_slice(&bytes);
            all.freeze()
        };
        if self.after == After::Request {
            if let Some(at) = find_don_tag(&all) {
                if at > 0 {
                    out.push(DataEvent::Data(all.slice(..at)));
                }
                self.state = DataState::Ended;
                out.push(DataEvent::End {
                    rest: all.slice(at + DON.len()..),
                    by: EndBy::Command,
                });
                return;
            }
        }
        let keep = all.len().min(HOLD);
        let give = all.len() - keep;
        if give > 0 {
            out.push(DataEvent::Data(all.slice(..give)));
        }
        self.held.extend_from_slice(&all[give..]);
        self.state = DataState::Piece { len };
    }

    /// Decides what the piece after a tentative end means, from its first
    /// bytes (in `held`); `closed`: that piece has ended (a pause, or the
    /// end of the stream). Waits (state `Next`) while it could still turn
    /// out to be a bare `DON`, or is too short to tell a request tag.
    fn next(
        &mut self,
        glued: bool,
        closed: bool,
        out: &mut Vec<DataEvent>,
    ) -> Result<(), Ambiguous> {
        let held = &self.held[..];
        let maybe_bare = held.len() <= DON.len() && DON.starts_with(held);
        if !closed && (maybe_bare || held.len() < DON.len()) {
            self.state = DataState::Next { glued };
            return Ok(());
        }
        if held == DON {
            // A bare DON after the end: the one before was the file's content.
            self.held.clear();
            out.push(DataEvent::Data(Bytes::from_static(DON)));
            self.state = DataState::Tentative { glued: false };
            return Ok(());
        }
        let request = held.get(..3).is_some_and(is_tag);
        match (self.after, glued, request) {
            // The next request, or the next name after a bare DON.
            (After::Request, _, true) | (_, false, _) => {
                self.state = DataState::Ended;
                out.push(DataEvent::End {
                    rest: self.held.split().freeze(),
                    by: if glued { EndBy::Command } else { EndBy::Pause },
                });
                Ok(())
            }
            // A piece that ended in DON, then more data that is no request:
            // the DON was data, and the client paused inside its data.
            (After::Request, true, false) => {
                out.push(DataEvent::Data(Bytes::from_static(DON)));
                let more = self.held.split().freeze();
                self.piece(0, more, out);
                Ok(())
            }
            (After::Name, true, _) => {
                self.state = DataState::Ended;
                Err(Ambiguous::NameOrData)
            }
        }
    }

    /// Time passed: settles a piece, the start of the next one, or a
    /// tentative end whose time has come.
    pub fn on_timeout(&mut self, now: Instant) -> Result<Vec<DataEvent>, Ambiguous> {
        let mut out = Vec::new();
        if self.deadline().is_some_and(|d| now >= d) {
            if let DataState::Tentative { glued } = self.state {
                self.state = DataState::Ended;
                out.push(DataEvent::End {
                    rest: Bytes::new(),
                    by: if glued { EndBy::Quiet } else { EndBy::Pause },
                });
            } else {
                self.close_piece(&mut out)?;
            }
        }
        Ok(out)
    }

    /// The current piece has ended (a pause, or the end of the stream):
    /// settles it, and whatever it decides in turn.
    fn close_piece(&mut self, out: &mut Vec<DataEvent>) -> Result<(), Ambiguous> {
        loop {
            match std::mem::replace(&mut self.state, DataState::Quiet) {
                DataState::Piece { len } => {
                    if self.held.ends_with(DON) {
                        let data = self.held.split_to(self.held.len() - DON.len()).freeze();
                        self.held.clear();
                        if !data.is_empty() {
                            out.push(DataEvent::Data(data));
                        }
                        self.state = DataState::Tentative {
                            glued: len > DON.len() as u64,
                        };
                    } else {
                        let data = self.held.split().freeze();
                        if !data.is_empty() {
                            out.push(DataEvent::Data(data));
                        }
                    }
                    return Ok(());
                }
                DataState::Next { glued } => self.next(glued, true, out)?,
                other => {
                    self.state = other;
                    return Ok(());
                }
            }
        }
    }

    /// The connection ended: the file ended too if its last piece ended in
    /// `DON`.
    pub fn on_eof(&mut self) -> Result<Vec<DataEvent>, HandoutError> {
        let mut out = Vec::new();
        self.close_piece(&mut out)
            .map_err(|_| HandoutError::NoDon)?;
        match std::mem::replace(&mut self.state, DataState::Ended) {
            DataState::Tentative { glued } => {
                out.push(DataEvent::End {
                    rest: Bytes::new(),
                    by: if glued { EndBy::Quiet } else { EndBy::Pause },
                });
                Ok(out)
            }
            DataState::Ended => Ok(out),
            _ => Err(HandoutError::NoDon),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(50);
    const CONFIRM: Duration = Duration::from_millis(300);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// What a run of [`FileData`] gave: the file, what came after it, and
    /// how it ended (`None`: it never did).
    #[derive(Debug, PartialEq)]
    struct Outcome {
        file: Vec<u8>,
        rest: Vec<u8>,
        end: Option<EndBy>,
        ambiguous: bool,
    }

    fn take(evs: Vec<DataEvent>, o: &mut Outcome) {
        for ev in evs {
            match ev {
                DataEvent::Data(b) => o.file.extend_from_slice(&b),
                DataEvent::End { rest, by } => {
                    o.end = Some(by);
                    o.rest.extend_from_slice(&rest);
                }
            }
        }
    }

    /// Feeds (time in ms, bytes) arrivals, with timeouts fired at their
    /// deadlines in between, then the end of the stream if `eof`, else
    /// quiet until every rule has settled.
    fn run_as(after: After, arrivals: &[(u64, &[u8])], eof: bool) -> Outcome {
        let t0 = Instant::now();
        let mut f = FileData::new(SETTLE, CONFIRM, after);
        let mut o = Outcome {
            file: Vec::new(),
            rest: Vec::new(),
            end: None,
            ambiguous: false,
        };
        let step = |r: Result<Vec<DataEvent>, Ambiguous>, o: &mut Outcome| match r {
            Ok(evs) => take(evs, o),
            Err(Ambiguous::NameOrData) => o.ambiguous = true,
        };
        for &(at, bytes) in arrivals {
            let now = ms(t0, at);
            while let Some(d) = f.deadline().filter(|d| *d <= now) {
                step(f.on_timeout(d), &mut o);
            }
            if f.ended() {
                o.rest.extend_from_slice(bytes);
                continue;
            }
            step(f.on_bytes(now, Bytes::copy_from_slice(bytes)), &mut o);
        }
        if eof {
            if !f.ended() {
                if let Ok(evs) = f.on_eof() {
                    take(evs, &mut o);
                }
            }
        } else {
            while let Some(d) = f.deadline() {
                step(f.on_timeout(d), &mut o);
            }
        }
        o
    }

    fn run(arrivals: &[(u64, &[u8])], eof: bool) -> (Vec<u8>, Vec<u8>, bool) {
        let o = run_as(After::Request, arrivals, eof);
        (o.file, o.rest, o.end.is_some())
    }

    fn ended(file: &[u8], rest: &[u8], by: EndBy) -> Outcome {
        Outcome {
            file: file.to_vec(),
            rest: rest.to_vec(),
            end: Some(by),
            ambiguous: false,
        }
    }

    #[test]
    fn detect_by_the_byte_after_the_tag() {
        assert_eq!(detect(Tag::Saf, b""), None);
        assert_eq!(detect(Tag::Saf, b"\x00\x05hello"), Some(Dialect::Ferry));
        assert_eq!(detect(Tag::Saf, b"\x10\x00"), Some(Dialect::Ferry));
        assert_eq!(detect(Tag::Saf, b"report.pdf"), Some(Dialect::Handout));
        assert_eq!(detect(Tag::Raf, b" spaced"), Some(Dialect::Handout));
        assert_eq!(detect(Tag::Rar, "é".as_bytes()), Some(Dialect::Handout));
        assert_eq!(detect(Tag::Sar, b""), None);
        assert_eq!(detect(Tag::Sar, b"\x00"), None);
        assert_eq!(
            detect(Tag::Sar, b"\x00\x00\x00\x03"),
            Some(Dialect::Handout)
        );
        assert_eq!(detect(Tag::Sar, b"\x00\x07project"), Some(Dialect::Ferry));
        assert_eq!(detect(Tag::Pin, b""), Some(Dialect::Ferry));
    }

    #[test]
    fn found_signal_is_36_bytes_and_not_err() {
        let s = found_signal(3_145_731);
        assert_eq!(s.len(), 36);
        assert!(s.starts_with(b"SAF 3145731 "));
        assert_ne!(&s[..], b"ERR");
        assert_eq!(found_signal(u64::MAX).len(), 36);
    }

    #[test]
    fn pieces_are_never_three_bytes() {
        for size in 0..5000u64 {
            let mut off = 0;
            let mut n = 0;
            while off < size {
                let len = piece_len(off, size);
                assert!(
                    len > 0 && len <= PIECE && len != 3,
                    "size {size} at {off}: {len}"
                );
                off += len as u64;
                n += 1;
            }
            assert_eq!(off, size);
            assert_eq!(piece_len(off, size), 0);
            assert!(n <= size.div_ceil(PIECE as u64) + 1);
        }
        assert_eq!(piece_len(0, 3), 2);
        assert_eq!(piece_len(0, 1027), 1023);
        assert_eq!(piece_len(1023, 1027), 4);
        assert_eq!(piece_len(0, 2048), 1024);
    }

    #[test]
    fn a_name_ends_at_a_quiet_gap() {
        let t0 = Instant::now();
        let mut q = QuietText::new(SETTLE, 16, true);
        assert_eq!(q.deadline(), None);
        assert_eq!(q.on_timeout(ms(t0, 1000)), None);
        q.on_bytes(ms(t0, 100), b"repo", None).unwrap();
        q.on_bytes(ms(t0, 140), b"rt.pdf", None).unwrap();
        assert_eq!(q.on_timeout(ms(t0, 189)), None);
        assert_eq!(q.deadline(), Some(ms(t0, 190)));
        assert_eq!(
            q.on_timeout(ms(t0, 190)).unwrap().sure().unwrap(),
            &b"report.pdf"[..]
        );
        let mut q = QuietText::new(SETTLE, 4, true);
        assert_eq!(
            q.on_bytes(t0, b"toolong", None),
            Err(HandoutError::NameTooLong(4))
        );
    }

    #[test]
    fn handout_send_file_shapes() {
        // SAF pause name pause data pause DON pause CLS: data ends at the DON piece.
        let (f, r, e) = run(
            &[(0, b"hello "), (1, b"world"), (100, b"DON"), (200, b"CLS")],
            false,
        );
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b"hello world"[..], &b"CLS"[..], true)
        );
        // An empty file: the first piece is DON.
        let (f, r, e) = run(&[(0, b"DON"), (100, b"CLS")], false);
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b""[..], &b"CLS"[..], true)
        );
        // A file ending in DON, sent without a pause before its last bytes.
        let (f, _, e) = run(&[(0, b"abcDON"), (100, b"DON")], true);
        assert_eq!((f.as_slice(), e), (&b"abcDON"[..], true));
        let (f, _, e) = run(&[(0, b"abc"), (10, b"DON"), (110, b"DON")], true);
        assert_eq!((f.as_slice(), e), (&b"abcDON"[..], true));
        // A file that is exactly DON: DON pause DON.
        let (f, r, e) = run(&[(0, b"DON"), (100, b"DON"), (200, b"CLS")], false);
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b"DON"[..], &b"CLS"[..], true)
        );
        let (f, _, e) = run(&[(0, b"DON"), (100, b"DON")], true);
        assert_eq!((f.as_slice(), e), (&b"DON"[..], true));
        // A slow client pausing inside its data: a piece that is not exactly DON is data.
        let (f, _, e) = run(
            &[(0, b"ab"), (100, b"DONE"), (200, b"DO"), (300, b"DON")],
            true,
        );
        assert_eq!((f.as_slice(), e), (&b"abDONEDO"[..], true));
        // DON split across two reads still counts, within the settle gap.
        let (f, r, e) = run(
            &[(0, b"x"), (100, b"D"), (101, b"ON"), (200, b"RAF")],
            false,
        );
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b"x"[..], &b"RAF"[..], true)
        );
        // The next request right after DON (no CLS, connection kept), or silence.
        let (f, r, e) = run(&[(0, b"data"), (100, b"DON")], false);
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b"data"[..], &b""[..], true)
        );
        // The end settles at the confirm time, not before.
        let t0 = Instant::now();
        let mut d = FileData::new(SETTLE, CONFIRM, After::Request);
        assert_eq!(d.on_bytes(t0, Bytes::from_static(b"DON")), Ok(vec![]));
        assert_eq!(d.on_timeout(ms(t0, 49)), Ok(vec![]));
        assert_eq!(d.on_timeout(ms(t0, 50)), Ok(vec![]));
        assert_eq!(d.deadline(), Some(ms(t0, 300)));
        assert_eq!(d.on_timeout(ms(t0, 299)), Ok(vec![]));
        assert_eq!(
            d.on_timeout(ms(t0, 300)),
            Ok(vec![DataEvent::End {
                rest: Bytes::new(),
                by: EndBy::Pause
            }])
        );
    }

    #[test]
    fn no_don_no_file() {
        let (_, _, e) = run(&[(0, b"data"), (100, b"more")], true);
        assert!(!e);
        let (_, _, e) = run(&[(0, b"data"), (100, b"DO")], true);
        assert!(!e);
        // DON then the connection closes at once (no pause): still the end.
        let (f, _, e) = run(&[(0, b"data"), (100, b"DON")], true);
        assert_eq!((f.as_slice(), e), (&b"data"[..], true));
    }

    #[test]
    fn next_name_after_don_is_rest() {
        // SAR: … DON pause name pause data …
        let (f, r, e) = run(&[(0, b"one"), (100, b"DON"), (200, b"b.txt")], false);
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b"one"[..], &b"b.txt"[..], true)
        );
        // A name that starts like DON but is not.
        let (f, r, e) = run(
            &[(0, b"one"), (100, b"DON"), (200, b"DO"), (201, b"NE.txt")],
            false,
        );
        assert_eq!(
            (f.as_slice(), r.as_slice(), e),
            (&b"one"[..], &b"DONE.txt"[..], true)
        );
    }

    #[test]
    fn a_don_run_on_from_the_data_ends_the_file_when_a_request_follows() {
        // ferryd stopped across the data->DON pause: the data and DON arrive
        // as one piece, then SAF of the next file after a pause.
        let o = run_as(
            After::Request,
            &[
                (0, b"print('lab 1')\nDON"),
                (100, b"SAF"),
                (200, b"lab2.py"),
            ],
            false,
        );
        assert_eq!(o, ended(b"print('lab 1')\n", b"SAFlab2.py", EndBy::Command));
        // The same, the client then closing.
        let o = run_as(After::Request, &[(0, b"dataDON")], true);
        assert_eq!(o, ended(b"data", b"", EndBy::Quiet));
        // Or going quiet (it waits for nothing more): the end, at confirm.
        let o = run_as(After::Request, &[(0, b"data"), (5, b"DON")], false);
        assert_eq!(o, ended(b"data", b"", EndBy::Quiet));
    }

    #[test]
    fn don_and_a_tag_inside_a_piece_end_the_file_there() {
        // A backed-up send buffer: data, DON, RAF and the name in one piece;
        // the client then waits for its answer.
        let o = run_as(After::Request, &[(0, b"abc"), (1, b"DONRAFlab1.py")], false);
        assert_eq!(o, ended(b"abc", b"RAFlab1.py", EndBy::Command));
        // Split across reads at every byte.
        let whole = b"0123456789DONSAFnext";
        for cut in 1..whole.len() {
            let o = run_as(
                After::Request,
                &[(0, &whole[..cut]), (1, &whole[cut..])],
                false,
            );
            assert_eq!(
                o,
                ended(b"0123456789", b"SAFnext", EndBy::Command),
                "cut {cut}"
            );
        }
        // An empty file whose DON ran into the next request.
        let o = run_as(After::Request, &[(0, b"DONCLS")], false);
        assert_eq!(o, ended(b"", b"CLS", EndBy::Command));
        // Not a tag after DON: data.
        let o = run_as(After::Request, &[(0, b"I am DONE"), (100, b"DON")], true);
        assert_eq!(o, ended(b"I am DONE", b"", EndBy::Pause));
    }

    #[test]
    fn a_file_ending_in_don_survives_a_lost_pause_before_its_marker() {
        // Content "abcDON" and its marker DON in one piece, then the next request.
        let o = run_as(After::Request, &[(0, b"abcDONDON"), (100, b"PIN")], false);
        assert_eq!(o, ended(b"abcDON", b"PIN", EndBy::Command));
        // Sent as the handout does, with the pause: the bare DON ends it.
        let o = run_as(
            After::Request,
            &[(0, b"abcDON"), (100, b"DON"), (200, b"CLS")],
            false,
        );
        assert_eq!(o, ended(b"abcDON", b"CLS", EndBy::Pause));
    }

    #[test]
    fn a_piece_ending_in_don_then_more_data_was_data() {
        // A slow client pausing inside its data, right after bytes "DON".
        let o = run_as(
            After::Request,
            &[(0, b"abcDON"), (100, b"xyz"), (200, b"DON")],
            true,
        );
        assert_eq!(o, ended(b"abcDONxyz", b"", EndBy::Pause));
    }

    #[test]
    fn inside_a_sar_a_lost_pause_before_don_is_ambiguous() {
        // The next name after a bare DON: the end, as before.
        let o = run_as(
            After::Name,
            &[(0, b"one"), (100, b"DON"), (200, b"b.txt")],
            false,
        );
        assert_eq!(o, ended(b"one", b"b.txt", EndBy::Pause));
        // DON ran on from the data, then a piece: a name, or more data?
        let o = run_as(After::Name, &[(0, b"oneDON"), (100, b"b.txt")], false);
        assert!(o.ambiguous, "{o:?}");
        // A tag inside a SAR file's data is data: a name follows a DON here.
        let o = run_as(
            After::Name,
            &[(0, b"xDONSAFy"), (100, b"DON"), (200, b"c")],
            false,
        );
        assert_eq!(o, ended(b"xDONSAFy", b"c", EndBy::Pause));
    }

    #[test]
    fn a_name_that_may_hold_its_data_is_refused() {
        let t0 = Instant::now();
        // Bytes that waited while the server was stopped.
        let mut q = QuietText::new(SETTLE, 64, true);
        q.on_bytes(t0, b"lab1.pyprint('lab 1')", Some(LostPause::Waited))
            .unwrap();
        let name = q.on_timeout(ms(t0, 50)).unwrap();
        assert_eq!(name.lost, Some(LostPause::Waited));
        assert!(LostPause::Waited.resumable());
        assert_eq!(name.sure(), Err(HandoutError::LostPause(LostPause::Waited)));
        // A RAF name: the client waits after it, nothing can have run on.
        let mut q = QuietText::new(SETTLE, 64, false);
        q.on_bytes(t0, b"lab1.py", Some(LostPause::RanOn)).unwrap();
        assert_eq!(
            q.on_timeout(ms(t0, 50)).unwrap().sure().unwrap(),
            &b"lab1.py"[..]
        );
        // A name ending in DON: name, data and DON in one piece; the file's
        // own DON has passed, so the stream cannot be followed further.
        let mut q = QuietText::new(SETTLE, 64, true);
        q.on_bytes(t0, b"a.txthelloDON", None).unwrap();
        let lost = q.on_timeout(ms(t0, 50)).unwrap().lost;
        assert_eq!(lost, Some(LostPause::EndsInDon));
        assert!(!LostPause::EndsInDon.resumable());
        assert!(HandoutError::LostPause(LostPause::Waited)
            .to_string()
            .starts_with("the pause after the name was lost"));
    }
}
