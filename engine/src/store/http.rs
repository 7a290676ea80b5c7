//! A repository read from a static web server or CDN (`https://…`,
//! `http://…`): every object is a plain GET of its key under the base URL;
//! a HEAD gives a size. Nothing is written. Listings come from the index
//! the repository publishes (FORMAT.md §12), fetched once per run; chunks
//! are never listed (`lists_chunks` is false): readers ask for each chunk
//! they need.
//!
//! Everything a mirror answers is untrusted: a body longer than the object
//! may be is refused before it is read, a body of another length than the
//! server declared is retried, and the engine checks every object against
//! its name (chunk ids, manifest ids, signatures) as it does for any store.
//! Transient failures (connection errors, 5xx, 429, cut bodies) are retried
//! with backoff; 404 and 410 mean missing.

use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use super::{ObjectInfo, Store};
use crate::error::{Error, Result};
use crate::format::index::{Index, INDEX_KEY};
use crate::format::limits;

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 6;
/// Requests in flight by default: a CDN serves many at once.
const PARALLELISM: usize = 32;

pub struct HttpStore {
    /// The base URL, ending with `/`.
    base: String,
    agent: ureq::Agent,
    /// The index (decoded, and its bytes), fetched once.
    index: OnceLock<std::result::Result<(Index, Vec<u8>), String>>,
    parallelism: usize,
    backoff: Duration,
}

/// One attempt's outcome.
enum Attempt<T> {
    Done(T),
    Missing,
    Retry(String),
    Fail(String),
}

impl HttpStore {
    /// The mirror at `url` (`http://` or `https://`); `parallelism` 0: 32.
    pub fn open(url: &str, parallelism: usize) -> Result<HttpStore> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::Refused(format!(
                "{url}: a mirror's address starts with https:// or http://"
            )));
        }
        let base = format!("{}/", url.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .max_redirects(5)
            .user_agent(concat!("blocksnap/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(HttpStore {
            base,
            agent,
            index: OnceLock::new(),
            parallelism: if parallelism == 0 {
                PARALLELISM
            } else {
                parallelism
            },
            backoff: Duration::from_millis(100),
        })
    }

    /// Shorter waits between attempts (tests).
    pub fn with_backoff(mut self, backoff: Duration) -> HttpStore {
        self.backoff = backoff;
        self
    }

    fn url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    fn run<T>(&self, op: &'static str, key: &str, f: impl Fn() -> Attempt<T>) -> Result<T> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                crate::sys::interrupt::check()?;
                std::thread::sleep(self.backoff * (1 << (attempt - 1).min(6)));
            }
            match f() {
                Attempt::Done(v) => return Ok(v),
                Attempt::Missing => {
                    return Err(Error::Missing {
                        key: key.to_string(),
                    })
                }
                Attempt::Fail(m) => return Err(store_error(op, &self.url(key), m)),
                Attempt::Retry(m) => {
                    tracing::debug!("{op} {}: {m}; retrying", self.url(key));
                    last = m;
                }
            }
        }
        Err(store_error(
            op,
            &self.url(key),
            format!("{last} (after {ATTEMPTS} attempts)"),
        ))
    }

    /// The index the mirror publishes, fetched once.
    fn index(&self) -> Result<&Index> {
        let got = self.index.get_or_init(|| {
            let bytes = match self.get(INDEX_KEY, limits::MAX_INDEX_BYTES) {
                Ok(b) => b,
                Err(Error::Missing { .. }) => {
                    return Err(format!(
                        "{} publishes no index ({}): a static mirror is read through the \
                         index its repository publishes; run `blocksnap index` on the repository \
                         once, and every writer keeps it current",
                        self.base,
                        self.url(INDEX_KEY)
                    ))
                }
                Err(e) => return Err(e.to_string()),
            };
            Index::decode(&bytes)
                .map(|i| (i, bytes))
                .map_err(|e| format!("{}: {e}", self.url(INDEX_KEY)))
        });
        got.as_ref()
            .map(|(i, _)| i)
            .map_err(|m| Error::Refused(m.clone()))
    }
}

fn store_error(op: &'static str, url: &str, message: String) -> Error {
    Error::Store {
        op,
        key: url.to_string(),
        cause: std::io::Error::other(message),
    }
}

