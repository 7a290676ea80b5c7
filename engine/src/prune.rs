//! `prune`: deleting the chunk objects no snapshot needs, while other hosts
//! keep snapshotting into the same repository, without any lock.
//!
//! The protocol (FORMAT.md §10, "Prune", argues it for every interleaving)
//! works in rounds, two runs apart:
//!
//! 1. **Condemn.** A run lists the roots (pending commits, then manifests)
//!    and the chunks, and writes `prune/<round>.plan`: the chunks that no
//!    root references and that are older than the grace period (in the
//!    store's clock). Nothing is deleted.
//! 2. **Sweep.** A later run, once the plan is older than the grace period,
//!    claims the round (`prune/<round>.sweep-<n>`, put-if-absent), bumps
//!    the epoch (`epochs/<e>`, naming the round), and only *then* lists the
//!    roots again and deletes the plan's chunks that are still unreferenced,
//!    checking its lease before each batch; then writes `prune/<round>.done`.
//!
//! Writers make themselves visible before they rely on anything: a snapshot
//! writes its manifest as `pending/<id>` before its commit check, and the
//! check refuses a commit that names a chunk a round swept (or is sweeping)
//! since the snapshot began (`Repository::commit`). A crashed writer's
//! pending commit expires after a while: the prune claims its fate
//! (`pending/<id>.fate`) before the writer can, so the writer refuses.
//!
//! A run also completes commits whose writer claimed them and died,
//! retires the records of rounds swept long ago, and removes a local
//! store's stale temp files. Every age is measured in the store's clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::layout::{self, RoundObject, SnapshotKey};
use crate::format::manifest::Manifest;
use crate::format::prune::PrunePlan;
use crate::id::{ChunkId, Hash};
use crate::interrupt;
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository, Round, FATE_COMMIT, FATE_EXPIRE};
use crate::store::{Counts, ObjectInfo};

