//! Process-level tests: the built `ferryd` binary, real signals, exit codes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{ping, FERRYD};

struct Running {
    inner: common::Running,
    tcp_upload: SocketAddr,
    signal: SocketAddr,
}

fn start(dir: &Path, extra_config: &str, pre: Option<fn() -> std::io::Result<()>>) -> Running {
    let inner = common::start(dir, &dir.join("data"), extra_config, pre);
    Running {
        tcp_upload: inner.addr("tcp_upload"),
        signal: inner.addr("signal"),
        inner,
    }
}

fn sigterm(r: &Running) {
    r.inner.signal(libc::SIGTERM);
}

/// The handout client of seed 002; returns the server's reply.
fn tcp_upload(addr: SocketAddr, name: &str, data: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&ferry_proto::tcp_upload::encode_header(
        data.len() as u64,
        name,
    ))
    .unwrap();
    let mut reply = [0u8; 1024];
    let n = s.read(&mut reply).unwrap();
    if &reply[..n] == b"go ahead" {
        let _ = s.write_all(data);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        return format!("go ahead{}", String::from_utf8_lossy(&rest));
    }
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

#[test]
fn serves_from_a_storage_dir_and_exits_0_on_sigterm_mid_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "shutdown_grace = \"5s\"", None);
    assert_eq!(ping(d.signal), b"PON");
    assert_eq!(
        tcp_upload(d.tcp_upload, "files/a.txt", b"hello"),
        "go aheadSTORED: a.txt"
    );
    d.inner.wait_event("transfer finished");
    assert_eq!(
        std::fs::read(dir.path().join("data/a.txt")).unwrap(),
        b"hello"
    );

    // An upload in flight when SIGTERM comes finishes within the grace period.
    let data = vec![9u8; 200_000];
    let mut s = TcpStream::connect(d.tcp_upload).unwrap();
    s.write_all(&ferry_proto::tcp_upload::encode_header(
        data.len() as u64,
        "late.bin",
    ))
    .unwrap();
    let mut go = [0u8; 8];
    s.read_exact(&mut go).unwrap();
    s.write_all(&data[..100_000]).unwrap();
    sigterm(&d);
    d.inner
        .wait_event("shutting down: no new transfers, waiting for those in flight");
    s.write_all(&data[100_000..]).unwrap();
    drop(s);
    let status = d.inner.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read(dir.path().join("data/late.bin")).unwrap(),
        data
    );
    let work: Vec<_> = std::fs::read_dir(dir.path().join("data/.ferry-work"))
        .unwrap()
        .collect();
    assert!(work.is_empty());
}

#[test]
fn a_write_error_fails_one_transfer_and_the_daemon_serves_on() {
    // RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk
    // fails them with ENOSPC: the upload fails, nothing partial stays.
    fn limit_file_size() -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: 64 * 1024,
            rlim_max: 64 * 1024,
        };
        // SAFETY: setrlimit with a valid struct, in the child before exec.
        if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "", Some(limit_file_size));
    // 1 MiB is written in line; 8 MiB on a writer thread of its own.
    for size in [1usize << 20, 8 << 20] {
        let reply = tcp_upload(d.tcp_upload, "big.bin", &vec![1u8; size]);
        assert!(reply.starts_with("go ahead"), "{reply}");
        assert!(!reply.contains("STORED"), "{reply}");
        let failed = d.inner.wait_event("transfer failed");
        assert!(
            failed["reason"]
                .as_str()
                .unwrap()
                .contains("File too large"),
            "{failed}"
        );
        assert!(!dir.path().join("data/big.bin").exists());
    }
    // The failed upload's temporary file goes, through the reaper.
    let work = dir.path().join("data/.ferry-work");
    common::eventually(|| std::fs::read_dir(&work).unwrap().count() == 0);
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
    // The next transfer works.
    assert_eq!(
        tcp_upload(d.tcp_upload, "small.bin", b"small"),
        "go aheadSTORED: small.bin"
    );
    d.inner.wait_event("transfer finished");
    assert_eq!(
        std::fs::read(dir.path().join("data/small.bin")).unwrap(),
        b"small"
    );
    assert_eq!(ping(d.signal), b"PON");
    sigterm(&d);
    assert_eq!(d.inner.wait_exit().code(), Some(0));
}

