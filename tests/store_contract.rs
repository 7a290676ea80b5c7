//! The contract written on the `Store` trait (`engine/src/store/mod.rs`,
//! FORMAT.md §2 and §10 "Store contract") as one shared suite, run against
//! every store and decorator:
//!
//! - `LocalStore` (a temp directory) and `MemoryStore`;
//! - `S3Store` on s3s-fs and on moto, real servers on loopback
//!   (`common/s3server.rs`: under `CI=true` a missing server fails the test,
//!   outside CI it skips it);
//! - `CountingStore`, `LimitedStore` (generous limits) and `FaultyStore` (no
//!   faults), each over a `LocalStore`, and the three stacked over S3 on
//!   s3s-fs.
//!
//! Each backend is one test: [`run_suite`] runs every check of [`CHECKS`]
//! on it, each in its own key namespace, and reports every failed check (not
//! only the first) with the backend's name.
//!
//! A second part checks that each decorator forwards every method of the
//! trait to its inner store, with its arguments, and hands back the inner
//! store's answer: a decorator that lets one method fall back to the trait's
//! default (`put_owned` to `put_if_absent`, `delete_many` to `delete`,
//! `request_counts` to `None`, ...) is caught there.

mod common;

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use blocksnap::format::layout::{self, Attempt, RoundObject, SnapshotKey};
use blocksnap::format::FormatError;
use blocksnap::repo::now_unix_ns;
use blocksnap::store::{
    CountingStore, Counts, FaultyStore, LimitedStore, Limits, LocalStore, MemoryStore, ObjectInfo,
    Store,
};
use blocksnap::{Error, Hash};
use blocksnap_s3::{Auth, S3Options, S3Store};
use common::s3server::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Memory,
    S3,
}

/// One store under test, with what the suite needs to know about it.
struct Backend {
    /// Names the backend in every assertion message.
    label: String,
    kind: Kind,
    store: Arc<dyn Store>,
    /// Opens a second, independent handle on the same objects (a new
    /// `LocalStore` on the directory, a new S3 client on the prefix).
    reopen: Option<Box<dyn Fn() -> Arc<dyn Store> + Send + Sync>>,
    /// The directory of a local store, bare or decorated.
    local_root: Option<PathBuf>,
    /// Whether `request_counts` must be `Some` (S3 counts its requests,
    /// `CountingStore` counts operations; the others keep no count).
    counts_requests: bool,
    /// Whether racing conditional puts on one key are decided atomically
    /// by code this repository controls. The S3 test servers check
    /// `If-None-Match: *` and write in two steps (see [`S3_RACE`]).
    atomic_conditional_put: bool,
    /// Whether an S3 test server keeps each object as a file at its key
    /// (s3s-fs), so that a key below an object's key is a path through a
    /// file, which it answers with 500 (see [`below_an_object`]).
    server_keys_are_files: bool,
    /// Temp directories and servers, kept alive while the store is used.
    _keep: Vec<Box<dyn Any + Send + Sync>>,
}

/// Why racing conditional PUTs can all succeed on the S3 test servers
/// (not a bug of `S3Store`, which sends `If-None-Match: *` and reads 412
/// as "exists": FORMAT.md §10, "Servers without conditional writes").
const S3_RACE: &str = "s3s-fs 0.14.1 (put_object in src/s3.rs) checks `object_path.exists()` \
    before streaming the body to a temp file that it renames over the key; moto 5.2.5 \
    (S3Response.put_object) checks `get_object(...) is not None` before storing: neither \
    decides If-None-Match atomically, so concurrent conditional PUTs can all get 200";

fn local_backend(label: &str, wrap: impl FnOnce(LocalStore) -> Arc<dyn Store>) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    std::fs::create_dir(&root).unwrap();
    let store = wrap(LocalStore::open(&root));
    let again = root.clone();
    Backend {
        label: label.to_string(),
        kind: Kind::Local,
        counts_requests: false,
        store,
        reopen: Some(Box::new(move || Arc::new(LocalStore::open(&again)))),
        local_root: Some(root),
        atomic_conditional_put: true,
        server_keys_are_files: false,
        _keep: vec![Box::new(dir)],
    }
}

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        bucket: BUCKET.into(),
        prefix: "contract/".into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        auth: Auth::Required,
        credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        ..Default::default()
    }
}

/// An S3 store on `server` (kept alive in the backend), wrapped by `wrap`.
fn s3_backend(
    label: &str,
    server: S3Server,
    dir: Option<tempfile::TempDir>,
    wrap: impl FnOnce(S3Store) -> Arc<dyn Store>,
) -> Backend {
    let opts = s3_options(&server.endpoint);
    let store = wrap(S3Store::open(&opts).unwrap());
    let mut keep: Vec<Box<dyn Any + Send + Sync>> = vec![Box::new(server)];
    if let Some(dir) = dir {
        keep.push(Box::new(dir));
    }
    Backend {
        label: label.to_string(),
        kind: Kind::S3,
        counts_requests: true,
        store,
        reopen: Some(Box::new(move || Arc::new(S3Store::open(&opts).unwrap()))),
        local_root: None,
        atomic_conditional_put: false,
        server_keys_are_files: false,
        _keep: keep,
    }
}

/// S3 on a fresh s3s-fs; `None` (skipped) when the server is missing
/// outside CI; under `CI=true` a missing server fails the test.
fn s3s_fs_backend(label: &str, wrap: impl FnOnce(S3Store) -> Arc<dyn Store>) -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::s3s_fs(&dir.path().join("s3"))?;
    let mut b = s3_backend(label, server, Some(dir), wrap);
    b.server_keys_are_files = true;
    Some(b)
}

fn moto_backend(label: &str) -> Option<Backend> {
    let server = S3Server::moto()?;
    Some(s3_backend(label, server, None, |s| Arc::new(s)))
}

const GENEROUS: Limits = Limits {
    upload: Some(1 << 30),
    download: Some(1 << 30),
};

#[test]
fn local_store_keeps_the_store_contract() {
    run_suite(&local_backend("LocalStore", |s| Arc::new(s)));
}

#[test]
fn memory_store_keeps_the_store_contract() {
    run_suite(&Backend {
        label: "MemoryStore".into(),
        kind: Kind::Memory,
        counts_requests: false,
        store: Arc::new(MemoryStore::new()),
        reopen: None,
        local_root: None,
        atomic_conditional_put: true,
        server_keys_are_files: false,
        _keep: Vec::new(),
    });
}

#[test]
fn s3_store_on_s3s_fs_keeps_the_store_contract() {
    let Some(b) = s3s_fs_backend("S3Store on s3s-fs", |s| Arc::new(s)) else {
        return;
    };
    run_suite(&b);
}

#[test]
fn s3_store_on_moto_keeps_the_store_contract() {
    let Some(b) = moto_backend("S3Store on moto") else {
        return;
    };
    run_suite(&b);
}

#[test]
fn counting_store_over_local_keeps_the_store_contract() {
    let mut b = local_backend("CountingStore<LocalStore>", |s| {
        Arc::new(CountingStore::new(s))
    });
    b.counts_requests = true;
    run_suite(&b);
}

