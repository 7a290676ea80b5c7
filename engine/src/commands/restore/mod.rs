//! Restoring a snapshot into a directory.
//!
//! [`plan`] decides everything before anything is written: the manifest is
//! loaded and checked, the node's address put back into the paths and the
//! whole tree checked again (unique names, name length on the target's
//! filesystem, symlinks that cannot lead out, blocksnap's reserved names),
//! modes filtered, the target inspected (not a live database, not occupied
//! without `--force`) and the space needed compared with the space free and
//! with the operator's cap. The plan is the dry run.
//!
//! [`restore`] then writes everything into a staging directory inside the
//! target (`<target>/.blocksnap-restore-<snapshot id>-<address>`, on the
//! target's own filesystem even when the target is a mount point), checks
//! every chunk against its id before its bytes reach a file and every file
//! against its whole-file hash after, makes the staged tree durable with one
//! `syncfs`, and publishes it ([`crate::commands::restore::publish`]): the snapshot's
//! top-level entries replace their namesakes as one recoverable set, and the
//! entries they replace are removed only once every new one is in place.
//!
//! Nothing is created, opened or removed through a symlink: the staging tree
//! is built through directory descriptors ([`crate::sys::fsx`]), a file is
//! created only where nothing exists, and an entry found in the staging
//! directory from an earlier run is trusted for nothing but a resume: a file
//! is kept if it is a regular file whose bytes hash right, anything else is
//! removed. A failed restore leaves the staging directory (re-running
//! resumes from it) and never a partial file or a complete-looking tree.

mod write;

use self::write::split;
pub use self::write::PlannedEntry;

pub mod publish;
pub mod seed;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::publish::{Journal, Move, RESERVED_PREFIX};
use crate::error::{Error, Result};
use crate::format::layout::SnapshotKey;
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use crate::format::path as mpath;
use crate::format::reserved;
use crate::id::Hash;
use crate::ipnorm::{self, IpError};
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::sys::fsx::{DirFd, EntryType};
use crate::sys::interrupt;
use crate::sys::live;

use self::seed::{SeedRoot, SeedStats, Seeds, Whole};
use crate::store::Counts;

/// Mode bits dropped unless the operator keeps them: setuid, setgid and
/// write permission for others. A snapshot from a public bucket restored by
/// root must not plant a setuid binary or a world-writable file.
pub const SPECIAL_MODE_BITS: u32 = 0o6002;

/// Free space a restore leaves on the target's filesystem beyond what the
/// plan writes, for directories, metadata and the node's own next writes.
const SPACE_MARGIN: u64 = 64 << 20;

/// Free inodes a restore leaves on the target's filesystem.
const INODE_MARGIN: u64 = 1024;

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
    /// Restore setuid, setgid and world-writable bits as recorded.
    pub keep_special_modes: bool,
    /// Refuse a restore that would write more than this many bytes.
    pub max_bytes: Option<u64>,
    /// Restore even when a database under the target is open.
    pub allow_live: bool,
    /// Keep the entries a `--force` restore replaced (in a directory beside
    /// them, named in the report) instead of removing them at the end.
    pub keep_old: bool,
    /// Other directories whose files may hold the snapshot's bytes (e.g. a
    /// copy of the node, another node's data): read, never written.
    pub reuse_from: Vec<PathBuf>,
    /// Do not read the entries a `--force` restore replaces as seeds.
    pub no_reuse: bool,
    /// Restore goloop's consensus write-ahead logs (`<chain>/wal/`) too;
    /// by default each is left empty (see `commands::profile`).
    pub with_consensus_wal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    #[serde(skip)]
    pub key: SnapshotKey,
    pub target: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub chunks_fetched: u64,
    /// Uncompressed and stored bytes of the chunks fetched from the store.
    pub bytes_downloaded: u64,
    pub stored_bytes_downloaded: u64,
    /// Files kept whole from the target's older state (hard-linked after
    /// their hash was checked) and their bytes.
    pub files_kept: u64,
    pub bytes_kept: u64,
    /// Bytes of chunks copied from local seed files (each checked).
    pub bytes_copied: u64,
    /// What reading the seeds cost.
    pub seeds: SeedStats,
    /// Files already complete in the staging directory of an earlier run.
    pub files_resumed: u64,
    /// Entries whose setuid, setgid or world-write bits were dropped.
    pub modes_stripped: u64,
    /// Where the entries this restore replaced were kept (`keep_old`).
    pub old_entries: Option<PathBuf>,
    /// An interrupted publish found in the target and completed first.
    pub completed_interrupted: Option<String>,
    /// Staging directories of other, abandoned restores into this target
    /// that were removed after this one succeeded.
    pub stale_stagings_removed: u64,
    /// Store requests made, for stores that count them.
    pub requests: Option<Counts>,
    #[serde(skip)]
    pub duration: Duration,
}

