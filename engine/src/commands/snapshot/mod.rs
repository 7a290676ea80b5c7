//! Taking a snapshot: [`plan`] walks and checks the source, [`execute`]
//! chunks and stores every file, then commits the manifest.
//!
//! Everything that can refuse a snapshot without reading file contents —
//! a live database, a path or symlink the format or a restore would not
//! accept, too many entries, an unreadable name — is found by the plan,
//! before a byte is read or uploaded (and, for a staged snapshot, before
//! the node is stopped).
//!
//! Order of work (the spec's commit order): every chunk is put (each put is
//! durable on its own), the store is flushed, and only then is the manifest
//! written. An interrupted snapshot therefore leaves chunks but no manifest,
//! and re-running it finds those chunks present and stores only the rest.
//!
//! Files are processed in parallel on rayon, each by one worker (one per
//! core by default): small files (LevelDB tables are ~2 MiB) are
//! memory-mapped, larger ones streamed. Workers hand the chunks to store to
//! put threads through a queue bounded in bytes ([`upload`]), so
//! memory stays bounded by workers × the mapping limit plus that budget,
//! not by the tree or the store's request count.

pub mod cache;
pub mod command;
pub mod stage;
mod upload;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use self::upload::{Stopped, Uploads};
use crate::chunking;
use crate::commands::snapshot::cache::{ChunkIndex, FileRecord, IndexOrigin, LocalState, Stat};
use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::config::ChunkerParams;
use crate::format::layout::{self, SnapshotKey};
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, Stats};
use crate::format::path as mpath;
use crate::format::reserved;
use crate::format::{limits, FormatError};
use crate::id::{ChunkId, Hash};
use crate::ipnorm;
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::store::Counts;
use crate::sys::fsx::{self, DirFd, EntryType, Meta};
use crate::sys::interrupt;
use crate::sys::live;
use crate::sys::priority::Priority;

/// Files larger than this are streamed instead of mapped, so that mapped
/// pages (which count as the process's resident memory) stay under workers
/// × this, whatever the files' sizes. LevelDB tables (~2 MiB) are mapped.
const MMAP_MAX: u64 = 16 << 20;

/// Threads putting objects, at least: a local store's puts mostly wait for
/// fsync, and concurrent fsyncs are committed together by the filesystem's
/// journal, while the workers go on compressing.
pub const MIN_PUTTERS: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    pub source: PathBuf,
    pub height: u64,
    /// The node's name (`--host`): with the source it names the history
    /// the snapshot continues. Empty: this machine's host name.
    pub host: String,
    pub tags: Vec<String>,
    /// Relative paths under the source to include; empty means everything.
    /// An include that is a symlink to a directory is followed (the data
    /// directory of many nodes links `.storage` to another disk) and
    /// recorded as a directory.
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
    pub hard_linked: HashSet<String>,
    /// For files copied into a stage: the original's stat at stop time,
    /// which is what the stat cache compares and remembers (the copy is a
    /// new inode every time). Only files that had settled by then.
    pub origin: HashMap<String, Stat>,
    /// A staged snapshot's frozen view, read through descriptors the stage
    /// held since before the node was stopped (never looked up by name
    /// again: the node's user could rename it away and plant a link).
    pub view: Option<StagedView>,
    /// The one knob for parallelism: at most this many files chunked at
    /// once (never more than the CPUs) and this many store writes in
    /// flight. 0: one worker per CPU, and the store's suggested number of
    /// requests (at least [`MIN_PUTTERS`]).
    pub jobs: usize,
    /// The manifest's creation time (ns since the epoch) instead of the
    /// clock's: for simulations that compress weeks into minutes.
    pub created_unix_ns: Option<u64>,
    /// Sign the manifest with this key before it is committed, so that it
    /// is never visible unsigned.
    pub signer: Option<Arc<crate::repo::sign::Signer>>,
    /// When to yield the CPU and disk to the node ([`Priority::Auto`]: once
    /// it runs again).
    pub priority: Priority,
}

