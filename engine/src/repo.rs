//! A repository: a store plus its config, and the operations every command
//! shares — finding snapshots, loading and checking manifests and chunks,
//! and committing a manifest.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::config::{ChunkerParams, RepoConfig};
use crate::format::envelope::{HEADER_LEN, TRAILER_LEN};
use crate::format::layout::{self, SnapshotKey};
use crate::format::limits;
use crate::format::manifest::{ChunkRef, Manifest};
use crate::format::FormatError;
use crate::id::Hash;
use crate::store::Store;

/// Largest chunk object a reader fetches: the raw limit plus zstd's
/// worst-case frame overhead and the header.
pub const MAX_CHUNK_OBJECT: u64 =
    limits::MAX_CHUNK_BYTES + limits::MAX_CHUNK_BYTES / 128 + 1024 + HEADER_LEN as u64;

const MAX_MANIFEST_OBJECT: u64 = limits::MAX_MANIFEST_BYTES + (HEADER_LEN + TRAILER_LEN) as u64;

pub struct Repository {
    store: Arc<dyn Store>,
    config: RepoConfig,
}

/// Which snapshots a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The highest height; among several at that height, the newest.
    Latest,
    /// The newest snapshot at this height.
    Height(u64),
    /// The snapshot whose id starts with these hex digits (at least 8).
    Id(String),
    All,
}

