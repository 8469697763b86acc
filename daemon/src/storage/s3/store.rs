//! The object store: the S3 calls the backend makes, each signed by
//! rusty-s3 (a presigned URL, with `x-amz-checksum-crc32` among the signed
//! headers where there is a body) and sent over [`Http`].

use std::io;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::http::{read_body, Http};

/// How long a presigned URL stays valid: longer than any one request.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// Attempts of one idempotent request before its error is returned.
const ATTEMPTS: u32 = 3;

/// The access key and its secret; the secret is never printed.
#[derive(Clone)]
pub(crate) struct Secret {
    pub(crate) key_id: String,
    pub(crate) secret: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Secret {{ key_id: {:?}, secret: \"(hidden)\" }}",
            self.key_id
        )
    }
}

/// One bucket, with the credentials to use it.
pub(super) struct Store {
    http: Http,
    bucket: Bucket,
    credentials: Credentials,
    timeout: Duration,
}

/// What the store said when it refused a request: status and S3 error code.
fn refused(what: &str, status: StatusCode, body: &[u8]) -> io::Error {
    let text = String::from_utf8_lossy(body)
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|s| s.split("</Code>").next())
        .unwrap_or("");
    let message = text
        .split("<Message>")
        .nth(1)
        .and_then(|s| s.split("</Message>").next())
        .unwrap_or("");
    let kind = match (status, code) {
        (StatusCode::NOT_FOUND, _) => io::ErrorKind::NotFound,
        (_, "InvalidDigest" | "BadDigest") => io::ErrorKind::InvalidData,
        (StatusCode::FORBIDDEN, _) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(
        kind,
        format!("{what}: the store answered {status} {code} {message}")
            .trim_end()
            .to_owned(),
    )
}

