//! A radix prefix cache in the manner of SGLang's `RadixCache` (RadixAttention).
//!
//! The tree maps token sequences to per-token values (KV slot ids in a serving engine), so that
//! requests sharing a prefix can reuse the values of that prefix instead of recomputing them.
//! It knows nothing of models or tensors: values are any `Copy` type, and `V = ()` makes a tree
//! that only tracks token structure (for simulation and in-batch prefix deduplication).
//!
//! Semantics follow SGLang's reference behaviour:
//! * [`RadixCache::match_prefix`] returns the values of the longest stored prefix (truncated to
//!   whole pages when `page_size > 1`); it may split a node but never changes sizes, and takes no lock.
//! * [`RadixCache::insert`] returns how many leading tokens were already present: the caller still
//!   owns its values for that range (duplicates) and must free them.
//! * [`RadixCache::inc_lock_ref`] / [`RadixCache::dec_lock_ref`] walk to the root; locked nodes are
//!   never evicted; the root is permanently locked.
//! * [`RadixCache::evict`] removes whole unlocked leaves in the order of a pluggable
//!   [`EvictionStrategy`] and returns their values, at logarithmic cost per evicted leaf.
//! * Keys carry a typed [`Namespace`] (SGLang's `extra_key`: cache salt, adapter id): equal tokens
//!   in different namespaces never share a node. A namespace is held only while it owns nodes
//!   (see [`RadixCache::num_namespaces`]), so client-supplied salts cannot grow memory unboundedly.
//!
//! ```
//! use radix_tree::{RadixCache, RadixKey};
//!
//! let mut cache: RadixCache<u32> = RadixCache::new(1);
//! let key = RadixKey::from_tokens(vec![1, 2, 3]);
//! assert_eq!(cache.insert(&key, &[10, 20, 30]).unwrap().prefix_len, 0);
//! let hit = cache.match_prefix(&RadixKey::from_tokens(vec![1, 2, 9]));
//! assert_eq!(hit.values, vec![10, 20]);
//! assert_eq!(cache.total_size(), 3);
//! cache.check_integrity().unwrap();
//! ```

mod dump;
mod error;
mod key;
mod namespaces;
mod policy;
mod tree;

pub use dump::{NodeSnapshot, TreeSnapshot};
pub use error::{IntegrityError, RadixError};
pub use key::{KeyRef, Namespace, RadixKey, Token};
pub use policy::{EvictionKey, EvictionPolicy, EvictionStrategy, NodeStats, UnknownPolicy};
pub use tree::{CacheStats, InsertOutcome, MatchResult, NodeId, RadixCache};
