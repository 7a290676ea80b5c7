//! The goloop profile (issue #23, part): a snapshot of goloop's node
//! directory takes each chain's config, genesis, database, contracts and
//! consensus log, never its cache, temp database, sockets, admin users or
//! runtime config; a restore leaves the consensus log empty unless told.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::fsx::DirFd;
use blocksnap::profile::{self, Profile};
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::MemoryStore;
use blocksnap::Repository;

/// goloop's node directory as icon2-docker lays it out, with what must
/// never be taken beside what must.
fn node_dir(root: &Path) {
    let chain = root.join("1");
    for d in [
        "db/1",
        "wal",
        "contract/0x0a1b",
        "cache",
        "tmp/x",
        ".restore-1/1",
    ] {
        fs::create_dir_all(chain.join(d)).unwrap();
    }
    fs::create_dir_all(root.join(".restore123")).unwrap();
    let write = |p: &str, b: &[u8]| fs::write(root.join(p), b).unwrap();
    write(
        "1/config.json",
        br#"{"nid":"0x1","db_type":"goleveldb","platform":"icon","channel":"icon_dex"}"#,
    );
    write("1/genesis.zip", b"PK\x05\x06genesis");
    write("1/block_v1_proof.bin", &[7u8; 4096]);
    for (name, len) in [
        ("000005.ldb", 300_000),
        ("000007.ldb", 200_000),
        ("000008.log", 9_000),
    ] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        write(&format!("1/db/1/{name}"), &bytes);
    }
    write("1/db/1/CURRENT", b"MANIFEST-000006\n");
    write("1/db/1/MANIFEST-000006", b"manifest");
    write("1/wal/round_0", b"round state of another node");
    write("1/wal/lock_0", b"locked block");
    write("1/wal/commit_0", b"commit votes");
    write("1/contract/0x0a1b/score.py", b"class Score: pass\n");
    write("1/cache/000123", b"trie cache");
    write("1/tmp/x/temp.ldb", b"temporary");
    write("auth.json", br#"{"users":["node admin"]}"#);
    write("rconfig.json", br#"{"rpcIncludeDebug":true}"#);
    write(".restore123/partial", b"left by an interrupted restore");
    // The admin socket, a real one.
    let _socket = std::os::unix::net::UnixListener::bind(root.join("cli.sock")).unwrap();
}

fn files(root: &Path) -> BTreeMap<String, common::Node> {
    common::describe(root, None)
}

#[test]
fn goloop_is_told_from_the_node_directory_and_takes_what_a_chain_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("goloop/data");
    node_dir(&node);
    let dir = DirFd::open(&node).unwrap();
    let s = profile::settle(&dir, None).unwrap();
    assert_eq!(s.profile, Profile::Goloop);
    assert!(s.why.contains("chain directory 1/"), "{}", s.why);
    assert_eq!(
        s.includes,
        [
            "1/config.json",
            "1/genesis.zip",
            "1/block_v1_proof.bin",
            "1/db",
            "1/contract",
            "1/wal"
        ]
    );
    // A chain directory itself.
    let chain = profile::settle(&DirFd::open(&node.join("1")).unwrap(), None).unwrap();
    assert_eq!(chain.profile, Profile::Goloop);
    assert_eq!(chain.includes[0], "config.json");
    // An ICON 1 directory is icon1, and refused as goloop.
    let icon1 = common::node(tmp.path(), 1);
    let d = DirFd::open(&icon1).unwrap();
    assert_eq!(profile::settle(&d, None).unwrap().profile, Profile::Icon1);
    let e = profile::settle(&d, Some(Profile::Goloop))
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither goloop's node directory"), "{e}");
}

