//! ferry's client library against the real daemon: every operation over every
//! protocol, sizes 0 and several MiB, trees, refusals, unreachable servers, timeouts.

use ferry_config::ServiceId;
use std::path::Path;
use std::time::Duration;

use ferry::{Client, Error, GetVia, NoProgress, SendVia};
use ferry_tests::{assert_same_bytes, data, TestDaemon};

fn client_for(d: &TestDaemon) -> Client {
    let a = d.addrs;
    let mut c = Client::new("127.0.0.1");
    for id in ServiceId::ALL {
        c.ports[id] = a[id].unwrap().port();
    }
    c
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn send_and_get_over_every_protocol_at_0_and_several_mib() {
    let d = TestDaemon::start().await;
    let c = client_for(&d);
    let local = tempfile::tempdir().unwrap();
    for (i, size) in [0usize, 3 * 1024 * 1024 + 5].into_iter().enumerate() {
        let bytes = data::bytes(size, 900 + i as u64);
        for (via, tag) in [
            (SendVia::Signal, "sig"),
            (SendVia::Tcp, "tcp"),
            (SendVia::Udp, "udp"),
        ] {
            let name = format!("{tag}{size}.bin");
            let path = write(local.path(), &name, &bytes);
            let sent = c
                .send(via, &path, None, &NoProgress)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(sent.bytes, size as u64);
            assert_eq!(sent.crc, ferry_proto::crc::checksum(&bytes));
            if via == SendVia::Signal {
                assert_eq!(sent.stored_as.as_deref(), Some(name.as_str()));
            }
            assert_same_bytes(&d.read(&name), &bytes, &name);
            for (get, gtag) in [
                (GetVia::Signal, "s"),
                (GetVia::Magic, "m"),
                (GetVia::Udp, "u"),
            ] {
                let out = local.path().join(format!("{gtag}-{name}"));
                let got = c
                    .get(get, &name, &out, false, &NoProgress)
                    .await
                    .unwrap_or_else(|e| panic!("{name} {gtag}: {e}"));
                assert_eq!(got.path, out);
                assert_eq!(got.bytes, size as u64);
                assert_same_bytes(
                    &std::fs::read(&out).unwrap(),
                    &bytes,
                    &format!("{gtag}-{name}"),
                );
            }
        }
    }
    d.stop().await;
}

#[tokio::test]
async fn send_as_another_name_and_get_into_a_directory() {
    let d = TestDaemon::start().await;
    let c = client_for(&d);
    let local = tempfile::tempdir().unwrap();
    let path = write(local.path(), "a.txt", b"alpha");
    let sent = c
        .send(SendVia::Signal, &path, Some("renamed.txt"), &NoProgress)
        .await
        .unwrap();
    assert_eq!(sent.stored_as.as_deref(), Some("renamed.txt"));
    // The same name again: stored beside it.
    let path2 = write(local.path(), "b.txt", b"beta");
    let sent = c
        .send(SendVia::Signal, &path2, Some("renamed.txt"), &NoProgress)
        .await
        .unwrap();
    assert_eq!(sent.stored_as.as_deref(), Some("renamed (1).txt"));
    let outdir = local.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let got = c
        .get(GetVia::Signal, "renamed.txt", &outdir, false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(got.path, outdir.join("renamed.txt"));
    assert_eq!(std::fs::read(&got.path).unwrap(), b"alpha");
    // An existing local file is kept without force, replaced with it.
    let err = c
        .get(
            GetVia::Signal,
            "renamed (1).txt",
            &got.path,
            false,
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Local(m) if m.contains("exists; use --force")),
        "{err}"
    );
    assert_eq!(err.exit_code(), 7);
    assert_eq!(std::fs::read(&got.path).unwrap(), b"alpha");
    c.get(
        GetVia::Magic,
        "renamed (1).txt",
        &got.path,
        true,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b"beta");
    // No temporary files left next to the downloads.
    let leftovers: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["renamed.txt"]);
    d.stop().await;
}

