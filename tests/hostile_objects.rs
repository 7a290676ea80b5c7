//! The hostile-repository suite for the object kinds the trust and
//! retention features added (issue #20): forget records, signatures,
//! pending commits and their fates, epochs and prune plans. Every object
//! here is built by the encoder below, written from FORMAT.md (§2 keys, §3
//! envelope, §5 body encoding, §6 tables and small text objects, §11
//! signatures) and sharing no code with the engine's own, so a test that
//! accepts one of them checks the spec as much as the code. Each test has a
//! positive control — the well-formed object does what the spec says — so
//! that a refusal is known to be for the right reason.
//!
//! The attacker can only add objects. Whatever they add, no snapshot that
//! counts may lose a chunk, no unsigned object may be trusted, and no
//! forgotten or never-committed snapshot may appear.

use std::sync::Arc;
use std::time::Duration;

use blocksnap::format::config::ChunkerParams;
use blocksnap::format::layout::SnapshotKey;
use blocksnap::progress::Silent;
use blocksnap::prune::{self, PruneOptions};
use blocksnap::sign::{self, Signatures, Signer, Trust};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{LocalStore, MemoryStore, Store};
use blocksnap::verify::{self, Level};
use blocksnap::{trusted, Repository, Selector};

/// FORMAT.md, written out again: the engine's encoders are not used.
mod spec {
    /// §3: header, payload, BLAKE3 trailer (every kind but chunks).
    pub fn envelope(kind: u8, version: u8, body: &[u8]) -> Vec<u8> {
        let mut o = b"BSNP".to_vec();
        o.extend_from_slice(&[kind, version, 0, 0]);
        o.extend_from_slice(&(body.len() as u64).to_le_bytes());
        o.extend_from_slice(&(body.len() as u64).to_le_bytes());
        o.extend_from_slice(body);
        let trailer = blake3::hash(&o);
        o.extend_from_slice(trailer.as_bytes());
        o
    }

    /// §5: `String` is a u64 length, then the bytes.
    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    pub fn u64(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// §6 "Forget record": the body's fields in order.
    pub struct Record<'a> {
        pub snapshot: &'a str,
        pub host: &'a str,
        pub source: &'a str,
        pub height: u64,
        pub parent: Option<[u8; 32]>,
        pub at: u64,
        pub by_host: &'a str,
        pub reason: &'a str,
    }

    pub fn record_body(r: &Record) -> Vec<u8> {
        let mut b = Vec::new();
        string(&mut b, r.snapshot);
        string(&mut b, r.host);
        string(&mut b, r.source);
        u64(&mut b, r.height);
        match r.parent {
            None => b.push(0),
            Some(p) => {
                b.push(1);
                b.extend_from_slice(&p);
            }
        }
        u64(&mut b, r.at);
        string(&mut b, r.by_host);
        string(&mut b, r.reason);
        b
    }

    /// §6 "Prune plan".
    pub fn plan_body(round: u64, created: u64, host: &str, chunks: &[[u8; 32]]) -> Vec<u8> {
        let mut b = Vec::new();
        u64(&mut b, round);
        u64(&mut b, created);
        string(&mut b, host);
        u64(&mut b, chunks.len() as u64);
        for c in chunks {
            b.extend_from_slice(c);
        }
        b
    }

    /// §2 keys.
    pub fn forgotten_key(id: &str) -> String {
        format!("forgotten/{id}")
    }
    pub fn plan_key(round: u64) -> String {
        format!("prune/{round:020}.plan")
    }
    pub fn epoch_key(n: u64) -> String {
        format!("epochs/{n:020}")
    }
    pub fn chunk_key(id: &[u8; 32]) -> String {
        let h = hex::encode(id);
        format!("chunks/{}/{h}", &h[..2])
    }
    pub fn signature_key(id: &str, key_id: &str) -> String {
        format!("signatures/{id}/{key_id}")
    }

    /// §2 and §6 "Small text objects": an attempt is the first 16 bytes of
    /// BLAKE3(secret); its claim is `commit <secret hex>\n`.
    pub fn attempt(secret: &[u8; 32]) -> String {
        hex::encode(&blake3::hash(secret).as_bytes()[..16])
    }
    pub fn pending_key(id: &str, attempt: &str) -> String {
        format!("pending/{id}-{attempt}")
    }
    pub fn claim(secret: &[u8; 32]) -> Vec<u8> {
        format!("commit {}\n", hex::encode(secret)).into_bytes()
    }
}

