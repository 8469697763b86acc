//! The cluster suite's pieces: the loopback cluster of `cluster.sh`, ferryd
//! processes on it, and what the tests read back from the store itself
//! (etcd keys by `etcdctl`, bucket listings by `curl --aws-sigv4`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry::Client;

/// The built ferryd: `$FERRYD`, or beside this test in the target directory.
pub fn ferryd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRYD") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/cluster-<hash> → target/<profile>/ferryd
    let bin = exe.parent().and_then(Path::parent).unwrap().join("ferryd");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build -p ferryd` first (or set FERRYD)",
        bin.display()
    );
    bin
}

/// The 3-node Garage + 3-member etcd cluster of `cluster.sh`, torn down on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    script: PathBuf,
    key_id: String,
    secret: String,
}

impl Cluster {
    pub fn up() -> Cluster {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/cluster.sh");
        let dir = tempfile::Builder::new()
            .prefix("ferry-cluster")
            .tempdir()
            .unwrap();
        let out = Command::new(&script)
            .arg("up")
            .arg(dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            // What did start stops, so the next test finds its ports free.
            let _ = Command::new(&script).arg("down").arg(dir.path()).status();
        }
        assert!(
            out.status.success(),
            "cluster.sh up failed (are garage and etcd installed? .ci/run installs them):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("s3.env")).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        let (key_id, secret) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"));
        Cluster {
            dir,
            script,
            key_id,
            secret,
        }
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(&self.script)
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kill -9 one member: `("garage", 3)`, `("etcd", 1)`.
    pub fn stop(&self, kind: &str, n: u32) {
        self.run(&["stop", kind, &n.to_string()]);
    }

    /// Starts it again, on its old data.
    pub fn start(&self, kind: &str, n: u32) {
        self.run(&["start", kind, &n.to_string()]);
    }

    /// The `[storage]` tables cluster.sh wrote, as ferryd reads them.
    pub fn storage_toml(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("storage.toml")).unwrap()
    }

    /// etcdctl against the three members; its standard output.
    fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .arg("--endpoints=127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579")
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes every etcd key under `prefix` (what a sweeper that took an
    /// instance for gone would do to its records).
    pub fn etcd_delete_prefix(&self, prefix: &str) {
        self.etcdctl(&["del", "--prefix", prefix]);
    }

    /// The etcd keys under `prefix`.
    pub fn etcd_keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether the bucket answers a listing (Garage has its quorum).
    pub fn s3_ready(&self) -> bool {
        self.s3_try("list-type=2").is_some()
    }

    /// A signed GET on the bucket (`query` like `list-type=2` or `uploads=`).
    fn s3_get(&self, query: &str) -> String {
        self.s3_try(query)
            .unwrap_or_else(|| panic!("the bucket did not answer ?{query}"))
    }

    fn s3_try(&self, query: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--aws-sigv4", "aws:amz:garage:s3", "--user"])
            .arg(format!("{}:{}", self.key_id, self.secret))
            // Garage wants the payload hash: that of an empty body.
            .args(["-H", "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
            .arg(format!("http://127.0.0.1:3900/ferry?{query}"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every object key in the bucket.
    pub fn objects(&self) -> Vec<String> {
        let text = self.s3_get("list-type=2");
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// Starts a multipart upload of `key` straight on the store, as ferryd
    /// does before it records it: one whose answer ferryd never got.
    pub fn start_multipart(&self, key: &str) {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-X", "POST", "--aws-sigv4", "aws:amz:garage:s3", "--user"])
            .arg(format!("{}:{}", self.key_id, self.secret))
            .args(["-H", "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
            .arg(format!("http://127.0.0.1:3900/ferry/{key}?uploads="))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "CreateMultipartUpload: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// The keys of the multipart uploads started and neither completed nor aborted.
    pub fn open_multipart_keys(&self) -> Vec<String> {
        let text = self.s3_get("uploads=");
        text.split("<Upload>")
            .skip(1)
            .filter_map(|u| u.split("<Key>").nth(1)?.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_multipart_uploads(&self) -> usize {
        self.s3_get("uploads=").matches("<UploadId>").count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// One ferryd process on the cluster, killed on drop.
pub struct Ferryd {
    pub child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    bound: serde_json::Value,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Ferryd {
    /// Starts ferryd with the cluster's storage and `state` as its own
    /// directory, plus `extra` TOML (top-level keys).
    pub fn start(cluster: &Cluster, state: &Path, extra: &str) -> Ferryd {
        Self::start_edited(cluster, state, extra, |_| {})
    }

    /// [`Ferryd::start`], with `edit` applied to the configuration.
    pub fn start_edited(
        cluster: &Cluster,
        state: &Path,
        extra: &str,
        edit: impl FnOnce(&mut ferry_config::Config),
    ) -> Ferryd {
        let config = Self::write_config(cluster, state, extra, edit);
        Ferryd::start_config(&config, state).expect("ferryd starts")
    }

    /// Writes the configuration [`Ferryd::start_edited`] starts with; its path.
    pub fn write_config(
        cluster: &Cluster,
        state: &Path,
        extra: &str,
        edit: impl FnOnce(&mut ferry_config::Config),
    ) -> PathBuf {
        let config = state.with_extension("toml");
        let text = format!("{extra}\n{}", cluster.storage_toml());
        let mut parsed = ferry_config::Config::parse(&text).unwrap();
        edit(&mut parsed);
        // Every service on 127.0.0.1:0, as in every other test.
        let test = ferry_config::Config::for_tests(state);
        for id in ferry_config::ServiceId::ALL {
            *parsed.endpoint_mut(id).1 = test.endpoint(id).1;
        }
        parsed.http.bind = test.http.bind;
        std::fs::write(&config, parsed.to_toml()).unwrap();
        config
    }

    /// Starts ferryd on `config`; `Err` with its exit status and stderr if
    /// it exits instead of serving.
    pub fn start_config(
        config: &Path,
        state: &Path,
    ) -> Result<Ferryd, (std::process::ExitStatus, String)> {
        let mut child = Command::new(ferryd_bin())
            .arg("--config")
            .arg(config)
            .arg("--storage")
            .arg(state)
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(v) if v["message"] == "bound" => {
                    return Ok(Ferryd {
                        child,
                        lines: rx,
                        bound: v,
                        state: state.to_owned(),
                        config: config.to_owned(),
                    })
                }
                Ok(v) => seen.push_str(&format!("{v}\n")),
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        while let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
                            seen.push_str(&format!("{v}\n"));
                        }
                        return Err((status, seen));
                    }
                }
            }
        }
        child.kill().ok();
        child.wait().ok();
        panic!("ferryd did not bind within 30 s:\n{seen}");
    }

    pub fn addr(&self, service: &str) -> SocketAddr {
        self.bound[service].as_str().unwrap().parse().unwrap()
    }

    /// A ferry client for this instance.
    pub fn client(&self) -> Client {
        let mut c = Client::new("127.0.0.1");
        for id in ferry_config::ServiceId::ALL {
            c.ports[id] = self.addr(id.name()).port();
        }
        c.timeout = Duration::from_secs(30);
        c
    }

    /// The next log event with this message (60 s at most).
    pub fn wait_event(&self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(v) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if v["message"] == message {
                    return v;
                }
            }
        }
        panic!("no {message:?} event within 60 s");
    }

    /// kill -9.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Ferryd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Polls `f` until it holds, up to `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {secs} s");
}

/// A TLS proxy in front of Garage's S3 port (socat), with a certificate for
/// 127.0.0.1 signed by a CA made for the test (openssl): an https store
/// behind a private CA. Stopped when dropped.
pub struct TlsProxy {
    child: std::process::Child,
    /// The CA that signed the proxy's certificate, PEM.
    pub ca: PathBuf,
    /// Another CA, which signed nothing here.
    pub other_ca: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl TlsProxy {
    pub fn start(port: u16) -> TlsProxy {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &format!("/CN=ferry test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},reuseaddr,fork,cert={},key={},verify=0",
                d.join("srv.pem").display(),
                d.join("srv.key").display()
            ))
            .arg("TCP:127.0.0.1:3900")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat runs");
        eventually(10, "the TLS proxy listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        TlsProxy {
            child,
            ca: d.join("ca.pem"),
            other_ca: d.join("other-ca.pem"),
            endpoint: format!("https://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
