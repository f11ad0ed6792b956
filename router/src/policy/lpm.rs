//! `lpm`: longest cached prefix first.

use super::in_batch::InBatchPrefix;
use super::prefix_match::PrefixMatches;
use super::{select_head, OrderCtx, OrderPolicy};
use crate::request::{Req, ReqId};
use crate::SchedulerConfig;
use std::cmp::Reverse;

/// Orders by descending cached-prefix length (earlier arrivals first among equals), then
/// applies in-batch prefix caching. Unlike SGLang, which falls back to FCFS above 128 waiting
/// requests, it stays cache-aware on long queues by re-matching a bounded number of requests per
/// round. Aging bound: a request passed over `max_wait_rounds` prefill rounds goes before all
/// others (first come, first served among such requests).
#[derive(Debug)]
pub(super) struct Lpm {
    matches: PrefixMatches,
    in_batch: InBatchPrefix,
    max_wait_rounds: u32,
}

impl Lpm {
    pub(super) fn new(cfg: &SchedulerConfig) -> Self {
        Lpm {
            matches: PrefixMatches::new(cfg.rematch_per_round),
            in_batch: InBatchPrefix::new(cfg),
            max_wait_rounds: cfg.max_wait_rounds,
        }
    }
}

impl OrderPolicy for Lpm {
    fn order(&mut self, ctx: OrderCtx<'_>, waiting: &mut [Box<Req>]) {
        self.matches.refresh(ctx.kv, waiting);
        let matches = &self.matches;
        let max_wait = self.max_wait_rounds;
        select_head(waiting, ctx.window, |r| {
            let overdue = r.waited_rounds >= max_wait;
            let cached = if overdue {
                0
            } else {
                matches.matched_len(r.id)
            };
            (!overdue, Reverse(cached), r.arrival)
        });
        self.in_batch
            .apply(ctx.kv.page_size(), &self.matches, waiting, ctx.window);
    }

    fn forget(&mut self, id: ReqId) {
        self.matches.forget(id);
    }
}
