//! The built `ferry` binary: stdout, stderr and exit codes a person sees, and
//! the progress bar on a terminal (under a pty) but never in piped output.

use ferry_config::ServiceId;
use std::path::Path;
use std::process::Output;

use ferry_config::Config;
use ferryd::{BoundAddrs, Daemon};
use tokio::process::Command;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

struct Server {
    addrs: BoundAddrs,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    async fn start_with(edit: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        edit(&mut config);
        let daemon = Daemon::bind(config).await.unwrap();
        let addrs = daemon.addrs();
        let root = daemon.storage_root().to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(daemon.serve(async move {
            let _ = rx.await;
        }));
        Server {
            addrs,
            stop: Some(tx),
            task,
            root,
            _dir: dir,
        }
    }

    async fn stop(mut self) -> BoundAddrs {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
        self.addrs
    }
}

/// `ferry` with the ports of `a` as environment fallbacks.
fn ferry(a: &BoundAddrs, cwd: &Path) -> Command {
    let mut c = Command::new(FERRY);
    c.current_dir(cwd)
        .env("FERRY_HOST", "127.0.0.1")
        .env(
            "FERRY_UDP_UPLOAD_PORT",
            a[ServiceId::UdpUpload].unwrap().port().to_string(),
        )
        .env(
            "FERRY_UDP_DOWNLOAD_PORT",
            a[ServiceId::UdpDownload].unwrap().port().to_string(),
        )
        .env(
            "FERRY_UDP_SUM_PORT",
            a[ServiceId::UdpSum].unwrap().port().to_string(),
        )
        .env(
            "FERRY_TCP_UPLOAD_PORT",
            a[ServiceId::TcpUpload].unwrap().port().to_string(),
        )
        .env(
            "FERRY_MAGIC_PORT",
            a[ServiceId::MagicDownload].unwrap().port().to_string(),
        )
        .env(
            "FERRY_SIGNAL_PORT",
            a[ServiceId::Signal].unwrap().port().to_string(),
        )
        .env("FERRY_HTTP_PORT", a.http.unwrap().port().to_string());
    c
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

async fn run(cmd: &mut Command) -> Output {
    cmd.output().await.expect("ferry runs")
}

#[tokio::test]
async fn ping_healthy_quiet_and_stopped() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let out = run(ferry(&s.addrs, cwd.path()).arg("ping")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let port = s.addrs[ServiceId::Signal].unwrap().port();
    assert!(
        text(&out.stdout).starts_with(&format!("PON from 127.0.0.1:{port} in ")),
        "{}",
        text(&out.stdout)
    );
    assert!(out.stderr.is_empty());
    let out = run(ferry(&s.addrs, cwd.path()).args(["ping", "-q"])).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let addrs = s.stop().await;
    let out = run(ferry(&addrs, cwd.path()).arg("ping")).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "ferry: ping: cannot reach 127.0.0.1:{port}: Connection refused"
        )),
        "{err}"
    );
    let out = run(ferry(&addrs, cwd.path()).args(["ping", "--json"])).await;
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["kind"].as_str(),
            v["exit_code"].as_u64()
        ),
        (Some(false), Some("unreachable"), Some(3))
    );
}