/// Where the bytes still to write come from.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReusePlan {
    /// Whole files of the target's older state that will be kept (linked).
    pub files_kept: u64,
    pub bytes_kept: u64,
    /// Bytes copied from seed files.
    pub bytes_copied: u64,
    /// Uncompressed and stored bytes to download.
    pub bytes_to_download: u64,
    pub stored_bytes_to_download: u64,
}

/// What will be restored where: everything is checked before any write.
#[derive(Debug)]
pub struct RestorePlan {
    pub key: SnapshotKey,
    pub manifest: Manifest,
    /// How each manifest entry is written, in manifest order.
    pub entries: Vec<PlannedEntry>,
    /// Entries whose mode the policy changed.
    pub modes_stripped: u64,
    pub target: PathBuf,
    /// Name of the staging directory inside the target.
    pub staging: String,
    /// The snapshot's top-level names, which publishing replaces.
    pub top_level: Vec<String>,
    /// Bytes of all files.
    pub bytes: u64,
    /// Of those, bytes not already staged by an earlier run at full size.
    pub bytes_to_write: u64,
    /// Free bytes on the target's filesystem when planned.
    pub free_bytes: u64,
    /// Local files that hold some of the snapshot's bytes, if any were read.
    pub seeds: Option<Seeds>,
    /// Where the bytes still to write will come from (an estimate: a seed
    /// may change before it is used, and is then downloaded instead).
    pub reuse: ReusePlan,
    /// An interrupted publish in the target, completed before this one.
    pub pending: Option<Journal>,
    /// goloop consensus logs the snapshot holds and this restore leaves
    /// empty (without `--with-consensus-wal`), with the entries left out.
    pub withheld_wals: Vec<String>,
    pub withheld_entries: u64,
}

impl RestorePlan {
    /// Each manifest entry with how it is written, in manifest order.
    pub fn planned(&self) -> impl DoubleEndedIterator<Item = (&Entry, &PlannedEntry)> {
        self.manifest.entries.iter().zip(&self.entries)
    }
}

/// The staging directory's name: the whole snapshot id and the address, so
/// that a resume never mixes two snapshots or two addresses.
pub fn staging_name(key: &SnapshotKey, ip: Option<Ipv4Addr>) -> String {
    reserved::staging_name(&key.id.to_hex(), ip)
}