/// A stage's view of the source, as open directories.
#[derive(Debug, Clone)]
pub struct StagedView {
    /// The view of the source itself.
    pub root: Arc<DirFd>,
    /// Relative paths where the view stands for a directory on another
    /// filesystem, with that region's own view: entered through these
    /// descriptors, recorded as directories.
    pub regions: HashMap<String, Arc<DirFd>>,
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

/// One thing found under the source, checked and named as the manifest
/// will name it.
#[derive(Debug)]
pub struct Item {
    /// The manifest path (node address normalised).
    pub path: String,
    /// Path under the source as found on disk.
    pub rel: String,
    /// Its path, for messages only: it is read through `base`, `dir` and
    /// `name`, never by this path.
    pub abs: PathBuf,
    pub meta: Meta,
    /// The symlink's target, for symlinks.
    pub link: Option<String>,
    /// Which of the plan's open directories it lies below.
    pub base: usize,
    /// Its parent directory's path below that base ("" for the base).
    pub dir: String,
    /// Its name in that directory.
    pub name: String,
}

impl Item {
    fn is_file(&self) -> bool {
        self.link.is_none() && self.meta.kind == EntryType::File
    }

    pub fn is_dir(&self) -> bool {
        self.link.is_none() && self.meta.kind == EntryType::Dir
    }
}

/// What a snapshot will read and record, decided and checked before any
/// file is read or any object written: the walk, the live-database probe,
/// the address, and every format rule and limit the manifest must meet.
#[derive(Debug)]
pub struct SnapshotPlan {
    /// The source, canonical (its name in the manifest, before the
    /// address is normalised).
    pub source: PathBuf,
    /// The directories the items are read through, opened during the walk:
    /// the source (or its stage), and each followed include or region.
    pub bases: Vec<Arc<DirFd>>,
    /// The manifest's `source` label (address normalised).
    pub label: String,
    pub ip: Option<Ipv4Addr>,
    /// In manifest order.
    pub items: Vec<Item>,
    pub warnings: Vec<String>,
    /// Bytes in regular files.
    pub bytes: u64,
}

impl SnapshotPlan {
    /// Opens a planned directory through the descriptors the walk used,
    /// one name at a time, following no link.
    pub fn open_dir(&self, item: &Item) -> Result<DirFd> {
        let base = &self.bases[item.base];
        let rel = match (item.dir.is_empty(), item.name.is_empty()) {
            (_, true) => return base.try_clone().map_err(Error::io("open", &item.abs)),
            (true, false) => item.name.clone(),
            (false, false) => format!("{}/{}", item.dir, item.name),
        };
        base.open_path(&rel).map_err(Error::io("open", &item.abs))
    }
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
/// `state`: [`plan`] then [`execute`].
pub fn snapshot_with_state(
    repo: &Repository,
    opts: &SnapshotOptions,
    state: Option<&LocalState>,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let plan = plan(opts)?;
    // A node that runs while this snapshot reads (`--allow-live`) gets the
    // machine first; a stopped node's downtime wants full speed.
    let low = match opts.priority {
        Priority::Low => true,
        Priority::Auto => opts.allow_live,
        Priority::Normal => false,
    };
    if low {
        crate::sys::priority::lower_or_warn();
    }
    execute(repo, &plan, opts, state, progress)
}

/// Opens the source (or takes its stage's view): the path resolved from
/// `/`, following a symlink only when root or this user owns it (a link
/// the node's user planted on the way is not followed). Returns it with its
/// canonical path, the name the manifest gives it.
pub(crate) fn open_source(opts: &SnapshotOptions) -> Result<(Arc<DirFd>, PathBuf)> {
    if let Some(view) = &opts.view {
        let label = opts
            .label
            .clone()
            .unwrap_or_else(|| view.root.path().to_path_buf());
        return Ok((view.root.clone(), label));
    }
    let source = fs::canonicalize(&opts.source).map_err(Error::io("open source", &opts.source))?;
    let dir = DirFd::open_trusted(&opts.source, false).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => Error::SourceNotDir {
            path: source.clone(),
        },
        _ => Error::Io {
            op: "open source",
            path: opts.source.clone(),
            cause: e,
        },
    })?;
    Ok((Arc::new(dir), source))
}

