//! `magic_download`: FileRequest, FileResponse, the data until close.

use bytes::BytesMut;
use ferry_config::ServiceId;
use ferry_proto::magic::{FileRequest, RequestCodec, ResponseCodec, ResponseFrame, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::local::{PartFile, Target};
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
    let mut s = client
        .connect(client.ports[ServiceId::MagicDownload])
        .await?;
    s.write_all(&request)
        .await
        .map_err(|e| Error::io("sending the FileRequest", e))?;
    let mut codec = ResponseCodec::default();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut rx = Receiving {
        name,
        target,
        progress,
        part: None,
        crc: ferry_proto::crc::Crc32::new(),
        length: 0,
    };
    loop {
        while let Some(frame) = codec
            .decode(&mut buf)
            .map_err(|e| Error::Protocol(e.to_string()))?
        {
            if let Some(got) = rx.on_frame(frame).await? {
                return Ok(got);
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
            return Err(match codec.decode_eof(&mut buf) {
                Err(e) if rx.part.is_some() => Error::Verification(e.to_string()),
                Err(e) => {
                    Error::Protocol(format!("{e} (a malformed request is answered by closing)"))
                }
                Ok(_) => Error::Protocol("the server closed the connection early".into()),
            });
        }
    }
}

/// A download in progress: what each decoded frame does to it.
struct Receiving<'a> {
    name: &'a str,
    target: Target,
    progress: &'a dyn Progress,
    /// The file being written, from the header on.
    part: Option<PartFile>,
    crc: ferry_proto::crc::Crc32,
    length: u64,
}

impl Receiving<'_> {
    /// Takes one frame; the download once it is whole.
    async fn on_frame(&mut self, frame: ResponseFrame) -> Result<Option<Got>> {
        match frame {
            ResponseFrame::Header(h) if h.status == Status::NotFound => Err(Error::Refused(
                format!("no such file: {} (StatusCode 0)", self.name).into(),
            )),
            ResponseFrame::Header(h) => {
                self.length = u64::from(h.length);
                self.progress.start(self.name, Some(self.length));
                self.part = Some(self.target.create_file().await?);
                Ok(None)
            }
            ResponseFrame::Data(b) => {
                self.crc.update(&b);
                let n = b.len() as u64;
                if let Some(p) = self.part.as_mut() {
                    p.write_owned(b).await?;
                }
                self.progress.advance(n);
                Ok(None)
            }
            ResponseFrame::End => {
                self.progress.finish();
                let p = self
                    .part
                    .take()
                    .ok_or_else(|| Error::Protocol("data before the header".into()))?;
                Ok(Some(Got {
                    path: p.commit().await?,
                    bytes: self.length,
                    crc: self.crc.value(),
                    files: 1,
                }))
            }
        }
    }
}
