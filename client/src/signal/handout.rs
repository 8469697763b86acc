//! `signal` the way the handout's client speaks it (seed 004), for testing a
//! student's own server: no lengths, no CRC, messages separated by pauses of
//! 0.1 s; a requested file is read in `recv(1024)` pieces, each answered
//! with `PON`, until a piece that is exactly `DON`.
//!
//! The framing has no acknowledgement: an upload is reported sent once the
//! server has closed the connection after the final `CLS` (ferryd stores a
//! file before it reads the next request; the handout's server closes on
//! `CLS`). Nothing is verified but the byte count ferryd puts in its answer
//! to `RAF` (`SAF <size>`), when the server sends one.

use ferry_config::ServiceId;
use std::path::Path;
use std::time::Duration;

use ferry_proto::crc::Crc32;
use ferry_proto::names::SafeName;
use ferry_proto::signal::handout::{COUNT_LEN, DON, PIECE, SIGNAL_RECV};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::local::Target;
use crate::{Client, Error, Got, Progress, Result, Sent};

/// The handout's pause between messages.
const PAUSE: Duration = Duration::from_millis(100);

struct Conn {
    stream: crate::watched::Watched,
    timeout: Duration,
}

impl Conn {
    async fn open(client: &Client) -> Result<Conn> {
        Ok(Conn {
            stream: client.connect(client.ports[ServiceId::Signal]).await?,
            timeout: client.timeout,
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(data)).await {
            Err(_) => Err(Error::Timeout("sending to the server".into())),
            Ok(Err(e)) => Err(Error::io("sending to the server", e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// A request tag, the handout's pause, the name (no pause after it).
    async fn request(&mut self, tag: &[u8; 3], name: &str) -> Result<()> {
        self.write(tag).await?;
        tokio::time::sleep(PAUSE).await;
        self.write(name.as_bytes()).await
    }

    /// One `recv(max)`: whatever has arrived, at most `max` bytes; empty at the end.
    async fn recv(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; max];
        let n = match tokio::time::timeout(self.timeout, self.stream.read(&mut buf)).await {
            Err(_) => return Err(Error::Timeout("waiting for the server".into())),
            Ok(r) => r.map_err(|e| Error::io("reading from the server", e))?,
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// Exactly `n` bytes (the `recv(4)` of a repo's count).
    async fn recv_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        match tokio::time::timeout(self.timeout, self.stream.read_exact(&mut buf)).await {
            Err(_) => Err(Error::Timeout("waiting for the server".into())),
            Ok(Err(e)) => Err(Error::io("reading from the server", e)),
            Ok(Ok(_)) => Ok(buf),
        }
    }

    /// `SAF` pause name pause data pause `DON`, as the handout's `send_file`.
    async fn send_file(
        &mut self,
        path: &Path,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<(u64, u32)> {
        let (mut file, size) = crate::local::open_source(path).await?;
        progress.start(name, Some(size));
        self.write(b"SAF").await?;
        tokio::time::sleep(PAUSE).await;
        self.send_body(&mut file, path, name, size, progress).await
    }

    /// name pause data pause `DON` (the part of a file that `SAR` repeats).
    async fn send_body(
        &mut self,
        file: &mut tokio::fs::File,
        path: &Path,
        name: &str,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(u64, u32)> {
        self.write(name.as_bytes()).await?;
        tokio::time::sleep(PAUSE).await;
        let mut crc = Crc32::new();
        let mut buf = vec![0u8; PIECE];
        let mut sent = 0u64;
        while sent < size {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
            if n == 0 {
                return Err(Error::Local(format!(
                    "{} shrank while being sent",
                    path.display()
                )));
            }
            crc.update(&buf[..n]);
            self.write(&buf[..n]).await?;
            sent += n as u64;
            progress.advance(n as u64);
        }
        tokio::time::sleep(PAUSE).await;
        self.write(DON).await?;
        Ok((sent, crc.value()))
    }

    /// Reads pieces until one is exactly `DON` (or the end), answering each
    /// with `PON` when `pon`; returns the bytes, counted into `crc`.
    async fn recv_body(
        &mut self,
        sink: &mut crate::local::PartFile,
        pon: bool,
        crc: &mut Crc32,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let mut got = 0u64;
        loop {
            let piece = self.recv(PIECE).await?;
            if piece == DON {
                return Ok(got);
            }
            if piece.is_empty() {
                // The handout's client would keep what it has; ferry does not
                // call a file complete that its DON never ended.
                return Err(Error::Protocol(format!(
                    "the server closed the connection after {got} bytes, before DON"
                )));
            }
            if pon {
                self.write(b"PON").await?;
            }
            crc.update(&piece);
            sink.write(&piece).await?;
            got += piece.len() as u64;
            progress.advance(piece.len() as u64);
        }
    }

    /// `CLS`, then waits for the server to close (its only sign that it has
    /// taken everything before).
    async fn close(&mut self) -> Result<()> {
        tokio::time::sleep(PAUSE).await;
        self.write(b"CLS").await?;
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 1024];
        loop {
            match tokio::time::timeout(self.timeout, self.stream.read(&mut sink)).await {
                Err(_) => {
                    return Err(Error::Timeout(
                        "waiting for the server to close after CLS".into(),
                    ))
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

pub(crate) async fn send_file(
    client: &Client,
    path: &Path,
    name: &str,
    progress: &dyn Progress,
) -> Result<Sent> {
    let mut c = Conn::open(client).await?;
    let sent = c.send_file(path, name, progress).await;
    progress.finish();
    let (bytes, crc) = sent?;
    c.close().await?;
    Ok(Sent {
        stored_as: None,
        bytes,
        crc,
        attempts: 1,
    })
}

pub(crate) async fn get_file(
    client: &Client,
    name: &str,
    target: Target,
    progress: &dyn Progress,
) -> Result<Got> {
    let mut c = Conn::open(client).await?;
    c.request(b"RAF", name).await?;
    // The handout's client sleeps here too, but nothing more is written, so
    // reading at once changes no byte on the wire and keeps a server that
    // sends its signal and data close together from merging them.
    let signal = c.recv(SIGNAL_RECV).await?;
    if signal.is_empty() {
        return Err(Error::Protocol("the server closed the connection".into()));
    }
    if signal == b"ERR" {
        return Err(Error::Refused(
            format!("{name}: the server answered ERR (not found)").into(),
        ));
    }
    let (announced, early) = read_signal(&signal);
    progress.start(name, announced);
    let mut part = target.create_file().await?;
    let mut crc = Crc32::new();
    crc.update(early);
    part.write(early).await?;
    progress.advance(early.len() as u64);
    let body = c.recv_body(&mut part, true, &mut crc, progress).await;
    progress.finish();
    let bytes = body? + early.len() as u64;
    let crc = crc.value();
    if let Some(size) = announced.filter(|&s| s != bytes) {
        return Err(Error::Verification(format!(
            "{name}: {bytes} bytes, the server announced {size}"
        )));
    }
    let path = part.commit().await?;
    let _ = c.close().await;
    Ok(Got {
        path,
        bytes,
        crc,
        files: 1,
    })
}

/// The answer to `RAF`: ferryd's 36-byte `SAF <size>` (the size), or a
/// handout server's tag, possibly with the first data bytes behind it when
/// they arrived together (returned, to be kept).
fn read_signal(signal: &[u8]) -> (Option<u64>, &[u8]) {
    let ferryd = std::str::from_utf8(signal)
        .ok()
        .filter(|_| signal.len() == SIGNAL_RECV)
        .and_then(|s| s.strip_prefix("SAF "))
        .and_then(|s| s.trim_end_matches(' ').parse::<u64>().ok());
    match ferryd {
        Some(size) => (Some(size), &[]),
        None => (None, signal.get(3..).unwrap_or_default()),
    }
}

/// The regular files directly in `dir`, sorted: a handout repo is flat.
fn flat_files(dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>> {
    if !dir.is_dir() {
        return Err(Error::Local(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Local(format!("cannot read {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::Local(format!("cannot read {}: {e}", dir.display())))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            out.push((entry.path(), name.to_owned()));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

pub(crate) async fn send_dir(client: &Client, dir: &Path, progress: &dyn Progress) -> Result<Sent> {
    let files = flat_files(dir)?;
    let count = u32::try_from(files.len())
        .map_err(|_| Error::Local(format!("{} has too many files", dir.display())))?;
    let total = files
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut c = Conn::open(client).await?;
    progress.start(&dir.display().to_string(), Some(total));
    c.write(b"SAR").await?;
    tokio::time::sleep(PAUSE).await;
    c.write(&count.to_be_bytes()).await?;
    let mut bytes = 0;
    for (path, name) in &files {
        tokio::time::sleep(PAUSE).await;
        let (mut file, size) = crate::local::open_source(path).await?;
        let (n, _) = c.send_body(&mut file, path, name, size, progress).await?;
        bytes += n;
    }
    progress.finish();
    c.close().await?;
    Ok(Sent {
        stored_as: None,
        bytes,
        crc: 0,
        attempts: 1,
    })
}

pub(crate) async fn get_dir(
    client: &Client,
    name: &str,
    target: Target,
    progress: &dyn Progress,
) -> Result<Got> {
    let mut c = Conn::open(client).await?;
    c.request(b"RAR", name).await?;
    let raw = c.recv_exact(COUNT_LEN).await?;
    let count = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    progress.start(name, None);
    let part = target.create_dir()?;
    let mut bytes = 0;
    for _ in 0..count {
        let raw = c.recv(PIECE).await?;
        // Never trust a name from the wire: one plain component only.
        let file_name = SafeName::for_upload_bytes(&raw)
            .ok()
            .filter(|n| n.as_str().as_bytes() == raw.as_slice())
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "the server sent a bad file name {:?}",
                    String::from_utf8_lossy(&raw)
                ))
            })?;
        let dest = part.root().join(file_name.as_str());
        let mut file = Target::new(&dest, file_name.as_str(), false)?
            .create_file()
            .await?;
        let n = c
            .recv_body(&mut file, false, &mut Crc32::new(), progress)
            .await?;
        file.commit().await?;
        bytes += n;
    }
    progress.finish();
    let path = part.commit()?;
    let _ = c.close().await;
    Ok(Got {
        path,
        bytes,
        crc: 0,
        files: count as usize,
    })
}
