//! `blocksnap init`: its arguments and its run.

use anyhow::{Context, Result};
use blocksnap::chunking;
use blocksnap::format::config::ChunkerParams;
use blocksnap::repo::Repository;
use blocksnap::store::Location;

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Average chunk size in KiB (min is a quarter, max four times).
    #[arg(long, default_value_t = chunking::DEFAULT_PARAMS.avg_size / 1024)]
    pub chunk_avg_kib: u32,
    /// zstd level for chunks that compress.
    #[arg(long, default_value_t = blocksnap::format::chunk::DEFAULT_ZSTD_LEVEL, allow_hyphen_values = true)]
    pub zstd_level: i32,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        chunk_avg_kib,
        zstd_level,
        json,
    } = args;
    let avg = chunk_avg_kib
        .checked_mul(1024)
        .context("--chunk-avg-kib too large")?;
    let params = ChunkerParams::around(avg);
    if let Ok(location) = repo.repo.parse::<Location>() {
        location
            .prepare()
            .with_context(|| format!("create {location}"))?;
    }
    let r = Repository::init(open_store(&repo, Access::Write, 0)?, params, zstd_level)?;
    Out::new(json.json).init(&repo.repo, r.config());
    Ok(Done::default())
}
