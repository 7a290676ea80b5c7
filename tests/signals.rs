//! SIGINT, SIGTERM and SIGHUP during restore, verify, prune and copy
//! (issue #21): the real binary exits with 128 + the signal's number, says
//! it was interrupted, publishes nothing half-done, and the next run
//! finishes the job. Also the `demo` command, end to end, and its exit
//! code.
//!
//! A signal lands either at a random moment of a transfer slowed down with
//! `--limit-download`, or exactly between two steps: the tests' build waits
//! at a named point for it (`BLOCKSNAP_TEST_WAIT_AT`, engine/src/testhook.rs).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIGNALS: [(i32, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
];

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        s.ok(
            &["generate", "--size-mib", "3", "--ip", "10.0.0.7", "--dir"],
            &[&s.source()],
        );
        s.ok(&["init"], &[]);
        s
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn source(&self) -> PathBuf {
        self.dir.path().join("node/loopchain")
    }
    fn cmd(&self, args: &[&str], paths: &[&Path]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blocksnap"));
        c.env("BLOCKSNAP_REPO", self.repo())
            .env("BLOCKSNAP_CACHE_DIR", self.dir.path().join("cache"))
            .env_remove("RUST_BACKTRACE")
            .args(args)
            .args(paths);
        c
    }
    fn ok(&self, args: &[&str], paths: &[&Path]) -> String {
        let out = self.cmd(args, paths).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn snapshot(&self, height: u64) {
        self.ok(
            &[
                "snapshot",
                "--quiet",
                "--height",
                &height.to_string(),
                "--source",
            ],
            &[&self.source()],
        );
    }
    fn ids(&self, repo: &Path) -> Vec<String> {
        let out = self
            .cmd(&["list", "--json", "--repo"], &[repo])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Every object's name and bytes in a local repository.
fn objects(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(repo)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(repo).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Path → (inode, ctime, bytes) of a tree, skipping blocksnap's own
/// `.blocksnap-*` entries at its top.
fn tree(root: &Path) -> BTreeMap<String, (u64, i64, Vec<u8>)> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| {
            !e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .starts_with(".blocksnap-")
        })
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let bytes = if m.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            let rel = e.path().strip_prefix(root).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                (m.ino(), m.ctime() * 1_000_000_000 + m.ctime_nsec(), bytes),
            )
        })
        .collect()
}

/// The bytes alone: a restore's result against the source.
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(root)
        .into_iter()
        .map(|(k, (_, _, b))| (k, b))
        .collect()
}

/// Fails naming the paths where two trees differ (never dumping bytes).
fn assert_same<V: PartialEq>(got: &BTreeMap<String, V>, want: &BTreeMap<String, V>, what: &str) {
    let differ: Vec<&String> = got
        .keys()
        .chain(want.keys())
        .filter(|k| got.get(*k) != want.get(*k))
        .collect();
    assert!(differ.is_empty(), "{what}: these paths differ: {differ:?}");
}

/// Overwrites every file under `root` with other bytes of the same length:
/// an old tree that shares no content with the snapshot, so that a restore
/// over it downloads everything.
fn garble(root: &Path) {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let len = e.metadata().unwrap().len() as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            std::fs::write(e.path(), bytes).unwrap();
        }
    }
}

/// Waits for `ready`, sends `signal` and returns the exit code and stderr.
fn interrupt(mut child: Child, signal: i32, ready: impl Fn() -> bool) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("finished ({status}) before it could be interrupted: {err}");
        }
        assert!(Instant::now() < deadline, "never got ready for the signal");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

fn assert_interrupted(what: &str, (code, err): &(Option<i32>, String), signal: i32, name: &str) {
    assert_eq!(*code, Some(128 + signal), "{what} after {name}: {err}");
    assert!(
        err.contains(&format!("interrupted by {name}")),
        "{what} after {name} does not say so: {err}"
    );
}

/// Whether `dir` holds an entry whose name starts with `prefix`.
fn has_entry(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    })
}

