//! `storage`: where files live. Either a directory (the top-level
//! `storage = "DIR"` of every earlier ferry, still the default) or a
//! `[storage]` table choosing a backend:
//!
//! ```toml
//! [storage]
//! backend = "s3"
//! path = "/var/lib/ferry"        # this instance's own state: ledger, instance id
//! [storage.s3]
//! endpoint = "http://127.0.0.1:3900"
//! region = "garage"
//! bucket = "ferry"
//! prefix = ""
//! credentials_file = "/etc/ferry/s3.env"
//! [storage.catalog]
//! etcd = ["http://127.0.0.1:2379", "http://127.0.0.1:2479", "http://127.0.0.1:2579"]
//! ```

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{Dur, Size};

/// Which backend holds the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A directory on this machine (default).
    #[default]
    Local,
    /// An S3-compatible object store for the bytes, etcd for the names:
    /// several ferryd share one store.
    S3,
}

/// `storage`: a directory, or the `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The backend (default `local`).
    pub backend: BackendKind,
    /// With `local`, the storage root (default `./ferry-data`). With `s3`,
    /// this instance's own state: its ledger, its lock and its instance id.
    pub path: PathBuf,
    /// `[storage.s3]`, required by `backend = "s3"`.
    pub s3: Option<S3>,
    /// `[storage.catalog]`, required by `backend = "s3"`.
    pub catalog: Option<Catalog>,
}

/// `[storage.s3]`: the bucket that holds the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    /// The S3 endpoint, `https://host[:port]` or `http://host:port` (a
    /// Garage node, MinIO, AWS, Ceph RGW, a load balancer in front of them).
    /// https is checked against the Mozilla roots and `ca_file`.
    pub endpoint: String,
    /// A PEM file of CA certificates (a campus store's private CA), trusted
    /// for an https endpoint beside the Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The region the requests are signed for (default `us-east-1`; Garage's
    /// default is `garage`).
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// Prepended to every object key (default none), so ferry can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// A file of `AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...`
    /// lines (mode 600). Without it, the same variables in ferryd's
    /// environment. The secret never appears in logs, errors or `print-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// Uploads above this size go in parts of this size (default 8 MiB,
    /// 5 MiB..=1 GiB); smaller ones in one PUT.
    #[serde(default = "default_part_size")]
    pub part_size: Size,
    /// Memory all uploads together may hold in part buffers (default 128
    /// MiB); one upload holds at most two parts. An upload that finds the
    /// budget spent waits at its start (before its go-ahead).
    #[serde(default = "default_memory_budget")]
    pub memory_budget: Size,
    /// Longest one request to the store may take (default 60 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// An object no name refers to is removed by the sweeper once it is this
    /// old (default 1 hour): the leftovers of an instance that died and never
    /// came back. A restarted instance removes its own at once.
    #[serde(default = "default_sweep_after")]
    pub sweep_after: Dur,
}

/// `[storage.catalog]`: where the names live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The etcd members' client URLs (`http://host:2379`); any one that
    /// answers is used.
    pub etcd: Vec<String>,
    /// Prepended to every etcd key (default `ferry/`).
    #[serde(default = "default_catalog_prefix")]
    pub prefix: String,
    /// Longest one etcd request may take before the next member is tried
    /// (default 5 s).
    #[serde(default = "default_catalog_timeout")]
    pub timeout: Dur,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_part_size() -> Size {
    Size(8 << 20)
}
fn default_memory_budget() -> Size {
    Size(128 << 20)
}
fn default_request_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn default_sweep_after() -> Dur {
    Dur(std::time::Duration::from_secs(3600))
}
fn default_catalog_prefix() -> String {
    "ferry/".into()
}
fn default_catalog_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

impl StorageConfig {
    /// The local backend at `path`.
    pub fn local(path: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            backend: BackendKind::Local,
            path: path.into(),
            s3: None,
            catalog: None,
        }
    }

    /// Checks what the types alone do not: `(key, message)` on failure.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
        if self.path.as_os_str().is_empty() {
            return bad("storage.path", "must name a directory");
        }
        if self.backend == BackendKind::Local {
            return Ok(());
        }
        let Some(s3) = &self.s3 else {
            return bad(
                "storage.s3",
                "backend = \"s3\" needs a [storage.s3] table (endpoint, bucket, …)",
            );
        };
        let Some(catalog) = &self.catalog else {
            return bad("storage.catalog", "backend = \"s3\" needs a [storage.catalog] table with etcd = [\"http://…:2379\", …]");
        };
        check_url("storage.s3.endpoint", &s3.endpoint, true)?;
        if s3.ca_file.is_some() && !s3.endpoint.starts_with("https://") {
            return bad(
                "storage.s3.ca_file",
                "is for an https endpoint; storage.s3.endpoint is http://",
            );
        }
        if s3.bucket.is_empty() {
            return bad("storage.s3.bucket", "must name the bucket");
        }
        if s3.region.is_empty() {
            return bad("storage.s3.region", "must not be empty");
        }
        if !(5 << 20..=1 << 30).contains(&s3.part_size.0) {
            return bad(
                "storage.s3.part_size",
                "must be in 5 MiB..=1 GiB (S3's smallest part is 5 MiB)",
            );
        }
        if s3.memory_budget.0 < 2 * s3.part_size.0 {
            return bad(
                "storage.s3.memory_budget",
                "must hold at least two parts (2 × part_size)",
            );
        }
        if catalog.etcd.is_empty() {
            return bad("storage.catalog.etcd", "must list at least one etcd member");
        }
        for url in &catalog.etcd {
            check_url("storage.catalog.etcd", url, false)?;
        }
        Ok(())
    }
}

/// `url` is `http://host…` (or `https://host…` where `https` is allowed).
fn check_url(key: &str, url: &str, https: bool) -> Result<(), (String, String)> {
    let rest = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => r,
        (None, Some(r)) if https => r,
        (None, Some(_)) => {
            return Err((key.into(), format!("{url}: etcd is reached over http:// (on the lab's network, or a local TLS proxy)")));
        }
        (None, None) if https => {
            return Err((
                key.into(),
                format!("{url:?} is not an http:// or https:// URL"),
            ))
        }
        (None, None) => return Err((key.into(), format!("{url:?} is not an http:// URL"))),
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err((key.into(), format!("{url:?} has no host")));
    }
    Ok(())
}

/// The `[storage]` table as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default)]
    backend: BackendKind,
    #[serde(default = "default_path")]
    path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s3: Option<S3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catalog: Option<Catalog>,
}

fn default_path() -> PathBuf {
    PathBuf::from("./ferry-data")
}

impl<'de> Deserialize<'de> for StorageConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StorageConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a directory (\"/var/lib/ferry\") or a [storage] table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StorageConfig, E> {
                Ok(StorageConfig::local(s))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StorageConfig, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(StorageConfig {
                    backend: t.backend,
                    path: t.path,
                    s3: t.s3,
                    catalog: t.catalog,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for StorageConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.backend == BackendKind::Local && self.s3.is_none() && self.catalog.is_none() {
            return self.path.serialize(s);
        }
        Table {
            backend: self.backend,
            path: self.path.clone(),
            s3: self.s3.clone(),
            catalog: self.catalog.clone(),
        }
        .serialize(s)
    }
}
