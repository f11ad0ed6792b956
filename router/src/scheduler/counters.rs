//! Monotonic counters of a scheduler's work.

/// Monotonic counters (what `/metrics` reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests accepted.
    pub requests: u64,
    /// Requests finished (any reason).
    pub finished: u64,
    /// Requests aborted.
    pub aborted: u64,
    /// Prefix-cache queries at admission, in prompt tokens.
    pub prefix_query_tokens: u64,
    /// Prefix-cache hits at admission, in tokens.
    pub prefix_hit_tokens: u64,
    /// Tokens computed by the model.
    pub tokens_computed: u64,
    /// Prompt tokens skipped thanks to the cache.
    pub tokens_skipped: u64,
    /// Tokens generated.
    pub tokens_generated: u64,
    /// Prefill (extend) steps.
    pub prefill_steps: u64,
    /// Decode steps.
    pub decode_steps: u64,
    /// Sequences summed over prefill steps.
    pub prefill_batch_seqs: u64,
    /// Sequences summed over decode steps.
    pub decode_batch_seqs: u64,
    /// Retractions.
    pub retractions: u64,
    /// Failed model steps.
    pub model_errors: u64,
}