impl std::str::FromStr for Selector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Selector> {
        match s {
            "latest" => Ok(Selector::Latest),
            "all" => Ok(Selector::All),
            _ if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse()
                .map(Selector::Height)
                .map_err(|_| Error::BadSelector { given: s.into() }),
            _ if (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Selector::Id(s.to_ascii_lowercase()))
            }
            _ => Err(Error::BadSelector { given: s.into() }),
        }
    }
}

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Repository {
    /// Creates a repository in an empty store. Fails if one exists there.
    pub fn init(
        store: Arc<dyn Store>,
        chunker: ChunkerParams,
        zstd_level: i32,
    ) -> Result<Repository> {
        chunker
            .validate()
            .map_err(Error::format("chunker parameters"))?;
        let created_unix_ns = now_unix_ns();
        let config = RepoConfig {
            id: Hash::of(
                format!(
                    "{created_unix_ns}-{}-{}",
                    std::process::id(),
                    store.location()
                )
                .as_bytes(),
            ),
            created_unix_ns,
            chunker,
            zstd_level,
        };
        // Asking first narrows the window on servers that ignore
        // If-None-Match; reading back closes it: if a racing `init` (or
        // such a server) left another config, this one did not win.
        let exists = || Error::RepositoryExists {
            location: store.location(),
        };
        if store.size(layout::CONFIG_KEY)?.is_some() {
            return Err(exists());
        }
        let bytes = config.encode();
        if !store.put_if_absent(layout::CONFIG_KEY, &bytes)? {
            return Err(exists());
        }
        store.flush()?;
        if store.get(layout::CONFIG_KEY, limits::MAX_CONFIG_BYTES)? != bytes {
            return Err(Error::Refused(format!(
                "another `blocksnap init` wrote a different config to {} at the same moment, and the \
                 store let both writes through; that one stands, this one does not (use the repository \
                 as it is)",
                store.location()
            )));
        }
        Ok(Repository { store, config })
    }

    pub fn open(store: Arc<dyn Store>) -> Result<Repository> {
        let bytes = match store.get(layout::CONFIG_KEY, limits::MAX_CONFIG_BYTES) {
            Err(e) if e.is_missing() => {
                return Err(Error::NoRepository {
                    location: store.location(),
                })
            }
            other => other?,
        };
        let config = RepoConfig::decode(&bytes).map_err(Error::format(layout::CONFIG_KEY))?;
        Ok(Repository { store, config })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// All snapshots, oldest first. Keys under `snapshots/` that are not
    /// snapshot keys are returned apart, for verify to report.
    pub fn snapshots_and_strays(&self) -> Result<(Vec<SnapshotKey>, Vec<String>)> {
        let mut keys = Vec::new();
        let mut strays = Vec::new();
        for (key, _) in self.store.list(layout::SNAPSHOTS_PREFIX)? {
            match SnapshotKey::parse(&key) {
                Ok(k) => keys.push(k),
                Err(_) => strays.push(key),
            }
        }
        keys.sort();
        Ok((keys, strays))
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotKey>> {
        Ok(self.snapshots_and_strays()?.0)
    }

    pub fn resolve(&self, selector: &Selector) -> Result<Vec<SnapshotKey>> {
        let all = self.snapshots()?;
        let picked: Vec<SnapshotKey> = match selector {
            Selector::All => all,
            Selector::Latest => all.last().copied().into_iter().collect(),
            Selector::Height(h) => all
                .iter()
                .rev()
                .find(|k| k.height == *h)
                .copied()
                .into_iter()
                .collect(),
            Selector::Id(prefix) => {
                let found: Vec<_> = all
                    .into_iter()
                    .filter(|k| k.id.to_hex().starts_with(prefix.as_str()))
                    .collect();
                if found.len() > 1 {
                    return Err(Error::BadSelector {
                        given: format!("{prefix} (matches {} snapshots)", found.len()),
                    });
                }
                found
            }
        };
        // `all` of an empty repository is nothing, not an error: an audit
        // of a new repository has nothing to report.
        if picked.is_empty() && *selector != Selector::All {
            return Err(Error::NoSnapshot {
                selector: match selector {
                    Selector::Latest => "latest".into(),
                    Selector::All => "all".into(),
                    Selector::Height(h) => h.to_string(),
                    Selector::Id(p) => p.clone(),
                },
            });
        }
        Ok(picked)
    }

    /// Loads a manifest and checks it against its key: the bytes must hash to
    /// the id in the key, and height and time must agree.
    pub fn load_manifest(&self, key: &SnapshotKey) -> Result<Manifest> {
        let name = key.key();
        let bytes = self.store.get(&name, MAX_MANIFEST_OBJECT)?;
        let actual = Hash::of(&bytes);
        if actual != key.id {
            // Tell a cut-short object from a changed one: the header knows.
            let detail = match Manifest::decode(&bytes) {
                Err(e @ FormatError::Truncated(_)) => e,
                _ => FormatError::corrupt(format!(
                    "manifest bytes hash to {actual}, not to the id in its name"
                )),
            };
            return Err(Error::Format {
                key: name,
                cause: detail,
            });
        }
        let manifest = Manifest::decode(&bytes).map_err(Error::format(&name))?;
        if manifest.height != key.height || manifest.created_unix_ns != key.created_unix_ns {
            return Err(Error::Format {
                key: name,
                cause: FormatError::corrupt("height or time in the manifest differ from its name"),
            });
        }
        Ok(manifest)
    }

    /// Fetches a chunk and returns its bytes, checked against its id. A
    /// chunk that does not check out is fetched once more before it is
    /// reported: over a network the damage may have been in transit, not in
    /// the store.
    pub fn read_chunk(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        match self.read_chunk_once(chunk) {
            Err(Error::Format { .. }) => self.read_chunk_once(chunk),
            other => other,
        }
    }

    fn read_chunk_once(&self, chunk: &ChunkRef) -> Result<Vec<u8>> {
        let key = layout::chunk_key(&chunk.id);
        let bytes = self.store.get(&key, MAX_CHUNK_OBJECT)?;
        let raw = chunk::decode(&bytes, &chunk.id).map_err(Error::format(&key))?;
        if raw.len() != chunk.len as usize {
            return Err(Error::Format {
                key,
                cause: FormatError::corrupt(format!(
                    "chunk holds {} bytes, the manifest says {}",
                    raw.len(),
                    chunk.len
                )),
            });
        }
        Ok(raw)
    }

    /// The repository's prune epoch: the highest `epochs/` key, 0 when
    /// there is none. One LIST request.
    pub fn epoch(&self) -> Result<u64> {
        Ok(self
            .store
            .list(layout::EPOCHS_PREFIX)?
            .iter()
            .filter_map(|(k, _)| layout::parse_epoch_key(k))
            .max()
            .unwrap_or(0))
    }

    /// Starts a new prune epoch. Anything that deletes chunk objects must
    /// call this first and finish its deletions in the new epoch, so that
    /// every client's chunk index stops trusting what it remembers.
    pub fn bump_epoch(&self) -> Result<u64> {
        loop {
            let next = self.epoch()? + 1;
            if self.store.put_if_absent(&layout::epoch_key(next), b"")? {
                self.store.flush()?;
                return Ok(next);
            }
        }
    }

    /// Writes the manifest after a durability barrier over every chunk it
    /// names: the commit point of a snapshot.
    pub fn commit(&self, manifest: &Manifest) -> Result<SnapshotKey> {
        manifest.validate().map_err(Error::format("new manifest"))?;
        self.store.flush()?;
        let bytes = manifest.encode();
        let key = SnapshotKey {
            height: manifest.height,
            created_unix_ns: manifest.created_unix_ns,
            id: Hash::of(&bytes),
        };
        if !self.store.put_if_absent(&key.key(), &bytes)? {
            return Err(Error::Refused(format!(
                "snapshot {} already exists",
                key.key()
            )));
        }
        self.store.flush()?;
        Ok(key)
    }
}
