//! What a snapshot is asked (its options), what it plans to read (the
//! items found under the source) and what it reports.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::commands::snapshot::cache::{IndexOrigin, Stat};
use crate::error::{Error, Result};
use crate::format::layout::SnapshotKey;
use crate::format::manifest::Stats;
use crate::store::Counts;
use crate::sys::fsx::{DirFd, EntryType, Meta};
use crate::sys::priority::Priority;

/// Files larger than this are streamed instead of mapped, so that mapped
/// pages (which count as the process's resident memory) stay under workers
/// × this, whatever the files' sizes. LevelDB tables (~2 MiB) are mapped.
pub(super) const MMAP_MAX: u64 = 16 << 20;

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
    /// Read the height (and block hash) from the goloop database the
    /// snapshot takes, as frozen; a height also given (`height`, not 0)
    /// must agree with it.
    pub height_from_db: bool,
    /// The hash of the block at `height` (set from the database with
    /// `height_from_db`), recorded in the manifest.
    pub block_hash: Option<[u8; 32]>,
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
    /// The last block of the database, read from it (`height_from_db`).
    pub chain_head: Option<crate::commands::profile::goloop::ChainHead>,
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
    pub(super) fn is_file(&self) -> bool {
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
