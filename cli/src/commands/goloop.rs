//! `blocksnap goloop`: goloop's admin API over its unix socket — release a
//! chain's database for a snapshot (stop, then a manual backup, which
//! closes the database without stopping the process), and take it back
//! (end the backup, start). A staged snapshot with `--goloop-admin` runs
//! these as its stop and start commands.

use std::path::PathBuf;

use anyhow::Result;
use blocksnap::profile::admin::Admin;

use crate::outcome::Done;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub op: Op,
    /// goloop's admin socket (`GOLOOP_NODE_SOCK`, `<node dir>/cli.sock`).
    #[arg(long, global = true, default_value = "/goloop/data/cli.sock")]
    pub socket: PathBuf,
    /// The chain: its id (`0x1`, ICON mainnet) or channel name.
    #[arg(long, global = true, default_value = "0x1")]
    pub chain: String,
    /// Seconds each step may take.
    #[arg(long, global = true, default_value_t = 120)]
    pub timeout: u64,
}

#[derive(clap::Subcommand)]
pub enum Op {
    /// Stop the chain and release its database (a manual backup).
    Release,
    /// Take the database back and start the chain.
    Resume,
    /// Print the chain's state and height.
    Status,
}

pub fn run(args: Args) -> Result<Done> {
    let admin = Admin::new(
        &args.socket,
        &args.chain,
        std::time::Duration::from_secs(args.timeout),
    );
    let v = match args.op {
        Op::Release => admin.release()?,
        Op::Resume => admin.resume()?,
        Op::Status => admin.view()?,
    };
    println!("chain {}: {} at height {}", args.chain, v.state, v.height);
    Ok(Done::default())
}
