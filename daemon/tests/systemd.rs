//! The built `ferryd` as systemd runs it: `NOTIFY_SOCKET` points at a Unix
//! datagram socket this test owns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FERRYD: &str = env!("CARGO_BIN_EXE_ferryd");

fn config(number: i64, level: &str) -> String {
    format!(
        r#"
[log]
level = "{level}"
[udp_sum]
number = {number}
bind = "127.0.0.1:0"
[udp_upload]
bind = "127.0.0.1:0"
[udp_download]
bind = "127.0.0.1:0"
[tcp_upload]
bind = "127.0.0.1:0"
[magic_download]
bind = "127.0.0.1:0"
[signal]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
"#
    )
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads notifications until one contains `want`, returning it; watchdog
/// pings on the way are counted into `pings`.
fn until(sock: &UnixDatagram, want: &str, pings: &mut usize) -> String {
    loop {
        let msg = recv(sock);
        if msg.contains(want) {
            return msg;
        }
        if msg == "WATCHDOG=1\n" {
            *pings += 1;
        }
    }
}

fn addr_of(status: &str, service: &str) -> SocketAddr {
    let rest = &status[status.find(&format!("{service} ")).expect(service) + service.len() + 1..];
    rest.split([',', ' ']).next().unwrap().parse().unwrap()
}

fn sum(addr: SocketAddr) -> String {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(b"Ann:1", addr).unwrap();
    let mut buf = [0u8; 128];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_watchdog_reload_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let conf = dir.path().join("ferryd.toml");
    std::fs::write(&conf, config(42, "info")).unwrap();

    let mut child = Command::new(FERRYD)
        .arg("--config")
        .arg(&conf)
        .arg("--storage")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The first notification is READY=1, and by then every port accepts.
    let first = recv(&sock);
    assert!(
        first.starts_with("READY=1\nSTATUS=serving udp_upload 127.0.0.1:"),
        "{first:?}"
    );
    let signal = addr_of(&first, "signal");
    let mut s = TcpStream::connect(signal).expect("the signal port accepts at READY=1");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PIN").unwrap();
    let mut pon = [0u8; 3];
    s.read_exact(&mut pon).unwrap();
    assert_eq!(&pon, b"PON");
    for service in ["tcp_upload", "magic_download"] {
        TcpStream::connect(addr_of(&first, service)).expect(service);
    }
    let udp_sum = addr_of(&first, "udp_sum");
    assert_eq!(sum(udp_sum), "Server of ferry:42");

    // WATCHDOG=1 keeps coming at half the 200 ms interval.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        if recv(&sock) == "WATCHDOG=1\n" {
            pings += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // SIGHUP: RELOADING=1, then READY=1; the new number is in force.
    std::fs::write(&conf, config(7, "debug")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let reloading = until(&sock, "RELOADING=1", &mut pings);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    until(&sock, "READY=1", &mut pings);
    assert_eq!(sum(udp_sum), "Server of ferry:7");

    // A bad file on SIGHUP changes nothing and says so.
    std::fs::write(&conf, "[udp_sum]\nnumber = 1000\n").unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let refused = until(&sock, "READY=1", &mut pings);
    assert!(refused.contains("STATUS=reload refused"), "{refused:?}");
    assert_eq!(sum(udp_sum), "Server of ferry:7");

    // SIGTERM: STOPPING=1, then exit 0.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopping = until(&sock, "STOPPING=1", &mut pings);
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
