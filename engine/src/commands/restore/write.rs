//! Restore's staging phases: the snapshot's tree written into the staging
//! directory — directories, then files (in parallel, largest first; whole
//! files a seed holds linked last), then symlinks, then the directories'
//! times and modes, deepest first. Nothing here touches the target itself:
//! publishing is `execute`'s (in `mod.rs`) and `publish`'s.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, EntryKind, Manifest};
use crate::id::Hash;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sys::fsx::{self, DirFd};
use crate::sys::interrupt;

use super::seed::{Seeds, Whole};

/// Writes the manifest's tree, each entry as `entries` plans it, into
/// `staging`, from the store and the `seeds`; `bytes` is the files' total.
/// Returns the number of files and what writing them took.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage_tree(
    repo: &Repository,
    manifest: &Manifest,
    entries: &[PlannedEntry],
    bytes: u64,
    seeds: Option<&Seeds>,
    staging: &DirFd,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<(u64, Counters)> {
    // Directories first, parents before children (manifest order).
    for (entry, PlannedEntry { path, .. }) in manifest.entries.iter().zip(entries) {
        if matches!(entry.kind, EntryKind::Dir) {
            let (dir, name) =
                parent_of(staging, path).map_err(Error::io("open", staging.path().join(path)))?;
            dir.ensure_dir(&name)
                .map_err(Error::io("create directory", staging.path().join(path)))?;
        }
    }

    let mut files: Vec<(usize, u64, &Hash, &[ChunkRef])> = manifest
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.kind {
            EntryKind::File { size, hash, chunks } => Some((i, *size, hash, chunks.as_slice())),
            _ => None,
        })
        .collect();
    // Largest first, so one big file does not start last and run alone.
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    progress.begin("restore", bytes);
    let counts = Counters::default();
    let jobs = if jobs == 0 {
        repo.store().parallelism()
    } else {
        jobs
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {jobs} restore workers: {e}")))?;
    // Files a seed holds whole are linked last, once every other file is
    // written: a restore that fails on the way (a missing chunk, a signal)
    // has then made no link to the node's older files, whose link counts
    // and ctimes stay as they were.
    let deferred: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    let linked: std::sync::Mutex<Vec<(DirFd, String)>> = std::sync::Mutex::new(Vec::new());
    let write = |k: usize, link: bool| -> Result<()> {
        let (i, size, hash, chunks) = files[k];
        interrupt::check()?;
        let rel = &entries[i].path;
        let shown = staging.path().join(rel);
        let (dir, name) = parent_of(staging, rel).map_err(Error::io("open", &shown))?;
        let entry = &manifest.entries[i];
        let whole = Whole {
            size,
            hash,
            mode: entries[i].mode,
            mtime_ns: entry.mtime_ns,
        };
        let file = if link {
            // A kept file already has its mode and mtime: setting them
            // again would only risk touching the older state.
            match seeds.and_then(|s| s.link_whole(&whole, &dir, &name)) {
                Some(_) => {
                    Counters::add(&counts.kept, 1);
                    Counters::add(&counts.bytes_kept, size);
                    linked.lock().expect("linked").push((dir, name));
                    None
                }
                None => Some(write_file(
                    repo, seeds, &dir, &name, rel, hash, chunks, &counts,
                )?),
            }
        } else {
            match resume_file(&dir, &name, size, hash) {
                Some(f) => {
                    Counters::add(&counts.resumed, 1);
                    Some(f)
                }
                None => {
                    dir.remove(&name).map_err(Error::io("replace", &shown))?;
                    let linkable =
                        seeds.and_then(|s| s.has_whole(size, hash, whole.mode, whole.mtime_ns));
                    if linkable.is_some_and(|n| n > 0) {
                        deferred.lock().expect("deferred").push(k);
                        return Ok(());
                    }
                    Some(write_file(
                        repo, seeds, &dir, &name, rel, hash, chunks, &counts,
                    )?)
                }
            }
        };
        if let Some(file) = file {
            fsx::set_file_mode_and_mtime(&file, whole.mode, whole.mtime_ns)
                .map_err(Error::io("set mode and mtime of", &shown))?;
        }
        progress.advance(size);
        Ok(())
    };
    let written = pool
        .install(|| {
            (0..files.len())
                .into_par_iter()
                .try_for_each(|k| write(k, false))
        })
        .and_then(|()| {
            let later = std::mem::take(&mut *deferred.lock().expect("deferred"));
            pool.install(|| later.into_par_iter().try_for_each(|k| write(k, true)))
        });
    if let Err(e) = written {
        // Whatever failed, the links made so far go again (a re-run makes
        // them anew), so the older files' link counts are as they were.
        for (dir, name) in linked.lock().expect("linked").drain(..) {
            let _ = dir.unlink(&name);
        }
        return Err(e);
    }
    progress.end();

    for (entry, PlannedEntry { path, .. }) in manifest.entries.iter().zip(entries) {
        if let EntryKind::Symlink { target: link } = &entry.kind {
            let shown = staging.path().join(path);
            let (dir, name) = parent_of(staging, path).map_err(Error::io("open", &shown))?;
            dir.remove(&name).map_err(Error::io("replace", &shown))?;
            dir.symlink(link, &name)
                .map_err(Error::io("create symlink", &shown))?;
            dir.set_link_mtime(&name, entry.mtime_ns)
                .map_err(Error::io("set mtime of", &shown))?;
        }
    }
    // Directory times and modes last, deepest first, so that neither a
    // read-only directory nor a later write inside it gets in the way.
    // Top-level directories get theirs once published (see `publish`).
    for (entry, PlannedEntry { path, mode }) in manifest.entries.iter().zip(entries).rev() {
        if matches!(entry.kind, EntryKind::Dir) && path.contains('/') {
            let shown = staging.path().join(path);
            let dir = staging.open_path(path).map_err(Error::io("open", &shown))?;
            dir.set_mtime(entry.mtime_ns)
                .and_then(|_| dir.set_mode(*mode))
                .map_err(Error::io("set mode and mtime of", &shown))?;
        }
    }
    Ok((files.len() as u64, counts))
}

