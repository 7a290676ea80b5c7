//! One file per command: its arguments and its run (open, plan, print,
//! execute). The printing they share is `output.rs`; the option groups
//! several take are `args.rs`; opening stores and repositories is `open.rs`.

pub(crate) mod completions;
pub(crate) mod copy;
pub(crate) mod demo;
pub(crate) mod diff;
pub(crate) mod dump;
pub(crate) mod forget;
pub(crate) mod generate;
pub(crate) mod goloop;
pub(crate) mod import;
pub(crate) mod index;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod list;
pub(crate) mod man;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod sign;
pub(crate) mod site;
pub(crate) mod snapshot;
pub(crate) mod stats;
pub(crate) mod verify;
