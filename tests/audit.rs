//! Audits that scale (issue #11): rotating and sampled full verify, the
//! history chain, a directory against a snapshot, diff between snapshots,
//! and the manifest cache.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use blocksnap::compare::{self, DifferenceKind};
use blocksnap::format::config::ChunkerParams;
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{CountingStore, MemoryStore, ObjectInfo, Store};
use blocksnap::verify::{self, Level, ProblemKind, Subset, VerifyOptions};
use blocksnap::{Repository, Result, Selector};

const PARAMS: ChunkerParams = ChunkerParams {
    min_size: 16 << 10,
    avg_size: 64 << 10,
    max_size: 256 << 10,
};

/// Records the chunk objects read through it.
struct Recording {
    inner: Arc<MemoryStore>,
    chunks_read: Mutex<Vec<String>>,
}

impl Store for Recording {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        if key.starts_with(layout::CHUNKS_PREFIX) {
            self.chunks_read.lock().unwrap().push(key.to_string());
        }
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.inner.put_if_absent(key, bytes)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.inner.delete_many(keys)
    }
    fn remove_stale_writes(&self, before_unix_ns: u64) -> Result<(u64, u64)> {
        self.inner.remove_stale_writes(before_unix_ns)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn request_counts(&self) -> Option<blocksnap::store::Counts> {
        self.inner.request_counts()
    }
}

struct Lab {
    tmp: tempfile::TempDir,
    store: Arc<MemoryStore>,
    repo: Repository,
}

impl Lab {
    fn new() -> Lab {
        let store = Arc::new(MemoryStore::new());
        let repo = Repository::init(store.clone(), PARAMS, 1).unwrap();
        Lab {
            tmp: tempfile::tempdir().unwrap(),
            store,
            repo,
        }
    }

    fn node(&self) -> std::path::PathBuf {
        common::node(self.tmp.path(), 2)
    }

    fn snap(&self, source: &Path, host: &str, height: u64) -> SnapshotKey {
        let opts = SnapshotOptions {
            source: source.to_path_buf(),
            height,
            host: host.into(),
            ..Default::default()
        };
        snapshot::snapshot(&self.repo, &opts, &Silent).unwrap().key
    }

    fn verify(&self, opts: VerifyOptions) -> verify::VerifyReport {
        let keys = self.repo.resolve(&Selector::All).unwrap();
        verify::verify(&self.repo, &keys, opts, &Silent).unwrap()
    }

    fn chain(&self) -> verify::VerifyReport {
        self.verify(VerifyOptions {
            chain: true,
            ..Level::Quick.into()
        })
    }
}

