//! Cut transfers, retries, concurrency, caps and shutdown: the daemon never
//! shows a partial file, never loses an acknowledged one, and keeps serving.

use ferry_config::ServiceId;
use std::net::SocketAddr;
use std::time::Duration;

use ferry_config::{Dur, Size};
use ferry_proto::signal::SignalFrame;
use ferry_tests::handout::{self, UdpUploadOutcome};
use ferry_tests::{assert_same_bytes, data, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn ms(n: u64) -> Dur {
    Dur(Duration::from_millis(n))
}

/// Polls until `cond` holds (the effect of a transfer with no acknowledgement).
async fn wait_for(cond: impl Fn() -> bool) {
    ferry_tests::eventually("the transfer's effect", cond).await
}

#[tokio::test]
async fn cut_uploads_leave_nothing_visible() {
    let d = TestDaemon::start_with(|c| {
        c.limits.idle_timeout = ms(300);
        c.udp_upload.session_timeout = ms(300);
    })
    .await;
    // tcp_upload: half the data, then the client disappears.
    let mut s = TcpStream::connect(d.addrs[ServiceId::TcpUpload].unwrap())
        .await
        .unwrap();
    s.write_all(&ferry_proto::tcp_upload::encode_header(1000, "cut.bin"))
        .await
        .unwrap();
    let mut go = [0u8; 8];
    s.read_exact(&mut go).await.unwrap();
    s.write_all(&[1u8; 500]).await.unwrap();
    drop(s);
    // tcp_upload: half the data, then silence (the idle timeout ends it).
    let mut stalled = TcpStream::connect(d.addrs[ServiceId::TcpUpload].unwrap())
        .await
        .unwrap();
    stalled
        .write_all(&ferry_proto::tcp_upload::encode_header(1000, "stall.bin"))
        .await
        .unwrap();
    stalled.read_exact(&mut go).await.unwrap();
    stalled.write_all(&[1u8; 500]).await.unwrap();
    // signal SAF cut in the middle.
    let mut sig = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    let wire = ferry_proto::signal::encode_file("saf.bin", &[2u8; 1000]).unwrap();
    sig.send_raw(&wire[..600]).await;
    drop(sig);
    // udp_upload: half the datagrams, then nothing.
    let u = handout::udp_socket().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    u.send_to(&handout::file_info("udp.bin", &[3u8; 3000]), addr)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    u.recv_from(&mut buf).await.unwrap();
    u.send_to(&[3u8; 1452], addr).await.unwrap();
    // The stalled TCP upload is told why when it times out.
    let mut reply = Vec::new();
    let _ = stalled.read_to_end(&mut reply).await;
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "ERROR: timed out waiting for data"
    );
    // The UDP session times out and says so.
    let (n, _) = u.recv_from(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("ERROR: timed out"));
    wait_for(|| d.work_entries() == 0).await;
    assert_eq!(d.visible_files(), Vec::<String>::new());
    d.stop().await;
}

#[tokio::test]
async fn udp_retries_from_new_ports_store_one_copy() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    let bytes = data::bytes(20_000, 5);
    // First attempt loses a datagram: no OK comes, the session is left waiting.
    let first = handout::udp_socket().await;
    first
        .send_to(&handout::file_info("retry.bin", &bytes), addr)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    first.recv_from(&mut buf).await.unwrap();
    for (i, chunk) in bytes.chunks(1452).enumerate() {
        if i != 3 {
            first.send_to(chunk, addr).await.unwrap();
        }
    }
    // Like the handout: wait 1 s for OK, which does not come.
    let waited = tokio::time::timeout(Duration::from_secs(1), first.recv_from(&mut buf)).await;
    assert!(waited.is_err(), "no reply to an incomplete upload");
    // The handout client retries from a new socket: OK, stored once.
    let outcome = handout::udp_upload(addr, "retry.bin", &bytes, true, 3).await;
    assert_eq!(outcome, UdpUploadOutcome::Ok { attempts: 1 });
    assert_eq!(d.visible_files(), ["retry.bin"]);
    // The OK was "lost": the client sends it all again and is acknowledged
    // again, without a second copy.
    let outcome = handout::udp_upload(addr, "retry.bin", &bytes, true, 3).await;
    assert_eq!(outcome, UdpUploadOutcome::Ok { attempts: 1 });
    assert_eq!(d.visible_files(), ["retry.bin"]);
    assert_same_bytes(&d.read("retry.bin"), &bytes, "retry.bin");
    // A different file under the same name is kept beside it.
    let other = data::bytes(100, 6);
    handout::udp_upload(addr, "retry.bin", &other, false, 3).await;
    assert_eq!(d.visible_files(), ["retry (1).bin", "retry.bin"]);
    assert_eq!(d.read("retry (1).bin"), other);
    d.stop().await;
}

