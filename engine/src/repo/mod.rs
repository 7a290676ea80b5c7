//! A repository: a store plus its config, and the operations every command
//! shares — finding snapshots, loading and checking manifests and chunks,
//! and committing a manifest.

mod index;
pub use self::index::MirrorIndex;
pub mod sign;
pub mod trusted;

pub use crate::sys::host::{now_unix_ns, this_host};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::config::{ChunkerParams, RepoConfig};
use crate::format::envelope::{HEADER_LEN, TRAILER_LEN};
use crate::format::forget::ForgetRecord;
use crate::format::layout::{self, Attempt, RoundObject, SnapshotKey};
use crate::format::limits;
use crate::format::manifest::{ChunkRef, Manifest};
use crate::format::prune::PrunePlan;
use crate::format::FormatError;
use crate::id::{ChunkId, Hash};
use crate::repo::sign::{Signatures, Subject, Trust};
use crate::store::{ObjectInfo, Store};
use crate::sys::testhook;
use std::os::unix::fs::DirBuilderExt;

/// Largest chunk object a reader fetches: the raw limit plus zstd's
/// worst-case frame overhead and the header.
pub const MAX_CHUNK_OBJECT: u64 =
    limits::MAX_CHUNK_BYTES + limits::MAX_CHUNK_BYTES / 128 + 1024 + HEADER_LEN as u64;

pub const MAX_MANIFEST_OBJECT: u64 = limits::MAX_MANIFEST_BYTES + (HEADER_LEN + TRAILER_LEN) as u64;

/// Manifests [`Repository::map_manifests`] loads at once, at most: enough to
/// hide a network store's latency, few enough that the manifests decoded at
/// once stay a small multiple of one.
pub const MANIFEST_FETCHES: usize = 16;

pub struct Repository {
    store: Arc<dyn Store>,
    config: RepoConfig,
    /// A local directory of manifests already read (see
    /// [`Repository::with_manifest_cache`]).
    manifest_cache: Option<PathBuf>,
    /// The keys whose signatures this handle believes (`--trust`): a forget
    /// record counts only when one of them signed it.
    trust: Option<Arc<Trust>>,
    /// The key a writer signs the repository's index with when it rewrites
    /// it (its `--sign` key).
    signer: Option<Arc<sign::Signer>>,
}

/// The snapshots with their manifest objects' sizes, and the strays.
pub type Listing = (Vec<(SnapshotKey, u64)>, Vec<String>);

