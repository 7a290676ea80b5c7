//! An in-memory store: fast tests of the engine's logic and fault injection,
//! alongside (never instead of) tests on the real local and S3 stores.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Store;
use crate::error::{Error, Result};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Replaces an object's bytes, bypassing the no-overwrite rule: for
    /// tests that damage a repository.
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.objects.lock().expect("memory store lock");
        if let Some(bytes) = objects.get_mut(key) {
            f(bytes);
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        let objects = self.objects.lock().expect("memory store lock");
        let bytes = objects.get(key).ok_or_else(|| Error::Missing {
            key: key.to_string(),
        })?;
        if bytes.len() as u64 > max_len {
            return Err(super::too_large(key, bytes.len() as u64, max_len));
        }
        Ok(bytes.clone())
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let mut objects = self.objects.lock().expect("memory store lock");
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.to_string(), bytes.to_vec());
        Ok(true)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects.get(key).map(|b| b.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.len() as u64))
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
