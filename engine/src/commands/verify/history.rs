//! The history graph `verify --chain` checks, as a pure function of the
//! snapshots' links and the forget records that count: each parent must be
//! a snapshot or a forgotten one of the same history, and no two snapshots
//! of a history may claim one parent (a fork). Reads nothing.

use std::collections::{HashMap, HashSet};

use crate::format::forget::ForgetRecord;
use crate::format::layout::SnapshotKey;
use crate::id::Hash;

use super::report::{ChainReport, Link, Problem, ProblemKind};

/// Checks the graph; what breaks it goes to `problems`.
pub(super) fn check(
    links: &[&Link],
    records: &HashMap<Hash, ForgetRecord>,
    problems: &mut Vec<Problem>,
) -> ChainReport {
    let by_id: HashMap<Hash, &Link> = links.iter().map(|l| (l.key.id, *l)).collect();
    let mut report = ChainReport::default();
    let mut children: HashMap<(String, String, Hash), Vec<String>> = HashMap::new();
    let mut histories: HashSet<(String, String)> = HashSet::new();
    // (key, host, source, parent) of every node: snapshots and records.
    let nodes: Vec<(String, &str, &str, Option<Hash>)> = links
        .iter()
        .map(|l| (l.key.key(), l.host.as_str(), l.source.as_str(), l.parent))
        .chain(records.values().map(|r| {
            (
                r.snapshot.clone(),
                r.host.as_str(),
                r.source.as_str(),
                r.parent,
            )
        }))
        .collect();
    // A forgotten snapshot that nothing names as parent was a history's
    // tip when it was forgotten: the next snapshot chose the one before it,
    // which is not a fork.
    let parents: HashSet<Hash> = nodes.iter().filter_map(|n| n.3).collect();
    let tips: HashSet<String> = records
        .iter()
        .filter(|(id, _)| !parents.contains(id))
        .map(|(_, r)| r.snapshot.clone())
        .collect();
    let mut newest: HashMap<(&str, &str), SnapshotKey> = HashMap::new();
    for l in links {
        let n = newest
            .entry((l.host.as_str(), l.source.as_str()))
            .or_insert(l.key);
        if l.key > *n {
            *n = l.key;
        }
    }
    for (key, host, source, parent) in &nodes {
        histories.insert((host.to_string(), source.to_string()));
        let Some(p) = parent else { continue };
        let same = |h: &str, s: &str| s == *source && (h == *host || h.is_empty());
        if let Some(l) = by_id.get(p) {
            if same(&l.host, &l.source) {
                report.links += 1;
            } else {
                problems.push(Problem::of_snapshot(
                    ProblemKind::BrokenChain,
                    key.clone(),
                    format!(
                        "parent {} belongs to another history ({} {}), not {host} {source}",
                        p.short(),
                        l.host,
                        l.source
                    ),
                ));
                continue;
            }
        } else if let Some(r) = records.get(p) {
            if same(&r.host, &r.source) || r.host.is_empty() && r.source.is_empty() {
                report.forgotten += 1;
            } else {
                problems.push(Problem::of_snapshot(
                    ProblemKind::BrokenChain,
                    key.clone(),
                    format!("parent {} was forgotten from another history", p.short()),
                ));
                continue;
            }
        } else {
            // A snapshot of the same history that is nobody's parent and
            // not its newest may be what replaced the missing one.
            let suspects: Vec<String> = links
                .iter()
                .filter(|l| l.host == *host && l.source == *source)
                .filter(|l| {
                    !parents.contains(&l.key.id)
                        && newest.get(&(l.host.as_str(), l.source.as_str())) != Some(&l.key)
                })
                .map(|l| format!("{} (height {})", l.key.id.short(), l.key.height))
                .collect();
            let hint = if suspects.is_empty() {
                String::new()
            } else {
                format!(
                    "; snapshot(s) {} of this history are nobody's parent: a replacement?",
                    suspects.join(", ")
                )
            };
            problems.push(Problem::of_snapshot(
                ProblemKind::BrokenChain,
                key.clone(),
                format!(
                    "parent {} is neither a snapshot nor a forgotten one: removed or replaced{hint}",
                    p.short()
                ),
            ));
            continue;
        }
        children
            .entry((host.to_string(), source.to_string(), *p))
            .or_default()
            .push(key.clone());
    }
    for ((host, source, parent), mut kids) in children {
        kids.retain(|k| !tips.contains(k));
        if kids.len() > 1 {
            kids.sort();
            problems.push(Problem::of_snapshot(
                ProblemKind::Fork,
                kids[0].clone(),
                format!(
                    "history {host} {source}: {} snapshots claim parent {}: {}",
                    kids.len(),
                    parent.short(),
                    kids.join(", ")
                ),
            ));
        }
    }
    report.histories = histories.len() as u64;
    report
}
