//! Cheap, cold-safe snapshots: the stat cache and chunk index, live
//! database detection, changes during a read, and staged snapshots.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use blocksnap::cache::{IndexOrigin, LocalState, RebuildReason};
use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::format::layout;
use blocksnap::format::manifest::Manifest;
use blocksnap::progress::{Progress, Silent};
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions, SnapshotReport};
use blocksnap::stage::{self, StageOptions};
use blocksnap::store::{LocalStore, Store};
use blocksnap::verify::{self, Level};
use blocksnap::{Error, Repository, Selector};

struct Fixture {
    dir: tempfile::TempDir,
    source: PathBuf,
    store: Arc<LocalStore>,
    repo: Repository,
}

fn fixture(mib: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let source = common::node(dir.path(), mib);
    let path = dir.path().join("repo");
    std::fs::create_dir_all(&path).unwrap();
    let store = Arc::new(LocalStore::open(&path));
    let repo = Repository::init(store.clone(), DEFAULT_PARAMS, 1).unwrap();
    // Files written in the last 100 ms are never cached (a write in the same
    // clock tick would not change their stat); let the generator's settle.
    std::thread::sleep(Duration::from_millis(150));
    Fixture {
        dir,
        source,
        store,
        repo,
    }
}

impl Fixture {
    fn state(&self) -> LocalState {
        LocalState::open(&self.dir.path().join("cache"), &self.repo).unwrap()
    }

    fn snap(&self, height: u64, state: Option<&LocalState>, rehash: bool) -> SnapshotReport {
        let opts = SnapshotOptions {
            source: self.source.clone(),
            height,
            rehash,
            ..Default::default()
        };
        snapshot::snapshot_with_state(&self.repo, &opts, state, &Silent).unwrap()
    }

    fn manifest(&self, r: &SnapshotReport) -> Manifest {
        self.repo.load_manifest(&r.key).unwrap()
    }

    fn restore_latest(&self, name: &str) -> PathBuf {
        let target = self.dir.path().join(name).join("loopchain");
        let key = self.repo.resolve(&Selector::Latest).unwrap()[0];
        let opts = RestoreOptions {
            target: target.clone(),
            ip: Some(common::NODE_IP.to_string()),
            ..Default::default()
        };
        let plan = restore::plan(&self.repo, &key, &opts).unwrap();
        restore::restore(&self.repo, &plan, &opts, &Silent).unwrap();
        target
    }
}

/// size, mtime, ctime, inode of every regular file.
fn stats(root: &Path) -> HashMap<PathBuf, (u64, i64, i64, u64)> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.path().to_path_buf(),
                (
                    m.len(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                    m.ino(),
                ),
            )
        })
        .collect()
}

/// Entries without the creation time, which differs between snapshots.
fn same_content(a: &Manifest, b: &Manifest) {
    assert_eq!(a.entries, b.entries, "manifests list different content");
}

#[test]
fn unchanged_files_are_not_read_again_and_the_result_is_the_same() {
    let f = fixture(12);
    let state = f.state();
    let first = f.snap(1, Some(&state), false);
    assert_eq!(first.index, IndexOrigin::Rebuilt(RebuildReason::Empty));
    assert_eq!(first.files_from_cache, 0);
    assert_eq!(first.bytes_read, first.stats.logical_bytes);

    let before = stats(&f.source);
    common::advance(&f.source, 300);
    std::thread::sleep(Duration::from_millis(150));
    let after = stats(&f.source);
    let changed: u64 = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(s))
        .map(|(_, s)| s.0)
        .sum();
    assert!(changed > 0 && changed < common::du(&f.source));

    let second = f.snap(2, Some(&state), false);
    assert_eq!(second.index, IndexOrigin::Cached);
    // Exactly the files whose stat changed were read.
    assert_eq!(second.bytes_read, changed);
    assert!(second.files_from_cache > 0);

    // A --rehash snapshot of the same tree reads everything and agrees
    // entry for entry.
    let third = f.snap(3, Some(&state), true);
    assert_eq!(third.bytes_read, third.stats.logical_bytes);
    same_content(&f.manifest(&second), &f.manifest(&third));

    let restored = f.restore_latest("restored");
    assert_eq!(
        common::describe(&f.source, None),
        common::describe(&restored, None)
    );

    // A file whose content changes but whose size and mtime are put back
    // is still read again: its ctime moved.
    let victim = walkdir::WalkDir::new(&f.source)
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .unwrap()
        .into_path();
    let meta = std::fs::metadata(&victim).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let fourth = f.snap(4, Some(&state), false);
    assert_eq!(fourth.bytes_read, meta.len());
    let restored = f.restore_latest("restored-4");
    assert_eq!(
        common::describe(&f.source, None),
        common::describe(&restored, None)
    );
}

