//! Taking a snapshot: walk the source, chunk and store every file, then
//! commit the manifest.
//!
//! Order of work (the spec's commit order): every chunk is put (each put is
//! durable on its own), the store is flushed, and only then is the manifest
//! written. An interrupted snapshot therefore leaves chunks but no manifest,
//! and re-running it finds those chunks present and stores only the rest.
//!
//! Files are processed in parallel on rayon, each by one worker: small files
//! (LevelDB tables are ~2 MiB) are memory-mapped, larger ones streamed, so
//! memory stays bounded by threads × largest chunk, not by the tree.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::cache::{ChunkIndex, FileRecord, IndexOrigin, LocalState, Stat};
use crate::chunking;
use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::config::ChunkerParams;
use crate::format::layout::{self, SnapshotKey};
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, Stats};
use crate::format::path as mpath;
use crate::id::{ChunkId, Hash};
use crate::ipnorm;
use crate::live;
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::store::Counts;

/// Files larger than this are streamed instead of mapped, so a large log
/// does not inflate resident memory.
const MMAP_MAX: u64 = 64 << 20;

#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub source: PathBuf,
    pub height: u64,
    pub tags: Vec<String>,
    /// Relative paths under the source to include; empty means everything.
    pub includes: Vec<String>,
    /// The node's address, when the source's paths hold more than one.
    pub ip: Option<Ipv4Addr>,
    /// Ignore the stat cache: read and hash every file.
    pub rehash: bool,
    /// Snapshot even when a database under the source is open in a running
    /// process; the manifest records a warning.
    pub allow_live: bool,
    /// The source's name in the manifest and the stat cache when `source`
    /// is a stage (a frozen copy) of it.
    pub label: Option<PathBuf>,
    /// Relative paths that are hard links to immutable table files (a
    /// staged snapshot): their ctime changed when they were linked, so the
    /// stat cache ignores it for them.
    pub hard_linked: std::collections::HashSet<String>,
    /// For files copied into a stage: the original's stat at stop time,
    /// which is what the stat cache compares and remembers (the copy is a
    /// new inode every time). Only files that had settled by then.
    pub origin: HashMap<String, Stat>,
    /// Files chunked in parallel (0: two per CPU, so that one worker's
    /// compression overlaps another's writes and fsyncs, or the store's
    /// suggested number of requests in flight when that is more).
    pub jobs: usize,
}

#[derive(Debug, Clone)]
pub struct SnapshotReport {
    pub key: SnapshotKey,
    pub stats: Stats,
    pub entries: u64,
    /// Chunk references that were already in the store.
    pub reused_chunk_refs: u64,
    pub bytes_read: u64,
    pub normalised_ip: Option<Ipv4Addr>,
    pub warnings: Vec<String>,
    /// Files whose chunks came from the stat cache, unread.
    pub files_from_cache: u64,
    /// Where the chunk index came from.
    pub index: IndexOrigin,
    /// Store requests made, for stores that count them.
    pub requests: Option<Counts>,
    pub duration: Duration,
}

/// One thing found under the source.
struct Found {
    /// Path under the source as found on disk.
    rel: String,
    abs: PathBuf,
    meta: Metadata,
}

/// A snapshot without local state: every file is read, every chunk is
/// asked about.
pub fn snapshot(
    repo: &Repository,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    snapshot_with_state(repo, opts, None, progress)
}

