//! Prune beside writers, with real processes (issue #10): several writers
//! snapshot changing sources into one repository (local, then S3 on
//! s3s-fs) while forget and prune loop with their time margins shortened,
//! and one writer is frozen (SIGSTOP) across prune rounds, then thawed: it
//! must commit a complete snapshot or refuse. At the end every remaining
//! snapshot passes `verify --full`, and each writer's newest snapshot
//! restores byte-identical to the data it was taken from.
//!
//! Also: prune killed with SIGKILL at random points and at each step of a
//! sweep, then run again: nothing referenced is lost.
//!
//! `BLOCKSNAP_STRESS_SECS` (default 20) sets how long writers run per store;
//! `BLOCKSNAP_PRUNE_KILLS` (default 12) the number of prune kills.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::faults::Rng;
use common::s3server::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How to reach one repository from the CLI.
#[derive(Clone)]
struct Repo {
    args: Vec<String>,
    env: Vec<(String, String)>,
    cache: PathBuf,
}

impl Repo {
    fn cmd(&self, host: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blocksnap"));
        c.env("BLOCKSNAP_CACHE_DIR", self.cache.join(host))
            .env("BLOCKSNAP_HOST", host)
            .env_remove("BLOCKSNAP_REPO");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
    /// `blocksnap SUB <repo args> ARGS…`
    fn run(&self, host: &str, sub: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(host);
        c.arg(sub).args(&self.args).args(args);
        c
    }
}

fn output(mut c: Command) -> (bool, String, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A changing source: `files` files of 48 KiB; each round rewrites some,
/// adds one and removes one.
fn mutate(dir: &Path, rng: &mut Rng, round: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: String, rng: &mut Rng| {
        let mut data = vec![0u8; 48 << 10];
        blake3::Hasher::new()
            .update(&rng.next().to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        std::fs::write(dir.join(name), data).unwrap();
    };
    if round == 0 {
        for i in 0..24 {
            write(format!("f{i:03}"), rng);
        }
        return;
    }
    for _ in 0..4 {
        write(format!("f{:03}", rng.below(24)), rng);
    }
    write(format!("n{round:04}"), rng);
    let _ = std::fs::remove_file(dir.join(format!("n{:04}", round.saturating_sub(2))));
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

struct Tally {
    committed: AtomicU64,
    refused: AtomicU64,
    rounds: AtomicU64,
    deleted: AtomicU64,
    forgotten: AtomicU64,
}

fn stress(repo: Repo, work: &Path, label: &str) {
    let secs = env_num("BLOCKSNAP_STRESS_SECS", 20);
    let writers = 3;
    let tally = Arc::new(Tally {
        committed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        rounds: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        forgotten: AtomicU64::new(0),
    });
    // What each committed snapshot was taken from, by (host, height).
    let copies: Arc<Mutex<BTreeMap<(String, u64), PathBuf>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let margins = [
        "--grace",
        "2s",
        "--lease",
        "60s",
        "--pending-expiry",
        "3s",
        "--retire-after",
        "10s",
    ];
    let (ok, _, err) = output(repo.run("pruner", "init", &["--chunk-avg-kib", "16"]));
    assert!(ok, "{err}");

    std::thread::scope(|s| {
        for w in 0..writers {
            let (repo, tally, copies, stop) =
                (repo.clone(), tally.clone(), copies.clone(), stop.clone());
            let work = work.to_path_buf();
            s.spawn(move || {
                let host = format!("w{w}");
                let source = work.join(format!("{host}/data"));
                let mut rng = Rng(1000 + w);
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    mutate(&source, &mut rng, round);
                    // One path, so that the snapshots form one history; a
                    // copy of each to compare a restore with.
                    let frozen = work.join(format!("{host}/frozen"));
                    let kept = work.join(format!("{host}/at-{round}"));
                    copy_tree(&source, &frozen);
                    copy_tree(&source, &kept);
                    let mut c = repo.run(
                        &host,
                        "snapshot",
                        &["--json", "--height", &round.to_string(), "--source"],
                    );
                    c.arg(&frozen).stdout(Stdio::piped()).stderr(Stdio::piped());
                    let mut child = c.spawn().unwrap();
                    // Writer 0 is frozen across prune rounds every fourth
                    // time: longer than the grace period and the pending
                    // commit's expiry together.
                    if w == 0 && round % 4 == 3 {
                        std::thread::sleep(Duration::from_millis(rng.below(300)));
                        signal(&child, libc::SIGSTOP);
                        std::thread::sleep(Duration::from_secs(7));
                        signal(&child, libc::SIGCONT);
                    }
                    let (ok, out, err) = wait(&mut child);
                    if ok {
                        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                        assert_eq!(v["height"], round);
                        tally.committed.fetch_add(1, Ordering::Relaxed);
                        copies.lock().unwrap().insert((host.clone(), round), kept);
                    } else {
                        assert!(
                            err.contains("not committed") || err.contains("run it again"),
                            "{host} round {round}: an unexpected failure: {err}"
                        );
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = std::fs::remove_dir_all(&kept);
                    }
                    round += 1;
                }
            });
        }
        // Forget: the two newest of each history stay.
        {
            let (repo, tally, stop) = (repo.clone(), tally.clone(), stop.clone());
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1500));
                    let (ok, out, err) =
                        output(repo.run("forgetter", "forget", &["--json", "--keep-last", "2"]));
                    assert!(ok, "forget: {err}");
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    tally
                        .forgotten
                        .fetch_add(v["forgotten"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
            });
        }
        // Prune, over and over.
        {
            let (repo, tally, stop) = (repo.clone(), tally.clone(), stop.clone());
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut args = vec!["--json"];
                    args.extend(margins);
                    let (ok, out, err) = output(repo.run("pruner", "prune", &args));
                    assert!(ok, "prune: {err}");
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    for r in v["swept"].as_array().unwrap() {
                        tally.rounds.fetch_add(1, Ordering::Relaxed);
                        tally
                            .deleted
                            .fetch_add(r["deleted"].as_u64().unwrap(), Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });

    // Everything left verifies, and each writer's newest snapshot restores
    // to exactly the data it was taken from.
    let (ok, out, err) = output(repo.run("auditor", "verify", &["all", "--full"]));
    assert!(ok, "{label}: verify after the stress run: {out}{err}");
    let (ok, out, _) = output(repo.run("auditor", "list", &["--json"]));
    assert!(ok);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let copies = copies.lock().unwrap();
    for w in 0..writers {
        let host = format!("w{w}");
        let newest = listed
            .iter()
            .filter(|l| l["info"]["host"] == host.as_str())
            .max_by_key(|l| l["height"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("{label}: {host} has no snapshot left"));
        let height = newest["height"].as_u64().unwrap();
        let target = work.join(format!("restored-{host}"));
        let (ok, _, err) = output(repo.run(
            "auditor",
            "restore",
            &[
                &height.to_string(),
                "--host",
                &host,
                "--target",
                target.to_str().unwrap(),
            ],
        ));
        assert!(ok, "{label}: restore of {host} at {height}: {err}");
        let want = &copies[&(host.clone(), height)];
        assert_eq!(
            common::describe(want, None),
            common::describe(&target, None),
            "{label}: {host} at {height} restored differently"
        );
    }
    eprintln!(
        "stress ({label}, {secs} s): {} snapshots committed, {} refused, {} forgotten; {} prune rounds swept, {} chunks deleted; \
         every remaining snapshot verified, every writer's newest restored byte-identical",
        tally.committed.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.forgotten.load(Ordering::Relaxed),
        tally.rounds.load(Ordering::Relaxed),
        tally.deleted.load(Ordering::Relaxed),
    );
    assert!(
        tally.rounds.load(Ordering::Relaxed) > 0,
        "{label}: no round was swept"
    );
    assert!(
        tally.deleted.load(Ordering::Relaxed) > 0,
        "{label}: nothing was deleted"
    );
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait(child: &mut Child) -> (bool, String, String) {
    let status = child.wait().unwrap();
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), out, err)
}

#[test]
fn writers_forget_and_prune_at_once_on_a_local_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo {
        args: vec![
            "--repo".into(),
            tmp.path().join("repo").display().to_string(),
        ],
        env: vec![],
        cache: tmp.path().join("cache"),
    };
    stress(repo, tmp.path(), "local");
}

#[test]
fn writers_forget_and_prune_at_once_on_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::s3s_fs(&tmp.path().join("s3")) else {
        return;
    };
    let repo = Repo {
        args: vec![
            "--repo".into(),
            format!("s3://{BUCKET}/stress"),
            "--endpoint".into(),
            server.endpoint.clone(),
            "--region".into(),
            "us-east-1".into(),
        ],
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ],
        cache: tmp.path().join("cache"),
    };
    stress(repo, tmp.path(), "s3");
}

/// Prune killed anywhere, and at each step of its sweep: every snapshot
/// still verifies after each kill, and a later prune finishes the job.
/// Whether a run aborted at the crash point it was given (SIGABRT, and the
/// point's own message), rather than finishing or failing otherwise.
fn aborted_at(status: &std::process::ExitStatus, stderr: &str, point: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let name = point.split(':').next().unwrap();
    status.signal() == Some(libc::SIGABRT)
        && stderr.contains(&format!("test crash point {name} reached"))
}

#[test]
fn a_prune_killed_anywhere_loses_nothing_and_a_rerun_completes() {
    let kills = env_num("BLOCKSNAP_PRUNE_KILLS", 12);
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo {
        args: vec![
            "--repo".into(),
            tmp.path().join("repo").display().to_string(),
        ],
        env: vec![("BLOCKSNAP_TEST_PRUNE_BATCH".into(), "4".into())],
        cache: tmp.path().join("cache"),
    };
    let (ok, _, err) = output(repo.run("node", "init", &["--chunk-avg-kib", "16"]));
    assert!(ok, "{err}");
    let source = tmp.path().join("data");
    let mut rng = Rng(99);
    let margins = ["--grace", "1s", "--lease", "1s", "--pending-expiry", "1s"];
    // Every point a prune passes (with batches of 4, a sweep has several).
    let points = [
        "prune-claimed",
        "prune-epoch",
        "prune-batch:1",
        "prune-batch:2",
        "prune-done",
    ];
    let mut at_points = std::collections::BTreeMap::new();
    let mut random_kills = 0;
    let mut round = 0u64;
    let mut runs = 0;
    while at_points.values().sum::<u64>() + random_kills < kills {
        runs += 1;
        assert!(runs < kills * 4, "kills keep missing: {at_points:?}");
        // Fresh snapshots, the older ones forgotten: chunks to condemn.
        for _ in 0..3 {
            mutate(&source, &mut rng, round);
            let (ok, _, err) = output(repo.run(
                "node",
                "snapshot",
                &[
                    "--height",
                    &round.to_string(),
                    "--source",
                    source.to_str().unwrap(),
                ],
            ));
            assert!(ok, "{err}");
            round += 1;
        }
        let (ok, _, err) = output(repo.run("node", "forget", &["--keep-last", "1"]));
        assert!(ok, "{err}");
        // Condemn (a chunk must be older than the grace period to be
        // condemned), then wait out the grace period of the plan.
        std::thread::sleep(Duration::from_millis(1100));
        let (ok, out, err) =
            output(repo.run("node", "prune", &[&margins[..], &["--json"]].concat()));
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["condemned"].as_u64() > Some(0), "nothing to sweep: {v}");
        std::thread::sleep(Duration::from_millis(1100));
        // The sweep, killed: at a step of the protocol, or at a random time.
        let mut c = repo.run("node", "prune", &margins);
        if runs % 2 == 1 {
            let point = points[(runs as usize / 2) % points.len()];
            c.env("BLOCKSNAP_TEST_CRASH_AT", point);
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // It must die there, not finish: each point is one a sweep of
            // this repository passes.
            assert!(
                aborted_at(&out.status, &stderr, point),
                "prune did not stop at {point}: {:?} {stderr}",
                out.status
            );
            *at_points.entry(point).or_insert(0u64) += 1;
        } else {
            let mut child = c
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            // Counted only when the signal reached a running prune.
            let running = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let status = child.wait().unwrap();
            use std::os::unix::process::ExitStatusExt;
            if running && status.signal() == Some(libc::SIGKILL) {
                random_kills += 1;
            }
        }
        let (ok, out, err) = output(repo.run("node", "verify", &["all", "--full"]));
        assert!(ok, "after kill {runs}: {out}{err}");
        // A later prune (after the lease of a killed sweep) completes the
        // round: nothing is left being swept.
        std::thread::sleep(Duration::from_millis(1100));
        let (ok, out, err) =
            output(repo.run("node", "prune", &[&margins[..], &["--json"]].concat()));
        assert!(ok, "re-run after kill {runs}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let (ok, out, err) = output(repo.run("node", "verify", &["all", "--full"]));
        assert!(ok, "after the re-run {runs}: {out}{err}");
        let (ok, out, _) =
            output(repo.run("node", "prune", &["--json", "--dry-run", "--grace", "1s"]));
        assert!(ok);
        let after: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            after["swept"].as_array().unwrap().is_empty()
                || after["swept"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["deleted"] == 0),
            "a round is still waiting to be swept after the re-run: {v} {after}"
        );
    }
    // In the end, nothing unreferenced is left behind for good.
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..2 {
        let (ok, _, err) = output(repo.run("node", "prune", &["--grace", "0s", "--lease", "1s"]));
        assert!(ok, "{err}");
    }
    let (ok, out, _) = output(repo.run("node", "prune", &["--json", "--dry-run", "--grace", "0s"]));
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["chunks"], v["referenced_chunks"], "{v}");
    assert_eq!(
        at_points.len(),
        points.len(),
        "every point was hit: {at_points:?}"
    );
    eprintln!(
        "kills: {} prunes aborted at protocol steps ({at_points:?}) and {random_kills} killed at \
         random times, out of {runs} sweeps; every snapshot verified after each, and each re-run \
         completed the round",
        at_points.values().sum::<u64>()
    );
}

