//! `magic_download` (seed 003, COSC264): a FileRequest record, a FileResponse
//! record and the file's bytes.
//!
//! ```text
//! FileRequest   49 7E | 01 | len:u16 BE (1..=1024) | name (UTF-8, len bytes)
//! FileResponse  49 7E | 02 | status (1 found, 0 not) | length:u32 BE | data (length bytes)
//! ```
//!
//! The assignment: names are UTF-8 of 1..1024 bytes, "a missing file gets
//! StatusCode 0 and DataLength 0, an empty existing file StatusCode 1 and
//! DataLength 0, and a malformed request is answered by closing the connection".
//! The request may arrive in any number of pieces (some clients write the
//! 5-byte header and the name separately). The response's data is streamed
//! after the header: [`ResponseCodec`] yields it in pieces, never whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The magic number of both records.
pub const MAGIC: u16 = 0x497E;
/// Type of a FileRequest.
pub const TYPE_REQUEST: u8 = 1;
/// Type of a FileResponse.
pub const TYPE_RESPONSE: u8 = 2;
/// Longest name ("names are UTF-8 of 1..1024 bytes").
pub const MAX_NAME_LEN: usize = 1024;
/// Bytes of the FileRequest fixed header.
pub const REQUEST_HEADER_LEN: usize = 5;
/// Bytes of the FileResponse fixed header.
pub const RESPONSE_HEADER_LEN: usize = 8;

/// A FileRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    /// The requested name (not yet normalised).
    pub name: String,
}

