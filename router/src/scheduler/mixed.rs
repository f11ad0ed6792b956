//! MIXED steps (SGLang's `--enable-mixed-chunk`): a prefill batch carries one decode token of
//! every running request, so that those requests do not stand still while a prompt is
//! computed.
//!
//! As in SGLang, mixing needs chunked prefill, and neither the prefill batch nor the running
//! requests may ask for logprobs; the prefill budgets are reduced by the running requests'
//! tokens (`mixed_with_decode_tokens`, see [`crate::PrefillAdder::new`]). Unlike SGLang, a step
//! whose running requests would not all find a slot after the prefill's allocation is not
//! mixed: it runs as a plain prefill, and the next decode step makes room (retracting if need
//! be) as it always does.

use super::prefill::Admission;
use super::{Admitted, Scheduler, StepReport};
use crate::batch::{ForwardMode, ModelRunner, StepOutput};

impl Scheduler {
    /// Whether this round's prefill carries the running requests' decode tokens.
    pub(super) fn mixes(&self, batch: &[Admission]) -> bool {
        let logprobs = |a: &Admitted| a.req.sampling.return_logprob;
        self.cfg.mixes()
            && !self.running.is_empty()
            && !self.running.iter().any(logprobs)
            && !batch.iter().any(|b| logprobs(&b.seq))
    }

    /// Runs a prefill batch and one decode token of every running request in one forward.
    pub(super) fn run_mixed<R: ModelRunner + ?Sized>(
        &mut self,
        batch: Vec<Admission>,
        runner: &mut R,
    ) -> StepReport {
        let (seqs, mut fb, cached) = self.build_extend(batch);
        if seqs.is_empty() || !self.decode_fits() {
            // Nothing left to prefill, or no room to decode everyone after it.
            return self.run_built_extend(seqs, fb, cached, runner);
        }
        let decode = self.build_decode();
        let (n_extend, n_decode) = (seqs.len(), decode.seqs.len());
        fb.seqs.extend(decode.seqs);
        fb.mode = if n_decode > 0 {
            ForwardMode::Mixed
        } else {
            ForwardMode::Extend
        };
        let mut report = StepReport {
            mode: fb.mode,
            batch_size: fb.seqs.len(),
            tokens_computed: fb.num_tokens(),
            tokens_cached: cached,
            retracted: 0,
            error: None,
        };
        self.counters.prefill_steps += 1;
        self.counters.prefill_batch_seqs += n_extend as u64;
        self.counters.decode_batch_seqs += n_decode as u64;
        self.counters.tokens_computed += report.tokens_computed as u64;
        match self.run_forward(runner, &fb) {
            Ok(mut output) => {
                let decoded = StepOutput::new(output.tokens.split_off(n_extend));
                output.input_logprobs.truncate(n_extend);
                // The running requests first: placing the prefill appends to them.
                self.place_decoded(decoded);
                fb.seqs.truncate(n_extend);
                self.place_extended(seqs, &fb, output);
            }
            Err(e) => {
                report.error = Some(e.to_string());
                let mut all = seqs;
                all.append(&mut self.running);
                self.fail_batch(all, &e);
            }
        }
        report
    }
}
