//! Prefill (SGLang's `get_new_batch_prefill` and the extend half of the loop): order the queue,
//! admit requests while the [`PrefillAdder`] budgets allow, compute their uncached prompt (or one
//! chunk of it) and cache what was computed.

use super::dedup::BatchPrompts;
use super::forward::SAMPLED;
use super::{Admitted, Scheduler, StepReport, ROW_IN_USE};
use crate::adder::{AddResult, Plan, PrefillAdder};
use crate::batch::{
    ForwardBatch, ForwardMode, ModelRunner, SampledToken, SamplingParams, SequenceInput, StepOutput,
};
use crate::policy::OrderCtx;
use crate::request::{FinishReason, ReqStatus};
use page_manager::tier::KvTransfer;
use page_manager::{KvCacheManager, KvError, RowId, Slot};

/// A request taken into this step's prefill batch.
pub(super) struct Admission {
    pub(super) seq: Admitted,
    /// Tokens to compute now: the whole uncached rest, or one chunk.
    extend: usize,
    /// Prompt tokens found in the cache at admission (0 for the next chunk of the request
    /// mid-prefill: its prefix is its own work).
    hit: usize,
}

/// Admission stops after passing over this many requests in one round (see
/// [`super::dedup`]): the rest wait for the next round rather than each being matched now.
const MAX_DEFERRED_PER_ROUND: usize = 64;

/// What admission decided for a waiting request.
enum Admit {
    /// Admitted, with the budget state after it.
    Granted(Grant, AddResult),
    /// Passed over this round: the batch computes its uncached prefix.
    Deferred,
    /// It does not fit: admission stops.
    NoFit,
}

/// What admission granted a waiting request (it is still in the queue, at `index`).
struct Grant {
    index: usize,
    row: RowId,
    extend: usize,
    hit: usize,
}

impl Scheduler {
    /// Orders the waiting queue with the policy; only the head that can be admitted this round
    /// is put in order.
    pub(super) fn order_waiting(&mut self) {
        let n = self.waiting.len();
        if n <= 1 {
            return;
        }
        let free = self
            .cfg
            .max_running_requests
            .saturating_sub(self.running.len());
        let window = self.cfg.order_window.min(4 * free + 64).max(1).min(n);
        let ctx = OrderCtx {
            kv: &mut self.kv,
            window,
        };
        self.ordering.order(ctx, &mut self.waiting);
    }