#[test]
fn limited_store_over_local_keeps_the_store_contract() {
    run_suite(&local_backend("LimitedStore<LocalStore>", |s| {
        Arc::new(LimitedStore::new(s, GENEROUS))
    }));
}

#[test]
fn faulty_store_without_faults_over_local_keeps_the_store_contract() {
    run_suite(&local_backend("FaultyStore<LocalStore> (no faults)", |s| {
        Arc::new(FaultyStore::new(s, None, None))
    }));
}

#[test]
fn decorators_over_s3_on_s3s_fs_keep_the_store_contract() {
    let Some(b) = s3s_fs_backend(
        "CountingStore<LimitedStore<FaultyStore<S3Store on s3s-fs>>>",
        |s| {
            Arc::new(CountingStore::new(LimitedStore::new(
                FaultyStore::new(s, None, None),
                GENEROUS,
            )))
        },
    ) else {
        return;
    };
    run_suite(&b);
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

type Check = fn(&Backend);

/// Every check, each in its own key namespace, so that one that fails half
/// way leaves nothing the others look at.
const CHECKS: &[(&str, Check)] = &[
    (
        "put_if_absent and put_owned never overwrite",
        never_overwrites,
    ),
    (
        "racing conditional puts: one winner, its bytes",
        racing_puts,
    ),
    ("get: Missing, and max_len refuses", get_missing_and_max_len),
    ("size: None when missing or deleted, exact else", sizes),
    ("list: prefixes, lexicographic order, sizes", list_prefixes),
    ("list while another thread writes", list_during_writes),
    ("list and delete_many past 1000 objects", past_a_thousand),
    (
        "delete and delete_many of present and missing keys",
        deletes,
    ),
    ("keys below an object's key are missing", below_an_object),
    (
        "flush, and a second handle sees the objects",
        flush_and_reopen,
    ),
    ("modified_unix_ns plausible and ordered", modified_times),
    ("layout keys with nested prefixes", layout_keys),
    ("tmp/ leftovers are never listed", torn_never_listed),
    ("tmp/ leftovers are never objects", torn_never_objects),
    ("remove_stale_writes", stale_writes),
    ("location, parallelism, request_counts", identity_and_counts),
];

/// Runs every check on `b` and fails with all the checks that failed.
fn run_suite(b: &Backend) {
    let started = Instant::now();
    let mut failures = Vec::new();
    for (name, check) in CHECKS {
        let t = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(b)));
        eprintln!(
            "[{}] {name}: {} ({:.2} s)",
            b.label,
            if outcome.is_ok() { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if let Err(p) = outcome {
            failures.push(format!("{name}: {}", panic_message(&*p)));
        }
    }
    eprintln!(
        "[{}] {} checks, {} failed, in {:.1} s",
        b.label,
        CHECKS.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{}: {} of {} store contract checks failed:\n- {}",
        b.label,
        failures.len(),
        CHECKS.len(),
        failures.join("\n- ")
    );
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// The value, or a panic naming the backend and the operation.
fn must<T>(l: &str, what: &str, r: blocksnap::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{l}: {what} failed: {e}"))
}

/// Joins a scoped thread, passing its panic (and message) on.
fn join<T>(h: thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| panic::resume_unwind(p))
}

fn keys_and_sizes(listing: &[ObjectInfo]) -> Vec<(String, u64)> {
    listing.iter().map(|o| (o.key.clone(), o.size)).collect()
}

/// The listing is in strictly increasing key order (sorted, no duplicates).
fn assert_ordered(l: &str, prefix: &str, listing: &[ObjectInfo]) {
    for w in listing.windows(2) {
        assert!(
            w[0].key < w[1].key,
            "{l}: list({prefix:?}) is not in strictly increasing lexicographic key order: {:?} before {:?}",
            w[0].key,
            w[1].key
        );
    }
}

/// Puts every object (put_if_absent and put_owned alternately) from
/// `threads` threads; each must write.
fn put_all(b: &Backend, objects: &[(String, Vec<u8>)], threads: usize) {
    let (l, s) = (b.label.as_str(), &*b.store);
    thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || {
                    for (i, (k, v)) in objects.iter().enumerate().skip(t).step_by(threads) {
                        let wrote = if i % 2 == 0 {
                            must(l, &format!("put_if_absent({k:?})"), s.put_if_absent(k, v))
                        } else {
                            must(l, &format!("put_owned({k:?})"), s.put_owned(k, v.clone()))
                        };
                        assert!(
                            wrote,
                            "{l}: the put of the new key {k:?} returned Ok(false)"
                        );
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(join);
    });
}

fn get_all(l: &str, s: &dyn Store, key: &str) -> Vec<u8> {
    must(l, &format!("get({key:?})"), s.get(key, 64 << 20))
}

// 1. ------------------------------------------------------------------------

fn never_overwrites(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let k = "nover/a";
    assert!(
        must(
            l,
            "put_if_absent of a new key",
            s.put_if_absent(k, b"first")
        ),
        "{l}: put_if_absent of the new key {k:?} returned Ok(false)"
    );
    assert!(
        !must(l, "a second put_if_absent", s.put_if_absent(k, b"second, other bytes")),
        "{l}: a second put_if_absent of {k:?} with other bytes returned Ok(true); it must return Ok(false)"
    );
    assert_eq!(
        get_all(l, s, k),
        b"first",
        "{l}: {k:?} was overwritten by a second put_if_absent"
    );
    assert!(
        !must(
            l,
            "put_if_absent of the same bytes",
            s.put_if_absent(k, b"first")
        ),
        "{l}: put_if_absent of an existing key with its own bytes returned Ok(true)"
    );
    assert!(
        !must(
            l,
            "put_owned over put_if_absent",
            s.put_owned(k, b"third".to_vec())
        ),
        "{l}: put_owned of the existing key {k:?} returned Ok(true)"
    );
    assert_eq!(
        get_all(l, s, k),
        b"first",
        "{l}: {k:?} overwritten by put_owned"
    );
    assert_eq!(must(l, "size", s.size(k)), Some(5), "{l}: size of {k:?}");

    let k = "nover/owned";
    assert!(
        must(
            l,
            "put_owned of a new key",
            s.put_owned(k, b"owned one".to_vec())
        ),
        "{l}: put_owned of the new key {k:?} returned Ok(false)"
    );
    assert!(
        !must(l, "a second put_owned", s.put_owned(k, b"owned two, longer".to_vec())),
        "{l}: a second put_owned of {k:?} with other bytes returned Ok(true); it must return Ok(false)"
    );
    assert!(
        !must(l, "put_if_absent over put_owned", s.put_if_absent(k, b"x")),
        "{l}: put_if_absent of {k:?}, written by put_owned, returned Ok(true)"
    );
    assert_eq!(
        get_all(l, s, k),
        b"owned one",
        "{l}: {k:?} was overwritten after put_owned"
    );

    // Empty objects exist in the layout (prune's sweep and done markers).
    let k = "nover/empty";
    assert!(
        must(
            l,
            "put_if_absent of an empty object",
            s.put_if_absent(k, b"")
        ),
        "{l}: put_if_absent of the new empty object {k:?} returned Ok(false)"
    );
    assert_eq!(must(l, "size", s.size(k)), Some(0), "{l}: size of {k:?}");
    assert_eq!(
        must(l, "get(max_len 0)", s.get(k, 0)),
        b"",
        "{l}: get of the empty {k:?}"
    );
    assert!(
        !must(
            l,
            "put over an empty object",
            s.put_if_absent(k, b"not empty")
        ),
        "{l}: put_if_absent over the empty object {k:?} returned Ok(true)"
    );
    assert_eq!(
        get_all(l, s, k),
        b"",
        "{l}: the empty {k:?} was overwritten"
    );

    // A body of many network frames, byte for byte.
    let k = "nover/large";
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert!(must(l, "put_owned of 300 kB", s.put_owned(k, body.clone())));
    assert!(
        !must(
            l,
            "put over 300 kB",
            s.put_if_absent(k, &vec![0; body.len()])
        ),
        "{l}: put_if_absent over {k:?} with bytes of the same length returned Ok(true)"
    );
    assert!(
        must(l, "get(max_len = size)", s.get(k, body.len() as u64)) == body,
        "{l}: {k:?} did not read back byte for byte (or was overwritten)"
    );
}

// 2. ------------------------------------------------------------------------

const RACERS: usize = 8;

/// Distinct bodies of distinct lengths.
fn racer_body(round: usize, i: usize) -> Vec<u8> {
    format!("racer {i} of round {round}; ")
        .repeat(i + 1)
        .into_bytes()
}

fn racing_puts(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    for round in 0..4 {
        let key = format!("race/r{round}/key");
        let barrier = Barrier::new(RACERS);
        let results: Vec<blocksnap::Result<bool>> = thread::scope(|sc| {
            let handles: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (barrier, key) = (&barrier, &key);
                    sc.spawn(move || {
                        let bytes = racer_body(round, i);
                        barrier.wait();
                        if i % 2 == 0 {
                            s.put_if_absent(key, &bytes)
                        } else {
                            s.put_owned(key, bytes)
                        }
                    })
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(true) => winners.push(i),
                Ok(false) => {}
                Err(e) => panic!("{l}: racer {i} putting {key:?} failed: {e}"),
            }
        }
        let stored = get_all(l, s, &key);
        let stored_by = (0..RACERS).find(|&i| racer_body(round, i) == stored);
        if b.atomic_conditional_put {
            assert_eq!(
                winners.len(),
                1,
                "{l}: {key:?}: {} of {RACERS} racing conditional puts returned Ok(true) (racers {winners:?}); exactly one may write",
                winners.len()
            );
            assert_eq!(
                stored_by,
                Some(winners[0]),
                "{l}: {key:?}: the stored bytes are not those of the one put that returned Ok(true) (racer {})",
                winners[0]
            );
        } else {
            // What FORMAT.md §10 still promises on a server that does not
            // decide If-None-Match atomically: somebody wrote, and what is
            // stored is the body of a put that said it wrote.
            if winners.len() != 1 {
                eprintln!(
                    "[{l}] {key}: {} of {RACERS} racing conditional puts returned Ok(true): the server is not atomic ({S3_RACE})",
                    winners.len()
                );
            }
            assert!(
                !winners.is_empty(),
                "{l}: {key:?}: no racing put returned Ok(true), yet one of them wrote"
            );
            assert!(
                stored_by.is_some_and(|i| winners.contains(&i)),
                "{l}: {key:?}: the stored bytes (racer {stored_by:?}) are not those of a put that returned Ok(true) ({winners:?})"
            );
        }
        assert!(
            !must(l, "a put after the race", s.put_if_absent(&key, b"late")),
            "{l}: {key:?}: a put after the race returned Ok(true)"
        );
        assert_eq!(
            get_all(l, s, &key),
            stored,
            "{l}: {key:?}: overwritten after the race"
        );
    }
}

// 3. ------------------------------------------------------------------------

fn get_missing_and_max_len(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    for k in ["get/missing", "get/no/such/dir/missing", "get-nothing"] {
        match s.get(k, 1 << 20) {
            Err(e) if e.is_missing() => {}
            Err(e) => panic!("{l}: get of the missing key {k:?} must be Error::Missing, got: {e}"),
            Ok(v) => panic!(
                "{l}: get of the missing key {k:?} returned {} bytes",
                v.len()
            ),
        }
    }
    let k = "get/hundred";
    let body: Vec<u8> = (0..100u8).collect();
    assert!(must(l, "put", s.put_if_absent(k, &body)));
    assert_eq!(
        must(l, "get(max_len = size)", s.get(k, 100)),
        body,
        "{l}: get({k:?}, 100) of a 100-byte object"
    );
    // "an object larger than max_len is refused before it is read": an
    // error (the trait's `too_large`), never a truncated read.
    for max in [99, 1, 0] {
        match s.get(k, max) {
            Ok(v) => panic!(
                "{l}: get({k:?}, max_len {max}) of a 100-byte object returned {} bytes instead of refusing it",
                v.len()
            ),
            Err(e) if e.is_missing() => panic!(
                "{l}: get({k:?}, max_len {max}) of a 100-byte object said Missing; it must refuse it as too large: {e}"
            ),
            Err(Error::Format {
                cause: FormatError::Limit { value, max: m, .. },
                ..
            }) => {
                assert_eq!(
                    (value, m),
                    (100, max),
                    "{l}: get({k:?}, {max}) refused with the wrong sizes"
                );
            }
            Err(e) => panic!(
                "{l}: get({k:?}, max_len {max}) refused a 100-byte object with {e:?}; expected the trait's too_large error (Error::Format with FormatError::Limit)"
            ),
        }
    }
    assert_eq!(get_all(l, s, k), body, "{l}: {k:?} after refused reads");
    // No bound at all: the whole object (not a panic, not a short read).
    let unbounded =
        panic::catch_unwind(AssertUnwindSafe(|| s.get(k, u64::MAX))).unwrap_or_else(|p| {
            panic!(
                "{l}: get({k:?}, max_len u64::MAX) panicked: {}",
                panic_message(&*p)
            )
        });
    assert_eq!(
        must(l, "get(max_len u64::MAX)", unbounded),
        body,
        "{l}: get({k:?}, max_len u64::MAX) of a 100-byte object"
    );
}

// 4. ------------------------------------------------------------------------

fn sizes(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    for k in ["size/missing", "size/no/such/dir/x", "size-nothing"] {
        assert_eq!(
            must(l, &format!("size({k:?})"), s.size(k)),
            None,
            "{l}: size of the missing key {k:?}"
        );
    }
    for len in [0usize, 1, 1000, 70_000] {
        let k = format!("size/sub/{len}");
        assert!(must(l, "put", s.put_owned(&k, vec![0xa5; len])));
        assert_eq!(
            must(l, "size", s.size(&k)),
            Some(len as u64),
            "{l}: size of the {len}-byte {k:?}"
        );
    }
    let k = "size/sub/1000";
    must(l, "delete", s.delete(k));
    assert_eq!(
        must(l, "size after delete", s.size(k)),
        None,
        "{l}: size of {k:?} after its delete"
    );
    match s.get(k, 1 << 20) {
        Err(e) if e.is_missing() => {}
        other => panic!(
            "{l}: get of {k:?} after its delete must be Missing, got {:?}",
            other.map(|v| v.len())
        ),
    }
    assert_eq!(
        must(l, "size", s.size("size/sub/70000")),
        Some(70_000),
        "{l}: a delete changed another object's size"
    );
}

// 5. ------------------------------------------------------------------------

fn list_prefixes(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    // Keys whose lexicographic order differs from a directory walk's:
    // '-' < '/' < '0' < 'B' < 'a'.
    let keys = [
        "list/snap/a2",
        "list/ord/a0",
        "list/snap/b1",
        "list/ord/a/b",
        "list/snapx/c",
        "list/ord/B",
        "list/other/z",
        "list/ord/a-c",
        "list/s",
        "list/snap/a1",
        "list/snap/a10",
        "listx/outside",
        "lis-t/outside",
        "list/ord/a/c/d",
    ];
    let mut model = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let bytes = vec![b'x'; i + 1];
        assert!(must(l, "put", s.put_if_absent(k, &bytes)));
        model.insert(k.to_string(), bytes.len() as u64);
    }
    for prefix in [
        "list/",
        "list/snap/",
        "list/snap",
        "list/snap/a",
        "list/snap/a1",
        "list/sn",
        "list/s",
        "list/ord/",
        "list/ord/a",
        "list/ord/a/",
        "list/ord/a/c/d",
        "list/none/",
        "list/none",
        "list/snap/zz",
        "list",
        "lis",
    ] {
        let listing = must(l, &format!("list({prefix:?})"), s.list(prefix));
        assert_ordered(l, prefix, &listing);
        let expected: Vec<(String, u64)> = model
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(
            keys_and_sizes(&listing),
            expected,
            "{l}: list({prefix:?}) must be exactly the objects whose keys start with it, in lexicographic order, with their sizes"
        );
    }
}

