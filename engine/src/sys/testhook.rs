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
impl Target {
    /// `NAME[:N]` from the variable `var`.
    fn from_env(var: &str) -> Option<Target> {
        let spec = std::env::var(var).ok()?;
        let (name, nth) = match spec.split_once(':') {
            Some((n, k)) => (n.to_string(), k.parse().ok()?),
            None => (spec, 1),
        };
        Some(Target {
            name,
            nth,
            seen: AtomicU64::new(0),
        })
    }

    /// Whether this visit of `name` is the one asked for.
    fn hit(&self, name: &str) -> bool {
        self.name == name && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
    }
}

#[cfg(feature = "crash-points")]
fn crash_target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| Target::from_env("BLOCKSNAP_TEST_CRASH_AT"))
        .as_ref()
}

#[cfg(feature = "crash-points")]
fn wait_target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| Target::from_env("BLOCKSNAP_TEST_WAIT_AT"))
        .as_ref()
}

/// Aborts here if the environment asks for it
/// (`BLOCKSNAP_TEST_CRASH_AT`); or, with `BLOCKSNAP_TEST_WAIT_AT=NAME[:N]`,
/// creates the file `BLOCKSNAP_TEST_WAIT_FILE` and waits (up to a minute)
/// for a signal before going on, so that a test can deliver SIGINT, SIGTERM
/// or SIGHUP exactly between two steps.
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    if crash_target().is_some_and(|t| t.hit(name)) {
        eprintln!("blocksnap: test crash point {name} reached: aborting");
        std::process::abort();
    }
    if wait_target().is_some_and(|t| t.hit(name)) {
        if let Some(file) = std::env::var_os("BLOCKSNAP_TEST_WAIT_FILE") {
            let _ = std::fs::write(file, name);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while crate::sys::interrupt::received().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Nothing: this build has no crash points.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Whether a test asked to leave out the durability step `name` — a
/// mutation the crash-state explorer (`tests/crash_states.rs`) must catch:
/// `BLOCKSNAP_TEST_SKIP=name[,name…]`. Only in builds with crash points.
#[cfg(feature = "crash-points")]
pub fn skip(name: &str) -> bool {
    std::env::var("BLOCKSNAP_TEST_SKIP").is_ok_and(|v| v.split(',').any(|n| n == name))
}

/// Never: this build has no test hooks.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn skip(_name: &str) -> bool {
    false
}

/// A size a test sets to make a rare path common (`BLOCKSNAP_TEST_<NAME>`,
/// e.g. a prune's delete batch, so that a sweep of a small repository has
/// several), or `default`. Only in builds with crash points.
#[cfg(feature = "crash-points")]
pub fn tunable(name: &str, default: usize) -> usize {
    std::env::var(format!("BLOCKSNAP_TEST_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// `default`: this build has no test hooks.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn tunable(_name: &str, default: usize) -> usize {
    default
}