    /// Forms the next prefill batch: the chunked request's next chunk first, then waiting
    /// requests in policy order while the budgets allow. `None` when nothing is admitted.
    ///
    /// With a disk tier, `xfer` loads prefixes found on disk at admission.
    pub(super) fn prefill_batch(
        &mut self,
        xfer: Option<&mut dyn KvTransfer>,
    ) -> Option<Vec<Admission>> {
        if self.waiting.is_empty() && self.chunked.is_none() {
            return None;
        }
        let mut adder = PrefillAdder::new(
            self.kv.page_size(),
            self.ratio.value(),
            self.cfg.clip_max_new_tokens,
            self.running
                .iter()
                .map(|a| (a.req.stop.max_new_tokens, a.req.output.len()))
                .collect::<Vec<_>>(),
            self.cfg.max_prefill_tokens,
            self.cfg.chunked_prefill_size,
        );
        if self.cfg.mixes() {
            adder = adder.with_mixed_decode(self.running.len());
        }
        let mut batch = Vec::new();
        let mut prompts = BatchPrompts::new(self.kv.page_size(), self.cfg.effective_defer());
        if let Some(a) = self.chunked.take() {
            let Some(extend) = self.next_chunk(&a, &mut adder) else {
                self.chunked = Some(a);
                return None;
            };
            prompts.add(&a.req);
            batch.push(Admission {
                seq: a,
                extend,
                hit: 0,
            });
        }
        if self.running.len() + batch.len() < self.cfg.max_running_requests
            && !self.waiting.is_empty()
        {
            self.order_waiting();
            let grants = self.admit_waiting(&mut adder, &mut prompts, batch.len(), xfer);
            batch.extend(self.take_granted(grants));
            for r in &mut self.waiting {
                r.waited_rounds = r.waited_rounds.saturating_add(1);
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Takes the granted requests out of the queue (the others keep their order).
    fn take_granted(&mut self, grants: Vec<Grant>) -> Vec<Admission> {
        let mut grants = grants.into_iter().peekable();
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.waiting.len());
        for (i, req) in std::mem::take(&mut self.waiting).into_iter().enumerate() {
            match grants.next_if(|g| g.index == i) {
                Some(g) => taken.push(Admission {
                    seq: Admitted {
                        req: *req,
                        row: g.row,
                    },
                    extend: g.extend,
                    hit: g.hit,
                }),
                None => kept.push(req),
            }
        }
        self.waiting = kept;
        taken
    }

    /// The size of the next chunk of the request mid-prefill, or `None` when none fits now.
    fn next_chunk(&self, a: &Admitted, adder: &mut PrefillAdder) -> Option<usize> {
        let kv_len = self.kv.row_info(a.row).expect(ROW_IN_USE).kv_len;
        let left = a.req.len() - kv_len;
        let n = adder.add_chunked(left, a.req.max_new_left(), self.kv.allocatable_size());
        (n > 0).then_some(n)
    }

    /// Admits waiting requests in queue order while they fit and the batch has room, passing
    /// over those whose uncached prefix the batch already computes (`prompts`); `in_batch`
    /// requests are already in the batch. The grants are in queue order.
    fn admit_waiting(
        &mut self,
        adder: &mut PrefillAdder,
        prompts: &mut BatchPrompts,
        in_batch: usize,
        mut xfer: Option<&mut dyn KvTransfer>,
    ) -> Vec<Grant> {
        let mut grants: Vec<Grant> = Vec::new();
        let mut deferred = 0;
        for i in 0..self.waiting.len() {
            if self.running.len() + in_batch + grants.len() >= self.cfg.max_running_requests {
                break;
            }
            match self.try_admit(i, adder, prompts, xfer.as_deref_mut()) {
                Admit::Granted(grant, result) => {
                    prompts.add(&self.waiting[i]);
                    grants.push(grant);
                    if result != AddResult::Continue {
                        break;
                    }
                }
                Admit::Deferred => {
                    deferred += 1;
                    // A queue of many requests on one prefix is not matched whole each round.
                    if deferred >= MAX_DEFERRED_PER_ROUND {
                        break;
                    }
                }
                Admit::NoFit => break,
            }
        }
        grants
    }

    /// Tries to admit waiting request `i`: match (L-1 rule), deferral, lock, budget. Nothing is
    /// held unless it is granted.
    fn try_admit<'t>(
        &mut self,
        i: usize,
        adder: &mut PrefillAdder,
        prompts: &mut BatchPrompts,
        xfer: Option<&mut (dyn KvTransfer + 't)>,
    ) -> Admit {
        let tokens = self.waiting[i].all_tokens();
        let req = &self.waiting[i];
        let (id, max_new_left) = (req.id, req.max_new_left());
        let mut hit =
            self.kv
                .match_request_prefix(&req.namespace, &tokens, req.max_cached_prefix());
        if let Some(xfer) = xfer {
            let limit = KvCacheManager::prefix_limit(tokens.len(), req.max_cached_prefix());
            match self
                .kv
                .extend_from_disk(&req.namespace, &tokens, limit, hit, xfer)
            {
                Ok(h) => hit = h,
                Err(e) => {
                    self.kv_fault(Some(id), "loading a prefix from disk", e);
                    return Admit::NoFit;
                }
            }
        }
        if prompts.defers(&tokens, &self.waiting[i].namespace, hit.len) {
            return Admit::Deferred;
        }
        let extend = tokens.len() - hit.len;
        if adder
            .precheck(extend, max_new_left, self.kv.allocatable_size())
            .is_some()
            || self.kv.free_rows() == 0
        {
            return Admit::NoFit;
        }
        let row = match self.kv.admit(req.namespace.clone(), hit) {
            Ok(row) => row,
            Err(e) => {
                self.kv_fault(Some(id), "admission", e);
                return Admit::NoFit;
            }
        };
        let n = match adder.plan(extend, max_new_left, self.kv.allocatable_size()) {
            Plan::Whole => extend,
            Plan::Chunk(n) => n,
            Plan::Reject(_) => {
                if let Err(e) = self.kv.release(row) {
                    self.kv_fault(Some(id), "releasing a rejected admission", e);
                }
                return Admit::NoFit;
            }
        };
        self.counters.prefix_query_tokens += tokens.len() as u64;
        self.counters.prefix_hit_tokens += hit.len as u64;
        self.counters.tokens_skipped += hit.len as u64;
        let req = &mut self.waiting[i];
        // SGLang's `cached_tokens` accounting; frozen once the request was retracted.
        if req.retractions == 0 {
            req.cached_tokens += hit.len.saturating_sub(req.already_computed);
            req.already_computed = hit.len + n;
        }
        let grant = Grant {
            index: i,
            row,
            extend: n,
            hit: hit.len,
        };
        Admit::Granted(grant, adder.budget_state(self.kv.allocatable_size()))
    }

    /// Runs the prefill batch and places its requests: mid-prefill, decoding, or finished.
    pub(super) fn run_extend<R: ModelRunner + ?Sized>(
        &mut self,
        batch: Vec<Admission>,
        runner: &mut R,
    ) -> StepReport {
        let (seqs, fb, cached) = self.build_extend(batch);
        self.run_built_extend(seqs, fb, cached, runner)
    }

    /// Runs a built prefill batch (see [`Self::build_extend`]).
    pub(super) fn run_built_extend<R: ModelRunner + ?Sized>(
        &mut self,
        seqs: Vec<Admitted>,
        fb: ForwardBatch,
        cached: usize,
        runner: &mut R,
    ) -> StepReport {
        let mut report = StepReport {
            mode: ForwardMode::Extend,
            batch_size: seqs.len(),
            tokens_computed: fb.num_tokens(),
            tokens_cached: cached,
            retracted: 0,
            error: None,
        };
        if seqs.is_empty() {
            return report;
        }
        self.counters.prefill_steps += 1;
        self.counters.prefill_batch_seqs += seqs.len() as u64;
        self.counters.tokens_computed += report.tokens_computed as u64;
        match self.run_forward(runner, &fb) {
            Ok(output) => self.place_extended(seqs, &fb, output),
            Err(e) => {
                report.error = Some(e.to_string());
                self.fail_batch(seqs, &e);
            }
        }
        report
    }

    /// Allocates KV for each admission's new tokens and describes the batch. Returns the
    /// requests in batch order, the batch, and the prompt tokens the batch found cached.
    pub(super) fn build_extend(
        &mut self,
        batch: Vec<Admission>,
    ) -> (Vec<Admitted>, ForwardBatch, usize) {
        let mut seqs = Vec::with_capacity(batch.len());
        let mut inputs = Vec::with_capacity(batch.len());
        let mut cached = 0;
        for Admission {
            mut seq,
            extend,
            hit,
        } in batch
        {
            let kv_len = self.kv.row_info(seq.row).expect(ROW_IN_USE).kv_len;
            // The last chunk samples: its parameters come first, so a failing constraint
            // allocates nothing.
            let sampling = if kv_len + extend == seq.req.len() {
                match seq.req.next_token_sampling(&self.cfg.eos_token_ids) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        let message = e.to_string();
                        self.finish_admitted(seq, FinishReason::Abort { message }, true);
                        continue;
                    }
                }
            } else {
                None
            };
            match self.kv.alloc_extend(seq.row, extend) {
                Ok(out_slots) => {
                    cached += hit;
                    inputs.push(self.extend_input(&seq, kv_len, out_slots, sampling));
                    seqs.push(seq);
                }
                Err(e) => self.requeue_unallocated(seq, &e),
            }
        }
        let fb = ForwardBatch {
            mode: ForwardMode::Extend,
            seqs: inputs,
        };
        (seqs, fb, cached)
    }

