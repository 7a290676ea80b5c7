//! Where a repository is: what `--repo` (or `BLOCKSNAP_REPO`) names.
//!
//! `s3://BUCKET[/PREFIX]` names an S3 bucket and key prefix; anything else
//! without a `scheme://` is a local directory. The parser is strict, because
//! the string comes from operators' scripts and environment: an unknown
//! scheme or a malformed bucket is an error here, not a surprise later.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `prefix` is empty or ends with `/`.
    S3 {
        bucket: String,
        prefix: String,
    },
    /// A static mirror: `https://…` or `http://…`, read-only.
    Http(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository location {given:?}: {reason}")]
pub struct BadLocation {
    pub given: String,
    pub reason: String,
}

const MAX_PREFIX_BYTES: usize = 512;

impl FromStr for Location {
    type Err = BadLocation;

    fn from_str(s: &str) -> Result<Location, BadLocation> {
        let bad = |reason: &str| BadLocation {
            given: s.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.chars().any(char::is_control) {
            return Err(bad("control character"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        if scheme == "https" || scheme == "http" {
            if rest.is_empty() || rest.starts_with('/') || s.contains(char::is_whitespace) {
                return Err(bad("a mirror's address is http(s)://HOST[/PATH]"));
            }
            return Ok(Location::Http(s.trim_end_matches('/').to_string()));
        }
        if scheme != "s3" {
            return Err(bad(
                "unknown scheme: use a directory path, s3://BUCKET/PREFIX or https://MIRROR",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(bad)?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.len() > MAX_PREFIX_BYTES {
            return Err(bad("prefix longer than 512 bytes"));
        }
        if !prefix.is_empty() {
            for segment in prefix.split('/') {
                match segment {
                    "" => return Err(bad("empty segment in the prefix")),
                    "." | ".." => return Err(bad("`.` or `..` segment in the prefix")),
                    _ => {}
                }
            }
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// S3's bucket naming rules (virtual-host compatible).
fn check_bucket(b: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&b.len()) {
        return Err("bucket names are 3 to 63 characters");
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
    {
        return Err("bucket names hold lowercase letters, digits, `.` and `-` only");
    }
    let ends_ok = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ends_ok(b.bytes().next()) || !ends_ok(b.bytes().last()) {
        return Err("bucket names start and end with a letter or digit");
    }
    if b.contains("..") {
        return Err("bucket names have no `..`");
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("a bucket name is not an IP address");
    }
    Ok(())
}

impl Location {
    /// Makes room for a new repository here: a local directory is created
    /// with its parents; a bucket must exist already.
    pub fn prepare(&self) -> std::io::Result<()> {
        match self {
            Location::Local(dir) => std::fs::create_dir_all(dir),
            Location::S3 { .. } => Ok(()),
            Location::Http(url) => Err(std::io::Error::other(format!(
                "{url} is a read-only mirror: create the repository where it is written"
            ))),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Http(url) => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_and_s3_and_refuses_the_rest() {
        assert_eq!(
            "/backup/repo".parse(),
            Ok(Location::Local("/backup/repo".into()))
        );
        assert_eq!(
            "s3://icon-leveldb-backup/PRep".parse(),
            Ok(Location::S3 {
                bucket: "icon-leveldb-backup".into(),
                prefix: "PRep/".into()
            })
        );
        assert_eq!(
            "s3://bucket".parse(),
            Ok(Location::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            })
        );
        for bad in [
            "",
            "s3://",
            "s3://Bucket/x",
            "s3://ab",
            "s3://a..b/x",
            "s3://b/x//y",
            "s3://b/../x",
            "s3://1.2.3.4/x",
            "https://",
            "https:///x",
            "https://a b/x",
        ] {
            assert!(bad.parse::<Location>().is_err(), "{bad:?} accepted");
        }
        let e = "ftp://x".parse::<Location>().unwrap_err();
        assert_eq!(e.to_string(), "repository location \"ftp://x\": unknown scheme: use a directory path, s3://BUCKET/PREFIX or https://MIRROR");
        assert_eq!(
            "https://cdn.example/icon/".parse(),
            Ok(Location::Http("https://cdn.example/icon".into()))
        );
        assert_eq!(
            "http://127.0.0.1:8080".parse(),
            Ok(Location::Http("http://127.0.0.1:8080".into()))
        );
    }
}
