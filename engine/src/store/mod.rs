//! Where repository objects live.
//!
//! [`Store`] is the whole contract between the engine and a backend (a local
//! directory here; S3 in its own module). It is small on purpose: whole-object
//! reads and writes, a size query, a listing, a delete, and a durability
//! barrier. Every key is a `/`-separated relative name from
//! [`crate::format::layout`].
//!
//! Durability contract, which the snapshot commit order relies on:
//! - `put_if_absent` never overwrites: when the key exists it leaves the
//!   stored bytes alone and returns `Ok(false)`.
//! - A successful `put_if_absent` is visible to later reads at once, and
//!   durable after the next successful `flush`.
//! - `flush` returns only when everything put before it is durable; it is the
//!   barrier between writing chunks and committing the manifest that names
//!   them.
//! - `list` reports each object's last-modified time in the store's own
//!   clock (a local file's mtime, S3's `LastModified`), the one clock prune
//!   compares ages with.

pub mod counting;
pub mod faulty;
#[cfg(feature = "http")]
pub mod http;
pub mod limited;
pub mod local;
pub mod location;
pub mod memory;
pub mod ranged;

use crate::error::{Error, Result};
use crate::format::FormatError;

pub use counting::{CountingStore, Counts};
pub use faulty::FaultyStore;
pub use limited::{LimitedStore, Limits};
pub use local::LocalStore;
pub use location::{BadLocation, Location};
pub use memory::MemoryStore;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was written, in the store's own clock, as ns since
    /// the Unix epoch (S3 keeps whole seconds).
    pub modified_unix_ns: u64,
}

pub trait Store: Send + Sync {
    /// The whole object. A missing key is [`crate::error::Error::Missing`]; an
    /// object larger than `max_len` is refused before it is read, so a
    /// hostile repository cannot make a reader allocate without bound.
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>>;

    /// Writes the object unless the key exists. Returns whether it wrote.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool>;

    /// [`Store::put_if_absent`] of bytes the caller gives up, so that a
    /// store that hands its requests a body it owns (S3) need not copy
    /// them: with tens of puts in flight, copies are what memory goes to.
    /// Decorators forward it to their inner store's.
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        self.put_if_absent(key, &bytes)
    }

    /// Writes the object, replacing what the key holds: only for the one
    /// object that is replaced by design, the repository's index
    /// (FORMAT.md §12), never for content-named objects. Durable after
    /// the next `flush`. Stores that cannot (a static mirror) refuse.
    fn put_replace(&self, key: &str, _bytes: &[u8]) -> Result<()> {
        Err(Error::Refused(format!(
            "{}: this store cannot replace {key}",
            self.location()
        )))
    }

    /// Whether `list` can enumerate `chunks/` (a static mirror cannot: its
    /// listings come from the index, which names no chunks). Readers that
    /// would list chunks ask for each chunk they need instead.
    fn lists_chunks(&self) -> bool {
        true
    }

    /// For a store whose listings come from the repository's published
    /// index (a static mirror): the exact bytes it lists from. `None` for
    /// stores that list.
    fn published_index(&self) -> Option<Result<Vec<u8>>> {
        None
    }

    /// The object's size, or `None` when it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Every object under `prefix`, in lexicographic order of keys.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes the object; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Removes several objects (S3: one `DeleteObjects` per 1 000 keys).
    /// Missing keys are not an error.
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().try_for_each(|k| self.delete(k))
    }

    /// Removes what crashed writers left outside the object namespace (a
    /// local store's `tmp/` files) that is older than `before_unix_ns` in
    /// the store's clock; returns (files, bytes). Stores without such
    /// leftovers have nothing to do.
    fn remove_stale_writes(&self, _before_unix_ns: u64) -> Result<(u64, u64)> {
        Ok((0, 0))
    }

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()>;

    /// Where the store is, for messages.
    fn location(&self) -> String;

    /// How many requests the engine should keep in flight by default: the
    /// CPU count for a local disk, tens for a store across a network,
    /// where each request mostly waits.
    fn parallelism(&self) -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The requests made so far, for stores that count them (so an operator
    /// can price a snapshot on a metered store).
    fn request_counts(&self) -> Option<Counts> {
        None
    }
}