    /// The sequence input computing positions `kv_len..` of the request into `out_slots`; it
    /// samples, with `sampling`, when those are the last positions of the prompt (and output so
    /// far).
    fn extend_input(
        &self,
        a: &Admitted,
        kv_len: usize,
        out_slots: Vec<Slot>,
        sampling: Option<SamplingParams>,
    ) -> SequenceInput {
        let req = &a.req;
        let end = kv_len + out_slots.len();
        let tokens = req.all_tokens();
        SequenceInput {
            token_ids: tokens[kv_len..end].to_vec(),
            positions: (kv_len..end).collect(),
            slot_row: self.kv.row_slots(a.row).expect(ROW_IN_USE).to_vec(),
            out_slots,
            sample: sampling.is_some(),
            sampling: sampling.unwrap_or_else(|| req.sampling.clone()),
            output_ids: req.output.clone(),
            prompt_ids: req.prompt.clone(),
            logprob_targets: req.logprob_targets(kv_len, end - kv_len),
        }
    }

    /// The budget should prevent a failed allocation; if one happens anyway, the request gives
    /// back its row and returns to the queue.
    fn requeue_unallocated(&mut self, a: Admitted, e: &KvError) {
        let Admitted { mut req, row } = a;
        tracing::warn!(id = req.id, error = %e, "prefill allocation failed; re-queued");
        if let Err(e) = self.kv.release(row) {
            self.kv_fault(Some(req.id), "releasing an unallocated admission", e);
        }
        req.status = ReqStatus::Waiting;
        self.waiting.push(Box::new(req));
    }

