//! The TCP handouts' rules: seed 002 (tcp_upload), 003 (magic_download),
//! 004 (signal, in the handout's own pause framing, as its client does).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::udp::unique;
use super::{io, verdict, within, Evidence, Options, Rule, Verdict};
use crate::Result;

pub(super) const UPLOAD: &[Rule] = &[
    Rule {
        id: "tcp_upload.go_ahead",
        says: "the 8-byte big-endian size and the name are answered exactly `go ahead`",
        section: "seed 002, steps 5 to 7",
        advice: false,
    },
    Rule {
        id: "tcp_upload.whole_body",
        says: "a body of many reads (4 MiB) is read whole: no reset, no stall",
        section: "seed 002, step 8",
        advice: false,
    },
    Rule {
        id: "tcp_upload.closes",
        says: "the server closes the connection once the announced bytes are in",
        section: "seed 002, step 9",
        advice: true,
    },
];

pub(super) const MAGIC: &[Rule] = &[
    Rule {
        id: "magic_download.present",
        says: "a FileRequest for a present file is answered 49 7E 02, status 1 and its length (4 bytes, big-endian)",
        section: "seed 003, FileResponse",
        advice: false,
    },
    Rule {
        id: "magic_download.bytes",
        says: "the file's bytes follow the header: exactly its length, then the connection closes",
        section: "seed 003, FileResponse",
        advice: false,
    },
    Rule {
        id: "magic_download.missing",
        says: "a FileRequest for a missing file is answered 49 7E 02, status 0, length 0",
        section: "seed 003, FileResponse",
        advice: false,
    },
    Rule {
        id: "magic_download.bad_magic",
        says: "a request with a wrong magic number (7E 49) is closed without an answer",
        section: "seed 003, checking a FileRequest",
        advice: false,
    },
];

pub(super) const SIGNAL: &[Rule] = &[
    Rule {
        id: "signal.pin",
        says: "PIN is answered PON",
        section: "seed 004, PIN and PON",
        advice: false,
    },
    Rule {
        id: "signal.round_trip",
        says: "files sent with SAF come back whole with RAF on the same connection (0, 1023, 1024, 1025 bytes, and one ending in DON)",
        section: "seed 004, send_file and receive_file",
        advice: false,
    },
    Rule {
        id: "signal.don_alone",
        says: "a file's DON comes alone after its last piece, never glued to it",
        section: "seed 004, send_file",
        advice: false,
    },
    Rule {
        id: "signal.raf_missing",
        says: "RAF of a missing file is answered ERR",
        section: "seed 004, send_file",
        advice: false,
    },
    Rule {
        id: "signal.cls",
        says: "CLS closes the connection",
        section: "seed 004, CLS",
        advice: false,
    },
];

/// The most a check keeps of one answer beyond what it expects: a server
/// streaming without end fails the rule instead of filling memory.
const SLACK: usize = 64 << 10;

/// How long a read waits for the server's next bytes.
const READ_WAIT: Duration = Duration::from_secs(2);
/// The handout client's pause between its sends.
const PAUSE: Duration = Duration::from_millis(100);

async fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = tokio::time::timeout(super::RULE_DEADLINE, TcpStream::connect(addr))
        .await
        .map_err(|_| crate::Error::Unreachable {
            what: addr.to_string(),
            reason: format!(
                "no answer to connect within {} s",
                super::RULE_DEADLINE.as_secs()
            ),
        })?
        .map_err(|e| io(addr, "connecting", e))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// What one read brought within [`READ_WAIT`].
enum Got {
    Bytes(Vec<u8>),
    End,
    Reset,
    Nothing,
}

async fn read_once(s: &mut TcpStream, max: usize) -> Got {
    let mut buf = vec![0u8; max];
    match tokio::time::timeout(READ_WAIT, s.read(&mut buf)).await {
        Err(_) => Got::Nothing,
        Ok(Ok(0)) => Got::End,
        Ok(Ok(n)) => Got::Bytes(buf[..n].to_vec()),
        Ok(Err(_)) => Got::Reset,
    }
}

/// Up to `n` bytes, as many reads as it takes within [`READ_WAIT`] each.
async fn read_up_to(s: &mut TcpStream, n: usize) -> (Vec<u8>, Got) {
    let mut out = Vec::new();
    while out.len() < n {
        match read_once(s, n - out.len()).await {
            Got::Bytes(b) => out.extend(b),
            other => return (out, other),
        }
    }
    (out, Got::Bytes(Vec::new()))
}

