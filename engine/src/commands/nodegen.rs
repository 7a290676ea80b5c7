//! Generated ICON node data directories, written by a real LSM engine.
//!
//! Benchmarks and tests need data that behaves like a P-Rep node's:
//! immutable ~2 MiB table files that flushes create and compactions delete,
//! an append-only write-ahead log, MANIFEST and CURRENT files that change.
//! RocksDB (configured like LevelDB: 4 MiB memtable, 2 MiB tables, snappy)
//! writes exactly those, in the ICON layout:
//!
//! ```text
//! loopchain/.score_data/db/{icon_dex,iiss,meta,rc}   state DBs
//! loopchain/.score_data/score/cx<40 hex>             contract state DBs
//! loopchain/.storage/db_<IP>:7100_icon_dex           block DB
//! ```
//!
//! The content is deterministic by seed and height: block `h` is generated
//! from `(seed, h)` alone, so two runs advance to the same logical state
//! (file boundaries may differ, as compaction timing does on a real node).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rocksdb::{Options, WriteBatch, DB};

use crate::error::{Error, Result};

const STATE_DBS: [&str; 4] = ["icon_dex", "iiss", "meta", "rc"];
const SCORES: usize = 4;
const HEIGHT_KEY: &[u8] = b"blocksnap-nodegen:height";
const SEED_KEY: &[u8] = b"blocksnap-nodegen:seed";

/// A generated node: its databases open for writing.
pub struct Node {
    root: PathBuf,
    seed: u64,
    height: u64,
    block_db: DB,
    state: Vec<DB>,
    scores: Vec<DB>,
}

fn db_err(path: &Path) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
    move |e| Error::Io {
        op: "open database",
        path: path.to_path_buf(),
        cause: std::io::Error::other(e.into_string()),
    }
}

fn leveldb_like() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(4 << 20);
    o.set_target_file_size_base(2 << 20);
    o.set_max_bytes_for_level_base(10 << 20);
    o.set_level_zero_file_num_compaction_trigger(4);
    o.set_compression_type(rocksdb::DBCompressionType::Snappy);
    o.set_max_background_jobs(2);
    o.set_keep_log_file_num(2);
    o
}

/// The block DB's directory name for a node address.
pub fn block_db_name(ip: Ipv4Addr) -> String {
    format!("db_{ip}:7100_icon_dex")
}

