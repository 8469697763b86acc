//! etcd, through its JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`, `/v3/lease/grant`, `/v3/lease/keepalive`): the few
//! calls the catalog needs, tried on each member in turn until one answers.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::Http;

/// A key and its value as stored.
#[derive(Debug, Clone)]
pub(super) struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// One comparison of a transaction.
pub(super) enum Compare {
    /// The key (or, with `prefix`, every key under it) does not exist.
    Absent { key: String, prefix: bool },
    /// The key was last changed at this revision.
    ModRevision(String, i64),
    /// The key exists.
    Present(String),
}

/// One operation of a transaction.
pub(super) enum Op {
    Put(String, Vec<u8>),
    /// A put whose key goes when the lease expires.
    PutLeased(String, Vec<u8>, i64),
    Delete(String),
}

/// The etcd members, tried in turn from the last one that answered.
pub(super) struct Etcd {
    http: Http,
    members: Vec<String>,
    next: AtomicUsize,
    timeout: Duration,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    mod_revision: Option<String>,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
}

impl Etcd {
    pub(super) fn new(http: Http, members: &[String], timeout: Duration) -> Etcd {
        Etcd {
            http,
            members: members
                .iter()
                .map(|m| m.trim_end_matches('/').to_owned())
                .collect(),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// POSTs `body` to `path` on the first member that answers 200.
    async fn post(&self, path: &str, body: &Value) -> io::Result<Bytes> {
        let body = Bytes::from(body.to_string());
        let start = self.next.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.members.len() {
            let at = (start + i) % self.members.len();
            let req = Request::post(format!("{}{path}", self.members[at]))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .map_err(io::Error::other)?;
            match self.http.call(req, self.timeout).await {
                Ok((status, body)) if status.is_success() => {
                    self.next.store(at, Ordering::Relaxed);
                    return Ok(body);
                }
                Ok((status, body)) => {
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    // A request etcd refuses is refused by every member.
                    if status.is_client_error() {
                        return Err(io::Error::other(format!(
                            "etcd refused the request ({status}): {text}"
                        )));
                    }
                    last = Some(io::Error::other(format!(
                        "{}: {status} {text}",
                        self.members[at]
                    )));
                }
                Err(e) => {
                    last = Some(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.members[at]),
                    ))
                }
            }
        }
        let why = last.map(|e| e.to_string()).unwrap_or_default();
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            format!("no etcd member answered (last: {why})"),
        ))
    }

    /// The value of `key`, if any.
    pub(super) async fn get(&self, key: &str) -> io::Result<Option<Kv>> {
        let body = self
            .post("/v3/kv/range", &json!({ "key": B64.encode(key) }))
            .await?;
        Ok(parse_range(&body)?.into_iter().next())
    }

    /// Every key under `prefix`, in key order.
    pub(super) async fn list(&self, prefix: &str) -> io::Result<Vec<Kv>> {
        let body = self
            .post(
                "/v3/kv/range",
                &json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
            )
            .await?;
        parse_range(&body)
    }

    /// Applies `ops` if every comparison holds; returns whether it did.
    pub(super) async fn txn(&self, compare: &[Compare], ops: &[Op]) -> io::Result<bool> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent { key, prefix } => {
                    let mut v = json!({ "key": B64.encode(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0" });
                    if *prefix {
                        v["range_end"] = B64.encode(prefix_end(key)).into();
                    }
                    v
                }
                Compare::ModRevision(key, rev) => json!({ "key": B64.encode(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() }),
                Compare::Present(key) => json!({ "key": B64.encode(key), "target": "CREATE", "result": "GREATER", "create_revision": "0" }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => {
                    json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v) } })
                }
                Op::PutLeased(k, v, lease) => {
                    json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v), "lease": lease.to_string() } })
                }
                Op::Delete(k) => json!({ "request_delete_range": { "key": B64.encode(k) } }),
            })
            .collect();
        let body = self
            .post(
                "/v3/kv/txn",
                &json!({ "compare": compare, "success": success }),
            )
            .await?;
        let r: TxnResponse = serde_json::from_slice(&body).map_err(bad_answer)?;
        Ok(r.succeeded)
    }

    /// Writes `key` whatever is there.
    pub(super) async fn put(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.txn(&[], &[Op::Put(key.to_owned(), value.to_vec())])
            .await
            .map(|_| ())
    }

    /// A lease of `ttl` seconds: its id.
    pub(super) async fn grant(&self, ttl: u64) -> io::Result<i64> {
        let body = self
            .post("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))
            .await?;
        let v: Value = serde_json::from_slice(&body).map_err(bad_answer)?;
        int(&v["ID"]).ok_or_else(|| bad_answer(format!("no lease id in {v}")))
    }

    /// Keeps `lease` alive: the seconds it has left (0: it has expired,
    /// and its keys are gone).
    pub(super) async fn keep_alive(&self, lease: i64) -> io::Result<i64> {
        let body = self
            .post("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))
            .await?;
        // The gateway streams: one JSON object per answer.
        let v: Value = serde_json::Deserializer::from_slice(&body)
            .into_iter::<Value>()
            .next()
            .ok_or_else(|| bad_answer("an empty keepalive answer"))?
            .map_err(bad_answer)?;
        Ok(int(&v["result"]["TTL"]).unwrap_or(0))
    }

    /// Ends `lease` now: the keys put with it go.
    pub(super) async fn revoke(&self, lease: i64) -> io::Result<()> {
        self.post("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
            .await
            .map(|_| ())
    }

    /// Removes `key`.
    pub(super) async fn delete(&self, key: &str) -> io::Result<()> {
        self.post("/v3/kv/deleterange", &json!({ "key": B64.encode(key) }))
            .await
            .map(|_| ())
    }
}

/// An int64 as etcd's gateway writes it: a string (or a number).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn bad_answer(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("etcd answered something unexpected: {e}"),
    )
}

fn parse_range(body: &[u8]) -> io::Result<Vec<Kv>> {
    let r: RangeResponse = serde_json::from_slice(body).map_err(bad_answer)?;
    r.kvs
        .into_iter()
        .map(|kv| {
            let key =
                String::from_utf8(B64.decode(kv.key).map_err(bad_answer)?).map_err(bad_answer)?;
            Ok(Kv {
                key,
                value: B64.decode(kv.value).map_err(bad_answer)?,
                mod_revision: kv.mod_revision.and_then(|r| r.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The end of the range of keys starting with `prefix`: the prefix with its
/// last byte raised (etcd's `WithPrefix`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_past_every_key_under_it() {
        assert_eq!(prefix_end("ferry/n/"), b"ferry/n0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn a_range_answer_without_kvs_is_empty() {
        let body = br#"{"header":{"revision":"2"}}"#;
        assert!(parse_range(body).unwrap().is_empty());
        let body = br#"{"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"7","value":"YmFy"}],"count":"1"}"#;
        let kv = &parse_range(body).unwrap()[0];
        assert_eq!(
            (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
            ("foo", &b"bar"[..], 7)
        );
    }
}
