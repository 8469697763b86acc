//! What `ferryd check-config` checks beyond the file, and `ferryd ping`.
//!
//! The environment checks catch at `check-config` (the unit's
//! `ExecStartPre`) what would otherwise stop the daemon at start: a storage
//! root that is a file, read-only, under a kernel filesystem, or not
//! creatable; with `--bind`, an address already taken.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_config::{Config, ServiceId, Transport};

/// One check that failed: which, and why.
#[derive(Debug)]
pub(crate) struct CheckFailed {
    /// The key or thing checked (`storage`, `signal.bind`, …).
    pub(crate) what: String,
    /// Why, in words.
    pub(crate) why: String,
}

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// The storage root: exists (or its nearest existing parent can hold it),
/// is a directory, is not on a kernel filesystem, and files can be created
/// in it. Creates nothing that stays.
pub(crate) fn storage(config: &Config) -> Result<(), CheckFailed> {
    if let Some(s3) = config
        .storage
        .s3
        .as_ref()
        .filter(|_| config.storage.backend == ferry_config::BackendKind::S3)
    {
        ferryd::check_s3_credentials(s3).map_err(|why| CheckFailed {
            what: "storage.s3".into(),
            why: why.to_string(),
        })?;
        ferryd::check_s3_ca(s3).map_err(|why| CheckFailed {
            what: "storage.s3".into(),
            why: why.to_string(),
        })?;
    }
    let root = &config.storage.path;
    let fail = |why: String| CheckFailed {
        what: format!("storage ({})", root.display()),
        why,
    };
    let absolute = std::path::absolute(root).unwrap_or_else(|_| root.clone());
    for kernel in ["/proc", "/sys", "/dev"] {
        if absolute.starts_with(kernel) {
            return Err(fail(format!(
                "is under {kernel}, a kernel filesystem, not a place for files"
            )));
        }
    }
    let (dir, exists) = match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => (absolute.clone(), true),
        Ok(_) => return Err(fail("exists and is not a directory".into())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            match nearest_existing(&absolute) {
                Some(parent) if parent.is_dir() => (parent, false),
                Some(parent) => {
                    return Err(fail(format!(
                        "cannot be created: {} is not a directory",
                        parent.display()
                    )))
                }
                None => return Err(fail("cannot be created: no parent exists".into())),
            }
        }
        Err(e) => return Err(fail(format!("cannot be read: {e}"))),
    };
    let probe = dir.join(format!(".ferry-check-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) if exists => Err(fail(format!("is not writable: {e}"))),
        Err(e) => Err(fail(format!(
            "does not exist and cannot be created in {}: {e}",
            dir.display()
        ))),
    }
}

fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
}

/// Every enabled address can be bound now (each bound and let go at once).
pub(crate) fn binds(config: &Config) -> Result<(), CheckFailed> {
    let mut all: Vec<(String, Transport, SocketAddr)> = ServiceId::ALL
        .into_iter()
        .filter_map(|id| match config.endpoint(id) {
            (true, addr) => Some((format!("{id}.bind"), id.transport(), addr)),
            (false, _) => None,
        })
        .collect();
    if config.http.enabled {
        all.push(("http.bind".into(), Transport::Tcp, config.http.bind));
    }
    for (key, transport, addr) in all {
        let r = match transport {
            Transport::Tcp => TcpListener::bind(addr).map(drop),
            Transport::Udp => UdpSocket::bind(addr).map(drop),
        };
        r.map_err(|e| CheckFailed {
            what: format!("{key} ({addr})"),
            why: format!("cannot be bound: {e}"),
        })?;
    }
    Ok(())
}

/// Where a client on this machine reaches a service bound to `bind`: the
/// loopback address of its family when it is bound to all.
pub(crate) fn local(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// Why `ferryd ping` got no `PON`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PingError {
    /// `[signal] enabled = false`.
    #[error("the signal service is disabled in this configuration")]
    Disabled,
    /// No connection.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The `PIN` could not be sent.
    #[error("{addr}: {source}")]
    Send {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Nothing (or too little) came back.
    #[error("no PON from {addr}: {source}")]
    NoPon {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Something else came back.
    #[error("{addr} answered {:?}, not PON", String::from_utf8_lossy(.reply))]
    NotPon { addr: SocketAddr, reply: [u8; 3] },
}

/// `PIN` to the configured signal port; the round trip on `PON`.
pub(crate) fn ping(
    config: &Config,
    timeout: Duration,
) -> Result<(SocketAddr, Duration), PingError> {
    if !config.signal.enabled {
        return Err(PingError::Disabled);
    }
    let addr = local(config.signal.bind);
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| PingError::Unreachable { addr, source })?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .and_then(|()| s.write_all(b"PIN"))
        .map_err(|source| PingError::Send { addr, source })?;
    let mut reply = [0u8; 3];
    s.read_exact(&mut reply)
        .map_err(|source| PingError::NoPon { addr, source })?;
    if &reply != b"PON" {
        return Err(PingError::NotPon { addr, reply });
    }
    let took = started.elapsed();
    let _ = s.write_all(b"CLS");
    Ok((addr, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_root(root: &Path) -> Config {
        Config {
            storage: ferry_config::StorageConfig::local(root),
            ..Config::default()
        }
    }

    #[test]
    fn each_bad_root_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        assert!(storage(&with_root(dir.path())).is_ok());
        assert!(storage(&with_root(&dir.path().join("new/deeper"))).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left behind"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = storage(&with_root(&file)).unwrap_err().to_string();
        assert!(e.ends_with("exists and is not a directory"), "{e}");
        let e = storage(&with_root(&file.join("sub")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
        let e = storage(&with_root(Path::new("/proc/ferry")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel filesystem"), "{e}");
    }

    #[test]
    fn a_taken_port_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = Config::for_tests(Path::new("/tmp"));
        c.signal.bind = taken.local_addr().unwrap();
        let e = binds(&c).unwrap_err().to_string();
        assert!(e.starts_with("signal.bind (127.0.0.1:"), "{e}");
        assert!(e.contains("cannot be bound"), "{e}");
    }
}
