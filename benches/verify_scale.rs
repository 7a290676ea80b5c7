//! Writes a synthetic repository for measuring `verify` at scale (issue
//! #11): MANIFESTS hourly snapshots of one node of FILES files with CHUNKS
//! chunks each, CHURN files getting new content every hour, chained by
//! `parent`. Chunk objects are small stand-ins of the size the manifests
//! record (a quick verify checks presence and size, nothing more), so that
//! ten thousand snapshots fit on a laptop's disk. Run again on the same
//! directory to add more snapshots to the history.
//!
//!     cargo bench -p blocksnap-engine --bench verify_scale -- DIR MANIFESTS [FILES] [CHUNKS] [CHURN]
//!
//! Manifests are version 1 (no host), which every blocksnap reads, so that
//! older releases can be measured on the same repository.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::format::manifest::{ChunkRef, Entry, EntryKind, Manifest, Stats};
use blocksnap::store::{LocalStore, Store};
use blocksnap::{Hash, Repository};

/// Size recorded for each chunk object (and written).
const STORED: u32 = 64;
/// Uncompressed size recorded for each chunk.
const LEN: u32 = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = PathBuf::from(
        args.first()
            .expect("DIR MANIFESTS [FILES] [CHUNKS] [CHURN]"),
    );
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let manifests = arg(1, 360);
    let files = arg(2, 900);
    let chunks = arg(3, 3);
    let churn = arg(4, 22);
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<LocalStore> = Arc::new(LocalStore::open(&dir));
    let repo = match Repository::open(store.clone()) {
        Ok(r) => r,
        Err(_) => Repository::init(store.clone(), DEFAULT_PARAMS, 1).unwrap(),
    };
    let existing = repo.snapshots().unwrap();
    let started = Instant::now();
    // Every file's current version; a file's content at version v is
    // derived from (file, v), so that runs that add snapshots continue it.
    let mut version: Vec<u64> = vec![0; files as usize];
    let first = existing.len() as u64;
    for h in 0..first {
        bump(&mut version, h, churn);
    }
    let mut parent = existing.last().map(|k| k.id);
    let mut written_chunks = 0u64;
    for h in first..first + manifests {
        if h > 0 {
            bump(&mut version, h, churn);
        }
        let mut entries = vec![Entry {
            path: ".storage".into(),
            mode: 0o755,
            mtime_ns: 0,
            kind: EntryKind::Dir,
        }];
        let mut stats = Stats::default();
        for (f, v) in version.iter().enumerate() {
            let refs: Vec<ChunkRef> = (0..chunks)
                .map(|c| ChunkRef {
                    id: Hash::of(format!("{f}-{v}-{c}").as_bytes()),
                    len: LEN,
                    stored_len: STORED,
                })
                .collect();
            // New content: store its chunk objects.
            if *v == h || h == 0 {
                for r in &refs {
                    if store
                        .put_if_absent(&layout::chunk_key(&r.id), &[0u8; STORED as usize])
                        .unwrap()
                    {
                        written_chunks += 1;
                        stats.new_chunks += 1;
                        stats.new_stored_bytes += u64::from(STORED);
                    }
                }
            }
            stats.files += 1;
            stats.chunk_refs += chunks;
            stats.logical_bytes += chunks * u64::from(LEN);
            entries.push(Entry {
                path: format!(".storage/{f:06}.ldb"),
                mode: 0o644,
                mtime_ns: 0,
                kind: EntryKind::File {
                    size: chunks * u64::from(LEN),
                    hash: Hash::of(format!("{f}-{v}").as_bytes()),
                    chunks: refs,
                },
            });
        }
        let m = Manifest {
            height: 1_000_000 + h * 1_800,
            created_unix_ns: 1_790_000_000_000_000_000 + h * 3_600_000_000_000,
            source: "/app/prep/data/loopchain".into(),
            host: String::new(),
            block: None,
            tags: vec!["hourly".into()],
            parent,
            chunker: DEFAULT_PARAMS,
            zstd_level: 1,
            warnings: Vec::new(),
            stats,
            entries,
        };
        m.validate().unwrap();
        let bytes = m.encode();
        let key = SnapshotKey {
            height: m.height,
            created_unix_ns: m.created_unix_ns,
            id: Hash::of(&bytes),
        };
        store.put_if_absent(&key.key(), &bytes).unwrap();
        parent = Some(key.id);
    }
    store.flush().unwrap();
    eprintln!(
        "{manifests} manifests ({files} files × {chunks} chunks, {churn} files new per hour) and \
         {written_chunks} chunk objects written to {} in {:.1?}; {} snapshots in all",
        dir.display(),
        started.elapsed(),
        first + manifests
    );
}

/// Hour `h`'s churn: `churn` files (spread by a stride) get version `h`.
fn bump(version: &mut [u64], h: u64, churn: u64) {
    let n = version.len() as u64;
    for i in 0..churn.min(n) {
        let f = (h * churn + i) * 7919 % n;
        version[f as usize] = h;
    }
}