/// Chunk ids one plan holds at most (the plan object's size limit).
const MAX_PLAN_CHUNKS: usize = 8_000_000;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Unreferenced chunks younger than this are not condemned, and a plan
    /// is swept only once it is this old. Every snapshot must reach its
    /// commit within this time of its start, or it may refuse to commit.
    pub grace: Duration,
    /// A sweep that has run this long without finishing may be taken over
    /// by another prune; a sweep stops deleting once its lease is over.
    pub lease: Duration,
    /// A pending commit this old whose writer has not claimed it is
    /// expired (its writer refuses to commit).
    pub pending_expiry: Duration,
    /// Records of rounds swept this long ago are removed.
    pub retire_after: Duration,
    /// Condemn and sweep in this one run (grace 0): for a repository with no
    /// other writer; a concurrent snapshot would refuse to commit.
    pub instant: bool,
    /// Report what would be done; write and delete nothing.
    pub dry_run: bool,
    /// This host's name, recorded in plans.
    pub host: String,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(3600),
            pending_expiry: Duration::from_secs(3600),
            retire_after: Duration::from_secs(7 * 24 * 3600),
            instant: false,
            dry_run: false,
            host: crate::repo::this_host(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SweptRound {
    pub round: u64,
    /// Chunks the plan condemned.
    pub condemned: u64,
    /// Of those, deleted (or, in a dry run, that would be).
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Referenced again since the plan (a snapshot reused them): kept.
    pub spared: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub referenced_chunks: u64,
    pub snapshots: u64,
    pub swept: Vec<SweptRound>,
    /// The round this run condemned, if any.
    pub condemned_round: Option<u64>,
    pub condemned: u64,
    pub condemned_bytes: u64,
    /// Rounds waiting for their grace period before a sweep.
    pub waiting_rounds: Vec<u64>,
    pub pending_promoted: u64,
    pub pending_expired: u64,
    pub pending_kept: u64,
    pub rounds_retired: u64,
    pub stale_files: u64,
    pub stale_bytes: u64,
    pub requests: Option<Counts>,
    #[serde(skip)]
    pub duration: Duration,
}

/// The roots: what every snapshot and pending commit references.
struct Roots {
    chunks: HashSet<ChunkId>,
    snapshots: u64,
}

/// A compact listing of `chunks/`: id, stored size, modified (store clock).
type ChunkList = Vec<(ChunkId, u64, u64)>;

pub fn run(repo: &Repository, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
    let started = Instant::now();
    let before = repo.store().request_counts();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let now = store_now(repo, opts)?;
    if opts.instant {
        let others = recent_other_writers(repo, opts, now)?;
        if !others.is_empty() {
            return Err(Error::Refused(format!(
                "prune --instant-delete is for a repository no other host writes to, and {} \
                 wrote to this one within the last {} h (or has a commit pending); run prune \
                 without --instant-delete (space comes back after the grace period)",
                others.into_iter().collect::<Vec<_>>().join(", "),
                PruneOptions::default().grace.as_secs() / 3600
            )));
        }
    }
    let rounds = repo.prune_rounds()?;

    // 1. Claim the rounds whose plans are old enough, then bump the epoch.
    // Only after that are the roots listed, so that a writer either shows
    // up in that listing or sees the epoch at its commit.
    let mut claimed: Vec<(u64, u64)> = Vec::new();
    for (&r, round) in &rounds {
        let Some(plan) = &round.plan else { continue };
        if round.done.is_some() {
            continue;
        }
        if plan.modified_unix_ns.saturating_add(nanos(opts.grace)) > now {
            report.waiting_rounds.push(r);
            continue;
        }
        if let Some((_, last)) = round.sweeps.last() {
            if last.modified_unix_ns.saturating_add(nanos(opts.lease)) > now {
                // Another prune is sweeping it.
                continue;
            }
        }
        if opts.dry_run {
            claimed.push((r, now));
        } else if let Some(at) = claim(repo, r, round)? {
            claimed.push((r, at));
        }
    }

    // 2. Roots, then chunks.
    let roots = roots(repo, opts, now, &mut report, progress)?;
    let chunks = list_chunks(repo)?;
    report.snapshots = roots.snapshots;
    report.chunks = chunks.len() as u64;
    report.chunk_bytes = chunks.iter().map(|c| c.1).sum();
    report.referenced_chunks = chunks
        .iter()
        .filter(|c| roots.chunks.contains(&c.0))
        .count() as u64;
    let sizes: HashMap<ChunkId, u64> = chunks.iter().map(|c| (c.0, c.1)).collect();

    // 3. Sweep what was claimed.
    let mut gone: HashSet<ChunkId> = HashSet::new();
    for (r, claimed_at) in claimed {
        let (swept, deleted) = sweep(repo, opts, r, claimed_at, &roots, &sizes, progress)?;
        gone.extend(deleted);
        report.swept.push(swept);
    }

    // 4. Condemn what no root needs and is old enough, unless an earlier
    // round already condemned it and has yet to be swept.
    let grace = if opts.instant { 0 } else { nanos(opts.grace) };
    let awaiting: HashSet<ChunkId> = awaiting_sweep(repo, &rounds, &report)?;
    let mut condemned: Vec<ChunkId> = chunks
        .iter()
        .filter(|(id, _, modified)| {
            !roots.chunks.contains(id)
                && modified.saturating_add(grace) <= now
                && !awaiting.contains(id)
                && !gone.contains(id)
        })
        .map(|c| c.0)
        .collect();
    condemned.sort();
    if !condemned.is_empty() {
        report.condemned = condemned.len() as u64;
        report.condemned_bytes = condemned.iter().map(|c| sizes[c]).sum();
        let first = rounds.keys().next_back().map_or(1, |r| r + 1);
        let mut new_rounds = Vec::new();
        for (i, part) in condemned.chunks(MAX_PLAN_CHUNKS).enumerate() {
            if opts.dry_run {
                new_rounds.push(first + i as u64);
                continue;
            }
            new_rounds.push(write_plan(repo, opts, first + i as u64, part)?);
        }
        report.condemned_round = new_rounds.first().copied();
        // 5. Instant: sweep the new rounds now, after a fresh listing of the
        // roots (a writer that committed since the plan keeps its chunks).
        if opts.instant {
            let mut again = PruneReport::default();
            for &r in &new_rounds {
                let at = if opts.dry_run {
                    now
                } else {
                    claim(repo, r, &Round::default())?.ok_or_else(|| {
                        Error::Refused(format!("prune round {r} was claimed by another prune"))
                    })?
                };
                let roots = if opts.dry_run {
                    Roots {
                        chunks: roots.chunks.clone(),
                        snapshots: roots.snapshots,
                    }
                } else {
                    self::roots(repo, opts, now, &mut again, progress)?
                };
                let plan_chunks = if opts.dry_run {
                    Some(condemned.clone())
                } else {
                    None
                };
                report
                    .swept
                    .push(sweep_with(repo, opts, r, at, &roots, &sizes, plan_chunks, progress)?.0);
            }
            report.pending_promoted += again.pending_promoted;
            report.pending_expired += again.pending_expired;
        }
    }

    // 6. Retire old rounds' records; remove stale temp files.
    for (&r, round) in &rounds {
        let Some(done) = &round.done else { continue };
        if done
            .modified_unix_ns
            .saturating_add(nanos(opts.retire_after))
            > now
        {
            continue;
        }
        report.rounds_retired += 1;
        if !opts.dry_run {
            let mut keys: Vec<String> = round.sweeps.iter().map(|(_, o)| o.key.clone()).collect();
            keys.extend(round.plan.iter().map(|o| o.key.clone()));
            // The done marker last: a round without it is not retired.
            repo.store().delete_many(&keys)?;
            repo.store()
                .delete(&layout::round_key(r, RoundObject::Done))?;
        }
    }
    if !opts.dry_run {
        let (files, bytes) = repo
            .store()
            .remove_stale_writes(now.saturating_sub(nanos(opts.pending_expiry)))?;
        report.stale_files = files;
        report.stale_bytes = bytes;
        repo.store().flush()?;
    }
    report.requests = repo.store().request_counts().map(|c| c.since(before));
    report.duration = started.elapsed();
    Ok(report)
}

/// Hosts other than this one that committed a snapshot within a day (by
/// the snapshots' own times), or any pending commit: what an instant prune
/// must not run beside. Reads only the recent manifests.
fn recent_other_writers(
    repo: &Repository,
    opts: &PruneOptions,
    now: u64,
) -> Result<std::collections::BTreeSet<String>> {
    let recent = now
        .max(now_unix_ns())
        .saturating_sub(nanos(PruneOptions::default().grace));
    let mut out = std::collections::BTreeSet::new();
    for k in repo
        .snapshots()?
        .iter()
        .filter(|k| k.created_unix_ns >= recent)
    {
        if let Ok(m) = repo.load_manifest(k) {
            if m.host != opts.host {
                out.insert(if m.host.is_empty() {
                    "a host of an older blocksnap".to_string()
                } else {
                    m.host
                });
            }
        }
    }
    if !repo.store().list(layout::PENDING_PREFIX)?.is_empty() {
        out.insert("a writer with a commit pending".to_string());
    }
    Ok(out)
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The store's clock now: the modified time of an object written for the
/// purpose (a dry run writes nothing and uses this host's clock).
pub fn store_now(repo: &Repository, opts: &PruneOptions) -> Result<u64> {
    if opts.dry_run {
        return Ok(now_unix_ns());
    }
    let probe = format!(
        "{}now-{}",
        layout::PRUNE_PREFIX,
        Hash::of(format!("{}-{}-{}", opts.host, std::process::id(), now_unix_ns()).as_bytes())
            .short()
    );
    repo.store().put_if_absent(&probe, b"")?;
    let listed = repo.store().list(&probe)?;
    repo.store().delete(&probe)?;
    listed
        .iter()
        .find(|o| o.key == probe)
        .map(|o| o.modified_unix_ns)
        .ok_or_else(|| Error::Refused(format!("the store did not list {probe} just written")))
}

/// Claims the sweep of round `r`; returns the claim's time (store clock),
/// or `None` when another prune claimed it first.
fn claim(repo: &Repository, r: u64, round: &Round) -> Result<Option<u64>> {
    let attempt = round.sweeps.last().map_or(1, |(n, _)| n + 1);
    let key = layout::round_key(r, RoundObject::Sweep(attempt));
    if !repo.store().put_if_absent(&key, b"")? {
        return Ok(None);
    }
    repo.store().flush()?;
    crate::testhook::point("prune-claimed");
    repo.bump_epoch(r)?;
    crate::testhook::point("prune-epoch");
    let at = repo
        .store()
        .list(&key)?
        .into_iter()
        .find(|o| o.key == key)
        .map(|o| o.modified_unix_ns)
        .unwrap_or(0);
    Ok(Some(at))
}

fn write_plan(
    repo: &Repository,
    opts: &PruneOptions,
    mut round: u64,
    chunks: &[ChunkId],
) -> Result<u64> {
    let mut plan = PrunePlan {
        round,
        created_unix_ns: now_unix_ns(),
        host: opts.host.clone(),
        chunks: chunks.to_vec(),
    };
    loop {
        plan.round = round;
        if repo
            .store()
            .put_if_absent(&layout::round_key(round, RoundObject::Plan), &plan.encode())?
        {
            repo.store().flush()?;
            return Ok(round);
        }
        // Another prune wrote this round: take the next number.
        round += 1;
    }
}

/// Chunks of rounds planned but not yet swept (nor being swept now).
fn awaiting_sweep(
    repo: &Repository,
    rounds: &BTreeMap<u64, Round>,
    report: &PruneReport,
) -> Result<HashSet<ChunkId>> {
    let swept: HashSet<u64> = report.swept.iter().map(|s| s.round).collect();
    let mut out = HashSet::new();
    for (&r, round) in rounds {
        if round.plan.is_none() || round.done.is_some() || swept.contains(&r) {
            continue;
        }
        out.extend(repo.load_plan(r)?.chunks);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn sweep(
    repo: &Repository,
    opts: &PruneOptions,
    r: u64,
    claimed_at: u64,
    roots: &Roots,
    sizes: &HashMap<ChunkId, u64>,
    progress: &dyn Progress,
) -> Result<(SweptRound, Vec<ChunkId>)> {
    sweep_with(repo, opts, r, claimed_at, roots, sizes, None, progress)
}

/// Deletes round `r`'s condemned chunks that no root references and that
/// are still there, in batches, each after checking that the lease holds;
/// then marks the round done.
#[allow(clippy::too_many_arguments)]
fn sweep_with(
    repo: &Repository,
    opts: &PruneOptions,
    r: u64,
    claimed_at: u64,
    roots: &Roots,
    sizes: &HashMap<ChunkId, u64>,
    plan_chunks: Option<Vec<ChunkId>>,
    progress: &dyn Progress,
) -> Result<(SweptRound, Vec<ChunkId>)> {
    let condemned = match plan_chunks {
        Some(c) => c,
        None => repo.load_plan(r)?.chunks,
    };
    let mut out = SweptRound {
        round: r,
        condemned: condemned.len() as u64,
        ..SweptRound::default()
    };
    let delete: Vec<ChunkId> = condemned
        .iter()
        .filter(|c| {
            let keep = roots.chunks.contains(c);
            if keep {
                out.spared += 1;
            }
            !keep && sizes.contains_key(c)
        })
        .copied()
        .collect();
    out.deleted = delete.len() as u64;
    out.deleted_bytes = delete.iter().map(|c| sizes[c]).sum();
    if opts.dry_run {
        return Ok((out, delete));
    }
    progress.begin("prune", out.deleted_bytes);
    for batch in delete.chunks(1000) {
        interrupt::check()?;
        // The lease: a sweep that was held up (a suspended process) past it
        // stops; another prune may have taken the round over.
        let now = store_now(repo, opts)?;
        if now > claimed_at.saturating_add(nanos(opts.lease)) {
            return Err(Error::Refused(format!(
                "prune round {r}: the sweep's lease of {} s ran out before it finished; \
                 stopped (a later prune takes the round over)",
                opts.lease.as_secs()
            )));
        }
        if repo
            .store()
            .size(&layout::round_key(r, RoundObject::Done))?
            .is_some()
        {
            return Err(Error::Refused(format!(
                "prune round {r} was finished by another prune meanwhile; stopped"
            )));
        }
        let keys: Vec<String> = batch.iter().map(layout::chunk_key).collect();
        repo.store().delete_many(&keys)?;
        crate::testhook::point("prune-batch");
        progress.advance(batch.iter().map(|c| sizes[c]).sum());
    }
    progress.end();
    repo.store().flush()?;
    repo.store()
        .put_if_absent(&layout::round_key(r, RoundObject::Done), b"")?;
    repo.store().flush()?;
    Ok((out, delete))
}

/// Lists the roots: pending commits first (acting on those whose fate is
/// decided or whose time is up), then the snapshots; reads every manifest.
fn roots(
    repo: &Repository,
    opts: &PruneOptions,
    now: u64,
    report: &mut PruneReport,
    progress: &dyn Progress,
) -> Result<Roots> {
    let mut chunks: HashSet<ChunkId> = HashSet::new();
    // Pending commits: manifest and fate by id.
    let mut pending: BTreeMap<Hash, (Option<ObjectInfo>, Option<ObjectInfo>)> = BTreeMap::new();
    for o in repo.store().list(layout::PENDING_PREFIX)? {
        if let Some((id, is_fate)) = layout::parse_pending_key(&o.key) {
            let e = pending.entry(id).or_default();
            if is_fate {
                e.1 = Some(o);
            } else {
                e.0 = Some(o);
            }
        }
    }
    for (id, (manifest, fate)) in pending {
        let pending_key = layout::pending_key(&id);
        let fate_key = layout::fate_key(&id);
        let fate_body = match &fate {
            Some(_) => match repo.store().get(&fate_key, 64) {
                Ok(b) => Some(b),
                Err(e) if e.is_missing() => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let Some(info) = manifest else {
            // A fate left behind after its commit finished.
            if !opts.dry_run {
                repo.store().delete(&fate_key)?;
            }
            continue;
        };
        let bytes = match repo.store().get(&pending_key, info.size) {
            Ok(b) => b,
            Err(e) if e.is_missing() => continue,
            Err(e) => return Err(e),
        };
        let decoded = if Hash::of(&bytes) == id {
            Manifest::decode(&bytes).ok()
        } else {
            None
        };
        let old = info
            .modified_unix_ns
            .saturating_add(nanos(opts.pending_expiry))
            <= now;
        match (fate_body.as_deref(), decoded) {
            (Some(f), Some(m)) if f == FATE_COMMIT => {
                // Its writer claimed it and may have died: complete the
                // commit (the writer's checks passed before its claim).
                report.pending_promoted += 1;
                chunks.extend(m.files().flat_map(|(_, _, _, c)| c.iter().map(|c| c.id)));
                if !opts.dry_run {
                    let key = SnapshotKey {
                        height: m.height,
                        created_unix_ns: m.created_unix_ns,
                        id,
                    };
                    repo.store().put_if_absent(&key.key(), &bytes)?;
                    repo.store().flush()?;
                    repo.store().delete(&pending_key)?;
                    repo.store().delete(&fate_key)?;
                }
            }
            (Some(f), _) if f == FATE_EXPIRE => {
                report.pending_expired += 1;
                if !opts.dry_run {
                    repo.store().delete(&pending_key)?;
                    repo.store().delete(&fate_key)?;
                }
            }
            (_, decoded) if old => {
                // Nobody claimed it in time: expire it, unless its writer
                // claims it first (then it is the case above, next run).
                if opts.dry_run {
                    report.pending_expired += 1;
                    continue;
                }
                if repo.store().put_if_absent(&fate_key, FATE_EXPIRE)? {
                    report.pending_expired += 1;
                    repo.store().flush()?;
                    repo.store().delete(&pending_key)?;
                    repo.store().delete(&fate_key)?;
                } else if let Some(m) = decoded {
                    report.pending_kept += 1;
                    chunks.extend(m.files().flat_map(|(_, _, _, c)| c.iter().map(|c| c.id)));
                }
            }
            (_, Some(m)) => {
                report.pending_kept += 1;
                chunks.extend(m.files().flat_map(|(_, _, _, c)| c.iter().map(|c| c.id)));
            }
            (_, None) => {
                return Err(Error::Refused(format!(
                    "{pending_key}: a pending commit that does not decode, too young to expire; \
                     prune stops rather than guess what it needs (it expires after {} s)",
                    opts.pending_expiry.as_secs()
                )))
            }
        }
    }
    // Then the snapshots. Every manifest must be readable: the chunks of
    // one that is not are unknown, and none may be deleted for it.
    let keys = repo.snapshots()?;
    progress.begin("read manifests", keys.len() as u64);
    let per: Vec<Result<Vec<ChunkId>>> = keys
        .par_iter()
        .map(|k| {
            let m = match repo.load_manifest(k) {
                Ok(m) => m,
                // Forgotten since the listing: it references nothing now.
                Err(e) if e.is_missing() => return Ok(Vec::new()),
                Err(e) => {
                    return Err(Error::Refused(format!(
                        "{e}; prune cannot know which chunks that snapshot needs: forget it by id \
                         (`blocksnap forget {}`) or repair it, then prune",
                        k.id.short()
                    )))
                }
            };
            progress.advance(1);
            Ok(m.files()
                .flat_map(|(_, _, _, c)| c.iter().map(|c| c.id))
                .collect())
        })
        .collect();
    progress.end();
    for ids in per {
        chunks.extend(ids?);
    }
    Ok(Roots {
        chunks,
        snapshots: keys.len() as u64,
    })
}

fn list_chunks(repo: &Repository) -> Result<ChunkList> {
    Ok(repo
        .store()
        .list(layout::CHUNKS_PREFIX)?
        .into_iter()
        .filter_map(|o| layout::parse_chunk_key(&o.key).map(|id| (id, o.size, o.modified_unix_ns)))
        .collect())
}
