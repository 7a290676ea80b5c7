//! Signed snapshots (issue #15): a reader with `--trust` believes only what
//! a trusted key signed, and says which snapshot and which keys when it
//! refuses.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blocksnap::chunking::DEFAULT_PARAMS;
use blocksnap::forget::{self, ForgetOptions};
use blocksnap::format::layout::SnapshotKey;
use blocksnap::list;
use blocksnap::progress::Silent;
use blocksnap::sign::{self, Signed, Signer, Trust};
use blocksnap::snapshot::{self, SnapshotOptions};
use blocksnap::store::{LocalStore, Store};
use blocksnap::verify::{self, Level, ProblemKind, VerifyOptions};
use blocksnap::{Repository, Selector};

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

/// A new key pair under the lab: (signer, path of the .pub file).
fn key(lab: &Lab, name: &str) -> (Arc<Signer>, PathBuf) {
    let path = lab.tmp.path().join(name);
    sign::generate(&path, None).unwrap();
    let signer = Arc::new(Signer::load(&path).unwrap());
    (signer, lab.tmp.path().join(format!("{name}.pub")))
}

fn snap(lab: &Lab, height: u64, signer: Option<&Arc<Signer>>) -> SnapshotKey {
    let opts = SnapshotOptions {
        source: lab.source.clone(),
        height,
        signer: signer.cloned(),
        ..Default::default()
    };
    snapshot::snapshot(&lab.repo, &opts, &Silent).unwrap().key
}

fn trust(pubs: &[&Path]) -> Trust {
    let specs: Vec<String> = pubs.iter().map(|p| p.display().to_string()).collect();
    Trust::parse(&specs).unwrap()
}

fn refused(lab: &Lab, t: &Trust, sel: Selector) -> String {
    blocksnap::trusted::resolve_trusted(&lab.repo, t, &sel, None)
        .unwrap_err()
        .to_string()
}

fn untrusted(lab: &Lab, t: Trust, keys: &[SnapshotKey], chain: bool) -> Vec<String> {
    let opts = VerifyOptions {
        chain,
        trust: Some(Arc::new(t)),
        ..VerifyOptions::from(Level::Quick)
    };
    let report = verify::verify(&lab.repo, keys, opts, &Silent).unwrap();
    report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Untrusted)
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn only_what_a_trusted_key_signed_is_believed_and_refusals_name_snapshot_and_keys() {
    let lab = lab();
    let (a, a_pub) = key(&lab, "a.key");
    let (b, _) = key(&lab, "b.key");
    let signed = snap(&lab, 10, Some(&a));
    let t = trust(&[&a_pub]);
    assert_eq!(
        blocksnap::trusted::resolve_trusted(&lab.repo, &t, &Selector::Latest, None).unwrap(),
        signed
    );
    assert!(untrusted(&lab, trust(&[&a_pub]), &[signed], false).is_empty());

    // Newer, but unsigned: `latest` stays the signed one; named, refused.
    let unsigned = snap(&lab, 11, None);
    assert_eq!(
        blocksnap::trusted::resolve_trusted(&lab.repo, &t, &Selector::Latest, None).unwrap(),
        signed
    );
    let err = refused(&lab, &t, Selector::Height(11));
    assert!(
        err.contains("height 11") && err.contains(&a.key_id().to_string()),
        "{err}"
    );
    let err = refused(&lab, &t, Selector::Id(unsigned.id.to_hex()));
    assert!(
        err.contains(&unsigned.key()) && err.contains("not signed"),
        "{err}"
    );

    // Forged: signed by another key only.
    let forged = snap(&lab, 12, Some(&b));
    let err = refused(&lab, &t, Selector::Id(forged.id.to_hex()));
    assert!(
        err.contains(&forged.key())
            && err.contains(&format!("signed by {}, not a trusted key", b.key_id()))
            && err.contains(&format!("trusted: {}", a.key_id())),
        "{err}"
    );

    // A's signature moved to the forged snapshot's id.
    let moved = sign::signature_key(&forged.id, a.key_id(), Signed::Manifest);
    let original = lab
        .store
        .get(
            &sign::signature_key(&signed.id, a.key_id(), Signed::Manifest),
            4096,
        )
        .unwrap();
    lab.store.put_if_absent(&moved, &original).unwrap();
    let err = refused(&lab, &t, Selector::Id(forged.id.to_hex()));
    assert!(
        err.contains(&forged.key())
            && err.contains(&format!("the signature by {} does not verify", a.key_id())),
        "{err}"
    );

    // A truncated signature object.
    let sig_path = lab.tmp.path().join("repo").join(sign::signature_key(
        &signed.id,
        a.key_id(),
        Signed::Manifest,
    ));
    std::fs::write(&sig_path, &original[..original.len() / 2]).unwrap();
    let err = refused(&lab, &t, Selector::Height(10));
    assert!(err.contains("no snapshot at height 10"), "{err}");
    let err = refused(&lab, &t, Selector::Id(signed.id.to_hex()));
    assert!(
        err.contains(&signed.key()) && err.contains("does not verify"),
        "{err}"
    );

    // verify reports each with the snapshot and the keys; list says who
    // signed what.
    let all = lab.repo.resolve(&Selector::All).unwrap();
    let problems = untrusted(&lab, trust(&[&a_pub]), &all, false);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for k in [&signed, &unsigned, &forged] {
        assert!(problems.iter().any(|p| p.contains(&k.key())), "{k:?}");
    }
    let listed = list::list(&lab.repo, None, None).unwrap();
    let by: Vec<_> = listed.iter().map(|l| l.signed_by.clone()).collect();
    assert_eq!(
        by,
        vec![vec![a.key_id()], vec![], {
            let mut v = vec![a.key_id(), b.key_id()];
            v.sort();
            v
        }]
    );
    let listed = list::list(&lab.repo, None, Some(&t)).unwrap();
    assert!(listed.iter().all(|l| l.trusted == Some(false)));

    // Signing it again later (`blocksnap sign`) repairs nothing that is
    // there: the damaged object is kept; a second key's signature is added.
    let (c, c_pub) = key(&lab, "c.key");
    c.sign_snapshot(
        &**lab.repo.store(),
        &signed,
        &lab.repo.manifest_bytes(&signed).unwrap(),
    )
    .unwrap();
    let both = trust(&[&a_pub, &c_pub]);
    assert_eq!(
        blocksnap::trusted::resolve_trusted(&lab.repo, &both, &Selector::Latest, None).unwrap(),
        signed
    );
}

