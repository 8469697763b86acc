//! `ferry --handout` against the handout-style servers in `tests/peers/`
//! (Python, written the way the handouts have students write them): every
//! protocol completes a send and a get, byte for byte, with no ferry-only
//! request reaching a server that would choke on it.

use ferry_config::ServiceId;
use std::path::Path;
use std::process::Output;

use ferry_tests::{assert_same_bytes, data, peers};
use tokio::process::Command;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// `ferry --handout` with `port_flag port` and `args`, whatever its exit.
async fn ferry_any(port_flag: &str, port: u16, cwd: &Path, args: &[&str]) -> Output {
    Command::new(FERRY)
        .current_dir(cwd)
        .args(["--handout", "--host", "127.0.0.1", "--timeout", "20s"])
        .arg(port_flag)
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .expect("ferry runs")
}

/// [`ferry_any`], which must succeed.
async fn ferry(port_flag: &str, port: u16, cwd: &Path, args: &[&str]) -> Output {
    let out = ferry_any(port_flag, port, cwd, args).await;
    assert!(
        out.status.success(),
        "ferry {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A served directory and a client working directory.
fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
}

/// Waits (bounded) for a file the server writes after the client is done.
async fn appears(path: &Path, len: usize) -> Vec<u8> {
    let whole = || std::fs::read(path).is_ok_and(|b| b.len() == len);
    ferry_tests::eventually(&format!("{} at {len} bytes", path.display()), whole).await;
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn signal_send_get_and_repos_against_the_handout_server() {
    let (served, cwd) = dirs();
    let (_server, port) = peers::server("signal_server.py", served.path(), &[]).await;
    // Ends in DON, but not in a 3-byte last piece: the handout's server
    // would take a last `recv(1024)` of exactly `DON` for the end (ferryd
    // does not; see tests/tests/handout_signal.rs).
    let mut ends_in_don = data::bytes(2000, 3);
    ends_in_don.extend_from_slice(b"DON");
    let files = [
        ("report.bin", data::bytes(300_000, 1)),
        ("one.txt", b"x".to_vec()),
        ("tail.bin", ends_in_don),
    ];
    for (name, bytes) in &files {
        std::fs::write(cwd.path().join(name), bytes).unwrap();
        ferry("--signal-port", port, cwd.path(), &["send", name]).await;
        assert_same_bytes(
            &appears(&served.path().join(name), bytes.len()).await,
            bytes,
            name,
        );
        let out = ferry(
            "--signal-port",
            port,
            cwd.path(),
            &["get", name, "-o", &format!("back-{name}")],
        )
        .await;
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("got {name}")));
        assert_same_bytes(
            &std::fs::read(cwd.path().join(format!("back-{name}"))).unwrap(),
            bytes,
            name,
        );
    }
    // A missing file: the handout server's ERR is a refusal (exit 4).
    let out = ferry_any("--signal-port", port, cwd.path(), &["get", "nope.txt"]).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A flat repo up, and a repo back.
    let repo = cwd.path().join("lab");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.py"), b"print('a')\n").unwrap();
    std::fs::write(repo.join("b.py"), data::bytes(5000, 9)).unwrap();
    ferry("--signal-port", port, cwd.path(), &["send-dir", "lab"]).await;
    appears(&served.path().join("b.py"), 5000).await;
    std::fs::create_dir(served.path().join("course")).unwrap();
    std::fs::write(served.path().join("course/x.txt"), b"xx").unwrap();
    std::fs::write(served.path().join("course/y.bin"), data::bytes(4000, 4)).unwrap();
    ferry(
        "--signal-port",
        port,
        cwd.path(),
        &["get-dir", "course", "-o", "copy"],
    )
    .await;
    assert_eq!(std::fs::read(cwd.path().join("copy/x.txt")).unwrap(), b"xx");
    assert_same_bytes(
        &std::fs::read(cwd.path().join("copy/y.bin")).unwrap(),
        &data::bytes(4000, 4),
        "y.bin",
    );
}

#[tokio::test]
async fn tcp_upload_and_magic_download_against_the_handout_servers() {
    let (served, cwd) = dirs();
    let bytes = data::bytes(100_000, 5);
    std::fs::write(cwd.path().join("essay.txt"), &bytes).unwrap();
    let (_up, port) = peers::server("tcp_upload_server.py", served.path(), &[]).await;
    ferry(
        "--tcp-upload-port",
        port,
        cwd.path(),
        &["send", "--via", "tcp", "essay.txt"],
    )
    .await;
    // That server keeps what it receives as NAME.temp.
    assert_same_bytes(
        &appears(&served.path().join("essay.txt.temp"), bytes.len()).await,
        &bytes,
        "tcp",
    );
    let (_down, port) = peers::server("magic_server.py", served.path(), &[]).await;
    ferry(
        "--magic-port",
        port,
        cwd.path(),
        &[
            "get",
            "--via",
            "magic",
            "essay.txt.temp",
            "-o",
            "magic-copy",
        ],
    )
    .await;
    assert_same_bytes(
        &std::fs::read(cwd.path().join("magic-copy")).unwrap(),
        &bytes,
        "magic",
    );
}

