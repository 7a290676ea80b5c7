//! Node profiles: what a node's data directory holds, chosen once per
//! snapshot (`--profile`, or told from the directory's shape and reported).
//!
//! - `icon1` (loopchain): `.score_data` and `.storage`, the block
//!   database's directory named for the node's IP (normalised to
//!   `CHANGEIP`). A snapshot takes the whole source, as before.
//! - `goloop` (ICON 2): a node directory (`/goloop/data`) of chain
//!   directories `<cid hex>/`, each a `config.json` with `db/<nid hex>/`
//!   (goleveldb), `wal/` (consensus), `contract/`, `genesis.zip`, and on
//!   ICON mainnet `block_v1_proof.bin`; or one chain directory itself. A
//!   snapshot takes those of each chain and never `cache/`, `tmp/`, the
//!   sockets, `auth.json`, `rconfig.json`, keys or `.restore*` leftovers.
//!
//! Restoring goloop's consensus write-ahead log (`wal/`) onto a running
//! validator replays another node's (or an older self's) round state: the
//! risk is signing twice at one height, as Cosmos warns for
//! `priv_validator_state.json`. A restore leaves every chain's `wal/` empty
//! unless `--with-consensus-wal` says otherwise (see [`consensus_wals`]).

pub mod admin;
pub mod goloop;
mod leveldb;

use std::collections::HashSet;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::manifest::{EntryKind, Manifest};
use crate::sys::fsx::{DirFd, EntryType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Icon1,
    Goloop,
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Profile, String> {
        match s {
            "icon1" | "loopchain" => Ok(Profile::Icon1),
            "goloop" | "icon2" => Ok(Profile::Goloop),
            other => Err(format!("{other:?}: the profiles are icon1 and goloop")),
        }
    }
}

/// What a chain directory of goloop's holds that a snapshot takes.
const CHAIN_ENTRIES: [&str; 6] = [
    "config.json",
    "genesis.zip",
    "block_v1_proof.bin",
    "db",
    "contract",
    "wal",
];

/// How the profile was settled, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Settled {
    pub profile: Profile,
    /// Given, or what in the directory told it.
    pub why: String,
    /// The paths a snapshot takes (empty: the whole source).
    pub includes: Vec<String>,
}

fn is_dir(dir: &DirFd, name: &str) -> Result<bool> {
    Ok(dir
        .stat(name)
        .map_err(Error::io("stat", dir.join(name)))?
        .is_some_and(|m| m.kind == EntryType::Dir))
}

fn is_file(dir: &DirFd, name: &str) -> Result<bool> {
    Ok(dir
        .stat(name)
        .map_err(Error::io("stat", dir.join(name)))?
        .is_some_and(|m| m.kind == EntryType::File))
}

/// Whether `dir` is a goloop chain directory: a `config.json` and a `db/`
/// (real ones, not links).
fn is_chain(dir: &DirFd) -> Result<bool> {
    Ok(is_file(dir, "config.json")? && is_dir(dir, "db")?)
}

/// The chain directories of a goloop node directory, sorted (never a
/// `.restore*` leftover or a link).
fn chains(source: &DirFd) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in source
        .sorted_names()
        .map_err(Error::io("list", source.path()))?
    {
        if name.starts_with('.') || !is_dir(source, &name)? {
            continue;
        }
        let dir = source
            .open_dir(&name)
            .map_err(Error::io("open", source.join(&name)))?;
        if is_chain(&dir)? {
            out.push(name);
        }
    }
    Ok(out)
}

/// The includes of a goloop snapshot of `source` (a node directory, or a
/// chain directory), or `None` when it is neither.
fn goloop_includes(source: &DirFd) -> Result<Option<Vec<String>>> {
    let present = |dir: &DirFd, prefix: &str| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in CHAIN_ENTRIES {
            if dir
                .stat(e)
                .map_err(Error::io("stat", dir.join(e)))?
                .is_some()
            {
                out.push(format!("{prefix}{e}"));
            }
        }
        Ok(out)
    };
    if is_chain(source)? {
        return Ok(Some(present(source, "")?));
    }
    let chains = chains(source)?;
    if chains.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for c in chains {
        let dir = source
            .open_dir(&c)
            .map_err(Error::io("open", source.join(&c)))?;
        out.extend(present(&dir, &format!("{c}/"))?);
    }
    Ok(Some(out))
}

/// Settles the profile of a snapshot of `source`: `given`, or told from
/// its shape (goloop: chain directories with `config.json` and `db/`;
/// icon1: `.storage` or `.score_data`; otherwise icon1's whole-tree rules).
pub fn settle(source: &DirFd, given: Option<Profile>) -> Result<Settled> {
    let goloop = goloop_includes(source)?;
    match (given, goloop) {
        (Some(Profile::Goloop), Some(includes)) => Ok(Settled {
            profile: Profile::Goloop,
            why: "--profile goloop".into(),
            includes,
        }),
        (Some(Profile::Goloop), None) => Err(Error::Refused(format!(
            "--profile goloop: {} is neither goloop's node directory (chain directories \
             <cid>/ holding config.json and db/) nor a chain directory",
            source.path().display()
        ))),
        (Some(Profile::Icon1), _) => Ok(Settled {
            profile: Profile::Icon1,
            why: "--profile icon1".into(),
            includes: Vec::new(),
        }),
        (None, Some(includes)) => Ok(Settled {
            profile: Profile::Goloop,
            why: format!(
                "goloop: {}",
                match includes.first().map(|i| i.split_once('/')) {
                    Some(Some((chain, _))) =>
                        format!("chain directory {chain}/ with config.json and db/"),
                    _ => "a chain directory (config.json and db/)".into(),
                }
            ),
            includes,
        }),
        (None, None) => {
            let loopchain = is_dir(source, ".storage")? || is_dir(source, ".score_data")?;
            Ok(Settled {
                profile: Profile::Icon1,
                why: match loopchain {
                    true => "icon1: .storage / .score_data".into(),
                    false => "icon1 (no goloop chain directory found): the whole tree".into(),
                },
                includes: Vec::new(),
            })
        }
    }
}

/// The consensus write-ahead logs of the goloop chain directories a
/// snapshot holds: each `D/wal` where `D/config.json` is a file and `D/db`
/// and `D/wal` are directories.
pub fn consensus_wals(manifest: &Manifest) -> Vec<String> {
    let files: HashSet<&str> = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| e.path.as_str())
        .collect();
    let dirs: HashSet<&str> = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Dir))
        .map(|e| e.path.as_str())
        .collect();
    let mut out: Vec<String> = dirs
        .iter()
        .filter_map(|d| {
            let chain = match d.rsplit_once('/') {
                Some((c, "wal")) => c,
                None if *d == "wal" => "",
                _ => return None,
            };
            let join = |n: &str| match chain {
                "" => n.to_string(),
                c => format!("{c}/{n}"),
            };
            (files.contains(join("config.json").as_str()) && dirs.contains(join("db").as_str()))
                .then(|| d.to_string())
        })
        .collect();
    out.sort();
    out
}

/// `manifest` without what the consensus logs `wals` hold (each `wal`
/// directory itself stays, empty). Returns the entries left out.
pub fn without_consensus_wals(manifest: &mut Manifest, wals: &[String]) -> u64 {
    let before = manifest.entries.len();
    manifest.entries.retain(|e| {
        !wals.iter().any(|w| {
            e.path.len() > w.len() + 1
                && e.path.starts_with(w.as_str())
                && e.path.as_bytes()[w.len()] == b'/'
        })
    });
    (before - manifest.entries.len()) as u64
}