#[tokio::test]
async fn send_get_and_their_errors() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("report.pdf"), b"%PDF-1.4 pretend").unwrap();
    for via in ["signal", "tcp", "udp"] {
        let out = run(ferry(&s.addrs, cwd.path()).args([
            "send",
            "report.pdf",
            "--via",
            via,
            "--as",
            &format!("{via}.pdf"),
        ]))
        .await;
        assert_eq!(out.status.code(), Some(0), "{via}: {}", text(&out.stderr));
        let line = text(&out.stdout);
        assert!(
            line.starts_with(&format!("sent report.pdf (16 B) via {via}")),
            "{line}"
        );
        assert!(
            out.stderr.is_empty(),
            "piped: no progress bar: {:?}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read(s.root.join(format!("{via}.pdf"))).unwrap(),
            b"%PDF-1.4 pretend"
        );
    }
    let out =
        run(ferry(&s.addrs, cwd.path()).args(["get", "signal.pdf", "--via", "magic", "--json"]))
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["bytes"].as_u64()),
        (Some(true), Some(16))
    );
    assert_eq!(
        std::fs::read(cwd.path().join("signal.pdf")).unwrap(),
        b"%PDF-1.4 pretend"
    );

    // The file is there now: no overwrite without --force.
    let out = run(ferry(&s.addrs, cwd.path()).args(["get", "signal.pdf"])).await;
    assert_eq!(out.status.code(), Some(7));
    assert!(text(&out.stderr).contains("exists; use --force to replace it"));
    let out =
        run(ferry(&s.addrs, cwd.path()).args(["get", "signal.pdf", "--force", "--via", "udp"]))
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = run(ferry(&s.addrs, cwd.path()).args(["get", "missing.txt"])).await;
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        text(&out.stderr),
        "ferry: get: refused by the server: no such file: missing.txt\n"
    );
    assert!(!cwd.path().join("missing.txt").exists());

    let out =
        run(ferry(&s.addrs, cwd.path()).args(["send", "report.pdf", "--as", "../../etc/x"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "upload names are reduced to their last component"
    );
    assert!(s.root.join("x").exists());
    let out = run(ferry(&s.addrs, cwd.path()).args(["send", "report.pdf", "--as", ".."])).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("refused name"),
        "{}",
        text(&out.stderr)
    );

    let out = run(ferry(&s.addrs, cwd.path()).args(["sum", "Client of Ann", "7"])).await;
    assert_eq!(
        text(&out.stdout),
        "Client of Ann: 7\nServer of ferry: 42\nsum: 49\n"
    );
    let out = run(ferry(&s.addrs, cwd.path()).args(["sum", "Ann", "500"])).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("out of range"));

    std::fs::create_dir_all(cwd.path().join("tree/sub")).unwrap();
    std::fs::write(cwd.path().join("tree/sub/f.txt"), b"f").unwrap();
    let out = run(ferry(&s.addrs, cwd.path()).args(["send-dir", "tree"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(ferry(&s.addrs, cwd.path()).args(["get-dir", "tree", "-o", "back"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(cwd.path().join("back/sub/f.txt")).unwrap(),
        b"f"
    );
    s.stop().await;
}

#[tokio::test]
async fn help_documents_examples_and_exit_codes() {
    let out = run(Command::new(FERRY).arg("--help")).await;
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for want in [
        "Examples:",
        "ferry ping",
        "Exit codes:",
        "3  server not reachable",
        "FERRY_HOST",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let out = run(Command::new(FERRY).args(["get"])).await;
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[tokio::test]
async fn progress_bar_on_a_terminal_only() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) is needed to give ferry a terminal");
    }
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("big.bin"), vec![7u8; 8 << 20]).unwrap();
    let a = &s.addrs;
    let cmd = format!(
        "{FERRY} --host 127.0.0.1 --signal-port {} send big.bin",
        a[ServiceId::Signal].unwrap().port()
    );
    // `script` runs the command on a pseudo-terminal and copies what it drew.
    let out = run(Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(cwd.path())
        .env("TERM", "xterm"))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("big.bin ["),
        "no progress bar drawn on a terminal:\n{screen}"
    );
    // The bar writes sizes as the result line does: one formatter.
    assert!(screen.contains("/8.0 MiB "), "{screen}");
    assert!(
        screen.contains("sent big.bin (8.0 MiB) via signal"),
        "{screen}"
    );
    // The same command piped: the result line only.
    let out = run(Command::new(FERRY)
        .args([
            "--host",
            "127.0.0.1",
            "--signal-port",
            &a[ServiceId::Signal].unwrap().port().to_string(),
            "send",
            "big.bin",
            "--as",
            "again.bin",
        ])
        .current_dir(cwd.path()))
    .await;
    let crc = ferry_proto::crc::format_hex(ferry_proto::crc::checksum(&vec![7u8; 8 << 20]));
    assert_eq!(
        text(&out.stdout),
        format!("sent big.bin (8.0 MiB) via signal, stored as \"again.bin\", CRC-32 {crc}\n")
    );
    assert!(out.stderr.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn bench_reports_what_it_did() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let out = run(ferry(&s.addrs, cwd.path()).args([
        "--json",
        "bench",
        "signal-up",
        "--size",
        "64K",
        "--clients",
        "3",
        "--count",
        "12",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["workload"].as_str(),
            v["transfers"].as_u64(),
            v["errors"].as_u64()
        ),
        (Some("signal-up"), Some(12), Some(0))
    );
    assert!(
        v["bytes_per_second"].as_f64().unwrap() > 0.0
            && v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap()
    );
    // The uploads really happened: twelve 64 KiB files on the server.
    let stored: Vec<_> = std::fs::read_dir(&s.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("bench-"))
        .collect();
    assert_eq!(stored.len(), 12);
    assert!(stored
        .iter()
        .all(|e| e.metadata().unwrap().len() == 64 * 1024));
    // Downloads and pings, as text.
    let out = run(ferry(&s.addrs, cwd.path()).args([
        "bench",
        "magic-down",
        "--size",
        "100K",
        "--count",
        "5",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .starts_with("magic-down size 100.0 KiB x 1 clients: 5 transfers, 0 errors"),
        "{}",
        text(&out.stdout)
    );
    let addrs = s.stop().await;
    // Against a stopped daemon every transfer fails: reported, exit 1.
    let out =
        run(ferry(&addrs, cwd.path()).args(["--json", "bench", "ping", "--count", "3"])).await;
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["transfers"].as_u64(), v["errors"].as_u64()),
        (Some(0), Some(3))
    );
    assert!(v["first_error"].as_str().unwrap().contains("cannot reach"));
}

/// A tcp_upload server that dies after reading the data: `go ahead`, the
/// bytes, then a plain close (FIN), as a process killed before storing.
async fn dying_tcp_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut header = [0u8; 1024];
            let _ = s.read(&mut header).await;
            let _ = s.write_all(b"go ahead").await;
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }
    });
    port
}

