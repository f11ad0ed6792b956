//! Decode memory (SGLang's `update_running_batch`): before each decode step every running
//! request needs room for one more token. When even eviction cannot make it, requests are
//! retracted (their KV freed, they rejoin the queue and recompute later), and `new_token_ratio`,
//! the share of the remaining `max_new_tokens` that admission reserves, is raised.

use super::config::{
    INIT_NEW_TOKEN_RATIO, MIN_NEW_TOKEN_RATIO_FACTOR, NEW_TOKEN_RATIO_DECAY_STEPS,
};
use super::{Admitted, Scheduler, ROW_IN_USE};
use crate::request::FinishReason;

/// Sort key of running requests before a retraction: the request retracted first sorts last
/// (fewest generated tokens; among equals the longest prompt, then the latest arrival).
fn retraction_key(output_len: usize, prompt_len: usize, arrival: u64) -> impl Ord {
    (std::cmp::Reverse(output_len), prompt_len, arrival)
}

/// The order in which running requests `(generated, prompt_len)`, listed in arrival order,
/// would be retracted.
pub fn retraction_order(reqs: &[(usize, usize)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..reqs.len()).collect();
    idx.sort_by_key(|&i| retraction_key(reqs[i].0, reqs[i].1, i as u64));
    idx.reverse();
    idx
}

/// SGLang's decode-reservation ratio after a retraction:
/// `min(1, (decoded + steps * survivors) / (sum of max_new_tokens + 1))`.
pub fn retract_ratio(decoded: usize, survivors: usize, steps: usize, max_new_sum: usize) -> f64 {
    ((decoded + steps * survivors) as f64 / (max_new_sum + 1) as f64).min(1.0)
}

/// SGLang's `new_token_ratio`: starts at `min(0.7 * conservativeness, 1)`, decays linearly with
/// each decode step that fits to 14% of that, and is set by [`retract_ratio`] on a retraction.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewTokenRatio {
    value: f64,
    min: f64,
    decay: f64,
}

impl NewTokenRatio {
    pub(super) fn new(schedule_conservativeness: f64) -> Self {
        let init = (INIT_NEW_TOKEN_RATIO * schedule_conservativeness).min(1.0);
        let min = init * MIN_NEW_TOKEN_RATIO_FACTOR;
        NewTokenRatio {
            value: init,
            min,
            decay: (init - min) / NEW_TOKEN_RATIO_DECAY_STEPS,
        }
    }

    pub(super) fn value(self) -> f64 {
        self.value
    }

    fn decay(&mut self) {
        self.value = (self.value - self.decay).max(self.min);
    }
}

impl Scheduler {
    /// Whether every running request can get its next token's KV (evicting if need be).
    pub(super) fn decode_fits(&self) -> bool {
        let pages: usize = self
            .running
            .iter()
            .map(|a| self.kv.pages_needed(a.row, 1).expect(ROW_IN_USE))
            .sum();
        pages * self.kv.page_size() <= self.kv.allocatable_size()
    }

    /// Makes room for one token per running request: retracts requests (fewest outputs first,
    /// longest prompt breaking ties, never the last one) while even eviction cannot, and aborts
    /// the last one if it alone does not fit. Returns the number retracted.
    pub(super) fn ensure_decode_memory(&mut self) -> usize {
        if self.decode_fits() {
            self.ratio.decay();
            return 0;
        }
        let retracted = self.retract_until_fits();
        if !self.decode_fits() {
            self.abort_unservable();
        }
        self.make_room_for_survivors();
        let decoded: usize = self.running.iter().map(|a| a.req.output.len()).sum();
        let max_new: usize = self.running.iter().map(|a| a.req.stop.max_new_tokens).sum();
        self.ratio.value = retract_ratio(
            decoded,
            self.running.len(),
            self.cfg.retract_decode_steps,
            max_new,
        );
        retracted
    }

    fn retract_until_fits(&mut self) -> usize {
        // Sort so that the request to retract first is last.
        self.running
            .sort_by_key(|a| retraction_key(a.req.output.len(), a.req.prompt.len(), a.req.arrival));
        let mut retracted = 0;
        while !self.decode_fits() && self.running.len() > 1 {
            let a = self
                .running
                .pop()
                .expect("the loop runs while two or more requests run");
            self.retract(a);
            retracted += 1;
        }
        retracted
    }

    /// Frees the request's KV without caching it (SGLang's `release_kv_cache(is_insert=False)`)
    /// and queues it again, behind the requests already waiting.
    fn retract(&mut self, a: Admitted) {
        let Admitted { mut req, row } = a;
        if let Err(e) = self.kv.release(row) {
            self.kv_fault(Some(req.id), "retraction release", e);
        }
        req.reset_for_retract();
        self.counters.retractions += 1;
        self.waiting.push(Box::new(req));
    }

    /// Even one request cannot grow: it cannot be served with this pool.
    fn abort_unservable(&mut self) {
        if let Some(a) = self.running.pop() {
            let reason = FinishReason::Abort {
                message: "out of KV memory: the request does not fit in the pool".into(),
            };
            self.finish_admitted(a, reason, true);
        }
    }

    /// Evicts cached prefixes so that the survivors can decode `retract_decode_steps` steps.
    fn make_room_for_survivors(&mut self) {
        let room = self.running.len() * self.cfg.retract_decode_steps;
        let available = self.kv.available_size();
        if available < room {
            if let Err(e) = self.kv.evict(room - available) {
                self.kv_fault(None, "eviction after a retraction", e);
            }
        }
    }
}