/// One manifest entry as this restore writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    /// Its final path, relative to the target (the address put back).
    pub path: String,
    /// The mode it gets (after the special-bits policy).
    pub mode: u32,
}

/// The directory that holds `path` in `root`, entered without following
/// symlinks.
pub(super) fn parent_of(root: &DirFd, path: &str) -> io::Result<(DirFd, String)> {
    let (parent, name) = split(path);
    let dir = match parent {
        Some(p) => root.open_path(p)?,
        None => root.try_clone()?,
    };
    Ok((dir, name.to_string()))
}

/// A file an interrupted run completed: a regular file (opened without
/// following links) of the right size whose bytes hash right.
fn resume_file(dir: &DirFd, name: &str, size: u64, hash: &Hash) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    let mut f = dir.open_file(name).ok()?;
    let m = f.metadata().ok()?;
    if m.len() != size || m.nlink() != 1 || m.uid() != fsx::euid() {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    (Hash::from(hasher.finalize()) == *hash).then_some(f)
}

/// What the restore workers did, summed.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) chunks: AtomicU64,
    pub(super) bytes_downloaded: AtomicU64,
    pub(super) stored_downloaded: AtomicU64,
    pub(super) bytes_copied: AtomicU64,
    pub(super) kept: AtomicU64,
    pub(super) bytes_kept: AtomicU64,
    pub(super) resumed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Writes a file from its chunks, each taken from a seed when one holds it
/// (checked against its id) or fetched and checked against its id, and the
/// whole checked against the file's hash. A file that fails is removed: no
/// partial file stays behind.
#[allow(clippy::too_many_arguments)]
fn write_file(
    repo: &Repository,
    seeds: Option<&Seeds>,
    dir: &DirFd,
    name: &str,
    rel: &str,
    hash: &Hash,
    chunks: &[ChunkRef],
    counts: &Counters,
) -> Result<File> {
    let shown = dir.join(name);
    let mut f = dir
        .create_file(name, 0o600)
        .map_err(Error::io("create", &shown))?;
    let written = (|| {
        let mut hasher = blake3::Hasher::new();
        let mut offset = 0u64;
        let mut local = seeds.map(Seeds::reader);
        for chunk in chunks {
            interrupt::check()?;
            let bytes = match local.as_mut().and_then(|r| r.read(chunk)) {
                Some(bytes) => {
                    Counters::add(&counts.bytes_copied, bytes.len() as u64);
                    bytes
                }
                None => {
                    let bytes = repo.read_chunk(chunk).map_err(|e| Error::BadChunk {
                        path: rel.to_string(),
                        chunk: chunk.id,
                        offset,
                        cause: Box::new(e),
                    })?;
                    Counters::add(&counts.chunks, 1);
                    Counters::add(&counts.bytes_downloaded, bytes.len() as u64);
                    Counters::add(&counts.stored_downloaded, u64::from(chunk.stored_len));
                    bytes
                }
            };
            hasher.update(&bytes);
            f.write_all(&bytes).map_err(Error::io("write", &shown))?;
            offset += bytes.len() as u64;
        }
        let actual: Hash = hasher.finalize().into();
        if actual != *hash {
            return Err(Error::FileHashMismatch {
                path: rel.to_string(),
                expected: hash.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(())
    })();
    if let Err(e) = written {
        drop(f);
        let _ = dir.unlink(name);
        return Err(e);
    }
    // Made durable for the whole tree at once by `syncfs`: a worker that
    // waited here for each file would leave the CPU idle and the disk
    // queue short.
    Ok(f)
}

/// A path's parent (if any) and last name.
pub(super) fn split(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, path),
    }
}
