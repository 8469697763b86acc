//! What an admin and a student see: the lab page and its JSON, with a
//! diagnosis of each failed handout-style client; the metrics; the ledger;
//! and the HTTP listener under the same limits as the other services.
//! Clients come from distinct loopback addresses (127.0.0.2, 127.0.0.3, …)
//! so "each student sees their own attempts" can fail.

use ferry_config::ServiceId;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferry_tests::{handout, TestDaemon, OP_TIMEOUT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{sleep, timeout};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection to `to` from the loopback address 127.0.0.`from`.
async fn connect_from(from: u8, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(ip(from), 0)).expect("bind");
    s.connect(to).await.expect("connect")
}

/// A raw HTTP request from 127.0.0.`from`; the whole answer.
async fn http(from: u8, to: SocketAddr, request: &str) -> String {
    timeout(OP_TIMEOUT, async {
        let mut s = connect_from(from, to).await;
        s.write_all(request.as_bytes()).await.expect("send");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("an answer in time")
}

async fn get(from: u8, to: SocketAddr, path: &str) -> String {
    let answer = http(
        from,
        to,
        &format!("GET {path} HTTP/1.1\r\nhost: ferry\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    answer
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

async fn attempts(from: u8, to: SocketAddr) -> Vec<Value> {
    let answer = get(from, to, "/api/attempts").await;
    serde_json::from_str(body(&answer)).expect("JSON")
}

/// The failed attempt of `service` in `list`, waiting for it to be reported.
async fn failed(from: u8, http_at: SocketAddr, service: &str) -> Value {
    let found = std::sync::Mutex::new(None);
    let slot = &found;
    ferry_tests::eventually_async(&format!("a failed {service} attempt"), move || async move {
        let a = attempts(from, http_at)
            .await
            .into_iter()
            .find(|a| a["service"] == service && a["outcome"] == "failed");
        let seen = a.is_some();
        *slot.lock().unwrap() = a;
        seen
    })
    .await;
    found.into_inner().unwrap().expect("found")
}

/// The attempts `from` sees, once there are at least `n`.
async fn at_least(n: usize, from: u8, http_at: SocketAddr) -> Vec<Value> {
    let all = std::sync::Mutex::new(Vec::new());
    let slot = &all;
    ferry_tests::eventually_async(&format!("{n} attempts reported"), move || async move {
        let got = attempts(from, http_at).await;
        let enough = got.len() >= n;
        *slot.lock().unwrap() = got;
        enough
    })
    .await;
    all.into_inner().unwrap()
}

/// No one in `http.admin`: every visitor sees only their own address.
async fn daemon() -> TestDaemon {
    TestDaemon::start_with(|c| c.http.admin.clear()).await
}

#[tokio::test]
async fn the_four_student_mistakes_are_explained_to_the_student_who_made_them() {
    let d = daemon().await;
    let page = d.addrs.http.expect("http");

    // 1. COSC264 with the magic number's bytes swapped.
    let mut s = connect_from(2, d.addrs[ServiceId::MagicDownload].unwrap()).await;
    s.write_all(&[0x7E, 0x49, 1, 0, 5]).await.unwrap();
    s.write_all(b"a.txt").await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(OP_TIMEOUT, s.read_to_end(&mut rest)).await;
    assert!(
        rest.is_empty(),
        "closed without an answer, as the assignment says"
    );
    let a = failed(2, page, "magic_download").await;
    let rule = a["diagnosis"]["rule"].as_str().unwrap();
    assert!(
        rule.contains("starts with 0x7E49, not the magic number 0x497E"),
        "{a}"
    );
    assert_eq!(a["diagnosis"]["sent_hex"], "7E 49 01 00 05 61 2E 74 78 74");
    assert_eq!(a["diagnosis"]["section"], "magic_download (9004/tcp)");

    // 2. Seed 002 without waiting for `go ahead`: header, name and data at once.
    let mut s = connect_from(3, d.addrs[ServiceId::TcpUpload].unwrap()).await;
    let mut all = 11u64.to_be_bytes().to_vec();
    all.extend_from_slice(b"notes.txthello world");
    s.write_all(&all).await.unwrap();
    let mut reply = [0u8; 8];
    let _ = timeout(OP_TIMEOUT, s.read_exact(&mut reply)).await;
    drop(s);
    let a = failed(3, page, "tcp_upload").await;
    let rule = a["diagnosis"]["rule"].as_str().unwrap();
    assert!(rule.contains("`go ahead`"), "{a}");
    assert!(rule.contains("notes.txthello world"), "{a}");

    // 3. Seed 000 with a CRC-32 that is not the data's.
    let sock = UdpSocket::bind(SocketAddr::new(ip(4), 0)).await.unwrap();
    let to = d.addrs[ServiceId::UdpUpload].unwrap();
    let data = b"some image bytes".to_vec();
    let info = format!(
        r#"{{"checksum": "00000001", "name": "photo.jpg", "size": {}}}"#,
        data.len()
    );
    sock.send_to(info.as_bytes(), to).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = timeout(OP_TIMEOUT, sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"1452");
    sock.send_to(&data, to).await.unwrap();
    let (n, _) = timeout(OP_TIMEOUT, sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"ERROR: checksum mismatch"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let a = failed(4, page, "udp_upload").await;
    assert!(
        a["diagnosis"]["rule"]
            .as_str()
            .unwrap()
            .contains("zlib.crc32"),
        "{a}"
    );
    assert!(
        a["diagnosis"]["sent_text"]
            .as_str()
            .unwrap()
            .starts_with("{\"checksum\": \"00000001\""),
        "{a}"
    );

    // 4. A seed-004 client that never sends DON: SAF, name, data, then CLS.
    let mut s = connect_from(5, d.addrs[ServiceId::Signal].unwrap()).await;
    for (part, pause) in [
        (&b"SAF"[..], 100),
        (b"lab1.py", 100),
        (b"print('hi')", 100),
        (b"CLS", 0),
    ] {
        s.write_all(part).await.unwrap();
        // Real: the handout framing is its pauses, and this ferryd reads
        // real sockets on the real clock.
        sleep(Duration::from_millis(pause)).await;
    }
    drop(s);
    let a = failed(5, page, "signal").await;
    assert!(
        a["diagnosis"]["rule"].as_str().unwrap().contains("`DON`"),
        "{a}"
    );
    assert_eq!(a["requested"], "lab1.py");
    assert_eq!(a["diagnosis"]["section"], "The handout's dialect");
    assert!(d.visible_files().is_empty(), "none of them stored anything");

    // Each student sees their own attempt, and only theirs; the page says it.
    for (from, service) in [
        (2, "magic_download"),
        (3, "tcp_upload"),
        (4, "udp_upload"),
        (5, "signal"),
    ] {
        let mine = attempts(from, page).await;
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0]["service"], service);
        let html = get(from, page, "/").await;
        assert!(html.contains(&format!("the clients at your address, 127.0.0.{from}")));
        assert!(html.contains("The rule:"));
    }
    let html = get(2, page, "/").await;
    assert!(html.contains("not the magic number 0x497E"));
    assert!(
        !html.contains("zlib.crc32"),
        "another student's failure is not shown"
    );
    assert!(html.contains("href=\"/book#magic_download-9004tcp\""));
    d.stop().await;
}

#[tokio::test]
async fn admins_see_everyone_and_every_failure_is_one_failed_attempt() {
    // Loopback is in http.admin by default.
    let d = TestDaemon::start().await;
    let page = d.addrs.http.unwrap();
    d.put("there.txt", b"hello");
    // A missing file is a failure on every download protocol.
    let missing = handout::magic_download(
        d.addrs[ServiceId::MagicDownload].unwrap(),
        b"nope.txt",
        false,
    )
    .await;
    assert_eq!(
        missing,
        [0x49, 0x7E, 2, 0, 0, 0, 0, 0],
        "StatusCode 0, DataLength 0"
    );
    assert_eq!(
        handout::magic_download(
            d.addrs[ServiceId::MagicDownload].unwrap(),
            b"there.txt",
            false
        )
        .await
        .len(),
        8 + 5
    );
    let _ = handout::udp_download(d.addrs[ServiceId::UdpDownload].unwrap(), b"nope.txt").await;
    let stored = handout::tcp_upload(
        d.addrs[ServiceId::TcpUpload].unwrap(),
        "files/report.pdf",
        b"%PDF",
    )
    .await;
    assert_eq!(stored, b"go ahead");
    let all = at_least(4, 1, page).await;
    let summary: Vec<(String, String)> = all
        .iter()
        .map(|a| {
            (
                a["service"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("magic_download", "failed"),
        ("magic_download", "sent"),
        ("udp_download", "failed"),
        ("tcp_upload", "stored"),
    ] {
        assert!(
            summary.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {summary:?}"
        );
    }
    let miss = all
        .iter()
        .find(|a| a["service"] == "magic_download" && a["outcome"] == "failed")
        .unwrap();
    assert_eq!(miss["reason"], "no such file: nope.txt");
    assert!(
        miss.get("stored").is_none(),
        "nothing was stored or served: {miss}"
    );
    let html = get(1, page, "/").await;
    assert!(html.contains("every client (your address is in http.admin)"));

    // The ledger has the stored file, on the page, in JSON and on disk.
    let ledger: Vec<Value> =
        serde_json::from_str(body(&get(1, page, "/api/ledger").await)).unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["requested"], "files/report.pdf");
    assert_eq!(ledger[0]["stored"], "report.pdf");
    assert_eq!(ledger[0]["size"], 4);
    assert_eq!(
        ledger[0]["crc"],
        format!("{:08X}", ferry_proto::crc::checksum(b"%PDF"))
    );
    let line = std::fs::read_to_string(d.root.join(ferryd::LEDGER_FILE)).unwrap();
    assert_eq!(line.lines().count(), 1);
    assert!(line.contains("\"stored\":\"report.pdf\""), "{line}");

    // The metrics count the same.
    let metrics = get(1, page, "/metrics").await;
    for line in [
        "ferry_transfers_total{outcome=\"failed\",service=\"magic_download\"} 1",
        "ferry_transfers_total{outcome=\"sent\",service=\"magic_download\"} 1",
        "ferry_transfers_total{outcome=\"stored\",service=\"tcp_upload\"} 1",
        "ferry_transfer_bytes_total{direction=\"in\",service=\"tcp_upload\"} 4",
        "ferry_transfer_bytes_total{direction=\"out\",service=\"magic_download\"} 5",
    ] {
        assert!(
            body(&metrics).lines().any(|l| l == line),
            "{line} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("content-type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test]
async fn the_http_listener_keeps_the_limits_of_the_others() {
    let d = TestDaemon::start_with(|c| {
        c.limits.max_connections_per_ip = 2;
        c.limits.header_timeout.0 = Duration::from_millis(500);
    })
    .await;
    let page = d.addrs.http.unwrap();
    // A slow-loris header is cut at the header deadline.
    let started = std::time::Instant::now();
    let cut = http(6, page, "GET / HTTP/1.1\r\nhost: ferry\r\n").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!cut.contains("200 OK"), "{cut}");
    // The page has a cap of its own: an address whose transfer slots are
    // full (two tcp_upload connections held open) still reads its page...
    let _a = connect_from(7, d.addrs[ServiceId::TcpUpload].unwrap()).await;
    let _b = connect_from(7, d.addrs[ServiceId::TcpUpload].unwrap()).await;
    ferry_tests::eventually("both connections held", || {
        d.controller.tcp_connections() == 2
    })
    .await;
    get(7, page, "/").await;
    // ...and page requests held open past the page's own per-address cap
    // (4) get a 503 with the reason, while transfers from it go on.
    let mut unread = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from(9, page).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        unread.push(s);
    }
    // Asked until the four are being read (each ask before is served).
    let refused = std::sync::Mutex::new(String::new());
    let slot = &refused;
    ferry_tests::eventually_async("a fifth page request refused", move || async move {
        let answer = http(9, page, "GET / HTTP/1.1\r\nhost: ferry\r\n\r\n").await;
        let busy = answer.starts_with("HTTP/1.1 503 Service Unavailable");
        *slot.lock().unwrap() = answer;
        busy
    })
    .await;
    let busy = refused.into_inner().unwrap();
    assert!(
        busy.contains("too many page requests from your address"),
        "{busy}"
    );
    let mut up = connect_from(9, d.addrs[ServiceId::TcpUpload].unwrap()).await;
    up.write_all(&ferry_proto::tcp_upload::encode_header(2, "nine.txt"))
        .await
        .unwrap();
    let mut go = [0u8; 8];
    up.read_exact(&mut go).await.unwrap();
    assert_eq!(&go, b"go ahead");
    drop(unread);
    // Only GET; no path serves a stored file; a huge header is refused.
    d.put("secret.txt", b"the contents");
    let post = http(
        8,
        page,
        "POST / HTTP/1.1\r\nhost: ferry\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    for path in [
        "/secret.txt",
        "/../secret.txt",
        "/api/../secret.txt",
        "/book/../secret.txt",
    ] {
        let answer = http(
            8,
            page,
            &format!("GET {path} HTTP/1.1\r\nhost: ferry\r\n\r\n"),
        )
        .await;
        assert!(!answer.contains("the contents"), "{path}: {answer}");
    }
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: ferry\r\nx: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = http(8, page, &huge).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // Client text is escaped on the page.
    let evil = "<script>alert(1)</script>.txt";
    let _ = handout::magic_download(
        d.addrs[ServiceId::MagicDownload].unwrap(),
        evil.as_bytes(),
        false,
    )
    .await;
    failed(1, page, "magic_download").await;
    let html = get(1, page, "/").await;
    assert!(
        !html.contains("<script>"),
        "markup from a client reached the page"
    );
    assert!(html.contains("&lt;script&gt;"));
    // And the protocols still answer.
    assert_eq!(
        handout::tcp_upload(d.addrs[ServiceId::TcpUpload].unwrap(), "ok.txt", b"ok").await,
        b"go ahead"
    );
    d.stop().await;
}

/// Issue 22: 16 page requests left unread by one address made every handout
/// upload fail, and names of 8 KB of quotes (escaped to 6 bytes each) made
/// each page megabytes. The page now has a thread and a cap of its own, and
/// shows names cut to 160 characters.
#[tokio::test]
async fn a_page_held_unread_never_hurts_uploads_and_long_names_are_cut() {
    let d = daemon().await;
    let page = d.addrs.http.unwrap();
    let quotes = "\"".repeat(1000);
    for _ in 0..20 {
        let _ = handout::magic_download(
            d.addrs[ServiceId::MagicDownload].unwrap(),
            quotes.as_bytes(),
            false,
        )
        .await;
    }
    at_least(20, 1, page).await;
    let html = get(30, page, "/").await;
    // Each viewer sees its own address: the attempts came from 127.0.0.1.
    let admin = get(1, page, "/").await;
    assert!(admin.contains(&"&quot;".repeat(160)), "the name is shown");
    assert!(
        !admin.contains(&"&quot;".repeat(161)),
        "the name is cut to 160 characters"
    );
    assert!(admin.len() < 256 * 1024, "{} bytes", admin.len());
    assert!(html.len() < admin.len());
    // Sixteen page requests from one address, never read.
    let mut unread = Vec::new();
    for _ in 0..16 {
        let mut s = connect_from(31, page).await;
        let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: ferry\r\n\r\n").await;
        unread.push(s);
    }
    // Ten handout uploads from another address, all at once: all stored.
    let uploads = (0..10).map(|i| {
        let addr = d.addrs[ServiceId::TcpUpload].unwrap();
        async move {
            let name = format!("up{i}.txt");
            let reply = handout::tcp_upload(addr, &name, name.as_bytes()).await;
            assert_eq!(reply, b"go ahead", "{name}");
        }
    });
    futures::future::join_all(uploads).await;
    ferry_tests::eventually("ten uploads stored", || d.visible_files().len() >= 10).await;
    for i in 0..10 {
        assert_eq!(
            d.read(&format!("up{i}.txt")),
            format!("up{i}.txt").as_bytes()
        );
    }
    drop(unread);
    d.stop().await;
}

/// Issue 23, part 2: "two raw datagrams from a forged address store
/// `confession.txt`, and the ledger, `/api/ledger` and the victim's own page
/// all say the victim sent it". A UDP source proves nothing, so every line,
/// attempt and row of a UDP transfer says so; a TCP one (a handshake with
/// the address) does not.
#[tokio::test]
async fn udp_sources_are_marked_unverified_in_the_ledger_and_on_the_page() {
    let d = TestDaemon::start().await;
    let http_at = d.addrs.http.unwrap();
    // What a forger on the wire can do with the victim's address: here the
    // socket is bound to it (127.0.0.5), the same datagrams.
    let forger = handout::udp_socket_as(std::net::Ipv4Addr::new(127, 0, 0, 5)).await;
    let data = b"I copied lab 3";
    let up = d.addrs[ServiceId::UdpUpload].unwrap();
    forger
        .send_to(&handout::file_info("confession.txt", data), up)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    timeout(OP_TIMEOUT, forger.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    forger.send_to(data, up).await.unwrap();
    let (n, _) = timeout(OP_TIMEOUT, forger.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"OK");
    let mut honest = handout::Signal::connect_as(
        std::net::Ipv4Addr::new(127, 0, 0, 5),
        d.addrs[ServiceId::Signal].unwrap(),
    )
    .await;
    assert!(honest.upload("lab3.py", b"print(3)").await.is_some());

    let answer = get(5, http_at, "/api/ledger").await;
    let ledger: Vec<Value> = serde_json::from_str(body(&answer)).expect("JSON");
    let line = |name: &str| {
        ledger
            .iter()
            .find(|e| e["stored"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(line("confession.txt")["unverified_source"], true);
    assert_eq!(line("lab3.py").get("unverified_source"), None);
    let on_disk = std::fs::read_to_string(d.root.join(".ferry-ledger.jsonl")).unwrap();
    assert!(
        on_disk
            .lines()
            .any(|l| l.contains("confession.txt") && l.contains(r#""unverified_source":true"#)),
        "{on_disk}"
    );
    let page = body(&get(5, http_at, "/").await).to_owned();
    assert_eq!(
        page.matches("(UDP: unverified)").count(),
        2,
        "the attempt and the ledger row: {page}"
    );
    let attempts = attempts(5, http_at).await;
    let udp = attempts
        .iter()
        .find(|a| a["service"] == "udp_upload")
        .unwrap();
    assert_eq!(udp["unverified_source"], true);
    d.stop().await;
}

/// Issue 27: another service's request on a service's port is told as
/// that service's, with where it is served here; each from its own address.
#[tokio::test]
async fn another_services_request_is_told_where_that_service_is() {
    let d = daemon().await;
    let page = d.addrs.http.expect("http");
    let port = |s: ServiceId| d.addrs[s].expect("served").port();
    let mut tcp_header = 11u64.to_be_bytes().to_vec();
    tcp_header.extend_from_slice(b"notes.txt");
    let magic_request = [&[0x49, 0x7E, 1, 0, 5][..], b"a.txt"].concat();
    let file_info = br#"{"checksum": "97F6DB4F", "name": "photo.jpg", "size": 65066}"#.to_vec();
    // (sent to, what was sent, whose it is, from 127.0.0.N)
    let tcp_cases = [
        (
            ServiceId::TcpUpload,
            b"SAFlab1.py".to_vec(),
            ServiceId::Signal,
            40,
        ),
        (
            ServiceId::TcpUpload,
            magic_request.clone(),
            ServiceId::MagicDownload,
            41,
        ),
        (
            ServiceId::MagicDownload,
            tcp_header.clone(),
            ServiceId::TcpUpload,
            42,
        ),
        (
            ServiceId::Signal,
            tcp_header.clone(),
            ServiceId::TcpUpload,
            43,
        ),
        (
            ServiceId::Signal,
            magic_request.clone(),
            ServiceId::MagicDownload,
            44,
        ),
    ];
    for (to, bytes, whose, from) in &tcp_cases {
        let mut s = connect_from(*from, d.addrs[*to].unwrap()).await;
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = timeout(OP_TIMEOUT, s.read_to_end(&mut rest)).await;
        check_wrong_port(*from, page, *to, *whose, port(*whose)).await;
    }
    let udp_cases = [
        (
            ServiceId::UdpUpload,
            b"Client of Ann:7".to_vec(),
            ServiceId::UdpSum,
            45,
        ),
        (
            ServiceId::UdpDownload,
            file_info.clone(),
            ServiceId::UdpUpload,
            46,
        ),
        (
            ServiceId::UdpSum,
            file_info.clone(),
            ServiceId::UdpUpload,
            47,
        ),
    ];
    for (to, bytes, whose, from) in &udp_cases {
        let sock = UdpSocket::bind(SocketAddr::new(ip(*from), 0))
            .await
            .unwrap();
        sock.send_to(bytes, d.addrs[*to].unwrap()).await.unwrap();
        let mut reply = [0u8; 2048];
        let _ = timeout(Duration::from_secs(2), sock.recv_from(&mut reply)).await;
        check_wrong_port(*from, page, *to, *whose, port(*whose)).await;
    }
    d.stop().await;
}

/// The failed attempt from 127.0.0.`from` on `to` says the bytes were
/// `whose` request, served on `port`.
async fn check_wrong_port(from: u8, page: SocketAddr, to: ServiceId, whose: ServiceId, port: u16) {
    let a = failed(from, page, to.name()).await;
    let rule = a["diagnosis"]["rule"].as_str().unwrap_or_default();
    assert!(
        rule.contains(&format!("look like a {whose} request")),
        "{to} got {whose}'s: {a}"
    );
    assert!(rule.contains(&format!("port {port}")), "{to}: {a}");
    let expected = a["diagnosis"]["expected"].as_str().unwrap_or_default();
    assert!(!expected.contains("protocol book describes"), "{a}");
}

/// Issue 27: a name with its newline, the commonest Python slip, is told
/// as a name problem, and the page shows the newline as `\n`.
#[tokio::test]
async fn a_name_sent_with_its_newline_is_told_to_strip_it() {
    let d = daemon().await;
    let page = d.addrs.http.expect("http");
    let mut s = connect_from(50, d.addrs[ServiceId::TcpUpload].unwrap()).await;
    let mut header = 5u64.to_be_bytes().to_vec();
    header.extend_from_slice(b"newline.txt\n");
    s.write_all(&header).await.unwrap();
    let mut reply = Vec::new();
    let _ = timeout(OP_TIMEOUT, s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("U+000A"), "{reply}");
    let a = failed(50, page, "tcp_upload").await;
    let rule = a["diagnosis"]["rule"].as_str().unwrap_or_default();
    assert!(rule.contains("ends in a line break"), "{a}");
    assert!(rule.contains("name.strip()"), "{a}");
    assert_eq!(a["diagnosis"]["section"], "Rules common to both");
    let html = get(50, page, "/").await;
    assert!(html.contains("newline.txt\\n"), "the newline shown as \\n");
    // A signal RAF of `..` shows once with its slash.
    let mut s = connect_from(51, d.addrs[ServiceId::Signal].unwrap()).await;
    s.write_all(
        &ferry_proto::signal::encode(ferry_proto::signal::SignalFrame::RequestRepo("../".into()))
            .unwrap(),
    )
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(OP_TIMEOUT, s.read_to_end(&mut rest)).await;
    let a = failed(51, page, "signal").await;
    assert_eq!(a["requested"], "../", "{a}");
    d.stop().await;
}

/// Issue 27: garbage on signal and a refused sum are attempts too, on the
/// page and in `/api/attempts`.
#[tokio::test]
async fn signal_garbage_and_a_refused_sum_are_attempts() {
    let d = daemon().await;
    let page = d.addrs.http.expect("http");
    let mut s = connect_from(52, d.addrs[ServiceId::Signal].unwrap()).await;
    s.write_all(b"HELLO\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(OP_TIMEOUT, s.read_to_end(&mut rest)).await;
    let a = failed(52, page, "signal").await;
    assert!(
        a["reason"].as_str().unwrap_or_default().contains("HEL"),
        "{a}"
    );
    assert_eq!(a["diagnosis"]["sent_text"], "HELLO.", "{a}");
    let sock = UdpSocket::bind(SocketAddr::new(ip(53), 0)).await.unwrap();
    sock.send_to(b"Client of Ann:700", d.addrs[ServiceId::UdpSum].unwrap())
        .await
        .unwrap();
    let mut reply = [0u8; 512];
    let (n, _) = timeout(OP_TIMEOUT, sock.recv_from(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply[..n].starts_with(b"ERROR"), "{:?}", &reply[..n]);
    let a = failed(53, page, "udp_sum").await;
    assert_eq!(a["requested"], "Client of Ann:700", "{a}");
    assert_eq!(a["diagnosis"]["section"], "udp_sum (9002/udp)", "{a}");
    d.stop().await;
}
