//! Per-repository local state that makes repeated snapshots cheap: a stat
//! cache (a file whose stat is unchanged is not read again) and a chunk
//! index (a chunk known to be in the store is neither uploaded nor asked
//! about again). Kept in RocksDB under the cache directory; deleting it at
//! any time costs one slower snapshot, never a wrong one.
//!
//! When the index can be trusted (FORMAT.md §10, "Local state"):
//! - it was built for this repository (config id), and
//! - the repository's prune epoch is the one it was built at (a prune bumps
//!   the epoch before it deletes a chunk), and no sweep was under way when
//!   it was built or last updated (a listing taken during a sweep may hold
//!   chunks the sweep deletes after it), and
//! - the newest snapshot it recorded is still in the store (a bucket rolled
//!   back to an older state lacks it).
//!
//! Otherwise it is rebuilt from one listing of `chunks/`.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::layout::{self, SnapshotKey};
use crate::format::manifest::ChunkRef;
use crate::id::{ChunkId, Hash};
use crate::repo::{Repository, WriteSession};

/// The stat fields that identify a file's content between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Stat {
    /// The stat fields of an entry met by a descriptor walk.
    pub fn from_meta(m: &crate::sys::fsx::Meta) -> Stat {
        Stat {
            size: m.size,
            mtime_ns: m.mtime_ns,
            ctime_ns: m.ctime_ns,
            ino: m.ino,
            dev: m.dev,
        }
    }

    pub fn of(m: &Metadata) -> Stat {
        Stat {
            size: m.len(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// Same content, as far as stat can tell. `ignore_ctime` is for hard
    /// links to LevelDB table files in a staged snapshot: linking changes
    /// the inode's ctime, and table files are never rewritten (a file
    /// number is never reused).
    pub fn same(&self, other: &Stat, ignore_ctime: bool) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ino == other.ino
            && self.dev == other.dev
            && (ignore_ctime || self.ctime_ns == other.ctime_ns)
    }
}

/// What the stat cache remembers of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub stat: Stat,
    pub hash: Hash,
    pub chunks: Vec<ChunkRef>,
}

/// Chunks known to be in the store, with their stored sizes.
#[derive(Debug, Default)]
pub struct ChunkIndex {
    pub known: HashMap<ChunkId, u32>,
    /// True when `known` is everything the store holds (as of the start of
    /// this snapshot): a chunk not in it is new, so it is put without
    /// asking first.
    pub complete: bool,
    /// How the index came to be, for the report.
    pub origin: IndexOrigin,
    /// Problems with the cache itself, which cost this snapshot time only.
    pub warnings: Vec<String>,
    /// The repository's prune epoch when the index was checked. What a
    /// snapshot records is recorded at this epoch, not a later one: a prune
    /// that starts during the snapshot must still invalidate it.
    pub epoch: u64,
    /// A sweep was under way when the snapshot began: what is recorded is
    /// used by the next snapshot only after a rebuild.
    pub provisional: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexOrigin {
    /// No local state: the store is asked about every chunk.
    #[default]
    None,
    /// Loaded from the cache and still valid.
    Cached,
    /// Rebuilt from a listing of the store, and why.
    Rebuilt(RebuildReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildReason {
    Empty,
    OtherRepository,
    Pruned,
    RolledBack,
    Unreadable,
}

/// The cache's own record of which repository state it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    version: u32,
    repo_id: Hash,
    epoch: u64,
    newest: Option<String>,
    /// Built or updated while a prune round was being swept: used once,
    /// then rebuilt.
    provisional: bool,
}

const META_VERSION: u32 = 2;
const META_KEY: &[u8] = b"m";
const CHUNK_PREFIX: u8 = b'c';
const FILE_PREFIX: u8 = b'f';

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("in-memory encode")
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}

fn file_key(source: &str, rel: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + source.len() + rel.len());
    k.push(FILE_PREFIX);
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(rel.as_bytes());
    k
}

fn chunk_key(id: &ChunkId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = CHUNK_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

/// The default cache directory: `$XDG_CACHE_HOME/blocksnap`, else
/// `~/.cache/blocksnap`.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) if !x.is_empty() => Some(PathBuf::from(x).join("blocksnap")),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/blocksnap")),
    }
}

pub struct LocalState {
    #[cfg(feature = "cache")]
    db: rocksdb::DB,
    dir: PathBuf,
    repo_id: Hash,
    /// Warnings from opening (a corrupt cache thrown away).
    pub warnings: Vec<String>,
}

