//! Plain-socket clients that do exactly what the handout clients do.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::signal::{SignalCodec, SignalFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_util::codec::Decoder;

use crate::OP_TIMEOUT;

/// What the seed-000 client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpUploadOutcome {
    /// `OK` after this many attempts.
    Ok {
        /// Attempts made (1 = first try).
        attempts: usize,
    },
    /// "The server isn't available": no buffer size within 1 s.
    Unavailable,
    /// The reply to `file_info` was not a number (the handout would crash on
    /// `int(...)`): the text.
    NotANumber(String),
    /// Every attempt ended with something other than `OK`: the last reply.
    GaveUp(String),
}

/// A UDP socket on loopback with a 4 MiB receive buffer: tests run in
/// parallel on two cores, and a starved reader must not lose datagrams
/// (the lab protocols have no flow control).
pub async fn udp_socket() -> UdpSocket {
    udp_socket_as(std::net::Ipv4Addr::LOCALHOST).await
}

/// A UDP socket like [`udp_socket`], from `src` (any 127.x address: a
/// student of its own).
pub async fn udp_socket_as(src: std::net::Ipv4Addr) -> UdpSocket {
    let sock = UdpSocket::bind((src, 0)).await.expect("bind");
    ferryd::set_buffer_sizes(&sock, 4 << 20);
    sock
}

/// A TCP connection to `to` from `src` (any 127.x address).
pub async fn connect_as(src: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((src, 0))).expect("bind");
    sock.connect(to).await.expect("connect")
}

/// Seed 003's client from `src`: the whole request in one write; the bytes
/// until the server closes.
pub async fn magic_download_as(src: std::net::Ipv4Addr, addr: SocketAddr, name: &[u8]) -> Vec<u8> {
    magic_download_from(src, addr, name, false).await
}

/// Seed 001 §4's client from `src`: the chunks until a short one (an error
/// reply is one short chunk). `None` if a chunk does not come within 2 s.
pub async fn udp_download_as(
    src: std::net::Ipv4Addr,
    addr: SocketAddr,
    name: &[u8],
) -> Option<Vec<u8>> {
    let sock = udp_socket_as(src).await;
    sock.send_to(name, addr).await.expect("send");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        out.extend_from_slice(&buf[..n]);
        if n < 2048 {
            return Some(out);
        }
    }
}

/// The Python-`json.dumps` `file_info` for `data` under `name`.
pub fn file_info(name: &str, data: &[u8]) -> Vec<u8> {
    ferry_proto::udp_upload::encode_file_info(&ferry_proto::udp_upload::FileInfo {
        checksum: ferry_proto::crc::checksum(data),
        name: name.to_owned(),
        size: data.len() as u64,
    })
}

/// Seed 000's client: send `file_info`, wait 1 s for the buffer size, send
/// the file in buffer-size datagrams, wait 1 s for `OK`, and "otherwise,
/// repeat everything from Step 5". With `new_port_each_try`, every attempt
/// uses a fresh socket, as some students' clients do.
pub async fn udp_upload(
    addr: SocketAddr,
    name: &str,
    data: &[u8],
    new_port_each_try: bool,
    max_attempts: usize,
) -> UdpUploadOutcome {
    udp_upload_waiting(
        addr,
        name,
        data,
        new_port_each_try,
        max_attempts,
        Duration::from_secs(1),
    )
    .await
}

/// [`udp_upload`] with another reply timeout than the handout's 1 s (to keep
/// tests over a lossy network quick).
pub async fn udp_upload_waiting(
    addr: SocketAddr,
    name: &str,
    data: &[u8],
    new_port_each_try: bool,
    max_attempts: usize,
    wait: Duration,
) -> UdpUploadOutcome {
    let mut sock = udp_socket().await;
    let mut last = String::new();
    for attempt in 1..=max_attempts {
        if new_port_each_try && attempt > 1 {
            sock = udp_socket().await;
        }
        sock.send_to(&file_info(name, data), addr)
            .await
            .expect("send");
        let mut buf = vec![0u8; 65_536];
        let n = match timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => n,
            _ => return UdpUploadOutcome::Unavailable,
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let Ok(size) = text.trim().parse::<usize>() else {
            return UdpUploadOutcome::NotANumber(text);
        };
        for chunk in data.chunks(size.max(1)) {
            sock.send_to(chunk, addr).await.expect("send");
        }
        match timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if &buf[..n] == b"OK" => {
                return UdpUploadOutcome::Ok { attempts: attempt }
            }
            Ok(Ok((n, _))) => last = String::from_utf8_lossy(&buf[..n]).into_owned(),
            _ => last = "(no reply within 1 s)".into(),
        }
    }
    UdpUploadOutcome::GaveUp(last)
}

/// Seed 001 §4's client: send the name, collect chunks until one is shorter
/// than 2048. `None` if a chunk does not come within 2 s.
pub async fn udp_download(addr: SocketAddr, name: &[u8]) -> Option<Vec<u8>> {
    udp_download_as(std::net::Ipv4Addr::LOCALHOST, addr, name).await
}

