//! Auditing snapshots without restoring them, in the spirit of DolphinDB's
//! `checkBackup`: report only what is wrong, with the snapshot, file and
//! chunk it concerns.
//!
//! - quick: every manifest decodes and matches its name; every referenced
//!   chunk exists with the size the manifest recorded (one listing of the
//!   store, no chunk is read);
//! - full: additionally chunks are fetched, decoded and hashed, and files'
//!   bytes hashed to their whole-file hash — all of them, or one slice of a
//!   rotation (`--subset I/N`, by each file's first chunk: run I = 1..N and
//!   every file and chunk is checked), or a random share (`--subset P%`,
//!   with a printed seed);
//! - chain: each history's `parent` links resolve to a snapshot or to a
//!   forget record, and no two snapshots claim the same parent.
//!
//! Manifests are read one at a time and dropped: memory grows with the
//! distinct chunks and file contents, not with the number of snapshots.
//! Work is shared: a chunk is looked up once however many snapshots name
//! it, and each distinct file content is read once.

mod history;

pub mod plan;
mod report;

pub use self::plan::{plan, Request};
pub(crate) use self::report::classify;
use self::report::Link;
pub use self::report::{
    ChainReport, Level, Problem, ProblemKind, Subset, VerifyOptions, VerifyReport,
};

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::forget::ForgetRecord;
use crate::format::layout::{self, SnapshotKey};
use crate::format::limits;
use crate::format::manifest::ChunkRef;
use crate::id::{ChunkId, Hash};
use crate::progress::Progress;
use crate::repo::sign::{Signatures, Subject, Trust};
use crate::repo::Repository;

/// The first file that references a chunk, for the report.
#[derive(Clone)]
struct FirstRef {
    snapshot: usize,
    path: String,
    stored_len: u32,
    more: u64,
}

/// One distinct file content: where it was first seen, its hash and chunks.
struct Content {
    snapshot: usize,
    path: String,
    hash: Hash,
    chunks: Vec<ChunkRef>,
}

/// What the selected manifests reference, gathered one manifest at a time.
#[derive(Default)]
struct Census {
    chunks: HashMap<ChunkId, FirstRef>,
    contents: HashMap<Hash, Content>,
    files: u64,
    links: Vec<Link>,
}

pub fn verify(
    repo: &Repository,
    keys: &[SnapshotKey],
    opts: impl Into<VerifyOptions>,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let opts = opts.into();
    let started = Instant::now();
    let requests_before = repo.store().request_counts();
    let names: Vec<String> = keys.iter().map(|k| k.key()).collect();
    let view = repo.view()?;
    let notes: Vec<String> = view
        .forgotten
        .iter()
        .map(|k| {
            format!(
                "{}: forgotten, yet its manifest is back (a forget raced a late commit); not live",
                k.key()
            )
        })
        .chain(view.ignored_records.iter().map(|r| format!("{r}: ignored")))
        .collect();
    let strays = view.strays;
    let listed = view.live;
    let sizes: HashMap<SnapshotKey, u64> = listed.iter().copied().collect();
    let all: Vec<SnapshotKey> = listed.iter().map(|(k, _)| *k).collect();
    repo.trim_manifest_cache(&all);
    // A key under snapshots/ that does not parse is a snapshot no selector
    // can reach: report it rather than let it vanish from view.
    let mut problems: Vec<Problem> = strays
        .into_iter()
        .map(|s| {
            Problem::of_snapshot(
                ProblemKind::Corrupt,
                s,
                "object under snapshots/ whose name is not a snapshot key".into(),
            )
        })
        .collect();

    let census = census(
        repo,
        keys,
        &names,
        &sizes,
        opts.level,
        &mut problems,
        progress,
    )?;
    let bad = check_listing(repo, &census, &names, &mut problems)?;
    let mut report = VerifyReport {
        level: match opts.level {
            Level::Quick => "quick",
            Level::Full => "full",
        },
        snapshots: keys.len() as u64,
        files: census.files,
        chunks: census.chunks.len() as u64,
        chunks_checked: census.chunks.len() as u64,
        bytes_checked: 0,
        subset: opts.subset.describe(),
        coverage: 0.0,
        chain: None,
        problems: Vec::new(),
        notes,
        requests: None,
        duration: Duration::ZERO,
    };
    if opts.level == Level::Full {
        let (checked, bytes) =
            read_contents(repo, &census, &names, &opts, bad, &mut problems, progress)?;
        report.chunks_checked = checked;
        report.bytes_checked = bytes;
        report.coverage = if census.chunks.is_empty() {
            1.0
        } else {
            checked as f64 / census.chunks.len() as f64
        };
    }
    let signatures = match &opts.trust {
        Some(trust) => {
            let listed = Signatures::list(&**repo.store())?;
            check_signatures(repo, trust, &listed, keys, &mut problems);
            Some((trust.as_ref(), listed))
        }
        None => None,
    };
    if opts.chain {
        let trust = signatures.as_ref().map(|(t, l)| (*t, l));
        report.chain = Some(chain(repo, &all, &census, keys, trust, &mut problems)?);
    }
    report.problems = problems;
    report.requests = repo
        .store()
        .request_counts()
        .map(|c| c.since(requests_before));
    report.duration = started.elapsed();
    Ok(report)
}