/// An answer's body as text.
fn text(body: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// An answer that is not the XML expected.
fn bad_xml(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

/// The base64 big-endian CRC-32 S3 checksum headers carry.
pub(super) fn crc_header(crc: u32) -> String {
    B64.encode(crc.to_be_bytes())
}

impl Store {
    pub(super) fn new(
        http: Http,
        endpoint: &str,
        bucket: &str,
        region: &str,
        secret: &Secret,
        timeout: Duration,
    ) -> io::Result<Store> {
        let url = url::Url::parse(endpoint)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("endpoint: {e}")))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_owned(), region.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bucket: {e}")))?;
        Ok(Store {
            http,
            bucket,
            credentials: Credentials::new(secret.key_id.clone(), secret.secret.clone()),
            timeout,
        })
    }

    /// Sends a signed request (retried on a lost connection or a 5xx when
    /// `retry`) and returns the answer's head.
    async fn send(
        &self,
        method: Method,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Bytes,
        retry: bool,
    ) -> io::Result<Response<Incoming>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = Request::builder().method(method.clone()).uri(url.as_str());
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req
                .header("content-length", body.len())
                .body(Full::new(body.clone()))
                .map_err(io::Error::other)?;
            let again = match self.http.send(req, self.timeout).await {
                Ok(resp) if resp.status().is_server_error() && retry && attempt < ATTEMPTS => {
                    let _ = read_body(resp.into_body()).await;
                    true
                }
                Ok(resp) => return Ok(resp),
                Err(_) if retry && attempt < ATTEMPTS => true,
                Err(e) => return Err(e),
            };
            if again {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }

    /// Sends and reads the whole answer; anything but 2xx is an error.
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: url::Url,
        headers: &[(&str, String)],
        body: Bytes,
        retry: bool,
    ) -> io::Result<(hyper::HeaderMap, Bytes)> {
        let resp = self.send(method, &url, headers, body, retry).await?;
        let status = resp.status();
        let head = resp.headers().clone();
        let body = tokio::time::timeout(self.timeout, read_body(resp.into_body()))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "answer too slow")))?;
        if !status.is_success() {
            return Err(refused(what, status, &body));
        }
        Ok((head, body))
    }

    /// A request without a body; the whole answer.
    async fn call_empty(&self, what: &str, method: Method, url: url::Url) -> io::Result<Bytes> {
        let (_, body) = self
            .call(what, method, url, &[], Bytes::new(), true)
            .await?;
        Ok(body)
    }

    /// A request without a body whose answer may be "not found": the
    /// thing is gone, which is what was wanted.
    async fn remove(&self, what: &str, url: url::Url) -> io::Result<()> {
        match self.call_empty(what, Method::DELETE, url).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map(drop),
        }
    }

    /// Checks the bucket is there and the key may list it.
    pub(super) async fn check(&self, prefix: &str) -> io::Result<()> {
        let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
        list.with_prefix(prefix);
        list.with_max_keys(1);
        let url = list.sign(SIGNED_FOR);
        self.call_empty("listing the bucket", Method::GET, url)
            .await
            .map(drop)
    }

    /// Stores `data` as `key` in one request, checked by the store against `crc`.
    pub(super) async fn put(&self, key: &str, data: Bytes, crc: u32) -> io::Result<()> {
        let sum = crc_header(crc);
        let mut put = self.bucket.put_object(Some(&self.credentials), key);
        put.headers_mut()
            .insert("x-amz-checksum-crc32", sum.clone());
        let url = put.sign(SIGNED_FOR);
        let headers = [("x-amz-checksum-crc32", sum)];
        self.call("storing the object", Method::PUT, url, &headers, data, true)
            .await
            .map(|_| ())
    }

    /// Starts a multipart upload of `key`; returns its upload id.
    pub(super) async fn create_multipart(&self, key: &str) -> io::Result<String> {
        let create = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
        let url = create.sign(SIGNED_FOR);
        let body = self
            .call_empty("starting a multipart upload", Method::POST, url)
            .await?;
        let parsed = CreateMultipartUpload::parse_response(text(&body)?)
            .map_err(|e| bad_xml("multipart upload id", e))?;
        Ok(parsed.upload_id().to_owned())
    }

    /// Stores part `n` (from 1) of a multipart upload; returns its ETag.
    pub(super) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        n: u16,
        data: Bytes,
        crc: u32,
    ) -> io::Result<String> {
        let sum = crc_header(crc);
        let mut part = self
            .bucket
            .upload_part(Some(&self.credentials), key, n, upload_id);
        part.headers_mut()
            .insert("x-amz-checksum-crc32", sum.clone());
        let url = part.sign(SIGNED_FOR);
        let headers = [("x-amz-checksum-crc32", sum)];
        let (head, _) = self
            .call("storing a part", Method::PUT, url, &headers, data, true)
            .await?;
        head.get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a part was stored without an ETag",
                )
            })
    }

    /// Joins the parts into the object.
    pub(super) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> io::Result<()> {
        let complete = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNED_FOR);
        let body = Bytes::from(complete.body());
        let (_, answer) = self
            .call(
                "completing a multipart upload",
                Method::POST,
                url,
                &[],
                body,
                true,
            )
            .await?;
        // S3 may answer 200 and still fail, in the body.
        if String::from_utf8_lossy(&answer).contains("<Error>") {
            return Err(refused(
                "completing a multipart upload",
                StatusCode::OK,
                &answer,
            ));
        }
        Ok(())
    }

    /// Drops a multipart upload and its parts.
    pub(super) async fn abort(&self, key: &str, upload_id: &str) -> io::Result<()> {
        let abort = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id);
        let url = abort.sign(SIGNED_FOR);
        self.remove("aborting a multipart upload", url).await
    }

    /// Removes `key` (nothing there is fine).
    pub(super) async fn delete(&self, key: &str) -> io::Result<()> {
        let delete = self.bucket.delete_object(Some(&self.credentials), key);
        let url = delete.sign(SIGNED_FOR);
        self.remove("removing an object", url).await
    }

    /// Starts reading `key`: the answer's body streams the object.
    pub(super) async fn get(&self, key: &str) -> io::Result<Incoming> {
        let get = self.bucket.get_object(Some(&self.credentials), key);
        let url = get.sign(SIGNED_FOR);
        let resp = self
            .send(Method::GET, &url, &[], Bytes::new(), true)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = read_body(resp.into_body()).await.unwrap_or_default();
            return Err(refused("reading the object", status, &body));
        }
        Ok(resp.into_body())
    }

    /// The multipart uploads under `prefix` that were neither completed
    /// nor aborted (ListMultipartUploads; rusty-s3 has no action for it,
    /// so it is signed with rusty-s3's signer).
    pub(super) async fn list_multipart(&self, prefix: &str) -> io::Result<Vec<OpenUpload>> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query: Vec<(&str, &str)> = vec![("prefix", prefix), ("uploads", "")];
            if let Some((key, id)) = &markers {
                query.push(("key-marker", key));
                query.push(("upload-id-marker", id));
            }
            query.sort();
            let url = rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                rusty_s3::Method::Get,
                self.bucket.base_url().clone(),
                self.credentials.key(),
                self.credentials.secret(),
                self.credentials.token(),
                self.bucket.region(),
                SIGNED_FOR.as_secs(),
                query.iter().copied(),
                std::iter::empty(),
            );
            let body = self
                .call_empty("listing multipart uploads", Method::GET, url)
                .await?;
            let page = parse_uploads(text(&body)?);
            out.extend(page.uploads);
            match page.next {
                Some(next) => markers = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Every key under `prefix`.
    pub(super) async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            list.with_prefix(prefix);
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let url = list.sign(SIGNED_FOR);
            let body = self
                .call_empty("listing the bucket", Method::GET, url)
                .await?;
            let page = ListObjectsV2::parse_response(text(&body)?)
                .map_err(|e| bad_xml("bucket listing", e))?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(keys),
            }
        }
    }
}