/// The manifest cache stands only for the very key it was read under: a
/// key planted with a signed snapshot's id and another height is refused
/// (before, a cache hit checked only the id, and `list --trust` called the
/// planted key trusted).
#[test]
fn a_key_reusing_a_signed_snapshots_id_is_not_trusted_from_the_cache() {
    let lab = lab();
    let (a, a_pub) = key(&lab, "a.key");
    let signed = snap(&lab, 10, Some(&a));
    let cache = lab.tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let repo = Repository::open(lab.store.clone())
        .unwrap()
        .with_manifest_cache(&cache);
    let bytes = repo.manifest_bytes(&signed).unwrap();
    let planted = SnapshotKey {
        height: 99_999,
        ..signed
    };
    lab.store.put_if_absent(&planted.key(), &bytes).unwrap();
    assert!(repo.manifest_bytes(&planted).is_err());
    let t = trust(&[&a_pub]);
    assert_eq!(
        blocksnap::trusted::resolve_trusted(&repo, &t, &Selector::Latest, None).unwrap(),
        signed
    );
    let listed = list::list(&repo, None, Some(&t)).unwrap();
    let planted_row = listed.iter().find(|l| l.key == planted.key()).unwrap();
    assert_eq!(planted_row.trusted, Some(false));
}

#[test]
fn a_trusted_history_tells_an_authorised_forget_from_a_deletion() {
    let lab = lab();
    let (a, a_pub) = key(&lab, "a.key");
    let first = snap(&lab, 1, Some(&a));
    let second = snap(&lab, 2, Some(&a));
    common::advance(&lab.source, 5);
    let third = snap(&lab, 3, Some(&a));
    let forget_one = |sel: Selector, signer: Option<Arc<Signer>>| {
        let opts = ForgetOptions {
            named: vec![sel],
            now_unix_ns: forget::now(),
            signer,
            ..Default::default()
        };
        let plan = forget::plan(&lab.repo, &opts).unwrap();
        forget::execute(&lab.repo, &plan, &opts, &Silent).unwrap();
    };
    // An authorised forget: signed. The chain through it holds.
    forget_one(Selector::Id(first.id.to_hex()), Some(a.clone()));
    let problems = untrusted(&lab, trust(&[&a_pub]), &[second, third], true);
    assert!(problems.is_empty(), "{problems:#?}");
    // A forget nobody trusted signed (or a deletion dressed as one).
    forget_one(Selector::Id(second.id.to_hex()), None);
    let opts = VerifyOptions {
        chain: true,
        trust: Some(Arc::new(trust(&[&a_pub]))),
        ..VerifyOptions::from(Level::Quick)
    };
    let report = verify::verify(&lab.repo, &[third], opts, &Silent).unwrap();
    let kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
    assert!(
        kinds.contains(&ProblemKind::Untrusted) && kinds.contains(&ProblemKind::BrokenChain),
        "{:#?}",
        report.problems
    );
    let text: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|p| p.contains(&second.id.to_hex()) && p.contains("forget record")),
        "{text:#?}"
    );
    // Prune reclaims the forgotten snapshots' chunks and keeps every
    // signature: the remaining snapshot's, and the forgotten ones' beside
    // their records.
    let signatures = |lab: &Lab| lab.store.list("signatures/").unwrap().len();
    let before = signatures(&lab);
    let pruned = blocksnap::prune::run(
        &lab.repo,
        &blocksnap::prune::PruneOptions {
            instant: true,
            host: blocksnap::repo::this_host(),
            ..Default::default()
        },
        &Silent,
    )
    .unwrap();
    assert!(pruned.swept.iter().map(|s| s.deleted).sum::<u64>() > 0);
    assert_eq!(signatures(&lab), before);
    assert!(untrusted(&lab, trust(&[&a_pub]), &[third], false).is_empty());
    // Without --trust the same history is sound.
    let report = verify::verify(
        &lab.repo,
        &[third],
        VerifyOptions {
            chain: true,
            ..VerifyOptions::from(Level::Quick)
        },
        &Silent,
    )
    .unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

