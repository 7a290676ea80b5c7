//! Forget and prune (issue #10), through the engine: retention on real
//! snapshots, and the prune protocol's interleavings with writers, each
//! driven step by step on an in-memory store whose clock the test moves
//! (FORMAT.md §10, "Prune", names the cases).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use blocksnap::forget::{self, ForgetOptions};
use blocksnap::format::config::ChunkerParams;
use blocksnap::format::layout::{self, RoundObject, SnapshotKey};
use blocksnap::format::manifest::Manifest;
use blocksnap::progress::Silent;
use blocksnap::prune::{self, PruneOptions};
use blocksnap::repo::{fate_commit, FATE_COMMIT};
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::retention::{Count, Policy};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{MemoryStore, Store};
use blocksnap::verify::{self, Level};
use blocksnap::{ChunkId, Repository, Selector};

const PARAMS: ChunkerParams = ChunkerParams {
    min_size: 16 << 10,
    avg_size: 64 << 10,
    max_size: 256 << 10,
};

const HOUR: Duration = Duration::from_secs(3600);

struct Lab {
    tmp: tempfile::TempDir,
    store: Arc<MemoryStore>,
    repo: Repository,
}

impl Lab {
    fn new() -> Lab {
        let store = Arc::new(MemoryStore::new());
        let repo = Repository::init(store.clone(), PARAMS, 1).unwrap();
        Lab {
            tmp: tempfile::tempdir().unwrap(),
            store,
            repo,
        }
    }

    /// A source of `files` files of 100 KiB, each filled from `seed`.
    fn source(&self, name: &str, files: u32, seed: u32) -> std::path::PathBuf {
        let dir = self.tmp.path().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..files {
            let mut data = vec![0u8; 100 << 10];
            blake3::Hasher::new()
                .update(format!("{seed}-{i}").as_bytes())
                .finalize_xof()
                .fill(&mut data);
            std::fs::write(dir.join(format!("f{i:03}")), data).unwrap();
        }
        dir
    }

    fn snap(&self, source: &std::path::Path, host: &str, height: u64) -> SnapshotKey {
        let opts = SnapshotOptions {
            source: source.to_path_buf(),
            height,
            host: host.into(),
            ..Default::default()
        };
        snapshot::snapshot(&self.repo, &opts, &Silent).unwrap().key
    }

    fn opts(&self) -> PruneOptions {
        PruneOptions {
            host: "pruner".into(),
            ..PruneOptions::default()
        }
    }

    fn prune(&self, opts: &PruneOptions) -> prune::PruneReport {
        prune::run(&self.repo, opts, &Silent).unwrap()
    }

    fn chunks(&self) -> HashSet<ChunkId> {
        self.store
            .list(layout::CHUNKS_PREFIX)
            .unwrap()
            .iter()
            .filter_map(|o| layout::parse_chunk_key(&o.key))
            .collect()
    }

    fn refs(&self, key: &SnapshotKey) -> HashSet<ChunkId> {
        let m = self.repo.load_manifest(key).unwrap();
        m.files()
            .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id))
            .collect()
    }

    fn verify_all(&self) {
        let keys = self.repo.resolve(&Selector::All).unwrap();
        let r = verify::verify(&self.repo, &keys, Level::Full, &Silent).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
    }

    fn forget(&self, names: &[SnapshotKey]) {
        let opts = ForgetOptions {
            named: names.iter().map(|k| Selector::Id(k.id.to_hex())).collect(),
            by_host: "test".into(),
            now_unix_ns: blocksnap::repo::now_unix_ns(),
            ..Default::default()
        };
        let plan = forget::plan(&self.repo, &opts).unwrap();
        forget::execute(&self.repo, &plan, &opts, &Silent).unwrap();
    }

    /// A manifest a writer would commit: the snapshot of `key` again, at a
    /// new height, reusing its chunks without asking the store.
    fn reuse(&self, key: &SnapshotKey, height: u64) -> Manifest {
        let mut m = self.repo.load_manifest(key).unwrap();
        m.height = height;
        m.created_unix_ns = blocksnap::repo::now_unix_ns();
        m.parent = Some(key.id);
        m
    }
}