/// The crash points of writers, forget and restore (issue #21: some were
/// never used): a run aborted there (the kill asserted) leaves a sound
/// repository, and the next run — of the same command, or a prune —
/// finishes what it began.
#[test]
fn writers_forget_and_restore_killed_at_each_step_are_finished_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo {
        args: vec![
            "--repo".into(),
            tmp.path().join("repo").display().to_string(),
        ],
        env: vec![],
        cache: tmp.path().join("cache"),
    };
    let (ok, _, err) = output(repo.run("node", "init", &["--chunk-avg-kib", "16"]));
    assert!(ok, "{err}");
    let source = tmp.path().join("data");
    let mut rng = Rng(7);
    let ids = || -> Vec<String> {
        let (ok, out, err) = output(repo.run("node", "list", &["--json"]));
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let verify = || {
        let (ok, out, err) = output(repo.run("node", "verify", &["all", "--full"]));
        assert!(ok, "{out}{err}");
    };
    let kill_at = |mut c: Command, point: &str| {
        c.env("BLOCKSNAP_TEST_CRASH_AT", point);
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            aborted_at(&out.status, &stderr, point),
            "did not stop at {point}: {:?} {stderr}",
            out.status
        );
    };
    let snapshot = |h: u64| {
        repo.run(
            "node",
            "snapshot",
            &[
                "--height",
                &h.to_string(),
                "--source",
                source.to_str().unwrap(),
            ],
        )
    };
    let margins = ["--grace", "0s", "--lease", "1s", "--pending-expiry", "1s"];
    // A writer killed after its pending object, after its claim, after its
    // manifest's PUT: no snapshot, or its snapshot (the claimed one
    // completed by the next prune), never a broken one.
    for (h, point) in [
        (1, "commit-pending"),
        (2, "commit-claimed"),
        (3, "commit-put"),
    ] {
        // Heights rise, as a node's do: a snapshot's parent is the newest
        // of its history, so a lower height after a higher one would fork.
        let h = h * 10;
        mutate(&source, &mut rng, h);
        let before = ids();
        kill_at(snapshot(h), point);
        verify();
        let (ok, out, err) =
            output(repo.run("node", "prune", &[&margins[..], &["--json"]].concat()));
        assert!(ok, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let after = ids();
        match point {
            // Never claimed: the pending commit stays until it expires.
            "commit-pending" => assert_eq!(after, before, "{r}"),
            // Claimed: the prune completes it.
            "commit-claimed" => {
                assert_eq!(r["pending_promoted"], 1, "{r}");
                assert_eq!(after.len(), before.len() + 1);
            }
            // Committed: there, and the prune tidies its pending commit.
            _ => assert_eq!(after.len(), before.len() + 1),
        }
        verify();
        // The same snapshot again is fine whatever happened.
        let (ok, _, err) = output(snapshot(h + 5));
        assert!(ok, "{err}");
        verify();
    }
    // forget killed after its record, before deleting the manifest: the
    // snapshot is forgotten already (the record decides); a re-run removes
    // the manifest.
    let victim = ids()[0].clone();
    kill_at(repo.run("node", "forget", &[&victim]), "forget-recorded");
    assert!(!ids().contains(&victim), "the record did not forget it");
    let (ok, _, err) = output(repo.run("node", "forget", &[&victim[..16]]));
    assert!(ok || err.contains("no snapshot"), "{err}");
    verify();
    // A prune killed after completing a claimed commit, before tidying it.
    mutate(&source, &mut rng, 40);
    kill_at(snapshot(40), "commit-claimed");
    let n = ids().len();
    kill_at(repo.run("node", "prune", &margins), "prune-completed");
    assert_eq!(ids().len(), n + 1, "the completed commit is there");
    // Past the pending expiry: the commit killed at `commit-pending` above
    // (never claimed) expires in the same run.
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, out, err) = output(repo.run("node", "prune", &[&margins[..], &["--json"]].concat()));
    assert!(ok, "{err}");
    let pending: Vec<String> = walkdir::WalkDir::new(tmp.path().join("repo/pending"))
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(
        pending.is_empty(),
        "the next prune tidied the completed commit: {pending:?} {out}"
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["pending_promoted"], 1, "{r}");
    assert_eq!(r["pending_expired"], 1, "{r}");
    verify();
    // A restore killed after its publish synced, before the old tree and
    // the journal are removed: the next restore finishes, nothing left.
    let target = tmp.path().join("target");
    let restore = || {
        let mut c = repo.run(
            "node",
            "restore",
            &["latest", "--ip", "10.0.0.9", "--force", "--target"],
        );
        c.arg(&target);
        c
    };
    std::fs::create_dir_all(target.join("old-entry")).unwrap();
    let (ok, _, err) = output(restore());
    assert!(ok, "{err}");
    mutate(&source, &mut rng, 50);
    let (ok, _, err) = output(snapshot(50));
    assert!(ok, "{err}");
    kill_at(restore(), "publish-synced");
    let (ok, _, err) = output(restore());
    assert!(ok, "{err}");
    let left: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".blocksnap-"))
        .collect();
    assert!(left.is_empty(), "left in the target: {left:?}");
}
