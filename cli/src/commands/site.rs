//! `blocksnap site`: the repository's public page (`index.html`), written
//! into the repository beside its index or into a directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use blocksnap::site::{self, SiteOptions};

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The address the page's restore commands name: the mirror or CDN
    /// that serves the repository (default: the repository's location).
    #[arg(long)]
    pub url: Option<String>,
    /// The page's title.
    #[arg(long, default_value = "")]
    pub title: String,
    /// Write index.html into this directory instead of the repository.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Sign the index it publishes (see `index`).
    #[command(flatten)]
    pub sign: SignArg,
    #[command(flatten)]
    pub trust: TrustArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let signer = args.sign.load()?;
    let trust = args.trust.load()?;
    let r = open_repo(&args.repo, Access::Write, 0)?
        .with_trust(trust.clone())
        .with_signer(signer);
    let opts = SiteOptions {
        url: args.url.unwrap_or_default(),
        title: args.title,
        trust,
        now_unix_ns: blocksnap::repo::now_unix_ns(),
    };
    let (written, report) = match &args.out {
        None => {
            let (_, report) = site::site(&r, &opts)?;
            (
                format!("{}/{}", r.store().location(), site::PAGE_KEY),
                report,
            )
        }
        Some(dir) => {
            r.publish_index()?;
            let (html, report) = site::page(&r, &opts)?;
            let path = dir.join(site::PAGE_KEY);
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("create a file in {}", dir.display()))?;
            std::io::Write::write_all(&mut tmp, html.as_bytes())?;
            tmp.persist(&path)
                .with_context(|| format!("write {}", path.display()))?;
            (path.display().to_string(), report)
        }
    };
    Out::new(args.json.json).site(&written, &report);
    Ok(Done::default())
}