#[test]
fn forgotten_snapshots_leave_a_record_and_prune_reclaims_only_their_chunks() {
    let lab = Lab::new();
    let a = lab.source("a", 20, 1);
    let first = lab.snap(&a, "node-a", 1);
    let a = lab.source("a", 20, 2);
    let second = lab.snap(&a, "node-a", 2);
    // Another node shares half of the first snapshot's content (dedup
    // across nodes).
    let b = lab.source("b", 10, 1);
    let other = lab.snap(&b, "node-b", 1);
    let only_first: HashSet<ChunkId> = lab
        .refs(&first)
        .difference(&lab.refs(&second))
        .copied()
        .collect();
    assert!(!only_first.is_empty());

    // Policy: keep the last one per history.
    let opts = ForgetOptions {
        policy: Policy {
            last: Some(Count::N(1)),
            ..Policy::default()
        },
        by_host: "test".into(),
        now_unix_ns: blocksnap::repo::now_unix_ns(),
        ..Default::default()
    };
    let plan = forget::plan(&lab.repo, &opts).unwrap();
    let forgotten: Vec<_> = plan.forgotten().map(|d| d.key.clone()).collect();
    assert_eq!(forgotten, vec![first.key()]);
    forget::execute(&lab.repo, &plan, &opts, &Silent).unwrap();
    let record = lab
        .store
        .get(&layout::forgotten_key(&first.id), 1 << 16)
        .unwrap();
    let record = blocksnap::format::forget::ForgetRecord::decode(&record).unwrap();
    assert_eq!(record.snapshot, first.key());
    assert_eq!(record.host, "node-a");
    assert_eq!(record.reason, "retention policy");
    assert!(lab.repo.load_manifest(&first).unwrap_err().is_missing());

    // A normal prune condemns, and deletes only a grace period later.
    let r = lab.prune(&lab.opts());
    assert!(r.swept.is_empty());
    assert_eq!(r.condemned, 0, "young chunks are not condemned");
    lab.store.advance_clock(25 * HOUR);
    let r = lab.prune(&lab.opts());
    assert!(r.swept.is_empty() && r.condemned > 0, "{r:?}");
    assert!(only_first.iter().all(|c| lab.chunks().contains(c)));
    lab.store.advance_clock(25 * HOUR);
    let r = lab.prune(&lab.opts());
    assert_eq!(r.swept.len(), 1);
    let left = lab.chunks();
    // Shared with node-b's snapshot: kept. Only in the forgotten one: gone.
    let shared: HashSet<ChunkId> = only_first
        .intersection(&lab.refs(&other))
        .copied()
        .collect();
    assert!(shared.iter().all(|c| left.contains(c)));
    let gone: Vec<_> = only_first.difference(&shared).collect();
    assert!(!gone.is_empty() && gone.iter().all(|c| !left.contains(c)));
    lab.verify_all();
    // Everything left is referenced.
    let mut referenced = lab.refs(&second);
    referenced.extend(lab.refs(&other));
    assert_eq!(left, referenced);
    let target = lab.tmp.path().join("restored");
    let opts = RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    let plan = restore::plan(&lab.repo, &second, &opts).unwrap();
    restore::restore(&lab.repo, &plan, &opts, &Silent).unwrap();
    assert_eq!(
        common::describe(&target, None),
        common::describe(&lab.tmp.path().join("a"), None)
    );
}

