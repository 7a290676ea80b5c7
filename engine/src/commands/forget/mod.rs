//! `forget`: removing snapshots from the repository (their chunks stay
//! until `prune` collects those no snapshot needs).
//!
//! [`plan`] decides, per snapshot, keep or forget and why (a retention
//! policy per history, or snapshots named one by one); the plan is the
//! dry run. [`execute`] forgets: for each snapshot it first writes the
//! forget record `forgotten/<id>` (what the history chain needs to step
//! over the gap, and who forgot it and why), makes it durable, then deletes
//! the manifest. A crash between the two leaves a snapshot with a record,
//! which a re-run forgets; never a snapshot gone without one.

pub mod retention;

use serde::Serialize;

use self::retention::{Candidate, Decision, Policy};
use crate::error::{Error, Result};
use crate::format::forget::ForgetRecord;
use crate::format::layout::{self, SnapshotKey};
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository, Selector};

#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    /// Snapshots to forget by name (ids, heights, `latest`), instead of a
    /// policy.
    pub named: Vec<Selector>,
    /// Only snapshots of this host (node) are considered.
    pub host: Option<String>,
    /// Calendar buckets in UTC rather than local time.
    pub utc: bool,
    /// The forgetting host, recorded in each forget record.
    pub by_host: String,
    /// The clock (ns since the epoch); tests pass their own.
    pub now_unix_ns: u64,
    /// Sign each forget record with this key.
    pub signer: Option<std::sync::Arc<crate::repo::sign::Signer>>,
    /// With trusted keys, a policy counts only the snapshots a trusted key
    /// signed: an unsigned or foreign snapshot is neither counted nor
    /// forgotten, so it can never displace a signed one.
    pub trust: Option<std::sync::Arc<crate::repo::sign::Trust>>,
    /// A snapshot created more than this far ahead of the clock is not
    /// counted by a policy (and kept): a planted or misdated snapshot
    /// "from tomorrow" cannot push real ones out. 0: [`MAX_CLOCK_SKEW`].
    pub max_clock_skew: std::time::Duration,
}

/// How far ahead of this host's clock a snapshot's creation time may be
/// and still count for a retention policy, by default.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Serialize)]
pub struct ForgetPlan {
    pub decisions: Vec<Decision>,
    /// Snapshots whose manifest could not be read: never forgotten here
    /// (verify reports them).
    pub unreadable: Vec<String>,
    /// Snapshots a policy did not count, and why: not signed by a trusted
    /// key, or dated ahead of the clock. They are kept.
    pub not_counted: Vec<String>,
}

