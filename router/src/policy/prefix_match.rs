//! What the cache-aware policies (`lpm`, `dfs-weight`) remember between rounds: each waiting
//! request's last match against the radix tree.
//!
//! SGLang re-matches every waiting request every round. With long queues that dominates the
//! step time, so here at most `rematch_per_round` requests are re-matched per round (never
//! matched ones first, then round-robin through the queue); the others keep their last match.

use crate::request::{Req, ReqId};
use page_manager::KvCacheManager;
use radix_tree::NodeId;
use std::collections::HashMap;

/// A request's last match against the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Match {
    /// Matched tokens (of the prompt plus any output, whole pages).
    pub len: usize,
    /// The deepest matched node (it may have been evicted since).
    pub node: NodeId,
    /// The round of the match (rounds count from 1).
    round: u64,
}

/// The last match of every waiting request that was matched at least once, keyed by id; kept
/// until the request leaves the scheduler (a retracted request keeps its match).
#[derive(Debug)]
pub(super) struct PrefixMatches {
    matches: HashMap<ReqId, Match>,
    /// Ordering rounds so far.
    round: u64,
    /// Where the round-robin refresh continues (an index into the queue, modulo its length).
    cursor: usize,
    rematch_per_round: usize,
}

impl PrefixMatches {
    pub(super) fn new(rematch_per_round: usize) -> Self {
        PrefixMatches {
            matches: HashMap::new(),
            round: 0,
            cursor: 0,
            rematch_per_round,
        }
    }

    /// The request's last match, if it was ever matched.
    pub(super) fn get(&self, id: ReqId) -> Option<&Match> {
        self.matches.get(&id)
    }

    /// Cached tokens the request had at its last match; a request never matched yet counts as
    /// having none.
    pub(super) fn matched_len(&self, id: ReqId) -> usize {
        self.get(id).map_or(0, |m| m.len)
    }

    pub(super) fn forget(&mut self, id: ReqId) {
        self.matches.remove(&id);
    }

    /// Starts a round: re-matches up to `rematch_per_round` waiting requests against the tree,
    /// never-matched ones first, then round-robin through the queue, so every match is
    /// refreshed within `len / rematch_per_round` rounds.
    pub(super) fn refresh(&mut self, kv: &mut KvCacheManager, waiting: &[Box<Req>]) {
        self.round += 1;
        let n = waiting.len();
        let budget = self.rematch_per_round.min(n);
        let mut done = 0;
        for req in waiting {
            if done >= budget {
                break;
            }
            if !self.matches.contains_key(&req.id) {
                self.rematch(kv, req);
                done += 1;
            }
        }
        let mut scanned = 0;
        while done < budget && scanned < n {
            let req = &waiting[self.cursor % n];
            self.cursor = self.cursor.wrapping_add(1);
            scanned += 1;
            if self.get(req.id).is_none_or(|m| m.round != self.round) {
                self.rematch(kv, req);
                done += 1;
            }
        }
    }

    /// Matches the request's whole sequence (prompt and output so far), as SGLang's LPM does.
    fn rematch(&mut self, kv: &mut KvCacheManager, req: &Req) {
        let hit = if req.output.is_empty() {
            kv.match_prefix(&req.namespace, &req.prompt)
        } else {
            kv.match_prefix(&req.namespace, &req.all_tokens())
        };
        let m = Match {
            len: hit.len,
            node: hit.last_node,
            round: self.round,
        };
        self.matches.insert(req.id, m);
    }
}