/// Writes the methods of [`Store`] a decorator leaves alone, each passing
/// its call to the store in field `$field`:
/// `forward_store!(inner: size, list, flush);`.
macro_rules! forward_store {
    ($field:ident: $($method:ident),+ $(,)?) => {
        $( $crate::store::forward_store!(@one $field $method); )+
    };
    (@one $f:ident get) => {
        fn get(&self, key: &str, max_len: u64) -> $crate::error::Result<Vec<u8>> {
            self.$f.get(key, max_len)
        }
    };
    (@one $f:ident put_if_absent) => {
        fn put_if_absent(&self, key: &str, bytes: &[u8]) -> $crate::error::Result<bool> {
            self.$f.put_if_absent(key, bytes)
        }
    };
    (@one $f:ident put_owned) => {
        fn put_owned(&self, key: &str, bytes: Vec<u8>) -> $crate::error::Result<bool> {
            self.$f.put_owned(key, bytes)
        }
    };
    (@one $f:ident put_replace) => {
        fn put_replace(&self, key: &str, bytes: &[u8]) -> $crate::error::Result<()> {
            self.$f.put_replace(key, bytes)
        }
    };
    (@one $f:ident published_index) => {
        fn published_index(&self) -> Option<$crate::error::Result<Vec<u8>>> {
            self.$f.published_index()
        }
    };
    (@one $f:ident lists_chunks) => {
        fn lists_chunks(&self) -> bool {
            self.$f.lists_chunks()
        }
    };
    (@one $f:ident size) => {
        fn size(&self, key: &str) -> $crate::error::Result<Option<u64>> {
            self.$f.size(key)
        }
    };
    (@one $f:ident list) => {
        fn list(&self, prefix: &str) -> $crate::error::Result<Vec<$crate::store::ObjectInfo>> {
            self.$f.list(prefix)
        }
    };
    (@one $f:ident delete) => {
        fn delete(&self, key: &str) -> $crate::error::Result<()> {
            self.$f.delete(key)
        }
    };
    (@one $f:ident delete_many) => {
        fn delete_many(&self, keys: &[String]) -> $crate::error::Result<()> {
            self.$f.delete_many(keys)
        }
    };
    (@one $f:ident remove_stale_writes) => {
        fn remove_stale_writes(&self, before_unix_ns: u64) -> $crate::error::Result<(u64, u64)> {
            self.$f.remove_stale_writes(before_unix_ns)
        }
    };
    (@one $f:ident flush) => {
        fn flush(&self) -> $crate::error::Result<()> {
            self.$f.flush()
        }
    };
    (@one $f:ident location) => {
        fn location(&self) -> String {
            self.$f.location()
        }
    };
    (@one $f:ident parallelism) => {
        fn parallelism(&self) -> usize {
            self.$f.parallelism()
        }
    };
    (@one $f:ident request_counts) => {
        fn request_counts(&self) -> Option<$crate::store::Counts> {
            self.$f.request_counts()
        }
    };
}
pub(crate) use forward_store;

/// Shared handles are stores too, so decorators can wrap an `Arc` that a
/// test keeps a second handle to.
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        (**self).get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        (**self).put_if_absent(key, bytes)
    }
    fn put_owned(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        (**self).put_owned(key, bytes)
    }
    fn put_replace(&self, key: &str, bytes: &[u8]) -> Result<()> {
        (**self).put_replace(key, bytes)
    }
    fn lists_chunks(&self) -> bool {
        (**self).lists_chunks()
    }
    fn published_index(&self) -> Option<Result<Vec<u8>>> {
        (**self).published_index()
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        (**self).size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        (**self).list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key)
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        (**self).delete_many(keys)
    }
    fn remove_stale_writes(&self, before_unix_ns: u64) -> Result<(u64, u64)> {
        (**self).remove_stale_writes(before_unix_ns)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn location(&self) -> String {
        (**self).location()
    }
    fn parallelism(&self) -> usize {
        (**self).parallelism()
    }
    fn request_counts(&self) -> Option<Counts> {
        (**self).request_counts()
    }
}

/// The error for an object larger than its kind may be.
pub fn too_large(key: &str, len: u64, max_len: u64) -> Error {
    Error::Format {
        key: key.to_string(),
        cause: FormatError::Limit {
            limit: "object size",
            value: len,
            max: max_len,
        },
    }
}
