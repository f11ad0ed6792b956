//! Prefix matching: SGLang's `match_prefix`.

use super::{MatchResult, NodeId, RadixCache, ROOT};
use crate::key::KeyRef;

impl<V: Copy> RadixCache<V> {
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
        // A namespace without an entry owns no nodes, so nothing of the key is stored.
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
}