impl ForgetPlan {
    pub fn forgotten(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub forgotten: u64,
    pub kept: u64,
    /// Store requests made, for stores that count them.
    pub requests: Option<crate::store::Counts>,
}

pub fn plan(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetPlan> {
    if opts.policy.is_empty() && opts.named.is_empty() {
        return Err(Error::Refused(
            "forget needs a policy (--keep-last, --keep-within, --keep-daily, …) or snapshots to \
             forget by name; with neither it would forget everything"
                .into(),
        ));
    }
    if !opts.policy.is_empty() && !opts.named.is_empty() {
        return Err(Error::Refused(
            "forget takes either a policy or snapshots by name, not both".into(),
        ));
    }
    let mut candidates = Vec::new();
    let mut unreadable = Vec::new();
    let mut unreadable_keys = Vec::new();
    // Left out of the policy, kept: (candidate, why).
    let mut left_out: Vec<(Candidate, String)> = Vec::new();
    let skew = match opts.max_clock_skew {
        d if d.is_zero() => MAX_CLOCK_SKEW,
        d => d,
    };
    let future = opts
        .now_unix_ns
        .saturating_add(skew.as_nanos().min(u64::MAX as u128) as u64);
    let listed = match &opts.trust {
        Some(_) => Some(crate::repo::sign::Signatures::list(&**repo.store())?),
        None => None,
    };
    for key in repo.snapshots()? {
        match repo.load_manifest(&key) {
            Ok(m) => {
                if opts.host.as_ref().is_some_and(|h| *h != m.host) {
                    continue;
                }
                let c = Candidate {
                    key,
                    host: m.host,
                    source: m.source,
                    tags: m.tags,
                };
                if !opts.named.is_empty() {
                    candidates.push(c);
                    continue;
                }
                if let (Some(trust), Some(listed)) = (&opts.trust, &listed) {
                    let subject = crate::repo::sign::Subject::Snapshot(key);
                    let trusted = trust.may_vouch(listed, &subject)
                        && repo.manifest_bytes(&key).is_ok_and(|b| {
                            trust.check(&**repo.store(), listed, &subject, &b).trusted()
                        });
                    if !trusted {
                        left_out.push((c, "not signed by a trusted key: not counted".into()));
                        continue;
                    }
                }
                if key.created_unix_ns > future {
                    let ahead = (key.created_unix_ns - opts.now_unix_ns) / 1_000_000_000;
                    left_out.push((
                        c,
                        format!(
                            "created {ahead} s ahead of this host's clock (more than the {} s \
                             allowed): not counted",
                            skew.as_secs()
                        ),
                    ));
                    continue;
                }
                candidates.push(c);
            }
            Err(e) => {
                unreadable.push(format!("{}: {e}", key.key()));
                unreadable_keys.push(key);
            }
        }
    }
    let not_counted: Vec<String> = left_out
        .iter()
        .map(|(c, why)| format!("{}: {why}", c.key.key()))
        .collect();
    let kept_out = left_out.into_iter().map(|(c, why)| Decision {
        key: c.key.key(),
        height: c.key.height,
        created_unix_ns: c.key.created_unix_ns,
        host: c.host,
        source: c.source,
        keep: true,
        reasons: vec![why],
    });
    let decisions = if opts.named.is_empty() {
        let tz = if opts.utc {
            jiff::tz::TimeZone::UTC
        } else {
            jiff::tz::TimeZone::system()
        };
        let mut all = retention::apply(&candidates, &opts.policy, opts.now_unix_ns, &tz);
        all.extend(kept_out);
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    } else {
        let mut named: Vec<SnapshotKey> = Vec::new();
        for sel in &opts.named {
            if *sel == Selector::All {
                return Err(Error::Refused(
                    "forget does not take `all`: name snapshots, or give a policy".into(),
                ));
            }
            named.extend(repo.resolve(sel)?);
        }
        // A damaged snapshot can be forgotten by name (its history is
        // unknown): what prune needs before it can run.
        let damaged = unreadable_keys
            .iter()
            .filter(|k| named.contains(k))
            .map(|k| Decision {
                key: k.key(),
                height: k.height,
                created_unix_ns: k.created_unix_ns,
                host: String::new(),
                source: String::new(),
                keep: false,
                reasons: Vec::new(),
            });
        let mut all: Vec<Decision> = candidates
            .iter()
            .map(|c| {
                let forget = named.contains(&c.key);
                Decision {
                    key: c.key.key(),
                    height: c.key.height,
                    created_unix_ns: c.key.created_unix_ns,
                    host: c.host.clone(),
                    source: c.source.clone(),
                    keep: !forget,
                    reasons: if forget {
                        Vec::new()
                    } else {
                        vec!["not named".into()]
                    },
                }
            })
            .collect();
        all.extend(damaged);
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    };
    Ok(ForgetPlan {
        decisions,
        unreadable,
        not_counted,
    })
}

pub fn execute(
    repo: &Repository,
    plan: &ForgetPlan,
    opts: &ForgetOptions,
    progress: &dyn Progress,
) -> Result<ForgetReport> {
    let before = repo.store().request_counts();
    let reason = if opts.named.is_empty() {
        "retention policy"
    } else {
        "named"
    };
    let forget: Vec<&Decision> = plan.forgotten().collect();
    let mut refused: Vec<String> = Vec::new();
    progress.begin("forget", forget.len() as u64);
    for d in &forget {
        crate::sys::interrupt::check()?;
        let key = SnapshotKey::parse(&d.key).map_err(Error::format(&d.key))?;
        let record = match repo.load_manifest(&key) {
            Ok(m) => ForgetRecord {
                snapshot: key.key(),
                host: m.host,
                source: m.source,
                height: m.height,
                parent: m.parent,
                forgotten_unix_ns: opts.now_unix_ns,
                by_host: opts.by_host.clone(),
                reason: reason.to_string(),
            },
            // Forgotten since the plan (another forget): nothing to do.
            Err(e) if e.is_missing() => continue,
            // Named though damaged: what is known of it is its key.
            Err(e) if !opts.named.is_empty() => ForgetRecord {
                snapshot: key.key(),
                host: String::new(),
                source: String::new(),
                height: key.height,
                parent: None,
                forgotten_unix_ns: opts.now_unix_ns,
                by_host: opts.by_host.clone(),
                reason: format!("named; manifest unreadable: {e}")
                    .chars()
                    .take(1000)
                    .collect(),
            },
            Err(e) => return Err(e),
        };
        let record_key = layout::forgotten_key(&key.id);
        let mut bytes = record.encode();
        if !repo.store().put_if_absent(&record_key, &bytes)? {
            // Recorded already (an earlier run, or another forget): that is
            // the record to sign — but only if it is the record this run
            // would write, so that the key never signs bytes blocksnap did
            // not produce (#20: a manifest planted at `forgotten/<id>`).
            let there = repo
                .store()
                .get(&record_key, crate::format::limits::MAX_RECORD_BYTES)?;
            if let Err(why) = same_record(&there, &record) {
                refused.push(format!(
                    "{record_key}: {why}; {} was not forgotten (blocksnap never replaces an \
                     object: delete it, then forget again)",
                    key.key()
                ));
                progress.advance(1);
                continue;
            }
            bytes = there;
        }
        if let Some(signer) = &opts.signer {
            signer.sign_forget(&**repo.store(), &key.id, &bytes)?;
        }
        repo.store().flush()?;
        crate::sys::testhook::point("forget-recorded");
        repo.store().delete(&key.key())?;
        progress.advance(1);
    }
    repo.store().flush()?;
    progress.end();
    if !forget.is_empty() {
        repo.refresh_index();
    }
    if !refused.is_empty() {
        return Err(Error::Refused(format!(
            "forgot {} of {} snapshot(s); not forgotten: {}",
            forget.len() - refused.len(),
            forget.len(),
            refused.join("; ")
        )));
    }
    Ok(ForgetReport {
        forgotten: forget.len() as u64,
        kept: plan.decisions.len() as u64 - forget.len() as u64,
        requests: repo.store().request_counts().map(|c| c.since(before)),
    })
}

/// Whether `there` (the bytes found at a forget record's key) records what
/// `ours` records: a forget record that decodes, of the same snapshot, with
/// the same host, source, height and parent (what a chain walk relies on).
/// When, by whom and why may differ (an earlier or another forget of the
/// same snapshot): signing it vouches only that the snapshot is forgotten,
/// which this run is doing.
fn same_record(there: &[u8], ours: &ForgetRecord) -> std::result::Result<(), String> {
    let r = ForgetRecord::decode(there)
        .map_err(|e| format!("the object there is not a forget record ({e})"))?;
    let same = r.snapshot == ours.snapshot
        && r.host == ours.host
        && r.source == ours.source
        && r.height == ours.height
        && r.parent == ours.parent;
    if !same {
        return Err(format!(
            "the forget record there does not record this snapshot as it is (it names {} of \
             host {:?}, source {:?}, height {})",
            r.snapshot, r.host, r.source, r.height
        ));
    }
    Ok(())
}

/// The clock for a forget run: now.
pub fn now() -> u64 {
    now_unix_ns()
}
