//! A repository in a local directory: one file per object, at its key.
//!
//! A write goes to a new file in `tmp/` with a random name, created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` (no existing file, no planted symlink
//! and no other writer's temp file can be opened by mistake, whatever the
//! PID namespace), is fsynced, then hard-linked to its key. The link fails
//! when the key exists, which gives `put_if_absent` without a race between
//! hosts sharing the directory (NFS aside), and a crash can never leave a
//! partial object under a real key.
//!
//! Every path below the root is walked one component at a time without
//! following symlinks ([`crate::sys::fsx`]): a symlink planted in a shared
//! repository is an error, never a way out of it.
//!
//! `flush` fsyncs every directory whose entries this handle wrote *or
//! relied on*: a put that found its key taken, a size query that found an
//! object, a listing. A chunk linked by another writer that crashed before
//! its own flush is thus made durable by whoever next commits a manifest
//! naming it (FORMAT.md §10).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::{ObjectInfo, Store};
use crate::error::{Error, Result};
use crate::sys::fsx::{DirFd, EntryType};

pub struct LocalStore {
    root: PathBuf,
    dir: OnceLock<DirFd>,
    tmp_counter: AtomicU64,
    /// Directories (relative to the root, "" for the root) to fsync at the
    /// next flush.
    dirty_dirs: Mutex<HashSet<String>>,
    /// The directories the last flush made durable, sorted (for tests and
    /// debugging).
    synced: Mutex<Vec<String>>,
}

/// Where writes in progress live; never listed, never an object.
pub const TMP_DIR: &str = "tmp";

impl LocalStore {
    /// Opens (without creating) the directory `root`.
    pub fn open(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            dir: OnceLock::new(),
            tmp_counter: AtomicU64::new(0),
            dirty_dirs: Mutex::new(HashSet::new()),
            synced: Mutex::new(Vec::new()),
        }
    }

    /// The directories the last `flush` made durable.
    pub fn synced_dirs(&self) -> Vec<String> {
        self.synced.lock().expect("synced lock").clone()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn store_err<'k>(op: &'static str, key: &'k str) -> impl FnOnce(io::Error) -> Error + 'k {
        move |cause| Error::Store {
            op,
            key: key.to_string(),
            cause,
        }
    }

    /// The root directory (opened once; the operator's path is resolved the
    /// ordinary way, everything below it is not).
    fn root_dir(&self) -> io::Result<&DirFd> {
        if let Some(d) = self.dir.get() {
            return Ok(d);
        }
        let d = DirFd::open(&self.root)?;
        Ok(self.dir.get_or_init(|| d))
    }

    /// The directory part of a key, entered without following links.
    fn dir_of(&self, dir: &str) -> io::Result<DirFd> {
        let root = self.root_dir()?;
        if dir.is_empty() {
            root.try_clone()
        } else {
            root.open_path(dir)
        }
    }

    /// The directory part of a key, created as needed (each new directory
    /// is an entry its parent must make durable).
    fn make_dir(&self, dir: &str) -> io::Result<DirFd> {
        let mut d = self.root_dir()?.try_clone()?;
        let mut rel = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            match d.open_dir(part) {
                Ok(next) => d = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match d.create_dir(part) {
                        Ok(()) => {
                            self.dirty(&rel);
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                    d = d.open_dir(part)?;
                }
                Err(e) => return Err(e),
            }
            rel = if rel.is_empty() {
                part.to_string()
            } else {
                format!("{rel}/{part}")
            };
        }
        Ok(d)
    }

    fn dirty(&self, dir: &str) {
        self.dirty_dirs
            .lock()
            .expect("dirty dirs lock")
            .insert(dir.to_string());
    }

    /// A name no other writer, in any PID namespace, will pick: this
    /// process's random hasher keys (from the OS), the time and a counter.
    fn tmp_name(&self) -> String {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let seed = (std::process::id(), crate::sys::host::now_unix_ns(), n);
        let a = RandomState::new().hash_one(seed);
        let b = RandomState::new().hash_one((seed, a));
        format!("{a:016x}{b:016x}")
    }

    /// Writes `bytes` to a new temp file, durable; returns its name.
    fn write_tmp(&self, tmp: &DirFd, key: &str, bytes: &[u8]) -> Result<String> {
        loop {
            let name = self.tmp_name();
            let mut f = match tmp.create_file(&name, 0o644) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Self::store_err("write", key)(e)),
            };
            let written = f.write_all(bytes).and_then(|_| {
                if crate::sys::testhook::skip("local-file-fsync") {
                    return Ok(());
                }
                f.sync_all()
            });
            if let Err(e) = written {
                let _ = tmp.unlink(&name);
                return Err(Self::store_err("write", key)(e));
            }
            return Ok(name);
        }
    }
}

fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// Whether a key lies in the temp directory, which holds writes in
/// progress and never an object (FORMAT.md §2).
fn in_tmp(key: &str) -> bool {
    key == TMP_DIR || key.starts_with("tmp/")
}

/// "Not there", as the contract means it: the name is absent, or a part of
/// the key that should be a directory is an object (`a/b` below `a`).
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

impl Store for LocalStore {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        if in_tmp(key) {
            return Err(Error::Missing {
                key: key.to_string(),
            });
        }
        let (dir, name) = split(key);
        let read = || -> io::Result<std::result::Result<Vec<u8>, u64>> {
            let f = self.dir_of(dir)?.open_file(name)?;
            let len = f.metadata()?.len();
            if len > max_len {
                return Ok(Err(len));
            }
            let mut out = Vec::with_capacity(len as usize);
            // `take` keeps a file that grows under us within the bound.
            f.take(max_len.saturating_add(1)).read_to_end(&mut out)?;
            Ok(Ok(out))
        };
        let bytes = read().map_err(|cause| match cause.kind() {
            _ if absent(&cause) => Error::Missing {
                key: key.to_string(),
            },
            _ => Error::Store {
                op: "read",
                key: key.to_string(),
                cause,
            },
        })?;
        match bytes {
            Ok(b) if b.len() as u64 <= max_len => Ok(b),
            Ok(b) => Err(super::too_large(key, b.len() as u64, max_len)),
            Err(len) => Err(super::too_large(key, len, max_len)),
        }
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let (dir, name) = split(key);
        if self.size(key)?.is_some() {
            return Ok(false);
        }
        let tmp = self
            .make_dir(TMP_DIR)
            .map_err(Self::store_err("create tmp dir for", key))?;
        let target = self
            .make_dir(dir)
            .map_err(Self::store_err("create directory for", key))?;
        // A temp file can vanish before it is linked: a prune removes temp
        // files a writer left for long (this one, if it was suspended
        // between writing and linking). The bytes are still here: write
        // them again.
        let mut attempts = 0;
        let linked = loop {
            let tmp_name = self.write_tmp(&tmp, key, bytes)?;
            let linked = tmp.link(&tmp_name, &target, name);
            let _ = tmp.unlink(&tmp_name);
            attempts += 1;
            match linked {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => continue,
                other => break other,
            }
        };
        self.dirty(dir);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Self::store_err("link", key)(e)),
        }
    }

    fn put_replace(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let (dir, name) = split(key);
        let tmp = self
            .make_dir(TMP_DIR)
            .map_err(Self::store_err("create tmp dir for", key))?;
        let target = self
            .make_dir(dir)
            .map_err(Self::store_err("create directory for", key))?;
        let tmp_name = self.write_tmp(&tmp, key, bytes)?;
        // The temp file is whole and synced: readers see the old object or
        // the new one, never a part.
        let renamed = tmp.rename(&tmp_name, &target, name, true);
        if renamed.is_err() {
            let _ = tmp.unlink(&tmp_name);
        }
        renamed.map_err(Self::store_err("replace", key))?;
        self.dirty(dir);
        Ok(())
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        if in_tmp(key) {
            return Ok(None);
        }
        let (dir, name) = split(key);
        let found = match self.dir_of(dir) {
            Ok(d) => d.stat(name),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
        .map_err(Self::store_err("stat", key))?;
        match found {
            None => Ok(None),
            Some(m) if m.kind == EntryType::File => {
                self.dirty(dir);
                Ok(Some(m.size))
            }
            Some(_) => Err(Self::store_err("stat", key)(io::Error::other(
                "not a regular file (a repository object is never a directory or a symlink)",
            ))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if prefix.starts_with("tmp/") {
            return Ok(Vec::new());
        }
        // Walk the deepest directory the prefix names in full.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = match self.dir_of(dir_part) {
            Ok(d) => d,
            Err(e) if absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(Self::store_err("list", prefix)(e)),
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            self.dirty(&rel);
            for name in dir.names().map_err(Self::store_err("list", prefix))? {
                let key = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                if key == TMP_DIR || !(key.starts_with(prefix) || prefix.starts_with(&key)) {
                    continue;
                }
                match dir.stat(&name).map_err(Self::store_err("list", prefix))? {
                    Some(m) if m.kind == EntryType::Dir => {
                        stack.push((
                            dir.open_dir(&name)
                                .map_err(Self::store_err("list", prefix))?,
                            key,
                        ));
                    }
                    Some(m) if m.kind == EntryType::File && key.starts_with(prefix) => {
                        out.push(ObjectInfo {
                            key,
                            size: m.size,
                            modified_unix_ns: m.mtime_ns.max(0) as u64,
                        })
                    }
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Temp files in `tmp/` older than `before_unix_ns` (by mtime): what a
    /// writer that crashed between writing and linking left.
    fn remove_stale_writes(&self, before_unix_ns: u64) -> Result<(u64, u64)> {
        let tmp = match self.dir_of(TMP_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(Self::store_err("list", TMP_DIR)(e)),
        };
        let (mut files, mut bytes) = (0, 0);
        for name in tmp.names().map_err(Self::store_err("list", TMP_DIR))? {
            let Some(m) = tmp.stat(&name).map_err(Self::store_err("stat", TMP_DIR))? else {
                continue;
            };
            if m.kind == EntryType::File && (m.mtime_ns.max(0) as u64) < before_unix_ns {
                tmp.unlink(&name)
                    .map_err(Self::store_err("delete", TMP_DIR))?;
                files += 1;
                bytes += m.size;
            }
        }
        self.dirty(TMP_DIR);
        Ok((files, bytes))
    }

    fn delete(&self, key: &str) -> Result<()> {
        if in_tmp(key) {
            return Ok(());
        }
        let (dir, name) = split(key);
        match self.dir_of(dir) {
            Ok(d) => match d.unlink(name) {
                Ok(true) => {
                    self.dirty(dir);
                    Ok(())
                }
                Ok(false) => Ok(()),
                // A directory (a key's prefix) is no object: nothing to
                // delete.
                Err(e) if absent(&e) || e.raw_os_error() == Some(libc::EISDIR) => Ok(()),
                Err(e) => Err(Self::store_err("delete", key)(e)),
            },
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(Self::store_err("delete", key)(e)),
        }
    }

    fn flush(&self) -> Result<()> {
        let mut dirs: Vec<String> = self
            .dirty_dirs
            .lock()
            .expect("dirty dirs lock")
            .drain()
            .collect();
        dirs.sort();
        *self.synced.lock().expect("synced lock") = dirs.clone();
        for dir in dirs {
            if crate::sys::testhook::skip("local-dir-fsync") {
                continue;
            }
            let shown = self.root.join(&dir);
            match self.dir_of(&dir) {
                Ok(d) => d.sync().map_err(Error::io("fsync directory", &shown))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("open directory", &shown)(e)),
            }
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
        let keys: Vec<(String, u64)> = keys.into_iter().map(|o| (o.key, o.size)).collect();
        assert_eq!(
            keys,
            vec![("snapshots/a".into(), 1), ("snapshots/b".into(), 3)]
        );
        assert_eq!(store.list("chunks/").unwrap().len(), 1);
        assert_eq!(store.size("chunks/ab/cd").unwrap(), Some(2));
        assert!(store.get("nope", 10).unwrap_err().is_missing());
        assert!(matches!(
            store.get("snapshots/b", 2),
            Err(Error::Format {
                cause: crate::format::FormatError::Limit { .. },
                ..
            })
        ));
        store.delete("chunks/ab/cd").unwrap();
        assert_eq!(store.size("chunks/ab/cd").unwrap(), None);
        assert!(std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    /// Before temp names were random, two writers with the same pid (two
    /// containers, each blocksnap as PID 1, sharing a bind-mounted
    /// repository; or two handles in one process, as here) wrote the same
    /// `tmp/<pid>-<n>` and could publish each other's bytes under the wrong
    /// key; and a symlink planted at the predictable name made a writer
    /// write through it.
    #[test]
    fn writers_with_one_pid_never_share_a_temp_file_or_follow_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::create_dir_all(dir.path().join("repo/tmp")).unwrap();
        for n in 0..64 {
            let planted = dir
                .path()
                .join(format!("repo/tmp/{}-{n}", std::process::id()));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        let a = LocalStore::open(dir.path().join("repo"));
        let b = LocalStore::open(dir.path().join("repo"));
        std::thread::scope(|s| {
            for (store, tag) in [(&a, "a"), (&b, "b")] {
                s.spawn(move || {
                    for i in 0..200 {
                        let key = format!("chunks/{tag}/{i}");
                        let bytes = format!("{tag}{i}").repeat(1000);
                        assert!(store.put_if_absent(&key, bytes.as_bytes()).unwrap());
                    }
                });
            }
        });
        for tag in ["a", "b"] {
            for i in 0..200 {
                let got = a.get(&format!("chunks/{tag}/{i}"), 1 << 20).unwrap();
                assert_eq!(got, format!("{tag}{i}").repeat(1000).as_bytes());
            }
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A symlink in place of a directory is an error, not a detour.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("repo/snapshots")).unwrap();
        assert!(a.put_if_absent("snapshots/x", b"x").is_err());
        assert!(a.get("snapshots/victim", 100).is_err());
    }
}