#[tokio::test]
async fn a_tcp_upload_is_reported_stored_only_when_ferryd_confirms_it() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("notes.txt"), b"mine").unwrap();
    std::fs::write(s.root.join("notes.txt"), b"someone else's").unwrap();
    // ferryd confirms with the name it stored under.
    let out = run(ferry(&s.addrs, cwd.path()).args(["send", "--via", "tcp", "notes.txt"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(r#"via tcp, stored as "notes (1).txt""#),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(s.root.join("notes (1).txt")).unwrap(),
        b"mine"
    );
    // A server that closes without confirming: not reported stored.
    let port = dying_tcp_server().await.to_string();
    let out = run(ferry(&s.addrs, cwd.path())
        .args(["send", "--via", "tcp", "notes.txt"])
        .env("FERRY_TCP_UPLOAD_PORT", &port))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("without confirming that it stored the file"),
        "{}",
        text(&out.stderr)
    );
    // With --handout (a student's server, which cannot confirm): sent.
    let out = run(ferry(&s.addrs, cwd.path())
        .args(["--handout", "send", "--via", "tcp", "notes.txt"])
        .env("FERRY_TCP_UPLOAD_PORT", &port))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    s.stop().await;
}

#[tokio::test]
async fn get_dir_force_keeps_unrelated_local_files() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(s.root.join("proj/src")).unwrap();
    std::fs::write(s.root.join("proj/a.txt"), b"new a").unwrap();
    std::fs::write(s.root.join("proj/src/main.rs"), b"fn main(){}").unwrap();
    let mine = cwd.path().join("proj");
    std::fs::create_dir_all(mine.join("src")).unwrap();
    std::fs::write(mine.join("a.txt"), b"old a").unwrap();
    std::fs::write(mine.join("notes.txt"), b"my notes").unwrap();
    std::fs::write(mine.join("src/lib.rs"), b"mine").unwrap();
    let out = run(ferry(&s.addrs, cwd.path()).args(["get-dir", "proj"])).await;
    assert_eq!(out.status.code(), Some(7), "exists without --force");
    let out = run(ferry(&s.addrs, cwd.path()).args(["get-dir", "proj", "--force"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(mine.join("a.txt")).unwrap(), b"new a");
    assert_eq!(
        std::fs::read(mine.join("src/main.rs")).unwrap(),
        b"fn main(){}"
    );
    assert_eq!(std::fs::read(mine.join("notes.txt")).unwrap(), b"my notes");
    assert_eq!(std::fs::read(mine.join("src/lib.rs")).unwrap(), b"mine");
    let leftovers: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("ferry-part"))
        .collect();
    assert!(leftovers.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn ctrl_c_during_a_download_leaves_no_partial_file() {
    // udp_download paced to 64 KiB/s: a 2 MiB download takes half a minute.
    let s = Server::start_with(|c| c.udp_download.rate = ferry_config::Size(64 << 10)).await;
    std::fs::write(s.root.join("big.bin"), vec![7u8; 2 << 20]).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let child = ferry(&s.addrs, cwd.path())
        .args(["--handout", "get", "--via", "udp", "big.bin"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the partial file exists, then press Ctrl-C.
    let part = || {
        std::fs::read_dir(cwd.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("ferry-part"))
    };
    ferry_tests::eventually("the download started", part).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "no partial, no file"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_udp_refusal_is_a_refusal_and_retries_are_announced() {
    let s = Server::start_with(|c| c.on_conflict = ferry_config::OnConflict::Reject).await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("taken.txt"), b"mine").unwrap();
    std::fs::write(s.root.join("taken.txt"), b"theirs").unwrap();
    let out = run(ferry(&s.addrs, cwd.path()).args(["send", "--via", "udp", "taken.txt"])).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("taken.txt already exists"),
        "{}",
        text(&out.stderr)
    );
    // A server that never answers OK: each new attempt is said, then exit 6.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    tokio::spawn(async move {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = silent.recv_from(&mut buf).await {
            if buf[..n].starts_with(b"{") {
                let _ = silent.send_to(b"1452", from).await;
            }
        }
    });
    let out = run(ferry(&s.addrs, cwd.path())
        .args([
            "send",
            "--via",
            "udp",
            "taken.txt",
            "--udp-timeout",
            "200ms",
            "--attempts",
            "2",
            "--rate",
            "1M",
        ])
        .env("FERRY_UDP_UPLOAD_PORT", &port))
    .await;
    assert_eq!(out.status.code(), Some(6));
    let err = text(&out.stderr);
    assert!(err.contains("starting again (attempt 2 of 2)"), "{err}");
    // The data went out and no OK came: the next attempt is paced slower,
    // and says so.
    assert!(
        err.contains("no OK within the reply timeout; sending slower this time, at"),
        "{err}"
    );
    // An absurd duration is a command-line error, not a panic; so is a
    // number without a unit (the configuration's grammar, shared).
    for (arg, says) in [
        ("1e300s", "is not a duration"),
        ("99999999999999999999s", "is not a duration"),
        ("10", "has no unit"),
    ] {
        let out = run(ferry(&s.addrs, cwd.path()).args(["--timeout", arg, "ping"])).await;
        assert_eq!(out.status.code(), Some(2), "{arg}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    s.stop().await;
}

#[tokio::test]
async fn ls_lists_what_was_stored_newest_first() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("a.txt"), b"first").unwrap();
    std::fs::write(cwd.path().join("b.txt"), b"second!").unwrap();
    for (file, via) in [("a.txt", "signal"), ("b.txt", "tcp")] {
        let out = run(ferry(&s.addrs, cwd.path()).args(["send", "--via", via, file])).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = run(ferry(&s.addrs, cwd.path()).arg("ls")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert!(
        lines[0].contains("7 B") && lines[0].contains("b.txt  via tcp_upload from 127.0.0.1:"),
        "{listing}"
    );
    let crc = format!("{:08X}", ferry_proto::crc::checksum(b"first"));
    assert!(
        lines[1].contains(&crc) && lines[1].contains("a.txt  via signal"),
        "{listing}"
    );
    assert_eq!(lines[2], "2 file(s)");
    let out = run(ferry(&s.addrs, cwd.path()).args(["ls", "--json"])).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][1]["stored"], "a.txt");
    assert_eq!(v["files"][1]["size"], 5);

    let addrs = s.stop().await;
    let out = run(ferry(&addrs, cwd.path()).arg("ls")).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("ferryd's HTTP listener"),
        "{}",
        text(&out.stderr)
    );
}

