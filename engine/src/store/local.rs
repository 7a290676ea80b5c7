//! A repository in a local directory: one file per object, at its key.
//!
//! A write goes to `tmp/`, is fsynced, then hard-linked to its key. The link
//! fails when the key exists, which gives `put_if_absent` without a race
//! between hosts sharing the directory (NFS aside), and a crash can never
//! leave a partial object under a real key. `flush` fsyncs the directories
//! that gained entries, so the links themselves survive a power cut before
//! the manifest that names them is written.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Store;
use crate::error::{Error, Result};

pub struct LocalStore {
    root: PathBuf,
    tmp_counter: AtomicU64,
    dirty_dirs: Mutex<HashSet<PathBuf>>,
}

const TMP_DIR: &str = "tmp";

impl LocalStore {
    /// Opens (without creating) the directory `root`.
    pub fn open(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            tmp_counter: AtomicU64::new(0),
            dirty_dirs: Mutex::new(HashSet::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn store_err<'k>(op: &'static str, key: &'k str) -> impl FnOnce(io::Error) -> Error + 'k {
        move |source| Error::Store {
            op,
            key: key.to_string(),
            source,
        }
    }

    fn write_tmp(&self, key: &str, bytes: &[u8]) -> Result<PathBuf> {
        let tmp_dir = self.root.join(TMP_DIR);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("{}-{n}", std::process::id()));
        let write = |tmp: &Path| -> io::Result<()> {
            let mut f = File::create(tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        match write(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&tmp_dir).map_err(Self::store_err("create tmp dir for", key))?;
                write(&tmp)
            }
            other => other,
        }
        .map_err(Self::store_err("write", key))?;
        Ok(tmp)
    }
}

impl Store for LocalStore {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        let read = || -> io::Result<std::result::Result<Vec<u8>, u64>> {
            let f = File::open(self.path(key))?;
            let len = f.metadata()?.len();
            if len > max_len {
                return Ok(Err(len));
            }
            let mut out = Vec::with_capacity(len as usize);
            // `take` keeps a file that grows under us within the bound.
            f.take(max_len + 1).read_to_end(&mut out)?;
            Ok(Ok(out))
        };
        let bytes = read().map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::Missing {
                key: key.to_string(),
            },
            _ => Error::Store {
                op: "read",
                key: key.to_string(),
                source,
            },
        })?;
        match bytes {
            Ok(b) if b.len() as u64 <= max_len => Ok(b),
            Ok(b) => Err(super::too_large(key, b.len() as u64, max_len)),
            Err(len) => Err(super::too_large(key, len, max_len)),
        }
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let dest = self.path(key);
        if dest.exists() {
            return Ok(false);
        }
        let tmp = self.write_tmp(key, bytes)?;
        let parent = dest.parent().expect("keys have a parent").to_path_buf();
        let mut linked = fs::hard_link(&tmp, &dest);
        if matches!(&linked, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            fs::create_dir_all(&parent).map_err(Self::store_err("create directory for", key))?;
            // New directories are entries in their parents, up to the root.
            let mut dirty = self.dirty_dirs.lock().expect("dirty dirs lock");
            for dir in parent.ancestors().skip(1) {
                dirty.insert(dir.to_path_buf());
                if dir == self.root {
                    break;
                }
            }
            drop(dirty);
            linked = fs::hard_link(&tmp, &dest);
        }
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                self.dirty_dirs
                    .lock()
                    .expect("dirty dirs lock")
                    .insert(parent);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Self::store_err("link", key)(e)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::store_err("stat", key)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // Walk the deepest directory the prefix names in full.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = self.root.join(dir_part);
        if !start.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(&start).sort_by_file_name() {
            let entry = entry.map_err(|e| Error::Store {
                op: "list",
                key: prefix.to_string(),
                source: e.into(),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .expect("walk stays under the root");
            let Some(key) = rel
                .to_str()
                .map(|k| k.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            if key.starts_with(prefix) && !key.starts_with("tmp/") {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((key, size));
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => {
                if let Some(parent) = self.path(key).parent() {
                    self.dirty_dirs
                        .lock()
                        .expect("dirty dirs lock")
                        .insert(parent.to_path_buf());
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::store_err("delete", key)(e)),
        }
    }

    fn flush(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = self
            .dirty_dirs
            .lock()
            .expect("dirty dirs lock")
            .drain()
            .collect();
        for dir in dirs {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io("fsync directory", &dir))?;
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_never_overwrites_and_lists_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path());
        assert!(store.put_if_absent("snapshots/b", b"one").unwrap());
        assert!(!store.put_if_absent("snapshots/b", b"two").unwrap());
        assert_eq!(store.get("snapshots/b", 10).unwrap(), b"one");
        assert!(store.put_if_absent("snapshots/a", b"x").unwrap());
        assert!(store.put_if_absent("chunks/ab/cd", b"yy").unwrap());
        store.flush().unwrap();
        let keys: Vec<_> = store.list("snapshots/").unwrap();
        assert_eq!(
            keys,
            vec![("snapshots/a".into(), 1), ("snapshots/b".into(), 3)]
        );
        assert_eq!(store.size("chunks/ab/cd").unwrap(), Some(2));
        assert!(store.get("nope", 10).unwrap_err().is_missing());
        assert!(matches!(
            store.get("snapshots/b", 2),
            Err(Error::Format {
                source: crate::format::FormatError::Limit { .. },
                ..
            })
        ));
        store.delete("chunks/ab/cd").unwrap();
        assert_eq!(store.size("chunks/ab/cd").unwrap(), None);
        assert!(fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }
}
