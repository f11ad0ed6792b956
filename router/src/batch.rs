//! The seam between the control plane and the model: what one forward step computes.

use crate::constraint::SharedMask;
use crate::Slot;
use page_manager::tier::KvTransfer;
use radix_tree::Token;

/// What kind of step a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Prefill (possibly over a cached prefix, possibly one chunk of a long prompt).
    Extend,
    /// One new token per sequence.
    Decode,
    /// Extend and decode sequences together.
    Mixed,
}

/// Sampling parameters of one request (SGLang / OpenAI semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest most-likely set whose probability reaches top_p; 1 disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below min_p times the top probability; 0 disables.
    pub min_p: f32,
    /// Multiplicative penalty on tokens seen in prompt or output; 1 disables.
    pub repetition_penalty: f32,
    /// Subtracted once per earlier occurrence in the output; 0 disables.
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred in the output; 0 disables.
    pub presence_penalty: f32,
    /// Seed of the request's random stream (reproducible sampling); `None` = fresh entropy.
    pub seed: Option<u64>,
    /// Also return the log-probability of the chosen token.
    pub return_logprob: bool,
    /// Added to the logits of these tokens before sampling (OpenAI's `logit_bias`; -100 bans a
    /// token, 100 all but forces it).
    pub logit_bias: Vec<(Token, f32)>,
    /// Never sampled. The scheduler sets it per step: a request's stop tokens and EOS (unless
    /// `ignore_eos`) while it has fewer than `min_new_tokens` output tokens, as SGLang's
    /// min-new-tokens penalizer does. Ids outside the vocabulary are ignored.
    pub banned_tokens: Vec<Token>,
    /// Only these may be sampled (constrained decoding). The scheduler sets it per step from
    /// the request's [`TokenConstraint`](crate::TokenConstraint); `None` leaves every token open.
    /// Where `banned_tokens` would empty the set, the set wins (a grammar that can only end
    /// ends, `min_new_tokens` notwithstanding).
    pub allowed_tokens: Option<SharedMask>,
    /// Also return this many most likely tokens per position, with their log-probabilities
    /// (0 to [`MAX_TOP_LOGPROBS`]).
    pub top_logprobs: usize,
    /// Also return these tokens' log-probabilities per position (at most
    /// [`MAX_LOGPROB_TOKEN_IDS`]).
    pub logprob_token_ids: Vec<Token>,
    /// Report probabilities after sampling's filters rather than the model's (llama.cpp's
    /// `post_sampling_probs`): the chosen token's and the alternatives' come from the
    /// distribution actually sampled (temperature, top-k, top-p and min-p applied and
    /// renormalised; greedy is all on the chosen token), tokens filtered out at probability 0.
    pub post_sampling_probs: bool,
}

/// Most `top_logprobs` per position (OpenAI's bound).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most `logprob_token_ids` per request.
pub const MAX_LOGPROB_TOKEN_IDS: usize = 64;

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Argmax decoding without penalties.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            return_logprob: false,
            logit_bias: Vec::new(),
            banned_tokens: Vec::new(),
            allowed_tokens: None,
            top_logprobs: 0,
            logprob_token_ids: Vec::new(),
            post_sampling_probs: false,
        }
    }

    /// True when sampling must report alternatives beside the chosen token.
    pub fn wants_alternatives(&self) -> bool {
        self.top_logprobs > 0 || !self.logprob_token_ids.is_empty()
    }

    /// True when sampling reduces to argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Rejects out-of-range values with a reason a client can act on.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err("temperature must be finite and >= 0".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("top_p must be in (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err("min_p must be in [0, 1]".into());
        }
        if !(self.repetition_penalty.is_finite()
            && self.repetition_penalty > 0.0
            && self.repetition_penalty <= 2.0)
        {
            return Err("repetition_penalty must be in (0, 2]".into());
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !v.is_finite() || !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} must be in [-2, 2]"));
            }
        }
        if let Some((t, _)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !b.is_finite() || !(-100.0..=100.0).contains(b))
        {
            return Err(format!("logit_bias of token {t} must be in [-100, 100]"));
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"));
        }
        if self.logprob_token_ids.len() > MAX_LOGPROB_TOKEN_IDS {
            return Err(format!(
                "at most {MAX_LOGPROB_TOKEN_IDS} token ids may be asked for logprobs"
            ));
        }
        Ok(())
    }
}