/// A signal server that reads a request and answers `reply`, then one byte
/// of `drip` every 2 s; its port.
async fn malicious_signal_server(reply: Vec<u8>, drip: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut req = [0u8; 256];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(&reply).await;
                if drip {
                    loop {
                        // Real: the client under test is a process timing
                        // this server on the real clock.
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        if s.write_all(b"x").await.is_err() {
                            return;
                        }
                    }
                }
                let _ = s.read(&mut req).await;
            });
        }
    });
    port
}

/// Issue 23: `--timeout` bounds a whole exchange (a server dripping a byte
/// every 2 s under `--timeout 3s` is cut, where each read alone would have
/// waited forever), and a server's text never reaches the terminal raw.
#[tokio::test]
async fn a_malicious_server_cannot_hold_or_retitle_the_terminal() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    // SAF header of a 1000-byte file, then a byte every 2 s.
    let mut header = b"SAF".to_vec();
    header.extend_from_slice(&5u16.to_be_bytes());
    header.extend_from_slice(b"a.bin");
    header.extend_from_slice(&1000u64.to_be_bytes());
    let port = malicious_signal_server(header, true).await;
    let started = std::time::Instant::now();
    let out = run(ferry(&s.addrs, cwd.path())
        .args(["--timeout", "3s", "get", "a.bin"])
        .env("FERRY_SIGNAL_PORT", port.to_string()))
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "cut at the timeout, not after the drip: {:?}",
        started.elapsed()
    );
    assert!(!cwd.path().join("a.bin").exists(), "no partial file");
    // An ERR whose text would retitle and clear the terminal.
    let evil = "\u{1b}]0;owned\u{7}\u{1b}[2Jgone";
    let mut err = b"ERR".to_vec();
    err.extend_from_slice(&(evil.len() as u16).to_be_bytes());
    err.extend_from_slice(evil.as_bytes());
    let port = malicious_signal_server(err, false).await;
    let out = run(ferry(&s.addrs, cwd.path())
        .args(["get", "b.bin"])
        .env("FERRY_SIGNAL_PORT", port.to_string()))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let shown = text(&out.stderr);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    assert!(
        shown.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2Jgone"),
        "{shown:?}"
    );
    s.stop().await;
}

