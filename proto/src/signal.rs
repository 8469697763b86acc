//! `signal` (seed 004): the nine 3-byte tags, in two dialects.
//!
//! The handout's own client separates its messages by sleeping 0.1 s; that
//! framing is in [`handout`], sans-IO with time as an input. ferry's own
//! dialect, here, gives every variable part a length, so it needs no pauses
//! and carries a CRC-32 both ways. A server tells them apart per request from
//! the bytes after the tag ([`handout::detect`]). All integers are big-endian.
//!
//! | frame | bytes after the tag | meaning |
//! |-------|---------------------|---------|
//! | `PIN` | — | ping; answered by `PON` |
//! | `PON` | — | pong |
//! | `CLS` | — | close *this* connection (never the server) |
//! | `RAF` | `len:u16` path | request a file |
//! | `RAR` | `len:u16` path | request a directory |
//! | `SAF` | `len:u16` name, `size:u64`, `size` data bytes, `crc:u32` | a file (an upload, a RAF answer, or an entry of a tree) |
//! | `SAR` | `len:u16` name | a directory follows as `SAF` entries (relative paths) ended by `DON` |
//! | `DON` | `len:u16` name | end of a tree's entries (client), or "stored as name" (server) |
//! | `ERR` | `len:u16` reason | a refusal, in words |
//!
//! The CRC-32 comes *after* the data so both ends compute it in the same single
//! pass that moves the bytes. ASCII whitespace between frames is skipped, so
//! `printf PIN | nc -q1 host 9005` prints `PON`, and so does typing `PIN` into telnet.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub mod handout;

/// Largest text (name, path or reason) either end will frame, in bytes. It
/// keeps the first length byte at most `0x10`, below every printable
/// character, which is what tells a ferry request from a handout one
/// ([`handout::detect`]).
pub const MAX_TEXT_LEN: usize = 4096;
/// Default cap on a name, path or reason, in bytes (the most allowed).
pub const DEFAULT_MAX_TEXT_LEN: usize = MAX_TEXT_LEN;
/// Bytes of a tag.
pub const TAG_LEN: usize = 3;

/// The nine tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `CLS`: close this connection.
    Cls,
    /// `SAF`: send a file.
    Saf,
    /// `RAF`: request a file.
    Raf,
    /// `SAR`: send a directory ("repo").
    Sar,
    /// `RAR`: request a directory.
    Rar,
    /// `DON`: done.
    Don,
    /// `ERR`: error.
    Err,
    /// `PIN`: ping.
    Pin,
    /// `PON`: pong.
    Pon,
}

impl Tag {
    /// The three bytes on the wire.
    pub fn bytes(self) -> &'static [u8; 3] {
        match self {
            Tag::Cls => b"CLS",
            Tag::Saf => b"SAF",
            Tag::Raf => b"RAF",
            Tag::Sar => b"SAR",
            Tag::Rar => b"RAR",
            Tag::Don => b"DON",
            Tag::Err => b"ERR",
            Tag::Pin => b"PIN",
            Tag::Pon => b"PON",
        }
    }

    /// The tag as text, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Tag::Cls => "CLS",
            Tag::Saf => "SAF",
            Tag::Raf => "RAF",
            Tag::Sar => "SAR",
            Tag::Rar => "RAR",
            Tag::Don => "DON",
            Tag::Err => "ERR",
            Tag::Pin => "PIN",
            Tag::Pon => "PON",
        }
    }

    /// The tag for three bytes, if they are one.
    pub fn from_bytes(b: &[u8]) -> Option<Tag> {
        Some(match b {
            b"CLS" => Tag::Cls,
            b"SAF" => Tag::Saf,
            b"RAF" => Tag::Raf,
            b"SAR" => Tag::Sar,
            b"RAR" => Tag::Rar,
            b"DON" => Tag::Don,
            b"ERR" => Tag::Err,
            b"PIN" => Tag::Pin,
            b"PON" => Tag::Pon,
            _ => return None,
        })
    }
}

/// One decoded frame. A `SAF` arrives as `FileHeader`, any number of `Data`,
/// then `FileEnd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalFrame {
    /// `PIN`.
    Ping,
    /// `PON`.
    Pong,
    /// `CLS`.
    Close,
    /// `DON` with a name.
    Done(String),
    /// `ERR` with a reason.
    Error(String),
    /// `RAF` with a path.
    RequestFile(String),
    /// `RAR` with a path.
    RequestRepo(String),
    /// `SAR` with a directory name.
    SendRepo(String),
    /// The head of a `SAF`: name and size.
    FileHeader {
        /// The file's name (or relative path inside a tree).
        name: String,
        /// Bytes of data that follow.
        size: u64,
    },
    /// Some of a `SAF`'s data.
    Data(Bytes),
    /// The tail of a `SAF`: the CRC-32 of its data.
    FileEnd {
        /// CRC-32/IEEE of the data.
        crc: u32,
    },
}

