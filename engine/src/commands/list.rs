//! Listing snapshots: what `blocksnap list` shows, read from the manifests
//! alone (no chunk is touched).

use serde::Serialize;

use crate::error::Result;
use crate::repo::sign::{KeyId, Signatures, Signed, Subject, Trust};
use crate::repo::Repository;

#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub height: u64,
    pub id: String,
    pub created_unix_ns: u64,
    pub key: String,
    /// Present when the manifest could be read.
    pub info: Option<ListedInfo>,
    /// Why the manifest could not be read.
    pub error: Option<String>,
    /// Keys with a signature object for it (not checked without a trust).
    pub signed_by: Vec<KeyId>,
    /// With trusted keys given: whether a trusted key's signature verifies.
    pub trusted: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListedInfo {
    pub tags: Vec<String>,
    pub source: String,
    /// The node that took it; empty for version 1 snapshots.
    pub host: String,
    pub files: u64,
    pub logical_bytes: u64,
    pub new_chunks: u64,
    pub new_stored_bytes: u64,
    pub parent: Option<String>,
    pub warnings: Vec<String>,
    /// The hash of the block at the snapshot's height, when it was read
    /// from the node's database.
    pub block: Option<String>,
}

/// Every snapshot, or with `host` only that node's (an unreadable manifest
/// is listed either way: its host is unknown). With `trust`, each
/// snapshot's signatures by those keys are checked.
pub fn list(repo: &Repository, host: Option<&str>, trust: Option<&Trust>) -> Result<Vec<Listed>> {
    let keys = repo.snapshots()?;
    let signatures = Signatures::list(&**repo.store())?;
    // One GET per manifest not in the cache, several in flight.
    let listed = repo.map_manifests(&keys, |k, manifest| {
        let (info, error) = match manifest {
            Ok(m) => (
                Some(ListedInfo {
                    tags: m.tags,
                    source: m.source,
                    host: m.host,
                    files: m.stats.files,
                    logical_bytes: m.stats.logical_bytes,
                    new_chunks: m.stats.new_chunks,
                    new_stored_bytes: m.stats.new_stored_bytes,
                    parent: m.parent.map(|p| p.to_hex()),
                    warnings: m.warnings,
                    block: m.block.map(|b| b.to_hex()),
                }),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        };
        let trusted = trust.map(|t| {
            repo.manifest_bytes(k).is_ok_and(|bytes| {
                t.check(&**repo.store(), &signatures, &Subject::Snapshot(*k), &bytes)
                    .trusted()
            })
        });
        Listed {
            height: k.height,
            id: k.id.to_hex(),
            created_unix_ns: k.created_unix_ns,
            key: k.key(),
            info,
            error,
            signed_by: signatures.signers(&k.id, Signed::Manifest),
            trusted,
        }
    })?;
    Ok(listed
        .into_iter()
        .filter(|l| match (host, &l.info) {
            (Some(h), Some(i)) => i.host == h,
            _ => true,
        })
        .collect())
}