/// Starts an upload from a fresh socket and sends all but the last datagram,
/// as a handout client whose last datagram was lost: the session waits.
async fn abandoned_upload(addr: SocketAddr, name: &str, bytes: &[u8]) {
    let sock = handout::udp_socket().await;
    sock.send_to(&handout::file_info(name, bytes), addr)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    let size: usize = std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
    let chunks: Vec<_> = bytes.chunks(size).collect();
    for chunk in &chunks[..chunks.len() - 1] {
        sock.send_to(chunk, addr).await.unwrap();
    }
}

#[tokio::test]
async fn a_retry_at_the_per_address_cap_takes_the_abandoned_sessions_place() {
    let d = TestDaemon::start_with(|c| c.udp_upload.max_sessions_per_ip = 2).await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    let a = data::bytes(5000, 1);
    let b = data::bytes(5000, 2);
    abandoned_upload(addr, "a.bin", &a).await;
    abandoned_upload(addr, "b.bin", &b).await;
    // The address is at its cap; a third upload is refused...
    let outcome = handout::udp_upload(addr, "c.bin", b"c", false, 1).await;
    assert_eq!(
        outcome,
        UdpUploadOutcome::NotANumber(
            "ERROR: too many transfers from your address (2 at once); try again shortly".into()
        )
    );
    // ...but the retry of a.bin from a new port, once its old session has
    // been idle past the abandonment time, replaces it and is stored
    // (retried as a student would: a refusal changes nothing).
    ferry_tests::eventually_async("the retry replaces the abandoned session", || async {
        handout::udp_upload(addr, "a.bin", &a, true, 1).await
            == UdpUploadOutcome::Ok { attempts: 1 }
    })
    .await;
    assert_same_bytes(&d.read("a.bin"), &a, "a.bin");
    // b.bin's session was not touched: its retry still completes.
    let outcome = handout::udp_upload(addr, "b.bin", &b, true, 1).await;
    assert_eq!(outcome, UdpUploadOutcome::Ok { attempts: 1 });
    assert_eq!(d.visible_files(), ["a.bin", "b.bin"]);
    d.stop().await;
}

#[tokio::test]
async fn twenty_handout_clients_from_one_address_all_get_ok() {
    // The default caps: a lab room behind one NAT address.
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("student-{i}.py"),
                data::bytes(30_000 + i * 100, i as u64),
            )
        })
        .collect();
    let same = data::bytes(20_000, 99);
    let distinct = files
        .iter()
        .map(|(name, bytes)| handout::udp_upload(addr, name, bytes, true, 5));
    let identical = (0..20).map(|_| handout::udp_upload(addr, "lab1.py", &same, true, 5));
    let (distinct, identical) = tokio::join!(
        futures::future::join_all(distinct),
        futures::future::join_all(identical)
    );
    for outcome in distinct.iter().chain(&identical) {
        assert!(
            matches!(outcome, UdpUploadOutcome::Ok { .. }),
            "{outcome:?}"
        );
    }
    for (name, bytes) in &files {
        assert_same_bytes(&d.read(name), bytes, name);
    }
    // Twenty identical uploads of one name: one copy.
    assert_same_bytes(&d.read("lab1.py"), &same, "lab1.py");
    assert_eq!(d.visible_files().len(), 21);
    d.stop().await;
}