/// A snapshot that uses (and updates) the stat cache and chunk index in
/// `state`. The cache is only ever a shortcut: a file is taken from it
/// only when its stat is unchanged and every chunk it lists is in a valid
/// index.
pub fn snapshot_with_state(
    repo: &Repository,
    opts: &SnapshotOptions,
    state: Option<&LocalState>,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let requests_before = repo.store().request_counts();
    let source = fs::canonicalize(&opts.source).map_err(Error::io("open source", &opts.source))?;
    if !source.is_dir() {
        return Err(Error::SourceNotDir { path: source });
    }
    let mut warnings = Vec::new();
    let live = live::find(&source)?;
    if !live.is_empty() {
        let names: Vec<String> = live.iter().map(|l| l.to_string()).collect();
        if !opts.allow_live {
            return Err(Error::LiveDatabase { dbs: names });
        }
        warnings.push(format!(
            "taken with --allow-live while databases were open: {}",
            names.join("; ")
        ));
    }
    if let Some(s) = state {
        // The cache holds its own RocksDB LOCK: inside the source it would
        // be read as a live database, and snapshotted mid-write.
        let dir = fs::canonicalize(s.dir()).unwrap_or_else(|_| s.dir().to_path_buf());
        if dir.starts_with(&source) {
            return Err(Error::Refused(format!(
                "the cache directory {} is inside the source {}; move it with --cache-dir",
                dir.display(),
                source.display()
            )));
        }
        warnings.extend(s.warnings.iter().cloned());
    }
    let found = walk(&source, &opts.includes, &mut warnings)?;

    // Normalise the node's IP out of the paths.
    let addrs: Vec<Ipv4Addr> = {
        let mut all: Vec<Ipv4Addr> = found.iter().flat_map(|f| ipnorm::find(&f.rel)).collect();
        all.sort();
        all.dedup();
        all
    };
    let ip = ipnorm::choose(&addrs, opts.ip)?;
    let mut items: Vec<(String, Found)> = found
        .into_iter()
        .map(|f| {
            let path = match ip {
                Some(ip) => ipnorm::normalise(&f.rel, ip)?,
                None if ipnorm::is_normalised(&f.rel) => {
                    return Err(ipnorm::IpError::PlaceholderInSource { path: f.rel }.into())
                }
                None => f.rel.clone(),
            };
            mpath::check(&path).map_err(Error::format(path.clone()))?;
            Ok((path, f))
        })
        .collect::<Result<_>>()?;
    items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    items.dedup_by(|a, b| a.0 == b.0);

    let label_path = opts.label.as_deref().unwrap_or(&source);
    let source_label = match ip {
        Some(ip) => ipnorm::normalise(&label_path.to_string_lossy(), ip)
            .unwrap_or_else(|_| label_path.to_string_lossy().into()),
        None => label_path.to_string_lossy().into_owned(),
    };
    let snapshots = repo.snapshots()?;
    let index = match state {
        Some(s) => s.chunk_index(repo, &snapshots)?,
        None => ChunkIndex::default(),
    };
    let (index_origin, index_epoch) = (index.origin, index.epoch);
    warnings.extend(index.warnings.iter().cloned());

    let total: u64 = items
        .iter()
        .filter(|(_, f)| f.meta.is_file())
        .map(|(_, f)| f.meta.len())
        .sum();
    progress.begin("snapshot", total);
    let chunker = repo.config().chunker;
    let writer = ChunkWriter::new(repo, index);
    let cached = |f: &Found| -> Option<FileResult> {
        let state = state.filter(|_| !opts.rehash)?;
        let rec = state.file(&source_label, &f.rel)?;
        let linked = opts.hard_linked.contains(&f.rel);
        let stat = opts
            .origin
            .get(&f.rel)
            .copied()
            .unwrap_or_else(|| Stat::of(&f.meta));
        if !rec.stat.same(&stat, linked) {
            return None;
        }
        // Every chunk must be known to be in the store; otherwise the file
        // is read again so that a lost chunk is stored again.
        if !rec
            .chunks
            .iter()
            .all(|c| writer.index.known.get(&c.id) == Some(&c.stored_len))
        {
            return None;
        }
        Some(FileResult {
            size: rec.stat.size,
            hash: rec.hash,
            chunks: rec.chunks.clone(),
            record: Some(rec),
            from_cache: true,
        })
    };
    let files: Vec<(usize, &Found)> = items
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| f.meta.is_file())
        .map(|(i, (_, f))| (i, f))
        .collect();
    let jobs = match opts.jobs {
        0 => (2 * std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(repo.store().parallelism()),
        n => n,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {jobs} snapshot workers: {e}")))?;
    let results: Vec<(usize, FileResult)> = pool.install(|| {
        files
            .par_iter()
            .map(|&(i, f)| {
                let r = match cached(f) {
                    Some(r) => r,
                    None => {
                        let trusted = if opts.hard_linked.contains(&f.rel) {
                            Trusted::HardLink
                        } else if let Some(origin) = opts.origin.get(&f.rel) {
                            Trusted::Origin(*origin)
                        } else {
                            Trusted::No
                        };
                        store_file(f, &chunker, &writer, trusted)?
                    }
                };
                progress.advance(r.size);
                Ok((i, r))
            })
            .collect::<Result<_>>()
    })?;
    progress.end();
    let files_from_cache = results.iter().filter(|(_, r)| r.from_cache).count() as u64;
    let mut by_index: HashMap<usize, FileResult> = results.into_iter().collect();
    let mut records: Vec<(String, FileRecord)> = Vec::new();

    let mut entries = Vec::with_capacity(items.len());
    for (i, (path, f)) in items.iter().enumerate() {
        let kind = if f.meta.is_dir() {
            EntryKind::Dir
        } else if f.meta.file_type().is_symlink() {
            let target = fs::read_link(&f.abs).map_err(Error::io("read symlink", &f.abs))?;
            let target = target.to_str().ok_or_else(|| {
                Error::Refused(format!("{}: symlink target is not UTF-8", f.abs.display()))
            })?;
            EntryKind::Symlink {
                target: target.to_string(),
            }
        } else {
            let r = by_index.remove(&i).expect("every file was stored");
            // Read and safe to remember, or taken from the cache (and
            // kept); a file read but not rememberable loses its old record.
            if let Some(rec) = r.record {
                records.push((f.rel.clone(), rec));
            }
            EntryKind::File {
                size: r.size,
                hash: r.hash,
                chunks: r.chunks,
            }
        };
        entries.push(Entry {
            path: path.clone(),
            mode: f.meta.permissions().mode() & 0o7777,
            mtime_ns: mtime_ns(&f.meta),
            kind,
        });
    }

    let parent = previous_of(repo, &snapshots, &source_label)?;
    let (files_n, logical) = entries
        .iter()
        .fold((0u64, 0u64), |(n, b), e| match &e.kind {
            EntryKind::File { size, .. } => (n + 1, b + size),
            _ => (n, b),
        });
    let chunk_refs: u64 = entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File { chunks, .. } => chunks.len() as u64,
            _ => 0,
        })
        .sum();
    let stats = Stats {
        files: files_n,
        logical_bytes: logical,
        chunk_refs,
        new_chunks: writer.new_chunks.load(Ordering::Relaxed),
        new_stored_bytes: writer.new_bytes.load(Ordering::Relaxed),
    };
    let manifest = Manifest {
        height: opts.height,
        created_unix_ns: now_unix_ns(),
        source: source_label,
        tags: opts.tags.clone(),
        parent,
        chunker,
        zstd_level: repo.config().zstd_level,
        warnings: warnings.clone(),
        stats: stats.clone(),
        entries,
    };
    let key = repo.commit(&manifest)?;
    if let Some(s) = state {
        let chunks = manifest
            .files()
            .flat_map(|(_, _, _, chunks)| chunks.iter().map(|c| (c.id, c.stored_len)));
        // The snapshot is committed; a cache that cannot be updated only
        // makes the next one slower.
        if let Err(e) = s.record(index_epoch, &manifest.source, &records, chunks, &key) {
            warnings.push(format!("local state not updated: {e}"));
        }
    }
    Ok(SnapshotReport {
        key,
        entries: manifest.entries.len() as u64,
        reused_chunk_refs: chunk_refs - writer.stored_refs.load(Ordering::Relaxed),
        bytes_read: writer.bytes_read.load(Ordering::Relaxed),
        stats,
        normalised_ip: ip,
        warnings,
        files_from_cache,
        index: index_origin,
        requests: repo
            .store()
            .request_counts()
            .map(|c| c.since(requests_before)),
        duration: started.elapsed(),
    })
}

