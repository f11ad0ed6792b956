//! The radix tree itself: arena-allocated nodes, match, insert, split, locks and eviction.
//!
//! [`RadixCache`] is one struct whose methods are spread over this module by concern:
//!
//! * this file: the public result types, the struct, its constructors, read-only accessors,
//!   [`RadixCache::reset`] and the depth-first walk behind the dumps;
//! * `arena`: node slots and the chunked arena that stores every edge's tokens and values;
//! * `children`: the per-node child index (keyed by namespace and first page) and node splits;
//! * `matching`: [`RadixCache::match_prefix`];
//! * `insert`: [`RadixCache::insert`] and [`RadixCache::insert_with_priority`];
//! * `locks`: [`RadixCache::inc_lock_ref`] and [`RadixCache::dec_lock_ref`];
//! * `evict`: the evictable-leaf set, access statistics and [`RadixCache::evict`];
//! * `check`: [`RadixCache::check_integrity`], which every test runs after each step;
//! * `paths`: whole root-to-leaf paths ([`PrefixPath`]) for eviction and snapshots.
//!
//! Nodes are addressed internally by their `u32` slot index; the public [`NodeId`] adds the
//! slot's generation so that handles to removed nodes are detected.

mod arena;
mod check;
mod children;
mod evict;
mod insert;
mod locks;
mod matching;
mod paths;

pub use paths::PrefixPath;

use crate::error::RadixError;
use crate::key::{Namespace, Token};
use crate::namespaces::NamespaceTable;
use crate::policy::{EvictionKey, EvictionPolicy, EvictionStrategy, NodeStats};
use arena::Node;
use std::collections::BTreeSet;

/// A stable handle to a tree node. Handles of removed nodes are detected (the slot's generation
/// changes), so a stale handle yields [`RadixError::StaleNode`] instead of touching another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    index: u32,
    generation: u32,
}

impl NodeId {
    /// The slot index (for display and debugging).
    pub fn index(self) -> u32 {
        self.index
    }
}

/// The slot index of the root, which is never freed.
const ROOT: u32 = 0;

/// What [`RadixCache::match_prefix`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchResult<V> {
    /// The values of the matched prefix, one per matched token.
    pub values: Vec<V>,
    /// The deepest node of the match (the root when nothing matched). Lock it before relying on
    /// the values staying in the tree.
    pub last_node: NodeId,
}

impl<V> MatchResult<V> {
    /// Number of matched tokens.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when nothing matched.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// What [`RadixCache::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Number of leading tokens that were already in the tree. The tree keeps its own values for
    /// them, so the caller's values for `[0, prefix_len)` are duplicates that the caller must free.
    pub prefix_len: usize,
    /// The node at which the inserted key ends.
    pub last_node: NodeId,
}

/// Monotonic counters of cache use; [`RadixCache::reset`] does not clear them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls of `match_prefix`.
    pub match_calls: u64,
    /// Tokens asked for by those calls (before page truncation).
    pub tokens_queried: u64,
    /// Tokens those calls found in the tree.
    pub tokens_hit: u64,
    /// Calls of `insert`.
    pub insert_calls: u64,
    /// Tokens newly stored by those calls.
    pub tokens_inserted: u64,
    /// Tokens removed by eviction.
    pub tokens_evicted: u64,
    /// Leaves removed by eviction.
    pub nodes_evicted: u64,
}

/// One node as seen by [`RadixCache::walk`].
pub(crate) struct Visit<'a, V> {
    pub index: u32,
    pub parent: u32,
    pub depth: usize,
    pub tokens: &'a [Token],
    pub values: &'a [V],
    pub lock_ref: u32,
    pub stats: NodeStats,
}

/// SGLang's `RadixCache`: a radix tree from token prefixes to per-token values (KV slot ids).
///
/// See the crate documentation for the semantics. All sizes are in tokens.
pub struct RadixCache<V: Copy> {
    nodes: Vec<Node>,
    /// Arena of fixed-capacity chunks of (tokens, values): every node's edge is a contiguous run
    /// in one chunk, so a split only moves offsets and a new leaf is an append into the last
    /// chunk (a chunk never reallocates, so nothing already stored is ever copied on growth).
    arena: Vec<(Vec<Token>, Vec<V>)>,
    /// Tokens stored in the arena, live or not.
    arena_len: usize,
    /// Arena entries no longer referenced by a node (evicted); reclaimed by compaction.
    garbage: usize,
    free_nodes: Vec<u32>,
    page_size: usize,
    disabled: bool,
    strategy: Box<dyn EvictionStrategy>,
    evictable: BTreeSet<(EvictionKey, u32)>,
    evictable_size: usize,
    protected_size: usize,
    /// The namespaces of live nodes, each counted by the nodes that carry it.
    namespaces: NamespaceTable,
    clock: u64,
    stats: CacheStats,
}

