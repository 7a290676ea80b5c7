//! `blocksnap diff`: its arguments and its run.

use anyhow::Result;
use blocksnap::compare;

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// HEIGHT, `latest`, or a snapshot id prefix.
    pub from: String,
    /// HEIGHT, `latest`, or a snapshot id prefix.
    pub to: String,
    /// Among this node's snapshots only.
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub cache: CacheArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        from,
        to,
        host,
        cache,
        json,
    } = args;
    let r = open_cached(&repo, Access::Read, 0, &cache)?;
    let a = one(&r, &from, host.as_deref())?;
    let b = one(&r, &to, host.as_deref())?;
    let report = compare::diff(&r.load_manifest(&a)?, &r.load_manifest(&b)?);
    Out::new(json.json).diff(&a, &b, &report);
    Ok(Done::default())
}
