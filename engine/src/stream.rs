//! The output of one request, readable from a thread (as an iterator) or from async code
//! ([`GenerationStream::next_event`]) without a thread per stream.

use crate::detok::{IncrementalDecoder, StopMatcher};
use crate::error::EngineError;
use crate::tokenizer::Tokenizer;
use crate::types::{Completion, Delta, StreamEvent, Usage};
use crate::worker::{Command, Update};
use crossbeam_channel::Sender;
use router::{FinishReason, ReqId, SampledToken, TokenAlternatives};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedReceiver;

/// A place among the requests in flight; given back when the request ends or its stream is
/// dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Takes a place if fewer than `limit` are taken.
    pub(crate) fn acquire(counter: &Arc<AtomicUsize>, limit: usize) -> Result<Self, EngineError> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| EngineError::Overloaded { limit })?;
        Ok(InFlight(Arc::clone(counter)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The output of one request: [`StreamEvent::Delta`]s, then [`StreamEvent::Done`] (or
/// [`StreamEvent::Failed`] if the engine died). Dropping it before the end aborts the request,
/// which frees everything it holds (a queued request leaves the queue before its prefill).
pub struct GenerationStream {
    id: ReqId,
    updates: UnboundedReceiver<Update>,
    commands: Sender<Command>,
    tokenizer: Arc<dyn Tokenizer>,
    skip_special: bool,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    text: String,
    logprobs: Vec<f32>,
    alternatives: Vec<TokenAlternatives>,
    /// The scored prompt, once reported; it also goes out with the first delta after it.
    input_logprobs: Vec<SampledToken>,
    prompt_delta_due: bool,
    done: bool,
    stop_sent: bool,
    prompt_tokens: usize,
    submitted: Instant,
    first_token: Option<f64>,
    pending_done: Option<Completion>,
    in_flight: Option<InFlight>,
}

impl std::fmt::Debug for GenerationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationStream")
            .field("id", &self.id)
            .finish()
    }
}

/// Everything a stream is made of, gathered by [`crate::Engine::generate`].
pub(crate) struct StreamParts {
    pub id: ReqId,
    pub updates: UnboundedReceiver<Update>,
    pub commands: Sender<Command>,
    pub tokenizer: Arc<dyn Tokenizer>,
    pub skip_special: bool,
    pub stop_strings: Vec<String>,
    pub no_stop_trim: bool,
    pub prompt_tokens: usize,
    pub in_flight: InFlight,
}

impl GenerationStream {
    pub(crate) fn new(p: StreamParts) -> Self {
        GenerationStream {
            id: p.id,
            updates: p.updates,
            commands: p.commands,
            tokenizer: p.tokenizer,
            skip_special: p.skip_special,
            decoder: IncrementalDecoder::new(),
            stops: StopMatcher::new(p.stop_strings).keeping_stop(p.no_stop_trim),
            text: String::new(),
            logprobs: Vec::new(),
            alternatives: Vec::new(),
            input_logprobs: Vec::new(),
            prompt_delta_due: false,
            done: false,
            stop_sent: false,
            prompt_tokens: p.prompt_tokens,
            submitted: Instant::now(),
            first_token: None,
            pending_done: None,
            in_flight: Some(p.in_flight),
        }
    }

    /// The engine's id of this request.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Consumes the stream and returns the completion.
    pub fn collect_completion(mut self) -> Result<Completion, EngineError> {
        for event in self.by_ref() {
            match event {
                StreamEvent::Done(c) => return Ok(c),
                StreamEvent::Failed(e) => return Err(e),
                StreamEvent::Delta(_) | StreamEvent::Progress(_) => {}
            }
        }
        Err(EngineError::Closed)
    }

    /// Waits for the end of the request and returns the completion (async).
    pub async fn completion(mut self) -> Result<Completion, EngineError> {
        while let Some(event) = self.next_event().await {
            match event {
                StreamEvent::Done(c) => return Ok(c),
                StreamEvent::Failed(e) => return Err(e),
                StreamEvent::Delta(_) | StreamEvent::Progress(_) => {}
            }
        }
        Err(EngineError::Closed)
    }

    /// The next event, awaited without blocking a thread; `None` after the last one.
    pub async fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(out) = self.pending() {
                return out;
            }
            let update = self.updates.recv().await;
            if let Some(ev) = self.on_update(update) {
                return Some(ev);
            }
        }
    }

    /// What is due before waiting: a held-back completion, or the end.
    fn pending(&mut self) -> Option<Option<StreamEvent>> {
        if let Some(done) = self.pending_done.take() {
            return Some(Some(StreamEvent::Done(done)));
        }
        self.done.then_some(None)
    }

    /// Turns one update (`None`: the engine went away) into at most one event.
    fn on_update(&mut self, update: Option<Update>) -> Option<StreamEvent> {
        match update {
            Some(Update::Token(sampled)) => self.on_token(sampled).map(StreamEvent::Delta),
            Some(Update::Progress(total, cached, processed)) => {
                Some(StreamEvent::Progress(crate::types::PromptProgress {
                    total,
                    cached,
                    processed,
                    elapsed: self.submitted.elapsed().as_secs_f64(),
                }))
            }
            Some(Update::Prompt(scored)) => {
                self.input_logprobs = scored;
                self.prompt_delta_due = true;
                None
            }
            Some(Update::Finished { reason, usage }) => Some(self.on_finished(reason, usage)),
            None => {
                self.done = true;
                self.in_flight = None;
                Some(StreamEvent::Failed(EngineError::Closed))
            }
        }
    }

    fn on_token(&mut self, sampled: SampledToken) -> Option<Delta> {
        let SampledToken {
            token,
            logprob,
            alternatives,
        } = sampled;
        if self.first_token.is_none() {
            self.first_token = Some(self.submitted.elapsed().as_secs_f64());
        }
        if self.stops.matched().is_some() {
            return None;
        }
        let tokenizer = Arc::clone(&self.tokenizer);
        let skip = self.skip_special;
        let piece = self
            .decoder
            .push(token, |ids| tokenizer.decode(ids, skip).unwrap_or_default());
        let text = self.stops.push(&piece);
        if let Some(lp) = logprob {
            self.logprobs.push(lp);
        }
        let alternatives: Vec<TokenAlternatives> = alternatives.map(|a| *a).into_iter().collect();
        self.alternatives.extend(alternatives.iter().cloned());
        if let Some(stop) = self.stops.matched() {
            if !self.stop_sent {
                self.stop_sent = true;
                // If the engine is gone, the stream ends with `Failed` on the next update.
                let _ = self.commands.send(Command::Finish {
                    id: self.id,
                    reason: FinishReason::Stop {
                        token: None,
                        text: Some(stop.to_string()),
                    },
                });
            }
        }
        self.text.push_str(&text);
        Some(Delta {
            text,
            token_ids: vec![token],
            logprobs: logprob.into_iter().collect(),
            alternatives,
            input_logprobs: self.take_prompt_for_delta(),
        })
    }

    /// The scored prompt for the first delta after it arrived (empty afterwards).
    fn take_prompt_for_delta(&mut self) -> Vec<SampledToken> {
        if std::mem::take(&mut self.prompt_delta_due) {
            self.input_logprobs.clone()
        } else {
            Vec::new()
        }
    }

    fn on_finished(&mut self, reason: FinishReason, usage: Usage) -> StreamEvent {
        self.done = true;
        self.in_flight = None;
        let mut tail = String::new();
        if self.stops.matched().is_none() {
            let tokenizer = Arc::clone(&self.tokenizer);
            let skip = self.skip_special;
            let rest = self
                .decoder
                .flush(|ids| tokenizer.decode(ids, skip).unwrap_or_default());
            tail = self.stops.push(&rest);
            if self.stops.matched().is_none() {
                tail.push_str(&self.stops.finish());
            }
        }
        self.text.push_str(&tail);
        // A stop string cut generation short: report it as the reason.
        let finish_reason = match (self.stops.matched(), reason) {
            (Some(s), FinishReason::Stop { .. } | FinishReason::Length { .. }) => {
                FinishReason::Stop {
                    token: None,
                    text: Some(s.to_string()),
                }
            }
            (_, r) => r,
        };
        let token_ids = self.decoder.tokens().to_vec();
        let mut usage = usage;
        if self.stops.matched().is_some() {
            // The scheduler may have generated a few tokens past the stop string before its
            // finish arrived; the client gets (and is billed for) those up to the stop only.
            usage.completion_tokens = token_ids.len();
        }
        let done = Completion {
            finish_reason,
            usage,
            text: std::mem::take(&mut self.text),
            token_ids,
            logprobs: std::mem::take(&mut self.logprobs),
            alternatives: std::mem::take(&mut self.alternatives),
            input_logprobs: std::mem::take(&mut self.input_logprobs),
            e2e_latency: self.submitted.elapsed().as_secs_f64(),
            time_to_first_token: self.first_token,
        };
        if tail.is_empty() {
            return StreamEvent::Done(done);
        }
        // Text held back until the end goes out as a last delta, then the end.
        self.pending_done = Some(done);
        StreamEvent::Delta(Delta {
            text: tail,
            token_ids: Vec::new(),
            logprobs: Vec::new(),
            alternatives: Vec::new(),
            input_logprobs: Vec::new(),
        })
    }
}

impl Iterator for GenerationStream {
    type Item = StreamEvent;

    /// Blocks the calling thread until the next event. Must not be called from async code
    /// (use [`GenerationStream::next_event`] there).
    fn next(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(out) = self.pending() {
                return out;
            }
            let update = self.updates.blocking_recv();
            if let Some(ev) = self.on_update(update) {
                return Some(ev);
            }
        }
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        if !self.done {
            // If the engine is gone, there is nothing left to abort.
            let _ = self.commands.send(Command::Abort { id: self.id });
        }
    }
}
