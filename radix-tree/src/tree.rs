//! The radix tree itself: arena-allocated nodes, match, insert, split, locks and eviction.

use crate::error::{IntegrityError, RadixError};
use crate::key::{KeyRef, Namespace, Token};
use crate::namespaces::{NamespaceTable, SHARED};
use crate::policy::{EvictionKey, EvictionPolicy, EvictionStrategy, NodeStats};
use hashbrown::HashTable;
use rustc_hash::FxHasher;
use std::collections::BTreeSet;
use std::hash::Hasher;

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

struct Node {
    generation: u32,
    live: bool,
    parent: u32,
    ns: u32,
    /// The node's edge: `len` tokens (and as many values) at `off` in arena chunk `chunk`.
    chunk: u32,
    off: usize,
    len: usize,
    /// Children keyed by (namespace, first page), stored as (hash, child index); equality is
    /// checked against the child's own key, so hash collisions are harmless.
    children: HashTable<(u64, u32)>,
    lock_ref: u32,
    /// Locks anchored at this node itself (the rest of `lock_ref` comes from descendants).
    direct_locks: u32,
    stats: NodeStats,
    /// The node's rank while it is in the evictable-leaf set.
    evict_key: Option<EvictionKey>,
}

impl Node {
    fn empty(generation: u32) -> Self {
        Node {
            generation,
            live: false,
            parent: ROOT,
            ns: 0,
            chunk: 0,
            off: 0,
            len: 0,
            children: HashTable::new(),
            lock_ref: 0,
            direct_locks: 0,
            stats: NodeStats::default(),
            evict_key: None,
        }
    }
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

    /// Tokens per page.
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

    /// Tokens in unlocked nodes.
    pub fn evictable_size(&self) -> usize {
        self.evictable_size
    }

    /// Tokens in locked nodes.
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

    /// The usage counters.
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

    fn live_index(&self, id: NodeId) -> Result<u32, RadixError> {
        match self.nodes.get(id.index as usize) {
            Some(n) if n.live && n.generation == id.generation => Ok(id.index),
            _ => Err(RadixError::StaleNode(id)),
        }
    }

    /// The tokens of a node's edge.
    fn key_of(&self, idx: u32) -> &[Token] {
        let n = &self.nodes[idx as usize];
        if n.len == 0 {
            return &[];
        }
        &self.arena[n.chunk as usize].0[n.off..n.off + n.len]
    }

    /// The values of a node's edge.
    fn value_of(&self, idx: u32) -> &[V] {
        let n = &self.nodes[idx as usize];
        if n.len == 0 {
            return &[];
        }
        &self.arena[n.chunk as usize].1[n.off..n.off + n.len]
    }

    /// Tokens per arena chunk (an edge longer than this gets a chunk of its own).
    const CHUNK: usize = 1 << 14;

    /// Stores an edge in the arena; returns (chunk, offset).
    fn append(&mut self, tokens: &[Token], values: &[V]) -> (u32, usize) {
        let fits = self
            .arena
            .last()
            .is_some_and(|(t, _)| t.capacity() - t.len() >= tokens.len());
        if !fits {
            let cap = Self::CHUNK.max(tokens.len());
            self.arena
                .push((Vec::with_capacity(cap), Vec::with_capacity(cap)));
        }
        let chunk = self.arena.len() - 1;
        let (t, v) = &mut self.arena[chunk];
        let off = t.len();
        t.extend_from_slice(tokens);
        v.extend_from_slice(values);
        self.arena_len += tokens.len();
        (u32::try_from(chunk).unwrap_or(u32::MAX), off)
    }

