//! The disk tier: cached prefixes that outlive the pool (eviction) and the process (restart).
//!
//! SGLang's HiCache keeps evicted K/V in host memory and storage backends; radixserve keeps it
//! in a directory of block files. A block is a fixed run of tokens (a multiple of the page
//! size) keyed by a digest chained over the namespace and every token before it, as SGLang's
//! storage backends key pages ([`keys`]). Each block is in one of these states, which
//! [`crate::KvCacheManager`] moves it through:
//!
//! * **pool**: in the radix tree only;
//! * **writing**: claimed, its K/V copied out of the pool and queued for the writer;
//! * **disk**: in a block file, and possibly in the pool too (after a write-through, or after
//!   a load brought it back).
//!
//! Blocks are written when they enter the tree (`write_through`) or when eviction removes them
//! (`write_back`), and for everything in the tree at a graceful shutdown. A match that ends in
//! the pool continues block by block on disk; the blocks found are read, checked and copied
//! into freshly allocated slots before the prefill, then inserted into the tree.
//!
//! The radix tree does no I/O (it hands over the paths it evicts); the executor only copies
//! K/V between its pool and bytes ([`KvTransfer`]); this module owns the files.

mod config;
mod file;
pub(crate) mod keys;
mod store;
mod writer;

pub use config::{TierConfig, TierError, TierStats, WritePolicy};
pub use keys::{block_keys, namespace_digest, BlockKey};
pub use store::DiskTier;

use crate::Slot;

/// Tokens per block for a page size: the smallest multiple of the page that holds 16 tokens.
///
/// Small blocks lose little of a prefix (a trailing part block is never written: at most 15
/// tokens to recompute after a restart) and cost one small file each (368 KB for the default
/// model's f16 K/V); larger pages make larger blocks.
pub fn block_tokens_for(page_size: usize) -> usize {
    let p = page_size.max(1);
    16usize.div_ceil(p) * p
}

/// A copy between the executor's K/V pool and bytes failed.
#[derive(Debug, thiserror::Error)]
#[error("K/V copy failed: {0}")]
pub struct TransferError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Copies K/V between the executor's pool and bytes, in one fixed layout per token (the
/// executor's choice; blocks written by one layout are only read back by the same one, which
/// the tier's fingerprint guarantees).
pub trait KvTransfer {
    /// Bytes of K/V per token.
    fn kv_bytes_per_token(&self) -> usize;

    /// Appends the K/V of `slots`, token by token, to `out`.
    fn read_kv(&self, slots: &[Slot], out: &mut Vec<u8>) -> Result<(), TransferError>;

    /// Stores `data` (as [`KvTransfer::read_kv`] wrote it) into `slots`.
    fn write_kv(&mut self, slots: &[Slot], data: &[u8]) -> Result<(), TransferError>;
}