impl<V: Copy> std::fmt::Debug for RadixCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadixCache")
            .field("page_size", &self.page_size)
            .field("disabled", &self.disabled)
            .field("strategy", &self.strategy)
            .field("evictable_size", &self.evictable_size)
            .field("protected_size", &self.protected_size)
            .field("nodes", &self.node_count())
            .finish()
    }
}

impl<V: Copy> RadixCache<V> {
    /// A cache with the given page size and LRU eviction.
    ///
    /// # Panics
    /// If `page_size` is 0; use [`RadixCache::try_new`] for unchecked input.
    pub fn new(page_size: usize) -> Self {
        Self::with_strategy(page_size, EvictionPolicy::Lru)
    }

    /// A cache with the given page size, or `None` when `page_size` is 0.
    pub fn try_new(page_size: usize) -> Option<Self> {
        (page_size > 0).then(|| Self::new(page_size))
    }

    /// A cache with the given page size and eviction strategy.
    ///
    /// # Panics
    /// If `page_size` is 0.
    pub fn with_strategy(page_size: usize, strategy: impl EvictionStrategy + 'static) -> Self {
        assert!(page_size > 0, "page_size must be at least 1");
        let mut root = Node::empty(0);
        root.live = true;
        root.lock_ref = 1;
        root.stats.priority = i64::MIN;
        RadixCache {
            nodes: vec![root],
            arena: Vec::new(),
            arena_len: 0,
            garbage: 0,
            free_nodes: Vec::new(),
            page_size,
            disabled: false,
            strategy: Box::new(strategy),
            evictable: BTreeSet::new(),
            evictable_size: 0,
            protected_size: 0,
            namespaces: NamespaceTable::default(),
            clock: 0,
            stats: CacheStats::default(),
        }
    }

    /// A disabled cache (SGLang's `--disable-radix-cache`): matches are always empty and inserts
    /// store nothing (they report 0 tokens present, so callers keep ownership of every value).
    pub fn disabled(page_size: usize) -> Self {
        let mut cache = Self::new(page_size);
        cache.disabled = true;
        cache
    }

    /// True when this cache was created with [`RadixCache::disabled`].
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Tokens per page: matches and inner nodes are whole pages, so that a page of KV slots is
    /// never shared between a cached prefix and a request's private tail.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The root node (always locked, never evicted).
    pub fn root(&self) -> NodeId {
        NodeId {
            index: ROOT,
            generation: self.nodes[ROOT as usize].generation,
        }
    }

    /// Tokens in unlocked nodes: what [`RadixCache::evict`] could free.
    pub fn evictable_size(&self) -> usize {
        self.evictable_size
    }

    /// Tokens in locked nodes: in use by running requests, so not evictable.
    pub fn protected_size(&self) -> usize {
        self.protected_size
    }

    /// All tokens stored.
    pub fn total_size(&self) -> usize {
        self.evictable_size + self.protected_size
    }

