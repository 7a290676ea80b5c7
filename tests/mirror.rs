//! Static mirrors (issue #24): a repository served by a real web server
//! (Python's `http.server`), read with plain GET and HEAD through the index
//! the repository publishes — list, restore, verify, diff, dump and copy —
//! with a fault-injecting proxy in front; writers keep the index current;
//! a stale index is reported, never followed into a missing object.

mod common;

use std::path::Path;
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::copy::{self, CopyOptions};
use blocksnap::dump::{self, Compression, DumpOptions};
use blocksnap::forget::{self, ForgetOptions};
use blocksnap::format::index::INDEX_KEY;
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::progress::Silent;
use blocksnap::prune::{self, PruneOptions};
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::http::HttpStore;
use blocksnap::store::{LocalStore, MemoryStore, Store};
use blocksnap::verify::{self, Level};
use blocksnap::{Repository, Selector};
use common::faultproxy::FaultProxy;
use common::webserver::WebServer;
use common::NODE_IP;

struct Lab {
    tmp: tempfile::TempDir,
    repo: Repository,
    source: std::path::PathBuf,
    keys: Vec<SnapshotKey>,
}

/// A local repository with two snapshots of a growing node, its index
/// published.
fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    let repo = Repository::init(Arc::new(LocalStore::open(&dir)), DEFAULT_PARAMS, 1).unwrap();
    let source = common::node(tmp.path(), 3);
    let mut keys = Vec::new();
    for height in [10, 20] {
        let opts = SnapshotOptions {
            source: source.clone(),
            height,
            host: "prep".into(),
            ..Default::default()
        };
        keys.push(snapshot::snapshot(&repo, &opts, &Silent).unwrap().key);
        common::advance(&source, 30);
    }
    repo.publish_index().unwrap();
    Lab {
        tmp,
        repo,
        source,
        keys,
    }
}

fn mirror(url: &str) -> Repository {
    let store = HttpStore::open(url, 8)
        .unwrap()
        .with_backoff(std::time::Duration::from_millis(5));
    Repository::open(Arc::new(store)).unwrap()
}

fn restore_to(repo: &Repository, key: &SnapshotKey, target: &Path) -> blocksnap::Result<()> {
    let ropts = RestoreOptions {
        target: target.to_path_buf(),
        ip: Some(NODE_IP.to_string()),
        ..Default::default()
    };
    let plan = restore::plan(repo, key, &ropts)?;
    restore::restore(repo, &plan, &ropts, &Silent).map(|_| ())
}

fn dump_of(repo: &Repository, key: &SnapshotKey) -> Vec<u8> {
    let opts = DumpOptions {
        ip: Some(NODE_IP),
        compression: Compression::None,
        jobs: 4,
        keep_special_modes: false,
    };
    let mut out = Vec::new();
    dump::dump(repo, key, &opts, &mut out, &Silent).unwrap();
    out
}

#[test]
fn a_mirror_serves_list_restore_verify_diff_dump_and_copy() {
    let lab = lab();
    let Some(web) = WebServer::serve(&lab.tmp.path().join("repo")) else {
        return;
    };
    let m = mirror(&web.url);
    assert_eq!(m.snapshots().unwrap(), lab.keys);
    assert!(!m.store().lists_chunks());

    // Restore: the tree as the local repository restores it.
    let from_mirror = lab.tmp.path().join("from-mirror");
    let from_local = lab.tmp.path().join("from-local");
    restore_to(&m, &lab.keys[1], &from_mirror).unwrap();
    restore_to(&lab.repo, &lab.keys[1], &from_local).unwrap();
    assert_eq!(
        common::describe(&from_mirror, None),
        common::describe(&from_local, None)
    );

    // Verify, quick (a HEAD per chunk, no listing) and full.
    for level in [Level::Quick, Level::Full] {
        let r = verify::verify(&m, &lab.keys, level, &Silent).unwrap();
        assert!(r.ok(), "{level:?}: {:?}", r.problems);
    }
    // Diff and dump read the same manifests and chunks.
    let (a, b) = (
        m.load_manifest(&lab.keys[0]).unwrap(),
        m.load_manifest(&lab.keys[1]).unwrap(),
    );
    let d = blocksnap::compare::diff(&a, &b);
    let (la, lb) = (
        lab.repo.load_manifest(&lab.keys[0]).unwrap(),
        lab.repo.load_manifest(&lab.keys[1]).unwrap(),
    );
    assert_eq!(
        format!("{d:?}"),
        format!("{:?}", blocksnap::compare::diff(&la, &lb))
    );
    assert!(dump_of(&m, &lab.keys[1]) == dump_of(&lab.repo, &lab.keys[1]));

    // Copy from the mirror into a repository of one's own.
    let dst = Repository::init(Arc::new(MemoryStore::new()), DEFAULT_PARAMS, 1).unwrap();
    let plan = copy::plan(&m, &dst, &lab.keys).unwrap();
    copy::execute(&m, &dst, &plan, &CopyOptions { jobs: 4 }, &Silent).unwrap();
    assert_eq!(dst.snapshots().unwrap(), lab.keys);
    let r = verify::verify(&dst, &lab.keys, Level::Full, &Silent).unwrap();
    assert!(r.ok(), "{:?}", r.problems);

    // A mirror is read-only.
    let e = m.store().put_if_absent("x", b"y").unwrap_err().to_string();
    assert!(e.contains("read-only mirror"), "{e}");
}

