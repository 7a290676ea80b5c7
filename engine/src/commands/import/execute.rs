//! Reading the archive: one thread reads tar entries and cuts each file's
//! bytes as they stream by (FastCDC, as a snapshot cuts a file), hashing
//! the whole file; `jobs` workers hash, compress and hand each chunk to the
//! snapshot's chunk writer, whose put threads store it. Between reader and
//! workers a queue of `2 × jobs` chunks bounds memory: at most that many
//! chunks (4 MiB each with the default chunker) plus the upload budget.
//!
//! The tree is checked as it is read (names, kinds, hard links) and again,
//! whole, by a restore's rules before the manifest is committed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Mutex;
use std::time::Instant;

use super::archive::{self, check_end, read_error};
use super::{ImportOptions, ImportPlan, ImportReport};
use crate::commands::snapshot::cache::ChunkIndex;
use crate::commands::snapshot::{self, ChunkWriter, Header, MIN_PUTTERS};
use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, Entry, EntryKind};
use crate::format::path as mpath;
use crate::format::{limits, FormatError};
use crate::id::Hash;
use crate::ipnorm;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sys::interrupt;

/// An entry as read, before the node's address is taken out of its path.
struct Read1 {
    path: String,
    mode: u32,
    mtime_ns: i64,
    kind: Kind,
}

enum Kind {
    Dir,
    Symlink(String),
    /// The `n`th file read (its chunks are the workers' results for `n`).
    File {
        n: usize,
        size: u64,
        hash: Hash,
    },
}

/// A chunk on its way to a worker: file `n`'s chunk number `seq`.
struct Piece {
    n: usize,
    seq: u32,
    data: Vec<u8>,
}

/// Reads the archive and commits it as a snapshot.
pub fn execute(
    repo: &Repository,
    plan: &ImportPlan,
    opts: &ImportOptions,
    input: impl Read,
    progress: &dyn Progress,
) -> Result<ImportReport> {
    let started = Instant::now();
    let what = opts.name.as_deref().unwrap_or("standard input");
    let session = repo.begin_write()?;
    let snapshots = repo.snapshots()?;
    let (tar_bytes, compression, counted) = archive::open(input, what)?;

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (jobs, putters) = match opts.jobs {
        0 => (cpus, repo.store().parallelism().max(MIN_PUTTERS)),
        n => (n.min(cpus), n),
    };
    let writer = ChunkWriter::new(repo, ChunkIndex::default());
    let pieces: Mutex<Vec<(usize, u32, ChunkRef)>> = Mutex::new(Vec::new());
    progress.begin("import", 0);
    let read = writer.run(putters, || {
        let failed = AtomicBool::new(false);
        let worker_error: Mutex<Option<Error>> = Mutex::new(None);
        let (tx, rx) = sync_channel::<Piece>(2 * jobs);
        let rx = Mutex::new(rx);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| {
                    if let Err(e) = work(&rx, &writer, repo, &failed, &pieces) {
                        failed.store(true, Ordering::Relaxed);
                        worker_error.lock().expect("lock").get_or_insert(e);
                    }
                });
            }
            let read = read_entries(tar_bytes, what, repo, &failed, progress, |p| {
                tx.send(p)
                    .map_err(|_| Error::Refused("import workers stopped".into()))
            });
            drop(tx);
            read
        })
        .and_then(|read| match worker_error.into_inner().expect("lock") {
            Some(e) => Err(e),
            None => Ok(read),
        })
    });
    let (outcome, _) = writer.finish()?;
    let read = read?;
    progress.end();

    // Each file's chunks, in order, with the sizes the store holds.
    let mut pieces = pieces.into_inner().expect("lock");
    outcome.fix_sizes(pieces.iter_mut().map(|(_, _, c)| c))?;
    pieces.sort_unstable_by_key(|(n, seq, _)| (*n, *seq));
    let mut chunks: Vec<Vec<ChunkRef>> = vec![Vec::new(); read.files];
    for (n, _, c) in pieces {
        chunks[n].push(c);
    }

    let (entries, ip) = finish_tree(read.entries, &chunks, opts.ip, plan.created_unix_ns, what)?;
    let head = Header {
        height: plan.height,
        created_unix_ns: plan.created_unix_ns,
        source: plan.source.clone(),
        host: opts.host.clone(),
        block: None,
        tags: opts.tags.clone(),
        warnings: Vec::new(),
        new_chunks: outcome.new_chunks,
        new_bytes: outcome.new_bytes,
        check_tree: true,
    };
    let signer = opts.signer.as_deref();
    let (key, manifest) = snapshot::commit(repo, &session, &snapshots, head, entries, signer)
        .map_err(|e| match e {
            // A tree a restore would refuse (checked whole at the commit).
            Error::Refused(m) => Error::Refused(format!("{what}: {m}; nothing imported")),
            Error::Format { key, cause } => {
                Error::Refused(format!("{what}: {key}: {cause}; nothing imported"))
            }
            other => other,
        })?;
    let stats = &manifest.stats;
    Ok(ImportReport {
        snapshot: key.id.to_hex(),
        height: key.height,
        created_unix_ns: key.created_unix_ns,
        compression,
        archive_bytes: counted.load(Ordering::Relaxed),
        entries: manifest.entries.len() as u64,
        files: stats.files,
        logical_bytes: stats.logical_bytes,
        new_chunks: stats.new_chunks,
        new_stored_bytes: stats.new_stored_bytes,
        reused_chunk_refs: stats.chunk_refs - stats.new_chunks.min(stats.chunk_refs),
        normalised_ip: ip,
        warnings: manifest.warnings.clone(),
        duration: started.elapsed(),
    })
}

