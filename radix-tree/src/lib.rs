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
//! # Example
//!
//! A cache from token ids to KV slot ids, with a page of one token and LRU eviction: two prompts
//! share a prefix, a third reuses it while it runs, and eviction then frees what is unlocked.
//!
//! ```
//! use radix_tree::{RadixCache, RadixKey};
//!
//! let mut cache: RadixCache<u32> = RadixCache::new(1);
//!
//! // Two prompts sharing the prefix [1, 2, 3]. The second insert finds that prefix stored:
//! // `prefix_len` is 3, so the caller still owns (and must free) its slots 20, 21 and 22.
//! let a = RadixKey::from_tokens(vec![1, 2, 3, 4, 5]);
//! assert_eq!(cache.insert(&a, &[10, 11, 12, 13, 14])?.prefix_len, 0);
//! let b = RadixKey::from_tokens(vec![1, 2, 3, 7]);
//! assert_eq!(cache.insert(&b, &[20, 21, 22, 23])?.prefix_len, 3);
//! assert_eq!(cache.total_size(), 6, "[1, 2, 3] is stored once");
//!
//! // A third prompt reuses the longest stored prefix, [1, 2, 3, 4], with the tree's slots.
//! let hit = cache.match_prefix(&RadixKey::from_tokens(vec![1, 2, 3, 4, 9]));
//! assert_eq!(hit.values, vec![10, 11, 12, 13]);
//!
//! // While that request runs it locks its prefix, which eviction then leaves alone: only the
//! // unlocked leaves [5] and [7] go, and the caller frees the slots they return.
//! cache.inc_lock_ref(hit.last_node)?;
//! assert_eq!((cache.evictable_size(), cache.protected_size()), (2, 4));
//! let mut freed = cache.evict(100);
//! freed.sort();
//! assert_eq!(freed, vec![14, 23]);
//!
//! // Once it finishes and unlocks, the prefix becomes evictable too.
//! cache.dec_lock_ref(hit.last_node)?;
//! assert_eq!((cache.evictable_size(), cache.protected_size()), (4, 0));
//! assert_eq!(cache.evict(4).len(), 4);
//! assert_eq!(cache.total_size(), 0);
//! cache.check_integrity()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! * `tree/`: [`RadixCache`] itself, one file per concern (storage, child index, match, insert,
//!   locks, eviction, integrity check); `tree/mod.rs` lists them.
//! * `key.rs`: [`RadixKey`], [`KeyRef`] and [`Namespace`].
//! * `namespaces.rs`: the reference-counted table that interns namespaces into node ids.
//! * `policy.rs`: [`EvictionPolicy`] and the [`EvictionStrategy`] trait.
//! * `dump.rs`: [`TreeSnapshot`] and the text and JSON dumps.
//! * `error.rs`: [`RadixError`] and [`IntegrityError`].

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
pub use tree::{CacheStats, InsertOutcome, MatchResult, NodeId, PrefixPath, RadixCache};
