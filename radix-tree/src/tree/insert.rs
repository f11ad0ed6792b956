//! Insertion: SGLang's `insert`, which stores a key and reports how much of it was present.

use super::{InsertOutcome, RadixCache, ROOT};
use crate::error::RadixError;
use crate::key::{KeyRef, Token};
use crate::policy::NodeStats;

impl<V: Copy> RadixCache<V> {
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
}
