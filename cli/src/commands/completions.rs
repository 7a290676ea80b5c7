//! `blocksnap completions`: a shell completion script.

use anyhow::Result;

use crate::{Cli, Done};

#[derive(clap::Args)]
pub struct Args {
    pub shell: clap_complete::Shell,
}

pub fn run(args: Args) -> Result<Done> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut cmd, "blocksnap", &mut std::io::stdout());
    Ok(Done::default())
}