/// The vector (format-spec/vectors/objects/signature/): a fixed key pair,
/// the vectors' manifest object, and the exact signature object over it.
/// minisign signatures are randomised, so regenerating (with
/// BLOCKSNAP_REGEN_VECTORS=1) makes new bytes; checking never does.
#[test]
fn the_signature_vector_verifies_and_nothing_else_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/objects");
    let sig_dir = dir.join("signature");
    let manifest = std::fs::read(dir.join("manifest.bin")).unwrap();
    let key_file = sig_dir.join("test.key");
    if std::env::var_os("BLOCKSNAP_REGEN_VECTORS").is_some() {
        let _ = std::fs::remove_dir_all(&sig_dir);
        std::fs::create_dir_all(&sig_dir).unwrap();
        sign::generate(&key_file, None).unwrap();
        let signer = Signer::load(&key_file).unwrap();
        let id = blocksnap::Hash::of(&manifest);
        let object = signer
            .sign(
                &manifest,
                &format!("blocksnap snapshot {} height 1000", id.to_hex()),
            )
            .unwrap();
        std::fs::write(sig_dir.join("manifest.minisig"), object).unwrap();
    }
    let sig = std::fs::read(sig_dir.join("manifest.minisig")).unwrap();
    let public = std::fs::read_to_string(sig_dir.join("test.key.pub")).unwrap();
    let line = public
        .lines()
        .find(|l| !l.starts_with("untrusted comment:") && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string();
    let pk = minisign::PublicKey::from_base64(&line).unwrap();
    let verifies = |m: &[u8], s: &[u8]| {
        sign::decode(s).is_ok_and(|b| {
            minisign::verify(&pk, &b, std::io::Cursor::new(m), true, false, false).is_ok()
        })
    };
    assert!(verifies(&manifest, &sig));
    // The key id in the object is the public key's.
    let signer = Signer::load(&key_file).unwrap();
    assert_eq!(signer.public_line(), line);
    assert!(std::str::from_utf8(&sig)
        .unwrap()
        .contains(&signer.key_id().to_string()));
    let mut flipped = manifest.clone();
    flipped[manifest.len() / 2] ^= 1;
    assert!(!verifies(&flipped, &sig));
    assert!(!verifies(&manifest, &sig[..sig.len() - 10]));
    // A changed character in the signature line or in the global
    // signature line (the untrusted comment is, as its name says, free).
    let text = std::str::from_utf8(&sig).unwrap();
    for line in [1, 3] {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let c = lines[line].remove(10);
        lines[line].insert(10, if c == 'A' { 'B' } else { 'A' });
        let bad = lines.join("\n") + "\n";
        assert!(!verifies(&manifest, bad.as_bytes()), "line {line}");
    }
}
