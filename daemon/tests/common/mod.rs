//! Running the built `ferryd` in process-level tests.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const FERRYD: &str = env!("CARGO_BIN_EXE_ferryd");

/// Every service on 127.0.0.1:0.
pub const TEST_BINDS: &str = r#"
[udp_upload]
bind = "127.0.0.1:0"
[udp_download]
bind = "127.0.0.1:0"
[udp_sum]
bind = "127.0.0.1:0"
[tcp_upload]
bind = "127.0.0.1:0"
[magic_download]
bind = "127.0.0.1:0"
[signal]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
"#;

/// Waits until `cond` holds (20 s at most); false if it never did. For
/// what another process does without a word: a file stored, a removal by
/// the reaper, an exit.
pub fn eventually(cond: impl FnMut() -> bool) -> bool {
    eventually_within(Duration::from_secs(20), cond)
}

/// [`eventually`] with a limit of its own.
pub fn eventually_within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let mut every = Duration::from_millis(1);
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        // Real time: ferryd is another process; nothing announces the
        // change. The one sleep of the polls in these tests.
        std::thread::sleep(every);
        every = (every * 2).min(Duration::from_millis(20));
    }
    true
}

/// A running `ferryd` and its JSON log events.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<serde_json::Value>,
    pub bound: serde_json::Value,
}

impl Running {
    pub fn addr(&self, service: &str) -> SocketAddr {
        self.bound[service].as_str().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next event with this message (20 s at most).
    pub fn wait_event(&self, message: &str) -> serde_json::Value {
        wait_event(&self.lines, message)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the exit (20 s at most).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        let child = &mut self.child;
        if eventually(|| {
            status = child.try_wait().unwrap();
            status.is_some()
        }) {
            if let Some(status) = status {
                return status;
            }
        }
        self.child.kill().ok();
        panic!("ferryd did not exit within 20 s");
    }

    /// Peak resident set size so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// A test that ends early (a failed assertion) or forgets to stop its
/// daemon leaves no ferryd running: it is killed when the handle goes, and
/// so is a ferryd run under a wrapper (strace detaches from its tracee when
/// it is killed, and the tracee would run on).
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            for pid in children(self.pid()) {
                // SAFETY: signalling a process our child started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// The processes `pid` started (Linux: /proc/PID/task/PID/children).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Starts the binary with `extra` config (plus [`TEST_BINDS`]) and JSON logs
/// on `root`, and reads the bound addresses from its `bound` event.
pub fn start(
    dir: &Path,
    root: &Path,
    extra: &str,
    pre: Option<fn() -> std::io::Result<()>>,
) -> Running {
    start_under(&[], dir, root, extra, pre)
}

/// Like [`start`], with ferryd run by `wrapper` (a command and its
/// arguments, e.g. strace injecting faults), which must exec it.
pub fn start_under(
    wrapper: &[&str],
    dir: &Path,
    root: &Path,
    extra: &str,
    pre: Option<fn() -> std::io::Result<()>>,
) -> Running {
    start_config(wrapper, dir, root, &format!("{extra}\n{TEST_BINDS}"), pre)
}

/// Like [`start_under`], with the whole configuration given.
pub fn start_config(
    wrapper: &[&str],
    dir: &Path,
    root: &Path,
    text: &str,
    pre: Option<fn() -> std::io::Result<()>>,
) -> Running {
    let config = dir.join("ferryd.toml");
    std::fs::write(&config, text).unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(FERRYD);
            cmd
        }
        None => Command::new(FERRYD),
    };
    cmd.arg("--config")
        .arg(&config)
        .arg("--storage")
        .arg(root)
        .arg("--log-format")
        .arg("json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(f) = pre {
        // SAFETY: `f` only calls async-signal-safe functions (setrlimit).
        unsafe {
            cmd.pre_exec(f);
        }
    }
    let mut child = cmd.spawn().expect("ferryd starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let bound = wait_event(&rx, "bound");
    Running {
        child,
        lines: rx,
        bound,
    }
}

pub fn wait_event(rx: &mpsc::Receiver<serde_json::Value>, message: &str) -> serde_json::Value {
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {message:?} event"));
        if v["message"] == message {
            return v;
        }
    }
}

/// PIN → PON over a fresh connection.
pub fn ping(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PIN").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// Uploads with SAF and reads the reply: `Ok(stored name)` on DON.
pub fn saf_upload(
    addr: SocketAddr,
    name: &str,
    data: &[u8],
) -> std::io::Result<Result<String, String>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(&ferry_proto::signal::encode_file(name, data).map_err(std::io::Error::other)?)?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head)?;
    let mut text = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
    s.read_exact(&mut text)?;
    let text = String::from_utf8_lossy(&text).into_owned();
    Ok(if &head[..3] == b"DON" {
        Ok(text)
    } else {
        Err(text)
    })
}

/// Files under `root` outside the work area, as relative paths.
pub fn visible_files(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".ferry"))
        .collect();
    out.sort();
    out
}

pub fn work_entries(root: &Path) -> usize {
    std::fs::read_dir(root.join(".ferry-work"))
        .map(|d| d.count())
        .unwrap_or(0)
}
