//! Snapshot → restore → verify on generated node data, through the engine.

mod common;

use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::manifest::EntryKind;
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{CountingStore, FaultyStore, LocalStore, Store};
use blocksnap::verify::{self, Level};
use blocksnap::{Error, Repository, Selector};
use common::{NODE_IP, OTHER_IP};

fn local_repo(dir: &std::path::Path) -> (Arc<LocalStore>, Repository) {
    let path = dir.join("repo");
    std::fs::create_dir_all(&path).unwrap();
    let store = Arc::new(LocalStore::open(&path));
    let repo = Repository::init(store.clone(), DEFAULT_PARAMS, 3).unwrap();
    (store, repo)
}

fn snap(repo: &Repository, source: &std::path::Path, height: u64) -> snapshot::SnapshotReport {
    let opts = SnapshotOptions {
        source: source.to_path_buf(),
        height,
        ..Default::default()
    };
    snapshot::snapshot(repo, &opts, &Silent).unwrap()
}

fn restore_to(
    repo: &Repository,
    sel: Selector,
    target: &std::path::Path,
    ip: Option<&str>,
) -> blocksnap::Result<restore::RestoreReport> {
    let key = repo.resolve(&sel)?[0];
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        ip: ip.map(String::from),
        ..Default::default()
    };
    let plan = restore::plan(repo, &key, &opts)?;
    restore::restore(repo, &plan, &opts, &Silent)
}

#[test]
fn restore_is_byte_identical_with_the_ip_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 12);
    let (_store, repo) = local_repo(dir.path());
    let report = snap(&repo, &source, 100);
    assert_eq!(report.normalised_ip, Some(NODE_IP));
    let manifest = repo.load_manifest(&report.key).unwrap();
    assert!(manifest
        .entries
        .iter()
        .any(|e| e.path == ".storage/db_CHANGEIP:7100_icon_dex"));
    assert!(!manifest.entries.iter().any(|e| e.path.contains("10.0.0.7")));

    let target = dir.path().join("restored/loopchain");
    let r = restore_to(
        &repo,
        Selector::Latest,
        &target,
        Some(&OTHER_IP.to_string()),
    )
    .unwrap();
    assert_eq!(r.files, manifest.stats.files);
    let want = common::describe(&source, Some((NODE_IP, OTHER_IP)));
    let got = common::describe(&target, None);
    assert_eq!(want.len(), got.len());
    for (path, node) in &want {
        assert_eq!(got.get(path), Some(node), "{path} differs");
    }
    assert!(want.contains_key(&format!(".storage/db_{OTHER_IP}:7100_icon_dex/CURRENT")));
    // No staging directory left behind.
    let leftovers: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("loopchain")]);

    let v = verify::verify(
        &repo,
        &repo.resolve(&Selector::All).unwrap(),
        Level::Full,
        &Silent,
    )
    .unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    // Full verify reads each distinct file content once.
    let distinct: std::collections::HashMap<_, u64> = manifest
        .files()
        .map(|(_, size, hash, _)| (*hash, size))
        .collect();
    assert_eq!(v.bytes_checked, distinct.values().sum::<u64>());
}

#[test]
fn second_snapshot_stores_only_new_and_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 12);
    let (store, repo) = local_repo(dir.path());
    let first = snap(&repo, &source, 1);
    let size_after_first = common::du(store.root());
    common::advance(&source, 400);
    let second = snap(&repo, &source, 2);
    let grown = common::du(store.root()) - size_after_first;

    let m1 = repo.load_manifest(&first.key).unwrap();
    let m2 = repo.load_manifest(&second.key).unwrap();
    assert_eq!(
        m2.parent,
        Some(first.key.id),
        "the second snapshot names the first as parent"
    );
    let old: std::collections::HashSet<_> = m1
        .files()
        .map(|(e, _, h, _)| (e.path.clone(), *h))
        .collect();
    let changed: u64 = m2
        .files()
        .filter(|(e, _, h, _)| !old.contains(&(e.path.clone(), **h)))
        .map(|(_, s, _, _)| s)
        .sum();
    assert!(changed > 0, "advancing the node changed nothing");
    // Stored objects carry a 24-byte header each, and the manifest is new too.
    let overhead = 24 * second.stats.new_chunks + 64 * 1024;
    assert!(
        second.stats.new_stored_bytes <= changed + overhead,
        "stored {} for {changed} changed bytes",
        second.stats.new_stored_bytes
    );
    assert!(
        grown <= changed + overhead + 256 * 1024,
        "store grew {grown} for {changed} changed bytes"
    );
    let changed_chunks: u64 = m2
        .files()
        .filter(|(e, _, h, _)| !old.contains(&(e.path.clone(), **h)))
        .map(|(_, _, _, c)| c.len() as u64)
        .sum();
    assert!(
        second.stats.new_chunks <= changed_chunks,
        "unchanged files' chunks were stored again"
    );
}

