//! Input logprobs: the LM head at the rows a batch asks to score (`logprob_targets`), in blocks
//! so a long prompt never holds more than a block of full-vocabulary logits at once.

use crate::batch::ForwardBatch;
use crate::sampling::score;
use router::SampledToken;

/// Rows of LM-head logits held at once.
const BLOCK: usize = 32;

/// Scores every sequence's targets. `starts[i]` is the first token row of sequence `i` in the
/// batch's hidden states; `logits_of(rows)` returns those rows' logits, `vocab` floats each.
pub fn score_targets<E>(
    batch: &ForwardBatch,
    starts: &[usize],
    vocab: usize,
    mut logits_of: impl FnMut(&[usize]) -> Result<Vec<f32>, E>,
) -> Result<Vec<Vec<SampledToken>>, E> {
    let mut out: Vec<Vec<SampledToken>> = batch
        .seqs
        .iter()
        .map(|s| Vec::with_capacity(s.logprob_targets.len()))
        .collect();
    // (sequence, hidden row, target) for every target of the batch.
    let all: Vec<(usize, usize, u32)> = batch
        .seqs
        .iter()
        .zip(starts)
        .enumerate()
        .flat_map(|(i, (s, &st))| s.logprob_targets.iter().map(move |&(r, t)| (i, st + r, t)))
        .collect();
    for block in all.chunks(BLOCK) {
        let rows: Vec<usize> = block.iter().map(|&(_, row, _)| row).collect();
        let logits = logits_of(&rows)?;
        for (&(i, _, target), row) in block.iter().zip(logits.chunks_exact(vocab)) {
            out[i].push(score(row, target, &batch.seqs[i].sampling));
        }
    }
    Ok(out)
}
