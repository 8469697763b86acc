//! `udp_upload` (seed 000): a JSON `file_info`, the server's buffer size, the
//! file in datagrams, then `OK`.
//!
//! ```text
//! client → {"checksum": "97F6DB4F", "name": "x.jpg", "size": 65066}
//! server → 1452                      (decimal text: the buffer size)
//! client → data ... data             (at most buffer-size bytes each)
//! server → OK                        (or "ERROR: <reason>", or nothing)
//! ```
//!
//! One datagram is one message. [`UploadProgress`] is the sans-IO state of one
//! upload: the daemon feeds it each data datagram and it says when the file is
//! complete and whether the CRC-32 matches.

use serde::Deserialize;

use crate::crc::{format_hex, parse_hex, Crc32};

/// The acknowledgement: "If the message is received, then it means the file was sent correctly."
pub const OK: &[u8] = b"OK";

/// Default cap on a `file_info` datagram, in bytes (JSON escapes can make a
/// 1024-byte name up to six times longer; 8 KiB covers every honest header).
pub const DEFAULT_MAX_HEADER_LEN: usize = 8192;

/// Largest payload of one UDP datagram over IPv4 (65535 − 20 − 8).
pub const MAX_DATAGRAM: usize = 65_507;

/// Longest error reply sent, in bytes: replies stay small, so the service
/// cannot be used to amplify traffic.
pub const MAX_ERROR_REPLY: usize = 256;

/// The parsed `file_info`: `{'checksum': '97F6DB4F', 'size': 65066, 'name': 'some_image.jpg'}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// CRC-32/IEEE of the whole file.
    pub checksum: u32,
    /// The name as sent (not yet normalised).
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
}

/// Why a datagram of this protocol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpUploadError {
    /// The header datagram is longer than the cap.
    #[error("file_info is {len} bytes, the limit is {max}")]
    HeaderTooLong {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not a JSON object with the three keys of the right types.
    #[error("bad file_info: {0}")]
    BadJson(String),
    /// The checksum is not eight hex digits.
    #[error("bad checksum {0:?}: expected 8 hex digits as \"%08X\" prints them")]
    BadChecksum(String),
    /// The buffer-size reply is not a decimal number in 1..=65507.
    #[error("bad buffer size reply")]
    BadBufferSize,
    /// More data arrived than `size` announced.
    #[error("received more than the announced {size} bytes")]
    TooMuchData {
        /// The announced size.
        size: u64,
    },
    /// All bytes arrived but their CRC differs from the announced one.
    #[error("checksum mismatch: file_info says {}, the data has {}", format_hex(*.expected), format_hex(*.actual))]
    ChecksumMismatch {
        /// The announced CRC.
        expected: u32,
        /// The CRC of the received bytes.
        actual: u32,
    },
}

#[derive(Deserialize)]
struct RawFileInfo {
    checksum: String,
    name: String,
    size: u64,
}

/// True when a datagram could be meant as a `file_info` (its first non-blank byte is `{`).
pub fn looks_like_file_info(datagram: &[u8]) -> bool {
    datagram
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// Parses a `file_info` datagram: any key order, any JSON whitespace (Python's
/// default separators included), extra keys ignored, duplicate keys refused.
pub fn parse_file_info(datagram: &[u8], max_len: usize) -> Result<FileInfo, UdpUploadError> {
    if datagram.len() > max_len {
        return Err(UdpUploadError::HeaderTooLong {
            len: datagram.len(),
            max: max_len,
        });
    }
    if !looks_like_file_info(datagram) {
        return Err(UdpUploadError::BadJson("expected a JSON object".into()));
    }
    let raw: RawFileInfo =
        serde_json::from_slice(datagram).map_err(|e| UdpUploadError::BadJson(e.to_string()))?;
    let checksum = parse_hex(&raw.checksum).ok_or(UdpUploadError::BadChecksum(raw.checksum))?;
    Ok(FileInfo {
        checksum,
        name: raw.name,
        size: raw.size,
    })
}

/// Encodes a `file_info` exactly as Python's `json.dumps` does with default
/// arguments: `{"checksum": "…", "name": "…", "size": N}`, non-ASCII escaped.
pub fn encode_file_info(info: &FileInfo) -> Vec<u8> {
    let mut out = String::with_capacity(48 + info.name.len());
    out.push_str("{\"checksum\": \"");
    out.push_str(&format_hex(info.checksum));
    out.push_str("\", \"name\": ");
    push_python_json_string(&mut out, &info.name);
    out.push_str(", \"size\": ");
    out.push_str(&info.size.to_string());
    out.push('}');
    out.into_bytes()
}

/// Python `json.dumps` string escaping with `ensure_ascii=True`.
fn push_python_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// The server's buffer-size reply: "The server sends a string representation of its buffer_size."
pub fn encode_buffer_size(size: usize) -> Vec<u8> {
    size.to_string().into_bytes()
}

/// Parses the buffer-size reply (client side): decimal digits, 1..=65507.
pub fn parse_buffer_size(datagram: &[u8]) -> Result<usize, UdpUploadError> {
    let text = std::str::from_utf8(datagram).map_err(|_| UdpUploadError::BadBufferSize)?;
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UdpUploadError::BadBufferSize);
    }
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_DATAGRAM).contains(&n) => Ok(n),
        _ => Err(UdpUploadError::BadBufferSize),
    }
}

