//! `udp_sum`: `name:number` out, the server's `name:number` back.

use ferry_proto::udp_sum::{encode_request, parse_reply, Layout};
use tokio::net::UdpSocket;

use crate::{Client, Error, Result};

pub(crate) async fn sum(client: &Client, name: &str, number: i64) -> Result<(String, i64)> {
    let server = client.resolve(client.ports.udp_sum).await?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| Error::io("opening a UDP socket", e))?;
    sock.connect(server)
        .await
        .map_err(|e| Error::io("opening a UDP socket", e))?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..client.udp_attempts.max(1) {
        for datagram in encode_request(name, number, Layout::Separated(b':')) {
            sock.send(&datagram)
                .await
                .map_err(|e| Error::io("sending", e))?;
        }
        match tokio::time::timeout(client.udp_reply_timeout, sock.recv(&mut buf)).await {
            Err(_) => continue,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(Error::Unreachable {
                    what: server.to_string(),
                    reason: e.to_string(),
                })
            }
            Ok(r) => {
                let n = r.map_err(|e| Error::io("reading the reply", e))?;
                if let Some(reason) = buf[..n].strip_prefix(b"ERROR: ") {
                    return Err(Error::Refused(String::from_utf8_lossy(reason).into_owned()));
                }
                return parse_reply(&buf[..n]).map_err(|e| Error::Protocol(e.to_string()));
            }
        }
    }
    Err(Error::Timeout(format!("waiting for {server} to answer")))
}
