//! Publishing the repository index (FORMAT.md §12): a listing of every
//! object but the chunks, written as the one object a writer replaces, so
//! that static mirrors and CDNs (GET only) can be read. A repository
//! publishes one once `blocksnap index` wrote it; from then on every writer
//! (snapshot, import, copy, forget, prune) rewrites it after its own last
//! durable write.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::index::{Index, Listed, INDEX_KEY};
use crate::format::layout;
use crate::repo::sign::{index_comment, KeyId};
use crate::repo::{now_unix_ns, Repository};

/// What a reader through a mirror knows of the index it reads.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorIndex {
    pub created_unix_ns: u64,
    pub objects: u64,
    /// The trusted key that signed it (checked only with `--trust`).
    pub trusted_by: Option<KeyId>,
    pub signed: bool,
}

/// Every prefix but `chunks/`.
const PREFIXES: [&str; 6] = [
    layout::SNAPSHOTS_PREFIX,
    layout::FORGOTTEN_PREFIX,
    layout::SIGNATURES_PREFIX,
    layout::EPOCHS_PREFIX,
    layout::PENDING_PREFIX,
    layout::PRUNE_PREFIX,
];

impl Repository {
    /// Lists the repository (but its chunks) and writes the index; durable
    /// when this returns.
    pub fn publish_index(&self) -> Result<Index> {
        let store = self.store();
        let mut objects = Vec::new();
        if let Some(size) = store.size(layout::CONFIG_KEY)? {
            objects.push(Listed {
                key: layout::CONFIG_KEY.to_string(),
                size,
                modified_unix_ns: 0,
            });
        }
        for prefix in PREFIXES {
            objects.extend(store.list(prefix)?.into_iter().map(|o| Listed {
                key: o.key,
                size: o.size,
                modified_unix_ns: o.modified_unix_ns,
            }));
        }
        let index = Index::new(now_unix_ns(), objects);
        let body = index.encode();
        let bytes = match &self.signer {
            Some(signer) => {
                let sig = signer.sign(&body, &index_comment(index.created_unix_ns))?;
                Index::with_signature(&body, &sig)
            }
            None => body,
        };
        store.put_replace(INDEX_KEY, &bytes)?;
        store.flush()?;
        Ok(index)
    }

    /// Reading through a mirror: the index its listings come from, checked
    /// against the trusted keys when this handle has some (an index no
    /// trusted key signed is refused: a mirror could serve an old one to
    /// hide newer snapshots, and only a signed creation time tells).
    /// `None` for a store that lists.
    pub fn mirror_index(&self) -> Result<Option<MirrorIndex>> {
        let Some(bytes) = self.store().published_index() else {
            return Ok(None);
        };
        let bytes = bytes?;
        let where_ = || format!("{}/{INDEX_KEY}", self.store().location());
        let index = Index::decode(&bytes).map_err(Error::format(where_()))?;
        let mut trusted_by = None;
        if let Some(trust) = self.trust() {
            let Some((sig, body)) = &index.signature else {
                return Err(Error::Refused(format!(
                    "{}: the mirror's index is not signed, and --trust believes only what a \
                     trusted key signed (sign it with `blocksnap index --sign KEY` on the \
                     repository; writers with --sign keep it signed)",
                    where_()
                )));
            };
            let comment = index_comment(index.created_unix_ns);
            let kid = trust
                .check_embedded(sig, &bytes[..*body], &comment, "index")
                .map_err(|why| {
                    Error::Refused(format!(
                        "{}: the mirror's index is not signed by a trusted key: {why}",
                        where_()
                    ))
                })?;
            trusted_by = Some(kid);
        }
        Ok(Some(MirrorIndex {
            created_unix_ns: index.created_unix_ns,
            objects: index.objects.len() as u64,
            trusted_by,
            signed: index.signature.is_some(),
        }))
    }

    /// After a write: rewrites the index if the repository publishes one.
    /// A failure is a warning: the write itself stands, and the next
    /// writer's index names it.
    pub fn refresh_index(&self) -> Option<String> {
        let refreshed = match self.store().size(INDEX_KEY) {
            Ok(None) => return None,
            Ok(Some(_)) => self.publish_index().map(|_| ()),
            Err(e) => Err(e),
        };
        refreshed.err().map(|e| {
            let w = format!("the repository's index was not rewritten: {e}");
            tracing::warn!("{w}");
            w
        })
    }
}
