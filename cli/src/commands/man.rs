//! `blocksnap man`: the manual pages.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::outcome::Done;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `cmd`: the whole command line's definition, whose pages are written.
pub fn run(args: Args, cmd: clap::Command) -> Result<Done> {
    write_man(cmd, args.out.as_deref())?;
    Ok(Done::default())
}

/// The manual pages, from the clap definitions: `blocksnap.1` and one page
/// per command. Without a directory, `blocksnap.1` goes to stdout.
fn write_man(cmd: clap::Command, out: Option<&std::path::Path>) -> Result<()> {
    let Some(dir) = out else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut pages = vec![("blocksnap".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        // A page's title is the command's name; the program ends here.
        let name: &'static str = format!("blocksnap-{}", sub.get_name()).leak();
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut body = Vec::new();
        clap_mangen::Man::new(page).render(&mut body)?;
        std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
