//! Every protocol's happy path against the real daemon, through clients that
//! behave like the handouts': boundary sizes, bytes checked on disk and on the wire.

use ferry_config::ServiceId;
use ferry_proto::signal::SignalFrame;
use ferry_tests::handout::{self, UdpUploadOutcome};
use ferry_tests::{assert_same_bytes, data, TestDaemon};

#[tokio::test]
async fn udp_upload_stores_every_boundary_size() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    for (i, size) in data::boundary_sizes(1452).into_iter().enumerate() {
        let bytes = data::bytes(size, i as u64);
        let name = format!("files/u{size}.bin");
        let outcome = handout::udp_upload(addr, &name, &bytes, false, 5).await;
        assert!(
            matches!(outcome, UdpUploadOutcome::Ok { .. }),
            "size {size}: {outcome:?}"
        );
        assert_same_bytes(
            &d.read(&format!("u{size}.bin")),
            &bytes,
            &format!("size {size}"),
        );
    }
    assert_eq!(d.work_entries_settled().await, 0);
    d.stop().await;
}

/// Uploads of 4 MiB and more go to a writer thread, datagram by datagram as
/// received (large ones shared with the receive buffer, small ones copied):
/// byte for byte either way, with the handout client's own retries.
#[tokio::test]
async fn large_udp_uploads_are_stored_byte_for_byte() {
    for (buffer_size, seed) in [(65_000, 7), (9_000, 8)] {
        let d = TestDaemon::start_with(|c| c.udp_upload.buffer_size = buffer_size).await;
        let bytes = data::bytes(6 << 20, seed);
        let outcome = handout::udp_upload(
            d.addrs[ServiceId::UdpUpload].unwrap(),
            "large.bin",
            &bytes,
            false,
            5,
        )
        .await;
        assert!(
            matches!(outcome, UdpUploadOutcome::Ok { .. }),
            "buffer {buffer_size}: {outcome:?}"
        );
        assert_same_bytes(
            &d.read("large.bin"),
            &bytes,
            &format!("buffer {buffer_size}"),
        );
        assert_eq!(d.work_entries_settled().await, 0);
        d.stop().await;
    }
}

#[tokio::test]
async fn udp_upload_announces_the_configured_buffer_size() {
    let d = TestDaemon::start_with(|c| c.udp_upload.buffer_size = 100).await;
    let sock = handout::udp_socket().await;
    sock.send_to(
        &handout::file_info("a", b"x"),
        d.addrs[ServiceId::UdpUpload].unwrap(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"100");
    sock.send_to(b"x", d.addrs[ServiceId::UdpUpload].unwrap())
        .await
        .unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"OK");
    assert_eq!(d.read("a"), b"x");
    d.stop().await;
}

#[tokio::test]
async fn tcp_upload_stores_every_boundary_size() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::TcpUpload].unwrap();
    for (i, size) in data::boundary_sizes(65_536).into_iter().enumerate() {
        let bytes = data::bytes(size, 100 + i as u64);
        let reply = handout::tcp_upload(addr, &format!("/home/s/t{size}.bin"), &bytes).await;
        assert_eq!(reply, b"go ahead");
        // No acknowledgement in this protocol: wait for the file to appear.
        let want = format!("t{size}.bin");
        wait_for(|| d.visible_files().contains(&want)).await;
        assert_same_bytes(&d.read(&want), &bytes, &format!("size {size}"));
    }
    d.stop().await;
}

#[tokio::test]
async fn tcp_upload_name_sent_separately_from_the_size() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = TestDaemon::start().await;
    let mut s = tokio::net::TcpStream::connect(d.addrs[ServiceId::TcpUpload].unwrap())
        .await
        .unwrap();
    s.write_all(&5u64.to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    tokio::task::yield_now().await;
    s.write_all(b"split.txt").await.unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"go ahead");
    s.write_all(b"hello").await.unwrap();
    drop(s);
    wait_for(|| d.visible_files() == ["split.txt"]).await;
    assert_eq!(d.read("split.txt"), b"hello");
    d.stop().await;
}