#[test]
fn writers_keep_the_index_current_and_a_stale_one_is_reported() {
    let lab = lab();
    let Some(web) = WebServer::serve(&lab.tmp.path().join("repo")) else {
        return;
    };
    let index_path = lab.tmp.path().join("repo").join(INDEX_KEY);
    let old_index = std::fs::read(&index_path).unwrap();

    // A snapshot names itself in the index as it commits.
    let third = snapshot::snapshot(
        &lab.repo,
        &SnapshotOptions {
            source: lab.source.clone(),
            height: 30,
            host: "prep".into(),
            ..Default::default()
        },
        &Silent,
    )
    .unwrap()
    .key;
    assert_eq!(mirror(&web.url).snapshots().unwrap().last(), Some(&third));

    // Forget and prune the first: the index follows.
    let opts = ForgetOptions {
        named: vec![Selector::Id(lab.keys[0].id.to_hex())],
        by_host: "test".into(),
        now_unix_ns: blocksnap::repo::now_unix_ns(),
        ..Default::default()
    };
    let plan = forget::plan(&lab.repo, &opts).unwrap();
    forget::execute(&lab.repo, &plan, &opts, &Silent).unwrap();
    prune::run(
        &lab.repo,
        &PruneOptions {
            instant: true,
            host: "prep".into(),
            ..PruneOptions::default()
        },
        &Silent,
    )
    .unwrap();
    assert_eq!(mirror(&web.url).snapshots().unwrap(), [lab.keys[1], third]);

    // A mirror that still serves the old index: the forgotten snapshot it
    // names is reported stale, not followed.
    std::fs::write(&index_path, &old_index).unwrap();
    let m = mirror(&web.url);
    let e = restore_to(&m, &lab.keys[0], &lab.tmp.path().join("t"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("index is stale"), "{e}");
    assert!(e.contains(&lab.keys[0].key()), "{e}");
    assert!(!lab.tmp.path().join("t").exists(), "nothing written");
    // What it names and serves still restores.
    restore_to(&m, &lab.keys[1], &lab.tmp.path().join("t2")).unwrap();

    // No index at all: the message says how to publish one.
    std::fs::remove_file(&index_path).unwrap();
    let store = HttpStore::open(&web.url, 2).unwrap();
    let e = Repository::open(Arc::new(store))
        .and_then(|r| r.snapshots())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("publishes no index") && e.contains("blocksnap index"),
        "{e}"
    );
}

#[test]
fn faults_between_mirror_and_reader_are_retried_or_caught() {
    let lab = lab();
    let Some(web) = WebServer::serve(&lab.tmp.path().join("repo")) else {
        return;
    };
    // A fifth of the requests answered 503, cut short or reset.
    let proxy = FaultProxy::start(web.addr, 20);
    let m = mirror(&proxy.endpoint);
    let target = lab.tmp.path().join("restored");
    restore_to(&m, &lab.keys[1], &target).unwrap();
    let local = lab.tmp.path().join("local");
    restore_to(&lab.repo, &lab.keys[1], &local).unwrap();
    assert_eq!(
        common::describe(&target, None),
        common::describe(&local, None)
    );
    let r = verify::verify(&m, &lab.keys, Level::Full, &Silent).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    assert!(
        proxy.counts().1 > 5,
        "faults injected: {:?}",
        proxy.counts()
    );

    // A body from another key (a confused cache): caught by the chunk's
    // id. Once is retried (the next answer is right); a mirror that keeps
    // serving it fails the restore with the chunk named, nothing written.
    let manifest = lab.repo.load_manifest(&lab.keys[1]).unwrap();
    let mut ids = manifest
        .files()
        .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id));
    let (a, b) = (ids.next().unwrap(), ids.find(|_| true).unwrap());
    let proxy = FaultProxy::start(web.addr, 0);
    proxy.swap_gets(&layout::chunk_key(&a), &layout::chunk_key(&b), 1);
    let target = lab.tmp.path().join("swapped-once");
    restore_to(&mirror(&proxy.endpoint), &lab.keys[1], &target).unwrap();
    assert_eq!(
        common::describe(&target, None),
        common::describe(&local, None)
    );
    assert_eq!(proxy.counts().1, 1, "the swap happened");
    proxy.swap_gets(&layout::chunk_key(&a), &layout::chunk_key(&b), u32::MAX);
    let target = lab.tmp.path().join("swapped");
    let e = restore_to(&mirror(&proxy.endpoint), &lab.keys[1], &target)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&a.to_hex()[..12]), "{e}");
    assert!(common::published(&target).is_empty(), "nothing published");
}

