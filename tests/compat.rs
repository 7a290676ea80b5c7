//! The compatibility promise, tested: a repository written by format
//! version 1 and checked in (`format-spec/fixtures/repo-v1/`) must be read,
//! verified and restored byte-identically by this and every later build.
//!
//! The fixture is written once. Regenerating it (BLOCKSNAP_REGEN_FIXTURE=1)
//! is only right together with a format version bump and a migration path:
//! see format-spec/FORMAT.md, "Compatibility".

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::LocalStore;
use blocksnap::verify::{self, Level};
use blocksnap::{Repository, Selector};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/fixtures")
}

fn pseudo_random(label: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(label.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The tree the fixture repository holds, as a node at 10.1.2.3 had it.
fn write_tree(root: &Path) {
    let block_db = root.join(".storage/db_10.1.2.3:7100_icon_dex");
    let state = root.join(".score_data/db/icon_dex");
    fs::create_dir_all(&block_db).unwrap();
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(root.join("extra/empty-dir")).unwrap();
    fs::write(state.join("CURRENT"), b"MANIFEST-000004\n").unwrap();
    fs::write(state.join("LOCK"), b"").unwrap();
    fs::write(
        state.join("000005.ldb"),
        pseudo_random("fixture table", 600_000),
    )
    .unwrap();
    fs::write(
        block_db.join("000007.log"),
        b"block 42 0xabcdef 7100 ".repeat(6000),
    )
    .unwrap();
    fs::write(root.join("extra/readonly"), b"r\n").unwrap();
    fs::set_permissions(
        root.join("extra/readonly"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::os::unix::fs::symlink("../.storage", root.join("extra/link")).unwrap();
}

/// path, kind, mode, mtime, BLAKE3 — everything a restore must reproduce.
fn describe(root: &Path) -> String {
    let mut out = String::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let what = if m.is_dir() {
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("link {}", fs::read_link(e.path()).unwrap().display())
        } else {
            format!(
                "file {} {}",
                m.len(),
                blake3::hash(&fs::read(e.path()).unwrap())
            )
        };
        let mtime = if m.file_type().is_symlink() {
            0
        } else {
            m.mtime()
        };
        out.push_str(&format!(
            "{rel} {:o} {mtime} {what}\n",
            m.permissions().mode() & 0o7777
        ));
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn version_1_repository_reads_verifies_and_restores() {
    let fixture = fixtures().join("repo-v1");
    if std::env::var_os("BLOCKSNAP_REGEN_FIXTURE").is_some() {
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("loopchain");
        write_tree(&tree);
        let _ = fs::remove_dir_all(&fixture);
        fs::create_dir_all(&fixture).unwrap();
        let repo = Repository::init(
            Arc::new(LocalStore::open(&fixture)),
            blocksnap::chunking::DEFAULT_PARAMS,
            1,
        )
        .unwrap();
        let opts = SnapshotOptions {
            source: tree.clone(),
            height: 42,
            tags: vec!["fixture".into()],
            ..Default::default()
        };
        snapshot::snapshot(&repo, &opts, &Silent).unwrap();
        let expected = describe(&tree).replace("10.1.2.3", "10.9.8.7");
        fs::write(fixtures().join("repo-v1.tree"), expected).unwrap();
        let _ = fs::remove_dir_all(fixture.join("tmp"));
    }

    // Work on a copy: nothing may depend on writing to the fixture.
    let work = tempfile::tempdir().unwrap();
    let repo_dir = work.path().join("repo");
    copy_dir(&fixture, &repo_dir);
    let repo = Repository::open(Arc::new(LocalStore::open(&repo_dir))).unwrap();
    let keys = repo.resolve(&Selector::All).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].height, 42);
    let report = verify::verify(&repo, &keys, Level::Full, &Silent).unwrap();
    assert!(report.ok(), "{:?}", report.problems);

    let target = work.path().join("restored");
    let opts = RestoreOptions {
        target: target.clone(),
        ip: Some("10.9.8.7".into()),
        ..Default::default()
    };
    let plan = restore::plan(&repo, &keys[0], &opts).unwrap();
    restore::restore(&repo, &plan, &opts, &Silent).unwrap();
    let expected = fs::read_to_string(fixtures().join("repo-v1.tree")).unwrap();
    assert_eq!(describe(&target), expected);
}