fn kinds(r: &verify::VerifyReport) -> Vec<(ProblemKind, String)> {
    r.problems
        .iter()
        .map(|p| (p.kind, p.snapshot.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn a_rotation_of_slices_reads_every_chunk_and_finds_damage_in_one_slice() {
    let lab = Lab::new();
    let node = lab.node();
    lab.snap(&node, "node-a", 1);
    common::advance(&node, 300);
    lab.snap(&node, "node-a", 2);
    let all: BTreeSet<String> = lab
        .store
        .list(layout::CHUNKS_PREFIX)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(all.len() > 20, "{}", all.len());
    // Damage one chunk.
    let victim = all.iter().nth(all.len() / 2).unwrap().clone();
    lab.store.tamper(&victim, |b| {
        let n = b.len() - 40;
        b[n] ^= 0x20;
    });
    let n = 5;
    let mut read: Vec<String> = Vec::new();
    let mut checked = 0;
    let mut found_in = Vec::new();
    for i in 1..=n {
        let rec = Arc::new(Recording {
            inner: lab.store.clone(),
            chunks_read: Mutex::new(Vec::new()),
        });
        let repo = Repository::open(rec.clone()).unwrap();
        let keys = repo.resolve(&Selector::All).unwrap();
        let opts = VerifyOptions {
            subset: Subset::Slice { index: i, of: n },
            ..Level::Full.into()
        };
        let r = verify::verify(&repo, &keys, opts, &Silent).unwrap();
        assert_eq!(r.subset, format!("{i}/{n}"));
        checked += r.chunks_checked;
        if !r.ok() {
            assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
            assert_eq!(
                r.problems[0].chunk.as_deref(),
                layout::parse_chunk_key(&victim)
                    .map(|c| c.to_hex())
                    .as_deref()
            );
            found_in.push(i);
        }
        // A damaged chunk is read twice (once more in case the damage was
        // in transit); count each read once.
        let mut mine: Vec<String> = rec.chunks_read.lock().unwrap().clone();
        mine.sort();
        mine.dedup();
        read.extend(mine);
    }
    let union: BTreeSet<String> = read.iter().cloned().collect();
    assert_eq!(union, all, "the rotation missed chunks");
    assert!(
        read.len() < all.len() + all.len() / 4,
        "a rotation read {} chunk objects for {} chunks",
        read.len(),
        all.len()
    );
    assert!(checked >= all.len() as u64);
    assert!(!found_in.is_empty(), "the damage was in no slice");
}

#[test]
fn a_random_share_is_repeatable_by_its_seed() {
    let lab = Lab::new();
    lab.snap(&lab.node(), "node-a", 1);
    let run = |seed| {
        lab.verify(VerifyOptions {
            subset: Subset::Share {
                percent: 30.0,
                seed,
            },
            ..Level::Full.into()
        })
    };
    let a = run(7);
    assert!(a.ok());
    // Some of the bytes, not all: a file is read whole when its first chunk
    // falls in the share, so a 30 % share of the chunks covers anywhere
    // between a few and most of the bytes (a handful of large tables).
    assert!(a.coverage > 0.0 && a.coverage < 1.0, "{}", a.coverage);
    // The share is the rule FORMAT.md §11 gives, computed here on its own:
    // the distinct chunks whose keyed hash falls in the share.
    let in_share = |seed: u64| {
        let contains = |id: &blocksnap::ChunkId| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            let h = blake3::keyed_hash(&key, &id.0);
            let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap());
            (n as f64) < 0.30 * u64::MAX as f64
        };
        // A file is read whole when its first chunk is in the share: the
        // distinct chunks of those files.
        let mut read = std::collections::HashSet::new();
        for k in lab.repo.snapshots().unwrap() {
            for (_, _, _, chunks) in lab.repo.load_manifest(&k).unwrap().files() {
                if chunks.first().is_some_and(|c| contains(&c.id)) {
                    read.extend(chunks.iter().map(|c| c.id));
                }
            }
        }
        read.len() as u64
    };
    assert_eq!(a.chunks_checked, in_share(7));
    assert_ne!(in_share(7), in_share(8), "another seed, another share");
    assert_eq!(run(8).chunks_checked, in_share(8));
    assert!(a.subset.contains("seed 7"), "{}", a.subset);
    let all = lab.verify(Level::Full.into());
    assert_eq!(all.coverage, 1.0);
    assert_eq!(all.chunks_checked, all.chunks);
}

#[test]
fn the_chain_reports_a_deleted_a_replaced_and_a_forked_manifest_but_not_a_forgotten_one() {
    let lab = Lab::new();
    let node = lab.node();
    let keys: Vec<SnapshotKey> = (1..=5).map(|h| lab.snap(&node, "node-a", h)).collect();
    // Another history in the same repository.
    lab.snap(&node, "node-b", 1);
    let r = lab.chain();
    assert!(r.ok(), "{:?}", r.problems);
    let c = r.chain.unwrap();
    assert_eq!((c.histories, c.links, c.forgotten), (2, 4, 0));

    // Forgotten: a record continues the chain.
    let opts = blocksnap::forget::ForgetOptions {
        named: vec![Selector::Id(keys[1].id.to_hex())],
        by_host: "auditor".into(),
        now_unix_ns: blocksnap::repo::now_unix_ns(),
        ..Default::default()
    };
    let plan = blocksnap::forget::plan(&lab.repo, &opts).unwrap();
    blocksnap::forget::execute(&lab.repo, &plan, &opts, &Silent).unwrap();
    let r = lab.chain();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!(r.chain.unwrap().forgotten, 1);

    // Replaced: keys[2] swapped for a doctored copy (another id).
    let mut doctored = lab.repo.load_manifest(&keys[2]).unwrap();
    doctored.tags.push("doctored".into());
    let bytes = doctored.encode();
    let fake = SnapshotKey {
        height: doctored.height,
        created_unix_ns: doctored.created_unix_ns,
        id: blocksnap::Hash::of(&bytes),
    };
    lab.store.put_if_absent(&fake.key(), &bytes).unwrap();
    lab.store.delete(&keys[2].key()).unwrap();
    let r = lab.chain();
    assert_eq!(kinds(&r), vec![(ProblemKind::BrokenChain, keys[3].key())]);
    let detail = &r.problems[0].detail;
    assert!(detail.contains(&keys[2].id.short()), "{detail}");
    assert!(
        detail.contains(&format!("{} (height 3)", fake.id.short())),
        "the replacement is named: {detail}"
    );

    // Deleted: keys[4]'s parent keys[3] removed outright.
    lab.store.delete(&fake.key()).unwrap();
    lab.store.delete(&keys[3].key()).unwrap();
    let r = lab.chain();
    assert_eq!(kinds(&r), vec![(ProblemKind::BrokenChain, keys[4].key())]);
    assert!(r.problems[0].detail.contains("removed or replaced"));
    assert!(!r.problems[0].detail.contains("replacement?"));

    // Forked: a second child of keys[4]'s parent... restore a clean chain
    // first: a fresh repository.
    let lab = Lab::new();
    let keys: Vec<SnapshotKey> = (1..=3).map(|h| lab.snap(&node, "node-a", h)).collect();
    let mut twin = lab.repo.load_manifest(&keys[2]).unwrap();
    twin.height = 9;
    twin.created_unix_ns += 1;
    let bytes = twin.encode();
    let twin_key = SnapshotKey {
        height: 9,
        created_unix_ns: twin.created_unix_ns,
        id: blocksnap::Hash::of(&bytes),
    };
    lab.store.put_if_absent(&twin_key.key(), &bytes).unwrap();
    let r = lab.chain();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].kind, ProblemKind::Fork);
    let d = &r.problems[0].detail;
    assert!(
        d.contains(&keys[2].key()) && d.contains(&twin_key.key()),
        "{d}"
    );
    assert!(d.contains(&keys[1].id.short()), "names the parent: {d}");
}