#[tokio::test]
async fn trees_round_trip_with_nested_folders() {
    let d = TestDaemon::start().await;
    let c = client_for(&d);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("project");
    let files = [
        ("README.md", data::bytes(100, 1)),
        ("src/lib.rs", data::bytes(5000, 2)),
        ("src/net/deep/x.bin", data::bytes(300_000, 3)),
        ("docs/empty.txt", Vec::new()),
    ];
    for (rel, bytes) in &files {
        write(&src, rel, bytes);
    }
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    let sent = c.send_dir(&src, None, &NoProgress).await.unwrap();
    assert_eq!(sent.stored_as.as_deref(), Some("project"));
    for (rel, bytes) in &files {
        assert_same_bytes(&d.read(&format!("project/{rel}")), bytes, rel);
    }
    assert!(
        !d.root.join("project/link").exists(),
        "symlinks are skipped"
    );
    let dest = local.path().join("copy");
    let got = c
        .get_dir("project", &dest, false, &NoProgress)
        .await
        .unwrap();
    assert_eq!((got.files, got.path.clone()), (files.len(), dest.clone()));
    for (rel, bytes) in &files {
        assert_same_bytes(&std::fs::read(dest.join(rel)).unwrap(), bytes, rel);
    }
    // Again without --force: refused, the copy untouched; with it: replaced.
    let again = c.get_dir("project", &dest, false, &NoProgress).await;
    assert!(matches!(again, Err(Error::Local(_))), "{again:?}");
    c.get_dir("project", &dest, true, &NoProgress)
        .await
        .unwrap();
    d.stop().await;
}

#[tokio::test]
async fn refusals_carry_the_servers_reason() {
    let d = TestDaemon::start_with(|cfg| cfg.limits.max_file_size = ferry_config::Size(1000)).await;
    let c = client_for(&d);
    let local = tempfile::tempdir().unwrap();
    let out = local.path().join("x");
    for via in [GetVia::Signal, GetVia::Magic, GetVia::Udp] {
        let err = c
            .get(via, "missing.txt", &out, false, &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Refused(m) if m.contains("no such file")),
            "{via:?}: {err}"
        );
        assert_eq!(err.exit_code(), 4);
        assert!(!out.exists(), "no local file for a failed download");
    }
    let err = c
        .get(GetVia::Signal, "../etc/passwd", &out, false, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused(m) if m.contains("refused name")),
        "{err}"
    );
    let big = write(local.path(), "big.bin", &[0u8; 2000]);
    for via in [SendVia::Signal, SendVia::Tcp, SendVia::Udp] {
        let err = c.send(via, &big, None, &NoProgress).await.unwrap_err();
        assert!(
            matches!(&err, Error::Refused(m) if m.contains("the limit is 1000")),
            "{via:?}: {err}"
        );
    }
    let small = write(local.path(), "s.txt", b"s");
    for via in [SendVia::Signal, SendVia::Tcp, SendVia::Udp] {
        let err = c
            .send(via, &small, Some(".."), &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Refused(m) if m.contains("refused name")),
            "{via:?}: {err}"
        );
    }
    let err = c
        .send(
            SendVia::Signal,
            &local.path().join("nope"),
            None,
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 7);
    d.stop().await;
}

#[tokio::test]
async fn sum_and_ping() {
    let d = TestDaemon::start().await;
    let c = client_for(&d);
    assert_eq!(
        c.sum("Client of Ann", 7).await.unwrap(),
        ("Server of ferry".into(), 42)
    );
    let err = c.sum("Client of Ann", 101).await.unwrap_err();
    assert!(
        matches!(&err, Error::Refused(m) if m.contains("out of range")),
        "{err}"
    );
    assert!(c.ping().await.unwrap() < Duration::from_secs(5));
    d.stop().await;
}