fn list_during_writes(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let size_of = |i: usize| 5 + (i % 7) as u64;
    let pre: BTreeMap<String, u64> = (0..40)
        .map(|i| (format!("concurrent/d{}/pre-{i:03}", i % 4), size_of(i)))
        .collect();
    let doomed: Vec<String> = (0..20)
        .map(|i| format!("concurrent/d{}/doomed-{i:03}", i % 4))
        .collect();
    let new: Vec<String> = (0..120)
        .map(|j| format!("concurrent/d{}/new-{j:04}", j % 6))
        .collect();
    let mut objects: Vec<(String, Vec<u8>)> = pre
        .iter()
        .map(|(k, n)| (k.clone(), vec![1; *n as usize]))
        .collect();
    objects.extend(doomed.iter().map(|k| (k.clone(), vec![2; 3])));
    put_all(b, &objects, 4);
    let mut allowed: BTreeMap<String, u64> = pre.clone();
    allowed.extend(doomed.iter().map(|k| (k.clone(), 3)));
    allowed.extend(new.iter().enumerate().map(|(j, k)| (k.clone(), size_of(j))));

    let done = AtomicBool::new(false);
    let listings = thread::scope(|sc| {
        let writer = sc.spawn(|| {
            // Writes new objects (in new directories too) and deletes
            // others while the listings run.
            for (j, k) in new.iter().enumerate() {
                assert!(must(l, "put", s.put_owned(k, vec![3; size_of(j) as usize])));
                if j % 6 == 0 {
                    must(l, "delete", s.delete(&doomed[j / 6]));
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut listings = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let listing = match s.list("concurrent/") {
                Ok(v) => v,
                Err(e) => panic!("{l}: list while another thread writes failed: {e}"),
            };
            listings += 1;
            assert_ordered(l, "concurrent/", &listing);
            let listed: BTreeMap<&str, u64> =
                listing.iter().map(|o| (o.key.as_str(), o.size)).collect();
            for (k, n) in &pre {
                assert_eq!(
                    listed.get(k.as_str()),
                    Some(n),
                    "{l}: listing {listings} while another thread writes lost {k:?}, written before the listing began"
                );
            }
            for o in &listing {
                assert_eq!(
                    allowed.get(&o.key),
                    Some(&o.size),
                    "{l}: listing {listings} while another thread writes holds {:?} ({} bytes), which was never written with that size",
                    o.key,
                    o.size
                );
            }
            if finished && listings >= 3 {
                break;
            }
        }
        join(writer);
        listings
    });
    let listing = must(l, "list after the writes", s.list("concurrent/"));
    let mut expected: BTreeMap<String, u64> = pre;
    expected.extend(new.iter().enumerate().map(|(j, k)| (k.clone(), size_of(j))));
    expected.extend(
        doomed
            .iter()
            .skip(new.len().div_ceil(6))
            .map(|k| (k.clone(), 3)),
    );
    assert_eq!(
        keys_and_sizes(&listing),
        expected.into_iter().collect::<Vec<_>>(),
        "{l}: the listing after concurrent writes and deletes"
    );
    eprintln!("[{l}] {listings} listings ran while another thread wrote");
}

/// More than one S3 listing page (1000 keys) and more than one
/// `DeleteObjects` batch (1000 keys), on every backend.
fn past_a_thousand(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    const MANY: usize = 1100;
    let objects: Vec<(String, Vec<u8>)> = (0..MANY)
        .map(|i| {
            let k = format!("pages/{i:05}");
            let v = k.clone().into_bytes();
            (k, v)
        })
        .collect();
    put_all(b, &objects, 8);
    let before = s.request_counts();
    let listing = must(l, "list of 1100 objects", s.list("pages/"));
    if let (Kind::S3, Some(before)) = (b.kind, before) {
        let lists = s.request_counts().unwrap().since(Some(before)).list;
        assert_eq!(
            lists, 2,
            "{l}: listing 1100 objects took {lists} ListObjectsV2 requests, not 2 pages"
        );
    }
    assert_eq!(listing.len(), MANY, "{l}: list of {MANY} objects");
    assert_ordered(l, "pages/", &listing);
    for (o, (k, v)) in listing.iter().zip(&objects) {
        assert_eq!(
            (&o.key, o.size),
            (k, v.len() as u64),
            "{l}: list of {MANY} objects"
        );
    }
    // Exactly one page's worth, and a prefix inside the second page.
    let first: Vec<String> = must(l, "list", s.list("pages/00"))
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        first,
        objects[..1000]
            .iter()
            .map(|o| o.0.clone())
            .collect::<Vec<_>>(),
        "{l}: list(\"pages/00\"): the first 1000 keys"
    );
    let second: Vec<String> = must(l, "list", s.list("pages/010"))
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        second,
        objects[1000..1100]
            .iter()
            .map(|o| o.0.clone())
            .collect::<Vec<_>>(),
        "{l}: list(\"pages/010\")"
    );

    // delete_many of 1100 present and 55 missing keys, interleaved across
    // both batches.
    let mut keys = Vec::new();
    for (i, (k, _)) in objects.iter().enumerate() {
        keys.push(k.clone());
        if i % 20 == 0 {
            keys.push(format!("pages/missing-{i:05}"));
        }
    }
    let before = s.request_counts();
    must(l, "delete_many of 1155 keys", s.delete_many(&keys));
    if let (Kind::S3, Some(before)) = (b.kind, before) {
        let deletes = s.request_counts().unwrap().since(Some(before)).delete;
        assert_eq!(
            deletes, 2,
            "{l}: delete_many of 1155 keys took {deletes} requests, not two DeleteObjects batches"
        );
    }
    let left = must(l, "list after delete_many", s.list("pages/"));
    assert!(
        left.is_empty(),
        "{l}: {} of {MANY} objects survived delete_many of 1155 keys, e.g. {:?}",
        left.len(),
        left.iter().take(3).map(|o| &o.key).collect::<Vec<_>>()
    );
    for k in ["pages/00000", "pages/00999", "pages/01000", "pages/01099"] {
        assert_eq!(
            must(l, "size", s.size(k)),
            None,
            "{l}: {k:?} after delete_many"
        );
    }
}

// 6. ------------------------------------------------------------------------

fn deletes(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    for k in ["del/missing", "del/no/such/dir/x", "del-nothing"] {
        must(
            l,
            &format!("delete of the missing key {k:?} (not an error)"),
            s.delete(k),
        );
    }
    let keys = ["del/a", "del/b", "del/c", "del/d", "del/sub/e"];
    for k in keys {
        assert!(must(l, "put", s.put_if_absent(k, k.as_bytes())));
    }
    must(l, "delete", s.delete("del/a"));
    assert_eq!(
        must(l, "size", s.size("del/a")),
        None,
        "{l}: del/a after delete"
    );
    must(
        l,
        "a second delete of a deleted key (not an error)",
        s.delete("del/a"),
    );
    // A deleted key is absent: a put writes it again (how a damaged chunk
    // is replaced, FORMAT.md §10).
    assert!(
        must(l, "put after delete", s.put_if_absent("del/a", b"again")),
        "{l}: put_if_absent of a deleted key returned Ok(false)"
    );
    assert_eq!(get_all(l, s, "del/a"), b"again", "{l}: del/a rewritten");

    let mixed: Vec<String> = [
        "del/b",
        "del/missing-1",
        "del/c",
        "del/no/dir/x",
        "del/sub/e",
    ]
    .map(String::from)
    .to_vec();
    must(
        l,
        "delete_many of present and missing keys",
        s.delete_many(&mixed),
    );
    for k in ["del/b", "del/c", "del/sub/e"] {
        assert_eq!(
            must(l, "size", s.size(k)),
            None,
            "{l}: {k:?} after delete_many named it"
        );
    }
    must(l, "delete_many of no keys", s.delete_many(&[]));
    must(
        l,
        "delete_many of missing keys only",
        s.delete_many(&["del/gone-1".into(), "del/gone/2".into()]),
    );
    assert_eq!(
        keys_and_sizes(&must(l, "list", s.list("del/"))),
        vec![("del/a".into(), 5), ("del/d".into(), 5)],
        "{l}: what delete and delete_many left (only the keys they did not name)"
    );
}

/// A key one level below an existing object's key ("below/obj/x" beside
/// the object "below/obj") names no object: get is Missing, size None,
/// delete no error, a listing under it empty. No layout key is another's
/// key plus "/…", but a stray object in a shared repository can be.
fn below_an_object(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    assert!(must(l, "put", s.put_if_absent("below/obj", b"an object")));
    let mut wrong = Vec::new();
    for k in ["below/obj/x", "below/obj/deeper/x"] {
        match s.get(k, 1 << 20) {
            Err(e) if e.is_missing() => {}
            Err(e) => wrong.push(format!("get({k:?}) is not Missing but: {e}")),
            Ok(v) => wrong.push(format!("get({k:?}) returned {} bytes", v.len())),
        }
        match s.size(k) {
            Ok(None) => {}
            other => wrong.push(format!(
                "size({k:?}) is not Ok(None) but {:?}",
                other.map_err(|e| e.to_string())
            )),
        }
        if let Err(e) = s.delete(k) {
            wrong.push(format!("delete({k:?}) of a missing key failed: {e}"));
        }
    }
    // s3s-fs 0.14.1 answers DeleteObjects of such a key with 500 (ENOTDIR
    // from remove_file), which the store retries 8 times: a limitation of
    // that test server, not of S3 or of the store. Everything else here
    // runs on it too; moto and the other backends check this as well.
    if !b.server_keys_are_files {
        if let Err(e) = s.delete_many(&["below/obj/x".into()]) {
            wrong.push(format!("delete_many([\"below/obj/x\"]) failed: {e}"));
        }
    }
    match s.list("below/obj/") {
        Ok(v) if v.is_empty() => {}
        other => wrong.push(format!(
            "list(\"below/obj/\") is not empty but {:?}",
            other.map(|v| keys_and_sizes(&v)).map_err(|e| e.to_string())
        )),
    }
    assert!(
        wrong.is_empty(),
        "{l}: keys below the object \"below/obj\" are missing keys, but: {}",
        wrong.join("; ")
    );
    assert_eq!(get_all(l, s, "below/obj"), b"an object", "{l}: below/obj");
}

// 7. ------------------------------------------------------------------------

fn flush_and_reopen(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    must(l, "flush", s.flush());
    let objects: Vec<(String, Vec<u8>)> = ["flush/x/1", "flush/x/2", "flush/y/z/3", "flush/4"]
        .iter()
        .map(|k| (k.to_string(), format!("bytes of {k}").into_bytes()))
        .collect();
    put_all(b, &objects, 2);
    must(l, "flush after puts", s.flush());
    let check = |who: &str, st: &dyn Store| {
        for (k, v) in &objects {
            assert_eq!(
                &must(
                    l,
                    &format!("{who}: get({k:?}) after flush"),
                    st.get(k, 1 << 20)
                ),
                v,
                "{l}: {who}: {k:?} after flush"
            );
            assert_eq!(
                must(l, "size", st.size(k)),
                Some(v.len() as u64),
                "{l}: {who}: size of {k:?} after flush"
            );
        }
        let listed: Vec<String> = must(l, "list", st.list("flush/"))
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut expected: Vec<String> = objects.iter().map(|o| o.0.clone()).collect();
        expected.sort();
        assert_eq!(listed, expected, "{l}: {who}: list after flush");
    };
    check("this handle", s);
    must(l, "a second flush", s.flush());
    if let Some(reopen) = &b.reopen {
        let other = reopen();
        check("a new handle on the same store", &*other);
        must(l, "flush of the new handle", other.flush());
    }
}

// 8. ------------------------------------------------------------------------

fn modified_times(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    const SLACK_NS: u64 = 180_000_000_000;
    let t0 = now_unix_ns();
    for i in 0..5 {
        assert!(must(l, "put", s.put_if_absent(&format!("mtime/{i}"), b"t")));
    }
    let t1 = now_unix_ns();
    let first = must(l, "list", s.list("mtime/"));
    assert_eq!(first.len(), 5, "{l}: list(\"mtime/\")");
    for o in &first {
        assert!(
            o.modified_unix_ns + SLACK_NS >= t0 && o.modified_unix_ns <= t1 + SLACK_NS,
            "{l}: {:?} written between {t0} and {t1} ns is listed as modified at {} ns, more than 3 minutes away",
            o.key,
            o.modified_unix_ns
        );
    }
    for w in first.windows(2) {
        assert!(
            w[1].modified_unix_ns >= w[0].modified_unix_ns,
            "{l}: {:?} was written after {:?} but is listed as modified earlier ({} < {})",
            w[1].key,
            w[0].key,
            w[1].modified_unix_ns,
            w[0].modified_unix_ns
        );
    }
    // More than S3's one-second granularity later: strictly later.
    thread::sleep(Duration::from_millis(1100));
    assert!(must(l, "put", s.put_if_absent("mtime/9", b"t")));
    let second = must(l, "list", s.list("mtime/"));
    assert_eq!(
        second[..5],
        first[..],
        "{l}: the listed modified times of unchanged objects changed between two listings"
    );
    let last = &second[5];
    assert_eq!(last.key, "mtime/9");
    assert!(
        last.modified_unix_ns > first[4].modified_unix_ns,
        "{l}: mtime/9, written 1.1 s after mtime/4, is listed as modified at {} ns, not after mtime/4's {} ns",
        last.modified_unix_ns,
        first[4].modified_unix_ns
    );
}

// 10. -----------------------------------------------------------------------

fn layout_keys(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let id = |n: u32| Hash::of(format!("object {n}").as_bytes());
    let mut keys: Vec<String> = (0..12).map(|n| layout::chunk_key(&id(n))).collect();
    // Two more chunks in the first one's fan-out directory.
    let fan = id(0).to_hex()[..2].to_string();
    keys.extend(
        (12..)
            .map(id)
            .filter(|h| h.to_hex().starts_with(&fan))
            .take(2)
            .map(|h| layout::chunk_key(&h)),
    );
    let snap = |height, n| {
        SnapshotKey {
            height,
            created_unix_ns: 1_763_769_600_000_000_000,
            id: id(n),
        }
        .key()
    };
    let attempt = Attempt::of(&[7; 32]);
    let sig = format!("{}{}/0123456789ABCDEF", layout::SIGNATURES_PREFIX, id(100));
    keys.extend([
        layout::CONFIG_KEY.to_string(),
        snap(1000, 100),
        snap(999, 101),
        layout::epoch_key(1),
        layout::epoch_key(2),
        layout::forgotten_key(&id(101)),
        layout::pending_key(&id(102), &attempt),
        layout::fate_key(&id(102), &attempt),
        layout::round_key(3, RoundObject::Plan),
        layout::round_key(3, RoundObject::Sweep(1)),
        layout::round_key(3, RoundObject::Done(1)),
        format!("{}now-{}", layout::PRUNE_PREFIX, &id(103).to_hex()[..16]),
        format!("{sig}.forget"),
        sig,
    ]);
    let objects: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|k| {
            // Prune's markers are empty objects.
            let body = if k.contains(".sweep-") || k.contains(".done-") {
                Vec::new()
            } else {
                format!("the object at {k}").into_bytes()
            };
            (k.clone(), body)
        })
        .collect();
    put_all(b, &objects, 4);
    let model: BTreeMap<String, u64> = objects
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    for (k, v) in &objects {
        assert_eq!(&get_all(l, s, k), v, "{l}: get of the layout key {k:?}");
        assert_eq!(
            must(l, "size", s.size(k)),
            Some(v.len() as u64),
            "{l}: size of the layout key {k:?}"
        );
    }
    for prefix in [
        layout::CHUNKS_PREFIX.to_string(),
        format!("{}{fan}/", layout::CHUNKS_PREFIX),
        layout::SNAPSHOTS_PREFIX.into(),
        layout::EPOCHS_PREFIX.into(),
        layout::FORGOTTEN_PREFIX.into(),
        layout::PENDING_PREFIX.into(),
        layout::PRUNE_PREFIX.into(),
        layout::SIGNATURES_PREFIX.into(),
        format!("{}{}/", layout::SIGNATURES_PREFIX, id(100)),
        "conf".into(),
    ] {
        let listing = must(l, &format!("list({prefix:?})"), s.list(&prefix));
        let expected: Vec<(String, u64)> = model
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(
            keys_and_sizes(&listing),
            expected,
            "{l}: list({prefix:?}) of layout keys"
        );
    }
    let chunks = must(l, "list", s.list(layout::CHUNKS_PREFIX));
    assert_eq!(chunks.len(), 14, "{l}: chunk keys listed");
    for o in &chunks {
        assert!(
            layout::parse_chunk_key(&o.key).is_some(),
            "{l}: the listed chunk key {:?} does not parse",
            o.key
        );
    }
    // Everything, from the top: the layout keys are all there, in order.
    let all = must(l, "list(\"\")", s.list(""));
    assert_ordered(l, "", &all);
    let listed: BTreeMap<&str, u64> = all.iter().map(|o| (o.key.as_str(), o.size)).collect();
    for (k, n) in &model {
        assert_eq!(
            listed.get(k.as_str()),
            Some(n),
            "{l}: list(\"\") lacks the layout key {k:?}"
        );
    }
    must(l, "delete_many of layout keys", s.delete_many(&keys));
    for k in &keys {
        assert_eq!(must(l, "size", s.size(k)), None, "{l}: {k:?} after delete");
    }
    assert!(
        must(l, "list", s.list(layout::CHUNKS_PREFIX)).is_empty(),
        "{l}: chunks/ after delete_many"
    );
}

