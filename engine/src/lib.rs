//! blocksnap: content-addressed incremental snapshots of blockchain node
//! data directories.
//!
//! The engine holds every piece of logic; the `blocksnap` binary parses
//! arguments, calls into it and prints. Its wings, each importing only
//! those listed before it:
//!
//! - ground: [`error`], [`id`], [`progress`], [`chunking`] (FastCDC
//!   boundaries), [`ipnorm`] (the node's IP in path names);
//! - [`format`]: the bytes of the repository (objects, manifests, keys,
//!   limits);
//! - [`sys`]: the operating system — files through descriptors, liveness,
//!   priority, signals, the clock and host name, test hooks;
//! - [`store`]: where objects live, and the durability contract;
//! - [`repo`]: a store plus its config; loading, and committing (the
//!   writer's side of FORMAT.md §10), signatures and trust;
//! - [`commands`]: one module per command (snapshot, restore, verify,
//!   forget, prune, copy, list, diff, stats, demo, generated node data),
//!   each with the leaves only it uses;
//! - [`testing`]: the format's property checks (tests and fuzz targets).
//!
//! The re-exports below keep every module's earlier path
//! (`blocksnap::snapshot`, `blocksnap::fsx`, …) working.
//!
//! Write order of a snapshot: chunks (each durable on its own) → store
//! flush → manifest. The manifest is the commit point; see
//! `format-spec/FORMAT.md`.

pub mod chunking;
pub mod error;
pub mod id;
pub mod ipnorm;
pub mod progress;

pub mod commands;
pub mod format;
pub mod repo;
pub mod store;
pub mod sys;
pub mod testing;

#[cfg(feature = "nodegen")]
pub use commands::demo;
pub use commands::forget::{self, retention};
#[cfg(feature = "nodegen")]
pub use commands::nodegen;
pub use commands::restore::{self, publish, seed};
pub use commands::snapshot::{self, cache, command, stage};
pub use commands::{compare, copy, dump, import, list, profile, prune, site, stats, verify};
pub use repo::{sign, trusted};
pub use sys::{fsx, interrupt, live, priority, testhook};
pub use testing::props;

pub use error::{Error, Result};
pub use id::{ChunkId, Hash};
pub use repo::{Repository, Selector};
