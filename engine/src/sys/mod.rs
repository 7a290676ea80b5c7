//! The operating system, as the commands need it: descriptor-based file
//! work that never follows a link it did not make ([`fsx`]), whether a
//! database is open ([`live`]), CPU and I/O priority ([`priority`]), the host's name and clock ([`host`]),
//! signals ([`interrupt`]) and the hooks tests use to crash, wait or skip a
//! step ([`testhook`]). Below `repo/` and `commands/`; imports neither.

pub mod fsx;
pub mod host;
pub mod interrupt;
pub mod live;
pub mod priority;
pub mod testhook;