/// A multipart upload the store holds open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was created, in seconds since the epoch (the store's clock).
    pub initiated: Option<u64>,
}

/// One page of ListMultipartUploads: its uploads, and the markers of the
/// next page when it is truncated.
struct UploadsPage {
    uploads: Vec<OpenUpload>,
    next: Option<(String, String)>,
}

/// The text of `<tag>…</tag>` in `xml`, unescaped.
fn element(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// ListMultipartUploads' answer, read with the few elements it needs.
fn parse_uploads(xml: &str) -> UploadsPage {
    let uploads = xml
        .split("<Upload>")
        .skip(1)
        .filter_map(|u| {
            let u = u.split("</Upload>").next()?;
            Some(OpenUpload {
                key: element(u, "Key")?,
                upload_id: element(u, "UploadId")?,
                initiated: element(u, "Initiated")
                    .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
            })
        })
        .collect();
    let truncated = element(xml, "IsTruncated").is_some_and(|t| t == "true");
    let next = truncated
        .then(|| {
            Some((
                element(xml, "NextKeyMarker")?,
                element(xml, "NextUploadIdMarker")?,
            ))
        })
        .flatten();
    UploadsPage { uploads, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_multipart_uploads_is_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>ferry</Bucket><IsTruncated>true</IsTruncated><NextKeyMarker>p/objects/b</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker><Upload><Key>p/objects/a&amp;b</Key><UploadId>u1</UploadId><Initiated>2026-12-03T10:00:00.000Z</Initiated></Upload><Upload><Key>p/objects/b</Key><UploadId>u2</UploadId><Initiated>2026-12-03T10:00:01Z</Initiated></Upload></ListMultipartUploadsResult>"#;
        let page = parse_uploads(xml);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/objects/a&b");
        assert_eq!(page.uploads[0].upload_id, "u1");
        assert_eq!(page.uploads[0].initiated, Some(1_796_292_000));
        assert_eq!(page.uploads[1].initiated, Some(1_796_292_001));
        assert_eq!(page.next, Some(("p/objects/b".into(), "u2".into())));
        let last = parse_uploads("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>");
        assert!(last.uploads.is_empty() && last.next.is_none());
    }
}