/// Why a record was refused; the server answers by closing the connection.
#[derive(Debug, thiserror::Error)]
pub enum MagicError {
    /// The first two bytes are not 0x497E.
    #[error("bad magic number 0x{0:04X}, expected 0x497E")]
    BadMagic(u16),
    /// The type byte is wrong for this record.
    #[error("bad record type {0}")]
    BadType(u8),
    /// A name length of 0 or over 1024.
    #[error("bad file name length {0}, expected 1..=1024")]
    BadNameLength(u16),
    /// The name is not UTF-8.
    #[error("the file name is not valid UTF-8")]
    NotUtf8,
    /// A status other than 0 or 1, or status 0 with data.
    #[error("bad status {status} with data length {length}")]
    BadStatus {
        /// The status byte.
        status: u8,
        /// The announced length.
        length: u32,
    },
    /// The connection closed before the record was complete.
    #[error("connection closed after {received} of {expected} bytes")]
    Truncated {
        /// Bytes the record needed.
        expected: u64,
        /// Bytes that came.
        received: u64,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decoder (server) and encoder (client) of FileRequest records.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestCodec;

impl Decoder for RequestCodec {
    type Item = FileRequest;
    type Error = MagicError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<FileRequest>, MagicError> {
        // Check each field as soon as its bytes are here: a wrong magic number
        // is refused at once rather than after waiting for five bytes.
        if let Some(magic) = buf.get(..2) {
            let magic = u16::from_be_bytes([magic[0], magic[1]]);
            if magic != MAGIC {
                return Err(MagicError::BadMagic(magic));
            }
        }
        if let Some(&kind) = buf.get(2) {
            if kind != TYPE_REQUEST {
                return Err(MagicError::BadType(kind));
            }
        }
        let Some(len) = buf.get(3..5) else {
            buf.reserve(REQUEST_HEADER_LEN);
            return Ok(None);
        };
        let len = u16::from_be_bytes([len[0], len[1]]);
        if len == 0 || usize::from(len) > MAX_NAME_LEN {
            return Err(MagicError::BadNameLength(len));
        }
        let total = REQUEST_HEADER_LEN + usize::from(len);
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let name = std::str::from_utf8(&buf[REQUEST_HEADER_LEN..total])
            .map_err(|_| MagicError::NotUtf8)?
            .to_owned();
        buf.advance(total);
        Ok(Some(FileRequest { name }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<FileRequest>, MagicError> {
        match self.decode(buf)? {
            Some(req) => Ok(Some(req)),
            None if buf.is_empty() => Ok(None),
            None => Err(MagicError::Truncated {
                expected: match buf.get(3..5) {
                    Some(l) => {
                        (REQUEST_HEADER_LEN + usize::from(u16::from_be_bytes([l[0], l[1]]))) as u64
                    }
                    None => REQUEST_HEADER_LEN as u64,
                },
                received: buf.len() as u64,
            }),
        }
    }
}

impl Encoder<&FileRequest> for RequestCodec {
    type Error = MagicError;

    fn encode(&mut self, req: &FileRequest, dst: &mut BytesMut) -> Result<(), MagicError> {
        let len = u16::try_from(req.name.len())
            .ok()
            .filter(|&l| l >= 1 && usize::from(l) <= MAX_NAME_LEN)
            .ok_or(MagicError::BadNameLength(
                req.name.len().min(u16::MAX as usize) as u16,
            ))?;
        dst.reserve(REQUEST_HEADER_LEN + req.name.len());
        dst.put_u16(MAGIC);
        dst.put_u8(TYPE_REQUEST);
        dst.put_u16(len);
        dst.put_slice(req.name.as_bytes());
        Ok(())
    }
}

/// The FileResponse status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: no such file (or it cannot be served); length is 0.
    NotFound,
    /// 1: the file follows.
    Found,
}

/// The FileResponse fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Found or not.
    pub status: Status,
    /// Bytes of data that follow.
    pub length: u32,
}

impl ResponseHeader {
    /// "A missing file gets StatusCode 0 and DataLength 0."
    pub const NOT_FOUND: ResponseHeader = ResponseHeader {
        status: Status::NotFound,
        length: 0,
    };

    /// The eight header bytes.
    pub fn to_bytes(self) -> [u8; RESPONSE_HEADER_LEN] {
        let [m0, m1] = MAGIC.to_be_bytes();
        let [l0, l1, l2, l3] = self.length.to_be_bytes();
        let status = match self.status {
            Status::NotFound => 0,
            Status::Found => 1,
        };
        [m0, m1, TYPE_RESPONSE, status, l0, l1, l2, l3]
    }
}

/// What the response decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFrame {
    /// The fixed header (first).
    Header(ResponseHeader),
    /// Some of the data.
    Data(Bytes),
    /// All `length` bytes have arrived.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Header,
    Data { remaining: u32, length: u32 },
    Done,
}

/// Decoder (client) and header encoder (server) of FileResponse records.
#[derive(Debug, Clone)]
pub struct ResponseCodec {
    state: DecodeState,
}

impl Default for ResponseCodec {
    fn default() -> Self {
        Self {
            state: DecodeState::Header,
        }
    }
}

impl Decoder for ResponseCodec {
    type Item = ResponseFrame;
    type Error = MagicError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseFrame>, MagicError> {
        match self.state {
            DecodeState::Header => {
                if let Some(m) = buf.get(..2) {
                    let magic = u16::from_be_bytes([m[0], m[1]]);
                    if magic != MAGIC {
                        return Err(MagicError::BadMagic(magic));
                    }
                }
                if let Some(&kind) = buf.get(2) {
                    if kind != TYPE_RESPONSE {
                        return Err(MagicError::BadType(kind));
                    }
                }
                if buf.len() < RESPONSE_HEADER_LEN {
                    buf.reserve(RESPONSE_HEADER_LEN);
                    return Ok(None);
                }
                buf.advance(3);
                let status = buf.get_u8();
                let length = buf.get_u32();
                let status = match (status, length) {
                    (1, _) => Status::Found,
                    (0, 0) => Status::NotFound,
                    _ => return Err(MagicError::BadStatus { status, length }),
                };
                self.state = DecodeState::Data {
                    remaining: length,
                    length,
                };
                Ok(Some(ResponseFrame::Header(ResponseHeader {
                    status,
                    length,
                })))
            }
            DecodeState::Data { remaining: 0, .. } => {
                self.state = DecodeState::Done;
                Ok(Some(ResponseFrame::End))
            }
            DecodeState::Data { remaining, length } => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = (remaining as usize).min(buf.len());
                self.state = DecodeState::Data {
                    remaining: remaining - take as u32,
                    length,
                };
                Ok(Some(ResponseFrame::Data(buf.split_to(take).freeze())))
            }
            // Bytes after the record: the client reads until the server closes
            // and ignores them; ferry's server never sends any.
            DecodeState::Done => {
                buf.clear();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseFrame>, MagicError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        match self.state {
            DecodeState::Header if buf.is_empty() => Err(MagicError::Truncated {
                expected: RESPONSE_HEADER_LEN as u64,
                received: 0,
            }),
            DecodeState::Header => Err(MagicError::Truncated {
                expected: RESPONSE_HEADER_LEN as u64,
                received: buf.len() as u64,
            }),
            DecodeState::Data { remaining, length } => Err(MagicError::Truncated {
                expected: u64::from(length),
                received: u64::from(length - remaining),
            }),
            DecodeState::Done => Ok(None),
        }
    }
}

impl Encoder<ResponseHeader> for ResponseCodec {
    type Error = MagicError;

    fn encode(&mut self, header: ResponseHeader, dst: &mut BytesMut) -> Result<(), MagicError> {
        dst.extend_from_slice(&header.to_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{decode_all, decode_bytewise, decode_split};

    fn request_bytes(name: &str) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RequestCodec
            .encode(&FileRequest { name: name.into() }, &mut buf)
            .unwrap();
        buf.to_vec()
    }

    #[test]
    fn request_bytes_are_the_assignments() {
        assert_eq!(request_bytes("a.txt"), b"\x49\x7E\x01\x00\x05a.txt");
        let wire = request_bytes("dossier/é.txt");
        for cut in 0..=wire.len() {
            let got = decode_split(&mut RequestCodec, &wire, cut).unwrap();
            assert_eq!(
                got,
                vec![FileRequest {
                    name: "dossier/é.txt".into()
                }],
                "cut {cut}"
            );
        }
        let got = decode_bytewise(&mut RequestCodec, &wire).unwrap();
        assert_eq!(got.len(), 1);
        let max = "x".repeat(MAX_NAME_LEN);
        assert_eq!(
            decode_all(&mut RequestCodec, &request_bytes(&max)).unwrap()[0].name,
            max
        );
    }

    #[test]
    fn malformed_requests() {
        let check = |wire: &[u8], want: &str| {
            let err = decode_all(&mut RequestCodec, wire).unwrap_err().to_string();
            assert!(err.contains(want), "{wire:?}: {err}");
        };
        check(b"\x49\x7F", "bad magic number 0x497F");
        check(b"\x00", "closed after 1 of 5");
        check(b"\x49\x7E\x02", "bad record type 2");
        check(b"\x49\x7E\x01\x00\x00", "bad file name length 0");
        check(b"\x49\x7E\x01\x04\x01", "bad file name length 1025");
        check(b"\x49\x7E\x01\xFF\xFF", "bad file name length 65535");
        check(b"\x49\x7E\x01\x00\x02\xC3\x28", "not valid UTF-8");
        check(b"\x49\x7E\x01\x00\x05ab", "closed after 7 of 10");
        assert!(RequestCodec
            .encode(
                &FileRequest {
                    name: String::new()
                },
                &mut BytesMut::new()
            )
            .is_err());
        assert!(RequestCodec
            .encode(
                &FileRequest {
                    name: "x".repeat(1025)
                },
                &mut BytesMut::new()
            )
            .is_err());
    }

    #[test]
    fn trailing_bytes_stay_in_the_buffer() {
        let mut buf = BytesMut::from(&b"\x49\x7E\x01\x00\x01aEXTRA"[..]);
        assert_eq!(
            RequestCodec.decode(&mut buf).unwrap(),
            Some(FileRequest { name: "a".into() })
        );
        assert_eq!(&buf[..], b"EXTRA");
    }

    fn response_wire(status: Status, data: &[u8]) -> Vec<u8> {
        let mut wire = ResponseHeader {
            status,
            length: data.len() as u32,
        }
        .to_bytes()
        .to_vec();
        wire.extend_from_slice(data);
        wire
    }

    fn collect(frames: Vec<ResponseFrame>) -> (Option<ResponseHeader>, Vec<u8>, bool) {
        let mut header = None;
        let mut data = Vec::new();
        let mut end = false;
        for f in frames {
            match f {
                ResponseFrame::Header(h) => header = Some(h),
                ResponseFrame::Data(b) => data.extend_from_slice(&b),
                ResponseFrame::End => end = true,
            }
        }
        (header, data, end)
    }

    #[test]
    fn responses_round_trip_at_every_split() {
        assert_eq!(
            ResponseHeader::NOT_FOUND.to_bytes(),
            [0x49, 0x7E, 2, 0, 0, 0, 0, 0]
        );
        for (status, data) in [
            (Status::NotFound, &b""[..]),
            (Status::Found, b""),
            (Status::Found, b"hello, world"),
        ] {
            let wire = response_wire(status, data);
            for cut in 0..=wire.len() {
                let (h, d, end) =
                    collect(decode_split(&mut ResponseCodec::default(), &wire, cut).unwrap());
                assert_eq!(
                    h,
                    Some(ResponseHeader {
                        status,
                        length: data.len() as u32
                    })
                );
                assert_eq!(d, data);
                assert!(end);
            }
        }
    }

    #[test]
    fn malformed_responses() {
        let check = |wire: &[u8], want: &str| {
            let err = decode_all(&mut ResponseCodec::default(), wire)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{wire:?}: {err}");
        };
        check(b"\x00\x00", "bad magic");
        check(b"\x49\x7E\x01", "bad record type 1");
        check(b"\x49\x7E\x02\x02\x00\x00\x00\x00", "bad status 2");
        check(
            b"\x49\x7E\x02\x00\x00\x00\x00\x01",
            "bad status 0 with data length 1",
        );
        check(b"\x49\x7E\x02\x01", "closed after 4 of 8");
        check(b"", "closed after 0 of 8");
        check(
            b"\x49\x7E\x02\x01\x00\x00\x00\x05abc",
            "closed after 3 of 5",
        );
    }
}
