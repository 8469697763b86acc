//! Hostile input on every service: traversal and bad names, symlinks out of
//! the root, malformed headers. Nothing is written or read outside the root,
//! the client gets a clear refusal in the protocol's own way, and the daemon
//! keeps serving.

use ferry_config::ServiceId;
use std::path::{Path, PathBuf};

use ferry_proto::signal::SignalFrame;
use ferry_tests::handout::{self, UdpUploadOutcome};
use ferry_tests::{assert_same_bytes, data, TestDaemon};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A daemon whose root is `outer/root`, with `outer/secret` beside it and
/// symlinks inside the root pointing at it.
struct Jail {
    outer: tempfile::TempDir,
    d: TestDaemon,
}

impl Jail {
    async fn new() -> Jail {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), b"SECRET").unwrap();
        let root = outer.path().join("root");
        // An empty tcp_upload name never completes the header; 1 s keeps the test quick.
        let d = TestDaemon::start_in(&root, |c| {
            c.limits.header_timeout = ferry_config::Dur(std::time::Duration::from_secs(1))
        })
        .await;
        std::os::unix::fs::symlink(outer.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outer.path(), root.join("dirlink")).unwrap();
        Jail { outer, d }
    }

    /// Everything outside the root is exactly as set up.
    fn outside_untouched(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["root", "secret"],
            "something was written outside the root"
        );
        assert_eq!(
            std::fs::read(self.outer.path().join("secret")).unwrap(),
            b"SECRET"
        );
    }

    fn root(&self) -> PathBuf {
        self.d.root.clone()
    }
}

/// Names a client might send. Each is either refused or stored as a plain
/// file directly inside the root.
fn upload_corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        "../escape1",
        "..\\escape2",
        "....//escape3",
        "...",
        "/etc/passwd",
        "/tmp/escape4",
        "%2e%2e/escape5",
        "%2e%2e%2fescape6",
        "a\0b",
        "\u{1b}[31mred",
        "bell\u{7}",
        "..",
        ".",
        "",
        "/",
        ".ferry-work",
        "x/.ferry-work",
        ".FERRY-WORK",
        "x/.Ferry-Lock",
        "\u{FF0E}\u{FF26}erry-work",
        "caf\u{e9}",
        "cafe\u{301}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("n".repeat(300));
    v.push(format!("{}/ok-after-long-dirs", "d".repeat(200)));
    v
}

/// Names a download may try. None of them may return the secret.
fn download_corpus() -> Vec<&'static str> {
    vec![
        "../secret",
        "..\\secret",
        "../../secret",
        "/etc/passwd",
        "link",
        "dirlink/secret",
        "dirlink/root/link",
        "%2e%2e/secret",
        "./link",
        "a\0b",
        ".ferry-work",
        ".FERRY-WORK",
        ".Ferry-Work/x",
        "\u{FF0E}ferry-work",
        ".ferry-lock",
        ".ferry-ledger.jsonl",
        "..",
        "",
    ]
}

/// After uploads: every visible entry is a regular file directly in the root,
/// with a name the normaliser would produce.
fn root_is_flat(root: &Path) {
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let daemons = [
            ferryd::WORK_DIR,
            ferryd::LOCK_FILE,
            ferryd::LEDGER_FILE,
            ferryd::LEDGER_OLD,
        ];
        if ["link", "dirlink"].contains(&name.as_str()) || daemons.contains(&name.as_str()) {
            continue;
        }
        assert!(
            e.file_type().unwrap().is_file(),
            "{name} is not a plain file"
        );
        assert!(
            ferry_proto::names::SafeName::component(&name).is_ok(),
            "{name:?}"
        );
    }
}