#[tokio::test]
async fn udp_upload_download_and_sum_against_the_handout_servers() {
    let (served, cwd) = dirs();
    // 4096·k + 100 bytes: the last chunk is short, the download ends there.
    let bytes = data::bytes(4096 * 10 + 100, 6);
    std::fs::write(cwd.path().join("photo.jpg"), &bytes).unwrap();
    let (_up, port) = peers::server("udp_upload_server.py", served.path(), &["1452"]).await;
    let out = ferry(
        "--udp-upload-port",
        port,
        cwd.path(),
        &["send", "--via", "udp", "photo.jpg"],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent photo.jpg"));
    // That server stores it as new_NAME, once the CRC-32 matched.
    assert_same_bytes(
        &std::fs::read(served.path().join("new_photo.jpg")).unwrap(),
        &bytes,
        "udp up",
    );
    let (_down, port) = peers::server("udp_download_server.py", served.path(), &[]).await;
    ferry(
        "--udp-download-port",
        port,
        cwd.path(),
        &["get", "--via", "udp", "new_photo.jpg", "-o", "udp-copy"],
    )
    .await;
    assert_same_bytes(
        &std::fs::read(cwd.path().join("udp-copy")).unwrap(),
        &bytes,
        "udp down",
    );
    let (_sum, port) = peers::server("udp_sum_server.py", served.path(), &[]).await;
    let out = ferry(
        "--udp-sum-port",
        port,
        cwd.path(),
        &["sum", "Client of Ann", "7"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Client of Ann: 7\nServer of John Q. Smith: 42\nsum: 49\n"
    );
}

#[tokio::test]
async fn the_handout_framing_against_ferryd_too() {
    let d = ferry_tests::TestDaemon::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let port = d.addrs[ServiceId::Signal].unwrap().port();
    let mut tail = data::bytes(1024, 8);
    tail.extend_from_slice(b"DON");
    std::fs::write(cwd.path().join("tail.bin"), &tail).unwrap();
    let out = ferry("--signal-port", port, cwd.path(), &["send", "tail.bin"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("not acknowledged"));
    // ferryd stores a handout SAF before it reads the CLS that ends the send.
    assert_same_bytes(&d.read("tail.bin"), &tail, "tail.bin");
    ferry(
        "--signal-port",
        port,
        cwd.path(),
        &["get", "tail.bin", "-o", "back"],
    )
    .await;
    assert_same_bytes(
        &std::fs::read(cwd.path().join("back")).unwrap(),
        &tail,
        "back",
    );
    let udp = d.addrs[ServiceId::UdpDownload].unwrap().port();
    ferry(
        "--udp-download-port",
        udp,
        cwd.path(),
        &["get", "--via", "udp", "tail.bin", "-o", "udp-back"],
    )
    .await;
    assert_same_bytes(
        &std::fs::read(cwd.path().join("udp-back")).unwrap(),
        &tail,
        "udp-back",
    );
    let repo = cwd.path().join("lab");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("a.py"), b"a").unwrap();
    std::fs::write(repo.join("b.py"), b"bb").unwrap();
    ferry("--signal-port", port, cwd.path(), &["send-dir", "lab"]).await;
    assert_eq!(d.read("a.py"), b"a");
    assert_eq!(d.read("b.py"), b"bb");
    d.put("course/a.py", b"a");
    d.put("course/b.py", b"bb");
    ferry(
        "--signal-port",
        port,
        cwd.path(),
        &["get-dir", "course", "-o", "copy"],
    )
    .await;
    assert_eq!(std::fs::read(cwd.path().join("copy/b.py")).unwrap(), b"bb");
    d.stop().await;
}

#[tokio::test]
async fn a_handout_download_cut_before_don_is_an_error_not_a_file() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server that answers RAF with its signal and one piece, then dies.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Real: the handout framing is its pauses, and the client under
        // test is a process reading on the real clock.
        let pause = |ms| tokio::time::sleep(std::time::Duration::from_millis(ms));
        let mut req = [0u8; 64];
        let _ = s.read(&mut req).await;
        pause(150).await;
        let _ = s.read(&mut req).await;
        let _ = s.write_all(b"SAF").await;
        pause(100).await;
        let _ = s.write_all(b"half of a file").await;
        let mut pon = [0u8; 3];
        let _ = s.read_exact(&mut pon).await;
    });
    let cwd = tempfile::tempdir().unwrap();
    let out = ferry_any("--signal-port", port, cwd.path(), &["get", "x.txt"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("before DON"));
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "no file, no partial"
    );
}
