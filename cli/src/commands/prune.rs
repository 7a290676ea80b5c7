//! `blocksnap prune`: its arguments and its run.

use anyhow::Result;
use blocksnap::{prune, retention};

use crate::args::*;
use crate::metrics;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Report what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Condemn and delete in this one run. For a repository no other
    /// host writes to (refused when one did recently): a snapshot
    /// running meanwhile would refuse to commit.
    #[arg(long)]
    pub instant_delete: bool,
    /// How old unreferenced chunks must be, and how long a condemned
    /// round waits, before deletion. Every snapshot must reach its
    /// commit within this time of its start.
    #[arg(long, default_value = "1d", value_parser = retention::parse_duration)]
    pub grace: std::time::Duration,
    /// A sweep's lease (for tests).
    #[arg(long, default_value = "1h", value_parser = retention::parse_duration, hide = true)]
    pub lease: std::time::Duration,
    /// When an unclaimed pending commit expires (for tests).
    #[arg(long, default_value = "1h", value_parser = retention::parse_duration, hide = true)]
    pub pending_expiry: std::time::Duration,
    /// When the records of swept rounds are removed (for tests).
    #[arg(long, default_value = "7d", value_parser = retention::parse_duration, hide = true)]
    pub retire_after: std::time::Duration,
    /// This node's name, as its snapshots record it (default: the host
    /// name): --instant-delete refuses when other nodes wrote recently.
    #[arg(long, env = "BLOCKSNAP_HOST")]
    pub host: Option<String>,
    /// Parallel manifest reads (default: one per CPU locally, 32 on S3).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    #[command(flatten)]
    pub cache: CacheArg,
    #[command(flatten)]
    pub metrics: MetricsArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        dry_run,
        instant_delete,
        grace,
        lease,
        pending_expiry,
        retire_after,
        host,
        jobs,
        cache,
        metrics: _,
        json,
    } = args;
    let access = if dry_run { Access::Read } else { Access::Write };
    let r = open_cached(&repo, access, jobs, &cache)?;
    let opts = prune::PruneOptions {
        grace,
        lease,
        pending_expiry,
        retire_after,
        instant: instant_delete,
        dry_run,
        host: host.unwrap_or_else(blocksnap::repo::this_host),
    };
    let bar = Bar::new(json.json);
    let report = prune::run(&r, &opts, &bar)?;
    Out::new(json.json).prune(&report);
    Ok(Done::with(metrics::Figures {
        chunks: Some(report.swept.iter().map(|s| s.deleted).sum()),
        bytes_deleted: Some(report.swept.iter().map(|s| s.deleted_bytes).sum()),
        repository_bytes: Some(report.chunk_bytes),
        requests: report.requests,
        ..Default::default()
    }))
}