#[tokio::test]
async fn a_fresh_file_info_restarts_the_session() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    let sock = handout::udp_socket().await;
    let mut buf = [0u8; 64];
    sock.send_to(&handout::file_info("a.bin", &[1u8; 3000]), addr)
        .await
        .unwrap();
    sock.recv_from(&mut buf).await.unwrap();
    sock.send_to(&[1u8; 1452], addr).await.unwrap();
    // Same socket, a different file: the first upload is dropped.
    sock.send_to(&handout::file_info("b.bin", b"bee"), addr)
        .await
        .unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"1452");
    sock.send_to(b"bee", addr).await.unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"OK");
    wait_for(|| d.work_entries() == 0).await;
    assert_eq!(d.visible_files(), ["b.bin"]);
    d.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_mixed_transfers_are_byte_identical() {
    // All 200 clients share 127.0.0.1 here; the per-IP cap has its own test.
    let d = TestDaemon::start_with(|c| {
        c.limits.max_connections_per_ip = 256;
        c.udp_upload.max_sessions_per_ip = 64;
        c.udp_download.max_downloads_per_ip = 64;
    })
    .await;
    let a = d.addrs;
    // Files to download, already stored.
    for i in 0..50u64 {
        d.put(
            &format!("dl{i}.bin"),
            &data::bytes(10_000 + i as usize * 997, 1000 + i),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        tasks.spawn(async move {
            let size = 1_000 + (i as usize * 7919) % 200_000;
            let bytes = data::bytes(size, i);
            let name = format!("up{i}.bin");
            match i % 8 {
                0 => {
                    let o = handout::udp_upload(
                        a[ServiceId::UdpUpload].unwrap(),
                        &name,
                        &bytes,
                        true,
                        10,
                    )
                    .await;
                    assert!(matches!(o, UdpUploadOutcome::Ok { .. }), "{name}: {o:?}");
                    Some((name, bytes))
                }
                1 | 2 => {
                    assert_eq!(
                        handout::tcp_upload(a[ServiceId::TcpUpload].unwrap(), &name, &bytes).await,
                        b"go ahead"
                    );
                    Some((name, bytes))
                }
                3 | 4 => {
                    let mut c = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
                    assert_eq!(
                        c.upload(&name, &bytes).await,
                        Some(SignalFrame::Done(name.clone()))
                    );
                    Some((name, bytes))
                }
                5 => {
                    let j = i % 50;
                    let want = data::bytes(10_000 + j as usize * 997, 1000 + j);
                    let wire = handout::magic_download(
                        a[ServiceId::MagicDownload].unwrap(),
                        format!("dl{j}.bin").as_bytes(),
                        false,
                    )
                    .await;
                    assert_same_bytes(handout::parse_magic(&wire).2, &want, "magic");
                    None
                }
                6 => {
                    let j = i % 50;
                    let want = data::bytes(10_000 + j as usize * 997, 1000 + j);
                    let mut c = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
                    c.send(SignalFrame::RequestFile(format!("dl{j}.bin"))).await;
                    assert_same_bytes(&c.recv_file().await.unwrap().1, &want, "RAF");
                    None
                }
                _ => {
                    let j = i % 50;
                    let want = data::bytes(10_000 + j as usize * 997, 1000 + j);
                    let got = handout::udp_download(
                        a[ServiceId::UdpDownload].unwrap(),
                        format!("dl{j}.bin").as_bytes(),
                    )
                    .await;
                    assert_same_bytes(&got.expect("download ends"), &want, "udp download");
                    None
                }
            }
        });
    }
    let mut uploaded = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(pair) = r.expect("client task") {
            uploaded.push(pair);
        }
    }
    let mut d = d;
    d.stop_in_place().await; // the TCP uploads have no acknowledgement: let them finish
    for (name, bytes) in &uploaded {
        assert_same_bytes(&d.read(name), bytes, name);
    }
    assert_eq!(d.visible_files().len(), 50 + uploaded.len());
    assert_eq!(d.work_entries_settled().await, 0);
}