pub fn plan(repo: &Repository, key: &SnapshotKey, opts: &RestoreOptions) -> Result<RestorePlan> {
    let mut manifest = repo.load_manifest(key)?;
    // Another node's consensus state is never put onto a node unasked.
    let mut withheld_wals = crate::commands::profile::consensus_wals(&manifest);
    let mut withheld_entries = 0;
    if opts.with_consensus_wal {
        withheld_wals.clear();
    } else if !withheld_wals.is_empty() {
        withheld_entries =
            crate::commands::profile::without_consensus_wals(&mut manifest, &withheld_wals);
    }
    let ip: Option<Ipv4Addr> = opts.ip.as_deref().map(ipnorm::parse_ip).transpose()?;
    let paths = final_paths(&manifest, ip)?;
    let target = std::path::absolute(&opts.target).map_err(Error::io("resolve", &opts.target))?;
    let existing = open_target(&target)?;
    // The filesystem that will hold the tree: the target's, or that of
    // the nearest ancestor that exists.
    let space = match &existing {
        Some(dir) => dir.space(),
        None => nearest_ancestor(&target)?.space(),
    }
    .map_err(Error::io("statvfs", &target))?;

    let top_level = check_tree(key, &manifest, &paths, space.name_max, ip)?;
    let modes: Vec<u32> = manifest
        .entries
        .iter()
        .map(|e| match e.kind {
            // A symlink's mode is never applied.
            EntryKind::Symlink { .. } => e.mode,
            _ => applied_mode(e.mode, opts.keep_special_modes),
        })
        .collect();
    let modes_stripped = manifest
        .entries
        .iter()
        .zip(&modes)
        .filter(|(e, m)| e.mode != **m)
        .count() as u64;

    // A staging directory of the whole tree is never one without the logs.
    let staging = match withheld_entries {
        0 => staging_name(key, ip),
        _ => format!("{}-nowal", staging_name(key, ip)),
    };
    let bytes = manifest
        .files()
        .fold(0u64, |sum, (_, size, _, _)| sum.saturating_add(size));
    let mut pending = None;
    let mut staged = None;
    if let Some(dir) = &existing {
        pending = publish::pending(dir)?;
        inspect_target(dir, &top_level, opts)?;
        staged = dir.open_dir(&staging).ok();
    }
    // The files still to write: all but those an earlier run staged whole.
    let todo: Vec<(Whole, &[ChunkRef])> = manifest
        .entries
        .iter()
        .zip(&paths)
        .zip(&modes)
        .filter_map(|((entry, path), mode)| match &entry.kind {
            EntryKind::File { size, hash, chunks }
                if !staged_at_size(staged.as_ref(), path, *size) =>
            {
                let whole = Whole {
                    size: *size,
                    hash,
                    mode: *mode,
                    mtime_ns: entry.mtime_ns,
                };
                Some((whole, chunks.as_slice()))
            }
            _ => None,
        })
        .collect();
    let bytes_to_write = todo
        .iter()
        .fold(0u64, |sum, (w, _)| sum.saturating_add(w.size));
    let seeds = seed_roots(existing.as_ref(), &top_level, opts)?
        .map(|roots| {
            let needs = seed::Needs {
                chunks: todo
                    .iter()
                    .flat_map(|(_, chunks)| chunks.iter().map(|c| c.id))
                    .collect(),
                files: todo.iter().map(|(w, _)| (w.size, w.hash)).collect(),
                keepable: todo
                    .iter()
                    .map(|(w, _)| (w.size, w.hash, w.mode, w.mtime_ns))
                    .collect(),
            };
            Seeds::index(roots, &needs, &repo.config().chunker)
        })
        .transpose()?;
    let reuse = reuse_plan(&todo, seeds.as_ref());
    if let Some(s) = &seeds {
        tracing::info!(
            "seeds: {} files read ({} bytes); {} files to keep, {} bytes to copy, {} to download",
            s.stats.files_read,
            s.stats.bytes_read,
            reuse.files_kept,
            reuse.bytes_copied,
            reuse.bytes_to_download
        );
    }
    if let Some(cap) = opts.max_bytes {
        if bytes > cap {
            return Err(Error::Refused(format!(
                "snapshot {} restores {bytes} bytes, more than the {cap} bytes --max-size allows",
                key.key()
            )));
        }
    }
    // Kept files are links: they take no space.
    let bytes_to_write = bytes_to_write.saturating_sub(reuse.bytes_kept);
    if bytes_to_write.saturating_add(SPACE_MARGIN) > space.bytes {
        return Err(Error::Refused(format!(
            "snapshot {} needs {bytes_to_write} more bytes on the filesystem of {} (plus a {} MiB margin), \
             and {} are free",
            key.key(),
            target.display(),
            SPACE_MARGIN >> 20,
            space.bytes
        )));
    }
    let inodes = manifest.entries.len() as u64;
    if inodes.saturating_add(INODE_MARGIN) > space.inodes {
        return Err(Error::Refused(format!(
            "snapshot {} has {inodes} entries, and the filesystem of {} has {} free inodes (a margin of {INODE_MARGIN} kept)",
            key.key(),
            target.display(),
            space.inodes
        )));
    }
    Ok(RestorePlan {
        key: *key,
        manifest,
        entries: paths
            .into_iter()
            .zip(modes)
            .map(|(path, mode)| PlannedEntry { path, mode })
            .collect(),
        modes_stripped,
        target,
        staging,
        top_level,
        bytes,
        bytes_to_write,
        free_bytes: space.bytes,
        seeds,
        reuse,
        pending,
        withheld_wals,
        withheld_entries,
    })
}