/// The newest snapshot of the same source: this snapshot's parent.
fn previous_of(
    repo: &Repository,
    snapshots: &[SnapshotKey],
    source_label: &str,
) -> Result<Option<Hash>> {
    for key in snapshots.iter().rev() {
        // A damaged older manifest must not block new snapshots; verify
        // reports it.
        if let Ok(m) = repo.load_manifest(key) {
            if m.source == source_label {
                return Ok(Some(key.id));
            }
        }
    }
    Ok(None)
}

fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// An `--include` as a relative path that exists under the source.
pub(crate) fn checked_include<'a>(source: &Path, inc: &'a str) -> Result<&'a str> {
    let inc = inc.trim_end_matches('/').trim_start_matches("./");
    mpath::check(inc).map_err(Error::format(format!("--include {inc}")))?;
    if fs::symlink_metadata(source.join(inc)).is_err() {
        return Err(Error::IncludeMissing {
            path: inc.to_string(),
        });
    }
    Ok(inc)
}

/// Walks the source (or the included parts of it), never following links.
fn walk(source: &Path, includes: &[String], warnings: &mut Vec<String>) -> Result<Vec<Found>> {
    let mut roots: Vec<String> = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    if includes.is_empty() {
        roots.push(String::new());
    } else {
        for inc in includes {
            let inc = checked_include(source, inc)?;
            // The include's ancestors become directory entries.
            let mut ancestor = mpath::parent(inc);
            while let Some(dir) = ancestor {
                let abs = source.join(dir);
                let meta = fs::symlink_metadata(&abs).map_err(Error::io("stat", &abs))?;
                found.push(Found {
                    rel: dir.to_string(),
                    abs,
                    meta,
                });
                ancestor = mpath::parent(dir);
            }
            roots.push(inc.to_string());
        }
    }
    for root in roots {
        let start = if root.is_empty() {
            source.to_path_buf()
        } else {
            source.join(&root)
        };
        for entry in walkdir::WalkDir::new(&start)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&start).to_path_buf();
                Error::Io {
                    op: "walk",
                    path,
                    source: e.into(),
                }
            })?;
            let rel_path = entry
                .path()
                .strip_prefix(source)
                .expect("walk stays under the source");
            if rel_path.as_os_str().is_empty() {
                continue;
            }
            let rel = rel_path
                .to_str()
                .ok_or_else(|| {
                    Error::Refused(format!(
                        "{}: file name is not UTF-8",
                        entry.path().display()
                    ))
                })?
                .to_string();
            let meta = entry.metadata().map_err(|e| Error::Io {
                op: "stat",
                path: entry.path().to_path_buf(),
                source: e.into(),
            })?;
            let ft = meta.file_type();
            if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
                warnings.push(format!(
                    "skipped {rel}: not a regular file, directory or symlink"
                ));
                continue;
            }
            found.push(Found {
                rel,
                abs: entry.path().to_path_buf(),
                meta,
            });
        }
    }
    Ok(found)
}

