//! `magic_download`: FileRequest, FileResponse, the data until close.

use bytes::BytesMut;
use ferry_proto::magic::{FileRequest, RequestCodec, ResponseCodec, ResponseFrame, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::local::Target;
use crate::{Client, Error, Got, Progress, Result};

pub(crate) async fn get(
    client: &Client,
    name: &str,
    target: Target,
    progress: &dyn Progress,
) -> Result<Got> {
    let mut request = BytesMut::new();
    RequestCodec
        .encode(
            &FileRequest {
                name: name.to_owned(),
            },
            &mut request,
        )
        .map_err(|e| Error::Local(format!("cannot request {name:?}: {e}")))?;
    let mut s = client.connect(client.ports.magic_download).await?;
    s.write_all(&request)
        .await
        .map_err(|e| Error::io("sending the FileRequest", e))?;
    let mut codec = ResponseCodec::default();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut part = None;
    let mut crc = ferry_proto::crc::Crc32::new();
    let mut length = 0u64;
    loop {
        while let Some(frame) = codec
            .decode(&mut buf)
            .map_err(|e| Error::Protocol(e.to_string()))?
        {
            match frame {
                ResponseFrame::Header(h) if h.status == Status::NotFound => {
                    return Err(Error::Refused(format!(
                        "no such file: {name} (StatusCode 0)"
                    )));
                }
                ResponseFrame::Header(h) => {
                    length = u64::from(h.length);
                    progress.start(name, Some(length));
                    part = Some(target.create_file().await?);
                }
                ResponseFrame::Data(b) => {
                    crc.update(&b);
                    let n = b.len() as u64;
                    if let Some(p) = part.as_mut() {
                        p.write_owned(b).await?;
                    }
                    progress.advance(n);
                }
                ResponseFrame::End => {
                    progress.finish();
                    let p = part
                        .take()
                        .ok_or_else(|| Error::Protocol("data before the header".into()))?;
                    let path = p.commit().await?;
                    return Ok(Got {
                        path,
                        bytes: length,
                        crc: crc.value(),
                        files: 1,
                    });
                }
            }
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        let n = match tokio::time::timeout(client.timeout, s.read_buf(&mut buf)).await {
            Err(_) => return Err(Error::Timeout("waiting for the FileResponse".into())),
            Ok(r) => r.map_err(|e| Error::io("reading the FileResponse", e))?,
        };
        if n == 0 {
            return match codec.decode_eof(&mut buf) {
                Err(e) if part.is_some() => Err(Error::Verification(e.to_string())),
                Err(e) => Err(Error::Protocol(format!(
                    "{e} (a malformed request is answered by closing)"
                ))),
                Ok(_) => Err(Error::Protocol(
                    "the server closed the connection early".into(),
                )),
            };
        }
    }
}
