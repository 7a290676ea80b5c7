//! Regression tests for the second outside review (issue #20): the trust and
//! retention features against a co-tenant of the bucket who can only add
//! objects, and snapshot sources against the node's own user. One test (or
//! more) per finding, named by its number; each failed against `9e4f896`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::forget::{self, ForgetOptions};
use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::format::manifest::{Entry, EntryKind, Manifest, Stats};
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::retention::{Count, Policy};
use blocksnap::sign::{self, Signed, Signer, Subject, Trust};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::stage::{self, StageOptions};
use blocksnap::store::{LocalStore, ObjectInfo, Store};
use blocksnap::trusted;
use blocksnap::{Hash, Repository, Selector};

struct Lab {
    tmp: tempfile::TempDir,
    source: PathBuf,
    store: Arc<LocalStore>,
    repo: Repository,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let source = common::node(tmp.path(), 2);
    let path = tmp.path().join("repo");
    std::fs::create_dir_all(&path).unwrap();
    let store = Arc::new(LocalStore::open(&path));
    let repo = Repository::init(store.clone(), DEFAULT_PARAMS, 1).unwrap();
    Lab {
        tmp,
        source,
        store,
        repo,
    }
}

fn key(lab: &Lab, name: &str) -> (Arc<Signer>, Arc<Trust>) {
    let path = lab.tmp.path().join(name);
    sign::generate(&path, None).unwrap();
    let signer = Arc::new(Signer::load(&path).unwrap());
    let pubkey = lab.tmp.path().join(format!("{name}.pub"));
    let trust = Trust::parse(&[pubkey.display().to_string()]).unwrap();
    (signer, Arc::new(trust))
}

fn snap(lab: &Lab, height: u64, signer: Option<&Arc<Signer>>) -> SnapshotKey {
    common::advance(&lab.source, 3);
    let opts = SnapshotOptions {
        source: lab.source.clone(),
        height,
        host: "node-a".into(),
        signer: signer.cloned(),
        ..Default::default()
    };
    snapshot::snapshot(&lab.repo, &opts, &Silent).unwrap().key
}

/// A manifest object a co-tenant puts into the bucket: valid, tiny, saying
/// whatever it likes about its history and time.
fn plant(
    store: &dyn Store,
    height: u64,
    created_unix_ns: u64,
    host: &str,
    source: &str,
) -> (SnapshotKey, Vec<u8>) {
    let m = Manifest {
        height,
        created_unix_ns,
        source: source.into(),
        host: host.into(),
        block: None,
        tags: vec![],
        parent: None,
        chunker: DEFAULT_PARAMS,
        zstd_level: 1,
        warnings: vec![],
        stats: Stats::default(),
        entries: vec![Entry {
            path: "planted".into(),
            mode: 0o755,
            mtime_ns: 0,
            kind: EntryKind::Dir,
        }],
    };
    let bytes = m.encode();
    let key = SnapshotKey {
        height,
        created_unix_ns,
        id: Hash::of(&bytes),
    };
    assert!(store.put_if_absent(&key.key(), &bytes).unwrap());
    (key, bytes)
}

fn forget_named(
    lab: &Lab,
    key: &SnapshotKey,
    signer: Option<Arc<Signer>>,
) -> blocksnap::Result<()> {
    let opts = ForgetOptions {
        named: vec![Selector::Id(key.id.to_hex())],
        now_unix_ns: forget::now(),
        signer,
        ..Default::default()
    };
    let plan = forget::plan(&lab.repo, &opts)?;
    forget::execute(&lab.repo, &plan, &opts, &Silent).map(|_| ())
}

fn now() -> u64 {
    forget::now()
}

const DAY: u64 = 86_400 * 1_000_000_000;