#[tokio::test]
async fn upload_names_never_escape_on_any_service() {
    let j = Jail::new().await;
    let a = j.d.addrs;
    let mut sig = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
    for (i, name) in upload_corpus().into_iter().enumerate() {
        let data = format!("data {i}").into_bytes();
        // udp_upload: `OK`, or an ERROR text naming the problem.
        match handout::udp_upload(a[ServiceId::UdpUpload].unwrap(), &name, &data, false, 1).await {
            UdpUploadOutcome::Ok { .. } => {}
            UdpUploadOutcome::NotANumber(text) => {
                assert!(text.starts_with("ERROR: refused name"), "{name:?}: {text}")
            }
            other => panic!("{name:?}: {other:?}"),
        }
        // tcp_upload: `go ahead`, or an ERROR text instead of it.
        let reply = handout::tcp_upload(a[ServiceId::TcpUpload].unwrap(), &name, &data).await;
        let text = String::from_utf8_lossy(&reply);
        if name.is_empty() {
            // Nothing after the size: the header never completes, refused as such.
            assert!(text.starts_with("ERROR:"), "{name:?}: {text}");
        } else {
            assert!(
                text == "go ahead" || text.starts_with("ERROR: "),
                "{name:?}: {text}"
            );
        }
        // signal SAF: DON with the stored name, or ERR.
        match sig.upload(&name, &data).await {
            Some(SignalFrame::Done(stored)) => {
                assert!(
                    ferry_proto::names::SafeName::component(&stored).is_ok(),
                    "{stored:?}"
                );
            }
            Some(SignalFrame::Error(reason)) => {
                assert!(reason.contains("refused name"), "{name:?}: {reason}")
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
    // The TCP uploads have no acknowledgement; stop the daemon so they are done.
    let mut d = j.d;
    d.stop_in_place().await;
    let j = Jail { outer: j.outer, d };
    j.outside_untouched();
    root_is_flat(&j.root());
    assert_eq!(j.d.work_entries_settled().await, 0);
    // Names that differ only in Unicode normalisation (NFC "café", NFD
    // "cafe\u{301}") are two different names, stored as two files.
    let nfc = j.root().join("caf\u{e9}");
    let nfd = j.root().join("cafe\u{301}");
    assert!(nfc.exists() && nfd.exists());
    assert_ne!(std::fs::read(&nfc).unwrap(), std::fs::read(&nfd).unwrap());
}

#[tokio::test]
async fn downloads_never_leave_the_root() {
    let j = Jail::new().await;
    let a = j.d.addrs;
    let mut sig = handout::Signal::connect(a[ServiceId::Signal].unwrap()).await;
    for name in download_corpus() {
        if !name.is_empty() && name.len() <= 1024 {
            let wire = handout::magic_download(
                a[ServiceId::MagicDownload].unwrap(),
                name.as_bytes(),
                false,
            )
            .await;
            assert_eq!(wire, [0x49, 0x7E, 2, 0, 0, 0, 0, 0], "magic {name:?}");
        }
        let reply = handout::udp_download(a[ServiceId::UdpDownload].unwrap(), name.as_bytes())
            .await
            .unwrap();
        assert!(
            reply.starts_with(b"ERROR: "),
            "udp {name:?}: {}",
            String::from_utf8_lossy(&reply)
        );
        sig.send(SignalFrame::RequestFile(name.into())).await;
        assert!(
            matches!(sig.recv().await, Some(SignalFrame::Error(_))),
            "RAF {name:?}"
        );
        sig.send(SignalFrame::RequestRepo(name.into())).await;
        assert!(
            matches!(sig.recv().await, Some(SignalFrame::Error(_))),
            "RAR {name:?}"
        );
    }
    // A tree containing a symlink sends the files, never the link's target.
    j.d.put("tree/real.txt", b"real");
    std::os::unix::fs::symlink(j.outer.path().join("secret"), j.root().join("tree/leak")).unwrap();
    sig.send(SignalFrame::RequestRepo("tree".into())).await;
    assert_eq!(sig.recv().await, Some(SignalFrame::SendRepo("tree".into())));
    assert_eq!(
        sig.recv_file().await.unwrap(),
        ("real.txt".to_string(), b"real".to_vec())
    );
    assert_eq!(sig.recv().await, Some(SignalFrame::Done("tree".into())));
    j.outside_untouched();
}

#[tokio::test]
async fn tree_entries_cannot_escape() {
    let j = Jail::new().await;
    let mut sig = handout::Signal::connect(j.d.addrs[ServiceId::Signal].unwrap()).await;
    for bad in [
        "../escape",
        "/abs",
        "a/../../b",
        "ok/./x",
        "a\\..\\..\\b",
        "dup",
        "dup",
    ] {
        sig.send(SignalFrame::SendRepo("t".into())).await;
        sig.send_raw(&ferry_proto::signal::encode_file("fine.txt", b"fine").unwrap())
            .await;
        sig.send_raw(&ferry_proto::signal::encode_file(bad, b"bad").unwrap())
            .await;
        if bad == "dup" {
            sig.send_raw(&ferry_proto::signal::encode_file("dup", b"again").unwrap())
                .await;
        }
        sig.send(SignalFrame::Done(String::new())).await;
        match sig.recv().await {
            Some(SignalFrame::Error(reason)) => assert!(
                reason.contains("refused entry") || reason.contains("twice"),
                "{bad}: {reason}"
            ),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // The whole tree or nothing: no `t` at all.
    assert!(!j.root().join("t").exists());
    assert_eq!(j.d.work_entries_settled().await, 0);
    j.outside_untouched();
    // The connection is still in step.
    sig.send(SignalFrame::Ping).await;
    assert_eq!(sig.recv().await, Some(SignalFrame::Pong));
}

#[tokio::test]
async fn malformed_udp_upload_headers_get_error_text() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpUpload].unwrap();
    for (datagram, want) in [
        (
            &br#"{"checksum": "00000000", "name": "a"}"#[..],
            "missing field `size`",
        ),
        (
            br#"{"checksum": "00000000", "name": "a", "size": -5}"#,
            "invalid value",
        ),
        (
            br#"{"checksum": "XYZ", "name": "a", "size": 1}"#,
            "bad checksum",
        ),
        (
            br#"{"checksum": "00000000", "name": "a", "size": 1, "size": 2}"#,
            "duplicate field",
        ),
        (
            b"{'checksum': '00000000', 'name': 'a', 'size': 1}",
            "bad file_info",
        ),
        (
            br#"{"checksum": "00000000", "name": "a", "size": 99999999999999}"#,
            "the limit is",
        ),
        (b"hello?", "send the file_info JSON first"),
    ] {
        let sock = handout::udp_socket().await;
        sock.send_to(datagram, addr).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = sock.recv_from(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("ERROR: ") && text.contains(want),
            "{}: {text}",
            String::from_utf8_lossy(datagram)
        );
    }
    // A CRC mismatch: every byte arrives, the data does not match, nothing is stored.
    let sock = handout::udp_socket().await;
    let mut info = handout::file_info("crc.bin", b"right");
    let wrong = ferry_proto::crc::format_hex(ferry_proto::crc::checksum(b"wrong"));
    info.splice(14..22, wrong.bytes());
    sock.send_to(&info, addr).await.unwrap();
    let mut buf = [0u8; 512];
    sock.recv_from(&mut buf).await.unwrap();
    sock.send_to(b"right", addr).await.unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("ERROR: checksum mismatch"));
    // A datagram over the announced buffer size ends the session with an error.
    sock.send_to(&handout::file_info("big.bin", &[1u8; 5000]), addr)
        .await
        .unwrap();
    sock.recv_from(&mut buf).await.unwrap();
    sock.send_to(&[1u8; 5000], addr).await.unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("larger than the buffer size"));
    assert_eq!(d.visible_files(), Vec::<String>::new());
    // Still serving.
    let ok = handout::udp_upload(addr, "after.bin", b"after", false, 3).await;
    assert!(matches!(ok, UdpUploadOutcome::Ok { .. }));
    d.stop().await;
}

#[tokio::test]
async fn malformed_tcp_upload_headers_are_refused() {
    let d = TestDaemon::start_with(|c| c.limits.max_file_size = ferry_config::Size(1 << 20)).await;
    let addr = d.addrs[ServiceId::TcpUpload].unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            ferry_proto::tcp_upload::encode_header(1 << 63, "huge"),
            "the limit is 1048576",
        ),
        (
            ferry_proto::tcp_upload::encode_header(u64::MAX, "max"),
            "the limit is",
        ),
        (
            [&5u64.to_be_bytes()[..], b"\xff\xfe"].concat(),
            "not valid UTF-8",
        ),
        (
            ferry_proto::tcp_upload::encode_header(5, &"n".repeat(2000)),
            "the header is",
        ),
        (ferry_proto::tcp_upload::encode_header(5, ".."), "refused"),
    ];
    for (header, want) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&header).await.unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("ERROR: ") && text.contains(want),
            "{want}: {text}"
        );
    }
    // A header cut off before the name.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    assert!(String::from_utf8_lossy(&reply).starts_with("ERROR: the client closed"));
    assert_eq!(handout::tcp_upload(addr, "fine", b"x").await, b"go ahead");
    let mut d = d;
    d.stop_in_place().await;
    assert_eq!(d.visible_files(), ["fine"]);
    assert_eq!(d.work_entries_settled().await, 0);
}

