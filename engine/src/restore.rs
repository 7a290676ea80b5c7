//! Restoring a snapshot into a directory.
//!
//! Everything is written into a staging directory beside the target
//! (`.NAME.blocksnap-restore-ID` in the target's parent, so on the same
//! filesystem) and moved into place only when every file has been written,
//! checked against its whole-file hash and made durable (one `syncfs`). A failed restore leaves
//! the staging directory, never a complete-looking target; re-running the
//! same restore resumes from it, keeping the files that already check out.
//!
//! Every chunk is hashed before its bytes reach a file, and every file is
//! hashed after, so nothing unverified is restored. Paths come from an
//! untrusted manifest: `Manifest::decode` has refused absolute paths, `..`,
//! entries below non-directories and symlinks that leave the tree; here
//! nothing is written through a symlink because symlinks are created last.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::layout::SnapshotKey;
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use crate::format::path as mpath;
use crate::id::Hash;
use crate::ipnorm::{self, IpError};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::store::Counts;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// The target node's IPv4 address, as given by the operator.
    pub ip: Option<String>,
    /// Replace the snapshot's top-level entries in a non-empty target.
    pub force: bool,
    /// Parallel fetches (0: what the store suggests: one per CPU locally,
    /// tens over a network).
    pub jobs: usize,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub key: SnapshotKey,
    pub target: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub chunks_fetched: u64,
    /// Files already complete in the staging directory of an earlier run.
    pub files_resumed: u64,
    /// Store requests made, for stores that count them.
    pub requests: Option<Counts>,
    pub duration: Duration,
}

/// What will be restored where: everything is checked before any write.
pub struct RestorePlan {
    pub key: SnapshotKey,
    pub manifest: Manifest,
    /// Final relative path of each entry (IP put back), in manifest order.
    pub paths: Vec<String>,
    pub target: PathBuf,
    pub staging: PathBuf,
}

pub fn plan(repo: &Repository, key: &SnapshotKey, opts: &RestoreOptions) -> Result<RestorePlan> {
    let manifest = repo.load_manifest(key)?;
    let ip: Option<Ipv4Addr> = opts.ip.as_deref().map(ipnorm::parse_ip).transpose()?;
    let normalised: Vec<String> = manifest
        .entries
        .iter()
        .filter(|e| ipnorm::is_normalised(&e.path))
        .map(|e| e.path.clone())
        .collect();
    let paths: Vec<String> = match ip {
        None if !normalised.is_empty() => {
            return Err(IpError::Required { paths: normalised }.into())
        }
        None => manifest.entries.iter().map(|e| e.path.clone()).collect(),
        Some(ip) => manifest
            .entries
            .iter()
            .map(|e| ipnorm::denormalise(&e.path, ip))
            .collect(),
    };
    for p in &paths {
        mpath::check(p).map_err(Error::format(key.key()))?;
    }

    let target = absolute(&opts.target)?;
    let name = target.file_name().ok_or_else(|| {
        Error::Refused(format!(
            "restore target {} has no directory name",
            target.display()
        ))
    })?;
    let parent = target
        .parent()
        .expect("a path with a file name has a parent")
        .to_path_buf();
    let staging = parent.join(format!(
        ".{}.blocksnap-restore-{}",
        name.to_string_lossy(),
        key.id.short()
    ));
    match fs::symlink_metadata(&target) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Refused(format!(
                "restore target {} exists and is not a directory",
                target.display()
            )))
        }
        Ok(_) if !opts.force => {
            let mut entries = fs::read_dir(&target).map_err(Error::io("read", &target))?;
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty { path: target });
            }
        }
        _ => {}
    }
    Ok(RestorePlan {
        key: *key,
        manifest,
        paths,
        target,
        staging,
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(Error::io("resolve", p))
}

pub fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let requests_before = repo.store().request_counts();
    let parent = plan.staging.parent().expect("staging has a parent");
    fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
    fs::create_dir_all(&plan.staging).map_err(Error::io("create", &plan.staging))?;

    // Directories first (modes and times are set last, deepest first, so
    // that a read-only directory does not block its own contents).
    for (entry, rel) in plan.manifest.entries.iter().zip(&plan.paths) {
        if matches!(entry.kind, EntryKind::Dir) {
            let p = plan.staging.join(rel);
            match fs::create_dir(&p) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                other => other.map_err(Error::io("create directory", &p))?,
            }
        }
    }

    let mut files: Vec<(&Entry, &String, u64, &Hash, &[ChunkRef])> = plan
        .manifest
        .entries
        .iter()
        .zip(&plan.paths)
        .filter_map(|(e, rel)| match &e.kind {
            EntryKind::File { size, hash, chunks } => {
                Some((e, rel, *size, hash, chunks.as_slice()))
            }
            _ => None,
        })
        .collect();
    // Largest first, so one big file does not start last and run alone.
    files.sort_by_key(|f| std::cmp::Reverse(f.2));
    let total: u64 = files.iter().map(|f| f.2).sum();
    progress.begin("restore", total);
    let fetched = AtomicU64::new(0);
    let resumed = AtomicU64::new(0);
    let jobs = if opts.jobs == 0 {
        repo.store().parallelism()
    } else {
        opts.jobs
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {jobs} restore workers: {e}")))?;
    pool.install(|| {
        files
            .par_iter()
            .try_for_each(|&(entry, rel, size, hash, chunks)| {
                let path = plan.staging.join(rel);
                if already_restored(&path, size, hash) {
                    resumed.fetch_add(1, Ordering::Relaxed);
                } else {
                    write_file(repo, &path, rel, hash, chunks)?;
                    fetched.fetch_add(chunks.len() as u64, Ordering::Relaxed);
                }
                set_mode_and_mtime(&path, entry)?;
                progress.advance(size);
                Ok::<_, Error>(())
            })
    })?;
    progress.end();

    for (entry, rel) in plan.manifest.entries.iter().zip(&plan.paths) {
        if let EntryKind::Symlink { target } = &entry.kind {
            let p = plan.staging.join(rel);
            if fs::symlink_metadata(&p).is_ok() {
                fs::remove_file(&p).map_err(Error::io("replace symlink", &p))?;
            }
            std::os::unix::fs::symlink(target, &p).map_err(Error::io("create symlink", &p))?;
            set_link_mtime(&p, entry.mtime_ns)?;
        }
    }
    for (entry, rel) in plan.manifest.entries.iter().zip(&plan.paths).rev() {
        if matches!(entry.kind, EntryKind::Dir) {
            set_mode_and_mtime(&plan.staging.join(rel), entry)?;
        }
    }
    sync_tree(&plan.staging)?;
    move_into_place(plan, opts.force)?;

    Ok(RestoreReport {
        key: plan.key,
        target: plan.target.clone(),
        files: files.len() as u64,
        bytes: total,
        chunks_fetched: fetched.into_inner(),
        files_resumed: resumed.into_inner(),
        requests: repo
            .store()
            .request_counts()
            .map(|c| c.since(requests_before)),
        duration: started.elapsed(),
    })
}