/// An error reply: `ERROR: <reason>`, cut to [`MAX_ERROR_REPLY`] bytes on a
/// character boundary. The lab: "if there is any exception … catch it and send
/// it to the client"; a handout client treats anything but `OK` as "try again".
pub fn encode_error(reason: &str) -> Vec<u8> {
    let mut text = format!("ERROR: {reason}");
    if text.len() > MAX_ERROR_REPLY {
        let mut cut = MAX_ERROR_REPLY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text.into_bytes()
}

/// A server reply as a client sees it after sending the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK`: stored.
    Ok,
    /// `ERROR: …`: the reason.
    Error(String),
    /// Anything else (the lab: "anything but OK means try again").
    Other,
}

/// Classifies a reply datagram.
pub fn parse_reply(datagram: &[u8]) -> Reply {
    if datagram == OK {
        return Reply::Ok;
    }
    match datagram.strip_prefix(b"ERROR: ") {
        Some(reason) => Reply::Error(String::from_utf8_lossy(reason).into_owned()),
        None => Reply::Other,
    }
}

/// What one data datagram did to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are expected.
    NeedMore {
        /// Bytes still to come.
        remaining: u64,
    },
    /// Every byte arrived and the CRC matches.
    Complete,
}

/// The sans-IO state of one upload: bytes counted and CRC-32 computed as the
/// datagrams arrive.
#[derive(Debug, Clone)]
pub struct UploadProgress {
    size: u64,
    checksum: u32,
    received: u64,
    crc: Crc32,
}