/// Errors that end the connection (the server sends `ERR` with the text first).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Three bytes that are not one of the nine tags.
    #[error("unknown tag {0:?}")]
    UnknownTag(String),
    /// A text length over the cap.
    #[error("a {tag} text of {len} bytes is over the limit of {max}")]
    TextTooLong {
        /// The frame.
        tag: &'static str,
        /// Announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Text that is not UTF-8.
    #[error("a {0} text is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A `SAF` size over the cap.
    #[error("the file is {size} bytes, the limit is {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A `SAR` without a directory name (never framed: see [`handout::detect`]).
    #[error("a SAR needs a directory name")]
    EmptySar,
    /// The connection closed in the middle of a frame.
    #[error("the connection closed in the middle of a frame ({0} bytes left over)")]
    Truncated(usize),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Frame,
    Data { remaining: u64 },
    Trailer,
}

/// Decoder and encoder of signal frames, for both ends.
#[derive(Debug, Clone)]
pub struct SignalCodec {
    max_text_len: usize,
    max_file_size: u64,
    state: DecodeState,
}

impl Default for SignalCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TEXT_LEN, u64::MAX)
    }
}

impl SignalCodec {
    /// A codec refusing texts over `max_text_len` bytes and files over `max_file_size`.
    pub fn new(max_text_len: usize, max_file_size: u64) -> Self {
        Self {
            max_text_len: max_text_len.min(MAX_TEXT_LEN),
            max_file_size,
            state: DecodeState::Frame,
        }
    }

    fn text(
        &self,
        tag: &'static str,
        buf: &BytesMut,
        at: usize,
    ) -> Result<Option<(String, usize)>, SignalError> {
        let Some(len) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len > self.max_text_len {
            return Err(SignalError::TextTooLong {
                tag,
                len,
                max: self.max_text_len,
            });
        }
        let Some(text) = buf.get(at + 2..at + 2 + len) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(text).map_err(|_| SignalError::NotUtf8(tag))?;
        Ok(Some((text.to_owned(), at + 2 + len)))
    }
}

