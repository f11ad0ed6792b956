//! A deterministic stand-in for the model, for testing the control plane.
//!
//! It stores, at every output slot, the token written there and its position; for each sequence
//! that samples it reads the whole slot row back and returns a hash of what it read. So its answer
//! is the right one only if the router handed it the right prefix slots, positions and output
//! slots, and a reference answer is simply the hash chain over the token sequence.

#![allow(dead_code, clippy::unwrap_used)]

use router::{
    ForwardBatch, ModelError, ModelRunner, Namespace, Req, SampledToken, SamplingParams, Scheduler,
    SchedulerConfig, StepOutput, StopConditions, Token,
};
use std::collections::HashMap;

/// Vocabulary of the fake model; `EOS` ends generation.
pub const VOCAB: u32 = 16;
/// The fake model's end-of-sequence token.
pub const EOS: Token = 15;

/// The fake model's next token after `seq` (what an uninterrupted, uncached run produces).
pub fn next_token(seq: &[Token]) -> Token {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, &t) in seq.iter().enumerate() {
        h ^= (t as u64 + 1).wrapping_mul(0x0100_0000_01b3) ^ (i as u64) << 32;
        h = h.rotate_left(17).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    (h % VOCAB as u64) as Token
}

/// The reference continuation of `prompt`.
pub fn reference(prompt: &[Token], stop: &StopConditions) -> Vec<Token> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < stop.max_new_tokens {
        let t = next_token(&seq);
        seq.push(t);
        out.push(t);
        if out.len() >= stop.min_new_tokens
            && !stop.ignore_eos
            && (stop.stop_token_ids.contains(&t) || t == EOS)
        {
            break;
        }
    }
    out
}

/// The fake runner.
#[derive(Default)]
pub struct FakeRunner {
    /// slot -> (token, position)
    pub kv: HashMap<u32, (Token, usize)>,
    pub calls: usize,
    pub tokens_computed: usize,
    /// Fail the n-th call (1-based), to test error handling.
    pub fail_on_call: Option<usize>,
    /// Every batch seen.
    pub batches: Vec<ForwardBatch>,
    pub record: bool,
    /// When set, the `i`-th token generated for any sequence is `script[i]` instead of the hash
    /// (which resumes past the script's end): lets a test place EOS or a stop token exactly.
    /// The slot-row checks still run.
    pub script: Option<Vec<Token>>,
}

impl ModelRunner for FakeRunner {
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
        self.calls += 1;
        if self.record {
            self.batches.push(batch.clone());
        }
        batch
            .validate(usize::MAX, VOCAB as usize, usize::MAX)
            .map_err(ModelError::InvalidBatch)?;
        if self.fail_on_call == Some(self.calls) {
            return Err(ModelError::runner("injected failure"));
        }
        for s in &batch.seqs {
            for ((&t, &p), &slot) in s.token_ids.iter().zip(&s.positions).zip(&s.out_slots) {
                self.kv.insert(slot, (t, p));
            }
            self.tokens_computed += s.token_ids.len();
        }
        // Input logprobs: the token at position p scores -p, so a test can tell which
        // positions were scored.
        let input_logprobs = batch
            .seqs
            .iter()
            .map(|s| {
                s.logprob_targets
                    .iter()
                    .map(|&(r, t)| SampledToken::new(t, Some(-((s.positions[r] + 1) as f32))))
                    .collect()
            })
            .collect();
        let mut tokens = Vec::with_capacity(batch.seqs.len());
        for s in &batch.seqs {
            if !s.sample {
                tokens.push(None);
                continue;
            }
            let mut seq = Vec::with_capacity(s.slot_row.len());
            for (i, slot) in s.slot_row.iter().enumerate() {
                match self.kv.get(slot) {
                    Some(&(t, p)) if p == i => seq.push(t),
                    Some(&(_, p)) => {
                        return Err(ModelError::runner(format!(
                            "slot {slot} holds position {p}, read as {i}"
                        )))
                    }
                    None => {
                        return Err(ModelError::runner(format!("slot {slot} was never written")))
                    }
                }
            }
            let scripted = self
                .script
                .as_ref()
                .and_then(|script| script.get(s.output_ids.len()));
            let mut token = scripted.copied().unwrap_or_else(|| next_token(&seq));
            if let Some(mask) = &s.sampling.allowed_tokens {
                // Under a constraint: the first allowed token at or after the model's choice.
                token = (0..VOCAB)
                    .map(|k| (token + k) % VOCAB)
                    .find(|&t| mask.is_allowed(t))
                    .ok_or_else(|| ModelError::runner("the constraint allows no token"))?;
            }
            tokens.push(Some(SampledToken::new(
                token,
                s.sampling.return_logprob.then_some(-0.5),
            )));
        }
        Ok(StepOutput {
            tokens,
            input_logprobs,
        })
    }
}