/// The seeds a restore reads: the target's entries that a `--force`
/// restore replaces (unless `--no-reuse`) and every `--reuse-from`
/// directory. `None` when there are none.
fn seed_roots(
    existing: Option<&DirFd>,
    top_level: &[String],
    opts: &RestoreOptions,
) -> Result<Option<Vec<SeedRoot>>> {
    let mut roots = Vec::new();
    if let (Some(dir), true, false) = (existing, opts.force, opts.no_reuse) {
        let names = dir.names().map_err(Error::io("read", dir.path()))?;
        let only: Vec<String> = top_level
            .iter()
            .filter(|n| names.contains(n))
            .cloned()
            .collect();
        if !only.is_empty() {
            roots.push(SeedRoot {
                dir: dir.try_clone().map_err(Error::io("open", dir.path()))?,
                only: Some(only),
                // Kept old entries must stay as they were: copy instead.
                replaced: !opts.keep_old,
            });
        }
    }
    for path in &opts.reuse_from {
        let dir = DirFd::open_trusted(path, false)
            .map_err(|e| Error::Refused(format!("--reuse-from {}: {e}", path.display())))?;
        roots.push(SeedRoot {
            dir,
            only: None,
            replaced: false,
        });
    }
    Ok((!roots.is_empty()).then_some(roots))
}

/// Where each file still to write will come from, given the seeds.
fn reuse_plan(todo: &[(Whole, &[ChunkRef])], seeds: Option<&Seeds>) -> ReusePlan {
    let mut plan = ReusePlan::default();
    // Links made per content and metadata: each seed is linked once.
    let mut linked: HashMap<(u64, &Hash, u32, i64), usize> = HashMap::new();
    for (w, chunks) in todo {
        let key = (w.size, w.hash, w.mode, w.mtime_ns);
        match seeds.and_then(|s| s.has_whole(w.size, w.hash, w.mode, w.mtime_ns)) {
            Some(linkable) if linkable > *linked.get(&key).unwrap_or(&0) => {
                *linked.entry(key).or_default() += 1;
                plan.files_kept += 1;
                plan.bytes_kept += w.size;
            }
            Some(_) => plan.bytes_copied += w.size,
            None => {
                for c in chunks.iter() {
                    if seeds.is_some_and(|s| s.has_chunk(&c.id)) {
                        plan.bytes_copied += u64::from(c.len);
                    } else {
                        plan.bytes_to_download += u64::from(c.len);
                        plan.stored_bytes_to_download += u64::from(c.stored_len);
                    }
                }
            }
        }
    }
    plan
}

/// The target directory if it exists, resolved without following a symlink
/// another user owns (`None`: it does not exist yet).
fn open_target(target: &Path) -> Result<Option<DirFd>> {
    match DirFd::open_trusted(target, false) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(Error::Refused(format!(
            "restore target {} exists and is not a directory",
            target.display()
        ))),
        Err(e) => Err(Error::Refused(format!(
            "restore target {}: {e}",
            target.display()
        ))),
    }
}