const PARAMS: ChunkerParams = ChunkerParams {
    min_size: 16 << 10,
    avg_size: 64 << 10,
    max_size: 256 << 10,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

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

    /// A snapshot of a source of its own (distinct chunks per `seed`).
    fn snap(&self, seed: u32, height: u64, signer: Option<&Arc<Signer>>) -> SnapshotKey {
        let dir = self.tmp.path().join(format!("src-{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..4 {
            let mut data = vec![0u8; 150 << 10];
            blake3::Hasher::new()
                .update(format!("{seed}-{i}").as_bytes())
                .finalize_xof()
                .fill(&mut data);
            std::fs::write(dir.join(format!("f{i}")), data).unwrap();
        }
        let opts = SnapshotOptions {
            source: dir,
            height,
            host: "node-a".into(),
            signer: signer.cloned(),
            ..Default::default()
        };
        snapshot::snapshot(&self.repo, &opts, &Silent).unwrap().key
    }

    fn chunks(&self, key: &SnapshotKey) -> Vec<[u8; 32]> {
        let m = self.repo.load_manifest(key).unwrap();
        let mut out: Vec<[u8; 32]> = m
            .files()
            .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id.0))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every chunk of `key` is still in the store.
    fn whole(&self, key: &SnapshotKey) -> bool {
        self.chunks(key)
            .iter()
            .all(|c| self.store.size(&spec::chunk_key(c)).unwrap().is_some())
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        let _ = self.store.delete(key);
        assert!(self.store.put_if_absent(key, bytes).unwrap(), "{key}");
    }

    fn prune(&self) -> blocksnap::Result<prune::PruneReport> {
        let opts = PruneOptions {
            host: "pruner".into(),
            ..Default::default()
        };
        prune::run(&self.repo, &opts, &Silent)
    }

    /// Two prunes a grace period apart, the clock past it before each: a
    /// round condemned and swept.
    fn prune_rounds(&self) {
        for _ in 0..2 {
            self.store.advance_clock(2 * DAY);
            self.prune().unwrap();
        }
    }

    fn verify_all(&self) {
        let keys = self.repo.resolve(&Selector::All).unwrap();
        let r = verify::verify(&self.repo, &keys, Level::Full, &Silent).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
    }

    fn key_pair(&self, name: &str) -> (Arc<Signer>, Arc<Trust>) {
        let path = self.tmp.path().join(name);
        sign::generate(&path, None).unwrap();
        let signer = Arc::new(Signer::load(&path).unwrap());
        let pubkey = self.tmp.path().join(format!("{name}.pub"));
        let trust = Trust::parse(&[pubkey.display().to_string()]).unwrap();
        (signer, Arc::new(trust))
    }
}

fn record_for(key: &SnapshotKey) -> spec::Record<'static> {
    spec::Record {
        snapshot: Box::leak(key.key().into_boxed_str()),
        host: "node-a",
        source: "",
        height: key.height,
        parent: None,
        at: 1,
        by_host: "mallory",
        reason: "named",
    }
}

