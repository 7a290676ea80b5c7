//! blocksnap: content-addressed incremental snapshots of blockchain node
//! data directories.
//!
//! The engine holds every piece of logic; the `blocksnap` binary parses
//! arguments, calls into it and prints. One module per concept:
//!
//! - [`format`]: the bytes of the repository (objects, manifests, limits);
//! - [`chunking`]: FastCDC boundaries;
//! - [`store`]: where objects live, and the durability contract;
//! - [`repo`]: a store plus its config; loading and committing;
//! - [`snapshot`], [`restore`], [`verify`], [`list`]: the commands;
//! - [`ipnorm`]: the node's IP in path names;
//! - [`nodegen`]: generated ICON-layout node data with real LSM databases.
//!
//! Write order of a snapshot: chunks (each durable on its own) → store
//! flush → manifest. The manifest is the commit point; see
//! `format-spec/FORMAT.md`.

pub mod cache;
pub mod chunking;
pub mod command;
pub mod compare;
pub mod copy;
#[cfg(feature = "nodegen")]
pub mod demo;
pub mod error;
pub mod forget;
pub mod format;
pub mod fsx;
pub mod id;
pub mod interrupt;
pub mod ipnorm;
pub mod list;
pub mod live;
pub mod metrics;
#[cfg(feature = "nodegen")]
pub mod nodegen;
pub mod priority;
pub mod progress;
pub mod props;
pub mod prune;
pub mod publish;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod seed;
pub mod sign;
pub mod snapshot;
pub mod stage;
pub mod stats;
pub mod store;
pub mod testhook;
pub mod trusted;
mod upload;
pub mod verify;

pub use error::{Error, Result};
pub use id::{ChunkId, Hash};
pub use repo::{Repository, Selector};
