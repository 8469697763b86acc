//! Test support for ferry's end-to-end tests: the real daemon in-process on
//! `127.0.0.1:0`, and plain-socket clients that do what the lab handout
//! clients do, byte for byte (not ferry's own client).
//!
//! # Layout
//! - [`TestDaemon`]: start, addresses, storage inspection, stop.
//! - [`handout`]: one function per handout client.
//! - [`data`]: deterministic test data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_config::Config;
use ferryd::{BoundAddrs, Daemon};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod handout;
pub mod proxy;

/// The seeded RNG of the tests (`fastrand`): the same seed gives the same run.
pub type Rng = fastrand::Rng;

/// Gives a test socket a 4 MiB receive buffer (see [`handout::udp_socket`]).
pub fn set_rcvbuf(sock: &tokio::net::UdpSocket) {
    ferryd::set_buffer_sizes(sock, 4 << 20);
}

/// Upper bound on any single client operation in tests, so a bug fails the
/// test instead of hanging it.
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until `cond` holds, for up to [`OP_TIMEOUT`]; panics saying `what`
/// if it never does. For effects ferryd sends no word of: a file stored
/// after a handout upload (acknowledged with nothing), the reaper's
/// removals, a count of sessions or connections.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    eventually_async(what, || std::future::ready(cond())).await
}

/// [`eventually`] with a check that talks to the daemon (a request whose
/// refusal changes nothing, repeated until it is served).
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
    let mut every = Duration::from_millis(2);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {OP_TIMEOUT:?}"
        );
        // Real time: the state checked is another task's or the kernel's,
        // and nothing announces the change. The one sleep of the polls.
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_millis(25));
    }
}

/// A daemon running in this process on loopback, storing in a temp dir.
pub struct TestDaemon {
    /// Where each service listens.
    pub addrs: BoundAddrs,
    /// The storage root.
    pub root: PathBuf,
    /// Reloads the running daemon's configuration.
    pub controller: ferryd::Controller,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDaemon {
    /// Starts with the test defaults (every service on `127.0.0.1:0`).
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    /// Starts after `edit` adjusts the configuration.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut d = Self::start_in(dir.path(), edit).await;
        d._dir = Some(dir);
        d
    }

    /// Starts on an existing storage root (kept after the daemon stops).
    pub async fn start_in(root: &Path, edit: impl FnOnce(&mut Config)) -> TestDaemon {
        let mut config = Config::for_tests(root);
        edit(&mut config);
        let daemon = Daemon::bind(config).await.expect("daemon binds");
        let addrs = daemon.addrs();
        let root = daemon.storage_root().to_owned();
        let controller = daemon.controller();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon.serve(async move {
            let _ = rx.await;
        }));
        TestDaemon {
            addrs,
            root,
            controller,
            stop: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Signals shutdown and waits until `serve` returns.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    /// Like [`TestDaemon::stop`], keeping the value (and its temp dir) alive.
    pub async fn stop_in_place(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve does not panic");
        }
    }

    /// Sends the shutdown signal without waiting; returns the serve task.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running")
    }

    /// Every regular file under the root, outside the work area, as
    /// slash-separated relative paths, sorted.
    pub fn visible_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect(&self.root, "", &mut out);
        out.sort();
        out
    }

    /// Entries in the work area (temporary files) right now.
    pub fn work_entries(&self) -> usize {
        std::fs::read_dir(self.root.join(ferryd::WORK_DIR))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Entries left in the work area once the reaper has had up to 5 s to
    /// remove what abandoned transfers left (it works off the runtime).
    pub async fn work_entries_settled(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut left = self.work_entries();
        eventually_async("the reaper", || {
            left = self.work_entries();
            std::future::ready(left == 0 || tokio::time::Instant::now() >= deadline)
        })
        .await;
        left
    }

    /// The content of a stored file.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Stores a file directly (as if uploaded earlier).
    pub fn put(&self, rel: &str, data: &[u8]) {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, data).expect("write");
    }

    /// The address of a service, panicking if disabled.
    pub fn addr(&self, pick: fn(&BoundAddrs) -> Option<SocketAddr>) -> SocketAddr {
        pick(&self.addrs).expect("service enabled")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The work area, the lock and crash leftovers being reaped.
        if prefix.is_empty() && name.starts_with(".ferry") {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            collect(&e.path(), &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}

/// Deterministic test data.
pub mod data {
    /// `len` bytes of a seeded pseudo-random sequence, different per `seed`.
    pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        fastrand::Rng::with_seed(seed).fill(&mut data);
        data
    }

    /// The boundary sizes of a chunked protocol: 0, 1, chunk−1, chunk, chunk+1 and several MiB.
    pub fn boundary_sizes(chunk: usize) -> Vec<usize> {
        vec![0, 1, chunk - 1, chunk, chunk + 1, 3 * 1024 * 1024 + 7]
    }
}

/// Asserts two byte strings are equal, reporting lengths and the first
/// difference instead of printing megabytes.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {} bytes, first difference at offset {first}",
        got.len(),
        want.len()
    );
}

/// The handout-style peers in `tests/peers/`, written in Python the way the
/// handouts write them, run as real processes.
pub mod peers {
    use std::path::{Path, PathBuf};
    use std::process::Output;

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    /// The folder of the peers.
    pub fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
    }

    /// Runs a peer client script to its end (within the test timeout).
    pub async fn run(script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("python3");
        cmd.arg(dir().join(script)).args(args).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{script} {args:?} did not finish in 120 s"))
            .expect("python3 runs")
    }

    /// A peer server on a free loopback port, serving `dir` (with `extra`
    /// arguments after it): the child (killed on drop) and its port.
    pub async fn server(script: &str, dir: &Path, extra: &[&str]) -> (Child, u16) {
        let mut child = Command::new("python3")
            .arg(self::dir().join(script))
            .arg("0")
            .arg(dir)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("the peer says ready")
            .expect("read")
            .expect("a line");
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{script}: unexpected first line {line:?}"));
        // Keep reading what the server prints, so it never writes into a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, port)
    }
}

/// A blocking TCP connection from `src` (any 127.x address: a student of
/// its own) to `to`.
pub fn connect_from(
    src: std::net::Ipv4Addr,
    to: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    sock.connect(&to.into())?;
    Ok(sock.into())
}
