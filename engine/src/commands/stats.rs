//! Repository statistics (`blocksnap stats`): what the repository holds and
//! what each snapshot costs, from one listing of the store and the
//! manifests (no chunk is read).
//!
//! - objects and bytes by kind (chunks, manifests, forget records,
//!   signatures, prune's own, anything else);
//! - logical bytes (what restoring every snapshot would write), the distinct
//!   content they need (each referenced chunk once, uncompressed) and what
//!   that content takes stored: the dedup and compression ratios;
//! - per snapshot, the stored bytes only it references: what forgetting it
//!   (then pruning) would free;
//! - chunks no snapshot references (a forget's leftovers, or an interrupted
//!   writer's): what the next prunes reclaim.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::error::Result;
use crate::format::layout::{self, SnapshotKey};
use crate::id::ChunkId;
use crate::progress::Progress;
use crate::repo::Repository;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Objects {
    pub count: u64,
    pub bytes: u64,
}

impl Objects {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotStats {
    pub key: String,
    pub height: u64,
    pub created_unix_ns: u64,
    pub host: String,
    pub files: u64,
    /// Bytes a restore writes.
    pub logical_bytes: u64,
    /// Stored bytes of the chunks no other snapshot references.
    pub unique_stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Every object, and by kind (the key's first component: `chunks`,
    /// `snapshots`, `forgotten`, `signatures`, …).
    pub total: Objects,
    pub by_kind: BTreeMap<String, Objects>,
    pub snapshots: Vec<SnapshotStats>,
    /// Snapshots whose manifest could not be read (verify says why).
    pub unreadable: Vec<String>,
    /// Sum over snapshots of the bytes a restore writes.
    pub logical_bytes: u64,
    /// The distinct chunks the snapshots reference: uncompressed and
    /// stored bytes.
    pub referenced: Objects,
    pub referenced_raw_bytes: u64,
    /// Chunk objects no snapshot references.
    pub unreferenced: Objects,
    /// logical / distinct raw content.
    pub dedup_ratio: f64,
    /// distinct raw content / stored.
    pub compression_ratio: f64,
}

struct Ref {
    raw: u32,
    stored: u32,
    /// How many snapshots reference it, the first and the last that did.
    snapshots: u32,
    first: u32,
    last: u32,
}

pub fn stats(repo: &Repository, progress: &dyn Progress) -> Result<Stats> {
    let listing = repo.store().list("")?;
    let mut by_kind: BTreeMap<String, Objects> = BTreeMap::new();
    let mut total = Objects::default();
    let mut chunk_sizes: HashMap<ChunkId, u64> = HashMap::new();
    for o in &listing {
        total.add(o.size);
        let kind = o.key.split('/').next().unwrap_or("").to_string();
        by_kind.entry(kind).or_default().add(o.size);
        if let Some(id) = layout::parse_chunk_key(&o.key) {
            chunk_sizes.insert(id, o.size);
        }
    }
    let mut keys: Vec<SnapshotKey> = listing
        .iter()
        .filter_map(|o| {
            o.key
                .starts_with(layout::SNAPSHOTS_PREFIX)
                .then(|| SnapshotKey::parse(&o.key).ok())
                .flatten()
        })
        .collect();
    keys.sort();

    let mut refs: HashMap<ChunkId, Ref> = HashMap::new();
    let mut snapshots = Vec::new();
    let mut unreadable = Vec::new();
    let mut logical = 0u64;
    progress.begin("read manifests", keys.len() as u64);
    for key in &keys {
        crate::sys::interrupt::check()?;
        progress.advance(1);
        let m = match repo.load_manifest(key) {
            Ok(m) => m,
            Err(e) => {
                unreadable.push(format!("{}: {e}", key.key()));
                continue;
            }
        };
        let idx = snapshots.len() as u32;
        let mut bytes = 0u64;
        for (_, size, _, chunks) in m.files() {
            bytes += size;
            for c in chunks {
                let r = refs.entry(c.id).or_insert(Ref {
                    raw: c.len,
                    stored: c.stored_len,
                    snapshots: 0,
                    first: idx,
                    last: u32::MAX,
                });
                // Counted once per snapshot however often it is named.
                if r.last != idx {
                    r.snapshots += 1;
                    r.last = idx;
                }
            }
        }
        logical += bytes;
        snapshots.push(SnapshotStats {
            key: key.key(),
            height: key.height,
            created_unix_ns: key.created_unix_ns,
            host: m.host.clone(),
            files: m.stats.files,
            logical_bytes: bytes,
            unique_stored_bytes: 0,
        });
    }
    progress.end();

    let mut referenced = Objects::default();
    let mut referenced_raw = 0u64;
    for (id, r) in &refs {
        // The listing's size when the object is there; else the recorded.
        let stored = chunk_sizes.get(id).copied().unwrap_or(u64::from(r.stored));
        referenced.add(stored);
        referenced_raw += u64::from(r.raw);
        if r.snapshots == 1 {
            snapshots[r.first as usize].unique_stored_bytes += stored;
        }
    }
    let mut unreferenced = Objects::default();
    for (id, size) in &chunk_sizes {
        if !refs.contains_key(id) {
            unreferenced.add(*size);
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(Stats {
        total,
        by_kind,
        snapshots,
        unreadable,
        logical_bytes: logical,
        referenced,
        referenced_raw_bytes: referenced_raw,
        unreferenced,
        dedup_ratio: ratio(logical, referenced_raw),
        compression_ratio: ratio(referenced_raw, referenced.bytes),
    })
}
