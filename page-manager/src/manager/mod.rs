//! The request-cache lifecycle: the one place that moves slots between the free list, the radix
//! tree and running requests (SGLang's `cache_unfinished_req`, `cache_finished_req`,
//! `alloc_for_extend` / `alloc_for_decode` and `flush_cache`).
//!
//! [`KvCacheManager`]'s methods are spread over this module by concern:
//!
//! * this file: the configuration and per-request types, the struct, its constructor and
//!   read-only accessors;
//! * `lifecycle`: match, admit, allocate, `cache_unfinished` / `cache_finished`, release and
//!   flush;
//! * `accounting`: [`Accounting`] and [`KvCacheManager::check_accounting`], the leak check the
//!   tests run after every step;
//! * `tiers`: the disk tier below the pool (writing evicted or cached blocks, loading them
//!   back at admission, the shutdown snapshot).

mod accounting;
mod lifecycle;
mod tiers;

pub use accounting::Accounting;

use crate::allocator::SlotAllocator;
use crate::error::KvError;
use crate::req_to_token::{ReqToTokenPool, RowId};
use crate::Slot;
use radix_tree::{EvictionPolicy, Namespace, NodeId, RadixCache};

/// How to build a [`KvCacheManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// Tokens per KV page.
    pub page_size: usize,
    /// Allocatable pages (page 0 is reserved on top of these).
    pub num_pages: usize,
    /// Request rows: the most requests that can hold KV at once.
    pub max_rows: usize,
    /// The longest sequence (prompt plus output) a row can hold.
    pub max_context: usize,
    /// SGLang's `--disable-radix-cache`: nothing is shared between requests.
    pub disable_radix_cache: bool,
    /// Which cached prefixes go first under memory pressure.
    pub eviction: EvictionPolicy,
}

/// A prefix found in the tree for a request: its length and the node to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixHit {
    /// Matched tokens (whole pages).
    pub len: usize,
    /// The deepest matched node.
    pub last_node: NodeId,
}

/// The KV state of one admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowInfo {
    /// The request's cache namespace.
    pub namespace: Namespace,
    /// Positions of the row with allocated KV slots.
    pub kv_len: usize,
    /// Leading positions whose slots belong to the tree (SGLang's `cache_protected_len`).
    pub protected_len: usize,
    /// Tokens the request found in the cache when admitted.
    pub prefix_len: usize,
    /// The node this request holds its one lock on.
    pub last_node: NodeId,
}

/// Owns the radix tree, the slot allocator and the request table, and moves slots between them.
#[derive(Debug)]
pub struct KvCacheManager {
    tree: RadixCache<Slot>,
    alloc: SlotAllocator,
    table: ReqToTokenPool,
    rows: Vec<Option<RowInfo>>,
    active: usize,
    /// The disk tier, when one is attached.
    tier: Option<tiers::Tiering>,
}

impl KvCacheManager {
    /// A manager with an empty tree and every slot free.
    pub fn new(config: &ManagerConfig) -> Result<Self, KvError> {
        if config.max_rows == 0 || config.max_context == 0 {
            return Err(KvError::Config(
                "max_rows and max_context must be positive".into(),
            ));
        }
        if u32::try_from(config.max_rows).is_err() {
            return Err(KvError::Config(format!(
                "{} request rows exceed the row id range",
                config.max_rows
            )));
        }
        let alloc = SlotAllocator::new(config.num_pages, config.page_size)?;
        let tree = if config.disable_radix_cache {
            RadixCache::disabled(config.page_size)
        } else {
            RadixCache::with_strategy(config.page_size, config.eviction)
        };
        Ok(KvCacheManager {
            tree,
            alloc,
            table: ReqToTokenPool::new(config.max_rows, config.max_context),
            rows: vec![None; config.max_rows],
            active: 0,
            tier: None,
        })
    }

    /// The radix tree (read-only: every mutation goes through the manager).
    pub fn tree(&self) -> &RadixCache<Slot> {
        &self.tree
    }

    /// The slot allocator (read-only).
    pub fn allocator(&self) -> &SlotAllocator {
        &self.alloc
    }

    /// Tokens per page.
    pub fn page_size(&self) -> usize {
        self.alloc.page_size()
    }

    /// Allocatable slots.
    pub fn capacity(&self) -> usize {
        self.alloc.capacity()
    }

    /// Free slots.
    pub fn available_size(&self) -> usize {
        self.alloc.available_size()
    }

    /// Slots that allocation could obtain: free plus evictable cached.
    pub fn allocatable_size(&self) -> usize {
        self.alloc.available_size() + self.tree.evictable_size()
    }

    /// Rows in use.
    pub fn active_rows(&self) -> usize {
        self.active
    }

    /// Free request rows.
    pub fn free_rows(&self) -> usize {
        self.table.available()
    }

    /// The longest sequence a row can hold.
    pub fn max_context(&self) -> usize {
        self.table.max_context()
    }

    /// Whether the radix cache is disabled.
    pub fn is_cache_disabled(&self) -> bool {
        self.tree.is_disabled()
    }

    fn floor_page(&self, n: usize) -> usize {
        n - n % self.page_size()
    }

    fn row(&self, row: RowId) -> Result<&RowInfo, KvError> {
        self.rows
            .get(row.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(KvError::UnknownRow(row))
    }

    fn row_mut(&mut self, row: RowId) -> Result<&mut RowInfo, KvError> {
        self.rows
            .get_mut(row.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(KvError::UnknownRow(row))
    }

    /// The KV state of an admitted request.
    pub fn row_info(&self, row: RowId) -> Result<&RowInfo, KvError> {
        self.row(row)
    }

    /// The slots of positions `0..kv_len` of a row: what attention reads.
    pub fn row_slots(&self, row: RowId) -> Result<&[Slot], KvError> {
        let kv_len = self.row(row)?.kv_len;
        self.table.read(row, 0, kv_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_rows_than_row_ids_is_a_config_error() {
        let config = ManagerConfig {
            page_size: 1,
            num_pages: 4,
            max_rows: u32::MAX as usize + 1,
            max_context: 1,
            disable_radix_cache: false,
            eviction: EvictionPolicy::Lru,
        };
        assert!(matches!(
            KvCacheManager::new(&config),
            Err(KvError::Config(_))
        ));
    }
}
