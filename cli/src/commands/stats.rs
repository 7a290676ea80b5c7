//! `blocksnap stats`: its arguments and its run.

use anyhow::Result;

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub cache: CacheArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args { repo, cache, json } = args;
    let r = open_cached(&repo, Access::Read, 0, &cache)?;
    let bar = Bar::new(json.json);
    Out::new(json.json).stats(&repo.repo, &blocksnap::stats::stats(&r, &bar)?);
    Ok(Done::default())
}