#[tokio::test]
async fn cls_and_bad_sums_never_stop_the_daemon() {
    let d = TestDaemon::start().await;
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    c.send(SignalFrame::Close).await;
    assert_eq!(c.recv().await, None, "CLS closes this connection");
    for bad in [&b"Ann:0"[..], b"Ann:101", b"Ann:-1", b"Ann:1000000"] {
        assert!(handout::udp_sum(d.addrs[ServiceId::UdpSum].unwrap(), bad)
            .await
            .starts_with(b"ERROR: "));
    }
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    c.send(SignalFrame::Ping).await;
    assert_eq!(c.recv().await, Some(SignalFrame::Pong));
    assert_eq!(
        handout::udp_sum(d.addrs[ServiceId::UdpSum].unwrap(), b"Ann:5").await,
        b"Server of ferry:42"
    );
    d.stop().await;
}

/// A daemon whose TCP connections are capped at `total`, `per_ip` per address.
async fn capped(total: usize, per_ip: usize) -> TestDaemon {
    TestDaemon::start_with(|c| {
        c.limits.max_connections = total;
        c.limits.max_connections_per_ip = per_ip;
    })
    .await
}

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// A signal connection from `src` in the middle of an upload (its header
/// whole, 10 of 1000 bytes sent): busy, so the cap cannot close it.
async fn mid_upload(src: &str, to: SocketAddr, name: &str) -> TcpStream {
    let mut s = connect_from(src, to).await;
    s.write_all(b"PIN").await.unwrap();
    let mut pon = [0u8; 3];
    s.read_exact(&mut pon).await.unwrap();
    let mut frame = b"SAF".to_vec();
    frame.extend_from_slice(&(name.len() as u16).to_be_bytes());
    frame.extend_from_slice(name.as_bytes());
    frame.extend_from_slice(&1000u64.to_be_bytes());
    frame.extend_from_slice(&[7u8; 10]);
    s.write_all(&frame).await.unwrap();
    s
}

#[tokio::test]
async fn per_ip_caps_refuse_the_excess_in_each_protocols_way() {
    let d = TestDaemon::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    let a = d.addrs;
    // Two busy signal connections from 127.0.0.1 (each in the middle of an
    // upload, so neither is idle and none can be closed to make room) fill
    // its share.
    let mut held = Vec::new();
    for i in 0..2 {
        held.push(
            mid_upload(
                "127.0.0.1",
                a[ServiceId::Signal].unwrap(),
                &format!("held{i}.bin"),
            )
            .await,
        );
    }
    let mut c = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
    assert!(
        matches!(c.recv().await, Some(SignalFrame::Error(r)) if r.contains("too many transfers from your address"))
    );
    let reply = handout::tcp_upload(a[ServiceId::TcpUpload].unwrap(), "x", b"x").await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("ERROR: too many transfers from your address")
    );
    let wire = handout::magic_download(a[ServiceId::MagicDownload].unwrap(), b"x", false).await;
    assert!(wire.is_empty(), "magic refuses by closing");
    // Another address is still served.
    let mut s = connect_from("127.0.0.2", a[ServiceId::Signal].unwrap()).await;
    s.write_all(b"PIN").await.unwrap();
    let mut pon = [0u8; 3];
    s.read_exact(&mut pon).await.unwrap();
    assert_eq!(&pon, b"PON");
    // A slot frees when a connection ends (a transfer, not a PIN, which is
    // answered even over the cap): asked until ferryd has seen the close.
    drop(held.pop());
    ferry_tests::eventually_async("a freed slot is reused", || async {
        handout::tcp_upload(a[ServiceId::TcpUpload].unwrap(), "freed.txt", b"freed").await
            == b"go ahead"
    })
    .await;
    // The other one is mid-request, a transfer in flight: it would hold the
    // stop for the grace period.
    drop(held);
    d.stop().await;
}

