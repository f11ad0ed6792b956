//! Scheduler settings, their defaults, and SGLang's scheduler constants.

use crate::error::RouterError;
use crate::policy::Policy;
use page_manager::ManagerConfig;
use radix_tree::{EvictionPolicy, Token};

/// SGLang's `--page-size` default: one token per KV page.
const PAGE_SIZE: usize = 1;
/// SGLang's `--max-prefill-tokens` default.
const MAX_PREFILL_TOKENS: usize = 16_384;
/// SGLang's `--chunked-prefill-size` on GPUs below ~35 GB (larger GPUs get larger chunks).
const CHUNKED_PREFILL_SIZE: usize = 2_048;
/// SGLang's `--schedule-conservativeness` default.
const SCHEDULE_CONSERVATIVENESS: f64 = 1.0;
/// SGLang's `SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION`: a request reserves decode room for at most
/// this many of its `max_new_tokens`.
const CLIP_MAX_NEW_TOKENS: usize = 4_096;
/// SGLang's `SGLANG_RETRACT_DECODE_STEPS`: after a retraction, room is made for the survivors to
/// decode this many steps.
const RETRACT_DECODE_STEPS: usize = 20;
/// SGLang's `IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD`.
const IN_BATCH_PREFIX_CHECK: usize = 32;
/// SGLang's `IN_BATCH_PREFIX_CACHING_DEPRIORITIZE_THRESHOLD`.
const IN_BATCH_PREFIX_DEPRIORITIZE: usize = 32;
/// radixserve's default for [`SchedulerConfig::defer_shared_prefill`]: SGLang's in-batch
/// threshold, so that a run worth deferring is one SGLang's cache-aware policies act on too.
const DEFER_SHARED_PREFILL: usize = 32;

/// SGLang's `SGLANG_INIT_NEW_TOKEN_RATIO`: the share of their remaining `max_new_tokens` that
/// running requests are assumed to still generate, at start (scaled by the conservativeness).
pub(super) const INIT_NEW_TOKEN_RATIO: f64 = 0.7;
/// SGLang's `SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR`: the ratio decays to this fraction of its
/// initial value.
pub(super) const MIN_NEW_TOKEN_RATIO_FACTOR: f64 = 0.14;
/// SGLang's `SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS`: decode steps to decay from initial to minimum.
pub(super) const NEW_TOKEN_RATIO_DECAY_STEPS: f64 = 600.0;

/// Scheduler settings; names follow SGLang's server arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Tokens per KV page (`--page-size`).
    pub page_size: usize,
    /// Allocatable KV pages (the pool size; see `page_manager::KvCapacity`).
    pub num_pages: usize,
    /// Longest prompt plus output (`--context-length`).
    pub context_length: usize,
    /// Most requests decoding at once (`--max-running-requests`).
    pub max_running_requests: usize,
    /// Most prompt tokens in one prefill batch; the first request may exceed it (`--max-prefill-tokens`).
    pub max_prefill_tokens: usize,
    /// Split prompts into chunks of at most this many tokens (`--chunked-prefill-size`); `None` disables.
    pub chunked_prefill_size: Option<usize>,
    /// Waiting-queue order (`--schedule-policy`).
    pub policy: Policy,
    /// Which cached prefixes go first under memory pressure (`--radix-eviction-policy`).
    pub eviction: EvictionPolicy,
    /// Turn prefix caching off (`--disable-radix-cache`).
    pub disable_radix_cache: bool,
    /// End-of-sequence token ids of the model.
    pub eos_token_ids: Vec<Token>,
    /// Scales the initial decode-reservation ratio (`--schedule-conservativeness`).
    pub schedule_conservativeness: f64,
    /// Cap on one request's `max_new_tokens` when reserving decode memory.
    pub clip_max_new_tokens: usize,
    /// Steps of decode room to make for survivors after a retraction.
    pub retract_decode_steps: usize,
    /// In-batch prefix caching: requests with at most this many cached tokens are checked against
    /// the other waiting requests (`None` disables).
    pub in_batch_prefix_check: Option<usize>,
    /// In-batch prefix caching: a shared uncached prefix this long defers a request a round.
    pub in_batch_prefix_deprioritize: usize,
    /// Prefill batches carry one decode token of every running request (MIXED steps,
    /// `--enable-mixed-chunk`); needs chunked prefill, as in SGLang.
    pub enable_mixed_chunk: bool,
    /// Admission passes a waiting request over for a round when a request already in the
    /// prefill batch computes at least this many of the prompt tokens it would compute (its
    /// uncached prefix); next round it finds them cached. `None`: SGLang's behaviour, where
    /// both compute them. Ignored without the radix cache (nothing would be found next round).
    pub defer_shared_prefill: Option<usize>,
    /// Aging bound for cache-aware policies: a request passed over this many prefill rounds is
    /// considered before all others (first come, first served among such requests).
    pub max_wait_rounds: u32,
    /// Cache-aware policies re-match at most this many waiting requests per round (new ones
    /// first, then the longest unrefreshed); the rest keep their last match as their sort key.
    pub rematch_per_round: usize,
    /// Waiting requests ordered per round (the rest wait their turn); keeps ordering affordable
    /// with very long queues.
    pub order_window: usize,
    /// Seed of the `random` policy.
    pub seed: u64,
    /// Check the full KV accounting after every step (on by default in debug builds).
    pub check_invariants: bool,
}