impl Node {
    /// Creates the node's databases under `root` (the `loopchain`
    /// directory), or opens them when they exist.
    pub fn open(root: &Path, ip: Ipv4Addr, seed: u64) -> Result<Node> {
        let opts = leveldb_like();
        let storage = root.join(".storage").join(block_db_name(ip));
        std::fs::create_dir_all(root.join(".storage")).map_err(Error::io("create", root))?;
        let block_db = DB::open(&opts, &storage).map_err(db_err(&storage))?;
        let mut state = Vec::new();
        for name in STATE_DBS {
            let p = root.join(".score_data/db").join(name);
            std::fs::create_dir_all(p.parent().expect("has parent"))
                .map_err(Error::io("create", &p))?;
            state.push(DB::open(&opts, &p).map_err(db_err(&p))?);
        }
        let mut scores = Vec::new();
        for i in 0..SCORES {
            let addr = blake3::hash(format!("score-{seed}-{i}").as_bytes()).to_hex();
            let p = root
                .join(".score_data/score")
                .join(format!("cx{}", &addr[..40]));
            std::fs::create_dir_all(p.parent().expect("has parent"))
                .map_err(Error::io("create", &p))?;
            scores.push(DB::open(&opts, &p).map_err(db_err(&p))?);
        }
        let read_u64 = |key: &[u8]| -> Result<Option<u64>> {
            Ok(block_db
                .get(key)
                .map_err(db_err(&storage))?
                .and_then(|v| v.try_into().ok().map(u64::from_le_bytes)))
        };
        let height = read_u64(HEIGHT_KEY)?.unwrap_or(0);
        let seed = read_u64(SEED_KEY)?.unwrap_or(seed);
        block_db
            .put(SEED_KEY, seed.to_le_bytes())
            .map_err(db_err(&storage))?;
        Ok(Node {
            root: root.to_path_buf(),
            seed,
            height,
            block_db,
            state,
            scores,
        })
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Appends `blocks` blocks and the state changes they make.
    pub fn advance(&mut self, blocks: u64) -> Result<()> {
        for _ in 0..blocks {
            self.height += 1;
            self.write_block(self.height)?;
        }
        Ok(())
    }

    /// Rewrites `keys` state entries chosen uniformly over each state
    /// database's whole key range (not only the hot set): what a node's
    /// compactions do to old tables over an hour, so that a share of the
    /// table files is replaced by new ones.
    pub fn churn(&mut self, keys: u64) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ self.height ^ 0xC4E1);
        let space = (self.height * 4).max(16) * 5;
        for db in 0..self.state.len() {
            let mut batch = WriteBatch::default();
            for _ in 0..keys / self.state.len() as u64 {
                let key = format!("state:{:016x}", rng.next_u64() % space).into_bytes();
                batch.put(key, state_value(&mut rng));
            }
            self.state[db].write(batch).map_err(db_err(&self.root))?;
        }
        Ok(())
    }

    /// Advances until the data directory holds at least `bytes` on disk.
    pub fn grow_to(&mut self, bytes: u64) -> Result<()> {
        while du(&self.root)? < bytes {
            self.advance(2000)?;
        }
        Ok(())
    }

    fn write_block(&mut self, h: u64) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ h.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let storage = self.root.join(".storage");

        // Block body: JSON with hex hashes and signatures, as loopchain
        // stores blocks (the state below is binary, as the score engine
        // stores it).
        let txs = 1 + skewed(&mut rng, 60);
        let mut body = format!(
            "{{\"height\":{h},\"prev\":\"{}\",\"txs\":[",
            hex(&mut rng, 32)
        );
        for i in 0..txs {
            body.push_str(&format!(
                "{{\"i\":{i},\"from\":\"hx{}\",\"to\":\"cx{}\",\"value\":\"0x{:x}\",\"sig\":\"{}\"}},",
                hex(&mut rng, 20),
                hex(&mut rng, 20),
                rng.next_u64(),
                hex(&mut rng, 65)
            ));
        }
        body.push_str("]}");
        let body = body.into_bytes();
        let hash = blake3::hash(&body);
        let mut batch = WriteBatch::default();
        batch.put(block_key(h), &body);
        batch.put(hash.as_bytes(), h.to_le_bytes());
        batch.put(HEIGHT_KEY, h.to_le_bytes());
        self.block_db.write(batch).map_err(db_err(&storage))?;

        // State: skewed overwrites of hot keys plus some new keys.
        let writes = [(0usize, 8 + txs), (1, 3), (2, 1), (3, 4)];
        for (db, n) in writes {
            let mut batch = WriteBatch::default();
            for _ in 0..n {
                let key = state_key(&mut rng, h * 4);
                batch.put(key, state_value(&mut rng));
            }
            self.state[db].write(batch).map_err(db_err(&self.root))?;
        }
        let score = (rng.next_u64() % SCORES as u64) as usize;
        let key = state_key(&mut rng, h);
        self.scores[score]
            .put(key, random(&mut rng, 48))
            .map_err(db_err(&self.root))?;
        Ok(())
    }
}

fn block_key(h: u64) -> Vec<u8> {
    let mut k = b"block:".to_vec();
    k.extend_from_slice(&h.to_be_bytes());
    k
}

/// Mostly small values, a few large: `max * u^3`.
fn skewed(rng: &mut ChaCha8Rng, max: u64) -> u64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (u * u * u * max as f64) as u64
}

/// 70 % overwrites concentrated on a hot set, 30 % fresh keys.
fn state_key(rng: &mut ChaCha8Rng, space: u64) -> Vec<u8> {
    let space = space.max(16);
    let idx = if rng.next_u64() % 10 < 7 {
        skewed(rng, space / 8 + 1)
    } else {
        space + rng.next_u64() % (space * 4)
    };
    format!("state:{idx:016x}").into_bytes()
}

fn hex(rng: &mut ChaCha8Rng, n: usize) -> String {
    hex::encode(random(rng, n))
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    b
}

/// A state value as a node stores it: an RLP-like list of a few small
/// integers (balances, nonces, with leading zero bytes) and hashes.
fn state_value(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = 40 + skewed(rng, 360) as usize;
    let mut v = Vec::with_capacity(len + 16);
    v.extend_from_slice(&[0xf8, len as u8]);
    while v.len() < len {
        if rng.next_u64().is_multiple_of(3) {
            v.push(0x88);
            v.extend_from_slice(&(rng.next_u64() >> (8 + rng.next_u64() % 48)).to_be_bytes());
        } else {
            v.push(0xa0);
            v.extend_from_slice(&random(rng, 32));
        }
    }
    v
}

/// Bytes of regular files under `root`.
pub fn du(root: &Path) -> Result<u64> {
    let mut total = 0;
    for e in walkdir::WalkDir::new(root) {
        let e = e.map_err(|e| Error::Io {
            op: "walk",
            path: root.to_path_buf(),
            cause: e.into(),
        })?;
        if e.file_type().is_file() {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}
