//! Seeded restore (issue #12): a restore over an older state of the node, or
//! with `--reuse-from` directories, downloads only what no local file holds,
//! keeps whole files that already match, trusts nothing it reads locally, and
//! still produces exactly the snapshot.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::layout::SnapshotKey;
use blocksnap::format::manifest::EntryKind;
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions, RestoreReport};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{CountingStore, LocalStore};
use blocksnap::Repository;
use common::{Node, NODE_IP};

struct Lab {
    tmp: tempfile::TempDir,
    counting: Arc<CountingStore<Arc<LocalStore>>>,
    repo: Repository,
    /// The snapshot the node's older state comes from, and the newer one.
    old: SnapshotKey,
    new: SnapshotKey,
    /// The newer snapshot's tree, as a restore for NODE_IP must reproduce it.
    want: BTreeMap<String, Node>,
}

/// A node snapshotted at height 1, advanced `blocks`, snapshotted at 2.
fn lab(blocks: u64) -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let source = common::node(tmp.path(), 24);
    let path = tmp.path().join("repo");
    fs::create_dir_all(&path).unwrap();
    let local = Arc::new(LocalStore::open(&path));
    Repository::init(local.clone(), DEFAULT_PARAMS, 3).unwrap();
    let counting = Arc::new(CountingStore::new(local));
    let repo = Repository::open(counting.clone()).unwrap();
    let snap = |height| {
        let opts = SnapshotOptions {
            source: source.clone(),
            height,
            ..Default::default()
        };
        snapshot::snapshot(&repo, &opts, &Silent).unwrap().key
    };
    let old = snap(1);
    common::advance(&source, blocks);
    let new = snap(2);
    let want = common::describe(&source, None);
    Lab {
        tmp,
        counting,
        repo,
        old,
        new,
        want,
    }
}

fn opts(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        ip: Some(NODE_IP.to_string()),
        ..Default::default()
    }
}

fn forced(target: &Path) -> RestoreOptions {
    RestoreOptions {
        force: true,
        ..opts(target)
    }
}

fn restore(lab: &Lab, key: &SnapshotKey, opts: &RestoreOptions) -> RestoreReport {
    let plan = restore::plan(&lab.repo, key, opts).unwrap();
    restore::restore(&lab.repo, &plan, opts, &Silent).unwrap()
}

/// The node's older state, as a plain restore of the first snapshot.
fn older_state(lab: &Lab, name: &str) -> PathBuf {
    let target = lab.tmp.path().join("restores").join(name);
    restore(lab, &lab.old, &opts(&target));
    target
}

/// Bytes of the newer snapshot's files.
fn total(lab: &Lab) -> u64 {
    let m = lab.repo.load_manifest(&lab.new).unwrap();
    m.files().map(|(_, size, _, _)| size).sum()
}

/// Bytes of the newer snapshot's files whose content the older one lacks
/// at the same path, and their stored (compressed) chunk bytes.
fn differing(lab: &Lab) -> (u64, u64) {
    let old = lab.repo.load_manifest(&lab.old).unwrap();
    let new = lab.repo.load_manifest(&lab.new).unwrap();
    let before: BTreeMap<&str, _> = old
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::File { hash, .. } => Some((e.path.as_str(), *hash)),
            _ => None,
        })
        .collect();
    let mut bytes = 0;
    let mut stored = 0;
    for e in &new.entries {
        if let EntryKind::File { hash, size, chunks } = &e.kind {
            if before.get(e.path.as_str()) != Some(hash) {
                bytes += size;
                stored += chunks.iter().map(|c| u64::from(c.stored_len)).sum::<u64>();
            }
        }
    }
    (bytes, stored)
}