/// A file left by an interrupted run counts only if its bytes hash right.
fn already_restored(path: &Path, size: u64, hash: &Hash) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == size => {
            hash_file(path).map(|h| h == *hash).unwrap_or(false)
        }
        _ => false,
    }
}

fn hash_file(path: &Path) -> io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

fn write_file(
    repo: &Repository,
    path: &Path,
    rel: &str,
    hash: &Hash,
    chunks: &[ChunkRef],
) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path).map_err(Error::io("replace", path))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io("create", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    for chunk in chunks {
        let bytes = repo.read_chunk(chunk).map_err(|e| Error::BadChunk {
            path: rel.to_string(),
            chunk: chunk.id,
            offset,
            source: Box::new(e),
        })?;
        hasher.update(&bytes);
        f.write_all(&bytes).map_err(Error::io("write", path))?;
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
    // Made durable for the whole tree at once by `sync_tree`: a worker that
    // waited here for each file would leave the CPU idle and the disk queue
    // short.
    Ok(())
}

fn set_mode_and_mtime(path: &Path, entry: &Entry) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode))
        .map_err(Error::io("set mode of", path))?;
    let mtime = system_time(entry.mtime_ns);
    let f = File::open(path).map_err(Error::io("open", path))?;
    f.set_times(fs::FileTimes::new().set_modified(mtime))
        .map_err(Error::io("set mtime of", path))
}

fn system_time(ns: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    if ns >= 0 {
        epoch + Duration::from_nanos(ns as u64)
    } else {
        epoch - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// std cannot set a symlink's own times; utimensat with
/// AT_SYMLINK_NOFOLLOW can.
pub(crate) fn set_link_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Refused(format!("{}: NUL in path", path.display())))?;
    let mtime = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        mtime,
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` points to two
    // initialised timespecs, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(Error::Io {
            op: "set mtime of",
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Makes the staged tree durable before the rename that publishes it:
/// `syncfs` flushes every file and directory on the target's filesystem in
/// one call, letting the kernel write back in the order it likes.
fn sync_tree(root: &Path) -> Result<()> {
    let dir = File::open(root).map_err(Error::io("open", root))?;
    // SAFETY: syncfs takes any open file descriptor; `dir` outlives the call.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if rc != 0 {
        return Err(Error::Io {
            op: "syncfs",
            path: root.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Publishes the staged tree. An absent or empty target is replaced by one
/// rename; with `force`, each top-level entry of the snapshot replaces its
/// namesake in the target and everything else in the target stays.
fn move_into_place(plan: &RestorePlan, force: bool) -> Result<()> {
    let target = &plan.target;
    let empty_or_absent = match fs::read_dir(target) {
        Ok(mut it) => it.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io("read", target)(e)),
    };
    if empty_or_absent {
        fs::rename(&plan.staging, target).map_err(Error::io("move restored tree to", target))?;
    } else {
        if !force {
            return Err(Error::TargetNotEmpty {
                path: target.clone(),
            });
        }
        for rel in &plan.paths {
            if rel.contains('/') {
                continue;
            }
            let dest = target.join(rel);
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {
                    fs::remove_dir_all(&dest).map_err(Error::io("replace", &dest))?
                }
                Ok(_) => fs::remove_file(&dest).map_err(Error::io("replace", &dest))?,
                Err(_) => {}
            }
            fs::rename(plan.staging.join(rel), &dest)
                .map_err(Error::io("move restored entry to", &dest))?;
        }
        fs::remove_dir(&plan.staging)
            .map_err(Error::io("remove staging directory", &plan.staging))?;
    }
    let parent = target.parent().expect("target has a parent");
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", parent))
}