/// A test configuration: invariants checked after every step.
pub fn config(page_size: usize, num_pages: usize) -> SchedulerConfig {
    SchedulerConfig {
        page_size,
        num_pages,
        context_length: 4096,
        max_running_requests: 8,
        eos_token_ids: vec![EOS],
        check_invariants: true,
        ..SchedulerConfig::default()
    }
}

/// A greedy request.
pub fn req(id: u64, prompt: Vec<Token>, max_new: usize) -> Req {
    Req::new(
        id,
        prompt,
        SamplingParams::greedy(),
        StopConditions {
            max_new_tokens: max_new,
            ignore_eos: true,
            ..StopConditions::default()
        },
    )
}

/// A greedy request in a namespace.
pub fn req_ns(id: u64, prompt: Vec<Token>, max_new: usize, ns: Namespace) -> Req {
    req(id, prompt, max_new).with_namespace(ns)
}

/// Outcome of a request: its tokens, finish kind and cached tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub tokens: Vec<Token>,
    pub finish: Option<String>,
    pub cached: usize,
    /// The scored prompt (input logprobs), when reported.
    pub prompt: Option<Vec<(Token, Option<f32>)>>,
    /// Prompt progress reports: (total, cached, processed), in order.
    pub progress: Vec<(usize, usize, usize)>,
}

/// Steps until idle (or `max_steps`), collecting every request's outcome.
pub fn run_to_idle(
    s: &mut Scheduler,
    runner: &mut FakeRunner,
    max_steps: usize,
) -> HashMap<u64, Outcome> {
    let mut out: HashMap<u64, Outcome> = HashMap::new();
    for _ in 0..max_steps {
        let report = s.step(runner).unwrap();
        collect(s, &mut out);
        if report.is_none() && s.is_idle() {
            return out;
        }
    }
    panic!("scheduler did not become idle in {max_steps} steps");
}

/// Drains the scheduler's events into `out`.
pub fn collect(s: &mut Scheduler, out: &mut HashMap<u64, Outcome>) {
    for e in s.take_events() {
        match e {
            router::Event::Token { id, token, .. } => out.entry(id).or_default().tokens.push(token),
            router::Event::Progress {
                id,
                total,
                cached,
                processed,
            } => {
                let o = out.entry(id).or_default();
                assert!(
                    o.tokens.is_empty(),
                    "request {id}: progress came after a token"
                );
                o.progress.push((total, cached, processed));
            }
            router::Event::Finished {
                id,
                reason,
                cached_tokens,
                ..
            } => {
                let o = out.entry(id).or_default();
                o.finish = Some(reason.kind().to_string());
                o.cached = cached_tokens;
            }
            router::Event::Prompt { id, input_logprobs } => {
                let o = out.entry(id).or_default();
                assert!(
                    o.prompt.is_none(),
                    "request {id}: its prompt was reported twice"
                );
                assert!(
                    o.tokens.is_empty(),
                    "request {id}: its prompt came after a token"
                );
                o.prompt = Some(
                    input_logprobs
                        .iter()
                        .map(|t| (t.token, t.logprob))
                        .collect(),
                );
            }
        }
    }
}