impl Decoder for SignalCodec {
    type Item = SignalFrame;
    type Error = SignalError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<SignalFrame>, SignalError> {
        match self.state {
            DecodeState::Data { remaining: 0 } => {
                self.state = DecodeState::Trailer;
                self.decode(buf)
            }
            DecodeState::Data { remaining } => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = remaining.min(buf.len() as u64) as usize;
                self.state = DecodeState::Data {
                    remaining: remaining - take as u64,
                };
                Ok(Some(SignalFrame::Data(buf.split_to(take).freeze())))
            }
            DecodeState::Trailer => {
                if buf.len() < 4 {
                    buf.reserve(4);
                    return Ok(None);
                }
                self.state = DecodeState::Frame;
                Ok(Some(SignalFrame::FileEnd { crc: buf.get_u32() }))
            }
            DecodeState::Frame => {
                let blanks = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
                buf.advance(blanks);
                let Some(tag) = buf.get(..TAG_LEN) else {
                    // Fail fast on a first byte that starts no tag.
                    if let Some(&b) = buf.first() {
                        if !b"CSRDEP".contains(&b) {
                            return Err(SignalError::UnknownTag(
                                String::from_utf8_lossy(&buf[..1]).into_owned(),
                            ));
                        }
                    }
                    buf.reserve(TAG_LEN);
                    return Ok(None);
                };
                let tag = Tag::from_bytes(tag).ok_or_else(|| {
                    SignalError::UnknownTag(String::from_utf8_lossy(tag).into_owned())
                })?;
                let (frame, used) = match tag {
                    Tag::Pin => (SignalFrame::Ping, TAG_LEN),
                    Tag::Pon => (SignalFrame::Pong, TAG_LEN),
                    Tag::Cls => (SignalFrame::Close, TAG_LEN),
                    Tag::Saf => {
                        let Some((name, at)) = self.text(tag.label(), buf, TAG_LEN)? else {
                            return Ok(None);
                        };
                        let Some(size) = buf.get(at..at + 8) else {
                            return Ok(None);
                        };
                        let mut raw = [0u8; 8];
                        raw.copy_from_slice(size);
                        let size = u64::from_be_bytes(raw);
                        if size > self.max_file_size {
                            return Err(SignalError::TooLarge {
                                size,
                                max: self.max_file_size,
                            });
                        }
                        self.state = DecodeState::Data { remaining: size };
                        (SignalFrame::FileHeader { name, size }, at + 8)
                    }
                    Tag::Raf | Tag::Rar | Tag::Sar | Tag::Don | Tag::Err => {
                        let Some((text, at)) = self.text(tag.label(), buf, TAG_LEN)? else {
                            return Ok(None);
                        };
                        let frame = match tag {
                            Tag::Raf => SignalFrame::RequestFile(text),
                            Tag::Rar => SignalFrame::RequestRepo(text),
                            Tag::Sar => SignalFrame::SendRepo(text),
                            Tag::Don => SignalFrame::Done(text),
                            _ => SignalFrame::Error(text),
                        };
                        (frame, at)
                    }
                };
                buf.advance(used);
                Ok(Some(frame))
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<SignalFrame>, SignalError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.state != DecodeState::Frame || !buf.is_empty() {
            return Err(SignalError::Truncated(buf.len()));
        }
        Ok(None)
    }
}

fn put_text(dst: &mut BytesMut, tag: Tag, text: &str) -> Result<(), SignalError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(SignalError::TextTooLong {
            tag: tag.label(),
            len: text.len(),
            max: MAX_TEXT_LEN,
        });
    }
    // A `SAR` with an empty name would start `00 00`, the start of a handout
    // `SAR` count: ferry never frames one (the server refuses it anyway).
    if tag == Tag::Sar && text.is_empty() {
        return Err(SignalError::EmptySar);
    }
    let len = text.len() as u16;
    dst.reserve(TAG_LEN + 2 + text.len());
    dst.put_slice(tag.bytes());
    dst.put_u16(len);
    dst.put_slice(text.as_bytes());
    Ok(())
}

impl Encoder<SignalFrame> for SignalCodec {
    type Error = SignalError;

    fn encode(&mut self, frame: SignalFrame, dst: &mut BytesMut) -> Result<(), SignalError> {
        match frame {
            SignalFrame::Ping => dst.put_slice(Tag::Pin.bytes()),
            SignalFrame::Pong => dst.put_slice(Tag::Pon.bytes()),
            SignalFrame::Close => dst.put_slice(Tag::Cls.bytes()),
            SignalFrame::Done(t) => put_text(dst, Tag::Don, &t)?,
            SignalFrame::Error(t) => put_text(dst, Tag::Err, &t)?,
            SignalFrame::RequestFile(t) => put_text(dst, Tag::Raf, &t)?,
            SignalFrame::RequestRepo(t) => put_text(dst, Tag::Rar, &t)?,
            SignalFrame::SendRepo(t) => put_text(dst, Tag::Sar, &t)?,
            SignalFrame::FileHeader { name, size } => {
                put_text(dst, Tag::Saf, &name)?;
                dst.put_u64(size);
            }
            SignalFrame::Data(b) => dst.extend_from_slice(&b),
            SignalFrame::FileEnd { crc } => dst.put_u32(crc),
        }
        Ok(())
    }
}

/// The bytes of one frame (helper for tests and simple writers).
pub fn encode(frame: SignalFrame) -> Result<Vec<u8>, SignalError> {
    let mut buf = BytesMut::new();
    SignalCodec::default().encode(frame, &mut buf)?;
    Ok(buf.to_vec())
}

