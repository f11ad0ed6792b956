//! Executor-local mirror of the design's `ForwardBatch` contract, and what a step returns.

use crate::error::{ExecutorError, Result};
use crate::sampling::SamplingParams;

/// What kind of step a batch is (informational: every mode runs through the same extend path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Prefill (possibly over a cached prefix, possibly a chunk).
    Extend,
    /// One new token per sequence.
    Decode,
    /// Extend and decode sequences together.
    Mixed,
}

/// One sequence's part of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceInput {
    /// Token ids to compute now (the uncached tail of the sequence).
    pub token_ids: Vec<u32>,
    /// Absolute positions of `token_ids`: `prefix_len .. seq_len` (contiguous).
    pub positions: Vec<usize>,
    /// KV slots of the whole sequence, length `seq_len`: prefix slots then the new ones.
    pub slot_row: Vec<usize>,
    /// Where to write the new tokens' K/V (equal to `slot_row[prefix_len..]`; never slot 0).
    pub out_slots: Vec<usize>,
    /// Produce logits and sample at the last position (the sequence finished its prefill).
    pub sample: bool,
    /// Sampling parameters (used only when `sample`).
    pub sampling: SamplingParams,
    /// Tokens already generated for this request: penalties count them, and the seeded random
    /// stream is indexed by their number so that sampling is reproducible.
    pub output_ids: Vec<u32>,
    /// Prompt tokens, consulted only by the repetition penalty (may be left empty otherwise).
    pub prompt_ids: Vec<u32>,
}

impl SequenceInput {
    /// A sequence with default (greedy) sampling and no history: prefix slots `prefix_slots`,
    /// new tokens `tokens` written to `new_slots`.
    pub fn new(
        tokens: Vec<u32>,
        prefix_slots: &[usize],
        new_slots: &[usize],
        sample: bool,
    ) -> Self {
        let prefix_len = prefix_slots.len();
        let mut slot_row = prefix_slots.to_vec();
        slot_row.extend_from_slice(new_slots);
        Self {
            positions: (prefix_len..prefix_len + tokens.len()).collect(),
            token_ids: tokens,
            slot_row,
            out_slots: new_slots.to_vec(),
            sample,
            sampling: SamplingParams::greedy(),
            output_ids: Vec::new(),
            prompt_ids: Vec::new(),
        }
    }

    /// Number of cached tokens before the new ones.
    pub fn prefix_len(&self) -> usize {
        self.slot_row.len().saturating_sub(self.token_ids.len())
    }
}

/// A batch of sequences for one forward step.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardBatch {
    /// Step kind.
    pub mode: ForwardMode,
    /// The sequences, in output order.
    pub seqs: Vec<SequenceInput>,
}

/// What sampling produced for one sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledToken {
    /// Chosen token id.
    pub token: u32,
    /// Log-probability of the chosen token, when requested.
    pub logprob: Option<f32>,
}

/// Result of one step: per sequence (batch order) the sampled token, `None` when `sample` was false.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// One entry per sequence of the batch.
    pub tokens: Vec<Option<SampledToken>>,
}

impl ForwardBatch {
    /// Checks the batch against the contract; `num_slots` is the KV pool size, `vocab` the
    /// vocabulary size and `max_position` the RoPE table size.
    pub fn validate(&self, num_slots: usize, vocab: usize, max_position: usize) -> Result<()> {
        let bad = |s: String| Err(ExecutorError::InvalidBatch(s));
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.seqs.iter().enumerate() {
            let n = s.token_ids.len();
            if n == 0 {
                return bad(format!("sequence {i} has no new tokens"));
            }
            if s.positions.len() != n || s.out_slots.len() != n {
                return bad(format!(
                    "sequence {i}: {n} tokens but {} positions and {} output slots",
                    s.positions.len(),
                    s.out_slots.len()
                ));
            }
            if s.slot_row.len() < n {
                return bad(format!(
                    "sequence {i}: slot row shorter than the new tokens"
                ));
            }
            let prefix = s.slot_row.len() - n;
            if s.positions
                .iter()
                .enumerate()
                .any(|(j, &p)| p != prefix + j)
            {
                return bad(format!(
                    "sequence {i}: positions must be {prefix}..{} (prefix_len..seq_len)",
                    s.slot_row.len()
                ));
            }
            if s.slot_row[prefix..] != s.out_slots[..] {
                return bad(format!(
                    "sequence {i}: output slots differ from the slot row tail"
                ));
            }
            if s.slot_row.len() > max_position {
                return bad(format!(
                    "sequence {i}: length {} exceeds the model's {max_position} positions",
                    s.slot_row.len()
                ));
            }
            if let Some(&slot) = s.slot_row.iter().find(|&&x| x >= num_slots) {
                return bad(format!(
                    "sequence {i}: slot {slot} outside the pool of {num_slots}"
                ));
            }
            for &slot in &s.out_slots {
                if slot == 0 {
                    return bad(format!("sequence {i}: slot 0 is reserved for padding"));
                }
                if !seen.insert(slot) {
                    return bad(format!("slot {slot} is written twice in one batch"));
                }
            }
            if let Some(&t) = s.token_ids.iter().find(|&&t| t as usize >= vocab) {
                return bad(format!(
                    "sequence {i}: token id {t} outside the vocabulary of {vocab}"
                ));
            }
            s.sampling.validate()?;
        }
        Ok(())
    }
}
