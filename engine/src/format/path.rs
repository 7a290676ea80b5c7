//! Paths inside a manifest.
//!
//! A manifest path is relative to the snapshot root, `/`-separated UTF-8,
//! with no empty, `.` or `..` component and no NUL. These rules are what make
//! a hostile manifest unable to name anything outside the restore target.
//!
//! Symlink targets have two rules. [`check_link_target`] is the format's:
//! counted lexically, the target never climbs above the snapshot root. That
//! alone is not sound, because a name inside the target may itself be a
//! symlink (`a/up -> ..` makes `a/up/../..` climb two levels where the count
//! sees none), so restore and snapshot also apply
//! [`check_link_target_contained`]: `..` only as leading components. Then
//! every `..` is taken from a real directory (the link's own, which restore
//! creates as a directory, never a link), and what follows only descends,
//! through names that are either real or links obeying the same rule, so
//! no chain of links leads outside the root.

use super::{limits, FormatError};

pub fn check(path: &str) -> Result<(), FormatError> {
    let bad = |reason| {
        Err(FormatError::UnsafePath {
            path: path.chars().take(200).collect(),
            reason,
        })
    };
    if path.len() as u64 > limits::MAX_PATH_BYTES {
        return Err(FormatError::Limit {
            limit: "path length",
            value: path.len() as u64,
            max: limits::MAX_PATH_BYTES,
        });
    }
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\0') {
        return bad("NUL byte in path");
    }
    let mut depth = 0u64;
    for component in path.split('/') {
        depth += 1;
        match component {
            "" => return bad("empty path component"),
            "." | ".." => return bad("`.` or `..` component"),
            _ => {}
        }
    }
    FormatError::check_limit("path depth", depth, limits::MAX_PATH_DEPTH)
}

/// Checks that a symlink at `link` pointing to `target` stays inside the
/// tree when resolved lexically from the link's directory.
pub fn check_link_target(link: &str, target: &str) -> Result<(), FormatError> {
    let bad = |reason| {
        Err(FormatError::UnsafePath {
            path: format!("{link} -> {target}"),
            reason,
        })
    };
    FormatError::check_limit(
        "symlink target length",
        target.len() as u64,
        limits::MAX_LINK_TARGET_BYTES,
    )?;
    if target.is_empty() {
        return bad("empty symlink target");
    }
    if target.starts_with('/') {
        return bad("symlink to an absolute path");
    }
    if target.contains('\0') {
        return bad("NUL byte in symlink target");
    }
    // Depth of the link's directory below the root.
    let mut depth = link.split('/').count() as i64 - 1;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return bad("symlink leads outside the snapshot root");
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// The restore rule for symlink targets (on top of [`check_link_target`]):
/// `..` components may only lead the target. A `..` after a name could climb
/// out of a directory that name's own symlink led into.
pub fn check_link_target_contained(link: &str, target: &str) -> Result<(), FormatError> {
    check_link_target(link, target)?;
    let mut named = false;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." if named => {
                return Err(FormatError::UnsafePath {
                    path: format!("{link} -> {target}"),
                    reason: "`..` after a name in a symlink target (the name may be a symlink that leads elsewhere)",
                })
            }
            ".." => {}
            _ => named = true,
        }
    }
    Ok(())
}

/// Where a contained symlink's leading `..` components take it: `Some(name)`
/// when they climb all the way to the snapshot root, with the first name the
/// target then descends into (`None` inside: the target is the root
/// itself); `None` when the target stays below the root. Counted after
/// normalising: empty and `.` components are no components, so
/// `./../x` and `..//../x` climb as `../x` and `../../x` do.
pub fn climb_to_root<'t>(link: &str, target: &'t str) -> Option<Option<&'t str>> {
    let mut parts = target.split('/').filter(|c| !c.is_empty() && *c != ".");
    let depth = link.split('/').count() - 1;
    let mut climbs = 0;
    let mut first = None;
    for c in parts.by_ref() {
        if c == ".." {
            climbs += 1;
        } else {
            first = Some(c);
            break;
        }
    }
    (climbs >= depth).then_some(first)
}

/// The parent of a manifest path, or `None` for a top-level entry.
pub fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "a/../../b",
            "..",
            "a//b",
            "a/./b",
            "a/",
            "a\0b",
        ] {
            assert!(check(p).is_err(), "{p:?} accepted");
        }
        let deep = vec!["d"; 200].join("/");
        assert!(matches!(
            check(&deep),
            Err(FormatError::Limit {
                limit: "path depth",
                ..
            })
        ));
        for p in [
            ".storage/db_CHANGEIP:7100_icon_dex/000005.ldb",
            "a",
            "a/b..c/.hidden",
        ] {
            check(p).unwrap();
        }
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        check_link_target("a/link", "../b").unwrap();
        check_link_target("a/link", "b/../c").unwrap();
        assert!(check_link_target("link", "../outside").is_err());
        assert!(check_link_target("a/link", "../../outside").is_err());
        assert!(check_link_target("a/link", "/etc").is_err());
        assert!(check_link_target("a/link", "").is_err());
    }

    #[test]
    fn climbs_are_counted_after_normalising() {
        assert_eq!(climb_to_root("a/l", "../x/y"), Some(Some("x")));
        assert_eq!(climb_to_root("a/l", "./../x"), Some(Some("x")));
        assert_eq!(climb_to_root("a/b/l", "..//../x"), Some(Some("x")));
        assert_eq!(climb_to_root("a/up", ".."), Some(None));
        assert_eq!(climb_to_root("a/up", "./.."), Some(None));
        assert_eq!(climb_to_root("a/b/l", "../x"), None);
        assert_eq!(climb_to_root("a/b/up", ".."), None);
        assert_eq!(climb_to_root("l", "x"), Some(Some("x")));
    }

    #[test]
    fn symlink_chains_cannot_climb_out() {
        // `a/up -> ..` is fine on its own; a chain through it is not.
        check_link_target_contained("a/up", "..").unwrap();
        let chain = "a/up/a/up/a/up/../../etc";
        assert!(check_link_target("esc", chain).is_ok(), "lexically fine");
        assert!(check_link_target_contained("esc", chain).is_err());
        for ok in [
            "../.storage",
            "../../x/y",
            "b",
            "./b/c/",
            "..",
            "a/up/a/up/x",
        ] {
            check_link_target_contained("d1/d2/link", ok).unwrap();
        }
        for bad in ["b/../c", "../x/..", "x/./../y", "../../../x"] {
            assert!(
                check_link_target_contained("d1/d2/link", bad).is_err(),
                "{bad}"
            );
        }
    }
}
