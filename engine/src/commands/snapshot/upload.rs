//! Puts of new chunk objects, off the workers that chunk and compress.
//!
//! A snapshot's work has two sides with different limits: chunking,
//! hashing and compressing want one worker per core; storing wants as many
//! requests in flight as the store serves well (tens on S3, several local
//! fsyncs that the filesystem's journal commits together). [`Uploads`] joins
//! them with a queue bounded in *bytes*: a worker hands over an encoded
//! object and goes on with the next chunk, and waits only when the objects
//! queued or being put already hold the budget's bytes. Memory for
//! objects is thus bounded by the budget, whatever the request count or the
//! store's speed.
//!
//! A put that finds its key taken (another writer stored the chunk) learns
//! the stored object's size, which may differ from this writer's encoding
//! (another zstd level or version): [`Uploads::finish`] returns those sizes
//! so that the manifest records what the store holds.
//!
//! The first failed put stops the queue: workers waiting or arriving get
//! [`Stopped`], and `finish` returns the failure itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::format::layout;
use crate::format::manifest::ChunkRef;
use crate::format::FormatError;
use crate::id::ChunkId;
use crate::store::Store;

/// One encoded chunk object waiting to be put.
struct Job {
    key: String,
    id: ChunkId,
    object: Vec<u8>,
    /// Ask whether the key exists before sending the bytes (the writer's
    /// chunk index is incomplete, so the chunk may well be stored).
    check_first: bool,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Bytes queued or being put.
    bytes: u64,
    /// No more jobs will come: put threads finish the queue and return.
    closed: bool,
    /// The first failure; once set the queue is dropped and nothing waits.
    error: Option<Error>,
    /// Stopped by the workers' side (which has its own error to report).
    stopped: bool,
    /// Chunks whose key held an object of another size than ours.
    sizes: HashMap<ChunkId, u64>,
    new_chunks: u64,
    new_bytes: u64,
}

impl State {
    fn halted(&self) -> bool {
        self.error.is_some() || self.stopped
    }
}

/// The queue between chunking workers and put threads.
pub(crate) struct Uploads<'s> {
    store: &'s dyn Store,
    budget: u64,
    state: Mutex<State>,
    changed: Condvar,
}

/// What a worker gets when the queue stopped on another thread's failure
/// (the failure itself is [`Uploads::finish`]'s).
#[derive(Debug)]
pub(crate) struct Stopped;

/// What the puts did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Chunks another writer had stored, at a size other than the one this
    /// writer encoded: the size to record.
    pub sizes: HashMap<ChunkId, u64>,
}

impl Outcome {
    /// Records in `chunks` the stored length of those another writer had
    /// stored at another size.
    pub fn fix_sizes<'c>(&self, chunks: impl Iterator<Item = &'c mut ChunkRef>) -> Result<()> {
        if self.sizes.is_empty() {
            return Ok(());
        }
        for c in chunks {
            if let Some(&n) = self.sizes.get(&c.id) {
                c.stored_len = u32::try_from(n).map_err(|_| Error::Format {
                    key: layout::chunk_key(&c.id),
                    cause: FormatError::corrupt(format!("stored object of {n} bytes")),
                })?;
            }
        }
        Ok(())
    }
}

impl<'s> Uploads<'s> {
    /// At most `budget` bytes of objects queued or in flight (one object is
    /// always admitted, whatever its size).
    pub fn new(store: &'s dyn Store, budget: u64) -> Self {
        Uploads {
            store,
            budget,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("uploads lock")
    }

    /// Queues an object, waiting while the budget is spent.
    pub fn push(
        &self,
        key: String,
        id: ChunkId,
        object: Vec<u8>,
        check_first: bool,
    ) -> Result<(), Stopped> {
        let len = object.len() as u64;
        let mut s = self.lock();
        while !s.halted() && s.bytes > 0 && s.bytes + len > self.budget {
            s = self.changed.wait(s).expect("uploads lock");
        }
        if s.halted() {
            return Err(Stopped);
        }
        s.bytes += len;
        s.jobs.push_back(Job {
            key,
            id,
            object,
            check_first,
        });
        self.changed.notify_all();
        Ok(())
    }

    /// Stops the queue with `e` (the first failure wins) and drops what is
    /// queued.
    pub fn fail(&self, e: Error) {
        let mut s = self.lock();
        if s.error.is_none() {
            s.error = Some(e);
        }
        let dropped: u64 = s.jobs.drain(..).map(|j| j.object.len() as u64).sum();
        s.bytes -= dropped;
        self.changed.notify_all();
    }

    /// Stops the queue without a failure of its own (a worker failed) and
    /// drops what is queued.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.stopped = true;
        let dropped: u64 = s.jobs.drain(..).map(|j| j.object.len() as u64).sum();
        s.bytes -= dropped;
        self.changed.notify_all();
    }

