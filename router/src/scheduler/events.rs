//! What the scheduler reports: per-request [`Event`]s (taken with `Scheduler::take_events`) and
//! a [`StepReport`] per step.

use super::Scheduler;
use crate::batch::{ForwardMode, SampledToken, TokenAlternatives};
use crate::request::{FinishReason, Req, ReqId};
use radix_tree::Token;

/// What a request saw in one step, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request's prompt was scored (input logprobs, when asked for): sent once, when the
    /// whole prompt has been computed, before its first token.
    Prompt {
        /// The request.
        id: ReqId,
        /// Prompt tokens from `logprob_start` on with their log-probabilities.
        input_logprobs: Vec<SampledToken>,
    },
    /// A chunk of the request's prompt was computed (only for requests that
    /// `report_progress`, during their first prefill): `processed` of `total` prompt tokens
    /// have KV now, `cached` of them found in the cache at admission.
    Progress {
        /// The request.
        id: ReqId,
        /// Prompt length.
        total: usize,
        /// Prompt tokens served from the cache.
        cached: usize,
        /// Prompt tokens with KV after this chunk (the cached ones included).
        processed: usize,
    },
    /// A token was generated.
    Token {
        /// The request.
        id: ReqId,
        /// The token.
        token: Token,
        /// Its log-probability, when requested.
        logprob: Option<f32>,
        /// The most likely and the asked-about tokens at its position, when requested.
        alternatives: Option<Box<TokenAlternatives>>,
    },
    /// The request finished; all it held is released.
    Finished {
        /// The request.
        id: ReqId,
        /// Why.
        reason: FinishReason,
        /// Prompt length.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
        /// Prompt tokens served from the cache.
        cached_tokens: usize,
    },
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The forward mode.
    pub mode: ForwardMode,
    /// Sequences in the batch.
    pub batch_size: usize,
    /// Tokens computed.
    pub tokens_computed: usize,
    /// Prompt tokens taken from the cache by requests admitted this step.
    pub tokens_cached: usize,
    /// Requests retracted before this step.
    pub retracted: usize,
    /// The model error, if the step failed (its requests were aborted).
    pub error: Option<String>,
}

impl Scheduler {
    /// Appends a sampled token to the request's output, reports it, and says whether the
    /// request is now finished (see `Req::accept_token`).
    pub(super) fn push_token(&mut self, req: &mut Req, s: SampledToken) -> Option<FinishReason> {
        let finished = req.accept_token(s.token, s.logprob, &self.cfg.eos_token_ids);
        self.counters.tokens_generated += 1;
        self.events.push(Event::Token {
            id: req.id,
            token: s.token,
            logprob: s.logprob,
            alternatives: s.alternatives,
        });
        finished
    }

    /// The request leaves the scheduler: counted, forgotten, and reported finished. It must hold
    /// no KV any more (see `finish_admitted` for one that does).
    /// Reports the request's scored prompt, once, when its whole prompt has been computed.
    pub(super) fn report_prompt(&mut self, req: &mut Req) {
        if req.input_logprobs.is_empty() || req.input_logprobs_sent {
            return;
        }
        req.input_logprobs_sent = true;
        self.events.push(Event::Prompt {
            id: req.id,
            input_logprobs: req.input_logprobs.clone(),
        });
    }

    /// Reports a computed chunk of the request's first prefill, when it asked for progress.
    pub(super) fn report_progress(&mut self, req: &Req, kv_len: usize) {
        if !req.report_progress || !req.output.is_empty() || req.retractions > 0 {
            return;
        }
        self.events.push(Event::Progress {
            id: req.id,
            total: req.prompt.len(),
            cached: req.cached_tokens,
            processed: kv_len.min(req.prompt.len()),
        });
    }

    pub(super) fn complete(&mut self, req: Req, reason: FinishReason) {
        if matches!(reason, FinishReason::Abort { .. }) {
            self.counters.aborted += 1;
        }
        self.counters.finished += 1;
        self.ids.remove(&req.id);
        self.ordering.forget(req.id);
        self.events.push(Event::Finished {
            id: req.id,
            reason,
            prompt_tokens: req.prompt.len(),
            completion_tokens: req.output.len(),
            cached_tokens: req.cached_tokens,
        });
    }
}