/// #20.1: a manifest planted at `forgotten/<X>` is never signed by the
/// routine signed forget of X, and a signature is only ever accepted for
/// the very object kind and id its trusted comment names.
#[test]
fn h1_forget_signs_only_its_own_records_and_signatures_name_what_they_sign() {
    let lab = lab();
    let (a, trust_a) = key(&lab, "a.key");
    let x = snap(&lab, 10, Some(&a));
    let y = snap(&lab, 11, Some(&a));
    // The co-tenant's tree, as manifest bytes, planted where X's forget
    // record will go.
    let evil = Manifest {
        height: 999,
        created_unix_ns: now(),
        source: "evil".into(),
        host: "node-a".into(),
        block: None,
        tags: vec![],
        parent: None,
        chunker: DEFAULT_PARAMS,
        zstd_level: 1,
        warnings: vec![],
        stats: Stats::default(),
        entries: vec![],
    };
    let evil_bytes = evil.encode();
    let evil_key = SnapshotKey {
        height: 999,
        created_unix_ns: evil.created_unix_ns,
        id: Hash::of(&evil_bytes),
    };
    lab.store
        .put_if_absent(&layout::forgotten_key(&x.id), &evil_bytes)
        .unwrap();
    let err = forget_named(&lab, &x, Some(a.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a forget record"), "{err}");
    let oracle = sign::signature_key(&x.id, a.key_id(), Signed::Forget);
    assert_eq!(
        lab.store.size(&oracle).unwrap(),
        None,
        "the key signed planted bytes"
    );
    // X stays: the planted object is no forget record, so it does not count.
    assert!(lab.repo.snapshots().unwrap().contains(&x));

    // A signature made for a forget record over the manifest's bytes (what
    // the oracle produced) is not a manifest signature.
    let forged = a
        .sign(&evil_bytes, &Subject::Forget(x.id).comment())
        .unwrap();
    lab.store
        .put_if_absent(
            &sign::signature_key(&evil_key.id, a.key_id(), Signed::Manifest),
            &forged,
        )
        .unwrap();
    lab.store
        .put_if_absent(&evil_key.key(), &evil_bytes)
        .unwrap();
    let err = trusted::resolve_trusted(
        &lab.repo,
        &trust_a,
        &Selector::Id(evil_key.id.to_hex()),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("it signs \"blocksnap forget"), "{err}");
    assert_eq!(
        trusted::resolve_trusted(&lab.repo, &trust_a, &Selector::Latest, None).unwrap(),
        y,
        "latest followed the forged signature"
    );
    // Nor is one snapshot's signature another's, even over the same bytes
    // under another key name (height).
    let moved = SnapshotKey { height: 5, ..y };
    let y_bytes = lab.repo.manifest_bytes(&y).unwrap();
    let sig = a.sign(&y_bytes, &Subject::Snapshot(y).comment()).unwrap();
    assert!(
        Trust::default()
            .check_object(&sig, a.key_id(), &Subject::Snapshot(moved), &y_bytes)
            .is_ok(),
        "without the key only the form is checked"
    );
    assert!(trust_a
        .check_object(&sig, a.key_id(), &Subject::Snapshot(moved), &y_bytes)
        .is_err());
}

/// #20.2: three planted manifests "from tomorrow" claiming the node's
/// history do not push its real snapshots out: with `--trust` nothing
/// unsigned counts, and without it nothing dated beyond the clock skew.
#[test]
fn h2_retention_counts_only_trusted_snapshots_dated_within_the_skew() {
    let lab = lab();
    let (a, trust_a) = key(&lab, "a.key");
    let real: Vec<SnapshotKey> = (1..=3).map(|h| snap(&lab, h, Some(&a))).collect();
    let source = lab.repo.load_manifest(&real[0]).unwrap().source;
    let tomorrow = now() + DAY;
    let fakes: Vec<SnapshotKey> = (0..3)
        .map(|i| {
            plant(
                &**lab.repo.store(),
                500 + i,
                tomorrow + i,
                "node-a",
                &source,
            )
            .0
        })
        .collect();
    let plan = |trust: Option<Arc<Trust>>, policy: Policy| {
        let opts = ForgetOptions {
            policy,
            now_unix_ns: now(),
            trust,
            ..Default::default()
        };
        forget::plan(&lab.repo, &opts).unwrap()
    };
    let forgotten =
        |p: &forget::ForgetPlan| -> Vec<String> { p.forgotten().map(|d| d.key.clone()).collect() };
    let last3 = || Policy {
        last: Some(Count::N(3)),
        ..Policy::default()
    };
    // Without trust, the fakes dated tomorrow are beyond the skew.
    let p = plan(None, last3());
    for k in &real {
        assert!(!forgotten(&p).contains(&k.key()), "{:#?}", p.decisions);
    }
    for k in &fakes {
        assert!(p.not_counted.iter().any(|n| n.contains(&k.key())));
    }
    // Recent fakes with lower heights (against which, without trust,
    // nothing is promised).
    let low: Vec<SnapshotKey> = (0..3)
        .map(|i| plant(&**lab.repo.store(), i, now() - 1000 + i, "node-a", &source).0)
        .collect();
    // With trust: only the signed snapshots count; every fake is kept and
    // said to be not counted.
    let p = plan(Some(trust_a.clone()), last3());
    assert!(forgotten(&p).is_empty(), "{:#?}", p.decisions);
    assert_eq!(p.not_counted.len(), 6, "{:#?}", p.not_counted);
    // One per 10 blocks: the fakes' lower heights do not displace anything.
    let p = plan(
        Some(trust_a.clone()),
        Policy {
            every_blocks: Some(10),
            ..Policy::default()
        },
    );
    for k in &real[1..] {
        assert!(forgotten(&p).contains(&k.key()));
    }
    assert!(!forgotten(&p).contains(&real[0].key()));
    assert!(low.iter().all(|k| !forgotten(&p).contains(&k.key())));
}

fn lchown(path: &Path, uid: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::lchown(c.as_ptr(), uid, uid) },
        0,
        "lchown {path:?}"
    );
}