    /// Rebuilds the arena without evicted runs once it is mostly garbage (amortised O(1) per
    /// evicted token).
    fn maybe_compact(&mut self) {
        let live = self.arena_len - self.garbage;
        if self.garbage < Self::CHUNK || self.garbage < live {
            return;
        }
        let old = std::mem::take(&mut self.arena);
        self.arena_len = 0;
        self.garbage = 0;
        let live_nodes: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&i| i != ROOT && self.nodes[i as usize].live)
            .collect();
        for idx in live_nodes {
            let n = &self.nodes[idx as usize];
            let (t, v) = &old[n.chunk as usize];
            let (tokens, values) = (&t[n.off..n.off + n.len], &v[n.off..n.off + n.len]);
            let (chunk, off) = self.append(tokens, values);
            let n = &mut self.nodes[idx as usize];
            n.chunk = chunk;
            n.off = off;
        }
    }

    fn id_of(&self, index: u32) -> NodeId {
        NodeId {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn first_page<'a>(&self, tokens: &'a [Token]) -> &'a [Token] {
        &tokens[..self.page_size.min(tokens.len())]
    }

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
    fn key_match(&self, stored: &[Token], query: &[Token]) -> usize {
        let m = common_prefix(stored, query);
        if self.page_size == 1 || (m == stored.len() && m == query.len()) {
            return m;
        }
        m - m % self.page_size
    }

    fn find_child(&self, parent: u32, ns: u32, query: &[Token]) -> Option<u32> {
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

    fn child_hash(&self, child: u32) -> u64 {
        Self::page_hash(
            self.nodes[child as usize].ns,
            self.first_page(self.key_of(child)),
        )
    }

    fn attach_child(&mut self, parent: u32, child: u32) {
        let hash = self.child_hash(child);
        self.nodes[child as usize].parent = parent;
        self.nodes[parent as usize]
            .children
            .insert_unique(hash, (hash, child), |&(h, _)| h);
    }

    fn detach_child(&mut self, parent: u32, child: u32) {
        let hash = self.child_hash(child);
        if let Ok(entry) = self.nodes[parent as usize]
            .children
            .find_entry(hash, |&(_, c)| c == child)
        {
            entry.remove();
        }
    }

    /// Takes a slot for a new node in namespace `ns`, which counts the node.
    fn alloc_node(&mut self, ns: u32) -> u32 {
        self.namespaces.acquire(ns);
        let idx = if let Some(idx) = self.free_nodes.pop() {
            idx
        } else {
            self.nodes.push(Node::empty(0));
            u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX)
        };
        let node = &mut self.nodes[idx as usize];
        node.live = true;
        node.ns = ns;
        idx
    }

    /// Frees a node's slot (stale handles to it are detected) and releases its namespace, which
    /// is freed with its last node.
    fn free_node(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        let (ns, generation) = (node.ns, node.generation.wrapping_add(1));
        self.nodes[idx as usize] = Node::empty(generation);
        self.free_nodes.push(idx);
        self.namespaces.release(ns);
    }

    /// Puts a node into, or takes it out of, the evictable-leaf set as its state requires.
    fn refresh_leaf(&mut self, idx: u32) {
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
    fn touch(&mut self, idx: u32, now: u64, hit: bool, priority: Option<i64>) {
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

    /// Splits `child` after its first `n` tokens; returns the new upper node, which takes the
    /// child's place under its parent. The child keeps its id, so locks anchored at it stay valid.
    fn split(&mut self, child: u32, n: usize) -> u32 {
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
        if let Some(entry) = self.nodes[parent as usize]
            .children
            .find_mut(old_hash, |&(_, c)| c == child)
        {
            entry.1 = upper;
        }
        self.attach_child(upper, child);
        upper
    }

    /// Finds the longest stored prefix of `key` (whole pages only when `page_size > 1`).
    ///
    /// May split the node at the match boundary so that the returned node ends exactly there;
    /// sizes never change and no lock is taken.
    pub fn match_prefix<'k>(&mut self, key: impl Into<KeyRef<'k>>) -> MatchResult<V> {
        let mut values = Vec::new();
        let last_node = self.match_prefix_into(key, &mut values);
        MatchResult { values, last_node }
    }

    /// Like [`RadixCache::match_prefix`], appending the matched values to `out` (so a caller can
    /// reuse one buffer); returns the last matched node.
    pub fn match_prefix_into<'k>(
        &mut self,
        key: impl Into<KeyRef<'k>>,
        out: &mut Vec<V>,
    ) -> NodeId {
        let key = key.into();
        self.stats.match_calls += 1;
        self.stats.tokens_queried += key.tokens.len() as u64;
        let now = self.tick();
        self.touch(ROOT, now, false, None);
        let aligned = key.tokens.len() - key.tokens.len() % self.page_size;
        if self.disabled || aligned == 0 {
            return self.root();
        }
        let Some(ns) = self.namespaces.get(key.namespace) else {
            return self.root();
        };
        let mut tokens = &key.tokens[..aligned];
        let mut node = ROOT;
        let mut matched = 0usize;
        while !tokens.is_empty() {
            let Some(child) = self.find_child(node, ns, tokens) else {
                break;
            };
            self.touch(child, now, true, None);
            let n = self.key_match(self.key_of(child), tokens);
            if n < self.nodes[child as usize].len {
                let upper = self.split(child, n);
                out.extend_from_slice(self.value_of(upper));
                matched += n;
                node = upper;
                break;
            }
            out.extend_from_slice(self.value_of(child));
            matched += n;
            tokens = &tokens[n..];
            node = child;
        }
        self.stats.tokens_hit += matched as u64;
        self.id_of(node)
    }

    /// Stores `key` with one value per token, at priority 0. See [`RadixCache::insert_with_priority`].
    pub fn insert<'k>(
        &mut self,
        key: impl Into<KeyRef<'k>>,
        values: &[V],
    ) -> Result<InsertOutcome, RadixError> {
        self.insert_with_priority(key, values, 0)
    }

    /// Stores `key` with one value per token. Returns how many leading tokens were already
    /// present: the tree keeps its values for those, and the caller must free its duplicates.
    /// Nodes on the path take the maximum of their priority and `priority`.
    pub fn insert_with_priority<'k>(
        &mut self,
        key: impl Into<KeyRef<'k>>,
        values: &[V],
        priority: i64,
    ) -> Result<InsertOutcome, RadixError> {
        let key = key.into();
        if key.tokens.len() != values.len() {
            return Err(RadixError::LengthMismatch {
                tokens: key.tokens.len(),
                values: values.len(),
            });
        }
        if self.disabled || key.tokens.is_empty() {
            return Ok(InsertOutcome {
                prefix_len: 0,
                last_node: self.root(),
            });
        }
        self.stats.insert_calls += 1;
        let now = self.tick();
        self.touch(ROOT, now, false, None);
        // A namespace without an entry owns no nodes, so nothing of the key is stored yet.
        let found = self.namespaces.get(key.namespace);
        let (prefix_len, mut node) = match found {
            Some(ns) => self.insert_walk(ns, key.tokens, now, priority),
            None => (0, ROOT),
        };
        if prefix_len < key.tokens.len() {
            let ns = found.unwrap_or_else(|| self.namespaces.intern(key.namespace));
            let (tokens, values) = (&key.tokens[prefix_len..], &values[prefix_len..]);
            node = self.add_leaf(node, ns, tokens, values, now, priority);
        }
        Ok(InsertOutcome {
            prefix_len,
            last_node: self.id_of(node),
        })
    }

    /// Follows `tokens` down from the root in namespace `ns`, splitting a node where the stored
    /// key diverges, and raising priorities on the way; returns how many tokens are present and
    /// the node where they end.
    fn insert_walk(&mut self, ns: u32, tokens: &[Token], now: u64, priority: i64) -> (usize, u32) {
        let mut pos = 0usize;
        let mut node = ROOT;
        while pos < tokens.len() {
            let rest = &tokens[pos..];
            let Some(child) = self.find_child(node, ns, rest) else {
                break;
            };
            self.touch(child, now, false, Some(priority));
            let n = self.key_match(self.key_of(child), rest);
            pos += n;
            node = if n < self.nodes[child as usize].len {
                self.split(child, n)
            } else {
                child
            };
        }
        (pos, node)
    }

    /// Hangs a new evictable leaf holding `tokens` and `values` under `parent`; returns it.
    fn add_leaf(
        &mut self,
        parent: u32,
        ns: u32,
        tokens: &[Token],
        values: &[V],
        now: u64,
        priority: i64,
    ) -> u32 {
        let leaf = self.alloc_node(ns);
        let (chunk, off) = self.append(tokens, values);
        let l = &mut self.nodes[leaf as usize];
        l.chunk = chunk;
        l.off = off;
        l.len = tokens.len();
        l.stats = NodeStats {
            last_access: now,
            creation: now,
            hit_count: 0,
            priority,
        };
        self.attach_child(parent, leaf);
        self.evictable_size += tokens.len();
        self.stats.tokens_inserted += tokens.len() as u64;
        self.refresh_leaf(parent);
        self.refresh_leaf(leaf);
        leaf
    }

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

    /// Verifies every structural invariant and reports the first violation: child keys, parent
    /// links, value shape, lock counts, size accounting, the evictable-leaf set, namespaces, page
    /// alignment, and that every arena slot is either reachable or free.
    pub fn check_integrity(&self) -> Result<(), IntegrityError> {
        let fail = |msg: String| Err(IntegrityError(msg));
        let root = &self.nodes[ROOT as usize];
        if !root.live || root.lock_ref != 1 || root.len != 0 {
            return fail("root must be live, hold lock_ref 1 and have an empty key".into());
        }
        let mut evictable = 0usize;
        let mut protected = 0usize;
        let mut leaves = 0usize;
        let mut reached = 1usize;
        let mut arena_live = 0usize;
        // (node, token offset of its key from the root)
        let mut stack = vec![(ROOT, 0usize)];
        while let Some((idx, offset)) = stack.pop() {
            let node = &self.nodes[idx as usize];
            let mut child_locks = 0u32;
            for &(hash, c) in node.children.iter() {
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
                child_locks += child.lock_ref;
                reached += 1;
                stack.push((c, offset + node.len));
            }
            if idx == ROOT {
                continue;
            }
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
            arena_live += node.len;
            if node.lock_ref != node.direct_locks + child_locks {
                return fail(format!(
                    "node {idx} lock_ref {} != own {} + children {child_locks}",
                    node.lock_ref, node.direct_locks
                ));
            }
            if node.lock_ref == 0 {
                evictable += node.len;
            } else {
                protected += node.len;
            }
            if self.page_size > 1 {
                if offset % self.page_size != 0 {
                    return fail(format!("node {idx} starts at unaligned offset {offset}"));
                }
                if !node.children.is_empty() && !node.len.is_multiple_of(self.page_size) {
                    return fail(format!(
                        "inner node {idx} has unaligned length {}",
                        node.len
                    ));
                }
            }
            let should_be_leaf = node.lock_ref == 0 && node.children.is_empty();
            match node.evict_key {
                Some(key) => {
                    if !should_be_leaf {
                        return fail(format!(
                            "node {idx} is in the evictable set but is not an unlocked leaf"
                        ));
                    }
                    if key != self.strategy.key(&node.stats)
                        || !self.evictable.contains(&(key, idx))
                    {
                        return fail(format!("node {idx} has a stale eviction rank"));
                    }
                    leaves += 1;
                }
                None if should_be_leaf => {
                    return fail(format!(
                        "unlocked leaf {idx} is missing from the evictable set"
                    ));
                }
                None => {}
            }
        }
        if leaves != self.evictable.len() {
            return fail(format!(
                "evictable set holds {} entries but {leaves} leaves qualify",
                self.evictable.len()
            ));
        }
        if evictable != self.evictable_size || protected != self.protected_size {
            return fail(format!(
                "sizes (evictable {}, protected {}) differ from a recount ({evictable}, {protected})",
                self.evictable_size, self.protected_size
            ));
        }
        let stored: usize = self.arena.iter().map(|(t, _)| t.len()).sum();
        if stored != self.arena_len || arena_live + self.garbage != stored {
            return fail(format!(
                "arena holds {stored} tokens ({} counted); {arena_live} live + {} garbage",
                self.arena_len, self.garbage
            ));
        }
        if reached != self.node_count() {
            return fail(format!(
                "{reached} nodes reachable but {} live in the arena",
                self.node_count()
            ));
        }
        if self.disabled && self.total_size() != 0 {
            return fail("a disabled cache stores tokens".into());
        }
        self.check_namespaces()
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