#[test]
fn a_restore_over_an_older_state_downloads_only_what_differs_and_keeps_the_rest() {
    let lab = lab(1000);
    let target = older_state(&lab, "node");
    let (differ, differ_stored) = differing(&lab);
    let total = total(&lab);
    assert!(differ > 0 && differ < total, "{differ} of {total}");

    // The dry run says where the bytes will come from, and writes nothing.
    let before = common::describe(&target, None);
    let plan = restore::plan(&lab.repo, &lab.new, &forced(&target)).unwrap();
    assert!(plan.reuse.files_kept > 0);
    assert!(plan.reuse.bytes_to_download <= differ);
    assert_eq!(common::describe(&target, None), before);

    let requests = lab.counting.counts();
    let r = restore(&lab, &lab.new, &forced(&target));
    assert_eq!(common::describe(&target, None), lab.want);
    assert!(r.files_kept > 0 && r.bytes_kept >= total - differ, "{r:?}");
    assert!(
        r.bytes_downloaded <= differ && r.stored_bytes_downloaded * 10 <= differ_stored * 11,
        "downloaded {} ({} stored) where {differ} ({differ_stored} stored) differ",
        r.bytes_downloaded,
        r.stored_bytes_downloaded
    );
    assert_eq!(r.bytes_kept + r.bytes_copied + r.bytes_downloaded, total);
    assert_eq!(r.seeds.unreadable, 0);
    // One GET per chunk downloaded (and the manifest's), nothing else read.
    let gets = lab.counting.counts().since(Some(requests)).get;
    assert!(
        gets <= r.chunks_fetched + 2,
        "{gets} GETs for {} chunks",
        r.chunks_fetched
    );
    // Kept files are the very inodes the older state had, no copy; and
    // no link to the old tree survives it.
    for e in walkdir::WalkDir::new(&target) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            assert_eq!(e.metadata().unwrap().nlink(), 1, "{}", e.path().display());
        }
    }
    assert!(common::published(&target)
        .iter()
        .all(|n| !n.starts_with(".blocksnap")));

    // With --no-reuse everything is downloaded again.
    let again = older_state(&lab, "node2");
    let r = restore(
        &lab,
        &lab.new,
        &RestoreOptions {
            no_reuse: true,
            ..forced(&again)
        },
    );
    assert_eq!(r.bytes_downloaded, total);
    assert_eq!(common::describe(&again, None), lab.want);
}

#[test]
fn a_flipped_byte_in_a_kept_looking_file_is_found_and_replaced() {
    let lab = lab(300);
    let target = older_state(&lab, "node");
    // Damage the largest file that the newer snapshot has unchanged.
    let old = lab.repo.load_manifest(&lab.old).unwrap();
    let new = lab.repo.load_manifest(&lab.new).unwrap();
    let unchanged = new
        .files()
        .filter(|(e, _, hash, _)| {
            old.files()
                .any(|(o, _, h, _)| o.path == e.path && h == *hash)
        })
        .map(|(e, size, _, _)| (size, &e.path))
        .max()
        .unwrap();
    let intact = restore::plan(&lab.repo, &lab.new, &forced(&target)).unwrap();
    let path = target.join(unchanged.1.replace("CHANGEIP", &NODE_IP.to_string()));
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::write(&path, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let r = restore(&lab, &lab.new, &forced(&target));
    assert_eq!(common::describe(&target, None), lab.want);
    // That file was not kept, and the chunk that holds the flipped byte
    // was downloaded on top of what differs.
    assert_eq!(r.files_kept + 1, intact.reuse.files_kept);
    assert!(
        r.bytes_downloaded > intact.reuse.bytes_to_download,
        "{r:?} {:?}",
        intact.reuse
    );
}

#[test]
fn an_unrelated_seed_is_read_and_nothing_of_it_is_used() {
    let lab = lab(10);
    let unrelated = lab.tmp.path().join("unrelated");
    fs::create_dir_all(unrelated.join("sub")).unwrap();
    for i in 0..4u8 {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> (i + 3)) as u8)
            .collect();
        fs::write(unrelated.join(format!("sub/f{i}")), data).unwrap();
    }
    let target = lab.tmp.path().join("fresh");
    let r = restore(
        &lab,
        &lab.new,
        &RestoreOptions {
            reuse_from: vec![unrelated.clone()],
            ..opts(&target)
        },
    );
    assert_eq!(common::describe(&target, None), lab.want);
    assert_eq!(r.seeds.files_read, 4);
    assert_eq!(r.bytes_kept + r.bytes_copied, 0);
    let total = total(&lab);
    assert_eq!(r.bytes_downloaded, total);
}

#[test]
fn reuse_from_another_copy_copies_and_never_links_or_changes_it() {
    let lab = lab(200);
    let copy = older_state(&lab, "copy");
    let before = common::describe(&copy, None);
    let target = lab.tmp.path().join("fresh");
    let r = restore(
        &lab,
        &lab.new,
        &RestoreOptions {
            reuse_from: vec![copy.clone()],
            ..opts(&target)
        },
    );
    assert_eq!(common::describe(&target, None), lab.want);
    assert_eq!(r.files_kept, 0, "a --reuse-from file was linked");
    assert!(r.bytes_copied > r.bytes_downloaded, "{r:?}");
    assert_eq!(common::describe(&copy, None), before);
    for e in walkdir::WalkDir::new(&copy) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            assert_eq!(e.metadata().unwrap().nlink(), 1);
        }
    }
}

