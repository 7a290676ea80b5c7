//! A store decorator that counts requests by kind, so that a command can
//! report what it asked of the store (and tests can prove what it did not).
//! A store that counts its own network requests (S3, retries included)
//! reports those instead, through [`Store::request_counts`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{ObjectInfo, Store};
use crate::error::Result;

pub struct CountingStore<S> {
    inner: S,
    gets: AtomicU64,
    puts: AtomicU64,
    sizes: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub get: u64,
    pub put: u64,
    /// Existence and size queries (HEAD on S3).
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    /// Of the above, attempts that repeated a failed one.
    pub retries: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.get + self.put + self.head + self.list + self.delete
    }

    /// The requests made between two readings.
    pub fn since(&self, earlier: Option<Counts>) -> Counts {
        let earlier = earlier.unwrap_or_default();
        Counts {
            get: self.get - earlier.get,
            put: self.put - earlier.put,
            head: self.head - earlier.head,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
            retries: self.retries - earlier.retries,
        }
    }
}

impl<S: Store> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            sizes: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            get: self.gets.load(Ordering::Relaxed),
            put: self.puts.load(Ordering::Relaxed),
            head: self.sizes.load(Ordering::Relaxed),
            list: self.lists.load(Ordering::Relaxed),
            delete: self.deletes.load(Ordering::Relaxed),
            retries: 0,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> Store for CountingStore<S> {
    super::forward_store!(inner: put_replace, lists_chunks, published_index, remove_stale_writes, flush, location, parallelism);

    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_if_absent(key, bytes)
    }
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_owned(key, bytes)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.sizes.fetch_add(1, Ordering::Relaxed);
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key)
    }
    /// One request per key: what the inner store makes of them is its own
    /// count, when it keeps one.
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.deletes.fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.inner.delete_many(keys)
    }
    /// The inner store's own count when it keeps one (real network
    /// requests, retries included), else the operations seen here.
    fn request_counts(&self) -> Option<Counts> {
        self.inner.request_counts().or_else(|| Some(self.counts()))
    }
}