#[test]
fn a_directory_is_compared_with_its_snapshot_one_line_per_difference() {
    let lab = Lab::new();
    let node = lab.node();
    let key = lab.snap(&node, "node-a", 1);
    let manifest = lab.repo.load_manifest(&key).unwrap();
    // The source itself, and a restore for another IP, are the same.
    let same = compare::dir(&manifest, &node, Some(common::NODE_IP), false, &Silent).unwrap();
    assert!(same.differences.is_empty(), "{:?}", same.differences);
    assert!(same.bytes_hashed > 1 << 20);
    let target = lab.tmp.path().join("restored");
    let opts = RestoreOptions {
        target: target.clone(),
        ip: Some(common::OTHER_IP.to_string()),
        ..Default::default()
    };
    let plan = restore::plan(&lab.repo, &key, &opts).unwrap();
    restore::restore(&lab.repo, &plan, &opts, &Silent).unwrap();
    let ip = Some(common::OTHER_IP);
    let r = compare::dir(&manifest, &target, ip, false, &Silent).unwrap();
    assert!(r.differences.is_empty(), "{:?}", r.differences);
    // Without the IP, the normalised paths cannot be put back: refused.
    assert!(compare::dir(&manifest, &target, None, false, &Silent).is_err());

    // Six kinds of change, one line each, with the path.
    let files: Vec<String> = walkdir::WalkDir::new(&target)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && fs::metadata(e.path()).unwrap().len() > 100)
        .filter(|e| !e.path().to_string_lossy().contains(".blocksnap-"))
        .map(|e| {
            e.path()
                .strip_prefix(&target)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(files.len() >= 4);
    let (flipped, truncated, removed, chmodded) = (&files[0], &files[1], &files[2], &files[3]);
    let path = |rel: &str| target.join(rel);
    let mut bytes = fs::read(path(flipped)).unwrap();
    bytes[50] ^= 1;
    fs::write(path(flipped), bytes).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path(truncated))
        .unwrap();
    f.set_len(10).unwrap();
    fs::remove_file(path(removed)).unwrap();
    let m = fs::metadata(path(chmodded)).unwrap().permissions().mode();
    fs::set_permissions(path(chmodded), fs::Permissions::from_mode(m ^ 0o004)).unwrap();
    fs::write(target.join("extra/added"), b"not in the snapshot").unwrap();
    fs::remove_file(target.join("extra/storage-link")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", target.join("extra/storage-link")).unwrap();
    // Outside the snapshot's top-level entries: not compared.
    assert!(!manifest.entries.iter().any(|e| e.path == "log"));
    fs::create_dir_all(target.join("log")).unwrap();
    fs::write(target.join("log/node.log"), b"a log line\n").unwrap();

    let r = compare::dir(&manifest, &target, ip, false, &Silent).unwrap();
    let got: Vec<(DifferenceKind, String)> = r
        .differences
        .iter()
        .map(|d| (d.kind, d.path.clone()))
        .collect();
    let mut want = vec![
        (DifferenceKind::Changed, flipped.clone()),
        (DifferenceKind::Changed, truncated.clone()),
        (DifferenceKind::Missing, removed.clone()),
        (DifferenceKind::Changed, chmodded.clone()),
        (DifferenceKind::Extra, "extra/added".to_string()),
        (DifferenceKind::Changed, "extra/storage-link".to_string()),
    ];
    want.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
    assert_eq!(got, want, "{:#?}", r.differences);
    let detail = |p: &str| {
        r.differences
            .iter()
            .find(|d| d.path == p)
            .unwrap()
            .detail
            .clone()
    };
    assert!(detail(flipped).contains("content hashes to"));
    assert!(detail(truncated).contains("10 bytes"));
    assert!(detail(chmodded).contains("mode"));
    assert!(detail("extra/storage-link").contains("/elsewhere"));
}

#[test]
fn diff_names_added_removed_and_changed_files_and_the_new_chunks() {
    let lab = Lab::new();
    let node = lab.node();
    let a = lab.snap(&node, "node-a", 1);
    common::advance(&node, 200);
    fs::write(node.join("extra/new-file"), vec![7u8; 300 << 10]).unwrap();
    fs::remove_file(node.join("extra/empty-file")).unwrap();
    let b = lab.snap(&node, "node-a", 2);
    let (ma, mb) = (
        lab.repo.load_manifest(&a).unwrap(),
        lab.repo.load_manifest(&b).unwrap(),
    );
    let d = compare::diff(&ma, &mb);
    let of = |k: DifferenceKind| -> HashSet<String> {
        d.differences
            .iter()
            .filter(|x| x.kind == k)
            .map(|x| x.path.clone())
            .collect()
    };
    assert!(of(DifferenceKind::Extra).contains("extra/new-file"));
    assert!(of(DifferenceKind::Missing).contains("extra/empty-file"));
    assert!(
        !of(DifferenceKind::Changed).is_empty(),
        "the databases changed"
    );
    assert!(d.unchanged > 0);
    // New chunks are exactly those B references and A does not.
    let refs = |m: &blocksnap::format::manifest::Manifest| -> HashSet<blocksnap::ChunkId> {
        m.files()
            .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id))
            .collect()
    };
    let new: HashSet<_> = refs(&mb).difference(&refs(&ma)).copied().collect();
    assert_eq!(d.new_chunks, new.len() as u64);
    assert!(d.new_bytes >= 300 << 10);
    let same = compare::diff(&ma, &ma);
    assert!(same.differences.is_empty() && same.new_chunks == 0);
}

