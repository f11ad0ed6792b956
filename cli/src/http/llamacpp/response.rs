//! `/completion`'s answers in llama-server's shapes (the caller adds each one's `index`): the whole response, the streamed chunks,
//! `timings`, `completion_probabilities` and the `response_fields` filter.

use super::super::error::ApiError;
use super::super::logprobs;
use super::super::Shared;
use engine::{Completion, Delta, FinishReason, TokenAlternatives};
use serde::Serialize;
use serde_json::{json, Value};

/// `generation_settings`: the request's sampling settings as they were applied.
#[derive(Serialize)]
pub struct Settings {
    pub n_predict: i64,
    pub seed: i64,
    pub temperature: f32,
    pub top_k: i64,
    pub top_p: f32,
    pub min_p: f32,
    pub n_probs: usize,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    #[serde(skip)]
    pub return_tokens: bool,
    /// `n_probs` reports the distribution sampled (`prob`, `top_probs`), not the model's.
    pub post_sampling_probs: bool,
    /// `timings_per_token`, `return_progress`.
    #[serde(skip)]
    pub extras: super::extras::Extras,
}

/// A finished sequence, ready to be written in llama-server's shape.
pub struct Outcome<'a> {
    c: &'a Completion,
    settings: &'a Settings,
    prompt: &'a str,
    stop_type: &'static str,
    stopping_word: String,
}

impl<'a> Outcome<'a> {
    /// An aborted sequence (the server shut down, or the request could not be served) is an
    /// error, as llama-server answers a cancelled task.
    pub fn of(
        c: &'a Completion,
        settings: &'a Settings,
        prompt: &'a str,
    ) -> Result<Self, ApiError> {
        let stopping_word = match &c.finish_reason {
            FinishReason::Stop { text: Some(w), .. } => w.clone(),
            FinishReason::Abort { message } => {
                return Err(ApiError::unavailable(format!(
                    "the request was aborted: {message}"
                )))
            }
            FinishReason::Stop { .. } | FinishReason::Length { .. } => String::new(),
        };
        let stop_type = super::extras::stop_type(&c.finish_reason);
        Ok(Outcome {
            c,
            settings,
            prompt,
            stop_type,
            stopping_word,
        })
    }

    /// The whole non-streamed response.
    pub fn to_json(&self, st: &Shared) -> Value {
        let c = self.c;
        let mut out = json!({
            "content": c.text,
            "tokens": if self.settings.return_tokens { c.token_ids.clone() } else { Vec::new() },
            "stop": true,
            "model": st.engine.info().model_name,
            "tokens_predicted": c.usage.completion_tokens,
            "tokens_evaluated": c.usage.prompt_tokens,
            "generation_settings": self.settings,
            "prompt": self.prompt,
            "has_new_line": c.text.contains('\n'),
            "truncated": false,
            "stop_type": self.stop_type,
            "stopping_word": self.stopping_word,
            "tokens_cached": c.usage.cached_tokens,
            "timings": super::extras::timings_of(c),
        });
        if self.settings.n_probs > 0 {
            out["completion_probabilities"] = probabilities(
                st,
                self.settings,
                &c.token_ids,
                &c.logprobs,
                &c.alternatives,
            );
        }
        out
    }

    /// The last streamed chunk: the whole response's fields, with the text and tokens already
    /// streamed left out.
    pub fn final_chunk(&self, st: &Shared) -> Value {
        let mut out = self.to_json(st);
        out["content"] = "".into();
        out["tokens"] = json!([]);
        if let Some(o) = out.as_object_mut() {
            o.remove("completion_probabilities");
        }
        out
    }
}

/// A streamed chunk for one delta.
pub fn delta_chunk(
    st: &Shared,
    d: &Delta,
    settings: &Settings,
    prompt_tokens: usize,
    predicted: usize,
) -> Value {
    let mut out = json!({
        "content": d.text,
        "tokens": d.token_ids,
        "stop": false,
        "tokens_predicted": predicted,
        "tokens_evaluated": prompt_tokens,
    });
    if settings.n_probs > 0 {
        out["completion_probabilities"] =
            probabilities(st, settings, &d.token_ids, &d.logprobs, &d.alternatives);
    }
    out
}

/// A streamed chunk reporting the prompt's progress (`return_progress`).
pub fn progress_chunk(p: &engine::PromptProgress, prompt_tokens: usize) -> Value {
    json!({
        "content": "",
        "tokens": [],
        "stop": false,
        "tokens_predicted": 0,
        "tokens_evaluated": prompt_tokens,
        "prompt_progress": super::extras::progress(p),
    })
}

/// One token as llama-server names it: id, text, bytes, and its log-probability, or with
/// `post_sampling_probs` its probability.
fn entry(st: &Shared, id: u32, logprob: f32, post_sampling: bool) -> Value {
    let token = logprobs::token_text(&st.engine, id);
    let mut e = json!({"id": id, "token": token, "bytes": token.as_bytes()});
    if post_sampling {
        e["prob"] = logprob.exp().into();
    } else {
        e["logprob"] = if logprob.is_finite() {
            logprob
        } else {
            -9999.0
        }
        .into();
    }
    e
}

/// `completion_probabilities`: per generated token, its log-probability and the `n_probs` most
/// likely tokens at its position (with `post_sampling_probs`: probabilities under the
/// distribution sampled, as `prob` and `top_probs`).
fn probabilities(
    st: &Shared,
    settings: &Settings,
    ids: &[u32],
    lps: &[f32],
    alternatives: &[TokenAlternatives],
) -> Value {
    let post = settings.post_sampling_probs;
    let items: Vec<Value> = ids
        .iter()
        .zip(lps)
        .enumerate()
        .map(|(i, (&id, &lp))| {
            let top: Vec<Value> = alternatives
                .get(i)
                .map(|a| a.top.iter().map(|&(t, l)| entry(st, t, l, post)).collect())
                .unwrap_or_default();
            let mut e = entry(st, id, lp, post);
            e[if post { "top_probs" } else { "top_logprobs" }] = top.into();
            e
        })
        .collect();
    items.into()
}

/// llama-server's `response_fields`: only the named fields, each under its path (`a/b` for a
/// nested one); fields that do not exist are left out. No fields: the whole response.
pub fn filter(full: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return full;
    }
    let mut out = serde_json::Map::new();
    for f in fields {
        let found = f.split('/').try_fold(&full, |v, key| v.get(key));
        if let Some(v) = found {
            out.insert(f.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_fields_keep_named_paths_only() {
        let full = json!({"content": "x", "prompt": "p", "generation_settings": {"n_predict": 8}});
        let picked = filter(
            full.clone(),
            &[
                "content".into(),
                "generation_settings/n_predict".into(),
                "missing".into(),
            ],
        );
        assert_eq!(
            picked,
            json!({"content": "x", "generation_settings/n_predict": 8})
        );
        assert_eq!(filter(full.clone(), &[]), full);
    }
}