#[tokio::test]
async fn malformed_magic_requests_are_answered_by_closing() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::MagicDownload].unwrap();
    d.put("f", b"file");
    for bad in [
        &b"\x49\x7F\x01\x00\x01f"[..],
        b"\x49\x7E\x02\x00\x01f",
        b"\x49\x7E\x01\x00\x00",
        b"\x49\x7E\x01\x04\x01",
        b"\x49\x7E\x01\x00\x02\xC3\x28",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x49",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bad).await.unwrap();
        if bad.len() == 1 {
            s.shutdown().await.unwrap();
        }
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply).await;
        assert!(reply.is_empty(), "{bad:?} got {reply:?}");
    }
    // A request that stalls past the 1 s read gap is dropped the same way.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x49\x7E\x01\x00\x05ab").await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    assert!(reply.is_empty());
    let wire = handout::magic_download(addr, b"f", false).await;
    assert_eq!(handout::parse_magic(&wire).2, b"file");
    d.stop().await;
}

#[tokio::test]
async fn malformed_http_requests_get_an_error_or_a_close_and_the_page_serves_on() {
    let d = TestDaemon::start().await;
    let addr = d.addrs.http.unwrap();
    d.put("f", b"file contents");
    let long_path = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(20_000));
    let bads: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /f HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"GET /api/ledger/../../f HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\ncontent-length: -1\r\n\r\n".to_vec(),
        b"PIN".to_vec(),
        b"\x49\x7E\x01\x00\x01f".to_vec(),
        long_path.into_bytes(),
    ];
    for bad in bads {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(&bad).await;
        let _ = s.shutdown().await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(ferry_tests::OP_TIMEOUT, s.read_to_end(&mut reply))
            .await
            .expect("answered or closed in time");
        let text = String::from_utf8_lossy(&reply);
        assert!(
            reply.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{:?} got {text:?}",
            String::from_utf8_lossy(&bad[..bad.len().min(40)])
        );
        assert!(!text.contains("file contents"));
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200 OK"));
    d.stop().await;
}