    /// Live nodes, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - self.free_nodes.len()
    }

    /// Namespaces currently held, the shared one included. A namespace is held exactly while at
    /// least one node of it is in the tree (the shared one always): it is freed, strings and
    /// all, when eviction or [`RadixCache::reset`] removes its last node, and looking a
    /// namespace up with [`RadixCache::match_prefix`] never adds one. So the cache's memory for
    /// client-supplied salts is bounded by what it stores, not by what it has seen.
    pub fn num_namespaces(&self) -> usize {
        self.namespaces.len()
    }

    /// The usage counters (hit rates for metrics).
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Whether `id` names a live node.
    pub fn contains(&self, id: NodeId) -> bool {
        self.live_index(id).is_ok()
    }

    /// The lock count of a node (locks anchored at it or at any descendant).
    pub fn lock_ref(&self, id: NodeId) -> Result<u32, RadixError> {
        Ok(self.nodes[self.live_index(id)? as usize].lock_ref)
    }

    /// Number of tokens from the root to the end of `id` (the length of the prefix it completes).
    pub fn prefix_len(&self, id: NodeId) -> Result<usize, RadixError> {
        let mut idx = self.live_index(id)?;
        let mut len = 0;
        while idx != ROOT {
            let node = &self.nodes[idx as usize];
            len += node.len;
            idx = node.parent;
        }
        Ok(len)
    }

    /// The parent of a node (`None` for the root).
    pub fn parent(&self, id: NodeId) -> Result<Option<NodeId>, RadixError> {
        let idx = self.live_index(id)?;
        Ok((idx != ROOT).then(|| self.id_of(self.nodes[idx as usize].parent)))
    }

    /// The children of a node, in no particular order.
    pub fn children(&self, id: NodeId) -> Result<Vec<NodeId>, RadixError> {
        let idx = self.live_index(id)?;
        Ok(self.nodes[idx as usize]
            .children
            .iter()
            .map(|&(_, c)| self.id_of(c))
            .collect())
    }

    /// The values of the whole prefix that ends at `id`, root first (what a match ending at `id`
    /// returned), without touching access statistics.
    pub fn path_values(&self, id: NodeId) -> Result<Vec<V>, RadixError> {
        let mut idx = self.live_index(id)?;
        let mut parts = Vec::new();
        while idx != ROOT {
            let node = &self.nodes[idx as usize];
            parts.push(&self.arena[node.chunk as usize].1[node.off..node.off + node.len]);
            idx = node.parent;
        }
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts.into_iter().rev() {
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Every value stored in the tree (SGLang's `all_values_flatten`), in no particular order.
    pub fn values(&self) -> Vec<V> {
        self.nodes
            .iter()
            .filter(|n| n.live && n.len > 0)
            .flat_map(|n| {
                self.arena[n.chunk as usize].1[n.off..n.off + n.len]
                    .iter()
                    .copied()
            })
            .collect()
    }

    /// The slot index of `id` if it names a live node.
    fn live_index(&self, id: NodeId) -> Result<u32, RadixError> {
        match self.nodes.get(id.index as usize) {
            Some(n) if n.live && n.generation == id.generation => Ok(id.index),
            _ => Err(RadixError::StaleNode(id)),
        }
    }

    /// The public handle of the node in slot `index`.
    fn id_of(&self, index: u32) -> NodeId {
        NodeId {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    /// Advances the logical clock that stamps accesses; returns the new time.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Removes every node; sizes become zero and the root stays locked. The caller is responsible
    /// for the values that were stored (SGLang's `reset` is paired with clearing the allocator).
    /// Every namespace but the shared one is freed with the nodes.
    pub fn reset(&mut self) {
        let root = Node {
            generation: self.nodes[ROOT as usize].generation,
            live: true,
            lock_ref: 1,
            stats: NodeStats {
                priority: i64::MIN,
                ..NodeStats::default()
            },
            ..Node::empty(0)
        };
        let generations: Vec<u32> = self.nodes.iter().map(|n| n.generation).collect();
        self.nodes.clear();
        self.free_nodes.clear();
        self.nodes.push(root);
        // Keep slots (with bumped generations) so that old handles stay detectably stale.
        for (i, g) in generations.into_iter().enumerate().skip(1) {
            self.nodes.push(Node::empty(g.wrapping_add(1)));
            self.free_nodes.push(i as u32);
        }
        self.free_nodes.reverse();
        self.evictable.clear();
        self.evictable_size = 0;
        self.protected_size = 0;
        self.arena.clear();
        self.arena_len = 0;
        self.garbage = 0;
        self.namespaces.reset();
    }

    /// The namespace a node belongs to.
    pub(crate) fn namespace_of(&self, idx: u32) -> &Namespace {
        self.namespaces.name(self.nodes[idx as usize].ns)
    }

    /// Depth-first walk for the dumps, children in order of their first token.
    pub(crate) fn walk(&self) -> Vec<Visit<'_, V>> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT, 0usize)];
        while let Some((idx, depth)) = stack.pop() {
            let node = &self.nodes[idx as usize];
            out.push(Visit {
                index: idx,
                parent: node.parent,
                depth,
                tokens: self.key_of(idx),
                values: self.value_of(idx),
                lock_ref: node.lock_ref,
                stats: node.stats,
            });
            let mut children: Vec<u32> = node.children.iter().map(|&(_, c)| c).collect();
            children.sort_by_key(|&c| std::cmp::Reverse(self.key_of(c).first().copied()));
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
        out
    }
}
