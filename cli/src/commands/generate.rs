//! `blocksnap generate`: its arguments and its run.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Result;
use blocksnap::nodegen;

use crate::args::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    /// The `loopchain` data directory to create or advance.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value = "10.0.0.7")]
    pub ip: Ipv4Addr,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Grow until the directory holds this many MiB.
    #[arg(long)]
    pub size_mib: Option<u64>,
    /// Then add this many blocks.
    #[arg(long, default_value_t = 0)]
    pub blocks: u64,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        dir,
        ip,
        seed,
        size_mib,
        blocks,
        json,
    } = args;
    let mut node = nodegen::Node::open(&dir, ip, seed)?;
    if let Some(mib) = size_mib {
        node.grow_to(mib << 20)?;
    }
    node.advance(blocks)?;
    let height = node.height();
    drop(node);
    Out::new(json.json).generated(&dir, height, nodegen::du(&dir)?);
    Ok(Done::default())
}
