//! Damaged and hostile repositories: each kind of damage is reported by
//! verify with the file it hurts, and restore fails without leaving a
//! complete-looking tree.

mod common;

use std::path::Path;
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::format::manifest::{Entry, EntryKind, Manifest, Stats};
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{LocalStore, Store};
use blocksnap::verify::{self, Level, ProblemKind, VerifyReport};
use blocksnap::{Hash, Repository, Selector};

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Arc<LocalStore>,
    repo: Repository,
    key: SnapshotKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), 3);
    let path = dir.path().join("repo");
    std::fs::create_dir_all(&path).unwrap();
    let store = Arc::new(LocalStore::open(&path));
    let repo = Repository::init(store.clone(), DEFAULT_PARAMS, 3).unwrap();
    let opts = SnapshotOptions {
        source,
        height: 7,
        ..Default::default()
    };
    let key = snapshot::snapshot(&repo, &opts, &Silent).unwrap().key;
    Fixture {
        root: dir.path().to_path_buf(),
        _dir: dir,
        store,
        repo,
        key,
    }
}

impl Fixture {
    /// The largest file's first chunk and the file's path.
    fn victim(&self) -> (String, String) {
        let m = self.repo.load_manifest(&self.key).unwrap();
        let (entry, _, _, chunks) = m.files().max_by_key(|f| f.1).unwrap();
        (entry.path.clone(), layout::chunk_key(&chunks[0].id))
    }

    fn object(&self, key: &str) -> std::path::PathBuf {
        self.store.root().join(key)
    }

    fn verify(&self, level: Level) -> VerifyReport {
        verify::verify(&self.repo, &[self.key], level, &Silent).unwrap()
    }

    /// Restore must fail and leave no target.
    fn restore_fails(&self) -> String {
        let target = self.root.join("restored");
        let opts = RestoreOptions {
            target: target.clone(),
            ip: Some("10.1.1.1".into()),
            ..Default::default()
        };
        let err = restore::plan(&self.repo, &self.key, &opts)
            .and_then(|plan| restore::restore(&self.repo, &plan, &opts, &Silent))
            .unwrap_err();
        assert!(
            common::published(&target).is_empty(),
            "failed restore published entries in {}",
            target.display()
        );
        err.to_string()
    }
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn only_problem(r: &VerifyReport) -> &verify::Problem {
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    &r.problems[0]
}

#[test]
fn flipped_byte_in_a_chunk_is_found_by_full_verify_and_stops_restore() {
    let f = fixture();
    let (path, chunk) = f.victim();
    rewrite(&f.object(&chunk), |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
    });
    assert!(
        f.verify(Level::Quick).ok(),
        "a flipped byte keeps the size; quick cannot see it"
    );
    let full = f.verify(Level::Full);
    let p = only_problem(&full);
    assert_eq!(p.kind, ProblemKind::Corrupt);
    assert_eq!(p.path.as_deref(), Some(path.as_str()));
    assert_eq!(p.chunk.as_deref(), Some(&chunk["chunks/xx/".len()..]));
    assert!(p.to_string().contains(&path), "{p}");
    let err = f.restore_fails();
    assert!(
        err.contains(&path.replace("CHANGEIP", "10.1.1.1")) && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn truncated_chunk_is_found_by_quick_verify() {
    let f = fixture();
    let (path, chunk) = f.victim();
    rewrite(&f.object(&chunk), |b| b.truncate(b.len() - 100));
    let quick = f.verify(Level::Quick);
    let p = only_problem(&quick);
    assert_eq!(p.kind, ProblemKind::Truncated);
    assert_eq!(p.path.as_deref(), Some(path.as_str()));
    let err = f.restore_fails();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn missing_chunk_is_found_by_quick_verify() {
    let f = fixture();
    let (path, chunk) = f.victim();
    std::fs::remove_file(f.object(&chunk)).unwrap();
    let p = only_problem(&f.verify(Level::Quick)).clone();
    assert_eq!(p.kind, ProblemKind::Missing);
    assert_eq!(p.path.as_deref(), Some(path.as_str()));
    assert!(p.to_string().starts_with("missing: "), "{p}");
    let full = f.verify(Level::Full);
    assert_eq!(
        only_problem(&full).kind,
        ProblemKind::Missing,
        "full reports the chunk once"
    );
    let err = f.restore_fails();
    assert!(err.contains("missing object"), "{err}");
}

#[test]
fn truncated_and_corrupt_manifests_are_reported() {
    for (damage, kind) in [
        (
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)) as Box<dyn Fn(&mut Vec<u8>)>,
            ProblemKind::Truncated,
        ),
        (
            Box::new(|b: &mut Vec<u8>| b[40] ^= 0xff),
            ProblemKind::Corrupt,
        ),
        (
            Box::new(|b: &mut Vec<u8>| b.clear()),
            ProblemKind::Truncated,
        ),
    ] {
        let f = fixture();
        rewrite(&f.object(&f.key.key()), damage);
        let r = f.verify(Level::Quick);
        let p = only_problem(&r);
        assert_eq!(p.kind, kind, "{p}");
        assert_eq!(p.snapshot.as_deref(), Some(f.key.key().as_str()));
        let err = f.restore_fails();
        assert!(err.contains(&f.key.key()), "{err}");
    }
}

#[test]
fn renamed_manifest_is_reported_as_a_stray() {
    let f = fixture();
    let renamed = f.object("snapshots/7-renamed");
    std::fs::rename(f.object(&f.key.key()), &renamed).unwrap();
    assert!(f.repo.snapshots().unwrap().is_empty());
    let r = verify::verify(&f.repo, &[], Level::Quick, &Silent).unwrap();
    let p = only_problem(&r);
    assert_eq!(p.kind, ProblemKind::Corrupt);
    assert_eq!(p.snapshot.as_deref(), Some("snapshots/7-renamed"));
}

#[test]
fn missing_manifest_and_missing_repo_are_clear() {
    let f = fixture();
    std::fs::remove_file(f.object(&f.key.key())).unwrap();
    assert!(matches!(
        f.repo.resolve(&Selector::Latest),
        Err(blocksnap::Error::NoSnapshot { .. })
    ));
    let r = verify::verify(&f.repo, &[f.key], Level::Quick, &Silent).unwrap();
    assert_eq!(only_problem(&r).kind, ProblemKind::Missing);
    let nowhere = Repository::open(Arc::new(LocalStore::open(f.root.join("nowhere"))))
        .err()
        .unwrap();
    assert!(
        nowhere.to_string().contains("no repository at"),
        "{nowhere}"
    );
}

/// Commits a manifest exactly as given, bypassing the writer's checks, as a
/// hostile repository would.
fn plant(f: &Fixture, entries: Vec<Entry>) -> SnapshotKey {
    let files = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count() as u64;
    let m = Manifest {
        height: 99,
        created_unix_ns: 1,
        source: "hostile".into(),
        host: "hostile-host".into(),
        block: None,
        tags: vec![],
        parent: None,
        chunker: DEFAULT_PARAMS,
        zstd_level: 3,
        warnings: vec![],
        stats: Stats {
            files,
            ..Default::default()
        },
        entries,
    };
    let bytes = m.encode();
    let key = SnapshotKey {
        height: 99,
        created_unix_ns: 1,
        id: Hash::of(&bytes),
    };
    assert!(f.store.put_if_absent(&key.key(), &bytes).unwrap());
    key
}

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: path.into(),
        mode: 0o644,
        mtime_ns: 0,
        kind,
    }
}