fn nearest_ancestor(target: &Path) -> Result<DirFd> {
    for dir in target.ancestors().skip(1) {
        match DirFd::open_trusted(dir, false) {
            Ok(d) => return Ok(d),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Refused(format!(
                    "restore target {}: {}: {e}",
                    target.display(),
                    dir.display()
                )))
            }
        }
    }
    Err(Error::Refused(format!(
        "restore target {}: no ancestor exists",
        target.display()
    )))
}

/// The whole tree, after the address is put back, checked as restore needs
/// it (FORMAT.md §8): path rules, unique names, the filesystem's name length,
/// no reserved top-level name, contained symlinks that climb only into the
/// snapshot's own top-level entries. Returns the top-level names.
fn check_tree(
    key: &SnapshotKey,
    manifest: &Manifest,
    paths: &[String],
    name_max: u64,
    ip: Option<Ipv4Addr>,
) -> Result<Vec<String>> {
    let refuse = |cause: crate::format::FormatError| Error::Format {
        key: key.key(),
        cause,
    };
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(paths.len());
    let mut top_level = Vec::new();
    for (i, (entry, path)) in manifest.entries.iter().zip(paths).enumerate() {
        mpath::check(path).map_err(refuse)?;
        if let Some(j) = seen.insert(path, i) {
            return Err(Error::Refused(format!(
                "snapshot {}: {:?} and {:?} both become {path:?} with --ip {}: restoring \
                 would merge them into one; restore with another address or from another snapshot",
                key.key(),
                manifest.entries[j].path,
                entry.path,
                ip.map_or("-".into(), |ip| ip.to_string())
            )));
        }
        if let Some(long) = path.split('/').find(|c| c.len() as u64 > name_max) {
            return Err(Error::Refused(format!(
                "snapshot {}: {path:?} has a name of {} bytes; the target's filesystem takes at most {name_max}",
                key.key(),
                long.len()
            )));
        }
        if !path.contains('/') {
            if path.starts_with(RESERVED_PREFIX) {
                return Err(Error::Refused(format!(
                    "snapshot {}: top-level entry {path:?} uses a name reserved for blocksnap's own working files",
                    key.key()
                )));
            }
            top_level.push(path.clone());
        }
    }
    if let Some(why) = links_refusal(manifest, paths) {
        return Err(match why {
            LinkRefusal::Format(cause) => refuse(cause),
            LinkRefusal::Restore(msg) => Error::Refused(format!("snapshot {}: {msg}", key.key())),
        });
    }
    Ok(top_level)
}

/// The paths `manifest` gives its entries as written out with `ip` (or,
/// without one, as recorded: `CHANGEIP` stays), checked by every rule a
/// restore applies to a tree — names, duplicates, reserved names, symlink
/// containment — for anything else that writes a snapshot out (`dump`).
pub fn checked_paths(
    key: &SnapshotKey,
    manifest: &Manifest,
    ip: Option<Ipv4Addr>,
) -> Result<Vec<String>> {
    let paths: Vec<String> = match ip {
        Some(ip) => manifest
            .entries
            .iter()
            .map(|e| ipnorm::denormalise(&e.path, ip))
            .collect(),
        None => manifest.entries.iter().map(|e| e.path.clone()).collect(),
    };
    check_tree(key, manifest, &paths, NAME_MAX, ip)?;
    Ok(paths)
}

/// The longest name most filesystems take, for archives.
const NAME_MAX: u64 = 255;

/// Why a restore refuses a snapshot's symlinks (FORMAT.md §8): a target
/// that breaks the containment rule, or one that climbs to the target's root
/// and does not lead into one of the snapshot's own top-level entries.
pub(crate) enum LinkRefusal {
    Format(crate::format::FormatError),
    Restore(String),
}

