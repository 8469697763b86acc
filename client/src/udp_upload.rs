//! `udp_upload` with the lab's retry rule: send `file_info`, wait for the
//! buffer size, send the file in datagrams of that size, wait for `OK`;
//! anything else, or silence, and it starts again from `file_info` on a new
//! socket, at most `udp_attempts` times.

use ferry_config::ServiceId;
use std::path::Path;

use crate::{Client, Error, Progress, Result, Sent};
use ferry_proto::udp_upload::{encode_file_info, parse_buffer_size, parse_reply, FileInfo, Reply};

/// How one attempt ended, when it did not end the upload.
enum Attempt {
    /// `OK`: stored.
    Ok,
    /// An `ERROR` after the data, with its reason.
    Error(String),
    /// Silence or something else: why, for the next try.
    Retry(String),
    /// The data went out and no `OK` came: most likely datagrams were lost
    /// on the way or at the server. `took` is the whole attempt, the wait
    /// for `OK` included: the rate it gives is what the next attempt halves,
    /// and halving the sending rate alone was measured too fast for a
    /// default kernel's 4 MiB receive buffer (docs/BENCHMARKS.md).
    Lost {
        why: String,
        bytes: u64,
        took: std::time::Duration,
    },
}

/// The slowest pace a retry falls to: 1 MiB/s.
const MIN_RATE: u64 = 1 << 20;

/// How fast each attempt of a UDP upload sends (sans-IO): as asked first
/// (`--rate`, or unpaced); after an attempt whose data went out and was not
/// confirmed, half the rate that attempt reached (the lab protocol has no
/// flow control, and a server or a kernel that dropped datagrams at that
/// rate will drop them again), never below [`MIN_RATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    rate: Option<u64>,
}

impl Backoff {
    pub(crate) fn new(rate: Option<u64>) -> Backoff {
        Backoff {
            rate: rate.filter(|&r| r > 0),
        }
    }

    /// Bytes per second for the next attempt (`None`: unpaced).
    pub(crate) fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// An attempt sent `bytes` in `took` and was not confirmed: the next
    /// is slower. Returns the new rate.
    pub(crate) fn lost(&mut self, bytes: u64, took: std::time::Duration) -> u64 {
        let secs = took.as_secs_f64().max(1e-3);
        let reached = (bytes as f64 / secs) as u64;
        let base = self.rate.map_or(reached, |r| r.min(reached));
        let next = (base / 2).max(MIN_RATE);
        self.rate = Some(next);
        next
    }
}

pub(crate) async fn send(
    client: &Client,
    path: &Path,
    name: &str,
    progress: &dyn Progress,
) -> Result<Sent> {
    let (crc, size) = checksum(path).await?;
    let info = FileInfo {
        checksum: crc,
        name: name.to_owned(),
        size,
    };
    let mut last = String::from("no reply");
    // The same ERROR after two complete attempts is the server's answer, not
    // a lost datagram: a refusal (exit 4), not a time-out.
    let mut refusal: Option<String> = None;
    let attempts = client.udp_attempts.max(1);
    let mut pace = Backoff::new(client.upload_rate);
    progress.start(name, Some(size));
    for attempt in 1..=attempts {
        if attempt > 1 {
            progress.retry(attempt, attempts, &last);
            progress.restart();
        }
        match attempt_once(client, path, &info, pace.rate(), progress).await {
            Ok(Attempt::Ok) => {
                progress.finish();
                return Ok(Sent {
                    stored_as: None,
                    bytes: size,
                    crc,
                    attempts: attempt,
                });
            }
            Ok(Attempt::Error(reason)) => {
                if refusal.as_deref() == Some(reason.as_str()) {
                    progress.finish();
                    return Err(Error::Refused(reason.into()));
                }
                refusal = Some(reason.clone());
                last = reason;
            }
            Ok(Attempt::Retry(why)) => last = why,
            Ok(Attempt::Lost { why, bytes, took }) => {
                let next = pace.lost(bytes, took);
                last = format!(
                    "{why}; sending slower this time, at {:.1} MiB/s",
                    next as f64 / f64::from(1u32 << 20)
                );
            }
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
    }
    progress.finish();
    if let Some(reason) = refusal.filter(|r| *r == last) {
        return Err(Error::Refused(reason.into()));
    }
    Err(Error::Timeout(format!("after {attempts} attempts: {last}")))
}

/// Pieces of the file read ahead of the sends: about this many bytes each
/// (a whole number of datagrams), at most [`READ_AHEAD`] of them queued.
const PIECE: usize = 1 << 20;
const READ_AHEAD: usize = 4;

/// One pass over the file for the CRC-32 and size the header needs, on a
/// blocking thread in 1 MiB reads (not one blocking-pool round trip and a
/// second copy per 256 KiB, as an async file read costs).
async fn checksum(path: &Path) -> Result<(u32, u64)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let local = unreadable(&path);
        let mut file = std::fs::File::open(&path).map_err(&local)?;
        let mut crc = ferry_proto::crc::Crc32::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(local(e)),
            };
            if n == 0 {
                return Ok((crc.value(), size));
            }
            crc.update(&buf[..n]);
            size += n as u64;
        }
    })
    .await
    .map_err(|e| Error::Local(format!("the checksum thread failed: {e}")))?
}