#[tokio::test]
async fn unreachable_servers_and_timeouts_are_told_apart() {
    // Ports nobody listens on: bind, read the port, close.
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = Client::new("127.0.0.1");
    c.ports[ServiceId::Signal] = free;
    c.ports[ServiceId::TcpUpload] = free;
    c.ports[ServiceId::MagicDownload] = free;
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert_eq!(err.exit_code(), 3);
    let err = c
        .get(
            GetVia::Magic,
            "x",
            Path::new("/tmp/ferry-never"),
            false,
            &NoProgress,
        )
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);

    // A server that accepts and never answers: ping times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    c.ports[ServiceId::Signal] = silent.local_addr().unwrap().port();
    c.timeout = Duration::from_millis(300);
    let held = tokio::spawn(async move {
        let conn = silent.accept().await;
        std::future::pending::<()>().await;
        drop(conn);
    });
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert_eq!(err.exit_code(), 6);
    held.abort();

    // UDP: nothing listening answers with ICMP port unreachable.
    let udp_free = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    c.ports[ServiceId::UdpSum] = udp_free;
    let err = c.sum("a", 1).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
}

/// RAF sends a stored file with `sendfile` and the CRC-32 recorded at upload;
/// a file an admin rewrote in place afterwards (same size, new mtime) has no
/// valid record, so its CRC-32 is computed from the bytes: the client's
/// check passes either way, and each gets the bytes on disk.
#[tokio::test]
async fn raf_checksums_stay_right_when_an_admin_edits_a_file_in_place() {
    let d = TestDaemon::start().await;
    let c = client_for(&d);
    let local = tempfile::tempdir().unwrap();
    let bytes = data::bytes(300_000, 77);
    let path = write(local.path(), "lab.bin", &bytes);
    c.send(SendVia::Signal, &path, None, &NoProgress)
        .await
        .unwrap();
    let out = local.path().join("got.bin");
    let got = c
        .get(GetVia::Signal, "lab.bin", &out, false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(got.crc, ferry_proto::crc::checksum(&bytes));
    assert_same_bytes(&std::fs::read(&out).unwrap(), &bytes, "as uploaded");
    // The admin's edit: same size, other bytes, a later mtime.
    let stored_at = std::fs::metadata(d.root.join("lab.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let edited = data::bytes(300_000, 78);
    std::fs::write(d.root.join("lab.bin"), &edited).unwrap();
    set_mtime(
        &d.root.join("lab.bin"),
        stored_at + std::time::Duration::from_secs(1),
    );
    // Twice: summed from the bytes (and recorded), then from the record.
    for round in ["summed", "recorded"] {
        let out = local.path().join(format!("got-{round}.bin"));
        let got = c
            .get(GetVia::Signal, "lab.bin", &out, false, &NoProgress)
            .await
            .unwrap();
        assert_eq!(got.crc, ferry_proto::crc::checksum(&edited), "{round}");
        assert_same_bytes(&std::fs::read(&out).unwrap(), &edited, round);
    }
    // A file an admin put there, and edited again: each RAF right.
    for seed in [80, 81] {
        let admin = data::bytes(70_000, seed);
        d.put("course.txt", &admin);
        // Each edit's own mtime, however quickly it follows the last.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(seed - 79);
        set_mtime(&d.root.join("course.txt"), later);
        for round in 0..2 {
            let out = local.path().join(format!("course-{seed}-{round}.txt"));
            let got = c
                .get(GetVia::Signal, "course.txt", &out, false, &NoProgress)
                .await
                .unwrap();
            assert_eq!(got.crc, ferry_proto::crc::checksum(&admin));
            assert_same_bytes(&std::fs::read(&out).unwrap(), &admin, "course.txt");
        }
    }
    d.stop().await;
}

/// Sets a file's modification time, as an admin's later edit has it.
fn set_mtime(path: &std::path::Path, at: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}
