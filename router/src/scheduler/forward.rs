//! The call into the model runner, and what a failed forward does to its requests.

use super::{Admitted, Scheduler};
use crate::batch::{ForwardBatch, ModelError, ModelRunner, StepOutput};
use crate::request::FinishReason;

/// Runs the batch and checks the answer's shape: one entry per sequence, and a token for every
/// sequence that samples. Callers rely on both.
fn forward<R: ModelRunner + ?Sized>(
    runner: &mut R,
    fb: &ForwardBatch,
) -> Result<StepOutput, ModelError> {
    let out = runner.forward(fb)?;
    if out.tokens.len() != fb.seqs.len() {
        return Err(ModelError::WrongResultCount {
            got: out.tokens.len(),
            expected: fb.seqs.len(),
        });
    }
    if fb
        .seqs
        .iter()
        .zip(&out.tokens)
        .any(|(s, t)| s.sample && t.is_none())
    {
        return Err(ModelError::MissingToken);
    }
    for (seq, s) in fb.seqs.iter().enumerate() {
        let got = out.input_logprobs.get(seq).map_or(0, Vec::len);
        if got != s.logprob_targets.len() {
            return Err(ModelError::MissingInputLogprobs {
                seq,
                got,
                expected: s.logprob_targets.len(),
            });
        }
    }
    Ok(out)
}

/// Says why a sampled sequence has a token.
pub(super) const SAMPLED: &str = "forward() checked that every sampled sequence has a token";

impl Scheduler {
    /// Copies the blocks waiting for the disk tier out of the pool (the forward may overwrite
    /// their slots), then runs the batch.
    pub(super) fn run_forward<R: ModelRunner + ?Sized>(
        &mut self,
        runner: &mut R,
        fb: &ForwardBatch,
    ) -> Result<StepOutput, ModelError> {
        if let Some(xfer) = runner.kv_transfer() {
            self.kv.flush_copy_outs(xfer);
        }
        forward(runner, fb)
    }

    /// A failed forward: its requests end with an abort and their KV is freed, not cached.
    pub(super) fn fail_batch(&mut self, seqs: Vec<Admitted>, e: &ModelError) {
        tracing::error!(error = %e, "forward failed; aborting its requests");
        self.counters.model_errors += 1;
        for a in seqs {
            self.finish_admitted(
                a,
                FinishReason::Abort {
                    message: e.to_string(),
                },
                false,
            );
        }
    }
}
