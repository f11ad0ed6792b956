//! Requests and their state machine.

use std::sync::Arc;

use crate::batch::{SampledToken, SamplingParams};
use crate::constraint::{ConstraintState, TokenConstraint};
use crate::error::RouterError;
use crate::limits::TokenLimit;
use radix_tree::{Namespace, Token};

/// A request id, unique among live requests of one scheduler.
pub type ReqId = u64;

/// When generation stops (decided by the scheduler after each sampled token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopConditions {
    /// Generate at most this many tokens (0: prefill only).
    pub max_new_tokens: usize,
    /// Ignore stop tokens and EOS until this many tokens were generated.
    pub min_new_tokens: usize,
    /// Extra token ids that end generation.
    pub stop_token_ids: Vec<Token>,
    /// Keep generating past the model's end-of-sequence tokens and the stop tokens (SGLang:
    /// `ignore_eos` turns off every token-based stop).
    pub ignore_eos: bool,
}

impl Default for StopConditions {
    fn default() -> Self {
        StopConditions {
            max_new_tokens: 128,
            min_new_tokens: 0,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why a request finished (SGLang's `finish_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token (or, decided by the caller, a stop string) ended generation.
    Stop {
        /// The stop token, when a token matched.
        token: Option<Token>,
        /// The stop string, when text matched.
        text: Option<String>,
    },
    /// `max_new_tokens` was reached.
    Length {
        /// The limit that was reached.
        length: usize,
    },
    /// The request was aborted (by the client, or because it could not be served).
    Abort {
        /// Why.
        message: String,
    },
}

impl FinishReason {
    /// SGLang's / OpenAI's name for the reason: `stop`, `length` or `abort`.
    pub fn kind(&self) -> &'static str {
        match self {
            FinishReason::Stop { .. } => "stop",
            FinishReason::Length { .. } => "length",
            FinishReason::Abort { .. } => "abort",
        }
    }
}

/// Where a request is in its life. A finished request leaves the scheduler (its end is
/// reported by an `Event::Finished`), so it has no status of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqStatus {
    /// Queued (new, or retracted with its output so far).
    Waiting,
    /// Admitted; its prompt is being computed in chunks.
    Prefilling,
    /// Generating one token per step.
    Decoding,
}

/// A generation request as the scheduler tracks it.
#[derive(Debug, Clone)]
pub struct Req {
    /// Caller-chosen id.
    pub id: ReqId,
    /// Cache namespace: requests only share cached prefixes within one namespace.
    pub namespace: Namespace,
    /// Prompt token ids.
    pub prompt: Vec<Token>,
    /// Generated token ids so far.
    pub output: Vec<Token>,
    /// How to sample.
    pub sampling: SamplingParams,
    /// When to stop.
    pub stop: StopConditions,
    /// First prompt position whose logprob is wanted (SGLang's `logprob_start_len`, with
    /// `sampling.return_logprob`): the reusable prefix stops before it, so the logits that
    /// score it are computed.
    pub logprob_start: Option<usize>,
    /// Log-probabilities of the generated tokens, when requested.
    pub output_logprobs: Vec<f32>,
    /// Prompt tokens from `logprob_start` on with their log-probabilities (the first prompt
    /// token has none), filled as the prompt is computed.
    pub input_logprobs: Vec<SampledToken>,
    /// Whether `input_logprobs` were reported (they are, once, after the whole prompt).
    pub(crate) input_logprobs_sent: bool,
    /// Report the prompt's progress after each computed chunk of its first prefill
    /// ([`Event::Progress`](crate::Event::Progress); llama.cpp's `return_progress`).
    pub report_progress: bool,
    /// Constrained decoding (structured output): which tokens may come next.
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// Queued, mid-prefill or decoding.
    pub(crate) status: ReqStatus,
    /// Arrival order among the scheduler's requests (a tie-breaker for the policies).
    pub(crate) arrival: u64,
    /// Prefill rounds that passed this request over while it waited (the aging bound of the
    /// cache-aware policies).
    pub(crate) waited_rounds: u32,
    /// Prompt tokens served from the cache (SGLang's `cached_tokens`; frozen once retracted).
    pub(crate) cached_tokens: usize,
    /// Tokens with KV after the request's latest admission, cached or computed (SGLang's
    /// `already_computed`): the prefix a later chunk finds is the request's own work, not a hit.
    pub(crate) already_computed: usize,
    /// Times the request was retracted under memory pressure.
    pub(crate) retractions: u32,
    /// A finish asked for while the request runs (SGLang's `to_finish`); applied at the next step.
    pub(crate) pending_finish: Option<FinishReason>,
}

impl Req {
    /// Checks everything about a request that does not depend on the model: a non-empty prompt,
    /// prompt plus `max_new_tokens` within `limit`, `min_new_tokens <= max_new_tokens`, and the
    /// sampling ranges. The one validation both the scheduler (`add_request`) and the engine
    /// (before queueing) apply.
    pub fn validate(&self, limit: TokenLimit) -> Result<(), RouterError> {
        if self.prompt.is_empty() {
            return Err(RouterError::InvalidRequest("the prompt is empty".into()));
        }
        limit.check(self.prompt.len(), self.stop.max_new_tokens)?;
        if self.stop.min_new_tokens > self.stop.max_new_tokens {
            return Err(RouterError::InvalidRequest(
                "min_new_tokens exceeds max_new_tokens".into(),
            ));
        }
        if let Some(s) = self.logprob_start {
            if s >= self.prompt.len() {
                return Err(RouterError::InvalidRequest(format!(
                    "logprob_start_len {s} must be below the prompt's length {}",
                    self.prompt.len()
                )));
            }
        }
        self.sampling
            .validate()
            .map_err(RouterError::InvalidRequest)
    }