/// SGLang's defaults where SGLang has one (see the constants above); radixserve's own for the
/// pool and context sizes, the request cap, and the settings SGLang does not have (aging,
/// re-match budget, ordering window, deferring shared prefills).
impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            page_size: PAGE_SIZE,
            num_pages: 16_384,
            context_length: 8_192,
            max_running_requests: 64,
            max_prefill_tokens: MAX_PREFILL_TOKENS,
            chunked_prefill_size: Some(CHUNKED_PREFILL_SIZE),
            policy: Policy::default(),
            eviction: EvictionPolicy::Lru,
            disable_radix_cache: false,
            eos_token_ids: Vec::new(),
            schedule_conservativeness: SCHEDULE_CONSERVATIVENESS,
            clip_max_new_tokens: CLIP_MAX_NEW_TOKENS,
            retract_decode_steps: RETRACT_DECODE_STEPS,
            in_batch_prefix_check: Some(IN_BATCH_PREFIX_CHECK),
            in_batch_prefix_deprioritize: IN_BATCH_PREFIX_DEPRIORITIZE,
            enable_mixed_chunk: false,
            defer_shared_prefill: Some(DEFER_SHARED_PREFILL),
            max_wait_rounds: 32,
            rematch_per_round: 256,
            order_window: 1_024,
            seed: 0,
            check_invariants: cfg!(debug_assertions),
        }
    }
}

impl SchedulerConfig {
    /// Refuses values the scheduler cannot work with (the KV manager checks its own).
    pub(super) fn validate(&self) -> Result<(), RouterError> {
        if self.max_running_requests == 0 {
            return Err(RouterError::Config(
                "max_running_requests must be positive".into(),
            ));
        }
        if self
            .chunked_prefill_size
            .is_some_and(|c| c < self.page_size.max(1))
        {
            return Err(RouterError::Config(format!(
                "chunked_prefill_size must be at least the page size ({})",
                self.page_size
            )));
        }
        if self.max_prefill_tokens == 0 {
            return Err(RouterError::Config(
                "max_prefill_tokens must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The KV manager's settings: a request row per running request, plus one spare.
    pub(super) fn manager_config(&self) -> ManagerConfig {
        ManagerConfig {
            page_size: self.page_size,
            num_pages: self.num_pages,
            max_rows: self.max_running_requests + 1,
            max_context: self.context_length,
            disable_radix_cache: self.disable_radix_cache,
            eviction: self.eviction,
        }
    }

    /// Whether prefill batches mix in decode tokens: SGLang's `is_mixed_chunk`, mixing with
    /// chunked prefill on.
    pub(super) fn mixes(&self) -> bool {
        self.enable_mixed_chunk && self.chunked_prefill_size.is_some()
    }

    /// The deferral threshold in effect: none without the radix cache.
    pub(super) fn effective_defer(&self) -> Option<usize> {
        self.defer_shared_prefill
            .filter(|_| !self.disable_radix_cache)
    }

    /// The policy in effect: SGLang turns a cache-aware policy into FCFS when the cache is
    /// disabled.
    pub(super) fn effective_policy(&self) -> Policy {
        if self.disable_radix_cache && self.policy.is_cache_aware() {
            Policy::Fcfs
        } else {
            self.policy
        }
    }
}