/// The client's error for a file it cannot read.
fn unreadable(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Local(format!("cannot read {}: {e}", path.display()))
}

/// Reads `size` bytes of `path` on a thread of its own, in pieces of whole
/// datagrams of `chunk` bytes, queued for the sender: the sends never wait
/// for a file read. The thread ends when the receiver is dropped.
fn read_ahead(
    path: &Path,
    size: u64,
    chunk: usize,
) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>> {
    use std::io::Read;
    let local = unreadable(path);
    let mut file = std::fs::File::open(path).map_err(local)?;
    // `chunk` is a parsed buffer size: at least 1.
    let piece = chunk * (PIECE / chunk).max(1);
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    std::thread::Builder::new()
        .name("ferry-reader".into())
        .spawn(move || {
            let mut left = size;
            while left > 0 {
                let want = piece.min(usize::try_from(left).unwrap_or(usize::MAX));
                let mut buf = vec![0u8; want];
                let read = file.read_exact(&mut buf).map(|()| buf);
                let failed = read.is_err();
                if tx.blocking_send(read).is_err() || failed {
                    return;
                }
                left -= want as u64;
            }
        })
        .map_err(|e| Error::Local(format!("cannot start a reader thread: {e}")))?;
    Ok(rx)
}

/// One attempt from a new socket: `file_info`, the buffer size, the data,
/// the reply. A refused header is final (`Err`).
async fn attempt_once(
    client: &Client,
    path: &Path,
    info: &FileInfo,
    rate: Option<u64>,
    progress: &dyn Progress,
) -> Result<Attempt> {
    let wait = client.udp_reply_timeout;
    let (sock, server) = client.udp(client.ports[ServiceId::UdpUpload]).await?;
    sock.send(&encode_file_info(info))
        .await
        .map_err(|e| Error::io("sending file_info", e))?;
    let mut reply = vec![0u8; 65_536];
    let n = match tokio::time::timeout(wait, sock.recv(&mut reply)).await {
        Err(_) => return Ok(Attempt::Retry("the server did not answer file_info".into())),
        Ok(r) => r.map_err(|e| Error::udp_recv(server, "reading the buffer size", e))?,
    };
    let chunk = buffer_size(client, &reply[..n])?;
    let started = std::time::Instant::now();
    send_file(&sock, path, info, chunk, rate, progress).await?;
    Ok(
        match tokio::time::timeout(wait, sock.recv(&mut reply)).await {
            Ok(Ok(n)) => match parse_reply(&reply[..n]) {
                Reply::Ok => Attempt::Ok,
                Reply::Error(reason) => Attempt::Error(reason),
                Reply::Other => Attempt::Retry(format!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(&reply[..n])
                )),
            },
            Ok(Err(e)) => Attempt::Retry(e.to_string()),
            // The whole attempt, the wait for `OK` included (see `Lost`).
            Err(_) => Attempt::Lost {
                why: "no OK within the reply timeout".into(),
                bytes: info.size,
                took: started.elapsed(),
            },
        },
    )
}