/// The symlink rules restore applies to a tree (`paths` are the entries'
/// paths as restored, in manifest order); `None` when every link keeps.
pub(crate) fn links_refusal(manifest: &Manifest, paths: &[String]) -> Option<LinkRefusal> {
    let tops: HashSet<&str> = paths
        .iter()
        .filter(|p| !p.contains('/'))
        .map(String::as_str)
        .collect();
    for (entry, path) in manifest.entries.iter().zip(paths) {
        if let EntryKind::Symlink { target } = &entry.kind {
            if let Err(e) = mpath::check_link_target_contained(path, target) {
                return Some(LinkRefusal::Format(e));
            }
        }
    }
    for (entry, path) in manifest.entries.iter().zip(paths) {
        if let EntryKind::Symlink { target } = &entry.kind {
            // A link that climbs to the target's root must lead into one of
            // the snapshot's own top-level entries: the target's other
            // entries (kept by --force) are not the snapshot's to point at.
            // A link to the root itself is refused too: a path through it
            // (`up/keep/x`) reaches those entries without climbing.
            match mpath::climb_to_root(path, target) {
                None => {}
                Some(Some(first)) if tops.contains(first) => {}
                Some(Some(first)) => {
                    return Some(LinkRefusal::Restore(format!(
                        "symlink {path} -> {target} leads to {first:?}, which is not one of the \
                         snapshot's own top-level entries"
                    )))
                }
                Some(None) => {
                    return Some(LinkRefusal::Restore(format!(
                        "symlink {path} -> {target} leads to the restore target's own directory, \
                         through which a path could reach entries that are not the snapshot's"
                    )))
                }
            }
        }
    }
    None
}

