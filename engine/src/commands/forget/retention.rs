//! Retention policies: which snapshots `forget` keeps, as a pure function of
//! the snapshots, the policy, the clock and the time zone (all passed in).
//!
//! A policy applies to each history (host and source) on its own. Each
//! rule names the snapshots it keeps; a snapshot is kept if any rule keeps
//! it, and every rule that does is given as a reason:
//! - `last N`: the N newest;
//! - `within D`: those created at most D before `now` (and any created
//!   after `now`, when the clock is behind);
//! - `hourly/daily/weekly/monthly/yearly N`: the newest snapshot of each of
//!   the N newest hours, days, ISO weeks, months or years (in the given time
//!   zone) that hold one, as restic does; N may be unlimited;
//! - `tag T`: those tagged T;
//! - `every N blocks`: one snapshot per N blocks of height, the lowest in
//!   each window `[k·N, (k+1)·N)` (stable: later snapshots in the window do
//!   not displace it).
//!
//! Time means the snapshot's `created` time, from its key.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Serialize;

use crate::format::layout::SnapshotKey;

/// How many buckets a calendar rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    N(u64),
    Unlimited,
}

impl Count {
    fn allows(self, kept: u64) -> bool {
        match self {
            Count::N(n) => kept < n,
            Count::Unlimited => true,
        }
    }
}

impl std::str::FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> Result<Count, String> {
        match s {
            "unlimited" | "all" => Ok(Count::Unlimited),
            n => n
                .parse()
                .map(Count::N)
                .map_err(|_| format!("{s:?} is not a count (a number or `unlimited`)")),
        }
    }
}

/// Parses a duration such as `15d`, `36h`, `2w`, `1y6m` (y = 365 days,
/// m = 30 days, w = 7 days, d = 24 hours, h = hour, s = second).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 15d, 36h, 2w, 1y6m)");
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'y' => 365 * 86_400,
            'm' => 30 * 86_400,
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub last: Option<Count>,
    pub within: Option<Duration>,
    pub hourly: Option<Count>,
    pub daily: Option<Count>,
    pub weekly: Option<Count>,
    pub monthly: Option<Count>,
    pub yearly: Option<Count>,
    pub tags: Vec<String>,
    pub every_blocks: Option<u64>,
}

impl Policy {
    /// A policy with no rule keeps nothing: `forget` refuses it.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.within.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.tags.is_empty()
            && self.every_blocks.is_none()
    }
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: SnapshotKey,
    pub host: String,
    pub source: String,
    pub tags: Vec<String>,
}