/// What the local state of `repo` is named by: its config id *and* where
/// it is. A config copied to another place (a mirror, a bucket a co-tenant
/// filled with another repository's config) is another repository whose
/// chunks this client has never seen; a chunk index built for one must
/// never vouch for chunks in the other (#20). Moving a repository costs one
/// slower snapshot.
pub fn state_key(repo: &Repository) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"blocksnap local state 2\0");
    h.update(&repo.config().id.0);
    h.update(b"\0");
    h.update(repo.store().location().as_bytes());
    Hash(*h.finalize().as_bytes())
}

impl LocalState {
    /// Opens (or creates) the state of `repo` under `base`. A cache that
    /// cannot be opened is removed and created afresh; one held by another
    /// blocksnap process is an error, which callers turn into "no cache".
    #[cfg(feature = "cache")]
    pub fn open(base: &Path, repo: &Repository) -> Result<LocalState> {
        let repo_id = state_key(repo);
        let dir = base.join(repo_id.to_hex());
        std::fs::create_dir_all(&dir).map_err(Error::io("create cache directory", &dir))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(2);
        opts.set_max_log_file_size(1 << 20);
        let mut warnings = Vec::new();
        let db = match rocksdb::DB::open(&opts, &dir) {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => {
                return Err(Error::Refused(format!(
                    "cache {} is in use by another blocksnap process: {e}",
                    dir.display()
                )))
            }
            Err(e) => {
                warnings.push(format!(
                    "cache {} was unreadable ({e}); rebuilt it",
                    dir.display()
                ));
                std::fs::remove_dir_all(&dir).map_err(Error::io("remove broken cache", &dir))?;
                rocksdb::DB::open(&opts, &dir).map_err(|e| cache_error(&dir, e))?
            }
        };
        Ok(LocalState {
            db,
            dir,
            repo_id,
            warnings,
        })
    }

    #[cfg(not(feature = "cache"))]
    pub fn open(base: &Path, _repo: &Repository) -> Result<LocalState> {
        Err(Error::Refused(format!(
            "cache {}: this build has no local state (feature `cache`)",
            base.display()
        )))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stat cache's record of `rel` under the source named `source`.
    pub fn file(&self, source: &str, rel: &str) -> Option<FileRecord> {
        self.get(&file_key(source, rel)).and_then(|b| decode(&b))
    }

    /// The chunk index, checked against the store (see the module doc):
    /// one LIST of `epochs/` when it is valid, a listing of `chunks/` when
    /// it is not.
    pub fn chunk_index(
        &self,
        repo: &Repository,
        snapshots: &[SnapshotKey],
        session: &WriteSession,
    ) -> Result<ChunkIndex> {
        let epoch = session.epoch;
        let provisional = !session.sweeping.is_empty();
        let meta: Option<Meta> = self.get(META_KEY).and_then(|b| decode(&b));
        let reason = match &meta {
            None => Some(RebuildReason::Empty),
            Some(m) if m.version != META_VERSION || m.repo_id != self.repo_id => {
                Some(RebuildReason::OtherRepository)
            }
            Some(m) if m.epoch != epoch || m.provisional => Some(RebuildReason::Pruned),
            Some(Meta {
                newest: Some(newest),
                ..
            }) if !snapshots.iter().any(|k| &k.key() == newest) => Some(RebuildReason::RolledBack),
            Some(_) => None,
        };
        let mut warnings = Vec::new();
        let reason = match reason {
            Some(r) => r,
            None => match self.cached_chunks() {
                Ok(known) => {
                    tracing::debug!(
                        "chunk index: {} chunks from the local state (epoch {epoch})",
                        known.len()
                    );
                    return Ok(ChunkIndex {
                        known,
                        complete: true,
                        origin: IndexOrigin::Cached,
                        warnings,
                        epoch,
                        provisional,
                    });
                }
                Err(e) => {
                    warnings.push(format!("chunk index unreadable ({e}); rebuilt it"));
                    RebuildReason::Unreadable
                }
            },
        };
        tracing::debug!("chunk index rebuilt from a listing of the store: {reason:?}");
        // Store errors here are real errors; the cache's own are not.
        let mut known = HashMap::new();
        for o in repo.store().list(layout::CHUNKS_PREFIX)? {
            if let (Some(id), Ok(len)) = (layout::parse_chunk_key(&o.key), u32::try_from(o.size)) {
                known.insert(id, len);
            }
        }
        // The listing reflects the store as of the newest snapshot listed
        // before it: a later rollback past that snapshot is detected.
        let newest = snapshots.last().map(SnapshotKey::key);
        if let Err(e) = self.replace_chunks(&known, epoch, newest, provisional) {
            warnings.push(format!("chunk index not saved: {e}"));
        }
        Ok(ChunkIndex {
            known,
            complete: true,
            origin: IndexOrigin::Rebuilt(reason),
            warnings,
            epoch,
            provisional,
        })
    }

    fn cached_chunks(&self) -> Result<HashMap<ChunkId, u32>> {
        let mut known = HashMap::new();
        for item in self.iter_prefix(&[CHUNK_PREFIX]) {
            let (k, v) = item?;
            match (<[u8; 32]>::try_from(&k[1..]), decode::<u32>(&v)) {
                (Ok(id), Some(len)) => known.insert(Hash(id), len),
                _ => {
                    return Err(cache_error(
                        &self.dir,
                        format!("bad chunk index entry {}", hex::encode(&k)),
                    ))
                }
            };
        }
        Ok(known)
    }

    /// Records a committed snapshot: the files it read (replacing every
    /// other record for this source), every chunk it references, and the
    /// repository state (`epoch` as of [`ChunkIndex::epoch`]).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        epoch: u64,
        provisional: bool,
        source: &str,
        files: &[(String, FileRecord)],
        chunks: impl Iterator<Item = (ChunkId, u32)>,
        newest: &SnapshotKey,
    ) -> Result<()> {
        let mut batch = Batch::default();
        let prefix = file_key(source, "");
        let keep: std::collections::HashSet<Vec<u8>> =
            files.iter().map(|(rel, _)| file_key(source, rel)).collect();
        for item in self.iter_prefix(&prefix) {
            let (k, _) = item?;
            if !keep.contains(&k[..]) {
                batch.delete(k.to_vec());
            }
        }
        for (rel, rec) in files {
            batch.put(file_key(source, rel), encode(rec));
        }
        for (id, len) in chunks {
            batch.put(chunk_key(&id).to_vec(), encode(&len));
        }
        batch.put(
            META_KEY.to_vec(),
            self.meta(epoch, Some(newest.key()), provisional),
        );
        self.write(batch)
    }

