//! Power-loss crash states (issue #21): every operation that writes runs
//! once under `strace`, and the states a power loss could leave behind —
//! what was never synced lost, directories cut to an in-order prefix of
//! their unsynced changes (FORMAT.md §10, "Persistence model";
//! `tests/common/crashfs.rs`) — are written back onto the disk one by one,
//! and what blocksnap then makes of each is checked:
//! - the repository verifies in full (no snapshot names a missing or
//!   damaged chunk), and re-running the operation succeeds and verifies;
//! - a restore's target holds the old tree, or the new one, or a journal
//!   that the next restore completes; after that next restore it holds the
//!   new tree and nothing of blocksnap's own;
//! - a forgotten snapshot stays forgotten once its forget returned.
//!
//! A mutation self-test drops the local store's directory fsync and must
//! see violations: the explorer can find what it looks for.
//!
//! `BLOCKSNAP_CRASH_STATES=N` bounds the states checked per operation
//! (default 10 in CI; `benches/crash_states.sh` checks them all).

mod common;
#[path = "common/crashfs.rs"]
mod crashfs;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crashfs::Run;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blocksnap"))
}

fn budget() -> usize {
    std::env::var("BLOCKSNAP_CRASH_STATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// How many distinct states each operation's in-memory check visits at
/// most (`BLOCKSNAP_CRASH_MODEL_STATES`; the benchmark lifts it).
fn model_budget() -> usize {
    std::env::var("BLOCKSNAP_CRASH_MODEL_STATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

/// The entry `path` (`/`-separated) below root `r` of an image.
fn entry(img: &crashfs::Image, r: usize, path: &str) -> Option<usize> {
    let mut at = img.roots[r];
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match &img.inodes[at].node {
            crashfs::Node::Dir { entries } => at = *entries.get(part)?,
            _ => return None,
        }
    }
    Some(at)
}

fn names(img: &crashfs::Image, dir: Option<usize>) -> Vec<String> {
    match dir.map(|d| &img.inodes[d].node) {
        Some(crashfs::Node::Dir { entries }) => entries.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn bytes(img: &crashfs::Image, ino: usize) -> Option<&[u8]> {
    match &img.inodes[ino].node {
        crashfs::Node::File { data } => Some(&data[..]),
        _ => None,
    }
}

/// The repository at root `r` of a crash state, checked without running
/// anything: every live manifest (one no decodable forget record names)
/// decodes, and every chunk it names is there, of its recorded size, and
/// decodes to its id. The quick check that lets every state be visited.
fn repo_sound(img: &crashfs::Image, r: usize) -> Result<(), String> {
    use blocksnap::format::{chunk, forget::ForgetRecord, layout, manifest::Manifest};
    let forgotten = entry(img, r, "forgotten");
    for name in names(img, entry(img, r, "snapshots")) {
        let key = format!("snapshots/{name}");
        let Ok(k) = layout::SnapshotKey::parse(&key) else {
            return Err(format!("{key}: not a snapshot key"));
        };
        let record = forgotten
            .and_then(|_| entry(img, r, &layout::forgotten_key(&k.id)))
            .and_then(|i| bytes(img, i))
            .is_some_and(|b| ForgetRecord::decode(b).is_ok());
        if record {
            continue;
        }
        let m = entry(img, r, &key)
            .and_then(|i| bytes(img, i))
            .ok_or_else(|| format!("{key}: not a file"))?;
        let m = Manifest::decode(m).map_err(|e| format!("{key}: {e}"))?;
        for (path, _, _, chunks) in m.files() {
            for c in chunks {
                let ck = layout::chunk_key(&c.id);
                let Some(obj) = entry(img, r, &ck).and_then(|i| bytes(img, i)) else {
                    return Err(format!("{key}: {} names {ck}, which is missing", path.path));
                };
                if obj.len() != c.stored_len as usize {
                    return Err(format!(
                        "{key}: {ck} holds {} bytes, {} recorded",
                        obj.len(),
                        c.stored_len
                    ));
                }
                chunk::decode(obj, &c.id).map_err(|e| format!("{key}: {ck}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Fails under `CI=true` without strace; elsewhere says why it skips.
fn strace_here() -> bool {
    if crashfs::have_strace() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("strace is missing, and CI=true: .ci/run installs it");
    }
    eprintln!("strace is not installed: crash states not explored");
    false
}

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            dir: tempfile::tempdir().unwrap(),
        };
        lab.ok(bin()
            .args(["generate", "--size-mib", "1", "--dir"])
            .arg(lab.source()));
        lab.ok(lab.cmd().args(["init", "--chunk-avg-kib", "64"]));
        lab
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn source(&self) -> PathBuf {
        self.path("node/loopchain")
    }
    fn cmd(&self) -> Command {
        let mut c = bin();
        c.env("BLOCKSNAP_REPO", self.path("repo"))
            .env("BLOCKSNAP_CACHE_DIR", self.path("cache"))
            .env("BLOCKSNAP_HOST", "node-a");
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
            "--quiet",
            "--height",
            &height.to_string(),
            "--source",
        ])
        .arg(self.source());
        c
    }
    /// `verify all --full` of a repository: `Err` with its report.
    fn verify(&self, repo: &Path) -> Result<(), String> {
        let out = self
            .cmd()
            .env("BLOCKSNAP_REPO", repo)
            .args(["verify", "all", "--full"])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
    fn ids(&self) -> Vec<String> {
        let out = self.ok(self.cmd().args(["list", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["snapshots"]
            .as_array()
            .or_else(|| v.as_array())
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The crash states of a run to visit: a stride through every candidate
/// (up to the model budget), so that a bounded run still sees every part
/// of the operation, its end (the commit) included.
fn candidates(run: &Run) -> Vec<crashfs::Crash> {
    assert!(
        run.status.success(),
        "the traced run failed: {}",
        run.stderr
    );
    assert!(
        run.unmodelled.is_empty(),
        "calls the model does not follow: {:#?}",
        run.unmodelled
    );
    let crashes = run.crashes();
    let stride = crashes.len().div_ceil(model_budget().max(1)).max(1);
    let mut picked: Vec<crashfs::Crash> = crashes.into_iter().rev().step_by(stride).collect();
    picked.reverse();
    picked
}

/// Every distinct state among `candidates`, one at a time (an image is
/// large: none is kept), with its index among the distinct ones.
fn distinct_states(
    run: &Run,
    candidates: &[crashfs::Crash],
    mut f: impl FnMut(usize, &crashfs::Image),
) -> (usize, Vec<usize>) {
    let mut seen = HashSet::new();
    // The candidate each distinct state came from.
    let mut first = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let img = run.state(c);
        if seen.insert(crashfs::digest(&img)) {
            f(first.len(), &img);
            first.push(i);
        }
    }
    (first.len(), first)
}

/// Explores `run`: every distinct state (up to the model budget) through
/// the in-memory check of the repositories at `repos` (root indexes), and
/// a spread of them (the budget) written to disk and checked with `check`,
/// which runs blocksnap (`Err`: a violation).
fn explore(
    name: &str,
    run: &Run,
    repos: &[usize],
    mut check: impl FnMut(usize) -> Result<(), String>,
) -> (usize, Vec<String>) {
    let cands = candidates(run);
    let mut violations = Vec::new();
    let (distinct, first) = distinct_states(run, &cands, |n, img| {
        for &r in repos {
            if let Err(e) = repo_sound(img, r) {
                violations.push(format!("{name}, state {n} (in memory): {e}"));
            }
        }
    });
    let want = budget().min(distinct);
    let step = distinct as f64 / want.max(1) as f64;
    for k in 0..want {
        let n = (k as f64 * step) as usize;
        crashfs::materialize(&run.state(&cands[first[n]]));
        if let Err(e) = check(n) {
            violations.push(format!("{name}, state {n}: {e}"));
        }
    }
    eprintln!(
        "{name}: {} ops traced, {} crash states computed, {distinct} distinct checked in memory, \
         {want} of them by running blocksnap, {} violations",
        run.ops.len(),
        cands.len(),
        violations.len()
    );
    (distinct, violations)
}

#[test]
fn snapshots_survive_a_power_loss_at_any_point() {
    if !strace_here() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&mut lab.snapshot(1));
    lab.advance(200);
    // The second snapshot, with the stat cache and chunk index.
    let roots = vec![lab.path("repo"), lab.path("cache")];
    let run = crashfs::record(lab.snapshot(2), &roots, lab.dir.path());
    let (checked, violations) = explore("snapshot", &run, &[0], |_| {
        lab.verify(&lab.path("repo"))?;
        let out = lab.snapshot(3).output().unwrap();
        if !out.status.success() {
            return Err(format!("re-run: {}", String::from_utf8_lossy(&out.stderr)));
        }
        lab.verify(&lab.path("repo"))
            .map_err(|e| format!("after the re-run: {e}"))
    });
    assert!(checked > 0);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_staged_snapshot_survives_a_power_loss_at_any_point() {
    if !strace_here() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&mut lab.snapshot(1));
    lab.advance(100);
    let before = common::describe(&lab.source(), None);
    let staged = |h: u64| {
        let mut c = lab.snapshot(h);
        c.args(["--stop-cmd", "true", "--start-cmd", "true"]);
        c
    };
    let roots = vec![lab.path("repo"), lab.path("cache"), lab.path("node")];
    let run = crashfs::record(staged(2), &roots, lab.dir.path());
    let (_, violations) = explore("staged snapshot", &run, &[0], |_| {
        lab.verify(&lab.path("repo"))?;
        let mut now = common::describe(&lab.source(), None);
        now.retain(|k, _| !k.starts_with(".blocksnap-stage"));
        if now != before {
            return Err("the source changed".into());
        }
        let out = staged(3).output().unwrap();
        if !out.status.success() {
            return Err(format!("re-run: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if lab.source().join(".blocksnap-stage").exists() {
            return Err("a stage was left after the re-run".into());
        }
        lab.verify(&lab.path("repo"))
    });
    assert!(violations.is_empty(), "{violations:#?}");
}

/// What a restore target shows, without blocksnap's working entries.
fn shown(target: &Path) -> BTreeMap<String, common::Node> {
    let mut d = common::describe(target, None);
    d.retain(|k, _| !k.starts_with(".blocksnap-"));
    d
}

fn restore_case(name: &str, force: bool) {
    if !strace_here() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&mut lab.snapshot(1));
    let target = lab.path("target/loopchain");
    let restore = || {
        let mut c = lab.cmd();
        c.args([
            "restore", "latest", "--ip", "10.0.0.9", "--quiet", "--target",
        ])
        .arg(&target);
        if force {
            c.arg("--force");
        }
        c
    };
    if force {
        // An older state of the node, then a newer snapshot to restore
        // over it (seeded: the older files are read and reused).
        lab.ok(&mut restore());
        std::fs::create_dir_all(target.join("log")).unwrap();
        std::fs::write(target.join("log/keep"), b"the operator's").unwrap();
        lab.advance(150);
        lab.ok(&mut lab.snapshot(2));
    } else {
        std::fs::create_dir_all(&target).unwrap();
    }
    let old = shown(&target);
    let roots = vec![lab.path("target")];
    let run = crashfs::record(restore(), &roots, lab.dir.path());
    let new = shown(&target);
    assert_ne!(old, new);
    let journal = target.join(".blocksnap-publish.journal");
    let (_, violations) = explore(name, &run, &[], |_| {
        let now = shown(&target);
        if !journal.exists() && now != old && now != new {
            return Err(format!(
                "neither the old tree nor the new one, and no journal: {:?}",
                now.keys().take(8).collect::<Vec<_>>()
            ));
        }
        let mut again = restore();
        if !force {
            again.arg("--force");
        }
        let out = again.output().unwrap();
        if !out.status.success() {
            return Err(format!("re-run: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if shown(&target) != new {
            return Err("the re-run did not leave the new tree".into());
        }
        let leftovers: Vec<String> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".blocksnap-"))
            .collect();
        if !leftovers.is_empty() {
            return Err(format!("left behind after the re-run: {leftovers:?}"));
        }
        Ok(())
    });
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_restore_into_an_empty_target_survives_a_power_loss_at_any_point() {
    restore_case("restore", false);
}

#[test]
fn a_seeded_restore_force_survives_a_power_loss_at_any_point() {
    restore_case("restore --force (seeded)", true);
}

#[test]
fn forget_and_prune_survive_a_power_loss_at_any_point() {
    if !strace_here() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&mut lab.snapshot(1));
    lab.advance(200);
    lab.ok(&mut lab.snapshot(2));
    let first = lab.ids()[0].clone();
    let roots = vec![lab.path("repo")];
    let forget = || {
        let mut c = lab.cmd();
        c.args(["forget", "--quiet", &first]);
        c
    };
    let run = crashfs::record(forget(), &roots, lab.dir.path());
    let (_, violations) = explore("forget", &run, &[0], |_| {
        lab.verify(&lab.path("repo"))?;
        let out = forget().output().unwrap();
        // Forgotten already (its record survived) or forgotten now.
        if !out.status.success() && lab.ids().contains(&first) {
            return Err(format!("re-run: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if lab.ids().contains(&first) {
            return Err("the forgotten snapshot is live after the re-run".into());
        }
        lab.verify(&lab.path("repo"))
    });
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        !lab.ids().contains(&first),
        "the traced forget did not forget"
    );

    // Condemn and sweep in one run (one writer).
    let prune = || {
        let mut c = lab.cmd();
        c.args(["prune", "--quiet", "--instant-delete"]);
        c
    };
    let run = crashfs::record(prune(), &roots, lab.dir.path());
    let (_, violations) = explore("prune (condemn and sweep)", &run, &[0], |_| {
        lab.verify(&lab.path("repo"))?;
        if lab.ids().contains(&first) {
            return Err("the forgotten snapshot came back".into());
        }
        let out = prune().output().unwrap();
        if !out.status.success() {
            return Err(format!("re-run: {}", String::from_utf8_lossy(&out.stderr)));
        }
        lab.verify(&lab.path("repo"))
    });
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn a_copy_into_a_local_repository_survives_a_power_loss_at_any_point() {
    if !strace_here() {
        return;
    }
    let lab = Lab::new();
    lab.ok(&mut lab.snapshot(1));
    let dst = lab.path("dst");
    lab.ok(lab.cmd().args(["copy", "--quiet", "all", "--to"]).arg(&dst));
    lab.advance(200);
    lab.ok(&mut lab.snapshot(2));
    let copy = || {
        let mut c = lab.cmd();
        c.args(["copy", "--quiet", "all", "--to"]).arg(&dst);
        c
    };
    let run = crashfs::record(copy(), std::slice::from_ref(&dst), lab.dir.path());
    let (_, violations) = explore("copy", &run, &[0], |_| {
        lab.verify(&dst)?;
        let out = copy().output().unwrap();
        if !out.status.success() {
            return Err(format!("re-run: {}", String::from_utf8_lossy(&out.stderr)));
        }
        lab.verify(&dst)
    });
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The explorer can see what it looks for: without the local store's
/// directory fsyncs (or its file fsync before the link), some crash state
/// holds a snapshot that names a chunk the disk lost.
#[test]
fn dropping_an_fsync_is_caught() {
    if !strace_here() {
        return;
    }
    for skip in ["local-dir-fsync", "local-file-fsync"] {
        let lab = Lab::new();
        let roots = vec![lab.path("repo"), lab.path("cache")];
        let mut c = lab.snapshot(1);
        c.env("BLOCKSNAP_TEST_SKIP", skip);
        let run = crashfs::record(c, &roots, lab.dir.path());
        let cands = candidates(&run);
        let mut broken = Vec::new();
        let (distinct, first) = distinct_states(&run, &cands, |n, img| {
            if repo_sound(img, 0).is_err() {
                broken.push(n);
            }
        });
        eprintln!(
            "without {skip}: {} of {distinct} distinct crash states ({} computed) break the \
             repository",
            broken.len(),
            cands.len()
        );
        assert!(!broken.is_empty(), "dropping {skip} went unnoticed");
        // And one of them, on disk, fails `verify --full` too.
        crashfs::materialize(&run.state(&cands[first[broken[0]]]));
        assert!(lab.verify(&lab.path("repo")).is_err());
    }
}
