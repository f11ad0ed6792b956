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

mod allocator;
mod capacity;
mod error;
mod manager;
mod req_to_token;

pub use allocator::{AllocatorState, SlotAllocator};
pub use capacity::{KvCapacity, KvDims};
pub use error::KvError;
pub use manager::{Accounting, KvCacheManager, ManagerConfig, PrefixHit, RowInfo};
pub use req_to_token::{ReqToTokenPool, RowId};

/// A KV slot id: the index of one token's K/V in the executor's per-layer pools.
pub type Slot = u32;