/// Walks and checks the source. Nothing is read but directories, symlinks
/// and `LOCK` files, and nothing is written. Everything is reached through
/// directory descriptors from the source's, one name at a time, without
/// following a link (the node's user owns the tree and may swap names
/// while blocksnap, often root, reads it).
pub fn plan(opts: &SnapshotOptions) -> Result<SnapshotPlan> {
    let (root, source) = open_source(opts)?;
    let roots = roots(&root, &opts.includes)?;
    plan_roots(opts, &root, source, roots)
}

/// [`plan`] of a source already open, from roots already opened (a staged
/// snapshot opens them before the node is stopped and walks them again
/// after, through the same descriptors).
pub(crate) fn plan_roots(
    opts: &SnapshotOptions,
    root: &Arc<DirFd>,
    source: PathBuf,
    roots: Vec<Root>,
) -> Result<SnapshotPlan> {
    if root
        .stat(reserved::JOURNAL)
        .map_err(Error::io("stat", root.join(reserved::JOURNAL)))?
        .is_some()
    {
        return Err(Error::Refused(format!(
            "{} holds an interrupted restore ({}): run the restore again to finish it before taking a snapshot",
            source.display(),
            reserved::JOURNAL
        )));
    }
    FormatError::check_limit("tags", opts.tags.len() as u64, limits::MAX_TAGS)
        .map_err(Error::format("--tag"))?;
    for t in &opts.tags {
        FormatError::check_limit("label length", t.len() as u64, limits::MAX_LABEL_BYTES)
            .map_err(Error::format(format!("--tag {t}")))?;
    }
    let mut warnings = Vec::new();
    let mut live = Vec::new();
    for r in &roots {
        if let RootKind::Dir(dir) = &r.kind {
            live.extend(live::find_in(dir)?);
        }
    }
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
    let regions = opts.view.as_ref().map(|v| &v.regions);
    let (found, bases) = walk(root, roots, regions, &mut warnings)?;
    FormatError::check_limit("entries", found.len() as u64, limits::MAX_ENTRIES)
        .map_err(Error::format(source.display().to_string()))?;

    // Normalise the node's IP out of the paths.
    let addrs: Vec<Ipv4Addr> = {
        let mut all: Vec<Ipv4Addr> = found.iter().flat_map(|f| ipnorm::find(&f.rel)).collect();
        all.sort();
        all.dedup();
        all
    };
    let ip = ipnorm::choose(&addrs, opts.ip)?;
    let mut items: Vec<Item> = found
        .into_iter()
        .map(|mut item| {
            item.path = match ip {
                Some(ip) => ipnorm::normalise(&item.rel, ip)?,
                None if ipnorm::is_normalised(&item.rel) => {
                    return Err(ipnorm::IpError::PlaceholderInSource { path: item.rel }.into())
                }
                None => item.rel.clone(),
            };
            mpath::check(&item.path).map_err(Error::format(item.abs.display().to_string()))?;
            if let Some(target) = &item.link {
                mpath::check_link_target_contained(&item.path, target).map_err(|e| {
                    Error::Refused(format!(
                        "{} is a symlink to {target:?}, which a restore could not keep inside its target ({e}); \
                         snapshot the directory it points to with --include, or leave the link out",
                        item.abs.display()
                    ))
                })?;
            }
            Ok(item)
        })
        .collect::<Result<_>>()?;
    // A link to the snapshot's root itself: a restore refuses it (a path
    // through it reaches entries that are not the snapshot's), so the
    // snapshot does, before reading.
    for item in &items {
        if let Some(target) = &item.link {
            if mpath::climb_to_root(&item.path, target) == Some(None) {
                return Err(Error::Refused(format!(
                    "{} is a symlink to {target:?}, the snapshot's own root directory, which a \
                     restore could not keep inside its target; leave the link out",
                    item.abs.display()
                )));
            }
        }
    }
    items.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    items.dedup_by(|a, b| a.path == b.path);

    let label_path = opts.label.as_deref().unwrap_or(&source);
    let label = match ip {
        Some(ip) => ipnorm::normalise(&label_path.to_string_lossy(), ip)
            .unwrap_or_else(|_| label_path.to_string_lossy().into()),
        None => label_path.to_string_lossy().into_owned(),
    };
    FormatError::check_limit("label length", label.len() as u64, limits::MAX_LABEL_BYTES)
        .map_err(Error::format(format!("source {label}")))?;
    let bytes = items
        .iter()
        .filter(|i| i.is_file())
        .map(|i| i.meta.size)
        .sum();
    Ok(SnapshotPlan {
        source,
        bases,
        label,
        ip,
        items,
        warnings,
        bytes,
    })
}

