//! `udp_download`, checked: ferry's `STAT` gives the size and CRC-32 first,
//! then the lab request streams 2048-byte chunks to the short one. A lost,
//! duplicated or reordered datagram shows up as a size or CRC mismatch (or a
//! gap that times out), and the download is tried again, never kept short.

use ferry_config::ServiceId;
use ferry_proto::udp_download::{encode_request, parse_stat_reply, Assembler, Request};
use tokio::net::UdpSocket;

use crate::local::Target;
use crate::{Client, Error, Got, Progress, Result};

async fn socket(client: &Client) -> Result<(UdpSocket, std::net::SocketAddr)> {
    let (sock, server) = client.udp(client.ports[ServiceId::UdpDownload]).await?;
    raise_rcvbuf(&sock);
    Ok((sock, server))
}

/// The lab protocol has no flow control: a big receive buffer absorbs bursts
/// (best effort; the kernel caps it at `net.core.rmem_max`).
fn raise_rcvbuf(sock: &UdpSocket) {
    let _ = socket2::SockRef::from(sock).set_recv_buffer_size(4 << 20);
}

fn refused(datagram: &[u8]) -> Option<Error> {
    datagram
        .strip_prefix(b"ERROR: ")
        .map(|r| Error::Refused(crate::ServerText::from_wire(r)))
}

/// One datagram of a download: a refusal if it is the first and says so,
/// else data into the file; true when it was the short last chunk.
async fn take_chunk(
    datagram: &[u8],
    asm: &mut Assembler,
    crc: &mut ferry_proto::crc::Crc32,
    part: &mut crate::local::PartFile,
    progress: &dyn Progress,
) -> Result<bool> {
    if asm.received() == 0 && datagram.len() < 2048 {
        if let Some(e) = refused(datagram) {
            return Err(e);
        }
    }
    let last = asm
        .accept(datagram)
        .map_err(|e| Error::Protocol(e.to_string()))?;
    crc.update(datagram);
    part.write(datagram).await?;
    progress.advance(datagram.len() as u64);
    Ok(last)
}

/// The lab's download exactly as its client does it (`--handout`): the name,
/// then 2048-byte chunks up to the short one. No `STAT` first, so nothing to
/// check the size against: a lost datagram shows only as data that stops
/// (an error), or not at all if it was the short last one. The request is
/// sent again only while nothing at all has come back.
pub(crate) async fn get_plain(
    client: &Client,
    name: &str,
    target: Target,
    progress: &dyn Progress,
) -> Result<Got> {
    let (sock, server) = socket(client).await?;
    let mut buf = vec![0u8; 65_536];
    let mut part = target.create_file().await?;
    let mut asm = Assembler::new();
    let mut crc = ferry_proto::crc::Crc32::new();
    progress.start(name, None);
    let mut attempts = 0;
    loop {
        if asm.received() == 0 && attempts < client.udp_attempts.max(1) {
            attempts += 1;
            sock.send(&encode_request(&Request::File(name.to_owned())))
                .await
                .map_err(|e| Error::io("sending the request", e))?;
        }
        let n = match tokio::time::timeout(client.udp_reply_timeout, sock.recv(&mut buf)).await {
            Ok(r) => r.map_err(|e| Error::udp_recv(server, "reading data", e))?,
            Err(_) if asm.received() == 0 && attempts < client.udp_attempts.max(1) => continue,
            Err(_) => {
                progress.finish();
                return Err(Error::Timeout(format!(
                    "waiting for data: it stopped after {} bytes (the lab protocol cannot resend)",
                    asm.received()
                )));
            }
        };
        match take_chunk(&buf[..n], &mut asm, &mut crc, &mut part, progress).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
    }
    progress.finish();
    let path = part.commit().await?;
    Ok(Got {
        path,
        bytes: asm.received(),
        crc: crc.value(),
        files: 1,
    })
}

pub(crate) async fn get(
    client: &Client,
    name: &str,
    target: Target,
    progress: &dyn Progress,
) -> Result<Got> {
    let (sock, server) = socket(client).await?;
    let mut buf = vec![0u8; 65_536];
    // STAT, retried on silence.
    let mut stat = None;
    for _ in 0..client.udp_attempts.max(1) {
        sock.send(&encode_request(&Request::Stat(name.to_owned())))
            .await
            .map_err(|e| Error::io("sending the request", e))?;
        match tokio::time::timeout(client.udp_reply_timeout, sock.recv(&mut buf)).await {
            Err(_) => continue,
            Ok(r) => {
                let n = r.map_err(|e| Error::udp_recv(server, "reading the reply", e))?;
                if let Some(e) = refused(&buf[..n]) {
                    return Err(e);
                }
                stat =
                    Some(parse_stat_reply(&buf[..n]).map_err(|e| Error::Protocol(e.to_string()))?);
                break;
            }
        }
    }
    let (size, want_crc) =
        stat.ok_or_else(|| Error::Timeout("waiting for the STAT reply".into()))?;
    progress.start(name, Some(size));
    let mut last = String::new();
    for attempt in 1..=client.udp_attempts.max(1) {
        if attempt > 1 {
            progress.restart();
        }
        let (sock, _) = socket(client).await?;
        sock.send(&encode_request(&Request::File(name.to_owned())))
            .await
            .map_err(|e| Error::io("sending the request", e))?;
        let mut part = target.create_file().await?;
        let mut asm = Assembler::new();
        let mut crc = ferry_proto::crc::Crc32::new();
        let complete = loop {
            let n = match tokio::time::timeout(client.udp_reply_timeout, sock.recv(&mut buf)).await
            {
                Err(_) => break false,
                Ok(r) => r.map_err(|e| Error::io("reading data", e))?,
            };
            if take_chunk(&buf[..n], &mut asm, &mut crc, &mut part, progress).await? {
                break true;
            }
        };
        if !complete {
            last = format!("the data stopped after {} of {size} bytes", asm.received());
        } else if asm.received() != size || crc.value() != want_crc {
            last = format!(
                "received {} bytes with CRC-32 {}, the file has {size} bytes and {}",
                asm.received(),
                ferry_proto::crc::format_hex(crc.value()),
                ferry_proto::crc::format_hex(want_crc)
            );
        } else {
            progress.finish();
            let path = part.commit().await?;
            return Ok(Got {
                path,
                bytes: size,
                crc: want_crc,
                files: 1,
            });
        }
    }
    progress.finish();
    Err(Error::Verification(format!(
        "after {} attempts: {last}",
        client.udp_attempts
    )))
}