/// Interleavings 1 and 2: a writer that began before a sweep (its index,
/// its put that found a chunk present) and commits after it refuses; one
/// that commits before the sweep lists the roots keeps its chunks.
#[test]
fn a_writer_that_reused_a_chunk_a_sweep_deleted_refuses_to_commit() {
    let lab = Lab::new();
    let a = lab.source("a", 10, 1);
    let old = lab.snap(&a, "node-a", 1);
    let keep = lab.snap(&lab.source("k", 2, 9), "node-a", 2);
    lab.forget(&[old]);
    lab.store.advance_clock(25 * HOUR);
    // Condemn.
    assert!(lab.prune(&lab.opts()).condemned > 0);

    // The writer begins now, reusing the forgotten snapshot's chunks.
    let session = lab.repo.begin_write().unwrap();
    let m = {
        // Build from the forgotten content: it is gone as a snapshot, so
        // rebuild the manifest from a fresh snapshot in a second repo.
        let other = Lab::new();
        let k = other.snap(&a, "node-a", 1);
        let mut m = other.repo.load_manifest(&k).unwrap();
        m.height = 3;
        m.parent = Some(keep.id);
        m
    };
    lab.store.advance_clock(25 * HOUR);
    let r = lab.prune(&lab.opts());
    assert_eq!(r.swept.len(), 1);
    assert!(r.swept[0].deleted > 0);
    let err = lab.repo.commit(&m, &session).unwrap_err().to_string();
    assert!(
        err.contains("prune round") && err.contains("run it again"),
        "{err}"
    );
    assert_eq!(lab.repo.snapshots().unwrap(), vec![keep]);
    assert!(lab.store.list(layout::PENDING_PREFIX).unwrap().is_empty());
    lab.verify_all();

    // The same writer's snapshot, committed before the sweep, is a root:
    // the sweep spares what it names.
    let lab = Lab::new();
    let old = lab.snap(&a, "node-a", 1);
    let m = lab.reuse(&old, 5);
    lab.forget(&[old]);
    lab.store.advance_clock(25 * HOUR);
    lab.prune(&lab.opts());
    let session = lab.repo.begin_write().unwrap();
    let key = lab.repo.commit(&m, &session).unwrap();
    lab.store.advance_clock(25 * HOUR);
    let r = lab.prune(&lab.opts());
    assert_eq!(r.swept[0].deleted, 0);
    assert_eq!(r.swept[0].spared, r.swept[0].condemned);
    assert_eq!(lab.repo.snapshots().unwrap(), vec![key]);
    lab.verify_all();
}

/// Interleaving: a writer whose pending commit is visible before the sweep
/// lists the roots keeps its chunks even though it commits after the sweep.
#[test]
fn a_pending_commit_is_a_root_and_a_commit_claimed_by_a_dead_writer_is_completed() {
    let lab = Lab::new();
    let a = lab.source("a", 10, 1);
    let old = lab.snap(&a, "node-a", 1);
    let m = lab.reuse(&old, 2);
    lab.forget(&[old]);
    lab.store.advance_clock(25 * HOUR);
    lab.prune(&lab.opts());
    // A writer wrote its pending commit and claimed it, then died.
    let bytes = m.encode();
    let id = blocksnap::Hash::of(&bytes);
    let secret = [3u8; 32];
    let attempt = layout::Attempt::of(&secret);
    lab.store
        .put_if_absent(&layout::pending_key(&id, &attempt), &bytes)
        .unwrap();
    lab.store
        .put_if_absent(&layout::fate_key(&id, &attempt), &fate_commit(&secret))
        .unwrap();
    lab.store.advance_clock(25 * HOUR);
    let r = lab.prune(&lab.opts());
    assert_eq!(r.pending_promoted, 1);
    assert_eq!(
        r.swept[0].deleted, 0,
        "a claimed commit's chunks were deleted"
    );
    let keys = lab.repo.snapshots().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, id);
    assert!(lab.store.list(layout::PENDING_PREFIX).unwrap().is_empty());
    lab.verify_all();
}

/// Interleavings 3 and 4: a writer that crashed (or froze) after writing its
/// pending commit does not hold chunks forever: the commit expires, and a
/// writer that comes back after that refuses.
#[test]
fn an_abandoned_pending_commit_expires_and_its_writer_then_refuses() {
    let lab = Lab::new();
    let a = lab.source("a", 10, 1);
    let old = lab.snap(&a, "node-a", 1);
    let m = lab.reuse(&old, 2);
    lab.forget(&[old]);
    let session = lab.repo.begin_write().unwrap();
    let bytes = m.encode();
    let id = blocksnap::Hash::of(&bytes);
    lab.store
        .put_if_absent(
            &layout::pending_key(&id, &layout::Attempt::of(&[5; 32])),
            &bytes,
        )
        .unwrap();
    lab.store.advance_clock(25 * HOUR);
    let r = lab.prune(&lab.opts());
    assert_eq!(r.pending_expired, 1);
    assert!(
        r.condemned > 0,
        "the abandoned commit still protects its chunks"
    );
    lab.store.advance_clock(25 * HOUR);
    assert!(lab.prune(&lab.opts()).swept[0].deleted > 0);
    let err = lab.repo.commit(&m, &session).unwrap_err().to_string();
    assert!(err.contains("run it again"), "{err}");
    assert!(lab.repo.snapshots().unwrap().is_empty());
    lab.verify_all();
}