#[test]
fn with_trust_a_mirror_is_read_only_through_an_index_a_trusted_key_signed() {
    use blocksnap::sign::{self, Signer, Trust};
    let lab = lab();
    let Some(web) = WebServer::serve(&lab.tmp.path().join("repo")) else {
        return;
    };
    let keys = lab.tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (_, public) = sign::generate(&keys.join("a.key"), None).unwrap();
    let (_, other) = sign::generate(&keys.join("b.key"), None).unwrap();
    let signer = Arc::new(Signer::load(&keys.join("a.key")).unwrap());
    let trusting = |key: &str| {
        mirror(&web.url).with_trust(Some(Arc::new(Trust::parse(&[key.to_string()]).unwrap())))
    };

    // Unsigned (the lab's): refused under --trust, read without.
    let e = trusting(&public).snapshots().unwrap_err().to_string();
    assert!(e.contains("index is not signed"), "{e}");
    assert_eq!(mirror(&web.url).snapshots().unwrap(), lab.keys);

    // Signed: believed with that key, refused with another.
    let signing = Repository::open(Arc::new(LocalStore::open(lab.tmp.path().join("repo"))))
        .unwrap()
        .with_signer(Some(signer));
    let published = signing.publish_index().unwrap();
    let m = trusting(&public);
    assert_eq!(m.snapshots().unwrap(), lab.keys);
    let seen = m.mirror_index().unwrap().unwrap();
    assert!(seen.trusted_by.is_some());
    assert_eq!(seen.created_unix_ns, published.created_unix_ns);
    let e = trusting(&other).snapshots().unwrap_err().to_string();
    assert!(e.contains("not trusted"), "{e}");

    // An index changed after it was signed (a snapshot hidden): refused.
    let path = lab.tmp.path().join("repo").join(INDEX_KEY);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let hidden = lab.keys[1].key();
    let edited: String = text
        .lines()
        .filter(|l| !l.starts_with(&hidden))
        .map(|l| match l.strip_prefix("end ") {
            Some(n) => format!("end {}\n", n.parse::<u64>().unwrap() - 1),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, edited).unwrap();
    let e = trusting(&public).snapshots().unwrap_err().to_string();
    assert!(e.contains("not signed by a trusted key"), "{e}");
}

/// Replaces `path` with a sparse file of `len` bytes (a hostile mirror's
/// huge object, costing no disk).
fn sparse(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
}

#[test]
fn a_hostile_mirror_is_refused_with_the_object_named_and_nothing_written() {
    let lab = lab();
    let dir = lab.tmp.path().join("repo");
    let Some(web) = WebServer::serve(&dir) else {
        return;
    };
    let index_path = dir.join(INDEX_KEY);
    let good_index = std::fs::read(&index_path).unwrap();
    let target = lab.tmp.path().join("t");
    let refused = |what: &str, words: &[&str]| {
        let e = Repository::open(Arc::new(
            HttpStore::open(&web.url, 4)
                .unwrap()
                .with_backoff(std::time::Duration::from_millis(1)),
        ))
        .and_then(|m| {
            let key = *m.snapshots()?.last().expect("a snapshot");
            restore_to(&m, &key, &target)
        })
        .expect_err(what)
        .to_string();
        for w in words {
            assert!(e.contains(w), "{what}: {w:?} not in {e}");
        }
        assert!(
            common::published(&target).is_empty(),
            "{what}: published {:?}",
            common::published(&target)
        );
    };

    // An index that names a key outside the repository's layout.
    let text = String::from_utf8(good_index.clone()).unwrap();
    std::fs::write(&index_path, text.replace("config ", "../../etc/passwd ")).unwrap();
    refused("a climbing key", &["index", "../../etc/passwd"]);
    // An index far larger than any index may be: refused before it is read.
    sparse(&index_path, 512 << 20);
    refused("a huge index", &["index", "limit exceeded", "object size"]);
    std::fs::write(&index_path, &good_index).unwrap();

    // A manifest of 1 GiB where a manifest was.
    let manifest = dir.join(lab.keys[1].key());
    let good_manifest = std::fs::read(&manifest).unwrap();
    sparse(&manifest, 1 << 30);
    refused("a huge manifest", &[&lab.keys[1].key(), "limit exceeded"]);
    // Another snapshot's manifest under this one's name.
    std::fs::copy(dir.join(lab.keys[0].key()), &manifest).unwrap();
    refused("a swapped manifest", &[&lab.keys[1].key()]);
    std::fs::write(&manifest, &good_manifest).unwrap();

    // A chunk of 64 MiB where a chunk was: refused before it is read,
    // named with its file.
    let m = lab.repo.load_manifest(&lab.keys[1]).unwrap();
    let (path, _, _, chunks) = m.files().find(|(_, _, _, c)| !c.is_empty()).unwrap();
    let chunk = dir.join(layout::chunk_key(&chunks[0].id));
    sparse(&chunk, 64 << 20);
    refused("a huge chunk", &[&chunks[0].id.to_hex()[..12], &path.path]);
}
