//! Whole root-to-node paths, for callers that keep a second copy of cached values elsewhere
//! (a disk tier): the leaves eviction removes and every leaf of the tree, each with the full
//! prefix it completes. Nothing here does I/O; the caller decides what to do with the paths.

use super::{RadixCache, ROOT};
use crate::key::{Namespace, Token};

/// The prefix a leaf completes: every token and value from the root to the leaf's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixPath<V> {
    /// The leaf's namespace (its whole path shares it).
    pub namespace: Namespace,
    /// The tokens from the root to the end of the leaf.
    pub tokens: Vec<Token>,
    /// One value per token; the leading `start` belong to the leaf's ancestors.
    pub values: Vec<V>,
    /// Where the leaf's own edge begins: `tokens[start..]` are the leaf's.
    pub start: usize,
}

impl<V: Copy> RadixCache<V> {
    /// The path from the root to node `idx`, root first.
    fn path_of(&self, idx: u32) -> PrefixPath<V> {
        let mut chain = Vec::new();
        let mut at = idx;
        while at != ROOT {
            chain.push(at);
            at = self.nodes[at as usize].parent;
        }
        let len = chain.iter().map(|&i| self.nodes[i as usize].len).sum();
        let mut tokens = Vec::with_capacity(len);
        let mut values = Vec::with_capacity(len);
        for &i in chain.iter().rev() {
            tokens.extend_from_slice(self.key_of(i));
            values.extend_from_slice(self.value_of(i));
        }
        PrefixPath {
            namespace: self.namespace_of(idx).clone(),
            start: len - self.nodes[idx as usize].len,
            tokens,
            values,
        }
    }

    /// The path of every leaf (locked or not), in no particular order: together they cover
    /// every stored token.
    pub fn leaf_paths(&self) -> Vec<PrefixPath<V>> {
        (0..self.nodes.len() as u32)
            .filter(|&i| {
                let n = &self.nodes[i as usize];
                i != ROOT && n.live && n.children.is_empty()
            })
            .map(|i| self.path_of(i))
            .collect()
    }

    /// [`RadixCache::evict_into`] that also hands `on_leaf` the path of each leaf just before it
    /// is removed (its ancestors' values are still stored when it is called).
    pub fn evict_with(
        &mut self,
        num_tokens: usize,
        out: &mut Vec<V>,
        on_leaf: &mut dyn FnMut(PrefixPath<V>),
    ) -> usize {
        let mut evicted = 0;
        while evicted < num_tokens {
            let Some(&(_, idx)) = self.evictable.first() else {
                break;
            };
            on_leaf(self.path_of(idx));
            evicted += self.evict_into(1, out);
        }
        evicted
    }
}
