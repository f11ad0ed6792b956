//! The request-cache lifecycle: the one place that moves slots between the free list, the radix
//! tree and running requests (SGLang's `cache_unfinished_req`, `cache_finished_req`,
//! `alloc_for_extend` / `alloc_for_decode` and `flush_cache`).

use crate::allocator::SlotAllocator;
use crate::error::KvError;
use crate::req_to_token::{ReqToTokenPool, RowId};
use crate::Slot;
use radix_tree::{EvictionPolicy, KeyRef, Namespace, NodeId, RadixCache, Token};

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

/// Where every slot is, in tokens. `available + evictable + protected + private == capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    /// Allocatable slots.
    pub capacity: usize,
    /// Slots on the free list (including pages released in an open free group).
    pub available: usize,
    /// Slots in unlocked tree nodes.
    pub evictable: usize,
    /// Slots in locked tree nodes.
    pub protected: usize,
    /// Slots owned privately by requests (whole pages).
    pub private: usize,
    /// Rows in use.
    pub active_rows: usize,
}

/// Owns the radix tree, the slot allocator and the request table, and moves slots between them.
#[derive(Debug)]
pub struct KvCacheManager {
    tree: RadixCache<Slot>,
    alloc: SlotAllocator,
    table: ReqToTokenPool,
    rows: Vec<Option<RowInfo>>,
    active: usize,
}