/// Reads, chunks and stores the planned files, then commits the manifest.
pub fn execute(
    repo: &Repository,
    plan: &SnapshotPlan,
    opts: &SnapshotOptions,
    state: Option<&LocalState>,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    let requests_before = repo.store().request_counts();
    let mut warnings = plan.warnings.clone();
    if let Some(s) = state {
        // The cache holds its own RocksDB LOCK: inside the source it would
        // be read as a live database, and snapshotted mid-write.
        let dir = fs::canonicalize(s.dir()).unwrap_or_else(|_| s.dir().to_path_buf());
        if dir.starts_with(&plan.source) {
            return Err(Error::Refused(format!(
                "the cache directory {} is inside the source {}; move it with --cache-dir",
                dir.display(),
                plan.source.display()
            )));
        }
        warnings.extend(s.warnings.iter().cloned());
    }
    // Before anything relies on a chunk being stored: what prunes are under
    // way (the commit checks everything since).
    let session = repo.begin_write()?;
    let snapshots = repo.snapshots()?;
    let index = match state {
        Some(s) => s.chunk_index(repo, &snapshots, &session)?,
        None => ChunkIndex::default(),
    };
    let (index_origin, index_epoch, provisional) = (index.origin, index.epoch, index.provisional);
    warnings.extend(index.warnings.iter().cloned());

    let writer = ChunkWriter::new(repo, index);
    progress.begin("snapshot", plan.bytes);
    let stored = store_files(plan, opts, state, writer, progress)?;
    progress.end();
    let mut results = stored.files;
    let files_from_cache = results.values().filter(|r| r.from_cache).count() as u64;

    let mut records: Vec<(String, FileRecord)> = Vec::new();
    let mut entries = Vec::with_capacity(plan.items.len());
    for (i, item) in plan.items.iter().enumerate() {
        let kind = if let Some(target) = &item.link {
            EntryKind::Symlink {
                target: target.clone(),
            }
        } else if item.meta.kind == EntryType::Dir {
            EntryKind::Dir
        } else {
            let r = results.remove(&i).expect("every file was stored");
            // Read and safe to remember, or taken from the cache (and
            // kept); a file read but not rememberable loses its old record.
            if let Some(rec) = r.record {
                records.push((item.rel.clone(), rec));
            }
            EntryKind::File {
                size: r.size,
                hash: r.hash,
                chunks: r.chunks,
            }
        };
        entries.push(Entry {
            path: item.path.clone(),
            mode: item.meta.mode,
            mtime_ns: item.meta.mtime_ns,
            kind,
        });
    }

    let host = if opts.host.is_empty() {
        crate::repo::this_host()
    } else {
        opts.host.clone()
    };
    let parent = previous_of(repo, &snapshots, &host, &plan.label)?;
    let mut stats = Stats {
        new_chunks: stored.new_chunks,
        new_stored_bytes: stored.new_bytes,
        ..Stats::default()
    };
    for (_, size, _, chunks) in entries.iter().filter_map(file_of) {
        stats.files += 1;
        stats.logical_bytes += size;
        stats.chunk_refs += chunks.len() as u64;
    }
    let manifest = Manifest {
        height: opts.height,
        created_unix_ns: opts.created_unix_ns.unwrap_or_else(now_unix_ns),
        source: plan.label.clone(),
        host,
        tags: opts.tags.clone(),
        parent,
        chunker: repo.config().chunker,
        zstd_level: repo.config().zstd_level,
        warnings: fit_warnings(&warnings),
        stats: stats.clone(),
        entries,
    };
    interrupt::check()?;
    if let Some(signer) = &opts.signer {
        let bytes = manifest.encode();
        let key = SnapshotKey {
            height: manifest.height,
            created_unix_ns: manifest.created_unix_ns,
            id: Hash::of(&bytes),
        };
        signer.sign_snapshot(&**repo.store(), &key, &bytes)?;
    }
    let key = repo.commit(&manifest, &session)?;
    if let Some(s) = state {
        let chunks = manifest
            .files()
            .flat_map(|(_, _, _, chunks)| chunks.iter().map(|c| (c.id, c.stored_len)));
        // The snapshot is committed; a cache that cannot be updated only
        // makes the next one slower.
        if let Err(e) = s.record(
            index_epoch,
            provisional,
            &manifest.source,
            &records,
            chunks,
            &key,
        ) {
            warnings.push(format!("local state not updated: {e}"));
        }
    }
    Ok(SnapshotReport {
        key,
        entries: manifest.entries.len() as u64,
        reused_chunk_refs: stats.chunk_refs - stored.new_chunks,
        bytes_read: stored.bytes_read,
        stats,
        normalised_ip: plan.ip,
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

fn file_of(e: &Entry) -> Option<(&Entry, u64, &Hash, &[ChunkRef])> {
    match &e.kind {
        EntryKind::File { size, hash, chunks } => Some((e, *size, hash, chunks.as_slice())),
        _ => None,
    }
}

/// Warnings as the format allows them: at most [`limits::MAX_WARNINGS`],
/// each at most [`limits::MAX_LABEL_BYTES`] bytes.
fn fit_warnings(warnings: &[String]) -> Vec<String> {
    let max = limits::MAX_LABEL_BYTES as usize;
    let fit = |w: &str| -> String {
        if w.len() <= max {
            return w.to_string();
        }
        let mut end = max - 3;
        while !w.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &w[..end])
    };
    let keep = limits::MAX_WARNINGS as usize;
    let mut out: Vec<String> = warnings.iter().take(keep).map(|w| fit(w)).collect();
    if warnings.len() > keep {
        out.pop();
        out.push(format!("and {} more warnings", warnings.len() - keep + 1));
    }
    out
}

/// What [`store_files`] did: each planned file's result, keyed by the
/// item's index in the plan, and the counts of what was stored.
struct Stored {
    files: HashMap<usize, FileResult>,
    new_chunks: u64,
    new_bytes: u64,
    bytes_read: u64,
}

/// Chunks and stores every planned file (or takes it from the stat cache):
/// `jobs` workers chunk, hash and compress (one per core by default), while
/// the store's suggested number of threads put what they hand over
/// ([`Uploads`], bounded in bytes).
fn store_files(
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
    let files = std::thread::scope(|s| {
        for _ in 0..putters {
            s.spawn(|| writer.uploads.run());
        }
        let files = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(work)))
            .unwrap_or_else(|panic| {
                // Put threads must not wait for a close that never comes.
                writer.uploads.stop();
                std::panic::resume_unwind(panic)
            });
        match &files {
            Ok(_) => writer.uploads.close(),
            Err(_) => writer.uploads.stop(),
        }
        files
    });
    let ChunkWriter {
        uploads,
        bytes_read,
        ..
    } = owned;
    // A failed put is the cause of whatever the workers then met.
    let outcome = uploads.finish()?;
    let mut files = files?;
    if !outcome.sizes.is_empty() {
        for r in files.values_mut() {
            let records = r.record.iter_mut().flat_map(|rec| rec.chunks.iter_mut());
            for c in r.chunks.iter_mut().chain(records) {
                if let Some(&n) = outcome.sizes.get(&c.id) {
                    c.stored_len = u32::try_from(n).map_err(|_| Error::Format {
                        key: layout::chunk_key(&c.id),
                        cause: FormatError::corrupt(format!("stored object of {n} bytes")),
                    })?;
                }
            }
        }
    }
    Ok(Stored {
        files,
        new_chunks: outcome.new_chunks,
        new_bytes: outcome.new_bytes,
        bytes_read: bytes_read.into_inner(),
    })
}

