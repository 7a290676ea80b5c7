//! `blocksnap completions`: a shell completion script.

use anyhow::Result;

use crate::outcome::Done;

#[derive(clap::Args)]
pub struct Args {
    pub shell: clap_complete::Shell,
}

/// `cmd`: the whole command line's definition, whose completions are
/// written.
pub fn run(args: Args, mut cmd: clap::Command) -> Result<Done> {
    clap_complete::generate(args.shell, &mut cmd, "blocksnap", &mut std::io::stdout());
    Ok(Done::default())
}
