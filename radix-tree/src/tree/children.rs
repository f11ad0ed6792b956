//! The child index of each node, keyed by (namespace, first page of the child's edge), and the
//! structural edits on it: attach, detach and split.

use super::RadixCache;
use crate::key::Token;
use rustc_hash::FxHasher;
use std::hash::Hasher;

/// Length of the common prefix of two token runs. The common case, a stored edge that the query
/// contains whole, is one `memcmp` over the whole run; only on a mismatch is it located in chunks.
fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    const CHUNK: usize = 32;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    if a == b {
        return n;
    }
    let mut i = a
        .chunks_exact(CHUNK)
        .zip(b.chunks_exact(CHUNK))
        .take_while(|(x, y)| x == y)
        .count()
        * CHUNK;
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

impl<V: Copy> RadixCache<V> {
    /// The first page of `tokens` (all of them if shorter): what children are keyed by.
    fn first_page<'a>(&self, tokens: &'a [Token]) -> &'a [Token] {
        &tokens[..self.page_size.min(tokens.len())]
    }

    /// The hash a child with namespace `ns` and first page `page` is filed under.
    fn page_hash(ns: u32, page: &[Token]) -> u64 {
        let mut h = FxHasher::default();
        h.write_u32(ns);
        for &t in page {
            h.write_u32(t);
        }
        h.finish()
    }

    /// Length of the common prefix of a stored edge and a query, compared page by page: a page
    /// matches only if both sides hold the same tokens and the same number of them.
    pub(super) fn key_match(&self, stored: &[Token], query: &[Token]) -> usize {
        let m = common_prefix(stored, query);
        if self.page_size == 1 || (m == stored.len() && m == query.len()) {
            return m;
        }
        m - m % self.page_size
    }

    /// The child of `parent` in namespace `ns` whose edge starts with the first page of `query`.
    pub(super) fn find_child(&self, parent: u32, ns: u32, query: &[Token]) -> Option<u32> {
        let page = self.first_page(query);
        let hash = Self::page_hash(ns, page);
        let nodes = &self.nodes;
        nodes[parent as usize]
            .children
            .find(hash, |&(h, c)| {
                h == hash && {
                    let child = &nodes[c as usize];
                    child.ns == ns
                        && self.arena[child.chunk as usize].0
                            [child.off..child.off + self.page_size.min(child.len)]
                            == *page
                }
            })
            .map(|&(_, c)| c)
    }

    /// The hash `child` is filed under in its parent's child index.
    pub(super) fn child_hash(&self, child: u32) -> u64 {
        Self::page_hash(
            self.nodes[child as usize].ns,
            self.first_page(self.key_of(child)),
        )
    }

    /// Hangs `child` under `parent`.
    pub(super) fn attach_child(&mut self, parent: u32, child: u32) {
        let hash = self.child_hash(child);
        self.nodes[child as usize].parent = parent;
        self.nodes[parent as usize]
            .children
            .insert_unique(hash, (hash, child), |&(h, _)| h);
    }

    /// Takes `child` out of `parent`'s child index.
    ///
    /// # Panics
    /// If `child` is not filed under `parent`, which would mean the tree is corrupt.
    pub(super) fn detach_child(&mut self, parent: u32, child: u32) {
        let hash = self.child_hash(child);
        self.nodes[parent as usize]
            .children
            .find_entry(hash, |&(_, c)| c == child)
            .expect("a live node is filed under its parent by the hash of its first page")
            .remove();
    }

    /// Splits `child` after its first `n` tokens; returns the new upper node, which takes the
    /// child's place under its parent. The child keeps its id, so locks anchored at it stay valid.
    pub(super) fn split(&mut self, child: u32, n: usize) -> u32 {
        let upper = self.alloc_node(self.nodes[child as usize].ns);
        let parent = self.nodes[child as usize].parent;
        let old_hash = self.child_hash(child);
        // The edge's run in the arena is cut in two: nothing is copied.
        let c = &mut self.nodes[child as usize];
        let (chunk, off, lock_ref, stats) = (c.chunk, c.off, c.lock_ref, c.stats);
        c.off += n;
        c.len -= n;
        let u = &mut self.nodes[upper as usize];
        u.parent = parent;
        u.chunk = chunk;
        u.off = off;
        u.len = n;
        u.lock_ref = lock_ref;
        u.stats = stats;
        // The upper node has the child's old first page, so it reuses the parent's entry.
        let entry = self.nodes[parent as usize]
            .children
            .find_mut(old_hash, |&(_, c)| c == child)
            .expect("a live node is filed under its parent by the hash of its first page");
        entry.1 = upper;
        self.attach_child(upper, child);
        upper
    }
}
