//! Eviction: the set of unlocked leaves ranked by the eviction strategy, the access statistics
//! that keep those ranks current, and SGLang's `evict`.

use super::{RadixCache, ROOT};

impl<V: Copy> RadixCache<V> {
    /// Evicts whole unlocked leaves, lowest strategy rank first, until at least `num_tokens`
    /// tokens are gone or nothing is evictable. A parent left childless and unlocked becomes a
    /// candidate in the same call. Returns the evicted values (may exceed `num_tokens`, since a
    /// leaf goes whole); the caller frees them.
    pub fn evict(&mut self, num_tokens: usize) -> Vec<V> {
        let mut out = Vec::new();
        self.evict_into(num_tokens, &mut out);
        out
    }

    /// Like [`RadixCache::evict`], appending to `out`; returns the number of tokens evicted.
    pub fn evict_into(&mut self, num_tokens: usize, out: &mut Vec<V>) -> usize {
        let mut evicted = 0;
        while evicted < num_tokens {
            let Some((_, idx)) = self.evictable.pop_first() else {
                break;
            };
            self.nodes[idx as usize].evict_key = None;
            out.extend_from_slice(self.value_of(idx));
            let node = &self.nodes[idx as usize];
            let (len, parent) = (node.len, node.parent);
            evicted += len;
            self.garbage += len;
            self.evictable_size -= len;
            self.detach_child(parent, idx);
            self.free_node(idx);
            self.refresh_leaf(parent);
            self.stats.nodes_evicted += 1;
        }
        self.stats.tokens_evicted += evicted as u64;
        self.maybe_compact();
        evicted
    }

    /// Puts a node into, or takes it out of, the evictable-leaf set as its state requires.
    pub(super) fn refresh_leaf(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        let should = idx != ROOT && node.live && node.lock_ref == 0 && node.children.is_empty();
        match (should, node.evict_key) {
            (true, None) => {
                let key = self.strategy.key(&node.stats);
                self.nodes[idx as usize].evict_key = Some(key);
                self.evictable.insert((key, idx));
            }
            (false, Some(key)) => {
                self.evictable.remove(&(key, idx));
                self.nodes[idx as usize].evict_key = None;
            }
            _ => {}
        }
    }

    /// Records an access; keeps the node's rank in the evictable set current.
    pub(super) fn touch(&mut self, idx: u32, now: u64, hit: bool, priority: Option<i64>) {
        let node = &mut self.nodes[idx as usize];
        node.stats.last_access = now;
        if hit {
            node.stats.hit_count += 1;
        }
        if let Some(p) = priority {
            node.stats.priority = node.stats.priority.max(p);
        }
        if let Some(old) = node.evict_key {
            let new = self.strategy.key(&node.stats);
            if new != old {
                node.evict_key = Some(new);
                self.evictable.remove(&(old, idx));
                self.evictable.insert((new, idx));
            }
        }
    }
}