#[test]
fn check_config_exit_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let root = dir.path().join("data");
    std::fs::write(
        &good,
        format!(
            "storage = {:?}\n[udp_sum]\nnumber = 7\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(FERRYD)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("configuration ok; storage root {} usable\n", root.display())
    );
    assert!(!root.exists(), "check-config creates nothing");

    // What would stop the daemon at start is caught here, and named.
    std::fs::write(dir.path().join("a-file"), b"x").unwrap();
    for (storage, says) in [
        (
            "/proc/ferry".to_owned(),
            "is under /proc, a kernel filesystem",
        ),
        (
            dir.path().join("a-file").display().to_string(),
            "exists and is not a directory",
        ),
    ] {
        let out = Command::new(FERRYD)
            .args(["check-config", "--storage", &storage])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{storage}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("storage ({storage}): {says}")),
            "{err}"
        );
    }
    let out = Command::new(FERRYD)
        .args(["check-config", "--log-level", "warning"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean \"warn\"?"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "storage = \"/srv/ferry\"\n\n[udp_sum]\nnumbr = 7\n").unwrap();
    let out = Command::new(FERRYD)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: line 4, column 1: unknown field `numbr`"),
        "{err}"
    );

    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, "[udp_sum]\nnumber = 500\n").unwrap();
    let out = Command::new(FERRYD)
        .arg("check-config")
        .arg(&invalid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("udp_sum.number: 500 is out of range"));

    let out = Command::new(FERRYD)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "the daemon refuses to start on a bad file"
    );

    let out = Command::new(FERRYD)
        .args(["print-config", "--storage", "/srv/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("storage = \"/srv/x\"") && text.contains("[udp_upload]"),
        "{text}"
    );
}

/// `backend = "s3"`: check-config names a missing table, key, file or
/// variable (never a value), and ferryd refuses to start, exit 69
/// (EX_UNAVAILABLE), when the bucket cannot be reached.
#[test]
fn an_s3_backend_is_checked_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("s3.env");
    let config = |catalog: bool| {
        let mut text = format!(
            "[storage]\nbackend = \"s3\"\npath = {:?}\n[storage.s3]\nendpoint = \"http://127.0.0.1:1\"\nregion = \"garage\"\nbucket = \"ferry\"\ncredentials_file = {:?}\n",
            dir.path().join("state").display().to_string(),
            creds.display().to_string()
        );
        if catalog {
            text.push_str("[storage.catalog]\netcd = [\"http://127.0.0.1:1\"]\n");
        }
        let path = dir.path().join("s3.toml");
        std::fs::write(&path, format!("{text}{}", common::TEST_BINDS)).unwrap();
        path
    };
    let check = |path: &std::path::Path| {
        let out = Command::new(FERRYD)
            .arg("check-config")
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&config(false));
    assert_eq!(code, Some(78));
    assert!(
        err.contains("storage.catalog: backend = \"s3\" needs a [storage.catalog] table"),
        "{err}"
    );
    let (code, err) = check(&config(true));
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!(
            "storage.s3: storage.s3.credentials_file {}: No such file",
            creds.display()
        )),
        "{err}"
    );
    std::fs::write(&creds, "AWS_ACCESS_KEY_ID=GKexample\n").unwrap();
    let (code, err) = check(&config(true));
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!(
            "AWS_SECRET_ACCESS_KEY is not set in {}",
            creds.display()
        )),
        "{err}"
    );
    std::fs::write(
        &creds,
        "AWS_ACCESS_KEY_ID=GKexample\nAWS_SECRET_ACCESS_KEY=do-not-print-me\n",
    )
    .unwrap();
    let out = Command::new(FERRYD)
        .arg("check-config")
        .arg(config(true))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(FERRYD)
        .arg("--config")
        .arg(config(true))
        .arg("print-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[storage.s3]") && !text.contains("do-not-print-me"),
        "{text}"
    );
    // Nothing answers on port 1: refused, with the bucket named and no secret.
    let out = Command::new(FERRYD)
        .arg("--config")
        .arg(config(true))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("bucket \"ferry\" at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("do-not-print-me"), "{err}");
}

#[test]
fn environment_fallbacks_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(FERRYD)
        .arg("print-config")
        .env("FERRYD_STORAGE", dir.path())
        .env("FERRYD_LOG_LEVEL", "debug")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("storage = \"{}\"", dir.path().display())),
        "{text}"
    );
    assert!(text.contains("level = \"debug\""), "{text}");
}

#[test]
fn raises_its_open_file_limit_at_start() {
    fn low_soft_limit() -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: 256,
            rlim_max: 4096,
        };
        // SAFETY: setrlimit with a valid struct, in the child before exec.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "", Some(low_soft_limit));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.inner.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(soft[3], "4096", "{line}");
    sigterm(&d);
    assert_eq!(d.inner.wait_exit().code(), Some(0));
}