/// Keep or forget, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub key: String,
    pub height: u64,
    pub created_unix_ns: u64,
    pub host: String,
    pub source: String,
    pub keep: bool,
    /// The rules that keep it; empty when it is forgotten.
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Calendar {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Calendar {
    fn name(self) -> &'static str {
        match self {
            Calendar::Hour => "hourly",
            Calendar::Day => "daily",
            Calendar::Week => "weekly",
            Calendar::Month => "monthly",
            Calendar::Year => "yearly",
        }
    }

    /// The bucket of a time, as text that names it.
    fn bucket(self, unix_ns: u64, tz: &TimeZone) -> String {
        let Ok(ts) = jiff::Timestamp::from_nanosecond(i128::from(unix_ns)) else {
            return String::from("?");
        };
        let z = ts.to_zoned(tz.clone());
        match self {
            Calendar::Hour => format!(
                "{:04}-{:02}-{:02} {:02}h",
                z.year(),
                z.month(),
                z.day(),
                z.hour()
            ),
            Calendar::Day => format!("{:04}-{:02}-{:02}", z.year(), z.month(), z.day()),
            Calendar::Week => {
                let w = z.date().iso_week_date();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Calendar::Month => format!("{:04}-{:02}", z.year(), z.month()),
            Calendar::Year => format!("{:04}", z.year()),
        }
    }
}

/// Applies `policy` to every history in `candidates`, as of `now_unix_ns`,
/// with calendar buckets in `tz`. Returns one decision per candidate, in
/// key order.
pub fn apply(
    candidates: &[Candidate],
    policy: &Policy,
    now_unix_ns: u64,
    tz: &TimeZone,
) -> Vec<Decision> {
    let mut histories: BTreeMap<(&str, &str), Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        histories.entry((&c.host, &c.source)).or_default().push(c);
    }
    let mut reasons: BTreeMap<SnapshotKey, Vec<String>> = BTreeMap::new();
    for (_, mut snaps) in histories {
        // Newest first: by time, then key.
        snaps.sort_by_key(|c| std::cmp::Reverse((c.key.created_unix_ns, c.key)));
        let mut keep = |c: &Candidate, why: String| {
            reasons.entry(c.key).or_default().push(why);
        };
        if let Some(n) = policy.last {
            for (kept, c) in snaps.iter().enumerate() {
                if !n.allows(kept as u64) {
                    break;
                }
                keep(c, format!("last {}", kept + 1));
            }
        }
        if let Some(d) = policy.within {
            let from = now_unix_ns.saturating_sub(d.as_nanos() as u64);
            for c in snaps.iter().filter(|c| c.key.created_unix_ns >= from) {
                keep(c, format!("within {}", human(d)));
            }
        }
        for (count, cal) in [
            (policy.hourly, Calendar::Hour),
            (policy.daily, Calendar::Day),
            (policy.weekly, Calendar::Week),
            (policy.monthly, Calendar::Month),
            (policy.yearly, Calendar::Year),
        ] {
            let Some(n) = count else { continue };
            let mut seen: HashSet<String> = HashSet::new();
            for c in &snaps {
                if !n.allows(seen.len() as u64) {
                    break;
                }
                let b = cal.bucket(c.key.created_unix_ns, tz);
                if seen.insert(b.clone()) {
                    keep(c, format!("{} {b}", cal.name()));
                }
            }
        }
        for t in &policy.tags {
            for c in snaps.iter().filter(|c| c.tags.contains(t)) {
                keep(c, format!("tag {t}"));
            }
        }
        if let Some(n) = policy.every_blocks.filter(|n| *n > 0) {
            let mut lowest: BTreeMap<u64, &Candidate> = BTreeMap::new();
            for c in &snaps {
                let w = c.key.height / n;
                let better = lowest.get(&w).is_none_or(|b| c.key.height < b.key.height);
                if better {
                    lowest.insert(w, c);
                }
            }
            for (w, c) in lowest {
                keep(c, format!("every {n} blocks (window {})", w * n));
            }
        }
    }
    let mut out: Vec<Decision> = candidates
        .iter()
        .map(|c| {
            let why = reasons.remove(&c.key).unwrap_or_default();
            Decision {
                key: c.key.key(),
                height: c.key.height,
                created_unix_ns: c.key.created_unix_ns,
                host: c.host.clone(),
                source: c.source.clone(),
                keep: !why.is_empty(),
                reasons: why,
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{}h", s / 3_600)
    } else {
        // Seconds.
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Hash;

    const H: u64 = 3_600 * 1_000_000_000;
    const DAY: u64 = 24 * H;
    /// 2026-11-30T00:00:00Z.
    const T0: u64 = 1_795_996_800 * 1_000_000_000;

    fn snap(height: u64, at: u64, tags: &[&str]) -> Candidate {
        Candidate {
            key: SnapshotKey {
                height,
                created_unix_ns: at,
                id: Hash::of(&[height.to_le_bytes(), at.to_le_bytes()].concat()),
            },
            host: "node-a".into(),
            source: "/data".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// Hourly snapshots over the `days` days before T0, the last at 23:00
    /// (height = hour index).
    fn hourly(days: u64) -> Vec<Candidate> {
        (0..days * 24)
            .map(|h| snap(h, T0 - (days * 24 - h) * H, &[]))
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<u64> {
        d.iter().filter(|d| d.keep).map(|d| d.height).collect()
    }

    #[test]
    fn each_rule_keeps_what_it_says() {
        let snaps = hourly(3);
        let utc = TimeZone::UTC;
        let p = |f: fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            p
        };
        assert_eq!(
            kept(&apply(&snaps, &p(|p| p.last = Some(Count::N(3))), T0, &utc)),
            vec![69, 70, 71]
        );
        let within = apply(
            &snaps,
            &p(|p| p.within = Some(Duration::from_secs(5 * 3600))),
            T0,
            &utc,
        );
        assert_eq!(kept(&within), vec![67, 68, 69, 70, 71]);
        assert_eq!(within[71].reasons, vec!["within 5h"]);
        // The newest of each of the 2 newest days: 23:00 of days 2 and 3.
        let daily = apply(&snaps, &p(|p| p.daily = Some(Count::N(2))), T0, &utc);
        assert_eq!(kept(&daily), vec![47, 71]);
        assert!(
            daily[71].reasons[0].starts_with("daily 2026-11-29"),
            "{:?}",
            daily[71]
        );
        assert_eq!(
            kept(&apply(
                &snaps,
                &p(|p| p.daily = Some(Count::Unlimited)),
                T0,
                &utc
            )),
            vec![23, 47, 71]
        );
        assert_eq!(
            kept(&apply(
                &snaps,
                &p(|p| p.hourly = Some(Count::N(2))),
                T0,
                &utc
            )),
            vec![70, 71]
        );
        let mut tagged = snaps.clone();
        tagged[10].tags.push("daily".into());
        assert_eq!(
            kept(&apply(
                &tagged,
                &p(|p| p.tags = vec!["daily".into()]),
                T0,
                &utc
            )),
            vec![10]
        );
        // One per 24 blocks: the lowest height of each window.
        assert_eq!(
            kept(&apply(&snaps, &p(|p| p.every_blocks = Some(24)), T0, &utc)),
            vec![0, 24, 48]
        );
        let none = apply(&snaps, &Policy::default(), T0, &utc);
        assert!(kept(&none).is_empty() && Policy::default().is_empty());
    }

    #[test]
    fn rules_combine_per_history_and_survive_odd_inputs() {
        let utc = TimeZone::UTC;
        let mut snaps = hourly(2);
        // Another node with the same path: its own history.
        let mut other = snap(5, T0 - 10 * DAY, &[]);
        other.host = "node-b".into();
        snaps.push(other);
        // Two snapshots of one height, and a gap of days.
        snaps.push(snap(40, T0 - 10 * DAY, &[]));
        snaps.push(snap(40, T0 - 10 * DAY + 1, &[]));
        let p = Policy {
            last: Some(Count::N(1)),
            weekly: Some(Count::N(10)),
            ..Policy::default()
        };
        let d = apply(&snaps, &p, T0, &utc);
        let node_b: Vec<_> = d.iter().filter(|d| d.host == "node-b").collect();
        assert!(node_b[0].keep && node_b[0].reasons.contains(&"last 1".to_string()));
        // Of the two at one height and time bucket, the newer is kept.
        let twins: Vec<_> = d
            .iter()
            .filter(|d| d.height == 40 && d.created_unix_ns < T0 - 4 * DAY)
            .collect();
        assert_eq!(twins.len(), 2);
        assert_eq!(twins.iter().filter(|d| d.keep).count(), 1, "{twins:?}");
        // A clock behind the snapshots keeps them all "within".
        let p = Policy {
            within: Some(Duration::from_secs(3600)),
            ..Policy::default()
        };
        let d = apply(&snaps, &p, T0 - 30 * DAY, &utc);
        assert!(d.iter().all(|d| d.keep));
    }

    #[test]
    fn calendar_buckets_follow_the_time_zone() {
        // 23:30 and 00:30 UTC: two UTC days, one day in UTC+2.
        let snaps = vec![snap(1, T0 - H / 2, &[]), snap(2, T0 + H / 2, &[])];
        let p = Policy {
            daily: Some(Count::Unlimited),
            ..Policy::default()
        };
        assert_eq!(
            kept(&apply(&snaps, &p, T0 + DAY, &TimeZone::UTC)),
            vec![1, 2]
        );
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(kept(&apply(&snaps, &p, T0 + DAY, &plus2)), vec![2]);
    }

    #[test]
    fn durations_and_counts_parse() {
        assert_eq!(
            parse_duration("15d").unwrap(),
            Duration::from_secs(15 * 86_400)
        );
        assert_eq!(
            parse_duration("1w2d3h").unwrap(),
            Duration::from_secs(9 * 86_400 + 3 * 3600)
        );
        assert_eq!(
            parse_duration("1y").unwrap(),
            Duration::from_secs(365 * 86_400)
        );
        for bad in ["", "15", "d", "3x", "99999999999999999999y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!("unlimited".parse::<Count>().unwrap(), Count::Unlimited);
        assert_eq!("7".parse::<Count>().unwrap(), Count::N(7));
        assert!("-1".parse::<Count>().is_err());
    }
}
