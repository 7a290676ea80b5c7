//! `blocksnap verify`: its arguments and its run.

use std::path::PathBuf;

use anyhow::Result;
use blocksnap::{compare, ipnorm, verify};

use crate::args::*;
use crate::metrics;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// HEIGHT, `latest`, `all`, or a snapshot id prefix.
    pub snapshot: String,
    /// Among this node's snapshots only.
    #[arg(long)]
    pub host: Option<String>,
    /// Read and hash every chunk and file, not only check presence and size.
    #[arg(long)]
    pub full: bool,
    /// With --full, read only part of the chunks: `I/N` is slice I of
    /// N (running 1/N … N/N reads every chunk once), `P%` a random
    /// share (the seed is printed; repeat a run with --seed).
    #[arg(long, requires = "full", value_name = "I/N|P%")]
    pub subset: Option<verify::Subset>,
    /// The seed of a `P%` subset.
    #[arg(long, requires = "subset")]
    pub seed: Option<u64>,
    /// Check each history's parent links: a parent that is gone or
    /// replaced, and forks (always on with `all`).
    #[arg(long)]
    pub chain: bool,
    /// Compare this directory (a restore, or a stopped node's data
    /// directory) with the snapshot instead: only the manifest is read.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["full", "chain"])]
    pub dir: Option<PathBuf>,
    /// With --dir: the node's IPv4 address, as restore would put it
    /// back into path names.
    #[arg(long, requires = "dir")]
    pub ip: Option<String>,
    /// With --dir: expect setuid, setgid and world-writable modes as
    /// recorded (as `restore --keep-special-modes` writes them).
    #[arg(long, requires = "dir")]
    pub keep_special_modes: bool,
    /// Parallel chunk reads for --full (default: one per CPU locally,
    /// 32 on S3).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    #[command(flatten)]
    pub priority: PriorityArg,
    #[command(flatten)]
    pub trust: TrustArg,
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
        snapshot,
        full,
        subset,
        seed,
        chain,
        dir,
        ip,
        keep_special_modes,
        jobs,
        priority,
        host,
        trust,
        cache,
        metrics: _,
        json,
    } = args;
    priority.apply();
    let trust = trust.load()?;
    let r = open_cached(&repo, Access::Read, jobs, &cache)?.with_trust(trust.clone());
    let bar = Bar::new(json.json);
    if let Some(dir) = dir {
        let key = one_trusted(&r, &snapshot, host.as_deref(), trust.as_deref())?;
        let ip = ip.as_deref().map(ipnorm::parse_ip).transpose()?;
        let manifest = r.load_manifest(&key)?;
        let report = compare::dir(&manifest, &dir, ip, keep_special_modes, &bar)?;
        Out::new(json.json).compare(&key, &dir, &report);
        return Ok(Done {
            code: if report.differences.is_empty() { 0 } else { 3 },
            figures: metrics::Figures {
                bytes_read: Some(report.bytes_hashed),
                height: Some(key.height),
                ..Default::default()
            },
        });
    }
    let request = verify::Request {
        selector: snapshot.parse()?,
        host,
        full,
        subset,
        seed,
        chain,
        jobs,
        trust,
    };
    let (keys, opts) = verify::plan(&r, request)?;
    let report = verify::verify(&r, &keys, opts, &bar)?;
    Out::new(json.json).verify(&report);
    Ok(Done {
        code: if report.ok() { 0 } else { 3 },
        figures: metrics::Figures {
            bytes_read: Some(report.bytes_checked),
            chunks: Some(report.chunks_checked),
            requests: report.requests,
            problems: Some(
                report
                    .problem_counts()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            ..Default::default()
        },
    })
}