fn must_be_root() -> bool {
    // SAFETY: no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test needs root (to make files of another user); CI runs as root");
    }
    root
}

/// #20.3: an `--include` that is a symlink the node's user owns is not
/// followed (it could lead to root-only files), and a staged snapshot reads
/// its stage through the descriptors it built it with, not by its name,
/// which the node's user can swap for a link after the start command.
#[test]
fn h3_snapshot_never_follows_a_link_the_nodes_user_controls() {
    if !must_be_root() {
        return;
    }
    let lab = lab();
    let secret = lab.tmp.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("shadow"), b"root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        secret.join("shadow"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // The node's user replaces .storage with a link to the secret.
    let storage = lab.source.join(".storage");
    let moved = lab.tmp.path().join("real-storage");
    std::fs::rename(&storage, &moved).unwrap();
    std::os::unix::fs::symlink(&secret, &storage).unwrap();
    lchown(&storage, 4242);
    let opts = SnapshotOptions {
        source: lab.source.clone(),
        height: 1,
        includes: vec![".storage".into(), ".score_data".into()],
        ..Default::default()
    };
    let err = snapshot::snapshot(&lab.repo, &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("owned by uid 4242") && err.contains("not followed"),
        "{err}"
    );
    assert!(
        lab.store.list("chunks/").unwrap().is_empty(),
        "chunks were stored"
    );
    // A link of root's own (an operator's second disk) is followed.
    std::fs::remove_file(&storage).unwrap();
    std::os::unix::fs::symlink(&moved, &storage).unwrap();
    let k = snapshot::snapshot(&lab.repo, &opts, &Silent).unwrap().key;
    let m = lab.repo.load_manifest(&k).unwrap();
    assert!(m
        .entries
        .iter()
        .any(|e| e.path == ".storage" && e.kind == EntryKind::Dir));
    std::fs::remove_file(&storage).unwrap();
    std::fs::rename(&moved, &storage).unwrap();

    // The start command (the node's user, once it runs again) moves the
    // stage away and plants a link to the secret in its place.
    let stage_dir = stage::stage_root(&lab.source).unwrap();
    let away = lab.tmp.path().join("stage-moved-away");
    let start = format!(
        "mv '{}' '{}' && ln -s '{}' '{}'",
        stage_dir.display(),
        away.display(),
        secret.display(),
        stage_dir.display()
    );
    let opts = SnapshotOptions {
        source: lab.source.clone(),
        height: 2,
        ..Default::default()
    };
    let (report, _) = stage::snapshot_staged(
        &lab.repo,
        &opts,
        &StageOptions::new("true", start),
        None,
        &Silent,
    )
    .unwrap();
    let m = lab.repo.load_manifest(&report.key).unwrap();
    assert!(
        !m.entries.iter().any(|e| e.path.contains("shadow")),
        "the snapshot read the planted link"
    );
    assert!(m.entries.iter().any(|e| e.path.starts_with(".storage/")));
    assert_eq!(std::fs::read(secret.join("shadow")).unwrap(), b"root only");
}