/// This snapshot's parent: the newest snapshot of the same history (host
/// and source); for the first of a host, the newest version 1 snapshot of
/// the source (taken before hosts were recorded), so that a history that
/// spans the upgrade stays one chain.
fn previous_of(
    repo: &Repository,
    snapshots: &[SnapshotKey],
    host: &str,
    source: &str,
) -> Result<Option<Hash>> {
    // Newest first: the newest snapshot is nearly always this history's;
    // past it, several manifests are read at once (a new history in a
    // repository of thousands reads them all, once).
    let newest_first: Vec<SnapshotKey> = snapshots.iter().rev().copied().collect();
    let mut before_hosts = None;
    let mut start = 0;
    let mut batch = 1;
    while start < newest_first.len() {
        let keys = &newest_first[start..(start + batch).min(newest_first.len())];
        // A damaged older manifest must not block new snapshots; verify
        // reports it.
        let found = repo.map_manifests(keys, |key, m| {
            m.ok()
                .filter(|m| m.source == source)
                .map(|m| (key.id, m.host == host, m.host.is_empty()))
        })?;
        for (id, same_host, no_host) in found.into_iter().flatten() {
            if same_host {
                return Ok(Some(id));
            }
            if no_host && before_hosts.is_none() {
                before_hosts = Some(id);
            }
        }
        start += keys.len();
        batch = crate::repo::MANIFEST_FETCHES * 4;
        // Reading thousands of manifests takes a while: a signal stops it.
        interrupt::check()?;
    }
    Ok(before_hosts)
}

