//! Prune, really concurrent (issue #21): two actors from the writer / copy /
//! forget / prune protocol of FORMAT.md §10 run at once on a real store,
//! and each is held before every one of its requests in turn while the
//! other runs to its end — condemn beside condemn, condemn beside sweep,
//! sweep beside sweep, a writer beside a sweep, two copies of one snapshot,
//! a forget beside a writer's commit. After each interleaving the
//! repository must hold no live snapshot that names a missing chunk, a
//! writer that reported a commit must have it (or have seen it forgotten),
//! and later prunes must finish every round.
//!
//! Stores: memory and a local directory (every interleaving), and S3 on
//! s3s-fs (`BLOCKSNAP_INTERLEAVINGS` per actor and pair, spread over its
//! requests: default 4; `benches/protocol_model.sh` runs them all).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use blocksnap::cache::LocalState;
use blocksnap::copy;
use blocksnap::forget::{self, ForgetOptions};
use blocksnap::format::config::ChunkerParams;
use blocksnap::format::layout::SnapshotKey;
use blocksnap::progress::Silent;
use blocksnap::prune::{self, PruneOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{LocalStore, MemoryStore, ObjectInfo, Store};
use blocksnap::verify::{self, Level};
use blocksnap::{Repository, Selector};

const PARAMS: ChunkerParams = ChunkerParams {
    min_size: 4 << 10,
    avg_size: 16 << 10,
    max_size: 64 << 10,
};

/// A store that holds its caller before its `hold_at`-th request (1-based)
/// until the test lets it go on; `None` never holds. Counts requests.
struct StepGate {
    inner: Arc<dyn Store>,
    /// Counting starts when armed (after the repository is opened).
    armed: std::sync::atomic::AtomicBool,
    count: AtomicUsize,
    hold_at: Option<usize>,
    state: Mutex<Hold>,
    cv: Condvar,
}

#[derive(Default, PartialEq)]
enum Hold {
    #[default]
    Running,
    Held,
    Released,
}

impl StepGate {
    fn new(inner: Arc<dyn Store>, hold_at: Option<usize>) -> StepGate {
        StepGate {
            inner,
            armed: std::sync::atomic::AtomicBool::new(false),
            count: AtomicUsize::new(0),
            hold_at,
            state: Mutex::new(Hold::Running),
            cv: Condvar::new(),
        }
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn step(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == self.hold_at {
            let mut s = self.state.lock().unwrap();
            *s = Hold::Held;
            self.cv.notify_all();
            while *s != Hold::Released {
                s = self.cv.wait(s).unwrap();
            }
        }
    }

    /// Waits until the caller is held (`true`) or has finished without
    /// reaching the gate (`false`, when `done` says so).
    fn wait_held(&self, done: &dyn Fn() -> bool) -> bool {
        let mut s = self.state.lock().unwrap();
        loop {
            if *s == Hold::Held {
                return true;
            }
            if done() {
                return false;
            }
            s = self.cv.wait_timeout(s, Duration::from_millis(5)).unwrap().0;
        }
    }

    fn release(&self) {
        *self.state.lock().unwrap() = Hold::Released;
        self.cv.notify_all();
    }
}

impl Store for StepGate {
    fn get(&self, key: &str, max_len: u64) -> blocksnap::Result<Vec<u8>> {
        self.step();
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> blocksnap::Result<bool> {
        self.step();
        self.inner.put_if_absent(key, bytes)
    }
    fn size(&self, key: &str) -> blocksnap::Result<Option<u64>> {
        self.step();
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> blocksnap::Result<Vec<ObjectInfo>> {
        self.step();
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> blocksnap::Result<()> {
        self.step();
        self.inner.delete(key)
    }
    fn delete_many(&self, keys: &[String]) -> blocksnap::Result<()> {
        self.step();
        self.inner.delete_many(keys)
    }
    fn remove_stale_writes(&self, before: u64) -> blocksnap::Result<(u64, u64)> {
        self.inner.remove_stale_writes(before)
    }
    fn flush(&self) -> blocksnap::Result<()> {
        self.inner.flush()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn parallelism(&self) -> usize {
        1
    }
}

/// What an actor did.
#[derive(Debug)]
enum Outcome {
    Committed(SnapshotKey),
    Refused(String),
    Pruned,
    Forgotten,
    Copied(Vec<SnapshotKey>),
}

type Actor = Box<dyn Fn(&Repository, &World) -> Outcome + Send + Sync>;

/// A repository set up for one pair of actors, and what they need.
struct World {
    repo: Repository,
    store: Arc<dyn Store>,
    /// The writer's source: the forgotten snapshot's files again, so that
    /// it reuses the condemned chunks — from its stat cache and chunk
    /// index, built before any prune ran, without asking the store.
    again: std::path::PathBuf,
    state: LocalState,
    /// A live snapshot (to forget, to copy).
    live: SnapshotKey,
    /// A second repository, for copies into this one.
    source: Option<Arc<Repository>>,
    /// Keeps the sources and the local store's directory.
    _tmp: tempfile::TempDir,
}

/// A directory of `files` files of 48 KiB from `seed`.
fn source_dir(dir: &std::path::Path, name: &str, files: u32, seed: u32) -> std::path::PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..files {
        let mut data = vec![0u8; 48 << 10];
        blake3::Hasher::new()
            .update(format!("{seed}-{i}").as_bytes())
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(d.join(format!("f{i:02}")), data).unwrap();
    }
    d
}

fn snap_opts(src: &std::path::Path, height: u64) -> SnapshotOptions {
    SnapshotOptions {
        source: src.to_path_buf(),
        height,
        host: "node-a".into(),
        ..Default::default()
    }
}

fn snap(repo: &Repository, src: &std::path::Path, height: u64) -> SnapshotKey {
    snapshot::snapshot(repo, &snap_opts(src, height), &Silent)
        .unwrap()
        .key
}

fn forget_key(repo: &Repository, key: &SnapshotKey) -> blocksnap::Result<()> {
    let opts = ForgetOptions {
        named: vec![Selector::Id(key.id.to_hex())],
        by_host: "test".into(),
        now_unix_ns: blocksnap::repo::now_unix_ns(),
        ..Default::default()
    };
    let plan = forget::plan(repo, &opts)?;
    forget::execute(repo, &plan, &opts, &Silent).map(|_| ())
}

fn prune_opts() -> PruneOptions {
    PruneOptions {
        grace: Duration::ZERO,
        lease: Duration::from_secs(3600),
        pending_expiry: Duration::from_secs(3600),
        host: "pruner".into(),
        ..PruneOptions::default()
    }
}

/// Sets a world up: `old` snapshotted and forgotten (its chunks are
/// garbage), `live` kept; with `planned`, a prune has condemned the
/// garbage already (a plan is waiting for its sweep).
fn world(
    make: &dyn Fn(&std::path::Path) -> Arc<dyn Store>,
    planned: bool,
    with_source: bool,
) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let store = make(tmp.path());
    let repo = Repository::init(store.clone(), PARAMS, 1).unwrap();
    let state = LocalState::open(&tmp.path().join("cache"), &repo).unwrap();
    let again = source_dir(tmp.path(), "old", 6, 1);
    let with_state = |src: &std::path::Path, h: u64| {
        snapshot::snapshot_with_state(&repo, &snap_opts(src, h), Some(&state), &Silent)
            .unwrap()
            .key
    };
    let old = with_state(&again, 1);
    let live = with_state(&source_dir(tmp.path(), "live", 2, 2), 2);
    forget_key(&repo, &old).unwrap();
    if planned {
        let r = prune::run(&repo, &prune_opts(), &Silent).unwrap();
        assert!(r.condemned > 0);
        // New garbage too, for a prune to condemn beside the sweep.
        let more = snap(&repo, &source_dir(tmp.path(), "more", 3, 3), 4);
        forget_key(&repo, &more).unwrap();
    }
    let source = with_source.then(|| {
        let s = Arc::new(MemoryStore::new());
        let src = Repository::init(s, PARAMS, 1).unwrap();
        snap(&src, &source_dir(tmp.path(), "copied", 3, 7), 9);
        Arc::new(src)
    });
    World {
        repo,
        store,
        again,
        state,
        live,
        source,
        _tmp: tmp,
    }
}

fn prune_actor() -> Actor {
    Box::new(|repo, _| match prune::run(repo, &prune_opts(), &Silent) {
        Ok(_) => Outcome::Pruned,
        Err(e) => Outcome::Refused(e.to_string()),
    })
}

fn writer_actor() -> Actor {
    Box::new(|repo, w| {
        let opts = snap_opts(&w.again, 3);
        match snapshot::snapshot_with_state(repo, &opts, Some(&w.state), &Silent) {
            Ok(r) => Outcome::Committed(r.key),
            Err(e) => Outcome::Refused(e.to_string()),
        }
    })
}

fn copy_actor() -> Actor {
    Box::new(|repo, w| {
        let src = w.source.as_ref().unwrap();
        let keys = src.resolve(&Selector::All).unwrap();
        let run = copy::plan(src, repo, &keys)
            .and_then(|plan| copy::execute(src, repo, &plan, &Default::default(), &Silent));
        match run {
            Ok(r) => Outcome::Copied(r.copied),
            Err(e) => Outcome::Refused(e.to_string()),
        }
    })
}

fn forget_actor() -> Actor {
    Box::new(|repo, w| match forget_key(repo, &w.live) {
        Ok(()) => Outcome::Forgotten,
        Err(e) => Outcome::Refused(e.to_string()),
    })
}

/// The repository after the interleaving: every live snapshot whole; a
/// commit that was reported is there (or forgotten); later prunes finish.
fn check(w: &World, outcomes: &[Outcome], what: &str) {
    let problems = |w: &World| -> Vec<String> {
        let keys = w.repo.resolve(&Selector::All).unwrap();
        let r = verify::verify(&w.repo, &keys, Level::Full, &Silent).unwrap();
        r.problems.iter().map(|p| p.to_string()).collect()
    };
    assert_eq!(problems(w), Vec::<String>::new(), "{what}: {outcomes:?}");
    for o in outcomes {
        match o {
            Outcome::Committed(k) => {
                let live = w.repo.snapshots().unwrap().contains(k);
                assert!(
                    live || w.repo.is_forgotten(k).unwrap(),
                    "{what}: the reported commit {} is gone",
                    k.key()
                );
            }
            Outcome::Copied(keys) => {
                for k in keys {
                    assert!(
                        w.repo.snapshots().unwrap().contains(k) || w.repo.is_forgotten(k).unwrap(),
                        "{what}: the copied snapshot {} is gone",
                        k.key()
                    );
                }
            }
            Outcome::Refused(e) => assert!(
                e.contains("run it again")
                    || e.contains("taken over")
                    || e.contains("finished by another prune")
                    || e.contains("forgotten")
                    || e.contains("claimed by another prune"),
                "{what}: an unexpected refusal: {e}"
            ),
            _ => {}
        }
    }
    // Later prunes finish every round (the second sweeps what the first
    // condemned), and the repository stays whole.
    for _ in 0..2 {
        prune::run(&w.repo, &prune_opts(), &Silent)
            .unwrap_or_else(|e| panic!("{what}: a later prune: {e}"));
    }
    assert!(
        w.repo.begin_write().unwrap().sweeping.is_empty(),
        "{what}: a round is left half-swept"
    );
    assert_eq!(
        problems(w),
        Vec::<String>::new(),
        "{what}: after later prunes"
    );
}

/// Runs `a` held before each of its requests in turn while `b` runs whole,
/// then the other way round; returns the interleavings run.
fn interleave(
    name: &str,
    make: &dyn Fn(&std::path::Path) -> Arc<dyn Store>,
    planned: bool,
    with_source: bool,
    a: &Actor,
    b: &Actor,
    cap: usize,
) -> usize {
    let mut ran = 0;
    for (first, second, label) in [(a, b, "A held"), (b, a, "B held")] {
        // How many requests the held actor makes alone.
        let w = world(make, planned, with_source);
        let counter = Arc::new(StepGate::new(w.store.clone(), None));
        let repo = Repository::open(counter.clone()).unwrap();
        counter.arm();
        first(&repo, &w);
        let n = counter.count.load(Ordering::SeqCst);
        let stride = n.div_ceil(cap.max(1)).max(1);
        for at in (1..=n).step_by(stride) {
            let w = Arc::new(world(make, planned, with_source));
            let gate = Arc::new(StepGate::new(w.store.clone(), Some(at)));
            let held = Repository::open(gate.clone()).unwrap();
            gate.arm();
            let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let outcome_a = std::thread::scope(|s| {
                let h = s.spawn(|| {
                    let o = first(&held, &w);
                    finished.store(true, Ordering::SeqCst);
                    o
                });
                let reached = gate.wait_held(&|| finished.load(Ordering::SeqCst));
                let o_b = if reached {
                    Some(second(&w.repo, &w))
                } else {
                    None
                };
                gate.release();
                let o_a = h.join().unwrap();
                (o_a, o_b)
            });
            let mut outcomes = vec![outcome_a.0];
            outcomes.extend(outcome_a.1);
            check(
                &w,
                &outcomes,
                &format!("{name}, {label} before its request {at} of {n}"),
            );
            ran += 1;
        }
    }
    eprintln!("{name}: {ran} interleavings");
    ran
}

/// The pairs; on a slow store (`all` false) the four where both actors
/// write the same keys or one deletes what the other relies on.
fn pairs(make: &dyn Fn(&std::path::Path) -> Arc<dyn Store>, cap: usize, all: bool) -> usize {
    let mut ran = 0;
    if all {
        ran += interleave(
            "condemn vs condemn",
            make,
            false,
            false,
            &prune_actor(),
            &prune_actor(),
            cap,
        );
        ran += interleave(
            "writer vs condemn",
            make,
            false,
            false,
            &writer_actor(),
            &prune_actor(),
            cap,
        );
        ran += interleave(
            "forget vs writer",
            make,
            false,
            false,
            &forget_actor(),
            &writer_actor(),
            cap,
        );
    }
    ran += interleave(
        "sweep vs sweep (and condemn)",
        make,
        true,
        false,
        &prune_actor(),
        &prune_actor(),
        cap,
    );
    ran += interleave(
        "writer vs sweep",
        make,
        true,
        false,
        &writer_actor(),
        &prune_actor(),
        cap,
    );
    ran += interleave(
        "two copies of one snapshot",
        make,
        false,
        true,
        &copy_actor(),
        &copy_actor(),
        cap,
    );
    ran += interleave(
        "copy vs sweep",
        make,
        true,
        true,
        &copy_actor(),
        &prune_actor(),
        cap,
    );
    ran
}

#[test]
fn pairs_of_actors_interleaved_at_every_request_on_memory() {
    let n = pairs(&|_| Arc::new(MemoryStore::new()), usize::MAX, true);
    eprintln!("memory: {n} interleavings in all");
}

#[test]
fn pairs_of_actors_interleaved_at_every_request_on_a_local_directory() {
    let n = pairs(
        &|dir| {
            let path = dir.join("repo");
            std::fs::create_dir_all(&path).unwrap();
            Arc::new(LocalStore::open(&path))
        },
        usize::MAX,
        true,
    );
    eprintln!("local: {n} interleavings in all");
}

#[test]
fn pairs_of_actors_interleaved_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = common::s3server::S3Server::s3s_fs(&dir.path().join("s3")) else {
        return;
    };
    let cap = std::env::var("BLOCKSNAP_INTERLEAVINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let endpoint = server.endpoint.clone();
    let counter = AtomicUsize::new(0);
    let make = |_: &std::path::Path| -> Arc<dyn Store> {
        let prefix = format!("il{}/", counter.fetch_add(1, Ordering::SeqCst));
        let opts = blocksnap_s3::S3Options {
            bucket: common::s3server::BUCKET.into(),
            prefix,
            endpoint: Some(endpoint.clone()),
            region: Some("us-east-1".into()),
            auth: blocksnap_s3::Auth::Required,
            credentials: Some((
                common::s3server::ACCESS_KEY.into(),
                common::s3server::SECRET_KEY.into(),
            )),
            ..Default::default()
        };
        Arc::new(blocksnap_s3::S3Store::open(&opts).unwrap())
    };
    let n = pairs(&make, cap, false);
    eprintln!("s3: {n} interleavings in all");
}