#[test]
fn interrupted_snapshot_leaves_no_manifest_and_rerun_stores_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 6);
    let (store, _repo) = local_repo(dir.path());
    let faulty =
        Repository::open(Arc::new(FaultyStore::new(store.clone(), Some(5), None))).unwrap();
    let err = snapshot::snapshot(
        &faulty,
        &SnapshotOptions {
            source: source.clone(),
            height: 1,
            ..Default::default()
        },
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    let repo = Repository::open(store.clone()).unwrap();
    assert!(
        repo.snapshots().unwrap().is_empty(),
        "an interrupted snapshot committed a manifest"
    );
    let stored_before = store.list("chunks/").unwrap().len() as u64;
    assert!(stored_before >= 1);

    let counting = Repository::open(Arc::new(CountingStore::new(store.clone()))).unwrap();
    let report = snapshot::snapshot(
        &counting,
        &SnapshotOptions {
            source,
            height: 1,
            ..Default::default()
        },
        &Silent,
    )
    .unwrap();
    let total = store.list("chunks/").unwrap().len() as u64;
    assert_eq!(report.stats.new_chunks, total - stored_before);
}

#[test]
fn failed_restore_leaves_no_target_and_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 6);
    let (store, repo) = local_repo(dir.path());
    snap(&repo, &source, 1);
    let target = dir.path().join("restored");
    // The config, the manifest, then exactly the chunks of the largest file:
    // one worker restores largest first, so that file completes and the
    // next one fails.
    let m = repo
        .load_manifest(&repo.resolve(&Selector::Latest).unwrap()[0])
        .unwrap();
    let largest = m.files().max_by_key(|f| f.1).unwrap().3.len() as u64;
    let faulty = Repository::open(Arc::new(FaultyStore::new(
        store.clone(),
        None,
        Some(2 + largest),
    )))
    .unwrap();
    let ip = OTHER_IP.to_string();
    let key = faulty.resolve(&Selector::Latest).unwrap()[0];
    let opts = RestoreOptions {
        target: target.clone(),
        ip: Some(ip.clone()),
        jobs: 1,
        ..Default::default()
    };
    let plan = restore::plan(&faulty, &key, &opts).unwrap();
    let err = restore::restore(&faulty, &plan, &opts, &Silent).unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert!(
        common::published(&target).is_empty(),
        "a failed restore left a target that looks complete"
    );

    let r = restore_to(&repo, Selector::Latest, &target, Some(&ip)).unwrap();
    assert!(r.files_resumed >= 1, "nothing was resumed");
    assert_eq!(
        common::describe(&target, None),
        common::describe(&source, Some((NODE_IP, OTHER_IP)))
    );
}

#[test]
fn ip_is_required_and_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 2);
    let (_store, repo) = local_repo(dir.path());
    snap(&repo, &source, 1);
    let target = dir.path().join("restored");
    let err = restore_to(&repo, Selector::Latest, &target, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--ip") && msg.contains(".storage/db_CHANGEIP:7100_icon_dex"),
        "{msg}"
    );
    for bad in ["10.0.0", "300.1.1.1", "node-b", "10.0.0.7/24"] {
        let err = restore_to(&repo, Selector::Latest, &target, Some(bad)).unwrap_err();
        assert!(
            err.to_string().contains("not an IPv4 address"),
            "{bad}: {err}"
        );
    }
    assert!(!target.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "restore wrote something"
    );
}

#[test]
fn non_empty_target_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 2);
    let (_store, repo) = local_repo(dir.path());
    snap(&repo, &source, 1);
    let target = dir.path().join("restored");
    std::fs::create_dir_all(target.join("log")).unwrap();
    std::fs::create_dir_all(target.join(".storage/stale")).unwrap();
    let ip = OTHER_IP.to_string();
    let err = restore_to(&repo, Selector::Latest, &target, Some(&ip)).unwrap_err();
    assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");

    let key = repo.resolve(&Selector::Latest).unwrap()[0];
    let opts = RestoreOptions {
        target: target.clone(),
        ip: Some(ip),
        force: true,
        jobs: 2,
        ..Default::default()
    };
    let plan = restore::plan(&repo, &key, &opts).unwrap();
    restore::restore(&repo, &plan, &opts, &Silent).unwrap();
    assert!(
        target.join("log").is_dir(),
        "force removed an entry the snapshot does not have"
    );
    assert!(
        !target.join(".storage/stale").exists(),
        "force kept a stale entry inside a restored directory"
    );
    let mut got = common::describe(&target, None);
    got.remove("log");
    assert_eq!(got, common::describe(&source, Some((NODE_IP, OTHER_IP))));
}