/// One sequence's part of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceInput {
    /// Token ids to compute now (the uncached tail of the sequence, or one decode token).
    pub token_ids: Vec<Token>,
    /// Absolute positions of `token_ids`: `prefix_len .. seq_len`.
    pub positions: Vec<usize>,
    /// KV slots of the whole sequence, length `seq_len`: cached prefix then the new ones.
    pub slot_row: Vec<Slot>,
    /// Where to write the new tokens' K/V (`slot_row[prefix_len..]`; never slot 0).
    pub out_slots: Vec<Slot>,
    /// Sample a token at the last position (false for a prefill chunk that is not the last).
    pub sample: bool,
    /// Sampling parameters (used only when `sample`).
    pub sampling: SamplingParams,
    /// Tokens generated so far (penalties count them; seeded sampling is indexed by their number).
    pub output_ids: Vec<Token>,
    /// Prompt tokens (the repetition penalty consults them).
    pub prompt_ids: Vec<Token>,
    /// Input logprobs wanted in this step: (row among `token_ids`, the token whose
    /// log-probability under that row's logits is asked for, i.e. the token that follows the
    /// row). The runner answers in [`StepOutput::input_logprobs`], in this order; alternatives
    /// come with each when `sampling` asks for them.
    pub logprob_targets: Vec<(usize, Token)>,
}

impl SequenceInput {
    /// A sequence whose cached prefix occupies `prefix_slots` and whose new `tokens` go to
    /// `new_slots`, with greedy sampling and no history.
    pub fn new(
        tokens: Vec<Token>,
        prefix_slots: &[Slot],
        new_slots: &[Slot],
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
            logprob_targets: Vec::new(),
        }
    }

    /// Number of cached tokens before the new ones.
    pub fn prefix_len(&self) -> usize {
        self.slot_row.len().saturating_sub(self.token_ids.len())
    }

    /// Length of the whole sequence after this step.
    pub fn seq_len(&self) -> usize {
        self.slot_row.len()
    }
}

impl SequenceInput {
    /// Checks that sequence `i` of a batch lays out its new tokens consistently: one position
    /// and one output slot per token, positions running on from the prefix, and the output slots
    /// ending the slot row.
    fn check_layout(&self, i: usize) -> Result<(), BatchError> {
        let s = self;
        let n = s.token_ids.len();
        if n == 0 {
            return Err(BatchError::NoNewTokens { seq: i });
        }
        if s.positions.len() != n || s.out_slots.len() != n {
            return Err(BatchError::Layout {
                seq: i,
                tokens: n,
                positions: s.positions.len(),
                out_slots: s.out_slots.len(),
            });
        }
        if s.slot_row.len() < n {
            return Err(BatchError::ShortSlotRow { seq: i });
        }
        let prefix = s.slot_row.len() - n;
        if s.positions
            .iter()
            .enumerate()
            .any(|(j, &p)| p != prefix + j)
        {
            return Err(BatchError::Positions {
                seq: i,
                start: prefix,
                end: s.slot_row.len(),
            });
        }
        if s.slot_row[prefix..] != s.out_slots[..] {
            return Err(BatchError::OutSlots { seq: i });
        }
        Ok(())
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

impl ForwardBatch {
    /// Tokens computed by this step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.token_ids.len()).sum()
    }

    /// Checks the batch against the contract; `num_slots` is the KV pool size, `vocab` the
    /// vocabulary size and `max_position` the longest sequence the model supports.
    pub fn validate(
        &self,
        num_slots: usize,
        vocab: usize,
        max_position: usize,
    ) -> Result<(), BatchError> {
        let mut written = std::collections::HashSet::new();
        for (i, s) in self.seqs.iter().enumerate() {
            s.check_layout(i)?;
            if s.slot_row.len() > max_position {
                return Err(BatchError::TooLong {
                    seq: i,
                    len: s.slot_row.len(),
                    max: max_position,
                });
            }
            if let Some(&slot) = s.slot_row.iter().find(|&&x| x as usize >= num_slots) {
                return Err(BatchError::SlotOutsidePool {
                    seq: i,
                    slot,
                    pool: num_slots,
                });
            }
            for &slot in &s.out_slots {
                if slot == 0 {
                    return Err(BatchError::PaddingSlot { seq: i });
                }
                if !written.insert(slot) {
                    return Err(BatchError::SlotWrittenTwice { slot });
                }
            }
            if let Some(&(row, _)) = s
                .logprob_targets
                .iter()
                .find(|(r, _)| *r >= s.token_ids.len())
            {
                return Err(BatchError::LogprobRow { seq: i, row });
            }
            let biased = s.sampling.logit_bias.iter().map(|(t, _)| t);
            let targets = s.logprob_targets.iter().map(|(_, t)| t);
            if let Some(&t) = s
                .token_ids
                .iter()
                .chain(biased)
                .chain(targets)
                .find(|&&t| t as usize >= vocab)
            {
                return Err(BatchError::TokenOutsideVocab {
                    seq: i,
                    token: t,
                    vocab,
                });
            }
            s.sampling
                .validate()
                .map_err(|message| BatchError::Sampling { seq: i, message })?;
        }
        Ok(())
    }
}

/// What sampling produced for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    /// The chosen token id.
    pub token: Token,
    /// Its log-probability, when requested.
    pub logprob: Option<f32>,
    /// The most likely tokens and the asked-about ones at this position, when requested.
    pub alternatives: Option<Box<TokenAlternatives>>,
}

