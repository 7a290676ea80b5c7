//! An in-memory store: fast tests of the engine's logic and fault injection,
//! alongside (never instead of) tests on the real local and S3 stores.
//!
//! Its clock is the system clock plus an offset a test can move forward
//! ([`MemoryStore::advance_clock`]), so that protocols with time margins
//! (prune's grace periods) are tested without waiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{ObjectInfo, Store};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct MemoryStore {
    /// Key → (bytes, modified).
    objects: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    clock_offset_ns: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Replaces an object's bytes, bypassing the no-overwrite rule: for
    /// tests that damage a repository.
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.objects.lock().expect("memory store lock");
        if let Some((bytes, _)) = objects.get_mut(key) {
            f(bytes);
        }
    }

    /// Moves the store's clock forward: later writes are stamped that much
    /// later than the system clock says.
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ns
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// The store's clock now.
    pub fn now(&self) -> u64 {
        crate::sys::host::now_unix_ns() + self.clock_offset_ns.load(Ordering::SeqCst)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        let objects = self.objects.lock().expect("memory store lock");
        let (bytes, _) = objects.get(key).ok_or_else(|| Error::Missing {
            key: key.to_string(),
        })?;
        if bytes.len() as u64 > max_len {
            return Err(super::too_large(key, bytes.len() as u64, max_len));
        }
        Ok(bytes.clone())
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let now = self.now();
        let mut objects = self.objects.lock().expect("memory store lock");
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.to_string(), (bytes.to_vec(), now));
        Ok(true)
    }

    fn put_replace(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let now = self.now();
        let mut objects = self.objects.lock().expect("memory store lock");
        objects.insert(key.to_string(), (bytes.to_vec(), now));
        Ok(())
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects.get(key).map(|(b, _)| b.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, t))| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
                modified_unix_ns: *t,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().expect("memory store lock").remove(key);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn location(&self) -> String {
        "memory".to_string()
    }
}
