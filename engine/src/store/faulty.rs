//! A fault-injecting store decorator: fails every operation of a kind after
//! a budget of successful ones, as a crash or a lost connection would. Tests
//! use it to interrupt snapshots and restores at a chosen point.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};

use super::Store;
use crate::error::{Error, Result};

pub struct FaultyStore<S> {
    inner: S,
    puts_left: AtomicI64,
    gets_left: AtomicI64,
}

impl<S: Store> FaultyStore<S> {
    /// Lets `puts` chunk/manifest writes and `gets` reads succeed, then
    /// fails the rest (`None`: never fail that kind).
    pub fn new(inner: S, puts: Option<u64>, gets: Option<u64>) -> Self {
        let budget = |n: Option<u64>| AtomicI64::new(n.map_or(i64::MAX, |n| n as i64));
        FaultyStore {
            inner,
            puts_left: budget(puts),
            gets_left: budget(gets),
        }
    }

    fn spend(counter: &AtomicI64, op: &'static str, key: &str) -> Result<()> {
        if counter.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(Error::Store {
                op,
                key: key.to_string(),
                cause: io::Error::new(io::ErrorKind::ConnectionReset, "injected fault"),
            });
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    super::forward_store!(inner: put_replace, lists_chunks, published_index, size, list, delete, delete_many, remove_stale_writes, flush, location, parallelism, request_counts);

    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        Self::spend(&self.gets_left, "get", key)?;
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        Self::spend(&self.puts_left, "put", key)?;
        self.inner.put_if_absent(key, bytes)
    }
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        Self::spend(&self.puts_left, "put", key)?;
        self.inner.put_owned(key, bytes)
    }
}
