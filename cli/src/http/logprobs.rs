//! Log-probabilities in the three response shapes: OpenAI completions (`tokens`,
//! `token_logprobs`, one `top_logprobs` map per position), OpenAI chat (`content` items with
//! their `top_logprobs` lists), and SGLang's `(logprob, id, text)` triples.

use super::openai_types::{ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob};
use engine::{Engine, SampledToken, TokenAlternatives};
use std::collections::BTreeMap;

/// What OpenAI reports for a token the distribution rules out (JSON has no -inf).
const IMPOSSIBLE: f32 = -9999.0;

fn finite(lp: f32) -> f32 {
    if lp.is_finite() {
        lp
    } else {
        IMPOSSIBLE
    }
}

/// The generated tokens of a response or chunk, with what was asked about them.
pub struct Tokens<'a> {
    /// The token ids.
    pub ids: &'a [u32],
    /// Their log-probabilities.
    pub logprobs: &'a [f32],
    /// Per token, the most likely and asked-about tokens (empty when not asked).
    pub alternatives: &'a [TokenAlternatives],
}

/// One token's text, decoded alone.
pub fn token_text(engine: &Engine, id: u32) -> String {
    text_of(engine, id)
}

fn text_of(engine: &Engine, id: u32) -> String {
    engine.tokenizer().decode(&[id], false).unwrap_or_default()
}

fn top_map(engine: &Engine, a: &TokenAlternatives) -> BTreeMap<String, f32> {
    a.top
        .iter()
        .map(|&(id, lp)| (text_of(engine, id), finite(lp)))
        .collect()
}

/// OpenAI completions' `logprobs` object.
pub fn completion(engine: &Engine, t: &Tokens) -> CompletionLogprobs {
    let top = (!t.alternatives.is_empty()).then(|| {
        t.alternatives
            .iter()
            .map(|a| Some(top_map(engine, a)))
            .collect()
    });
    CompletionLogprobs {
        tokens: t.ids.iter().map(|&id| text_of(engine, id)).collect(),
        token_logprobs: t.logprobs.iter().map(|&lp| Some(finite(lp))).collect(),
        top_logprobs: top,
    }
}

/// OpenAI completions' `logprobs` with `echo`: the prompt's tokens first (the first one
/// without a logprob), then the completion's.
pub fn completion_echoed(
    engine: &Engine,
    prompt: &[SampledToken],
    t: &Tokens,
    with_top: bool,
) -> CompletionLogprobs {
    let generated = completion(engine, t);
    let mut tokens: Vec<String> = prompt.iter().map(|p| text_of(engine, p.token)).collect();
    tokens.extend(generated.tokens);
    let mut token_logprobs: Vec<Option<f32>> =
        prompt.iter().map(|p| p.logprob.map(finite)).collect();
    token_logprobs.extend(generated.token_logprobs);
    let top_logprobs = with_top.then(|| {
        let mut v: Vec<Option<BTreeMap<String, f32>>> = prompt
            .iter()
            .map(|p| p.alternatives.as_deref().map(|a| top_map(engine, a)))
            .collect();
        v.extend(generated.top_logprobs.unwrap_or_default());
        v
    });
    CompletionLogprobs {
        tokens,
        token_logprobs,
        top_logprobs,
    }
}

fn top_entry(engine: &Engine, id: u32, lp: f32) -> TopLogprob {
    let token = text_of(engine, id);
    TopLogprob {
        bytes: token.as_bytes().to_vec(),
        token,
        logprob: finite(lp),
    }
}

/// OpenAI chat's `logprobs` object.
pub fn chat(engine: &Engine, t: &Tokens) -> ChatLogprobs {
    let content = t
        .ids
        .iter()
        .zip(t.logprobs)
        .enumerate()
        .map(|(i, (&id, &lp))| {
            let top = t.alternatives.get(i).map_or_else(Vec::new, |a| {
                a.top
                    .iter()
                    .map(|&(id, lp)| top_entry(engine, id, lp))
                    .collect()
            });
            let TopLogprob {
                token,
                logprob,
                bytes,
            } = top_entry(engine, id, lp);
            ChatTokenLogprob {
                token,
                logprob,
                bytes,
                top_logprobs: top,
            }
        })
        .collect();
    ChatLogprobs { content }
}

/// One SGLang `(logprob, token id, text)` triple; the text only with
/// `return_text_in_logprobs`.
pub type Triple = (f32, u32, Option<String>);

/// A prompt token's `(logprob, id, text)`: the first prompt token has no logprob.
pub type InputTriple = (Option<f32>, u32, Option<String>);

/// SGLang's `input_token_logprobs`, `input_top_logprobs` and `input_token_ids_logprobs`
/// (the per-position lists are `null` for the first prompt token).
pub struct NativeInput {
    pub tokens: Vec<InputTriple>,
    pub top: Vec<Option<Vec<Triple>>>,
    pub asked: Vec<Option<Vec<Triple>>>,
}

/// The native input-logprob lists of a scored prompt.
pub fn native_input(prompt: &[SampledToken]) -> NativeInput {
    let triples = |v: &[(u32, f32)]| -> Vec<Triple> {
        v.iter().map(|&(id, lp)| (finite(lp), id, None)).collect()
    };
    NativeInput {
        tokens: prompt
            .iter()
            .map(|p| (p.logprob.map(finite), p.token, None))
            .collect(),
        top: prompt
            .iter()
            .map(|p| p.alternatives.as_deref().map(|a| triples(&a.top)))
            .collect(),
        asked: prompt
            .iter()
            .map(|p| p.alternatives.as_deref().map(|a| triples(&a.requested)))
            .collect(),
    }
}

/// SGLang's per-position lists: the `top_logprobs_num` most likely tokens, and the
/// `token_ids_logprob` ones.
pub fn native_alternatives(alts: &[TokenAlternatives]) -> (Vec<Vec<Triple>>, Vec<Vec<Triple>>) {
    let triples = |v: &[(u32, f32)]| -> Vec<Triple> {
        v.iter().map(|&(id, lp)| (finite(lp), id, None)).collect()
    };
    alts.iter()
        .map(|a| (triples(&a.top), triples(&a.requested)))
        .unzip()
}