/// The bytes of a whole `SAF` of in-memory data: header, data, CRC.
pub fn encode_file(name: &str, data: &[u8]) -> Result<Vec<u8>, SignalError> {
    let mut out = encode(SignalFrame::FileHeader {
        name: name.to_owned(),
        size: data.len() as u64,
    })?;
    out.extend_from_slice(data);
    out.extend_from_slice(&crate::crc::checksum(data).to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{decode_all, decode_bytewise, decode_split};

    /// Joins consecutive `Data` frames so splits compare equal.
    fn merged(frames: Vec<SignalFrame>) -> Vec<SignalFrame> {
        let mut out: Vec<SignalFrame> = Vec::new();
        for f in frames {
            if let (SignalFrame::Data(b), Some(SignalFrame::Data(prev))) = (&f, out.last_mut()) {
                let mut joined = prev.to_vec();
                joined.extend_from_slice(b);
                *prev = Bytes::from(joined);
                continue;
            }
            out.push(f);
        }
        out
    }

    fn every_frame() -> Vec<SignalFrame> {
        vec![
            SignalFrame::Ping,
            SignalFrame::Pong,
            SignalFrame::Close,
            SignalFrame::Done("report (1).pdf".into()),
            SignalFrame::Done(String::new()),
            SignalFrame::Error("no such file: x".into()),
            SignalFrame::RequestFile("dir/é.txt".into()),
            SignalFrame::RequestRepo("project".into()),
            SignalFrame::SendRepo("project".into()),
        ]
    }

    #[test]
    fn fixed_points() {
        assert_eq!(encode(SignalFrame::Ping).unwrap(), b"PIN");
        assert_eq!(encode(SignalFrame::Pong).unwrap(), b"PON");
        assert_eq!(
            decode_all(&mut SignalCodec::default(), b"PIN").unwrap(),
            vec![SignalFrame::Ping]
        );
        assert_eq!(
            decode_all(&mut SignalCodec::default(), b"PIN\r\nPIN\n").unwrap(),
            vec![SignalFrame::Ping, SignalFrame::Ping]
        );
        assert_eq!(
            encode(SignalFrame::RequestFile("a".into())).unwrap(),
            b"RAF\x00\x01a"
        );
        assert_eq!(
            encode_file("hi", b"hello").unwrap(),
            b"SAF\x00\x02hi\x00\x00\x00\x00\x00\x00\x00\x05hello\x36\x10\xa6\x86"
        );
    }

    #[test]
    fn every_frame_round_trips_at_every_split() {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for f in every_frame() {
            wire.extend(encode(f.clone()).unwrap());
            want.push(f);
        }
        let data = b"some file data";
        wire.extend(encode_file("a/b.txt", data).unwrap());
        want.push(SignalFrame::FileHeader {
            name: "a/b.txt".into(),
            size: data.len() as u64,
        });
        want.push(SignalFrame::Data(Bytes::from_static(data)));
        want.push(SignalFrame::FileEnd {
            crc: crate::crc::checksum(data),
        });
        wire.extend(encode_file("empty", b"").unwrap());
        want.push(SignalFrame::FileHeader {
            name: "empty".into(),
            size: 0,
        });
        want.push(SignalFrame::FileEnd { crc: 0 });
        for cut in 0..=wire.len() {
            let got = merged(decode_split(&mut SignalCodec::default(), &wire, cut).unwrap());
            assert_eq!(got, want, "cut {cut}");
        }
        assert_eq!(
            merged(decode_bytewise(&mut SignalCodec::default(), &wire).unwrap()),
            want
        );
    }

    #[test]
    fn malformed() {
        let check = |codec: SignalCodec, wire: &[u8], want: &str| {
            let err = decode_all(&mut codec.clone(), wire)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{wire:?}: {err}");
        };
        let d = SignalCodec::default;
        check(d(), b"XYZ", "unknown tag \"XYZ\"");
        check(d(), b"X", "unknown tag \"X\"");
        check(d(), b"PIX", "unknown tag \"PIX\"");
        check(d(), b"pin", "unknown tag");
        check(d(), b"PI", "closed in the middle");
        check(d(), b"RAF\x00", "closed in the middle");
        check(d(), b"RAF\x00\x05ab", "closed in the middle");
        check(d(), b"RAF\x00\x02\xC3\x28", "RAF text is not valid UTF-8");
        check(
            SignalCodec::new(10, 100),
            b"RAF\x00\x0b",
            "RAF text of 11 bytes is over the limit of 10",
        );
        check(
            d(),
            b"ERR\xFF\xFF",
            "ERR text of 65535 bytes is over the limit of 4096",
        );
        check(
            SignalCodec::new(10, 100),
            b"SAF\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x65",
            "the file is 101 bytes, the limit is 100",
        );
        check(
            d(),
            b"SAF\x00\x01a\x80\x00\x00\x00\x00\x00\x00\x00",
            "", // u64::MAX cap accepts 2^63; truncated below
        );
        check(
            d(),
            b"SAF\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x05abc",
            "closed in the middle",
        );
        check(
            d(),
            b"SAF\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00",
            "closed in the middle",
        );
        let at_limit = SignalCodec::new(10, 100);
        let wire = encode(SignalFrame::RequestFile("x".repeat(10))).unwrap();
        assert_eq!(decode_all(&mut at_limit.clone(), &wire).unwrap().len(), 1);
    }
}