fn classify(status: u16) -> Option<Attempt<()>> {
    match status {
        200..=299 => None,
        404 | 410 => Some(Attempt::Missing),
        408 | 429 | 500..=599 => Some(Attempt::Retry(format!("HTTP {status}"))),
        403 => Some(Attempt::Fail(
            "HTTP 403 forbidden (a CDN in front of a private bucket answers 403 for a \
             missing object too)"
                .into(),
        )),
        s => Some(Attempt::Fail(format!("HTTP {s}"))),
    }
}

fn declared_length(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    resp.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Store for HttpStore {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        let url = self.url(key);
        let too_large = std::cell::Cell::new(None);
        let got = self.run("get", key, || {
            let mut resp = match self.agent.get(&url).call() {
                Ok(r) => r,
                Err(e) => return Attempt::Retry(e.to_string()),
            };
            match classify(resp.status().as_u16()) {
                Some(Attempt::Missing) => return Attempt::Missing,
                Some(Attempt::Retry(m)) => return Attempt::Retry(m),
                Some(Attempt::Fail(m)) => return Attempt::Fail(m),
                _ => {}
            }
            let declared = declared_length(&resp);
            if let Some(len) = declared.filter(|&l| l > max_len) {
                too_large.set(Some(len));
                return Attempt::Done(Vec::new());
            }
            // Read at most one byte past the limit: a body without a
            // length (chunked) cannot make us allocate without bound.
            let mut body = Vec::with_capacity(declared.unwrap_or(0).min(max_len) as usize);
            let read = resp
                .body_mut()
                .with_config()
                .limit(max_len.saturating_add(1))
                .reader()
                .read_to_end(&mut body);
            if let Err(e) = read {
                return Attempt::Retry(format!("reading the body: {e}"));
            }
            if body.len() as u64 > max_len {
                too_large.set(Some(body.len() as u64));
                return Attempt::Done(Vec::new());
            }
            match declared {
                Some(len) if len != body.len() as u64 => Attempt::Retry(format!(
                    "body of {} bytes, Content-Length said {len}",
                    body.len()
                )),
                _ => Attempt::Done(body),
            }
        })?;
        if let Some(len) = too_large.get() {
            return Err(super::too_large(key, len, max_len));
        }
        Ok(got)
    }

    fn put_if_absent(&self, key: &str, _bytes: &[u8]) -> Result<bool> {
        Err(read_only(&self.base, key))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let url = self.url(key);
        self.run("head", key, || {
            let resp = match self.agent.head(&url).call() {
                Ok(r) => r,
                Err(e) => return Attempt::Retry(e.to_string()),
            };
            match classify(resp.status().as_u16()) {
                Some(Attempt::Missing) => return Attempt::Done(None),
                Some(Attempt::Retry(m)) => return Attempt::Retry(m),
                Some(Attempt::Fail(m)) => return Attempt::Fail(m),
                _ => {}
            }
            match declared_length(&resp) {
                Some(len) => Attempt::Done(Some(len)),
                None => Attempt::Retry("HEAD answered without a Content-Length".into()),
            }
        })
    }

    fn lists_chunks(&self) -> bool {
        false
    }

    fn published_index(&self) -> Option<Result<Vec<u8>>> {
        Some(self.index().map(|_| {
            let (_, bytes) = self
                .index
                .get()
                .and_then(|r| r.as_ref().ok())
                .expect("fetched");
            bytes.clone()
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if prefix.is_empty()
            || crate::format::layout::CHUNKS_PREFIX.starts_with(prefix)
            || prefix.starts_with(crate::format::layout::CHUNKS_PREFIX)
        {
            return Err(Error::Refused(format!(
                "{}: a static mirror cannot list chunks; this command needs a listing \
                 (run it against the repository itself)",
                self.base
            )));
        }
        Ok(self
            .index()?
            .under(prefix)
            .map(|o| ObjectInfo {
                key: o.key.clone(),
                size: o.size,
                modified_unix_ns: o.modified_unix_ns,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        Err(read_only(&self.base, key))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn location(&self) -> String {
        self.base.trim_end_matches('/').to_string()
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }
}

fn read_only(base: &str, key: &str) -> Error {
    Error::Refused(format!(
        "{base} is a read-only mirror: cannot write {key} (write to the repository itself)"
    ))
}