    fn replace_chunks(
        &self,
        known: &HashMap<ChunkId, u32>,
        epoch: u64,
        newest: Option<String>,
        provisional: bool,
    ) -> Result<()> {
        let mut batch = Batch::default();
        for item in self.iter_prefix(&[CHUNK_PREFIX]) {
            batch.delete(item?.0.to_vec());
        }
        for (id, len) in known {
            batch.put(chunk_key(id).to_vec(), encode(len));
        }
        batch.put(META_KEY.to_vec(), self.meta(epoch, newest, provisional));
        self.write(batch)
    }

    /// The record of which repository state the index reflects.
    fn meta(&self, epoch: u64, newest: Option<String>, provisional: bool) -> Vec<u8> {
        encode(&Meta {
            version: META_VERSION,
            repo_id: self.repo_id,
            epoch,
            newest,
            provisional,
        })
    }
}

#[derive(Default)]
struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k, Some(v)));
    }
    fn delete(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }
}

type KeyValue = (Box<[u8]>, Box<[u8]>);

#[cfg(feature = "cache")]
impl LocalState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        // An unreadable entry is a miss: the cache costs time, never
        // correctness.
        self.db.get(key).ok().flatten()
    }

    fn iter_prefix<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.db
            .iterator(rocksdb::IteratorMode::From(
                prefix,
                rocksdb::Direction::Forward,
            ))
            .map(|r| r.map_err(|e| cache_error(&self.dir, e)))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
    }

    fn write(&self, batch: Batch) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        self.db.write(wb).map_err(|e| cache_error(&self.dir, e))
    }
}

#[cfg(not(feature = "cache"))]
impl LocalState {
    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn iter_prefix<'a>(&'a self, _prefix: &'a [u8]) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        std::iter::empty()
    }
    fn write(&self, _batch: Batch) -> Result<()> {
        Ok(())
    }
}

#[cfg(feature = "cache")]
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let s = e.to_string();
    s.contains("lock") && (s.contains("LOCK") || s.contains("Resource temporarily unavailable"))
}

fn cache_error(dir: &Path, e: impl ToString) -> Error {
    Error::Io {
        op: "use cache",
        path: dir.to_path_buf(),
        cause: std::io::Error::other(e.to_string()),
    }
}
