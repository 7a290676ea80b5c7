//! One module per command, each read top-down: its face (options, report,
//! the entry points), then what only it uses. `snapshot/`, `restore/`,
//! `verify/`, `prune/` and `forget/` are folders holding their leaves; the
//! rest are single files. Nothing below this wing (`format/`, `store/`,
//! `sys/`, `repo/`) imports it.

pub mod compare;
pub mod copy;
#[cfg(feature = "nodegen")]
pub mod demo;
pub mod dump;
pub mod forget;
pub mod import;
pub mod list;
/// Generated ICON-layout node data with real LSM databases: the `generate`
/// command, the demo, the tests and benchmarks.
#[cfg(feature = "nodegen")]
pub mod nodegen;
pub mod profile;
pub mod prune;
pub mod restore;
pub mod site;
pub mod snapshot;
pub mod stats;
pub mod verify;
