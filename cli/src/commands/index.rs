//! `blocksnap index`: publishes the repository's index, what a static
//! mirror or CDN of the repository is read through (FORMAT.md §12); from
//! then on every writer keeps it current.

use anyhow::Result;

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Sign the index (readers of a mirror with --trust require it);
    /// writers with --sign keep it signed.
    #[command(flatten)]
    pub sign: SignArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let signer = args.sign.load()?;
    let r = open_repo(&args.repo, Access::Write, 0)?.with_signer(signer);
    let index = r.publish_index()?;
    Out::new(args.json.json).index(&r.store().location(), &index);
    Ok(Done::default())
}