/// Reads the selected manifests one at a time, recording every chunk, every
/// distinct file content (full checks) and every parent link; reports the
/// manifests that do not load.
fn census(
    repo: &Repository,
    keys: &[SnapshotKey],
    names: &[String],
    sizes: &HashMap<SnapshotKey, u64>,
    level: Level,
    problems: &mut Vec<Problem>,
    progress: &dyn Progress,
) -> Result<Census> {
    let mut c = Census::default();
    progress.begin("read manifests", keys.len() as u64);
    for (i, key) in keys.iter().enumerate() {
        crate::sys::interrupt::check()?;
        progress.advance(1);
        // A full check reads every manifest again; a quick one uses a
        // cached copy of the size the listing gives.
        let loaded = match level {
            Level::Full => repo.fetch_manifest(key),
            Level::Quick => repo.load_manifest_listed(key, sizes.get(key).copied()),
        };
        let m = match loaded {
            Ok(m) => m,
            // Forgotten since it was listed (a forget running beside this
            // verify): not damage.
            Err(e)
                if e.is_missing()
                    && repo
                        .store()
                        .size(&layout::forgotten_key(&key.id))
                        .is_ok_and(|s| s.is_some()) =>
            {
                continue
            }
            Err(e) => {
                problems.push(Problem::of_snapshot(
                    classify(&e),
                    names[i].clone(),
                    format!("manifest: {e}"),
                ));
                continue;
            }
        };
        for (entry, _, hash, refs) in m.files() {
            c.files += 1;
            for r in refs {
                c.chunks
                    .entry(r.id)
                    .and_modify(|f| f.more += 1)
                    .or_insert_with(|| FirstRef {
                        snapshot: i,
                        path: entry.path.clone(),
                        stored_len: r.stored_len,
                        more: 0,
                    });
            }
            if level == Level::Full {
                let mut k = blake3::Hasher::new();
                k.update(&hash.0);
                for r in refs {
                    k.update(&r.id.0);
                }
                c.contents
                    .entry(k.finalize().into())
                    .or_insert_with(|| Content {
                        snapshot: i,
                        path: entry.path.clone(),
                        hash: *hash,
                        chunks: refs.to_vec(),
                    });
            }
        }
        c.links.push(Link {
            key: *key,
            host: m.host,
            source: m.source,
            parent: m.parent,
        });
    }
    progress.end();
    Ok(c)
}

/// Quick: one listing tells which chunks exist and their sizes. Returns the
/// chunks found bad, which a full check does not report again.
fn check_listing(
    repo: &Repository,
    census: &Census,
    names: &[String],
    problems: &mut Vec<Problem>,
) -> Result<HashSet<ChunkId>> {
    let present: HashMap<ChunkId, u64> = if repo.store().lists_chunks() {
        repo.store()
            .list(layout::CHUNKS_PREFIX)?
            .into_iter()
            .filter_map(|o| layout::parse_chunk_key(&o.key).map(|id| (id, o.size)))
            .collect()
    } else {
        chunk_sizes(repo, census.chunks.keys())?
    };
    let mut bad = HashSet::new();
    let mut sorted: Vec<(&ChunkId, &FirstRef)> = census.chunks.iter().collect();
    sorted.sort_by(|a, b| (a.1.snapshot, &a.1.path, a.0).cmp(&(b.1.snapshot, &b.1.path, b.0)));
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
            bad.insert(*id);
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
    Ok(bad)
}

/// The sizes of `ids` in the store, one request each (a static mirror,
/// which cannot list chunks), as many in flight as the store suggests.
fn chunk_sizes<'a>(
    repo: &Repository,
    ids: impl Iterator<Item = &'a ChunkId>,
) -> Result<HashMap<ChunkId, u64>> {
    use rayon::prelude::*;
    let ids: Vec<ChunkId> = ids.copied().collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(repo.store().parallelism().max(1))
        .build()
        .map_err(|e| Error::Refused(format!("cannot start chunk checks: {e}")))?;
    let sizes: Vec<(ChunkId, Option<u64>)> = pool.install(|| {
        ids.par_iter()
            .map(|id| {
                crate::sys::interrupt::check()?;
                Ok((*id, repo.store().size(&layout::chunk_key(id))?))
            })
            .collect::<Result<_>>()
    })?;
    Ok(sizes
        .into_iter()
        .filter_map(|(id, size)| Some((id, size?)))
        .collect())
}

