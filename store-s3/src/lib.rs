//! The S3 chunk store: a blocksnap repository in any S3-compatible bucket.
//!
//! It lives in its own crate so that the SDK (a large, slowly compiling
//! dependency) is rebuilt only when this file changes, and so that the
//! engine stays free of async code: [`S3Store`] implements the engine's
//! synchronous [`Store`] trait by driving the SDK on a small private tokio
//! runtime. The engine's worker threads (rayon) each block on one request,
//! so the number of requests in flight is the number of workers, which
//! [`Store::parallelism`] suggests.
//!
//! The SDK's own retries are turned off: this store retries every request
//! itself ([`retry`]), so that it can also retry a body cut short after the
//! headers arrived, and so that every attempt is counted for pricing.

mod client;
mod retry;

/// A request (with its retries) that takes this long is logged at debug
/// level.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(2);

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use blocksnap::error::{Error, Result};
use blocksnap::store::{Counts, ObjectInfo, Store};

pub use client::{Auth, S3Options};
use retry::{Attempt, Failure};

/// Requests in flight by default: enough to fill a 1–10 Gbit/s link with
/// ~1 MiB objects at tens of milliseconds of latency, few enough that a
/// small node's memory (workers × largest chunk) stays small.
pub const DEFAULT_PARALLELISM: usize = 32;

pub struct S3Store {
    rt: tokio::runtime::Runtime,
    client: Client,
    bucket: String,
    /// Empty or ending with `/`.
    prefix: String,
    anonymous: bool,
    parallelism: usize,
    max_attempts: u32,
    /// Set when the server answered a conditional PUT with 501: later
    /// writes fall back to HEAD then PUT (see FORMAT.md, "Stores").
    no_conditional_put: AtomicBool,
    counts: RequestCounter,
}

#[derive(Default)]
struct RequestCounter {
    get: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    retries: AtomicU64,
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
    Head,
    List,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }
}

