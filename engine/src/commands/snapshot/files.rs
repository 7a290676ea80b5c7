//! The file pipeline: each file read (mapped or streamed), cut, hashed,
//! compressed and stored through the bounded upload queue, with the stat
//! cache and chunk index consulted first, and a file that changed while it
//! was read refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rayon::prelude::*;

use super::upload::{Outcome, Stopped, Uploads};
use crate::chunking;
use crate::commands::snapshot::cache::{ChunkIndex, FileRecord, LocalState, Stat};
use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::config::ChunkerParams;
use crate::format::layout::{self};
use crate::format::manifest::ChunkRef;
use crate::format::FormatError;
use crate::id::{ChunkId, Hash};
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::sys::fsx::{DirFd, Meta};
use crate::sys::interrupt;

use super::options::{Item, SnapshotOptions, SnapshotPlan, MIN_PUTTERS, MMAP_MAX};

/// What [`store_files`] did: each planned file's result, keyed by the
/// item's index in the plan, and the counts of what was stored.
pub(super) struct Stored {
    pub(super) files: HashMap<usize, FileResult>,
    pub(super) new_chunks: u64,
    pub(super) new_bytes: u64,
    pub(super) bytes_read: u64,
}

/// Chunks and stores every planned file (or takes it from the stat cache):
/// `jobs` workers chunk, hash and compress (one per core by default), while
/// the store's suggested number of threads put what they hand over
/// ([`Uploads`], bounded in bytes).
pub(super) fn store_files(
    plan: &SnapshotPlan,
    opts: &SnapshotOptions,
    state: Option<&LocalState>,
    writer: ChunkWriter<'_>,
    progress: &dyn Progress,
) -> Result<Stored> {
    let owned = writer;
    let writer = &owned;
    let cached = |item: &Item| -> Option<FileResult> {
        let state = state.filter(|_| !opts.rehash)?;
        let rec = state.file(&plan.label, &item.rel)?;
        let linked = opts.hard_linked.contains(&item.rel);
        let stat = opts
            .origin
            .get(&item.rel)
            .copied()
            .unwrap_or_else(|| Stat::from_meta(&item.meta));
        if !rec.stat.same(&stat, linked) {
            tracing::debug!(
                "{}: read again: its stat changed since the last snapshot ({:?} then, {:?} now)",
                item.rel,
                rec.stat,
                stat
            );
            return None;
        }
        // Every chunk must be known to be in the store; otherwise the file
        // is read again so that a lost chunk is stored again.
        if !rec
            .chunks
            .iter()
            .all(|c| writer.index.known.get(&c.id) == Some(&c.stored_len))
        {
            tracing::debug!(
                "{}: read again: a chunk it had is not in the chunk index",
                item.rel
            );
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
    let files: Vec<(usize, &Item)> = plan
        .items
        .iter()
        .enumerate()
        .filter(|(_, item)| item.is_file())
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (jobs, putters) = match opts.jobs {
        0 => (cpus, writer.repo.store().parallelism().max(MIN_PUTTERS)),
        n => (n.min(cpus), n),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {jobs} snapshot workers: {e}")))?;
    let chunker = writer.repo.config().chunker;
    let work = || {
        files
            .par_iter()
            // Each worker keeps the directory of the file it read last:
            // files come in path order, so a directory is mostly entered
            // once per worker.
            .map_init(
                || None::<(usize, String, DirFd)>,
                |dirs, &(i, item)| {
                    interrupt::check()?;
                    let r = match cached(item) {
                        Some(r) => r,
                        None => {
                            let trusted = if opts.hard_linked.contains(&item.rel) {
                                Trusted::HardLink
                            } else if let Some(origin) = opts.origin.get(&item.rel) {
                                Trusted::Origin(*origin)
                            } else {
                                Trusted::No
                            };
                            let dir = parent_dir(plan, item, dirs)?;
                            store_file(item, dir, &chunker, writer, trusted)?
                        }
                    };
                    progress.advance(r.size);
                    Ok((i, r))
                },
            )
            .collect::<Result<HashMap<_, _>>>()
    };
    let files = owned.run(putters, || pool.install(work));
    let (outcome, bytes_read) = owned.finish()?;
    let mut files = files?;
    for r in files.values_mut() {
        let records = r.record.iter_mut().flat_map(|rec| rec.chunks.iter_mut());
        outcome.fix_sizes(r.chunks.iter_mut().chain(records))?;
    }
    Ok(Stored {
        files,
        new_chunks: outcome.new_chunks,
        new_bytes: outcome.new_bytes,
        bytes_read,
    })
}

pub(super) struct FileResult {
    pub(super) size: u64,
    pub(super) hash: Hash,
    pub(super) chunks: Vec<ChunkRef>,
    /// For the stat cache: what to remember of the file, if anything.
    pub(super) record: Option<FileRecord>,
    /// Taken from the stat cache, unread.
    pub(super) from_cache: bool,
}

/// Stores chunks once: remembers what this snapshot has seen, and hands
/// the chunks it has to store to [`Uploads`], so that workers chunk and
/// compress while the store writes.
pub(crate) struct ChunkWriter<'r> {
    repo: &'r Repository,
    index: ChunkIndex,
    /// Chunks this snapshot has met: being compressed by a worker, or
    /// handed over with the length this writer encoded (the store may hold
    /// another encoding: [`Outcome::sizes`]). A worker that meets a chunk
    /// another is compressing waits for it rather than compressing it too.
    seen: Mutex<HashMap<ChunkId, Slot>>,
    compressed: Condvar,
    uploads: Uploads<'r>,
    bytes_read: AtomicU64,
}

/// Objects queued or being put at once, at most: what bounds a snapshot's
/// memory for objects, whatever the store's request count.
const UPLOAD_BUDGET: u64 = 32 << 20;

impl<'r> ChunkWriter<'r> {
    pub(crate) fn new(repo: &'r Repository, index: ChunkIndex) -> Self {
        ChunkWriter {
            repo,
            index,
            seen: Mutex::new(HashMap::new()),
            compressed: Condvar::new(),
            uploads: Uploads::new(repo.store(), UPLOAD_BUDGET),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// Runs `work` (which calls [`ChunkWriter::put`]) while `putters`
    /// threads put what it hands over, and returns what `work` returned.
    /// Call [`ChunkWriter::finish`] before looking at it: a failed put is
    /// the cause of whatever `work` then met.
    pub(crate) fn run<T>(&self, putters: usize, work: impl FnOnce() -> Result<T>) -> Result<T> {
        std::thread::scope(|s| {
            for _ in 0..putters {
                s.spawn(|| self.uploads.run());
            }
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(
                |panic| {
                    // Put threads must not wait for a close that never comes.
                    self.uploads.stop();
                    std::panic::resume_unwind(panic)
                },
            );
            match &out {
                Ok(_) => self.uploads.close(),
                Err(_) => self.uploads.stop(),
            }
            out
        })
    }

    /// After [`ChunkWriter::run`]: the first failed put, or what the puts
    /// did and the bytes counted as read.
    pub(crate) fn finish(self) -> Result<(Outcome, u64)> {
        let outcome = self.uploads.finish()?;
        Ok((outcome, self.bytes_read.into_inner()))
    }

    /// Counts bytes read from the source (for the report).
    pub(crate) fn count_read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The stored length of the chunk as this snapshot records it, handing
    /// the chunk to the uploads if the store may lack it.
    pub(crate) fn put(
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
                    Some(Slot::Handed(len)) => return Ok(*len),
                    Some(Slot::Busy) => seen = self.compressed.wait(seen).expect("seen lock"),
                    None => {
                        seen.insert(id, Slot::Busy);
                        break;
                    }
                }
            }
        }
        let handed = self.hand_over(data, id, compressor);
        let mut seen = self.seen.lock().expect("seen lock");
        match &handed {
            Ok(len) => seen.insert(id, Slot::Handed(*len)),
            // A waiting worker tries itself (and most likely fails the same way).
            Err(_) => seen.remove(&id),
        };
        self.compressed.notify_all();
        handed
    }

    /// Encodes a chunk this snapshot has not met before and queues it;
    /// returns its encoded length.
    fn hand_over(
        &self,
        data: &[u8],
        id: ChunkId,
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<u32> {
        let key = layout::chunk_key(&id);
        let object = chunk::encode(data, compressor);
        let len = u32::try_from(object.len()).map_err(|_| Error::Format {
            key: key.clone(),
            cause: FormatError::corrupt(format!("encoded object of {} bytes", object.len())),
        })?;
        // With a complete index a chunk missing from it is new: put it
        // without asking first (the put still never overwrites).
        self.uploads
            .push(key, id, object, !self.index.complete)
            .map_err(|Stopped| Error::Refused("stopped: a store write failed".into()))?;
        Ok(len)
    }
}

enum Slot {
    Busy,
    Handed(u32),
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

/// The open directory `item` lies in: entered from its base one name at a
/// time without following a link, or the one `cache` holds.
fn parent_dir<'c>(
    plan: &SnapshotPlan,
    item: &Item,
    cache: &'c mut Option<(usize, String, DirFd)>,
) -> Result<&'c DirFd> {
    let hit = cache
        .as_ref()
        .is_some_and(|(b, d, _)| *b == item.base && *d == item.dir);
    if !hit {
        let base = &plan.bases[item.base];
        let dir = if item.dir.is_empty() {
            base.try_clone()
        } else {
            base.open_path(&item.dir)
        }
        .map_err(|e| Error::SourceChanged {
            path: item.abs.clone(),
            detail: format!("its directory cannot be entered as it was walked ({e})"),
        })?;
        *cache = Some((item.base, item.dir.clone(), dir));
    }
    Ok(&cache.as_ref().expect("set above").2)
}

fn store_file(
    f: &Item,
    dir: &DirFd,
    params: &ChunkerParams,
    writer: &ChunkWriter<'_>,
    trusted: Trusted,
) -> Result<FileResult> {
    let opened_at = now_unix_ns() as i64;
    // Never through a link, never anything but a regular file (a fifo
    // cannot block the open), and the very inode the walk saw: whatever the
    // node's user swapped in since is refused before a byte is read.
    let file = dir.open_file(&f.name).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::SourceChanged {
            path: f.abs.clone(),
            detail: "it vanished".into(),
        },
        _ if e.raw_os_error() == Some(libc::ELOOP) => Error::SourceChanged {
            path: f.abs.clone(),
            detail: "it became a symlink".into(),
        },
        _ => Error::Io {
            op: "open",
            path: f.abs.clone(),
            cause: e,
        },
    })?;
    let before = Meta::of(&file).map_err(Error::io("stat", &f.abs))?;
    check_unchanged(&f.abs, &f.meta, &before)?;
    let level = writer.repo.config().zstd_level;
    let mut compressor =
        zstd::bulk::Compressor::new(level).map_err(Error::io("start zstd for", &f.abs))?;
    let mut hasher = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let size = before.size;
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
                cause: std::io::Error::other(e.to_string()),
            })?;
            add(&c.data)?;
        }
    }
    let read: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    writer.count_read(read);
    // The inode read must not have changed, and the name must still be it.
    let after = Meta::of(&file).map_err(Error::io("stat", &f.abs))?;
    check_unchanged(&f.abs, &before, &after)?;
    let named = dir
        .stat(&f.name)
        .map_err(Error::io("stat", &f.abs))?
        .ok_or_else(|| Error::SourceChanged {
            path: f.abs.clone(),
            detail: "it vanished".into(),
        })?;
    check_unchanged(&f.abs, &before, &named)?;
    if read != size {
        return Err(Error::SourceChanged {
            path: f.abs.clone(),
            detail: format!("read {read} bytes of {size}"),
        });
    }
    let hash: Hash = hasher.finalize().into();
    let stat = Stat::from_meta(&before);
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

fn check_unchanged(path: &Path, a: &Meta, b: &Meta) -> Result<()> {
    if a.size != b.size {
        return Err(Error::SourceChanged {
            path: path.to_path_buf(),
            detail: format!("size {} became {}", a.size, b.size),
        });
    }
    if a.mtime_ns != b.mtime_ns || a.ino != b.ino || a.dev != b.dev || a.kind != b.kind {
        return Err(Error::SourceChanged {
            path: path.to_path_buf(),
            detail: "modification time or inode changed".into(),
        });
    }
    Ok(())
}
