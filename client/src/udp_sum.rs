//! `udp_sum`: `name:number` out, the server's `name:number` back.

use ferry_config::ServiceId;
use ferry_proto::udp_sum::{encode_request, parse_reply, Layout};

use crate::{Client, Error, Result};

pub(crate) async fn sum(client: &Client, name: &str, number: i64) -> Result<(String, i64)> {
    let (sock, server) = client.udp(client.ports[ServiceId::UdpSum]).await?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..client.udp_attempts.max(1) {
        for datagram in encode_request(name, number, Layout::Separated(b':')) {
            sock.send(&datagram)
                .await
                .map_err(|e| Error::io("sending", e))?;
        }
        let Ok(r) = tokio::time::timeout(client.udp_reply_timeout, sock.recv(&mut buf)).await
        else {
            continue;
        };
        let n = r.map_err(|e| Error::udp_recv(server, "reading the reply", e))?;
        if let Some(reason) = buf[..n].strip_prefix(b"ERROR: ") {
            return Err(Error::Refused(crate::ServerText::from_wire(reason)));
        }
        return parse_reply(&buf[..n]).map_err(|e| Error::Protocol(e.to_string()));
    }
    Err(Error::Timeout(format!("waiting for {server} to answer")))
}
