//! SGLang's in-batch prefix caching, applied after a cache-aware policy ordered the queue.
//!
//! Of several waiting requests that share a prefix the cache does not hold yet, only the first
//! runs this round; the others move behind the queue and hit the cache next round, instead of
//! all computing the same prefix now.

use super::permute;
use super::prefix_match::PrefixMatches;
use crate::request::Req;
use crate::SchedulerConfig;
use radix_tree::{KeyRef, RadixCache};

#[derive(Debug)]
pub(super) struct InBatchPrefix {
    /// Requests with at most this many cached tokens are checked (`None`: the check is off).
    check: Option<usize>,
    /// A shared uncached prefix at least this long defers a request.
    deprioritize: usize,
}

impl InBatchPrefix {
    pub(super) fn new(cfg: &SchedulerConfig) -> Self {
        InBatchPrefix {
            check: cfg.in_batch_prefix_check,
            deprioritize: cfg.in_batch_prefix_deprioritize,
        }
    }

    /// Walks the ordered head (`waiting[..window]`) through a scratch radix tree of the head's
    /// own tokens; requests that find a long enough prefix there are moved to the end of the
    /// queue, keeping their relative order.
    pub(super) fn apply(
        &self,
        page_size: usize,
        matches: &PrefixMatches,
        waiting: &mut [Box<Req>],
        window: usize,
    ) {
        let Some(check) = self.check else {
            return;
        };
        let mut sim: RadixCache<()> = RadixCache::new(page_size);
        let mut deferred = Vec::new();
        let mut kept = Vec::new();
        for (i, req) in waiting[..window].iter().enumerate() {
            if matches.matched_len(req.id) > check {
                kept.push(i);
                continue;
            }
            let tokens = req.all_tokens();
            let key = KeyRef::new(&tokens, &req.namespace);
            if sim.match_prefix(key).len() >= self.deprioritize {
                deferred.push(i);
            } else {
                sim.insert(key, &vec![(); tokens.len()])
                    .expect("one value per token is what insert requires");
                kept.push(i);
            }
        }
        if deferred.is_empty() {
            return;
        }
        let mut order = kept;
        order.extend(window..waiting.len());
        order.extend(deferred);
        permute(waiting, &order);
    }
}