/// The snapshots as readers see them (FORMAT.md §10, "Forget"): a snapshot
/// is live when its manifest is listed and no forget record that counts
/// names it. The record, not the manifest's deletion, is what forgets: a
/// manifest put back by a commit that raced the forget stays forgotten.
#[derive(Debug, Clone, Default)]
pub struct SnapshotView {
    /// Live snapshots, oldest first, with each manifest object's size.
    pub live: Vec<(SnapshotKey, u64)>,
    /// Manifests listed although a forget record that counts names them:
    /// not live (a forget raced a late commit; `forget ID` removes them).
    pub forgotten: Vec<SnapshotKey>,
    /// Keys under `snapshots/` that are not snapshot keys.
    pub strays: Vec<String>,
    /// Forget records naming a listed snapshot that do not count, and why
    /// (not a forget record of that snapshot; with trusted keys, not signed
    /// by one): that snapshot is live.
    pub ignored_records: Vec<String>,
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

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Latest => f.write_str("latest"),
            Selector::All => f.write_str("all"),
            Selector::Height(h) => write!(f, "{h}"),
            Selector::Id(p) => f.write_str(p),
        }
    }
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
        Ok(Repository {
            store,
            config,
            manifest_cache: None,
            trust: None,
            signer: None,
        })
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
        Ok(Repository {
            store,
            config,
            manifest_cache: None,
            trust: None,
            signer: None,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Believes signatures by these keys: forget records count only when
    /// one of them signed them (and `crate::repo::trusted` resolves snapshots a
    /// trusted key signed). `None` believes every forget record that
    /// decodes: a co-tenant of the bucket can then hide snapshots, as it
    /// can plant them (FORMAT.md §11, the threat model).
    pub fn with_trust(mut self, trust: Option<Arc<Trust>>) -> Repository {
        self.trust = trust;
        self
    }

    /// Signs the index this handle rewrites after its writes with `signer`.
    pub fn with_signer(mut self, signer: Option<Arc<sign::Signer>>) -> Repository {
        self.signer = signer;
        self
    }

    pub fn trust(&self) -> Option<&Arc<Trust>> {
        self.trust.as_ref()
    }

    /// The snapshots as readers see them: one LIST of `snapshots/` and one
    /// of `forgotten/`; a record is read only when its id is that of a
    /// listed manifest (a forget that raced a late commit, or a planted
    /// record), which is rare.
    pub fn view(&self) -> Result<SnapshotView> {
        // Through a mirror, with trusted keys: the index the listings come
        // from must be signed by one (FORMAT.md §15).
        if self.trust.is_some() {
            self.mirror_index()?;
        }
        let (listed, strays) = self.snapshot_listing()?;
        let records: HashSet<Hash> = self
            .store
            .list(layout::FORGOTTEN_PREFIX)?
            .iter()
            .filter_map(|o| o.key.strip_prefix(layout::FORGOTTEN_PREFIX)?.parse().ok())
            .collect();
        let mut view = SnapshotView {
            strays,
            ..SnapshotView::default()
        };
        let mut signatures: Option<Signatures> = None;
        for (key, size) in listed {
            if !records.contains(&key.id) {
                view.live.push((key, size));
                continue;
            }
            match self.record_counts(&key, &mut signatures) {
                Ok(()) => view.forgotten.push(key),
                Err(why) => {
                    view.ignored_records
                        .push(format!("{}: {why}", layout::forgotten_key(&key.id)));
                    view.live.push((key, size));
                }
            }
        }
        Ok(view)
    }

    /// Whether the forget record of `key` counts: it decodes, names this
    /// very key, and (with trusted keys) one of them signed it. `Err` says
    /// why not; a record that cannot be fetched does not count.
    fn record_counts(
        &self,
        key: &SnapshotKey,
        signatures: &mut Option<Signatures>,
    ) -> std::result::Result<(), String> {
        let name = layout::forgotten_key(&key.id);
        let bytes = self
            .store
            .get(&name, limits::MAX_RECORD_BYTES)
            .map_err(|e| e.to_string())?;
        let record =
            ForgetRecord::decode(&bytes).map_err(|e| format!("not a forget record: {e}"))?;
        if record.snapshot != key.key() {
            return Err(format!("it names {}, not this snapshot", record.snapshot));
        }
        if let Some(trust) = &self.trust {
            if signatures.is_none() {
                *signatures = Some(Signatures::list(&*self.store).map_err(|e| e.to_string())?);
            }
            let listed = signatures.as_ref().expect("listed above");
            let verdict = trust.check(&*self.store, listed, &Subject::Forget(key.id), &bytes);
            if !verdict.trusted() {
                return Err(format!(
                    "forget record not signed by a trusted key: {}",
                    verdict.why_not(trust)
                ));
            }
        }
        Ok(())
    }

    /// Whether a forget record that counts names `key` (see
    /// [`Repository::view`]); one GET when a record is there.
    pub fn is_forgotten(&self, key: &SnapshotKey) -> Result<bool> {
        match self.store.size(&layout::forgotten_key(&key.id))? {
            None => Ok(false),
            Some(_) => Ok(self.record_counts(key, &mut None).is_ok()),
        }
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Every manifest listed under `snapshots/`, forgotten or not, with each
    /// object's size, oldest first, and apart the keys that are not
    /// snapshot keys (for verify to report). What prune counts as roots:
    /// a forget record, which anyone who can write to the bucket could
    /// plant, never makes prune drop a manifest's chunks.
    pub fn snapshot_listing(&self) -> Result<Listing> {
        let mut keys = Vec::new();
        let mut strays = Vec::new();
        for o in self.store.list(layout::SNAPSHOTS_PREFIX)? {
            match SnapshotKey::parse(&o.key) {
                Ok(k) => keys.push((k, o.size)),
                Err(_) => strays.push(o.key),
            }
        }
        keys.sort();
        Ok((keys, strays))
    }

    /// The live snapshots, oldest first (see [`Repository::view`]).
    pub fn snapshots(&self) -> Result<Vec<SnapshotKey>> {
        Ok(self.view()?.live.into_iter().map(|(k, _)| k).collect())
    }

    /// Every manifest listed, forgotten or not (see
    /// [`Repository::snapshot_listing`]).
    pub fn all_snapshots(&self) -> Result<Vec<SnapshotKey>> {
        Ok(self
            .snapshot_listing()?
            .0
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    pub fn resolve(&self, selector: &Selector) -> Result<Vec<SnapshotKey>> {
        self.resolve_for(selector, None)
    }

    /// Like [`Repository::resolve`], among the snapshots of one host only
    /// (a node's history; version 1 snapshots, without a host, match
    /// `""`). Filtering reads manifests, newest first, until the selector
    /// is satisfied.
    pub fn resolve_for(&self, selector: &Selector, host: Option<&str>) -> Result<Vec<SnapshotKey>> {
        let mut all = self.snapshots()?;
        if let Some(host) = host {
            let of_host = |k: &SnapshotKey| self.load_manifest(k).is_ok_and(|m| m.host == host);
            all = match selector {
                Selector::Latest => all.into_iter().rev().find(of_host).into_iter().collect(),
                Selector::Height(h) => all
                    .into_iter()
                    .rev()
                    .filter(|k| k.height == *h)
                    .find(of_host)
                    .into_iter()
                    .collect(),
                _ => all.into_iter().filter(of_host).collect(),
            };
        }
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
            let name = match selector {
                Selector::Latest => "latest".into(),
                Selector::All => "all".into(),
                Selector::Height(h) => h.to_string(),
                Selector::Id(p) => p.clone(),
            };
            return Err(Error::NoSnapshot {
                selector: match host {
                    Some(h) => format!("{name} of host {h}"),
                    None => name,
                },
            });
        }
        Ok(picked)
    }

    /// Keeps the manifests this handle reads in `<base>/<repository
    /// id>.manifests/`, one file per manifest named by its id, and reads
    /// them from there before asking the store. Manifests never change
    /// once written and a cached one is checked against its id like a
    /// fetched one, so the cache can save requests but never change an
    /// answer; deleting it is always safe. A cache that cannot be created
    /// is not used.
    pub fn with_manifest_cache(mut self, base: &Path) -> Repository {
        let dir = base.join(format!("{}.manifests", self.config.id.to_hex()));
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        if made.is_ok() {
            self.manifest_cache = Some(dir);
        }
        self
    }

    /// Removes cached manifests that are not among `live` (forgotten and
    /// pruned since): the cache stays the size of the repository's
    /// manifests.
    pub fn trim_manifest_cache(&self, live: &[SnapshotKey]) {
        let Some(dir) = &self.manifest_cache else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let keep: HashSet<String> = live.iter().map(|k| k.id.to_hex()).collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// `f` of each key's manifest (or the error loading it), in the keys'
    /// order. Up to [`MANIFEST_FETCHES`] manifests are loaded at once (on a
    /// store across a network each GET mostly waits: ten thousand in a row
    /// would take minutes), and each is dropped when `f` returns, so that
    /// memory holds at most that many.
    pub fn map_manifests<T: Send>(
        &self,
        keys: &[SnapshotKey],
        f: impl Fn(&SnapshotKey, Result<Manifest>) -> T + Sync + Send,
    ) -> Result<Vec<T>> {
        let n = self.store.parallelism().clamp(1, MANIFEST_FETCHES);
        if n == 1 || keys.len() < 2 {
            return Ok(keys.iter().map(|k| f(k, self.load_manifest(k))).collect());
        }
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::Refused(format!("cannot start {n} manifest readers: {e}")))?;
        Ok(pool.install(|| {
            keys.par_iter()
                .with_max_len(1)
                .map(|k| f(k, self.load_manifest(k)))
                .collect()
        }))
    }

    /// Loads a manifest and checks it against its key: the bytes must hash to
    /// the id in the key, and height and time must agree. From the manifest
    /// cache when there is one and it holds the manifest.
    pub fn load_manifest(&self, key: &SnapshotKey) -> Result<Manifest> {
        self.load_manifest_listed(key, None)
    }

    /// As [`Repository::load_manifest`], but when the store's listing gave
    /// the object's `size`, a cached copy of another size is not used: the
    /// object is fetched and checked again (quick verify sees a manifest
    /// cut short or replaced in the store even with a cache).
    pub fn load_manifest_listed(&self, key: &SnapshotKey, size: Option<u64>) -> Result<Manifest> {
        if let Some(m) = self.cached_manifest(key, size) {
            return Ok(m);
        }
        let m = self.fetch_manifest(key)?;
        Ok(m)
    }

    fn cached_manifest(&self, key: &SnapshotKey, size: Option<u64>) -> Option<Manifest> {
        let path = self.manifest_cache.as_ref()?.join(key.id.to_hex());
        let bytes = std::fs::read(&path).ok()?;
        if size.is_some_and(|s| s != bytes.len() as u64) {
            return None;
        }
        // Checked as a fetched manifest is; a bad copy is removed.
        match self.check_manifest(key, &bytes) {
            Ok(m) => Some(m),
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The manifest object's exact bytes (what a signature signs), checked
    /// as a fetched manifest is; from the manifest cache when it has them.
    pub fn manifest_bytes(&self, key: &SnapshotKey) -> Result<Vec<u8>> {
        if let Some(dir) = &self.manifest_cache {
            // Every check of a fetched manifest, its key's height and time
            // included: a key that reuses another snapshot's id is refused.
            if let Ok(bytes) = std::fs::read(dir.join(key.id.to_hex())) {
                if self.check_manifest(key, &bytes).is_ok() {
                    return Ok(bytes);
                }
            }
        }
        let bytes = self.store.get(&key.key(), MAX_MANIFEST_OBJECT)?;
        self.check_manifest(key, &bytes)?;
        Ok(bytes)
    }

    /// Fetches a manifest from the store (never from the cache), checks it
    /// and, when there is a cache, keeps it there.
    pub fn fetch_manifest(&self, key: &SnapshotKey) -> Result<Manifest> {
        let name = key.key();
        let bytes = self.store.get(&name, MAX_MANIFEST_OBJECT).map_err(|e| {
            // A mirror's listings come from its index: a snapshot it names
            // and does not serve was forgotten (and pruned) since the index
            // was written, or the mirror is behind the index.
            match e.is_missing() && !self.store.lists_chunks() {
                true => Error::Refused(format!(
                    "{}: the mirror's index names snapshot {name}, which the mirror does not \
                     serve: its index is stale (the snapshot was forgotten since, or the \
                     mirror is part-way through an update); try again later or a newer snapshot",
                    self.store.location()
                )),
                false => e,
            }
        })?;
        let m = self.check_manifest(key, &bytes)?;
        if let Some(dir) = &self.manifest_cache {
            // Best effort: a cache only saves requests.
            let _ = tempfile::Builder::new()
                .prefix(".tmp")
                .tempfile_in(dir)
                .and_then(|mut t| {
                    use std::io::Write;
                    t.write_all(&bytes)?;
                    t.persist(dir.join(key.id.to_hex())).map_err(|e| e.error)?;
                    Ok(())
                });
        }
        Ok(m)
    }

    fn check_manifest(&self, key: &SnapshotKey, bytes: &[u8]) -> Result<Manifest> {
        let name = key.key();
        let actual = Hash::of(bytes);
        if actual != key.id {
            // Tell a cut-short object from a changed one: the header knows.
            let detail = match Manifest::decode(bytes) {
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
        let manifest = Manifest::decode(bytes).map_err(Error::format(&name))?;
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

    /// The repository's prune epoch: the highest `epochs/` key up to
    /// [`MAX_EPOCH`], 0 when there is none. One LIST request.
    pub fn epoch(&self) -> Result<u64> {
        Ok(self.epochs()?.last().copied().unwrap_or(0))
    }

    /// Every epoch listed, in order, up to [`MAX_EPOCH`]: a key beyond it
    /// was not written by a prune (each bumps the highest by one) and is
    /// ignored, so that a planted `epochs/18446744073709551615` cannot make
    /// the next epoch overflow (#20). One LIST request.
    pub fn epochs(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = self
            .store
            .list(layout::EPOCHS_PREFIX)?
            .iter()
            .filter_map(|o| layout::parse_epoch_key(&o.key))
            .filter(|e| *e <= MAX_EPOCH)
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Starts a new prune epoch for the sweep of `round`, whose plan the
    /// store stamped `plan_stamp` (its modified time: it tells this plan
    /// from a later one of the same number). Anything that deletes chunk
    /// objects must call this first and finish its deletions in the new
    /// epoch, so that every client's chunk index stops trusting what it
    /// remembers and every writer's commit checks the round (FORMAT.md §10).
    pub fn bump_epoch(&self, round: u64, plan_stamp: u64) -> Result<u64> {
        let body = format!("{round} {plan_stamp}");
        // Another prune bumping at the same moment takes a number; so may
        // objects planted ahead: a few tries, each answering a signal.
        for _ in 0..BUMP_TRIES {
            crate::sys::interrupt::check()?;
            let next = self.epoch()?.checked_add(1).filter(|n| *n <= MAX_EPOCH);
            let Some(next) = next else {
                return Err(Error::Refused(format!(
                    "{}: the repository's prune epoch has reached its limit ({MAX_EPOCH}), which no \
                     prune reaches (each sweep adds one): an epoch object was planted; chunks cannot \
                     be deleted safely until it is removed",
                    self.store.location()
                )));
            };
            if self
                .store
                .put_if_absent(&layout::epoch_key(next), body.as_bytes())?
            {
                self.store.flush()?;
                return Ok(next);
            }
        }
        Err(Error::Refused(format!(
            "{}: {BUMP_TRIES} prune epochs in a row were taken while this prune tried to write \
             one; something is writing epoch objects ahead of it",
            self.store.location()
        )))
    }

    /// The round whose sweep started epoch `e` and its plan's stamp;
    /// `None` when the epoch object is gone or names none (an epoch bumped
    /// by hand).
    pub fn epoch_round(&self, e: u64) -> Result<Option<(u64, u64)>> {
        match self.store.get(&layout::epoch_key(e), 64) {
            Ok(b) => Ok(std::str::from_utf8(&b).ok().and_then(|t| {
                let (r, stamp) = t.trim().split_once(' ')?;
                Some((r.parse().ok()?, stamp.parse().ok()?))
            })),
            Err(e) if e.is_missing() => Ok(None),
            // Larger than any epoch a prune writes: names nothing.
            Err(Error::Format { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every prune round the repository records. One LIST request.
    pub fn prune_rounds(&self) -> Result<BTreeMap<u64, Round>> {
        let mut rounds: BTreeMap<u64, Round> = BTreeMap::new();
        for o in self.store.list(layout::PRUNE_PREFIX)? {
            let Some((round, what)) = layout::parse_round_key(&o.key) else {
                continue;
            };
            let r = rounds.entry(round).or_default();
            match what {
                RoundObject::Plan => r.plan = Some(o),
                RoundObject::Sweep(n) => r.sweeps.push((n, o)),
                RoundObject::Done(n) => r.dones.push((n, o)),
            }
        }
        for r in rounds.values_mut() {
            r.sweeps.sort_by_key(|(n, _)| *n);
            r.dones.sort_by_key(|(n, _)| *n);
        }
        Ok(rounds)
    }

    /// The objects of one round only. One LIST request.
    pub fn prune_round(&self, round: u64) -> Result<Round> {
        let prefix = layout::round_key(round, RoundObject::Plan);
        let prefix = &prefix[..prefix.len() - "plan".len()];
        let mut r = Round::default();
        for o in self.store.list(prefix)? {
            match layout::parse_round_key(&o.key) {
                Some((n, RoundObject::Plan)) if n == round => r.plan = Some(o),
                Some((n, RoundObject::Sweep(a))) if n == round => r.sweeps.push((a, o)),
                Some((n, RoundObject::Done(a))) if n == round => r.dones.push((a, o)),
                _ => {}
            }
        }
        r.sweeps.sort_by_key(|(n, _)| *n);
        r.dones.sort_by_key(|(n, _)| *n);
        Ok(r)
    }

    /// Loads a round's plan (the chunks it condemned).
    pub fn load_plan(&self, round: u64) -> Result<PrunePlan> {
        let key = layout::round_key(round, RoundObject::Plan);
        let bytes = self.store.get(
            &key,
            limits::MAX_PLAN_BYTES + (HEADER_LEN + TRAILER_LEN) as u64,
        )?;
        let plan = PrunePlan::decode(&bytes).map_err(Error::format(&key))?;
        if plan.round != round {
            return Err(Error::Format {
                key,
                cause: FormatError::corrupt("plan names another round"),
            });
        }
        Ok(plan)
    }

    /// What a writer must know before it relies on chunks it has not just
    /// written: the epoch, and the rounds being swept right now. Two LIST
    /// requests.
    pub fn begin_write(&self) -> Result<WriteSession> {
        let epoch = self.epoch()?;
        let mut sweeping = BTreeMap::new();
        for (n, r) in self.prune_rounds()? {
            if !r.is_sweeping() {
                continue;
            }
            // A prune claims only a round whose plan it lists, and retires
            // only finished rounds: sweep markers with no plan were never a
            // prune's, and no deletion follows them (FORMAT.md §10,
            // "Writers" step 1). Counting them would let one planted empty
            // object stop every snapshot.
            if r.plan.is_none() {
                tracing::warn!(
                    "prune round {n}: sweep markers without a plan (not a prune's); ignored"
                );
                continue;
            }
            sweeping.insert(n, r.plan_stamp());
        }
        Ok(WriteSession { epoch, sweeping })
    }

    /// Commits a manifest (FORMAT.md §10, "Writers"): a durability barrier
    /// over its chunks; the manifest as this attempt's own
    /// `pending/<id>-<attempt>`, visible to every prune that lists after it;
    /// a check that no prune round swept while this writer ran took a chunk
    /// it names; a claim of the attempt's fate, with the secret that names
    /// the attempt, that a prune expiring it could not take first; the
    /// manifest at its key, the commit point; and a re-check that no forget
    /// forgot the snapshot meanwhile.
    pub fn commit(&self, manifest: &Manifest, session: &WriteSession) -> Result<SnapshotKey> {
        manifest.validate().map_err(Error::format("new manifest"))?;
        self.store.flush()?;
        let bytes = manifest.encode();
        let id = Hash::of(&bytes);
        let key = SnapshotKey {
            height: manifest.height,
            created_unix_ns: manifest.created_unix_ns,
            id,
        };
        let secret = new_secret()?;
        let attempt = Attempt::of(&secret);
        let pending = layout::pending_key(&id, &attempt);
        if !self.store.put_if_absent(&pending, &bytes)? {
            return Err(Error::Refused(format!(
                "{pending} exists before this writer wrote it: its name comes from a secret only \
                 this writer had; refusing to commit through it"
            )));
        }
        self.store.flush()?;
        testhook::point("commit-pending");
        if let Err(e) = self.check_sweeps(manifest, session) {
            let _ = self.store.delete(&pending);
            return Err(e);
        }
        let fate = layout::fate_key(&id, &attempt);
        let expired = || {
            Error::Refused(format!(
                "snapshot {} not committed: a prune expired its pending commit (the snapshot \
                 waited too long between writing and committing); run it again",
                key.key()
            ))
        };
        if !self.store.put_if_absent(&fate, &fate_commit(&secret))? {
            // A prune's expiry, or an object someone else put there first:
            // this attempt cannot commit.
            return Err(expired());
        }
        // Claimed. A prune that expired the attempt before (and removed its
        // own fate since) removed the pending object first: if it is still
        // there, it has been a root without a break since it was written,
        // and no prune can expire it any more. Gone, it was either expired
        // or, after this claim, completed by a prune.
        let completed = if self.store.size(&pending)?.is_none() {
            let promoted = self
                .store
                .get(&key.key(), bytes.len() as u64)
                .is_ok_and(|b| b == bytes);
            if !promoted {
                let _ = self.store.delete(&fate);
                return Err(expired());
            }
            true
        } else {
            false
        };
        testhook::point("commit-claimed");
        if !completed && !self.store.put_if_absent(&key.key(), &bytes)? {
            // A prune that completed it for us wrote the very bytes;
            // anything else is a collision.
            let same = self
                .store
                .get(&key.key(), bytes.len() as u64)
                .is_ok_and(|b| b == bytes);
            if !same {
                return Err(Error::Refused(format!(
                    "snapshot {} already exists",
                    key.key()
                )));
            }
        }
        self.store.flush()?;
        testhook::point("commit-put");
        // A forget that ran after a prune completed this commit and before
        // the write above: the record stands, the manifest is not live.
        if self.is_forgotten(&key)? {
            let _ = self.store.delete(&key.key());
            let _ = self.store.delete(&pending);
            let _ = self.store.delete(&fate);
            return Err(Error::Refused(format!(
                "snapshot {} was committed and forgotten (a forget ran while this writer finished \
                 its commit); it stays forgotten",
                key.key()
            )));
        }
        // Done; what is left is tidying a later prune would also do.
        let _ = self.store.delete(&pending);
        let _ = self.store.delete(&fate);
        self.refresh_index();
        Ok(key)
    }

    /// The writer's check before its commit: every round swept since the
    /// writer began (an epoch after its own) or being swept when it began
    /// must not have deleted a chunk the manifest names.
    fn check_sweeps(&self, manifest: &Manifest, session: &WriteSession) -> Result<()> {
        // Round → the stamp of the plan it swept (or was sweeping).
        let mut rounds: BTreeMap<u64, u64> = session.sweeping.clone();
        // The epochs listed since this writer began (not every number in
        // between: a planted epoch far ahead is one object, not a range).
        for e in self.epochs()?.into_iter().filter(|e| *e > session.epoch) {
            crate::sys::interrupt::check()?;
            match self.epoch_round(e)? {
                Some((r, stamp)) => {
                    if rounds.insert(r, stamp).is_some_and(|s| s != stamp) {
                        return Err(Error::Refused(format!(
                            "snapshot not committed: prune round {r} was retired and its number \
                             reused while it ran (the snapshot ran too long); run it again"
                        )));
                    }
                }
                // Every prune names the round it sweeps; an epoch that
                // names none records no deletion a writer could check (a
                // planted or hand-made object): reported, not trusted.
                None => tracing::warn!(
                    "{}: names no prune round; ignored (no prune of this version writes such an \
                     epoch)",
                    layout::epoch_key(e)
                ),
            }
        }
        if rounds.is_empty() {
            return Ok(());
        }
        let refs: HashSet<ChunkId> = manifest
            .files()
            .flat_map(|(_, _, _, chunks)| chunks.iter().map(|c| c.id))
            .collect();
        let state = self.prune_rounds()?;
        let gone = |r: u64| {
            Error::Refused(format!(
                "snapshot not committed: prune round {r} deleted chunks while it ran and its \
                 record is gone or replaced (the snapshot ran too long); run it again"
            ))
        };
        for (r, stamp) in rounds {
            // The plan must be the one that round swept: a round retired
            // and numbered again has another stamp.
            if state
                .get(&r)
                .is_none_or(|s| s.plan.is_none() || s.plan_stamp() != stamp)
            {
                return Err(gone(r));
            }
            let plan = match self.load_plan(r) {
                Ok(p) => p,
                Err(e) if e.is_missing() => return Err(gone(r)),
                // A plan that does not decode deleted nothing (a prune
                // decodes its plan before its first deletion, and stops
                // when it cannot): planted, or damaged since. Either way
                // the writer cannot read what it condemned, so it checks
                // that every chunk it names is there (FORMAT.md §10,
                // "Writers" step 4).
                Err(e @ Error::Format { .. }) => {
                    tracing::warn!("{e}: checking every chunk this snapshot names instead");
                    for c in &refs {
                        crate::sys::interrupt::check()?;
                        if self.store.size(&layout::chunk_key(c))?.is_none() {
                            return Err(Error::Refused(format!(
                                "snapshot not committed: chunk {c} is missing and prune round \
                                 {r}'s plan does not decode ({e}); run it again (it will store \
                                 the chunk anew)"
                            )));
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let hit: Vec<ChunkId> = plan
                .chunks
                .iter()
                .filter(|c| refs.contains(c))
                .copied()
                .collect();
            if hit.is_empty() {
                continue;
            }
            if state.get(&r).is_none_or(|s| !s.is_done()) {
                return Err(Error::Refused(format!(
                    "snapshot not committed: prune round {r} is deleting {} chunk(s) it names \
                     (e.g. {}); run it again once the prune has finished",
                    hit.len(),
                    hit[0]
                )));
            }
            for c in &hit {
                if self.store.size(&layout::chunk_key(c))?.is_none() {
                    return Err(Error::Refused(format!(
                        "snapshot not committed: prune round {r} deleted chunk {c}, which it reused; \
                         run it again (it will store the chunk anew)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The highest prune epoch honoured: 2^48 sweeps is more than any
/// repository will see; keys above it are planted and ignored.
pub const MAX_EPOCH: u64 = 1 << 48;

/// How many epoch numbers one bump tries before it gives up.
const BUMP_TRIES: usize = 64;

/// The body of a legacy fate object (`pending/<id>.fate`) that a writer of
/// the first version 2 release claimed.
pub const FATE_COMMIT: &[u8] = b"commit\n";
/// The body of a fate object that a prune claims to expire a pending commit.
pub const FATE_EXPIRE: &[u8] = b"expire\n";

/// The fate a writer claims for its attempt: `commit <secret>`, the secret
/// whose BLAKE3 names the attempt.
pub fn fate_commit(secret: &[u8; 32]) -> Vec<u8> {
    format!("commit {}\n", hex::encode(secret)).into_bytes()
}

/// What a fate object says (FORMAT.md §10, "Prune" step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The writer claimed the commit after its check.
    Claim,
    /// A prune expired the attempt.
    Expire,
    /// Anything else: not a claim its writer made (whose claim then fails).
    Junk,
}

/// Reads a fate object's body for `attempt` (`None`: a legacy fate).
pub fn read_fate(body: &[u8], attempt: Option<&Attempt>) -> Fate {
    if body == FATE_EXPIRE {
        return Fate::Expire;
    }
    match attempt {
        None if body == FATE_COMMIT => Fate::Claim,
        None => Fate::Junk,
        Some(a) => {
            let secret = std::str::from_utf8(body)
                .ok()
                .and_then(|t| t.strip_prefix("commit "))
                .and_then(|t| t.strip_suffix('\n'))
                .and_then(|h| {
                    let mut s = [0u8; 32];
                    hex::decode_to_slice(h, &mut s).ok().map(|()| s)
                });
            // One form only: `fate_commit`'s (lower-case hex).
            match secret {
                Some(s) if Attempt::of(&s) == *a && fate_commit(&s) == body => Fate::Claim,
                _ => Fate::Junk,
            }
        }
    }
}

/// 32 bytes from the kernel's random source: a commit attempt's secret.
fn new_secret() -> Result<[u8; 32]> {
    let mut s = [0u8; 32];
    let mut filled = 0;
    while filled < s.len() {
        match rustix::rand::getrandom(&mut s[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(Error::Refused(format!(
                    "cannot draw a commit secret from the kernel: {e}"
                )))
            }
        }
    }
    Ok(s)
}

/// What a writer knew of the repository's prunes when it began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSession {
    pub epoch: u64,
    /// Rounds whose sweep had started and not finished, with their plans'
    /// stamps.
    pub sweeping: BTreeMap<u64, u64>,
}

/// One prune round's objects, as listed.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub plan: Option<ObjectInfo>,
    /// Sweep attempts, by attempt number.
    pub sweeps: Vec<(u32, ObjectInfo)>,
    /// Done markers, by the attempt that wrote them.
    pub dones: Vec<(u32, ObjectInfo)>,
}

impl Round {
    /// The latest sweep attempt (of the markers left: retirement removes
    /// sweep markers before done markers).
    pub fn attempt(&self) -> Option<u32> {
        let s = self.sweeps.last().map(|(n, _)| *n);
        let d = self.dones.last().map(|(n, _)| *n);
        s.max(d)
    }

    /// The done marker of the latest attempt: only it says that every
    /// deletion of the round is over (an earlier attempt's marker may have
    /// been written while a later one was still deleting).
    pub fn done(&self) -> Option<&ObjectInfo> {
        let a = self.attempt()?;
        self.dones.iter().find(|(n, _)| *n == a).map(|(_, o)| o)
    }

    pub fn is_done(&self) -> bool {
        self.done().is_some()
    }

    pub fn is_sweeping(&self) -> bool {
        self.attempt().is_some() && !self.is_done()
    }

    /// The plan's stamp (its modified time in the store's clock), which
    /// tells it from a later plan of the same number; 0 without a plan.
    pub fn plan_stamp(&self) -> u64 {
        self.plan.as_ref().map_or(0, |p| p.modified_unix_ns)
    }
}
