//! `dfs-weight`: depth-first over the radix tree, heaviest subtrees first.

use super::in_batch::InBatchPrefix;
use super::prefix_match::PrefixMatches;
use super::{permute, OrderCtx, OrderPolicy};
use crate::request::{Req, ReqId};
use crate::SchedulerConfig;
use radix_tree::{NodeId, RadixCache};
use std::cmp::Reverse;
use std::collections::HashMap;

/// SGLang's DFS-weight order: weight(node) = waiting requests whose last match ends at the node
/// plus its children's weights; children are visited heaviest first and a node's own requests
/// come after its subtree, so requests sharing deep prefixes run together. Then in-batch prefix
/// caching, as for `lpm`. Overdue requests (the aging bound of `lpm`) still go first.
#[derive(Debug)]
pub(super) struct DfsWeight {
    matches: PrefixMatches,
    in_batch: InBatchPrefix,
    max_wait_rounds: u32,
}

/// Where the waiting requests sit in the tree.
struct Placement {
    /// Queue indices of the requests whose match ends at each node.
    at_node: HashMap<NodeId, Vec<usize>>,
    /// Requests at each node and below it (nodes with none are absent).
    weight: HashMap<NodeId, usize>,
    /// Queue indices of overdue requests, which skip the tree walk.
    overdue: Vec<usize>,
}

impl DfsWeight {
    pub(super) fn new(cfg: &SchedulerConfig) -> Self {
        DfsWeight {
            matches: PrefixMatches::new(cfg.rematch_per_round),
            in_batch: InBatchPrefix::new(cfg),
            max_wait_rounds: cfg.max_wait_rounds,
        }
    }

    fn place(&self, tree: &RadixCache<page_manager::Slot>, waiting: &[Box<Req>]) -> Placement {
        let mut p = Placement {
            at_node: HashMap::new(),
            weight: HashMap::new(),
            overdue: Vec::new(),
        };
        for (i, r) in waiting.iter().enumerate() {
            if r.waited_rounds >= self.max_wait_rounds {
                p.overdue.push(i);
                continue;
            }
            // A request never matched, or whose matched node was evicted since, sits at the root.
            let node = self
                .matches
                .get(r.id)
                .map(|m| m.node)
                .filter(|&n| tree.contains(n))
                .unwrap_or(tree.root());
            p.at_node.entry(node).or_default().push(i);
            let mut cur = Some(node);
            while let Some(n) = cur {
                *p.weight.entry(n).or_default() += 1;
                cur = tree
                    .parent(n)
                    .expect("the ancestors of a live node are live");
            }
        }
        p
    }
}

/// The queue order: overdue requests by arrival, then a post-order walk from the root that
/// visits children heaviest first (ties: the smaller node id first).
fn dfs_order(
    tree: &RadixCache<page_manager::Slot>,
    waiting: &[Box<Req>],
    placement: Placement,
) -> Vec<usize> {
    let Placement {
        at_node,
        weight,
        mut overdue,
    } = placement;
    overdue.sort_by_key(|&i| waiting[i].arrival);
    let mut order = overdue;
    // Iterative post-order: (node, expanded?)
    let mut stack = vec![(tree.root(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            if let Some(reqs) = at_node.get(&node) {
                order.extend(reqs.iter().copied());
            }
            continue;
        }
        stack.push((node, true));
        let mut kids: Vec<(usize, NodeId)> = tree
            .children(node)
            .expect("the walk only reaches live nodes")
            .into_iter()
            .filter_map(|c| weight.get(&c).map(|&w| (w, c)))
            .collect();
        // Heaviest first: pushed last so it pops first.
        kids.sort_by_key(|&(w, c)| (w, Reverse(c)));
        stack.extend(kids.into_iter().map(|(_, c)| (c, false)));
    }
    order
}

impl OrderPolicy for DfsWeight {
    fn order(&mut self, ctx: OrderCtx<'_>, waiting: &mut [Box<Req>]) {
        self.matches.refresh(ctx.kv, waiting);
        let tree = ctx.kv.tree();
        let placement = self.place(tree, waiting);
        let order = dfs_order(tree, waiting, placement);
        permute(waiting, &order);
        self.in_batch
            .apply(ctx.kv.page_size(), &self.matches, waiting, ctx.window);
    }

    fn forget(&mut self, id: ReqId) {
        self.matches.forget(id);
    }
}
