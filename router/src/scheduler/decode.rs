//! Decode: one new token for every running request (SGLang's decode half of the loop).

use super::forward::SAMPLED;
use super::{Admitted, Scheduler, StepReport, ROW_IN_USE};
use crate::batch::{ForwardBatch, ForwardMode, ModelRunner, SequenceInput, StepOutput};
use crate::request::FinishReason;

impl Scheduler {
    /// Makes room (retracting if needed), then runs one decode step over the running batch.
    /// `None` when no request is left to decode.
    pub(super) fn run_decode<R: ModelRunner + ?Sized>(
        &mut self,
        runner: &mut R,
    ) -> Option<StepReport> {
        let retracted = self.ensure_decode_memory();
        if self.running.is_empty() {
            return None;
        }
        let fb = self.build_decode();
        let n = fb.seqs.len();
        let mut report = StepReport {
            mode: ForwardMode::Decode,
            batch_size: n,
            tokens_computed: n,
            tokens_cached: 0,
            retracted,
            error: None,
        };
        self.counters.decode_steps += 1;
        self.counters.decode_batch_seqs += n as u64;
        self.counters.tokens_computed += n as u64;
        match self.run_forward(runner, &fb) {
            Ok(output) => self.place_decoded(output),
            Err(e) => {
                report.error = Some(e.to_string());
                let seqs: Vec<Admitted> = self.running.drain(..).collect();
                self.fail_batch(seqs, &e);
            }
        }
        Some(report)
    }

    /// Allocates one slot per running request and describes the batch, in running order. A
    /// request whose slot cannot be allocated is aborted (its computed KV is cached).
    pub(super) fn build_decode(&mut self) -> ForwardBatch {
        let mut seqs = Vec::with_capacity(self.running.len());
        let mut i = 0;
        while i < self.running.len() {
            match self.decode_input(i) {
                Ok(seq) => {
                    seqs.push(seq);
                    i += 1;
                }
                Err(message) => {
                    let a = self.running.swap_remove(i);
                    let reason = FinishReason::Abort { message };
                    self.finish_admitted(a, reason, true);
                }
            }
        }
        ForwardBatch {
            mode: ForwardMode::Decode,
            seqs,
        }
    }

    /// The next position of running request `i`: its last token, written to a new slot. Its
    /// sampling parameters come first, so a failing constraint allocates nothing.
    fn decode_input(&mut self, i: usize) -> Result<SequenceInput, String> {
        let eos = &self.cfg.eos_token_ids;
        let a = &mut self.running[i];
        let sampling = a.req.next_token_sampling(eos).map_err(|e| e.to_string())?;
        let slot = self.kv.alloc_decode(a.row).map_err(|e| e.to_string())?;
        let slot_row = self.kv.row_slots(a.row).expect(ROW_IN_USE).to_vec();
        let pos = slot_row.len() - 1;
        Ok(SequenceInput {
            token_ids: vec![a.req.last_token()],
            positions: vec![pos],
            slot_row,
            out_slots: vec![slot],
            sample: true,
            sampling,
            output_ids: a.req.output.clone(),
            prompt_ids: a.req.prompt.clone(),
            logprob_targets: Vec::new(),
        })
    }

    /// Appends each request's token; finished requests leave (their KV is cached), with their
    /// frees batched as SGLang does.
    pub(super) fn place_decoded(&mut self, output: StepOutput) {
        self.kv.free_group_begin();
        let running = std::mem::take(&mut self.running);
        for (mut a, sampled) in running.into_iter().zip(output.tokens) {
            let s = sampled.expect(SAMPLED);
            match self.push_token(&mut a.req, s) {
                Some(reason) => self.finish_admitted(a, reason, true),
                None => self.running.push(a),
            }
        }
        self.kv.free_group_end();
    }
}