#[tokio::test]
async fn udp_download_answers_only_allowed_networks() {
    let d = TestDaemon::start_with(|c| c.udp_download.allow = vec!["10.0.0.0/8".parse().unwrap()])
        .await;
    d.put("f", b"data");
    let sock = handout::udp_socket().await;
    sock.send_to(b"f", d.addrs[ServiceId::UdpDownload].unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    // Silence is the answer to a source outside the allow-list (no amplification).
    let r = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await;
    assert!(r.is_err(), "no datagram for a disallowed source");
    d.stop().await;
}

#[tokio::test]
async fn uploads_over_the_size_limit_are_refused_before_writing() {
    let d = TestDaemon::start_with(|c| c.limits.max_file_size = Size(10_000)).await;
    let big = vec![0u8; 10_001];
    let o = handout::udp_upload(
        d.addrs[ServiceId::UdpUpload].unwrap(),
        "big",
        &big,
        false,
        1,
    )
    .await;
    assert!(matches!(o, UdpUploadOutcome::NotANumber(t) if t.contains("the limit is 10000")));
    let reply = handout::tcp_upload(d.addrs[ServiceId::TcpUpload].unwrap(), "big", &big).await;
    assert!(String::from_utf8_lossy(&reply).contains("the limit is 10000"));
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    assert!(
        matches!(c.upload("big", &big).await, Some(SignalFrame::Error(r)) if r.contains("the limit is 10000"))
    );
    assert_eq!(d.visible_files(), Vec::<String>::new());
    d.stop().await;
}

#[tokio::test]
async fn shutdown_lets_transfers_finish_within_the_grace_and_aborts_the_rest() {
    let mut d = TestDaemon::start_with(|c| c.shutdown_grace = ms(1500)).await;
    let a = d.addrs;
    let bytes = data::bytes(100_000, 77);
    // In flight when shutdown starts, finishes during the grace period.
    let mut finishing = TcpStream::connect(a[ServiceId::TcpUpload].unwrap())
        .await
        .unwrap();
    finishing
        .write_all(&ferry_proto::tcp_upload::encode_header(
            100_000,
            "finish.bin",
        ))
        .await
        .unwrap();
    let mut go = [0u8; 8];
    finishing.read_exact(&mut go).await.unwrap();
    finishing.write_all(&bytes[..50_000]).await.unwrap();
    // In flight and stalled: aborted when the grace period ends.
    let mut stalled = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
    let wire = ferry_proto::signal::encode_file("stall.bin", &bytes).unwrap();
    stalled.send_raw(&wire[..30_000]).await;
    // An idle connection is closed at once.
    let mut idle = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
    idle.send(SignalFrame::Ping).await;
    assert_eq!(idle.recv().await, Some(SignalFrame::Pong));

    let serving = d.begin_stop();
    assert_eq!(
        idle.recv().await,
        None,
        "idle connections close at shutdown"
    );
    // New connections are no longer accepted.
    wait_for(|| std::net::TcpStream::connect(a[ServiceId::Signal].unwrap()).is_err()).await;
    finishing.write_all(&bytes[50_000..]).await.unwrap();
    drop(finishing);
    serving.await.unwrap();
    assert!(
        matches!(stalled.recv().await, Some(SignalFrame::Error(r)) if r.contains("shutting down"))
    );
    assert_eq!(d.visible_files(), ["finish.bin"]);
    assert_same_bytes(&d.read("finish.bin"), &bytes, "finish.bin");
    assert_eq!(d.work_entries_settled().await, 0);
}

#[tokio::test]
async fn services_bind_to_ipv6() {
    let d = TestDaemon::start_with(|c| {
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        c.signal.bind = v6;
        c.udp_sum.bind = v6;
        c.tcp_upload.bind = v6;
    })
    .await;
    let sig = d.addrs[ServiceId::Signal].unwrap();
    assert!(sig.is_ipv6());
    let mut c = handout::Signal::connect(sig).await;
    c.send(SignalFrame::Ping).await;
    assert_eq!(c.recv().await, Some(SignalFrame::Pong));
    let reply = handout::tcp_upload(
        d.addrs[ServiceId::TcpUpload].unwrap(),
        "v6.txt",
        b"over IPv6",
    )
    .await;
    assert_eq!(reply, b"go ahead");
    let sock = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    sock.send_to(b"Ann:3", d.addrs[ServiceId::UdpSum].unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"Server of ferry:42");
    wait_for(|| d.visible_files() == ["v6.txt"]).await;
    assert_eq!(d.read("v6.txt"), b"over IPv6");
    d.stop().await;
}

#[tokio::test]
async fn two_clients_behind_one_address_sending_the_same_file_both_succeed() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    let bytes = data::bytes(200_000, 42);
    let (a, b) = tokio::join!(
        handout::udp_upload(addr, "innopolis.jpg", &bytes, false, 1),
        handout::udp_upload(addr, "innopolis.jpg", &bytes, false, 1),
    );
    assert_eq!(
        (a, b),
        (
            UdpUploadOutcome::Ok { attempts: 1 },
            UdpUploadOutcome::Ok { attempts: 1 }
        )
    );
    // Identical content: the second is acknowledged as the same file.
    assert_eq!(d.visible_files(), ["innopolis.jpg"]);
    d.stop().await;
}

