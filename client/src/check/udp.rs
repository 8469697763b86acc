//! The UDP handouts' rules: seed 000 (udp_upload) and seed 001 (udp_sum,
//! udp_download).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{io, verdict, within, Evidence, Options, Rule, Verdict};
use crate::Result;

pub(super) const UPLOAD: &[Rule] = &[
    Rule {
        id: "udp_upload.buffer_size",
        says: "a file_info is answered with the buffer size, as decimal text",
        section: "seed 000, step 2",
        advice: false,
    },
    Rule {
        id: "udp_upload.ok",
        says: "a whole file whose CRC-32 matches is answered `OK`",
        section: "seed 000, steps 3 and 4",
        advice: false,
    },
    Rule {
        id: "udp_upload.bad_crc",
        says: "a file whose CRC-32 does not match is not answered `OK`",
        section: "seed 000, step 4",
        advice: false,
    },
    Rule {
        id: "udp_upload.resend",
        says: "the same file sent again from a new port (its `OK` lost) is answered `OK` again",
        section: "seed 000 (a lost reply: the client sends again)",
        advice: true,
    },
];

pub(super) const DOWNLOAD: &[Rule] = &[
    Rule {
        id: "udp_download.chunks",
        says:
            "a file name is answered with the file in datagrams of 2048 bytes, the last one shorter",
        section: "seed 001, section 4",
        advice: false,
    },
    Rule {
        id: "udp_download.bytes",
        says: "the datagrams hold exactly the file's bytes (--expect)",
        section: "seed 001, section 4",
        advice: false,
    },
    Rule {
        id: "udp_download.empty_end",
        says: "a file whose size is a multiple of 2048 ends with an empty datagram",
        section: "seed 001, section 4",
        advice: false,
    },
    Rule {
        id: "udp_download.missing",
        says: "a missing file is answered (an error text or an empty datagram), not with silence",
        section: "seed 001, section 4 (the handout is silent on errors)",
        advice: true,
    },
];

pub(super) const SUM: &[Rule] = &[
    Rule {
        id: "udp_sum.answer",
        says: "`name:number` is answered with the server's name and an integer from 1 to 100",
        section: "seed 001, section 3",
        advice: false,
    },
    Rule {
        id: "udp_sum.layout",
        says: "the answer is laid out as the request was (`name:number`)",
        section: "seed 001, section 3",
        advice: true,
    },
    Rule {
        id: "udp_sum.out_of_range",
        says: "a number outside 1..100 is not answered as a sum (the server stops, or says why)",
        section: "seed 001, section 3",
        advice: false,
    },
];

/// How long the checker waits for a UDP reply.
const REPLY_WAIT: Duration = Duration::from_secs(2);
/// udp_download's datagram.
const CHUNK: usize = 2048;

async fn socket(addr: SocketAddr) -> Result<UdpSocket> {
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| io(addr, "opening a UDP socket", e))?;
    sock.connect(addr)
        .await
        .map_err(|e| io(addr, "opening a UDP socket", e))?;
    Ok(sock)
}

/// The next datagram within `wait`; `None` if none came.
async fn reply(sock: &UdpSocket, addr: SocketAddr, wait: Duration) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Err(_) => Ok(None),
        Ok(Ok(n)) => Ok(Some(buf[..n].to_vec())),
        Ok(Err(e)) => Err(io(addr, "receiving", e)),
    }
}

async fn send(sock: &UdpSocket, addr: SocketAddr, bytes: &[u8]) -> Result<()> {
    sock.send(bytes)
        .await
        .map(|_| ())
        .map_err(|e| io(addr, "sending", e))
}

fn file_info(name: &str, data: &[u8], crc: u32) -> Vec<u8> {
    format!(
        "{{\"checksum\": \"{crc:08X}\", \"name\": \"{name}\", \"size\": {}}}",
        data.len()
    )
    .into_bytes()
}

/// A name no other run of the checker uses.
pub(super) fn unique(stem: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("ferry-check-{}-{nanos:09}-{stem}", std::process::id())
}

/// The test file: 3000 bytes, three datagrams of the usual buffer size.
fn upload_data() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// file_info, the buffer size, the data: the reply to the data (or none).
async fn upload(
    addr: SocketAddr,
    name: &str,
    data: &[u8],
    crc: u32,
) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>)> {
    let sock = socket(addr).await?;
    send(&sock, addr, &file_info(name, data, crc)).await?;
    let first = reply(&sock, addr, REPLY_WAIT).await?;
    let Some(size) = first.as_deref().and_then(buffer_size) else {
        return Ok((first, None));
    };
    for chunk in data.chunks(size) {
        send(&sock, addr, chunk).await?;
    }
    Ok((first, reply(&sock, addr, REPLY_WAIT).await?))
}

