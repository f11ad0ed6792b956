//! Admission that does not compute one prompt prefix twice in a batch (beyond SGLang).
//!
//! Under SGLang's FCFS, requests that arrive together with the same uncached system prompt are
//! admitted into one prefill batch, and each computes the whole prompt: four clients starting
//! at once compute it four times. The cache-aware policies' in-batch prefix caching only moves
//! such requests behind the queue, so they still join the batch when the budget allows.
//!
//! Here a waiting request is passed over for this round when a request already in the batch
//! computes at least [`SchedulerConfig::defer_shared_prefill`] of the tokens it would compute
//! (same namespace, same leading tokens beyond what the cache holds for it). It keeps its place
//! in the queue and finds those tokens cached next round. Only the round's admission order
//! changes: every request computes the same tokens to the same values either way.
//!
//! [`SchedulerConfig::defer_shared_prefill`]: crate::SchedulerConfig::defer_shared_prefill

use crate::request::Req;
use radix_tree::{KeyRef, Namespace, RadixCache, Token};

/// The prompts computed in the prefill batch being formed.
pub(super) struct BatchPrompts {
    /// Whole token sequences of the batch's requests, by namespace (values unused).
    tree: RadixCache<()>,
    /// Shortest shared uncached run that defers a request (`None`: never defer).
    threshold: Option<usize>,
}

impl BatchPrompts {
    /// An empty batch; `threshold: None` turns deferral off.
    pub(super) fn new(page_size: usize, threshold: Option<usize>) -> Self {
        BatchPrompts {
            tree: RadixCache::new(page_size),
            threshold,
        }
    }

    /// Records a request that computes (part of) its prompt in this batch.
    pub(super) fn add(&mut self, req: &Req) {
        if self.threshold.is_none() {
            return;
        }
        let tokens = req.all_tokens();
        // Inserting one value per token cannot fail; a failure would only mean less deferral.
        let _ = self.tree.insert(
            KeyRef::new(&tokens, &req.namespace),
            &vec![(); tokens.len()],
        );
    }

    /// True when a request of `tokens` in `namespace`, which finds `cached` of them in the
    /// cache, would compute at least the threshold's worth of tokens that a request in this
    /// batch computes.
    pub(super) fn defers(
        &mut self,
        tokens: &[Token],
        namespace: &Namespace,
        cached: usize,
    ) -> bool {
        let Some(threshold) = self.threshold else {
            return false;
        };
        let shared = self.tree.match_prefix(KeyRef::new(tokens, namespace)).len();
        shared >= cached + threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SamplingParams, StopConditions};

    fn req(id: u64, tokens: Vec<u32>) -> Req {
        Req::new(
            id,
            tokens,
            SamplingParams::greedy(),
            StopConditions::default(),
        )
    }

    #[test]
    fn defers_only_a_long_shared_uncached_run_in_the_same_namespace() {
        let system: Vec<u32> = (0..100).collect();
        let with =
            |q: u32| -> Vec<u32> { system.iter().copied().chain([1000 + q, 2000 + q]).collect() };
        let mut batch = BatchPrompts::new(1, Some(32));
        batch.add(&req(1, with(1)));
        let (second, shared) = (with(2), Namespace::shared());
        assert!(
            batch.defers(&second, &shared, 0),
            "100 shared uncached tokens"
        );
        assert!(
            batch.defers(&second, &shared, 68),
            "exactly the threshold left"
        );
        assert!(
            !batch.defers(&second, &shared, 69),
            "the cache holds all but 31"
        );
        let tenant = Namespace::salted("tenant-b");
        assert!(!batch.defers(&second, &tenant, 0), "namespaces never share");
        let other: Vec<u32> = (500..600).collect();
        assert!(!batch.defers(&other, &shared, 0), "no shared tokens");
        let mut off = {
            let mut b = BatchPrompts::new(1, None);
            b.add(&req(1, with(1)));
            b
        };
        assert!(!off.defers(&second, &shared, 0), "deferral off");
    }
}