struct FileResult {
    size: u64,
    hash: Hash,
    chunks: Vec<ChunkRef>,
    /// For the stat cache: what to remember of the file, if anything.
    record: Option<FileRecord>,
    /// Taken from the stat cache, unread.
    from_cache: bool,
}

/// Stores chunks once: remembers what this snapshot has seen and asks the
/// store only about the rest.
struct ChunkWriter<'r> {
    repo: &'r Repository,
    index: ChunkIndex,
    /// Chunks this snapshot has stored or is storing. A worker that meets a
    /// chunk another worker is storing waits for it rather than racing it
    /// to the store (which would cost a refused PUT and a HEAD).
    seen: Mutex<HashMap<ChunkId, Slot>>,
    stored: Condvar,
    new_chunks: AtomicU64,
    new_bytes: AtomicU64,
    stored_refs: AtomicU64,
    bytes_read: AtomicU64,
}

impl<'r> ChunkWriter<'r> {
    fn new(repo: &'r Repository, index: ChunkIndex) -> Self {
        ChunkWriter {
            repo,
            index,
            seen: Mutex::new(HashMap::new()),
            stored: Condvar::new(),
            new_chunks: AtomicU64::new(0),
            new_bytes: AtomicU64::new(0),
            stored_refs: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Returns the stored length of the chunk, storing it if needed.
    fn put(
        &self,
        data: &[u8],
        id: ChunkId,
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<u32> {
        if let Some(&len) = self.index.known.get(&id) {
            return Ok(len);
        }
        {
            let mut seen = self.seen.lock().expect("seen lock");
            loop {
                match seen.get(&id) {
                    Some(Slot::Stored(len)) => return Ok(*len),
                    Some(Slot::Busy) => seen = self.stored.wait(seen).expect("seen lock"),
                    None => {
                        seen.insert(id, Slot::Busy);
                        break;
                    }
                }
            }
        }
        let stored = self.store_new(data, id, compressor);
        let mut seen = self.seen.lock().expect("seen lock");
        match &stored {
            Ok(len) => seen.insert(id, Slot::Stored(*len)),
            // A waiting worker tries itself (and most likely fails the same way).
            Err(_) => seen.remove(&id),
        };
        self.stored.notify_all();
        stored
    }

    /// Stores a chunk this snapshot has not met before, unless the store
    /// has it; returns its stored length.
    fn store_new(
        &self,
        data: &[u8],
        id: ChunkId,
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<u32> {
        let key = layout::chunk_key(&id);
        let store = self.repo.store();
        // With a complete index a chunk missing from it is new: put it
        // without asking (the put still never overwrites).
        let present = if self.index.complete {
            None
        } else {
            store.size(&key)?
        };
        let stored_len = match present {
            Some(n) => n,
            None => {
                let object = chunk::encode(data, compressor);
                if store.put_if_absent(&key, &object)? {
                    self.new_chunks.fetch_add(1, Ordering::Relaxed);
                    self.new_bytes
                        .fetch_add(object.len() as u64, Ordering::Relaxed);
                    self.stored_refs.fetch_add(1, Ordering::Relaxed);
                    object.len() as u64
                } else {
                    store.size(&key)?.unwrap_or(object.len() as u64)
                }
            }
        };
        let stored_len = u32::try_from(stored_len).map_err(|_| Error::Format {
            key: key.clone(),
            source: crate::format::FormatError::corrupt(format!(
                "stored object of {stored_len} bytes"
            )),
        })?;
        Ok(stored_len)
    }
}

enum Slot {
    Busy,
    Stored(u32),
}

/// Files changed this recently before they are read are not remembered:
/// a write in the same coarse clock tick would leave the stat unchanged.
pub(crate) const RACY: Duration = Duration::from_millis(100);

/// What a stage vouches for about a file's stat.
enum Trusted {
    No,
    /// A hard link to an immutable table file.
    HardLink,
    /// A copy; the original's settled stat at stop time.
    Origin(Stat),
}

fn store_file(
    f: &Found,
    params: &ChunkerParams,
    writer: &ChunkWriter<'_>,
    trusted: Trusted,
) -> Result<FileResult> {
    let opened_at = now_unix_ns() as i64;
    let file = File::open(&f.abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::SourceChanged {
            path: f.abs.clone(),
            detail: "it vanished".into(),
        },
        _ => Error::Io {
            op: "open",
            path: f.abs.clone(),
            source: e,
        },
    })?;
    let before = file.metadata().map_err(Error::io("stat", &f.abs))?;
    check_unchanged(&f.abs, &f.meta, &before)?;
    let level = writer.repo.config().zstd_level;
    let mut compressor =
        zstd::bulk::Compressor::new(level).map_err(Error::io("start zstd for", &f.abs))?;
    let mut hasher = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let size = before.len();
    let mut add = |data: &[u8]| -> Result<()> {
        hasher.update(data);
        let id = Hash::of(data);
        let stored_len = writer.put(data, id, &mut compressor)?;
        chunks.push(ChunkRef {
            id,
            len: data.len() as u32,
            stored_len,
        });
        Ok(())
    };
    if size == 0 {
    } else if size <= MMAP_MAX {
        // SAFETY: the map is read-only and dropped before we return. Another
        // process changing the file while it is mapped would change the
        // bytes we read, not memory safety of our own data structures; that
        // case is detected below by comparing the file's stat before and
        // after, and fails the snapshot.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .map_err(Error::io("map", &f.abs))?;
        if map.len() as u64 != size {
            return Err(Error::SourceChanged {
                path: f.abs.clone(),
                detail: "size changed while mapping".into(),
            });
        }
        for cut in chunking::cuts(&map, params) {
            add(&map[cut.offset..cut.offset + cut.len])?;
        }
    } else {
        let stream = fastcdc::v2020::StreamCDC::new(
            &file,
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
        );
        for c in stream {
            let c = c.map_err(|e| Error::Io {
                op: "read",
                path: f.abs.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            add(&c.data)?;
        }
    }
    let read: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    writer.bytes_read.fetch_add(read, Ordering::Relaxed);
    let after = fs::symlink_metadata(&f.abs).map_err(|_| Error::SourceChanged {
        path: f.abs.clone(),
        detail: "it vanished".into(),
    })?;
    check_unchanged(&f.abs, &before, &after)?;
    if read != size {
        return Err(Error::SourceChanged {
            path: f.abs.clone(),
            detail: format!("read {read} bytes of {size}"),
        });
    }
    let hash: Hash = hasher.finalize().into();
    let stat = Stat::of(&before);
    let stat = match trusted {
        Trusted::HardLink => Some(stat),
        // A staged copy is a new inode each time: its original's stat is
        // what the next snapshot will compare (the stage only offers
        // originals that had settled before the stop).
        Trusted::Origin(origin) => Some(origin),
        Trusted::No => (stat.ctime_ns < opened_at - RACY.as_nanos() as i64).then_some(stat),
    };
    let record = stat.map(|stat| FileRecord {
        stat,
        hash,
        chunks: chunks.clone(),
    });
    Ok(FileResult {
        size,
        hash,
        chunks,
        record,
        from_cache: false,
    })
}

fn check_unchanged(path: &Path, a: &Metadata, b: &Metadata) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::SourceChanged {
            path: path.to_path_buf(),
            detail: format!("size {} became {}", a.len(), b.len()),
        });
    }
    if (a.mtime(), a.mtime_nsec()) != (b.mtime(), b.mtime_nsec()) || a.ino() != b.ino() {
        return Err(Error::SourceChanged {
            path: path.to_path_buf(),
            detail: "modification time or inode changed".into(),
        });
    }
    Ok(())
}
