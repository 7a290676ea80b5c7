//! SIGINT, SIGTERM and SIGHUP end a command cleanly instead of killing it.
//!
//! The `blocksnap` binary calls [`install`] once. A first signal only sets a
//! flag; long-running work polls [`check`] between files and chunks and
//! unwinds with [`Error::Interrupted`], so that the usual cleanup runs: a
//! snapshot commits no manifest and removes its stage, a restore leaves its
//! staging directory to resume from, and — the reason this exists — a staged
//! snapshot that has stopped the node runs the start command before it
//! exits. A second signal exits at once (status 128 + signal), except inside
//! a [`Critical`] section (between the stop and the start command), where
//! leaving would strand the node: there every signal only sets the flag.
//!
//! Code that never called `install` (tests, other embedders) is never
//! interrupted.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use crate::error::{Error, Result};

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CRITICAL: AtomicUsize = AtomicUsize::new(0);

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Installs the handlers. Idempotent in effect (a second install adds
/// handlers that do the same).
pub fn install() -> std::io::Result<()> {
    for sig in SIGNALS {
        // SAFETY: the action only performs atomic operations and `_exit`,
        // all async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                let first = SIGNAL
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if !first && CRITICAL.load(Ordering::SeqCst) == 0 {
                    signal_hook::low_level::exit(128 + sig);
                }
            })?;
        }
    }
    Ok(())
}

/// The first signal received, if any.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Interrupted)` once a signal has arrived.
pub fn check() -> Result<()> {
    match received() {
        None => Ok(()),
        Some(signal) => Err(Error::Interrupted { signal }),
    }
}

/// The conventional name of a signal, for messages (kept with the error
/// that prints it, so that `error` imports nothing of this module).
pub use crate::error::signal_name as name;

/// While one is alive, signals never end the process outright.
pub struct Critical(());

impl Critical {
    pub fn enter() -> Critical {
        CRITICAL.fetch_add(1, Ordering::SeqCst);
        Critical(())
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        CRITICAL.fetch_sub(1, Ordering::SeqCst);
    }
}
