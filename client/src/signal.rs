//! The `signal` protocol: ping, files and trees, checked with CRC-32 both ways.

use ferry_config::ServiceId;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_proto::crc::{format_hex, Crc32};
use ferry_proto::names::RelPath;
use ferry_proto::signal::{SignalCodec, SignalFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::local::Target;
use crate::{Client, Error, Got, Progress, Result, Sent};

pub(crate) mod handout;

/// Bytes read from a local file per write.
const CHUNK: usize = 256 * 1024;

struct Conn {
    stream: crate::watched::Watched,
    codec: SignalCodec,
    rbuf: BytesMut,
    timeout: Duration,
    upload_rate: Option<u64>,
}

impl Conn {
    async fn open(client: &Client) -> Result<Conn> {
        Ok(Conn {
            stream: client.connect(client.ports[ServiceId::Signal]).await?,
            codec: SignalCodec::default(),
            rbuf: BytesMut::with_capacity(CHUNK),
            timeout: client.timeout,
            upload_rate: client.upload_rate,
        })
    }

    async fn send(&mut self, frame: SignalFrame) -> Result<()> {
        let mut buf = BytesMut::new();
        self.codec
            .encode(frame, &mut buf)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.write(&buf).await
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.stream.write_all(data)).await {
            Err(_) => Err(Error::Timeout("sending to the server".into())),
            Ok(Err(e)) => Err(Error::io("sending to the server", e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn recv(&mut self) -> Result<SignalFrame> {
        loop {
            if let Some(frame) = self
                .codec
                .decode(&mut self.rbuf)
                .map_err(|e| Error::Protocol(e.to_string()))?
            {
                return Ok(frame);
            }
            // Data frames are split off the buffer and kept by the writer:
            // read into fresh room, a whole chunk at a time.
            if self.rbuf.capacity() - self.rbuf.len() < CHUNK / 4 {
                self.rbuf.reserve(CHUNK);
            }
            let n = match tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.rbuf))
                .await
            {
                Err(_) => return Err(Error::Timeout("waiting for the server".into())),
                Ok(r) => r.map_err(|e| Error::io("reading from the server", e))?,
            };
            if n == 0 {
                return Err(Error::Protocol("the server closed the connection".into()));
            }
        }
    }

    /// The answer to a SAF or SAR: `DON` with the stored name, or `ERR`.
    async fn stored_reply(&mut self, progress: &dyn Progress) -> Result<String> {
        let reply = self.recv().await;
        progress.finish();
        match reply? {
            SignalFrame::Done(stored) => {
                let _ = self.send(SignalFrame::Close).await;
                Ok(stored)
            }
            SignalFrame::Error(reason) => Err(Error::Refused(reason.into())),
            other => Err(Error::Protocol(format!(
                "expected DON or ERR, got {other:?}"
            ))),
        }
    }

    /// After a failed write, the server may have said why before closing.
    async fn reason_after(&mut self, err: Error) -> Error {
        match tokio::time::timeout(Duration::from_secs(1), self.recv()).await {
            Ok(Ok(SignalFrame::Error(reason))) => Error::Refused(reason.into()),
            _ => err,
        }
    }

    /// Writes a whole SAF from a local file; returns (bytes, crc).
    async fn send_saf(
        &mut self,
        path: &Path,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<(u64, u32)> {
        let (mut file, size) = crate::local::open_source(path).await?;
        progress.start(name, Some(size));
        self.send(SignalFrame::FileHeader {
            name: name.to_owned(),
            size,
        })
        .await?;
        let mut crc = Crc32::new();
        let mut pace = crate::Pacer::new(self.upload_rate);
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file
                .read(&mut buf[..want])
                .await
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
            if n == 0 {
                return Err(Error::Local(format!(
                    "{} shrank while being sent",
                    path.display()
                )));
            }
            crc.update(&buf[..n]);
            if let Err(e) = self.write(&buf[..n]).await {
                return Err(self.reason_after(e).await);
            }
            left -= n as u64;
            progress.advance(n as u64);
            pace.sent(n).await;
        }
        let crc = crc.value();
        self.write(&crc.to_be_bytes()).await?;
        Ok((size, crc))
    }

    /// Reads a SAF's data and CRC into `sink`, checking size and CRC.
    async fn recv_saf_body(
        &mut self,
        name: &str,
        size: u64,
        sink: &mut crate::local::PartFile,
        progress: &dyn Progress,
    ) -> Result<u32> {
        let mut crc = Crc32::new();
        let mut got = 0u64;
        loop {
            match self.recv().await? {
                SignalFrame::Data(b) => {
                    crc.update(&b);
                    let n = b.len() as u64;
                    got += n;
                    sink.write_owned(b).await?;
                    progress.advance(n);
                }
                SignalFrame::FileEnd { crc: want } => {
                    if got != size {
                        return Err(Error::Verification(format!(
                            "{name}: {got} bytes, announced {size}"
                        )));
                    }
                    if crc.value() != want {
                        return Err(Error::Verification(format!(
                            "{name}: CRC-32 {} does not match the server's {}",
                            format_hex(crc.value()),
                            format_hex(want)
                        )));
                    }
                    return Ok(want);
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {other:?} inside a file"
                    )))
                }
            }
        }
    }
}