impl RequestCounter {
    fn count(&self, op: Op, attempt: u32) {
        let c = match op {
            Op::Get => &self.get,
            Op::Put => &self.put,
            Op::Head => &self.head,
            Op::List => &self.list,
            Op::Delete => &self.delete,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if attempt > 1 {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl S3Store {
    /// Connects (lazily: no request is made here) with credentials from the
    /// standard AWS chain, or none.
    pub fn open(opts: &S3Options) -> Result<S3Store> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blocksnap-s3")
            .enable_all()
            .build()
            .map_err(|e| store_error("start", &opts.url(), e.to_string()))?;
        let (client, anonymous) = rt.block_on(client::build(opts))?;
        Ok(S3Store {
            rt,
            client,
            bucket: opts.bucket.clone(),
            prefix: match opts.prefix.trim_matches('/') {
                "" => String::new(),
                p => format!("{p}/"),
            },
            anonymous,
            parallelism: if opts.parallelism == 0 {
                DEFAULT_PARALLELISM
            } else {
                opts.parallelism
            },
            max_attempts: if opts.max_attempts == 0 {
                retry::MAX_ATTEMPTS
            } else {
                opts.max_attempts
            },
            no_conditional_put: AtomicBool::new(false),
            counts: RequestCounter::default(),
        })
    }

    /// Whether requests go out unsigned (public-bucket reads).
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{}", self.bucket, self.prefix, key)
    }

    /// Runs one request with retries, counting every attempt.
    fn run<T, F, Fut>(&self, op: Op, key: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let url = self.url(key);
        let span = tracing::debug_span!("s3", op = op.name(), url = %url).entered();
        let started = std::time::Instant::now();
        let result = self.rt.block_on(retry::run(self.max_attempts, |attempt| {
            self.counts.count(op, attempt);
            f()
        }));
        let took = started.elapsed();
        if took >= SLOW_REQUEST {
            tracing::debug!("slow request: {:.1} s", took.as_secs_f64());
        } else {
            tracing::trace!("{} ms", took.as_millis());
        }
        drop(span);
        result.map_err(|failure| match failure {
            Failure::Missing => Error::Missing {
                key: key.to_string(),
            },
            Failure::Permanent { message, attempts } | Failure::GaveUp { message, attempts } => {
                let tries = if attempts == 1 {
                    String::new()
                } else {
                    format!(" (after {attempts} attempts)")
                };
                store_error(op.name(), &url, format!("{message}{tries}"))
            }
        })
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn put_plain(&self, key: &str, body: &bytes::Bytes, conditional: bool) -> Result<PutOutcome> {
        let object = self.object_key(key);
        let attempts = AtomicU32::new(0);
        // The server checks the body against this and refuses a body
        // damaged on the way (retried); over plain http nothing else would.
        let md5 = content_md5(body);
        let bytes = body;
        let outcome = self.run(Op::Put, key, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&object)
                .content_length(bytes.len() as i64)
                .content_md5(md5.clone())
                .body(ByteStream::from(body.clone()));
            if conditional {
                req = req.if_none_match("*");
            }
            async move {
                match req.send().await {
                    Ok(_) => Attempt::Done(PutOutcome::Written),
                    Err(e) => match retry::classify(&e) {
                        // The object exists: the condition held it back.
                        retry::Class::PreconditionFailed if conditional => {
                            Attempt::Done(PutOutcome::Exists)
                        }
                        retry::Class::NotImplemented if conditional => {
                            Attempt::Done(PutOutcome::Unsupported)
                        }
                        other => other.into_attempt(),
                    },
                }
            }
        })?;
        if outcome == PutOutcome::Exists && attempts.load(Ordering::Relaxed) > 1 {
            return Ok(PutOutcome::ExistsAfterRetry);
        }
        Ok(outcome)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutOutcome {
    Written,
    Exists,
    /// The object exists, but an earlier attempt of this same PUT failed
    /// in a way (a cut connection, a 5xx from a proxy) that may have hidden
    /// its success: the object may be our own write.
    ExistsAfterRetry,
    /// The server does not implement `If-None-Match` on PUT.
    Unsupported,
}

/// A response body of exactly `declared` bytes, read straight into one
/// buffer of that size (no aggregate, no second copy: with tens of requests
/// in flight, copies are what memory goes to). A body cut short or longer
/// than declared is a transient failure: the request is made again.
async fn read_body(mut body: ByteStream, declared: u64) -> Attempt<Vec<u8>> {
    let mut bytes = Vec::with_capacity(declared as usize);
    loop {
        match body.next().await {
            Some(Ok(part)) if bytes.len() + part.len() <= declared as usize => {
                bytes.extend_from_slice(&part)
            }
            Some(Ok(_)) => {
                return Attempt::Retry(format!("body longer than its Content-Length ({declared})"))
            }
            Some(Err(e)) => return Attempt::Retry(format!("reading the body: {e}")),
            None => break,
        }
    }
    if bytes.len() as u64 != declared {
        Attempt::Retry(format!(
            "body of {} bytes, Content-Length said {declared}",
            bytes.len()
        ))
    } else {
        Attempt::Done(bytes)
    }
}

/// The base64 MD5 of a body, for `Content-MD5`.
fn content_md5(bytes: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

fn store_error(op: &'static str, url: &str, message: String) -> Error {
    Error::Store {
        op,
        key: url.to_string(),
        cause: std::io::Error::other(message),
    }
}

impl S3Store {
    /// After a retried conditional PUT met an existing object: whether that
    /// object is the one this PUT wrote. Without this check a manifest whose
    /// first PUT landed but whose response was lost would be reported as a
    /// snapshot that "already exists". Equal bytes are taken as our own:
    /// every key blocksnap writes names its content, so another writer with
    /// the same bytes wrote the same object.
    fn is_own_write(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        match self.get(key, bytes.len() as u64) {
            Ok(stored) => Ok(stored == bytes),
            Err(Error::Format { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl S3Store {
    /// Bytes `offset..offset + len` of the object `key` (fewer at its
    /// end): for reading large objects (an archive to import) a part at a
    /// time. A body of another length than the server declared is retried.
    pub fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let object = self.object_key(key);
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        self.run(Op::Get, key, || {
            let req = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&object)
                .range(&range);
            async move {
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => return retry::classify(&e).into_attempt(),
                };
                let declared = resp.content_length().unwrap_or(-1);
                if declared < 0 || declared as u64 > len {
                    return Attempt::Retry(format!(
                        "a range of {len} bytes answered with Content-Length {declared}"
                    ));
                }
                let declared = declared as u64;
                read_body(resp.body, declared).await
            }
        })
    }
}

impl Store for S3Store {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        let object = self.object_key(key);
        let too_large = std::sync::Mutex::new(None);
        let got = self.run(Op::Get, key, || {
            let req = self.client.get_object().bucket(&self.bucket).key(&object);
            let too_large = &too_large;
            async move {
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => return retry::classify(&e).into_attempt(),
                };
                let declared = resp.content_length().unwrap_or(-1);
                if declared < 0 {
                    return Attempt::Retry("response without a Content-Length".into());
                }
                let declared = declared as u64;
                if declared > max_len {
                    *too_large.lock().expect("lock") = Some(declared);
                    return Attempt::Done(Vec::new());
                }
                read_body(resp.body, declared).await
            }
        })?;
        if let Some(len) = too_large.into_inner().expect("lock") {
            return Err(blocksnap::store::too_large(key, len, max_len));
        }
        Ok(got)
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.put_owned(key, bytes.to_vec())
    }

    /// The body is shared by every attempt, never copied.
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        let bytes = bytes::Bytes::from(bytes);
        let bytes = &bytes;
        if !self.no_conditional_put.load(Ordering::Relaxed) {
            match self.put_plain(key, bytes, true)? {
                PutOutcome::Written => return Ok(true),
                PutOutcome::Exists => return Ok(false),
                PutOutcome::ExistsAfterRetry => return self.is_own_write(key, bytes),
                PutOutcome::Unsupported => self.no_conditional_put.store(true, Ordering::Relaxed),
            }
        }
        // A server without conditional writes: check, then write. Two
        // writers racing here may both write; see FORMAT.md for why that
        // is harmless for every key blocksnap writes.
        if self.size(key)?.is_some() {
            return Ok(false);
        }
        Ok(self.put_plain(key, bytes, false)? == PutOutcome::Written)
    }

    fn put_replace(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.put_plain(key, &body, false).map(|_| ())
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let object = self.object_key(key);
        let r = self.run(Op::Head, key, || {
            let req = self.client.head_object().bucket(&self.bucket).key(&object);
            async move {
                match req.send().await {
                    Ok(r) => Attempt::Done(Some(r.content_length().unwrap_or(0).max(0) as u64)),
                    Err(e) => match retry::classify(&e) {
                        retry::Class::Missing => Attempt::Done(None),
                        other => other.into_attempt(),
                    },
                }
            }
        });
        r
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.object_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.run(Op::List, prefix, || {
                let req = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.clone());
                async move {
                    match req.send().await {
                        Ok(r) => Attempt::Done(r),
                        Err(e) => retry::classify(&e).into_attempt(),
                    }
                }
            })?;
            for obj in page.contents() {
                if let Some(k) = obj.key() {
                    if let Some(rel) = k.strip_prefix(&self.prefix) {
                        let modified = obj
                            .last_modified()
                            .map_or(0, |t| t.as_nanos().clamp(0, u64::MAX as i128) as u64);
                        out.push(ObjectInfo {
                            key: rel.to_string(),
                            size: obj.size().unwrap_or(0).max(0) as u64,
                            modified_unix_ns: modified,
                        });
                    }
                }
            }
            // A page that does not say whether more follow is not taken as
            // the end: a listing cut short would make objects look absent
            // (and a prune delete what is still needed).
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(false), _) => break,
                (Some(true), Some(t)) if token.as_deref() != Some(t) => token = Some(t.to_string()),
                (truncated, t) => {
                    return Err(store_error(
                        "list",
                        &self.url(prefix),
                        format!(
                            "the server's listing page is ambiguous (IsTruncated {truncated:?}, continuation token {t:?}): refusing to take it as complete"
                        ),
                    ))
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// `DeleteObjects`, 1 000 keys a request; a key the server could not
    /// delete (other than one already gone) fails the batch, which is
    /// retried like any request.
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.object_key(k))
                        .build()
                        .expect("a key is set")
                })
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            self.run(Op::Delete, &batch[0], || {
                let req = self
                    .client
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(delete.clone());
                async move {
                    match req.send().await {
                        Ok(out) => {
                            let failed: Vec<String> = out
                                .errors()
                                .iter()
                                .filter(|e| e.code() != Some("NoSuchKey"))
                                .map(|e| {
                                    format!(
                                        "{}: {} {}",
                                        e.key().unwrap_or("?"),
                                        e.code().unwrap_or("?"),
                                        e.message().unwrap_or("")
                                    )
                                })
                                .collect();
                            if failed.is_empty() {
                                Attempt::Done(())
                            } else {
                                Attempt::Retry(format!(
                                    "{} of {} deletions refused: {}",
                                    failed.len(),
                                    batch.len(),
                                    failed[0]
                                ))
                            }
                        }
                        Err(e) => retry::classify(&e).into_attempt(),
                    }
                }
            })?;
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        let object = self.object_key(key);
        self.run(Op::Delete, key, || {
            let req = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&object);
            async move {
                match req.send().await {
                    Ok(_) => Attempt::Done(()),
                    Err(e) => match retry::classify(&e) {
                        retry::Class::Missing => Attempt::Done(()),
                        other => other.into_attempt(),
                    },
                }
            }
        })
    }

    /// A successful PUT is durable in S3: nothing to wait for.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn request_counts(&self) -> Option<Counts> {
        let c = &self.counts;
        Some(Counts {
            get: c.get.load(Ordering::Relaxed),
            put: c.put.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        })
    }
}

/// How long one attempt may take before it is abandoned and retried: a
/// 4 MiB chunk at 1 Mbit/s still fits.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