/// Issue 27: `ferry` pointed at another service's port says which service
/// answered, and where the one it wanted is.
#[tokio::test]
async fn a_wrong_port_is_named_by_what_answered() {
    let s = Server::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("a.txt"), b"hello").unwrap();
    let a = &s.addrs;
    let port = |id: ServiceId| a[id].unwrap().port().to_string();
    // tcp_upload's header to signal: signal's ERR frame comes back.
    let out = run(ferry(a, cwd.path()).args([
        "--tcp-upload-port",
        &port(ServiceId::Signal),
        "send",
        "--via",
        "tcp",
        "a.txt",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("answered like signal (an ERR frame); tcp_upload is on port 9003"),
        "{}",
        text(&out.stderr)
    );
    // udp_upload's file_info to udp_sum: a sum's range error, not a refusal.
    let out = run(ferry(a, cwd.path()).args([
        "--udp-upload-port",
        &port(ServiceId::UdpSum),
        "send",
        "--via",
        "udp",
        "a.txt",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("answered like udp_sum"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("udp_upload is on port 9000"),
        "{}",
        text(&out.stderr)
    );
    // `--tcp-port`, as students write it, is tcp_upload's port flag.
    let out = run(Command::new(FERRY).current_dir(cwd.path()).args([
        "--host",
        "127.0.0.1",
        "--tcp-port",
        &port(ServiceId::TcpUpload),
        "send",
        "--via",
        "tcp",
        "a.txt",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    s.stop().await;
}

/// Issue 27: the README's session ("Using the client") is run as written,
/// against a real ferryd, and each command's output must be what the
/// README shows, but for what changes from run to run (CRC-32s of the
/// photo, times, ports, column widths).
#[tokio::test]
async fn the_readmes_client_session_runs_as_written() {
    let readme = include_str!("../../README.md");
    let session = readme
        .split("## Using the client")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("the README has a session under 'Using the client'");
    let mut server = Some(Server::start().await);
    let addrs = server.as_ref().unwrap().addrs;
    let cwd = tempfile::tempdir().unwrap();
    // A 1.4 MiB photo and a project of two files, 23 bytes in all.
    std::fs::write(cwd.path().join("photo.jpg"), vec![0x5A; 1_500_000]).unwrap();
    std::fs::create_dir(cwd.path().join("project")).unwrap();
    std::fs::write(cwd.path().join("project/main.py"), b"print('hello')\n").unwrap();
    std::fs::write(cwd.path().join("project/notes"), b"12345678").unwrap();
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    for line in session.lines().filter(|l| !l.trim().is_empty()) {
        match line.strip_prefix("$ ") {
            Some(cmd) => commands.push((cmd.to_owned(), Vec::new())),
            None => commands
                .last_mut()
                .expect("output after a command")
                .1
                .push(line.to_owned()),
        }
    }
    assert!(commands.len() >= 10, "{commands:?}");
    let mut drift = Vec::new();
    for (cmd, want) in commands {
        let (args, comment) = shell_words(&cmd);
        assert_eq!(args[0], "ferry", "{cmd}");
        if comment.contains("after the daemon stopped") {
            if let Some(s) = server.take() {
                s.stop().await;
            }
        }
        let out = run(ferry(&addrs, cwd.path())
            .env("FERRY_HOST", "localhost")
            .args(&args[1..]))
        .await;
        let got: Vec<String> = text(&out.stdout)
            .lines()
            .chain(text(&out.stderr).lines())
            .map(normal)
            .collect();
        let want: Vec<String> = want.iter().map(|l| normal(l)).collect();
        if got != want {
            drift.push(format!(
                "$ {cmd}\nREADME: {want:#?}\nferry:  {got:#?}\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "the README's session drifted:\n{}",
        drift.join("\n")
    );
    if let Some(s) = server {
        s.stop().await;
    }
    // The handout example, with ferryd (which speaks the handout framing
    // too) in place of the student's server on 8080.
    let mut lines = readme.lines().map(str::trim);
    let cmd = lines
        .find_map(|l| l.strip_prefix("$ ferry --handout"))
        .expect("the README's handout example");
    let want = normal(lines.next().expect("its output"));
    let s = Server::start().await;
    let signal = s.addrs[ServiceId::Signal].unwrap().port().to_string();
    std::fs::write(cwd.path().join("report.pdf"), vec![7u8; 317_645]).unwrap();
    let (args, _) = shell_words(&format!("--handout{cmd}").replace("8080", &signal));
    let out = run(ferry(&s.addrs, cwd.path()).args(&args)).await;
    let got: Vec<String> = text(&out.stdout).lines().map(normal).collect();
    assert_eq!(got, [want], "{}", text(&out.stderr));
    s.stop().await;
}

/// A command line as a shell splits it (single and double quotes), and
/// its `# comment`.
fn shell_words(line: &str) -> (Vec<String>, String) {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => return (words, chars.collect()),
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    (words, String::new())
}

/// A line of output with what changes between runs made fixed: 8-digit
/// hex CRCs, RFC 3339 times, port numbers, milliseconds, runs of spaces.
fn normal(line: &str) -> String {
    // `--json` lines: the CRC and the time taken.
    if let Ok(serde_json::Value::Object(mut v)) = serde_json::from_str(line) {
        for key in ["crc", "seconds", "rtt_ms"] {
            if v.contains_key(key) {
                v.insert(key.into(), "VARIES".into());
            }
        }
        return serde_json::Value::Object(v).to_string();
    }
    line.split_whitespace()
        .map(|w| {
            let hex = w.len() == 8
                && w.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase());
            let crc_punct = w.trim_end_matches([',', ')']);
            if hex
                || (crc_punct.len() == 8
                    && crc_punct
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()))
            {
                return "CRC".to_owned() + &w[crc_punct.len()..];
            }
            if w.len() == 20 && w.ends_with('Z') && w.as_bytes().get(10) == Some(&b'T') {
                return "TIME".to_owned();
            }
            let bare = w.trim_end_matches([':', ',', ')']);
            if let Some((host, port)) = bare.rsplit_once(':') {
                if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                    return format!("{host}:PORT{}", &w[bare.len()..]);
                }
            }
            if w.parse::<f64>().is_ok() && w.contains('.') {
                return "N".to_owned();
            }
            w.to_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}