impl UploadProgress {
    /// Starts an upload of `info.size` bytes expected to have `info.checksum`.
    pub fn new(info: &FileInfo) -> Self {
        Self {
            size: info.size,
            checksum: info.checksum,
            received: 0,
            crc: Crc32::new(),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The CRC of the bytes received so far.
    pub fn crc(&self) -> u32 {
        self.crc.value()
    }

    /// The current state without new data (a zero-byte file is complete at once).
    pub fn status(&self) -> Result<Progress, UdpUploadError> {
        if self.received < self.size {
            return Ok(Progress::NeedMore {
                remaining: self.size - self.received,
            });
        }
        let actual = self.crc.value();
        if actual != self.checksum {
            return Err(UdpUploadError::ChecksumMismatch {
                expected: self.checksum,
                actual,
            });
        }
        Ok(Progress::Complete)
    }

    /// Takes one data datagram. Refuses data beyond the announced size without
    /// counting it, so the caller can report and drop the upload.
    pub fn accept(&mut self, chunk: &[u8]) -> Result<Progress, UdpUploadError> {
        let total = self
            .received
            .checked_add(chunk.len() as u64)
            .filter(|&t| t <= self.size)
            .ok_or(UdpUploadError::TooMuchData { size: self.size })?;
        self.crc.update(chunk);
        self.received = total;
        self.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::checksum;

    const PY: &[u8] = br#"{"checksum": "97F6DB4F", "name": "some_image.jpg", "size": 65066}"#;

    #[test]
    fn parses_python_json_dumps() {
        let info = parse_file_info(PY, DEFAULT_MAX_HEADER_LEN).unwrap();
        assert_eq!(
            info,
            FileInfo {
                checksum: 0x97F6DB4F,
                name: "some_image.jpg".into(),
                size: 65066
            }
        );
    }

    #[test]
    fn any_key_order_and_spacing() {
        for text in [
            r#"{"size":65066,"name":"some_image.jpg","checksum":"97F6DB4F"}"#,
            "{\n  \"name\" : \"some_image.jpg\",\n  \"size\" : 65066 , \"checksum\":\"97f6db4f\"}\n",
            r#"{"checksum": "97F6DB4F", "name": "some_image.jpg", "size": 65066, "extra": [1]}"#,
        ] {
            let info = parse_file_info(text.as_bytes(), DEFAULT_MAX_HEADER_LEN).unwrap();
            assert_eq!(info.size, 65066);
            assert_eq!(info.checksum, 0x97F6DB4F);
        }
    }

    #[test]
    fn encode_matches_python_byte_for_byte() {
        let info = parse_file_info(PY, DEFAULT_MAX_HEADER_LEN).unwrap();
        assert_eq!(encode_file_info(&info), PY);
        // python3 -c 'import json; print(json.dumps({"checksum": "00000000", "name": "é\"\\\n😀", "size": 0}))'
        let odd = FileInfo {
            checksum: 0,
            name: "é\"\\\n😀".into(),
            size: 0,
        };
        assert_eq!(
            encode_file_info(&odd),
            br#"{"checksum": "00000000", "name": "\u00e9\"\\\n\ud83d\ude00", "size": 0}"#
        );
        assert_eq!(parse_file_info(&encode_file_info(&odd), 8192).unwrap(), odd);
    }

    #[test]
    fn malformed_headers() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "expected a JSON object"),
            (b"{", "EOF"),
            (b"not json", "expected a JSON object"),
            (br#"["97F6DB4F", "a", 1]"#, "expected a JSON object"),
            (
                br#"{"checksum": "97F6DB4F", "name": "a"}"#,
                "missing field `size`",
            ),
            (
                br#"{"checksum": "97F6DB4F", "name": "a", "size": -1}"#,
                "invalid value",
            ),
            (
                br#"{"checksum": "97F6DB4F", "name": "a", "size": 1.5}"#,
                "invalid type",
            ),
            (
                br#"{"checksum": "97F6DB4F", "name": "a", "size": 18446744073709551616}"#,
                "invalid",
            ),
            (
                br#"{"checksum": "97F6DB4F", "name": "a", "size": "5"}"#,
                "invalid type",
            ),
            (
                br#"{"checksum": "97F6DB4F", "name": 5, "size": 5}"#,
                "invalid type",
            ),
            (
                br#"{"checksum": "1", "name": "a", "size": 1, "size": 2}"#,
                "duplicate field",
            ),
            (
                b"{\"checksum\": \"97F6DB4F\", \"name\": \"\xff\", \"size\": 1}",
                "invalid unicode",
            ),
            (
                br#"{"checksum": "97F6DB4F", "name": "a", "size": 1} x"#,
                "trailing characters",
            ),
        ];
        for (bytes, want) in cases {
            match parse_file_info(bytes, DEFAULT_MAX_HEADER_LEN) {
                Err(UdpUploadError::BadJson(msg)) => {
                    assert!(
                        msg.contains(want),
                        "{:?}: {msg}",
                        String::from_utf8_lossy(bytes)
                    )
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
            }
        }
        let bad_crc = br#"{"checksum": "97F6DB4", "name": "a", "size": 1}"#;
        assert_eq!(
            parse_file_info(bad_crc, 8192),
            Err(UdpUploadError::BadChecksum("97F6DB4".into()))
        );
        assert_eq!(
            parse_file_info(PY, 10),
            Err(UdpUploadError::HeaderTooLong {
                len: PY.len(),
                max: 10
            })
        );
    }

    #[test]
    fn buffer_size_and_replies() {
        assert_eq!(encode_buffer_size(1452), b"1452");
        assert_eq!(parse_buffer_size(b"1452"), Ok(1452));
        assert_eq!(parse_buffer_size(b" 100\n"), Ok(100));
        for bad in [&b""[..], b"0", b"-1", b"65508", b"1e3", b"OK", b"\xff"] {
            assert_eq!(
                parse_buffer_size(bad),
                Err(UdpUploadError::BadBufferSize),
                "{bad:?}"
            );
        }
        assert_eq!(parse_reply(b"OK"), Reply::Ok);
        assert_eq!(parse_reply(b"OK\n"), Reply::Other);
        assert_eq!(
            parse_reply(&encode_error("disk full")),
            Reply::Error("disk full".into())
        );
        let long = encode_error(&"é".repeat(500));
        assert!(long.len() <= MAX_ERROR_REPLY && std::str::from_utf8(&long).is_ok());
    }

    #[test]
    fn progress_counts_and_checks_crc() {
        let data = b"hello world, this is a file";
        let info = FileInfo {
            checksum: checksum(data),
            name: "f".into(),
            size: data.len() as u64,
        };
        let mut p = UploadProgress::new(&info);
        assert_eq!(
            p.accept(&data[..10]),
            Ok(Progress::NeedMore { remaining: 17 })
        );
        assert_eq!(p.accept(&data[10..]), Ok(Progress::Complete));

        let mut p = UploadProgress::new(&info);
        assert_eq!(
            p.accept(&[0u8; 28]),
            Err(UdpUploadError::TooMuchData { size: 27 })
        );
        assert_eq!(p.received(), 0);

        let mut p = UploadProgress::new(&FileInfo {
            checksum: 1,
            ..info.clone()
        });
        assert!(matches!(
            p.accept(data),
            Err(UdpUploadError::ChecksumMismatch { expected: 1, .. })
        ));

        let empty = FileInfo {
            checksum: 0,
            name: "e".into(),
            size: 0,
        };
        assert_eq!(UploadProgress::new(&empty).status(), Ok(Progress::Complete));
    }
}
