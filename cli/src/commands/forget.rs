//! `blocksnap forget`: its arguments and its run.

use anyhow::Result;
use blocksnap::{forget, retention, Selector};

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshots to forget by name (ids, heights, `latest`) instead of a
    /// policy.
    pub snapshots: Vec<String>,
    /// Keep the N newest.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<retention::Count>,
    /// Keep those created within this long (e.g. 15d, 36h, 2w).
    #[arg(long, value_name = "DURATION", value_parser = retention::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Keep the newest of each of the N newest hours that have one.
    #[arg(long, value_name = "N|unlimited")]
    pub keep_hourly: Option<retention::Count>,
    /// … days.
    #[arg(long, value_name = "N|unlimited")]
    pub keep_daily: Option<retention::Count>,
    /// … ISO weeks.
    #[arg(long, value_name = "N|unlimited")]
    pub keep_weekly: Option<retention::Count>,
    /// … months.
    #[arg(long, value_name = "N|unlimited")]
    pub keep_monthly: Option<retention::Count>,
    /// … years.
    #[arg(long, value_name = "N|unlimited")]
    pub keep_yearly: Option<retention::Count>,
    /// Keep snapshots with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Keep one snapshot per N blocks of height (the lowest in each
    /// window of N), e.g. 43120 for one per ICON term.
    #[arg(long, value_name = "N")]
    pub keep_every_blocks: Option<u64>,
    /// Calendar buckets in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
    /// Only this node's snapshots.
    #[arg(long)]
    pub host: Option<String>,
    /// Show what would be kept and forgotten, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sign each forget record, so that a trusted history can tell this
    /// forget from a deletion.
    #[command(flatten)]
    pub sign: SignArg,
    /// With trusted keys a policy counts only the snapshots they signed
    /// (others are kept and not counted), and only signed forget
    /// records forget.
    #[command(flatten)]
    pub trust: TrustArg,
    /// A snapshot created more than this far ahead of this host's clock
    /// is not counted by a policy (default 10m).
    #[arg(long, value_name = "DURATION", value_parser = retention::parse_duration)]
    pub max_clock_skew: Option<std::time::Duration>,
    #[command(flatten)]
    pub cache: CacheArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        snapshots,
        keep_last,
        keep_within,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        keep_tags,
        keep_every_blocks,
        utc,
        host,
        dry_run,
        sign,
        trust,
        max_clock_skew,
        cache,
        json,
    } = args;
    let signer = sign.load()?;
    let trust = trust.load()?;
    let r = open_cached(&repo, Access::Write, 0, &cache)?
        .with_trust(trust.clone())
        .with_signer(signer.clone());
    let named = snapshots
        .iter()
        .map(|s| s.parse::<Selector>())
        .collect::<blocksnap::Result<Vec<_>>>()?;
    let opts = forget::ForgetOptions {
        policy: retention::Policy {
            last: keep_last,
            within: keep_within,
            hourly: keep_hourly,
            daily: keep_daily,
            weekly: keep_weekly,
            monthly: keep_monthly,
            yearly: keep_yearly,
            tags: keep_tags,
            every_blocks: keep_every_blocks,
        },
        named,
        host,
        utc,
        by_host: std::env::var("BLOCKSNAP_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(blocksnap::repo::this_host),
        now_unix_ns: forget::now(),
        signer,
        trust,
        max_clock_skew: max_clock_skew.unwrap_or_default(),
    };
    let plan = forget::plan(&r, &opts)?;
    let out = Out::new(json.json);
    if dry_run {
        out.forget(&plan, None);
    } else {
        let bar = Bar::new(json.json);
        let report = forget::execute(&r, &plan, &opts, &bar)?;
        out.forget(&plan, Some(&report));
    }
    Ok(Done::default())
}