/// The server's answer to `file_info`: the buffer size, or why not (a
/// refusal of the header is final; another service's answer says the port
/// is wrong).
fn buffer_size(client: &Client, reply: &[u8]) -> Result<usize> {
    if let Ok(size) = parse_buffer_size(reply) {
        return Ok(size);
    }
    match parse_reply(reply) {
        // A refusal of the header (bad name, too large, busy) is final,
        // unless it is another service's: the wrong port.
        Reply::Error(reason) if wrong_port(client, reply).is_none() => {
            Err(Error::Refused(reason.into()))
        }
        _ => Err(Error::Protocol(format!(
            "expected a buffer size, got {:?}",
            String::from_utf8_lossy(reply)
        ))
        .hinted(wrong_port(client, reply))),
    }
}

/// The file's `info.size` bytes in datagrams of `chunk` bytes, read ahead on
/// a thread of its own. The lab protocol has no flow control: `rate`
/// (`--rate`, and after a lost attempt [`Backoff`]) keeps a big upload from
/// overrunning a busy server or a slow link.
async fn send_file(
    sock: &tokio::net::UdpSocket,
    path: &Path,
    info: &FileInfo,
    chunk: usize,
    rate: Option<u64>,
    progress: &dyn Progress,
) -> Result<()> {
    let local = unreadable(path);
    let mut pieces = read_ahead(path, info.size, chunk)?;
    let mut pace = crate::Pacer::new(rate);
    let mut left = info.size;
    while left > 0 {
        let piece = match pieces.recv().await {
            Some(Ok(piece)) => piece,
            Some(Err(e)) => return Err(local(e)),
            None => {
                return Err(local(std::io::Error::other(
                    "the reader thread ended early",
                )))
            }
        };
        for datagram in piece.chunks(chunk) {
            sock.send(datagram)
                .await
                .map_err(|e| Error::io("sending data", e))?;
            progress.advance(datagram.len() as u64);
            pace.sent(datagram.len()).await;
        }
        left -= piece.len() as u64;
    }
    Ok(())
}

/// What a reply that is another service's says about the port.
fn wrong_port(client: &Client, reply: &[u8]) -> Option<String> {
    let port = client.ports[ServiceId::UdpUpload];
    crate::wrong_port::answered_like(reply)
        .filter(|(s, _)| *s != ServiceId::UdpUpload)
        .and_then(|_| crate::wrong_port::hint(ServiceId::UdpUpload, port, Some(reply)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    #[test]
    fn an_unconfirmed_attempt_halves_the_rate_it_reached() {
        let mut b = Backoff::new(None);
        assert_eq!(b.rate(), None);
        // 256 MiB in 0.5 s: 512 MiB/s reached, the next at 256.
        assert_eq!(b.lost(256 * MIB, Duration::from_millis(500)), 256 * MIB);
        assert_eq!(b.rate(), Some(256 * MIB));
        // Paced at 256, it reached 200 (a slow disk): the next at 100.
        assert_eq!(b.lost(200 * MIB, Duration::from_secs(1)), 100 * MIB);
        // Never below 1 MiB/s.
        let mut b = Backoff::new(Some(MIB));
        assert_eq!(b.lost(MIB, Duration::from_secs(1)), MIB);
        // An instant send counts as 1 ms.
        let mut b = Backoff::new(Some(8 * MIB));
        assert_eq!(b.lost(MIB, Duration::ZERO), 4 * MIB);
        assert_eq!(Backoff::new(Some(0)).rate(), None);
    }
}