#[test]
fn seeds_that_change_after_the_plan_or_lead_elsewhere_cannot_corrupt_the_result() {
    let lab = lab(200);
    let target = older_state(&lab, "node");
    let outside = lab.tmp.path().join("restores/outside");
    let copy = older_state(&lab, "outside");
    assert_eq!(copy, outside);
    let seed = lab.tmp.path().join("seed");
    fs::create_dir_all(&seed).unwrap();
    // A symlink to a directory full of the right bytes, and a fifo: neither
    // is followed nor opened.
    std::os::unix::fs::symlink(&outside, seed.join("elsewhere")).unwrap();
    let fifo = seed.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let o = RestoreOptions {
        reuse_from: vec![seed.clone()],
        ..forced(&target)
    };
    let plan = restore::plan(&lab.repo, &lab.new, &o).unwrap();
    let indexed = plan.seeds.as_ref().unwrap().stats;
    assert!(indexed.files_read > 10, "{indexed:?}");

    // After the plan, every file of the older state changes (same size,
    // other bytes, same mtime): whatever was indexed is now wrong.
    for e in walkdir::WalkDir::new(&target) {
        let e = e.unwrap();
        if e.file_type().is_file() && e.metadata().unwrap().len() > 0 {
            let mode = e.metadata().unwrap().permissions();
            fs::set_permissions(e.path(), fs::Permissions::from_mode(0o600)).unwrap();
            let mut bytes = fs::read(e.path()).unwrap();
            for b in bytes.iter_mut().step_by(4096) {
                *b = b.wrapping_add(1);
            }
            fs::write(e.path(), bytes).unwrap();
            fs::set_permissions(e.path(), mode).unwrap();
        }
    }
    let r = restore::restore(&lab.repo, &plan, &o, &Silent).unwrap();
    assert_eq!(common::describe(&target, None), lab.want);
    assert_eq!(r.bytes_kept + r.bytes_copied, 0, "{r:?}");
    assert_eq!(indexed.files_read, r.seeds.files_read);
}

#[test]
fn kept_old_entries_stay_as_they_were() {
    let lab = lab(200);
    let target = older_state(&lab, "node");
    let before = common::describe(&target, None);
    let r = restore(
        &lab,
        &lab.new,
        &RestoreOptions {
            keep_old: true,
            ..forced(&target)
        },
    );
    assert_eq!(r.files_kept, 0, "kept entries would share inodes");
    assert!(r.bytes_copied > 0);
    let old = r.old_entries.clone().unwrap();
    assert_eq!(common::describe(&old, None), before);
    let mut now = common::describe(&target, None);
    now.retain(|k, _| !k.starts_with(".blocksnap-old-"));
    assert_eq!(now, lab.want);
}

/// A node whose data directory is a filesystem of its own (a tmpfs here,
/// where the test may mount): staging happens inside it, so kept files are
/// links on the same filesystem and nothing is written outside it.
#[test]
fn a_target_that_is_a_mount_point_is_restored_in_place() {
    let lab = lab(200);
    let mount = lab.tmp.path().join("restores/mounted");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m", "blocksnap-test"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("no mount permission: the mount-point target is not exercised here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    restore(&lab, &lab.old, &opts(&mount));
    let r = restore(&lab, &lab.new, &forced(&mount));
    assert_eq!(common::describe(&mount, None), lab.want);
    assert!(r.files_kept > 0, "{r:?}");
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    assert_ne!(dev(&mount), dev(lab.tmp.path()));
    assert!(fs::read_dir(lab.tmp.path().join("restores"))
        .unwrap()
        .all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".blocksnap")));
}

#[test]
fn a_target_a_running_node_holds_open_is_refused_unless_allowed() {
    let lab = lab(10);
    let target = older_state(&lab, "node");
    let lock = fs::read_dir(target.join(".storage"))
        .unwrap()
        .map(|e| e.unwrap().path().join("LOCK"))
        .find(|p| p.is_file())
        .unwrap();
    let mut node = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while blocksnap::live::probe(&lock).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "lock never taken");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = common::describe(&target, None);
    let err = restore::plan(&lab.repo, &lab.new, &forced(&target))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--allow-live") && err.contains(".storage"),
        "{err}"
    );
    assert_eq!(common::describe(&target, None), before);
    let allowed = RestoreOptions {
        allow_live: true,
        ..forced(&target)
    };
    restore(&lab, &lab.new, &allowed);
    node.kill().unwrap();
    node.wait().unwrap();
    assert_eq!(common::describe(&target, None), lab.want);
}