impl SampledToken {
    /// A token with its log-probability and nothing else.
    pub fn new(token: Token, logprob: Option<f32>) -> Self {
        SampledToken {
            token,
            logprob,
            alternatives: None,
        }
    }
}

/// Log-probabilities at one position beside the chosen token's: the most likely tokens
/// (OpenAI's `top_logprobs`, SGLang's `top_logprobs_num`) and the ones a request named
/// (SGLang's `token_ids_logprob`), from the same distribution as the chosen token's logprob.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenAlternatives {
    /// The `top_logprobs` most likely tokens, most likely first.
    pub top: Vec<(Token, f32)>,
    /// The tokens of `logprob_token_ids`, in the order asked.
    pub requested: Vec<(Token, f32)>,
}

/// Result of one step: per sequence (batch order) the sampled token, `None` when `sample` was false.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepOutput {
    /// One entry per sequence of the batch.
    pub tokens: Vec<Option<SampledToken>>,
    /// Per sequence, one entry per `logprob_targets` item: the target token with its
    /// log-probability (and alternatives when asked). May be empty when no sequence has
    /// targets.
    pub input_logprobs: Vec<Vec<SampledToken>>,
}

impl StepOutput {
    /// An output with sampled tokens and no input logprobs.
    pub fn new(tokens: Vec<Option<SampledToken>>) -> Self {
        StepOutput {
            tokens,
            input_logprobs: Vec::new(),
        }
    }
}

