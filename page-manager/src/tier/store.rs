//! The disk store: the index of the block files under one directory and the handle the
//! scheduler thread uses, with a writer thread (`writer.rs`) fed by a byte-bounded queue.
//!
//! The scheduler thread looks blocks up and reads them; only the writer thread creates files,
//! and it alone enforces the size bound (deleting least recently used blocks). A read that
//! loses a race with that deletion is a miss, never an error.

use super::config::{TierConfig, TierError, TierStats};
use super::file;
use super::keys::BlockKey;
use super::writer::{restore, write_loop};
use radix_tree::Token;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TierError + '_ {
    move |source| TierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Default)]
pub(super) struct Index {
    /// Block → (file bytes, LRU stamp).
    pub(super) entries: HashMap<BlockKey, (u64, u64)>,
    pub(super) lru: BTreeSet<(u64, BlockKey)>,
    clock: u64,
    pub(super) bytes: u64,
    /// Blocks queued or being written.
    pub(super) pending: HashSet<BlockKey>,
    pub(super) stats: TierStats,
}

impl Index {
    pub(super) fn insert(&mut self, key: BlockKey, bytes: u64) {
        self.clock += 1;
        if let Some((old, stamp)) = self.entries.insert(key, (bytes, self.clock)) {
            self.lru.remove(&(stamp, key));
            self.bytes -= old;
        }
        self.lru.insert((self.clock, key));
        self.bytes += bytes;
    }

    pub(super) fn remove(&mut self, key: BlockKey) -> bool {
        match self.entries.remove(&key) {
            Some((bytes, stamp)) => {
                self.lru.remove(&(stamp, key));
                self.bytes -= bytes;
                true
            }
            None => false,
        }
    }

    fn touch(&mut self, key: BlockKey) {
        if let Some(e) = self.entries.get_mut(&key) {
            self.lru.remove(&(e.1, key));
            self.clock += 1;
            e.1 = self.clock;
            self.lru.insert((self.clock, key));
        }
    }
}

pub(super) enum Job {
    Write {
        key: BlockKey,
        tokens: Vec<Token>,
        kv: Vec<u8>,
    },
    Clear(crossbeam_channel::Sender<()>),
    Sync(crossbeam_channel::Sender<()>),
}

/// State shared by the tier's handle and its writer thread.
pub(super) struct Shared {
    pub(super) cfg: TierConfig,
    pub(super) blocks: PathBuf,
    pub(super) index: Mutex<Index>,
    pub(super) pending_bytes: AtomicUsize,
}

impl Shared {
    pub(super) fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent enough to keep serving:
        // every mutation completes before it can panic.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn path(&self, key: BlockKey) -> PathBuf {
        self.blocks.join(format!("{}.kv", key.hex()))
    }
}

/// A directory of K/V blocks with a size bound, written in the background.
pub struct DiskTier {
    shared: Arc<Shared>,
    jobs: Option<crossbeam_channel::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("config", &self.shared.cfg)
            .finish()
    }
}

