//! SentencePiece BPE vocabularies from GGUF (`tokenizer.ggml.model = "llama"`: Llama 2,
//! TinyLlama, Mistral), built as Hugging Face's Llama tokenizer is: the merges are the pairs of
//! pieces whose concatenation is a piece, ranked by that piece's score (what SentencePiece's
//! BPE merges by), with byte fallback for what no piece covers, `▁` for spaces and one
//! prepended to the text.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

use super::tk_err;
use crate::error::{ExecutorError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// GGUF token types whose pieces take part in merges (normal and user-defined).
fn mergeable(ty: u64) -> bool {
    ty == 1 || ty == 4
}

/// The merges of a SentencePiece BPE vocabulary: every split of a piece into two pieces, in
/// piece order (within one piece, by the halves' ids), then stably by the piece's score, best
/// first.
fn merges(tokens: &[&str], scores: &[f32], types: &[u64]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let mut out: Vec<(usize, usize, f32)> = Vec::new();
    for (i, &piece) in tokens.iter().enumerate() {
        if !mergeable(types.get(i).copied().unwrap_or(1)) {
            continue;
        }
        let mut local: Vec<(usize, usize, f32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(k, _)| {
                let l = *ids.get(&piece[..k])?;
                let r = *ids.get(&piece[k..])?;
                Some((l, r, scores[i]))
            })
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        out.extend(local);
    }
    out.sort_by(|a, b| b.2.total_cmp(&a.2));
    out.into_iter()
        .map(|(l, r, _)| (tokens[l].to_string(), tokens[r].to_string()))
        .collect()
}

/// The tokenizer of a GGUF SentencePiece vocabulary.
pub(super) fn sentencepiece_bpe(
    gguf: &GgufFile,
    tokens: &[&str],
    types: &[u64],
) -> Result<Tokenizer> {
    let scores: Vec<f32> = gguf
        .get("tokenizer.ggml.scores")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect())
        .ok_or_else(|| {
            ExecutorError::Tokenizer(
                "a SentencePiece vocabulary needs tokenizer.ggml.scores".into(),
            )
        })?;
    if scores.len() != tokens.len() {
        return Err(ExecutorError::Tokenizer(format!(
            "{} scores for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let unk = gguf
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(GgufValue::as_u64)
        .and_then(|i| tokens.get(i as usize))
        .or_else(|| {
            tokens
                .iter()
                .zip(types)
                .find(|(_, &t)| t == 2)
                .map(|(s, _)| s)
        })
        .map(|s| s.to_string());
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges(tokens, &scores, types))
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let mut tk = Tokenizer::new(builder.build().map_err(tk_err)?);
    let prefix = gguf
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(GgufValue::as_bool)
        .unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if prefix {
        normalizers.push(Prepend::new("\u{2581}".into()).into());
    }
    normalizers.push(Replace::new(" ", "\u{2581}").map_err(tk_err)?.into());
    tk.with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(tk_err)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ").map_err(tk_err)?.into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tk)
}