#[test]
fn the_manifest_cache_saves_every_manifest_read_and_never_changes_an_answer() {
    let lab = Lab::new();
    let node = lab.node();
    for h in 1..=4 {
        lab.snap(&node, "node-a", h);
    }
    let cache = lab.tmp.path().join("cache");
    let counting = Arc::new(CountingStore::new(lab.store.clone()));
    let open = || {
        Repository::open(counting.clone())
            .unwrap()
            .with_manifest_cache(&cache)
    };
    let quick = |repo: &Repository| {
        let keys = repo.resolve(&Selector::All).unwrap();
        let before = counting.counts();
        let r = verify::verify(repo, &keys, Level::Quick, &Silent).unwrap();
        (r, counting.counts().since(Some(before)))
    };
    let (r, first) = quick(&open());
    assert!(r.ok());
    assert_eq!(first.get, 4, "{first:?}");
    let (r, second) = quick(&open());
    assert!(r.ok());
    assert_eq!(second.get, 0, "{second:?}");
    assert_eq!(second.list, first.list);

    // A manifest damaged in the store (another size) is read again and
    // reported, cache or not.
    let keys = lab.repo.snapshots().unwrap();
    lab.store
        .tamper(&keys[1].key(), |b| b.truncate(b.len() - 3));
    let (r, third) = quick(&open());
    assert_eq!(third.get, 1);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(
        r.problems[0].snapshot.as_deref(),
        Some(keys[1].key().as_str())
    );
    // A doctored cached copy is not believed.
    let dir = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".manifests"))
        .unwrap();
    let cached = dir.join(keys[2].id.to_hex());
    let mut b = fs::read(&cached).unwrap();
    let n = b.len() / 2;
    b[n] ^= 1;
    fs::write(&cached, b).unwrap();
    let (r, fourth) = quick(&open());
    assert_eq!(fourth.get, 2, "the doctored copy and the damaged object");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    // A full check reads every manifest from the store.
    let repo = open();
    let keys = repo.resolve(&Selector::All).unwrap();
    let before = counting.counts();
    verify::verify(&repo, &keys, Level::Full, &Silent).unwrap();
    assert!(counting.counts().since(Some(before)).get >= 4);
    // Forgotten and pruned snapshots leave the cache.
    lab.store.delete(&keys[3].key()).unwrap();
    quick(&open());
    let left: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // (The copy of the manifest damaged in the store stays: it is good.)
    let want: BTreeSet<String> = keys[..3].iter().map(|k| k.id.to_hex()).collect();
    assert_eq!(left, want);
}

