//! `blocksnap demo`: its arguments and its run.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Result;
use blocksnap::{chunking, demo};

use crate::args::*;
use crate::outcome::Done;
use crate::output::{Bar, Out};

#[derive(clap::Args)]
pub struct Args {
    /// Working directory (must not hold an earlier demo).
    #[arg(long, default_value = "blocksnap-demo")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 256)]
    pub size_mib: u64,
    #[arg(long, default_value_t = 1000)]
    pub blocks: u64,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        dir,
        size_mib,
        blocks,
        json,
    } = args;
    let opts = demo::DemoOptions {
        dir,
        size_bytes: size_mib << 20,
        advance_blocks: blocks,
        source_ip: Ipv4Addr::new(10, 0, 0, 7),
        target_ip: Ipv4Addr::new(10, 0, 0, 8),
        chunker: chunking::DEFAULT_PARAMS,
        zstd_level: blocksnap::format::chunk::DEFAULT_ZSTD_LEVEL,
    };
    let bar = Bar::new(json.json);
    let report = demo::run(&opts, &bar)?;
    Out::new(json.json).demo(&report);
    if !report.verify.ok() || !report.differences.is_empty() {
        return Ok(Done {
            code: 3,
            ..Default::default()
        });
    }
    Ok(Done::default())
}