/// #20.6 and #20.13: `sign` never co-signs whatever `latest` names without
/// a trusted key vouching for it, and reports a signature it could not
/// store (garbage already at its key) instead of claiming success.
#[test]
fn h6_sign_signs_what_the_operator_means_and_fails_loudly() {
    let lab = lab();
    let (a, trust_a) = key(&lab, "a.key");
    let (c, _) = key(&lab, "c.key");
    let mine = snap(&lab, 1, Some(&a));
    let theirs = snap(&lab, 2, None);
    let err = trusted::sign_snapshots(&lab.repo, &c, &[Selector::Latest], None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("full id"), "{err}");
    assert_eq!(
        lab.store
            .size(&sign::signature_key(
                &theirs.id,
                c.key_id(),
                Signed::Manifest
            ))
            .unwrap(),
        None
    );
    // With trust, `latest` is the newest snapshot A signed: co-signed.
    let signed =
        trusted::sign_snapshots(&lab.repo, &c, &[Selector::Latest], None, Some(&trust_a)).unwrap();
    assert_eq!(signed.iter().map(|s| s.key).collect::<Vec<_>>(), vec![mine]);
    assert_eq!(signed[0].host, "node-a");
    // By full id, anything the operator names.
    trusted::sign_snapshots(
        &lab.repo,
        &c,
        &[Selector::Id(theirs.id.to_hex())],
        None,
        None,
    )
    .unwrap();
    // Garbage planted at a signature's key is reported, not hidden.
    let third = snap(&lab, 3, None);
    lab.store
        .put_if_absent(
            &sign::signature_key(&third.id, c.key_id(), Signed::Manifest),
            b"garbage",
        )
        .unwrap();
    let err = trusted::sign_snapshots(
        &lab.repo,
        &c,
        &[Selector::Id(third.id.to_hex())],
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("already holds an object that is not this key's signature"),
        "{err}"
    );
}

/// #20.7: a forgotten signed snapshot re-uploaded by anyone stays forgotten
/// (its forget record, signed by a trusted key, is what forgot it).
#[test]
fn h7_forgotten_snapshots_do_not_come_back() {
    let lab = lab();
    let (a, trust_a) = key(&lab, "a.key");
    let first = snap(&lab, 1, Some(&a));
    let second = snap(&lab, 2, Some(&a));
    let bytes = lab.repo.manifest_bytes(&second).unwrap();
    forget_named(&lab, &second, Some(a.clone())).unwrap();
    lab.store.put_if_absent(&second.key(), &bytes).unwrap();
    let trusted_repo = Repository::open(lab.store.clone())
        .unwrap()
        .with_trust(Some(trust_a.clone()));
    assert_eq!(
        trusted::resolve_trusted(&trusted_repo, &trust_a, &Selector::Latest, None).unwrap(),
        first
    );
    assert_eq!(trusted_repo.snapshots().unwrap(), vec![first]);
    let view = trusted_repo.view().unwrap();
    assert_eq!(view.forgotten, vec![second]);
    // Without trust a record that decodes and names it counts as well.
    assert_eq!(lab.repo.resolve(&Selector::Latest).unwrap(), vec![first]);
    // An unsigned record does not count under trust: the snapshot is live.
    let third = snap(&lab, 3, Some(&a));
    let third_bytes = lab.repo.manifest_bytes(&third).unwrap();
    forget_named(&lab, &third, None).unwrap();
    lab.store.put_if_absent(&third.key(), &third_bytes).unwrap();
    assert!(trusted_repo.snapshots().unwrap().contains(&third));
    assert!(!lab.repo.snapshots().unwrap().contains(&third));
}

fn plant_tree(repo: &Repository, entries: Vec<(&str, EntryKind)>) -> SnapshotKey {
    let entries: Vec<Entry> = entries
        .into_iter()
        .map(|(path, kind)| Entry {
            path: path.into(),
            mode: 0o755,
            mtime_ns: 1,
            kind,
        })
        .collect();
    let m = Manifest {
        height: 7,
        created_unix_ns: now(),
        source: "s".into(),
        host: "h".into(),
        block: None,
        tags: vec![],
        parent: None,
        chunker: DEFAULT_PARAMS,
        zstd_level: 1,
        warnings: vec![],
        stats: Stats::default(),
        entries,
    };
    let bytes = m.encode();
    let key = SnapshotKey {
        height: 7,
        created_unix_ns: m.created_unix_ns,
        id: Hash::of(&bytes),
    };
    repo.store().put_if_absent(&key.key(), &bytes).unwrap();
    key
}