#[test]
fn a_lost_chunk_is_stored_again_when_the_index_is_stale() {
    let f = fixture(6);
    let state = f.state();
    let first = f.snap(1, Some(&state), false);
    let m = f.manifest(&first);
    let (entry, _, _, chunks) = m.files().max_by_key(|x| x.1).unwrap();
    let victim_path = entry.path.clone();
    let lost = layout::chunk_key(&chunks[0].id);

    // A prune: bump the epoch, then delete a chunk that an unchanged file
    // still needs.
    f.repo.bump_epoch(0, 0).unwrap();
    f.store.delete(&lost).unwrap();
    let second = f.snap(2, Some(&state), false);
    assert_eq!(second.index, IndexOrigin::Rebuilt(RebuildReason::Pruned));
    assert!(
        f.store.size(&lost).unwrap().is_some(),
        "lost chunk not stored again"
    );
    assert!(second.stats.new_chunks >= 1);
    assert!(second.bytes_read > 0, "{victim_path} was not read again");
    let v = verify::verify(&f.repo, &[second.key], Level::Full, &Silent).unwrap();
    assert!(v.ok(), "{:?}", v.problems);

    // A repository rolled back to an older state (the newest snapshot the
    // index knows is gone): the index is rebuilt too.
    f.store.delete(&second.key.key()).unwrap();
    f.store.delete(&lost).unwrap();
    let third = f.snap(3, Some(&state), false);
    assert_eq!(third.index, IndexOrigin::Rebuilt(RebuildReason::RolledBack));
    let v = verify::verify(&f.repo, &[third.key], Level::Quick, &Silent).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
}

#[test]
fn a_corrupt_or_missing_cache_costs_time_not_correctness() {
    let f = fixture(3);
    {
        let state = f.state();
        f.snap(1, Some(&state), false);
    }
    // Garbage over every file of the cache.
    let cache = f.dir.path().join("cache");
    for e in walkdir::WalkDir::new(&cache) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            std::fs::write(e.path(), b"not rocksdb").unwrap();
        }
    }
    let state = f.state();
    assert!(!state.warnings.is_empty(), "a broken cache was not noticed");
    let second = f.snap(2, Some(&state), false);
    assert_eq!(second.bytes_read, second.stats.logical_bytes);
    assert!(second.warnings.iter().any(|w| w.contains("rebuilt")));
    drop(state);
    std::fs::remove_dir_all(&cache).unwrap();
    let state = f.state();
    let third = f.snap(3, Some(&state), false);
    same_content(&f.manifest(&second), &f.manifest(&third));
    // Only one process can use a cache at a time; the second gets an error
    // (the command then runs without one).
    assert!(LocalState::open(&cache, &f.repo).is_err());
}

/// A process holding `lock` with `flock` (goleveldb) or `fcntl`
/// (LevelDB, RocksDB) until killed.
fn hold(lock: &Path, kind: &str) -> Child {
    let mut child = match kind {
        // -o: the lock stays with flock(1) itself, not with `sleep`, so
        // killing flock releases it.
        "flock" => Command::new("flock")
            .arg("-o")
            .arg(lock)
            .args(["sleep", "60"])
            .spawn()
            .unwrap(),
        _ => Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            ])
            .arg(lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    };
    if let Some(out) = child.stdout.as_mut() {
        use std::io::Read;
        let mut b = [0u8; 4];
        out.read_exact(&mut b).unwrap();
    }
    // flock(1) takes the lock before it runs its command.
    for _ in 0..200 {
        if blocksnap::live::probe(lock).unwrap().is_some() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{kind} lock on {} never seen", lock.display());
}

#[test]
fn a_database_held_open_is_refused_unless_allowed() {
    let f = fixture(3);
    let db = f.source.join(".storage/db_10.0.0.7:7100_icon_dex");
    let lock = db.join("LOCK");
    assert!(lock.is_file());
    for kind in ["flock", "fcntl"] {
        let mut holder = hold(&lock, kind);
        let opts = SnapshotOptions {
            source: f.source.clone(),
            height: 5,
            ..Default::default()
        };
        let err = snapshot::snapshot(&f.repo, &opts, &Silent).unwrap_err();
        assert!(matches!(err, Error::LiveDatabase { .. }), "{kind}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("db_10.0.0.7:7100_icon_dex") && msg.contains(kind),
            "{msg}"
        );
        assert!(msg.contains("--allow-live"), "{msg}");
        assert!(
            f.repo.snapshots().unwrap().is_empty(),
            "a manifest was written"
        );

        let allowed = SnapshotOptions {
            allow_live: true,
            ..opts
        };
        let r = snapshot::snapshot(&f.repo, &allowed, &Silent).unwrap();
        let m = f.repo.load_manifest(&r.key).unwrap();
        assert!(
            m.warnings.iter().any(|w| w.contains("--allow-live")),
            "{:?}",
            m.warnings
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        f.store.delete(&r.key.key()).unwrap();
    }
    // The file's presence alone means nothing.
    let opts = SnapshotOptions {
        source: f.source.clone(),
        height: 6,
        ..Default::default()
    };
    snapshot::snapshot(&f.repo, &opts, &Silent).unwrap();
}

/// Appends to every file under the source when the first file is done.
struct Saboteur {
    source: PathBuf,
    done: std::sync::atomic::AtomicBool,
}

impl Progress for Saboteur {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            for e in walkdir::WalkDir::new(&self.source) {
                let e = e.unwrap();
                if e.file_type().is_file() {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(e.path())
                        .unwrap();
                    f.write_all(b"!").unwrap();
                }
            }
        }
    }
    fn end(&self) {}
}

