//! Storage: node slots (with generations, so stale handles are detected) and the chunked arena
//! that holds every edge's tokens and values.

use super::{RadixCache, ROOT};
use crate::key::Token;
use crate::policy::{EvictionKey, NodeStats};
use hashbrown::HashTable;

/// One slot of the node table; `live` is false while the slot is on the free list.
pub(super) struct Node {
    pub(super) generation: u32,
    pub(super) live: bool,
    pub(super) parent: u32,
    pub(super) ns: u32,
    /// The node's edge: `len` tokens (and as many values) at `off` in arena chunk `chunk`.
    pub(super) chunk: u32,
    pub(super) off: usize,
    pub(super) len: usize,
    /// Children keyed by (namespace, first page), stored as (hash, child index); equality is
    /// checked against the child's own key, so hash collisions are harmless.
    pub(super) children: HashTable<(u64, u32)>,
    pub(super) lock_ref: u32,
    /// Locks anchored at this node itself (the rest of `lock_ref` comes from descendants).
    pub(super) direct_locks: u32,
    pub(super) stats: NodeStats,
    /// The node's rank while it is in the evictable-leaf set.
    pub(super) evict_key: Option<EvictionKey>,
}

impl Node {
    /// A dead slot with the given generation.
    pub(super) fn empty(generation: u32) -> Self {
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

impl<V: Copy> RadixCache<V> {
    /// The tokens of a node's edge.
    pub(super) fn key_of(&self, idx: u32) -> &[Token] {
        let n = &self.nodes[idx as usize];
        if n.len == 0 {
            return &[];
        }
        &self.arena[n.chunk as usize].0[n.off..n.off + n.len]
    }

    /// The values of a node's edge.
    pub(super) fn value_of(&self, idx: u32) -> &[V] {
        let n = &self.nodes[idx as usize];
        if n.len == 0 {
            return &[];
        }
        &self.arena[n.chunk as usize].1[n.off..n.off + n.len]
    }

    /// Tokens per arena chunk (an edge longer than this gets a chunk of its own).
    const CHUNK: usize = 1 << 14;

    /// Stores an edge in the arena; returns (chunk, offset).
    pub(super) fn append(&mut self, tokens: &[Token], values: &[V]) -> (u32, usize) {
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
        let chunk = u32::try_from(chunk).expect(
            "every arena chunk reserves at least CHUNK tokens, so memory runs out long before \
             the chunk count leaves u32",
        );
        (chunk, off)
    }

    /// Rebuilds the arena without evicted runs once it is mostly garbage (amortised O(1) per
    /// evicted token).
    pub(super) fn maybe_compact(&mut self) {
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

    /// Takes a slot for a new node in namespace `ns`, which counts the node.
    pub(super) fn alloc_node(&mut self, ns: u32) -> u32 {
        self.namespaces.acquire(ns);
        let idx = if let Some(idx) = self.free_nodes.pop() {
            idx
        } else {
            self.nodes.push(Node::empty(0));
            u32::try_from(self.nodes.len() - 1).expect(
                "every non-root node holds at least one token, so memory runs out long before \
                 the node count leaves u32",
            )
        };
        let node = &mut self.nodes[idx as usize];
        node.live = true;
        node.ns = ns;
        idx
    }

    /// Frees a node's slot (stale handles to it are detected) and releases its namespace, which
    /// is freed with its last node.
    pub(super) fn free_node(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        let (ns, generation) = (node.ns, node.generation.wrapping_add(1));
        self.nodes[idx as usize] = Node::empty(generation);
        self.free_nodes.push(idx);
        self.namespaces.release(ns);
    }
}