async fn write(s: &mut TcpStream, addr: SocketAddr, bytes: &[u8]) -> Result<()> {
    s.write_all(bytes).await.map_err(|e| io(addr, "sending", e))
}

pub(super) async fn check_upload(addr: SocketAddr) -> Result<Vec<Verdict>> {
    const BODY: usize = 4 << 20;
    let mut out = Vec::new();
    let mut s = connect(addr).await?;
    let name = unique("upload.bin");
    let mut header = (BODY as u64).to_be_bytes().to_vec();
    header.extend_from_slice(name.as_bytes());
    write(&mut s, addr, &header).await?;
    // A server dripping bytes is bounded too: the rule's deadline.
    let (go, _) = tokio::time::timeout(super::RULE_DEADLINE, read_up_to(&mut s, 8))
        .await
        .unwrap_or((Vec::new(), Got::Nothing));
    out.push(verdict(go == b"go ahead", "`go ahead` (8 bytes)", &go, ""));
    if go != b"go ahead" {
        out.push(Verdict::Skipped("no `go ahead`".into()));
        out.push(Verdict::Skipped("no `go ahead`".into()));
        return Ok(out);
    }
    let body: Vec<u8> = (0..BODY).map(|i| (i % 253) as u8).collect();
    let mut sent = 0;
    let written = tokio::time::timeout(super::RULE_DEADLINE, async {
        for chunk in body.chunks(64 << 10) {
            s.write_all(chunk).await?;
            sent += chunk.len();
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let expected = "the whole body read";
    match written {
        Err(_) => {
            out.push(Verdict::Fail(Evidence::new(
                expected,
                b"",
                format!("the server stopped reading after about {sent} of {BODY} bytes"),
            )));
            out.push(Verdict::Skipped("the body did not go through".into()));
            return Ok(out);
        }
        Ok(Err(e)) => {
            out.push(Verdict::Fail(Evidence::new(
                expected,
                b"",
                format!("after {sent} of {BODY} bytes: {e} (the server closed with bytes unread)"),
            )));
            out.push(Verdict::Skipped("the body did not go through".into()));
            return Ok(out);
        }
        Ok(Ok(())) => {}
    }
    // What the server says at the end (ferryd: `STORED: name`), then its close.
    let mut tail = Vec::new();
    let end = tokio::time::timeout(super::RULE_DEADLINE, async {
        loop {
            match read_once(&mut s, 4096).await {
                Got::Bytes(_) if tail.len() > SLACK => break Got::Nothing,
                Got::Bytes(b) => tail.extend(b),
                other => break other,
            }
        }
    })
    .await
    .unwrap_or(Got::Nothing);
    out.push(verdict(
        !matches!(end, Got::Reset),
        expected,
        &tail,
        "the connection was reset: the server closed with bytes unread",
    ));
    out.push(verdict(
        matches!(end, Got::End),
        "the connection closed",
        &tail,
        "still open after the body",
    ));
    Ok(out)
}

/// A FileRequest for `name`, with `magic` as its first two bytes.
fn file_request(magic: [u8; 2], name: &[u8]) -> Vec<u8> {
    let n = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut r = vec![magic[0], magic[1], 1];
    r.extend_from_slice(&n.to_be_bytes());
    r.extend_from_slice(name);
    r
}

/// The whole answer to `request` (until the server closes or is quiet),
/// at most `cap` bytes (past that, as if the server were quiet).
async fn ask(addr: SocketAddr, request: &[u8], cap: usize) -> Result<(Vec<u8>, Got)> {
    let mut s = connect(addr).await?;
    write(&mut s, addr, request).await?;
    let mut got = Vec::new();
    loop {
        match read_once(&mut s, 64 << 10).await {
            Got::Bytes(_) if got.len() > cap => return Ok((got, Got::Nothing)),
            Got::Bytes(b) => got.extend(b),
            end => return Ok((got, end)),
        }
    }
}

/// The present file's two rules: the FileResponse header, then the bytes.
async fn present(addr: SocketAddr, opts: &Options) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    match &opts.file {
        None => {
            out.push(Verdict::Skipped(
                "needs --file NAME, a file the server has".into(),
            ));
            out.push(Verdict::Skipped(
                "needs --file NAME, a file the server has".into(),
            ));
        }
        Some(file) => {
            let (got, end) = match tokio::time::timeout(
                super::RULE_DEADLINE,
                ask(
                    addr,
                    &file_request([0x49, 0x7E], file.as_bytes()),
                    opts.expect.as_ref().map_or(64 << 20, Vec::len) + 8 + SLACK,
                ),
            )
            .await
            {
                Ok(r) => r?,
                Err(_) => (Vec::new(), Got::Nothing),
            };
            let header_ok = got.len() >= 8 && got[..4] == [0x49, 0x7E, 2, 1];
            out.push(verdict(
                header_ok,
                "49 7E 02 01 and a 4-byte length",
                &got,
                "",
            ));
            out.push(if !header_ok {
                Verdict::Skipped("no FileResponse header".into())
            } else {
                let len = u32::from_be_bytes([got[4], got[5], got[6], got[7]]) as usize;
                let data = &got[8..];
                let closed = matches!(end, Got::End);
                match &opts.expect {
                    Some(want) if data != want.as_slice() || len != want.len() => Verdict::Fail(Evidence::new(
                        format!("{} bytes, the file's", want.len()),
                        data,
                        format!("the header says {len} bytes; {} came, and they differ from the file", data.len()),
                    )),
                    _ => verdict(
                        data.len() == len && closed,
                        "as many bytes as the header says, then the close",
                        &got[..8],
                        format!("the header says {len} bytes; {} came{}", data.len(), if closed { "" } else { ", and the connection stayed open" }),
                    ),
                }
            });
        }
    }
    Ok(out)
}

pub(super) async fn check_magic(addr: SocketAddr, opts: &Options) -> Result<Vec<Verdict>> {
    let mut out = present(addr, opts).await?;
    out.push(
        within("49 7E 02 00 00 00 00 00", async {
            let (got, _) = ask(
                addr,
                &file_request([0x49, 0x7E], unique("missing.txt").as_bytes()),
                SLACK,
            )
            .await?;
            Ok(verdict(
                got == [0x49, 0x7E, 2, 0, 0, 0, 0, 0],
                "49 7E 02 00 00 00 00 00",
                &got,
                "",
            ))
        })
        .await?,
    );
    out.push(
        within("the connection closed, no bytes", async {
            let (got, end) = ask(addr, &file_request([0x7E, 0x49], b"a.txt"), SLACK).await?;
            Ok(verdict(
                got.is_empty() && !matches!(end, Got::Nothing),
                "the connection closed, no bytes",
                &got,
                if got.is_empty() {
                    "the connection stayed open"
                } else {
                    "an answer came"
                },
            ))
        })
        .await?,
    );
    Ok(out)
}

/// The handout client's SAF: tag, pause, name, pause, data, pause, DON.
async fn saf(s: &mut TcpStream, addr: SocketAddr, name: &str, data: &[u8]) -> Result<()> {
    for part in [&b"SAF"[..], name.as_bytes(), data, b"DON"] {
        if !part.is_empty() {
            write(s, addr, part).await?;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(())
}

/// What a handout RAF brought: the signal, the file's bytes, and whether
/// DON came alone (`None` if it never came alone).
struct Fetched {
    signal: Vec<u8>,
    data: Vec<u8>,
    don_alone: bool,
}

/// The handout client's RAF: tag, pause, name; the signal (one recv of
/// 36); then pieces (one recv of 1024 each, a PON after each) until a
/// piece that is `DON`.
async fn raf(s: &mut TcpStream, addr: SocketAddr, name: &str, cap: usize) -> Result<Fetched> {
    write(s, addr, b"RAF").await?;
    tokio::time::sleep(PAUSE).await;
    write(s, addr, name.as_bytes()).await?;
    let signal = match read_once(s, 36).await {
        Got::Bytes(b) => b,
        _ => Vec::new(),
    };
    let mut data = Vec::new();
    if signal.is_empty() || signal.starts_with(b"ERR") {
        return Ok(Fetched {
            signal,
            data,
            don_alone: false,
        });
    }
    loop {
        match read_once(s, 1024).await {
            Got::Bytes(piece) if piece == b"DON" => {
                return Ok(Fetched {
                    signal,
                    data,
                    don_alone: true,
                })
            }
            Got::Bytes(_) if data.len() > cap => {
                return Ok(Fetched {
                    signal,
                    data,
                    don_alone: false,
                })
            }
            Got::Bytes(piece) => {
                data.extend_from_slice(&piece);
                write(s, addr, b"PON").await?;
            }
            _ => {
                return Ok(Fetched {
                    signal,
                    data,
                    don_alone: false,
                })
            }
        }
    }
}

/// The round trip's two verdicts (the bytes back; DON alone) from what
/// each file's RAF brought.
fn judge_round_trip(results: &[(&Vec<u8>, Fetched)]) -> Vec<Verdict> {
    let mut out = Vec::new();
    let wrong = results.iter().find(|(sent, got)| {
        got.data != **sent || got.signal.starts_with(b"ERR") || got.signal.is_empty()
    });
    out.push(match wrong {
        None => Verdict::Pass,
        Some((sent, got)) => Verdict::Fail(Evidence::new(
            format!("{} bytes back, as sent", sent.len()),
            if got.signal.is_empty() || got.signal.starts_with(b"ERR") {
                &got.signal
            } else {
                &got.data
            },
            if got.signal.is_empty() {
                "no answer to RAF".to_owned()
            } else if got.signal.starts_with(b"ERR") {
                "RAF of the file just sent was answered ERR".to_owned()
            } else {
                format!("{} bytes came back for {} sent", got.data.len(), sent.len())
            },
        )),
    });
    let glued = results.iter().find(|(sent, got)| {
        !got.don_alone && got.data.len() == sent.len() + 3 && got.data.ends_with(b"DON")
    });
    out.push(match (glued, results.iter().all(|(_, g)| g.don_alone)) {
        (Some((_, got)), _) => Verdict::Fail(Evidence::new(
            "the last piece, a pause, then DON alone",
            &got.data[got.data.len().saturating_sub(16)..],
            "DON came glued to the file's last piece: a handout client writes it into the file",
        )),
        (None, true) => Verdict::Pass,
        (None, false) => Verdict::Skipped("a file did not come back to see its DON".into()),
    });
    out
}

/// `signal.cls`: CLS, then the connection closes.
async fn cls(addr: SocketAddr) -> Result<Verdict> {
    within("the connection closed", async {
        let mut s = connect(addr).await?;
        write(&mut s, addr, b"CLS").await?;
        let got = read_once(&mut s, 64).await;
        let bytes = match &got {
            Got::Bytes(b) => b.clone(),
            _ => Vec::new(),
        };
        Ok(verdict(
            matches!(got, Got::End | Got::Reset),
            "the connection closed",
            &bytes,
            "still open after CLS",
        ))
    })
    .await
}

pub(super) async fn check_signal(addr: SocketAddr) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    out.push(
        within("PON", async {
            let mut s = connect(addr).await?;
            write(&mut s, addr, b"PIN").await?;
            // One read, as the handout client's recv: PON and nothing else.
            let got = match read_once(&mut s, 36).await {
                Got::Bytes(b) => b,
                _ => Vec::new(),
            };
            Ok(verdict(got == b"PON", "PON", &got, ""))
        })
        .await?,
    );
    let files: Vec<Vec<u8>> = [0usize, 1023, 1024, 1025]
        .iter()
        .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
        .chain([b"a file that ends in DON".to_vec()])
        .collect();
    let trip = tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = connect(addr).await?;
        let mut results = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let name = unique(&format!("trip-{i}.txt"));
            saf(&mut s, addr, &name, file).await?;
            results.push((file, raf(&mut s, addr, &name, file.len() + SLACK).await?));
            tokio::time::sleep(PAUSE).await;
        }
        Ok::<_, crate::Error>(results)
    })
    .await;
    match trip {
        Err(_) => {
            let e = Evidence::new("each file back whole", b"", "no end within 30 s");
            out.push(Verdict::Fail(e.clone()));
            out.push(Verdict::Skipped("the round trip did not end".into()));
        }
        Ok(Err(e @ crate::Error::Unreachable { .. })) => return Err(e),
        Ok(Err(e)) => {
            out.push(Verdict::Fail(Evidence::new(
                "each file back whole",
                b"",
                e.to_string(),
            )));
            out.push(Verdict::Skipped("the round trip did not end".into()));
        }
        Ok(Ok(results)) => out.extend(judge_round_trip(&results)),
    }
    out.push(
        within("ERR", async {
            let mut s = connect(addr).await?;
            let got = raf(&mut s, addr, &unique("missing.txt"), SLACK).await?;
            Ok(verdict(
                got.signal.starts_with(b"ERR"),
                "ERR",
                &got.signal,
                "",
            ))
        })
        .await?,
    );
    out.push(cls(addr).await?);
    Ok(out)
}