#[test]
fn a_restore_leaves_the_consensus_log_empty_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("goloop/data");
    node_dir(&node);
    let repo = Repository::init(Arc::new(MemoryStore::new()), DEFAULT_PARAMS, 1).unwrap();
    let mut opts = SnapshotOptions {
        source: node.clone(),
        height: 80_000_000,
        ..Default::default()
    };
    opts.includes = snapshot::settle_profile(&opts, None).unwrap().includes;
    let key = snapshot::snapshot(&repo, &opts, &Silent).unwrap().key;
    let m = repo.load_manifest(&key).unwrap();
    let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    for never in [
        "cache",
        "tmp",
        "auth.json",
        "rconfig.json",
        "cli.sock",
        ".restore",
    ] {
        assert!(
            !paths.iter().any(|p| p.contains(never)),
            "{never} taken: {paths:?}"
        );
    }
    assert!(paths.contains(&"1/wal/round_0"), "{paths:?}");
    assert_eq!(profile::consensus_wals(&m), ["1/wal"]);
    // (The tree's description below reads every file; a socket is none.)
    fs::remove_file(node.join("cli.sock")).unwrap();

    let restore_to = |target: &Path, with_consensus_wal: bool| {
        let ropts = RestoreOptions {
            target: target.to_path_buf(),
            with_consensus_wal,
            ..Default::default()
        };
        let plan = restore::plan(&repo, &key, &ropts).unwrap();
        let withheld = plan.withheld_wals.clone();
        restore::restore(&repo, &plan, &ropts, &Silent).unwrap();
        withheld
    };
    let target = tmp.path().join("restored");
    assert_eq!(restore_to(&target, false), ["1/wal"]);
    let got = files(&target);
    let mut want = files(&node);
    want.retain(|k, _| {
        !(k.starts_with("1/cache")
            || k.starts_with("1/tmp")
            || k.starts_with("1/.restore")
            || k.starts_with(".restore")
            || ["auth.json", "rconfig.json", "cli.sock"].contains(&k.as_str()))
    });
    let without_wal: BTreeMap<_, _> = want
        .iter()
        .filter(|(k, _)| !k.starts_with("1/wal/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut got_dirs_only = got.clone();
    // The log's directory is there, empty (its time is the restore's).
    assert!(fs::read_dir(target.join("1/wal")).unwrap().next().is_none());
    got_dirs_only.remove("1/wal");
    let mut want_no_wal_dir = without_wal.clone();
    want_no_wal_dir.remove("1/wal");
    assert_eq!(got_dirs_only, want_no_wal_dir);

    // Told: the whole chain, log included.
    let told = tmp.path().join("told");
    assert!(restore_to(&told, true).is_empty());
    assert_eq!(files(&told), want);
}

/// Every file of a directory with its bytes' hash, size and mtime.
fn exact(dir: &Path) -> BTreeMap<String, (blake3::Hash, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let h = blake3::hash(&fs::read(e.path()).unwrap());
            (
                e.file_name().to_string_lossy().into_owned(),
                (h, m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
            )
        })
        .collect()
}

#[test]
fn the_height_and_hash_come_from_goleveldb_itself_and_nothing_is_written() {
    let Some(gen) = common::goloopgen() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("data");
    common::goloop_grow(&gen, &node, 300, &[]);
    // The tail of the data in the journal only (as goleveldb leaves it on
    // close), beside tables.
    let (height, hash) = common::goloop_grow(&gen, &node, 200, &[]);
    assert_eq!(height, 500);
    let db = node.join("1/db/1");
    let before = exact(&db);
    assert!(before.keys().any(|n| n.ends_with(".log")), "{before:?}");
    let head = profile::goloop::last_block(DirFd::open(&db).unwrap(), &db).unwrap();
    assert_eq!(head.height, 500);
    assert_eq!(hex::encode(head.hash), hash);
    assert_eq!(head.version, 2);
    assert_eq!(exact(&db), before, "the reader wrote to the database");

    // A snapshot takes its height from there; a node report that disagrees
    // is refused, one that agrees is fine.
    let repo = Repository::init(Arc::new(MemoryStore::new()), DEFAULT_PARAMS, 1).unwrap();
    let mut opts = SnapshotOptions {
        source: node.clone(),
        height_from_db: true,
        ..Default::default()
    };
    opts.includes = snapshot::settle_profile(&opts, None).unwrap().includes;
    let r = snapshot::snapshot(&repo, &opts, &Silent).unwrap();
    assert_eq!(r.key.height, 500);
    assert_eq!(r.chain_head, Some(head));
    // The manifest records the block (format version 3).
    let m = repo.load_manifest(&r.key).unwrap();
    assert_eq!(m.block.map(|b| b.0), Some(head.hash));
    assert_eq!(m.version(), 3);
    let listed = blocksnap::list::list(&repo, None, None).unwrap();
    assert_eq!(
        listed[0].info.as_ref().unwrap().block.as_deref(),
        Some(hash.as_str())
    );
    let e = snapshot::snapshot(
        &repo,
        &SnapshotOptions {
            height: 499,
            ..opts.clone()
        },
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("reported height 499") && e.contains("last block is 500"),
        "{e}"
    );
    assert_eq!(repo.snapshots().unwrap().len(), 1);
    assert_eq!(exact(&db), before, "the snapshot wrote to the database");

    // A database whose last height names no block: not at a boundary.
    common::goloop_grow(&gen, &node, 0, &["-torn"]);
    let e = snapshot::snapshot(&repo, &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not at a block boundary") && e.contains("501"),
        "{e}"
    );
    assert_eq!(repo.snapshots().unwrap().len(), 1);
}
