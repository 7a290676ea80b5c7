//! Promises the README and FORMAT.md make that had no test (issue #21):
//! each test names the promise it holds the code to.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::format::manifest::EntryKind;
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::sign::{self, Signed, Signer};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{LocalStore, MemoryStore, Store};
use blocksnap::{Hash, Repository};
use common::NODE_IP;

fn local(dir: &Path) -> (Arc<LocalStore>, Repository) {
    let path = dir.join("repo");
    fs::create_dir_all(&path).unwrap();
    let store = Arc::new(LocalStore::open(&path));
    let repo = Repository::init(store.clone(), DEFAULT_PARAMS, 1).unwrap();
    (store, repo)
}

fn snap(repo: &Repository, source: &Path, height: u64) -> SnapshotKey {
    let opts = SnapshotOptions {
        source: source.to_path_buf(),
        height,
        ..Default::default()
    };
    snapshot::snapshot(repo, &opts, &Silent).unwrap().key
}

fn opts(target: &Path, force: bool) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        ip: Some(NODE_IP.to_string()),
        force,
        ..Default::default()
    }
}

fn restore(repo: &Repository, key: &SnapshotKey, o: &RestoreOptions) -> blocksnap::Result<()> {
    let plan = restore::plan(repo, key, o)?;
    restore::restore(repo, &plan, o, &Silent).map(|_| ())
}

/// Inode, link count, ctime, mtime and mode of every file under `root`.
fn inodes(root: &Path) -> BTreeMap<String, (u64, u64, i64, i64, u32)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel.starts_with(".blocksnap-") {
            continue;
        }
        let m = fs::symlink_metadata(e.path()).unwrap();
        out.insert(
            rel,
            (
                m.ino(),
                m.nlink(),
                m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                m.mode(),
            ),
        );
    }
    out
}

/// FORMAT.md §10 "Restore", step 5: a whole file is kept by a hard link only
/// when nobody else can change it — one link, this user's, no write bit
/// for group or others. A file with a second link, another owner's file,
/// and a group-writable one are copied, never linked; a plain one is.
#[test]
fn seeded_restore_links_only_files_nobody_else_can_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, repo) = local(tmp.path());
    let source = common::node(tmp.path(), 8);
    // A group-writable file the node keeps unchanged (the mode is restored
    // as it is: only world-write is dropped).
    let gw = source.join("extra/group-writable");
    fs::write(&gw, vec![7u8; 100_000]).unwrap();
    fs::set_permissions(&gw, fs::Permissions::from_mode(0o664)).unwrap();
    for i in 0..3 {
        fs::write(
            source.join(format!("extra/kept-{i}")),
            vec![i as u8; 200_000],
        )
        .unwrap();
    }
    let old = snap(&repo, &source, 1);
    common::advance(&source, 300);
    let new = snap(&repo, &source, 2);
    let target = tmp.path().join("target");
    restore(&repo, &old, &opts(&target, false)).unwrap();
    // Files the newer snapshot has unchanged, each big enough to be worth a
    // link.
    let keeps: Vec<PathBuf> = (0..3)
        .map(|i| target.join(format!("extra/kept-{i}")))
        .collect();
    let (two_links, foreign, plain) = (&keeps[0], &keeps[1], &keeps[2]);
    let elsewhere = tmp.path().join("second-link");
    fs::hard_link(two_links, &elsewhere).unwrap();
    let c = std::ffi::CString::new(foreign.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 4242, 4242) }, 0);
    let group_writable = target.join("extra/group-writable");
    let before = inodes(&target);
    let elsewhere_before = fs::metadata(&elsewhere).unwrap();
    restore(&repo, &new, &opts(&target, true)).unwrap();
    let after = inodes(&target);
    let rel = |p: &Path| {
        p.strip_prefix(&target)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for (p, why) in [
        (two_links, "has a second link"),
        (foreign, "is another user's"),
        (&group_writable, "is group-writable"),
    ] {
        let r = rel(p);
        assert_ne!(before[&r].0, after[&r].0, "{r} {why}, yet it was linked");
        assert_eq!(after[&r].1, 1, "{r}");
    }
    let r = rel(plain);
    assert_eq!(
        before[&r].0, after[&r].0,
        "{r} could have been kept by a link"
    );
    // The file outside the target was read, never changed.
    let elsewhere_after = fs::metadata(&elsewhere).unwrap();
    assert_eq!(elsewhere_after.mtime_nsec(), elsewhere_before.mtime_nsec());
    assert_eq!(elsewhere_after.mode(), elsewhere_before.mode());
    assert_eq!(
        common::describe(&target, None),
        common::describe(&source, None)
    );
}

/// README: "a restore killed at any point still leaves the old tree exactly
/// as it was (a file's metadata included)": a refused restore and a restore
/// that fails on a missing chunk leave every old file's inode, link count,
/// ctime, mtime and mode as they were.
#[test]
fn a_failed_or_refused_restore_leaves_the_old_tree_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, repo) = local(tmp.path());
    let source = common::node(tmp.path(), 8);
    let old = snap(&repo, &source, 1);
    common::advance(&source, 300);
    let new = snap(&repo, &source, 2);
    let target = tmp.path().join("target");
    restore(&repo, &old, &opts(&target, false)).unwrap();
    let before = inodes(&target);

    // Refused at plan time (too large for --max-size).
    let refused = RestoreOptions {
        max_bytes: Some(1000),
        ..opts(&target, true)
    };
    assert!(restore(&repo, &new, &refused).is_err());
    assert_eq!(
        inodes(&target),
        before,
        "a refused restore touched the old tree"
    );

    // Fails while writing: a chunk only the newer snapshot has is gone.
    let old_chunks: std::collections::HashSet<Hash> = repo
        .load_manifest(&old)
        .unwrap()
        .files()
        .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id))
        .collect();
    let m = repo.load_manifest(&new).unwrap();
    let only_new = m
        .files()
        .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id))
        .find(|id| !old_chunks.contains(id))
        .expect("the newer snapshot has a chunk of its own");
    store.delete(&layout::chunk_key(&only_new)).unwrap();
    let err = restore(&repo, &new, &opts(&target, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&only_new.to_string()), "{err}");
    assert_eq!(
        inodes(&target),
        before,
        "a failed restore touched the old tree"
    );
}