#[tokio::test]
async fn reload_applies_limits_and_reports_what_needs_a_restart() {
    let d = TestDaemon::start().await;
    let mut new = (*d.controller.config()).clone();
    new.limits.max_file_size = Size(10);
    new.udp_sum.server_name = "Reloaded".into();
    new.signal.bind = "127.0.0.1:9".parse().unwrap();
    new.storage.path = "/elsewhere".into();
    let report = d.controller.reload(new);
    assert!(report.changed);
    assert_eq!(report.needs_restart, ["storage", "signal.bind"]);
    let now = d.controller.config();
    assert_eq!(now.signal.bind.port(), 0, "the bound address is kept");
    // New transfers see the new limits and values at once.
    assert_eq!(
        handout::udp_sum(d.addrs[ServiceId::UdpSum].unwrap(), b"Ann:1").await,
        b"Reloaded:42"
    );
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    assert!(
        matches!(c.upload("x", &[0u8; 11]).await, Some(SignalFrame::Error(r)) if r.contains("the limit is 10"))
    );
    d.stop().await;
}

#[tokio::test]
async fn a_file_whose_bytes_are_a_file_info_uploads_over_udp() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    // One chunk that parses as a file_info, and a two-chunk file whose last
    // chunk does.
    let json = handout::file_info("other.bin", b"whatever");
    let mut two = data::bytes(1452, 3);
    two.extend_from_slice(&json);
    for (name, bytes) in [("config.json", json.clone()), ("two.bin", two)] {
        let outcome = handout::udp_upload(addr, name, &bytes, false, 1).await;
        assert_eq!(outcome, UdpUploadOutcome::Ok { attempts: 1 }, "{name}");
        assert_same_bytes(&d.read(name), &bytes, name);
    }
    assert_eq!(d.visible_files(), ["config.json", "two.bin"]);
    d.stop().await;
}

