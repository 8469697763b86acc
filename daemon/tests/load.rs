//! Load and abuse against the built `ferryd`: many concurrent connections
//! across the TCP services from several 127.x addresses, with a per-IP cap
//! that refuses the excess in each protocol's way, a ping measured throughout,
//! and the daemon's peak RSS. Quick variant in CI; `-- --ignored` for 1000.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const FILE: usize = 64 * 1024;

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    completed: usize,
    refused: usize,
}

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// One client: connects, waits until every client is connected, transfers.
/// What one client saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// Refused, in its protocol's way (checked).
    Refused,
    /// A download served.
    Served,
    /// An upload acknowledged under this name.
    Stored(String),
}

async fn client(
    i: usize,
    src: String,
    d: (SocketAddr, SocketAddr, SocketAddr),
    all_connected: Arc<tokio::sync::Barrier>,
) -> Seen {
    let (signal, tcp, magic) = d;
    let data = vec![(i % 251) as u8; FILE];
    let name = format!("load-{i}.bin");
    match i % 3 {
        0 => {
            let mut s = connect_from(&src, signal).await;
            all_connected.wait().await;
            let _ = s
                .write_all(&ferry_proto::signal::encode_file(&name, &data).unwrap())
                .await;
            let mut head = [0u8; 5];
            s.read_exact(&mut head).await.unwrap();
            let mut text = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
            s.read_exact(&mut text).await.unwrap();
            match &head[..3] {
                b"DON" => Seen::Stored(String::from_utf8_lossy(&text).into_owned()),
                b"ERR" => {
                    // Refused over the cap, or (waiting at the barrier, idle)
                    // closed to make room for a newer connection.
                    let text = String::from_utf8_lossy(&text);
                    assert!(
                        text.contains("too many transfers from your address")
                            || text.contains("to make room"),
                        "{text}"
                    );
                    Seen::Refused
                }
                other => panic!("{other:?}"),
            }
        }
        1 => {
            let mut s = connect_from(&src, tcp).await;
            all_connected.wait().await;
            let _ = s
                .write_all(&ferry_proto::tcp_upload::encode_header(FILE as u64, &name))
                .await;
            let mut reply = vec![0u8; 256];
            let n = s.read(&mut reply).await.unwrap();
            if &reply[..n] == b"go ahead" {
                s.write_all(&data).await.unwrap();
                s.shutdown().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&rest),
                    format!("STORED: {name}"),
                    "confirmed only once stored"
                );
                Seen::Stored(name)
            } else {
                // Refused over the cap, or (waiting at the barrier before
                // its header) closed to make room for a newer connection.
                let text = String::from_utf8_lossy(&reply[..n]);
                assert!(
                    text.starts_with("ERROR: too many transfers from your address")
                        || text.contains("to make room"),
                    "{text}"
                );
                Seen::Refused
            }
        }
        _ => {
            let mut s = connect_from(&src, magic).await;
            all_connected.wait().await;
            let _ = s.write_all(b"\x49\x7E\x01\x00\x06dl.bin").await;
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            if got.is_empty() {
                Seen::Refused // closed without a byte
            } else {
                assert_eq!(got.len(), 8 + FILE);
                assert_eq!(&got[..8], &[0x49, 0x7E, 2, 1, 0, 1, 0, 0]);
                Seen::Served
            }
        }
    }
}

async fn load(conns: usize, ips: usize, per_ip: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("dl.bin"), vec![7u8; FILE]).unwrap();
    let extra = format!("[limits]\nmax_connections = 4096\nmax_connections_per_ip = {per_ip}\n");
    let mut d = common::start(dir.path(), &root, &extra, None);
    let addrs = (
        d.addr("signal"),
        d.addr("tcp_upload"),
        d.addr("magic_download"),
    );
    let all_connected = Arc::new(tokio::sync::Barrier::new(conns));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..conns {
        let src = format!("127.0.3.{}", 1 + i % ips);
        tasks.spawn(client(i, src, addrs, Arc::clone(&all_connected)));
    }
    // PIN/PON from an address of its own, all the while: one each time a
    // client ends (at most one waiting), so the samples follow the load.
    let signal = addrs.0;
    let rtts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let samples = Arc::clone(&rtts);
    let tick = Arc::new(tokio::sync::Notify::new());
    let ticks = Arc::clone(&tick);
    let pinger = tokio::spawn(async move {
        loop {
            ticks.notified().await;
            let t = Instant::now();
            let mut s = TcpStream::connect(signal).await.unwrap();
            s.write_all(b"PIN").await.unwrap();
            let mut pon = [0u8; 3];
            s.read_exact(&mut pon).await.unwrap();
            assert_eq!(&pon, b"PON");
            samples.lock().unwrap().push(t.elapsed());
        }
    });
    let mut tally = Tally::default();
    let mut acknowledged = Vec::new();
    while let Some(r) = tasks.join_next().await {
        tick.notify_one();
        match r.expect("client") {
            Seen::Refused => tally.refused += 1,
            Seen::Served => tally.completed += 1,
            Seen::Stored(name) => {
                tally.completed += 1;
                acknowledged.push(name);
            }
        }
    }
    let elapsed = started.elapsed();
    pinger.abort();
    let mut rtts = rtts.lock().unwrap().clone();
    rtts.sort();
    let peak_kib = d.peak_rss_kib();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0));
    // The cap: exactly per_ip served at once from each address... at most.
    assert!(
        tally.refused > 0 && tally.refused + tally.completed == conns,
        "{tally:?}"
    );
    assert!(tally.completed >= per_ip * ips.min(conns), "{tally:?}");
    // Every acknowledged upload is there, whole, and nothing else is.
    acknowledged.sort();
    let mut stored: Vec<String> = common::visible_files(&root)
        .into_iter()
        .filter(|n| n.starts_with("load-"))
        .collect();
    stored.sort();
    assert_eq!(
        stored, acknowledged,
        "stored files against acknowledgements"
    );
    for name in stored {
        let i: usize = name[5..name.len() - 4].parse().unwrap();
        assert_eq!(
            std::fs::read(root.join(&name)).unwrap(),
            vec![(i % 251) as u8; FILE],
            "{name}"
        );
    }
    eprintln!(
        "{conns} connections from {ips} addresses (cap {per_ip} each): {} served, {} refused, in {:.2} s; \
         daemon peak RSS {:.1} MiB; ping during the run: {} samples, p50 {:.1} ms, max {:.1} ms",
        tally.completed,
        tally.refused,
        elapsed.as_secs_f64(),
        peak_kib as f64 / 1024.0,
        rtts.len(),
        rtts.get(rtts.len() / 2).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        rtts.iter().max().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
    );
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
    assert!(!rtts.is_empty(), "a ping got through during the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_quick() {
    load(300, 10, 27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long run: 1000 connections"]
async fn concurrent_connections_long() {
    load(1000, 20, 45).await;
}
