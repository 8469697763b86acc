//! `udp_download` (seed 001 §4): a file name in one datagram, the file back in
//! 2048-byte chunks.
//!
//! "The server sends the file in 2048 bytes chunks. … End of file is detected
//! when the size of the chunk is less than 2048." So every file ends with a
//! short chunk, and a file whose size is a multiple of 2048 (including the
//! empty file) ends with an empty datagram.
//!
//! The lab protocol cannot tell a lost chunk from the end of the file. ferry
//! adds one request the lab clients never send, `STAT`, which starts with a NUL
//! byte (no lab file name can), so ferry's client can check size and CRC-32.
//!
//! ```text
//! client → report.pdf                      server → 2048 bytes, 2048 bytes, …, <2048 bytes
//! client → \0STAT report.pdf               server → \0STAT 65066 97F6DB4F
//! (missing file, bad name, refused)        server → ERROR: <reason>
//! ```

use crate::crc::{format_hex, parse_hex};

/// Size of every chunk but the last (the lab's 2048).
pub const CHUNK_SIZE: usize = 2048;

/// Prefix of ferry's `STAT` request and reply.
pub const STAT_PREFIX: &[u8] = b"\0STAT ";

/// Default cap on a request datagram, in bytes.
pub const DEFAULT_MAX_REQUEST_LEN: usize = 1024 + STAT_PREFIX.len();

/// A request datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The lab request: send me this file.
    File(String),
    /// ferry's request: tell me this file's size and CRC-32.
    Stat(String),
}

/// Why a download datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpDownloadError {
    /// Longer than the cap.
    #[error("request is {len} bytes, the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not UTF-8.
    #[error("the file name is not valid UTF-8")]
    NotUtf8,
    /// An empty request.
    #[error("the file name is empty")]
    Empty,
    /// A chunk longer than 2048 bytes (client side).
    #[error("a chunk of {0} bytes is longer than 2048")]
    ChunkTooLong(usize),
    /// A malformed `STAT` reply (client side).
    #[error("bad STAT reply")]
    BadStat,
}

/// Parses a request. One trailing `\n` or `\r\n` is dropped (a name typed into
/// `nc -u` ends with one); nothing else is changed.
pub fn parse_request(datagram: &[u8], max_len: usize) -> Result<Request, UdpDownloadError> {
    if datagram.len() > max_len {
        return Err(UdpDownloadError::TooLong {
            len: datagram.len(),
            max: max_len,
        });
    }
    let (stat, rest) = match datagram.strip_prefix(STAT_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, datagram),
    };
    let rest = rest
        .strip_suffix(b"\r\n")
        .or_else(|| rest.strip_suffix(b"\n"))
        .unwrap_or(rest);
    if rest.is_empty() {
        return Err(UdpDownloadError::Empty);
    }
    let name = std::str::from_utf8(rest)
        .map_err(|_| UdpDownloadError::NotUtf8)?
        .to_owned();
    Ok(if stat {
        Request::Stat(name)
    } else {
        Request::File(name)
    })
}

/// Encodes a request.
pub fn encode_request(request: &Request) -> Vec<u8> {
    match request {
        Request::File(name) => name.as_bytes().to_vec(),
        Request::Stat(name) => [STAT_PREFIX, name.as_bytes()].concat(),
    }
}

/// Number of datagrams a file of `size` bytes takes, the final short one included.
pub fn chunk_count(size: u64) -> u64 {
    size / CHUNK_SIZE as u64 + 1
}

/// Length of chunk `index` of a file of `size` bytes, or `None` past the end.
pub fn chunk_len(size: u64, index: u64) -> Option<usize> {
    let start = index.checked_mul(CHUNK_SIZE as u64)?;
    if index >= chunk_count(size) {
        return None;
    }
    // start <= size here, and the difference is below 2048 when it is the last chunk.
    Some(size.saturating_sub(start).min(CHUNK_SIZE as u64) as usize)
}

/// The lab's end rule: a chunk shorter than 2048 bytes is the last one.
pub fn is_last_chunk(len: usize) -> bool {
    len < CHUNK_SIZE
}

/// The `STAT` reply: `\0STAT <size> <CRC as %08X>`.
pub fn encode_stat_reply(size: u64, crc: u32) -> Vec<u8> {
    [
        STAT_PREFIX,
        format!("{size} {}", format_hex(crc)).as_bytes(),
    ]
    .concat()
}

