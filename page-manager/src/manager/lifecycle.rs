//! The request lifecycle: matching and admitting a request, allocating its KV, caching it in
//! the tree after prefill and on finish, releasing it, and flushing the whole cache.

use super::{KvCacheManager, PrefixHit, RowInfo};
use crate::error::KvError;
use crate::req_to_token::RowId;
use crate::Slot;
use radix_tree::{KeyRef, Namespace, Token};

impl KvCacheManager {
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
        let limit = Self::prefix_limit(tokens.len(), max_prefix);
        self.match_prefix(namespace, &tokens[..limit])
    }

    /// How much of a `len`-token request may come from the cache: `len - 1` tokens (one is
    /// computed for its logits), and no more than `max_prefix`.
    pub fn prefix_limit(len: usize, max_prefix: Option<usize>) -> usize {
        let limit = len.saturating_sub(1);
        max_prefix.map_or(limit, |m| limit.min(m))
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
    pub(super) fn ensure_free_pages(&mut self, pages: usize) -> Result<(), KvError> {
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
        let evicted = self.evict_tree((pages - free) * p);
        tracing::debug!(tokens = evicted.len(), "evicted cached prefixes");
        self.alloc.free_now(&evicted)?;
        Ok(())
    }

    /// Evicts at least `tokens` unlocked cached tokens (whole leaves) back to the free list;
    /// returns how many went.
    pub fn evict(&mut self, tokens: usize) -> Result<usize, KvError> {
        let evicted = self.evict_tree(tokens);
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
        self.write_through(&info, &tokens[..keys_len], out.last_node)?;
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
        self.write_through(&info, &tokens[..keys_len], out.last_node)?;
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

    /// Empties the cache (SGLang's `flush_cache`), every tier of it: refused while any
    /// request holds KV.
    pub fn flush(&mut self) -> Result<(), KvError> {
        if self.active > 0 {
            return Err(KvError::Busy {
                active: self.active,
            });
        }
        self.tree.reset();
        self.alloc.clear();
        self.table.clear();
        self.flush_tier();
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
}