pub(crate) async fn ping(client: &Client) -> Result<Duration> {
    let mut c = Conn::open(client).await?;
    let started = Instant::now();
    c.send(SignalFrame::Ping).await?;
    match c.recv().await? {
        SignalFrame::Pong => {
            let rtt = started.elapsed();
            let _ = c.send(SignalFrame::Close).await;
            Ok(rtt)
        }
        SignalFrame::Error(reason) => Err(Error::Refused(reason.into())),
        other => Err(Error::Protocol(format!("expected PON, got {other:?}"))),
    }
}

pub(crate) async fn send_file(
    client: &Client,
    path: &Path,
    name: &str,
    progress: &dyn Progress,
) -> Result<Sent> {
    let mut c = Conn::open(client).await?;
    let (bytes, crc) = c.send_saf(path, name, progress).await?;
    let stored = c.stored_reply(progress).await?;
    Ok(Sent {
        stored_as: Some(stored),
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
    c.send(SignalFrame::RequestFile(name.to_owned())).await?;
    let size = match c.recv().await? {
        SignalFrame::FileHeader { size, .. } => size,
        SignalFrame::Error(reason) => return Err(Error::Refused(reason.into())),
        other => {
            return Err(Error::Protocol(format!(
                "expected SAF or ERR, got {other:?}"
            )))
        }
    };
    progress.start(name, Some(size));
    let mut part = target.create_file().await?;
    let crc = c.recv_saf_body(name, size, &mut part, progress).await;
    progress.finish();
    let crc = crc?;
    let path = part.commit().await?;
    let _ = c.send(SignalFrame::Close).await;
    Ok(Got {
        path,
        bytes: size,
        crc,
        files: 1,
    })
}

/// Every regular file under `dir`, as (local path, relative path), sorted.
/// Symlinks and special files are skipped with a warning on stderr.
pub fn walk_local(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| Error::Local(format!("cannot read {}: {e}", d.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::Local(format!("cannot read {}: {e}", d.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                eprintln!(
                    "ferry: warning: skipping {} (name is not UTF-8)",
                    entry.path().display()
                );
                continue;
            };
            let rel = format!("{prefix}{name}");
            let ft = entry.file_type().map_err(|e| Error::Local(e.to_string()))?;
            if ft.is_dir() {
                stack.push((entry.path(), format!("{rel}/")));
            } else if ft.is_file() {
                out.push((entry.path(), rel));
            } else {
                eprintln!(
                    "ferry: warning: skipping {} (symlink or special file)",
                    entry.path().display()
                );
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

pub(crate) async fn send_dir(
    client: &Client,
    dir: &Path,
    name: &str,
    progress: &dyn Progress,
) -> Result<Sent> {
    if !dir.is_dir() {
        return Err(Error::Local(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let files = walk_local(dir)?;
    let total: u64 = files
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut c = Conn::open(client).await?;
    c.send(SignalFrame::SendRepo(name.to_owned())).await?;
    progress.start(name, Some(total));
    let quiet = crate::NoProgress;
    let mut bytes = 0;
    for (path, rel) in &files {
        let (n, _) = c.send_saf(path, rel, &quiet).await?;
        bytes += n;
        progress.advance(n);
    }
    c.send(SignalFrame::Done(String::new())).await?;
    let stored = c.stored_reply(progress).await?;
    Ok(Sent {
        stored_as: Some(stored),
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
    c.send(SignalFrame::RequestRepo(name.to_owned())).await?;
    match c.recv().await? {
        SignalFrame::SendRepo(_) => {}
        SignalFrame::Error(reason) => return Err(Error::Refused(reason.into())),
        other => {
            return Err(Error::Protocol(format!(
                "expected SAR or ERR, got {other:?}"
            )))
        }
    }
    progress.start(name, None);
    let part = target.create_dir()?;
    let mut bytes = 0;
    let mut files = 0;
    loop {
        match c.recv().await? {
            SignalFrame::FileHeader { name: entry, size } => {
                // Never trust a path from the wire: normal components only.
                let rel = RelPath::parse(&entry, 4096).map_err(|e| {
                    Error::Protocol(format!("the server sent a bad path {entry:?}: {e}"))
                })?;
                let dest = part.root().join(rel.to_path_buf());
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::Local(format!("cannot create {}: {e}", parent.display()))
                    })?;
                }
                let entry_target = Target::new(&dest, &entry, false)?;
                let mut file = entry_target.create_file().await?;
                c.recv_saf_body(&entry, size, &mut file, progress).await?;
                file.commit().await?;
                bytes += size;
                files += 1;
            }
            SignalFrame::Done(_) => break,
            SignalFrame::Error(reason) => return Err(Error::Refused(reason.into())),
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected {other:?} inside a tree"
                )))
            }
        }
    }
    progress.finish();
    let path = part.commit()?;
    let _ = c.send(SignalFrame::Close).await;
    Ok(Got {
        path,
        bytes,
        crc: 0,
        files,
    })
}