/// #20.8: `..` is counted after normalising (`./../x`, `..//../x`), and a
/// link to the target's own root is refused: each let a `--force` restore
/// point into entries it keeps (and through the operator's own link there,
/// out of the target).
#[test]
fn h8_symlink_climbs_are_counted_after_normalising() {
    let lab = lab();
    let link = |t: &str| EntryKind::Symlink { target: t.into() };
    let target = lab.tmp.path().join("target");
    let cases: Vec<Vec<(&str, EntryKind)>> = vec![
        vec![
            (".storage", EntryKind::Dir),
            (".storage/x", link("./../keep/x")),
        ],
        vec![
            (".storage", EntryKind::Dir),
            (".storage/d", EntryKind::Dir),
            (".storage/d/x", link("..//../keep/x")),
        ],
        vec![
            (".storage", EntryKind::Dir),
            (".storage/up", link("..")),
            (".storage/x", link("up/keep/x")),
        ],
        vec![("top", link("."))],
    ];
    for entries in cases {
        let shown = format!("{entries:?}");
        let key = plant_tree(&lab.repo, entries);
        let opts = RestoreOptions {
            target: target.clone(),
            force: true,
            ..Default::default()
        };
        let err = restore::plan(&lab.repo, &key, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not one of the snapshot's own top-level entries")
                || err.contains("restore target's own directory"),
            "{shown}: {err}"
        );
    }
}

/// #20.9: one empty `epochs/18446744073709551615` neither overflows the
/// next epoch nor stops commits; an epoch at the limit stops sweeps with a
/// message, it does not loop.
#[test]
fn h9_a_planted_epoch_cannot_stop_the_repository() {
    let lab = lab();
    lab.store
        .put_if_absent(&layout::epoch_key(u64::MAX), b"")
        .unwrap();
    let first = snap(&lab, 1, None);
    forget_named(&lab, &first, None).unwrap();
    let prune = |instant: bool| {
        blocksnap::prune::run(
            &lab.repo,
            &blocksnap::prune::PruneOptions {
                instant,
                host: "node-a".into(),
                ..Default::default()
            },
            &Silent,
        )
    };
    let report = prune(true).unwrap();
    assert!(report.swept.iter().map(|s| s.deleted).sum::<u64>() > 0);
    assert_eq!(lab.repo.epoch().unwrap(), 1);
    snap(&lab, 2, None);
    lab.store
        .put_if_absent(&layout::epoch_key(blocksnap::repo::MAX_EPOCH), b"")
        .unwrap();
    let second = snap(&lab, 3, None);
    forget_named(&lab, &second, None).unwrap();
    let err = prune(true).unwrap_err().to_string();
    assert!(err.contains("reached its limit"), "{err}");
    // Writers are not stopped by it: the claim it could not follow with an
    // epoch was withdrawn.
    assert!(lab.repo.begin_write().unwrap().sweeping.is_empty());
    snap(&lab, 4, None);
}

/// A store that records which keys were read.
struct Recording {
    inner: Arc<LocalStore>,
    gets: Mutex<Vec<String>>,
}

