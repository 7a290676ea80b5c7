//! Copying snapshots between repositories (`blocksnap copy`): the seed
//! operators' two tiers, a local repository for fast snapshots and S3 for
//! keeping, without a second snapshot of the node.
//!
//! [`plan`] reads the destination's listing and the selected manifests and
//! decides what to transfer: the snapshots the destination lacks, the chunk
//! objects none of its objects already hold, and the signatures of those
//! snapshots. It is the dry run. [`execute`] then copies, object bytes
//! unchanged (so snapshot ids, `parent` chains and signatures stay valid in
//! both), every chunk checked against its id before it is written (a
//! damaged source is not spread), and commits each manifest exactly as a
//! snapshot does (FORMAT.md §10 "Writers"): the write session is taken
//! before the destination is listed, so a prune of the destination that
//! swept a chunk the copy relied on makes the commit refuse, and a re-run
//! copies it again. Snapshots go oldest first, each committed right after
//! its own new chunks (so a long copy never leaves many unreferenced), its
//! signatures before its manifest. A snapshot the destination forgot is
//! not copied back. A copy that stops anywhere is finished by running it
//! again: what is already there is not sent twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::layout::{self, SnapshotKey};
use crate::format::manifest::Manifest;
use crate::id::{ChunkId, Hash};
use crate::progress::Progress;
use crate::repo::sign::{self, Signatures, Signed, Subject};
use crate::repo::{Repository, WriteSession, MAX_CHUNK_OBJECT};
use crate::store::{Counts, Location, Store};

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Parallel chunk transfers (0: what the slower store suggests).
    pub jobs: usize,
}

/// What a copy will do.
#[derive(Debug)]
pub struct CopyPlan {
    session: WriteSession,
    /// Snapshots to copy, oldest first, with their manifests and the chunk
    /// objects to transfer with each (those no earlier one brings).
    todo: Vec<(SnapshotKey, Manifest, Vec<ChunkId>)>,
    /// Selected snapshots the destination already has.
    pub present: Vec<SnapshotKey>,
    /// Selected snapshots the destination has forgotten: not copied back.
    pub forgotten_there: Vec<SnapshotKey>,
    /// Stored bytes of the chunk objects to transfer.
    pub chunk_bytes: u64,
    /// Distinct chunks the copied snapshots need that the destination has.
    pub chunks_present: u64,
    /// Signature objects to copy: key, and the key id it names.
    signatures: Vec<(String, sign::KeyId)>,
    /// The destinations's chunker or compression differs from the source's.
    pub config_differs: bool,
}

impl CopyPlan {
    pub fn snapshots(&self) -> Vec<SnapshotKey> {
        self.todo.iter().map(|(k, _, _)| *k).collect()
    }

    pub fn chunks(&self) -> u64 {
        self.todo.iter().map(|(_, _, c)| c.len() as u64).sum()
    }

