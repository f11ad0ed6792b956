//! The batch contract is the router's: the executor computes exactly what a
//! [`router::ForwardBatch`] describes and answers with a [`router::StepOutput`].

pub use router::{ForwardBatch, SampledToken, SequenceInput, StepOutput};

use crate::error::{ExecutorError, Result};

/// Checks a batch against the contract; `num_slots` is the KV pool size, `vocab` the vocabulary
/// size and `max_position` the RoPE table size.
pub fn validate(
    batch: &ForwardBatch,
    num_slots: usize,
    vocab: usize,
    max_position: usize,
) -> Result<()> {
    batch
        .validate(num_slots, vocab, max_position)
        .map_err(ExecutorError::from)
}
