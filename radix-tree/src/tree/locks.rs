//! Locks: SGLang's `inc_lock_ref` / `dec_lock_ref`, which protect a running request's prefix
//! from eviction and move its tokens between the evictable and protected sizes.

use super::{NodeId, RadixCache, ROOT};
use crate::error::RadixError;

impl<V: Copy> RadixCache<V> {
    /// Takes one lock on `id` and each ancestor (SGLang's `inc_lock_ref`); returns how many
    /// tokens moved from evictable to protected. Locking the root is a no-op.
    pub fn inc_lock_ref(&mut self, id: NodeId) -> Result<usize, RadixError> {
        let mut idx = self.live_index(id)?;
        if idx == ROOT {
            return Ok(0);
        }
        self.nodes[idx as usize].direct_locks += 1;
        let mut moved = 0;
        while idx != ROOT {
            let node = &mut self.nodes[idx as usize];
            if node.lock_ref == 0 {
                moved += node.len;
            }
            node.lock_ref += 1;
            let parent = node.parent;
            self.refresh_leaf(idx);
            idx = parent;
        }
        self.evictable_size -= moved;
        self.protected_size += moved;
        Ok(moved)
    }

    /// Releases one lock taken by [`RadixCache::inc_lock_ref`] on `id`; returns how many tokens
    /// became evictable. Releasing a lock that `id` does not hold is
    /// [`RadixError::UnbalancedUnlock`] and changes nothing.
    pub fn dec_lock_ref(&mut self, id: NodeId) -> Result<usize, RadixError> {
        let mut idx = self.live_index(id)?;
        if idx == ROOT {
            return Ok(0);
        }
        if self.nodes[idx as usize].direct_locks == 0 {
            return Err(RadixError::UnbalancedUnlock(id));
        }
        self.nodes[idx as usize].direct_locks -= 1;
        let mut moved = 0;
        while idx != ROOT {
            let node = &mut self.nodes[idx as usize];
            node.lock_ref -= 1;
            if node.lock_ref == 0 {
                moved += node.len;
            }
            let parent = node.parent;
            self.refresh_leaf(idx);
            idx = parent;
        }
        self.evictable_size += moved;
        self.protected_size -= moved;
        Ok(moved)
    }
}
