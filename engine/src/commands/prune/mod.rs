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
use crate::format::layout::{self, Attempt, RoundObject, SnapshotKey};
use crate::format::manifest::Manifest;
use crate::format::prune::PrunePlan;
use crate::id::{ChunkId, Hash};
use crate::progress::{Progress, Silent};
use crate::repo::{
    now_unix_ns, read_fate, Fate, Repository, Round, FATE_EXPIRE, MAX_MANIFEST_OBJECT,
};
use crate::store::{Counts, ObjectInfo};
use crate::sys::interrupt;

/// Chunk ids one plan holds at most (the plan object's size limit).
const MAX_PLAN_CHUNKS: usize = 8_000_000;

/// Unfinished sweep attempts of one round after which a prune says so.
const TAKEOVERS_WORTH_A_WARNING: u32 = 3;

/// Chunks deleted per request (S3's `DeleteObjects` takes 1 000 keys).
const DELETE_BATCH: usize = 1000;

/// Largest fate object read: `commit ` and 64 hex digits, or `expire`.
const MAX_FATE_BYTES: u64 = 128;

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
    /// Pending objects or fates that were no writer's (planted, or damaged):
    /// removed, never roots.
    pub pending_junk: u64,
    /// What an operator should know: objects no blocksnap writes, found and
    /// removed or ignored; rounds taken over many times.
    pub warnings: Vec<String>,
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
    // An instant prune sweeps a plan as soon as it is written (step 5), so
    // it sweeps an earlier plan at once too: one an interrupted instant
    // prune left half-swept would otherwise wait out a grace period nobody
    // asked for.
    let plan_grace = if opts.instant { 0 } else { nanos(opts.grace) };

    // 1. Claim the rounds whose plans are old enough, then bump the epoch.
    // Only after that are the roots listed, so that a writer either shows
    // up in that listing or sees the epoch at its commit.
    let claimable = claimable_rounds(&rounds, opts, now, plan_grace, &mut report);
    // A prune that would fail listing the roots (a manifest that does not
    // load) fails before it claims, so that it leaves no round half-claimed
    // and no epoch bumped for nothing.
    if !claimable.is_empty() && !opts.dry_run {
        let look = PruneOptions {
            dry_run: true,
            ..opts.clone()
        };
        roots(repo, &look, now, &mut PruneReport::default(), &Silent)?;
    }
    let mut claimed: Vec<Claim> = Vec::new();
    for (round, attempt, stamp) in claimable {
        if opts.dry_run {
            claimed.push(Claim {
                round,
                attempt,
                at: now,
            });
        } else {
            match claim(repo, round, attempt, stamp) {
                Ok(Some(c)) => claimed.push(c),
                Ok(None) => {}
                // Nothing was deleted: the rounds claimed so far are
                // released, as below.
                Err(e) => {
                    release(repo, &claimed);
                    return Err(e);
                }
            }
        }
    }

    // 2. Roots, then chunks. Should that fail, the claims are withdrawn:
    // nothing was deleted, and the rounds are as they were.
    let listed = roots(repo, opts, now, &mut report, progress)
        .and_then(|roots| Ok((roots, list_chunks(repo)?)));
    let (roots, chunks) = match listed {
        Ok(l) => l,
        Err(e) => {
            if !opts.dry_run {
                release(repo, &claimed);
            }
            return Err(e);
        }
    };
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
    for c in claimed {
        let (swept, deleted) = sweep(repo, opts, &c, &roots, &sizes, progress)?;
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
                let c = if opts.dry_run {
                    Claim {
                        round: r,
                        attempt: 1,
                        at: now,
                    }
                } else {
                    let stamp = repo.prune_round(r)?.plan_stamp();
                    claim(repo, r, 1, stamp)?.ok_or_else(|| {
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
                    .push(sweep_with(repo, opts, &c, &roots, &sizes, plan_chunks, progress)?.0);
            }
            report.pending_promoted += again.pending_promoted;
            report.pending_expired += again.pending_expired;
        }
    }

    // 6. Retire old rounds' records; remove stale temp files.
    tidy(repo, opts, &rounds, now, &mut report)?;
    if !opts.dry_run {
        repo.refresh_index();
    }
    report.requests = repo.store().request_counts().map(|c| c.since(before));
    report.duration = started.elapsed();
    Ok(report)
}

