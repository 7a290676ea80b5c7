//! Reading a repository under trust: which snapshots a trusted key vouches
//! for (`--trust`), the newest of them, and signing what is already there
//! (`blocksnap sign`). The signature objects themselves and the keys are
//! [`crate::repo::sign`]'s; this module joins them to a [`Repository`].

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::layout;
use crate::repo::sign::{Signatures, Signer, Subject, Trust, Verdict};
use crate::repo::Repository;

/// Checks one snapshot's manifest against the trusted keys.
pub fn check_snapshot(
    repo: &Repository,
    trust: &Trust,
    listed: &Signatures,
    key: &layout::SnapshotKey,
) -> Result<Verdict> {
    let bytes = repo.manifest_bytes(key)?;
    Ok(trust.check(&**repo.store(), listed, &Subject::Snapshot(*key), &bytes))
}

/// The one snapshot `selector` names, among those a trusted key signed:
/// `latest` is the newest trusted snapshot (of `host`), a height the newest
/// trusted one at that height; anything else named that is not trusted is
/// refused, naming the snapshot and the keys.
pub fn resolve_trusted(
    repo: &Repository,
    trust: &Trust,
    selector: &crate::repo::Selector,
    host: Option<&str>,
) -> Result<layout::SnapshotKey> {
    use crate::repo::Selector;
    let listed = Signatures::list(&**repo.store())?;
    let keys: Vec<String> = trust.ids().iter().map(|k| k.to_string()).collect();
    let newest = |candidates: Vec<layout::SnapshotKey>, what: String| {
        // Only snapshots a trusted key has a signature object for are read
        // at all: a pile of newer unsigned ones costs one listing, not a
        // download each.
        for key in candidates
            .iter()
            .rev()
            .filter(|k| trust.may_vouch(&listed, &Subject::Snapshot(**k)))
        {
            if check_snapshot(repo, trust, &listed, key).is_ok_and(|v| v.trusted()) {
                return Ok(*key);
            }
        }
        Err(Error::Refused(format!(
            "no {what} is signed by a trusted key ({}){}",
            keys.join(", "),
            if candidates.is_empty() {
                String::new()
            } else {
                format!("; {} snapshot(s) are not", candidates.len())
            }
        )))
    };
    match selector {
        Selector::Latest => newest(repo.resolve_for(&Selector::All, host)?, "snapshot".into()),
        Selector::Height(h) => {
            let at: Vec<_> = repo
                .resolve_for(&Selector::All, host)?
                .into_iter()
                .filter(|k| k.height == *h)
                .collect();
            newest(at, format!("snapshot at height {h}"))
        }
        other => {
            let key = repo.resolve_for(other, host)?[0];
            let verdict = check_snapshot(repo, trust, &listed, &key)?;
            if verdict.trusted() {
                Ok(key)
            } else {
                Err(Error::Refused(format!(
                    "snapshot {} is not trusted: {}",
                    key.key(),
                    verdict.why_not(trust)
                )))
            }
        }
    }
}

/// What `blocksnap sign` signed: each snapshot with what its manifest says
/// (so the operator sees what the key now vouches for).
#[derive(Debug, Clone, Serialize)]
pub struct SignedSnapshot {
    #[serde(serialize_with = "snapshot_key")]
    pub key: layout::SnapshotKey,
    pub host: String,
    pub source: String,
    pub tags: Vec<String>,
    pub files: u64,
    pub logical_bytes: u64,
}

fn snapshot_key<S: serde::Serializer>(
    k: &layout::SnapshotKey,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&k.key())
}

/// Signs snapshots already in the repository (`blocksnap sign`). A
/// signature vouches for every byte a restore writes, so what is signed
/// must be what the operator means: a snapshot named by its full id, or —
/// with `trust` — one a trusted key already signed (a second key
/// co-signing). `latest`, a height, an id prefix or `all` name whatever the
/// repository holds, which another writer (or a co-tenant of the bucket)
/// may have put there: without `trust` they are refused.
pub fn sign_snapshots(
    repo: &Repository,
    signer: &Signer,
    selectors: &[crate::repo::Selector],
    host: Option<&str>,
    trust: Option<&Trust>,
) -> Result<Vec<SignedSnapshot>> {
    use crate::repo::Selector;
    let listed = match trust {
        Some(_) => Signatures::list(&**repo.store())?,
        None => Signatures::default(),
    };
    let mut keys = Vec::new();
    for sel in selectors {
        let full_id = matches!(sel, Selector::Id(p) if p.len() == 64);
        match (trust, sel) {
            (None, _) if !full_id => {
                return Err(Error::Refused(format!(
                    "`sign {sel}` would sign whatever the repository holds under that name, which \
                     another writer may have put there: name each snapshot by its full id (64 hex \
                     digits, from `blocksnap list`), or give --trust KEY to co-sign only what a \
                     trusted key signed"
                )))
            }
            (None, _) => keys.extend(repo.resolve_for(sel, host)?),
            // Every snapshot a trusted key signed; the others are not this
            // key's to vouch for.
            (Some(t), Selector::All) => {
                for key in repo.resolve_for(sel, host)? {
                    if check_snapshot(repo, t, &listed, &key).is_ok_and(|v| v.trusted()) {
                        keys.push(key);
                    }
                }
            }
            (Some(t), _) => keys.push(resolve_trusted(repo, t, sel, host)?),
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        crate::sys::interrupt::check()?;
        let bytes = repo.manifest_bytes(&key)?;
        let subject = Subject::Snapshot(key);
        let m =
            crate::format::manifest::Manifest::decode(&bytes).map_err(Error::format(key.key()))?;
        signer.sign_subject(&**repo.store(), &subject, &bytes)?;
        out.push(SignedSnapshot {
            key,
            host: m.host,
            source: m.source,
            tags: m.tags,
            files: m.stats.files,
            logical_bytes: m.stats.logical_bytes,
        });
    }
    Ok(out)
}