#[tokio::test]
async fn malformed_signal_frames_get_err() {
    let d = TestDaemon::start_with(|c| c.limits.max_file_size = ferry_config::Size(1000)).await;
    let addr = d.addrs[ServiceId::Signal].unwrap();
    for (raw, want) in [
        (&b"XYZ"[..], "unknown tag \"XYZ\""),
        (b"pin", "unknown tag"),
        (
            b"SAF\x00\x01a\x80\x00\x00\x00\x00\x00\x00\x00",
            "the limit is 1000",
        ),
        (b"RAF\x04\x01", "over the limit of 1024"),
        (b"RAF\x00\x02\xC3\x28", "not valid UTF-8"),
    ] {
        let mut c = handout::Signal::connect(addr).await;
        c.send_raw(raw).await;
        match c.recv().await {
            Some(SignalFrame::Error(reason)) => assert!(reason.contains(want), "{raw:?}: {reason}"),
            other => panic!("{raw:?}: {other:?}"),
        }
        assert_eq!(
            c.recv().await,
            None,
            "the connection closes after a corrupt frame"
        );
    }
    // A first byte of 0x20 or more after RAF is the handout's framing (a bare
    // name): a name that is not UTF-8 gets the handout's bare `ERR`.
    let mut c = handout::Signal::connect(addr).await;
    c.send_raw(b"RAF\xff\xff").await;
    assert_eq!(c.recv_raw(3).await, b"ERR");
    // A stray PON (a handout client answering pieces) is ignored; an
    // unexpected but well-formed frame gets ERR and the connection goes on.
    c.send(SignalFrame::Pong).await;
    c.send(SignalFrame::Ping).await;
    assert_eq!(c.recv().await, Some(SignalFrame::Pong));
    c.send(SignalFrame::Done(String::new())).await;
    assert!(matches!(c.recv().await, Some(SignalFrame::Error(r)) if r.contains("unexpected DON")));
    // A CRC that does not match the data: ERR, nothing stored.
    let mut wire = ferry_proto::signal::encode_file("bad-crc", b"data").unwrap();
    let n = wire.len();
    wire[n - 1] ^= 0xFF;
    c.send_raw(&wire).await;
    assert!(
        matches!(c.recv().await, Some(SignalFrame::Error(r)) if r.contains("checksum mismatch"))
    );
    c.send(SignalFrame::Ping).await;
    assert_eq!(c.recv().await, Some(SignalFrame::Pong));
    assert_eq!(d.visible_files(), Vec::<String>::new());
    d.stop().await;
}

#[tokio::test]
async fn malformed_sum_requests_get_error_text() {
    let d = TestDaemon::start().await;
    let addr = d.addrs[ServiceId::UdpSum].unwrap();
    for (req, want) in [
        (&b"Ann:seven"[..], "could not read a name and an integer"),
        (b"Ann:-3", "out of range"),
        (b"Ann:99999999999999999999999", "out of range"),
        (b"{\"name\": 5}", "could not read"),
        (b"\xff\xfe:1", "not valid UTF-8"),
    ] {
        let reply = handout::udp_sum(addr, req).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("ERROR: ") && text.contains(want), "{text}");
    }
    assert_eq!(
        handout::udp_sum(addr, b"Ann:1").await,
        b"Server of ferry:42"
    );
    d.stop().await;
}

/// XORing these 5 bytes into a message at any offset leaves its CRC-32
/// unchanged: they are the CRC-32 polynomial itself, in the bit order of
/// the reflected CRC. Forging a file of the same name, size and CRC-32 takes
/// no more than that.
fn forged(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for (i, b) in [0x41u8, 0x06, 0x71, 0xDB, 0x01].iter().enumerate() {
        out[100 + i] ^= b;
    }
    assert_ne!(out, data);
    assert_eq!(
        ferry_proto::crc::checksum(&out),
        ferry_proto::crc::checksum(data)
    );
    out
}

