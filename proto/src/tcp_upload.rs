//! `tcp_upload` (seed 002): an 8-byte big-endian size and the file name in
//! one message, `go ahead`, then exactly `size` bytes of data and a close.
//!
//! ```text
//! client → 00 00 00 00 00 00 00 05 'h' 'i' '.' 't' 'x' 't'
//! server → go ahead
//! client → 5 bytes of data, then closes (there is no acknowledgement)
//! ```
//!
//! The name has no length field: "The rest of the bytes should be decoded into
//! a string representing the file name." The client sends nothing more until it
//! reads `go ahead`, so the name is every byte that arrives before the server
//! replies. [`UploadCodec`] therefore yields the header as soon as the size and
//! at least one name byte are buffered, taking *all* buffered bytes as the name:
//! the caller decides when the name has finished arriving (the daemon waits for
//! a short quiet gap, so a name split across reads is joined) and only then
//! calls `decode`.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The server's reply that lets the client send the data.
pub const GO_AHEAD: &[u8] = b"go ahead";

/// Bytes of the size field.
pub const SIZE_LEN: usize = 8;

/// Default longest name, in bytes: the handout server reads the whole header
/// with one `recv(1024)`, so 1024 − 8 is what any handout server can take.
pub const DEFAULT_MAX_NAME_LEN: usize = 1016;

/// The header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadHeader {
    /// Bytes of data that follow `go ahead`.
    pub size: u64,
    /// The name as sent (not yet normalised).
    pub name: String,
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadFrame {
    /// The header (first).
    Header(UploadHeader),
    /// Some of the data, in arrival order, never more than announced.
    Data(Bytes),
    /// All `size` bytes have arrived.
    End,
}

/// Errors that end the connection.
#[derive(Debug, thiserror::Error)]
pub enum TcpUploadError {
    /// The name is longer than the cap.
    #[error("the header is {len} bytes, the limit is {max}")]
    HeaderTooLong {
        /// Bytes buffered.
        len: usize,
        /// Cap on the whole header.
        max: usize,
    },
    /// The name is not UTF-8.
    #[error("the file name is not valid UTF-8")]
    NotUtf8,
    /// The size is above the cap.
    #[error("the file is {size} bytes, the limit is {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The connection closed before the header or all the data arrived.
    #[error("connection closed after {received} of {expected} bytes")]
    Truncated {
        /// Bytes the frame needed.
        expected: u64,
        /// Bytes that came.
        received: u64,
    },
    /// Bytes after the announced data.
    #[error("{0} bytes arrived after the announced size")]
    Trailing(usize),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Header,
    Data { remaining: u64, size: u64 },
    Done,
}

/// Server-side decoder of one upload connection.
#[derive(Debug, Clone)]
pub struct UploadCodec {
    max_name_len: usize,
    max_size: u64,
    state: DecodeState,
}

impl UploadCodec {
    /// A decoder refusing names over `max_name_len` bytes and sizes over `max_size`.
    pub fn new(max_name_len: usize, max_size: u64) -> Self {
        Self {
            max_name_len,
            max_size,
            state: DecodeState::Header,
        }
    }

    /// Checks the bytes buffered so far could still be a header (call after
    /// each read while waiting for the name, to fail fast on an oversize one).
    pub fn check_partial_header(&self, buf: &BytesMut) -> Result<(), TcpUploadError> {
        let max = SIZE_LEN + self.max_name_len;
        if buf.len() > max {
            return Err(TcpUploadError::HeaderTooLong {
                len: buf.len(),
                max,
            });
        }
        Ok(())
    }
}

impl Decoder for UploadCodec {
    type Item = UploadFrame;
    type Error = TcpUploadError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<UploadFrame>, TcpUploadError> {
        match self.state {
            DecodeState::Header => {
                if buf.len() <= SIZE_LEN {
                    buf.reserve(SIZE_LEN + 1 - buf.len());
                    return Ok(None);
                }
                self.check_partial_header(buf)?;
                let size = buf.get_u64();
                let name = std::str::from_utf8(buf)
                    .map_err(|_| TcpUploadError::NotUtf8)?
                    .to_owned();
                buf.clear();
                if size > self.max_size {
                    return Err(TcpUploadError::TooLarge {
                        size,
                        max: self.max_size,
                    });
                }
                self.state = DecodeState::Data {
                    remaining: size,
                    size,
                };
                Ok(Some(UploadFrame::Header(UploadHeader { size, name })))
            }
            DecodeState::Data { remaining: 0, .. } => {
                self.state = DecodeState::Done;
                Ok(Some(UploadFrame::End))
            }
            DecodeState::Data { remaining, size } => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = remaining.min(buf.len() as u64) as usize;
                self.state = DecodeState::Data {
                    remaining: remaining - take as u64,
                    size,
                };
                Ok(Some(UploadFrame::Data(buf.split_to(take).freeze())))
            }
            DecodeState::Done if buf.is_empty() => Ok(None),
            DecodeState::Done => Err(TcpUploadError::Trailing(buf.len())),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<UploadFrame>, TcpUploadError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        match self.state {
            DecodeState::Header => Err(TcpUploadError::Truncated {
                expected: SIZE_LEN as u64 + 1,
                received: buf.len() as u64,
            }),
            DecodeState::Data { remaining, size } => Err(TcpUploadError::Truncated {
                expected: size,
                received: size - remaining,
            }),
            DecodeState::Done => Ok(None),
        }
    }
}