fn empty_file() -> EntryKind {
    EntryKind::File {
        size: 0,
        hash: Hash::of(b""),
        chunks: vec![],
    }
}

#[test]
fn hostile_manifests_are_refused_before_writing() {
    let f = fixture();
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        ("`..`", vec![entry("../escape", empty_file())]),
        (
            "absolute",
            vec![entry("/tmp/blocksnap-escape", empty_file())],
        ),
        (
            "symlink",
            vec![entry(
                "link",
                EntryKind::Symlink {
                    target: "../../outside".into(),
                },
            )],
        ),
        (
            "symlink",
            vec![entry(
                "abs",
                EntryKind::Symlink {
                    target: "/etc".into(),
                },
            )],
        ),
        // A file below a symlink would be written through it.
        (
            "parent",
            vec![
                entry("d", EntryKind::Symlink { target: "x".into() }),
                entry("d/f", empty_file()),
            ],
        ),
        (
            "order",
            vec![entry("b", empty_file()), entry("a", empty_file())],
        ),
    ];
    for (what, entries) in cases {
        let key = plant(&f, entries);
        let target = f.root.join("hostile-target");
        let opts = RestoreOptions {
            target: target.clone(),
            ..Default::default()
        };
        let err = restore::plan(&f.repo, &key, &opts)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = err.to_string();
        assert!(msg.contains(&key.key()), "{what}: {msg}");
        assert!(!target.exists());
        assert!(!Path::new("/tmp/blocksnap-escape").exists());
        let r = verify::verify(&f.repo, &[key], Level::Quick, &Silent).unwrap();
        assert_eq!(only_problem(&r).kind, ProblemKind::Corrupt, "{what}");
        std::fs::remove_file(f.object(&key.key())).unwrap();
    }
}
