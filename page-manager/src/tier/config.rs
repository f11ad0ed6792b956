//! The disk tier's configuration, counters and errors.

use std::path::PathBuf;

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
