//! The real `blocksnap` binary, end to end: commands, flags, JSON, messages
//! and exit codes as an operator's scripts see them.

mod common;

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn blocksnap(repo: &Path) -> Command {
    let mut c = Command::cargo_bin("blocksnap").unwrap();
    // The local state goes beside the repository, not into the real
    // ~/.cache.
    let cache = repo.parent().unwrap_or(repo).join("cache");
    c.env("BLOCKSNAP_REPO", repo)
        .env("BLOCKSNAP_CACHE_DIR", cache)
        .env_remove("RUST_BACKTRACE");
    c
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let s = Setup { dir };
        blocksnap(&s.repo())
            .args(["generate", "--dir"])
            .arg(s.source())
            .args(["--size-mib", "3", "--ip", "10.0.0.7"])
            .assert()
            .success()
            .stdout(predicate::str::contains("is at height"));
        blocksnap(&s.repo())
            .arg("init")
            .assert()
            .success()
            .stdout(predicate::str::contains("created repository"));
        s
    }
    fn repo(&self) -> std::path::PathBuf {
        self.dir.path().join("repo")
    }
    fn source(&self) -> std::path::PathBuf {
        self.dir.path().join("node/loopchain")
    }
    fn snapshot(&self, height: u64) -> serde_json::Value {
        let out = blocksnap(&self.repo())
            .args([
                "snapshot",
                "--json",
                "--tag",
                "nightly",
                "--height",
                &height.to_string(),
                "--source",
            ])
            .arg(self.source())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out.stdout)
    }
}