impl KvCacheManager {
    /// A manager with an empty tree and every slot free.
    pub fn new(config: &ManagerConfig) -> Result<Self, KvError> {
        if config.max_rows == 0 || config.max_context == 0 {
            return Err(KvError::Config(
                "max_rows and max_context must be positive".into(),
            ));
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

    /// The longest cached prefix of `tokens` (whole pages; empty when the cache is disabled).
    /// May split a tree node; takes no lock.
    pub fn match_prefix(&mut self, namespace: &Namespace, tokens: &[Token]) -> PrefixHit {
        let m = self.tree.match_prefix(KeyRef::new(tokens, namespace));
        PrefixHit {
            len: m.len(),
            last_node: m.last_node,
        }
    }

    /// The prefix a request may reuse: SGLang matches at most `len - 1` tokens so that at least
    /// one token is computed (its logits are sampled), and no further than `max_prefix` (the
    /// first position whose input logprob is wanted).
    pub fn match_request_prefix(
        &mut self,
        namespace: &Namespace,
        tokens: &[Token],
        max_prefix: Option<usize>,
    ) -> PrefixHit {
        let mut limit = tokens.len().saturating_sub(1);
        if let Some(m) = max_prefix {
            limit = limit.min(m);
        }
        self.match_prefix(namespace, &tokens[..limit])
    }

    /// Admits a request with a prefix found by a match: locks the prefix, takes a row and writes
    /// the prefix's slots into it. The hit must be fresh (its node still in the tree).
    pub fn admit(&mut self, namespace: Namespace, hit: PrefixHit) -> Result<RowId, KvError> {
        let prefix = self.tree.path_values(hit.last_node)?;
        if prefix.len() > self.table.max_context() {
            return Err(KvError::ContextOverflow {
                row: RowId(u32::MAX),
                len: prefix.len(),
                max: self.table.max_context(),
            });
        }
        let row = self.table.alloc()?;
        self.tree.inc_lock_ref(hit.last_node)?;
        self.table.write(row, 0, &prefix)?;
        self.rows[row.0 as usize] = Some(RowInfo {
            namespace,
            kv_len: prefix.len(),
            protected_len: prefix.len(),
            prefix_len: prefix.len(),
            last_node: hit.last_node,
        });
        self.active += 1;
        Ok(row)
    }

    /// Makes `pages` pages free, evicting unlocked cached prefixes if the free list is short
    /// (only the shortfall). Fails without evicting anything if even eviction cannot make room.
    fn ensure_free_pages(&mut self, pages: usize) -> Result<(), KvError> {
        let free = self.alloc.free_pages();
        if free >= pages {
            return Ok(());
        }
        let p = self.page_size();
        let reachable = free + self.tree.evictable_size() / p;
        if reachable < pages {
            return Err(KvError::OutOfMemory {
                needed: pages * p,
                available: self.allocatable_size(),
            });
        }
        let evicted = self.tree.evict((pages - free) * p);
        tracing::debug!(tokens = evicted.len(), "evicted cached prefixes");
        self.alloc.free_now(&evicted)?;
        Ok(())
    }

    /// Evicts at least `tokens` unlocked cached tokens (whole leaves) back to the free list;
    /// returns how many went.
    pub fn evict(&mut self, tokens: usize) -> Result<usize, KvError> {
        let evicted = self.tree.evict(tokens);
        self.alloc.free_now(&evicted)?;
        Ok(evicted.len())
    }

    /// Allocates slots for the next `count` positions of a row (an extend or a prefill chunk),
    /// writes them into the row and returns them. Evicts cached prefixes if needed; on failure
    /// nothing changes.
    pub fn alloc_extend(&mut self, row: RowId, count: usize) -> Result<Vec<Slot>, KvError> {
        let kv_len = self.row(row)?.kv_len;
        let new_len = kv_len + count;
        if new_len > self.table.max_context() {
            return Err(KvError::ContextOverflow {
                row,
                len: new_len,
                max: self.table.max_context(),
            });
        }
        let pages = self.alloc.pages_needed(kv_len, new_len);
        self.ensure_free_pages(pages)?;
        let last_loc = match kv_len {
            0 => None,
            n => Some(self.table.read(row, n - 1, 1)?[0]),
        };
        let slots = self.alloc.alloc_extend(kv_len, new_len, last_loc)?;
        self.table.write(row, kv_len, &slots)?;
        self.row_mut(row)?.kv_len = new_len;
        Ok(slots)
    }

    /// Allocates the slot for one decoded token of a row.
    pub fn alloc_decode(&mut self, row: RowId) -> Result<Slot, KvError> {
        let slots = self.alloc_extend(row, 1)?;
        Ok(slots[0])
    }

    /// Pages needed to grow a row by `count` positions (what a decode-memory check asks).
    pub fn pages_needed(&self, row: RowId, count: usize) -> Result<usize, KvError> {
        let kv_len = self.row(row)?.kv_len;
        Ok(self.alloc.pages_needed(kv_len, kv_len + count))
    }

    fn check_tokens(&self, row: RowId, tokens: &[Token]) -> Result<(), KvError> {
        let kv_len = self.row(row)?.kv_len;
        if tokens.len() != kv_len {
            return Err(KvError::TokenCountMismatch {
                row,
                kv_len,
                tokens: tokens.len(),
            });
        }
        Ok(())
    }

    /// After a prefill or a prefill chunk (SGLang's `cache_unfinished_req`): inserts the row's
    /// computed tokens (`tokens`, one per KV position, whole pages only) into the tree, frees the
    /// slots the tree already had, points the row at the tree's slots, and moves the request's
    /// lock to the new last node. An unaligned tail stays private to the request.
    pub fn cache_unfinished(&mut self, row: RowId, tokens: &[Token]) -> Result<(), KvError> {
        self.check_tokens(row, tokens)?;
        if self.tree.is_disabled() {
            return Ok(());
        }
        let info = self.row(row)?.clone();
        let keys_len = self.floor_page(info.kv_len);
        let kv = self.table.read(row, 0, keys_len)?.to_vec();
        let out = self
            .tree
            .insert(KeyRef::new(&tokens[..keys_len], &info.namespace), &kv)?;
        if out.prefix_len > info.protected_len {
            self.alloc.free(&kv[info.protected_len..out.prefix_len])?;
        }
        let tree_slots = self.tree.path_values(out.last_node)?;
        self.table
            .write(row, info.protected_len, &tree_slots[info.protected_len..])?;
        self.tree.inc_lock_ref(out.last_node)?;
        self.tree.dec_lock_ref(info.last_node)?;
        let info = self.row_mut(row)?;
        info.protected_len = keys_len;
        info.last_node = out.last_node;
        Ok(())
    }

    /// On finish or abort (SGLang's `cache_finished_req`): inserts the row's committed tokens
    /// (whole pages) into the tree, frees duplicates and the private unaligned tail, releases the
    /// lock and the row. `tokens` holds one token per KV position of the row.
    pub fn cache_finished(&mut self, row: RowId, tokens: &[Token]) -> Result<(), KvError> {
        self.check_tokens(row, tokens)?;
        if self.tree.is_disabled() {
            return self.release(row);
        }
        let info = self.row(row)?.clone();
        let keys_len = self.floor_page(info.kv_len);
        let kv = self.table.read(row, 0, info.kv_len)?.to_vec();
        let out = self.tree.insert(
            KeyRef::new(&tokens[..keys_len], &info.namespace),
            &kv[..keys_len],
        )?;
        let mut to_free: Vec<Slot> = Vec::new();
        if out.prefix_len > info.protected_len {
            to_free.extend_from_slice(&kv[info.protected_len..out.prefix_len]);
        }
        to_free.extend_from_slice(&kv[keys_len..]);
        self.alloc.free(&to_free)?;
        self.tree.dec_lock_ref(info.last_node)?;
        self.drop_row(row)
    }

    /// Frees a request's private slots without inserting anything (retraction, or a request
    /// that fails before its KV is worth keeping); releases its lock and its row.
    pub fn release(&mut self, row: RowId) -> Result<(), KvError> {
        let info = self.row(row)?.clone();
        let private = self
            .table
            .read(row, info.protected_len, info.kv_len - info.protected_len)?
            .to_vec();
        self.alloc.free(&private)?;
        self.tree.dec_lock_ref(info.last_node)?;
        self.drop_row(row)
    }

    fn drop_row(&mut self, row: RowId) -> Result<(), KvError> {
        self.table.free(row)?;
        self.rows[row.0 as usize] = None;
        self.active -= 1;
        Ok(())
    }

    /// Empties the cache (SGLang's `flush_cache`): refused while any request holds KV.
    pub fn flush(&mut self) -> Result<(), KvError> {
        if self.active > 0 {
            return Err(KvError::Busy {
                active: self.active,
            });
        }
        self.tree.reset();
        self.alloc.clear();
        self.table.clear();
        Ok(())
    }

    /// Starts batching frees (see [`SlotAllocator::free_group_begin`]).
    pub fn free_group_begin(&mut self) {
        self.alloc.free_group_begin();
    }

    /// Ends a batch of frees.
    pub fn free_group_end(&mut self) {
        self.alloc.free_group_end();
    }

    /// The current accounting, without checks.
    pub fn accounting(&self) -> Accounting {
        let p = self.page_size();
        let free_pages = (1..=self.alloc.num_pages() as u32)
            .filter(|&pg| self.alloc.is_page_free(pg))
            .count();
        let private: usize = self
            .rows
            .iter()
            .flatten()
            .map(|r| r.kv_len.div_ceil(p) * p - r.protected_len)
            .sum();
        Accounting {
            capacity: self.capacity(),
            available: free_pages * p,
            evictable: self.tree.evictable_size(),
            protected: self.tree.protected_size(),
            private,
            active_rows: self.active,
        }
    }

    /// Checks that every page is in exactly one place (free list, tree, or one request's private
    /// range), that the token counts add up to the capacity, that each row's cached part points at
    /// the tree's slots, and the tree's own invariants. Returns the accounting when all hold.
    pub fn check_accounting(&self) -> Result<Accounting, KvError> {
        let fail = |m: String| Err(KvError::Accounting(m));
        self.tree
            .check_integrity()
            .map_err(|e| KvError::Accounting(e.to_string()))?;
        let p = self.page_size();
        let pages = self.alloc.num_pages();
        // 0 = unowned, 1 = free, 2 = tree, 3 = a request
        let mut owner = vec![0u8; pages + 1];
        let mut tree_slots_per_page = vec![0usize; pages + 1];
        for (pg, o) in owner.iter_mut().enumerate().skip(1) {
            if self.alloc.is_page_free(pg as u32) {
                *o = 1;
            }
        }
        let mut seen = vec![false; (pages + 1) * p];
        for slot in self.tree.values() {
            let pg = self.alloc.page_of(slot) as usize;
            if pg == 0 || pg > pages {
                return fail(format!("tree holds invalid slot {slot}"));
            }
            if std::mem::replace(&mut seen[slot as usize], true) {
                return fail(format!("slot {slot} is in the tree twice"));
            }
            if owner[pg] == 1 || owner[pg] == 3 {
                return fail(format!("page {pg} is in the tree and also free or private"));
            }
            owner[pg] = 2;
            tree_slots_per_page[pg] += 1;
        }
        if let Some(pg) = (1..=pages).find(|&pg| owner[pg] == 2 && tree_slots_per_page[pg] != p) {
            return fail(format!("tree holds part of page {pg}"));
        }
        let mut active = 0;
        for (i, info) in self.rows.iter().enumerate() {
            let Some(info) = info else { continue };
            active += 1;
            let row = RowId(i as u32);
            if !self.table.is_in_use(row) {
                return fail(format!("row {i} has state but is free in the table"));
            }
            if info.protected_len > info.kv_len || info.protected_len % p != 0 {
                return fail(format!(
                    "row {i}: protected {} of {}",
                    info.protected_len, info.kv_len
                ));
            }
            let slots = self.table.read(row, 0, info.kv_len)?;
            if !self.tree.is_disabled() {
                let cached = self.tree.path_values(info.last_node)?;
                if self.tree.lock_ref(info.last_node)? == 0 && info.last_node != self.tree.root() {
                    return fail(format!("row {i} holds no lock on its last node"));
                }
                if cached[..] != slots[..info.protected_len] {
                    return fail(format!(
                        "row {i}: cached part does not point at the tree's slots"
                    ));
                }
            }
            let mut last_page = None;
            for &slot in &slots[info.protected_len..] {
                let pg = self.alloc.page_of(slot) as usize;
                if pg == 0 || pg > pages {
                    return fail(format!("row {i} holds invalid slot {slot}"));
                }
                if std::mem::replace(&mut seen[slot as usize], true) {
                    return fail(format!("slot {slot} is owned twice (row {i})"));
                }
                if last_page != Some(pg) {
                    if owner[pg] != 0 {
                        return fail(format!("page {pg} of row {i} is also owned elsewhere"));
                    }
                    owner[pg] = 3;
                    last_page = Some(pg);
                }
            }
        }
        if active != self.active || self.table.available() + active != self.table.rows() {
            return fail(format!("{active} rows with state, {} counted", self.active));
        }
        if let Some(pg) = (1..=pages).find(|&pg| owner[pg] == 0) {
            return fail(format!("page {pg} is owned by nobody (leaked)"));
        }
        let acc = self.accounting();
        if acc.available + acc.evictable + acc.protected + acc.private != acc.capacity {
            return fail(format!("{acc:?} does not add up to the capacity"));
        }
        Ok(acc)
    }
}