#[test]
fn signals_right_after_start_are_handled_not_fatal() {
    // Regression: the handlers used to be installed only when serving began,
    // so a SIGHUP or SIGTERM just after READY killed the process outright.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut d = start(dir.path(), "", None);
        d.inner.signal(libc::SIGHUP);
        d.inner.signal(libc::SIGTERM);
        assert_eq!(
            d.inner.wait_exit().code(),
            Some(0),
            "terminated by a signal instead of exiting 0"
        );
    }
}

#[test]
fn an_oversized_datagram_is_logged_as_such_not_as_a_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "", None);
    let addr = d.inner.addr("udp_upload");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let info = ferry_proto::udp_upload::encode_file_info(&ferry_proto::udp_upload::FileInfo {
        checksum: 0,
        name: "big.bin".into(),
        size: 10_000,
    });
    sock.send_to(&info, addr).unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"1452");
    sock.send_to(&[0u8; 2000], addr).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    let why = "a datagram of 2000 bytes is larger than the buffer size 1452";
    assert_eq!(String::from_utf8_lossy(&buf[..n]), format!("ERROR: {why}"));
    let event = d.inner.wait_event("transfer failed");
    assert_eq!(event["service"], "udp_upload");
    assert_eq!(event["reason"], why, "{event}");
    sigterm(&d);
    assert!(d.inner.wait_exit().success());
}

#[test]
fn a_second_ferryd_on_a_running_root_exits_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start(dir.path(), "", None);
    // An upload in flight in the first daemon: header, half the data.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut up = TcpStream::connect(a.tcp_upload).unwrap();
    up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    up.write_all(&ferry_proto::tcp_upload::encode_header(
        data.len() as u64,
        "inflight.bin",
    ))
    .unwrap();
    let mut reply = [0u8; 8];
    up.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"go ahead");
    up.write_all(&data[..100_000]).unwrap();
    // An admin runs it again by hand on the same root, to see the logs.
    let config = dir.path().join("second.toml");
    std::fs::write(&config, common::TEST_BINDS).unwrap();
    let out = Command::new(FERRYD)
        .arg("--config")
        .arg(&config)
        .arg("--storage")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "EX_TEMPFAIL");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "is in use by another ferryd (pid {})",
            a.inner.pid()
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("is in use by another ferryd").count(),
        1,
        "said once: {err}"
    );
    // The first daemon's upload in flight was not touched: it completes.
    up.write_all(&data[100_000..]).unwrap();
    up.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = up.read_to_end(&mut rest);
    assert_eq!(
        std::fs::read(dir.path().join("data/inflight.bin")).unwrap(),
        data
    );
    assert_eq!(ping(a.signal), b"PON");
    sigterm(&a);
    assert!(a.inner.wait_exit().success());
}

#[test]
fn a_restart_over_a_huge_crash_leftover_serves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // What kill -9 in the middle of a hostile SAR leaves: 100,000 entries.
    let tree = root.join(".ferry-work/tree-999-1");
    for d in 0..100 {
        let sub = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f}")), b"").unwrap();
        }
    }
    let started = std::time::Instant::now();
    let mut d = start(dir.path(), "", None);
    assert_eq!(ping(d.signal), b"PON");
    let to_pon = started.elapsed();
    eprintln!("PIN answered {to_pon:?} after the start, over 100,000 leftover entries");
    assert!(to_pon < Duration::from_secs(2), "{to_pon:?}");
    // The leftovers are removed in the background, whole.
    let gone = || {
        std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".ferry-trash"))
    };
    assert!(
        common::eventually_within(Duration::from_secs(60), gone),
        "the reaper removed the leftovers"
    );
    assert_eq!(common::work_entries(&root), 0);
    assert_eq!(common::visible_files(&root), Vec::<String>::new());
    sigterm(&d);
    assert!(d.inner.wait_exit().success());
}