/// FORMAT.md §6 "Forget record" and §10 "Forget": a well-formed record for
/// a snapshot's very key forgets it (the positive control: the encoder
/// above agrees with the reader); a record that is damaged, names another
/// snapshot, breaks a limit, or (under --trust) is unsigned does not. No
/// record of any kind makes prune delete a listed manifest's chunks.
#[test]
fn forget_records_from_the_spec_count_and_hostile_ones_do_not() {
    let lab = Lab::new();
    let a = lab.snap(1, 100, None);
    let b = lab.snap(2, 200, None);
    let id = a.id.to_hex();
    let live = || lab.repo.snapshots().unwrap();

    let good = spec::envelope(4, 2, &spec::record_body(&record_for(&a)));
    lab.put(&spec::forgotten_key(&id), &good);
    assert_eq!(live(), vec![b], "a well-formed record forgets");
    // Prune never drops a listed manifest's chunks for a record.
    lab.prune_rounds();
    assert!(
        lab.whole(&a),
        "a record made prune delete a listed manifest's chunks"
    );
    // Under --trust, only a record a trusted key signed counts.
    let (_, trust) = lab.key_pair("k");
    let trusting = Repository::open(lab.store.clone())
        .unwrap()
        .with_trust(Some(trust));
    assert_eq!(trusting.snapshots().unwrap(), vec![a, b]);

    let body = spec::record_body(&record_for(&a));
    let long = "x".repeat(1025);
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("empty object", Vec::new()),
        (
            "names another snapshot",
            spec::envelope(4, 2, &spec::record_body(&record_for(&b))),
        ),
        ("kind of a manifest", spec::envelope(3, 2, &body)),
        (
            "version 1 (before records existed)",
            spec::envelope(4, 1, &body),
        ),
        (
            "version 4 (newer than this build)",
            spec::envelope(4, 4, &body),
        ),
        ("trailer damaged", {
            let mut o = good.clone();
            *o.last_mut().unwrap() ^= 1;
            o
        }),
        ("a byte past the body", {
            let mut b2 = body.clone();
            b2.push(0);
            spec::envelope(4, 2, &b2)
        }),
        ("a label of 1025 bytes", {
            let r = spec::Record {
                reason: &long,
                ..record_for(&a)
            };
            spec::envelope(4, 2, &spec::record_body(&r))
        }),
        ("larger than 64 KiB", {
            let big = "y".repeat(1000);
            let mut b2 = spec::record_body(&spec::Record {
                reason: "",
                ..record_for(&a)
            });
            // A body of 70 KiB: the reason replaced by 70 labels' worth.
            b2.truncate(b2.len() - 8);
            spec::string(&mut b2, &big.repeat(70));
            spec::envelope(4, 2, &b2)
        }),
        ("not an object", b"forget it\n".to_vec()),
    ];
    for (what, bytes) in hostile {
        lab.put(&spec::forgotten_key(&id), &bytes);
        assert_eq!(
            live(),
            vec![a, b],
            "a forget record that is {what} forgot the snapshot"
        );
        lab.prune_rounds();
        assert!(
            lab.whole(&a),
            "{what}: prune deleted a live snapshot's chunks"
        );
    }
    lab.verify_all();
}

/// FORMAT.md §11 "Signatures": an object at a snapshot's signature key
/// makes it trusted only when it is a signature by the trusted key over
/// that manifest's bytes with that snapshot's own trusted comment. Copied
/// signatures of another snapshot, a forget signature over the same bytes,
/// another height's comment, garbage, oversize and non-UTF-8 objects trust
/// nothing, and `latest` under --trust stays the last snapshot the key
/// really signed.
#[test]
fn signature_objects_trust_only_what_the_key_signed_for_that_snapshot() {
    let lab = Lab::new();
    let (signer, trust) = lab.key_pair("publisher");
    let signed = lab.snap(1, 100, Some(&signer));
    let unsigned = lab.snap(2, 200, None);
    let kid = signer.key_id().to_string();
    let id = unsigned.id.to_hex();
    let key = spec::signature_key(&id, &kid);
    let bytes = lab.repo.manifest_bytes(&unsigned).unwrap();
    let trusted_now = || {
        let listed = Signatures::list(&*lab.store).unwrap();
        trusted::check_snapshot(&lab.repo, &trust, &listed, &unsigned)
            .unwrap()
            .trusted()
    };
    let latest = || trusted::resolve_trusted(&lab.repo, &trust, &Selector::Latest, None).unwrap();
    assert!(!trusted_now());
    assert_eq!(latest(), signed);

    let other_sig = lab
        .store
        .get(&spec::signature_key(&signed.id.to_hex(), &kid), 1 << 12)
        .unwrap();
    let mut not_utf8 = other_sig.clone();
    not_utf8[3] = 0xff;
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("another snapshot's signature", other_sig),
        (
            "a forget signature over these very bytes",
            signer
                .sign(&bytes, &format!("blocksnap forget {id}"))
                .unwrap(),
        ),
        (
            "a signature with another height's comment",
            signer
                .sign(&bytes, &format!("blocksnap snapshot {id} height 999"))
                .unwrap(),
        ),
        (
            "a signature with no blocksnap comment",
            signer.sign(&bytes, "timestamp:1").unwrap(),
        ),
        ("not UTF-8", not_utf8),
        ("garbage", b"untrusted comment: trust me\nRWQ=\n".to_vec()),
        ("larger than 2048 bytes", vec![b'a'; 3000]),
        ("empty", Vec::new()),
    ];
    for (what, sig) in hostile {
        lab.put(&key, &sig);
        assert!(!trusted_now(), "{what} made the snapshot trusted");
        assert_eq!(latest(), signed, "{what} moved the trusted latest");
    }
    // The positive control: the key's own signature with the comment the
    // spec gives.
    let real = signer
        .sign(
            &bytes,
            &format!("blocksnap snapshot {id} height {}", unsigned.height),
        )
        .unwrap();
    lab.put(&key, &real);
    assert!(trusted_now(), "the spec's own signature was not accepted");
    assert_eq!(latest(), unsigned);
}

