//! Fault injection into repository objects, shared by the local, memory and
//! S3 fault runs: one fault at a time (a flipped bit, a truncation, an
//! appended tail, a deleted object) in a chunk or a manifest, then a full
//! verify that must name the damage, and a restore that must refuse it.
//! "Silently accepted" means: verify finds nothing, or a restore completes
//! with bytes other than the snapshot's.

use std::collections::{BTreeMap, BTreeSet};

use blocksnap::format::layout::{self, SnapshotKey};
use blocksnap::progress::Silent;
use blocksnap::restore::{self, RestoreOptions};
use blocksnap::verify::{self, Level};
use blocksnap::{Hash, Repository};

/// splitmix64: small, seedable, good enough to spread faults.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Flip { offset: usize, bit: u8 },
    Truncate { len: usize },
    Append { extra: usize },
    Delete,
}

impl Fault {
    pub fn random(rng: &mut Rng, len: usize) -> Fault {
        match rng.below(4) {
            0 | 1 => Fault::Flip {
                offset: rng.below(len as u64) as usize,
                bit: rng.below(8) as u8,
            },
            2 => Fault::Truncate {
                len: rng.below(len as u64) as usize,
            },
            _ if rng.below(2) == 0 => Fault::Append {
                extra: 1 + rng.below(64) as usize,
            },
            _ => Fault::Delete,
        }
    }

    /// The damaged bytes, or `None` for a deleted object.
    pub fn apply(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut b = bytes.to_vec();
        match *self {
            Fault::Flip { offset, bit } => b[offset] ^= 1 << bit,
            Fault::Truncate { len } => b.truncate(len),
            Fault::Append { extra } => b.extend(std::iter::repeat_n(0xA5, extra)),
            Fault::Delete => return None,
        }
        Some(b)
    }
}

/// What the pristine repository holds: every snapshot, and for every chunk
/// the (snapshot, path) pairs that reference it.
pub struct Census {
    pub snapshots: Vec<SnapshotKey>,
    pub chunk_refs: BTreeMap<Hash, BTreeSet<(String, String)>>,
}

impl Census {
    pub fn of(repo: &Repository) -> Census {
        let snapshots = repo.snapshots().unwrap();
        let mut chunk_refs: BTreeMap<Hash, BTreeSet<(String, String)>> = BTreeMap::new();
        for k in &snapshots {
            let m = repo.load_manifest(k).unwrap();
            for (e, _, _, chunks) in m.files() {
                for c in chunks {
                    chunk_refs
                        .entry(c.id)
                        .or_default()
                        .insert((k.key(), e.path.clone()));
                }
            }
        }
        Census {
            snapshots,
            chunk_refs,
        }
    }

    /// Every object a fault may hit: manifests and chunks.
    pub fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self.snapshots.iter().map(|k| k.key()).collect();
        v.extend(self.chunk_refs.keys().map(layout::chunk_key));
        v
    }
}

/// Checks that the damage to `key` is reported by a full verify of every
/// snapshot (with the file and chunk, or the snapshot) and, when `restore_to`
/// is given, refused by a restore of a snapshot that needs it. Returns a
/// description of what went wrong, `None` when the damage was caught.
pub fn caught(
    repo: &Repository,
    census: &Census,
    key: &str,
    restore_to: Option<&std::path::Path>,
) -> Option<String> {
    let report = match verify::verify(repo, &census.snapshots, Level::Full, &Silent) {
        Ok(r) => r,
        Err(e) => return Some(format!("verify failed outright: {e}")),
    };
    let chunk = layout::parse_chunk_key(key);
    let named = report.problems.iter().any(|p| match chunk {
        Some(id) => {
            p.chunk.as_deref() == Some(id.to_hex().as_str())
                && p.path.as_ref().is_some_and(|path| {
                    census.chunk_refs[&id]
                        .iter()
                        .any(|(_, referencing)| referencing == path)
                })
                && p.snapshot.is_some()
        }
        None => p.snapshot.as_deref() == Some(key),
    });
    if !named {
        return Some(format!(
            "verify did not name the damage to {key}: {:?}",
            report.problems
        ));
    }
    let target = restore_to?;
    let snapshot = match chunk {
        Some(id) => {
            let (snap, _) = census.chunk_refs[&id].iter().next().unwrap();
            SnapshotKey::parse(snap).unwrap()
        }
        None => SnapshotKey::parse(key).unwrap(),
    };
    let _ = std::fs::remove_dir_all(target);
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        ip: Some("10.1.2.3".into()),
        ..Default::default()
    };
    let result = restore::plan(repo, &snapshot, &opts)
        .and_then(|plan| restore::restore(repo, &plan, &opts, &Silent));
    match result {
        Ok(_) => Some(format!(
            "restore of {} accepted the damage to {key}",
            snapshot.key()
        )),
        Err(e) => {
            let msg = e.to_string();
            let names = match chunk {
                Some(id) => msg.contains(&id.to_hex()),
                None => msg.contains(key),
            };
            (!names).then(|| format!("restore's error does not name {key}: {msg}"))
        }
    }
}
