//! The disk store: an index of block files under one directory, a writer thread fed by a
//! byte-bounded queue, and the restore scan that rebuilds the index after a restart.
//!
//! The scheduler thread looks blocks up and reads them; only the writer thread creates files,
//! and it alone enforces the size bound (deleting least recently used blocks). A read that
//! loses a race with that deletion is a miss, never an error.

use super::file;
use super::keys::BlockKey;
use radix_tree::Token;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// When cached blocks go to disk (SGLang's `--hicache-write-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritePolicy {
    /// As soon as a prefix enters the cache: a restart or an eviction loses nothing written.
    #[default]
    WriteThrough,
    /// Only when eviction removes a prefix from memory (and for all of them at shutdown).
    WriteBack,
}

impl std::str::FromStr for WritePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write_through" => Ok(WritePolicy::WriteThrough),
            "write_back" => Ok(WritePolicy::WriteBack),
            other => Err(format!(
                "unknown write policy {other:?} (supported: write_through, write_back)"
            )),
        }
    }
}

impl std::fmt::Display for WritePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WritePolicy::WriteThrough => "write_through",
            WritePolicy::WriteBack => "write_back",
        })
    }
}

/// How to open a [`DiskTier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierConfig {
    /// The directory (created if missing). One server per directory.
    pub dir: PathBuf,
    /// The most bytes of block files kept; least recently used blocks go first.
    pub capacity_bytes: u64,
    /// When blocks are written.
    pub policy: WritePolicy,
    /// Tokens per block: a multiple of the page size.
    pub block_tokens: usize,
    /// K/V bytes of one token in the executor's layout.
    pub bytes_per_token: usize,
    /// Identifies the model file, architecture, K/V dtype and page size: blocks written under
    /// another fingerprint are never used.
    pub fingerprint: [u8; 32],
    /// The most bytes waiting for the writer; a block beyond that is not written (counted as
    /// dropped), so a slow disk never holds up a forward or grows memory.
    pub queue_bytes: usize,
}

/// Counters of the disk tier (monotonic unless said otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TierStats {
    /// Blocks on disk now.
    pub blocks: u64,
    /// Bytes on disk now.
    pub bytes: u64,
    /// The size bound.
    pub capacity_bytes: u64,
    /// Blocks and bytes written.
    pub blocks_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Blocks and bytes read back into the pool.
    pub blocks_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Prompt tokens served from disk.
    pub hit_tokens: u64,
    /// Loads (one per admitted prefix that came from disk) and their total time.
    pub loads: u64,
    /// Seconds spent in those loads (reading, checking, copying into the pool).
    pub load_seconds: f64,
    /// Blocks not written because the queue was full, or that failed to write.
    pub writes_dropped: u64,
    /// Blocks deleted to keep within the size bound.
    pub blocks_evicted: u64,
    /// Block files found damaged or foreign (and deleted).
    pub corrupt_blocks: u64,
    /// Blocks found on disk when the tier was opened.
    pub restored_blocks: u64,
    /// Bytes waiting for the writer now.
    pub pending_bytes: u64,
}

/// Errors opening or clearing the tier.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// A directory operation failed.
    #[error("disk tier {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("disk tier: {0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TierError + '_ {
    move |source| TierError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Default)]
struct Index {
    /// Block → (file bytes, LRU stamp).
    entries: HashMap<BlockKey, (u64, u64)>,
    lru: BTreeSet<(u64, BlockKey)>,
    clock: u64,
    bytes: u64,
    /// Blocks queued or being written.
    pending: HashSet<BlockKey>,
    stats: TierStats,
}

impl Index {
    fn insert(&mut self, key: BlockKey, bytes: u64) {
        self.clock += 1;
        if let Some((old, stamp)) = self.entries.insert(key, (bytes, self.clock)) {
            self.lru.remove(&(stamp, key));
            self.bytes -= old;
        }
        self.lru.insert((self.clock, key));
        self.bytes += bytes;
    }