/// Where a walk starts: the source itself (`rel` empty) or an include.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub rel: String,
    pub kind: RootKind,
}

#[derive(Debug, Clone)]
pub(crate) enum RootKind {
    /// A directory, open: the source, an include, or the directory an
    /// include's symlink leads to (followed once, recorded as a directory).
    Dir(Arc<DirFd>),
    /// An include that is a regular file, in its parent directory.
    File { parent: Arc<DirFd>, name: String },
}

impl Root {
    /// The directory the walk of this root reads.
    pub(crate) fn dir(&self) -> Option<&Arc<DirFd>> {
        match &self.kind {
            RootKind::Dir(d) => Some(d),
            RootKind::File { .. } => None,
        }
    }
}

/// The walk's roots: the whole source, or the checked includes without
/// duplicates and without includes inside other includes, each opened from
/// the source's descriptor. An include's ancestors must be real
/// directories; the include itself may be a directory, a regular file, or
/// a symlink to a directory — followed only when it belongs to root or to
/// the user blocksnap runs as, and resolved by the same rule (a link the
/// node's user made is never followed: it could lead to root-only files).
pub(crate) fn roots(source: &Arc<DirFd>, includes: &[String]) -> Result<Vec<Root>> {
    if includes.is_empty() {
        return Ok(vec![Root {
            rel: String::new(),
            kind: RootKind::Dir(source.clone()),
        }]);
    }
    let mut incs = Vec::new();
    for inc in includes {
        let inc = inc.trim_end_matches('/').trim_start_matches("./");
        mpath::check(inc).map_err(Error::format(format!("--include {inc}")))?;
        incs.push(inc.to_string());
    }
    incs.sort();
    incs.dedup();
    let nested = |i: &String| {
        incs.iter()
            .any(|o| o != i && i.starts_with(o.as_str()) && i.as_bytes()[o.len()] == b'/')
    };
    let mut out = Vec::new();
    for inc in incs.iter().filter(|i| !nested(i)) {
        let (parent_rel, name) = match inc.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, inc.as_str()),
        };
        let parent = match parent_rel {
            None => source.clone(),
            Some(p) => Arc::new(source.open_path(p).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    Error::IncludeMissing { path: inc.clone() }
                } else {
                    Error::Refused(format!(
                        "--include {inc}: {p} is not a directory under the source (a symlink is followed only when it is the include itself): {e}"
                    ))
                }
            })?),
        };
        let meta = parent
            .stat(name)
            .map_err(Error::io("stat", parent.join(name)))?
            .ok_or_else(|| Error::IncludeMissing { path: inc.clone() })?;
        let kind = match meta.kind {
            EntryType::Dir => RootKind::Dir(Arc::new(
                parent
                    .open_dir(name)
                    .map_err(Error::io("open", parent.join(name)))?,
            )),
            EntryType::File => RootKind::File {
                parent,
                name: name.to_string(),
            },
            EntryType::Symlink => {
                let at = parent.join(name);
                if meta.uid != 0 && meta.uid != fsx::euid() {
                    return Err(Error::Refused(format!(
                        "--include {inc}: {} is a symlink owned by uid {}, neither root nor the user \
                         blocksnap runs as: not followed (whoever owns it could point it at any file)",
                        at.display(),
                        meta.uid
                    )));
                }
                let target = parent
                    .read_link(name)
                    .map_err(Error::io("read symlink", &at))?;
                let dir = parent.open_trusted_from(&target).map_err(|e| {
                    Error::Refused(format!(
                        "--include {inc}: {} -> {} does not lead to a directory by links of root or \
                         this user only: {e}",
                        at.display(),
                        target.display()
                    ))
                })?;
                RootKind::Dir(Arc::new(dir))
            }
            EntryType::Other => {
                return Err(Error::Refused(format!(
                    "--include {inc}: not a directory, a regular file or a symlink to a directory"
                )))
            }
        };
        out.push(Root {
            rel: inc.clone(),
            kind,
        });
    }
    Ok(out)
}