/// A restore over an existing tree, interrupted while it downloads: the old
/// tree is untouched (same inodes, ctimes and bytes), no journal and no
/// replaced tree are left, and the next run restores byte for byte.
#[test]
fn a_signal_during_a_restore_leaves_the_old_tree_and_the_next_run_finishes() {
    let s = Setup::new();
    s.snapshot(10);
    let want = contents(&s.source());
    for (signal, name) in SIGNALS {
        let target = s.dir.path().join(format!("target-{name}"));
        // An old tree: an earlier restore of the same node.
        s.ok(
            &[
                "restore", "latest", "--quiet", "--ip", "10.0.0.7", "--target",
            ],
            &[&target],
        );
        garble(&target);
        let old = tree(&target);
        let child = s
            .cmd(
                &[
                    "restore",
                    "latest",
                    "--quiet",
                    "--force",
                    "--ip",
                    "10.0.0.7",
                    "--limit-download",
                    "256KiB",
                    "--target",
                ],
                &[&target],
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = target.clone();
        let result = interrupt(child, signal, move || has_entry(&t, ".blocksnap-restore-"));
        assert_interrupted("restore", &result, signal, name);
        assert_same(
            &tree(&target),
            &old,
            &format!("{name}: the old tree changed"),
        );
        assert!(!target.join(".blocksnap-publish.journal").exists());
        assert!(!has_entry(&target, ".blocksnap-old-"), "{name}");

        s.ok(
            &[
                "restore", "latest", "--quiet", "--force", "--ip", "10.0.0.7", "--target",
            ],
            &[&target],
        );
        assert_same(
            &contents(&target),
            &want,
            &format!("{name}: the re-run's tree"),
        );
        assert!(!has_entry(&target, ".blocksnap-"), "{name}: leftovers");
    }
}

/// A signal that arrives while the restore publishes (its journal written,
/// nothing renamed yet) does not stop the publish half-way: the target
/// holds the whole new tree and nothing of blocksnap's.
#[test]
fn a_signal_during_a_restores_publish_never_leaves_half_a_tree() {
    let s = Setup::new();
    s.snapshot(10);
    let want = contents(&s.source());
    for (signal, name) in SIGNALS {
        let target = s.dir.path().join(format!("target-{name}"));
        s.ok(
            &[
                "restore", "latest", "--quiet", "--ip", "10.0.0.7", "--target",
            ],
            &[&target],
        );
        // Make the old tree differ, so that half a publish would show.
        let stale = target.join(".score_data/stale-file");
        std::fs::write(&stale, b"old").unwrap();
        let ready = s.dir.path().join(format!("ready-{name}"));
        let child = s
            .cmd(
                &[
                    "restore", "latest", "--quiet", "--force", "--ip", "10.0.0.7", "--target",
                ],
                &[&target],
            )
            .env("BLOCKSNAP_TEST_WAIT_AT", "publish-journal")
            .env("BLOCKSNAP_TEST_WAIT_FILE", &ready)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (code, err) = interrupt(child, signal, || ready.exists());
        // The publish is finished; the run then reports the signal or
        // success, never an error.
        assert!(
            code == Some(0) || code == Some(128 + signal),
            "{name}: {code:?} {err}"
        );
        assert_same(
            &contents(&target),
            &want,
            &format!("{name}: not the new tree"),
        );
        assert!(!has_entry(&target, ".blocksnap-"), "{name}: leftovers");
    }
}

/// `verify --full` interrupted: exit 128 + n and not a byte of the
/// repository changed.
#[test]
fn a_signal_during_verify_stops_it_and_changes_nothing() {
    let s = Setup::new();
    s.snapshot(10);
    let before = objects(&s.repo());
    for (signal, name) in SIGNALS {
        let child = s
            .cmd(
                &[
                    "verify",
                    "all",
                    "--full",
                    "--quiet",
                    "--limit-download",
                    "128KiB",
                ],
                &[],
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let result = interrupt(child, signal, move || {
            start.elapsed() > Duration::from_millis(700)
        });
        assert_interrupted("verify", &result, signal, name);
        assert!(
            !result.1.contains("damaged") && !result.1.contains("missing"),
            "{}",
            result.1
        );
        assert_eq!(
            objects(&s.repo()),
            before,
            "{name}: verify changed the repository"
        );
    }
}

/// Chunks a prune's JSON report says it deleted.
fn deleted(json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["swept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["deleted"].as_u64().unwrap())
        .sum()
}

/// A prune interrupted between two delete batches of its sweep: exit
/// 128 + n, every live snapshot still whole, and the next prune completes
/// the round.
#[test]
fn a_signal_between_prune_batches_stops_it_and_the_next_prune_completes_the_round() {
    for (signal, name) in SIGNALS {
        let s = Setup::new();
        s.snapshot(10);
        s.ok(&["generate", "--blocks", "300", "--dir"], &[&s.source()]);
        s.snapshot(20);
        let first = s.ids(&s.repo())[0].clone();
        s.ok(&["forget", "--quiet", &first], &[]);
        let ready = s.dir.path().join("ready");
        let child = s
            .cmd(
                &["prune", "--quiet", "--instant-delete", "--lease", "2s"],
                &[],
            )
            .env("BLOCKSNAP_TEST_PRUNE_BATCH", "1")
            .env("BLOCKSNAP_TEST_WAIT_AT", "prune-batch:1")
            .env("BLOCKSNAP_TEST_WAIT_FILE", &ready)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let r = ready.clone();
        let result = interrupt(child, signal, move || r.exists());
        assert_interrupted("prune", &result, signal, name);
        s.ok(&["verify", "all", "--full", "--quiet"], &[]);
        let before = objects(&s.repo()).len();

        // The interrupted sweep's claim stands until its lease is over
        // (FORMAT.md §10, "Prune"); then the next prune takes the round over.
        std::thread::sleep(Duration::from_millis(2100));
        let out = s.ok(
            &["prune", "--json", "--instant-delete", "--lease", "2s"],
            &[],
        );
        assert!(
            deleted(&out) > 0,
            "{name}: the next prune had nothing left to delete: {out}"
        );
        assert!(objects(&s.repo()).len() < before);
        s.ok(&["verify", "all", "--full", "--quiet"], &[]);
        let out = s.ok(&["prune", "--json", "--instant-delete"], &[]);
        assert_eq!(deleted(&out), 0, "{name}: {out}");
    }
}

/// `copy` interrupted while it reads the source: exit 128 + n, the
/// destination holds no snapshot (a copy commits its manifest last), and
/// the next copy finishes and verifies.
#[test]
fn a_signal_during_copy_commits_nothing_and_the_next_copy_finishes() {
    let s = Setup::new();
    s.snapshot(10);
    let id = s.ids(&s.repo())[0].clone();
    for (signal, name) in SIGNALS {
        let dest = s.dir.path().join(format!("dest-{name}"));
        let child = s
            .cmd(
                &[
                    "copy",
                    "--quiet",
                    "--limit-download",
                    "256KiB",
                    "all",
                    "--to",
                ],
                &[&dest],
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let d = dest.join("chunks");
        let result = interrupt(child, signal, move || d.exists() && has_entry(&d, ""));
        assert_interrupted("copy", &result, signal, name);
        if dest.join("config").exists() {
            assert!(s.ids(&dest).is_empty(), "{name}: a snapshot was committed");
        }
        s.ok(&["copy", "--quiet", "all", "--to"], &[&dest]);
        assert_eq!(s.ids(&dest), std::slice::from_ref(&id));
        s.ok(&["verify", "all", "--full", "--quiet", "--repo"], &[&dest]);
    }
}

/// The README's first command: `demo` runs the main job, exits 0 and says
/// what it did; a second run in the same directory is refused without
/// touching the first run's files.
#[test]
fn the_demo_runs_the_main_job_and_exits_zero() {
    let s = Setup::new();
    let dir = s.dir.path().join("demo");
    let out = s
        .cmd(
            &[
                "demo",
                "--json",
                "--size-mib",
                "4",
                "--blocks",
                "100",
                "--dir",
            ],
            &[&dir],
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["differences"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        report["verify"]["problems"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert!(
        report["verify"]["chunks_checked"].as_u64() > Some(0),
        "{report}"
    );
    let before = objects(&dir);
    assert!(before.len() > 10);

    let out = s
        .cmd(&["demo", "--size-mib", "4", "--dir"], &[&dir])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert_eq!(
        objects(&dir),
        before,
        "a refused demo changed the first one's files"
    );
}
