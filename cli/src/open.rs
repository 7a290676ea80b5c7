//! The composition root: the store `--repo` names with its decorators
//! (S3 or a local directory, request limits and counts), the local
//! state, and the snapshots named on the command line.

use std::sync::Arc;

use anyhow::{bail, Result};
use blocksnap::repo::Repository;
use blocksnap::store::{limited, CountingStore, LocalStore, Location, Store};
use blocksnap::{cache, sign, trusted, Selector};

use crate::args::*;

/// Opens the store `--repo` names. `jobs` (0: the store's default) bounds
/// the requests in flight on a network store.
pub(crate) fn open_store(arg: &RepoArg, access: Access, jobs: usize) -> Result<Arc<dyn Store>> {
    let store = open_unlimited(arg, access, jobs)?;
    let limits = limited::Limits {
        upload: arg.limit_upload,
        download: arg.limit_download,
    };
    Ok(match limits.is_none() {
        true => store,
        false => Arc::new(limited::LimitedStore::new(store, limits)),
    })
}

pub(crate) fn open_unlimited(arg: &RepoArg, access: Access, jobs: usize) -> Result<Arc<dyn Store>> {
    match arg.repo.parse::<Location>()? {
        Location::Local(path) => {
            if arg.anonymous {
                bail!("--anonymous applies to s3:// repositories only");
            }
            Ok(Arc::new(CountingStore::new(LocalStore::open(path))))
        }
        Location::S3 { bucket, prefix } => open_s3(arg, bucket, prefix, access, jobs),
        Location::Http(url) => {
            if access == Access::Write {
                bail!("{url} is a read-only mirror: write to the repository itself");
            }
            Ok(Arc::new(CountingStore::new(
                blocksnap::store::http::HttpStore::open(&url, jobs)?,
            )))
        }
    }
}

#[cfg(feature = "s3")]
pub(crate) fn open_s3(
    arg: &RepoArg,
    bucket: String,
    prefix: String,
    access: Access,
    jobs: usize,
) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(s3_store(arg, bucket, prefix, access, jobs)?))
}

/// The S3 store at `bucket`/`prefix`, with the endpoint, region and
/// credentials options of `arg`.
#[cfg(feature = "s3")]
pub(crate) fn s3_store(
    arg: &RepoArg,
    bucket: String,
    prefix: String,
    access: Access,
    jobs: usize,
) -> Result<blocksnap_s3::S3Store> {
    use blocksnap_s3::{Auth, S3Options, S3Store};
    let opts = S3Options {
        bucket,
        prefix,
        endpoint: arg.endpoint.clone(),
        path_style: if arg.path_style {
            Some(true)
        } else if arg.virtual_hosted {
            Some(false)
        } else {
            None
        },
        region: arg.region.clone(),
        auth: match (arg.anonymous, access) {
            (true, _) => Auth::Anonymous,
            (false, Access::Read) => Auth::Auto,
            (false, Access::Write) => Auth::Required,
        },
        credentials: arg.credentials.clone(),
        parallelism: jobs,
        max_attempts: 0,
    };
    let store = S3Store::open(&opts)?;
    if store.is_anonymous() && !arg.anonymous {
        eprintln!(
            "blocksnap: no AWS credentials found; reading {} with unsigned requests",
            opts.url()
        );
    }
    Ok(store)
}

#[cfg(not(feature = "s3"))]
pub(crate) fn open_s3(
    arg: &RepoArg,
    _bucket: String,
    _prefix: String,
    _access: Access,
    _jobs: usize,
) -> Result<Arc<dyn Store>> {
    bail!(
        "repository {:?}: this blocksnap was built without S3 support (feature `s3`)",
        arg.repo
    )
}

/// The repository's local state, or none (with a warning) when it cannot
/// be had: a cache only ever saves time.
pub(crate) fn open_state(cache: &CacheArg, repo: &Repository) -> Option<cache::LocalState> {
    if cache.no_cache {
        return None;
    }
    let Some(base) = cache.base() else {
        eprintln!(
            "blocksnap: warning: no cache directory (set --cache-dir or HOME); reading everything"
        );
        return None;
    };
    match cache::LocalState::open(&base, repo) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("blocksnap: warning: {e}; snapshot without the cache");
            None
        }
    }
}

pub(crate) fn open_repo(arg: &RepoArg, access: Access, jobs: usize) -> Result<Repository> {
    Ok(Repository::open(open_store(arg, access, jobs)?)?)
}

/// The repository, keeping the manifests it reads in the cache directory.
pub(crate) fn open_cached(
    arg: &RepoArg,
    access: Access,
    jobs: usize,
    cache: &CacheArg,
) -> Result<Repository> {
    let r = open_repo(arg, access, jobs)?;
    Ok(match cache.base() {
        Some(base) => r.with_manifest_cache(&base),
        None => r,
    })
}

/// One snapshot named on the command line (not `all`).
pub(crate) fn one(
    r: &Repository,
    given: &str,
    host: Option<&str>,
) -> Result<blocksnap::format::layout::SnapshotKey> {
    one_trusted(r, given, host, None)
}

/// One snapshot; with trusted keys, one a trusted key signed (`latest`:
/// the newest such).
pub(crate) fn one_trusted(
    r: &Repository,
    given: &str,
    host: Option<&str>,
    trust: Option<&sign::Trust>,
) -> Result<blocksnap::format::layout::SnapshotKey> {
    let selector: Selector = given.parse()?;
    if selector == Selector::All {
        bail!("{given:?}: this takes one snapshot: HEIGHT, latest or an id prefix");
    }
    Ok(match trust {
        Some(t) => trusted::resolve_trusted(r, t, &selector, host)?,
        None => r.resolve_for(&selector, host)?[0],
    })
}