/// The rounds this run may sweep (step 1), each with the attempt it
/// would claim and its plan's stamp: plans older than the grace (`plan_grace`
/// ns), not done, and not being swept by another prune within its lease.
fn claimable_rounds(
    rounds: &BTreeMap<u64, Round>,
    opts: &PruneOptions,
    now: u64,
    plan_grace: u64,
    report: &mut PruneReport,
) -> Vec<(u64, u32, u64)> {
    rounds
        .iter()
        .filter_map(|(&r, round)| {
            let plan = round.plan.as_ref()?;
            if round.is_done() {
                return None;
            }
            if plan.modified_unix_ns.saturating_add(plan_grace) > now {
                report.waiting_rounds.push(r);
                return None;
            }
            if let Some((_, last)) = round.sweeps.last() {
                if last.modified_unix_ns.saturating_add(nanos(opts.lease)) > now {
                    // Another prune is sweeping it.
                    return None;
                }
            }
            // Each attempt that never finished cost a lease: sweep markers
            // planted ahead of the prunes stall the round by that much each.
            if round
                .attempt()
                .is_some_and(|a| a >= TAKEOVERS_WORTH_A_WARNING)
            {
                report.warnings.push(format!(
                    "prune round {r}: {} sweep attempts have begun and none finished: a sweep that \
                     keeps dying, or sweep markers written by something other than blocksnap \
                     (each delays the round by the lease, {} s)",
                    round.attempt().unwrap_or(0),
                    opts.lease.as_secs()
                ));
            }
            Some((r, round.attempt().map_or(1, |a| a + 1), round.plan_stamp()))
        })
        .collect()
}

/// Step 6: the records of rounds swept long enough ago, the clock probes
/// a killed prune left, and the store's stale temporary writes.
fn tidy(
    repo: &Repository,
    opts: &PruneOptions,
    rounds: &BTreeMap<u64, Round>,
    now: u64,
    report: &mut PruneReport,
) -> Result<()> {
    for round in rounds.values() {
        let Some(done) = round.done() else { continue };
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
            // The done markers last: a round without them is not retired.
            repo.store().delete_many(&keys)?;
            let dones: Vec<String> = round.dones.iter().map(|(_, o)| o.key.clone()).collect();
            repo.store().delete_many(&dones)?;
        }
    }
    // Clock probes a killed prune left behind.
    if !opts.dry_run {
        let stale: Vec<String> = repo
            .store()
            .list(&format!("{}now-", layout::PRUNE_PREFIX))?
            .into_iter()
            .filter(|o| {
                o.modified_unix_ns
                    .saturating_add(nanos(opts.pending_expiry))
                    <= now
            })
            .map(|o| o.key)
            .collect();
        repo.store().delete_many(&stale)?;
    }
    if !opts.dry_run {
        let (files, bytes) = repo
            .store()
            .remove_stale_writes(now.saturating_sub(nanos(opts.pending_expiry)))?;
        report.stale_files = files;
        report.stale_bytes = bytes;
        repo.store().flush()?;
    }
    Ok(())
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

/// A sweep attempt this prune holds.
struct Claim {
    round: u64,
    attempt: u32,
    /// When it was claimed (store clock): the lease runs from here.
    at: u64,
}

/// Claims attempt `attempt` at sweeping round `r` (whose plan has
/// `stamp`), or returns `None` when another prune claimed it first.
fn claim(repo: &Repository, r: u64, attempt: u32, stamp: u64) -> Result<Option<Claim>> {
    let key = layout::round_key(r, RoundObject::Sweep(attempt));
    if !repo.store().put_if_absent(&key, b"")? {
        return Ok(None);
    }
    repo.store().flush()?;
    crate::sys::testhook::point("prune-claimed");
    if let Err(e) = repo.bump_epoch(r, stamp) {
        // No epoch, no deletion: the claim is withdrawn, so that writers do
        // not wait for a sweep that never starts.
        release(
            repo,
            &[Claim {
                round: r,
                attempt,
                at: 0,
            }],
        );
        return Err(e);
    }
    crate::sys::testhook::point("prune-epoch");
    let at = repo
        .store()
        .list(&key)?
        .into_iter()
        .find(|o| o.key == key)
        .map(|o| o.modified_unix_ns)
        .unwrap_or(0);
    Ok(Some(Claim {
        round: r,
        attempt,
        at,
    }))
}