/// A store across a network: each manifest GET waits, and the most GETs
/// ever in flight at once are recorded.
struct Slow {
    inner: Arc<MemoryStore>,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    manifest_gets: std::sync::atomic::AtomicUsize,
}

impl Store for Slow {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        use std::sync::atomic::Ordering::SeqCst;
        if !key.starts_with(layout::SNAPSHOTS_PREFIX) {
            return self.inner.get(key, max_len);
        }
        self.manifest_gets.fetch_add(1, SeqCst);
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(5));
        self.in_flight.fetch_sub(1, SeqCst);
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.inner.put_if_absent(key, bytes)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn location(&self) -> String {
        "slow".into()
    }
    fn parallelism(&self) -> usize {
        32
    }
}

/// Many snapshots: `list` reads their manifests several at once and in
/// order; the first snapshot of a new history reads the others' manifests
/// several at once too; the next one of that history reads one.
#[test]
fn many_snapshots_are_read_several_at_once_and_a_parent_with_one_get() {
    use std::sync::atomic::Ordering::SeqCst;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a");
    fs::create_dir_all(&src).unwrap();
    let inner = Arc::new(MemoryStore::new());
    let slow = Arc::new(Slow {
        inner: inner.clone(),
        in_flight: Default::default(),
        most: Default::default(),
        manifest_gets: Default::default(),
    });
    let repo = Repository::init(slow.clone(), PARAMS, 1).unwrap();
    for h in 1..=60u64 {
        fs::write(src.join("f"), h.to_le_bytes()).unwrap();
        let opts = SnapshotOptions {
            source: src.clone(),
            height: h,
            host: "a".into(),
            ..Default::default()
        };
        snapshot::snapshot(&repo, &opts, &Silent).unwrap();
    }
    slow.most.store(0, SeqCst);
    let listed = blocksnap::list::list(&repo, None, None).unwrap();
    let heights: Vec<u64> = listed.iter().map(|l| l.height).collect();
    assert_eq!(heights, (1..=60).collect::<Vec<_>>());
    assert!(listed.iter().all(|l| l.info.is_some()));
    let most = slow.most.load(SeqCst);
    assert!(most >= 4, "list read at most {most} manifests at once");

    // Another node: its first snapshot reads every manifest, several at
    // once, and has no parent; its second reads one manifest, its parent's.
    let other = |h: u64| SnapshotOptions {
        source: src.clone(),
        height: h,
        host: "b".into(),
        ..Default::default()
    };
    slow.most.store(0, SeqCst);
    let first = snapshot::snapshot(&repo, &other(61), &Silent).unwrap();
    assert!(slow.most.load(SeqCst) >= 4);
    let m = repo.load_manifest(&first.key).unwrap();
    // Host "a"'s history is another history: no parent across hosts.
    assert_eq!(m.parent, None);
    slow.manifest_gets.store(0, SeqCst);
    let second = snapshot::snapshot(&repo, &other(62), &Silent).unwrap();
    assert_eq!(slow.manifest_gets.load(SeqCst), 1);
    let m = repo.load_manifest(&second.key).unwrap();
    assert_eq!(m.parent, Some(first.key.id));
}