/// Interleaving 6: a chunk index built before a prune, on another host, is
/// not trusted after it: the next snapshot rebuilds it and stores again the
/// chunks the prune deleted.
#[test]
fn a_chunk_index_from_before_a_sweep_is_rebuilt_and_the_snapshot_is_complete() {
    let lab = Lab::new();
    let a = lab.source("a", 10, 1);
    let cache = lab.tmp.path().join("cache");
    let state = blocksnap::cache::LocalState::open(&cache, &lab.repo).unwrap();
    let opts = SnapshotOptions {
        source: a.clone(),
        height: 1,
        host: "node-a".into(),
        ..Default::default()
    };
    let first = snapshot::snapshot_with_state(&lab.repo, &opts, Some(&state), &Silent)
        .unwrap()
        .key;
    lab.forget(&[first]);
    lab.store.advance_clock(25 * HOUR);
    lab.prune(&lab.opts());
    lab.store.advance_clock(25 * HOUR);
    assert!(lab.prune(&lab.opts()).swept[0].deleted > 0);
    // The stat cache says nothing changed; the index must not be believed.
    let second = snapshot::snapshot_with_state(
        &lab.repo,
        &SnapshotOptions { height: 2, ..opts },
        Some(&state),
        &Silent,
    )
    .unwrap();
    assert_eq!(
        second.index,
        blocksnap::cache::IndexOrigin::Rebuilt(blocksnap::cache::RebuildReason::Pruned)
    );
    assert!(second.stats.new_chunks > 0);
    lab.verify_all();
}