/// Whether a name is one of blocksnap's own working entries (a stage, a
/// restore's staging directory or journal), which no snapshot records.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(reserved::RESERVED_PREFIX)
}

/// Walks the roots through descriptors, never following a symlink except
/// where a root is one (opened above) and the `regions` a stage made (whose
/// descriptors it gives). Regular files, directories and symlinks are
/// returned (manifest paths still to be set), with the directories they
/// are read through; other kinds are skipped with one warning.
fn walk(
    source: &Arc<DirFd>,
    roots: Vec<Root>,
    regions: Option<&HashMap<String, Arc<DirFd>>>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Item>, Vec<Arc<DirFd>>)> {
    let mut found: Vec<Item> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut leftovers: Vec<String> = Vec::new();
    let mut bases: Vec<Arc<DirFd>> = vec![source.clone()];
    found.extend(include_ancestors(source, &roots)?);
    // (base index, its path below the source) still to walk.
    let mut queue: Vec<(usize, String)> = Vec::new();
    for root in roots {
        match root.kind {
            RootKind::File { parent, name } => {
                let meta = parent
                    .stat(&name)
                    .map_err(Error::io("stat", parent.join(&name)))?
                    .ok_or_else(|| Error::IncludeMissing {
                        path: root.rel.clone(),
                    })?;
                bases.push(parent.clone());
                found.push(Item {
                    path: String::new(),
                    abs: parent.join(&name),
                    rel: root.rel,
                    meta,
                    link: None,
                    base: bases.len() - 1,
                    dir: String::new(),
                    name,
                });
            }
            RootKind::Dir(_) if root.rel.is_empty() => queue.push((0, String::new())),
            RootKind::Dir(dir) => {
                // The include itself: a directory entry with the metadata of
                // the directory it is (or its link leads to), read through
                // its own descriptor (an empty name: the base itself).
                let meta = Meta::of(dir.as_fd()).map_err(Error::io("stat", dir.path()))?;
                bases.push(dir);
                found.push(Item {
                    path: String::new(),
                    abs: source.join(&root.rel),
                    rel: root.rel.clone(),
                    meta,
                    link: None,
                    base: bases.len() - 1,
                    dir: String::new(),
                    name: String::new(),
                });
                queue.push((bases.len() - 1, root.rel));
            }
        }
    }
    while let Some((base, prefix)) = queue.pop() {
        let dir = bases[base].clone();
        let mut visit = |e: &fsx::Walked<'_>| -> Result<bool> {
            interrupt::check()?;
            let rel = if prefix.is_empty() {
                e.rel.clone()
            } else {
                format!("{prefix}/{}", e.rel)
            };
            let below = mpath::parent(&e.rel).unwrap_or("").to_string();
            if is_reserved(&e.name) {
                if e.name != crate::format::reserved::STAGE_DIR {
                    leftovers.push(rel);
                }
                return Ok(false);
            }
            let abs = dir.join(&e.rel);
            let item =
                |meta: Meta, link: Option<String>, base: usize, dir: String, name: String| Item {
                    path: String::new(),
                    rel: rel.clone(),
                    abs: abs.clone(),
                    meta,
                    link,
                    base,
                    dir,
                    name,
                };
            match e.meta.kind {
                EntryType::Symlink => {
                    if let Some(region) = regions.and_then(|r| r.get(&rel)) {
                        let meta =
                            Meta::of(region.as_fd()).map_err(Error::io("stat", region.path()))?;
                        bases.push(region.clone());
                        let b = bases.len() - 1;
                        found.push(item(meta, None, b, String::new(), String::new()));
                        queue.push((b, rel.clone()));
                        return Ok(false);
                    }
                    let target = e
                        .dir
                        .read_link(&e.name)
                        .map_err(Error::io("read symlink", &abs))?;
                    let target = target.to_str().ok_or_else(|| {
                        Error::Refused(format!("{}: symlink target is not UTF-8", abs.display()))
                    })?;
                    found.push(item(
                        e.meta,
                        Some(target.to_string()),
                        base,
                        below,
                        e.name.clone(),
                    ));
                    Ok(false)
                }
                EntryType::File | EntryType::Dir => {
                    found.push(item(e.meta, None, base, below, e.name.clone()));
                    Ok(true)
                }
                EntryType::Other => {
                    skipped.push(rel);
                    Ok(false)
                }
            }
        };
        fsx::walk(&dir, "", &mut visit)?;
    }
    warnings.extend(walk_warnings(&skipped, &leftovers));
    Ok((found, bases))
}