    pub fn signatures(&self) -> u64 {
        self.signatures.len() as u64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    #[serde(serialize_with = "keys")]
    pub copied: Vec<SnapshotKey>,
    #[serde(serialize_with = "keys")]
    pub already_there: Vec<SnapshotKey>,
    #[serde(serialize_with = "keys")]
    pub forgotten_there: Vec<SnapshotKey>,
    /// Objects not copied, and why (a signature object that does not
    /// decode or verify): the command exits non-zero.
    pub not_copied: Vec<String>,
    pub chunks_copied: u64,
    pub chunk_bytes_copied: u64,
    pub chunks_present: u64,
    pub signatures_copied: u64,
    pub config_differs: bool,
    pub source_requests: Option<Counts>,
    pub destination_requests: Option<Counts>,
    #[serde(skip)]
    pub duration: Duration,
}

fn keys<S: serde::Serializer>(k: &[SnapshotKey], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(k.iter().map(SnapshotKey::key))
}

/// Decides what to copy. Reads the destination's listing (after taking its
/// write session) and every selected manifest of the source.
/// The destination of a copy: the repository at `location`, or — none
/// being there, and this no dry run — a new one with the source's chunker
/// and zstd level, so that a chunk's id means the same bytes in both.
pub fn open_destination(
    src: &Repository,
    store: std::sync::Arc<dyn Store>,
    location: &Location,
    dry_run: bool,
) -> Result<Repository> {
    match Repository::open(store.clone()) {
        Err(Error::NoRepository { .. }) if !dry_run => {
            location
                .prepare()
                .map_err(Error::io("create", location.to_string()))?;
            let c = src.config();
            Repository::init(store, c.chunker, c.zstd_level)
        }
        other => other,
    }
}

pub fn plan(src: &Repository, dst: &Repository, keys: &[SnapshotKey]) -> Result<CopyPlan> {
    let session = dst.begin_write()?;
    let there: HashSet<SnapshotKey> = dst.all_snapshots()?.into_iter().collect();
    let recorded: HashSet<Hash> = dst
        .store()
        .list(layout::FORGOTTEN_PREFIX)?
        .iter()
        .filter_map(|o| o.key.strip_prefix(layout::FORGOTTEN_PREFIX)?.parse().ok())
        .collect();
    let mut have: HashSet<ChunkId> = HashSet::new();
    for o in dst.store().list(layout::CHUNKS_PREFIX)? {
        if let Some(id) = layout::parse_chunk_key(&o.key) {
            have.insert(id);
        }
    }
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    let mut todo = Vec::new();
    let mut present = Vec::new();
    let mut forgotten_there = Vec::new();
    let mut chunks: HashMap<ChunkId, u32> = HashMap::new();
    let mut present_chunks: HashSet<ChunkId> = HashSet::new();
    for key in keys {
        // Forgotten there (a record that counts: it decodes and names the
        // snapshot, and with trusted keys one signed it): not copied back.
        // A record that does not count (an empty object planted there) is
        // no reason to skip it.
        if recorded.contains(&key.id) && dst.is_forgotten(&key)? {
            forgotten_there.push(key);
            continue;
        }
        if there.contains(&key) {
            present.push(key);
            continue;
        }
        crate::sys::interrupt::check()?;
        let bytes = src.manifest_bytes(&key)?;
        let manifest = Manifest::decode(&bytes).map_err(Error::format(key.key()))?;
        // The destination re-encodes what it commits: it must be these bytes.
        if Hash::of(&manifest.encode()) != key.id {
            return Err(Error::Refused(format!(
                "snapshot {} cannot be copied byte for byte (its manifest does not re-encode to \
                 the same bytes); this blocksnap is too old for it",
                key.key()
            )));
        }
        let mut own = Vec::new();
        for (_, _, _, refs) in manifest.files() {
            for c in refs {
                if have.contains(&c.id) {
                    present_chunks.insert(c.id);
                } else if chunks.insert(c.id, c.stored_len).is_none() {
                    own.push(c.id);
                }
            }
        }
        todo.push((key, manifest, own));
    }
    let listed = Signatures::list(&**src.store())?;
    let signatures = todo
        .iter()
        .flat_map(|(k, _, _)| {
            listed
                .signers(&k.id, Signed::Manifest)
                .into_iter()
                .map(|kid| (sign::signature_key(&k.id, kid, Signed::Manifest), kid))
        })
        .collect();
    let a = src.config();
    let b = dst.config();
    Ok(CopyPlan {
        session,
        todo,
        present,
        forgotten_there,
        chunk_bytes: chunks.values().map(|n| u64::from(*n)).sum(),
        chunks_present: present_chunks.len() as u64,
        signatures,
        config_differs: a.chunker != b.chunker || a.zstd_level != b.zstd_level,
    })
}

/// Copies what the plan says: chunks (in parallel, each checked), then per
/// snapshot, oldest first, its signatures and its manifest (committed).
pub fn execute(
    src: &Repository,
    dst: &Repository,
    plan: &CopyPlan,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    let started = Instant::now();
    let src_before = src.store().request_counts();
    let dst_before = dst.store().request_counts();
    let jobs = match opts.jobs {
        0 => src.store().parallelism().max(dst.store().parallelism()),
        n => n,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {jobs} copy workers: {e}")))?;
    let copied = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let mut signatures = 0;
    let mut committed = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut forgotten_late: Vec<SnapshotKey> = Vec::new();
    progress.begin("copy", plan.chunk_bytes);
    for (key, manifest, own) in &plan.todo {
        pool.install(|| {
            own.par_iter().try_for_each(|id| {
                crate::sys::interrupt::check()?;
                let key = layout::chunk_key(id);
                let object = src.store().get(&key, MAX_CHUNK_OBJECT)?;
                chunk::decode(&object, id).map_err(|e| Error::Format {
                    key: format!("{key} (source)"),
                    cause: e,
                })?;
                if dst.store().put_if_absent(&key, &object)? {
                    copied.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(object.len() as u64, Ordering::Relaxed);
                }
                progress.advance(object.len() as u64);
                Ok::<_, Error>(())
            })
        })?;
        crate::sys::interrupt::check()?;
        let bytes = manifest.encode();
        let subject = Subject::Snapshot(*key);
        for (sig, kid) in plan
            .signatures
            .iter()
            .filter(|(s, _)| s.contains(&key.id.to_hex()))
        {
            // Only signature objects that decode (and, by a key the source
            // is read with trust in, verify) are copied: garbage stays where
            // it was planted.
            let object = src.store().get(sig, sign::MAX_SIGNATURE_OBJECT)?;
            let checked = match src.trust() {
                Some(t) => t.check_object(&object, *kid, &subject, &bytes),
                None => sign::Trust::default().check_object(&object, *kid, &subject, &bytes),
            };
            if let Err(why) = checked {
                refused.push(format!("{sig}: not copied: {why}"));
                continue;
            }
            if dst.store().put_if_absent(sig, &object)? {
                signatures += 1;
            }
        }
        // Forgotten there since the plan: not brought back.
        if dst.is_forgotten(key)? {
            forgotten_late.push(*key);
            continue;
        }
        let done = dst.commit(manifest, &plan.session)?;
        debug_assert_eq!(done, *key);
        committed.push(*key);
    }
    progress.end();
    Ok(CopyReport {
        copied: committed,
        already_there: plan.present.clone(),
        forgotten_there: plan
            .forgotten_there
            .iter()
            .chain(forgotten_late.iter())
            .copied()
            .collect(),
        not_copied: refused,
        chunks_copied: copied.into_inner(),
        chunk_bytes_copied: bytes.into_inner(),
        chunks_present: plan.chunks_present,
        signatures_copied: signatures,
        config_differs: plan.config_differs,
        source_requests: src.store().request_counts().map(|c| c.since(src_before)),
        destination_requests: dst.store().request_counts().map(|c| c.since(dst_before)),
        duration: started.elapsed(),
    })
}