fn buffer_size(reply: &[u8]) -> Option<usize> {
    std::str::from_utf8(reply)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=65_507).contains(n))
}

fn is_ok(reply: &Option<Vec<u8>>) -> bool {
    reply.as_deref().map(<[u8]>::trim_ascii) == Some(b"OK")
}

pub(super) async fn check_upload(addr: SocketAddr) -> Result<Vec<Verdict>> {
    let data = upload_data();
    let crc = ferry_proto::crc::checksum(&data);
    let name = unique("upload.bin");
    let mut out = Vec::new();
    let (first, last) =
        match tokio::time::timeout(super::RULE_DEADLINE, upload(addr, &name, &data, crc)).await {
            Ok(r) => r?,
            Err(_) => (None, None),
        };
    let expected = "the buffer size as decimal text, e.g. `1452`";
    out.push(match &first {
        None => Verdict::Fail(Evidence::new(expected, b"", "no answer to file_info")),
        Some(r) => verdict(buffer_size(r).is_some(), expected, r, "not a buffer size"),
    });
    out.push(match (&first, &last) {
        (Some(r), _) if buffer_size(r).is_none() => {
            Verdict::Skipped("no buffer size to send the data in".into())
        }
        (_, last) => verdict(
            is_ok(last),
            "`OK`",
            last.as_deref().unwrap_or_default(),
            if last.is_none() {
                "no answer to the data"
            } else {
                ""
            },
        ),
    });
    out.push(
        within("no `OK` (silence, or an error)", async {
            let (_, last) = upload(addr, &unique("bad-crc.bin"), &data, crc ^ 1).await?;
            Ok(verdict(
                !is_ok(&last),
                "no `OK` (silence, or an error)",
                last.as_deref().unwrap_or_default(),
                "a file with a wrong CRC-32 was answered OK",
            ))
        })
        .await?,
    );
    out.push(
        within("`OK`", async {
            let (_, last) = upload(addr, &name, &data, crc).await?;
            Ok(verdict(
                is_ok(&last),
                "`OK`",
                last.as_deref().unwrap_or_default(),
                "the file sent again was not answered OK",
            ))
        })
        .await?,
    );
    Ok(out)
}

/// Asks for `name` and reads datagrams until a short one (or silence),
/// then a moment more for any that should not have followed it: each
/// datagram's bytes, whether a short one came, and how many came after it.
async fn download(
    addr: SocketAddr,
    name: &[u8],
    cap: usize,
) -> Result<(Vec<Vec<u8>>, bool, usize)> {
    let sock = socket(addr).await?;
    send(&sock, addr, name).await?;
    let mut got = Vec::new();
    let mut bytes = 0;
    loop {
        // A server that never ends fails the rule, not the checker's memory.
        if bytes > cap {
            return Ok((got, false, 0));
        }
        match reply(&sock, addr, REPLY_WAIT).await? {
            None => return Ok((got, false, 0)),
            Some(d) => {
                let last = d.len() < CHUNK;
                bytes += d.len();
                got.push(d);
                if last {
                    break;
                }
            }
        }
    }
    let mut after = 0;
    while let Some(d) = reply(&sock, addr, Duration::from_millis(300)).await? {
        got.push(d);
        after += 1;
        if after > 64 {
            break;
        }
    }
    Ok((got, true, after))
}

