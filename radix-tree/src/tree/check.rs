//! [`RadixCache::check_integrity`]: a full recount of the tree against its own bookkeeping, run
//! by the tests after every operation. Each part reports the first violation it finds, in a
//! fixed order, so a failing test always names the same invariant.

use super::{RadixCache, ROOT};
use crate::error::IntegrityError;
use crate::namespaces::SHARED;

/// What a walk of the tree counts, to compare with the cache's own counters at the end.
#[derive(Debug, Default)]
struct Recount {
    /// Tokens in unlocked nodes.
    evictable: usize,
    /// Tokens in locked nodes.
    protected: usize,
    /// Nodes found in the evictable-leaf set.
    leaves: usize,
    /// Nodes reachable from the root, the root included.
    reached: usize,
    /// Arena tokens referenced by reachable nodes.
    arena_live: usize,
}

/// An integrity failure with the given message.
fn fail<T>(msg: String) -> Result<T, IntegrityError> {
    Err(IntegrityError(msg))
}

impl<V: Copy> RadixCache<V> {
    /// Verifies every structural invariant and reports the first violation: child keys, parent
    /// links, value shape, lock counts, size accounting, the evictable-leaf set, namespaces, page
    /// alignment, and that every arena slot is either reachable or free.
    pub fn check_integrity(&self) -> Result<(), IntegrityError> {
        let root = &self.nodes[ROOT as usize];
        if !root.live || root.lock_ref != 1 || root.len != 0 {
            return fail("root must be live, hold lock_ref 1 and have an empty key".into());
        }
        let mut count = Recount {
            reached: 1,
            ..Recount::default()
        };
        // (node, token offset of its key from the root)
        let mut stack = vec![(ROOT, 0usize)];
        while let Some((idx, offset)) = stack.pop() {
            let child_locks = self.check_children(idx, offset, &mut count, &mut stack)?;
            if idx != ROOT {
                self.check_node(idx, offset, child_locks, &mut count)?;
            }
        }
        self.check_totals(&count)?;
        self.check_namespaces()
    }

    /// Checks each child link of `idx`, counts the children as reached and queues them; returns
    /// the sum of the children's lock counts.
    fn check_children(
        &self,
        idx: u32,
        offset: usize,
        count: &mut Recount,
        stack: &mut Vec<(u32, usize)>,
    ) -> Result<u32, IntegrityError> {
        let node = &self.nodes[idx as usize];
        let mut child_locks = 0u32;
        for &(hash, c) in node.children.iter() {
            self.check_child_link(idx, hash, c)?;
            child_locks += self.nodes[c as usize].lock_ref;
            count.reached += 1;
            stack.push((c, offset + node.len));
        }
        Ok(child_locks)
    }

    /// Checks that `c`, filed under `idx` with `hash`, is live, points back at `idx`, is filed
    /// under its current first page, and shares its parent's namespace (below the root).
    fn check_child_link(&self, idx: u32, hash: u64, c: u32) -> Result<(), IntegrityError> {
        let node = &self.nodes[idx as usize];
        let child = &self.nodes[c as usize];
        if !child.live {
            return fail(format!("node {idx} links to dead slot {c}"));
        }
        if child.parent != idx {
            return fail(format!(
                "node {c} has parent {} but hangs under {idx}",
                child.parent
            ));
        }
        if hash != self.child_hash(c) {
            return fail(format!("node {c} is filed under a stale child key"));
        }
        if self.find_child(idx, child.ns, self.key_of(c)) != Some(c) {
            return fail(format!("node {c} is not found under its own first page"));
        }
        if idx != ROOT && child.ns != node.ns {
            return fail(format!(
                "node {c} is in another namespace than its parent {idx}"
            ));
        }
        Ok(())
    }