#[tokio::test]
async fn magic_download_serves_every_boundary_size() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::MagicDownload].unwrap();
    for (i, size) in data::boundary_sizes(4096).into_iter().enumerate() {
        let bytes = data::bytes(size, 200 + i as u64);
        d.put(&format!("m{size}"), &bytes);
        for split in [false, true] {
            let wire = handout::magic_download(addr, format!("m{size}").as_bytes(), split).await;
            let (status, len, body) = handout::parse_magic(&wire);
            assert_eq!((status, len as usize), (1, size), "size {size}");
            assert_same_bytes(body, &bytes, &format!("size {size}"));
        }
    }
    // "A missing file gets StatusCode 0 and DataLength 0."
    let wire = handout::magic_download(addr, b"missing", false).await;
    assert_eq!(wire, [0x49, 0x7E, 2, 0, 0, 0, 0, 0]);
    // Paths inside the root may be named.
    d.put("dir/sub/f.txt", b"nested");
    let wire = handout::magic_download(addr, b"dir/sub/f.txt", false).await;
    assert_eq!(handout::parse_magic(&wire).2, b"nested");
    d.stop().await;
}

#[tokio::test]
async fn udp_download_follows_the_end_rule() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpDownload].unwrap();
    for (i, size) in data::boundary_sizes(2048).into_iter().enumerate() {
        let bytes = data::bytes(size, 300 + i as u64);
        d.put(&format!("d{size}"), &bytes);
        let got = handout::udp_download(addr, format!("d{size}").as_bytes()).await;
        assert_same_bytes(
            &got.expect("the download ends"),
            &bytes,
            &format!("size {size}"),
        );
    }
    // A multiple of 2048 ends with an empty datagram: count the datagrams.
    d.put("two", &[7u8; 4096]);
    let sock = handout::udp_socket().await;
    sock.send_to(b"two", addr).await.unwrap();
    let mut lens = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        lens.push(n);
        if n < 2048 {
            break;
        }
    }
    assert_eq!(lens, [2048, 2048, 0]);
    // ferry's STAT request gives size and CRC.
    sock.send_to(b"\0STAT two", addr).await.unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    let crc = ferry_proto::crc::format_hex(ferry_proto::crc::checksum(&[7u8; 4096]));
    assert_eq!(&buf[..n], format!("\0STAT 4096 {crc}").as_bytes());
    d.stop().await;
}

#[tokio::test]
async fn udp_sum_answers_every_layout() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpSum].unwrap();
    for (req, want) in [
        (
            &b"Client of John Q. Smith:7"[..],
            &b"Server of ferry:42"[..],
        ),
        (b"Client of Ann,7", b"Server of ferry,42"),
        (b"Client of Ann;1", b"Server of ferry;42"),
        (b"Client of Ann|100", b"Server of ferry|42"),
        (b"Client of Ann\n7", b"Server of ferry\n42"),
        (
            br#"{"name": "Client of Ann", "number": 7}"#,
            br#"{"name": "Server of ferry", "number": 42}"#,
        ),
        (
            b"Client of Ann:0",
            b"ERROR: 0 is out of range: the number must be an integer from 1 to 100",
        ),
        (
            b"Client of Ann:101",
            b"ERROR: 101 is out of range: the number must be an integer from 1 to 100",
        ),
        (b":7", b"ERROR: the client name is empty"),
    ] {
        assert_eq!(
            handout::udp_sum(addr, req).await,
            want,
            "{}",
            String::from_utf8_lossy(req)
        );
    }
    // Two datagrams: the name, then the number, from the same socket.
    let sock = handout::udp_socket().await;
    sock.send_to(b"Client of Ann", addr).await.unwrap();
    sock.send_to(b"7", addr).await.unwrap();
    let mut buf = [0u8; 128];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"Server of ferry");
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"42");
    // A two-datagram client whose name ends in a number: the name is
    // `Client 1`, the number 7; the same text alone is name and number.
    let sock = handout::udp_socket().await;
    sock.send_to(b"Client 1", addr).await.unwrap();
    sock.send_to(b"7", addr).await.unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"Server of ferry");
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"42");
    assert_eq!(
        handout::udp_sum(addr, b"Client 1").await,
        b"Server of ferry 42"
    );
    // Still serving after the out-of-range numbers above.
    assert_eq!(
        handout::udp_sum(addr, b"Ann:1").await,
        b"Server of ferry:42"
    );
    d.stop().await;
}

