//! Error types of the radix cache.

use crate::tree::NodeId;

/// Errors returned by mutating operations on a [`crate::RadixCache`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadixError {
    /// The node id does not name a live node (it was evicted, or the tree was reset).
    #[error("node {0:?} does not exist (evicted or reset)")]
    StaleNode(NodeId),
    /// `dec_lock_ref` was called on a node that holds no lock of its own.
    #[error("unbalanced unlock: node {0:?} holds no lock")]
    UnbalancedUnlock(NodeId),
    /// The values handed to `insert` are not one per token.
    #[error("insert needs one value per token: {tokens} tokens but {values} values")]
    LengthMismatch {
        /// Number of tokens in the key.
        tokens: usize,
        /// Number of values supplied.
        values: usize,
    },
}

/// The first violated invariant found by [`crate::RadixCache::check_integrity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("radix tree integrity violated: {0}")]
pub struct IntegrityError(pub String);
