//! Paged KV-cache bookkeeping in the manner of SGLang's `mem_cache` package, without tensors.
//!
//! * [`SlotAllocator`]: the token-slot / page allocator (slot and page 0 reserved as a padding
//!   target), with extend and decode allocation, whole-page frees, batched frees and backup/restore.
//! * [`ReqToTokenPool`]: one row of slot ids per running request.
//! * [`KvCapacity`]: how many slots a memory budget buys for given model dimensions.
//! * [`KvCacheManager`]: the request-cache lifecycle over a [`radix_tree::RadixCache`]: match and
//!   lock a prefix, allocate for extend and decode (evicting unlocked tree leaves when short),
//!   `cache_unfinished` / `cache_finished`, retraction release, flush, and exact accounting.
//!
//! The executor owns the physical K/V storage; everything here is indices into it.
//!
//! # Example
//!
//! Size a pool from a memory budget, then take one request through admission, prefill caching
//! and finish, with the accounting checked at the end.
//!
//! ```
//! use page_manager::{KvCacheManager, KvCapacity, KvDims, KvError, ManagerConfig};
//! use radix_tree::{EvictionPolicy, Namespace};
//!
//! // 128 bytes of K/V per token (2 layers x 2 heads x 8 dims x 2 bytes, K and V): 1 MiB buys
//! // 2048 pages of 4 tokens, one of which is the reserved padding page.
//! let dims = KvDims { layers: 2, kv_heads: 2, head_dim: 8, dtype_bytes: 2 };
//! let cap = KvCapacity::plan(dims, 1 << 20, 4)?;
//! assert_eq!((cap.num_pages, cap.num_slots), (2047, 2047 * 4));
//!
//! let mut kv = KvCacheManager::new(&ManagerConfig {
//!     page_size: cap.page_size,
//!     num_pages: cap.num_pages,
//!     max_rows: 8,
//!     max_context: 256,
//!     disable_radix_cache: false,
//!     eviction: EvictionPolicy::Lru,
//! })?;
//!
//! // Admission: match the longest cached prefix (none yet), lock it and take a row.
//! let ns = Namespace::shared();
//! let prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
//! let hit = kv.match_request_prefix(&ns, &prompt, None);
//! assert_eq!(hit.len, 0);
//! let row = kv.admit(ns.clone(), hit)?;
//!
//! // Prefill: slots for the uncached part, then the prompt's two whole pages go into the tree
//! // (locked by this request); the 2-token tail stays private to it.
//! kv.alloc_extend(row, prompt.len() - hit.len)?;
//! kv.cache_unfinished(row, &prompt)?;
//! assert_eq!((kv.tree().protected_size(), kv.row_info(row)?.protected_len), (8, 8));
//!
//! // Decode one token, then finish: the tree keeps the whole pages, the tail is freed.
//! kv.alloc_decode(row)?;
//! let mut tokens = prompt.to_vec();
//! tokens.push(11);
//! kv.cache_finished(row, &tokens)?;
//!
//! // Every slot is free or cached, nothing is leaked, and no request holds a lock.
//! let acc = kv.check_accounting()?;
//! assert_eq!((acc.active_rows, acc.protected, acc.private), (0, 0, 0));
//! assert_eq!(acc.available + acc.evictable, acc.capacity);
//! assert_eq!(acc.evictable, 8);
//!
//! // The next request with this prompt reuses the cached pages.
//! assert_eq!(kv.match_request_prefix(&ns, &prompt, None).len, 8);
//! # Ok::<(), KvError>(())
//! ```
//!
//! # Layout
//!
//! * `allocator.rs`: [`SlotAllocator`]; `req_to_token.rs`: [`ReqToTokenPool`];
//!   `capacity.rs`: [`KvCapacity`]; `error.rs`: [`KvError`].
//! * `manager/`: [`KvCacheManager`], split into its types and accessors (`mod.rs`), the request
//!   lifecycle (`lifecycle.rs`), the accounting check (`accounting.rs`) and the disk tier's
//!   part of the lifecycle (`tiers.rs`).
//! * `tier/`: the disk tier ([`tier::DiskTier`]): block keys, the block file format, the
//!   store with its writer thread, and the [`tier::KvTransfer`] seam to the executor.

mod allocator;
mod capacity;
mod error;
mod manager;
mod req_to_token;
pub mod tier;

pub use allocator::{AllocatorState, SlotAllocator};
pub use capacity::{KvCapacity, KvDims};
pub use error::KvError;
pub use manager::{Accounting, KvCacheManager, ManagerConfig, PrefixHit, RowInfo};
pub use req_to_token::{ReqToTokenPool, RowId};

/// A KV slot id: the index of one token's K/V in the executor's per-layer pools.
pub type Slot = u32;
