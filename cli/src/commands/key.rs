//! `blocksnap key`: signing keys.

use std::path::PathBuf;

use anyhow::{Context, Result};
use blocksnap::sign;
use clap::Subcommand;

use crate::args::*;
use crate::outcome::Done;
use crate::output::Out;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Subcommand)]
pub enum Action {
    /// Write a new Ed25519 (minisign) key pair: NAME, the secret key (mode
    /// 0600, never printed), and NAME.pub, the public key to publish.
    Generate {
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
        /// Encrypt the secret key with the passphrase in
        /// BLOCKSNAP_KEY_PASSPHRASE (minisign's scrypt form).
        #[arg(long)]
        encrypt: bool,
        #[command(flatten)]
        json: JsonArg,
    },
}

pub fn run(args: Args) -> Result<Done> {
    let Action::Generate { out, encrypt, json } = args.action;
    let passphrase = if encrypt {
        Some(std::env::var(sign::PASSPHRASE_ENV).with_context(|| {
            format!(
                "--encrypt takes the passphrase from {}",
                sign::PASSPHRASE_ENV
            )
        })?)
    } else {
        None
    };
    let (id, public) = sign::generate(&out, passphrase)?;
    Out::new(json.json).key_generated(&out, id, &public);
    Ok(Done::default())
}
