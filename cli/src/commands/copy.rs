//! `blocksnap copy`: its arguments and its run.

use anyhow::{bail, Result};
use blocksnap::store::Location;
use blocksnap::{copy, Selector};

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// HEIGHT, `latest`, `all` or snapshot id prefixes.
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// Only this node's snapshots.
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub to: ToArg,
    /// Parallel chunk transfers (default: the larger of the two
    /// stores' own: 32 with S3 at either end).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    #[command(flatten)]
    pub priority: PriorityArg,
    /// Show what would be copied; copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Signature objects by these keys are copied only if they verify;
    /// forget records at the destination count only if they signed them.
    #[command(flatten)]
    pub trust: TrustArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        snapshots,
        host,
        to,
        jobs,
        priority,
        dry_run,
        trust,
        json,
    } = args;
    priority.apply();
    let trust = trust.load()?;
    let src = open_repo(&repo, Access::Read, jobs)?.with_trust(trust.clone());
    // The source is read (downloads), the destination written.
    let dst_arg = RepoArg {
        limit_upload: repo.limit_upload,
        ..to.repo()
    };
    let dst_store = open_store(&dst_arg, Access::Write, jobs)?;
    let location: Location = dst_arg.repo.parse()?;
    let dst = copy::open_destination(&src, dst_store, &location, dry_run)?.with_trust(trust);
    let mut keys = Vec::new();
    for given in &snapshots {
        let selector: Selector = given.parse()?;
        keys.extend(src.resolve_for(&selector, host.as_deref())?);
    }
    let plan = copy::plan(&src, &dst, &keys)?;
    let out = Out::new(json.json);
    if dry_run {
        out.copy_plan(&plan);
        return Ok(Done::default());
    }
    let bar = Bar::new(json.json);
    let report = copy::execute(&src, &dst, &plan, &copy::CopyOptions { jobs }, &bar)?;
    out.copy(&report);
    if !report.not_copied.is_empty() {
        bail!(
            "copied what could be, but not: {}",
            report.not_copied.join("; ")
        );
    }
    Ok(Done::default())
}
