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

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::forget::ForgetRecord;
use crate::format::layout::{self, SnapshotKey};
use crate::progress::Progress;
use crate::repo::{now_unix_ns, Repository, Selector};
use crate::retention::{self, Candidate, Decision, Policy};

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
    pub signer: Option<std::sync::Arc<crate::sign::Signer>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetPlan {
    pub decisions: Vec<Decision>,
    /// Snapshots whose manifest could not be read: never forgotten here
    /// (verify reports them).
    pub unreadable: Vec<String>,
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
    for key in repo.snapshots()? {
        match repo.load_manifest(&key) {
            Ok(m) => {
                if opts.host.as_ref().is_some_and(|h| *h != m.host) {
                    continue;
                }
                candidates.push(Candidate {
                    key,
                    host: m.host,
                    source: m.source,
                    tags: m.tags,
                });
            }
            Err(e) => {
                unreadable.push(format!("{}: {e}", key.key()));
                unreadable_keys.push(key);
            }
        }
    }
    let decisions = if opts.named.is_empty() {
        let tz = if opts.utc {
            jiff::tz::TimeZone::UTC
        } else {
            jiff::tz::TimeZone::system()
        };
        retention::apply(&candidates, &opts.policy, opts.now_unix_ns, &tz)
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
    progress.begin("forget", forget.len() as u64);
    for d in &forget {
        crate::interrupt::check()?;
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
            // Recorded by an earlier run: that is the record to sign.
            bytes = repo
                .store()
                .get(&record_key, crate::format::limits::MAX_RECORD_BYTES)?;
        }
        if let Some(signer) = &opts.signer {
            signer.sign_forget(repo, &key.id, &bytes)?;
        }
        repo.store().flush()?;
        crate::testhook::point("forget-recorded");
        repo.store().delete(&key.key())?;
        progress.advance(1);
    }
    repo.store().flush()?;
    progress.end();
    Ok(ForgetReport {
        forgotten: forget.len() as u64,
        kept: plan.decisions.len() as u64 - forget.len() as u64,
        requests: repo.store().request_counts().map(|c| c.since(before)),
    })
}

/// The clock for a forget run: now.
pub fn now() -> u64 {
    now_unix_ns()
}