    /// A request in the shared namespace.
    pub fn new(
        id: ReqId,
        prompt: Vec<Token>,
        sampling: SamplingParams,
        stop: StopConditions,
    ) -> Self {
        Req {
            id,
            namespace: Namespace::shared(),
            prompt,
            output: Vec::new(),
            sampling,
            stop,
            logprob_start: None,
            output_logprobs: Vec::new(),
            input_logprobs: Vec::new(),
            input_logprobs_sent: false,
            report_progress: false,
            constraint: None,
            status: ReqStatus::Waiting,
            arrival: 0,
            waited_rounds: 0,
            cached_tokens: 0,
            already_computed: 0,
            retractions: 0,
            pending_finish: None,
        }
    }

    /// The same request under a decoding constraint.
    pub fn with_constraint(mut self, constraint: Box<dyn TokenConstraint>) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// The same request in another cache namespace.
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        self.namespace = namespace;
        self
    }

    /// Where the request is.
    pub fn status(&self) -> ReqStatus {
        self.status
    }

    /// Prompt tokens that were served from the cache (SGLang's `cached_tokens`).
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    /// How often the request was retracted under memory pressure.
    pub fn retractions(&self) -> u32 {
        self.retractions
    }

    /// The most of the prompt that may come from the cache: with input logprobs from position
    /// `s`, positions before `s - 1` (the logits at `s - 1` score token `s`).
    pub(crate) fn max_cached_prefix(&self) -> Option<usize> {
        self.logprob_start
            .filter(|_| self.sampling.return_logprob)
            .map(|s| s.saturating_sub(1))
    }

    /// The input logprobs a computation of positions `kv_len .. kv_len + n` can supply, as
    /// `(row, token)` targets: each row's logits score the prompt token after it. Positions
    /// already scored (before a retraction) are not asked again.
    pub(crate) fn logprob_targets(&self, kv_len: usize, n: usize) -> Vec<(usize, Token)> {
        let Some(start) = self.logprob_start.filter(|_| self.sampling.return_logprob) else {
            return Vec::new();
        };
        // Entries so far cover positions `start..`; the first prompt token is never scored.
        let next = start + self.input_logprobs.len();
        (0..n)
            .filter_map(|r| {
                let p = kv_len + r + 1;
                (p >= next.max(1) && p < self.prompt.len()).then(|| (r, self.prompt[p]))
            })
            .collect()
    }