/// A worker: hashes, compresses and hands over chunks until the queue
/// closes. After a failure anywhere it only drains the queue, so that the
/// reader never waits on a full one.
fn work(
    rx: &Mutex<Receiver<Piece>>,
    writer: &ChunkWriter<'_>,
    repo: &Repository,
    failed: &AtomicBool,
    out: &Mutex<Vec<(usize, u32, ChunkRef)>>,
) -> Result<()> {
    let mut compressor = zstd::bulk::Compressor::new(repo.config().zstd_level)
        .map_err(|e| Error::Refused(format!("cannot start zstd: {e}")))?;
    let mut done = Vec::new();
    loop {
        let piece = match rx.lock().expect("queue lock").recv() {
            Ok(p) => p,
            Err(_) => break,
        };
        if failed.load(Ordering::Relaxed) {
            continue;
        }
        let id = Hash::of(&piece.data);
        let stored_len = writer.put(&piece.data, id, &mut compressor)?;
        writer.count_read(piece.data.len() as u64);
        done.push((
            piece.n,
            piece.seq,
            ChunkRef {
                id,
                len: piece.data.len() as u32,
                stored_len,
            },
        ));
    }
    out.lock().expect("lock").append(&mut done);
    Ok(())
}

/// What the reader found.
struct ReadTree {
    entries: Vec<Read1>,
    files: usize,
}

/// Reads every entry of the tar stream, checking each, and sends each
/// file's chunks to the workers; then checks that the archive ended as an
/// archive ends.
fn read_entries(
    tar_bytes: Box<dyn Read + '_>,
    what: &str,
    repo: &Repository,
    failed: &AtomicBool,
    progress: &dyn Progress,
    mut send: impl FnMut(Piece) -> Result<()>,
) -> Result<ReadTree> {
    let params = repo.config().chunker;
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries: Vec<Read1> = Vec::new();
    // Regular files by path: what a hard link may name.
    let mut files: HashMap<String, (usize, u64, Hash)> = HashMap::new();
    let mut n_files = 0usize;
    let tar_entries = archive.entries().map_err(|e| read_error(what, e))?;
    for (i, entry) in tar_entries.enumerate() {
        interrupt::check()?;
        if failed.load(Ordering::Relaxed) {
            break;
        }
        let mut entry = entry.map_err(|e| {
            Error::Refused(format!(
                "{what}: entry {}: not a valid tar entry: {e}",
                i + 1
            ))
        })?;
        let header = entry.header();
        let kind = header.entry_type();
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |why: String| {
            Error::Refused(format!("{what}: entry {name:?}: {why}; nothing imported"))
        };
        if kind.is_pax_global_extensions() {
            continue;
        }
        let Some(path) = tree_path(&raw).map_err(refuse)? else {
            // The archive's root itself (`./`).
            continue;
        };
        let mode = header
            .mode()
            .map_err(|e| refuse(format!("bad mode: {e}")))?
            & 0o7777;
        let mtime = header
            .mtime()
            .map_err(|e| refuse(format!("bad time: {e}")))?;
        let mtime_ns = i64::try_from(mtime)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .ok_or_else(|| refuse(format!("time {mtime} out of range")))?;
        let link = |entry: &tar::Entry<'_, _>| -> Result<String> {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refuse("a link without a target".into()))?;
            String::from_utf8(target.into_owned())
                .map_err(|_| refuse("a link target that is not UTF-8".into()))
        };
        let kind = match kind {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => {
                let target = link(&entry)?;
                mpath::check_link_target_contained(&path, &target).map_err(|e| {
                    refuse(format!(
                        "a symlink to {target:?}, which a restore could not keep inside its \
                         target ({e})"
                    ))
                })?;
                Kind::Symlink(target)
            }
            tar::EntryType::Link => {
                let target = link(&entry)?;
                let of = tree_path(target.as_bytes())
                    .ok()
                    .flatten()
                    .and_then(|t| files.get(&t).copied());
                let Some((n, size, hash)) = of else {
                    return Err(refuse(format!(
                        "a hard link to {target:?}, which is not a file the archive holds before it"
                    )));
                };
                Kind::File { n, size, hash }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let n = n_files;
                n_files += 1;
                let declared = entry.size();
                let (size, hash) =
                    stream_file(&mut entry, n, &params, &mut send).map_err(|e| match e {
                        Error::Refused(m) if m.starts_with("import workers") => Error::Refused(m),
                        Error::Interrupted { .. } => e,
                        other => refuse(other.to_string()),
                    })?;
                if size != declared {
                    return Err(refuse(format!(
                        "its header says {declared} bytes, the archive ends after {size}: truncated"
                    )));
                }
                progress.advance(size);
                files.insert(path.clone(), (n, size, hash));
                Kind::File { n, size, hash }
            }
            other => {
                let what = match other {
                    tar::EntryType::Char | tar::EntryType::Block => "a device file",
                    tar::EntryType::Fifo => "a fifo",
                    tar::EntryType::GNUSparse => "a sparse file",
                    _ => "an entry of a kind a node's data directory does not hold",
                };
                return Err(refuse(format!("{what} ({other:?}), which import refuses")));
            }
        };
        entries.push(Read1 {
            path,
            mode,
            mtime_ns,
            kind,
        });
        FormatError::check_limit("entries", entries.len() as u64, limits::MAX_ENTRIES)
            .map_err(Error::format(what.to_string()))?;
    }
    let mut rest = archive.into_inner();
    if !failed.load(Ordering::Relaxed) {
        check_end(&mut rest, what)?;
    }
    Ok(ReadTree {
        entries,
        files: n_files,
    })
}

