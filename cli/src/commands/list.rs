//! `blocksnap list`: its arguments and its run.

use anyhow::Result;
use blocksnap::list;
use blocksnap::store::Store;

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Only this node's snapshots.
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub trust: TrustArg,
    #[command(flatten)]
    pub cache: CacheArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        host,
        trust,
        cache,
        json,
    } = args;
    let trust = trust.load()?;
    let r = open_cached(&repo, Access::Read, 0, &cache)?.with_trust(trust.clone());
    let out = Out::new(json.json);
    out.list(&list::list(&r, host.as_deref(), trust.as_deref())?);
    if let Some(index) = r.mirror_index()? {
        out.mirror_index(&index);
    }
    if let Some(c) = r.store().request_counts() {
        tracing::info!(
            "store requests: GET {}, HEAD {}, LIST {} ({} retries)",
            c.get,
            c.head,
            c.list,
            c.retries
        );
    }
    Ok(Done::default())
}