    /// Records the input logprobs a step computed; the first prompt token, when asked for,
    /// comes first with no logprob.
    pub(crate) fn add_input_logprobs(&mut self, scored: Vec<SampledToken>) {
        if self.input_logprobs.is_empty() && self.logprob_start == Some(0) && !scored.is_empty() {
            self.input_logprobs
                .push(SampledToken::new(self.prompt[0], None));
        }
        self.input_logprobs.extend(scored);
    }

    /// Prompt followed by output.
    pub(crate) fn all_tokens(&self) -> Vec<Token> {
        let mut t = Vec::with_capacity(self.prompt.len() + self.output.len());
        t.extend_from_slice(&self.prompt);
        t.extend_from_slice(&self.output);
        t
    }

    /// Prompt plus output length.
    pub(crate) fn len(&self) -> usize {
        self.prompt.len() + self.output.len()
    }

    /// Tokens it may still generate.
    pub(crate) fn max_new_left(&self) -> usize {
        self.stop.max_new_tokens.saturating_sub(self.output.len())
    }

    /// The sampling parameters of this request's next token: while it has fewer than
    /// `min_new_tokens` output tokens, its stop tokens and EOS are banned (unless `ignore_eos`
    /// turns token-based stops off), so they are not sampled rather than sampled and ignored;
    /// under a constraint, only the tokens it allows.
    pub(crate) fn next_token_sampling(
        &mut self,
        eos: &[Token],
    ) -> Result<SamplingParams, crate::ConstraintError> {
        let mut s = self.sampling.clone();
        if self.output.len() < self.stop.min_new_tokens && !self.stop.ignore_eos {
            s.banned_tokens.extend(&self.stop.stop_token_ids);
            s.banned_tokens.extend(eos);
        }
        if let Some(c) = &mut self.constraint {
            let mask = c.allowed()?;
            if mask.count() == 0 {
                return Err(crate::ConstraintError("it allows no token".into()));
            }
            s.allowed_tokens = Some(Arc::new(mask));
        }
        Ok(s)
    }

    /// Appends a sampled token and says whether the request is finished: a constraint that
    /// fails aborts it; then SGLang's `check_finished` (length first, then stop tokens); then a
    /// constraint that is complete stops it.
    pub(crate) fn accept_token(
        &mut self,
        token: Token,
        logprob: Option<f32>,
        eos: &[Token],
    ) -> Option<FinishReason> {
        self.output.push(token);
        if let Some(lp) = logprob {
            self.output_logprobs.push(lp);
        }
        let constraint = match self.constraint.as_mut().map(|c| c.commit(token)) {
            Some(Err(e)) => {
                return Some(FinishReason::Abort {
                    message: e.to_string(),
                })
            }
            Some(Ok(state)) => state,
            None => ConstraintState::Open,
        };
        self.check_finished(eos).or_else(|| {
            (constraint == ConstraintState::Done).then_some(FinishReason::Stop {
                token: None,
                text: None,
            })
        })
    }

    /// SGLang's `check_finished` after a token was appended: length first, then stop tokens.
    fn check_finished(&self, eos: &[Token]) -> Option<FinishReason> {
        if self.output.len() >= self.stop.max_new_tokens {
            return Some(FinishReason::Length {
                length: self.stop.max_new_tokens,
            });
        }
        let last = *self.output.last()?;
        // As SGLang's token-based check: `ignore_eos` turns off every stop token, the request's
        // own `stop_token_ids` included.
        if self.output.len() < self.stop.min_new_tokens || self.stop.ignore_eos {
            return None;
        }
        if self.stop.stop_token_ids.contains(&last) || eos.contains(&last) {
            return Some(FinishReason::Stop {
                token: Some(last),
                text: None,
            });
        }
        None
    }

    /// The token a decode step feeds: the last one generated, or the prompt's last.
    pub(crate) fn last_token(&self) -> Token {
        *self
            .output
            .last()
            .or(self.prompt.last())
            .expect("add_request refuses empty prompts")
    }

    /// Back to the queue after a retraction; the output so far is kept and recomputed.
    pub(crate) fn reset_for_retract(&mut self) {
        self.status = ReqStatus::Waiting;
        self.retractions += 1;
    }
}