#[test]
fn a_file_modified_during_the_snapshot_fails_it() {
    let f = fixture(3);
    let opts = SnapshotOptions {
        source: f.source.clone(),
        height: 9,
        jobs: 1,
        ..Default::default()
    };
    let saboteur = Saboteur {
        source: f.source.clone(),
        done: Default::default(),
    };
    let err = snapshot::snapshot(&f.repo, &opts, &saboteur).unwrap_err();
    assert!(matches!(err, Error::SourceChanged { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&f.source.to_string_lossy().to_string()),
        "{err}"
    );
    assert!(
        f.repo.snapshots().unwrap().is_empty(),
        "a manifest was written"
    );
}

#[test]
fn staged_snapshot_freezes_the_source_at_stop_time() {
    let f = fixture(8);
    let state = f.state();
    let db = f.source.join(".storage/db_10.0.0.7:7100_icon_dex");
    // The "node": a process holding a database's LOCK, as goleveldb does.
    let node = hold(&db.join("LOCK"), "flock");
    let pid = node.id();
    let at_stop = common::describe(&f.source, None);
    let before_stop = stats(&f.source);

    // The start command "restarts the node", which at once appends to its
    // logs, rewrites CURRENT and adds a table file.
    let log = walkdir::WalkDir::new(&db)
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .expect("a write-ahead log")
        .into_path();
    let start = format!(
        "echo more >> '{log}' && echo MANIFEST-999999 > '{db}/CURRENT' && echo new > '{db}/999999.sst' && touch '{dir}/started'",
        log = log.display(),
        db = db.display(),
        dir = f.dir.path().display()
    );
    let opts = SnapshotOptions {
        source: f.source.clone(),
        height: 50,
        ..Default::default()
    };
    let stage_opts = StageOptions {
        lock_timeout: Duration::from_secs(20),
        ..StageOptions::new(format!("kill {pid}"), start)
    };
    let (report, staged) =
        stage::snapshot_staged(&f.repo, &opts, &stage_opts, Some(&state), &Silent).unwrap();
    let mut node = node;
    let _ = node.wait();
    assert!(f.dir.path().join("started").exists());
    assert!(staged.start_error.is_none());
    assert!(staged.files_linked > 0, "{staged:?}");
    assert!(staged.files_copied > 0, "{staged:?}");
    assert!(staged.downtime >= staged.staging);
    assert!(
        !stage::stage_root(&f.source).unwrap().exists(),
        "stage left behind"
    );
    let m = f.repo.load_manifest(&report.key).unwrap();
    assert_eq!(
        m.source,
        f.source.to_string_lossy().replace("10.0.0.7", "CHANGEIP")
    );

    let restored = f.restore_latest("restored");
    assert_eq!(at_stop, common::describe(&restored, None));
    assert_ne!(
        at_stop,
        common::describe(&f.source, None),
        "the node did not write"
    );

    // A second staged snapshot reads only what the node changed, though
    // every table file was linked again (which moves its ctime).
    std::thread::sleep(Duration::from_millis(150));
    let now = stats(&f.source);
    let changed: u64 = now
        .iter()
        .filter(|(p, s)| {
            let key = |s: &(u64, i64, i64, u64)| (s.0, s.1, s.3);
            before_stop.get(*p).map(key) != Some(key(s))
        })
        .map(|(_, s)| s.0)
        .sum();
    assert!(changed > 0);
    // This start command leaves a "daemon" running in the background with
    // the command's stdout and stderr: blocksnap must not wait for it.
    let daemon_pid = f.dir.path().join("daemon.pid");
    let stage_opts = StageOptions {
        lock_timeout: Duration::from_secs(5),
        ..StageOptions::new(
            "true",
            format!("sleep 120 & echo $! > '{}'", daemon_pid.display()),
        )
    };
    let (again, _) =
        stage::snapshot_staged(&f.repo, &opts, &stage_opts, Some(&state), &Silent).unwrap();
    let daemon = std::fs::read_to_string(&daemon_pid).unwrap();
    let daemon = daemon.trim();
    assert!(
        Path::new("/proc").join(daemon).exists(),
        "blocksnap waited for the started daemon to exit"
    );
    let _ = std::process::Command::new("kill").arg(daemon).status();
    assert_eq!(again.bytes_read, changed);
    assert!(again.files_from_cache > 10);
}

#[test]
fn stop_and_start_command_failures_are_reported() {
    let f = fixture(3);
    let opts = SnapshotOptions {
        source: f.source.clone(),
        height: 60,
        ..Default::default()
    };
    let marker = f.dir.path().join("started");
    let start = format!("touch '{}'", marker.display());

    let failing_stop = StageOptions {
        lock_timeout: Duration::from_secs(5),
        ..StageOptions::new("echo cannot stop >&2; exit 3", start.clone())
    };
    let err = stage::snapshot_staged(&f.repo, &opts, &failing_stop, None, &Silent);
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("stop command") && err.contains("cannot stop"),
        "{err}"
    );
    // A stop command that fails may have stopped part of the node: the
    // start command runs anyway.
    assert!(marker.exists(), "a failed stop left the node to itself");
    assert!(err.contains("start command was run anyway"), "{err}");
    assert!(f.repo.snapshots().unwrap().is_empty());

    let failing_start = StageOptions {
        lock_timeout: Duration::from_secs(5),
        ..StageOptions::new("true", "echo no such service >&2; exit 1")
    };
    let (report, staged) =
        stage::snapshot_staged(&f.repo, &opts, &failing_start, None, &Silent).unwrap();
    let e = staged.start_error.expect("the failed start is reported");
    assert!(
        e.contains("start command") && e.contains("no such service"),
        "{e}"
    );
    // The snapshot was still taken, and the stage removed.
    f.repo.load_manifest(&report.key).unwrap();
    assert!(!stage::stage_root(&f.source).unwrap().exists());
}