/// FORMAT.md §10 "Writers" and "Prune": a prune completes a pending commit
/// only when its fate is the claim of the attempt it names — `commit` and
/// the secret whose BLAKE3 names the attempt, in lower-case hex. Planted
/// claims (a wrong secret, the right one in another form, the first
/// release's bare `commit`, an oversize fate) and pending objects that do
/// not hash to their name are removed as junk and never become snapshots.
#[test]
fn pending_commits_are_completed_only_on_their_writers_claim() {
    let lab = Lab::new();
    let a = lab.snap(1, 100, None);
    let bytes = lab.repo.manifest_bytes(&a).unwrap();
    let id = a.id.to_hex();
    // As if its writer died after its claim and before its commit.
    lab.store.delete(&a.key()).unwrap();
    assert!(lab.repo.snapshots().unwrap().is_empty());

    let secret = [0xab; 32];
    let attempt = spec::attempt(&secret);
    let upper = format!("commit {}\n", hex::encode_upper(secret)).into_bytes();
    let hostile: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "a claim with another secret",
            bytes.clone(),
            spec::claim(&[8u8; 32]),
        ),
        ("the secret in upper-case hex", bytes.clone(), upper),
        (
            "the first release's bare claim",
            bytes.clone(),
            b"commit\n".to_vec(),
        ),
        (
            "a fate of 200 bytes",
            bytes.clone(),
            [spec::claim(&secret), vec![b' '; 130]].concat(),
        ),
        (
            "a pending object that does not hash to its name",
            [bytes.clone(), vec![0]].concat(),
            spec::claim(&secret),
        ),
    ];
    for (what, object, fate) in hostile {
        let pending = spec::pending_key(&id, &attempt);
        lab.put(&pending, &object);
        lab.put(&format!("{pending}.fate"), &fate);
        let r = lab.prune().unwrap();
        assert_eq!(r.pending_promoted, 0, "{what}: completed");
        assert_eq!(r.pending_junk, 1, "{what}: {r:?}");
        assert!(
            r.warnings.iter().any(|w| w.contains(&pending)),
            "{what}: not reported: {:?}",
            r.warnings
        );
        assert!(lab.store.list("pending/").unwrap().is_empty(), "{what}");
        assert!(
            lab.repo.snapshots().unwrap().is_empty(),
            "{what}: a snapshot appeared"
        );
    }
    // The positive control: the writer's own claim is completed.
    let pending = spec::pending_key(&id, &attempt);
    lab.put(&pending, &bytes);
    lab.put(&format!("{pending}.fate"), &spec::claim(&secret));
    let r = lab.prune().unwrap();
    assert_eq!(r.pending_promoted, 1, "{r:?}");
    assert_eq!(lab.repo.snapshots().unwrap(), vec![a]);
    lab.verify_all();
}

