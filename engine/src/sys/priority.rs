//! CPU and I/O priority (`--priority`): a snapshot that reads, compresses
//! and uploads while the node runs again should yield to the node.
//!
//! Low priority is nice 19 and the best-effort I/O class at its lowest
//! level (7), for every thread of the process: Linux keeps both per thread,
//! so threads started earlier (an S3 client's runtime) are lowered one by
//! one, and threads started later inherit it. Idle I/O is not used: a node
//! that reads without pause would starve the snapshot entirely. Lowering
//! needs no privilege; it is never raised again in the same process.

use std::str::FromStr;

/// When to run at low priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    /// Low while the node runs: after a staged snapshot's start command,
    /// or throughout with `--allow-live`; normal while the node is down,
    /// when every second is downtime.
    #[default]
    Auto,
    Low,
    Normal,
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Priority::Auto),
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            _ => Err(format!("{s:?}: expected auto, low or normal")),
        }
    }
}

/// The nice value of low priority.
pub const LOW_NICE: i32 = 19;
/// The best-effort I/O level of low priority (0 highest, 7 lowest).
pub const LOW_IO_LEVEL: i32 = 7;

const IOPRIO_CLASS_SHIFT: i32 = 13;
const IOPRIO_CLASS_BE: i32 = 2;
const IOPRIO_WHO_PROCESS: i32 = 1;

/// Lowers every thread of this process; returns how many were lowered.
/// A thread that exits meanwhile is skipped.
pub fn lower() -> std::io::Result<usize> {
    let mut lowered = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        match lower_thread(tid) {
            Ok(()) => lowered += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    tracing::info!(
        "running at low priority (nice {LOW_NICE}, best-effort I/O level {LOW_IO_LEVEL}): {lowered} threads"
    );
    Ok(lowered)
}

/// [`lower`], or a warning saying why not (a sandbox may forbid it; the
/// work goes on at normal priority).
pub fn lower_or_warn() {
    if let Err(e) = lower() {
        tracing::warn!(
            "could not lower the CPU and I/O priority: {e}; going on at normal priority"
        );
    }
}

fn lower_thread(tid: libc::id_t) -> std::io::Result<()> {
    // SAFETY: plain system calls on a thread id, no memory passed.
    unsafe {
        // PRIO_PROCESS with a thread id sets that thread's nice value on
        // Linux. Only ever raised (a lower nice would need privilege).
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if now < LOW_NICE && libc::setpriority(libc::PRIO_PROCESS, tid, LOW_NICE) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let io = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | LOW_IO_LEVEL;
        if libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, io) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// This thread's (nice, I/O priority word), for tests and reports.
pub fn current() -> std::io::Result<(i32, i32)> {
    // SAFETY: as above.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let io = libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid);
        if io < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((nice, io as i32))
    }
}

/// The I/O priority word of low priority, as [`current`] reports it.
pub const LOW_IO: i32 = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | LOW_IO_LEVEL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse() {
        assert_eq!("low".parse(), Ok(Priority::Low));
        assert_eq!("auto".parse(), Ok(Priority::Auto));
        assert_eq!("normal".parse(), Ok(Priority::Normal));
        assert!("idle".parse::<Priority>().is_err());
    }

    // Lowering the whole process would lower the test harness's other
    // threads; the process-wide path is tested by the CLI tests, in a
    // process of its own. Here: one thread.
    #[test]
    fn a_thread_is_lowered_to_nice_19_and_best_effort_7() {
        std::thread::spawn(|| {
            let tid = unsafe { libc::gettid() } as libc::id_t;
            lower_thread(tid).unwrap();
            assert_eq!(current().unwrap(), (LOW_NICE, LOW_IO));
            // A thread it starts inherits both.
            std::thread::spawn(|| assert_eq!(current().unwrap(), (LOW_NICE, LOW_IO)))
                .join()
                .unwrap();
        })
        .join()
        .unwrap();
    }
}