/// README, copy: "every chunk checked against its id before it is written
/// (a damaged source is not spread)".
#[test]
fn copy_refuses_to_spread_a_damaged_source_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let src_store = Arc::new(MemoryStore::new());
    let src = Repository::init(src_store.clone(), DEFAULT_PARAMS, 1).unwrap();
    let source = common::node(tmp.path(), 2);
    let key = snap(&src, &source, 1);
    let m = src.load_manifest(&key).unwrap();
    let victim = m.files().next().unwrap().3[0].id;
    src_store.tamper(&layout::chunk_key(&victim), |b| {
        let n = b.len() - 1;
        b[n] ^= 0x40;
    });
    let dst_store = Arc::new(MemoryStore::new());
    let dst = Repository::init(dst_store.clone(), DEFAULT_PARAMS, 1).unwrap();
    let plan = blocksnap::copy::plan(&src, &dst, &[key]).unwrap();
    let err = blocksnap::copy::execute(&src, &dst, &plan, &Default::default(), &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&layout::chunk_key(&victim)), "{err}");
    assert_eq!(dst_store.size(&layout::chunk_key(&victim)).unwrap(), None);
    assert!(
        dst.snapshots().unwrap().is_empty(),
        "a snapshot was committed"
    );
}

/// FORMAT.md §11: "snapshot --sign writes the signature before the manifest
/// is committed, so a signed writer's snapshot is never visible unsigned".
#[test]
fn a_signature_is_stored_before_its_manifest_is_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let inner = Arc::new(MemoryStore::new());
    Repository::init(inner.clone(), DEFAULT_PARAMS, 1).unwrap();
    let key_file = tmp.path().join("k");
    sign::generate(&key_file, None).unwrap();
    let signer = Arc::new(Signer::load(&key_file).unwrap());
    // Held at the manifest's own PUT: is its signature there already?
    let (gate, held) = common::gated::gate("put", |k| k.starts_with("snapshots/"));
    let repo = Repository::open(Arc::new(common::gated::Gated {
        inner: inner.clone(),
        gates: vec![gate],
    }))
    .unwrap();
    let source = common::node(tmp.path(), 2);
    let kid = signer.key_id();
    let writer = std::thread::spawn(move || {
        let opts = SnapshotOptions {
            source,
            height: 1,
            signer: Some(signer),
            ..Default::default()
        };
        snapshot::snapshot(&repo, &opts, &Silent).unwrap().key
    });
    let at = held.wait();
    let key = SnapshotKey::parse(at.trim_start_matches("put ")).unwrap();
    let sig = sign::signature_key(&key.id, kid, Signed::Manifest);
    assert!(
        inner.size(&sig).unwrap().is_some(),
        "the manifest is being committed before its signature exists"
    );
    held.go();
    assert_eq!(writer.join().unwrap(), key);
}

fn plant(repo: &Repository, entries: Vec<(&str, EntryKind)>) -> SnapshotKey {
    common::plant_manifest(repo, entries)
}

/// FORMAT.md §8: no top-level name may start with `.blocksnap-`, reserved
/// for restore's working entries (a staging directory, the publish
/// journal, the old tree): a hostile manifest using one is refused at plan
/// time, naming it, and nothing is written.
#[test]
fn a_hostile_manifest_using_the_reserved_names_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, repo) = local(tmp.path());
    for name in [
        ".blocksnap-publish.journal",
        ".blocksnap-restore-0000-noip",
        ".blocksnap-old-x",
        ".blocksnap-stage",
    ] {
        let key = plant(&repo, vec![(name, EntryKind::Dir)]);
        let target = tmp.path().join("t").join(&name[1..]);
        let err = restore(&repo, &key, &opts(&target, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains("reserved"), "{err}");
        assert!(!target.exists(), "{name}: something was written");
    }
}

/// README: big nodes keep `.storage` on a second disk (`.storage ->
/// /mnt/disk2/storage`). `restore --force` onto such a node replaces the
/// link with the snapshot's `.storage` and leaves the other disk's data as
/// it was (the link, an entry of the target, is moved aside like any
/// other: a restore never writes through it).
#[test]
fn restore_force_onto_a_storage_that_is_a_link_to_another_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, repo) = local(tmp.path());
    let source = common::node(tmp.path(), 4);
    let key = snap(&repo, &source, 1);
    let target = tmp.path().join("restored");
    let disk2 = tmp.path().join("disk2/storage");
    fs::create_dir_all(&disk2).unwrap();
    fs::write(disk2.join("old-table.sst"), b"the other disk's").unwrap();
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&disk2, target.join(".storage")).unwrap();
    let before = common::describe(&disk2, None);
    restore(&repo, &key, &opts(&target, true)).unwrap();
    assert_eq!(
        common::describe(&disk2, None),
        before,
        "written through the link"
    );
    let m = fs::symlink_metadata(target.join(".storage")).unwrap();
    assert!(
        m.is_dir(),
        "the snapshot's .storage is a directory in the target"
    );
    let mut want = common::describe(&source, None);
    want.retain(|k, _| !k.starts_with("extra"));
    let mut got = common::describe(&target, None);
    got.retain(|k, _| !k.starts_with("extra"));
    assert_eq!(got, want);
}
