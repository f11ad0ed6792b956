//! Readable dumps of the tree, as text and as JSON, for debugging and diagnostics endpoints.

use crate::key::Token;
use crate::tree::RadixCache;
use serde::Serialize;
use std::fmt::Write;

/// One node of a [`TreeSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSnapshot {
    /// Arena slot of the node (0 is the root).
    pub id: u32,
    /// Arena slot of the parent (the root names itself).
    pub parent: u32,
    /// Depth in edges from the root.
    pub depth: usize,
    /// The node's namespace, as text.
    pub namespace: String,
    /// The tokens of the node's edge.
    pub tokens: Vec<Token>,
    /// The values, formatted with `Debug`.
    pub values: Vec<String>,
    /// Locks on the node or its descendants.
    pub lock_ref: u32,
    /// Logical time of the last access.
    pub last_access: u64,
    /// How many matches reached it.
    pub hit_count: u64,
}

/// A copy of the whole tree's shape and accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeSnapshot {
    /// Tokens per page.
    pub page_size: usize,
    /// Tokens in unlocked nodes.
    pub evictable_size: usize,
    /// Tokens in locked nodes.
    pub protected_size: usize,
    /// Nodes in depth-first order, the root first.
    pub nodes: Vec<NodeSnapshot>,
}

impl<V: Copy + std::fmt::Debug> RadixCache<V> {
    /// A depth-first copy of the tree (children ordered by first token).
    pub fn snapshot(&self) -> TreeSnapshot {
        let nodes = self
            .walk()
            .into_iter()
            .map(|v| NodeSnapshot {
                id: v.index,
                parent: v.parent,
                depth: v.depth,
                namespace: self.namespace_of(v.index).to_string(),
                tokens: v.tokens.to_vec(),
                values: v.values.iter().map(|x| format!("{x:?}")).collect(),
                lock_ref: v.lock_ref,
                last_access: v.stats.last_access,
                hit_count: v.stats.hit_count,
            })
            .collect();
        TreeSnapshot {
            page_size: self.page_size(),
            evictable_size: self.evictable_size(),
            protected_size: self.protected_size(),
            nodes,
        }
    }

    /// The tree as indented text, one node a line; long edges are shortened to their ends.
    pub fn dump_text(&self) -> String {
        let snap = self.snapshot();
        let mut out = format!(
            "radix tree: page_size {}, evictable {}, protected {}, nodes {}\n",
            snap.page_size,
            snap.evictable_size,
            snap.protected_size,
            snap.nodes.len()
        );
        for n in snap.nodes.iter().skip(1) {
            let indent = "  ".repeat(n.depth);
            let tokens = shorten(&n.tokens);
            let values = shorten(&n.values);
            let ns = if n.namespace == "shared" {
                String::new()
            } else {
                format!(" [{}]", n.namespace)
            };
            writeln!(
                out,
                "{indent}#{} len={} lock={}{ns} tokens={tokens} values={values}",
                n.id,
                n.tokens.len(),
                n.lock_ref
            )
            .expect("writing to a String cannot fail");
        }
        out
    }

    /// The snapshot as pretty-printed JSON (for a diagnostics endpoint or a test failure).
    pub fn dump_json(&self) -> String {
        serde_json::to_string_pretty(&self.snapshot()).expect(
            "a TreeSnapshot is plain structs, numbers and strings, which serde_json always \
             serializes",
        )
    }
}

fn shorten<T: std::fmt::Debug>(items: &[T]) -> String {
    const EDGE: usize = 4;
    if items.len() <= 2 * EDGE + 1 {
        format!("{items:?}")
    } else {
        let head: Vec<String> = items[..EDGE].iter().map(|t| format!("{t:?}")).collect();
        let tail: Vec<String> = items[items.len() - EDGE..]
            .iter()
            .map(|t| format!("{t:?}"))
            .collect();
        format!(
            "[{}, .. {} more .., {}]",
            head.join(", "),
            items.len() - 2 * EDGE,
            tail.join(", ")
        )
    }
}