/// Withdraws claims on which nothing was deleted (best effort: a claim
/// left behind is taken over once its lease is over).
fn release(repo: &Repository, claims: &[Claim]) {
    let keys: Vec<String> = claims
        .iter()
        .map(|c| layout::round_key(c.round, RoundObject::Sweep(c.attempt)))
        .collect();
    let _ = repo.store().delete_many(&keys);
    let _ = repo.store().flush();
}

/// Whether this attempt may go on deleting: its lease has a quarter left
/// (the rest is the margin for a request in flight when it ends, since
/// another prune may take over once the whole lease is over), and no
/// later attempt took the round over and no attempt finished it.
fn still_holds(repo: &Repository, opts: &PruneOptions, c: &Claim) -> Result<()> {
    let lease = nanos(opts.lease);
    let now = store_now(repo, opts)?;
    if now >= c.at.saturating_add(lease - lease / 4) {
        return Err(Error::Refused(format!(
            "prune round {}: the sweep's lease of {} s ran out before it finished; \
             stopped (a later prune takes the round over)",
            c.round,
            opts.lease.as_secs()
        )));
    }
    let round = repo.prune_round(c.round)?;
    if round.attempt() != Some(c.attempt) || round.is_done() {
        return Err(Error::Refused(format!(
            "prune round {} was taken over or finished by another prune meanwhile; stopped",
            c.round
        )));
    }
    Ok(())
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
        if round.plan.is_none() || round.is_done() || swept.contains(&r) {
            continue;
        }
        out.extend(repo.load_plan(r)?.chunks);
    }
    Ok(out)
}

fn sweep(
    repo: &Repository,
    opts: &PruneOptions,
    claim: &Claim,
    roots: &Roots,
    sizes: &HashMap<ChunkId, u64>,
    progress: &dyn Progress,
) -> Result<(SweptRound, Vec<ChunkId>)> {
    sweep_with(repo, opts, claim, roots, sizes, None, progress)
}