    /// After the forward: a non-final chunk is cached and the request stays mid-prefill; a
    /// completed prompt gets its first token and decodes, unless it is already finished.
    pub(super) fn place_extended(
        &mut self,
        seqs: Vec<Admitted>,
        fb: &ForwardBatch,
        output: StepOutput,
    ) {
        let mut scored = output.input_logprobs.into_iter();
        for ((mut a, seq), sampled) in seqs.into_iter().zip(&fb.seqs).zip(output.tokens) {
            a.req.add_input_logprobs(scored.next().unwrap_or_default());
            let kv_len = seq.seq_len();
            self.report_progress(&a.req, kv_len);
            if seq.sample {
                self.after_prompt(a, kv_len, sampled.expect(SAMPLED));
            } else {
                self.cache_unfinished(&a, kv_len, "caching a chunk");
                self.place_chunked(a);
            }
        }
    }

    fn place_chunked(&mut self, mut a: Admitted) {
        a.req.status = ReqStatus::Prefilling;
        self.chunked = Some(a);
    }

    /// The request's prompt (and any output, after a retraction) is computed: it takes the
    /// sampled token and finishes or decodes.
    fn after_prompt(&mut self, mut a: Admitted, kv_len: usize, sampled: SampledToken) {
        self.report_prompt(&mut a.req);
        let stop = &a.req.stop;
        if stop.max_new_tokens == 0 || a.req.output.len() >= stop.max_new_tokens {
            let length = stop.max_new_tokens;
            self.finish_admitted(a, FinishReason::Length { length }, true);
            return;
        }
        if let Some(reason) = self.push_token(&mut a.req, sampled) {
            self.finish_admitted(a, reason, true);
            return;
        }
        self.cache_unfinished(&a, kv_len, "caching a prompt");
        a.req.status = ReqStatus::Decoding;
        self.running.push(a);
    }

    /// SGLang's `cache_unfinished_req`: the first `kv_len` tokens go into the tree.
    fn cache_unfinished(&mut self, a: &Admitted, kv_len: usize, operation: &'static str) {
        let tokens = a.req.all_tokens();
        if let Err(e) = self.kv.cache_unfinished(a.row, &tokens[..kv_len]) {
            self.kv_fault(Some(a.req.id), operation, e);
        }
    }
}
