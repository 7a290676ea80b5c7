//! `blocksnap sign`: its arguments and its run.

use std::path::PathBuf;

use anyhow::Result;
use blocksnap::{sign, trusted, Selector};

use crate::args::*;
use crate::open::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Full snapshot ids; with --trust also HEIGHT, `latest` (the newest
    /// trusted) or `all` (every trusted one).
    #[arg(required = true)]
    pub snapshots: Vec<String>,
    /// Only this node's snapshots.
    #[arg(long)]
    pub host: Option<String>,
    /// The minisign secret key to sign with.
    #[arg(long, value_name = "KEYFILE", env = "BLOCKSNAP_SIGN_KEY")]
    pub key: PathBuf,
    /// Co-sign only what a trusted key already signed.
    #[command(flatten)]
    pub trust: TrustArg,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(args: Args) -> Result<Done> {
    let Args {
        repo,
        snapshots,
        host,
        key,
        trust,
        json,
    } = args;
    let signer = sign::Signer::load(&key)?;
    let trust = trust.load()?;
    let r = open_repo(&repo, Access::Write, 0)?.with_trust(trust.clone());
    let selectors = snapshots
        .iter()
        .map(|s| s.parse::<Selector>())
        .collect::<blocksnap::Result<Vec<_>>>()?;
    let signed =
        trusted::sign_snapshots(&r, &signer, &selectors, host.as_deref(), trust.as_deref())?;
    Out::new(json.json).signed(&signed, signer.key_id());
    Ok(Done::default())
}
