//! `blocksnap restore`: its arguments and its run.

use std::path::PathBuf;

use anyhow::Result;
use blocksnap::restore;

use crate::args::*;
use crate::metrics;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// HEIGHT, `latest`, or a snapshot id prefix.
    pub snapshot: String,
    /// Among this node's snapshots only (e.g. its `latest`).
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub target: PathBuf,
    /// The target node's IPv4 address, put back into path names.
    #[arg(long)]
    pub ip: Option<String>,
    /// Restore into a non-empty target, replacing the snapshot's
    /// top-level entries there and leaving everything else.
    #[arg(long)]
    pub force: bool,
    /// Parallel chunk fetches (default: one per CPU locally, 32 on S3).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Restore setuid, setgid and world-writable modes as recorded
    /// (by default those bits are dropped).
    #[arg(long)]
    pub keep_special_modes: bool,
    /// Refuse a snapshot that would write more than this (e.g. 200GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Restore even when a database under the target is open in a
    /// running process.
    #[arg(long)]
    pub allow_live: bool,
    /// Keep the entries a --force restore replaces, in a directory in
    /// the target that the output names, instead of deleting them.
    #[arg(long, requires = "force")]
    pub keep_old: bool,
    /// Also use the bytes of the files in this directory (repeatable:
    /// e.g. a copy of the node, or another node's data directory):
    /// every chunk taken from it is checked, nothing in it is changed.
    #[arg(long, value_name = "DIR")]
    pub reuse_from: Vec<PathBuf>,
    /// With --force: download everything instead of reusing the bytes of
    /// the entries being replaced.
    #[arg(long)]
    pub no_reuse: bool,
    /// Restore goloop's consensus write-ahead logs (`<chain>/wal/`) too.
    /// By default each is left empty: another node's (or an older self's)
    /// round state replayed onto a running validator risks signing twice.
    #[arg(long)]
    pub with_consensus_wal: bool,
    /// Show the plan (what is kept, copied from local files, and
    /// downloaded) without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub trust: TrustArg,
    #[command(flatten)]
    pub metrics: MetricsArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        snapshot,
        target,
        ip,
        force,
        jobs,
        keep_special_modes,
        max_size,
        allow_live,
        keep_old,
        reuse_from,
        no_reuse,
        with_consensus_wal,
        dry_run,
        trust,
        host,
        metrics: _,
        json,
    } = args;
    let trust = trust.load()?;
    let r = open_repo(&repo, Access::Read, jobs)?.with_trust(trust.clone());
    let key = one_trusted(&r, &snapshot, host.as_deref(), trust.as_deref())?;
    let opts = restore::RestoreOptions {
        target,
        ip,
        force,
        jobs,
        keep_special_modes,
        max_bytes: max_size,
        allow_live,
        keep_old,
        reuse_from,
        no_reuse,
        with_consensus_wal,
    };
    let plan = restore::plan(&r, &key, &opts)?;
    for wal in &plan.withheld_wals {
        eprintln!(
            "blocksnap: {wal}/ left empty: it is goloop's consensus write-ahead log, and another \
             node's (or an older) round state replayed onto a running validator risks signing \
             twice; --with-consensus-wal restores it"
        );
    }
    if dry_run {
        Out::new(json.json).restore_plan(&plan);
        return Ok(Done::default());
    }
    let bar = Bar::new(json.json);
    let report = restore::restore(&r, &plan, &opts, &bar)?;
    Out::new(json.json).restore(&report);
    Ok(Done::with(metrics::Figures {
        bytes_read: Some(report.bytes),
        bytes_stored: Some(report.bytes),
        chunks: Some(report.chunks_fetched),
        height: Some(report.key.height),
        requests: report.requests,
        ..Default::default()
    }))
}