/// Client-side encoder of the header (the data is written as raw bytes).
impl Encoder<&UploadHeader> for UploadCodec {
    type Error = TcpUploadError;

    fn encode(&mut self, header: &UploadHeader, dst: &mut BytesMut) -> Result<(), TcpUploadError> {
        dst.extend_from_slice(&encode_header(header.size, &header.name));
        Ok(())
    }
}

/// The header bytes: `size.to_bytes(8, 'big') + name.encode()`.
pub fn encode_header(size: u64, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIZE_LEN + name.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// A reply that is not `go ahead`: `ERROR: <reason>` (the handout client
/// raises "Bad server response - was not go ahead!", ferry's client shows the reason).
pub fn encode_error(reason: &str) -> Vec<u8> {
    crate::udp_upload::encode_error(reason)
}

/// What ferryd sends after the data once the file is durable: `STORED: `
/// and the stored name. The handout protocol has no acknowledgement and its
/// client reads nothing after `go ahead`; ferry's client reads this, so a
/// server that died before storing is never taken for a stored file.
pub const STORED_PREFIX: &[u8] = b"STORED: ";

/// The confirmation for a file stored as `name`.
pub fn encode_stored(name: &str) -> Vec<u8> {
    let mut out = STORED_PREFIX.to_vec();
    out.extend_from_slice(name.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::decode_all;

    #[test]
    fn stored_confirmation() {
        assert_eq!(encode_stored("notes (2).txt"), b"STORED: notes (2).txt");
    }

    fn codec() -> UploadCodec {
        UploadCodec::new(DEFAULT_MAX_NAME_LEN, 1 << 40)
    }

    #[test]
    fn header_then_data_then_end() {
        let mut wire = encode_header(5, "files/hi.txt");
        assert_eq!(&wire[..8], &[0, 0, 0, 0, 0, 0, 0, 5]);
        let mut c = codec();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(UploadFrame::Header(UploadHeader {
                size: 5,
                name: "files/hi.txt".into()
            }))
        );
        wire = b"hello".to_vec();
        let frames = decode_all(&mut c, &wire).unwrap();
        let data: Vec<u8> = frames
            .iter()
            .filter_map(|f| match f {
                UploadFrame::Data(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(data, b"hello");
        assert_eq!(frames.last(), Some(&UploadFrame::End));
    }

    #[test]
    fn data_split_at_every_boundary_decodes_the_same() {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        for cut in 0..=data.len() {
            let mut c = codec();
            let mut buf = BytesMut::from(&encode_header(300, "x")[..]);
            assert!(matches!(
                c.decode(&mut buf),
                Ok(Some(UploadFrame::Header(_)))
            ));
            let mut got = Vec::new();
            for part in [&data[..cut], &data[cut..]] {
                buf.extend_from_slice(part);
                while let Some(f) = c.decode(&mut buf).unwrap() {
                    match f {
                        UploadFrame::Data(b) => got.extend_from_slice(&b),
                        UploadFrame::End => got.push(0xEE),
                        UploadFrame::Header(_) => unreachable!(),
                    }
                }
            }
            let mut want = data.clone();
            want.push(0xEE);
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn header_needs_size_and_one_name_byte() {
        let wire = encode_header(1, "n");
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(codec().decode(&mut buf).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn zero_size_is_header_then_end() {
        let frames = decode_all(&mut codec(), &encode_header(0, "empty")).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], UploadFrame::End);
    }

    #[test]
    fn malformed() {
        let long = encode_header(1, &"a".repeat(DEFAULT_MAX_NAME_LEN + 1));
        assert!(matches!(
            codec().decode(&mut BytesMut::from(&long[..])),
            Err(TcpUploadError::HeaderTooLong {
                len: 1025,
                max: 1024
            })
        ));
        let max = encode_header(1, &"a".repeat(DEFAULT_MAX_NAME_LEN));
        assert!(codec().decode(&mut BytesMut::from(&max[..])).is_ok());
        let mut bad = encode_header(1, "");
        bad.push(0xFF);
        assert!(matches!(
            codec().decode(&mut BytesMut::from(&bad[..])),
            Err(TcpUploadError::NotUtf8)
        ));
        let huge = encode_header(1 << 63, "big");
        assert!(matches!(
            codec().decode(&mut BytesMut::from(&huge[..])),
            Err(TcpUploadError::TooLarge {
                size: 9223372036854775808,
                ..
            })
        ));
        // Cut short: in the header, and in the data.
        let mut c = codec();
        assert!(matches!(
            c.decode_eof(&mut BytesMut::from(&[0u8; 4][..])),
            Err(TcpUploadError::Truncated {
                expected: 9,
                received: 4
            })
        ));
        let mut c = codec();
        let mut buf = BytesMut::from(&encode_header(10, "x")[..]);
        c.decode(&mut buf).unwrap();
        buf.extend_from_slice(b"abc");
        assert!(matches!(c.decode(&mut buf), Ok(Some(UploadFrame::Data(_)))));
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(TcpUploadError::Truncated {
                expected: 10,
                received: 3
            })
        ));
        // Trailing bytes after the data.
        let mut wire = encode_header(2, "x");
        let mut c = codec();
        let mut buf = BytesMut::from(&wire[..]);
        c.decode(&mut buf).unwrap();
        wire = b"abXYZ".to_vec();
        assert!(matches!(
            decode_all(&mut c, &wire),
            Err(TcpUploadError::Trailing(3))
        ));
    }
}