pub(super) async fn check_download(addr: SocketAddr, opts: &Options) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    let Some(file) = &opts.file else {
        let skip = || Verdict::Skipped("needs --file NAME, a file the server has".into());
        out.extend([skip(), skip(), skip()]);
        out.push(missing(addr).await?);
        return Ok(out);
    };
    let (datagrams, ended, after) = match tokio::time::timeout(
        super::RULE_DEADLINE,
        download(
            addr,
            file.as_bytes(),
            opts.expect.as_ref().map_or(64 << 20, Vec::len) + 64 * CHUNK,
        ),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => (Vec::new(), false, 0),
    };
    let joined: Vec<u8> = datagrams.concat();
    let sizes_ok = datagrams
        .iter()
        .take(datagrams.len().saturating_sub(1))
        .all(|d| d.len() == CHUNK);
    let expected = "datagrams of 2048 bytes, then a shorter one";
    out.push(if datagrams.is_empty() {
        Verdict::Fail(Evidence::new(expected, b"", "no answer"))
    } else if !ended {
        Verdict::Fail(Evidence::new(
            expected,
            datagrams.last().map(Vec::as_slice).unwrap_or_default(),
            format!(
                "{} bytes in {} datagrams, then silence: no shorter datagram ended the file",
                joined.len(),
                datagrams.len()
            ),
        ))
    } else if after > 0 {
        let odd = datagrams.iter().find(|d| d.len() < CHUNK).map(Vec::as_slice).unwrap_or_default();
        Verdict::Fail(Evidence::new(
            expected,
            odd,
            format!("a datagram of {} bytes, then {after} more: a client stops at the first shorter one", odd.len()),
        ))
    } else {
        let odd = datagrams.iter().find(|d| d.len() != CHUNK).map(Vec::as_slice).unwrap_or_default();
        verdict(sizes_ok, expected, odd, "a datagram before the last is not 2048 bytes")
    });
    out.push(match &opts.expect {
        None => Verdict::Skipped("needs --expect LOCAL, the file's content".into()),
        Some(want) => {
            let at = joined.iter().zip(want).take_while(|(a, b)| a == b).count();
            verdict(
                &joined == want,
                format!("{} bytes, the file's", want.len()).as_str(),
                &joined[at.min(joined.len())..],
                format!("{} bytes came; they differ from byte {at}", joined.len()),
            )
        }
    });
    let size = opts.expect.as_ref().map_or(joined.len(), Vec::len);
    out.push(if size % CHUNK != 0 || size == 0 {
        Verdict::Skipped(format!(
            "the file's {size} bytes are not a multiple of 2048"
        ))
    } else {
        let last = datagrams.last().map(Vec::as_slice).unwrap_or_default();
        verdict(
            ended && last.is_empty(),
            "an empty datagram after the last full one",
            last,
            "",
        )
    });
    out.push(missing(addr).await?);
    Ok(out)
}

async fn missing(addr: SocketAddr) -> Result<Verdict> {
    within("an answer", async {
        let sock = socket(addr).await?;
        send(&sock, addr, unique("missing.txt").as_bytes()).await?;
        let r = reply(&sock, addr, REPLY_WAIT).await?;
        Ok(verdict(
            r.is_some(),
            "an error text or an empty datagram",
            b"",
            "silence",
        ))
    })
    .await
}

/// A sum answer: a name and an integer in 1..=100, and its separator.
fn sum_answer(reply: &[u8]) -> Option<(String, i64, char)> {
    let text = std::str::from_utf8(reply).ok()?.trim();
    // An error is no sum, whatever number its words end with.
    if text.to_ascii_lowercase().starts_with("error") {
        return None;
    }
    let cut = text.rfind([':', ',', ';', '|', '\n', ' '])?;
    let sep = text[cut..].chars().next()?;
    let (name, number) = (text[..cut].trim(), text[cut + 1..].trim());
    let number: i64 = number.parse().ok()?;
    (!name.is_empty() && (1..=100).contains(&number)).then(|| (name.to_owned(), number, sep))
}

pub(super) async fn check_sum(addr: SocketAddr) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    let asked = tokio::time::timeout(super::RULE_DEADLINE, async {
        let sock = socket(addr).await?;
        send(&sock, addr, b"Client of ferry check:7").await?;
        reply(&sock, addr, REPLY_WAIT).await
    })
    .await;
    let got = match asked {
        Err(_) => None,
        Ok(r) => r?,
    };
    let expected = "the server's name and an integer from 1 to 100, e.g. `Server of Ann:42`";
    let parsed = got.as_deref().and_then(sum_answer);
    out.push(match &got {
        None => Verdict::Fail(Evidence::new(expected, b"", "silence")),
        Some(g) => verdict(
            parsed.is_some(),
            expected,
            g,
            "not a name and an integer from 1 to 100",
        ),
    });
    out.push(match (&parsed, &got) {
        (Some((_, _, sep)), Some(g)) => verdict(
            *sep == ':',
            "`name:number`",
            g,
            format!("separated by {sep:?}"),
        ),
        _ => Verdict::Skipped("no answer to compare the layout with".into()),
    });
    out.push(
        within("no sum (silence, or an error)", async {
            let sock = socket(addr).await?;
            send(&sock, addr, b"Client of ferry check:500").await?;
            // A server that stops (as the lab text asks) may send an ICMP
            // port-unreachable now: that is silence, not an absent server.
            let r = match reply(&sock, addr, REPLY_WAIT).await {
                Ok(r) => r,
                Err(crate::Error::Unreachable { .. }) => None,
                Err(e) => return Err(e),
            };
            let got = r.unwrap_or_default();
            Ok(verdict(
                sum_answer(&got).is_none(),
                "no sum (silence, or an error)",
                &got,
                "500 was answered as a sum",
            ))
        })
        .await?,
    );
    Ok(out)
}