    /// Checks a non-root node's edge, lock count, page alignment and evictable-set membership,
    /// adding its tokens to the recount.
    fn check_node(
        &self,
        idx: u32,
        offset: usize,
        child_locks: u32,
        count: &mut Recount,
    ) -> Result<(), IntegrityError> {
        let node = &self.nodes[idx as usize];
        let in_arena = self
            .arena
            .get(node.chunk as usize)
            .is_some_and(|(t, v)| node.off + node.len <= t.len() && t.len() == v.len());
        if node.len == 0 || !in_arena {
            return fail(format!(
                "node {idx} has an empty or out-of-arena edge (chunk {}, {}..+{})",
                node.chunk, node.off, node.len
            ));
        }
        count.arena_live += node.len;
        if node.lock_ref != node.direct_locks + child_locks {
            return fail(format!(
                "node {idx} lock_ref {} != own {} + children {child_locks}",
                node.lock_ref, node.direct_locks
            ));
        }
        if node.lock_ref == 0 {
            count.evictable += node.len;
        } else {
            count.protected += node.len;
        }
        self.check_alignment(idx, offset)?;
        self.check_evict_key(idx, count)
    }

    /// With pages, a node must start on a page boundary and an inner node must end on one.
    fn check_alignment(&self, idx: u32, offset: usize) -> Result<(), IntegrityError> {
        let node = &self.nodes[idx as usize];
        if self.page_size > 1 {
            if !offset.is_multiple_of(self.page_size) {
                return fail(format!("node {idx} starts at unaligned offset {offset}"));
            }
            if !node.children.is_empty() && !node.len.is_multiple_of(self.page_size) {
                return fail(format!(
                    "inner node {idx} has unaligned length {}",
                    node.len
                ));
            }
        }
        Ok(())
    }

    /// A node is in the evictable-leaf set, under its current rank, exactly when it is an
    /// unlocked leaf.
    fn check_evict_key(&self, idx: u32, count: &mut Recount) -> Result<(), IntegrityError> {
        let node = &self.nodes[idx as usize];
        let should_be_leaf = node.lock_ref == 0 && node.children.is_empty();
        match node.evict_key {
            Some(key) => {
                if !should_be_leaf {
                    return fail(format!(
                        "node {idx} is in the evictable set but is not an unlocked leaf"
                    ));
                }
                if key != self.strategy.key(&node.stats) || !self.evictable.contains(&(key, idx)) {
                    return fail(format!("node {idx} has a stale eviction rank"));
                }
                count.leaves += 1;
            }
            None if should_be_leaf => {
                return fail(format!(
                    "unlocked leaf {idx} is missing from the evictable set"
                ));
            }
            None => {}
        }
        Ok(())
    }

    /// Compares the walk's recount with the evictable set, the size counters, the arena's
    /// bookkeeping and the node table.
    fn check_totals(&self, count: &Recount) -> Result<(), IntegrityError> {
        if count.leaves != self.evictable.len() {
            return fail(format!(
                "evictable set holds {} entries but {} leaves qualify",
                self.evictable.len(),
                count.leaves
            ));
        }
        if count.evictable != self.evictable_size || count.protected != self.protected_size {
            return fail(format!(
                "sizes (evictable {}, protected {}) differ from a recount ({}, {})",
                self.evictable_size, self.protected_size, count.evictable, count.protected
            ));
        }
        let stored: usize = self.arena.iter().map(|(t, _)| t.len()).sum();
        if stored != self.arena_len || count.arena_live + self.garbage != stored {
            return fail(format!(
                "arena holds {stored} tokens ({} counted); {} live + {} garbage",
                self.arena_len, count.arena_live, self.garbage
            ));
        }
        if count.reached != self.node_count() {
            return fail(format!(
                "{} nodes reachable but {} live in the arena",
                count.reached,
                self.node_count()
            ));
        }
        if self.disabled && self.total_size() != 0 {
            return fail("a disabled cache stores tokens".into());
        }
        Ok(())
    }

    /// Checks the namespace table against a count of the live nodes carrying each id (every
    /// live node is reachable, which [`RadixCache::check_integrity`] verifies first).
    fn check_namespaces(&self) -> Result<(), IntegrityError> {
        if self.nodes[ROOT as usize].ns != SHARED {
            return Err(IntegrityError(
                "the root must be in the shared namespace".into(),
            ));
        }
        let mut counted = vec![0usize; self.namespaces.slots()];
        for (idx, node) in self.nodes.iter().enumerate().skip(1) {
            match counted.get_mut(node.ns as usize) {
                _ if !node.live => {}
                Some(count) => *count += 1,
                None => {
                    return Err(IntegrityError(format!(
                        "node {idx} carries namespace id {} beyond the table",
                        node.ns
                    )))
                }
            }
        }
        self.namespaces.check(&counted).map_err(IntegrityError)
    }
}