#[test]
fn a_lock_never_released_restarts_the_node_and_overlapping_includes_are_harmless() {
    let f = fixture(3);
    let db = f.source.join(".storage/db_10.0.0.7:7100_icon_dex");
    let marker = f.dir.path().join("started");
    let start = format!("touch '{}'", marker.display());

    // The stop command "succeeds" but the node keeps its lock: after the
    // timeout nothing is snapshotted, and the node is started again.
    let mut node = hold(&db.join("LOCK"), "flock");
    let opts = SnapshotOptions {
        source: f.source.clone(),
        height: 70,
        ..Default::default()
    };
    let stuck = StageOptions {
        lock_timeout: Duration::from_millis(300),
        ..StageOptions::new("true", start.clone())
    };
    let err = stage::snapshot_staged(&f.repo, &opts, &stuck, None, &Silent).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("still open") && err.contains("db_10.0.0.7:7100_icon_dex"),
        "{err}"
    );
    assert!(err.contains("the start command was run"), "{err}");
    assert!(marker.exists(), "the node was left stopped");
    assert!(f.repo.snapshots().unwrap().is_empty());
    assert!(!stage::stage_root(&f.source).unwrap().exists());
    let _ = node.kill();
    let _ = node.wait();

    // The same directory included three ways is staged once; the node's
    // own table files are untouched.
    let before = stats(&f.source);
    let tables: Vec<PathBuf> = before
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "sst" || e == "ldb"))
        .cloned()
        .collect();
    assert!(!tables.is_empty());
    let sizes = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .collect::<Vec<_>>()
    };
    let sizes_before = sizes(&tables);
    let rel_db = ".storage/db_10.0.0.7:7100_icon_dex".to_string();
    let opts = SnapshotOptions {
        source: f.source.clone(),
        height: 71,
        includes: vec![
            ".storage".into(),
            ".storage/".into(),
            rel_db,
            ".score_data".into(),
        ],
        ..Default::default()
    };
    let ok = StageOptions {
        lock_timeout: Duration::from_secs(5),
        ..StageOptions::new("true", "true")
    };
    let (report, staged) = stage::snapshot_staged(&f.repo, &opts, &ok, None, &Silent).unwrap();
    assert_eq!(
        sizes(&tables),
        sizes_before,
        "a table file of the node was changed"
    );
    assert_eq!(staged.link_fallbacks, 0, "{staged:?}");
    let restored = f.restore_latest("restored");
    for part in [".storage", ".score_data"] {
        assert_eq!(
            common::describe(&f.source.join(part), None),
            common::describe(&restored.join(part), None),
            "{part} differs"
        );
    }
    assert!(!restored.join("extra").exists(), "not included, yet staged");
    assert_eq!(report.key.height, 71);
}
