//! Errors of the KV bookkeeping.

use crate::req_to_token::RowId;
use crate::Slot;

/// Errors from the allocator, the request table and the lifecycle manager. Every error leaves
/// the structures as they were before the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not enough free slots, even after evicting every unlocked cached prefix.
    #[error("out of KV memory: need {needed} slots, {available} available")]
    OutOfMemory {
        /// Slots asked for (rounded to whole pages).
        needed: usize,
        /// Slots that were available.
        available: usize,
    },
    /// Every request row is in use.
    #[error("no free request row (all {rows} in use)")]
    NoFreeRow {
        /// Number of rows in the table.
        rows: usize,
    },
    /// The row is not allocated.
    #[error("request row {0:?} is not in use")]
    UnknownRow(RowId),
    /// A write or allocation would run past the row's context length.
    #[error("request row {row:?}: length {len} exceeds the context length {max}")]
    ContextOverflow {
        /// The row.
        row: RowId,
        /// The length asked for.
        len: usize,
        /// The row capacity.
        max: usize,
    },
    /// A slot outside the pool, or the reserved slot 0, was handed back.
    #[error("slot {0} is not an allocatable slot")]
    InvalidSlot(Slot),
    /// A slot whose page is already free was handed back.
    #[error("slot {0} is already free (double free)")]
    DoubleFree(Slot),
    /// `alloc` on a paged allocator with a count that is not a multiple of the page size.
    #[error("allocation of {count} slots is not a multiple of the page size {page_size}")]
    Unaligned {
        /// Slots asked for.
        count: usize,
        /// The page size.
        page_size: usize,
    },
    /// Token ids passed for a row do not match its KV length.
    #[error("request row {row:?} holds KV for {kv_len} tokens but {tokens} tokens were given")]
    TokenCountMismatch {
        /// The row.
        row: RowId,
        /// Tokens with allocated KV in the row.
        kv_len: usize,
        /// Tokens given.
        tokens: usize,
    },
    /// `flush` while requests still hold KV.
    #[error("cannot flush the cache while {active} requests hold KV")]
    Busy {
        /// Rows in use.
        active: usize,
    },
    /// A radix-tree operation failed (a stale node handle, an unbalanced unlock).
    #[error(transparent)]
    Radix(#[from] radix_tree::RadixError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An accounting invariant does not hold.
    #[error("KV accounting violated: {0}")]
    Accounting(String),
}