#[test]
fn snapshot_list_restore_verify() {
    let s = Setup::new();
    let first = s.snapshot(10);
    assert_eq!(first["height"], 10);
    assert_eq!(first["normalised_ip"], "10.0.0.7");
    assert!(first["new_chunks"].as_u64().unwrap() > 0);
    blocksnap(&s.repo())
        .args(["generate", "--blocks", "200", "--dir"])
        .arg(s.source())
        .assert()
        .success();
    let second = s.snapshot(210);
    assert!(
        second["new_stored_bytes"].as_u64().unwrap() < first["new_stored_bytes"].as_u64().unwrap()
    );

    let list = json(
        &blocksnap(&s.repo())
            .args(["list", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["info"]["parent"], first["id"]);
    assert_eq!(items[0]["info"]["tags"][0], "nightly");
    blocksnap(&s.repo())
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("height").and(predicate::str::contains("nightly")));

    let target = s.dir.path().join("restored");
    let out = blocksnap(&s.repo())
        .args([
            "restore",
            "latest",
            "--json",
            "--ip",
            "192.168.7.9",
            "--target",
        ])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out.stdout)["height"], 210);
    let restored_db = target.join(".storage/db_192.168.7.9:7100_icon_dex/CURRENT");
    assert_eq!(
        std::fs::read(&restored_db).unwrap(),
        std::fs::read(
            s.source()
                .join(".storage/db_10.0.0.7:7100_icon_dex/CURRENT")
        )
        .unwrap()
    );

    blocksnap(&s.repo())
        .args(["verify", "all", "--full"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("OK: 0 problem(s)"));
    let v = json(
        &blocksnap(&s.repo())
            .args(["verify", "latest", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(v["ok"], true);
    assert_eq!(v["level"], "quick");

    // Over itself: the dry run says nothing is to download and writes
    // nothing; the restore keeps every file and downloads nothing.
    let before = common::describe(&target, None);
    let restore_again = |extra: &[&str]| {
        let mut c = blocksnap(&s.repo());
        c.args([
            "restore",
            "latest",
            "--force",
            "--ip",
            "192.168.7.9",
            "--target",
        ])
        .arg(&target)
        .args(extra);
        c
    };
    restore_again(&["--dry-run"]).assert().success().stdout(
        predicate::str::starts_with("would restore snapshot")
            .and(predicate::str::contains("to download: 0 B")),
    );
    assert_eq!(common::describe(&target, None), before);
    let out = restore_again(&["--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out.stdout);
    assert_eq!(r["bytes_downloaded"], 0);
    assert_eq!(r["bytes_kept"], r["bytes"]);
    assert_eq!(common::describe(&target, None), before);
}

#[test]
fn damage_gives_exit_code_3_and_names_the_file() {
    let s = Setup::new();
    let snap = s.snapshot(5);
    assert!(s.repo().join(snap["key"].as_str().unwrap()).is_file());
    // Delete every chunk under one fan-out directory.
    let chunks = s.repo().join("chunks");
    let fan = std::fs::read_dir(&chunks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_dir_all(&fan).unwrap();
    let out = blocksnap(&s.repo())
        .args(["verify", "latest"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().next().unwrap().starts_with("missing: "),
        "{text}"
    );
    assert!(
        text.contains(".score_data") || text.contains(".storage"),
        "no file named: {text}"
    );
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("DAMAGED: "),
        "{text}"
    );
    let v = json(
        &blocksnap(&s.repo())
            .args(["verify", "all", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["kind"], "missing");

    let target = s.dir.path().join("restored");
    blocksnap(&s.repo())
        .args(["restore", "5", "--ip", "10.0.0.9", "--target"])
        .arg(&target)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("missing object chunks/"));
    // Nothing published: at most blocksnap's staging directory, to resume.
    let published: Vec<_> = std::fs::read_dir(&target)
        .map(|it| {
            it.map(|e| e.unwrap().file_name())
                .filter(|n| !n.to_string_lossy().starts_with(".blocksnap-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(published.is_empty(), "{published:?}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let s = Setup::new();
    s.snapshot(1);
    let target = s.dir.path().join("restored");
    blocksnap(&s.repo())
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("--ip")
                .and(predicate::str::contains("db_CHANGEIP:7100_icon_dex")),
        );
    blocksnap(&s.repo())
        .args(["restore", "latest", "--ip", "10.0.0.300", "--target"])
        .arg(&target)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "\"10.0.0.300\" is not an IPv4 address",
        ));
    assert!(!target.exists());
    blocksnap(&s.repo())
        .args(["restore", "99", "--ip", "10.0.0.1", "--target"])
        .arg(&target)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no snapshot matches \"99\""));
    blocksnap(&s.dir.path().join("nowhere"))
        .args(["list"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no repository at")
                .and(predicate::str::contains("blocksnap init")),
        );
    blocksnap(&s.repo())
        .arg("init")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists"));
    blocksnap(&s.repo())
        .args(["verify", "yesterday"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid snapshot selector"));
    blocksnap(&s.repo())
        .args(["snapshot", "--height", "x"])
        .assert()
        .code(2);
    blocksnap(&s.repo())
        .args(["snapshot", "--height", "3", "--source"])
        .arg(s.dir.path().join("absent"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("absent"));
}

/// A running node (its database LOCK held with `flock`, as goloop does) is
/// refused with exit code 1; a staged snapshot stops it, reports the
/// downtime, and starts it again; a failing start command fails the run.
#[test]
fn live_node_is_refused_and_a_staged_snapshot_restarts_it() {
    let s = Setup::new();
    let lock = s.source().join(".storage/db_10.0.0.7:7100_icon_dex/LOCK");
    assert!(lock.is_file());
    let mut node = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    // Wait until the lock is held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let probe = std::process::Command::new("flock")
            .args(["-n", "-s"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        if !probe.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    blocksnap(&s.repo())
        .args(["snapshot", "--height", "5", "--source"])
        .arg(s.source())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("db_10.0.0.7:7100_icon_dex")
                .and(predicate::str::contains("--stop-cmd"))
                .and(predicate::str::contains("--allow-live")),
        );
    assert!(json_list(&s).is_empty(), "a live snapshot was committed");

    let started = s.dir.path().join("started");
    let out = blocksnap(&s.repo())
        .args(["snapshot", "--json", "--height", "5", "--stop-cmd"])
        .arg(format!("kill {}", node.id()))
        .arg("--start-cmd")
        .arg(format!("touch '{}'", started.display()))
        .arg("--source")
        .arg(s.source())
        .output()
        .unwrap();
    let _ = node.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = json(&out.stdout);
    assert!(started.exists(), "the start command did not run");
    assert!(snap["stage"]["downtime"].as_f64().unwrap() > 0.0, "{snap}");
    assert!(
        snap["stage"]["files_linked"].as_u64().unwrap() > 0,
        "{snap}"
    );
    assert_eq!(json_list(&s).len(), 1);

    blocksnap(&s.repo())
        .args(["snapshot", "--height", "6", "--stop-cmd", "true"])
        .args(["--start-cmd", "echo unit not found >&2; exit 5", "--source"])
        .arg(s.source())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("THE NODE IS NOT RUNNING")
                .and(predicate::str::contains("unit not found")),
        );
    blocksnap(&s.repo())
        .args([
            "snapshot",
            "--height",
            "7",
            "--stop-cmd",
            "true",
            "--source",
        ])
        .arg(s.source())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--start-cmd"));
}

/// Holds `lock` with flock(1) until the returned child is killed.
fn hold_lock(lock: &Path) -> std::process::Child {
    let node = std::process::Command::new("flock")
        .arg("-o")
        .arg(lock)
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::process::Command::new("flock")
        .args(["-n", "-s"])
        .arg(lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    node
}

/// Issue #9, item 7: a signal between the stop and the start command used
/// to leave the node stopped (the start command relied on `Drop`, which a
/// signal's default action never runs).
#[test]
fn a_signal_during_a_staged_snapshot_restarts_the_node_and_exits_cleanly() {
    let s = Setup::new();
    let lock = s.source().join(".storage/db_10.0.0.7:7100_icon_dex/LOCK");
    for (signal, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        // The stop command "fails to stop" the node: blocksnap waits for
        // its lock, and is signalled while it waits.
        let mut node = hold_lock(&lock);
        let started = s.dir.path().join(format!("started-{name}"));
        let stopped = s.dir.path().join(format!("stopped-{name}"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_blocksnap"))
            .env("BLOCKSNAP_REPO", s.repo())
            .env("BLOCKSNAP_CACHE_DIR", s.dir.path().join("cache"))
            .args([
                "snapshot",
                "--height",
                "8",
                "--stop-timeout",
                "120",
                "--stop-cmd",
            ])
            .arg(format!("touch '{}'", stopped.display()))
            .arg("--start-cmd")
            .arg(format!("touch '{}'", started.display()))
            .arg("--source")
            .arg(s.source())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !stopped.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "never stopped the node"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: kill takes plain integers.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(code), "{err}");
        assert!(
            err.contains(&format!("interrupted by {name}"))
                && err.contains("start command was run"),
            "{err}"
        );
        assert!(started.exists(), "{name} left the node stopped");
        assert!(
            !s.source().join(".blocksnap-stage").exists(),
            "stage left behind"
        );
        let _ = node.kill();
        let _ = node.wait();
    }
    assert!(json_list(&s).is_empty());
}

/// Issue #9, item 17: the cause of an error used to be printed two or three
/// times (in the message and again from the `source` chain).
#[test]
fn errors_name_their_cause_once() {
    let s = Setup::new();
    // A config with a zstd level no blocksnap writes.
    let config = s.repo().join("config");
    let mut c =
        blocksnap::format::config::RepoConfig::decode(&std::fs::read(&config).unwrap()).unwrap();
    c.zstd_level = 99;
    let damaged = tempfile::tempdir().unwrap();
    std::fs::write(damaged.path().join("config"), c.encode()).unwrap();
    let out = blocksnap(damaged.path()).arg("list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "blocksnap: error: config: corrupt: zstd level 99 out of range\n"
    );

    // A chunk whose bytes changed: the file, the chunk, the object, why.
    let snap = s.snapshot(3);
    // An address that is not one (the cause used to be repeated).
    let out = blocksnap(&s.repo())
        .args(["restore", "latest", "--ip", "10.0.0.300", "--target"])
        .arg(s.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "blocksnap: error: \"10.0.0.300\" is not an IPv4 address (expected four numbers 0-255 like 10.0.0.7)\n"
    );
    let key = snap["key"].as_str().unwrap();
    let manifest =
        blocksnap::format::manifest::Manifest::decode(&std::fs::read(s.repo().join(key)).unwrap())
            .unwrap();
    let (entry, _, _, chunks) = manifest.files().max_by_key(|f| f.1).unwrap();
    let chunk = chunks[0].id.to_hex();
    let object = format!("chunks/{}/{chunk}", &chunk[..2]);
    let path = s.repo().join(&object);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let out = blocksnap(&s.repo())
        .args([
            "restore", "latest", "--ip", "10.0.0.9", "--jobs", "1", "--target",
        ])
        .arg(s.dir.path().join("restored"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "blocksnap: error: {}: chunk {chunk} (at offset 0): {object}: corrupt: ",
        entry.path.replace("CHANGEIP", "10.0.0.9")
    );
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("corrupt: ").count(), 1, "{err}");
}

fn json_list(s: &Setup) -> Vec<serde_json::Value> {
    let out = blocksnap(&s.repo())
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    json(&out.stdout).as_array().cloned().unwrap_or_default()
}

use common::s3server;

/// The whole job through `--repo s3://` and `--endpoint`, with credentials
/// from the standard environment variables as an operator would set them.
#[test]
fn s3_repository_end_to_end_with_request_counts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = s3server::S3Server::s3s_fs(&dir.path().join("s3")) else {
        return;
    };
    let repo = format!("s3://{}/PRep/node-1", s3server::BUCKET);
    let s3 = |args: &[&str]| {
        let mut c = Command::cargo_bin("blocksnap").unwrap();
        c.env_clear()
            .env("HOME", dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", s3server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3server::SECRET_KEY)
            .env("AWS_REGION", "eu-west-1")
            .env("BLOCKSNAP_S3_ENDPOINT", &server.endpoint)
            .env("BLOCKSNAP_REPO", &repo)
            .args(args);
        c
    };
    let source = dir.path().join("node/loopchain");
    let target = dir.path().join("restored/loopchain");
    blocksnap(dir.path())
        .args(["generate", "--size-mib", "3", "--dir"])
        .arg(&source)
        .assert()
        .success();
    s3(&["init"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "created repository {repo}"
        )));
    let out = s3(&["snapshot", "--json", "--height", "10", "--source"])
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = json(&out.stdout);
    let requests = &snap["requests"];
    assert!(
        requests["put"].as_u64().unwrap() > snap["new_chunks"].as_u64().unwrap(),
        "{snap}"
    );
    assert_eq!(requests["retries"], 0);
    s3(&["list"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            snap["id"].as_str().unwrap()[..12].to_string(),
        ));
    let out = s3(&[
        "restore", "latest", "--json", "--ip", "10.9.9.9", "--target",
    ])
    .arg(&target)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = json(&out.stdout);
    assert_eq!(restored["requests"]["put"], 0);
    assert!(
        restored["requests"]["get"].as_u64().unwrap()
            >= restored["chunks_fetched"].as_u64().unwrap()
    );
    assert!(target.join(".storage/db_10.9.9.9:7100_icon_dex").is_dir());
    s3(&["verify", "all", "--full"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("OK: 0 problem(s)"));

    // s3s-fs checks signatures: unsigned requests are refused, and the
    // message says what to check.
    s3(&["list", "--anonymous"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("403").and(predicate::str::contains("credentials")));
    // Writing needs credentials; none is a clear error, not an unsigned try.
    s3(&["snapshot", "--height", "11", "--source"])
        .arg(&source)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no AWS credentials found"));
    s3(&["list"])
        .env("BLOCKSNAP_REPO", "s3://Bad_Bucket/x")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bucket names"));
}

#[test]
fn verify_dir_and_diff_and_a_rotating_subset_from_the_command_line() {
    let s = Setup::new();
    s.snapshot(10);
    blocksnap(&s.repo())
        .args(["generate", "--blocks", "100", "--dir"])
        .arg(s.source())
        .assert()
        .success();
    s.snapshot(110);

    // The stopped node's directory is the latest snapshot.
    blocksnap(&s.repo())
        .args(["verify", "latest", "--ip", "10.0.0.7", "--dir"])
        .arg(s.source())
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("SAME: 0 difference(s)"));
    // …and not the first one: one line per difference, exit code 3.
    let out = blocksnap(&s.repo())
        .args(["verify", "10", "--ip", "10.0.0.7", "--dir"])
        .arg(s.source())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("DIFFERENT: "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("changed: .storage/db_10.0.0.7:7100_icon_dex/")),
        "{text}"
    );
    // Normalised paths need the IP.
    blocksnap(&s.repo())
        .args(["verify", "latest", "--dir"])
        .arg(s.source())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--ip"));

    // diff: text and JSON agree.
    let text = blocksnap(&s.repo())
        .args(["diff", "10", "110"])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.lines().any(|l| l.starts_with("M .storage/")), "{text}");
    let j = json(
        &blocksnap(&s.repo())
            .args(["diff", "10", "latest", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(j["new_chunks"].as_u64().unwrap() > 0);
    let summary = text.lines().last().unwrap();
    assert!(
        summary.contains(&format!("{} new chunks", j["new_chunks"])),
        "{summary}"
    );
    blocksnap(&s.repo())
        .args(["diff", "10", "all"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("takes one snapshot"));

    // Three slices read everything; the report says how much each covered.
    let mut covered = 0.0;
    for i in 1..=3 {
        let v = json(
            &blocksnap(&s.repo())
                .args(["verify", "all", "--full", "--json", "--subset"])
                .arg(format!("{i}/3"))
                .output()
                .unwrap()
                .stdout,
        );
        assert_eq!(v["ok"], true);
        assert_eq!(v["subset"], format!("{i}/3"));
        assert!(
            v["chain"]["links"].as_u64().unwrap() >= 1,
            "chain is on with all"
        );
        covered += v["coverage"].as_f64().unwrap();
    }
    // Shares of one whole: they add up to 1 within rounding.
    assert!((covered - 1.0).abs() < 1e-9, "{covered}");
    let out = blocksnap(&s.repo())
        .args(["verify", "all", "--full", "--subset", "40%"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("subset 40% (seed "),
        "{text}"
    );
    blocksnap(&s.repo())
        .args(["verify", "all", "--subset", "2/3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--full"));
    blocksnap(&s.repo())
        .args(["verify", "all", "--full", "--subset", "4/3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("I must be 1..=N"));
}

/// A Python that has the Prometheus project's client library, whose text
/// format parser checks the metrics file. CI installs it (`.ci/run`); a
/// developer without it skips this test, CI never does.
fn prometheus_python() -> Option<String> {
    let python = std::env::var("BLOCKSNAP_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs the prometheus_client Python package (set BLOCKSNAP_PYTHON)"
    );
    eprintln!("skipped: no Python with prometheus_client");
    None
}

#[test]
fn metrics_files_parse_as_prometheus_text_and_keep_the_last_success() {
    let Some(python) = prometheus_python() else {
        return;
    };
    let s = Setup::new();
    let prom = s.dir.path().join("textfile/blocksnap.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    blocksnap(&s.repo())
        .args(["snapshot", "--height", "5", "--source"])
        .arg(s.source())
        .arg("--metrics-file")
        .arg(&prom)
        .assert()
        .success();
    blocksnap(&s.repo())
        .args(["verify", "all", "--full", "--metrics-file"])
        .arg(&prom)
        .assert()
        .success();
    // A failed snapshot of the same source keeps the last success time.
    blocksnap(&s.repo())
        .args(["snapshot", "--height-cmd", "exit 7", "--source"])
        .arg(s.source())
        .arg("--metrics-file")
        .arg(&prom)
        .assert()
        .code(1);
    let target = s.dir.path().join("restored");
    blocksnap(&s.repo())
        .args(["restore", "latest", "--ip", "10.0.0.9", "--target"])
        .arg(&target)
        .arg("--metrics-file")
        .arg(&prom)
        .assert()
        .success();
    let parse = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        key = "|".join([s.name, s.labels.get("command", ""), s.labels.get("kind", ""),
                        "source" if "source" in s.labels else ""])
        out[key] = s.value
print(json.dumps(out))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", parse])
        .arg(&prom)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the parser refused the file: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&prom).unwrap()
    );
    let m = json(&out.stdout);
    let get = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("no sample {k} in {m:#}"))
    };
    let snap_ok = get("blocksnap_last_success_timestamp_seconds|snapshot||source");
    let snap_run = get("blocksnap_last_run_timestamp_seconds|snapshot||source");
    assert!(snap_run >= snap_ok && snap_ok > 1.7e9, "{m:#}");
    assert_eq!(get("blocksnap_last_run_success|snapshot||source"), 0.0);
    assert_eq!(get("blocksnap_last_run_success|verify||"), 1.0);
    assert_eq!(get("blocksnap_problems|verify|missing|"), 0.0);
    assert_eq!(get("blocksnap_problems|verify|fork|"), 0.0);
    assert!(get("blocksnap_chunks|verify||") > 0.0);
    assert!(get("blocksnap_requests|verify|get|") > 0.0);
    assert_eq!(get("blocksnap_height|restore||source"), 5.0);
    assert!(get("blocksnap_bytes_read|restore||source") > 1e6);
    // The failed snapshot replaced its own figures, not the others'.
    assert!(
        m.get("blocksnap_bytes_new|snapshot||source").is_none(),
        "{m:#}"
    );
    assert!(get("blocksnap_bytes_read|verify||") > 0.0);
    // Readable by node_exporter running as another user.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

/// Keys, signing and --trust through the binary: the secret key is 0600
/// and never printed, a signed snapshot restores with --trust, an untrusted
/// one is refused naming the snapshot and the keys (nothing written), and
/// the `minisign` tool accepts the signature of a downloaded manifest.
#[test]
fn signed_snapshots_restore_only_with_a_trusted_key() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let key = s.dir.path().join("publisher.key");
    let out = blocksnap(&s.repo())
        .args(["key", "generate", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let secret_line = secret.lines().nth(1).unwrap();
    assert!(!shown.contains(secret_line), "the secret key was printed");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = s.dir.path().join("publisher.key.pub");
    let line = std::fs::read_to_string(&public)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(shown.contains(&line));
    // Never replaced.
    blocksnap(&s.repo())
        .args(["key", "generate", "--out"])
        .arg(&key)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("publisher.key"));

    // An encrypted key needs its passphrase, and says so before anything
    // is read.
    let locked = s.dir.path().join("locked.key");
    blocksnap(&s.repo())
        .env("BLOCKSNAP_KEY_PASSPHRASE", "correct horse")
        .args(["key", "generate", "--encrypt", "--out"])
        .arg(&locked)
        .assert()
        .success();
    blocksnap(&s.repo())
        .env_remove("BLOCKSNAP_KEY_PASSPHRASE")
        .args(["snapshot", "--height", "5", "--sign"])
        .arg(&locked)
        .arg("--source")
        .arg(s.source())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("BLOCKSNAP_KEY_PASSPHRASE"));
    assert!(json_list(&s).is_empty());
    blocksnap(&s.repo())
        .env("BLOCKSNAP_KEY_PASSPHRASE", "correct horse")
        .args(["snapshot", "--height", "5", "--sign"])
        .arg(&locked)
        .arg("--source")
        .arg(s.source())
        .assert()
        .success();

    let signed = blocksnap(&s.repo())
        .args(["snapshot", "--json", "--height", "10", "--sign"])
        .arg(&key)
        .arg("--source")
        .arg(s.source())
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let signed = json(&signed.stdout);
    s.snapshot(11); // newer, unsigned
    let kid = shown
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':');
    blocksnap(&s.repo())
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("signed by {kid}")));

    let target = s.dir.path().join("restored");
    blocksnap(&s.repo())
        .args(["restore", "latest", "--ip", "10.0.0.9", "--trust"])
        .arg(&public)
        .arg("--target")
        .arg(&target)
        .assert()
        .success()
        .stdout(predicate::str::contains("(height 10)"));
    let refused_target = s.dir.path().join("refused");
    blocksnap(&s.repo())
        .args([
            "restore", "11", "--ip", "10.0.0.9", "--trust", &line, "--target",
        ])
        .arg(&refused_target)
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no snapshot at height 11 is signed by a trusted key")
                .and(predicate::str::contains(kid)),
        );
    assert!(!refused_target.exists());
    blocksnap(&s.repo())
        .args(["verify", "all", "--trust", &line])
        .assert()
        .code(3)
        .stdout(
            predicate::str::contains("untrusted").and(predicate::str::contains("it is not signed")),
        );

    // The minisign tool checks a downloaded manifest by itself.
    let Ok(minisign) = which_minisign() else {
        assert!(std::env::var_os("CI").is_none(), "CI installs minisign");
        eprintln!("minisign not installed: its check is not exercised here");
        return;
    };
    let id = signed["key"]
        .as_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .to_string();
    let manifest = s.repo().join(signed["key"].as_str().unwrap());
    let sig = s.repo().join(format!("signatures/{id}/{kid}"));
    let ok = std::process::Command::new(minisign)
        .arg("-Vm")
        .arg(&manifest)
        .arg("-x")
        .arg(&sig)
        .arg("-p")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&id));
}

fn which_minisign() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("minisign"))
        .find(|p| p.is_file())
        .ok_or(())
}

/// --quiet prints nothing but errors (and verify's problems); -v/-vv log
/// steps and decisions to stderr; without them stderr stays empty.
#[test]
fn quiet_and_verbose() {
    let s = Setup::new();
    let run = |flags: &[&str], height: &str| {
        blocksnap(&s.repo())
            .args(flags)
            .args(["snapshot", "--height", height, "--source"])
            .arg(s.source())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let quiet = run(&["-q"], "1");
    assert!(quiet.status.success());
    assert!(
        quiet.stdout.is_empty() && quiet.stderr.is_empty(),
        "{quiet:?}"
    );
    let plain = run(&[], "2");
    assert!(!plain.stdout.is_empty());
    assert!(
        plain.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let loud = run(&["-vv"], "3");
    let log = String::from_utf8_lossy(&loud.stderr);
    assert!(loud.status.success());
    assert!(
        log.contains("chunk index") && log.contains("DEBUG"),
        "{log}"
    );
    assert_eq!(
        String::from_utf8_lossy(&loud.stdout).lines().count(),
        String::from_utf8_lossy(&plain.stdout).lines().count()
    );
    // Quiet verify still prints a problem.
    let chunk = walkdir::WalkDir::new(s.repo().join("chunks"))
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.file_type().is_file())
        .unwrap();
    std::fs::remove_file(chunk.path()).unwrap();
    let v = blocksnap(&s.repo())
        .args(["verify", "all", "-q"])
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(3));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(out.starts_with("missing"), "{out}");
    assert!(!out.contains("problem(s)"), "{out}");
}

/// `stats` counts what is on disk: every object and byte of a local
/// repository, by kind; the bytes only one snapshot holds; and what prune
/// would reclaim after a forget.
#[test]
fn stats_match_the_repository_on_disk() {
    let s = Setup::new();
    s.snapshot(1);
    blocksnap(&s.repo())
        .args(["generate", "--ip", "10.0.0.7", "--blocks", "300", "--dir"])
        .arg(s.source())
        .assert()
        .success();
    s.snapshot(2);
    let stats = |s: &Setup| {
        let out = blocksnap(&s.repo())
            .args(["stats", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out.stdout)
    };
    let du = |dir: &std::path::Path| -> (u64, u64) {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .fold((0, 0), |(n, b), e| (n + 1, b + e.metadata().unwrap().len()))
    };
    let st = stats(&s);
    let (n, bytes) = du(&s.repo());
    assert_eq!(st["total"]["count"], n);
    assert_eq!(st["total"]["bytes"], bytes);
    let (cn, cb) = du(&s.repo().join("chunks"));
    assert_eq!(st["by_kind"]["chunks"]["count"], cn);
    assert_eq!(st["by_kind"]["chunks"]["bytes"], cb);
    assert_eq!(st["referenced"]["bytes"], cb);
    assert_eq!(st["unreferenced"]["count"], 0);
    let snaps = st["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    let first_only = snaps[0]["unique_stored_bytes"].as_u64().unwrap();
    assert!(first_only > 0 && first_only < cb);
    assert!(st["dedup_ratio"].as_f64().unwrap() > 1.0);

    // Forget the first: its own bytes become unreferenced, exactly.
    blocksnap(&s.repo())
        .args(["forget", "1"])
        .assert()
        .success();
    let after = stats(&s);
    assert_eq!(after["unreferenced"]["bytes"].as_u64().unwrap(), first_only);
    blocksnap(&s.repo())
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains("prune reclaims them"));
}

/// `copy` through the binary: creates the destination with the source's
/// settings, copies, and a second run (or a dry run) finds nothing to do.
#[test]
fn copy_to_another_repository() {
    let s = Setup::new();
    s.snapshot(1);
    s.snapshot(2);
    let dest = s.dir.path().join("tier2");
    let out = blocksnap(&s.repo())
        .args(["copy", "all", "--json", "--to"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out.stdout);
    assert_eq!(r["copied"].as_array().unwrap().len(), 2);
    assert!(r["chunks_copied"].as_u64().unwrap() > 0);
    assert_eq!(r["config_differs"], false);
    blocksnap(&s.repo())
        .args(["copy", "latest", "--dry-run", "--to"])
        .arg(&dest)
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "would copy 0 snapshot(s) (1 already there): 0 chunks",
        ));
    blocksnap(&dest)
        .args(["verify", "all", "--full"])
        .assert()
        .code(0);
    let listed = |repo: &std::path::Path| {
        let out = blocksnap(repo).args(["list", "--json"]).output().unwrap();
        json(&out.stdout)
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["key"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&dest), listed(&s.repo()));
}

/// `--priority auto` keeps the node's downtime at full speed and yields
/// once the node runs again; `--limit-upload`/`--limit-download` pace the
/// bytes; a bad rate is refused.
#[test]
fn priority_is_lowered_once_the_node_runs_and_bandwidth_is_limited() {
    let s = Setup::new();
    let nice_file = s.dir.path().join("start-nice");
    // Field 19 of /proc/PID/stat is the nice value of the start command,
    // which blocksnap runs before it lowers itself.
    let start = format!(
        "awk '{{print $19}}' /proc/self/stat > {}",
        nice_file.display()
    );
    let staged = |priority: &str, height: &str| {
        blocksnap(&s.repo())
            .args(["-v", "snapshot", "--height", height, "--priority", priority])
            .args(["--stop-cmd", "true", "--start-cmd", &start, "--source"])
            .arg(s.source())
            .output()
            .unwrap()
    };
    let out = staged("auto", "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("running at low priority (nice 19"), "{err}");
    assert_eq!(std::fs::read_to_string(&nice_file).unwrap().trim(), "0");
    let down = err.find("node down for").expect("downtime logged");
    assert!(down < err.find("running at low priority").unwrap(), "{err}");

    let out = staged("normal", "2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("low priority"), "{err}");
    // A stopped node's snapshot (no --allow-live) runs at full speed.
    let out = blocksnap(&s.repo())
        .args(["-v", "snapshot", "--height", "3", "--source"])
        .arg(s.source())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("low priority"));

    // Pacing: a new repository, so every chunk is uploaded again.
    let repo = s.dir.path().join("repo2");
    blocksnap(&repo).arg("init").assert().success();
    let started = std::time::Instant::now();
    let out = blocksnap(&repo)
        .args([
            "snapshot",
            "--json",
            "--limit-upload",
            "1MiB",
            "--height",
            "4",
        ])
        .args(["--no-cache", "--source"])
        .arg(s.source())
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = json(&out.stdout)["new_stored_bytes"].as_u64().unwrap();
    // Everything beyond the quarter-second burst at 1 MiB/s (a lower
    // bound only: a loaded machine may take longer).
    let least = (stored as f64 - (256 << 10) as f64) / (1 << 20) as f64;
    assert!(
        least > 0.5,
        "only {stored} bytes stored: the test shows nothing"
    );
    assert!(took >= least, "{stored} bytes at 1 MiB/s in {took:.2} s");

    let target = s.dir.path().join("restored");
    let started = std::time::Instant::now();
    blocksnap(&repo)
        .args([
            "restore",
            "latest",
            "--ip",
            "10.0.0.7",
            "--limit-download",
            "2MiB",
        ])
        .arg("--target")
        .arg(&target)
        .assert()
        .success();
    let took = started.elapsed().as_secs_f64();
    let least = (stored as f64 - (512 << 10) as f64) / (2 << 20) as f64;
    assert!(took >= least, "{stored} bytes at 2 MiB/s in {took:.2} s");

    blocksnap(&repo)
        .args(["list", "--limit-download", "fast"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\"fast\" is not a rate"));
}

/// `dump` (issue #24): to a new file, refused over an existing one, to a
/// pipe; a damaged repository leaves no file and exits 1.
#[test]
fn dump_writes_a_new_archive_or_a_stream_and_nothing_on_damage() {
    let s = Setup::new();
    s.snapshot(5);
    let file = s.dir.path().join("node.tar.gz");
    let run = |args: &[&str]| {
        let mut c = blocksnap(&s.repo());
        c.args(["dump", "latest", "--ip", "10.0.0.9"]).args(args);
        c
    };
    run(&["--format", "tar.gz", "-o"])
        .arg(&file)
        .assert()
        .success()
        .stderr(predicate::str::contains("blocksnap: dumped snapshots/"));
    let list = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(list.status.success());
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names.contains(".storage/db_10.0.0.9:7100_icon_dex/"),
        "{names}"
    );
    run(&["--format", "tar.gz", "-o"])
        .arg(&file)
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("exists"));
    // To standard output, as `blocksnap dump … -o - | tar -x` reads it.
    let out = run(&["-o", "-"]).output().unwrap();
    assert!(out.status.success());
    let dir = s.dir.path().join("x");
    std::fs::create_dir_all(&dir).unwrap();
    let mut tar = std::process::Command::new("tar")
        .args(["-x", "-f", "-"])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &out.stdout).unwrap();
    drop(tar.stdin.take());
    assert!(tar.wait().unwrap().success());
    assert!(dir.join(".storage/db_10.0.0.9:7100_icon_dex").is_dir());
    // Damage: no archive is left that could pass for one.
    let chunks = walkdir::WalkDir::new(s.repo().join("chunks"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .collect::<Vec<_>>();
    std::fs::remove_file(&chunks[chunks.len() / 2]).unwrap();
    let broken = s.dir.path().join("broken.tar");
    run(&["-o"])
        .arg(&broken)
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("missing object chunks/"));
    assert!(!broken.exists());
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".blocksnap-dump-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The old script's archive of a node directory (`.score_data` and
/// `.storage`, the block database's directory renamed to CHANGEIP).
fn old_script_archive(root: &Path, out: &Path) {
    let st = std::process::Command::new("tar")
        .arg("-zcf")
        .arg(out)
        .arg("--xform=s|.storage/db_10.0.0.7:7100_icon_dex|.storage/db_CHANGEIP:7100_icon_dex|")
        .args([".score_data", ".storage"])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn import_the_old_scripts_archives_from_a_directory_and_from_s3() {
    let s = Setup::new();
    let archives = s.dir.path().join("Backup");
    std::fs::create_dir_all(&archives).unwrap();
    let first = archives.join("PRep_BH10_data-20240101_0000.tar.gz");
    old_script_archive(&s.source(), &first);
    common::advance(&s.source(), 50);
    let second = archives.join("PRep_BH60_data-20240102_0000.tar.gz");
    old_script_archive(&s.source(), &second);
    std::fs::write(archives.join("backup_list"), "not an archive\n").unwrap();

    let out = blocksnap(&s.repo())
        .args(["import", "--json", "--host", "prep-1", "--tar"])
        .arg(&archives)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = json(&out.stdout);
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["height"], 10);
    assert_eq!(reports[1]["height"], 60);
    // The second archive shares most of its tables with the first.
    let new = |i: usize| reports[i]["new_stored_bytes"].as_u64().unwrap();
    assert!(new(1) < new(0), "{reports:?}");
    // Re-run: nothing to do.
    blocksnap(&s.repo())
        .args(["import", "--host", "prep-1", "--tar"])
        .arg(&archives)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "height 60 is imported already; skipped",
        ));
    // The imported history continues into the node's own snapshots: its
    // first snapshot stores only what changed since the last archive.
    let out = blocksnap(&s.repo())
        .args(["snapshot", "--json", "--host", "prep-1", "--height", "61"])
        .args(["--include", ".score_data", "--include", ".storage"])
        .args(["--source"])
        .arg(s.source())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out.stdout)["new_chunks"], 0);
    // One archive without a name to read: --height and --time are needed.
    blocksnap(&s.repo())
        .args(["import", "--tar", "-"])
        .write_stdin(std::fs::read(&first).unwrap())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no --height given"));

    // From a bucket, read a range at a time.
    let Some(server) = s3server::S3Server::s3s_fs(&s.dir.path().join("s3")) else {
        return;
    };
    let bucket = blocksnap_s3::S3Store::open(&blocksnap_s3::S3Options {
        bucket: s3server::BUCKET.into(),
        prefix: "icon-leveldb-backup/PRep/20240102/".into(),
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        auth: blocksnap_s3::Auth::Required,
        credentials: Some((s3server::ACCESS_KEY.into(), s3server::SECRET_KEY.into())),
        ..Default::default()
    })
    .unwrap();
    use blocksnap::store::Store;
    let name = "PRep_BH60_data-20240102_0000.tar.gz";
    assert!(bucket
        .put_if_absent(name, &std::fs::read(&second).unwrap())
        .unwrap());
    let other = s.dir.path().join("repo2");
    blocksnap(&other).arg("init").assert().success();
    let out = blocksnap(&other)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", s3server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3server::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("BLOCKSNAP_S3_ENDPOINT", &server.endpoint)
        .args(["import", "--json", "--host", "prep-1", "--tar"])
        .arg(format!(
            "s3://{}/icon-leveldb-backup/PRep/20240102/{name}",
            s3server::BUCKET
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_s3 = json(&out.stdout);
    assert_eq!(from_s3[0]["height"], 60);
    assert_eq!(from_s3[0]["files"], reports[1]["files"]);
    assert_eq!(from_s3[0]["logical_bytes"], reports[1]["logical_bytes"]);
}

#[test]
fn a_static_mirror_restores_lists_and_refuses_writes_and_the_site_page_is_written() {
    let s = Setup::new();
    s.snapshot(5);
    let Some(web) = common::webserver::WebServer::serve(&s.repo()) else {
        return;
    };
    // Before the index is published: a clear message, exit 1.
    blocksnap(&s.repo())
        .env("BLOCKSNAP_REPO", &web.url)
        .arg("list")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("publishes no index")
                .and(predicate::str::contains("blocksnap index")),
        );
    blocksnap(&s.repo())
        .args(["site", "--url", &web.url])
        .assert()
        .success()
        .stdout(predicate::str::contains("index.html: 1 snapshots"));
    // A writer keeps it current: the second snapshot is listed by the mirror.
    s.snapshot(6);
    let mirror = |args: &[&str]| {
        let mut c = blocksnap(&s.repo());
        c.env("BLOCKSNAP_REPO", &web.url).args(args);
        c
    };
    mirror(&["list"]).assert().success().stdout(
        predicate::str::contains("mirror index written")
            .and(predicate::str::contains("unsigned"))
            .and(predicate::str::is_match(r"(?m)^\s+6\s").unwrap()),
    );
    let target = s.dir.path().join("restored");
    mirror(&["restore", "latest", "--ip", "10.0.0.9", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert!(target.join(".storage/db_10.0.0.9:7100_icon_dex").is_dir());
    mirror(&["verify", "all"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("OK: 0 problem(s)"));
    mirror(&["snapshot", "--height", "7", "--source"])
        .arg(s.source())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("read-only mirror"));
    let page = std::fs::read_to_string(s.repo().join("index.html")).unwrap();
    assert!(
        page.contains(&format!("blocksnap restore --repo {}", web.url)),
        "{page}"
    );
}

#[test]
fn a_goloop_node_is_snapshotted_through_its_admin_socket_at_the_height_its_database_holds() {
    let Some(gen) = common::goloopgen() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("goloop/data");
    let (height, hash) = common::goloop_grow(&gen, &node, 400, &[]);
    let repo = dir.path().join("repo");
    blocksnap(&repo).arg("init").assert().success();
    let goloop = common::goloopadmin::FakeGoloop::start(
        &node.join("cli.sock"),
        &node.join("1/db/1"),
        height as i64,
    );
    // The database is open: a plain snapshot is refused.
    blocksnap(&repo)
        .args(["snapshot", "--source"])
        .arg(&node)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("open"));
    let out = blocksnap(&repo)
        .args(["snapshot", "--json", "--stop-timeout", "20", "--source"])
        .arg(&node)
        .arg("--goloop-admin")
        .arg(&goloop.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = json(&out.stdout);
    assert_eq!(snap["height"], height);
    assert_eq!(snap["chain_head"]["hash"], hash.as_str());
    assert!(snap["stage"]["downtime"].as_f64().unwrap() > 0.0, "{snap}");
    // The chain went through stop, manual backup, stop, start — and runs.
    let calls: Vec<String> = goloop
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("POST"))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /chain/0x1/stop",
            "POST /chain/0x1/backup",
            "POST /chain/0x1/stop",
            "POST /chain/0x1/start"
        ]
    );
    assert_eq!(goloop.state(), "started");
    assert!(goloop.db_open());
    blocksnap(&repo)
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("block {}", &hash[..16])));
    // Restored, the consensus log is left empty, and the message says why.
    let target = dir.path().join("restored");
    blocksnap(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .assert()
        .success()
        .stderr(predicate::str::contains("1/wal/ left empty"));
    assert!(target.join("1/db/1/CURRENT").is_file());
    assert!(std::fs::read_dir(target.join("1/wal"))
        .unwrap()
        .next()
        .is_none());
}
