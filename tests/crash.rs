//! kill -9 of `snapshot` and `restore` at random points, and at the exact
//! steps of a restore's publish (issue #9's reliability figures): after
//! each, every committed snapshot still verifies, no half-published tree
//! looks finished, and a re-run completes (a snapshot storing only what is
//! missing).
//!
//! `BLOCKSNAP_KILLS=N` sets the kills per test (default 12, about a minute
//! in CI); `benches/faults.sh` runs more. `BLOCKSNAP_KILL_SEED` repeats a run.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blocksnap::format::manifest::Manifest;
use common::faults::Rng;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blocksnap"))
}

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(mib: u64) -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().unwrap(),
        };
        lab.ok(bin()
            .args(["generate", "--size-mib", &mib.to_string(), "--dir"])
            .arg(lab.source()));
        lab.ok(lab.cmd().args(["init", "--chunk-avg-kib", "64"]));
        lab
    }
    fn source(&self) -> PathBuf {
        self.dir.path().join("node/loopchain")
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("BLOCKSNAP_REPO", self.repo())
            .env("BLOCKSNAP_CACHE_DIR", self.dir.path().join("cache"));
        c
    }
    fn ok(&self, c: &mut Command) -> String {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn advance(&self, blocks: u64) {
        self.ok(bin()
            .args(["generate", "--blocks", &blocks.to_string(), "--dir"])
            .arg(self.source()));
    }
    fn snapshot(&self, height: u64) -> Command {
        let mut c = self.cmd();
        c.args([
            "snapshot",
            "--json",
            "--height",
            &height.to_string(),
            "--source",
        ])
        .arg(self.source());
        c
    }
    fn restore(&self, selector: &str, target: &Path) -> Command {
        let mut c = self.cmd();
        c.args([
            "restore", selector, "--force", "--ip", "10.9.8.7", "--target",
        ])
        .arg(target);
        c
    }
    fn chunks(&self) -> BTreeSet<String> {
        walkdir::WalkDir::new(self.repo().join("chunks"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
    fn verify_all(&self) {
        self.ok(self.cmd().args(["verify", "all", "--full"]));
    }
}

/// Runs `c`, kills it with SIGKILL after `after`; true when it had already
/// finished.
fn kill_after(c: &mut Command, after: Duration) -> bool {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let done = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    done
}

fn timed(c: &mut Command) -> Duration {
    let t = Instant::now();
    assert!(c.stdout(Stdio::null()).status().unwrap().success());
    t.elapsed()
}

#[test]
fn a_snapshot_killed_anywhere_leaves_the_repository_sound_and_a_rerun_stores_only_what_is_missing()
{
    let kills = env_num("BLOCKSNAP_KILLS", 12);
    let seed = env_num("BLOCKSNAP_KILL_SEED", 7);
    let lab = Lab::new(8);
    // How long an uninterrupted snapshot of fresh data takes, in a repository
    // of its own.
    let scratch = lab.dir.path().join("scratch");
    let mut calibrate = lab.snapshot(1);
    calibrate
        .env("BLOCKSNAP_REPO", &scratch)
        .env("BLOCKSNAP_CACHE_DIR", lab.dir.path().join("scratch-cache"));
    lab.ok(bin()
        .args(["init", "--chunk-avg-kib", "64", "--repo"])
        .arg(&scratch));
    let full = timed(&mut calibrate);
    // Kills fall anywhere in the run: uniformly over the time the last
    // uninterrupted snapshot of the same kind took.
    let mut window = full;
    let mut rng = Rng(seed);
    let (mut early, mut stored) = (0, 0u64);
    for round in 0..kills {
        // Fresh data each round, so that every snapshot has chunks to store.
        lab.advance(150);
        let at = Duration::from_micros(rng.below(window.as_micros() as u64 + 1));
        early += u64::from(kill_after(&mut lab.snapshot(100 + round), at));
        lab.verify_all();
        let before = lab.chunks();
        let t = Instant::now();
        let out = lab.ok(&mut lab.snapshot(100 + round));
        window = t.elapsed();
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let key = report["key"].as_str().unwrap();
        let manifest = Manifest::decode(&std::fs::read(lab.repo().join(key)).unwrap()).unwrap();
        let needed: BTreeSet<String> = manifest
            .files()
            .flat_map(|(_, _, _, chunks)| chunks.iter().map(|c| c.id.to_hex()))
            .collect();
        let missing = needed.difference(&before).count() as u64;
        assert_eq!(
            report["new_chunks"].as_u64().unwrap(),
            missing,
            "round {round} (kill after {at:?}): the re-run stored other than the missing chunks"
        );
        stored += missing;
    }
    lab.verify_all();
    eprintln!(
        "kills: {kills} snapshots killed (seed {seed}; {early} had finished first; full snapshot {full:?}); \
         every committed snapshot verified after each, and each re-run stored only the {stored} missing chunks in all"
    );
}

/// The published entries of `target`, as the snapshot tree they should be.
fn published(target: &Path) -> std::collections::BTreeMap<String, common::Node> {
    let mut d = common::describe(target, None);
    d.retain(|k, _| !k.starts_with(".blocksnap-"));
    d
}

#[test]
fn a_restore_killed_anywhere_leaves_old_or_new_and_a_rerun_completes() {
    let kills = env_num("BLOCKSNAP_KILLS", 12);
    let seed = env_num("BLOCKSNAP_KILL_SEED", 7);
    let lab = Lab::new(8);
    lab.ok(&mut lab.snapshot(1));
    lab.advance(2000);
    lab.ok(&mut lab.snapshot(2));
    let target = lab.dir.path().join("target");
    let trees: Vec<_> = ["1", "2"]
        .iter()
        .map(|h| {
            let t = lab.dir.path().join(format!("reference-{h}"));
            lab.ok(&mut lab.restore(h, &t));
            published(&t)
        })
        .collect();
    assert_ne!(trees[0], trees[1]);
    lab.ok(&mut lab.restore("1", &target));
    let full = timed(&mut lab.restore("2", &lab.dir.path().join("timing")));
    let mut window = full;
    let mut rng = Rng(seed);
    let (mut early, mut mid_publish) = (0, 0);
    for round in 0..kills {
        // Alternate between the two snapshots: each restore replaces the
        // other's tree.
        let (from, to) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let selector = if to == 1 { "2" } else { "1" };
        let at = Duration::from_micros(rng.below(window.as_micros() as u64 + 1));
        early += u64::from(kill_after(&mut lab.restore(selector, &target), at));
        let journal = target.join(".blocksnap-publish.journal").exists();
        if journal {
            mid_publish += 1;
        } else {
            let now = published(&target);
            assert!(
                now == trees[from] || now == trees[to],
                "round {round} (kill after {at:?}): a mix of two trees with no journal"
            );
        }
        let t = Instant::now();
        lab.ok(&mut lab.restore(selector, &target));
        window = window.min(t.elapsed());
        assert_eq!(
            published(&target),
            trees[to],
            "round {round}: re-run did not complete"
        );
        assert!(!target.join(".blocksnap-publish.journal").exists());
    }
    eprintln!(
        "kills: {kills} restores killed (seed {seed}; {early} had finished first, {mid_publish} inside the publish; \
         full restore {full:?}); each left the old tree, the new one or a journal, and each re-run completed"
    );
}

/// The exact steps of the publish, each cut by an abort (as kill -9 would).
#[test]
fn a_restore_cut_at_each_step_of_its_publish_is_finished_by_the_next_one() {
    let lab = Lab::new(3);
    lab.ok(&mut lab.snapshot(1));
    lab.advance(1000);
    lab.ok(&mut lab.snapshot(2));
    let reference = lab.dir.path().join("reference");
    lab.ok(&mut lab.restore("2", &reference));
    let want = published(&reference);
    for point in [
        "publish-journal",
        "publish-aside:1",
        "publish-move:1",
        "publish-aside:2",
        "publish-move:2",
    ] {
        let target = lab
            .dir
            .path()
            .join(format!("t-{}", point.replace(':', "-")));
        lab.ok(&mut lab.restore("1", &target));
        std::fs::create_dir_all(target.join("log")).unwrap();
        let old = published(&target);
        let out = lab
            .restore("2", &target)
            .env("BLOCKSNAP_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the crash point was not reached"
        );
        assert!(
            target.join(".blocksnap-publish.journal").exists(),
            "{point}: cut inside the publish, yet no journal"
        );
        if point == "publish-journal" {
            assert_eq!(published(&target), old, "{point}: moved before the journal");
        }
        // A snapshot of a half-published directory is refused.
        let refused = lab
            .cmd()
            .args(["snapshot", "--height", "9", "--source"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("interrupted restore"),
            "{point}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
        let out = lab.ok(&mut lab.restore("2", &target));
        assert!(
            out.contains("first completed an interrupted restore"),
            "{point}: {out}"
        );
        let mut got = published(&target);
        assert!(
            got.remove("log").is_some(),
            "{point}: lost an entry the snapshot does not have"
        );
        assert_eq!(got, want, "{point}");
    }
}
