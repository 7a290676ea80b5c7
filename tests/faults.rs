//! Fault injection into local and in-memory repositories (issue #9's
//! reliability figures): one fault at a time — a flipped bit, a truncation,
//! an appended tail or a deleted object, in a chunk or a manifest — after
//! which a full verify must name the damaged file and chunk (or snapshot),
//! and a restore that needs the object must refuse it. None may be silently
//! accepted.
//!
//! `BLOCKSNAP_FAULTS=N` sets the number of faults (default 300, which runs
//! in CI in seconds); `benches/faults.sh` runs 10 000 and more.

mod common;

use std::sync::Arc;

use blocksnap::format::config::ChunkerParams;
use blocksnap::progress::Silent;
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{LocalStore, MemoryStore, Store};
use blocksnap::Repository;
use common::faults::{caught, Census, Fault, Rng};

/// Small chunks, so that two snapshots of a small node make a few hundred
/// objects to damage.
const PARAMS: ChunkerParams = ChunkerParams {
    min_size: 4 << 10,
    avg_size: 16 << 10,
    max_size: 64 << 10,
};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_fault_in_a_local_or_memory_repository_is_reported() {
    let faults = count("BLOCKSNAP_FAULTS", 300);
    let seed = count("BLOCKSNAP_FAULT_SEED", 20261130) as u64;
    let tmp = tempfile::tempdir().unwrap();
    let source = common::node(tmp.path(), 2);
    let repo_dir = tmp.path().join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let local = Arc::new(LocalStore::open(&repo_dir));
    let repo = Repository::init(local.clone(), PARAMS, 3).unwrap();
    let opts = SnapshotOptions {
        source: source.clone(),
        height: 1,
        ..Default::default()
    };
    snapshot::snapshot(&repo, &opts, &Silent).unwrap();
    common::advance(&source, 200);
    snapshot::snapshot(&repo, &SnapshotOptions { height: 2, ..opts }, &Silent).unwrap();
    let census = Census::of(&repo);

    // The same repository in memory.
    let memory = Arc::new(MemoryStore::new());
    for o in local.list("").unwrap() {
        memory
            .put_if_absent(&o.key, &local.get(&o.key, 1 << 30).unwrap())
            .unwrap();
    }
    let in_memory = Repository::open(memory.clone()).unwrap();

    let objects = census.objects();
    let mut rng = Rng(seed);
    let target = tmp.path().join("restored");
    let mut failures = Vec::new();
    let (mut on_disk, mut restores) = (0u64, 0u64);
    for i in 0..faults {
        let key = &objects[rng.below(objects.len() as u64) as usize];
        let pristine = local.get(key, 1 << 30).unwrap();
        let fault = Fault::random(&mut rng, pristine.len());
        let damaged = fault.apply(&pristine);
        // Every 10th fault also restores (the slow part).
        let restore_to = (i % 10 == 0).then_some(target.as_path());
        restores += u64::from(restore_to.is_some());
        let verdict = if i % 2 == 0 {
            on_disk += 1;
            let path = repo_dir.join(key);
            match &damaged {
                Some(b) => std::fs::write(&path, b).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            let v = caught(&repo, &census, key, restore_to);
            std::fs::write(&path, &pristine).unwrap();
            v
        } else {
            match &damaged {
                Some(b) => memory.tamper(key, |stored| *stored = b.clone()),
                None => memory.delete(key).unwrap(),
            }
            let v = caught(&in_memory, &census, key, restore_to);
            memory.delete(key).unwrap();
            memory.put_if_absent(key, &pristine).unwrap();
            v
        };
        if let Some(why) = verdict {
            failures.push(format!("fault {i} ({fault:?} in {key}): {why}"));
        }
    }
    eprintln!(
        "faults: {faults} injected (seed {seed}; {on_disk} on disk, {} in memory; {restores} also restored): \
         {} reported with file and chunk or snapshot, {} silently accepted",
        faults as u64 - on_disk,
        faults - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
