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
mod files;
mod source;
pub mod stage;
mod upload;

mod options;
use self::files::store_files;
pub(crate) use self::files::{ChunkWriter, RACY};
pub use self::options::{
    Item, SnapshotOptions, SnapshotPlan, SnapshotReport, StagedView, MIN_PUTTERS,
};
use self::source::walk;
pub(crate) use self::source::{is_reserved, roots, Root, RootKind};

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::commands::snapshot::cache::{ChunkIndex, FileRecord, LocalState};
use crate::error::{Error, Result};
use crate::format::layout::SnapshotKey;
use crate::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, Stats};
use crate::format::path as mpath;
use crate::format::reserved;
use crate::format::{limits, FormatError};
use crate::id::Hash;
use crate::ipnorm;
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository};
use crate::sys::fsx::{DirFd, EntryType};
use crate::sys::interrupt;
use crate::sys::live;
use crate::sys::priority::Priority;

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
    let mut read = None;
    let opts = &match opts.height_from_db {
        false => opts.clone(),
        true => {
            let head = chain_head(opts)?;
            if opts.height != 0 && opts.height != head.height {
                return Err(Error::Refused(format!(
                    "the node reported height {}, and its database's last block is {} ({}): \
                     refusing to label the snapshot with either",
                    opts.height,
                    head.height,
                    hex::encode(head.hash)
                )));
            }
            read = Some(head);
            SnapshotOptions {
                height: head.height,
                block_hash: Some(head.hash),
                ..opts.clone()
            }
        }
    };
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
    let mut report = execute(repo, &plan, opts, state, progress)?;
    report.chain_head = read;
    Ok(report)
}

/// The last block of the one goloop database the snapshot takes
/// (`<chain>/db/<nid>`, found from the includes or the source), read from
/// the source as the snapshot reads it (a stage's frozen view).
pub fn chain_head(opts: &SnapshotOptions) -> Result<crate::commands::profile::goloop::ChainHead> {
    let (root, source) = open_source(opts)?;
    let chains: Vec<String> = match opts.includes.is_empty() {
        true => vec![String::new()],
        false => opts
            .includes
            .iter()
            .filter_map(|i| {
                let i = i.trim_end_matches('/');
                match i.rsplit_once('/') {
                    Some((chain, "db")) => Some(format!("{chain}/")),
                    None if i == "db" => Some(String::new()),
                    _ => None,
                }
            })
            .collect(),
    };
    let mut dbs = Vec::new();
    for chain in &chains {
        let db = format!("{chain}db");
        let Ok(dir) = root.open_path(&db) else {
            continue;
        };
        for nid in dir.sorted_names().map_err(Error::io("list", dir.path()))? {
            let Ok(d) = dir.open_dir(&nid) else { continue };
            if d.stat("CURRENT").ok().flatten().is_some() {
                dbs.push((format!("{db}/{nid}"), d));
            }
        }
    }
    let mut dbs = dbs.into_iter();
    match (dbs.next(), dbs.next()) {
        (Some((rel, dir)), None) => {
            crate::commands::profile::goloop::last_block(dir, &source.join(rel))
        }
        (None, _) => Err(Error::Refused(format!(
            "{}: no goloop database (<chain>/db/<nid>/CURRENT) to read the height from; give \
             --height",
            source.display()
        ))),
        (Some((a, _)), Some((b, _))) => Err(Error::Refused(format!(
            "{}: several goloop databases ({a}, {b}, …): give --height, or --include one chain",
            source.display()
        ))),
    }
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

/// The node profile of `opts.source` (`given`, or told from its shape):
/// with its includes when `opts.includes` names none.
pub fn settle_profile(
    opts: &SnapshotOptions,
    given: Option<crate::commands::profile::Profile>,
) -> Result<crate::commands::profile::Settled> {
    let (root, _) = open_source(opts)?;
    crate::commands::profile::settle(&root, given)
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

    let head = Header {
        height: opts.height,
        created_unix_ns: opts.created_unix_ns.unwrap_or_else(now_unix_ns),
        source: plan.label.clone(),
        host: opts.host.clone(),
        block: opts.block_hash.map(Hash),
        tags: opts.tags.clone(),
        warnings: fit_warnings(&warnings),
        new_chunks: stored.new_chunks,
        new_bytes: stored.new_bytes,
        check_tree: false,
    };
    let (key, manifest) = commit(
        repo,
        &session,
        &snapshots,
        head,
        entries,
        opts.signer.as_deref(),
    )?;
    let stats = manifest.stats.clone();
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
        chain_head: None,
    })
}

/// What a new snapshot's manifest says besides its entries and what
/// follows from them.
pub(crate) struct Header {
    pub height: u64,
    pub created_unix_ns: u64,
    pub source: String,
    /// Empty: this machine's host name.
    pub host: String,
    /// The hash of the block at `height`, read from the node's database.
    pub block: Option<Hash>,
    pub tags: Vec<String>,
    pub warnings: Vec<String>,
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Refuse the snapshot unless a restore would accept its tree (names,
    /// duplicates, kinds of parents, symlinks): for trees that were not
    /// walked and checked on disk (an imported archive).
    pub check_tree: bool,
}

/// Commits a snapshot of `entries` (every chunk they name is stored):
/// the manifest with its parent in the history and its statistics, signed
/// first when `signer` is given. `snapshots` is the listing taken when
/// `session` began.
pub(crate) fn commit(
    repo: &Repository,
    session: &crate::repo::WriteSession,
    snapshots: &[SnapshotKey],
    head: Header,
    entries: Vec<Entry>,
    signer: Option<&crate::repo::sign::Signer>,
) -> Result<(SnapshotKey, Manifest)> {
    let host = if head.host.is_empty() {
        crate::repo::this_host()
    } else {
        head.host
    };
    let parent = previous_of(repo, snapshots, &host, &head.source)?;
    let mut stats = Stats {
        new_chunks: head.new_chunks,
        new_stored_bytes: head.new_bytes,
        ..Stats::default()
    };
    for (_, size, _, chunks) in entries.iter().filter_map(file_of) {
        stats.files += 1;
        stats.logical_bytes += size;
        stats.chunk_refs += chunks.len() as u64;
    }
    let manifest = Manifest {
        height: head.height,
        created_unix_ns: head.created_unix_ns,
        source: head.source,
        host,
        block: head.block,
        tags: head.tags,
        parent,
        chunker: repo.config().chunker,
        zstd_level: repo.config().zstd_level,
        warnings: head.warnings,
        stats,
        entries,
    };
    interrupt::check()?;
    if signer.is_some() || head.check_tree {
        let bytes = manifest.encode();
        let key = SnapshotKey {
            height: manifest.height,
            created_unix_ns: manifest.created_unix_ns,
            id: Hash::of(&bytes),
        };
        if head.check_tree {
            crate::commands::restore::checked_paths(&key, &manifest, None)?;
        }
        if let Some(signer) = signer {
            signer.sign_snapshot(&**repo.store(), &key, &bytes)?;
        }
    }
    let key = repo.commit(&manifest, session)?;
    Ok((key, manifest))
}

fn file_of(e: &Entry) -> Option<(&Entry, u64, &Hash, &[ChunkRef])> {
    match &e.kind {
        EntryKind::File { size, hash, chunks } => Some((e, *size, hash, chunks.as_slice())),
        _ => None,
    }
}

/// Warnings as the format allows them: at most [`limits::MAX_WARNINGS`],
/// each at most [`limits::MAX_LABEL_BYTES`] bytes.
pub(crate) fn fit_warnings(warnings: &[String]) -> Vec<String> {
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