#[tokio::test]
async fn a_forged_crc_never_passes_for_an_identical_retry() {
    let d = TestDaemon::start().await;
    let honest = data::bytes(5000, 42);
    let forgery = forged(&honest);
    // The forger uploads first, under the name the honest student will use.
    // Over all three upload protocols, the honest upload is then stored
    // beside it (never acknowledged and dropped as a "retry").
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    assert_eq!(
        c.upload("s.bin", &forgery).await,
        Some(SignalFrame::Done("s.bin".into()))
    );
    assert_eq!(
        c.upload("s.bin", &honest).await,
        Some(SignalFrame::Done("s (1).bin".into()))
    );
    // A true retry of the same bytes is still deduplicated.
    assert_eq!(
        c.upload("s.bin", &honest).await,
        Some(SignalFrame::Done("s (1).bin".into()))
    );

    let tcp = d.addrs[ServiceId::TcpUpload].unwrap();
    assert_eq!(
        handout::tcp_upload(tcp, "t.bin", &forgery).await,
        b"go ahead"
    );
    assert_eq!(
        handout::tcp_upload(tcp, "t.bin", &honest).await,
        b"go ahead"
    );

    let udp = d.addrs[ServiceId::UdpUpload].unwrap();
    for bytes in [&forgery, &honest] {
        assert_eq!(
            handout::udp_upload(udp, "u.bin", bytes, false, 3).await,
            handout::UdpUploadOutcome::Ok { attempts: 1 }
        );
    }
    let mut want = vec![
        "s (1).bin",
        "s.bin",
        "t (1).bin",
        "t.bin",
        "u (1).bin",
        "u.bin",
    ];
    want.sort();
    ferry_tests::eventually("every upload stored", || d.visible_files() == want).await;
    for p in ["s", "t", "u"] {
        assert_same_bytes(&d.read(&format!("{p}.bin")), &forgery, p);
        assert_same_bytes(&d.read(&format!("{p} (1).bin")), &honest, p);
    }
    d.stop().await;
}

#[tokio::test]
async fn upload_names_over_max_name_len_are_refused_everywhere() {
    let d = TestDaemon::start_with(|c| c.limits.max_name_len = 32).await;
    let long = "n".repeat(40);
    let outcome = handout::udp_upload(
        d.addrs[ServiceId::UdpUpload].unwrap(),
        &long,
        b"x",
        false,
        1,
    )
    .await;
    assert_eq!(
        outcome,
        UdpUploadOutcome::NotANumber("ERROR: the name is 40 bytes long, the limit is 32".into())
    );
    let reply = handout::tcp_upload(d.addrs[ServiceId::TcpUpload].unwrap(), &long, b"x").await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("ERROR: "),
        "{reply:?}"
    );
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    c.send_raw(&ferry_proto::signal::encode_file(&long, b"x").unwrap())
        .await;
    assert!(
        matches!(c.recv().await, Some(SignalFrame::Error(r)) if r.contains("over the limit of 32"))
    );
    assert_eq!(d.visible_files(), Vec::<String>::new());
    d.stop().await;
}

#[tokio::test]
async fn one_address_cannot_squat_a_name_or_flood_the_root() {
    let d = TestDaemon::start_with(|c| c.limits.max_uploads_per_ip = 50).await;
    let signal = d.addrs[ServiceId::Signal].unwrap();
    // 40 different one-byte lab1.py from one address: numbered, never stuck.
    let mut c = handout::Signal::connect(signal).await;
    let started = std::time::Instant::now();
    for i in 0..40u8 {
        let want = if i == 0 {
            "lab1.py".to_string()
        } else {
            format!("lab1 ({i}).py")
        };
        assert_eq!(
            c.upload("lab1.py", &[i]).await,
            Some(SignalFrame::Done(want))
        );
    }
    eprintln!("40 same-name uploads in {:?}", started.elapsed());
    // The quota: 50 uploads per window from one address, over every protocol.
    for i in 40..50u8 {
        assert!(matches!(
            c.upload("more.py", &[i]).await,
            Some(SignalFrame::Done(_))
        ));
    }
    match c.upload("lab1.py", b"one too many").await {
        Some(SignalFrame::Error(r)) => assert!(r.contains("upload quota"), "{r}"),
        other => panic!("{other:?}"),
    }
    let reply = handout::tcp_upload(d.addrs[ServiceId::TcpUpload].unwrap(), "x.py", b"x").await;
    assert!(
        String::from_utf8_lossy(&reply).contains("upload quota"),
        "{reply:?}"
    );
    let outcome = handout::udp_upload(
        d.addrs[ServiceId::UdpUpload].unwrap(),
        "y.py",
        b"y",
        false,
        1,
    )
    .await;
    assert!(
        matches!(&outcome, UdpUploadOutcome::NotANumber(r) if r.contains("upload quota")),
        "{outcome:?}"
    );
    // Another address still uploads lab1.py.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = other.connect(signal).await.unwrap();
    s.write_all(&ferry_proto::signal::encode_file("lab1.py", b"honest").unwrap())
        .await
        .unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..3], b"DON");
    d.stop().await;
}