/// An entry's name as a tree path: `./` and trailing `/` dropped; `None`
/// for the root. Absolute names and names that climb are refused.
fn tree_path(raw: &[u8]) -> std::result::Result<Option<String>, String> {
    let name = std::str::from_utf8(raw).map_err(|_| "a name that is not UTF-8".to_string())?;
    if name.starts_with('/') {
        return Err("an absolute name, which would be written outside the target".into());
    }
    let parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("a name that climbs out of the archive with `..`".into());
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let path = parts.join("/");
    mpath::check(&path).map_err(|e| e.to_string())?;
    Ok(Some(path))
}

/// Streams one file's bytes through the chunker to the workers; returns
/// its size and hash.
fn stream_file(
    entry: &mut dyn Read,
    n: usize,
    params: &crate::format::config::ChunkerParams,
    send: &mut impl FnMut(Piece) -> Result<()>,
) -> Result<(u64, Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let stream = fastcdc::v2020::StreamCDC::new(
        entry,
        params.min_size as usize,
        params.avg_size as usize,
        params.max_size as usize,
    );
    for (seq, c) in stream.enumerate() {
        interrupt::check()?;
        let c = c.map_err(|e| Error::Refused(format!("reading it failed: {e}")))?;
        hasher.update(&c.data);
        size += c.data.len() as u64;
        let seq = u32::try_from(seq).map_err(|_| Error::Refused("too many chunks".into()))?;
        send(Piece {
            n,
            seq,
            data: c.data,
        })?;
    }
    Ok((size, hasher.finalize().into()))
}

/// The manifest's entries: the node's address taken out of the paths (or
/// the archive's `CHANGEIP` kept), missing parent directories added, in
/// path order; duplicates refused.
fn finish_tree(
    read: Vec<Read1>,
    chunks: &[Vec<ChunkRef>],
    ip: Option<Ipv4Addr>,
    created_unix_ns: u64,
    what: &str,
) -> Result<(Vec<Entry>, Option<Ipv4Addr>)> {
    let mut addrs: Vec<Ipv4Addr> = read.iter().flat_map(|e| ipnorm::find(&e.path)).collect();
    addrs.sort();
    addrs.dedup();
    // The old script's archives hold `CHANGEIP` already: no address to
    // take out, whatever --ip says.
    let ip = match addrs.is_empty() {
        true => None,
        false => ipnorm::choose(&addrs, ip)?,
    };
    let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
    for e in read {
        let path = match ip {
            Some(ip) => ipnorm::normalise(&e.path, ip)?,
            None => e.path,
        };
        let kind = match e.kind {
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink(target) => EntryKind::Symlink { target },
            Kind::File { n, size, hash } => EntryKind::File {
                size,
                hash,
                chunks: chunks[n].clone(),
            },
        };
        let entry = Entry {
            path: path.clone(),
            mode: e.mode,
            mtime_ns: e.mtime_ns,
            kind,
        };
        if tree.insert(path.clone(), entry).is_some() {
            return Err(Error::Refused(format!(
                "{what}: entry {path:?} appears twice in the archive (a later one would replace \
                 the earlier on extraction); nothing imported"
            )));
        }
    }
    // Parents the archive leaves implicit (`tar -cf x a/b/file`).
    let implied: Vec<String> = tree
        .keys()
        .flat_map(|p| {
            p.match_indices('/')
                .map(|(i, _)| p[..i].to_string())
                .collect::<Vec<_>>()
        })
        .filter(|p| !tree.contains_key(p))
        .collect();
    for p in implied {
        tree.entry(p.clone()).or_insert(Entry {
            path: p,
            mode: 0o755,
            mtime_ns: i64::try_from(created_unix_ns).unwrap_or(i64::MAX),
            kind: EntryKind::Dir,
        });
    }
    // Path order by bytes, as the manifest keeps it (a BTreeMap of
    // Strings orders by bytes).
    Ok((tree.into_values().collect(), ip))
}
