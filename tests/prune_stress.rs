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
//! `BLOCKSNAP_PRUNE_KILLS` (default 24) the number of prune kills.

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
#[test]
fn a_prune_killed_anywhere_loses_nothing_and_a_rerun_completes() {
    let kills = env_num("BLOCKSNAP_PRUNE_KILLS", 24);
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
    let mut rng = Rng(99);
    let margins = ["--grace", "1s", "--lease", "1s", "--pending-expiry", "1s"];
    let points = [
        "prune-claimed",
        "prune-epoch",
        "prune-batch:1",
        "prune-batch:2",
    ];
    let mut killed = 0;
    let mut round = 0u64;
    while killed < kills {
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
        // Condemn, then wait out the grace period.
        let (ok, _, err) = output(repo.run("node", "prune", &margins));
        assert!(ok, "{err}");
        std::thread::sleep(Duration::from_millis(1100));
        // The sweep, killed: at a step of the protocol, or at a random time.
        let mut c = repo.run("node", "prune", &margins);
        if killed % 2 == 0 {
            let point = points[(killed as usize / 2) % points.len()];
            c.env("BLOCKSNAP_TEST_CRASH_AT", point);
            // Aborts at the point; a point past the end of this sweep (a
            // second batch when there is one) lets it finish.
            let _ = output(c);
        } else {
            let mut child = c
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            let _ = child.kill();
            let _ = child.wait();
        }
        killed += 1;
        let (ok, out, err) = output(repo.run("node", "verify", &["all", "--full"]));
        assert!(ok, "after kill {killed}: {out}{err}");
        // A later prune (after the lease of a killed sweep) completes.
        std::thread::sleep(Duration::from_millis(1100));
        let (ok, _, err) = output(repo.run("node", "prune", &margins));
        assert!(ok, "re-run after kill {killed}: {err}");
        let (ok, out, err) = output(repo.run("node", "verify", &["all", "--full"]));
        assert!(ok, "after the re-run {killed}: {out}{err}");
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
    eprintln!(
        "kills: {killed} prunes killed (at {} protocol steps and at random times); every snapshot verified after each, and each re-run completed",
        points.len()
    );
}