/// A ferry `SAR` of `entries` (path, bytes), ended by `DON`; the answer.
async fn send_tree(
    c: &mut handout::Signal,
    name: &str,
    entries: &[(String, Vec<u8>)],
) -> Option<SignalFrame> {
    let mut wire = ferry_proto::signal::encode(SignalFrame::SendRepo(name.into())).unwrap();
    for (path, bytes) in entries {
        wire.extend(ferry_proto::signal::encode_file(path, bytes).unwrap());
    }
    wire.extend(ferry_proto::signal::encode(SignalFrame::Done(String::new())).unwrap());
    c.send_raw(&wire).await;
    c.recv().await
}

#[tokio::test]
async fn a_tree_cannot_spend_inodes_through_deep_directories() {
    let d = TestDaemon::start_with(|c| c.signal.max_tree_entries = 20).await;
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    // One entry 40 directories deep: refused, nothing made.
    let deep = format!("{}f", "d/".repeat(40));
    match send_tree(&mut c, "deep", &[(deep, Vec::new())]).await {
        Some(SignalFrame::Error(r)) => {
            assert!(r.contains("41 levels deep, the limit is 32"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    // Directories count as entries: 3 files needing 18 directories is 21 > 20.
    let wide: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!(
                    "{}/f",
                    (0..6)
                        .map(|k| format!("x{i}{k}"))
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                vec![i],
            )
        })
        .collect();
    match send_tree(&mut c, "wide", &wide).await {
        Some(SignalFrame::Error(r)) => {
            assert!(r.contains("entries (files and directories)"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    // Within the limits a tree is stored as always.
    let ok = vec![("a/b/c.txt".to_string(), b"c".to_vec())];
    assert_eq!(
        send_tree(&mut c, "fine", &ok).await,
        Some(SignalFrame::Done("fine".into()))
    );
    assert_eq!(d.visible_files(), ["fine/a/b/c.txt"]);
    assert_eq!(d.work_entries_settled().await, 0);
    d.stop().await;
}

#[tokio::test]
async fn a_rar_during_an_overwriting_sar_sends_one_version() {
    let d = TestDaemon::start_with(|c| c.on_conflict = ferry_config::OnConflict::Overwrite).await;
    let addr = d.addrs[ServiceId::Signal].unwrap();
    let version = |v: u8| -> Vec<(String, Vec<u8>)> {
        (0..40)
            .map(|i| (format!("f{i:02}.bin"), vec![v; 100_000]))
            .collect()
    };
    let mut writer = handout::Signal::connect(addr).await;
    assert_eq!(
        send_tree(&mut writer, "t", &version(b'A')).await,
        Some(SignalFrame::Done("t".into()))
    );
    // A RAR that reads slowly: after its first file, the tree is replaced.
    let mut reader = handout::Signal::connect(addr).await;
    reader.send(SignalFrame::RequestRepo("t".into())).await;
    assert_eq!(reader.recv().await, Some(SignalFrame::SendRepo("t".into())));
    let (_, first) = reader.recv_file().await.expect("a first file");
    assert!(first.iter().all(|&b| b == b'A'));
    assert_eq!(
        send_tree(&mut writer, "t", &version(b'B')).await,
        Some(SignalFrame::Done("t".into()))
    );
    let mut files = 1;
    loop {
        match reader.recv().await {
            Some(SignalFrame::FileHeader { size, .. }) => {
                let mut data = Vec::new();
                while data.len() < size as usize {
                    match reader.recv().await {
                        Some(SignalFrame::Data(b)) => data.extend_from_slice(&b),
                        other => panic!("{other:?}"),
                    }
                }
                assert!(matches!(
                    reader.recv().await,
                    Some(SignalFrame::FileEnd { .. })
                ));
                assert!(
                    data.iter().all(|&b| b == b'A'),
                    "a file of the new version in the old tree"
                );
                files += 1;
            }
            Some(SignalFrame::Done(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(files, 40, "the whole old version");
    assert!(d.read("t/f00.bin").iter().all(|&b| b == b'B'));
    d.stop().await;
}

/// Issue 23: forged udp_upload `file_info`s carrying a victim's address
/// (the forger never receives a reply, never sends the data) used up the
/// victim's upload quota on every protocol. UDP cannot prove a source, so
/// an upload is charged only once it is stored: sessions that never
/// complete cost the address nothing, and completed ones still count.
#[tokio::test]
async fn forged_udp_file_infos_never_spend_a_victims_quota() {
    let d = TestDaemon::start_with(|c| {
        c.limits.max_uploads_per_ip = 3;
        c.udp_upload.session_timeout = ferry_config::Dur(Duration::from_millis(500));
    })
    .await;
    let victim: std::net::IpAddr = [127, 0, 0, 50].into();
    // Ten file_infos "from" the victim (ten ports: ten sessions), never
    // followed by data.
    for i in 0..10 {
        let forged = tokio::net::UdpSocket::bind((victim, 0)).await.unwrap();
        let info = handout::file_info(&format!("confession-{i}.txt"), &[b'x'; 100]);
        forged
            .send_to(&info, d.addrs[ServiceId::UdpUpload].unwrap())
            .await
            .unwrap();
    }
    ferry_tests::eventually("the ten sessions opened", || {
        d.controller.udp_sessions_peak() == 10
    })
    .await;
    // The victim's own three uploads, its whole quota, all go through.
    for i in 0..3 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((victim, 0).into()).unwrap();
        let mut s = sock
            .connect(d.addrs[ServiceId::TcpUpload].unwrap())
            .await
            .unwrap();
        let name = format!("mine-{i}.txt");
        s.write_all(&ferry_proto::tcp_upload::encode_header(4, &name))
            .await
            .unwrap();
        let mut reply = vec![0u8; 256];
        let n = s.read(&mut reply).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reply[..n]),
            "go ahead",
            "upload {i} of the victim's own"
        );
        s.write_all(b"mine").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(
            String::from_utf8_lossy(&rest).starts_with("STORED"),
            "{rest:?}"
        );
    }
    assert!(!d
        .visible_files()
        .iter()
        .any(|f| f.starts_with("confession")));
    // Completed UDP uploads are charged: another address's three stored
    // files spend its quota, and a fourth is refused.
    let other: std::net::IpAddr = [127, 0, 0, 51].into();
    let s = tokio::net::UdpSocket::bind((other, 0)).await.unwrap();
    let mut last = String::new();
    for i in 0..4 {
        let data = data::bytes(500, i);
        s.send_to(
            &handout::file_info(&format!("u{i}.bin"), &data),
            d.addrs[ServiceId::UdpUpload].unwrap(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        last = String::from_utf8_lossy(&buf[..n]).into_owned();
        if last.starts_with("ERROR") {
            break;
        }
        s.send_to(&data, d.addrs[ServiceId::UdpUpload].unwrap())
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"OK", "upload {i}");
    }
    assert!(last.contains("upload quota"), "{last}");
    d.stop().await;
}

/// Issue 23: a SAR tree counted as one upload of the quota, so 19 trees from
/// one address used 199,593 inodes in 22 s against a quota of "2000 uploads
/// an hour". Each entry is now an upload of the quota, files and bytes.
#[tokio::test]
async fn a_trees_entries_count_against_the_upload_quota() {
    let d = TestDaemon::start_with(|c| c.limits.max_uploads_per_ip = 6).await;
    let mut c = handout::Signal::connect(d.addrs[ServiceId::Signal].unwrap()).await;
    let entries = |n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| (format!("f{i}.txt"), vec![b'x'; 10]))
            .collect()
    };
    // The tree (1) and its 3 entries (3): within the 6.
    assert_eq!(
        send_tree(&mut c, "small", &entries(3)).await,
        Some(SignalFrame::Done("small".into()))
    );
    // One more tree of 3 entries would be 8: refused, nothing of it stored.
    match send_tree(&mut c, "big", &entries(3)).await {
        Some(SignalFrame::Error(r)) => assert!(r.contains("upload quota"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        d.visible_files(),
        ["small/f0.txt", "small/f1.txt", "small/f2.txt"]
    );
    assert_eq!(d.work_entries_settled().await, 0);
    d.stop().await;
}

/// Hand-in privacy (`access.downloads = "sender"`, the default): two
/// students on addresses of their own and an admin network.
#[tokio::test]
async fn a_hand_in_is_downloaded_only_by_its_sender_or_an_admin() {
    use std::net::Ipv4Addr;
    let (alice, bob, admin) = (
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 9),
    );
    let d =
        TestDaemon::start_with(|c| c.access.admin = vec!["127.0.0.9/32".parse().unwrap()]).await;
    let a = d.addrs;
    let (sig, magic, udp) = (
        a[ServiceId::Signal].unwrap(),
        a[ServiceId::MagicDownload].unwrap(),
        a[ServiceId::UdpDownload].unwrap(),
    );
    let work = data::bytes(3000, 7);
    let mut alice_c = handout::Signal::connect_as(alice, sig).await;
    assert_eq!(
        alice_c.upload("hw.py", &work).await,
        Some(SignalFrame::Done("hw.py".into()))
    );
    // Alice downloads her own, on every protocol.
    alice_c.send(SignalFrame::RequestFile("hw.py".into())).await;
    assert_eq!(alice_c.recv_file().await.unwrap().1, work);
    let got = handout::magic_download_as(alice, magic, b"hw.py").await;
    assert_eq!(handout::parse_magic(&got).2, &work[..]);
    assert_eq!(
        handout::udp_download_as(alice, udp, b"hw.py")
            .await
            .unwrap(),
        work
    );

    // Bob gets each protocol's refusal, and not a byte of it.
    let refusal = "hw.py was handed in from another address";
    let mut bob_c = handout::Signal::connect_as(bob, sig).await;
    bob_c.send(SignalFrame::RequestFile("hw.py".into())).await;
    match bob_c.recv().await {
        Some(SignalFrame::Error(e)) => assert!(e.contains(refusal), "{e}"),
        other => panic!("RAF of a classmate's file: {other:?}"),
    }
    let got = handout::magic_download_as(bob, magic, b"hw.py").await;
    assert_eq!(got, [0x49, 0x7E, 0x02, 0, 0, 0, 0, 0], "status 0, no data");
    let got = handout::udp_download_as(bob, udp, b"hw.py").await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("ERROR: ") && text.contains(refusal),
        "{text}"
    );

    // A tree: Bob can have neither the tree nor a file in it.
    let entries = vec![("main.py".to_string(), b"print(1)\n".to_vec())];
    assert!(matches!(
        send_tree(&mut alice_c, "proj", &entries).await,
        Some(SignalFrame::Done(_))
    ));
    for ask in [
        SignalFrame::RequestRepo("proj".into()),
        SignalFrame::RequestFile("proj/main.py".into()),
    ] {
        bob_c.send(ask.clone()).await;
        match bob_c.recv().await {
            Some(SignalFrame::Error(e)) => assert!(e.contains("handed in from another"), "{e}"),
            other => panic!("{ask:?}: {other:?}"),
        }
    }

    // The same name and bytes from Bob are his own upload, not Alice's file.
    assert_eq!(
        bob_c.upload("hw.py", &work).await,
        Some(SignalFrame::Done("hw (1).py".into()))
    );
    bob_c
        .send(SignalFrame::RequestFile("hw (1).py".into()))
        .await;
    assert_eq!(bob_c.recv_file().await.unwrap().1, work);

    // What an admin placed, and what an admin network uploaded, is for everyone.
    d.put("handout.txt", b"read me");
    let mut admin_c = handout::Signal::connect_as(admin, sig).await;
    assert_eq!(
        admin_c.upload("notes.txt", b"notes").await,
        Some(SignalFrame::Done("notes.txt".into()))
    );
    for (name, want) in [("handout.txt", &b"read me"[..]), ("notes.txt", b"notes")] {
        bob_c.send(SignalFrame::RequestFile(name.into())).await;
        assert_eq!(bob_c.recv_file().await.unwrap().1, want, "{name}");
    }
    // The admin network downloads the hand-in.
    let got = handout::magic_download_as(admin, magic, b"hw.py").await;
    assert_eq!(handout::parse_magic(&got).2, &work[..]);
    // Nothing Bob asked for moved a byte: the stored files are as sent.
    assert_eq!(d.read("hw.py"), work);
    d.stop().await;
}

/// `access.downloads = "anyone"`: the old behaviour, for a lab that shares.
#[tokio::test]
async fn anyone_may_download_when_the_lab_shares() {
    use ferry_config::Downloads;
    use std::net::Ipv4Addr;
    let d = TestDaemon::start_with(|c| c.access.downloads = Downloads::Anyone).await;
    let sig = d.addrs[ServiceId::Signal].unwrap();
    let mut alice = handout::Signal::connect_as(Ipv4Addr::new(127, 0, 0, 2), sig).await;
    assert!(alice.upload("shared.txt", b"for all").await.is_some());
    let got = handout::magic_download_as(
        Ipv4Addr::new(127, 0, 0, 3),
        d.addrs[ServiceId::MagicDownload].unwrap(),
        b"shared.txt",
    )
    .await;
    assert_eq!(handout::parse_magic(&got).2, b"for all");
    d.stop().await;
}