#[test]
fn client_text_never_forges_a_log_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferryd.toml");
    std::fs::write(
        &config,
        format!("[log]\nlevel = \"debug\"\n{}", common::TEST_BINDS),
    )
    .unwrap();
    let mut child = Command::new(FERRYD)
        .arg("--config")
        .arg(&config)
        .arg("--storage")
        .arg(dir.path().join("data"))
        .args(["--log-format", "text"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let bound = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains(" bound "))
        .expect("a bound line");
    let addr = |service: &str| -> SocketAddr {
        let key = format!("{service}=");
        let at = bound.find(&key).unwrap() + key.len();
        bound[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let forged = "x\nINFO ferryd: transfer finished stored=\"evil\"\x1b[2J";
    // Through every service that logs what a client sent.
    let _ = tcp_upload(addr("tcp_upload"), forged, b"data");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    udp.send_to(format!("{forged}:7").as_bytes(), addr("udp_sum"))
        .unwrap();
    let _ = udp.recv(&mut buf);
    udp.send_to(forged.as_bytes(), addr("udp_download"))
        .unwrap();
    let _ = udp.recv(&mut buf);
    let info = format!(
        r#"{{"checksum": "00000000", "name": "{}", "size": 1}}"#,
        forged
            .replace('\n', "\\n")
            .replace('\x1b', "\\u001b")
            .replace('"', "\\\"")
    );
    udp.send_to(info.as_bytes(), addr("udp_upload")).unwrap();
    let _ = udp.recv(&mut buf);
    let mut s = TcpStream::connect(addr("signal")).unwrap();
    s.write_all(format!("XY{forged}").as_bytes()).unwrap();
    let _ = s.read(&mut buf);
    let mut m = TcpStream::connect(addr("magic_download")).unwrap();
    let mut req = vec![0x49, 0x7E, 0x01, 0, forged.len() as u8];
    req.extend_from_slice(forged.as_bytes());
    m.write_all(&req).unwrap();
    let _ = m.read(&mut buf);
    assert_eq!(ping(addr("signal")), b"PON");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.iter().any(|l| l.contains("evil")),
        "the hostile text was logged: {rest:#?}"
    );
    for line in &rest {
        assert!(!line.contains('\x1b'), "raw escape: {line:?}");
        assert!(
            !line.starts_with("INFO ferryd: transfer finished"),
            "forged: {line:?}"
        );
        assert!(
            line.starts_with("20"),
            "every line is one event with its timestamp: {line:?}"
        );
    }
}

#[test]
fn a_udp_download_to_a_source_that_did_not_ask_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "", None);
    std::fs::write(dir.path().join("data/big.bin"), vec![5u8; 64 << 20]).unwrap();
    let addr = d.inner.addr("udp_download");
    // A forged request: it names a victim address and port where nothing
    // listens (here: a socket that sends the request and is gone).
    {
        let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        victim.send_to(b"big.bin", addr).unwrap();
    }
    let event = d.inner.wait_event("transfer failed");
    assert_eq!(event["service"], "udp_download", "{event}");
    let error = event["reason"].as_str().unwrap_or_default();
    assert!(error.contains("ICMP port unreachable"), "{event}");
    let bytes = event["bytes"].as_u64().unwrap();
    assert!(
        bytes < 1 << 20,
        "{bytes} bytes went to a port that never asked"
    );
    eprintln!("a forged 7-byte request made ferryd send {bytes} bytes of a 64 MiB file");
    assert_eq!(ping(d.signal), b"PON");
    sigterm(&d);
}

/// CI's run of this file failed once: the handout's own 004 client's `SAR`
/// broke (`BrokenPipeError`) when fsync took longer than its 0.1 s pauses,
/// because ferryd stored each file before reading on, and the next file's
/// name and data then arrived as one piece. Reproduced with every fsync made
/// 150 ms slow (strace's fault injection); every file must still be stored
/// under its own name with its own bytes.
#[test]
fn a_slow_disk_never_runs_a_handout_name_into_its_data() {
    if Command::new("strace").arg("-V").output().is_err() {
        // .ci/run installs strace and sets FERRY_REQUIRE_STRACE: never skipped there.
        assert!(
            std::env::var_os("FERRY_REQUIRE_STRACE").is_none(),
            "strace is required here (FERRY_REQUIRE_STRACE is set)"
        );
        eprintln!("SKIPPED: strace is not installed (apt install strace)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slow_fsync = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "inject=fsync,fdatasync:delay_enter=150000",
    ];
    let mut d = common::start_under(&slow_fsync, dir.path(), &dir.path().join("data"), "", None);
    let repo = dir.path().join("lab");
    std::fs::create_dir(&repo).unwrap();
    let mut ends_in_don = vec![7u8; 1024];
    ends_in_don.extend_from_slice(b"DON");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"first".to_vec()),
        ("b.bin", (0..5000u32).map(|i| (i % 251) as u8).collect()),
        ("c.txt", Vec::new()),
        ("d.bin", ends_in_don),
        ("e.txt", b"last".to_vec()),
    ];
    for (name, bytes) in &files {
        std::fs::write(repo.join(name), bytes).unwrap();
    }
    let client = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/peers/signal_client.py"
    );
    let out = Command::new("python3")
        .arg(client)
        .arg("127.0.0.1")
        .arg(d.addr("signal").port().to_string())
        .arg("send-repo")
        .arg(&repo)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the handout client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.path().join("data");
    let want: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    common::eventually(|| common::visible_files(&root) == want);
    assert_eq!(common::visible_files(&root), want);
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(root.join(name)).unwrap(), bytes, "{name}");
    }
    // ferryd, not strace: strace would detach and leave it running.
    for pid in common::children(d.pid()) {
        // SAFETY: signalling a process our child started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    assert!(
        d.wait_exit().success(),
        "ferryd under strace stops on SIGTERM"
    );
}