/// FORMAT.md §10 "Prune" and §6: a plan anyone could plant — well formed
/// and condemning a live snapshot's every chunk, or malformed — and epochs
/// that name no round, garbage, or the largest number never make prune
/// delete a chunk a snapshot needs, and never stop a snapshot from
/// committing or a prune from finishing.
#[test]
fn planted_plans_and_epochs_delete_nothing_a_snapshot_needs() {
    let lab = Lab::new();
    let a = lab.snap(1, 100, None);
    let mut condemned = lab.chunks(&a);
    condemned.push([0xee; 32]);
    condemned.sort();
    // Positive control for the encoder: a well-formed plan is a round prune
    // sweeps (once older than the grace) — deleting nothing that is live.
    lab.put(
        &spec::plan_key(1),
        &spec::envelope(5, 2, &spec::plan_body(1, 1, "mallory", &condemned)),
    );
    for (n, body) in [
        (3u64, &b"9 12345"[..]),
        (4, b"garbage"),
        (5, b""),
        (u64::MAX, b""),
    ] {
        lab.put(&spec::epoch_key(n), body);
    }
    lab.store.advance_clock(2 * DAY);
    let r = lab.prune().unwrap();
    assert!(
        r.swept.iter().any(|s| s.round == 1 && s.deleted == 0),
        "the planted plan was not swept as a round: {r:?}"
    );
    assert!(
        lab.whole(&a),
        "a planted plan deleted a live snapshot's chunks"
    );

    // Malformed plans: each is refused or reported, and deletes nothing.
    let mut unsorted = condemned.clone();
    unsorted.reverse();
    let long = "h".repeat(1025);
    let hostile: Vec<(&str, u64, Vec<u8>)> = vec![
        (
            "a round that is not its key's",
            7,
            spec::envelope(5, 2, &spec::plan_body(8, 1, "m", &condemned)),
        ),
        (
            "chunks out of order",
            7,
            spec::envelope(5, 2, &spec::plan_body(7, 1, "m", &unsorted)),
        ),
        (
            "a host of 1025 bytes",
            7,
            spec::envelope(5, 2, &spec::plan_body(7, 1, &long, &condemned)),
        ),
        ("trailer damaged", 7, {
            let mut o = spec::envelope(5, 2, &spec::plan_body(7, 1, "m", &condemned));
            *o.last_mut().unwrap() ^= 1;
            o
        }),
        (
            "the kind of a forget record",
            7,
            spec::envelope(4, 2, &spec::plan_body(7, 1, "m", &condemned)),
        ),
    ];
    for (k, (what, round, bytes)) in hostile.into_iter().enumerate() {
        // Each at a round of its own, left in place (nobody but a prune
        // deletes a plan).
        let round = round + 10 * k as u64;
        let bytes = if k == 0 {
            spec::envelope(5, 2, &spec::plan_body(round + 1, 1, "m", &condemned))
        } else {
            bytes
        };
        lab.put(&spec::plan_key(round), &bytes);
        lab.store.advance_clock(2 * DAY);
        match lab.prune() {
            Ok(r) => assert!(
                r.warnings
                    .iter()
                    .any(|w| w.contains(&spec::plan_key(round))),
                "{what}: neither refused nor reported: {r:?}"
            ),
            Err(e) => assert!(
                e.to_string().contains(&spec::plan_key(round)),
                "{what}: the error does not name the plan: {e}"
            ),
        }
        assert!(lab.whole(&a), "{what}: a live snapshot lost chunks");
        // The operator removes the object the message named.
        lab.store.delete(&spec::plan_key(round)).unwrap();
    }
    // Sweep markers with no plan, or beside a plan that does not decode
    // (planted, or left by the prunes above that stopped at a plan), stop
    // no writer.
    lab.put("prune/00000000000000000099.sweep-0001", b"");
    lab.put(&spec::plan_key(98), b"not a plan");
    lab.put("prune/00000000000000000098.sweep-0001", b"");
    let b = lab.snap(2, 200, None);
    // Prune names the plan it cannot read and deletes nothing; once the
    // operator removes it, prunes finish their rounds.
    let e = lab.prune().unwrap_err().to_string();
    assert!(e.contains(&spec::plan_key(98)), "{e}");
    lab.store.delete(&spec::plan_key(98)).unwrap();
    for _ in 0..2 {
        lab.store.advance_clock(2 * DAY);
        lab.prune().unwrap();
    }
    assert!(lab.whole(&a) && lab.whole(&b));
    lab.verify_all();
}

/// #20.10: prune read a `pending/` object of any listed size (a 3 GiB
/// sparse object exhausted its memory). One larger than a manifest can be
/// is junk without a byte of it read.
#[test]
fn a_pending_object_larger_than_a_manifest_is_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let store = Arc::new(blocksnap::store::CountingStore::new(LocalStore::open(
        &root,
    )));
    let repo = Repository::init(store.clone(), PARAMS, 1).unwrap();
    let id = hex::encode([3u8; 32]);
    let attempt = spec::attempt(&[4u8; 32]);
    let key = spec::pending_key(&id, &attempt);
    let opts = PruneOptions {
        host: "pruner".into(),
        ..Default::default()
    };
    // The requests of a prune of this repository without the object.
    let before = store.counts();
    prune::run(&repo, &opts, &Silent).unwrap();
    let baseline = store.counts().since(Some(before));
    std::fs::create_dir_all(root.join("pending")).unwrap();
    let f = std::fs::File::create(root.join(&key)).unwrap();
    f.set_len(3 << 30).unwrap();
    drop(f);
    let before = store.counts();
    let r = prune::run(&repo, &opts, &Silent).unwrap();
    let used = store.counts().since(Some(before));
    assert_eq!(r.pending_junk, 1, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains(&key)),
        "{:?}",
        r.warnings
    );
    assert!(store.inner().size(&key).unwrap().is_none(), "not removed");
    assert_eq!(used.get, baseline.get, "prune read the object");
}