/// The ancestors of each include, as directory entries (an include
/// `a/b/c` records `a` and `a/b` too, with their own metadata).
fn include_ancestors(source: &Arc<DirFd>, roots: &[Root]) -> Result<Vec<Item>> {
    let mut found = Vec::new();
    for root in roots {
        // The include's ancestors become directory entries.
        let mut ancestor = mpath::parent(&root.rel);
        while let Some(dir) = ancestor {
            let (parent, name) = match dir.rsplit_once('/') {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => (String::new(), dir.to_string()),
            };
            let at = if parent.is_empty() {
                source.clone()
            } else {
                Arc::new(
                    source
                        .open_path(&parent)
                        .map_err(Error::io("open", source.join(&parent)))?,
                )
            };
            let meta = at
                .stat(&name)
                .map_err(Error::io("stat", at.join(&name)))?
                .ok_or_else(|| Error::IncludeMissing {
                    path: dir.to_string(),
                })?;
            found.push(Item {
                path: String::new(),
                rel: dir.to_string(),
                abs: source.join(dir),
                meta,
                link: None,
                base: 0,
                dir: parent,
                name,
            });
            ancestor = mpath::parent(dir);
        }
    }
    Ok(found)
}

/// What a walk skipped, said once each.
fn walk_warnings(skipped: &[String], leftovers: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    if !skipped.is_empty() {
        warnings.push(format!(
            "skipped {} entr{} that {} not a regular file, directory or symlink: {}",
            skipped.len(),
            if skipped.len() == 1 { "y" } else { "ies" },
            if skipped.len() == 1 { "is" } else { "are" },
            sample(skipped)
        ));
    }
    if !leftovers.is_empty() {
        warnings.push(format!(
            "skipped blocksnap's own working entries (left by an interrupted run?): {}",
            sample(leftovers)
        ));
    }
    warnings
}

/// Up to five names, and how many more.
pub(crate) fn sample(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" and {} more", names.len() - 5));
    }
    s
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

/// Stores chunks once: remembers what this snapshot has seen, and hands
/// the chunks it has to store to [`Uploads`], so that workers chunk and
/// compress while the store writes.
struct ChunkWriter<'r> {
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
    fn new(repo: &'r Repository, index: ChunkIndex) -> Self {
        ChunkWriter {
            repo,
            index,
            seen: Mutex::new(HashMap::new()),
            compressed: Condvar::new(),
            uploads: Uploads::new(repo.store(), UPLOAD_BUDGET),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// The stored length of the chunk as this snapshot records it, handing
    /// the chunk to the uploads if the store may lack it.
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
    writer.bytes_read.fetch_add(read, Ordering::Relaxed);
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