/// `ferryd ping` (the health-check unit's command) finds the signal port in
/// the configuration, whatever it is.
#[test]
fn ferryd_ping_follows_the_configured_signal_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.path().join("ping.toml");
    std::fs::write(&config, format!("[signal]\nbind = \"0.0.0.0:{port}\"\n")).unwrap();
    let ping = || {
        Command::new(FERRYD)
            .arg("--config")
            .arg(&config)
            .arg("ping")
            .output()
            .unwrap()
    };
    let out = ping();
    assert_eq!(out.status.code(), Some(1), "nothing listens yet");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{out:?}"
    );
    let text = common::TEST_BINDS.replace(
        "[signal]\nbind = \"127.0.0.1:0\"",
        &format!("[signal]\nbind = \"127.0.0.1:{port}\""),
    );
    let d = common::start_config(&[], dir.path(), &dir.path().join("data"), &text, None);
    let out = ping();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("PON from 127.0.0.1:{port} in "))
    );
    d.signal(libc::SIGTERM);
}

/// The ledger survives kill -9: every upload acknowledged before the kill is
/// in it after a restart, on disk and through the HTTP API.
#[test]
fn the_ledger_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "", None);
    let names = ["a.txt", "b.txt", "c.txt"];
    for name in names {
        assert_eq!(
            tcp_upload(d.tcp_upload, name, name.as_bytes()),
            format!("go aheadSTORED: {name}")
        );
    }
    d.inner.signal(libc::SIGKILL);
    let _ = d.inner.wait_exit();
    let ledger =
        std::fs::read_to_string(dir.path().join("data").join(ferryd::LEDGER_FILE)).unwrap();
    assert_eq!(ledger.lines().count(), 3, "{ledger}");
    let d = start(dir.path(), "", None);
    let mut s = TcpStream::connect(d.inner.addr("http")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/ledger HTTP/1.1\r\nhost: ferry\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let entries: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
    let stored: Vec<&str> = entries
        .iter()
        .map(|e| e["stored"].as_str().unwrap())
        .collect();
    assert_eq!(stored, ["c.txt", "b.txt", "a.txt"], "newest first");
    assert_eq!(entries[0]["service"], "tcp_upload");
    assert_eq!(entries[0]["size"], 5);
    sigterm(&d);
}

/// A signal transfer that ends badly is one `transfer failed` event with the
/// name, the bytes and the reason, whatever ended it: a client cut mid-file,
/// or a refusal.
#[test]
fn every_failed_signal_transfer_is_one_transfer_failed_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "[limits]\nmax_file_size = \"1 MiB\"", None);
    // Cut: a header announcing 100 bytes, 10 sent, then the connection goes.
    let mut frame = b"SAF".to_vec();
    frame.extend_from_slice(&8u16.to_be_bytes());
    frame.extend_from_slice(b"half.bin");
    frame.extend_from_slice(&100u64.to_be_bytes());
    frame.extend_from_slice(&[7u8; 10]);
    {
        let mut s = TcpStream::connect(d.signal).unwrap();
        s.write_all(&frame).unwrap();
    }
    let cut = d.inner.wait_event("transfer failed");
    assert_eq!(cut["service"], "signal", "{cut}");
    assert_eq!(cut["requested"], "half.bin", "{cut}");
    assert_eq!(cut["bytes"], 10, "{cut}");
    assert!(cut["reason"].as_str().unwrap().contains("closed"), "{cut}");
    assert!(cut.get("stored").is_none(), "{cut}");
    // Too large: refused, and logged as such.
    let mut frame = b"SAF".to_vec();
    frame.extend_from_slice(&7u16.to_be_bytes());
    frame.extend_from_slice(b"big.bin");
    frame.extend_from_slice(&(2u64 << 20).to_be_bytes());
    let mut s = TcpStream::connect(d.signal).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&frame).unwrap();
    let mut reply = [0u8; 3];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ERR");
    let big = d.inner.wait_event("transfer failed");
    assert!(big["reason"].as_str().unwrap().contains("limit"), "{big}");
    sigterm(&d);
    assert!(d.inner.wait_exit().success());
}
