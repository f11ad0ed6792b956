//! Scheduling policies (SGLang's `--schedule-policy`): the [`Policy`] names, and one file per
//! policy with the order it gives the waiting queue before each prefill round.
//!
//! A policy only reorders the queue ([`OrderPolicy::order`]); which of the ordered requests fit
//! is the prefill budget's business (`scheduler/prefill.rs`).

mod dfs_weight;
mod fcfs;
mod in_batch;
mod lof;
mod lpm;
mod prefix_match;
mod random;

use crate::request::{Req, ReqId};
use crate::SchedulerConfig;
use page_manager::KvCacheManager;
use std::str::FromStr;

/// The order in which waiting requests are considered for a prefill batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Policy {
    /// First come, first served (SGLang's default).
    #[default]
    Fcfs,
    /// Longest cached prefix first, with in-batch prefix deduplication and an aging bound.
    Lpm,
    /// Depth-first over the radix tree, heaviest subtrees first, so requests that share deep
    /// prefixes run together.
    DfsWeight,
    /// Longest output first (by `max_new_tokens`).
    Lof,
    /// Random order.
    Random,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 5] = [
        Policy::Fcfs,
        Policy::Lpm,
        Policy::DfsWeight,
        Policy::Lof,
        Policy::Random,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fcfs => "fcfs",
            Policy::Lpm => "lpm",
            Policy::DfsWeight => "dfs-weight",
            Policy::Lof => "lof",
            Policy::Random => "random",
        }
    }

    /// Whether the policy reads the radix tree (and so becomes FCFS when the cache is disabled).
    pub fn is_cache_aware(self) -> bool {
        matches!(self, Policy::Lpm | Policy::DfsWeight)
    }
}

/// A policy name that is none of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown schedule policy {0:?} (expected fcfs, lpm, dfs-weight, lof or random)")]
pub struct UnknownSchedulePolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownSchedulePolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSchedulePolicy(s.to_string()))
    }
}

/// What one ordering round may consult.
pub(crate) struct OrderCtx<'a> {
    /// The KV bookkeeping: cache-aware policies match waiting requests against its radix tree
    /// (matching may split tree nodes, hence `mut`).
    pub kv: &'a mut KvCacheManager,
    /// Only this many requests at the head of the queue can be admitted this round: a policy
    /// must put the `window` first requests in order; the rest may stay in any order.
    /// At least 1 and at most the queue's length.
    pub window: usize,
}

/// One scheduling policy: orders the waiting queue before a prefill round.
pub(crate) trait OrderPolicy: std::fmt::Debug + Send + Sync {
    /// Reorders `waiting` (the whole queue, at least two requests) in place.
    fn order(&mut self, ctx: OrderCtx<'_>, waiting: &mut [Box<Req>]);

    /// The request left the scheduler (finished or aborted): drop anything kept for it.
    fn forget(&mut self, _id: ReqId) {}
}

/// The ordering that `policy` applies, with its settings from `cfg`.
pub(crate) fn order_policy(policy: Policy, cfg: &SchedulerConfig) -> Box<dyn OrderPolicy> {
    match policy {
        Policy::Fcfs => Box::new(fcfs::Fcfs),
        Policy::Lpm => Box::new(lpm::Lpm::new(cfg)),
        Policy::DfsWeight => Box::new(dfs_weight::DfsWeight::new(cfg)),
        Policy::Lof => Box::new(lof::Lof),
        Policy::Random => Box::new(random::RandomOrder::new(cfg.seed)),
    }
}

/// Puts the `window` requests with the smallest keys first, sorted by key; the rest keep no
/// particular order. Keys are computed once per request.
fn select_head<K: Ord>(reqs: &mut [Box<Req>], window: usize, key: impl Fn(&Req) -> K) {
    let keys: Vec<K> = reqs.iter().map(|r| key(r)).collect();
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    if window < order.len() {
        order.select_nth_unstable_by(window - 1, |&a, &b| keys[a].cmp(&keys[b]));
    }
    order[..window].sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    permute(reqs, &order);
}

/// Reorders `items` so that position `k` receives the item that was at `order[k]`.
/// `order` must be a permutation of `0..items.len()`.
fn permute<T>(items: &mut [T], order: &[usize]) {
    debug_assert_eq!(order.len(), items.len(), "an order names every item once");
    let mut placed = vec![false; items.len()];
    for start in 0..items.len() {
        // Follow the cycle through `start`: the item that was at `start` travels along it.
        let mut k = start;
        while !placed[k] {
            placed[k] = true;
            let from = order[k];
            if from == start {
                break;
            }
            items.swap(k, from);
            k = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_applies_an_order() {
        let mut items = vec!['a', 'b', 'c', 'd', 'e'];
        permute(&mut items, &[3, 0, 4, 1, 2]);
        assert_eq!(items, vec!['d', 'a', 'e', 'b', 'c']);
        let mut same = vec![1, 2, 3];
        permute(&mut same, &[0, 1, 2]);
        assert_eq!(same, vec![1, 2, 3]);
    }

    #[test]
    fn names_round_trip_case_insensitively() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
            assert_eq!(p.name().to_uppercase().parse::<Policy>(), Ok(p));
        }
        let err = "sjf".parse::<Policy>().expect_err("not a policy");
        assert_eq!(err, UnknownSchedulePolicy("sjf".into()));
        assert_eq!(
            err.to_string(),
            "unknown schedule policy \"sjf\" (expected fcfs, lpm, dfs-weight, lof or random)"
        );
    }
}
