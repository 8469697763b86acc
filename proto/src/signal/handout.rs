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

use std::time::{Duration, Instant};

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
}

/// A handout name: every byte until the stream has been quiet for `settle`.
#[derive(Debug)]
pub struct QuietText {
    settle: Duration,
    max: usize,
    last: Option<Instant>,
    text: BytesMut,
}

impl QuietText {
    /// Waits for a name of at most `max` bytes ended by `settle` of quiet.
    pub fn new(settle: Duration, max: usize) -> Self {
        Self {
            settle,
            max,
            last: None,
            text: BytesMut::new(),
        }
    }

    /// Bytes that arrived at `now`.
    pub fn on_bytes(&mut self, now: Instant, bytes: &[u8]) -> Result<(), HandoutError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.text.len() + bytes.len() > self.max {
            return Err(HandoutError::NameTooLong(self.max));
        }
        self.text.extend_from_slice(bytes);
        self.last = Some(now);
        Ok(())
    }

    /// When to call [`QuietText::on_timeout`]: `settle` after the last byte;
    /// `None` before the first.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|t| t + self.settle)
    }

    /// The name, once the stream has been quiet for `settle`.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Bytes> {
        match self.deadline() {
            Some(d) if now >= d => Some(self.text.split().freeze()),
            _ => None,
        }
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
    },
}

#[derive(Debug)]
enum DataState {
    /// The next bytes start a new piece (the stream has been quiet).
    Quiet,
    /// Inside a piece of data.
    Piece,
    /// A new piece that is so far a prefix of `DON`.
    Holding(BytesMut),
    /// A piece that was exactly `DON` and then quiet: the end, unless the
    /// next piece is another bare `DON` (then this one was data).
    Tentative,
    /// A piece after a tentative end that is so far a prefix of `DON`.
    Second(BytesMut),
    /// Done.
    Ended,
}

/// A handout file's data: the bytes until a piece that is exactly `DON`.
///
/// The rule, with a piece being bytes that arrive without a pause of
/// `settle` between them:
/// - a piece that is exactly `DON` ends the file, and nothing else does
///   (`DON` inside or at the end of a piece is data);
/// - unless the next piece, arriving within `confirm`, is another bare `DON`:
///   then the first was the file's content (a file of exactly `DON`, sent
///   as `DON` pause `DON`);
/// - the end is settled by the next piece, the end of the connection, or
///   `confirm` of quiet, whichever comes first.
#[derive(Debug)]
pub struct FileData {
    settle: Duration,
    confirm: Duration,
    last: Option<Instant>,
    state: DataState,
}

impl FileData {
    /// Starts after the pause that ended the name: the first bytes start a piece.
    pub fn new(settle: Duration, confirm: Duration) -> Self {
        Self {
            settle,
            confirm,
            last: None,
            state: DataState::Quiet,
        }
    }

    /// When to call [`FileData::on_timeout`], if a rule is waiting on time.
    pub fn deadline(&self) -> Option<Instant> {
        let last = self.last?;
        match self.state {
            DataState::Holding(_) | DataState::Second(_) | DataState::Piece => {
                Some(last + self.settle)
            }
            DataState::Tentative => Some(last + self.confirm),
            DataState::Quiet | DataState::Ended => None,
        }
    }

    /// True once the file has ended.
    pub fn ended(&self) -> bool {
        matches!(self.state, DataState::Ended)
    }

    /// Bytes that arrived at `now`.
    pub fn on_bytes(&mut self, now: Instant, bytes: Bytes) -> Vec<DataEvent> {
        let mut out = Vec::new();
        if bytes.is_empty() || self.ended() {
            return out;
        }
        // A rule whose time has come is settled before the new bytes count.
        if let Some(ev) = self.on_timeout(now) {
            out.push(ev);
            if self.ended() {
                if let Some(DataEvent::End { rest }) = out.last_mut() {
                    let mut all = BytesMut::from(&rest[..]);
                    all.extend_from_slice(&bytes);
                    *rest = all.freeze();
                }
                return out;
            }
        }
        self.last = Some(now);
        let state = std::mem::replace(&mut self.state, DataState::Piece);
        match state {
            DataState::Quiet => self.hold(BytesMut::new(), &bytes, &mut out),
            DataState::Piece => out.push(DataEvent::Data(bytes)),
            DataState::Holding(held) => self.hold(held, &bytes, &mut out),
            DataState::Tentative => {
                if is_don_prefix(&bytes) {
                    self.state = DataState::Second(BytesMut::from(&bytes[..]));
                } else {
                    self.state = DataState::Ended;
                    out.push(DataEvent::End { rest: bytes });
                }
            }
            DataState::Second(mut held) => {
                held.extend_from_slice(&bytes);
                if is_don_prefix(&held) {
                    self.state = DataState::Second(held);
                } else {
                    self.state = DataState::Ended;
                    out.push(DataEvent::End {
                        rest: held.freeze(),
                    });
                }
            }
            DataState::Ended => self.state = DataState::Ended,
        }
        out
    }

    fn hold(&mut self, mut held: BytesMut, bytes: &[u8], out: &mut Vec<DataEvent>) {
        held.extend_from_slice(bytes);
        if is_don_prefix(&held) {
            self.state = DataState::Holding(held);
        } else {
            self.state = DataState::Piece;
            out.push(DataEvent::Data(held.freeze()));
        }
    }

