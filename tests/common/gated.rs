//! A store handle that holds its "process" just before one chosen request,
//! so that a test can run another process in between: the exact
//! interleavings of the prune protocol (FORMAT.md §10), on real engine code.
//! (From the outside review of the protocol, which found holes with it.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use blocksnap::store::{MemoryStore, ObjectInfo, Store};
use blocksnap::Result;

pub struct Gate {
    op: &'static str,
    pred: Box<dyn Fn(&str) -> bool + Send + Sync>,
    fired: AtomicBool,
    arrived: SyncSender<String>,
    release: Mutex<Receiver<()>>,
}

/// The test's side of a gate: wait for the process to reach it, then let
/// it go on.
pub struct Pause {
    arrived: Receiver<String>,
    release: SyncSender<()>,
}

impl Pause {
    /// Waits until the process is held; returns the request it is held at.
    pub fn wait(&self) -> String {
        self.arrived.recv().expect("the process reached its gate")
    }

    /// Whether the process got to the gate within `ms` milliseconds.
    pub fn reached_within(&self, ms: u64) -> Option<String> {
        self.arrived
            .recv_timeout(std::time::Duration::from_millis(ms))
            .ok()
    }

    pub fn go(&self) {
        self.release.send(()).unwrap();
    }
}

/// Holds the first request `op` ("get", "put", "size", "list", "delete",
/// "delete_many") whose key (or prefix) satisfies `pred`.
pub fn gate(
    op: &'static str,
    pred: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> (Gate, Pause) {
    let (a_tx, a_rx) = sync_channel(1);
    let (r_tx, r_rx) = sync_channel(1);
    (
        Gate {
            op,
            pred: Box::new(pred),
            fired: AtomicBool::new(false),
            arrived: a_tx,
            release: Mutex::new(r_rx),
        },
        Pause {
            arrived: a_rx,
            release: r_tx,
        },
    )
}

pub struct Gated {
    pub inner: Arc<MemoryStore>,
    pub gates: Vec<Gate>,
}

impl Gated {
    fn check(&self, op: &str, key: &str) {
        for g in &self.gates {
            if g.op == op && (g.pred)(key) && !g.fired.swap(true, Ordering::SeqCst) {
                g.arrived.send(format!("{op} {key}")).unwrap();
                g.release.lock().unwrap().recv().unwrap();
            }
        }
    }
}

impl Store for Gated {
    fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
        self.check("get", key);
        self.inner.get(key, max_len)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.check("put", key);
        self.inner.put_if_absent(key, bytes)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.check("size", key);
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check("list", prefix);
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.check("delete", key);
        self.inner.delete(key)
    }
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        for k in keys {
            self.check("delete_many", k);
        }
        self.inner.delete_many(keys)
    }
    fn remove_stale_writes(&self, before_unix_ns: u64) -> Result<(u64, u64)> {
        self.inner.remove_stale_writes(before_unix_ns)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn request_counts(&self) -> Option<blocksnap::store::Counts> {
        self.inner.request_counts()
    }
}