impl Store for Recording {
    fn get(&self, key: &str, max_len: u64) -> blocksnap::Result<Vec<u8>> {
        self.gets.lock().unwrap().push(key.to_string());
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> blocksnap::Result<bool> {
        self.inner.put_if_absent(key, bytes)
    }
    fn size(&self, key: &str) -> blocksnap::Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> blocksnap::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> blocksnap::Result<()> {
        self.inner.delete(key)
    }
    fn flush(&self) -> blocksnap::Result<()> {
        self.inner.flush()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// #20.11: `--trust` with `latest` reads no manifest that no trusted key
/// has a signature object for.
#[test]
fn h11_latest_under_trust_reads_only_what_a_trusted_key_signed() {
    let lab = lab();
    let (a, trust_a) = key(&lab, "a.key");
    let signed = snap(&lab, 1, Some(&a));
    let junk: Vec<SnapshotKey> = (0..6)
        .map(|i| plant(&**lab.repo.store(), 100 + i, now(), "x", "y").0)
        .collect();
    let recording = Arc::new(Recording {
        inner: lab.store.clone(),
        gets: Mutex::new(Vec::new()),
    });
    let repo = Repository::open(recording.clone()).unwrap();
    assert_eq!(
        trusted::resolve_trusted(&repo, &trust_a, &Selector::Latest, None).unwrap(),
        signed
    );
    let gets = recording.gets.lock().unwrap();
    for k in &junk {
        assert!(!gets.contains(&k.key()), "read {} first: {gets:?}", k.key());
    }
}

/// #20.13: an empty object planted at `forgotten/<id>` in a copy's
/// destination does not make the copy skip the snapshot, and a garbage
/// signature object is not spread (the copy says so and fails).
#[test]
fn h13_copy_honours_only_records_and_signatures_that_decode() {
    let lab = lab();
    let (a, _) = key(&lab, "a.key");
    let k = snap(&lab, 1, Some(&a));
    let dst_path = lab.tmp.path().join("dst");
    std::fs::create_dir_all(&dst_path).unwrap();
    let dst_store = Arc::new(LocalStore::open(&dst_path));
    let dst = Repository::init(dst_store.clone(), DEFAULT_PARAMS, 1).unwrap();
    dst_store
        .put_if_absent(&layout::forgotten_key(&k.id), b"")
        .unwrap();
    // A second, bogus signature at the source.
    let (b, _) = key(&lab, "b.key");
    lab.store
        .put_if_absent(
            &sign::signature_key(&k.id, b.key_id(), Signed::Manifest),
            b"bogus",
        )
        .unwrap();
    let plan = blocksnap::copy::plan(&lab.repo, &dst, &[k]).unwrap();
    assert_eq!(plan.snapshots(), vec![k], "skipped for an empty record");
    let report =
        blocksnap::copy::execute(&lab.repo, &dst, &plan, &Default::default(), &Silent).unwrap();
    assert_eq!(report.copied, vec![k]);
    assert_eq!(report.not_copied.len(), 1, "{:?}", report.not_copied);
    assert!(report.not_copied[0].contains(&b.key_id().to_string()));
    assert_eq!(
        dst_store
            .size(&sign::signature_key(&k.id, b.key_id(), Signed::Manifest))
            .unwrap(),
        None
    );
    assert!(dst_store
        .size(&sign::signature_key(&k.id, a.key_id(), Signed::Manifest))
        .unwrap()
        .is_some());
}

/// #20.14: a dry run writes nothing, not even removing a stale temporary
/// journal; and a chunk index built for one repository is not trusted for
/// another that shares its config id.
#[test]
fn h14_a_dry_run_writes_nothing_and_local_state_is_per_repository() {
    let lab = lab();
    let k = snap(&lab, 1, None);
    let target = lab.tmp.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let tmp_journal = target.join(".blocksnap-publish.journal.tmp");
    std::fs::write(&tmp_journal, b"half").unwrap();
    let opts = RestoreOptions {
        target: target.clone(),
        ip: Some("10.0.0.9".into()),
        force: true,
        ..Default::default()
    };
    restore::plan(&lab.repo, &k, &opts).unwrap();
    assert!(tmp_journal.exists(), "the plan (a dry run) removed a file");

    // A second repository with the first one's config, and none of its
    // chunks.
    let cache = lab.tmp.path().join("cache");
    let state = blocksnap::cache::LocalState::open(&cache, &lab.repo).unwrap();
    let opts = SnapshotOptions {
        source: lab.source.clone(),
        height: 2,
        ..Default::default()
    };
    snapshot::snapshot_with_state(&lab.repo, &opts, Some(&state), &Silent).unwrap();
    drop(state);
    let other = lab.tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(lab.tmp.path().join("repo/config"), other.join("config")).unwrap();
    let other_store = Arc::new(LocalStore::open(&other));
    let other_repo = Repository::open(other_store.clone()).unwrap();
    // The newest snapshot the index recorded, copied too, so that only the
    // location tells the two apart.
    for o in lab.store.list("snapshots/").unwrap() {
        let bytes = lab.store.get(&o.key, 1 << 30).unwrap();
        other_store.put_if_absent(&o.key, &bytes).unwrap();
    }
    let state = blocksnap::cache::LocalState::open(&cache, &other_repo).unwrap();
    let report = snapshot::snapshot_with_state(
        &other_repo,
        &SnapshotOptions { height: 3, ..opts },
        Some(&state),
        &Silent,
    )
    .unwrap();
    assert!(
        !matches!(report.index, blocksnap::cache::IndexOrigin::Cached),
        "{:?}",
        report.index
    );
    let v = blocksnap::verify::verify(
        &other_repo,
        &[report.key],
        blocksnap::verify::Level::Quick,
        &Silent,
    )
    .unwrap();
    assert!(v.ok(), "{:#?}", v.problems);
}