/// Full: reads every distinct file content whose first chunk is in the
/// subset — each of its chunks checked against its id, then its bytes
/// against the whole-file hash. A chunk is read once however many of
/// those contents hold it. Returns (chunks checked, bytes read).
fn read_contents(
    repo: &Repository,
    census: &Census,
    names: &[String],
    opts: &VerifyOptions,
    bad: HashSet<ChunkId>,
    problems: &mut Vec<Problem>,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let selected: Vec<&Content> = census
        .contents
        .values()
        .filter(|c| {
            c.chunks
                .first()
                .is_some_and(|f| opts.subset.contains(&f.id))
        })
        .collect();
    let checked: HashSet<ChunkId> = selected
        .iter()
        .flat_map(|c| c.chunks.iter().map(|r| r.id))
        .collect();
    let total: u64 = selected
        .iter()
        .flat_map(|c| c.chunks.iter())
        .map(|r| u64::from(r.len))
        .sum();
    progress.begin("verify", total);
    let reported: Mutex<HashSet<ChunkId>> = Mutex::new(bad);
    let found: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let report = |c: &Content, id: ChunkId, e: &Error| {
        if reported.lock().expect("lock").insert(id) {
            found.lock().expect("lock").push(Problem {
                kind: classify(e),
                snapshot: Some(names[c.snapshot].clone()),
                path: Some(c.path.clone()),
                chunk: Some(id.to_hex()),
                detail: e.to_string(),
                more_refs: 0,
            });
        }
    };
    // As many reads in flight as the store suggests: over a network each
    // worker mostly waits.
    let workers = if opts.jobs == 0 {
        repo.store().parallelism()
    } else {
        opts.jobs
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map_err(|e| Error::Refused(format!("cannot start {workers} verify workers: {e}")))?;
    let bytes: u64 = pool.install(|| {
        selected
            .par_iter()
            .map(|c| {
                let mut hasher = blake3::Hasher::new();
                let mut complete = true;
                let mut bytes = 0u64;
                for r in &c.chunks {
                    // A signal stops the reading between two chunks.
                    crate::sys::interrupt::check()?;
                    match repo.read_chunk(r) {
                        Ok(raw) => {
                            hasher.update(&raw);
                            bytes += raw.len() as u64;
                            progress.advance(raw.len() as u64);
                        }
                        Err(e) => {
                            complete = false;
                            report(c, r.id, &e);
                        }
                    }
                }
                if complete {
                    let actual: Hash = hasher.finalize().into();
                    if actual != c.hash {
                        found.lock().expect("lock").push(Problem {
                            kind: ProblemKind::Corrupt,
                            snapshot: Some(names[c.snapshot].clone()),
                            path: Some(c.path.clone()),
                            chunk: None,
                            detail: format!(
                                "file bytes hash to {actual}, the manifest says {}",
                                c.hash
                            ),
                            more_refs: 0,
                        });
                    }
                }
                Ok::<u64, Error>(bytes)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))
    })?;
    progress.end();
    let mut found = found.into_inner().expect("lock");
    found.sort_by(|a, b| (&a.snapshot, &a.path, &a.chunk).cmp(&(&b.snapshot, &b.path, &b.chunk)));
    problems.extend(found);
    Ok((checked.len() as u64, bytes))
}

/// Walks each history's parent links over every snapshot in the repository
/// (those selected were read already; the rest are read now) and the forget
/// records. A parent must be a snapshot of the same history — or, for the
/// first snapshot of a host, a version 1 snapshot of the same source — or a
/// forgotten one (whose record continues the chain); two children of one
/// parent in one history are a fork.
/// Reports each snapshot that no trusted key's signature vouches for. A
/// manifest that cannot be read is the census's to report.
fn check_signatures(
    repo: &Repository,
    trust: &Trust,
    listed: &Signatures,
    keys: &[SnapshotKey],
    problems: &mut Vec<Problem>,
) {
    for key in keys {
        let Ok(bytes) = repo.manifest_bytes(key) else {
            continue;
        };
        let verdict = trust.check(&**repo.store(), listed, &Subject::Snapshot(*key), &bytes);
        if !verdict.trusted() {
            problems.push(Problem::of_snapshot(
                ProblemKind::Untrusted,
                key.key(),
                format!("not signed by a trusted key: {}", verdict.why_not(trust)),
            ));
        }
    }
}

/// The history chain. With trusted keys, only forget records a trusted key
/// signed stand for the snapshots they forgot.
fn chain(
    repo: &Repository,
    all: &[SnapshotKey],
    census: &Census,
    selected: &[SnapshotKey],
    trust: Option<(&Trust, &Signatures)>,
    problems: &mut Vec<Problem>,
) -> Result<ChainReport> {
    // Every snapshot's link: from the census, or read now.
    let read: HashSet<SnapshotKey> = census.links.iter().map(|l| l.key).collect();
    let skipped: HashSet<SnapshotKey> = selected
        .iter()
        .filter(|k| !read.contains(k))
        .copied()
        .collect();
    let mut links: Vec<Link> = Vec::new();
    for key in all {
        if read.contains(key) || skipped.contains(key) {
            continue;
        }
        if let Ok(m) = repo.load_manifest(key) {
            links.push(Link {
                key: *key,
                host: m.host,
                source: m.source,
                parent: m.parent,
            });
        }
    }
    let links: Vec<&Link> = census.links.iter().chain(links.iter()).collect();
    let records = forget_records(repo, trust, problems)?;
    Ok(history::check(&links, &records, problems))
}

/// The forget records that count, by the id of the snapshot each forgot:
/// well formed, naming the snapshot of their key, and (with trusted keys)
/// signed by one. The others are problems.
fn forget_records(
    repo: &Repository,
    trust: Option<(&Trust, &Signatures)>,
    problems: &mut Vec<Problem>,
) -> Result<HashMap<Hash, ForgetRecord>> {
    let mut records: HashMap<Hash, ForgetRecord> = HashMap::new();
    for o in repo.store().list(layout::FORGOTTEN_PREFIX)? {
        let Some(id) = o
            .key
            .strip_prefix(layout::FORGOTTEN_PREFIX)
            .and_then(|h| h.parse::<Hash>().ok())
        else {
            continue;
        };
        match repo
            .store()
            .get(&o.key, limits::MAX_RECORD_BYTES)
            .and_then(|b| {
                ForgetRecord::decode(&b)
                    .map(|r| (r, b))
                    .map_err(Error::format(&o.key))
            }) {
            Ok((r, bytes)) if r.key().is_ok_and(|k| k.id == id) => {
                if let Some((trust, listed)) = trust {
                    let verdict =
                        trust.check(&**repo.store(), listed, &Subject::Forget(id), &bytes);
                    if !verdict.trusted() {
                        problems.push(Problem::of_snapshot(
                            ProblemKind::Untrusted,
                            o.key.clone(),
                            format!(
                                "forget record not signed by a trusted key: {}",
                                verdict.why_not(trust)
                            ),
                        ));
                        continue;
                    }
                }
                records.insert(id, r);
            }
            Ok(_) => problems.push(Problem::of_snapshot(
                ProblemKind::Corrupt,
                o.key.clone(),
                "forget record names another snapshot than its key".into(),
            )),
            Err(e) => problems.push(Problem::of_snapshot(
                classify(&e),
                o.key.clone(),
                format!("{e}"),
            )),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The slices of a rotation are disjoint and together hold every
        /// chunk: each id is in exactly one of 1/N … N/N.
        #[test]
        fn each_chunk_is_in_exactly_one_slice(id in any::<[u8; 32]>(), of in 1u32..100) {
            let id = Hash(id);
            let holding = (1..=of)
                .filter(|&index| Subset::Slice { index, of }.contains(&id))
                .count();
            prop_assert_eq!(holding, 1);
        }

        /// A share's membership depends on the seed only, and a larger
        /// share holds a smaller one.
        #[test]
        fn shares_are_repeatable_and_nested(id in any::<[u8; 32]>(), seed in any::<u64>(), p in 0.1f64..50.0) {
            let id = Hash(id);
            let small = Subset::Share { percent: p, seed };
            let large = Subset::Share { percent: p * 2.0, seed };
            prop_assert_eq!(small.contains(&id), small.contains(&id));
            prop_assert!(!small.contains(&id) || large.contains(&id));
        }
    }

    #[test]
    fn subsets_parse_and_refuse_nonsense() {
        assert_eq!(
            "3/24".parse::<Subset>(),
            Ok(Subset::Slice { index: 3, of: 24 })
        );
        assert!(
            matches!("5%".parse::<Subset>(), Ok(Subset::Share { percent, .. }) if percent == 5.0)
        );
        for bad in ["0/4", "5/4", "1/0", "x/4", "0%", "101%", "abc", "3"] {
            assert!(bad.parse::<Subset>().is_err(), "{bad}");
        }
        // Over many ids, a share holds about its percentage.
        let share = Subset::Share {
            percent: 10.0,
            seed: 1,
        };
        let n = (0u32..20_000)
            .filter(|i| share.contains(&Hash(*blake3::hash(&i.to_le_bytes()).as_bytes())))
            .count();
        assert!((1_700..2_300).contains(&n), "{n}");
    }
}