/// An existing target: not occupied (unless `--force`), no database in it
/// held open by a running process (unless `--allow-live`), and no mount
/// point inside an entry the restore will replace (removing that entry
/// would reach into another filesystem).
fn inspect_target(dir: &DirFd, top_level: &[String], opts: &RestoreOptions) -> Result<()> {
    let target = dir.path();
    let names = dir.names().map_err(Error::io("read", target))?;
    if !opts.force && names.iter().any(|n| !n.starts_with(RESERVED_PREFIX)) {
        return Err(Error::TargetNotEmpty {
            path: target.to_path_buf(),
        });
    }
    if !opts.allow_live {
        let live = live::find(target)?;
        if !live.is_empty() {
            let names: Vec<String> = live.iter().map(|l| l.to_string()).collect();
            return Err(Error::Refused(format!(
                "restore target holds a database open in a running process: {}; stop the node \
                 first, or pass --allow-live to replace it anyway",
                names.join("; ")
            )));
        }
    }
    let dev = dir.meta().map_err(Error::io("stat", target))?.dev;
    for name in top_level.iter().filter(|n| names.contains(n)) {
        let start = target.join(name);
        for e in walkdir::WalkDir::new(&start).follow_links(false) {
            interrupt::check()?;
            let e = e.map_err(|e| Error::Io {
                op: "walk",
                path: e.path().unwrap_or(&start).to_path_buf(),
                cause: e.into(),
            })?;
            if e.file_type().is_dir() {
                let m = e
                    .metadata()
                    .map_err(|err| Error::io("stat", e.path())(err.into()))?;
                if std::os::unix::fs::MetadataExt::dev(&m) != dev {
                    return Err(Error::Refused(format!(
                        "{} is a mount point inside {name}, which this restore replaces: unmount it, \
                         or restore into the mounted directory itself",
                        e.path().display()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The entry paths with the node's address put back.
fn final_paths(manifest: &Manifest, ip: Option<Ipv4Addr>) -> Result<Vec<String>> {
    match ip {
        Some(ip) => Ok(manifest
            .entries
            .iter()
            .map(|e| ipnorm::denormalise(&e.path, ip))
            .collect()),
        None => {
            let normalised: Vec<String> = manifest
                .entries
                .iter()
                .filter(|e| ipnorm::is_normalised(&e.path))
                .map(|e| e.path.clone())
                .collect();
            if !normalised.is_empty() {
                return Err(IpError::Required { paths: normalised }.into());
            }
            Ok(manifest.entries.iter().map(|e| e.path.clone()).collect())
        }
    }
}

/// The mode restore gives an entry recorded with `mode`.
pub fn applied_mode(mode: u32, keep_special: bool) -> u32 {
    if keep_special {
        mode
    } else {
        mode & !SPECIAL_MODE_BITS
    }
}

/// Whether an earlier run left a regular file of `size` at `path` in the
/// staging directory (its content is checked when the restore runs).
fn staged_at_size(staging: Option<&DirFd>, path: &str, size: u64) -> bool {
    let Some(staging) = staging else {
        return false;
    };
    let (parent, name) = split(path);
    let dir = match parent {
        Some(p) => match staging.open_path(p) {
            Ok(d) => d,
            Err(_) => return false,
        },
        None => return staged_at_size_in(staging, name, size),
    };
    staged_at_size_in(&dir, name, size)
}

/// A staged file a resume would keep costs no more space: a regular file
/// of this user, not linked elsewhere, of the full size and not sparse.
fn staged_at_size_in(dir: &DirFd, name: &str, size: u64) -> bool {
    matches!(dir.stat(name), Ok(Some(m)) if m.kind == EntryType::File && m.size == size
        && m.allocated >= size && m.nlink == 1 && m.is_mine())
}

pub fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let requests_before = repo.store().request_counts();
    let target = DirFd::open_trusted(&plan.target, true)
        .map_err(|e| Error::Refused(format!("restore target {}: {e}", plan.target.display())))?;
    publish::remove_stale_journal(&target)?;
    let completed_interrupted = match publish::pending(&target)? {
        Some(journal) => {
            publish::complete(&target, &journal)?;
            Some(journal.staging)
        }
        None => None,
    };

    let staging = own_staging(&target, &plan.staging)?;
    if !staging
        .try_lock()
        .map_err(Error::io("lock", staging.path()))?
    {
        return Err(Error::Refused(format!(
            "another blocksnap is restoring into {} (it holds {})",
            plan.target.display(),
            staging.path().display()
        )));
    }
    clear_strays(&staging, plan)?;

    let (files, counts) = write::stage_tree(
        repo,
        &plan.manifest,
        &plan.entries,
        plan.bytes,
        plan.seeds.as_ref(),
        &staging,
        opts.jobs,
        progress,
    )?;
    interrupt::check()?;
    staging
        .syncfs()
        .map_err(Error::io("syncfs", staging.path()))?;

    let entries = plan
        .planned()
        .filter(|(_, p)| !p.path.contains('/'))
        .map(|(entry, PlannedEntry { path, mode })| Move {
            name: path.clone(),
            dir_mode: matches!(entry.kind, EntryKind::Dir).then_some((*mode, entry.mtime_ns)),
        })
        .collect();
    let journal = Journal {
        staging: plan.staging.clone(),
        old: reserved::old_name(&plan.key.id.short(), now_unix_ns()),
        keep_old: opts.keep_old,
        entries,
    };
    tracing::info!(
        "staged and synced; publishing {} entries into {}",
        journal.entries.len(),
        plan.target.display()
    );
    publish::publish(&target, &staging, &journal)?;
    drop(staging);
    let old_entries = publish::kept_old(&target, &journal)?;
    let stale_stagings_removed = remove_stale_stagings(&target)?;

    Ok(RestoreReport {
        key: plan.key,
        target: plan.target.clone(),
        files,
        bytes: plan.bytes,
        chunks_fetched: counts.chunks.into_inner(),
        bytes_downloaded: counts.bytes_downloaded.into_inner(),
        stored_bytes_downloaded: counts.stored_downloaded.into_inner(),
        files_kept: counts.kept.into_inner(),
        bytes_kept: counts.bytes_kept.into_inner(),
        bytes_copied: counts.bytes_copied.into_inner(),
        seeds: plan.seeds.as_ref().map(|s| s.stats).unwrap_or_default(),
        files_resumed: counts.resumed.into_inner(),
        modes_stripped: plan.modes_stripped,
        old_entries,
        completed_interrupted,
        stale_stagings_removed,
        requests: repo
            .store()
            .request_counts()
            .map(|c| c.since(requests_before)),
        duration: started.elapsed(),
    })
}

/// The staging directory: this user's, mode 0700 (nobody else can enter it
/// to swap what is staged), created anew if anything else is at its name.
fn own_staging(target: &DirFd, name: &str) -> Result<DirFd> {
    let shown = target.join(name);
    if let Some(m) = target.stat(name).map_err(Error::io("stat", &shown))? {
        if !(m.kind == EntryType::Dir && m.is_mine()) {
            target.remove(name).map_err(Error::io("remove", &shown))?;
        }
    }
    let staging = target
        .ensure_dir(name)
        .map_err(Error::io("create", &shown))?;
    staging
        .set_mode(0o700)
        .map_err(Error::io("chmod", &shown))?;
    Ok(staging)
}

/// After a successful restore: the staging directories of earlier restores
/// into this target that failed and were never resumed hold disk space for
/// nothing. Those of this user that no running restore holds are removed.
fn remove_stale_stagings(target: &DirFd) -> Result<u64> {
    let mut removed = 0;
    let prefix = reserved::STAGING_PREFIX;
    for name in target.names().map_err(Error::io("read", target.path()))? {
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(Some(m)) = target.stat(&name) else {
            continue;
        };
        if m.kind != EntryType::Dir || !m.is_mine() {
            continue;
        }
        let Ok(dir) = target.open_dir(&name) else {
            continue;
        };
        if dir.try_lock().unwrap_or(false) {
            target
                .remove(&name)
                .map_err(Error::io("remove", target.join(&name)))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes whatever an earlier run (or anyone else) left in the staging
/// directory that the plan does not create with that type, so that nothing
/// foreign is published with the tree.
fn clear_strays(staging: &DirFd, plan: &RestorePlan) -> Result<()> {
    let mut expected: HashMap<&str, EntryType> = HashMap::new();
    for (entry, PlannedEntry { path, .. }) in plan.planned() {
        let kind = match entry.kind {
            EntryKind::Dir => EntryType::Dir,
            EntryKind::File { .. } => EntryType::File,
            EntryKind::Symlink { .. } => EntryType::Symlink,
        };
        expected.insert(path, kind);
    }
    let mut stack: Vec<(DirFd, String)> = vec![(
        staging
            .try_clone()
            .map_err(Error::io("open", staging.path()))?,
        String::new(),
    )];
    let mut visited: HashSet<String> = HashSet::new();
    while let Some((dir, prefix)) = stack.pop() {
        for name in dir.names().map_err(Error::io("read", dir.path()))? {
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let found = dir
                .stat(&name)
                .map_err(Error::io("stat", dir.join(&name)))?;
            // Only what this user made, of the planned type, and for files
            // not linked from anywhere else, can be kept.
            let keep = match (found, expected.get(rel.as_str())) {
                (Some(m), Some(&want)) => {
                    m.kind == want && m.is_mine() && (want != EntryType::File || m.nlink == 1)
                }
                _ => false,
            };
            if !keep {
                dir.remove(&name)
                    .map_err(Error::io("remove", dir.join(&name)))?;
            } else if expected.get(rel.as_str()) == Some(&EntryType::Dir)
                && visited.insert(rel.clone())
            {
                let child = dir
                    .open_dir(&name)
                    .map_err(Error::io("open", dir.join(&name)))?;
                // A read-only directory from an earlier run must take writes.
                child
                    .set_mode(0o700)
                    .map_err(Error::io("chmod", child.path()))?;
                stack.push((child, rel));
            }
        }
    }
    Ok(())
}