/// Interleaving 5: two prunes at once share no round; a round another
/// prune claimed is left to it, and taken over once its lease is over.
#[test]
fn concurrent_prunes_split_rounds_and_a_stalled_sweep_is_taken_over() {
    let lab = Lab::new();
    let a = lab.source("a", 10, 1);
    let old = lab.snap(&a, "node-a", 1);
    let keep = lab.snap(&lab.source("k", 3, 5), "node-a", 2);
    lab.forget(&[old]);
    lab.store.advance_clock(25 * HOUR);
    lab.prune(&lab.opts());
    lab.store.advance_clock(25 * HOUR);
    // A prune that claimed the round (sweep attempt 1) and stalled.
    lab.store
        .put_if_absent(&layout::round_key(1, RoundObject::Sweep(1)), b"")
        .unwrap();
    lab.repo.bump_epoch(1, 0).unwrap();
    let r = lab.prune(&lab.opts());
    assert!(r.swept.is_empty(), "swept a round another prune holds");
    lab.store.advance_clock(2 * HOUR);
    let r = lab.prune(&lab.opts());
    assert_eq!(r.swept.len(), 1, "the stalled round was not taken over");
    assert!(lab
        .store
        .size(&layout::round_key(1, RoundObject::Sweep(2)))
        .unwrap()
        .is_some());
    assert_eq!(lab.repo.snapshots().unwrap(), vec![keep]);
    lab.verify_all();
    // Retired after a week.
    lab.store.advance_clock(8 * 24 * HOUR);
    assert_eq!(lab.prune(&lab.opts()).rounds_retired, 1);
    let left = lab.repo.prune_rounds().unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn instant_delete_reclaims_at_once_and_refuses_beside_other_writers() {
    let lab = Lab::new();
    let a = lab.source("a", 10, 1);
    let old = lab.snap(&a, "pruner", 1);
    let keep = lab.snap(&lab.source("k", 3, 5), "pruner", 2);
    lab.forget(&[old]);
    let before = lab.chunks().len();
    let r = lab.prune(&PruneOptions {
        instant: true,
        ..lab.opts()
    });
    assert_eq!(r.swept.len(), 1);
    assert!(r.swept[0].deleted > 0);
    assert_eq!(lab.chunks().len(), before - r.swept[0].deleted as usize);
    assert_eq!(lab.chunks(), lab.refs(&keep));
    lab.verify_all();

    // Another node wrote recently: refused, nothing deleted.
    lab.snap(&lab.source("b", 2, 7), "node-b", 3);
    lab.forget(&[keep]);
    let before = lab.chunks();
    let err = prune::run(
        &lab.repo,
        &PruneOptions {
            instant: true,
            ..lab.opts()
        },
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("node-b") && err.contains("--instant-delete"),
        "{err}"
    );
    assert_eq!(lab.chunks(), before);
}

#[test]
fn a_dry_run_changes_nothing_and_an_unreadable_manifest_stops_prune() {
    let lab = Lab::new();
    let mine = PruneOptions {
        host: "node-a".into(),
        ..lab.opts()
    };
    let a = lab.source("a", 5, 1);
    let old = lab.snap(&a, "node-a", 1);
    let keep = lab.snap(&lab.source("k", 2, 5), "node-a", 2);
    lab.forget(&[old]);
    let listing = |lab: &Lab| lab.store.list("").unwrap().len();
    let before = listing(&lab);
    let dry = lab.prune(&PruneOptions {
        dry_run: true,
        instant: true,
        ..mine.clone()
    });
    assert!(dry.condemned > 0 && dry.dry_run && dry.swept[0].deleted > 0);
    assert_eq!(listing(&lab), before, "a dry run wrote or deleted");

    lab.store.tamper(&keep.key(), |b| {
        let n = b.len() / 2;
        b[n] ^= 1;
    });
    let err = prune::run(&lab.repo, &mine, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("forget it by id"), "{err}");
    assert_eq!(
        listing(&lab),
        before,
        "prune acted despite an unreadable manifest"
    );
    // Forgetting the damaged snapshot by id works without reading it.
    lab.forget(&[keep]);
    assert!(lab.repo.snapshots().unwrap().is_empty());
    let r = lab.prune(&PruneOptions {
        instant: true,
        ..mine.clone()
    });
    assert!(r.swept[0].deleted > dry.swept[0].deleted);
    assert!(lab.chunks().is_empty(), "chunks of no snapshot were left");
}

// The interleavings below were found by an outside review of the protocol
// (each failed before its fix); the gated store holds one process at an
// exact request while the test runs others.

use common::gated::{gate, Gate, Gated};

impl Lab {
    /// A handle on the same repository whose requests pass `gates`.
    fn gated(&self, gates: Vec<Gate>) -> Repository {
        Repository::open(Arc::new(Gated {
            inner: self.store.clone(),
            gates,
        }))
        .unwrap()
    }

    fn problems(&self) -> Vec<String> {
        let keys = self.repo.resolve(&Selector::All).unwrap();
        let r = verify::verify(&self.repo, &keys, Level::Quick, &Silent).unwrap();
        r.problems.iter().map(|p| p.to_string()).collect()
    }
}

#[test]
fn a_late_done_marker_of_an_overrun_attempt_does_not_end_the_sweep_that_took_over() {
    let lab = Lab::new();
    let x = lab.snap(&lab.source("x", 10, 1), "node-a", 1);
    let _keep = lab.snap(&lab.source("k", 2, 9), "node-a", 2);
    lab.forget(&[x]);
    lab.store.advance_clock(25 * HOUR);
    assert!(lab.prune(&lab.opts()).condemned > 0);
    // Y (another node) holds half of X's chunks, after the plan.
    let y = lab.snap(&lab.source("x", 5, 1), "node-y", 3);
    lab.store.advance_clock(25 * HOUR);

    // Prune K sweeps (Y spares its chunks) and is held before its done.
    let (g, k_done) = gate("put", |k| k.contains(".done-"));
    let repo_k = lab.gated(vec![g]);
    let opts = lab.opts();
    let k = std::thread::spawn(move || prune::run(&repo_k, &opts, &Silent));
    k_done.wait();
    // Y is forgotten; W1 begins (the round is being swept).
    let reused = lab.reuse(&y, 10);
    lab.forget(&[y]);
    let w1 = lab.repo.begin_write().unwrap();
    // K's lease runs out; prune M takes over and is held with Y's chunks'
    // deletion in flight.
    lab.store.advance_clock(HOUR + Duration::from_secs(60));
    let (g, m_delete) = gate("delete_many", |k| k.starts_with(layout::CHUNKS_PREFIX));
    let repo_m = lab.gated(vec![g]);
    let opts = lab.opts();
    let m = std::thread::spawn(move || prune::run(&repo_m, &opts, &Silent));
    m_delete.wait();
    // K's done lands late.
    k_done.go();
    let _ = k.join().unwrap();
    // Writers that check now must not take the round for finished.
    let w2 = lab.repo.begin_write().unwrap();
    assert!(w2.sweeping.contains_key(&1), "{w2:?}");
    let mut second = reused.clone();
    second.height = 11;
    let e2 = lab.repo.commit(&second, &w2).unwrap_err().to_string();
    let e1 = lab.repo.commit(&reused, &w1).unwrap_err().to_string();
    for e in [e1, e2] {
        assert!(e.contains("is deleting"), "{e}");
    }
    m_delete.go();
    let r = m.join().unwrap().unwrap();
    assert!(r.swept[0].deleted > 0);
    assert!(lab.repo.prune_round(1).unwrap().is_done());
    assert_eq!(lab.problems(), Vec::<String>::new());
}

#[test]
fn a_writer_paused_past_a_retired_round_whose_number_came_back_refuses() {
    let lab = Lab::new();
    let x = lab.snap(&lab.source("x", 6, 1), "node-a", 1);
    let w = lab.repo.begin_write().unwrap();
    let reused = lab.reuse(&x, 5);
    lab.forget(&[x]);
    lab.store.advance_clock(25 * HOUR);
    lab.prune(&lab.opts());
    lab.store.advance_clock(25 * HOUR);
    assert_eq!(lab.prune(&lab.opts()).swept.len(), 1);
    lab.store.advance_clock(8 * 24 * HOUR);
    assert_eq!(lab.prune(&lab.opts()).rounds_retired, 1);
    // New garbage: a new round 1.
    let v = lab.snap(&lab.source("v", 2, 2), "node-b", 7);
    lab.forget(&[v]);
    lab.store.advance_clock(25 * HOUR);
    assert_eq!(lab.prune(&lab.opts()).condemned_round, Some(1));
    let e = lab.repo.commit(&reused, &w).unwrap_err().to_string();
    assert!(e.contains("gone or replaced"), "{e}");
    assert_eq!(lab.problems(), Vec::<String>::new());
}

#[test]
fn a_writer_whose_claimed_commit_a_prune_completed_reports_success() {
    let lab = Lab::new();
    let x = lab.snap(&lab.source("x", 3, 1), "node-a", 1);
    let m = lab.reuse(&x, 2);
    let (g, held) = gate("size", |k| {
        k.starts_with(layout::PENDING_PREFIX) && !k.ends_with(".fate")
    });
    let repo_w = lab.gated(vec![g]);
    let w = std::thread::spawn(move || {
        let s = repo_w.begin_write().unwrap();
        repo_w.commit(&m, &s)
    });
    held.wait();
    assert_eq!(lab.prune(&lab.opts()).pending_promoted, 1);
    held.go();
    let key = w.join().unwrap().expect("the commit stands");
    assert_eq!(lab.repo.snapshots().unwrap(), vec![x, key]);
}

/// Interleaving 11: a writer killed after its commit and before tidying,
/// whose snapshot is then forgotten. The next prune completes the claimed
/// commit again (the manifest is back), but the forget record keeps the
/// snapshot forgotten: it is not live. Before #21 the prune looked for the
/// record first; a planted record then dropped a live commit's roots
/// (#20.5). Also the first version 2 release's keys, `pending/<id>` and its
/// fate `commit`, are still completed.
#[test]
fn a_forgotten_snapshot_is_not_brought_back_by_completing_its_commit() {
    let lab = Lab::new();
    let x = lab.snap(&lab.source("x", 3, 1), "node-a", 1);
    for legacy in [false, true] {
        let m = lab.reuse(&x, if legacy { 3 } else { 2 });
        let bytes = m.encode();
        let id = blocksnap::Hash::of(&bytes);
        let key = SnapshotKey {
            height: m.height,
            created_unix_ns: m.created_unix_ns,
            id,
        };
        let secret = [9u8; 32];
        let attempt = layout::Attempt::of(&secret);
        let (pending, fate, claim) = if legacy {
            (
                layout::legacy_pending_key(&id),
                layout::legacy_fate_key(&id),
                FATE_COMMIT.to_vec(),
            )
        } else {
            (
                layout::pending_key(&id, &attempt),
                layout::fate_key(&id, &attempt),
                fate_commit(&secret),
            )
        };
        lab.store.put_if_absent(&pending, &bytes).unwrap();
        lab.store.put_if_absent(&fate, &claim).unwrap();
        lab.store.put_if_absent(&key.key(), &bytes).unwrap();
        lab.forget(&[key]);
        let r = lab.prune(&lab.opts());
        assert_eq!(r.pending_promoted, 1);
        assert_eq!(lab.repo.snapshots().unwrap(), vec![x]);
        assert_eq!(lab.repo.view().unwrap().forgotten, vec![key]);
        assert!(lab.store.list(layout::PENDING_PREFIX).unwrap().is_empty());
        lab.store.delete(&key.key()).unwrap();
    }
}

#[test]
fn a_prune_that_cannot_read_the_roots_claims_nothing() {
    let lab = Lab::new();
    let x = lab.snap(&lab.source("x", 4, 1), "node-a", 1);
    let keep = lab.snap(&lab.source("k", 2, 5), "node-a", 2);
    lab.forget(&[x]);
    lab.store.advance_clock(25 * HOUR);
    assert!(lab.prune(&lab.opts()).condemned > 0);
    lab.store.advance_clock(25 * HOUR);
    lab.store.tamper(&keep.key(), |b| {
        let n = b.len() / 2;
        b[n] ^= 1;
    });
    let e = prune::run(&lab.repo, &lab.opts(), &Silent).unwrap_err();
    assert!(e.to_string().contains("forget it by id"), "{e}");
    let round = lab.repo.prune_round(1).unwrap();
    assert!(round.sweeps.is_empty() && !round.is_sweeping(), "{round:?}");
    assert_eq!(lab.repo.epoch().unwrap(), 0, "an epoch bumped for nothing");
    assert!(lab.repo.begin_write().unwrap().sweeping.is_empty());
}

/// `copy` is a writer to its destination (FORMAT.md §10 "Writers"): a
/// prune of the destination that sweeps, while the copy runs, a chunk the
/// copy relies on finding there makes the copy refuse to commit, and
/// running it again copies that chunk too and commits a sound snapshot.
#[test]
fn a_copy_relying_on_a_chunk_a_sweep_took_refuses_and_a_rerun_completes() {
    let dst = Lab::new();
    let a = dst.source("a", 4, 1);
    let old = dst.snap(&a, "pruner", 1);
    // The source repository holds the same files (and more).
    let src = Lab::new();
    let b = src.source("a", 6, 1);
    let key = src.snap(&b, "pruner", 5);
    let plan = blocksnap::copy::plan(&src.repo, &dst.repo, &[key]).unwrap();
    assert_eq!(plan.chunks_present as usize, dst.refs(&old).len());
    // Meanwhile the destination forgets the snapshot that held them, and
    // prunes at once.
    dst.forget(&[old]);
    let pruned = dst.prune(&PruneOptions {
        instant: true,
        ..dst.opts()
    });
    assert!(pruned.swept.iter().map(|s| s.deleted).sum::<u64>() > 0);
    let err = blocksnap::copy::execute(&src.repo, &dst.repo, &plan, &Default::default(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run it again") || err.contains("prune"),
        "{err}"
    );
    assert!(dst.repo.snapshots().unwrap().is_empty());
    // Again: the chunks are sent this time, and the copy is whole.
    let plan = blocksnap::copy::plan(&src.repo, &dst.repo, &[key]).unwrap();
    let r = blocksnap::copy::execute(&src.repo, &dst.repo, &plan, &Default::default(), &Silent)
        .unwrap();
    assert_eq!(r.copied, vec![key]);
    dst.verify_all();

    // Forgotten at the destination: a later copy does not bring it back
    // (the review found `copy all` resurrecting forgotten snapshots).
    dst.forget(&[key]);
    let plan = blocksnap::copy::plan(&src.repo, &dst.repo, &[key]).unwrap();
    assert_eq!(plan.forgotten_there, vec![key]);
    let r = blocksnap::copy::execute(&src.repo, &dst.repo, &plan, &Default::default(), &Silent)
        .unwrap();
    assert!(r.copied.is_empty());
    assert!(dst.repo.snapshots().unwrap().is_empty());
}