/// How a forward batch breaks the contract between the scheduler and a runner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A sequence computes nothing.
    #[error("sequence {seq} has no new tokens")]
    NoNewTokens {
        /// The sequence's place in the batch.
        seq: usize,
    },
    /// New tokens, positions and output slots differ in number.
    #[error(
        "sequence {seq}: {tokens} tokens but {positions} positions and {out_slots} output slots"
    )]
    Layout {
        /// The sequence's place in the batch.
        seq: usize,
        /// New tokens.
        tokens: usize,
        /// Positions.
        positions: usize,
        /// Output slots.
        out_slots: usize,
    },
    /// The slot row is shorter than the new tokens.
    #[error("sequence {seq}: slot row shorter than its new tokens")]
    ShortSlotRow {
        /// The sequence's place in the batch.
        seq: usize,
    },
    /// Positions do not run on from the prefix.
    #[error("sequence {seq}: positions must run {start}..{end}")]
    Positions {
        /// The sequence's place in the batch.
        seq: usize,
        /// The first expected position.
        start: usize,
        /// One past the last.
        end: usize,
    },
    /// The output slots are not the slot row's tail.
    #[error("sequence {seq}: output slots differ from the slot row tail")]
    OutSlots {
        /// The sequence's place in the batch.
        seq: usize,
    },
    /// The sequence is longer than the model's positions.
    #[error("sequence {seq}: length {len} exceeds the model's {max} positions")]
    TooLong {
        /// The sequence's place in the batch.
        seq: usize,
        /// Its length.
        len: usize,
        /// The model's positions.
        max: usize,
    },
    /// A slot lies outside the KV pool.
    #[error("sequence {seq}: slot {slot} outside the pool of {pool}")]
    SlotOutsidePool {
        /// The sequence's place in the batch.
        seq: usize,
        /// The slot.
        slot: Slot,
        /// The pool's size.
        pool: usize,
    },
    /// Slot 0 (padding) is written.
    #[error("sequence {seq}: slot 0 is reserved for padding")]
    PaddingSlot {
        /// The sequence's place in the batch.
        seq: usize,
    },
    /// Two tokens would write one slot.
    #[error("slot {slot} is written twice in one batch")]
    SlotWrittenTwice {
        /// The slot.
        slot: Slot,
    },
    /// An input-logprob target names a row the sequence does not compute.
    #[error("sequence {seq}: input logprob row {row} is not among its new tokens")]
    LogprobRow {
        /// The sequence's place in the batch.
        seq: usize,
        /// The row.
        row: usize,
    },
    /// A token id outside the vocabulary.
    #[error("sequence {seq}: token id {token} outside the vocabulary of {vocab}")]
    TokenOutsideVocab {
        /// The sequence's place in the batch.
        seq: usize,
        /// The token.
        token: Token,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Out-of-range sampling parameters.
    #[error("sequence {seq}: {message}")]
    Sampling {
        /// The sequence's place in the batch.
        seq: usize,
        /// What is out of range.
        message: String,
    },
}

/// A failed forward step. The scheduler aborts the batch's requests and frees their KV.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The batch broke the contract.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The runner answered with the wrong number of results.
    #[error("the runner returned {got} results for {expected} sequences")]
    WrongResultCount {
        /// Results returned.
        got: usize,
        /// Sequences in the batch.
        expected: usize,
    },
    /// The runner returned no token for a sequence that samples.
    #[error("the runner returned no token for a sampled sequence")]
    MissingToken,
    /// The runner did not return the input logprobs a sequence asked for.
    #[error(
        "the runner returned {got} input logprobs for sequence {seq}, which asked for {expected}"
    )]
    MissingInputLogprobs {
        /// The sequence.
        seq: usize,
        /// Returned.
        got: usize,
        /// Asked for.
        expected: usize,
    },
    /// The runner itself failed; the source says why.
    #[error("model step failed: {0}")]
    Runner(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

impl ModelError {
    /// A runner failure from any error (kept as the source).
    pub fn runner(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ModelError::Runner(std::sync::Arc::from(e.into()))
    }
}

/// Runs a forward batch and samples: implemented by the executor (and by fakes in tests).
pub trait ModelRunner {
    /// Computes the batch's new tokens (writing their K/V at `out_slots`) and returns one sampled
    /// token for every sequence with `sample` set.
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError>;

    /// The runner's K/V pool as bytes, for the disk tier; `None` (the default) when the runner
    /// cannot copy its K/V, which rules the disk tier out.
    fn kv_transfer(&mut self) -> Option<&mut dyn KvTransfer> {
        None
    }
}

impl<R: ModelRunner + ?Sized> ModelRunner for &mut R {
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
        (**self).forward(batch)
    }

    fn kv_transfer(&mut self) -> Option<&mut dyn KvTransfer> {
        (**self).kv_transfer()
    }
}

impl<R: ModelRunner + ?Sized> ModelRunner for Box<R> {
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
        (**self).forward(batch)
    }

    fn kv_transfer(&mut self) -> Option<&mut dyn KvTransfer> {
        (**self).kv_transfer()
    }
}