#[tokio::test]
async fn udp_downloads_have_a_byte_budget_per_address() {
    let d = TestDaemon::start_with(|c| c.udp_download.budget_per_ip = Size(100_000)).await;
    let addr = d.addrs[ServiceId::UdpDownload].unwrap();
    d.put("a.bin", &data::bytes(60_000, 1));
    let got = handout::udp_download(addr, b"a.bin")
        .await
        .expect("the first fits");
    assert_eq!(got.len(), 60_000);
    // The second would go over: refused at its start, with the reason.
    let sock = handout::udp_socket().await;
    sock.send_to(b"a.bin", addr).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("ERROR: your address has used its download budget"),
        "{text}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_udp_download_stopped_by_icmp_costs_the_budget_only_what_it_sent() {
    let d = TestDaemon::start_with(|c| c.udp_download.budget_per_ip = Size(100_000)).await;
    let addr = d.addrs[ServiceId::UdpDownload].unwrap();
    d.put("a.bin", &data::bytes(60_000, 1));
    // A request from a port closed at once: the first datagram meets ICMP
    // port unreachable, and the rest of the block is given back.
    let gone = handout::udp_socket().await;
    gone.send_to(b"a.bin", addr).await.unwrap();
    drop(gone);
    // Charged whole, 60,000 + 60,000 would be over the budget. Asked until
    // the stopped download has ended (a refusal costs nothing).
    ferry_tests::eventually_async("the budget still holds the file", || async {
        handout::udp_download(addr, b"a.bin")
            .await
            .is_some_and(|got| got.len() == 60_000)
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn a_slowly_paced_udp_download_does_not_hold_up_shutdown() {
    let mut d = TestDaemon::start_with(|c| {
        c.udp_download.rate = Size(2048);
        c.shutdown_grace = ms(100);
    })
    .await;
    d.put("slow.bin", &data::bytes(1 << 20, 2));
    let sock = handout::udp_socket().await;
    sock.send_to(b"slow.bin", d.addrs[ServiceId::UdpDownload].unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf).await.unwrap();
    // At 2 KiB/s the download sleeps 32 s between blocks; the abort ends it.
    let t = tokio::time::Instant::now();
    d.stop_in_place().await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let d = TestDaemon::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    let addr = d.addrs[ServiceId::Signal].unwrap();
    let mut oldest = handout::Signal::connect(addr).await;
    oldest.send(SignalFrame::Ping).await;
    assert_eq!(oldest.recv().await, Some(SignalFrame::Pong));
    let mut newer = handout::Signal::connect(addr).await;
    newer.send(SignalFrame::Ping).await;
    assert_eq!(newer.recv().await, Some(SignalFrame::Pong));
    // Both idle between requests, the address at its cap: a third client
    // is served, and the longest-idle connection is closed with the reason.
    let mut third = handout::Signal::connect(addr).await;
    third.send(SignalFrame::Ping).await;
    assert_eq!(third.recv().await, Some(SignalFrame::Pong));
    match oldest.recv().await {
        Some(SignalFrame::Error(r)) => assert!(r.contains("to make room"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(oldest.recv().await, None);
    newer.send(SignalFrame::Ping).await;
    assert_eq!(newer.recv().await, Some(SignalFrame::Pong));
    d.stop().await;
}

#[tokio::test]
async fn under_pressure_a_stalled_udp_session_gives_way() {
    let d = TestDaemon::start_with(|c| {
        c.udp_upload.max_sessions_per_ip = 2;
        c.udp_upload.session_timeout = ms(1500);
    })
    .await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    abandoned_upload(addr, "a.bin", &data::bytes(5000, 1)).await;
    abandoned_upload(addr, "b.bin", &data::bytes(5000, 2)).await;
    // A different upload: the stalled sessions are not its retries, but
    // once they have stalled the longest-stalled one gives way instead of
    // the upload being refused (asked until then: a refusal changes nothing).
    let c = data::bytes(3000, 3);
    ferry_tests::eventually_async("a stalled session gives way", || async {
        handout::udp_upload(addr, "c.bin", &c, false, 1).await
            == UdpUploadOutcome::Ok { attempts: 1 }
    })
    .await;
    assert_eq!(d.read("c.bin"), c);
    d.stop().await;
}

#[tokio::test]
async fn a_client_at_its_own_share_never_takes_another_addresss_place() {
    let d = capped(4, 2).await;
    let addr = d.addrs[ServiceId::Signal].unwrap();
    // 127.0.0.5 holds its share with two busy connections (mid-upload);
    // 127.0.0.6 holds the rest of the total with two idle ones.
    let mut busy = Vec::new();
    for i in 0..2 {
        busy.push(mid_upload("127.0.0.5", addr, &format!("busy{i}.bin")).await);
    }
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.6", addr).await;
        s.write_all(b"PIN").await.unwrap();
        let mut pon = [0u8; 3];
        s.read_exact(&mut pon).await.unwrap();
        idle.push(s);
    }
    // A third from 127.0.0.5 is refused, and 127.0.0.6 keeps both places.
    let mut s = connect_from("127.0.0.5", addr).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        String::from_utf8_lossy(&got).contains("busy"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    for s in &mut idle {
        s.write_all(b"PIN").await.unwrap();
        let mut pon = [0u8; 3];
        s.read_exact(&mut pon).await.unwrap();
        assert_eq!(&pon, b"PON");
    }
    drop(busy);
    d.stop().await;
}

/// Issue 22: addresses trickling request headers (tcp_upload, magic) held the
/// whole connection cap, so a newcomer was told the server is busy and PIN
/// went unanswered. A header in progress now holds a slot as an idle
/// connection does: the longest-waiting makes room for a newcomer.
#[tokio::test]
async fn header_tricklers_make_room_and_pin_is_answered_at_a_full_cap() {
    let d = capped(8, 4).await;
    let a = d.addrs;
    // Two addresses fill the cap with headers they never finish (a valid
    // start of each: tcp_upload's size, magic's number and type), each at
    // its header read before the next comes, so the oldest is the first.
    let mut tricklers = Vec::new();
    for src in ["127.0.0.7", "127.0.0.8"] {
        for i in 0..4 {
            let (to, start) = if i % 2 == 0 {
                (a[ServiceId::TcpUpload], &[0u8, 0, 0][..])
            } else {
                (a[ServiceId::MagicDownload], &[0x49u8, 0x7E, 0x01][..])
            };
            let mut s = connect_from(src, to.unwrap()).await;
            s.write_all(start).await.unwrap();
            tricklers.push(s);
            let n = tricklers.len();
            ferry_tests::eventually("the trickler at its header read", || {
                d.controller.idle_connections() == n
            })
            .await;
        }
    }
    // A newcomer from another address is served: PIN, and a handout upload.
    let mut s = connect_from("127.0.0.9", a[ServiceId::Signal].unwrap()).await;
    s.write_all(b"PIN").await.unwrap();
    let mut pon = [0u8; 3];
    s.read_exact(&mut pon).await.unwrap();
    assert_eq!(&pon, b"PON");
    drop(s);
    let reply = handout::tcp_upload(a[ServiceId::TcpUpload].unwrap(), "fresh.txt", b"hello").await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("go ahead"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    wait_for(|| d.visible_files() == ["fresh.txt"]).await;
    assert_eq!(d.read("fresh.txt"), b"hello");
    // The oldest trickler (a tcp_upload) was closed with the reason.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tricklers[0].read_to_end(&mut got)).await;
    assert!(
        String::from_utf8_lossy(&got).contains("to make room"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    drop(tricklers);
    d.stop().await;
}

/// With every slot held by transfers in flight (nothing the cap may close),
/// a PIN is still answered: the health check says busy, not dead; any other
/// request gets the refusal.
#[tokio::test]
async fn pin_is_answered_when_every_slot_is_busy() {
    let d = capped(4, 2).await;
    let addr = d.addrs[ServiceId::Signal].unwrap();
    let mut busy = Vec::new();
    for (i, src) in ["127.0.0.10", "127.0.0.10", "127.0.0.11", "127.0.0.11"]
        .into_iter()
        .enumerate()
    {
        busy.push(mid_upload(src, addr, &format!("b{i}.bin")).await);
    }
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.12", addr).await;
        s.write_all(b"PIN").await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert_eq!(got, b"PON");
    }
    let mut c = handout::Signal::connect(addr).await;
    c.send(SignalFrame::RequestFile("x".into())).await;
    assert!(
        matches!(c.recv().await, Some(SignalFrame::Error(r)) if r.contains("busy")),
        "a transfer request is refused"
    );
    drop(busy);
    d.stop().await;
}

/// Issue 22 (the lab day): udp_upload answers a `file_info` with its buffer
/// size in time even while the main runtime is busy for longer than the
/// handout client waits for it (1 s), and stores and acknowledges the
/// upload: its receive loop and sessions run on a thread of their own.
/// (The reply came from the session's task on the main runtime, 1.5 s late
/// here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_main_runtime_does_not_delay_udp_uploads_buffer_size() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    let file = data::bytes(16 * 1024, 22);
    let sent = file.clone();
    // Both of the runtime's workers held for 1.5 s, as a lab day's transfers
    // can hold them; the client is a thread of its own, as a student's is.
    for _ in 0..2 {
        tokio::spawn(async {
            // Real: the stall is what is tested.
            std::thread::sleep(Duration::from_millis(1500));
        });
    }
    let client = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // The handout's wait for the buffer size.
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(&handout::file_info("busy.bin", &sent), addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = s
            .recv(&mut buf)
            .expect("the buffer size within the handout's 1 s");
        let size: usize = std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap();
        for chunk in sent.chunks(size) {
            s.send_to(chunk, addr).unwrap();
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = s.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    let reply = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(reply, b"OK");
    assert_same_bytes(&d.read("busy.bin"), &file, "busy.bin");
    d.stop().await;
}