    /// Time passed: settles a held piece or a tentative end whose time has come.
    pub fn on_timeout(&mut self, now: Instant) -> Option<DataEvent> {
        let due = self.deadline().is_some_and(|d| now >= d);
        if !due {
            return None;
        }
        let state = std::mem::replace(&mut self.state, DataState::Quiet);
        match state {
            DataState::Piece => None,
            DataState::Holding(held) if &held[..] == DON => {
                self.state = DataState::Tentative;
                None
            }
            DataState::Holding(held) => Some(DataEvent::Data(held.freeze())),
            DataState::Tentative => {
                self.state = DataState::Ended;
                Some(DataEvent::End { rest: Bytes::new() })
            }
            DataState::Second(held) if &held[..] == DON => {
                // The first DON was the file's content; this one may end it.
                self.state = DataState::Tentative;
                Some(DataEvent::Data(Bytes::from_static(DON)))
            }
            DataState::Second(held) => {
                self.state = DataState::Ended;
                Some(DataEvent::End {
                    rest: held.freeze(),
                })
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The connection ended: the file ended too if its last piece was `DON`.
    pub fn on_eof(&mut self) -> Result<Vec<DataEvent>, HandoutError> {
        let state = std::mem::replace(&mut self.state, DataState::Ended);
        let end = DataEvent::End { rest: Bytes::new() };
        match state {
            DataState::Holding(held) if &held[..] == DON => Ok(vec![end]),
            DataState::Tentative => Ok(vec![end]),
            DataState::Second(held) if &held[..] == DON => {
                Ok(vec![DataEvent::Data(Bytes::from_static(DON)), end])
            }
            DataState::Second(held) => Ok(vec![DataEvent::End {
                rest: held.freeze(),
            }]),
            DataState::Ended => Ok(Vec::new()),
            _ => Err(HandoutError::NoDon),
        }
    }
}

fn is_don_prefix(b: &[u8]) -> bool {
    b.len() <= DON.len() && DON.starts_with(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(50);
    const CONFIRM: Duration = Duration::from_millis(300);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Feeds (time in ms, bytes) arrivals, with timeouts fired at their
    /// deadlines in between, then the end of the stream if `eof`. Returns
    /// (the file, the rest, whether it ended).
    fn run(arrivals: &[(u64, &[u8])], eof: bool) -> (Vec<u8>, Vec<u8>, bool) {
        let t0 = Instant::now();
        let mut f = FileData::new(SETTLE, CONFIRM);
        let mut file = Vec::new();
        let mut rest = Vec::new();
        let mut ended = false;
        let take =
            |evs: Vec<DataEvent>, file: &mut Vec<u8>, rest: &mut Vec<u8>, ended: &mut bool| {
                for ev in evs {
                    match ev {
                        DataEvent::Data(b) => file.extend_from_slice(&b),
                        DataEvent::End { rest: r } => {
                            *ended = true;
                            rest.extend_from_slice(&r);
                        }
                    }
                }
            };
        for &(at, bytes) in arrivals {
            let now = ms(t0, at);
            while let Some(d) = f.deadline().filter(|d| *d <= now) {
                take(
                    f.on_timeout(d).into_iter().collect(),
                    &mut file,
                    &mut rest,
                    &mut ended,
                );
            }
            if f.ended() {
                rest.extend_from_slice(bytes);
                continue;
            }
            take(
                f.on_bytes(now, Bytes::copy_from_slice(bytes)),
                &mut file,
                &mut rest,
                &mut ended,
            );
        }
        if eof {
            if !f.ended() {
                match f.on_eof() {
                    Ok(evs) => take(evs, &mut file, &mut rest, &mut ended),
                    Err(_) => return (file, rest, false),
                }
            }
        } else {
            while let Some(d) = f.deadline() {
                take(
                    f.on_timeout(d).into_iter().collect(),
                    &mut file,
                    &mut rest,
                    &mut ended,
                );
            }
        }
        (file, rest, ended)
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
        let mut q = QuietText::new(SETTLE, 16);
        assert_eq!(q.deadline(), None);
        assert_eq!(q.on_timeout(ms(t0, 1000)), None);
        q.on_bytes(ms(t0, 100), b"repo").unwrap();
        q.on_bytes(ms(t0, 140), b"rt.pdf").unwrap();
        assert_eq!(q.on_timeout(ms(t0, 189)), None);
        assert_eq!(q.deadline(), Some(ms(t0, 190)));
        assert_eq!(q.on_timeout(ms(t0, 190)).unwrap(), &b"report.pdf"[..]);
        let mut q = QuietText::new(SETTLE, 4);
        assert_eq!(
            q.on_bytes(t0, b"toolong"),
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
        let mut d = FileData::new(SETTLE, CONFIRM);
        d.on_bytes(t0, Bytes::from_static(b"DON"));
        assert_eq!(d.on_timeout(ms(t0, 49)), None);
        assert_eq!(d.on_timeout(ms(t0, 50)), None);
        assert_eq!(d.deadline(), Some(ms(t0, 300)));
        assert_eq!(d.on_timeout(ms(t0, 299)), None);
        assert_eq!(
            d.on_timeout(ms(t0, 300)),
            Some(DataEvent::End { rest: Bytes::new() })
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
}
