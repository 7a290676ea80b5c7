//! Restore's staging phases: the snapshot's tree written into the staging
//! directory — directories, then files (in parallel, largest first; whole
//! files a seed holds linked last), then symlinks, then the directories'
//! times and modes, deepest first. Nothing here touches the target itself:
//! publishing is `execute`'s (in `mod.rs`) and `publish`'s.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::manifest::{ChunkRef, EntryKind};
use crate::id::Hash;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sys::fsx::{self, DirFd};
use crate::sys::interrupt;

use super::seed::Whole;
use super::{parent_of, resume_file, write_file, Counters, PlannedEntry, RestorePlan};

/// Writes the plan's tree into `staging`; returns the number of files and
/// what writing them took.
pub(super) fn stage_tree(
    repo: &Repository,
    plan: &RestorePlan,
    staging: &DirFd,
    jobs: usize,
    progress: &dyn Progress,
) -> Result<(u64, Counters)> {
    // Directories first, parents before children (manifest order).
    for (entry, PlannedEntry { path, .. }) in plan.planned() {
        if matches!(entry.kind, EntryKind::Dir) {
            let (dir, name) =
                parent_of(staging, path).map_err(Error::io("open", staging.path().join(path)))?;
            dir.ensure_dir(&name)
                .map_err(Error::io("create directory", staging.path().join(path)))?;
        }
    }

    let mut files: Vec<(usize, u64, &Hash, &[ChunkRef])> = plan
        .manifest
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
    progress.begin("restore", plan.bytes);
    let seeds = plan.seeds.as_ref();
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
        let rel = &plan.entries[i].path;
        let shown = staging.path().join(rel);
        let (dir, name) = parent_of(staging, rel).map_err(Error::io("open", &shown))?;
        let entry = &plan.manifest.entries[i];
        let whole = Whole {
            size,
            hash,
            mode: plan.entries[i].mode,
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

    for (entry, PlannedEntry { path, .. }) in plan.planned() {
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
    for (entry, PlannedEntry { path, mode }) in plan.planned().rev() {
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
