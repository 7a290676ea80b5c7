//! Auditing snapshots without restoring them, in the spirit of DolphinDB's
//! `checkBackup`: report only what is wrong, with the snapshot, file and
//! chunk it concerns.
//!
//! - quick: every manifest decodes and matches its name; every referenced
//!   chunk exists with the size the manifest recorded (one listing of the
//!   store, no chunk is read);
//! - full: additionally every chunk is fetched, decoded and hashed, and
//!   every file's bytes hash to its whole-file hash.
//!
//! Work is shared across snapshots: a chunk is looked up once however many
//! snapshots name it, and in a full check each distinct file content is
//! read once (consecutive snapshots share almost every table file).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::layout::{self, SnapshotKey};
use crate::format::manifest::{ChunkRef, EntryKind};
use crate::format::FormatError;
use crate::id::{ChunkId, Hash};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::store::Counts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quick,
    Full,
}

/// What a verify run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    pub level: Level,
    /// Chunk reads in flight for a full check (0: what the store suggests:
    /// one per CPU locally, tens over a network).
    pub jobs: usize,
}

impl From<Level> for VerifyOptions {
    fn from(level: Level) -> VerifyOptions {
        VerifyOptions { level, jobs: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    Missing,
    Truncated,
    Corrupt,
    WrongSize,
    NeedsNewer,
    Unreadable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The snapshot's key (for damage in or below one snapshot).
    pub snapshot: Option<String>,
    pub path: Option<String>,
    pub chunk: Option<String>,
    pub detail: String,
    /// Further references to the same damaged chunk, not listed.
    pub more_refs: u64,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json_kind(self.kind);
        write!(f, "{kind}:")?;
        if let Some(p) = &self.path {
            write!(f, " {p}")?;
        }
        if let Some(c) = &self.chunk {
            write!(f, " chunk {c}")?;
        }
        if let Some(s) = &self.snapshot {
            write!(f, " (snapshot {s})")?;
        }
        write!(f, ": {}", self.detail)?;
        if self.more_refs > 0 {
            write!(f, " [and {} more reference(s)]", self.more_refs)?;
        }
        Ok(())
    }
}

fn serde_json_kind(k: ProblemKind) -> &'static str {
    match k {
        ProblemKind::Missing => "missing",
        ProblemKind::Truncated => "truncated",
        ProblemKind::Corrupt => "corrupt",
        ProblemKind::WrongSize => "wrong-size",
        ProblemKind::NeedsNewer => "needs-newer",
        ProblemKind::Unreadable => "unreadable",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub level: &'static str,
    pub snapshots: u64,
    pub files: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    pub problems: Vec<Problem>,
    /// Store requests made, for stores that count them.
    pub requests: Option<Counts>,
    #[serde(skip)]
    pub duration: Duration,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn classify(e: &Error) -> ProblemKind {
    match e {
        Error::Missing { .. } => ProblemKind::Missing,
        Error::Format { cause, .. } => match cause {
            FormatError::Truncated(_) => ProblemKind::Truncated,
            FormatError::NeedsNewer { .. } => ProblemKind::NeedsNewer,
            _ => ProblemKind::Corrupt,
        },
        Error::BadChunk { cause, .. } => classify(cause),
        Error::FileHashMismatch { .. } => ProblemKind::Corrupt,
        _ => ProblemKind::Unreadable,
    }
}

/// The first file that references a chunk, for the report.
#[derive(Clone)]
struct FirstRef {
    snapshot: usize,
    path: String,
    stored_len: u32,
    more: u64,
}

pub fn verify(
    repo: &Repository,
    keys: &[SnapshotKey],
    opts: impl Into<VerifyOptions>,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let VerifyOptions { level, jobs } = opts.into();
    let started = Instant::now();
    let requests_before = repo.store().request_counts();
    let mut problems = Vec::new();
    let names: Vec<String> = keys.iter().map(|k| k.key()).collect();

    // A key under snapshots/ that does not parse is a snapshot no selector
    // can reach: report it rather than let it vanish from view.
    for stray in repo.snapshots_and_strays()?.1 {
        problems.push(Problem {
            kind: ProblemKind::Corrupt,
            snapshot: Some(stray),
            path: None,
            chunk: None,
            detail: "object under snapshots/ whose name is not a snapshot key".into(),
            more_refs: 0,
        });
    }

    let mut manifests = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match repo.load_manifest(key) {
            Ok(m) => manifests.push((i, m)),
            // Forgotten since it was listed (a forget running beside this
            // verify): not damage.
            Err(e)
                if e.is_missing()
                    && repo
                        .store()
                        .size(&layout::forgotten_key(&key.id))
                        .is_ok_and(|s| s.is_some()) => {}
            Err(e) => problems.push(Problem {
                kind: classify(&e),
                snapshot: Some(names[i].clone()),
                path: None,
                chunk: None,
                detail: format!("manifest: {e}"),
                more_refs: 0,
            }),
        }
    }

    // Every referenced chunk, once.
    let mut chunks: HashMap<ChunkId, FirstRef> = HashMap::new();
    let mut files = 0u64;
    for (i, m) in &manifests {
        for (entry, _, _, refs) in m.files() {
            files += 1;
            for c in refs {
                chunks
                    .entry(c.id)
                    .and_modify(|r| r.more += 1)
                    .or_insert_with(|| FirstRef {
                        snapshot: *i,
                        path: entry.path.clone(),
                        stored_len: c.stored_len,
                        more: 0,
                    });
            }
        }
    }

    // Quick: one listing tells which chunks exist and their sizes.
    let present: HashMap<ChunkId, u64> = repo
        .store()
        .list(layout::CHUNKS_PREFIX)?
        .into_iter()
        .filter_map(|o| layout::parse_chunk_key(&o.key).map(|id| (id, o.size)))
        .collect();
    let mut bad_chunks: HashSet<ChunkId> = HashSet::new();
    let mut sorted: Vec<(&ChunkId, &FirstRef)> = chunks.iter().collect();
    sorted.sort_by(|a, b| (a.1.snapshot, &a.1.path).cmp(&(b.1.snapshot, &b.1.path)));
    for (id, r) in sorted {
        let problem = match present.get(id) {
            None => Some((ProblemKind::Missing, "chunk object is missing".to_string())),
            Some(&size) if size != u64::from(r.stored_len) => Some((
                if size < u64::from(r.stored_len) {
                    ProblemKind::Truncated
                } else {
                    ProblemKind::WrongSize
                },
                format!(
                    "chunk object is {size} bytes, the manifest recorded {}",
                    r.stored_len
                ),
            )),
            Some(_) => None,
        };
        if let Some((kind, detail)) = problem {
            bad_chunks.insert(*id);
            problems.push(Problem {
                kind,
                snapshot: Some(names[r.snapshot].clone()),
                path: Some(r.path.clone()),
                chunk: Some(id.to_hex()),
                detail,
                more_refs: r.more,
            });
        }
    }

    let mut chunks_checked = chunks.len() as u64;
    let mut bytes_checked = 0u64;
    if level == Level::Full {
        // Each distinct file content once: (whole-file hash, chunk list).
        let mut contents: HashMap<Hash, (usize, String, Hash, &[ChunkRef])> = HashMap::new();
        for (i, m) in &manifests {
            for e in &m.entries {
                if let EntryKind::File { hash, chunks, .. } = &e.kind {
                    let mut key = blake3::Hasher::new();
                    key.update(&hash.0);
                    for c in chunks {
                        key.update(&c.id.0);
                    }
                    contents.entry(key.finalize().into()).or_insert((
                        *i,
                        e.path.clone(),
                        *hash,
                        chunks.as_slice(),
                    ));
                }
            }
        }
        let total: u64 = contents
            .values()
            .map(|c| c.3.iter().map(|r| u64::from(r.len)).sum::<u64>())
            .sum();
        progress.begin("verify", total);
        let reported: Mutex<HashSet<ChunkId>> = Mutex::new(bad_chunks);
        let found: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
        let mut work: Vec<_> = contents.into_values().collect();
        work.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        // As many reads in flight as the store suggests: over a network
        // each worker mostly waits.
        let workers = if jobs == 0 {
            repo.store().parallelism()
        } else {
            jobs
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .build()
            .map_err(|e| Error::Refused(format!("cannot start {workers} verify workers: {e}")))?;
        let hashed: u64 = pool.install(|| {
            work.par_iter()
                .map(|(snap, path, hash, refs)| {
                    let mut hasher = blake3::Hasher::new();
                    let mut complete = true;
                    let mut bytes = 0u64;
                    for c in refs.iter() {
                        match repo.read_chunk(c) {
                            Ok(raw) => {
                                hasher.update(&raw);
                                bytes += raw.len() as u64;
                                progress.advance(raw.len() as u64);
                            }
                            Err(e) => {
                                complete = false;
                                if reported.lock().expect("lock").insert(c.id) {
                                    found.lock().expect("lock").push(Problem {
                                        kind: classify(&e),
                                        snapshot: Some(names[*snap].clone()),
                                        path: Some(path.clone()),
                                        chunk: Some(c.id.to_hex()),
                                        detail: e.to_string(),
                                        more_refs: 0,
                                    });
                                }
                            }
                        }
                    }
                    if complete {
                        let actual: Hash = hasher.finalize().into();
                        if actual != *hash {
                            found.lock().expect("lock").push(Problem {
                                kind: ProblemKind::Corrupt,
                                snapshot: Some(names[*snap].clone()),
                                path: Some(path.clone()),
                                chunk: None,
                                detail: format!(
                                    "file bytes hash to {actual}, the manifest says {hash}"
                                ),
                                more_refs: 0,
                            });
                        }
                    }
                    bytes
                })
                .sum()
        });
        progress.end();
        bytes_checked = hashed;
        let mut found = found.into_inner().expect("lock");
        found.sort_by(|a, b| {
            (&a.snapshot, &a.path, &a.chunk).cmp(&(&b.snapshot, &b.path, &b.chunk))
        });
        problems.extend(found);
    } else {
        chunks_checked = chunks.len() as u64;
    }

    Ok(VerifyReport {
        level: match level {
            Level::Quick => "quick",
            Level::Full => "full",
        },
        snapshots: keys.len() as u64,
        files,
        chunks_checked,
        bytes_checked,
        problems,
        requests: repo
            .store()
            .request_counts()
            .map(|c| c.since(requests_before)),
        duration: started.elapsed(),
    })
}
