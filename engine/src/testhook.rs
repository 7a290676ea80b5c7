//! Crash points for crash-consistency tests.
//!
//! `BLOCKSNAP_TEST_CRASH_AT=NAME[:N]` makes the process abort, with no
//! destructor and no cleanup (as `kill -9` would leave it), the N-th time
//! (default: the first) execution reaches the point `NAME`. Points sit
//! between the steps of the protocols FORMAT.md §10 argues about, so a test
//! can stop a run exactly there and check what a re-run makes of it. Without
//! the variable a point costs one relaxed atomic load.
//!
//! Only a build with the feature `crash-points` (the tests' build) has
//! them: in any other build a point is nothing, and the variable is never
//! read, so an environment cannot make a production binary abort.

#[cfg(feature = "crash-points")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "crash-points")]
use std::sync::OnceLock;

#[cfg(feature = "crash-points")]
struct Target {
    name: String,
    nth: u64,
    seen: AtomicU64,
}

#[cfg(feature = "crash-points")]
fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var("BLOCKSNAP_TEST_CRASH_AT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((n, k)) => (n.to_string(), k.parse().ok()?),
                None => (spec, 1),
            };
            Some(Target {
                name,
                nth,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts here if the environment asks for it.
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    if let Some(t) = target() {
        if t.name == name && t.seen.fetch_add(1, Ordering::SeqCst) + 1 == t.nth {
            eprintln!("blocksnap: test crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}

/// Nothing: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}