impl DiskTier {
    /// Opens (or creates) the directory and restores its index from the block files there.
    /// Files that are damaged, half-written or from another fingerprint are deleted, with one
    /// warning that says how many.
    pub fn open(cfg: TierConfig) -> Result<Self, TierError> {
        if cfg.block_tokens == 0 || cfg.bytes_per_token == 0 {
            return Err(TierError::Config("blocks must hold tokens of K/V".into()));
        }
        let blocks = cfg.dir.join("blocks");
        std::fs::create_dir_all(&blocks).map_err(io_err(&blocks))?;
        let shared = Arc::new(Shared {
            blocks,
            index: Mutex::new(Index::default()),
            pending_bytes: AtomicUsize::new(0),
            cfg,
        });
        restore(&shared)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("radixserve-kv-writer".into())
            .spawn(move || write_loop(&worker, &rx))
            .map_err(io_err(&shared.cfg.dir))?;
        Ok(DiskTier {
            shared,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TierConfig {
        &self.shared.cfg
    }

    /// Whether the block is on disk.
    pub fn contains(&self, key: BlockKey) -> bool {
        self.shared.index().entries.contains_key(&key)
    }

    /// Claims the block for writing: false when it is on disk or already claimed.
    pub(crate) fn claim(&self, key: BlockKey) -> bool {
        let mut ix = self.shared.index();
        !ix.entries.contains_key(&key) && ix.pending.insert(key)
    }

    /// Whether the block is claimed (queued or being written).
    pub(crate) fn is_claimed(&self, key: BlockKey) -> bool {
        self.shared.index().pending.contains(&key)
    }

    /// Gives up a claim without writing.
    pub(crate) fn unclaim(&self, key: BlockKey) {
        self.shared.index().pending.remove(&key);
    }

    /// Queues a claimed block for the writer. Unless `wait`, a block that would take the queue
    /// past its bound is dropped (false). With `wait` it is always queued.
    pub(crate) fn submit(
        &self,
        key: BlockKey,
        tokens: Vec<Token>,
        kv: Vec<u8>,
        wait: bool,
    ) -> bool {
        let len = kv.len();
        let queued = self.shared.pending_bytes.fetch_add(len, Ordering::AcqRel);
        let sent = (wait || queued + len <= self.shared.cfg.queue_bytes)
            && self
                .jobs
                .as_ref()
                .is_some_and(|j| j.send(Job::Write { key, tokens, kv }).is_ok());
        if !sent {
            self.shared.pending_bytes.fetch_sub(len, Ordering::AcqRel);
            let mut ix = self.shared.index();
            ix.pending.remove(&key);
            ix.stats.writes_dropped += 1;
        }
        sent
    }

    /// Reads a block and checks it against its key and tokens; `None` when it is gone or
    /// damaged (a damaged file is deleted and counted).
    pub(crate) fn read(&self, key: BlockKey, tokens: &[Token]) -> Option<Vec<u8>> {
        let path = self.shared.path(key);
        let cfg = &self.shared.cfg;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                // Not found: the writer deleted it for the size bound after the lookup (and
                // took it out of the index itself).
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "reading a K/V block failed");
                }
                return None;
            }
        };
        match file::decode(&bytes, &cfg.fingerprint, key, tokens, cfg.bytes_per_token) {
            Ok(kv) => {
                let kv = kv.to_vec();
                let mut ix = self.shared.index();
                ix.touch(key);
                ix.stats.blocks_read += 1;
                ix.stats.bytes_read += bytes.len() as u64;
                Some(kv)
            }
            Err(fault) => {
                tracing::warn!(path = %path.display(), %fault, "discarding a damaged K/V block");
                let _ = std::fs::remove_file(&path);
                let mut ix = self.shared.index();
                ix.remove(key);
                ix.stats.corrupt_blocks += 1;
                None
            }
        }
    }

    /// Records one load of `tokens` tokens that took `seconds`.
    pub(crate) fn record_load(&self, tokens: usize, seconds: f64) {
        let mut ix = self.shared.index();
        ix.stats.loads += 1;
        ix.stats.hit_tokens += tokens as u64;
        ix.stats.load_seconds += seconds;
    }

    /// Waits until every queued block is written.
    pub fn sync(&self) {
        self.round_trip(Job::Sync);
    }

    /// Deletes every block (after the queued writes, which are deleted too).
    pub fn clear(&self) {
        self.round_trip(Job::Clear);
    }

    fn round_trip(&self, make: fn(crossbeam_channel::Sender<()>) -> Job) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.jobs.as_ref().is_some_and(|j| j.send(make(tx)).is_ok()) {
            // The writer answers every control job; it only stops when this handle drops.
            let _ = rx.recv();
        }
    }

    /// The counters.
    pub fn stats(&self) -> TierStats {
        let ix = self.shared.index();
        TierStats {
            blocks: ix.entries.len() as u64,
            bytes: ix.bytes,
            capacity_bytes: self.shared.cfg.capacity_bytes,
            pending_bytes: self.shared.pending_bytes.load(Ordering::Acquire) as u64,
            ..ix.stats
        }
    }

    /// Checks the index: its byte count is the sum of its entries, within the bound, and the
    /// LRU order lists exactly the entries.
    pub fn check(&self) -> Result<(), String> {
        let ix = self.shared.index();
        let sum: u64 = ix.entries.values().map(|e| e.0).sum();
        if sum != ix.bytes {
            return Err(format!(
                "disk index counts {} bytes, entries hold {sum}",
                ix.bytes
            ));
        }
        if ix.bytes > self.shared.cfg.capacity_bytes {
            return Err(format!(
                "{} bytes on disk exceed the bound {}",
                ix.bytes, self.shared.cfg.capacity_bytes
            ));
        }
        let listed = ix.lru.len() == ix.entries.len()
            && ix
                .lru
                .iter()
                .all(|(s, k)| ix.entries.get(k).is_some_and(|e| e.1 == *s));
        if !listed {
            return Err("disk LRU order and index disagree".into());
        }
        if let Some(k) = ix.pending.iter().find(|k| ix.entries.contains_key(k)) {
            return Err(format!("block {} is both on disk and pending", k.hex()));
        }
        Ok(())
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and stop.
        self.jobs = None;
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("the K/V writer thread had panicked");
            }
        }
    }
}