// 9. ------------------------------------------------------------------------

/// Temp files a crashed writer left in a local store's `tmp/`, removed
/// when the check ends (also when it fails).
struct Leftovers(Vec<PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

const OLD_TMP: &str = "0123456789abcdef0123456789abcdef";
const FRESH_TMP: &str = "fedcba9876543210fedcba9876543210";
const OLD_BYTES: &[u8] = b"torn: a crashed writer's bytes";
const FRESH_BYTES: &[u8] = b"in progress";

/// A temp file as a writer that crashed between writing and linking
/// leaves it, and a fresh one, as a write in progress is.
fn leave_tmp_files(root: &Path) -> Leftovers {
    let tmp = root.join(blocksnap::store::local::TMP_DIR);
    std::fs::create_dir_all(&tmp).unwrap();
    let old = tmp.join(OLD_TMP);
    std::fs::write(&old, OLD_BYTES).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let fresh = tmp.join(FRESH_TMP);
    std::fs::write(&fresh, FRESH_BYTES).unwrap();
    Leftovers(vec![old, fresh])
}

fn torn_never_listed(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let Some(root) = &b.local_root else { return };
    let _left = leave_tmp_files(root);
    assert!(must(l, "put", s.put_if_absent("torn/object", b"whole")));
    let mut leaks = Vec::new();
    for prefix in [
        "".to_string(),
        "t".into(),
        "tmp".into(),
        "tmp/".into(),
        format!("tmp/{}", &OLD_TMP[..4]),
        format!("tmp/{OLD_TMP}"),
        format!("tmp/{FRESH_TMP}"),
    ] {
        let listing = must(l, &format!("list({prefix:?})"), s.list(&prefix));
        let leaked: Vec<&str> = listing
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| *k == "tmp" || k.starts_with("tmp/"))
            .collect();
        if !leaked.is_empty() {
            leaks.push(format!("list({prefix:?}) lists {leaked:?}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{l}: temp files of writes in progress or of crashed writers are listed as objects: {} (FORMAT.md §2: tmp/<32 hex> is never listed and never an object)",
        leaks.join("; ")
    );
    assert_eq!(
        keys_and_sizes(&must(l, "list", s.list("torn/"))),
        vec![("torn/object".into(), 5)],
        "{l}: list(\"torn/\") beside temp files"
    );
}

fn torn_never_objects(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let Some(root) = &b.local_root else { return };
    let _left = leave_tmp_files(root);
    let mut found = Vec::new();
    for name in [OLD_TMP, FRESH_TMP] {
        let key = format!("tmp/{name}");
        // Missing, or refused: anything but the bytes.
        if let Ok(bytes) = s.get(&key, 1 << 20) {
            found.push(format!("get({key:?}) returned its {} bytes", bytes.len()));
        }
        if let Ok(Some(n)) = s.size(&key) {
            found.push(format!("size({key:?}) = Some({n})"));
        }
    }
    assert!(
        found.is_empty(),
        "{l}: temp files of crashed writers are returned as objects: {} (FORMAT.md §2: tmp/<32 hex> is never listed and never an object)",
        found.join("; ")
    );
}

fn stale_writes(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let Some(root) = &b.local_root else {
        assert_eq!(
            must(
                l,
                "remove_stale_writes",
                s.remove_stale_writes(now_unix_ns() + 3_600_000_000_000)
            ),
            (0, 0),
            "{l}: a store with no temp files has no stale writes to remove"
        );
        return;
    };
    let left = leave_tmp_files(root);
    let (old, fresh) = (&left.0[0], &left.0[1]);
    let objects_before = keys_and_sizes(&must(l, "list", s.list("")));
    let hour = 3_600_000_000_000;
    assert_eq!(
        must(
            l,
            "remove_stale_writes(an hour ago)",
            s.remove_stale_writes(now_unix_ns() - hour)
        ),
        (1, OLD_BYTES.len() as u64),
        "{l}: remove_stale_writes(an hour ago) with one 2-hour-old and one fresh temp file: (files, bytes)"
    );
    assert!(!old.exists(), "{l}: the 2-hour-old temp file survived");
    assert!(
        fresh.exists(),
        "{l}: remove_stale_writes(an hour ago) removed a fresh temp file (a write in progress)"
    );
    assert_eq!(
        must(
            l,
            "remove_stale_writes again",
            s.remove_stale_writes(now_unix_ns() - hour)
        ),
        (0, 0),
        "{l}: a second remove_stale_writes(an hour ago)"
    );
    assert_eq!(
        must(
            l,
            "remove_stale_writes(in a minute)",
            s.remove_stale_writes(now_unix_ns() + 60_000_000_000)
        ),
        (1, FRESH_BYTES.len() as u64),
        "{l}: remove_stale_writes(in a minute) of the fresh temp file"
    );
    assert!(
        !fresh.exists(),
        "{l}: the temp file older than the cutoff survived"
    );
    assert_eq!(
        keys_and_sizes(&must(l, "list", s.list(""))),
        objects_before,
        "{l}: remove_stale_writes changed the objects"
    );
}

// 11. -----------------------------------------------------------------------

fn identity_and_counts(b: &Backend) {
    let (l, s) = (b.label.as_str(), &*b.store);
    let location = s.location();
    assert!(!location.is_empty(), "{l}: location() is empty");
    match (b.kind, &b.local_root) {
        (Kind::Local, Some(root)) => assert_eq!(
            location,
            root.display().to_string(),
            "{l}: location() of a local store"
        ),
        (Kind::S3, _) => assert_eq!(
            location,
            format!("s3://{BUCKET}/contract/"),
            "{l}: location() of an S3 store"
        ),
        _ => {}
    }
    assert!(s.parallelism() >= 1, "{l}: parallelism() is 0");
    if b.kind == Kind::S3 {
        assert_eq!(
            s.parallelism(),
            blocksnap_s3::DEFAULT_PARALLELISM,
            "{l}: parallelism() of an S3 store opened with the default"
        );
    }
    let Some(mut last) = s.request_counts() else {
        assert!(
            !b.counts_requests,
            "{l}: request_counts() is None for a store that counts its requests"
        );
        return;
    };
    assert!(
        b.counts_requests,
        "{l}: request_counts() is {last:?} for a store that keeps no count"
    );
    let mut step = |what: &str, field: fn(&Counts) -> u64, op: &dyn Fn()| {
        op();
        let now = s
            .request_counts()
            .unwrap_or_else(|| panic!("{l}: request_counts() became None after {what}"));
        assert!(
            field(&now) > field(&last),
            "{l}: {what} was not counted: {last:?} then {now:?}"
        );
        assert!(
            now.total() >= last.total(),
            "{l}: request counts went down after {what}: {last:?} then {now:?}"
        );
        last = now;
    };
    step("a put", |c| c.put, &|| {
        must(l, "put", s.put_if_absent("counts/a", b"a"));
    });
    step("a put_owned", |c| c.put, &|| {
        must(l, "put_owned", s.put_owned("counts/b", b"b".to_vec()));
    });
    step("a get", |c| c.get, &|| {
        must(l, "get", s.get("counts/a", 10));
    });
    step("a size", |c| c.head, &|| {
        must(l, "size", s.size("counts/a"));
    });
    step("a list", |c| c.list, &|| {
        must(l, "list", s.list("counts/"));
    });
    step("a delete", |c| c.delete, &|| {
        must(l, "delete", s.delete("counts/a"));
    });
    step("a delete_many", |c| c.delete, &|| {
        must(l, "delete_many", s.delete_many(&["counts/b".into()]));
    });
}

// ---------------------------------------------------------------------------
// Decorators forward every method
// ---------------------------------------------------------------------------

/// A store that records each call, with its arguments, and answers with
/// values no default implementation would give.
struct Recording {
    log: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn record(&self, call: String) {
        self.log.lock().unwrap().push(call);
    }
}

impl Store for Recording {
    fn get(&self, key: &str, max_len: u64) -> blocksnap::Result<Vec<u8>> {
        self.record(format!("get {key} {max_len}"));
        Ok(b"the inner store's bytes".to_vec())
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> blocksnap::Result<bool> {
        self.record(format!(
            "put_if_absent {key} {}",
            String::from_utf8_lossy(bytes)
        ));
        Ok(false)
    }
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> blocksnap::Result<bool> {
        self.record(format!(
            "put_owned {key} {}",
            String::from_utf8_lossy(&bytes)
        ));
        Ok(true)
    }
    fn size(&self, key: &str) -> blocksnap::Result<Option<u64>> {
        self.record(format!("size {key}"));
        Ok(Some(4242))
    }
    fn list(&self, prefix: &str) -> blocksnap::Result<Vec<ObjectInfo>> {
        self.record(format!("list {prefix}"));
        Ok(vec![ObjectInfo {
            key: format!("{prefix}listed"),
            size: 3,
            modified_unix_ns: 17,
        }])
    }
    fn delete(&self, key: &str) -> blocksnap::Result<()> {
        self.record(format!("delete {key}"));
        Ok(())
    }
    fn delete_many(&self, keys: &[String]) -> blocksnap::Result<()> {
        self.record(format!("delete_many {}", keys.join(",")));
        Ok(())
    }
    fn remove_stale_writes(&self, before_unix_ns: u64) -> blocksnap::Result<(u64, u64)> {
        self.record(format!("remove_stale_writes {before_unix_ns}"));
        Ok((3, 99))
    }
    fn flush(&self) -> blocksnap::Result<()> {
        self.record("flush".into());
        Ok(())
    }
    fn location(&self) -> String {
        self.record("location".into());
        "recording-store".into()
    }
    fn parallelism(&self) -> usize {
        self.record("parallelism".into());
        13
    }
    fn request_counts(&self) -> Option<Counts> {
        self.record("request_counts".into());
        Some(Counts {
            get: 1,
            put: 2,
            head: 3,
            list: 4,
            delete: 5,
            retries: 6,
        })
    }
}

type Call = fn(&dyn Store) -> String;

/// One call of every method of the trait, with its answer as text.
const CALLS: &[(&str, Call)] = &[
    ("get", |s| format!("{:?}", s.get("chunks/ab/k", 77).ok())),
    ("put_if_absent", |s| {
        format!("{:?}", s.put_if_absent("snapshots/p", b"put bytes").ok())
    }),
    ("put_owned", |s| {
        format!(
            "{:?}",
            s.put_owned("snapshots/o", b"owned bytes".to_vec()).ok()
        )
    }),
    ("size", |s| format!("{:?}", s.size("chunks/ab/s").ok())),
    ("list", |s| format!("{:?}", s.list("prune/").ok())),
    ("delete", |s| format!("{:?}", s.delete("pending/d").ok())),
    ("delete_many", |s| {
        let keys = ["chunks/aa/1", "chunks/bb/2", "chunks/cc/3"].map(String::from);
        format!("{:?}", s.delete_many(&keys).ok())
    }),
    ("remove_stale_writes", |s| {
        format!("{:?}", s.remove_stale_writes(123_456_789).ok())
    }),
    ("flush", |s| format!("{:?}", s.flush().ok())),
    ("location", |s| s.location()),
    ("parallelism", |s| s.parallelism().to_string()),
    ("request_counts", |s| format!("{:?}", s.request_counts())),
];

/// Each method called on the decorator reaches the same method of the
/// inner store, once, with the same arguments, and the decorator answers
/// what the inner store answered.
fn assert_forwards_every_method(label: &str, wrap: impl FnOnce(Recording) -> Box<dyn Store>) {
    let bare_log = Arc::new(Mutex::new(Vec::new()));
    let bare = Recording {
        log: bare_log.clone(),
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let wrapped = wrap(Recording { log: log.clone() });
    let mut failures = Vec::new();
    for (method, call) in CALLS {
        bare_log.lock().unwrap().clear();
        log.lock().unwrap().clear();
        let expected_answer = call(&bare);
        let answer = call(&*wrapped);
        let expected_calls = bare_log.lock().unwrap().clone();
        let calls = log.lock().unwrap().clone();
        if calls.is_empty() {
            failures.push(format!(
                "{method} does not reach the inner store (expected {expected_calls:?})"
            ));
        } else if calls != expected_calls {
            failures.push(format!(
                "{method} reaches the inner store as {calls:?}, not {expected_calls:?}"
            ));
        }
        if answer != expected_answer {
            failures.push(format!(
                "{method} answers {answer}, the inner store answered {expected_answer}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{label} does not forward every method to its inner store:\n- {}",
        failures.join("\n- ")
    );
}

#[test]
fn counting_store_forwards_every_method() {
    assert_forwards_every_method("CountingStore", |r| Box::new(CountingStore::new(r)));
}

#[test]
fn limited_store_forwards_every_method() {
    assert_forwards_every_method("LimitedStore (generous limits)", |r| {
        Box::new(LimitedStore::new(r, GENEROUS))
    });
    assert_forwards_every_method("LimitedStore (no limits)", |r| {
        Box::new(LimitedStore::new(r, Limits::default()))
    });
}

#[test]
fn faulty_store_without_faults_forwards_every_method() {
    assert_forwards_every_method("FaultyStore (no faults)", |r| {
        Box::new(FaultyStore::new(r, None, None))
    });
}

#[test]
fn shared_handles_forward_every_method() {
    assert_forwards_every_method("Arc<S>", |r| Box::new(Arc::new(r)));
    assert_forwards_every_method("Arc<dyn Store>", |r| {
        let shared: Arc<dyn Store> = Arc::new(r);
        Box::new(shared)
    });
}

#[test]
fn stacked_decorators_forward_every_method() {
    assert_forwards_every_method("CountingStore<LimitedStore<FaultyStore<Arc<_>>>>", |r| {
        Box::new(CountingStore::new(LimitedStore::new(
            FaultyStore::new(Arc::new(r), None, None),
            GENEROUS,
        )))
    });
}

/// The forwarding check itself catches a decorator that lets a method fall
/// back to the trait's default.
#[test]
fn the_forwarding_check_catches_a_method_left_to_its_default() {
    struct Forgetful<S>(S);
    impl<S: Store> Store for Forgetful<S> {
        fn get(&self, key: &str, max_len: u64) -> blocksnap::Result<Vec<u8>> {
            self.0.get(key, max_len)
        }
        fn put_if_absent(&self, key: &str, bytes: &[u8]) -> blocksnap::Result<bool> {
            self.0.put_if_absent(key, bytes)
        }
        fn size(&self, key: &str) -> blocksnap::Result<Option<u64>> {
            self.0.size(key)
        }
        fn list(&self, prefix: &str) -> blocksnap::Result<Vec<ObjectInfo>> {
            self.0.list(prefix)
        }
        fn delete(&self, key: &str) -> blocksnap::Result<()> {
            self.0.delete(key)
        }
        fn flush(&self) -> blocksnap::Result<()> {
            self.0.flush()
        }
        fn location(&self) -> String {
            self.0.location()
        }
    }
    let message = panic::catch_unwind(|| {
        assert_forwards_every_method("Forgetful", |r| Box::new(Forgetful(r)));
    })
    .map(|_| String::new())
    .unwrap_or_else(|p| panic_message(&*p));
    for method in [
        "put_owned",
        "delete_many",
        "remove_stale_writes",
        "parallelism",
        "request_counts",
    ] {
        assert!(
            message.contains(&format!("\n- {method} ")),
            "the forwarding check missed {method} left to its default: {message:?}"
        );
    }
}