#[tokio::test]
async fn signal_files_round_trip_at_every_boundary_size() {
    let d = TestDaemon::start().await;
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    for (i, size) in data::boundary_sizes(65_536).into_iter().enumerate() {
        let bytes = data::bytes(size, 400 + i as u64);
        let name = format!("s{size}.bin");
        assert_eq!(
            c.upload(&format!("up/{name}"), &bytes).await,
            Some(SignalFrame::Done(name.clone()))
        );
        assert_same_bytes(&d.read(&name), &bytes, &name);
        c.send(SignalFrame::RequestFile(name.clone())).await;
        let (got_name, got) = c.recv_file().await.unwrap();
        assert_eq!(got_name, name);
        assert_same_bytes(&got, &bytes, &name);
    }
    c.send(SignalFrame::Ping).await;
    assert_eq!(c.recv().await, Some(SignalFrame::Pong));
    c.send(SignalFrame::RequestFile("missing".into())).await;
    assert_eq!(
        c.recv().await,
        Some(SignalFrame::Error("no such file: missing".into()))
    );
    d.stop().await;
}

#[tokio::test]
async fn bare_pin_gets_bare_pon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = TestDaemon::start().await;
    // What `printf PIN | nc -q1 host 9005` does.
    let mut s = tokio::net::TcpStream::connect(d.addrs[ServiceId::Signal].unwrap())
        .await
        .unwrap();
    s.write_all(b"PIN").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"PON");
    d.stop().await;
}

#[tokio::test]
async fn signal_trees_round_trip() {
    let d = TestDaemon::start().await;
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    let files = [
        ("README.md", data::bytes(10, 1)),
        ("src/main.rs", data::bytes(3000, 2)),
        ("src/deep/er/x.bin", data::bytes(70_000, 3)),
        ("empty", Vec::new()),
    ];
    c.send(SignalFrame::SendRepo("project".into())).await;
    for (path, bytes) in &files {
        c.send_raw(&ferry_proto::signal::encode_file(path, bytes).unwrap())
            .await;
    }
    c.send(SignalFrame::Done(String::new())).await;
    assert_eq!(c.recv().await, Some(SignalFrame::Done("project".into())));
    for (path, bytes) in &files {
        assert_same_bytes(&d.read(&format!("project/{path}")), bytes, path);
    }
    // And back with RAR: SAR name, the entries in path order, DON name.
    c.send(SignalFrame::RequestRepo("project".into())).await;
    assert_eq!(
        c.recv().await,
        Some(SignalFrame::SendRepo("project".into()))
    );
    let mut got = Vec::new();
    for _ in 0..files.len() {
        got.push(c.recv_file().await.unwrap());
    }
    assert_eq!(c.recv().await, Some(SignalFrame::Done("project".into())));
    let mut want: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, b)| (p.to_string(), b.clone()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // The same tree again is stored beside it, not over it.
    c.send(SignalFrame::SendRepo("project".into())).await;
    c.send(SignalFrame::Done(String::new())).await;
    assert_eq!(
        c.recv().await,
        Some(SignalFrame::Done("project (1)".into()))
    );
    d.stop().await;
}

#[tokio::test]
async fn any_upload_is_served_by_every_download_protocol() {
    let d = TestDaemon::start().await;
    let bytes = data::bytes(50_000, 9);
    let ok = handout::udp_upload(
        d.addrs[ServiceId::UdpUpload].unwrap(),
        "cross.bin",
        &bytes,
        false,
        5,
    )
    .await;
    assert!(matches!(ok, UdpUploadOutcome::Ok { .. }));
    let wire = handout::magic_download(
        d.addrs[ServiceId::MagicDownload].unwrap(),
        b"cross.bin",
        false,
    )
    .await;
    assert_same_bytes(handout::parse_magic(&wire).2, &bytes, "magic");
    let got = handout::udp_download(d.addrs[ServiceId::UdpDownload].unwrap(), b"cross.bin").await;
    assert_same_bytes(&got.expect("the download ends"), &bytes, "udp download");
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    c.send(SignalFrame::RequestFile("cross.bin".into())).await;
    assert_same_bytes(&c.recv_file().await.unwrap().1, &bytes, "RAF");
    // TCP upload, then the other way round.
    handout::tcp_upload(d.addrs[ServiceId::TcpUpload].unwrap(), "t.bin", &bytes).await;
    wait_for(|| d.visible_files().contains(&"t.bin".to_string())).await;
    c.send(SignalFrame::RequestFile("t.bin".into())).await;
    assert_same_bytes(
        &c.recv_file().await.unwrap().1,
        &bytes,
        "RAF of a TCP upload",
    );
    d.stop().await;
}

/// Polls `cond` (a file appearing after an upload that has no acknowledgement)
/// until it holds, yielding between checks; fails after 20 s.
pub async fn wait_for(cond: impl Fn() -> bool) {
    ferry_tests::eventually("the upload's effect", cond).await
}