/// One request/reply of seed 001 §3 (one datagram each way).
pub async fn udp_sum(addr: SocketAddr, message: &[u8]) -> Vec<u8> {
    let sock = udp_socket().await;
    sock.send_to(message, addr).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("a reply within 2 s")
        .expect("recv");
    buf[..n].to_vec()
}

/// Seed 002's client: one `send` of size + name, wait for the reply, and if it
/// is `go ahead`, send the data and close. Returns the reply.
pub async fn tcp_upload(addr: SocketAddr, name: &str, data: &[u8]) -> Vec<u8> {
    timeout(OP_TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&ferry_proto::tcp_upload::encode_header(
            data.len() as u64,
            name,
        ))
        .await
        .expect("send header");
        let mut reply = vec![0u8; 1024];
        let n = s.read(&mut reply).await.unwrap_or(0);
        reply.truncate(n);
        if reply == b"go ahead" {
            s.write_all(data).await.expect("send data");
        }
        drop(s);
        reply
    })
    .await
    .expect("tcp upload within the op timeout")
}

/// Seed 003's client: the 5-byte header (and, with `split`, the name in a
/// second write), then read the 8-byte header and everything until close.
/// Returns (the bytes before close, whether the server closed without any).
pub async fn magic_download(addr: SocketAddr, name: &[u8], split: bool) -> Vec<u8> {
    magic_download_from(std::net::Ipv4Addr::LOCALHOST, addr, name, split).await
}

async fn magic_download_from(
    src: std::net::Ipv4Addr,
    addr: SocketAddr,
    name: &[u8],
    split: bool,
) -> Vec<u8> {
    timeout(OP_TIMEOUT, async {
        let mut s = connect_as(src, addr).await;
        let mut req = vec![0x49, 0x7E, 0x01];
        req.extend_from_slice(&(name.len() as u16).to_be_bytes());
        if split {
            s.write_all(&req).await.expect("send");
            s.flush().await.expect("flush");
            tokio::task::yield_now().await;
            s.write_all(name).await.expect("send");
        } else {
            req.extend_from_slice(name);
            s.write_all(&req).await.expect("send");
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
    .expect("magic download within the op timeout")
}

/// Splits a magic FileResponse into (status, declared length, data).
pub fn parse_magic(bytes: &[u8]) -> (u8, u32, &[u8]) {
    assert!(bytes.len() >= 8, "short FileResponse: {bytes:?}");
    assert_eq!(&bytes[..3], &[0x49, 0x7E, 0x02], "magic and type");
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (bytes[3], len, &bytes[8..])
}

/// A signal-protocol connection speaking raw frames.
pub struct Signal {
    stream: TcpStream,
    codec: SignalCodec,
    buf: BytesMut,
}

impl Signal {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> Signal {
        Signal {
            stream: TcpStream::connect(addr).await.expect("connect"),
            codec: SignalCodec::default(),
            buf: BytesMut::new(),
        }
    }

    /// Connects from `src` (any 127.x address: a student of its own).
    pub async fn connect_as(src: std::net::Ipv4Addr, addr: SocketAddr) -> Signal {
        Signal {
            stream: connect_as(src, addr).await,
            codec: SignalCodec::default(),
            buf: BytesMut::new(),
        }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: SignalFrame) {
        let bytes = ferry_proto::signal::encode(frame).expect("encode");
        self.send_raw(&bytes).await;
    }

    /// Reads exactly `n` raw bytes (an answer in the handout's framing).
    pub async fn recv_raw(&mut self, n: usize) -> Vec<u8> {
        timeout(OP_TIMEOUT, async {
            while self.buf.len() < n {
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        })
        .await
        .expect("bytes within the op timeout");
        let take = n.min(self.buf.len());
        self.buf.split_to(take).to_vec()
    }

    /// Reads the next frame; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<SignalFrame> {
        timeout(OP_TIMEOUT, async {
            loop {
                if let Some(f) = self
                    .codec
                    .decode(&mut self.buf)
                    .expect("valid frames from ferryd")
                {
                    return Some(f);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("a frame within the op timeout")
    }

    /// Receives a whole SAF (header, data, CRC) and checks the CRC; returns (name, data).
    pub async fn recv_file(&mut self) -> Result<(String, Vec<u8>), SignalFrame> {
        let (name, size) = match self.recv().await {
            Some(SignalFrame::FileHeader { name, size }) => (name, size),
            Some(other) => return Err(other),
            None => return Err(SignalFrame::Error("closed".into())),
        };
        let mut data = Vec::new();
        loop {
            match self.recv().await {
                Some(SignalFrame::Data(b)) => data.extend_from_slice(&b),
                Some(SignalFrame::FileEnd { crc }) => {
                    assert_eq!(data.len() as u64, size, "size of {name}");
                    assert_eq!(crc, ferry_proto::crc::checksum(&data), "CRC of {name}");
                    return Ok((name, data));
                }
                other => panic!("inside a SAF: {other:?}"),
            }
        }
    }

    /// Uploads with SAF and returns the reply.
    pub async fn upload(&mut self, name: &str, data: &[u8]) -> Option<SignalFrame> {
        let bytes = ferry_proto::signal::encode_file(name, data).expect("encode");
        self.send_raw(&bytes).await;
        self.recv().await
    }
}