#[test]
fn includes_and_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 2);
    let (_store, repo) = local_repo(dir.path());
    let opts = SnapshotOptions {
        source: source.clone(),
        height: 5,
        includes: vec![".score_data/db".into(), ".storage".into()],
        tags: vec!["hourly".into()],
        ..Default::default()
    };
    let a = snapshot::snapshot(&repo, &opts, &Silent).unwrap();
    let m = repo.load_manifest(&a.key).unwrap();
    assert!(m
        .entries
        .iter()
        .all(|e| e.path.starts_with(".score_data") || e.path.starts_with(".storage")));
    assert!(m
        .entries
        .iter()
        .any(|e| e.path == ".score_data" && e.kind == EntryKind::Dir));
    assert!(!m
        .entries
        .iter()
        .any(|e| e.path.starts_with(".score_data/score")));
    assert_eq!(m.tags, vec!["hourly".to_string()]);
    let b = snap(&repo, &source, 5);
    let c = snap(&repo, &source, 3);
    assert_eq!(
        repo.resolve(&Selector::Height(5)).unwrap(),
        vec![b.key],
        "newest at a height wins"
    );
    assert_eq!(
        repo.resolve(&Selector::Latest).unwrap(),
        vec![b.key],
        "latest is the highest height"
    );
    assert_eq!(
        repo.resolve(&Selector::All).unwrap(),
        vec![c.key, a.key, b.key]
    );
    assert!(matches!(
        repo.resolve(&Selector::Height(4)),
        Err(Error::NoSnapshot { .. })
    ));
    let missing = SnapshotOptions {
        includes: vec!["nope".into()],
        ..opts.clone()
    };
    assert!(matches!(
        snapshot::snapshot(&repo, &missing, &Silent),
        Err(Error::IncludeMissing { .. })
    ));
    let escaping = SnapshotOptions {
        includes: vec!["../x".into()],
        ..opts
    };
    assert!(snapshot::snapshot(&repo, &escaping, &Silent).is_err());
}

#[test]
fn full_verify_of_all_reads_each_shared_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 6);
    let (store, repo) = local_repo(dir.path());
    snap(&repo, &source, 1);
    common::advance(&source, 50);
    snap(&repo, &source, 2);
    let counting = Arc::new(CountingStore::new(store.clone()));
    let repo = Repository::open(counting.clone()).unwrap();
    let keys = repo.resolve(&Selector::All).unwrap();
    let before = counting.counts();
    let v = verify::verify(&repo, &keys, Level::Full, &Silent).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    let chunks = store.list("chunks/").unwrap().len() as u64;
    let gets = counting.counts().get - before.get;
    // Two manifests, and each chunk once (distinct files may share a chunk,
    // which generated data does not).
    assert_eq!(gets, 2 + chunks);
    assert_eq!(v.chunks_checked, chunks);
}

/// Another writer (another zstd level, another version) stored some of
/// this snapshot's chunks with other bytes: the manifest records the size
/// the store holds, so restore and verify read them within bounds.
#[test]
fn a_chunk_another_writer_stored_at_another_size_is_recorded_at_the_stored_size() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    std::fs::create_dir_all(&source).unwrap();
    // Compressible, several chunks.
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i / 7 % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    std::fs::write(source.join("table.ldb"), &data).unwrap();
    let (store, repo) = local_repo(dir.path());
    // What the other writer did: every chunk of the file, at level 19.
    let mut other = zstd::bulk::Compressor::new(19).unwrap();
    let mut theirs = std::collections::HashMap::new();
    for cut in blocksnap::chunking::cuts(&data, &DEFAULT_PARAMS) {
        let raw = &data[cut.offset..cut.offset + cut.len];
        let id = blocksnap::Hash::of(raw);
        let object = blocksnap::format::chunk::encode(raw, &mut other);
        let key = blocksnap::format::layout::chunk_key(&id);
        assert!(store.put_if_absent(&key, &object).unwrap());
        theirs.insert(id, object.len() as u32);
    }
    let report = snap(&repo, &source, 1);
    assert_eq!(report.stats.new_chunks, 0);
    let manifest = repo.load_manifest(&report.key).unwrap();
    let (_, _, _, chunks) = manifest.files().next().unwrap();
    let mut ours = zstd::bulk::Compressor::new(3).unwrap();
    for c in chunks {
        assert_eq!(c.stored_len, theirs[&c.id], "chunk {}", c.id);
    }
    // The test means something only if this writer's encoding differs.
    let differs = chunks.iter().any(|c| {
        let cut = blocksnap::chunking::cuts(&data, &DEFAULT_PARAMS)
            .find(|k| blocksnap::Hash::of(&data[k.offset..k.offset + k.len]) == c.id)
            .unwrap();
        let raw = &data[cut.offset..cut.offset + cut.len];
        blocksnap::format::chunk::encode(raw, &mut ours).len() as u32 != c.stored_len
    });
    assert!(differs, "level 3 and level 19 encoded every chunk alike");
    let keys = repo.resolve(&Selector::All).unwrap();
    let v = verify::verify(&repo, &keys, Level::Full, &Silent).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    let target = dir.path().join("restored");
    restore_to(&repo, Selector::Latest, &target, None).unwrap();
    assert_eq!(std::fs::read(target.join("table.ldb")).unwrap(), data);
}