/// Parses a `STAT` reply (client side) into size and CRC.
pub fn parse_stat_reply(datagram: &[u8]) -> Result<(u64, u32), UdpDownloadError> {
    let rest = datagram
        .strip_prefix(STAT_PREFIX)
        .ok_or(UdpDownloadError::BadStat)?;
    let text = std::str::from_utf8(rest).map_err(|_| UdpDownloadError::BadStat)?;
    let (size, crc) = text.split_once(' ').ok_or(UdpDownloadError::BadStat)?;
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UdpDownloadError::BadStat);
    }
    let size = size.parse().map_err(|_| UdpDownloadError::BadStat)?;
    let crc = parse_hex(crc).ok_or(UdpDownloadError::BadStat)?;
    Ok((size, crc))
}

/// An error reply: `ERROR: <reason>` (always shorter than a chunk, so a lab
/// client stops at it; ferry's client tells it from data with `STAT`).
pub fn encode_error(reason: &str) -> Vec<u8> {
    crate::udp_upload::encode_error(reason)
}

/// Receiving side of a download, sans-IO: counts chunks and says when the
/// final one came.
#[derive(Debug, Clone, Default)]
pub struct Assembler {
    received: u64,
    done: bool,
}

impl Assembler {
    /// A fresh download.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one chunk; `Ok(true)` when it was the last one.
    pub fn accept(&mut self, chunk: &[u8]) -> Result<bool, UdpDownloadError> {
        if chunk.len() > CHUNK_SIZE {
            return Err(UdpDownloadError::ChunkTooLong(chunk.len()));
        }
        self.received = self.received.saturating_add(chunk.len() as u64);
        self.done = is_last_chunk(chunk.len());
        Ok(self.done)
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the final short chunk has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for req in [
            Request::File("report.pdf".into()),
            Request::Stat("dir/report.pdf".into()),
        ] {
            assert_eq!(parse_request(&encode_request(&req), 1030), Ok(req));
        }
        assert_eq!(
            parse_request(b"a.txt\n", 100),
            Ok(Request::File("a.txt".into()))
        );
        assert_eq!(
            parse_request(b"a.txt\r\n", 100),
            Ok(Request::File("a.txt".into()))
        );
        assert_eq!(parse_request(b"", 100), Err(UdpDownloadError::Empty));
        assert_eq!(parse_request(b"\n", 100), Err(UdpDownloadError::Empty));
        assert_eq!(parse_request(b"\0STAT ", 100), Err(UdpDownloadError::Empty));
        assert_eq!(parse_request(b"\xff", 100), Err(UdpDownloadError::NotUtf8));
        assert_eq!(
            parse_request(b"abcdef", 5),
            Err(UdpDownloadError::TooLong { len: 6, max: 5 })
        );
    }

    #[test]
    fn chunking_follows_the_end_rule() {
        // (size, chunk lengths)
        let cases: &[(u64, &[usize])] = &[
            (0, &[0]),
            (1, &[1]),
            (2047, &[2047]),
            (2048, &[2048, 0]),
            (2049, &[2048, 1]),
            (4096, &[2048, 2048, 0]),
        ];
        for &(size, lens) in cases {
            assert_eq!(chunk_count(size), lens.len() as u64, "size {size}");
            let got: Vec<usize> = (0..).map_while(|i| chunk_len(size, i)).collect();
            assert_eq!(got, lens, "size {size}");
            let mut asm = Assembler::new();
            for (i, &len) in lens.iter().enumerate() {
                let last = asm.accept(&vec![0; len]).unwrap();
                assert_eq!(last, i + 1 == lens.len());
            }
            assert_eq!(asm.received(), size);
        }
        assert_eq!(chunk_len(u64::MAX, u64::MAX), None);
        assert_eq!(
            Assembler::new().accept(&[0; 2049]),
            Err(UdpDownloadError::ChunkTooLong(2049))
        );
    }

    #[test]
    fn stat_replies() {
        let r = encode_stat_reply(65066, 0x97F6DB4F);
        assert_eq!(r, b"\0STAT 65066 97F6DB4F");
        assert_eq!(parse_stat_reply(&r), Ok((65066, 0x97F6DB4F)));
        for bad in [
            &b"STAT 1 00000000"[..],
            b"\0STAT 1",
            b"\0STAT -1 00000000",
            b"\0STAT 1 0000000",
            b"\0STAT 99999999999999999999 00000000",
        ] {
            assert_eq!(
                parse_stat_reply(bad),
                Err(UdpDownloadError::BadStat),
                "{bad:?}"
            );
        }
    }
}
