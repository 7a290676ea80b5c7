//! This machine: its name and its clock. The stores and every command ask
//! here (the stores used to reach up into `repo` for the clock).

use std::time::{SystemTime, UNIX_EPOCH};

/// This machine's host name: the default node identity of snapshots and
/// the name forget and prune record (`localhost` when the kernel has none).
pub fn this_host() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// Now, in nanoseconds since the Unix epoch (0 before it).
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