/// Deletes the claimed round's condemned chunks that no root references
/// and that are still there, in batches, each after checking that the
/// claim still holds; then, after one more check, marks the attempt done.
fn sweep_with(
    repo: &Repository,
    opts: &PruneOptions,
    claim: &Claim,
    roots: &Roots,
    sizes: &HashMap<ChunkId, u64>,
    plan_chunks: Option<Vec<ChunkId>>,
    progress: &dyn Progress,
) -> Result<(SweptRound, Vec<ChunkId>)> {
    let r = claim.round;
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
    for batch in delete.chunks(crate::sys::testhook::tunable("PRUNE_BATCH", DELETE_BATCH)) {
        interrupt::check()?;
        // A sweep held up (a suspended process) past its lease stops:
        // another prune may have taken the round over.
        still_holds(repo, opts, claim)?;
        let keys: Vec<String> = batch.iter().map(layout::chunk_key).collect();
        repo.store().delete_many(&keys)?;
        crate::sys::testhook::point("prune-batch");
        progress.advance(batch.iter().map(|c| sizes[c]).sum());
    }
    progress.end();
    repo.store().flush()?;
    // Done only while still the round's attempt: a done marker says every
    // deletion of the latest attempt is over.
    still_holds(repo, opts, claim)?;
    crate::sys::testhook::point("prune-done");
    repo.store()
        .put_if_absent(&layout::round_key(r, RoundObject::Done(claim.attempt)), b"")?;
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
    // Pending commits: each attempt's manifest and fate (an attempt of
    // `None` is a legacy `pending/<id>`).
    type Objects = (Option<ObjectInfo>, Option<ObjectInfo>);
    let mut pending: BTreeMap<(Hash, Option<Attempt>), Objects> = BTreeMap::new();
    for o in repo.store().list(layout::PENDING_PREFIX)? {
        if let Some((id, attempt, is_fate)) = layout::parse_pending_key(&o.key) {
            let e = pending.entry((id, attempt)).or_default();
            if is_fate {
                e.1 = Some(o);
            } else {
                e.0 = Some(o);
            }
        }
    }
    let store = repo.store();
    for ((id, attempt), (manifest, fate)) in pending {
        interrupt::check()?;
        let (pending_key, fate_key) = match &attempt {
            Some(a) => (layout::pending_key(&id, a), layout::fate_key(&id, a)),
            None => (
                layout::legacy_pending_key(&id),
                layout::legacy_fate_key(&id),
            ),
        };
        let fate = match &fate {
            Some(_) => match store.get(&fate_key, MAX_FATE_BYTES) {
                Ok(b) => Some(read_fate(&b, attempt.as_ref())),
                Err(e) if e.is_missing() => None,
                // Larger than any fate blocksnap writes.
                Err(Error::Format { .. }) => Some(Fate::Junk),
                Err(e) => return Err(e),
            },
            None => None,
        };
        // Removes the attempt: the pending object first, then the fate (a
        // writer that finds its fate key free again finds its pending
        // object gone, and refuses).
        let drop_attempt = || -> Result<()> {
            if !opts.dry_run {
                store.delete(&pending_key)?;
                store.delete(&fate_key)?;
            }
            Ok(())
        };
        let Some(info) = manifest else {
            // A fate left behind after its commit finished.
            if !opts.dry_run {
                store.delete(&fate_key)?;
            }
            continue;
        };
        // Sound: no larger than a manifest, hashes to its name, decodes.
        // Anything else is no commit a writer made (a writer names its
        // pending object by the BLAKE3 of what it writes, after validating
        // it), and never a root.
        let sound = if info.size <= MAX_MANIFEST_OBJECT {
            match store.get(&pending_key, MAX_MANIFEST_OBJECT) {
                Ok(b) if Hash::of(&b) == id => Manifest::decode(&b).ok().map(|m| (m, b)),
                Ok(_) => None,
                Err(e) if e.is_missing() => continue,
                Err(Error::Format { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let old = info
            .modified_unix_ns
            .saturating_add(nanos(opts.pending_expiry))
            <= now;
        match (fate, sound) {
            (Some(Fate::Claim), Some((m, bytes))) => {
                // Its writer claimed it after its check, and may have died:
                // complete the commit. A forget record does not stop this:
                // the record keeps the snapshot forgotten, and the chunks
                // stay roots while the manifest is listed.
                report.pending_promoted += 1;
                chunks.extend(m.files().flat_map(|(_, _, _, c)| c.iter().map(|c| c.id)));
                if !opts.dry_run {
                    let key = SnapshotKey {
                        height: m.height,
                        created_unix_ns: m.created_unix_ns,
                        id,
                    };
                    store.put_if_absent(&key.key(), &bytes)?;
                    store.flush()?;
                    crate::sys::testhook::point("prune-completed");
                    drop_attempt()?;
                }
            }
            (Some(Fate::Expire), _) => {
                report.pending_expired += 1;
                drop_attempt()?;
            }
            (Some(Fate::Junk), _) | (Some(Fate::Claim), None) => {
                report.pending_junk += 1;
                report.warnings.push(format!(
                    "{pending_key}: not a commit any writer claimed (its fate or its manifest is \
                     not what blocksnap writes); removed"
                ));
                drop_attempt()?;
            }
            (None, None) => {
                // Expired at once: nothing can be a root of it, and once
                // its fate is taken no writer can claim it.
                report.pending_junk += 1;
                report.warnings.push(format!(
                    "{pending_key}: not a pending commit blocksnap writes (too large, not hashing \
                     to its name, or not a manifest); removed"
                ));
                if !opts.dry_run && store.put_if_absent(&fate_key, FATE_EXPIRE)? {
                    store.flush()?;
                    drop_attempt()?;
                }
            }
            (None, Some((m, _))) if old => {
                // Nobody claimed it in time: expire it, unless its writer
                // claims it first (then it is the case above, next run).
                if opts.dry_run {
                    report.pending_expired += 1;
                    continue;
                }
                if store.put_if_absent(&fate_key, FATE_EXPIRE)? {
                    report.pending_expired += 1;
                    store.flush()?;
                    drop_attempt()?;
                } else {
                    report.pending_kept += 1;
                    chunks.extend(m.files().flat_map(|(_, _, _, c)| c.iter().map(|c| c.id)));
                }
            }
            (None, Some((m, _))) => {
                report.pending_kept += 1;
                chunks.extend(m.files().flat_map(|(_, _, _, c)| c.iter().map(|c| c.id)));
            }
        }
    }
    // Then the snapshots: every manifest listed, forgotten or not (a forget
    // record never drops roots: anyone who can write to the bucket could
    // plant one). Every manifest must be readable: the chunks of one that
    // is not are unknown, and none may be deleted for it.
    let keys = repo.all_snapshots()?;
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