    /// No more objects will be pushed.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// A put thread's loop: runs until the queue is closed and empty, or
    /// stopped.
    pub fn run(&self) {
        loop {
            let job = {
                let mut s = self.lock();
                loop {
                    if s.halted() {
                        return;
                    }
                    if let Some(j) = s.jobs.pop_front() {
                        break j;
                    }
                    if s.closed {
                        return;
                    }
                    s = self.changed.wait(s).expect("uploads lock");
                }
            };
            let len = job.object.len() as u64;
            let done = self.put(job);
            let mut s = self.lock();
            s.bytes -= len;
            match done {
                Ok(Put::New) => {
                    s.new_chunks += 1;
                    s.new_bytes += len;
                }
                Ok(Put::Existing(None)) => {}
                Ok(Put::Existing(Some((id, size)))) => {
                    s.sizes.insert(id, size);
                }
                Err(e) => {
                    drop(s);
                    self.fail(e);
                    continue;
                }
            }
            self.changed.notify_all();
        }
    }

    fn put(&self, job: Job) -> Result<Put> {
        crate::sys::interrupt::check()?;
        let present = match job.check_first {
            true => self.store.size(&job.key)?,
            false => None,
        };
        let len = job.object.len() as u64;
        if present.is_none() && self.store.put_owned(&job.key, job.object)? {
            return Ok(Put::New);
        }
        // Stored by another writer (or an earlier, interrupted run): record
        // the size the store holds.
        let present = match present {
            Some(n) => Some(n),
            None => self.store.size(&job.key)?,
        };
        Ok(Put::Existing(match present {
            Some(n) if n != len => Some((job.id, n)),
            // Equal, or gone again (a prune's sweep can only delete a chunk
            // this writer's commit then refuses: FORMAT.md §10).
            _ => None,
        }))
    }

    /// After every put thread returned: the first failure, or what the puts
    /// did.
    pub fn finish(self) -> Result<Outcome> {
        let s = self.state.into_inner().expect("uploads lock");
        if let Some(e) = s.error {
            return Err(e);
        }
        debug_assert!(s.stopped || (s.jobs.is_empty() && s.bytes == 0));
        Ok(Outcome {
            new_chunks: s.new_chunks,
            new_bytes: s.new_bytes,
            sizes: s.sizes,
        })
    }
}

enum Put {
    New,
    /// The key was taken; the stored size when it differs from ours.
    Existing(Option<(ChunkId, u64)>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A store whose puts wait until released, and which records the most
    /// bytes ever handed to it at once.
    struct Slow {
        inner: MemoryStore,
        in_flight: AtomicU64,
        peak: AtomicU64,
        fail_key: Option<String>,
    }

    impl Store for Slow {
        fn get(&self, key: &str, max_len: u64) -> Result<Vec<u8>> {
            self.inner.get(key, max_len)
        }
        fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
            let now = self
                .in_flight
                .fetch_add(bytes.len() as u64, Ordering::SeqCst)
                + bytes.len() as u64;
            self.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.in_flight
                .fetch_sub(bytes.len() as u64, Ordering::SeqCst);
            if self.fail_key.as_deref() == Some(key) {
                return Err(Error::Store {
                    op: "put",
                    key: key.into(),
                    cause: std::io::Error::other("refused by the test"),
                });
            }
            self.inner.put_if_absent(key, bytes)
        }
        fn size(&self, key: &str) -> Result<Option<u64>> {
            self.inner.size(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn location(&self) -> String {
            "slow".into()
        }
    }

    fn slow(fail_key: Option<&str>) -> Arc<Slow> {
        Arc::new(Slow {
            inner: MemoryStore::new(),
            in_flight: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            fail_key: fail_key.map(str::to_string),
        })
    }

    fn id(i: u32) -> ChunkId {
        crate::id::Hash::of(&i.to_le_bytes())
    }

    fn run(store: &Slow, threads: usize, budget: u64, objects: u32) -> Result<Outcome> {
        let up = Uploads::new(store, budget);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| up.run());
            }
            for i in 0..objects {
                if up
                    .push(format!("k{i}"), id(i), vec![i as u8; 1000], i % 2 == 0)
                    .is_err()
                {
                    break;
                }
            }
            up.close();
        });
        up.finish()
    }

    #[test]
    fn bytes_in_flight_stay_within_the_budget_whatever_the_thread_count() {
        let store = slow(None);
        let out = run(&store, 32, 5000, 200).unwrap();
        assert_eq!(out.new_chunks, 200);
        assert_eq!(out.new_bytes, 200_000);
        let peak = store.peak.load(Ordering::SeqCst);
        assert!(peak <= 5000, "{peak} bytes were in flight at once");
        assert!(peak >= 2000, "puts never overlapped ({peak})");
        assert_eq!(store.inner.list("").unwrap().len(), 200);
    }

    #[test]
    fn an_existing_object_of_another_size_is_reported_with_its_size() {
        let store = slow(None);
        store.inner.put_if_absent("k3", &[7; 10]).unwrap();
        let out = run(&store, 4, 1 << 20, 10).unwrap();
        assert_eq!(out.new_chunks, 9);
        assert_eq!(out.sizes, HashMap::from([(id(3), 10)]));
        assert_eq!(store.inner.get("k3", 100).unwrap(), vec![7; 10]);
    }

    #[test]
    fn the_first_failure_stops_every_worker_and_is_what_finish_returns() {
        let store = slow(Some("k5"));
        let err = run(&store, 4, 3000, 10_000).unwrap_err();
        assert!(err.to_string().contains("refused by the test"), "{err}");
        // Stopped early: not every object was put.
        assert!(store.inner.list("").unwrap().len() < 10_000);
    }
}