    fn remove(&mut self, key: BlockKey) -> bool {
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

enum Job {
    Write {
        key: BlockKey,
        tokens: Vec<Token>,
        kv: Vec<u8>,
    },
    Clear(crossbeam_channel::Sender<()>),
    Sync(crossbeam_channel::Sender<()>),
}

/// State shared by the tier's handle and its writer thread.
struct Shared {
    cfg: TierConfig,
    blocks: PathBuf,
    index: Mutex<Index>,
    pending_bytes: AtomicUsize,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent enough to keep serving:
        // every mutation completes before it can panic.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: BlockKey) -> PathBuf {
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

/// Rebuilds the index from the block files, oldest first; deletes what cannot be used.
fn restore(shared: &Shared) -> Result<(), TierError> {
    let cfg = &shared.cfg;
    let dir = std::fs::read_dir(&shared.blocks).map_err(io_err(&shared.blocks))?;
    let mut found: Vec<(SystemTime, BlockKey, u64)> = Vec::new();
    let mut discarded = 0u64;
    for entry in dir.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let key = name.strip_suffix(".kv").and_then(BlockKey::from_hex);
        let header = key.map(|_| file::read_header(&path, &cfg.fingerprint));
        match (key, header) {
            (Some(key), Some(Ok(Ok(h))))
                if h.key == key && h.bytes_per_token == cfg.bytes_per_token =>
            {
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, key, h.file_len()));
            }
            _ => {
                discarded += 1;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a stale file");
                }
            }
        }
    }
    found.sort();
    let mut ix = shared.index();
    for (_, key, bytes) in found {
        ix.insert(key, bytes);
    }
    ix.stats.restored_blocks = ix.entries.len() as u64;
    ix.stats.corrupt_blocks += discarded;
    drop(ix);
    if discarded > 0 {
        tracing::warn!(
            files = discarded,
            dir = %shared.blocks.display(),
            "discarded K/V files that were damaged, half-written or from another model or layout"
        );
    }
    let evicted = evict_to_bound(shared);
    let ix = shared.index();
    tracing::info!(
        blocks = ix.entries.len(),
        bytes = ix.bytes,
        evicted,
        "disk tier restored"
    );
    Ok(())
}

/// Deletes least recently used blocks until the bound holds; returns how many went.
fn evict_to_bound(shared: &Shared) -> u64 {
    let mut gone = 0;
    loop {
        let victim = {
            let mut ix = shared.index();
            if ix.bytes <= shared.cfg.capacity_bytes {
                break;
            }
            let Some(&(_, key)) = ix.lru.first() else {
                break;
            };
            ix.remove(key);
            ix.stats.blocks_evicted += 1;
            key
        };
        gone += 1;
        let path = shared.path(victim);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an evicted K/V block");
        }
    }
    gone
}

fn write_loop(shared: &Shared, jobs: &crossbeam_channel::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write { key, tokens, kv } => {
                write_block(shared, key, &tokens, &kv);
                shared.pending_bytes.fetch_sub(kv.len(), Ordering::AcqRel);
            }
            Job::Sync(done) => {
                let _ = done.send(());
            }
            Job::Clear(done) => {
                clear_all(shared);
                let _ = done.send(());
            }
        }
    }
}

fn write_block(shared: &Shared, key: BlockKey, tokens: &[Token], kv: &[u8]) {
    let bytes = file::encode(&shared.cfg.fingerprint, key, tokens, kv);
    let len = bytes.len() as u64;
    if len > shared.cfg.capacity_bytes {
        let mut ix = shared.index();
        ix.pending.remove(&key);
        ix.stats.writes_dropped += 1;
        return;
    }
    let path = shared.path(key);
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
    let mut ix = shared.index();
    ix.pending.remove(&key);
    match written {
        Ok(()) => {
            ix.insert(key, len);
            ix.stats.blocks_written += 1;
            ix.stats.bytes_written += len;
        }
        Err(e) => {
            ix.stats.writes_dropped += 1;
            drop(ix);
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "writing a K/V block failed");
            return;
        }
    }
    drop(ix);
    evict_to_bound(shared);
}

fn clear_all(shared: &Shared) {
    let keys: Vec<BlockKey> = {
        let mut ix = shared.index();
        let keys = ix.entries.keys().copied().collect();
        ix.entries.clear();
        ix.lru.clear();
        ix.bytes = 0;
        keys
    };
    for key in keys {
        let path = shared.path(key);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a K/V block");
        }
    }
}
