//! IP normalisation of paths.
//!
//! ICON's block DB directory carries the node's address in its name
//! (`.storage/db_10.0.0.7:7100_icon_dex`). Snapshots store it with the
//! address replaced by [`PLACEHOLDER`] — the name operators' scripts already
//! use — so that every node's manifest names the same paths and their chunks
//! dedup; restore puts the target node's address back.
//!
//! An address is a maximal run of digits and dots inside one path component
//! that parses as a dotted quad (`0..=255` each, no leading zeros). A source
//! path that already contains the placeholder is refused: restore could not
//! tell it from a normalised one.

use std::net::Ipv4Addr;

pub const PLACEHOLDER: &str = "CHANGEIP";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    #[error(
        "the snapshot stores {} path(s) with the node's IP normalised ({}); pass --ip A.B.C.D with the target node's IPv4 address",
        paths.len(), sample(paths)
    )]
    Required { paths: Vec<String> },
    #[error("{given:?} is not an IPv4 address (expected four numbers 0-255 like 10.0.0.7)")]
    Invalid { given: String },
    #[error(
        "source paths hold different IPv4 addresses ({}); pass --ip to say which one is the node's",
        addrs.join(", ")
    )]
    Ambiguous { addrs: Vec<String> },
    #[error("source path {path:?} already contains the placeholder {PLACEHOLDER:?}; it could not be told apart from a normalised address on restore")]
    PlaceholderInSource { path: String },
}

fn sample(paths: &[String]) -> String {
    let mut s = paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 3 {
        s.push_str(&format!(", and {} more", paths.len() - 3));
    }
    s
}

/// Parses an operator-given address strictly.
pub fn parse_ip(given: &str) -> Result<Ipv4Addr, IpError> {
    given.parse::<Ipv4Addr>().map_err(|_| IpError::Invalid {
        given: given.to_string(),
    })
}

/// Byte ranges of dotted-quad addresses in one path component.
fn addresses(component: &str) -> Vec<(usize, usize, Ipv4Addr)> {
    let bytes = component.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        // A dot after the address ends a sentence or starts an extension
        // (`10.0.0.7.log`); it is not part of the address.
        let end = start + component[start..i].trim_end_matches('.').len();
        if let Ok(ip) = component[start..end].parse::<Ipv4Addr>() {
            found.push((start, end, ip));
        }
    }
    found
}

/// Every distinct address found in the components of `path`.
pub fn find(path: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = path
        .split('/')
        .flat_map(|c| addresses(c).into_iter().map(|(_, _, ip)| ip))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Replaces `ip` in every component of `path` with the placeholder.
pub fn normalise(path: &str, ip: Ipv4Addr) -> Result<String, IpError> {
    if path.contains(PLACEHOLDER) {
        return Err(IpError::PlaceholderInSource {
            path: path.to_string(),
        });
    }
    let parts: Vec<String> = path
        .split('/')
        .map(|component| {
            let mut out = String::with_capacity(component.len());
            let mut last = 0;
            for (start, end, found) in addresses(component) {
                if found == ip {
                    out.push_str(&component[last..start]);
                    out.push_str(PLACEHOLDER);
                    last = end;
                }
            }
            out.push_str(&component[last..]);
            out
        })
        .collect();
    Ok(parts.join("/"))
}

/// Puts `ip` back where the placeholder stands.
pub fn denormalise(path: &str, ip: Ipv4Addr) -> String {
    path.replace(PLACEHOLDER, &ip.to_string())
}

pub fn is_normalised(path: &str) -> bool {
    path.contains(PLACEHOLDER)
}

/// Picks the node's address among those found in the source's paths: the
/// one given, or the only one present.
pub fn choose(found: &[Ipv4Addr], given: Option<Ipv4Addr>) -> Result<Option<Ipv4Addr>, IpError> {
    match (given, found) {
        (Some(ip), _) => Ok(Some(ip)),
        (None, []) => Ok(None),
        (None, [one]) => Ok(Some(*one)),
        (None, many) => Err(IpError::Ambiguous {
            addrs: many.iter().map(|a| a.to_string()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icon_block_db_name_round_trips() {
        let ip: Ipv4Addr = "10.0.0.7".parse().unwrap();
        let p = ".storage/db_10.0.0.7:7100_icon_dex/000123.ldb";
        assert_eq!(find(p), vec![ip]);
        let n = normalise(p, ip).unwrap();
        assert_eq!(n, ".storage/db_CHANGEIP:7100_icon_dex/000123.ldb");
        assert!(is_normalised(&n));
        let back = denormalise(&n, "192.168.1.20".parse().unwrap());
        assert_eq!(back, ".storage/db_192.168.1.20:7100_icon_dex/000123.ldb");
    }

    #[test]
    fn non_addresses_are_left_alone() {
        for p in [
            "000005.ldb",
            "MANIFEST-000002",
            "v1.2.3",
            "1.2.3.4.5",
            "300.1.1.1",
            "01.2.3.4",
        ] {
            assert!(find(p).is_empty(), "{p} matched");
        }
    }

    #[test]
    fn bad_addresses_and_ambiguity_are_errors() {
        assert!(parse_ip("10.0.0").is_err());
        assert!(parse_ip("10.0.0.256").is_err());
        assert!(parse_ip("localhost").is_err());
        let a: Ipv4Addr = "1.1.1.1".parse().unwrap();
        let b: Ipv4Addr = "2.2.2.2".parse().unwrap();
        assert!(matches!(
            choose(&[a, b], None),
            Err(IpError::Ambiguous { .. })
        ));
        assert_eq!(choose(&[a, b], Some(b)).unwrap(), Some(b));
        assert_eq!(choose(&[], None).unwrap(), None);
        assert!(normalise("x/CHANGEIP", a).is_err());
    }
}
